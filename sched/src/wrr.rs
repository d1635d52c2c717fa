//! `wrr`: weighted round robin (`ip_vs_wrr.c`), lock-free.
//!
//! The kernel's algorithm walks the list in passes. It keeps a current
//! weight `cw`, starting at `mw = max_weight - (gcd - 1)`; each pass picks,
//! in list order, every destination whose weight is at least `cw`, then `cw`
//! drops by the gcd of the weights, and after `cw` reaches zero it starts
//! again at `mw`. Weights 4:3:2 give `A A B A B C A B C`.
//!
//! The kernel holds a spinlock for every pick. Here `update()` lays the whole
//! period out once — pass by pass, the destination indices it visits — and a
//! pick is one compare-and-swap on a cursor into that sequence: O(1), no lock,
//! and single-threaded exactly the kernel's order. Overloaded (or weight-0
//! after an edit) servers are skipped by scanning forward in the sequence,
//! which is what the kernel does too (it moves on to the next destination
//! with weight ≥ `cw`, i.e. the next sequence entry).
//!
//! Limits and fallbacks, both exact:
//! * The period is Σ weight / gcd entries. Above [`SEQ_CAP`] entries (256 KiB
//!   of indices) no sequence is built and picks walk the list the kernel's
//!   way on an atomic `(pass, index)` cursor: O(n) in the worst case.
//! * When [`SCAN`] consecutive sequence entries are unschedulable, the pick
//!   switches to the same walk, which skips passes that cannot contain a
//!   schedulable server (so the cost is O(n), not O(period)).
//!
//! `update()` carries `cw` over exactly as `ip_vs_wrr_dest_changed` does: the
//! position restarts at the list head, `cw` is kept unless it exceeds the new
//! `mw` (then `mw`), and is re-aligned to the new gcd.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::common::{gcd, plain_params};
use crate::{Dest, SchedError, SchedKey, SchedParams, Scheduler};

/// Largest precomputed period, in entries.
pub const SEQ_CAP: usize = 1 << 16;
/// Sequence entries scanned past unschedulable servers before walking.
pub const SCAN: usize = 64;
/// Cursor value meaning "no pick since the last update".
const FRESH: u64 = u64::MAX;

/// Weighted round-robin scheduler.
#[derive(Debug)]
pub struct Wrr {
    state: ArcSwap<WrrState>,
    seq_cap: usize,
    update_lock: Mutex<()>,
}

/// One published configuration plus its cursor.
#[derive(Debug)]
struct WrrState {
    dests: Box<[Arc<Dest>]>,
    /// Weights as of `update()` (an edit of `-w` calls `update()` again).
    weights: Box<[u32]>,
    /// `max_weight - (gcd - 1)`; 0 = no server has weight.
    mw: u32,
    /// gcd of the positive weights.
    di: u32,
    /// Passes in one period: `cw` takes the values `mw - k * di`, k < passes.
    passes: u32,
    /// The pass a fresh cursor starts in (the kernel's `cw` after a change).
    start_k: u32,
    seq: Option<Seq>,
    /// FRESH, or the last pick: a sequence position (with `seq`) or
    /// `pass << 32 | index` (without).
    cursor: AtomicU64,
}

/// The precomputed period.
#[derive(Debug)]
struct Seq {
    /// Destination index of each entry.
    idx: Box<[u32]>,
    /// First entry of each pass.
    pass_start: Box<[u32]>,
}

impl Seq {
    fn pass_of(&self, pos: usize) -> u32 {
        (self.pass_start.partition_point(|&s| s as usize <= pos) - 1) as u32
    }

    /// The entry for destination `i` in pass `k`.
    fn position(&self, k: u32, i: usize) -> Option<usize> {
        let start = self.pass_start[k as usize] as usize;
        let end = self
            .pass_start
            .get(k as usize + 1)
            .map_or(self.idx.len(), |&e| e as usize);
        (start..end).find(|&p| self.idx[p] as usize == i)
    }
}

