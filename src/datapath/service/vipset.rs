//! The "is this address a VIP?" set of the service snapshots: one flat
//! open-addressing table, so the per-packet route decision costs one hash
//! and a probe or two whatever the number of services (the persistent
//! map's look-up grows with its depth).
//!
//! Contract:
//! * A [`VipSet`] is a view of a shared table at one *version*. Each slot
//!   holds an address, the version it was added in and the version it was
//!   removed in (0: not removed); a view sees the entries alive at its
//!   version. Readers only load (no lock, no write, no allocation).
//! * [`VipSet::update`] (control path, O(addresses changed) amortised)
//!   returns the next version's view. When its base view is the table's
//!   latest version it writes the table in place: new addresses into empty
//!   slots, removals as a version stamp, so older views keep their answers.
//!   Otherwise (a second branch from an older snapshot), and when the table
//!   is half used, or when an added address would start on a run of more
//!   than [`MAX_PROBE`] occupied slots, it builds a fresh table from the
//!   new snapshot's addresses; views of the old table keep it alive.
//! * Slots are never reused in place; a fresh table drops the dead ones.
//!
//! Memory ordering: a slot's address words are written before its
//! `born` word (Release), a removal's `dead` word is written before the
//! snapshot holding the new version is published; a reader got its view
//! through that publication (Acquire), so it sees every write its version
//! depends on. Writes of later versions are invisible to it by the version
//! compare, whether it observes them or not.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Fewest slots of a table.
const MIN_SLOTS: usize = 16;

/// Longest run of occupied slots an in-place insert may start on: dead
/// slots are not reused in place, so adding and removing one VIP again and
/// again would otherwise lengthen that VIP's probe (and every insert's)
/// until the table is half used; past this, a fresh table drops them.
const MAX_PROBE: usize = 8;

/// One entry: the address in two words, `born` = version << 1 | is_v6
/// (0: empty slot, which ends a probe), `dead` = the version it was
/// removed in (0: alive).
#[derive(Debug, Default)]
struct Slot {
    hi: AtomicU64,
    lo: AtomicU64,
    born: AtomicU64,
    dead: AtomicU64,
}

#[derive(Debug)]
struct Table {
    slots: Box<[Slot]>,
    mask: usize,
    /// 64 - log2(slots): a hash's top bits index the table.
    shift: u32,
    seed: u64,
    /// The latest version written and the number of used slots (dead ones
    /// included); the writers' lock.
    writer: Mutex<Writer>,
}

#[derive(Debug)]
struct Writer {
    latest: u64,
    used: usize,
}

/// A view of the VIP table at one version.
#[derive(Debug, Clone)]
pub(crate) struct VipSet {
    table: Arc<Table>,
    version: u64,
}

impl Default for VipSet {
    fn default() -> Self {
        VipSet::build(std::iter::empty(), 0)
    }
}

/// An address as two words and its family bit.
#[inline(always)]
fn key(addr: IpAddr) -> (u64, u64, u64) {
    match addr {
        IpAddr::V4(a) => (0, u32::from(a) as u64, 0),
        IpAddr::V6(a) => {
            let b = u128::from(a);
            ((b >> 64) as u64, b as u64, 1)
        }
    }
}

impl Table {
    fn with_slots(n: usize, seed: u64) -> Table {
        let n = n.next_power_of_two().max(MIN_SLOTS);
        Table {
            slots: (0..n).map(|_| Slot::default()).collect(),
            mask: n - 1,
            shift: 64 - n.trailing_zeros(),
            seed,
            writer: Mutex::new(Writer { latest: 0, used: 0 }),
        }
    }

    #[inline(always)]
    fn home(&self, hi: u64, lo: u64) -> usize {
        // Fibonacci hashing: the product's top bits, so consecutive
        // addresses (ClusterIPs) spread over the table; the seed varies it
        // per process. The table's contents are the configuration's, so
        // no packet can lengthen a probe.
        let h = (lo ^ hi.rotate_left(32) ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> self.shift) as usize
    }

