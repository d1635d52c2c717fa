//! A small rtnetlink client: routes, neighbours, links and addresses of the
//! current network namespace, and the kernel's notifications of their
//! changes. Messages are built and parsed by `netlink-packet-route`; the
//! socket is `netlink-sys`'s. Everything is synchronous.
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
//! * [`Netlink::link`] reads an interface's Ethernet address and MTU;
//!   [`Netlink::links`] and [`Netlink::addrs`] dump every interface and every
//!   address (what `ip link` and `ip addr` show).
//! * [`Events`] is a second kind of socket: subscribed to multicast groups
//!   ([`Group`]), non-blocking, to be waited on with poll/mio. Its
//!   [`Events::drain`] hands over each change as an [`Event`]. When the
//!   kernel had to drop notifications (the socket's buffer overflowed) or one
//!   does not parse, the caller gets [`Event::Resync`]: re-read what it
//!   follows, because some change was missed.
//! * IPv4 and IPv6 throughout. A malformed message from the kernel is
//!   [`NlError::Malformed`] (or a resync for events), never a panic.
//!
//! This is control-path code (it allocates and makes syscalls); the packet
//! path reads its results from the cache in `neigh.rs`.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// How long a request waits for the kernel's answer. The kernel answers
/// rtnetlink requests at once; this only bounds a wait on a lost answer.
const RECV_TIMEOUT: Duration = Duration::from_secs(2);
/// Receive buffer: larger than any single datagram of the answers asked for
/// here (link answers are requested without statistics; dumps come in
/// datagrams of at most a page or two each).
const RECV_BUF_LEN: usize = 64 * 1024;
/// Kernel-side buffer of an event socket: room for a burst of changes (a
/// route flush, an interface going down with many neighbours) before the
/// kernel has to drop notifications and the caller resyncs.
const EVENTS_RCVBUF: usize = 4 << 20;

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
        what: String,
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

/// One rtnetlink socket in the namespace it was opened in.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.sock.as_raw_fd())
            .field("seq", &self.seq)
            .finish()
    }
}

/// What a request expects back.
enum Answer<T> {
    Data(T),
    Ack,
}

