//! The device seam over an AF_XDP socket's halves: [`XskRx`] as an
//! [`RxSource`] (frames lent out of a batch, back to the fill ring when it
//! drops) and [`XskTx`] as a [`TxSink`] (frames copied into TX frames,
//! published and kicked when the queue drops).

use std::cell::Cell;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, RawFd};

use super::gather::{GATHER_HEADROOM, GATHER_MAX};
use super::xsk::{XskRx, XskTx, AT_CALLER, AT_KERNEL, AT_USER, MIN_FRAME};
use crate::io::device::{RxBatch, RxFrame, RxSource, TxCounts, TxQueue, TxSink};
use crate::io::vnet::VnetHdr;
use crate::io::xdp::csum::implied_vnet;
use crate::io::xdp::multibuf;

/// One RX batch of an [`XskRx`]: frames go back to the fill ring on drop.
#[derive(Debug)]
pub struct XskRxBatch<'a> {
    rx: &'a mut XskRx,
    n: u32,
    taken: Cell<u32>,
    bad: Cell<u64>,
}

/// What became of a multi-descriptor packet.
enum Gathered<'a> {
    Frame(RxFrame<'a>),
    /// Dropped (counted); go on with the next descriptor.
    Dropped,
    /// Not taken: its descriptors wait for the next batch.
    Later,
}

impl XskRxBatch<'_> {
    /// Gathers the packet whose first descriptor is `i` (flagged
    /// `XDP_PKT_CONTD`) into a gather slot.
    fn gather(&self, i: u32) -> Gathered<'_> {
        let contd = |k: u32| self.rx.rx.get_options(k) & libc::XDP_PKT_CONTD != 0;
        let mut last = i;
        while last < self.n && contd(last) {
            last += 1;
        }
        let (Some(g), true) = (self.rx.gather.as_ref(), last < self.n) else {
            // Without SG the kernel never chains descriptors; a chain not
            // complete in this batch is read whole by the next one.
            return Gathered::Later;
        };
        let Some(slot) = g.take() else {
            return Gathered::Later;
        };
        self.taken.set(last + 1);
        let mut len = 0usize;
        let (mut bad, mut too_large) = (false, false);
        for k in i..=last {
            let (addr, l) = self.rx.rx.get_desc(k);
            let l = l as usize;
            let state = self
                .rx
                .geom
                .check(addr, l as u32)
                .map(|(base, _)| &self.rx.state[self.rx.geom.index(base)]);
            match state {
                Some(st) if st.get() == AT_KERNEL => st.set(AT_CALLER),
                _ => {
                    self.bad.set(self.bad.get() + 1);
                    bad = true;
                    continue;
                }
            }
            if len + l > GATHER_MAX {
                too_large = true;
            }
            if bad || too_large {
                continue;
            }
            // SAFETY: [addr, addr+l) lies inside one UMEM frame (checked);
            // the kernel handed the frame back on the RX ring and will not
            // write it before it is refilled (in `drop`); the frame moved
            // to AT_CALLER and is only read here.
            let src = unsafe {
                std::slice::from_raw_parts(self.rx.umem.ptr.as_ptr().add(addr as usize), l)
            };
            slot[GATHER_HEADROOM + len..GATHER_HEADROOM + len + l].copy_from_slice(src);
            len += l;
        }
        if too_large && !bad {
            g.too_large.set(g.too_large.get() + 1);
        }
        if bad || too_large {
            return Gathered::Dropped;
        }
        g.packets.set(g.packets.get() + 1);
        let buf = &mut slot[..GATHER_HEADROOM + len];
        let vnet = multibuf::super_vnet(&mut buf[GATHER_HEADROOM..], g.seg_mtu, implied_vnet);
        Gathered::Frame(RxFrame {
            buf,
            at: GATHER_HEADROOM,
            vnet,
            wire_len: len,
            ifindex: self.rx.ifindex,
            skip: None,
        })
    }
}

