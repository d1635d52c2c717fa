//! Transmission through `PACKET_TX_RING`: a memory-mapped TPACKET_V2 TX
//! ring per interface, filled in place and handed to the kernel with one
//! `send(fd, NULL, 0, MSG_DONTWAIT)` per flush, instead of a `sendmmsg`
//! whose kernel side copies in a message header, an address and an iovec
//! and looks the device up again for every frame.
//!
//! * **Frames.** Each ring frame holds the TPACKET_V2 header, then (at the
//!   kernel's default data offset, 32) a virtio-net header and the Ethernet
//!   frame; `tp_len` counts both. The kernel's `tpacket_snd` parses the
//!   virtio-net header as `sendmsg` does (`PACKET_VNET_HDR`), so a pending
//!   checksum (`NEEDS_CSUM`) is finished on the way out.
//! * **No page of the ring leaves with a packet.** `tpacket_snd` copies the
//!   header's `hdr_len` bytes into the skb and attaches the rest of the frame
//!   as a page reference; it gives the frame back (`TP_STATUS_AVAILABLE`)
//!   when the skb is orphaned, which a receiving stack does on entry (on a
//!   veth, right away) while the pages may still sit in a socket's receive
//!   queue. Rewriting the frame then would change data the receiver has not
//!   read. So every frame goes out with `hdr_len` = its whole length: the
//!   kernel copies it once into the skb's linear part and keeps no
//!   reference. The cost is one `memcpy` of ours (RX frame → TX frame) on
//!   top of the kernel's; what it saves is the per-message part of
//!   `sendmmsg`.
//! * **What goes elsewhere.** GSO super-packets (and anything larger than a
//!   ring frame, which is sized to the MTU) would need 64 KiB frames or page
//!   references; they go through the [`TxBatch`] fallback (`sendmmsg`), in
//!   place as before. So do frames for an interface without a ring, and
//!   frames that find their ring full (every frame still in flight):
//!   counted (`tx.ring_full_fallback`). Frames keep their order: queueing to
//!   one path first sends what the other holds.
//! * **Reclaim.** After a kick, the frames the kernel took (status no longer
//!   `SEND_REQUEST`) are counted sent by walking the ring's status words; no
//!   syscall per packet. A frame the kernel refuses is cancelled (`tp_len`
//!   0, which `PACKET_LOSS` makes the kernel skip) and counted dropped, so a
//!   bad frame never blocks the ring; frames are checked before queueing
//!   against what the kernel would refuse, so `PACKET_LOSS` never discards
//!   one silently.
//!
//! One worker owns a [`RingTx`] (its rings and its fallback); nothing here
//! is shared between threads.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

use super::device::{TxCounts, TxQueue, TxSink};
use super::ring::{cvt, interface_mtu, packet_socket, setsockopt};
use super::tx::{PacketTxQueue, TxBatch};
use super::vnet::VnetHdr;

const TPACKET_V2: libc::c_int = 1;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
/// Where the kernel reads a TX frame's data without `PACKET_TX_HAS_OFF`:
/// `TPACKET2_HDRLEN - sizeof(sockaddr_ll)` = TPACKET_ALIGN(32).
const DATA_OFF: usize = 32;
/// Offset of `tp_len` in `struct tpacket2_hdr`.
const TP_LEN_OFF: usize = 4;
/// Room a frame needs besides the packet: the data offset, the virtio-net
/// header and two VLAN tags.
const FRAME_OVERHEAD: usize = DATA_OFF + VnetHdr::LEN + 8;
const FRAME_MIN: usize = 2048;
const FRAME_MAX: usize = 16384;
/// Frames queued since the last kick after which a queue kicks without
/// waiting for its flush, so the kernel starts on a long round early.
const KICK_EVERY: usize = 128;
/// Send buffer: the in-flight frames' skbs are charged to it until the
/// receiver orphans them; a full one refuses frames.
const SNDBUF: libc::c_int = 4 << 20;
/// Ethernet header: the shortest frame the kernel accepts.
const ETH_HLEN: usize = 14;

/// A power-of-two TX frame size holding an MTU-sized frame with headers.
fn frame_size_for(mtu: usize) -> usize {
    (mtu + ETH_HLEN + FRAME_OVERHEAD)
        .next_power_of_two()
        .clamp(FRAME_MIN, FRAME_MAX)
}

/// A TPACKET_V2 TX ring bound to one interface.
#[derive(Debug)]
pub struct TxRing {
    fd: OwnedFd,
    map: NonNull<u8>,
    frames: usize,
    frame_size: usize,
    ifindex: u32,
    /// The oldest frame handed to the kernel and not yet seen taken; the
    /// kernel's own cursor is there whenever `inflight > 0`.
    head: usize,
    /// Frames from `head` on that were handed over and not yet seen taken
    /// (the next free frame is `head + inflight`).
    inflight: usize,
    /// Frames handed over since the last kick.
    unkicked: usize,
}

