//! Fuzz-style robustness: random bytes, every truncation and every single-byte
//! mutation (all 256 values at every position) of valid frames. `parse` must
//! never panic; whatever parses must satisfy the `Parsed` invariants, and
//! `dnat`/`snat`/`fill_l4_checksum`/`verify_l4_checksum` on it must never
//! panic. A rewrite that succeeds must reparse with the new fields and TTL − 1
//! (parse → rewrite → reparse). `dr`, `encap` (every tunnel kind, both outer
//! families), `fits`/`check_mtu` and `decap_frame` run on every input too; an
//! encapsulation that succeeds must decapsulate back to the inner packet.
//! Encapsulated frames are in the corpus, so mutations reach the decapsulator.
//! Every view's `new_checked` + getters are also run on random bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::checksum::verify_l4_checksum;
use uvs_fwd::frag::fragment_ipv4;
use uvs_fwd::gso::segment_tcp;
use uvs_fwd::wire::{arp, ethernet, gre, gue, icmpv4, icmpv6, ipv4, ipv6, ndisc, tcp, udp};
use uvs_fwd::xmit::dr::dr;
use uvs_fwd::xmit::fits;
use uvs_fwd::xmit::icmp::{build_icmp_error, nat_icmp_error, IcmpKind, IcmpNat, MAX_ERROR_FRAME};
use uvs_fwd::xmit::tun::{self, decap_frame, encap, TunCsum, TunKind, TunParams, MAX_OVERHEAD};
use uvs_fwd::{dnat, embedded, fill_l4_checksum, parse, set_macs, snat, CsumMode, Side, XmitError};

/// Tunnel parameters covering every kind, both outer families and options.
fn tunnels() -> Vec<TunParams> {
    let v4 = (
        IpAddr::from(Ipv4Addr::new(203, 0, 113, 1)),
        IpAddr::from(Ipv4Addr::new(203, 0, 113, 11)),
    );
    let v6: (IpAddr, IpAddr) = (
        "2001:db8:3::1".parse().unwrap(),
        "2001:db8:3::11".parse().unwrap(),
    );
    let mut v = Vec::new();
    for (kind, csum) in [
        (TunKind::Ipip, TunCsum::NoCsum),
        (TunKind::Gre, TunCsum::Csum),
        (TunKind::Gue, TunCsum::RemCsum),
    ] {
        for (s, d) in [v4, v6] {
            let mut t = TunParams::new(kind, s, d);
            t.csum = csum;
            t.port = 6080;
            v.push(t);
        }
    }
    v
}

fn corpus() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for base in [
        FrameSpec::tcp_v4(),
        FrameSpec::udp_v4(),
        FrameSpec::tcp_v6(),
        FrameSpec::udp_v6(),
    ] {
        v.push(base.build());
        let mut s = base.clone();
        s.vlans = vec![0x64, 0x07];
        s.padding = 6;
        v.push(s.build());
        let mut s = base.clone();
        s.frag = Some((0, true));
        if s.src.is_ipv4() {
            s.ip_options = vec![1, 1, 1, 0];
        } else {
            s.ext_headers = vec![0, 43, 60];
        }
        v.push(s.build());
        let mut s = base.clone();
        s.frag = Some((1480, false));
        v.push(s.build());
        let mut s = base.clone();
        s.csum = CsumMode::Partial;
        v.push(s.build());
    }
    for l4 in [
        L4Spec::Sctp,
        L4Spec::Icmp {
            msg_type: 3,
            code: 3,
        },
        L4Spec::Raw(47),
    ] {
        for mut s in [FrameSpec::tcp_v4(), FrameSpec::tcp_v6()] {
            s.l4 = l4.clone();
            v.push(s.build());
        }
    }
    let mut s = FrameSpec::tcp_v4();
    s.l4 = L4Spec::Tcp {
        flags: 0x11,
        options: vec![1; 40],
    };
    v.push(s.build());
    // Proper ICMP errors quoting a packet, so mutations reach the ICMP NAT.
    for base in [FrameSpec::tcp_v4(), FrameSpec::udp_v6()] {
        let q = base.build();
        let mut s = base.clone();
        s.src = base.dst;
        s.dst = base.src;
        s.l4 = L4Spec::Icmp {
            msg_type: if base.src.is_ipv4() { 3 } else { 1 },
            code: 3,
        };
        s.payload = q[14..].to_vec();
        v.push(s.build());
    }
    // Encapsulated frames, so that mutations exercise the decapsulator.
    let inner = FrameSpec::tcp_v4().build();
    let p = parse(&inner).unwrap();
    for t in tunnels() {
        for mode in [CsumMode::Full, CsumMode::Partial] {
            let mut buf = vec![0u8; MAX_OVERHEAD];
            buf.extend_from_slice(&inner);
            let e = encap(&mut buf, MAX_OVERHEAD, &p, &t, 1, mode).unwrap();
            v.push(buf[e.start..e.start + e.len].to_vec());
        }
    }
    let mut a = [0u8; 42];
    arp::Repr::request(
        [2; 6],
        Ipv4Addr::new(192, 0, 2, 1),
        Ipv4Addr::new(192, 0, 2, 2),
    )
    .emit_frame(&mut a)
    .unwrap();
    v.push(a.to_vec());
    v
}

