//! An open-addressing Robin Hood index of 4-byte slots.
//!
//! A slot holds `disp << 27 | tag << 22 | (slab index + 1)`; 0 is empty.
//! `disp` (5 bits) is the slot's distance from its key's home slot, `tag`
//! (5 bits) the top of the key's hash, and the slab index has 22 bits. The
//! home slot is `(hash as u32) * capacity >> 32`, so capacity need not be a
//! power of two and can be sized to the shard's expected load.
//!
//! Robin Hood order (a key never sits further from home than the keys it
//! passed) gives three properties the table relies on:
//! * a probe derefs an entry only when the slot has the same home *and* the
//!   same tag, so a lookup costs about one entry access, hit or miss;
//! * a miss stops as soon as it meets a slot closer to its home than the
//!   probe is to its own;
//! * deletion shifts the rest of the cluster back one slot using `disp`
//!   alone, without touching any entry (no tombstones, no rehash).
//!
//! A displacement above 31 or a load above 13/16 makes the caller grow the
//! index (rebuild from the slab); with a seeded hash neither happens before
//! the load limit in practice.
//!
//! The index never stores keys; the slab entry is the key.

const IDX_MASK: u32 = (1 << 22) - 1;
const TAG_MASK: u32 = 0x1f << 22;
const DISP_SHIFT: u32 = 27;
const DISP_ONE: u32 = 1 << DISP_SHIFT;
const MAX_DISP: u32 = 31;

/// Maximum load before growing: 13/16 ≈ 0.81.
const LOAD_NUM: usize = 13;
const LOAD_DEN: usize = 16;

/// Where a probe for an absent key stopped: the slot a Robin Hood insert of
/// that key reaches after the same walk (its position, and the key's
/// distance from home there). Valid only while the index is unchanged.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vacancy {
    pos: usize,
    d: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    slots: Box<[u32]>,
    len: usize,
    /// Keys the load limit allows (`capacity × 13/16`, rounded down), kept
    /// so that the check before each insert is one compare.
    limit: usize,
}

#[inline(always)]
fn home(hash: u64, cap: usize) -> usize {
    (((hash as u32) as u64 * cap as u64) >> 32) as usize
}

#[inline(always)]
fn tag(hash: u64) -> u32 {
    ((hash >> 59) as u32) << 22
}

#[inline(always)]
fn disp(s: u32) -> u32 {
    s >> DISP_SHIFT
}

