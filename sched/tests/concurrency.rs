//! Many threads call `schedule()` while the control path removes servers
//! one by one: no panic, and no pick that starts after an `update()`
//! returned may return a server that update removed. Removed servers are
//! deliberately left "available" (the engine would clear that flag), so the
//! scheduler's own publication is what is tested.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{build, dests, key_from, TestRng};
use uvs_sched::Registry;

const SERVERS: usize = 48;
const WORKERS: usize = 3;

fn hammer(name: &'static str) {
    let flags: &[&str] = match name {
        "sh" => &["sh-fallback"],
        "mh" => &["mh-fallback"],
        _ => &[],
    };
    let all = dests(&[1; SERVERS]);
    let sched: Arc<dyn uvs_sched::Scheduler> = Arc::from(build(name, flags, &all));
    // Servers 0..removed have been removed by an update that returned.
    let removed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let picks = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (sched, all, removed, stop, picks) = (
                Arc::clone(&sched),
                all.clone(),
                Arc::clone(&removed),
                Arc::clone(&stop),
                Arc::clone(&picks),
            );
            thread::spawn(move || {
                let mut rng = TestRng(0x1234_5678 + w as u64);
                let mut now = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let gone = removed.load(Ordering::Acquire);
                    let mut k = key_from(rng.next_u32(), (rng.next_u32() >> 16) as u16);
                    k.dst = IpAddr::V4(Ipv4Addr::from(0xc000_0200 | (rng.next_u32() & 0xff)));
                    now += 1;
                    k.now_ms = now;
                    if let Some(d) = sched.schedule(&k) {
                        let i = all
                            .iter()
                            .position(|x| Arc::ptr_eq(x, &d))
                            .expect("picked an unknown server");
                        assert!(
                            i >= gone,
                            "{name}: picked server {i} after servers 0..{gone} were removed"
                        );
                        // Churn the counts that lc/wlc/sed/... read.
                        d.conn_bound(true);
                        d.conn_unbound(true);
                        picks.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for gone in 1..SERVERS {
        sched.update(&all[gone..]);
        removed.store(gone, Ordering::Release);
        thread::sleep(Duration::from_micros(300));
    }
    stop.store(true, Ordering::Release);
    for w in workers {
        w.join()
            .unwrap_or_else(|_| panic!("{name}: a worker panicked"));
    }
    assert!(picks.load(Ordering::Relaxed) > 0, "{name}: no picks at all");
}

#[test]
fn every_scheduler_survives_concurrent_removal() {
    let names: Vec<&'static str> = Registry::names().collect();
    assert_eq!(names.len(), 14);
    for name in names {
        hammer(name);
    }
}

/// Lock-free cursors: under contention every position of the rotation is
/// still handed out exactly once, so whole periods split exactly.
#[test]
fn rr_and_wrr_hand_out_each_position_once_under_contention() {
    for (name, weights, per_thread, want) in [
        (
            "wrr",
            vec![4u32, 3, 2],
            90_000usize,
            vec![120_000u64, 90_000, 60_000],
        ),
        ("rr", vec![1, 1, 1], 90_000, vec![90_000, 90_000, 90_000]),
    ] {
        let ds = dests(&weights);
        let s: Arc<dyn uvs_sched::Scheduler> = Arc::from(build(name, &[], &ds));
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let (s, ds) = (Arc::clone(&s), ds.clone());
                thread::spawn(move || {
                    let mut c = vec![0u64; ds.len()];
                    let k = key_from(1, 1);
                    for _ in 0..per_thread {
                        let d = s.schedule(&k).expect("servers up");
                        c[ds.iter().position(|x| Arc::ptr_eq(x, &d)).unwrap()] += 1;
                    }
                    c
                })
            })
            .collect();
        let mut total = vec![0u64; ds.len()];
        for h in handles {
            for (t, c) in total.iter_mut().zip(h.join().expect("worker")) {
                *t += c;
            }
        }
        assert_eq!(total, want, "{name}");
    }
}
