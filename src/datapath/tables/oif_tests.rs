//! `-o` (the route's interface) and the `-i`/`-o` hook refusals.

use super::*;
use crate::sys::netlink::{RouteEntry, RouteKind, TABLE_LOCAL, TABLE_MAIN};

fn routes() -> route::Routes {
    let e = |table, kind, dst: &str, len, oif| RouteEntry {
        dst: dst.parse().unwrap(),
        len,
        table,
        kind,
        oif: Some(oif),
        metric: 0,
    };
    route::Routes::from_entries(&[
        e(TABLE_MAIN, RouteKind::Unicast, "198.51.100.0", 24, 2),
        e(TABLE_MAIN, RouteKind::Unicast, "203.0.113.0", 24, 3),
        e(TABLE_MAIN, RouteKind::Unicast, "0.0.0.0", 0, 4),
        e(TABLE_LOCAL, RouteKind::Local, "203.0.113.1", 32, 3),
    ])
}

fn links() -> iface::Links {
    iface::Links::from_pairs([(1, "lo"), (2, "c0"), (3, "s0"), (4, "up0")])
}

const TEXT: &str = "\
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:OUT - [0:0]
-A FORWARD -o s0 -j OUT
-A POSTROUTING -d 203.0.113.0/24 -o s0
-A POSTROUTING -d 203.0.113.0/24 ! -o s0
-A POSTROUTING -o s+
-A POSTROUTING -o lo
-A OUT -o s0 -p tcp -m tcp --dport 8081 -j MARK --set-xmark 0x7/0xffffffff
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -o s0 -p tcp -m tcp --dport 8081 -j DROP
-A OUTPUT ! -o c0 -p tcp -m tcp --dport 9 -j REJECT
COMMIT
";

fn pkt(dst: &str, dport: u16) -> Pkt {
    Pkt {
        proto: 6,
        src: "198.51.100.10".parse().unwrap(),
        dst: dst.parse().unwrap(),
        sport: 40000,
        dport,
        has_ports: true,
        len: 60,
    }
}

fn no_ct() -> CtFacts {
    CtFacts {
        state: CtState::NEW,
        ipvs: None,
    }
}

#[test]
fn out_interface_is_the_routes_and_needs_routes_only_with_o() {
    let r = parse(TEXT)
        .unwrap()
        .with_links(links())
        .with_routes(routes());
    assert!(r.needs_routes && r.needs_links);
    let run = |id, point, dst: &str, dport| {
        let mut m = 0;
        let v = r.run(id, point, &pkt(dst, dport), &mut m, &mut no_ct);
        (v, m)
    };
    use HookPoint::*;
    use TableId::*;
    // FORWARD: the destination (after DNAT) routes out s0.
    assert_eq!(
        run(Filter, Forward, "203.0.113.11", 8081).0,
        TableVerdict::Drop
    );
    assert_eq!(
        run(Filter, Forward, "198.51.100.20", 8081).0,
        TableVerdict::Accept
    );
    assert_eq!(
        run(Filter, Forward, "203.0.113.11", 80).0,
        TableVerdict::Accept
    );
    // Through a user chain reached from FORWARD.
    assert_eq!(run(Mangle, Forward, "203.0.113.11", 8081).1, 7);
    assert_eq!(run(Mangle, Forward, "198.51.100.20", 8081).1, 0);
    // OUTPUT: `! -o c0` for what the default route takes.
    assert_eq!(
        run(Filter, LocalOut, "192.0.2.99", 9).0,
        TableVerdict::Reject
    );
    assert_eq!(
        run(Filter, LocalOut, "198.51.100.20", 9).0,
        TableVerdict::Accept
    );

    // POSTROUTING routes the next hop handed over: a DR request to the VIP
    // goes to the real server, out s0.
    route::set_next_hop(
        "192.0.2.10".parse().unwrap(),
        "203.0.113.12".parse().unwrap(),
    );
    let m = r.table(Mangle).unwrap();
    let post = m.chain("POSTROUTING").unwrap();
    let ci = m
        .chains
        .iter()
        .position(|c| c.name == "POSTROUTING")
        .unwrap();
    run(Mangle, PostRouting, "192.0.2.10", 80);
    run(Mangle, PostRouting, "203.0.113.11", 8081);
    run(Mangle, PostRouting, "198.51.100.10", 40000);
    let counts: Vec<u64> = (0..post.rules.len())
        .map(|i| m.rule_counts(ci, i).0)
        .collect();
    // -d 203.0.113.0/24 -o s0; its negation; -o s+ (VIP via rs and rs);
    // -o lo (nothing uvs sends is local).
    assert_eq!(counts, [1, 0, 2, 0]);
    // A local destination leaves by lo.
    assert_eq!(r.routes.lookup("203.0.113.1".parse().unwrap()), 1);

    // No -o: no routes needed.
    let plain = parse("*filter\n-A FORWARD -i c0 -j DROP\nCOMMIT\n").unwrap();
    assert!(!plain.needs_routes && plain.needs_links);
    // The routes follow replaced_by and with_sets.
    let again = r.replaced_by(Ruleset::default());
    assert!(again.needs_routes && *again.routes == routes());
    assert!(r.with_sets(r.sets.clone()).needs_routes);
}

