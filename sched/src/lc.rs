//! `lc`: least connections (`ip_vs_lc.c`).
//!
//! Picks the schedulable destination with the lowest overhead
//! `active × 256 + inactive`; on a tie the first in list order wins. Weights
//! only matter as "0 = quiescent". O(n) per pick, like the kernel.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::common::{conn_overhead, plain_params, Snapshot};
use crate::{Dest, SchedError, SchedKey, SchedParams, Scheduler};

/// Least-connection scheduler.
#[derive(Debug)]
pub struct Lc {
    state: ArcSwap<Snapshot>,
}

impl Lc {
    /// Registry constructor: `lc` takes no flags.
    pub fn create(
        params: &SchedParams,
        dests: &[Arc<Dest>],
    ) -> Result<Box<dyn Scheduler>, SchedError> {
        plain_params("lc", params)?;
        Ok(Box::new(Lc::new(dests)))
    }

    /// A least-connection scheduler over `dests`.
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        Lc {
            state: ArcSwap::from_pointee(Snapshot::new(dests)),
        }
    }
}

impl Scheduler for Lc {
    fn name(&self) -> &'static str {
        "lc"
    }

    fn update(&self, dests: &[Arc<Dest>]) {
        self.state.store(Arc::new(Snapshot::new(dests)));
    }

    fn schedule(&self, _key: &SchedKey) -> Option<Arc<Dest>> {
        let st = self.state.load();
        let mut least: Option<(&Arc<Dest>, u64)> = None;
        for d in st.dests.iter().filter(|d| d.can_schedule()) {
            let oh = conn_overhead(d);
            match least {
                Some((_, l)) if l <= oh => {}
                _ => least = Some((d, oh)),
            }
        }
        least.map(|(d, _)| Arc::clone(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{dests, index_of, key};

    #[test]
    fn active_weighs_256_inactive() {
        let ds = dests(&[1, 1, 5]);
        let s = Lc::new(&ds);
        // Ties go to the first.
        assert_eq!(index_of(&ds, &s.schedule(&key(1)).unwrap()), 0);
        ds[0].conn_bound(true); // overhead 256
        for _ in 0..255 {
            ds[1].conn_bound(false); // overhead 255
        }
        assert_eq!(index_of(&ds, &s.schedule(&key(1)).unwrap()), 2);
        ds[2].conn_bound(true);
        assert_eq!(index_of(&ds, &s.schedule(&key(1)).unwrap()), 1);
        ds[1].conn_bound(false); // 256: tie with 0, first wins
        assert_eq!(index_of(&ds, &s.schedule(&key(1)).unwrap()), 0);
    }

    #[test]
    fn quiescent_servers_skipped() {
        let ds = dests(&[0, 1]);
        ds[1].conn_bound(true);
        let s = Lc::new(&ds);
        assert_eq!(index_of(&ds, &s.schedule(&key(1)).unwrap()), 1);
        ds[1].set_weight(0);
        assert!(s.schedule(&key(1)).is_none());
    }
}
