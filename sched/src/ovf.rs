//! `ovf`: weighted overflow (`ip_vs_ovf.c`).
//!
//! Connections go to the schedulable server with the highest weight until
//! its active connections exceed its weight; then to the next heaviest, and
//! so on (first in list order among equals). As for `fo`, `update()` sorts
//! by weight once, so a pick walks only past the servers that overflowed.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::common::plain_params;
use crate::fo::ByWeight;
use crate::{Dest, SchedError, SchedKey, SchedParams, Scheduler};

/// Weighted overflow scheduler.
#[derive(Debug)]
pub struct Ovf {
    state: ArcSwap<ByWeight>,
}

impl Ovf {
    /// Registry constructor: `ovf` takes no flags.
    pub fn create(
        params: &SchedParams,
        dests: &[Arc<Dest>],
    ) -> Result<Box<dyn Scheduler>, SchedError> {
        plain_params("ovf", params)?;
        Ok(Box::new(Ovf::new(dests)))
    }

    /// An overflow scheduler over `dests`.
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        Ovf {
            state: ArcSwap::from_pointee(ByWeight::new(dests)),
        }
    }
}

impl Scheduler for Ovf {
    fn name(&self) -> &'static str {
        "ovf"
    }

    fn update(&self, dests: &[Arc<Dest>]) {
        self.state.store(Arc::new(ByWeight::new(dests)));
    }

    fn schedule(&self, _key: &SchedKey) -> Option<Arc<Dest>> {
        let st = self.state.load();
        st.dests
            .iter()
            .find(|d| d.can_schedule() && d.active_conns() <= d.weight())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{dests, index_of, key};

    #[test]
    fn overflows_when_active_exceeds_weight() {
        let ds = dests(&[2, 3]);
        let s = Ovf::new(&ds);
        let mut seq = String::new();
        for _ in 0..7 {
            match s.schedule(&key(1)) {
                Some(d) => {
                    seq.push(char::from(b'0' + index_of(&ds, &d) as u8));
                    d.conn_bound(true);
                }
                None => seq.push('-'),
            }
        }
        // Server 1 (w 3) takes active 0..=3 (4 conns: "> weight" overflows
        // only at 4), then server 0 takes 3, then nothing is left.
        assert_eq!(seq, "1111000");
        assert!(s.schedule(&key(1)).is_none());
        // One connection closes on the heavy server: it is back in line.
        ds[1].conn_unbound(true);
        assert_eq!(index_of(&ds, &s.schedule(&key(1)).unwrap()), 1);
    }

    #[test]
    fn inactive_connections_do_not_overflow() {
        let ds = dests(&[1, 1]);
        for _ in 0..10 {
            ds[0].conn_bound(false);
        }
        let s = Ovf::new(&ds);
        assert_eq!(index_of(&ds, &s.schedule(&key(1)).unwrap()), 0);
    }
}
