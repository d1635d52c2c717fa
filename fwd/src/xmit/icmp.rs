//! ICMP errors and IPVS: relaying errors that belong to a NAT connection
//! with their addresses translated ([`nat_icmp_error`], the kernel's
//! `ip_vs_nat_icmp` / `_v6`), and answering a packet with an error of our
//! own ([`build_icmp_error`], the kernel's `icmp_send` / `icmpv6_send` as
//! IPVS calls them: port unreachable when no server is available,
//! fragmentation needed / packet too big when a packet does not fit the path,
//! time exceeded when its TTL runs out).
//!
//! [`nat_icmp_error`] rewrites, as the kernel does: the outer address (source
//! toward the client, destination toward the server), the quoted packet's
//! opposite address and port, the quoted IPv4 header checksum (recomputed),
//! the outer IPv4 header checksum, and the ICMP checksum — **recomputed over
//! the whole ICMP message** (`ip_vs_checksum_complete`, for ICMPv6 with the
//! new pseudo-header), not updated incrementally: an error is small and rare,
//! and the quote may be cut anywhere. The quoted L4 checksum is left alone,
//! exactly as the kernel leaves it (it covers data the quote does not hold).
//! The outer TTL / hop limit is decremented: the director forwards the error.
//!
//! [`build_icmp_error`] writes a whole frame into a caller buffer: Ethernet
//! header addressed back (MACs swapped, VLAN tags kept), IPv4 header as
//! `icmp_send` builds it (TTL 64, TOS = the original's TOS bits with
//! precedence "internetwork control", no DF, the caller's ID, no options —
//! the kernel would echo the original's options, uvs does not) or IPv6 header
//! (hop limit 64, traffic class 0, flow label 0), the ICMP header, and as
//! much of the original IP packet as keeps the error within 576 bytes (IPv4,
//! RFC 1812 §4.3.2.3) or 1280 bytes (IPv6, RFC 4443 §2.4(c)). The source
//! address is the caller's: the one the kernel's route lookup would choose
//! (the VIP when the original was addressed to it).
//! It refuses ([`XmitError::IcmpNotAllowed`]) what the kernel refuses:
//! errors about ICMP errors, about non-first IPv4 fragments, about packets
//! to a multicast or broadcast address (IPv6: except packet too big), or
//! from an address that does not identify one node (unspecified, multicast,
//! broadcast, loopback, 0.0.0.0/8). Rate limiting is the caller's.
//!
//! Contract: no allocation, no panic; on `Err` nothing was written to the
//! frame (`nat_icmp_error`) or the output buffer may hold partial garbage
//! but no length is returned (`build_icmp_error`).

use std::net::IpAddr;

use super::{check_parsed, decrement_ttl, Side, XmitError};
use crate::checksum::{self, CsumMode};
use crate::parse::{Embedded, IpVersion, Parsed};
use crate::wire::{icmpv4, icmpv6, ip_proto, ipv4, ipv6, put16};

/// Most bytes of the original packet an ICMPv4 error quotes: 576 − 20 − 8.
pub const QUOTE_MAX_V4: usize = 576 - ipv4::HEADER_LEN - icmpv4::HEADER_LEN;
/// Most bytes of the original packet an ICMPv6 error quotes: 1280 − 40 − 8.
pub const QUOTE_MAX_V6: usize = 1280 - ipv6::HEADER_LEN - icmpv6::HEADER_LEN;
/// Largest frame [`build_icmp_error`] writes: two VLAN tags + 1280 bytes.
pub const MAX_ERROR_FRAME: usize = 14 + 8 + 1280;

/// Default TTL / hop limit of errors uvs originates (Linux's default).
pub const ERROR_TTL: u8 = 64;

/// The error to send; the family follows the original packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpKind {
    /// Port unreachable (ICMP 3/3, ICMPv6 1/4): a new connection to a
    /// service with no available server.
    PortUnreachable,
    /// Host unreachable (ICMP 3/1), address unreachable (ICMPv6 1/3): no
    /// route or neighbour toward the destination.
    HostUnreachable,
    /// Fragmentation needed and DF set with the next-hop MTU (ICMP 3/4, the
    /// MTU in the low 16 bits of the rest-of-header), packet too big (ICMPv6
    /// 2/0, the 32-bit MTU).
    TooBig {
        /// MTU to report.
        mtu: u32,
    },
    /// TTL / hop limit exceeded in transit (ICMP 11/0, ICMPv6 3/0).
    TimeExceeded,
}

