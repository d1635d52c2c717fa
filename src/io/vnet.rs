//! The one virtio-net header type (`struct virtio_net_hdr`, without
//! `num_buffers`): what the kernel tells a packet socket or TUN device about
//! a frame's offloads, and what uvs hands back on TX.
//!
//! Byte order is native: packet sockets (`PACKET_VNET_HDR`) and TUN devices
//! (`IFF_VNET_HDR`, not `TUNSETVNETLE`) use the legacy CPU-endian layout.
//! Nothing else in uvs reads or writes these bytes by offset.

use uvs_fwd::CsumMode;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum field holds only the
/// pseudo-header sum; `csum_start`/`csum_offset` say where to finish it.
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksums were verified (RX) or are
/// complete (TX to a TUN device).
pub const VNET_F_DATA_VALID: u8 = 2;

/// The fields of a virtio-net header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`; 0 = not a GSO super-packet.
    pub gso_type: u8,
    pub hdr_len: u16,
    /// Segment payload size of a GSO super-packet.
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Size on the wire.
    pub const LEN: usize = 10;

    /// Reads a header from its wire bytes.
    pub fn read(b: &[u8; Self::LEN]) -> VnetHdr {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    /// Writes the header's wire bytes.
    pub fn write(&self, b: &mut [u8; Self::LEN]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }

    /// Writes the header into the first [`LEN`](Self::LEN) bytes of `b`;
    /// false (nothing written) if `b` is shorter.
    pub fn write_to(&self, b: &mut [u8]) -> bool {
        match b.first_chunk_mut::<{ Self::LEN }>() {
            Some(h) => {
                self.write(h);
                true
            }
            None => false,
        }
    }

    /// Reads the header from the first [`LEN`](Self::LEN) bytes of `b`.
    pub fn read_from(b: &[u8]) -> Option<VnetHdr> {
        b.first_chunk::<{ Self::LEN }>().map(Self::read)
    }

    /// A header asking the kernel to finish the L4 checksum at
    /// `start + offset` (frame offsets).
    pub fn pending_csum(start: usize, offset: usize) -> VnetHdr {
        VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            csum_start: start as u16,
            csum_offset: offset as u16,
            ..VnetHdr::default()
        }
    }

    /// Whether the L4 checksum is still to be completed.
    pub fn needs_csum(&self) -> bool {
        self.flags & VNET_F_NEEDS_CSUM != 0
    }

    /// Whether the frame is a GSO super-packet.
    pub fn is_gso(&self) -> bool {
        self.gso_type != 0
    }

    /// How checksums must be maintained when rewriting this frame.
    pub fn csum_mode(&self) -> CsumMode {
        if self.needs_csum() {
            CsumMode::Partial
        } else {
            CsumMode::Full
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: 1,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut b = [0u8; VnetHdr::LEN];
        h.write(&mut b);
        assert_eq!(VnetHdr::read(&b), h);
        assert!(h.needs_csum() && h.is_gso());
        assert_eq!(h.csum_mode(), CsumMode::Partial);
        assert!(!h.write_to(&mut [0u8; 9]));
        assert_eq!(VnetHdr::read_from(&[0u8; 3]), None);
    }
}
