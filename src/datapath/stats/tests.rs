//! Service and real-server counters through the real pipeline: what is
//! counted in and out, across snapshot changes, `-Z`, deletion and reuse.

use std::net::IpAddr;
use std::sync::Arc;

use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::wire::tcp::flags::{ACK, SYN};
use uvs_fwd::CsumMode;
use uvs_sched::{FwdMethod, SchedParams};

use super::*;
use crate::datapath::pipeline::{Pipeline, Verdict};
use crate::datapath::service::{Change, DestSpec, ServiceRt, ServiceSpec, Services};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    FrameSpec {
        src: ip(src),
        dst: ip(dst),
        sport,
        dport,
        l4: L4Spec::Tcp {
            flags,
            options: Vec::new(),
        },
        payload: vec![0x55; payload],
        ..FrameSpec::tcp_v4()
    }
    .build()
}

fn spec(port: u16, servers: &[&str], fwd: FwdMethod) -> ServiceSpec {
    ServiceSpec {
        proto: 6,
        addr: ip("192.0.2.10"),
        port,
        sched: "rr".into(),
        params: SchedParams::default(),
        persistence: None,
        one_packet: false,
        pe: None,
        dests: servers
            .iter()
            .map(|a| DestSpec {
                addr: ip(a),
                port: 80,
                fwd,
                weight: 1,
                u_threshold: 0,
                l_threshold: 0,
                tun: Default::default(),
            })
            .collect(),
    }
}

fn setup(workers: usize) -> (Arc<Stats>, Pipeline) {
    let stats = Arc::new(Stats::new(workers));
    let p = Pipeline::new(uvs_conntrack::Table::new(uvs_conntrack::Config::default()));
    p.services.store(Arc::new(Services::counted(stats.clone())));
    (stats, p)
}

fn apply(p: &Pipeline, changes: Vec<Change>) {
    let next = p.services.load_full().plan(changes).unwrap().commit();
    p.services.store(Arc::new(next));
}

fn svc(p: &Pipeline, port: u16) -> Arc<ServiceRt> {
    p.services
        .load_full()
        .get(&(6, ip("192.0.2.10"), port))
        .unwrap()
        .clone()
}

fn dest_id(d: &Dest) -> u32 {
    d.stats_tag() as u32
}

/// A SYN, an ACK with `payload` bytes, and the server's reply with
/// `reply` bytes, from client port `cport`; returns the IP lengths sent
/// (in, out).
fn exchange(
    p: &Pipeline,
    st: &WorkerStats,
    cport: u16,
    payload: usize,
    reply: usize,
) -> (u64, u64) {
    let mut syn = tcp("198.51.100.10", cport, "192.0.2.10", 80, SYN, 0);
    let Verdict::Xmit { next_hop, .. } = p.process(&mut syn, CsumMode::Full, 0, st) else {
        panic!("SYN not forwarded")
    };
    let mut ack = tcp("198.51.100.10", cport, "192.0.2.10", 80, ACK, payload);
    assert!(matches!(
        p.process(&mut ack, CsumMode::Full, 1, st),
        Verdict::Xmit { .. }
    ));
    let mut back = tcp(
        &next_hop.to_string(),
        80,
        "198.51.100.10",
        cport,
        ACK,
        reply,
    );
    assert!(matches!(
        p.process(&mut back, CsumMode::Full, 2, st),
        Verdict::Xmit { .. }
    ));
    // IPv4 + TCP headers of 20 bytes each.
    ((40 + 40 + payload) as u64, (40 + reply) as u64)
}

#[test]
fn requests_count_in_replies_count_out_per_service_and_server() {
    let (stats, p) = setup(2);
    apply(
        &p,
        vec![Change::Upsert(spec(
            80,
            &["203.0.113.11", "203.0.113.12"],
            FwdMethod::Masq,
        ))],
    );
    let (mut inb, mut outb) = (0, 0);
    for (i, w) in [0, 1, 0].into_iter().enumerate() {
        let (a, b) = exchange(&p, &stats.workers[w], 40000 + i as u16, 100, 1000);
        inb += a;
        outb += b;
    }
    let s = svc(&p, 80);
    let c = stats.counters(s.stats.id);
    assert_eq!(
        c,
        Counters {
            conns: 3,
            inpkts: 6,
            outpkts: 3,
            inbytes: inb,
            outbytes: outb,
        }
    );
    // rr: two connections to the first server, one to the second.
    let d: Vec<Counters> = s.dests.iter().map(|d| stats.counters(dest_id(d))).collect();
    assert_eq!((d[0].conns, d[1].conns), (2, 1));
    assert_eq!(d[0].inpkts + d[1].inpkts, 6);
    assert_eq!(d[0].outbytes + d[1].outbytes, outb);
}

