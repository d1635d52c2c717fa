//! `mh`: Maglev hashing (`ip_vs_mh.c`; Eisenbud et al., NSDI 2016, §3.4).
//!
//! Each server gets a permutation of the lookup table's slots from two
//! hashes of its address and port (`offset`, `skip`; the table size is prime
//! so every skip visits every slot). The table is filled in rounds: each
//! server, in list order, claims its next preferred free slots — as many per
//! round as its weight's share (`weight / gcd`, scaled down by a shift when
//! the largest share would exceed about √size, at least one). Equal weights
//! give slot counts that differ by at most one; removing one of N servers
//! moves little more than its own 1/N of the slots.
//!
//! A connection's slot is a hash of its source address (plus the source port
//! with `mh-port`). The server must be schedulable; otherwise the pick fails,
//! or with `mh-fallback` the key is re-hashed with successive salts until a
//! schedulable server turns up — deterministic per key, spreading a down
//! server's clients over the others. O(1) per pick.
//!
//! As the kernel's `last_weight`, a server edited to weight 0 keeps its
//! slots (built from its last non-zero weight): quiescing a server does not
//! remap anybody else's clients, and its own come back when it returns.
//!
//! The hash keys are constants so that directors configured alike build the
//! same table and agree on every client. The hash itself is this crate's
//! (not the kernel's siphash), so slots differ from a kernel's.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::common::{gcd, hash_addr_port, mix64, reduce};
use crate::flags::SchedFlags;
use crate::{Dest, SchedError, SchedKey, SchedParams, Scheduler};

/// The table sizes the kernel offers (`CONFIG_IP_VS_MH_TAB_INDEX` 8..17).
pub const MH_PRIMES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];
/// The kernel's default table size.
pub const MH_DEFAULT_SIZE: u32 = 4093;

const KEY_OFFSET: u64 = 0x2f0b_3c6d_9e37_79b9;
const KEY_SKIP: u64 = 0x7a3d_1c0f_85eb_ca77;
const KEY_LOOKUP: u64 = 0x51ed_27c3_c2b2_ae35;
/// Slot value of an empty table.
const NO_DEST: u32 = u32::MAX;
/// Fallback probes before checking whether any server is schedulable.
const PROBES_BEFORE_CHECK: usize = 32;

/// The published lookup table.
#[derive(Debug)]
struct MhState {
    dests: Box<[Arc<Dest>]>,
    /// Index into `dests` per slot; empty when no server has weight.
    lookup: Box<[u32]>,
}

impl MhState {
    /// Builds the table for `dests` with effective weights `weights`.
    fn build(dests: &[Arc<Dest>], weights: &[u32], size: u32) -> Self {
        let active: Vec<usize> = (0..dests.len()).filter(|&i| weights[i] > 0).collect();
        let mut lookup = Vec::new();
        if !active.is_empty() {
            let g = active.iter().map(|&i| weights[i]).fold(0, gcd);
            let max_share = active.iter().map(|&i| weights[i] / g).max().unwrap_or(1);
            let tab_bits = (31 - size.leading_zeros()) / 2;
            let shift = (32 - max_share.leading_zeros()).saturating_sub(tab_bits);
            let m = size as usize;
            let mut turns = vec![0u32; dests.len()];
            let mut next = vec![0usize; dests.len()];
            let mut skip = vec![0usize; dests.len()];
            for &i in &active {
                let d = &dests[i];
                turns[i] = ((weights[i] / g) >> shift).max(1);
                next[i] = reduce(hash_addr_port(&d.addr, d.port, KEY_OFFSET), size);
                skip[i] = reduce(hash_addr_port(&d.addr, d.port, KEY_SKIP), size - 1) + 1;
            }
            lookup = vec![NO_DEST; m];
            let mut filled = 0;
            'fill: loop {
                for &i in &active {
                    for _ in 0..turns[i] {
                        let mut c = next[i];
                        while lookup[c] != NO_DEST {
                            c += skip[i];
                            if c >= m {
                                c -= m;
                            }
                        }
                        lookup[c] = i as u32;
                        next[i] = c;
                        filled += 1;
                        if filled == m {
                            break 'fill;
                        }
                    }
                }
            }
        }
        MhState {
            dests: dests.to_vec().into_boxed_slice(),
            lookup: lookup.into_boxed_slice(),
        }
    }
}

/// Maglev-hashing scheduler.
#[derive(Debug)]
pub struct Mh {
    state: ArcSwap<MhState>,
    size: u32,
    fallback: bool,
    port: bool,
    /// Each current server's last non-zero weight (control path only).
    last_weights: Mutex<Vec<(Arc<Dest>, u32)>>,
}

impl Mh {
    /// Registry constructor: accepts `mh-fallback`, `mh-port` (or `flag-1`,
    /// `flag-2`) and a table size from [`MH_PRIMES`].
    pub fn create(
        params: &SchedParams,
        dests: &[Arc<Dest>],
    ) -> Result<Box<dyn Scheduler>, SchedError> {
        let flags = SchedFlags::parse("mh", &params.flags)?;
        let size = params.mh_table_size.unwrap_or(MH_DEFAULT_SIZE);
        if !MH_PRIMES.contains(&size) {
            return Err(SchedError::BadParam {
                sched: "mh",
                msg: format!("table size {size} is not one of {MH_PRIMES:?}"),
            });
        }
        Ok(Box::new(Mh::new(dests, flags, size)))
    }

