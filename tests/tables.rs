//! The emulated iptables tables with real traffic: `uvs run --tables FILE`
//! in the lab, a mangle MARK rule for two VIP ports feeding one fwmark
//! service (`-f`), `uvs tables restore` from stdin (a bad line refused with
//! its number, the running tables unchanged), and a filter DROP at FORWARD
//! that stops NAT replies, its rule's counter showing where; LOG rules'
//! kernel-format lines on uvs's stderr, a flood larger than the log queue
//! counted as dropped lines, and the log drain asleep while idle; IPVS
//! tunnelling's outer packets through mangle/filter OUTPUT and mangle
//! POSTROUTING. Needs root; skips without.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use uvs::lab;
use uvs::sys::netns;

mod common;

use common::{root_or_skip, Setup};

const CONFIG: &str = "\
-A -f 1 -s rr
-a -f 1 -r 203.0.113.11:80 -m -w 1
-a -f 1 -r 203.0.113.12:80 -m -w 1
";

const TABLES: &str = "\
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 192.0.2.10/32 -p tcp -m multiport --dports 80,443 -m comment --comment \"web to fwmark 1\" -j MARK --set-xmark 0x1/0xffffffff
COMMIT
";

fn vip(s: &str) -> SocketAddr {
    s.parse().expect("valid literal address")
}

/// `uvs tables --control PATH ARGS` with `stdin`: (exit code, stdout, stderr).
fn uvs_tables(control: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_uvs"))
        .arg("tables")
        .arg("--control")
        .arg(control)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run uvs tables");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let o = c.wait_with_output().expect("uvs tables output");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn tally(s: &Setup, addr: &str, n: usize) -> lab::Tally {
    let a = vip(addr);
    netns::run_in(&s.lab.ns("c"), move || {
        lab::tcp_requests(a, n, Duration::from_secs(40))
    })
    .expect("client namespace")
}

