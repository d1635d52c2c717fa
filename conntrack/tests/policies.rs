//! The edge-case policies users were hurt by, each tested through the table
//! as the engine drives it.

mod common;
use common::*;

use std::collections::HashSet;

use uvs_conntrack::proto::tcp::flags::{ACK, FIN, SYN};
use uvs_conntrack::{
    Config, ConnState, Defense, Dir, FwdMethod, InsertError, Knobs, ListCursor, PacketInfo,
    TcpState, TemplateKey, Timeouts, Tuple, Update,
};

fn established(t: &uvs_conntrack::Table, c: &uvs_conntrack::NewConn, now: u64) {
    let h = t.insert(c.clone(), PacketInfo::tcp(SYN, 60), now).unwrap();
    if c.fwd == FwdMethod::Masq {
        assert_eq!(
            t.update(&h, Dir::Out, PacketInfo::tcp(SYN | ACK, 60), now),
            Update::Forward
        );
    }
    assert_eq!(
        t.update(&h, Dir::In, PacketInfo::tcp(ACK, 52), now),
        Update::Forward
    );
}

fn to_time_wait(t: &uvs_conntrack::Table, c: &uvs_conntrack::NewConn, now: u64) {
    let (h, _) = t.lookup(&req(c)).unwrap();
    t.update(&h, Dir::In, PacketInfo::tcp(FIN | ACK, 52), now);
    t.update(&h, Dir::Out, PacketInfo::tcp(FIN | ACK, 52), now);
    let (h, _) = t.lookup(&req(c)).unwrap();
    assert_eq!(h.state(), ConnState::Tcp(TcpState::TimeWait));
}

fn state_of(t: &uvs_conntrack::Table, tu: &Tuple) -> ConnState {
    t.lookup(tu).unwrap().0.state()
}

#[test]
fn syn_on_time_wait_is_rescheduled() {
    let t = table(100);
    let d1 = dest("203.0.113.11", 80, FwdMethod::Masq);
    let d2 = dest("203.0.113.12", 80, FwdMethod::Masq);
    let c = conn(TCP, 41000, &d1);
    established(&t, &c, 0);
    to_time_wait(&t, &c, 1);
    assert_eq!(d1.inactive_conns(), 1);
    let (h, dir) = t.lookup(&req(&c)).unwrap();
    assert_eq!(
        t.update(&h, dir, PacketInfo::tcp(SYN, 60), 2),
        Update::Reschedule
    );
    // The old entry is gone at once, so the engine can insert the same
    // tuple towards the server it now schedules, with this very packet.
    assert!(t.lookup(&req(&c)).is_none());
    assert_eq!(d1.inactive_conns(), 0);
    let mut c2 = conn(TCP, 41000, &d2);
    c2.daddr = d2.addr;
    let h2 = t.insert(c2.clone(), PacketInfo::tcp(SYN, 60), 2).unwrap();
    assert_eq!(h2.daddr(), d2.addr);
    assert_eq!(t.stats().rescheduled, 1);
}

#[test]
fn conn_reuse_mode_0_keeps_old_server() {
    let t = table(100);
    t.set_knobs(&Knobs {
        conn_reuse_mode: 0,
        ..Knobs::default()
    });
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let c = conn(TCP, 41001, &d);
    established(&t, &c, 0);
    to_time_wait(&t, &c, 1);
    let (h, dir) = t.lookup(&req(&c)).unwrap();
    assert_eq!(
        t.update(&h, dir, PacketInfo::tcp(SYN, 60), 2),
        Update::Forward
    );
    assert_eq!(state_of(&t, &req(&c)), ConnState::Tcp(TcpState::SynRecv));
}

