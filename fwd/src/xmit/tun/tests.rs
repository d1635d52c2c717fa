//! Unit tests of encapsulation and decapsulation: every kind × inner family
//! × outer family × checksum option, round-tripped through [`decap_frame`]
//! and checked field by field against the kernel's rules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::build::{FrameSpec, L4Spec};
use crate::checksum::verify_l4_checksum;
use crate::parse::parse;
use crate::wire::be16;

const HEADROOM: usize = 64;

fn dir4() -> IpAddr {
    Ipv4Addr::new(203, 0, 113, 1).into()
}
fn rs4() -> IpAddr {
    Ipv4Addr::new(203, 0, 113, 11).into()
}
fn dir6() -> IpAddr {
    "2001:db8:3::1".parse::<Ipv6Addr>().unwrap().into()
}
fn rs6() -> IpAddr {
    "2001:db8:3::11".parse::<Ipv6Addr>().unwrap().into()
}

fn with_headroom(f: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; HEADROOM];
    b.extend_from_slice(f);
    b
}

fn params(kind: TunKind, v4_outer: bool, csum: TunCsum) -> TunParams {
    let (s, d) = if v4_outer {
        (dir4(), rs4())
    } else {
        (dir6(), rs6())
    };
    let mut t = TunParams::new(kind, s, d);
    t.port = 6080;
    t.csum = csum;
    t
}

/// Encapsulates `spec`, checks the outer headers independently, decapsulates
/// and compares the inner packet with `spec` built with TTL − 1.
fn roundtrip(spec: &FrameSpec, t: &TunParams) -> Vec<u8> {
    let f = spec.build();
    let p = parse(&f).unwrap();
    let mut buf = with_headroom(&f);
    let e = encap(&mut buf, HEADROOM, &p, t, 0x4242, spec.csum).unwrap();
    assert_eq!(e.overhead, t.overhead(&p, spec.csum));
    assert_eq!(e.start, HEADROOM - e.overhead);
    let out = buf[e.start..e.start + e.len].to_vec();
    // L2 header moved, ethertype now the outer family's.
    assert_eq!(&out[..12], &f[..12]);
    let o = p.l3_off;
    assert_eq!(
        be16(&out, o - 2),
        if t.dst.is_ipv4() { 0x0800 } else { 0x86dd }
    );
    let q = parse(&out).expect("outer parses");
    assert_eq!((q.src, q.dst), (t.src, t.dst));
    assert_eq!(q.ttl, spec.ttl - 1, "outer TTL = inner TTL after decrement");
    assert_eq!(q.ip_end, out.len());
    let inner_proto = if spec.src.is_ipv4() { 4 } else { 41 };
    let want_proto = match t.kind {
        TunKind::Ipip => inner_proto,
        TunKind::Gre => 47,
        TunKind::Gue => 17,
    };
    assert_eq!(q.proto, want_proto);
    if t.dst.is_ipv4() {
        let df = out[o + 6] & 0x40 != 0;
        let inner_df = spec.src.is_ipv4() && spec.frag.is_none();
        assert_eq!(df, inner_df && t.pmtu_disc);
        let id = be16(&out, o + 4);
        assert_eq!(id, if df { 0 } else { 0x4242 });
    } else {
        assert_eq!(&out[o + 1..o + 4], &[0, 0, 0], "tc 0, flow label 0");
    }
    match t.kind {
        TunKind::Gre => {
            let g = gre::parse(&out[q.l4_off..]).unwrap();
            assert_eq!(g.protocol, if spec.src.is_ipv4() { 0x0800 } else { 0x86dd });
            assert_eq!(g.checksum.is_some(), t.csum == TunCsum::Csum);
        }
        TunKind::Gue => {
            assert_eq!((q.dport, q.has_l4), (6080, true));
            let (lo, hi) = t.sport_range;
            assert!((lo..=hi).contains(&q.sport));
            let c = be16(&out, q.l4_off + 6);
            if t.csum == TunCsum::NoCsum {
                assert_eq!(c, 0);
            } else {
                assert!(verify_l4_checksum(&out, &q).unwrap(), "outer UDP checksum");
            }
        }
        TunKind::Ipip => {}
    }
    let mut d = out.clone();
    let r = decap_frame(&mut d, &[6080]).expect("decapsulates");
    assert_eq!(r.kind, t.kind);
    assert_eq!((r.outer_src, r.outer_dst), (t.src, t.dst));
    let mut want = spec.clone();
    want.ttl -= 1;
    let wf = want.build();
    let wp = parse(&wf).unwrap();
    assert_eq!(
        &d[r.offset..r.offset + r.len],
        &wf[wp.l3_off..wp.ip_end],
        "inner packet intact but for its TTL"
    );
    out
}

