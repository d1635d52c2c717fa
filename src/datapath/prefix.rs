//! An address prefix (`ADDR[/LEN]`), as the filter table, the emulated
//! tables and `uvs trace` match packets against it: one type, one parser,
//! one match.

use std::fmt;
use std::net::IpAddr;

/// An address with a prefix length (a host: `/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

/// Why `ADDR[/LEN]` text is not a prefix (callers word the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixError {
    /// The address part is no IP address.
    Address(String),
    /// The length is no number, or beyond the family's bits (`max`).
    Length { len: String, max: u8 },
}

impl Prefix {
    /// Parses `ADDR` (a host) or `ADDR/LEN`.
    pub fn parse(s: &str) -> Result<Prefix, PrefixError> {
        let (a, l) = s.split_once('/').map_or((s, None), |(a, l)| (a, Some(l)));
        let addr: IpAddr = a.parse().map_err(|_| PrefixError::Address(a.to_string()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len =
            match l {
                None => max,
                Some(l) => l.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(|| {
                    PrefixError::Length {
                        len: l.to_string(),
                        max,
                    }
                })?,
            };
        Ok(Prefix { addr, len })
    }

    /// Does `a` fall in the prefix (same family only)?
    pub fn contains(&self, a: IpAddr) -> bool {
        match (self.addr, a) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let m = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(p) & m == u32::from(a) & m
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let m = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(p) & m == u128::from(a) & m
            }
            _ => false,
        }
    }

    /// A single host (`/32`, `/128`).
    pub fn is_host(&self) -> bool {
        self.len == if self.addr.is_ipv4() { 32 } else { 128 }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let p = Prefix::parse("192.0.2.0/24").unwrap();
        assert!(p.contains("192.0.2.77".parse().unwrap()));
        assert!(!p.contains("192.0.3.1".parse().unwrap()));
        assert!(!p.contains("2001:db8::1".parse().unwrap()));
        assert!(Prefix::parse("0.0.0.0/0")
            .unwrap()
            .contains("198.51.100.1".parse().unwrap()));
        assert!(Prefix::parse("2001:db8::1").unwrap().is_host());
        assert_eq!(
            Prefix::parse("192.0.2.1/33"),
            Err(PrefixError::Length {
                len: "33".into(),
                max: 32
            })
        );
        assert_eq!(
            Prefix::parse("host"),
            Err(PrefixError::Address("host".into()))
        );
        assert_eq!(
            Prefix::parse("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
    }
}
