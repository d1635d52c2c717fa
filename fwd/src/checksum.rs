//! Internet checksum (RFC 1071) and incremental updates (RFC 1624).
//!
//! Contract:
//! * [`sum`] returns an *unfolded* ones'-complement accumulator; accumulators of
//!   disjoint, even-aligned pieces may be added with [`add`] and folded once with
//!   [`fold`]. [`checksum`] is the complemented fold, the value a header field holds.
//! * The `update*` functions implement RFC 1624 eqn. 3 (`HC' = ~(~HC + ~m + m')`)
//!   for a field holding a complete checksum. [`CsumMode`] selects between that
//!   and a field holding a pending (CHECKSUM_PARTIAL) pseudo-header sum.
//! * Nothing here allocates or panics, whatever the input.
//! * [`fill_l4_checksum`] / [`verify_l4_checksum`] recompute from scratch over a
//!   parsed frame (software completion of an offloaded checksum, and tests).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::parse::Parsed;
use crate::wire::ip_proto;
use crate::xmit::XmitError;

/// How the L4 checksum field of a packet is to be read and kept up to date.
///
/// The IPv4 header checksum is always complete (Linux never offloads it), so
/// this policy only concerns TCP/UDP/ICMPv6/SCTP checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CsumMode {
    /// The field holds a complete checksum (packets from a wire).
    #[default]
    Full,
    /// The packet came from a local stack with checksum offload pending
    /// (Linux `CHECKSUM_PARTIAL`, virtio `VIRTIO_NET_HDR_F_NEEDS_CSUM`,
    /// AF_PACKET `TP_STATUS_CSUMNOTREADY`): the field holds the folded,
    /// *non-complemented* pseudo-header sum only. Whoever completes it sums the
    /// L4 header and payload (ports included) later, so a port rewrite must not
    /// touch the field, while an address rewrite must update it as a sum.
    Partial,
}

impl CsumMode {
    /// Updates a checksum field for a 16-bit word of the covered data changing
    /// from `old` to `new`.
    #[inline]
    pub fn adjust16(self, field: u16, old: u16, new: u16) -> u16 {
        self.apply(field, old, new)
    }

    /// Updates a checksum field for a 32-bit (e.g. IPv4 address) change.
    #[inline]
    pub fn adjust32(self, field: u16, old: u32, new: u32) -> u16 {
        self.apply(field, fold(fold_u32(old)), fold(fold_u32(new)))
    }

    /// Updates a checksum field for a 128-bit (IPv6 address) change.
    #[inline]
    pub fn adjust128(self, field: u16, old: &[u8; 16], new: &[u8; 16]) -> u16 {
        self.apply(field, fold(sum(old)), fold(sum(new)))
    }

    /// `old`/`new` are folded sums of the words that change.
    #[inline]
    fn apply(self, field: u16, old: u16, new: u16) -> u16 {
        match self {
            // RFC 1624 eqn. 3: the field is ~S, so S = ~field.
            CsumMode::Full => !fold(u64::from(!field) + u64::from(!old) + u64::from(new)),
            // The field is S itself (not complemented).
            CsumMode::Partial => fold(u64::from(field) + u64::from(!old) + u64::from(new)),
        }
    }
}

#[inline]
fn fold_u32(v: u32) -> u64 {
    u64::from(v >> 16) + u64::from(v & 0xffff)
}

/// Unfolded ones'-complement sum of `data` taken as big-endian 16-bit words
/// (an odd trailing byte is padded with a zero low byte).
///
/// Reads 8 bytes at a time and adds the two 32-bit halves into a `u64`, so no
/// carry handling is needed inside the loop (it cannot overflow below 8 GiB of input).
/// This works because 2^16 ≡ 1 (mod 2^16 − 1): any big-endian grouping of the
/// words gives the same folded result.
#[inline]
pub fn sum(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_be_bytes(w);
        acc += (v >> 32) + (v & 0xffff_ffff);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        let v = u64::from_be_bytes(w);
        acc += (v >> 32) + (v & 0xffff_ffff);
    }
    acc
}

/// Adds two unfolded accumulators (end-around carry, never overflows).
#[inline]
pub fn add(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    s + u64::from(carry)
}

/// Folds an accumulator to 16 bits with end-around carry.
///
/// The result is 0 only when the accumulator is 0; a non-zero sum congruent to
/// zero folds to 0xFFFF (ones'-complement "negative zero"), exactly as an
/// incremental RFC 1624 update yields, so both ways agree bit for bit.
#[inline]
pub fn fold(acc: u64) -> u16 {
    // Four end-around-carry steps bring any u64 to at most 0xffff (2^33,
    // then 0x2fffe, 0x10001, 0xffff), without a data-dependent branch. Each
    // step keeps the value modulo 0xffff and keeps it non-zero, so the
    // result is the one a fold-until-small loop gives.
    let a = (acc >> 32) + (acc & 0xffff_ffff);
    let a = (a >> 16) + (a & 0xffff);
    let a = (a >> 16) + (a & 0xffff);
    let a = (a >> 16) + (a & 0xffff);
    a as u16
}