#[test]
fn every_kind_family_and_csum_roundtrips() {
    for spec in [
        FrameSpec::tcp_v4(),
        FrameSpec::udp_v6(),
        FrameSpec::udp_v4(),
        FrameSpec::tcp_v6(),
    ] {
        for kind in [TunKind::Ipip, TunKind::Gre, TunKind::Gue] {
            for v4_outer in [true, false] {
                for csum in [TunCsum::NoCsum, TunCsum::Csum, TunCsum::RemCsum] {
                    roundtrip(&spec, &params(kind, v4_outer, csum));
                }
            }
        }
    }
}

#[test]
fn vlan_tags_move_with_the_header() {
    let mut spec = FrameSpec::tcp_v4();
    spec.vlans = vec![0x64, 0x2007];
    spec.padding = 7;
    let out = roundtrip(&spec, &params(TunKind::Gre, false, TunCsum::Csum));
    assert_eq!(
        &out[12..22],
        &[0x88, 0xa8, 0, 0x64, 0x81, 0, 0x20, 0x07, 0x86, 0xdd]
    );
}

#[test]
fn df_follows_pmtu_disc_and_fragments() {
    let mut t = params(TunKind::Ipip, true, TunCsum::NoCsum);
    t.pmtu_disc = false;
    roundtrip(&FrameSpec::tcp_v4(), &t);
    let mut spec = FrameSpec::udp_v4();
    spec.frag = Some((0, true));
    roundtrip(&spec, &params(TunKind::Ipip, true, TunCsum::NoCsum));
    // IPv6 inner: never DF.
    roundtrip(
        &FrameSpec::tcp_v6(),
        &params(TunKind::Gue, true, TunCsum::Csum),
    );
}

