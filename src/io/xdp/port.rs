//! The TX sink of one worker in AF_XDP mode: one socket's TX half per
//! interface (AF_XDP transmits on the device its socket is bound to), the
//! right one picked by interface index — a short linear scan over the
//! attached interfaces, not over anything that grows with configuration.
#![forbid(unsafe_code)]

use std::marker::PhantomData;

use super::sys::xsk::{XskTx, MIN_FRAME};
use crate::io::device::{TxCounts, TxQueue, TxSink};
use crate::io::vnet::VnetHdr;

/// TX halves of one worker, one per interface.
#[derive(Debug, Default)]
pub struct XskTxSet {
    ports: Vec<XskTx>,
    /// Frames for an interface without a socket here.
    no_port: u64,
}

impl XskTxSet {
    /// A set of `ports` (one per interface).
    pub fn new(ports: Vec<XskTx>) -> Self {
        XskTxSet { ports, no_port: 0 }
    }

    fn send(&mut self, frame: &[u8], vnet: &VnetHdr, ifindex: u32) {
        match self.ports.iter_mut().find(|p| p.ifindex() == ifindex) {
            Some(p) => p.queue_copy(frame, vnet, ifindex),
            None => self.no_port += 1,
        }
    }

    fn flush(&mut self) {
        for p in &mut self.ports {
            p.flush();
        }
    }
}

/// One round of transmissions over the set; flushes when dropped.
#[derive(Debug)]
pub struct XskSetQueue<'t, 'b> {
    set: &'t mut XskTxSet,
    _in_place: PhantomData<&'b mut [u8]>,
}

impl<'b> TxQueue<'b> for XskSetQueue<'_, 'b> {
    fn forward(&mut self, buf: &'b mut [u8], at: usize, vnet: &VnetHdr, ifindex: u32) {
        self.set.send(&buf[at.min(buf.len())..], vnet, ifindex);
    }

    fn copy(&mut self, frame: &[u8], vnet: &VnetHdr, ifindex: u32) {
        self.set.send(frame, vnet, ifindex);
    }

    fn flush(&mut self) {
        self.set.flush();
    }
}

impl Drop for XskSetQueue<'_, '_> {
    fn drop(&mut self) {
        self.set.flush();
    }
}

impl TxSink for XskTxSet {
    const HEADROOM: usize = 0;
    const COPY_MAX: usize = MIN_FRAME;

    type Queue<'t, 'b>
        = XskSetQueue<'t, 'b>
    where
        Self: 't;

    fn queue<'t, 'b>(&'t mut self) -> XskSetQueue<'t, 'b> {
        XskSetQueue {
            set: self,
            _in_place: PhantomData,
        }
    }

    fn take_counts(&mut self) -> TxCounts {
        let mut c = TxCounts {
            sent: 0,
            dropped: std::mem::take(&mut self.no_port),
        };
        for p in &mut self.ports {
            let pc = p.take_counts();
            c.sent += pc.sent;
            c.dropped += pc.dropped;
        }
        c
    }
}
