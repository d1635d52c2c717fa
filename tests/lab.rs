//! Lab tests: real TCP and UDP traffic from a client namespace through
//! `uvs run` (a real process in the director namespace) to real servers.
//! Each test builds its own uniquely prefixed lab and removes it, also on
//! failure. They need root (network namespaces) and skip without it.
//! They run one at a time: they share two cores with everything else.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use uvs::lab::{self, Director, EchoConn, Lab};
use uvs::sys::netns;

mod common;

use common::{root_or_skip, Endpoint, Setup};

static SERIAL: Mutex<()> = Mutex::new(());

fn vip(s: &str) -> SocketAddr {
    s.parse().expect("valid literal address")
}

fn setup(tag: &str, lab_opts: &[&str], args: &[&str]) -> Setup {
    Setup::start(
        &format!("uvt{}{tag}", std::process::id() % 100000),
        lab_opts,
        args,
    )
}

impl Setup {
    fn cmds(&self, cmds: &[&str]) {
        for c in cmds {
            self.d
                .uvsadm(c)
                .unwrap_or_else(|e| panic!("{e}\nuvs log:\n{}", self.d.log_text()));
        }
    }
    fn tcp(&self, n: usize) -> lab::Tally {
        netns::run_in(&self.lab.ns("c"), move || {
            lab::tcp_requests(vip("192.0.2.10:80"), n, Duration::from_secs(120))
        })
        .expect("client namespace")
    }
    fn echo(&self) -> EchoConn {
        netns::run_in(&self.lab.ns("c"), || {
            EchoConn::connect(vip("192.0.2.10:80"))
        })
        .expect("client namespace")
        .expect("echo connection")
    }
    /// A kernel SNMP counter of the director namespace (`Tcp` `OutRsts`, …).
    fn lb_snmp(&self, group: &str, name: &str) -> u64 {
        let (g, n) = (group.to_string(), name.to_string());
        netns::run_in(&self.lab.ns("lb"), move || {
            let t = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("snmp");
            let mut lines = t.lines().filter(|l| l.starts_with(&format!("{g}:")));
            let (h, v) = (lines.next().expect("header"), lines.next().expect("values"));
            let i = h.split_whitespace().position(|x| x == n).expect("counter");
            v.split_whitespace()
                .nth(i)
                .and_then(|x| x.parse().ok())
                .expect("number")
        })
        .expect("lb namespace")
    }
}

const RR: [&str; 3] = [
    "-A -t 192.0.2.10:80 -s rr",
    "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m",
    "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m",
];

#[test]
fn rr_splits_200_connections_100_100_and_curl_works() {
    if !root_or_skip("rr_splits_200_connections_100_100_and_curl_works") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("rr", &[], &[]);
    s.cmds(&RR);
    let t = s.tcp(200);
    assert_eq!(t.failures, 0, "{t:?}\n{}", s.d.log_text());
    assert_eq!((t.count("rs1"), t.count("rs2")), (100, 100), "{t:?}");
    // A real client: curl through the VIP.
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &s.lab.ns("c"),
            "curl",
            "-sS",
            "--max-time",
            "5",
            "http://192.0.2.10/",
        ])
        .output()
        .expect("curl runs");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.trim() == "rs1" || body.trim() == "rs2",
        "curl: {body:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = s.d.uvsadm("-L -n").expect("list");
    assert!(list.contains("TCP  192.0.2.10:80 rr"), "{list}");
}

#[test]
fn wrr_weights_3_1_give_150_50() {
    if !root_or_skip("wrr_weights_3_1_give_150_50") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("wrr", &[], &[]);
    s.cmds(&[
        "-A -t 192.0.2.10:80 -s wrr",
        "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 3",
        "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 1",
    ]);
    let t = s.tcp(200);
    assert_eq!(t.failures, 0, "{t:?}");
    assert_eq!((t.count("rs1"), t.count("rs2")), (150, 50), "{t:?}");
}

#[test]
fn udp_service_answers() {
    if !root_or_skip("udp_service_answers") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("udp", &[], &[]);
    s.cmds(&[
        "-A -u 192.0.2.10:53 -s rr",
        "-a -u 192.0.2.10:53 -r 203.0.113.11:53 -m",
        "-a -u 192.0.2.10:53 -r 203.0.113.12:53 -m",
    ]);
    let t = netns::run_in(&s.lab.ns("c"), || {
        lab::udp_requests(vip("192.0.2.10:53"), 100, Duration::from_secs(60))
    })
    .unwrap();
    assert_eq!(t.failures, 0, "{t:?}\n{}", s.d.log_text());
    assert_eq!((t.count("rs1"), t.count("rs2")), (50, 50), "{t:?}");
}

/// 1,000 short connections, none failing; the director's kernel sent no
/// RST and forwarded nothing itself (uvs owns the traffic). Run both with
/// the VIP routed to the director and with the VIP on its interface.
fn thousand_connections(tag: &str, lab_opts: &[&str]) {
    let s = setup(tag, lab_opts, &[]);
    s.cmds(&RR);
    let rst0 = s.lb_snmp("Tcp", "OutRsts");
    let fwd0 = s.lb_snmp("Ip", "ForwDatagrams");
    let t = s.tcp(1000);
    assert_eq!(t.failures, 0, "{t:?}\n{}", s.d.log_text());
    assert_eq!(t.total(), 1000);
    assert_eq!(
        s.lb_snmp("Tcp", "OutRsts") - rst0,
        0,
        "the director's kernel sent RSTs"
    );
    assert_eq!(
        s.lb_snmp("Ip", "ForwDatagrams") - fwd0,
        0,
        "the director's kernel forwarded packets too"
    );
}

#[test]
fn thousand_short_connections_routed_vip() {
    if !root_or_skip("thousand_short_connections_routed_vip") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    thousand_connections("k", &[]);
}

#[test]
fn thousand_short_connections_vip_on_director() {
    if !root_or_skip("thousand_short_connections_vip_on_director") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    thousand_connections("kv", &["--vip-on-lb"]);
}

