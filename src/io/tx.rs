//! Batched transmission on an AF_PACKET socket with a virtio-net header.
//!
//! A worker queues frames (virtio-net header + Ethernet frame, contiguous)
//! during one RX batch and sends them with a single `sendmmsg(2)`. The
//! message array is allocated once; queueing never allocates.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::ring::{packet_socket, setsockopt};

/// One worker's TX socket and its pending batch.
#[derive(Debug)]
pub struct TxBatch {
    fd: OwnedFd,
    iov: Vec<libc::iovec>,
    addr: Vec<libc::sockaddr_ll>,
    len: usize,
    /// Frames the kernel refused (full queue, error), since start.
    pub dropped: u64,
    /// Frames sent, since start.
    pub sent: u64,
}

// SAFETY: the iovec pointers are only dereferenced inside flush() on the
// owning thread, and only between push() and the flush() that follows it.
unsafe impl Send for TxBatch {}

impl TxBatch {
    /// Opens an unbound TX packet socket (protocol 0: it receives nothing)
    /// for batches of up to `cap` frames.
    pub fn new(cap: usize) -> io::Result<Self> {
        let fd = packet_socket(0, |_| Ok(()))?;
        let raw = fd.as_raw_fd();
        // Frames leave as the stack would send them, but without the qdisc
        // layer's locking on this hot path.
        setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            &1 as &libc::c_int,
        )?;
        let iov = vec![
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0
            };
            cap
        ];
        // SAFETY: sockaddr_ll is plain old data; zero is a valid value.
        let addr = vec![unsafe { std::mem::zeroed::<libc::sockaddr_ll>() }; cap];
        Ok(TxBatch {
            fd,
            iov,
            addr,
            len: 0,
            dropped: 0,
            sent: 0,
        })
    }

    /// Queues `buf` (virtio-net header + frame) for `ifindex`. The bytes must
    /// stay alive and unchanged until the next [`flush`](Self::flush); the
    /// RX ring guarantees that for its frames (`RxRing::drain`). Flushes
    /// first when the batch is full.
    pub fn push(&mut self, buf: &[u8], ifindex: u32) {
        if self.len == self.iov.len() {
            self.flush();
        }
        let i = self.len;
        self.iov[i] = libc::iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let a = &mut self.addr[i];
        a.sll_family = libc::AF_PACKET as u16;
        a.sll_ifindex = ifindex as i32;
        // Ethertype of the frame, so the kernel sets skb->protocol right
        // (it matters for GSO segmentation).
        let et = buf
            .get(10 + 12..10 + 14)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        a.sll_protocol = et.to_be();
        self.len += 1;
    }

    /// Frames queued and not yet sent.
    pub fn pending(&self) -> usize {
        self.len
    }

    /// Sends everything queued with as few `sendmmsg` calls as the kernel
    /// allows; frames it refuses are counted in `dropped`.
    pub fn flush(&mut self) {
        let mut off = 0;
        let mut msgs: [libc::mmsghdr; 64] =
            // SAFETY: mmsghdr is plain old data; zero is a valid value.
            unsafe { std::mem::zeroed() };
        while off < self.len {
            let n = (self.len - off).min(msgs.len());
            for (k, m) in msgs.iter_mut().take(n).enumerate() {
                m.msg_hdr.msg_name = (&mut self.addr[off + k] as *mut libc::sockaddr_ll).cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                m.msg_hdr.msg_iov = &mut self.iov[off + k];
                m.msg_hdr.msg_iovlen = 1;
                m.msg_len = 0;
            }
            // SAFETY: msgs[..n] point at live iovecs/addresses owned by self,
            // whose buffers the caller keeps alive until this flush.
            let rc = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
            if rc <= 0 {
                // Skip the frame the kernel refused (or the whole chunk on
                // EAGAIN) rather than spinning: a drop the caller can count.
                let skip =
                    if rc < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                        n
                    } else {
                        1
                    };
                self.dropped += skip as u64;
                off += skip;
            } else {
                self.sent += rc as u64;
                off += rc as usize;
            }
        }
        self.len = 0;
    }
}

impl AsRawFd for TxBatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