#[test]
fn conn_reuse_mode_2_reschedules_dr_fin_wait() {
    let t = table(100);
    let d = dest("203.0.113.11", 80, FwdMethod::Route);
    let c = conn(TCP, 41002, &d);
    established(&t, &c, 0);
    let (h, _) = t.lookup(&req(&c)).unwrap();
    t.update(&h, Dir::In, PacketInfo::tcp(FIN | ACK, 52), 1);
    assert_eq!(state_of(&t, &req(&c)), ConnState::Tcp(TcpState::FinWait));
    // Mode 1: FIN_WAIT is not reused; the SYN continues the old entry.
    let (h, _) = t.lookup(&req(&c)).unwrap();
    assert_eq!(
        t.update(&h, Dir::In, PacketInfo::tcp(SYN, 60), 2),
        Update::Forward
    );
    assert_eq!(state_of(&t, &req(&c)), ConnState::Tcp(TcpState::SynRecv));
    t.update(&h, Dir::In, PacketInfo::tcp(ACK, 52), 3);
    t.update(&h, Dir::In, PacketInfo::tcp(FIN | ACK, 52), 3);
    t.set_knobs(&Knobs {
        conn_reuse_mode: 3,
        ..Knobs::default()
    });
    // Mode 3: a DR connection in FIN_WAIT is rescheduled.
    let (h, _) = t.lookup(&req(&c)).unwrap();
    assert_eq!(state_of(&t, &req(&c)), ConnState::Tcp(TcpState::FinWait));
    assert_eq!(
        t.update(&h, Dir::In, PacketInfo::tcp(SYN, 60), 4),
        Update::Reschedule
    );
}

#[test]
fn removed_server_knob_off_drops_without_refresh_and_resumes() {
    let t = table(100);
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let c = conn(TCP, 41003, &d);
    established(&t, &c, 0);
    d.set_available(false);
    // Traffic keeps coming every second; none is forwarded, and the
    // timer is not refreshed.
    for s in 1..100u64 {
        let (h, dir) = t.lookup(&req(&c)).unwrap();
        assert_eq!(
            t.update(&h, dir, PacketInfo::tcp(ACK, 52), s * 1000),
            Update::Drop
        );
    }
    // Re-adding the same server resumes the flow.
    d.set_available(true);
    let (h, dir) = t.lookup(&req(&c)).unwrap();
    assert_eq!(
        t.update(&h, dir, PacketInfo::tcp(ACK, 52), 100_000),
        Update::Forward
    );
    // Removed again: the entry dies at 100 s + 900 s despite steady traffic.
    d.set_available(false);
    let mut now = 100_000;
    while now < 100_000 + 900_000 {
        now += 10_000;
        t.expire(now, 1000);
        if let Some((h, dir)) = t.lookup(&req(&c)) {
            assert_eq!(
                t.update(&h, dir, PacketInfo::tcp(ACK, 52), now),
                Update::Drop
            );
        }
    }
    t.expire(now, 1000);
    assert!(t.lookup(&req(&c)).is_none());
    assert_eq!(d.active_conns() + d.inactive_conns(), 0);
    assert!(t.stats().nodest_dropped > 0);
}

#[test]
fn udp_to_removed_server_does_not_live_forever() {
    let t = table(100);
    let d = dest("203.0.113.11", 53, FwdMethod::Masq);
    let c = conn(UDP, 5353, &d);
    t.insert(c.clone(), PacketInfo::udp(80), 0).unwrap();
    d.set_available(false);
    let mut now = 0;
    let mut forwarded_after = 0;
    while now <= 400_000 {
        now += 1000;
        t.expire(now, 1000);
        match t.lookup(&req(&c)) {
            Some((h, dir)) => {
                if t.update(&h, dir, PacketInfo::udp(80), now) == Update::Forward {
                    forwarded_after += 1;
                }
            }
            None => break,
        }
    }
    assert_eq!(forwarded_after, 0);
    assert!(now <= 301_000, "entry outlived the UDP timeout: {now}");
}

