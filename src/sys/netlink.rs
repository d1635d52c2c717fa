//! A small rtnetlink client: routes, neighbours and links of the current
//! network namespace, over a raw `AF_NETLINK`/`NETLINK_ROUTE` socket.
//!
//! Contract:
//! * [`Netlink`] is one socket, opened in the network namespace of the thread
//!   that calls [`Netlink::open`]; it keeps talking to that namespace even when
//!   moved to another thread (a netlink socket is bound to its namespace at
//!   creation). Every request is synchronous: send, then read until the answer
//!   with the same sequence number arrives or the receive timeout (2 s) passes.
//! * [`Netlink::route_get`] is `ip route get DST`: the kernel's output route
//!   lookup, answered with the chosen output interface, gateway, preferred
//!   source and route type. A destination without a usable route is an `Ok`
//!   [`Route`] whose [`RouteKind`] says why (unreachable, blackhole,
//!   prohibit), not an error: "no route" is an answer, not a failure.
//! * [`Netlink::neigh_get`] reads one neighbour entry; [`Netlink::neigh_probe`]
//!   makes the kernel resolve a neighbour it does not know yet (an
//!   `RTM_NEWNEIGH` with `NTF_USE` and `NLM_F_CREATE`: the kernel creates the
//!   entry and sends the ARP request / neighbour solicitation itself, exactly
//!   as if it had a packet to send there). The kernel then owns retries,
//!   timers and the entry's lifetime, so uvs needs no ARP/ND code of its own
//!   and shares one neighbour table with every other user of the namespace.
//!   The namespace tests prove that the probe really goes out (the peer
//!   learns our address from it and our entry becomes REACHABLE).
//! * [`Netlink::link`] reads an interface's Ethernet address and MTU.
//! * IPv4 and IPv6 throughout. Every message from the kernel is parsed with
//!   checked bounds: a malformed message is [`NlError::Malformed`], never a
//!   panic.
//!
//! This is control-path code (it allocates and makes syscalls); the packet
//! path reads its results from the cache in `neigh.rs`.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Kernel ABI numbers (uapi `netlink.h`, `rtnetlink.h`, `neighbour.h`,
/// `if_link.h`). Spelled out here rather than taken from `libc`, whose
/// integer types for them differ between targets and versions.
mod abi {
    pub const NLMSG_HDRLEN: usize = 16;
    pub const NLMSG_NOOP: u16 = 1;
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;

    pub const NLM_F_REQUEST: u16 = 0x001;
    pub const NLM_F_ACK: u16 = 0x004;
    pub const NLM_F_CREATE: u16 = 0x400;

    pub const RTM_NEWLINK: u16 = 16;
    pub const RTM_GETLINK: u16 = 18;
    pub const RTM_NEWROUTE: u16 = 24;
    pub const RTM_GETROUTE: u16 = 26;
    pub const RTM_NEWNEIGH: u16 = 28;
    pub const RTM_GETNEIGH: u16 = 30;

    /// `struct rtmsg`: family, dst_len, src_len, tos, table, protocol, scope,
    /// type (u8 each), flags (u32).
    pub const RTMSG_LEN: usize = 12;
    /// `struct ndmsg`: family, pad1 (u8), pad2 (u16), ifindex (i32),
    /// state (u16), flags (u8), type (u8).
    pub const NDMSG_LEN: usize = 12;
    /// `struct ifinfomsg`: family, pad (u8), type (u16), index (i32),
    /// flags (u32), change (u32).
    pub const IFINFOMSG_LEN: usize = 16;

    pub const RTA_DST: u16 = 1;
    pub const RTA_OIF: u16 = 4;
    pub const RTA_GATEWAY: u16 = 5;
    pub const RTA_PREFSRC: u16 = 7;
    pub const RTA_METRICS: u16 = 8;
    pub const RTA_TABLE: u16 = 15;
    pub const RTA_VIA: u16 = 18;
    pub const RTAX_MTU: u16 = 2;

    pub const RTN_UNICAST: u8 = 1;
    pub const RTN_LOCAL: u8 = 2;
    pub const RTN_BROADCAST: u8 = 3;
    pub const RTN_ANYCAST: u8 = 4;
    pub const RTN_MULTICAST: u8 = 5;
    pub const RTN_BLACKHOLE: u8 = 6;
    pub const RTN_UNREACHABLE: u8 = 7;
    pub const RTN_PROHIBIT: u8 = 8;
    pub const RTN_THROW: u8 = 9;

    pub const NDA_DST: u16 = 1;
    pub const NDA_LLADDR: u16 = 2;
    pub const NTF_USE: u8 = 0x01;

    pub const IFLA_ADDRESS: u16 = 1;
    pub const IFLA_IFNAME: u16 = 3;
    pub const IFLA_MTU: u16 = 4;
    pub const IFLA_EXT_MASK: u16 = 29;
    /// Leave the (large) statistics out of `RTM_GETLINK` answers.
    pub const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
    pub const IFF_UP: u32 = 0x1;

    /// The top two bits of `nla_type` are flags (nested, net byte order).
    pub const NLA_TYPE_MASK: u16 = 0x3fff;

    pub const AF_INET: u8 = 2;
    pub const AF_INET6: u8 = 10;
}

/// How long a request waits for the kernel's answer. The kernel answers
/// rtnetlink requests at once; this only bounds a wait on a lost answer.
const RECV_TIMEOUT_SECS: libc::time_t = 2;
/// Receive buffer: larger than any single answer to the requests made here
/// (link answers are requested without statistics).
const RECV_BUF_LEN: usize = 64 * 1024;

