//! Recognising a pending checksum in a frame XDP delivered.
//!
//! A packet sent by a local stack over veth with checksum offload (the
//! namespace lab; containers) carries in its TCP/UDP checksum field only the
//! pseudo-header sum, the rest left to "hardware". AF_PACKET says so in the
//! virtio-net header; XDP says nothing. So the AF_XDP source checks: when
//! the field equals the folded pseudo-header sum, the frame is marked
//! `NEEDS_CSUM` (start, offset), the pipeline keeps the field a
//! pseudo-header sum, and the TX side completes it in software.
//!
//! A complete checksum that happens to equal the pseudo-header sum (about
//! one packet in 65,536) is marked too, harmlessly: completing it from the
//! data gives the same, correct value. Only a corrupted packet with that
//! exact value would be "repaired". SCTP's CRC, IPv6 packets with
//! extension headers and IPv4 fragments are not recognised (left as they
//! are).
//! [`finish_csum`] is the software completion the TX side uses.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use uvs_fwd::checksum::{fold, pseudo_header_v4, pseudo_header_v6};

use crate::io::vnet::VnetHdr;

/// The virtio-net header the frame's checksum field implies: pending
/// (`NEEDS_CSUM`) or none.
pub fn implied_vnet(f: &[u8]) -> VnetHdr {
    pending(f).map_or_else(VnetHdr::default, |(start, off)| {
        VnetHdr::pending_csum(start, off)
    })
}

fn pending(f: &[u8]) -> Option<(usize, usize)> {
    let (l4, proto, pseudo) = match f.get(12..14)? {
        [0x08, 0x00] => {
            let ip = f.get(14..34)?;
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            // Fragments are not offloaded.
            if ihl < 20 || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 || total < ihl {
                return None;
            }
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            let len = (total - ihl) as u32;
            (14 + ihl, ip[9], pseudo_header_v4(&src, &dst, ip[9], len))
        }
        [0x86, 0xdd] => {
            let ip = f.get(14..54)?;
            let src: [u8; 16] = ip[8..24].try_into().ok()?;
            let dst: [u8; 16] = ip[24..40].try_into().ok()?;
            let len = u32::from(u16::from_be_bytes([ip[4], ip[5]]));
            let (s, d) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            (54, ip[6], pseudo_header_v6(&s, &d, ip[6], len))
        }
        _ => return None,
    };
    let off = match proto {
        6 => 16,
        17 => 6,
        _ => return None,
    };
    let field = f.get(l4 + off..l4 + off + 2)?;
    let stored = u16::from_be_bytes([field[0], field[1]]);
    // UDP's 0 means "no checksum", never a pending one.
    (stored != 0 && stored == fold(pseudo)).then_some((l4, off))
}

/// Completes a partial checksum: the field at `start + offset` holds the
/// pseudo-header sum; the checksum covers `start..` to the end.
pub fn finish_csum(f: &mut [u8], start: usize, offset: usize) {
    let field = start + offset;
    if field + 2 > f.len() {
        return;
    }
    let mut c = !uvs_fwd::checksum::fold(uvs_fwd::checksum::sum(&f[start..]));
    if c == 0 {
        // UDP sends 0 as 0xffff (0 = "no checksum"); the same value for TCP.
        c = 0xffff;
    }
    f[field..field + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use uvs_fwd::build::FrameSpec;
    use uvs_fwd::CsumMode;

    #[test]
    fn partial_checksums_are_recognised_complete_ones_not() {
        for mut f in [
            FrameSpec::udp_v4(),
            FrameSpec::tcp_v4(),
            FrameSpec::udp_v6(),
            FrameSpec::tcp_v6(),
        ] {
            f.csum = CsumMode::Partial;
            let v = implied_vnet(&f.build());
            assert!(v.needs_csum(), "{f:?}");
            let l4 = if f.src.is_ipv4() { 34 } else { 54 };
            assert_eq!(usize::from(v.csum_start), l4);
            f.csum = CsumMode::Full;
            assert!(!implied_vnet(&f.build()).needs_csum(), "{f:?}");
        }
        let mut arp = vec![0xffu8; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.resize(42, 0);
        assert!(!implied_vnet(&arp).needs_csum());
        assert!(!implied_vnet(&[0u8; 20]).needs_csum(), "truncated");
    }

    #[test]
    fn software_checksum_completes_a_partial_one() {
        // UDP 198.51.100.10:1 -> 198.51.100.1:2, payload "hi", as a stack
        // with offload leaves it: the field holds the pseudo-header sum.
        let mut f = uvs_fwd::build::FrameSpec::udp_v4();
        f.csum = uvs_fwd::CsumMode::Partial;
        let mut partial = f.build();
        f.csum = uvs_fwd::CsumMode::Full;
        let full = f.build();
        assert_ne!(partial, full);
        finish_csum(&mut partial, 34, 6);
        assert_eq!(partial, full);
    }
}
