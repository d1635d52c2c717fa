//! NAT (masquerading) rewrite, IPVS's `ip_vs_nat_xmit`: requests get DNAT to
//! the real server, replies get SNAT back to the virtual address.
//!
//! Contract for [`dnat`] / [`snat`]:
//! * In place, no allocation, no panic; on `Err` the frame is unchanged.
//! * TTL / hop limit is decremented (the director forwards); a packet arriving
//!   with TTL <= 1 is refused with [`XmitError::TtlExceeded`].
//! * IPv4 header checksum: updated incrementally (always a complete checksum).
//! * L4 checksum, incrementally per [`CsumMode`]:
//!   - TCP: address (pseudo-header) and port change. In `Partial` mode only
//!     the address change: the field is the pending pseudo-header sum.
//!   - UDP over IPv4 with checksum 0 ("none", Full mode): stays 0. Otherwise
//!     as TCP, and a result of 0 is written 0xFFFF. UDP over IPv6 in Full mode
//!     with checksum 0 is refused (`ZeroUdpChecksumV6`).
//!   - SCTP: the CRC-32C does not cover addresses; after a port change it is
//!     recomputed over the packet in Full mode (a CRC has no incremental
//!     update), left alone in Partial mode (the completer computes it).
//!   - ICMPv6: address change only (pseudo-header); ICMPv4: nothing (no
//!     pseudo-header). ICMP has no ports: the port argument is ignored.
//! * Fragments: the first fragment holds the L4 header and is rewritten fully
//!   (its checksum covers the whole datagram, and an incremental update of a
//!   sum is exact whichever fragment holds the changed words). A non-first
//!   fragment has no L4 header: only addresses, TTL and the IPv4 header
//!   checksum are rewritten, which is exactly right, because the L4 checksum
//!   it contributes to lives in the first fragment.
//! * Other protocols (GRE, ESP, ...): `UnsupportedProtocol` — IPVS only
//!   handles TCP, UDP and SCTP (and ICMP about those).

use std::net::IpAddr;

use super::{Side, XmitError};
use crate::checksum::{self, CsumMode};
use crate::parse::{IpVersion, Parsed};
use crate::wire::{ip_proto, put16};

mod flow;
pub use flow::FlowNat;

/// Rewrites the destination address and port (requests to a real server).
pub fn dnat(
    frame: &mut [u8],
    p: &Parsed,
    new_dst: IpAddr,
    new_dport: u16,
    mode: CsumMode,
) -> Result<(), XmitError> {
    rewrite(frame, p, Side::Dst, new_dst, new_dport, mode)
}

/// Rewrites the source address and port (replies back to the virtual service).
pub fn snat(
    frame: &mut [u8],
    p: &Parsed,
    new_src: IpAddr,
    new_sport: u16,
    mode: CsumMode,
) -> Result<(), XmitError> {
    rewrite(frame, p, Side::Src, new_src, new_sport, mode)
}

/// How the L4 checksum is maintained for this packet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum L4Csum {
    /// No L4 header here, or no checksum to touch (ICMPv4, UDP/IPv4 csum 0).
    None,
    /// Internet checksum at this frame offset; `ports`: port words are covered
    /// (Full mode), `udp`: a 0 result is written 0xFFFF.
    Inet {
        at: usize,
        pseudo: bool,
        ports: bool,
        udp: bool,
    },
    /// SCTP CRC-32C to recompute after the port change (Full mode).
    Crc32c { at: usize },
}

#[inline]
fn rewrite(
    frame: &mut [u8],
    p: &Parsed,
    side: Side,
    addr: IpAddr,
    port: u16,
    mode: CsumMode,
) -> Result<(), XmitError> {
    if let IpAddr::V4(a) = addr {
        if rewrite_v4_fast(frame, p, side, a.octets(), port, mode) {
            return Ok(());
        }
    }
    rewrite_general(frame, p, side, addr, port, mode)
}

