//! The local-client guard (AF_PACKET): the `netdev uvs_lo` nf_tables
//! table, which drops at ingress, on every interface uvs attaches to, the
//! NAT real servers' replies and ICMP errors addressed to a local-client
//! source address (`--local-src`): uvs reads them from its rings, un-NATs
//! them and writes them into the TUN device; without the drop the kernel
//! would also see them, find no socket for (real server, client port) and
//! answer with a RST. Everything else addressed there stays the kernel's —
//! above all the replies of direct-routing and tunnelling real servers,
//! which come from the VIP itself and so match the local socket as they
//! are (as in the kernel's IPVS, where they bypass the director's IPVS).
//! "From a NAT real server" is the director's guard's sets
//! ([`crate::sys::guard`]: `rs`, `rsw`, `rsa` per family), kept here too,
//! element by element, from the same deltas.
//!
//! Under AF_XDP the steering program does the same (a local-client entry
//! in its map, looked up for NAT replies to local addresses) and this
//! table is not installed.
//!
//! Like the director's guard ([`crate::sys::guard`]) the table carries
//! `NFT_TABLE_F_OWNER` and belongs to the socket kept here, so the kernel
//! deletes it when uvs ends, however it ends; a clean exit deletes it too.

use std::net::IpAddr;

use crate::sys::guard::{self, Delta, Elem, GuardError};
use crate::sys::nftnl::{
    self, Batch, Expr, Ingress, KeyField, KeyType, NftSock, OwnedTable, SetChange, SetRef,
    NFPROTO_NETDEV, NFT_TABLE_F_OWNER, R1,
};

/// The table's name.
pub const TABLE: &str = "uvs_lo";

/// The installed table; dropping it removes the table.
#[derive(Debug)]
pub struct LocalGuard {
    table: OwnedTable,
}

/// Removes a `netdev uvs_lo` table nobody owns (an older uvs's).
pub fn remove_stale() -> Result<(), GuardError> {
    guard::remove_table(TABLE)
}

/// Packets the table kept from the kernel (`guard.local_reply`).
pub fn counter() -> Result<u64, GuardError> {
    Ok(NftSock::open()?
        .rule_counters(NFPROTO_NETDEV, TABLE)?
        .iter()
        .map(|r| r.packets)
        .sum())
}

/// The set `e` belongs to and its key there (NAT servers only; a
/// service's tuple is no concern of this table).
fn set_key(e: &Elem) -> Option<(String, Vec<u8>)> {
    use KeyField::{Addr, Port, Proto};
    let key = match *e {
        Elem::Service(_) => return None,
        Elem::NatServer((p, a, 0)) => nftnl::key(&[Addr(a), Proto(p)]),
        Elem::NatServer((p, a, port)) => nftnl::key(&[Addr(a), Proto(p), Port(port)]),
        Elem::NatAddr(a) => nftnl::key(&[Addr(a)]),
    };
    Some((e.set(), key))
}

/// `delta`'s NAT-server elements as set changes, one per set and direction.
fn set_changes(delta: &Delta) -> Vec<SetChange> {
    let mut out: Vec<SetChange> = Vec::new();
    for (add, elems) in [(false, &delta.del), (true, &delta.add)] {
        for (set, key) in elems.iter().filter_map(set_key) {
            match out.iter_mut().find(|c| c.add == add && c.set == set) {
                Some(c) => c.keys.push(key),
                None => out.push(SetChange {
                    add,
                    set,
                    keys: vec![key],
                }),
            }
        }
    }
    out
}

/// `ADDR` in the destination: `ip daddr ADDR` (`ip6` for IPv6).
fn to_addr(a: IpAddr) -> Vec<Expr> {
    let (v6, data) = match a {
        IpAddr::V4(a) => (false, a.octets().to_vec()),
        IpAddr::V6(a) => (true, a.octets().to_vec()),
    };
    let mut r = guard::l3(v6).to_vec();
    r.push(guard::load_addr(v6, false));
    r.push(Expr::Cmp {
        sreg: R1,
        neq: false,
        data,
    });
    r
}

