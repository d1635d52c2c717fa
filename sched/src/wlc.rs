//! `wlc`: weighted least connections (`ip_vs_wlc.c`), the default.
//!
//! Picks the schedulable destination with the least `overhead / weight`,
//! overhead being `active × 256 + inactive`; compared by cross
//! multiplication, ties to the first in list order. O(n) per pick, like the
//! kernel (see the crate notes for what a faster structure would cost).

use std::sync::Arc;

use arc_swap::ArcSwap;

use std::net::SocketAddr;

use crate::common::{conn_overhead, plain_params, ratio_greater, Snapshot};
use crate::explain::{How, Load, Skip};
use crate::{Dest, Explain, SchedError, SchedKey, SchedParams, Scheduler};

/// Weighted least-connection scheduler.
#[derive(Debug)]
pub struct Wlc {
    state: ArcSwap<Snapshot>,
}

impl Wlc {
    /// Registry constructor: `wlc` takes no flags.
    pub fn create(
        params: &SchedParams,
        dests: &[Arc<Dest>],
    ) -> Result<Box<dyn Scheduler>, SchedError> {
        plain_params("wlc", params)?;
        Ok(Box::new(Wlc::new(dests)))
    }

    /// A weighted least-connection scheduler over `dests`.
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        Wlc {
            state: ArcSwap::from_pointee(Snapshot::new(dests)),
        }
    }
}

/// The least `overhead(d) / weight(d)` among schedulable `dests`, first on
/// ties. Shared by wlc, sed and the lblc/lblcr fallbacks.
pub(crate) fn least_weighted<'a>(
    dests: impl IntoIterator<Item = &'a Arc<Dest>>,
    overhead: impl Fn(&Dest) -> u64,
) -> Option<&'a Arc<Dest>> {
    let mut least: Option<(&Arc<Dest>, u64, u32)> = None;
    for d in dests {
        let w = d.weight();
        if w == 0 || !d.can_schedule() {
            continue;
        }
        let oh = overhead(d);
        match least {
            Some((_, loh, lw)) if !ratio_greater(loh, lw, oh, w) => {}
            _ => least = Some((d, oh, w)),
        }
    }
    least.map(|(d, _, _)| d)
}

/// [`least_weighted`]'s pick, with the overheads compared and the
/// servers passed over in `why` (tracing only: the same walk plus a
/// runner-up, so the pick is the same).
pub(crate) fn least_explained<'a>(
    dests: impl IntoIterator<Item = &'a Arc<Dest>>,
    overhead: impl Fn(&Dest) -> u64,
    why: &mut Explain,
) -> Option<&'a Arc<Dest>> {
    let load = |d: &Dest, oh| Load {
        server: SocketAddr::new(d.addr, d.port),
        overhead: oh,
        weight: d.weight(),
    };
    let mut least: Option<(&Arc<Dest>, u64, u32)> = None;
    let mut next: Option<(u64, u32, Load)> = None;
    for d in dests {
        let w = d.weight();
        if w == 0 || !d.can_schedule() {
            why.skip(d, Skip::of(d).unwrap_or(Skip::WeightZero));
            continue;
        }
        let oh = overhead(d);
        match least {
            Some((_, loh, lw)) if !ratio_greater(loh, lw, oh, w) => {
                // Not better than the least: perhaps the runner-up.
                if next.is_none_or(|(noh, nw, _)| ratio_greater(noh, nw, oh, w)) {
                    next = Some((oh, w, load(d, oh)));
                }
            }
            _ => {
                if let Some((ld, loh, lw)) = least {
                    next = Some((loh, lw, load(ld, loh)));
                }
                least = Some((d, oh, w));
            }
        }
    }
    why.how = match least {
        Some((d, oh, _)) => How::Least {
            chosen: load(d, oh),
            next: next.map(|(_, _, l)| l),
        },
        None => How::NoDestination,
    };
    least.map(|(d, _, _)| d)
}

impl Scheduler for Wlc {
    fn name(&self) -> &'static str {
        "wlc"
    }

    fn update(&self, dests: &[Arc<Dest>]) {
        self.state.store(Arc::new(Snapshot::new(dests)));
    }

    fn schedule(&self, _key: &SchedKey) -> Option<Arc<Dest>> {
        let st = self.state.load();
        least_weighted(st.dests.iter(), conn_overhead).cloned()
    }

    fn schedule_explained(&self, _key: &SchedKey, why: &mut Explain) -> Option<Arc<Dest>> {
        let st = self.state.load();
        least_explained(st.dests.iter(), conn_overhead, why).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{dests, index_of, key};

    #[test]
    fn least_overhead_per_weight() {
        let ds = dests(&[1, 3]);
        let s = Wlc::new(&ds);
        assert_eq!(index_of(&ds, &s.schedule(&key(1)).unwrap()), 0);
        ds[0].conn_bound(true); // 256/1
        ds[1].conn_bound(true);
        ds[1].conn_bound(true); // 512/3 < 256
        assert_eq!(index_of(&ds, &s.schedule(&key(1)).unwrap()), 1);
        ds[1].conn_bound(true); // 768/3 == 256/1: tie, first wins
        assert_eq!(index_of(&ds, &s.schedule(&key(1)).unwrap()), 0);
    }

    #[test]
    fn explained_names_the_overheads_compared() {
        let ds = dests(&[1, 1, 0]);
        let s = Wlc::new(&ds);
        ds[0].conn_bound(true); // 256
        ds[1].conn_bound(false); // 1
        let mut why = Explain::default();
        let d = s.schedule_explained(&key(1), &mut why).unwrap();
        assert!(Arc::ptr_eq(&d, &s.schedule(&key(1)).unwrap()));
        assert!(Arc::ptr_eq(&d, &ds[1]));
        let How::Least { chosen, next } = why.how else {
            panic!("{why:?}")
        };
        assert_eq!((chosen.overhead, next.unwrap().overhead), (1, 256));
        assert_eq!(why.n_skipped, 1);
    }

    #[test]
    fn least_loaded_gets_next_connection() {
        let ds = dests(&[1, 1, 1]);
        let s = Wlc::new(&ds);
        // Bind every pick: the load spreads evenly.
        for _ in 0..30 {
            s.schedule(&key(1)).unwrap().conn_bound(true);
        }
        assert!(ds.iter().all(|d| d.active_conns() == 10));
    }
}
