//! ICMPv6 (RFC 4443): type/code, checksum (with the IPv6 pseudo-header), echo
//! fields and the original packet embedded in error messages.
//!
//! Contract: [`Packet::new_checked`] guarantees the 8-byte header. The buffer
//! should end where the message ends (bounded by the IPv6 payload length).

use std::net::Ipv6Addr;

use super::{be16, be32, ip_proto, put16, WireError};
use crate::checksum;

/// Header length (type, code, checksum, 4 type-specific bytes).
pub const HEADER_LEN: usize = 8;

/// ICMPv6 message types uvs cares about.
pub mod msg_type {
    /// Destination unreachable (code 4: port unreachable).
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big (MTU in bytes 4..8).
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded (code 0: hop limit exceeded in transit).
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Neighbor solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbor advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
}

/// Whether `t` is an error message (types 0..=127) embedding the offending packet.
#[inline]
pub fn is_error(t: u8) -> bool {
    t < 128
}

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const IDENT: usize = 4;
    pub const SEQ: usize = 6;
}

/// A view of an ICMPv6 message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks; accessors may panic on short buffers.
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer, checking the 8-byte header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the header is present.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Echo identifier.
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// Echo sequence number.
    pub fn echo_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SEQ)
    }

    /// MTU of a packet-too-big message.
    pub fn mtu(&self) -> u32 {
        be32(self.buffer.as_ref(), field::IDENT)
    }

    /// Whether this is an error message.
    pub fn is_error(&self) -> bool {
        is_error(self.msg_type())
    }

    /// For error messages, the embedded original packet (as much as fits).
    pub fn embedded(&self) -> Option<&[u8]> {
        if self.is_error() {
            self.buffer.as_ref().get(HEADER_LEN..)
        } else {
            None
        }
    }

    /// Data after the 8-byte header.
    pub fn data(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[])
    }

    /// Whether the checksum (pseudo-header included) is correct.
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v6(src, dst, ip_proto::ICMPV6, b.len() as u32);
        checksum::fold(checksum::add(ph, checksum::sum(b))) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the type.
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    /// Sets the code.
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the echo identifier.
    pub fn set_echo_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets the echo sequence number.
    pub fn set_echo_seq(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SEQ, v);
    }

    /// Sets the 4 type-specific bytes.
    pub fn set_rest(&mut self, v: u32) {
        self.buffer.as_mut()[field::IDENT..field::IDENT + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// Mutable data after the header.
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..)
            .unwrap_or(&mut [])
    }

    /// Recomputes the checksum (pseudo-header included).
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v6(src, dst, ip_proto::ICMPV6, b.len() as u32);
        let c = !checksum::fold(checksum::add(ph, checksum::sum(b)));
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (Ipv6Addr, Ipv6Addr) {
        (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        )
    }

    // Echo request id 1 seq 2, no data, 2001:db8::1 -> 2001:db8::2. Checksum by hand:
    // pseudo: 2001+0db8+0001 + 2001+0db8+0002 + 0008 (len) + 003a (proto) = 0x5bb7
    // message: 8000 + 0001 + 0002 = 0x8003; total 0xdbba -> ~ = 0x2445.
    static ECHO: [u8; 8] = [128, 0, 0x24, 0x45, 0, 1, 0, 2];

    #[test]
    fn test_deconstruct() {
        let (s, d) = addrs();
        let p = Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!(
            (p.msg_type(), p.code(), p.echo_ident(), p.echo_seq()),
            (128, 0, 1, 2)
        );
        assert!(p.verify_checksum(&s, &d));
        assert!(!p.verify_checksum(&d, &"2001:db8::3".parse().unwrap()));
        assert!(!p.is_error());
        assert_eq!(p.embedded(), None);
    }

    #[test]
    fn error_embeds_original() {
        let b = [1, 4, 0, 0, 0, 0, 0, 0, 0x60, 0, 0, 0];
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.is_error());
        assert_eq!(p.embedded(), Some(&[0x60, 0, 0, 0][..]));
        let big = [2, 0, 0, 0, 0, 0, 0x05, 0x00];
        assert_eq!(Packet::new_checked(&big[..]).unwrap().mtu(), 1280);
        assert_eq!(
            Packet::new_checked(&big[..4]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn test_construct() {
        let (s, d) = addrs();
        let mut b = [0u8; 8];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_msg_type(128);
        p.set_code(0);
        p.set_echo_ident(1);
        p.set_echo_seq(2);
        p.fill_checksum(&s, &d);
        assert_eq!(b, ECHO);
    }
}
