//! The nat table's targets: what loads, what is refused with its line,
//! and what the walk decides.

use super::*;
use crate::datapath::tables::nat::{NatKind, NatTo};
use crate::datapath::tables::natct::PortPick;

/// The nat table of a kube-proxy IPVS-mode node, with the ipset match
/// written as plain -d/--dport (the `-m set` form is in `ipset/tests.rs`).
pub const KUBE_NAT: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully
-A KUBE-SERVICES ! -s 10.244.0.0/16 -d 192.0.2.10/32 -p tcp -m tcp --dport 80 -m comment --comment \"cluster ip + port for masquerade purpose\" -j KUBE-MARK-MASQ
-A PREROUTING -d 192.0.2.20/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 203.0.113.11:80
COMMIT
";

#[test]
fn kube_proxy_nat_table_loads_and_decides() {
    let r = parse(KUBE_NAT).unwrap();
    assert!(r.nat_on);
    let k = pkt("198.51.100.10", "192.0.2.10", 80);
    let mut mark = 0;
    // PREROUTING: KUBE-MARK-MASQ sets 0x4000, no translation yet.
    let v = r.run(
        TableId::Nat,
        HookPoint::PreRouting,
        &k,
        &mut mark,
        &mut no_ct,
    );
    assert_eq!((v, mark), (TableVerdict::Accept, 0x4000));
    // POSTROUTING (after IPVS: to the real server): the mark is cleared
    // and the flow masqueraded, ports chosen at random.
    let out = pkt("198.51.100.10", "203.0.113.11", 80);
    let v = r.run(
        TableId::Nat,
        HookPoint::PostRouting,
        &out,
        &mut mark,
        &mut no_ct,
    );
    assert_eq!(
        v,
        TableVerdict::Nat(NatTo {
            kind: NatKind::Masquerade,
            addr: None,
            ports: None,
            pick: PortPick::Fully,
        })
    );
    assert_eq!(mark, 0);
    // Unmarked: RETURN, no translation.
    let mut mark = 0;
    let v = r.run(
        TableId::Nat,
        HookPoint::PostRouting,
        &out,
        &mut mark,
        &mut no_ct,
    );
    assert_eq!(v, TableVerdict::Accept);
    // A DNAT rule for a port no service owns.
    let v = r.run(
        TableId::Nat,
        HookPoint::PreRouting,
        &pkt("198.51.100.10", "192.0.2.20", 8080),
        &mut mark,
        &mut no_ct,
    );
    assert_eq!(
        v,
        TableVerdict::Nat(NatTo {
            kind: NatKind::Dnat,
            addr: Some("203.0.113.11".parse().unwrap()),
            ports: Some((80, 80)),
            pick: PortPick::Keep,
        })
    );
    let (to_us, servers) = r.dnat_claims();
    assert_eq!(to_us, vec![(6, "192.0.2.20".parse().unwrap(), 8080)]);
    assert_eq!(servers, vec![(6, "203.0.113.11".parse().unwrap(), 80)]);
    // What save writes, restore reads back the same.
    assert_eq!(parse(&r.save(false)).unwrap().save(false), r.save(false));
}

#[test]
fn nat_options_and_refusals_name_their_line() {
    let ok = |rule: &str| {
        parse(&format!("*nat\n{rule}\nCOMMIT\n")).unwrap_or_else(|e| panic!("{rule}: {e}"))
    };
    let err = |rule: &str| {
        let e = parse(&format!("*nat\n{rule}\nCOMMIT\n")).unwrap_err();
        assert_eq!(e.line, 2, "{rule}: {e}");
        e.msg
    };
    ok("-A POSTROUTING -s 198.51.100.0/24 -j SNAT --to-source 203.0.113.1");
    ok("-A POSTROUTING -p udp -j SNAT --to-source 203.0.113.1:2000-3000 --random --persistent");
    ok("-A POSTROUTING -p tcp -j MASQUERADE --to-ports 62000-62999");
    ok("-A OUTPUT -p tcp -d 2001:db8:f::20 --dport 80 -j DNAT --to-destination [2001:db8:5::11]:8080");
    assert!(err("-A PREROUTING -j REDIRECT").contains("REDIRECT"));
    assert!(err("-A POSTROUTING -j DNAT --to-destination 203.0.113.11").contains("PREROUTING"));
    assert!(err("-A INPUT -j SNAT --to-source 203.0.113.1").contains("director's own stack"));
    assert!(err("-A PREROUTING -j DNAT").contains("--to-destination"));
    assert!(err("-A PREROUTING -j DNAT --to-destination 203.0.113.11:80").contains("-p tcp"));
    assert!(
        err("-A PREROUTING -j DNAT --to-destination 203.0.113.11-203.0.113.12")
            .contains("address ranges")
    );
    assert!(err("-A POSTROUTING -j MASQUERADE --to-source 1.2.3.4").contains("not an option"));
    assert!(err("-A PREROUTING -j DROP").contains("not for filtering"));
    assert!(
        err("-A PREROUTING -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT")
            .contains("set KUBE-CLUSTER-IP doesn't exist")
    );
    // A user chain with a MASQUERADE jumped to from PREROUTING.
    let e =
        parse("*nat\n:M - [0:0]\n-A M -j MASQUERADE\n-A PREROUTING -j M\nCOMMIT\n").unwrap_err();
    assert_eq!(e.line, 3, "{e}");
    // Outside the nat table.
    let e = parse("*filter\n-A INPUT -j MASQUERADE\nCOMMIT\n").unwrap_err();
    assert!(e.msg.contains("nat table only"), "{e}");
}

#[test]
fn masquerade_addresses_are_refreshed_and_the_gone_ones_named() {
    use crate::datapath::tables::nat::{refreshed, LocalNets};
    let net = |a: &str| {
        let addr: std::net::IpAddr = a.parse().unwrap();
        (Prefix { addr, len: 24 }, addr)
    };
    let two = LocalNets(vec![net("203.0.113.1"), net("198.51.100.1")]);
    let r = parse(KUBE_NAT).unwrap().with_local_nets(two.clone());
    assert!(refreshed(&r, two.clone()).is_none(), "unchanged");
    let one = LocalNets(vec![net("198.51.100.1"), net("203.0.113.5")]);
    let (new, gone) = refreshed(&r, one.clone()).unwrap();
    assert_eq!(
        gone,
        vec!["203.0.113.1".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(new.local, one);
    assert!(new.nat_on && new.table(TableId::Nat).is_some());
    // Without nat rules nothing needs them.
    let plain = parse(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
    )
    .unwrap();
    assert!(refreshed(&plain, one).is_none());
}