/// The common case, done directly: a whole (unfragmented) IPv4 TCP or UDP
/// packet with a checksum, TTL above 1. Same result as [`rewrite_general`]
/// (a test compares them); false, with the frame untouched, for anything
/// else.
#[inline(always)]
fn rewrite_v4_fast(
    frame: &mut [u8],
    p: &Parsed,
    side: Side,
    addr: [u8; 4],
    port: u16,
    mode: CsumMode,
) -> bool {
    let l3 = p.l3_off;
    let l4 = p.l4_off;
    let csum_at = match p.proto {
        ip_proto::TCP => l4 + 16,
        ip_proto::UDP => l4 + 6,
        _ => return false,
    };
    if p.version != IpVersion::V4
        || !p.has_l4
        || p.is_fragment
        || l3 + 20 > l4
        || csum_at + 2 > p.payload_off
        || p.payload_off > p.ip_end
        || p.ip_end > frame.len()
    {
        return false;
    }
    // Fixed-size views: one bounds check each (all checked above).
    let (head, rest) = frame.split_at_mut(l4);
    let Some(Ok(ip)) = head.get_mut(l3..l3 + 20).map(<&mut [u8; 20]>::try_from) else {
        return false;
    };
    let (ports, rest) = rest.split_at_mut(4);
    let Ok(ports) = <&mut [u8; 4]>::try_from(ports) else {
        return false;
    };
    let Some(Ok(csum)) = rest
        .get_mut(csum_at - l4 - 4..csum_at - l4 - 2)
        .map(<&mut [u8; 2]>::try_from)
    else {
        return false;
    };
    let ttl = ip[8];
    let old_csum = u16::from_be_bytes(*csum);
    let udp = p.proto == ip_proto::UDP;
    let full = mode == CsumMode::Full;
    // UDP without a checksum (IPv4 only) and TTL expiry: the general path.
    if ttl <= 1 || (udp && full && old_csum == 0) {
        return false;
    }
    let (a, pt) = match side {
        Side::Src => (12, 0),
        Side::Dst => (16, 2),
    };
    let w = |hi: u8, lo: u8| u32::from(u16::from_be_bytes([hi, lo]));
    let not = |v: u16| u32::from(!v);
    // RFC 1624 eqn. 3 with every changed word in one sum: folding once
    // gives what folding after each word gives (a ones'-complement sum is
    // zero only when every term is), so the result equals the general
    // path's word-by-word update.
    let old_sum = checksum::fold32(w(ip[a], ip[a + 1]) + w(ip[a + 2], ip[a + 3]));
    let new_sum = checksum::fold32(w(addr[0], addr[1]) + w(addr[2], addr[3]));
    let mut delta = not(old_sum) + u32::from(new_sum);
    let mut c = if full {
        delta += not(w(ports[pt], ports[pt + 1]) as u16) + u32::from(port);
        !checksum::fold32(not(old_csum) + delta)
    } else {
        checksum::fold32(u32::from(old_csum) + delta)
    };
    if udp && full && c == 0 {
        c = 0xffff;
    }
    *csum = c.to_be_bytes();
    [ports[pt], ports[pt + 1]] = port.to_be_bytes();
    [ip[a], ip[a + 1], ip[a + 2], ip[a + 3]] = addr;
    ip[8] = ttl - 1;
    // TTL shares its 16-bit word with the protocol byte.
    let proto = u16::from(ip[9]);
    let ic = w(ip[10], ip[11]) as u16;
    let ic = !checksum::fold32(
        not(ic)
            + not(old_sum)
            + u32::from(new_sum)
            + not(u16::from(ttl) << 8 | proto)
            + u32::from(u16::from(ttl - 1) << 8 | proto),
    );
    [ip[10], ip[11]] = ic.to_be_bytes();
    true
}

