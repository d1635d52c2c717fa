//! The nat table through the pipeline: ICMP errors about translated flows
//! (IPv4 and IPv6, DNAT and MASQUERADE, nat-table-only and IPVS flows),
//! `--ctstate RELATED` for them, and DNAT/SNAT port ranges. Every checksum
//! of a translated error is checked from scratch.

use std::net::IpAddr;
use std::sync::Arc;

use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::checksum::{add, checksum, fold, pseudo_header, sum};
use uvs_fwd::{embedded, parse, CsumMode, Parsed};

use crate::datapath::pipeline::{Pipeline, Verdict};
use crate::datapath::prefix::Prefix;
use crate::datapath::stats::{DropReason, WorkerStats};
use crate::datapath::tables::nat::LocalNets;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const C4: &str = "198.51.100.10";
const D4: &str = "203.0.113.1";
const S4: &str = "203.0.113.11";
const C6: &str = "2001:db8:100::10";
const D6: &str = "2001:db8:3::1";
const S6: &str = "2001:db8:3::11";

fn pipeline(tables: &str) -> Pipeline {
    let p = Pipeline::new(uvs_conntrack::Table::new(uvs_conntrack::Config::default()));
    let local = LocalNets(vec![
        (
            Prefix {
                addr: ip(D4),
                len: 24,
            },
            ip(D4),
        ),
        (
            Prefix {
                addr: ip(D6),
                len: 64,
            },
            ip(D6),
        ),
    ]);
    let r = crate::datapath::tables::parse(tables)
        .unwrap()
        .with_local_nets(local);
    p.tables.store(Arc::new(r));
    p
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    let base = if ip(src).is_ipv4() {
        FrameSpec::udp_v4()
    } else {
        FrameSpec::udp_v6()
    };
    FrameSpec {
        src: ip(src),
        dst: ip(dst),
        sport,
        dport,
        ..base
    }
    .build()
}

/// An ICMP port unreachable (ICMPv6 1/4) from `src` to `dst` quoting the
/// IP packet of `about`.
fn unreachable(src: &str, dst: &str, about: &[u8]) -> Vec<u8> {
    let q = parse(about).unwrap();
    let v4 = ip(src).is_ipv4();
    let (base, msg_type, code) = if v4 {
        (FrameSpec::udp_v4(), 3, 3)
    } else {
        (FrameSpec::udp_v6(), 1, 4)
    };
    FrameSpec {
        src: ip(src),
        dst: ip(dst),
        l4: L4Spec::Icmp { msg_type, code },
        payload: about[q.l3_off..q.ip_end].to_vec(),
        ..base
    }
    .build()
}

fn run(p: &Pipeline, f: &mut [u8]) -> Verdict {
    p.process(f, CsumMode::Full, 1, &WorkerStats::default())
}

fn sent(v: Verdict) -> Parsed {
    match v {
        Verdict::Xmit { pkt, .. } => pkt,
        v => panic!("not sent: {v:?}"),
    }
}

/// Outer source, destination and TTL of an error.
type Outer = (IpAddr, IpAddr, u8);
/// Quoted source, port, destination, port.
type Quoted = (IpAddr, u16, IpAddr, u16);

/// The error as sent, with every checksum verified.
fn error_as_sent(f: &[u8]) -> (Outer, Quoted) {
    let p = parse(f).unwrap();
    let e = embedded(f, &p).unwrap();
    let msg = &f[p.l4_off..p.ip_end];
    if p.is_ipv4() {
        assert_eq!(
            checksum(&f[p.l3_off..p.l3_off + 20]),
            0,
            "outer IPv4 header"
        );
        assert_eq!(
            checksum(&f[e.l3_off..e.l3_off + 20]),
            0,
            "quoted IPv4 header"
        );
        assert_eq!(checksum(msg), 0, "ICMP checksum");
    } else {
        let ph = pseudo_header(&p.src, &p.dst, 58, msg.len() as u32).unwrap();
        assert_eq!(!fold(add(ph, sum(msg))), 0, "ICMPv6 checksum");
    }
    ((p.src, p.dst, p.ttl), (e.src, e.sport, e.dst, e.dport))
}

const DNAT: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 192.0.2.20/32 -p udp -m udp --dport 53 -j DNAT --to-destination 203.0.113.11:5353
-A PREROUTING -d 2001:db8:2::20/128 -p udp -m udp --dport 53 -j DNAT --to-destination [2001:db8:3::11]:5353
-A PREROUTING -d 192.0.2.21/32 -p udp -j DNAT --to-destination 203.0.113.11
-A POSTROUTING -d 203.0.113.11/32 -p udp -m udp --dport 53 -j MASQUERADE
COMMIT
";

