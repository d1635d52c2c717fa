//! One shard: a slab of entries per address family and two indexes over it.
//!
//! A shard is guarded by one lock (see the crate docs for why a reply lands
//! in the same shard as its request). The slab is a list of fixed chunks of
//! [`CHUNK`] entries, so growing never moves entries and never doubles
//! memory; freed slots form a free list threaded through `Entry::aux`.
//! `in_ix` holds connections by (proto, caddr, cport, vaddr, vport) and
//! templates by their template key; `out_ix` holds NAT connections by the
//! reply tuple (proto, daddr, dport, caddr, cport).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::entry::{flag, Addr, Entry};
use crate::hash::Hasher;
use crate::index::{Index, Vacancy};
use crate::ticket::VerChunk;

/// Entries per slab chunk.
pub(crate) const CHUNK: usize = 256;
/// Largest slot index per family per shard (22 bits, so that a template
/// reference `shard << 22 | idx` fits in 32 bits with up to 1024 shards).
pub(crate) const MAX_PART: u32 = (1 << 22) - 2;
pub(crate) const REF_SHIFT: u32 = 22;

/// Key kinds mixed into the hash so that connection, template and reply
/// keys never share probe sequences by construction.
pub(crate) const KIND_CONN: u8 = 0;
pub(crate) const KIND_TPL: u8 = 1;
pub(crate) const KIND_TPL_MARK: u8 = 3;
pub(crate) const KIND_OUT: u8 = 2;

/// Counters kept per shard, under its lock (no shared cache line is written
/// per insert). Summed by `Table::stats`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ShardStats {
    pub inserted: u64,
    pub refused_full: u64,
    pub refused_exists: u64,
    pub evicted: u64,
    pub evicted_established: u64,
    pub dropped_entry: u64,
    pub expired: u64,
    pub rescheduled: u64,
    pub nodest_dropped: u64,
    pub nodest_expired: u64,
    /// Units of the table's cap this shard has taken and holds no entry
    /// for (`Table::reserve`): its next inserts spend them without a
    /// shared write. Not a counter (`Table::stats` leaves it out).
    pub credit: u32,
}

#[derive(Debug)]
pub(crate) struct Part<A> {
    chunks: Vec<Vec<Entry<A>>>,
    /// One version chunk per slab chunk (`ticket.rs`).
    vers: Vec<Arc<VerChunk>>,
    /// Head of the free list + 1 (0: empty list).
    free: u32,
    /// Slots ever allocated (the slab's length).
    hwm: u32,
    /// Live entries.
    pub len: u32,
    pub in_ix: Index,
    pub out_ix: Index,
    /// Next slot the expiry sweep looks at.
    pub sweep: u32,
    /// Next slot the eviction scan looks at.
    pub evict: u32,
    /// Sized up front (`Config::presize`): `shrink` keeps the indexes'
    /// size and the first chunk's room.
    presized: bool,
}

#[derive(Debug)]
pub(crate) struct Shard {
    pub v4: Part<Ipv4Addr>,
    pub v6: Part<Ipv6Addr>,
    pub stats: ShardStats,
}

