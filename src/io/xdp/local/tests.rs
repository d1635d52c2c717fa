use super::*;

/// A netlink route message: header, rtmsg, then attributes.
fn route_msg(ty: u16, family: u8, rtype: u8, dst: &[u8], len: u8, oif: u32) -> Vec<u8> {
    let mut body = vec![family, len, 0, 0, 255, 2, 254, rtype, 0, 0, 0, 0];
    let mut attr = |kind: u16, v: &[u8]| {
        body.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        body.extend_from_slice(&kind.to_ne_bytes());
        body.extend_from_slice(v);
        while body.len() % 4 != 0 {
            body.push(0);
        }
    };
    attr(RTA_TABLE, &255u32.to_ne_bytes());
    attr(RTA_DST, dst);
    attr(RTA_OIF, &oif.to_ne_bytes());
    let mut m = Vec::new();
    m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&7u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&body);
    m
}

fn done(seq: u32) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&20u32.to_ne_bytes());
    m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&[0; 8]);
    m
}

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(a.into())
}

#[test]
fn parses_local_routes_and_skips_others() {
    let mut buf = route_msg(RTM_NEWROUTE, AF_INET, RTN_LOCAL, &[192, 0, 2, 1], 32, 3);
    buf.extend(route_msg(RTM_NEWROUTE, AF_INET, 1, &[192, 0, 2, 0], 24, 3)); // unicast
    let a6: Ipv6Addr = "2001:db8:5::1".parse().unwrap();
    buf.extend(route_msg(
        RTM_DELROUTE,
        AF_INET6,
        RTN_LOCAL,
        &a6.octets(),
        128,
        4,
    ));
    buf.extend(done(9));
    let m = parse(&buf);
    assert_eq!(m.len(), 4);
    assert_eq!(
        m[0],
        Msg::New(Route {
            prefix: (v4([192, 0, 2, 1]), 32),
            table: 255,
            oif: 3,
            metric: 0
        })
    );
    assert_eq!(m[1], Msg::Other, "not a local route");
    assert!(matches!(m[2], Msg::Del(r) if r.prefix == (IpAddr::V6(a6), 128) && r.oif == 4));
    assert_eq!(m[3], Msg::Done(9));
    // Truncated input ends the list without a panic.
    assert_eq!(parse(&buf[..buf.len() - 3]).len(), 3);
    assert!(parse(&buf[..10]).is_empty());
}

#[test]
fn a_prefix_leaves_with_its_last_route_and_duplicates_count_once() {
    let r = |oif| Route {
        prefix: (v4([192, 0, 2, 1]), 32),
        table: 255,
        oif,
        metric: 0,
    };
    let mut lr = LocalRoutes::default();
    let mut log = Vec::new();
    let mut set = |p: Prefix, on: bool| log.push((p, on));
    lr.apply(&Msg::New(r(3)), &mut set);
    lr.apply(&Msg::New(r(3)), &mut set); // seen in a dump and an event
    lr.apply(&Msg::New(r(4)), &mut set); // the same address on a second interface
    lr.apply(&Msg::Del(r(3)), &mut set);
    assert_eq!(lr.len(), 1);
    lr.apply(&Msg::Del(r(3)), &mut set); // removed twice: no effect
    lr.apply(&Msg::Del(r(4)), &mut set);
    assert!(lr.is_empty());
    let p = (v4([192, 0, 2, 1]), 32);
    assert_eq!(log, vec![(p, true), (p, false)]);
}

#[test]
fn a_fresh_dump_changes_only_the_difference() {
    let route = |a, len| Route {
        prefix: (v4(a), len),
        table: 255,
        oif: 2,
        metric: 0,
    };
    let mut lr = LocalRoutes::default();
    let mut none = |_: Prefix, _: bool| {};
    lr.apply(&Msg::New(route([192, 0, 2, 1], 32)), &mut none);
    lr.apply(&Msg::New(route([192, 0, 2, 2], 32)), &mut none);
    let before = lr.forget();
    lr.apply(&Msg::New(route([192, 0, 2, 2], 32)), &mut none);
    lr.apply(&Msg::New(route([198, 51, 100, 0], 24)), &mut none);
    let mut log = Vec::new();
    lr.reconcile(&before, &mut |p, on| log.push((p, on)));
    log.sort_by_key(|(p, on)| (*on, p.0));
    assert_eq!(
        log,
        vec![
            ((v4([192, 0, 2, 1]), 32), false),
            ((v4([198, 51, 100, 0]), 24), true)
        ]
    );
}
