//! `nq`: never queue (`ip_vs_nq.c`).
//!
//! An idle server (no active connections) is taken at once, the first one in
//! list order; when none is idle the pick is sed's, least
//! `(active + 1) / weight`. O(n) per pick, like the kernel.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::common::{plain_params, ratio_greater, Snapshot};
use crate::sed::sed_overhead;
use crate::{Dest, SchedError, SchedKey, SchedParams, Scheduler};

/// Never-queue scheduler.
#[derive(Debug)]
pub struct Nq {
    state: ArcSwap<Snapshot>,
}

impl Nq {
    /// Registry constructor: `nq` takes no flags.
    pub fn create(
        params: &SchedParams,
        dests: &[Arc<Dest>],
    ) -> Result<Box<dyn Scheduler>, SchedError> {
        plain_params("nq", params)?;
        Ok(Box::new(Nq::new(dests)))
    }

    /// A never-queue scheduler over `dests`.
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        Nq {
            state: ArcSwap::from_pointee(Snapshot::new(dests)),
        }
    }
}

impl Scheduler for Nq {
    fn name(&self) -> &'static str {
        "nq"
    }

    fn update(&self, dests: &[Arc<Dest>]) {
        self.state.store(Arc::new(Snapshot::new(dests)));
    }

    fn schedule(&self, _key: &SchedKey) -> Option<Arc<Dest>> {
        let st = self.state.load();
        let mut least: Option<(&Arc<Dest>, u64, u32)> = None;
        for d in st.dests.iter() {
            let w = d.weight();
            if w == 0 || !d.can_schedule() {
                continue;
            }
            if d.active_conns() == 0 {
                return Some(Arc::clone(d));
            }
            let oh = sed_overhead(d);
            match least {
                Some((_, loh, lw)) if !ratio_greater(loh, lw, oh, w) => {}
                _ => least = Some((d, oh, w)),
            }
        }
        least.map(|(d, _, _)| Arc::clone(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{dests, index_of, key};

    #[test]
    fn idle_server_first_even_if_light() {
        let ds = dests(&[10, 1]);
        ds[0].conn_bound(true);
        let s = Nq::new(&ds);
        // sed would pick 0 (2/10 < 1/1); nq takes the idle one.
        assert_eq!(index_of(&ds, &s.schedule(&key(1)).unwrap()), 1);
        ds[1].conn_bound(true);
        // Nobody idle: sed rule, 2/10 < 2/1.
        assert_eq!(index_of(&ds, &s.schedule(&key(1)).unwrap()), 0);
    }

    #[test]
    fn inactive_connections_leave_a_server_idle() {
        let ds = dests(&[1, 1]);
        ds[0].conn_bound(true);
        ds[1].conn_bound(false);
        let s = Nq::new(&ds);
        assert_eq!(index_of(&ds, &s.schedule(&key(1)).unwrap()), 1);
    }
}
