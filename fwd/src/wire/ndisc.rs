//! IPv6 Neighbour Discovery (RFC 4861), the part a forwarder needs to find
//! next-hop MACs itself: sending a Neighbour Solicitation and reading the
//! Neighbour Advertisement that answers it (the IPv6 counterpart of
//! [`super::arp`]).
//!
//! Contract: [`emit_solicit`] writes a complete Ethernet frame (multicast to
//! the target's solicited-node group, or unicast for reachability probes)
//! with hop limit 255 and the source link-layer address option, checksum
//! included. [`parse_advert`] applies the receiver's validity checks of RFC
//! 4861 §7.1.2 (hop limit 255, valid checksum, code 0, length, target not
//! multicast, S clear when sent to a multicast address, no zero-length
//! option) and returns the target and its link-layer address; it never
//! panics on any input.

use std::net::Ipv6Addr;

use super::ethernet::{self, ethertype, MacAddr};
use super::icmpv6::{self, msg_type};
use super::{ip_proto, ipv6, WireError};

/// Option type: source link-layer address.
pub const OPT_SOURCE_LL: u8 = 1;
/// Option type: target link-layer address.
pub const OPT_TARGET_LL: u8 = 2;
/// ND messages are sent, and accepted, only with this hop limit.
pub const HOP_LIMIT: u8 = 255;
/// Length of a link-layer address option for Ethernet (type, length, MAC).
const LL_OPT_LEN: usize = 8;
/// Frame length of a solicitation with the source link-layer option.
pub const SOLICIT_FRAME_LEN: usize =
    ethernet::HEADER_LEN + ipv6::HEADER_LEN + icmpv6::HEADER_LEN + 16 + LL_OPT_LEN;

/// Advertisement flag: the sender is a router.
const FLAG_ROUTER: u8 = 0x80;
/// Advertisement flag: sent in response to a solicitation.
const FLAG_SOLICITED: u8 = 0x40;
/// Advertisement flag: override an existing cache entry.
const FLAG_OVERRIDE: u8 = 0x20;

/// The solicited-node multicast address of `a` (ff02::1:ffXX:XXXX).
pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet multicast MAC of an IPv6 multicast address (33:33 + low 32 bits).
pub fn multicast_mac(a: Ipv6Addr) -> MacAddr {
    let o = a.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// Writes a Neighbour Solicitation for `target` from `src_ip` /
/// `src_mac` into `buf` and returns the frame length. With `unicast` =
/// `Some(mac)` it is a reachability probe sent to `target` at `mac`;
/// otherwise it goes to the solicited-node group. An unspecified `src_ip`
/// (duplicate address detection) carries no source link-layer option.
/// Error: `Truncated` (a buffer of [`SOLICIT_FRAME_LEN`] suffices).
pub fn emit_solicit(
    buf: &mut [u8],
    src_mac: MacAddr,
    src_ip: Ipv6Addr,
    target: Ipv6Addr,
    unicast: Option<MacAddr>,
) -> Result<usize, WireError> {
    let with_opt = !src_ip.is_unspecified();
    let icmp_len = icmpv6::HEADER_LEN + 16 + if with_opt { LL_OPT_LEN } else { 0 };
    let len = ethernet::HEADER_LEN + ipv6::HEADER_LEN + icmp_len;
    let f = buf.get_mut(..len).ok_or(WireError::Truncated)?;
    let (dst_ip, dst_mac) = match unicast {
        Some(mac) => (target, mac),
        None => {
            let group = solicited_node(target);
            (group, multicast_mac(group))
        }
    };
    ethernet::emit_header(f, src_mac, dst_mac, ethertype::IPV6)?;
    let o = ethernet::HEADER_LEN;
    ipv6::Repr {
        src: src_ip,
        dst: dst_ip,
        next_header: ip_proto::ICMPV6,
        hop_limit: HOP_LIMIT,
        traffic_class: 0,
        flow_label: 0,
        payload_len: icmp_len,
    }
    .emit(&mut f[o..])?;
    let m = &mut f[o + ipv6::HEADER_LEN..];
    m[0] = msg_type::NEIGHBOR_SOLICIT;
    m[1] = 0;
    m[2..8].fill(0);
    m[8..24].copy_from_slice(&target.octets());
    if with_opt {
        m[24] = OPT_SOURCE_LL;
        m[25] = 1;
        m[26..32].copy_from_slice(&src_mac);
    }
    icmpv6::Packet::new_unchecked(&mut m[..icmp_len]).fill_checksum(&src_ip, &dst_ip);
    Ok(len)
}

/// A valid Neighbour Advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advert {
    /// The address whose link-layer address is advertised.
    pub target: Ipv6Addr,
    /// Target link-layer address option, when present (required in answers
    /// to multicast solicitations).
    pub lladdr: Option<MacAddr>,
    /// R flag: the sender is a router.
    pub router: bool,
    /// S flag: an answer to a solicitation (the neighbour is reachable).
    pub solicited: bool,
    /// O flag: replace an existing cache entry.
    pub override_: bool,
}

