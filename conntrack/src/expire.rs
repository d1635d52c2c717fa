//! Expiry and eviction.
//!
//! Expiry is an incremental sweep, not a timer per entry: each
//! [`Table::expire`] call visits shards round-robin, and in each shard scans
//! at most [`SWEEP_STEP`] slab slots from where the previous visit stopped,
//! removing entries whose time has passed. A lock is therefore held for a
//! bounded, short scan (a few microseconds), never for a whole shard. Every
//! slot is visited once per full pass, so the cost is O(1) per entry per
//! pass, with no per-packet timer work at all (a packet only rewrites the
//! entry's `expires`). An entry past its time that a packet reaches before
//! the sweep does is treated as gone by `update` and `insert`, so the
//! sweep's lag never extends a connection's life as packets see it; it only
//! delays the destination's counts by up to one pass.
//!
//! Templates are removed only when expired *and* controlling no
//! connection; an expired template still in control is re-armed for its
//! timeout (the kernel's requeue).
//!
//! Eviction (`drop_entry`) happens on insert into a full table: the
//! inserting shard's slab is scanned for up to [`EVICT_SCAN`] slots from a
//! moving cursor, taking the first expired or handshake entry (TCP
//! SYN_RECV/SYNACK, SCTP INIT1/INIT), else the first UDP (or other
//! protocol) entry that saw a single packet, else the ESTABLISHED (TCP,
//! SCTP) entry with the fewest packets, if it saw at most 8 (a spoofed
//! SYN + blind ACK makes an ESTABLISHED entry of 2 packets in DR/TUN;
//! a connection that exchanged data has more). A handshake younger than
//! a second ranks after 2-packet ESTABLISHED entries, so a real client's
//! SYN_RECV survives a blind-ACK flood (`victim_class`). Templates in use
//! and busier connections are never evicted. The cursor moving round the slab
//! spreads evictions evenly instead of always hitting the newest entries.
//! `drop_entry`'s once-a-second pass (the kernel's random drop) is in
//! `defense.rs`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering::Relaxed;

use crate::entry::{flag, Entry};
use crate::proto::ipproto;
use crate::proto::sctp::SctpState;
use crate::proto::tcp::TcpState;
use crate::shard::{Family, Part, ShardStats};
use crate::table::{Releases, Table};

/// Slots scanned per shard visit by the sweep.
pub const SWEEP_STEP: usize = 256;
/// Slots scanned for an eviction victim.
pub const EVICT_SCAN: u32 = 64;

impl Table {
    /// Incremental expiry: visits up to `budget` slab slots in total (at
    /// least one shard visit per call), removing expired entries, and returns
    /// how many it removed. Call it periodically from one thread (or from
    /// each worker with a small budget); a full pass over the table takes
    /// about `capacity / budget` calls. With `expire_nodest_conn` on it also
    /// removes connections whose server is gone.
    pub fn expire(&self, now: u64, budget: usize) -> usize {
        let mut work = 0usize;
        let mut removed = 0usize;
        let nshards = self.shards.len();
        // Consecutive visits that scanned their whole shard: a run of
        // `nshards` of them means the table is covered and more work this
        // call would only rescan it.
        let mut whole = 0usize;
        let knobs = self.knobs();
        loop {
            let s = self.sweep_shard.fetch_add(1, Relaxed) % nshards;
            let step = SWEEP_STEP.min(budget.saturating_sub(work)).max(1);
            let (n4, w4, f4, r4) =
                self.sweep_part::<Ipv4Addr>(s as u32, now, step, knobs.expire_nodest_conn);
            let (n6, w6, f6, r6) =
                self.sweep_part::<Ipv6Addr>(s as u32, now, step, knobs.expire_nodest_conn);
            self.apply_releases(&r4);
            self.apply_releases(&r6);
            removed += n4 + n6;
            // An empty shard still costs one unit, so the loop ends.
            work += (w4 + w6).max(1);
            whole = if f4 && f6 { whole + 1 } else { 0 };
            if work >= budget || whole >= nshards {
                break;
            }
        }
        removed
    }

    fn sweep_part<A: Family>(
        &self,
        shard: u32,
        now: u64,
        step: usize,
        nodest: bool,
    ) -> (usize, usize, bool, Releases) {
        let mut rel: Releases = Releases::new(A::WIDE);
        let mut g = self.lock(shard);
        let (part, stats) = A::split(&mut g);
        let slots = part.slots();
        if slots == 0 {
            return (0, 0, true, rel);
        }
        let mut removed = 0;
        let mut visited = 0;
        let mut cur = part.sweep % slots;
        while visited < step && !rel.full() {
            if self.sweep_one(part, stats, cur, now, nodest, &mut rel) {
                removed += 1;
            }
            visited += 1;
            cur += 1;
            if cur >= slots {
                cur = 0;
                // A pass over this part ends: give a flood's memory back.
                part.sweep = 0;
                part.shrink(&self.hasher);
                if visited >= slots as usize || part.slots() != slots {
                    break;
                }
            }
        }
        part.sweep = cur;
        part.prepare(&self.hasher);
        (removed, visited, visited >= slots as usize, rel)
    }

