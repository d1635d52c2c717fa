//! ipsets: the `ipset save` language, each type's lookup, `-m set` and
//! `-m addrtype` in a kube-proxy IPVS-mode ruleset, and the costs.

use super::*;
use crate::datapath::hooks::HookPoint;
use crate::datapath::tables::nat::LocalNets;
use crate::datapath::tables::{parse_with, CtFacts, CtState, Pkt, Prefix, TableId, TableVerdict};

const KUBE_SETS: &str = include_str!("../../../../tests/fixtures/kube-ipvs.ipset");
const KUBE_RULES: &str = include_str!("../../../../tests/fixtures/kube-ipvs.rules");

fn no_refs(_: u32) -> usize {
    0
}

fn sets(text: &str) -> Sets {
    restore(&Sets::default(), &no_refs, text, false).unwrap()
}

fn pkt(src: &str, dst: &str, sport: u16, dport: u16) -> Pkt {
    Pkt {
        proto: 6,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        sport,
        dport,
        has_ports: true,
        len: 60,
    }
}

fn has(s: &Sets, name: &str, src: [bool; 3], k: &Pkt) -> bool {
    let m = SetMatch {
        neg: false,
        id: s.id(name).unwrap(),
        src,
    };
    m.test(s, k)
}

fn run(words: &[&str], s: &Sets) -> Result<Outcome, IpsetError> {
    let w: Vec<String> = words.iter().map(|x| x.to_string()).collect();
    command(s, &no_refs, &w, None)
}

#[test]
fn kube_proxy_sets_restore_and_save_back() {
    let s = sets(KUBE_SETS);
    assert_eq!(s.len(), 17);
    let saved = save(&s, None);
    // Save is ipset's text, and restores to the same.
    assert!(
        saved.contains("create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\nadd KUBE-CLUSTER-IP 192.0.2.80,tcp:80\n"),
        "{saved}"
    );
    assert!(
        saved.contains(
            "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535\nadd KUBE-NODE-PORT-TCP 30080\n"
        ),
        "{saved}"
    );
    assert_eq!(save(&sets(&saved), None), saved);
    let l = list(&s, &no_refs, s.id("KUBE-LOOP-BACK"), false, false);
    assert!(l.starts_with("Name: KUBE-LOOP-BACK\nType: hash:ip,port,ip\nRevision: 5\nHeader: family inet hashsize 1024 maxelem 65536\n"), "{l}");
    assert!(l.contains("References: 0\nNumber of entries: 2\nMatches: 0 packets, 0 bytes\nMembers:\n203.0.113.11,tcp:8080,203.0.113.11\n"), "{l}");
    let names = list(&s, &no_refs, None, true, false);
    assert_eq!(names.lines().count(), 17);
}

