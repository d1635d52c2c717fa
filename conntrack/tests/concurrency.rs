//! Inserts, lookups from both directions, state updates and expiry from
//! several threads at once: no entry is lost or duplicated and the
//! destinations' counts add up.

mod common;
use common::*;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};

use uvs_conntrack::proto::tcp::flags::{ACK, FIN, SYN};
use uvs_conntrack::{
    Config, ConnState, Dir, FwdMethod, InsertError, PacketInfo, TcpState, Timeouts, Update,
};

const WORKERS: u16 = 4;

fn run(per_worker: u16, rounds: usize) {
    let mut to = Timeouts::default();
    // Closed connections vanish quickly so the expirer has work.
    to.tcp[TcpState::TimeWait as usize] = 50;
    let t = Arc::new(uvs_conntrack::Table::new(Config {
        max_entries: 1 << 22,
        shards: 64,
        seed: 99,
        timeouts: to,
        ..Config::default()
    }));
    let dests: Vec<_> = (0..4)
        .map(|i| dest(&format!("203.0.113.{}", 10 + i), 80, FwdMethod::Masq))
        .collect();
    let now = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let contested_wins = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(WORKERS as usize + 2));

    let expirer = {
        let (t, now, stop, barrier) = (t.clone(), now.clone(), stop.clone(), barrier.clone());
        std::thread::spawn(move || {
            barrier.wait();
            let mut removed = 0;
            while !stop.load(SeqCst) {
                let n = now.fetch_add(1, SeqCst) + 1;
                removed += t.expire(n, 512);
                std::thread::yield_now();
            }
            removed
        })
    };

    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (t, now, barrier, dests, wins) = (
                t.clone(),
                now.clone(),
                barrier.clone(),
                dests.clone(),
                contested_wins.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                let mut kept = Vec::new();
                for round in 0..rounds {
                    for i in 0..per_worker {
                        let port = 1000 + w * per_worker + i;
                        let d = &dests[(port as usize + round) % dests.len()];
                        let mut c = conn(TCP, port, d);
                        // Each round uses a new client address.
                        c.caddr = ip(&format!("198.51.{}.{}", 100 + round / 250, round % 250 + 1));
                        let n = now.load(SeqCst);
                        let h = t.insert(c.clone(), PacketInfo::tcp(SYN, 60), n).unwrap();
                        // Reply found from the other direction.
                        let (hr, dir) = t.lookup(&reply(&c)).expect("reply lookup");
                        assert_eq!(dir, Dir::Out);
                        assert_eq!(hr.cport(), port);
                        assert_eq!(
                            t.update(&hr, dir, PacketInfo::tcp(SYN | ACK, 60), n),
                            Update::Forward
                        );
                        let (hi, dir) = t.lookup(&req(&c)).expect("request lookup");
                        assert_eq!(dir, Dir::In);
                        assert_eq!(
                            t.update(&hi, dir, PacketInfo::tcp(ACK, 52), n),
                            Update::Forward
                        );
                        if i % 3 == 0 {
                            // Closed: expires soon, concurrently.
                            t.update(&h, Dir::In, PacketInfo::tcp(FIN | ACK, 52), n);
                            t.update(&h, Dir::Out, PacketInfo::tcp(FIN | ACK, 52), n);
                        } else {
                            kept.push(c);
                        }
                    }
                    // Every worker races on the same contested tuples.
                    for i in 0..16u16 {
                        let d = &dests[0];
                        let mut c = conn(TCP, 60000 + i, d);
                        c.caddr = ip(&format!("198.18.{}.{}", round / 250, round % 250));
                        c.vport = 8000 + round as u16;
                        match t.insert(c, PacketInfo::tcp(SYN, 60), now.load(SeqCst)) {
                            Ok(_) => {
                                wins.fetch_add(1, SeqCst);
                            }
                            Err(InsertError::Exists) => {}
                            Err(e) => panic!("unexpected {e}"),
                        }
                    }
                }
                kept
            })
        })
        .collect();
    barrier.wait();
    let kept: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker panicked"))
        .collect();
    stop.store(true, SeqCst);
    expirer.join().expect("expirer panicked");

    // Each contested tuple was won exactly once.
    assert_eq!(contested_wins.load(SeqCst), rounds * 16);

    // Let every closed connection expire (the contested SYN_RECV ones live
    // 60 s; established 900 s).
    let end = now.load(SeqCst) + 1000;
    while t.expire(end, 1 << 20) > 0 {}
    let expected = kept.len() + rounds * 16;
    assert_eq!(t.len(), expected);
    let mut seen = HashSet::new();
    t.for_each_entry(end, |i| {
        assert!(seen.insert((i.caddr, i.cport, i.vport)), "duplicate {i:?}");
    });
    assert_eq!(seen.len(), expected);
    for c in &kept {
        let (h, _) = t.lookup(&req(c)).expect("lost entry");
        assert_eq!(h.state(), ConnState::Tcp(TcpState::Established));
    }
    let active: u32 = dests.iter().map(|d| d.active_conns()).sum();
    let inactive: u32 = dests.iter().map(|d| d.inactive_conns()).sum();
    assert_eq!(active as usize, kept.len());
    assert_eq!(inactive as usize, rounds * 16);
}

#[test]
fn threads_insert_lookup_update_expire() {
    run(400, 50);
}

#[test]
#[ignore = "long stress; run with --ignored"]
fn threads_stress_long() {
    run(2000, 200);
}
