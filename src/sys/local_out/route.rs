//! The rtnetlink messages of the local-client setup: the device's address,
//! the policy rule and the per-VIP routes (what `ip addr add`, `ip rule
//! add iif lo lookup 30070 pref 30070` and `ip route add VIP dev uvs-lo src
//! ADDR table 30070` send).

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{ROUTE_TABLE, RULE_PREF};
use crate::sys::netlink::{Netlink, NlError};

fn family(v6: bool) -> AddressFamily {
    if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

fn host_len(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        32
    } else {
        128
    }
}

/// The index of interface `name`.
pub(super) fn ifindex(nl: &mut Netlink, name: &str) -> Result<u32, NlError> {
    nl.links()?
        .into_iter()
        .find(|l| l.name == name)
        .map(|l| l.index)
        .ok_or(NlError::Kernel {
            op: "RTM_GETLINK",
            errno: libc::ENODEV,
        })
}

/// `ip addr add A/32 dev IFINDEX` (`/128 nodad` for IPv6: usable at once).
pub(super) fn add_addr(nl: &mut Netlink, ifindex: u32, a: IpAddr) -> Result<(), NlError> {
    let mut m = AddressMessage::default();
    m.header.family = family(a.is_ipv6());
    m.header.prefix_len = host_len(a);
    m.header.index = ifindex;
    m.attributes.push(AddressAttribute::Local(a));
    m.attributes.push(AddressAttribute::Address(a));
    if a.is_ipv6() {
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    nl.change(
        "RTM_NEWADDR",
        RouteNetlinkMessage::NewAddress(m),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

fn rule_msg(v6: bool) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = family(v6);
    m.header.action = RuleAction::ToTable;
    m.attributes.push(RuleAttribute::Iifname("lo".into()));
    m.attributes.push(RuleAttribute::Priority(RULE_PREF));
    m.attributes.push(RuleAttribute::Table(ROUTE_TABLE));
    m
}

/// Adds (`add`) or deletes the policy rule of family `v6`.
pub(super) fn rule(nl: &mut Netlink, v6: bool, add: bool) -> Result<(), NlError> {
    if add {
        nl.change(
            "RTM_NEWRULE",
            RouteNetlinkMessage::NewRule(rule_msg(v6)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    } else {
        nl.change("RTM_DELRULE", RouteNetlinkMessage::DelRule(rule_msg(v6)), 0)
    }
}

/// Deletes every rule of family `v6` that a killed uvs left (same
/// selector, preference and table); bounded, in case the kernel keeps
/// answering yes.
pub(super) fn remove_stale_rules(nl: &mut Netlink, v6: bool) {
    for _ in 0..64 {
        if rule(nl, v6, false).is_err() {
            return;
        }
        log::info!("removed a stale local-client policy rule (a previous uvs was killed)");
    }
}

/// Adds (`add`) or deletes `ip route VIP dev uvs-lo src SRC table 30070`.
pub(super) fn vip_route(
    nl: &mut Netlink,
    ifindex: u32,
    vip: IpAddr,
    src: IpAddr,
    add: bool,
) -> Result<(), NlError> {
    let mut m = RouteMessage::default();
    m.header.address_family = family(vip.is_ipv6());
    m.header.destination_prefix_length = host_len(vip);
    m.header.table = RouteHeader::RT_TABLE_UNSPEC;
    m.header.protocol = RouteProtocol::Static;
    m.header.scope = RouteScope::Link;
    m.header.kind = RouteType::Unicast;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(vip)));
    m.attributes.push(RouteAttribute::Oif(ifindex));
    m.attributes
        .push(RouteAttribute::PrefSource(RouteAddress::from(src)));
    m.attributes.push(RouteAttribute::Table(ROUTE_TABLE));
    if add {
        // Replace: a route of an earlier run cannot be there (it died with
        // its device), but a hand-made one would only be taken over.
        nl.change(
            "RTM_NEWROUTE",
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | netlink_packet_core::NLM_F_REPLACE,
        )
    } else {
        nl.change("RTM_DELROUTE", RouteNetlinkMessage::DelRoute(m), 0)
    }
}