impl WrrState {
    fn build(dests: &[Arc<Dest>], prev_cw: u32, seq_cap: usize) -> Self {
        let weights: Box<[u32]> = dests.iter().map(|d| d.weight()).collect();
        let di = weights
            .iter()
            .copied()
            .filter(|&w| w > 0)
            .fold(0, gcd)
            .max(1);
        let max = weights.iter().copied().max().unwrap_or(0);
        let mw = max.saturating_sub(di - 1);
        let passes = if mw == 0 { 0 } else { (mw - 1) / di + 1 };
        // ip_vs_wrr_dest_changed's carry-over of cw.
        let cw = if prev_cw > mw || prev_cw == 0 {
            mw
        } else if di > 1 {
            (prev_cw / di) * di + 1
        } else {
            prev_cw
        };
        let start_k = if mw == 0 { 0 } else { (mw - cw) / di };
        let mut st = WrrState {
            dests: dests.to_vec().into_boxed_slice(),
            weights,
            mw,
            di,
            passes,
            start_k,
            seq: None,
            cursor: AtomicU64::new(FRESH),
        };
        st.seq = st.build_seq(seq_cap);
        st
    }

    /// `cw` of pass `k`.
    fn cw(&self, k: u32) -> u32 {
        self.mw - k * self.di
    }

    /// First pass whose `cw` is at most `w`.
    fn first_pass_for(&self, w: u32) -> u32 {
        if w >= self.mw {
            0
        } else {
            (self.mw - w)
                .div_ceil(self.di)
                .min(self.passes.saturating_sub(1))
        }
    }

    fn build_seq(&self, cap: usize) -> Option<Seq> {
        if self.mw == 0 {
            return None;
        }
        let total: usize = self
            .weights
            .iter()
            .filter(|&&w| w > 0)
            .map(|&w| (self.passes - self.first_pass_for(w)) as usize)
            .sum();
        if total > cap {
            return None;
        }
        // Destinations by weight, heaviest first: as cw falls, a prefix of
        // this order is eligible; each pass lists it in list order.
        let mut order: Vec<u32> = (0..self.weights.len() as u32)
            .filter(|&i| self.weights[i as usize] > 0)
            .collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.weights[i as usize]));
        let mut eligible: Vec<u32> = Vec::with_capacity(order.len());
        let mut idx = Vec::with_capacity(total);
        let mut pass_start = Vec::with_capacity(self.passes as usize);
        let mut next = 0;
        for k in 0..self.passes {
            let cw = self.cw(k);
            while next < order.len() && self.weights[order[next] as usize] >= cw {
                let i = order[next];
                let at = eligible.partition_point(|&e| e < i);
                eligible.insert(at, i);
                next += 1;
            }
            pass_start.push(idx.len() as u32);
            idx.extend_from_slice(&eligible);
        }
        Some(Seq {
            idx: idx.into_boxed_slice(),
            pass_start: pass_start.into_boxed_slice(),
        })
    }

    /// The kernel's `mark->cw` now.
    fn current_cw(&self) -> u32 {
        if self.mw == 0 {
            return 0;
        }
        let cur = self.cursor.load(Ordering::Acquire);
        let k = if cur == FRESH {
            self.start_k
        } else if let Some(seq) = &self.seq {
            seq.pass_of(cur as usize)
        } else {
            (cur >> 32) as u32
        };
        self.cw(k.min(self.passes - 1))
    }

    fn max_schedulable_weight(&self) -> u32 {
        self.dests
            .iter()
            .zip(self.weights.iter())
            .filter(|(d, _)| d.can_schedule())
            .map(|(_, &w)| w)
            .max()
            .unwrap_or(0)
    }

    /// The kernel's walk: from destination `i` of pass `k` onwards, the first
    /// schedulable destination whose weight is at least the pass's `cw`.
    /// Passes that cannot contain a schedulable server are jumped over.
    fn walk(&self, mut k: u32, mut i: usize) -> Option<(u32, usize)> {
        let n = self.dests.len();
        let mut max_w = None;
        // Normally done within three passes; the bound only matters if
        // servers keep changing state under the walk.
        for _ in 0..=self.passes {
            let cw = self.cw(k);
            if let Some(j) = (i..n).find(|&j| self.weights[j] >= cw && self.dests[j].can_schedule())
            {
                return Some((k, j));
            }
            i = 0;
            k = if k + 1 >= self.passes { 0 } else { k + 1 };
            let m = *max_w.get_or_insert_with(|| self.max_schedulable_weight());
            if m == 0 {
                return None;
            }
            if self.cw(k) > m {
                k = self.first_pass_for(m);
            }
        }
        None
    }

    fn pick_seq(&self, seq: &Seq) -> Option<usize> {
        let len = seq.idx.len();
        let mut cur = self.cursor.load(Ordering::Acquire);
        loop {
            let from = if cur == FRESH {
                seq.pass_start[self.start_k as usize] as usize
            } else {
                let f = cur as usize + 1;
                if f >= len {
                    0
                } else {
                    f
                }
            };
            let mut found = None;
            let mut p = from;
            for _ in 0..SCAN.min(len) {
                if self.dests[seq.idx[p] as usize].can_schedule() {
                    found = Some(p);
                    break;
                }
                p += 1;
                if p == len {
                    p = 0;
                }
            }
            let p = match found {
                Some(p) => p,
                None => {
                    let (k, i) = self.walk(seq.pass_of(from), seq.idx[from] as usize)?;
                    seq.position(k, i)?
                }
            };
            match self.cursor.compare_exchange_weak(
                cur,
                p as u64,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(seq.idx[p] as usize),
                Err(now) => cur = now,
            }
        }
    }

    fn pick_walk(&self) -> Option<usize> {
        let mut cur = self.cursor.load(Ordering::Acquire);
        loop {
            let (k, i) = if cur == FRESH {
                (self.start_k, 0)
            } else {
                ((cur >> 32) as u32, (cur & 0xffff_ffff) as usize + 1)
            };
            let (k, j) = self.walk(k, i)?;
            let packed = (k as u64) << 32 | j as u64;
            match self.cursor.compare_exchange_weak(
                cur,
                packed,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(j),
                Err(now) => cur = now,
            }
        }
    }
}

