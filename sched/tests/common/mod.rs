//! Shared helpers for the integration tests.
#![allow(dead_code)] // each test file uses a different subset

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use uvs_sched::{Dest, FwdMethod, Registry, SchedKey, SchedParams, Scheduler};

/// Destinations 203.0.113.(i+1):80 (then 203.0.114.x …) with these weights.
pub fn dests(weights: &[u32]) -> Vec<Arc<Dest>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let a = 0xcb00_7100u32 + i as u32 + 1;
            Arc::new(Dest::new(
                IpAddr::V4(Ipv4Addr::from(a)),
                80,
                w,
                FwdMethod::Masq,
            ))
        })
        .collect()
}

/// A key from `src:sport` to 192.0.2.10:80 (or `dst` when given).
pub fn key_from(src: u32, sport: u16) -> SchedKey {
    SchedKey {
        proto: 6,
        src: IpAddr::V4(Ipv4Addr::from(src)),
        sport,
        dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        dport: 80,
        now_ms: 0,
    }
}

/// Index of `d` in `all`; panics if the scheduler invented a destination.
pub fn index_of(all: &[Arc<Dest>], d: &Arc<Dest>) -> usize {
    all.iter()
        .position(|x| Arc::ptr_eq(x, d))
        .expect("picked a destination outside the list")
}

/// Builds `name` with `flags`.
pub fn build(name: &str, flags: &[&str], ds: &[Arc<Dest>]) -> Box<dyn Scheduler> {
    let params = SchedParams {
        flags: flags.iter().map(|f| f.to_string()).collect(),
        mh_table_size: None,
    };
    Registry::create(name, &params, ds).expect("scheduler builds")
}

/// A small deterministic generator (xorshift64*) for test inputs.
pub struct TestRng(pub u64);

impl TestRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

/// Checks every share `counts[i] / total` against `weights[i] / Σw` within
/// `tol` (absolute, as a fraction of all picks).
pub fn assert_shares(name: &str, counts: &[u64], weights: &[u32], tol: f64) {
    let total: u64 = counts.iter().sum();
    let wsum: u32 = weights.iter().sum();
    for (i, (&c, &w)) in counts.iter().zip(weights).enumerate() {
        let got = c as f64 / total as f64;
        let want = w as f64 / wsum as f64;
        assert!(
            (got - want).abs() <= tol,
            "{name}: server {i} got {got:.4}, want {want:.4} ± {tol} ({counts:?})"
        );
    }
}
