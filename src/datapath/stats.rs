//! Per-worker counters: every drop has a named reason, every hook entry its
//! seen/dropped/stolen counts. Each worker writes only its own block (single
//! writer: a plain load+store, no locked instruction, no shared cache line);
//! the control thread sums the blocks when asked.
//!
//! Traffic counters of services and real servers (`--stats`) live in the
//! same blocks: each worker has an array of counter slots, indexed by a
//! slot id that the service snapshot hands out (a real server carries a tag
//! naming its own slot and its service's, [`tag`]). The control side
//! ([`Stats::service_slot`], [`Stats::dest_slot`]) allocates ids, sums the
//! workers' slots, keeps a zero baseline per slot (`-Z`, and a reused id
//! starting from zero: no worker line is ever written by the control
//! thread) and runs the estimator. An id is reused only after its owner is
//! gone: a service's id once the service left every snapshot and none of
//! its servers is alive; a server's once no connection holds it (checked by
//! [`Stats::sweep`] on the estimator's timer). A packet already past its
//! connection lookup when the last holder went may still count into the
//! old id: at most the packets in flight at that instant, normally long
//! done when the next sweep frees the id.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crossbeam_utils::CachePadded;
use uvs_fwd::ParseError;
use uvs_sched::Dest;

use crate::datapath::estimator::{Estimator, Rates};
use crate::datapath::hooks::MAX_ENTRIES;

/// Why uvs dropped a packet (parse errors are counted apart, per reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// Unparseable (the parse counters say why).
    Malformed,
    /// A filter-table rule said DROP.
    Filtered,
    /// No connection and not a connection-opening packet (e.g. a stray ACK).
    NoConnection,
    /// The service has no available real server.
    NoDestination,
    /// The connection's real server was removed (`expire_nodest_conn`).
    DestRemoved,
    /// TTL / hop limit would reach zero.
    TtlExceeded,
    /// The connection table refused a new entry (full).
    TableFull,
    /// No route or neighbour toward the next hop.
    NoRoute,
    /// A forwarding method or packet kind uvs does not handle yet.
    Unsupported,
    /// The rewrite failed on a malformed packet.
    Rewrite,
    /// The ring truncated a frame too big for it.
    Truncated,
    /// The kernel refused a transmission.
    TxFailed,
    /// Too many packets waiting for neighbour resolution.
    ParkFull,
    /// Larger than the path (or tunnel) MTU and not to be fragmented.
    TooBig,
    /// Dropped by the kernel before uvs saw it: the RX queue (ring) was
    /// full (`PACKET_STATISTICS` `tp_drops`, read periodically).
    RxQueueFull,
    /// A datagram to a `--pe sip` service without a usable Call-ID header
    /// (the kernel's SIP engine cannot key it and drops it).
    PeNoCallId,
    /// A connection-opening packet dropped by the `drop_packet` flood
    /// defence (one in every *rate* while engaged).
    DefenseDropPacket,
    /// An IPv6 fragment after the first, to a VIP, whose first fragment
    /// uvs has not seen (or no longer remembers): it cannot be given the
    /// first fragment's real server.
    FragmentUnmatched,
    /// A flow the nat table translates could not be recorded: the nat
    /// connection table is full.
    NatTableFull,
    /// SNAT/MASQUERADE found no free source port in its range.
    NatNoPort,
    /// MASQUERADE found no address of the director for the packet's family.
    NatNoAddress,
    /// A local client's packet (read from the `uvs-lo` TUN device) that
    /// no service took: nothing else would deliver it.
    LocalNotBalanced,
    /// The `uvs-lo` TUN device refused a reply for a local client.
    LocalTunWrite,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 23;
    /// All reasons, in index order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Malformed,
        DropReason::Filtered,
        DropReason::NoConnection,
        DropReason::NoDestination,
        DropReason::DestRemoved,
        DropReason::TtlExceeded,
        DropReason::TableFull,
        DropReason::NoRoute,
        DropReason::Unsupported,
        DropReason::Rewrite,
        DropReason::Truncated,
        DropReason::TxFailed,
        DropReason::ParkFull,
        DropReason::TooBig,
        DropReason::RxQueueFull,
        DropReason::PeNoCallId,
        DropReason::DefenseDropPacket,
        DropReason::FragmentUnmatched,
        DropReason::NatTableFull,
        DropReason::NatNoPort,
        DropReason::NatNoAddress,
        DropReason::LocalNotBalanced,
        DropReason::LocalTunWrite,
    ];
    /// Counter name.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Filtered => "filtered",
            DropReason::NoConnection => "no_connection",
            DropReason::NoDestination => "no_destination",
            DropReason::DestRemoved => "dest_removed",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::TableFull => "table_full",
            DropReason::NoRoute => "no_route",
            DropReason::Unsupported => "unsupported",
            DropReason::Rewrite => "rewrite_failed",
            DropReason::Truncated => "truncated_by_ring",
            DropReason::TxFailed => "tx_failed",
            DropReason::ParkFull => "neighbour_queue_full",
            DropReason::TooBig => "too_big",
            DropReason::RxQueueFull => "rx_queue_full",
            DropReason::PeNoCallId => "pe_no_call_id",
            DropReason::DefenseDropPacket => "defense_drop_packet",
            DropReason::FragmentUnmatched => "fragment_unmatched",
            DropReason::NatTableFull => "nat_table_full",
            DropReason::NatNoPort => "nat_no_port",
            DropReason::NatNoAddress => "nat_no_address",
            DropReason::LocalNotBalanced => "local_not_balanced",
            DropReason::LocalTunWrite => "local_tun_write",
        }
    }
}