#[test]
fn removed_server_knob_on_expires_and_reschedules() {
    let t = table(100);
    t.set_knobs(&Knobs {
        expire_nodest_conn: true,
        ..Knobs::default()
    });
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    // A mid-flow ACK: entry gone, packet dropped (it cannot open a flow).
    let c = conn(TCP, 41004, &d);
    established(&t, &c, 0);
    d.set_available(false);
    let (h, dir) = t.lookup(&req(&c)).unwrap();
    assert_eq!(t.update(&h, dir, PacketInfo::tcp(ACK, 52), 1), Update::Drop);
    assert!(t.lookup(&req(&c)).is_none());
    assert_eq!(d.active_conns(), 0);
    // A SYN: rescheduled.
    d.set_available(true);
    let c = conn(TCP, 41005, &d);
    established(&t, &c, 2);
    d.set_available(false);
    let (h, dir) = t.lookup(&req(&c)).unwrap();
    assert_eq!(
        t.update(&h, dir, PacketInfo::tcp(SYN, 60), 3),
        Update::Reschedule
    );
    // UDP: every datagram may open a flow, so it is rescheduled.
    d.set_available(true);
    let c = conn(UDP, 5354, &d);
    t.insert(c.clone(), PacketInfo::udp(80), 4).unwrap();
    d.set_available(false);
    let (h, dir) = t.lookup(&req(&c)).unwrap();
    assert_eq!(
        t.update(&h, dir, PacketInfo::udp(80), 5),
        Update::Reschedule
    );
    // The sweep also clears such entries without waiting for a packet.
    d.set_available(true);
    let c = conn(TCP, 41006, &d);
    established(&t, &c, 6);
    d.set_available(false);
    assert_eq!(t.expire(7, 10_000), 1);
    assert!(t.is_empty());
}

#[test]
fn quiescent_server_with_knob_reschedules_syn() {
    let t = table(100);
    t.set_knobs(&Knobs {
        expire_nodest_conn: true,
        conn_reuse_mode: 0,
        ..Knobs::default()
    });
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let c = conn(TCP, 41007, &d);
    established(&t, &c, 0);
    d.set_weight(0);
    // Existing traffic continues on a weight-0 server (draining)...
    let (h, dir) = t.lookup(&req(&c)).unwrap();
    assert_eq!(
        t.update(&h, dir, PacketInfo::tcp(ACK, 52), 1),
        Update::Forward
    );
    // ...but a new SYN on the tuple goes elsewhere.
    assert_eq!(
        t.update(&h, dir, PacketInfo::tcp(SYN, 60), 2),
        Update::Reschedule
    );
}

#[test]
fn secure_tcp_holds_nat_entries_in_syn_recv() {
    let t = table(100);
    t.set_knobs(&Knobs {
        secure_tcp: Defense::Always,
        ..Knobs::default()
    });
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let c = conn(TCP, 41008, &d);
    let h = t.insert(c.clone(), PacketInfo::tcp(SYN, 60), 0).unwrap();
    // A spoofer's blind ACK does not establish.
    t.update(&h, Dir::In, PacketInfo::tcp(ACK, 52), 1);
    assert_eq!(state_of(&t, &req(&c)), ConnState::Tcp(TcpState::SynRecv));
    assert_eq!(d.active_conns(), 0);
    // The real handshake does, once the server has spoken after it.
    t.update(&h, Dir::Out, PacketInfo::tcp(SYN | ACK, 60), 2);
    assert_eq!(state_of(&t, &req(&c)), ConnState::Tcp(TcpState::SynAck));
    t.update(&h, Dir::In, PacketInfo::tcp(ACK, 52), 3);
    assert_eq!(state_of(&t, &req(&c)), ConnState::Tcp(TcpState::SynAck));
    assert_eq!(d.active_conns(), 0);
    t.update(&h, Dir::Out, PacketInfo::tcp(ACK, 1500), 4);
    assert_eq!(
        state_of(&t, &req(&c)),
        ConnState::Tcp(TcpState::Established)
    );
    assert_eq!(d.active_conns(), 1);
}

#[test]
fn secure_tcp_auto_engages_at_threshold() {
    let t = uvs_conntrack::Table::new(Config {
        max_entries: 100,
        shards: 4,
        defense_threshold_pct: 50,
        knobs: Knobs {
            secure_tcp: Defense::Auto,
            ..Knobs::default()
        },
        ..Config::default()
    });
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let probe = |port: u16| {
        let c = conn(TCP, port, &d);
        let h = t.insert(c.clone(), PacketInfo::tcp(SYN, 60), 0).unwrap();
        t.update(&h, Dir::In, PacketInfo::tcp(ACK, 52), 1);
        state_of(&t, &req(&c))
    };
    assert_eq!(probe(1), ConnState::Tcp(TcpState::Established));
    for p in 2..60 {
        t.insert(conn(TCP, p, &d), PacketInfo::tcp(SYN, 60), 0)
            .unwrap();
    }
    assert_eq!(probe(60), ConnState::Tcp(TcpState::SynRecv));
}