#[test]
fn large_transfer_crosses_with_offloads_on() {
    if !root_or_skip("large_transfer_crosses_with_offloads_on") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("big", &[], &[]);
    s.cmds(&RR);
    // A 4 MiB line each way: TSO/GSO super-packets and pending checksums
    // from the namespaces' stacks cross uvs in both directions.
    let line: String = (0..4 << 20)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut c = s.echo();
    c.send(&line).expect("send");
    let who = c
        .recv(&line, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", s.d.log_text()));
    assert!(who == "rs1" || who == "rs2");
    // Super-packets larger than a (MTU-sized) ring frame were read whole,
    // not truncated.
    assert_eq!(s.d.counter("drop.truncated_by_ring").unwrap(), 0);
}

#[test]
fn filter_drop_at_priority_0_stops_packets_before_ipvs() {
    if !root_or_skip("filter_drop_at_priority_0_stops_packets_before_ipvs") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("flt", &[], &[]);
    s.cmds(&RR);
    let rule = [
        "filter",
        "add",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "-s",
        "198.51.100.10",
        "--dport",
        "80",
        "-j",
        "DROP",
    ];
    assert_eq!(s.d.call(&rule).unwrap().status, 0);
    let conns0 = s.d.counter("connections").unwrap();
    let t = netns::run_in(&s.lab.ns("c"), || {
        lab::tcp_request(vip("192.0.2.10:80"), Duration::from_millis(1500))
    })
    .unwrap();
    assert!(t.is_err(), "the DROP rule let a connection through: {t:?}");
    assert!(s.d.counter("drop.filtered").unwrap() >= 1);
    assert_eq!(
        s.d.counter("connections").unwrap(),
        conns0,
        "IPVS saw a filtered packet"
    );
    let stats = s.d.call(&["stats"]).unwrap().stdout;
    let req_seen = stats
        .lines()
        .find(|l| l.contains("ip_vs_remote_request"))
        .expect("hook line");
    assert!(
        req_seen.contains("seen 0 "),
        "the request hook saw filtered packets: {req_seen}"
    );
    let listing = s.d.call(&["filter", "list"]).unwrap().stdout;
    assert!(
        listing.contains("-A INPUT -p tcp -s 198.51.100.10/32 --dport 80 -j DROP"),
        "{listing}"
    );
    // Removing the rule lets traffic through again.
    let mut del = rule;
    del[1] = "del";
    assert_eq!(s.d.call(&del).unwrap().status, 0);
    assert_eq!(s.tcp(4).failures, 0);
}

#[test]
fn quiesced_server_gets_no_new_connections_but_keeps_open_ones() {
    if !root_or_skip("quiesced_server_gets_no_new_connections_but_keeps_open_ones") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("qui", &[], &[]);
    s.cmds(&RR);
    let mut c = s.echo();
    let who = c.ping("hello").expect("echo");
    let (ip, other) = if who == "rs1" {
        ("203.0.113.11", "rs2")
    } else {
        ("203.0.113.12", "rs1")
    };
    s.cmds(&[&format!("-e -t 192.0.2.10:80 -r {ip}:80 -m -w 0")]);
    let t = s.tcp(20);
    assert_eq!(t.failures, 0);
    assert_eq!(
        t.count(other),
        20,
        "new connections must avoid the quiesced server: {t:?}"
    );
    assert_eq!(
        c.ping("still there")
            .expect("open connection keeps working"),
        who
    );
}

/// `-d` of a server with an open connection, then re-adding it.
fn removed_server(expire_nodest_conn: bool) {
    let tag = if expire_nodest_conn { "nd1" } else { "nd0" };
    let knob = format!("expire_nodest_conn={}", u8::from(expire_nodest_conn));
    let s = setup(tag, &[], &["--set-knob", &knob]);
    s.cmds(&RR);
    let mut c = s.echo();
    let who = c.ping("one").expect("echo");
    let ip = if who == "rs1" {
        "203.0.113.11"
    } else {
        "203.0.113.12"
    };
    s.cmds(&[&format!("-d -t 192.0.2.10:80 -r {ip}:80")]);
    c.send("two").unwrap();
    // Knob on: the table's sweep may expire the entry before this packet
    // arrives, which then finds no connection; either way it is counted.
    let dropped = || {
        let mut n = s.d.counter("drop.dest_removed").unwrap();
        if expire_nodest_conn {
            n += s.d.counter("drop.no_connection").unwrap();
        }
        n
    };
    // Silently dropped either way: counted (waited for, bounded), with no
    // answer and no reset. The sooner the server is back, the sooner TCP's
    // backed-off retransmission finds it.
    common::wait_until(Duration::from_secs(5), || dropped() >= 1);
    assert!(c.recv("two", Duration::from_millis(300)).is_err());
    let dropped = dropped();
    assert!(
        dropped >= 1,
        "packets to the removed server must be dropped and counted"
    );
    let no_conn = s.d.counter("drop.no_connection").unwrap();
    s.cmds(&[&format!("-a -t 192.0.2.10:80 -r {ip}:80 -m")]);
    if expire_nodest_conn {
        // The entry expired at its first packet: the next retransmission
        // (TCP backs off: within 8 s) finds no connection and is dropped;
        // the flow is gone. Waits for that drop, not the whole 8 s.
        let end = std::time::Instant::now() + Duration::from_secs(8);
        while s.d.counter("drop.no_connection").unwrap() == no_conn
            && std::time::Instant::now() < end
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            s.d.counter("drop.no_connection").unwrap() > no_conn,
            "a retransmission after the re-add found no connection"
        );
        let answer = c.recv("two", Duration::from_millis(300));
        assert!(
            answer.is_err(),
            "the connection should have expired: {answer:?}"
        );
    } else {
        let answer = c.recv("two", Duration::from_secs(8));
        // The entry waited: re-adding the server resumes the connection.
        assert_eq!(answer.expect("resumed"), who);
        assert_eq!(c.ping("three").expect("resumed"), who);
    }
}

#[test]
fn removed_server_expire_nodest_conn_off_resumes_on_readd() {
    if !root_or_skip("removed_server_expire_nodest_conn_off_resumes_on_readd") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    removed_server(false);
}

#[test]
fn removed_server_expire_nodest_conn_on_expires_entry() {
    if !root_or_skip("removed_server_expire_nodest_conn_on_expires_entry") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    removed_server(true);
}

fn lb_has_uvs_table(lab: &Lab) -> bool {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.ns("lb"), "nft", "list", "tables"])
        .output()
        .expect("nft runs");
    String::from_utf8_lossy(&out.stdout).contains("netdev uvs")
}

#[test]
fn stopping_leaves_nothing_behind_and_restart_after_crash_cleans_up() {
    if !root_or_skip("stopping_leaves_nothing_behind_and_restart_after_crash_cleans_up") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("stop", &[], &[]);
    s.cmds(&RR);
    // The kernel guard: an nftables table, or under AF_XDP the XDP program
    // (attached through a BPF link, so detached even by SIGKILL).
    let xdp = common::uses_af_xdp(&s.d);
    let lb = s.lab.ns("lb");
    let guard = |lab: &Lab| {
        if xdp {
            common::xdp_attached(&lb)
        } else {
            lb_has_uvs_table(lab)
        }
    };
    assert!(guard(&s.lab));
    // Crash: SIGKILL leaves the socket file behind; the kernel removes the
    // guard with uvs's netlink socket (owned table) or its BPF link.
    // SAFETY: kill(2) on the PID of the uvs process this test started.
    unsafe { libc::kill(s.d.pid() as i32, libc::SIGKILL) };
    // Gone once the process is (a loaded machine takes its time to reap).
    assert!(
        common::wait_until(Duration::from_secs(10), || !guard(&s.lab)),
        "the kernel guard dies with uvs"
    );
    let Setup {
        d,
        servers: _servers,
        lab,
    } = s;
    let _ = d.stop();
    // ...and a restart cleans them first, then serves again.
    let d = Director::start(&lab, Path::new(env!("CARGO_BIN_EXE_uvs")), &[])
        .expect("restart after crash");
    for c in RR {
        d.uvsadm(c).unwrap();
    }
    let t = netns::run_in(&lab.ns("c"), || {
        lab::tcp_requests(vip("192.0.2.10:80"), 10, Duration::from_secs(30))
    })
    .unwrap();
    assert_eq!(t.failures, 0, "{t:?}");
    let control = d.control.clone();
    let status = d.stop().unwrap();
    assert!(status.success(), "uvs exit status {status}");
    assert!(!guard(&lab), "uvs left its kernel guard behind");
    assert!(!control.exists(), "uvs left its control socket behind");
}

