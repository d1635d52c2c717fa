//! `twos`: weighted power of two choices (`ip_vs_twos.c`).
//!
//! Two servers are drawn at random, each with probability proportional to
//! its weight, and the one with the lower `overhead / weight` wins (the
//! first drawn on a tie). The kernel draws `r` in `0..=total` and walks the
//! list subtracting weights until `r <= 0`, so the first server gets one
//! extra chance in `total + 1`; this keeps that rule.
//!
//! The kernel walks the whole list twice per pick. Here `update()` stores
//! the cumulative weights and a draw is a binary search: O(log n). When a
//! drawn server turns out not to be schedulable (overloaded, or quiesced
//! before the `update()` that follows an edit), the pick redoes the draw the
//! kernel's way over the live state, O(n).
//!
//! Randomness: a per-thread xorshift64* generator in a `const`-initialised
//! thread local, seeded once per thread from std's per-process random keys:
//! no allocation, no lock, no syscall per pick. Not cryptographic: a client
//! cannot steer its server with it any more than with `rr`.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::common::{conn_overhead, plain_params, ratio_greater};
use crate::{Dest, SchedError, SchedKey, SchedParams, Scheduler};

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// Distinguishes threads seeded in the same instant.
static SEED_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A uniform random number in `0..n` from this thread's generator.
pub(crate) fn random_below(n: u64) -> u64 {
    RNG.with(|c| {
        let mut x = c.get();
        if x == 0 {
            let mut h = RandomState::new().build_hasher();
            h.write_u64(SEED_COUNTER.fetch_add(1, Ordering::Relaxed));
            x = h.finish() | 1;
        }
        // xorshift64* (Vigna): period 2^64 - 1, never reaches 0 from non-zero.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // Lemire's multiply-shift range reduction on the high 32 bits.
        ((r >> 32) * n) >> 32
    })
}

/// The published draw table.
#[derive(Debug)]
struct TwosState {
    dests: Box<[Arc<Dest>]>,
    /// `cum[i]` = sum of the weights of `dests[..=i]` as of `update()`.
    cum: Box<[u64]>,
}

impl TwosState {
    fn build(dests: &[Arc<Dest>]) -> Self {
        let mut sum = 0u64;
        let cum = dests
            .iter()
            .map(|d| {
                sum += d.weight() as u64;
                sum
            })
            .collect();
        TwosState {
            dests: dests.to_vec().into_boxed_slice(),
            cum,
        }
    }

    /// The server the kernel's walk lands on for draw `r` (in `0..=total`).
    fn drawn(&self, r: u64) -> usize {
        self.cum.partition_point(|&c| c < r)
    }

    /// The kernel's two-walk pick over live weights and flags.
    fn pick_live(&self) -> Option<&Arc<Dest>> {
        let total: u64 = self
            .dests
            .iter()
            .filter(|d| d.can_schedule())
            .map(|d| d.weight() as u64)
            .sum();
        if total == 0 {
            return None;
        }
        let mut r1 = random_below(total + 1) as i64;
        let mut r2 = random_below(total + 1) as i64;
        let (mut c1, mut c2) = (None, None);
        for d in self.dests.iter().filter(|d| d.can_schedule()) {
            let w = d.weight() as i64;
            r1 -= w;
            r2 -= w;
            if r1 <= 0 && c1.is_none() {
                c1 = Some(d);
            }
            if r2 <= 0 && c2.is_none() {
                c2 = Some(d);
            }
            if c1.is_some() && c2.is_some() {
                break;
            }
        }
        match (c1, c2) {
            (Some(a), Some(b)) => Some(better(a, b)),
            (a, b) => a.or(b),
        }
    }
}

/// The lower `overhead / weight` of two draws; the first on a tie.
fn better<'a>(a: &'a Arc<Dest>, b: &'a Arc<Dest>) -> &'a Arc<Dest> {
    if ratio_greater(conn_overhead(a), a.weight(), conn_overhead(b), b.weight()) {
        b
    } else {
        a
    }
}

/// Weighted power-of-two-choices scheduler.
#[derive(Debug)]
pub struct Twos {
    state: ArcSwap<TwosState>,
}

impl Twos {
    /// Registry constructor: `twos` takes no flags.
    pub fn create(
        params: &SchedParams,
        dests: &[Arc<Dest>],
    ) -> Result<Box<dyn Scheduler>, SchedError> {
        plain_params("twos", params)?;
        Ok(Box::new(Twos::new(dests)))
    }

    /// A power-of-two-choices scheduler over `dests`.
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        Twos {
            state: ArcSwap::from_pointee(TwosState::build(dests)),
        }
    }
}

impl Scheduler for Twos {
    fn name(&self) -> &'static str {
        "twos"
    }

    fn update(&self, dests: &[Arc<Dest>]) {
        self.state.store(Arc::new(TwosState::build(dests)));
    }

    fn schedule(&self, _key: &SchedKey) -> Option<Arc<Dest>> {
        let st = self.state.load();
        let total = st.cum.last().copied().unwrap_or(0);
        if total > 0 {
            let a = &st.dests[st.drawn(random_below(total + 1))];
            let b = &st.dests[st.drawn(random_below(total + 1))];
            if a.can_schedule() && b.can_schedule() {
                return Some(Arc::clone(better(a, b)));
            }
        }
        st.pick_live().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{dests, index_of, key, overload};

    #[test]
    fn random_below_stays_in_range_and_covers_it() {
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[random_below(7) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    }

    #[test]
    fn draw_follows_the_kernel_walk() {
        let ds = dests(&[2, 0, 3]);
        let st = TwosState::build(&ds);
        // r = 0..=2 → first (r - 2 <= 0), 3..=5 → third; weight 0 never.
        let got: Vec<usize> = (0..=5).map(|r| st.drawn(r)).collect();
        assert_eq!(got, vec![0, 0, 0, 2, 2, 2]);
    }

    #[test]
    fn less_loaded_of_two_wins() {
        let ds = dests(&[1, 1]);
        for _ in 0..10 {
            ds[0].conn_bound(true);
        }
        let s = Twos::new(&ds);
        // Server 1 wins whenever it is drawn at least once: 1 - (2/3)^2.
        let ones = (0..3000)
            .filter(|_| index_of(&ds, &s.schedule(&key(1)).unwrap()) == 1)
            .count();
        assert!((1500..2000).contains(&ones), "{ones}");
    }

    #[test]
    fn overloaded_never_picked() {
        let ds = dests(&[5, 1]);
        overload(&ds[0]);
        let s = Twos::new(&ds);
        for _ in 0..200 {
            assert_eq!(index_of(&ds, &s.schedule(&key(1)).unwrap()), 1);
        }
        overload(&ds[1]);
        assert!(s.schedule(&key(1)).is_none());
    }
}
