//! AF_XDP as the engine's backend: the program attached to every interface,
//! one socket per (worker, interface) on the worker's RX queue, and the
//! steering maps the control plane keeps in step with the configuration.
//!
//! AF_XDP binds a socket to one RX queue. Every RX queue of every interface
//! gets a socket, so no owned packet lands on a queue without one; worker
//! `k` serves queues `k`, `k + n`, … of each interface and transmits on the
//! socket of its first. There are as many workers as the interface with the
//! fewest RX queues has queues, at most the number asked for: a veth has
//! one queue, so one worker.
//!
//! The program is frags-aware and the sockets are bound with `XDP_USE_SG`
//! where the kernel has them (5.18, 6.6), so a packet larger than a frame
//! reaches uvs whole; each worker also has an AF_PACKET TX socket for what
//! AF_XDP cannot send (GSO super-packets: [`XskTxSet`]).
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::local::LocalWatcher;
use super::port::XskTxSet;
use super::steer::{AttachMode, Attachment, Steering, XdpError, DEFAULT_MAX_ENTRIES};
use super::sys::xsk::{XskConfig, XskRx, XskSocket, XskStats, XskStatsHandle};
use crate::io::tx::TxBatch;

/// What a worker gets: its RX halves (one per interface) and TX set.
pub type WorkerIo = (Vec<XskRx>, XskTxSet);

/// Where the program may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachPolicy {
    /// Natively only (`--io af_xdp`, `auto`).
    Native,
    /// Natively, else generic as the fallback.
    NativeOrGeneric,
    /// Generic (skb) mode, asked for by name (`--io af_xdp_generic`): on a
    /// veth the only mode that leaves the peer's GSO on, so that a local
    /// sender's TCP super-packets reach uvs whole.
    Generic,
}

/// The attached program and its maps; dropping it detaches everywhere.
#[derive(Debug)]
pub struct XdpIo {
    // Detach before the maps go.
    attachments: Vec<Attachment>,
    /// Keeps the `local` map in step with the director's local routes.
    local: LocalWatcher,
    /// The sockets' counters (boxed: the engine's backend enum stays
    /// small).
    counters: Box<SocketCounters>,
    steering: Steering,
}

/// What `report` reads of the sockets.
#[derive(Debug)]
struct SocketCounters {
    /// Every socket's drop counters.
    sockets: Vec<XskStatsHandle>,
    /// Per worker: frames sent through its packet socket.
    via_packet: Vec<Arc<AtomicU64>>,
}

/// IP MTU of interface `name` (from sysfs; 1500 when unreadable).
fn mtu(name: &str) -> usize {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1500)
}

/// Per-worker packet socket batches: small, only super-packets use them.
const PACKET_TX_CAP: usize = 64;
const PACKET_TX_COPY_SLOTS: usize = 16;