#[test]
fn full_table_refuses_or_evicts_handshakes_only() {
    let t = table(64);
    t.set_knobs(&Knobs {
        drop_entry: Defense::Off,
        ..Knobs::default()
    });
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    for p in 0..32 {
        established(&t, &conn(TCP, p, &d), 0);
    }
    for p in 32..64 {
        t.insert(conn(TCP, p, &d), PacketInfo::tcp(SYN, 60), 0)
            .unwrap();
    }
    assert_eq!(
        t.insert(conn(TCP, 64, &d), PacketInfo::tcp(SYN, 60), 0)
            .unwrap_err(),
        InsertError::Full
    );
    assert_eq!(t.stats().refused_full, 1);
    t.set_knobs(&Knobs::default());
    // With drop_entry, SYN_RECV entries make room; established never do.
    for p in 100..1100 {
        let _ = t.insert(conn(TCP, p, &d), PacketInfo::tcp(SYN, 60), 0);
    }
    assert!(t.len() <= 64);
    for p in 0..32 {
        assert_eq!(
            state_of(&t, &req(&conn(TCP, p, &d))),
            ConnState::Tcp(TcpState::Established)
        );
    }
    assert!(t.stats().evicted > 0);
    assert_eq!(d.active_conns(), 32);
    assert_eq!(d.active_conns() + d.inactive_conns(), t.len() as u32);
}

#[test]
fn set_timeouts_applies_on_next_packet() {
    let t = table(100);
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let c = conn(TCP, 41009, &d);
    established(&t, &c, 0);
    let mut to = Timeouts::default();
    to.set_tcp_tcpfin_udp(60, 0, 0);
    t.set_timeouts(&to);
    assert_eq!(t.timeouts().tcp_tcpfin_udp(), (60, 120, 300));
    let (h, dir) = t.lookup(&req(&c)).unwrap();
    t.update(&h, dir, PacketInfo::tcp(ACK, 52), 1000);
    assert_eq!(t.expire(60_999, 1000), 0);
    assert_eq!(t.expire(61_000, 1000), 1);
}

#[test]
fn icmp_error_finds_its_connection() {
    let t = table(100);
    let d = dest("203.0.113.11", 8080, FwdMethod::Masq);
    let c = conn(TCP, 41010, &d);
    established(&t, &c, 0);
    // From the real server, about a packet the director sent it
    // (client → server after DNAT).
    let inner = Tuple {
        proto: TCP,
        src: c.caddr,
        sport: c.cport,
        dst: c.daddr,
        dport: c.dport,
    };
    let (h, dir) = t.lookup_related(&inner).unwrap();
    assert_eq!(dir, Dir::Out);
    assert_eq!(t.update_related(&h, dir, 56, 1), Update::Forward);
    // From the client side, about a reply the director sent (VIP → client).
    let inner = Tuple {
        proto: TCP,
        src: c.vaddr,
        sport: c.vport,
        dst: c.caddr,
        dport: c.cport,
    };
    assert_eq!(t.lookup_related(&inner).unwrap().1, Dir::In);
    // State unchanged by ICMP.
    assert_eq!(
        state_of(&t, &req(&c)),
        ConnState::Tcp(TcpState::Established)
    );
}

#[test]
fn stale_handle_after_expiry() {
    let t = table(100);
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let c = conn(TCP, 41011, &d);
    let h = t.insert(c.clone(), PacketInfo::tcp(SYN, 60), 0).unwrap();
    t.expire(60_000, 1000);
    assert!(t.is_empty());
    assert_eq!(
        t.update(&h, Dir::In, PacketInfo::tcp(ACK, 52), 60_001),
        Update::Drop
    );
    assert_eq!(
        t.update(&h, Dir::In, PacketInfo::tcp(SYN, 52), 60_001),
        Update::Reschedule
    );
    // An entry past its time but not swept is also treated as gone.
    let h = t
        .insert(c.clone(), PacketInfo::tcp(SYN, 60), 100_000)
        .unwrap();
    assert_eq!(
        t.update(&h, Dir::In, PacketInfo::tcp(ACK, 52), 160_000),
        Update::Drop
    );
    assert!(t.is_empty());
    assert_eq!(d.inactive_conns(), 0);
}

