//! The pipeline without I/O: parse → hooks → conntrack → scheduler → NAT
//! rewrite, for an established flow (both directions) and for new
//! connections, against the floor of parse + DNAT alone measured in the
//! same group. The `_counted` cases run the same packets with the service
//! and real-server counters on (`--stats`), against the uncounted ones.
//! `established_request_trace_off` is `established_request` with the
//! engine's per-packet `uvs trace` check in front (a relaxed load of the
//! tracer's flag, no trace running): what tracing costs when off. (New
//! connections always include the scheduler call's thread-local check.)
//! Run: `cargo bench --bench pipeline`.
//!
//! Instruction counts (repeatable on a shared machine): set
//! `UVS_PIPELINE_CASE=<case>:<iterations>` and run the bench binary under
//! `valgrind --tool=callgrind`; it then runs that case `iterations` times
//! outside criterion and exits. The per-packet count is the difference
//! between two runs (e.g. 100000 and 0 iterations) divided by the
//! iteration count. Cases: `parse_dnat`, `established_request`,
//! `established_reply`, `new_connection` (at most 100000),
//! `short_connection` (at most 20000; one iteration is a whole short
//! connection, nine packets: SYN, SYN-ACK, ACK, request, response, the
//! client's FIN, the server's ACK and FIN, the last ACK; criterion's time is
//! per connection too), and
//! `established_request_among_<N>`: the established request with N other
//! services configured (the service look-up and the VIP check must stay
//! flat in N; criterion runs it for N = 50000), and
//! `established_request_conns_<M>`: the established request with M other
//! connections in the table (at most 100000; the flow cache and the
//! connection lookup must stay flat in M), and likewise
//! `new_connection_among_<N>` (N other services) and
//! `new_connection_conns_<M>` (M other connections already in the table,
//! at most 1000000; with `UVS_PIPELINE_SWEEP=1` after one pass of the
//! expiry sweep): a new connection's cost must stay flat in both.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/common/pipeline.rs"]
mod setup;

use criterion::{criterion_group, Criterion, Throughput};
use uvs::datapath::pipeline::{Pipeline, Verdict};
use uvs::datapath::service::Services;
use uvs::datapath::stats::{Stats, WorkerStats};
use uvs_fwd::wire::tcp::flags::{ACK, FIN, PSH, SYN};
use uvs_fwd::CsumMode;

/// New-connection SYNs per fresh table.
const SYNS: usize = 100_000;
/// Short connections per fresh table.
const SHORTS: usize = 20_000;

struct Frames {
    ack: Vec<u8>,
    reply: Vec<u8>,
    server: IpAddr,
    syns: Vec<Vec<u8>>,
}

/// Opens the established flow in `p` and builds every case's frames.
fn frames(p: &Pipeline, st: &WorkerStats) -> Frames {
    let mut syn = setup::tcp("198.51.100.10", 40000, "192.0.2.10", 80, SYN, 0);
    let Verdict::Xmit { next_hop, .. } = p.process(&mut syn, CsumMode::Full, 0, st) else {
        panic!("SYN not forwarded")
    };
    // The server's SYN-ACK and the client's ACK: the flow is ESTABLISHED
    // for both directions' cases (a reply case after the SYN alone would
    // measure a half-open connection's replies).
    let server = next_hop.to_string();
    let mut syn_ack = setup::tcp(&server, 80, "198.51.100.10", 40000, SYN | ACK, 0);
    let mut ack = setup::tcp("198.51.100.10", 40000, "192.0.2.10", 80, ACK, 0);
    for (what, f) in [("SYN-ACK", &mut syn_ack), ("ACK", &mut ack)] {
        let v = p.process(f, CsumMode::Full, 0, st);
        assert!(
            matches!(v, Verdict::Xmit { .. }),
            "{what} not forwarded: {v:?}"
        );
    }
    // New connections: distinct clients.
    let syns = (0..SYNS as u32)
        .map(|i| {
            let (src, sport) = client(i);
            setup::tcp(&src, sport, "192.0.2.10", 80, SYN, 0)
        })
        .collect();
    Frames {
        ack: setup::tcp("198.51.100.10", 40000, "192.0.2.10", 80, ACK, 64),
        reply: setup::tcp(&next_hop.to_string(), 80, "198.51.100.10", 40000, ACK, 64),
        server: next_hop,
        syns,
    }
}