#[test]
fn bad_commands_are_rejected_and_change_nothing() {
    if !root_or_skip("bad_commands_are_rejected_and_change_nothing") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("bad", &[], &[]);
    s.cmds(&RR);
    let before = s.d.uvsadm("-S -n").unwrap();
    for bad in [
        vec!["uvsadm", "-A", "-t", "192.0.2.12:80", "-p", "--pe", "sip"],
        vec![
            "uvsadm",
            "-a",
            "-t",
            "192.0.2.10:80",
            "-r",
            "203.0.113.13:80",
            "-i",
            "--tun-type",
            "gue",
        ],
        vec!["uvsadm", "-A", "-t", "192.0.2.10:80", "-s", "rr"],
        vec!["uvsadm", "-A", "-t", "192.0.2.11:80", "-s", "nosuch"],
        vec!["uvsadm", "-a", "-t", "192.0.2.10:x", "-r", "203.0.113.13"],
        vec![
            "uvsadm-restore",
            "-A -t 192.0.2.20:80 -s rr\n-a -t 192.0.2.20:80 -r 203.0.113.11:80 -m -w 70000\n",
        ],
    ] {
        let r = s.d.call(&bad).unwrap();
        assert_ne!(r.status, 0, "{bad:?} was accepted");
        assert!(!r.stderr.trim().is_empty(), "{bad:?} gave no message");
    }
    assert_eq!(s.d.uvsadm("-S -n").unwrap(), before);
    assert_eq!(s.tcp(4).failures, 0);
}

#[test]
fn ipv6_nat_tcp_and_udp() {
    if !root_or_skip("ipv6_nat_tcp_and_udp") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("v6", &[], &[]);
    s.cmds(&[
        "-A -t [2001:db8:f::10]:80 -s rr",
        "-a -t [2001:db8:f::10]:80 -r [2001:db8:5::11]:80 -m",
        "-a -t [2001:db8:f::10]:80 -r [2001:db8:5::12]:80 -m",
        "-A -u [2001:db8:f::10]:53 -s rr",
        "-a -u [2001:db8:f::10]:53 -r [2001:db8:5::11]:53 -m",
        "-a -u [2001:db8:f::10]:53 -r [2001:db8:5::12]:53 -m",
    ]);
    let t = netns::run_in(&s.lab.ns("c"), || {
        lab::tcp_requests(vip("[2001:db8:f::10]:80"), 20, Duration::from_secs(60))
    })
    .unwrap();
    assert_eq!(t.failures, 0, "{t:?}\n{}", s.d.log_text());
    assert_eq!((t.count("rs1"), t.count("rs2")), (10, 10), "{t:?}");
    let u = netns::run_in(&s.lab.ns("c"), || {
        lab::udp_requests(vip("[2001:db8:f::10]:53"), 10, Duration::from_secs(60))
    })
    .unwrap();
    assert_eq!(u.failures, 0, "{u:?}");
    assert_eq!((u.count("rs1"), u.count("rs2")), (5, 5), "{u:?}");
    // Random bytes arrive intact and come back (NAT over IPv6).
    let line = random_line(200_000, 5);
    let echoed = netns::run_in(&s.lab.ns("c"), move || -> std::io::Result<String> {
        let mut c = EchoConn::connect(vip("[2001:db8:f::10]:80"))?;
        c.send(&line)?;
        c.recv(&line, Duration::from_secs(20))
    })
    .unwrap();
    assert!(echoed.is_ok(), "{echoed:?}");
    let list = s.d.uvsadm("-L -n").unwrap();
    assert!(list.contains("TCP  [2001:db8:f::10]:80 rr"), "{list}");
}