#[test]
fn reply_tuple_collision_is_refused() {
    let t = table(100);
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let c = conn(TCP, 41012, &d);
    t.insert(c.clone(), PacketInfo::tcp(SYN, 60), 0).unwrap();
    let mut other_vip = c.clone();
    other_vip.vaddr = ip("192.0.2.11");
    assert_eq!(
        t.insert(other_vip, PacketInfo::tcp(SYN, 60), 0)
            .unwrap_err(),
        InsertError::ReplyTupleInUse
    );
}

fn tkey(c: &uvs_conntrack::NewConn) -> TemplateKey {
    TemplateKey {
        proto: c.proto,
        caddr: uvs_conntrack::mask_addr(c.caddr, 24),
        vaddr: c.vaddr,
        vport: c.vport,
        fwmark: 0,
        pe: 0,
    }
}

#[test]
fn template_controls_and_outlives_its_timeout_while_in_use() {
    let t = table(100);
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let c = conn(TCP, 42000, &d);
    let tpl = t
        .get_or_insert_template(&tkey(&c), &d, 80, FwdMethod::Masq, 30_000, 0)
        .unwrap();
    assert!(tpl.is_template());
    assert_eq!(d.persistent_conns(), 1);
    // Another client of the same /24 finds the same template.
    let mut c2 = c.clone();
    c2.caddr = ip("198.51.100.200");
    assert_eq!(t.lookup_template(&tkey(&c2), 1).unwrap().daddr(), d.addr);
    established_controlled(&t, &c, &tpl, 0);
    // Long-lived connection: the template survives its 30 s.
    for s in 1..=100u64 {
        let (h, dir) = t.lookup(&req(&c)).unwrap();
        t.update(&h, dir, PacketInfo::tcp(ACK, 52), s * 1000);
        t.expire(s * 1000, 1000);
    }
    assert!(t.lookup_template(&tkey(&c), 100_000).is_some());
    let listed: Vec<_> = list_all(&t, 100_000);
    let tl = listed.iter().find(|i| i.template).unwrap();
    assert_eq!(tl.controlled, 1);
    assert_eq!(tl.cport, 0);
    assert_eq!(tl.state.name(), "NONE");
}

fn established_controlled(
    t: &uvs_conntrack::Table,
    c: &uvs_conntrack::NewConn,
    tpl: &uvs_conntrack::Handle,
    now: u64,
) {
    let h = t
        .insert_controlled(c.clone(), tpl, PacketInfo::tcp(SYN, 60), now)
        .unwrap();
    t.update(&h, Dir::Out, PacketInfo::tcp(SYN | ACK, 60), now);
    t.update(&h, Dir::In, PacketInfo::tcp(ACK, 52), now);
}

#[test]
fn persistence_not_stretched_by_time_wait() {
    for release in [true, false] {
        let t = table(100);
        t.set_knobs(&Knobs {
            release_template_on_close: release,
            ..Knobs::default()
        });
        let d = dest("203.0.113.11", 80, FwdMethod::Masq);
        let c = conn(TCP, 42001, &d);
        let tpl = t
            .get_or_insert_template(&tkey(&c), &d, 80, FwdMethod::Masq, 30_000, 0)
            .unwrap();
        established_controlled(&t, &c, &tpl, 0);
        to_time_wait(&t, &c, 1000);
        // TIME_WAIT lasts 120 s; the template's timeout is 30 s.
        let mut gone_at = None;
        for s in 2..200u64 {
            t.expire(s * 1000, 1000);
            if gone_at.is_none() && t.lookup_template(&tkey(&c), s * 1000).is_none() {
                gone_at = Some(s);
            }
        }
        let gone_at = gone_at.expect("template never expired");
        if release {
            assert!(gone_at <= 31, "persistence stretched to {gone_at} s");
        } else {
            // The kernel's behaviour: held by the TIME_WAIT connection.
            assert!(gone_at > 120, "kernel mode expired at {gone_at} s");
        }
        assert_eq!(d.persistent_conns(), 0);
        assert!(t.is_empty());
    }
}

