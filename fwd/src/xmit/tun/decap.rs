//! Decapsulation for a real server in TUN mode: what a Linux `tunl0`/`ip6tnl`,
//! `gre`/`ip6gre` or `fou` (GUE) endpoint does before the inner packet
//! reaches the local stack, for hosts without those modules.
//!
//! Accepted (outer IPv4 or IPv6, each carrying IPv4 or IPv6):
//! * ipip: outer protocol 4 (inner IPv4) or 41 (inner IPv6);
//! * GRE: version 0 without routing, protocol type 0x0800 / 0x86dd; the
//!   checksum is verified when present; key and sequence number are accepted
//!   and ignored (IPVS never sets them);
//! * GUE: UDP to one of the caller's ports; the UDP checksum is verified
//!   unless 0 (zero is accepted over IPv6 too, as Linux tunnels do, RFC
//!   6935); variant 0 data messages with protocol 4 or 41 and Linux's flags
//!   (private flags, remote checksum offload), or variant 1 (bare IP).
//!   Remote checksum offload is carried out: the inner checksum is computed
//!   and written in place, which is why the packet is `&mut`.
//!
//! Refused: outer fragments (this endpoint does not reassemble; with
//! `pmtu_disc` on, the director sends DF and fragments nothing), GUE control
//! messages, unknown flags, an inner packet whose version does not match what
//! the outer header announced or whose length does not fit. Other packets
//! (not one of these protocols, UDP to another port) are
//! [`DecapError::NotTunnel`]: not for the endpoint, hand them on.
//!
//! Contract: no allocation, no panic on any input; on `Err` the packet is
//! unchanged. The inner packet is returned as an offset and length; its own
//! checksums are left to the stack that receives it.

use std::net::IpAddr;

use super::TunKind;
use crate::checksum;
use crate::parse::IpVersion;
use crate::wire::ethernet::{self, ethertype};
use crate::wire::{gre, gue, ip_proto, ipv4, ipv6, udp, WireError};

/// Where the inner packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapsulated {
    /// Tunnel type found.
    pub kind: TunKind,
    /// Offset of the inner IP header in the buffer given.
    pub offset: usize,
    /// Inner IP packet length (its own total length; padding excluded).
    pub len: usize,
    /// Inner IP version.
    pub version: IpVersion,
    /// Outer source (the director).
    pub outer_src: IpAddr,
    /// Outer destination (this real server).
    pub outer_dst: IpAddr,
}

/// Why a packet was not decapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecapError {
    /// Not a tunnel packet for this endpoint: pass it on.
    #[error("not a tunnel packet")]
    NotTunnel,
    /// Outer IP header or length invalid (IPv4 header checksum included).
    #[error("bad outer IP header")]
    BadOuter,
    /// Outer packet is a fragment (no reassembly here).
    #[error("outer packet is a fragment")]
    OuterFragment,
    /// Tunnel header (GRE, UDP, GUE) cut short or inconsistent.
    #[error("bad tunnel header")]
    BadTunnelHeader,
    /// GRE or UDP checksum wrong.
    #[error("tunnel checksum mismatch")]
    Checksum,
    /// A tunnel feature this endpoint does not carry (GRE routing or
    /// version, non-IP GRE/GUE payload, GUE control messages or unknown flags).
    #[error("unsupported tunnel header")]
    Unsupported,
    /// Inner packet missing, of the wrong version, or longer than the outer
    /// payload.
    #[error("bad inner packet")]
    BadInner,
    /// Remote checksum offload option pointing outside the inner packet.
    #[error("bad remote checksum offload option")]
    BadRemcsum,
}

