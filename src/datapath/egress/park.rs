//! Neighbour parking as data: packets whose next hop's MAC is not known yet
//! wait here, copied out of the RX ring, bounded in number (the rest are
//! dropped as `neighbour_queue_full`) and in age (then `no_route`), as the
//! kernel bounds its own queue of packets awaiting a neighbour. The engine
//! drains it when the resolver wakes it; nothing here does I/O.

use std::net::IpAddr;

use crate::datapath::pipeline::Verdict;
use crate::datapath::stats::{DropReason, WorkerStats};
use crate::io::VnetHdr;
use crate::sys::neigh::Lookup;

use super::HEADROOM;

/// Most packets parked per worker.
pub const PARK_MAX: usize = 256;
/// Largest frame parked (a jumbo frame).
pub const PARK_FRAME_MAX: usize = 9216;
/// How long a packet waits for its neighbour.
pub const PARK_TIMEOUT_MS: u64 = 3_000;

/// What to do with a parked frame once its next hop is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send it as the pipeline decided (fit, fragment, encapsulate).
    Emit(Verdict),
    /// A complete frame uvs built (an ICMP error): MACs only.
    Plain,
}

/// One parked packet: its frame at `buf[HEADROOM..HEADROOM + len]`.
#[derive(Debug)]
pub struct Parked {
    pub buf: Vec<u8>,
    pub len: usize,
    pub vnet: VnetHdr,
    pub action: Action,
    pub next_hop: IpAddr,
    pub since_ms: u64,
}

/// The bounded queue, with its buffers allocated up front.
#[derive(Debug)]
pub struct ParkQueue {
    parked: Vec<Parked>,
    spare: Vec<Vec<u8>>,
}

impl ParkQueue {
    /// Room for [`PARK_MAX`] packets.
    pub fn new() -> ParkQueue {
        ParkQueue {
            parked: Vec::with_capacity(PARK_MAX),
            spare: (0..PARK_MAX)
                .map(|_| vec![0u8; HEADROOM + PARK_FRAME_MAX])
                .collect(),
        }
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.parked.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }

    /// Copies `frame` in to wait for `next_hop`; drops it (counted) when the
    /// queue is full or the frame too big.
    pub fn park(
        &mut self,
        frame: &[u8],
        vnet: VnetHdr,
        action: Action,
        next_hop: IpAddr,
        now_ms: u64,
        st: &WorkerStats,
    ) {
        if frame.len() > PARK_FRAME_MAX {
            return st.drop(DropReason::ParkFull);
        }
        let Some(mut buf) = self.spare.pop() else {
            return st.drop(DropReason::ParkFull);
        };
        buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        self.parked.push(Parked {
            buf,
            len: frame.len(),
            vnet,
            action,
            next_hop,
            since_ms: now_ms,
        });
    }

    /// Takes out the next packet, from index `*from` on, that is due at
    /// `now_ms`: its neighbour answered (the lookup is not `Pending`) or it
    /// waited too long (returned with `Pending`). The caller hands its
    /// buffer back with [`give_back`](Self::give_back).
    pub fn take_due(
        &mut self,
        mut lookup: impl FnMut(IpAddr) -> Lookup,
        now_ms: u64,
        from: &mut usize,
    ) -> Option<(Parked, Lookup)> {
        while *from < self.parked.len() {
            let p = &self.parked[*from];
            let l = lookup(p.next_hop);
            if l != Lookup::Pending || now_ms.saturating_sub(p.since_ms) >= PARK_TIMEOUT_MS {
                return Some((self.parked.swap_remove(*from), l));
            }
            *from += 1;
        }
        None
    }

    /// Returns a parked packet's buffer to the pool.
    pub fn give_back(&mut self, buf: Vec<u8>) {
        self.spare.push(buf);
    }
}

impl Default for ParkQueue {
    fn default() -> Self {
        Self::new()
    }
}
