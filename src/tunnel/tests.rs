use super::*;
use uvs_fwd::build::FrameSpec;
use uvs_fwd::xmit::tun::{encap, TunCsum, TunParams, MAX_OVERHEAD};
use uvs_fwd::CsumMode;

const RS: &str = "203.0.113.11";
const LB: &str = "203.0.113.1";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

/// The real server's addresses, its VIPs (on `lo`) included.
fn local() -> LocalAddrs {
    LocalAddrs::new([
        ip(RS),
        ip("2001:db8:5::11"),
        ip("192.0.2.10"),
        ip("2001:db8:2::10"),
    ])
}

#[test]
fn only_directors_are_decapsulated() {
    let dirs = Directors::Only(vec![ip(LB), ip("2001:db8:5::1")]);
    for outer_v6 in [false, true] {
        let spec = FrameSpec::udp_v4();
        let (mut buf, _) = tunnelled(&spec, &params(TunKind::Ipip, outer_v6), VnetHdr::default());
        let o = process_from(&mut buf, &local(), &[], &dirs);
        assert!(matches!(o, Outcome::Deliver { .. }), "{o:?}");
        let mut p = params(TunKind::Ipip, outer_v6);
        p.src = if outer_v6 {
            ip("2001:db8:5::99")
        } else {
            ip("203.0.113.99")
        };
        let (mut buf, _) = tunnelled(&spec, &p, VnetHdr::default());
        assert_eq!(
            process_from(&mut buf, &local(), &[], &dirs),
            Outcome::Drop(DropReason::NotDirector)
        );
    }
}

/// A ring-like buffer (virtio header + frame) of `spec` encapsulated
/// with `params`; `vnet` is the RX virtio header.
fn tunnelled(spec: &FrameSpec, params: &TunParams, vnet: VnetHdr) -> (Vec<u8>, Vec<u8>) {
    let (b, inner, _) = tunnelled_pending(spec, params, vnet);
    (b, inner)
}

/// [`tunnelled`], also returning where the director left the inner
/// checksum pending (frame offsets), if it did.
fn tunnelled_pending(
    spec: &FrameSpec,
    params: &TunParams,
    vnet: VnetHdr,
) -> (Vec<u8>, Vec<u8>, Option<(usize, usize)>) {
    let frame = spec.build();
    let mut buf = vec![0u8; MAX_OVERHEAD];
    buf.extend_from_slice(&frame);
    let p = uvs_fwd::parse(&buf[MAX_OVERHEAD..]).expect("inner parses");
    let e = encap(&mut buf, MAX_OVERHEAD, &p, params, 7, spec.csum).expect("encap");
    let mut out = vec![0u8; VNET_HDR_LEN];
    vnet.write_to(&mut out);
    out.extend_from_slice(&buf[e.start..e.start + e.len]);
    // The inner IP packet as it must reach the stack (TTL decremented by
    // the director's forwarding).
    let l3 = 14;
    let mut inner = frame[l3..].to_vec();
    if spec.src.is_ipv4() {
        let mut ipk = ipv4::Packet::new_unchecked(&mut inner[..]);
        ipk.set_ttl(spec.ttl - 1);
        ipk.fill_checksum();
    } else {
        inner[7] = spec.ttl - 1;
    }
    (out, inner, e.pending.map(|p| (p.start, p.offset)))
}

fn delivered(buf: &[u8], o: Outcome) -> (VnetHdr, &[u8]) {
    let Outcome::Deliver { start, end, .. } = o else {
        panic!("not delivered: {o:?}");
    };
    let h: &[u8; VNET_HDR_LEN] = buf[start..start + VNET_HDR_LEN]
        .try_into()
        .expect("ten bytes");
    (VnetHdr::read(h), &buf[start + VNET_HDR_LEN..end])
}

fn params(kind: TunKind, outer_v6: bool) -> TunParams {
    let (src, dst) = if outer_v6 {
        (ip("2001:db8:5::1"), ip("2001:db8:5::11"))
    } else {
        (ip(LB), ip(RS))
    };
    let mut p = TunParams::new(kind, src, dst);
    p.port = 6080;
    p
}

#[test]
fn every_kind_and_family_mix_is_delivered_unchanged() {
    for kind in [TunKind::Ipip, TunKind::Gre, TunKind::Gue] {
        for outer_v6 in [false, true] {
            for spec in [FrameSpec::udp_v4(), FrameSpec::tcp_v6()] {
                let (mut buf, inner) =
                    tunnelled(&spec, &params(kind, outer_v6), VnetHdr::default());
                let o = process(&mut buf, &local(), &[6080]);
                let (h, pkt) = delivered(&buf, o);
                assert_eq!(h, VnetHdr::default(), "{kind:?} v6={outer_v6}");
                assert_eq!(pkt, &inner[..], "{kind:?} outer v6={outer_v6}");
                assert!(matches!(o, Outcome::Deliver { kind: k, .. } if k == kind));
            }
        }
    }
}

