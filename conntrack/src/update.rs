//! Per-packet accounting of a found connection: the reuse and
//! removed-server policies, the state machines, destination counts,
//! counters and the timer.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::config::Knobs;
use crate::entry::{flag, Addr, Entry};
use crate::proto::sctp::{self, SctpState};
use crate::proto::tcp::{self, flags, TcpDir, TcpState};
use crate::proto::{ipproto, is_new_conn, may_create};
use crate::shard::{Family, Part, ShardStats};
use crate::table::{Dir, Handle, Hit, PacketInfo, Releases, Table, Update};

impl Table {
    /// Processes one packet of a looked-up connection: reuse and
    /// removed-server policies, the state machine, dest counts, counters and
    /// the timer. Allocation-free; one shard lock (plus, rarely, a template's
    /// shard lock afterwards).
    pub fn update(&self, h: &Handle, dir: Dir, p: PacketInfo, now: u64) -> Update {
        self.update_impl(h, dir, &p, now, false)
    }

    /// Accounts an ICMP error related to connection `h` (found with
    /// [`Table::lookup_related`]): refreshes the timer without a state
    /// change, as the kernel does. `Drop` when the server is gone.
    pub fn update_related(&self, h: &Handle, dir: Dir, bytes: u32, now: u64) -> Update {
        self.update_impl(h, dir, &PacketInfo::udp(bytes), now, true)
    }

    fn update_impl(&self, h: &Handle, dir: Dir, p: &PacketInfo, now: u64, related: bool) -> Update {
        if h.caddr.is_ipv4() {
            self.update_typed::<Ipv4Addr>(h, dir, p, now, related)
        } else {
            self.update_typed::<Ipv6Addr>(h, dir, p, now, related)
        }
    }

    fn update_typed<A: Family>(
        &self,
        h: &Handle,
        dir: Dir,
        p: &PacketInfo,
        now: u64,
        related: bool,
    ) -> Update {
        let knobs = self.knobs();
        let table = self.tcp_table(&knobs);
        let mut rel: Releases = Releases::new(A::WIDE);
        let verdict = {
            let mut g = self.lock(h.shard);
            let (part, stats) = A::split(&mut g);
            self.update_locked(
                part, stats, h, dir, p, now, related, table, &knobs, &mut rel,
            )
        };
        self.apply_releases(&rel);
        verdict
    }

    #[allow(clippy::too_many_arguments)]
    fn update_locked<A: Addr, const N: usize>(
        &self,
        part: &mut Part<A>,
        stats: &mut ShardStats,
        h: &Handle,
        dir: Dir,
        p: &PacketInfo,
        now: u64,
        related: bool,
        table: &tcp::TcpTable,
        knobs: &Knobs,
        rel: &mut Releases<N>,
    ) -> Update {
        let valid = part
            .live(h.idx)
            .is_some_and(|e| h.matches(e) && e.flags & flag::TEMPLATE == 0);
        if !valid {
            let creatable = dir == Dir::In && !related && may_create(h.proto, p, knobs);
            return if creatable {
                Update::Reschedule
            } else {
                Update::Drop
            };
        }
        self.update_at(part, stats, h.idx, dir, p, now, related, table, knobs, rel)
    }

