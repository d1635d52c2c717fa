//! The engine: interfaces, worker threads, the resolver, the kernel guard and
//! the housekeeping timer, started and stopped as one.
//!
//! Each worker owns one RX source per attached interface (AF_PACKET: a ring,
//! all rings of an interface in one fanout group; AF_XDP: a socket on the
//! worker's RX queue, see `uvs run --io`), one TX sink and one egress
//! stage, and sleeps in mio's poll when its sources are empty. The engine is
//! only that loop: RX batch → [`Pipeline::process`] → [`Egress::output`] →
//! TX queue (with `--busy-poll`, a worker that finds its sources empty
//! keeps checking them for that long before it sleeps), with the wakers (the resolver wakes workers whose packets wait
//! for a neighbour) and the timer (connection expiry). Frames are processed
//! in place and transmitted from there. Every few rounds a worker reads its
//! sources' kernel drop counts into `drop.rx_queue_full` (AF_PACKET; an
//! AF_XDP socket's drops have their own names, read by `XdpIo::report`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::datapath::egress::Egress;
use crate::datapath::pipeline::Pipeline;
use crate::datapath::stats::{add, DropReason, Stats, WorkerStats};
use crate::io::idle::Idle;
use crate::io::tun_local::{LocalRx, LocalSink};
use crate::io::{Fanout, RingTx, RxBatch, RxFrame, RxRing, RxSkip, RxSource, TxQueue, TxSink};
use crate::sys::neigh::{Resolver, ResolverConfig};

/// An interface uvs attaches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub index: u32,
}