#[test]
fn ecn_ce_becomes_ect0_and_dscp_is_copied() {
    assert_eq!(ecn_encapsulate(0xb8 | 3), 0xba);
    assert_eq!(ecn_encapsulate(0xb8 | 1), 0xb9);
    assert_eq!(ecn_encapsulate(0x02), 0x02);
    let mut f = FrameSpec::tcp_v4().build();
    f[15] = 0x2b; // DSCP 10, CE
    let c = checksum::checksum(&{
        let mut h = f[14..34].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let p = parse(&f).unwrap();
    let mut buf = with_headroom(&f);
    let t = params(TunKind::Ipip, false, TunCsum::NoCsum);
    let e = encap(&mut buf, HEADROOM, &p, &t, 0, CsumMode::Full).unwrap();
    let o = e.start + 14;
    let tc = (buf[o] << 4) | (buf[o + 1] >> 4);
    assert_eq!(tc, 0x2a);
}

/// Partial mode: the inner checksum stays pending (engine completes it), the
/// outer GRE / GUE checksum is right for the completed packet (LCO).
#[test]
fn partial_inner_with_outer_checksum_uses_lco() {
    for (kind, csum) in [
        (TunKind::Gre, TunCsum::Csum),
        (TunKind::Gue, TunCsum::Csum),
        (TunKind::Ipip, TunCsum::NoCsum),
    ] {
        for mut spec in [FrameSpec::tcp_v4(), FrameSpec::udp_v6()] {
            spec.csum = CsumMode::Partial;
            spec.payload = b"odd payload".to_vec();
            let f = spec.build();
            let p = parse(&f).unwrap();
            let mut buf = with_headroom(&f);
            let t = params(kind, true, csum);
            let e = encap(&mut buf, HEADROOM, &p, &t, 1, CsumMode::Partial).unwrap();
            let pend = e.pending.expect("inner checksum still pending");
            assert_eq!(pend.start, p.l4_off + e.overhead);
            assert_eq!(pend.offset, if p.proto == 6 { 16 } else { 6 });
            // Complete it as the kernel would with csum_start/csum_offset.
            let mut out = buf[e.start..e.start + e.len].to_vec();
            let at = pend.start + pend.offset;
            let c = !checksum::fold(checksum::sum(&out[pend.start..]));
            out[at..at + 2].copy_from_slice(&c.to_be_bytes());
            // Now everything must verify, and decap must give the Full packet.
            let mut d = out.clone();
            let r = decap_frame(&mut d, &[6080]).expect("outer checksum valid after completion");
            let mut want = spec.clone();
            want.csum = CsumMode::Full;
            want.ttl -= 1;
            let wf = want.build();
            let wp = parse(&wf).unwrap();
            assert_eq!(&d[r.offset..r.offset + r.len], &wf[wp.l3_off..wp.ip_end]);
        }
    }
}

/// Remote checksum offload: the inner checksum travels pending, the GUE
/// option says where; the endpoint completes it.
#[test]
fn remcsum_carries_the_pending_checksum() {
    for mut spec in [
        FrameSpec::tcp_v4(),
        FrameSpec::udp_v6(),
        FrameSpec::udp_v4(),
    ] {
        spec.csum = CsumMode::Partial;
        let f = spec.build();
        let p = parse(&f).unwrap();
        let mut buf = with_headroom(&f);
        let t = params(TunKind::Gue, !spec.src.is_ipv4(), TunCsum::RemCsum);
        let e = encap(&mut buf, HEADROOM, &p, &t, 0, CsumMode::Partial).unwrap();
        assert_eq!(e.pending, None, "no NEEDS_CSUM: the receiver completes it");
        let out = buf[e.start..e.start + e.len].to_vec();
        let q = parse(&out).unwrap();
        assert!(verify_l4_checksum(&out, &q).unwrap(), "outer UDP checksum");
        let g = gue::parse(&out[q.payload_off..]).unwrap();
        let l4_rel = (p.l4_off - p.l3_off) as u16;
        let field = if p.proto == 6 { 16 } else { 6 };
        assert!(matches!(
            g,
            gue::Header::V0 { remcsum: Some((s, o)), len: 12, .. } if s == l4_rel && o == l4_rel + field
        ));
        let mut d = out.clone();
        let r = decap_frame(&mut d, &[6080]).unwrap();
        let mut want = spec.clone();
        want.csum = CsumMode::Full;
        want.ttl -= 1;
        let wf = want.build();
        let wp = parse(&wf).unwrap();
        assert_eq!(&d[r.offset..r.offset + r.len], &wf[wp.l3_off..wp.ip_end]);
        // Full mode: no option, even with RemCsum.
        spec.csum = CsumMode::Full;
        let f = spec.build();
        let p = parse(&f).unwrap();
        assert_eq!(
            t.overhead(&p, CsumMode::Full),
            overhead(t.kind, t.outer_version(), t.csum, false)
        );
    }
}

#[test]
fn pending_sctp_crc_is_completed_first() {
    let mut spec = FrameSpec::tcp_v4();
    spec.l4 = L4Spec::Sctp;
    spec.csum = CsumMode::Partial; // CRC field left 0 by the builder
    let f = spec.build();
    let p = parse(&f).unwrap();
    let mut buf = with_headroom(&f);
    let t = params(TunKind::Gre, true, TunCsum::Csum);
    let e = encap(&mut buf, HEADROOM, &p, &t, 0, CsumMode::Partial).unwrap();
    assert_eq!(e.pending, None);
    let mut d = buf[e.start..e.start + e.len].to_vec();
    let r = decap_frame(&mut d, &[]).unwrap();
    let mut want = spec.clone();
    want.csum = CsumMode::Full;
    want.ttl -= 1;
    let wf = want.build();
    assert_eq!(&d[r.offset..r.offset + r.len], &wf[14..]);
}

#[test]
fn errors_leave_the_buffer_unchanged() {
    let f = FrameSpec::tcp_v4().build();
    let p = parse(&f).unwrap();
    let t = params(TunKind::Gue, false, TunCsum::RemCsum);
    let mut buf = with_headroom(&f);
    let orig = buf.clone();
    // IPv6 + UDP + GUE = 52 bytes of headroom needed.
    assert_eq!(
        encap(&mut buf[HEADROOM - 51..], 51, &p, &t, 0, CsumMode::Full),
        Err(XmitError::NoHeadroom)
    );
    let mut bad = t;
    bad.src = dir4();
    assert_eq!(
        encap(&mut buf, HEADROOM, &p, &bad, 0, CsumMode::Full),
        Err(XmitError::FamilyMismatch)
    );
    let mut spec = FrameSpec::tcp_v4();
    spec.ttl = 1;
    let f1 = spec.build();
    let mut b1 = with_headroom(&f1);
    let o1 = b1.clone();
    assert_eq!(
        encap(
            &mut b1,
            HEADROOM,
            &parse(&f1).unwrap(),
            &t,
            0,
            CsumMode::Full
        ),
        Err(XmitError::TtlExceeded)
    );
    assert_eq!(b1, o1);
    assert_eq!(
        encap(
            &mut buf[..HEADROOM + 20],
            HEADROOM,
            &p,
            &t,
            0,
            CsumMode::Full
        ),
        Err(XmitError::FrameMismatch)
    );
    assert_eq!(
        encap(&mut buf, 10_000, &p, &t, 0, CsumMode::Full),
        Err(XmitError::FrameMismatch)
    );
    assert_eq!(buf, orig);
    // Too large for the outer IPv4 length field.
    let mut spec = FrameSpec::udp_v6();
    spec.payload = vec![0; 65535 - 48];
    let big = spec.build();
    let bp = parse(&big).unwrap();
    let mut bb = with_headroom(&big);
    assert_eq!(
        encap(
            &mut bb,
            HEADROOM,
            &bp,
            &params(TunKind::Ipip, true, TunCsum::NoCsum),
            0,
            CsumMode::Full
        ),
        Err(XmitError::TooLarge)
    );
}

#[test]
fn overheads() {
    use IpVersion::*;
    assert_eq!(overhead(TunKind::Ipip, V4, TunCsum::Csum, false), 20);
    assert_eq!(overhead(TunKind::Ipip, V6, TunCsum::NoCsum, false), 40);
    assert_eq!(overhead(TunKind::Gre, V4, TunCsum::NoCsum, false), 24);
    assert_eq!(overhead(TunKind::Gre, V4, TunCsum::Csum, false), 28);
    assert_eq!(overhead(TunKind::Gre, V6, TunCsum::RemCsum, false), 44);
    assert_eq!(overhead(TunKind::Gue, V4, TunCsum::NoCsum, false), 32);
    assert_eq!(
        overhead(TunKind::Gue, V6, TunCsum::RemCsum, true),
        MAX_OVERHEAD
    );
}

#[test]
fn mtu_check_matches_the_kernel() {
    let mut spec = FrameSpec::tcp_v4();
    spec.payload = vec![0; 1460];
    let f = spec.build(); // 1500 bytes, DF
    let p = parse(&f).unwrap();
    let t = params(TunKind::Ipip, true, TunCsum::NoCsum);
    assert_eq!(
        check_mtu(&f, &p, &t, 1500, CsumMode::Full),
        Err(NeedsFrag {
            mtu: 1480,
            len: 1500,
            send_icmp: true
        })
    );
    assert_eq!(check_mtu(&f, &p, &t, 1520, CsumMode::Full), Ok(()));
    let g = params(TunKind::Gue, true, TunCsum::Csum);
    assert_eq!(
        check_mtu(&f, &p, &g, 1500, CsumMode::Full).map_err(|e| e.mtu),
        Err(1468)
    );
    // pmtu_disc off: IPv4 passes (will be fragmented).
    let mut off = t;
    off.pmtu_disc = false;
    assert_eq!(check_mtu(&f, &p, &off, 1500, CsumMode::Full), Ok(()));
    // A route MTU leaving less than the minimum: dropped, no ICMP.
    let six = params(TunKind::Ipip, false, TunCsum::NoCsum);
    assert!(check_mtu(&f, &p, &six, 1300, CsumMode::Full).is_err_and(|e| !e.send_icmp));
    assert!(check_mtu(&f, &p, &t, 80, CsumMode::Full).is_err_and(|e| !e.send_icmp && e.mtu == 60));
}

#[test]
fn gue_source_port_is_a_stable_flow_hash() {
    let f = FrameSpec::tcp_v4().build();
    let p = parse(&f).unwrap();
    let a = flow_sport(&p, 7, DEFAULT_SPORT_RANGE);
    assert_eq!(a, flow_sport(&p, 7, DEFAULT_SPORT_RANGE));
    let mut seen = std::collections::HashSet::new();
    for sport in 0..200u16 {
        let mut q = p;
        q.sport = sport;
        let s = flow_sport(&q, 7, (1000, 1009));
        assert!((1000..=1009).contains(&s));
        seen.insert(s);
    }
    assert_eq!(seen.len(), 10, "spreads over the whole range");
    assert_eq!(flow_sport(&p, 7, (5, 5)), 5);
    assert!((5..=9).contains(&flow_sport(&p, 7, (9, 5))));
}

fn encapsulated(kind: TunKind, csum: TunCsum) -> Vec<u8> {
    let f = FrameSpec::tcp_v4().build();
    let p = parse(&f).unwrap();
    let mut buf = with_headroom(&f);
    let e = encap(
        &mut buf,
        HEADROOM,
        &p,
        &params(kind, true, csum),
        9,
        CsumMode::Full,
    )
    .unwrap();
    buf[e.start..e.start + e.len].to_vec()
}

#[test]
fn decap_refusals() {
    // Plain traffic and UDP to another port are not for the endpoint.
    let mut f = FrameSpec::tcp_v4().build();
    assert_eq!(decap_frame(&mut f, &[6080]), Err(DecapError::NotTunnel));
    let mut g = encapsulated(TunKind::Gue, TunCsum::Csum);
    assert_eq!(decap_frame(&mut g, &[6081]), Err(DecapError::NotTunnel));
    // A corrupted payload fails the GRE / UDP checksum (and only then).
    for kind in [TunKind::Gre, TunKind::Gue] {
        let mut g = encapsulated(kind, TunCsum::Csum);
        let n = g.len();
        g[n - 1] ^= 0x40;
        assert_eq!(decap_frame(&mut g, &[6080]), Err(DecapError::Checksum));
        let mut g = encapsulated(kind, TunCsum::NoCsum);
        g[n - 1 - 4 * usize::from(kind == TunKind::Gre)] ^= 0x40;
        assert!(decap_frame(&mut g, &[6080]).is_ok());
    }
    // Outer fragment.
    let mut g = encapsulated(TunKind::Ipip, TunCsum::NoCsum);
    g[14 + 6] = 0x20; // MF
    let c = {
        g[24] = 0;
        g[25] = 0;
        checksum::checksum(&g[14..34])
    };
    g[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(decap_frame(&mut g, &[]), Err(DecapError::OuterFragment));
    // ipip announcing IPv6 but carrying IPv4.
    let mut g = encapsulated(TunKind::Ipip, TunCsum::NoCsum);
    g[14 + 9] = 41;
    g[24] = 0;
    g[25] = 0;
    let c = checksum::checksum(&g[14..34]);
    g[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(decap_frame(&mut g, &[]), Err(DecapError::BadInner));
    // Outer IPv4 header checksum wrong.
    let mut g = encapsulated(TunKind::Ipip, TunCsum::NoCsum);
    g[14 + 8] ^= 1;
    assert_eq!(decap_frame(&mut g, &[]), Err(DecapError::BadOuter));
    // GUE control message (no UDP checksum to fix: NoCsum).
    let mut g = encapsulated(TunKind::Gue, TunCsum::NoCsum);
    g[14 + 20 + 8] |= 0x20;
    assert_eq!(decap_frame(&mut g, &[6080]), Err(DecapError::Unsupported));
    // A bad remote-checksum option.
    let mut inner = [0u8; 40];
    assert_eq!(
        remote_checksum_for_test(&mut inner, 20, 40),
        Err(DecapError::BadRemcsum)
    );
    assert_eq!(
        remote_checksum_for_test(&mut inner, 21, 27),
        Err(DecapError::BadRemcsum)
    );
    assert_eq!(
        remote_checksum_for_test(&mut inner, 20, 18),
        Err(DecapError::BadRemcsum)
    );
    assert_eq!(remote_checksum_for_test(&mut inner, 20, 26), Ok(()));
    assert_eq!(&inner[26..28], &[0xff, 0xff]);
}

fn remote_checksum_for_test(inner: &mut [u8], start: u16, offset: u16) -> Result<(), DecapError> {
    // Build a GUE-in-IPv4 packet around `inner` with the option and decap it:
    // exercises the option through the public path.
    let mut ip = vec![0u8; 20];
    let ulen = 8 + 12 + inner.len();
    let mut inner_ip = inner.to_vec();
    inner_ip[0] = 0x45;
    inner_ip[2..4].copy_from_slice(&(inner.len() as u16).to_be_bytes());
    ipv4::Repr {
        src: Ipv4Addr::new(192, 0, 2, 1),
        dst: Ipv4Addr::new(192, 0, 2, 2),
        protocol: 17,
        ttl: 64,
        tos: 0,
        ident: 0,
        flags_frag: 0,
        payload_len: ulen,
    }
    .emit(&mut ip)
    .unwrap();
    let mut pkt = ip;
    pkt.extend_from_slice(&[0, 1, 0x17, 0xc0]);
    pkt.extend_from_slice(&(ulen as u16).to_be_bytes());
    pkt.extend_from_slice(&[0, 0]);
    let mut g = [0u8; 12];
    gue::emit(&mut g, 4, Some((start, offset))).unwrap();
    pkt.extend_from_slice(&g);
    pkt.extend_from_slice(&inner_ip);
    let r = decap(&mut pkt, &[6080]).map(|_| ());
    inner.copy_from_slice(&pkt[40..]);
    r
}

#[test]
fn outer_head_is_what_encap_puts_in_front() {
    for spec in [
        FrameSpec::tcp_v4(),
        FrameSpec::udp_v6(),
        FrameSpec::udp_v4(),
        FrameSpec::tcp_v6(),
    ] {
        for kind in [TunKind::Ipip, TunKind::Gre, TunKind::Gue] {
            for v4_outer in [true, false] {
                for csum in [TunCsum::NoCsum, TunCsum::Csum, TunCsum::RemCsum] {
                    let t = params(kind, v4_outer, csum);
                    let f = spec.build();
                    let p = parse(&f).unwrap();
                    let mut head = [0u8; 128];
                    let o = outer_head(&f, &p, &t, spec.csum, &mut head).unwrap();
                    let mut buf = with_headroom(&f);
                    let e = encap(&mut buf, HEADROOM, &p, &t, 0, spec.csum).unwrap();
                    let out = &buf[e.start + p.l3_off..e.start + e.len];
                    assert_eq!(o.head_len, e.overhead);
                    assert_eq!(o.ip_len, out.len());
                    let mut want = out[..e.overhead].to_vec();
                    let mut got = head[..o.head_len].to_vec();
                    // Neither checksums nor (DF clear) the ID are the walk's.
                    let blank: &[usize] = match (v4_outer, kind) {
                        (true, TunKind::Gue) => &[4, 5, 10, 11, 26, 27],
                        (true, TunKind::Gre) => &[4, 5, 10, 11, 24, 25],
                        (true, TunKind::Ipip) => &[4, 5, 10, 11],
                        (false, TunKind::Gue) => &[46, 47],
                        (false, TunKind::Gre) => &[44, 45],
                        (false, TunKind::Ipip) => &[],
                    };
                    let n = want.len();
                    for &i in blank.iter().filter(|&&i| i < n) {
                        want[i] = 0;
                        got[i] = 0;
                    }
                    assert_eq!(got, want, "{kind:?} v4 outer {v4_outer} {csum:?}");
                    let outer = parse_outer(out);
                    assert_eq!(o.proto, outer);
                }
            }
        }
    }
}

/// The protocol field of an outer IPv4 or IPv6 header.
fn parse_outer(ip: &[u8]) -> u8 {
    if ip[0] >> 4 == 4 {
        ip[9]
    } else {
        ip[6]
    }
}