/// The client address and port of new connection `i` (all distinct).
fn client(i: u32) -> (String, u16) {
    let src = format!("198.51.{}.{}", 100 + (i >> 16) % 2, (i >> 8) & 0xff);
    (src, 1024 + (i & 0xff) as u16 * 200 + (i >> 16) as u16)
}

/// The packets of one short connection for each of `SHORTS` clients: the
/// client's (SYN, ACK, request, FIN, last ACK) and, for either server rr
/// may pick, the server's (SYN-ACK, response, ACK of the FIN, FIN).
struct Short {
    client: Vec<[Vec<u8>; 5]>,
    server: [Vec<[Vec<u8>; 4]>; 2],
    servers: [IpAddr; 2],
}

impl Short {
    fn new() -> Self {
        const VIP: &str = "192.0.2.10";
        let servers = ["203.0.113.11", "203.0.113.12"];
        let clients: Vec<(String, u16)> = (0..SHORTS as u32).map(client).collect();
        let client = clients
            .iter()
            .map(|(c, p)| {
                [
                    setup::tcp(c, *p, VIP, 80, SYN, 0),
                    setup::tcp(c, *p, VIP, 80, ACK, 0),
                    setup::tcp(c, *p, VIP, 80, ACK | PSH, 64),
                    setup::tcp(c, *p, VIP, 80, FIN | ACK, 0),
                    setup::tcp(c, *p, VIP, 80, ACK, 0),
                ]
            })
            .collect();
        let server = servers.map(|s| {
            clients
                .iter()
                .map(|(c, p)| {
                    [
                        setup::tcp(s, 80, c, *p, SYN | ACK, 0),
                        setup::tcp(s, 80, c, *p, ACK | PSH, 64),
                        setup::tcp(s, 80, c, *p, ACK, 0),
                        setup::tcp(s, 80, c, *p, FIN | ACK, 0),
                    ]
                })
                .collect()
        });
        Short {
            client,
            server,
            servers: servers.map(|s| s.parse().expect("literal address")),
        }
    }

    /// Client `i`'s whole connection through `p`, in the order the packets
    /// cross the director: whether every packet was forwarded.
    #[inline(always)]
    fn run(&self, p: &Pipeline, i: usize, buf: &mut Vec<u8>, st: &WorkerStats) -> bool {
        let mut one = |f: &[u8]| {
            buf.clear();
            buf.extend_from_slice(f);
            match p.process(black_box(&mut buf[..]), CsumMode::Full, 1, st) {
                Verdict::Xmit { next_hop, .. } => Some(next_hop),
                _ => None,
            }
        };
        let c = &self.client[i];
        let Some(hop) = one(&c[0]) else {
            return false;
        };
        let s = &self.server[(hop == self.servers[1]) as usize][i];
        [&s[0], &c[1], &c[2], &s[1], &c[3], &s[2], &s[3], &c[4]]
            .into_iter()
            .all(|f| one(f).is_some())
    }
}

/// The floor: parse and rewrite a request with no table, hooks or
/// scheduler.
#[inline(always)]
fn parse_dnat(buf: &mut [u8], server: IpAddr) -> bool {
    match uvs_fwd::parse(buf) {
        Ok(p) => uvs_fwd::dnat(buf, &p, server, 80, CsumMode::Full).is_ok(),
        Err(_) => false,
    }
}

