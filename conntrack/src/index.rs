//! An open-addressing (linear probing) index of 4-byte slots.
//!
//! A slot holds `tag << 24 | (slab index + 1)`; 0 is empty. The tag is the
//! top byte of the key's hash, so a probe dereferences an entry only when the
//! tag matches (1 in 256 false positives). The home slot is
//! `(hash as u32) * capacity >> 32`, so capacity need not be a power of two
//! and can be sized to the shard's expected load. Deletion shifts the rest
//! of the cluster back (no tombstones), which needs each moved slot's hash:
//! the caller recomputes it from the entry. The index never stores keys; the
//! slab entry is the key.

/// Largest slab index a slot can hold (24 bits, minus the empty marker).
pub(crate) const MAX_IDX: u32 = (1 << 24) - 2;
const IDX_MASK: u32 = (1 << 24) - 1;

/// Maximum load before growing: 13/16 ≈ 0.81.
const LOAD_NUM: usize = 13;
const LOAD_DEN: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct Index {
    slots: Box<[u32]>,
    len: usize,
}

#[inline(always)]
fn home(hash: u64, cap: usize) -> usize {
    (((hash as u32) as u64 * cap as u64) >> 32) as usize
}

#[inline(always)]
fn tag(hash: u64) -> u32 {
    ((hash >> 56) as u32) << 24
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
    /// whose tag matches. Returns (slot position, slab index).
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<(usize, u32)> {
        let cap = self.slots.len();
        if cap == 0 {
            return None;
        }
        let t = tag(hash);
        let mut pos = home(hash, cap);
        // A cluster is never the whole table (load ≤ 0.81), so this ends.
        loop {
            let s = self.slots[pos];
            if s == 0 {
                return None;
            }
            if s & !IDX_MASK == t {
                let idx = (s & IDX_MASK) - 1;
                if eq(idx) {
                    return Some((pos, idx));
                }
            }
            pos += 1;
            if pos == cap {
                pos = 0;
            }
        }
    }

    /// True when one more key would exceed the load limit.
    pub(crate) fn needs_grow(&self) -> bool {
        (self.len + 1) * LOAD_DEN > self.slots.len() * LOAD_NUM
    }

    /// Inserts a key known to be absent. The caller grows first when
    /// [`Index::needs_grow`] says so.
    #[inline]
    pub(crate) fn insert(&mut self, hash: u64, idx: u32) {
        debug_assert!(idx <= MAX_IDX);
        debug_assert!(!self.needs_grow());
        let cap = self.slots.len();
        let mut pos = home(hash, cap);
        while self.slots[pos] != 0 {
            pos += 1;
            if pos == cap {
                pos = 0;
            }
        }
        self.slots[pos] = tag(hash) | (idx + 1);
        self.len += 1;
    }

    /// Removes the slot at `pos` and shifts the rest of its cluster back.
    /// `hash_of(idx)` returns the hash of the key of slab entry `idx`.
    pub(crate) fn remove_at(&mut self, pos: usize, mut hash_of: impl FnMut(u32) -> u64) {
        let cap = self.slots.len();
        let mut hole = pos;
        let mut j = pos;
        loop {
            j += 1;
            if j == cap {
                j = 0;
            }
            let s = self.slots[j];
            if s == 0 {
                break;
            }
            let k = home(hash_of((s & IDX_MASK) - 1), cap);
            // The slot at j may move into the hole only if its home is not
            // cyclically inside (hole, j].
            let stays = if hole <= j {
                hole < k && k <= j
            } else {
                hole < k || k <= j
            };
            if !stays {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = 0;
        self.len -= 1;
    }

    /// Rebuilds with room for at least `n` keys from `(hash, idx)` pairs.
    pub(crate) fn rebuild(&mut self, n: usize, keys: impl Iterator<Item = (u64, u32)>) {
        *self = Index::with_capacity(n);
        for (h, i) in keys {
            self.insert(h, i);
        }
    }

    /// Capacity that the next growth should provide for `len` keys.
    pub(crate) fn grown_capacity(&self) -> usize {
        (self.len * 2).max(16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn h(k: u64) -> u64 {
        // Deliberately weak in the low bits to create clusters.
        k.wrapping_mul(0x9E37_79B9_7F4A_7C15) & 0xFF00_0000_0000_00FF
    }

    #[test]
    fn insert_find_remove_matches_model() {
        let mut ix = Index::with_capacity(64);
        // slab index -> key
        let mut keys: HashMap<u32, u64> = HashMap::new();
        let mut state = 12345u64;
        for step in 0..20_000u32 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = (state >> 33) % 200;
            let found = ix.find(h(k), |i| keys[&i] == k);
            let present = keys.iter().find(|(_, &v)| v == k).map(|(&i, _)| i);
            assert_eq!(found.map(|f| f.1), present, "step {step}");
            if let Some((pos, i)) = found {
                let snapshot = keys.clone();
                ix.remove_at(pos, |j| h(snapshot[&j]));
                keys.remove(&i);
            } else {
                let idx = (0..).find(|i| !keys.contains_key(i)).unwrap_or(0);
                if ix.needs_grow() {
                    let n = ix.grown_capacity();
                    ix.rebuild(n, keys.iter().map(|(&i, &k)| (h(k), i)));
                }
                ix.insert(h(k), idx);
                keys.insert(idx, k);
            }
            assert_eq!(ix.len(), keys.len());
        }
        for (&i, &k) in &keys {
            assert_eq!(ix.find(h(k), |j| keys[&j] == k).map(|f| f.1), Some(i));
        }
    }
}