#[test]
fn each_type_looks_up_its_dimensions() {
    let s = sets(
        "create IPS hash:ip family inet\n\
         add IPS 192.0.2.1\n\
         create NETS hash:net family inet\n\
         add NETS 10.0.0.0/8\n\
         add NETS 10.1.0.0/16 nomatch\n\
         add NETS 10.1.2.0/24\n\
         create IPP hash:ip,port family inet\n\
         add IPP 192.0.2.80,udp:53\n\
         add IPP 192.0.2.80,8000-8002\n\
         create IPPI hash:ip,port,ip family inet\n\
         add IPPI 203.0.113.11,tcp:8080,203.0.113.11\n\
         create IPPN hash:ip,port,net family inet\n\
         add IPPN 192.0.2.9,tcp:443,198.51.100.0/25\n\
         create PORTS bitmap:port range 30000-32767\n\
         add PORTS 30080\n\
         create V6 hash:ip,port family inet6\n\
         add V6 2001:db8::80,tcp:80\n",
    );
    let d = [false; 3];
    assert!(has(&s, "IPS", d, &pkt("198.51.100.1", "192.0.2.1", 1, 2)));
    assert!(!has(
        &s,
        "IPS",
        [true, false, false],
        &pkt("198.51.100.1", "192.0.2.1", 1, 2)
    ));
    // Longest prefix decides; nomatch excludes.
    assert!(has(&s, "NETS", d, &pkt("0.0.0.1", "10.9.9.9", 1, 2)));
    assert!(!has(&s, "NETS", d, &pkt("0.0.0.1", "10.1.9.9", 1, 2)));
    assert!(has(&s, "NETS", d, &pkt("0.0.0.1", "10.1.2.3", 1, 2)));
    assert!(!has(&s, "NETS", d, &pkt("0.0.0.1", "11.0.0.1", 1, 2)));
    // Protocol is part of the port dimension; tcp is the default.
    let mut udp = pkt("198.51.100.1", "192.0.2.80", 1, 53);
    assert!(!has(&s, "IPP", d, &udp));
    udp.proto = 17;
    assert!(has(&s, "IPP", d, &udp));
    assert!(has(
        &s,
        "IPP",
        d,
        &pkt("198.51.100.1", "192.0.2.80", 1, 8001)
    ));
    assert!(!has(
        &s,
        "IPP",
        d,
        &pkt("198.51.100.1", "192.0.2.80", 1, 8003)
    ));
    // KUBE-LOOP-BACK's dst,dst,src: a server reaching itself.
    let hair = pkt("203.0.113.11", "203.0.113.11", 40000, 8080);
    assert!(has(&s, "IPPI", [false, false, true], &hair));
    assert!(!has(
        &s,
        "IPPI",
        [false, false, true],
        &pkt("203.0.113.12", "203.0.113.11", 4, 8080)
    ));
    let p = pkt("198.51.100.7", "192.0.2.9", 4, 443);
    assert!(has(&s, "IPPN", [false, false, true], &p));
    assert!(!has(
        &s,
        "IPPN",
        [false, false, true],
        &pkt("198.51.100.200", "192.0.2.9", 4, 443)
    ));
    assert!(has(&s, "PORTS", d, &pkt("1.1.1.1", "2.2.2.2", 1, 30080)));
    assert!(!has(&s, "PORTS", d, &pkt("1.1.1.1", "2.2.2.2", 1, 30081)));
    // A set of one family never matches the other's packets.
    assert!(has(&s, "V6", d, &pkt("2001:db8::1", "2001:db8::80", 1, 80)));
    assert!(!has(
        &s,
        "IPP",
        d,
        &pkt("2001:db8::1", "2001:db8::80", 1, 53)
    ));
    // Counted per set.
    let hits = s.get(s.id("PORTS").unwrap()).unwrap().hits.total();
    assert_eq!(hits, (1, 60));
}

#[test]
fn commands_as_ipset_answers_them() {
    let s = sets("create A hash:ip,port family inet comment\n");
    let o = run(&["add", "A", "192.0.2.1,tcp:80", "comment", "web"], &s).unwrap();
    let s = o.sets.unwrap();
    let e = run(&["add", "A", "192.0.2.1,tcp:80"], &s).unwrap_err();
    assert!(e.msg.contains("it's already added"), "{e}");
    assert!(run(&["add", "A", "192.0.2.1,tcp:80", "-exist"], &s).is_ok());
    let t = run(&["test", "A", "192.0.2.1,tcp:80"], &s).unwrap();
    assert_eq!(
        (t.status, t.out.as_str()),
        (0, "192.0.2.1,tcp:80 is in set A.\n")
    );
    let t = run(&["test", "A", "192.0.2.1,udp:80"], &s).unwrap();
    assert_eq!(
        (t.status, t.out.as_str()),
        (1, "192.0.2.1,udp:80 is NOT in set A.\n")
    );
    assert!(save(&s, None).contains("add A 192.0.2.1,tcp:80 comment \"web\"\n"));
    let e = run(&["del", "A", "192.0.2.2,tcp:80"], &s).unwrap_err();
    assert!(e.msg.contains("it's not added"), "{e}");
    let s2 = run(&["del", "A", "192.0.2.1,tcp:80"], &s)
        .unwrap()
        .sets
        .unwrap();
    assert!(s2.get(0).unwrap().is_empty());
    // The old snapshot is untouched (what the workers still hold).
    assert_eq!(s.get(0).unwrap().len(), 1);
    let e = run(&["create", "A", "hash:ip"], &s).unwrap_err();
    assert!(e.msg.contains("already exists"), "{e}");
    assert!(run(
        &[
            "create",
            "A",
            "hash:ip,port",
            "family",
            "inet",
            "comment",
            "-exist"
        ],
        &s
    )
    .is_ok());
    let e = run(&["create", "B", "list:set"], &s).unwrap_err();
    assert!(e.msg.contains("not emulated"), "{e}");
    let e = run(&["create", "B", "hash:ip", "timeout", "60"], &s).unwrap_err();
    assert!(e.msg.contains("do not expire"), "{e}");
    let e = run(&["add", "A", "2001:db8::1,tcp:80"], &s).unwrap_err();
    assert!(e.msg.contains("family"), "{e}");
    let e = run(&["add", "Z", "192.0.2.1"], &s).unwrap_err();
    assert!(e.msg.contains("does not exist"), "{e}");
    let full = sets("create F hash:ip maxelem 1\nadd F 192.0.2.1\n");
    let e = run(&["add", "F", "192.0.2.2"], &full).unwrap_err();
    assert!(e.msg.contains("set is full"), "{e}");
    let f = run(&["flush"], &s).unwrap().sets.unwrap();
    assert!(f.get(0).unwrap().is_empty());
    let d = run(&["destroy", "A"], &s).unwrap().sets.unwrap();
    assert!(d.is_empty());
}