#[test]
fn a_dnat_targets_port_unreachable_reaches_the_client_with_the_vip_quoted() {
    for (c, vip, s) in [(C4, "192.0.2.20", S4), (C6, "2001:db8:2::20", S6)] {
        let p = pipeline(DNAT);
        let mut f = udp(c, 40000, vip, 53);
        let out = sent(run(&p, &mut f));
        assert_eq!((out.dst, out.dport), (ip(s), 5353));
        let mut e = unreachable(s, c, &f);
        let ttl = parse(&e).unwrap().ttl;
        let v = run(&p, &mut e);
        assert!(
            matches!(v, Verdict::Xmit { next_hop, .. } if next_hop == ip(c)),
            "{v:?}"
        );
        let (outer, inner) = error_as_sent(&e);
        assert_eq!(outer, (ip(vip), ip(c), ttl - 1), "{c}");
        assert_eq!(inner, (ip(c), 40000, ip(vip), 53), "{c}");
    }
}

#[test]
fn an_error_about_a_masqueraded_flow_reaches_the_original_client() {
    let p = pipeline(DNAT);
    // DNAT to port 53 of the target, MASQUERADEd: the target sees the
    // director's address.
    let mut f = udp(C4, 40001, "192.0.2.21", 53);
    let out = sent(run(&p, &mut f));
    assert_eq!((out.src, out.dst, out.dport), (ip(D4), ip(S4), 53));
    let masq_port = out.sport;
    // A router beyond the director reports it to the director's address.
    let mut e = unreachable("203.0.113.99", D4, &f);
    let v = run(&p, &mut e);
    assert!(
        matches!(v, Verdict::Xmit { next_hop, .. } if next_hop == ip(C4)),
        "{v:?}"
    );
    let (outer, inner) = error_as_sent(&e);
    // nf_nat rewrites the outer source too where the flow's destination
    // was translated (the error seems to come from the address the client
    // sent to).
    assert_eq!((outer.0, outer.1), (ip("192.0.2.21"), ip(C4)));
    assert_eq!(inner, (ip(C4), 40001, ip("192.0.2.21"), 53));
    assert_ne!(masq_port, 0);
}

#[test]
fn an_error_about_an_unknown_flow_is_left_alone() {
    let p = pipeline(DNAT);
    let f = udp(C4, 40002, S4, 9);
    let mut e = unreachable(S4, C4, &f);
    assert_eq!(run(&p, &mut e), Verdict::Pass);
}

#[test]
fn ctstate_related_matches_errors_about_nat_flows() {
    let text = format!(
        "{DNAT}*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A FORWARD -p icmp -m conntrack --ctstate RELATED -j DROP\nCOMMIT\n"
    );
    let p = pipeline(&text);
    let mut f = udp(C4, 40003, "192.0.2.20", 53);
    sent(run(&p, &mut f));
    let mut e = unreachable(S4, C4, &f);
    assert_eq!(run(&p, &mut e), Verdict::Drop(DropReason::Filtered));
    // An error about no flow is INVALID, not RELATED.
    let mut e = unreachable(S4, C4, &udp(C4, 40004, S4, 5353));
    assert_eq!(run(&p, &mut e), Verdict::Pass);
}

#[test]
fn an_error_about_an_ipvs_flow_masqueraded_is_translated_by_both() {
    use crate::datapath::service::{DestSpec, ServiceSpec};
    let p = pipeline(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -d 203.0.113.11/32 -j MASQUERADE\nCOMMIT\n",
    );
    let spec = ServiceSpec {
        proto: 17,
        addr: ip("192.0.2.10"),
        port: 53,
        sched: "rr".into(),
        params: Default::default(),
        persistence: None,
        one_packet: false,
        pe: None,
        dests: vec![DestSpec {
            addr: ip(S4),
            port: 5353,
            fwd: uvs_sched::FwdMethod::Masq,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            tun: Default::default(),
        }],
    };
    let snap = p.services.load().rebuild(&[spec]).unwrap();
    p.services.store(Arc::new(snap));
    let mut f = udp(C4, 40005, "192.0.2.10", 53);
    let out = sent(run(&p, &mut f));
    assert_eq!((out.src, out.dst, out.dport), (ip(D4), ip(S4), 5353));
    // The real server's error goes to the director: un-MASQUERADEd by
    // the nat table, then un-DNATed by IPVS.
    let mut e = unreachable(S4, D4, &f);
    let v = run(&p, &mut e);
    assert!(
        matches!(v, Verdict::Xmit { next_hop, .. } if next_hop == ip(C4)),
        "{v:?}"
    );
    let (outer, inner) = error_as_sent(&e);
    assert_eq!((outer.0, outer.1), (ip("192.0.2.10"), ip(C4)));
    assert_eq!(inner, (ip(C4), 40005, ip("192.0.2.10"), 53));
}

