//! Connection entries and their compact layout.
//!
//! One [`Entry`] per connection or persistence template, stored in a shard's
//! slab and generic over the address family so that an IPv4 entry carries
//! 4-byte addresses (48 bytes in all) and an IPv6 entry 16-byte ones
//! (88 bytes). Field order is left to the compiler, which packs it:
//!
//! | field | v4 bytes | meaning |
//! |---|---|---|
//! | `dest` | 8 | `Option<Arc<Dest>>`; `None` marks a free slot |
//! | `caddr`, `vaddr`, `daddr` | 12 | client, virtual, real server |
//! | `cport`, `vport`, `dport` | 6 | ports (template: `cport` 0) |
//! | `proto`, `state`, `flags` | 3 | IP protocol, state byte, [`flag`] bits |
//! | `expires` | 4 | ms of the caller's clock, modulo 2³² |
//! | `pkts`, `bytes` | 8 | counters modulo 2³² (template: timeout ms in `pkts`) |
//! | `aux` | 4 | conn: controlling template ref + 1; template: controlled count; free slot: next free + 1 |
//!
//! Expiry is stored modulo 2³² ms and compared with wrapping arithmetic, so
//! every timeout is capped at [`MAX_TIMEOUT_MS`] (24.8 days) and the sweep
//! visits every entry more often than that.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use uvs_sched::{Dest, FwdMethod};

/// Longest timeout an entry can hold (2³¹ − 1 ms ≈ 24.8 days).
pub const MAX_TIMEOUT_MS: u32 = i32::MAX as u32;

/// Entry flag bits.
pub(crate) mod flag {
    /// Forwarding method (two bits, `FwdMethod as u8`).
    pub const FWD_MASK: u8 = 0b11;
    /// Counted in the destination's InActConn (else ActiveConn).
    pub const INACTIVE: u8 = 1 << 2;
    /// No server→client packet seen yet and the method is not NAT: TCP and
    /// SCTP use the INPUT_ONLY table.
    pub const NOOUTPUT: u8 = 1 << 3;
    /// A persistence template, not a connection.
    pub const TEMPLATE: u8 = 1 << 4;
    /// The template's virtual address holds a firewall mark.
    pub const FWMARK: u8 = 1 << 5;
    /// Removed from the index (an invalidated template waiting for its
    /// controlled connections to end).
    pub const UNHASHED: u8 = 1 << 6;
    /// TCP: the client sent a bare ACK (it confirmed the handshake), so a
    /// server's packet may establish the connection (`update.rs`).
    pub const CONFIRMED: u8 = 1 << 7;
    /// Connections only (the bit is the templates' FWMARK): a sync master
    /// should send this connection (see `sync.rs`).
    pub const SYNC_DUE: u8 = 1 << 5;
}

/// An address family usable as entry storage.
pub(crate) trait Addr: Copy + Eq + Send + Sync + std::fmt::Debug + 'static {
    /// The all-zero address (free slots).
    const ZERO: Self;
    /// IPv6 (hash five words instead of three).
    const WIDE: bool;
    /// Widens to `IpAddr`.
    fn ip(self) -> IpAddr;
    /// Narrows from `IpAddr` when the family matches.
    fn from_ip(ip: IpAddr) -> Option<Self>;
    /// The address as two hash words (IPv4 uses the first only).
    fn words(self) -> (u64, u64);
    /// Encodes a firewall mark in the virtual-address slot of a template.
    fn from_mark(mark: u32) -> Self;
}

impl Addr for Ipv4Addr {
    const ZERO: Self = Ipv4Addr::UNSPECIFIED;
    const WIDE: bool = false;
    #[inline(always)]
    fn ip(self) -> IpAddr {
        IpAddr::V4(self)
    }
    #[inline(always)]
    fn from_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }
    #[inline(always)]
    fn words(self) -> (u64, u64) {
        (u32::from(self) as u64, 0)
    }
    fn from_mark(mark: u32) -> Self {
        Ipv4Addr::from(mark)
    }
}

impl Addr for Ipv6Addr {
    const ZERO: Self = Ipv6Addr::UNSPECIFIED;
    const WIDE: bool = true;
    #[inline(always)]
    fn ip(self) -> IpAddr {
        IpAddr::V6(self)
    }
    #[inline(always)]
    fn from_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }
    #[inline(always)]
    fn words(self) -> (u64, u64) {
        let v = u128::from(self);
        ((v >> 64) as u64, v as u64)
    }
    fn from_mark(mark: u32) -> Self {
        Ipv6Addr::from(mark as u128)
    }
}

/// One connection or template. See the module docs for the layout.
#[derive(Debug)]
pub(crate) struct Entry<A> {
    pub dest: Option<Arc<Dest>>,
    pub caddr: A,
    pub vaddr: A,
    pub daddr: A,
    pub cport: u16,
    pub vport: u16,
    pub dport: u16,
    pub proto: u8,
    pub state: u8,
    pub flags: u8,
    pub expires: u32,
    pub pkts: u32,
    pub bytes: u32,
    pub aux: u32,
}

impl<A: Addr> Entry<A> {
    /// A free slot whose free-list successor is `next_plus_one`.
    pub(crate) fn vacant(next_plus_one: u32) -> Self {
        Entry {
            dest: None,
            caddr: A::ZERO,
            vaddr: A::ZERO,
            daddr: A::ZERO,
            cport: 0,
            vport: 0,
            dport: 0,
            proto: 0,
            state: 0,
            flags: 0,
            expires: 0,
            pkts: 0,
            bytes: 0,
            aux: next_plus_one,
        }
    }

    #[inline(always)]
    pub(crate) fn is_live(&self) -> bool {
        self.dest.is_some()
    }

    #[inline(always)]
    pub(crate) fn fwd(&self) -> FwdMethod {
        fwd_from_bits(self.flags & flag::FWD_MASK)
    }

    /// Indexed by the reply tuple: NAT connections only (DR/TUN replies never
    /// pass the director; templates have no replies).
    #[inline(always)]
    pub(crate) fn has_out_key(&self) -> bool {
        self.flags & (flag::TEMPLATE | flag::FWD_MASK) == FwdMethod::Masq as u8
    }

    /// Milliseconds until expiry (≤ 0: expired), wrapping-safe.
    #[inline(always)]
    pub(crate) fn remaining(&self, now: u64) -> i32 {
        self.expires.wrapping_sub(now as u32) as i32
    }
}

pub(crate) fn fwd_from_bits(b: u8) -> FwdMethod {
    match b & flag::FWD_MASK {
        0 => FwdMethod::Masq,
        1 => FwdMethod::Local,
        2 => FwdMethod::Tunnel,
        _ => FwdMethod::Route,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_sizes() {
        assert_eq!(std::mem::size_of::<Entry<Ipv4Addr>>(), 48);
        assert!(std::mem::size_of::<Entry<Ipv6Addr>>() <= 88);
    }

    #[test]
    fn fwd_bits_roundtrip() {
        for m in [
            FwdMethod::Masq,
            FwdMethod::Local,
            FwdMethod::Tunnel,
            FwdMethod::Route,
        ] {
            assert_eq!(fwd_from_bits(m as u8), m);
        }
    }
}