impl IcmpKind {
    /// (type, code, rest-of-header word) for this family.
    fn wire(self, version: IpVersion) -> (u8, u8, u32) {
        match (version, self) {
            (IpVersion::V4, IcmpKind::PortUnreachable) => (3, icmpv4::unreach::PORT, 0),
            (IpVersion::V4, IcmpKind::HostUnreachable) => (3, icmpv4::unreach::HOST, 0),
            (IpVersion::V4, IcmpKind::TooBig { mtu }) => (
                3,
                icmpv4::unreach::FRAG_NEEDED,
                mtu.min(u32::from(u16::MAX)),
            ),
            (IpVersion::V4, IcmpKind::TimeExceeded) => (icmpv4::msg_type::TIME_EXCEEDED, 0, 0),
            (IpVersion::V6, IcmpKind::PortUnreachable) => (1, 4, 0),
            (IpVersion::V6, IcmpKind::HostUnreachable) => (1, 3, 0),
            (IpVersion::V6, IcmpKind::TooBig { mtu }) => (2, 0, mtu),
            (IpVersion::V6, IcmpKind::TimeExceeded) => (3, 0, 0),
        }
    }
}

/// Whether the kernel would send an ICMP error of `kind` about `p`.
pub fn may_send_error(p: &Parsed, kind: IcmpKind) -> bool {
    match (p.src, p.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            if p.is_fragment && !p.is_first_fragment {
                return false;
            }
            if dst.is_multicast() || dst.is_broadcast() {
                return false;
            }
            if src.is_unspecified()
                || src.octets()[0] == 0
                || src.is_multicast()
                || src.is_broadcast()
                || src.is_loopback()
            {
                return false;
            }
            // Never answer an ICMP error, nor a type the kernel does not
            // know (types above 18 count as errors there).
            !(p.proto == ip_proto::ICMP
                && (!p.has_l4 || icmpv4::is_error(p.icmp_type) || p.icmp_type > 18))
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            if dst.is_multicast() && !matches!(kind, IcmpKind::TooBig { .. }) {
                return false;
            }
            if src.is_unspecified() || src.is_multicast() || src.is_loopback() {
                return false;
            }
            // An ICMPv6 packet whose type cannot be read is ineligible too,
            // unless it is a later fragment (RFC 8200 §4.5).
            let later_fragment = p.is_fragment && !p.is_first_fragment;
            let about_icmp_error = p.proto == ip_proto::ICMPV6
                && !later_fragment
                && (!p.has_l4 || icmpv6::is_error(p.icmp_type));
            !about_icmp_error
        }
        _ => false,
    }
}

