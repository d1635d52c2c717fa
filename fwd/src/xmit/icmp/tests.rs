//! Unit tests of ICMP error building and NAT of ICMP errors. NAT results are
//! compared with frames built from scratch by `FrameSpec` (every checksum
//! computed in full), never with the code under test.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::build::{FrameSpec, L4Spec};
use crate::parse::{embedded, parse};
use crate::wire::be16;

fn vip4() -> IpAddr {
    Ipv4Addr::new(192, 0, 2, 10).into()
}
fn rs4() -> IpAddr {
    Ipv4Addr::new(203, 0, 113, 11).into()
}
fn vip6() -> IpAddr {
    "2001:db8:2::10".parse::<Ipv6Addr>().unwrap().into()
}
fn rs6() -> IpAddr {
    "2001:db8:3::11".parse::<Ipv6Addr>().unwrap().into()
}

fn build(orig: &[u8], kind: IcmpKind, src: IpAddr) -> Result<Vec<u8>, XmitError> {
    let p = parse(orig).unwrap();
    let mut out = [0u8; MAX_ERROR_FRAME];
    let n = build_icmp_error(&mut out, orig, &p, kind, src, 0x1234)?;
    Ok(out[..n].to_vec())
}

#[test]
fn port_unreachable_v4() {
    let mut spec = FrameSpec::tcp_v4();
    spec.vlans = vec![0x0064];
    spec.padding = 3;
    let orig = spec.build();
    let op = parse(&orig).unwrap();
    let out = build(&orig, IcmpKind::PortUnreachable, vip4()).unwrap();
    assert_eq!(&out[..6], &spec.src_mac);
    assert_eq!(&out[6..12], &spec.dst_mac);
    assert_eq!(&out[12..18], &orig[12..18], "VLAN tag and ethertype kept");
    let p = parse(&out).unwrap();
    assert_eq!(p.ip_end, out.len());
    assert_eq!((p.src, p.dst, p.ttl, p.proto), (vip4(), spec.src, 64, 1));
    assert_eq!((p.icmp_type, p.icmp_code), (3, 3));
    assert_eq!(out[p.l3_off + 1], 0xc0, "precedence internetwork control");
    assert_eq!(be16(&out, p.l3_off + 4), 0x1234);
    assert_eq!(be16(&out, p.l3_off + 6), 0, "no DF");
    assert_eq!(&out[p.l4_off + 4..p.l4_off + 8], &[0; 4]);
    assert_eq!(
        &out[p.payload_off..],
        &orig[op.l3_off..op.ip_end],
        "whole original quoted"
    );
    assert!(icmpv4::Packet::new_checked(&out[p.l4_off..])
        .unwrap()
        .verify_checksum());
    let e = embedded(&out, &p).unwrap();
    assert_eq!(
        (e.src, e.dst, e.sport, e.dport),
        (spec.src, spec.dst, 40000, 80)
    );
}

#[test]
fn quote_is_cut_at_576_and_1280() {
    let mut spec = FrameSpec::udp_v4();
    spec.payload = vec![0x5a; 1472];
    let orig = spec.build();
    let out = build(&orig, IcmpKind::TooBig { mtu: 1480 }, rs4()).unwrap();
    let p = parse(&out).unwrap();
    assert_eq!(p.ip_len, 576);
    assert_eq!(out.len(), 14 + 576);
    assert_eq!(&out[p.l4_off + 4..p.l4_off + 8], &[0, 0, 0x05, 0xc8]);
    assert_eq!(&out[p.payload_off..], &orig[14..14 + QUOTE_MAX_V4]);
    assert!(icmpv4::Packet::new_checked(&out[p.l4_off..p.ip_end])
        .unwrap()
        .verify_checksum());
    // The 16-bit MTU field saturates.
    let out = build(&orig, IcmpKind::TooBig { mtu: 70000 }, rs4()).unwrap();
    assert_eq!(&out[34 + 4..34 + 8], &[0, 0, 0xff, 0xff]);

    let mut spec = FrameSpec::tcp_v6();
    spec.payload = vec![0xa5; 1440];
    let orig = spec.build();
    let out = build(&orig, IcmpKind::TooBig { mtu: 1280 }, rs6()).unwrap();
    let p = parse(&out).unwrap();
    assert_eq!((p.ip_len, out.len()), (1280, 14 + 1280));
    assert_eq!((p.icmp_type, p.icmp_code, p.ttl), (2, 0, 64));
    assert_eq!(&out[p.l3_off..p.l3_off + 4], &[0x60, 0, 0, 0]);
    let m = icmpv6::Packet::new_checked(&out[p.l4_off..p.ip_end]).unwrap();
    assert_eq!(m.mtu(), 1280);
    let (IpAddr::V6(s), IpAddr::V6(d)) = (p.src, p.dst) else {
        unreachable!()
    };
    assert!(m.verify_checksum(&s, &d));
    assert_eq!(&out[p.payload_off..], &orig[14..14 + QUOTE_MAX_V6]);
}

