//! Golden-packet fixtures for the NAT rewrite (katran style): input bytes,
//! operation, expected verdict and expected output bytes.
//!
//! How the fixtures were made: `regenerate` (run with
//! `cargo test -p uvs-fwd --test golden -- --ignored --nocapture`) builds each
//! input with `uvs_fwd::build::FrameSpec` and each expected output by
//! building the *rewritten* spec from scratch (new address/port, TTL − 1,
//! every checksum recomputed in full) — never by running `dnat`/`snat`. The
//! printed hex was frozen in `golden_fixtures.rs`. The test below runs the
//! incremental rewrite on the frozen input and requires the frozen output,
//! and re-verifies every Full-mode output with the naive checksum of
//! `common/mod.rs` (Partial-mode outputs after completing them NIC-style).
//!
//! Hand check of `tcp4_dnat` (done with a separate Python one-off, word by
//! word, independent of any code here). Output TCP checksum field (frame bytes
//! 50..52) is 0x4b03: pseudo-header words c633 6401 (198.51.100.1) cb00 710b
//! (203.0.113.11) 0006 0019 (TCP, length 25); segment words with the field
//! zeroed 9c40 1f90 0102 0304 0000 0000 5002 faf0 0000 0000 6865 6c6c 6f00
//! ("hello" padded). Sum 0x5_b4f7 → fold 0xb4fc → complement 0x4b03.
//! IPv4 header checksum (bytes 24..26) 0xb944: 4500 002d 1c46 4000 3f06 0000
//! c633 6401 cb00 710b → 0x3_46b8 → fold 0x46bb → complement 0xb944.

mod common;
mod golden_fixtures;

use std::net::IpAddr;

use common::{hex, naive_sctp_crc_ok, naive_verify, nic_complete, unhex};
use golden_fixtures::{Golden, Op, FIXTURES};
use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::{dnat, parse, snat, CsumMode, XmitError};

fn run(g: &Golden) -> (Vec<u8>, Result<(), XmitError>) {
    let mut f = unhex(g.input);
    let p = parse(&f).unwrap_or_else(|e| panic!("{}: input does not parse: {e}", g.name));
    let addr: IpAddr = g.addr.parse().expect("fixture address");
    let r = match g.op {
        Op::Dnat => dnat(&mut f, &p, addr, g.port, g.mode),
        Op::Snat => snat(&mut f, &p, addr, g.port, g.mode),
    };
    (f, r)
}

#[test]
fn golden_nat_rewrites() {
    assert!(FIXTURES.len() >= 18);
    for g in FIXTURES {
        let (out, r) = run(g);
        assert_eq!(r, g.verdict, "{} ({}): verdict", g.name, g.how);
        let want = unhex(g.output);
        assert_eq!(hex(&out), hex(&want), "{}: output bytes", g.name);
        if r.is_ok() {
            let p =
                parse(&out).unwrap_or_else(|e| panic!("{}: output does not reparse: {e}", g.name));
            let addr: IpAddr = g.addr.parse().unwrap();
            match g.op {
                Op::Dnat => assert_eq!(p.dst, addr, "{}", g.name),
                Op::Snat => assert_eq!(p.src, addr, "{}", g.name),
            }
        }
        if r.is_ok() && g.name.starts_with("sctp") {
            assert!(
                naive_sctp_crc_ok(&out),
                "{}: independent CRC-32C check",
                g.name
            );
        }
        if g.simple && r.is_ok() {
            let mut c = out.clone();
            if g.mode == CsumMode::Partial {
                nic_complete(&mut c);
            }
            assert!(
                naive_verify(&c),
                "{}: independent checksum check failed",
                g.name
            );
        }
    }
}

#[test]
fn hand_checked_fixture() {
    let g = FIXTURES.iter().find(|g| g.name == "tcp4_dnat").unwrap();
    let out = unhex(g.output);
    assert_eq!(&out[50..52], &[0x4b, 0x03]);
    assert_eq!(&out[24..26], &[0xb9, 0x44]);
}

