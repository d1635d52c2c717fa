//! The control plane and the service look-up against the number of
//! services N: all three should stay flat in N (issue 8).
//!
//! * `lookup/N`: `Services::find` + `is_vip` of the last-added service.
//! * `add_one/N`: one `-A` (with one NAT server) applied to the
//!   configuration and committed to the runtime — plan, guard bookkeeping,
//!   snapshot publish — without the kernel guard's I/O; the service is
//!   removed again outside the timing, so N stays N.
//! * `restore/N`: `-R` of N services (each with one server) into an empty
//!   daemon state, the same path without the kernel's I/O.
//!
//! Run: `cargo bench --bench services` (`-- --quick` for a first look).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use uvs::control::ctl::{self, Applied, Config};
use uvs::control::daemon::prepare;
use uvs::datapath::service::Services;
use uvs::sys::guard::Owned;

const SIZES: [usize; 3] = [1, 10_000, 50_000];

/// The i-th service's VIP (one service per VIP, like Kubernetes' ClusterIPs).
fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + i as u32)
}

fn script(n: usize) -> String {
    let mut s = String::with_capacity(n * 80);
    for i in 0..n {
        let v = vip(i);
        s += &format!(
            "-A -t {v}:80 -s rr\n-a -t {v}:80 -r 203.0.113.{}:8080 -m\n",
            i % 200 + 1
        );
    }
    s
}

/// A daemon's state without its I/O: configuration, published snapshot and
/// guard bookkeeping.
struct State {
    config: Config,
    services: ArcSwap<Services>,
    owned: Owned,
}

impl State {
    fn new() -> State {
        State {
            config: Config::new(),
            services: ArcSwap::from_pointee(Services::default()),
            owned: Owned::default(),
        }
    }

    /// What the daemon does for one command, minus the kernel guard's I/O.
    fn run(&mut self, argv: &[String], stdin: Option<&str>) {
        let cmd = ctl::parse(argv).expect("parses");
        let mut undo = ctl::Undo::new();
        let out = ctl::execute_logged(
            &mut self.config,
            &cmd,
            stdin,
            &ctl::NoCounters,
            &ctl::Gates::default(),
            &mut undo,
        )
        .expect("applies");
        self.commit(&out.applied);
    }

    fn commit(&mut self, applied: &Applied) {
        let running = self.services.load_full();
        let p = prepare(&self.config, applied, &running, &mut self.owned, 0).expect("commits");
        black_box(&p.delta);
        self.services.store(Arc::new(p.plan.commit()));
    }
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn loaded(n: usize) -> State {
    let mut st = State::new();
    st.run(&words("-R"), Some(&script(n)));
    assert_eq!(st.services.load().len(), n);
    st
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    for n in SIZES {
        let st = loaded(n);
        let snap = st.services.load_full();
        let last = IpAddr::V4(vip(n - 1));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let a = black_box(last);
                (
                    black_box(snap.is_vip(a)),
                    black_box(snap.find(6, a, 80).is_some()),
                )
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("add_one");
    for n in SIZES {
        let mut st = loaded(n);
        let v = vip(n + 1);
        let add = words(&format!("-A -t {v}:80 -s rr"));
        let add_rs = words(&format!("-a -t {v}:80 -r 203.0.113.250:8080 -m"));
        let del = words(&format!("-D -t {v}:80"));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    st.run(&add, None);
                    st.run(&add_rs, None);
                    spent += t.elapsed();
                    st.run(&del, None);
                }
                spent
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("restore");
    g.sample_size(10);
    for n in [1_000, 10_000, 50_000] {
        let text = script(n);
        let argv = words("-R");
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let mut st = State::new();
                    let t = Instant::now();
                    st.run(&argv, Some(&text));
                    spent += t.elapsed();
                    drop(black_box(st));
                }
                spent
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
