//! `rr`: round robin over the schedulable destinations (`ip_vs_rr.c`).
//!
//! The kernel keeps a pointer to the last destination picked and, under a
//! spinlock, walks the list from there to the next one that is not
//! overloaded and has weight > 0. Here the pointer is an index in an atomic,
//! advanced with compare-and-swap: single-threaded the order is exactly the
//! kernel's (weight-0 and overloaded servers are skipped without disturbing
//! the rotation); under contention a pick retries instead of waiting.
//! `update()` carries the position over like `ip_vs_rr_del_dest`: the
//! rotation continues after the last server picked, or after its nearest
//! surviving predecessor when that server was removed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use std::net::SocketAddr;

use crate::common::{plain_params, Snapshot};
use crate::explain::{How, Skip};
use crate::{Dest, Explain, SchedError, SchedKey, SchedParams, Scheduler};

/// No pick yet: the next search starts at the list head.
const NONE: usize = usize::MAX;

/// Round-robin scheduler.
#[derive(Debug)]
pub struct Rr {
    state: ArcSwap<Snapshot>,
    /// Index (in the current snapshot) of the last destination picked.
    last: AtomicUsize,
    /// Serialises `update()` calls (control path only).
    update_lock: Mutex<()>,
}

impl Rr {
    /// Registry constructor: `rr` takes no flags.
    pub fn create(
        params: &SchedParams,
        dests: &[Arc<Dest>],
    ) -> Result<Box<dyn Scheduler>, SchedError> {
        plain_params("rr", params)?;
        Ok(Box::new(Rr::new(dests)))
    }

    /// A round-robin scheduler over `dests`.
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        Rr {
            state: ArcSwap::from_pointee(Snapshot::new(dests)),
            last: AtomicUsize::new(NONE),
            update_lock: Mutex::new(()),
        }
    }
}

impl Scheduler for Rr {
    fn name(&self) -> &'static str {
        "rr"
    }

    fn update(&self, dests: &[Arc<Dest>]) {
        // A poisoned lock only means another update panicked; the snapshot
        // it guards is replaced whole, so carrying on is safe.
        let _g = self.update_lock.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.state.load_full();
        let last = self.last.load(Ordering::Acquire);
        let new_last = carry_position(&old.dests, last, dests);
        // Publish the position before the list: a racing pick either sees the
        // old list (and may move `last` by the old indices, harmless: it is
        // clamped by `% n` below) or the new one.
        self.last.store(new_last, Ordering::Release);
        self.state.store(Arc::new(Snapshot::new(dests)));
    }

    fn schedule(&self, _key: &SchedKey) -> Option<Arc<Dest>> {
        self.pick(&self.state.load().dests)
    }

    /// The caller's list instead of an `ArcSwap` load of our copy (about
    /// a hundred instructions per new connection): same order, and a stale
    /// `last` is clamped below.
    #[inline]
    fn schedule_in(&self, dests: &[Arc<Dest>], _key: &SchedKey) -> Option<Arc<Dest>> {
        self.pick(dests)
    }

    fn schedule_explained(&self, _key: &SchedKey, why: &mut Explain) -> Option<Arc<Dest>> {
        // `schedule`'s walk, noting the position it continued from and
        // the servers it passed over (tracing only).
        let st = self.state.load();
        let n = st.dests.len();
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            *why = Explain::default();
            let start = match last.checked_add(1) {
                Some(s) if s < n => s,
                _ => 0,
            };
            let mut found = None;
            for i in (start..n).chain(0..start) {
                match Skip::of(&st.dests[i]) {
                    None => {
                        found = Some(i);
                        break;
                    }
                    Some(s) => why.skip(&st.dests[i], s),
                }
            }
            let Some(found) = found else {
                why.how = How::NoDestination;
                return None;
            };
            match self
                .last
                .compare_exchange_weak(last, found, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    let after = st.dests.get(last).map(|d| SocketAddr::new(d.addr, d.port));
                    why.how = How::NextAfter { after };
                    return Some(Arc::clone(&st.dests[found]));
                }
                Err(now) => last = now,
            }
        }
    }
}

impl Rr {
    /// The next schedulable destination of `dests` after the last pick.
    #[inline]
    fn pick(&self, dests: &[Arc<Dest>]) -> Option<Arc<Dest>> {
        let n = dests.len();
        if n == 0 {
            return None;
        }
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            // `last` may be NONE, or stale from a list that was longer.
            let start = match last.checked_add(1) {
                Some(s) if s < n => s,
                _ => 0,
            };
            // No division on the hot path: scan start..n, then 0..start.
            let found = (start..n)
                .chain(0..start)
                .find(|&i| dests[i].can_schedule())?;
            match self
                .last
                .compare_exchange_weak(last, found, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(Arc::clone(&dests[found])),
                Err(now) => last = now,
            }
        }
    }
}

