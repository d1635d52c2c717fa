//! `lblc`: locality-based least connections (`ip_vs_lblc.c`).
//!
//! For cache clusters: connections to the same destination address should
//! reach the same server, so its cache stays warm. The scheduler remembers,
//! per destination address, the server last chosen. A new connection goes
//! there unless that server cannot take it — not schedulable, or
//! "overloaded" in lblc's own sense: more active connections than its weight
//! while some other server is below half of its weight. Then (and for an
//! address not seen before) the pick is wlc's over all servers, and the
//! address is remembered with the new server.
//!
//! Entries expire after 24 hours unused (see [`crate::locality`] for the
//! table, its locking, its bounded allocation on insert and its expiry).
//! `update()` drops entries that point at removed servers after publishing
//! the new list, so no pick that starts after it returns can see them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::common::{conn_overhead, plain_params};
use crate::locality::{LocalityTable, DEFAULT_EXPIRATION_MS};
use crate::wlc::least_weighted;
use crate::{Dest, SchedError, SchedKey, SchedParams, Scheduler};

/// The server list with a generation, so an insert computed against an
/// older list can tell.
#[derive(Debug)]
pub(crate) struct GenSnapshot {
    pub gen: u64,
    pub dests: Box<[Arc<Dest>]>,
}

/// lblc's overload rule (`is_overloaded` in the kernel's lblc and lblcr):
/// more active connections than weight, while another server is below half
/// of its own weight (so there is somewhere better to go).
pub(crate) fn locality_overloaded(d: &Dest, all: &[Arc<Dest>]) -> bool {
    d.active_conns() > d.weight()
        && all
            .iter()
            .any(|o| (o.active_conns() as u64) * 2 < o.weight() as u64)
}

/// Locality-based least-connection scheduler.
#[derive(Debug)]
pub struct Lblc {
    state: ArcSwap<GenSnapshot>,
    table: LocalityTable<Arc<Dest>>,
    next_gen: AtomicU64,
    update_lock: Mutex<()>,
}

impl Lblc {
    /// Registry constructor: `lblc` takes no flags.
    pub fn create(
        params: &SchedParams,
        dests: &[Arc<Dest>],
    ) -> Result<Box<dyn Scheduler>, SchedError> {
        plain_params("lblc", params)?;
        Ok(Box::new(Lblc::new(dests)))
    }

    /// An lblc scheduler with the default 24 h expiration.
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        Self::with_expiration(dests, DEFAULT_EXPIRATION_MS)
    }

    /// An lblc scheduler whose entries expire after `expiration_ms` unused
    /// (the kernel's `lblc_expiration` sysctl).
    pub fn with_expiration(dests: &[Arc<Dest>], expiration_ms: u64) -> Self {
        Lblc {
            state: ArcSwap::from_pointee(GenSnapshot {
                gen: 0,
                dests: dests.to_vec().into_boxed_slice(),
            }),
            table: LocalityTable::new(expiration_ms),
            next_gen: AtomicU64::new(1),
            update_lock: Mutex::new(()),
        }
    }

    /// Destination addresses currently remembered.
    pub fn entries(&self) -> usize {
        self.table.len()
    }
}

impl Scheduler for Lblc {
    fn name(&self) -> &'static str {
        "lblc"
    }

    fn expire(&self, now_ms: u64) {
        self.table.expire(now_ms)
    }

    fn update(&self, dests: &[Arc<Dest>]) {
        // Poisoning only means an earlier update panicked; state is replaced.
        let _g = self.update_lock.lock().unwrap_or_else(|e| e.into_inner());
        let gen = self.next_gen.fetch_add(1, Ordering::Relaxed);
        self.state.store(Arc::new(GenSnapshot {
            gen,
            dests: dests.to_vec().into_boxed_slice(),
        }));
        // After the swap, inserts computed from the old list are refused
        // (generation check under the shard lock); now clear the old ones.
        self.table
            .retain(|d| dests.iter().any(|n| Arc::ptr_eq(n, d)));
    }

    fn schedule(&self, key: &SchedKey) -> Option<Arc<Dest>> {
        let st = self.state.load();
        let now = key.now_ms;
        let hit = self.table.read(&key.dst, now, |e| {
            let d = &e.value;
            (d.can_schedule() && !locality_overloaded(d, &st.dests)).then(|| Arc::clone(d))
        });
        if let Some(Some(d)) = hit {
            return Some(d);
        }
        let d = least_weighted(st.dests.iter(), conn_overhead)?;
        self.table.upsert(
            &key.dst,
            now,
            || self.state.load().gen == st.gen,
            |cur| *cur = Arc::clone(d),
            || Arc::clone(d),
        );
        Some(Arc::clone(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{dests, index_of, key};
    use std::net::{IpAddr, Ipv4Addr};

    fn to(last: u8, now_ms: u64) -> SchedKey {
        SchedKey {
            dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)),
            now_ms,
            ..key(1)
        }
    }

    #[test]
    fn same_destination_sticks_while_others_spread() {
        let ds = dests(&[1, 1, 1]);
        let s = Lblc::new(&ds);
        let first = s.schedule(&to(1, 0)).unwrap();
        first.conn_bound(true);
        for t in 1..5 {
            assert!(Arc::ptr_eq(&s.schedule(&to(1, t)).unwrap(), &first));
        }
        // A new address goes to a least-loaded server, not the busy one.
        let other = s.schedule(&to(2, 5)).unwrap();
        assert!(!Arc::ptr_eq(&other, &first));
        assert_eq!(s.entries(), 2);
    }

    #[test]
    fn overloaded_mapping_moves() {
        let ds = dests(&[1, 4]);
        let s = Lblc::new(&ds);
        let k = to(9, 0);
        assert_eq!(index_of(&ds, &s.schedule(&k).unwrap()), 0);
        ds[0].conn_bound(true);
        ds[0].conn_bound(true); // 2 active > weight 1, server 1 idle (< 4/2)
        assert_eq!(index_of(&ds, &s.schedule(&k).unwrap()), 1);
        // The new mapping is kept.
        ds[0].conn_unbound(true);
        ds[0].conn_unbound(true);
        assert_eq!(index_of(&ds, &s.schedule(&k).unwrap()), 1);
    }

    #[test]
    fn entries_expire_after_the_expiration() {
        let ds = dests(&[1, 1]);
        let s = Lblc::with_expiration(&ds, 10_000);
        let d = s.schedule(&to(3, 0)).unwrap();
        // Load the remembered server: a fresh pick would go elsewhere.
        d.conn_bound(true);
        assert!(Arc::ptr_eq(&s.schedule(&to(3, 9_000)).unwrap(), &d));
        assert!(Arc::ptr_eq(&s.schedule(&to(3, 19_000)).unwrap(), &d));
        // Unused for more than 10 s: forgotten, wlc picks the idle one.
        assert!(!Arc::ptr_eq(&s.schedule(&to(3, 29_001)).unwrap(), &d));
    }

    #[test]
    fn removed_server_is_forgotten_on_update() {
        let ds = dests(&[1, 1]);
        let s = Lblc::new(&ds);
        let d = s.schedule(&to(4, 0)).unwrap();
        let rest: Vec<_> = ds.iter().filter(|x| !Arc::ptr_eq(x, &d)).cloned().collect();
        s.update(&rest);
        assert_eq!(s.entries(), 0);
        assert!(Arc::ptr_eq(&s.schedule(&to(4, 1)).unwrap(), &rest[0]));
    }
}
