//! An AF_XDP socket: its UMEM (one anonymous mapping, registered once, cut
//! into equal frames), the UMEM's fill and completion rings and the socket's
//! RX and TX rings, all mmapped from the kernel (see `sys::ring`).
//!
//! The socket is two halves that can be used together ([`XskSocket`]) or
//! apart ([`XskSocket::split`]): [`XskRx`] owns the RX and fill rings and the
//! frames cycling through them, [`XskTx`] the TX and completion rings and
//! theirs. Frame ownership is tracked here, where the memory is touched: a
//! frame is in exactly one place — a half's free stack, the kernel (fill
//! ring, TX until its completion), or lent to the caller for the length of
//! one callback or RX batch, while the half is borrowed mutably. So a
//! `&mut [u8]` into the UMEM never overlaps memory the kernel or the other
//! half may write. Every address the kernel hands back is bounds-checked.
//!
//! No allocation per packet: the free stacks are sized once. `need_wakeup`
//! (bound with `XDP_USE_NEED_WAKEUP`) is honoured: a syscall is made only
//! when the kernel's ring flag asks for one — except that copy mode
//! transmits only from a syscall, so TX is kicked once per batch there.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::gather::Gather;
use super::ring::{getsockopt, setsockopt, setsockopt_at, Mmap, Ring};
use crate::io::device::TxCounts;
use crate::io::vnet::VnetHdr;

/// Sizes of a socket: `frames` UMEM frames of `frame_size` bytes (a power
/// of two from 2048 to the page size), and every ring `ring` entries (a
/// power of two; `frames` at least `ring`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskConfig {
    pub frames: u32,
    pub frame_size: u32,
    pub ring: u32,
}

impl Default for XskConfig {
    fn default() -> Self {
        // 2 × 1024 frames of 2 KiB (a 1500-byte MTU frame after the
        // kernel's 256-byte headroom): 4 MiB of UMEM per socket, enough for
        // a full fill ring and a full TX ring at once. Larger frames are
        // dropped by the kernel and counted (`rx_dropped`).
        XskConfig {
            frames: 2048,
            frame_size: 2048,
            ring: 1024,
        }
    }
}

impl XskConfig {
    /// Sizes for receiving GSO super-packets (`--io af_xdp_generic`): a
    /// 64 KiB packet takes 17 page-sized frames instead of 37 of 2 KiB, and
    /// 4 × 1024 ring slots hold about 240 of them, so a TCP window that
    /// arrives while uvs is busy is not dropped for want of fill-ring
    /// frames (`drop.xdp_rx_dropped`): 32 MiB of UMEM per socket.
    pub fn for_super_packets() -> Self {
        XskConfig {
            frames: 8192,
            frame_size: 4096,
            ring: 4096,
        }
    }
}

/// Smallest frame the kernel accepts; what [`XskTx`] copies at most.
pub const MIN_FRAME: usize = 2048;

/// What becomes of a frame handed to the [`XskSocket::recv`] callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxAction {
    /// Back to the free stack (consumed or dropped by the caller).
    Release,
    /// Sent on this socket's TX ring as it now is: the first `len` bytes of
    /// the (possibly rewritten) frame, from where the packet started.
    Transmit(usize),
}

/// The kernel's drop counters for the socket (`XDP_STATISTICS`) and uvs's
/// own for frames it could not queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskStats {
    /// Kernel: packets dropped for reasons other than a full ring.
    pub rx_dropped: u64,
    /// Kernel: RX descriptors it rejected as invalid.
    pub rx_invalid_descs: u64,
    /// Kernel: TX descriptors it rejected as invalid.
    pub tx_invalid_descs: u64,
    /// Kernel: packets dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Kernel: packets dropped because the fill ring was empty (also in
    /// `rx_dropped`).
    pub rx_fill_ring_empty: u64,
    /// Kernel: times the TX ring was found empty when it was kicked.
    pub tx_ring_empty: u64,
    /// uvs: frames not sent because the TX ring was full.
    pub tx_ring_full: u64,
    /// uvs: sends refused because no free frame was left.
    pub tx_no_frame: u64,
    /// uvs: transmits of length 0, beyond a frame, GSO super-packets (AF_XDP
    /// cannot segment) or for another interface.
    pub tx_bad_frame: u64,
    /// uvs: RX descriptors outside the UMEM (never expected).
    pub rx_bad_desc: u64,
    /// uvs: packets gathered from several descriptors (`XDP_USE_SG`).
    pub rx_multibuf: u64,
    /// uvs: multi-descriptor packets dropped, larger than 64 KiB.
    pub rx_too_large: u64,
}

