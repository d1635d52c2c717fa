use std::net::IpAddr;

use super::*;
use crate::sys::netlink::RouteEntry;

fn e(table: u32, kind: RouteKind, pfx: &str, oif: u32, metric: u32) -> RouteEntry {
    let (a, l) = pfx.split_once('/').unwrap();
    RouteEntry {
        dst: a.parse().unwrap(),
        len: l.parse().unwrap(),
        table,
        kind,
        oif: Some(oif),
        metric,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn lab() -> Routes {
    use RouteKind::*;
    Routes::from_entries(&[
        e(TABLE_MAIN, Unicast, "0.0.0.0/0", 9, 0),
        e(TABLE_MAIN, Unicast, "198.51.100.0/24", 2, 0),
        e(TABLE_MAIN, Unicast, "203.0.113.0/24", 3, 100),
        e(TABLE_MAIN, Unicast, "203.0.113.0/24", 4, 50),
        e(TABLE_MAIN, Unicast, "203.0.113.128/25", 5, 0),
        e(TABLE_MAIN, Blackhole, "192.0.2.0/28", 0, 0),
        e(TABLE_LOCAL, Local, "203.0.113.1/32", 3, 0),
        e(TABLE_LOCAL, Broadcast, "203.0.113.255/32", 3, 0),
        e(TABLE_LOCAL, Local, "127.0.0.0/8", 1, 0),
        // Shadowed by the local 127.0.0.0/8: never chosen.
        e(TABLE_MAIN, Unicast, "127.1.0.0/16", 7, 0),
        e(TABLE_MAIN, Unicast, "2001:db8::/32", 6, 0),
        e(TABLE_MAIN, Unicast, "2001:db8:5::/64", 3, 0),
        e(TABLE_LOCAL, Local, "2001:db8:5::1/128", 3, 0),
        e(99, Unicast, "198.51.100.7/32", 8, 0),
    ])
}

#[test]
fn longest_prefix_wins_and_the_local_table_first() {
    let r = lab();
    assert_eq!(r.lookup(ip("198.51.100.10")), 2);
    // The lower metric of one prefix; the longer prefix over it.
    assert_eq!(r.lookup(ip("203.0.113.11")), 4);
    assert_eq!(r.lookup(ip("203.0.113.200")), 5);
    // The default route; a blackhole leaves by no interface.
    assert_eq!(r.lookup(ip("8.8.8.8")), 9);
    assert_eq!(r.lookup(ip("192.0.2.3")), 0);
    assert_eq!(r.lookup(ip("192.0.2.30")), 9);
    // Local addresses leave by lo; broadcast by its link.
    assert_eq!(r.lookup(ip("203.0.113.1")), LOOPBACK_IFINDEX);
    assert_eq!(r.lookup(ip("203.0.113.255")), 3);
    assert_eq!(r.lookup(ip("127.1.2.3")), LOOPBACK_IFINDEX);
    // Tables other than main and local are not read.
    assert_eq!(r.lookup(ip("198.51.100.7")), 2);
    // IPv6; no v6 default route: no interface.
    assert_eq!(r.lookup(ip("2001:db8:5::11")), 3);
    assert_eq!(r.lookup(ip("2001:db8:5::1")), LOOPBACK_IFINDEX);
    assert_eq!(r.lookup(ip("2001:db8:6::1")), 6);
    assert_eq!(r.lookup(ip("2001:db9::1")), 0);
    // The memo answers the same, per snapshot.
    assert_eq!(r.oif(ip("203.0.113.11")), 4);
    assert_eq!(r.oif(ip("203.0.113.11")), 4);
    let other = Routes::from_entries(&[e(TABLE_MAIN, RouteKind::Unicast, "0.0.0.0/0", 11, 0)]);
    assert_eq!(other.oif(ip("203.0.113.11")), 11);
    assert_eq!(r.oif(ip("203.0.113.11")), 4);
    assert_eq!(Routes::default().oif(ip("203.0.113.11")), 0);
}

#[test]
fn equal_tables_compare_equal_whatever_their_generation() {
    assert_eq!(lab(), lab());
    assert_ne!(lab(), Routes::default());
}

#[test]
fn a_lookup_costs_a_probe_per_prefix_length_not_per_route() {
    let mk = |n: u32| {
        let v: Vec<_> = (0..n)
            .map(|i| {
                let a = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8));
                e(TABLE_MAIN, RouteKind::Unicast, &format!("{a}/24"), 2, 0)
            })
            .chain([e(TABLE_MAIN, RouteKind::Unicast, "0.0.0.0/0", 3, 0)])
            .collect();
        Routes::from_entries(&v)
    };
    for n in [10, 10_000] {
        let r = mk(n);
        assert_eq!(r.len(), n as usize + 1);
        assert_eq!(r.lookup_probes(ip("10.0.5.9")), (2, 1));
        assert_eq!(r.lookup_probes(ip("192.0.2.1")), (3, 2));
    }
}

#[test]
fn postrouting_routes_the_next_hop_handed_over() {
    let (vip, rs) = (ip("192.0.2.10"), ip("203.0.113.11"));
    set_next_hop(vip, rs);
    assert_eq!(route_to(HookPoint::PostRouting, vip), rs);
    // Another destination, or another hook: the destination itself.
    assert_eq!(route_to(HookPoint::PostRouting, rs), rs);
    assert_eq!(route_to(HookPoint::Forward, vip), vip);
}