// SAFETY: the mapping is owned exclusively by this ring; moving the ring to
// another thread moves that ownership with it.
unsafe impl Send for TxRing {}

impl TxRing {
    /// Opens a ring of about `frames` frames, sized to the MTU of
    /// `ifindex`, bound to that interface (protocol 0: it receives nothing).
    pub fn open(ifindex: u32, frames: usize) -> io::Result<Self> {
        let frame_size = frame_size_for(interface_mtu(ifindex)?);
        let block_size = frame_size.max(4096);
        let per_block = block_size / frame_size;
        let frames = frames.max(per_block).div_ceil(per_block) * per_block;
        // The version (and so the frame layout) precedes the vnet option.
        let fd = packet_socket(0, |raw| {
            setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V2)
        })?;
        let raw = fd.as_raw_fd();
        let one: libc::c_int = 1;
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &one)?;
        // A refused frame is skipped, not left blocking the ring.
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_LOSS, &one)?;
        if setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &SNDBUF).is_err() {
            setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, &SNDBUF)?;
        }
        let req = libc::tpacket_req {
            tp_block_size: block_size as u32,
            tp_block_nr: (frames / per_block) as u32,
            tp_frame_size: frame_size as u32,
            tp_frame_nr: frames as u32,
        };
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_TX_RING, &req)?;
        let len = frame_size * frames;
        // SAFETY: mapping the ring the kernel just allocated for this fd.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                raw,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        let ring = TxRing {
            fd,
            map,
            frames,
            frame_size,
            ifindex,
            head: 0,
            inflight: 0,
            unkicked: 0,
        };
        // SAFETY: sockaddr_ll is plain old data; zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a valid sockaddr_ll of the size passed.
        cvt(unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(ring)
    }

    /// Largest Ethernet frame a ring frame holds.
    fn capacity(&self) -> usize {
        self.frame_size - DATA_OFF - VnetHdr::LEN
    }

    fn frame_ptr(&self, slot: usize) -> *mut u8 {
        debug_assert!(slot < self.frames);
        // SAFETY: slot < frames, so the offset stays inside the mapping.
        unsafe { self.map.as_ptr().add(slot * self.frame_size) }
    }

    fn status(&self, slot: usize) -> u32 {
        // SAFETY: the first word of each frame is tp_status, which the
        // kernel writes concurrently (the skb destructor, from any CPU):
        // read it volatile, then order the reads after it.
        let s = unsafe { std::ptr::read_volatile(self.frame_ptr(slot).cast::<u32>()) };
        fence(Ordering::Acquire);
        s
    }

    fn tp_len(&self, slot: usize) -> u32 {
        // SAFETY: tp_len lies inside the frame header; the kernel does not
        // write it on TX.
        unsafe { std::ptr::read_volatile(self.frame_ptr(slot).add(TP_LEN_OFF).cast::<u32>()) }
    }

    fn set_tp_len(&mut self, slot: usize, len: u32) {
        // SAFETY: as in tp_len; the frame is userspace's or waiting for a
        // kick (`SEND_REQUEST`), which only this thread issues.
        unsafe { std::ptr::write_volatile(self.frame_ptr(slot).add(TP_LEN_OFF).cast::<u32>(), len) }
    }

    /// Whether the next frame is free.
    fn has_room(&self) -> bool {
        self.inflight < self.frames
            && self.status((self.head + self.inflight) % self.frames) == TP_STATUS_AVAILABLE
    }

    /// Writes `vnet` and `frame` into the next frame and hands it to the
    /// kernel (sent at the next kick). The caller checked [`has_room`],
    /// the size and [`sendable`].
    fn put(&mut self, frame: &[u8], vnet: &VnetHdr) {
        let slot = (self.head + self.inflight) % self.frames;
        let n = VnetHdr::LEN + frame.len();
        debug_assert!(frame.len() <= self.capacity());
        // Whole-frame copy by the kernel: no page reference outlives the
        // frame's return (module doc).
        let h = VnetHdr {
            hdr_len: frame.len() as u16,
            ..*vnet
        };
        // SAFETY: the frame is AVAILABLE (checked by the caller through
        // has_room): the kernel neither reads nor writes it until its status
        // says SEND_REQUEST below. [DATA_OFF, DATA_OFF + n) lies inside it
        // (n <= capacity + LEN).
        let data = unsafe { std::slice::from_raw_parts_mut(self.frame_ptr(slot).add(DATA_OFF), n) };
        let (hdr, rest) = data.split_at_mut(VnetHdr::LEN);
        h.write_to(hdr);
        rest.copy_from_slice(frame);
        self.set_tp_len(slot, n as u32);
        fence(Ordering::Release);
        // SAFETY: handing the frame over by writing its status word.
        unsafe {
            std::ptr::write_volatile(self.frame_ptr(slot).cast::<u32>(), TP_STATUS_SEND_REQUEST)
        };
        self.inflight += 1;
        self.unkicked += 1;
    }

    /// Counts the frames the kernel has taken since the last call as sent
    /// (a cancelled one, `tp_len` 0, was counted dropped already).
    fn reclaim(&mut self, counts: &mut TxCounts) {
        while self.inflight > 0 && self.status(self.head) != TP_STATUS_SEND_REQUEST {
            if self.tp_len(self.head) != 0 {
                counts.sent += 1;
            }
            self.head = (self.head + 1) % self.frames;
            self.inflight -= 1;
        }
    }

    /// Whether frames wait for a kick.
    fn waiting(&self) -> bool {
        self.unkicked > 0 || (self.inflight > 0 && self.status(self.head) == TP_STATUS_SEND_REQUEST)
    }

    /// Has the kernel send what waits: one `send` when all goes out; when
    /// the kernel refuses the frame at its cursor, that frame is cancelled
    /// (counted dropped) and the rest sent on, at most once per frame.
    fn kick(&mut self, counts: &mut TxCounts) {
        self.unkicked = 0;
        let mut tries = self.inflight + 1;
        loop {
            // SAFETY: send with no buffer: the kernel reads only the ring.
            let rc =
                unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT) };
            self.reclaim(counts);
            tries -= 1;
            if rc >= 0 || tries == 0 || self.inflight == 0 {
                return;
            }
            // The frame at the kernel's cursor was refused and put back
            // (a full peer queue, a device that went down, a full send
            // buffer): give up on it, as sendmmsg would have.
            let h = self.head;
            self.set_tp_len(h, 0);
            counts.dropped += 1;
        }
    }
}