/// Validates and reads the ICMPv6 message `icmp` (the whole message, bounded
/// by the IPv6 payload) as a Neighbour Advertisement received from `src` to
/// `dst` with `hop_limit`. Errors: `Truncated`, `Unsupported` (another
/// message type), `Invalid` (fails a validity check of RFC 4861 §7.1.2).
pub fn parse_advert(
    icmp: &[u8],
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
    hop_limit: u8,
) -> Result<Advert, WireError> {
    let p = icmpv6::Packet::new_checked(icmp)?;
    if p.msg_type() != msg_type::NEIGHBOR_ADVERT {
        return Err(WireError::Unsupported);
    }
    if icmp.len() < icmpv6::HEADER_LEN + 16 {
        return Err(WireError::Truncated);
    }
    if hop_limit != HOP_LIMIT || p.code() != 0 || !p.verify_checksum(src, dst) {
        return Err(WireError::Invalid);
    }
    let flags = icmp[4];
    let mut t = [0u8; 16];
    t.copy_from_slice(&icmp[8..24]);
    let target = Ipv6Addr::from(t);
    let solicited = flags & FLAG_SOLICITED != 0;
    if target.is_multicast() || (dst.is_multicast() && solicited) {
        return Err(WireError::Invalid);
    }
    let mut lladdr = None;
    let mut opts = &icmp[icmpv6::HEADER_LEN + 16..];
    while !opts.is_empty() {
        if opts.len() < 2 {
            return Err(WireError::Invalid);
        }
        let len = usize::from(opts[1]) * 8;
        if len == 0 || len > opts.len() {
            return Err(WireError::Invalid);
        }
        // Ethernet addresses fill an 8-byte option; longer ones are another
        // link type's, not ours to read.
        if opts[0] == OPT_TARGET_LL && len == LL_OPT_LEN {
            let mut m = [0u8; 6];
            m.copy_from_slice(&opts[2..8]);
            lladdr = Some(m);
        }
        opts = &opts[len..];
    }
    Ok(Advert {
        target,
        lladdr,
        router: flags & FLAG_ROUTER != 0,
        solicited,
        override_: flags & FLAG_OVERRIDE != 0,
    })
}

/// [`parse_advert`] on a whole Ethernet frame (VLAN tags and IPv6 extension
/// headers allowed). Non-IPv6 or non-ICMPv6 frames are `Unsupported`.
pub fn parse_advert_frame(frame: &[u8]) -> Result<Advert, WireError> {
    let e = ethernet::Frame::new_checked(frame)?.encap()?;
    if e.ethertype != ethertype::IPV6 {
        return Err(WireError::Unsupported);
    }
    let ip = ipv6::Packet::new_checked(frame.get(e.l3_off..).ok_or(WireError::Truncated)?)?;
    let up = ip.upper_layer()?;
    if up.proto != ip_proto::ICMPV6 || up.frag.is_some() {
        return Err(WireError::Unsupported);
    }
    let icmp = frame
        .get(e.l3_off + up.offset..e.l3_off + ip.total_len())
        .ok_or(WireError::Truncated)?;
    parse_advert(icmp, &ip.src_addr(), &ip.dst_addr(), ip.hop_limit())
}