/// Errno of an error message, `None` for an acknowledgement.
fn errno_of(code: Option<std::num::NonZeroI32>) -> Option<i32> {
    // The kernel sends negative errnos; take the magnitude either way.
    code.map(|c| c.get().saturating_abs())
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, NlError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(NlError::Socket)?;
        sock.bind_auto().map_err(NlError::Socket)?;
        socket2::SockRef::from(&sock)
            .set_read_timeout(Some(RECV_TIMEOUT))
            .map_err(NlError::Socket)?;
        Ok(Netlink {
            sock,
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
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(dst);
        // A host lookup: the full address length.
        msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        let answer =
            self.transact(
                OP,
                RouteNetlinkMessage::GetRoute(msg),
                NLM_F_REQUEST,
                |m| match m {
                    RouteNetlinkMessage::NewRoute(r) => Ok(route_of(&r)),
                    _ => Err("unexpected message type".into()),
                },
            );
        match answer {
            Ok(Answer::Data(route)) => Ok(route),
            Ok(Answer::Ack) => Err(malformed(OP, "acknowledgement instead of a route")),
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
        let msg = neigh_msg(ifindex, addr, NeighbourFlags::empty());
        let answer = self.transact(
            OP,
            RouteNetlinkMessage::GetNeighbour(msg),
            NLM_F_REQUEST,
            |m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => Ok(neigh_of(&n)),
                _ => Err("unexpected message type".into()),
            },
        );
        match answer {
            Ok(Answer::Data(neigh)) => Ok(Some(neigh)),
            Ok(Answer::Ack) => Err(malformed(OP, "acknowledgement instead of a neighbour")),
            Err(NlError::Kernel { errno, .. }) if errno == libc::ENOENT => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes the kernel resolve `addr` on `ifindex` as if it had a packet to
    /// send there: creates the entry when missing and sends an ARP request or
    /// neighbour solicitation (or re-confirms a stale entry). Returns once
    /// the kernel accepted the request; the answer arrives asynchronously
    /// (an `RTM_NEWNEIGH` notification, or poll [`Netlink::neigh_get`]).
    pub fn neigh_probe(&mut self, ifindex: u32, addr: IpAddr) -> Result<(), NlError> {
        const OP: &str = "RTM_NEWNEIGH";
        // State NONE: NTF_USE never writes a state, it only triggers the
        // kernel's own resolution ("use" the entry like an outgoing packet).
        let msg = neigh_msg(ifindex, addr, NeighbourFlags::Use);
        match self.transact(
            OP,
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
            |_| Err::<(), _>("unexpected data answer".into()),
        )? {
            Answer::Ack => Ok(()),
            Answer::Data(()) => Err(malformed(OP, "data instead of an acknowledgement")),
        }
    }

    /// Sends a change (`RTM_NEW*` / `RTM_DEL*`, with `flags` besides
    /// request and ack) and waits for the kernel's acknowledgement.
    pub fn change(
        &mut self,
        op: &'static str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), NlError> {
        let f = NLM_F_REQUEST | NLM_F_ACK | flags;
        match self.transact(op, msg, f, |_| Err::<(), _>("unexpected data".into()))? {
            Answer::Ack => Ok(()),
            Answer::Data(()) => Err(malformed(op, "data instead of an acknowledgement")),
        }
    }

    /// Interface `ifindex`: name, Ethernet address, MTU, flags.
    pub fn link(&mut self, ifindex: u32) -> Result<Link, NlError> {
        const OP: &str = "RTM_GETLINK";
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        match self.transact(
            OP,
            RouteNetlinkMessage::GetLink(msg),
            NLM_F_REQUEST,
            |m| match m {
                RouteNetlinkMessage::NewLink(l) => link_of(&l),
                _ => Err("unexpected message type".into()),
            },
        )? {
            Answer::Data(link) => Ok(link),
            Answer::Ack => Err(malformed(OP, "acknowledgement instead of a link")),
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

    /// Every interface of the namespace (`ip link`).
    pub fn links(&mut self) -> Result<Vec<Link>, NlError> {
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let mut out = Vec::new();
        self.dump("RTM_GETLINK", RouteNetlinkMessage::GetLink(msg), |m| {
            if let RouteNetlinkMessage::NewLink(l) = m {
                out.push(link_of(&l)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Every IPv4 and IPv6 address of the namespace with its interface
    /// index (`ip addr`).
    pub fn addrs(&mut self) -> Result<Vec<(u32, IpAddr)>, NlError> {
        let mut out = Vec::new();
        let msg = AddressMessage::default();
        self.dump("RTM_GETADDR", RouteNetlinkMessage::GetAddress(msg), |m| {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                if let Some(ip) = addr_of(&a) {
                    out.push((a.header.index, ip));
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Netlink::addrs`] with each address's prefix length.
    pub fn addrs_with_len(&mut self) -> Result<Vec<(u32, IpAddr, u8)>, NlError> {
        let mut out = Vec::new();
        let msg = AddressMessage::default();
        self.dump("RTM_GETADDR", RouteNetlinkMessage::GetAddress(msg), |m| {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                if let Some(ip) = addr_of(&a) {
                    out.push((a.header.index, ip, a.header.prefix_len));
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        msg.finalize();
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        self.sock
            .send_to(&bytes, &SocketAddr::new(0, 0), 0)
            .map_err(NlError::Socket)?;
        Ok(self.seq)
    }

    /// Reads datagrams and hands each message carrying sequence number `seq`
    /// to `each` until it says it is done (`Some`). Answers to earlier
    /// requests that timed out are skipped.
    fn read_answers<T>(
        &mut self,
        op: &'static str,
        seq: u32,
        mut each: impl FnMut(NetlinkPayload<RouteNetlinkMessage>) -> Result<Option<T>, NlError>,
    ) -> Result<T, NlError> {
        loop {
            let n = match self.sock.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        return Err(NlError::Timeout { op })
                    }
                    _ => return Err(NlError::Socket(e)),
                },
            };
            if n > self.buf.len() {
                return Err(malformed(op, "answer larger than the receive buffer"));
            }
            let mut off = 0;
            while off < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                    .map_err(|e| malformed(op, &e.to_string()))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(malformed(op, "message of length 0"));
                }
                off += len.next_multiple_of(4);
                if msg.header.sequence_number != seq {
                    continue;
                }
                if let Some(done) = each(msg.payload)? {
                    return Ok(done);
                }
            }
        }
    }

    /// Sends `msg` and reads until the answer carrying its sequence number.
    fn transact<T>(
        &mut self,
        op: &'static str,
        msg: RouteNetlinkMessage,
        flags: u16,
        mut parse: impl FnMut(RouteNetlinkMessage) -> Result<T, String>,
    ) -> Result<Answer<T>, NlError> {
        let seq = self.send(msg, flags)?;
        self.read_answers(op, seq, |payload| match payload {
            NetlinkPayload::Noop => Ok(None),
            NetlinkPayload::Error(e) => match errno_of(e.code) {
                None => Ok(Some(Answer::Ack)),
                Some(errno) => Err(NlError::Kernel { op, errno }),
            },
            NetlinkPayload::Done(_) => Err(malformed(op, "end of dump instead of an answer")),
            NetlinkPayload::InnerMessage(m) => parse(m)
                .map(|d| Some(Answer::Data(d)))
                .map_err(|what| NlError::Malformed { op, what }),
            _ => Err(malformed(op, "unexpected message type")),
        })
    }

    /// Sends a dump request and hands every message of the answer to `each`.
    fn dump(
        &mut self,
        op: &'static str,
        msg: RouteNetlinkMessage,
        mut each: impl FnMut(RouteNetlinkMessage) -> Result<(), String>,
    ) -> Result<(), NlError> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_DUMP)?;
        self.read_answers(op, seq, |payload| match payload {
            NetlinkPayload::Done(_) => Ok(Some(())),
            NetlinkPayload::Error(e) => match errno_of(e.code) {
                None => Ok(Some(())),
                Some(errno) => Err(NlError::Kernel { op, errno }),
            },
            NetlinkPayload::InnerMessage(m) => each(m)
                .map(|()| None)
                .map_err(|what| NlError::Malformed { op, what }),
            _ => Ok(None),
        })
    }
}

fn malformed(op: &'static str, what: &str) -> NlError {
    NlError::Malformed {
        op,
        what: what.to_string(),
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

/// Every interface, in a one-shot socket.
pub fn links() -> Result<Vec<Link>, NlError> {
    Netlink::open()?.links()
}

/// Every address with its interface index, in a one-shot socket.
pub fn addrs() -> Result<Vec<(u32, IpAddr)>, NlError> {
    Netlink::open()?.addrs()
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn neigh_msg(ifindex: u32, addr: IpAddr, flags: NeighbourFlags) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = family(addr);
    msg.header.ifindex = ifindex;
    msg.header.flags = flags;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::from(
            addr,
        )));
    msg
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// The fields of a route message forwarding needs.
fn route_of(m: &RouteMessage) -> Route {
    let mut r = Route {
        kind: RouteKind::from_route_type(m.header.kind),
        oif: None,
        gateway: None,
        prefsrc: None,
        mtu: None,
        table: u32::from(m.header.table),
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Gateway(g) => r.gateway = route_addr(g),
            // An IPv4 route via an IPv6 next hop (RFC 5549).
            RouteAttribute::Via(RouteVia::Inet(g)) => r.gateway = Some(IpAddr::V4(*g)),
            RouteAttribute::Via(RouteVia::Inet6(g)) => r.gateway = Some(IpAddr::V6(*g)),
            RouteAttribute::PrefSource(s) => r.prefsrc = route_addr(s),
            RouteAttribute::Table(t) => r.table = *t,
            RouteAttribute::Metrics(ms) => {
                for metric in ms {
                    if let RouteMetric::Mtu(mtu) = metric {
                        r.mtu = (*mtu > 0).then_some(*mtu);
                    }
                }
            }
            _ => {}
        }
    }
    r
}

fn neigh_addr(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })
}

fn neigh_of(m: &NeighbourMessage) -> Neigh {
    Neigh {
        state: NudState(u16::from(m.header.state)),
        mac: m.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(l) => <[u8; 6]>::try_from(l.as_slice()).ok(),
            _ => None,
        }),
    }
}

fn link_of(m: &LinkMessage) -> Result<Link, String> {
    let mut name = String::new();
    let mut mac = None;
    let mut mtu = None;
    let mut kind = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name.clone_from(n),
            LinkAttribute::LinkInfo(infos) => {
                kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                });
            }
            LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            LinkAttribute::Mtu(m) => mtu = Some(*m),
            _ => {}
        }
    }
    Ok(Link {
        index: m.header.index,
        name,
        mac,
        mtu: mtu.ok_or("a link without MTU")?,
        up: m.header.flags.contains(LinkFlags::Up),
        loopback: m.header.flags.contains(LinkFlags::Loopback),
        kind,
    })
}

/// The interface's own address of an address message: `IFA_LOCAL` where
/// present (on point-to-point links `IFA_ADDRESS` is the peer's), else
/// `IFA_ADDRESS` (IPv6 sends only that).
fn addr_of(m: &AddressMessage) -> Option<IpAddr> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

mod events;
pub use events::{in_prefix, Event, Events, Group};
mod types;
pub use types::{Link, Neigh, NudState, Route, RouteKind};
mod routes;
pub use routes::{routes, RouteEntry, TABLE_LOCAL, TABLE_MAIN};

#[cfg(test)]
pub(crate) mod testns;

#[cfg(test)]
mod tests;
