//! ARP for IPv4 over Ethernet (RFC 826): a view, a `Repr` and frame emission
//! so the engine can resolve next-hop MACs itself.
//!
//! Contract: [`Packet::new_checked`] accepts only Ethernet/IPv4 ARP
//! (htype 1, ptype 0x0800, hlen 6, plen 4) with the 28-byte body present;
//! anything else is `WireError::Unsupported` or `Truncated`.

use std::net::Ipv4Addr;

use super::ethernet::{self, ethertype, MacAddr};
use super::{be16, put16, WireError};

/// ARP body length for Ethernet/IPv4.
pub const PACKET_LEN: usize = 28;
/// Untagged Ethernet frame length of an ARP message (without padding).
pub const FRAME_LEN: usize = ethernet::HEADER_LEN + PACKET_LEN;

mod field {
    use core::ops::Range;
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Who has `target_ip`? Tell `sender_ip`.
    Request,
    /// `sender_ip` is at `sender_mac`.
    Reply,
    /// Anything else (RARP etc.).
    Unknown(u16),
}

impl From<u16> for Operation {
    fn from(v: u16) -> Self {
        match v {
            1 => Operation::Request,
            2 => Operation::Reply,
            o => Operation::Unknown(o),
        }
    }
}

impl From<Operation> for u16 {
    fn from(o: Operation) -> u16 {
        match o {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(v) => v,
        }
    }
}

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks; accessors may panic on short buffers.
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer, checking length and Ethernet/IPv4 types.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the body is present and describes Ethernet/IPv4.
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if be16(b, field::HTYPE) != 1
            || be16(b, field::PTYPE) != ethertype::IPV4
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(WireError::Unsupported);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Operation.
    pub fn operation(&self) -> Operation {
        be16(self.buffer.as_ref(), field::OPER).into()
    }

    /// Sender hardware address.
    pub fn sender_mac(&self) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::SHA]);
        m
    }

    /// Sender protocol address.
    pub fn sender_ip(&self) -> Ipv4Addr {
        ip_at(self.buffer.as_ref(), field::SPA.start)
    }

    /// Target hardware address.
    pub fn target_mac(&self) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::THA]);
        m
    }

    /// Target protocol address.
    pub fn target_ip(&self) -> Ipv4Addr {
        ip_at(self.buffer.as_ref(), field::TPA.start)
    }
}

fn ip_at(b: &[u8], o: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3])
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes the fixed Ethernet/IPv4 type fields.
    pub fn set_ethernet_ipv4(&mut self) {
        let b = self.buffer.as_mut();
        put16(b, field::HTYPE, 1);
        put16(b, field::PTYPE, ethertype::IPV4);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }

    /// Sets the operation.
    pub fn set_operation(&mut self, o: Operation) {
        put16(self.buffer.as_mut(), field::OPER, o.into());
    }

    /// Sets the sender hardware address.
    pub fn set_sender_mac(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&m);
    }

    /// Sets the sender protocol address.
    pub fn set_sender_ip(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&a.octets());
    }

    /// Sets the target hardware address.
    pub fn set_target_mac(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&m);
    }

    /// Sets the target protocol address.
    pub fn set_target_ip(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&a.octets());
    }
}

/// A decoded Ethernet/IPv4 ARP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Operation.
    pub operation: Operation,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (zero in requests).
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl Repr {
    /// Decodes a checked view.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            operation: p.operation(),
            sender_mac: p.sender_mac(),
            sender_ip: p.sender_ip(),
            target_mac: p.target_mac(),
            target_ip: p.target_ip(),
        }
    }

    /// A request asking who has `target_ip`.
    pub fn request(my_mac: MacAddr, my_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Repr {
        Repr {
            operation: Operation::Request,
            sender_mac: my_mac,
            sender_ip: my_ip,
            target_mac: [0; 6],
            target_ip,
        }
    }

    /// The reply to this request, announcing `my_mac` for its target address.
    pub fn reply(&self, my_mac: MacAddr) -> Repr {
        Repr {
            operation: Operation::Reply,
            sender_mac: my_mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }

    /// Writes the 28-byte body into `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let body = buf.get_mut(..PACKET_LEN).ok_or(WireError::Truncated)?;
        let mut p = Packet::new_unchecked(body);
        p.set_ethernet_ipv4();
        p.set_operation(self.operation);
        p.set_sender_mac(self.sender_mac);
        p.set_sender_ip(self.sender_ip);
        p.set_target_mac(self.target_mac);
        p.set_target_ip(self.target_ip);
        Ok(())
    }

    /// Writes an untagged Ethernet frame carrying this message into `buf` and
    /// returns its length ([`FRAME_LEN`]). Requests go to broadcast, replies to
    /// the target MAC; the Ethernet source is the sender MAC.
    pub fn emit_frame(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        if buf.len() < FRAME_LEN {
            return Err(WireError::Truncated);
        }
        let dst = match self.operation {
            Operation::Request => ethernet::BROADCAST,
            _ => self.target_mac,
        };
        ethernet::emit_header(buf, self.sender_mac, dst, ethertype::ARP)?;
        self.emit(&mut buf[ethernet::HEADER_LEN..])?;
        Ok(FRAME_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Who has 192.0.2.1? Tell 192.0.2.2 (02:00:00:00:00:02), broadcast.
    static REQ_FRAME: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 2, 0x08, 0x06, // ethernet
        0, 1, 0x08, 0, 6, 4, 0, 1, // htype, ptype, hlen, plen, request
        2, 0, 0, 0, 0, 2, 192, 0, 2, 2, // sender
        0, 0, 0, 0, 0, 0, 192, 0, 2, 1, // target
    ];

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&REQ_FRAME[14..]).unwrap();
        let r = Repr::parse(&p);
        assert_eq!(r.operation, Operation::Request);
        assert_eq!(r.sender_mac, [2, 0, 0, 0, 0, 2]);
        assert_eq!(r.sender_ip, Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(r.target_mac, [0; 6]);
        assert_eq!(r.target_ip, Ipv4Addr::new(192, 0, 2, 1));
    }

    #[test]
    fn test_construct() {
        let r = Repr::request(
            [2, 0, 0, 0, 0, 2],
            Ipv4Addr::new(192, 0, 2, 2),
            Ipv4Addr::new(192, 0, 2, 1),
        );
        let mut buf = [0u8; 60];
        assert_eq!(r.emit_frame(&mut buf), Ok(42));
        assert_eq!(&buf[..42], &REQ_FRAME[..]);
        assert_eq!(r.emit_frame(&mut [0u8; 41]), Err(WireError::Truncated));
    }

    #[test]
    fn reply_round_trip() {
        let req = Repr::parse(&Packet::new_checked(&REQ_FRAME[14..]).unwrap());
        let rep = req.reply([2, 0, 0, 0, 0, 1]);
        let mut buf = [0u8; 42];
        rep.emit_frame(&mut buf).unwrap();
        assert_eq!(&buf[..6], &[2, 0, 0, 0, 0, 2]); // unicast back to the asker
        let back = Repr::parse(&Packet::new_checked(&buf[14..]).unwrap());
        assert_eq!(back, rep);
        assert_eq!(back.operation, Operation::Reply);
        assert_eq!(back.sender_ip, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(back.target_mac, [2, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn refuses_other_formats() {
        let mut b = REQ_FRAME;
        b[14 + 5] = 16; // plen 16
        assert_eq!(
            Packet::new_checked(&b[14..]).unwrap_err(),
            WireError::Unsupported
        );
        assert_eq!(
            Packet::new_checked(&REQ_FRAME[14..41]).unwrap_err(),
            WireError::Truncated
        );
    }
}
