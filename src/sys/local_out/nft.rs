//! The local-client guard: the `netdev uvs_lo` nf_tables table, which
//! drops at ingress, on every interface uvs attaches to, the packets
//! addressed to a local-client source address (`--local-src`). Those can
//! only be real servers' replies to the director's own clients: uvs reads
//! them from its rings, un-NATs them and writes them into the TUN device;
//! without the drop the kernel would also see them, find no socket for
//! (real server, client port) and answer with a RST.
//!
//! Like the director's guard ([`crate::sys::guard`]) the table carries
//! `NFT_TABLE_F_OWNER` and belongs to the socket kept here, so the kernel
//! deletes it when uvs ends, however it ends; a clean exit deletes it too.

use std::net::IpAddr;

use crate::sys::guard::{self, GuardError};
use crate::sys::nftnl::{
    Batch, Expr, Ingress, NftSock, OwnedTable, NFPROTO_NETDEV, NFT_TABLE_F_OWNER, R1,
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

impl LocalGuard {
    /// Replaces any unowned table with one hooked on `devices`: per
    /// address, in `nft`'s terms, `ip daddr ADDR counter drop` (`ip6` for
    /// an IPv6 one).
    pub fn install(devices: &[String], addrs: &[IpAddr]) -> Result<LocalGuard, GuardError> {
        let mut b = Batch::new(NFPROTO_NETDEV);
        b.add_table(TABLE, None);
        b.del_table(TABLE);
        b.add_table(TABLE, Some(NFT_TABLE_F_OWNER));
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
                let (v6, data) = match a {
                    IpAddr::V4(a) => (false, a.octets().to_vec()),
                    IpAddr::V6(a) => (true, a.octets().to_vec()),
                };
                let mut r = guard::l3(v6).to_vec();
                r.push(guard::load_addr(v6, false));
                r.extend([
                    Expr::Cmp {
                        sreg: R1,
                        neq: false,
                        data,
                    },
                    Expr::Counter,
                    Expr::Drop,
                ]);
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

    /// Removes the table now (also done on drop).
    pub fn remove(&mut self) -> Result<(), GuardError> {
        Ok(self.table.remove()?)
    }
}