/// Errors starting the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("interface '{0}' does not exist or is not up")]
    NoSuchInterface(String),
    #[error("no interface to attach to (none is up besides loopback)")]
    NoInterfaces,
    #[error("opening a packet ring on {iface}: {err} (uvs needs root / CAP_NET_RAW)")]
    Ring { iface: String, err: std::io::Error },
    #[error("{0}")]
    Xdp(#[from] crate::io::xdp::XdpError),
    #[error("starting the neighbour resolver: {0}")]
    Resolver(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The up, non-loopback Ethernet interfaces of this namespace, or the ones
/// named in `only` (each must exist and be up).
pub fn interfaces(only: &[String]) -> Result<Vec<Iface>, EngineError> {
    let all: Vec<Iface> = crate::sys::netlink::links()
        .map_err(|e| EngineError::Io(std::io::Error::other(e)))?
        .into_iter()
        .filter(|i| i.up && !i.loopback && i.mac.is_some_and(|m| m != [0; 6]))
        .map(|i| Iface {
            name: i.name,
            index: i.index,
        })
        .collect();
    if only.is_empty() {
        if all.is_empty() {
            return Err(EngineError::NoInterfaces);
        }
        return Ok(all);
    }
    only.iter()
        .map(|n| {
            all.iter()
                .find(|i| &i.name == n)
                .cloned()
                .ok_or_else(|| EngineError::NoSuchInterface(n.clone()))
        })
        .collect()
}

/// The worker count when `--workers` is not given: one per core, except on
/// a machine of at most two cores, where one worker. There the kernel's
/// share of forwarding (the ring's receive path and the transmit, which
/// runs the receiver's stack on a veth) and any local endpoints need the
/// other core, and a NAT connection's request and reply, hashed to
/// different workers, would each wake a second thread and move the
/// connection entry between cores. Measured on the 2-core lab (`uvs bench`,
/// three repetitions, `docs/bench/report-4-workers{1,2}.md`): one worker
/// 0.90× iptables' short-connection rate, two 0.59×; the same UDP answers.
pub fn default_workers(cores: usize) -> usize {
    if cores <= 2 {
        1
    } else {
        cores
    }
}

/// Engine settings from the command line.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub workers: usize,
    pub ring_frames: usize,
    pub io: IoMode,
    /// How AF_PACKET transmits (`--tx`).
    pub tx: TxMode,
    /// `--busy-poll`: microseconds a worker keeps polling its sources
    /// after they ran dry before it sleeps; 0 = sleep at once (default).
    pub busy_poll_us: u32,
    /// `--idle-spin`: the ceiling of the adaptive spin after a busy round
    /// ([`crate::io::idle`]), in microseconds; 0 = off. `--busy-poll`
    /// overrides it.
    pub idle_spin_us: u32,
    /// `--worker-nice`: the workers' nice value (0: as the process).
    pub worker_nice: i32,
    /// `--worker-cpus`: worker k is pinned to `worker_cpus[k % len]`
    /// (empty: unpinned).
    pub worker_cpus: Vec<usize>,
    /// `--worker-fifo`, `--worker-sched-idle`: the workers' scheduling
    /// policy.
    pub worker_policy: crate::io::place::Policy,
    /// `--fanout`: how an interface's packets are shared among the
    /// workers' AF_PACKET rings. With [`Fanout::Cpu`] and no
    /// `worker_cpus`, worker k is pinned to CPU k (its ring takes that
    /// CPU's packets).
    pub fanout: Fanout,
    /// Local clients (`--local-src`): the `uvs-lo` TUN device, read by
    /// worker 0 at LOCAL_OUT and written by every worker's egress.
    pub local: Option<(crate::io::tun_local::LocalIo, u32)>,
}

/// How the workers wait for packets and at what priority they run.
#[derive(Debug, Clone)]
struct Sched {
    busy_poll_us: u32,
    idle_spin_us: u32,
    nice: i32,
    cpus: Vec<usize>,
    policy: crate::io::place::Policy,
}

impl EngineConfig {
    fn sched(&self) -> Sched {
        Sched {
            busy_poll_us: self.busy_poll_us,
            idle_spin_us: self.idle_spin_us,
            nice: self.worker_nice,
            cpus: match (self.fanout, self.worker_cpus.is_empty()) {
                (Fanout::Cpu, true) => (0..self.workers.max(1)).collect(),
                _ => self.worker_cpus.clone(),
            },
            policy: self.worker_policy,
        }
    }
}

/// Sets the calling thread's nice value. A worker forwards what the kernel
/// would forward in softirq context, ahead of every process; at the
/// processes' priority a load generator or a build on the same cores takes
/// its CPU and the ring overflows.
fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority with PRIO_PROCESS and a thread id changes only
    // that thread's nice value (Linux); no memory is passed.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Which packet backend the workers use (`uvs run --io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// AF_XDP where every interface takes the XDP program natively and none
    /// is a veth (`crate::io::xdp::auto`), else AF_PACKET.
    Auto,
    /// AF_XDP; fails to start if some interface cannot take the program
    /// natively.
    AfXdp,
    /// AF_XDP with the program in generic (skb) mode, by name: on a veth
    /// the peer keeps its GSO, so TCP super-packets reach uvs whole.
    AfXdpGeneric,
    /// AF_PACKET rings (with the nftables guard).
    #[default]
    AfPacket,
}

/// How the AF_PACKET backend transmits (`uvs run --tx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TxMode {
    /// A `PACKET_TX_RING` per interface ([`crate::io::txring`]); GSO
    /// packets, and frames that find their ring full, by `sendmmsg`.
    #[default]
    Ring,
    /// Every frame by `sendmmsg` ([`crate::io::tx`]).
    Sendmmsg,
}

/// The backend the engine runs on, for the start-up line and to know which
/// kernel guard applies.
#[derive(Debug)]
pub enum IoBackend {
    /// AF_PACKET rings; `why` says why AF_XDP was not used under `auto`.
    AfPacket { why: Option<String> },
    /// AF_XDP; the XDP program is the kernel guard, its maps the owned set.
    AfXdp(crate::io::xdp::XdpIo),
}

