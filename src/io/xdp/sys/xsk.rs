//! An AF_XDP socket: its UMEM (one anonymous mapping, registered once, cut
//! into equal frames), the fill and completion rings of the UMEM, and the RX
//! and TX rings of the socket, all mmapped from the kernel.
//!
//! Frame ownership is tracked here, where the memory is touched: a frame is
//! in exactly one place at a time — the free stack (userspace), the kernel
//! (fill ring, RX in flight, TX until its completion), or lent for the
//! length of one [`XskSocket::recv`] or [`XskSocket::send`] callback, while
//! `&mut self` is held. So a `&mut [u8]` into the UMEM never overlaps memory
//! the kernel may write. Every address the kernel hands back is bounds-
//! checked against the UMEM before use.
//!
//! Rings are single-producer/single-consumer with the kernel on the other
//! side: the producer index is published with Release after the entries are
//! written, and read with Acquire before entries are read (the kernel does
//! the same on its side). Entries are moved in batches; one index store per
//! batch. `need_wakeup` (bound with `XDP_USE_NEED_WAKEUP`) is honoured: a
//! syscall is made only when the kernel's ring flag asks for it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Sizes of a socket: `frames` UMEM frames of `frame_size` bytes (a power
/// of two from 2048 to the page size), and every ring `ring` entries (a
/// power of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskConfig {
    pub frames: u32,
    pub frame_size: u32,
    pub ring: u32,
}

impl Default for XskConfig {
    fn default() -> Self {
        // 2 × 2048 frames of 4 KiB: 16 MiB of UMEM per socket, enough for a
        // full fill ring and a full TX ring at once.
        XskConfig {
            frames: 4096,
            frame_size: 4096,
            ring: 2048,
        }
    }
}

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
    /// Kernel: packets dropped because the fill ring was empty.
    pub rx_fill_ring_empty: u64,
    /// Kernel: times the TX ring was found empty when it was kicked.
    pub tx_ring_empty: u64,
    /// uvs: frames not sent because the TX ring was full.
    pub tx_ring_full: u64,
    /// uvs: sends refused because no free frame was left.
    pub tx_no_frame: u64,
    /// uvs: transmits asked with a length of 0 or beyond the frame.
    pub tx_bad_len: u64,
    /// uvs: RX descriptors outside the UMEM (never expected).
    pub rx_bad_desc: u64,
}

/// An owned memory mapping, unmapped on drop.
#[derive(Debug)]
struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value alone; moving the
// owner to another thread moves all access with it.
unsafe impl Send for Mmap {}

impl Mmap {
    fn new(len: usize, prot: i32, flags: i32, fd: RawFd, offset: i64) -> io::Result<Mmap> {
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL); it
        // aliases no Rust object.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, offset) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Mmap { ptr, len })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value owns; no reference
        // into it outlives `self` (they all borrow `self`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// One mmapped ring: producer, consumer and flags words and `size` entries
/// of `elem` bytes.
#[derive(Debug)]
struct Ring {
    map: Mmap,
    producer: usize,
    consumer: usize,
    flags: usize,
    desc: usize,
    elem: usize,
    mask: u32,
    cached_prod: u32,
    cached_cons: u32,
}

impl Ring {
    fn map(
        fd: RawFd,
        pgoff: i64,
        off: &libc::xdp_ring_offset,
        size: u32,
        elem: usize,
    ) -> io::Result<Ring> {
        let words = [off.producer, off.consumer, off.flags, off.desc];
        if words.iter().any(|w| !w.is_multiple_of(4)) || !off.desc.is_multiple_of(8) {
            return Err(io::Error::other("AF_XDP ring offsets misaligned"));
        }
        let len = off.desc as usize + size as usize * elem;
        if words[..3].iter().any(|&w| w as usize + 4 > len) {
            return Err(io::Error::other("AF_XDP ring offsets out of range"));
        }
        let map = Mmap::new(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            pgoff,
        )?;
        let mut r = Ring {
            map,
            producer: off.producer as usize,
            consumer: off.consumer as usize,
            flags: off.flags as usize,
            desc: off.desc as usize,
            elem,
            mask: size - 1,
            cached_prod: 0,
            cached_cons: 0,
        };
        r.cached_prod = r.word(r.producer).load(Ordering::Acquire);
        r.cached_cons = r.word(r.consumer).load(Ordering::Acquire);
        Ok(r)
    }

