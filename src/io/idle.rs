//! When a worker whose sources ran dry sleeps: at once, after a fixed spin
//! (`--busy-poll`), or after an adaptive spin (`--idle-spin`); by default at
//! once.
//!
//! A sleeping worker costs one sleep and one wake-up per packet in serial
//! traffic (a request, its answer, the next request): an `epoll_wait`, a
//! context switch, and for the sender an inter-processor wake-up, which on
//! a VM is the largest part of a lone packet's cost through uvs. When the
//! next packet comes within a few tens of microseconds — the real server's
//! answer to what the worker just forwarded — spinning for it is cheaper
//! than that cycle.
//!
//! The adaptive spin follows the idea of the kernel's guest halt-polling:
//! * it spins only after a round that found packets, for at most the
//!   current *window*;
//! * a wake-up from sleep that came within the ceiling (`max`) after the
//!   worker went idle means the window was too short: it grows to cover
//!   that gap (at least doubling, from [`GROW_START`]);
//! * an idle period longer than the ceiling means spinning is useless for
//!   this traffic: the window halves, down to 0 (sleep at once);
//! * a spin that finds itself descheduled (two consecutive checks further
//!   apart than [`PREEMPTED`]) means another task wanted this core: the
//!   spin stops at once and the window halves, so uvs does not keep taking
//!   the core from the servers and clients that share the machine.
//!
//! So a flood never spins (it never runs dry), an idle or slow trickle
//! never spins (its gaps exceed the ceiling), and only traffic whose gaps
//! are shorter than the ceiling pays CPU for them, bounded by `max` per
//! idle period. Time is the caller's (nanoseconds on any monotonic clock):
//! the policy is pure and has no I/O.

/// Where a grown window starts.
pub const GROW_START: u64 = 10_000;
/// A gap between two checks of one spin longer than this means the worker
/// was descheduled while spinning.
pub const PREEMPTED: u64 = 50_000;

/// The spin-or-sleep policy of one worker.
#[derive(Debug, Clone)]
pub struct Idle {
    /// Ceiling of the window in ns; 0: never spin.
    max: u64,
    /// Whether the window adapts (`--idle-spin`) or stays `max`
    /// (`--busy-poll`).
    adaptive: bool,
    /// How long the next idle period spins, in ns.
    window: u64,
    /// When the sources were first found empty after the last packet.
    since: Option<u64>,
    /// The previous check of this idle period.
    last: u64,
}

impl Idle {
    /// Never spins: sleeps as soon as the sources are empty.
    pub fn off() -> Self {
        Idle::fixed(0)
    }

    /// Spins `max_ns` after the last packet, every time (`--busy-poll`).
    pub fn fixed(max_ns: u64) -> Self {
        Idle {
            max: max_ns,
            adaptive: false,
            window: max_ns,
            since: None,
            last: 0,
        }
    }

    /// Spins at most `max_ns`, as long as recent gaps were that short
    /// (`--idle-spin`); starts by sleeping at once.
    pub fn adaptive(max_ns: u64) -> Self {
        Idle {
            max: max_ns,
            adaptive: true,
            window: 0,
            since: None,
            last: 0,
        }
    }

    /// Whether this is the fixed spin of `--busy-poll`.
    pub fn is_fixed(&self) -> bool {
        !self.adaptive && self.max > 0
    }

    /// The current window in ns.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// A round found packets.
    pub fn busy(&mut self) {
        self.since = None;
    }

    /// The sources are empty at `now`: whether to poll them again (spin)
    /// rather than sleep.
    pub fn spin(&mut self, now: u64) -> bool {
        if self.window == 0 {
            self.since.get_or_insert(now);
            return false;
        }
        let since = match self.since {
            Some(s) => s,
            None => {
                self.since = Some(now);
                self.last = now;
                return true;
            }
        };
        let gap = now.saturating_sub(self.last);
        self.last = now;
        if self.adaptive && gap > PREEMPTED {
            self.shrink();
            return false;
        }
        now.saturating_sub(since) < self.window
    }

