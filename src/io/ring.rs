//! A TPACKET_V2 receive ring on an AF_PACKET socket.
//!
//! One ring per (worker, interface); all rings of an interface join one
//! fanout group (with `FLAG_DEFRAG`, so fragments of one datagram reach one
//! worker, whole), which spreads flows over workers without locks: see
//! [`Fanout`] for how the group picks a ring. The group also carries
//! `FLAG_IGNORE_OUTGOING`: a socket's own `PACKET_IGNORE_OUTGOING` does not
//! apply once it joins a group (the group's hook replaces the socket's), so
//! without it every frame the director's own stack sends on the interface
//! would be copied into the ring, only to be skipped. The ring
//! is memory-mapped: receiving costs no syscall; the worker polls the fd with
//! mio only when the ring is empty. Frames are processed in place and may be
//! transmitted straight out of the ring: the ring implements [`RxSource`],
//! whose batches keep their frames from the kernel until dropped.
//!
//! Layout of a frame handed out: [`HEADROOM`] free bytes, the virtio-net
//! header as the kernel wrote it, then the Ethernet frame at
//! [`RxFrame::at`]. The header is also decoded into [`RxFrame::vnet`]; code
//! specific to this ring (the tunnel endpoint) may rely on the raw bytes.
//!
//! Frame size: sized to the interface's MTU (2 KiB at 1500), so a ring of
//! thousands of frames holds thousands of small packets. A larger packet (a
//! GSO super-packet, or any packet after the MTU grew) does not fit: with
//! `PACKET_COPY_THRESH` the kernel puts a truncated copy in the ring, flagged
//! `TP_STATUS_COPY`, and the whole packet on the socket's receive queue, in
//! the same order. The batch reads it from there (one `recv` per such
//! packet) into one of a few large buffers the ring owns, checks it is the
//! packet the ring frame announced, and hands it out in the ring frame's
//! place. A packet that could not be queued whole (receive buffer full) is
//! reported truncated, never forwarded.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use super::device::{RxBatch, RxFrame, RxSkip, RxSource};
use super::vnet::VnetHdr;

const VNET_HDR_LEN: usize = VnetHdr::LEN;

/// Free bytes the kernel leaves before each frame's virtio-net header
/// (`PACKET_RESERVE`): room to prepend tunnel headers in place.
pub const HEADROOM: usize = 128;
/// Bytes a ring frame needs besides the packet: the frame header and
/// `sockaddr_ll` (64 with alignment), the headroom, the virtio-net header,
/// two VLAN tags, rounded up generously.
const FRAME_OVERHEAD: usize = 256;
/// Smallest and largest ring frame.
const FRAME_MIN: usize = 2048;
const FRAME_MAX: usize = 16384;
/// Large buffers per ring for packets read from the receive queue, and their
/// size: headroom, virtio-net header, a 64 KiB GSO packet with its headers.
const BIG_BUFS: usize = 4;
const BIG_SIZE: usize = HEADROOM + VNET_HDR_LEN + 65_536 + 256;
/// Receive-queue room for whole copies of large packets.
const RCVBUF: libc::c_int = 8 << 20;

const TPACKET_V2: libc::c_int = 1;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_COPY: u32 = 1 << 1;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const PACKET_HOST: u8 = 0;
/// Offset of `struct sockaddr_ll` in a TPACKET_V2 frame: TPACKET_ALIGN(32).
const SLL_OFFSET: usize = 32;

/// `PACKET_FANOUT_FLAG_IGNORE_OUTGOING` (Linux 6.2; an older kernel takes
/// the flag and ignores it, as it ignores unknown fanout flags).
const PACKET_FANOUT_FLAG_IGNORE_OUTGOING: u32 = 0x4000;

/// How an interface's fanout group picks the ring for a packet (`--fanout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fanout {
    /// By a symmetric hash of the flow (`PACKET_FANOUT_HASH`): a flow stays
    /// on one worker. The kernel runs its flow dissector on every packet
    /// for this hash.
    #[default]
    Hash,
    /// By the CPU the packet is received on (`PACKET_FANOUT_CPU`): the k-th
    /// ring to join takes the packets of CPU k (modulo the group's size).
    /// No flow dissector per packet.
    Cpu,
}

