//! `uvs trace` on the data path: what happened to each packet that matches
//! a trace filter, as one fixed-size [`Record`] per packet.
//!
//! **Cost.** When no trace runs, the worker pays one relaxed load of
//! [`Tracer::armed`] per packet (in `engine.rs`), and a new connection one
//! thread-local flag read in [`schedule`]; a table rule that matches pays
//! the same flag read in [`rule`]. Nothing else changes on the untraced
//! path. When a trace runs, a packet that matches neither the filter nor a
//! traced connection costs a parse and a few compares more; a traced packet
//! is processed by the normal pipeline and egress stage, with its record
//! filled around them and by the two hooks below, and queued on this
//! worker's ring of [`RING`] records. A full ring (a slow reader) loses the
//! record, counted in [`Subscription::lost`]; the packet is never held or
//! dropped for the trace. The worker never allocates for a trace (records
//! are `Copy`, the rings are allocated when the trace starts).
//!
//! **What a record holds** (see [`record`]): arrival interface, parse
//! result, every hook entry visited with its verdict (from the worker's
//! own per-entry counters, read before and after: only this worker writes
//! them), every table rule applied (reported through [`rule`]), the
//! connection entry before and after, the service, the scheduler's pick and
//! reason (through [`schedule`], which calls
//! [`uvs_sched::Scheduler::schedule_explained`] for traced packets only),
//! the outcome, the packet as rewritten, and what the egress stage did.
//!
//! **Replies.** A traced request's NAT connection puts its reply tuple
//! (server → client) into the session's small lock-free set, so the
//! replies are traced too, whatever the filter says.
//!
//! **The rule API, for emulated tables.** A table that applies a rule's
//! target calls [`rule`] with the hook point and priority of its hook
//! entry, its table and chain names, the rule's 1-based number in the
//! chain, the rule's text (any `Display`, formatted only when tracing) and
//! the verdict's iptables name. The call is a thread-local flag read when
//! no traced packet is being processed.

pub mod record;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use crossbeam_channel::{Receiver, Sender};
use uvs_conntrack::{ConnState, Dir, Table, Tuple};
use uvs_fwd::{CsumMode, Parsed};
use uvs_sched::{Dest, Explain, SchedKey, Scheduler};

use crate::datapath::egress::{Egress, Neighbours};
use crate::datapath::hooks::{HookPoint, HookVerdict, MAX_ENTRIES};
use crate::datapath::pipeline::{Pipeline, Verdict};
use crate::datapath::stats::{DropReason, WorkerStats};
use crate::io::{RxFrame, TxQueue};
use crate::sys::neigh::Lookup;

pub use record::{
    ConnView, Egress as EgressView, HookVisit, Outcome, Record, RuleVisit, SchedView, SvcView, Text,
};

/// Records each worker's ring holds.
pub const RING: usize = 128;
/// Slots of the traced-connection set.
const TRACED_SLOTS: usize = 1024;
/// Slots probed per look-up in that set.
const PROBE: usize = 8;

pub use crate::datapath::prefix::Prefix;

/// Which packets a trace follows (every field given must match).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceFilter {
    /// IP protocol; 1 (`icmp`) matches ICMPv6 too.
    pub proto: Option<u8>,
    pub src: Option<Prefix>,
    pub dst: Option<Prefix>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

impl TraceFilter {
    /// Does the packet `p` match?
    pub fn matches(&self, p: &Parsed) -> bool {
        let proto_ok = match self.proto {
            None => true,
            Some(1) => p.proto == 1 || p.proto == 58,
            Some(n) => p.proto == n,
        };
        let ports = p.has_ports();
        proto_ok
            && self.src.is_none_or(|s| s.contains(p.src))
            && self.dst.is_none_or(|d| d.contains(p.dst))
            && self.sport.is_none_or(|s| ports && p.sport == s)
            && self.dport.is_none_or(|d| ports && p.dport == d)
    }

    /// Whether the filter names nothing (then unparseable frames match too).
    pub fn is_empty(&self) -> bool {
        *self == TraceFilter::default()
    }
}

/// Why a trace could not start.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("a trace is already running (one at a time)")]
    Busy,
}