fn uvsadm_bin(control: &Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write as _;
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_uvsadm"))
        .arg("--control")
        .arg(control)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("uvsadm runs");
    if let Some(text) = stdin {
        c.stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(c.stdin.take());
    let o = c.wait_with_output().expect("uvsadm exits");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn uvsadm_binary_save_clear_restore_round_trip() {
    if !root_or_skip("uvsadm_binary_save_clear_restore_round_trip") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("adm", &[], &[]);
    let ctl = s.d.control.clone();
    for c in RR {
        let args: Vec<&str> = c.split_whitespace().collect();
        assert_eq!(uvsadm_bin(&ctl, &args, None).0, 0, "{c}");
    }
    assert_eq!(
        uvsadm_bin(&ctl, &["-E", "-t", "192.0.2.10:80", "-s", "wrr"], None).0,
        0
    );
    let (code, saved, _) = uvsadm_bin(&ctl, &["-S", "-n"], None);
    assert_eq!(code, 0);
    assert_eq!(
        saved,
        "-A -t 192.0.2.10:80 -s wrr\n-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 1\n-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 1\n"
    );
    assert_eq!(uvsadm_bin(&ctl, &["-C"], None).0, 0);
    let (_, empty, _) = uvsadm_bin(&ctl, &["-S", "-n"], None);
    assert_eq!(empty, "");
    assert_eq!(s.tcp(1).failures, 1, "a cleared service must not answer");
    let (code, _, err) = uvsadm_bin(&ctl, &["-R"], Some(&saved));
    assert_eq!(code, 0, "{err}");
    assert_eq!(uvsadm_bin(&ctl, &["-S", "-n"], None).1, saved);
    assert_eq!(s.tcp(10).failures, 0);
    // Every method, tunnel option and IPv6 survive -S / -C / -R.
    let all = "-A -t 192.0.2.20:80 -s wlc\n\
-a -t 192.0.2.20:80 -r 203.0.113.11:80 -m -w 2\n\
-a -t 192.0.2.20:80 -r 203.0.113.12:80 -g -w 1\n\
-A -u 192.0.2.20:53 -s sh -b sh-fallback,sh-port\n\
-a -u 192.0.2.20:53 -r 203.0.113.11:53 -i -w 1 --tun-type gue --tun-port 6080 --tun-remcsum\n\
-a -u 192.0.2.20:53 -r 203.0.113.12:53 -i -w 1 --tun-type gre --tun-csum\n\
-A -t [2001:db8:f::20]:443 -s mh -p 120\n\
-a -t [2001:db8:f::20]:443 -r [2001:db8:5::11]:443 -i -w 1\n\
-a -t [2001:db8:f::20]:443 -r [2001:db8:5::12]:443 -m -w 5\n\
-A --sctp-service 192.0.2.20:5000 -s rr\n\
-a --sctp-service 192.0.2.20:5000 -r 203.0.113.11:5000 -m -w 1\n";
    assert_eq!(uvsadm_bin(&ctl, &["-C"], None).0, 0);
    let (code, _, err) = uvsadm_bin(&ctl, &["-R"], Some(all));
    assert_eq!(code, 0, "{err}");
    let (_, saved_all, _) = uvsadm_bin(&ctl, &["-S", "-n"], None);
    for want in [
        "--tun-type gue --tun-port 6080 --tun-remcsum",
        "--tun-type gre --tun-csum",
        "[2001:db8:5::11]:443 -i",
        "sh-fallback",
        "-p 120",
        "--sctp-service",
    ] {
        assert!(
            saved_all.contains(want),
            "{want} missing from:\n{saved_all}"
        );
    }
    assert_eq!(uvsadm_bin(&ctl, &["-C"], None).0, 0);
    assert_eq!(uvsadm_bin(&ctl, &["-R"], Some(&saved_all)).0, 0);
    assert_eq!(uvsadm_bin(&ctl, &["-S", "-n"], None).1, saved_all);
    assert_eq!(uvsadm_bin(&ctl, &["-C"], None).0, 0);
    assert_eq!(uvsadm_bin(&ctl, &["-R"], Some(&saved)).0, 0);
    // -D removes the service; a bad option is named.
    assert_eq!(uvsadm_bin(&ctl, &["-D", "-t", "192.0.2.10:80"], None).0, 0);
    let (code, _, err) = uvsadm_bin(&ctl, &["-A", "-t", "192.0.2.10:80", "--bogus"], None);
    assert_ne!(code, 0);
    assert!(err.contains("--bogus"), "{err}");
}

#[test]
fn config_file_at_start_and_bad_files_rejected() {
    if !root_or_skip("config_file_at_start_and_bad_files_rejected") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir();
    let good = dir.join(format!("uvs-good-{}.rules", std::process::id()));
    let bad = dir.join(format!("uvs-bad-{}.rules", std::process::id()));
    std::fs::write(&good, "# saved by uvsadm -S -n\n-A -t 192.0.2.10:80 -s wrr\n-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 3\n-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 1\n").unwrap();
    std::fs::write(
        &bad,
        "-A -t 192.0.2.10:80 -s rr\n-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w nine\n",
    )
    .unwrap();
    let s = setup("cfg", &[], &["--config", good.to_str().unwrap()]);
    let t = s.tcp(40);
    assert_eq!(
        (t.count("rs1"), t.count("rs2"), t.failures),
        (30, 10, 0),
        "{t:?}"
    );
    // A bad file: uvs refuses to start and names the line.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &s.lab.ns("lb")])
        .arg(env!("CARGO_BIN_EXE_uvs"))
        .args([
            "run",
            "--control",
            "/run/uvs/uvs-badcfg-test.sock",
            "--config",
            bad.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("line 2") && err.contains("illegal weight"),
        "{err}"
    );
    let _ = std::fs::remove_file(good);
    let _ = std::fs::remove_file(bad);
}

#[test]
fn malformed_packets_are_counted_and_dropped_and_traffic_goes_on() {
    if !root_or_skip("malformed_packets_are_counted_and_dropped_and_traffic_goes_on") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("mal", &[], &[]);
    s.cmds(&RR);
    // IP packets to the VIP with broken TCP headers, sent from the client
    // through a raw socket (the kernel fills in the IP length and checksum).
    let sent = netns::run_in(&s.lab.ns("c"), || -> std::io::Result<usize> {
        use socket2::{Domain, Protocol, Socket, Type};
        let sock = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )?;
        let to: SocketAddr = vip("192.0.2.10:0");
        let frame = uvs_fwd::build::FrameSpec {
            src: "198.51.100.10".parse().expect("literal"),
            payload: Vec::new(),
            ..uvs_fwd::build::FrameSpec::tcp_v4()
        }
        .build();
        let ip = &frame[14..];
        // 1: TCP data offset 3 (below the minimum 5).
        let mut a = ip.to_vec();
        a[20 + 12] = 3 << 4;
        // 2: TCP header cut to 10 bytes.
        let b = ip[..30].to_vec();
        for _ in 0..5 {
            sock.send_to(&a, &to.into())?;
            sock.send_to(&b, &to.into())?;
        }
        Ok(10)
    })
    .unwrap()
    .expect("raw send");
    assert_eq!(sent, 10);
    common::wait_until(Duration::from_secs(5), || {
        s.d.counter("drop.malformed").unwrap_or(0) >= 10
    });
    assert!(
        s.d.counter("parse.bad_tcp_data_offset").unwrap() >= 5,
        "{}",
        s.d.call(&["stats"]).unwrap().stdout
    );
    assert!(s.d.counter("parse.truncated_l4").unwrap() >= 5);
    assert!(s.d.counter("drop.malformed").unwrap() >= 10);
    let t = s.tcp(10);
    assert_eq!(t.failures, 0, "the engine must keep working: {t:?}");
}

#[test]
fn sh_keeps_one_client_on_one_server() {
    if !root_or_skip("sh_keeps_one_client_on_one_server") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("sh", &[], &[]);
    s.cmds(&[
        "-A -t 192.0.2.10:80 -s sh -b sh-fallback",
        "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m",
        "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m",
    ]);
    let t = s.tcp(50);
    assert_eq!(t.failures, 0, "{t:?}");
    assert_eq!(
        t.by_server.len(),
        1,
        "sh must send one client to one server: {t:?}"
    );
    assert!(s
        .d
        .uvsadm("-L -n")
        .unwrap()
        .contains("TCP  192.0.2.10:80 sh (sh-fallback)"));
    // A flag of another scheduler is refused and changes nothing.
    let r =
        s.d.call(&[
            "uvsadm",
            "-E",
            "-t",
            "192.0.2.10:80",
            "-s",
            "sh",
            "-b",
            "mh-port",
        ])
        .unwrap();
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("mh-port"), "{}", r.stderr);
    // With the chosen server quiesced, sh-fallback moves the client.
    let only = t.by_server.keys().next().cloned().unwrap_or_default();
    let ip = if only == "rs1" {
        "203.0.113.11"
    } else {
        "203.0.113.12"
    };
    s.cmds(&[&format!("-e -t 192.0.2.10:80 -r {ip}:80 -m -w 0")]);
    let t2 = s.tcp(10);
    assert_eq!(t2.failures, 0);
    assert_eq!(t2.count(&only), 0, "{t2:?}");
}

#[test]
fn wlc_sends_new_connections_to_the_least_loaded_server() {
    if !root_or_skip("wlc_sends_new_connections_to_the_least_loaded_server") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("wlc", &[], &[]);
    s.cmds(&[
        "-A -t 192.0.2.10:80 -s wlc",
        "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m",
        "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 0",
    ]);
    // Four long-lived connections on rs1 while rs2 is quiesced...
    let mut open: Vec<EchoConn> = (0..4).map(|_| s.echo()).collect();
    for c in &mut open {
        assert_eq!(c.ping("x").unwrap(), "rs1");
    }
    // ...then rs2 comes in: the next four all go to it (least loaded),
    // after which the two alternate.
    s.cmds(&["-e -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 1"]);
    let mut next = Vec::new();
    for i in 0..4 {
        let mut c = s.echo();
        assert_eq!(
            c.ping("y").unwrap(),
            "rs2",
            "connection {i} after the weight change"
        );
        next.push(c);
    }
    let list = s.d.uvsadm("-L -n").unwrap();
    assert!(
        list.contains("203.0.113.11:80              Masq    1      4"),
        "{list}"
    );
    assert!(
        list.contains("203.0.113.12:80              Masq    1      4"),
        "{list}"
    );
    let mut both: Vec<String> = (0..2).map(|_| s.echo().ping("z").unwrap()).collect();
    both.sort();
    assert_eq!(both, ["rs1", "rs2"]);
}

#[test]
fn every_scheduler_carries_traffic() {
    if !root_or_skip("every_scheduler_carries_traffic") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("all", &[], &["--mh-table-size", "251"]);
    s.cmds(&RR);
    let names: Vec<&str> = uvs_sched::Registry::names().collect();
    assert_eq!(names.len(), 14, "{names:?}");
    for name in names {
        s.cmds(&[&format!("-E -t 192.0.2.10:80 -s {name}")]);
        let t = s.tcp(6);
        assert_eq!(t.failures, 0, "{name}: {t:?}");
        assert_eq!(t.total(), 6, "{name}");
        assert!(s
            .d
            .uvsadm("-L -n")
            .unwrap()
            .contains(&format!("TCP  192.0.2.10:80 {name}")));
    }
}

#[test]
fn persistence_keeps_a_client_on_its_server_and_port_0_services_work() {
    if !root_or_skip("persistence_keeps_a_client_on_its_server_and_port_0_services_work") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("per", &[], &[]);
    s.cmds(&[
        "-A -t 192.0.2.10:80 -s rr -p 60",
        "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m",
        "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m",
    ]);
    let t = s.tcp(20);
    assert_eq!(t.failures, 0, "{t:?}");
    assert_eq!(
        t.by_server.len(),
        1,
        "rr under -p must keep one client on one server: {t:?}"
    );
    let conns = s.d.uvsadm("-L -n -c").unwrap();
    assert!(
        conns.contains("TCP 01:") && conns.contains("NONE"),
        "a template should be listed:\n{conns}"
    );
    let persist = s.d.uvsadm("-L -n --persistent-conn").unwrap();
    assert!(persist.contains("1"), "{persist}");
    // A port-0 persistent service: every port of the VIP, servers on the
    // client's port.
    s.cmds(&[
        "-D -t 192.0.2.10:80",
        "-A -t 192.0.2.10:0 -s rr -p 30",
        "-a -t 192.0.2.10:0 -r 203.0.113.11:0 -m",
        "-a -t 192.0.2.10:0 -r 203.0.113.12:0 -m",
    ]);
    let t = s.tcp(10);
    assert_eq!(t.failures, 0, "{t:?}\n{}", s.d.log_text());
    assert_eq!(t.by_server.len(), 1, "{t:?}");
}

/// A line of pseudo-random printable bytes (seeded, reproducible).
fn random_line(len: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 94) as u8)
        })
        .filter(|c| *c != ':')
        .collect()
}

