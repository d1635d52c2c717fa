//! IPv4 header (RFC 791), options and fragmentation fields.
//!
//! Contract: [`Packet::new_checked`] guarantees version 4, 5 <= IHL,
//! header_len <= total_len <= buffer length. The payload is bounded by the
//! total length, so Ethernet padding after the packet is never part of it.

use std::net::Ipv4Addr;

use super::{be16, put16, WireError};
use crate::checksum;

/// Minimum (option-less) header length.
pub const HEADER_LEN: usize = 20;

mod field {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// "Don't fragment" flag bit in the flags/offset word.
pub const FLAG_DF: u16 = 0x4000;
/// "More fragments" flag bit in the flags/offset word.
pub const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks; accessors may panic on short buffers.
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer, checking version and length fields (see module doc).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Validates version, IHL and total length against the buffer.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 4 {
            return Err(WireError::BadVersion);
        }
        let hl = self.header_len();
        if hl < HEADER_LEN {
            return Err(WireError::BadHeaderLen);
        }
        let tl = usize::from(self.total_len());
        if tl < hl {
            return Err(WireError::BadTotalLen);
        }
        if tl > len {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version nibble.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// DSCP (6 bits).
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// ECN (2 bits).
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length field.
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// Raw flags + fragment offset word.
    pub fn flags_frag(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLG_OFF)
    }

    /// DF flag.
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }

    /// MF flag.
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        usize::from(self.flags_frag() & OFFSET_MASK) * 8
    }

    /// Whether this packet is a fragment (MF set or non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(
            b[field::SRC],
            b[field::SRC + 1],
            b[field::SRC + 2],
            b[field::SRC + 3],
        )
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(
            b[field::DST],
            b[field::DST + 1],
            b[field::DST + 2],
            b[field::DST + 3],
        )
    }

    /// Options bytes (empty without options); bounded by the buffer.
    pub fn options(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(HEADER_LEN..self.header_len().min(b.len()))
            .unwrap_or(&[])
    }

    /// Whether the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        let b = self.buffer.as_ref();
        match b.get(..self.header_len()) {
            Some(h) => checksum::fold(checksum::sum(h)) == 0xffff,
            None => false,
        }
    }

    /// Payload, bounded by the total length (padding excluded) and the buffer.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = usize::from(self.total_len()).min(b.len());
        b.get(self.header_len()..end).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 4 and the header length in bytes (must be a multiple of 4).
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((len / 4) as u8 & 0x0f);
    }

    /// Sets DSCP and ECN.
    pub fn set_dscp_ecn(&mut self, dscp: u8, ecn: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = (dscp << 2) | (ecn & 3);
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets the raw flags + fragment offset word.
    pub fn set_flags_frag(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::FLG_OFF, v);
    }

    /// Sets the TTL.
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 4].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 4].copy_from_slice(&a.octets());
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let b = self.buffer.as_mut();
        let c = checksum::checksum(b.get(..hl).unwrap_or(&[]));
        put16(b, field::CHECKSUM, c);
    }

    /// Mutable payload, bounded like [`Packet::payload`].
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let tl = usize::from(self.total_len());
        let b = self.buffer.as_mut();
        let end = tl.min(b.len());
        b.get_mut(hl..end).unwrap_or(&mut [])
    }
}

/// The fields of an option-less IPv4 header, for building one with
/// [`Repr::emit`] (headers uvs originates: tunnel outer headers, ICMP errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: u8,
    /// Time to live.
    pub ttl: u8,
    /// The whole DSCP/ECN byte (former TOS).
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Raw flags + fragment offset word (e.g. [`FLAG_DF`]).
    pub flags_frag: u16,
    /// Payload length in bytes (total length minus 20).
    pub payload_len: usize,
}

