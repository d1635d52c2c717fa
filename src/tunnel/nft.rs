//! The endpoint's kernel guard: the `netdev uvs_tun` nftables table (moved
//! out of `mod.rs` unchanged).

use crate::sys::guard::{self, GuardError};

use super::{LocalAddrs, TABLE};

/// The `netdev uvs_tun` table; dropping it removes the table.
#[derive(Debug)]
pub struct TunnelGuard {
    installed: bool,
}

/// Removes a `netdev uvs_tun` table left by an endpoint that did not exit
/// cleanly.
pub fn remove_stale() -> Result<(), GuardError> {
    guard::nft(&format!(
        "add table netdev {TABLE}\ndelete table netdev {TABLE}\n"
    ))
}

impl TunnelGuard {
    /// Replaces any existing table with one hooked on `devices` that drops
    /// outer tunnel packets (protocols 4, 41, 47 and UDP to `gue_ports`)
    /// addressed to `local`.
    pub fn install(
        devices: &[String],
        gue_ports: &[u16],
        local: &LocalAddrs,
    ) -> Result<TunnelGuard, GuardError> {
        let mut s = format!(
            "add table netdev {TABLE}\ndelete table netdev {TABLE}\ntable netdev {TABLE} {{\n"
        );
        s += "  set local4 { type ipv4_addr; }\n  set local6 { type ipv6_addr; }\n";
        let ports = gue_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        for (i, dev) in devices.iter().enumerate() {
            s += &format!(
                "  chain in{i} {{\n    type filter hook ingress device \"{dev}\" priority -500; policy accept;\n"
            );
            for (ip, set) in [("ip", "local4"), ("ip6", "local6")] {
                s += &format!("    {ip} daddr @{set} meta l4proto {{ 4, 41, 47 }} counter drop\n");
                if !ports.is_empty() {
                    s += &format!("    {ip} daddr @{set} udp dport {{ {ports} }} counter drop\n");
                }
            }
            s += "  }\n";
        }
        s += "}\n";
        s += &Self::elements(local);
        guard::nft(&s)?;
        Ok(TunnelGuard { installed: true })
    }

    fn elements(local: &LocalAddrs) -> String {
        let mut s = format!("flush set netdev {TABLE} local4\nflush set netdev {TABLE} local6\n");
        let join = |v: Vec<String>| v.join(", ");
        if !local.v4.is_empty() {
            let e = join(local.v4.iter().map(|a| a.to_string()).collect());
            s += &format!("add element netdev {TABLE} local4 {{ {e} }}\n");
        }
        if !local.v6.is_empty() {
            let e = join(local.v6.iter().map(|a| a.to_string()).collect());
            s += &format!("add element netdev {TABLE} local6 {{ {e} }}\n");
        }
        s
    }

    /// Replaces the address sets (one transaction).
    pub fn update(&self, local: &LocalAddrs) -> Result<(), GuardError> {
        guard::nft(&Self::elements(local))
    }

    /// Removes the table now (also done on drop).
    pub fn remove(&mut self) -> Result<(), GuardError> {
        if std::mem::take(&mut self.installed) {
            guard::nft(&format!("delete table netdev {TABLE}\n"))?;
        }
        Ok(())
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("uvs tunnel-endpoint: removing nftables table netdev {TABLE}: {e}");
        }
    }
}
