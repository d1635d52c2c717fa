//! One-pass parse of a received frame: Ethernet (+ up to two VLAN tags) →
//! IPv4/IPv6 (+ extension headers) → TCP/UDP/SCTP/ICMP/ICMPv6.
//!
//! Contract:
//! * [`parse`] never panics and never allocates, whatever the bytes.
//! * `Ok(Parsed)` guarantees: the IP header (and IPv4 header checksum) is valid;
//!   `l3_off <= l4_off <= payload_off <= ip_end <= frame.len()`; when
//!   `has_l4` is set the whole L4 header lies in `l4_off..payload_off`.
//!   Bytes after `ip_end` are Ethernet padding and belong to no layer.
//! * Non-IP frames (ARP, LLDP, ...) are `Err(ParseError::NotIp)`. That variant
//!   is not a drop reason: [`ParseError::is_drop`] is false and the engine
//!   passes such frames on (to its ARP handling or the kernel) uncounted. It
//!   can find the ARP body with [`crate::wire::ethernet::Frame::encap`].
//!   Every other variant is a drop reason with a stable [`ParseError::index`]
//!   into a `[u64; ParseError::COUNT]` counter array.
//! * L4 checksums are not verified here (that costs a pass over the payload);
//!   see [`crate::checksum::verify_l4_checksum`].
//! * Fragments: a non-first fragment has no L4 header (`has_l4 == false`,
//!   ports 0). A first fragment must hold the whole L4 header (RFC 1858: tiny
//!   fragments are dropped as `TruncatedL4`).

use std::net::{IpAddr, Ipv4Addr};

use crate::wire::ethernet::{self, ethertype};
use crate::wire::{icmpv4, ip_proto, ipv4, ipv6, tcp, udp, WireError};

/// IP version of a parsed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// SCTP common header length (ports, verification tag, CRC-32C).
pub const SCTP_HEADER_LEN: usize = 12;

/// Everything the engine needs about a packet, found in one pass. `Copy`, no
/// borrows: the engine may mutate the frame while holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// Ethertype after VLAN tags (IPv4 or IPv6 here).
    pub ethertype: u16,
    /// Number of VLAN tags (0..=2).
    pub vlan_tags: u8,
    /// Offset of the IP header.
    pub l3_off: usize,
    /// Offset of the L4 header (after IPv4 options / IPv6 extension headers);
    /// for a non-first fragment, the start of its opaque data.
    pub l4_off: usize,
    /// Offset just after the L4 header (== `l4_off` when `has_l4` is false).
    pub payload_off: usize,
    /// End of the IP packet (`l3_off + ip_len`); later bytes are padding.
    pub ip_end: usize,
    /// IP version.
    pub version: IpVersion,
    /// Upper-layer protocol (see [`crate::wire::ip_proto`]).
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// TCP/UDP/SCTP source port; 0 otherwise.
    pub sport: u16,
    /// TCP/UDP/SCTP destination port; 0 otherwise.
    pub dport: u16,
    /// TCP flags (see [`crate::wire::tcp::flags`]); 0 otherwise.
    pub tcp_flags: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IP packet length: IPv4 total length, IPv6 40 + payload length.
    pub ip_len: usize,
    /// The packet is a fragment (IPv4 MF/offset, or an IPv6 fragment header).
    pub is_fragment: bool,
    /// The packet is the first fragment (offset 0) of a fragmented datagram.
    pub is_first_fragment: bool,
    /// An L4 header of `proto` was found and validated (TCP, UDP, SCTP, ICMP,
    /// ICMPv6); false for non-first fragments and other protocols.
    pub has_l4: bool,
    /// ICMP/ICMPv6 type; 0 otherwise.
    pub icmp_type: u8,
    /// ICMP/ICMPv6 code; 0 otherwise.
    pub icmp_code: u8,
    /// IPv6 routing header with segments left: the header's destination is
    /// not the final one (NAT refuses such packets).
    pub routing_pending: bool,
}

impl Parsed {
    /// Length of the L4 part (header + data) within the IP packet.
    pub fn l4_len(&self) -> usize {
        self.ip_end.saturating_sub(self.l4_off)
    }

    /// Length of the L4 payload (data after the L4 header).
    pub fn payload_len(&self) -> usize {
        self.ip_end.saturating_sub(self.payload_off)
    }

