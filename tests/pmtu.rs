//! Path MTU for NAT replies, end to end: the director's link toward the
//! client is narrower (MTU 1400) than the client's and the real servers'
//! (1500), so the real servers' replies are too big for it. The director
//! owes the real server a fragmentation needed / packet too big (checked
//! before SNAT, as the kernel's `ip_forward` does); once the server has
//! lowered its path MTU, the large replies arrive. And datagrams larger
//! than the MTU: fragmented UDP through NAT gets its (fragmented) reply,
//! IPv4 and IPv6. Needs root; skips without it.
//!
//! The client's routes toward the VIPs carry the narrow link's MTU (1400)
//! and an advertised MSS for 1500: its own segments fit the link, while the
//! real servers still send segments for 1500. (A veth silently drops a
//! non-GSO frame larger than its receiving end's MTU, so a client sending
//! 1500-byte frames into the director's 1400 end loses every single-segment
//! send and retransmission, and its connection can stall for good.)

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use uvs::lab::{self, Director, EchoConn, Lab};
use uvs::sys::netns;

mod common;

use common::root_or_skip;

/// One lab at a time: they share two cores with everything else.
static SERIAL: Mutex<()> = Mutex::new(());

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("valid literal address")
}

/// Large echo replies (4 × 200 kB lines) over `vip` through a director
/// whose client-side link has MTU 1400, for `cmds`.
fn large_replies_arrive(tag: &str, vip: &'static str, cmds: &[&str]) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = format!("uvm{}{tag}", std::process::id() % 100000);
    let lab = Lab::up(&prefix, &[]).expect("lab up");
    // Only the director's end: the client still advertises an MSS for 1500.
    let st = Command::new("ip")
        .args(["-n", &lab.ns("lb"), "link", "set", "c0", "mtu", "1400"])
        .status()
        .expect("ip link");
    assert!(st.success(), "set c0 mtu");
    let c = lab.ns("c");
    for route in [
        &["route", "replace", "192.0.2.0/24", "via", "198.51.100.1"][..],
        &[
            "-6",
            "route",
            "replace",
            "2001:db8:f::/64",
            "via",
            "2001:db8:c::1",
        ][..],
    ] {
        let advmss = if route[0] == "-6" { "1440" } else { "1460" };
        let st = Command::new("ip")
            .args(["-n", &c])
            .args(route)
            .args(["mtu", "1400", "advmss", advmss])
            .status()
            .expect("ip route");
        assert!(st.success(), "client route {route:?}");
    }
    let _s1 = lab::serve_in(&lab.ns("rs1"), "rs1", 80, 53).expect("rs1 server");
    let _s2 = lab::serve_in(&lab.ns("rs2"), "rs2", 80, 53).expect("rs2 server");
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_uvs"));
    let d = Director::start(&lab, exe, &[]).expect("uvs run");
    for c in cmds {
        d.uvsadm(c)
            .unwrap_or_else(|e| panic!("{e}\nuvs log:\n{}", d.log_text()));
    }
    let got = netns::run_in(&lab.ns("c"), move || -> Vec<std::io::Result<String>> {
        (0..4u8)
            .map(|i| {
                let line: String = (0..200_000)
                    .map(|j| char::from(b'a' + ((j + usize::from(i)) % 26) as u8))
                    .collect();
                let mut c = EchoConn::connect(addr(vip))?;
                c.send(&line)?;
                c.recv(&line, Duration::from_secs(60))
            })
            .collect()
    })
    .expect("client namespace");
    let ok = got.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        ok,
        4,
        "{got:?}\nclient link:\n{}\nuvs log:\n{}",
        link_stats(&c, "eth0"),
        d.log_text()
    );
    assert!(
        d.counter("drop.too_big").unwrap_or(0) >= 1,
        "the replies were too big at first (else the test shows nothing)"
    );
    drop(d);
}