/// Errors of the rtnetlink client.
#[derive(Debug, thiserror::Error)]
pub enum NlError {
    /// Creating, configuring or using the socket failed.
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel rejected the request with an errno.
    #[error("netlink {op}: kernel answered: {}", io::Error::from_raw_os_error(*.errno))]
    Kernel {
        /// The request, e.g. `"RTM_GETLINK"`.
        op: &'static str,
        /// The positive errno the kernel returned.
        errno: i32,
    },
    /// No answer arrived within the receive timeout.
    #[error("netlink {op}: no answer from the kernel")]
    Timeout {
        /// The request.
        op: &'static str,
    },
    /// The kernel's answer did not parse.
    #[error("netlink {op}: malformed answer: {what}")]
    Malformed {
        /// The request.
        op: &'static str,
        /// What was wrong.
        what: &'static str,
    },
    /// The interface has no 6-byte (Ethernet) link-layer address.
    #[error("interface {ifindex} has no Ethernet address")]
    NoEthernetAddress {
        /// The interface.
        ifindex: u32,
    },
}

impl NlError {
    /// The kernel's errno when the kernel rejected the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

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
    fn from_rtm_type(t: u8) -> Self {
        match t {
            abi::RTN_UNICAST => RouteKind::Unicast,
            abi::RTN_LOCAL => RouteKind::Local,
            abi::RTN_BROADCAST => RouteKind::Broadcast,
            abi::RTN_ANYCAST => RouteKind::Anycast,
            abi::RTN_MULTICAST => RouteKind::Multicast,
            abi::RTN_BLACKHOLE => RouteKind::Blackhole,
            abi::RTN_UNREACHABLE => RouteKind::Unreachable,
            abi::RTN_PROHIBIT => RouteKind::Prohibit,
            abi::RTN_THROW => RouteKind::Throw,
            other => RouteKind::Other(other),
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
    fn from_errno(errno: i32) -> Option<Route> {
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
}

/// One rtnetlink socket in the namespace it was opened in.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.fd.as_raw_fd())
            .field("seq", &self.seq)
            .finish()
    }
}

/// What a request expects back.
enum Answer<T> {
    Data(T),
    Ack,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, NlError> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(NlError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a freshly created descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a valid sockaddr_nl and the length matches it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(NlError::Socket(io::Error::last_os_error()));
        }

        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: `tv` is a valid timeval and the length matches it.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(NlError::Socket(io::Error::last_os_error()));
        }

