//! Zero allocations per packet on the established-flow path, measured with
//! a counting global allocator around real pipeline calls.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use uvs::pipeline::{Pipeline, Verdict};
use uvs::service::{DestSpec, ServiceSpec};
use uvs::stats::WorkerStats;
use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::wire::tcp::flags::{ACK, PSH, SYN};
use uvs_fwd::CsumMode;
use uvs_sched::{FwdMethod, SchedParams};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

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

#[test]
fn established_flow_allocates_nothing() {
    let p = Pipeline::new(uvs_conntrack::Table::new(uvs_conntrack::Config::default()));
    let d = |a: &str| DestSpec {
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
        dests: vec![d("203.0.113.11"), d("203.0.113.12")],
    };
    p.services
        .store(Arc::new(p.services.load().rebuild(&[spec]).unwrap()));
    let st = WorkerStats::default();
    let mut syn = tcp("198.51.100.10", 40000, "192.0.2.10", 80, SYN, 0);
    let Verdict::Xmit { next_hop } = p.process(&mut syn, CsumMode::Full, 0, &st) else {
        panic!("SYN not forwarded")
    };
    let req = tcp("198.51.100.10", 40000, "192.0.2.10", 80, ACK, 100);
    let rep = tcp(
        &next_hop.to_string(),
        80,
        "198.51.100.10",
        40000,
        ACK | PSH,
        100,
    );
    let (mut a, mut b) = (req.clone(), rep.clone());
    // Warm up (thread-local snapshot slots and the like).
    for _ in 0..10 {
        a.copy_from_slice(&req);
        p.process(&mut a, CsumMode::Full, 1, &st);
        b.copy_from_slice(&rep);
        p.process(&mut b, CsumMode::Full, 1, &st);
    }
    let before = ALLOCS.load(Relaxed);
    for i in 0..10_000u64 {
        a.copy_from_slice(&req);
        assert!(matches!(
            p.process(&mut a, CsumMode::Full, 1 + i, &st),
            Verdict::Xmit { .. }
        ));
        b.copy_from_slice(&rep);
        assert!(matches!(
            p.process(&mut b, CsumMode::Full, 1 + i, &st),
            Verdict::Xmit { .. }
        ));
    }
    let n = ALLOCS.load(Relaxed) - before;
    assert_eq!(n, 0, "{n} allocations in 20,000 established-flow packets");
}
