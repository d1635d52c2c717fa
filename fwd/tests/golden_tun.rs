//! Golden-packet fixtures for direct routing and tunnelling (katran style):
//! input frame, method, checksum mode, expected verdict and expected output.
//!
//! How the fixtures were made: `regenerate` (run with
//! `cargo test -p uvs-fwd --test golden_tun -- --ignored --nocapture`)
//! builds each input with `uvs_fwd::build::FrameSpec`, and each expected
//! output *without* `dr`/`encap`: the inner packet is the input spec rebuilt
//! with TTL − 1, and the outer headers are assembled byte by byte in
//! [`expected`] below, every checksum computed with the naive RFC 1071 loop
//! of `common/mod.rs`. The printed hex was frozen in
//! `golden_tun_fixtures.rs`. The test runs the real code on the frozen
//! input and requires the frozen output, then decapsulates it again.
//!
//! Hand check of `gre4_csum_tcp4` (Python one-off, word by word, independent
//! of any code here): the GRE checksum (frame bytes 38..40) covers the GRE
//! header with the field zeroed, `8000 0800 0000 0000`, and the inner packet
//! after its TTL decrement, `4500 002d 1c46 4000 3f06 3346 c633 6401 c000
//! 020a 9c40 0050 0102 0304 0000 0000 5002 faf0 e444 0000 6865 6c6c 6f00`:
//! sum 0x7_9b9a → fold 0x9ba1 → complement 0x645e. The outer IPv4 header
//! `4500 0049 0000 4000 3f2f 0000 cb00 7101 cb00 710b` (DF copied, so ID 0;
//! TTL 63 = the inner's after decrement; protocol 47) sums to 0x3_3c84 →
//! 0x3c87 → checksum 0xc378 (bytes 24..26).

mod common;
mod golden_tun_fixtures;

use common::{hex, naive_sctp_crc_ok, naive_sum, naive_verify, unhex};
use golden_tun_fixtures::{Method, TunGolden, FIXTURES};
use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::parse;
use uvs_fwd::xmit::dr::dr;
use uvs_fwd::xmit::tun::{decap_frame, encap, TunCsum, TunKind, TunParams};
use uvs_fwd::{CsumMode, XmitError};

const HEADROOM: usize = 64;
const IDENT: u16 = 0x0bee;
const GUE_SPORT: u16 = 50000;

fn params(m: &Method) -> Option<TunParams> {
    match *m {
        Method::Dr => None,
        Method::Tun {
            kind,
            src,
            dst,
            csum,
            port,
        } => {
            let mut t = TunParams::new(kind, src.parse().unwrap(), dst.parse().unwrap());
            t.csum = csum;
            t.port = port;
            // One port: the fixture does not depend on the flow hash.
            t.sport_range = (GUE_SPORT, GUE_SPORT);
            Some(t)
        }
    }
}

/// Output frame, verdict, and where a still-pending inner checksum is
/// (csum_start, csum_offset).
type Outcome = (Vec<u8>, Result<(), XmitError>, Option<(usize, usize)>);

/// Runs the method on a frame placed after `HEADROOM` bytes.
fn run(g: &TunGolden) -> Outcome {
    let input = unhex(g.input);
    let p = parse(&input).unwrap_or_else(|e| panic!("{}: input does not parse: {e}", g.name));
    let mut buf = vec![0u8; HEADROOM];
    buf.extend_from_slice(&input);
    match params(&g.method) {
        None => {
            let r = dr(&mut buf[HEADROOM..], &p);
            (buf[HEADROOM..].to_vec(), r, None)
        }
        Some(t) => match encap(&mut buf, HEADROOM, &p, &t, IDENT, g.mode) {
            Ok(e) => (
                buf[e.start..e.start + e.len].to_vec(),
                Ok(()),
                e.pending.map(|c| (c.start, c.offset)),
            ),
            Err(e) => (buf[HEADROOM..].to_vec(), Err(e), None),
        },
    }
}