        Ok(Netlink {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF_LEN],
        })
    }

    /// `ip route get DST`: the route the kernel would use to send to `dst`.
    ///
    /// "No route" is an `Ok` route of kind [`RouteKind::Unreachable`] (or
    /// blackhole/prohibit), so callers can tell it from a failed request.
    pub fn route_get(&mut self, dst: IpAddr) -> Result<Route, NlError> {
        const OP: &str = "RTM_GETROUTE";
        let (family, addr_len) = family_of(dst);
        let mut req = Request::new(abi::RTM_GETROUTE, abi::NLM_F_REQUEST);
        // rtmsg: a host lookup (dst_len = full length), everything else 0.
        let mut rtm = [0u8; abi::RTMSG_LEN];
        rtm[0] = family;
        rtm[1] = addr_len * 8;
        req.body(&rtm);
        req.attr(abi::RTA_DST, &ip_octets(dst));
        match self.transact(OP, &mut req, |ty, payload| {
            if ty != abi::RTM_NEWROUTE {
                return Err("unexpected message type");
            }
            parse_route(payload)
        }) {
            Ok(Answer::Data(route)) => Ok(route),
            Ok(Answer::Ack) => Err(NlError::Malformed {
                op: OP,
                what: "acknowledgement instead of a route",
            }),
            Err(NlError::Kernel { errno, op }) => {
                Route::from_errno(errno).ok_or(NlError::Kernel { op, errno })
            }
            Err(e) => Err(e),
        }
    }

    /// The neighbour entry for `addr` on interface `ifindex`, or `None` when
    /// the kernel has no entry.
    pub fn neigh_get(&mut self, ifindex: u32, addr: IpAddr) -> Result<Option<Neigh>, NlError> {
        const OP: &str = "RTM_GETNEIGH";
        let mut req = Request::new(abi::RTM_GETNEIGH, abi::NLM_F_REQUEST);
        req.body(&ndmsg(family_of(addr).0, ifindex, 0, 0));
        req.attr(abi::NDA_DST, &ip_octets(addr));
        match self.transact(OP, &mut req, |ty, payload| {
            if ty != abi::RTM_NEWNEIGH {
                return Err("unexpected message type");
            }
            parse_neigh(payload)
        }) {
            Ok(Answer::Data(neigh)) => Ok(Some(neigh)),
            Ok(Answer::Ack) => Err(NlError::Malformed {
                op: OP,
                what: "acknowledgement instead of a neighbour",
            }),
            Err(NlError::Kernel { errno, .. }) if errno == libc::ENOENT => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes the kernel resolve `addr` on `ifindex` as if it had a packet to
    /// send there: creates the entry when missing and sends an ARP request or
    /// neighbour solicitation (or re-confirms a stale entry). Returns once
    /// the kernel accepted the request; the answer arrives asynchronously,
    /// so poll [`Netlink::neigh_get`] afterwards.
    pub fn neigh_probe(&mut self, ifindex: u32, addr: IpAddr) -> Result<(), NlError> {
        const OP: &str = "RTM_NEWNEIGH";
        let mut req = Request::new(
            abi::RTM_NEWNEIGH,
            abi::NLM_F_REQUEST | abi::NLM_F_ACK | abi::NLM_F_CREATE,
        );
        // State NONE: NTF_USE never writes a state, it only triggers the
        // kernel's own resolution ("use" the entry like an outgoing packet).
        req.body(&ndmsg(family_of(addr).0, ifindex, 0, abi::NTF_USE));
        req.attr(abi::NDA_DST, &ip_octets(addr));
        match self.transact(OP, &mut req, |_, _| Err("unexpected data answer"))? {
            Answer::Ack => Ok(()),
            // The closure above never yields data.
            Answer::Data(()) => Err(NlError::Malformed {
                op: OP,
                what: "data instead of an acknowledgement",
            }),
        }
    }

    /// Interface `ifindex`: name, Ethernet address, MTU, up flag.
    pub fn link(&mut self, ifindex: u32) -> Result<Link, NlError> {
        const OP: &str = "RTM_GETLINK";
        let mut req = Request::new(abi::RTM_GETLINK, abi::NLM_F_REQUEST);
        let mut ifi = [0u8; abi::IFINFOMSG_LEN];
        ifi[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        req.body(&ifi);
        req.attr(
            abi::IFLA_EXT_MASK,
            &abi::RTEXT_FILTER_SKIP_STATS.to_ne_bytes(),
        );
        match self.transact(OP, &mut req, |ty, payload| {
            if ty != abi::RTM_NEWLINK {
                return Err("unexpected message type");
            }
            parse_link(payload)
        })? {
            Answer::Data(link) => Ok(link),
            Answer::Ack => Err(NlError::Malformed {
                op: OP,
                what: "acknowledgement instead of a link",
            }),
        }
    }

    /// The Ethernet address of interface `ifindex`.
    pub fn link_mac(&mut self, ifindex: u32) -> Result<[u8; 6], NlError> {
        self.link(ifindex)?
            .mac
            .ok_or(NlError::NoEthernetAddress { ifindex })
    }

    /// The MTU of interface `ifindex`.
    pub fn link_mtu(&mut self, ifindex: u32) -> Result<u32, NlError> {
        Ok(self.link(ifindex)?.mtu)
    }

    /// Sends `req` and reads until the answer carrying its sequence number.
    fn transact<T>(
        &mut self,
        op: &'static str,
        req: &mut Request,
        mut parse: impl FnMut(u16, &[u8]) -> Result<T, &'static str>,
    ) -> Result<Answer<T>, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = req.finish(seq);

        // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value
        // (family set below; pid 0 addresses the kernel).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `msg` is valid for `msg.len()` bytes and `kernel` is a valid
        // sockaddr_nl of the given length.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(NlError::Socket(io::Error::last_os_error()));
        }

        loop {
            // SAFETY: `self.buf` is valid for writes of `self.buf.len()` bytes.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        return Err(NlError::Timeout { op })
                    }
                    _ => return Err(NlError::Socket(err)),
                }
            }
            // n >= 0 was checked above.
            let n = n as usize;
            if n > self.buf.len() {
                return Err(NlError::Malformed {
                    op,
                    what: "answer larger than the receive buffer",
                });
            }
            let datagram = &self.buf[..n];
            for msg in Messages::new(datagram) {
                let msg = msg.map_err(|what| NlError::Malformed { op, what })?;
                // Answers to earlier requests that timed out are skipped.
                if msg.seq != seq {
                    continue;
                }
                match msg.ty {
                    abi::NLMSG_NOOP => continue,
                    abi::NLMSG_ERROR => {
                        let code = parse_error(msg.payload)
                            .map_err(|what| NlError::Malformed { op, what })?;
                        return if code == 0 {
                            Ok(Answer::Ack)
                        } else {
                            Err(NlError::Kernel { op, errno: code })
                        };
                    }
                    abi::NLMSG_DONE => {
                        return Err(NlError::Malformed {
                            op,
                            what: "end of dump instead of an answer",
                        })
                    }
                    ty => {
                        return parse(ty, msg.payload)
                            .map(Answer::Data)
                            .map_err(|what| NlError::Malformed { op, what })
                    }
                }
            }
        }
    }
}

/// `ip route get` in a one-shot socket (control path convenience).
pub fn route_get(dst: IpAddr) -> Result<Route, NlError> {
    Netlink::open()?.route_get(dst)
}

/// One neighbour entry, in a one-shot socket (control path convenience).
pub fn neigh_get(ifindex: u32, addr: IpAddr) -> Result<Option<Neigh>, NlError> {
    Netlink::open()?.neigh_get(ifindex, addr)
}

/// Triggers resolution of a neighbour, in a one-shot socket.
pub fn neigh_probe(ifindex: u32, addr: IpAddr) -> Result<(), NlError> {
    Netlink::open()?.neigh_probe(ifindex, addr)
}

/// The Ethernet address of an interface, in a one-shot socket.
pub fn link_mac(ifindex: u32) -> Result<[u8; 6], NlError> {
    Netlink::open()?.link_mac(ifindex)
}

/// The MTU of an interface, in a one-shot socket.
pub fn link_mtu(ifindex: u32) -> Result<u32, NlError> {
    Netlink::open()?.link_mtu(ifindex)
}

/// Builds one request message: header, fixed body, attributes.
struct Request {
    buf: Vec<u8>,
}

impl Request {
    fn new(ty: u16, flags: u16) -> Request {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence, set by finish
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: 0, the kernel fills it
        Request { buf }
    }