    /// The worker woke from sleep at `now` (for a packet, a waker or the
    /// poll timeout).
    pub fn woke(&mut self, now: u64) {
        let Some(since) = self.since.take() else {
            return;
        };
        if !self.adaptive {
            return;
        }
        let idle = now.saturating_sub(since);
        if idle <= self.max {
            // Slept, though the next packet came soon enough to spin for.
            let want = (idle + idle / 4).max(self.window * 2).max(GROW_START);
            self.window = want.min(self.max);
        } else {
            self.shrink();
        }
    }

    fn shrink(&mut self) {
        self.window /= 2;
        if self.window < GROW_START / 2 {
            self.window = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1_000;

    /// One idle period: empty checks every `step` ns from `start` until the
    /// policy says sleep or `arrive` (a packet) comes; returns whether it
    /// slept, and wakes it at `arrive` if so.
    fn period(p: &mut Idle, start: u64, step: u64, arrive: u64) -> bool {
        let mut t = start;
        while t < arrive {
            if !p.spin(t) {
                p.woke(arrive);
                p.busy();
                return true;
            }
            t += step;
        }
        p.busy();
        false
    }

    #[test]
    fn off_never_spins() {
        let mut p = Idle::off();
        for k in 0..10 {
            assert!(period(&mut p, k * 1000 * US, US, k * 1000 * US + 20 * US));
        }
        assert_eq!(p.window(), 0);
    }

    #[test]
    fn short_gaps_grow_the_window_until_the_spin_catches_them() {
        let mut p = Idle::adaptive(50 * US);
        let mut t = 0;
        let mut slept = Vec::new();
        for _ in 0..5 {
            slept.push(period(&mut p, t, US, t + 20 * US));
            t += 100 * US;
        }
        // The first gap is slept through; the window then covers 20 µs.
        assert_eq!(slept, [true, false, false, false, false]);
        assert!(p.window() >= 20 * US && p.window() <= 50 * US);
    }

    #[test]
    fn the_window_never_exceeds_the_ceiling() {
        let mut p = Idle::adaptive(50 * US);
        let mut t = 0;
        for _ in 0..20 {
            period(&mut p, t, US, t + 45 * US);
            t += 100 * US;
        }
        assert!(p.window() <= 50 * US);
    }

    #[test]
    fn long_gaps_shrink_the_window_to_nothing() {
        let mut p = Idle::adaptive(50 * US);
        let mut t = 0;
        for _ in 0..3 {
            period(&mut p, t, US, t + 30 * US);
            t += 100 * US;
        }
        assert!(p.window() > 0);
        // A trickle: a packet every 10 ms.
        for _ in 0..6 {
            assert!(period(&mut p, t, US, t + 10_000 * US));
            t += 20_000 * US;
        }
        assert_eq!(p.window(), 0, "spinning stops for gaps above the ceiling");
    }

    #[test]
    fn being_descheduled_while_spinning_stops_the_spin_and_halves_the_window() {
        let mut p = Idle::adaptive(50 * US);
        let mut t = 0;
        for _ in 0..4 {
            period(&mut p, t, US, t + 40 * US);
            t += 100 * US;
        }
        let w = p.window();
        assert!(w >= 40 * US);
        assert!(p.spin(t), "spins first");
        assert!(!p.spin(t + PREEMPTED + US), "a long gap between checks");
        assert_eq!(p.window(), w / 2);
    }

    #[test]
    fn fixed_spins_its_whole_budget_and_never_adapts() {
        let mut p = Idle::fixed(100 * US);
        assert!(p.is_fixed());
        assert!(!period(&mut p, 0, US, 80 * US), "caught by the spin");
        assert!(period(&mut p, 1000 * US, US, 10_000_000 * US));
        assert_eq!(p.window(), 100 * US);
        // A descheduled fixed spin keeps spinning (dedicated-core mode).
        assert!(p.spin(0) && p.spin(PREEMPTED + US));
    }
}