/// The cases: (name, how, spec, op, new address, new port, mode).
fn cases() -> Vec<(
    &'static str,
    &'static str,
    FrameSpec,
    Op,
    &'static str,
    u16,
    CsumMode,
)> {
    use CsumMode::*;
    use Op::*;
    let mut v = Vec::new();
    let rs4 = "203.0.113.11";
    let rs6 = "2001:db8:3::11";
    let vip4 = "192.0.2.10";
    let vip6 = "2001:db8:2::10";

    v.push((
        "tcp4_dnat",
        "FrameSpec::tcp_v4()",
        FrameSpec::tcp_v4(),
        Dnat,
        rs4,
        8080,
        Full,
    ));
    let mut s = FrameSpec::tcp_v4();
    s.src = rs4.parse().unwrap();
    s.sport = 8080;
    s.dst = "198.51.100.1".parse().unwrap();
    s.dport = 40000;
    s.l4 = L4Spec::Tcp {
        flags: 0x12,
        options: vec![2, 4, 5, 0xb4],
    };
    v.push((
        "tcp4_snat_synack",
        "tcp_v4 SYN|ACK 203.0.113.11:8080 -> client, MSS option",
        s,
        Snat,
        vip4,
        80,
        Full,
    ));
    v.push((
        "udp4_dnat",
        "FrameSpec::udp_v4()",
        FrameSpec::udp_v4(),
        Dnat,
        rs4,
        53,
        Full,
    ));
    let mut s = FrameSpec::udp_v4();
    s.l4 = L4Spec::Udp { zero_csum: true };
    v.push((
        "udp4_csum0_dnat",
        "udp_v4 with checksum 0 (stays 0)",
        s,
        Dnat,
        rs4,
        53,
        Full,
    ));
    v.push((
        "tcp6_dnat",
        "FrameSpec::tcp_v6()",
        FrameSpec::tcp_v6(),
        Dnat,
        rs6,
        8080,
        Full,
    ));
    let mut s = FrameSpec::udp_v6();
    s.src = rs6.parse().unwrap();
    s.sport = 53;
    v.push((
        "udp6_snat",
        "udp_v6 reply from the real server",
        s,
        Snat,
        vip6,
        80,
        Full,
    ));
    let mut s = FrameSpec::tcp_v4();
    s.vlans = vec![0x0064, 0x2007];
    s.padding = 0;
    v.push((
        "qinq_tcp4_dnat",
        "tcp_v4 under 802.1ad 100 + 802.1Q 7 (pcp 1)",
        s,
        Dnat,
        rs4,
        8080,
        Full,
    ));
    let mut s = FrameSpec::udp_v4();
    s.vlans = vec![0x0005];
    s.payload = vec![];
    s.padding = 14;
    v.push((
        "vlan_udp4_padded_dnat",
        "udp_v4, 802.1Q 5, empty payload, 14 bytes Ethernet padding",
        s,
        Dnat,
        rs4,
        53,
        Full,
    ));
    let mut s = FrameSpec::tcp_v4();
    s.csum = Partial;
    v.push((
        "tcp4_partial_dnat",
        "tcp_v4 with CHECKSUM_PARTIAL (field = pseudo-header sum)",
        s,
        Dnat,
        rs4,
        8080,
        Partial,
    ));
    let mut s = FrameSpec::udp_v6();
    s.src = rs6.parse().unwrap();
    s.sport = 53;
    s.csum = Partial;
    s.payload = b"odd".to_vec();
    v.push((
        "udp6_partial_snat",
        "udp_v6 reply, CHECKSUM_PARTIAL, odd payload",
        s,
        Snat,
        vip6,
        80,
        Partial,
    ));
    let mut s = FrameSpec::tcp_v4();
    s.ip_options = vec![1, 1, 1, 1, 0x07, 0x07, 0x04, 0, 0, 0, 0, 0];
    v.push((
        "tcp4_ipopts_dnat",
        "tcp_v4 with NOPs + record-route option (12 bytes)",
        s,
        Dnat,
        rs4,
        8080,
        Full,
    ));
    let mut s = FrameSpec::udp_v4();
    s.frag = Some((1480, false));
    s.payload = vec![0xab; 21];
    v.push((
        "udp4_lastfrag_dnat",
        "udp_v4 non-first fragment at 1480: addresses only",
        s,
        Dnat,
        rs4,
        53,
        Full,
    ));
    let mut s = FrameSpec::tcp_v6();
    s.ext_headers = vec![0, 60];
    v.push((
        "tcp6_exthdr_dnat",
        "tcp_v6 behind hop-by-hop + destination options",
        s,
        Dnat,
        rs6,
        8080,
        Full,
    ));
    let mut s = FrameSpec::tcp_v4();
    s.ttl = 1;
    v.push((
        "tcp4_ttl1_dnat",
        "tcp_v4 arriving with TTL 1: refused, unchanged",
        s,
        Dnat,
        rs4,
        8080,
        Full,
    ));
    let mut s = FrameSpec::tcp_v6();
    s.ttl = 1;
    v.push((
        "tcp6_hoplimit1_dnat",
        "tcp_v6 arriving with hop limit 1: refused, unchanged",
        s,
        Dnat,
        rs6,
        8080,
        Full,
    ));
    v.push((
        "family_mismatch",
        "tcp_v4 with an IPv6 target: refused",
        FrameSpec::tcp_v4(),
        Dnat,
        rs6,
        8080,
        Full,
    ));
    let mut s = FrameSpec::udp_v6();
    s.l4 = L4Spec::Udp { zero_csum: true };
    v.push((
        "udp6_csum0_refused",
        "udp_v6 with checksum 0 (invalid): refused",
        s,
        Dnat,
        rs6,
        53,
        Full,
    ));
    let mut s = FrameSpec::tcp_v4();
    s.l4 = L4Spec::Sctp;
    s.payload = b"INIT chunk bytes".to_vec();
    v.push((
        "sctp4_dnat",
        "tcp_v4 with L4Spec::Sctp: CRC-32C recomputed after the port change",
        s,
        Dnat,
        rs4,
        9999,
        Full,
    ));
    let mut s = FrameSpec::tcp_v6();
    s.l4 = L4Spec::Sctp;
    s.src = rs6.parse().unwrap();
    s.sport = 9999;
    s.payload = b"DATA".to_vec();
    v.push((
        "sctp6_snat",
        "SCTP reply from the real server over IPv6",
        s,
        Snat,
        vip6,
        80,
        Full,
    ));
    v
}

