//! Engine-facing API: the basic flows the engine relies on.

mod common;
use common::*;

use uvs_conntrack::proto::tcp::flags::{ACK, FIN, RST, SYN};
use uvs_conntrack::{ConnState, Dir, FwdMethod, InsertError, Knobs, PacketInfo, TcpState, Update};

#[test]
fn nat_connection_lifecycle() {
    let t = table(1000);
    let d = dest("203.0.113.11", 8080, FwdMethod::Masq);
    let c = conn(TCP, 40000, &d);
    let h = t.insert(c.clone(), PacketInfo::tcp(SYN, 60), 0).unwrap();
    assert_eq!(h.state(), ConnState::Tcp(TcpState::SynRecv));
    assert_eq!((d.active_conns(), d.inactive_conns()), (0, 1));
    assert_eq!(t.len(), 1);

    let (h, dir) = t.lookup(&reply(&c)).unwrap();
    assert_eq!(dir, Dir::Out);
    assert_eq!(h.daddr(), d.addr);
    assert_eq!(h.dport(), 8080);
    assert_eq!(
        t.update(&h, dir, PacketInfo::tcp(SYN | ACK, 60), 10),
        Update::Forward
    );

    let (h, dir) = t.lookup(&req(&c)).unwrap();
    assert_eq!(dir, Dir::In);
    assert_eq!(
        t.update(&h, dir, PacketInfo::tcp(ACK, 52), 20),
        Update::Forward
    );
    let (h, _) = t.lookup(&req(&c)).unwrap();
    assert_eq!(h.state(), ConnState::Tcp(TcpState::Established));
    assert_eq!((d.active_conns(), d.inactive_conns()), (1, 0));

    // Client FIN, server FIN: TIME_WAIT, inactive again.
    t.update(&h, Dir::In, PacketInfo::tcp(FIN | ACK, 52), 30);
    assert_eq!(
        t.lookup(&req(&c)).unwrap().0.state(),
        ConnState::Tcp(TcpState::CloseWait)
    );
    t.update(&h, Dir::Out, PacketInfo::tcp(FIN | ACK, 52), 40);
    assert_eq!(
        t.lookup(&req(&c)).unwrap().0.state(),
        ConnState::Tcp(TcpState::TimeWait)
    );
    assert_eq!((d.active_conns(), d.inactive_conns()), (0, 1));

    // TIME_WAIT lasts 120 s from the last packet.
    assert_eq!(t.expire(40 + 119_000, 10_000), 0);
    assert_eq!(t.len(), 1);
    assert_eq!(t.expire(40 + 120_000, 10_000), 1);
    assert_eq!(t.len(), 0);
    assert!(t.lookup(&req(&c)).is_none());
    assert_eq!((d.active_conns(), d.inactive_conns()), (0, 0));
}

#[test]
fn rst_closes() {
    let t = table(100);
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let c = conn(TCP, 40001, &d);
    let h = t.insert(c.clone(), PacketInfo::tcp(SYN, 60), 0).unwrap();
    t.update(&h, Dir::Out, PacketInfo::tcp(SYN | ACK, 60), 1);
    t.update(&h, Dir::In, PacketInfo::tcp(ACK, 60), 2);
    assert_eq!(d.active_conns(), 1);
    t.update(&h, Dir::Out, PacketInfo::tcp(RST, 40), 3);
    let (h, _) = t.lookup(&req(&c)).unwrap();
    assert_eq!(h.state(), ConnState::Tcp(TcpState::Close));
    assert_eq!((d.active_conns(), d.inactive_conns()), (0, 1));
    // CLOSE: 10 s.
    assert_eq!(t.expire(3 + 10_000, 1000), 1);
}

#[test]
fn dr_uses_input_only_and_has_no_reply_index() {
    let t = table(100);
    let d = dest("203.0.113.12", 80, FwdMethod::Route);
    let c = conn(TCP, 40002, &d);
    let h = t.insert(c.clone(), PacketInfo::tcp(SYN, 60), 0).unwrap();
    assert!(t.lookup(&reply(&c)).is_none());
    // INPUT_ONLY: the client's ACK establishes; its FIN goes to FIN_WAIT.
    t.update(&h, Dir::In, PacketInfo::tcp(ACK, 52), 1);
    assert_eq!(
        t.lookup(&req(&c)).unwrap().0.state(),
        ConnState::Tcp(TcpState::Established)
    );
    t.update(&h, Dir::In, PacketInfo::tcp(FIN | ACK, 52), 2);
    assert_eq!(
        t.lookup(&req(&c)).unwrap().0.state(),
        ConnState::Tcp(TcpState::FinWait)
    );
}

