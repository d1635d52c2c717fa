//! Building test frames: Ethernet + IPv4/IPv6 + TCP/UDP with correct
//! checksums, computed here independently of `uvs-fwd` (so tests that feed
//! these frames to the pipeline also cross-check its checksum code). Used by
//! the pipeline benchmark, the allocation test and fixture tests; not on any
//! packet path.

use std::net::IpAddr;

/// TCP flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// What to build.
#[derive(Debug, Clone)]
pub struct FrameSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    /// 6 = TCP, 17 = UDP.
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub ttl: u8,
    pub payload: Vec<u8>,
}

impl FrameSpec {
    /// A TCP segment between two endpoints.
    pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> FrameSpec {
        FrameSpec {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: src.parse().expect("literal address"),
            dst: dst.parse().expect("literal address"),
            proto: 6,
            sport,
            dport,
            tcp_flags: flags,
            ttl: 64,
            payload: Vec::new(),
        }
    }
    /// A UDP datagram between two endpoints.
    pub fn udp(src: &str, sport: u16, dst: &str, dport: u16, payload: &[u8]) -> FrameSpec {
        FrameSpec {
            proto: 17,
            tcp_flags: 0,
            payload: payload.to_vec(),
            ..FrameSpec::tcp(src, sport, dst, dport, 0)
        }
    }
}

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut it = data.chunks_exact(2);
    for c in &mut it {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = it.remainder() {
        acc += u32::from(*b) << 8;
    }
    acc
}

fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The Internet checksum of `data` (RFC 1071), computed the slow, obvious way.
pub fn internet_checksum(data: &[u8]) -> u16 {
    finish(sum16(data, 0))
}

/// Builds the frame.
pub fn build(s: &FrameSpec) -> Vec<u8> {
    let l4_len = if s.proto == 6 { 20 } else { 8 } + s.payload.len();
    let mut l4 = vec![0u8; l4_len];
    l4[0..2].copy_from_slice(&s.sport.to_be_bytes());
    l4[2..4].copy_from_slice(&s.dport.to_be_bytes());
    if s.proto == 6 {
        l4[4..8].copy_from_slice(&1000u32.to_be_bytes());
        l4[8..12].copy_from_slice(&2000u32.to_be_bytes());
        l4[12] = 5 << 4;
        l4[13] = s.tcp_flags;
        l4[14..16].copy_from_slice(&64240u16.to_be_bytes());
        l4[20..].copy_from_slice(&s.payload);
    } else {
        l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        l4[8..].copy_from_slice(&s.payload);
    }
    let mut pseudo = Vec::new();
    let (ethertype, l3) = match (s.src, s.dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            pseudo.extend_from_slice(&a.octets());
            pseudo.extend_from_slice(&b.octets());
            pseudo.extend_from_slice(&[0, s.proto]);
            pseudo.extend_from_slice(&(l4_len as u16).to_be_bytes());
            let mut h = vec![0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
            h[6] = 0x40; // DF
            h[8] = s.ttl;
            h[9] = s.proto;
            h[12..16].copy_from_slice(&a.octets());
            h[16..20].copy_from_slice(&b.octets());
            let c = internet_checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            (0x0800u16, h)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            pseudo.extend_from_slice(&a.octets());
            pseudo.extend_from_slice(&b.octets());
            pseudo.extend_from_slice(&(l4_len as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, s.proto]);
            let mut h = vec![0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            h[6] = s.proto;
            h[7] = s.ttl;
            h[8..24].copy_from_slice(&a.octets());
            h[24..40].copy_from_slice(&b.octets());
            (0x86dd, h)
        }
        _ => panic!("FrameSpec with mixed address families"),
    };
    let mut c = finish(sum16(&l4, sum16(&pseudo, 0)));
    if s.proto == 17 && c == 0 {
        c = 0xffff;
    }
    let off = if s.proto == 6 { 16 } else { 6 };
    l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::with_capacity(14 + l3.len() + l4.len());
    f.extend_from_slice(&s.dst_mac);
    f.extend_from_slice(&s.src_mac);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(&l3);
    f.extend_from_slice(&l4);
    f
}
