//! Local clients (`uvs run --local-src`): `curl` run in the director's
//! own namespace reaches a VIP through the `uvs-lo` TUN device, enters the
//! pipeline at LOCAL_OUT, is balanced rr 50/50 over two NAT real servers,
//! and its replies come back through the TUN; remote clients keep their
//! usual path meanwhile. Direct-routing and tunnel services are balanced
//! too, their replies (from the VIP) reaching the local socket directly,
//! and a nat OUTPUT DNAT rule's destination is reached as the kernel's nat
//! OUTPUT would send it.
//! Everything uvs added (device, policy rule, route, nftables table) is
//! gone after SIGTERM; after SIGKILL the next start removes the rule the
//! dead one left. Under `UVS_LAB_IO=af_xdp` the XDP program claims the
//! replies instead of the nftables table. Needs root; skips without it.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use uvs::lab;
use uvs::sys::netns;
use uvs::sys::nftnl::{NftSock, NFPROTO_NETDEV};

mod common;

use common::{root_or_skip, Endpoint, Setup};

static SERIAL: Mutex<()> = Mutex::new(());

const VIP: &str = "192.0.2.10";
/// The local clients' source address: in the VIP range, which the real
/// servers route to the director (their default route).
const LOCAL_SRC: &str = "192.0.2.250";
const LOCAL_SRC_V6: &str = "2001:db8:f::250";
const CURLS: usize = 10;

/// Whether the lab runs uvs under AF_XDP (`UVS_LAB_IO=af_xdp`).
fn af_xdp() -> bool {
    std::env::var("UVS_LAB_IO").is_ok_and(|io| io == "af_xdp")
}

/// Runs `ip -n NS ARGS…`, asserting success.
fn ip_ok(ns: &str, args: &[&str]) {
    let st = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .status()
        .expect("ip");
    assert!(st.success(), "ip -n {ns} {args:?}");
}

fn setup(tag: &str) -> Setup {
    Setup::start(
        &format!("uxlo{}{tag}", std::process::id() % 100000),
        &[],
        &["--local-src", LOCAL_SRC, "--local-src", LOCAL_SRC_V6],
    )
}