    /// How many occupied slots (alive or dead) an insert of `addr` would
    /// pass (writer lock held).
    fn probe_len(&self, addr: IpAddr) -> usize {
        let (hi, lo, _) = key(addr);
        let mut i = self.home(hi, lo);
        let mut n = 0;
        while n <= self.mask && self.slots[i].born.load(Ordering::Relaxed) != 0 {
            n += 1;
            i = (i + 1) & self.mask;
        }
        n
    }

    /// Writes a new alive entry (writer lock held).
    fn insert(&self, addr: IpAddr, version: u64) {
        let (hi, lo, fam) = key(addr);
        let mut i = self.home(hi, lo);
        while self.slots[i].born.load(Ordering::Relaxed) != 0 {
            i = (i + 1) & self.mask;
        }
        let s = &self.slots[i];
        s.hi.store(hi, Ordering::Relaxed);
        s.lo.store(lo, Ordering::Relaxed);
        s.born.store(version << 1 | fam, Ordering::Release);
    }

    /// Stamps the alive entry of `addr` removed at `version` (writer lock
    /// held).
    fn remove(&self, addr: IpAddr, version: u64) {
        let (hi, lo, fam) = key(addr);
        let mut i = self.home(hi, lo);
        loop {
            let s = &self.slots[i];
            let born = s.born.load(Ordering::Relaxed);
            if born == 0 {
                return;
            }
            if born & 1 == fam
                && s.hi.load(Ordering::Relaxed) == hi
                && s.lo.load(Ordering::Relaxed) == lo
                && s.dead.load(Ordering::Relaxed) == 0
            {
                s.dead.store(version, Ordering::Release);
                return;
            }
            i = (i + 1) & self.mask;
        }
    }
}

