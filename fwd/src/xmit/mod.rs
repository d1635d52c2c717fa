//! Forwarding methods (IPVS's `ip_vs_xmit.c`): how a packet is rewritten
//! before it leaves. One file per method: [`nat`] (masquerading), [`dr`]
//! (direct routing: TTL only, the engine rewrites the MACs), [`tun`]
//! (ipip/GUE/GRE encapsulation, and decapsulation for the real-server
//! endpoint), and [`icmp`] (NAT of ICMP errors about a connection, building
//! ICMP errors).
//!
//! Contract: every function works on a frame the caller parsed with
//! [`crate::parse::parse`], never allocates, never panics (a `Parsed` that
//! does not fit the frame is `XmitError::FrameMismatch`), and leaves the frame
//! untouched when it returns an error.
//!
//! What every forwarding method shares with the kernel: IPVS transmits from
//! LOCAL_IN through a fresh output route (`__ip_vs_get_out_rt`), which
//! decrements the TTL / hop limit of the packet it forwards (`decrement_ttl`)
//! — for NAT, DR and the inner packet of TUN alike — and checks the packet
//! against the route MTU ([`fits`], `ensure_mtu_is_adequate`).

pub mod dr;
pub mod icmp;
pub mod nat;
pub mod tun;

use crate::checksum;
use crate::parse::{IpVersion, Parsed};
use crate::wire::ethernet::MacAddr;
use crate::wire::{icmpv4, icmpv6, ip_proto, ipv4, put16};

/// Why a rewrite was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum XmitError {
    /// TTL / hop limit would reach 0. Drop the packet; the kernel's IPVS
    /// (`decrement_ttl` in `ip_vs_xmit.c`) answers with ICMP Time Exceeded,
    /// TTL exceeded in transit (type 11, code 0) for IPv4, or ICMPv6 Time
    /// Exceeded, hop limit exceeded in transit (type 3, code 0) for IPv6.
    #[error("TTL exceeded in transit")]
    TtlExceeded,
    /// New address family differs from the packet's.
    #[error("address family mismatch")]
    FamilyMismatch,
    /// No rewrite defined for this protocol (only TCP, UDP, SCTP, ICMP, ICMPv6).
    #[error("unsupported protocol {0}")]
    UnsupportedProtocol(u8),
    /// The frame is shorter than the `Parsed` describing it (or not a frame).
    #[error("frame does not match its parse result")]
    FrameMismatch,
    /// A whole-packet checksum was asked of a fragment.
    #[error("packet is a fragment")]
    Fragment,
    /// IPv6 UDP with checksum 0 in `CsumMode::Full`: invalid (RFC 8200 §8.1),
    /// and an incremental update of a missing checksum would be garbage.
    #[error("IPv6 UDP with zero checksum")]
    ZeroUdpChecksumV6,
    /// IPv6 routing header with segments left: the pseudo-header destination
    /// is the final segment, not the header's, so the update would be wrong.
    #[error("IPv6 routing header with segments left")]
    Ipv6RoutingHeader,
    /// Encapsulation needs more free bytes before the frame than the buffer
    /// has (see [`tun::MAX_OVERHEAD`]).
    #[error("not enough headroom before the frame")]
    NoHeadroom,
    /// The result would exceed the 65535-byte IP length limit.
    #[error("packet too large for its IP length field")]
    TooLarge,
    /// The caller's output buffer cannot hold the result.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// The kernel would not answer this packet with an ICMP error (it is
    /// itself an ICMP error, a non-first fragment, or from/to a multicast,
    /// broadcast or unspecified address): drop silently.
    #[error("no ICMP error may be sent about this packet")]
    IcmpNotAllowed,
    /// The packet is not an ICMP/ICMPv6 error message, or its quoted packet
    /// (`Embedded`) does not belong to it.
    #[error("not an ICMP error with a usable quote")]
    NotIcmpError,
    /// A GSO super-packet with a segment size of 0.
    #[error("bad GSO segment size")]
    BadGsoSize,
    /// An IPv4 packet with DF set does not fit: it may not be fragmented
    /// (answer with ICMP fragmentation needed).
    #[error("DF set on a packet that needs fragmentation")]
    DontFragment,
}

