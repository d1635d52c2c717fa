//! Inserting and removing connections: the tuple checks (a live entry
//! wins, an expired leftover is replaced), capacity and eviction, the first
//! packet's transition, and indexing under one shard lock.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering::Relaxed;

use uvs_sched::FwdMethod;

use crate::config::{Defense, Knobs};
use crate::entry::{flag, Entry};
use crate::proto::tcp;
use crate::shard::{key_hash, Family, Part, Shard, ShardStats, KIND_CONN, KIND_OUT};
use crate::table::{Dir, Handle, InsertError, NewConn, PacketInfo, Releases, Table};

impl Table {
    /// Adds a connection chosen by the scheduler and applies its first
    /// packet's state transition (direction `In`). Binds the destination
    /// (counted inactive until ESTABLISHED, as the kernel does).
    pub fn insert(&self, c: NewConn, first: PacketInfo, now: u64) -> Result<Handle, InsertError> {
        self.counted(self.insert_with_aux(c, first, now, 0, true))
            .and_then(|h| h.ok_or(InsertError::Full))
    }

    /// [`Table::insert`] for the engine, which needs no handle: the
    /// connection's `Arc<Dest>` is moved into the entry and no reference is
    /// taken for the caller (no reference-count write on the destination
    /// beyond the one `NewConn` already holds).
    pub fn add(&self, c: NewConn, first: PacketInfo, now: u64) -> Result<(), InsertError> {
        self.counted(self.insert_with_aux(c, first, now, 0, false))
            .map(|_| ())
    }

    /// Counts caller-error refusals (the others are counted per shard).
    pub(crate) fn counted<T>(&self, r: Result<T, InsertError>) -> Result<T, InsertError> {
        if let Err(InsertError::FamilyMismatch | InsertError::TemplateGone) = r {
            self.refused_invalid.fetch_add(1, Relaxed);
        }
        r
    }

