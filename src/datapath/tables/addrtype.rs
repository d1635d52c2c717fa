//! `-m addrtype [!] --src-type/--dst-type TYPE[,TYPE…]`: an address's
//! type as the kernel's routing would give it, from the director's own
//! addresses (the same list MASQUERADE uses, [`super::nat::local_nets`],
//! read when a ruleset is published, not per packet).
//!
//! Contract: LOCAL is an address of the director, BROADCAST the limited
//! broadcast or a directed broadcast of one of its IPv4 subnets,
//! MULTICAST a multicast address, UNSPEC the unspecified address, and
//! UNICAST any other. The types that need the routing table itself
//! (BLACKHOLE, UNREACHABLE, PROHIBIT, THROW, NAT, XRESOLVE, ANYCAST) and
//! `--limit-iface-in/out` are refused at load. A lookup is one hash probe.

use std::net::{IpAddr, Ipv4Addr};

use foldhash::{HashSet, HashSetExt};

use super::nat::LocalNets;

pub const UNSPEC: u16 = 1;
pub const UNICAST: u16 = 2;
pub const LOCAL: u16 = 4;
pub const BROADCAST: u16 = 8;
pub const MULTICAST: u16 = 32;

/// `TYPE[,TYPE…]` as a bit set.
pub fn parse_types(s: &str) -> Result<u16, String> {
    let mut bits = 0;
    for t in s.split(',') {
        bits |= match t {
            "UNSPEC" => UNSPEC,
            "UNICAST" => UNICAST,
            "LOCAL" => LOCAL,
            "BROADCAST" => BROADCAST,
            "MULTICAST" => MULTICAST,
            "ANYCAST" | "BLACKHOLE" | "UNREACHABLE" | "PROHIBIT" | "THROW" | "NAT" | "XRESOLVE" => {
                return Err(format!(
                    "address type {t} needs the routing table, which uvs's tables do not read (UNSPEC, UNICAST, LOCAL, BROADCAST, MULTICAST)"
                ))
            }
            t => return Err(format!("unknown address type '{t}'")),
        };
    }
    Ok(bits)
}

/// The director's addresses and its subnets' broadcast addresses, hashed.
#[derive(Debug, Clone, Default)]
pub struct LocalAddrs {
    local: HashSet<IpAddr>,
    bcast: HashSet<IpAddr>,
}

impl LocalAddrs {
    pub fn from_nets(n: &LocalNets) -> LocalAddrs {
        let mut l = LocalAddrs {
            local: HashSet::with_capacity(n.0.len()),
            bcast: HashSet::new(),
        };
        for (p, a) in &n.0 {
            l.local.insert(*a);
            if let IpAddr::V4(v4) = a {
                if p.len < 31 {
                    let host = u32::MAX >> p.len;
                    l.bcast
                        .insert(IpAddr::V4(Ipv4Addr::from(u32::from(*v4) | host)));
                }
            }
        }
        l
    }

    /// The address's type bit.
    #[inline]
    pub fn type_of(&self, a: IpAddr) -> u16 {
        if a.is_unspecified() {
            UNSPEC
        } else if a.is_multicast() {
            MULTICAST
        } else if a == IpAddr::V4(Ipv4Addr::BROADCAST) || self.bcast.contains(&a) {
            BROADCAST
        } else if self.local.contains(&a) {
            LOCAL
        } else {
            UNICAST
        }
    }
}

/// One `-m addrtype`'s options: `(negated, types)` per side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrType {
    pub src: Option<(bool, u16)>,
    pub dst: Option<(bool, u16)>,
}

impl AddrType {
    #[inline]
    pub fn test(&self, l: &LocalAddrs, src: IpAddr, dst: IpAddr) -> bool {
        let side = |m: Option<(bool, u16)>, a| m.is_none_or(|(n, t)| (l.type_of(a) & t != 0) != n);
        side(self.src, src) && side(self.dst, dst)
    }
}
