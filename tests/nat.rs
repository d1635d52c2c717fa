//! The nat table translating real traffic, in a kube-proxy IPVS-mode
//! shape: KUBE-SERVICES marks a VIP port's new flows with 0x4000 at nat
//! PREROUTING, IPVS balances them to its NAT real servers, and
//! KUBE-POSTROUTING MASQUERADEs the marked ones (`--random-fully`), so the
//! real server sees the director's address; its replies are un-MASQUERADEd,
//! then IPVS un-DNATs them. A VIP port without the mark keeps the client's
//! address. A DNAT rule for a port no IPVS service owns forwards it. The
//! nat rules count first packets only (`save -c`), and `uvs trace` shows
//! the first packet's decision and a later one's "existing mapping".
//!
//! Then, in the same lab, a real kube-proxy IPVS-mode ruleset
//! (`tests/fixtures/kube-ipvs.{ipset,rules}`: ipsets, `-m set`, `-m
//! addrtype`) with the IPVS services kube-proxy makes for a ClusterIP and a
//! NodePort: a ClusterIP request from outside the pod CIDR is masqueraded,
//! one from inside it is not, the NodePort on the node's address is.
//! Needs root; skips without.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uvs::sys::netns;

mod common;

use common::{root_or_skip, Setup};

const CONFIG: &str = "\
-A -t 192.0.2.10:80 -s rr
-a -t 192.0.2.10:80 -r 203.0.113.11:8081 -m -w 1
-a -t 192.0.2.10:80 -r 203.0.113.12:8081 -m -w 1
-A -t 192.0.2.10:443 -s rr
-a -t 192.0.2.10:443 -r 203.0.113.11:8081 -m -w 1
-a -t 192.0.2.10:443 -r 203.0.113.12:8081 -m -w 1
";

/// A kube-proxy IPVS-mode-shaped node's nat and filter tables (the ipset
/// match written as -d/--dport; kube-proxy's own text, with `-m set`, is
/// `tests/fixtures/kube-ipvs.rules`), plus DNATs for ports no service owns
/// (TCP to a server, UDP to a closed port), a counting mangle
/// POSTROUTING rule, two counting `-i` rules (the director's client-side
/// link is `c0`) and counting `-o` rules (its server-side link is `s0`).
const TABLES: &str = "\
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 192.0.2.10/32 -i c+ -p tcp -m tcp --dport 443
-A PREROUTING -d 192.0.2.10/32 ! -i c0 -p tcp -m tcp --dport 443
-A POSTROUTING -d 203.0.113.12/32 -p tcp -m tcp --dport 8081
-A POSTROUTING -d 203.0.113.0/24 -o s0
-A POSTROUTING -d 203.0.113.0/24 ! -o s0
-A POSTROUTING -d 198.51.100.0/24 -o c+
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A PREROUTING -d 192.0.2.20/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 203.0.113.11:8081
-A PREROUTING -d 192.0.2.20/32 -p udp -m udp --dport 5300 -j DNAT --to-destination 203.0.113.11:5399
-A PREROUTING -d 2001:db8:f::20/128 -p udp -m udp --dport 5300 -j DNAT --to-destination [2001:db8:5::11]:5399
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully
-A KUBE-SERVICES ! -s 10.244.0.0/16 -d 192.0.2.10/32 -p tcp -m tcp --dport 80 -m comment --comment \"cluster ip + port for masquerade purpose\" -j KUBE-MARK-MASQ
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
-A INPUT -j KUBE-FIREWALL
-A FORWARD -o s0 -p tcp -m tcp --dport 8081
-A KUBE-FIREWALL -m comment --comment \"kubernetes firewall for dropping marked packets\" -m mark --mark 0x8000/0x8000 -j DROP
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
COMMIT
";

/// Answers each connection with "NAME PEER-ADDRESS" and closes; stops
/// when dropped (or after 120 s).
struct WhoAmI {
    stop: Arc<AtomicBool>,
}