#[test]
fn codes_per_family() {
    let v4 = FrameSpec::udp_v4().build();
    let v6 = FrameSpec::udp_v6().build();
    for (kind, t4, t6) in [
        (IcmpKind::PortUnreachable, (3, 3), (1, 4)),
        (IcmpKind::HostUnreachable, (3, 1), (1, 3)),
        (IcmpKind::TooBig { mtu: 1400 }, (3, 4), (2, 0)),
        (IcmpKind::TimeExceeded, (11, 0), (3, 0)),
    ] {
        let p = parse(&build(&v4, kind, vip4()).unwrap()).unwrap();
        assert_eq!((p.icmp_type, p.icmp_code), t4);
        let out6 = build(&v6, kind, vip6()).unwrap();
        let p = parse(&out6).unwrap();
        assert_eq!((p.icmp_type, p.icmp_code), t6);
        let (IpAddr::V6(s), IpAddr::V6(d)) = (p.src, p.dst) else {
            unreachable!()
        };
        assert!(icmpv6::Packet::new_checked(&out6[p.l4_off..])
            .unwrap()
            .verify_checksum(&s, &d));
    }
}

#[test]
fn never_answered() {
    let refused = |spec: &FrameSpec, kind| {
        let f = spec.build();
        let p = parse(&f).unwrap();
        let mut out = [0u8; MAX_ERROR_FRAME];
        let src = if spec.src.is_ipv4() { vip4() } else { vip6() };
        build_icmp_error(&mut out, &f, &p, kind, src, 0) == Err(XmitError::IcmpNotAllowed)
    };
    let port = IcmpKind::PortUnreachable;
    // An ICMP error, an unknown ICMP type; an echo request is answered.
    let mut s = FrameSpec::tcp_v4();
    s.l4 = L4Spec::Icmp {
        msg_type: 3,
        code: 1,
    };
    assert!(refused(&s, port));
    s.l4 = L4Spec::Icmp {
        msg_type: 42,
        code: 0,
    };
    assert!(refused(&s, port));
    s.l4 = L4Spec::Icmp {
        msg_type: 8,
        code: 0,
    };
    assert!(!refused(&s, port));
    // Non-first fragment; the first is answered.
    let mut s = FrameSpec::udp_v4();
    s.frag = Some((1480, false));
    assert!(refused(&s, port));
    s.frag = Some((0, true));
    assert!(!refused(&s, port));
    // Multicast / broadcast destination, sources that are not one node.
    for (src, dst) in [
        ("198.51.100.1", "224.0.0.1"),
        ("198.51.100.1", "255.255.255.255"),
        ("0.0.0.0", "192.0.2.10"),
        ("0.1.2.3", "192.0.2.10"),
        ("127.0.0.1", "192.0.2.10"),
        ("239.1.1.1", "192.0.2.10"),
    ] {
        let mut s = FrameSpec::udp_v4();
        s.src = src.parse().unwrap();
        s.dst = dst.parse().unwrap();
        assert!(refused(&s, port), "{src} -> {dst}");
    }
    // IPv6: ICMPv6 errors, multicast destination except packet too big.
    let mut s = FrameSpec::udp_v6();
    s.l4 = L4Spec::Icmp {
        msg_type: 1,
        code: 4,
    };
    assert!(refused(&s, port));
    s.l4 = L4Spec::Icmp {
        msg_type: 128,
        code: 0,
    };
    assert!(!refused(&s, port));
    let mut s = FrameSpec::udp_v6();
    s.dst = "ff02::1".parse().unwrap();
    assert!(refused(&s, port));
    assert!(!refused(&s, IcmpKind::TooBig { mtu: 1280 }));
    s.dst = vip6();
    s.src = "::".parse().unwrap();
    assert!(refused(&s, IcmpKind::TooBig { mtu: 1280 }));
    // An IPv6 later fragment is answered (no ICMPv6 type to check there).
    let mut s = FrameSpec::udp_v6();
    s.frag = Some((1448, false));
    assert!(!refused(&s, port));
}

