//! Packets larger than a UMEM frame: what a multi-buffer packet (several
//! RX descriptors, all but the last flagged `XDP_PKT_CONTD`, gathered into
//! one buffer by the socket's RX batch) is to the engine.
//!
//! Such packets only exist when the kernel hands XDP a packet the sender
//! built larger than the wire's MTU — a GSO super-packet from a local stack
//! over a veth in generic XDP mode (native XDP on a veth turns the peer's
//! GSO off, so it never sees one), or a jumbo frame. XDP carries no GSO
//! metadata, so the packet's segment size is lost. For TCP uvs derives it
//! as TCP would have chosen it: the largest segment whose IP packet fits
//! `seg_mtu` (the smallest MTU of the interfaces uvs forwards between),
//! with the packet's own TCP options kept in every segment — and marks the
//! frame a GSO super-packet (`NEEDS_CSUM` with the checksum field a
//! pseudo-header sum, as the kernel hands GSO packets to AF_PACKET), so
//! the egress stage treats it as one and the TX side hands it to the kernel
//! whole, with a virtio-net header, to be cut there. Anything else (UDP,
//! whose datagram boundaries inside a super-packet cannot be recovered, or
//! a TCP packet that fits the MTU) keeps the plain header it would have
//! had.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use uvs_fwd::checksum::{fold, pseudo_header_v4, pseudo_header_v6};

use crate::io::vnet::{VnetHdr, VNET_F_NEEDS_CSUM};

/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;

/// The virtio-net header of a gathered frame `f` (Ethernet first), after
/// rewriting its TCP checksum field to the pending pseudo-header sum when
/// it becomes a super-packet; `plain(f)` otherwise.
pub fn super_vnet(f: &mut [u8], seg_mtu: usize, plain: impl Fn(&[u8]) -> VnetHdr) -> VnetHdr {
    match tcp_super(f, seg_mtu) {
        Some(v) => v,
        None => plain(f),
    }
}

fn tcp_super(f: &mut [u8], seg_mtu: usize) -> Option<VnetHdr> {
    let (ip_hdr, l4_len, gso_type, pseudo) = match f.get(12..14)? {
        [0x08, 0x00] => {
            let ip = f.get(14..34)?;
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            // Fragments and non-TCP stay as they are.
            if ip[9] != 6 || ihl < 20 || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                return None;
            }
            let l4_len = total.checked_sub(ihl)?;
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            let p = pseudo_header_v4(&src, &dst, 6, l4_len as u32);
            (ihl, l4_len, GSO_TCPV4, p)
        }
        [0x86, 0xdd] => {
            let ip = f.get(14..54)?;
            // Extension headers are left alone (not offloaded either).
            if ip[6] != 6 {
                return None;
            }
            let l4_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let src: [u8; 16] = ip[8..24].try_into().ok()?;
            let dst: [u8; 16] = ip[24..40].try_into().ok()?;
            let p = pseudo_header_v6(&Ipv6Addr::from(src), &Ipv6Addr::from(dst), 6, l4_len as u32);
            (40, l4_len, GSO_TCPV6, p)
        }
        _ => return None,
    };
    let l4 = 14 + ip_hdr;
    let tcp = f.get(l4..l4 + 20)?;
    let th = usize::from(tcp[12] >> 4) * 4;
    if th < 20 || 14 + ip_hdr + l4_len > f.len() || l4_len < th {
        return None;
    }
    // The segment size TCP would use on this path: an MTU-sized IP packet
    // with these headers (options included).
    let mss = seg_mtu.checked_sub(ip_hdr + th).filter(|&m| m > 0)?;
    if l4_len - th <= mss {
        return None;
    }
    // Pending checksum: the field holds the pseudo-header sum over the
    // whole super-packet (what the kernel's TCP stack writes for GSO), the
    // rest left to whoever segments it.
    let field = l4 + 16;
    f[field..field + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
    Some(VnetHdr {
        flags: VNET_F_NEEDS_CSUM,
        gso_type,
        hdr_len: (l4 + th) as u16,
        gso_size: mss.min(usize::from(u16::MAX)) as u16,
        csum_start: l4 as u16,
        csum_offset: 16,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uvs_fwd::build::{FrameSpec, L4Spec};

    fn tcp_frame(src: &str, dst: &str, payload: usize) -> Vec<u8> {
        let mut f = FrameSpec::tcp_v4();
        f.src = src.parse().unwrap();
        f.dst = dst.parse().unwrap();
        // Timestamps: options are kept in every segment.
        f.l4 = L4Spec::Tcp {
            flags: 0x18,
            options: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
        };
        f.payload = vec![7u8; payload];
        f.build()
    }

    #[test]
    fn a_large_tcp_packet_becomes_a_super_packet_with_the_mtu_derived_mss() {
        for (src, dst, ip_hdr, ty) in [
            ("198.51.100.10", "192.0.2.10", 20, GSO_TCPV4),
            ("2001:db8:c::10", "2001:db8:f::10", 40, GSO_TCPV6),
        ] {
            let mut f = tcp_frame(src, dst, 20_000);
            let v = super_vnet(&mut f, 1500, |_| VnetHdr::default());
            assert_eq!(v.gso_type, ty);
            assert_eq!(usize::from(v.gso_size), 1500 - ip_hdr - 32);
            assert_eq!(usize::from(v.csum_start), 14 + ip_hdr);
            assert_eq!(usize::from(v.hdr_len), 14 + ip_hdr + 32);
            assert!(v.needs_csum());
            // The field now holds the pseudo-header sum: what the AF_XDP
            // source's own recogniser takes for a pending checksum.
            let pending = crate::io::xdp::csum::implied_vnet(&f);
            assert!(pending.needs_csum(), "{src}");
        }
    }

    #[test]
    fn small_tcp_and_udp_keep_the_plain_header() {
        let mut f = tcp_frame("198.51.100.10", "192.0.2.10", 1000);
        let marker = VnetHdr {
            csum_offset: 99,
            ..VnetHdr::default()
        };
        assert_eq!(super_vnet(&mut f, 1500, |_| marker), marker);
        let mut u = FrameSpec::udp_v4();
        u.payload = vec![0u8; 9000];
        let mut u = u.build();
        assert_eq!(super_vnet(&mut u, 1500, |_| marker), marker);
    }
}