impl Fanout {
    /// The mode for a group of `members` rings when `asked` was asked for:
    /// a one-ring group (one worker) is picked by any mode, so it gets the
    /// cheapest, [`Fanout::Cpu`] (the CPU number modulo one, no flow hash).
    pub fn for_members(members: usize, asked: Fanout) -> Fanout {
        if members <= 1 {
            Fanout::Cpu
        } else {
            asked
        }
    }

    /// The `PACKET_FANOUT` option value for group `group`.
    fn arg(self, group: u16) -> u32 {
        let mode = match self {
            Fanout::Hash => libc::PACKET_FANOUT_HASH,
            Fanout::Cpu => libc::PACKET_FANOUT_CPU,
        };
        let flags = libc::PACKET_FANOUT_FLAG_DEFRAG | PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
        u32::from(group) | (mode | flags) << 16
    }
}

/// `struct tpacket2_hdr`, read field by field from the mapped frame.
#[derive(Debug, Clone, Copy)]
struct Tp2Hdr {
    status: u32,
    len: u32,
    snaplen: u32,
    mac: u16,
    vlan_tci: u16,
}

/// A memory-mapped TPACKET_V2 RX ring bound to one interface.
#[derive(Debug)]
pub struct RxRing {
    fd: OwnedFd,
    map: NonNull<u8>,
    frames: usize,
    frame_size: usize,
    /// [`BIG_BUFS`] buffers of [`BIG_SIZE`] bytes, for packets the ring
    /// only holds a truncated copy of.
    big: Box<[u8]>,
    cur: usize,
    ifindex: u32,
}

// SAFETY: the mapping is owned exclusively by this ring; moving the ring to
// another thread moves that exclusive ownership with it.
unsafe impl Send for RxRing {}

pub(crate) fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A non-blocking AF_PACKET raw socket for `proto` (network order; 0 =
/// receive nothing) whose frames carry a virtio-net header; `before_vnet`
/// sets options that must precede that one.
pub(crate) fn packet_socket(
    proto: u16,
    before_vnet: impl FnOnce(RawFd) -> io::Result<()>,
) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is owned right below.
    let raw = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            proto as libc::c_int,
        )
    })?;
    // SAFETY: `raw` is a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    before_vnet(raw)?;
    setsockopt(
        raw,
        libc::SOL_PACKET,
        libc::PACKET_VNET_HDR,
        &1 as &libc::c_int,
    )?;
    Ok(fd)
}

/// `setsockopt` of a plain value.
pub(crate) fn setsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
) -> io::Result<()> {
    // SAFETY: `val` points to a live T of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The MTU of interface `ifindex` (`SIOCGIFMTU`, in this namespace).
pub(crate) fn interface_mtu(ifindex: u32) -> io::Result<usize> {
    // SAFETY: ifreq is plain old data; zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes (the size of
    // ifr_name) and NUL-terminates.
    if unsafe { libc::if_indextoname(ifindex, ifr.ifr_name.as_mut_ptr()) }.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain socket(2) call; the fd is owned right below.
    let raw =
        cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `raw` is a fresh fd we own.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: SIOCGIFMTU reads ifr_name and writes ifr_mtu of a live ifreq.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut ifr) })?;
    // SAFETY: SIOCGIFMTU filled the ifr_mtu member of the union.
    let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
    Ok(usize::try_from(mtu).unwrap_or(1500))
}

/// A power-of-two frame size holding a packet of `mtu` with its headers.
fn frame_size_for(mtu: usize) -> usize {
    (mtu + 14 + FRAME_OVERHEAD)
        .next_power_of_two()
        .clamp(FRAME_MIN, FRAME_MAX)
}

