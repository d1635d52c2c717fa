//! Bytes per connection at 1M IPv4 connections: entry slab plus indexes,
//! everything the table allocates (the shared `Dest`s excluded).

mod common;
use common::*;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use uvs_conntrack::proto::tcp::flags::SYN;
use uvs_conntrack::{Config, FwdMethod, PacketInfo, Table};

fn fill(presize: bool, fwd: FwdMethod, n: u32) -> (f64, Table) {
    let t = Table::new(Config {
        max_entries: n as usize,
        shards: 256,
        seed: 3,
        presize,
        ..Config::default()
    });
    let d = dest("203.0.113.11", 80, fwd);
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let mut c = conn(TCP, 0, &d);
    for i in 0..n {
        c.caddr = IpAddr::V4(Ipv4Addr::from(base + (i >> 16)));
        c.cport = i as u16;
        t.insert(c.clone(), PacketInfo::tcp(SYN, 60), 0).unwrap();
    }
    (t.heap_bytes() as f64 / t.len() as f64, t)
}

#[test]
fn bytes_per_ipv4_connection_at_1m() {
    let (nat_pre, t) = fill(true, FwdMethod::Masq, 1_000_000);
    let (nat_grow, _) = fill(false, FwdMethod::Masq, 1_000_000);
    let (dr_pre, _) = fill(true, FwdMethod::Route, 1_000_000);
    eprintln!(
        "bytes/connection at 1M: NAT presized {nat_pre:.1}, NAT grown {nat_grow:.1}, DR presized {dr_pre:.1}"
    );
    // Each bound includes the slot's 4-byte version word (`ticket.rs`).
    assert!(nat_pre <= 68.0, "NAT presized: {nat_pre:.1} B");
    assert!(dr_pre <= 68.0, "DR presized: {dr_pre:.1} B");
    assert!(nat_grow <= 76.0, "NAT grown: {nat_grow:.1} B");

    // Rough sanity timing (not a benchmark; criterion benches are in
    // benches/): a million lookup hits.
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let tuples: Vec<_> = (0..1_000_000u32)
        .map(|k| {
            let i = (k.wrapping_mul(2_654_435_761)) % 1_000_000;
            uvs_conntrack::Tuple {
                proto: TCP,
                src: IpAddr::V4(Ipv4Addr::from(base + (i >> 16))),
                sport: i as u16,
                dst: ip("192.0.2.10"),
                dport: 80,
            }
        })
        .collect();
    let start = Instant::now();
    let mut hits = 0;
    for tu in &tuples {
        hits += t.lookup(tu).is_some() as u32;
    }
    let el = start.elapsed();
    assert_eq!(hits, 1_000_000);
    eprintln!(
        "~{:.0} ns per random lookup hit at 1M (rough)",
        el.as_nanos() as f64 / 1e6
    );
}

/// One shard at a 4096 cap: its IPv4 indexes start with room for 128 keys
/// (1/32 of the cap) and its first slab chunk is there from the start.
fn one_shard() -> Table {
    Table::new(Config {
        max_entries: 4096,
        shards: 1,
        seed: 3,
        ..Config::default()
    })
}

#[test]
fn the_sweep_allocates_the_next_chunk_ahead_of_the_inserts() {
    let t = one_shard();
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let add = |from: u16, to: u16| {
        for p in from..to {
            t.insert(conn(TCP, p, &d), PacketInfo::tcp(SYN, 60), 0)
                .unwrap();
        }
    };
    let empty = t.heap_bytes();
    add(1, 101);
    // The first chunk was allocated with the table.
    assert_eq!(t.heap_bytes(), empty, "no allocation for the first 100");
    add(101, 200);
    let before = t.heap_bytes();
    // Past half the chunk: the sweep adds the next one (and no entry
    // expires at time 0).
    assert_eq!(t.expire(0, 1 << 16), 0);
    let after = t.heap_bytes();
    assert!(after >= before + 256 * 48, "{before} → {after}");
    // The inserts into it then allocate nothing.
    add(200, 400);
    assert_eq!(t.heap_bytes(), after);
    assert_eq!(t.len(), 399);
}

#[test]
fn the_sweep_grows_a_nearly_full_index_ahead() {
    let t = one_shard();
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    for p in 1..101 {
        t.insert(conn(TCP, p, &d), PacketInfo::tcp(SYN, 60), 0)
            .unwrap();
    }
    // 100 of 128 keys: past 3/4 of the load limit, both indexes (NAT:
    // request and reply) are rebuilt bigger by the sweep.
    let before = t.heap_bytes();
    t.expire(0, 1 << 16);
    let after = t.heap_bytes();
    assert!(after > before, "{before} → {after}");
    // Every connection is still found both ways.
    for p in 1..101 {
        let c = conn(TCP, p, &d);
        assert!(t.lookup(&req(&c)).is_some(), "port {p}");
        assert!(t.lookup(&reply(&c)).is_some(), "port {p} reply");
    }
    // And no second sweep grows them again.
    t.expire(0, 1 << 16);
    assert_eq!(t.heap_bytes(), after);
}