/// RX queues of interface `name` (from sysfs; 1 when unreadable).
fn rx_queues(name: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

impl XdpIo {
    /// Attaches to `ifaces` (name, index) as `policy` says and opens the
    /// sockets of up to `workers` workers;
    /// with `busy_poll_us` > 0 each socket is set to busy-poll
    /// ([`XskSocket::set_busy_poll`], a budget of `busy_poll_budget`).
    pub fn open(
        ifaces: &[(String, u32)],
        workers: usize,
        policy: AttachPolicy,
        cfg: XskConfig,
        busy_poll_us: u32,
        busy_poll_budget: u32,
    ) -> Result<(XdpIo, Vec<WorkerIo>), XdpError> {
        let steering = Steering::new(DEFAULT_MAX_ENTRIES)?;
        // Filled before any program is attached, so the director's own
        // connections never see a moment of steering.
        let local = LocalWatcher::start(steering.local_map()?).map_err(|source| XdpError::Sys {
            what: "reading the director's local routes",
            source,
        })?;
        let queues: Vec<u32> = ifaces.iter().map(|(n, _)| rx_queues(n)).collect();
        // Super-packets are cut for the smallest MTU uvs forwards over (no
        // egress interface is known when a packet is received).
        let seg_mtu = ifaces.iter().map(|(n, _)| mtu(n)).min().unwrap_or(1500);
        let n = (workers.max(1) as u32).min(queues.iter().copied().min().unwrap_or(1)) as usize;
        let mut attachments = Vec::with_capacity(ifaces.len());
        let mut per_worker: Vec<WorkerIo> =
            (0..n).map(|_| (Vec::new(), XskTxSet::default())).collect();
        let mut txs: Vec<Vec<_>> = (0..n).map(|_| Vec::new()).collect();
        let mut sockets = Vec::new();
        for ((name, index), q) in ifaces.iter().zip(&queues) {
            let on = |e: XdpError| XdpError::On {
                name: name.clone(),
                source: Box::new(e),
            };
            let prog = steering.load(*q).map_err(on)?;
            let att = match policy {
                AttachPolicy::Generic => prog.attach_generic(*index),
                p => prog.attach(*index, p == AttachPolicy::NativeOrGeneric),
            }
            .map_err(on)?;
            // Every queue gets a socket (an owned packet on a queue without
            // one would be dropped); worker k serves queues k, k+n, …
            for j in 0..*q {
                let k = j as usize % n;
                // SG where the kernel knows it (6.6), else one frame each.
                let xsk = XskSocket::open_with(*index, j, cfg, Some(seg_mtu))
                    .or_else(|_| XskSocket::open(*index, j, cfg))
                    .map_err(|source| XdpError::Sys {
                        what: "opening an AF_XDP socket",
                        source,
                    })
                    .map_err(on)?;
                if busy_poll_us > 0 {
                    xsk.set_busy_poll(busy_poll_us, busy_poll_budget)
                        .map_err(|source| XdpError::Sys {
                            what: "setting busy polling on an AF_XDP socket (--busy-poll; Linux 5.11+)",
                            source,
                        })
                        .map_err(on)?;
                }
                att.program().set_socket(j, &xsk).map_err(on)?;
                let (rx, tx) = xsk.split();
                sockets.push(rx.stats_handle());
                per_worker[k].0.push(rx);
                // One TX half per interface and worker is enough.
                if j < n as u32 {
                    txs[k].push(tx);
                }
            }
            attachments.push(att);
        }
        let mut via_packet = Vec::with_capacity(n);
        for (w, t) in per_worker.iter_mut().zip(txs) {
            w.1 = match TxBatch::new(PACKET_TX_CAP, PACKET_TX_COPY_SLOTS) {
                Ok(p) => XskTxSet::with_packet_socket(t, p),
                Err(e) => {
                    log::warn!("AF_XDP: no packet socket for GSO super-packets ({e}): they are dropped, counted");
                    XskTxSet::new(t)
                }
            };
            via_packet.push(w.1.packet_socket_sent());
        }
        Ok((
            XdpIo {
                attachments,
                local,
                counters: Box::new(SocketCounters {
                    sockets,
                    via_packet,
                }),
                steering,
            },
            per_worker,
        ))
    }

    /// How the program runs: native unless some interface fell back.
    pub fn mode(&self) -> AttachMode {
        if self
            .attachments
            .iter()
            .all(|a| a.mode() == AttachMode::Native)
        {
            AttachMode::Native
        } else {
            AttachMode::Generic
        }
    }

    /// The program's counters as `uvs stats` lines: `xdp.steered`,
    /// `xdp.to_kernel` (not uvs's), `xdp.pass_local` (from a NAT real
    /// server to the director itself: the kernel's), and
    /// `drop.xdp_no_socket` (owned packets on an RX queue without a uvs
    /// socket, dropped so the kernel cannot answer them); then the local
    /// prefixes known (`xdp.local_prefixes`, `xdp.local_errors`,
    /// `xdp.local_resyncs`); then the sockets' own counters summed, drops
    /// by name ([`XskStats::named_drops`]: `drop.xdp_rx_ring_full`, …) and
    /// four that lose no packet (`xdp.rx_invalid_descs`: fill-ring entries
    /// the kernel refused; `xdp.tx_ring_empty`: kicks that found nothing
    /// to send; `xdp.rx_multibuf`: packets gathered from several
    /// descriptors; `xdp.tx_packet_socket`: frames — GSO super-packets —
    /// sent through the workers' packet sockets instead of AF_XDP).
    pub fn report(&self) -> String {
        let mut sum = XskStats::default();
        let mut unread = 0;
        for s in &self.counters.sockets {
            match s.read() {
                Ok(st) => sum.add(&st),
                Err(_) => unread += 1,
            }
        }
        let mut sockets = String::new();
        for (name, v) in sum.named_drops() {
            sockets += &format!("drop.{name} {v}\n");
        }
        let via_packet: u64 = self
            .counters
            .via_packet
            .iter()
            .map(|v| v.load(Ordering::Relaxed))
            .sum();
        sockets += &format!(
            "xdp.rx_invalid_descs {}\nxdp.tx_ring_empty {}\nxdp.rx_multibuf {}\nxdp.tx_packet_socket {via_packet}\n",
            sum.rx_invalid_descs, sum.tx_ring_empty, sum.rx_multibuf
        );
        if unread > 0 {
            sockets += &format!("# XDP_STATISTICS unreadable on {unread} socket(s)\n");
        }
        format!("{}{sockets}", self.program_report())
    }

    fn program_report(&self) -> String {
        let l = self.local.stats();
        let local = format!(
            "xdp.local_prefixes {}\nxdp.local_errors {}\nxdp.local_resyncs {}\n",
            l.prefixes.load(Ordering::Relaxed),
            l.errors.load(Ordering::Relaxed),
            l.resyncs.load(Ordering::Relaxed)
        );
        match self.steering.counters() {
            Ok(c) => format!(
                "xdp.steered {}\nxdp.to_kernel {}\nxdp.pass_local {}\ndrop.xdp_no_socket {}\n{local}",
                c.steered, c.passed, c.pass_local, c.no_socket
            ),
            Err(e) => format!("# xdp counters unreadable: {e}\n{local}"),
        }
    }

    /// The steering maps, for incremental `add_*`/`remove_*` calls.
    pub fn steering(&mut self) -> &mut Steering {
        &mut self.steering
    }
}
