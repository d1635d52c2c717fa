//! The per-destination-address table of lblc and lblcr (the kernel's
//! `ip_vs_lblc_table`): destination address → entry, with last-use times
//! and expiry.
//!
//! Why a sharded `RwLock<HashMap>` rather than one lock or a lock-free map:
//! * the hit path (an address seen before) takes one shard's read lock —
//!   readers never wait for each other, only for a writer of the same
//!   shard, 1/[`SHARDS`] of the table — updates the entry's last-use time
//!   in an atomic, and allocates nothing;
//! * a miss inserts under that shard's write lock. This is the documented
//!   exception to "no allocation in `schedule()`": the map may grow
//!   (amortised, a few times per shard in its life), and lblcr's server set
//!   may grow by one. Both are bounded: a shard holds at most
//!   [`HARD_CAP`]`/SHARDS` entries — past that new addresses are scheduled
//!   but not remembered, like the kernel when its allocation fails;
//! * the kernel itself uses RCU lookups plus a per-service spinlock for
//!   inserts, which is this design with finer write locking.
//!
//! Expiry follows the kernel: an entry unused for the expiration (24 h by
//! default, the `lblc_expiration` sysctl) is gone — a lookup treats it as
//! absent at once, and a sweep removes it. There is no timer here: each
//! shard is swept at most once a minute by the insert that finds it due
//! (O(shard) under its write lock), and `Scheduler::expire` lets an
//! engine timer do the same for idle services. When a shard holds more than
//! its share of [`SOFT_CAP`] entries, the sweep also drops entries idle for
//! more than [`ENTRY_TIMEOUT_MS`] (the kernel's 6-minute pressure rule).
//! The hash is keyed per table with a random seed, so clients cannot aim
//! their destination addresses at one bucket.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use crate::common::mix64;

/// Number of shards (a power of two).
pub const SHARDS: usize = 16;
/// Entry count above which sweeps also drop entries idle for 6 minutes
/// (the kernel's `IP_VS_LBLC_TAB_SIZE * 16`).
pub const SOFT_CAP: usize = 16 * 1024;
/// Entry count past which new addresses are not remembered.
pub const HARD_CAP: usize = 4 * SOFT_CAP;
/// Default expiration of an unused entry: 24 hours.
pub const DEFAULT_EXPIRATION_MS: u64 = 24 * 60 * 60 * 1000;
/// Idle time after which entries go under memory pressure: 6 minutes.
pub const ENTRY_TIMEOUT_MS: u64 = 6 * 60 * 1000;
/// Minimum interval between two sweeps of a shard.
pub const SWEEP_INTERVAL_MS: u64 = 60 * 1000;

/// One remembered destination address.
#[derive(Debug)]
pub(crate) struct Entry<V> {
    pub value: V,
    /// Caller's clock at the last lookup or update, in ms.
    pub lastuse: AtomicU64,
}

#[derive(Debug)]
struct Shard<V> {
    map: HashMap<IpAddr, Entry<V>, SeededState>,
    next_sweep_ms: u64,
}

/// A seeded multiply-rotate hash for addresses (small keys, hot path).
#[derive(Debug, Clone, Copy)]
struct SeededState(u64);

#[derive(Debug)]
struct SeededHasher(u64);

impl BuildHasher for SeededState {
    type Hasher = SeededHasher;
    fn build_hasher(&self) -> SeededHasher {
        SeededHasher(self.0)
    }
}

impl Hasher for SeededHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(b))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29);
        }
    }
    fn finish(&self) -> u64 {
        mix64(self.0)
    }
}

/// The address → entry table of one service.
#[derive(Debug)]
pub(crate) struct LocalityTable<V> {
    shards: Box<[RwLock<Shard<V>>]>,
    hasher: SeededState,
    expiration_ms: u64,
}

impl<V> LocalityTable<V> {
    /// An empty table whose entries expire after `expiration_ms` unused.
    pub fn new(expiration_ms: u64) -> Self {
        let seed = RandomState::new().hash_one(0x6c62_6c63u64);
        let hasher = SeededState(seed);
        LocalityTable {
            shards: (0..SHARDS)
                .map(|_| {
                    RwLock::new(Shard {
                        map: HashMap::with_capacity_and_hasher(64, hasher),
                        next_sweep_ms: 0,
                    })
                })
                .collect(),
            hasher,
            expiration_ms,
        }
    }

    fn shard(&self, addr: &IpAddr) -> &RwLock<Shard<V>> {
        let h = self.hasher.hash_one(addr);
        &self.shards[(h >> 60) as usize & (SHARDS - 1)]
    }

    fn expired(&self, e: &Entry<V>, now_ms: u64) -> bool {
        now_ms.saturating_sub(e.lastuse.load(Ordering::Relaxed)) > self.expiration_ms
    }

