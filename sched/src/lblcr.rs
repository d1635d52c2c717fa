//! `lblcr`: locality-based least connections with replication
//! (`ip_vs_lblcr.c`).
//!
//! Like lblc, but each destination address maps to a *set* of servers, so a
//! hot address can be served by several caches. A new connection goes to
//! the least loaded member of the set (least `overhead / weight`); when that
//! member is overloaded in lblc's sense (more active connections than its
//! weight while another server is below half of its own), or the set has no
//! schedulable member, wlc picks a server from the whole service and it
//! joins the set. A set that has not changed for the expiration (24 h) and
//! has more than one member sheds its most loaded member, one per pick;
//! whole entries expire after the same time unused.
//!
//! Table, locking, bounded allocation and expiry: see [`crate::locality`].
//! Set changes take the shard's write lock (rare: growth under overload,
//! shrinking once per expiration).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::common::{conn_overhead, plain_params, ratio_greater};
use crate::lblc::{locality_overloaded, GenSnapshot};
use crate::locality::{LocalityTable, DEFAULT_EXPIRATION_MS};
use crate::wlc::least_weighted;
use crate::{Dest, SchedError, SchedKey, SchedParams, Scheduler};

/// The server set of one destination address.
#[derive(Debug)]
struct DestSet {
    members: Vec<Arc<Dest>>,
    /// Caller's clock when a member was last added or removed.
    lastmod: AtomicU64,
}

impl DestSet {
    fn one(d: &Arc<Dest>, now: u64) -> Self {
        DestSet {
            members: vec![Arc::clone(d)],
            lastmod: AtomicU64::new(now),
        }
    }

    /// The most loaded member with weight > 0 (the kernel's
    /// `ip_vs_dest_set_max`: the first member, replaced by any later one
    /// with a greater `overhead / weight`).
    fn most_loaded(&self) -> Option<usize> {
        let mut most = 0;
        for (i, d) in self.members.iter().enumerate().skip(1) {
            let (m, w) = (&self.members[most], d.weight());
            if w > 0 && ratio_greater(conn_overhead(d), w, conn_overhead(m), m.weight()) {
                most = i;
            }
        }
        (!self.members.is_empty()).then_some(most)
    }
}

/// Outcome of looking at a live entry under the read lock.
enum Seen {
    /// Use this member.
    Use(Arc<Dest>),
    /// Pick from the whole service and add to the set; `shrink` if the set
    /// is due to lose its most loaded member.
    Grow { shrink: bool },
}

/// Locality-based least-connection scheduler with replication.
#[derive(Debug)]
pub struct Lblcr {
    state: ArcSwap<GenSnapshot>,
    table: LocalityTable<DestSet>,
    expiration_ms: u64,
    next_gen: AtomicU64,
    update_lock: Mutex<()>,
}

impl Lblcr {
    /// Registry constructor: `lblcr` takes no flags.
    pub fn create(
        params: &SchedParams,
        dests: &[Arc<Dest>],
    ) -> Result<Box<dyn Scheduler>, SchedError> {
        plain_params("lblcr", params)?;
        Ok(Box::new(Lblcr::new(dests)))
    }

    /// An lblcr scheduler with the default 24 h expiration.
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        Self::with_expiration(dests, DEFAULT_EXPIRATION_MS)
    }

    /// An lblcr scheduler whose sets shrink, and entries expire, after
    /// `expiration_ms` (the kernel's `lblcr_expiration` sysctl).
    pub fn with_expiration(dests: &[Arc<Dest>], expiration_ms: u64) -> Self {
        Lblcr {
            state: ArcSwap::from_pointee(GenSnapshot {
                gen: 0,
                dests: dests.to_vec().into_boxed_slice(),
            }),
            table: LocalityTable::new(expiration_ms),
            expiration_ms,
            next_gen: AtomicU64::new(1),
            update_lock: Mutex::new(()),
        }
    }

    /// Destination addresses currently remembered.
    pub fn entries(&self) -> usize {
        self.table.len()
    }

    /// Size of the server set remembered for `addr`.
    pub fn set_size(&self, addr: &std::net::IpAddr) -> usize {
        self.table
            .modify(addr, |e| e.value.members.len())
            .unwrap_or(0)
    }

    fn shrink(&self, key: &SchedKey) {
        let now = key.now_ms;
        let exp = self.expiration_ms;
        self.table.modify(&key.dst, |e| {
            let set = &mut e.value;
            let lastmod = set.lastmod.load(Ordering::Relaxed);
            if set.members.len() > 1 && now.saturating_sub(lastmod) > exp {
                if let Some(i) = set.most_loaded() {
                    set.members.remove(i);
                    set.lastmod.store(now, Ordering::Relaxed);
                }
            }
        });
    }
}

