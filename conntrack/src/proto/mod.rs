//! Per-protocol state machines and the protocol-independent view of a
//! connection's state.
//!
//! TCP and SCTP have table-driven machines ([`tcp`], [`sctp`]); UDP and every
//! other IP protocol have one state (`UDP`, counted inactive, one timeout).
//! ICMP is never a connection of its own: an ICMP error is *related* to the
//! connection its embedded header names (see `Table::lookup_related`).

pub mod sctp;
pub mod tcp;

use sctp::SctpState;
use tcp::TcpState;

/// IP protocol numbers the table distinguishes.
pub mod ipproto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// A connection's state, interpreted for its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnState {
    /// A TCP connection.
    Tcp(TcpState),
    /// An SCTP association.
    Sctp(SctpState),
    /// UDP and every other protocol: one state.
    Udp,
}

impl ConnState {
    /// Decodes the stored state byte for protocol `proto`.
    pub(crate) const fn decode(proto: u8, v: u8) -> Self {
        match proto {
            ipproto::TCP => ConnState::Tcp(TcpState::from_u8(v)),
            ipproto::SCTP => ConnState::Sctp(SctpState::from_u8(v)),
            _ => ConnState::Udp,
        }
    }

    /// The state with the kernel's number `n` for protocol `proto` (the
    /// numbering sync messages carry, which uvs's states share); `None`
    /// beyond the protocol's states.
    pub fn from_number(proto: u8, n: u16) -> Option<Self> {
        let count = match proto {
            ipproto::TCP => tcp::TCP_STATES,
            ipproto::SCTP => sctp::SCTP_STATES,
            _ => 1,
        };
        ((n as usize) < count).then(|| ConnState::decode(proto, n as u8))
    }

    /// The kernel's number of the state (0 for UDP's one state).
    pub const fn number(self) -> u16 {
        match self {
            ConnState::Tcp(s) => s as u16,
            ConnState::Sctp(s) => s as u16,
            ConnState::Udp => 0,
        }
    }

    pub(crate) const fn encode(self) -> u8 {
        self.number() as u8
    }

    /// The name `ipvsadm -L -c` prints (`UDP` for UDP and other protocols).
    pub const fn name(self) -> &'static str {
        match self {
            ConnState::Tcp(s) => s.name(),
            ConnState::Sctp(s) => s.name(),
            ConnState::Udp => "UDP",
        }
    }

    /// Counted as ActiveConn.
    pub const fn is_active(self) -> bool {
        match self {
            ConnState::Tcp(s) => s.is_active(),
            ConnState::Sctp(s) => s.is_active(),
            ConnState::Udp => false,
        }
    }
}

/// May a packet with these properties create a connection entry?
///
/// TCP: a SYN without RST, or any segment without RST under `sloppy_tcp`
/// (pick-up of flows already in progress, e.g. after a failover). SCTP: an
/// INIT chunk, or any chunk but ABORT under `sloppy_sctp`. UDP and other
/// protocols: always. `tcp_flags` is the TCP flag byte for TCP and the first
/// chunk type for SCTP (see [`crate::PacketInfo`]).
#[inline]
pub fn may_create(proto: u8, info: &crate::PacketInfo, cfg: &crate::Knobs) -> bool {
    match proto {
        ipproto::TCP => {
            info.tcp_flags & tcp::flags::RST == 0
                && (info.tcp_flags & tcp::flags::SYN != 0 || cfg.sloppy_tcp)
        }
        ipproto::SCTP => {
            info.sctp_chunk == sctp::chunk::INIT
                || (cfg.sloppy_sctp && info.sctp_chunk != sctp::chunk::ABORT)
        }
        ipproto::ICMP | ipproto::ICMPV6 => false,
        _ => true,
    }
}

/// A packet that opens a new connection on a tuple that may already exist:
/// a TCP SYN or an SCTP INIT (the kernel's `is_new_conn`).
#[inline]
pub(crate) fn is_new_conn(proto: u8, info: &crate::PacketInfo) -> bool {
    match proto {
        ipproto::TCP => info.tcp_flags & tcp::flags::SYN != 0,
        ipproto::SCTP => info.sctp_chunk == sctp::chunk::INIT,
        _ => false,
    }
}
