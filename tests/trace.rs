//! Lab tests of `uvs trace` with real packets: a packet a filter rule
//! drops names that rule; a new connection names the scheduler's reason;
//! its reply shows the SNAT back to the VIP; `--json` output parses. They
//! need root and skip without it; one at a time. Also the real-server
//! address check that needs the director's routes (issue 11).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uvs::lab;
use uvs::sys::netns;

mod common;

use common::{root_or_skip, Setup};

static SERIAL: Mutex<()> = Mutex::new(());

const RR: [&str; 3] = [
    "-A -t 192.0.2.10:80 -s rr",
    "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m",
    "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m",
];

fn setup(tag: &str) -> Setup {
    let s = Setup::start(
        &format!("uvstr{}{tag}", std::process::id() % 100000),
        &[],
        &[],
    );
    for c in RR {
        s.d.uvsadm(c)
            .unwrap_or_else(|e| panic!("{e}\nuvs log:\n{}", s.d.log_text()));
    }
    s
}

fn request(s: &Setup, port: u16, timeout: Duration) -> std::io::Result<String> {
    netns::run_in(&s.lab.ns("c"), move || {
        lab::tcp_request(SocketAddr::from(([192, 0, 2, 10], port)), timeout)
    })
    .expect("client namespace")
}

/// `uvs trace ARGS` as a process; its stdout lines arrive on the channel.
/// Waits for the header line (the trace is armed from then on).
fn trace_process(s: &Setup, args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_uvs"))
        .arg("trace")
        .arg("--control")
        .arg(&s.d.control)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn uvs trace");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("uvs trace prints its header");
    assert!(first.contains("\"start\""), "{first}");
    (child, rx)
}

/// Lines until the process ends (or 10 s pass: then it is killed).
fn lines_until_exit(mut child: std::process::Child, rx: mpsc::Receiver<String>) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    while Instant::now() < end {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) => lines.push(l),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
    }
    let st = child.wait().expect("uvs trace ends");
    assert!(st.success(), "uvs trace: {st}\n{}", lines.join("\n"));
    lines
}

#[test]
fn a_filtered_packet_names_the_rule_that_dropped_it() {
    if !root_or_skip("trace filtered") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("f");
    // The service's own port: under AF_XDP only what uvs owns reaches it.
    let r =
        s.d.call(&[
            "filter", "add", "-A", "INPUT", "-p", "tcp", "--dport", "80", "-j", "DROP",
        ])
        .unwrap();
    assert_eq!(r.status, 0, "{}", r.stderr);
    // Streamed through the library's client, in text.
    let argv: Vec<String> = [
        "trace",
        "-p",
        "tcp",
        "--dport",
        "80",
        "--count",
        "1",
        "--timeout",
        "20",
    ]
    .map(String::from)
    .to_vec();
    let (status, text) = common::trace_during(&s.d, argv, || {
        let _ = request(&s, 80, Duration::from_millis(300));
    });
    assert_eq!(status.unwrap(), 0, "{text}");
    assert!(
        text.contains("hook: LOCAL_IN 0 filter: DROP"),
        "the filter entry's verdict:\n{text}"
    );
    assert!(
        text.contains("rule filter INPUT #1 \"-A INPUT -p tcp --dport 80 -j DROP\": DROP"),
        "the rule that dropped it:\n{text}"
    );
    assert!(text.contains("result: dropped: filtered"), "{text}");
    assert!(text.contains("trace ended: 1 packet(s) shown"), "{text}");
}

#[test]
fn a_new_connection_names_the_scheduler_and_its_reply_the_snat_in_json() {
    if !root_or_skip("trace connection") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("c");
    // One connection first, so the rotation has a "last" server.
    let first = request(&s, 80, Duration::from_secs(3)).expect("first request");
    let (child, rx) = trace_process(
        &s,
        &[
            "-p",
            "tcp",
            "-d",
            "192.0.2.10",
            "--dport",
            "80",
            "--count",
            "2",
            "--timeout",
            "20",
            "--json",
        ],
    );
    let second = request(&s, 80, Duration::from_secs(3)).expect("traced request");
    let lines = lines_until_exit(child, rx);
    let objs: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let all = lines.join("\n");
    // The SYN: a new connection, scheduled by rr after the first server.
    let (a, b) = if first.contains("rs1") {
        ("203.0.113.11:80", "203.0.113.12:80")
    } else {
        ("203.0.113.12:80", "203.0.113.11:80")
    };
    assert!(second.contains(if b.starts_with("203.0.113.11") {
        "rs1"
    } else {
        "rs2"
    }));
    let syn = objs
        .iter()
        .find(|o| o["scheduler"].is_object())
        .unwrap_or_else(|| panic!("no scheduled packet:\n{all}"));
    assert_eq!(
        syn["scheduler"]["reason"],
        format!("rr: {b}, next after {a}"),
        "{all}"
    );
    assert_eq!(syn["connection"]["new"], true, "{all}");
    assert_eq!(syn["connection"]["after"]["state"], "SYN_RECV", "{all}");
    assert_eq!(syn["service"]["address"], "192.0.2.10:80");
    assert_eq!(syn["result"]["kind"], "xmit");
    assert_eq!(
        syn["forward"]["text"],
        format!("masq, DNAT 192.0.2.10:80 -> {b}"),
        "{all}"
    );
    assert!(syn["egress"]["iface"].is_string(), "{all}");
    let hooks: Vec<&str> = syn["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["function"].as_str().unwrap())
        .collect();
    // LOCAL_IN's entries up to the one that took it: ip_vs_reply 98,
    // ip_vs_remote_request 99. Mangle −150, filter 0 and nat 100 have no
    // rule here, so packets do not walk them (and the trace does not list
    // them), as an nftables hook exists only while its base chain does.
    assert_eq!(hooks, ["ip_vs_reply", "ip_vs_remote_request"]);
    // The SYN-ACK: followed as a reply, SNAT back to the VIP.
    let reply = objs
        .iter()
        .find(|o| o["followed"] == true)
        .unwrap_or_else(|| panic!("no reply traced:\n{all}"));
    assert_eq!(
        reply["forward"]["text"],
        format!("masq, SNAT {b} -> 192.0.2.10:80 (back to the virtual service)"),
        "{all}"
    );
    assert_eq!(reply["connection"]["before"]["reply"], true, "{all}");
    assert_eq!(reply["parse"]["tcp_flags"], "SYN,ACK", "{all}");
    let end = objs.last().unwrap();
    assert_eq!(end["end"]["shown"], 2, "{all}");
}

/// Issue 11's last real-server address check, beside the trace tests for
/// want of a lab of its own: the broadcast address of a subnet the
/// director is on is refused as the kernel refuses it (EINVAL: ipvsadm's
/// text, exit 255), found from the director's routes; the configuration
/// is unchanged.
#[test]
fn a_subnet_broadcast_real_server_is_refused() {
    if !root_or_skip("subnet broadcast") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("b");
    let before = s.d.uvsadm("-S -n").unwrap();
    let r =
        s.d.call(&[
            "uvsadm",
            "-a",
            "-t",
            "192.0.2.10:80",
            "-r",
            "203.0.113.255:80",
            "-m",
        ])
        .unwrap();
    assert_eq!(r.status, 255, "{r:?}");
    assert_eq!(
        r.stderr,
        "Invalid operation.  Possibly wrong module version, address not unicast, ...\n"
    );
    assert_eq!(s.d.uvsadm("-S -n").unwrap(), before);
    // An ordinary address of that subnet is still fine.
    s.d.uvsadm("-a -t 192.0.2.10:80 -r 203.0.113.13:80 -m")
        .unwrap();
}
