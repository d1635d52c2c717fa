//! How ipvsadm reads the words of its options, as C's library reads them:
//! numbers the way `strtol` does (leading blanks and a sign allowed, the
//! whole word must be the number), IPv4 addresses the way `inet_aton` does
//! (`10.1` is 10.0.0.1, `0x0a.1` too), IPv6 the way `inet_pton` does, and
//! `ADDR[:PORT]` with ipvsadm's rules: a word of digits only is no address,
//! `[V6]` must be followed by `:PORT`, a bare IPv6 address has no port.
//!
//! Names (`www:http`) are not looked up here: the daemon parses numbers
//! only. `uvsadm` replaces names by numbers before it sends a command
//! ([`super::names::resolve`]), as ipvsadm resolves them in its own process.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// What C's number readers skip first: leading blanks, then one optional
/// sign. Returns whether it was `-`, and where the digits start.
fn c_sign(b: &[u8]) -> (bool, usize) {
    let mut i = 0;
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    match b.get(i) {
        Some(b'-') => (true, i + 1),
        Some(b'+') => (false, i + 1),
        _ => (false, i),
    }
}

/// `strtol(s, &end, 10)` that must consume the whole word, as ipvsadm's
/// `string_to_number`: `None` when nothing or not everything was a number
/// or it overflows a C `long`.
pub fn c_strtol(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let (neg, mut i) = c_sign(b);
    let start = i;
    let mut v: i64 = 0;
    let mut overflow = false;
    while i < b.len() && b[i].is_ascii_digit() {
        let d = i64::from(b[i] - b'0');
        match v.checked_mul(10).and_then(|x| {
            if neg {
                x.checked_sub(d)
            } else {
                x.checked_add(d)
            }
        }) {
            Some(x) => v = x,
            None => overflow = true,
        }
        i += 1;
    }
    if i == start || i != b.len() || overflow {
        return None;
    }
    Some(v)
}

/// ipvsadm's `string_to_number`: a whole-word decimal in `min..=max`.
pub fn number_in(s: &str, min: i64, max: i64) -> Option<i64> {
    c_strtol(s).filter(|v| (min..=max).contains(v))
}

/// C's `atoi`: leading blanks, a sign, then as many digits as there are
/// (`64abc` is 64, `abc` is 0); saturates instead of wrapping.
pub fn c_atoi(s: &str) -> i64 {
    let b = s.as_bytes();
    let (neg, mut i) = c_sign(b);
    let mut v: i64 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        v = v.saturating_mul(10).saturating_add(i64::from(b[i] - b'0'));
        i += 1;
    }
    if neg {
        -v
    } else {
        v
    }
}

/// glibc's `inet_aton`: one to four parts separated by dots, each decimal,
/// octal (leading `0`) or hex (`0x`); the last part fills the remaining
/// bytes. Anything after the number must start with a blank.
pub fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let b = s.as_bytes();
    let mut parts: [u64; 4] = [0; 4];
    let mut n = 0;
    let mut i = 0;
    loop {
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        let mut base = 10;
        if b[i] == b'0' {
            base = 8;
            i += 1;
            if matches!(b.get(i), Some(b'x' | b'X')) {
                base = 16;
                i += 1;
            }
        }
        let mut v: u64 = 0;
        while let Some(&c) = b.get(i) {
            let d = match c {
                b'0'..=b'9' if base != 8 || c < b'8' => u64::from(c - b'0'),
                b'a'..=b'f' if base == 16 => u64::from(c - b'a' + 10),
                b'A'..=b'F' if base == 16 => u64::from(c - b'A' + 10),
                _ => break,
            };
            v = v * base + d;
            if v > 0xffff_ffff {
                return None;
            }
            i += 1;
        }
        if n == 4 {
            return None;
        }
        parts[n] = v;
        n += 1;
        match b.get(i) {
            Some(b'.') => i += 1,
            None => break,
            Some(&c) if is_c_space(c) => break,
            Some(_) => return None,
        }
    }
    let last = parts[n - 1];
    let head = &parts[..n - 1];
    if head.iter().any(|&p| p > 0xff) {
        return None;
    }
    let room = 32 - 8 * head.len() as u32;
    if room < 32 && last >> room != 0 {
        return None;
    }
    let mut v: u32 = 0;
    for (k, &p) in head.iter().enumerate() {
        v |= (p as u32) << (24 - 8 * k as u32);
    }
    Some(Ipv4Addr::from(v | last as u32))
}

/// `inet_pton(AF_INET6, …)`.
pub fn inet_pton6(s: &str) -> Option<Ipv6Addr> {
    s.parse().ok()
}

