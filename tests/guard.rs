//! The kernel guard dies with uvs: a SIGKILLed `uvs run` leaves no
//! nf_tables table behind (the kernel deletes the table with uvs's netlink
//! socket), and the VIP is the director kernel's again at once, with no
//! restart. Needs root (a namespace lab); skips without it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use uvs::lab;
use uvs::sys::netns;
use uvs::sys::nftnl::{NftSock, NFPROTO_NETDEV};

mod common;

use common::{root_or_skip, Setup};

/// The netdev tables of namespace `ns`, read over netlink (no `nft`).
fn netdev_tables(ns: &str) -> Vec<String> {
    netns::run_in(ns, || {
        NftSock::open()
            .and_then(|mut s| s.tables(NFPROTO_NETDEV))
            .expect("nf_tables listing")
    })
    .expect("namespace")
}

#[test]
fn sigkill_leaves_no_table_and_the_vip_is_the_kernels_again() {
    if !root_or_skip("sigkill_leaves_no_table_and_the_vip_is_the_kernels_again") {
        return;
    }
    // The VIP is also the director's own address, with a server of the
    // director's kernel listening on it: while uvs runs the guard keeps
    // the kernel off it; once uvs is gone the kernel answers.
    let s = Setup::start(
        &format!("uvg{}k", std::process::id() % 100000),
        &["--vip-on-lb"],
        &[],
    );
    let _lb = lab::serve_in(&s.lab.ns("lb"), "lb", 80, 53).expect("director's own server");
    for c in [
        "-A -t 192.0.2.10:80 -s rr",
        "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 1",
        "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 1",
    ] {
        s.d.uvsadm(c)
            .unwrap_or_else(|e| panic!("{e}\n{}", s.d.log_text()));
    }
    let vip: SocketAddr = "192.0.2.10:80".parse().unwrap();
    let c = s.lab.ns("c");
    let t = netns::run_in(&c, move || {
        lab::tcp_requests(vip, 10, Duration::from_secs(30))
    })
    .unwrap();
    assert_eq!(t.failures, 0, "{t:?}");
    assert_eq!(
        t.count("rs1") + t.count("rs2"),
        10,
        "balanced by uvs: {t:?}"
    );
    assert!(netdev_tables(&s.lab.ns("lb")).contains(&"uvs".to_string()));

    // SAFETY: kill(2) on the PID of the uvs process this test started.
    unsafe { libc::kill(s.d.pid() as i32, libc::SIGKILL) };
    let end = Instant::now() + Duration::from_secs(5);
    let mut tables = netdev_tables(&s.lab.ns("lb"));
    while tables.contains(&"uvs".to_string()) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        tables = netdev_tables(&s.lab.ns("lb"));
    }
    assert!(tables.is_empty(), "a killed uvs left {tables:?}");
    // No restart: the director's kernel answers on the VIP now.
    let t = netns::run_in(&c, move || {
        lab::tcp_requests(vip, 5, Duration::from_secs(20))
    })
    .unwrap();
    assert_eq!((t.count("lb"), t.failures), (5, 0), "{t:?}");
}
