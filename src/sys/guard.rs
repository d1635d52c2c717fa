//! Keeps the kernel's hands off the packets uvs owns.
//!
//! An AF_PACKET socket sees packets alongside the kernel, which would also
//! process them: answer a SYN to a VIP it owns with a RST, forward a NAT reply
//! a second time, or send ICMP errors. uvs installs one nftables table,
//! `netdev uvs`, with an ingress chain on each interface it attaches to
//! (ingress runs after packet taps, so uvs still sees everything) that drops
//! exactly the traffic uvs handles: packets to a service (VIP, protocol,
//! port) and NAT replies from a masqueraded real server (address, protocol,
//! port) that are not addressed to the director itself (`fib daddr type !=
//! local`: replies to the director's own connections, such as a health
//! checker's, reach its stack). The sets change with the configuration, never per packet.
//!
//! The table is replaced atomically at start (a crash leaves a stale one
//! behind: it is cleaned first) and deleted on exit, signals included.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

/// Failures talking to nftables.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// `nft` could not be run.
    #[error("cannot run nft (install the nftables package): {0}")]
    Spawn(#[from] std::io::Error),
    /// `nft` rejected the script.
    #[error("nft failed: {0}")]
    Nft(String),
}

/// A (protocol, address, port) triple; port 0 = every port of a persistent
/// port-0 service.
pub type Endpoint = (u8, IpAddr, u16);

const TABLE: &str = "uvs";

/// The installed table; dropping it removes the table.
#[derive(Debug)]
pub struct KernelGuard {
    installed: bool,
}

/// Runs `nft -f -` on `script` (one atomic transaction).
pub(crate) fn nft(script: &str) -> Result<(), GuardError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(GuardError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

fn proto(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

/// Removes a table left behind by a uvs that did not exit cleanly.
pub fn remove_stale() -> Result<(), GuardError> {
    nft(&format!(
        "add table netdev {TABLE}\ndelete table netdev {TABLE}\n"
    ))
}

impl KernelGuard {
    /// Replaces any existing `netdev uvs` table with an empty-set one hooked
    /// on `devices`.
    pub fn install(devices: &[String]) -> Result<Self, GuardError> {
        let mut s = format!(
            "add table netdev {TABLE}\ndelete table netdev {TABLE}\ntable netdev {TABLE} {{\n"
        );
        for fam in ["4", "6"] {
            let a = if fam == "4" { "ipv4_addr" } else { "ipv6_addr" };
            s += &format!("  set svc{fam} {{ type {a} . inet_proto . inet_service; }}\n");
            s += &format!("  set svcw{fam} {{ type {a} . inet_proto; }}\n");
            s += &format!("  set rs{fam} {{ type {a} . inet_proto . inet_service; }}\n");
            s += &format!("  set rsw{fam} {{ type {a} . inet_proto; }}\n");
            s += &format!("  set rsa{fam} {{ type {a}; }}\n");
        }
        for (i, dev) in devices.iter().enumerate() {
            s += &format!("  chain in{i} {{\n    type filter hook ingress device \"{dev}\" priority -500; policy accept;\n");
            for (fam, ip) in [("4", "ip"), ("6", "ip6")] {
                s += &format!("    {ip} daddr . meta l4proto . th dport @svc{fam} counter drop\n");
                s += &format!("    {ip} daddr . meta l4proto @svcw{fam} counter drop\n");
                // NAT replies go to clients; a reply addressed to the
                // director itself answers its own connection (a health
                // check, an operator's curl) and stays the kernel's.
                s += &format!("    {ip} saddr . meta l4proto . th sport @rs{fam} fib daddr type != local counter drop\n");
                s += &format!("    {ip} saddr . meta l4proto @rsw{fam} fib daddr type != local counter drop\n");
            }
            // ICMP errors from NAT real servers: uvs relays them rewritten.
            s += "    ip saddr @rsa4 icmp type { destination-unreachable, source-quench, time-exceeded, parameter-problem } fib daddr type != local counter drop\n";
            s += "    ip6 saddr @rsa6 icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } fib daddr type != local counter drop\n";
            s += "  }\n";
        }
        s += "}\n";
        nft(&s)?;
        Ok(KernelGuard { installed: true })
    }

    /// Sets the owned traffic: `services` (to the director) and
    /// `nat_servers` (NAT replies from real servers), replacing the old sets
    /// in one transaction.
    pub fn update(
        &self,
        services: &[Endpoint],
        nat_servers: &[Endpoint],
    ) -> Result<(), GuardError> {
        let mut s = String::new();
        for fam in ["4", "6"] {
            for set in ["svc", "svcw", "rs", "rsw", "rsa"] {
                s += &format!("flush set netdev {TABLE} {set}{fam}\n");
            }
        }
        let mut add = |set: &str, ep: &Endpoint| {
            let (p, a, port) = *ep;
            let fam = if a.is_ipv4() { "4" } else { "6" };
            // Port 0: every port (port-0 persistent services and their servers).
            let elem = if port == 0 {
                format!(
                    "add element netdev {TABLE} {set}w{fam} {{ {a} . {} }}\n",
                    proto(p)
                )
            } else {
                format!(
                    "add element netdev {TABLE} {set}{fam} {{ {a} . {} . {port} }}\n",
                    proto(p)
                )
            };
            s += &elem;
        };
        services.iter().for_each(|e| add("svc", e));
        nat_servers.iter().for_each(|e| add("rs", e));
        let mut addrs: Vec<IpAddr> = nat_servers.iter().map(|e| e.1).collect();
        addrs.sort();
        addrs.dedup();
        for a in addrs {
            let fam = if a.is_ipv4() { "4" } else { "6" };
            s += &format!("add element netdev {TABLE} rsa{fam} {{ {a} }}\n");
        }
        nft(&s)
    }

    /// Removes the table now (also done on drop).
    pub fn remove(&mut self) -> Result<(), GuardError> {
        if std::mem::take(&mut self.installed) {
            nft(&format!("delete table netdev {TABLE}\n"))?;
        }
        Ok(())
    }
}

impl Drop for KernelGuard {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("uvs: removing nftables table netdev {TABLE}: {e}");
        }
    }
}
