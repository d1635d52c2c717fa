//! The director's own traffic to its real servers (issue: "while uvs runs,
//! the director cannot reach its own real servers"). uvs owns only the NAT
//! replies that belong to its connections — those addressed to clients —
//! so a health checker, a monitoring agent or an operator's `curl` on the
//! director reaches the real servers while client traffic through the VIP
//! is balanced. Checked for NAT over IPv4 and IPv6, direct routing and
//! tunnelling. Needs root; skips without it.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use uvs::lab;
use uvs::sys::netns;

mod common;

use common::{root_or_skip, Endpoint, Setup};

static SERIAL: Mutex<()> = Mutex::new(());

/// Requests from the director to each real server per family and round.
const LOCAL_REQUESTS: usize = 20;
/// Client requests through the VIP, running at the same time.
const CLIENT_REQUESTS: usize = 40;

fn setup(tag: &str, lab_opts: &[&str]) -> Setup {
    Setup::start(
        &format!("uvd{}{tag}", std::process::id() % 100000),
        lab_opts,
        &[],
    )
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("valid literal address")
}

impl Setup {
    fn cmds(&self, cmds: &[String]) {
        for c in cmds {
            self.d
                .uvsadm(c)
                .unwrap_or_else(|e| panic!("{c}: {e}\nuvs log:\n{}", self.d.log_text()));
        }
    }

    /// Connections from the director itself to each of `servers` (name,
    /// address), `LOCAL_REQUESTS` each, while the client sends
    /// `CLIENT_REQUESTS` through `vip`; asserts both succeed and the
    /// client's are balanced.
    fn local_and_client(&self, vip: SocketAddr, servers: &[(&str, SocketAddr)]) {
        let client = netns::spawn_in(&self.lab.ns("c"), move || {
            let t = lab::tcp_requests(vip, CLIENT_REQUESTS, Duration::from_secs(60));
            assert_eq!(t.failures, 0, "client through {vip}: {t:?}");
            assert_eq!(
                (t.count("rs1"), t.count("rs2")),
                (CLIENT_REQUESTS / 2, CLIENT_REQUESTS / 2),
                "client through {vip}: {t:?}"
            );
        })
        .expect("client namespace");
        let servers: Vec<(String, SocketAddr)> =
            servers.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        let local = netns::run_in(&self.lab.ns("lb"), move || {
            let mut failures = Vec::new();
            for _ in 0..LOCAL_REQUESTS {
                for (name, a) in &servers {
                    match lab::tcp_request(*a, Duration::from_secs(3)) {
                        Ok(got) if got == *name => {}
                        other => failures.push(format!("{a}: {other:?}")),
                    }
                }
                if failures.len() >= 5 {
                    break; // enough to show it; each failure costs a timeout
                }
            }
            failures
        })
        .expect("director namespace");
        let client_ok = client.join().is_ok();
        assert!(
            local.is_empty(),
            "the director's own connections failed: {local:?}\nuvs log:\n{}",
            self.d.log_text()
        );
        assert!(client_ok, "client traffic through {vip} failed");
    }
}

fn service(vip: &str, rs: [&str; 2], method: &str) -> Vec<String> {
    let mut c = vec![format!("-A -t {vip}:80 -s rr")];
    for r in rs {
        c.push(format!("-a -t {vip}:80 -r {r}:80 {method}"));
    }
    c
}

#[test]
fn director_reaches_its_nat_real_servers_ipv4_and_ipv6() {
    if !root_or_skip("director_reaches_its_nat_real_servers_ipv4_and_ipv6") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("nat", &[]);
    s.cmds(&service(
        "192.0.2.10",
        ["203.0.113.11", "203.0.113.12"],
        "-m",
    ));
    s.cmds(&service(
        "[2001:db8:f::10]",
        ["[2001:db8:5::11]", "[2001:db8:5::12]"],
        "-m",
    ));
    let servers = [
        ("rs1", addr("203.0.113.11:80")),
        ("rs2", addr("203.0.113.12:80")),
        ("rs1", addr("[2001:db8:5::11]:80")),
        ("rs2", addr("[2001:db8:5::12]:80")),
    ];
    s.local_and_client(addr("192.0.2.10:80"), &servers);
    s.local_and_client(addr("[2001:db8:f::10]:80"), &servers);
    // uvs left the director's replies to the kernel, and says who decided:
    // under AF_PACKET its pipeline passed them (no connection of uvs's);
    // under AF_XDP the program did, before uvs saw them.
    let (name, decided) = if s.d.counter("xdp.steered").is_ok() {
        ("xdp.pass_local", s.d.counter("xdp.pass_local"))
    } else {
        ("passed_to_kernel", s.d.counter("passed_to_kernel"))
    };
    let decided = decided.expect("uvs stats");
    if name == "xdp.pass_local" {
        local_prefixes_follow_the_directors_addresses(&s);
    }
    assert!(
        decided >= (LOCAL_REQUESTS * 4) as u64,
        "{name} = {decided}\n{}",
        s.d.call(&["stats"]).map(|r| r.stdout).unwrap_or_default()
    );
}

#[test]
fn director_reaches_its_dr_and_tunnel_real_servers() {
    if !root_or_skip("director_reaches_its_dr_and_tunnel_real_servers") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("drt", &["--dr"]);
    let servers = [
        ("rs1", addr("203.0.113.11:80")),
        ("rs2", addr("203.0.113.12:80")),
        ("rs1", addr("[2001:db8:5::11]:80")),
        ("rs2", addr("[2001:db8:5::12]:80")),
    ];
    s.cmds(&service(
        "192.0.2.10",
        ["203.0.113.11", "203.0.113.12"],
        "-g",
    ));
    s.local_and_client(addr("192.0.2.10:80"), &servers);
    s.cmds(&["-C".to_string()]);
    let _ep = ["rs1", "rs2"].map(|rs| Endpoint::start(&s.lab, rs, &[]));
    s.cmds(&service(
        "[2001:db8:f::10]",
        ["[2001:db8:5::11]", "[2001:db8:5::12]"],
        "-i --tun-type ipip",
    ));
    s.local_and_client(addr("[2001:db8:f::10]:80"), &servers);
}

/// AF_XDP: the program's local-prefix map follows addresses added to and
/// removed from the director while uvs runs (route events).
fn local_prefixes_follow_the_directors_addresses(s: &Setup) {
    let n = || s.d.counter("xdp.local_prefixes").expect("uvs stats");
    let wait = |want: u64| {
        let end = std::time::Instant::now() + Duration::from_secs(3);
        while n() != want && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        n()
    };
    let ip = |args: &[&str]| {
        let st = std::process::Command::new("ip")
            .args(["-n", &s.lab.ns("lb")])
            .args(args)
            .status()
            .expect("ip");
        assert!(st.success(), "ip {args:?}");
    };
    let before = n();
    assert!(before >= 4, "the director's addresses: {before}");
    ip(&["addr", "add", "192.0.2.200/32", "dev", "lo"]);
    assert_eq!(wait(before + 1), before + 1, "address added");
    ip(&["addr", "del", "192.0.2.200/32", "dev", "lo"]);
    assert_eq!(wait(before), before, "address removed");
}
