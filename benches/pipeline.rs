//! The pipeline without I/O: parse → hooks → conntrack → scheduler → NAT
//! rewrite, for an established flow (both directions) and for new
//! connections. Run: `cargo bench --bench pipeline`.

use std::hint::black_box;
use std::time::{Duration, Instant};

#[path = "../tests/common/pipeline.rs"]
mod setup;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use uvs::datapath::pipeline::Verdict;
use uvs::datapath::stats::WorkerStats;
use uvs_fwd::wire::tcp::flags::{ACK, SYN};
use uvs_fwd::CsumMode;

fn bench(c: &mut Criterion) {
    let st = WorkerStats::default();
    let p = setup::pipeline();
    let mut syn = setup::tcp("198.51.100.10", 40000, "192.0.2.10", 80, SYN, 0);
    let Verdict::Xmit { next_hop, .. } = p.process(&mut syn, CsumMode::Full, 0, &st) else {
        panic!("SYN not forwarded")
    };
    let ack = setup::tcp("198.51.100.10", 40000, "192.0.2.10", 80, ACK, 64);
    let reply = setup::tcp(&next_hop.to_string(), 80, "198.51.100.10", 40000, ACK, 64);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    let mut buf = ack.clone();
    g.bench_function("established_request", |b| {
        b.iter(|| {
            buf.copy_from_slice(&ack);
            black_box(p.process(black_box(&mut buf), CsumMode::Full, 1, &st))
        })
    });
    let mut buf = reply.clone();
    g.bench_function("established_reply", |b| {
        b.iter(|| {
            buf.copy_from_slice(&reply);
            black_box(p.process(black_box(&mut buf), CsumMode::Full, 1, &st))
        })
    });
    // New connections: distinct clients; a fresh table every 100k so the
    // table size stays comparable (setup is not timed).
    let syns: Vec<Vec<u8>> = (0..100_000u32)
        .map(|i| {
            let src = format!("198.51.{}.{}", 100 + (i >> 16) % 2, (i >> 8) & 0xff);
            let sport = 1024 + (i & 0xff) as u16 * 200 + (i >> 16) as u16;
            setup::tcp(&src, sport, "192.0.2.10", 80, SYN, 0)
        })
        .collect();
    g.bench_function("new_connection", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            let mut buf = syns[0].clone();
            while left > 0 {
                let p = setup::pipeline();
                let n = left.min(syns.len());
                let t = Instant::now();
                for s in &syns[..n] {
                    buf.copy_from_slice(s);
                    black_box(p.process(&mut buf, CsumMode::Full, 1, &st));
                }
                total += t.elapsed();
                left -= n;
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
