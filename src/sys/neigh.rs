//! The next-hop cache: for a destination address, the interface, source and
//! destination MACs and MTU to send a frame with, as the system's routes
//! and neighbour table say (never configured by hand).
//!
//! Contract:
//! * [`Resolver::lookup`] is the packet path. A cached answer costs a look
//!   in the calling thread's own small cache, validated by the resolver's
//!   generation (one plain load of a line written only when an answer
//!   changes): no lock, no allocation, no syscall, no write to a line other
//!   cores write. Otherwise one sharded-map read (a shard read lock) fills
//!   that cache. A miss
//!   returns [`Lookup::Pending`] at once and queues one resolution request
//!   for the destination (later misses for the same destination do not queue
//!   again), so the caller parks or drops the packet and retries when the
//!   notify callback runs.
//! * One background thread owns all netlink traffic: for each request it
//!   asks the kernel for the route (`ip route get`), the output interface's
//!   MAC and MTU and the next hop's neighbour entry. An unknown neighbour is
//!   resolved by the kernel itself ([`Netlink::neigh_probe`]: the kernel
//!   sends ARP / neighbour solicitations), and the thread waits for the
//!   kernel's notification that the entry became usable or FAILED, or for
//!   the resolve timeout. Many resolutions proceed side by side; none blocks
//!   the others. After publishing results the thread calls the notify
//!   callback once per batch.
//! * Changes are followed from the kernel's notifications, never by polling:
//!   the thread subscribes to link, neighbour, address, route, rule and
//!   next-hop events ([`Group::ROUTING`]) before its first lookup. A
//!   neighbour's new MAC is published at once; a neighbour that fails or
//!   disappears, a route added or removed for a prefix, an address or link
//!   change, re-resolve exactly the destinations they can affect (those in
//!   the prefix, on the interface, behind the neighbour); a rule or
//!   next-hop change, or lost notifications (socket overrun), re-resolve
//!   everything. During a re-resolution the old answer keeps being served;
//!   an answer that comes out the same wakes nobody. A neighbour that turns
//!   STALE while destinations use it is asked to be re-confirmed (uvs's
//!   packets bypass the kernel, which would otherwise never see traffic to
//!   it). Every `refresh_after` the thread only checks which answers were
//!   used: entries unused for `idle_expiry` are dropped. A failed resolution
//!   is remembered for `negative_ttl` (2 s) as [`Lookup::Unreachable`], then
//!   retried on the next lookup.
//! * The netlink sockets are opened by [`Resolver::new`], in the network
//!   namespace of the calling thread; the thread stops and is joined when
//!   the resolver is dropped.
//! * Cache granularity is one entry per destination address (like the
//!   kernel's old route cache): real servers, and clients when NAT replies go
//!   back to them. Each new destination costs one background resolution.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{
    self as channel, Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError,
};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token, Waker};

use super::netlink::{
    in_prefix, Event, Events, Group, Neigh, Netlink, NlError, NudState, Route, RouteKind,
};

/// Everything needed to put a frame on the wire toward a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// Output interface index.
    pub ifindex: u32,
    /// The output interface's MAC (the frame's source).
    pub src_mac: [u8; 6],
    /// The next hop's MAC: the destination itself on a connected subnet,
    /// else the gateway (the frame's destination).
    pub dst_mac: [u8; 6],
    /// The path MTU: the interface MTU, lowered by a route `mtu` if set.
    pub mtu: u32,
    /// The address this host sends from toward the destination (the
    /// route's preferred source): the outer source of tunnelled packets and
    /// of ICMP errors.
    pub src_ip: Option<IpAddr>,
}

/// The answer of [`Resolver::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Send with this next hop.
    Ready(NextHop),
    /// Not resolved yet: a resolution is under way (or the request queue was
    /// full). Park the packet and retry after the notify callback, or drop
    /// it. Parking must be bounded by the caller in number and age, as the
    /// kernel bounds its own queue of packets awaiting a neighbour.
    Pending,
    /// The destination is an address of this host: there is no next hop;
    /// leave the packet to the kernel.
    Local,
    /// No route, or the neighbour did not answer: drop the packet (a
    /// router would send ICMP unreachable). Remembered for `negative_ttl`.
    Unreachable,
}

