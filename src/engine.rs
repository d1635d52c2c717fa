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
use uvs_fwd::gso;
use uvs_fwd::xmit::icmp::{self, IcmpKind};
use uvs_fwd::xmit::tun::{self, TunCsum as FwdTunCsum, TunKind, TunParams};
use uvs_fwd::CsumMode;
use uvs_sched::{TunConfig, TunCsum as SchedTunCsum, TunType};

use crate::datapath::pipeline::{Pipeline, Verdict};
use crate::datapath::stats::{add, DropReason, Stats, WorkerStats};
use crate::io::ring::HEADROOM;
use crate::io::{RxBatch, RxFrame, RxRing, RxSkip, RxSource, TxBatch, TxQueue, TxSink, VnetHdr};
use crate::sys::neigh::{Lookup, NextHop, Resolver, ResolverConfig};

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

/// A packet waiting for its next hop's MAC, with its headroom, so it can be
/// tunnelled once resolved.
struct Parked {
    buf: Vec<u8>,
    len: usize,
    verdict: Verdict,
    next_hop: IpAddr,
    since: Instant,
}

/// Size of a parking buffer: headroom, virtio-net header, a jumbo frame.
const PARK_BUF: usize = HEADROOM + VnetHdr::LEN + PARK_FRAME_MAX;

/// A worker's output side: the TX batch, parked packets, and scratch space
/// for the ICMP errors it answers with. All allocated up front.
struct Out {
    parked: Vec<Parked>,
    spare: Vec<Vec<u8>>,
    icmp: Vec<u8>,
    /// Scratch for one TCP segment (with headroom) when a GSO packet must be
    /// segmented before tunnelling.
    seg: Vec<u8>,
    /// Outer IPv4 IDs of tunnelled packets and ICMP errors.
    ident: u16,
    /// Limits the ICMP errors this worker sends.
    icmp_limit: TokenBucket,
}

/// Like the kernel's global ICMP limit (`icmp_msgs_per_sec` 1000,
/// `icmp_msgs_burst` 50), per worker: a flood at a dead service or an
/// oversized-packet stream cannot make uvs answer every packet.
#[derive(Debug)]
struct TokenBucket {
    tokens: u32,
    last: Instant,
}

impl TokenBucket {
    const PER_SEC: u32 = 1000;
    const BURST: u32 = 50;

    fn new() -> TokenBucket {
        TokenBucket {
            tokens: Self::BURST,
            last: Instant::now(),
        }
    }