/// [`fold`] for a 32-bit accumulator (two steps suffice).
#[inline(always)]
pub fn fold32(acc: u32) -> u16 {
    let a = (acc >> 16) + (acc & 0xffff);
    let a = (a >> 16) + (a & 0xffff);
    a as u16
}

/// The internet checksum of `data`: the value a header field holds.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Unfolded sum of the IPv4 pseudo-header (RFC 793/768).
#[inline]
pub fn pseudo_header_v4(src: &Ipv4Addr, dst: &Ipv4Addr, proto: u8, len: u32) -> u64 {
    fold_u32(u32::from(*src)) + fold_u32(u32::from(*dst)) + u64::from(proto) + fold_u32(len)
}

/// Unfolded sum of the IPv6 pseudo-header (RFC 8200 §8.1).
#[inline]
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, proto: u8, len: u32) -> u64 {
    sum(&src.octets()) + sum(&dst.octets()) + u64::from(proto) + fold_u32(len)
}

/// Unfolded pseudo-header sum for either family; `None` on mixed families.
#[inline]
pub fn pseudo_header(src: &IpAddr, dst: &IpAddr, proto: u8, len: u32) -> Option<u64> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(pseudo_header_v4(s, d, proto, len)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(pseudo_header_v6(s, d, proto, len)),
        _ => None,
    }
}

/// RFC 1624 update of a complete checksum for a 16-bit change.
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    CsumMode::Full.adjust16(csum, old, new)
}

/// RFC 1624 update of a complete checksum for a 32-bit change.
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    CsumMode::Full.adjust32(csum, old, new)
}

/// RFC 1624 update of a complete checksum for a 128-bit change.
#[inline]
pub fn update128(csum: u16, old: &[u8; 16], new: &[u8; 16]) -> u16 {
    CsumMode::Full.adjust128(csum, old, new)
}

/// CRC-32C (Castagnoli), the SCTP checksum (RFC 9260 appendix A), by the
/// `crc32c` crate: the CPU's CRC32 instructions (SSE 4.2, ARMv8 CRC) where
/// present, a table-driven fallback elsewhere.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    ::crc32c::crc32c(data)
}

/// Where the L4 checksum of a parsed packet lives and what it covers.
struct L4Sum {
    /// Offset of the checksum field in the frame.
    field: usize,
    /// Pseudo-header sum (0 for ICMPv4, which has none).
    pseudo: u64,
    /// UDP: a computed 0 is sent as 0xFFFF.
    udp: bool,
    sctp: bool,
}

fn l4_sum(frame: &[u8], p: &Parsed) -> Result<L4Sum, XmitError> {
    if p.is_fragment {
        // The checksum covers the whole datagram; one fragment cannot hold it.
        return Err(XmitError::Fragment);
    }
    if !p.has_l4 || p.ip_end > frame.len() || p.l4_off > p.ip_end {
        return Err(XmitError::FrameMismatch);
    }
    if p.routing_pending {
        return Err(XmitError::Ipv6RoutingHeader);
    }
    let len = (p.ip_end - p.l4_off) as u32;
    let pseudo = || pseudo_header(&p.src, &p.dst, p.proto, len).ok_or(XmitError::FamilyMismatch);
    let (off, pseudo, udp, sctp) = match p.proto {
        ip_proto::TCP => (16, pseudo()?, false, false),
        ip_proto::UDP => (6, pseudo()?, true, false),
        ip_proto::ICMPV6 => (2, pseudo()?, false, false),
        ip_proto::ICMP => (2, 0, false, false),
        ip_proto::SCTP => (8, 0, false, true),
        other => return Err(XmitError::UnsupportedProtocol(other)),
    };
    let field = p.l4_off + off;
    let width = if sctp { 4 } else { 2 };
    if field + width > p.ip_end {
        return Err(XmitError::FrameMismatch);
    }
    Ok(L4Sum {
        field,
        pseudo,
        udp,
        sctp,
    })
}