const RANGES: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 192.0.2.50/32 -p udp -j DNAT --to-destination 203.0.113.12:9000
-A PREROUTING -d 192.0.2.0/24 -p udp -j DNAT --to-destination 203.0.113.11:8000-8001
-A POSTROUTING -d 203.0.113.12/32 -p udp -j SNAT --to-source 203.0.113.1:2000-2001
COMMIT
";

#[test]
fn dnat_port_ranges_keep_the_port_in_range_else_take_the_first_free() {
    let p = pipeline(RANGES);
    let st = WorkerStats::default();
    let go = |sport: u16, vip: &str, dport: u16| {
        let mut f = udp(C4, sport, vip, dport);
        p.process(&mut f, CsumMode::Full, 1, &st)
    };
    // In range: kept.
    assert_eq!(sent(go(2000, "192.0.2.1", 8001)).dport, 8001);
    // Out of range: the range's start, then the next while the reply
    // tuple (server port → client address and port) is taken.
    assert_eq!(sent(go(2001, "192.0.2.2", 80)).dport, 8000);
    assert_eq!(sent(go(2001, "192.0.2.3", 80)).dport, 8001);
    // The port in range but its tuple taken: the next free one.
    assert_eq!(sent(go(2000, "192.0.2.4", 8001)).dport, 8000);
    // None free for this client port.
    assert_eq!(
        go(2001, "192.0.2.5", 80),
        Verdict::Drop(DropReason::NatNoPort)
    );
}

#[test]
fn snat_port_ranges_keep_the_port_in_range_else_pick_within() {
    let p = pipeline(RANGES);
    let go = |sport: u16| {
        let mut f = udp(C4, sport, "192.0.2.50", 8000);
        run(&p, &mut f)
    };
    let out = sent(go(2001));
    assert_eq!(
        (out.src, out.sport, out.dst),
        (ip(D4), 2001, ip("203.0.113.12"))
    );
    // Out of range: the range's other port, then none is left.
    let out = sent(go(40000));
    assert_eq!((out.src, out.sport), (ip(D4), 2000));
    assert_eq!(go(40001), Verdict::Drop(DropReason::NatNoPort));
}

const MANGLE_POST: &str = "\
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -d 203.0.113.11/32 -p udp -m udp --dport 5353 -j MARK --set-mark 0x1
-A POSTROUTING -d 203.0.113.12/32 -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 192.0.2.30/32 -p udp -j DNAT --to-destination 203.0.113.11:5353
-A PREROUTING -d 192.0.2.31/32 -p udp -j DNAT --to-destination 203.0.113.12:5353
-A PREROUTING -d 192.0.2.32/32 -p udp -j DNAT --to-destination 203.0.113.11:5354
-A POSTROUTING -m mark --mark 0x1 -j MASQUERADE
COMMIT
";

#[test]
fn mangle_postrouting_runs_before_nat_postrouting_for_what_uvs_sends() {
    let p = pipeline(MANGLE_POST);
    // Marked at mangle POSTROUTING: nat POSTROUTING's mark match sees it.
    let mut f = udp(C4, 41000, "192.0.2.30", 53);
    assert_eq!(sent(run(&p, &mut f)).src, ip(D4));
    // Not marked: the client's address stays.
    let mut f = udp(C4, 41001, "192.0.2.32", 53);
    assert_eq!(sent(run(&p, &mut f)).src, ip(C4));
    // A DROP there.
    let mut f = udp(C4, 41002, "192.0.2.31", 53);
    assert_eq!(run(&p, &mut f), Verdict::Drop(DropReason::Filtered));
    let t = p.tables.load_full();
    let m = t.table(crate::datapath::tables::TableId::Mangle).unwrap();
    let c = m
        .chains
        .iter()
        .position(|c| c.name == "POSTROUTING")
        .unwrap();
    assert_eq!((m.rule_counts(c, 0).0, m.rule_counts(c, 1).0), (1, 1));
    assert_eq!(m.policy_counts(c).0, 2);
}

#[test]
fn mangle_postrouting_alone_sees_ipvs_traffic() {
    use crate::datapath::service::{DestSpec, ServiceSpec};
    let p = pipeline(
        "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         -A POSTROUTING -d 203.0.113.11/32 -j DROP\nCOMMIT\n",
    );
    assert!(!p.tables.load().nat_on);
    let spec = ServiceSpec {
        proto: 17,
        addr: ip("192.0.2.10"),
        port: 53,
        sched: "rr".into(),
        params: Default::default(),
        persistence: None,
        one_packet: false,
        pe: None,
        dests: vec![DestSpec {
            addr: ip(S4),
            port: 53,
            fwd: uvs_sched::FwdMethod::Masq,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            tun: Default::default(),
        }],
    };
    let snap = p.services.load().rebuild(&[spec]).unwrap();
    p.services.store(Arc::new(snap));
    let mut f = udp(C4, 41003, "192.0.2.10", 53);
    assert_eq!(run(&p, &mut f), Verdict::Drop(DropReason::Filtered));
}