    /// The per-packet step of `lookup_update` on slot `idx`, just found
    /// under the shard lock (live, a connection): the common case inline —
    /// timer running, server available, not a SYN/INIT that could restart
    /// the tuple — and everything else in [`Table::update_at`]. Returns
    /// what the engine forwards with, as the entry is after this packet
    /// (before it, when the packet removed the entry), written into `out`
    /// (built there, not moved through a return value).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn account<A: Addr, const N: usize>(
        &self,
        part: &mut Part<A>,
        stats: &mut ShardStats,
        idx: u32,
        dir: Dir,
        p: &PacketInfo,
        now: u64,
        rel: &mut Releases<N>,
        out: &mut Option<(Hit, Dir, Update)>,
    ) {
        let kb = self.knob_bits();
        let table = self.tcp_table_for(Knobs::secure_tcp_of(kb));
        let e = part.get_mut(idx);
        let common = e.remaining(now) > 0
            && !(dir == Dir::In && e.aux == 0 && is_new_conn(e.proto, p))
            && e.dest.as_ref().is_some_and(|d| d.is_available());
        if common {
            let (before, flags) = (e.state, e.flags);
            self.transition(e, dir, p, table);
            self.refresh(e, p, now, kb & Knobs::RELEASE_ON_CLOSE_BIT != 0, rel);
            let changed = e.state != before || e.flags != flags;
            if kb & Knobs::SYNC_MASTER_BIT != 0 {
                crate::sync::mark(e, before);
            }
            *out = Some((Hit::new(e), dir, Update::Forward));
            if changed {
                part.bump(idx);
            }
            return;
        }
        let (h, u) = self.account_slow(
            part,
            stats,
            idx,
            dir,
            p,
            now,
            table,
            &Knobs::unpack(kb),
            rel,
        );
        *out = Some((h, dir, u));
    }

    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn account_slow<A: Addr, const N: usize>(
        &self,
        part: &mut Part<A>,
        stats: &mut ShardStats,
        idx: u32,
        dir: Dir,
        p: &PacketInfo,
        now: u64,
        table: &tcp::TcpTable,
        knobs: &Knobs,
        rel: &mut Releases<N>,
    ) -> (Hit, Update) {
        let mut h = Hit::new(part.get(idx));
        let u = self.update_at(part, stats, idx, dir, p, now, false, table, knobs, rel);
        // Report the state after this packet when the entry survived it (a
        // removed slot is vacant until the lock is released).
        if let Some(e) = part.live(idx) {
            h.state = e.state;
            h.flags = e.flags;
        }
        (h, u)
    }

    /// [`Table::update_locked`] on slot `idx`, known to hold a live
    /// connection (not a template).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn update_at<A: Addr, const N: usize>(
        &self,
        part: &mut Part<A>,
        stats: &mut ShardStats,
        idx: u32,
        dir: Dir,
        p: &PacketInfo,
        now: u64,
        related: bool,
        table: &tcp::TcpTable,
        knobs: &Knobs,
        rel: &mut Releases<N>,
    ) -> Update {
        let e = part.get(idx);
        // What to answer when the entry is gone: decided only then (the
        // per-packet path never asks).
        let proto = e.proto;
        let gone = || {
            if dir == Dir::In && !related && may_create(proto, p, knobs) {
                Update::Reschedule
            } else {
                Update::Drop
            }
        };
        if e.remaining(now) <= 0 {
            // Its timer has run out; the sweep just has not got here yet.
            let old = part.remove(&self.hasher, idx);
            stats.expired += 1;
            self.retire(old, stats, rel);
            return gone();
        }
        // The entry is live, so it has a dest.
        let Some(dest) = e.dest.as_ref() else {
            return gone();
        };
        if dir == Dir::In && !related && e.aux == 0 && is_new_conn(e.proto, p) {
            let quiescent = knobs.expire_nodest_conn && dest.weight() == 0;
            let reuse = knobs.conn_reuse_mode != 0 && reuse_expected(e, knobs.conn_reuse_mode);
            if quiescent || reuse {
                let old = part.remove(&self.hasher, idx);
                stats.rescheduled += 1;
                self.retire(old, stats, rel);
                return Update::Reschedule;
            }
        }
        if !dest.is_available() {
            if knobs.expire_nodest_conn {
                let old = part.remove(&self.hasher, idx);
                stats.nodest_expired += 1;
                self.retire(old, stats, rel);
                return gone();
            }
            // Not refreshed: the entry dies after its timeout even under
            // steady traffic, unless the server comes back first.
            stats.nodest_dropped += 1;
            return Update::Drop;
        }
        let e = part.get_mut(idx);
        let (before, flags) = (e.state, e.flags);
        if !related {
            self.transition(e, dir, p, table);
        }
        self.refresh(e, p, now, knobs.release_template_on_close, rel);
        let changed = e.state != before || e.flags != flags;
        if knobs.sync_master {
            crate::sync::mark(e, before);
        }
        if changed {
            // Ticket holders (`ticket.rs`) see the state move.
            part.bump(idx);
        }
        Update::Forward
    }

    /// Counters and the timer, and the template let go once the
    /// connection closes (`release_template_on_close`).
    #[inline(always)]
    fn refresh<A: Addr, const N: usize>(
        &self,
        e: &mut Entry<A>,
        p: &PacketInfo,
        now: u64,
        release_on_close: bool,
        rel: &mut Releases<N>,
    ) {
        e.pkts = e.pkts.wrapping_add(1);
        e.bytes = e.bytes.wrapping_add(p.bytes);
        e.expires = (now as u32).wrapping_add(self.timeout_ms(e.proto, e.state));
        if e.aux != 0 && release_on_close && is_closing(e.proto, e.state) {
            rel.push(e.aux - 1);
            e.aux = 0;
        }
    }

    /// The state machine step plus the dest's active/inactive move.
    #[inline(always)]
    pub(crate) fn transition<A: Addr>(
        &self,
        e: &mut Entry<A>,
        dir: Dir,
        p: &PacketInfo,
        table: &tcp::TcpTable,
    ) {
        let d = match (dir, e.flags & flag::NOOUTPUT != 0) {
            (Dir::Out, true) => {
                e.flags &= !flag::NOOUTPUT;
                TcpDir::Output
            }
            (Dir::Out, false) => TcpDir::Output,
            (Dir::In, true) => TcpDir::InputOnly,
            (Dir::In, false) => TcpDir::Input,
        };
        let (new, active) = match e.proto {
            ipproto::TCP => {
                let old = TcpState::from_u8(e.state);
                let mut s = tcp::next_state(table, d, old, p.tcp_flags);
                if d != TcpDir::Output {
                    if p.tcp_flags & (flags::SYN | flags::RST | flags::ACK) == flags::ACK
                        && e.flags & flag::CONFIRMED == 0
                    {
                        e.flags |= flag::CONFIRMED;
                    }
                } else if s == TcpState::Established
                    && matches!(old, TcpState::SynRecv | TcpState::SynAck)
                    && e.flags & flag::CONFIRMED == 0
                {
                    // A server's packet on a handshake the client never
                    // confirmed: the answer to a duplicate (spoofed) SYN
                    // (RFC 5961's challenge ACK). The kernel's tables
                    // establish here; uvs waits for the client's ACK.
                    s = old;
                }
                (s as u8, s.is_active())
            }
            ipproto::SCTP => {
                let s = sctp::next_state(d as usize, SctpState::from_u8(e.state), p.sctp_chunk);
                (s as u8, s.is_active())
            }
            _ => return,
        };
        if new == e.state {
            return;
        }
        e.state = new;
        let inactive = e.flags & flag::INACTIVE != 0;
        if let Some(dest) = &e.dest {
            if !inactive && !active {
                e.flags |= flag::INACTIVE;
                dest.conn_state_moved(false);
            } else if inactive && active {
                e.flags &= !flag::INACTIVE;
                dest.conn_state_moved(true);
            }
        }
    }
}

/// The kernel's `is_new_conn_expected`: a new SYN/INIT on this entry's tuple
/// starts a new connection rather than continuing the old one.
fn reuse_expected<A: Addr>(e: &Entry<A>, mode: u8) -> bool {
    match e.proto {
        ipproto::TCP => {
            let s = TcpState::from_u8(e.state);
            s == TcpState::TimeWait
                || s == TcpState::Close
                || (mode & 2 != 0 && s == TcpState::FinWait && e.flags & flag::NOOUTPUT != 0)
        }
        ipproto::SCTP => SctpState::from_u8(e.state) == SctpState::Closed,
        _ => false,
    }
}

/// States after which a connection no longer holds its template (uvs's
/// `release_template_on_close` policy).
fn is_closing(proto: u8, state: u8) -> bool {
    match proto {
        ipproto::TCP => matches!(
            TcpState::from_u8(state),
            TcpState::TimeWait | TcpState::Close
        ),
        ipproto::SCTP => matches!(
            SctpState::from_u8(state),
            SctpState::Closed | SctpState::Rejected
        ),
        _ => false,
    }
}