impl Shard {
    /// `presize`: keys the IPv4 indexes are sized for for good
    /// (`Config::presize`), or 0; `warm`: keys they start with room for
    /// when not presized (they grow past it).
    pub(crate) fn new(presize: usize, warm: usize) -> Self {
        Shard {
            v4: Part::new(presize, warm),
            v6: Part::new(0, 0),
            stats: ShardStats::default(),
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes() + self.v6.heap_bytes()
    }
}

/// Selects the family's part of a shard.
pub(crate) trait Family: Addr {
    fn part(s: &mut Shard) -> &mut Part<Self>;
    fn split(s: &mut Shard) -> (&mut Part<Self>, &mut ShardStats);
    fn part_ref(s: &Shard) -> &Part<Self>;
}

impl Family for Ipv4Addr {
    #[inline(always)]
    fn part(s: &mut Shard) -> &mut Part<Self> {
        &mut s.v4
    }
    #[inline(always)]
    fn split(s: &mut Shard) -> (&mut Part<Self>, &mut ShardStats) {
        (&mut s.v4, &mut s.stats)
    }
    #[inline(always)]
    fn part_ref(s: &Shard) -> &Part<Self> {
        &s.v4
    }
}

impl Family for Ipv6Addr {
    #[inline(always)]
    fn part(s: &mut Shard) -> &mut Part<Self> {
        &mut s.v6
    }
    #[inline(always)]
    fn split(s: &mut Shard) -> (&mut Part<Self>, &mut ShardStats) {
        (&mut s.v6, &mut s.stats)
    }
    #[inline(always)]
    fn part_ref(s: &Shard) -> &Part<Self> {
        &s.v6
    }
}

/// Inserts `idx` into `ix` (at vacancy `v` when known); false when the index
/// must be rebuilt instead (full, or a displacement overflowed).
#[inline(always)]
fn place(ix: &mut Index, hash: u64, v: Option<Vacancy>, idx: u32) -> bool {
    if ix.needs_grow() {
        return false;
    }
    match v {
        Some(v) => ix.insert_from(v, hash, idx),
        None => ix.insert(hash, idx),
    }
}

/// Hash of a tuple key of the given kind.
#[inline(always)]
pub(crate) fn key_hash<A: Addr>(
    h: &Hasher,
    proto: u8,
    kind: u8,
    src: A,
    sport: u16,
    dst: A,
    dport: u16,
) -> u64 {
    let misc = (sport as u64) << 32 | (dport as u64) << 16 | (proto as u64) << 8 | kind as u64;
    let (s0, s1) = src.words();
    let (d0, d1) = dst.words();
    if !A::WIDE {
        h.hash3(s0 << 32 | d0, misc, 0)
    } else {
        h.hash5(s0, s1, d0, d1, misc)
    }
}

impl<A: Addr> Part<A> {
    fn new(presize: usize, warm: usize) -> Self {
        let room = if presize > 0 { presize } else { warm };
        // A part given room up front gets its first chunk now, in the
        // control plane, rather than on its first packet (reserved pages:
        // they are touched as entries land).
        let (chunks, vers) = if room > 0 {
            (vec![Vec::with_capacity(CHUNK)], vec![VerChunk::new()])
        } else {
            (Vec::new(), Vec::new())
        };
        Part {
            chunks,
            vers,
            free: 0,
            hwm: 0,
            len: 0,
            in_ix: Index::with_capacity(room),
            out_ix: Index::with_capacity(room),
            sweep: 0,
            evict: 0,
            presized: presize > 0,
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.capacity()).sum::<usize>() * std::mem::size_of::<Entry<A>>()
            + self.vers.len() * std::mem::size_of::<VerChunk>()
            + self.in_ix.heap_bytes()
            + self.out_ix.heap_bytes()
    }

    /// Slots ever allocated; every index below is a valid slot.
    #[inline(always)]
    pub(crate) fn slots(&self) -> u32 {
        self.hwm
    }

    #[inline(always)]
    pub(crate) fn get(&self, idx: u32) -> &Entry<A> {
        let i = idx as usize;
        &self.chunks[i / CHUNK][i % CHUNK]
    }

    #[inline(always)]
    pub(crate) fn get_mut(&mut self, idx: u32) -> &mut Entry<A> {
        let i = idx as usize;
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }

    /// The version chunk of slot `idx` (`ticket.rs`).
    #[inline(always)]
    pub(crate) fn ver_chunk(&self, idx: u32) -> &Arc<VerChunk> {
        &self.vers[idx as usize / CHUNK]
    }

    /// [`Part::ver_chunk`] for any `idx` (none past the slab's chunks).
    #[inline(always)]
    pub(crate) fn ver_chunk_get(&self, idx: u32) -> Option<&Arc<VerChunk>> {
        self.vers.get(idx as usize / CHUNK)
    }

    /// The live entry at `idx`, if `idx` is a slot and it is occupied.
    #[inline(always)]
    pub(crate) fn live(&self, idx: u32) -> Option<&Entry<A>> {
        if idx < self.hwm {
            let e = self.get(idx);
            e.is_live().then_some(e)
        } else {
            None
        }
    }

    /// Makes room ahead of the packets; the sweep calls it on each visit
    /// of a part in use, under the lock. The next slab chunk is allocated
    /// once the one inserts fill is half full, and an index at 3/4 of its
    /// load limit is rebuilt bigger now, so that inserts find both ready
    /// instead of allocating (or rehashing the shard) on a packet's time,
    /// where `malloc` also costs more the more garbage the heap holds.
    /// Bounded: at most one spare chunk, and a rebuild that an insert would
    /// have done a little later anyway.
    pub(crate) fn prepare(&mut self, h: &Hasher) {
        if self.free == 0 && self.hwm <= MAX_PART {
            // The chunk the next insert fills, or the one after it.
            let c = self.hwm as usize / CHUNK;
            let next = if self.hwm as usize % CHUNK >= CHUNK / 2 {
                c + 1
            } else {
                c
            };
            if next == self.chunks.len() {
                self.chunks.push(Vec::with_capacity(CHUNK));
                self.vers.push(VerChunk::new());
            }
        }
        if self.in_ix.nearly_full() {
            let n = self.in_ix.grown_capacity();
            self.in_ix = self.rebuilt(h, false, n);
        }
        if self.out_ix.nearly_full() {
            let n = self.out_ix.grown_capacity();
            self.out_ix = self.rebuilt(h, true, n);
        }
    }