fn arr<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

/// One worker's counters.
#[derive(Debug)]
pub struct WorkerStats {
    pub rx: AtomicU64,
    pub tx: AtomicU64,
    /// Packets left to the kernel (not uvs's).
    pub passed: AtomicU64,
    /// New connections created.
    pub conns: AtomicU64,
    /// ICMP errors sent (port unreachable, time exceeded, too big).
    pub icmp_sent: AtomicU64,
    /// ICMP errors not sent: over the rate limit.
    pub icmp_limited: AtomicU64,
    /// New connections another worker had already created (insert race).
    pub conn_races: AtomicU64,
    /// Frames skipped, not processed: the kernel had moved their 802.1Q
    /// tag out (seen again on the VLAN device, if one exists).
    pub skipped_vlan: AtomicU64,
    /// Frames skipped: not addressed to this host (broadcast, multicast,
    /// another MAC).
    pub skipped_other_host: AtomicU64,
    /// Frames sent by `sendmmsg` because their TX ring was full.
    pub tx_ring_fallback: AtomicU64,
    /// Times the worker slept in poll with its sources empty (each one
    /// costs a wake-up when the next packet comes).
    pub sleeps: AtomicU64,
    /// Idle periods that a spin ended by finding a packet, where the
    /// worker would otherwise have slept (`--idle-spin`, `--busy-poll`).
    pub spin_caught: AtomicU64,
    pub parse: [AtomicU64; ParseError::COUNT],
    pub drops: [AtomicU64; DropReason::COUNT],
    pub hook_seen: [AtomicU64; MAX_ENTRIES],
    pub hook_dropped: [AtomicU64; MAX_ENTRIES],
    pub hook_stolen: [AtomicU64; MAX_ENTRIES],
    /// Service and real-server traffic counters, by slot id.
    pub slots: Slots,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            rx: AtomicU64::new(0),
            tx: AtomicU64::new(0),
            passed: AtomicU64::new(0),
            conns: AtomicU64::new(0),
            icmp_sent: AtomicU64::new(0),
            conn_races: AtomicU64::new(0),
            icmp_limited: AtomicU64::new(0),
            skipped_vlan: AtomicU64::new(0),
            skipped_other_host: AtomicU64::new(0),
            tx_ring_fallback: AtomicU64::new(0),
            sleeps: AtomicU64::new(0),
            spin_caught: AtomicU64::new(0),
            parse: arr(),
            drops: arr(),
            hook_seen: arr(),
            hook_dropped: arr(),
            hook_stolen: arr(),
            slots: Slots::default(),
        }
    }
}

/// Adds `n` to a counter that only the calling worker writes.
#[inline]
pub fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl WorkerStats {
    /// Counts a drop.
    #[inline]
    pub fn drop(&self, r: DropReason) {
        add(&self.drops[r as usize], 1);
    }

    /// Counts one packet of a connection whose server has counter `tag`:
    /// `inbound` is client → server (the kernel's "in"), else a reply;
    /// `bytes` is the IP packet's length.
    #[inline]
    pub fn count_packet(&self, tag: u64, inbound: bool, bytes: usize) {
        if tag == Dest::NO_STATS {
            return;
        }
        let (p, b) = if inbound {
            (IN_PKTS, IN_BYTES)
        } else {
            (OUT_PKTS, OUT_BYTES)
        };
        for id in [tag as u32, (tag >> 32) as u32] {
            if let Some(s) = self.slots.get(id) {
                add(&s.0[p], 1);
                add(&s.0[b], bytes as u64);
            }
        }
    }

    /// Counts a new connection to the server with counter `tag`.
    #[inline]
    pub fn count_conn(&self, tag: u64) {
        if tag == Dest::NO_STATS {
            return;
        }
        for id in [tag as u32, (tag >> 32) as u32] {
            if let Some(s) = self.slots.get(id) {
                add(&s.0[CONNS], 1);
            }
        }
    }
}

