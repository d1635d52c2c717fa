//! The kernel's flood defence, driven by `Table::defense_tick`: the
//! automatic modes engage on a short table or short host memory,
//! `drop_entry` removes handshake entries and idle low-packet ones,
//! `drop_packet` drops one in *rate* new packets, and a full table evicts
//! the lowest-packet ESTABLISHED entry when nothing cheaper exists.

mod common;
use common::*;

use std::net::{IpAddr, Ipv4Addr};

use uvs_conntrack::proto::tcp::flags::{ACK, PSH, SYN};
use uvs_conntrack::{
    Config, ConnState, Defense, Dir, FwdMethod, Knobs, NewConn, PacketInfo, Table, TcpState,
};

fn capped(max: usize, knobs: Knobs, idle_ms: u32) -> Table {
    Table::new(Config {
        max_entries: max,
        shards: 8,
        seed: 3,
        defense_threshold_pct: 75,
        todrop_idle_ms: idle_ms,
        knobs,
        ..Config::default()
    })
}

/// A spoofed client `i`: SYN then a blind ACK (DR: 2 packets, ESTABLISHED).
fn spoofed(i: u32, d: &std::sync::Arc<uvs_conntrack::Dest>) -> NewConn {
    let mut c = conn(TCP, (i & 0xffff) as u16, d);
    c.caddr = IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(100, 64, 0, 0)) + (i >> 16),
    ));
    c
}

fn syn_ack(t: &Table, c: &NewConn, now: u64) -> bool {
    let Ok(h) = t.insert(c.clone(), PacketInfo::tcp(SYN, 60), now) else {
        return false;
    };
    t.update(&h, Dir::In, PacketInfo::tcp(ACK, 52), now);
    true
}

/// A legitimate DR connection: handshake and `n` data segments.
fn legit(t: &Table, c: &NewConn, n: u32, now: u64) -> bool {
    if !syn_ack(t, c, now) {
        return false;
    }
    let (h, _) = t.lookup(&req(c)).unwrap();
    for _ in 0..n {
        t.update(&h, Dir::In, PacketInfo::tcp(ACK | PSH, 500), now);
    }
    true
}

fn state(t: &Table, c: &NewConn) -> Option<ConnState> {
    t.lookup(&req(c)).map(|(h, _)| h.state())
}

#[test]
fn automatic_modes_engage_when_the_table_or_the_host_is_short() {
    let k = Knobs {
        secure_tcp: Defense::Auto,
        drop_entry: Defense::Auto,
        drop_packet: Defense::Auto,
        ..Knobs::default()
    };
    let t = capped(100, k, 60_000);
    let s = t.defense_tick(0, Some(1 << 20));
    assert!(!s.short_of_memory && !s.secure_tcp && !s.drop_entry && !s.drop_packet);
    // The host short of memory: 1024 pages wanted, 1000 left → 1 in 42.
    let s = t.defense_tick(0, Some(1000));
    assert!(s.short_of_memory && s.secure_tcp && s.drop_entry && s.drop_packet);
    assert_eq!(s.drop_rate, 1024 / 24);
    assert_eq!(t.defense_status().drop_rate, 42);
    // Room again: everything off, no packet dropped.
    let s = t.defense_tick(1, None);
    assert!(!s.short_of_memory && !s.drop_packet && s.drop_rate == 0);
    assert!(!t.drop_new_packet());
    // The table 80% full (threshold 75%: 25 entries of reserve, 20 free).
    let d = dest("203.0.113.11", 80, FwdMethod::Route);
    for i in 0..80 {
        legit(&t, &spoofed(i, &d), 20, 2);
    }
    let s = t.defense_tick(3, None);
    assert!(s.short_of_memory && s.drop_entry);
    assert_eq!(s.drop_rate, 25 / 5);
    // Mode 3 uses am_droprate; mode 0 never engages.
    t.set_knobs(&Knobs {
        drop_packet: Defense::Always,
        drop_entry: Defense::Off,
        secure_tcp: Defense::Off,
        ..Knobs::default()
    });
    t.set_am_droprate(4);
    let s = t.defense_tick(4, Some(1 << 20));
    assert!(!s.drop_entry && !s.secure_tcp && s.drop_rate == 4);
    // One in four new packets dropped, on each thread.
    let dropped = (0..400).filter(|_| t.drop_new_packet()).count();
    assert_eq!(dropped, 100);
}