#[test]
fn restore_is_all_or_nothing_and_names_the_line() {
    let s = sets(KUBE_SETS);
    let bad = "add KUBE-CLUSTER-IP 192.0.2.81,tcp:80\nadd KUBE-CLUSTER-IP 192.0.2.999,tcp:80\n";
    let e = restore(&s, &no_refs, bad, false).unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.msg.contains("192.0.2.999"), "{e}");
    // -exist: re-creating the same sets and re-adding members is no error.
    let again = restore(&s, &no_refs, KUBE_SETS, true).unwrap();
    assert_eq!(save(&again, None), save(&s, None));
    assert!(restore(&s, &no_refs, KUBE_SETS, false).is_err());
}

#[test]
fn rules_name_existing_sets_and_sets_in_use_stay() {
    let s = sets(KUBE_SETS);
    let r = parse_with(KUBE_RULES, &s).unwrap();
    let cip = s.id("KUBE-CLUSTER-IP").unwrap();
    assert_eq!(r.set_refs(cip), 3);
    // A missing set is refused with the line, as iptables-restore does.
    let e = crate::datapath::tables::parse(KUBE_RULES).unwrap_err();
    assert_eq!(e.line, 17, "{e}");
    assert!(
        e.msg.contains("set KUBE-NODE-PORT-TCP doesn't exist"),
        "{e}"
    );
    // Fewer directions than the set has dimensions would never match.
    let e = parse_with(
        "*filter\n-A INPUT -m set --match-set KUBE-CLUSTER-IP dst -j DROP\nCOMMIT\n",
        &s,
    )
    .unwrap_err();
    assert!(e.msg.contains("needs 2 direction(s)"), "{e}");
    let refs = |id: u32| r.set_refs(id);
    let w: Vec<String> = ["destroy", "KUBE-CLUSTER-IP"].map(String::from).to_vec();
    let e = command(&r.sets, &refs, &w, None).unwrap_err();
    assert!(e.msg.contains("in use"), "{e}");
    // The saved rules are the rules as written.
    let saved = r.save(false);
    assert!(
        saved.contains("-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT\n"),
        "{saved}"
    );
    assert!(parse_with(&saved, &s).is_ok());
}

fn no_ct() -> CtFacts {
    CtFacts {
        state: CtState::NEW,
        ipvs: None,
    }
}

#[test]
fn kube_proxy_ruleset_marks_what_kube_proxy_masquerades() {
    let s = sets(KUBE_SETS);
    let node = "198.51.100.1".parse().unwrap();
    let r = parse_with(KUBE_RULES, &s)
        .unwrap()
        .with_local_nets(LocalNets(vec![(
            Prefix {
                addr: node,
                len: 24,
            },
            node,
        )]));
    assert!(r.needs_local);
    let mark = |k: Pkt| {
        let mut m = 0;
        let v = r.run(TableId::Nat, HookPoint::PreRouting, &k, &mut m, &mut no_ct);
        assert_eq!(v, TableVerdict::Accept);
        m
    };
    // ClusterIP from outside the pod CIDR: marked for masquerade.
    assert_eq!(mark(pkt("198.51.100.200", "192.0.2.80", 4000, 80)), 0x4000);
    // From a pod: not.
    assert_eq!(mark(pkt("198.51.100.10", "192.0.2.80", 4000, 80)), 0);
    // NodePort on the node's own address (addrtype LOCAL), from anywhere.
    assert_eq!(
        mark(pkt("198.51.100.10", "198.51.100.1", 4000, 30080)),
        0x4000
    );
    assert_eq!(mark(pkt("198.51.100.10", "198.51.100.1", 4000, 30081)), 0);
    // The same port on an address that is not the node's.
    assert_eq!(mark(pkt("198.51.100.10", "192.0.2.81", 4000, 30080)), 0);
    // KUBE-IPVS-FILTER: a VIP's other ports are refused at INPUT.
    let filt = |k: Pkt| {
        let mut m = 0;
        r.run(TableId::Filter, HookPoint::LocalIn, &k, &mut m, &mut no_ct)
    };
    assert_eq!(
        filt(pkt("198.51.100.10", "192.0.2.80", 4000, 80)),
        TableVerdict::Accept
    );
    assert_eq!(
        filt(pkt("198.51.100.10", "192.0.2.80", 4000, 22)),
        TableVerdict::Reject
    );
    let c = s
        .get(s.id("KUBE-CLUSTER-IP").unwrap())
        .unwrap()
        .hits
        .total();
    // Two ClusterIP packets at PREROUTING matched twice each (the
    // masquerade rule's match for the outside one, the ACCEPT rule for
    // both), one at INPUT.
    assert_eq!(c.0, 4, "{c:?}");
}

