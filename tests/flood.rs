//! Flood defence with real packets (issue 12): spoofed floods written by
//! `uvs::lab::flood` in the client namespace, bounded in count and time.
//! Needs root (namespaces); skipped otherwise.
//!
//! * A SYN + blind-ACK flood at a DR service with `--conn-max`: an
//!   established connection and ≥ 99 of 100 new connections survive it,
//!   the full table gives flood entries up for them, and the flood's
//!   entries are gone once their (shortened, `--set`) timeout has run.
//!   `flood_1m_pairs` is the full-size version (`--ignore`d; see
//!   `scripts/flood.sh`).
//! * Spoofed SYNs sent twice at a NAT service make no ESTABLISHED entry.
//! * `uvs knob` lists and changes the knobs live; `drop_packet=3` drops
//!   new connections and counts them.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use uvs::lab::flood::{self, Kind, Spec};
use uvs::lab::{self, EchoConn};
use uvs::sys::netns;

mod common;

use common::{root_or_skip, Setup};

const VIP: &str = "192.0.2.10:80";
/// Forged clients come from 198.51.100.128/25 (the real client is .10).
const SPOOF_BASE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 128);

fn vip() -> SocketAddr {
    VIP.parse().unwrap()
}

fn setup(tag: &str, lab_opts: &[&str], args: &[&str]) -> Setup {
    Setup::start(
        &format!("uvf{}{tag}", std::process::id() % 100000),
        lab_opts,
        args,
    )
}

impl SetupExt for Setup {
    fn cmds(&self, cmds: &[&str]) {
        for c in cmds {
            self.d
                .uvsadm(c)
                .unwrap_or_else(|e| panic!("{e}\nuvs log:\n{}", self.d.log_text()));
        }
    }
    fn spoofed_entries(&self) -> (usize, usize) {
        let l = self.d.uvsadm("-L -c -n").unwrap();
        let spoofed: Vec<&str> = l
            .lines()
            .filter(|l| l.contains("198.51.100.") && !l.contains("198.51.100.10:"))
            .collect();
        let est = spoofed.iter().filter(|l| l.contains("ESTABLISHED")).count();
        (spoofed.len(), est)
    }
    fn flood(&self, kind: Kind, pairs: u64, max_time: Duration) -> flood::Report {
        let spec = Spec {
            vip: Ipv4Addr::new(192, 0, 2, 10),
            vport: 80,
            src_base: SPOOF_BASE,
            sources: 100,
            kind,
            pairs,
            max_time,
            seed: std::process::id(),
        };
        netns::run_in(&self.lab.ns("c"), move || flood::flood(&spec))
            .expect("client namespace")
            .expect("flood")
    }
}

trait SetupExt {
    fn cmds(&self, cmds: &[&str]);
    /// (entries from forged clients, of which ESTABLISHED) in `-L -c`.
    fn spoofed_entries(&self) -> (usize, usize);
    fn flood(&self, kind: Kind, pairs: u64, max_time: Duration) -> flood::Report;
}

const DR: [&str; 3] = [
    "-A -t 192.0.2.10:80 -s rr",
    "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -g",
    "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -g",
];

