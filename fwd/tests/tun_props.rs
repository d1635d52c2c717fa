//! Property tests of tunnelling: for random packets (both families, VLANs,
//! IPv4 options, IPv6 extension headers, fragments, padding, Full or Partial
//! checksums) and random tunnel parameters (kind, outer family, checksum
//! option, pmtu_disc), `encap` followed by `decap_frame` gives back exactly
//! the inner packet built from scratch with TTL − 1; every outer checksum
//! verifies once a pending inner checksum is completed as the sending kernel
//! would; and `dr` equals the packet rebuilt with TTL − 1.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::checksum::verify_l4_checksum;
use uvs_fwd::xmit::dr::dr;
use uvs_fwd::xmit::tun::{decap_frame, encap, TunCsum, TunKind, TunParams, MAX_OVERHEAD};
use uvs_fwd::{parse, CsumMode};

#[derive(Debug, Clone)]
struct Case {
    spec: FrameSpec,
    tun: TunParams,
}

fn addr(v4: bool, bits: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(bits))
    }
}

prop_compose! {
    fn case()(
        v4 in any::<bool>(),
        outer_v4 in any::<bool>(),
        a in any::<[u128; 4]>(),
        ports in any::<[u16; 3]>(),
        ttl in 2u8..=255,
        payload in prop::collection::vec(any::<u8>(), 0..300),
        ip_opt_words in 0usize..=10,
        vlans in prop::collection::vec(any::<u16>(), 0..=2),
        l4_kind in 0u8..5,
        ext in 0usize..4,
        frag_kind in 0u8..6,
        padding in 0usize..20,
        partial in any::<bool>(),
        kind in 0u8..3,
        csum in 0u8..3,
        pmtu_disc in any::<bool>(),
        seed in any::<u32>(),
    ) -> Case {
        let mut spec = FrameSpec::tcp_v4();
        spec.src = addr(v4, a[0]);
        spec.dst = addr(v4, a[1]);
        spec.sport = ports[0];
        spec.dport = ports[1];
        spec.ttl = ttl;
        spec.payload = payload;
        spec.vlans = vlans;
        spec.padding = padding;
        spec.csum = if partial { CsumMode::Partial } else { CsumMode::Full };
        if v4 {
            spec.ip_options = (0..ip_opt_words * 4).map(|i| i as u8 | 1).collect();
        } else {
            spec.ext_headers = [vec![], vec![0], vec![60], vec![0, 43, 60]][ext].clone();
        }
        spec.l4 = match l4_kind {
            0 => L4Spec::Tcp { flags: 0x18, options: vec![1; 4] },
            1 => L4Spec::Udp { zero_csum: false },
            2 => L4Spec::Sctp,
            3 => L4Spec::Icmp { msg_type: 8, code: 0 },
            _ => L4Spec::Raw(50),
        };
        spec.frag = match frag_kind {
            0 => Some((0, true)),
            1 => Some((1480, false)),
            _ => None,
        };
        let kind = [TunKind::Ipip, TunKind::Gre, TunKind::Gue][usize::from(kind)];
        let mut tun = TunParams::new(kind, addr(outer_v4, a[2]), addr(outer_v4, a[3]));
        tun.port = ports[2];
        tun.csum = [TunCsum::NoCsum, TunCsum::Csum, TunCsum::RemCsum][usize::from(csum)];
        tun.pmtu_disc = pmtu_disc;
        tun.hash_seed = seed;
        Case { spec, tun }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4_000, .. ProptestConfig::default() })]

    #[test]
    fn encap_decap_roundtrip(c in case()) {
        let f = c.spec.build();
        let p = parse(&f).expect("built frames parse");
        let mut buf = vec![0u8; MAX_OVERHEAD];
        buf.extend_from_slice(&f);
        let e = encap(&mut buf, MAX_OVERHEAD, &p, &c.tun, 7, c.spec.csum).expect("encap");
        let mut out = buf[e.start..e.start + e.len].to_vec();
        if let Some(pc) = e.pending {
            let at = pc.start + pc.offset;
            let s = match !(common::naive_sum(&out[pc.start..], 0) as u16) {
                // A UDP sum of 0 goes out as 0xffff (RFC 768; the kernel's
                // and NICs' completion do so, and so does the Full build).
                0 if pc.offset == 6 => 0xffff,
                s => s,
            };
            out[at..at + 2].copy_from_slice(&s.to_be_bytes());
        }
        let q = parse(&out).expect("outer parses");
        prop_assert_eq!((q.src, q.dst, q.ttl), (c.tun.src, c.tun.dst, c.spec.ttl - 1));
        if c.tun.kind == TunKind::Gue && c.tun.csum != TunCsum::NoCsum {
            prop_assert!(verify_l4_checksum(&out, &q).unwrap());
        }
        let mut d = out.clone();
        let r = decap_frame(&mut d, &[c.tun.port]).expect("decap");
        // What the inner packet must be: rebuilt with TTL - 1, its checksum
        // complete unless it was pending and nobody completed it.
        let mut want = c.spec.clone();
        want.ttl -= 1;
        want.padding = 0;
        let completes = e.pending.is_some()
            || (c.tun.kind == TunKind::Gue && c.tun.csum == TunCsum::RemCsum)
            || matches!(want.l4, L4Spec::Sctp);
        let tcp_udp = matches!(want.l4, L4Spec::Tcp { .. } | L4Spec::Udp { .. });
        if completes && (tcp_udp || matches!(want.l4, L4Spec::Sctp)) && want.frag.is_none() {
            want.csum = CsumMode::Full;
        }
        let wf = want.build();
        let wp = parse(&wf).unwrap();
        prop_assert_eq!(&d[r.offset..r.offset + r.len], &wf[wp.l3_off..wp.ip_end]);
    }

    #[test]
    fn dr_changes_only_the_ttl(c in case()) {
        let mut f = c.spec.build();
        let p = parse(&f).unwrap();
        dr(&mut f, &p).unwrap();
        let mut want = c.spec.clone();
        want.ttl -= 1;
        prop_assert_eq!(f, want.build());
    }
}
