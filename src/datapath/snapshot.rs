//! Read-mostly configuration (services, filter rules) published by the
//! control plane and read by every worker for every packet.
//!
//! Contract: [`Snapshot::store`] publishes a new value; [`Snapshot::load`]
//! and [`Snapshot::load_full`] return the current one (control path: one
//! reference-count increment). The per-packet path instead asks
//! [`Snapshot::generation`] and keeps its own clone of the value for that
//! generation (see `Pipeline::process`), so a packet costs two plain loads
//! and no locked instruction and no write to a cache line that other cores
//! share. A worker sees a new value from its first packet after the store
//! completes; a worker that is idle may keep an older value alive until its
//! next packet.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// Generations are unique across every snapshot of the process, so a
/// cached (generation, value) pair can never be confused with another
/// snapshot's.
static NEXT_GEN: AtomicU64 = AtomicU64::new(1);

fn next_gen() -> u64 {
    NEXT_GEN.fetch_add(1, Ordering::Relaxed)
}

/// A published value and its generation.
pub struct Snapshot<T> {
    cur: ArcSwap<T>,
    gen: AtomicU64,
}

impl<T> Snapshot<T> {
    /// A snapshot holding `v`.
    pub fn from_pointee(v: T) -> Self {
        Snapshot {
            cur: ArcSwap::from_pointee(v),
            gen: AtomicU64::new(next_gen()),
        }
    }

    /// Publishes `v` (control path).
    pub fn store(&self, v: Arc<T>) {
        let g = next_gen();
        self.cur.store(v);
        // Release after the value: whoever reads this generation (Acquire)
        // then loads this value or a newer one.
        self.gen.store(g, Ordering::Release);
    }

    /// The current value (control path).
    pub fn load(&self) -> Arc<T> {
        self.cur.load_full()
    }

    /// The current value (control path).
    pub fn load_full(&self) -> Arc<T> {
        self.cur.load_full()
    }

    /// The generation of the current value: a value loaded after reading
    /// generation `g` is that generation's value or a newer one.
    #[inline(always)]
    pub fn generation(&self) -> u64 {
        self.gen.load(Ordering::Acquire)
    }
}

impl<T: fmt::Debug> fmt::Debug for Snapshot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("gen", &self.gen.load(Ordering::Relaxed))
            .field("cur", &self.cur.load())
            .finish()
    }
}

/// One thread's copy of a snapshot's value, valid for one generation.
#[derive(Debug)]
pub(crate) struct Cached<T> {
    gen: u64,
    val: Option<Arc<T>>,
}

impl<T> Cached<T> {
    pub(crate) const EMPTY: Cached<T> = Cached { gen: 0, val: None };

    /// The value for `s`'s current generation (reloaded only when the
    /// generation moved), with that generation (for data a thread derives
    /// from the value).
    #[inline(always)]
    pub(crate) fn get_gen(&mut self, s: &Snapshot<T>) -> (u64, &T) {
        let g = s.generation();
        if g != self.gen {
            self.val = None;
            self.gen = g;
        }
        (g, self.val.get_or_insert_with(|| s.load_full()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_follows_stores() {
        let a = Snapshot::from_pointee(1);
        let b = Snapshot::from_pointee(10);
        let mut c = Cached::EMPTY;
        let mut get = |s: &Snapshot<i32>| *c.get_gen(s).1;
        assert_eq!(get(&a), 1);
        a.store(Arc::new(2));
        assert_eq!(get(&a), 2);
        // Another snapshot never hits this one's cached generation.
        assert_eq!(get(&b), 10);
        b.store(Arc::new(11));
        assert_eq!(get(&b), 11);
        assert_eq!(get(&a), 2);
    }
}