#[test]
fn addrtype_types() {
    use crate::datapath::tables::addrtype::*;
    let a: std::net::IpAddr = "198.51.100.1".parse().unwrap();
    let l = LocalAddrs::from_nets(&LocalNets(vec![(Prefix { addr: a, len: 24 }, a)]));
    let t = |s: &str| l.type_of(s.parse().unwrap());
    assert_eq!(t("198.51.100.1"), LOCAL);
    assert_eq!(t("198.51.100.255"), BROADCAST);
    assert_eq!(t("255.255.255.255"), BROADCAST);
    assert_eq!(t("224.0.0.1"), MULTICAST);
    assert_eq!(t("0.0.0.0"), UNSPEC);
    assert_eq!(t("192.0.2.1"), UNICAST);
    assert_eq!(parse_types("LOCAL,BROADCAST"), Ok(LOCAL | BROADCAST));
    assert!(parse_types("BLACKHOLE")
        .unwrap_err()
        .contains("routing table"));
}

thread_local! {
    static EQS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Key comparisons per lookup at 10 and at 10,000 members: the same
/// (hashed), not growing with the set.
#[test]
fn lookup_cost_is_flat_from_10_to_10000_members() {
    let per_lookup = |n: u32| {
        let mut s = IpSet::new("S", SetType::HashIpPort, Opts::default());
        for i in 0..n {
            s.insert(
                Key {
                    proto: 6,
                    port: 80,
                    ..Key::a(u128::from(0xc000_0000u32 + i))
                },
                Val::default(),
            );
        }
        let before = EQS.with(|c| c.get());
        let mut hits = 0;
        for i in 0..1000u32 {
            let a = std::net::Ipv4Addr::from(0xc000_0000u32 + (i * 7919) % n);
            let f = [
                Field {
                    addr: a.into(),
                    port: None,
                },
                Field {
                    addr: a.into(),
                    port: Some((6, 80)),
                },
                Field {
                    addr: a.into(),
                    port: None,
                },
            ];
            hits += usize::from(s.test(&f, 1));
        }
        assert_eq!(hits, 1000);
        (EQS.with(|c| c.get()) - before) as f64 / 1000.0
    };
    let (small, big) = (per_lookup(10), per_lookup(10_000));
    assert!(small <= 1.5 && big <= 1.5, "{small} {big}");
    // Net types: one probe per prefix length present, not per member.
    let mut s = IpSet::new("N", SetType::HashNet, Opts::default());
    for i in 0..10_000u32 {
        s.insert(
            Key {
                cidr: 24,
                ..Key::a(u128::from(0x0a00_0000u32 + (i << 8)))
            },
            Val::default(),
        );
    }
    s.insert(
        Key {
            cidr: 8,
            ..Key::a(0x0a00_0000)
        },
        Val::default(),
    );
    assert_eq!(&*s.cidrs, &[24, 8]);
}

/// Counts comparisons (tests only) for the test above.
pub(super) fn counted_eq() {
    EQS.with(|c| c.set(c.get() + 1));
}

#[test]
fn a_sets_file_reloads_over_the_running_sets() {
    let s = sets(KUBE_SETS);
    let r = parse_with(KUBE_RULES, &s).unwrap();
    let refs = |id: u32| r.set_refs(id);
    let cip = s.id("KUBE-CLUSTER-IP").unwrap();
    let file = "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\n\
                add KUBE-CLUSTER-IP 192.0.2.81,tcp:443\n\
                create EXTRA hash:net family inet\n";
    let new = reload(&s, &refs, file).unwrap();
    // Same id (the rules still name it), exactly the file's members.
    assert_eq!(new.id("KUBE-CLUSTER-IP"), Some(cip));
    let c = new.get(cip).unwrap();
    assert_eq!(c.len(), 1);
    assert!(save(&new, Some(cip)).contains("add KUBE-CLUSTER-IP 192.0.2.81,tcp:443\n"));
    // Sets the file does not name stay; new ones are created.
    assert_eq!(new.len(), s.len() + 1);
    // A set in use may not change type.
    let e = reload(&s, &refs, "create KUBE-CLUSTER-IP hash:ip family inet\n").unwrap_err();
    assert!(
        e.msg.contains("would change from hash:ip,port to hash:ip"),
        "{e}"
    );
}
