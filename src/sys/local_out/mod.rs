//! Local clients (`uvs run --local-src ADDR`): processes on the director
//! itself reach the VIPs and are balanced, as IPVS's LOCAL_OUT hooks
//! (`ip_vs_local_request`, `ip_vs_local_reply`) make the kernel do.
//!
//! What uvs adds to the host, and why:
//!
//! * **A TUN device `uvs-lo`** ([`crate::tunnel::TunDev`]: not persistent,
//!   so it dies with uvs's fd, however uvs ends; the routes through it and
//!   its address go with it). Packets the director's stack sends into it
//!   are read by a worker and enter the pipeline at LOCAL_OUT
//!   ([`crate::io::tun_local`]); replies for its clients are written into
//!   it, so the stack delivers them to the local socket.
//! * **The local-client source address** (`--local-src`, one per family)
//!   on `uvs-lo`, /32 or /128. Local clients' sockets bind it (the VIP
//!   routes carry it as `src`), so every reply addressed to it belongs to a
//!   local client and nothing else: uvs can take all of them from the
//!   kernel without touching the director's other traffic (a health
//!   checker's or an operator's connections to the real servers use the
//!   director's usual addresses and stay the kernel's). The kernel's IPVS
//!   uses the VIP itself, which is a local address there; under uvs a VIP
//!   must not be local (the local table would deliver it before any policy
//!   rule), hence an address of its own, which the real servers route back
//!   to the director as they do clients' addresses in NAT mode.
//! * **A policy rule per family, `iif lo lookup 30070` (preference
//!   30070)**: only packets of local origin consult table 30070; packets
//!   arriving from outside keep their normal path. The table holds one
//!   route per VIP address, `VIP dev uvs-lo src ADDR`, added when the
//!   address's first service comes and removed with its last one (a count
//!   per address: a change costs what it changes).
//! * **Claiming the replies** ([`LocalClients::claim_replies`]): NAT real
//!   servers' replies and ICMP errors to the local-client addresses are
//!   uvs's to un-NAT. Under AF_PACKET the nftables table `netdev uvs_lo`
//!   ([`nft`]) drops them at ingress, after uvs's rings saw them; under
//!   AF_XDP the steering program redirects them to uvs (a local-client
//!   entry in its map: [`Steering::add_local_client`]), and no table is
//!   installed.
//! * **`rp_filter` of `uvs-lo` set to 2 (loose)**: replies written into
//!   the TUN come from a VIP, which the main table may route elsewhere (or
//!   not at all); a strict check against the main table would drop them.
//!   It is safe: only uvs writes into `uvs-lo`, and only packets of
//!   connections its own clients opened.
//!
//! Everything is removed on exit (SIGINT/SIGTERM included). After SIGKILL
//! the kernel removes the TUN device (with its routes and address) and the
//! owned nftables table; only the policy rules outlive the process, and
//! they then point at an empty table, which routes nothing: the next start
//! deletes them before adding its own.
//!
//! Forwarding methods: all three, as with the kernel's LOCAL_OUT hooks.
//! NAT replies come from the real server and are un-NATed by uvs. Direct
//! routing and tunnelling real servers answer from the VIP itself, straight
//! to the local-client address (which they route to the director, as NAT
//! needs too): such a reply already matches the local socket, so it is
//! left to the kernel — neither claim above takes a packet from a VIP — as
//! in the kernel, where it bypasses IPVS.

mod nft;
mod route;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

pub use nft::{counter, remove_stale as remove_stale_table, LocalGuard, TABLE as NFT_TABLE};

use crate::io::tun_local::{LocalIo, LocalStats};
use crate::io::xdp::{Steering, XdpError};
use crate::sys::guard::{Delta, Elem, GuardError};
use crate::sys::netlink::{Netlink, NlError};
use crate::tunnel::{policy::martian, TunDev};

/// The TUN device's name.
pub const DEV: &str = "uvs-lo";
/// The routing table of local-origin VIP routes.
pub const ROUTE_TABLE: u32 = 30070;
/// The policy rule's preference (before `main`, 32766).
pub const RULE_PREF: u32 = 30070;

