//! Tunnelled packets' outer packets through mangle/filter OUTPUT and mangle
//! POSTROUTING: what the rules see (protocol, addresses, GUE ports,
//! length, mark, `--ctstate NEW`), a DROP, and every packet of a long flow
//! walked (the flow cache never takes it while a chain can act).

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::wire::tcp::flags::{ACK, SYN};
use uvs_fwd::CsumMode;
use uvs_sched::{FwdMethod, SchedParams, TunConfig, TunCsum, TunType};

use crate::datapath::pipeline::{Pipeline, Verdict};
use crate::datapath::prefix::Prefix;
use crate::datapath::service::{DestSpec, ServiceSpec};
use crate::datapath::stats::{DropReason, WorkerStats};
use crate::datapath::tables::nat::LocalNets;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const CLIENT: &str = "198.51.100.10";
const VIP: &str = "192.0.2.10";
const DIRECTOR: &str = "203.0.113.1";
const SERVER: &str = "203.0.113.11";

fn pipeline(tun: TunConfig, tables: &str) -> Pipeline {
    let p = Pipeline::new(uvs_conntrack::Table::new(uvs_conntrack::Config::default()));
    let specs = vec![ServiceSpec {
        proto: 6,
        addr: ip(VIP),
        port: 80,
        sched: "rr".into(),
        params: SchedParams::default(),
        persistence: None,
        one_packet: false,
        pe: None,
        dests: vec![DestSpec {
            addr: ip(SERVER),
            port: 80,
            fwd: FwdMethod::Tunnel,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            tun,
        }],
    }];
    let snap = p.services.load().rebuild(&specs).unwrap();
    p.services.store(Arc::new(snap));
    let local = LocalNets(vec![(
        Prefix {
            addr: ip(DIRECTOR),
            len: 24,
        },
        ip(DIRECTOR),
    )]);
    let r = crate::datapath::tables::parse(tables)
        .unwrap()
        .with_local_nets(local);
    p.tables.store(Arc::new(r));
    p
}

fn tcp(flags: u8, payload: usize) -> Vec<u8> {
    FrameSpec {
        src: ip(CLIENT),
        dst: ip(VIP),
        sport: 40000,
        dport: 80,
        payload: vec![0x5a; payload],
        l4: L4Spec::Tcp {
            flags,
            options: Vec::new(),
        },
        ..FrameSpec::tcp_v4()
    }
    .build()
}

/// (packets, bytes) of the saved rule containing `what`.
fn counts(p: &Pipeline, what: &str) -> (u64, u64) {
    let saved = p.tables.load_full().save(true);
    let l = saved
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no {what:?} in {saved}"));
    let (pk, by) = l[1..l.find(']').unwrap()].split_once(':').unwrap();
    (pk.parse().unwrap(), by.parse().unwrap())
}

const MANGLE: &str = "*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A OUTPUT -p ipv4 -s 203.0.113.1/32 -d 203.0.113.11/32 -m conntrack --ctstate NEW -j MARK --set-mark 0x5
-A OUTPUT -p tcp -m comment --comment inner-never
-A OUTPUT -m ipvs --ipvs -m comment --comment property
-A OUTPUT -m ipvs --ipvs --vproto 6 -m comment --comment no-connection
-A OUTPUT -m ipvs ! --ipvs -m comment --comment not-ipvs
-A POSTROUTING -p ipv4 -m mark --mark 0x5 -m comment --comment marked
-A POSTROUTING -p udp -s 203.0.113.1/32 --sport 32768:60999 --dport 6080 -m comment --comment gue
COMMIT
";

#[test]
fn the_outer_ipip_packet_is_marked_at_output_and_seen_at_postrouting() {
    let p = pipeline(TunConfig::default(), MANGLE);
    let st = WorkerStats::default();
    let mut f = tcp(SYN, 0);
    let inner_len = (f.len() - 14) as u64;
    let v = p.process(&mut f, CsumMode::Full, 0, &st);
    assert!(matches!(v, Verdict::Tunnel { .. }), "{v:?}");
    // The outer packet: 20 bytes of IPv4 in front of the inner one.
    assert_eq!(counts(&p, "--set-mark 0x5"), (1, inner_len + 20));
    assert_eq!(counts(&p, "marked"), (1, inner_len + 20));
    assert_eq!(
        counts(&p, "inner-never").0,
        0,
        "only the outer packet walks OUTPUT"
    );
    assert_eq!(counts(&p, "gue").0, 0);
    // IPVS sent it, with no connection of its own.
    assert_eq!(counts(&p, "property").0, 1);
    assert_eq!(counts(&p, "no-connection").0, 0);
    assert_eq!(counts(&p, "not-ipvs").0, 0);
    // A long flow: every request's outer packet walks (no flow cache).
    for i in 0..30 {
        let mut f = tcp(ACK, 10);
        let v = p.process(&mut f, CsumMode::Full, 1 + i, &st);
        assert!(matches!(v, Verdict::Tunnel { .. }), "{v:?}");
    }
    assert_eq!(counts(&p, "marked").0, 31);
}

#[test]
fn the_outer_gue_packet_has_its_udp_ports() {
    let gue = TunConfig {
        kind: TunType::Gue,
        port: 6080,
        csum: TunCsum::NoCsum,
    };
    let p = pipeline(gue, MANGLE);
    let st = WorkerStats::default();
    let mut f = tcp(SYN, 0);
    let inner_len = (f.len() - 14) as u64;
    p.process(&mut f, CsumMode::Full, 0, &st);
    assert_eq!(counts(&p, "gue"), (1, inner_len + 20 + 8 + 4));
    assert_eq!(counts(&p, "marked").0, 0, "not ipip: not marked");
}

#[test]
fn a_filter_output_drop_stops_the_outer_packet_after_ipvs_took_it() {
    let tables = "*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -p ipv4 -d 203.0.113.11/32 -j DROP
COMMIT
";
    let p = pipeline(TunConfig::default(), tables);
    let st = WorkerStats::default();
    let mut f = tcp(SYN, 0);
    let before = f.clone();
    let v = p.process(&mut f, CsumMode::Full, 0, &st);
    assert_eq!(v, Verdict::Drop(DropReason::Filtered));
    assert_eq!(f, before, "the frame is left as it came");
    assert_eq!(st.drops[DropReason::Filtered as usize].load(Relaxed), 1);
    assert_eq!(counts(&p, "-j DROP").0, 1);
    // IPVS scheduled it (its connection stays), as in the kernel, where
    // the outer packet dies after ip_vs_tunnel_xmit stole the inner one.
    assert_eq!(st.conns.load(Relaxed), 1);
    let stolen: u64 = st.hook_stolen.iter().map(|c| c.load(Relaxed)).sum();
    let dropped: u64 = st.hook_dropped.iter().map(|c| c.load(Relaxed)).sum();
    assert_eq!((stolen, dropped), (1, 1));
}