#[test]
fn drop_entry_removes_handshakes_and_idle_low_packet_entries_only() {
    let t = capped(
        10_000,
        Knobs {
            drop_entry: Defense::Always,
            ..Knobs::default()
        },
        60_000,
    );
    let d = dest("203.0.113.11", 80, FwdMethod::Route);
    let busy = conn(TCP, 1, &d);
    assert!(legit(&t, &busy, 20, 0));
    let quiet = conn(TCP, 2, &d);
    assert!(legit(&t, &quiet, 1, 50_000)); // 3 packets, but not idle long
    let half_open = conn(TCP, 3, &d);
    t.insert(half_open.clone(), PacketInfo::tcp(SYN, 60), 0)
        .unwrap();
    let flood: Vec<_> = (100..1100).map(|i| spoofed(i, &d)).collect();
    for c in &flood {
        assert!(syn_ack(&t, c, 0));
    }
    // Half-open entries go once a second old; ESTABLISHED ones not before
    // 60 s idle.
    assert_eq!(t.defense_tick(999, None).dropped_now, 0);
    let s = t.defense_tick(1_000, None);
    assert!(s.drop_entry);
    assert_eq!(s.dropped_now, 1);
    assert_eq!(state(&t, &half_open), None);
    assert_eq!(t.len(), 1002);
    // 59 s idle: kept; 60 s: every 2-packet entry goes in one pass.
    t.defense_tick(59_000, None);
    assert_eq!(
        flood.iter().filter(|c| state(&t, c).is_some()).count(),
        1000
    );
    t.defense_tick(60_000, None);
    assert_eq!(flood.iter().filter(|c| state(&t, c).is_some()).count(), 0);
    assert_eq!(
        state(&t, &quiet),
        Some(ConnState::Tcp(TcpState::Established))
    );
    // 3..8 packets: one in n per pass (here 4 packets: a quarter each;
    // `quiet`, idle 70 s with 3 packets, is the first of its count).
    let few: Vec<_> = (2000..2400).map(|i| spoofed(i, &d)).collect();
    for c in &few {
        assert!(legit(&t, c, 2, 60_000));
    }
    t.defense_tick(120_000, None);
    let left = few.iter().filter(|c| state(&t, c).is_some()).count();
    assert_eq!(left, 300);
    assert_eq!(
        state(&t, &busy),
        Some(ConnState::Tcp(TcpState::Established))
    );
    assert_eq!(state(&t, &quiet), None);
    assert_eq!(t.stats().dropped_entry, 1102);
    assert_eq!(t.defense_status().dropped_total, 1102);
    assert_eq!((d.active_conns() + d.inactive_conns()) as usize, t.len());
}

#[test]
fn a_full_table_evicts_the_flood_not_the_busy_connections() {
    // SYN + blind ACK floods of a DR service make ESTABLISHED entries of 2
    // packets: a full table gives them up for new clients.
    let t = capped(2_000, Knobs::default(), 60_000);
    let d = dest("203.0.113.11", 80, FwdMethod::Route);
    let old = conn(TCP, 1, &d);
    assert!(legit(&t, &old, 12, 0));
    for i in 0..50_000 {
        syn_ack(&t, &spoofed(i + 10, &d), 1);
    }
    assert_eq!(t.len(), 2_000);
    let mut ok = 0;
    for p in 0..100 {
        let mut c = conn(TCP, 2000 + p, &d);
        c.caddr = ip("203.0.113.200");
        ok += legit(&t, &c, 3, 2) as u32;
    }
    assert_eq!(ok, 100);
    assert_eq!(state(&t, &old), Some(ConnState::Tcp(TcpState::Established)));
    // A real client's handshake in flight outlives the flood's inserts.
    let mut half = conn(TCP, 3000, &d);
    half.caddr = ip("203.0.113.201");
    t.insert(half.clone(), PacketInfo::tcp(SYN, 60), 2).unwrap();
    for i in 60_000..61_000 {
        syn_ack(&t, &spoofed(i, &d), 2);
    }
    assert_eq!(state(&t, &half), Some(ConnState::Tcp(TcpState::SynRecv)));
    let s = t.stats();
    assert!(s.evicted_established > 40_000, "{s:?}");
    assert_eq!(s.refused_full, 0);
    // With drop_entry 0 the same table refuses instead.
    t.set_knobs(&Knobs {
        drop_entry: Defense::Off,
        ..Knobs::default()
    });
    assert!(!syn_ack(&t, &spoofed(99_999, &d), 3));
    assert_eq!(t.stats().refused_full, 1);
}

