//! The sync daemon's side of the table: a master marks what to send, a
//! backup installs what it receives.

mod common;
use common::*;

use uvs_conntrack::proto::tcp::flags::{ACK, FIN, SYN};
use uvs_conntrack::{
    ConnInfo, ConnState, FwdMethod, Knobs, ListCursor, PacketInfo, Synced, SyncedTemplate,
    TcpState, TemplateKey,
};

fn master() -> uvs_conntrack::Table {
    let t = table(1000);
    t.set_knobs(&Knobs {
        sync_master: true,
        ..Knobs::default()
    });
    t
}

fn collect(t: &uvs_conntrack::Table, now: u64) -> Vec<ConnInfo> {
    let mut out = Vec::new();
    let mut cur = Some(ListCursor::default());
    while let Some(c) = cur {
        cur = t.sync_page(c, 4096, now, &mut out);
    }
    out
}

#[test]
fn a_master_marks_the_third_packet_then_every_fiftieth_and_closing_states() {
    let t = master();
    let d = dest("203.0.113.11", 8080, FwdMethod::Masq);
    let c = conn(TCP, 40000, &d);
    t.insert(c.clone(), PacketInfo::tcp(SYN, 60), 0).unwrap();
    assert!(collect(&t, 1).is_empty(), "a SYN is not synced");
    let (h, dir) = t.lookup(&reply(&c)).unwrap();
    t.update(&h, dir, PacketInfo::tcp(SYN | ACK, 60), 2);
    assert!(collect(&t, 3).is_empty(), "SYN_RECV is not synced");
    let (h, dir) = t.lookup(&req(&c)).unwrap();
    t.update(&h, dir, PacketInfo::tcp(ACK, 52), 4);
    let got = collect(&t, 5);
    assert_eq!(got.len(), 1, "the 3rd packet, ESTABLISHED");
    assert_eq!(got[0].state, ConnState::Tcp(TcpState::Established));
    assert_eq!(got[0].daddr, d.addr);
    assert!(collect(&t, 6).is_empty(), "taken once");
    // Packets 4..52 send nothing; packet 53 (50 later) again.
    for i in 4..53u64 {
        t.update(&h, dir, PacketInfo::tcp(ACK, 52), 10 + i);
        let n = collect(&t, 10 + i).len();
        assert_eq!(n, 0, "packet {i}");
    }
    t.update(&h, dir, PacketInfo::tcp(ACK, 52), 100);
    assert_eq!(collect(&t, 100).len(), 1, "packet 53");
    // A FIN: into CLOSE_WAIT, sent at once.
    t.update(&h, dir, PacketInfo::tcp(FIN | ACK, 52), 101);
    let got = collect(&t, 102);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].state, ConnState::Tcp(TcpState::CloseWait));
}

#[test]
fn nothing_is_marked_without_the_master_knob() {
    let t = table(1000);
    let d = dest("203.0.113.11", 8080, FwdMethod::Route);
    let c = conn(UDP, 5000, &d);
    t.insert(c.clone(), PacketInfo::udp(60), 0).unwrap();
    let (h, dir) = t.lookup(&req(&c)).unwrap();
    for i in 0..10 {
        t.update(&h, dir, PacketInfo::udp(60), i);
    }
    assert!(collect(&t, 20).is_empty());
}

#[test]
fn a_backup_installs_updates_and_replaces() {
    let t = table(1000);
    let d1 = dest("203.0.113.11", 8080, FwdMethod::Masq);
    let d2 = dest("203.0.113.12", 8080, FwdMethod::Masq);
    let est = ConnState::Tcp(TcpState::Established);
    let c = conn(TCP, 40000, &d1);
    t.install_synced(
        Synced {
            conn: c.clone(),
            state: est,
            timeout_ms: Some(900_000),
        },
        0,
    )
    .unwrap();
    let (h, _) = t.lookup(&req(&c)).unwrap();
    assert_eq!(h.state(), est);
    assert_eq!((d1.active_conns(), d1.inactive_conns()), (1, 0));
    // NAT: the reply tuple finds it too.
    assert!(t.lookup(&reply(&c)).is_some());
    // The timeout is the sender's: gone after 900 s, not before.
    assert_eq!(t.expire(899_000, 10_000), 0);

    // An update to CLOSE_WAIT: one entry, now inactive, state's timeout.
    t.install_synced(
        Synced {
            conn: c.clone(),
            state: ConnState::Tcp(TcpState::CloseWait),
            timeout_ms: None,
        },
        1_000,
    )
    .unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!((d1.active_conns(), d1.inactive_conns()), (0, 1));

    // The tuple rescheduled to another server on the master: replaced.
    let c2 = conn(TCP, 40000, &d2);
    t.install_synced(
        Synced {
            conn: c2.clone(),
            state: est,
            timeout_ms: Some(60_000),
        },
        2_000,
    )
    .unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t.lookup(&req(&c2)).unwrap().0.daddr(), d2.addr);
    assert_eq!((d1.active_conns(), d1.inactive_conns()), (0, 0));
    assert_eq!(d2.active_conns(), 1);

    // An inactive note about the old server changes nothing.
    t.install_synced(
        Synced {
            conn: conn(TCP, 40000, &d1),
            state: ConnState::Tcp(TcpState::TimeWait),
            timeout_ms: None,
        },
        3_000,
    )
    .unwrap();
    assert_eq!(t.lookup(&req(&c2)).unwrap().0.daddr(), d2.addr);
}