impl VipSet {
    /// A fresh table holding `addrs` (`n` of them) at version 1.
    fn build(addrs: impl Iterator<Item = IpAddr>, n: usize) -> VipSet {
        let seed = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(n);
            h.finish()
        };
        // At most a third used after a build, at most half before the next.
        let t = Table::with_slots(n * 3, seed);
        let mut used = 0;
        for a in addrs {
            t.insert(a, 1);
            used += 1;
        }
        *t.writer.lock().unwrap_or_else(|e| e.into_inner()) = Writer { latest: 1, used };
        VipSet {
            table: Arc::new(t),
            version: 1,
        }
    }

    /// Whether `addr` is in the set at this view's version.
    #[inline]
    pub(crate) fn contains(&self, addr: IpAddr) -> bool {
        let t = &*self.table;
        let (hi, lo, fam) = key(addr);
        let mut i = t.home(hi, lo);
        loop {
            let Some(s) = t.slots.get(i) else {
                return false;
            };
            let born = s.born.load(Ordering::Acquire);
            if born == 0 {
                return false;
            }
            // Of the family, born by this version (a slot written
            // concurrently is of a later one), dead 0 or after it.
            if s.lo.load(Ordering::Relaxed) == lo
                && s.hi.load(Ordering::Relaxed) == hi
                && born & 1 == fam
                && born >> 1 <= self.version
                && s.dead.load(Ordering::Acquire).wrapping_sub(1) >= self.version
            {
                return true;
            }
            i = (i + 1) & t.mask;
        }
    }

    /// The next version's view: this one with `added` (not in it) and
    /// without `removed` (in it). `all` lists the next version's addresses
    /// (`live` of them), read only when a fresh table is built.
    pub(crate) fn update<I: Iterator<Item = IpAddr>>(
        &self,
        added: &[IpAddr],
        removed: &[IpAddr],
        all: impl FnOnce() -> I,
        live: usize,
    ) -> VipSet {
        if added.is_empty() && removed.is_empty() {
            return self.clone();
        }
        let t = &self.table;
        let mut w = t.writer.lock().unwrap_or_else(|e| e.into_inner());
        let in_place = w.latest == self.version
            && (w.used + added.len()) * 2 <= t.slots.len()
            && added.iter().all(|&a| t.probe_len(a) <= MAX_PROBE);
        if !in_place {
            drop(w);
            return VipSet::build(all(), live);
        }
        let version = self.version + 1;
        for &a in removed {
            t.remove(a, version);
        }
        for &a in added {
            t.insert(a, version);
        }
        w.used += added.len();
        w.latest = version;
        VipSet {
            table: Arc::clone(t),
            version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn v4(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn views_keep_their_version_and_families_differ() {
        let a = VipSet::default();
        let b = a.update(
            &[ip("192.0.2.1"), ip("2001:db8::1")],
            &[],
            unreachable_iter,
            2,
        );
        assert!(!a.contains(ip("192.0.2.1")));
        assert!(b.contains(ip("192.0.2.1")) && b.contains(ip("2001:db8::1")));
        assert!(!b.contains(ip("::c000:201")) && !b.contains(ip("::ffff:192.0.2.1")));
        // Removed in place: the older view still has it.
        let c = b.update(&[], &[ip("192.0.2.1")], unreachable_iter, 1);
        assert!(Arc::ptr_eq(&b.table, &c.table));
        assert!(b.contains(ip("192.0.2.1")) && !c.contains(ip("192.0.2.1")));
        // Re-added: a new slot, past the dead one.
        let d = c.update(&[ip("192.0.2.1")], &[], unreachable_iter, 2);
        assert!(d.contains(ip("192.0.2.1")) && !c.contains(ip("192.0.2.1")));
        // A second branch from `b` gets a table of its own.
        let e = b.update(
            &[ip("192.0.2.9")],
            &[],
            || [ip("192.0.2.1"), ip("2001:db8::1"), ip("192.0.2.9")].into_iter(),
            3,
        );
        assert!(!Arc::ptr_eq(&b.table, &e.table));
        assert!(e.contains(ip("192.0.2.9")) && !d.contains(ip("192.0.2.9")));
        assert!(d.contains(ip("2001:db8::1")) && e.contains(ip("192.0.2.1")));
    }

    #[test]
    fn cycling_one_vip_keeps_its_probe_short() {
        let others: Vec<IpAddr> = (0..1000).map(v4).collect();
        let list = others.clone();
        let mut s = VipSet::default().update(&others, &[], move || list.into_iter(), 1000);
        let a = ip("192.0.2.77");
        for _ in 0..500 {
            let list = others.clone();
            s = s.update(&[a], &[], move || list.into_iter().chain([a]), 1001);
            assert!(s.contains(a));
            let list = others.clone();
            s = s.update(&[], &[a], move || list.into_iter(), 1000);
            assert!(!s.contains(a));
            let t = &s.table;
            let _w = t.writer.lock().unwrap();
            // Bounded (without the MAX_PROBE rule it grows by one per
            // cycle, to 500 here): at most MAX_PROBE passed by the last
            // in-place insert, plus its own slot and its neighbours'.
            assert!(t.probe_len(a) <= 2 * MAX_PROBE, "probe {}", t.probe_len(a));
        }
        assert!(others.iter().all(|&o| s.contains(o)));
    }

    fn unreachable_iter() -> std::iter::Empty<IpAddr> {
        panic!("no fresh table expected")
    }

    #[test]
    fn growth_builds_a_fresh_table_with_every_live_address() {
        let mut s = VipSet::default();
        let mut live = Vec::new();
        for i in 0..5000 {
            let all = live.clone();
            let a = v4(i);
            live.push(a);
            s = s.update(
                &[a],
                &[],
                move || all.into_iter().chain([a]),
                i as usize + 1,
            );
            if i % 3 == 0 {
                let r = live.remove(live.len() / 2);
                let all = live.clone();
                s = s.update(&[], &[r], move || all.into_iter(), live.len());
                assert!(!s.contains(r));
            }
        }
        assert!(live.iter().all(|&a| s.contains(a)));
        assert!(!s.contains(v4(5000)) && !s.contains(ip("198.51.100.1")));
        assert!(s.table.slots.len() <= 4 * 16384);
    }
}