impl IoBackend {
    /// One line for the start-up message.
    pub fn describe(&self) -> String {
        match self {
            IoBackend::AfPacket { why: None } => "AF_PACKET".into(),
            IoBackend::AfPacket { why: Some(w) } => format!("AF_PACKET ({w})"),
            IoBackend::AfXdp(x) => format!("AF_XDP ({} XDP)", x.mode()),
        }
    }
}

const WAKE: Token = Token(usize::MAX);
/// The local-client TUN device's readiness (worker 0).
const LOCAL: Token = Token(usize::MAX - 1);
/// Frames taken from one RX source per round.
const BATCH: usize = 256;
/// Frames one TX queue holds before it sends (a round over every ring).
const TX_CAP: usize = 256;
/// Copy slots of a TX queue (fragments, segments, ICMP errors, parked).
const TX_COPY_SLOTS: usize = 64;
/// Frames of each TX ring (`--tx ring`), per worker and interface. The
/// receiver gives most frames back within the kick that sent them, so a
/// ring the size of a round's batch rarely fills, and its 512 KiB (at a
/// 1500 MTU) stay in cache where a larger one would be cycled through.
const TX_RING_FRAMES: usize = 256;
/// How often a worker reads its sources' kernel drop counts.
const KERNEL_DROPS_EVERY_MS: u64 = 100;

/// One RX ring per interface, each in its interface's fanout group.
fn open_af_packet(
    ifaces: &[Iface],
    group_base: u16,
    frames: usize,
    fanout: Fanout,
) -> Result<Vec<RxRing>, EngineError> {
    ifaces
        .iter()
        .enumerate()
        .map(|(k, ifc)| {
            RxRing::open(ifc.index, group_base.wrapping_add(k as u16), frames, fanout).map_err(
                |err| EngineError::Ring {
                    iface: ifc.name.clone(),
                    err,
                },
            )
        })
        .collect()
}

/// One worker's devices: an RX source per interface (in the order of the
/// engine's interfaces) and a TX sink.
#[derive(Debug)]
pub struct Backend<R, T> {
    pub rx: Vec<R>,
    pub tx: T,
}

/// One worker: its RX sources (one per interface), its TX sink, its egress
/// stage, and the poll it sleeps in.
struct Worker<R, T> {
    rx: Vec<R>,
    tx: T,
    egress: Egress,
    poll: Poll,
    /// Whether to poll empty sources again or sleep.
    idle: Idle,
    /// The local-client device (worker 0 only).
    local: Option<LocalRx>,
    /// Whether it may hold packets (edge-triggered readiness seen, and
    /// not read dry since).
    local_ready: bool,
}

/// A running engine; `stop()` (or drop) ends the workers.
#[derive(Debug)]
pub struct Engine {
    pub pipeline: Arc<Pipeline>,
    pub stats: Arc<Stats>,
    pub resolver: Arc<Resolver>,
    pub ifaces: Vec<Iface>,
    /// The backend in use (AF_XDP: the steering maps).
    pub io: IoBackend,
    /// Panics of its threads (each also stops the engine: [`crate::fault`]).
    pub faults: Arc<crate::fault::Faults>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    wakers: Arc<Vec<Waker>>,
    epoch: Instant,
}

