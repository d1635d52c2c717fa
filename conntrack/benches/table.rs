//! Connection-table benchmarks: lookup hit, insert, and lookup + state
//! update at 1K, 1M and 10M entries, single- and multi-threaded, plus the
//! memory per entry at 1M (printed).
//!
//! `cargo bench -p uvs-conntrack` (the 10M cases need ~1 GiB and half a
//! minute to build their table). Each size's table is built before its
//! benchmarks whatever the name filter, so to skip sizes set
//! `CT_BENCH_SIZES`, e.g. `CT_BENCH_SIZES=1K,1M cargo bench -p uvs-conntrack`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use uvs_conntrack::proto::tcp::flags::{ACK, SYN};
use uvs_conntrack::{
    Config, Dest, Dir, FwdMethod, NewConn, PacketInfo, Table, TcpState, Timeouts, Tuple,
    MAX_TIMEOUT_MS,
};

const SIZES: [(usize, &str); 3] = [(1_000, "1K"), (1_000_000, "1M"), (10_000_000, "10M")];
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

fn client(i: usize) -> (IpAddr, u16) {
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    (
        IpAddr::V4(Ipv4Addr::from(base + (i >> 16) as u32)),
        (i & 0xffff) as u16,
    )
}

fn new_conn(i: usize, dests: &[Arc<Dest>]) -> NewConn {
    let (caddr, cport) = client(i);
    let d = &dests[i % dests.len()];
    NewConn {
        proto: 6,
        caddr,
        cport,
        vaddr: IpAddr::V4(VIP),
        vport: 80,
        daddr: d.addr,
        dport: d.port,
        dest: d.clone(),
        fwd: FwdMethod::Masq,
    }
}

fn req(i: usize) -> Tuple {
    let (caddr, cport) = client(i);
    Tuple {
        proto: 6,
        src: caddr,
        sport: cport,
        dst: IpAddr::V4(VIP),
        dport: 80,
    }
}

struct Fixture {
    t: Table,
    dests: Vec<Arc<Dest>>,
    n: usize,
}

/// A table holding `n` established NAT connections that never expire
/// during the run.
fn fixture(n: usize) -> Fixture {
    let mut to = Timeouts::default();
    to.tcp[TcpState::Established as usize] = MAX_TIMEOUT_MS;
    let t = Table::new(Config {
        max_entries: n + n / 4 + 100_000,
        shards: 256,
        seed: 0x1234_5678,
        presize: true,
        timeouts: to,
        ..Config::default()
    });
    let dests: Vec<_> = (0..8)
        .map(|k| {
            Arc::new(Dest::new(
                IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10 + k)),
                8080,
                1,
                FwdMethod::Masq,
            ))
        })
        .collect();
    for i in 0..n {
        let h = t
            .insert(new_conn(i, &dests), PacketInfo::tcp(SYN, 60), 0)
            .expect("fixture insert");
        t.update(&h, Dir::Out, PacketInfo::tcp(SYN | ACK, 60), 0);
        t.update(&h, Dir::In, PacketInfo::tcp(ACK, 52), 0);
    }
    Fixture { t, dests, n }
}

/// A pseudo-random walk over existing entries (defeats the prefetcher the
/// way real traffic does).
fn walk(n: usize, k: usize) -> usize {
    (k.wrapping_mul(0x9E37_79B9) ^ (k >> 7)) % n
}