#[test]
fn outer_checksums_are_verified() {
    for kind in [TunKind::Gre, TunKind::Gue] {
        let mut p = params(kind, false);
        p.csum = TunCsum::Csum;
        let (mut buf, _) = tunnelled(&FrameSpec::udp_v4(), &p, VnetHdr::default());
        assert!(matches!(
            process(&mut buf.clone(), &local(), &[6080]),
            Outcome::Deliver { .. }
        ));
        // Flip a payload byte: the tunnel checksum no longer matches.
        let n = buf.len();
        buf[n - 1] ^= 0x55;
        assert_eq!(
            process(&mut buf, &local(), &[6080]),
            Outcome::Drop(DropReason::Checksum),
            "{kind:?}"
        );
    }
}

#[test]
fn pending_inner_checksum_is_completed_and_outer_gue_checksum_verifies() {
    let mut spec = FrameSpec::tcp_v4();
    spec.csum = CsumMode::Partial;
    let mut p = params(TunKind::Gue, false);
    p.csum = TunCsum::Csum;
    // Where the director's engine would say the inner checksum starts.
    let mut full = spec.clone();
    full.csum = CsumMode::Full;
    let (_, want) = tunnelled(&full, &p, VnetHdr::default());
    let (probe, _, pending) = tunnelled_pending(&spec, &p, VnetHdr::default());
    let (start, offset) = pending.expect("the director leaves it pending");
    // outer: 14 eth + 20 ip + 8 udp + 4 gue, then inner IP 20: TCP at 66.
    assert_eq!((start, offset), (14 + 20 + 8 + 4 + 20, 16));
    let vnet = VnetHdr {
        flags: VNET_F_NEEDS_CSUM,
        csum_start: start as u16,
        csum_offset: offset as u16,
        ..VnetHdr::default()
    };
    let mut buf = probe.clone();
    vnet.write_to(&mut buf[..VNET_HDR_LEN]);
    let o = process(&mut buf, &local(), &[6080]);
    assert!(matches!(
        o,
        Outcome::Deliver {
            offload: Offload::Completed,
            ..
        }
    ));
    let (h, pkt) = delivered(&buf, o);
    assert_eq!(h.flags, VNET_F_DATA_VALID);
    assert_eq!(pkt, &want[..]);
}

#[test]
fn gso_metadata_is_rebased_onto_the_inner_packet() {
    let mut spec = FrameSpec::tcp_v4();
    spec.csum = CsumMode::Partial;
    spec.payload = vec![7; 3000];
    let (mut buf, inner) = tunnelled(&spec, &params(TunKind::Ipip, false), VnetHdr::default());
    let tcp_start = 14 + 20 + 20;
    VnetHdr {
        flags: VNET_F_NEEDS_CSUM,
        gso_type: 1, // VIRTIO_NET_HDR_GSO_TCPV4
        hdr_len: (tcp_start + 20) as u16,
        gso_size: 1448,
        csum_start: tcp_start as u16,
        csum_offset: 16,
    }
    .write_to(&mut buf[..VNET_HDR_LEN]);
    let o = process(&mut buf, &local(), &[]);
    assert!(matches!(
        o,
        Outcome::Deliver {
            offload: Offload::Gso,
            ..
        }
    ));
    let (h, pkt) = delivered(&buf, o);
    assert_eq!(
        h,
        VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: 1,
            hdr_len: 40,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        }
    );
    assert_eq!(pkt, &inner[..]);
    // Offsets pointing into the outer header are refused.
    let (mut buf, _) = tunnelled(&spec, &params(TunKind::Ipip, false), VnetHdr::default());
    VnetHdr {
        flags: VNET_F_NEEDS_CSUM,
        gso_type: 1,
        gso_size: 1448,
        csum_start: 20,
        csum_offset: 16,
        ..VnetHdr::default()
    }
    .write_to(&mut buf[..VNET_HDR_LEN]);
    assert_eq!(
        process(&mut buf, &local(), &[]),
        Outcome::Drop(DropReason::BadOffload)
    );
}

