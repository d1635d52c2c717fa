//! The connection table: the engine-facing API (lookup, insert, update,
//! expire) over the sharded slab.
//!
//! Locking: one spin lock per shard (`lock.rs`), never two held at once (a
//! template in another shard is touched after the connection's shard lock is
//! released). Every operation holds a lock for O(1) work, except index
//! growth (O(shard size), avoided with `Config::presize`) and the bounded
//! sweep and listing steps. `lookup` and `update` allocate nothing: a
//! [`Handle`] is a plain value plus one `Arc<Dest>` clone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use uvs_sched::{Dest, FwdMethod};

use crate::config::{Config, Defense, Knobs, Timeouts};
use crate::entry::{flag, Addr, Entry, MAX_TIMEOUT_MS};
pub(crate) use crate::handle::{Handle, Hit};
use crate::hash::Hasher;
use crate::lock::{Guard, ShardLock};
use crate::proto::ipproto;
use crate::proto::sctp::SCTP_STATES;
use crate::proto::tcp::{self, TCP_STATES};
use crate::shard::{key_hash, Family, Shard, ShardStats, KIND_CONN, KIND_OUT, REF_SHIFT};

/// Which way a packet travels relative to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client → virtual service (requests, as the director receives them).
    In,
    /// Real server → client (NAT replies, before the director rewrites them).
    Out,
}

/// Which sides of the table a per-packet lookup probes
/// ([`Table::lookup_update_into`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sides {
    /// The request side, then the reply side ([`Table::lookup_update`]).
    Both,
    /// The request side only: a packet that cannot be a reply (the
    /// engine's bare TCP SYN to a virtual service).
    Request,
    /// The reply side only ([`Table::lookup_update_out`]: the
    /// `ip_vs_out` lookup of a packet not addressed to a virtual service).
    Reply,
}

/// A packet's addressing as seen on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// IP protocol number.
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Source port (0 for protocols without ports).
    pub sport: u16,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port.
    pub dport: u16,
}

impl Tuple {
    /// The tuple of a packet travelling the other way.
    pub fn reversed(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
        }
    }
}

/// A new connection decided by the engine's scheduler.
#[derive(Debug, Clone)]
pub struct NewConn {
    /// IP protocol number.
    pub proto: u8,
    /// Client address and port.
    pub caddr: IpAddr,
    /// Client port.
    pub cport: u16,
    /// Virtual address and port the client addressed.
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address and port the connection goes to.
    pub daddr: IpAddr,
    /// Real server port.
    pub dport: u16,
    /// The destination (for active/inactive counting and availability).
    pub dest: Arc<Dest>,
    /// Forwarding method.
    pub fwd: FwdMethod,
}

/// What the state machines need from one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketInfo {
    /// TCP flag byte (header byte 13); 0 for other protocols.
    pub tcp_flags: u8,
    /// SCTP: the first chunk's type (ABORT when a COOKIE ECHO/ACK is followed
    /// by an ABORT); 0 (DATA) otherwise.
    pub sctp_chunk: u8,
    /// Bytes of the IP packet.
    pub bytes: u32,
}

impl PacketInfo {
    /// A TCP segment.
    pub fn tcp(tcp_flags: u8, bytes: u32) -> Self {
        PacketInfo {
            tcp_flags,
            sctp_chunk: 0,
            bytes,
        }
    }
    /// A UDP datagram (or any protocol without a state machine).
    pub fn udp(bytes: u32) -> Self {
        PacketInfo {
            tcp_flags: 0,
            sctp_chunk: 0,
            bytes,
        }
    }
    /// An SCTP packet whose first chunk has type `chunk`.
    pub fn sctp(chunk: u8, bytes: u32) -> Self {
        PacketInfo {
            tcp_flags: 0,
            sctp_chunk: chunk,
            bytes,
        }
    }
}

/// What the engine must do with the packet after [`Table::update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Update {
    /// Forward it along the connection.
    Forward,
    /// Drop it (server removed and `expire_nodest_conn` off, or the entry is
    /// gone and the packet cannot open a connection).
    Drop,
    /// The old entry has been removed: schedule the packet as a new
    /// connection, insert it, and forward this same packet (nothing lost).
    Reschedule,
}

