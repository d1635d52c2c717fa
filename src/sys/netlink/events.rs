//! rtnetlink notifications: a socket subscribed to multicast groups, whose
//! datagrams are turned into [`Event`]s (see the parent module's contract).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::route::RouteAttribute;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use super::{
    addr_of, neigh_addr, neigh_of, route_addr, Neigh, NlError, EVENTS_RCVBUF, RECV_BUF_LEN,
};

/// A multicast group of rtnetlink notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// Interfaces (`RTNLGRP_LINK`): MAC, MTU, up/down, removal.
    Link,
    /// Neighbour entries (`RTNLGRP_NEIGH`).
    Neigh,
    /// IPv4 addresses (`RTNLGRP_IPV4_IFADDR`).
    Ipv4Addr,
    /// IPv6 addresses (`RTNLGRP_IPV6_IFADDR`).
    Ipv6Addr,
    /// IPv4 routes (`RTNLGRP_IPV4_ROUTE`).
    Ipv4Route,
    /// IPv6 routes (`RTNLGRP_IPV6_ROUTE`).
    Ipv6Route,
    /// IPv4 policy-routing rules (`RTNLGRP_IPV4_RULE`).
    Ipv4Rule,
    /// IPv6 policy-routing rules (`RTNLGRP_IPV6_RULE`).
    Ipv6Rule,
    /// Next-hop objects (`RTNLGRP_NEXTHOP`).
    Nexthop,
}

impl Group {
    /// Everything a next-hop cache depends on.
    pub const ROUTING: [Group; 9] = [
        Group::Link,
        Group::Neigh,
        Group::Ipv4Addr,
        Group::Ipv6Addr,
        Group::Ipv4Route,
        Group::Ipv6Route,
        Group::Ipv4Rule,
        Group::Ipv6Rule,
        Group::Nexthop,
    ];
    /// The host's addresses.
    pub const ADDRS: [Group; 2] = [Group::Ipv4Addr, Group::Ipv6Addr];

    fn number(self) -> u32 {
        match self {
            Group::Link => libc::RTNLGRP_LINK,
            Group::Neigh => libc::RTNLGRP_NEIGH,
            Group::Ipv4Addr => libc::RTNLGRP_IPV4_IFADDR,
            Group::Ipv6Addr => libc::RTNLGRP_IPV6_IFADDR,
            Group::Ipv4Route => libc::RTNLGRP_IPV4_ROUTE,
            Group::Ipv6Route => libc::RTNLGRP_IPV6_ROUTE,
            Group::Ipv4Rule => libc::RTNLGRP_IPV4_RULE,
            Group::Ipv6Rule => libc::RTNLGRP_IPV6_RULE,
            Group::Nexthop => libc::RTNLGRP_NEXTHOP,
        }
    }
}

/// One change the kernel announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A neighbour entry changed (`neigh`) or was removed (`None`).
    Neigh {
        /// Its interface.
        ifindex: u32,
        /// Its protocol address.
        addr: IpAddr,
        /// The new entry; `None` when it was deleted.
        neigh: Option<Neigh>,
    },
    /// A route of prefix `dst/prefix_len` was added, changed or removed:
    /// lookups of addresses inside the prefix may answer differently.
    Route {
        /// The prefix (the unspecified address for a default route).
        dst: IpAddr,
        /// Its length.
        prefix_len: u8,
        /// Removed rather than added or changed.
        deleted: bool,
    },
    /// An address was added to or removed from interface `ifindex`.
    Addr {
        /// The interface.
        ifindex: u32,
        /// The address.
        addr: IpAddr,
        /// Removed rather than added.
        deleted: bool,
    },
    /// Interface `ifindex` changed (MAC, MTU, flags) or was removed.
    Link {
        /// The interface.
        ifindex: u32,
        /// Removed rather than changed.
        deleted: bool,
    },
    /// A policy rule or a next-hop object changed: any route lookup may
    /// answer differently.
    Routing,
    /// Notifications were lost (the socket's buffer overflowed) or one did
    /// not parse: re-read everything that is followed.
    Resync,
}

/// A socket subscribed to rtnetlink notifications; non-blocking.
pub struct Events {
    sock: Socket,
    buf: Vec<u8>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("fd", &self.sock.as_raw_fd())
            .finish()
    }
}

