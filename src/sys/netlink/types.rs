//! The values the rtnetlink client answers with: a route lookup's
//! [`Route`] and its [`RouteKind`], neighbour entries ([`Neigh`],
//! [`NudState`]) and interfaces ([`Link`]).

use std::fmt;
use std::net::IpAddr;

use netlink_packet_route::route::RouteType;

/// The type of the route the kernel chose (`rtm_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// A normal route: send out of `oif`, to `gateway` or directly.
    Unicast,
    /// The destination is an address of this host.
    Local,
    /// A broadcast address of a local subnet.
    Broadcast,
    /// An anycast address of this host.
    Anycast,
    /// A multicast destination.
    Multicast,
    /// A blackhole route: silently discarded.
    Blackhole,
    /// No route (an `unreachable` route, or no matching route at all).
    Unreachable,
    /// An administratively prohibited destination.
    Prohibit,
    /// A `throw` route (policy routing continues elsewhere; nothing matched).
    Throw,
    /// Any other `rtm_type`.
    Other(u8),
}

impl RouteKind {
    pub(super) fn from_route_type(t: RouteType) -> Self {
        match t {
            RouteType::Unicast => RouteKind::Unicast,
            RouteType::Local => RouteKind::Local,
            RouteType::Broadcast => RouteKind::Broadcast,
            RouteType::Anycast => RouteKind::Anycast,
            RouteType::Multicast => RouteKind::Multicast,
            RouteType::BlackHole => RouteKind::Blackhole,
            RouteType::Unreachable => RouteKind::Unreachable,
            RouteType::Prohibit => RouteKind::Prohibit,
            RouteType::Throw => RouteKind::Throw,
            other => RouteKind::Other(u8::from(other)),
        }
    }
}

/// The kernel's answer to a route lookup (`ip route get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The route type.
    pub kind: RouteKind,
    /// Output interface index (absent for some unreachable answers).
    pub oif: Option<u32>,
    /// The gateway, when the destination is not on a connected subnet.
    pub gateway: Option<IpAddr>,
    /// The preferred source address for this destination.
    pub prefsrc: Option<IpAddr>,
    /// A per-route MTU (`ip route ... mtu N`), when set.
    pub mtu: Option<u32>,
    /// The routing table the route came from.
    pub table: u32,
}

impl Route {
    /// The destination is an address of this host (no next hop).
    pub fn is_local(&self) -> bool {
        matches!(self.kind, RouteKind::Local)
    }

    /// Packets to the destination cannot be sent anywhere.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self.kind,
            RouteKind::Unreachable | RouteKind::Blackhole | RouteKind::Prohibit | RouteKind::Throw
        )
    }

    /// The address whose link-layer address the frame goes to: the gateway,
    /// or the destination itself when it is on a connected subnet.
    pub fn next_hop(&self, dst: IpAddr) -> IpAddr {
        self.gateway.unwrap_or(dst)
    }

    /// The route for a lookup the kernel refused with `errno`, when that
    /// errno means "there is no usable route" rather than a failed request.
    pub(super) fn from_errno(errno: i32) -> Option<Route> {
        let kind = match errno {
            libc::ENETUNREACH | libc::EHOSTUNREACH => RouteKind::Unreachable,
            libc::EACCES => RouteKind::Prohibit,
            // IPv4 answers a blackhole route with EINVAL: the request itself
            // is well formed (it is built here), so EINVAL means the route.
            libc::EINVAL => RouteKind::Blackhole,
            libc::EAGAIN => RouteKind::Throw,
            _ => return None,
        };
        Some(Route {
            kind,
            oif: None,
            gateway: None,
            prefsrc: None,
            mtu: None,
            table: 0,
        })
    }
}

/// A neighbour-table state (`NUD_*` bits of `ndm_state`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NudState(pub u16);

impl NudState {
    /// No state (an entry just created).
    pub const NONE: NudState = NudState(0x00);
    /// Resolution in progress: requests sent, no answer yet.
    pub const INCOMPLETE: NudState = NudState(0x01);
    /// Confirmed recently.
    pub const REACHABLE: NudState = NudState(0x02);
    /// Known address, not confirmed recently.
    pub const STALE: NudState = NudState(0x04);
    /// Waiting before probing a stale entry.
    pub const DELAY: NudState = NudState(0x08);
    /// Probing a stale entry with unicast requests.
    pub const PROBE: NudState = NudState(0x10);
    /// Resolution failed.
    pub const FAILED: NudState = NudState(0x20);
    /// No resolution needed on this device.
    pub const NOARP: NudState = NudState(0x40);
    /// Set by an administrator; never expires.
    pub const PERMANENT: NudState = NudState(0x80);

    const NAMES: [(NudState, &'static str); 8] = [
        (NudState::INCOMPLETE, "INCOMPLETE"),
        (NudState::REACHABLE, "REACHABLE"),
        (NudState::STALE, "STALE"),
        (NudState::DELAY, "DELAY"),
        (NudState::PROBE, "PROBE"),
        (NudState::FAILED, "FAILED"),
        (NudState::NOARP, "NOARP"),
        (NudState::PERMANENT, "PERMANENT"),
    ];

    /// The entry's link-layer address may be used to send: every state that
    /// holds an address the kernel itself would send to (STALE, DELAY and
    /// PROBE included: the kernel keeps sending to them while it
    /// re-confirms).
    pub fn is_usable(self) -> bool {
        const USABLE: u16 = NudState::REACHABLE.0
            | NudState::STALE.0
            | NudState::DELAY.0
            | NudState::PROBE.0
            | NudState::PERMANENT.0
            | NudState::NOARP.0;
        self.0 & USABLE != 0
    }

    /// The kernel would like the entry confirmed (it is not fresh).
    pub fn wants_confirmation(self) -> bool {
        self.0 & NudState::STALE.0 != 0
    }
}

impl fmt::Debug for NudState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("NONE");
        }
        let mut first = true;
        for (state, name) in NudState::NAMES {
            if self.0 & state.0 != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        let unknown = self.0 & !0xff;
        if unknown != 0 {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{unknown:#x}")?;
        }
        Ok(())
    }
}

/// One neighbour-table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neigh {
    /// The entry's state.
    pub state: NudState,
    /// Its link-layer address, when it has a 6-byte one.
    pub mac: Option<[u8; 6]>,
}

impl Neigh {
    /// The MAC to send to, if the entry is usable.
    pub fn usable_mac(&self) -> Option<[u8; 6]> {
        if self.state.is_usable() {
            self.mac
        } else {
            None
        }
    }
}

/// An interface, as far as forwarding needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Its Ethernet address, when it has a 6-byte one.
    pub mac: Option<[u8; 6]>,
    /// Its MTU.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// The loopback interface (`IFF_LOOPBACK`).
    pub loopback: bool,
    /// Its kind (`IFLA_INFO_KIND`: `veth`, `bridge`, …), `None` for a
    /// physical device.
    pub kind: Option<String>,
}