#[test]
fn direct_routing_ipv4_and_ipv6_replies_bypass_uvs() {
    if !root_or_skip("direct_routing_ipv4_and_ipv6_replies_bypass_uvs") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup(
        "dr",
        &["--dr"],
        // The cases clear the configuration in between; a client port reused
        // from a finished DR/TUN connection (FIN_WAIT to a removed server)
        // must not be dropped: expire those entries, as operators do.
        &["--set-knob", "expire_nodest_conn=1"],
    );
    for (vip_tcp, vip_udp, rs1, rs2) in [
        (
            "192.0.2.10:80",
            "192.0.2.10:53",
            "203.0.113.11",
            "203.0.113.12",
        ),
        (
            "[2001:db8:f::10]:80",
            "[2001:db8:f::10]:53",
            "[2001:db8:5::11]",
            "[2001:db8:5::12]",
        ),
    ] {
        let port = |a: &str| a.rsplit(':').next().unwrap_or("").to_string();
        let (pt, pu) = (port(vip_tcp), port(vip_udp));
        s.cmds(&[
            &format!("-A -t {vip_tcp} -s rr"),
            &format!("-a -t {vip_tcp} -r {rs1}:{pt} -g"),
            &format!("-a -t {vip_tcp} -r {rs2}:{pt}"),
            &format!("-A -u {vip_udp} -s rr"),
            &format!("-a -u {vip_udp} -r {rs1}:{pu} -g"),
            &format!("-a -u {vip_udp} -r {rs2}:{pu} -g"),
        ]);
        let list = s.d.uvsadm("-L -n").unwrap();
        assert!(list.contains("Route"), "{list}");
        let (t_vip, u_vip) = (vip(vip_tcp), vip(vip_udp));
        let t = netns::run_in(&s.lab.ns("c"), move || {
            lab::tcp_requests(t_vip, 20, Duration::from_secs(60))
        })
        .unwrap();
        assert_eq!(t.failures, 0, "{vip_tcp}: {t:?}\n{}", s.d.log_text());
        assert_eq!((t.count("rs1"), t.count("rs2")), (10, 10), "{t:?}");
        // Random bytes arrive intact and come back.
        let line = random_line(200_000, 7);
        let echoed = netns::run_in(&s.lab.ns("c"), move || -> std::io::Result<String> {
            let mut c = EchoConn::connect(t_vip)?;
            c.send(&line)?;
            c.recv(&line, Duration::from_secs(20))
        })
        .unwrap();
        assert!(echoed.is_ok(), "{vip_tcp}: {echoed:?}");
        // UDP: 50 exchanges; uvs sees the 50 requests, not the 50 replies.
        let rx0 = s.d.counter("rx").unwrap();
        let u = netns::run_in(&s.lab.ns("c"), move || {
            lab::udp_requests(u_vip, 50, Duration::from_secs(60))
        })
        .unwrap();
        assert_eq!(u.failures, 0, "{vip_udp}: {u:?}");
        assert_eq!(u.total(), 50);
        let seen = s.d.counter("rx").unwrap() - rx0;
        assert!(
            (50..75).contains(&seen),
            "{vip_udp}: uvs received {seen} frames for 50 exchanges: replies did not bypass it"
        );
        s.cmds(&["-C"]);
    }
}