/// Builds, in `out`, the ICMP error `kind` about the packet `p` parsed from
/// `orig` (module doc for every field), from address `src`, with IPv4 ID
/// `ident` (ignored for IPv6). Returns the frame length.
///
/// Errors: `FrameMismatch`, `FamilyMismatch` (`src` of the other family),
/// `IcmpNotAllowed` (see [`may_send_error`]), `BufferTooSmall` (a buffer of
/// [`MAX_ERROR_FRAME`] bytes always suffices).
pub fn build_icmp_error(
    out: &mut [u8],
    orig: &[u8],
    p: &Parsed,
    kind: IcmpKind,
    src: IpAddr,
    ident: u16,
) -> Result<usize, XmitError> {
    check_parsed(orig, p)?;
    if src.is_ipv4() != p.is_ipv4() {
        return Err(XmitError::FamilyMismatch);
    }
    if !may_send_error(p, kind) {
        return Err(XmitError::IcmpNotAllowed);
    }
    let (ip_hdr, quote_max) = match p.version {
        IpVersion::V4 => (ipv4::HEADER_LEN, QUOTE_MAX_V4),
        IpVersion::V6 => (ipv6::HEADER_LEN, QUOTE_MAX_V6),
    };
    let l2 = p.l3_off;
    let quote = &orig[p.l3_off..p.ip_end.min(p.l3_off + quote_max)];
    let icmp_len = icmpv4::HEADER_LEN + quote.len();
    let len = l2 + ip_hdr + icmp_len;
    if out.len() < len || l2 < 14 {
        return Err(if l2 < 14 {
            XmitError::FrameMismatch
        } else {
            XmitError::BufferTooSmall
        });
    }
    // Ethernet: back where the packet came from, same VLAN tags.
    out[..6].copy_from_slice(&orig[6..12]);
    out[6..12].copy_from_slice(&orig[..6]);
    out[12..l2].copy_from_slice(&orig[12..l2]);
    let o = l2;
    let m = o + ip_hdr;
    let emitted = match (src, p.src) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4::Repr {
            src: s,
            dst: d,
            protocol: ip_proto::ICMP,
            ttl: ERROR_TTL,
            // icmp_send: the original's TOS bits, precedence internetwork
            // control (RT_TOS(tos) | IPTOS_PREC_INTERNETCONTROL).
            tos: (orig[p.l3_off + 1] & 0x1e) | 0xc0,
            ident,
            flags_frag: 0,
            payload_len: icmp_len,
        }
        .emit(&mut out[o..m]),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6::Repr {
            src: s,
            dst: d,
            next_header: ip_proto::ICMPV6,
            hop_limit: ERROR_TTL,
            traffic_class: 0,
            flow_label: 0,
            payload_len: icmp_len,
        }
        .emit(&mut out[o..m]),
        // Families checked above.
        _ => return Err(XmitError::FamilyMismatch),
    };
    emitted.map_err(|_| XmitError::TooLarge)?;
    let (t, code, rest) = kind.wire(p.version);
    out[m] = t;
    out[m + 1] = code;
    put16(out, m + 2, 0);
    out[m + 4..m + 8].copy_from_slice(&rest.to_be_bytes());
    out[m + 8..len].copy_from_slice(quote);
    let c = icmp_checksum(&out[m..len], &src, &p.src);
    put16(out, m + 2, c);
    Ok(len)
}

/// The complete ICMP / ICMPv6 checksum of `msg` (IPv6: with pseudo-header).
fn icmp_checksum(msg: &[u8], src: &IpAddr, dst: &IpAddr) -> u16 {
    let pseudo = match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            checksum::pseudo_header_v6(s, d, ip_proto::ICMPV6, msg.len() as u32)
        }
        _ => 0,
    };
    !checksum::fold(checksum::add(pseudo, checksum::sum(msg)))
}

/// The translation of an ICMP error about a NAT connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpNat {
    /// Which outer address changes.
    pub outer: Side,
    /// Its new value.
    pub outer_addr: IpAddr,
    /// Which address and port of the quoted packet change.
    pub inner: Side,
    /// New quoted address.
    pub inner_addr: IpAddr,
    /// New quoted port (TCP/UDP/SCTP quotes only).
    pub inner_port: u16,
}

impl IcmpNat {
    /// An error from the real-server side travelling to the client, quoting
    /// a request the real server received (kernel `inout` = 1, as
    /// `handle_response_icmp`): outer source, quoted destination and
    /// destination port become the virtual service's.
    pub fn to_client(vaddr: IpAddr, vport: u16) -> IcmpNat {
        IcmpNat {
            outer: Side::Src,
            outer_addr: vaddr,
            inner: Side::Dst,
            inner_addr: vaddr,
            inner_port: vport,
        }
    }

    /// An error from the client side travelling to the real server, quoting
    /// a reply the client received from the virtual service (`inout` = 0, as
    /// `ip_vs_in_icmp`): outer destination, quoted source and source port
    /// become the real server's.
    pub fn to_server(daddr: IpAddr, dport: u16) -> IcmpNat {
        IcmpNat {
            outer: Side::Dst,
            outer_addr: daddr,
            inner: Side::Src,
            inner_addr: daddr,
            inner_port: dport,
        }
    }
}

