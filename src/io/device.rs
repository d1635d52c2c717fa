//! The device seam: what the engine needs from a packet backend (AF_PACKET
//! today, AF_XDP next), in the manner of smoltcp's `phy::Device`.
//!
//! * An [`RxSource`] hands out received frames a batch at a time
//!   ([`RxSource::rx_batch`]). Each [`RxFrame`] borrows the batch, so frames
//!   cannot outlive it; dropping the batch gives every frame back to the
//!   device. A frame comes with its offload metadata, read once
//!   ([`VnetHdr`]; all zero for a device without offloads), and free
//!   headroom before it, where tunnel headers can be prepended in place.
//! * A [`TxSink`] opens a [`TxQueue`] for one round. The queue's lifetime
//!   `'b` is that of the buffers it may send *in place*
//!   ([`TxQueue::forward`]: typically RX frames of a batch that outlives the
//!   queue); everything else is copied into sink-owned slots
//!   ([`TxQueue::copy`]). Dropping the queue flushes it, so nothing queued
//!   ever points at a buffer the borrow checker has let go. The borrow is
//!   the type: no caller has to remember to flush for soundness.
//!
//! Order in a worker: open the RX batch, then the TX queue (so the queue
//! drops first and transmits before the frames are given back).

use std::os::fd::AsRawFd;

use super::vnet::VnetHdr;

/// Frames a device delivers that uvs leaves alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxSkip {
    /// Not addressed to this host's MAC (broadcast, multicast, promiscuous).
    NotForHost,
    /// The kernel had already moved the 802.1Q tag out of the frame; the
    /// packet is seen again on the VLAN interface if one exists.
    VlanAccelerated,
    /// Larger than a device buffer: truncated, cannot be forwarded (a drop,
    /// to be counted).
    Truncated,
}

/// One received frame, borrowed from its batch.
#[derive(Debug)]
pub struct RxFrame<'a> {
    /// Free headroom, then the Ethernet frame at `at`, to the end. The
    /// headroom may be overwritten (tunnel headers, a TX header).
    pub buf: &'a mut [u8],
    /// Offset of the Ethernet frame in `buf`.
    pub at: usize,
    /// Offload metadata, read once from the device.
    pub vnet: VnetHdr,
    /// Length of the packet on the wire (may exceed what was kept).
    pub wire_len: usize,
    /// The interface it arrived on.
    pub ifindex: u32,
    /// Why the frame must not be processed, if so.
    pub skip: Option<RxSkip>,
}

impl RxFrame<'_> {
    /// The Ethernet frame.
    pub fn frame(&self) -> &[u8] {
        &self.buf[self.at..]
    }
    /// The Ethernet frame, writable.
    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.at..]
    }
}

/// A batch of received frames; dropping it returns them to the device.
pub trait RxBatch {
    /// The next frame, or `None` when the batch is exhausted. Each frame is
    /// handed out once; all may be held at the same time (they borrow the
    /// batch immutably and never alias).
    fn next_frame(&self) -> Option<RxFrame<'_>>;
}

/// A receive queue of one interface.
pub trait RxSource: AsRawFd {
    /// The batch type, borrowing the source.
    type Batch<'a>: RxBatch
    where
        Self: 'a;

    /// Takes up to `max` waiting frames (possibly none) as one batch.
    fn rx_batch(&mut self, max: usize) -> Self::Batch<'_>;

    /// The interface this source receives on.
    fn ifindex(&self) -> u32;

    /// Called instead of sleeping while a worker busy-polls
    /// (`--busy-poll`): a chance to make the kernel deliver (AF_XDP: a
    /// non-blocking receive call that runs the device's NAPI poll). A ring
    /// in memory the kernel fills needs nothing: the default does nothing.
    fn busy_poll(&mut self) {}

    /// Packets the kernel dropped for this source since the last call (its
    /// queue was full): reads and resets the kernel's count. A syscall:
    /// call it periodically, not per packet.
    fn take_kernel_drops(&mut self) -> std::io::Result<u64>;
}

/// Totals of a TX sink since the last [`TxSink::take_counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxCounts {
    /// Frames handed to the kernel / the wire.
    pub sent: u64,
    /// Frames refused (full queue, send error, no room): each one lost.
    pub dropped: u64,
}

/// Frames queued for transmission during one round.
pub trait TxQueue<'b> {
    /// Sends `buf[at..]` (an Ethernet frame) out of `ifindex` in place, with
    /// offload metadata `vnet`. The sink may overwrite up to
    /// [`TxSink::HEADROOM`] bytes before `at`; with less room than that the
    /// frame is dropped (counted).
    fn forward(&mut self, buf: &'b mut [u8], at: usize, vnet: &VnetHdr, ifindex: u32);

    /// Copies `frame` into a sink-owned slot and queues it; the caller's
    /// buffer is free again on return. A frame larger than a slot is
    /// dropped (counted).
    fn copy(&mut self, frame: &[u8], vnet: &VnetHdr, ifindex: u32);

    /// Transmits everything queued so far (dropping the queue does too).
    fn flush(&mut self);
}

/// A transmit side.
pub trait TxSink {
    /// Bytes [`TxQueue::forward`] may use before a frame.
    const HEADROOM: usize;
    /// Largest frame [`TxQueue::copy`] takes.
    const COPY_MAX: usize;

    /// The queue type: borrows the sink for `'t`, in-place buffers for `'b`.
    type Queue<'t, 'b>: TxQueue<'b>
    where
        Self: 't;

    /// Opens a queue; it flushes when dropped.
    fn queue<'t, 'b>(&'t mut self) -> Self::Queue<'t, 'b>;

    /// Sent and dropped frames since the last call.
    fn take_counts(&mut self) -> TxCounts;

    /// Frames sent another way than the sink's first choice since the last
    /// call (AF_PACKET's TX ring full: sent with `sendmmsg` instead); not
    /// losses, but counted so a too-small ring shows.
    fn take_fallbacks(&mut self) -> u64 {
        0
    }
}