impl Wrr {
    /// Registry constructor: `wrr` takes no flags.
    pub fn create(
        params: &SchedParams,
        dests: &[Arc<Dest>],
    ) -> Result<Box<dyn Scheduler>, SchedError> {
        plain_params("wrr", params)?;
        Ok(Box::new(Wrr::new(dests)))
    }

    /// A weighted round-robin scheduler over `dests`.
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        Self::with_seq_cap(dests, SEQ_CAP)
    }

    /// As [`Wrr::new`] with a different cap on the precomputed period
    /// (0 = always walk; for tests and benchmarks of the fallback).
    pub fn with_seq_cap(dests: &[Arc<Dest>], seq_cap: usize) -> Self {
        Wrr {
            state: ArcSwap::from_pointee(WrrState::build(dests, 0, seq_cap)),
            seq_cap,
            update_lock: Mutex::new(()),
        }
    }

    /// Whether the period is precomputed (O(1) picks).
    pub fn is_precomputed(&self) -> bool {
        self.state.load().seq.is_some()
    }
}

impl Scheduler for Wrr {
    fn name(&self) -> &'static str {
        "wrr"
    }

    fn update(&self, dests: &[Arc<Dest>]) {
        // Poisoning only means an earlier update panicked; the state is
        // replaced whole, so going on is safe.
        let _g = self.update_lock.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.state.load();
        // The engine rebuilds every service on any configuration change;
        // the kernel only tells a scheduler about its own servers. Nothing
        // changed here: keep the position instead of restarting the pass.
        let unchanged = old.dests.len() == dests.len()
            && old
                .dests
                .iter()
                .zip(old.weights.iter())
                .zip(dests)
                .all(|((o, &w), n)| Arc::ptr_eq(o, n) && n.weight() == w);
        if unchanged {
            return;
        }
        let prev_cw = old.current_cw();
        self.state
            .store(Arc::new(WrrState::build(dests, prev_cw, self.seq_cap)));
    }

    fn schedule(&self, _key: &SchedKey) -> Option<Arc<Dest>> {
        let st = self.state.load();
        if st.mw == 0 {
            return None;
        }
        let i = match &st.seq {
            Some(seq) => st.pick_seq(seq),
            None => st.pick_walk(),
        }?;
        Some(Arc::clone(&st.dests[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{dests, overload, pick_names};
    use proptest::prelude::*;

    /// The kernel's loop, transcribed as a plain model (list walk with a
    /// current weight), to compare against.
    struct Model {
        w: Vec<u32>,
        di: u32,
        mw: u32,
        cw: i64,
        cl: Option<usize>,
    }

    impl Model {
        fn new(w: &[u32]) -> Self {
            let di = w.iter().copied().filter(|&x| x > 0).fold(0, gcd).max(1);
            let mw = w.iter().copied().max().unwrap_or(0).saturating_sub(di - 1);
            Model {
                w: w.to_vec(),
                di,
                mw,
                cw: mw as i64,
                cl: None,
            }
        }

        fn pick(&mut self, blocked: &[bool]) -> Option<usize> {
            if self.mw == 0 {
                return None;
            }
            let n = self.w.len();
            let mut start = self.cl.map_or(0, |c| c + 1);
            for _ in 0..(self.mw as usize + 2) * 2 {
                for (j, &b) in blocked.iter().enumerate().take(n).skip(start) {
                    if !b && self.w[j] as i64 >= self.cw {
                        self.cl = Some(j);
                        return Some(j);
                    }
                }
                start = 0;
                self.cw -= self.di as i64;
                if self.cw <= 0 {
                    self.cw = self.mw as i64;
                }
            }
            None
        }
    }

    #[test]
    fn weights_4_3_2_give_kernel_order() {
        let ds = dests(&[4, 3, 2]);
        let s = Wrr::new(&ds);
        assert!(s.is_precomputed());
        assert_eq!(pick_names(&s, &ds, 18), "001012012001012012");
    }

    #[test]
    fn gcd_steps_the_weight() {
        // 40:20 has gcd 20: mw = 21, passes at cw 21 and 1 → A A B.
        let ds = dests(&[40, 20]);
        let s = Wrr::new(&ds);
        assert_eq!(pick_names(&s, &ds, 6), "001001");
    }

    #[test]
    fn walk_mode_gives_the_same_order() {
        let ds = dests(&[4, 3, 2]);
        let s = Wrr::with_seq_cap(&ds, 0);
        assert!(!s.is_precomputed());
        assert_eq!(pick_names(&s, &ds, 18), "001012012001012012");
    }

    #[test]
    fn weight_zero_never_picked_and_all_zero_is_none() {
        let ds = dests(&[2, 0, 1]);
        let s = Wrr::new(&ds);
        assert_eq!(pick_names(&s, &ds, 6), "002002");
        let zs = dests(&[0, 0]);
        assert!(Wrr::new(&zs).schedule(&crate::testutil::key(1)).is_none());
    }

    #[test]
    fn overloaded_heavy_server_long_skip_is_bounded() {
        // The heavy server fills 999 entries of a 1001-entry period; with it
        // overloaded the pick must walk, not scan, to the light ones.
        let ds = dests(&[1000, 1, 1]);
        let s = Wrr::new(&ds);
        overload(&ds[0]);
        assert_eq!(pick_names(&s, &ds, 4), "1212");
        for d in &ds[1..] {
            overload(d);
        }
        assert!(s.schedule(&crate::testutil::key(1)).is_none());
    }

    #[test]
    fn update_carries_cw_like_the_kernel() {
        let ds = dests(&[4, 3, 2]);
        let s = Wrr::new(&ds);
        // A, A B, A: now in the cw = 2 pass, last pick A.
        assert_eq!(pick_names(&s, &ds, 4), "0010");
        // Add a weight-1 server: cw 2 is kept, the walk restarts at the head.
        let mut more = ds.clone();
        more.extend(dests(&[1]));
        s.update(&more);
        assert_eq!(pick_names(&s, &more, 7), "0120123");
    }

    #[test]
    fn update_without_change_keeps_the_position() {
        let ds = dests(&[4, 3, 2]);
        let s = Wrr::new(&ds);
        assert_eq!(pick_names(&s, &ds, 4), "0010");
        s.update(&ds);
        assert_eq!(pick_names(&s, &ds, 5), "12012");
    }

    proptest! {
        #[test]
        fn matches_kernel_model(
            w in proptest::collection::vec(0u32..7, 1..7),
            blocked in proptest::collection::vec(any::<bool>(), 7),
            cap in prop_oneof![Just(0usize), Just(SEQ_CAP)],
        ) {
            let ds = dests(&w);
            for (d, &b) in ds.iter().zip(blocked.iter()) {
                if b { overload(d); }
            }
            let s = Wrr::with_seq_cap(&ds, cap);
            let mut m = Model::new(&w);
            let key = crate::testutil::key(1);
            let blocked: Vec<bool> = ds.iter().map(|d| !d.can_schedule()).collect();
            for _ in 0..60 {
                let got = s
                    .schedule(&key)
                    .and_then(|d| ds.iter().position(|x| Arc::ptr_eq(x, &d)));
                prop_assert_eq!(got, m.pick(&blocked));
            }
        }
    }
}