/// Why [`Resolver::resolve_blocking`] found no next hop.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    /// The destination is an address of this host.
    #[error("{0} is an address of this host")]
    Local(IpAddr),
    /// The kernel has no usable route to the destination.
    #[error("no route to {dst} ({kind:?})")]
    NoRoute {
        /// The destination.
        dst: IpAddr,
        /// The route type that matched (unreachable, blackhole, ...).
        kind: RouteKind,
    },
    /// The next hop did not answer ARP / neighbour solicitation.
    #[error("{dst}: next hop {next_hop} did not answer address resolution")]
    NoNeighbour {
        /// The destination.
        dst: IpAddr,
        /// The neighbour that was asked.
        next_hop: IpAddr,
    },
    /// The output interface has no Ethernet address (e.g. a tunnel).
    #[error("{dst}: output interface {ifindex} is not an Ethernet interface")]
    NotEthernet {
        /// The destination.
        dst: IpAddr,
        /// The output interface.
        ifindex: u32,
    },
    /// Talking to the kernel failed.
    #[error("{dst}: {source}")]
    Netlink {
        /// The destination.
        dst: IpAddr,
        /// The netlink failure.
        #[source]
        source: Arc<NlError>,
    },
    /// No answer within the caller's timeout.
    #[error("resolving {0} timed out")]
    Timeout(IpAddr),
    /// The resolver thread has stopped.
    #[error("the next-hop resolver has stopped")]
    Stopped,
}

/// Why [`Resolver::new`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The netlink socket could not be opened.
    #[error("next-hop resolver: {0}")]
    Netlink(#[from] NlError),
    /// The background thread could not be spawned.
    #[error("next-hop resolver: cannot spawn its thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The thread's poller could not be set up.
    #[error("next-hop resolver: cannot set up its poller: {0}")]
    Poll(#[source] std::io::Error),
}

/// Timings and limits of a [`Resolver`].
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// Check this often whether an answer is still used (answers are
    /// re-validated when the kernel announces a change, not on a timer).
    pub refresh_after: Duration,
    /// Remember a failed resolution this long before trying again.
    pub negative_ttl: Duration,
    /// Give up on a neighbour that has not answered after this long. The
    /// kernel retransmits every second (`retrans_time`), so the default of
    /// 3 s survives two lost requests.
    pub resolve_timeout: Duration,
    /// Forget an answer not looked up for this long.
    pub idle_expiry: Duration,
    /// Capacity of the request queue from the packet path.
    pub queue_len: usize,
    /// Most destinations cached at once. A destination first seen while
    /// the cache is full stays [`Lookup::Pending`] until idle entries expire:
    /// this bounds memory when packets go to very many addresses (e.g.
    /// NAT replies to a flood of spoofed clients).
    pub max_entries: usize,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            refresh_after: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(2),
            resolve_timeout: Duration::from_secs(3),
            idle_expiry: Duration::from_secs(120),
            queue_len: 1024,
            max_entries: 1 << 18,
        }
    }
}

/// Counters of the background thread, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolverStats {
    /// Resolutions started (first resolutions and re-validations).
    pub resolutions: u64,
    /// Resolutions that produced a next hop.
    pub resolved: u64,
    /// Resolutions that failed (no route, no answer, errors).
    pub failed: u64,
    /// Neighbour probes sent through the kernel.
    pub probes: u64,
    /// Requests refused because the queue was full.
    pub queue_full: u64,
    /// New destinations refused because the cache was full.
    pub table_full: u64,
    /// Kernel notifications read (links, neighbours, addresses, routes).
    pub events: u64,
    /// Times every answer was re-resolved because notifications were lost
    /// or a rule / next-hop object changed.
    pub resyncs: u64,
}

impl ResolverStats {
    /// `resolver.NAME VALUE` lines, as `uvs stats` prints them.
    pub fn render(&self) -> String {
        format!(
            "resolver.resolutions {}\nresolver.resolved {}\nresolver.failed {}\n\
             resolver.probes {}\nresolver.queue_full {}\nresolver.table_full {}\n\
             resolver.events {}\nresolver.resyncs {}\n",
            self.resolutions,
            self.resolved,
            self.failed,
            self.probes,
            self.queue_full,
            self.table_full,
            self.events,
            self.resyncs
        )
    }
}