    fn word(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `off` is one of the kernel's word offsets, checked at
        // `map` to lie inside the mapping and be 4-aligned (the mapping is
        // page-aligned); the kernel updates these words concurrently, which
        // is why they are only ever accessed atomically.
        unsafe { &*self.map.ptr.as_ptr().add(off).cast::<AtomicU32>() }
    }

    fn size(&self) -> u32 {
        self.mask + 1
    }

    fn slot(&self, idx: u32) -> *mut u8 {
        // In bounds: desc + (idx & mask) * elem < desc + size * elem = len.
        self.map
            .ptr
            .as_ptr()
            .wrapping_add(self.desc + (idx & self.mask) as usize * self.elem)
    }

    /// Free producer slots, up to `want`.
    fn free(&mut self, want: u32) -> u32 {
        let mut free = self.size() - self.cached_prod.wrapping_sub(self.cached_cons);
        if free < want {
            self.cached_cons = self.word(self.consumer).load(Ordering::Acquire);
            free = self.size() - self.cached_prod.wrapping_sub(self.cached_cons);
        }
        free.min(want)
    }

    /// Entries ready for the consumer, up to `want`.
    fn ready(&mut self, want: u32) -> u32 {
        let mut ready = self.cached_prod.wrapping_sub(self.cached_cons);
        if ready < want {
            self.cached_prod = self.word(self.producer).load(Ordering::Acquire);
            ready = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        ready.min(want)
    }

    /// Writes a u64 entry (fill ring) `i` slots past the producer.
    fn put_addr(&mut self, i: u32, addr: u64) {
        debug_assert_eq!(self.elem, 8);
        // SAFETY: an in-bounds, 8-aligned slot (see `slot`) that the kernel
        // does not read before the producer index passes it (`submit`).
        unsafe {
            self.slot(self.cached_prod.wrapping_add(i))
                .cast::<u64>()
                .write(addr)
        }
    }

    /// Writes a descriptor (TX ring) `i` slots past the producer.
    fn put_desc(&mut self, i: u32, addr: u64, len: u32) {
        debug_assert_eq!(self.elem, 16);
        let d = libc::xdp_desc {
            addr,
            len,
            options: 0,
        };
        // SAFETY: as in `put_addr`; `xdp_desc` is 16 bytes, 8-aligned.
        unsafe {
            self.slot(self.cached_prod.wrapping_add(i))
                .cast::<libc::xdp_desc>()
                .write(d)
        }
    }

    fn submit(&mut self, n: u32) {
        self.cached_prod = self.cached_prod.wrapping_add(n);
        self.word(self.producer)
            .store(self.cached_prod, Ordering::Release);
    }

    /// Reads a u64 entry (completion ring) `i` slots past the consumer.
    fn get_addr(&self, i: u32) -> u64 {
        // SAFETY: in-bounds, 8-aligned; the kernel published it (Acquire in
        // `ready`) and does not rewrite it before `release`.
        unsafe {
            self.slot(self.cached_cons.wrapping_add(i))
                .cast::<u64>()
                .read()
        }
    }

    /// Reads a descriptor (RX ring) `i` slots past the consumer.
    fn get_desc(&self, i: u32) -> (u64, u32) {
        // SAFETY: as in `get_addr`.
        let d = unsafe {
            self.slot(self.cached_cons.wrapping_add(i))
                .cast::<libc::xdp_desc>()
                .read()
        };
        (d.addr, d.len)
    }

    fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.word(self.consumer)
            .store(self.cached_cons, Ordering::Release);
    }

