//! Listing for `uvsadm -L -c` without stalling workers.
//!
//! The table is read page by page: each step locks one shard, copies at most
//! [`LIST_STEP`] slots' worth of live entries into the caller's buffer and
//! releases the lock, so a listing of millions of entries is many short
//! critical sections interleaved with packet processing, never one long
//! one. The result is not an atomic snapshot (neither is the kernel's
//! `/proc/net/ip_vs_conn`): entries inserted or removed during the walk may
//! or may not appear, but none appears twice.

use std::net::IpAddr;

use uvs_sched::FwdMethod;

use crate::entry::flag;
use crate::proto::ConnState;
use crate::shard::Family;
use crate::table::Table;

/// Slots examined per lock hold while listing.
pub const LIST_STEP: u32 = 512;

/// One row of the connection listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// IP protocol.
    pub proto: u8,
    /// Client address and port (template: masked address, port 0).
    pub caddr: IpAddr,
    /// Client port.
    pub cport: u16,
    /// Virtual address (fwmark template: the mark as an address).
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address.
    pub daddr: IpAddr,
    /// Real server port.
    pub dport: u16,
    /// Forwarding method.
    pub fwd: FwdMethod,
    /// State (templates: NONE for TCP, UDP for UDP, as ipvsadm shows).
    pub state: ConnState,
    /// A persistence template.
    pub template: bool,
    /// The firewall mark of a fwmark template.
    pub fwmark: Option<u32>,
    /// Milliseconds until expiry (0 when due).
    pub expires_in_ms: u64,
    /// Packets seen (modulo 2³²; templates: 0).
    pub pkts: u32,
    /// Bytes seen (modulo 2³²; templates: 0).
    pub bytes: u32,
    /// Templates: connections currently controlled.
    pub controlled: u32,
}

/// Where a listing continues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListCursor {
    shard: u32,
    v6: bool,
    idx: u32,
}

impl Table {
    /// Appends up to `max` entries to `out`, starting at `from`
    /// ([`ListCursor::default`] for the beginning). Returns the cursor to
    /// continue from, or `None` when the walk is complete. Control path: may
    /// allocate (in `out`).
    pub fn list_page(
        &self,
        from: ListCursor,
        max: usize,
        now: u64,
        out: &mut Vec<ConnInfo>,
    ) -> Option<ListCursor> {
        self.walk_page(from, max, now, out, false)
    }

    /// [`Table::list_page`], or with `marked` only the entries marked for
    /// the sync daemon, their marks cleared ([`Table::sync_page`]); then
    /// `max` bounds the slots visited, not the entries taken.
    pub(crate) fn walk_page(
        &self,
        from: ListCursor,
        max: usize,
        now: u64,
        out: &mut Vec<ConnInfo>,
        marked: bool,
    ) -> Option<ListCursor> {
        let mut cur = from;
        let start = out.len();
        let mut visited = 0usize;
        while (cur.shard as usize) < self.shards.len() {
            let full = if marked {
                visited >= max
            } else {
                out.len() - start >= max
            };
            if full {
                return Some(cur);
            }
            visited += LIST_STEP as usize;
            let room = if marked {
                usize::MAX
            } else {
                max - (out.len() - start)
            };
            let done = if cur.v6 {
                self.list_part::<std::net::Ipv6Addr>(&mut cur, room, now, out, marked)
            } else {
                self.list_part::<std::net::Ipv4Addr>(&mut cur, room, now, out, marked)
            };
            if done {
                if cur.v6 {
                    cur = ListCursor {
                        shard: cur.shard + 1,
                        v6: false,
                        idx: 0,
                    };
                } else {
                    cur.v6 = true;
                    cur.idx = 0;
                }
            }
        }
        None
    }

    /// Calls `f` for every live entry, page by page (see [`Table::list_page`]).
    pub fn for_each_entry(&self, now: u64, mut f: impl FnMut(&ConnInfo)) {
        let mut buf = Vec::with_capacity(LIST_STEP as usize);
        let mut cur = Some(ListCursor::default());
        while let Some(c) = cur {
            buf.clear();
            cur = self.list_page(c, LIST_STEP as usize, now, &mut buf);
            buf.iter().for_each(&mut f);
        }
    }

    /// One bounded step in one family part; true when the part is finished.
    fn list_part<A: Family>(
        &self,
        cur: &mut ListCursor,
        room: usize,
        now: u64,
        out: &mut Vec<ConnInfo>,
        marked: bool,
    ) -> bool {
        let mut g = self.lock(cur.shard);
        let (part, _) = A::split(&mut g);
        let end = part.slots().min(cur.idx.saturating_add(LIST_STEP));
        let mut taken = 0;
        while cur.idx < end && taken < room {
            let e = part.get_mut(cur.idx);
            cur.idx += 1;
            if !e.is_live() || (marked && !crate::sync::take_marked(e)) {
                continue;
            }
            let tpl = e.flags & flag::TEMPLATE != 0;
            let remaining = e.remaining(now);
            if remaining <= 0 && !(tpl && e.aux != 0) {
                continue; // expired, awaiting the sweep
            }
            let mark = tpl && e.flags & flag::FWMARK != 0;
            out.push(ConnInfo {
                proto: e.proto,
                caddr: e.caddr.ip(),
                // A template's client-port slot may hold a PE key.
                cport: if tpl { 0 } else { e.cport },
                vaddr: e.vaddr.ip(),
                vport: e.vport,
                daddr: e.daddr.ip(),
                dport: e.dport,
                fwd: e.fwd(),
                state: ConnState::decode(e.proto, e.state),
                template: tpl,
                fwmark: mark.then(|| mark_of(e.vaddr.ip())),
                expires_in_ms: remaining.max(0) as u64,
                pkts: if tpl { 0 } else { e.pkts },
                bytes: if tpl { 0 } else { e.bytes },
                controlled: if tpl { e.aux } else { 0 },
            });
            taken += 1;
        }
        cur.idx >= part.slots()
    }
}

fn mark_of(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(v) => u32::from(v),
        IpAddr::V6(v) => u128::from(v) as u32,
    }
}