const CONNS: usize = 0;
const IN_PKTS: usize = 1;
const OUT_PKTS: usize = 2;
const IN_BYTES: usize = 3;
const OUT_BYTES: usize = 4;

/// Slots per chunk of a worker's slot array.
const SLOT_CHUNK: usize = 256;
/// Most slot ids (services + real servers alive at once).
pub const MAX_SLOTS: usize = 1 << 20;
/// The slot id of nothing.
pub const NO_SLOT: u32 = u32::MAX;

/// The counter tag of a real server: its own slot and its service's.
pub fn tag(svc: u32, dest: u32) -> u64 {
    (u64::from(svc) << 32) | u64::from(dest)
}

/// One service's or server's counters in one worker.
#[derive(Debug, Default)]
pub struct Slot([AtomicU64; 5]);

type Chunk = CachePadded<[Slot; SLOT_CHUNK]>;

/// One worker's slot array: chunks allocated by the control thread before
/// it publishes an id in them, so a worker never allocates; a chunk is
/// padded to cache lines, so no two workers' slots share one.
#[derive(Debug)]
pub struct Slots {
    chunks: Box<[OnceLock<Box<Chunk>>]>,
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            chunks: (0..MAX_SLOTS / SLOT_CHUNK)
                .map(|_| OnceLock::new())
                .collect(),
        }
    }
}

impl Slots {
    #[inline]
    fn get(&self, id: u32) -> Option<&Slot> {
        let id = id as usize;
        self.chunks
            .get(id / SLOT_CHUNK)?
            .get()
            .map(|c| &c[id % SLOT_CHUNK])
    }

    fn ensure(&self, id: u32) {
        if let Some(c) = self.chunks.get(id as usize / SLOT_CHUNK) {
            c.get_or_init(|| Box::new(CachePadded::new(std::array::from_fn(|_| Slot::default()))));
        }
    }
}

/// Traffic totals of a service or real server (the kernel's
/// `ip_vs_kstats`): what `--stats` shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

impl Counters {
    fn from_arr(a: [u64; 5]) -> Counters {
        Counters {
            conns: a[CONNS],
            inpkts: a[IN_PKTS],
            outpkts: a[OUT_PKTS],
            inbytes: a[IN_BYTES],
            outbytes: a[OUT_BYTES],
        }
    }

    fn since(self, base: Counters) -> Counters {
        Counters {
            conns: self.conns.wrapping_sub(base.conns),
            inpkts: self.inpkts.wrapping_sub(base.inpkts),
            outpkts: self.outpkts.wrapping_sub(base.outpkts),
            inbytes: self.inbytes.wrapping_sub(base.inbytes),
            outbytes: self.outbytes.wrapping_sub(base.outbytes),
        }
    }
}

/// A service's hold on its counter slot; shared by the service's runtime
/// objects across snapshots, gone when the service is deleted.
#[derive(Debug)]
pub struct SvcSlot {
    pub id: u32,
}

/// Who holds a slot id.
#[derive(Debug)]
enum Owner {
    Free,
    Service { lease: Weak<SvcSlot>, dests: u32 },
    Dest { dest: Weak<Dest>, svc: u32 },
}

#[derive(Debug)]
struct Rec {
    owner: Owner,
    /// Totals (summed over workers) at the last zeroing.
    base: Counters,
    est: Estimator,
}

/// The control side of the slots.
#[derive(Debug, Default)]
struct SlotTable {
    recs: Vec<Rec>,
    free: Vec<u32>,
}

/// The counters of every worker.
#[derive(Debug)]
pub struct Stats {
    pub workers: Vec<CachePadded<WorkerStats>>,
    slots: Mutex<SlotTable>,
}

