//! Pieces every scheduler shares: the connection overhead formulas, the
//! immutable destination snapshot that `update()` publishes, and parameter
//! checks for schedulers that take no flags.
//!
//! Contract: a [`Snapshot`] is built on the control path (it may allocate)
//! and published with an `ArcSwap`; workers only `load()` it, which neither
//! allocates nor locks, and read live weight, counts and flags from the
//! `Dest` atomics.

use std::sync::Arc;

use crate::flags::SchedFlags;
use crate::{Dest, SchedError, SchedParams};

/// The kernel's `ip_vs_dest_conn_overhead`: active connections weigh 256
/// times an inactive one (an active connection costs the server far more
/// than one lingering in TIME_WAIT).
#[inline]
pub(crate) fn conn_overhead(d: &Dest) -> u64 {
    ((d.active_conns() as u64) << 8) + d.inactive_conns() as u64
}

/// `a_over / a_weight > b_over / b_weight`, without division (the kernel
/// compares `a_over * b_weight > b_over * a_weight`). u64 × u32 never
/// overflows u128.
#[inline]
pub(crate) fn ratio_greater(a_over: u64, a_weight: u32, b_over: u64, b_weight: u32) -> bool {
    (a_over as u128) * (b_weight as u128) > (b_over as u128) * (a_weight as u128)
}

/// The destination list of one service as `update()` last saw it, in the
/// order given (the kernel's `svc->destinations` list order).
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub dests: Box<[Arc<Dest>]>,
}

impl Snapshot {
    /// Copies the caller's list (control path).
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        Snapshot {
            dests: dests.to_vec().into_boxed_slice(),
        }
    }
}

/// Parses `-b` flags for a scheduler that gives them no meaning: only the
/// generic `flag-1..3` are accepted (ipvsadm passes them through), anything
/// else is an error; an mh table size is an error too.
pub(crate) fn plain_params(sched: &'static str, params: &SchedParams) -> Result<(), SchedError> {
    SchedFlags::parse(sched, &params.flags)?;
    if params.mh_table_size.is_some() {
        return Err(SchedError::BadParam {
            sched,
            msg: "a table size applies only to mh".to_string(),
        });
    }
    Ok(())
}

/// Greatest common divisor (Euclid).
pub(crate) fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcd_basics() {
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(7, 0), 7);
        assert_eq!(gcd(0, 5), 5);
    }

    #[test]
    fn ratio_compares_like_division() {
        assert!(ratio_greater(3, 1, 5, 2)); // 3 > 2.5
        assert!(!ratio_greater(5, 2, 3, 1));
        assert!(!ratio_greater(4, 2, 2, 1)); // equal
        assert!(ratio_greater(u64::MAX, u32::MAX, u64::MAX - 1, u32::MAX));
    }
}