    /// Runs `f` on the live entry for `addr` under the shard's read lock,
    /// marking it used at `now_ms`. `None` when absent or expired.
    pub fn read<R>(&self, addr: &IpAddr, now_ms: u64, f: impl FnOnce(&Entry<V>) -> R) -> Option<R> {
        // A poisoned lock means a closure panicked mid-read or mid-update;
        // entries stay structurally valid (HashMap is panic safe), go on.
        let shard = self.shard(addr).read().unwrap_or_else(|e| e.into_inner());
        let e = shard.map.get(addr)?;
        if self.expired(e, now_ms) {
            return None;
        }
        e.lastuse.fetch_max(now_ms, Ordering::Relaxed);
        Some(f(e))
    }

    /// Under the shard's write lock, and only if `valid()` still holds:
    /// updates the live entry for `addr` with `update`, or (absent, expired)
    /// stores `create()` — unless the shard is full. Sweeps the shard first
    /// when due.
    pub fn upsert(
        &self,
        addr: &IpAddr,
        now_ms: u64,
        valid: impl FnOnce() -> bool,
        update: impl FnOnce(&mut V),
        create: impl FnOnce() -> V,
    ) {
        let mut shard = self.shard(addr).write().unwrap_or_else(|e| e.into_inner());
        if !valid() {
            return;
        }
        if now_ms >= shard.next_sweep_ms {
            self.sweep(&mut shard, now_ms);
        }
        if let Some(e) = shard.map.get_mut(addr) {
            if self.expired(e, now_ms) {
                e.value = create();
            } else {
                update(&mut e.value);
            }
            e.lastuse.store(now_ms, Ordering::Relaxed);
            return;
        }
        if shard.map.len() < HARD_CAP / SHARDS {
            shard.map.insert(
                *addr,
                Entry {
                    value: create(),
                    lastuse: AtomicU64::new(now_ms),
                },
            );
        }
    }

    /// Runs `f` on the entry for `addr` (live or not) under the write lock.
    pub fn modify<R>(&self, addr: &IpAddr, f: impl FnOnce(&mut Entry<V>) -> R) -> Option<R> {
        let mut shard = self.shard(addr).write().unwrap_or_else(|e| e.into_inner());
        shard.map.get_mut(addr).map(f)
    }

    /// Keeps only the entries for which `keep` returns true (it may edit
    /// them). Control path: takes every shard's write lock in turn.
    pub fn retain(&self, mut keep: impl FnMut(&mut V) -> bool) {
        for s in self.shards.iter() {
            let mut shard = s.write().unwrap_or_else(|e| e.into_inner());
            shard.map.retain(|_, e| keep(&mut e.value));
        }
    }

    /// Sweeps every shard now (for an engine timer).
    pub fn expire(&self, now_ms: u64) {
        for s in self.shards.iter() {
            let mut shard = s.write().unwrap_or_else(|e| e.into_inner());
            self.sweep(&mut shard, now_ms);
        }
    }

    fn sweep(&self, shard: &mut Shard<V>, now_ms: u64) {
        shard.next_sweep_ms = now_ms.saturating_add(SWEEP_INTERVAL_MS);
        let limit = if shard.map.len() > SOFT_CAP / SHARDS {
            ENTRY_TIMEOUT_MS.min(self.expiration_ms)
        } else {
            self.expiration_ms
        };
        shard
            .map
            .retain(|_, e| now_ms.saturating_sub(e.lastuse.load(Ordering::Relaxed)) <= limit);
    }

    /// Entries currently stored (live or awaiting a sweep).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn a(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i))
    }

    #[test]
    fn insert_read_expire() {
        let t: LocalityTable<u32> = LocalityTable::new(1000);
        t.upsert(&a(1), 0, || true, |_| {}, || 7);
        assert_eq!(t.read(&a(1), 500, |e| e.value), Some(7));
        // Used at 500: still alive at 1400, gone after 2500.
        assert_eq!(t.read(&a(1), 1400, |e| e.value), Some(7));
        assert_eq!(t.read(&a(1), 2500, |e| e.value), None);
        assert_eq!(t.len(), 1);
        t.expire(2500);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn invalid_insert_is_dropped_and_cap_holds() {
        let t: LocalityTable<u32> = LocalityTable::new(DEFAULT_EXPIRATION_MS);
        t.upsert(&a(1), 0, || false, |_| {}, || 1);
        assert_eq!(t.len(), 0);
        for i in 0..(HARD_CAP as u32 + 5000) {
            t.upsert(&a(i), 0, || true, |_| {}, || i);
        }
        assert!(t.len() <= HARD_CAP);
        assert!(t.len() > HARD_CAP / 2, "shards fill evenly: {}", t.len());
    }

    #[test]
    fn pressure_sweep_drops_idle_entries() {
        let t: LocalityTable<u32> = LocalityTable::new(DEFAULT_EXPIRATION_MS);
        for i in 0..(SOFT_CAP as u32 * 2) {
            t.upsert(&a(i), 0, || true, |_| {}, || i);
        }
        t.expire(ENTRY_TIMEOUT_MS + 1);
        assert_eq!(t.len(), 0);
    }
}