/// Computes the L4 checksum of a parsed, unfragmented packet from scratch and
/// writes it (TCP, UDP, ICMP, ICMPv6 internet checksum; SCTP CRC-32C).
///
/// This is how a pending (`CsumMode::Partial`) checksum is completed in
/// software: the field's previous content is ignored. A UDP result of 0 is
/// written as 0xFFFF (RFC 768). Trailing Ethernet padding (after `p.ip_end`)
/// is not covered.
///
/// Errors: `Fragment` (the checksum spans other fragments), `UnsupportedProtocol`,
/// `FrameMismatch` (frame shorter than `p` describes), `Ipv6RoutingHeader`
/// (pseudo-header destination would be the final segment, not the header's).
pub fn fill_l4_checksum(frame: &mut [u8], p: &Parsed) -> Result<(), XmitError> {
    let s = l4_sum(frame, p)?;
    if s.sctp {
        frame[s.field..s.field + 4].fill(0);
        let crc = crc32c(&frame[p.l4_off..p.ip_end]);
        // CRC-32C is transmitted in little-endian byte order (RFC 9260 app. A).
        frame[s.field..s.field + 4].copy_from_slice(&crc.to_le_bytes());
        return Ok(());
    }
    frame[s.field..s.field + 2].fill(0);
    let mut c = !fold(add(s.pseudo, sum(&frame[p.l4_off..p.ip_end])));
    if s.udp && c == 0 {
        c = 0xffff;
    }
    frame[s.field..s.field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Checks the L4 checksum of a parsed, unfragmented packet (complete checksums
/// only). A UDP-over-IPv4 checksum of 0 ("none") counts as valid.
pub fn verify_l4_checksum(frame: &[u8], p: &Parsed) -> Result<bool, XmitError> {
    let s = l4_sum(frame, p)?;
    let seg = &frame[p.l4_off..p.ip_end];
    if s.sctp {
        let mut stored = [0u8; 4];
        stored.copy_from_slice(&frame[s.field..s.field + 4]);
        // Recompute with the field zeroed, without copying the segment:
        // the part before the field, four zero bytes, the rest.
        let rel = s.field - p.l4_off;
        let crc = ::crc32c::crc32c(&seg[..rel]);
        let crc = ::crc32c::crc32c_append(crc, &[0; 4]);
        let crc = ::crc32c::crc32c_append(crc, &seg[rel + 4..]);
        return Ok(crc == u32::from_le_bytes(stored));
    }
    if s.udp && p.src.is_ipv4() && frame[s.field] == 0 && frame[s.field + 1] == 0 {
        return Ok(true);
    }
    Ok(fold(add(s.pseudo, sum(seg))) == 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive reference: 16-bit words, 32-bit accumulator, RFC 1071 style.
    fn naive(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            acc += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
            acc = (acc & 0xffff) + (acc >> 16);
            i += 2;
        }
        if i < data.len() {
            acc += u32::from(data[i]) << 8;
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example bytes: sum 0xddf2, checksum 0x220d.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d)), 0xddf2);
        assert_eq!(checksum(&d), 0x220d);
    }

    #[test]
    fn matches_naive_for_all_lengths() {
        let data: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(197) ^ 0x5a) as u8)
            .collect();
        for n in 0..data.len() {
            assert_eq!(checksum(&data[..n]), naive(&data[..n]), "len {n}");
        }
        let ff = [0xffu8; 33];
        for n in 0..ff.len() {
            assert_eq!(checksum(&ff[..n]), naive(&ff[..n]), "ff len {n}");
        }
    }

    #[test]
    fn ipv4_header_checksum_known_value() {
        // A widely used example header (Wikipedia "IPv4 header checksum"): 0xb861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn incremental_equals_recompute() {
        let mut d: Vec<u8> = (0..64u32).map(|i| (i * 7 + 3) as u8).collect();
        let c0 = checksum(&d);
        let old = u16::from_be_bytes([d[10], d[11]]);
        d[10] = 0xff;
        d[11] = 0x00;
        assert_eq!(update16(c0, old, 0xff00), checksum(&d));
        let c1 = checksum(&d);
        let old32 = u32::from_be_bytes([d[20], d[21], d[22], d[23]]);
        d[20..24].copy_from_slice(&0xc000_0201u32.to_be_bytes());
        assert_eq!(update32(c1, old32, 0xc000_0201), checksum(&d));
        let c2 = checksum(&d);
        let mut old128 = [0u8; 16];
        old128.copy_from_slice(&d[32..48]);
        let new128 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        d[32..48].copy_from_slice(&new128);
        assert_eq!(update128(c2, &old128, &new128), checksum(&d));
    }

    #[test]
    fn partial_update_tracks_sum() {
        let a = [192, 0, 2, 10, 198, 51, 100, 1];
        let b = [203, 0, 113, 11, 198, 51, 100, 1];
        let field = fold(sum(&a));
        let old = u32::from_be_bytes([192, 0, 2, 10]);
        let new = u32::from_be_bytes([203, 0, 113, 11]);
        assert_eq!(CsumMode::Partial.adjust32(field, old, new), fold(sum(&b)));
    }

    #[test]
    fn crc32c_check_value() {
        // The standard CRC-32C check value for "123456789".
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    /// RFC 9260 appendix A's algorithm, bit by bit: the reference the
    /// crate's hardware path must agree with.
    fn crc32c_bitwise(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn crc32c_matches_the_bitwise_reference_at_every_alignment() {
        // Lengths around the crate's 8-byte words and its block sizes, and
        // starts at every misalignment.
        let data: Vec<u8> = (0..9000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..8 {
            for len in [
                0, 1, 3, 7, 8, 9, 15, 16, 17, 63, 64, 65, 255, 256, 1480, 4097, 8960,
            ] {
                let d = &data[start..start + len];
                assert_eq!(crc32c(d), crc32c_bitwise(d), "start {start} len {len}");
            }
        }
    }
}
