//! The emulated tables' rule walk against the number of rules N: a packet
//! that the last of N port rules accepts (a linear walk's worst case), and
//! one that no rule matches (the policy), at N = 10 and 10,000. Both should
//! stay flat in N: each chain is indexed by destination port and host.
//!
//! Run: `cargo bench --bench rules` (`-- --quick` for a first look).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use uvs::datapath::hooks::HookPoint;
use uvs::datapath::tables::{parse, CtFacts, CtState, Pkt, Ruleset, TableId};

const SIZES: [usize; 2] = [10, 10_000];

/// N rules like a node's per-service ACCEPTs, then a DROP for the rest.
fn ruleset(n: usize) -> Ruleset {
    let mut t = String::from("*filter\n:INPUT ACCEPT [0:0]\n");
    for i in 0..n {
        t += &format!(
            "-A INPUT -d 192.0.2.{}/32 -p tcp -m tcp --dport {} -j ACCEPT\n",
            i % 200 + 1,
            10_000 + i
        );
    }
    t += "-A INPUT -p tcp -m conntrack --ctstate NEW -j DROP\nCOMMIT\n";
    parse(&t).expect("bench ruleset parses")
}

fn pkt(n: usize, dport: u16) -> Pkt {
    Pkt {
        proto: 6,
        src: "198.51.100.7".parse().unwrap(),
        dst: format!("192.0.2.{}", (n - 1) % 200 + 1).parse().unwrap(),
        sport: 40_000,
        dport,
        has_ports: true,
        len: 60,
    }
}

fn walk(c: &mut Criterion) {
    let mut g = c.benchmark_group("walk");
    for n in SIZES {
        let r = ruleset(n);
        let mut ct = || CtFacts {
            state: CtState::NEW,
            ipvs: None,
        };
        let last = pkt(n, (10_000 + n - 1) as u16);
        g.bench_with_input(BenchmarkId::new("last_rule", n), &n, |b, _| {
            b.iter(|| {
                let mut mark = 0;
                black_box(r.run(
                    TableId::Filter,
                    HookPoint::LocalIn,
                    black_box(&last),
                    &mut mark,
                    &mut ct,
                ))
            })
        });
        let none = pkt(n, 80);
        g.bench_with_input(BenchmarkId::new("no_rule", n), &n, |b, _| {
            b.iter(|| {
                let mut mark = 0;
                black_box(r.run(
                    TableId::Filter,
                    HookPoint::LocalIn,
                    black_box(&none),
                    &mut mark,
                    &mut ct,
                ))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, walk);
criterion_main!(benches);
