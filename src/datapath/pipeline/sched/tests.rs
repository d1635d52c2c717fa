//! One-packet scheduling, the SIP persistence engine and `schedule_icmp`
//! on built frames.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::CsumMode;
use uvs_sched::{FwdMethod, SchedParams};

use crate::datapath::pipeline::{Pipeline, Verdict};
use crate::datapath::service::{ClientMask, DestSpec, Pe, Persistence, ServiceSpec};
use crate::datapath::stats::{DropReason, WorkerStats};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// UDP rr 192.0.2.10:5060 over two DR servers.
fn spec(one_packet: bool, pe: Option<Pe>) -> ServiceSpec {
    let dest = |a: &str| DestSpec {
        addr: ip(a),
        port: 5060,
        fwd: FwdMethod::Route,
        weight: 1,
        u_threshold: 0,
        l_threshold: 0,
        tun: Default::default(),
    };
    ServiceSpec {
        proto: 17,
        addr: ip("192.0.2.10"),
        port: 5060,
        sched: "rr".into(),
        params: SchedParams::default(),
        persistence: pe.map(|_| Persistence {
            timeout_ms: 60_000,
            mask: ClientMask::V4(u32::MAX),
        }),
        one_packet,
        pe,
        dests: vec![dest("203.0.113.11"), dest("203.0.113.12")],
    }
}

fn pipeline(s: ServiceSpec) -> Pipeline {
    let p = Pipeline::new(uvs_conntrack::Table::new(uvs_conntrack::Config::default()));
    let snap = p.services.load().rebuild(&[s]).unwrap();
    p.services.store(Arc::new(snap));
    p
}

fn datagram(sport: u16, payload: &[u8]) -> Vec<u8> {
    FrameSpec {
        src: ip("198.51.100.10"),
        sport,
        dport: 5060,
        payload: payload.to_vec(),
        ..FrameSpec::udp_v4()
    }
    .build()
}

/// Where a frame went (`None`: not transmitted), and the verdict.
fn send(p: &Pipeline, st: &WorkerStats, mut f: Vec<u8>) -> (Option<IpAddr>, Verdict) {
    let v = p.process(&mut f, CsumMode::Full, 1, st);
    match v {
        Verdict::Xmit { next_hop, .. } => (Some(next_hop), v),
        _ => (None, v),
    }
}

#[test]
fn one_packet_schedules_every_datagram_and_keeps_no_entry() {
    let p = pipeline(spec(true, None));
    let st = WorkerStats::default();
    let mut to = Vec::new();
    for _ in 0..10 {
        to.push(send(&p, &st, datagram(40000, b"x")).0.expect("sent"));
    }
    let a = to.iter().filter(|d| **d == ip("203.0.113.11")).count();
    assert_eq!(a, 5, "{to:?}");
    assert_eq!(p.conns.len(), 0);
    assert_eq!(st.conns.load(Relaxed), 10);
    // Without -o the same socket sticks to its first server.
    let p = pipeline(spec(false, None));
    let first = send(&p, &st, datagram(40000, b"x")).0;
    for _ in 0..5 {
        assert_eq!(send(&p, &st, datagram(40000, b"x")).0, first);
    }
    assert_eq!(p.conns.len(), 1);
}

fn sip(call: &str) -> Vec<u8> {
    format!("INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP c\r\nCall-ID: {call}\r\n\r\n")
        .into_bytes()
}

#[test]
fn sip_calls_from_one_port_stick_to_their_own_servers() {
    let p = pipeline(spec(true, Some(Pe::Sip)));
    let st = WorkerStats::default();
    let a = send(&p, &st, datagram(5060, &sip("call-a@c"))).0.unwrap();
    let b = send(&p, &st, datagram(5060, &sip("call-b@c"))).0.unwrap();
    assert_ne!(a, b);
    for _ in 0..5 {
        assert_eq!(send(&p, &st, datagram(5060, &sip("call-a@c"))).0, Some(a));
        assert_eq!(send(&p, &st, datagram(5060, &sip("call-b@c"))).0, Some(b));
    }
    // The compact form names the same call.
    let compact = b"BYE sip:b@example.com SIP/2.0\r\ni: call-b@c\r\n\r\n";
    assert_eq!(send(&p, &st, datagram(5060, compact)).0, Some(b));
    // Two templates, no connection entries.
    assert_eq!(p.conns.len(), 2);
    // No Call-ID: dropped and counted.
    let (to, v) = send(&p, &st, datagram(5060, b"hello"));
    assert_eq!((to, v), (None, Verdict::Drop(DropReason::PeNoCallId)));
    assert_eq!(st.drops[DropReason::PeNoCallId as usize].load(Relaxed), 1);
}

/// An ICMP port unreachable from the client about a datagram from the VIP
/// (`sport` is the client's port).
fn icmp_from_client(sport: u16) -> Vec<u8> {
    let quoted = FrameSpec {
        src: ip("192.0.2.10"),
        dst: ip("198.51.100.10"),
        sport: 5060,
        dport: sport,
        ..FrameSpec::udp_v4()
    }
    .build();
    FrameSpec {
        src: ip("198.51.100.10"),
        dst: ip("192.0.2.10"),
        l4: L4Spec::Icmp {
            msg_type: 3,
            code: 3,
        },
        payload: quoted[14..14 + 28].to_vec(),
        ..FrameSpec::udp_v4()
    }
    .build()
}

#[test]
fn schedule_icmp_creates_the_connection_an_error_is_about() {
    let p = pipeline(spec(false, None));
    let st = WorkerStats::default();
    // Off (the default): left alone.
    assert_eq!(send(&p, &st, icmp_from_client(41000)).1, Verdict::Pass);
    assert_eq!(p.conns.len(), 0);
    p.conns.set_knobs(&uvs_conntrack::Knobs {
        schedule_icmp: true,
        ..p.conns.knobs()
    });
    let (to, _) = send(&p, &st, icmp_from_client(41000));
    let to = to.expect("forwarded to a real server");
    assert_eq!(p.conns.len(), 1);
    // The client's datagrams now follow that connection.
    assert_eq!(send(&p, &st, datagram(41000, b"x")).0, Some(to));
}