#[test]
fn udp_is_one_inactive_state_with_300s() {
    let t = table(100);
    let d = dest("203.0.113.11", 53, FwdMethod::Masq);
    let c = conn(UDP, 5353, &d);
    let h = t.insert(c.clone(), PacketInfo::udp(80), 0).unwrap();
    assert_eq!(h.state(), ConnState::Udp);
    assert_eq!(h.state().name(), "UDP");
    assert_eq!(d.inactive_conns(), 1);
    let (h, dir) = t.lookup(&reply(&c)).unwrap();
    assert_eq!(
        t.update(&h, dir, PacketInfo::udp(100), 200_000),
        Update::Forward
    );
    assert_eq!(t.expire(499_999, 1000), 0);
    assert_eq!(t.expire(500_000, 1000), 1);
    assert_eq!(d.inactive_conns(), 0);
}

#[test]
fn duplicate_insert_is_refused_and_counted() {
    let t = table(100);
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let c = conn(TCP, 1, &d);
    t.insert(c.clone(), PacketInfo::tcp(SYN, 60), 0).unwrap();
    assert_eq!(
        t.insert(c.clone(), PacketInfo::tcp(SYN, 60), 0)
            .unwrap_err(),
        InsertError::Exists
    );
    assert_eq!(t.stats().refused_exists, 1);
    assert_eq!(d.inactive_conns(), 1);
}

#[test]
fn may_create_rules() {
    let k = Knobs::default();
    assert!(uvs_conntrack::may_create(TCP, &PacketInfo::tcp(SYN, 0), &k));
    assert!(!uvs_conntrack::may_create(
        TCP,
        &PacketInfo::tcp(SYN | RST, 0),
        &k
    ));
    assert!(!uvs_conntrack::may_create(
        TCP,
        &PacketInfo::tcp(ACK, 0),
        &k
    ));
    let sloppy = Knobs {
        sloppy_tcp: true,
        ..k
    };
    assert!(uvs_conntrack::may_create(
        TCP,
        &PacketInfo::tcp(ACK, 0),
        &sloppy
    ));
    assert!(!uvs_conntrack::may_create(
        TCP,
        &PacketInfo::tcp(ACK | RST, 0),
        &sloppy
    ));
    assert!(uvs_conntrack::may_create(UDP, &PacketInfo::udp(0), &k));
    assert!(uvs_conntrack::may_create(SCTP, &PacketInfo::sctp(1, 0), &k));
    assert!(!uvs_conntrack::may_create(
        SCTP,
        &PacketInfo::sctp(0, 0),
        &k
    ));
}

#[test]
fn ipv6_connections() {
    let t = table(100);
    let d = std::sync::Arc::new(uvs_conntrack::Dest::new(
        ip("2001:db8:2::11"),
        80,
        1,
        FwdMethod::Masq,
    ));
    let c = uvs_conntrack::NewConn {
        proto: TCP,
        caddr: ip("2001:db8:1::1"),
        cport: 5000,
        vaddr: ip("2001:db8::10"),
        vport: 80,
        daddr: d.addr,
        dport: 80,
        dest: d.clone(),
        fwd: FwdMethod::Masq,
    };
    t.insert(c.clone(), PacketInfo::tcp(SYN, 80), 0).unwrap();
    assert_eq!(t.lookup(&req(&c)).unwrap().1, Dir::In);
    assert_eq!(t.lookup(&reply(&c)).unwrap().1, Dir::Out);
    let mut mixed = c.clone();
    mixed.daddr = ip("203.0.113.1");
    assert_eq!(
        t.insert(mixed, PacketInfo::tcp(SYN, 80), 0).unwrap_err(),
        InsertError::FamilyMismatch
    );
    assert_eq!(t.stats().refused_invalid, 1);
}

