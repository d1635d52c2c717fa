//! The resolver's background thread: requests from the packet path, the
//! kernel's notifications, timers (see the parent module's contract).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{self as channel, Receiver, Sender};
use mio::{Poll, Token};

use super::{Msg, NextHop, Outcome, ResolveError, ResolverConfig, Shared, Slot, SlotState};
use crate::sys::netlink::{
    in_prefix, Event, Events, Neigh, Netlink, NlError, NudState, Route, RouteKind,
};

/// Timing of one published destination, owned by the background thread.
struct Meta {
    /// When to look at it next (use check, expiry of a negative answer).
    at: Instant,
    /// The last check at which it had been used.
    last_used: Instant,
    negative: bool,
    /// The published answer (the thread's copy of the map's slot).
    state: SlotState,
    /// The neighbour (ifindex, address) a Ready answer sends to.
    via: Option<(u32, IpAddr)>,
}

/// A destination waiting for its neighbour to answer.
struct InFlight {
    ifindex: u32,
    next_hop: IpAddr,
    src_mac: [u8; 6],
    mtu: u32,
    src_ip: Option<IpAddr>,
    deadline: Instant,
}

/// What one resolution step concluded.
enum Step {
    /// The answer, and the neighbour a Ready one sends to.
    Done(Result<SlotState, ResolveError>, Option<(u32, IpAddr)>),
    Wait(InFlight),
}

/// Tokens of the background thread's poller.
pub(super) const WAKE: Token = Token(0);
pub(super) const EVENTS: Token = Token(1);

pub(super) struct Background {
    nl: Netlink,
    events: Events,
    poll: Poll,
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    notify: Box<dyn Fn() + Send>,
    config: ResolverConfig,
    /// Published destinations.
    entries: HashMap<IpAddr, Meta>,
    /// (time, destination) of the next look at each entry; stale items
    /// (whose time no longer matches `entries`) are skipped.
    due: BinaryHeap<Reverse<(Instant, IpAddr)>>,
    inflight: HashMap<IpAddr, InFlight>,
    /// (deadline, destination) of in-flight resolutions; stale items are
    /// skipped.
    deadlines: BinaryHeap<Reverse<(Instant, IpAddr)>>,
    /// In-flight destinations by the neighbour (ifindex, address) they wait
    /// for.
    waiting_on: HashMap<(u32, IpAddr), HashSet<IpAddr>>,
    /// Ready destinations by the neighbour they send to.
    by_neigh: HashMap<(u32, IpAddr), HashSet<IpAddr>>,
    /// Destinations to re-resolve once the current burst of notifications
    /// has been read.
    dirty: HashSet<IpAddr>,
    /// Re-resolve everything (lost notifications, rule change).
    resync: bool,
    /// The last drain stopped at its limit: read again without waiting.
    more_events: bool,
    waiters: HashMap<IpAddr, Vec<Sender<Outcome>>>,
    /// Something was published since the last notify.
    changed: bool,
}

/// Longest sleep of an idle resolver thread (bounds shutdown latency when
/// neither the stop message nor the wake-up could be delivered).
const IDLE_TICK: Duration = Duration::from_millis(200);

fn remove_from(
    index: &mut HashMap<(u32, IpAddr), HashSet<IpAddr>>,
    key: (u32, IpAddr),
    dst: IpAddr,
) {
    if let Some(set) = index.get_mut(&key) {
        set.remove(&dst);
        if set.is_empty() {
            index.remove(&key);
        }
    }
}

impl Background {
    pub(super) fn new(
        nl: Netlink,
        events: Events,
        poll: Poll,
        shared: Arc<Shared>,
        rx: Receiver<Msg>,
        notify: Box<dyn Fn() + Send>,
        config: ResolverConfig,
    ) -> Background {
        Background {
            nl,
            events,
            poll,
            shared,
            rx,
            notify,
            config,
            entries: HashMap::new(),
            due: BinaryHeap::new(),
            inflight: HashMap::new(),
            deadlines: BinaryHeap::new(),
            waiting_on: HashMap::new(),
            by_neigh: HashMap::new(),
            dirty: HashSet::new(),
            resync: false,
            more_events: false,
            waiters: HashMap::new(),
            changed: false,
        }
    }

