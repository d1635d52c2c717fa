//! Tickets: lock-free "is this still the same connection, in the same
//! state?" for a worker's flow cache (the engine's established fast path).
//!
//! Contract. Every slab slot has a version word, kept beside the slab in
//! chunks of [`CHUNK`] words that are reference-counted ([`VerChunk`]) and
//! never reset. Under the shard lock the word grows whenever the slot's
//! connection is removed (expiry, eviction, reschedule, `-d`/`-C`, sync;
//! by 2⁸) — so a reused slot never shows an old version — and whenever a
//! packet or a sync message changes its state or flags (by 1). A [`Ticket`] holds
//! one `Arc` on its chunk (taken when the ticket is made, on the slow path),
//! the slot and the version it saw; [`Ticket::valid`] is one atomic load,
//! no lock and no write. While it answers true, no state change or removal
//! of that connection has been made visible to this thread, so a packet
//! that [`Table::steady_ticket`] said cannot change the entry may be
//! forwarded with the decision that was cached with the ticket.
//!
//! Soundness: the ticket reads only the atomic word, never the entry's
//! plain fields, and its `Arc` keeps the chunk alive even if the slab
//! shrinks (a freed chunk's words were all bumped when its slots were
//! emptied, so old tickets into it stay invalid forever).
//!
//! What the holder owes: it does not refresh the entry's timer or counters
//! per packet (that is the point), so it must come back through
//! [`Table::lookup_update`] at least every [`Table::steady_ticket`]'s
//! interval (min([`REFRESH_MAX_MS`], timeout / 16)); an entry then expires
//! at most that much earlier than with every packet refreshing it. The
//! packets it forwarded meanwhile are added with [`Table::credit`]. The
//! 32-bit word comes back to a value only after 2²⁴ removals or 2³² state
//! changes of one slot, far more than fit in one refresh interval.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::entry::{flag, Addr, Entry};
use crate::proto::ipproto;
use crate::proto::tcp::TcpState;
use crate::shard::{key_hash, Family, Part, CHUNK, KIND_CONN, KIND_OUT};
use crate::table::{Dir, Hit, Table, Tuple};

/// Longest a ticket holder may go without refreshing through the table.
pub const REFRESH_MAX_MS: u64 = 1000;

/// What a removal adds to a slot's version word; a state or flag change
/// adds 1. So the bits above [`REMOVED_SHIFT`] tell incarnations apart
/// ([`Table::credit`]), and the whole word changes on either.
const REMOVED_SHIFT: u32 = 8;

/// The version words of one slab chunk.
#[derive(Debug)]
pub(crate) struct VerChunk([AtomicU32; CHUNK]);

const _: () = assert!(CHUNK == 256, "Ticket::slot is a u8");

impl VerChunk {
    pub(crate) fn new() -> Arc<VerChunk> {
        Arc::new(VerChunk([const { AtomicU32::new(0) }; CHUNK]))
    }