impl Repr {
    /// Writes the 20-byte header, checksum included, into `buf[..20]`.
    /// Errors: `Truncated` (buffer shorter than 20), `BadTotalLen` (total
    /// length above 65535).
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let total =
            u16::try_from(HEADER_LEN + self.payload_len).map_err(|_| WireError::BadTotalLen)?;
        let h = buf.get_mut(..HEADER_LEN).ok_or(WireError::Truncated)?;
        h[field::VER_IHL] = 0x45;
        h[field::DSCP_ECN] = self.tos;
        put16(h, field::LENGTH, total);
        put16(h, field::IDENT, self.ident);
        put16(h, field::FLG_OFF, self.flags_frag);
        h[field::TTL] = self.ttl;
        h[field::PROTOCOL] = self.protocol;
        put16(h, field::CHECKSUM, 0);
        h[field::SRC..field::SRC + 4].copy_from_slice(&self.src.octets());
        h[field::DST..field::DST + 4].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(h);
        put16(h, field::CHECKSUM, c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 192.0.2.1 -> 192.0.2.2, UDP, ttl 64, id 0x1234, DF, one 4-byte option (NOP x3, EOL),
    // 4 bytes payload, then 2 bytes of Ethernet padding. Checksum computed by hand:
    // words 4600 001c 1234 4000 4011 0000 c000 0201 c000 0202 0101 0100
    // sum = 0x1_5f5a... see assertion below (verified against checksum::checksum).
    static PKT: [u8; 30] = [
        0x46, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 192, 0, 2, 1, 192,
        0, 2, 2, 0x01, 0x01, 0x01, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x00,
    ];

    fn fixture() -> Vec<u8> {
        let mut v = PKT.to_vec();
        let mut p = Packet::new_unchecked(&mut v[..]);
        p.fill_checksum();
        v
    }

    #[test]
    fn test_deconstruct() {
        let v = fixture();
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]); // padding excluded
        assert!(p.verify_checksum());
        // Hand sum of the header words, with the checksum field zero:
        // 4600+001c+1234+4000+4011+0000+c000+0201+c000+0202+0101+0100 = 0x2_5e65
        // fold: 0x5e65 + 2 = 0x5e67; complement 0xa198.
        assert_eq!(p.checksum(), 0xa198);
    }

    #[test]
    fn fragments() {
        let mut v = fixture();
        let mut p = Packet::new_unchecked(&mut v[..]);
        p.set_flags_frag(FLAG_MF | 3);
        assert!(p.more_frags() && p.is_fragment());
        assert_eq!(p.frag_offset(), 24);
        p.set_flags_frag(0);
        assert!(!p.is_fragment());
    }

    #[test]
    fn checked_errors() {
        let v = fixture();
        assert_eq!(
            Packet::new_checked(&v[..19]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Packet::new_checked(&v[..27]).unwrap_err(),
            WireError::Truncated
        );
        let mut w = v.clone();
        w[0] = 0x65;
        assert_eq!(
            Packet::new_checked(&w[..]).unwrap_err(),
            WireError::BadVersion
        );
        w[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&w[..]).unwrap_err(),
            WireError::BadHeaderLen
        );
        w[0] = 0x4f; // 60-byte header > total length 28
        assert_eq!(
            Packet::new_checked(&w[..]).unwrap_err(),
            WireError::BadTotalLen
        );
    }

    #[test]
    fn repr_emit_matches_setters() {
        let mut a = [0u8; 24];
        Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: 6,
            ttl: 64,
            tos: 0,
            ident: 1,
            flags_frag: FLAG_DF,
            payload_len: 4,
        }
        .emit(&mut a)
        .unwrap();
        assert_eq!(
            &a[..20],
            &[0x45, 0, 0, 24, 0, 1, 0x40, 0, 64, 6, 0x26, 0xdd, 10, 0, 0, 1, 10, 0, 0, 2]
        );
        let r = Repr {
            src: Ipv4Addr::LOCALHOST,
            dst: Ipv4Addr::LOCALHOST,
            protocol: 0,
            ttl: 1,
            tos: 0,
            ident: 0,
            flags_frag: 0,
            payload_len: 65516,
        };
        assert_eq!(r.emit(&mut a), Err(WireError::BadTotalLen));
        assert_eq!(r.emit(&mut a[..19]), Err(WireError::BadTotalLen));
        let r = Repr {
            payload_len: 0,
            ..r
        };
        assert_eq!(r.emit(&mut a[..19]), Err(WireError::Truncated));
    }

    #[test]
    fn test_construct() {
        let mut b = [0u8; 24];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_header_len(20);
        p.set_dscp_ecn(0, 0);
        p.set_total_len(24);
        p.set_ident(1);
        p.set_flags_frag(FLAG_DF);
        p.set_ttl(64);
        p.set_protocol(6);
        p.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
        p.fill_checksum();
        p.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        assert!(p.verify_checksum());
        assert_eq!(
            &b[..20],
            &[0x45, 0, 0, 24, 0, 1, 0x40, 0, 64, 6, 0x26, 0xdd, 10, 0, 0, 1, 10, 0, 0, 2]
        );
    }
}