impl RxRing {
    /// Opens a ring of `frames` frames, sized to the interface's MTU, on
    /// `ifindex` and joins fanout group `group` (one group id per interface;
    /// every ring of a group opened with the same `fanout`).
    pub fn open(ifindex: u32, group: u16, frames: usize, fanout: Fanout) -> io::Result<Self> {
        let frame_size = frame_size_for(interface_mtu(ifindex)?);
        // Blocks of at least a page, holding whole frames (power-of-two
        // frames tile them exactly, so frames are contiguous in the map).
        let block_size = frame_size.max(4096);
        let per_block = block_size / frame_size;
        let frames = frames.max(per_block).div_ceil(per_block) * per_block;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // The version must be set before the vnet header option.
        let fd = packet_socket(proto, |raw| {
            setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V2)
        })?;
        let raw = fd.as_raw_fd();
        // Our own transmissions (and the host's) are not requests to handle
        // (once in the fanout group, the group's flag says so: above).
        setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            &1 as &libc::c_int,
        )?;
        let reserve = HEADROOM as libc::c_uint;
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RESERVE, &reserve)?;
        // Packets too big for a frame also go whole to the receive queue.
        setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_COPY_THRESH,
            &1 as &libc::c_int,
        )?;
        if setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RCVBUF).is_err() {
            setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &RCVBUF)?;
        }
        let req = libc::tpacket_req {
            tp_block_size: block_size as u32,
            tp_block_nr: (frames / per_block) as u32,
            tp_frame_size: frame_size as u32,
            tp_frame_nr: frames as u32,
        };
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
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
        let ring = RxRing {
            fd,
            map,
            frames,
            frame_size,
            big: vec![0u8; BIG_BUFS * BIG_SIZE].into_boxed_slice(),
            cur: 0,
            ifindex,
        };
        // SAFETY: sockaddr_ll is plain old data; zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a valid sockaddr_ll of the size passed.
        cvt(unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            &fanout.arg(group),
        )?;
        Ok(ring)
    }

    fn frame_ptr(&self, slot: usize) -> *mut u8 {
        // SAFETY: slot < frames, so the offset stays inside the mapping.
        unsafe { self.map.as_ptr().add(slot * self.frame_size) }
    }

    fn status(&self, slot: usize) -> u32 {
        let p = self.frame_ptr(slot).cast::<u32>();
        // SAFETY: the first word of each frame is tp_status, written by the
        // kernel concurrently: read it volatile.
        let s = unsafe { std::ptr::read_volatile(p) };
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        s
    }

    fn header(&self, slot: usize) -> Tp2Hdr {
        let p = self.frame_ptr(slot);
        // SAFETY: the frame header lies at the start of the frame; the kernel
        // finished writing it before it set TP_STATUS_USER (acquire above).
        unsafe {
            Tp2Hdr {
                status: std::ptr::read_unaligned(p.cast::<u32>()),
                len: std::ptr::read_unaligned(p.add(4).cast::<u32>()),
                snaplen: std::ptr::read_unaligned(p.add(8).cast::<u32>()),
                mac: std::ptr::read_unaligned(p.add(12).cast::<u16>()),
                vlan_tci: std::ptr::read_unaligned(p.add(24).cast::<u16>()),
            }
        }
    }

    fn release(&self, slot: usize) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        // SAFETY: handing the frame back to the kernel by writing tp_status.
        unsafe { std::ptr::write_volatile(self.frame_ptr(slot).cast::<u32>(), TP_STATUS_KERNEL) }
    }

    /// Whether a frame is waiting.
    pub fn ready(&self) -> bool {
        self.status(self.cur) & TP_STATUS_USER != 0
    }
}

/// A batch of frames taken from an [`RxRing`]: slots `start..start + taken`
/// are userspace's until the batch drops, and so are the first `big_used`
/// large buffers.
#[derive(Debug)]
pub struct PacketRxBatch<'r> {
    ring: &'r mut RxRing,
    /// The ring's large buffers, taken from its `&mut` borrow.
    big: *mut u8,
    start: usize,
    max: usize,
    taken: Cell<usize>,
    big_used: Cell<usize>,
}

