use std::net::IpAddr;
use std::sync::Arc;

use super::*;
use crate::config::{Config, Knobs};
use crate::proto::tcp::{self, flags, TcpDir, TcpState, ALL_TCP_STATES};
use crate::table::{NewConn, PacketInfo, Update};
use uvs_sched::{Dest, FwdMethod};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn table() -> Table {
    Table::new(Config {
        max_entries: 1000,
        shards: 4,
        seed: 7,
        ..Config::default()
    })
}

fn conn(proto: u8, fwd: FwdMethod) -> (NewConn, Tuple, Tuple) {
    let d = Arc::new(Dest::new(ip("203.0.113.5"), 8080, 1, fwd));
    let c = NewConn {
        proto,
        caddr: ip("198.51.100.1"),
        cport: 40000,
        vaddr: ip("192.0.2.10"),
        vport: 80,
        daddr: d.addr,
        dport: d.port,
        dest: d,
        fwd,
    };
    let req = Tuple {
        proto,
        src: c.caddr,
        sport: c.cport,
        dst: c.vaddr,
        dport: c.vport,
    };
    let rep = Tuple {
        proto,
        src: c.daddr,
        sport: c.dport,
        dst: c.caddr,
        dport: c.cport,
    };
    (c, req, rep)
}

const ACK: u8 = flags::ACK;

/// A NAT TCP connection taken through its handshake to ESTABLISHED.
fn established(t: &Table) -> (Tuple, Tuple) {
    let (c, req, rep) = conn(6, FwdMethod::Masq);
    t.insert(c, PacketInfo::tcp(flags::SYN, 60), 0).unwrap();
    t.lookup_update(&rep, PacketInfo::tcp(flags::SYN | ACK, 60), 1);
    t.lookup_update(&req, PacketInfo::tcp(ACK, 52), 2);
    // Past the low-packet counts (LOW_PACKETS) that `drop_entry` judges
    // by: 3 + 6 = 9 packets.
    for _ in 0..3 {
        t.lookup_update(&req, PacketInfo::tcp(ACK, 52), 2);
        t.lookup_update(&rep, PacketInfo::tcp(ACK, 52), 2);
    }
    (req, rep)
}

#[test]
fn an_ack_only_segment_keeps_established_everywhere() {
    for table in [&tcp::TCP_TABLE, &tcp::TCP_TABLE_SECURE] {
        for d in [TcpDir::Input, TcpDir::Output, TcpDir::InputOnly] {
            for f in [ACK, ACK | flags::PSH, ACK | 0x20 | 0x40 | 0x80] {
                let s = tcp::next_state(table, d, TcpState::Established, f);
                assert_eq!(s, TcpState::Established, "{d:?} {f:#x}");
            }
        }
    }
    assert!(ALL_TCP_STATES.contains(&TcpState::Established));
}

#[test]
fn a_steady_connection_gets_a_ticket_that_a_fin_ends() {
    let t = table();
    let (req, rep) = established(&t);
    let (tk, interval) = t.steady_ticket(&req, Dir::In).expect("steady request");
    let (tr, _) = t.steady_ticket(&rep, Dir::Out).expect("steady reply");
    assert_eq!(interval, REFRESH_MAX_MS);
    assert!(tk.valid() && tr.valid());
    // Packets that change nothing keep both valid.
    for now in 3..10 {
        t.lookup_update(&req, PacketInfo::tcp(ACK, 100), now);
        t.lookup_update(&rep, PacketInfo::tcp(ACK | flags::PSH, 100), now);
    }
    assert!(tk.valid() && tr.valid());
    // A FIN from the server moves the state: both tickets end.
    t.lookup_update(&rep, PacketInfo::tcp(flags::FIN | ACK, 52), 11);
    assert!(!tk.valid() && !tr.valid());
    assert!(t.steady_ticket(&req, Dir::In).is_none());
}

#[test]
fn removal_expiry_and_reuse_end_a_ticket() {
    let t = table();
    let (req, _) = established(&t);
    let (tk, _) = t.steady_ticket(&req, Dir::In).unwrap();
    let (h, _) = t.lookup(&req).unwrap();
    assert!(t.remove(&h));
    assert!(!tk.valid());
    // The slot is reused by the next connection: the old ticket stays
    // invalid, a new one is valid.
    let (req, _) = established(&t);
    assert!(!tk.valid());
    // What the old ticket's holder forwarded is not the new connection's.
    let pkts = || {
        let mut n = 0;
        t.for_each_entry(3, |e| n = e.pkts);
        n
    };
    let before = pkts();
    t.credit(&tk, &req, Dir::In, 5, 500);
    assert_eq!(pkts(), before);
    let (tk, _) = t.steady_ticket(&req, Dir::In).unwrap();
    assert!(tk.valid());
    t.credit(&tk, &req, Dir::In, 5, 500);
    assert_eq!(pkts(), before + 5);
    // Expiry by the sweep.
    let far = 2 + u64::from(t.timeouts().tcp[TcpState::Established as usize]) + 1;
    t.expire(far, 1 << 20);
    assert!(t.lookup(&req).is_none());
    assert!(!tk.valid());
}