/// Parses and, on success, exercises every per-packet entry point.
fn exercise(frame: &[u8]) {
    let _ = ndisc::parse_advert_frame(frame);
    let mut g = frame.to_vec();
    if let Ok(d) = decap_frame(&mut g, &[6080]) {
        assert!(d.offset + d.len <= g.len());
    } else {
        assert_eq!(g, frame, "refused decap left the frame");
    }
    let Ok(p) = parse(frame) else { return };
    assert!(p.l3_off <= p.l4_off && p.l4_off <= p.payload_off && p.payload_off <= p.ip_end);
    assert!(p.ip_end <= frame.len());
    assert_eq!(p.ip_end - p.l3_off, p.ip_len);
    if p.has_l4 {
        assert!(!p.is_fragment || p.is_first_fragment);
    }
    let targets: [IpAddr; 2] = [
        Ipv4Addr::new(203, 0, 113, 11).into(),
        "2001:db8:3::11".parse::<Ipv6Addr>().unwrap().into(),
    ];
    for mode in [CsumMode::Full, CsumMode::Partial] {
        for t in targets {
            for snat_side in [false, true] {
                let mut f = frame.to_vec();
                let r = if snat_side {
                    snat(&mut f, &p, t, 4242, mode)
                } else {
                    dnat(&mut f, &p, t, 4242, mode)
                };
                match r {
                    Ok(()) => {
                        let q = parse(&f).expect("a rewritten frame reparses");
                        assert_eq!(if snat_side { q.src } else { q.dst }, t);
                        if q.has_ports() {
                            assert_eq!(if snat_side { q.sport } else { q.dport }, 4242);
                        }
                        assert_eq!(q.ttl, p.ttl - 1);
                        assert_eq!(q.ip_end, p.ip_end);
                    }
                    Err(e) => {
                        assert_eq!(f, frame, "refused rewrite ({e}) left the frame unchanged");
                        if e == XmitError::FamilyMismatch {
                            assert_ne!(p.src.is_ipv4(), t.is_ipv4());
                        }
                    }
                }
            }
        }
    }
    if let Ok(e) = embedded(frame, &p) {
        assert!(p.payload_off == e.l3_off && e.l3_off < e.l4_off && e.l4_off <= p.ip_end);
        assert_eq!(e.src.is_ipv4(), p.src.is_ipv4());
        for nat in [
            IcmpNat::to_client(targets[0], 80),
            IcmpNat::to_server(targets[1], 8080),
        ] {
            let mut f = frame.to_vec();
            match nat_icmp_error(&mut f, &p, &e, &nat, CsumMode::Full) {
                Ok(()) => {
                    let q = parse(&f).expect("translated ICMP error reparses");
                    let outer = match nat.outer {
                        Side::Src => q.src,
                        Side::Dst => q.dst,
                    };
                    assert_eq!(outer, nat.outer_addr);
                    assert!(embedded(&f, &q).is_ok());
                }
                Err(_) => assert_eq!(f, frame, "refused ICMP NAT left the frame"),
            }
        }
    }
    let mut out = [0u8; MAX_ERROR_FRAME];
    for kind in [IcmpKind::PortUnreachable, IcmpKind::TooBig { mtu: 1280 }] {
        let src = if p.is_ipv4() { targets[0] } else { targets[1] };
        if let Ok(n) = build_icmp_error(&mut out, frame, &p, kind, src, 1) {
            let q = parse(&out[..n]).expect("built ICMP error parses");
            assert_eq!((q.src, q.dst), (src, p.src));
            assert!(embedded(&out[..n], &q).is_ok());
        }
    }
    let mut scratch = [0u8; 600];
    let mut data = 0;
    if let Ok(n) = fragment_ipv4(frame, &p, 96, &mut scratch, 8, |b, h| {
        let q = parse(&b[h..]).expect("fragments parse");
        assert!(q.ip_len <= 96 || q.ip_len == p.ip_len);
        data += q.ip_end - q.l4_off;
    }) {
        assert!(n >= 1);
        assert_eq!(data, p.ip_end - p.l4_off);
    }
    let mut total = 0;
    if let Ok(n) = segment_tcp(frame, &p, 100, &mut scratch, 8, |b, h| {
        let q = parse(&b[h..]).expect("segments parse");
        total += q.payload_len();
    }) {
        assert!(n >= 1);
        assert_eq!(total, p.payload_len());
    }
    let mut f = frame.to_vec();
    if dr(&mut f, &p).is_ok() {
        assert_eq!(parse(&f).expect("DR output reparses").ttl, p.ttl - 1);
    } else {
        assert_eq!(f, frame);
    }
    let _ = fits(frame, &p, 1280);
    for t in tunnels() {
        for mode in [CsumMode::Full, CsumMode::Partial] {
            let _ = tun::check_mtu(frame, &p, &t, 1500, mode);
            let mut buf = vec![0u8; MAX_OVERHEAD];
            buf.extend_from_slice(frame);
            match encap(&mut buf, MAX_OVERHEAD, &p, &t, 1, mode) {
                Ok(e) => {
                    let mut out = buf[e.start..e.start + e.len].to_vec();
                    if let Some(pc) = e.pending {
                        // Complete as the sending kernel would.
                        let c = !uvs_fwd::checksum::fold(uvs_fwd::checksum::sum(&out[pc.start..]));
                        out[pc.start + pc.offset..pc.start + pc.offset + 2]
                            .copy_from_slice(&c.to_be_bytes());
                    }
                    let d =
                        decap_frame(&mut out, &[6080]).expect("encapsulated frames decapsulate");
                    assert_eq!(d.len, p.ip_len);
                }
                Err(_) => assert_eq!(&buf[MAX_OVERHEAD..], frame, "refused encap left the frame"),
            }
        }
    }
    let mut f = frame.to_vec();
    let _ = verify_l4_checksum(&f, &p);
    if fill_l4_checksum(&mut f, &p).is_ok() {
        assert_eq!(verify_l4_checksum(&f, &p), Ok(true));
    }
    let _ = set_macs(&mut f, [1; 6], [2; 6]);
}

