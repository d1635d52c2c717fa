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
//!
//! **Templates** (persistence) travel with their connections, as the
//! kernel's master sends them: each time a connection controlled by a
//! template is collected, its template is sent too (once per page, before
//! the connections), with its own timeout (the service's `-p`). The packet
//! path marks nothing for templates; the sync thread finds a collected
//! connection's template by the reference the connection holds. A backup
//! installs a template with [`Table::install_synced_template`]: created, or
//! its timer restarted, or, when the master's client now maps to another
//! real server, the old one invalidated (as a template whose server went
//! away) and the master's installed. Templates of a persistence engine
//! (`--pe sip`) are not sent: uvs keeps only a digest of the Call-ID, and
//! the wire carries the Call-ID itself.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use uvs_sched::{Dest, FwdMethod};

use crate::entry::{flag, Entry};
use crate::list::{ConnInfo, ListCursor};
use crate::proto::sctp::SctpState;
use crate::proto::tcp::TcpState;
use crate::proto::{ipproto, ConnState};
use crate::shard::{Family, REF_SHIFT};
use crate::table::{InsertError, NewConn, PacketInfo, Releases, Table, Tuple};
use crate::template::TemplateKey;
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

/// What a backup learnt about one persistence template.
#[derive(Debug)]
pub struct SyncedTemplate {
    /// The template's key, as this director's scheduler builds it.
    pub key: TemplateKey,
    /// The backup's destination object of the template's real server.
    pub dest: Arc<Dest>,
    /// The real server port the template records (0: port-0 service).
    pub dport: u16,
    /// Forwarding method.
    pub fwd: FwdMethod,
    /// The template's own timeout (the master's `-p`), in milliseconds.
    pub timeout_ms: u32,
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
        let start = out.len();
        let next = self.walk_page(from, slots, now, out, true);
        let tpls = self.templates_of(&out[start..]);
        out.splice(start..start, tpls);
        next
    }

    /// The templates controlling `conns` (each once), with their own
    /// timeout in `expires_in_ms`. One lookup and one template read per
    /// connection, each under its own shard lock (never two at once).
    fn templates_of(&self, conns: &[ConnInfo]) -> Vec<ConnInfo> {
        let mut refs: Vec<(bool, u32)> = conns
            .iter()
            .filter(|c| !c.template)
            .filter_map(|c| {
                let t = Tuple {
                    proto: c.proto,
                    src: c.caddr,
                    sport: c.cport,
                    dst: c.vaddr,
                    dport: c.vport,
                };
                let h = self.lookup_in(&t)?;
                let v6 = h.caddr.is_ipv6();
                let aux = if v6 {
                    self.aux_of::<Ipv6Addr>(&h)
                } else {
                    self.aux_of::<Ipv4Addr>(&h)
                };
                (aux != 0).then(|| (v6, aux - 1))
            })
            .collect();
        refs.sort_unstable();
        refs.dedup();
        refs.into_iter()
            .filter_map(|(v6, r)| {
                if v6 {
                    self.template_info::<Ipv6Addr>(r)
                } else {
                    self.template_info::<Ipv4Addr>(r)
                }
            })
            .collect()
    }

    /// The `aux` word of the connection `h` (its template reference + 1).
    fn aux_of<A: Family>(&self, h: &crate::Handle) -> u32 {
        let mut g = self.lock(h.shard);
        let part = A::part(&mut g);
        part.live(h.idx)
            .filter(|e| h.matches(*e) && e.flags & flag::TEMPLATE == 0)
            .map_or(0, |e| e.aux)
    }

    /// The sync row of the template at reference `r`, unless it is gone,
    /// invalidated, or carries a persistence engine's key.
    fn template_info<A: Family>(&self, r: u32) -> Option<ConnInfo> {
        let (shard, idx) = (r >> REF_SHIFT, r & ((1 << REF_SHIFT) - 1));
        let mut g = self.lock(shard);
        let part = A::part(&mut g);
        let e = part.live(idx)?;
        let usable = e.flags & flag::TEMPLATE != 0 && e.flags & flag::UNHASHED == 0;
        // A PE template keeps its key digest in the cport and bytes slots.
        if !usable || e.cport != 0 || e.bytes != 0 {
            return None;
        }
        let mark = e.flags & flag::FWMARK != 0;
        Some(ConnInfo {
            proto: e.proto,
            caddr: e.caddr.ip(),
            cport: 0,
            vaddr: e.vaddr.ip(),
            vport: e.vport,
            daddr: e.daddr.ip(),
            dport: e.dport,
            fwd: e.fwd(),
            state: ConnState::decode(e.proto, e.state),
            template: true,
            fwmark: mark.then(|| mark_of(e.vaddr.ip())),
            // Its own timeout, as the kernel sends it (`-p`).
            expires_in_ms: u64::from(e.pkts),
            pkts: 0,
            bytes: 0,
            controlled: e.aux,
        })
    }

    /// Backup: installs or refreshes a persistence template received from
    /// a master. A template of the key bound to another real server is
    /// invalidated first (its connections keep it until they end).
    pub fn install_synced_template(&self, t: SyncedTemplate, now: u64) -> Result<(), InsertError> {
        let get =
            || self.get_or_insert_template(&t.key, &t.dest, t.dport, t.fwd, t.timeout_ms, now);
        let mut h = get()?;
        if h.daddr != t.dest.addr || h.dport != t.dport {
            if h.caddr.is_ipv6() {
                self.invalidate_template::<Ipv6Addr>(&h);
            } else {
                self.invalidate_template::<Ipv4Addr>(&h);
            }
            h = get()?;
        }
        let timeout = t.timeout_ms.min(crate::MAX_TIMEOUT_MS);
        if h.caddr.is_ipv6() {
            self.set_template_timer::<Ipv6Addr>(&h, timeout, now);
        } else {
            self.set_template_timer::<Ipv4Addr>(&h, timeout, now);
        }
        Ok(())
    }

    /// Gives template `h` the timeout `ms`, starting now.
    fn set_template_timer<A: Family>(&self, h: &crate::Handle, ms: u32, now: u64) {
        let mut g = self.lock(h.shard);
        let part = A::part(&mut g);
        if part.live(h.idx).is_some_and(|e| h.matches(e)) {
            let e = part.get_mut(h.idx);
            e.pkts = ms;
            e.expires = (now as u32).wrapping_add(ms);
        }
    }

    /// Takes template `h` out of the index: removed when it controls no
    /// connection, else left to its connections (freed with the last).
    fn invalidate_template<A: Family>(&self, h: &crate::Handle) {
        let mut rel: Releases = Releases::new(A::WIDE);
        {
            let mut g = self.lock(h.shard);
            let (part, stats) = A::split(&mut g);
            let Some(e) = part.live(h.idx) else { return };
            if !h.matches(e) || e.flags & flag::TEMPLATE == 0 {
                return;
            }
            if e.aux == 0 {
                let old = part.remove(&self.hasher, h.idx);
                stats.expired += 1;
                self.retire(old, stats, &mut rel);
            } else {
                part.unhash_in(&self.hasher, h.idx);
            }
        }
        self.apply_releases(&rel);
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
            part.bump(idx);
        } else {
            let (part, _) = <Ipv4Addr as Family>::split(&mut g);
            self.apply_synced(part.get_mut(idx), state, timeout, now);
            part.bump(idx);
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

fn mark_of(a: std::net::IpAddr) -> u32 {
    match a {
        std::net::IpAddr::V4(v) => u32::from(v),
        std::net::IpAddr::V6(v) => u128::from(v) as u32,
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
