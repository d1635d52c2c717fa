//! Packet I/O: AF_PACKET RX rings (one per worker and interface, in one
//! PACKET_FANOUT group per interface) and batched TX with `sendmmsg`.
//!
//! Both directions carry a virtio-net header (`PACKET_VNET_HDR`): on RX the
//! kernel tells us whether the L4 checksum is still pending (a packet from a
//! local stack on veth, `NEEDS_CSUM`) and whether the frame is a TSO/GSO
//! super-packet; on TX we hand the same header back, so the kernel completes
//! the checksum and segments on the way out. Nothing in the lab turns
//! offloads off.

pub mod ring;
pub mod tx;
pub mod xdp;

pub use ring::{RxFrame, RxRing};
pub use tx::TxBatch;

/// Size of `struct virtio_net_hdr` (no `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum field holds only the
/// pseudo-header sum; `csum_start`/`csum_offset` say where to finish it.
pub const VNET_F_NEEDS_CSUM: u8 = 1;

/// Reads the `flags` byte of a virtio-net header.
pub fn vnet_flags(hdr: &[u8]) -> u8 {
    hdr.first().copied().unwrap_or(0)
}

/// Reads `gso_type` of a virtio-net header (0 = not a GSO super-packet).
pub fn vnet_gso_type(hdr: &[u8]) -> u8 {
    hdr.get(1).copied().unwrap_or(0)
}