    /// A Maglev scheduler; `size` must be one of [`MH_PRIMES`] (any prime
    /// works; [`Mh::create`] enforces the kernel's list).
    pub fn new(dests: &[Arc<Dest>], flags: SchedFlags, size: u32) -> Self {
        let mh = Mh {
            state: ArcSwap::from_pointee(MhState::build(&[], &[], size)),
            size,
            fallback: flags.has(SchedFlags::FLAG1),
            port: flags.has(SchedFlags::FLAG2),
            last_weights: Mutex::new(Vec::new()),
        };
        mh.update(dests);
        mh
    }

    /// Slots owned by each server of the current table, in list order.
    pub fn slot_counts(&self) -> Vec<usize> {
        let st = self.state.load();
        let mut counts = vec![0; st.dests.len()];
        for &i in st.lookup.iter() {
            counts[i as usize] += 1;
        }
        counts
    }

    /// The server of every slot, in slot order (for stability tests).
    pub fn table(&self) -> Vec<Arc<Dest>> {
        let st = self.state.load();
        st.lookup
            .iter()
            .map(|&i| Arc::clone(&st.dests[i as usize]))
            .collect()
    }
}

impl Scheduler for Mh {
    fn name(&self) -> &'static str {
        "mh"
    }

    fn update(&self, dests: &[Arc<Dest>]) {
        // Poisoning only means an earlier update panicked; the list is
        // rebuilt whole below.
        let mut last = self.last_weights.lock().unwrap_or_else(|e| e.into_inner());
        let weights: Vec<u32> = dests
            .iter()
            .map(|d| match d.weight() {
                0 => last
                    .iter()
                    .find(|(p, _)| Arc::ptr_eq(p, d))
                    .map_or(0, |(_, w)| *w),
                w => w,
            })
            .collect();
        *last = dests.iter().cloned().zip(weights.iter().copied()).collect();
        self.state
            .store(Arc::new(MhState::build(dests, &weights, self.size)));
    }

    fn schedule(&self, key: &SchedKey) -> Option<Arc<Dest>> {
        let st = self.state.load();
        if st.lookup.is_empty() {
            return None;
        }
        let port = if self.port { key.sport } else { 0 };
        let ihash = reduce(hash_addr_port(&key.src, port, KEY_LOOKUP), self.size);
        let d = &st.dests[st.lookup[ihash] as usize];
        if d.can_schedule() {
            return Some(Arc::clone(d));
        }
        if !self.fallback {
            return None;
        }
        let m = self.size as usize;
        for off in 0..m {
            if off == PROBES_BEFORE_CHECK && !st.dests.iter().any(|d| d.can_schedule()) {
                return None;
            }
            let salt = mix64(((off + ihash) % m) as u64 + 1);
            let slot = reduce(hash_addr_port(&key.src, port, KEY_LOOKUP ^ salt), self.size);
            let d = &st.dests[st.lookup[slot] as usize];
            if d.can_schedule() {
                return Some(Arc::clone(d));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{dests, index_of, key};

    #[test]
    fn equal_weights_differ_by_at_most_one() {
        for n in [1usize, 2, 3, 7, 10, 64] {
            let ds = dests(&vec![1; n]);
            let mh = Mh::new(&ds, SchedFlags::default(), MH_DEFAULT_SIZE);
            let c = mh.slot_counts();
            let (lo, hi) = (c.iter().min().unwrap(), c.iter().max().unwrap());
            assert!(hi - lo <= 1, "n={n}: {c:?}");
            assert_eq!(c.iter().sum::<usize>(), MH_DEFAULT_SIZE as usize);
        }
    }

    #[test]
    fn weights_share_the_table() {
        let ds = dests(&[1, 2, 3]);
        let mh = Mh::new(&ds, SchedFlags::default(), MH_DEFAULT_SIZE);
        let c = mh.slot_counts();
        // 4093 / 6 = 682.2 per weight unit; one round hands out 6 slots.
        for (i, w) in [1usize, 2, 3].iter().enumerate() {
            let want = 4093.0 * *w as f64 / 6.0;
            assert!((c[i] as f64 - want).abs() <= 6.0, "{c:?}");
        }
    }

    #[test]
    fn quiesced_server_keeps_its_slots() {
        let ds = dests(&[1, 1, 1]);
        let mh = Mh::new(&ds, SchedFlags::default(), 251);
        let before = mh.slot_counts();
        ds[1].set_weight(0);
        mh.update(&ds);
        assert_eq!(mh.slot_counts(), before);
        let k = (0..1000)
            .map(key)
            .find(|k| {
                let st = mh.state.load();
                let ih = reduce(hash_addr_port(&k.src, 0, KEY_LOOKUP), 251);
                st.lookup[ih] == 1
            })
            .unwrap();
        assert!(mh.schedule(&k).is_none());
        ds[1].set_weight(1);
        mh.update(&ds);
        assert_eq!(index_of(&ds, &mh.schedule(&k).unwrap()), 1);
    }

    #[test]
    fn bad_table_size_rejected() {
        let p = SchedParams {
            flags: vec![],
            mh_table_size: Some(4096),
        };
        assert!(matches!(
            Mh::create(&p, &[]),
            Err(SchedError::BadParam { sched: "mh", .. })
        ));
        let p = SchedParams {
            flags: vec!["mh-port".into()],
            mh_table_size: Some(131071),
        };
        assert!(Mh::create(&p, &[]).is_ok());
    }
}