/// Why an insert was refused. Every refusal is also counted in [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// A live entry already has this client→virtual tuple (another worker
    /// inserted it first: look it up and use it).
    #[error("connection already exists")]
    Exists,
    /// A live NAT entry already uses this reply tuple (same client port and
    /// real server through another virtual service): replies could not be
    /// told apart.
    #[error("reply tuple already in use")]
    ReplyTupleInUse,
    /// The table is at `max_entries` and nothing could be evicted.
    #[error("connection table full")]
    Full,
    /// Client, virtual and real-server addresses are not one family.
    #[error("address families differ")]
    FamilyMismatch,
    /// The persistence template passed to `insert_controlled` no longer
    /// exists or was invalidated.
    #[error("persistence template gone")]
    TemplateGone,
}

/// Table counters (sums over shards; a snapshot, not atomic as a whole).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries inserted (connections and templates).
    pub inserted: u64,
    /// Inserts refused because the table was full.
    pub refused_full: u64,
    /// Inserts refused because the tuple (or reply tuple) was taken.
    pub refused_exists: u64,
    /// Entries evicted to make room (`drop_entry`), all reasons.
    pub evicted: u64,
    /// Of `evicted`: low-packet ESTABLISHED entries (no handshake entry
    /// was found to evict).
    pub evicted_established: u64,
    /// Entries `drop_entry`'s once-a-second pass removed
    /// ([`Table::defense_tick`]).
    pub dropped_entry: u64,
    /// Entries expired by timeout.
    pub expired: u64,
    /// Inserts refused for a caller error: mixed address families, or a
    /// template that vanished before `insert_controlled`.
    pub refused_invalid: u64,
    /// Entries removed so that a new packet is rescheduled
    /// (`conn_reuse_mode`, `expire_nodest_conn`).
    pub rescheduled: u64,
    /// Packets dropped because their server is gone (`expire_nodest_conn`
    /// off).
    pub nodest_dropped: u64,
    /// Entries expired because their server is gone (`expire_nodest_conn`).
    pub nodest_expired: u64,
}

impl Stats {
    fn add(&mut self, s: &ShardStats) {
        self.inserted += s.inserted;
        self.refused_full += s.refused_full;
        self.refused_exists += s.refused_exists;
        self.evicted += s.evicted;
        self.evicted_established += s.evicted_established;
        self.dropped_entry += s.dropped_entry;
        self.expired += s.expired;
        self.rescheduled += s.rescheduled;
        self.nodest_dropped += s.nodest_dropped;
        self.nodest_expired += s.nodest_expired;
    }
}

/// A shard lock padded to its own cache lines, so workers locking
/// neighbouring shards do not contend on one line.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Slot(pub(crate) ShardLock<Shard>);

/// Pending template releases collected under one shard lock and applied
/// after it is released (never two locks at once). Fixed size: no
/// allocation; callers stop their scan when it is full.
pub(crate) struct Releases<const N: usize = 32> {
    refs: [u32; N],
    n: usize,
    v6: bool,
}

impl<const N: usize> Releases<N> {
    #[inline(always)]
    pub(crate) fn new(v6: bool) -> Self {
        Releases {
            refs: [0; N],
            n: 0,
            v6,
        }
    }
    pub(crate) fn full(&self) -> bool {
        self.n == self.refs.len()
    }
    pub(crate) fn push(&mut self, r: u32) {
        debug_assert!(!self.full());
        if self.n < self.refs.len() {
            self.refs[self.n] = r;
            self.n += 1;
        }
    }
}

/// The sharded IPVS connection table. See the crate docs.
#[derive(Debug)]
pub struct Table {
    pub(crate) shards: Box<[Slot]>,
    pub(crate) shard_mask: u32,
    pub(crate) hasher: Hasher,
    /// Units of the cap taken: the live entries plus the shards' credit
    /// (`ShardStats::credit`, at most `shards × keep`).
    pub(crate) count: AtomicUsize,
    pub(crate) max: usize,
    /// Units a shard takes from `count` at once (1: one per entry, as
    /// exact as a single counter).
    batch: u32,
    /// Credit a shard keeps after a removal; more goes back to `count`.
    keep: u32,
    /// From this count on, shards take one unit at a time and give every
    /// unit back, as a single counter would: credit taken earlier is spent
    /// by the next inserts of its shard, so the table fills to its cap.
    near: usize,
    pub(crate) defense_at: usize,
    knobs: AtomicU32,
    tcp_to: [AtomicU32; TCP_STATES],
    sctp_to: [AtomicU32; SCTP_STATES],
    udp_to: AtomicU32,
    pub(crate) sweep_shard: AtomicUsize,
    pub(crate) refused_invalid: AtomicU64,
    pub(crate) defense: crate::defense::State,
}