#[test]
fn build_errors() {
    let f = FrameSpec::tcp_v4().build();
    let p = parse(&f).unwrap();
    let mut out = [0u8; 80];
    assert_eq!(
        build_icmp_error(&mut out, &f, &p, IcmpKind::PortUnreachable, vip6(), 0),
        Err(XmitError::FamilyMismatch)
    );
    assert_eq!(
        build_icmp_error(&mut out[..60], &f, &p, IcmpKind::PortUnreachable, vip4(), 0),
        Err(XmitError::BufferTooSmall)
    );
    assert_eq!(
        build_icmp_error(&mut out, &f[..30], &p, IcmpKind::PortUnreachable, vip4(), 0),
        Err(XmitError::FrameMismatch)
    );
    let mut big = [0u8; 100];
    assert_eq!(
        build_icmp_error(&mut big, &f, &p, IcmpKind::PortUnreachable, vip4(), 0),
        Ok(14 + 28 + f.len() - 14)
    );
}

/// An ICMP error `t`/`code` from `from` to `to` quoting `quoted` (IP header
/// and the first `n` bytes after it), built from scratch.
fn error_spec(
    quoted: &FrameSpec,
    n: usize,
    from: IpAddr,
    to: IpAddr,
    t: u8,
    code: u8,
) -> FrameSpec {
    let f = quoted.build();
    let q = parse(&f).unwrap();
    let mut s = FrameSpec::tcp_v4();
    s.src = from;
    s.dst = to;
    s.l4 = L4Spec::Icmp { msg_type: t, code };
    s.payload = f[q.l3_off..(q.l4_off + n).min(q.ip_end)].to_vec();
    s
}

/// Runs `nat_icmp_error` on the built `input` and compares with `want`,
/// whose quoted TCP/UDP checksum is first set to the input's: the kernel
/// leaves the quoted L4 checksum alone, and so must we.
fn check_nat(input: &FrameSpec, nat: IcmpNat, want: &FrameSpec) {
    let mut want = want.clone();
    let q = &input.payload;
    let hl = if q[0] >> 4 == 4 {
        usize::from(q[0] & 15) * 4
    } else {
        40
    };
    let proto = if q[0] >> 4 == 4 { q[9] } else { q[6] };
    let off = match proto {
        6 => Some(hl + 16),
        17 => Some(hl + 6),
        _ => None,
    };
    if let Some(o) = off.filter(|o| o + 2 <= q.len()) {
        want.payload[o..o + 2].copy_from_slice(&q[o..o + 2]);
    }
    let mut f = input.build();
    let p = parse(&f).unwrap();
    let e = embedded(&f, &p).unwrap();
    nat_icmp_error(&mut f, &p, &e, &nat, input.csum).unwrap();
    assert_eq!(f, want.build(), "{input:?}");
}

#[test]
fn error_from_real_server_reaches_client_as_from_vip() {
    for (vip, rs, tcp) in [
        (vip4(), rs4(), FrameSpec::tcp_v4()),
        (vip6(), rs6(), FrameSpec::udp_v6()),
        (vip4(), rs4(), FrameSpec::udp_v4()),
        (vip6(), rs6(), FrameSpec::tcp_v6()),
    ] {
        let client = tcp.src;
        // What the real server received: DNAT to rs:8080, TTL decremented.
        let mut at_rs = tcp.clone();
        at_rs.dst = rs;
        at_rs.dport = 8080;
        at_rs.ttl = 63;
        // What the client sent, as the client must see it quoted.
        let mut as_sent = tcp.clone();
        as_sent.ttl = 63;
        let (t, code) = if vip.is_ipv4() { (3, 3) } else { (1, 4) };
        for n in [8, 64] {
            let input = error_spec(&at_rs, n, rs, client, t, code);
            let mut want = error_spec(&as_sent, n, vip, client, t, code);
            want.ttl = 63;
            check_nat(&input, IcmpNat::to_client(vip, 80), &want);
        }
    }
}

