//! The engine: interfaces, worker threads, the resolver, the kernel guard and
//! the housekeeping timer, started and stopped as one.
//!
//! Each worker owns one RX ring per attached interface (all rings of an
//! interface in one fanout group) and one batched TX socket, and sleeps in
//! mio's poll when its rings are empty. Frames are processed in place in the
//! ring and transmitted from there. Packets whose next hop's MAC is not yet
//! known wait in a small per-worker queue until the resolver thread wakes the
//! worker.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use uvs_fwd::CsumMode;

use crate::io::{self, RxRing, TxBatch, VNET_F_NEEDS_CSUM};
use crate::neigh::{Lookup, Resolver, ResolverConfig};
use crate::pipeline::{Pipeline, Verdict};
use crate::stats::{add, DropReason, Stats, WorkerStats};

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
    #[error("starting the neighbour resolver: {0}")]
    Resolver(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The up, non-loopback Ethernet interfaces of this namespace, or the ones
/// named in `only` (each must exist and be up).
pub fn interfaces(only: &[String]) -> Result<Vec<Iface>, EngineError> {
    let all: Vec<Iface> = pnet_datalink::interfaces()
        .into_iter()
        .filter(|i| i.is_up() && !i.is_loopback() && i.mac.is_some_and(|m| m.octets() != [0; 6]))
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

/// Engine settings from the command line.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub workers: usize,
    pub ring_frames: usize,
}

const WAKE: Token = Token(usize::MAX);
const BATCH: usize = 64;
const PARK_MAX: usize = 256;
const PARK_FRAME_MAX: usize = 9216;
const PARK_TIMEOUT: Duration = Duration::from_secs(3);

/// A packet waiting for its next hop's MAC.
struct Parked {
    buf: Vec<u8>,
    len: usize,
    next_hop: IpAddr,
    since: Instant,
}

struct Worker {
    id: usize,
    rings: Vec<RxRing>,
    tx: TxBatch,
    poll: Poll,
    parked: Vec<Parked>,
    /// Spare buffers for parking, allocated up front.
    spare: Vec<Vec<u8>>,
}

/// A running engine; `stop()` (or drop) ends the workers.
#[derive(Debug)]
pub struct Engine {
    pub pipeline: Arc<Pipeline>,
    pub stats: Arc<Stats>,
    pub resolver: Arc<Resolver>,
    pub ifaces: Vec<Iface>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    wakers: Arc<Vec<Waker>>,
    epoch: Instant,
}

impl Engine {
    /// Opens every ring and starts the workers and the timer.
    pub fn start(
        pipeline: Arc<Pipeline>,
        ifaces: Vec<Iface>,
        cfg: &EngineConfig,
    ) -> Result<Engine, EngineError> {
        let n = cfg.workers.max(1);
        let stats = Arc::new(Stats::new(n));
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::with_capacity(n);
        let mut wakers = Vec::with_capacity(n);
        let group_base = (std::process::id() as u16).wrapping_mul(7);
        for id in 0..n {
            let poll = Poll::new()?;
            let mut rings = Vec::new();
            for (k, ifc) in ifaces.iter().enumerate() {
                let ring = RxRing::open(
                    ifc.index,
                    group_base.wrapping_add(k as u16),
                    cfg.ring_frames,
                )
                .map_err(|err| EngineError::Ring {
                    iface: ifc.name.clone(),
                    err,
                })?;
                poll.registry().register(
                    &mut SourceFd(&ring.as_raw_fd()),
                    Token(k),
                    Interest::READABLE,
                )?;
                rings.push(ring);
            }
            wakers.push(Waker::new(poll.registry(), WAKE)?);
            let spare = (0..PARK_MAX).map(|_| vec![0u8; PARK_FRAME_MAX]).collect();
            workers.push(Worker {
                id,
                rings,
                tx: TxBatch::new(BATCH * 2)?,
                poll,
                parked: Vec::with_capacity(PARK_MAX),
                spare,
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
        let epoch = Instant::now();
        let mut threads = Vec::new();
        for w in workers {
            let (pl, st, rs, sp) = (
                pipeline.clone(),
                stats.clone(),
                resolver.clone(),
                stop.clone(),
            );
            let id = w.id;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("uvs-worker-{id}"))
                    .spawn(move || w.run(&pl, &st.workers[id], &rs, &sp, epoch))?,
            );
        }
        // Housekeeping: expire connections in small slices so no worker
        // waits on a shard for long.
        let (pl, sp) = (pipeline.clone(), stop.clone());
        threads.push(
            std::thread::Builder::new()
                .name("uvs-timer".into())
                .spawn(move || {
                    while !sp.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                        let now = epoch.elapsed().as_millis() as u64;
                        pl.conns.expire(now, 65_536);
                    }
                })?,
        );
        Ok(Engine {
            pipeline,
            stats,
            resolver,
            ifaces,
            stop,
            threads,
            wakers,
            epoch,
        })
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

impl Worker {
    fn run(
        mut self,
        pl: &Pipeline,
        st: &WorkerStats,
        rs: &Resolver,
        stop: &AtomicBool,
        epoch: Instant,
    ) {
        let mut events = Events::with_capacity(64);
        while !stop.load(Ordering::Relaxed) {
            // Edge-triggered readiness: drain every ring fully each round;
            // the timeout bounds how late a stop or parked retry is seen.
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(50)));
            loop {
                let now = epoch.elapsed().as_millis() as u64;
                let mut got = 0;
                for r in 0..self.rings.len() {
                    got += self.drain_ring(r, pl, st, rs, now);
                }
                if got == 0 {
                    break;
                }
            }
            if !self.parked.is_empty() {
                self.retry_parked(st, rs);
            }
        }
    }

    fn drain_ring(
        &mut self,
        r: usize,
        pl: &Pipeline,
        st: &WorkerStats,
        rs: &Resolver,
        now: u64,
    ) -> usize {
        let Worker {
            rings,
            tx,
            parked,
            spare,
            ..
        } = self;
        let (sent0, dropped0) = (tx.sent, tx.dropped);
        let mut ctx = (tx, parked, spare);
        let n = rings[r].drain(
            BATCH,
            &mut ctx,
            |(tx, parked, spare), mut f| {
                if let Some(skip) = f.skip {
                    if skip == io::ring::RxSkip::Truncated {
                        st.drop(DropReason::Truncated);
                    }
                    return;
                }
                add(&st.rx, 1);
                let csum = if io::vnet_flags(f.vnet()) & VNET_F_NEEDS_CSUM != 0 {
                    CsumMode::Partial
                } else {
                    CsumMode::Full
                };
                let Verdict::Xmit { next_hop } = pl.process(f.frame_mut(), csum, now, st) else {
                    return;
                };
                match rs.lookup(next_hop) {
                    Lookup::Ready(nh) => {
                        if uvs_fwd::set_macs(f.frame_mut(), nh.src_mac, nh.dst_mac).is_ok() {
                            tx.push(f.buf, nh.ifindex);
                        }
                    }
                    Lookup::Pending => match spare.pop() {
                        Some(mut buf) if f.buf.len() <= buf.len() => {
                            buf[..f.buf.len()].copy_from_slice(f.buf);
                            parked.push(Parked {
                                len: f.buf.len(),
                                buf,
                                next_hop,
                                since: Instant::now(),
                            });
                        }
                        other => {
                            if let Some(b) = other {
                                spare.push(b);
                            }
                            st.drop(DropReason::ParkFull);
                        }
                    },
                    // A rewritten packet for this host itself, or no way there.
                    Lookup::Local | Lookup::Unreachable => st.drop(DropReason::NoRoute),
                }
            },
            |(tx, _, _)| tx.flush(),
        );
        let tx = &ctx.0;
        add(&st.tx, tx.sent - sent0);
        if tx.dropped > dropped0 {
            add(
                &st.drops[DropReason::TxFailed as usize],
                tx.dropped - dropped0,
            );
        }
        n
    }

    fn retry_parked(&mut self, st: &WorkerStats, rs: &Resolver) {
        let (sent0, dropped0) = (self.tx.sent, self.tx.dropped);
        let mut i = 0;
        while i < self.parked.len() {
            let p = &mut self.parked[i];
            let done = match rs.lookup(p.next_hop) {
                Lookup::Ready(nh) => {
                    let buf = &mut p.buf[..p.len];
                    if uvs_fwd::set_macs(&mut buf[io::VNET_HDR_LEN..], nh.src_mac, nh.dst_mac)
                        .is_ok()
                    {
                        self.tx.push(buf, nh.ifindex);
                    }
                    true
                }
                Lookup::Pending if p.since.elapsed() < PARK_TIMEOUT => false,
                _ => {
                    st.drop(DropReason::NoRoute);
                    true
                }
            };
            if done {
                // The buffer must stay untouched until flush: flush now,
                // before it is reused.
                self.tx.flush();
                let p = self.parked.swap_remove(i);
                self.spare.push(p.buf);
            } else {
                i += 1;
            }
        }
        add(&st.tx, self.tx.sent - sent0);
        if self.tx.dropped > dropped0 {
            add(
                &st.drops[DropReason::TxFailed as usize],
                self.tx.dropped - dropped0,
            );
        }
    }
}
