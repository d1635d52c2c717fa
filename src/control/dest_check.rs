//! The kernel's check of a new real server's address that needs the
//! director's routes: an IPv4 real server must be, by the routing table,
//! a local or a unicast address (`inet_addr_type`), so a connected
//! subnet's broadcast address (203.0.113.255 on 203.0.113.0/24) is refused
//! with EINVAL, and ipvsadm's text for it. The checks that need only the
//! address (multicast, 255.255.255.255, 0.0.0.0/8, IPv6's) are ctl's
//! `check_unicast`. One route look-up per IPv4 address new to its service
//! (control path); if the routes cannot be read, nothing is refused.

use std::net::IpAddr;

use crate::sys::netlink::{Netlink, RouteKind};

/// The first of `addrs` the director's routes call a broadcast (or
/// multicast, anycast) address, if any.
pub fn first_refused(addrs: &[IpAddr]) -> Option<IpAddr> {
    let v4: Vec<IpAddr> = addrs.iter().copied().filter(IpAddr::is_ipv4).collect();
    if v4.is_empty() {
        return None;
    }
    let mut nl = match Netlink::open() {
        Ok(nl) => nl,
        Err(e) => {
            log::debug!("real-server address check skipped: {e}");
            return None;
        }
    };
    v4.into_iter().find(|a| {
        nl.route_get(*a).is_ok_and(|r| {
            matches!(
                r.kind,
                RouteKind::Broadcast | RouteKind::Multicast | RouteKind::Anycast
            )
        })
    })
}
