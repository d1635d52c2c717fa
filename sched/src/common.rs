//! Pieces every scheduler shares: the connection overhead formulas, the
//! immutable destination snapshot that `update()` publishes, and parameter
//! checks for schedulers that take no flags.
//!
//! Contract: a [`Snapshot`] is built on the control path (it may allocate)
//! and published with an `ArcSwap`; workers only `load()` it, which neither
//! allocates nor locks, and read live weight, counts and flags from the
//! `Dest` atomics.

use std::net::IpAddr;
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

/// The kernel's address fold for its static hashes (dh, sh): the IPv4
/// address in host order, or the four 32-bit words of an IPv6 address
/// xor-ed together.
#[inline]
pub(crate) fn fold_addr(addr: &IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => u32::from(*a),
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            w(0) ^ w(4) ^ w(8) ^ w(12)
        }
    }
}

/// splitmix64's finaliser: a bijection on u64 with full avalanche.
#[inline]
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A keyed 64-bit hash of an address and port (all 128 bits of IPv6 count).
/// Not cryptographic: the key is a constant where tables must agree across
/// directors (mh) and per table where an attacker picks the keys (lblc).
#[inline]
pub(crate) fn hash_addr_port(addr: &IpAddr, port: u16, key: u64) -> u64 {
    match addr {
        IpAddr::V4(a) => mix64(key ^ ((u32::from(*a) as u64) << 16 | port as u64)),
        IpAddr::V6(a) => {
            let v = u128::from(*a);
            let h = mix64(key ^ (v >> 64) as u64);
            let h = mix64(h ^ v as u64);
            mix64(h ^ port as u64)
        }
    }
}

/// Maps a hash uniformly onto `0..n` with a multiply instead of a division.
#[inline]
pub(crate) fn reduce(hash: u64, n: u32) -> usize {
    (((hash >> 32) * n as u64) >> 32) as usize
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