fn ip_out(ns: &str, args: &[&str]) -> String {
    let o = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .expect("ip");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What uvs adds, as the director's namespace shows it now: (the device
/// exists, IPv4 and IPv6 policy rules toward table 30070, netdev tables).
fn added(ns: &str) -> (bool, usize, Vec<String>) {
    let dev = ip_out(ns, &["link", "show"]).contains("uvs-lo");
    let rules = [
        ip_out(ns, &["rule", "show"]),
        ip_out(ns, &["-6", "rule", "show"]),
    ]
    .iter()
    .flat_map(|t| t.lines().filter(|l| l.contains("lookup 30070")))
    .count();
    let tables = netns::run_in(ns, || {
        NftSock::open()
            .and_then(|mut s| s.tables(NFPROTO_NETDEV))
            .expect("nf_tables listing")
    })
    .expect("namespace");
    (dev, rules, tables)
}

/// `curl http://VIP/` `n` times from the director's namespace; the
/// answering server of each (the lab server's body is its name).
fn curls(ns: &str, n: usize) -> Vec<String> {
    curls_to(ns, VIP, n)
}

/// [`curls`] to the URL host `host`.
fn curls_to(ns: &str, host: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let o = Command::new("ip")
                .args(["netns", "exec", ns, "curl", "-sS", "-m", "5"])
                .arg(format!("http://{host}/"))
                .output()
                .expect("curl");
            assert!(
                o.status.success(),
                "curl: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        })
        .collect()
}

fn service(s: &Setup) {
    for c in [
        "-A -t 192.0.2.10:80 -s rr",
        "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 1",
        "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 1",
    ] {
        s.d.uvsadm(c)
            .unwrap_or_else(|e| panic!("{e}\n{}", s.d.log_text()));
    }
}

#[test]
fn curl_on_the_director_is_balanced_at_local_out_and_sigterm_removes_everything() {
    if !root_or_skip("curl_on_the_director") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("a");
    let lb = s.lab.ns("lb");
    service(&s);
    let routes = ip_out(&lb, &["route", "show", "table", "30070"]);
    assert!(
        routes.contains(&format!("{VIP} dev uvs-lo")) && routes.contains(LOCAL_SRC),
        "{routes}"
    );

    let got = curls(&lb, CURLS);
    let n = |name: &str| got.iter().filter(|g| *g == name).count();
    assert_eq!(
        (n("rs1"), n("rs2")),
        (CURLS / 2, CURLS / 2),
        "rr over both real servers: {got:?}"
    );
    // Remote clients at the same time as local ones (one rotation for
    // both, so only success is asserted): their path is unchanged.
    let vip: SocketAddr = format!("{VIP}:80").parse().unwrap();
    let remote = netns::spawn_in(&s.lab.ns("c"), move || {
        let t = lab::tcp_requests(vip, 10, Duration::from_secs(60));
        assert_eq!((t.failures, t.total()), (0, 10), "remote client: {t:?}");
    })
    .expect("client namespace");
    curls(&lb, 4);
    remote.join().expect("remote client");

    // `uvs stats`: the LOCAL_OUT entry scheduled them, the TUN carried
    // both directions, the guard kept the replies from the kernel.
    let stats = s.d.call(&["stats"]).unwrap().stdout;
    let line = stats
        .lines()
        .find(|l| l.starts_with("hook.LOCAL_OUT.-98.ip_vs_local_request "))
        .unwrap_or_else(|| panic!("{stats}"));
    let stolen: u64 = line
        .split_whitespace()
        .skip_while(|w| *w != "stolen")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    // At least the SYN, the request and the ACKs of each connection.
    assert!(stolen >= 3 * CURLS as u64, "{line}");
    // The replies were claimed: by the nftables table, or steered by the
    // XDP program (with the remote client's packets).
    let claimed = if af_xdp() {
        "xdp.steered"
    } else {
        "guard.local_reply"
    };
    for c in ["local.from_tun", "local.to_tun", claimed] {
        assert!(s.d.counter(c).unwrap() >= 3 * CURLS as u64, "{c}\n{stats}");
    }
    // IPv6 local clients, from the IPv6 --local-src.
    for c in [
        "-A -t [2001:db8:f::10]:80 -s rr",
        "-a -t [2001:db8:f::10]:80 -r [2001:db8:5::11]:80 -m -w 1",
        "-a -t [2001:db8:f::10]:80 -r [2001:db8:5::12]:80 -m -w 1",
    ] {
        s.d.uvsadm(c)
            .unwrap_or_else(|e| panic!("{e}\n{}", s.d.log_text()));
    }
    let mut got6 = curls_to(&lb, "[2001:db8:f::10]", 4);
    got6.sort();
    assert_eq!(got6, ["rs1", "rs1", "rs2", "rs2"], "IPv6 rr");
    direct_routing_and_tunnel_services(&s);
    nat_output_dnat_for_local_clients(&s);
    for c in ["drop.local_not_balanced", "drop.local_tun_write"] {
        assert_eq!(s.d.counter(c).unwrap(), 0, "{c}\n{stats}");
    }

    // `uvs trace`: a local client's SYN meets the LOCAL_OUT entries.
    let argv: Vec<String> = [
        "trace",
        "-p",
        "tcp",
        "-s",
        LOCAL_SRC,
        "--count",
        "1",
        "--timeout",
        "20",
    ]
    .map(String::from)
    .to_vec();
    let (status, text) = common::trace_during(&s.d, argv, || {
        curls(&lb, 1);
    });
    assert_eq!(status.unwrap(), 0, "{text}");
    assert!(
        text.contains("LOCAL_OUT -98 ip_vs_local_request: STOLEN"),
        "the LOCAL_OUT entry took it:\n{text}"
    );

    // SIGTERM: the device, the rule (and with the device its route) and
    // the nftables table are gone; the guard's own table too.
    let lab = {
        let Setup { d, servers, lab } = s;
        let st = d.stop().expect("uvs stops");
        assert!(st.success(), "{st}");
        drop(servers);
        lab
    };
    assert_eq!(added(&lab.ns("lb")), (false, 0, vec![]));
}

/// Local clients of a direct-routing (`-g`, VIP 192.0.2.30) and a tunnel
/// (`-i` ipip, VIP 192.0.2.31) service: the real servers carry both VIPs on
/// `lo` (ARP hidden), the tunnel ones decapsulate with `uvs
/// tunnel-endpoint`, and answer from the VIP straight to the local-client
/// address, which their default route takes to the director, whose kernel
/// delivers it to the local socket.
fn direct_routing_and_tunnel_services(s: &Setup) {
    for rs in ["rs1", "rs2"] {
        let ns = s.lab.ns(rs);
        for v in ["192.0.2.30/32", "192.0.2.31/32"] {
            ip_ok(&ns, &["addr", "add", v, "dev", "lo"]);
        }
        let st = Command::new("ip")
            .args(["netns", "exec", &ns, "sysctl", "-qw"])
            .args([
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
            ])
            .status()
            .expect("sysctl");
        assert!(st.success());
    }
    let _ep = ["rs1", "rs2"].map(|rs| Endpoint::start(&s.lab, rs, &[]));
    for c in [
        "-A -t 192.0.2.30:80 -s rr",
        "-a -t 192.0.2.30:80 -r 203.0.113.11:80 -g -w 1",
        "-a -t 192.0.2.30:80 -r 203.0.113.12:80 -g -w 1",
        "-A -t 192.0.2.31:80 -s rr",
        "-a -t 192.0.2.31:80 -r 203.0.113.11:80 -i -w 1 --tun-type ipip",
        "-a -t 192.0.2.31:80 -r 203.0.113.12:80 -i -w 1 --tun-type ipip",
    ] {
        s.d.uvsadm(c)
            .unwrap_or_else(|e| panic!("{e}\n{}", s.d.log_text()));
    }
    let lb = s.lab.ns("lb");
    for vip in ["192.0.2.30", "192.0.2.31"] {
        let mut got = curls_to(&lb, vip, 4);
        got.sort();
        assert_eq!(got, ["rs1", "rs1", "rs2", "rs2"], "rr to {vip}");
    }
}

/// A nat OUTPUT DNAT rule for an address and port no IPVS service owns
/// (192.0.2.40:80 → rs1, `-d` a host): uvs routes that host into `uvs-lo`
/// for local origin, so `curl` on the director reaches rs1 as the kernel's
/// nat OUTPUT would send it, the reply un-DNATed back through the TUN; the
/// route goes with the rule.
fn nat_output_dnat_for_local_clients(s: &Setup) {
    let lb = s.lab.ns("lb");
    let dnat = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A OUTPUT -d 192.0.2.40/32 -p tcp --dport 80 -j DNAT --to-destination 203.0.113.11:80\n-A OUTPUT -d 2001:db8:f::40/128 -p tcp --dport 80 -j DNAT --to-destination [2001:db8:5::12]:80\n-A OUTPUT -p tcp --dport 8080 -j DNAT --to-destination 203.0.113.12:80\nCOMMIT\n";
    let r = s.d.call(&["tables", "restore", dnat]).unwrap();
    assert_eq!(r.status, 0, "{r:?}");
    let routes = ip_out(&lb, &["route", "show", "table", "30070"]);
    assert!(routes.contains("192.0.2.40 dev uvs-lo"), "{routes}");
    assert_eq!(curls_to(&lb, "192.0.2.40", 3), ["rs1", "rs1", "rs1"]);
    // IPv6, from the IPv6 --local-src.
    let routes6 = ip_out(&lb, &["-6", "route", "show", "table", "30070"]);
    assert!(routes6.contains("2001:db8:f::40 dev uvs-lo"), "{routes6}");
    assert_eq!(curls_to(&lb, "[2001:db8:f::40]", 2), ["rs2", "rs2"]);
    assert_eq!(s.d.counter("local.dnat_hosts").unwrap(), 2);
    // A DNAT without a host: said, with its line (8), in uvs's log.
    assert!(
        s.d.log_text()
            .contains("line 8: a nat OUTPUT DNAT rule without -d HOST"),
        "{}",
        s.d.log_text()
    );
    let saved = s.d.call(&["tables", "save", "-c"]).unwrap().stdout;
    let first: u64 = saved
        .lines()
        .find(|l| l.contains("--to-destination 203.0.113.11:80"))
        .and_then(|l| l.strip_prefix('[')?.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{saved}"));
    // nat rules count a flow's first packet: one per connection.
    assert_eq!(first, 3, "{saved}");
    // An empty nat table: the route goes (no VIP has that address).
    let r =
        s.d.call(&["tables", "restore", "*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"])
            .unwrap();
    assert_eq!(r.status, 0, "{r:?}");
    let routes = ip_out(&lb, &["route", "show", "table", "30070"]);
    assert!(!routes.contains("192.0.2.40"), "{routes}");
    let routes6 = ip_out(&lb, &["-6", "route", "show", "table", "30070"]);
    assert!(!routes6.contains("2001:db8:f::40"), "{routes6}");
    assert_eq!(s.d.counter("local.dnat_hosts").unwrap(), 0);
}

#[test]
fn after_sigkill_the_next_start_cleans_up_and_vip_routes_follow_the_services() {
    if !root_or_skip("after_sigkill") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("k");
    let lb = s.lab.ns("lb");
    let (dev, rules, tables) = added(&lb);
    assert!(dev && rules == 2, "{dev} {rules}");
    // Under AF_XDP the program claims the replies: no nftables table.
    assert_eq!(
        tables.contains(&"uvs_lo".to_string()),
        !af_xdp(),
        "{tables:?}"
    );
    let Setup { d, servers, lab } = s;
    d.kill().expect("SIGKILL");
    // The kernel removed the device and the owned tables with the
    // process; the rule stays, pointing at a table with no routes.
    let (dev, rules, tables) = added(&lb);
    assert_eq!((dev, rules), (false, 2));
    assert!(tables.is_empty(), "{tables:?}");

    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_uvs"));
    let d = lab::Director::start(&lab, exe, &["--local-src", LOCAL_SRC]).expect("restart");
    assert!(
        d.log_text()
            .contains("removed a stale local-client policy rule"),
        "{}",
        d.log_text()
    );
    assert_eq!(added(&lb).1, 1, "one rule, the new one (IPv4 only now)");
    let s = Setup { d, servers, lab };
    service(&s);
    assert_eq!(curls(&lb, 2).len(), 2);
    // The VIP's route goes with its last service and comes back with it.
    s.d.uvsadm("-D -t 192.0.2.10:80").unwrap();
    let routes = ip_out(&lb, &["route", "show", "table", "30070"]);
    assert!(!routes.contains(VIP), "{routes}");
    service(&s);
    let routes = ip_out(&lb, &["route", "show", "table", "30070"]);
    assert!(routes.contains(VIP), "{routes}");
    assert_eq!(curls(&lb, 2).len(), 2);
}

#[test]
fn a_source_address_the_host_already_has_is_refused_and_nothing_is_left() {
    if !root_or_skip("a_source_address_the_host_already_has") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = format!("uxlo{}r", std::process::id() % 100000);
    let lab = lab::Lab::up(&prefix, &[]).expect("lab up");
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_uvs"));
    let e = lab::Director::start(&lab, exe, &["--local-src", "203.0.113.1"]).expect_err("refused");
    let text = e.to_string();
    assert!(
        text.contains("--local-src 203.0.113.1: already an address of this host"),
        "{text}"
    );
    assert_eq!(added(&lab.ns("lb")), (false, 0, vec![]));
}