#[test]
fn no_available_server_answers_icmp_port_unreachable() {
    if !root_or_skip("no_available_server_answers_icmp_port_unreachable") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("icmp", &[], &[]);
    s.cmds(&[
        "-A -t 192.0.2.10:80 -s rr",
        "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 0",
        "-A -u 192.0.2.10:53 -s rr",
        "-a -u 192.0.2.10:53 -r 203.0.113.11:53 -m -w 0",
    ]);
    let (tcp, udp) = netns::run_in(&s.lab.ns("c"), || {
        let tcp =
            std::net::TcpStream::connect_timeout(&vip("192.0.2.10:80"), Duration::from_secs(3))
                .map(drop);
        let udp = (|| -> std::io::Result<()> {
            let u = std::net::UdpSocket::bind("0.0.0.0:0")?;
            u.connect(vip("192.0.2.10:53"))?;
            u.set_read_timeout(Some(Duration::from_secs(2)))?;
            u.send(b"anyone?")?;
            let mut b = [0u8; 64];
            u.recv(&mut b).map(drop)
        })();
        (tcp, udp)
    })
    .unwrap();
    // The kernel turns ICMP port unreachable into "connection refused".
    let kind = |r: &std::io::Result<()>| r.as_ref().err().map(|e| e.kind());
    assert_eq!(
        kind(&tcp),
        Some(std::io::ErrorKind::ConnectionRefused),
        "{tcp:?}"
    );
    assert_eq!(
        kind(&udp),
        Some(std::io::ErrorKind::ConnectionRefused),
        "{udp:?}"
    );
    assert!(s.d.counter("icmp_sent").unwrap() >= 2);
    assert!(s.d.counter("drop.no_destination").unwrap() >= 2);
    // A burst (bounded: 300 datagrams) is answered at the kernel's ICMP rate,
    // not one error per packet.
    let no_dest = s.d.counter("drop.no_destination").unwrap();
    netns::run_in(&s.lab.ns("c"), || -> std::io::Result<()> {
        let u = std::net::UdpSocket::bind("0.0.0.0:0")?;
        for _ in 0..300 {
            u.send_to(b"flood", vip("192.0.2.10:53"))?;
        }
        Ok(())
    })
    .unwrap()
    .unwrap();
    // Until uvs has seen the whole burst (bounded; the checks say the rest).
    common::wait_until(Duration::from_secs(5), || {
        s.d.counter("drop.no_destination").unwrap_or(0) >= no_dest + 300
    });
    let sent = s.d.counter("icmp_sent").unwrap();
    assert!(
        s.d.counter("icmp_rate_limited").unwrap() > 0,
        "no ICMP was rate-limited ({sent} sent)"
    );
    assert!(sent < 250, "{sent} ICMP errors for 300 packets");
}

#[test]
fn icmp_error_from_a_real_server_reaches_the_client_rewritten() {
    if !root_or_skip("icmp_error_from_a_real_server_reaches_the_client_rewritten") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("ice", &[], &[]);
    // Nothing listens on port 54 on the real server: it answers the
    // (DNATed) datagram with ICMP port unreachable quoting client → RS:54.
    s.cmds(&[
        "-A -u 192.0.2.10:54 -s rr",
        "-a -u 192.0.2.10:54 -r 203.0.113.11:54 -m",
    ]);
    let fwd0 = s.lb_snmp("Ip", "ForwDatagrams");
    let r = netns::run_in(&s.lab.ns("c"), || -> std::io::Result<()> {
        let u = std::net::UdpSocket::bind("0.0.0.0:0")?;
        u.connect(vip("192.0.2.10:54"))?;
        u.set_read_timeout(Some(Duration::from_secs(2)))?;
        u.send(b"is anyone there")?;
        let mut b = [0u8; 64];
        u.recv(&mut b).map(drop)
    })
    .unwrap();
    // The client's kernel reports "connection refused" only for an ICMP
    // error with a valid checksum whose quoted packet is exactly what this
    // socket sent: client → VIP:54, so both layers were rewritten.
    assert_eq!(
        r.as_ref().err().map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused),
        "{r:?}"
    );
    let stats = s.d.call(&["stats"]).unwrap().stdout;
    let line = stats
        .lines()
        .find(|l| l.contains("ip_vs_forward_icmp"))
        .expect("hook line")
        .to_string();
    assert!(!line.contains("stolen 0 "), "{line}");
    let fwd = s.lb_snmp("Ip", "ForwDatagrams") - fwd0;
    assert_eq!(fwd, 0, "the director's kernel forwarded the raw error too");
}

/// CRC-32C, bitwise (independent of uvs-fwd's, which uses the crc32c crate).
fn crc32c_bitwise(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An SCTP packet: common header, then chunks (type, flags, value), each
/// padded to 4 bytes; CRC-32C stored little-endian as on the wire.
fn sctp_packet(sport: u16, dport: u16, vtag: u32, chunks: &[(u8, u8, Vec<u8>)]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&vtag.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    for (t, f, v) in chunks {
        p.push(*t);
        p.push(*f);
        p.extend_from_slice(&((4 + v.len()) as u16).to_be_bytes());
        p.extend_from_slice(v);
        while p.len() % 4 != 0 {
            p.push(0);
        }
    }
    let crc = crc32c_bitwise(&p);
    p[8..12].copy_from_slice(&crc.to_le_bytes());
    p
}

/// A received SCTP packet: (source, ports, vtag, first chunk type, its
/// value) after checking the CRC; `None` for anything else.
fn sctp_parse(ip: &[u8]) -> Option<(std::net::Ipv4Addr, u16, u16, u32, u8, Vec<u8>)> {
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    let s = ip.get(ihl..)?;
    if ip.get(9) != Some(&132) || s.len() < 16 {
        return None;
    }
    let mut z = s.to_vec();
    z[8..12].fill(0);
    let crc = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    assert_eq!(crc, crc32c_bitwise(&z), "SCTP packet with a wrong CRC-32C");
    let src = std::net::Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let len = usize::from(u16::from_be_bytes([s[14], s[15]]));
    let value = s.get(16..12 + len.max(4))?.to_vec();
    Some((
        src,
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        u32::from_be_bytes([s[4], s[5], s[6], s[7]]),
        s[12],
        value,
    ))
}

fn raw_sctp() -> std::io::Result<socket2::Socket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(132)),
    )?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(s)
}

/// Sends `pkt` to `to` and waits for an SCTP packet from `from_port`.
fn sctp_exchange(
    pkt: Vec<u8>,
    to: &str,
    from_port: u16,
) -> Option<(std::net::Ipv4Addr, u16, u16, u32, u8, Vec<u8>)> {
    use std::io::Read;
    let s = raw_sctp().ok()?;
    let to: SocketAddr = vip(&format!("{to}:0"));
    s.send_to(&pkt, &to.into()).ok()?;
    let end = std::time::Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 2048];
    while std::time::Instant::now() < end {
        if let Ok(n) = (&s).read(&mut buf) {
            if let Some(r) = sctp_parse(&buf[..n]) {
                if r.1 == from_port {
                    return Some(r);
                }
            }
        }
    }
    None
}

