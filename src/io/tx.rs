//! Batched transmission on an AF_PACKET socket with a virtio-net header
//! (`PACKET_QDISC_BYPASS`: frames skip the qdisc layer's locking).
//!
//! A worker opens a [`PacketTxQueue`] per round and queues frames: in place
//! (RX ring frames, whose borrow the queue holds) or copied into owned slots
//! (ICMP errors, fragments, segments, parked packets). Dropping the queue
//! sends everything with as few `sendmmsg(2)` calls as the kernel allows.
//! All memory (message arrays, slots) is allocated once; queueing never
//! allocates.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::device::{TxCounts, TxQueue, TxSink};
use super::ring::{packet_socket, setsockopt};
use super::vnet::VnetHdr;

/// Bytes per copy slot: a virtio-net header, a jumbo frame, tunnel headers.
const SLOT: usize = 9_472;
/// Messages per `sendmmsg` call.
const MMSG: usize = 256;

/// One worker's TX socket, its message arrays and its copy slots.
#[derive(Debug)]
pub struct TxBatch {
    fd: OwnedFd,
    iov: Vec<libc::iovec>,
    addr: Vec<libc::sockaddr_ll>,
    len: usize,
    slots: Vec<u8>,
    slots_used: usize,
    /// The message headers of one `sendmmsg`, kept so that a send fills
    /// only the entries it uses (no 16 KiB array zeroed per round).
    msgs: Box<[libc::mmsghdr]>,
    counts: TxCounts,
}

// SAFETY: the iovec pointers point into buffers a `PacketTxQueue` borrows
// (or into `slots`, owned); they are only dereferenced by flush() on the
// thread that holds the queue, and reset when a queue opens.
unsafe impl Send for TxBatch {}

impl TxBatch {
    /// Opens an unbound TX packet socket (protocol 0: it receives nothing)
    /// for batches of up to `cap` frames, `copy_slots` of them copied.
    pub fn new(cap: usize, copy_slots: usize) -> io::Result<Self> {
        let fd = packet_socket(0, |_| Ok(()))?;
        setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            &1 as &libc::c_int,
        )?;
        let iov = vec![
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0
            };
            cap.max(1)
        ];
        // SAFETY: sockaddr_ll is plain old data; zero is a valid value.
        let addr = vec![unsafe { std::mem::zeroed::<libc::sockaddr_ll>() }; cap.max(1)];
        Ok(TxBatch {
            fd,
            iov,
            addr,
            len: 0,
            slots: vec![0u8; SLOT * copy_slots.max(1)],
            slots_used: 0,
            // SAFETY: mmsghdr is plain old data; zero is a valid value.
            msgs: vec![unsafe { std::mem::zeroed::<libc::mmsghdr>() }; MMSG].into_boxed_slice(),
            counts: TxCounts::default(),
        })
    }

    fn slot_count(&self) -> usize {
        self.slots.len() / SLOT
    }

    /// Queues `len` bytes at `ptr` (virtio-net header + frame).
    fn enqueue(&mut self, ptr: *const u8, len: usize, ifindex: u32, ethertype: u16) {
        if self.len == self.iov.len() {
            self.send_all();
        }
        let i = self.len;
        self.iov[i] = libc::iovec {
            iov_base: ptr as *mut libc::c_void,
            iov_len: len,
        };
        let a = &mut self.addr[i];
        a.sll_family = libc::AF_PACKET as u16;
        a.sll_ifindex = ifindex as i32;
        // So the kernel sets skb->protocol right (GSO segmentation needs it).
        a.sll_protocol = ethertype.to_be();
        self.len += 1;
    }

    fn send_all(&mut self) {
        if self.len == 0 {
            self.slots_used = 0;
            return;
        }
        let mut off = 0;
        let msgs = &mut self.msgs;
        while off < self.len {
            let n = (self.len - off).min(MMSG);
            for (k, m) in msgs.iter_mut().take(n).enumerate() {
                m.msg_hdr.msg_name = (&mut self.addr[off + k] as *mut libc::sockaddr_ll).cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                m.msg_hdr.msg_iov = &mut self.iov[off + k];
                m.msg_hdr.msg_iovlen = 1;
                m.msg_len = 0;
            }
            // SAFETY: msgs[..n] point at iovecs/addresses owned by self; each
            // iovec points into `slots` or into a buffer the open queue
            // borrows for its whole life (entries are reset when a queue
            // opens, so none outlives its borrow).
            let rc = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
            if rc <= 0 {
                // Skip the refused frame (the whole chunk on EAGAIN) rather
                // than spin: a drop, counted.
                let skip =
                    if rc < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                        n
                    } else {
                        1
                    };
                self.counts.dropped += skip as u64;
                off += skip;
            } else {
                self.counts.sent += rc as u64;
                off += rc as usize;
            }
        }
        self.len = 0;
        self.slots_used = 0;
    }
}