impl Stats {
    /// Counter blocks for `n` workers.
    pub fn new(n: usize) -> Stats {
        Stats {
            workers: (0..n)
                .map(|_| CachePadded::new(WorkerStats::default()))
                .collect(),
            slots: Mutex::new(SlotTable::default()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, SlotTable> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The workers' raw totals of slot `id`.
    fn raw(&self, id: u32) -> Counters {
        let mut a = [0u64; 5];
        for w in &self.workers {
            if let Some(s) = w.slots.get(id) {
                for (t, c) in a.iter_mut().zip(&s.0) {
                    *t = t.wrapping_add(c.load(Relaxed));
                }
            }
        }
        Counters::from_arr(a)
    }

    /// A free id for `owner`, its chunk present in every worker, counting
    /// from zero. `None` when every id is taken (nothing is counted then).
    fn alloc(&self, t: &mut SlotTable, owner: Owner) -> Option<u32> {
        let id = match t.free.pop() {
            Some(id) => id,
            None if t.recs.len() < MAX_SLOTS => {
                t.recs.push(Rec {
                    owner: Owner::Free,
                    base: Counters::default(),
                    est: Estimator::default(),
                });
                (t.recs.len() - 1) as u32
            }
            None => return None,
        };
        for w in &self.workers {
            w.slots.ensure(id);
        }
        let now = self.raw(id);
        t.recs[id as usize] = Rec {
            owner,
            base: now,
            est: Estimator::new(now),
        };
        Some(id)
    }

    /// A new service's counter slot.
    pub fn service_slot(&self) -> Arc<SvcSlot> {
        let mut t = self.table();
        let mut lease = Arc::new(SvcSlot { id: NO_SLOT });
        let owner = Owner::Service {
            lease: Weak::new(),
            dests: 0,
        };
        if let Some(id) = self.alloc(&mut t, owner) {
            lease = Arc::new(SvcSlot { id });
            t.recs[id as usize].owner = Owner::Service {
                lease: Arc::downgrade(&lease),
                dests: 0,
            };
        }
        lease
    }

    /// Gives a new real server of service slot `svc` its own slot and tags
    /// it with both (before the server is published to workers).
    pub fn dest_slot(&self, svc: &SvcSlot, dest: &Arc<Dest>) {
        if svc.id == NO_SLOT {
            return;
        }
        let mut t = self.table();
        let owner = Owner::Dest {
            dest: Arc::downgrade(dest),
            svc: svc.id,
        };
        if let Some(id) = self.alloc(&mut t, owner) {
            if let Owner::Service { dests, .. } = &mut t.recs[svc.id as usize].owner {
                *dests += 1;
            }
            dest.set_stats_tag(tag(svc.id, id));
        }
    }

    /// Frees the ids whose owners are gone (servers no connection holds;
    /// services out of every snapshot with no server left). O(ids).
    pub fn sweep(&self) {
        let mut t = self.table();
        let mut freed = Vec::new();
        for i in 0..t.recs.len() {
            if let Owner::Dest { dest, svc } = &t.recs[i].owner {
                if dest.strong_count() == 0 {
                    let svc = *svc as usize;
                    t.recs[i].owner = Owner::Free;
                    freed.push(i as u32);
                    if let Owner::Service { dests, .. } = &mut t.recs[svc].owner {
                        *dests = dests.saturating_sub(1);
                    }
                }
            }
        }
        for (i, r) in t.recs.iter_mut().enumerate() {
            if let Owner::Service { lease, dests: 0 } = &r.owner {
                if lease.strong_count() == 0 {
                    r.owner = Owner::Free;
                    freed.push(i as u32);
                }
            }
        }
        t.free.extend(freed);
    }

    /// Slot `id`'s totals since it was allocated or zeroed.
    pub fn counters(&self, id: u32) -> Counters {
        let t = self.table();
        match t.recs.get(id as usize) {
            Some(r) => self.raw(id).since(r.base),
            None => Counters::default(),
        }
    }

    /// Slot `id`'s rates from the estimator.
    pub fn rates(&self, id: u32) -> Rates {
        let t = self.table();
        t.recs
            .get(id as usize)
            .map_or_else(Rates::default, |r| r.est.rates())
    }

    /// `-Z` for slot `id`: totals and rates start again from zero.
    pub fn zero(&self, id: u32) {
        let mut t = self.table();
        let now = self.raw(id);
        if let Some(r) = t.recs.get_mut(id as usize) {
            r.base = now;
            r.est = Estimator::new(now);
        }
    }

    /// One estimator interval for every slot in use: O(ids × workers),
    /// whatever the traffic. Also frees the ids of owners gone.
    pub fn estimate(&self) {
        self.sweep();
        let mut t = self.table();
        for i in 0..t.recs.len() {
            if matches!(t.recs[i].owner, Owner::Free) {
                continue;
            }
            let now = self.raw(i as u32);
            t.recs[i].est.tick(now);
        }
    }

    /// Slot ids in use (tests).
    pub fn slots_in_use(&self) -> usize {
        let t = self.table();
        t.recs.len() - t.free.len()
    }

    fn sum(&self, f: impl Fn(&WorkerStats) -> &AtomicU64) -> u64 {
        self.workers.iter().map(|w| f(w).load(Relaxed)).sum()
    }

    /// Total drops for `r`.
    pub fn drops(&self, r: DropReason) -> u64 {
        self.sum(|w| &w.drops[r as usize])
    }
}

#[cfg(test)]
mod tests;
