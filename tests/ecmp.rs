//! Several directors behind ECMP (issue 13, part 4): a router (BIRD 2, an
//! eBGP session per director, `merge paths`) spreads flows over two uvs
//! directors by an L4 hash; each director's uvs runs its own BIRD and
//! announces the VIPs of its healthy services. With `-s mh -b mh-port` on
//! both and `sloppy_tcp=1`, established direct-routing connections keep
//! their real server when one director dies and the router moves its flows
//! to the other.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use uvs::lab::ecmp::{self, director_addr, wait_next_hops};
use uvs::lab::{self, Director, EchoConn, Lab};
use uvs::sys::netns;

mod common;
use common::root_or_skip;

const HOLD_TIME: u64 = 3;
const CONNS: usize = 200;

const SERVICES: [&str; 5] = [
    "-A -t 192.0.2.10:80 -s mh -b mh-port",
    "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -g",
    "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -g",
    // A second VIP with one server, to withdraw and restore.
    "-A -t 192.0.2.20:80 -s rr",
    "-a -t 192.0.2.20:80 -r 203.0.113.11:80 -g",
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A health-checked service on a third VIP: rs1's port 8080, TCP_CHECK.
const KEEPALIVED: &str = "\
virtual_server 192.0.2.30 8080 {
    delay_loop 1
    lb_algo rr
    lb_kind DR
    protocol TCP
    real_server 203.0.113.11 8080 {
        weight 1
        TCP_CHECK {
            connect_timeout 1
            retry 1
            delay_before_retry 0.3
        }
    }
}
";

fn director(lab: &Lab, k: u32, keepalived: &std::path::Path) -> Director {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_uvs"));
    let (las, pas, hold) = (
        ecmp::DIRECTOR_AS.to_string(),
        ecmp::ROUTER_AS.to_string(),
        HOLD_TIME.to_string(),
    );
    let args = [
        "--set-knob",
        "sloppy_tcp=1",
        "--bgp-peer",
        ecmp::ROUTER,
        "--bgp-local-as",
        &las,
        "--bgp-peer-as",
        &pas,
        "--bgp-hold-time",
        &hold,
        "--keepalived",
        keepalived.to_str().unwrap(),
    ];
    let d = Director::start_in(lab, &format!("lb{k}"), exe, &args).expect("uvs run --bgp-peer");
    for c in SERVICES {
        d.uvsadm(c)
            .unwrap_or_else(|e| panic!("{e}\n{}", d.log_text()));
    }
    d
}

/// The runtime directory uvs gives BIRD (next to the control socket).
fn bird_dir(d: &Director) -> PathBuf {
    d.control.with_extension("bird")
}

fn established(d: &Director) -> usize {
    d.uvsadm("-L -n -c")
        .map(|t| t.lines().filter(|l| l.contains("ESTABLISHED")).count())
        .unwrap_or(0)
}

fn hops(lab: &Lab, vip: IpAddr, want: &[IpAddr], what: &str, d: &[&Director]) -> Duration {
    wait_next_hops(lab, vip, want, Duration::from_secs(20)).unwrap_or_else(|seen| {
        panic!(
            "{what}: the router's next hops to {vip} are {seen:?}, not {want:?}\n{}",
            d.iter()
                .map(|d| d.log_text())
                .collect::<Vec<_>>()
                .join("\n----\n")
        )
    })
}