impl XskStats {
    /// The receive drops as `uvs stats` names them, each packet once:
    /// `xdp_rx_ring_full` (uvs did not empty the RX ring in time),
    /// `xdp_fill_ring_empty` (no free frame to receive into),
    /// `xdp_rx_dropped` (the kernel's other drops: larger than a frame, a
    /// multi-buffer packet with too few fill-ring frames for all its parts, …;
    /// it counts fill-ring misses in `rx_dropped` too, so they are taken
    /// out), `xdp_rx_bad_desc` (uvs: a descriptor it would not touch), and
    /// `xdp_rx_too_large` (uvs: a multi-descriptor packet over 64 KiB),
    /// on transmit `xdp_tx_invalid` (descriptors the kernel refused).
    pub fn named_drops(&self) -> [(&'static str, u64); 6] {
        [
            ("xdp_rx_ring_full", self.rx_ring_full),
            ("xdp_fill_ring_empty", self.rx_fill_ring_empty),
            (
                "xdp_rx_dropped",
                self.rx_dropped.saturating_sub(self.rx_fill_ring_empty),
            ),
            ("xdp_rx_bad_desc", self.rx_bad_desc),
            ("xdp_rx_too_large", self.rx_too_large),
            ("xdp_tx_invalid", self.tx_invalid_descs),
        ]
    }

    /// Adds `o` to these counters.
    pub fn add(&mut self, o: &XskStats) {
        self.rx_dropped += o.rx_dropped;
        self.rx_invalid_descs += o.rx_invalid_descs;
        self.tx_invalid_descs += o.tx_invalid_descs;
        self.rx_ring_full += o.rx_ring_full;
        self.rx_fill_ring_empty += o.rx_fill_ring_empty;
        self.tx_ring_empty += o.tx_ring_empty;
        self.tx_ring_full += o.tx_ring_full;
        self.tx_no_frame += o.tx_no_frame;
        self.tx_bad_frame += o.tx_bad_frame;
        self.rx_bad_desc += o.rx_bad_desc;
        self.rx_multibuf += o.rx_multibuf;
        self.rx_too_large += o.rx_too_large;
    }

    /// Every packet these counters say was lost on receive.
    pub fn rx_lost(&self) -> u64 {
        // A packet lost to an empty fill ring is counted by the kernel in
        // both `rx_dropped` and `rx_fill_ring_empty`: only once here.
        self.rx_dropped
            + self.rx_invalid_descs
            + self.rx_ring_full
            + self.rx_bad_desc
            + self.rx_too_large
    }
}

/// Frame geometry of a UMEM.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geom {
    frame_size: u64,
    frames: u64,
}

impl Geom {
    /// For a kernel address and length: the frame's base and the bytes from
    /// `addr` to the frame's end, if the packet lies inside one frame.
    pub(super) fn check(&self, addr: u64, len: u32) -> Option<(u64, usize)> {
        let base = addr - addr % self.frame_size;
        let cap = (base + self.frame_size - addr) as usize;
        (base / self.frame_size < self.frames && len as usize <= cap).then_some((base, cap))
    }

    /// Index of the frame at `base` (checked by `check`).
    pub(super) fn index(&self, base: u64) -> usize {
        (base / self.frame_size) as usize
    }
}

// Where an RX-half frame is: with userspace, with the kernel (fill ring or
// RX in flight), or lent to the caller out of an RX batch.
pub(super) const AT_USER: u8 = 0;
pub(super) const AT_KERNEL: u8 = 1;
pub(super) const AT_CALLER: u8 = 2;