impl Engine {
    /// Opens the backend `cfg.io` asks for — AF_XDP (the XDP program on
    /// every interface, a socket per worker and interface) or an AF_PACKET
    /// backend per worker (a ring per interface, a TX socket) — and starts
    /// the workers and the timer.
    pub fn start(
        pipeline: Arc<Pipeline>,
        ifaces: Vec<Iface>,
        cfg: &EngineConfig,
    ) -> Result<Engine, EngineError> {
        let names: Vec<(String, u32)> = ifaces.iter().map(|i| (i.name.clone(), i.index)).collect();
        let open = || {
            use crate::io::xdp::{AttachPolicy, XskConfig};
            // Generic mode keeps the peer's GSO, so it receives
            // super-packets: sizes for them.
            let (policy, sizes) = if cfg.io == IoMode::AfXdpGeneric {
                (AttachPolicy::Generic, XskConfig::for_super_packets())
            } else {
                (AttachPolicy::Native, XskConfig::default())
            };
            crate::io::xdp::XdpIo::open(
                &names,
                cfg.workers,
                policy,
                sizes,
                cfg.busy_poll_us,
                BATCH as u32,
            )
        };
        // AF_XDP when asked (an error stops the start) or under `auto` (an
        // error is the reason given for AF_PACKET).
        let xdp = match cfg.io {
            IoMode::AfPacket => Err(None),
            IoMode::AfXdp | IoMode::AfXdpGeneric => Ok(open()?),
            IoMode::Auto => match crate::io::xdp::auto::declines_on(&names) {
                Some(why) => Err(Some(why)),
                None => open().map_err(|e| Some(format!("AF_XDP unavailable: {e}"))),
            },
        };
        let why = match xdp {
            Ok((io, per_worker)) => {
                let backends = per_worker
                    .into_iter()
                    .map(|(rx, tx)| Backend { rx, tx })
                    .collect();
                let mut e =
                    Self::start_inner(pipeline, ifaces, backends, cfg.sched(), cfg.local.clone())?;
                e.io = IoBackend::AfXdp(io);
                return Ok(e);
            }
            Err(why) => why,
        };
        let group_base = (std::process::id() as u16).wrapping_mul(7);
        let ring_on: Vec<u32> = match cfg.tx {
            TxMode::Ring => ifaces.iter().map(|i| i.index).collect(),
            TxMode::Sendmmsg => Vec::new(),
        };
        let workers = cfg.workers.max(1);
        let fanout = Fanout::for_members(workers, cfg.fanout);
        let backends = (0..workers)
            .map(|_| {
                Ok(Backend {
                    rx: open_af_packet(&ifaces, group_base, cfg.ring_frames, fanout)?,
                    tx: RingTx::new(&ring_on, TX_RING_FRAMES, TX_CAP, TX_COPY_SLOTS).map_err(
                        |err| EngineError::Ring {
                            iface: "(TX ring)".into(),
                            err,
                        },
                    )?,
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let mut e = Self::start_inner(pipeline, ifaces, backends, cfg.sched(), cfg.local.clone())?;
        e.io = IoBackend::AfPacket { why };
        Ok(e)
    }

    /// Starts one worker per backend, whatever its [`RxSource`] and
    /// [`TxSink`] implementation, and the timer; workers busy-poll for
    /// `busy_poll_us` before sleeping (0: never).
    pub fn start_with<R, T>(
        pipeline: Arc<Pipeline>,
        ifaces: Vec<Iface>,
        backends: Vec<Backend<R, T>>,
        busy_poll_us: u32,
    ) -> Result<Engine, EngineError>
    where
        R: RxSource + Send + 'static,
        T: TxSink + Send + 'static,
    {
        let sched = Sched {
            busy_poll_us,
            idle_spin_us: 0,
            nice: 0,
            cpus: Vec::new(),
            policy: crate::io::place::Policy::Inherit,
        };
        Self::start_inner(pipeline, ifaces, backends, sched, None)
    }

    /// [`Engine::start_with`], with how the workers wait and their nice
    /// value, and the local-client device (and its interface index) if
    /// there is one.
    fn start_inner<R, T>(
        pipeline: Arc<Pipeline>,
        ifaces: Vec<Iface>,
        backends: Vec<Backend<R, T>>,
        Sched {
            busy_poll_us,
            idle_spin_us,
            nice,
            cpus,
            policy,
        }: Sched,
        local: Option<(crate::io::tun_local::LocalIo, u32)>,
    ) -> Result<Engine, EngineError>
    where
        R: RxSource + Send + 'static,
        T: TxSink + Send + 'static,
    {
        let n = backends.len().max(1);
        let stats = Arc::new(Stats::new(n));
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let mut workers = Vec::with_capacity(n);
        let mut wakers = Vec::with_capacity(n);
        for (id, b) in backends.into_iter().enumerate() {
            let poll = Poll::new()?;
            for (k, r) in b.rx.iter().enumerate() {
                poll.registry().register(
                    &mut SourceFd(&r.as_raw_fd()),
                    Token(k),
                    Interest::READABLE,
                )?;
            }
            wakers.push(Waker::new(poll.registry(), WAKE)?);
            let mut egress = Egress::new(id as u16, 0);
            let mut local_rx = None;
            if let Some((io, ifindex)) = &local {
                egress.set_local(LocalSink::new(io.clone(), id));
                if id == 0 {
                    let rx = LocalRx::new(io.clone(), *ifindex);
                    poll.registry().register(
                        &mut SourceFd(&rx.raw_fd()),
                        LOCAL,
                        Interest::READABLE,
                    )?;
                    local_rx = Some(rx);
                }
            }
            workers.push(Worker {
                rx: b.rx,
                tx: b.tx,
                egress,
                poll,
                idle: match (busy_poll_us, idle_spin_us) {
                    (0, 0) => Idle::off(),
                    (0, us) => Idle::adaptive(u64::from(us) * 1000),
                    (us, _) => Idle::fixed(u64::from(us) * 1000),
                },
                local: local_rx,
                local_ready: true,
            });
        }
        let wakers = Arc::new(wakers);
        let w2 = wakers.clone();
        // Opened here, on the caller's thread: its netlink socket belongs
        // to the director's namespace.
        let resolver = Arc::new(
            Resolver::new(ResolverConfig::default(), move || {
                for w in w2.iter() {
                    let _ = w.wake();
                }
            })
            .map_err(|e| EngineError::Resolver(e.to_string()))?,
        );
        let mut threads = Vec::new();
        let faults = Arc::new(crate::fault::Faults::default());
        for (id, w) in workers.into_iter().enumerate() {
            let (pl, st, rs, sp, f) = (
                pipeline.clone(),
                stats.clone(),
                resolver.clone(),
                stop.clone(),
                faults.clone(),
            );
            let name = format!("uvs-worker-{id}");
            let cpu = crate::io::place::cpu_of(&cpus, id);
            threads.push(
                std::thread::Builder::new()
                    .name(name.clone())
                    .spawn(move || {
                        if nice != 0 {
                            if let Err(e) = set_thread_nice(nice) {
                                log::warn!("{name}: --worker-nice {nice} not applied: {e}");
                            }
                        }
                        if let Some(c) = cpu {
                            if let Err(e) = crate::io::place::pin_current(c) {
                                log::warn!("{name}: --worker-cpus {c} not applied: {e}");
                            }
                        }
                        if let Err(e) = policy.apply() {
                            log::warn!("{name}: scheduling policy {policy:?} not applied: {e}");
                        }
                        f.guard(&name, &sp, || w.run(&pl, &st.workers[id], &rs, &sp, epoch));
                    })?,
            );
        }
        // Housekeeping: expire connections in small slices so no worker
        // waits on a shard for long.
        let (pl, sp, f) = (pipeline.clone(), stop.clone(), faults.clone());
        threads.push(
            std::thread::Builder::new()
                .name("uvs-timer".into())
                .spawn(move || {
                    f.guard("uvs-timer", &sp, || {
                        let mut defended = 0;
                        while !sp.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(100));
                            let now = epoch.elapsed().as_millis() as u64;
                            pl.conns.expire(now, 65_536);
                            // The flood defence, once a second (knobs.rs).
                            if now >= defended + 1000 {
                                defended = now;
                                crate::control::knobs::tick(&pl.conns, now);
                            }
                        }
                    });
                })?,
        );
        Ok(Engine {
            pipeline,
            stats,
            resolver,
            ifaces,
            io: IoBackend::AfPacket { why: None },
            faults,
            stop,
            threads,
            wakers,
            epoch,
        })
    }

    /// The engine's clock's zero (`now_ms` counts from it).
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Milliseconds on the engine's clock (what the connection table sees).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Stops and joins every thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.wakers.iter() {
            let _ = w.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<R: RxSource, T: TxSink> Worker<R, T> {
    fn run(
        mut self,
        pl: &Pipeline,
        st: &WorkerStats,
        rs: &Resolver,
        stop: &AtomicBool,
        epoch: Instant,
    ) {
        let mut events = Events::with_capacity(64);
        let mut drops_read = 0;
        let ns = || epoch.elapsed().as_nanos() as u64;
        while !stop.load(Ordering::Relaxed) {
            // One clock read per round that may find packets (measured: the
            // reads were about 4% of a worker's samples when each round,
            // empty or not, read it again).
            let mut t = ns();
            // Whether this pass spun instead of sleeping (a packet found
            // now saved a sleep: `worker.spin_caught`).
            let spun = self.idle.spin(t);
            if spun {
                // Polling again instead of a sleep and a wake-up. (No yield
                // between polls: measured with other work on the core, each
                // yield gave it a whole time slice and a serial
                // request/answer took several times longer.)
                if self.idle.is_fixed() {
                    for rx in &mut self.rx {
                        rx.busy_poll();
                    }
                }
                std::hint::spin_loop();
                self.local_ready = true;
            } else {
                // Edge-triggered readiness: drain every source fully each
                // round; the timeout bounds how late a stop or parked retry
                // is seen.
                let _ = self.poll.poll(&mut events, Some(Duration::from_millis(50)));
                add(&st.sleeps, 1);
                t = ns();
                self.idle.woke(t);
                // The TUN is read only once it says it has packets.
                self.local_ready |= events.iter().any(|e| e.token() == LOCAL);
            }
            let mut round = 0;
            loop {
                let now = t / 1_000_000;
                let mut cx = Round {
                    pl,
                    egress: &mut self.egress,
                    rs,
                    now,
                    st,
                };
                let mut got = cx.run(&mut self.rx, None, &mut self.tx);
                if let Some(l) = self.local.as_mut().filter(|_| self.local_ready) {
                    let mut q = self.tx.queue();
                    let egress = &mut self.egress;
                    let (n, drained) =
                        l.round(st, |f| handle_local(f, pl, egress, rs, now, st, &mut q));
                    got += n;
                    self.local_ready = !drained;
                }
                round += got;
                if got == 0 {
                    break;
                }
                t = ns();
            }
            if round > 0 {
                if spun {
                    add(&st.spin_caught, 1);
                }
                self.idle.busy();
            }
            let now = t / 1_000_000;
            if self.egress.parked() > 0 {
                self.egress.retry_parked(rs, now, st, &mut self.tx.queue());
            }
            let c = self.tx.take_counts();
            if c.sent > 0 {
                add(&st.tx, c.sent);
            }
            if c.dropped > 0 {
                add(&st.drops[DropReason::TxFailed as usize], c.dropped);
            }
            let fb = self.tx.take_fallbacks();
            if fb > 0 {
                add(&st.tx_ring_fallback, fb);
            }
            if now.saturating_sub(drops_read) >= KERNEL_DROPS_EVERY_MS {
                drops_read = now;
                for rx in &mut self.rx {
                    if let Ok(n) = rx.take_kernel_drops() {
                        add(&st.drops[DropReason::RxQueueFull as usize], n);
                    }
                }
            }
        }
    }
}

/// The batches of one round, one per RX source, chained on the stack (each
/// lives in its own frame of [`Round::run`]) so that a round holds all of
/// them without allocating.
struct Open<'c> {
    batch: &'c dyn RxBatch,
    prev: Option<&'c Open<'c>>,
}

/// What a round's frames are handled with.
struct Round<'a> {
    pl: &'a Pipeline,
    egress: &'a mut Egress,
    rs: &'a Resolver,
    now: u64,
    st: &'a WorkerStats,
}

impl Round<'_> {
    /// Opens a batch on every source of `rxs`, then one TX queue for all of
    /// them, handles every frame and lets the queue flush: one transmission
    /// (one `sendmmsg`, one TX kick) per round however many interfaces had
    /// traffic, where a queue per source cost one each. The queue is opened
    /// after the batches, so it drops (and transmits) before they give their
    /// frames back. Returns the frames taken.
    fn run<R: RxSource, T: TxSink>(
        &mut self,
        rxs: &mut [R],
        prev: Option<&Open<'_>>,
        tx: &mut T,
    ) -> usize {
        match rxs.split_first_mut() {
            Some((rx, rest)) => {
                let batch = rx.rx_batch(BATCH);
                let open = Open {
                    batch: &batch,
                    prev,
                };
                self.run(rest, Some(&open), tx)
            }
            None => {
                let mut q = tx.queue();
                prev.map_or(0, |last| self.drain(last, &mut q))
            }
        }
    }