#[test]
fn other_traffic_is_passed_and_foreign_tunnels_not_local() {
    // Plain UDP to the host, and UDP to a port that is not GUE's.
    let mut plain = vec![0u8; VNET_HDR_LEN];
    let mut s = FrameSpec::udp_v4();
    s.dst = ip(RS);
    plain.extend_from_slice(&s.build());
    assert_eq!(process(&mut plain, &local(), &[6080]), Outcome::Pass);
    let (mut gue, _) = tunnelled(
        &FrameSpec::udp_v4(),
        &params(TunKind::Gue, false),
        VnetHdr::default(),
    );
    assert_eq!(process(&mut gue.clone(), &local(), &[5555]), Outcome::Pass);
    // Addressed to someone else.
    let foreign = LocalAddrs::new([ip("203.0.113.12")]);
    assert_eq!(process(&mut gue, &foreign, &[6080]), Outcome::NotLocal);
    // Too short to hold a virtio header.
    assert_eq!(process(&mut [0u8; 3], &local(), &[]), Outcome::Pass);
}

#[test]
fn malformed_candidates_are_dropped_by_reason() {
    // ipip whose inner header announces more than the outer carries.
    let (mut buf, _) = tunnelled(
        &FrameSpec::udp_v4(),
        &params(TunKind::Ipip, false),
        VnetHdr::default(),
    );
    let inner = VNET_HDR_LEN + 14 + 20;
    buf[inner + 2] = 0x05; // total length 0x05xx
    assert_eq!(
        process(&mut buf, &local(), &[]),
        Outcome::Drop(DropReason::BadInner)
    );
    // Bad outer IPv4 header checksum.
    let (mut buf, _) = tunnelled(
        &FrameSpec::udp_v4(),
        &params(TunKind::Gre, false),
        VnetHdr::default(),
    );
    buf[VNET_HDR_LEN + 14 + 10] ^= 0xff;
    assert_eq!(
        process(&mut buf, &local(), &[]),
        Outcome::Drop(DropReason::BadOuter)
    );
}

/// Every truncation and every single-byte corruption of valid tunnel
/// packets: never a panic, and a delivery stays inside the buffer.
#[test]
fn malformed_input_never_panics() {
    for kind in [TunKind::Ipip, TunKind::Gre, TunKind::Gue] {
        for outer_v6 in [false, true] {
            let (buf, _) = tunnelled(
                &FrameSpec::tcp_v6(),
                &params(kind, outer_v6),
                VnetHdr {
                    flags: VNET_F_NEEDS_CSUM,
                    csum_start: 70,
                    csum_offset: 16,
                    ..VnetHdr::default()
                },
            );
            for cut in 0..buf.len() {
                let mut b = buf[..cut].to_vec();
                check(&mut b);
            }
            for i in 0..buf.len() {
                for x in [0x01u8, 0x80, 0xff] {
                    let mut b = buf.clone();
                    b[i] ^= x;
                    check(&mut b);
                }
            }
        }
    }
    fn check(b: &mut [u8]) {
        let n = b.len();
        if let Outcome::Deliver { start, end, .. } = process(b, &local(), &[6080]) {
            assert!(start + VNET_HDR_LEN <= end && end <= n);
        }
    }
}

#[test]
fn truncated_frames_are_recognised_from_their_headers() {
    let (buf, _) = tunnelled(
        &FrameSpec::udp_v4(),
        &params(TunKind::Gue, false),
        VnetHdr::default(),
    );
    let frame = &buf[VNET_HDR_LEN..];
    let cut = &frame[..14 + 20 + 8];
    assert!(candidate(cut, &[6080]).is_none());
    assert!(looks_tunnel(cut, &[6080]));
    assert!(!looks_tunnel(cut, &[5555]));
    let (buf, _) = tunnelled(
        &FrameSpec::tcp_v6(),
        &params(TunKind::Gre, true),
        VnetHdr::default(),
    );
    assert!(looks_tunnel(&buf[VNET_HDR_LEN..VNET_HDR_LEN + 60], &[]));
    let mut plain = FrameSpec::udp_v4();
    plain.dst = ip(RS);
    assert!(!looks_tunnel(&plain.build()[..40], &[6080]));
}

#[test]
fn counters_render_every_name() {
    let mut c = Counters::default();
    c.count(&Outcome::Drop(DropReason::Checksum));
    c.count(&Outcome::NotLocal);
    c.decap[kind_index(TunKind::Gre)] = 2;
    let r = c.render();
    assert!(r.contains("decap.gre 2\n"), "{r}");
    assert!(r.contains("drop.checksum 1\n"), "{r}");
    assert!(r.contains("pass.not_local 1\n"), "{r}");
    assert!(r.contains("addr.rereads 0\n"), "{r}");
    assert_eq!(r.lines().count(), 3 + 4 + DropReason::COUNT + 2);
}