    fn body(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.pad();
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) {
        // Attribute payloads here are at most 16 bytes, so the length fits.
        let len = (4 + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() & 3 != 0 {
            self.buf.push(0);
        }
    }

    fn finish(&mut self, seq: u32) -> &[u8] {
        // Requests are a few dozen bytes: the length fits in u32.
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.buf
    }
}

fn ndmsg(family: u8, ifindex: u32, state: u16, flags: u8) -> [u8; abi::NDMSG_LEN] {
    let mut m = [0u8; abi::NDMSG_LEN];
    m[0] = family;
    m[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    m[8..10].copy_from_slice(&state.to_ne_bytes());
    m[10] = flags;
    m
}

fn family_of(addr: IpAddr) -> (u8, u8) {
    match addr {
        IpAddr::V4(_) => (abi::AF_INET, 4),
        IpAddr::V6(_) => (abi::AF_INET6, 16),
    }
}

/// The address's bytes in network order, in a fixed buffer (no allocation).
fn ip_octets(addr: IpAddr) -> IpBytes {
    match addr {
        IpAddr::V4(a) => IpBytes::V4(a.octets()),
        IpAddr::V6(a) => IpBytes::V6(a.octets()),
    }
}

enum IpBytes {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl std::ops::Deref for IpBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            IpBytes::V4(b) => b,
            IpBytes::V6(b) => b,
        }
    }
}

/// One message of a datagram.
struct Msg<'a> {
    ty: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The messages of a datagram, bounds-checked.
struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Messages { rest: buf }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Msg<'a>, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = (|| {
            let len = read_u32(self.rest, 0).ok_or("truncated message header")? as usize;
            if len < abi::NLMSG_HDRLEN {
                return Err("message length below header size");
            }
            let whole = self.rest.get(..len).ok_or("message longer than datagram")?;
            let ty = read_u16(whole, 4).ok_or("truncated message header")?;
            let seq = read_u32(whole, 8).ok_or("truncated message header")?;
            let payload = &whole[abi::NLMSG_HDRLEN..];
            // The next message starts 4-byte aligned; the last one may lack
            // its padding.
            let next = align4(len).min(self.rest.len());
            self.rest = &self.rest[next..];
            Ok(Msg { ty, seq, payload })
        })();
        if item.is_err() {
            // Stop after the first error: the rest cannot be delimited.
            self.rest = &[];
        }
        Some(item)
    }
}

/// The attributes following a fixed header, bounds-checked.
struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = (|| {
            let len = read_u16(self.rest, 0).ok_or("truncated attribute header")? as usize;
            if len < 4 {
                return Err("attribute length below header size");
            }
            let whole = self
                .rest
                .get(..len)
                .ok_or("attribute longer than message")?;
            let ty = read_u16(whole, 2).ok_or("truncated attribute header")? & abi::NLA_TYPE_MASK;
            let next = align4(len).min(self.rest.len());
            self.rest = &self.rest[next..];
            Ok((ty, &whole[4..]))
        })();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

/// The attributes after a fixed header of `fixed` bytes.
fn attrs(payload: &[u8], fixed: usize) -> Result<Attrs<'_>, &'static str> {
    // The fixed headers used here are all multiples of 4 bytes long.
    let rest = payload
        .get(align4(fixed)..)
        .ok_or("truncated fixed header")?;
    Ok(Attrs { rest })
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn read_u16(b: &[u8], off: usize) -> Option<u16> {
    let bytes = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_ne_bytes([bytes[0], bytes[1]]))
}

fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    let bytes = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn read_i32(b: &[u8], off: usize) -> Option<i32> {
    read_u32(b, off).map(|v| v as i32)
}

/// An address attribute of the given family.
fn parse_addr(family: u8, b: &[u8]) -> Result<IpAddr, &'static str> {
    match (family, b.len()) {
        (abi::AF_INET, 4) => Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        (abi::AF_INET6, 16) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(b);
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => Err("address attribute of wrong length or family"),
    }
}

fn parse_u32_attr(b: &[u8]) -> Result<u32, &'static str> {
    match b.len() {
        4 => Ok(u32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
        _ => Err("u32 attribute of wrong length"),
    }
}

/// `NLMSG_ERROR` payload: the (negative) errno, 0 for an acknowledgement.
/// Returns the positive errno.
fn parse_error(payload: &[u8]) -> Result<i32, &'static str> {
    let code = read_i32(payload, 0).ok_or("truncated error message")?;
    if code > 0 {
        return Err("positive error code");
    }
    code.checked_neg().ok_or("error code out of range")
}

