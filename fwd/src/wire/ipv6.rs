//! IPv6 fixed header (RFC 8200) and a bounded walk of extension headers.
//!
//! Contract: [`Packet::new_checked`] guarantees version 6 and
//! 40 + payload_len <= buffer length (jumbograms are not supported: a
//! payload length of 0 means an empty payload). [`Packet::upper_layer`] walks
//! hop-by-hop, routing, fragment, destination-options and AH headers, at most
//! [`MAX_EXT_HEADERS`] of them, every one bounds-checked against the payload,
//! and stops at the first other header (the upper-layer protocol) or at a
//! non-first fragment (whose upper header is absent).

use std::net::Ipv6Addr;

use super::{be16, be32, ip_proto, put16, WireError};

/// Fixed header length.
pub const HEADER_LEN: usize = 40;
/// Most extension headers walked before the packet is refused; real traffic
/// carries one or two, an attacker could chain hundreds.
pub const MAX_EXT_HEADERS: usize = 8;

mod field {
    pub const VER_TC_FL: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

/// Fragment header contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragInfo {
    /// Offset of this fragment's data in bytes.
    pub offset: usize,
    /// M flag (more fragments follow).
    pub more: bool,
    /// Identification.
    pub ident: u32,
}

/// Where the upper-layer header starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// Upper-layer protocol (next header after the last extension header).
    pub proto: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// Fragment header, if present.
    pub frag: Option<FragInfo>,
    /// A routing header with segments left > 0 was seen: the final destination
    /// (and so the pseudo-header) is not the header's destination address.
    pub routing_pending: bool,
}

/// A view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks; accessors may panic on short buffers.
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer, checking version and payload length (see module doc).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Validates version and payload length against the buffer.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 6 {
            return Err(WireError::BadVersion);
        }
        if self.total_len() > len {
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
        self.buffer.as_ref()[field::VER_TC_FL] >> 4
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        let b = self.buffer.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FL) & 0x000f_ffff
    }

    /// Payload length field.
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// Header plus payload length.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// Next header after the fixed header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC..field::SRC + 16]);
        Ipv6Addr::from(a)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST..field::DST + 16]);
        Ipv6Addr::from(a)
    }

    /// Payload (extension headers included), bounded by the payload length.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(HEADER_LEN..self.total_len().min(b.len()))
            .unwrap_or(&[])
    }

    /// Walks the extension headers to the upper-layer protocol (module doc).
    pub fn upper_layer(&self) -> Result<UpperLayer, WireError> {
        let b = self.buffer.as_ref();
        let end = self.total_len().min(b.len());
        let mut up = UpperLayer {
            proto: self.next_header(),
            offset: HEADER_LEN,
            frag: None,
            routing_pending: false,
        };
        for i in 0..=MAX_EXT_HEADERS {
            let len = match up.proto {
                ip_proto::HOPOPTS
                | ip_proto::ROUTING
                | ip_proto::DSTOPTS
                | ip_proto::FRAGMENT
                | ip_proto::AH => {
                    if i == MAX_EXT_HEADERS {
                        return Err(WireError::BadExtHeader);
                    }
                    // RFC 8200 §4.1: hop-by-hop may only follow the fixed header.
                    if up.proto == ip_proto::HOPOPTS && i != 0 {
                        return Err(WireError::BadExtHeader);
                    }
                    // Every extension header starts with next-header and a length byte.
                    if up.offset + 8 > end {
                        return Err(WireError::BadExtHeader);
                    }
                    match up.proto {
                        ip_proto::FRAGMENT => 8,
                        ip_proto::AH => (usize::from(b[up.offset + 1]) + 2) * 4,
                        _ => (usize::from(b[up.offset + 1]) + 1) * 8,
                    }
                }
                _ => return Ok(up),
            };
            if up.offset + len > end {
                return Err(WireError::BadExtHeader);
            }
            let h = &b[up.offset..up.offset + len];
            match up.proto {
                ip_proto::ROUTING if h[3] != 0 => up.routing_pending = true,
                ip_proto::FRAGMENT => {
                    if up.frag.is_some() {
                        return Err(WireError::BadExtHeader);
                    }
                    let w = be16(h, 2);
                    let f = FragInfo {
                        offset: usize::from(w & 0xfff8),
                        more: w & 1 != 0,
                        ident: be32(h, 4),
                    };
                    up.frag = Some(f);
                    if f.offset != 0 {
                        // A later fragment: the rest is opaque data.
                        up.proto = h[0];
                        up.offset += len;
                        return Ok(up);
                    }
                }
                _ => {}
            }
            up.proto = h[0];
            up.offset += len;
        }
        // The loop returns on every path: the last iteration either meets an
        // upper-layer protocol or refuses an extension header.
        Err(WireError::BadExtHeader)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 6, traffic class and flow label.
    pub fn set_version_tc_flow(&mut self, tc: u8, flow: u32) {
        let w = (6u32 << 28) | (u32::from(tc) << 20) | (flow & 0x000f_ffff);
        self.buffer.as_mut()[..4].copy_from_slice(&w.to_be_bytes());
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::PAYLOAD_LEN, v);
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = v;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 16].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 16].copy_from_slice(&a.octets());
    }

    /// Mutable payload, bounded like [`Packet::payload`].
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let tl = self.total_len();
        let b = self.buffer.as_mut();
        let end = tl.min(b.len());
        b.get_mut(HEADER_LEN..end).unwrap_or(&mut [])
    }
}

