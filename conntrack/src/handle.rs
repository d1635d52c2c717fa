//! What a lookup hands the engine: a [`Handle`] (identity plus an
//! `Arc<Dest>`, for the control path, ICMP errors and templates) and a
//! [`Hit`] (a plain copy, for the per-packet path).

use std::net::IpAddr;
use std::sync::Arc;

use uvs_sched::{Dest, FwdMethod, TunConfig};

use crate::entry::{flag, Addr, Entry};
use crate::proto::ConnState;

/// A found entry: a snapshot of its identity plus the destination.
///
/// Cheap to hold while one packet is processed; it does not pin the entry
/// (the entry may expire meanwhile; `update` then reports it).
#[derive(Debug, Clone)]
pub struct Handle {
    pub(crate) shard: u32,
    pub(crate) idx: u32,
    pub(crate) proto: u8,
    pub(crate) state: u8,
    pub(crate) flags: u8,
    pub(crate) caddr: IpAddr,
    pub(crate) cport: u16,
    pub(crate) vaddr: IpAddr,
    pub(crate) vport: u16,
    pub(crate) daddr: IpAddr,
    pub(crate) dport: u16,
    pub(crate) dest: Arc<Dest>,
}

impl Handle {
    pub(crate) fn new<A: Addr>(shard: u32, idx: u32, e: &Entry<A>) -> Option<Handle> {
        Some(Handle {
            shard,
            idx,
            proto: e.proto,
            state: e.state,
            flags: e.flags,
            caddr: e.caddr.ip(),
            cport: e.cport,
            vaddr: e.vaddr.ip(),
            vport: e.vport,
            daddr: e.daddr.ip(),
            dport: e.dport,
            dest: e.dest.clone()?,
        })
    }

    /// Does `e` still hold the entry this handle was taken from?
    pub(crate) fn matches<A: Addr>(&self, e: &Entry<A>) -> bool {
        e.is_live()
            && e.proto == self.proto
            && e.cport == self.cport
            && e.vport == self.vport
            && e.dport == self.dport
            && (e.flags & flag::TEMPLATE) == (self.flags & flag::TEMPLATE)
            && e.caddr.ip() == self.caddr
            && e.vaddr.ip() == self.vaddr
            && e.daddr.ip() == self.daddr
    }

    /// IP protocol.
    pub fn proto(&self) -> u8 {
        self.proto
    }
    /// Client address.
    pub fn caddr(&self) -> IpAddr {
        self.caddr
    }
    /// Client port (0 for a template).
    pub fn cport(&self) -> u16 {
        self.cport
    }
    /// Virtual address (for a firewall-mark template: the mark, encoded).
    pub fn vaddr(&self) -> IpAddr {
        self.vaddr
    }
    /// Virtual port.
    pub fn vport(&self) -> u16 {
        self.vport
    }
    /// Real server address.
    pub fn daddr(&self) -> IpAddr {
        self.daddr
    }
    /// Real server port.
    pub fn dport(&self) -> u16 {
        self.dport
    }
    /// The destination.
    pub fn dest(&self) -> &Arc<Dest> {
        &self.dest
    }
    /// Forwarding method.
    pub fn fwd(&self) -> FwdMethod {
        crate::entry::fwd_from_bits(self.flags)
    }
    /// State when the handle was taken.
    pub fn state(&self) -> ConnState {
        ConnState::decode(self.proto, self.state)
    }
    /// A persistence template rather than a connection.
    pub fn is_template(&self) -> bool {
        self.flags & flag::TEMPLATE != 0
    }
}

/// A connection as [`Table::lookup_update`] found it: a plain copy of what
/// forwarding the packet needs, taken under the shard lock. Unlike a
/// [`Handle`] it holds no `Arc<Dest>`, so the per-packet path writes no
/// reference count on the destination (a cache line every worker reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    proto: u8,
    pub(crate) state: u8,
    pub(crate) flags: u8,
    caddr: IpAddr,
    cport: u16,
    vaddr: IpAddr,
    vport: u16,
    daddr: IpAddr,
    dport: u16,
    tun: TunConfig,
    stats: u64,
}

impl Hit {
    #[inline(always)]
    pub(crate) fn new<A: Addr>(e: &Entry<A>) -> Hit {
        let tun = match (e.fwd(), &e.dest) {
            (FwdMethod::Tunnel, Some(d)) => d.tun_config(),
            _ => TunConfig::default(),
        };
        Hit {
            proto: e.proto,
            state: e.state,
            flags: e.flags,
            caddr: e.caddr.ip(),
            cport: e.cport,
            vaddr: e.vaddr.ip(),
            vport: e.vport,
            daddr: e.daddr.ip(),
            dport: e.dport,
            tun,
            stats: e.dest.as_ref().map_or(Dest::NO_STATS, |d| d.stats_tag()),
        }
    }

    /// The destination's counter tag ([`Dest::stats_tag`]).
    #[inline]
    pub fn stats_tag(&self) -> u64 {
        self.stats
    }

    /// IP protocol.
    pub fn proto(&self) -> u8 {
        self.proto
    }
    /// Client address.
    pub fn caddr(&self) -> IpAddr {
        self.caddr
    }
    /// Client port.
    pub fn cport(&self) -> u16 {
        self.cport
    }
    /// Virtual address.
    pub fn vaddr(&self) -> IpAddr {
        self.vaddr
    }
    /// Virtual port.
    pub fn vport(&self) -> u16 {
        self.vport
    }
    /// Real server address.
    pub fn daddr(&self) -> IpAddr {
        self.daddr
    }
    /// Real server port.
    pub fn dport(&self) -> u16 {
        self.dport
    }
    /// Forwarding method.
    pub fn fwd(&self) -> FwdMethod {
        crate::entry::fwd_from_bits(self.flags)
    }
    /// The destination's tunnel settings when the method is `Tunnel` (read
    /// when the packet was looked up); the default otherwise.
    pub fn tun_config(&self) -> TunConfig {
        self.tun
    }
    /// State after this packet (before it, when the packet removed the
    /// entry).
    pub fn state(&self) -> ConnState {
        ConnState::decode(self.proto, self.state)
    }
}