/// The parts of an `ADDR[:PORT]` word as ipvsadm's `parse_service` splits
/// it, before anything is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<'a> {
    /// The host part: an address text or a host name.
    pub host: &'a str,
    /// The IPv6 address, when the host part is one.
    pub v6: Option<Ipv6Addr>,
    /// The port text after the last `:`, if there was one.
    pub port: Option<&'a str>,
    /// Whether the host was written in brackets.
    pub bracketed: bool,
}

/// Splits an `ADDR[:PORT]` word; `None` where ipvsadm gives up at once
/// (digits only, `[` without `]:`).
pub fn split_service(word: &str) -> Option<Split<'_>> {
    if word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (inner, mut port, bracketed) = match word.strip_prefix('[') {
        Some(rest) => {
            let (inner, after) = rest.split_once(']')?;
            (inner, Some(after.strip_prefix(':')?), true)
        }
        None => (word, None, false),
    };
    if let Some(a) = inet_pton6(inner) {
        return Some(Split {
            host: inner,
            v6: Some(a),
            port,
            bracketed,
        });
    }
    // Not IPv6: the port is whatever follows the last ':' inside (ipvsadm
    // forgets a port after brackets here: `[192.0.2.1]:80` has none).
    let host = match inner.rsplit_once(':') {
        Some((h, p)) => {
            port = Some(p);
            h
        }
        None => {
            port = None;
            inner
        }
    };
    Some(Split {
        host,
        v6: None,
        port,
        bracketed,
    })
}

/// `ADDR[:PORT]` with numeric address and port only (the daemon's rule):
/// the address and the port if one was given; `None` for anything
/// ipvsadm would call illegal.
pub fn parse_service(word: &str) -> Option<(IpAddr, Option<u16>)> {
    let s = split_service(word)?;
    let addr = match s.v6 {
        Some(a) => IpAddr::V6(a),
        None => IpAddr::V4(inet_aton(s.host)?),
    };
    let port = match s.port {
        None => None,
        Some(p) => Some(number_in(p, 0, 65535)? as u16),
    };
    Some((addr, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtol_like_c() {
        assert_eq!(c_strtol("80"), Some(80));
        assert_eq!(c_strtol(" +80"), Some(80));
        assert_eq!(c_strtol("-0"), Some(0));
        assert_eq!(c_strtol("-5"), Some(-5));
        for bad in ["", " ", "+", "8 ", "0x10", "1.5", "99999999999999999999"] {
            assert_eq!(c_strtol(bad), None, "{bad:?}");
        }
        assert_eq!(number_in("65535", 0, 65535), Some(65535));
        assert_eq!(number_in("65536", 0, 65535), None);
    }

    #[test]
    fn atoi_like_c() {
        assert_eq!(c_atoi("64"), 64);
        assert_eq!(c_atoi("64abc"), 64);
        assert_eq!(c_atoi(" -3"), -3);
        assert_eq!(c_atoi("abc"), 0);
    }

    #[test]
    fn inet_aton_like_glibc() {
        let a = |s: &str| inet_aton(s).map(|a| a.to_string());
        assert_eq!(a("192.0.2.1").as_deref(), Some("192.0.2.1"));
        assert_eq!(a("10.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("10.1.2").as_deref(), Some("10.1.0.2"));
        assert_eq!(a("167772161").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("0x0a.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("012.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("24").as_deref(), Some("0.0.0.24"));
        assert_eq!(a("1.2.3.4 junk").as_deref(), Some("1.2.3.4"));
        for bad in [
            "",
            "1.2.3.256",
            "1.2.3.4.5",
            "1..2",
            "1.2.3.",
            "a.b.c.d",
            "08",
            "1.2.65536",
        ] {
            assert_eq!(inet_aton(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn service_words_like_ipvsadm() {
        let p = |s: &str| parse_service(s).map(|(a, p)| (a.to_string(), p));
        assert_eq!(p("192.0.2.1:80"), Some(("192.0.2.1".into(), Some(80))));
        assert_eq!(p("192.0.2.1"), Some(("192.0.2.1".into(), None)));
        assert_eq!(
            p("[2001:db8::1]:80"),
            Some(("2001:db8::1".into(), Some(80)))
        );
        assert_eq!(p("2001:db8::1"), Some(("2001:db8::1".into(), None)));
        assert_eq!(p("[192.0.2.1]:80"), Some(("192.0.2.1".into(), None)));
        assert_eq!(p("192.0.2.1:+80"), Some(("192.0.2.1".into(), Some(80))));
        for bad in [
            "80",
            "",
            "[2001:db8::1]",
            "[2001:db8::1]80",
            "[2001:db8::1",
            "192.0.2.1:",
            "192.0.2.1:65536",
            "192.0.2.1:http",
            "host:80",
        ] {
            assert_eq!(parse_service(bad), None, "{bad:?}");
        }
    }
}