/// The next-hop cache; share it between workers in an `Arc`.
pub struct Resolver {
    shared: Arc<Shared>,
    tx: Sender<Msg>,
    /// Wakes the background thread after a message was queued.
    waker: Arc<Waker>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("entries", &self.shared.map.len())
            .field("stats", &self.stats())
            .finish()
    }
}

/// What the packet path reads, written by the background thread only
/// (except for `Pending` slots, which the packet path inserts).
struct Shared {
    map: DashMap<IpAddr, Slot>,
    stop: AtomicBool,
    resolutions: AtomicU64,
    resolved: AtomicU64,
    failed: AtomicU64,
    probes: AtomicU64,
    queue_full: AtomicU64,
    table_full: AtomicU64,
    events: AtomicU64,
    resyncs: AtomicU64,
    /// Slots in `map`, kept by whoever inserts or removes one (reading
    /// `DashMap::len` would lock every shard).
    count: AtomicUsize,
    max_entries: usize,
    /// Bumped (Release) after every change of an answer in `map` (publish
    /// of a different state, removal, flush): a thread's cached answer read
    /// after it saw generation `g` (Acquire) is valid while `gen` is `g`.
    /// Generations are unique across resolvers (see [`next_gen`]).
    gen: AtomicU64,
}

/// Unique generations across every resolver of the process, so a thread's
/// cache entry can never be taken for another resolver's.
static NEXT_GEN: AtomicU64 = AtomicU64::new(1);

fn next_gen() -> u64 {
    NEXT_GEN.fetch_add(1, Ordering::Relaxed)
}

impl Shared {
    /// Marks every thread's cached answers stale (after a map change).
    fn changed(&self) {
        self.gen.store(next_gen(), Ordering::Release);
    }
}

struct Slot {
    state: SlotState,
    /// Set by lookups, cleared by the refresh: tells used entries from idle
    /// ones without the packet path writing a timestamp. Shared with the
    /// threads' caches, which set it on their hits too.
    used: Arc<AtomicBool>,
}

/// Entries in each thread's next-hop cache (direct-mapped by address).
const THREAD_CACHE: usize = 64;

/// One thread's cached answer for one destination.
struct CachedHop {
    gen: u64,
    dst: IpAddr,
    hop: NextHop,
    used: Arc<AtomicBool>,
}

thread_local! {
    static HOPS: RefCell<[Option<CachedHop>; THREAD_CACHE]> =
        const { RefCell::new([const { None }; THREAD_CACHE]) };
}

/// The thread-cache index of `dst`.
#[inline(always)]
fn cache_index(dst: &IpAddr) -> usize {
    let x = match dst {
        IpAddr::V4(a) => u64::from(u32::from(*a)),
        IpAddr::V6(a) => {
            let v = u128::from(*a);
            (v as u64) ^ ((v >> 64) as u64)
        }
    };
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % THREAD_CACHE
}

