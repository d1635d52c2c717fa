//! Scheduler flags (`-b`), as ipvsadm parses and prints them.
//!
//! The kernel sees three bits, `IP_VS_SVC_F_SCHED1..3`. ipvsadm accepts the
//! generic names `flag-1..3` for any scheduler and the named aliases only for
//! the scheduler they belong to: `sh-fallback`/`mh-fallback` are bit 1,
//! `sh-port`/`mh-port` bit 2. Several flags may be given comma-separated.

use crate::SchedError;

/// The three scheduler flag bits of a service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SchedFlags(u8);

impl SchedFlags {
    /// `flag-1`: for sh and mh, `*-fallback` (route around an unavailable server).
    pub const FLAG1: u8 = 1;
    /// `flag-2`: for sh and mh, `*-port` (hash the source port too).
    pub const FLAG2: u8 = 2;
    /// `flag-3`: unused by every kernel scheduler.
    pub const FLAG3: u8 = 4;

    /// The raw bits.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Builds flags from raw bits (unknown bits dropped).
    pub fn from_bits(bits: u8) -> Self {
        SchedFlags(bits & (Self::FLAG1 | Self::FLAG2 | Self::FLAG3))
    }

    /// Whether `bit` is set.
    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// Parses `-b` words for scheduler `sched`. Each element may itself be a
    /// comma-separated list. Unknown words, and `sh-*`/`mh-*` words given to
    /// another scheduler, are [`SchedError::BadParam`] (ipvsadm's
    /// "incompatible scheduler flag").
    pub fn parse(sched: &'static str, words: &[String]) -> Result<Self, SchedError> {
        let mut bits = 0u8;
        for word in words.iter().flat_map(|w| w.split(',')) {
            let word = word.trim();
            let (bit, owner) = match word {
                "" => continue,
                "flag-1" => (Self::FLAG1, None),
                "flag-2" => (Self::FLAG2, None),
                "flag-3" => (Self::FLAG3, None),
                "sh-fallback" => (Self::FLAG1, Some("sh")),
                "sh-port" => (Self::FLAG2, Some("sh")),
                "mh-fallback" => (Self::FLAG1, Some("mh")),
                "mh-port" => (Self::FLAG2, Some("mh")),
                other => {
                    return Err(SchedError::BadParam {
                        sched,
                        msg: format!("invalid scheduler flag '{other}'"),
                    })
                }
            };
            if let Some(owner) = owner {
                if owner != sched {
                    return Err(SchedError::BadParam {
                        sched,
                        msg: format!("incompatible scheduler flag '{word}'"),
                    });
                }
            }
            bits |= bit;
        }
        Ok(SchedFlags(bits))
    }

    /// The names ipvsadm prints for these flags under scheduler `sched`
    /// (`sh-fallback,sh-port` for sh, `flag-1` … for others), in bit order.
    pub fn names(self, sched: &str) -> Vec<&'static str> {
        let (one, two) = match sched {
            "sh" => ("sh-fallback", "sh-port"),
            "mh" => ("mh-fallback", "mh-port"),
            _ => ("flag-1", "flag-2"),
        };
        let mut out = Vec::new();
        if self.has(Self::FLAG1) {
            out.push(one);
        }
        if self.has(Self::FLAG2) {
            out.push(two);
        }
        if self.has(Self::FLAG3) {
            out.push("flag-3");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn sh_flags_parse_and_print() {
        let f = SchedFlags::parse("sh", &words(&["sh-fallback,sh-port"])).unwrap();
        assert!(f.has(SchedFlags::FLAG1) && f.has(SchedFlags::FLAG2));
        assert_eq!(f.names("sh"), vec!["sh-fallback", "sh-port"]);
    }

    #[test]
    fn generic_flags_accepted_everywhere() {
        let f = SchedFlags::parse("rr", &words(&["flag-1", "flag-3"])).unwrap();
        assert_eq!(f.names("rr"), vec!["flag-1", "flag-3"]);
        // Generic names mean the same bits for sh.
        let f = SchedFlags::parse("sh", &words(&["flag-2"])).unwrap();
        assert_eq!(f.names("sh"), vec!["sh-port"]);
    }

    #[test]
    fn foreign_and_unknown_flags_rejected() {
        assert!(matches!(
            SchedFlags::parse("rr", &words(&["sh-port"])),
            Err(SchedError::BadParam { .. })
        ));
        assert!(matches!(
            SchedFlags::parse("sh", &words(&["mh-port"])),
            Err(SchedError::BadParam { .. })
        ));
        assert!(matches!(
            SchedFlags::parse("mh", &words(&["bogus"])),
            Err(SchedError::BadParam { .. })
        ));
    }
}
