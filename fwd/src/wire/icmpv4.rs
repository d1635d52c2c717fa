//! ICMP for IPv4 (RFC 792): type/code, checksum, echo fields and the original
//! datagram embedded in error messages.
//!
//! Contract: [`Packet::new_checked`] guarantees the 8-byte header. The buffer
//! should end where the ICMP message ends (bounded by the IP length).

use super::{be16, put16, WireError};
use crate::checksum;

/// Header length (type, code, checksum, 4 type-specific bytes).
pub const HEADER_LEN: usize = 8;

/// ICMP message types uvs cares about.
pub mod msg_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (codes in [`super::unreach`]).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Source quench (deprecated, still an error message).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded (code 0: TTL exceeded in transit, 1: reassembly).
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 12;
}

/// Destination-unreachable codes.
pub mod unreach {
    /// Network unreachable.
    pub const NET: u8 = 0;
    /// Host unreachable.
    pub const HOST: u8 = 1;
    /// Protocol unreachable.
    pub const PROTO: u8 = 2;
    /// Port unreachable (what IPVS sends when no server is available).
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set (next-hop MTU in bytes 6..8).
    pub const FRAG_NEEDED: u8 = 4;
}

/// Whether `t` is an error message that embeds the offending datagram.
#[inline]
pub fn is_error(t: u8) -> bool {
    use msg_type::*;
    matches!(
        t,
        DEST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAM_PROBLEM
    )
}

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const IDENT: usize = 4;
    pub const SEQ: usize = 6;
}

/// A view of an ICMPv4 message.
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

    /// Echo identifier (meaningful for echo messages).
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// Echo sequence number (meaningful for echo messages).
    pub fn echo_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SEQ)
    }

    /// Next-hop MTU of a "fragmentation needed" message (RFC 1191).
    pub fn next_hop_mtu(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SEQ)
    }

    /// Whether this is an error message.
    pub fn is_error(&self) -> bool {
        is_error(self.msg_type())
    }

    /// For error messages, the embedded original datagram (its IP header and at
    /// least 8 bytes of its payload, as far as the sender included them).
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

    /// Whether the checksum over the whole message is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref())) == 0xffff
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

    /// Sets the 4 type-specific bytes (e.g. zero, or unused + MTU).
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

    /// Recomputes the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Echo request id 0x0100 seq 1, data "abcd". Checksum by hand:
    // 0800 + 0000 + 0100 + 0001 + 6162 + 6364 = 0xcdc7 -> ~ = 0x3238.
    static ECHO: [u8; 12] = [
        8, 0, 0x32, 0x38, 0x01, 0x00, 0x00, 0x01, b'a', b'b', b'c', b'd',
    ];

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!((p.msg_type(), p.code()), (msg_type::ECHO_REQUEST, 0));
        assert_eq!((p.echo_ident(), p.echo_seq()), (0x0100, 1));
        assert!(p.verify_checksum());
        assert!(!p.is_error());
        assert_eq!(p.embedded(), None);
        assert_eq!(p.data(), b"abcd");
    }

    #[test]
    fn error_embeds_original() {
        // Port unreachable carrying the first 4 bytes of an "original datagram".
        let b = [3, 3, 0, 0, 0, 0, 0, 0, 0x45, 0, 0, 28];
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.is_error());
        assert_eq!(p.embedded(), Some(&[0x45, 0, 0, 28][..]));
        assert_eq!(
            Packet::new_checked(&b[..7]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn test_construct() {
        let mut b = [0u8; 12];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_msg_type(8);
        p.set_code(0);
        p.set_echo_ident(0x0100);
        p.set_echo_seq(1);
        p.data_mut().copy_from_slice(b"abcd");
        p.fill_checksum();
        assert_eq!(b, ECHO);
    }
}