    /// Handles the frames of `open`'s batch and of those before it, in the
    /// sources' order.
    fn drain<'b>(&mut self, open: &'b Open<'_>, q: &mut impl TxQueue<'b>) -> usize {
        let mut got = open.prev.map_or(0, |p| self.drain(p, q));
        while let Some(f) = open.batch.next_frame() {
            got += 1;
            handle(f, self.pl, self.egress, self.rs, self.now, self.st, q);
        }
        got
    }
}

/// One received frame: through the pipeline, then the egress stage.
fn handle<'b>(
    mut f: RxFrame<'b>,
    pl: &Pipeline,
    egress: &mut Egress,
    rs: &Resolver,
    now: u64,
    st: &WorkerStats,
    q: &mut impl TxQueue<'b>,
) {
    if let Some(skip) = f.skip {
        match skip {
            RxSkip::Truncated => st.drop(DropReason::Truncated),
            RxSkip::VlanAccelerated => add(&st.skipped_vlan, 1),
            RxSkip::NotForHost => add(&st.skipped_other_host, 1),
        }
        return;
    }
    add(&st.rx, 1);
    // `-i` reads it (tables/iface.rs): one store, no signature change.
    crate::datapath::tables::iface::set_rx(f.ifindex);
    let csum = f.vnet.csum_mode();
    if pl.trace.armed() {
        return crate::datapath::trace::handle(f, csum, pl, egress, rs, now, st, q);
    }
    let v = pl.process(f.frame_mut(), csum, now, st);
    egress.output(f.buf, f.at, f.vnet, v, rs, now, st, q);
}