/// `ip -s link show DEV` in namespace `ns` (its drop counters, for a
/// failure's message).
fn link_stats(ns: &str, dev: &str) -> String {
    Command::new("ip")
        .args(["-n", ns, "-s", "link", "show", dev])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn nat_replies_larger_than_the_client_side_mtu_arrive_ipv4() {
    if !root_or_skip("nat_replies_larger_than_the_client_side_mtu_arrive_ipv4") {
        return;
    }
    large_replies_arrive(
        "4",
        "192.0.2.10:80",
        &[
            "-A -t 192.0.2.10:80 -s rr",
            "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m",
            "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m",
        ],
    );
}

#[test]
fn nat_replies_larger_than_the_client_side_mtu_arrive_ipv6() {
    if !root_or_skip("nat_replies_larger_than_the_client_side_mtu_arrive_ipv6") {
        return;
    }
    large_replies_arrive(
        "6",
        "[2001:db8:f::10]:80",
        &[
            "-A -t [2001:db8:f::10]:80 -s rr",
            "-a -t [2001:db8:f::10]:80 -r [2001:db8:5::11]:80 -m",
            "-a -t [2001:db8:f::10]:80 -r [2001:db8:5::12]:80 -m",
        ],
    );
}

/// A 3,000-byte UDP datagram to `vip` (three fragments at MTU 1500) gets
/// its answer: the lab server echoes the first 2,048 bytes with its name,
/// a reply that is fragmented too.
fn fragmented_udp_gets_its_reply(tag: &str, vip: &'static str, cmds: &[&str]) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = format!("uvm{}{tag}", std::process::id() % 100000);
    let lab = Lab::up(&prefix, &[]).expect("lab up");
    let _s1 = lab::serve_in(&lab.ns("rs1"), "rs1", 80, 53).expect("rs1 server");
    let _s2 = lab::serve_in(&lab.ns("rs2"), "rs2", 80, 53).expect("rs2 server");
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_uvs"));
    let d = Director::start(&lab, exe, &[]).expect("uvs run");
    for c in cmds {
        d.uvsadm(c)
            .unwrap_or_else(|e| panic!("{e}\nuvs log:\n{}", d.log_text()));
    }
    let got = netns::run_in(&lab.ns("c"), move || -> std::io::Result<Vec<String>> {
        let bind = if addr(vip).is_ipv4() {
            addr("0.0.0.0:0")
        } else {
            addr("[::]:0")
        };
        let mut answers = Vec::new();
        for i in 0..4u8 {
            // A socket each: a late answer to a retried datagram cannot be
            // taken for the next one's.
            let u = std::net::UdpSocket::bind(bind)?;
            u.connect(addr(vip))?;
            u.set_read_timeout(Some(Duration::from_millis(700)))?;
            let msg: Vec<u8> = (0..3000)
                .map(|j| b'a' + ((j + usize::from(i)) % 26) as u8)
                .collect();
            // A retry or two: the first datagram may wait for a neighbour.
            for _ in 0..3 {
                u.send(&msg)?;
                let mut buf = [0u8; 4096];
                if let Ok(n) = u.recv(&mut buf) {
                    let s = String::from_utf8_lossy(&buf[..n]).to_string();
                    let (name, echo) = s.split_once(':').unwrap_or(("?", ""));
                    if echo.as_bytes() == &msg[..2048] {
                        answers.push(name.to_string());
                    } else {
                        answers.push(format!("bad answer of {n} bytes"));
                    }
                    break;
                }
            }
        }
        Ok(answers)
    })
    .expect("client namespace")
    .expect("udp");
    let ok = got.iter().filter(|n| n.starts_with("rs")).count();
    assert_eq!(ok, 4, "{got:?}\nuvs log:\n{}", d.log_text());
    assert_eq!(d.counter("drop.fragment_unmatched").unwrap_or(0), 0);
    drop(d);
}

#[test]
fn fragmented_udp_through_nat_gets_its_reply_ipv4() {
    if !root_or_skip("fragmented_udp_through_nat_gets_its_reply_ipv4") {
        return;
    }
    fragmented_udp_gets_its_reply(
        "f4",
        "192.0.2.10:53",
        &[
            "-A -u 192.0.2.10:53 -s rr",
            "-a -u 192.0.2.10:53 -r 203.0.113.11:53 -m",
            "-a -u 192.0.2.10:53 -r 203.0.113.12:53 -m",
        ],
    );
}

#[test]
fn fragmented_udp_through_nat_gets_its_reply_ipv6() {
    if !root_or_skip("fragmented_udp_through_nat_gets_its_reply_ipv6") {
        return;
    }
    fragmented_udp_gets_its_reply(
        "f6",
        "[2001:db8:f::10]:53",
        &[
            "-A -u [2001:db8:f::10]:53 -s rr",
            "-a -u [2001:db8:f::10]:53 -r [2001:db8:5::11]:53 -m",
            "-a -u [2001:db8:f::10]:53 -r [2001:db8:5::12]:53 -m",
        ],
    );
}