/// The fields of an IPv6 fixed header, for building one with [`Repr::emit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next header.
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (low 20 bits used).
    pub flow_label: u32,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl Repr {
    /// Writes the 40-byte fixed header into `buf[..40]`. Errors: `Truncated`,
    /// `BadTotalLen` (payload above 65535: jumbograms are not supported).
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let plen = u16::try_from(self.payload_len).map_err(|_| WireError::BadTotalLen)?;
        let h = buf.get_mut(..HEADER_LEN).ok_or(WireError::Truncated)?;
        let mut p = Packet::new_unchecked(h);
        p.set_version_tc_flow(self.traffic_class, self.flow_label);
        p.set_payload_len(plen);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src);
        p.set_dst_addr(self.dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2001:db8::1 -> 2001:db8::2, hop limit 64, tc 0xb8, flow 0x12345,
    /// hop-by-hop (8 bytes: PadN) -> dest opts (16 bytes) -> fragment (offset 0, M)
    /// -> UDP header (8 bytes).
    fn fixture() -> Vec<u8> {
        let mut v = vec![
            0x6b, 0x81, 0x23, 0x45, 0x00, 0x28, 0x00,
            0x40, // ver/tc/flow, plen 40, HBH, hlim 64
        ];
        v.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        v.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]); // HBH -> DSTOPTS, PadN
        v.extend_from_slice(&[44, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // DSTOPTS -> FRAG
        v.extend_from_slice(&[17, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef]); // FRAG -> UDP, off 0, M
        v.extend_from_slice(&[0x04, 0xd2, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00]); // UDP
        v
    }

    #[test]
    fn test_deconstruct() {
        let v = fixture();
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 40);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        let up = p.upper_layer().unwrap();
        assert_eq!(up.proto, 17);
        assert_eq!(up.offset, 40 + 8 + 16 + 8);
        assert_eq!(
            up.frag,
            Some(FragInfo {
                offset: 0,
                more: true,
                ident: 0xdeadbeef
            })
        );
        assert!(!up.routing_pending);
    }

    #[test]
    fn later_fragment_stops_walk() {
        let mut v = fixture();
        v[64 + 2] = 0x05; // offset 0x0500 & 0xfff8 = 1280
        v[64 + 3] = 0x00;
        let up = Packet::new_checked(&v[..]).unwrap().upper_layer().unwrap();
        assert_eq!(
            up.frag,
            Some(FragInfo {
                offset: 1280,
                more: false,
                ident: 0xdeadbeef
            })
        );
        assert_eq!((up.proto, up.offset), (17, 72));
    }

    #[test]
    fn bad_chains() {
        let v = fixture();
        // Chain cut short by the payload length: dest opts would run past the end.
        let mut w = v.clone();
        w[5] = 20;
        assert_eq!(
            Packet::new_checked(&w[..]).unwrap().upper_layer(),
            Err(WireError::BadExtHeader)
        );
        // Hop-by-hop after another extension header.
        let mut w = v.clone();
        w[48] = 0; // dest opts -> HBH
        assert_eq!(
            Packet::new_checked(&w[..]).unwrap().upper_layer(),
            Err(WireError::BadExtHeader)
        );
        // Routing header with segments left.
        let mut w = v.clone();
        w[40] = 43;
        w[48 + 3] = 1;
        let up = Packet::new_checked(&w[..]).unwrap().upper_layer().unwrap();
        assert!(up.routing_pending);
        // A long chain of dest-opts headers is refused.
        let mut w = v[..40].to_vec();
        w[6] = 60;
        for _ in 0..MAX_EXT_HEADERS {
            w.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
        }
        let plen = (w.len() - 40) as u16;
        w[4..6].copy_from_slice(&plen.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&w[..]).unwrap().upper_layer(),
            Err(WireError::BadExtHeader)
        );
    }

    #[test]
    fn checked_errors() {
        let v = fixture();
        assert_eq!(
            Packet::new_checked(&v[..39]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Packet::new_checked(&v[..79]).unwrap_err(),
            WireError::Truncated
        );
        let mut w = v.clone();
        w[0] = 0x45;
        assert_eq!(
            Packet::new_checked(&w[..]).unwrap_err(),
            WireError::BadVersion
        );
    }

    #[test]
    fn repr_emit() {
        let mut b = [0u8; 40];
        let r = Repr {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            next_header: 17,
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0x12345,
            payload_len: 40,
        };
        r.emit(&mut b).unwrap();
        let v = fixture();
        assert_eq!(&b[..6], &v[..6]);
        assert_eq!((b[6], b[7]), (17, 64));
        assert_eq!(&b[8..40], &v[8..40]);
        assert_eq!(r.emit(&mut b[..39]), Err(WireError::Truncated));
        let big = Repr {
            payload_len: 65536,
            ..r
        };
        assert_eq!(big.emit(&mut b), Err(WireError::BadTotalLen));
    }

    #[test]
    fn test_construct() {
        let mut b = [0u8; 40];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_version_tc_flow(0xb8, 0x12345);
        p.set_payload_len(0);
        p.set_next_header(59);
        p.set_hop_limit(1);
        p.set_src_addr("2001:db8::1".parse().unwrap());
        p.set_dst_addr("2001:db8::2".parse().unwrap());
        let v = fixture();
        assert_eq!(&b[..4], &v[..4]);
        assert_eq!(&b[8..40], &v[8..40]);
        let up = Packet::new_checked(&b[..]).unwrap().upper_layer().unwrap();
        assert_eq!((up.proto, up.offset), (59, 40));
    }
}
