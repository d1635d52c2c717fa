//! Who may send the endpoint tunnel packets, and which inner packets it
//! hands to the stack: the outer source must be one of the configured
//! directors (`--director`, or every host with `--any-director`), the inner
//! destination an address of this host (a VIP on `lo`), and the inner
//! source neither an address of this host nor a martian (zero network,
//! loopback, multicast, broadcast/class E; IPv6 unspecified, loopback,
//! multicast, link-local, v4-mapped). Without these checks anyone who can
//! reach the host could make its stack answer any address, or answer
//! itself, from inside a tunnel; each refusal has its own counter.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{DropReason, LocalAddrs};

/// The hosts whose tunnel packets are decapsulated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directors {
    /// Every host (`--any-director`).
    Any,
    /// Only these outer source addresses (a handful: a linear scan).
    Only(Vec<IpAddr>),
}

impl Directors {
    /// Whether `src` may send tunnel packets here.
    pub fn admits(&self, src: IpAddr) -> bool {
        match self {
            Directors::Any => true,
            Directors::Only(v) => v.contains(&src),
        }
    }
}

/// A source address no real client can have.
pub fn martian(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => {
            let o = a.octets();
            o[0] == 0 || a.is_loopback() || a.is_multicast() || o[0] >= 240
        }
        IpAddr::V6(a) => {
            a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || (a.segments()[0] & 0xffc0) == 0xfe80
                || a.to_ipv4_mapped().is_some()
        }
    }
}

/// The source and destination of the IP packet `p` (version from its
/// first nibble), if its header is there.
fn inner_addrs(p: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let a = |i: usize| Ipv4Addr::new(p[i], p[i + 1], p[i + 2], p[i + 3]);
            Some((a(12).into(), a(16).into()))
        }
        6 if p.len() >= 40 => {
            let a = |i: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&p[i..i + 16]);
                Ipv6Addr::from(b)
            };
            Some((a(8).into(), a(24).into()))
        }
        _ => None,
    }
}

/// Why the inner packet `p` must not reach the stack, if it must not.
pub fn refuse_inner(p: &[u8], local: &LocalAddrs) -> Option<DropReason> {
    let Some((src, dst)) = inner_addrs(p) else {
        return Some(DropReason::BadInner);
    };
    if !local.contains(dst) {
        Some(DropReason::InnerDstNotLocal)
    } else if martian(src) {
        Some(DropReason::InnerSrcMartian)
    } else if local.contains(src) {
        Some(DropReason::InnerSrcLocal)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn martians() {
        for a in [
            "0.1.2.3",
            "127.0.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "ff02::1",
            "fe80::1",
            "::ffff:198.51.100.1",
        ] {
            assert!(martian(ip(a)), "{a}");
        }
        for a in ["198.51.100.10", "2001:db8:c::10", "10.0.0.1"] {
            assert!(!martian(ip(a)), "{a}");
        }
    }

    #[test]
    fn directors_admit_only_theirs() {
        let d = Directors::Only(vec![ip("203.0.113.1")]);
        assert!(d.admits(ip("203.0.113.1")));
        assert!(!d.admits(ip("203.0.113.2")));
        assert!(Directors::Any.admits(ip("203.0.113.2")));
    }

    #[test]
    fn inner_checks() {
        let local = LocalAddrs::new([ip("203.0.113.11"), ip("192.0.2.10")]);
        let v4 = |src: [u8; 4], dst: [u8; 4]| {
            let mut p = vec![0x45u8; 20];
            p[12..16].copy_from_slice(&src);
            p[16..20].copy_from_slice(&dst);
            p
        };
        assert_eq!(
            refuse_inner(&v4([198, 51, 100, 10], [192, 0, 2, 10]), &local),
            None
        );
        assert_eq!(
            refuse_inner(&v4([198, 51, 100, 10], [192, 0, 2, 99]), &local),
            Some(DropReason::InnerDstNotLocal)
        );
        assert_eq!(
            refuse_inner(&v4([127, 0, 0, 1], [192, 0, 2, 10]), &local),
            Some(DropReason::InnerSrcMartian)
        );
        assert_eq!(
            refuse_inner(&v4([203, 0, 113, 11], [192, 0, 2, 10]), &local),
            Some(DropReason::InnerSrcLocal)
        );
        assert_eq!(refuse_inner(&[0x45, 0], &local), Some(DropReason::BadInner));
    }
}