#[test]
fn sctp_association_through_nat_with_valid_crc32c() {
    if !root_or_skip("sctp_association_through_nat_with_valid_crc32c") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    sctp_association("-m");
}

#[test]
fn sctp_association_by_direct_routing_and_tunnel() {
    if !root_or_skip("sctp_association_by_direct_routing_and_tunnel") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    sctp_association("-g");
    sctp_association("-i --tun-type gre");
}

/// A whole SCTP association (INIT … SHUTDOWN COMPLETE) from the client to
/// a raw-socket SCTP responder on rs1, through the service with method
/// `method`. NAT: the responder answers from its own address and uvs
/// rewrites; DR/TUN: it answers from the VIP (on its `lo`) straight to the
/// client. Every packet's CRC-32C is checked on arrival.
fn sctp_association(method: &str) {
    let nat = method == "-m";
    let tag = if nat {
        "sctp"
    } else if method == "-g" {
        "sctpg"
    } else {
        "sctpi"
    };
    let s = setup(tag, if nat { &[] } else { &["--dr"] }, &[]);
    let _ep = method.starts_with("-i").then(|| endpoints(&s.lab));
    s.cmds(&[
        "-A --sctp-service 192.0.2.10:5000 -s rr",
        &format!("-a --sctp-service 192.0.2.10:5000 -r 203.0.113.11:5000 {method}"),
    ]);
    // The real server: a raw-socket SCTP responder (rs1 has no SCTP stack).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    // The client's INIT is sent once: only after the responder listens.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = netns::spawn_in(&s.lab.ns("rs1"), move || {
        use std::io::Read;
        let Ok(sock) = raw_sctp() else { return };
        if !nat {
            let vip_src: SocketAddr = vip("192.0.2.10:0");
            if sock.bind(&vip_src.into()).is_err() {
                return;
            }
        }
        let _ = ready_tx.send(());
        let mut buf = [0u8; 2048];
        let my_tag = 0x5253_0001u32;
        let mut peer_tag = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok(n) = (&sock).read(&mut buf) else {
                continue;
            };
            let Some((src, sport, dport, _vtag, chunk, value)) = sctp_parse(&buf[..n]) else {
                continue;
            };
            if dport != 5000 {
                continue;
            }
            let reply: Vec<(u8, u8, Vec<u8>)> = match chunk {
                1 => {
                    peer_tag = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
                    let mut v = Vec::new();
                    v.extend_from_slice(&my_tag.to_be_bytes());
                    v.extend_from_slice(&65535u32.to_be_bytes());
                    v.extend_from_slice(&[0, 1, 0, 1]);
                    v.extend_from_slice(&1000u32.to_be_bytes());
                    v.extend_from_slice(&[0, 7, 0, 12]); // state cookie parameter
                    v.extend_from_slice(b"cookie!!");
                    vec![(2, 0, v)]
                }
                10 => vec![(11, 0, Vec::new())],
                0 => {
                    let mut sack = value[0..4].to_vec();
                    sack.extend_from_slice(&65535u32.to_be_bytes());
                    sack.extend_from_slice(&[0, 0, 0, 0]);
                    vec![(3, 0, sack)]
                }
                7 => vec![(8, 0, Vec::new())],
                _ => continue,
            };
            let pkt = sctp_packet(5000, sport, peer_tag, &reply);
            let _ = sock.send_to(&pkt, &SocketAddr::new(src.into(), 0).into());
        }
    })
    .expect("responder in rs1");
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the SCTP responder is up");
    let my_tag = 0x434c_0001u32;
    let cport = 40123;
    let conn_state = |s: &Setup| {
        let c = s.d.uvsadm("-L -n -c").unwrap();
        c.lines()
            .find(|l| l.contains("198.51.100.10:40123"))
            .unwrap_or("")
            .to_string()
    };
    let step = |chunks: Vec<(u8, u8, Vec<u8>)>, vtag: u32| {
        netns::run_in(&s.lab.ns("c"), move || {
            sctp_exchange(sctp_packet(cport, 5000, vtag, &chunks), "192.0.2.10", 5000)
        })
        .expect("client namespace")
    };
    // INIT → INIT-ACK, from the VIP, CRC valid (checked in sctp_parse).
    let mut init = Vec::new();
    init.extend_from_slice(&my_tag.to_be_bytes());
    init.extend_from_slice(&65535u32.to_be_bytes());
    init.extend_from_slice(&[0, 1, 0, 1]);
    init.extend_from_slice(&7u32.to_be_bytes());
    let (src, _, dport, vtag, chunk, _) = step(vec![(1, 0, init)], 0).expect("INIT-ACK");
    assert_eq!(
        (src, dport, vtag, chunk),
        (std::net::Ipv4Addr::new(192, 0, 2, 10), cport, my_tag, 2)
    );
    let peer = 0x5253_0001u32;
    let (_, _, _, _, chunk, _) =
        step(vec![(10, 0, b"cookie!!".to_vec())], peer).expect("COOKIE-ACK");
    assert_eq!(chunk, 11);
    let st = conn_state(&s);
    assert!(
        st.contains("ESTABLISHED") || !nat,
        "after COOKIE-ACK: {st:?}"
    );
    assert!(!st.is_empty(), "{method}: the association is listed");
    let mut data = 7u32.to_be_bytes().to_vec();
    data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    data.extend_from_slice(b"hello over sctp");
    let (_, _, _, _, chunk, _) = step(vec![(0, 3, data)], peer).expect("SACK");
    assert_eq!(chunk, 3);
    let (_, _, _, _, chunk, _) =
        step(vec![(7, 0, 7u32.to_be_bytes().to_vec())], peer).expect("SHUTDOWN-ACK");
    assert_eq!(chunk, 8);
    let _ = netns::run_in(&s.lab.ns("c"), move || {
        let s = raw_sctp().ok()?;
        s.send_to(
            &sctp_packet(cport, 5000, peer, &[(14, 0, Vec::new())]),
            &vip("192.0.2.10:0").into(),
        )
        .ok()
    });
    // SHUTDOWN-COMPLETE takes the entry to CLOSED (NAT tracks the states).
    common::wait_until(Duration::from_secs(3), || {
        !nat || conn_state(&s).contains("CLOSED")
    });
    let st = conn_state(&s);
    assert!(
        st.contains("CLOSED") || !nat,
        "after SHUTDOWN-COMPLETE: {st:?}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = server.join();
}

/// `uvs tunnel-endpoint` on both real servers (GUE port 6080).
fn endpoints(lab: &Lab) -> [Endpoint; 2] {
    ["rs1", "rs2"].map(|rs| Endpoint::start(lab, rs, &["--gue-port", "6080"]))
}

