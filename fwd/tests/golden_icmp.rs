//! Golden-packet fixtures for ICMP: errors uvs builds (port unreachable,
//! fragmentation needed / packet too big, time exceeded) and ICMP errors it
//! translates for NAT connections.
//!
//! How the fixtures were made: `regenerate` (run with
//! `cargo test -p uvs-fwd --test golden_icmp -- --ignored --nocapture`)
//! builds each input with `uvs_fwd::build::FrameSpec`. Expected outputs are
//! made without the code under test: built errors are assembled byte by
//! byte in [`expected_build`] with the naive checksum of `common/mod.rs`;
//! translated errors are the error `FrameSpec` would build for the
//! translated quote (every checksum from scratch), with the quoted L4
//! checksum kept as it was (the kernel leaves it). The printed hex was frozen
//! in `golden_icmp_fixtures.rs`.
//!
//! Hand check of `port_unreach4` (Python one-off, word by word, independent
//! of any code here): ICMP message `0303 0000 0000 0000` + the whole
//! 45-byte original `4500 002d 1c46 4000 4006 3246 c633 6401 c000 020a 9c40
//! 0050 0102 0304 0000 0000 5002 faf0 e444 0000 6865 6c6c 6f00` sums to
//! 0x7_169d → 0x16a4 → checksum 0xe95b (frame bytes 36..38); IP header
//! `45c0 0049 0bee 0000 4001 0000 c000 020a c633 6401` (TOS 0xc0, ID 0x0bee,
//! no DF, TTL 64) → 0x2_7e36 → 0x7e38 → 0x81c7 (bytes 24..26).

mod common;
mod golden_icmp_fixtures;

use std::net::IpAddr;

use common::{hex, naive_sum, naive_verify, unhex};
use golden_icmp_fixtures::{IcmpGolden, Op, FIXTURES};
use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::xmit::icmp::{build_icmp_error, nat_icmp_error, IcmpKind, IcmpNat, MAX_ERROR_FRAME};
use uvs_fwd::{embedded, parse, CsumMode, XmitError};

const IDENT: u16 = 0x0bee;

fn run(g: &IcmpGolden) -> (Vec<u8>, Result<(), XmitError>) {
    let mut f = unhex(g.input);
    let p = parse(&f).unwrap_or_else(|e| panic!("{}: input does not parse: {e}", g.name));
    match g.op {
        Op::Build { kind, src } => {
            let mut out = [0u8; MAX_ERROR_FRAME];
            match build_icmp_error(&mut out, &f, &p, kind, src.parse().unwrap(), IDENT) {
                Ok(n) => (out[..n].to_vec(), Ok(())),
                Err(e) => (f, Err(e)),
            }
        }
        Op::NatToClient { addr, port } | Op::NatToServer { addr, port } => {
            let a: IpAddr = addr.parse().unwrap();
            let nat = if matches!(g.op, Op::NatToClient { .. }) {
                IcmpNat::to_client(a, port)
            } else {
                IcmpNat::to_server(a, port)
            };
            let e = embedded(&f, &p).expect("fixture quotes a packet");
            let r = nat_icmp_error(&mut f, &p, &e, &nat, CsumMode::Full);
            (f, r)
        }
    }
}

#[test]
fn golden_icmp() {
    assert!(FIXTURES.len() >= 10);
    for g in FIXTURES {
        let (out, r) = run(g);
        assert_eq!(r, g.verdict, "{} ({}): verdict", g.name, g.how);
        assert_eq!(hex(&out), g.output, "{}: output bytes", g.name);
        if r.is_ok() {
            assert!(naive_verify(&out), "{}: independent checksum check", g.name);
        }
    }
}

#[test]
fn hand_checked_fixture() {
    let g = FIXTURES.iter().find(|g| g.name == "port_unreach4").unwrap();
    let out = unhex(g.output);
    assert_eq!(&out[36..38], &[0xe9, 0x5b]);
    assert_eq!(&out[24..26], &[0x81, 0xc7]);
}