impl Drop for TxRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region mapped in open(); frames are
        // only reached through &self / &mut self, which end with the ring.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.frame_size * self.frames);
        }
    }
}

/// Whether the kernel will take `frame` with `vnet` from a ring (what it
/// would refuse is dropped here, counted, so `PACKET_LOSS` never hides one).
fn sendable(frame: &[u8], vnet: &VnetHdr) -> bool {
    frame.len() >= ETH_HLEN
        && (!vnet.needs_csum()
            || usize::from(vnet.csum_start) + usize::from(vnet.csum_offset) + 2 <= frame.len())
}

/// One worker's transmit side: a TX ring per interface, and a `sendmmsg`
/// batch for what the rings do not take (module doc). With no rings
/// (`uvs run --tx sendmmsg`) everything goes through the batch.
#[derive(Debug)]
pub struct RingTx {
    rings: Vec<TxRing>,
    fallback: TxBatch,
    counts: TxCounts,
    /// Frames that found their ring full and went through `fallback`.
    fallbacks: u64,
}

impl RingTx {
    /// A TX ring of `frames` frames on each of `ifindexes` (none: sendmmsg
    /// only), and a fallback batch of `cap` frames, `copy_slots` copied.
    pub fn new(
        ifindexes: &[u32],
        frames: usize,
        cap: usize,
        copy_slots: usize,
    ) -> io::Result<Self> {
        Ok(RingTx {
            rings: ifindexes
                .iter()
                .map(|&i| TxRing::open(i, frames))
                .collect::<io::Result<_>>()?,
            fallback: TxBatch::new(cap, copy_slots)?,
            counts: TxCounts::default(),
            fallbacks: 0,
        })
    }
}

/// One round's queue on a [`RingTx`]; kicks the rings (and flushes the
/// fallback) when dropped.
#[derive(Debug)]
pub struct RingTxQueue<'t, 'b> {
    rings: &'t mut [TxRing],
    counts: &'t mut TxCounts,
    fallbacks: &'t mut u64,
    fallback: PacketTxQueue<'t, 'b>,
    /// The fallback holds frames not yet sent.
    fallback_pending: bool,
    _bufs: PhantomData<&'b mut [u8]>,
}

/// Where a frame goes.
enum Route {
    Ring(usize),
    Fallback,
    Dropped,
}

impl RingTxQueue<'_, '_> {
    fn route(&mut self, frame: &[u8], vnet: &VnetHdr, ifindex: u32) -> Route {
        let Some(k) = self.rings.iter().position(|r| r.ifindex == ifindex) else {
            return Route::Fallback;
        };
        if vnet.is_gso() || frame.len() > self.rings[k].capacity() {
            return Route::Fallback;
        }
        if !sendable(frame, vnet) {
            self.counts.dropped += 1;
            return Route::Dropped;
        }
        let r = &mut self.rings[k];
        if !r.has_room() {
            r.reclaim(self.counts);
            // A kick frees frames only if some wait for one; a frame whose
            // skb is still alive (SENDING) comes back only when the skb is
            // freed, so no syscall per frame while the ring is full.
            if r.unkicked > 0 {
                r.kick(self.counts);
            }
            if !r.has_room() {
                *self.fallbacks += 1;
                return Route::Fallback;
            }
        }
        Route::Ring(k)
    }