    /// Examines slot `idx`; true when it removed the entry.
    fn sweep_one<A: Family, const N: usize>(
        &self,
        part: &mut Part<A>,
        stats: &mut ShardStats,
        idx: u32,
        now: u64,
        nodest: bool,
        rel: &mut Releases<N>,
    ) -> bool {
        let e = part.get(idx);
        let Some(dest) = &e.dest else { return false };
        if e.flags & flag::TEMPLATE != 0 {
            let controlling = e.aux != 0;
            let dead = e.remaining(now) <= 0 || e.flags & flag::UNHASHED != 0;
            if !dead {
                return false;
            }
            if controlling {
                if e.flags & flag::UNHASHED == 0 {
                    // Requeue: lives on while it controls connections.
                    let to = e.pkts;
                    part.get_mut(idx).expires = (now as u32).wrapping_add(to);
                }
                return false;
            }
        } else if e.remaining(now) > 0 && (!nodest || dest.is_available()) {
            return false;
        } else if e.remaining(now) > 0 {
            stats.nodest_expired += 1;
            let old = part.remove(&self.hasher, idx);
            self.retire(old, stats, rel);
            return true;
        }
        stats.expired += 1;
        let old = part.remove(&self.hasher, idx);
        self.retire(old, stats, rel);
        true
    }

    /// Frees one slot of `part` for an insert into a full table. True when a
    /// victim was removed (its capacity unit returned to the table).
    pub(crate) fn evict_one<A: Family, const N: usize>(
        &self,
        part: &mut Part<A>,
        stats: &mut ShardStats,
        now: u64,
        rel: &mut Releases<N>,
    ) -> bool {
        let slots = part.slots();
        if slots == 0 || rel.full() {
            return false;
        }
        // (class, packets) of the best victim so far, and its slot.
        let mut best: Option<((u8, u32), u32)> = None;
        let mut cur = part.evict % slots;
        let scan = EVICT_SCAN.min(slots);
        for _ in 0..scan {
            let here = cur;
            cur += 1;
            if cur >= slots {
                cur = 0;
            }
            let e = part.get(here);
            if let Some(class) = self.victim_class(e, now) {
                // Expired entries and stale handshakes are taken at once;
                // anything else only if nothing better shows up.
                if class <= 1 {
                    best = Some(((class, 0), here));
                    break;
                }
                let rank = (class, e.pkts);
                if best.is_none_or(|(r, _)| rank < r) {
                    best = Some((rank, here));
                }
            }
        }
        part.evict = cur;
        let Some(((class, _), idx)) = best else {
            return false;
        };
        let old = part.remove(&self.hasher, idx);
        stats.evicted += 1;
        if class == 3 || class == 5 {
            stats.evicted_established += 1;
        }
        self.retire(old, stats, rel);
        true
    }
}

/// A handshake younger than this is evicted only after blind-ACK entries:
/// a real client's SYN_RECV lasts one round trip, and during a SYN + blind
/// ACK flood it would otherwise be the first victim.
pub(crate) const FRESH_MS: u32 = 1000;

impl Table {
    /// Eviction preference, lowest first: 0 expired, 1 handshake older
    /// than [`FRESH_MS`], 2 one-packet datagram flow, 3 ESTABLISHED with at
    /// most 2 packets (SYN + ACK, no data: what a blind-ACK flood makes),
    /// 4 fresh handshake, 5 ESTABLISHED with 3 to 8 packets; `None` = never
    /// evicted.
    fn victim_class<A: crate::entry::Addr>(&self, e: &Entry<A>, now: u64) -> Option<u8> {
        e.dest.as_ref()?;
        if e.flags & flag::TEMPLATE != 0 {
            return (e.aux == 0 && e.remaining(now) <= 0).then_some(0);
        }
        let left = e.remaining(now);
        if left <= 0 {
            return Some(0);
        }
        let fresh = || {
            self.timeout_ms(e.proto, e.state)
                .saturating_sub(left as u32)
                < FRESH_MS
        };
        let handshake = || Some(if fresh() { 4 } else { 1 });
        let established = || match e.pkts {
            0..=2 => Some(3),
            3..=8 => Some(5),
            _ => None,
        };
        match e.proto {
            ipproto::TCP => match TcpState::from_u8(e.state) {
                TcpState::SynRecv | TcpState::SynAck => handshake(),
                TcpState::Established => established(),
                _ => None,
            },
            ipproto::SCTP => match SctpState::from_u8(e.state) {
                SctpState::Init1 | SctpState::Init => handshake(),
                SctpState::Established => established(),
                _ => None,
            },
            _ => (e.pkts <= 1).then_some(2),
        }
    }
}