/// Marks an answer used; a plain load first: the store (a cache-line write
/// shared between workers) happens once per refresh period, not per packet.
#[inline(always)]
fn mark_used(used: &AtomicBool) {
    if !used.load(Ordering::Relaxed) {
        used.store(true, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Pending,
    Ready(NextHop),
    Local,
    Unreachable,
}

impl Slot {
    fn new(state: SlotState) -> Slot {
        Slot {
            state,
            used: Arc::new(AtomicBool::new(true)),
        }
    }

    fn answer(&self) -> Lookup {
        mark_used(&self.used);
        match self.state {
            SlotState::Pending => Lookup::Pending,
            SlotState::Ready(hop) => Lookup::Ready(hop),
            SlotState::Local => Lookup::Local,
            SlotState::Unreachable => Lookup::Unreachable,
        }
    }
}

/// Messages to the background thread.
enum Msg {
    Resolve {
        dst: IpAddr,
        waiter: Option<Sender<Outcome>>,
    },
    Flush,
    Stop,
}

type Outcome = Result<NextHop, ResolveError>;

impl Resolver {
    /// Opens a netlink socket in the calling thread's network namespace and
    /// starts the background thread. `notify` runs on that thread after new
    /// answers were published (wake the workers' pollers there).
    pub fn new(
        config: ResolverConfig,
        notify: impl Fn() + Send + 'static,
    ) -> Result<Resolver, StartError> {
        // Subscribed before the first lookup: a change between a lookup and
        // its answer is seen as an event.
        let events = Events::subscribe(&Group::ROUTING)?;
        let nl = Netlink::open()?;
        let poll = Poll::new().map_err(StartError::Poll)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE).map_err(StartError::Poll)?);
        poll.registry()
            .register(
                &mut SourceFd(&events.as_raw_fd()),
                EVENTS,
                Interest::READABLE,
            )
            .map_err(StartError::Poll)?;
        let (tx, rx) = channel::bounded(config.queue_len.max(1));
        let shared = Arc::new(Shared {
            map: DashMap::new(),
            stop: AtomicBool::new(false),
            resolutions: AtomicU64::new(0),
            resolved: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            table_full: AtomicU64::new(0),
            events: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            count: AtomicUsize::new(0),
            max_entries: config.max_entries,
            gen: AtomicU64::new(next_gen()),
        });
        let mut worker = Background {
            nl,
            events,
            poll,
            shared: Arc::clone(&shared),
            rx,
            notify: Box::new(notify),
            config,
            entries: HashMap::new(),
            due: BinaryHeap::new(),
            inflight: HashMap::new(),
            deadlines: BinaryHeap::new(),
            waiting_on: HashMap::new(),
            by_neigh: HashMap::new(),
            dirty: HashSet::new(),
            resync: false,
            waiters: HashMap::new(),
            changed: false,
        };
        let thread = std::thread::Builder::new()
            .name("uvs-resolver".into())
            .spawn(move || worker.run())
            .map_err(StartError::Thread)?;
        Ok(Resolver {
            shared,
            tx,
            waker,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The next hop toward `dst`, from the cache (packet path: no
    /// allocation, no syscall when cached). A miss queues a resolution and
    /// answers [`Lookup::Pending`].
    #[inline]
    pub fn lookup(&self, dst: IpAddr) -> Lookup {
        let gen = self.shared.gen.load(Ordering::Acquire);
        let i = cache_index(&dst);
        let hit = HOPS.try_with(|c| {
            let c = c.try_borrow().ok()?;
            let e = c[i].as_ref()?;
            (e.gen == gen && e.dst == dst).then(|| {
                mark_used(&e.used);
                e.hop
            })
        });
        if let Ok(Some(hop)) = hit {
            return Lookup::Ready(hop);
        }
        self.lookup_shared(dst, gen, i)
    }

    /// The shared map, and this thread's cache filled from it (Ready
    /// answers only: the others are short-lived or rare).
    #[inline(never)]
    fn lookup_shared(&self, dst: IpAddr, gen: u64, i: usize) -> Lookup {
        let Some(slot) = self.shared.map.get(&dst) else {
            return self.miss(dst);
        };
        let answer = slot.answer();
        if let (Lookup::Ready(hop), used) = (answer, &slot.used) {
            let entry = CachedHop {
                gen,
                dst,
                hop,
                used: Arc::clone(used),
            };
            drop(slot);
            // Never fails but while the thread is torn down or re-entered;
            // the answer stands either way.
            let _ = HOPS.try_with(|c| {
                if let Ok(mut c) = c.try_borrow_mut() {
                    c[i] = Some(entry);
                }
            });
        }
        answer
    }

    /// The cold half of [`Resolver::lookup`]: insert a `Pending` slot and
    /// queue one request, unless another worker just did.
    #[cold]
    fn miss(&self, dst: IpAddr) -> Lookup {
        match self.shared.map.entry(dst) {
            Entry::Occupied(slot) => slot.get().answer(),
            Entry::Vacant(vacant) => {
                if self.shared.count.load(Ordering::Relaxed) >= self.shared.max_entries {
                    self.shared.table_full.fetch_add(1, Ordering::Relaxed);
                    return Lookup::Pending;
                }
                // The slot is inserted only when the request was queued, so
                // every Pending slot has a request behind it; with a full
                // queue a later packet asks again.
                match self.tx.try_send(Msg::Resolve { dst, waiter: None }) {
                    Ok(()) => {
                        vacant.insert(Slot::new(SlotState::Pending));
                        self.shared.count.fetch_add(1, Ordering::Relaxed);
                        // Once per new destination (this cold path): an
                        // eventfd write. A failure leaves the request to
                        // the thread's next wake-up.
                        let _ = self.waker.wake();
                    }
                    Err(TrySendError::Full(_)) => {
                        self.shared.queue_full.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Disconnected(_)) => {}
                }
                Lookup::Pending
            }
        }
    }

    /// Resolves `dst` now and waits for the answer (control path: e.g. when
    /// a real server is added). A cached next hop is returned at once; any
    /// other state starts a fresh resolution.
    pub fn resolve_blocking(
        &self,
        dst: IpAddr,
        timeout: Duration,
    ) -> Result<NextHop, ResolveError> {
        if let Some(slot) = self.shared.map.get(&dst) {
            if let SlotState::Ready(hop) = slot.state {
                slot.answer();
                return Ok(hop);
            }
        }
        let deadline = Instant::now() + timeout;
        let (reply_tx, reply_rx) = channel::bounded(1);
        let msg = Msg::Resolve {
            dst,
            waiter: Some(reply_tx),
        };
        match self.tx.send_timeout(msg, timeout) {
            Ok(()) => {
                let _ = self.waker.wake();
            }
            Err(SendTimeoutError::Timeout(_)) => return Err(ResolveError::Timeout(dst)),
            Err(SendTimeoutError::Disconnected(_)) => return Err(ResolveError::Stopped),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match reply_rx.recv_timeout(left) {
            Ok(outcome) => outcome,
            Err(RecvTimeoutError::Timeout) => Err(ResolveError::Timeout(dst)),
            Err(RecvTimeoutError::Disconnected) => Err(ResolveError::Stopped),
        }
    }

    /// Forgets every answer (e.g. after a link or route change known to the
    /// caller); the next lookups resolve afresh.
    pub fn flush(&self) {
        // Blocking send: the control path may wait for the queue.
        let _ = self.tx.send(Msg::Flush);
        let _ = self.waker.wake();
    }

    /// The background thread's counters.
    pub fn stats(&self) -> ResolverStats {
        let s = &self.shared;
        ResolverStats {
            resolutions: s.resolutions.load(Ordering::Relaxed),
            resolved: s.resolved.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            probes: s.probes.load(Ordering::Relaxed),
            queue_full: s.queue_full.load(Ordering::Relaxed),
            table_full: s.table_full.load(Ordering::Relaxed),
            events: s.events.load(Ordering::Relaxed),
            resyncs: s.resyncs.load(Ordering::Relaxed),
        }
    }

    /// Number of cached destinations (any state).
    pub fn len(&self) -> usize {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// Nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wakes the thread at once; when the queue is full the thread is
        // busy and sees the stop flag after its current step.
        let _ = self.tx.try_send(Msg::Stop);
        let _ = self.waker.wake();
        let handle = match self.thread.get_mut() {
            Ok(h) => h.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle {
            // A panic on the resolver thread has already been reported; the
            // resolver is going away either way.
            let _ = handle.join();
        }
    }
}

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
const WAKE: Token = Token(0);
const EVENTS: Token = Token(1);

struct Background {
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
    fn run(&mut self) {
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
        let _ = self.events.drain(|e| got.push(e));
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

#[cfg(test)]
mod tests {
    use super::super::netlink::testns::{self, Lab, A4, A6, B4, B6};
    use super::*;

    fn v(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    /// Short timings so the tests take fractions of a second.
    fn quick() -> ResolverConfig {
        ResolverConfig {
            refresh_after: Duration::from_millis(200),
            negative_ttl: Duration::from_millis(200),
            // Above the kernel's 1 s retransmit time, so one lost
            // solicitation does not fail a test.
            resolve_timeout: Duration::from_millis(1500),
            idle_expiry: Duration::from_secs(60),
            queue_len: 64,
            max_entries: 1000,
        }
    }

    /// A resolver whose notify callback counts and signals a channel.
    fn resolver(config: ResolverConfig) -> (Resolver, Receiver<()>, Arc<AtomicUsize>) {
        let (tx, rx) = channel::unbounded();
        let count = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&count);
        let r = Resolver::new(config, move || {
            c.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(());
        })
        .expect("resolver");
        (r, rx, count)
    }

    /// Looks `dst` up until the answer is no longer Pending (each wait is a
    /// notify, as a parked packet would be retried).
    fn settle(r: &Resolver, notified: &Receiver<()>, dst: IpAddr) -> Lookup {
        let limit = Instant::now() + Duration::from_secs(3);
        loop {
            match r.lookup(dst) {
                Lookup::Pending if Instant::now() < limit => {
                    let _ = notified.recv_timeout(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    #[test]
    fn miss_is_pending_then_notify_then_ready() {
        if !testns::available("miss_is_pending_then_notify_then_ready") {
            return;
        }
        let lab = Lab::new();
        let va = lab.ifindex(&lab.a, "va");
        let my_mac = lab.mac(&lab.a, "va");
        let peer_mac = lab.mac(&lab.b, "vb");
        let expected = NextHop {
            ifindex: va,
            src_mac: my_mac,
            dst_mac: peer_mac,
            mtu: 1500,
            src_ip: None,
        };
        // The preferred source differs per family; it must be there.
        let strip = |l: Lookup| match l {
            Lookup::Ready(h) => {
                assert!(h.src_ip.is_some(), "{h:?} has no source address");
                Lookup::Ready(NextHop { src_ip: None, ..h })
            }
            other => other,
        };
        lab.run_in(&lab.a, || {
            let (r, notified, count) = resolver(quick());
            // Connected peers and destinations behind the peer as gateway,
            // none of them ever contacted before.
            for dst in [B4, "203.0.113.7", B6, "2001:db8:2::5"] {
                let dst = v(dst);
                let before = r.stats().resolutions;
                let notifies = count.load(Ordering::SeqCst);
                assert_eq!(r.lookup(dst), Lookup::Pending, "{dst}: a miss");
                // More packets before the answer: no new request (counted
                // below). A next hop whose neighbour is already known may
                // be ready within these lookups.
                for _ in 0..100 {
                    let l = strip(r.lookup(dst));
                    assert!(
                        l == Lookup::Pending || l == Lookup::Ready(expected),
                        "{dst}: {l:?}"
                    );
                }
                notified
                    .recv_timeout(Duration::from_secs(3))
                    .unwrap_or_else(|_| panic!("{dst}: notify never called"));
                assert!(count.load(Ordering::SeqCst) > notifies);
                assert_eq!(strip(r.lookup(dst)), Lookup::Ready(expected), "{dst}");
                assert_eq!(r.stats().resolutions, before + 1, "{dst}: one resolution");
                while notified.try_recv().is_ok() {}
            }
            assert_eq!(r.stats().failed, 0);
            assert!(r.stats().probes >= 2, "IPv4 and IPv6 peers were probed");
        });
    }

    #[test]
    fn no_route_and_silent_neighbour_are_negatively_cached() {
        if !testns::available("no_route_and_silent_neighbour_are_negatively_cached") {
            return;
        }
        let lab = Lab::new();
        lab.run_in(&lab.a, || {
            let (r, notified, _) = resolver(ResolverConfig {
                resolve_timeout: Duration::from_millis(300),
                ..quick()
            });
            // 192.0.2.1: unreachable route; 192.0.2.65: blackhole;
            // 198.51.100.10 and 2001:db8:1::10: on-link, nobody answers.
            for dst in [
                "192.0.2.1",
                "192.0.2.65",
                "2001:db8:99::1",
                "198.51.100.10",
                "2001:db8:1::10",
            ] {
                let dst = v(dst);
                assert_eq!(settle(&r, &notified, dst), Lookup::Unreachable, "{dst}");
                let started = r.stats().resolutions;
                // Remembered: no new resolution while the answer is fresh.
                assert_eq!(r.lookup(dst), Lookup::Unreachable, "{dst}");
                assert_eq!(r.stats().resolutions, started);
                // Forgotten after negative_ttl: the next lookup retries.
                std::thread::sleep(Duration::from_millis(450));
                assert_eq!(r.lookup(dst), Lookup::Pending, "{dst}: retried");
                assert_eq!(settle(&r, &notified, dst), Lookup::Unreachable, "{dst}");
                assert_eq!(r.stats().resolutions, started + 1, "{dst}");
            }
        });
    }

    #[test]
    fn resolve_blocking_answers_and_fills_the_cache() {
        if !testns::available("resolve_blocking_answers_and_fills_the_cache") {
            return;
        }
        let lab = Lab::new();
        let peer_mac = lab.mac(&lab.b, "vb");
        lab.run_in(&lab.a, || {
            let (r, _, _) = resolver(quick());
            let t = Duration::from_secs(3);
            let hop = r.resolve_blocking(v("203.0.113.9"), t).expect("resolves");
            assert_eq!(hop.dst_mac, peer_mac);
            // The packet path now hits at once.
            assert_eq!(r.lookup(v("203.0.113.9")), Lookup::Ready(hop));
            assert_eq!(
                r.resolve_blocking(v("203.0.113.9"), t).expect("cached"),
                hop
            );

            match r.resolve_blocking(v(A6), t) {
                Err(ResolveError::Local(a)) => assert_eq!(a, v(A6)),
                other => panic!("own address: {other:?}"),
            }
            assert_eq!(r.lookup(v(A6)), Lookup::Local);
            assert_eq!(r.lookup(v(A4)), Lookup::Pending);
            match r.resolve_blocking(v("192.0.2.129"), t) {
                Err(ResolveError::NoRoute { kind, .. }) => assert_eq!(kind, RouteKind::Prohibit),
                other => panic!("prohibited: {other:?}"),
            }
            match r.resolve_blocking(v("198.51.100.77"), t) {
                Err(ResolveError::NoNeighbour { next_hop, .. }) => {
                    assert_eq!(next_hop, v("198.51.100.77"))
                }
                other => panic!("silent neighbour: {other:?}"),
            }
            match r.resolve_blocking(v("198.51.100.78"), Duration::from_millis(50)) {
                Err(ResolveError::Timeout(_)) => {}
                other => panic!("shorter than the neighbour timeout: {other:?}"),
            }
        });
    }

    #[test]
    fn notifications_follow_route_changes_without_polling() {
        if !testns::available("notifications_follow_route_changes_without_polling") {
            return;
        }
        let lab = Lab::new();
        let dst = v("203.0.113.20");
        // No timer could notice the changes within the test.
        let config = ResolverConfig {
            refresh_after: Duration::from_secs(600),
            ..quick()
        };
        let (r, notified, _) = lab.run_in(&lab.a, || resolver(config));
        // The resolver's socket stays in namespace a: the test thread can
        // leave it.
        assert!(matches!(settle(&r, &notified, dst), Lookup::Ready(_)));
        let before = r.stats();
        lab.ip(&["-n", &lab.a, "route", "del", "203.0.113.0/24"]);
        let t = Instant::now();
        while r.lookup(dst) != Lookup::Unreachable {
            assert!(
                t.elapsed() < Duration::from_millis(100),
                "route removal not followed"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        lab.ip(&["-n", &lab.a, "route", "add", "203.0.113.0/24", "via", B4]);
        let t = Instant::now();
        while !matches!(r.lookup(dst), Lookup::Ready(_)) {
            assert!(
                t.elapsed() < Duration::from_millis(100),
                "route return not followed"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let after = r.stats();
        assert!(after.events > before.events, "{after:?}");
        assert_eq!(after.resyncs, 0, "{after:?}");
        // One re-resolution per change (route events come in pairs at most),
        // none from a timer.
        assert!(
            after.resolutions - before.resolutions <= 4,
            "{before:?} {after:?}"
        );
    }

    #[test]
    fn neighbour_changes_are_followed_at_once() {
        if !testns::available("neighbour_changes_are_followed_at_once") {
            return;
        }
        let lab = Lab::new();
        let dst = v("203.0.113.21");
        let config = ResolverConfig {
            refresh_after: Duration::from_secs(600),
            ..quick()
        };
        let (r, notified, _) = lab.run_in(&lab.a, || resolver(config));
        let Lookup::Ready(hop) = settle(&r, &notified, dst) else {
            panic!("resolves");
        };
        assert_eq!(hop.dst_mac, lab.mac(&lab.b, "vb"));
        let before = r.stats();
        // The gateway's entry gets another MAC: published without asking
        // the kernel anything.
        lab.ip(&[
            "-n",
            &lab.a,
            "neigh",
            "replace",
            B4,
            "lladdr",
            "02:00:00:00:00:42",
            "dev",
            "va",
        ]);
        let t = Instant::now();
        loop {
            match r.lookup(dst) {
                Lookup::Ready(h) if h.dst_mac == [2, 0, 0, 0, 0, 0x42] => break,
                other => {
                    assert!(t.elapsed() < Duration::from_millis(100), "{other:?}");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        assert_eq!(r.stats().resolutions, before.resolutions, "{:?}", r.stats());
        // The entry removed: re-resolved (probe, the peer answers), back to
        // the peer's real MAC.
        lab.ip(&["-n", &lab.a, "neigh", "del", B4, "dev", "va"]);
        let t = Instant::now();
        loop {
            match r.lookup(dst) {
                Lookup::Ready(h) if h.dst_mac == hop.dst_mac => break,
                other => {
                    assert!(t.elapsed() < Duration::from_millis(500), "{other:?}");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        let after = r.stats();
        assert!(
            after.events > before.events && after.probes > before.probes,
            "{after:?}"
        );
    }

    #[test]
    fn idle_entries_expire_and_flush_forgets() {
        if !testns::available("idle_entries_expire_and_flush_forgets") {
            return;
        }
        let lab = Lab::new();
        lab.run_in(&lab.a, || {
            let config = ResolverConfig {
                idle_expiry: Duration::from_millis(300),
                ..quick()
            };
            let (r, notified, _) = resolver(config);
            assert!(matches!(settle(&r, &notified, v(B4)), Lookup::Ready(_)));
            // Served from this thread's cache from now on.
            assert!(matches!(r.lookup(v(B4)), Lookup::Ready(_)));
            assert_eq!(r.len(), 1);
            let limit = Instant::now() + Duration::from_secs(3);
            while !r.is_empty() {
                assert!(Instant::now() < limit, "idle entry kept");
                std::thread::sleep(Duration::from_millis(20));
            }
            let got = settle(&r, &notified, v(B6));
            assert!(matches!(got, Lookup::Ready(_)), "{got:?} {:?}", r.stats());
            assert!(matches!(r.lookup(v(B6)), Lookup::Ready(_)));
            r.flush();
            let limit = Instant::now() + Duration::from_secs(1);
            while !r.is_empty() {
                assert!(Instant::now() < limit, "flush kept entries");
                std::thread::sleep(Duration::from_millis(5));
            }
            // Flushed: the thread's cached answer is stale, not served (the
            // lookup is a miss again).
            assert_eq!(
                r.lookup(v(B6)),
                Lookup::Pending,
                "flushed answer still cached"
            );
        });
    }

    #[test]
    fn full_cache_refuses_new_destinations() {
        if !testns::available("full_cache_refuses_new_destinations") {
            return;
        }
        let lab = Lab::new();
        lab.run_in(&lab.a, || {
            let (r, notified, _) = resolver(ResolverConfig {
                max_entries: 2,
                ..quick()
            });
            assert!(matches!(settle(&r, &notified, v(B4)), Lookup::Ready(_)));
            assert!(matches!(settle(&r, &notified, v(B6)), Lookup::Ready(_)));
            assert_eq!(r.len(), 2);
            let third = v("203.0.113.30");
            for _ in 0..3 {
                assert_eq!(r.lookup(third), Lookup::Pending);
            }
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(r.lookup(third), Lookup::Pending, "never queued");
            let stats = r.stats();
            assert_eq!((stats.resolutions, stats.table_full), (2, 4));
            // Cached answers are still served.
            assert!(matches!(r.lookup(v(B4)), Lookup::Ready(_)));
        });
    }

    #[test]
    fn drop_stops_the_thread_promptly() {
        if !testns::available("drop_stops_the_thread_promptly") {
            return;
        }
        let lab = Lab::new();
        lab.run_in(&lab.a, || {
            let (r, _, _) = resolver(ResolverConfig {
                resolve_timeout: Duration::from_secs(30),
                ..quick()
            });
            // A resolution that would wait for a long time.
            assert_eq!(r.lookup(v("198.51.100.99")), Lookup::Pending);
            std::thread::sleep(Duration::from_millis(50));
            let t = Instant::now();
            drop(r);
            assert!(
                t.elapsed() < Duration::from_millis(500),
                "{:?}",
                t.elapsed()
            );
        });
    }
}