/// One frame the director's own stack sent into the local-client device:
/// through the pipeline at LOCAL_OUT, then the egress stage. Nothing else
/// would deliver a packet no service took, so that is a drop.
fn handle_local<'b>(
    mut f: RxFrame<'b>,
    pl: &Pipeline,
    egress: &mut Egress,
    rs: &Resolver,
    now: u64,
    st: &WorkerStats,
    q: &mut impl TxQueue<'b>,
) {
    add(&st.rx, 1);
    crate::datapath::tables::iface::set_rx(0);
    let csum = f.vnet.csum_mode();
    if pl.trace.armed() {
        return crate::datapath::trace::handle_from(true, f, csum, pl, egress, rs, now, st, q);
    }
    let v = pl.process_local_out(f.frame_mut(), csum, now, st);
    if let crate::datapath::pipeline::Verdict::Pass = v {
        // The stack's own multicast on the device (IPv6 neighbour
        // discovery, MLD) is nobody's traffic; the rest was meant for a VIP.
        if !crate::io::tun_local::is_multicast(f.frame()) {
            st.drop(DropReason::LocalNotBalanced);
        }
        return;
    }
    egress.output(f.buf, f.at, f.vnet, v, rs, now, st, q);
}

#[cfg(test)]
mod tests {
    use super::default_workers;

    #[test]
    fn one_worker_up_to_two_cores_then_one_per_core() {
        assert_eq!(default_workers(1), 1);
        assert_eq!(default_workers(2), 1);
        assert_eq!(default_workers(3), 3);
        assert_eq!(default_workers(16), 16);
    }
}