#[test]
fn quiescent_template_expiry_knob() {
    for knob in [false, true] {
        let t = table(100);
        t.set_knobs(&Knobs {
            expire_quiescent_template: knob,
            ..Knobs::default()
        });
        let d = dest("203.0.113.11", 80, FwdMethod::Masq);
        let c = conn(TCP, 42002, &d);
        let tpl = t
            .get_or_insert_template(&tkey(&c), &d, 80, FwdMethod::Masq, 300_000, 0)
            .unwrap();
        established_controlled(&t, &c, &tpl, 0);
        d.set_weight(0);
        let found = t.lookup_template(&tkey(&c), 1).is_some();
        assert_eq!(found, !knob);
        // The controlled connection continues either way.
        let (h, dir) = t.lookup(&req(&c)).unwrap();
        assert_eq!(
            t.update(&h, dir, PacketInfo::tcp(ACK, 52), 2),
            Update::Forward
        );
        if knob {
            // A new template for another server can be made at once.
            let d2 = dest("203.0.113.12", 80, FwdMethod::Masq);
            let t2 = t
                .get_or_insert_template(&tkey(&c), &d2, 80, FwdMethod::Masq, 300_000, 3)
                .unwrap();
            assert_eq!(t2.daddr(), d2.addr);
        }
    }
}

#[test]
fn removed_server_invalidates_template() {
    let t = table(100);
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let c = conn(TCP, 42003, &d);
    t.get_or_insert_template(&tkey(&c), &d, 80, FwdMethod::Masq, 300_000, 0)
        .unwrap();
    d.set_available(false);
    assert!(t.lookup_template(&tkey(&c), 1).is_none());
    assert!(t.is_empty());
    assert_eq!(d.persistent_conns(), 0);
}

#[test]
fn fwmark_and_port_zero_templates_are_distinct() {
    let t = table(100);
    let d = dest("203.0.113.11", 0, FwdMethod::Route);
    let base = TemplateKey {
        proto: TCP,
        caddr: ip("198.51.100.1"),
        vaddr: ip("192.0.2.10"),
        vport: 0,
        fwmark: 0,
        pe: 0,
    };
    let marked = TemplateKey { fwmark: 7, ..base };
    let a = t
        .get_or_insert_template(&base, &d, 0, FwdMethod::Route, 1000, 0)
        .unwrap();
    let b = t
        .get_or_insert_template(&marked, &d, 0, FwdMethod::Route, 1000, 0)
        .unwrap();
    assert_eq!(t.len(), 2);
    assert_ne!(a.vaddr(), b.vaddr());
    let listed = list_all(&t, 0);
    assert!(listed.iter().any(|i| i.fwmark == Some(7)));
    // Port-0 service: each connection keeps the client's port as its dport.
    let mut c = conn(TCP, 1234, &d);
    c.vport = 8443;
    c.dport = 8443;
    let h = t
        .insert_controlled(c, &a, PacketInfo::tcp(SYN, 60), 1)
        .unwrap();
    assert_eq!(h.dport(), 8443);
}