    /// Takes a token if one is left (refilled by elapsed time).
    fn take(&mut self, now: Instant) -> bool {
        let gained =
            now.duration_since(self.last).as_millis() as u64 * u64::from(Self::PER_SEC) / 1000;
        if gained > 0 {
            self.tokens = (u64::from(self.tokens) + gained).min(u64::from(Self::BURST)) as u32;
            self.last = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

struct Worker {
    id: usize,
    rings: Vec<RxRing>,
    poll: Poll,
    tx: TxBatch,
    out: Out,
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
            let tx = TxBatch::new(BATCH * 2, 64)?;
            let out = Out {
                parked: Vec::with_capacity(PARK_MAX),
                spare: (0..PARK_MAX).map(|_| vec![0u8; PARK_BUF]).collect(),
                icmp: vec![0u8; HEADROOM + VnetHdr::LEN + icmp::MAX_ERROR_FRAME],
                seg: vec![0u8; HEADROOM + PARK_FRAME_MAX],
                ident: id as u16,
                icmp_limit: TokenBucket::new(),
            };
            workers.push(Worker {
                id,
                rings,
                poll,
                tx,
                out,
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
                for ring in &mut self.rings {
                    let batch = ring.rx_batch(BATCH);
                    let mut q = self.tx.queue();
                    while let Some(f) = batch.next_frame() {
                        got += 1;
                        self.out.handle(f, pl, st, rs, now, &mut q);
                    }
                }
                if got == 0 {
                    break;
                }
            }
            if !self.out.parked.is_empty() {
                self.out.retry_parked(st, rs, &mut self.tx.queue());
            }
            count_tx(&mut self.tx, st);
        }
    }
}

fn tun_params(tun: TunConfig, src: IpAddr, dst: IpAddr) -> TunParams {
    let kind = match tun.kind {
        TunType::Ipip => TunKind::Ipip,
        TunType::Gue => TunKind::Gue,
        TunType::Gre => TunKind::Gre,
    };
    TunParams {
        port: tun.port,
        csum: match tun.csum {
            SchedTunCsum::NoCsum => FwdTunCsum::NoCsum,
            SchedTunCsum::Csum => FwdTunCsum::Csum,
            SchedTunCsum::RemCsum => FwdTunCsum::RemCsum,
        },
        ..TunParams::new(kind, src, dst)
    }
}

/// Why a packet could not be tunnelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TunFail {
    TooBig { mtu: u32, send_icmp: bool },
    Ttl,
    Rewrite,
}

/// Encapsulates the frame at `buf[fs..]` (with free headroom before it)
/// toward `params.dst` and queues it: outer headers, a fresh virtio-net
/// header (the inner checksum may still be pending), MACs toward `nh`.
fn tunnel_out<'b>(
    tx: &mut impl TxQueue<'b>,
    buf: &mut [u8],
    fs: usize,
    params: &TunParams,
    nh: &NextHop,
    ident: &mut u16,
    csum: CsumMode,
) -> Result<(), TunFail> {
    let p = uvs_fwd::parse(&buf[fs..]).map_err(|_| TunFail::Rewrite)?;
    tun::check_mtu(&buf[fs..], &p, params, nh.mtu, csum).map_err(|nf| TunFail::TooBig {
        mtu: nf.mtu,
        send_icmp: nf.send_icmp,
    })?;
    *ident = ident.wrapping_add(1);
    let e = tun::encap(buf, fs, &p, params, *ident, csum).map_err(|e| match e {
        uvs_fwd::XmitError::TtlExceeded => TunFail::Ttl,
        _ => TunFail::Rewrite,
    })?;
    let vnet = e.pending.map_or(VnetHdr::default(), |pc| {
        VnetHdr::pending_csum(pc.start, pc.offset)
    });
    uvs_fwd::set_macs(&mut buf[e.start..e.start + e.len], nh.src_mac, nh.dst_mac)
        .map_err(|_| TunFail::Rewrite)?;
    tx.copy(&buf[e.start..e.start + e.len], &vnet, nh.ifindex);
    Ok(())
}

/// Copies a processed frame (`buf`: headroom, virtio-net header, frame) into
/// a spare buffer to wait for its next hop's MAC.
fn park(
    spare: &mut Vec<Vec<u8>>,
    parked: &mut Vec<Parked>,
    buf: &[u8],
    verdict: Verdict,
    next_hop: IpAddr,
    st: &WorkerStats,
) {
    match spare.pop() {
        Some(mut b) if buf.len() <= b.len() => {
            b[..buf.len()].copy_from_slice(buf);
            parked.push(Parked {
                len: buf.len(),
                buf: b,
                verdict,
                next_hop,
                since: Instant::now(),
            });
        }
        other => {
            spare.extend(other);
            st.drop(DropReason::ParkFull);
        }
    }
}

fn csum_mode(vnet: &[u8]) -> CsumMode {
    VnetHdr::read_from(vnet).unwrap_or_default().csum_mode()
}

/// Queues `buf[at..]` (an Ethernet frame after its virtio-net header) as a
/// copy.
fn copy_out<'b>(q: &mut impl TxQueue<'b>, buf: &[u8], at: usize, ifindex: u32) {
    let vnet = VnetHdr::read_from(&buf[at - VnetHdr::LEN..]).unwrap_or_default();
    q.copy(&buf[at..], &vnet, ifindex);
}