    pub(crate) fn insert_with_aux(
        &self,
        c: NewConn,
        first: PacketInfo,
        now: u64,
        aux: u32,
        handle: bool,
    ) -> Result<Option<Handle>, InsertError> {
        match (c.caddr, c.vaddr, c.daddr) {
            (IpAddr::V4(ca), IpAddr::V4(va), IpAddr::V4(da)) => {
                self.insert_typed(c, ca, va, da, first, now, aux, handle)
            }
            (IpAddr::V6(ca), IpAddr::V6(va), IpAddr::V6(da)) => {
                self.insert_typed(c, ca, va, da, first, now, aux, handle)
            }
            _ => Err(InsertError::FamilyMismatch),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_typed<A: Family>(
        &self,
        c: NewConn,
        caddr: A,
        vaddr: A,
        daddr: A,
        first: PacketInfo,
        now: u64,
        aux: u32,
        handle: bool,
    ) -> Result<Option<Handle>, InsertError> {
        let knobs = self.knobs();
        let table = self.tcp_table(&knobs);
        let shard = self.shard_of(c.proto, caddr, c.cport);
        let masq = c.fwd == FwdMethod::Masq;
        let hin = key_hash(
            &self.hasher,
            c.proto,
            KIND_CONN,
            caddr,
            c.cport,
            vaddr,
            c.vport,
        );
        // Only NAT entries are indexed by their reply.
        let hout = if masq {
            key_hash(
                &self.hasher,
                c.proto,
                KIND_OUT,
                daddr,
                c.dport,
                caddr,
                c.cport,
            )
        } else {
            0
        };
        // An insert releases at most three template references (the two
        // leftover entries it replaces, one evicted entry): a small array
        // to clear.
        let mut rel: Releases<4> = Releases::new(A::WIDE);
        let res = {
            let mut g = self.lock(shard);
            self.insert_locked(
                &mut g, shard, c, caddr, vaddr, daddr, first, now, aux, table, &knobs, masq, hin,
                hout, &mut rel,
            )
            // Built under the lock: once released the entry may go.
            .map(|idx| {
                handle
                    .then(|| Handle::new(shard, idx, A::part_ref(&g).get(idx)))
                    .flatten()
            })
        };
        self.apply_releases(&rel);
        res
    }

    /// A probe's hit on a tuple being inserted: a live entry refuses the
    /// insert (`err`, counted); one that expired but was not swept yet is
    /// removed.
    fn clear_expired<A: Family, const N: usize>(
        &self,
        part: &mut Part<A>,
        stats: &mut ShardStats,
        idx: u32,
        now: u64,
        err: InsertError,
        rel: &mut Releases<N>,
    ) -> Result<(), InsertError> {
        if part.get(idx).remaining(now) > 0 {
            stats.refused_exists += 1;
            return Err(err);
        }
        let old = part.remove(&self.hasher, idx);
        stats.expired += 1;
        self.retire(old, stats, rel);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_locked<A: Family, const N: usize>(
        &self,
        sh: &mut Shard,
        _shard: u32,
        c: NewConn,
        caddr: A,
        vaddr: A,
        daddr: A,
        first: PacketInfo,
        now: u64,
        aux: u32,
        table: &tcp::TcpTable,
        knobs: &Knobs,
        masq: bool,
        hin: u64,
        hout: u64,
        rel: &mut Releases<N>,
    ) -> Result<u32, InsertError> {
        let (part, stats) = A::split(sh);
        // A leftover entry on the same tuple that has expired but was not
        // swept yet is removed; a live one wins. A miss gives the slot the
        // insert below resumes at, unless a removal changes the indexes
        // first (`moved`).
        let mut moved = false;
        let vin = match part.probe_in(hin, c.proto, caddr, c.cport, vaddr, c.vport) {
            Err(v) => v,
            Ok(idx) => {
                self.clear_expired(part, stats, idx, now, InsertError::Exists, rel)?;
                moved = true;
                None
            }
        };
        let vout = if masq {
            match part.probe_out(hout, c.proto, daddr, c.dport, caddr, c.cport) {
                Err(v) => v,
                Ok(idx) => {
                    let e = InsertError::ReplyTupleInUse;
                    self.clear_expired(part, stats, idx, now, e, rel)?;
                    moved = true;
                    None
                }
            }
        } else {
            None
        };
        if !self.reserve(stats) {
            let evicted = knobs.drop_entry != Defense::Off && self.evict_one(part, stats, now, rel);
            if !evicted || !self.reserve(stats) {
                stats.refused_full += 1;
                return Err(InsertError::Full);
            }
            moved = true;
        }
        let mut flags = c.fwd as u8 | flag::INACTIVE;
        if !masq {
            flags |= flag::NOOUTPUT;
        }
        if !part.has_room() {
            self.unreserve(stats);
            stats.refused_full += 1;
            return Err(InsertError::Full);
        }
        // Bound before the first transition, which may count it active.
        c.dest.conn_bound(false);
        // The entry is finished (first packet's state, counters, timer)
        // before it goes into its slot: one write of the slot, no look-up
        // of it again.
        let mut entry = Entry {
            dest: Some(c.dest),
            caddr,
            vaddr,
            daddr,
            cport: c.cport,
            vport: c.vport,
            dport: c.dport,
            proto: c.proto,
            state: 0,
            flags,
            expires: 0,
            pkts: 1,
            bytes: first.bytes,
            aux,
        };
        self.transition(&mut entry, Dir::In, &first, table);
        entry.expires = (now as u32).wrapping_add(self.timeout_ms(entry.proto, entry.state));
        let idx = part
            .alloc(entry)
            .expect("has_room, under this lock: a free slot or room to grow");
        // The key hashes (and, with the indexes unchanged, the slots) the
        // checks above found: not computed again. Only NAT entries have a
        // reply key.
        let (vin, vout) = if moved { (None, None) } else { (vin, vout) };
        let out = masq.then_some((hout, vout));
        part.index_placed(&self.hasher, idx, (hin, vin), out);
        stats.inserted += 1;
        Ok(idx)
    }

    /// Removes the entry `h` names (a connection, or a template that
    /// controls nothing), unbinding its destination. False when it is
    /// already gone or is a template still in control.
    pub fn remove(&self, h: &Handle) -> bool {
        if h.caddr.is_ipv4() {
            self.remove_typed::<Ipv4Addr>(h)
        } else {
            self.remove_typed::<Ipv6Addr>(h)
        }
    }

    fn remove_typed<A: Family>(&self, h: &Handle) -> bool {
        let mut rel: Releases = Releases::new(A::WIDE);
        let done = {
            let mut g = self.lock(h.shard);
            let (part, stats) = A::split(&mut g);
            let ok = part
                .live(h.idx)
                .is_some_and(|e| h.matches(e) && (e.flags & flag::TEMPLATE == 0 || e.aux == 0));
            if ok {
                let old = part.remove(&self.hasher, h.idx);
                stats.expired += 1;
                self.retire(old, stats, &mut rel);
            }
            ok
        };
        self.apply_releases(&rel);
        done
    }
}