impl Table {
    /// Builds an empty table.
    pub fn new(cfg: Config) -> Self {
        let n = cfg.shards.clamp(1, 1024).next_power_of_two();
        let max = cfg.max_entries.max(1);
        let presize = if cfg.presize {
            // Room for the expected share plus a margin for hash skew.
            max / n + max / n / 8 + 16
        } else {
            0
        };
        // Without `presize`, each IPv4 index starts with room for 1/32 of
        // the shard's share of the cap (128 keys at the default 1M cap
        // and 256 shards: 1.3 KB per shard): a table warming up then
        // skips the first rebuilds, each of which rehashes every entry
        // under the lock, for about 3 % of a full table's index memory.
        let warm = if cfg.presize { 0 } else { max / n / 32 };
        let shards = (0..n)
            .map(|_| Slot(ShardLock::new(Shard::new(presize, warm))))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        // A shard takes 1/512 of its share of the cap at a time (8 at the
        // default 1M cap and 256 shards: one shared write per 8 inserts);
        // below 512 × shards, one at a time. At most `shards × keep` (under
        // 1/256 of the cap) is credit, and none is taken in the last
        // `8 × shards × keep` units (2.7% of the cap).
        let batch = (max / n / 512).clamp(1, 32) as u32;
        let keep = 2 * (batch - 1);
        let t = Table {
            shards,
            shard_mask: (n - 1) as u32,
            hasher: Hasher::new(cfg.seed),
            count: AtomicUsize::new(0),
            max,
            batch,
            keep,
            near: max.saturating_sub(8 * n * keep as usize),
            defense_at: max / 100 * cfg.defense_threshold_pct.min(100) as usize,
            knobs: AtomicU32::new(cfg.knobs.pack()),
            tcp_to: std::array::from_fn(|_| AtomicU32::new(0)),
            sctp_to: std::array::from_fn(|_| AtomicU32::new(0)),
            udp_to: AtomicU32::new(0),
            sweep_shard: AtomicUsize::new(0),
            refused_invalid: AtomicU64::new(0),
            defense: crate::defense::State::new(cfg.todrop_idle_ms),
        };
        t.set_timeouts(&cfg.timeouts);
        t
    }