/// Emits a Neighbour Advertisement message body (tests and tools): target,
/// flags and the target link-layer option, checksum for `src` → `dst`.
/// Returns the ICMPv6 message length (32). Error: `Truncated`.
pub fn emit_advert(
    buf: &mut [u8],
    adv: &Advert,
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
) -> Result<usize, WireError> {
    let len = icmpv6::HEADER_LEN + 16 + if adv.lladdr.is_some() { LL_OPT_LEN } else { 0 };
    let m = buf.get_mut(..len).ok_or(WireError::Truncated)?;
    m.fill(0);
    m[0] = msg_type::NEIGHBOR_ADVERT;
    m[4] = if adv.router { FLAG_ROUTER } else { 0 }
        | if adv.solicited { FLAG_SOLICITED } else { 0 }
        | if adv.override_ { FLAG_OVERRIDE } else { 0 };
    m[8..24].copy_from_slice(&adv.target.octets());
    if let Some(mac) = adv.lladdr {
        m[24] = OPT_TARGET_LL;
        m[25] = 1;
        m[26..32].copy_from_slice(&mac);
    }
    icmpv6::Packet::new_unchecked(&mut m[..]).fill_checksum(src, dst);
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum;

    /// ICMPv6 checksum check over the pseudo-header, without the view.
    fn icmpv6_ok(msg: &[u8], src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let ph = checksum::pseudo_header_v6(src, dst, ip_proto::ICMPV6, msg.len() as u32);
        checksum::fold(checksum::add(ph, checksum::sum(msg))) == 0xffff
    }

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }
    const MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x01];

    #[test]
    fn solicited_node_and_mac() {
        let t = a("2001:db8:3::11:2233");
        assert_eq!(solicited_node(t), a("ff02::1:ff11:2233"));
        assert_eq!(
            multicast_mac(solicited_node(t)),
            [0x33, 0x33, 0xff, 0x11, 0x22, 0x33]
        );
    }

    #[test]
    fn test_construct_solicit() {
        let (me, t) = (a("2001:db8:3::1"), a("2001:db8:3::11"));
        let mut b = [0u8; SOLICIT_FRAME_LEN];
        assert_eq!(
            emit_solicit(&mut b, MAC, me, t, None),
            Ok(SOLICIT_FRAME_LEN)
        );
        assert_eq!(&b[..6], &[0x33, 0x33, 0xff, 0, 0, 0x11]);
        assert_eq!(&b[6..14], &[2, 0, 0, 0, 0, 1, 0x86, 0xdd]);
        let ip = ipv6::Packet::new_checked(&b[14..]).unwrap();
        assert_eq!(
            (ip.next_header(), ip.hop_limit(), ip.payload_len()),
            (58, 255, 32)
        );
        assert_eq!((ip.src_addr(), ip.dst_addr()), (me, a("ff02::1:ff00:11")));
        let m = &b[54..];
        assert_eq!(&m[..2], &[135, 0]);
        assert_eq!(&m[4..8], &[0; 4]);
        assert_eq!(&m[8..24], &t.octets());
        assert_eq!(&m[24..32], &[1, 1, 2, 0, 0, 0, 0, 1]);
        assert!(icmpv6_ok(m, &me, &a("ff02::1:ff00:11")));
        // Unicast probe; DAD without the option; short buffer.
        let peer = [2, 0, 0, 0, 0, 0x11];
        emit_solicit(&mut b, MAC, me, t, Some(peer)).unwrap();
        assert_eq!(&b[..6], &peer);
        assert_eq!(ipv6::Packet::new_checked(&b[14..]).unwrap().dst_addr(), t);
        assert!(icmpv6_ok(&b[54..], &me, &t));
        let n = emit_solicit(&mut b, MAC, Ipv6Addr::UNSPECIFIED, t, None).unwrap();
        assert_eq!(n, SOLICIT_FRAME_LEN - 8);
        assert_eq!(
            emit_solicit(&mut b[..SOLICIT_FRAME_LEN - 1], MAC, me, t, None),
            Err(WireError::Truncated)
        );
    }

    /// An advertisement as Linux sends it, built by hand: solicited,
    /// override, target 2001:db8:3::11 at 02:00:00:00:00:11, checksum
    /// computed here word by word.
    fn advert_frame(flags: u8, hop: u8, dst: Ipv6Addr) -> Vec<u8> {
        let src = a("2001:db8:3::11");
        let mut m = vec![136, 0, 0, 0, flags, 0, 0, 0];
        m.extend_from_slice(&src.octets());
        m.extend_from_slice(&[2, 1, 2, 0, 0, 0, 0, 0x11]);
        let ph = checksum::pseudo_header_v6(&src, &dst, 58, m.len() as u32);
        let c = !checksum::fold(checksum::add(ph, checksum::sum(&m)));
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0x11, 0x86, 0xdd];
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 32, 58, hop]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&m);
        f
    }

    #[test]
    fn test_deconstruct_advert() {
        let me = a("2001:db8:3::1");
        let f = advert_frame(0x60, 255, me);
        assert_eq!(
            parse_advert_frame(&f),
            Ok(Advert {
                target: a("2001:db8:3::11"),
                lladdr: Some([2, 0, 0, 0, 0, 0x11]),
                router: false,
                solicited: true,
                override_: true,
            })
        );
        // Round trip through emit_advert.
        let adv = parse_advert_frame(&f).unwrap();
        let mut b = [0u8; 32];
        emit_advert(&mut b, &adv, &a("2001:db8:3::11"), &me).unwrap();
        assert_eq!(&b[..], &f[54..]);
    }

    #[test]
    fn invalid_adverts() {
        let me = a("2001:db8:3::1");
        // Forwarded (hop limit < 255): may be off-link, refused.
        assert_eq!(
            parse_advert_frame(&advert_frame(0x60, 254, me)),
            Err(WireError::Invalid)
        );
        // Solicited flag to a multicast address.
        assert_eq!(
            parse_advert_frame(&advert_frame(0x60, 255, a("ff02::1"))),
            Err(WireError::Invalid)
        );
        assert!(parse_advert_frame(&advert_frame(0x20, 255, a("ff02::1"))).is_ok());
        // Corrupted checksum; zero-length option; truncations never panic.
        let mut f = advert_frame(0x60, 255, me);
        f[60] ^= 1;
        assert_eq!(parse_advert_frame(&f), Err(WireError::Invalid));
        let f = advert_frame(0x60, 255, me);
        let src = a("2001:db8:3::11");
        let mut m = f[54..].to_vec();
        m[25] = 0;
        assert_eq!(parse_advert(&m, &src, &me, 255), Err(WireError::Invalid));
        for n in 0..f.len() {
            let _ = parse_advert_frame(&f[..n]);
        }
        // A solicitation is not an advertisement.
        let mut b = [0u8; SOLICIT_FRAME_LEN];
        emit_solicit(&mut b, MAC, me, src, None).unwrap();
        assert_eq!(parse_advert_frame(&b), Err(WireError::Unsupported));
    }
}