/// Connection tuples whose packets are traced whatever the filter: a
/// fixed array of tuple hashes, filled and probed lock-free (a full
/// neighbourhood overwrites its first slot: bounded, and at worst a
/// reply is not followed).
struct TupleSet {
    slots: Box<[AtomicU64]>,
}

impl TupleSet {
    fn new() -> TupleSet {
        TupleSet {
            slots: (0..TRACED_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn hash(t: &Tuple) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (t.proto, t.src, t.sport, t.dst, t.dport).hash(&mut h);
        h.finish() | 1
    }

    fn insert(&self, t: &Tuple) {
        let h = Self::hash(t);
        let at = h as usize % TRACED_SLOTS;
        for k in 0..PROBE {
            let s = &self.slots[(at + k) % TRACED_SLOTS];
            match s.compare_exchange(0, h, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(cur) if cur == h => return,
                Err(_) => {}
            }
        }
        self.slots[at].store(h, Relaxed);
    }

    fn contains(&self, t: &Tuple) -> bool {
        let h = Self::hash(t);
        let at = h as usize % TRACED_SLOTS;
        (0..PROBE).any(|k| self.slots[(at + k) % TRACED_SLOTS].load(Relaxed) == h)
    }
}

/// One running trace: its filter, the workers' rings and its counters.
struct Session {
    filter: TraceFilter,
    count: Option<u64>,
    /// Packets matched so far (the next record's sequence number - 1).
    matched: AtomicU64,
    /// Records lost to a full ring.
    lost: AtomicU64,
    rings: Box<[(Sender<Record>, Receiver<Record>)]>,
    traced: TupleSet,
}

/// The data path's tracing switch and the running trace, if any (one per
/// pipeline).
#[derive(Default)]
pub struct Tracer {
    armed: AtomicBool,
    session: ArcSwapOption<Session>,
    /// Serialises start and stop (control path).
    control: Mutex<()>,
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer")
            .field("armed", &self.armed())
            .finish()
    }
}

impl Tracer {
    /// Is a trace running? One relaxed load: what untraced packets pay.
    #[inline(always)]
    pub fn armed(&self) -> bool {
        self.armed.load(Relaxed)
    }

    /// Starts a trace of the packets `filter` matches (at most `count`
    /// of them), with one ring per worker; it runs until the returned
    /// subscription is dropped.
    pub fn start(
        &self,
        filter: TraceFilter,
        count: Option<u64>,
        workers: usize,
    ) -> Result<Subscription<'_>, TraceError> {
        let _g = self.control.lock().unwrap_or_else(|e| e.into_inner());
        if self.session.load().is_some() {
            return Err(TraceError::Busy);
        }
        let s = Arc::new(Session {
            filter,
            count,
            matched: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            rings: (0..workers.max(1))
                .map(|_| crossbeam_channel::bounded(RING))
                .collect(),
            traced: TupleSet::new(),
        });
        self.session.store(Some(s.clone()));
        self.armed.store(true, Relaxed);
        Ok(Subscription {
            tracer: self,
            session: s,
        })
    }
}

/// The reading end of a running trace; dropping it ends the trace.
pub struct Subscription<'a> {
    tracer: &'a Tracer,
    session: Arc<Session>,
}

impl fmt::Debug for Subscription<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("matched", &self.matched())
            .field("lost", &self.lost())
            .finish()
    }
}

impl Subscription<'_> {
    /// The next record from any worker, waiting at most `wait`.
    pub fn recv_timeout(&self, wait: Duration) -> Option<Record> {
        let mut sel = crossbeam_channel::Select::new();
        for (_, rx) in self.session.rings.iter() {
            sel.recv(rx);
        }
        let op = sel.select_timeout(wait).ok()?;
        let i = op.index();
        op.recv(&self.session.rings[i].1).ok()
    }

    /// Records lost because a ring was full (the reader was slow).
    pub fn lost(&self) -> u64 {
        self.session.lost.load(Relaxed)
    }

    /// Packets matched so far (including lost records and those past
    /// the count).
    pub fn matched(&self) -> u64 {
        self.session.matched.load(Relaxed)
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let _g = self
            .tracer
            .control
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.tracer.armed.store(false, Relaxed);
        self.tracer.session.store(None);
    }
}