#[test]
fn error_from_client_side_reaches_real_server() {
    // A reply VIP:80 -> client, as the client saw it; the client's router
    // answers with time exceeded, addressed to the VIP.
    let mut reply = FrameSpec::tcp_v4();
    reply.src = vip4();
    reply.sport = 80;
    reply.dst = "198.51.100.1".parse().unwrap();
    reply.dport = 40000;
    let router: IpAddr = "198.51.100.254".parse().unwrap();
    let input = error_spec(&reply, 8, router, vip4(), 11, 0);
    let mut orig_reply = reply.clone();
    orig_reply.src = rs4();
    orig_reply.sport = 8080;
    let mut want = error_spec(&orig_reply, 8, router, rs4(), 11, 0);
    want.ttl = 63;
    check_nat(&input, IcmpNat::to_server(rs4(), 8080), &want);
}

#[test]
fn quoted_ip_options_and_portless_quotes() {
    let mut q = FrameSpec::udp_v4();
    q.ip_options = vec![1, 1, 1, 1];
    q.dst = rs4();
    let input = error_spec(&q, 8, rs4(), q.src, 3, 3);
    let mut qw = q.clone();
    qw.dst = vip4();
    qw.dport = 53;
    let mut want = error_spec(&qw, 8, vip4(), q.src, 3, 3);
    want.ttl = 63;
    check_nat(&input, IcmpNat::to_client(vip4(), 53), &want);
    // A quoted echo request: addresses only.
    let mut echo = FrameSpec::tcp_v4();
    echo.l4 = L4Spec::Icmp {
        msg_type: 8,
        code: 0,
    };
    echo.dst = rs4();
    let input = error_spec(&echo, 8, rs4(), echo.src, 3, 1);
    let mut ew = echo.clone();
    ew.dst = vip4();
    let mut want = error_spec(&ew, 8, vip4(), echo.src, 3, 1);
    want.ttl = 63;
    check_nat(&input, IcmpNat::to_client(vip4(), 80), &want);
}

#[test]
fn partial_icmpv6_checksum_stays_pending() {
    let mut at_rs = FrameSpec::tcp_v6();
    at_rs.dst = rs6();
    let mut input = error_spec(&at_rs, 8, rs6(), at_rs.src, 1, 4);
    input.csum = CsumMode::Partial;
    let mut qw = at_rs.clone();
    qw.dst = vip6();
    let mut want = error_spec(&qw, 8, vip6(), at_rs.src, 1, 4);
    want.csum = CsumMode::Partial;
    want.ttl = 63;
    check_nat(&input, IcmpNat::to_client(vip6(), 80), &want);
}

#[test]
fn nat_refusals_leave_the_frame() {
    let mut echo = FrameSpec::tcp_v4();
    echo.l4 = L4Spec::Icmp {
        msg_type: 8,
        code: 0,
    };
    echo.payload = FrameSpec::tcp_v4().build()[14..42].to_vec();
    let mut f = echo.build();
    let p = parse(&f).unwrap();
    let err = error_spec(&FrameSpec::tcp_v4(), 8, rs4(), vip4(), 3, 3).build();
    let ep = parse(&err).unwrap();
    let e = embedded(&err, &ep).unwrap();
    let nat = IcmpNat::to_client(vip4(), 80);
    assert_eq!(
        nat_icmp_error(&mut f, &p, &e, &nat, CsumMode::Full),
        Err(XmitError::NotIcmpError)
    );
    let mut g = err.clone();
    assert_eq!(
        nat_icmp_error(
            &mut g,
            &ep,
            &e,
            &IcmpNat::to_client(vip6(), 80),
            CsumMode::Full
        ),
        Err(XmitError::FamilyMismatch)
    );
    let mut bad_e = e;
    bad_e.l3_off += 4;
    assert_eq!(
        nat_icmp_error(&mut g, &ep, &bad_e, &nat, CsumMode::Full),
        Err(XmitError::NotIcmpError)
    );
    let mut s = error_spec(&FrameSpec::tcp_v4(), 8, rs4(), vip4(), 3, 3);
    s.ttl = 1;
    let mut h = s.build();
    let hp = parse(&h).unwrap();
    let he = embedded(&h, &hp).unwrap();
    assert_eq!(
        nat_icmp_error(&mut h, &hp, &he, &nat, CsumMode::Full),
        Err(XmitError::TtlExceeded)
    );
    assert_eq!(h, s.build());
    assert_eq!(g, err);
}
