//! Helpers for the unit tests: destinations with given weights, keys, and
//! pick sequences written as destination indices.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::{Dest, FwdMethod, SchedKey, Scheduler};

/// Destinations 203.0.113.(i+1):80 with the given weights.
pub fn dests(weights: &[u32]) -> Vec<Arc<Dest>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            Arc::new(Dest::new(
                IpAddr::V4(Ipv4Addr::new(203, 0, 113, i as u8 + 1)),
                80,
                w,
                FwdMethod::Masq,
            ))
        })
        .collect()
}

/// A key from client 198.51.100.x (x from `client`) to 192.0.2.10:80.
pub fn key(client: u32) -> SchedKey {
    SchedKey {
        proto: 6,
        src: IpAddr::V4(Ipv4Addr::from(0xc633_6400 | (client & 0xff))),
        sport: 40000 + (client >> 8) as u16,
        dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        dport: 80,
        now_ms: 0,
    }
}

/// Index of `d` in `all`.
pub fn index_of(all: &[Arc<Dest>], d: &Arc<Dest>) -> usize {
    all.iter()
        .position(|x| Arc::ptr_eq(x, d))
        .expect("scheduler returned a destination it was never given")
}

/// `n` picks written as a string of indices into `all` (`-` for none).
pub fn pick_names(s: &dyn Scheduler, all: &[Arc<Dest>], n: usize) -> String {
    (0..n)
        .map(|_| match s.schedule(&key(1)) {
            Some(d) => char::from_digit(index_of(all, &d) as u32, 36).unwrap_or('?'),
            None => '-',
        })
        .collect()
}

/// Marks `d` overloaded through the threshold rule (`-x 1`, one connection).
pub fn overload(d: &Dest) {
    d.set_thresholds(1, 0);
    d.conn_bound(true);
    assert!(d.is_overloaded());
}