#[test]
fn directors_behind_ecmp_keep_established_dr_connections_when_one_dies() {
    if !root_or_skip("directors_behind_ecmp_keep_established_dr_connections_when_one_dies") {
        return;
    }
    if !ecmp::bird_available() {
        eprintln!("skipping: BIRD 2 (`bird`, Debian package bird2) is not installed");
        return;
    }
    let lab = Lab::up(
        &format!("uxec{}", std::process::id() % 100000),
        &["--ecmp", "2"],
    )
    .expect("lab up --ecmp 2");
    let _s1 = lab::serve_in(&lab.ns("rs1"), "rs1", 80, 53).expect("rs1");
    let _s2 = lab::serve_in(&lab.ns("rs2"), "rs2", 80, 53).expect("rs2");
    let checked = lab::serve_in(&lab.ns("rs1"), "rs1", 8080, 5300).expect("rs1:8080");
    let ka = std::env::temp_dir().join(format!("{}-keepalived.conf", lab.prefix));
    std::fs::write(&ka, KEEPALIVED).unwrap();
    let lb1 = director(&lab, 1, &ka);
    let lb2 = director(&lab, 2, &ka);
    let _ = std::fs::remove_file(&ka);
    let (vip, vip2, vip3) = (ip("192.0.2.10"), ip("192.0.2.20"), ip("192.0.2.30"));
    let both = [director_addr(1), director_addr(2)];

    // One next hop per director for each VIP.
    let t = hops(&lab, vip, &both, "both announce", &[&lb1, &lb2]);
    hops(&lab, vip2, &both, "both announce", &[&lb1, &lb2]);
    eprintln!("ecmp: both directors' routes to {vip} and {vip2} in {t:?}");

    // A service with no weighted server is withdrawn, and comes back.
    lb1.uvsadm("-e -t 192.0.2.20:80 -r 203.0.113.11:80 -g -w 0")
        .unwrap();
    let t = hops(&lab, vip2, &both[1..], "lb1 weight 0", &[&lb1, &lb2]);
    eprintln!("ecmp: lb1's {vip2} withdrawn {t:?} after its only server went to weight 0");
    lb2.uvsadm("-d -t 192.0.2.20:80 -r 203.0.113.11:80")
        .unwrap();
    hops(&lab, vip2, &[], "lb2 server deleted", &[&lb1, &lb2]);
    lb1.uvsadm("-e -t 192.0.2.20:80 -r 203.0.113.11:80 -g -w 1")
        .unwrap();
    lb2.uvsadm("-a -t 192.0.2.20:80 -r 203.0.113.11:80 -g")
        .unwrap();
    let t = hops(&lab, vip2, &both, "servers back", &[&lb1, &lb2]);
    eprintln!("ecmp: {vip2} announced again by both {t:?} after its server came back");
    // The health checks: rs1:8080 stops listening, both directors remove
    // it, the VIP goes; it listens again, the VIP comes back.
    hops(&lab, vip3, &both, "checked service up", &[&lb1, &lb2]);
    drop(checked);
    let t = hops(&lab, vip3, &[], "checked server down", &[&lb1, &lb2]);
    eprintln!("ecmp: {vip3} withdrawn by both {t:?} after its only server stopped listening");
    // Kept listening to the end (the VIP count below is checked).
    let _checked = lab::serve_in(&lab.ns("rs1"), "rs1", 8080, 5300).expect("rs1:8080");
    let t = hops(&lab, vip3, &both, "checked server back", &[&lb1, &lb2]);
    eprintln!("ecmp: {vip3} announced again by both {t:?} after it listened again");
    // The first VIP was never touched by that.
    assert_eq!(ecmp::next_hops(&lab, vip).unwrap(), both);
    assert!(lb1.counter("bgp.reconfigures").unwrap() >= 2);
    assert_eq!(lb1.counter("bgp.announced").unwrap(), 3);
    assert_eq!(lb1.counter("bgp.reconfigure_failures").unwrap(), 0);

    // Long-lived connections, spread by the router over both directors.
    let to: SocketAddr = SocketAddr::new(vip, 80);
    let (mut conns, before): (Vec<EchoConn>, Vec<String>) =
        netns::run_in(&lab.ns("c"), move || {
            let mut cs = Vec::new();
            let mut who = Vec::new();
            for i in 0..CONNS {
                let mut c = EchoConn::connect(to).expect("connect");
                who.push(c.ping(&format!("hello {i}")).expect("first echo"));
                cs.push(c);
            }
            (cs, who)
        })
        .expect("client namespace");
    let (on1, on2) = (established(&lb1), established(&lb2));
    let on_rs1 = before.iter().filter(|w| *w == "rs1").count();
    eprintln!(
        "ecmp: {CONNS} connections: {on1} through lb1, {on2} through lb2; \
         {on_rs1} on rs1, {} on rs2",
        CONNS - on_rs1
    );
    assert!(
        on1 >= CONNS / 5 && on2 >= CONNS / 5 && on1 + on2 >= CONNS,
        "spread {on1}/{on2}"
    );
    assert!(
        (CONNS / 5..=CONNS * 4 / 5).contains(&on_rs1),
        "mh spread {on_rs1}"
    );

    // lb1 dies; its BIRD goes with it (parent-death signal), the router
    // drops the session and the route loses lb1.
    let bird1: Option<i32> = std::fs::read_to_string(bird_dir(&lb1).join("bird.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok());
    let (dir1, sock1) = (bird_dir(&lb1), lb1.control.clone());
    let t0 = Instant::now();
    lb1.kill().expect("SIGKILL lb1");
    let withdrawn = hops(&lab, vip, &both[1..], "lb1 killed", &[&lb2]);
    eprintln!(
        "ecmp failover: the router's route to {vip} lost the killed director in {withdrawn:?} \
         (hold time {HOLD_TIME} s)"
    );
    assert!(withdrawn < Duration::from_secs(HOLD_TIME), "{withdrawn:?}");
    if let Some(pid) = bird1 {
        let end = Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "lb1's BIRD (PID {pid}) outlived it"
        );
    }
    // What the crashed run left: its control socket and BIRD's runtime
    // directory (a next start would clear both).
    let _ = std::fs::remove_dir_all(&dir1);
    let _ = std::fs::remove_file(&sock1);

    // Every established connection keeps its real server through lb2.
    let after: Vec<Result<String, String>> = netns::run_in(&lab.ns("c"), move || {
        conns
            .iter_mut()
            .enumerate()
            .map(|(i, c)| c.ping(&format!("again {i}")).map_err(|e| e.to_string()))
            .collect()
    })
    .expect("client namespace");
    let recovered = t0.elapsed();
    let kept = after
        .iter()
        .zip(&before)
        .filter(|(a, b)| a.as_ref().ok() == Some(*b))
        .count();
    eprintln!(
        "ecmp failover: {kept}/{CONNS} established DR connections kept their real server, \
         all answered within {recovered:?} of the SIGKILL"
    );
    assert!(
        kept * 1000 >= CONNS * 995,
        "{kept}/{CONNS} survived: {:?}\nlb2 log:\n{}",
        after
            .iter()
            .filter(|a| a.is_err())
            .take(3)
            .collect::<Vec<_>>(),
        lb2.log_text()
    );

    // New connections keep working.
    let t = netns::run_in(&lab.ns("c"), move || {
        lab::tcp_requests(to, 50, Duration::from_secs(20))
    })
    .expect("client namespace");
    assert_eq!(t.failures, 0, "new connections after failover: {t:?}");
    assert!(t.count("rs1") > 0 && t.count("rs2") > 0, "{t:?}");

    // A clean stop withdraws first, then removes BIRD's runtime directory.
    let dir2 = bird_dir(&lb2);
    assert!(dir2.join("bird.conf").exists());
    let st = lb2.stop().expect("stop lb2");
    assert!(st.success(), "{st}");
    hops(&lab, vip, &[], "lb2 stopped", &[]);
    assert!(!dir2.exists(), "{} left behind", dir2.display());
}

#[test]
fn bgp_options_are_refused_clearly() {
    let exe = env!("CARGO_BIN_EXE_uvs");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(exe)
            .arg("run")
            .args(args)
            .output()
            .expect("uvs runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&[
        "--bgp-peer",
        "198.51.100.129",
        "--bgp-local-as",
        "65010",
        "--bgp-peer-as",
        "65000",
        "--bird",
        "/nonexistent/bird",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--bird /nonexistent/bird:"), "{err}");
    let (code, err) = run(&["--bgp-peer", "198.51.100.129"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--bgp-peer needs --bgp-local-as ASN and --bgp-peer-as ASN"),
        "{err}"
    );
    let (code, err) = run(&["--bgp-local-as", "65010"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("need --bgp-peer ADDR"), "{err}");
}
