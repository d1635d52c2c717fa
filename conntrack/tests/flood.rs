//! SYN flood against a capped table: the count never exceeds the cap,
//! memory stays bounded, and connections established before the flood all
//! survive it.

mod common;
use common::*;

use std::net::{IpAddr, Ipv4Addr};

use uvs_conntrack::proto::tcp::flags::{ACK, SYN};
use uvs_conntrack::{Config, ConnState, Dir, FwdMethod, PacketInfo, TcpState, Update};

fn flood(cap: usize, syns: u32, established: u16) {
    let t = uvs_conntrack::Table::new(Config {
        max_entries: cap,
        shards: 256,
        seed: 7,
        presize: true,
        ..Config::default()
    });
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let mut kept = Vec::new();
    for p in 0..established {
        let c = conn(TCP, 10_000 + p, &d);
        let h = t.insert(c.clone(), PacketInfo::tcp(SYN, 60), 0).unwrap();
        t.update(&h, Dir::Out, PacketInfo::tcp(SYN | ACK, 60), 0);
        assert_eq!(
            t.update(&h, Dir::In, PacketInfo::tcp(ACK, 52), 0),
            Update::Forward
        );
        kept.push(c);
    }
    let mem_before = t.heap_bytes();
    let mut max_mem = 0;
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    for i in 0..syns {
        let mut c = conn(TCP, (i & 0xffff) as u16, &d);
        c.caddr = IpAddr::V4(Ipv4Addr::from(base + (i >> 16)));
        let now = i as u64 / 1000; // 1M SYN/s
        let _ = t.insert(c, PacketInfo::tcp(SYN, 60), now);
        if i % (syns / 16) == 0 {
            assert!(t.len() <= cap);
            max_mem = max_mem.max(t.heap_bytes());
        }
    }
    assert!(t.len() <= cap, "{} > {cap}", t.len());
    let mem = t.heap_bytes().max(max_mem);
    // Bounded: the slabs hold at most `cap` entries plus one partial chunk
    // per shard, and the presized indexes never grew.
    let bound = cap * 48 + 256 * 256 * 48 + mem_before;
    assert!(mem <= bound, "memory {mem} > {bound}");
    for c in &kept {
        let (h, _) = t.lookup(&req(c)).expect("established connection evicted");
        assert_eq!(h.state(), ConnState::Tcp(TcpState::Established));
    }
    assert_eq!(d.active_conns() as usize, kept.len());
    assert_eq!((d.active_conns() + d.inactive_conns()) as usize, t.len());
    let s = t.stats();
    // Every SYN was either inserted or refused, and counted.
    assert_eq!(
        s.inserted + s.refused_full + s.refused_exists,
        syns as u64 + established as u64
    );
    assert!(s.evicted > 0);
    eprintln!(
        "cap {cap}: {} entries, {} evicted, {} refused, {:.1} bytes/entry",
        t.len(),
        s.evicted,
        s.refused_full,
        t.heap_bytes() as f64 / t.len() as f64
    );
}

#[test]
fn syn_flood_scaled_down() {
    flood(20_000, 200_000, 2_000);
}

#[test]
#[ignore = "full size: 10M SYNs against a 1M cap (about a minute)"]
fn syn_flood_10m_vs_1m() {
    flood(1_000_000, 10_000_000, 10_000);
}

#[test]
fn concurrent_flood_never_exceeds_cap() {
    // One unit of the cap at a time (10,000 < 512 × 64 shards), and in
    // batches of 8 per shard (300,000 ≥ 512 × 64 × 8).
    concurrent_flood(10_000);
    concurrent_flood(300_000);
}

fn concurrent_flood(cap: usize) {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let t = uvs_conntrack::Table::new(Config {
        max_entries: cap,
        shards: 64,
        seed: 11,
        ..Config::default()
    });
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut max_seen = 0;
            while !done.load(SeqCst) {
                max_seen = max_seen.max(t.len());
            }
            max_seen
        });
        let floods: Vec<_> = (0..2u32)
            .map(|w| {
                let (t, d) = (&t, &d);
                s.spawn(move || {
                    let base = u32::from(Ipv4Addr::new(100, 64 + w as u8, 0, 0));
                    for i in 0..200_000u32 {
                        let mut c = conn(TCP, (i & 0xffff) as u16, d);
                        c.caddr = IpAddr::V4(Ipv4Addr::from(base + (i >> 16)));
                        let _ = t.insert(c, PacketInfo::tcp(SYN, 60), 0);
                    }
                })
            })
            .collect();
        for f in floods {
            f.join().expect("flooder");
        }
        done.store(true, SeqCst);
        let max_seen = watcher.join().expect("watcher");
        assert!(max_seen <= cap, "len reached {max_seen}");
    });
    assert!(t.len() <= cap);
    assert_eq!((d.active_conns() + d.inactive_conns()) as usize, t.len());
    let s = t.stats();
    assert_eq!(s.inserted + s.refused_full, 400_000);
    // Two floods of 200,000 distinct clients fill even the larger cap.
    assert_eq!(t.len(), cap);
}

/// A table whose shards take the cap in batches (credit) still holds
/// exactly its cap: every insert up to it succeeds, the next is refused,
/// and after removals `len` is exact and the room is there again.
#[test]
fn batched_cap_is_exact() {
    let cap = 16 * 512 * 4; // 4 units per batch with 16 shards
    let t = table(cap);
    // A full table refuses instead of evicting a half-open entry.
    t.set_knobs(&uvs_conntrack::Knobs {
        drop_entry: uvs_conntrack::Defense::Off,
        ..Default::default()
    });
    let d = dest("203.0.113.11", 80, FwdMethod::Masq);
    let client = |i: u32| {
        let mut c = conn(TCP, (i & 0xffff) as u16, &d);
        c.caddr = IpAddr::V4(Ipv4Addr::from(0x6440_0000 + (i >> 16)));
        c
    };
    let mut handles = Vec::new();
    for i in 0..cap as u32 {
        let h = t.insert(client(i), PacketInfo::tcp(SYN, 60), 0);
        handles.push(h.unwrap_or_else(|e| panic!("insert {i} of {cap}: {e}")));
    }
    assert_eq!(t.len(), cap);
    let more = t.insert(client(cap as u32), PacketInfo::tcp(SYN, 60), 0);
    assert_eq!(more.unwrap_err(), uvs_conntrack::InsertError::Full);
    for h in handles.iter().step_by(3) {
        assert!(t.remove(h));
    }
    let left = cap - cap.div_ceil(3);
    assert_eq!(t.len(), left);
    assert_eq!((d.active_conns() + d.inactive_conns()) as usize, left);
    for i in 0..(cap - left) as u32 {
        let c = client(cap as u32 + i);
        t.insert(c, PacketInfo::tcp(SYN, 60), 0)
            .expect("room again");
    }
    assert_eq!(t.len(), cap);
    for h in &handles {
        t.remove(h);
    }
    assert_eq!(t.len(), cap - left);
}
