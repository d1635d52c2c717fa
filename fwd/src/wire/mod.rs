//! Zero-copy, checked views of the wire formats uvs forwards.
//!
//! Contract (smoltcp style, own code): each protocol has a `Packet<T: AsRef<[u8]>>`
//! (or `Frame` for Ethernet) view. `new_checked` validates the lengths the
//! view's accessors rely on; after it succeeds no getter can panic. Accessors
//! that reach past a validated header (payloads, options) are bounded, never
//! indexing blindly. Setters live on `T: AsMut<[u8]>`. Views never allocate.
//! Building whole packets for tests lives in [`crate::build`].

pub mod arp;
pub mod ethernet;
pub mod gre;
pub mod gue;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod ndisc;
pub mod tcp;
pub mod udp;

/// IP protocol numbers (IANA) used by uvs.
pub mod ip_proto {
    /// IPv6 hop-by-hop options.
    pub const HOPOPTS: u8 = 0;
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// IPv4-in-IP (ipip tunnel).
    pub const IPIP: u8 = 4;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 encapsulated.
    pub const IPV6: u8 = 41;
    /// IPv6 routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// GRE.
    pub const GRE: u8 = 47;
    /// ESP.
    pub const ESP: u8 = 50;
    /// Authentication header.
    pub const AH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 "no next header".
    pub const NONE: u8 = 59;
    /// IPv6 destination options.
    pub const DSTOPTS: u8 = 60;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// Why a view refused a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the header (or the length it declares).
    #[error("buffer truncated")]
    Truncated,
    /// More VLAN tags than [`ethernet::MAX_VLAN_TAGS`].
    #[error("too many VLAN tags")]
    TooManyVlanTags,
    /// IP version field does not match the view.
    #[error("bad IP version")]
    BadVersion,
    /// Header length field is below the minimum or beyond the packet.
    #[error("bad header length")]
    BadHeaderLen,
    /// Total/payload length field is inconsistent.
    #[error("bad total length")]
    BadTotalLen,
    /// IPv6 extension header chain truncated, misplaced or too long.
    #[error("bad IPv6 extension header chain")]
    BadExtHeader,
    /// A format variant this view does not handle (e.g. non-Ethernet ARP).
    #[error("unsupported format variant")]
    Unsupported,
    /// A field violates a validity rule of its protocol (e.g. a Neighbour
    /// Advertisement with a hop limit other than 255).
    #[error("invalid message")]
    Invalid,
}

/// Reads a big-endian u16 at `off`; the caller has checked the bounds.
#[inline]
pub(crate) fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// Reads a big-endian u32 at `off`; the caller has checked the bounds.
#[inline]
pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Writes a big-endian u16 at `off`; the caller has checked the bounds.
#[inline]
pub(crate) fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes a big-endian u32 at `off`; the caller has checked the bounds.
#[inline]
pub(crate) fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}