/// Which address (and port) of a packet a rewrite replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Source address / port.
    Src,
    /// Destination address / port.
    Dst,
}

/// Rewrites the Ethernet source and destination MACs (VLAN tags untouched).
pub fn set_macs(frame: &mut [u8], src: MacAddr, dst: MacAddr) -> Result<(), XmitError> {
    let h = frame.get_mut(..12).ok_or(XmitError::FrameMismatch)?;
    h[..6].copy_from_slice(&dst);
    h[6..12].copy_from_slice(&src);
    Ok(())
}

/// A packet that does not fit the path MTU and may not be fragmented by the
/// director (IPv4 with DF set, or any IPv6 packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{len}-byte packet exceeds the path MTU {mtu}")]
pub struct NeedsFrag {
    /// The MTU to report: ICMP fragmentation-needed next-hop MTU (IPv4) or
    /// ICMPv6 packet-too-big MTU; for a tunnel, the route MTU minus the
    /// encapsulation overhead.
    pub mtu: u32,
    /// Length of the IP packet that did not fit.
    pub len: usize,
    /// Whether the kernel answers with an ICMP error
    /// ([`icmp::IcmpKind::TooBig`]); false for ICMP errors being forwarded,
    /// IPv6 non-first fragments, and a tunnel route MTU too small to use at all.
    pub send_icmp: bool,
}

/// Checks an IP packet against the MTU of the route it leaves by, as IPVS's
/// `ensure_mtu_is_adequate` does for NAT and DR (and, with the tunnel MTU,
/// for TUN: see [`tun::check_mtu`]).
///
/// * IPv4: refused when DF is set and the IP length exceeds `mtu`. An
///   oversized packet without DF passes: the kernel would fragment it on
///   output; an AF_PACKET sender cannot, so the engine must fragment or drop.
/// * IPv6: refused whenever the IP length exceeds `mtu` (routers never fragment).
/// * ICMP errors relayed for a connection are never answered with ICMP (and
///   IPv4 ones skip the check, as in the kernel); IPv6 non-first fragments
///   are refused without ICMP ("only send ICMP too big on first fragment").
///
/// GSO super-packets are exempt in the kernel (they are segmented later);
/// check each segment instead. Never panics.
pub fn fits(frame: &[u8], p: &Parsed, mtu: u32) -> Result<(), NeedsFrag> {
    let len = p.ip_len;
    if len as u64 <= u64::from(mtu) {
        return Ok(());
    }
    let relayed_icmp_error = p.has_l4
        && match p.proto {
            ip_proto::ICMP => icmpv4::is_error(p.icmp_type),
            ip_proto::ICMPV6 => icmpv6::is_error(p.icmp_type),
            _ => false,
        };
    match p.version {
        IpVersion::V4 => {
            let df = frame
                .get(p.l3_off + 6)
                .is_some_and(|b| u16::from(*b) << 8 & ipv4::FLAG_DF != 0);
            if !df || relayed_icmp_error {
                return Ok(());
            }
            Err(NeedsFrag {
                mtu,
                len,
                send_icmp: true,
            })
        }
        IpVersion::V6 => Err(NeedsFrag {
            mtu,
            len,
            send_icmp: !(relayed_icmp_error || p.is_fragment && !p.is_first_fragment),
        }),
    }
}

/// Checks that `p` describes `frame` (offsets in order, IP header present).
pub(crate) fn check_parsed(frame: &[u8], p: &Parsed) -> Result<(), XmitError> {
    let hdr_min = match p.version {
        IpVersion::V4 => ipv4::HEADER_LEN,
        IpVersion::V6 => crate::wire::ipv6::HEADER_LEN,
    };
    if p.ip_end > frame.len()
        || p.l3_off > p.l4_off
        || p.l4_off > p.payload_off
        || p.payload_off > p.ip_end
        || p.l3_off + hdr_min > p.ip_end
        || p.ip_end - p.l3_off != p.ip_len
    {
        return Err(XmitError::FrameMismatch);
    }
    Ok(())
}

