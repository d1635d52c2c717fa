//! Connection synchronisation hooks (the sync daemon's side of the table).
//!
//! A **master** marks connections that a backup should learn, in the packet
//! path, with no extra lock or shared write: with [`Knobs::sync_master`] on,
//! the packet that takes an entry into a state worth syncing, or whose count
//! reaches the kernel's threshold (the 3rd packet, then every 50th:
//! `sync_threshold` 3, `sync_period` 50), sets a flag bit in the entry it
//! already holds under its shard lock. The sync thread collects marked
//! entries page by page ([`Table::sync_page`], the same bounded lock holds
//! as listing), clearing the mark, and sends them.
//!
//! A **backup** installs what it receives with [`Table::install_synced`]:
//! the connection with the sender's state and remaining timeout, bound to
//! the backup's own destination object, counted active or inactive as the
//! state says. An existing entry of the tuple is updated; one bound to a
//! different real server is replaced, unless the message is about an
//! inactive connection (the kernel's rule: an inactive entry's message is
//! the expiry note of the connection already replaced).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::entry::{flag, Entry};
use crate::list::{ConnInfo, ListCursor};
use crate::proto::sctp::SctpState;
use crate::proto::tcp::TcpState;
use crate::proto::{ipproto, ConnState};
use crate::shard::Family;
use crate::table::{InsertError, NewConn, PacketInfo, Table, Tuple};
use crate::Knobs;

/// The kernel's `sync_threshold`: a connection is first synced at this packet.
pub const SYNC_THRESHOLD: u32 = 3;
/// The kernel's `sync_period`: and again every this many packets.
pub const SYNC_PERIOD: u32 = 50;

/// Does the state reached by this packet (`before` → the entry's state now)
/// make the entry worth sending? The kernel's `ip_vs_sync_conn_needed`
/// without the refresh-period option: TCP and SCTP only in established or
/// closing states, immediately on a change into a closing state, otherwise
/// on the packet-count schedule.
#[inline(always)]
pub(crate) fn wanted(proto: u8, before: u8, now_state: u8, pkts: u32) -> bool {
    let syncable = match proto {
        ipproto::TCP => matches!(
            TcpState::from_u8(now_state),
            TcpState::Established
                | TcpState::FinWait
                | TcpState::Close
                | TcpState::CloseWait
                | TcpState::TimeWait
        ),
        ipproto::SCTP => matches!(
            SctpState::from_u8(now_state),
            SctpState::Established
                | SctpState::ShutdownSent
                | SctpState::ShutdownReceived
                | SctpState::ShutdownAckSent
                | SctpState::Closed
        ),
        _ => true,
    };
    if !syncable {
        return false;
    }
    let established = match proto {
        ipproto::TCP => now_state == TcpState::Established as u8,
        ipproto::SCTP => now_state == SctpState::Established as u8,
        _ => true,
    };
    (now_state != before && !established) || pkts % SYNC_PERIOD == SYNC_THRESHOLD
}

/// Marks `e` for the sync thread when [`wanted`].
#[inline(always)]
pub(crate) fn mark<A>(e: &mut Entry<A>, before: u8) {
    if e.flags & flag::TEMPLATE == 0 && wanted(e.proto, before, e.state, e.pkts) {
        e.flags |= flag::SYNC_DUE;
    }
}

impl Knobs {
    /// `sync_master` in the packed form.
    pub(crate) const SYNC_MASTER_BIT: u32 = 1 << 25;
}

/// What a backup learnt about one connection.
#[derive(Debug)]
pub struct Synced {
    /// The connection, bound to the backup's destination.
    pub conn: NewConn,
    /// The state, in uvs's (= the kernel's) numbering for the protocol.
    pub state: ConnState,
    /// Remaining timeout in milliseconds; `None`: the state's own timeout.
    pub timeout_ms: Option<u32>,
}

impl Table {
    /// Master: appends to `out` the marked entries among about
    /// `slots` table slots from `from` on (whole steps of
    /// [`crate::LIST_STEP`]), clearing their marks; returns the cursor to
    /// continue from, or `None` when the walk is complete. Bounded lock
    /// holds, as [`Table::list_page`]; a caller visiting a fixed number of
    /// slots per tick spends a fixed time per tick, whatever the table holds.
    pub fn sync_page(
        &self,
        from: ListCursor,
        slots: usize,
        now: u64,
        out: &mut Vec<ConnInfo>,
    ) -> Option<ListCursor> {
        self.walk_page(from, slots, now, out, true)
    }

    /// Backup: installs or updates a connection received from a master.
    pub fn install_synced(&self, s: Synced, now: u64) -> Result<(), InsertError> {
        let c = &s.conn;
        let tuple = Tuple {
            proto: c.proto,
            src: c.caddr,
            sport: c.cport,
            dst: c.vaddr,
            dport: c.vport,
        };
        let state = s.state.encode();
        let active = s.state.is_active();
        if let Some(h) = self.lookup_in(&tuple) {
            let same_server = h.daddr == c.daddr && h.dport == c.dport;
            if same_server {
                self.set_synced(&h, state, s.timeout_ms, now);
                return Ok(());
            }
            if !active {
                // The expiry note of the connection this tuple had before
                // it was rescheduled: nothing to do.
                return Ok(());
            }
            self.remove(&h);
        }
        let h = self.insert(s.conn, PacketInfo::default(), now)?;
        self.set_synced(&h, state, s.timeout_ms, now);
        Ok(())
    }

    fn set_synced(&self, h: &crate::Handle, state: u8, timeout: Option<u32>, now: u64) {
        let (idx, mut g) = (h.idx, self.lock(h.shard));
        if h.caddr.is_ipv6() {
            let (part, _) = <Ipv6Addr as Family>::split(&mut g);
            self.apply_synced(part.get_mut(idx), state, timeout, now);
        } else {
            let (part, _) = <Ipv4Addr as Family>::split(&mut g);
            self.apply_synced(part.get_mut(idx), state, timeout, now);
        }
    }

    fn apply_synced<A>(&self, e: &mut Entry<A>, state: u8, timeout: Option<u32>, now: u64) {
        if e.dest.is_none() {
            return;
        }
        e.state = state;
        let active = ConnState::decode(e.proto, state).is_active();
        let inactive = e.flags & flag::INACTIVE != 0;
        if let Some(d) = &e.dest {
            if inactive && active {
                e.flags &= !flag::INACTIVE;
                d.conn_state_moved(true);
            } else if !inactive && !active {
                e.flags |= flag::INACTIVE;
                d.conn_state_moved(false);
            }
        }
        // As the kernel's backup: the count starts at the threshold, so a
        // backup that becomes master syncs on its own schedule.
        e.pkts = SYNC_THRESHOLD;
        let t = timeout.unwrap_or_else(|| self.timeout_ms(e.proto, e.state));
        e.expires = (now as u32).wrapping_add(t.min(crate::MAX_TIMEOUT_MS));
    }
}

/// Takes the entry for a sync page if it is marked, clearing the mark.
pub(crate) fn take_marked<A>(e: &mut Entry<A>) -> bool {
    if e.flags & flag::TEMPLATE != 0 {
        return false; // the bit is a template's FWMARK
    }
    let due = e.flags & flag::SYNC_DUE != 0;
    e.flags &= !flag::SYNC_DUE;
    due
}