#[test]
fn lookup_update_matches_lookup_then_update() {
    let t1 = table(100);
    let t2 = table(100);
    let d1 = dest("203.0.113.11", 8080, FwdMethod::Masq);
    let d2 = dest("203.0.113.11", 8080, FwdMethod::Masq);
    let c1 = conn(TCP, 40100, &d1);
    let c2 = conn(TCP, 40100, &d2);
    t1.insert(c1.clone(), PacketInfo::tcp(SYN, 60), 0).unwrap();
    t2.insert(c2.clone(), PacketInfo::tcp(SYN, 60), 0).unwrap();
    let script = [
        (reply(&c1), SYN | ACK),
        (req(&c1), ACK),
        (req(&c1), FIN | ACK),
        (reply(&c1), FIN | ACK),
        (req(&c1), SYN),
    ];
    for (i, (tu, f)) in script.iter().enumerate() {
        let now = i as u64 + 1;
        let a = t1
            .lookup(tu)
            .map(|(h, dir)| (dir, t1.update(&h, dir, PacketInfo::tcp(*f, 60), now)));
        let b = t2.lookup_update(tu, PacketInfo::tcp(*f, 60), now);
        assert_eq!(a, b.as_ref().map(|(_, dir, u)| (*dir, *u)), "step {i}");
        if let (Some((h, _, Update::Forward)), Some((h1, _))) = (&b, t1.lookup(tu)) {
            assert_eq!(h.state(), h1.state(), "step {i}");
        }
        assert_eq!(
            (d1.active_conns(), d1.inactive_conns()),
            (d2.active_conns(), d2.inactive_conns())
        );
    }
    // The last SYN hit TIME_WAIT: rescheduled, entry gone in both.
    assert!(t1.is_empty() && t2.is_empty());
    assert!(t2
        .lookup_update(&req(&c2), PacketInfo::tcp(ACK, 60), 9)
        .is_none());
}

#[test]
fn sctp_association_through_the_table() {
    use uvs_conntrack::proto::sctp::chunk;
    use uvs_conntrack::SctpState;
    let t = table(100);
    let d = dest("203.0.113.11", 3868, FwdMethod::Masq);
    let c = conn(SCTP, 3868, &d);
    let h = t
        .insert(c.clone(), PacketInfo::sctp(chunk::INIT, 100), 0)
        .unwrap();
    assert_eq!(h.state(), ConnState::Sctp(SctpState::Init1));
    let steps = [
        (reply(&c), chunk::INIT_ACK, SctpState::CookieSent),
        (req(&c), chunk::COOKIE_ECHO, SctpState::CookieReplied),
        (reply(&c), chunk::COOKIE_ACK, SctpState::Established),
        (req(&c), chunk::DATA, SctpState::Established),
        (req(&c), chunk::SHUTDOWN, SctpState::ShutdownReceived),
        (reply(&c), chunk::SHUTDOWN_ACK, SctpState::ShutdownAckSent),
        (req(&c), chunk::SHUTDOWN_COMPLETE, SctpState::Closed),
    ];
    for (i, (tu, ch, want)) in steps.into_iter().enumerate() {
        let (h, _, u) = t
            .lookup_update(&tu, PacketInfo::sctp(ch, 100), i as u64 + 1)
            .unwrap();
        assert_eq!(u, Update::Forward);
        assert_eq!(h.state(), ConnState::Sctp(want), "step {i}");
        if want == SctpState::Established {
            assert_eq!(d.active_conns(), 1);
        }
    }
    assert_eq!((d.active_conns(), d.inactive_conns()), (0, 1));
    // A new INIT on a CLOSED association is rescheduled.
    let (_, _, u) = t
        .lookup_update(&req(&c), PacketInfo::sctp(chunk::INIT, 100), 20)
        .unwrap();
    assert_eq!(u, Update::Reschedule);
    assert_eq!(d.inactive_conns(), 0);
}

#[test]
fn remove_unbinds() {
    let t = table(100);
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let h = t
        .insert(conn(TCP, 1, &d), PacketInfo::tcp(SYN, 60), 0)
        .unwrap();
    assert!(t.remove(&h));
    assert!(!t.remove(&h));
    assert!(t.is_empty());
    assert_eq!(d.inactive_conns(), 0);
}

#[test]
fn add_moves_the_dest_in_and_hands_back_no_reference() {
    let t = table(1000);
    let d = dest("203.0.113.11", 8080, FwdMethod::Masq);
    let c = conn(TCP, 40001, &d);
    let before = std::sync::Arc::strong_count(&d);
    t.add(c.clone(), PacketInfo::tcp(SYN, 60), 0).unwrap();
    // `c` (kept by the test) and the entry hold one reference each; the
    // `NewConn` given to `add` was moved into the entry.
    assert_eq!(std::sync::Arc::strong_count(&d), before + 1);
    assert_eq!((d.active_conns(), d.inactive_conns()), (0, 1));
    assert_eq!(
        t.add(c.clone(), PacketInfo::tcp(SYN, 60), 1),
        Err(InsertError::Exists)
    );
    let (h, dir) = t.lookup(&reply(&c)).unwrap();
    assert_eq!((dir, h.daddr(), h.dport()), (Dir::Out, d.addr, 8080));
    drop(h);
    // The per-packet path (lookup_update) sees the same connection.
    let (hit, dir, u) = t
        .lookup_update(&req(&c), PacketInfo::tcp(ACK, 52), 2)
        .unwrap();
    assert_eq!((dir, u, hit.daddr()), (Dir::In, Update::Forward, d.addr));
    assert_eq!(t.len(), 1);
}