impl Index {
    /// An index able to hold `n` keys without growing.
    pub(crate) fn with_capacity(n: usize) -> Self {
        let cap = if n == 0 {
            0
        } else {
            (n * LOAD_DEN / LOAD_NUM).max(8) + 1
        };
        Index {
            slots: vec![0u32; cap].into_boxed_slice(),
            len: 0,
            limit: cap * LOAD_NUM / LOAD_DEN,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of slot memory held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.len() * 4
    }

    /// Finds the slab index whose key matches; `eq` is called only for slots
    /// with the same home and tag. Returns (slot position, slab index).
    /// [`Index::probe`]'s walk, its vacancy dropped (inlined, so a lookup
    /// computes none).
    #[inline(always)]
    pub(crate) fn find(&self, hash: u64, eq: impl FnMut(u32) -> bool) -> Option<(usize, u32)> {
        self.probe(hash, eq).ok()
    }

    /// The one lookup walk: finds the key as [`Index::find`] does and, on a
    /// miss, says where it would go: `Err(Some(vacancy))` for
    /// [`Index::insert_from`], so that a new key's check and its insert
    /// walk the cluster once; `Err(None)` when the index has no slots or
    /// the probe ran out of displacement (an insert would fail there too).
    #[inline(always)]
    pub(crate) fn probe(
        &self,
        hash: u64,
        mut eq: impl FnMut(u32) -> bool,
    ) -> Result<(usize, u32), Option<Vacancy>> {
        let cap = self.slots.len();
        if cap == 0 {
            return Err(None);
        }
        let t = tag(hash);
        let mut pos = home(hash, cap);
        let mut d = 0u32;
        loop {
            let s = self.slots[pos];
            // Empty, or a key closer to its home than we are to ours: the
            // key would have been placed before it. That stop is also the
            // place condition of `insert`: the walks agree up to here.
            if s == 0 || disp(s) < d {
                return Err(Some(Vacancy { pos, d }));
            }
            if disp(s) == d && s & TAG_MASK == t {
                let idx = (s & IDX_MASK) - 1;
                if eq(idx) {
                    return Ok((pos, idx));
                }
            }
            d += 1;
            if d > MAX_DISP {
                return Err(None);
            }
            pos += 1;
            if pos == cap {
                pos = 0;
            }
        }
    }

    /// True when one more key would exceed the load limit.
    #[inline(always)]
    pub(crate) fn needs_grow(&self) -> bool {
        // `(len + 1) × 16 > capacity × 13` exactly, since `limit` is the
        // largest whole number of keys within it.
        self.len >= self.limit
    }

    /// At 3/4 of the load limit (and holding keys): time to grow ahead of
    /// the inserts (`Part::prepare`).
    pub(crate) fn nearly_full(&self) -> bool {
        self.len > 0 && self.len * 4 >= self.limit * 3
    }

    /// Inserts a key known to be absent. False when some key would end up
    /// more than 31 slots from home: the index is then inconsistent and the
    /// caller must rebuild it (with more room) from the slab, which still
    /// holds every key including this one.
    #[inline]
    pub(crate) fn insert(&mut self, hash: u64, idx: u32) -> bool {
        let pos = home(hash, self.slots.len());
        self.insert_from(Vacancy { pos, d: 0 }, hash, idx)
    }

    /// [`Index::insert`] resumed at `v`, the vacancy a [`Index::probe`] of
    /// the same hash found on this index, unchanged since (same result,
    /// without walking the cluster again).
    #[inline]
    pub(crate) fn insert_from(&mut self, v: Vacancy, hash: u64, idx: u32) -> bool {
        debug_assert!(idx < IDX_MASK);
        debug_assert!(!self.needs_grow());
        let cap = self.slots.len();
        let mut cur = tag(hash) | (idx + 1);
        let Vacancy { mut pos, mut d } = v;
        loop {
            let s = self.slots[pos];
            if s == 0 {
                self.slots[pos] = cur | d << DISP_SHIFT;
                self.len += 1;
                return true;
            }
            if disp(s) < d {
                // Take the slot from the richer key and carry it on.
                self.slots[pos] = cur | d << DISP_SHIFT;
                cur = s & !(MAX_DISP << DISP_SHIFT);
                d = disp(s);
            }
            d += 1;
            if d > MAX_DISP {
                return false;
            }
            pos += 1;
            if pos == cap {
                pos = 0;
            }
        }
    }

    /// Removes the slot at `pos`, shifting the rest of its cluster back.
    pub(crate) fn remove_at(&mut self, pos: usize) {
        let cap = self.slots.len();
        let mut hole = pos;
        loop {
            let mut j = hole + 1;
            if j == cap {
                j = 0;
            }
            let s = self.slots[j];
            if s == 0 || disp(s) == 0 {
                break;
            }
            self.slots[hole] = s - DISP_ONE;
            hole = j;
        }
        self.slots[hole] = 0;
        self.len -= 1;
    }

    /// Rebuilds with room for at least `n` keys from `(hash, idx)` pairs,
    /// growing further if a displacement overflows.
    #[cfg(test)]
    pub(crate) fn rebuild(&mut self, mut n: usize, keys: &[(u64, u32)]) {
        'retry: loop {
            *self = Index::with_capacity(n.max(keys.len()));
            for &(h, i) in keys {
                if !self.insert(h, i) {
                    n = n * 3 / 2 + 16;
                    continue 'retry;
                }
            }
            return;
        }
    }