#[test]
fn direct_routing_counts_only_inbound() {
    let (stats, p) = setup(1);
    apply(
        &p,
        vec![Change::Upsert(spec(
            80,
            &["203.0.113.11"],
            FwdMethod::Route,
        ))],
    );
    let st = &stats.workers[0];
    let mut syn = tcp("198.51.100.10", 40000, "192.0.2.10", 80, SYN, 0);
    assert!(matches!(
        p.process(&mut syn, CsumMode::Full, 0, st),
        Verdict::Xmit { .. }
    ));
    let c = stats.counters(svc(&p, 80).stats.id);
    assert_eq!((c.conns, c.inpkts, c.inbytes, c.outpkts), (1, 1, 40, 0));
}

#[test]
fn counters_survive_changes_zero_and_restart_after_delete() {
    let (stats, p) = setup(1);
    let st = &stats.workers[0];
    apply(
        &p,
        vec![
            Change::Upsert(spec(80, &["203.0.113.11"], FwdMethod::Masq)),
            Change::Upsert(spec(81, &["203.0.113.11"], FwdMethod::Masq)),
        ],
    );
    exchange(&p, st, 40000, 10, 10);
    let id = svc(&p, 80).stats.id;
    // Another service changes; this one is edited (a server added): kept.
    apply(
        &p,
        vec![Change::Upsert(spec(81, &["203.0.113.12"], FwdMethod::Masq))],
    );
    apply(
        &p,
        vec![Change::Upsert(spec(
            80,
            &["203.0.113.11", "203.0.113.12"],
            FwdMethod::Masq,
        ))],
    );
    assert_eq!(svc(&p, 80).stats.id, id);
    assert_eq!(stats.counters(id).conns, 1);
    // -Z: zero from here on, and counting continues.
    stats.zero(id);
    assert_eq!(stats.counters(id), Counters::default());
    exchange(&p, st, 40001, 10, 10);
    assert_eq!(stats.counters(id).conns, 1);
    // Deleted and re-added: a new slot, from zero.
    apply(&p, vec![Change::Remove((6, ip("192.0.2.10"), 80))]);
    apply(
        &p,
        vec![Change::Upsert(spec(80, &["203.0.113.11"], FwdMethod::Masq))],
    );
    let s = svc(&p, 80);
    assert_ne!(s.stats.id, id);
    assert_eq!(stats.counters(s.stats.id), Counters::default());
    assert_eq!(stats.counters(dest_id(&s.dests[0])), Counters::default());
}

#[test]
fn ids_of_owners_gone_are_reused_from_zero() {
    let (stats, p) = setup(1);
    apply(
        &p,
        vec![Change::Upsert(spec(80, &["203.0.113.11"], FwdMethod::Masq))],
    );
    exchange(&p, &stats.workers[0], 40000, 10, 10);
    assert_eq!(stats.slots_in_use(), 2);
    apply(&p, vec![Change::Remove((6, ip("192.0.2.10"), 80))]);
    // A packet moves this thread's snapshot copy past the deletion.
    let mut other = tcp("198.51.100.10", 1, "192.0.2.99", 1, SYN, 0);
    p.process(&mut other, CsumMode::Full, 3, &stats.workers[0]);
    // A connection still holds the server: nothing is freed yet.
    stats.sweep();
    assert_eq!(stats.slots_in_use(), 2);
    drop(p);
    stats.sweep();
    assert_eq!(stats.slots_in_use(), 0);
    let lease = stats.service_slot();
    assert_eq!(stats.counters(lease.id), Counters::default());
}

#[test]
fn the_estimator_runs_on_every_slot() {
    let (stats, p) = setup(1);
    apply(
        &p,
        vec![Change::Upsert(spec(80, &["203.0.113.11"], FwdMethod::Masq))],
    );
    for i in 0..4 {
        exchange(&p, &stats.workers[0], 40000 + i, 10, 10);
    }
    stats.estimate();
    let s = svc(&p, 80);
    // 4 connections in one interval: (4 << 9) >> 2 = 512, read
    // (512 + 511) >> 10 = 0 (0.5 per second rounds down).
    let r = stats.rates(s.stats.id);
    assert_eq!(r.cps, 0);
    // 8 in-packets: (8 << 9) >> 2 = 1024 → (1024 + 511) >> 10 = 1.
    assert_eq!(r.inpps, 1);
    assert_eq!(stats.rates(dest_id(&s.dests[0])), r);
}