fn v(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An ICMP error from `from` to `to` quoting the first `n` bytes after the
/// IP header of `quoted`.
fn error_spec(quoted: &FrameSpec, n: usize, from: &str, to: IpAddr, t: u8, code: u8) -> FrameSpec {
    let f = quoted.build();
    let q = parse(&f).unwrap();
    let mut s = FrameSpec::tcp_v4();
    s.src = v(from);
    s.dst = to;
    s.l4 = L4Spec::Icmp { msg_type: t, code };
    s.payload = f[q.l3_off..(q.l4_off + n).min(q.ip_end)].to_vec();
    s
}

/// (name, how, input spec, op, expected spec for NAT cases)
type Case = (&'static str, &'static str, FrameSpec, Op, Option<FrameSpec>);

fn cases() -> Vec<Case> {
    let mut c: Vec<Case> = Vec::new();
    let build = |kind, src| Op::Build { kind, src };
    c.push((
        "port_unreach4",
        "tcp_v4 SYN to a VIP without servers",
        FrameSpec::tcp_v4(),
        build(IcmpKind::PortUnreachable, "192.0.2.10"),
        None,
    ));
    c.push((
        "port_unreach6",
        "udp_v6 to a VIP without servers",
        FrameSpec::udp_v6(),
        build(IcmpKind::PortUnreachable, "2001:db8:2::10"),
        None,
    ));
    let mut s = FrameSpec::tcp_v4();
    s.payload = vec![0x42; 1460];
    c.push((
        "frag_needed4",
        "1500-byte DF tcp_v4, tunnel MTU 1480 (quote cut at 576)",
        s,
        build(IcmpKind::TooBig { mtu: 1480 }, "192.0.2.10"),
        None,
    ));
    let mut s = FrameSpec::tcp_v6();
    s.payload = vec![0x42; 1440];
    c.push((
        "too_big6",
        "1500-byte tcp_v6, tunnel MTU 1452 (quote cut at 1280)",
        s,
        build(IcmpKind::TooBig { mtu: 1452 }, "2001:db8:2::10"),
        None,
    ));
    let mut s = FrameSpec::udp_v4();
    s.ttl = 1;
    s.vlans = vec![0x0007];
    c.push((
        "time_exceeded4_vlan",
        "udp_v4 TTL 1 under 802.1Q 7",
        s,
        build(IcmpKind::TimeExceeded, "192.0.2.1"),
        None,
    ));
    let mut s = FrameSpec::tcp_v4();
    s.l4 = L4Spec::Icmp {
        msg_type: 3,
        code: 3,
    };
    c.push((
        "no_error_about_error",
        "an ICMP port unreachable: refused",
        s,
        build(IcmpKind::PortUnreachable, "192.0.2.10"),
        None,
    ));

    // NAT: an error from the real server about the client's request.
    for (name, base, vip, rs, t, code) in [
        (
            "nat_to_client4_tcp",
            FrameSpec::tcp_v4(),
            "192.0.2.10",
            "203.0.113.11",
            3u8,
            3u8,
        ),
        (
            "nat_to_client6_udp",
            FrameSpec::udp_v6(),
            "2001:db8:2::10",
            "2001:db8:3::11",
            1,
            4,
        ),
    ] {
        let mut at_rs = base.clone();
        at_rs.dst = v(rs);
        at_rs.dport = 8080;
        at_rs.ttl = 63;
        let input = error_spec(&at_rs, 8, rs, base.src, t, code);
        let mut as_sent = base.clone();
        as_sent.ttl = 63;
        let mut want = error_spec(&as_sent, 8, vip, base.src, t, code);
        want.ttl = 63;
        c.push((
            name,
            "error from the real server quoting the DNATed request",
            input,
            Op::NatToClient {
                addr: vip,
                port: 80,
            },
            Some(want),
        ));
    }
    // NAT: time exceeded from the client's router about a reply.
    let mut reply = FrameSpec::tcp_v4();
    reply.src = v("192.0.2.10");
    reply.sport = 80;
    reply.dst = v("198.51.100.1");
    reply.dport = 40000;
    let input = error_spec(&reply, 28, "198.51.100.254", v("192.0.2.10"), 11, 0);
    let mut orig = reply.clone();
    orig.src = v("203.0.113.11");
    orig.sport = 8080;
    let mut want = error_spec(&orig, 28, "198.51.100.254", v("203.0.113.11"), 11, 0);
    want.ttl = 63;
    c.push((
        "nat_to_server4_time_exceeded",
        "router's time exceeded about a reply, to the real server",
        input,
        Op::NatToServer {
            addr: "203.0.113.11",
            port: 8080,
        },
        Some(want),
    ));
    let mut s = error_spec(&reply, 8, "198.51.100.254", v("192.0.2.10"), 11, 0);
    s.ttl = 1;
    c.push((
        "nat_ttl1",
        "error arriving with TTL 1: refused",
        s,
        Op::NatToServer {
            addr: "203.0.113.11",
            port: 8080,
        },
        None,
    ));
    c
}

/// The ICMP error `kind` about `orig`, assembled without the code under test.
fn expected_build(orig: &[u8], kind: IcmpKind, src: IpAddr) -> Vec<u8> {
    let p = parse(orig).unwrap();
    let l3 = p.l3_off;
    let v4 = p.is_ipv4();
    let cap = if v4 { 548 } else { 1232 };
    let quote = &orig[l3..p.ip_end.min(l3 + cap)];
    let (t, code, rest): (u8, u8, u32) = match (v4, kind) {
        (true, IcmpKind::PortUnreachable) => (3, 3, 0),
        (true, IcmpKind::HostUnreachable) => (3, 1, 0),
        (true, IcmpKind::TooBig { mtu }) => (3, 4, mtu & 0xffff),
        (true, IcmpKind::TimeExceeded) => (11, 0, 0),
        (false, IcmpKind::PortUnreachable) => (1, 4, 0),
        (false, IcmpKind::HostUnreachable) => (1, 3, 0),
        (false, IcmpKind::TooBig { mtu }) => (2, 0, mtu),
        (false, IcmpKind::TimeExceeded) => (3, 0, 0),
    };
    let mut icmp = vec![t, code, 0, 0];
    icmp.extend_from_slice(&rest.to_be_bytes());
    icmp.extend_from_slice(quote);
    let mut out = orig[6..12].to_vec();
    out.extend_from_slice(&orig[..6]);
    out.extend_from_slice(&orig[12..l3]);
    match (src, p.src) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let c = !(naive_sum(&icmp, 0) as u16);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            let tos = (orig[l3 + 1] & 0x1e) | 0xc0;
            let mut h = vec![0x45, tos];
            h.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
            h.extend_from_slice(&IDENT.to_be_bytes());
            h.extend_from_slice(&[0, 0, 64, 1, 0, 0]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let c = !(naive_sum(&h, 0) as u16);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut acc = naive_sum(&s.octets(), 0);
            acc = naive_sum(&d.octets(), acc);
            acc = naive_sum(&(icmp.len() as u32).to_be_bytes(), acc);
            acc = naive_sum(&[0, 0, 0, 58], acc);
            let c = !(naive_sum(&icmp, acc) as u16);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
            out.extend_from_slice(&[58, 64]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => unreachable!(),
    }
    out.extend_from_slice(&icmp);
    out
}

/// `want` with its quoted TCP/UDP checksum set to the input's.
fn keep_quoted_l4_csum(input: &FrameSpec, want: &FrameSpec) -> Vec<u8> {
    let mut want = want.clone();
    let q = &input.payload;
    let (hl, proto) = if q[0] >> 4 == 4 {
        (usize::from(q[0] & 15) * 4, q[9])
    } else {
        (40, q[6])
    };
    let off = match proto {
        6 => hl + 16,
        17 => hl + 6,
        _ => usize::MAX,
    };
    if off != usize::MAX && off + 2 <= q.len() {
        want.payload[off..off + 2].copy_from_slice(&q[off..off + 2]);
    }
    want.build()
}

#[test]
#[ignore = "prints fixture source; run by hand to regenerate"]
fn regenerate() {
    println!("pub const FIXTURES: &[IcmpGolden] = &[");
    for (name, how, spec, op, want) in cases() {
        let input = spec.build();
        let (verdict, output) = match (op, want) {
            (Op::Build { kind, src }, _) => {
                let p = parse(&input).unwrap();
                let is_err = p.proto == 1 && matches!(p.icmp_type, 3 | 4 | 5 | 11 | 12);
                if is_err {
                    (Err(XmitError::IcmpNotAllowed), input.clone())
                } else {
                    (Ok(()), expected_build(&input, kind, src.parse().unwrap()))
                }
            }
            (_, Some(w)) => (Ok(()), keep_quoted_l4_csum(&spec, &w)),
            (_, None) => (Err(XmitError::TtlExceeded), input.clone()),
        };
        println!("    IcmpGolden {{");
        println!("        name: {name:?},");
        println!("        how: {how:?},");
        match op {
            Op::Build { kind, src } => {
                println!("        op: Op::Build {{ kind: IcmpKind::{kind:?}, src: {src:?} }},")
            }
            Op::NatToClient { addr, port } => {
                println!("        op: Op::NatToClient {{ addr: {addr:?}, port: {port} }},")
            }
            Op::NatToServer { addr, port } => {
                println!("        op: Op::NatToServer {{ addr: {addr:?}, port: {port} }},")
            }
        }
        println!("        input: \"{}\",", hex(&input));
        match verdict {
            Ok(()) => println!("        verdict: Ok(()),"),
            Err(e) => println!("        verdict: Err(XmitError::{e:?}),"),
        }
        println!("        output: \"{}\",", hex(&output));
        println!("    }},");
    }
    println!("];");
}