    /// The word of slot `i` (of the slab) in this chunk.
    #[inline(always)]
    pub(crate) fn word(&self, i: usize) -> &AtomicU32 {
        &self.0[i % CHUNK]
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Ticket {
    chunk: Arc<VerChunk>,
    ver: u32,
    shard: u32,
    idx: u32,
    slot: u8,
    v6: bool,
}

impl Ticket {
    /// Whether the connection is still the one, in the state, the ticket
    /// was made for (one load).
    #[inline(always)]
    pub fn valid(&self) -> bool {
        // Acquire pairs with the Release bump: nothing is read after it,
        // but a holder that sees the new version also sees what the
        // changer wrote before it.
        self.chunk.0[self.slot as usize].load(Ordering::Acquire) == self.ver
    }
}

impl<A: Addr> Part<A> {
    /// Marks slot `idx`'s connection changed (under the shard lock).
    #[inline(always)]
    pub(crate) fn bump(&self, idx: u32) {
        self.ver_chunk(idx)
            .word(idx as usize)
            .fetch_add(1, Ordering::Release);
    }

    /// Marks slot `idx`'s connection removed (under the shard lock).
    #[inline(always)]
    pub(crate) fn bump_removed(&self, idx: u32) {
        self.ver_chunk(idx)
            .word(idx as usize)
            .fetch_add(1 << REMOVED_SHIFT, Ordering::Release);
    }
}

/// Whether a further packet in `dir` (TCP: ACK set, no SYN, FIN or RST;
/// UDP: any) changes nothing in `e` but its counters and timer: the TCP
/// tables keep ESTABLISHED on such a segment in every direction and mode
/// (a unit test walks them), and the flags it could set are set already.
///
/// And only past the low-packet counts `drop_entry` judges by: a ticket
/// holder's packets reach the entry's count late ([`Table::credit`]), so an
/// entry of a few packets could be taken for an idle handshake. Past
/// [`LOW_PACKETS`](crate::defense::LOW_PACKETS) the count only grows, and
/// that judgement cannot change.
fn steady<A: Addr>(e: &Entry<A>, dir: Dir) -> bool {
    e.dest.as_ref().is_some_and(|d| d.is_available())
        && e.pkts > crate::defense::LOW_PACKETS
        && steady_state(e.proto, e.state, e.flags, dir)
}

#[inline(always)]
fn steady_state(proto: u8, state: u8, flags: u8, dir: Dir) -> bool {
    if flags & flag::TEMPLATE != 0 {
        return false;
    }
    match proto {
        ipproto::UDP => true,
        ipproto::TCP => {
            state == TcpState::Established as u8
                && match dir {
                    Dir::In => flags & flag::CONFIRMED != 0,
                    Dir::Out => flags & flag::NOOUTPUT == 0,
                }
        }
        _ => false,
    }
}

impl Hit {
    /// Whether [`Table::steady_ticket`] may give a ticket for this
    /// connection as the hit saw it after its packet (direction `dir`):
    /// a test on the copy, so that a connection that is not steady (a
    /// handshake, a closing state) costs its packets no lock.
    #[inline(always)]
    pub fn steady(&self, dir: Dir) -> bool {
        steady_state(self.proto(), self.state, self.flags, dir)
    }
}

impl Table {
    /// For a connection a packet of `t` (direction `dir`) was just
    /// forwarded on: a [`Ticket`], and the interval (ms) within which its
    /// holder must refresh through [`Table::lookup_update`], when its
    /// further packets in `dir` cannot change it (see the module docs);
    /// `None` otherwise. One shard lock (the slow path's).
    pub fn steady_ticket(&self, t: &Tuple, dir: Dir) -> Option<(Ticket, u64)> {
        match (t.src, t.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.ticket_typed::<Ipv4Addr>(t, s, d, dir),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.ticket_typed::<Ipv6Addr>(t, s, d, dir),
            _ => None,
        }
    }

    fn ticket_typed<A: Family>(
        &self,
        t: &Tuple,
        src: A,
        dst: A,
        dir: Dir,
    ) -> Option<(Ticket, u64)> {
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
        let g = self.lock(shard);
        let part = A::part_ref(&g);
        let (_, idx) = match dir {
            Dir::In => part.find_in(hash, t.proto, src, t.sport, dst, t.dport),
            Dir::Out => part.find_out(hash, t.proto, src, t.sport, dst, t.dport),
        }?;
        let e = part.get(idx);
        if !steady(e, dir) {
            return None;
        }
        let interval = REFRESH_MAX_MS.min(u64::from(self.timeout_ms(e.proto, e.state)) / 16);
        let chunk = Arc::clone(part.ver_chunk(idx));
        let ver = chunk.word(idx as usize).load(Ordering::Relaxed);
        let tk = Ticket {
            chunk,
            ver,
            shard,
            idx,
            slot: (idx as usize % CHUNK) as u8,
            v6: A::WIDE,
        };
        Some((tk, interval))
    }

    /// Adds `pkts` packets and `bytes` bytes that a ticket holder forwarded
    /// without the table to the connection of `t` (direction `dir`) the
    /// ticket was made for, if it is still there (its state may have
    /// moved; a new connection on the same tuple and slot gets nothing).
    /// One shard lock.
    pub fn credit(&self, tk: &Ticket, t: &Tuple, dir: Dir, pkts: u32, bytes: u64) {
        if tk.v6 {
            self.credit_typed::<Ipv6Addr>(tk, t, dir, pkts, bytes)
        } else {
            self.credit_typed::<Ipv4Addr>(tk, t, dir, pkts, bytes)
        }
    }

    fn credit_typed<A: Family>(&self, tk: &Ticket, t: &Tuple, dir: Dir, pkts: u32, bytes: u64) {
        let (Some(src), Some(dst)) = (A::from_ip(t.src), A::from_ip(t.dst)) else {
            return;
        };
        let mut g = self.lock(tk.shard);
        let part = A::part(&mut g);
        // This table's slot, in the chunk the ticket holds (its `Arc`
        // keeps the allocation, so the address names it): not another
        // table's, nor a chunk the slab shrank away and grew again.
        if !part
            .ver_chunk_get(tk.idx)
            .is_some_and(|c| Arc::ptr_eq(c, &tk.chunk))
        {
            return;
        }
        let now = tk.chunk.word(tk.idx as usize).load(Ordering::Relaxed);
        let same = now >> REMOVED_SHIFT == tk.ver >> REMOVED_SHIFT;
        let Some(e) = part.live(tk.idx) else { return };
        let ours = same
            && e.flags & flag::TEMPLATE == 0
            && e.proto == t.proto
            && match dir {
                Dir::In => (e.caddr, e.cport, e.vaddr, e.vport) == (src, t.sport, dst, t.dport),
                Dir::Out => (e.daddr, e.dport, e.caddr, e.cport) == (src, t.sport, dst, t.dport),
            };
        if ours {
            let e = part.get_mut(tk.idx);
            e.pkts = e.pkts.wrapping_add(pkts);
            e.bytes = e.bytes.wrapping_add(bytes as u32);
        }
    }

    /// Whether this director is a sync master (which counts every packet of
    /// a connection to decide when to send it: ticket holders then take
    /// the table's path).
    #[inline(always)]
    pub fn sync_master(&self) -> bool {
        self.knob_bits() & crate::config::Knobs::SYNC_MASTER_BIT != 0
    }
}

#[cfg(test)]
#[path = "ticket_tests.rs"]
mod tests;