#[test]
fn handshakes_closing_states_and_templates_get_none() {
    let t = table();
    let (c, req, rep) = conn(6, FwdMethod::Masq);
    t.insert(c, PacketInfo::tcp(flags::SYN, 60), 0).unwrap();
    assert!(t.steady_ticket(&req, Dir::In).is_none());
    let (hit, dir, _) = t
        .lookup_update(&rep, PacketInfo::tcp(flags::SYN | ACK, 60), 1)
        .unwrap();
    assert!(!hit.steady(dir));
    assert!(t.steady_ticket(&rep, Dir::Out).is_none());
    // The server's ACKs on a handshake the client never confirmed.
    let (hit, dir, _) = t.lookup_update(&rep, PacketInfo::tcp(ACK, 60), 2).unwrap();
    assert!(!hit.steady(dir));
    let (hit, dir, _) = t.lookup_update(&req, PacketInfo::tcp(ACK, 60), 3).unwrap();
    assert!(hit.steady(dir));
    // Established, but of 4 packets: no ticket until it has more than
    // LOW_PACKETS (eviction and drop_entry judge it by its count, which a
    // ticket holder's packets reach late).
    assert!(t.steady_ticket(&req, Dir::In).is_none());
    for n in 5..=9 {
        t.lookup_update(&req, PacketInfo::tcp(ACK, 60), 3);
        assert_eq!(
            t.steady_ticket(&req, Dir::In).is_some(),
            n > 8,
            "{n} packets"
        );
    }
    // SCTP stays on the table's path.
    let (c, req, _) = conn(132, FwdMethod::Masq);
    t.insert(c, PacketInfo::sctp(1, 60), 0).unwrap();
    assert!(t.steady_ticket(&req, Dir::In).is_none());
}

#[test]
fn udp_and_dr_tickets_and_credit() {
    let t = table();
    let (c, req, _) = conn(17, FwdMethod::Masq);
    t.insert(c, PacketInfo::udp(100), 0).unwrap();
    assert!(t.steady_ticket(&req, Dir::In).is_none(), "1 datagram");
    for _ in 0..8 {
        t.lookup_update(&req, PacketInfo::udp(100), 1);
    }
    let (tk, interval) = t.steady_ticket(&req, Dir::In).unwrap();
    assert_eq!(
        interval,
        REFRESH_MAX_MS.min(u64::from(t.timeouts().udp) / 16)
    );
    t.credit(&tk, &req, Dir::In, 5, 500);
    let mut seen = None;
    t.for_each_entry(0, |e| seen = Some((e.pkts, e.bytes)));
    assert_eq!(seen, Some((14, 1400)));
    // A DR connection's requests (NOOUTPUT) are steady once confirmed.
    let t = table();
    let (c, req, _) = conn(6, FwdMethod::Route);
    t.insert(c, PacketInfo::tcp(flags::SYN, 60), 0).unwrap();
    assert!(t.steady_ticket(&req, Dir::In).is_none());
    let (_, _, u) = t.lookup_update(&req, PacketInfo::tcp(ACK, 52), 1).unwrap();
    assert_eq!(u, Update::Forward);
    // SYN + ACK: what a blind-ACK flood makes; eviction takes such
    // entries first, so no ticket before more than LOW_PACKETS.
    assert!(t.steady_ticket(&req, Dir::In).is_none());
    for _ in 0..7 {
        t.lookup_update(&req, PacketInfo::tcp(ACK, 52), 1);
    }
    assert!(t.steady_ticket(&req, Dir::In).is_some());
}

#[test]
fn sync_master_is_read_from_the_knobs() {
    let t = table();
    assert!(!t.sync_master());
    t.set_knobs(&Knobs {
        sync_master: true,
        ..t.knobs()
    });
    assert!(t.sync_master());
}

#[test]
fn credit_ignores_another_table_and_a_shrunk_slab() {
    let t = table();
    let (req, _) = established(&t);
    let (tk, _) = t.steady_ticket(&req, Dir::In).unwrap();
    // Another table with the same connection: not the ticket's.
    let other = table();
    let (req2, _) = established(&other);
    other.credit(&tk, &req2, Dir::In, 5, 500);
    let mut n = 0;
    other.for_each_entry(3, |e| n = e.pkts);
    assert_eq!(n, 9);
    // The slab shrinks after the connection expires: no panic, no credit.
    let far = 2 + u64::from(t.timeouts().tcp[TcpState::Established as usize]) + 1;
    for _ in 0..4 {
        t.expire(far, 1 << 20);
    }
    t.credit(&tk, &req, Dir::In, 5, 500);
    assert!(t.is_empty());
}
