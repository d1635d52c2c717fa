//! How the workers' waiting policy (`--idle-spin`, `--busy-poll`) changes
//! serial latency through uvs: a measurement, `#[ignore]`d (it asserts
//! nothing about time; run it by hand as root):
//!
//! ```text
//! UVS_WAKE_AB='|--idle-spin 50|--busy-poll 200' UVS_WAKE_EXE=target/release/uvs \
//!     cargo test --test wake -- --ignored --nocapture
//! ```
//!
//! `UVS_WAKE_AB` lists `uvs run` argument sets separated by `|` (an empty
//! one is the defaults); each round runs every set in turn in one lab, so
//! a change of the machine's load hits every set alike. Per set and round
//! it prints the p50 and p90 of `uvs bench`'s serial connect+request+close
//! test (its servers and client) and the worker's sleeps and spin
//! catches per forwarded packet, from `uvs stats`.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use uvs::lab;
use uvs::lab::bench::{load, server};
use uvs::sys::netns;

mod common;

use common::root_or_skip;
use uvs::lab::Director;

const RR: [&str; 3] = [
    "-A -t 192.0.2.10:80 -s rr",
    "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m",
    "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m",
];

/// `uvs bench`'s serial test (at most `n` requests, at most 20 s): the
/// p50 and p90 in µs.
fn serial(lab: &lab::Lab, n: u64) -> (u64, u64) {
    netns::run_in(&lab.ns("c"), move || {
        let vip: SocketAddr = "192.0.2.10:80".parse().unwrap();
        let stop = AtomicBool::new(false);
        let r = load::latency(&[vip], n, Duration::from_secs(20), &stop).expect("latency");
        (r.hist.value_at_quantile(0.5), r.hist.value_at_quantile(0.9))
    })
    .expect("client namespace")
}

#[test]
#[ignore]
fn serial_latency_by_waiting_policy() {
    if !root_or_skip("serial_latency_by_waiting_policy") {
        return;
    }
    let sets: Vec<String> = std::env::var("UVS_WAKE_AB")
        .unwrap_or_else(|_| "|--idle-spin 50".into())
        .split('|')
        .map(str::to_string)
        .collect();
    let rounds: usize = std::env::var("UVS_WAKE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let exe = std::env::var("UVS_WAKE_EXE").unwrap_or_else(|_| env!("CARGO_BIN_EXE_uvs").into());
    let lab = lab::Lab::up(&format!("uvwk{}", std::process::id() % 100000), &[]).expect("lab");
    let _s1 = server::start_in(&lab.ns("rs1"), "rs1").expect("rs1");
    let _s2 = server::start_in(&lab.ns("rs2"), "rs2").expect("rs2");
    let mut p50s = vec![Vec::new(); sets.len()];
    for round in 1..=rounds {
        for (k, set) in sets.iter().enumerate() {
            let args: Vec<&str> = set.split_whitespace().collect();
            let d = Director::start(&lab, std::path::Path::new(&exe), &args).expect("uvs run");
            for c in RR {
                d.uvsadm(c).expect("service");
            }
            // Warm: neighbours resolved, the servers' first threads made.
            let _ = serial(&lab, 50);
            let read = |k: &str| d.counter(k).unwrap_or(0);
            let (rx0, sl0, ca0) = (
                read("rx"),
                read("worker.sleeps"),
                read("worker.spin_caught"),
            );
            let (p50, p90) = serial(&lab, 2000);
            p50s[k].push(p50);
            let rx = (read("rx") - rx0).max(1) as f64;
            let (sl, ca) = (
                read("worker.sleeps") - sl0,
                read("worker.spin_caught") - ca0,
            );
            println!(
                "round {round} [{set}]: p50 {p50} µs, p90 {p90} µs, sleeps/pkt {:.3}, caught/pkt {:.3}",
                sl as f64 / rx,
                ca as f64 / rx
            );
        }
    }
    for (set, mut v) in sets.iter().zip(p50s) {
        v.sort_unstable();
        println!(
            "[{set}]: median p50 over {rounds} rounds {} µs (min {}, max {})",
            v[v.len() / 2],
            v[0],
            v[v.len() - 1]
        );
    }
}