/// Receive half: the RX and fill rings.
#[derive(Debug)]
pub struct XskRx {
    pub(super) rx: Ring,
    pub(super) fill: Ring,
    pub(super) umem: Arc<Mmap>,
    pub(super) fd: Arc<OwnedFd>,
    pub(super) geom: Geom,
    pub(super) free: Vec<u64>,
    /// Per frame: `AT_USER`, `AT_KERNEL` or `AT_CALLER`. An RX descriptor
    /// is used only for a frame the kernel holds, so even a kernel that
    /// returned a frame twice could not make two `&mut` overlap.
    pub(super) state: Vec<Cell<u8>>,
    pub(super) ifindex: u32,
    pub(super) bad_desc: u64,
    /// `bad_desc` as last published for [`XskStatsHandle`] (by the worker,
    /// periodically: no shared write per packet).
    pub(super) published_bad: Arc<AtomicU64>,
    /// With `XDP_USE_SG`: where multi-descriptor packets are gathered.
    pub(super) gather: Option<Gather>,
}

/// Reads a socket's drop counters from another thread (`uvs stats`): the
/// kernel's `XDP_STATISTICS` and what the receiving worker published.
#[derive(Debug, Clone)]
pub struct XskStatsHandle {
    fd: Arc<OwnedFd>,
    bad_desc: Arc<AtomicU64>,
    gather: Option<Arc<[AtomicU64; 2]>>,
}

impl XskStatsHandle {
    /// The kernel's counters and uvs's receive-side one.
    pub fn read(&self) -> io::Result<XskStats> {
        let k = stats_of(self.fd.as_raw_fd())?;
        let g = |i: usize| {
            self.gather
                .as_ref()
                .map_or(0, |g| g[i].load(Ordering::Relaxed))
        };
        Ok(XskStats {
            rx_bad_desc: self.bad_desc.load(Ordering::Relaxed),
            rx_multibuf: g(0),
            rx_too_large: g(1),
            ..kernel_stats(&k)
        })
    }
}

/// Transmit half: the TX and completion rings.
#[derive(Debug)]
pub struct XskTx {
    pub(super) tx: Ring,
    pub(super) comp: Ring,
    pub(super) umem: Arc<Mmap>,
    pub(super) fd: Arc<OwnedFd>,
    pub(super) geom: Geom,
    pub(super) free: Vec<u64>,
    /// Per frame: on the TX ring (until its completion).
    pub(super) sending: Vec<bool>,
    pub(super) in_flight: u32,
    /// Descriptors written by `send`, not yet published.
    pub(super) pending: u32,
    pub(super) zerocopy: bool,
    pub(super) ifindex: u32,
    pub(super) ring_full: u64,
    pub(super) no_frame: u64,
    pub(super) bad_frame: u64,
    pub(super) counts: TxCounts,
}

/// An AF_XDP socket bound to one queue of one interface.
#[derive(Debug)]
pub struct XskSocket {
    rx: XskRx,
    tx: XskTx,
    /// Frames the TX half keeps back from the fill ring for `send`.
    tx_reserve: usize,
}

pub(super) fn stats_of(fd: RawFd) -> io::Result<libc::xdp_statistics> {
    getsockopt::<libc::xdp_statistics>(fd, libc::XDP_STATISTICS)
}

impl XskSocket {
    /// Opens a socket on queue `queue` of interface `ifindex` (of the
    /// calling thread's network namespace), copy or zero-copy as the driver
    /// allows, with `need_wakeup`.
    pub fn open(ifindex: u32, queue: u32, cfg: XskConfig) -> io::Result<XskSocket> {
        Self::open_with(ifindex, queue, cfg, None)
    }