fn bench(c: &mut Criterion) {
    let st = WorkerStats::default();
    let p = setup::pipeline();
    let f = frames(&p, &st);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    let mut buf = f.ack.clone();
    g.bench_function("parse_dnat", |b| {
        b.iter(|| {
            buf.copy_from_slice(&f.ack);
            black_box(parse_dnat(black_box(&mut buf), f.server))
        })
    });
    g.bench_function("established_request", |b| {
        b.iter(|| {
            buf.copy_from_slice(&f.ack);
            black_box(p.process(black_box(&mut buf), CsumMode::Full, 1, &st))
        })
    });
    g.bench_function("established_request_trace_off", |b| {
        b.iter(|| {
            buf.copy_from_slice(&f.ack);
            // What `engine.rs` does per packet before the pipeline.
            if black_box(&p.trace).armed() {
                unreachable!("no trace runs in the bench");
            }
            black_box(p.process(black_box(&mut buf), CsumMode::Full, 1, &st))
        })
    });
    // The same with counters: a counted snapshot and its worker block.
    let stats = Arc::new(Stats::new(1));
    let pc = setup::pipeline_on(Services::counted(stats.clone()));
    let stc = &stats.workers[0];
    let fc = frames(&pc, stc);
    g.bench_function("established_request_counted", |b| {
        b.iter(|| {
            buf.copy_from_slice(&fc.ack);
            black_box(pc.process(black_box(&mut buf), CsumMode::Full, 1, stc))
        })
    });
    let pn = setup::pipeline_among(Services::default(), 50_000);
    let fnn = frames(&pn, &st);
    g.bench_function("established_request_among_50000", |b| {
        b.iter(|| {
            buf.copy_from_slice(&fnn.ack);
            black_box(pn.process(black_box(&mut buf), CsumMode::Full, 1, &st))
        })
    });
    let mut buf = f.reply.clone();
    g.bench_function("established_reply", |b| {
        b.iter(|| {
            buf.copy_from_slice(&f.reply);
            black_box(p.process(black_box(&mut buf), CsumMode::Full, 1, &st))
        })
    });
    let mut buf = fc.reply.clone();
    g.bench_function("established_reply_counted", |b| {
        b.iter(|| {
            buf.copy_from_slice(&fc.reply);
            black_box(pc.process(black_box(&mut buf), CsumMode::Full, 1, stc))
        })
    });
    // A fresh table every 100k so the table size stays comparable (setup is
    // not timed).
    g.bench_function("new_connection", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            let mut buf = f.syns[0].clone();
            while left > 0 {
                let p = setup::pipeline();
                let n = left.min(f.syns.len());
                let t = Instant::now();
                for s in &f.syns[..n] {
                    buf.copy_from_slice(s);
                    black_box(p.process(&mut buf, CsumMode::Full, 1, &st));
                }
                total += t.elapsed();
                left -= n;
            }
            total
        })
    });
    // A whole short connection (nine packets) per iteration, a fresh table
    // every `SHORTS` connections.
    let short = Short::new();
    g.bench_function("short_connection", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            let mut buf = Vec::with_capacity(256);
            while left > 0 {
                let p = setup::pipeline();
                let n = left.min(SHORTS);
                let t = Instant::now();
                for i in 0..n {
                    black_box(short.run(&p, i, &mut buf, &st));
                }
                total += t.elapsed();
                left -= n;
            }
            total
        })
    });
    g.finish();
}