#[test]
fn mark_rules_feed_a_fwmark_service_and_filter_drops_replies() {
    if !root_or_skip("mark_rules_feed_a_fwmark_service_and_filter_drops_replies") {
        return;
    }
    let prefix = format!("uvt{}", std::process::id() % 100000);
    let base = std::env::temp_dir().join(&prefix);
    let (cfg, tbl) = (base.with_extension("rules"), base.with_extension("tables"));
    std::fs::write(&cfg, CONFIG).unwrap();
    std::fs::write(&tbl, TABLES).unwrap();
    let s = Setup::start(
        &prefix,
        &[],
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--tables",
            tbl.to_str().unwrap(),
            "--workers",
            "1",
            // LOG lines: a small queue, so that a short flood overflows it.
            "--log-queue",
            "8",
        ],
    );
    let _rm = common::RemoveOnDrop(vec![cfg.clone(), tbl.clone()]);
    let log = || s.d.log_text();

    // One -f service for both marked ports, rr across both servers.
    for port in [80, 443] {
        let t = tally(&s, &format!("192.0.2.10:{port}"), 20);
        assert_eq!(t.failures, 0, "port {port}: {:?}\n{}", t.first_error, log());
        assert_eq!((t.count("rs1"), t.count("rs2")), (10, 10), "{t:?}");
    }
    let listing = s.d.uvsadm("-S -n").unwrap();
    assert!(listing.starts_with("-A -f 1 -s rr\n"), "{listing}");
    let saved = uvs_tables(&s.d.control, &["save", "-c"], "");
    assert_eq!(saved.0, 0, "{saved:?}");
    // 40 connections' packets client → VIP passed the MARK rule.
    let counted = saved
        .1
        .lines()
        .find(|l| l.contains("-j MARK"))
        .and_then(|l| l.strip_prefix('['))
        .and_then(|l| l.split(':').next())
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(counted >= 40 * 3, "{}", saved.1);

    // A bad line: refused with its number, the running tables unchanged.
    let before = uvs_tables(&s.d.control, &["save"], "").1;
    let bad = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 80 -j DROP\n-A INPUT -p tcp --dport 70000 -j DROP\nCOMMIT\n";
    let (code, out, err) = uvs_tables(&s.d.control, &["restore"], bad);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("line 4") && err.contains("invalid port '70000'"),
        "{err}"
    );
    assert_eq!(uvs_tables(&s.d.control, &["save"], "").1, before);
    let t = tally(&s, "192.0.2.10:80", 2);
    assert_eq!(t.failures, 0, "{:?}", t.first_error);

    // filter FORWARD drops rs2's replies: its connections fail, rs1's
    // work, and the rule's counter and drop.filtered say where.
    let filtered = s.d.counter("drop.filtered").unwrap();
    let drop_rs2 = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -s 203.0.113.12/32 -p tcp --sport 80 -j DROP\nCOMMIT\n";
    let (code, out, err) = uvs_tables(&s.d.control, &["restore"], drop_rs2);
    assert_eq!(code, 0, "{out}{err}");
    let t = tally(&s, "192.0.2.10:80", 4);
    assert_eq!((t.count("rs1"), t.failures), (2, 2), "{t:?}");
    let list = uvs_tables(&s.d.control, &["list"], "").1;
    let line = list
        .lines()
        .find(|l| l.contains("-s 203.0.113.12/32"))
        .unwrap_or("");
    let pkts: u64 = line
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    assert!(pkts >= 2, "{list}");
    assert!(list.contains("Chain FORWARD (policy ACCEPT"), "{list}");
    assert!(s.d.counter("drop.filtered").unwrap() >= filtered + 2);
    // The mangle table stayed (restore replaces only the tables it names).
    assert!(uvs_tables(&s.d.control, &["save"], "")
        .1
        .contains("--set-xmark 0x1/0xffffffff"));

    // `uvs reload` re-reads --tables: a bad file changes nothing, a good
    // one replaces the tables it names.
    std::fs::write(&tbl, "*mangle\n-A PREROUTING -j MARK\nCOMMIT\n").unwrap();
    let r = s.d.call(&["reload"]).unwrap();
    assert_ne!(r.status, 0, "{r:?}");
    assert!(r.stderr.contains("line 2"), "{r:?}");
    std::fs::write(&tbl, TABLES.replace("80,443", "80,443,8443")).unwrap();
    let r = s.d.call(&["reload"]).unwrap();
    assert_eq!(r.status, 0, "{r:?}");
    let saved = uvs_tables(&s.d.control, &["save"], "").1;
    assert!(saved.contains("--dports 80,443,8443"), "{saved}");
    assert!(saved.contains("-s 203.0.113.12/32"), "{saved}");

    log_rules_write_kernel_lines(&s);
}

const LOG_RULES: &str = "\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp --dport 80 -j LOG --log-prefix \"uvs web: \"
-A INPUT -p udp --dport 53 -j LOG --log-level info --log-prefix \"uvs udp: \"
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 192.0.2.10/32 -p tcp -m multiport --dports 80,443 -j MARK --set-xmark 0x1/0xffffffff
-A POSTROUTING -p udp --dport 53 -j LOG --log-prefix \"uvs post: \"
COMMIT
";

/// The `KEY=VALUE` fields of a LOG line (`IN=` and `OUT=` may be empty).
fn log_fields(line: &str) -> std::collections::HashMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect()
}

/// The LOG lines in uvs's output with `prefix`.
fn log_lines(s: &Setup, prefix: &str) -> Vec<String> {
    s.d.log_text()
        .lines()
        .filter(|l| l.contains(prefix))
        .map(String::from)
        .collect()
}