/// Translates an ICMP / ICMPv6 error `p` whose quoted packet `emb` (from
/// [`crate::parse::embedded`]) belongs to a NAT connection (module doc).
///
/// `mode`: with `CsumMode::Partial` an ICMPv6 checksum is left pending (the
/// field holds the new pseudo-header sum); otherwise the checksum is complete.
///
/// Errors (frame unchanged): `FrameMismatch`, `NotIcmpError` (not an error
/// message, or `emb` not its quote), `Fragment` (the checksum spans other
/// fragments), `FamilyMismatch`, `Ipv6RoutingHeader`, `TtlExceeded` (drop
/// silently: no error is sent about an error).
pub fn nat_icmp_error(
    frame: &mut [u8],
    p: &Parsed,
    emb: &Embedded,
    nat: &IcmpNat,
    mode: CsumMode,
) -> Result<(), XmitError> {
    // ---- validate everything first ----
    check_parsed(frame, p)?;
    let is_error = match p.proto {
        ip_proto::ICMP => p.is_ipv4() && icmpv4::is_error(p.icmp_type),
        ip_proto::ICMPV6 => !p.is_ipv4() && icmpv6::is_error(p.icmp_type),
        _ => false,
    };
    if !is_error || !p.has_l4 || p.payload_off != p.l4_off + icmpv4::HEADER_LEN {
        return Err(XmitError::NotIcmpError);
    }
    if p.is_fragment {
        return Err(XmitError::Fragment);
    }
    let v4 = p.is_ipv4();
    let (src_at, dst_at, ttl_at, quote_hdr) = if v4 {
        (12, 16, 8, ipv4::HEADER_LEN)
    } else {
        (8, 24, 7, ipv6::HEADER_LEN)
    };
    if emb.version != p.version
        || emb.l3_off != p.payload_off
        || emb.l3_off + quote_hdr > p.ip_end
        || emb.l4_off <= emb.l3_off
        || emb.l4_off > p.ip_end
        || (emb.has_ports && emb.l4_off + 4 > p.ip_end)
    {
        return Err(XmitError::NotIcmpError);
    }
    let quote_hl = if v4 {
        let hl = usize::from(frame[emb.l3_off] & 0x0f) * 4;
        if hl < ipv4::HEADER_LEN || emb.l3_off + hl > p.ip_end {
            return Err(XmitError::NotIcmpError);
        }
        hl
    } else {
        ipv6::HEADER_LEN
    };
    if [nat.outer_addr, nat.inner_addr]
        .iter()
        .any(|a| a.is_ipv4() != v4)
    {
        return Err(XmitError::FamilyMismatch);
    }
    if !v4 && p.routing_pending {
        return Err(XmitError::Ipv6RoutingHeader);
    }
    if frame[p.l3_off + ttl_at] <= 1 {
        return Err(XmitError::TtlExceeded);
    }

    // ---- rewrite ----
    let put_addr = |frame: &mut [u8], at: usize, a: IpAddr| match a {
        IpAddr::V4(a) => frame[at..at + 4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => frame[at..at + 16].copy_from_slice(&a.octets()),
    };
    let side_at = |side: Side| if side == Side::Src { src_at } else { dst_at };
    put_addr(frame, p.l3_off + side_at(nat.outer), nat.outer_addr);
    put_addr(frame, emb.l3_off + side_at(nat.inner), nat.inner_addr);
    if emb.has_ports {
        let at = emb.l4_off + if nat.inner == Side::Src { 0 } else { 2 };
        put16(frame, at, nat.inner_port);
    }
    if v4 {
        // ip_send_check on the quoted header (whatever its checksum was).
        let q = &mut frame[emb.l3_off..emb.l3_off + quote_hl];
        q[10] = 0;
        q[11] = 0;
        let c = checksum::checksum(q);
        put16(q, 10, c);
    }
    decrement_ttl(frame, p.l3_off, p.version)?;
    if v4 {
        let mut ip = ipv4::Packet::new_unchecked(&mut frame[p.l3_off..]);
        ip.fill_checksum();
    }
    // The ICMP checksum over the whole message, with the new addresses.
    let (new_src, new_dst) = match nat.outer {
        Side::Src => (nat.outer_addr, p.dst),
        Side::Dst => (p.src, nat.outer_addr),
    };
    let field = p.l4_off + 2;
    put16(frame, field, 0);
    let msg = &frame[p.l4_off..p.ip_end];
    let c = if !v4 && mode == CsumMode::Partial {
        let len = msg.len() as u32;
        checksum::fold(
            checksum::pseudo_header(&new_src, &new_dst, ip_proto::ICMPV6, len).unwrap_or(0),
        )
    } else {
        icmp_checksum(msg, &new_src, &new_dst)
    };
    put16(frame, field, c);
    Ok(())
}

#[cfg(test)]
mod tests;
