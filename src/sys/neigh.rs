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
use std::fmt;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{
    self as channel, RecvTimeoutError, SendTimeoutError, Sender, TrySendError,
};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use mio::unix::SourceFd;
use mio::{Interest, Poll, Waker};

use super::netlink::{Events, Group, Netlink, NlError, RouteKind};
use background::{Background, EVENTS, WAKE};

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
        let mut worker = Background::new(
            nl,
            events,
            poll,
            Arc::clone(&shared),
            rx,
            Box::new(notify),
            config,
        );
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

mod background;

#[cfg(test)]
mod tests;
