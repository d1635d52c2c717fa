//! Packet targets: the parser, every forwarding method's rewrite followed
//! by a second parse, and tunnel decapsulation.

use std::net::IpAddr;

use uvs_fwd::checksum::verify_l4_checksum;
use uvs_fwd::xmit::tun::{self, TunCsum, TunKind, TunParams};
use uvs_fwd::{CsumMode, IpVersion, Parsed};

use super::Bytes;

/// Headroom before a frame, for tunnel headers.
const HEADROOM: usize = 128;
/// The GUE port decapsulation accepts.
pub const GUE_PORT: u16 = 6080;

/// `parse`: [`uvs_fwd::parse`] on any bytes; what it accepts obeys its
/// contract, and the functions that take a parse do not panic on it.
pub fn parse(data: &[u8]) {
    let Ok(p) = uvs_fwd::parse(data) else {
        return;
    };
    check_parse(data, &p);
    let _ = uvs_fwd::embedded(data, &p);
    let _ = verify_l4_checksum(data, &p);
    let _ = uvs_fwd::fits(data, &p, 1280);
    let mut copy = data.to_vec();
    let _ = uvs_fwd::fill_l4_checksum(&mut copy, &p);
}

/// The parse contract (`l3_off <= l4_off <= payload_off <= ip_end <= len`).
fn check_parse(frame: &[u8], p: &Parsed) {
    assert!(p.l3_off <= p.l4_off, "{p:?}");
    assert!(p.l4_off <= p.payload_off, "{p:?}");
    assert!(p.payload_off <= p.ip_end, "{p:?}");
    assert!(p.ip_end <= frame.len(), "{p:?}");
    assert_eq!(p.ip_end - p.l3_off, p.ip_len, "{p:?}");
    assert!(p.has_l4 || p.payload_off == p.l4_off, "{p:?}");
    assert!(p.vlan_tags <= 2);
}

/// An address of `v`'s family: the real server (`n` = 0) or the VIP side.
fn addr(v: IpVersion, n: u8) -> IpAddr {
    match v {
        IpVersion::V4 => IpAddr::from([203, 0, 113, 10 + n]),
        IpVersion::V6 => IpAddr::from([0x2001, 0xdb8, 5, 0, 0, 0, 0, 0x10 + u16::from(n)]),
    }
}

/// `rewrite`: the first byte picks the method (NAT either way, DR, ipip,
/// GUE with and without checksum options, GRE with and without checksum),
/// the outer family and the checksum mode; the rest is the frame. Whatever
/// a method accepts parses again, with the addresses and ports it was
/// given, a valid L4 checksum where it had one (complete checksums), and,
/// for tunnels, decapsulates back to the inner packet.
pub fn rewrite(data: &[u8]) {
    let mut b = Bytes::new(data);
    let sel = b.u8();
    let frame = b.take(usize::MAX);
    let Ok(p) = uvs_fwd::parse(frame) else {
        return;
    };
    let mode = if sel & 0x80 != 0 {
        CsumMode::Partial
    } else {
        CsumMode::Full
    };
    let whole = p.has_l4 && !p.is_fragment && !p.routing_pending;
    let valid_before = mode == CsumMode::Full && whole && verify_l4_checksum(frame, &p) == Ok(true);
    let mut buf = vec![0u8; HEADROOM + frame.len()];
    buf[HEADROOM..].copy_from_slice(frame);
    match sel & 7 {
        0 | 1 => {
            let (a, port) = (addr(p.version, 0), 8080);
            let f = &mut buf[HEADROOM..];
            let r = if sel & 1 == 0 {
                uvs_fwd::dnat(f, &p, a, port, mode)
            } else {
                uvs_fwd::snat(f, &p, a, port, mode)
            };
            if r.is_err() {
                assert_eq!(f, frame, "an refused rewrite leaves the frame alone");
                return;
            }
            let q = uvs_fwd::parse(f).expect("a NAT'd packet parses");
            check_parse(f, &q);
            let (got, want_sport, want_dport) = if sel & 1 == 0 {
                (q.dst, p.sport, port)
            } else {
                (q.src, port, p.dport)
            };
            assert_eq!(got, a);
            if p.has_ports() {
                assert_eq!((q.sport, q.dport), (want_sport, want_dport));
            }
            assert_eq!(q.ttl, p.ttl - 1);
            if valid_before {
                assert_eq!(verify_l4_checksum(f, &q), Ok(true), "checksum kept valid");
            }
        }
        2 => {
            let f = &mut buf[HEADROOM..];
            if uvs_fwd::dr(f, &p).is_err() {
                return;
            }
            let q = uvs_fwd::parse(f).expect("a DR packet parses");
            assert_eq!(Parsed { ttl: p.ttl, ..q }, p, "only the TTL changes");
        }
        k => {
            let kind = match k {
                3 => TunKind::Ipip,
                4 | 5 => TunKind::Gue,
                _ => TunKind::Gre,
            };
            let outer = if sel & 0x40 != 0 {
                IpVersion::V6
            } else {
                IpVersion::V4
            };
            let mut params = TunParams::new(kind, addr(outer, 1), addr(outer, 0));
            params.port = GUE_PORT;
            params.csum = match (k, sel & 0x20 != 0) {
                (5, _) => TunCsum::RemCsum,
                (_, true) => TunCsum::Csum,
                _ => TunCsum::NoCsum,
            };
            let Ok(e) = tun::encap(&mut buf, HEADROOM, &p, &params, 7, mode) else {
                return;
            };
            let out = &mut buf[e.start..e.start + e.len];
            if let Some(pc) = e.pending {
                // What the NIC does with NEEDS_CSUM: the sum from `start`
                // to the end (the field holds the pseudo-header sum),
                // complemented, into the field. The outer checksum was
                // computed as if this were done (local checksum offload).
                let (s, f) = (pc.start, pc.start + pc.offset);
                if f + 2 > out.len() {
                    panic!("pending checksum field outside the frame: {pc:?}");
                }
                let c = !uvs_fwd::checksum::fold(uvs_fwd::checksum::sum(&out[s..]));
                out[f..f + 2].copy_from_slice(&c.to_be_bytes());
            }
            let o = uvs_fwd::parse(out).expect("an encapsulated packet parses");
            check_parse(out, &o);
            assert_eq!((o.src, o.dst), (params.src, params.dst));
            let d = tun::decap_frame(out, &[GUE_PORT]).expect("it decapsulates");
            assert_eq!((d.kind, d.len, d.version), (kind, p.ip_len, p.version));
            let inner = &out[d.offset..d.offset + d.len];
            // The inner packet is the original but for its TTL (and, with
            // remote checksum offload, a completed checksum).
            let orig = &frame[p.l3_off..p.ip_end];
            let ttl_at = if p.is_ipv4() { 8 } else { 7 };
            assert_eq!(inner[ttl_at], orig[ttl_at] - 1);
            assert_eq!(inner[..ttl_at], orig[..ttl_at]);
        }
    }
}

/// `decap`: tunnel decapsulation of any frame; what it accepts lies within
/// the frame and is of the version it says.
pub fn decap(data: &[u8]) {
    let mut f = data.to_vec();
    let Ok(d) = tun::decap_frame(&mut f, &[GUE_PORT]) else {
        assert_eq!(f, data, "a refused packet is unchanged");
        return;
    };
    assert!(d.offset + d.len <= f.len(), "{d:?}");
    let first = f.get(d.offset).copied().unwrap_or(0) >> 4;
    let want = match d.version {
        IpVersion::V4 => 4,
        IpVersion::V6 => 6,
    };
    assert_eq!(first, want, "{d:?}");
}