    /// Producer entries the kernel has not consumed yet.
    fn unconsumed(&mut self) -> u32 {
        self.cached_cons = self.word(self.consumer).load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    fn needs_wakeup(&self) -> bool {
        self.word(self.flags).load(Ordering::Acquire) & libc::XDP_RING_NEED_WAKEUP != 0
    }
}

fn setsockopt<T>(fd: RawFd, opt: i32, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of `size_of::<T>()` bytes, read only.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Kernel structs made of integers only: all-zero bytes (and any bytes the
/// kernel writes) are a valid value.
///
/// # Safety
/// Implement only for `#[repr(C)]` structs of plain integers.
unsafe trait Plain: Sized {}
// SAFETY: `#[repr(C)]` structs of u64/u32 fields only.
unsafe impl Plain for libc::xdp_mmap_offsets {}
// SAFETY: as above.
unsafe impl Plain for libc::xdp_statistics {}
// SAFETY: as above.
unsafe impl Plain for libc::xdp_options {}

fn getsockopt<T: Plain>(fd: RawFd, opt: i32) -> io::Result<T> {
    // SAFETY: `T: Plain`, so all-zero is a valid T.
    let mut v: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `v`, which is that
    // large; `T: Plain` is valid for any bytes.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_XDP, opt, (&mut v as *mut T).cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// An AF_XDP socket bound to one queue of one interface.
#[derive(Debug)]
pub struct XskSocket {
    rx: Ring,
    tx: Ring,
    fill: Ring,
    comp: Ring,
    umem: Mmap,
    fd: OwnedFd,
    frame_size: u32,
    frames: u32,
    /// Frame base addresses owned by userspace.
    free: Vec<u64>,
    /// Frames kept back from the fill ring for [`XskSocket::send`].
    tx_reserve: usize,
    /// TX descriptors submitted and not yet completed.
    in_flight: u32,
    stats: XskStats,
    zerocopy: bool,
}

impl XskSocket {
    /// Opens a socket on queue `queue` of interface `ifindex` (of the
    /// calling thread's network namespace), copy or zero-copy as the driver
    /// allows, with `need_wakeup`.
    pub fn open(ifindex: u32, queue: u32, cfg: XskConfig) -> io::Result<XskSocket> {
        let pow2 = |v: u32| v.is_power_of_two();
        if !pow2(cfg.ring)
            || !pow2(cfg.frame_size)
            || cfg.frame_size < 2048
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
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = cfg.frames as usize * cfg.frame_size as usize;
        let umem = Mmap::new(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )?;
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
            sxdp_flags: libc::XDP_USE_NEED_WAKEUP,
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
        let free = (0..u64::from(cfg.frames))
            .rev()
            .map(|i| i * u64::from(cfg.frame_size))
            .collect();
        let mut s = XskSocket {
            rx,
            tx,
            fill,
            comp,
            umem,
            fd,
            frame_size: cfg.frame_size,
            frames: cfg.frames,
            free,
            tx_reserve: (cfg.frames - cfg.ring) as usize,
            in_flight: 0,
            stats: XskStats::default(),
            zerocopy,
        };
        s.refill();
        Ok(s)
    }

    /// The socket's descriptor: for the XSKMAP and for poll (readable = RX
    /// descriptors waiting).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether the driver runs the socket zero-copy (else the kernel copies).
    pub fn zerocopy(&self) -> bool {
        self.zerocopy
    }

    /// Bytes of one UMEM frame.
    pub fn frame_size(&self) -> usize {
        self.frame_size as usize
    }

    /// Gives free frames (all but the TX reserve) to the kernel's fill ring,
    /// waking the kernel if it asked for it.
    pub fn refill(&mut self) {
        let spare = self.free.len().saturating_sub(self.tx_reserve) as u32;
        let n = self.fill.free(spare);
        for i in 0..n {
            // `n` ≤ free.len(): the pops cannot fail.
            let addr = self.free.pop().unwrap_or_default();
            self.fill.put_addr(i, addr);
        }
        if n > 0 {
            self.fill.submit(n);
        }
        if self.fill.needs_wakeup() {
            self.kick_rx();
        }
    }

    fn kick_rx(&self) {
        // SAFETY: a zero-length recvfrom with NULL buffers only wakes the
        // kernel's RX processing.
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

    /// Receives up to `max` packets; `f` sees each frame's bytes (mutable,
    /// to rewrite in place) and says what becomes of it. Transmitted frames
    /// are queued on the TX ring in one batch; call [`XskSocket::flush`]
    /// to send them. Refills the fill ring. Returns how many were received.
    pub fn recv(&mut self, max: u32, mut f: impl FnMut(&mut [u8]) -> RxAction) -> u32 {
        let n = self.rx.ready(max);
        let room = self.tx.free(n);
        let mut queued = 0;
        for i in 0..n {
            let (addr, len) = self.rx.get_desc(i);
            let base = addr - addr % u64::from(self.frame_size);
            let cap = (base + u64::from(self.frame_size) - addr) as usize;
            if base / u64::from(self.frame_size) >= u64::from(self.frames) || len as usize > cap {
                // Not a frame of ours: never touch it (and lose it).
                self.stats.rx_bad_desc += 1;
                continue;
            }
            // SAFETY: [addr, addr+cap) lies inside one UMEM frame (checked
            // above); the kernel gave the frame back on the RX ring and will
            // not write it until it is refilled or transmitted, and no other
            // reference to it exists while `&mut self` is held.
            let frame = unsafe {
                std::slice::from_raw_parts_mut(self.umem.ptr.as_ptr().add(addr as usize), cap)
            };
            match f(&mut frame[..]) {
                RxAction::Transmit(out) if out > 0 && out <= cap && queued < room => {
                    self.tx.put_desc(queued, addr, out as u32);
                    queued += 1;
                }
                RxAction::Transmit(out) => {
                    if out == 0 || out > cap {
                        self.stats.tx_bad_len += 1;
                    } else {
                        self.stats.tx_ring_full += 1;
                    }
                    self.free.push(base);
                }
                RxAction::Release => self.free.push(base),
            }
        }
        if n > 0 {
            self.rx.release(n);
        }
        if queued > 0 {
            self.tx.submit(queued);
            self.in_flight += queued;
        }
        self.refill();
        n
    }

    /// Sends one packet written by `f` into a free frame (the whole frame
    /// is offered; `f` returns the length, 0 to cancel). Queued on the TX
    /// ring; [`XskSocket::flush`] sends. False (and counted) when no frame
    /// or no TX slot was free.
    pub fn send(&mut self, f: impl FnOnce(&mut [u8]) -> usize) -> bool {
        if self.tx.free(1) == 0 {
            self.complete();
            if self.tx.free(1) == 0 {
                self.stats.tx_ring_full += 1;
                return false;
            }
        }
        if self.free.is_empty() {
            self.complete();
        }
        let Some(base) = self.free.pop() else {
            self.stats.tx_no_frame += 1;
            return false;
        };
        let cap = self.frame_size as usize;
        // SAFETY: `base` came from the free stack, so it is the start of one
        // UMEM frame that userspace owns; nothing else refers to it.
        let frame = unsafe {
            std::slice::from_raw_parts_mut(self.umem.ptr.as_ptr().add(base as usize), cap)
        };
        let len = f(&mut frame[..]).min(cap);
        if len == 0 {
            self.free.push(base);
            return false;
        }
        self.tx.put_desc(0, base, len as u32);
        self.tx.submit(1);
        self.in_flight += 1;
        true
    }

    /// Reclaims frames whose transmission completed.
    pub fn complete(&mut self) -> u32 {
        let n = self.comp.ready(self.comp.size());
        for i in 0..n {
            let addr = self.comp.get_addr(i);
            let base = addr - addr % u64::from(self.frame_size);
            if base / u64::from(self.frame_size) < u64::from(self.frames) {
                self.free.push(base);
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
        // Copy mode transmits only from a syscall (at most a few dozen
        // descriptors per call), so it is kicked while the kernel has not
        // taken everything; a zero-copy driver says through the ring flag
        // when it needs a kick.
        if self.tx.unconsumed() > 0 && (!self.zerocopy || self.tx.needs_wakeup()) {
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
            // A failure (EAGAIN/EBUSY/ENOBUFS) means the kernel is still
            // sending: the ring keeps the frames and the next flush retries.
            let _ = rc;
        }
        self.complete();
    }

    /// Frames submitted for TX and not yet completed.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Frames userspace owns right now.
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// The kernel's counters and uvs's own.
    pub fn stats(&self) -> io::Result<XskStats> {
        let k = getsockopt::<libc::xdp_statistics>(self.fd.as_raw_fd(), libc::XDP_STATISTICS)?;
        Ok(XskStats {
            rx_dropped: k.rx_dropped,
            rx_invalid_descs: k.rx_invalid_descs,
            tx_invalid_descs: k.tx_invalid_descs,
            rx_ring_full: k.rx_ring_full,
            rx_fill_ring_empty: k.rx_fill_ring_empty_descs,
            tx_ring_empty: k.tx_ring_empty_descs,
            ..self.stats
        })
    }
}