#[test]
fn truncations_never_panic() {
    for f in corpus() {
        for n in 0..=f.len() {
            exercise(&f[..n]);
        }
    }
}

#[test]
fn all_single_byte_mutations_never_panic() {
    // Pure CPU, the longest test of the suite's unit tests: the frames are
    // striped over one thread per core (a panic in one fails the test).
    let corpus = corpus();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|sc| {
        for t in 0..threads {
            let corpus = &corpus;
            sc.spawn(move || {
                for f in corpus.iter().skip(t).step_by(threads) {
                    assert!(parse(f).is_ok() || f.len() == 42, "corpus frames are valid");
                    let mut m = f.clone();
                    for i in 0..f.len() {
                        for b in 0..=255u8 {
                            m[i] = b;
                            exercise(&m);
                        }
                        m[i] = f[i];
                    }
                }
            });
        }
    });
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x5eed_f00d);
    let corpus = corpus();
    let mut buf = vec![0u8; 512];
    for i in 0..200_000 {
        let n = rng.gen_range(0..buf.len());
        rng.fill(&mut buf[..n]);
        // Half the time keep a valid prefix so the fuzz reaches deeper layers.
        if i % 2 == 0 {
            let c = &corpus[i / 2 % corpus.len()];
            let k = rng.gen_range(0..=c.len().min(n));
            buf[..k].copy_from_slice(&c[..k]);
        }
        exercise(&buf[..n]);
    }
}

#[test]
fn views_on_random_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut buf = [0u8; 128];
    for _ in 0..50_000 {
        let n = rng.gen_range(0..buf.len());
        rng.fill(&mut buf[..n]);
        let b = &buf[..n];
        if let Ok(f) = ethernet::Frame::new_checked(b) {
            let _ = (
                f.dst_addr(),
                f.src_addr(),
                f.ethertype(),
                f.encap(),
                f.payload().len(),
            );
        }
        if let Ok(p) = ipv4::Packet::new_checked(b) {
            let _ = (
                p.src_addr(),
                p.dst_addr(),
                p.options(),
                p.payload(),
                p.verify_checksum(),
                p.frag_offset(),
            );
        }
        if let Ok(p) = ipv6::Packet::new_checked(b) {
            let _ = (p.src_addr(), p.flow_label(), p.payload(), p.upper_layer());
        }
        if let Ok(p) = tcp::Packet::new_checked(b) {
            let _ = (p.src_port(), p.flags(), p.options(), p.payload());
        }
        if let Ok(p) = udp::Packet::new_checked(b) {
            let _ = (p.src_port(), p.len(), p.payload());
        }
        if let Ok(p) = icmpv4::Packet::new_checked(b) {
            let _ = (p.msg_type(), p.embedded(), p.verify_checksum());
        }
        if let Ok(p) = icmpv6::Packet::new_checked(b) {
            let _ = (
                p.msg_type(),
                p.embedded(),
                p.verify_checksum(&Ipv6Addr::LOCALHOST, &Ipv6Addr::LOCALHOST),
            );
        }
        let _ = (gre::parse(b), gue::parse(b), ndisc::parse_advert_frame(b));
        if let Ok(p) = arp::Packet::new_checked(b) {
            let _ = arp::Repr::parse(&p);
        }
    }
}