impl RxBatch for XskRxBatch<'_> {
    fn next_frame(&self) -> Option<RxFrame<'_>> {
        loop {
            let i = self.taken.get();
            if i >= self.n {
                return None;
            }
            if self.rx.rx.get_options(i) & libc::XDP_PKT_CONTD != 0 {
                match self.gather(i) {
                    Gathered::Frame(f) => return Some(f),
                    Gathered::Dropped => continue,
                    Gathered::Later => return None,
                }
            }
            self.taken.set(i + 1);
            let (addr, len) = self.rx.rx.get_desc(i);
            let Some((base, _)) = self.rx.geom.check(addr, len) else {
                self.bad.set(self.bad.get() + 1);
                continue;
            };
            let state = &self.rx.state[self.rx.geom.index(base)];
            if state.get() != AT_KERNEL {
                // Not the kernel's to return, or returned twice.
                self.bad.set(self.bad.get() + 1);
                continue;
            }
            state.set(AT_CALLER);
            let at = (addr - base) as usize;
            // SAFETY: [base, addr+len) lies inside one UMEM frame (checked);
            // the kernel held the frame (state) and handed it back on the RX
            // ring, and will not write it before it is refilled (in `drop`,
            // after every frame borrowed from this batch is gone). The state
            // moved to AT_CALLER, so the frame is lent at most once per
            // batch: no two `&mut` overlap.
            let buf = unsafe {
                std::slice::from_raw_parts_mut(
                    self.rx.umem.ptr.as_ptr().add(base as usize),
                    at + len as usize,
                )
            };
            // XDP gives no offload metadata: frames are never GSO
            // super-packets, and a pending checksum is read off the frame.
            let vnet = implied_vnet(&buf[at..]);
            return Some(RxFrame {
                buf,
                at,
                vnet,
                wire_len: len as usize,
                ifindex: self.rx.ifindex,
                skip: None,
            });
        }
    }
}

impl Drop for XskRxBatch<'_> {
    fn drop(&mut self) {
        let taken = self.taken.get();
        for i in 0..taken {
            let (addr, len) = self.rx.rx.get_desc(i);
            if let Some((base, _)) = self.rx.geom.check(addr, len) {
                let state = &self.rx.state[self.rx.geom.index(base)];
                if state.get() == AT_CALLER {
                    state.set(AT_USER);
                    self.rx.free.push(base);
                }
            }
        }
        self.rx.bad_desc += self.bad.get();
        if taken > 0 {
            self.rx.rx.release(taken);
        }
        self.rx.refill();
    }
}

impl AsRawFd for XskRx {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl RxSource for XskRx {
    type Batch<'a> = XskRxBatch<'a>;

    fn rx_batch(&mut self, max: usize) -> XskRxBatch<'_> {
        let mut n = self.rx.ready(max.min(u32::MAX as usize) as u32);
        if let Some(g) = self.gather.as_mut() {
            g.reset();
            // A packet's descriptors are published together: take the rest
            // of a chain the batch limit cut, so it is never left half.
            while n > 0 && self.rx.get_options(n - 1) & libc::XDP_PKT_CONTD != 0 {
                let more = self.rx.ready(n + 64);
                if more == n {
                    break;
                }
                n = more;
            }
        }
        XskRxBatch {
            rx: self,
            n,
            taken: Cell::new(0),
            bad: Cell::new(0),
        }
    }

    fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn busy_poll(&mut self) {
        XskRx::busy_poll(self);
    }

    /// Always 0: AF_XDP's drops have their own names in `uvs stats`
    /// (`drop.xdp_*`, read from the socket by [`XskRx::stats_handle`]), so
    /// they are not also counted as `drop.rx_queue_full`. Publishes uvs's
    /// own receive-side count for that reader.
    fn take_kernel_drops(&mut self) -> io::Result<u64> {
        self.publish();
        Ok(0)
    }
}

/// A round of transmissions on an [`XskTx`]; kicks the kernel when dropped.
#[derive(Debug)]
pub struct XskTxQueue<'t, 'b> {
    tx: &'t mut XskTx,
    _in_place: PhantomData<&'b mut [u8]>,
}

impl<'b> TxQueue<'b> for XskTxQueue<'_, 'b> {
    fn forward(&mut self, buf: &'b mut [u8], at: usize, vnet: &VnetHdr, ifindex: u32) {
        // Copied: the frame may belong to another socket's UMEM, and copy
        // mode copies once more in the kernel anyway.
        self.tx.queue_copy(&buf[at.min(buf.len())..], vnet, ifindex);
    }

    fn copy(&mut self, frame: &[u8], vnet: &VnetHdr, ifindex: u32) {
        self.tx.queue_copy(frame, vnet, ifindex);
    }

    fn flush(&mut self) {
        self.tx.flush();
    }
}

impl Drop for XskTxQueue<'_, '_> {
    fn drop(&mut self) {
        self.tx.flush();
    }
}

impl TxSink for XskTx {
    const HEADROOM: usize = 0;
    const COPY_MAX: usize = MIN_FRAME;

    type Queue<'t, 'b>
        = XskTxQueue<'t, 'b>
    where
        Self: 't;

    fn queue<'t, 'b>(&'t mut self) -> XskTxQueue<'t, 'b> {
        XskTxQueue {
            tx: self,
            _in_place: PhantomData,
        }
    }

    fn take_counts(&mut self) -> TxCounts {
        std::mem::take(&mut self.counts)
    }
}