/// Decrements the TTL / hop limit of the (already checked) packet at
/// `l3_off`, updating the IPv4 header checksum incrementally; refuses a
/// packet that arrived with TTL <= 1. Returns the new TTL.
pub(crate) fn decrement_ttl(
    frame: &mut [u8],
    l3_off: usize,
    version: IpVersion,
) -> Result<u8, XmitError> {
    let at = match version {
        IpVersion::V4 => l3_off + 8,
        IpVersion::V6 => l3_off + 7,
    };
    let ttl = *frame.get(at).ok_or(XmitError::FrameMismatch)?;
    if ttl <= 1 {
        return Err(XmitError::TtlExceeded);
    }
    if version == IpVersion::V4 {
        let c_at = l3_off + 10;
        if frame.len() < c_at + 2 {
            return Err(XmitError::FrameMismatch);
        }
        // TTL shares its 16-bit word with the protocol byte.
        let proto = u16::from(frame[l3_off + 9]);
        let c = u16::from_be_bytes([frame[c_at], frame[c_at + 1]]);
        let c = checksum::update16(
            c,
            u16::from(ttl) << 8 | proto,
            u16::from(ttl - 1) << 8 | proto,
        );
        put16(frame, c_at, c);
    }
    frame[at] = ttl - 1;
    Ok(ttl - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{FrameSpec, L4Spec};
    use crate::parse::parse;

    #[test]
    fn set_macs_writes_dst_then_src() {
        let mut f = [0u8; 16];
        set_macs(&mut f, [1; 6], [2; 6]).unwrap();
        assert_eq!(&f[..12], &[2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1]);
        assert_eq!(&f[12..], &[0; 4]);
        assert_eq!(
            set_macs(&mut [0u8; 11], [1; 6], [2; 6]),
            Err(XmitError::FrameMismatch)
        );
    }

    #[test]
    fn fits_follows_df_and_family() {
        let mut spec = FrameSpec::tcp_v4();
        spec.payload = vec![0; 1460]; // 1500-byte IP packet, DF set by the builder
        let f = spec.build();
        let p = parse(&f).unwrap();
        assert_eq!(fits(&f, &p, 1500), Ok(()));
        assert_eq!(
            fits(&f, &p, 1480),
            Err(NeedsFrag {
                mtu: 1480,
                len: 1500,
                send_icmp: true
            })
        );
        // Without DF the kernel fragments: fits.
        spec.frag = Some((0, true));
        let f = spec.build();
        assert_eq!(fits(&f, &parse(&f).unwrap(), 576), Ok(()));
        // IPv6: always refused, ICMP only about a first fragment.
        let mut spec = FrameSpec::udp_v6();
        spec.payload = vec![0; 1452];
        let f = spec.build();
        let p = parse(&f).unwrap();
        assert!(fits(&f, &p, 1500).is_ok());
        assert!(fits(&f, &p, 1400).is_err_and(|e| e.send_icmp && e.mtu == 1400));
        spec.frag = Some((1448, false));
        let f = spec.build();
        assert!(fits(&f, &parse(&f).unwrap(), 1280).is_err_and(|e| !e.send_icmp));
        // A relayed ICMP error is never answered with ICMP.
        let mut spec = FrameSpec::tcp_v6();
        spec.l4 = L4Spec::Icmp {
            msg_type: 1,
            code: 4,
        };
        spec.payload = vec![0; 1400];
        let f = spec.build();
        assert!(fits(&f, &parse(&f).unwrap(), 1280).is_err_and(|e| !e.send_icmp));
    }

    #[test]
    fn ttl_decrement_keeps_checksum() {
        let mut f = FrameSpec::udp_v4().build();
        let p = parse(&f).unwrap();
        assert_eq!(decrement_ttl(&mut f, p.l3_off, p.version), Ok(63));
        let q = parse(&f).unwrap();
        assert_eq!(q.ttl, 63);
        let mut spec = FrameSpec::udp_v6();
        spec.ttl = 1;
        let mut f = spec.build();
        let orig = f.clone();
        assert_eq!(
            decrement_ttl(&mut f, 14, IpVersion::V6),
            Err(XmitError::TtlExceeded)
        );
        assert_eq!(f, orig);
    }
}
