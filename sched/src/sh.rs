//! `sh`: source hashing (`ip_vs_sh.c`).
//!
//! A static 256-bucket table tiled by weight: walking the buckets, each
//! server in list order takes as many consecutive buckets as its weight
//! (at least one), cycling until the table is full. A connection's bucket is
//! `hash_32(sport + fold(saddr), 8)` — the kernel's golden-ratio
//! multiplicative hash, top 8 bits — with the port 0 unless `sh-port`.
//!
//! The bucket's server must be schedulable; otherwise the pick fails, or with
//! `sh-fallback` walks the table from there (the kernel's probe order: the
//! `i`-th retry looks at bucket `i + 2 × bucket`) to the first schedulable
//! one, so a client keeps its server while it is up and all clients of a
//! down server spread over the others. O(1) per pick.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::common::fold_addr;
use crate::flags::SchedFlags;
use crate::{Dest, SchedError, SchedKey, SchedParams, Scheduler};

/// Buckets in the table (`IP_VS_SH_TAB_SIZE`).
pub const SH_TAB_SIZE: usize = 256;
const SH_TAB_BITS: u32 = 8;
/// The kernel's `GOLDEN_RATIO_32`.
const GOLDEN_RATIO_32: u32 = 0x61c8_8647;

/// The published table.
#[derive(Debug)]
struct ShState {
    dests: Box<[Arc<Dest>]>,
    /// Index into `dests` per bucket; empty when there are no servers.
    buckets: Box<[u32]>,
}

impl ShState {
    fn build(dests: &[Arc<Dest>]) -> Self {
        let mut buckets = Vec::new();
        if !dests.is_empty() {
            buckets.reserve_exact(SH_TAB_SIZE);
            let (mut di, mut taken) = (0usize, 0u32);
            while buckets.len() < SH_TAB_SIZE {
                buckets.push(di as u32);
                taken += 1;
                if taken >= dests[di].weight() {
                    di = (di + 1) % dests.len();
                    taken = 0;
                }
            }
        }
        ShState {
            dests: dests.to_vec().into_boxed_slice(),
            buckets: buckets.into_boxed_slice(),
        }
    }
}

/// The kernel's `ip_vs_sh_hashkey` with offset 0.
fn sh_hash(key: &SchedKey, use_port: bool) -> usize {
    let port = if use_port { key.sport as u32 } else { 0 };
    let v = port.wrapping_add(fold_addr(&key.src));
    (v.wrapping_mul(GOLDEN_RATIO_32) >> (32 - SH_TAB_BITS)) as usize
}

/// Source-hashing scheduler.
#[derive(Debug)]
pub struct Sh {
    state: ArcSwap<ShState>,
    fallback: bool,
    port: bool,
}

impl Sh {
    /// Registry constructor: accepts `sh-fallback`, `sh-port` (or
    /// `flag-1`, `flag-2`).
    pub fn create(
        params: &SchedParams,
        dests: &[Arc<Dest>],
    ) -> Result<Box<dyn Scheduler>, SchedError> {
        let flags = SchedFlags::parse("sh", &params.flags)?;
        if params.mh_table_size.is_some() {
            return Err(SchedError::BadParam {
                sched: "sh",
                msg: "a table size applies only to mh".to_string(),
            });
        }
        Ok(Box::new(Sh::new(dests, flags)))
    }

    /// A source-hashing scheduler over `dests` with `flags`.
    pub fn new(dests: &[Arc<Dest>], flags: SchedFlags) -> Self {
        Sh {
            state: ArcSwap::from_pointee(ShState::build(dests)),
            fallback: flags.has(SchedFlags::FLAG1),
            port: flags.has(SchedFlags::FLAG2),
        }
    }
}

impl Scheduler for Sh {
    fn name(&self) -> &'static str {
        "sh"
    }

    fn update(&self, dests: &[Arc<Dest>]) {
        self.state.store(Arc::new(ShState::build(dests)));
    }

    fn schedule(&self, key: &SchedKey) -> Option<Arc<Dest>> {
        let st = self.state.load();
        if st.buckets.is_empty() {
            return None;
        }
        let ihash = sh_hash(key, self.port);
        let d = &st.dests[st.buckets[ihash] as usize];
        if d.can_schedule() {
            return Some(Arc::clone(d));
        }
        if !self.fallback {
            return None;
        }
        (0..SH_TAB_SIZE)
            .map(|off| &st.dests[st.buckets[(off + 2 * ihash) % SH_TAB_SIZE] as usize])
            .find(|d| d.can_schedule())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{dests, index_of, key};

    #[test]
    fn table_is_tiled_by_weight() {
        let ds = dests(&[1, 2, 0, 3]);
        let s = Sh::new(&ds, SchedFlags::default());
        let st = s.state.load();
        // Weight 0 still takes one bucket (its clients get no server).
        assert_eq!(&st.buckets[..8], &[0, 1, 1, 2, 3, 3, 3, 0]);
    }

    #[test]
    fn same_source_same_server_and_port_flag() {
        let ds = dests(&[1, 1, 1, 1]);
        let plain = Sh::new(&ds, SchedFlags::default());
        let k = key(42);
        let first = index_of(&ds, &plain.schedule(&k).unwrap());
        for p in 0..100 {
            let k = SchedKey { sport: p, ..k };
            assert_eq!(index_of(&ds, &plain.schedule(&k).unwrap()), first);
        }
        let port = Sh::new(&ds, SchedFlags::from_bits(SchedFlags::FLAG2));
        let seen: std::collections::HashSet<usize> = (0..100)
            .map(|p| index_of(&ds, &port.schedule(&SchedKey { sport: p, ..k }).unwrap()))
            .collect();
        assert!(seen.len() > 1, "sh-port spreads one client's ports");
    }

    #[test]
    fn fallback_routes_around_a_down_server() {
        let ds = dests(&[1, 1, 1]);
        let strict = Sh::new(&ds, SchedFlags::default());
        let fb = Sh::new(&ds, SchedFlags::from_bits(SchedFlags::FLAG1));
        let k = key(7);
        let home = strict.schedule(&k).unwrap();
        home.set_weight(0);
        assert!(strict.schedule(&k).is_none());
        let other = fb.schedule(&k).unwrap();
        assert!(!Arc::ptr_eq(&other, &home));
        // Stable while the membership stays the same.
        for _ in 0..10 {
            assert!(Arc::ptr_eq(&fb.schedule(&k).unwrap(), &other));
        }
        // Back up: the client returns home.
        home.set_weight(1);
        assert!(Arc::ptr_eq(&fb.schedule(&k).unwrap(), &home));
        for d in &ds {
            d.set_weight(0);
        }
        assert!(fb.schedule(&k).is_none());
    }

    #[test]
    fn kernel_hash_value() {
        // 198.51.100.1 = 0xc6336401; hash_32(v, 8) = (v × 0x61c88647) >> 24.
        let k = key(1);
        let want = (0xc633_6401u32.wrapping_mul(0x61c8_8647) >> 24) as usize;
        assert_eq!(sh_hash(&k, false), want);
    }
}