    /// Capacity that the next growth should provide for `len` keys.
    pub(crate) fn grown_capacity(&self) -> usize {
        // Small indexes quadruple: a shard warming up rebuilds a third as
        // often (each rebuild rehashes every entry) for a few hundred bytes.
        let f = if self.len < 1024 { 4 } else { 2 };
        (self.len * f).max(32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn h(k: u64) -> u64 {
        // Deliberately weak in the low bits to create long clusters.
        k.wrapping_mul(0x9E37_79B9_7F4A_7C15) & 0xFF00_0000_0000_01FF
    }

    #[test]
    fn load_limit_is_the_exact_13_16_bound() {
        for n in 0..3000 {
            let mut ix = Index::with_capacity(n);
            for len in 0..=ix.slots.len() + 1 {
                ix.len = len;
                assert_eq!(
                    ix.needs_grow(),
                    (len + 1) * LOAD_DEN > ix.slots.len() * LOAD_NUM,
                    "capacity {} len {len}",
                    ix.slots.len()
                );
            }
        }
        assert!(Index::default().needs_grow());
    }

    #[test]
    fn insert_find_remove_matches_model() {
        let mut ix = Index::with_capacity(64);
        // slab index -> key
        let mut keys: HashMap<u32, u64> = HashMap::new();
        let mut state = 12345u64;
        for step in 0..50_000u32 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = (state >> 33) % 300;
            let found = ix.find(h(k), |i| keys[&i] == k);
            let present = keys.iter().find(|(_, &v)| v == k).map(|(&i, _)| i);
            assert_eq!(found.map(|f| f.1), present, "step {step}");
            if let Some((pos, i)) = found {
                ix.remove_at(pos);
                keys.remove(&i);
            } else {
                let idx = (0..).find(|i| !keys.contains_key(i)).unwrap_or(0);
                keys.insert(idx, k);
                let all: Vec<_> = keys.iter().map(|(&i, &k)| (h(k), i)).collect();
                if ix.needs_grow() {
                    let n = ix.grown_capacity();
                    ix.rebuild(n, &all);
                } else if !ix.insert(h(k), idx) {
                    ix.rebuild(ix.grown_capacity(), &all);
                }
            }
            assert_eq!(ix.len(), keys.len());
        }
        for (&i, &k) in &keys {
            assert_eq!(ix.find(h(k), |j| keys[&j] == k).map(|f| f.1), Some(i));
        }
    }
    /// A well-spread hash (`h` sends every key home to slot 0).
    fn hs(k: u64) -> u64 {
        (k ^ 0x5bd1_e995).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// `probe` agrees with `find`, and `insert_from` at its vacancy leaves
    /// the very slots `insert` does, through clusters, wrap-around and
    /// removals.
    #[test]
    fn probe_then_insert_from_equals_insert() {
        let mut a = Index::with_capacity(200);
        let mut b = Index::with_capacity(200);
        let mut keys: HashMap<u32, u64> = HashMap::new();
        let mut state = 99u64;
        for step in 0..20_000u32 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = (state >> 33) % 180;
            let eq = |i: u32| keys[&i] == k;
            let found = a.find(hs(k), eq);
            let probed = b.probe(hs(k), eq);
            assert_eq!(found, probed.ok(), "step {step}");
            match probed {
                Ok((pos, i)) => {
                    a.remove_at(pos);
                    b.remove_at(pos);
                    keys.remove(&i);
                }
                Err(v) => {
                    let idx = (0..).find(|i| !keys.contains_key(i)).unwrap_or(0);
                    keys.insert(idx, k);
                    let ok_a = a.insert(hs(k), idx);
                    let ok_b = match v {
                        Some(v) => b.insert_from(v, hs(k), idx),
                        None => b.insert(hs(k), idx),
                    };
                    assert_eq!(ok_a, ok_b, "step {step}");
                    if !ok_a {
                        let all: Vec<_> = keys.iter().map(|(&i, &k)| (hs(k), i)).collect();
                        a.rebuild(200, &all);
                        b.rebuild(200, &all);
                    }
                }
            }
            assert_eq!(a.slots, b.slots, "step {step}");
        }
    }
}