thread_local! {
    /// Set while this thread processes a traced packet.
    static RECORDING: Cell<bool> = const { Cell::new(false) };
    /// What the hooks inside the pipeline add to the record being built.
    static INNER: RefCell<Inner> = const { RefCell::new(Inner::EMPTY) };
    /// This thread's ring (assigned on its first traced packet).
    static RING_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

static NEXT_RING_SLOT: AtomicUsize = AtomicUsize::new(0);

/// The parts of a record filled from inside the pipeline.
#[derive(Clone, Copy)]
struct Inner {
    rules: [Option<RuleVisit>; record::MAX_RULES],
    rules_lost: u32,
    sched: Option<SchedView>,
}

impl Inner {
    const EMPTY: Inner = Inner {
        rules: [None; record::MAX_RULES],
        rules_lost: 0,
        sched: None,
    };
}

/// Is this thread processing a traced packet right now?
#[inline(always)]
pub fn recording() -> bool {
    RECORDING.with(Cell::get)
}

/// Reports that a table rule's target was applied to the packet being
/// processed: hook `point` and `priority` of the table's hook entry,
/// `table` (`filter`, `nat`, `mangle`, …), `chain`, the rule's 1-based
/// number in the chain, its text (formatted only when tracing) and the
/// verdict's iptables name (`ACCEPT`, `DROP`, `RETURN`, `MARK`, …). A
/// thread-local flag read unless the packet is traced.
#[inline(always)]
pub fn rule(
    point: HookPoint,
    priority: i32,
    table: &'static str,
    chain: &str,
    rule_no: u32,
    text: &dyn fmt::Display,
    verdict: &'static str,
) {
    if recording() {
        rule_cold(point, priority, table, chain, rule_no, text, verdict);
    }
}

#[cold]
#[inline(never)]
fn rule_cold(
    point: HookPoint,
    priority: i32,
    table: &'static str,
    chain: &str,
    rule_no: u32,
    text: &dyn fmt::Display,
    verdict: &'static str,
) {
    let v = RuleVisit {
        point,
        priority,
        table,
        chain: Text::of(&chain),
        rule_no,
        text: Text::of(text),
        verdict,
    };
    INNER.with(|i| {
        if let Ok(mut i) = i.try_borrow_mut() {
            match i.rules.iter_mut().find(|s| s.is_none()) {
                Some(s) => *s = Some(v),
                None => i.rules_lost = i.rules_lost.saturating_add(1),
            }
        }
    });
}

/// The pipeline's call to the service's scheduler: `s.schedule(key)`, or,
/// for a traced packet, [`Scheduler::schedule_explained`] with the reason
/// kept for the record (the same pick).
#[inline(always)]
pub fn schedule(s: &dyn Scheduler, dests: &[Arc<Dest>], key: &SchedKey) -> Option<Arc<Dest>> {
    if recording() {
        schedule_cold(s, key)
    } else {
        s.schedule_in(dests, key)
    }
}

#[cold]
#[inline(never)]
fn schedule_cold(s: &dyn Scheduler, key: &SchedKey) -> Option<Arc<Dest>> {
    let mut why = Explain::default();
    let d = s.schedule_explained(key, &mut why);
    let view = SchedView {
        sched: s.name(),
        picked: d.as_ref().map(|d| SocketAddr::new(d.addr, d.port)),
        why,
    };
    INNER.with(|i| {
        if let Ok(mut i) = i.try_borrow_mut() {
            i.sched = Some(view);
        }
    });
    d
}

/// A worker's counters that tell what the pipeline did to one packet.
struct Counts {
    seen: [u64; MAX_ENTRIES],
    dropped: [u64; MAX_ENTRIES],
    stolen: [u64; MAX_ENTRIES],
    drops: [u64; DropReason::COUNT],
    conns: u64,
}

impl Counts {
    fn read(st: &WorkerStats) -> Counts {
        let l = |a: &[AtomicU64]| -> [u64; MAX_ENTRIES] {
            std::array::from_fn(|i| a.get(i).map_or(0, |c| c.load(Relaxed)))
        };
        Counts {
            seen: l(&st.hook_seen),
            dropped: l(&st.hook_dropped),
            stolen: l(&st.hook_stolen),
            drops: std::array::from_fn(|i| st.drops[i].load(Relaxed)),
            conns: st.conns.load(Relaxed),
        }
    }

    /// The first drop reason counted between `self` and `later`.
    fn dropped_since(&self, later: &Counts) -> Option<DropReason> {
        DropReason::ALL
            .into_iter()
            .find(|r| later.drops[*r as usize] > self.drops[*r as usize])
    }
}

fn tuple(p: &Parsed) -> Tuple {
    Tuple {
        proto: p.proto,
        src: p.src,
        sport: p.sport,
        dst: p.dst,
        dport: p.dport,
    }
}

/// The connection entry `t` belongs to, as a request or a NAT reply.
fn conn_view(conns: &Table, t: &Tuple) -> Option<ConnView> {
    let (h, dir) = conns.lookup(t)?;
    let state = h.state();
    let to = conns.timeouts();
    let timeout_ms = match state {
        ConnState::Tcp(s) => to.tcp.get(s as usize).copied().unwrap_or(0),
        ConnState::Sctp(s) => to.sctp.get(s as usize).copied().unwrap_or(0),
        ConnState::Udp => to.udp,
    };
    Some(ConnView {
        state: state.name(),
        reply: dir == Dir::Out,
        client: SocketAddr::new(h.caddr(), h.cport()),
        virt: SocketAddr::new(h.vaddr(), h.vport()),
        server: SocketAddr::new(h.daddr(), h.dport()),
        fwd: h.fwd(),
        timeout_ms,
    })
}

/// `engine.rs`'s per-frame step while a trace is armed: the frame goes
/// through the pipeline and the egress stage exactly as untraced; if it
/// matches the trace, its record is filled around them and queued.
#[allow(clippy::too_many_arguments)]
#[cold]
#[inline(never)]
pub fn handle<'b>(
    f: RxFrame<'b>,
    csum: CsumMode,
    pl: &Pipeline,
    egress: &mut Egress,
    nb: &impl Neighbours,
    now: u64,
    st: &WorkerStats,
    q: &mut impl TxQueue<'b>,
) {
    handle_from(false, f, csum, pl, egress, nb, now, st, q)
}

