//! Ethernet II frames with up to two VLAN tags (802.1Q, 802.1ad QinQ).
//!
//! Contract: [`Frame::new_checked`] guarantees the 14-byte header;
//! [`Frame::encap`] walks VLAN tags (bounded by [`MAX_VLAN_TAGS`]) to the
//! inner ethertype and the L3 offset. The frame check sequence is never present
//! (AF_PACKET strips it).

use super::{be16, put16, WireError};

/// Ethertypes uvs knows.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service VLAN tag (QinQ outer).
    pub const QINQ: u16 = 0x88a8;
    /// Pre-standard QinQ outer tag still emitted by some switches.
    pub const QINQ_LEGACY: u16 = 0x9100;

    /// Whether `t` introduces a VLAN tag.
    #[inline]
    pub fn is_vlan(t: u16) -> bool {
        matches!(t, VLAN | QINQ | QINQ_LEGACY)
    }
}

/// Untagged Ethernet header length.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// Deepest tag stack accepted (QinQ). Deeper stacks are refused, which bounds
/// the walk and matches what real switches emit.
pub const MAX_VLAN_TAGS: usize = 2;

/// A 6-byte MAC address.
pub type MacAddr = [u8; 6];

/// The broadcast MAC address.
pub const BROADCAST: MacAddr = [0xff; 6];

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
}

/// What lies under the Ethernet header: inner ethertype, L3 offset, VLAN tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encap {
    /// Ethertype after all VLAN tags.
    pub ethertype: u16,
    /// Offset of the L3 header in the frame.
    pub l3_off: usize,
    /// Number of VLAN tags (0..=[`MAX_VLAN_TAGS`]).
    pub vlan_tags: u8,
    /// TCI of each tag, outermost first; 0 for absent tags.
    pub tci: [u16; MAX_VLAN_TAGS],
}

impl Encap {
    /// VLAN id (low 12 bits of the TCI) of the innermost tag, if tagged.
    pub fn inner_vid(&self) -> Option<u16> {
        match self.vlan_tags {
            0 => None,
            n => Some(self.tci[usize::from(n) - 1] & 0x0fff),
        }
    }
}

/// A view of an Ethernet frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checks; accessors may panic on short buffers.
    pub fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wraps a buffer, checking it holds an Ethernet header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Checks the buffer holds the 14-byte header.
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

    /// Destination MAC.
    pub fn dst_addr(&self) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        m
    }

    /// Source MAC.
    pub fn src_addr(&self) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        m
    }

    /// Outer ethertype (a TPID when the frame is tagged).
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Walks VLAN tags to the inner ethertype and L3 offset.
    pub fn encap(&self) -> Result<Encap, WireError> {
        let b = self.buffer.as_ref();
        let mut e = Encap {
            ethertype: self.ethertype(),
            l3_off: HEADER_LEN,
            vlan_tags: 0,
            tci: [0; MAX_VLAN_TAGS],
        };
        while ethertype::is_vlan(e.ethertype) {
            let n = usize::from(e.vlan_tags);
            if n == MAX_VLAN_TAGS {
                return Err(WireError::TooManyVlanTags);
            }
            // Tag layout after the TPID we just read: TCI (2) then next type (2).
            if b.len() < e.l3_off + VLAN_TAG_LEN {
                return Err(WireError::Truncated);
            }
            e.tci[n] = be16(b, e.l3_off);
            e.ethertype = be16(b, e.l3_off + 2);
            e.l3_off += VLAN_TAG_LEN;
            e.vlan_tags += 1;
        }
        Ok(e)
    }

    /// Bytes after the untagged header (tags included, if any).
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC.
    pub fn set_dst_addr(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&m);
    }

    /// Sets the source MAC.
    pub fn set_src_addr(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&m);
    }

    /// Sets the outer ethertype.
    pub fn set_ethertype(&mut self, t: u16) {
        put16(self.buffer.as_mut(), field::ETHERTYPE, t);
    }

    /// Mutable bytes after the untagged header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..)
            .unwrap_or(&mut [])
    }
}

/// Writes an untagged Ethernet header into `buf[..14]`.
pub fn emit_header(
    buf: &mut [u8],
    src: MacAddr,
    dst: MacAddr,
    ethertype: u16,
) -> Result<(), WireError> {
    let h = buf.get_mut(..HEADER_LEN).ok_or(WireError::Truncated)?;
    h[field::DST].copy_from_slice(&dst);
    h[field::SRC].copy_from_slice(&src);
    put16(h, field::ETHERTYPE, ethertype);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // dst 02:00:00:00:00:02, src 02:00:00:00:00:01, 802.1ad vid 100, 802.1Q vid 7 (pcp 5), IPv4.
    static QINQ: [u8; 22] = [
        0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0xa0,
        0x07, 0x08, 0x00,
    ];

    #[test]
    fn test_deconstruct_untagged() {
        let b = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06, 0xaa,
        ];
        let f = Frame::new_checked(&b[..]).unwrap();
        assert_eq!(f.dst_addr(), BROADCAST);
        assert_eq!(f.src_addr(), [2, 0, 0, 0, 0, 1]);
        let e = f.encap().unwrap();
        assert_eq!(
            (e.ethertype, e.l3_off, e.vlan_tags, e.inner_vid()),
            (ethertype::ARP, 14, 0, None)
        );
        assert_eq!(f.payload(), &[0xaa]);
    }

    #[test]
    fn test_deconstruct_qinq() {
        let f = Frame::new_checked(&QINQ[..]).unwrap();
        let e = f.encap().unwrap();
        assert_eq!(e.ethertype, ethertype::IPV4);
        assert_eq!(e.l3_off, 22);
        assert_eq!(e.vlan_tags, 2);
        assert_eq!(e.tci, [0x0064, 0xa007]);
        assert_eq!(e.inner_vid(), Some(7));
    }

    #[test]
    fn truncated_and_too_deep() {
        assert_eq!(
            Frame::new_checked(&QINQ[..13]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Frame::new_checked(&QINQ[..20])
                .unwrap()
                .encap()
                .unwrap_err(),
            WireError::Truncated
        );
        let mut deep = QINQ.to_vec();
        deep[20..22].copy_from_slice(&[0x81, 0x00]);
        deep.extend_from_slice(&[0x00, 0x01, 0x08, 0x00]);
        assert_eq!(
            Frame::new_checked(&deep[..]).unwrap().encap().unwrap_err(),
            WireError::TooManyVlanTags
        );
    }

    #[test]
    fn test_construct() {
        let mut b = [0u8; 14];
        emit_header(
            &mut b,
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            ethertype::IPV6,
        )
        .unwrap();
        assert_eq!(b, [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd]);
        let mut f = Frame::new_checked(&mut b[..]).unwrap();
        f.set_src_addr([9; 6]);
        f.set_dst_addr([8; 6]);
        f.set_ethertype(ethertype::IPV4);
        assert_eq!(b, [8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 0x08, 0x00]);
        assert_eq!(
            emit_header(&mut [0u8; 13], [0; 6], [0; 6], 0),
            Err(WireError::Truncated)
        );
    }
}
