//! The ICMP error rate limit: like the kernel's global one
//! (`icmp_msgs_per_sec` 1000, `icmp_msgs_burst` 50), per worker, so a flood
//! at a dead service or an oversized-packet stream cannot make uvs answer
//! every packet. Time is the caller's (milliseconds).

/// A token bucket refilled by elapsed milliseconds.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: u32,
    last_ms: u64,
}

impl TokenBucket {
    /// Tokens gained per second.
    pub const PER_SEC: u32 = 1000;
    /// Most tokens held.
    pub const BURST: u32 = 50;

    /// A full bucket at `now_ms`.
    pub fn new(now_ms: u64) -> TokenBucket {
        TokenBucket {
            tokens: Self::BURST,
            last_ms: now_ms,
        }
    }

    /// Takes a token if one is left (refilled by the time since the last
    /// refill).
    pub fn take(&mut self, now_ms: u64) -> bool {
        let gained = now_ms.saturating_sub(self.last_ms) * u64::from(Self::PER_SEC) / 1000;
        if gained > 0 {
            self.tokens = (u64::from(self.tokens) + gained).min(u64::from(Self::BURST)) as u32;
            self.last_ms = now_ms;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = TokenBucket::new(1_000);
        assert_eq!((0..100).filter(|_| b.take(1_000)).count(), 50, "the burst");
        assert!(!b.take(1_000));
        // 10 ms later: 10 more at 1000/s.
        assert_eq!((0..100).filter(|_| b.take(1_010)).count(), 10);
        // Long idle: back to the burst, not more.
        assert_eq!((0..100).filter(|_| b.take(6_010)).count(), 50);
        // A clock that goes back does not refill (nor panic).
        assert!(!b.take(0));
    }
}