/// Moves the TX socket's totals into the worker's counters.
fn count_tx(tx: &mut TxBatch, st: &WorkerStats) {
    let c = tx.take_counts();
    add(&st.tx, c.sent);
    if c.dropped > 0 {
        add(&st.drops[DropReason::TxFailed as usize], c.dropped);
    }
}

impl Out {
    /// One received frame: through the pipeline, then out, parked, or
    /// answered with an ICMP error.
    fn handle<'b>(
        &mut self,
        mut f: RxFrame<'b>,
        pl: &Pipeline,
        st: &WorkerStats,
        rs: &Resolver,
        now: u64,
        q: &mut impl TxQueue<'b>,
    ) {
        if let Some(skip) = f.skip {
            if skip == RxSkip::Truncated {
                st.drop(DropReason::Truncated);
            }
            return;
        }
        add(&st.rx, 1);
        let csum = f.vnet.csum_mode();
        let v = pl.process(f.frame_mut(), csum, now, st);
        let next_hop = match v {
            Verdict::Pass => return,
            Verdict::Drop(DropReason::NoDestination) => {
                return self.answer(f.frame_mut(), IcmpKind::PortUnreachable, st, rs, q)
            }
            Verdict::Drop(DropReason::TtlExceeded) => {
                return self.answer(f.frame_mut(), IcmpKind::TimeExceeded, st, rs, q)
            }
            Verdict::Drop(_) => return,
            Verdict::Xmit { next_hop, .. } | Verdict::Tunnel { next_hop, .. } => next_hop,
        };
        let head = f.at - VnetHdr::LEN;
        match rs.lookup(next_hop) {
            Lookup::Ready(nh) => {
                // The common case, in place: a NAT/DR packet that fits.
                if matches!(v, Verdict::Xmit { .. })
                    && (f.vnet.is_gso() || f.buf.len() - f.at <= nh.mtu as usize + 14)
                {
                    if uvs_fwd::set_macs(f.frame_mut(), nh.src_mac, nh.dst_mac).is_ok() {
                        q.forward(f.buf, f.at, &f.vnet, nh.ifindex);
                    }
                    return;
                }
                self.emit(f.buf, head, v, &nh, st, rs, q)
            }
            Lookup::Pending => park(&mut self.spare, &mut self.parked, f.buf, v, next_hop, st),
            // A rewritten packet for this host itself, or no way there.
            Lookup::Local | Lookup::Unreachable => st.drop(DropReason::NoRoute),
        }
    }

    /// Puts a processed frame (`buf[head..]`: virtio-net header + frame) on
    /// the wire toward `nh`, encapsulating it first for `Tunnel`.
    #[allow(clippy::too_many_arguments)]
    fn emit<'b>(
        &mut self,
        buf: &mut [u8],
        head: usize,
        v: Verdict,
        nh: &NextHop,
        st: &WorkerStats,
        rs: &Resolver,
        q: &mut impl TxQueue<'b>,
    ) {
        let fs = head + VnetHdr::LEN;
        match v {
            Verdict::Xmit { dnat_from, .. } => {
                // Cheap test first: only a frame longer than the MTU plus an
                // Ethernet header can be too big (GSO packets are segmented
                // by the kernel on the way out, to the MTU).
                let gso = VnetHdr::read_from(&buf[head..])
                    .unwrap_or_default()
                    .is_gso();
                if !gso && buf.len() - fs > nh.mtu as usize + 14 {
                    return self.emit_oversized(buf, head, nh, dnat_from, st, rs, q);
                }
                if uvs_fwd::set_macs(&mut buf[fs..], nh.src_mac, nh.dst_mac).is_ok() {
                    copy_out(q, buf, fs, nh.ifindex);
                }
            }
            Verdict::Tunnel { next_hop, tun } => {
                let Some(src) = nh.src_ip else {
                    return st.drop(DropReason::NoRoute);
                };
                let params = tun_params(tun, src, next_hop);
                let vnet = VnetHdr::read_from(&buf[head..]).unwrap_or_default();
                let (csum, gso) = (vnet.csum_mode(), vnet.is_gso());
                let r = if gso {
                    // No virtio GSO type exists for ipip/GRE/GUE: segment
                    // the super-packet and tunnel each segment.
                    let gso_size = vnet.gso_size;
                    let Ok(p) = uvs_fwd::parse(&buf[fs..]) else {
                        return st.drop(DropReason::Rewrite);
                    };
                    let Out { seg, ident, .. } = self;
                    let mut first_err = Ok(());
                    let done =
                        gso::segment_tcp(&buf[fs..], &p, gso_size, seg, HEADROOM, |s, len| {
                            if first_err.is_ok() {
                                first_err = tunnel_out(
                                    q,
                                    &mut s[..HEADROOM + len],
                                    HEADROOM,
                                    &params,
                                    nh,
                                    ident,
                                    CsumMode::Full,
                                );
                            }
                        });
                    done.map_err(|_| TunFail::Rewrite).and(first_err)
                } else {
                    tunnel_out(q, buf, fs, &params, nh, &mut self.ident, csum)
                };
                match r {
                    Ok(()) => {}
                    Err(TunFail::TooBig { mtu, send_icmp }) => {
                        st.drop(DropReason::TooBig);
                        if send_icmp {
                            self.answer(&buf[fs..], IcmpKind::TooBig { mtu }, st, rs, q);
                        }
                    }
                    Err(TunFail::Ttl) => {
                        st.drop(DropReason::TtlExceeded);
                        self.answer(&buf[fs..], IcmpKind::TimeExceeded, st, rs, q);
                    }
                    Err(TunFail::Rewrite) => st.drop(DropReason::Rewrite),
                }
            }
            Verdict::Pass | Verdict::Drop(_) => {}
        }
    }

    /// A NAT/DR packet that may exceed the path MTU (`ensure_mtu_is_adequate`):
    /// with DF (or IPv6) it is dropped and the sender gets fragmentation
    /// needed / packet too big; an IPv4 packet without DF is fragmented.
    #[allow(clippy::too_many_arguments)]
    fn emit_oversized<'b>(
        &mut self,
        buf: &mut [u8],
        head: usize,
        nh: &NextHop,
        dnat_from: Option<(IpAddr, u16)>,
        st: &WorkerStats,
        rs: &Resolver,
        q: &mut impl TxQueue<'b>,
    ) {
        let fs = head + VnetHdr::LEN;
        let Ok(p) = uvs_fwd::parse(&buf[fs..]) else {
            return st.drop(DropReason::Rewrite);
        };
        if let Err(nf) = uvs_fwd::fits(&buf[fs..], &p, nh.mtu) {
            st.drop(DropReason::TooBig);
            if !nf.send_icmp {
                return;
            }
            // The kernel checks the MTU before NAT: quote the packet as the
            // client sent it (the scratch copy is free again afterwards).
            match dnat_from {
                Some((vaddr, vport)) => {
                    let n = (buf.len() - fs).min(self.seg.len());
                    let mut orig = std::mem::take(&mut self.seg);
                    orig[..n].copy_from_slice(&buf[fs..fs + n]);
                    let undone =
                        uvs_fwd::dnat(&mut orig[..n], &p, vaddr, vport, csum_mode(&buf[head..fs]));
                    if undone.is_ok() {
                        self.answer(&orig[..n], IcmpKind::TooBig { mtu: nf.mtu }, st, rs, q);
                    }
                    self.seg = orig;
                }
                None => self.answer(&buf[fs..], IcmpKind::TooBig { mtu: nf.mtu }, st, rs, q),
            }
            return;
        }
        if p.ip_len <= nh.mtu as usize {
            // It fits after all (VLAN tags made the frame long).
            if uvs_fwd::set_macs(&mut buf[fs..], nh.src_mac, nh.dst_mac).is_ok() {
                copy_out(q, buf, fs, nh.ifindex);
            }
            return;
        }
        // Fragments cannot leave their checksum to offload: complete it.
        if csum_mode(&buf[head..fs]) == CsumMode::Partial
            && uvs_fwd::fill_l4_checksum(&mut buf[fs..], &p).is_err()
        {
            return st.drop(DropReason::Rewrite);
        }
        let Out { seg, .. } = self;
        let r = uvs_fwd::frag::fragment_ipv4(
            &buf[fs..],
            &p,
            nh.mtu as usize,
            seg,
            HEADROOM,
            |f, at| {
                if uvs_fwd::set_macs(&mut f[at..], nh.src_mac, nh.dst_mac).is_ok() {
                    q.copy(&f[at..], &VnetHdr::default(), nh.ifindex);
                }
            },
        );
        if r.is_err() {
            st.drop(DropReason::Rewrite);
        }
    }

    /// Answers the sender of `frame` with an ICMP error from the address it
    /// wrote to (a VIP: local to the director, as the kernel's `icmp_send`
    /// picks). Sent at once, so the scratch buffer is free again; skipped
    /// when the sender's next hop is not known yet.
    fn answer<'b>(
        &mut self,
        frame: &[u8],
        kind: IcmpKind,
        st: &WorkerStats,
        rs: &Resolver,
        q: &mut impl TxQueue<'b>,
    ) {
        if !self.icmp_limit.take(Instant::now()) {
            return add(&st.icmp_limited, 1);
        }
        let Ok(p) = uvs_fwd::parse(frame) else { return };
        self.ident = self.ident.wrapping_add(1);
        // Laid out like a ring frame: headroom, virtio-net header, frame.
        let fs = HEADROOM + VnetHdr::LEN;
        let Ok(n) =
            icmp::build_icmp_error(&mut self.icmp[fs..], frame, &p, kind, p.dst, self.ident)
        else {
            return;
        };
        self.icmp[HEADROOM..fs].fill(0);
        add(&st.icmp_sent, 1);
        let v = Verdict::Xmit {
            next_hop: p.src,
            dnat_from: None,
        };
        match rs.lookup(p.src) {
            Lookup::Ready(nh) => {
                let mut icmp = std::mem::take(&mut self.icmp);
                self.emit(&mut icmp[..fs + n], HEADROOM, v, &nh, st, rs, q);
                self.icmp = icmp;
            }
            // The sender's MAC is not known yet (its first packet): wait
            // for it like any other packet.
            Lookup::Pending => park(
                &mut self.spare,
                &mut self.parked,
                &self.icmp[..fs + n],
                v,
                p.src,
                st,
            ),
            Lookup::Local | Lookup::Unreachable => st.drop(DropReason::NoRoute),
        }
    }

    fn retry_parked<'b>(&mut self, st: &WorkerStats, rs: &Resolver, q: &mut impl TxQueue<'b>) {
        let mut i = 0;
        while i < self.parked.len() {
            let p = &self.parked[i];
            let lookup = rs.lookup(p.next_hop);
            match lookup {
                Lookup::Pending if p.since.elapsed() < PARK_TIMEOUT => {
                    i += 1;
                    continue;
                }
                Lookup::Ready(nh) => {
                    let mut p = self.parked.swap_remove(i);
                    self.emit(&mut p.buf[..p.len], HEADROOM, p.verdict, &nh, st, rs, q);
                    self.spare.push(p.buf);
                }
                _ => {
                    st.drop(DropReason::NoRoute);
                    let p = self.parked.swap_remove(i);
                    self.spare.push(p.buf);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket {
            tokens: TokenBucket::BURST,
            last: t0,
        };
        assert_eq!((0..100).filter(|_| b.take(t0)).count(), 50, "the burst");
        assert!(!b.take(t0));
        // 10 ms later: 10 more at 1000/s.
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!((0..100).filter(|_| b.take(t1)).count(), 10);
        // Long idle: back to the burst, not more.
        let t2 = t1 + Duration::from_secs(5);
        assert_eq!((0..100).filter(|_| b.take(t2)).count(), 50);
    }
}
