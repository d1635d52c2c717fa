//! The kernel's rate estimator (`ip_vs_est`), as arithmetic on counter
//! totals: every 2 seconds the caller hands [`Estimator::tick`] the current
//! totals; each rate is an exponentially weighted moving average of the
//! last interval's rate with weight 1/4 (`avg += (rate - avg) >> 2`).
//!
//! Facts reproduced: the averages are kept scaled, per second — connections
//! and packets by 2^10 (an interval's difference `<< 9`, i.e. /2 s × 2^10),
//! bytes by 2^5 (`<< 4`); the shift of the signed difference is arithmetic.
//! Reading rounds to nearest (`(avg + 0x1FF) >> 10`, `(avg + 0xF) >> 5`).
//! Zeroing takes the current totals as the new reference and clears the
//! averages. Cost: constant per tick, whatever the traffic.

use crate::datapath::stats::Counters;

/// The estimator's interval, milliseconds (the kernel's `2 * HZ`).
pub const INTERVAL_MS: u64 = 2_000;

/// Per-second rates as ipvsadm shows them (`--rate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

/// One service's or server's estimator state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimator {
    last: Counters,
    /// Scaled averages: cps, inpps, outpps (×2^10), inbps, outbps (×2^5).
    avg: [i64; 5],
}

/// One EWMA step: the interval's difference scaled by `shift`, then a
/// quarter of the way from the old average toward it.
fn step(avg: &mut i64, now: u64, last: u64, shift: u32) {
    let rate = (now.wrapping_sub(last) << shift) as i64;
    *avg += (rate - *avg) >> 2;
}

impl Estimator {
    /// An estimator whose reference is `totals` (a new or zeroed counter).
    pub fn new(totals: Counters) -> Estimator {
        Estimator {
            last: totals,
            avg: [0; 5],
        }
    }

    /// One 2-second interval ended with these totals.
    pub fn tick(&mut self, now: Counters) {
        let l = self.last;
        step(&mut self.avg[0], now.conns, l.conns, 9);
        step(&mut self.avg[1], now.inpkts, l.inpkts, 9);
        step(&mut self.avg[2], now.outpkts, l.outpkts, 9);
        step(&mut self.avg[3], now.inbytes, l.inbytes, 4);
        step(&mut self.avg[4], now.outbytes, l.outbytes, 4);
        self.last = now;
    }

    /// The rates, rounded as the kernel reads them.
    pub fn rates(&self) -> Rates {
        let pps = |a: i64| (a.max(0) as u64 + 0x1FF) >> 10;
        let bps = |a: i64| (a.max(0) as u64 + 0xF) >> 5;
        Rates {
            cps: pps(self.avg[0]),
            inpps: pps(self.avg[1]),
            outpps: pps(self.avg[2]),
            inbps: bps(self.avg[3]),
            outbps: bps(self.avg[4]),
        }
    }

    /// The scaled averages (tests, Prometheus gauges).
    pub fn raw(&self) -> [i64; 5] {
        self.avg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(conns: u64, pkts: u64, bytes: u64) -> Counters {
        Counters {
            conns,
            inpkts: pkts,
            outpkts: pkts / 2,
            inbytes: bytes,
            outbytes: bytes * 3,
        }
    }

    #[test]
    fn first_tick_by_hand() {
        // 1000 connections in 2 s: rate = 1000 << 9 = 512000 (500/s × 2^10);
        // avg = 0 + 512000 >> 2 = 128000, read (128000 + 511) >> 10 = 125.
        let mut e = Estimator::new(Counters::default());
        e.tick(c(1000, 4000, 100_000));
        assert_eq!(e.raw()[0], 128_000);
        // pkts: 4000 << 9 = 2048000, /4 = 512000 → 500.
        assert_eq!(e.raw()[1], 512_000);
        // bytes: 100000 << 4 = 1600000, /4 = 400000; (400000 + 15) >> 5 = 12500.
        assert_eq!(e.raw()[3], 400_000);
        let r = e.rates();
        assert_eq!((r.cps, r.inpps, r.outpps), (125, 500, 250));
        assert_eq!((r.inbps, r.outbps), (12_500, 37_500));
    }

    #[test]
    fn second_tick_and_rounding() {
        let mut e = Estimator::new(Counters::default());
        e.tick(c(1000, 0, 0));
        // Next interval again 1000: rate 512000; avg 128000 + (384000 >> 2)
        // = 224000; read (224000 + 511) >> 10 = 219 (218.75 rounds up).
        e.tick(c(2000, 0, 0));
        assert_eq!(e.raw()[0], 224_000);
        assert_eq!(e.rates().cps, 219);
        // A quiet interval: avg 224000 + (0 - 224000) >> 2 = 168000 → 164
        // (164.06 rounds down).
        e.tick(c(2000, 0, 0));
        assert_eq!(e.raw()[0], 168_000);
        assert_eq!(e.rates().cps, 164);
    }

    #[test]
    fn settles_on_a_steady_rate() {
        // 500 connections/s: after n intervals the average is
        // 500 × (1 - (3/4)^n); within 1% after 16 intervals (32 s), 90%
        // after 8 (16 s).
        let mut e = Estimator::new(Counters::default());
        let mut total = 0;
        let mut seen = Vec::new();
        for _ in 0..16 {
            total += 1000;
            e.tick(c(total, 0, 0));
            seen.push(e.rates().cps);
        }
        assert!(seen[7] >= 450, "{seen:?}");
        assert!((495..=500).contains(&seen[15]), "{seen:?}");
    }

    #[test]
    fn decay_goes_negative_difference_arithmetically() {
        // The signed difference shifts arithmetically: the average falls by
        // a quarter each quiet interval and reaches 0, never wraps.
        let mut e = Estimator::new(Counters::default());
        e.tick(c(3, 0, 0));
        for _ in 0..60 {
            e.tick(c(3, 0, 0));
        }
        assert_eq!(e.raw()[0], 0);
        assert_eq!(e.rates().cps, 0);
    }

    #[test]
    fn zeroed_reference_is_the_current_total() {
        let e = Estimator::new(c(5000, 10, 10));
        let mut e2 = e;
        e2.tick(c(5000, 10, 10));
        assert_eq!(e2.rates(), Rates::default());
    }
}