/// Why local clients could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// `--local-src` is not an address uvs can use.
    #[error("--local-src {addr}: {why}")]
    BadSource {
        /// The address given.
        addr: IpAddr,
        /// Why not.
        why: &'static str,
    },
    /// The TUN device could not be created.
    #[error("TUN device {DEV}: {0} (needs /dev/net/tun and CAP_NET_ADMIN)")]
    Tun(std::io::Error),
    /// The kernel refused an address, rule or route.
    #[error("local clients: {what}: {err}")]
    Netlink {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        err: NlError,
    },
    /// A sysctl of the device could not be written.
    #[error("sysctl {path}: {err}")]
    Sysctl {
        /// The /proc/sys path.
        path: String,
        /// The error.
        err: std::io::Error,
    },
    /// The nftables table could not be installed or changed.
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// The XDP program's map refused the local-client entries.
    #[error("local clients: {0}")]
    Xdp(#[from] XdpError),
}

/// Who keeps the local clients' replies from the kernel.
#[derive(Debug)]
pub enum Claim<'a> {
    /// AF_PACKET: the nftables table on these interfaces.
    Nft(&'a [String]),
    /// AF_XDP: the steering program's map.
    Xdp(&'a mut Steering),
}

/// Checks `--local-src` values: unicast, not martian, at most one per
/// family, not already an address of this host (uvs takes every packet
/// addressed to it).
pub fn check_sources(srcs: &[IpAddr], host: &[IpAddr]) -> Result<(), LocalError> {
    for (i, a) in srcs.iter().enumerate() {
        let bad = |why| Err(LocalError::BadSource { addr: *a, why });
        if martian(*a) || a.is_unspecified() {
            return bad("not a unicast address");
        }
        if let IpAddr::V4(v4) = a {
            if v4.is_broadcast() {
                return bad("not a unicast address");
            }
        }
        if srcs[..i].iter().any(|b| b.is_ipv4() == a.is_ipv4()) {
            return bad("one address per family");
        }
        if host.contains(a) {
            return bad(
                "already an address of this host; local clients need one of their own, \
                 since uvs takes every packet addressed to it",
            );
        }
    }
    Ok(())
}

/// The local-client setup of a running `uvs run`; dropping it removes
/// what it added.
#[derive(Debug)]
pub struct LocalClients {
    io: LocalIo,
    ifindex: u32,
    nl: Netlink,
    /// Families whose policy rule is installed.
    rules: Vec<bool>,
    /// Service endpoints per VIP address, plus one for a nat OUTPUT DNAT
    /// destination ([`LocalClients::follow_dnat`]); a route while non-zero.
    vips: HashMap<IpAddr, u32>,
    /// The hosts nat OUTPUT DNAT rules name, routed into the device.
    dnat: Vec<IpAddr>,
    guard: Option<LocalGuard>,
}

impl LocalClients {
    /// Cleans what a killed uvs left, then creates `uvs-lo` with `srcs`
    /// and the policy rules. The replies are claimed once the engine's
    /// backend is known ([`LocalClients::claim_replies`]).
    pub fn start(srcs: &[IpAddr], workers: usize) -> Result<LocalClients, LocalError> {
        let nlerr = |what: &str| {
            let what = what.to_string();
            move |err| LocalError::Netlink { what, err }
        };
        let mut nl = Netlink::open().map_err(nlerr("opening rtnetlink"))?;
        let host: Vec<IpAddr> = nl
            .addrs()
            .map_err(nlerr("listing addresses"))?
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        check_sources(srcs, &host)?;
        // First the device: a live uvs holding it makes this fail (EBUSY)
        // before anything of that uvs is touched.
        let tun = TunDev::open(DEV).map_err(LocalError::Tun)?;
        // A stale rule points at an empty table (its routes died with the
        // old device) and routes nothing: removed all the same.
        for v6 in [false, true] {
            route::remove_stale_rules(&mut nl, v6);
        }
        let _ = nft::remove_stale();
        let ifindex = route::ifindex(&mut nl, DEV).map_err(nlerr("finding uvs-lo"))?;
        let mut me = LocalClients {
            io: LocalIo {
                tun: Arc::new(tun),
                v4: None,
                v6: None,
                stats: Arc::new(LocalStats::new(workers)),
            },
            ifindex,
            nl,
            rules: Vec::new(),
            vips: HashMap::new(),
            dnat: Vec::new(),
            guard: None,
        };
        let sysctl = |path: String, v: &str| {
            std::fs::write(&path, v).map_err(|err| LocalError::Sysctl { path, err })
        };
        sysctl(format!("/proc/sys/net/ipv4/conf/{DEV}/rp_filter"), "2")?;
        if !srcs.iter().any(IpAddr::is_ipv6) {
            // No IPv6 local clients: no link-local address, router
            // solicitations or MLD reports sent into the device either.
            sysctl(format!("/proc/sys/net/ipv6/conf/{DEV}/disable_ipv6"), "1")?;
        }
        for a in srcs {
            route::add_addr(&mut me.nl, ifindex, *a)
                .map_err(nlerr(&format!("adding {a} to {DEV}")))?;
            match a {
                IpAddr::V4(v) => me.io.v4 = Some(*v),
                IpAddr::V6(v) => me.io.v6 = Some(*v),
            }
        }
        for a in srcs {
            let v6 = a.is_ipv6();
            route::rule(&mut me.nl, v6, true).map_err(nlerr("adding the policy rule"))?;
            me.rules.push(v6);
        }
        Ok(me)
    }

    /// The local-client addresses.
    fn srcs(&self) -> impl Iterator<Item = IpAddr> {
        let v4 = self.io.v4.map(IpAddr::V4);
        v4.into_iter().chain(self.io.v6.map(IpAddr::V6))
    }

    /// Makes the NAT real servers' replies to the local-client addresses
    /// uvs's: the nftables table (AF_PACKET) or the program's map entries
    /// (AF_XDP, which live as long as the map: uvs's process).
    pub fn claim_replies(&mut self, claim: Claim<'_>) -> Result<(), LocalError> {
        let srcs: Vec<IpAddr> = self.srcs().collect();
        match claim {
            Claim::Nft(devices) => self.guard = Some(LocalGuard::install(devices, &srcs)?),
            Claim::Xdp(st) => {
                for a in srcs {
                    st.add_local_client(a)?;
                }
            }
        }
        Ok(())
    }

    /// Follows a guard delta that the tables (not the services) made: the
    /// nftables table's NAT servers; no routes.
    pub fn follow_replies(&mut self, delta: &Delta) -> Result<(), LocalError> {
        match &mut self.guard {
            Some(g) => Ok(g.apply(delta)?),
            None => Ok(()),
        }
    }

    /// The TUN device's interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The data-path side, for the engine.
    pub fn io(&self) -> LocalIo {
        self.io.clone()
    }

    /// The source address local clients of `vip`'s family use.
    fn src_for(&self, vip: IpAddr) -> Option<IpAddr> {
        match vip {
            IpAddr::V4(_) => self.io.v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.io.v6.map(IpAddr::V6),
        }
    }

    /// Follows a guard delta: a VIP address whose first service came gets
    /// its route, one whose last service went loses it; the nftables
    /// table's NAT servers change with the delta. An error names the
    /// route; the counts stay consistent with the routes installed.
    pub fn follow(&mut self, delta: &Delta) -> Result<(), LocalError> {
        self.follow_replies(delta)?;
        let addr = |e: &Elem| match e {
            Elem::Service((_, a, _)) => Some(*a),
            _ => None,
        };
        for a in delta.del.iter().filter_map(addr) {
            self.unref(a)?;
        }
        for a in delta.add.iter().filter_map(addr) {
            self.add_ref(a)?;
        }
        Ok(())
    }

    /// Routes the hosts that nat OUTPUT DNAT rules name (`-d HOST`) into
    /// the device for local origin, as a VIP's address is, so the
    /// director's own packets to them enter the pipeline at LOCAL_OUT and
    /// meet nat OUTPUT (the kernel's nat OUTPUT sees every local packet;
    /// uvs sees those routed to it). `hosts` is the whole new set: what
    /// left it loses its route (unless a VIP keeps it), what came gets one.
    pub fn follow_dnat(&mut self, mut hosts: Vec<IpAddr>) -> Result<(), LocalError> {
        hosts.retain(|a| self.src_for(*a).is_some());
        hosts.sort_unstable();
        hosts.dedup();
        let old = std::mem::take(&mut self.dnat);
        for a in old.iter().filter(|a| hosts.binary_search(a).is_err()) {
            self.unref(*a)?;
        }
        for a in hosts.iter().filter(|a| old.binary_search(a).is_err()) {
            self.add_ref(*a)?;
        }
        self.dnat = hosts;
        Ok(())
    }

    /// One more user of `a`'s route: added with the first.
    fn add_ref(&mut self, a: IpAddr) -> Result<(), LocalError> {
        let n = self.vips.entry(a).or_insert(0);
        *n += 1;
        if *n == 1 {
            if let Some(src) = self.src_for(a) {
                route::vip_route(&mut self.nl, self.ifindex, a, src, true).map_err(|err| {
                    LocalError::Netlink {
                        what: format!("adding the route of {a} via {DEV}"),
                        err,
                    }
                })?;
            }
        }
        Ok(())
    }

    /// One user less of `a`'s route: removed with the last.
    fn unref(&mut self, a: IpAddr) -> Result<(), LocalError> {
        let Some(n) = self.vips.get_mut(&a) else {
            return Ok(());
        };
        *n -= 1;
        if *n == 0 {
            self.vips.remove(&a);
            if let Some(src) = self.src_for(a) {
                route::vip_route(&mut self.nl, self.ifindex, a, src, false).map_err(|err| {
                    LocalError::Netlink {
                        what: format!("removing the route of {a}"),
                        err,
                    }
                })?;
            }
        }
        Ok(())
    }

    /// The counters for `uvs stats` (`local.*` and `guard.local_reply`).
    pub fn stats_lines(&self) -> String {
        let (from, to) = self.io.stats.sums();
        let mut s = format!(
            "local.from_tun {from}\nlocal.to_tun {to}\nlocal.vips {}\nlocal.dnat_hosts {}\n",
            self.vips.len(),
            self.dnat.len()
        );
        // Under AF_XDP the program's `xdp.steered` counts them instead.
        if self.guard.is_some() {
            let guard = counter().unwrap_or(0);
            s.push_str(&format!("guard.local_reply {guard}\n"));
        }
        s
    }
}

impl Drop for LocalClients {
    fn drop(&mut self) {
        for v6 in std::mem::take(&mut self.rules) {
            if let Err(e) = route::rule(&mut self.nl, v6, false) {
                log::warn!("removing the local-client policy rule: {e}");
            }
        }
        if let Some(mut g) = self.guard.take() {
            let _ = g.remove();
        }
        // The routes and the address go with the device, when the last
        // reference to its fd (the engine's workers hold clones) closes.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sources_are_unicast_one_per_family_and_not_the_hosts() {
        let host = [ip("203.0.113.1"), ip("2001:db8:5::1")];
        let ok = [ip("192.0.2.250"), ip("2001:db8:f::250")];
        assert!(check_sources(&ok, &host).is_ok());
        let why = |srcs: &[IpAddr]| match check_sources(srcs, &host) {
            Err(LocalError::BadSource { why, .. }) => why,
            r => panic!("{r:?}"),
        };
        for bad in [
            "0.0.0.0",
            "127.0.0.5",
            "224.0.0.9",
            "255.255.255.255",
            "::1",
            "fe80::1",
        ] {
            assert_eq!(why(&[ip(bad)]), "not a unicast address", "{bad}");
        }
        assert_eq!(
            why(&[ip("192.0.2.250"), ip("192.0.2.251")]),
            "one address per family"
        );
        assert!(why(&[ip("203.0.113.1")]).starts_with("already an address of this host"));
        let e = check_sources(&[ip("2001:db8:5::1")], &host).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--local-src 2001:db8:5::1: already"),
            "{e}"
        );
    }
}