impl PacketRxBatch<'_> {
    /// Reads the whole packet the kernel queued for a `TP_STATUS_COPY`
    /// frame into the next large buffer; `None` (the copy discarded) if it
    /// is not the packet the frame announced.
    fn read_copy(&self, h: &Tp2Hdr, ring_data: &[u8]) -> Option<RxFrame<'_>> {
        let i = self.big_used.get();
        debug_assert!(i < BIG_BUFS);
        self.big_used.set(i + 1);
        // SAFETY: buffer i lies inside `big` (i < BIG_BUFS, checked by the
        // caller); `big_used` only grows, so it is handed out once per batch
        // and never aliases another frame; the batch holds the ring's `&mut`
        // borrow, and the returned frame borrows the batch.
        let b = unsafe { std::slice::from_raw_parts_mut(self.big.add(i * BIG_SIZE), BIG_SIZE) };
        let fd = self.ring.fd.as_raw_fd();
        let room = &mut b[HEADROOM..];
        // SAFETY: recv writes at most room.len() bytes into `room`.
        let n = unsafe { libc::recv(fd, room.as_mut_ptr().cast(), room.len(), libc::MSG_DONTWAIT) };
        let n = usize::try_from(n).ok()?;
        let k = ring_data.len().min(64);
        let same = n >= VNET_HDR_LEN
            && n - VNET_HDR_LEN == h.len as usize
            && room[VNET_HDR_LEN..VNET_HDR_LEN + k.min(n - VNET_HDR_LEN)]
                == ring_data[..k.min(n - VNET_HDR_LEN)];
        if !same {
            // Out of step with the ring (never expected): empty the queue so
            // the next copies line up again.
            while discard_one(fd) {}
            return None;
        }
        let vnet = VnetHdr::read_from(&b[HEADROOM..]).unwrap_or_default();
        Some(RxFrame {
            buf: &mut b[..HEADROOM + n],
            at: HEADROOM + VNET_HDR_LEN,
            vnet,
            wire_len: h.len as usize,
            ifindex: self.ring.ifindex,
            skip: None,
        })
    }
}

/// Drops the packet at the head of the socket's receive queue; false if
/// there was none.
fn discard_one(fd: RawFd) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: recv writes at most one byte into `b`; the rest of the packet
    // is dropped (packet sockets keep message boundaries).
    unsafe { libc::recv(fd, b.as_mut_ptr().cast(), 1, libc::MSG_DONTWAIT) >= 0 }
}

impl RxBatch for PacketRxBatch<'_> {
    fn next_frame(&self) -> Option<RxFrame<'_>> {
        let ring = &*self.ring;
        loop {
            let n = self.taken.get();
            if n >= self.max {
                return None;
            }
            let slot = (self.start + n) % ring.frames;
            if ring.status(slot) & TP_STATUS_USER == 0 {
                return None;
            }
            let h = ring.header(slot);
            let copied = h.status & TP_STATUS_COPY != 0;
            if copied && self.big_used.get() == BIG_BUFS {
                // No large buffer left in this batch: the next one takes it.
                return None;
            }
            self.taken.set(n + 1);
            let base = ring.frame_ptr(slot);
            let mac = usize::from(h.mac);
            let snap = h.snaplen as usize;
            // The kernel places the vnet header right before the MAC header,
            // and the reserved headroom before that, after sockaddr_ll.
            let lead = HEADROOM + VNET_HDR_LEN;
            if mac < lead + SLL_OFFSET + 20 || mac + snap > ring.frame_size {
                // Not a layout we asked for: give it back unread.
                if copied {
                    discard_one(ring.fd.as_raw_fd());
                }
                continue;
            }
            // SAFETY: [mac - lead, mac + snaplen) lies inside this frame
            // after its headers (checked above). The slot is userspace's
            // (TP_STATUS_USER) until this batch drops, which the returned
            // borrow of `self` outlasts; `taken` only grows, so no slot is
            // handed out twice and no two slices alias.
            let buf = unsafe { std::slice::from_raw_parts_mut(base.add(mac - lead), snap + lead) };
            // SAFETY: sll_pkttype is at byte 10 of sockaddr_ll, inside the frame.
            let pkttype = unsafe { *base.add(SLL_OFFSET + 10) };
            let skip = if pkttype != PACKET_HOST {
                Some(RxSkip::NotForHost)
            } else if h.status & TP_STATUS_VLAN_VALID != 0 && h.vlan_tci != 0 {
                Some(RxSkip::VlanAccelerated)
            } else if snap < h.len as usize {
                Some(RxSkip::Truncated)
            } else {
                None
            };
            if copied {
                if skip == Some(RxSkip::Truncated) {
                    if let Some(f) = self.read_copy(&h, &buf[lead..]) {
                        return Some(f);
                    }
                } else {
                    discard_one(ring.fd.as_raw_fd());
                }
            }
            let vnet = VnetHdr::read_from(&buf[HEADROOM..]).unwrap_or_default();
            return Some(RxFrame {
                buf,
                at: lead,
                vnet,
                wire_len: h.len as usize,
                ifindex: ring.ifindex,
                skip,
            });
        }
    }
}