impl Events {
    /// Most datagrams one [`Events::drain`] reads.
    pub const DRAIN_MAX: usize = 256;

    /// Subscribes, in the calling thread's network namespace, to `groups`.
    /// Notifications are queued from this call on: state read after it
    /// plus the events drained later describe every change.
    pub fn subscribe(groups: &[Group]) -> Result<Events, NlError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(NlError::Socket)?;
        sock.bind_auto().map_err(NlError::Socket)?;
        for g in groups {
            sock.add_membership(g.number()).map_err(NlError::Socket)?;
        }
        // Best effort: the default buffer still works, with more resyncs.
        let _ = sock.set_rx_buf_sz(EVENTS_RCVBUF);
        sock.set_non_blocking(true).map_err(NlError::Socket)?;
        Ok(Events {
            sock,
            buf: vec![0; RECV_BUF_LEN],
        })
    }

    /// Hands the queued notifications to `f`, without blocking; returns
    /// how many datagrams were read. At most [`Events::DRAIN_MAX`] are read
    /// per call, so a flood of changes cannot hold the caller: when that
    /// many were read, more may be queued (call again before waiting for
    /// readiness, which an edge-triggered poller would not signal again).
    pub fn drain(&mut self, mut f: impl FnMut(Event)) -> Result<usize, NlError> {
        let mut datagrams = 0;
        while datagrams < Self::DRAIN_MAX {
            let n = match self.sock.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => return Ok(datagrams),
                    // The kernel dropped notifications for this socket.
                    Some(libc::ENOBUFS) => {
                        f(Event::Resync);
                        continue;
                    }
                    _ => return Err(NlError::Socket(e)),
                },
            };
            datagrams += 1;
            if n > self.buf.len() {
                f(Event::Resync);
                continue;
            }
            parse_events(&self.buf[..n], &mut f);
        }
        Ok(datagrams)
    }
}

/// The notifications of one datagram.
pub(super) fn parse_events(mut b: &[u8], f: &mut impl FnMut(Event)) {
    while !b.is_empty() {
        let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(b) else {
            f(Event::Resync);
            return;
        };
        let len = (msg.header.length as usize).next_multiple_of(4);
        if len == 0 {
            f(Event::Resync);
            return;
        }
        b = b.get(len..).unwrap_or(&[]);
        let NetlinkPayload::InnerMessage(m) = msg.payload else {
            continue;
        };
        if let Some(e) = event_of(&m) {
            f(e);
        }
    }
}

fn event_of(m: &RouteNetlinkMessage) -> Option<Event> {
    use RouteNetlinkMessage as M;
    Some(match m {
        M::NewNeighbour(n) | M::DelNeighbour(n) => Event::Neigh {
            ifindex: n.header.ifindex,
            addr: neigh_addr(n)?,
            neigh: matches!(m, M::NewNeighbour(_)).then(|| neigh_of(n)),
        },
        M::NewRoute(r) | M::DelRoute(r) => {
            let unspecified = match r.header.address_family {
                AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                _ => return None,
            };
            let dst = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(d) => route_addr(d),
                _ => None,
            });
            Event::Route {
                dst: dst.unwrap_or(unspecified),
                prefix_len: r.header.destination_prefix_length,
                deleted: matches!(m, M::DelRoute(_)),
            }
        }
        M::NewAddress(a) | M::DelAddress(a) => Event::Addr {
            ifindex: a.header.index,
            addr: addr_of(a)?,
            deleted: matches!(m, M::DelAddress(_)),
        },
        M::NewLink(l) | M::DelLink(l) => Event::Link {
            ifindex: l.header.index,
            deleted: matches!(m, M::DelLink(_)),
        },
        M::NewRule(_) | M::DelRule(_) => Event::Routing,
        _ => return None,
    })
}

impl AsRawFd for Events {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsFd for Events {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// Whether `addr` lies inside `prefix/len` (addresses of different
/// families never do).
pub fn in_prefix(addr: IpAddr, prefix: IpAddr, len: u8) -> bool {
    match (addr, prefix) {
        (IpAddr::V4(a), IpAddr::V4(p)) => {
            let len = u32::from(len.min(32));
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & mask == u32::from(p) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(p)) => {
            let len = u32::from(len.min(128));
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & mask == u128::from(p) & mask
        }
        _ => false,
    }
}
