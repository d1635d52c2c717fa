//! Path MTU for NAT replies, end to end: the director's link toward the
//! client is narrower (MTU 1400) than the client's and the real servers'
//! (1500), so the real servers' replies are too big for it. The director
//! owes the real server a fragmentation needed / packet too big (checked
//! before SNAT, as the kernel's `ip_forward` does); once the server has
//! lowered its path MTU, the large replies arrive. Needs root; skips
//! without it.

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
    assert_eq!(ok, 4, "{got:?}\nuvs log:\n{}", d.log_text());
    assert!(
        d.counter("drop.too_big").unwrap_or(0) >= 1,
        "the replies were too big at first (else the test shows nothing)"
    );
    drop(d);
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
