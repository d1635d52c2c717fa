//! `sed`: shortest expected delay (`ip_vs_sed.c`).
//!
//! The expected delay of a server is `(active + 1) / weight`: the time to
//! serve the new connection if the active ones are served at a rate
//! proportional to the weight. Inactive connections are ignored. Picks the
//! least, compared by cross multiplication, ties to the first in list order.
//! O(n) per pick, like the kernel.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::common::{plain_params, Snapshot};
use crate::wlc::least_weighted;
use crate::{Dest, SchedError, SchedKey, SchedParams, Scheduler};

/// The sed/nq overhead: active connections plus the one being scheduled.
pub(crate) fn sed_overhead(d: &Dest) -> u64 {
    d.active_conns() as u64 + 1
}

/// Shortest-expected-delay scheduler.
#[derive(Debug)]
pub struct Sed {
    state: ArcSwap<Snapshot>,
}

impl Sed {
    /// Registry constructor: `sed` takes no flags.
    pub fn create(
        params: &SchedParams,
        dests: &[Arc<Dest>],
    ) -> Result<Box<dyn Scheduler>, SchedError> {
        plain_params("sed", params)?;
        Ok(Box::new(Sed::new(dests)))
    }

    /// A shortest-expected-delay scheduler over `dests`.
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        Sed {
            state: ArcSwap::from_pointee(Snapshot::new(dests)),
        }
    }
}

impl Scheduler for Sed {
    fn name(&self) -> &'static str {
        "sed"
    }

    fn update(&self, dests: &[Arc<Dest>]) {
        self.state.store(Arc::new(Snapshot::new(dests)));
    }

    fn schedule(&self, _key: &SchedKey) -> Option<Arc<Dest>> {
        let st = self.state.load();
        least_weighted(st.dests.iter(), sed_overhead).cloned()
    }

    fn schedule_explained(&self, _key: &SchedKey, why: &mut crate::Explain) -> Option<Arc<Dest>> {
        let st = self.state.load();
        crate::wlc::least_explained(st.dests.iter(), sed_overhead, why).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{dests, index_of, key};

    #[test]
    fn heavier_server_takes_more_before_sharing() {
        // Weights 1 and 3: (a+1)/1 vs (b+1)/3. Binding every pick, the
        // heavy one takes the first two (1/3, 2/3 < 1), then they alternate
        // by expected delay.
        let ds = dests(&[1, 3]);
        let s = Sed::new(&ds);
        let mut seq = String::new();
        for _ in 0..8 {
            let d = s.schedule(&key(1)).unwrap();
            seq.push(char::from(b'0' + index_of(&ds, &d) as u8));
            d.conn_bound(true);
        }
        // b=0:1/3 b=1:2/3 then a:1 vs b:1 tie→a; b:1<a:2 ...
        assert_eq!(seq, "11011101");
    }

    #[test]
    fn inactive_connections_do_not_count() {
        let ds = dests(&[1, 1]);
        for _ in 0..100 {
            ds[0].conn_bound(false);
        }
        let s = Sed::new(&ds);
        assert_eq!(index_of(&ds, &s.schedule(&key(1)).unwrap()), 0);
    }
}