/// Every LOG rule's hits so far (`save -c`).
fn log_hits(s: &Setup) -> u64 {
    uvs_tables(&s.d.control, &["save", "-c"], "")
        .1
        .lines()
        .filter(|l| l.contains("-j LOG"))
        .filter_map(|l| l.strip_prefix('[')?.split(':').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits (up to 20 s) until the LOG rules' hits stop growing and every
/// one is a written line or a dropped record; returns (lines, dropped).
fn log_settled(s: &Setup) -> (u64, u64) {
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let mut last = None;
    loop {
        let (l, d) = (
            s.d.counter("log.lines").unwrap(),
            s.d.counter("log.dropped").unwrap(),
        );
        let h = log_hits(s);
        if (l + d == h && last == Some(h)) || std::time::Instant::now() > end {
            return (l, d);
        }
        last = (l + d == h).then_some(h);
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// How often uvs's LOG drain thread (`uvs-log`) went to sleep and woke
/// so far: its context switches, from /proc.
fn log_thread_wakes(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("uvs's threads");
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != "uvs-log" {
            continue;
        }
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        return status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
    }
    panic!("uvs {pid} has no uvs-log thread");
}

/// The LOG drain's wake-ups over one idle second.
fn idle_log_wakes(s: &Setup) -> u64 {
    let w0 = log_thread_wakes(s.d.pid());
    std::thread::sleep(Duration::from_secs(1));
    log_thread_wakes(s.d.pid()) - w0
}

/// Packets through LOG rules (at INPUT: the VIPs' traffic, which uvs sees
/// under both backends; at mangle POSTROUTING, with `OUT=`): the kernel's
/// line on uvs's stderr, read back to the packet; a flood beyond the queue (8) counted in log.dropped,
/// every LOG hit either written or counted.
fn log_rules_write_kernel_lines(s: &Setup) {
    // No LOG rule yet: the drain thread sleeps (it woke 10 times a second
    // before).
    let idle = idle_log_wakes(s);
    assert!(
        idle <= 1,
        "the LOG drain woke {idle} times in an idle second"
    );
    let (code, out, err) = uvs_tables(&s.d.control, &["restore"], LOG_RULES);
    assert_eq!(code, 0, "{out}{err}");
    // Saved as iptables-save writes them (the level as a number, after the
    // prefix).
    let saved = uvs_tables(&s.d.control, &["save"], "").1;
    assert!(
        saved.contains("-A INPUT -p tcp --dport 80 -j LOG --log-prefix \"uvs web: \"\n"),
        "{saved}"
    );
    assert!(
        saved.contains(
            "-A INPUT -p udp --dport 53 -j LOG --log-prefix \"uvs udp: \" --log-level 6\n"
        ),
        "{saved}"
    );

    // TCP to the fwmark service: INPUT, the mangle table's mark shown.
    let t = tally(s, "192.0.2.10:80", 1);
    assert_eq!(t.failures, 0, "{:?}", t.first_error);
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let syn = loop {
        let found = log_lines(s, "uvs web: ")
            .into_iter()
            .find(|l| l.contains(" SYN "));
        match found {
            Some(l) => break l,
            None if std::time::Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(20))
            }
            None => panic!("no SYN line:\n{}", s.d.log_text()),
        }
    };
    assert!(syn.starts_with("<4>["), "{syn}");
    let f = log_fields(&syn);
    assert_eq!(
        (f["IN"], f["OUT"], f["SRC"], f["DST"], f["PROTO"], f["DPT"]),
        ("c0", "", "198.51.100.10", "192.0.2.10", "TCP", "80"),
        "{syn}"
    );
    assert_eq!(f["MARK"], "0x1", "{syn}");
    assert_eq!(f["MAC"].len(), 14 * 3 - 1, "{syn}");
    assert!(f["MAC"].ends_with(":08:00"), "{syn}");
    // The SYN's line comes at once (the first record wakes the drain); the
    // connection's later packets may still be queued (8 at most): the
    // datagrams below wait until they are written.
    log_settled(s);

    // UDP to a service (what uvs sees under either backend): one datagram
    // per family from a known port, spaced, each its own line.
    for cmd in [
        "-A -u 192.0.2.10:53 -s rr",
        "-a -u 192.0.2.10:53 -r 203.0.113.11:53 -m",
        "-A -u [2001:db8:f::10]:53 -s rr",
        "-a -u [2001:db8:f::10]:53 -r [2001:db8:5::11]:53 -m",
    ] {
        s.d.uvsadm(cmd).unwrap();
    }
    let sport = 40000 + (std::process::id() % 20000) as u16;
    let sent = netns::run_in(&s.lab.ns("c"), move || -> std::io::Result<()> {
        let u4 = std::net::UdpSocket::bind(("198.51.100.10", sport))?;
        let u6 = std::net::UdpSocket::bind(("2001:db8:c::10", sport))?;
        u4.send_to(b"hello", "192.0.2.10:53")?;
        std::thread::sleep(Duration::from_millis(50));
        u6.send_to(b"hello", "[2001:db8:f::10]:53")?;
        Ok(())
    })
    .expect("client namespace");
    sent.expect("send");
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let l = log_lines(s, "uvs udp: ");
        if l.len() >= 2 || std::time::Instant::now() > end {
            break l;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(lines.len(), 2, "{}", s.d.log_text());
    for (l, src, dst) in [
        (&lines[0], "198.51.100.10", "192.0.2.10"),
        (
            &lines[1],
            "2001:0db8:000c:0000:0000:0000:0000:0010",
            "2001:0db8:000f:0000:0000:0000:0000:0010",
        ),
    ] {
        assert!(l.starts_with("<6>["), "{l}");
        let f = log_fields(l);
        let port = sport.to_string();
        assert_eq!(
            (f["IN"], f["SRC"], f["DST"], f["PROTO"], f["SPT"], f["DPT"], f["LEN"]),
            ("c0", src, dst, "UDP", port.as_str(), "53", "13"),
            "{l}"
        );
    }
    // The same datagrams at POSTROUTING, after IPVS's DNAT: no input
    // device, and `OUT=` the interface the real server's route leaves by.
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let post = loop {
        let l = log_lines(s, "uvs post: ");
        if l.len() >= 2 || std::time::Instant::now() > end {
            break l;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        post.len(),
        2,
        "{}\n{}\n{}",
        s.d.log_text(),
        uvs_tables(&s.d.control, &["save", "-c"], "").1,
        s.d.call(&["stats"]).unwrap().stdout
    );
    for (l, dst) in [
        (&post[0], "203.0.113.11"),
        (&post[1], "2001:0db8:0005:0000:0000:0000:0000:0011"),
    ] {
        let f = log_fields(l);
        assert_eq!(
            (f["IN"], f["OUT"], f["DST"], f["PROTO"], f["DPT"]),
            ("", "s0", dst, "UDP", "53"),
            "{l}"
        );
    }

    log_settled(s);
    // A flood far beyond 8 lines a tick: bounded in count and time.
    netns::run_in(&s.lab.ns("c"), move || {
        let Ok(u) = std::net::UdpSocket::bind(("198.51.100.10", sport)) else {
            return;
        };
        let end = std::time::Instant::now() + Duration::from_secs(5);
        for _ in 0..3000 {
            if u.send_to(b"flood", "192.0.2.10:53").is_err() || std::time::Instant::now() > end {
                break;
            }
        }
    })
    .expect("client namespace");
    // Every LOG hit is a line or a dropped record, once the drain is done.
    let (lines, dropped) = log_settled(s);
    let written = ["uvs web: ", "uvs udp: ", "uvs post: "]
        .iter()
        .map(|p| log_lines(s, p).len() as u64)
        .sum::<u64>();
    assert!(dropped > 0, "no line dropped: {lines} written");
    assert_eq!(lines, written, "log.lines against the lines on stderr");
    assert_eq!(
        lines + dropped,
        log_hits(s),
        "every LOG hit written or dropped"
    );
    // LOG rules loaded, no traffic: asleep again once the flood is written.
    let idle = idle_log_wakes(s);
    assert!(
        idle <= 1,
        "the LOG drain woke {idle} times in an idle second with LOG rules"
    );
}

const TUN_CONFIG: &str = "\
-A -t 192.0.2.10:80 -s rr
-a -t 192.0.2.10:80 -r 203.0.113.11:80 -i -w 1 --tun-type ipip
-a -t 192.0.2.10:80 -r 203.0.113.12:80 -i -w 1 --tun-type ipip
-A -u 192.0.2.10:53 -s rr
-a -u 192.0.2.10:53 -r 203.0.113.11:53 -i -w 1 --tun-type gue --tun-port 6080
-A -u [2001:db8:f::10]:53 -s rr
-a -u [2001:db8:f::10]:53 -r [2001:db8:5::11]:53 -i -w 1 --tun-type ipip
";

const TUN_TABLES: &str = "\
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A OUTPUT -p ipv4 -d 203.0.113.0/24 -m conntrack --ctstate NEW -j MARK --set-xmark 0x7/0xffffffff
-A OUTPUT -p udp --dport 6080 -j LOG --log-prefix \"uvs tun gue: \"
-A POSTROUTING -p ipv4 -o s0 -m mark --mark 0x7 -m comment --comment ipip-out
-A POSTROUTING -p ipv4 ! -o s0 -m comment --comment ipip-elsewhere
-A POSTROUTING -p udp --dport 6080 -o s0 -m comment --comment gue-out
-A POSTROUTING -p ipv6 -d 2001:db8:5::11/128 -o s0 -m comment --comment ip6ip6-out
COMMIT
";

/// The packet count `save -c` gives the rule whose text contains `what`.
fn rule_packets(control: &Path, what: &str) -> u64 {
    let saved = uvs_tables(control, &["save", "-c"], "").1;
    saved
        .lines()
        .find(|l| l.contains(what))
        .and_then(|l| l.strip_prefix('['))
        .and_then(|l| l.split(':').next())
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no rule {what:?} in\n{saved}"))
}

/// IPVS tunnelling's outer packets walk mangle and filter OUTPUT and mangle
/// POSTROUTING, as the kernel's `ip_vs_tunnel_xmit` sends them through
/// `ip_local_out`: a MARK at OUTPUT seen at POSTROUTING, `-o` the real
/// servers' interface, a LOG line of the outer GUE packet, and a filter
/// OUTPUT DROP of one real server's ipip packets stopping its connections.
#[test]
fn tunnelled_packets_walk_output_and_postrouting() {
    if !root_or_skip("tunnelled_packets_walk_output_and_postrouting") {
        return;
    }
    let prefix = format!("uvtt{}", std::process::id() % 100000);
    let base = std::env::temp_dir().join(&prefix);
    let (cfg, tbl) = (base.with_extension("rules"), base.with_extension("tables"));
    std::fs::write(&cfg, TUN_CONFIG).unwrap();
    std::fs::write(&tbl, TUN_TABLES).unwrap();
    let s = Setup::start(
        &prefix,
        &["--dr"],
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--tables",
            tbl.to_str().unwrap(),
            "--workers",
            "1",
        ],
    );
    let _rm = common::RemoveOnDrop(vec![cfg.clone(), tbl.clone()]);
    let _ep = ["rs1", "rs2"].map(|rs| common::Endpoint::start(&s.lab, rs, &["--gue-port", "6080"]));

    // ipip: balanced, every outer packet marked at OUTPUT and counted at
    // POSTROUTING by `-o s0`, none elsewhere.
    let t = tally(&s, "192.0.2.10:80", 10);
    assert_eq!(t.failures, 0, "{:?}\n{}", t.first_error, s.d.log_text());
    assert_eq!((t.count("rs1"), t.count("rs2")), (5, 5), "{t:?}");
    let out = rule_packets(&s.d.control, "ipip-out");
    assert!(out >= 10 * 3, "ipip-out counted {out}");
    assert_eq!(rule_packets(&s.d.control, "ipip-elsewhere"), 0);
    assert!(rule_packets(&s.d.control, "--ctstate NEW") >= out);

    // GUE: one datagram, its outer packet's LOG line at OUTPUT.
    let sport = 40000 + (std::process::id() % 20000) as u16;
    netns::run_in(&s.lab.ns("c"), move || -> std::io::Result<()> {
        let u = std::net::UdpSocket::bind(("198.51.100.10", sport))?;
        u.send_to(b"hello", "192.0.2.10:53")?;
        Ok(())
    })
    .expect("client namespace")
    .expect("send");
    let mut line = None;
    common::wait_until(Duration::from_secs(5), || {
        line = log_lines(&s, "uvs tun gue: ").into_iter().next();
        line.is_some()
    });
    let line = line.unwrap_or_else(|| panic!("no GUE line:\n{}", s.d.log_text()));
    let f = log_fields(&line);
    assert_eq!(
        (f["IN"], f["OUT"], f["SRC"], f["DST"], f["PROTO"], f["DPT"]),
        ("", "s0", "203.0.113.1", "203.0.113.11", "UDP", "6080"),
        "{line}"
    );
    // Outer IPv4 + UDP + GUE + the inner IPv4 + UDP + "hello"; the outer
    // UDP length (the last LEN=) without the outer IPv4 header.
    let len = 20 + 8 + 4 + 20 + 8 + 5;
    assert!(
        line.contains(&format!(" DST=203.0.113.11 LEN={len} ")),
        "{line}"
    );
    assert!(line.ends_with(&format!(" LEN={} ", len - 20)), "{line}");
    assert!(common::wait_until(Duration::from_secs(2), || {
        rule_packets(&s.d.control, "gue-out") >= 1
    }));

    // IPv6 in IPv6 (next header 41): answered, and counted by its rule.
    let answer = netns::run_in(&s.lab.ns("c"), move || -> std::io::Result<String> {
        let u = std::net::UdpSocket::bind(("2001:db8:c::10", sport))?;
        u.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = [0u8; 256];
        for _ in 0..4 {
            u.send_to(b"six", "[2001:db8:f::10]:53")?;
            if let Ok((n, _)) = u.recv_from(&mut buf) {
                return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        Err(std::io::Error::other("no answer"))
    })
    .expect("client namespace");
    assert_eq!(
        answer.ok().as_deref(),
        Some("rs1:six"),
        "{}",
        s.d.log_text()
    );
    assert!(rule_packets(&s.d.control, "ip6ip6-out") >= 1);

    // filter OUTPUT drops rs2's ipip packets: its connections fail, rs1's
    // work, and the rule and drop.filtered say where.
    let filtered = s.d.counter("drop.filtered").unwrap();
    let drop_rs2 = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p ipv4 -d 203.0.113.12/32 -j DROP\nCOMMIT\n";
    let (code, o, err) = uvs_tables(&s.d.control, &["restore"], drop_rs2);
    assert_eq!(code, 0, "{o}{err}");
    let t = tally(&s, "192.0.2.10:80", 4);
    assert_eq!((t.count("rs1"), t.failures), (2, 2), "{t:?}");
    assert!(rule_packets(&s.d.control, "-d 203.0.113.12/32 -j DROP") >= 2);
    assert!(s.d.counter("drop.filtered").unwrap() >= filtered + 2);
    // The hook counters: filter OUTPUT saw the outer packets and dropped
    // rs2's.
    let stats = s.d.call(&["stats"]).unwrap().stdout;
    let line = stats
        .lines()
        .find(|l| l.starts_with("hook.LOCAL_OUT.0.filter "))
        .unwrap_or_else(|| panic!("{stats}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .skip_while(|w| *w != name)
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    assert!(
        field("dropped") >= 2 && field("seen") > field("dropped"),
        "{line}"
    );
}
