use super::*;

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

#[test]
fn requests_parse_and_print_back() {
    let r = Request::parse(&words(
        "-p tcp -s 198.51.100.0/24 -d 192.0.2.10 --sport 4000 --dport 80 --count 3 --timeout 2.5 --json",
    ))
    .unwrap();
    assert_eq!(r.filter.proto, Some(6));
    assert_eq!(r.filter.dst.unwrap().len, 32);
    assert_eq!(r.filter.src.unwrap().len, 24);
    assert_eq!((r.filter.sport, r.filter.dport), (Some(4000), Some(80)));
    assert_eq!(r.count, Some(3));
    assert_eq!(r.timeout, Some(Duration::from_millis(2500)));
    assert!(r.json);
    assert_eq!(Request::parse(&r.words()[1..]).unwrap(), r);
    let v6 = Request::parse(&words("-d 2001:db8:f::/64 -p icmp")).unwrap();
    assert_eq!(v6.filter.dst.unwrap().len, 64);
    assert_eq!(v6.filter.proto, Some(1));
}

#[test]
fn bad_words_are_named() {
    for (w, want) in [
        ("-p gre", "-p gre: expected tcp, udp, sctp or icmp"),
        (
            "-s 192.0.2.1/33",
            "-s 192.0.2.1/33: prefix length must be 0..32",
        ),
        ("-d host", "-d host: not an IP address[/LEN]"),
        ("--dport 70000", "--dport 70000: expected a port 0..65535"),
        (
            "--count 0",
            "--count 0: expected a count of packets (1 or more)",
        ),
        (
            "--timeout -1",
            "--timeout -1: expected seconds (more than 0)",
        ),
        ("--sport", "--sport: a value is missing"),
    ] {
        assert_eq!(Request::parse(&words(w)).unwrap_err(), want, "{w}");
    }
    assert!(Request::parse(&words("--bogus 1"))
        .unwrap_err()
        .starts_with("unknown option --bogus; usage: uvs trace"));
}

#[test]
fn a_stream_ends_at_its_timeout_and_says_so() {
    let tr = Tracer::default();
    let req = Request {
        timeout: Some(Duration::from_millis(50)),
        ..Default::default()
    };
    let mut got = Vec::new();
    stream(&tr, 1, &Vec::new(), &req, &mut |b| {
        got.extend_from_slice(b);
        Ok(())
    })
    .unwrap();
    assert_eq!(
        String::from_utf8(got).unwrap(),
        "tracing --timeout 0.05\n\ntrace ended: 0 packet(s) shown, 0 record(s) lost to a slow reader\n"
    );
    assert!(!tr.armed());
}

#[test]
fn a_stream_ends_when_its_reader_goes() {
    let tr = Tracer::default();
    let r = stream(&tr, 1, &Vec::new(), &Request::default(), &mut |_| {
        Err(io::Error::other("gone"))
    });
    assert!(r.is_ok());
    assert!(!tr.armed());
}

#[test]
fn a_block_names_the_rule_and_the_drop_and_json_says_the_same() {
    use crate::datapath::hooks::{HookFn, HookPoint, HookVerdict};
    use crate::datapath::stats::DropReason;
    use crate::datapath::trace::{HookVisit, Outcome, Record, RuleVisit, Text};
    let mut r = Record {
        seq: 7,
        ifindex: 3,
        len: 60,
        parsed: Err(uvs_fwd::ParseError::TruncatedIp),
        outcome: Outcome::Drop(DropReason::Filtered),
        ..Record::EMPTY
    };
    r.hooks[0] = Some(HookVisit {
        point: HookPoint::LocalIn,
        priority: 0,
        func: HookFn::Filter,
        verdict: HookVerdict::Drop,
    });
    r.push_rule(RuleVisit {
        point: HookPoint::LocalIn,
        priority: 0,
        table: "filter",
        chain: Text::of(&"INPUT"),
        rule_no: 2,
        text: Text::of(&"-A INPUT -p tcp --dport 81 -j DROP"),
        verdict: "DROP",
    });
    let ifaces = vec![(3, "c0".to_string())];
    assert_eq!(
        format::text(&r, &ifaces),
        "#7 on c0 (ring 0), 60 bytes\n  parse: failed: truncated_ip\n  hook: LOCAL_IN 0 filter: DROP\n    rule filter INPUT #2 \"-A INPUT -p tcp --dport 81 -j DROP\": DROP\n  result: dropped: filtered\n\n"
    );
    let j = format::json(&r, &ifaces);
    assert_eq!(j["iface"], "c0");
    assert_eq!(j["hooks"][0]["rules"][0]["rule"], 2);
    assert_eq!(j["result"]["drop"], "filtered");
    assert_eq!(j["parse"]["error"], "truncated_ip");
}