    /// Whether the packet is IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.version == IpVersion::V4
    }

    /// Whether the packet carries ports (TCP/UDP/SCTP with its header present).
    pub fn has_ports(&self) -> bool {
        self.has_l4 && matches!(self.proto, ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP)
    }
}

macro_rules! parse_errors {
    ($( $(#[$doc:meta])* $v:ident => $name:literal, )*) => {
        /// Why a frame was not parsed. Every variant but `NotIp` is a drop reason.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
        pub enum ParseError {
            $( $(#[$doc])* #[error($name)] $v, )*
        }

        impl ParseError {
            /// Every variant, in [`ParseError::index`] order.
            pub const ALL: &'static [ParseError] = &[$(ParseError::$v,)*];
            /// Number of variants (size of a per-reason counter array).
            pub const COUNT: usize = Self::ALL.len();

            /// Stable short name for counters and logs.
            pub fn name(&self) -> &'static str {
                match self { $(ParseError::$v => $name,)* }
            }

            /// Dense index in `0..COUNT`.
            pub fn index(&self) -> usize {
                *self as usize
            }
        }
    };
}

parse_errors! {
    /// Not an IP frame (ARP, LLDP, ...): pass on, not a drop.
    NotIp => "not_ip",
    /// Shorter than the Ethernet header or a VLAN tag.
    TruncatedEthernet => "truncated_ethernet",
    /// More than two VLAN tags.
    TooManyVlanTags => "too_many_vlan_tags",
    /// Shorter than the IP header, or than the IP length it declares.
    TruncatedIp => "truncated_ip",
    /// IP version nibble does not match the ethertype.
    BadIpVersion => "bad_ip_version",
    /// IPv4 IHL below 5.
    BadIhl => "bad_ihl",
    /// IPv4 total length below the header length.
    BadTotalLength => "bad_total_length",
    /// IPv4 header checksum wrong.
    Ipv4Checksum => "ipv4_checksum",
    /// IPv4 fragment extends past 65535 bytes, or a TCP fragment at offset 8
    /// (RFC 1858 overlap attack).
    BadFragment => "bad_fragment",
    /// IPv6 extension header chain truncated, misordered or too long.
    BadIpv6ExtHeader => "bad_ipv6_ext_header",
    /// L4 header (TCP 20, UDP 8, SCTP 12, ICMP 8 bytes) not fully present.
    TruncatedL4 => "truncated_l4",
    /// TCP data offset below 5 or past the segment.
    BadTcpDataOffset => "bad_tcp_data_offset",
    /// UDP length field below 8 or past the IP payload (or 0 on IPv6).
    BadUdpLength => "bad_udp_length",
    /// ICMP error whose quoted packet is unusable (only from [`embedded`]).
    BadIcmpEmbedded => "bad_icmp_embedded",
}

impl ParseError {
    /// Whether the engine should drop (and count) the frame; false for `NotIp`.
    pub fn is_drop(&self) -> bool {
        *self != ParseError::NotIp
    }
}

/// Parses a frame (see module doc for the guarantees).
#[inline]
pub fn parse(frame: &[u8]) -> Result<Parsed, ParseError> {
    // Same type in both arms: the fast result is returned in place, not
    // moved out of an Option.
    match parse_fast(frame) {
        r @ Ok(_) => r,
        Err(_) => parse_general(frame),
    }
}

/// What [`parse_fast`] returns for a frame it leaves to the general parser.
const UNHANDLED: ParseError = ParseError::NotIp;

/// The common case in a few loads and compares: an untagged IPv4 packet
/// without options, not a fragment, carrying a whole TCP or UDP header.
/// `Ok` only when [`parse_general`] would return exactly the same
/// `Ok(Parsed)` (a test checks this on random frames); anything else,
/// errors included, is left to the general parser (`Err(UNHANDLED)`:
/// never an answer, only "ask the general parser").
#[inline(always)]
fn parse_fast(frame: &[u8]) -> Result<Parsed, ParseError> {
    const L3: usize = ethernet::HEADER_LEN;
    let Some(Ok(h)) = frame.get(L3..L3 + 20).map(<&[u8; 20]>::try_from) else {
        return Err(UNHANDLED);
    };
    if frame[12] != 0x08 || frame[13] != 0x00 || h[0] != 0x45 {
        return Err(UNHANDLED);
    }
    let tl = usize::from(u16::from_be_bytes([h[2], h[3]]));
    // MF or a fragment offset: the general path.
    if tl < 20 || L3 + tl > frame.len() || h[6] & 0x3f != 0 || h[7] != 0 {
        return Err(UNHANDLED);
    }
    if !ipv4_header_sum_ok(h) {
        return Err(UNHANDLED);
    }
    let (l4_off, ip_end) = (L3 + 20, L3 + tl);
    let l4 = &frame[l4_off..ip_end];
    let proto = h[9];
    let (hdr_len, tcp_flags) = match proto {
        ip_proto::TCP if l4.len() >= tcp::HEADER_LEN => {
            let hl = usize::from(l4[12] >> 4) * 4;
            if hl < tcp::HEADER_LEN || hl > l4.len() {
                return Err(UNHANDLED);
            }
            (hl, l4[13])
        }
        ip_proto::UDP if l4.len() >= udp::HEADER_LEN => {
            let ulen = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
            if ulen < udp::HEADER_LEN || ulen > l4.len() {
                return Err(UNHANDLED);
            }
            (udp::HEADER_LEN, 0)
        }
        _ => return Err(UNHANDLED),
    };
    Ok(Parsed {
        ethertype: ethertype::IPV4,
        vlan_tags: 0,
        l3_off: L3,
        l4_off,
        payload_off: l4_off + hdr_len,
        ip_end,
        version: IpVersion::V4,
        proto,
        src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
        dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        tcp_flags,
        ttl: h[8],
        ip_len: tl,
        is_fragment: false,
        is_first_fragment: false,
        has_l4: true,
        icmp_type: 0,
        icmp_code: 0,
        routing_pending: false,
    })
}

/// The IPv4 header checksum of an option-less header verifies. Summed in
/// native-endian 32-bit words: a ones'-complement sum in the other byte
/// order is the byte-swapped sum, and 0xffff is its own swap.
#[inline(always)]
fn ipv4_header_sum_ok(h: &[u8; 20]) -> bool {
    let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    let s = w(0) + w(4) + w(8) + w(12) + w(16);
    crate::checksum::fold(s) == 0xffff
}

/// The general parser: VLAN tags, IPv6, options, fragments, every protocol
/// and every error.
fn parse_general(frame: &[u8]) -> Result<Parsed, ParseError> {
    let eth = ethernet::Frame::new_checked(frame).map_err(|_| ParseError::TruncatedEthernet)?;
    let encap = eth.encap().map_err(|e| match e {
        WireError::TooManyVlanTags => ParseError::TooManyVlanTags,
        _ => ParseError::TruncatedEthernet,
    })?;
    let l3_off = encap.l3_off;
    // encap() guarantees l3_off <= frame.len().
    let l3 = frame.get(l3_off..).ok_or(ParseError::TruncatedEthernet)?;
    let mut p = Parsed {
        ethertype: encap.ethertype,
        vlan_tags: encap.vlan_tags,
        l3_off,
        l4_off: 0,
        payload_off: 0,
        ip_end: 0,
        version: IpVersion::V4,
        proto: 0,
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        ttl: 0,
        ip_len: 0,
        is_fragment: false,
        is_first_fragment: false,
        has_l4: false,
        icmp_type: 0,
        icmp_code: 0,
        routing_pending: false,
    };
    match encap.ethertype {
        ethertype::IPV4 => parse_ipv4(l3, &mut p)?,
        ethertype::IPV6 => parse_ipv6(l3, &mut p)?,
        _ => return Err(ParseError::NotIp),
    }
    let l4 = frame
        .get(p.l4_off..p.ip_end)
        .ok_or(ParseError::TruncatedIp)?;
    parse_l4(l4, &mut p)?;
    Ok(p)
}

fn parse_ipv4(l3: &[u8], p: &mut Parsed) -> Result<(), ParseError> {
    let ip = ipv4::Packet::new_checked(l3).map_err(|e| match e {
        WireError::BadVersion => ParseError::BadIpVersion,
        WireError::BadHeaderLen => ParseError::BadIhl,
        WireError::BadTotalLen => ParseError::BadTotalLength,
        _ => ParseError::TruncatedIp,
    })?;
    if !ip.verify_checksum() {
        return Err(ParseError::Ipv4Checksum);
    }
    let hl = ip.header_len();
    let tl = usize::from(ip.total_len());
    p.version = IpVersion::V4;
    p.proto = ip.protocol();
    p.src = IpAddr::V4(ip.src_addr());
    p.dst = IpAddr::V4(ip.dst_addr());
    p.ttl = ip.ttl();
    p.ip_len = tl;
    p.ip_end = p.l3_off + tl;
    p.l4_off = p.l3_off + hl;
    if ip.is_fragment() {
        let off = ip.frag_offset();
        // Reassembly could never fit this fragment in a 65535-byte datagram.
        if off + (tl - hl) > 65535 {
            return Err(ParseError::BadFragment);
        }
        // RFC 1858 §3.2: a TCP fragment at offset 8 can overwrite the flags.
        if off == 8 && p.proto == ip_proto::TCP {
            return Err(ParseError::BadFragment);
        }
        p.is_fragment = true;
        p.is_first_fragment = off == 0;
    }
    Ok(())
}

fn parse_ipv6(l3: &[u8], p: &mut Parsed) -> Result<(), ParseError> {
    let ip = ipv6::Packet::new_checked(l3).map_err(|e| match e {
        WireError::BadVersion => ParseError::BadIpVersion,
        _ => ParseError::TruncatedIp,
    })?;
    let up = ip.upper_layer().map_err(|_| ParseError::BadIpv6ExtHeader)?;
    p.version = IpVersion::V6;
    p.proto = up.proto;
    p.src = IpAddr::V6(ip.src_addr());
    p.dst = IpAddr::V6(ip.dst_addr());
    p.ttl = ip.hop_limit();
    p.ip_len = ip.total_len();
    p.ip_end = p.l3_off + p.ip_len;
    p.l4_off = p.l3_off + up.offset;
    p.routing_pending = up.routing_pending;
    if let Some(f) = up.frag {
        // An "atomic fragment" (offset 0, no M) is a whole datagram (RFC 6946).
        if f.offset != 0 || f.more {
            p.is_fragment = true;
            p.is_first_fragment = f.offset == 0;
        }
    }
    Ok(())
}

/// `l4` is bounded by the IP length: `p.l4_off..p.ip_end`.
fn parse_l4(l4: &[u8], p: &mut Parsed) -> Result<(), ParseError> {
    p.payload_off = p.l4_off;
    if p.is_fragment && !p.is_first_fragment {
        return Ok(());
    }
    // A first fragment carries only part of the L4 data: lengths in the L4
    // header refer to the reassembled datagram and cannot be checked here.
    let whole = !p.is_fragment;
    let hdr_len = match p.proto {
        ip_proto::TCP => {
            let t = tcp::Packet::new_checked(l4).map_err(|e| match e {
                WireError::Truncated => ParseError::TruncatedL4,
                _ => ParseError::BadTcpDataOffset,
            })?;
            p.sport = t.src_port();
            p.dport = t.dst_port();
            p.tcp_flags = t.flags();
            t.header_len()
        }
        ip_proto::UDP => {
            if l4.len() < udp::HEADER_LEN {
                return Err(ParseError::TruncatedL4);
            }
            let u = udp::Packet::new_unchecked(l4);
            let ulen = usize::from(u.len());
            if whole && (ulen < udp::HEADER_LEN || ulen > l4.len()) {
                return Err(ParseError::BadUdpLength);
            }
            if !whole && ulen < udp::HEADER_LEN {
                return Err(ParseError::BadUdpLength);
            }
            p.sport = u.src_port();
            p.dport = u.dst_port();
            udp::HEADER_LEN
        }
        ip_proto::SCTP => {
            if l4.len() < SCTP_HEADER_LEN {
                return Err(ParseError::TruncatedL4);
            }
            p.sport = u16::from_be_bytes([l4[0], l4[1]]);
            p.dport = u16::from_be_bytes([l4[2], l4[3]]);
            SCTP_HEADER_LEN
        }
        ip_proto::ICMP | ip_proto::ICMPV6 => {
            if l4.len() < icmpv4::HEADER_LEN {
                return Err(ParseError::TruncatedL4);
            }
            p.icmp_type = l4[0];
            p.icmp_code = l4[1];
            icmpv4::HEADER_LEN
        }
        _ => return Ok(()),
    };
    p.has_l4 = true;
    p.payload_off = p.l4_off + hdr_len;
    Ok(())
}

/// The original packet quoted in an ICMP/ICMPv6 error, as far as it is
/// needed to find the connection it belongs to. Offsets are frame offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Embedded {
    /// Offset of the quoted IP header.
    pub l3_off: usize,
    /// Offset of the quoted L4 header (may be cut short after 8 bytes).
    pub l4_off: usize,
    /// IP version of the quoted packet (always the outer one's).
    pub version: IpVersion,
    /// Quoted upper-layer protocol.
    pub proto: u8,
    /// Quoted source (the sender of the packet that caused the error).
    pub src: IpAddr,
    /// Quoted destination.
    pub dst: IpAddr,
    /// Quoted ports (TCP/UDP/SCTP with 4 bytes present); 0 otherwise.
    pub sport: u16,
    /// Quoted destination port; 0 otherwise.
    pub dport: u16,
    /// Ports were present.
    pub has_ports: bool,
    /// The quoted packet was a non-first fragment (no L4 header quoted).
    pub later_fragment: bool,
}

/// Parses the packet quoted in an ICMP (types 3, 4, 5, 11, 12) or ICMPv6
/// (types < 128) error message parsed as `p` from `frame`.
///
/// The quote is usually cut short (RFC 792: IP header + 8 bytes), so its total
/// length is not checked against the bytes present and its checksums are not
/// verified; only the header fields needed for a connection lookup are read,
/// and each read is bounded. Errors: `BadIcmpEmbedded` when `p` is not an ICMP
/// error or the quote is unusable (wrong version or family, header cut).
pub fn embedded(frame: &[u8], p: &Parsed) -> Result<Embedded, ParseError> {
    let bad = ParseError::BadIcmpEmbedded;
    let is_err = match p.proto {
        ip_proto::ICMP => p.is_ipv4() && icmpv4::is_error(p.icmp_type),
        ip_proto::ICMPV6 => !p.is_ipv4() && crate::wire::icmpv6::is_error(p.icmp_type),
        _ => false,
    };
    if !is_err || !p.has_l4 {
        return Err(bad);
    }
    let l3_off = p.payload_off;
    let q = frame.get(l3_off..p.ip_end).ok_or(bad)?;
    let mut e = Embedded {
        l3_off,
        l4_off: 0,
        version: p.version,
        proto: 0,
        src: p.src,
        dst: p.dst,
        sport: 0,
        dport: 0,
        has_ports: false,
        later_fragment: false,
    };
    if p.is_ipv4() {
        if q.len() < ipv4::HEADER_LEN {
            return Err(bad);
        }
        let ip = ipv4::Packet::new_unchecked(q);
        let hl = ip.header_len();
        if ip.version() != 4 || hl < ipv4::HEADER_LEN || hl > q.len() {
            return Err(bad);
        }
        e.proto = ip.protocol();
        e.src = IpAddr::V4(ip.src_addr());
        e.dst = IpAddr::V4(ip.dst_addr());
        e.l4_off = l3_off + hl;
        e.later_fragment = ip.frag_offset() != 0;
    } else {
        if q.len() < ipv6::HEADER_LEN {
            return Err(bad);
        }
        let ip = ipv6::Packet::new_unchecked(q);
        if ip.version() != 6 {
            return Err(bad);
        }
        // The walk is bounded by the bytes present as well as the length field.
        let up = ip.upper_layer().map_err(|_| bad)?;
        e.proto = up.proto;
        e.src = IpAddr::V6(ip.src_addr());
        e.dst = IpAddr::V6(ip.dst_addr());
        e.l4_off = l3_off + up.offset;
        e.later_fragment = up.frag.is_some_and(|f| f.offset != 0);
    }
    if !e.later_fragment && matches!(e.proto, ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP) {
        if let Some(ports) = frame.get(e.l4_off..e.l4_off + 4) {
            if e.l4_off + 4 <= p.ip_end {
                e.sport = u16::from_be_bytes([ports[0], ports[1]]);
                e.dport = u16::from_be_bytes([ports[2], ports[3]]);
                e.has_ports = true;
            }
        }
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{FrameSpec, L4Spec};

    /// The fast path agrees with the general parser wherever it answers:
    /// valid frames, every truncation and every single-byte mutation (a few
    /// values per position) of TCP and UDP over IPv4, with and without
    /// options, padding, fragments and DF.
    #[test]
    fn fast_path_agrees_with_general_parser() {
        let mut corpus = Vec::new();
        for base in [FrameSpec::tcp_v4(), FrameSpec::udp_v4()] {
            for payload in [0usize, 1, 7, 40] {
                let mut spec = base.clone();
                spec.payload = vec![0xa5; payload];
                let f = spec.build();
                let mut padded = f.clone();
                padded.extend_from_slice(&[0; 9]);
                corpus.push(f);
                corpus.push(padded);
            }
        }
        let mut answered = 0;
        for f in &corpus {
            let mut check = |b: &[u8]| {
                if let Ok(fast) = parse_fast(b) {
                    answered += 1;
                    assert_eq!(Ok(fast), parse_general(b), "{b:02x?}");
                }
            };
            check(f);
            for n in 0..f.len() {
                check(&f[..n]);
            }
            let mut m = f.clone();
            for i in 0..m.len() {
                let orig = m[i];
                for v in [0u8, 1, 0x05, 0x20, 0x3f, 0x40, 0x45, 0x46, 0x50, 0x80, 0xff] {
                    m[i] = v;
                    check(&m);
                    m[i] = orig ^ v;
                    check(&m);
                }
                m[i] = orig;
            }
        }
        assert!(answered > 1000, "fast path answered {answered} times");
    }

    #[test]
    fn error_table_is_dense() {
        for (i, e) in ParseError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert!(!e.name().is_empty());
            assert_eq!(e.to_string(), e.name());
        }
        assert_eq!(ParseError::COUNT, ParseError::ALL.len());
        assert!(!ParseError::NotIp.is_drop());
        assert!(ParseError::TruncatedL4.is_drop());
    }

    #[test]
    fn tcp_v4_with_padding() {
        let mut spec = FrameSpec::tcp_v4();
        spec.payload = vec![];
        let mut f = spec.build();
        let plen = f.len();
        f.extend_from_slice(&[0u8; 6]); // Ethernet padding to 60 bytes
        let p = parse(&f).unwrap();
        assert_eq!(p.ip_end, plen);
        assert_eq!((p.l3_off, p.l4_off, p.payload_off), (14, 34, 54));
        assert_eq!((p.sport, p.dport), (spec.sport, spec.dport));
        assert_eq!(p.proto, ip_proto::TCP);
        assert!(p.has_l4 && p.has_ports() && !p.is_fragment);
        assert_eq!(p.tcp_flags, tcp::flags::SYN);
        assert_eq!(p.ttl, 64);
    }

    #[test]
    fn arp_is_not_ip() {
        let mut buf = [0u8; 42];
        crate::wire::arp::Repr::request(
            [2; 6],
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(192, 0, 2, 2),
        )
        .emit_frame(&mut buf)
        .unwrap();
        assert_eq!(parse(&buf), Err(ParseError::NotIp));
    }

    #[test]
    fn errors_are_classified() {
        let f = FrameSpec::tcp_v4().build();
        assert_eq!(parse(&f[..10]), Err(ParseError::TruncatedEthernet));
        assert_eq!(parse(&f[..30]), Err(ParseError::TruncatedIp));
        assert_eq!(parse(&f[..f.len() - 1]), Err(ParseError::TruncatedIp));
        let mut g = f.clone();
        g[14] = 0x65;
        assert_eq!(parse(&g), Err(ParseError::BadIpVersion));
        let mut g = f.clone();
        g[14] = 0x44;
        assert_eq!(parse(&g), Err(ParseError::BadIhl));
        let mut g = f.clone();
        g[24] ^= 1;
        assert_eq!(parse(&g), Err(ParseError::Ipv4Checksum));
        let mut g = f.clone();
        g[34 + 12] = 0x40;
        assert_eq!(parse(&g), Err(ParseError::BadTcpDataOffset));
    }

    #[test]
    fn udp_v6_vlan() {
        let mut spec = FrameSpec::udp_v6();
        spec.vlans = vec![0x0064];
        let f = spec.build();
        let p = parse(&f).unwrap();
        assert_eq!(p.vlan_tags, 1);
        assert_eq!((p.l3_off, p.l4_off), (18, 58));
        assert_eq!(p.version, IpVersion::V6);
        assert_eq!(
            (p.proto, p.sport, p.dport),
            (ip_proto::UDP, spec.sport, spec.dport)
        );
        assert_eq!(p.ip_end, f.len());
    }

    #[test]
    fn icmp_fields() {
        let mut spec = FrameSpec::tcp_v4();
        spec.l4 = L4Spec::Icmp {
            msg_type: 3,
            code: 3,
        };
        let f = spec.build();
        let p = parse(&f).unwrap();
        assert_eq!(
            (p.proto, p.icmp_type, p.icmp_code, p.sport),
            (ip_proto::ICMP, 3, 3, 0)
        );
        assert!(p.has_l4 && !p.has_ports());
    }

    /// An ICMP error quoting `inner` (IP header + first 8 L4 bytes), sent by
    /// `from` to the inner packet's source.
    fn icmp_error_quoting(inner: &FrameSpec, from: IpAddr, t: u8, code: u8) -> Vec<u8> {
        let f = inner.build();
        let q = parse(&f).unwrap();
        let mut spec = inner.clone();
        spec.src = from;
        spec.dst = inner.src;
        spec.vlans = vec![];
        spec.l4 = L4Spec::Icmp { msg_type: t, code };
        spec.payload = f[q.l3_off..q.l4_off + 8].to_vec();
        spec.build()
    }

    #[test]
    fn embedded_quote_v4_v6() {
        let rs: IpAddr = Ipv4Addr::new(203, 0, 113, 11).into();
        let mut inner = FrameSpec::udp_v4();
        inner.ip_options = vec![1, 1, 1, 1];
        let f = icmp_error_quoting(&inner, rs, 3, 3);
        let p = parse(&f).unwrap();
        let e = embedded(&f, &p).unwrap();
        assert_eq!(
            (e.src, e.dst, e.proto),
            (inner.src, inner.dst, ip_proto::UDP)
        );
        assert_eq!(
            (e.sport, e.dport, e.has_ports),
            (inner.sport, inner.dport, true)
        );
        assert_eq!(e.l3_off, p.payload_off);
        assert_eq!(e.l4_off, e.l3_off + 24);

        let inner = FrameSpec::tcp_v6();
        let rs6: IpAddr = "2001:db8:3::11".parse().unwrap();
        let f = icmp_error_quoting(&inner, rs6, 1, 4);
        let p = parse(&f).unwrap();
        let e = embedded(&f, &p).unwrap();
        assert_eq!(
            (e.src, e.dst, e.proto, e.sport, e.dport),
            (inner.src, inner.dst, 6, 40000, 80)
        );

        // Echo is not an error; a quote cut inside the IP header is unusable.
        let mut echo = FrameSpec::tcp_v4();
        echo.l4 = L4Spec::Icmp {
            msg_type: 8,
            code: 0,
        };
        let f = echo.build();
        assert_eq!(
            embedded(&f, &parse(&f).unwrap()),
            Err(ParseError::BadIcmpEmbedded)
        );
        let mut cut = FrameSpec::tcp_v4();
        cut.l4 = L4Spec::Icmp {
            msg_type: 11,
            code: 0,
        };
        cut.payload = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6];
        let f = cut.build();
        assert_eq!(
            embedded(&f, &parse(&f).unwrap()),
            Err(ParseError::BadIcmpEmbedded)
        );
    }

    #[test]
    fn fragments() {
        let mut spec = FrameSpec::udp_v4();
        spec.frag = Some((0, true));
        let p = parse(&spec.build()).unwrap();
        assert!(p.is_fragment && p.is_first_fragment && p.has_l4);
        spec.frag = Some((64, false));
        let p = parse(&spec.build()).unwrap();
        assert!(p.is_fragment && !p.is_first_fragment && !p.has_l4);
        assert_eq!((p.sport, p.dport, p.payload_off), (0, 0, p.l4_off));
        let mut spec = FrameSpec::tcp_v4();
        spec.frag = Some((8, true));
        assert_eq!(parse(&spec.build()), Err(ParseError::BadFragment));
    }
}
