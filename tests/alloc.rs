//! Zero allocations per packet on the established-flow path, measured with
//! a counting global allocator around real pipeline calls.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use uvs::datapath::pipeline::Verdict;
use uvs::datapath::stats::WorkerStats;
use uvs_fwd::wire::tcp::flags::{ACK, PSH, SYN};
use uvs_fwd::CsumMode;

mod common;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Only the measuring thread counts: the test harness's own threads
    /// may allocate meanwhile (on a loaded machine, after the test thread
    /// has started), which is not the pipeline's doing. Const-initialised
    /// and without a destructor, so reading it never allocates.
    static COUNTS: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTS.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn established_flow_allocates_nothing() {
    // One test (the allocation counter is global): without and with the
    // service and real-server counters.
    established_flow(&common::pipeline::pipeline(), &WorkerStats::default());
    let stats = std::sync::Arc::new(uvs::datapath::stats::Stats::new(1));
    let counted =
        common::pipeline::pipeline_on(uvs::datapath::service::Services::counted(stats.clone()));
    established_flow(&counted, &stats.workers[0]);
}

fn established_flow(p: &uvs::datapath::pipeline::Pipeline, st: &WorkerStats) {
    let mut syn = common::pipeline::tcp("198.51.100.10", 40000, "192.0.2.10", 80, SYN, 0);
    let Verdict::Xmit { next_hop, .. } = p.process(&mut syn, CsumMode::Full, 0, st) else {
        panic!("SYN not forwarded")
    };
    let req = common::pipeline::tcp("198.51.100.10", 40000, "192.0.2.10", 80, ACK, 100);
    let rep = common::pipeline::tcp(
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
        p.process(&mut a, CsumMode::Full, 1, st);
        b.copy_from_slice(&rep);
        p.process(&mut b, CsumMode::Full, 1, st);
    }
    COUNTS.set(true);
    let before = ALLOCS.load(Relaxed);
    for i in 0..10_000u64 {
        a.copy_from_slice(&req);
        assert!(matches!(
            p.process(&mut a, CsumMode::Full, 1 + i, st),
            Verdict::Xmit { .. }
        ));
        b.copy_from_slice(&rep);
        assert!(matches!(
            p.process(&mut b, CsumMode::Full, 1 + i, st),
            Verdict::Xmit { .. }
        ));
    }
    let n = ALLOCS.load(Relaxed) - before;
    COUNTS.set(false);
    assert_eq!(n, 0, "{n} allocations in 20,000 established-flow packets");
}
