//! Property tests: for random packets, the incremental NAT rewrite gives
//! exactly the bytes of a packet built from scratch with the new fields (so
//! every checksum equals a full recompute), in Full mode; in Partial mode the
//! field equals the new pseudo-header sum, and completing it (in software with
//! `fill_l4_checksum`, or NIC-style) gives the Full-mode packet.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::checksum::verify_l4_checksum;
use uvs_fwd::xmit::nat::FlowNat;
use uvs_fwd::{dnat, fill_l4_checksum, parse, snat, CsumMode, Side};

#[derive(Debug, Clone)]
struct Case {
    spec: FrameSpec,
    new_addr: IpAddr,
    new_port: u16,
    snat: bool,
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
        a in any::<[u128; 3]>(),
        ports in any::<[u16; 3]>(),
        ttl in 2u8..=255,
        payload in prop::collection::vec(any::<u8>(), 0..300),
        ip_opt_words in 0usize..=10,
        opt_seed in any::<u8>(),
        vlans in prop::collection::vec(any::<u16>(), 0..=2),
        l4_kind in 0u8..5,
        tcp_opt_words in 0usize..=10,
        ext in 0usize..6,
        frag_kind in 0u8..6,
        frag_off in 1usize..8000,
        padding in 0usize..20,
        partial in any::<bool>(),
        snat in any::<bool>(),
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
            spec.ip_options = (0..ip_opt_words * 4).map(|i| opt_seed.wrapping_add(i as u8)).collect();
        } else {
            spec.ext_headers = [vec![], vec![0], vec![60], vec![0, 60], vec![43], vec![0, 43, 60]][ext].clone();
        }
        spec.l4 = match l4_kind {
            0 => L4Spec::Tcp { flags: 0x18, options: vec![1; tcp_opt_words * 4] },
            1 => L4Spec::Udp { zero_csum: false },
            // Checksum 0 is an IPv4, complete-checksum thing only.
            2 => L4Spec::Udp { zero_csum: v4 && !partial },
            3 => L4Spec::Sctp,
            _ => L4Spec::Icmp { msg_type: 8, code: 0 },
        };
        spec.frag = match frag_kind {
            0 => Some((0, true)),
            // Offset 8 is refused for TCP (RFC 1858 overlap): start at 16.
            1 => Some((((frag_off * 8).min(60000) & !7).max(16), frag_off % 2 == 0)),
            _ => None,
        };
        Case { spec, new_addr: addr(v4, a[2]), new_port: ports[2], snat }
    }
}

/// The packet the rewrite must produce, built from scratch.
fn expected(c: &Case, mode: CsumMode) -> Vec<u8> {
    let mut s = c.spec.clone();
    s.csum = mode;
    let nonfirst = matches!(s.frag, Some((o, _)) if o != 0);
    let ports = !nonfirst && matches!(s.l4, L4Spec::Tcp { .. } | L4Spec::Udp { .. } | L4Spec::Sctp);
    if c.snat {
        s.src = c.new_addr;
        if ports {
            s.sport = c.new_port;
        }
    } else {
        s.dst = c.new_addr;
        if ports {
            s.dport = c.new_port;
        }
    }
    s.ttl -= 1;
    s.build()
}

fn rewrite(c: &Case) -> Vec<u8> {
    let mut f = c.spec.build();
    let p = parse(&f).expect("built frames parse");
    let r = if c.snat {
        snat(&mut f, &p, c.new_addr, c.new_port, c.spec.csum)
    } else {
        dnat(&mut f, &p, c.new_addr, c.new_port, c.spec.csum)
    };
    r.expect("rewrite of a valid frame");
    f
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, .. ProptestConfig::default() })]

    #[test]
    fn incremental_equals_full_recompute(c in case()) {
        let out = rewrite(&c);
        prop_assert_eq!(&out, &expected(&c, c.spec.csum));
        if c.spec.csum == CsumMode::Full && c.spec.frag.is_none() {
            let p = parse(&out).unwrap();
            prop_assert!(verify_l4_checksum(&out, &p).unwrap());
            if c.spec.ext_headers.is_empty() {
                prop_assert!(common::naive_verify(&out));
            }
        }
    }

    #[test]
    fn partial_completes_to_full(c in case()) {
        let mut c = c;
        c.spec.csum = CsumMode::Partial;
        if c.spec.l4 == (L4Spec::Udp { zero_csum: true }) {
            c.spec.l4 = L4Spec::Udp { zero_csum: false };
        }
        let mut out = rewrite(&c);
        prop_assert_eq!(&out, &expected(&c, CsumMode::Partial));
        let full = expected(&c, CsumMode::Full);
        if c.spec.frag.is_none() {
            // Software completion.
            let p = parse(&out).unwrap();
            let mut sw = out.clone();
            fill_l4_checksum(&mut sw, &p).unwrap();
            prop_assert_eq!(&sw, &full);
            // NIC-style completion (sum with the field in place), TCP/UDP.
            if c.spec.ext_headers.is_empty() && matches!(c.spec.l4, L4Spec::Tcp { .. } | L4Spec::Udp { .. }) {
                common::nic_complete(&mut out);
                prop_assert_eq!(&out, &full);
            }
        }
    }
}

/// A flow's prepared rewrite ([`FlowNat`]) against `dnat`/`snat` on the
/// same packet: the same bytes and the same result, errors included.
/// `variant` bends the case toward the paths the prepared delta leaves to
/// the general rewrite: UDP with checksum 0 (IPv6 too), TTL 1, the other
/// checksum mode, a delta prepared for another old address or port.
fn flow_matches_rewrite(c: &Case, variant: u8) -> Result<(), TestCaseError> {
    let mut spec = c.spec.clone();
    let mut mode = spec.csum;
    match variant {
        1 => spec.l4 = L4Spec::Udp { zero_csum: true },
        2 => spec.ttl = 1,
        3 => {
            mode = match mode {
                CsumMode::Full => CsumMode::Partial,
                CsumMode::Partial => CsumMode::Full,
            }
        }
        _ => {}
    }
    let frame = spec.build();
    let p = parse(&frame).expect("built frames parse");
    let side = if c.snat { Side::Src } else { Side::Dst };
    let (mut old, mut old_port) = if c.snat {
        (p.src, p.sport)
    } else {
        (p.dst, p.dport)
    };
    if variant == 4 {
        old_port = old_port.wrapping_add(1);
    }
    if variant == 5 {
        old = c.new_addr;
    }
    let nat = FlowNat::new(side, old, old_port, c.new_addr, c.new_port).expect("one family");
    prop_assert_eq!((nat.addr(), nat.port()), (c.new_addr, c.new_port));
    let (mut a, mut b) = (frame.clone(), frame);
    let ra = nat.apply(&mut a, &p, mode);
    let rb = if c.snat {
        snat(&mut b, &p, c.new_addr, c.new_port, mode)
    } else {
        dnat(&mut b, &p, c.new_addr, c.new_port, mode)
    };
    prop_assert_eq!(ra, rb, "{:?} variant {}", c, variant);
    prop_assert_eq!(a, b, "{:?} variant {}", c, variant);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, .. ProptestConfig::default() })]

    #[test]
    fn flow_nat_equals_the_rewrite(c in case(), variant in 0u8..6) {
        flow_matches_rewrite(&c, variant)?;
    }
}

#[test]
fn flow_nat_refuses_a_family_change() {
    let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    assert!(FlowNat::new(Side::Dst, v4, 80, v6, 80).is_none());
    assert!(FlowNat::new(Side::Src, v6, 80, v4, 80).is_none());
}