/// Every family, protocol, fragment and checksum case.
fn rewrite_general(
    frame: &mut [u8],
    p: &Parsed,
    side: Side,
    addr: IpAddr,
    port: u16,
    mode: CsumMode,
) -> Result<(), XmitError> {
    // ---- validate everything first: an error leaves the frame untouched ----
    if p.ip_end > frame.len()
        || p.l3_off > p.l4_off
        || p.l4_off > p.payload_off
        || p.payload_off > p.ip_end
    {
        return Err(XmitError::FrameMismatch);
    }
    let v4 = match (p.version, addr) {
        (IpVersion::V4, IpAddr::V4(_)) => true,
        (IpVersion::V6, IpAddr::V6(_)) => false,
        _ => return Err(XmitError::FamilyMismatch),
    };
    // Offsets of the TTL and the address being replaced within the frame.
    let (ttl_at, addr_at, addr_len) = if v4 {
        (
            p.l3_off + 8,
            p.l3_off + if side == Side::Src { 12 } else { 16 },
            4,
        )
    } else {
        (
            p.l3_off + 7,
            p.l3_off + if side == Side::Src { 8 } else { 24 },
            16,
        )
    };
    let hdr_min = if v4 { 20 } else { 40 };
    if p.l3_off + hdr_min > p.ip_end {
        return Err(XmitError::FrameMismatch);
    }
    if !v4 && p.routing_pending {
        return Err(XmitError::Ipv6RoutingHeader);
    }
    let ttl = frame[ttl_at];
    if ttl <= 1 {
        return Err(XmitError::TtlExceeded);
    }
    let full = mode == CsumMode::Full;
    let l4_here = p.has_l4 && (!p.is_fragment || p.is_first_fragment);
    let csum = match p.proto {
        ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP | ip_proto::ICMP | ip_proto::ICMPV6
            if !l4_here =>
        {
            L4Csum::None
        }
        ip_proto::TCP => L4Csum::Inet {
            at: p.l4_off + 16,
            pseudo: true,
            ports: full,
            udp: false,
        },
        ip_proto::UDP => {
            let at = p.l4_off + 6;
            let zero = frame.get(at..at + 2).is_some_and(|c| c == [0, 0]);
            match (zero && full, v4) {
                (true, true) => L4Csum::None,
                (true, false) => return Err(XmitError::ZeroUdpChecksumV6),
                _ => L4Csum::Inet {
                    at,
                    pseudo: true,
                    ports: full,
                    udp: true,
                },
            }
        }
        ip_proto::SCTP if full => L4Csum::Crc32c { at: p.l4_off + 8 },
        ip_proto::SCTP => L4Csum::None,
        ip_proto::ICMPV6 => L4Csum::Inet {
            at: p.l4_off + 2,
            pseudo: true,
            ports: false,
            udp: false,
        },
        ip_proto::ICMP => L4Csum::None,
        other => return Err(XmitError::UnsupportedProtocol(other)),
    };
    let port_at = match (l4_here && p.has_ports(), side) {
        (true, Side::Src) => Some(p.l4_off),
        (true, Side::Dst) => Some(p.l4_off + 2),
        (false, _) => None,
    };
    // Parse guarantees the L4 header lies in l4_off..payload_off; re-check so a
    // foreign `Parsed` cannot make us index out of bounds.
    let l4_hdr_end = match csum {
        L4Csum::Inet { at, .. } => at + 2,
        L4Csum::Crc32c { at } => at + 4,
        L4Csum::None => 0,
    };
    if l4_hdr_end > p.payload_off || port_at.is_some_and(|a| a + 2 > p.payload_off) {
        return Err(XmitError::FrameMismatch);
    }

    // ---- rewrite ----
    let mut old_addr = [0u8; 16];
    old_addr[..addr_len].copy_from_slice(&frame[addr_at..addr_at + addr_len]);
    let new_addr: [u8; 16] = match addr {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    };
    // Folded sums of the old and new address words (zero tail adds nothing).
    let old_sum = checksum::fold(checksum::sum(&old_addr));
    let new_sum = checksum::fold(checksum::sum(&new_addr));
    let old_port = port_at.map(|a| u16::from_be_bytes([frame[a], frame[a + 1]]));

    if let L4Csum::Inet {
        at,
        pseudo,
        ports,
        udp,
    } = csum
    {
        let mut c = u16::from_be_bytes([frame[at], frame[at + 1]]);
        if pseudo {
            c = mode.adjust16(c, old_sum, new_sum);
        }
        if let (true, Some(old)) = (ports, old_port) {
            c = mode.adjust16(c, old, port);
        }
        if udp && full && c == 0 {
            c = 0xffff;
        }
        put16(frame, at, c);
    }
    if let Some(a) = port_at {
        put16(frame, a, port);
    }
    frame[addr_at..addr_at + addr_len].copy_from_slice(&new_addr[..addr_len]);
    if let L4Csum::Crc32c { at } = csum {
        frame[at..at + 4].fill(0);
        let crc = checksum::crc32c(&frame[p.l4_off..p.ip_end]);
        frame[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }

    frame[ttl_at] = ttl - 1;
    if v4 {
        let at = p.l3_off + 10;
        let mut c = u16::from_be_bytes([frame[at], frame[at + 1]]);
        c = checksum::update16(c, old_sum, new_sum);
        // TTL shares its 16-bit word with the protocol byte.
        let proto = u16::from(frame[p.l3_off + 9]);
        c = checksum::update16(
            c,
            u16::from(ttl) << 8 | proto,
            u16::from(ttl - 1) << 8 | proto,
        );
        put16(frame, at, c);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::build::{FrameSpec, L4Spec};
    use crate::checksum::{fill_l4_checksum, verify_l4_checksum};
    use crate::parse::parse;

    fn rs4() -> IpAddr {
        Ipv4Addr::new(203, 0, 113, 11).into()
    }

    /// Checks `dnat` against a frame built directly with the new fields.
    fn check_dnat(spec: &FrameSpec, new_dst: IpAddr, new_port: u16) {
        let mut f = spec.build();
        let p = parse(&f).unwrap();
        dnat(&mut f, &p, new_dst, new_port, spec.csum).unwrap();
        let mut want = spec.clone();
        want.dst = new_dst;
        if p.has_ports() {
            want.dport = new_port;
        }
        want.ttl -= 1;
        assert_eq!(f, want.build(), "{spec:?}");
    }

    /// The IPv4 fast path writes exactly what the general path writes, for
    /// both sides, both checksum modes, TCP and UDP, and every checksum and
    /// port value class.
    #[test]
    fn fast_path_matches_general() {
        let mut n = 0;
        for base in [FrameSpec::tcp_v4(), FrameSpec::udp_v4()] {
            for csum in [CsumMode::Full, CsumMode::Partial] {
                for (i, (sport, dport)) in [(1, 2), (0, 0xffff), (40000, 80), (0xffff, 0)]
                    .into_iter()
                    .enumerate()
                {
                    let mut spec = base.clone();
                    spec.csum = csum;
                    spec.sport = sport;
                    spec.dport = dport;
                    spec.payload = vec![i as u8 * 37; i * 3];
                    let f = spec.build();
                    let p = parse(&f).unwrap();
                    for side in [Side::Src, Side::Dst] {
                        for (addr, port) in [
                            ([203, 0, 113, 11], 8080),
                            ([0, 0, 0, 0], 0),
                            ([255; 4], 0xffff),
                        ] {
                            for c in [None, Some(0u16), Some(0xffff), Some(1)] {
                                let mut a = f.clone();
                                if let Some(c) = c {
                                    let at =
                                        p.l4_off + if p.proto == ip_proto::TCP { 16 } else { 6 };
                                    put16(&mut a, at, c);
                                }
                                let mut b = a.clone();
                                let ip = IpAddr::from(addr);
                                let fast = rewrite_v4_fast(&mut a, &p, side, addr, port, csum);
                                let gen = rewrite_general(&mut b, &p, side, ip, port, csum);
                                if fast {
                                    n += 1;
                                    assert_eq!(gen, Ok(()));
                                    assert_eq!(a, b, "{spec:?} {side:?} {addr:?} {c:?}");
                                } else {
                                    assert_eq!(a, f_with(&f, &p, c), "untouched");
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(n > 100, "{n}");
    }

    fn f_with(f: &[u8], p: &Parsed, c: Option<u16>) -> Vec<u8> {
        let mut a = f.to_vec();
        if let Some(c) = c {
            let at = p.l4_off + if p.proto == ip_proto::TCP { 16 } else { 6 };
            put16(&mut a, at, c);
        }
        a
    }

    #[test]
    fn dnat_tcp_udp_v4_v6() {
        check_dnat(&FrameSpec::tcp_v4(), rs4(), 8080);
        check_dnat(&FrameSpec::udp_v4(), rs4(), 53);
        let rs6: IpAddr = "2001:db8:3::11".parse::<Ipv6Addr>().unwrap().into();
        check_dnat(&FrameSpec::tcp_v6(), rs6, 8080);
        check_dnat(&FrameSpec::udp_v6(), rs6, 53);
    }

    #[test]
    fn snat_reply() {
        let mut spec = FrameSpec::tcp_v4();
        spec.src = rs4();
        spec.sport = 8080;
        let mut f = spec.build();
        let p = parse(&f).unwrap();
        let vip: IpAddr = Ipv4Addr::new(192, 0, 2, 10).into();
        snat(&mut f, &p, vip, 80, CsumMode::Full).unwrap();
        let mut want = spec.clone();
        want.src = vip;
        want.sport = 80;
        want.ttl = 63;
        assert_eq!(f, want.build());
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut spec = FrameSpec::udp_v4();
        spec.l4 = L4Spec::Udp { zero_csum: true };
        check_dnat(&spec, rs4(), 5353);
    }

    #[test]
    fn partial_mode_completes_to_full() {
        let mut spec = FrameSpec::tcp_v4();
        spec.csum = CsumMode::Partial;
        check_dnat(&spec, rs4(), 8080);
        let mut f = spec.build();
        let p = parse(&f).unwrap();
        dnat(&mut f, &p, rs4(), 8080, CsumMode::Partial).unwrap();
        let p2 = parse(&f).unwrap();
        fill_l4_checksum(&mut f, &p2).unwrap();
        assert!(verify_l4_checksum(&f, &p2).unwrap());
        let mut full = FrameSpec::tcp_v4();
        full.dst = rs4();
        full.dport = 8080;
        full.ttl = 63;
        assert_eq!(f, full.build());
    }

    #[test]
    fn ttl_and_family_errors_leave_frame() {
        let mut spec = FrameSpec::tcp_v4();
        spec.ttl = 1;
        let mut f = spec.build();
        let orig = f.clone();
        let p = parse(&f).unwrap();
        assert_eq!(
            dnat(&mut f, &p, rs4(), 1, CsumMode::Full),
            Err(XmitError::TtlExceeded)
        );
        let v6: IpAddr = Ipv6Addr::LOCALHOST.into();
        assert_eq!(
            dnat(&mut f, &p, v6, 1, CsumMode::Full),
            Err(XmitError::FamilyMismatch)
        );
        assert_eq!(
            dnat(&mut f[..20], &p, rs4(), 1, CsumMode::Full),
            Err(XmitError::FrameMismatch)
        );
        assert_eq!(f, orig);
    }

    #[test]
    fn sctp_crc_recomputed() {
        let mut spec = FrameSpec::tcp_v4();
        spec.l4 = L4Spec::Sctp;
        check_dnat(&spec, rs4(), 9999);
        let mut f = spec.build();
        let p = parse(&f).unwrap();
        assert!(verify_l4_checksum(&f, &p).unwrap());
        dnat(&mut f, &p, rs4(), 9999, CsumMode::Full).unwrap();
        assert!(verify_l4_checksum(&f, &parse(&f).unwrap()).unwrap());
    }

    #[test]
    fn non_first_fragment_rewrites_addresses_only() {
        let mut spec = FrameSpec::udp_v4();
        spec.frag = Some((1480, false));
        check_dnat(&spec, rs4(), 53);
    }
}
