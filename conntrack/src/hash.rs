//! The table's seeded hash.
//!
//! A folded 64×64→128-bit multiply (the construction behind wyhash and
//! foldhash) keyed with four 64-bit words derived from `Config::seed` by
//! splitmix64. It is not a cryptographic MAC, but an attacker who does not
//! know the seed cannot compute colliding tuples offline, and two directors
//! with different seeds collide differently. The index uses the top 8 bits as
//! a tag and the low 32 bits for the home slot, so both halves of the
//! product must be well mixed: every hash ends with a second fold.

/// Keys for one table (copied into each table; immutable after creation).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hasher {
    k: [u64; 4],
}

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Hasher {
    /// Derives the keys from a seed.
    pub(crate) fn new(seed: u64) -> Self {
        let mut s = seed;
        let mut k = [0u64; 4];
        for w in &mut k {
            // An all-zero key word would let one multiply operand be chosen
            // by the attacker alone; force odd words.
            *w = splitmix(&mut s) | 1;
        }
        Hasher { k }
    }

    /// Hashes one word (an IPv4 endpoint packed by the caller).
    #[inline(always)]
    pub(crate) fn hash1(&self, a: u64) -> u64 {
        fold(a ^ self.k[0], self.k[3])
    }

    /// Hashes three words (addresses packed by the caller).
    #[inline(always)]
    pub(crate) fn hash3(&self, a: u64, b: u64, c: u64) -> u64 {
        let h = fold(a ^ self.k[0], b ^ self.k[1]);
        fold(h ^ c ^ self.k[2], self.k[3])
    }

    /// Hashes five words (IPv6 tuples).
    #[inline(always)]
    pub(crate) fn hash5(&self, a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
        let h1 = fold(a ^ self.k[0], b ^ self.k[1]);
        let h2 = fold(c ^ self.k[2], d ^ self.k[3]);
        fold(h1 ^ e ^ self.k[1], h2 ^ self.k[3])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_changes_hash() {
        let a = Hasher::new(1).hash3(1, 2, 3);
        let b = Hasher::new(2).hash3(1, 2, 3);
        assert_ne!(a, b);
    }

    #[test]
    fn spreads_sequential_ports() {
        // Sequential client ports (the common case) must spread over both the
        // tag byte and the low bits.
        let h = Hasher::new(7);
        let mut tags = std::collections::HashSet::new();
        let mut lows = std::collections::HashSet::new();
        for p in 0..1024u64 {
            let x = h.hash3(0xC633_6401, p, 6);
            tags.insert(x >> 56);
            lows.insert(x & 1023);
        }
        assert!(tags.len() > 200, "tags {}", tags.len());
        assert!(lows.len() > 550, "lows {}", lows.len());
    }
}
