//! ns per `schedule()` for every registered scheduler at 10, 100 and 1000
//! servers, with every server up and no connections bound (the common
//! case). Weights cycle 1..=10 so that weighted schedulers do real work;
//! keys cycle through 1024 sources and 1024 destination addresses, so the
//! hashing schedulers touch the whole table and lblc/lblcr measure their
//! hit path after the first round.
//!
//! Run: `cargo bench -p uvs-sched --bench schedule`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use uvs_sched::{Dest, FwdMethod, Registry, SchedKey, SchedParams};

fn dests(n: usize) -> Vec<Arc<Dest>> {
    (0..n)
        .map(|i| {
            let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + i as u32 + 1));
            Arc::new(Dest::new(a, 80, (i % 10) as u32 + 1, FwdMethod::Masq))
        })
        .collect()
}

fn keys() -> Vec<SchedKey> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..1024)
        .map(|i| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            SchedKey {
                proto: 6,
                src: IpAddr::V4(Ipv4Addr::from((x >> 32) as u32)),
                sport: (x >> 16) as u16,
                dst: IpAddr::V4(Ipv4Addr::from(0xc000_0000u32 | i)),
                dport: 80,
                now_ms: 1,
            }
        })
        .collect()
}

fn bench_schedule(c: &mut Criterion) {
    let keys = keys();
    for name in Registry::names() {
        let mut group = c.benchmark_group(format!("schedule/{name}"));
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for n in [10usize, 100, 1000] {
            let ds = dests(n);
            let s = Registry::create(name, &SchedParams::default(), &ds)
                .expect("every registered scheduler builds with default params");
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & 1023;
                    black_box(s.schedule(black_box(&keys[i])))
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_schedule);
criterion_main!(benches);