    /// [`XskSocket::open`]; with `sg` = `Some(seg_mtu)`, bound with
    /// `XDP_USE_SG` (Linux 6.6): a packet larger than a frame arrives in
    /// several descriptors, all but the last flagged `XDP_PKT_CONTD`, and
    /// the RX batch gathers it into one buffer (a TCP super-packet cut for
    /// `seg_mtu`: [`crate::io::xdp::multibuf`]) instead of the kernel
    /// dropping it.
    pub fn open_with(
        ifindex: u32,
        queue: u32,
        cfg: XskConfig,
        sg: Option<usize>,
    ) -> io::Result<XskSocket> {
        let pow2 = |v: u32| v.is_power_of_two();
        if !pow2(cfg.ring)
            || !pow2(cfg.frame_size)
            || (cfg.frame_size as usize) < MIN_FRAME
            || cfg.frames < cfg.ring
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("AF_XDP sizes {cfg:?}: ring and frame size must be powers of two, frames ≥ 2048 bytes, at least one frame per ring slot"),
            ));
        }
        // SAFETY: plain socket(2); the result is checked and owned below.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nothing else owns.
        let fd = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
        let len = cfg.frames as usize * cfg.frame_size as usize;
        let umem = Arc::new(Mmap::new(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )?);
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr.as_ptr() as u64,
            len: len as u64,
            chunk_size: cfg.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(raw, libc::XDP_UMEM_REG, &reg)?;
        for opt in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            setsockopt(raw, opt, &cfg.ring)?;
        }
        let off = getsockopt::<libc::xdp_mmap_offsets>(raw, libc::XDP_MMAP_OFFSETS)?;
        let rx = Ring::map(raw, libc::XDP_PGOFF_RX_RING, &off.rx, cfg.ring, 16)?;
        let tx = Ring::map(raw, libc::XDP_PGOFF_TX_RING, &off.tx, cfg.ring, 16)?;
        let fill = Ring::map(
            raw,
            libc::XDP_UMEM_PGOFF_FILL_RING as i64,
            &off.fr,
            cfg.ring,
            8,
        )?;
        let comp = Ring::map(
            raw,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as i64,
            &off.cr,
            cfg.ring,
            8,
        )?;
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: libc::XDP_USE_NEED_WAKEUP | if sg.is_some() { libc::XDP_USE_SG } else { 0 },
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `sa` is a live sockaddr_xdp of the length passed.
        let rc = unsafe {
            libc::bind(
                raw,
                (&sa as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let zerocopy = getsockopt::<libc::xdp_options>(raw, libc::XDP_OPTIONS)
            .map(|o| o.flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
            .unwrap_or(false);
        let geom = Geom {
            frame_size: u64::from(cfg.frame_size),
            frames: u64::from(cfg.frames),
        };
        let mut all: Vec<u64> = (0..geom.frames)
            .rev()
            .map(|i| i * geom.frame_size)
            .collect();
        // The RX half starts with one ring's worth (they go to the fill
        // ring at once); the rest are the TX half's.
        let mut rx_free = Vec::with_capacity(all.len());
        rx_free.extend(all.drain(all.len() - cfg.ring as usize..));
        let mut tx_free = Vec::with_capacity(geom.frames as usize);
        tx_free.append(&mut all);
        let mut s = XskSocket {
            rx: XskRx {
                rx,
                fill,
                umem: Arc::clone(&umem),
                fd: Arc::clone(&fd),
                geom,
                free: rx_free,
                state: (0..geom.frames).map(|_| Cell::new(AT_USER)).collect(),
                ifindex,
                bad_desc: 0,
                published_bad: Arc::new(AtomicU64::new(0)),
                gather: sg.map(Gather::new).transpose()?,
            },
            tx: XskTx {
                tx,
                comp,
                umem,
                fd,
                geom,
                free: tx_free,
                sending: vec![false; geom.frames as usize],
                in_flight: 0,
                pending: 0,
                zerocopy,
                ifindex,
                ring_full: 0,
                no_frame: 0,
                bad_frame: 0,
                counts: TxCounts::default(),
            },
            tx_reserve: (cfg.frames - cfg.ring) as usize,
        };
        s.rx.refill();
        Ok(s)
    }

    /// The halves, for use apart (as the engine's RX source and TX sink).
    pub fn split(self) -> (XskRx, XskTx) {
        (self.rx, self.tx)
    }

    /// The socket's descriptor: for the XSKMAP and for poll (readable = RX
    /// descriptors waiting).
    pub fn raw_fd(&self) -> RawFd {
        self.rx.fd.as_raw_fd()
    }

    /// Busy polling (`uvs run --busy-poll`): `SO_BUSY_POLL` of `usecs`,
    /// `SO_PREFER_BUSY_POLL`, and `SO_BUSY_POLL_BUDGET` of `budget` packets,
    /// so a non-blocking receive call ([`XskRx::busy_poll`]) runs the
    /// device's NAPI processing on the calling core instead of waiting for
    /// its interrupt or softirq (Linux 5.11 or later).
    pub fn set_busy_poll(&self, usecs: u32, budget: u32) -> io::Result<()> {
        let fd = self.raw_fd();
        let (usecs, budget) = (usecs as libc::c_int, budget as libc::c_int);
        setsockopt_at(fd, libc::SOL_SOCKET, libc::SO_BUSY_POLL, &usecs)?;
        setsockopt_at(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PREFER_BUSY_POLL,
            &(1 as libc::c_int),
        )?;
        setsockopt_at(fd, libc::SOL_SOCKET, libc::SO_BUSY_POLL_BUDGET, &budget)
    }

    /// Whether the driver runs the socket zero-copy (else the kernel copies).
    pub fn zerocopy(&self) -> bool {
        self.tx.zerocopy
    }

    /// Gives free frames to the kernel's fill ring (frames the TX half has
    /// beyond its reserve too), waking the kernel if it asked for it.
    pub fn refill(&mut self) {
        let surplus = self.tx.free.len().saturating_sub(self.tx_reserve);
        let take = self.tx.free.len() - surplus;
        self.rx.free.extend(self.tx.free.drain(take..));
        self.rx.refill();
    }

    /// Receives up to `max` packets; `f` sees each frame's bytes (mutable,
    /// to rewrite in place) and says what becomes of it. Transmitted frames
    /// are queued on the TX ring in one batch; [`XskSocket::flush`] sends
    /// them. Refills the fill ring. Returns how many were received.
    pub fn recv(&mut self, max: u32, mut f: impl FnMut(&mut [u8]) -> RxAction) -> u32 {
        let n = self.rx.rx.ready(max);
        self.tx.submit_pending();
        let room = self.tx.tx.free(n);
        let mut queued = 0;
        for i in 0..n {
            let (addr, len) = self.rx.rx.get_desc(i);
            let Some((base, cap)) = self.rx.geom.check(addr, len) else {
                // Not a frame of ours: never touch it (and lose it).
                self.rx.bad_desc += 1;
                continue;
            };
            let fi = self.rx.geom.index(base);
            if self.rx.state[fi].get() != AT_KERNEL {
                // Not given to the kernel, or returned twice: never touch.
                self.rx.bad_desc += 1;
                continue;
            }
            self.rx.state[fi].set(AT_USER);
            // SAFETY: [addr, addr+cap) lies inside one UMEM frame (checked);
            // the kernel held it (state) and gave it back on the RX ring, and
            // will not write it until it is refilled or transmitted; no other
            // reference to it exists while `&mut self` is held.
            let frame = unsafe {
                std::slice::from_raw_parts_mut(self.rx.umem.ptr.as_ptr().add(addr as usize), cap)
            };
            match f(&mut frame[..]) {
                RxAction::Transmit(out) if out > 0 && out <= cap && queued < room => {
                    self.tx.sending[fi] = true;
                    self.tx.tx.put_desc(queued, addr, out as u32);
                    queued += 1;
                }
                RxAction::Transmit(out) => {
                    if out == 0 || out > cap {
                        self.tx.bad_frame += 1;
                    } else {
                        self.tx.ring_full += 1;
                    }
                    self.rx.free.push(base);
                }
                RxAction::Release => self.rx.free.push(base),
            }
        }
        if n > 0 {
            self.rx.rx.release(n);
        }
        if queued > 0 {
            self.tx.tx.submit(queued);
            self.tx.in_flight += queued;
            self.tx.counts.sent += u64::from(queued);
        }
        self.refill();
        n
    }

    /// Sends one packet written by `f` into a free frame (see
    /// [`XskTx::send`]).
    pub fn send(&mut self, f: impl FnOnce(&mut [u8]) -> usize) -> bool {
        self.tx.send(f)
    }

    /// Kicks the kernel to send what is queued and reclaims completed frames
    /// (see [`XskTx::flush`]).
    pub fn flush(&mut self) {
        self.tx.flush();
    }

    /// Frames submitted for TX and not yet completed.
    pub fn in_flight(&self) -> u32 {
        self.tx.in_flight
    }

    /// The kernel's counters and uvs's own.
    pub fn stats(&self) -> io::Result<XskStats> {
        let k = stats_of(self.rx.fd.as_raw_fd())?;
        Ok(XskStats {
            rx_bad_desc: self.rx.bad_desc,
            tx_ring_full: self.tx.ring_full,
            tx_no_frame: self.tx.no_frame,
            tx_bad_frame: self.tx.bad_frame,
            ..kernel_stats(&k)
        })
    }
}

pub(super) fn kernel_stats(k: &libc::xdp_statistics) -> XskStats {
    XskStats {
        rx_dropped: k.rx_dropped,
        rx_invalid_descs: k.rx_invalid_descs,
        tx_invalid_descs: k.tx_invalid_descs,
        rx_ring_full: k.rx_ring_full,
        rx_fill_ring_empty: k.rx_fill_ring_empty_descs,
        tx_ring_empty: k.tx_ring_empty_descs,
        ..XskStats::default()
    }
}

impl XskRx {
    /// A handle for reading this socket's drop counters elsewhere.
    pub fn stats_handle(&self) -> XskStatsHandle {
        XskStatsHandle {
            fd: Arc::clone(&self.fd),
            bad_desc: Arc::clone(&self.published_bad),
            gather: self.gather.as_ref().map(|g| Arc::clone(&g.published)),
        }
    }

    /// Makes `bad_desc` visible to [`XskStatsHandle::read`].
    pub(super) fn publish(&self) {
        self.published_bad.store(self.bad_desc, Ordering::Relaxed);
        if let Some(g) = &self.gather {
            g.publish();
        }
    }

    /// Gives every free frame to the fill ring (as many as fit), waking the
    /// kernel if it asked for it.
    pub(super) fn refill(&mut self) {
        let n = self.fill.free(self.free.len() as u32);
        for i in 0..n {
            // `n` ≤ free.len(): the pops cannot fail.
            let addr = self.free.pop().unwrap_or_default();
            self.state[self.geom.index(addr)].set(AT_KERNEL);
            self.fill.put_addr(i, addr);
        }
        if n > 0 {
            self.fill.submit(n);
        }
        if self.fill.needs_wakeup() {
            self.wake();
        }
    }

    /// One non-blocking zero-length receive call: wakes the kernel's RX
    /// processing, and with busy polling set runs the device's NAPI poll
    /// here (`--busy-poll`: called while a worker spins instead of sleeping).
    pub fn busy_poll(&self) {
        self.wake();
    }

    fn wake(&self) {
        // SAFETY: a zero-length recvfrom with NULL buffers only wakes
        // the kernel's RX processing.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
    }
}

impl XskTx {
    /// Sends one packet written by `f` into a free frame (the whole frame
    /// is offered; `f` returns the length, 0 to cancel). Written to the TX
    /// ring; [`XskTx::flush`] publishes the batch and kicks. False (and counted) when no frame or
    /// no TX slot was free.
    pub fn send(&mut self, f: impl FnOnce(&mut [u8]) -> usize) -> bool {
        let want = self.pending + 1;
        if self.tx.free(want) < want || self.free.is_empty() {
            self.complete();
        }
        if self.tx.free(want) < want {
            self.ring_full += 1;
            return false;
        }
        let Some(base) = self.free.pop() else {
            self.no_frame += 1;
            return false;
        };
        let cap = self.geom.frame_size as usize;
        // SAFETY: `base` came from this half's free stack, so it is the
        // start of one UMEM frame that this half owns; nothing else refers
        // to it while `&mut self` is held.
        let frame = unsafe {
            std::slice::from_raw_parts_mut(self.umem.ptr.as_ptr().add(base as usize), cap)
        };
        let len = f(&mut frame[..]).min(cap);
        if len == 0 {
            self.free.push(base);
            return false;
        }
        // Published with the rest of the batch in `flush`.
        self.sending[self.geom.index(base)] = true;
        self.tx.put_desc(self.pending, base, len as u32);
        self.pending += 1;
        self.in_flight += 1;
        self.counts.sent += 1;
        true
    }

    /// Publishes the descriptors `send` wrote (one index store per batch).
    fn submit_pending(&mut self) {
        if self.pending > 0 {
            self.tx.submit(self.pending);
            self.pending = 0;
        }
    }

    /// Reclaims frames whose transmission completed.
    pub fn complete(&mut self) -> u32 {
        let n = self.comp.ready(self.comp.size());
        for i in 0..n {
            let addr = self.comp.get_addr(i);
            if let Some((base, _)) = self.geom.check(addr, 0) {
                // Only frames that were on the TX ring come back free.
                let sending = &mut self.sending[self.geom.index(base)];
                if std::mem::take(sending) {
                    self.free.push(base);
                }
            }
        }
        if n > 0 {
            self.comp.release(n);
            self.in_flight = self.in_flight.saturating_sub(n);
        }
        n
    }

    /// Kicks the kernel to send what is queued (one syscall per batch, none
    /// in zero-copy mode unless the driver asks through `need_wakeup`), and
    /// reclaims completed frames.
    pub fn flush(&mut self) {
        self.submit_pending();
        if self.zerocopy {
            // The driver says through the flag when it needs a kick.
            if self.tx.unconsumed() > 0 && self.tx.needs_wakeup() {
                self.kick();
            }
        } else {
            // Copy mode transmits only from a syscall, a budget (32) of
            // descriptors per call: kick until the kernel has taken the
            // batch, or stops taking it (EBUSY/ENOBUFS: the device queue
            // is full; the ring keeps the frames for the next flush).
            let mut left = self.tx.unconsumed();
            for _ in 0..=self.tx.size() / 16 {
                if left == 0 || !self.kick() {
                    break;
                }
                let now = self.tx.unconsumed();
                if now >= left {
                    break;
                }
                left = now;
            }
        }
        self.complete();
    }

    /// One zero-length `sendto`; false when the kernel refused for a
    /// reason other than its per-call budget (EAGAIN).
    fn kick(&self) -> bool {
        // SAFETY: a zero-length sendto with NULL buffers only starts
        // transmission of the TX ring.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        rc >= 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN)
    }

    /// The interface this half transmits on.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Copies `frame` into a free frame and queues it, finishing a pending
    /// L4 checksum in software (AF_XDP has no checksum offload here). A
    /// frame for another interface, a GSO super-packet (AF_XDP cannot
    /// segment) or one larger than a frame is dropped; every drop is
    /// counted in [`crate::io::TxSink::take_counts`].
    pub fn queue_copy(&mut self, frame: &[u8], vnet: &VnetHdr, ifindex: u32) {
        if ifindex != self.ifindex || vnet.is_gso() || frame.len() > self.geom.frame_size as usize {
            self.bad_frame += 1;
            self.counts.dropped += 1;
            return;
        }
        let sent = self.send(|buf| {
            buf[..frame.len()].copy_from_slice(frame);
            if vnet.needs_csum() {
                super::super::csum::finish_csum(
                    &mut buf[..frame.len()],
                    vnet.csum_start.into(),
                    vnet.csum_offset.into(),
                );
            }
            frame.len()
        });
        if !sent {
            self.counts.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_rejects_addresses_outside_a_frame() {
        let g = Geom {
            frame_size: 4096,
            frames: 4,
        };
        assert_eq!(g.check(256, 1500), Some((0, 4096 - 256)));
        assert_eq!(g.check(4096 + 100, 3996), Some((4096, 3996)));
        assert_eq!(
            g.check(4096 + 100, 3997),
            None,
            "crosses into the next frame"
        );
        assert_eq!(g.check(4 * 4096, 60), None, "beyond the UMEM");
    }
}