/// The SYN+ACK flood at a DR service, scaled by `pairs` and `conn_max`;
/// ESTABLISHED and FIN_WAIT last `timeout_s`.
fn syn_ack_flood(
    tag: &str,
    pairs: u64,
    conn_max: usize,
    drop_entry: &str,
    timeout_s: u64,
    max_gone: Duration,
) {
    let cap = conn_max.to_string();
    let s = setup(
        tag,
        &["--dr"],
        &["--conn-max", &cap, "--set-knob", drop_entry],
    );
    s.cmds(&DR);
    s.cmds(&[&format!("--set {timeout_s} {timeout_s} 0")]);
    let mut old = netns::run_in(&s.lab.ns("c"), || EchoConn::connect(vip()))
        .unwrap()
        .expect("echo connection");
    let who = old.ping("before").expect("echo before the flood");
    // Flood and new clients at once; the established connection speaks
    // every half second (its timeout is short) throughout.
    let started = Instant::now();
    let (sent, (tally, pings)) = std::thread::scope(|sc| {
        let f = sc.spawn(|| s.flood(Kind::SynAck, pairs, Duration::from_secs(120)));
        std::thread::sleep(Duration::from_millis(300));
        let clients = sc.spawn(|| {
            netns::run_in(&s.lab.ns("c"), || {
                lab::tcp_requests(vip(), 100, Duration::from_secs(60))
            })
            .expect("client namespace")
        });
        // (answered, unanswered within 2 s): a segment lost to a full ring
        // comes back by retransmission, later; the same line each time, so
        // a late echo answers a later ping.
        let mut pings = (0, 0);
        while !(f.is_finished() && clients.is_finished()) {
            old.send("ping").unwrap();
            match old.recv("ping", Duration::from_secs(2)) {
                Ok(w) => {
                    assert_eq!(w, who);
                    pings.0 += 1;
                }
                Err(_) => pings.1 += 1,
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        (f.join().unwrap(), (clients.join().unwrap(), pings))
    });
    let flood_time = started.elapsed();
    eprintln!("flood {sent:?}; new clients {tally:?}; pings {pings:?} over {flood_time:?}");
    // Every echo still owed arrives: the connection survived.
    for _ in 0..pings.1 {
        let w = old.recv("ping", Duration::from_secs(60));
        assert_eq!(w.expect("echo owed from the flood"), who);
    }
    let stats = s.d.call(&["stats"]).unwrap().stdout;
    for l in stats.lines().filter(|l| {
        (l.starts_with("drop.") || l.starts_with("connection_table.") || l.starts_with("defense."))
            && !l.ends_with(" 0")
    }) {
        eprintln!("  {l}");
    }
    assert!(sent.pairs == pairs, "flood cut short: {sent:?}");
    assert!(
        tally.total() >= 99,
        "{tally:?}\nstats:\n{}",
        s.d.call(&["stats"]).unwrap().stdout
    );
    let entries = s.d.counter("connection_table.entries").unwrap();
    assert!(entries as usize <= conn_max, "{entries} > {conn_max}");
    let evicted = s.d.counter("connection_table.evicted_established").unwrap();
    assert!(
        pairs as usize <= conn_max || evicted > 0,
        "a full table must give flood entries up: {}",
        s.d.call(&["stats"]).unwrap().stdout
    );
    // The flood's entries go; the established connection stays.
    let end = Instant::now() + max_gone;
    let mut left = s.spoofed_entries();
    while left.0 > 0 && Instant::now() < end {
        assert_eq!(old.ping("after").expect("echo after the flood"), who);
        std::thread::sleep(Duration::from_millis(500));
        left = s.spoofed_entries();
    }
    assert_eq!(left.0, 0, "flood entries left after {max_gone:?}: {left:?}");
    assert_eq!(old.ping("last").expect("echo at the end"), who);
    let list = s.d.uvsadm("-L -c -n").unwrap();
    assert!(
        list.lines()
            .any(|l| l.contains("198.51.100.10:") && l.contains("ESTABLISHED")),
        "{list}"
    );
}

#[test]
fn syn_ack_flood_at_a_dr_service_with_conn_max() {
    if !root_or_skip("syn_ack_flood_at_a_dr_service_with_conn_max") {
        return;
    }
    syn_ack_flood(
        "sa",
        20_000,
        2_000,
        "drop_entry=1",
        4,
        Duration::from_secs(15),
    );
}

#[test]
#[ignore = "full size: 1M spoofed pairs against --conn-max 100000, kernel timeouts (about 2 minutes)"]
fn flood_1m_pairs() {
    if !root_or_skip("flood_1m_pairs") {
        return;
    }
    // ESTABLISHED keeps the kernel's 15 minutes: the entries go by
    // drop_entry (idle 60 s, see defense.rs) within 70 s of the flood. Mode
    // 3: in the automatic mode the defence lets go as soon as the table is
    // below 75% full again, as the kernel's does once memory is back.
    syn_ack_flood(
        "1m",
        1_000_000,
        100_000,
        "drop_entry=3",
        900,
        Duration::from_secs(70),
    );
}

#[test]
fn duplicate_spoofed_syns_make_no_established_entry() {
    if !root_or_skip("duplicate_spoofed_syns_make_no_established_entry") {
        return;
    }
    for secure in ["0", "3"] {
        let knob = format!("secure_tcp={secure}");
        let s = setup(&format!("d{secure}"), &[], &["--set-knob", &knob]);
        s.cmds(&[
            "-A -t 192.0.2.10:80 -s rr",
            "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m",
            "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m",
        ]);
        let sent = s.flood(Kind::SynTwice, 200, Duration::from_secs(10));
        assert_eq!(sent.packets, 400, "{sent:?}");
        // The servers answer the second SYN of each pair with an ACK;
        // give them time to.
        std::thread::sleep(Duration::from_millis(1500));
        let (entries, est) = s.spoofed_entries();
        assert_eq!(entries, 200, "{}", s.d.uvsadm("-L -c -n").unwrap());
        assert_eq!(est, 0, "{}", s.d.uvsadm("-L -c -n").unwrap());
        // A real client still establishes.
        let t = netns::run_in(&s.lab.ns("c"), || {
            lab::tcp_requests(vip(), 10, Duration::from_secs(30))
        })
        .unwrap();
        assert_eq!(t.failures, 0, "{t:?}");
    }
}

#[test]
fn knobs_are_listed_and_changed_live() {
    if !root_or_skip("knobs_are_listed_and_changed_live") {
        return;
    }
    let s = setup(
        "kn",
        &[],
        &[
            "--set-knob",
            "drop_packet=3",
            "--set-knob",
            "am_droprate=1",
            "--amemthresh",
            "2048",
        ],
    );
    s.cmds(&[
        "-A -t 192.0.2.10:80 -s rr",
        "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m",
    ]);
    let list = s.d.call(&["knob"]).unwrap();
    assert_eq!(list.status, 0, "{list:?}");
    for want in [
        "drop_packet 3\n",
        "am_droprate 1\n",
        "amemthresh 2048\n",
        "secure_tcp 0\n",
    ] {
        assert!(list.stdout.contains(want), "{want:?} in\n{}", list.stdout);
    }
    // Mode 3 with rate 1 (from the first defence tick, waited for): every
    // new connection's first packet is dropped and counted.
    let gauge = |k: &str| s.d.counter(k).unwrap_or(u64::MAX);
    assert!(
        common::wait_until(Duration::from_secs(5), || gauge("defense.drop_rate") == 1),
        "no defence tick"
    );
    let t = netns::run_in(&s.lab.ns("c"), || {
        lab::tcp_requests(vip(), 1, Duration::from_millis(1500))
    })
    .unwrap();
    assert_eq!(t.failures, 1, "{t:?}");
    assert!(s.d.counter("drop.defense_drop_packet").unwrap() >= 1);
    assert_eq!(s.d.counter("defense.drop_rate").unwrap(), 1);
    // Changed live: off at the next tick.
    let r =
        s.d.call(&["knob", "drop_packet=0", "secure_tcp=1"])
            .unwrap();
    assert_eq!(
        (r.status, r.stdout.as_str()),
        (0, "drop_packet 0\nsecure_tcp 1\n")
    );
    assert!(
        common::wait_until(Duration::from_secs(5), || {
            gauge("defense.drop_packet") == 0 && gauge("defense.drop_rate") == 0
        }),
        "the change took no effect at a tick"
    );
    let t = netns::run_in(&s.lab.ns("c"), || {
        lab::tcp_requests(vip(), 5, Duration::from_secs(20))
    })
    .unwrap();
    assert_eq!(t.failures, 0, "{t:?}");
    // A bad value changes nothing and says why.
    let r = s.d.call(&["knob", "secure_tcp=0", "drop_entry=9"]).unwrap();
    assert_ne!(r.status, 0);
    assert!(
        r.stderr.contains("drop_entry: value '9' must be 0..3"),
        "{r:?}"
    );
    let list = s.d.call(&["knob"]).unwrap().stdout;
    assert!(list.contains("secure_tcp 1\n"), "{list}");
}