#[test]
fn o_and_i_refused_where_iptables_refuses_them_with_the_line() {
    let e = |t: &str| parse(t).unwrap_err();
    // -o where no output interface is chosen yet.
    let x = e("*mangle\n\n-A PREROUTING -o s0\nCOMMIT\n");
    assert_eq!(x.line, 3, "{x}");
    assert!(
        x.msg.contains("-o can't be used in the PREROUTING chain"),
        "{x}"
    );
    assert_eq!(e("*filter\n-A INPUT ! -o s0 -j DROP\nCOMMIT\n").line, 2);
    assert_eq!(e("*nat\n-A PREROUTING -o s+ -j ACCEPT\nCOMMIT\n").line, 2);
    // ... also in a user chain reached from there (via another chain).
    let x = e("*filter\n:A - [0:0]\n:B - [0:0]\n-A B -o s0 -j DROP\n-A A -j B\n-A FORWARD -j A\n-A INPUT -j A\nCOMMIT\n");
    assert_eq!(x.line, 4, "{x}");
    assert!(
        x.msg
            .contains("-o can't be used in chain B, reached from INPUT"),
        "{x}"
    );
    // The mirror case: -i in a user chain reached from OUTPUT/POSTROUTING.
    let x = e("*mangle\n:M - [0:0]\n-A M -i c0 -j ACCEPT\n-A POSTROUTING -j M\nCOMMIT\n");
    assert_eq!(x.line, 3, "{x}");
    assert!(
        x.msg
            .contains("-i can't be used in chain M, reached from POSTROUTING"),
        "{x}"
    );
    let x = e("*filter\n-N F\n-A OUTPUT -g F\n-A F ! -i c+ -j DROP\nCOMMIT\n");
    assert_eq!(x.line, 4, "{x}");
    // A chain reached only from FORWARD may have both; an unreached one too.
    parse("*filter\n:A - [0:0]\n:U - [0:0]\n-A A -i c0 -o s0 -j DROP\n-A FORWARD -j A\n-A U -i c0\n-A U -o s0\nCOMMIT\n").unwrap();
    // Bad names.
    assert_eq!(e("*filter\n-A FORWARD -o a/b -j DROP\nCOMMIT\n").line, 2);
    assert_eq!(
        e("*filter\n-A FORWARD -o 0123456789abcdef -j DROP\nCOMMIT\n").line,
        2
    );
}

#[test]
fn o_saves_back_and_lists_in_the_out_column() {
    let r = parse(TEXT).unwrap();
    let saved = r.save(false);
    for l in TEXT.lines().filter(|l| l.starts_with("-A")) {
        assert!(saved.contains(&format!("{l}\n")), "{l}\n{saved}");
    }
    let again = parse(&saved).unwrap();
    assert_eq!(again.save(false), saved);
    let c = parse(&r.save(true)).unwrap();
    assert_eq!(c.save(false), saved);
    let list = r.listing();
    assert!(
        list.contains("    pkts      bytes  num in     out    rule\n"),
        "{list}"
    );
    assert!(
        list.contains("       0          0    2 *      !s0    -d 203.0.113.0/24 ! -o s0\n"),
        "{list}"
    );
    assert!(list.contains("    3 *      s+     -o s+\n"), "{list}");
    let i = parse("*filter\n-A FORWARD ! -i c0 -o s0\nCOMMIT\n")
        .unwrap()
        .listing();
    assert!(i.contains("    1 !c0    s0     ! -i c0 -o s0\n"), "{i}");
}
