use super::*;

fn pre(s: &str) -> Prefix {
    let (a, l) = s.split_once('/').unwrap();
    Prefix {
        addr: a.parse().unwrap(),
        len: l.parse().unwrap(),
    }
}

#[test]
fn prefixes_match_their_family_only() {
    assert!(pre("192.0.2.0/24").contains("192.0.2.77".parse().unwrap()));
    assert!(!pre("192.0.2.0/24").contains("192.0.3.1".parse().unwrap()));
    assert!(pre("0.0.0.0/0").contains("203.0.113.1".parse().unwrap()));
    assert!(!pre("0.0.0.0/0").contains("2001:db8::1".parse().unwrap()));
    assert!(pre("2001:db8::/32").contains("2001:db8:5::11".parse().unwrap()));
    assert!(pre("2001:db8::1/128").contains("2001:db8::1".parse().unwrap()));
}

#[test]
fn the_traced_set_finds_what_it_holds() {
    let s = TupleSet::new();
    let t = |p: u16| Tuple {
        proto: 6,
        src: "203.0.113.11".parse().unwrap(),
        sport: 80,
        dst: "198.51.100.10".parse().unwrap(),
        dport: p,
    };
    for p in 0..200 {
        s.insert(&t(p));
    }
    assert!((0..200).all(|p| s.contains(&t(p))));
    assert!(!s.contains(&t(999)));
}

#[test]
fn one_trace_at_a_time_and_dropping_it_disarms() {
    let tr = Tracer::default();
    assert!(!tr.armed());
    let sub = tr.start(TraceFilter::default(), Some(3), 2).unwrap();
    assert!(tr.armed());
    assert!(matches!(
        tr.start(TraceFilter::default(), None, 1),
        Err(TraceError::Busy)
    ));
    assert!(sub.recv_timeout(Duration::from_millis(1)).is_none());
    drop(sub);
    assert!(!tr.armed());
    assert!(tr.start(TraceFilter::default(), None, 1).is_ok());
}

#[test]
fn rules_and_picks_are_recorded_only_while_recording() {
    rule(
        HookPoint::LocalIn,
        0,
        "filter",
        "INPUT",
        1,
        &"-A INPUT -j DROP",
        "DROP",
    );
    assert!(INNER.with(|i| i.borrow().rules[0].is_none()));
    RECORDING.with(|c| c.set(true));
    rule(
        HookPoint::LocalIn,
        0,
        "filter",
        "INPUT",
        2,
        &"-A INPUT -j DROP",
        "DROP",
    );
    let ds = vec![Arc::new(Dest::new(
        "203.0.113.11".parse().unwrap(),
        80,
        1,
        uvs_sched::FwdMethod::Masq,
    ))];
    let rr = uvs_sched::rr::Rr::new(&ds);
    let key = SchedKey {
        proto: 6,
        src: "198.51.100.10".parse().unwrap(),
        sport: 1,
        dst: "192.0.2.10".parse().unwrap(),
        dport: 80,
        now_ms: 0,
    };
    assert!(schedule(&rr, &[], &key).is_some());
    RECORDING.with(|c| c.set(false));
    let i = INNER.with(|i| *i.borrow());
    let r = i.rules[0].unwrap();
    assert_eq!(
        (r.rule_no, r.text.as_str(), r.verdict),
        (2, "-A INPUT -j DROP", "DROP")
    );
    assert_eq!(i.sched.unwrap().sched, "rr");
}

#[test]
fn texts_truncate_on_character_boundaries() {
    let t: Text<5> = Text::of(&"abcdé€");
    assert_eq!(t.as_str(), "abcd");
}