fn ethertype(frame: &[u8]) -> u16 {
    frame
        .get(12..14)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

/// One round's queue on a [`TxBatch`]; sends what is queued when dropped.
#[derive(Debug)]
pub struct PacketTxQueue<'t, 'b> {
    tx: &'t mut TxBatch,
    _bufs: PhantomData<&'b mut [u8]>,
}

impl<'b> TxQueue<'b> for PacketTxQueue<'_, 'b> {
    fn forward(&mut self, buf: &'b mut [u8], at: usize, vnet: &VnetHdr, ifindex: u32) {
        let Some(h) = at.checked_sub(VnetHdr::LEN) else {
            self.tx.counts.dropped += 1;
            return;
        };
        let _ = vnet.write_to(&mut buf[h..at]);
        let et = ethertype(&buf[at..]);
        // The slice stays borrowed ('b) for the queue's life; flush (at the
        // latest in drop) sends it before the borrow ends.
        self.tx
            .enqueue(buf[h..].as_ptr(), buf.len() - h, ifindex, et);
    }

    fn copy(&mut self, frame: &[u8], vnet: &VnetHdr, ifindex: u32) {
        let n = VnetHdr::LEN + frame.len();
        if n > SLOT {
            self.tx.counts.dropped += 1;
            return;
        }
        // Sending first when either array is full keeps this slot out of
        // reach of the reset that sending does.
        if self.tx.slots_used == self.tx.slot_count() || self.tx.len == self.tx.iov.len() {
            self.tx.send_all();
        }
        let at = self.tx.slots_used * SLOT;
        self.tx.slots_used += 1;
        let s = &mut self.tx.slots[at..at + n];
        let _ = vnet.write_to(s);
        s[VnetHdr::LEN..].copy_from_slice(frame);
        let p = s.as_ptr();
        self.tx.enqueue(p, n, ifindex, ethertype(frame));
    }

    fn flush(&mut self) {
        self.tx.send_all();
    }
}

impl Drop for PacketTxQueue<'_, '_> {
    fn drop(&mut self) {
        self.tx.send_all();
    }
}

impl TxSink for TxBatch {
    const HEADROOM: usize = VnetHdr::LEN;
    const COPY_MAX: usize = SLOT - VnetHdr::LEN;
    type Queue<'t, 'b>
        = PacketTxQueue<'t, 'b>
    where
        Self: 't;

    fn queue<'t, 'b>(&'t mut self) -> PacketTxQueue<'t, 'b> {
        // A queue that was leaked (mem::forget) never flushed: its entries
        // may point at buffers no longer borrowed. Discard them, counted.
        if self.len > 0 {
            self.counts.dropped += self.len as u64;
            self.len = 0;
            self.slots_used = 0;
        }
        PacketTxQueue {
            tx: self,
            _bufs: PhantomData,
        }
    }

    fn take_counts(&mut self) -> TxCounts {
        std::mem::take(&mut self.counts)
    }
}

impl AsRawFd for TxBatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
