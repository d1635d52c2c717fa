//! `fo`: weighted failover (`ip_vs_fo.c`).
//!
//! Every new connection goes to the schedulable server with the highest
//! weight (the first in list order among equals); when it becomes
//! unavailable — overloaded, quiesced, removed — the next heaviest takes
//! over. The kernel scans the whole list per pick; here `update()` sorts the
//! servers by weight once, so a pick stops at the first schedulable one:
//! O(1) while the top server is up. An `-e -w` edit must call `update()`
//! (it does, through the engine) for the order to follow the new weight.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::common::plain_params;
use crate::{Dest, SchedError, SchedKey, SchedParams, Scheduler};

/// Destinations with weight > 0, heaviest first, list order among equals.
#[derive(Debug, Default)]
pub(crate) struct ByWeight {
    pub dests: Box<[Arc<Dest>]>,
}

impl ByWeight {
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        let mut v: Vec<Arc<Dest>> = dests.iter().filter(|d| d.weight() > 0).cloned().collect();
        // Stable: equal weights keep list order, as the kernel's strict `>`.
        v.sort_by_key(|d| std::cmp::Reverse(d.weight()));
        ByWeight {
            dests: v.into_boxed_slice(),
        }
    }
}

/// Weighted failover scheduler.
#[derive(Debug)]
pub struct Fo {
    state: ArcSwap<ByWeight>,
}

impl Fo {
    /// Registry constructor: `fo` takes no flags.
    pub fn create(
        params: &SchedParams,
        dests: &[Arc<Dest>],
    ) -> Result<Box<dyn Scheduler>, SchedError> {
        plain_params("fo", params)?;
        Ok(Box::new(Fo::new(dests)))
    }

    /// A failover scheduler over `dests`.
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        Fo {
            state: ArcSwap::from_pointee(ByWeight::new(dests)),
        }
    }
}

impl Scheduler for Fo {
    fn name(&self) -> &'static str {
        "fo"
    }

    fn update(&self, dests: &[Arc<Dest>]) {
        self.state.store(Arc::new(ByWeight::new(dests)));
    }

    fn schedule(&self, _key: &SchedKey) -> Option<Arc<Dest>> {
        let st = self.state.load();
        st.dests.iter().find(|d| d.can_schedule()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{dests, index_of, key, overload};

    #[test]
    fn highest_weight_then_failover() {
        let ds = dests(&[5, 10, 10, 1]);
        let s = Fo::new(&ds);
        let pick = || index_of(&ds, &s.schedule(&key(1)).unwrap());
        // 1 and 2 tie at 10: the first in list order.
        assert_eq!(pick(), 1);
        assert_eq!(pick(), 1);
        overload(&ds[1]);
        assert_eq!(pick(), 2);
        ds[2].set_weight(0);
        assert_eq!(pick(), 0);
        ds[0].set_available(false);
        assert_eq!(pick(), 3);
        ds[3].set_weight(0);
        assert!(s.schedule(&key(1)).is_none());
    }

    #[test]
    fn weight_edit_reorders_after_update() {
        let ds = dests(&[5, 10]);
        let s = Fo::new(&ds);
        ds[0].set_weight(20);
        s.update(&ds);
        assert_eq!(index_of(&ds, &s.schedule(&key(1)).unwrap()), 0);
    }
}