/// `UVS_PIPELINE_CASE=<case>:<n>`: runs one case `n` times, for callgrind.
fn run_counted(spec: &str) {
    let (case, n) = spec
        .split_once(':')
        .and_then(|(c, n)| Some((c, n.parse::<usize>().ok()?)))
        .expect("UVS_PIPELINE_CASE=<case>:<iterations>");
    let st = WorkerStats::default();
    let among = case.strip_prefix("established_request_among_").map(|n| {
        n.parse::<usize>()
            .expect("established_request_among_<number of services>")
    });
    let p = match among {
        Some(n) => setup::pipeline_among(Services::default(), n),
        None => setup::pipeline(),
    };
    let f = frames(&p, &st);
    let conns = case.strip_prefix("established_request_conns_").map(|m| {
        m.parse::<usize>()
            .expect("established_request_conns_<number of connections>")
    });
    // Other clients' connections, opened by their SYNs.
    for s in &f.syns[..conns.unwrap_or(0).min(SYNS)] {
        let mut b = s.clone();
        assert!(matches!(
            p.process(&mut b, CsumMode::Full, 1, &st),
            Verdict::Xmit { .. }
        ));
    }
    let new_among = case.strip_prefix("new_connection_among_").map(|n| {
        n.parse::<usize>()
            .expect("new_connection_among_<number of services>")
    });
    let new_conns = case.strip_prefix("new_connection_conns_").map(|m| {
        m.parse::<usize>()
            .expect("new_connection_conns_<number of connections>")
    });
    let fresh = match new_among {
        Some(n) => setup::pipeline_among(Services::default(), n),
        None => setup::pipeline(),
    };
    // Other clients' connections (192.0.2.128 and up), opened by their
    // SYNs one frame at a time: up to a million without a million frames.
    let m = new_conns.unwrap_or(0);
    assert!(m <= 1_000_000, "new_connection_conns_<M>: at most 1000000");
    for i in 0..m as u32 {
        let src = format!("192.0.2.{}", 128 + i / 64_000);
        let mut b = setup::tcp(&src, 1024 + (i % 64_000) as u16, "192.0.2.10", 80, SYN, 0);
        assert!(matches!(
            fresh.process(&mut b, CsumMode::Full, 1, &st),
            Verdict::Xmit { .. }
        ));
    }
    // `UVS_PIPELINE_SWEEP=1`: one pass of the expiry sweep over the filled
    // table first (nothing expires at time 1), as the engine's timer makes
    // every 100 ms: it grows the indexes a fill left nearly full and
    // prepares the next chunks. Without it the measured inserts meet the
    // indexes wherever the fill left them in their growth.
    if m > 0 && std::env::var_os("UVS_PIPELINE_SWEEP").is_some() {
        fresh.conns.expire(1, 2 * m + 65_536);
    }
    let case = if among.is_some() || conns.is_some() {
        "established_request"
    } else if new_among.is_some() || new_conns.is_some() {
        "new_connection"
    } else {
        case
    };
    if case == "short_connection" {
        assert!(
            n <= SHORTS,
            "short_connection: at most {SHORTS} connections"
        );
        let short = Short::new();
        let ok = short_loop(n, &short, &fresh, &st);
        assert_eq!(ok, n, "{case}: every packet must be forwarded");
        println!("{case}: {n} connections forwarded");
        return;
    }
    let (src, mut buf) = match case {
        "parse_dnat" | "established_request" => (&f.ack, f.ack.clone()),
        "established_reply" => (&f.reply, f.reply.clone()),
        "new_connection" => (&f.syns[0], f.syns[0].clone()),
        other => panic!("unknown case {other}"),
    };
    let ok = counted_loop(case, n, src, &mut buf, &f, &p, &fresh, &st);
    assert_eq!(ok, n, "{case}: every packet must be forwarded");
    println!("{case}: {n} packets forwarded");
}

/// The measured loop, apart so that callgrind can count it alone
/// (`--toggle-collect='*counted_loop*'`).
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn counted_loop(
    case: &str,
    n: usize,
    src: &[u8],
    buf: &mut [u8],
    f: &Frames,
    p: &Pipeline,
    fresh: &Pipeline,
    st: &WorkerStats,
) -> usize {
    let mut ok = 0usize;
    for i in 0..n {
        match case {
            "parse_dnat" => {
                buf.copy_from_slice(src);
                ok += parse_dnat(black_box(&mut *buf), f.server) as usize;
            }
            "new_connection" => {
                buf.copy_from_slice(&f.syns[i % SYNS]);
                let v = fresh.process(black_box(&mut *buf), CsumMode::Full, 1, st);
                ok += matches!(v, Verdict::Xmit { .. }) as usize;
            }
            _ => {
                buf.copy_from_slice(src);
                let v = p.process(black_box(&mut *buf), CsumMode::Full, 1, st);
                ok += matches!(v, Verdict::Xmit { .. }) as usize;
            }
        }
    }
    ok
}

/// `short_connection`'s loop, for callgrind like [`counted_loop`]
/// (`--toggle-collect='*short_loop*'`): connections fully forwarded.
#[inline(never)]
fn short_loop(n: usize, short: &Short, p: &Pipeline, st: &WorkerStats) -> usize {
    let mut buf = Vec::with_capacity(256);
    (0..n).filter(|&i| short.run(p, i, &mut buf, st)).count()
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(spec) = std::env::var("UVS_PIPELINE_CASE") {
        run_counted(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
