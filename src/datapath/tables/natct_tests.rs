//! The nat connection table: mappings both ways, port clashes, timers,
//! the bound.

use super::*;

fn t(proto: u8, src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
    Tuple {
        proto,
        src: src.parse().unwrap(),
        sport,
        dst: dst.parse().unwrap(),
        dport,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const SYN_ONLY: Seen = Seen { tcp_flags: SYN };
const ACK_ONLY: Seen = Seen { tcp_flags: ACK };

/// A client → VIP flow that IPVS sent to 203.0.113.11:80, masqueraded.
fn masq_pending(cport: u16) -> Pending {
    Pending {
        orig: t(6, "198.51.100.10", cport, "192.0.2.10", 80),
        dnat: None,
        out: t(6, "198.51.100.10", cport, "203.0.113.11", 80),
    }
}

fn masq(pick: PortPick) -> Option<SrcNat> {
    Some(SrcNat {
        addr: ip("203.0.113.1"),
        ports: (61440, 65535),
        pick,
        masq: true,
    })
}

#[test]
fn masquerade_then_later_packets_and_replies_follow() {
    let n = NatTable::default();
    let p = masq_pending(40000);
    let h = n.confirm(&p, masq(PortPick::Keep), SYN_ONLY, 0).unwrap();
    // 40000 is outside the range: a port in it.
    let (a, port) = h.m.snat.unwrap();
    assert_eq!(a, ip("203.0.113.1"));
    assert!((61440..=65535).contains(&port));
    assert_eq!(
        h.m.reply,
        t(6, "203.0.113.11", 80, "203.0.113.1", port),
        "{h:?}"
    );
    // A later packet: the same decision, no walk.
    let later = n.lookup(&p.orig, ACK_ONLY, 10).unwrap();
    assert_eq!((later.dir, later.m), (NatDir::Original, h.m));
    assert_eq!(later.m.src_manip(NatDir::Original), Some((a, port)));
    // The reply: its destination goes back to the client.
    let r = n.lookup(&h.m.reply, ACK_ONLY, 20).unwrap();
    assert_eq!(r.dir, NatDir::Reply);
    assert_eq!(
        r.m.dst_manip(NatDir::Reply),
        Some((ip("198.51.100.10"), 40000))
    );
    assert_eq!(r.m.src_manip(NatDir::Reply), None);
    assert_eq!(n.len(), 2);
}

#[test]
fn keep_port_when_free_and_probe_on_clash() {
    let n = NatTable::default();
    let wide = Some(SrcNat {
        addr: ip("203.0.113.1"),
        ports: (1024, 65535),
        pick: PortPick::Keep,
        masq: false,
    });
    let a = n.confirm(&masq_pending(40000), wide, SYN_ONLY, 0).unwrap();
    assert_eq!(a.m.snat, Some((ip("203.0.113.1"), 40000)));
    // Another client with the same port to the same server: the reply
    // tuple 203.0.113.11:80 → 203.0.113.1:40000 is taken: another port.
    let other = Pending {
        orig: t(6, "198.51.100.20", 40000, "192.0.2.10", 80),
        dnat: None,
        out: t(6, "198.51.100.20", 40000, "203.0.113.11", 80),
    };
    let b = n.confirm(&other, wide, SYN_ONLY, 0).unwrap();
    let (_, pb) = b.m.snat.unwrap();
    assert_ne!(pb, 40000);
    assert_ne!(a.m.reply, b.m.reply);
    // --random-fully never keeps the port, and stays in range.
    let c = n
        .confirm(&masq_pending(40001), masq(PortPick::Fully), SYN_ONLY, 0)
        .unwrap();
    assert!((61440..=65535).contains(&c.m.snat.unwrap().1));
    let d = n
        .confirm(&masq_pending(40002), masq(PortPick::Random), SYN_ONLY, 0)
        .unwrap();
    assert!((61440..=65535).contains(&d.m.snat.unwrap().1));
}

#[test]
fn a_one_port_range_serves_one_flow_per_reply_tuple() {
    let n = NatTable::default();
    let one = Some(SrcNat {
        addr: ip("203.0.113.1"),
        ports: (61440, 61440),
        pick: PortPick::Keep,
        masq: false,
    });
    n.confirm(&masq_pending(1), one, SYN_ONLY, 0).unwrap();
    assert_eq!(
        n.confirm(&masq_pending(2), one, SYN_ONLY, 0),
        Err(NatError::NoPort)
    );
    // Once the first flow has timed out (SYN_SENT, 120 s), the port is free.
    assert!(n.confirm(&masq_pending(2), one, SYN_ONLY, 121_000).is_ok());
}

#[test]
fn dnat_both_ways() {
    let n = NatTable::default();
    let orig = t(6, "198.51.100.10", 40000, "192.0.2.20", 8080);
    let to = (ip("203.0.113.11"), 80);
    let p = Pending {
        orig,
        dnat: Some(to),
        out: t(6, "198.51.100.10", 40000, "203.0.113.11", 80),
    };
    let h = n.confirm(&p, None, SYN_ONLY, 0).unwrap();
    assert_eq!(h.m.dst_manip(NatDir::Original), Some(to));
    assert_eq!(h.m.reply, t(6, "203.0.113.11", 80, "198.51.100.10", 40000));
    let r = n.lookup(&h.m.reply, ACK_ONLY, 1).unwrap();
    assert_eq!(r.m.dst_manip(NatDir::Reply), None);
    assert_eq!(r.m.src_manip(NatDir::Reply), Some((ip("192.0.2.20"), 8080)));
}

#[test]
fn timers_follow_the_protocol() {
    let n = NatTable::default();
    // UDP: 30 s unreplied.
    let u = Pending {
        orig: t(17, "198.51.100.10", 5000, "192.0.2.10", 53),
        dnat: None,
        out: t(17, "198.51.100.10", 5000, "203.0.113.11", 53),
    };
    let h = n.confirm(&u, None, Seen::default(), 0).unwrap();
    assert!(n.lookup(&u.orig, Seen::default(), 30_000).is_some());
    assert!(n.lookup(&u.orig, Seen::default(), 60_001).is_none());
    // Its reply key lingers until reclaimed or looked up: then it is gone.
    assert!(n.lookup(&h.m.reply, Seen::default(), 60_001).is_none());
    // TCP: replied → established (5 days); a RST → 10 s.
    let p = masq_pending(40000);
    let h = n.confirm(&p, None, SYN_ONLY, 0).unwrap();
    n.lookup(&h.m.reply, ACK_ONLY, 1).unwrap();
    assert!(n.lookup(&p.orig, ACK_ONLY, 3_600_000).is_some());
    n.lookup(&p.orig, Seen { tcp_flags: RST }, 3_600_001)
        .unwrap();
    assert!(n.lookup(&p.orig, ACK_ONLY, 3_612_000).is_none());
    // A SYN reopening a closing tuple is a new flow.
    let p = masq_pending(40001);
    n.confirm(&p, None, SYN_ONLY, 0).unwrap();
    n.lookup(
        &p.orig,
        Seen {
            tcp_flags: FIN | ACK,
        },
        1,
    )
    .unwrap();
    assert!(n.lookup(&p.orig, SYN_ONLY, 2).is_none());
}

#[test]
fn the_bound_is_kept_and_expired_entries_make_room() {
    // One key per shard.
    let n = NatTable::new(SHARDS, 1);
    let mut full = 0;
    let mut ok = 0;
    for port in 1..=400u16 {
        match n.confirm(&masq_pending(port), None, Seen::default(), 0) {
            Ok(_) => ok += 1,
            Err(NatError::Full) => full += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(ok > 0 && full > 0, "{ok} {full}");
    assert!(n.len() <= SHARDS);
    // 121 s later (TCP unreplied: 120 s) inserts reclaim the old ones.
    let mut later = 0;
    for port in 1000..=1400u16 {
        if n.confirm(&masq_pending(port), None, Seen::default(), 121_000)
            .is_ok()
        {
            later += 1;
        }
    }
    assert!(later > 0);
    assert!(n.len() <= SHARDS);
}

#[test]
fn a_gone_address_takes_its_masqueraded_flows_only() {
    let n = NatTable::default();
    n.confirm(&masq_pending(40000), masq(PortPick::Keep), SYN_ONLY, 0)
        .unwrap();
    let snat = Some(SrcNat {
        addr: ip("203.0.113.1"),
        ports: (1024, 65535),
        pick: PortPick::Keep,
        masq: false,
    });
    n.confirm(&masq_pending(40001), snat, SYN_ONLY, 0).unwrap();
    assert_eq!(n.len(), 4);
    assert_eq!(n.forget_masq(&[ip("203.0.113.9")]), 0);
    assert_eq!(n.forget_masq(&[ip("203.0.113.1")]), 2);
    assert_eq!(n.len(), 2);
    // The masqueraded flow's next packet is a first packet again.
    assert!(n.lookup(&masq_pending(40000).orig, SYN_ONLY, 1).is_none());
    assert!(n.lookup(&masq_pending(40001).orig, SYN_ONLY, 1).is_some());
}