/// [`handle`] for a frame received (`local_out` false) or sent by the
/// director's own stack (true: read from the local-client device, it
/// meets LOCAL_OUT).
#[allow(clippy::too_many_arguments)]
pub fn handle_from<'b>(
    local_out: bool,
    mut f: RxFrame<'b>,
    csum: CsumMode,
    pl: &Pipeline,
    egress: &mut Egress,
    nb: &impl Neighbours,
    now: u64,
    st: &WorkerStats,
    q: &mut impl TxQueue<'b>,
) {
    let process = |frame: &mut [u8]| {
        if local_out {
            pl.process_local_out(frame, csum, now, st)
        } else {
            pl.process(frame, csum, now, st)
        }
    };
    // A guard, not a clone: no reference count written per packet.
    let session = pl.trace.session.load();
    let parsed = uvs_fwd::parse(f.frame());
    let traced = (*session).as_ref().and_then(|s| {
        let (m, followed) = match &parsed {
            Ok(p) => {
                let m = s.filter.matches(p);
                (m || (p.has_ports() && s.traced.contains(&tuple(p))), !m)
            }
            Err(_) => (s.filter.is_empty(), false),
        };
        if !m {
            return None;
        }
        let seq = s.matched.fetch_add(1, Relaxed) + 1;
        s.count
            .is_none_or(|c| seq <= c)
            .then_some((s, seq, followed))
    });
    let Some((s, seq, followed)) = traced else {
        let v = process(f.frame_mut());
        egress.output(f.buf, f.at, f.vnet, v, nb, now, st, q);
        return;
    };
    let mut r = Record {
        seq,
        ifindex: f.ifindex,
        len: f.frame().len() as u32,
        followed,
        parsed,
        ..Record::EMPTY
    };
    let t = parsed.ok().filter(Parsed::has_ports).map(|p| tuple(&p));
    r.conn_before = t.and_then(|t| conn_view(&pl.conns, &t));
    let before = Counts::read(st);
    INNER.with(|i| *i.borrow_mut() = Inner::EMPTY);
    RECORDING.with(|c| c.set(true));
    let v = process(f.frame_mut());
    RECORDING.with(|c| c.set(false));
    let inner = INNER.with(|i| *i.borrow());
    let mid = Counts::read(st);
    (r.rules, r.rules_lost, r.sched) = (inner.rules, inner.rules_lost, inner.sched);
    // The hook entries this packet met: those whose counters moved.
    let mut n = 0;
    for e in pl.hooks.all() {
        let i = e.index;
        if i >= MAX_ENTRIES || mid.seen[i] == before.seen[i] {
            continue;
        }
        let verdict = if mid.dropped[i] > before.dropped[i] {
            HookVerdict::Drop
        } else if mid.stolen[i] > before.stolen[i] {
            HookVerdict::Stolen
        } else {
            HookVerdict::Accept
        };
        r.point.get_or_insert(e.point);
        if let Some(slot) = r.hooks.get_mut(n) {
            *slot = Some(HookVisit {
                point: e.point,
                priority: e.priority,
                func: e.func,
                verdict,
            });
            n += 1;
        }
    }
    r.conn_new = mid.conns > before.conns;
    if let (Ok(p), Some(HookPoint::LocalIn | HookPoint::LocalOut)) = (&parsed, r.point) {
        let services = pl.services.load();
        r.service = services.find(p.proto, p.dst, p.dport).map(|s| SvcView {
            proto: s.proto,
            addr: s.addr,
            port: s.port,
            sched: s.sched.name(),
            persistent: s.persistence.is_some(),
        });
    }
    let next_hop = match v {
        Verdict::Pass => {
            r.outcome = Outcome::Pass;
            None
        }
        Verdict::Drop(d) => {
            r.outcome = Outcome::Drop(d);
            None
        }
        Verdict::Reject { reason, .. } => {
            r.outcome = Outcome::Reject(reason);
            None
        }
        Verdict::Xmit { next_hop, pkt, .. } => {
            r.outcome = Outcome::Xmit { next_hop };
            r.rewritten = Some(pkt);
            Some(next_hop)
        }
        Verdict::Tunnel { next_hop, pkt, .. } => {
            r.outcome = Outcome::Tunnel { next_hop };
            r.rewritten = Some(pkt);
            Some(next_hop)
        }
    };
    r.egress = next_hop.map(|a| match nb.lookup(a) {
        Lookup::Ready(nh) => EgressView::Sent {
            ifindex: nh.ifindex,
            src_mac: nh.src_mac,
            dst_mac: nh.dst_mac,
            mtu: nh.mtu,
        },
        Lookup::Pending => EgressView::Parked,
        Lookup::Local => EgressView::Local,
        Lookup::Unreachable => EgressView::Unreachable,
    });
    r.conn_after = t.and_then(|t| conn_view(&pl.conns, &t));
    // Follow the connection's replies (NAT: server → client), from before
    // the request leaves, so its first reply is already known.
    if let Some(c) = r.conn_after.filter(|c| !c.reply) {
        if c.fwd == uvs_sched::FwdMethod::Masq {
            s.traced.insert(&Tuple {
                proto: r.parsed.map_or(0, |p| p.proto),
                src: c.server.ip(),
                sport: c.server.port(),
                dst: c.client.ip(),
                dport: c.client.port(),
            });
        }
    }
    egress.output(f.buf, f.at, f.vnet, v, nb, now, st, q);
    r.egress_drop = mid.dropped_since(&Counts::read(st));
    let slot = RING_SLOT.with(|c| {
        if c.get() == usize::MAX {
            c.set(NEXT_RING_SLOT.fetch_add(1, Relaxed));
        }
        c.get()
    });
    r.ring = slot as u16;
    let ring = &s.rings[slot % s.rings.len()].0;
    if ring.try_send(r).is_err() {
        s.lost.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests;
