//! The pipeline without I/O: parse → hooks → conntrack → scheduler → NAT
//! rewrite, for an established flow (both directions) and for new
//! connections. Run: `cargo bench --bench pipeline`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use uvs::pipeline::{Pipeline, Verdict};
use uvs::service::{DestSpec, ServiceSpec};
use uvs::stats::WorkerStats;
use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::wire::tcp::flags::{ACK, SYN};
use uvs_fwd::CsumMode;
use uvs_sched::{FwdMethod, SchedParams};

/// A TCP frame from `fwd`'s test builder.
fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    FrameSpec {
        src: src.parse().expect("literal address"),
        dst: dst.parse().expect("literal address"),
        sport,
        dport,
        l4: L4Spec::Tcp {
            flags,
            options: Vec::new(),
        },
        payload: vec![0x55; payload],
        ..FrameSpec::tcp_v4()
    }
    .build()
}

fn pipeline() -> Pipeline {
    let p = Pipeline::new(uvs_conntrack::Table::new(uvs_conntrack::Config::default()));
    let dest = |a: &str| DestSpec {
        addr: a.parse().unwrap(),
        port: 80,
        fwd: FwdMethod::Masq,
        weight: 1,
        u_threshold: 0,
        l_threshold: 0,
        tun: Default::default(),
    };
    let spec = ServiceSpec {
        proto: 6,
        addr: "192.0.2.10".parse().unwrap(),
        port: 80,
        sched: "rr".into(),
        params: SchedParams::default(),
        persistence: None,
        dests: vec![dest("203.0.113.11"), dest("203.0.113.12")],
    };
    let snap = p.services.load().rebuild(&[spec]).unwrap();
    p.services.store(Arc::new(snap));
    p
}

fn bench(c: &mut Criterion) {
    let st = WorkerStats::default();
    let p = pipeline();
    let mut syn = tcp("198.51.100.10", 40000, "192.0.2.10", 80, SYN, 0);
    let Verdict::Xmit { next_hop } = p.process(&mut syn, CsumMode::Full, 0, &st) else {
        panic!("SYN not forwarded")
    };
    let ack = tcp("198.51.100.10", 40000, "192.0.2.10", 80, ACK, 64);
    let reply = tcp(&next_hop.to_string(), 80, "198.51.100.10", 40000, ACK, 64);
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
            tcp(&src, sport, "192.0.2.10", 80, SYN, 0)
        })
        .collect();
    g.bench_function("new_connection", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            let mut buf = syns[0].clone();
            while left > 0 {
                let p = pipeline();
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