/// An `RTM_NEWROUTE` payload.
fn parse_route(payload: &[u8]) -> Result<Route, &'static str> {
    let rtm = payload.get(..abi::RTMSG_LEN).ok_or("truncated rtmsg")?;
    let family = rtm[0];
    let mut route = Route {
        kind: RouteKind::from_rtm_type(rtm[7]),
        oif: None,
        gateway: None,
        prefsrc: None,
        mtu: None,
        table: u32::from(rtm[4]),
    };
    for attr in attrs(payload, abi::RTMSG_LEN)? {
        let (ty, val) = attr?;
        match ty {
            abi::RTA_OIF => route.oif = Some(parse_u32_attr(val)?),
            abi::RTA_GATEWAY => route.gateway = Some(parse_addr(family, val)?),
            abi::RTA_PREFSRC => route.prefsrc = Some(parse_addr(family, val)?),
            abi::RTA_TABLE => route.table = parse_u32_attr(val)?,
            abi::RTA_VIA => {
                // struct rtvia: a u16 family, then the address (an IPv4
                // route with an IPv6 next hop, RFC 5549).
                let fam = read_u16(val, 0).ok_or("truncated RTA_VIA")?;
                let fam = u8::try_from(fam).map_err(|_| "RTA_VIA family out of range")?;
                route.gateway = Some(parse_addr(fam, &val[2..])?);
            }
            abi::RTA_METRICS => {
                for metric in (Attrs { rest: val }) {
                    let (mty, mval) = metric?;
                    if mty == abi::RTAX_MTU {
                        route.mtu = Some(parse_u32_attr(mval)?).filter(|&m| m != 0);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(route)
}

/// An `RTM_NEWNEIGH` payload.
fn parse_neigh(payload: &[u8]) -> Result<Neigh, &'static str> {
    let ndm = payload.get(..abi::NDMSG_LEN).ok_or("truncated ndmsg")?;
    let state = NudState(u16::from_ne_bytes([ndm[8], ndm[9]]));
    let mut mac = None;
    for attr in attrs(payload, abi::NDMSG_LEN)? {
        let (ty, val) = attr?;
        if ty == abi::NDA_LLADDR {
            mac = <[u8; 6]>::try_from(val).ok();
        }
    }
    Ok(Neigh { state, mac })
}

/// An `RTM_NEWLINK` payload.
fn parse_link(payload: &[u8]) -> Result<Link, &'static str> {
    let ifi = payload
        .get(..abi::IFINFOMSG_LEN)
        .ok_or("truncated ifinfomsg")?;
    let index = read_u32(ifi, 4).ok_or("truncated ifinfomsg")?;
    let flags = read_u32(ifi, 8).ok_or("truncated ifinfomsg")?;
    let mut link = Link {
        index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: flags & abi::IFF_UP != 0,
    };
    let mut have_mtu = false;
    for attr in attrs(payload, abi::IFINFOMSG_LEN)? {
        let (ty, val) = attr?;
        match ty {
            abi::IFLA_ADDRESS => link.mac = <[u8; 6]>::try_from(val).ok(),
            abi::IFLA_MTU => {
                link.mtu = parse_u32_attr(val)?;
                have_mtu = true;
            }
            abi::IFLA_IFNAME => {
                let name = val.split(|&b| b == 0).next().unwrap_or(&[]);
                link.name = String::from_utf8_lossy(name).into_owned();
            }
            _ => {}
        }
    }
    if !have_mtu {
        return Err("link without IFLA_MTU");
    }
    Ok(link)
}

/// Network-namespace fixtures for the tests of this module and `neigh.rs`:
/// two namespaces joined by a veth pair, documentation addresses only, no
/// route toward the host network, always removed (Drop).
#[cfg(test)]
pub(crate) mod testns {
    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Side A's address on the veth, IPv4 and IPv6.
    pub const A4: &str = "198.51.100.1";
    /// Side B's address on the veth, IPv4 and IPv6.
    pub const B4: &str = "198.51.100.2";
    pub const A6: &str = "2001:db8:1::1";
    pub const B6: &str = "2001:db8:1::2";

    /// Two namespaces `a` and `b`, joined by veth `va` (in a) / `vb` (in b).
    /// In a: 203.0.113.0/24 and 2001:db8:2::/64 via b; 192.0.2.0/26 and
    /// 2001:db8:ff::/48 unreachable; 192.0.2.64/26 blackhole; 192.0.2.128/26
    /// prohibit; no route at all to 192.0.2.192/26 and the rest of
    /// 2001:db8::/32.
    pub struct Lab {
        pub a: String,
        pub b: String,
    }

    /// Whether namespace tests can run here; prints why not when they cannot.
    pub fn available(test: &str) -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("{test}: skipped: needs root to create network namespaces");
            return false;
        }
        if Command::new("ip").arg("-V").output().is_err() {
            eprintln!("{test}: skipped: the `ip` command (iproute2) is not installed");
            return false;
        }
        true
    }

    fn ip(args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(args)
            .output()
            .expect("ip runs (checked by `available`)");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    impl Lab {
        /// Builds the lab; panics (after cleaning up) when a step fails.
        pub fn new() -> Lab {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let pid = std::process::id();
            let lab = Lab {
                a: format!("uvsnl-{pid}-{n}-a"),
                b: format!("uvsnl-{pid}-{n}-b"),
            };
            let (a, b) = (lab.a.as_str(), lab.b.as_str());
            ip(&["netns", "add", a]);
            ip(&["netns", "add", b]);
            ip(&[
                "link", "add", "va", "netns", a, "type", "veth", "peer", "name", "vb", "netns", b,
            ]);
            for (ns, dev, v4, v6) in [(a, "va", A4, A6), (b, "vb", B4, B6)] {
                // Without DAD the link-local address is usable at once: the
                // kernel sends no neighbour solicitation while its only
                // link-local source is still tentative (~1 s after link up),
                // which a long-running host never sees but a fresh lab does.
                ip(&[
                    "netns",
                    "exec",
                    ns,
                    "sh",
                    "-c",
                    &format!("echo 0 > /proc/sys/net/ipv6/conf/{dev}/accept_dad"),
                ]);
                ip(&["-n", ns, "link", "set", "lo", "up"]);
                ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
                ip(&[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    dev,
                    "nodad",
                ]);
                ip(&["-n", ns, "link", "set", dev, "up"]);
            }
            // Carrier and operstate follow link-up asynchronously (linkwatch
            // batches them, up to a second): until then the peer's IPv6 does
            // not answer solicitations. Wait so tests start on a settled link.
            let start = std::time::Instant::now();
            while [(a, "va"), (b, "vb")]
                .iter()
                .any(|(ns, dev)| !ip(&["-n", ns, "-o", "link", "show", dev]).contains("state UP"))
            {
                assert!(start.elapsed().as_secs() < 5, "veth never came up");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            ip(&["-n", a, "route", "add", "203.0.113.0/24", "via", B4]);
            ip(&["-n", a, "-6", "route", "add", "2001:db8:2::/64", "via", B6]);
            ip(&["-n", a, "route", "add", "unreachable", "192.0.2.0/26"]);
            ip(&["-n", a, "route", "add", "blackhole", "192.0.2.64/26"]);
            ip(&["-n", a, "route", "add", "prohibit", "192.0.2.128/26"]);
            ip(&[
                "-n",
                a,
                "-6",
                "route",
                "add",
                "unreachable",
                "2001:db8:ff::/48",
            ]);
            lab
        }

        /// Runs `f` on a fresh thread inside namespace `ns`.
        pub fn run_in<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> T {
            let path = format!("/var/run/netns/{ns}");
            std::thread::scope(|s| {
                s.spawn(|| {
                    let file =
                        File::open(&path).expect("namespace file exists while the lab lives");
                    // SAFETY: `file` is an open namespace descriptor; setns
                    // only changes this (test-owned) thread's namespace.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
        }

        /// The interface index of `dev` in `ns`.
        pub fn ifindex(&self, ns: &str, dev: &str) -> u32 {
            let out = ip(&["-n", ns, "-o", "link", "show", dev]);
            out.split(':')
                .next()
                .and_then(|s| s.trim().parse().ok())
                .expect("`ip -o link show` starts with the index")
        }

        /// The MAC of `dev` in `ns`, as `ip link` shows it.
        pub fn mac(&self, ns: &str, dev: &str) -> [u8; 6] {
            let out = ip(&["-n", ns, "-o", "link", "show", dev]);
            let text = out
                .split_whitespace()
                .skip_while(|w| *w != "link/ether")
                .nth(1)
                .expect("`ip link` shows link/ether");
            let mut mac = [0u8; 6];
            for (i, part) in text.split(':').enumerate() {
                mac[i] = u8::from_str_radix(part, 16).expect("hex MAC");
            }
            mac
        }

        /// Runs an `ip` command (arguments as given).
        pub fn ip(&self, args: &[&str]) -> String {
            ip(args)
        }
    }

    impl Drop for Lab {
        fn drop(&mut self) {
            for ns in [&self.a, &self.b] {
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testns::{self, Lab, A4, A6, B4, B6};
    use super::*;
    use std::time::{Duration, Instant};

    fn fmt_mac(m: [u8; 6]) -> String {
        m.map(|b| format!("{b:02x}")).join(":")
    }

    fn v(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    /// Polls `neigh_get` until the entry is usable or `limit` passes.
    fn wait_usable(nl: &mut Netlink, ifindex: u32, addr: IpAddr, limit: Duration) -> Option<Neigh> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(n) = nl.neigh_get(ifindex, addr).expect("neigh_get") {
                if n.usable_mac().is_some() {
                    return Some(n);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    #[test]
    fn probe_resolves_unknown_neighbour() {
        if !testns::available("probe_resolves_unknown_neighbour") {
            return;
        }
        let lab = Lab::new();
        let va = lab.ifindex(&lab.a, "va");
        let peer_mac = lab.mac(&lab.b, "vb");
        let my_mac = lab.mac(&lab.a, "va");
        for (peer, family) in [(B4, "-4"), (B6, "-6")] {
            let peer_table = || lab.ip(&["-n", &lab.b, family, "neigh", "show", "dev", "vb"]);
            assert_eq!(peer_table().trim(), "", "{peer}: the peer knows nobody yet");
            let (state_before, neigh) = lab.run_in(&lab.a, || {
                let mut nl = Netlink::open().expect("open");
                let before = nl.neigh_get(va, v(peer)).expect("neigh_get");
                nl.neigh_probe(va, v(peer)).expect("probe");
                (
                    before,
                    wait_usable(&mut nl, va, v(peer), Duration::from_secs(2)),
                )
            });
            assert_eq!(
                state_before, None,
                "{peer}: never contacted, so no entry yet"
            );
            let neigh = neigh.unwrap_or_else(|| panic!("{peer}: not resolved after the probe"));
            assert_eq!(neigh.mac, Some(peer_mac), "{peer}");
            assert_eq!(neigh.state, NudState::REACHABLE, "{peer}");
            // The peer learnt our MAC from the request it answered: the probe
            // really went out on the wire.
            assert!(
                peer_table().contains(&fmt_mac(my_mac)),
                "{peer}: the peer saw no request: {}",
                peer_table()
            );
        }
    }

    #[test]
    fn route_get_connected_gateway_local_and_unreachable() {
        if !testns::available("route_get_connected_gateway_local_and_unreachable") {
            return;
        }
        let lab = Lab::new();
        let va = lab.ifindex(&lab.a, "va");
        let routes = lab.run_in(&lab.a, || {
            let mut nl = Netlink::open().expect("open");
            [
                B4,
                A4,
                "203.0.113.7",
                "192.0.2.1",
                "192.0.2.65",
                "192.0.2.129",
                "192.0.2.200",
                B6,
                A6,
                "2001:db8:2::5",
                "2001:db8:ff::1",
                "2001:db8:99::1",
            ]
            .map(|d| (d, nl.route_get(v(d)).expect("route_get")))
        });
        let get = |d: &str| {
            routes
                .iter()
                .find(|(x, _)| *x == d)
                .map(|(_, r)| r.clone())
                .expect("asked")
        };

        for (dst, src) in [(B4, A4), (B6, A6)] {
            let r = get(dst);
            assert_eq!(r.kind, RouteKind::Unicast, "{dst}");
            assert_eq!(r.oif, Some(va), "{dst}");
            assert_eq!(r.gateway, None, "{dst}: connected");
            assert_eq!(r.prefsrc, Some(v(src)), "{dst}");
            assert_eq!(r.next_hop(v(dst)), v(dst));
        }
        for (dst, gw, src) in [("203.0.113.7", B4, A4), ("2001:db8:2::5", B6, A6)] {
            let r = get(dst);
            assert_eq!(r.kind, RouteKind::Unicast, "{dst}");
            assert_eq!(r.oif, Some(va), "{dst}");
            assert_eq!(r.gateway, Some(v(gw)), "{dst}");
            assert_eq!(r.prefsrc, Some(v(src)), "{dst}");
            assert_eq!(r.next_hop(v(dst)), v(gw));
            assert!(!r.is_local() && !r.is_unreachable());
        }
        for dst in [A4, A6] {
            assert!(get(dst).is_local(), "{dst}: our own address");
        }
        for (dst, kind) in [
            ("192.0.2.1", RouteKind::Unreachable),
            ("192.0.2.65", RouteKind::Blackhole),
            ("192.0.2.129", RouteKind::Prohibit),
            ("192.0.2.200", RouteKind::Unreachable),
            ("2001:db8:ff::1", RouteKind::Unreachable),
            ("2001:db8:99::1", RouteKind::Unreachable),
        ] {
            let r = get(dst);
            assert_eq!(r.kind, kind, "{dst}");
            assert!(r.is_unreachable(), "{dst}");
        }
    }

    #[test]
    fn link_mac_and_mtu_match_ip_link() {
        if !testns::available("link_mac_and_mtu_match_ip_link") {
            return;
        }
        let lab = Lab::new();
        lab.ip(&["-n", &lab.a, "link", "set", "va", "mtu", "1400"]);
        let va = lab.ifindex(&lab.a, "va");
        let (link, mac, mtu, missing) = lab.run_in(&lab.a, || {
            let mut nl = Netlink::open().expect("open");
            (
                nl.link(va).expect("link"),
                link_mac(va).expect("link_mac"),
                link_mtu(va).expect("link_mtu"),
                nl.link(va + 1000).expect_err("no such interface"),
            )
        });
        assert_eq!(link.name, "va");
        assert!(link.up);
        assert_eq!(link.index, va);
        assert_eq!(mac, lab.mac(&lab.a, "va"));
        assert_eq!(link.mac, Some(mac));
        assert_eq!(mtu, 1400);
        assert_eq!(missing.errno(), Some(libc::ENODEV));
    }

    #[test]
    fn neigh_get_reports_permanent_and_incomplete_entries() {
        if !testns::available("neigh_get_reports_permanent_and_incomplete_entries") {
            return;
        }
        let lab = Lab::new();
        let va = lab.ifindex(&lab.a, "va");
        // A hand-made entry (what `ip neigh add` does); and an address nobody
        // answers for, which is INCOMPLETE (later FAILED), never usable.
        lab.ip(&[
            "-n",
            &lab.a,
            "neigh",
            "add",
            "198.51.100.9",
            "lladdr",
            "02:00:00:00:00:09",
            "dev",
            "va",
        ]);
        let silent = v("198.51.100.10");
        let (perm, failed) = lab.run_in(&lab.a, || {
            let mut nl = Netlink::open().expect("open");
            let perm = nl.neigh_get(va, v("198.51.100.9")).expect("neigh_get");
            nl.neigh_probe(va, silent).expect("probe");
            let first = nl.neigh_get(va, silent).expect("neigh_get");
            (perm, first)
        });
        let perm = perm.expect("entry exists");
        assert_eq!(perm.state, NudState::PERMANENT);
        assert_eq!(perm.usable_mac(), Some([2, 0, 0, 0, 0, 9]));
        let failed = failed.expect("the probe created the entry");
        assert_eq!(failed.state, NudState::INCOMPLETE);
        assert_eq!(failed.usable_mac(), None);
    }

    // ---- parsing: byte fixtures and malformed input ----

    /// A kernel answer to `ip route get 203.0.113.7` (little-endian host):
    /// nlmsghdr, rtmsg, then RTA_TABLE, RTA_DST, RTA_OIF, RTA_PREFSRC,
    /// RTA_GATEWAY, RTA_METRICS{RTAX_MTU 1400}, RTA_UID.
    #[cfg(target_endian = "little")]
    const ROUTE_ANSWER: [u8; 88] = [
        88, 0, 0, 0, 24, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, // hdr: len 88, RTM_NEWROUTE, seq 7
        2, 32, 0, 0, 254, 0, 0, 1, 0, 2, 0, 0, // rtmsg: AF_INET /32 main unicast, CLONED
        8, 0, 15, 0, 254, 0, 0, 0, // RTA_TABLE 254
        8, 0, 1, 0, 203, 0, 113, 7, // RTA_DST
        8, 0, 4, 0, 2, 0, 0, 0, // RTA_OIF 2
        8, 0, 7, 0, 198, 51, 100, 1, // RTA_PREFSRC
        8, 0, 5, 0, 198, 51, 100, 2, // RTA_GATEWAY
        12, 0, 8, 0x80, 8, 0, 2, 0, 120, 5, 0, 0, // RTA_METRICS (nested) { RTAX_MTU 1400 }
        8, 0, 25, 0, 0, 0, 0, 0, // RTA_UID 0
    ];

    /// A kernel answer to a neighbour get: REACHABLE, lladdr 02:00:00:00:00:02.
    #[cfg(target_endian = "little")]
    const NEIGH_ANSWER: [u8; 48] = [
        48, 0, 0, 0, 28, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, // hdr: RTM_NEWNEIGH, seq 3
        2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 1, // ndmsg: AF_INET, ifindex 2, REACHABLE
        8, 0, 1, 0, 198, 51, 100, 2, // NDA_DST
        10, 0, 2, 0, 2, 0, 0, 0, 0, 2, 0, 0, // NDA_LLADDR (6 bytes + 2 padding)
    ];

    #[cfg(target_endian = "little")]
    #[test]
    fn parse_route_fixture() {
        let msgs: Vec<_> = Messages::new(&ROUTE_ANSWER).collect();
        assert_eq!(msgs.len(), 1);
        let msg = msgs.into_iter().next().expect("one").expect("well formed");
        assert_eq!((msg.ty, msg.seq), (abi::RTM_NEWROUTE, 7));
        let r = parse_route(msg.payload).expect("route");
        assert_eq!(
            r,
            Route {
                kind: RouteKind::Unicast,
                oif: Some(2),
                gateway: Some(v("198.51.100.2")),
                prefsrc: Some(v("198.51.100.1")),
                mtu: Some(1400),
                table: 254,
            }
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn parse_neigh_fixture() {
        let msg = Messages::new(&NEIGH_ANSWER)
            .next()
            .expect("one")
            .expect("well formed");
        let n = parse_neigh(msg.payload).expect("neigh");
        assert_eq!(n.state, NudState::REACHABLE);
        assert_eq!(n.usable_mac(), Some([2, 0, 0, 0, 0, 2]));
    }

    #[test]
    fn parse_error_codes() {
        assert_eq!(parse_error(&0i32.to_ne_bytes()), Ok(0));
        assert_eq!(parse_error(&(-19i32).to_ne_bytes()), Ok(19));
        assert!(parse_error(&i32::MIN.to_ne_bytes()).is_err());
        assert!(parse_error(&5i32.to_ne_bytes()).is_err());
        assert!(parse_error(&[0, 0]).is_err());
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn malformed_messages_are_errors() {
        // Message length below the header size.
        let mut m = ROUTE_ANSWER;
        m[0] = 8;
        assert!(Messages::new(&m).next().expect("item").is_err());
        // Message length beyond the datagram.
        let mut m = ROUTE_ANSWER;
        m[0] = 200;
        assert!(Messages::new(&m).next().expect("item").is_err());
        // An attribute of length 2 (below its own header).
        let mut m = ROUTE_ANSWER;
        m[28] = 2;
        assert!(parse_route(&m[16..]).is_err());
        // An attribute running past the message.
        let mut m = ROUTE_ANSWER;
        m[80] = 40;
        assert!(parse_route(&m[16..]).is_err());
        // A gateway of 3 bytes.
        let mut m = ROUTE_ANSWER;
        m[60] = 7;
        assert!(parse_route(&m[16..]).is_err());
        // Truncations of valid answers: every prefix is an error or a clean
        // parse of what is there, never a panic.
        for cut in 0..ROUTE_ANSWER.len() {
            let _ = parse_route(&ROUTE_ANSWER[16.min(cut)..cut]);
            for msg in Messages::new(&ROUTE_ANSWER[..cut]) {
                let _ = msg.map(|m| parse_route(m.payload));
            }
        }
        assert!(parse_route(&ROUTE_ANSWER[16..20]).is_err());
        assert!(parse_neigh(&NEIGH_ANSWER[16..24]).is_err());
        assert!(parse_link(&[0; 20]).is_err(), "a link without MTU");
    }

    #[test]
    fn random_bytes_never_panic_the_parsers() {
        // xorshift64*: deterministic, no dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let mut buf = [0u8; 96];
        for round in 0..20_000 {
            let len = (next() % 97) as usize;
            for b in buf.iter_mut().take(len) {
                *b = next() as u8;
            }
            // Small length fields make the walkers actually iterate.
            if len >= 4 && round % 2 == 0 {
                buf[0] = (next() % 100) as u8;
                buf[1] = 0;
                buf[2] = 0;
                buf[3] = 0;
            }
            let b = &buf[..len];
            for m in Messages::new(b).flatten() {
                let _ = parse_route(m.payload);
                let _ = parse_neigh(m.payload);
                let _ = parse_link(m.payload);
                let _ = parse_error(m.payload);
            }
            let _ = parse_route(b);
            let _ = parse_neigh(b);
            let _ = parse_link(b);
        }
    }

    #[test]
    fn nud_states() {
        for s in [
            NudState::REACHABLE,
            NudState::STALE,
            NudState::DELAY,
            NudState::PROBE,
            NudState::PERMANENT,
            NudState::NOARP,
        ] {
            assert!(s.is_usable(), "{s:?}");
        }
        for s in [NudState::NONE, NudState::INCOMPLETE, NudState::FAILED] {
            assert!(!s.is_usable(), "{s:?}");
        }
        assert_eq!(format!("{:?}", NudState(0x06)), "REACHABLE|STALE");
        assert_eq!(format!("{:?}", NudState::NONE), "NONE");
        let n = Neigh {
            state: NudState::FAILED,
            mac: Some([1; 6]),
        };
        assert_eq!(n.usable_mac(), None);
    }
}