impl Scheduler for Lblcr {
    fn name(&self) -> &'static str {
        "lblcr"
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
        self.table.retain(|set| {
            set.members
                .retain(|m| dests.iter().any(|n| Arc::ptr_eq(n, m)));
            !set.members.is_empty()
        });
    }

    fn schedule(&self, key: &SchedKey) -> Option<Arc<Dest>> {
        let st = self.state.load();
        let now = key.now_ms;
        let exp = self.expiration_ms;
        let seen = self.table.read(&key.dst, now, |e| {
            let set = &e.value;
            let shrink = set.members.len() > 1
                && now.saturating_sub(set.lastmod.load(Ordering::Relaxed)) > exp;
            match least_weighted(set.members.iter(), conn_overhead) {
                Some(d) if !locality_overloaded(d, &st.dests) => {
                    if shrink {
                        // Rare (once per expiration): shrink under the write
                        // lock, then pick from the smaller set.
                        Seen::Grow { shrink: true }
                    } else {
                        Seen::Use(Arc::clone(d))
                    }
                }
                _ => Seen::Grow { shrink },
            }
        });
        match seen {
            Some(Seen::Use(d)) => return Some(d),
            Some(Seen::Grow { shrink: true }) => {
                self.shrink(key);
                // Re-read the shrunk set: the kernel picks the least loaded
                // member before shrinking, then uses it if not overloaded.
                let again = self.table.read(&key.dst, now, |e| {
                    least_weighted(e.value.members.iter(), conn_overhead)
                        .filter(|d| !locality_overloaded(d, &st.dests))
                        .cloned()
                });
                if let Some(Some(d)) = again {
                    return Some(d);
                }
            }
            Some(Seen::Grow { shrink: false }) | None => {}
        }
        let d = least_weighted(st.dests.iter(), conn_overhead)?;
        self.table.upsert(
            &key.dst,
            now,
            || self.state.load().gen == st.gen,
            |set| {
                if !set.members.iter().any(|m| Arc::ptr_eq(m, d)) {
                    set.members.push(Arc::clone(d));
                    set.lastmod.store(now, Ordering::Relaxed);
                }
            },
            || DestSet::one(d, now),
        );
        Some(Arc::clone(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{dests, key};
    use std::net::{IpAddr, Ipv4Addr};

    fn to(last: u8, now_ms: u64) -> SchedKey {
        SchedKey {
            dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)),
            now_ms,
            ..key(1)
        }
    }

    #[test]
    fn set_grows_under_overload_and_spreads() {
        let ds = dests(&[1, 1, 1]);
        let s = Lblcr::new(&ds);
        let k = to(1, 0);
        let a = s.schedule(&k).unwrap();
        assert_eq!(s.set_size(&k.dst), 1);
        a.conn_bound(true);
        // 1 active = weight: not overloaded, stays.
        assert!(Arc::ptr_eq(&s.schedule(&k).unwrap(), &a));
        a.conn_bound(true);
        // 2 > 1 and others idle: a second member joins.
        let b = s.schedule(&k).unwrap();
        assert!(!Arc::ptr_eq(&b, &a));
        assert_eq!(s.set_size(&k.dst), 2);
        // The set's least loaded member (b) gets the next one.
        assert!(Arc::ptr_eq(&s.schedule(&k).unwrap(), &b));
    }

    #[test]
    fn set_shrinks_after_expiration_unchanged() {
        let ds = dests(&[1, 1]);
        let s = Lblcr::with_expiration(&ds, 1000);
        let k = to(2, 0);
        let a = s.schedule(&k).unwrap();
        a.conn_bound(true);
        a.conn_bound(true);
        let _b = s.schedule(&to(2, 10)).unwrap();
        assert_eq!(s.set_size(&k.dst), 2);
        // Used again (entry alive), then past lastmod (10) + expiration.
        s.schedule(&to(2, 900)).unwrap();
        assert_eq!(s.set_size(&k.dst), 2);
        let picked = s.schedule(&to(2, 1500)).unwrap();
        assert_eq!(s.set_size(&k.dst), 1, "most loaded member (a) dropped");
        assert!(!Arc::ptr_eq(&picked, &a));
    }

    #[test]
    fn removed_member_leaves_every_set() {
        let ds = dests(&[1, 1]);
        let s = Lblcr::new(&ds);
        let k = to(3, 0);
        let a = s.schedule(&k).unwrap();
        let rest: Vec<_> = ds.iter().filter(|x| !Arc::ptr_eq(x, &a)).cloned().collect();
        s.update(&rest);
        assert_eq!(s.entries(), 0);
        assert!(Arc::ptr_eq(&s.schedule(&to(3, 1)).unwrap(), &rest[0]));
    }
}
