//! The route decision and service lookup through this thread's small-
//! configuration copy (`Vips`) and through the snapshot's maps must agree;
//! the sides of the connection table a packet to a VIP probes.

use std::net::IpAddr;
use std::sync::Arc;

use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::wire::tcp::flags::{ACK, SYN};
use uvs_fwd::CsumMode;
use uvs_sched::{FwdMethod, SchedParams};

use super::vips::SMALL_VIPS;
use super::{Pipeline, Verdict};
use crate::datapath::service::{DestSpec, ServiceSpec};
use crate::datapath::stats::WorkerStats;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn syn(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    tcp(src, sport, dst, dport, SYN)
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Vec<u8> {
    FrameSpec {
        src: ip(src),
        dst: ip(dst),
        sport,
        dport,
        l4: L4Spec::Tcp {
            flags,
            options: Vec::new(),
        },
        payload: Vec::new(),
        ..FrameSpec::tcp_v4()
    }
    .build()
}

fn svc(addr: &str, port: u16, server: &str, server_port: u16) -> ServiceSpec {
    ServiceSpec {
        proto: 6,
        addr: ip(addr),
        port,
        sched: "rr".into(),
        params: SchedParams::default(),
        persistence: None,
        one_packet: false,
        pe: None,
        dests: vec![DestSpec {
            addr: ip(server),
            port: server_port,
            fwd: FwdMethod::Masq,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            tun: Default::default(),
        }],
    }
}

fn pipeline(specs: &[ServiceSpec]) -> Pipeline {
    let p = Pipeline::new(uvs_conntrack::Table::new(uvs_conntrack::Config::default()));
    let snap = p.services.load().rebuild(specs).unwrap();
    p.services.store(Arc::new(snap));
    p
}

/// Where a SYN went: `Some((server, port))`, or `None` when passed.
fn route(p: &Pipeline, sport: u16, dst: &str, dport: u16) -> Option<(IpAddr, u16)> {
    let st = WorkerStats::default();
    let mut f = syn("198.51.100.10", sport, dst, dport);
    match p.process(&mut f, CsumMode::Full, 1, &st) {
        Verdict::Xmit { next_hop, pkt, .. } => Some((next_hop, pkt.dport)),
        Verdict::Pass => None,
        v => panic!("unexpected verdict {v:?}"),
    }
}

fn check(extra: usize) {
    let mut specs = vec![
        svc("192.0.2.10", 80, "203.0.113.11", 8080),
        // A port-0 service: any port, forwarded to the same port.
        svc("192.0.2.11", 0, "203.0.113.12", 0),
    ];
    for i in 0..extra {
        specs.push(svc(&format!("192.0.2.{}", 100 + i), 80, "203.0.113.13", 80));
    }
    let p = pipeline(&specs);
    assert_eq!(
        route(&p, 40000, "192.0.2.10", 80),
        Some((ip("203.0.113.11"), 8080))
    );
    assert_eq!(
        route(&p, 40001, "192.0.2.11", 443),
        Some((ip("203.0.113.12"), 443))
    );
    // Not a VIP: the kernel's.
    assert_eq!(route(&p, 40002, "192.0.2.99", 80), None);
    // A VIP without a service on that port: not scheduled (passed).
    assert_eq!(route(&p, 40003, "192.0.2.10", 81), None);
    if extra > 0 {
        assert_eq!(
            route(&p, 40004, "192.0.2.100", 80),
            Some((ip("203.0.113.13"), 80))
        );
    }
    // A new generation without 192.0.2.10: this thread follows it.
    let snap = p.services.load().rebuild(&specs[1..]).unwrap();
    p.services.store(Arc::new(snap));
    assert_eq!(route(&p, 40005, "192.0.2.10", 80), None);
    assert_eq!(
        route(&p, 40006, "192.0.2.11", 22),
        Some((ip("203.0.113.12"), 22))
    );
}

#[test]
fn small_configuration_uses_the_thread_copy() {
    check(0);
}

#[test]
fn large_configuration_uses_the_maps() {
    check(SMALL_VIPS + 2);
}

/// A client whose address is a VIP (the director's own process sourcing
/// from one, or a host that holds one): its NAT server's replies are
/// addressed to a VIP, meet LOCAL_IN and are still found on the table's
/// reply side, though a bare SYN to a VIP probes the request side only.
#[test]
fn replies_to_a_client_at_a_vip_address_are_found_at_local_in() {
    let p = pipeline(&[
        svc("192.0.2.10", 80, "203.0.113.11", 8080),
        svc("192.0.2.20", 80, "203.0.113.12", 8080),
    ]);
    let st = WorkerStats::default();
    for (sport, local) in [(40000, false), (40001, true)] {
        let mut f = syn("192.0.2.20", sport, "192.0.2.10", 80);
        let v = if local {
            p.process_local_out(&mut f, CsumMode::Full, 1, &st)
        } else {
            p.process(&mut f, CsumMode::Full, 1, &st)
        };
        let Verdict::Xmit { next_hop, pkt, .. } = v else {
            panic!("SYN not forwarded: {v:?}")
        };
        assert_eq!((next_hop, pkt.dport), (ip("203.0.113.11"), 8080));
        // The server's SYN-ACK and ACK, to the client's (VIP) address.
        for flags in [SYN | ACK, ACK] {
            let mut r = tcp("203.0.113.11", 8080, "192.0.2.20", sport, flags);
            let v = p.process(&mut r, CsumMode::Full, 2, &st);
            let Verdict::Xmit { next_hop, pkt, .. } = v else {
                panic!("reply {flags:#x} not forwarded: {v:?}")
            };
            assert_eq!(next_hop, ip("192.0.2.20"), "reply {flags:#x}");
            assert_eq!((pkt.src, pkt.sport), (ip("192.0.2.10"), 80));
        }
    }
    // A bare SYN is never taken as a reply (no server of a NAT service
    // opens toward its client): no service owns 192.0.2.20:40000.
    let mut r = syn("203.0.113.11", 8080, "192.0.2.20", 40000);
    let v = p.process(&mut r, CsumMode::Full, 3, &st);
    assert!(!matches!(v, Verdict::Xmit { .. }), "{v:?}");
    assert_eq!(p.conns.len(), 2);
}