    /// Whether [`Part::alloc`] will find a slot (a free one, or room below
    /// the size limit).
    #[inline(always)]
    pub(crate) fn has_room(&self) -> bool {
        self.free != 0 || self.hwm <= MAX_PART
    }

    /// Stores `e` in a free slot; `None` when the part is at its size limit.
    /// Inlined so that the entry is built in its slot, not moved there; a
    /// new chunk (or the first chunk's growth) is the cold [`Part::grow`].
    #[inline(always)]
    pub(crate) fn alloc(&mut self, e: Entry<A>) -> Option<u32> {
        let idx = if self.free != 0 {
            let idx = self.free - 1;
            let next = self.get(idx).aux;
            *self.get_mut(idx) = e;
            self.free = next;
            idx
        } else {
            if self.hwm > MAX_PART {
                return None;
            }
            let idx = self.hwm;
            let c = idx as usize / CHUNK;
            if self.chunks.get(c).is_none_or(|k| k.len() == k.capacity()) {
                self.grow(c);
            }
            self.chunks[c].push(e);
            self.hwm += 1;
            idx
        };
        self.len += 1;
        Some(idx)
    }

    /// Makes room in chunk `c` for one more entry: a new chunk, or the
    /// first chunk's next doubling.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, c: usize) {
        if c == self.chunks.len() {
            // Every chunk is allocated whole, once: its pages are only
            // reserved until entries land in them (a small table's RSS
            // stays small), and the first chunk no longer grows by
            // doubling, which moved every entry at each step. A first
            // chunk `shrink` cut down grows back by doubling below.
            self.chunks.push(Vec::with_capacity(CHUNK));
            self.vers.push(VerChunk::new());
        }
        let chunk = &mut self.chunks[c];
        if c == 0 && chunk.len() == chunk.capacity() {
            let want = (chunk.capacity() * 2).clamp(8, CHUNK);
            chunk.reserve_exact(want - chunk.len());
        }
        debug_assert!(chunk.len() < chunk.capacity());
    }

    /// Hash of the in-index key of entry `e`.
    #[inline(always)]
    pub(crate) fn in_hash(h: &Hasher, e: &Entry<A>) -> u64 {
        let kind = if e.flags & flag::TEMPLATE == 0 {
            KIND_CONN
        } else if e.flags & flag::FWMARK != 0 {
            KIND_TPL_MARK
        } else {
            KIND_TPL
        };
        key_hash(h, e.proto, kind, e.caddr, e.cport, e.vaddr, e.vport)
    }

    /// Hash of the out-index (reply) key of entry `e`.
    #[inline(always)]
    pub(crate) fn out_hash(h: &Hasher, e: &Entry<A>) -> u64 {
        key_hash(h, e.proto, KIND_OUT, e.daddr, e.dport, e.caddr, e.cport)
    }

    /// Finds a connection by its client→virtual tuple.
    #[inline]
    pub(crate) fn find_in(
        &self,
        hash: u64,
        proto: u8,
        src: A,
        sport: u16,
        dst: A,
        dport: u16,
    ) -> Option<(usize, u32)> {
        self.in_ix.find(hash, |i| {
            is_conn_in(self.get(i), proto, src, sport, dst, dport)
        })
    }

    /// [`Part::find_in`] that also gives, on a miss, the in-index
    /// [`Vacancy`] for a new connection with this key (see
    /// [`Index::probe`]).
    #[inline(always)]
    pub(crate) fn probe_in(
        &self,
        hash: u64,
        proto: u8,
        src: A,
        sport: u16,
        dst: A,
        dport: u16,
    ) -> Result<u32, Option<Vacancy>> {
        self.in_ix
            .probe(hash, |i| {
                is_conn_in(self.get(i), proto, src, sport, dst, dport)
            })
            .map(|(_, idx)| idx)
    }