#[test]
fn a_servers_answer_to_a_duplicate_syn_does_not_establish() {
    use uvs_conntrack::proto::tcp::flags::{ACK, SYN};
    for secure in [Defense::Off, Defense::Always] {
        let t = capped(
            100,
            Knobs {
                secure_tcp: secure,
                ..Knobs::default()
            },
            60_000,
        );
        let d = dest("203.0.113.11", 80, FwdMethod::Masq);
        // Spoofed: SYN, the server's SYN+ACK (never answered), the SYN
        // again with another sequence number, the server's challenge ACK.
        let c = conn(TCP, 7, &d);
        let h = t.insert(c.clone(), PacketInfo::tcp(SYN, 60), 0).unwrap();
        t.update(&h, Dir::Out, PacketInfo::tcp(SYN | ACK, 60), 1);
        t.update(&h, Dir::In, PacketInfo::tcp(SYN, 60), 2);
        t.update(&h, Dir::Out, PacketInfo::tcp(ACK, 52), 3);
        let s = state(&t, &c).unwrap();
        assert_ne!(s, ConnState::Tcp(TcpState::Established), "{secure:?}");
        assert_eq!(d.active_conns(), 0);
        // A real client: its ACK, then the server's data, establish.
        let real = conn(TCP, 8, &d);
        let h = t.insert(real.clone(), PacketInfo::tcp(SYN, 60), 0).unwrap();
        t.update(&h, Dir::Out, PacketInfo::tcp(SYN | ACK, 60), 1);
        t.update(&h, Dir::In, PacketInfo::tcp(ACK, 52), 2);
        t.update(&h, Dir::Out, PacketInfo::tcp(ACK | PSH, 500), 3);
        assert_eq!(
            state(&t, &real),
            Some(ConnState::Tcp(TcpState::Established)),
            "{secure:?}"
        );
    }
}

#[test]
fn memory_is_given_back_after_a_flood() {
    let t = Table::new(Config {
        max_entries: 200_000,
        shards: 16,
        seed: 5,
        ..Config::default()
    });
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let keep = conn(TCP, 1, &d);
    assert!(legit(&t, &keep, 10, 0));
    let base = t.heap_bytes();
    for i in 0..100_000 {
        let _ = t.insert(spoofed(i + 10, &d), PacketInfo::tcp(SYN, 60), 0);
    }
    let full = t.heap_bytes();
    assert!(full > base + 100_000 * 48, "{base} → {full}");
    // SYN_RECV lasts 60 s; the kept connection is refreshed meanwhile.
    let (h, _) = t.lookup(&req(&keep)).unwrap();
    t.update(&h, Dir::In, PacketInfo::tcp(ACK, 52), 61_000);
    for _ in 0..40 {
        t.expire(61_000, 1 << 16);
    }
    assert_eq!(t.len(), 1);
    let after = t.heap_bytes();
    assert!(after < base + 64 * 1024, "{base} → {full} → {after}");
    assert_eq!(
        state(&t, &keep),
        Some(ConnState::Tcp(TcpState::Established))
    );
    // And the table fills again as before.
    for i in 0..1000 {
        t.insert(spoofed(i + 10, &d), PacketInfo::tcp(SYN, 60), 62_000)
            .unwrap();
    }
    assert_eq!(t.len(), 1001);
    assert_eq!(
        state(&t, &keep),
        Some(ConnState::Tcp(TcpState::Established))
    );
}