/// Decapsulates the IP packet at the start of `pkt` (outer IP header first).
/// `gue_ports`: UDP destination ports on which GUE is expected.
pub fn decap(pkt: &mut [u8], gue_ports: &[u16]) -> Result<Decapsulated, DecapError> {
    let first = *pkt.first().ok_or(DecapError::BadOuter)?;
    // (outer payload start, end, protocol, src, dst)
    let (l4, end, proto, src, dst) = match first >> 4 {
        4 => {
            let ip = ipv4::Packet::new_checked(&pkt[..]).map_err(|_| DecapError::BadOuter)?;
            if !ip.verify_checksum() {
                return Err(DecapError::BadOuter);
            }
            if ip.is_fragment() {
                return Err(DecapError::OuterFragment);
            }
            (
                ip.header_len(),
                usize::from(ip.total_len()),
                ip.protocol(),
                IpAddr::V4(ip.src_addr()),
                IpAddr::V4(ip.dst_addr()),
            )
        }
        6 => {
            let ip = ipv6::Packet::new_checked(&pkt[..]).map_err(|_| DecapError::BadOuter)?;
            let up = ip.upper_layer().map_err(|_| DecapError::BadOuter)?;
            if up.frag.is_some_and(|f| f.offset != 0 || f.more) {
                return Err(DecapError::OuterFragment);
            }
            (
                up.offset,
                ip.total_len(),
                up.proto,
                IpAddr::V6(ip.src_addr()),
                IpAddr::V6(ip.dst_addr()),
            )
        }
        _ => return Err(DecapError::BadOuter),
    };
    // new_checked bounds `end` by the buffer and `l4` by `end`.
    let (kind, inner_off, version) = match proto {
        ip_proto::IPIP => (TunKind::Ipip, l4, IpVersion::V4),
        ip_proto::IPV6 => (TunKind::Ipip, l4, IpVersion::V6),
        ip_proto::GRE => {
            let g = gre::parse(&pkt[l4..end]).map_err(|e| match e {
                WireError::Truncated => DecapError::BadTunnelHeader,
                _ => DecapError::Unsupported,
            })?;
            if g.checksum.is_some() && checksum::fold(checksum::sum(&pkt[l4..end])) != 0xffff {
                return Err(DecapError::Checksum);
            }
            let version = match g.protocol {
                ethertype::IPV4 => IpVersion::V4,
                ethertype::IPV6 => IpVersion::V6,
                _ => return Err(DecapError::Unsupported),
            };
            (TunKind::Gre, l4 + g.len, version)
        }
        ip_proto::UDP => {
            let u = udp::Packet::new_checked(&pkt[l4..end]).map_err(|_| DecapError::NotTunnel)?;
            if !gue_ports.contains(&u.dst_port()) {
                return Err(DecapError::NotTunnel);
            }
            let ulen = usize::from(u.len());
            if u.checksum() != 0 {
                let pseudo =
                    checksum::pseudo_header(&src, &dst, ip_proto::UDP, ulen as u32).unwrap_or(0);
                let s = checksum::add(pseudo, checksum::sum(&pkt[l4..l4 + ulen]));
                if checksum::fold(s) != 0xffff {
                    return Err(DecapError::Checksum);
                }
            }
            let payload = l4 + udp::HEADER_LEN;
            let h = gue::parse(&pkt[payload..l4 + ulen]).map_err(|e| match e {
                WireError::Unsupported => DecapError::Unsupported,
                _ => DecapError::BadTunnelHeader,
            })?;
            let (proto, off, rem) = match h {
                gue::Header::Direct { proto } => (proto, payload, None),
                gue::Header::V0 { control: true, .. } => return Err(DecapError::Unsupported),
                gue::Header::V0 {
                    proto_ctype,
                    len,
                    remcsum,
                    ..
                } => (proto_ctype, payload + len, remcsum),
            };
            let version = match proto {
                ip_proto::IPIP => IpVersion::V4,
                ip_proto::IPV6 => IpVersion::V6,
                _ => return Err(DecapError::Unsupported),
            };
            // The inner packet ends with the UDP payload.
            let end = l4 + ulen;
            let len = inner_len(&pkt[off..end], version)?;
            if let Some((start, offset)) = rem {
                remote_checksum(&mut pkt[off..off + len], start, offset)?;
            }
            return Ok(Decapsulated {
                kind: TunKind::Gue,
                offset: off,
                len,
                version,
                outer_src: src,
                outer_dst: dst,
            });
        }
        _ => return Err(DecapError::NotTunnel),
    };
    let len = inner_len(pkt.get(inner_off..end).unwrap_or(&[]), version)?;
    Ok(Decapsulated {
        kind,
        offset: inner_off,
        len,
        version,
        outer_src: src,
        outer_dst: dst,
    })
}

/// Decapsulates an Ethernet frame (VLAN tags allowed); offsets in the result
/// are frame offsets. Non-IP frames are `NotTunnel`.
pub fn decap_frame(frame: &mut [u8], gue_ports: &[u16]) -> Result<Decapsulated, DecapError> {
    let e = ethernet::Frame::new_checked(&frame[..])
        .and_then(|f| f.encap())
        .map_err(|_| DecapError::NotTunnel)?;
    if !matches!(e.ethertype, ethertype::IPV4 | ethertype::IPV6) {
        return Err(DecapError::NotTunnel);
    }
    let pkt = frame.get_mut(e.l3_off..).ok_or(DecapError::NotTunnel)?;
    let mut d = decap(pkt, gue_ports)?;
    d.offset += e.l3_off;
    Ok(d)
}

/// Length of the inner IP packet at the start of `b`, which must be of
/// `version` and fit in `b`.
fn inner_len(b: &[u8], version: IpVersion) -> Result<usize, DecapError> {
    match version {
        IpVersion::V4 => ipv4::Packet::new_checked(b)
            .map(|ip| usize::from(ip.total_len()))
            .map_err(|_| DecapError::BadInner),
        IpVersion::V6 => ipv6::Packet::new_checked(b)
            .map(|ip| ip.total_len())
            .map_err(|_| DecapError::BadInner),
    }
}

/// Completes the inner checksum left pending under GUE remote checksum
/// offload: the field holds the pseudo-header sum, so the checksum of
/// `[start, end)` with the field as it is, complemented, is the final value.
fn remote_checksum(inner: &mut [u8], start: u16, offset: u16) -> Result<(), DecapError> {
    let (start, offset) = (usize::from(start), usize::from(offset));
    if start % 2 != 0 || offset < start || offset + 2 > inner.len() {
        return Err(DecapError::BadRemcsum);
    }
    let mut c = !checksum::fold(checksum::sum(&inner[start..]));
    // 0 and 0xffff are the same checksum; 0 would read as "none" in UDP.
    if c == 0 {
        c = 0xffff;
    }
    inner[offset..offset + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}