    /// Queues on ring `k`, after what the fallback holds.
    fn queue_on_ring(&mut self, k: usize, frame: &[u8], vnet: &VnetHdr) {
        if self.fallback_pending {
            self.fallback.flush();
            self.fallback_pending = false;
        }
        let r = &mut self.rings[k];
        r.put(frame, vnet);
        if r.unkicked >= KICK_EVERY {
            r.kick(self.counts);
        }
    }

    /// Before queueing on the fallback: the rings send what they hold.
    fn before_fallback(&mut self) {
        for r in self.rings.iter_mut() {
            if r.unkicked > 0 {
                r.kick(self.counts);
            }
        }
        self.fallback_pending = true;
    }

    fn kick_all(&mut self) {
        for r in self.rings.iter_mut() {
            if r.waiting() {
                r.kick(self.counts);
            }
        }
    }
}

impl<'b> TxQueue<'b> for RingTxQueue<'_, 'b> {
    fn forward(&mut self, buf: &'b mut [u8], at: usize, vnet: &VnetHdr, ifindex: u32) {
        let Some(frame) = buf.get(at..) else {
            self.counts.dropped += 1;
            return;
        };
        match self.route(frame, vnet, ifindex) {
            Route::Ring(k) => self.queue_on_ring(k, frame, vnet),
            Route::Fallback => {
                self.before_fallback();
                self.fallback.forward(buf, at, vnet, ifindex);
            }
            Route::Dropped => {}
        }
    }

    fn copy(&mut self, frame: &[u8], vnet: &VnetHdr, ifindex: u32) {
        match self.route(frame, vnet, ifindex) {
            Route::Ring(k) => self.queue_on_ring(k, frame, vnet),
            Route::Fallback => {
                self.before_fallback();
                self.fallback.copy(frame, vnet, ifindex);
            }
            Route::Dropped => {}
        }
    }

    fn flush(&mut self) {
        self.kick_all();
        if self.fallback_pending {
            self.fallback.flush();
            self.fallback_pending = false;
        }
    }
}

impl Drop for RingTxQueue<'_, '_> {
    fn drop(&mut self) {
        // The fallback queue flushes as it drops, right after this.
        self.kick_all();
    }
}

impl TxSink for RingTx {
    const HEADROOM: usize = <TxBatch as TxSink>::HEADROOM;
    const COPY_MAX: usize = <TxBatch as TxSink>::COPY_MAX;
    type Queue<'t, 'b>
        = RingTxQueue<'t, 'b>
    where
        Self: 't;

    fn queue<'t, 'b>(&'t mut self) -> RingTxQueue<'t, 'b> {
        RingTxQueue {
            rings: &mut self.rings,
            counts: &mut self.counts,
            fallbacks: &mut self.fallbacks,
            fallback: self.fallback.queue(),
            fallback_pending: false,
            _bufs: PhantomData,
        }
    }

    fn take_counts(&mut self) -> TxCounts {
        let mut c = std::mem::take(&mut self.counts);
        let f = self.fallback.take_counts();
        c.sent += f.sent;
        c.dropped += f.dropped;
        c
    }

    fn take_fallbacks(&mut self) -> u64 {
        std::mem::take(&mut self.fallbacks)
    }
}

impl AsRawFd for RingTx {
    fn as_raw_fd(&self) -> RawFd {
        self.fallback.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_hold_an_mtu_sized_frame_after_their_headers() {
        for mtu in [576, 1280, 1500, 4000, 9000] {
            let f = frame_size_for(mtu);
            assert!(f.is_power_of_two() && (FRAME_MIN..=FRAME_MAX).contains(&f));
            assert!(
                DATA_OFF + VnetHdr::LEN + ETH_HLEN + 8 + mtu <= f,
                "mtu {mtu}"
            );
        }
        assert_eq!(frame_size_for(1500), 2048);
    }

    #[test]
    fn what_the_kernel_would_refuse_is_not_queued() {
        let f = [0u8; 60];
        assert!(sendable(&f, &VnetHdr::default()));
        assert!(!sendable(&f[..13], &VnetHdr::default()));
        assert!(sendable(&f, &VnetHdr::pending_csum(34, 16)));
        assert!(sendable(&f, &VnetHdr::pending_csum(42, 16)));
        assert!(!sendable(&f, &VnetHdr::pending_csum(43, 16)));
    }
}