impl Drop for PacketRxBatch<'_> {
    fn drop(&mut self) {
        let n = self.taken.get();
        for i in 0..n {
            self.ring.release((self.start + i) % self.ring.frames);
        }
        self.ring.cur = (self.start + n) % self.ring.frames;
    }
}

/// `struct tpacket_stats`.
#[repr(C)]
#[derive(Debug, Default)]
struct TpStats {
    packets: u32,
    drops: u32,
}

impl RxSource for RxRing {
    type Batch<'a> = PacketRxBatch<'a>;

    fn rx_batch(&mut self, max: usize) -> PacketRxBatch<'_> {
        let start = self.cur;
        let big = self.big.as_mut_ptr();
        PacketRxBatch {
            ring: self,
            big,
            start,
            max,
            taken: Cell::new(0),
            big_used: Cell::new(0),
        }
    }

    fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn take_kernel_drops(&mut self) -> io::Result<u64> {
        let mut st = TpStats::default();
        let mut len = std::mem::size_of::<TpStats>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `st`, a live
        // tpacket_stats; reading it resets the kernel's counts.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut TpStats).cast(),
                &mut len,
            )
        })?;
        Ok(u64::from(st.drops))
    }
}

impl AsRawFd for RxRing {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region mapped in open(); no frame
        // batch (and so no frame slice) outlives its `&mut` borrow of the ring.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.frame_size * self.frames);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_hold_an_mtu_sized_packet_with_the_kernels_headers() {
        // The kernel's MAC offset with our reserve and the vnet header, for
        // an untagged frame: TPACKET_ALIGN(52 + 16) + 128 + 10 - 14 = 204.
        let mac_off = 204;
        for mtu in [576, 1280, 1500, 4000, 9000] {
            let f = frame_size_for(mtu);
            assert!(f.is_power_of_two() && (FRAME_MIN..=FRAME_MAX).contains(&f));
            assert!(mac_off + 14 + 8 + mtu <= f, "mtu {mtu}: frame {f}");
        }
        assert_eq!(frame_size_for(1500), 2048);
        // Beyond the largest frame, packets go through the receive queue.
        assert_eq!(frame_size_for(65_000), FRAME_MAX);
    }

    #[test]
    fn a_one_ring_group_skips_the_flow_hash_and_every_group_ignores_outgoing() {
        assert_eq!(Fanout::for_members(1, Fanout::Hash), Fanout::Cpu);
        assert_eq!(Fanout::for_members(2, Fanout::Hash), Fanout::Hash);
        assert_eq!(Fanout::for_members(2, Fanout::Cpu), Fanout::Cpu);
        // The uapi values: group id low, mode and flags high.
        let flags = 0x8000 | 0x4000;
        assert_eq!(Fanout::Cpu.arg(7), 7 | (2 | flags) << 16);
        assert_eq!(Fanout::Hash.arg(0xbeef), 0xbeef | flags << 16);
    }
}