fn benches(c: &mut Criterion) {
    let wanted = std::env::var("CT_BENCH_SIZES").unwrap_or_else(|_| "1K,1M,10M".into());
    for (n, name) in SIZES {
        if !wanted.split(',').any(|w| w.trim() == name) {
            continue;
        }
        let f = fixture(n);
        eprintln!(
            "{name}: {} entries, {:.1} heap bytes/entry",
            f.t.len(),
            f.t.heap_bytes() as f64 / f.t.len() as f64
        );
        let mut g = c.benchmark_group("conntrack");
        g.throughput(Throughput::Elements(1));
        if n >= 1_000_000 {
            g.sample_size(20).measurement_time(Duration::from_secs(5));
        }

        g.bench_function(BenchmarkId::new("lookup_hit", name), |b| {
            let mut k = 0usize;
            b.iter(|| {
                k += 1;
                black_box(f.t.lookup(&req(walk(f.n, k))))
            })
        });

        g.bench_function(BenchmarkId::new("lookup_update", name), |b| {
            let mut k = 0usize;
            b.iter(|| {
                k += 1;
                let (h, dir) = f.t.lookup(&req(walk(f.n, k))).expect("hit");
                black_box(f.t.update(&h, dir, PacketInfo::tcp(ACK, 1500), 1))
            })
        });

        // Insert: fresh tuples beyond the fixture, removed again between
        // batches (not timed) so the table stays at its size.
        g.bench_function(BenchmarkId::new("insert", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    let batch = (iters - done).min(50_000) as usize;
                    let start = Instant::now();
                    let hs: Vec<_> = (0..batch)
                        .map(|j| {
                            f.t.insert(new_conn(f.n + j, &f.dests), PacketInfo::tcp(SYN, 60), 1)
                                .expect("insert")
                        })
                        .collect();
                    total += start.elapsed();
                    for h in &hs {
                        f.t.remove(h);
                    }
                    done += batch as u64;
                }
                total
            })
        });

        // Two workers looking up at once.
        g.bench_function(BenchmarkId::new("lookup_hit_2threads", name), |b| {
            b.iter_custom(|iters| {
                let per = iters / 2 + 1;
                let start = Instant::now();
                std::thread::scope(|s| {
                    for w in 0..2usize {
                        let t = &f.t;
                        let n = f.n;
                        s.spawn(move || {
                            for k in 0..per as usize {
                                black_box(t.lookup(&req(walk(n, k * 2 + w))));
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });

        // Two workers inserting disjoint fresh tuples at once.
        g.bench_function(BenchmarkId::new("insert_2threads", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    let batch = (iters - done).min(50_000) as usize;
                    let start = Instant::now();
                    let hs: Vec<_> = std::thread::scope(|s| {
                        let parts: Vec<_> = (0..2usize)
                            .map(|w| {
                                let (t, dests, n) = (&f.t, &f.dests, f.n);
                                s.spawn(move || {
                                    (w..batch)
                                        .step_by(2)
                                        .map(|j| {
                                            t.insert(
                                                new_conn(n + j, dests),
                                                PacketInfo::tcp(SYN, 60),
                                                1,
                                            )
                                            .expect("insert")
                                        })
                                        .collect::<Vec<_>>()
                                })
                            })
                            .collect();
                        parts
                            .into_iter()
                            .flat_map(|p| p.join().expect("bench worker"))
                            .collect()
                    });
                    total += start.elapsed();
                    for h in &hs {
                        f.t.remove(h);
                    }
                    done += batch as u64;
                }
                total
            })
        });

        // Two workers doing lookup + update on disjoint halves, the way two
        // cores share one table.
        g.bench_function(BenchmarkId::new("lookup_update_2threads", name), |b| {
            b.iter_custom(|iters| {
                let per = iters / 2 + 1;
                let start = Instant::now();
                std::thread::scope(|s| {
                    for w in 0..2usize {
                        let t = &f.t;
                        let n = f.n;
                        s.spawn(move || {
                            for k in 0..per as usize {
                                let i = walk(n, k * 2 + w);
                                if let Some((h, dir)) = t.lookup(&req(i)) {
                                    black_box(t.update(&h, dir, PacketInfo::tcp(ACK, 1500), 1));
                                }
                            }
                        });
                    }
                });
                // `iters` operations took this long on two cores together:
                // criterion divides, giving the aggregate time per op.
                start.elapsed()
            })
        });
        g.finish();
    }
}

criterion_group!(table, benches);
criterion_main!(table);
