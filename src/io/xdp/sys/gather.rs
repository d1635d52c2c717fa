//! Scratch space where an RX batch gathers a packet that arrived in
//! several descriptors (`XDP_USE_SG`): a few slots of 64 KiB plus headroom,
//! mapped once per socket, lent at most once per batch each.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::ring::Mmap;

/// Free bytes before a gathered frame (tunnel headers, the virtio-net
/// header of the TX side's packet socket).
pub const GATHER_HEADROOM: usize = 256;
/// Largest gathered packet: a 64 KiB IP packet and its Ethernet header.
pub const GATHER_MAX: usize = 65_535 + 14;
/// One slot: headroom and packet, rounded up to a page.
const SLOT: usize = (GATHER_HEADROOM + GATHER_MAX).div_ceil(4096) * 4096;
/// Gathered packets one batch may hold at once; the batch ends early when
/// they are all lent (the rest waits in the RX ring for the next one).
pub const GATHER_SLOTS: usize = 8;

/// The gather slots of one RX half and their counters.
#[derive(Debug)]
pub struct Gather {
    map: Mmap,
    /// Slots lent in the current batch.
    pub(super) used: Cell<usize>,
    /// The IP MTU segments of a gathered TCP super-packet must fit.
    pub(super) seg_mtu: usize,
    /// Packets gathered from several descriptors.
    pub(super) packets: Cell<u64>,
    /// Multi-descriptor packets dropped: larger than a slot.
    pub(super) too_large: Cell<u64>,
    /// The two counters as last published, for `uvs stats`.
    pub(super) published: Arc<[AtomicU64; 2]>,
}

impl Gather {
    /// Maps the slots; `seg_mtu` is the segment MTU of super-packets.
    pub fn new(seg_mtu: usize) -> io::Result<Gather> {
        let map = Mmap::new(
            SLOT * GATHER_SLOTS,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )?;
        Ok(Gather {
            map,
            used: Cell::new(0),
            seg_mtu,
            packets: Cell::new(0),
            too_large: Cell::new(0),
            published: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]),
        })
    }

    /// Takes the next free slot of this batch, if any is left. (Sound as a
    /// safe function: slots are lent in increasing order until
    /// [`Gather::reset`], which needs `&mut self`, so no slice lent here is
    /// alive then.)
    #[allow(clippy::mut_from_ref)]
    pub(super) fn take(&self) -> Option<&mut [u8]> {
        let i = self.used.get();
        if i >= GATHER_SLOTS {
            return None;
        }
        self.used.set(i + 1);
        // SAFETY: slot i lies inside the mapping, which lives as long as
        // `self`; it is lent once between resets (the counter only grows),
        // so no two live slices overlap; `reset` needs `&mut self`, which
        // ends every borrow of `self` these slices hold.
        Some(unsafe { std::slice::from_raw_parts_mut(self.map.ptr.as_ptr().add(i * SLOT), SLOT) })
    }

    /// Every slot is free again (a new batch).
    pub(super) fn reset(&mut self) {
        self.used.set(0);
    }

    /// Makes the counters visible to the stats reader.
    pub(super) fn publish(&self) {
        self.published[0].store(self.packets.get(), Ordering::Relaxed);
        self.published[1].store(self.too_large.get(), Ordering::Relaxed);
    }
}
