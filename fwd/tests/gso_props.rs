//! Property tests of software TCP segmentation: for random super-packets
//! (both families, VLANs, IPv4 options, IPv6 extension headers, TCP options,
//! up to 9000 bytes, any MSS) the segments reassemble to the original
//! payload, each is a valid packet (IP and TCP checksums, lengths) no larger
//! than headers + MSS, sequence numbers are contiguous, FIN/PSH only on the
//! last, CWR only on the first, IPv4 IDs increment; and every segment can be
//! encapsulated in place and decapsulated again (what the engine does with a
//! GSO packet bound for a tunnel).

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::checksum::verify_l4_checksum;
use uvs_fwd::gso::segment_tcp;
use uvs_fwd::xmit::tun::{decap_frame, encap, TunCsum, TunKind, TunParams, MAX_OVERHEAD};
use uvs_fwd::{parse, CsumMode};

fn addr(v4: bool, bits: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(bits))
    }
}

prop_compose! {
    fn super_packet()(
        v4 in any::<bool>(),
        a in any::<[u128; 2]>(),
        len in 0usize..9000,
        seed in any::<u8>(),
        flags in any::<u8>(),
        tcp_opt_words in 0usize..=10,
        ip_opt_words in 0usize..=10,
        ext in 0usize..3,
        vlans in prop::collection::vec(any::<u16>(), 0..=2),
        partial in any::<bool>(),
    ) -> FrameSpec {
        let mut s = FrameSpec::tcp_v4();
        s.src = addr(v4, a[0]);
        s.dst = addr(v4, a[1]);
        s.payload = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        s.l4 = L4Spec::Tcp { flags: flags & !0x06, options: vec![1; tcp_opt_words * 4] };
        if v4 {
            s.ip_options = vec![1; ip_opt_words * 4];
        } else {
            s.ext_headers = [vec![], vec![0], vec![0, 60]][ext].clone();
        }
        s.vlans = vlans;
        s.csum = if partial { CsumMode::Partial } else { CsumMode::Full };
        s
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, .. ProptestConfig::default() })]

    #[test]
    fn segments_are_valid_and_reassemble(spec in super_packet(), mss in 1u16..2000, tun_kind in 0u8..3) {
        let f = spec.build();
        let p = parse(&f).unwrap();
        let mut scratch = vec![0u8; MAX_OVERHEAD + p.payload_off + usize::from(mss)];
        let mut got = Vec::new();
        let mut segs = 0usize;
        let mut problems = Vec::new();
        let expected = spec.payload.len().div_ceil(usize::from(mss)).max(1);
        let L4Spec::Tcp { flags: spec_flags, .. } = spec.l4 else { unreachable!() };
        let kind = [TunKind::Ipip, TunKind::Gre, TunKind::Gue][usize::from(tun_kind)];
        let mut tun = TunParams::new(kind, addr(true, 1), addr(true, 2));
        tun.csum = TunCsum::Csum;
        tun.port = 6080;
        let n = segment_tcp(&f, &p, mss, &mut scratch, MAX_OVERHEAD, |buf, h| {
            let seg = buf[h..].to_vec();
            let Ok(q) = parse(&seg) else { problems.push("unparsable segment"); return };
            if q.ip_end != seg.len() { problems.push("length"); }
            if q.payload_len() > usize::from(mss) { problems.push("larger than MSS"); }
            if !verify_l4_checksum(&seg, &q).unwrap_or(false) { problems.push("tcp checksum"); }
            if spec.vlans.is_empty() && spec.ext_headers.is_empty() && !common::naive_verify(&seg) {
                problems.push("naive checksum");
            }
            let seq = u32::from_be_bytes([seg[q.l4_off + 4], seg[q.l4_off + 5], seg[q.l4_off + 6], seg[q.l4_off + 7]]);
            if seq != 0x0102_0304u32.wrapping_add(got.len() as u32) { problems.push("sequence"); }
            if q.is_ipv4() && u16::from_be_bytes([seg[q.l3_off + 4], seg[q.l3_off + 5]]) != 0x1c46u16.wrapping_add(segs as u16) {
                problems.push("ip id");
            }
            let fl = q.tcp_flags;
            if segs > 0 && fl & 0x80 != 0 { problems.push("CWR after the first"); }
            if segs + 1 < expected && fl & 0x09 != 0 { problems.push("FIN/PSH before the last"); }
            if segs + 1 == expected && fl & 0x09 != spec_flags & 0x09 { problems.push("FIN/PSH lost"); }
            got.extend_from_slice(&seg[q.payload_off..]);
            segs += 1;
            // Encapsulate in place and back.
            match encap(buf, h, &q, &tun, 1, CsumMode::Full) {
                Ok(e) => {
                    let mut out = buf[e.start..e.start + e.len].to_vec();
                    // The inner packet is the segment forwarded: TTL - 1.
                    let mut fwd = seg.clone();
                    uvs_fwd::dr(&mut fwd, &q).unwrap();
                    match decap_frame(&mut out, &[6080]) {
                        Ok(d) if out[d.offset..d.offset + d.len] == fwd[q.l3_off..] => {}
                        Ok(_) => problems.push("decapsulated packet differs"),
                        Err(_) => problems.push("decap"),
                    }
                }
                Err(_) => {
                    if q.ttl > 1 { problems.push("encap"); }
                }
            }
        }).unwrap();
        prop_assert!(problems.is_empty(), "{:?}", problems);
        prop_assert_eq!(n, segs);
        prop_assert_eq!(n, expected);
        prop_assert_eq!(got, spec.payload.clone());
    }
}
