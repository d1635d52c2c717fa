//! `dh`: destination hashing (`ip_vs_dh.c`).
//!
//! A static 256-bucket table, filled by cycling through the destination list
//! (weights are not used, as in the kernel). The bucket of a connection is
//! the multiplicative hash of its destination address:
//! `(fold(daddr) × 2654435761) mod 2^32`, low 8 bits. When the bucket's
//! server is unavailable (overloaded, weight 0) the pick fails: dh has no
//! fallback. O(1) per pick.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::common::{fold_addr, plain_params};
use crate::{Dest, SchedError, SchedKey, SchedParams, Scheduler};

/// Buckets in the table (`IP_VS_DH_TAB_SIZE`).
pub const DH_TAB_SIZE: usize = 256;

/// The published table.
#[derive(Debug)]
struct DhState {
    dests: Box<[Arc<Dest>]>,
    /// Index into `dests` per bucket; empty when there are no servers.
    buckets: Box<[u32]>,
}

impl DhState {
    fn build(dests: &[Arc<Dest>]) -> Self {
        let buckets = if dests.is_empty() {
            Box::default()
        } else {
            (0..DH_TAB_SIZE).map(|i| (i % dests.len()) as u32).collect()
        };
        DhState {
            dests: dests.to_vec().into_boxed_slice(),
            buckets,
        }
    }
}

/// The bucket of a destination address.
pub fn dh_bucket(key: &SchedKey) -> usize {
    (fold_addr(&key.dst).wrapping_mul(2_654_435_761) as usize) & (DH_TAB_SIZE - 1)
}

/// Destination-hashing scheduler.
#[derive(Debug)]
pub struct Dh {
    state: ArcSwap<DhState>,
}

impl Dh {
    /// Registry constructor: `dh` takes no flags.
    pub fn create(
        params: &SchedParams,
        dests: &[Arc<Dest>],
    ) -> Result<Box<dyn Scheduler>, SchedError> {
        plain_params("dh", params)?;
        Ok(Box::new(Dh::new(dests)))
    }

    /// A destination-hashing scheduler over `dests`.
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        Dh {
            state: ArcSwap::from_pointee(DhState::build(dests)),
        }
    }
}

impl Scheduler for Dh {
    fn name(&self) -> &'static str {
        "dh"
    }

    fn update(&self, dests: &[Arc<Dest>]) {
        self.state.store(Arc::new(DhState::build(dests)));
    }

    fn schedule(&self, key: &SchedKey) -> Option<Arc<Dest>> {
        let st = self.state.load();
        let i = *st.buckets.get(dh_bucket(key))? as usize;
        let d = &st.dests[i];
        d.can_schedule().then(|| Arc::clone(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{dests, index_of, key};
    use std::net::{IpAddr, Ipv4Addr};

    fn to(dst: [u8; 4]) -> SchedKey {
        SchedKey {
            dst: IpAddr::V4(Ipv4Addr::from(dst)),
            ..key(1)
        }
    }

    #[test]
    fn same_destination_same_server_whatever_the_source() {
        let ds = dests(&[1, 1, 1]);
        let s = Dh::new(&ds);
        let k = to([192, 0, 2, 77]);
        let first = index_of(&ds, &s.schedule(&k).unwrap());
        for c in 0..50 {
            let k = SchedKey {
                src: key(c).src,
                sport: 1000 + c as u16,
                ..k
            };
            assert_eq!(index_of(&ds, &s.schedule(&k).unwrap()), first);
        }
    }

    #[test]
    fn buckets_cycle_through_the_list() {
        let ds = dests(&[1, 5, 0]);
        let s = Dh::new(&ds);
        let st = s.state.load();
        assert_eq!(&st.buckets[..6], &[0, 1, 2, 0, 1, 2]);
        // Known bucket: 192.0.2.1 = 0xc0000201; × 2654435761 mod 256 = 0x01 × 0xb1 & 0xff.
        let b = dh_bucket(&to([192, 0, 2, 1]));
        assert_eq!(
            b,
            (0xc000_0201u32.wrapping_mul(2_654_435_761) & 0xff) as usize
        );
    }

    #[test]
    fn unavailable_bucket_fails_without_fallback() {
        let ds = dests(&[1, 1]);
        let s = Dh::new(&ds);
        let k = to([192, 0, 2, 9]);
        let d = s.schedule(&k).unwrap();
        d.set_weight(0);
        assert!(s.schedule(&k).is_none());
        assert!(Dh::new(&[]).schedule(&k).is_none());
    }
}