#[test]
fn golden_dr_and_tun() {
    assert!(FIXTURES.len() >= 19 + 24);
    for g in FIXTURES {
        let (out, r, pending) = run(g);
        assert_eq!(r, g.verdict, "{} ({}): verdict", g.name, g.how);
        assert_eq!(hex(&out), g.output, "{}: output bytes", g.name);
        if r.is_err() {
            continue;
        }
        if g.mode == CsumMode::Full {
            assert!(naive_verify(&out), "{}: outer checksums", g.name);
        }
        if let Some(t) = params(&g.method) {
            let mut d = out.clone();
            // Complete a pending inner checksum as the sending kernel would
            // (virtio NEEDS_CSUM); the outer checksum must then verify.
            if let Some((start, off)) = pending {
                let c = !(naive_sum(&d[start..], 0) as u16);
                d[start + off..start + off + 2].copy_from_slice(&c.to_be_bytes());
            }
            let inner = decap_frame(&mut d, &[t.port]).expect("decapsulates");
            let q = parse(&unhex(g.input)).unwrap();
            assert_eq!(inner.len, q.ip_len, "{}", g.name);
            if g.name.contains("sctp") {
                let mut f = vec![0u8; 14];
                f.extend_from_slice(&d[inner.offset..inner.offset + inner.len]);
                assert!(naive_sctp_crc_ok(&f), "{}: inner CRC-32C", g.name);
            }
        } else if g.name.contains("sctp") {
            assert!(naive_sctp_crc_ok(&out), "{}: CRC-32C", g.name);
        }
    }
}

#[test]
fn hand_checked_fixture() {
    let g = FIXTURES
        .iter()
        .find(|g| g.name == "gre4_csum_tcp4")
        .unwrap();
    let out = unhex(g.output);
    assert_eq!(&out[38..40], &[0x64, 0x5e]);
    assert_eq!(&out[24..26], &[0xc3, 0x78]);
}

/// (name, how, spec, method, mode)
fn cases() -> Vec<(&'static str, &'static str, FrameSpec, Method, CsumMode)> {
    use CsumMode::*;
    let (d4, r4, d6, r6) = (
        "203.0.113.1",
        "203.0.113.11",
        "2001:db8:3::1",
        "2001:db8:3::11",
    );
    let tun = |kind, v4: bool, csum| Method::Tun {
        kind,
        src: if v4 { d4 } else { d6 },
        dst: if v4 { r4 } else { r6 },
        csum,
        port: 6080,
    };
    let mut v = Vec::new();
    v.push((
        "dr_tcp4",
        "FrameSpec::tcp_v4()",
        FrameSpec::tcp_v4(),
        Method::Dr,
        Full,
    ));
    v.push((
        "dr_udp6",
        "FrameSpec::udp_v6()",
        FrameSpec::udp_v6(),
        Method::Dr,
        Full,
    ));
    let mut s = FrameSpec::tcp_v4();
    s.csum = Partial;
    v.push((
        "dr_tcp4_partial",
        "tcp_v4, CHECKSUM_PARTIAL (left pending)",
        s,
        Method::Dr,
        Partial,
    ));
    let mut s = FrameSpec::tcp_v4();
    s.ttl = 1;
    v.push((
        "dr_tcp4_ttl1",
        "tcp_v4 with TTL 1: refused",
        s,
        Method::Dr,
        Full,
    ));
    use TunCsum::*;
    use TunKind::*;
    v.push((
        "ipip4_tcp4",
        "tcp_v4 in IPv4",
        FrameSpec::tcp_v4(),
        tun(Ipip, true, NoCsum),
        Full,
    ));
    v.push((
        "ipip6_tcp6",
        "tcp_v6 in IPv6",
        FrameSpec::tcp_v6(),
        tun(Ipip, false, NoCsum),
        Full,
    ));
    v.push((
        "ipip4_udp6",
        "udp_v6 in IPv4 (6in4)",
        FrameSpec::udp_v6(),
        tun(Ipip, true, NoCsum),
        Full,
    ));
    v.push((
        "ipip6_udp4",
        "udp_v4 in IPv6 (4in6)",
        FrameSpec::udp_v4(),
        tun(Ipip, false, NoCsum),
        Full,
    ));
    v.push((
        "gre4_tcp4",
        "tcp_v4 in GRE/IPv4",
        FrameSpec::tcp_v4(),
        tun(Gre, true, NoCsum),
        Full,
    ));
    v.push((
        "gre4_csum_tcp4",
        "tcp_v4 in GRE/IPv4 with checksum",
        FrameSpec::tcp_v4(),
        tun(Gre, true, Csum),
        Full,
    ));
    v.push((
        "gre6_csum_udp6",
        "udp_v6 in GRE/IPv6 with checksum",
        FrameSpec::udp_v6(),
        tun(Gre, false, Csum),
        Full,
    ));
    v.push((
        "gre6_tcp4",
        "tcp_v4 in GRE/IPv6",
        FrameSpec::tcp_v4(),
        tun(Gre, false, NoCsum),
        Full,
    ));
    v.push((
        "gue4_tcp4",
        "tcp_v4 in GUE/IPv4, UDP checksum 0",
        FrameSpec::tcp_v4(),
        tun(Gue, true, NoCsum),
        Full,
    ));
    v.push((
        "gue4_csum_udp4",
        "udp_v4 in GUE/IPv4 with UDP checksum",
        FrameSpec::udp_v4(),
        tun(Gue, true, Csum),
        Full,
    ));
    v.push((
        "gue6_csum_tcp6",
        "tcp_v6 in GUE/IPv6 with UDP checksum",
        FrameSpec::tcp_v6(),
        tun(Gue, false, Csum),
        Full,
    ));
    let mut s = FrameSpec::tcp_v4();
    s.csum = Partial;
    v.push((
        "gue4_remcsum_tcp4_partial",
        "tcp_v4 CHECKSUM_PARTIAL in GUE/IPv4 with remote checksum offload",
        s,
        tun(Gue, true, RemCsum),
        Partial,
    ));
    let mut s = FrameSpec::udp_v6();
    s.csum = Partial;
    v.push((
        "gre6_csum_udp6_partial",
        "udp_v6 CHECKSUM_PARTIAL in GRE/IPv6 with checksum (LCO; inner stays pending)",
        s,
        tun(Gre, false, Csum),
        Partial,
    ));
    let mut s = FrameSpec::tcp_v4();
    s.vlans = vec![0x0064];
    s.padding = 5;
    v.push((
        "vlan_ipip4_tcp4",
        "tcp_v4 under 802.1Q 100 with padding, in IPv4",
        s,
        tun(Ipip, true, NoCsum),
        Full,
    ));
    let mut s = FrameSpec::tcp_v6();
    s.ttl = 1;
    v.push((
        "gue6_hoplimit1",
        "tcp_v6 with hop limit 1: refused",
        s,
        tun(Gue, false, Csum),
        Full,
    ));
    // The full matrix: every method x family x protocol (TCP, UDP, SCTP).
    for (mname, v4) in [("4", true), ("6", false)] {
        let methods = [
            ("dr", Method::Dr),
            ("ipip", tun(Ipip, v4, NoCsum)),
            ("gre_csum", tun(Gre, v4, Csum)),
            ("gue_csum", tun(Gue, v4, Csum)),
        ];
        for (meth, m) in methods {
            for (pname, l4) in [
                (
                    "tcp",
                    L4Spec::Tcp {
                        flags: 0x18,
                        options: vec![],
                    },
                ),
                ("udp", L4Spec::Udp { zero_csum: false }),
                ("sctp", L4Spec::Sctp),
            ] {
                let mut s = if v4 {
                    FrameSpec::tcp_v4()
                } else {
                    FrameSpec::tcp_v6()
                };
                s.l4 = l4;
                let name: &'static str =
                    Box::leak(format!("matrix_{meth}_{pname}{mname}").into_boxed_str());
                let how: &'static str = Box::leak(
                    format!(
                        "{pname} over IPv{mname} (FrameSpec::tcp_v{mname} with L4 {pname}), {meth}"
                    )
                    .into_boxed_str(),
                );
                v.push((name, how, s, m, Full));
            }
        }
    }
    v
}

