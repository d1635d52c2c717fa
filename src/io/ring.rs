//! A TPACKET_V2 receive ring on an AF_PACKET socket.
//!
//! One ring per (worker, interface); all rings of an interface join one
//! `PACKET_FANOUT_HASH` group (with `FLAG_DEFRAG`, so fragments of one datagram
//! reach one worker), which spreads flows over workers without locks. The ring
//! is memory-mapped: receiving costs no syscall; the worker polls the fd with
//! mio only when the ring is empty. Frames are processed in place and may be
//! transmitted straight out of the ring (see [`RxRing::drain`]).
//!
//! Frame size: 17 pages, enough for a 64 KiB GSO super-packet plus headers.
//! Anything the ring had to truncate is reported, never forwarded.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use super::VNET_HDR_LEN;

/// Bytes per ring frame (must be a multiple of the page size here, since we
/// use one frame per block).
pub const FRAME_SIZE: usize = 17 * 4096;
/// Free bytes the kernel leaves before each frame's virtio-net header
/// (`PACKET_RESERVE`): room to prepend tunnel headers in place.
pub const HEADROOM: usize = 128;

const TPACKET_V2: libc::c_int = 1;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const PACKET_HOST: u8 = 0;
/// Offset of `struct sockaddr_ll` in a TPACKET_V2 frame: TPACKET_ALIGN(32).
const SLL_OFFSET: usize = 32;

/// `struct tpacket2_hdr`, read field by field from the mapped frame.
#[derive(Debug, Clone, Copy)]
struct Tp2Hdr {
    status: u32,
    len: u32,
    snaplen: u32,
    mac: u16,
    vlan_tci: u16,
}

/// One received frame, borrowed from the ring until the end of the
/// [`RxRing::drain`] call that produced it.
#[derive(Debug)]
pub struct RxFrame<'a> {
    /// [`HEADROOM`] free bytes, then the virtio-net header (at `head`)
    /// followed by the Ethernet frame, contiguous, so `buf[head..]` can be
    /// handed to a vnet-header TX socket unchanged.
    pub buf: &'a mut [u8],
    /// Offset of the virtio-net header in `buf`.
    pub head: usize,
    /// Length of the packet on the wire (may exceed what the ring kept).
    pub wire_len: usize,
    /// The interface it arrived on.
    pub ifindex: u32,
    /// Why the frame must not be processed, if so.
    pub skip: Option<RxSkip>,
}

impl RxFrame<'_> {
    /// The virtio-net header.
    pub fn vnet(&self) -> &[u8] {
        &self.buf[self.head..self.head + VNET_HDR_LEN]
    }
    /// The Ethernet frame.
    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head + VNET_HDR_LEN..]
    }
}

/// Frames the ring delivers that uvs leaves alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxSkip {
    /// Not addressed to this host's MAC (broadcast, multicast, promiscuous).
    NotForHost,
    /// The kernel had already moved the 802.1Q tag out of the frame; the
    /// packet is seen again on the VLAN interface if one exists.
    VlanAccelerated,
    /// Larger than a ring frame: truncated, cannot be forwarded.
    Truncated,
}

/// A memory-mapped TPACKET_V2 RX ring bound to one interface.
#[derive(Debug)]
pub struct RxRing {
    fd: OwnedFd,
    map: NonNull<u8>,
    frames: usize,
    cur: usize,
    ifindex: u32,
}

// SAFETY: the mapping is owned exclusively by this ring; moving the ring to
// another thread moves that exclusive ownership with it.
unsafe impl Send for RxRing {}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
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

impl RxRing {
    /// Opens a ring of `frames` frames on `ifindex` and joins fanout group
    /// `group` (one group id per interface).
    pub fn open(ifindex: u32, group: u16, frames: usize) -> io::Result<Self> {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // The version must be set before the vnet header option.
        let fd = packet_socket(proto, |raw| {
            setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V2)
        })?;
        let raw = fd.as_raw_fd();
        // Our own transmissions (and the host's) are not requests to handle.
        setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            &1 as &libc::c_int,
        )?;
        let reserve = HEADROOM as libc::c_uint;
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RESERVE, &reserve)?;
        let req = libc::tpacket_req {
            tp_block_size: FRAME_SIZE as u32,
            tp_block_nr: frames as u32,
            tp_frame_size: FRAME_SIZE as u32,
            tp_frame_nr: frames as u32,
        };
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
        let len = FRAME_SIZE * frames;
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
        let fanout: u32 =
            u32::from(group) | (libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG) << 16;
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_FANOUT, &fanout)?;
        Ok(ring)
    }

    /// The interface this ring is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn frame_ptr(&self, slot: usize) -> *mut u8 {
        // SAFETY: slot < frames, so the offset stays inside the mapping.
        unsafe { self.map.as_ptr().add(slot * FRAME_SIZE) }
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

    /// Processes up to `max` waiting frames in place: `each` is called per
    /// frame with `ctx` (it may queue the frame's bytes for TX), then `flush`
    /// — which must transmit everything queued from these frames — and only
    /// then are the frames handed back to the kernel. Returns the count.
    pub fn drain<C>(
        &mut self,
        max: usize,
        ctx: &mut C,
        mut each: impl FnMut(&mut C, RxFrame<'_>),
        flush: impl FnOnce(&mut C),
    ) -> usize {
        let start = self.cur;
        let mut n = 0;
        while n < max {
            let slot = (start + n) % self.frames;
            let st = self.status(slot);
            if st & TP_STATUS_USER == 0 {
                break;
            }
            let h = self.header(slot);
            let base = self.frame_ptr(slot);
            let mac = usize::from(h.mac);
            let snap = h.snaplen as usize;
            // The kernel places the vnet header right before the MAC header,
            // and the reserved headroom before that, after sockaddr_ll.
            let lead = HEADROOM + VNET_HDR_LEN;
            let ok_layout = mac >= lead + SLL_OFFSET + 20 && mac + snap <= FRAME_SIZE;
            if ok_layout {
                // SAFETY: [mac - lead, mac + snaplen) lies inside this frame
                // after its headers (checked above); the frame is ours
                // (TP_STATUS_USER) until release() below, and no other slice
                // aliases it.
                let buf =
                    unsafe { std::slice::from_raw_parts_mut(base.add(mac - lead), snap + lead) };
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
                each(
                    ctx,
                    RxFrame {
                        buf,
                        head: HEADROOM,
                        wire_len: h.len as usize,
                        ifindex: self.ifindex,
                        skip,
                    },
                );
            }
            n += 1;
        }
        if n > 0 {
            flush(ctx);
            for i in 0..n {
                self.release((start + i) % self.frames);
            }
            self.cur = (start + n) % self.frames;
        }
        n
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
        // slices outlive drain(), so nothing points into it any more.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), FRAME_SIZE * self.frames);
        }
    }
}