#[test]
fn tunnel_ipip_gre_gue_ipv4_and_ipv6_replies_bypass_uvs() {
    if !root_or_skip("tunnel_ipip_gre_gue_ipv4_and_ipv6_replies_bypass_uvs") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup(
        "tun",
        &["--dr"],
        // The cases clear the configuration in between; a client port reused
        // from a finished DR/TUN connection (FIN_WAIT to a removed server)
        // must not be dropped: expire those entries, as operators do.
        &["--set-knob", "expire_nodest_conn=1"],
    );
    let _ep = endpoints(&s.lab);
    let cases = [
        (
            "192.0.2.10",
            "203.0.113.11",
            "203.0.113.12",
            "--tun-type ipip",
        ),
        (
            "192.0.2.10",
            "203.0.113.11",
            "203.0.113.12",
            "--tun-type gre --tun-csum",
        ),
        (
            "192.0.2.10",
            "203.0.113.11",
            "203.0.113.12",
            "--tun-type gue --tun-port 6080",
        ),
        (
            "192.0.2.10",
            "203.0.113.11",
            "203.0.113.12",
            "--tun-type gue --tun-port 6080 --tun-csum",
        ),
        (
            "[2001:db8:f::10]",
            "[2001:db8:5::11]",
            "[2001:db8:5::12]",
            "--tun-type ipip",
        ),
        (
            "[2001:db8:f::10]",
            "[2001:db8:5::11]",
            "[2001:db8:5::12]",
            "--tun-type gre --tun-csum",
        ),
        (
            "[2001:db8:f::10]",
            "[2001:db8:5::11]",
            "[2001:db8:5::12]",
            "--tun-type gue --tun-port 6080 --tun-csum",
        ),
    ];
    for (v, rs1, rs2, opts) in cases {
        s.cmds(&[
            &format!("-A -t {v}:80 -s rr"),
            &format!("-a -t {v}:80 -r {rs1}:80 -i {opts}"),
            &format!("-a -t {v}:80 -r {rs2}:80 -i {opts}"),
            &format!("-A -u {v}:53 -s rr"),
            &format!("-a -u {v}:53 -r {rs1}:53 -i {opts}"),
            &format!("-a -u {v}:53 -r {rs2}:53 -i {opts}"),
        ]);
        let (t_vip, u_vip) = (vip(&format!("{v}:80")), vip(&format!("{v}:53")));
        let t = netns::run_in(&s.lab.ns("c"), move || {
            lab::tcp_requests(t_vip, 10, Duration::from_secs(60))
        })
        .unwrap();
        assert_eq!(
            t.failures,
            0,
            "{v} {opts}: {t:?}\n{}",
            s.d.call(&["stats"]).unwrap().stdout
        );
        assert_eq!((t.count("rs1"), t.count("rs2")), (5, 5), "{t:?}");
        // Random bytes, large enough for GSO super-packets to be segmented
        // and for the path MTU of the tunnel to matter.
        let line = random_line(300_000, 11);
        let echoed = netns::run_in(&s.lab.ns("c"), move || -> std::io::Result<String> {
            let mut c = EchoConn::connect(t_vip)?;
            c.send(&line)?;
            c.recv(&line, Duration::from_secs(30))
        })
        .unwrap();
        assert!(
            echoed.is_ok(),
            "{v} {opts}: {echoed:?}\n{}",
            s.d.call(&["stats"]).unwrap().stdout
        );
        let rx0 = s.d.counter("rx").unwrap();
        let u = netns::run_in(&s.lab.ns("c"), move || {
            lab::udp_requests(u_vip, 20, Duration::from_secs(60))
        })
        .unwrap();
        assert_eq!(u.failures, 0, "{v} {opts}: {u:?}");
        let seen = s.d.counter("rx").unwrap() - rx0;
        assert!(
            (20..35).contains(&seen),
            "{v} {opts}: uvs received {seen} frames for 20 exchanges"
        );
        s.cmds(&["-C"]);
    }
}

/// The client's path MTU toward the VIP's UDP port 53 after DF datagrams
/// of 1500 bytes (until an ICMP too-big from uvs has been seen).
fn client_path_mtu(lab: &Lab, sport: u16) -> i32 {
    netns::run_in(&lab.ns("c"), move || -> std::io::Result<i32> {
        use std::os::fd::AsRawFd;
        let u = std::net::UdpSocket::bind(SocketAddr::from(([0u8; 4], sport)))?;
        u.connect(vip("192.0.2.10:53"))?;
        let fd = u.as_raw_fd();
        let on: libc::c_int = libc::IP_PMTUDISC_DO;
        // SAFETY: setsockopt/getsockopt on a socket we own, with int values.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&on as *const libc::c_int).cast(),
                4,
            );
        }
        let mtu = || {
            let mut v: libc::c_int = 0;
            let mut len: libc::socklen_t = 4;
            // SAFETY: as above.
            unsafe {
                libc::getsockopt(
                    fd,
                    libc::IPPROTO_IP,
                    libc::IP_MTU,
                    (&mut v as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            v
        };
        // The first datagrams may wait for the real server's neighbour
        // (resolved in the background): send until the error has come back,
        // bounded by 10 tries.
        for _ in 0..10 {
            let _ = u.send(&[b'x'; 1472]);
            std::thread::sleep(Duration::from_millis(300));
            if mtu() < 1500 {
                break;
            }
        }
        Ok(mtu())
    })
    .expect("client namespace")
    .expect("UDP probe")
}

#[test]
fn tunnel_path_mtu_answers_fragmentation_needed() {
    if !root_or_skip("tunnel_path_mtu_answers_fragmentation_needed") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("pmtu", &["--dr"], &[]);
    let _ep = endpoints(&s.lab);
    s.cmds(&[
        "-A -u 192.0.2.10:53 -s rr",
        "-a -u 192.0.2.10:53 -r 203.0.113.11:53 -i",
    ]);
    // A DF datagram that fits the 1500-byte link but not the ipip tunnel
    // (1500 - 20): the client learns the tunnel MTU from uvs's ICMP.
    let mtu = client_path_mtu(&s.lab, 21000);
    assert_eq!(mtu, 1480, "the client's path MTU toward the VIP");
    assert!(s.d.counter("drop.too_big").unwrap() >= 1);
    assert!(s.d.counter("icmp_sent").unwrap() >= 1);
}

#[test]
fn nat_path_mtu_answers_fragmentation_needed() {
    if !root_or_skip("nat_path_mtu_answers_fragmentation_needed") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("nmtu", &[], &[]);
    let set = std::process::Command::new("ip")
        .args(["-n", &s.lab.ns("lb"), "link", "set", "s0", "mtu", "1400"])
        .status()
        .expect("ip runs");
    assert!(set.success());
    s.cmds(&[
        "-A -u 192.0.2.10:53 -s rr",
        "-a -u 192.0.2.10:53 -r 203.0.113.11:53 -m",
    ]);
    // The real servers' link has MTU 1400 (uvs learns it with the route).
    let mtu = client_path_mtu(&s.lab, 21001);
    assert_eq!(mtu, 1400, "the client's path MTU toward the VIP");
    assert!(s.d.counter("drop.too_big").unwrap() >= 1);
}