#[test]
#[ignore = "prints fixture source; run by hand to regenerate"]
fn regenerate() {
    println!("pub const FIXTURES: &[Golden] = &[");
    for (name, how, spec, op, addr, port, mode) in cases() {
        let input = spec.build();
        let a: IpAddr = addr.parse().unwrap();
        let mut out = spec.clone();
        let verdict = if spec.src.is_ipv4() != a.is_ipv4() {
            Err(XmitError::FamilyMismatch)
        } else if spec.ttl <= 1 {
            Err(XmitError::TtlExceeded)
        } else if !spec.src.is_ipv4() && spec.l4 == (L4Spec::Udp { zero_csum: true }) {
            Err(XmitError::ZeroUdpChecksumV6)
        } else {
            let nonfirst = matches!(spec.frag, Some((o, _)) if o != 0);
            match op {
                Op::Dnat => {
                    out.dst = a;
                    if !nonfirst {
                        out.dport = port;
                    }
                }
                Op::Snat => {
                    out.src = a;
                    if !nonfirst {
                        out.sport = port;
                    }
                }
            }
            out.ttl -= 1;
            Ok(())
        };
        let output = out.build();
        let simple = spec.ext_headers.is_empty() && spec.frag.is_none();
        println!("    Golden {{");
        println!("        name: {name:?},");
        println!("        how: {how:?},");
        println!("        op: Op::{op:?},");
        println!("        addr: {addr:?},");
        println!("        port: {port},");
        println!("        mode: CsumMode::{mode:?},");
        println!("        simple: {simple},");
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
