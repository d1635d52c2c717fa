//! The TX sink of one worker in AF_XDP mode: one socket's TX half per
//! interface (AF_XDP transmits on the device its socket is bound to), the
//! right one picked by interface index — a short linear scan over the
//! attached interfaces, not over anything that grows with configuration.
//!
//! AF_XDP cannot transmit a GSO super-packet (its TX has no offload
//! metadata; multi-buffer TX only chains buffers). Super-packets — TCP
//! packets gathered from several RX descriptors
//! ([`super::multibuf`]) — and frames larger than a UMEM frame go out
//! instead through the AF_PACKET backend's TX socket ([`TxBatch`]) with a
//! virtio-net header, so the kernel hands them on whole (a veth peer
//! receives one large packet) or cuts them to `gso_size` itself. Without
//! that socket they are dropped and counted (`drop.tx_failed`).
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::sys::xsk::{XskTx, MIN_FRAME};
use crate::io::device::{TxCounts, TxQueue, TxSink};
use crate::io::tx::TxBatch;
use crate::io::vnet::VnetHdr;

/// TX halves of one worker, one per interface, and the packet socket for
/// what AF_XDP cannot send.
#[derive(Debug, Default)]
pub struct XskTxSet {
    ports: Vec<XskTx>,
    /// Frames for an interface without a socket here.
    no_port: u64,
    /// Super-packets and frames over a UMEM frame go here.
    packet: Option<TxBatch>,
    /// Frames handed to `packet` (`xdp.tx_packet_socket`), this round's.
    via_packet: u64,
    /// `via_packet` summed, published once per round for `uvs stats`.
    published: Arc<AtomicU64>,
}

impl XskTxSet {
    /// A set of `ports` (one per interface).
    pub fn new(ports: Vec<XskTx>) -> Self {
        XskTxSet {
            ports,
            ..XskTxSet::default()
        }
    }

    /// The set, with `packet` for super-packets and frames over a UMEM
    /// frame.
    pub fn with_packet_socket(ports: Vec<XskTx>, packet: TxBatch) -> Self {
        XskTxSet {
            packet: Some(packet),
            ..XskTxSet::new(ports)
        }
    }

    /// Frames sent through the packet socket so far (read by `uvs stats`).
    pub fn packet_socket_sent(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.published)
    }
}

fn send(ports: &mut [XskTx], no_port: &mut u64, frame: &[u8], vnet: &VnetHdr, ifindex: u32) {
    match ports.iter_mut().find(|p| p.ifindex() == ifindex) {
        Some(p) => p.queue_copy(frame, vnet, ifindex),
        None => *no_port += 1,
    }
}

/// Whether a frame must leave through the packet socket.
fn too_big_for_xsk(len: usize, vnet: &VnetHdr) -> bool {
    vnet.is_gso() || len > MIN_FRAME
}

/// One round of transmissions over the set; flushes when dropped.
#[derive(Debug)]
pub struct XskSetQueue<'t, 'b> {
    ports: &'t mut Vec<XskTx>,
    no_port: &'t mut u64,
    via_packet: &'t mut u64,
    /// The packet socket, until its queue is opened (on the first frame
    /// that needs it: a round without one costs nothing).
    packet: Option<&'t mut TxBatch>,
    packet_q: Option<<TxBatch as TxSink>::Queue<'t, 'b>>,
}

impl<'t, 'b> XskSetQueue<'t, 'b> {
    fn packet_queue(&mut self) -> Option<&mut <TxBatch as TxSink>::Queue<'t, 'b>> {
        if self.packet_q.is_none() {
            self.packet_q = self.packet.take().map(|p| p.queue());
        }
        self.packet_q.as_mut()
    }
}

impl<'b> TxQueue<'b> for XskSetQueue<'_, 'b> {
    fn forward(&mut self, buf: &'b mut [u8], at: usize, vnet: &VnetHdr, ifindex: u32) {
        let at = at.min(buf.len());
        if too_big_for_xsk(buf.len() - at, vnet) {
            if let Some(q) = self.packet_queue() {
                // In place: the virtio-net header goes in the headroom.
                q.forward(buf, at, vnet, ifindex);
                *self.via_packet += 1;
                return;
            }
        }
        send(self.ports, self.no_port, &buf[at..], vnet, ifindex);
    }

    fn copy(&mut self, frame: &[u8], vnet: &VnetHdr, ifindex: u32) {
        if too_big_for_xsk(frame.len(), vnet) {
            if let Some(q) = self.packet_queue() {
                q.copy(frame, vnet, ifindex);
                *self.via_packet += 1;
                return;
            }
        }
        send(self.ports, self.no_port, frame, vnet, ifindex);
    }

    fn flush(&mut self) {
        if let Some(q) = self.packet_q.as_mut() {
            q.flush();
        }
        for p in self.ports.iter_mut() {
            p.flush();
        }
    }
}

impl Drop for XskSetQueue<'_, '_> {
    fn drop(&mut self) {
        self.flush();
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
            ports: &mut self.ports,
            no_port: &mut self.no_port,
            via_packet: &mut self.via_packet,
            packet: self.packet.as_mut(),
            packet_q: None,
        }
    }

    fn take_counts(&mut self) -> TxCounts {
        let mut c = TxCounts {
            sent: 0,
            dropped: std::mem::take(&mut self.no_port),
        };
        if let Some(p) = self.packet.as_mut() {
            let pc = p.take_counts();
            c.sent += pc.sent;
            c.dropped += pc.dropped;
        }
        let v = std::mem::take(&mut self.via_packet);
        if v > 0 {
            // Only this worker writes it; once per round, not per packet.
            self.published.fetch_add(v, Ordering::Relaxed);
        }
        for p in &mut self.ports {
            let pc = p.take_counts();
            c.sent += pc.sent;
            c.dropped += pc.dropped;
        }
        c
    }
}