#[test]
fn persistence_engine_keys_make_distinct_templates() {
    let t = table(100);
    let (d1, d2) = (
        dest("203.0.113.11", 5060, FwdMethod::Route),
        dest("203.0.113.12", 5060, FwdMethod::Route),
    );
    let k = |call: &[u8]| TemplateKey {
        proto: UDP,
        caddr: ip("198.51.100.1"),
        vaddr: ip("192.0.2.10"),
        vport: 5060,
        fwmark: 0,
        pe: uvs_conntrack::pe_digest(call),
    };
    let a = t
        .get_or_insert_template(&k(b"call-a"), &d1, 5060, FwdMethod::Route, 1000, 0)
        .unwrap();
    let b = t
        .get_or_insert_template(&k(b"call-b"), &d2, 5060, FwdMethod::Route, 1000, 0)
        .unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(
        t.lookup_template(&k(b"call-a"), 1).unwrap().daddr(),
        a.daddr()
    );
    assert_eq!(
        t.lookup_template(&k(b"call-b"), 1).unwrap().daddr(),
        b.daddr()
    );
    assert_ne!(a.daddr(), b.daddr());
    // Neither is the engine-less template of that client.
    assert!(t
        .lookup_template(&TemplateKey { pe: 0, ..k(b"") }, 1)
        .is_none());
    // Listed with client port 0, as templates are.
    assert!(list_all(&t, 1).iter().all(|i| i.template && i.cport == 0));
    // A touch restarts the timer without binding a connection: alive past
    // the first timeout, gone after an untouched one.
    assert!(t.touch_template(&a, 900));
    assert!(t.lookup_template(&k(b"call-a"), 1500).is_some());
    assert!(t.lookup_template(&k(b"call-a"), 3000).is_none());
}

fn list_all(t: &uvs_conntrack::Table, now: u64) -> Vec<uvs_conntrack::ConnInfo> {
    let mut out = Vec::new();
    let mut cur = Some(ListCursor::default());
    while let Some(c) = cur {
        cur = t.list_page(c, 7, now, &mut out);
    }
    out
}

#[test]
fn listing_pages_see_every_entry_once() {
    let t = table(10_000);
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    for p in 0..3000 {
        t.insert(conn(TCP, p, &d), PacketInfo::tcp(SYN, 60), 0)
            .unwrap();
    }
    let listed = list_all(&t, 1000);
    assert_eq!(listed.len(), 3000);
    let ports: HashSet<u16> = listed.iter().map(|i| i.cport).collect();
    assert_eq!(ports.len(), 3000);
    assert!(listed
        .iter()
        .all(|i| i.state.name() == "SYN_RECV" && i.expires_in_ms == 59_000));
    let mut n = 0;
    t.for_each_entry(0, |_| n += 1);
    assert_eq!(n, 3000);
}

#[test]
fn ipv6_and_udp_templates() {
    let t = table(100);
    let d = std::sync::Arc::new(uvs_conntrack::Dest::new(
        ip("2001:db8:2::11"),
        53,
        1,
        FwdMethod::Masq,
    ));
    let k = TemplateKey {
        proto: UDP,
        caddr: uvs_conntrack::mask_addr(ip("2001:db8:1::77"), 64),
        vaddr: ip("2001:db8::10"),
        vport: 53,
        fwmark: 0,
        pe: 0,
    };
    let tpl = t
        .get_or_insert_template(&k, &d, 53, FwdMethod::Masq, 5_000, 0)
        .unwrap();
    // The same /64 finds it; the template shows as UDP in the listing.
    let k2 = TemplateKey {
        caddr: uvs_conntrack::mask_addr(ip("2001:db8:1::99"), 64),
        ..k
    };
    assert_eq!(t.lookup_template(&k2, 1).unwrap().daddr(), d.addr);
    let c = uvs_conntrack::NewConn {
        proto: UDP,
        caddr: ip("2001:db8:1::77"),
        cport: 5353,
        vaddr: ip("2001:db8::10"),
        vport: 53,
        daddr: d.addr,
        dport: 53,
        dest: d.clone(),
        fwd: FwdMethod::Masq,
    };
    t.insert_controlled(c.clone(), &tpl, PacketInfo::udp(80), 2)
        .unwrap();
    let rows = list_all(&t, 3);
    assert_eq!(rows.len(), 2);
    let tr = rows.iter().find(|r| r.template).unwrap();
    assert_eq!(tr.state.name(), "UDP");
    assert_eq!(tr.controlled, 1);
    // UDP connections never close, so the template lives while the
    // connection does (300 s), then expires with it.
    t.expire(200_000, 1000);
    assert!(t.lookup_template(&k, 200_000).is_some());
    t.expire(400_000, 1000);
    t.expire(400_000, 1000);
    assert!(t.is_empty());
    assert_eq!(d.persistent_conns(), 0);
}