    /// [`Part::find_out`] that also gives, on a miss, the out-index
    /// [`Vacancy`] for a new connection with this reply key.
    #[inline(always)]
    pub(crate) fn probe_out(
        &self,
        hash: u64,
        proto: u8,
        src: A,
        sport: u16,
        dst: A,
        dport: u16,
    ) -> Result<u32, Option<Vacancy>> {
        self.out_ix
            .probe(hash, |i| {
                is_conn_out(self.get(i), proto, src, sport, dst, dport)
            })
            .map(|(_, idx)| idx)
    }

    /// Finds a NAT connection by its server→client tuple.
    #[inline]
    pub(crate) fn find_out(
        &self,
        hash: u64,
        proto: u8,
        src: A,
        sport: u16,
        dst: A,
        dport: u16,
    ) -> Option<(usize, u32)> {
        self.out_ix.find(hash, |i| {
            is_conn_out(self.get(i), proto, src, sport, dst, dport)
        })
    }

    /// Finds a template by its key.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn find_tpl(
        &self,
        hash: u64,
        proto: u8,
        mark: bool,
        caddr: A,
        (pe_port, pe_rest): (u16, u32),
        vaddr: A,
        vport: u16,
    ) -> Option<(usize, u32)> {
        let want = flag::TEMPLATE | if mark { flag::FWMARK } else { 0 };
        self.in_ix.find(hash, |i| {
            let e = self.get(i);
            e.flags & (flag::TEMPLATE | flag::FWMARK) == want
                && e.caddr == caddr
                && e.cport == pe_port
                && e.bytes == pe_rest
                && e.vaddr == vaddr
                && e.vport == vport
                && e.proto == proto
        })
    }

    /// Adds entry `idx` to the indexes it belongs in, growing them first if
    /// needed (the only O(n) step under the lock; avoided with `presize`).
    pub(crate) fn index(&mut self, h: &Hasher, idx: u32) {
        let e = self.get(idx);
        let hin = Self::in_hash(h, e);
        let out = e.has_out_key().then(|| Self::out_hash(h, e));
        self.index_hashed(h, idx, hin, out);
    }

    /// [`Part::index`] with the entry's key hashes already known (`hin`:
    /// [`Part::in_hash`]; `out`: [`Part::out_hash`] when the entry has a
    /// reply key), as a new connection's insert has them from its checks.
    #[inline]
    pub(crate) fn index_hashed(&mut self, h: &Hasher, idx: u32, hin: u64, out: Option<u64>) {
        self.index_placed(h, idx, (hin, None), out.map(|o| (o, None)));
    }

    /// [`Part::index_hashed`] resuming each insert at the [`Vacancy`] its
    /// key's probe found, when given (the indexes unchanged since: no
    /// removal between the probe and this call).
    #[inline]
    pub(crate) fn index_placed(
        &mut self,
        h: &Hasher,
        idx: u32,
        (hin, vin): (u64, Option<Vacancy>),
        out: Option<(u64, Option<Vacancy>)>,
    ) {
        debug_assert_eq!(hin, Self::in_hash(h, self.get(idx)));
        debug_assert_eq!(out.map(|o| o.0), {
            let e = self.get(idx);
            e.has_out_key().then(|| Self::out_hash(h, e))
        });
        if !place(&mut self.in_ix, hin, vin, idx) {
            // The slab already holds the new entry, so the rebuild adds it.
            let n = self.in_ix.grown_capacity();
            self.in_ix = self.rebuilt(h, false, n);
        }
        if let Some((hout, vout)) = out {
            if !place(&mut self.out_ix, hout, vout, idx) {
                let n = self.out_ix.grown_capacity();
                self.out_ix = self.rebuilt(h, true, n);
            }
        }
    }

    /// A fresh in- or out-index with room for at least `n` keys, filled
    /// straight from the slab (no intermediate key list), growing further
    /// if a displacement overflows.
    fn rebuilt(&self, h: &Hasher, out: bool, mut n: usize) -> Index {
        'retry: loop {
            let mut ix = Index::with_capacity(n.max(self.len as usize));
            for idx in 0..self.hwm {
                let e = self.get(idx);
                if !e.is_live() {
                    continue;
                }
                let hash = if out {
                    if !e.has_out_key() {
                        continue;
                    }
                    Self::out_hash(h, e)
                } else {
                    if e.flags & flag::UNHASHED != 0 {
                        continue;
                    }
                    Self::in_hash(h, e)
                };
                if !ix.insert(hash, idx) {
                    n = n * 3 / 2 + 16;
                    continue 'retry;
                }
            }
            return ix;
        }
    }

    /// Removes entry `idx` from the in-index only (invalidated templates).
    pub(crate) fn unhash_in(&mut self, h: &Hasher, idx: u32) {
        let e = self.get(idx);
        if e.flags & flag::UNHASHED != 0 {
            return;
        }
        let hin = Self::in_hash(h, e);
        if let Some((pos, _)) = self.in_ix.find(hin, |i| i == idx) {
            self.in_ix.remove_at(pos);
        }
        self.get_mut(idx).flags |= flag::UNHASHED;
    }

    /// Gives memory back after a flood (called by the sweep when its pass
    /// over this part wraps): when at most a quarter of the slab is live,
    /// the free slots above the highest live entry are cut off (whole
    /// chunks freed, the free list rebuilt below the new end) and an
    /// index holding over 8× its keys' room is rebuilt to fit. Entries
    /// never move, so handles and template references stay valid. O(slab)
    /// under the lock, at most once per pass and only on a sparse part.
    /// A presized index keeps its size. Returns the bytes freed.
    pub(crate) fn shrink(&mut self, h: &Hasher) -> usize {
        if self.hwm == 0 || self.len * 4 > self.hwm {
            return 0;
        }
        let before = self.heap_bytes();
        let mut end = self.hwm;
        while end > 0 && !self.get(end - 1).is_live() {
            end -= 1;
        }
        if end < self.hwm {
            let chunks = (end as usize).div_ceil(CHUNK);
            self.chunks.truncate(chunks);
            self.vers.truncate(chunks);
            let presized = self.presized;
            if let Some(last) = self.chunks.last_mut() {
                last.truncate(end as usize - (chunks - 1) * CHUNK);
                if chunks == 1 && !presized {
                    // A small table gives its first chunk's unused room
                    // back; `grow` doubles it again as needed.
                    last.shrink_to_fit();
                }
            }
            self.hwm = end;
            // The free list, rebuilt from the slots that remain (lowest
            // first out, so new entries fill the bottom of the slab).
            self.free = 0;
            for idx in (0..end).rev() {
                if !self.get(idx).is_live() {
                    let next = self.free;
                    *self.get_mut(idx) = Entry::vacant(next);
                    self.free = idx + 1;
                }
            }
            self.sweep = 0;
            self.evict = 0;
        }
        if !self.presized {
            let room = self.len as usize * 2 + 16;
            if self.in_ix.heap_bytes() / 4 > 8 * room {
                self.in_ix = self.rebuilt(h, false, room);
            }
            if self.out_ix.heap_bytes() / 4 > 8 * room {
                self.out_ix = self.rebuilt(h, true, room);
            }
        }
        before.saturating_sub(self.heap_bytes())
    }

    /// Unlinks entry `idx` from both indexes and frees its slot, returning
    /// the entry (the caller unbinds its destination and template).
    pub(crate) fn remove(&mut self, h: &Hasher, idx: u32) -> Entry<A> {
        self.unhash_in(h, idx);
        let e = self.get(idx);
        if e.has_out_key() {
            let hout = Self::out_hash(h, e);
            if let Some((pos, _)) = self.out_ix.find(hout, |i| i == idx) {
                self.out_ix.remove_at(pos);
            }
        }
        let next = self.free;
        let old = std::mem::replace(self.get_mut(idx), Entry::vacant(next));
        self.free = idx + 1;
        self.len -= 1;
        // A ticket holder must not take a reused slot for this entry.
        self.bump_removed(idx);
        old
    }
}

/// Whether `e` is the connection (not a template) whose request tuple is
/// (proto, src:sport → dst:dport): the in-index's key test.
#[inline(always)]
fn is_conn_in<A: Addr>(e: &Entry<A>, proto: u8, src: A, sport: u16, dst: A, dport: u16) -> bool {
    e.caddr == src
        && e.cport == sport
        && e.vaddr == dst
        && e.vport == dport
        && e.proto == proto
        && e.flags & flag::TEMPLATE == 0
}

/// Whether `e` is the NAT connection whose reply tuple is
/// (proto, src:sport → dst:dport): the out-index's key test.
#[inline(always)]
fn is_conn_out<A: Addr>(e: &Entry<A>, proto: u8, src: A, sport: u16, dst: A, dport: u16) -> bool {
    e.daddr == src && e.dport == sport && e.caddr == dst && e.cport == dport && e.proto == proto
}
