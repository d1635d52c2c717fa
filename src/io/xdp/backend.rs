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
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;

use super::local::LocalWatcher;
use super::port::XskTxSet;
use super::steer::{AttachMode, Attachment, Steering, XdpError, DEFAULT_MAX_ENTRIES};
use super::sys::xsk::{XskConfig, XskRx, XskSocket, XskStats, XskStatsHandle};

/// What a worker gets: its RX halves (one per interface) and TX set.
pub type WorkerIo = (Vec<XskRx>, XskTxSet);

/// The attached program and its maps; dropping it detaches everywhere.
#[derive(Debug)]
pub struct XdpIo {
    // Detach before the maps go.
    attachments: Vec<Attachment>,
    /// Keeps the `local` map in step with the director's local routes.
    local: LocalWatcher,
    /// Every socket's drop counters.
    sockets: Vec<XskStatsHandle>,
    steering: Steering,
}

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
    /// Attaches to `ifaces` (name, index) — natively, or generic when
    /// `allow_generic` — and opens the sockets of up to `workers` workers;
    /// with `busy_poll_us` > 0 each socket is set to busy-poll
    /// ([`XskSocket::set_busy_poll`], a budget of `busy_poll_budget`).
    pub fn open(
        ifaces: &[(String, u32)],
        workers: usize,
        allow_generic: bool,
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
            let att = steering.attach(*index, *q, allow_generic).map_err(on)?;
            // Every queue gets a socket (an owned packet on a queue without
            // one would be dropped); worker k serves queues k, k+n, …
            for j in 0..*q {
                let k = j as usize % n;
                let xsk = XskSocket::open(*index, j, cfg)
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
        for (w, t) in per_worker.iter_mut().zip(txs) {
            w.1 = XskTxSet::new(t);
        }
        Ok((
            XdpIo {
                attachments,
                local,
                sockets,
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
    /// two that lose no packet (`xdp.rx_invalid_descs`: fill-ring entries
    /// the kernel refused; `xdp.tx_ring_empty`: kicks that found nothing
    /// to send).
    pub fn report(&self) -> String {
        let mut sum = XskStats::default();
        let mut unread = 0;
        for s in &self.sockets {
            match s.read() {
                Ok(st) => sum.add(&st),
                Err(_) => unread += 1,
            }
        }
        let mut sockets = String::new();
        for (name, v) in sum.named_drops() {
            sockets += &format!("drop.{name} {v}\n");
        }
        sockets += &format!(
            "xdp.rx_invalid_descs {}\nxdp.tx_ring_empty {}\n",
            sum.rx_invalid_descs, sum.tx_ring_empty
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
