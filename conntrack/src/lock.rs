//! The shard lock: a test-and-test-and-set lock.
//!
//! Why not `std::sync::Mutex`: every packet takes one shard lock, and a
//! futex mutex costs two locked read-modify-write instructions per hold
//! (the release must swap to learn whether to wake a sleeper) plus its
//! poisoning bookkeeping. Here acquiring is one compare-and-swap and
//! releasing is a plain release store. Holds are short and bounded (O(1)
//! per packet; the sweep and listing work in bounded steps; index growth
//! is avoided with `Config::presize`), so a waiter spins briefly, then
//! yields its CPU, which keeps a preempted holder from being starved on an
//! oversubscribed machine.
//!
//! A panic while holding releases the lock on unwind (the guard's `Drop`);
//! the table's operations leave a shard consistent at entry granularity,
//! as the crate docs require, so nothing is poisoned.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

/// Spins before yielding, in `spin_loop` hints.
const SPINS: u32 = 128;

/// A value behind a spin lock.
pub(crate) struct ShardLock<T> {
    locked: AtomicBool,
    val: UnsafeCell<T>,
}

// SAFETY: `val` is only reached through a `Guard`, and at most one guard
// exists at a time (`locked` is set with Acquire by the one thread whose
// compare-and-swap succeeded and cleared with Release when its guard
// drops), so sharing the lock across threads hands `T` from one thread to
// another, exactly as `Mutex<T>` does: `T: Send` suffices.
unsafe impl<T: Send> Sync for ShardLock<T> {}

impl<T> ShardLock<T> {
    pub(crate) fn new(v: T) -> Self {
        ShardLock {
            locked: AtomicBool::new(false),
            val: UnsafeCell::new(v),
        }
    }

    /// Waits for the lock and holds it until the guard drops.
    #[inline(always)]
    pub(crate) fn lock(&self) -> Guard<'_, T> {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        Guard {
            lock: self,
            _not_sync_unless_t: PhantomData,
        }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            // Wait on a plain load (no cache-line ping-pong), then retry.
            while self.locked.load(Ordering::Relaxed) {
                if spins < SPINS {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

impl<T> fmt::Debug for ShardLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardLock")
            .field("locked", &self.locked.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Proof of holding a [`ShardLock`]; releases it when dropped.
pub(crate) struct Guard<'a, T> {
    lock: &'a ShardLock<T>,
    /// Shared access to a guard gives `&T` to every sharer, so the guard is
    /// `Sync` only when `T` is (and `Send` when `T` is), as `&mut T` is.
    _not_sync_unless_t: PhantomData<&'a mut T>,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: this guard holds the lock (see `ShardLock`'s Sync impl),
        // so no `&mut T` exists elsewhere; the borrow ends with the guard's.
        unsafe { &*self.lock.val.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard holds the lock and is borrowed mutably, so this
        // is the only reference to the value until the borrow ends.
        unsafe { &mut *self.lock.val.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn excludes_across_threads() {
        let l = Arc::new(ShardLock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = Arc::clone(&l);
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        // A non-atomic read-modify-write: lost updates would
                        // show if two threads held the lock at once.
                        let mut g = l.lock();
                        let v = *g;
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*l.lock(), 80_000);
    }

    #[test]
    fn released_on_panic() {
        let l = Arc::new(ShardLock::new(1u32));
        let l2 = Arc::clone(&l);
        let r = std::thread::spawn(move || {
            let _g = l2.lock();
            panic!("while holding");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(*l.lock(), 1);
    }
}
