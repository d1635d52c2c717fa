//! Packet I/O behind the device seam ([`device`]): an RX source and a TX
//! sink trait, one virtio-net header type ([`VnetHdr`]), and the AF_PACKET
//! backend — TPACKET RX rings (one per worker and interface, in one
//! PACKET_FANOUT group per interface) and TX through `PACKET_TX_RING`
//! ([`txring`], one kick per flush) with batched `sendmmsg` ([`tx`]) for
//! GSO packets and as the `--tx sendmmsg` alternative.
//!
//! Both directions carry a virtio-net header (`PACKET_VNET_HDR`): on RX the
//! kernel tells us whether the L4 checksum is still pending (a packet from a
//! local stack on veth, `NEEDS_CSUM`) and whether the frame is a TSO/GSO
//! super-packet; on TX we hand a header back, so the kernel completes the
//! checksum and segments on the way out. Nothing in the lab turns offloads
//! off.

pub mod device;
pub mod idle;
pub mod place;
pub mod ring;
pub mod tun_local;
pub mod tx;
pub mod txring;
pub mod vnet;
pub mod xdp;

pub use device::{RxBatch, RxFrame, RxSkip, RxSource, TxCounts, TxQueue, TxSink};
pub use ring::{Fanout, RxRing};
pub use tx::TxBatch;
pub use txring::RingTx;
pub use vnet::{VnetHdr, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM};