    /// Live entries (connections and templates, including expired ones the
    /// sweep has not reached yet): the units taken from the cap less the
    /// shards' credit, each read under its shard's lock (control path).
    /// Exact while no insert or removal runs, never above the cap (the
    /// count, read first, never is).
    pub fn len(&self) -> usize {
        let taken = self.count.load(Relaxed);
        let credit: usize = self
            .shards
            .iter()
            .map(|s| self.lock_slot(s).stats.credit as usize)
            .sum();
        taken.saturating_sub(credit)
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry cap.
    pub fn capacity(&self) -> usize {
        self.max
    }

    /// Current knobs.
    #[inline(always)]
    pub fn knobs(&self) -> Knobs {
        Knobs::unpack(self.knobs.load(Relaxed))
    }

    /// The knobs as stored (`Knobs::pack`): the per-packet path tests the
    /// bits it needs and unpacks only on its rare branches.
    #[inline(always)]
    pub(crate) fn knob_bits(&self) -> u32 {
        self.knobs.load(Relaxed)
    }

    /// Replaces the knobs (control path; takes effect on the next packet).
    pub fn set_knobs(&self, k: &Knobs) {
        self.knobs.store(k.pack(), Relaxed);
    }

    /// Current timeouts.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            tcp: std::array::from_fn(|i| self.tcp_to[i].load(Relaxed)),
            sctp: std::array::from_fn(|i| self.sctp_to[i].load(Relaxed)),
            udp: self.udp_to.load(Relaxed),
        }
    }

    /// Replaces the timeouts (control path). Entries pick the new value up at
    /// their next packet, as in the kernel.
    pub fn set_timeouts(&self, t: &Timeouts) {
        for (a, v) in self.tcp_to.iter().zip(t.tcp) {
            a.store(v.min(MAX_TIMEOUT_MS), Relaxed);
        }
        for (a, v) in self.sctp_to.iter().zip(t.sctp) {
            a.store(v.min(MAX_TIMEOUT_MS), Relaxed);
        }
        self.udp_to.store(t.udp.min(MAX_TIMEOUT_MS), Relaxed);
    }

    /// Counter snapshot.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for sh in self.shards.iter() {
            s.add(&self.lock_slot(sh).stats);
        }
        s.refused_invalid = self.refused_invalid.load(Relaxed);
        s
    }

    /// Heap bytes held by entries and indexes (for the bytes-per-entry
    /// figure; excludes the `Dest`s, which are shared).
    pub fn heap_bytes(&self) -> usize {
        let fixed = std::mem::size_of_val(&*self.shards);
        fixed
            + self
                .shards
                .iter()
                .map(|s| self.lock_slot(s).heap_bytes())
                .sum::<usize>()
    }

    // ----- internals -----

    #[inline(always)]
    fn lock_slot<'a>(&self, s: &'a Slot) -> Guard<'a, Shard> {
        // A panic while holding a shard lock leaves the shard consistent at
        // entry granularity (no operation leaves a half-linked entry before
        // a fallible step), so the lock has no poisoning: it is released on
        // unwind and the next holder carries on.
        s.0.lock()
    }

    #[inline(always)]
    pub(crate) fn lock(&self, shard: u32) -> Guard<'_, Shard> {
        self.lock_slot(&self.shards[(shard & self.shard_mask) as usize])
    }

    /// The shard of a client endpoint. Requests hash (proto, src, sport) and
    /// replies (proto, dst, dport): both name the client, so both directions
    /// of a connection live in one shard under one lock.
    #[inline(always)]
    pub(crate) fn shard_of<A: Addr>(&self, proto: u8, caddr: A, cport: u16) -> u32 {
        let (a, b) = caddr.words();
        let h = if A::WIDE {
            self.hasher
                .hash3(a, b, (cport as u64) << 8 | proto as u64 | 1 << 40)
        } else {
            // An IPv4 endpoint fits one 56-bit word: one multiply.
            self.hasher
                .hash1(a << 24 | (cport as u64) << 8 | proto as u64)
        };
        ((h >> 32) as u32) & self.shard_mask
    }

    #[inline(always)]
    pub(crate) fn timeout_ms(&self, proto: u8, state: u8) -> u32 {
        match proto {
            ipproto::TCP => self.tcp_to[(state as usize).min(TCP_STATES - 1)].load(Relaxed),
            ipproto::SCTP => self.sctp_to[(state as usize).min(SCTP_STATES - 1)].load(Relaxed),
            _ => self.udp_to.load(Relaxed),
        }
    }

    #[inline(always)]
    pub(crate) fn tcp_table(&self, k: &Knobs) -> &'static tcp::TcpTable {
        self.tcp_table_for(k.secure_tcp)
    }

    #[inline(always)]
    pub(crate) fn tcp_table_for(&self, secure_tcp: Defense) -> &'static tcp::TcpTable {
        let secure = match secure_tcp {
            Defense::Off => false,
            Defense::Always => true,
            Defense::Auto => {
                // The units taken: the live entries and at most 1/256 of
                // the cap in shards' credit.
                self.defense.secure_engaged() || self.count.load(Relaxed) >= self.defense_at
            }
        };
        if secure {
            &tcp::TCP_TABLE_SECURE
        } else {
            &tcp::TCP_TABLE
        }
    }

    /// Takes one unit of capacity for an entry of the shard whose `stats`
    /// are given (under its lock): from the shard's credit, else a batch
    /// from the shared count (one compare-and-swap per `batch` inserts),
    /// never past the cap.
    #[inline(always)]
    pub(crate) fn reserve(&self, stats: &mut ShardStats) -> bool {
        if stats.credit > 0 {
            stats.credit -= 1;
            return true;
        }
        self.reserve_batch(stats)
    }

    /// [`Table::reserve`] from the shared count: a compare-and-swap loop
    /// rather than add-then-undo, so the count never reads above the cap,
    /// even transiently.
    fn reserve_batch(&self, stats: &mut ShardStats) -> bool {
        let mut cur = self.count.load(Relaxed);
        loop {
            if cur >= self.max {
                return false;
            }
            let take = if cur >= self.near {
                1
            } else {
                (self.max - cur).min(self.batch as usize)
            };
            match self
                .count
                .compare_exchange_weak(cur, cur + take, Relaxed, Relaxed)
            {
                Ok(_) => {
                    stats.credit += take as u32 - 1;
                    return true;
                }
                Err(v) => cur = v,
            }
        }
    }

    /// Gives back one unit (an entry of this shard removed, or a reserved
    /// unit not used): kept as credit up to `keep`, the rest returned to
    /// the shared count; all of it once the count is `near` the cap.
    #[inline(always)]
    pub(crate) fn unreserve(&self, stats: &mut ShardStats) {
        stats.credit += 1;
        let back = if stats.credit > self.keep {
            stats.credit - (self.batch - 1)
        } else if self.count.load(Relaxed) >= self.near {
            stats.credit
        } else {
            return;
        };
        stats.credit -= back;
        self.count.fetch_sub(back as usize, Relaxed);
    }

    /// Unbinds a removed entry from its destination and queues its template
    /// release; returns the entry's capacity unit (to its shard, whose
    /// `stats` are given).
    pub(crate) fn retire<A: Addr, const N: usize>(
        &self,
        e: Entry<A>,
        stats: &mut ShardStats,
        rel: &mut Releases<N>,
    ) {
        if let Some(d) = &e.dest {
            if e.flags & flag::TEMPLATE != 0 {
                d.template_bound(false);
            } else {
                d.conn_unbound(e.flags & flag::INACTIVE == 0);
                if e.aux != 0 {
                    rel.push(e.aux - 1);
                }
            }
        }
        self.unreserve(stats);
    }

    /// Applies queued template releases (no shard lock held).
    #[inline(always)]
    pub(crate) fn apply_releases<const N: usize>(&self, rel: &Releases<N>) {
        if rel.n != 0 {
            self.apply_releases_now(rel);
        }
    }

    #[inline(never)]
    fn apply_releases_now<const N: usize>(&self, rel: &Releases<N>) {
        for &r in &rel.refs[..rel.n] {
            if rel.v6 {
                self.release_template::<Ipv6Addr>(r);
            } else {
                self.release_template::<Ipv4Addr>(r);
            }
        }
    }

    /// One controlled connection of template `r` ended (or released it).
    pub(crate) fn release_template<A: Family>(&self, r: u32) {
        let shard = r >> REF_SHIFT;
        let idx = r & ((1 << REF_SHIFT) - 1);
        let mut g = self.lock(shard);
        let (part, stats) = A::split(&mut g);
        let Some(e) = part.live(idx) else { return };
        if e.flags & flag::TEMPLATE == 0 || e.aux == 0 {
            return;
        }
        let e = part.get_mut(idx);
        e.aux -= 1;
        if e.aux == 0 && e.flags & flag::UNHASHED != 0 {
            let old = part.remove(&self.hasher, idx);
            stats.expired += 1;
            let mut rel: Releases = Releases::new(A::WIDE);
            self.retire(old, stats, &mut rel);
        }
    }

    // ----- lookup -----

    /// Finds the entry for a packet: first as a request (client→virtual),
    /// then as a NAT reply (server→client). Allocation-free; at most two
    /// shard locks, one after the other.
    pub fn lookup(&self, t: &Tuple) -> Option<(Handle, Dir)> {
        if let Some(h) = self.lookup_in(t) {
            return Some((h, Dir::In));
        }
        self.lookup_out(t).map(|h| (h, Dir::Out))
    }

    /// Finds a connection by its request tuple only (the `ip_vs_in` side).
    pub fn lookup_in(&self, t: &Tuple) -> Option<Handle> {
        match (t.src, t.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.lookup_in_typed(t, s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.lookup_in_typed(t, s, d),
            _ => None,
        }
    }

    /// Finds a NAT connection by its reply tuple only (the `ip_vs_out` side).
    pub fn lookup_out(&self, t: &Tuple) -> Option<Handle> {
        match (t.src, t.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.lookup_out_typed(t, s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.lookup_out_typed(t, s, d),
            _ => None,
        }
    }

    /// Finds the connection an ICMP error refers to, from the header embedded
    /// in the error (`inner`, as it appears inside the ICMP payload: a packet
    /// the director or the server sent). Returns the direction of the ICMP
    /// error itself: `In` when it comes from the client side, `Out` when it
    /// comes from the real server.
    pub fn lookup_related(&self, inner: &Tuple) -> Option<(Handle, Dir)> {
        self.lookup(&inner.reversed())
    }

    /// Lookup and update in one step: one shard lock per packet instead of
    /// two (a NAT reply still probes the request side first, as `lookup`
    /// does). Same semantics as [`Table::lookup`] followed by
    /// [`Table::update`]; `None` on a miss. Takes no reference on the
    /// destination (see [`Hit`]).
    #[inline]
    pub fn lookup_update(&self, t: &Tuple, p: PacketInfo, now: u64) -> Option<(Hit, Dir, Update)> {
        let mut found = None;
        self.lookup_update_into(t, Sides::Both, p, now, &mut found);
        found
    }

    /// [`Table::lookup_update`] for the reply side only (the `ip_vs_out`
    /// lookup, for packets that are not addressed to a virtual service):
    /// one probe, one lock.
    #[inline]
    pub fn lookup_update_out(
        &self,
        t: &Tuple,
        p: PacketInfo,
        now: u64,
    ) -> Option<(Hit, Dir, Update)> {
        let mut found = None;
        self.lookup_update_into(t, Sides::Reply, p, now, &mut found);
        found
    }

    /// [`Table::lookup_update`] on the `sides` given (`Both` is
    /// `lookup_update`, `Reply` is [`Table::lookup_update_out`], `Request`
    /// probes the request side alone: one lock, and none on the shard of
    /// the packet's destination endpoint), writing its answer into
    /// `found`, which is overwritten: the per-packet path keeps the answer
    /// in its own slot, and the copy is built there under the lock rather
    /// than moved.
    #[inline(always)]
    pub fn lookup_update_into(
        &self,
        t: &Tuple,
        sides: Sides,
        p: PacketInfo,
        now: u64,
        found: &mut Option<(Hit, Dir, Update)>,
    ) {
        *found = None;
        match (t.src, t.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                self.lookup_update_typed(t, s, d, sides, &p, now, found)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                self.lookup_update_typed(t, s, d, sides, &p, now, found)
            }
            _ => {}
        }
    }

    /// The request side (unless `Reply`), then the reply side (unless
    /// `Request`): two straight-line probes rather than a loop over a list
    /// of directions.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn lookup_update_typed<A: Family>(
        &self,
        t: &Tuple,
        src: A,
        dst: A,
        sides: Sides,
        p: &PacketInfo,
        now: u64,
        out: &mut Option<(Hit, Dir, Update)>,
    ) {
        if sides != Sides::Reply && self.probe_update(t, src, dst, Dir::In, p, now, out) {
            return;
        }
        if sides != Sides::Request {
            self.probe_update(t, src, dst, Dir::Out, p, now, out);
        }
    }

    /// One direction's probe of [`Table::lookup_update_typed`]: whether it
    /// found (and accounted) the connection.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn probe_update<A: Family>(
        &self,
        t: &Tuple,
        src: A,
        dst: A,
        dir: Dir,
        p: &PacketInfo,
        now: u64,
        out: &mut Option<(Hit, Dir, Update)>,
    ) -> bool {
        let (shard, hash) = match dir {
            Dir::In => (
                self.shard_of(t.proto, src, t.sport),
                key_hash(&self.hasher, t.proto, KIND_CONN, src, t.sport, dst, t.dport),
            ),
            Dir::Out => (
                self.shard_of(t.proto, dst, t.dport),
                key_hash(&self.hasher, t.proto, KIND_OUT, src, t.sport, dst, t.dport),
            ),
        };
        // One packet releases at most one template reference.
        let mut rel = Releases::<2>::new(A::WIDE);
        let found = {
            let mut g = self.lock(shard);
            let (part, stats) = A::split(&mut g);
            let hit = match dir {
                Dir::In => part.find_in(hash, t.proto, src, t.sport, dst, t.dport),
                Dir::Out => part.find_out(hash, t.proto, src, t.sport, dst, t.dport),
            };
            // Just found under this lock: live, a connection, ours.
            match hit {
                Some((_, idx)) => {
                    self.account(part, stats, idx, dir, p, now, &mut rel, out);
                    true
                }
                None => false,
            }
        };
        if found {
            self.apply_releases(&rel);
        }
        found
    }

    fn lookup_in_typed<A: Family>(&self, t: &Tuple, src: A, dst: A) -> Option<Handle> {
        let shard = self.shard_of(t.proto, src, t.sport);
        let hash = key_hash(&self.hasher, t.proto, KIND_CONN, src, t.sport, dst, t.dport);
        let g = self.lock(shard);
        let part = A::part_ref(&g);
        let (_, idx) = part.find_in(hash, t.proto, src, t.sport, dst, t.dport)?;
        Handle::new(shard, idx, part.get(idx))
    }

    fn lookup_out_typed<A: Family>(&self, t: &Tuple, src: A, dst: A) -> Option<Handle> {
        let shard = self.shard_of(t.proto, dst, t.dport);
        let hash = key_hash(&self.hasher, t.proto, KIND_OUT, src, t.sport, dst, t.dport);
        let g = self.lock(shard);
        let part = A::part_ref(&g);
        let (_, idx) = part.find_out(hash, t.proto, src, t.sport, dst, t.dport)?;
        Handle::new(shard, idx, part.get(idx))
    }
}
