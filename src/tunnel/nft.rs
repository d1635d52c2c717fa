//! The endpoint's kernel guard: the `netdev uvs_tun` nf_tables table, made
//! and changed over netlink ([`crate::sys::nftnl`]; no `nft` process).
//!
//! Like the director's guard, the table carries `NFT_TABLE_F_OWNER` and
//! belongs to the socket this guard keeps, so the kernel deletes it when
//! the endpoint ends, however it ends. Address changes send only the
//! addresses that came or went, in one transaction.

use std::net::IpAddr;

use crate::sys::guard::{self, GuardError};
use crate::sys::nftnl::{
    Base, Batch, Expr, Ingress, KeyType, NftSock, OwnedTable, SetRef, NFPROTO_NETDEV,
    NFT_TABLE_F_OWNER, R1,
};

use super::{LocalAddrs, TABLE};

/// The `netdev uvs_tun` table; dropping it removes the table.
#[derive(Debug)]
pub struct TunnelGuard {
    /// Owns the table (the only socket that may change it).
    table: OwnedTable,
    /// The addresses the sets hold.
    local: LocalAddrs,
}

/// Removes a `netdev uvs_tun` table left by an endpoint that did not own
/// it (an owned one dies with its owner).
pub fn remove_stale() -> Result<(), GuardError> {
    guard::remove_table(TABLE)
}

fn addrs(l: &LocalAddrs) -> impl Iterator<Item = IpAddr> + '_ {
    l.v4.iter()
        .map(|a| IpAddr::V4(*a))
        .chain(l.v6.iter().map(|a| IpAddr::V6(*a)))
}

/// Adds (`add`) or deletes `which` in the address sets.
fn change(b: &mut Batch, add: bool, which: impl Iterator<Item = IpAddr>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for a in which {
        match a {
            IpAddr::V4(a) => v4.push(a.octets().to_vec()),
            IpAddr::V6(a) => v6.push(a.octets().to_vec()),
        }
    }
    for (set, keys) in [("local4", v4), ("local6", v6)] {
        if !keys.is_empty() {
            b.elems(TABLE, &SetRef::named(set), add, &keys);
        }
    }
}

impl TunnelGuard {
    /// Replaces any unowned table with one hooked on `devices` that drops
    /// outer tunnel packets (protocols 4, 41, 47 and UDP to `gue_ports`)
    /// addressed to `local`; in `nft`'s terms, per family:
    ///
    /// ```text
    /// ip daddr @local4 meta l4proto { 4, 41, 47 } counter drop
    /// ip daddr @local4 udp dport { GUE ports } counter drop
    /// ```
    pub fn install(
        devices: &[String],
        gue_ports: &[u16],
        local: &LocalAddrs,
    ) -> Result<TunnelGuard, GuardError> {
        let mut b = Batch::new(NFPROTO_NETDEV);
        b.add_table(TABLE, None);
        b.del_table(TABLE);
        b.add_table(TABLE, Some(NFT_TABLE_F_OWNER));
        b.add_set(TABLE, "local4", &[KeyType::Ipv4Addr]);
        b.add_set(TABLE, "local6", &[KeyType::Ipv6Addr]);
        let protos: Vec<Vec<u8>> = [4u8, 41, 47].iter().map(|p| vec![*p]).collect();
        let ports: Vec<Vec<u8>> = gue_ports.iter().map(|p| p.to_be_bytes().to_vec()).collect();
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
            for (v6, set) in [(false, "local4"), (true, "local6")] {
                let to_local = {
                    let mut r = guard::l3(v6).to_vec();
                    r.push(guard::load_addr(v6, false));
                    r.push(Expr::Lookup {
                        set: SetRef::named(set),
                        sreg: R1,
                    });
                    r
                };
                let anon = b.anon_set(TABLE, KeyType::InetProto, &protos);
                let mut r = to_local.clone();
                r.extend([
                    Expr::Meta {
                        key: crate::sys::nftnl::MetaKey::L4Proto,
                        dreg: R1,
                    },
                    Expr::Lookup {
                        set: anon,
                        sreg: R1,
                    },
                    Expr::Counter,
                    Expr::Drop,
                ]);
                b.add_rule(TABLE, &chain, &r);
                if !ports.is_empty() {
                    let anon = b.anon_set(TABLE, KeyType::InetService, &ports);
                    let mut r = to_local;
                    r.extend(guard::l4proto_is(17));
                    r.extend([
                        Expr::Payload {
                            base: Base::Transport,
                            offset: 2,
                            len: 2,
                            dreg: R1,
                        },
                        Expr::Lookup {
                            set: anon,
                            sreg: R1,
                        },
                        Expr::Counter,
                        Expr::Drop,
                    ]);
                    b.add_rule(TABLE, &chain, &r);
                }
            }
        }
        change(&mut b, true, addrs(local));
        let mut sock = NftSock::open()?;
        sock.commit(&b)
            .map_err(|e| GuardError::on_table(TABLE, e))?;
        Ok(TunnelGuard {
            table: OwnedTable::new(TABLE, sock),
            local: local.clone(),
        })
    }

    /// Brings the address sets to `local`: deletes the addresses that went
    /// and adds those that came, in one transaction.
    pub fn update(&mut self, local: &LocalAddrs) -> Result<(), GuardError> {
        let mut b = Batch::new(NFPROTO_NETDEV);
        change(
            &mut b,
            false,
            addrs(&self.local).filter(|a| !local.contains(*a)),
        );
        change(
            &mut b,
            true,
            addrs(local).filter(|a| !self.local.contains(*a)),
        );
        self.table.sock().commit(&b)?;
        self.local = local.clone();
        Ok(())
    }

    /// Removes the table now (also done on drop).
    pub fn remove(&mut self) -> Result<(), GuardError> {
        Ok(self.table.remove()?)
    }
}
