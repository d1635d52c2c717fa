use super::events::parse_events;
use super::testns::{self, Lab, A4, A6, B4, B6};
use super::*;
use std::time::{Duration, Instant};

fn fmt_mac(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

fn v(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Polls `neigh_get` until the entry is usable or `limit` passes.
fn wait_usable(nl: &mut Netlink, ifindex: u32, addr: IpAddr, limit: Duration) -> Option<Neigh> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(n) = nl.neigh_get(ifindex, addr).expect("neigh_get") {
            if n.usable_mac().is_some() {
                return Some(n);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn probe_resolves_unknown_neighbour() {
    if !testns::available("probe_resolves_unknown_neighbour") {
        return;
    }
    let lab = Lab::new();
    let va = lab.ifindex(&lab.a, "va");
    let peer_mac = lab.mac(&lab.b, "vb");
    let my_mac = lab.mac(&lab.a, "va");
    for (peer, family) in [(B4, "-4"), (B6, "-6")] {
        let peer_table = || lab.ip(&["-n", &lab.b, family, "neigh", "show", "dev", "vb"]);
        assert_eq!(peer_table().trim(), "", "{peer}: the peer knows nobody yet");
        let (state_before, neigh) = lab.run_in(&lab.a, || {
            let mut nl = Netlink::open().expect("open");
            let before = nl.neigh_get(va, v(peer)).expect("neigh_get");
            nl.neigh_probe(va, v(peer)).expect("probe");
            (
                before,
                wait_usable(&mut nl, va, v(peer), Duration::from_secs(2)),
            )
        });
        assert_eq!(
            state_before, None,
            "{peer}: never contacted, so no entry yet"
        );
        let neigh = neigh.unwrap_or_else(|| panic!("{peer}: not resolved after the probe"));
        assert_eq!(neigh.mac, Some(peer_mac), "{peer}");
        assert_eq!(neigh.state, NudState::REACHABLE, "{peer}");
        // The peer learnt our MAC from the request it answered: the probe
        // really went out on the wire.
        assert!(
            peer_table().contains(&fmt_mac(my_mac)),
            "{peer}: the peer saw no request: {}",
            peer_table()
        );
    }
}

#[test]
fn route_get_connected_gateway_local_and_unreachable() {
    if !testns::available("route_get_connected_gateway_local_and_unreachable") {
        return;
    }
    let lab = Lab::new();
    let va = lab.ifindex(&lab.a, "va");
    let routes = lab.run_in(&lab.a, || {
        let mut nl = Netlink::open().expect("open");
        [
            B4,
            A4,
            "203.0.113.7",
            "192.0.2.1",
            "192.0.2.65",
            "192.0.2.129",
            "192.0.2.200",
            B6,
            A6,
            "2001:db8:2::5",
            "2001:db8:ff::1",
            "2001:db8:99::1",
        ]
        .map(|d| (d, nl.route_get(v(d)).expect("route_get")))
    });
    let get = |d: &str| {
        routes
            .iter()
            .find(|(x, _)| *x == d)
            .map(|(_, r)| r.clone())
            .expect("asked")
    };

    for (dst, src) in [(B4, A4), (B6, A6)] {
        let r = get(dst);
        assert_eq!(r.kind, RouteKind::Unicast, "{dst}");
        assert_eq!(r.oif, Some(va), "{dst}");
        assert_eq!(r.gateway, None, "{dst}: connected");
        assert_eq!(r.prefsrc, Some(v(src)), "{dst}");
        assert_eq!(r.next_hop(v(dst)), v(dst));
    }
    for (dst, gw, src) in [("203.0.113.7", B4, A4), ("2001:db8:2::5", B6, A6)] {
        let r = get(dst);
        assert_eq!(r.kind, RouteKind::Unicast, "{dst}");
        assert_eq!(r.oif, Some(va), "{dst}");
        assert_eq!(r.gateway, Some(v(gw)), "{dst}");
        assert_eq!(r.prefsrc, Some(v(src)), "{dst}");
        assert_eq!(r.next_hop(v(dst)), v(gw));
        assert!(!r.is_local() && !r.is_unreachable());
    }
    for dst in [A4, A6] {
        assert!(get(dst).is_local(), "{dst}: our own address");
    }
    for (dst, kind) in [
        ("192.0.2.1", RouteKind::Unreachable),
        ("192.0.2.65", RouteKind::Blackhole),
        ("192.0.2.129", RouteKind::Prohibit),
        ("192.0.2.200", RouteKind::Unreachable),
        ("2001:db8:ff::1", RouteKind::Unreachable),
        ("2001:db8:99::1", RouteKind::Unreachable),
    ] {
        let r = get(dst);
        assert_eq!(r.kind, kind, "{dst}");
        assert!(r.is_unreachable(), "{dst}");
    }
}

#[test]
fn link_mac_and_mtu_match_ip_link() {
    if !testns::available("link_mac_and_mtu_match_ip_link") {
        return;
    }
    let lab = Lab::new();
    lab.ip(&["-n", &lab.a, "link", "set", "va", "mtu", "1400"]);
    let va = lab.ifindex(&lab.a, "va");
    let (link, mac, mtu, missing) = lab.run_in(&lab.a, || {
        let mut nl = Netlink::open().expect("open");
        (
            nl.link(va).expect("link"),
            link_mac(va).expect("link_mac"),
            link_mtu(va).expect("link_mtu"),
            nl.link(va + 1000).expect_err("no such interface"),
        )
    });
    assert_eq!(link.name, "va");
    assert!(link.up);
    assert_eq!(link.index, va);
    assert_eq!(mac, lab.mac(&lab.a, "va"));
    assert_eq!(link.mac, Some(mac));
    assert_eq!(mtu, 1400);
    assert_eq!(missing.errno(), Some(libc::ENODEV));
}

#[test]
fn neigh_get_reports_permanent_and_incomplete_entries() {
    if !testns::available("neigh_get_reports_permanent_and_incomplete_entries") {
        return;
    }
    let lab = Lab::new();
    let va = lab.ifindex(&lab.a, "va");
    // A hand-made entry (what `ip neigh add` does); and an address nobody
    // answers for, which is INCOMPLETE (later FAILED), never usable.
    lab.ip(&[
        "-n",
        &lab.a,
        "neigh",
        "add",
        "198.51.100.9",
        "lladdr",
        "02:00:00:00:00:09",
        "dev",
        "va",
    ]);
    let silent = v("198.51.100.10");
    let (perm, failed) = lab.run_in(&lab.a, || {
        let mut nl = Netlink::open().expect("open");
        let perm = nl.neigh_get(va, v("198.51.100.9")).expect("neigh_get");
        nl.neigh_probe(va, silent).expect("probe");
        let first = nl.neigh_get(va, silent).expect("neigh_get");
        (perm, first)
    });
    let perm = perm.expect("entry exists");
    assert_eq!(perm.state, NudState::PERMANENT);
    assert_eq!(perm.usable_mac(), Some([2, 0, 0, 0, 0, 9]));
    let failed = failed.expect("the probe created the entry");
    assert_eq!(failed.state, NudState::INCOMPLETE);
    assert_eq!(failed.usable_mac(), None);
}

/// A kernel answer to `ip route get 203.0.113.7` (little-endian host):
/// nlmsghdr, rtmsg, then RTA_TABLE, RTA_DST, RTA_OIF, RTA_PREFSRC,
/// RTA_GATEWAY, RTA_METRICS{RTAX_MTU 1400}, RTA_UID.
#[cfg(target_endian = "little")]
const ROUTE_ANSWER: [u8; 88] = [
    88, 0, 0, 0, 24, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, // hdr: len 88, RTM_NEWROUTE, seq 7
    2, 32, 0, 0, 254, 0, 0, 1, 0, 2, 0, 0, // rtmsg: AF_INET /32 main unicast, CLONED
    8, 0, 15, 0, 254, 0, 0, 0, // RTA_TABLE 254
    8, 0, 1, 0, 203, 0, 113, 7, // RTA_DST
    8, 0, 4, 0, 2, 0, 0, 0, // RTA_OIF 2
    8, 0, 7, 0, 198, 51, 100, 1, // RTA_PREFSRC
    8, 0, 5, 0, 198, 51, 100, 2, // RTA_GATEWAY
    12, 0, 8, 0x80, 8, 0, 2, 0, 120, 5, 0, 0, // RTA_METRICS (nested) { RTAX_MTU 1400 }
    8, 0, 25, 0, 0, 0, 0, 0, // RTA_UID 0
];

/// A kernel answer to a neighbour get: REACHABLE, lladdr 02:00:00:00:00:02.
#[cfg(target_endian = "little")]
const NEIGH_ANSWER: [u8; 48] = [
    48, 0, 0, 0, 28, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, // hdr: RTM_NEWNEIGH, seq 3
    2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 1, // ndmsg: AF_INET, ifindex 2, REACHABLE
    8, 0, 1, 0, 198, 51, 100, 2, // NDA_DST
    10, 0, 2, 0, 2, 0, 0, 0, 0, 2, 0, 0, // NDA_LLADDR (6 bytes + 2 padding)
];

#[cfg(target_endian = "little")]
fn inner(b: &[u8]) -> RouteNetlinkMessage {
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(b)
        .expect("well formed")
        .payload
    {
        NetlinkPayload::InnerMessage(m) => m,
        other => panic!("not an rtnetlink message: {other:?}"),
    }
}

#[cfg(target_endian = "little")]
#[test]
fn parse_route_fixture() {
    let RouteNetlinkMessage::NewRoute(m) = inner(&ROUTE_ANSWER) else {
        panic!("a route");
    };
    assert_eq!(
        route_of(&m),
        Route {
            kind: RouteKind::Unicast,
            oif: Some(2),
            gateway: Some(v("198.51.100.2")),
            prefsrc: Some(v("198.51.100.1")),
            mtu: Some(1400),
            table: 254,
        }
    );
    // The same bytes as a notification: a change of 203.0.113.7/32.
    let mut seen = Vec::new();
    parse_events(&ROUTE_ANSWER, &mut |e| seen.push(e));
    assert_eq!(
        seen,
        [Event::Route {
            dst: v("203.0.113.7"),
            prefix_len: 32,
            deleted: false
        }]
    );
}

#[cfg(target_endian = "little")]
#[test]
fn parse_neigh_fixture() {
    let RouteNetlinkMessage::NewNeighbour(m) = inner(&NEIGH_ANSWER) else {
        panic!("a neighbour");
    };
    let n = neigh_of(&m);
    assert_eq!(n.state, NudState::REACHABLE);
    assert_eq!(n.usable_mac(), Some([2, 0, 0, 0, 0, 2]));
    let mut seen = Vec::new();
    // Two messages in one datagram, as the kernel batches them.
    let two = [NEIGH_ANSWER, NEIGH_ANSWER].concat();
    parse_events(&two, &mut |e| seen.push(e));
    let e = Event::Neigh {
        ifindex: 2,
        addr: v("198.51.100.2"),
        neigh: Some(n),
    };
    assert_eq!(seen, [e, e]);
}

#[cfg(target_endian = "little")]
#[test]
fn malformed_notifications_ask_for_a_resync() {
    let resyncs = |b: &[u8]| {
        let mut n = 0;
        parse_events(b, &mut |e| n += usize::from(e == Event::Resync));
        n
    };
    // Message length below the header size, and beyond the datagram.
    for len in [8u8, 200] {
        let mut m = ROUTE_ANSWER;
        m[0] = len;
        assert_eq!(resyncs(&m), 1, "length {len}");
    }
    // Truncations of valid messages: a resync or a clean parse of what is
    // there, never a panic.
    for cut in 1..ROUTE_ANSWER.len() {
        let _ = resyncs(&ROUTE_ANSWER[..cut]);
        let _ = resyncs(&NEIGH_ANSWER[..cut.min(NEIGH_ANSWER.len())]);
    }
    assert_eq!(resyncs(&ROUTE_ANSWER[..20]), 1);
}

#[test]
fn random_bytes_never_panic_the_parsers() {
    // xorshift64*: deterministic, no dependency.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut buf = [0u8; 96];
    for round in 0..20_000 {
        let len = (next() % 97) as usize;
        for b in buf.iter_mut().take(len) {
            *b = next() as u8;
        }
        // A plausible header (length, rtnetlink type) makes the parsers
        // actually reach the message bodies.
        if len >= 16 && round % 2 == 0 {
            buf[0] = len as u8;
            buf[1..4].fill(0);
            buf[4] = [16, 17, 20, 21, 24, 25, 28, 29][(next() % 8) as usize];
            buf[5] = 0;
        }
        parse_events(&buf[..len], &mut |_| {});
    }
}

#[test]
fn prefixes() {
    assert!(in_prefix(v("203.0.113.7"), v("203.0.113.0"), 24));
    assert!(!in_prefix(v("203.0.114.7"), v("203.0.113.0"), 24));
    assert!(in_prefix(v("203.0.114.7"), v("0.0.0.0"), 0));
    assert!(in_prefix(v("203.0.113.7"), v("203.0.113.7"), 32));
    assert!(!in_prefix(v("203.0.113.8"), v("203.0.113.7"), 32));
    assert!(in_prefix(v("2001:db8:2::5"), v("2001:db8:2::"), 64));
    assert!(!in_prefix(v("2001:db8:3::5"), v("2001:db8:2::"), 64));
    assert!(in_prefix(v("2001:db8:3::5"), v("::"), 0));
    assert!(!in_prefix(v("203.0.113.7"), v("::"), 0), "families differ");
    assert!(
        in_prefix(v("203.0.113.7"), v("203.0.113.7"), 200),
        "clamped"
    );
}

#[test]
fn events_follow_neighbour_route_and_address_changes() {
    if !testns::available("events_follow_neighbour_route_and_address_changes") {
        return;
    }
    let lab = Lab::new();
    let va = lab.ifindex(&lab.a, "va");
    let mut ev = lab.run_in(&lab.a, || {
        Events::subscribe(&Group::ROUTING).expect("subscribe")
    });
    // Changes made by another process (`ip`), after the subscription.
    lab.ip(&[
        "-n",
        &lab.a,
        "neigh",
        "add",
        "198.51.100.9",
        "lladdr",
        "02:00:00:00:00:09",
        "dev",
        "va",
    ]);
    lab.ip(&["-n", &lab.a, "route", "add", "192.0.2.192/26", "via", B4]);
    lab.ip(&["-n", &lab.a, "addr", "add", "198.51.100.50/32", "dev", "va"]);
    lab.ip(&["-n", &lab.a, "neigh", "del", "198.51.100.9", "dev", "va"]);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    let want = |seen: &Vec<Event>| {
        let neigh_new = seen.iter().any(|e| {
            matches!(e, Event::Neigh { ifindex, addr, neigh: Some(n) }
                if *ifindex == va && *addr == v("198.51.100.9")
                && n.mac == Some([2, 0, 0, 0, 0, 9]))
        });
        let neigh_del = seen.iter().any(
            |e| matches!(e, Event::Neigh { addr, neigh: None, .. } if *addr == v("198.51.100.9")),
        );
        let route = seen.contains(&Event::Route {
            dst: v("192.0.2.192"),
            prefix_len: 26,
            deleted: false,
        });
        let addr = seen.contains(&Event::Addr {
            ifindex: va,
            addr: v("198.51.100.50"),
            deleted: false,
        });
        neigh_new && neigh_del && route && addr
    };
    while !want(&seen) {
        assert!(Instant::now() < deadline, "missing events: {seen:?}");
        ev.drain(|e| seen.push(e)).expect("drain");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!seen.contains(&Event::Resync), "{seen:?}");
}

#[test]
fn links_and_addrs_dump_the_namespace() {
    if !testns::available("links_and_addrs_dump_the_namespace") {
        return;
    }
    let lab = Lab::new();
    let va = lab.ifindex(&lab.a, "va");
    let (links, addrs) = lab.run_in(&lab.a, || {
        (links().expect("links"), addrs().expect("addrs"))
    });
    let lo = links.iter().find(|l| l.name == "lo").expect("lo");
    assert!(lo.loopback && lo.up);
    let l = links.iter().find(|l| l.name == "va").expect("va");
    assert_eq!(
        (l.index, l.mac, l.up, l.loopback),
        (va, Some(lab.mac(&lab.a, "va")), true, false)
    );
    for a in [A4, A6] {
        assert!(addrs.contains(&(va, v(a))), "{a} in {addrs:?}");
    }
    assert!(addrs.contains(&(lo.index, v("127.0.0.1"))), "{addrs:?}");
}

#[test]
fn nud_states() {
    for s in [
        NudState::REACHABLE,
        NudState::STALE,
        NudState::DELAY,
        NudState::PROBE,
        NudState::PERMANENT,
        NudState::NOARP,
    ] {
        assert!(s.is_usable(), "{s:?}");
    }
    for s in [NudState::NONE, NudState::INCOMPLETE, NudState::FAILED] {
        assert!(!s.is_usable(), "{s:?}");
    }
    assert_eq!(format!("{:?}", NudState(0x06)), "REACHABLE|STALE");
    assert_eq!(format!("{:?}", NudState::NONE), "NONE");
    let n = Neigh {
        state: NudState::FAILED,
        mac: Some([1; 6]),
    };
    assert_eq!(n.usable_mac(), None);
}