    pub(super) fn run(&mut self) {
        let mut ready = mio::Events::with_capacity(4);
        while !self.shared.stop.load(Ordering::Relaxed) {
            let wait = self.next_wait();
            if let Err(e) = self.poll.poll(&mut ready, Some(wait)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    // Unusable poller: fall back to sleeping the tick.
                    std::thread::sleep(IDLE_TICK);
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(msg) => {
                        if !self.handle(msg) {
                            return;
                        }
                    }
                    Err(channel::TryRecvError::Empty) => break,
                    Err(channel::TryRecvError::Disconnected) => return,
                }
            }
            // Edge-triggered: read every queued notification each round
            // (one non-blocking recv when there is none).
            self.read_events();
            self.apply_dirty();
            self.expire_inflight();
            self.visit_due();
            if std::mem::take(&mut self.changed) {
                (self.notify)();
            }
        }
    }

    /// How long to sleep for the next message, notification or timer.
    fn next_wait(&self) -> Duration {
        if self.more_events {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let next =
            |h: &BinaryHeap<Reverse<(Instant, IpAddr)>>| h.peek().map(|Reverse((at, _))| *at);
        [next(&self.due), next(&self.deadlines)]
            .into_iter()
            .flatten()
            .min()
            .map_or(IDLE_TICK, |at| {
                at.saturating_duration_since(now).min(IDLE_TICK)
            })
    }

    /// Handles one message; false means stop.
    fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Stop => false,
            Msg::Flush => {
                self.shared.map.clear();
                self.shared.changed();
                // Lookups may insert between the two calls; len() counts them.
                self.shared
                    .count
                    .store(self.shared.map.len(), Ordering::Relaxed);
                self.entries.clear();
                self.due.clear();
                self.by_neigh.clear();
                // In-flight resolutions finish and publish: their callers
                // are waiting for them.
                true
            }
            Msg::Resolve { dst, waiter } => {
                if let Some(w) = waiter {
                    self.waiters.entry(dst).or_default().push(w);
                }
                if !self.inflight.contains_key(&dst) {
                    self.start(dst);
                }
                true
            }
        }
    }

    /// Reads the queued notifications and marks what they affect.
    fn read_events(&mut self) {
        let mut got = Vec::new();
        // A failing socket leaves the answers as they are; the next round
        // tries again.
        let read = self.events.drain(|e| got.push(e)).unwrap_or(0);
        self.more_events = read >= Events::DRAIN_MAX;
        self.shared
            .events
            .fetch_add(got.len() as u64, Ordering::Relaxed);
        for e in got {
            self.on_event(e);
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Neigh {
                ifindex,
                addr,
                neigh,
            } => self.on_neigh((ifindex, addr), neigh),
            Event::Route {
                dst,
                prefix_len,
                deleted: _,
            } => self.mark(|d, _| in_prefix(d, dst, prefix_len)),
            Event::Addr { ifindex, addr, .. } => self.mark(|d, state| {
                d == addr
                    || match state {
                        Some(SlotState::Ready(h)) => h.ifindex == ifindex || h.src_ip == Some(addr),
                        // Local answers, negative ones, in-flight ones.
                        _ => true,
                    }
            }),
            Event::Link { ifindex, .. } => self.mark(|_, state| match state {
                Some(SlotState::Ready(h)) => h.ifindex == ifindex,
                Some(SlotState::Local) => false,
                _ => true,
            }),
            Event::Routing | Event::Resync => self.resync = true,
        }
    }

    /// Marks for re-resolution the published and in-flight destinations
    /// `f` selects (given the published state; `None` for in-flight ones).
    fn mark(&mut self, f: impl Fn(IpAddr, Option<SlotState>) -> bool) {
        for (&d, m) in &self.entries {
            if f(d, Some(m.state)) {
                self.dirty.insert(d);
            }
        }
        for &d in self.inflight.keys() {
            if f(d, None) {
                self.dirty.insert(d);
            }
        }
    }

    /// A neighbour entry changed (`None`: it was deleted).
    fn on_neigh(&mut self, key: (u32, IpAddr), neigh: Option<Neigh>) {
        let usable = neigh.and_then(|n| n.usable_mac());
        let failed = neigh.is_some_and(|n| n.state == NudState::FAILED);
        let finished: Vec<IpAddr> = match self.waiting_on.get(&key) {
            Some(waiting) if usable.is_some() || failed => waiting.iter().copied().collect(),
            _ => Vec::new(),
        };
        for dst in finished {
            let Some(f) = self.take_inflight(dst) else {
                continue;
            };
            let result = match usable {
                Some(mac) => Ok(SlotState::Ready(NextHop {
                    ifindex: f.ifindex,
                    src_mac: f.src_mac,
                    dst_mac: mac,
                    mtu: f.mtu,
                    src_ip: f.src_ip,
                })),
                // The kernel gave up.
                None => Err(ResolveError::NoNeighbour {
                    dst,
                    next_hop: f.next_hop,
                }),
            };
            self.publish(dst, result, Some(key));
        }
        let Some(users) = self.by_neigh.get(&key) else {
            return;
        };
        let users: Vec<IpAddr> = users.iter().copied().collect();
        match usable {
            Some(mac) => {
                for dst in users {
                    if let Some(SlotState::Ready(hop)) = self.entries.get(&dst).map(|m| m.state) {
                        if hop.dst_mac != mac {
                            let hop = NextHop {
                                dst_mac: mac,
                                ..hop
                            };
                            self.publish(dst, Ok(SlotState::Ready(hop)), Some(key));
                        }
                    }
                }
                if neigh.is_some_and(|n| n.state.wants_confirmation()) {
                    // Our frames bypass the kernel, so it never sees traffic
                    // that would make it re-confirm a STALE entry: ask for
                    // it (failure is harmless here).
                    let _ = self.probe(key.0, key.1);
                }
            }
            // Failed or deleted: resolve the users again (the old answer is
            // served meanwhile). Other states (INCOMPLETE after our own
            // probe, ...) end in one of these or in a usable one.
            None if failed || neigh.is_none() => self.dirty.extend(users),
            None => {}
        }
    }

    /// Re-resolves what the notifications marked.
    fn apply_dirty(&mut self) {
        if std::mem::take(&mut self.resync) {
            self.shared.resyncs.fetch_add(1, Ordering::Relaxed);
            self.mark(|_, _| true);
        }
        if self.dirty.is_empty() {
            return;
        }
        let dirty: Vec<IpAddr> = self.dirty.drain().collect();
        for dst in dirty {
            let inflight = self.take_inflight(dst).is_some();
            if inflight || self.entries.contains_key(&dst) {
                self.start(dst);
            }
        }
    }

    /// Removes an in-flight resolution and its index entry.
    fn take_inflight(&mut self, dst: IpAddr) -> Option<InFlight> {
        let f = self.inflight.remove(&dst)?;
        remove_from(&mut self.waiting_on, (f.ifindex, f.next_hop), dst);
        Some(f)
    }

    /// First step of a resolution: route, link, neighbour.
    fn start(&mut self, dst: IpAddr) {
        self.shared.resolutions.fetch_add(1, Ordering::Relaxed);
        match self.begin(dst) {
            Step::Done(result, via) => self.publish(dst, result, via),
            Step::Wait(f) => {
                self.waiting_on
                    .entry((f.ifindex, f.next_hop))
                    .or_default()
                    .insert(dst);
                self.deadlines.push(Reverse((f.deadline, dst)));
                self.inflight.insert(dst, f);
            }
        }
    }

    fn begin(&mut self, dst: IpAddr) -> Step {
        let fail = |e| Step::Done(Err(e), None);
        let netlink = |e: NlError| {
            fail(ResolveError::Netlink {
                dst,
                source: Arc::new(e),
            })
        };
        let route: Route = match self.nl.route_get(dst) {
            Ok(r) => r,
            Err(e) => return netlink(e),
        };
        match route.kind {
            RouteKind::Local | RouteKind::Anycast => return Step::Done(Ok(SlotState::Local), None),
            RouteKind::Unicast => {}
            kind => return fail(ResolveError::NoRoute { dst, kind }),
        }
        let Some(ifindex) = route.oif else {
            return fail(ResolveError::NoRoute {
                dst,
                kind: route.kind,
            });
        };
        let link = match self.nl.link(ifindex) {
            Ok(l) => l,
            Err(e) => return netlink(e),
        };
        // Loopback has an all-zero "MAC": no frame can go there.
        let Some(src_mac) = link.mac.filter(|m| *m != [0; 6]) else {
            return fail(ResolveError::NotEthernet { dst, ifindex });
        };
        let mtu = route.mtu.map_or(link.mtu, |m| m.min(link.mtu));
        let next_hop = route.next_hop(dst);
        let src_ip = route.prefsrc;
        let hop = |dst_mac| NextHop {
            ifindex,
            src_mac,
            dst_mac,
            mtu,
            src_ip,
        };
        match self.nl.neigh_get(ifindex, next_hop) {
            Ok(Some(n)) => {
                if let Some(mac) = n.usable_mac() {
                    if n.state.wants_confirmation() {
                        // See on_neigh: the kernel would never re-confirm it.
                        let _ = self.probe(ifindex, next_hop);
                    }
                    return Step::Done(Ok(SlotState::Ready(hop(mac))), Some((ifindex, next_hop)));
                }
            }
            Ok(None) => {}
            Err(e) => return netlink(e),
        }
        // The answer comes as a notification (subscribed before this probe,
        // so it cannot be missed).
        if let Err(e) = self.probe(ifindex, next_hop) {
            return netlink(e);
        }
        Step::Wait(InFlight {
            ifindex,
            next_hop,
            src_mac,
            mtu,
            src_ip,
            deadline: Instant::now() + self.config.resolve_timeout,
        })
    }

    fn probe(&mut self, ifindex: u32, next_hop: IpAddr) -> Result<(), NlError> {
        self.shared.probes.fetch_add(1, Ordering::Relaxed);
        self.nl.neigh_probe(ifindex, next_hop)
    }

    /// Fails the resolutions whose neighbour has not answered in time.
    fn expire_inflight(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, dst))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if !matches!(self.inflight.get(&dst), Some(f) if f.deadline == at) {
                continue; // finished or restarted meanwhile
            }
            if let Some(f) = self.take_inflight(dst) {
                let result = Err(ResolveError::NoNeighbour {
                    dst,
                    next_hop: f.next_hop,
                });
                self.publish(dst, result, None);
            }
        }
    }

    /// Expires negative answers and forgets idle entries whose time has come.
    fn visit_due(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, dst))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            let Some(meta) = self.entries.get_mut(&dst) else {
                continue;
            };
            if meta.at != at || self.inflight.contains_key(&dst) {
                continue; // superseded
            }
            let used = self
                .shared
                .map
                .get(&dst)
                .map(|slot| slot.used.swap(false, Ordering::Relaxed));
            let Some(used) = used else {
                // Flushed meanwhile.
                let via = meta.via;
                self.forget(dst, via);
                continue;
            };
            if used {
                meta.last_used = now;
            }
            let idle = now.saturating_duration_since(meta.last_used) >= self.config.idle_expiry;
            if meta.negative || idle {
                // A negative answer is forgotten when it expires, so the next
                // lookup retries; an idle entry is forgotten altogether.
                let via = meta.via;
                self.forget(dst, via);
                let removed = self
                    .shared
                    .map
                    .remove_if(&dst, |_, s| !matches!(s.state, SlotState::Pending));
                if removed.is_some() {
                    self.shared.count.fetch_sub(1, Ordering::Relaxed);
                    self.shared.changed();
                }
                continue;
            }
            // Still in use: look again after another period. Changes come
            // as notifications; nothing is re-read here.
            meta.at = now + self.config.refresh_after;
            self.due.push(Reverse((meta.at, dst)));
        }
    }

    /// Drops the thread's record of a destination.
    fn forget(&mut self, dst: IpAddr, via: Option<(u32, IpAddr)>) {
        self.entries.remove(&dst);
        if let Some(key) = via {
            remove_from(&mut self.by_neigh, key, dst);
        }
    }

    /// Publishes an answer: to the map, to waiting callers, to the schedule.
    fn publish(
        &mut self,
        dst: IpAddr,
        result: Result<SlotState, ResolveError>,
        via: Option<(u32, IpAddr)>,
    ) {
        let now = Instant::now();
        let (state, negative) = match &result {
            Ok(state) => (*state, false),
            Err(_) => (SlotState::Unreachable, true),
        };
        if negative {
            self.shared.failed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.shared.resolved.fetch_add(1, Ordering::Relaxed);
        }
        let via = via.filter(|_| matches!(state, SlotState::Ready(_)));
        let changed = match self.shared.map.get_mut(&dst) {
            Some(mut slot) => std::mem::replace(&mut slot.state, state) != state,
            None => {
                self.shared.map.insert(dst, Slot::new(state));
                self.shared.count.fetch_add(1, Ordering::Relaxed);
                true
            }
        };
        // A re-resolution that confirms the same answer wakes nobody and
        // leaves the threads' caches valid.
        if changed {
            self.shared.changed();
        }
        self.changed |= changed;
        let at = now
            + if negative {
                self.config.negative_ttl
            } else {
                self.config.refresh_after
            };
        let old = self.entries.get(&dst);
        let last_used = old.map_or(now, |m| m.last_used);
        if let Some(old_via) = old.and_then(|m| m.via) {
            if Some(old_via) != via {
                remove_from(&mut self.by_neigh, old_via, dst);
            }
        }
        if let Some(key) = via {
            self.by_neigh.entry(key).or_default().insert(dst);
        }
        self.entries.insert(
            dst,
            Meta {
                at,
                last_used,
                negative,
                state,
                via,
            },
        );
        self.due.push(Reverse((at, dst)));
        if let Some(waiters) = self.waiters.remove(&dst) {
            let outcome: Outcome = match result {
                Ok(SlotState::Ready(hop)) => Ok(hop),
                Ok(SlotState::Local) => Err(ResolveError::Local(dst)),
                // Neither is ever published as a success.
                Ok(SlotState::Pending | SlotState::Unreachable) => Err(ResolveError::Timeout(dst)),
                Err(e) => Err(e),
            };
            for w in waiters {
                // A caller that timed out has dropped its receiver.
                let _ = w.try_send(outcome.clone());
            }
        }
    }
}