/// Expected output, assembled without the code under test.
fn expected(spec: &FrameSpec, m: &Method, mode: CsumMode) -> (Result<(), XmitError>, Vec<u8>) {
    if spec.ttl <= 1 {
        return (Err(XmitError::TtlExceeded), spec.build());
    }
    let mut inner_spec = spec.clone();
    inner_spec.ttl -= 1;
    inner_spec.padding = 0;
    let Method::Tun {
        kind,
        src,
        dst,
        csum,
        port,
    } = *m
    else {
        let mut s = spec.clone();
        s.ttl -= 1;
        return (Ok(()), s.build());
    };
    let frame = inner_spec.build();
    let l3 = 14 + 4 * spec.vlans.len();
    let inner = frame[l3..].to_vec();
    // The inner packet with its checksum completed, for outer checksums.
    let mut full_spec = inner_spec.clone();
    full_spec.csum = CsumMode::Full;
    let inner_full = full_spec.build()[l3..].to_vec();
    let v4_inner = spec.src.is_ipv4();
    let inner_proto: u8 = if v4_inner { 4 } else { 41 };
    let (src, dst): (std::net::IpAddr, std::net::IpAddr) =
        (src.parse().unwrap(), dst.parse().unwrap());
    let l4_rel = if v4_inner { 20 } else { 40 };
    let field_rel = match spec.l4 {
        L4Spec::Tcp { .. } => 16,
        _ => 6,
    };
    let remcsum = kind == TunKind::Gue && csum == TunCsum::RemCsum && mode == CsumMode::Partial;
    // Tunnel header (checksum fields zero for now).
    let mut th: Vec<u8> = Vec::new();
    let next = match kind {
        TunKind::Ipip => inner_proto,
        TunKind::Gre => {
            let et: u16 = if v4_inner { 0x0800 } else { 0x86dd };
            th.extend_from_slice(&[if csum == TunCsum::Csum { 0x80 } else { 0 }, 0]);
            th.extend_from_slice(&et.to_be_bytes());
            if csum == TunCsum::Csum {
                th.extend_from_slice(&[0, 0, 0, 0]);
            }
            47
        }
        TunKind::Gue => {
            let gue_len = if remcsum { 12 } else { 4 };
            let ulen = (8 + gue_len + inner.len()) as u16;
            th.extend_from_slice(&GUE_SPORT.to_be_bytes());
            th.extend_from_slice(&port.to_be_bytes());
            th.extend_from_slice(&ulen.to_be_bytes());
            th.extend_from_slice(&[0, 0]);
            if remcsum {
                th.extend_from_slice(&[2, inner_proto, 0, 1, 0x80, 0, 0, 0]);
                th.extend_from_slice(&(l4_rel as u16).to_be_bytes());
                th.extend_from_slice(&((l4_rel + field_rel) as u16).to_be_bytes());
            } else {
                th.extend_from_slice(&[0, inner_proto, 0, 0]);
            }
            17
        }
    };
    let outer_plen = th.len() + inner.len();
    // Outer checksums, naive, over the completed inner packet (LCO) unless
    // remote checksum offload leaves the wire bytes pending.
    let covered = if remcsum { &inner } else { &inner_full };
    match kind {
        TunKind::Gre if csum == TunCsum::Csum => {
            let s = naive_sum(covered, naive_sum(&th, 0));
            th[4..6].copy_from_slice(&(!(s as u16)).to_be_bytes());
        }
        TunKind::Gue if csum != TunCsum::NoCsum => {
            let mut acc = match (src, dst) {
                (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
                    naive_sum(&[s.octets(), d.octets()].concat(), 0)
                }
                (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
                    naive_sum(&[s.octets(), d.octets()].concat(), 0)
                }
                _ => unreachable!(),
            };
            acc = naive_sum(&[0, 17], acc);
            acc = naive_sum(&(outer_plen as u16).to_be_bytes(), acc);
            acc = naive_sum(&th, acc);
            acc = naive_sum(covered, acc);
            let mut c = !(acc as u16);
            if c == 0 {
                c = 0xffff;
            }
            th[6..8].copy_from_slice(&c.to_be_bytes());
        }
        _ => {}
    }
    let mut out = frame[..l3].to_vec();
    let ttl = spec.ttl - 1;
    match (src, dst) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            out[l3 - 2..l3].copy_from_slice(&[0x08, 0x00]);
            let df = v4_inner && spec.frag.is_none();
            let mut h = vec![0x45, 0];
            h.extend_from_slice(&((20 + outer_plen) as u16).to_be_bytes());
            h.extend_from_slice(&(if df { 0 } else { IDENT }).to_be_bytes());
            h.extend_from_slice(&[if df { 0x40 } else { 0 }, 0, ttl, next, 0, 0]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let c = !(naive_sum(&h, 0) as u16);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&h);
        }
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
            out[l3 - 2..l3].copy_from_slice(&[0x86, 0xdd]);
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(outer_plen as u16).to_be_bytes());
            out.extend_from_slice(&[next, ttl]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => unreachable!(),
    }
    out.extend_from_slice(&th);
    out.extend_from_slice(&inner);
    (Ok(()), out)
}

#[test]
#[ignore = "prints fixture source; run by hand to regenerate"]
fn regenerate() {
    println!("pub const FIXTURES: &[TunGolden] = &[");
    for (name, how, spec, m, mode) in cases() {
        let (verdict, output) = expected(&spec, &m, mode);
        println!("    TunGolden {{");
        println!("        name: {name:?},");
        println!("        how: {how:?},");
        match m {
            Method::Dr => println!("        method: Method::Dr,"),
            Method::Tun {
                kind,
                src,
                dst,
                csum,
                port,
            } => println!(
                "        method: Method::Tun {{ kind: TunKind::{kind:?}, src: {src:?}, dst: {dst:?}, csum: TunCsum::{csum:?}, port: {port} }},"
            ),
        }
        println!("        mode: CsumMode::{mode:?},");
        println!("        input: \"{}\",", hex(&spec.build()));
        match verdict {
            Ok(()) => println!("        verdict: Ok(()),"),
            Err(e) => println!("        verdict: Err(XmitError::{e:?}),"),
        }
        println!("        output: \"{}\",", hex(&output));
        println!("    }},");
    }
    println!("];");
}
