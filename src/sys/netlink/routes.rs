//! Route table dumps (`ip route show table main` / `table local`, both
//! families): what a per-snapshot longest-prefix-match table is built from
//! (`datapath::tables::route`). Control path only.
//!
//! Contract: [`Netlink::routes`] returns every route of the main (254) and
//! local (255) tables of one family, each with its prefix, type, output
//! interface (a multipath route's first live next hop: which one the kernel
//! picks is a per-flow hash), and metric. Routes the kernel would not use
//! (cloned cache entries, next hops marked dead) are left out. A route
//! through a next-hop object (`nhid`) has no interface here (`oif: None`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_route::route::{RouteAttribute, RouteFlags, RouteMessage, RouteNextHopFlags};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{route_addr, Netlink, NlError, RouteKind};

/// The local routing table's id (`RT_TABLE_LOCAL`).
pub const TABLE_LOCAL: u32 = 255;
/// The main routing table's id (`RT_TABLE_MAIN`).
pub const TABLE_MAIN: u32 = 254;

/// One route of a table dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// The prefix (the unspecified address for a default route).
    pub dst: IpAddr,
    pub len: u8,
    /// [`TABLE_MAIN`] or [`TABLE_LOCAL`].
    pub table: u32,
    pub kind: RouteKind,
    /// The output interface (a multipath route's first live next hop).
    pub oif: Option<u32>,
    /// `metric` (`RTA_PRIORITY`): of two routes of one prefix, the lower wins.
    pub metric: u32,
}

impl Netlink {
    /// The main and local tables' routes of one family (see the module doc).
    pub fn routes(&mut self, v6: bool) -> Result<Vec<RouteEntry>, NlError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let mut out = Vec::new();
        self.dump("RTM_GETROUTE", RouteNetlinkMessage::GetRoute(msg), |m| {
            if let RouteNetlinkMessage::NewRoute(r) = m {
                out.extend(entry_of(&r, v6));
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// Both families' main and local routes, in a one-shot socket.
pub fn routes() -> Result<Vec<RouteEntry>, NlError> {
    let mut nl = Netlink::open()?;
    let mut v = nl.routes(false)?;
    v.extend(nl.routes(true)?);
    Ok(v)
}

fn entry_of(m: &RouteMessage, v6: bool) -> Option<RouteEntry> {
    let h = &m.header;
    if h.flags.contains(RouteFlags::Cloned) || h.flags.contains(RouteFlags::Dead) {
        return None;
    }
    let mut table = u32::from(h.table);
    let mut dst = None;
    let mut oif = None;
    let mut metric = 0;
    let mut multipath = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dst = route_addr(d),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::MultiPath(hops) => {
                multipath = hops
                    .iter()
                    .find(|n| !n.flags.contains(RouteNextHopFlags::Dead))
                    .map(|n| n.interface_index)
            }
            _ => {}
        }
    }
    if table != TABLE_MAIN && table != TABLE_LOCAL {
        return None;
    }
    let unspec = if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    Some(RouteEntry {
        dst: dst.unwrap_or(unspec),
        len: h.destination_prefix_length,
        table,
        kind: RouteKind::from_route_type(h.kind),
        oif: oif.or(multipath),
        metric,
    })
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