impl Drop for WhoAmI {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn whoami(ns: &str, name: &'static str, port: u16) -> WhoAmI {
    let l = netns::run_in(ns, move || TcpListener::bind(("0.0.0.0", port)))
        .expect("namespace")
        .expect("bind");
    l.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(120);
        while !s.load(Ordering::Relaxed) && Instant::now() < end {
            match l.accept() {
                Ok((mut c, peer)) => {
                    let _ = writeln!(c, "{name} {}", peer.ip());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    WhoAmI { stop }
}

/// `n` connections from the client to `addr`: the answers.
fn ask(s: &Setup, addr: &str, n: usize) -> Vec<String> {
    let a: SocketAddr = addr.parse().unwrap();
    answers(s, n, move || {
        TcpStream::connect_timeout(&a, Duration::from_secs(3))
    })
}

/// `n` connections made by `connect` in the client's namespace: each
/// one's first line, or the error.
fn answers(
    s: &Setup,
    n: usize,
    connect: impl Fn() -> std::io::Result<TcpStream> + Send + 'static,
) -> Vec<String> {
    netns::run_in(&s.lab.ns("c"), move || {
        (0..n)
            .map(|_| match connect() {
                Ok(c) => {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
                    let mut line = String::new();
                    match BufReader::new(c).read_line(&mut line) {
                        Ok(_) => line.trim().to_string(),
                        Err(e) => format!("error: {e}"),
                    }
                }
                Err(e) => format!("error: {e}"),
            })
            .collect()
    })
    .expect("client namespace")
}

fn count(v: &[String], what: &str) -> usize {
    v.iter().filter(|l| *l == what).count()
}

/// The packet count of the saved rule containing `needle`.
fn rule_packets(saved: &str, needle: &str) -> u64 {
    saved
        .lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.strip_prefix('['))
        .and_then(|l| l.split(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

#[test]
fn kube_proxy_nat_masquerades_ipvs_traffic_and_dnat_forwards_a_port() {
    if !root_or_skip("kube_proxy_nat_masquerades_ipvs_traffic_and_dnat_forwards_a_port") {
        return;
    }
    let prefix = format!("uxnx{}", std::process::id() % 100000);
    let base = std::env::temp_dir().join(&prefix);
    let (cfg, tbl) = (base.with_extension("rules"), base.with_extension("tables"));
    let sets = base.with_extension("ipsets");
    std::fs::write(&cfg, CONFIG).unwrap();
    std::fs::write(&tbl, TABLES).unwrap();
    // kube-proxy's sets from the start (the first tables name none).
    std::fs::write(&sets, KUBE_SETS).unwrap();
    let _rm = common::RemoveOnDrop(vec![cfg.clone(), tbl.clone(), sets.clone()]);
    let s = Setup::start(
        &prefix,
        &[],
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--tables",
            tbl.to_str().unwrap(),
            "--ipsets",
            sets.to_str().unwrap(),
            "--workers",
            "1",
        ],
    );
    let _w1 = whoami(&s.lab.ns("rs1"), "rs1", 8081);
    let _w2 = whoami(&s.lab.ns("rs2"), "rs2", 8081);
    let log = || s.d.log_text();

    // Marked by KUBE-MARK-MASQ: balanced, and the real servers see the
    // director's server-side address.
    let v = ask(&s, "192.0.2.10:80", 10);
    assert_eq!(
        (count(&v, "rs1 203.0.113.1"), count(&v, "rs2 203.0.113.1")),
        (5, 5),
        "{v:?}\n{}",
        log()
    );
    // Not marked: IPVS alone, the client's address.
    let v = ask(&s, "192.0.2.10:443", 4);
    assert_eq!(
        (
            count(&v, "rs1 198.51.100.10"),
            count(&v, "rs2 198.51.100.10")
        ),
        (2, 2),
        "{v:?}"
    );
    // DNAT for a port no service owns: forwarded to rs1, client's address.
    let v = ask(&s, "192.0.2.20:8080", 3);
    assert_eq!(count(&v, "rs1 198.51.100.10"), 3, "{v:?}\n{}", log());

    // nat rules see first packets only: one per flow.
    let saved = s.d.call(&["tables", "save", "-c"]).unwrap().stdout;
    assert_eq!(rule_packets(&saved, "-j MASQUERADE"), 10, "{saved}");
    assert_eq!(rule_packets(&saved, "-j KUBE-MARK-MASQ"), 10, "{saved}");
    assert_eq!(rule_packets(&saved, "-j DNAT"), 3, "{saved}");
    // KUBE-FIREWALL's DROP did not stop anything.
    assert_eq!(s.d.counter("drop.filtered").unwrap_or(0), 0);
    // mangle POSTROUTING saw what uvs sent to rs2.
    assert!(
        rule_packets(
            &saved,
            "-A POSTROUTING -d 203.0.113.12/32 -p tcp -m tcp --dport 8081"
        ) >= 5,
        "{saved}"
    );

    // `-i`: the client's packets to VIP:443 arrived on c0, so `-i c+`
    // counted each of them (at least SYN, ACK, request and FIN of the 4
    // connections) and `! -i c0` none.
    assert!(
        rule_packets(&saved, "-i c+ -p tcp -m tcp --dport 443") >= 16,
        "{saved}"
    );
    let not_c0 = "-d 192.0.2.10/32 ! -i c0 -p tcp -m tcp --dport 443";
    assert!(saved.contains(not_c0), "{saved}");
    assert_eq!(rule_packets(&saved, not_c0), 0, "{saved}");

    // `-o`: the route of what uvs sends. Every packet uvs sent to a real
    // server (17 connections: IPVS NAT to both, the DNAT'd port to rs1)
    // left by s0, none by another link; its replies to the client by c0.
    // filter FORWARD saw the DNAT'd port's requests leave by s0.
    for (rule, at_least) in [
        ("-A POSTROUTING -d 203.0.113.0/24 -o s0", 17 * 2),
        ("-A POSTROUTING -d 198.51.100.0/24 -o c+", 17 * 2),
        ("-A FORWARD -o s0 -p tcp -m tcp --dport 8081", 3 * 2),
    ] {
        assert!(rule_packets(&saved, rule) >= at_least, "{rule}\n{saved}");
    }
    let not_s0 = "-A POSTROUTING -d 203.0.113.0/24 ! -o s0";
    assert!(saved.contains(not_s0), "{saved}");
    assert_eq!(rule_packets(&saved, not_s0), 0, "{saved}");
    let list = s.d.call(&["tables", "list"]).unwrap().stdout;
    assert!(
        list.lines()
            .any(|l| l.contains(" *      !s0    -d 203.0.113.0/24 ! -o s0")),
        "{list}"
    );

    // A DNAT target's port unreachable reaches the client translated: its
    // connected socket (which only takes errors quoting its own
    // VIP:5300) reads ECONNREFUSED. IPv4 and ICMPv6.
    for (any, vip) in [
        ("0.0.0.0:0", "192.0.2.20:5300"),
        ("[::]:0", "[2001:db8:f::20]:5300"),
    ] {
        let refused = netns::run_in(&s.lab.ns("c"), move || {
            let u = std::net::UdpSocket::bind(any).unwrap();
            u.connect(vip).unwrap();
            u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 64];
            (0..3).any(|_| {
                let _ = u.send(b"anyone?");
                matches!(u.recv(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
            })
        })
        .expect("client namespace");
        assert!(refused, "{vip}: no translated port unreachable\n{}", log());
    }

    // MASQUERADE follows the director's addresses: a longer-prefix address
    // on the server side is taken once added, and the first one again once
    // it is removed.
    let lb = s.lab.ns("lb");
    let ip_addr = |op: &str| {
        let st = std::process::Command::new("ip")
            .args(["-n", &lb, "addr", op, "203.0.113.13/28", "dev", "s0"])
            .status()
            .expect("ip");
        assert!(st.success(), "ip addr {op}");
    };
    let peer_is = |want: &str| {
        common::wait_until(Duration::from_secs(5), || {
            ask(&s, "192.0.2.10:80", 1)
                .first()
                .is_some_and(|l| l.ends_with(want))
        })
    };
    // The address's routes (its /28, its local route) reach `-o`'s route
    // snapshot through the same events.
    let reread = || log().matches("-o's routes re-read").count();
    let before = reread();
    ip_addr("add");
    assert!(peer_is(" 203.0.113.13"), "new address not taken\n{}", log());
    assert!(
        common::wait_until(Duration::from_secs(5), || reread() > before),
        "-o's routes not re-read\n{}",
        log()
    );
    ip_addr("del");
    assert!(
        peer_is(" 203.0.113.1"),
        "gone address still used\n{}",
        log()
    );

    // `uvs trace`: the first packet's decision, then a later packet's
    // existing mapping.
    let argv: Vec<String> = [
        "trace",
        "-p",
        "tcp",
        "--dport",
        "8080",
        "--count",
        "2",
        "--timeout",
        "20",
    ]
    .map(String::from)
    .to_vec();
    let (status, text) = common::trace_during(&s.d, argv, || {
        let v = ask(&s, "192.0.2.20:8080", 1);
        assert_eq!(count(&v, "rs1 198.51.100.10"), 1, "{v:?}");
    });
    assert_eq!(status.unwrap(), 0, "{text}");
    assert!(
        text.contains("rule nat PREROUTING #2 \"-d 192.0.2.20/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 203.0.113.11:8081\": DNAT"),
        "the rule that decided:\n{text}"
    );
    assert!(
        text.contains("nat: new mapping 198.51.100.10:")
            && text.contains("DNAT to 203.0.113.11:8081"),
        "the mapping:\n{text}"
    );
    assert!(
        text.contains("nat: existing mapping"),
        "a later packet:\n{text}"
    );

    drop_out_s0_stops_dnat_requests(&s);
    kube_proxy_ipvs_ruleset(&s, &tbl);
}

/// A filter FORWARD DROP `-o s0` stops the DNAT'd port's requests (uvs
/// would send them out of s0): the connection fails, the rule's counter,
/// `drop.filtered` and `uvs trace` say where. The filter table is put back.
fn drop_out_s0_stops_dnat_requests(s: &Setup) {
    let filter = &TABLES[TABLES.find("*filter").unwrap()..];
    let drop = filter.replace(
        "-A FORWARD -o s0 -p tcp -m tcp --dport 8081\n",
        "-A FORWARD -o s0 -p tcp -m tcp --dport 8081 -j DROP\n",
    );
    assert_ne!(drop, filter);
    let r = s.d.call(&["tables", "restore", &drop]).unwrap();
    assert_eq!(r.status, 0, "{}", r.stderr);
    let filtered = s.d.counter("drop.filtered").unwrap_or(0);
    let argv: Vec<String> = [
        "trace",
        "-p",
        "tcp",
        "--dport",
        "8080",
        "--count",
        "1",
        "--timeout",
        "10",
    ]
    .map(String::from)
    .to_vec();
    let (status, text) = common::trace_during(&s.d, argv, || {
        let a: SocketAddr = "192.0.2.20:8080".parse().unwrap();
        let v = answers(s, 1, move || {
            TcpStream::connect_timeout(&a, Duration::from_secs(2))
        });
        assert!(v[0].starts_with("error"), "{v:?}");
    });
    assert_eq!(status.unwrap(), 0, "{text}");
    assert!(
        text.contains("hook: FORWARD 0 filter: DROP") && text.contains("dropped: filtered"),
        "where the DNAT'd request was dropped:\n{text}"
    );
    let saved = s.d.call(&["tables", "save", "-c"]).unwrap().stdout;
    assert!(
        rule_packets(&saved, "-o s0 -p tcp -m tcp --dport 8081 -j DROP") >= 1,
        "{saved}"
    );
    assert!(s.d.counter("drop.filtered").unwrap_or(0) > filtered);
    let r = s.d.call(&["tables", "restore", filter]).unwrap();
    assert_eq!(r.status, 0, "{}", r.stderr);
}

const KUBE_SETS: &str = include_str!("fixtures/kube-ipvs.ipset");
const KUBE_RULES: &str = include_str!("fixtures/kube-ipvs.rules");

/// `n` connections to `addr` from the client's address `src`: the answers.
fn ask_from(s: &Setup, src: &str, addr: &str, n: usize) -> Vec<String> {
    use socket2::{Domain, Socket, Type};
    let a: SocketAddr = addr.parse().unwrap();
    let from: SocketAddr = format!("{src}:0").parse().unwrap();
    answers(s, n, move || {
        let c = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        c.bind(&from.into())?;
        c.connect_timeout(&a.into(), Duration::from_secs(3))?;
        Ok(TcpStream::from(c))
    })
}

/// kube-proxy's own ruleset: its ipsets (loaded by `uvs run --ipsets`,
/// restored again as kube-proxy re-applies them, `-exist`), its nat and
/// filter tables replacing the hand-written ones through the `--tables`
/// file and `uvs reload`, its IPVS services (ClusterIP 192.0.2.80:80,
/// NodePort 30080 on the node's 198.51.100.1) added as it adds them. The pod CIDR is 198.51.100.0/25: the client's
/// 198.51.100.10 is a pod, a second address 198.51.100.200 is outside.
fn kube_proxy_ipvs_ruleset(s: &Setup, tables_file: &std::path::Path) {
    let ns = s.lab.ns("c");
    let ip = std::process::Command::new("ip")
        .args(["-n", &ns, "addr", "add", "198.51.100.200/24", "dev", "eth0"])
        .status()
        .expect("ip");
    assert!(ip.success());
    let r =
        s.d.call(&["ipset", "restore", "-exist", KUBE_SETS])
            .unwrap();
    assert_eq!(r.status, 0, "{}", r.stderr);
    let r = s.d.call(&["ipset", "restore", KUBE_SETS]).unwrap();
    assert!(r.stderr.contains("line 1: "), "{}", r.stderr);
    std::fs::write(tables_file, KUBE_RULES).unwrap();
    let r = s.d.call(&["reload"]).unwrap();
    assert_eq!(r.status, 0, "{}", r.stderr);
    for c in [
        "-A -t 192.0.2.80:80 -s rr",
        "-a -t 192.0.2.80:80 -r 203.0.113.11:8081 -m -w 1",
        "-a -t 192.0.2.80:80 -r 203.0.113.12:8081 -m -w 1",
        "-A -t 198.51.100.1:30080 -s rr",
        "-a -t 198.51.100.1:30080 -r 203.0.113.11:8081 -m -w 1",
        "-a -t 198.51.100.1:30080 -r 203.0.113.12:8081 -m -w 1",
    ] {
        s.d.uvsadm(c).unwrap();
    }
    let log = || s.d.log_text();
    // ClusterIP from outside the pod CIDR: KUBE-MARK-MASQ, then
    // KUBE-POSTROUTING's MASQUERADE: the servers see the director.
    let v = ask_from(s, "198.51.100.200", "192.0.2.80:80", 4);
    assert_eq!(
        (count(&v, "rs1 203.0.113.1"), count(&v, "rs2 203.0.113.1")),
        (2, 2),
        "{v:?}\n{}",
        log()
    );
    // From a pod: the client's own address.
    let v = ask_from(s, "198.51.100.10", "192.0.2.80:80", 4);
    assert_eq!(
        (
            count(&v, "rs1 198.51.100.10"),
            count(&v, "rs2 198.51.100.10")
        ),
        (2, 2),
        "{v:?}"
    );
    // NodePort (addrtype LOCAL, KUBE-NODE-PORT-TCP): masqueraded, even
    // from a pod.
    let v = ask_from(s, "198.51.100.10", "198.51.100.1:30080", 2);
    assert_eq!(
        count(&v, "rs1 203.0.113.1") + count(&v, "rs2 203.0.113.1"),
        2,
        "{v:?}\n{}",
        log()
    );
    // The counters: the sets' matches and references, the rules' first
    // packets.
    let l =
        s.d.call(&["ipset", "list", "KUBE-CLUSTER-IP"])
            .unwrap()
            .stdout;
    assert!(l.contains("References: 3\n"), "{l}");
    assert!(l.contains("Members:\n192.0.2.80,tcp:80\n"), "{l}");
    let matches: u64 = l
        .lines()
        .find_map(|x| x.strip_prefix("Matches: "))
        .and_then(|x| x.split(' ').next())
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    // At least the nat rules' first packets (8) and every packet at
    // KUBE-IPVS-FILTER.
    assert!(matches >= 8, "{l}");
    let saved = s.d.call(&["tables", "save", "-c"]).unwrap().stdout;
    assert_eq!(
        rule_packets(
            &saved,
            "--match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ"
        ),
        4,
        "{saved}"
    );
    assert_eq!(
        rule_packets(
            &saved,
            "--match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ"
        ),
        2,
        "{saved}"
    );
    assert_eq!(
        rule_packets(&saved, "-j MASQUERADE --random-fully"),
        6,
        "{saved}"
    );
    // A set in use is not destroyed; a rule naming a missing set is
    // refused with its line, and the tables stay.
    let r = s.d.call(&["ipset", "destroy", "KUBE-CLUSTER-IP"]).unwrap();
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("in use"), "{}", r.stderr);
    let bad = KUBE_RULES.replace("KUBE-NODE-PORT-TCP dst", "KUBE-NODE-PORT-XYZ dst");
    let r = s.d.call(&["tables", "restore", &bad]).unwrap();
    assert!(
        r.stderr.contains("line 17") && r.stderr.contains("KUBE-NODE-PORT-XYZ doesn't exist"),
        "{}",
        r.stderr
    );
    assert_eq!(
        s.d.call(&["tables", "save"])
            .unwrap()
            .stdout
            .matches("--match-set")
            .count(),
        11
    );
}