/// Where the rotation continues in `new` given the last pick `last` in `old`.
fn carry_position(old: &[Arc<Dest>], last: usize, new: &[Arc<Dest>]) -> usize {
    if last == NONE || old.is_empty() {
        return NONE;
    }
    let last = last % old.len();
    // Walk back from the last pick to the first server that survived.
    for back in 0..old.len() {
        let i = (last + old.len() - back) % old.len();
        if let Some(pos) = new.iter().position(|d| Arc::ptr_eq(d, &old[i])) {
            return pos;
        }
    }
    NONE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{dests, key, pick_names};

    #[test]
    fn rotates_in_list_order() {
        let ds = dests(&[1, 1, 1]);
        let s = Rr::new(&ds);
        assert_eq!(pick_names(&s, &ds, 7), "0120120");
    }

    #[test]
    fn skips_weight_zero_and_overloaded() {
        let ds = dests(&[1, 0, 1, 1]);
        let s = Rr::new(&ds);
        assert_eq!(pick_names(&s, &ds, 6), "023023");
        ds[3].set_thresholds(1, 0);
        ds[3].conn_bound(true);
        assert!(ds[3].is_overloaded());
        assert_eq!(pick_names(&s, &ds, 4), "0202");
    }

    #[test]
    fn explained_picks_are_the_same_picks_and_say_why() {
        let ds = dests(&[1, 0, 1]);
        let (plain, told) = (Rr::new(&ds), Rr::new(&ds));
        for round in 0..5 {
            let mut why = Explain::default();
            let a = plain.schedule(&key(1)).unwrap();
            let b = told.schedule_explained(&key(1), &mut why).unwrap();
            assert!(Arc::ptr_eq(&a, &b));
            let first = round == 0;
            let after = why.how;
            assert_eq!(
                after == (How::NextAfter { after: None }),
                first,
                "{after:?}"
            );
            // From server 0 the walk passes over server 1 (weight 0).
            assert_eq!(why.n_skipped, u32::from(Arc::ptr_eq(&b, &ds[2])));
        }
        let none = Rr::new(&dests(&[0]));
        let mut why = Explain::default();
        assert!(none.schedule_explained(&key(1), &mut why).is_none());
        assert_eq!(why.how, How::NoDestination);
    }

    #[test]
    fn none_when_nothing_schedulable() {
        let ds = dests(&[0, 0]);
        let s = Rr::new(&ds);
        assert!(s.schedule(&key(1)).is_none());
        let empty = Rr::new(&[]);
        assert!(empty.schedule(&key(1)).is_none());
    }

    #[test]
    fn removal_continues_after_predecessor() {
        let ds = dests(&[1, 1, 1, 1]);
        let s = Rr::new(&ds);
        assert_eq!(pick_names(&s, &ds, 2), "01");
        // Remove server 1 (the last picked): the rotation goes on at 2.
        let kept = vec![ds[0].clone(), ds[2].clone(), ds[3].clone()];
        s.update(&kept);
        assert_eq!(pick_names(&s, &ds, 4), "2302");
    }

    /// `schedule_in` with the list `update` got continues the same
    /// rotation as `schedule`, and with an older list (a worker on the
    /// previous configuration) never picks a removed, unavailable server.
    #[test]
    fn schedule_in_follows_the_same_rotation() {
        let ds = dests(&[1, 0, 1, 1]);
        let s = Rr::new(&ds);
        let mut got = String::new();
        for i in 0..6 {
            let d = if i % 2 == 0 {
                s.schedule_in(&ds, &key(1))
            } else {
                s.schedule(&key(1))
            }
            .unwrap();
            let i = ds.iter().position(|x| Arc::ptr_eq(x, &d)).unwrap();
            got.push(char::from_digit(i as u32, 10).unwrap());
        }
        assert_eq!(got, "023023");
        let kept = vec![ds[0].clone(), ds[3].clone()];
        ds[2].set_available(false);
        s.update(&kept);
        for _ in 0..8 {
            let d = s.schedule_in(&ds, &key(1)).unwrap();
            assert!(!Arc::ptr_eq(&d, &ds[2]), "picked a removed server");
        }
    }
}