#[test]
fn kernel_state_numbers_map_both_ways() {
    for n in 0..11u16 {
        let s = ConnState::from_number(TCP, n).unwrap();
        assert_eq!(s.number(), n);
    }
    assert_eq!(ConnState::from_number(TCP, 11), None);
    assert_eq!(ConnState::from_number(132, 13).unwrap().number(), 13);
    assert_eq!(ConnState::from_number(132, 14), None);
    assert_eq!(ConnState::from_number(UDP, 0), Some(ConnState::Udp));
    assert_eq!(ConnState::from_number(UDP, 1), None);
}

fn key(caddr: &str) -> TemplateKey {
    TemplateKey {
        proto: TCP,
        caddr: ip(caddr),
        vaddr: ip("192.0.2.10"),
        vport: 80,
        fwmark: 0,
        pe: 0,
    }
}

#[test]
fn a_master_sends_the_template_of_each_synced_connection_once_and_first() {
    let t = master();
    let d = dest("203.0.113.11", 8080, FwdMethod::Masq);
    let tpl = t
        .get_or_insert_template(&key("198.51.100.1"), &d, 8080, FwdMethod::Masq, 300_000, 0)
        .unwrap();
    // Two connections of one client under one template, each past its
    // third packet.
    for cport in [40000, 40001] {
        let c = conn(UDP, cport, &d);
        let h = t
            .insert_controlled(c.clone(), &tpl, PacketInfo::udp(60), 0)
            .unwrap();
        for i in 0..2 {
            t.update(&h, uvs_conntrack::Dir::In, PacketInfo::udp(60), 1 + i);
        }
    }
    // A later bind of the template, 100 s on: the template's own timeout
    // is what travels, not what is left of it.
    let got = collect(&t, 100_000);
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(got[0].template, "the template first");
    assert!(!got[1].template && !got[2].template);
    assert_eq!(got[0].caddr, ip("198.51.100.1"));
    assert_eq!((got[0].cport, got[0].vport, got[0].dport), (0, 80, 8080));
    assert_eq!(got[0].expires_in_ms, 300_000);
    assert_eq!(got[0].controlled, 2);
    assert!(collect(&t, 100_001).is_empty(), "taken once");
}

#[test]
fn a_backup_installs_refreshes_and_replaces_templates() {
    let t = table(1000);
    let d1 = dest("203.0.113.11", 80, FwdMethod::Masq);
    let d2 = dest("203.0.113.12", 80, FwdMethod::Masq);
    let synced = |d: &std::sync::Arc<uvs_conntrack::Dest>, ms| SyncedTemplate {
        key: key("198.51.100.0"),
        dest: d.clone(),
        dport: 80,
        fwd: FwdMethod::Masq,
        timeout_ms: ms,
    };
    t.install_synced_template(synced(&d1, 300_000), 0).unwrap();
    let h = t.lookup_template(&key("198.51.100.0"), 1).unwrap();
    assert_eq!(h.daddr(), d1.addr);
    assert_eq!(d1.persistent_conns(), 1);
    // Refreshed: a second message 200 s on restarts its 300 s.
    t.install_synced_template(synced(&d1, 300_000), 200_000)
        .unwrap();
    assert_eq!(t.len(), 1);
    assert!(t.lookup_template(&key("198.51.100.0"), 450_000).is_some());
    // The master's client moved to d2: ours is replaced.
    t.install_synced_template(synced(&d2, 60_000), 460_000)
        .unwrap();
    let h = t.lookup_template(&key("198.51.100.0"), 461_000).unwrap();
    assert_eq!(h.daddr(), d2.addr);
    assert_eq!((d1.persistent_conns(), d2.persistent_conns()), (0, 1));
    assert_eq!(t.len(), 1);
    // And it expires with the master's timeout.
    assert!(t.lookup_template(&key("198.51.100.0"), 521_001).is_none());
}