impl LocalGuard {
    /// Replaces any unowned table with one hooked on `devices`, with empty
    /// sets: per address, in `nft`'s terms,
    ///
    /// ```text
    /// ip daddr ADDR ip saddr . meta l4proto . th sport @rs4 counter drop
    /// ip daddr ADDR ip saddr . meta l4proto @rsw4 counter drop
    /// ip daddr ADDR ip saddr @rsa4 meta l4proto icmp counter drop
    /// ```
    ///
    /// (`ip6`, `rs6`, `rsw6`, `rsa6`, `icmpv6` for an IPv6 one).
    pub fn install(devices: &[String], addrs: &[IpAddr]) -> Result<LocalGuard, GuardError> {
        use KeyType::{InetProto, InetService, Ipv4Addr, Ipv6Addr};
        let mut b = Batch::new(NFPROTO_NETDEV);
        b.add_table(TABLE, None);
        b.del_table(TABLE);
        b.add_table(TABLE, Some(NFT_TABLE_F_OWNER));
        for (fam, a) in [("4", Ipv4Addr), ("6", Ipv6Addr)] {
            b.add_set(TABLE, &format!("rs{fam}"), &[a, InetProto, InetService]);
            b.add_set(TABLE, &format!("rsw{fam}"), &[a, InetProto]);
            b.add_set(TABLE, &format!("rsa{fam}"), &[a]);
        }
        for (i, dev) in devices.iter().enumerate() {
            let chain = format!("in{i}");
            b.add_ingress_chain(
                TABLE,
                &Ingress {
                    name: &chain,
                    device: dev,
                    priority: -500,
                },
            );
            for a in addrs {
                let v6 = a.is_ipv6();
                let fam = if v6 { "6" } else { "4" };
                for (set, port) in [(format!("rs{fam}"), true), (format!("rsw{fam}"), false)] {
                    let mut r = to_addr(*a);
                    r.extend(guard::tuple_lookup(v6, true, port, &set));
                    r.extend([Expr::Counter, Expr::Drop]);
                    b.add_rule(TABLE, &chain, &r);
                }
                let mut r = to_addr(*a);
                r.push(guard::load_addr(v6, true));
                r.push(Expr::Lookup {
                    set: SetRef::named(&format!("rsa{fam}")),
                    sreg: R1,
                });
                r.extend(guard::l4proto_is(if v6 { 58 } else { 1 }));
                r.extend([Expr::Counter, Expr::Drop]);
                b.add_rule(TABLE, &chain, &r);
            }
        }
        let mut sock = NftSock::open()?;
        sock.commit(&b)
            .map_err(|e| GuardError::on_table(TABLE, e))?;
        Ok(LocalGuard {
            table: OwnedTable::new(TABLE, sock),
        })
    }

    /// Follows a guard delta: NAT servers in or out of the sets (services
    /// are ignored), in one transaction; nothing when none changed.
    pub fn apply(&mut self, delta: &Delta) -> Result<(), GuardError> {
        let changes = set_changes(delta);
        if changes.is_empty() {
            return Ok(());
        }
        let mut b = Batch::new(NFPROTO_NETDEV);
        b.set_changes(TABLE, &changes);
        self.table.sock().commit(&b)?;
        Ok(())
    }

    /// Removes the table now (also done on drop).
    pub fn remove(&mut self) -> Result<(), GuardError> {
        Ok(self.table.remove()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_nat_servers_make_set_changes_grouped_by_set() {
        let delta = Delta {
            add: vec![
                Elem::Service((6, ip("192.0.2.10"), 80)),
                Elem::NatServer((6, ip("203.0.113.11"), 80)),
                Elem::NatServer((6, ip("203.0.113.12"), 80)),
                Elem::NatServer((17, ip("2001:db8:5::11"), 0)),
                Elem::NatAddr(ip("203.0.113.11")),
            ],
            del: vec![Elem::NatAddr(ip("2001:db8:5::12"))],
        };
        let c = set_changes(&delta);
        let sets: Vec<(bool, &str, usize)> = c
            .iter()
            .map(|c| (c.add, c.set.as_str(), c.keys.len()))
            .collect();
        assert_eq!(
            sets,
            [
                (false, "rsa6", 1),
                (true, "rs4", 2),
                (true, "rsw6", 1),
                (true, "rsa4", 1)
            ]
        );
        assert_eq!(
            c[1].keys[0],
            nftnl::key(&[
                KeyField::Addr(ip("203.0.113.11")),
                KeyField::Proto(6),
                KeyField::Port(80)
            ])
        );
        assert!(set_changes(&Delta {
            add: vec![Elem::Service((6, ip("192.0.2.10"), 0))],
            del: vec![],
        })
        .is_empty());
    }
}
