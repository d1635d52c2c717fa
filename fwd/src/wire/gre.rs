//! GRE header (RFC 2784, key and sequence number from RFC 2890), as IPVS
//! emits it for `--tun-type gre` and as a Linux `ip_gre` endpoint accepts it.
//!
//! IPVS (`ipvs_gre_encap`) writes version 0, protocol type = the inner
//! ethertype (0x0800 or 0x86dd), and the checksum field only with
//! `--tun-csum` (C bit; the checksum covers the GRE header and payload, the
//! 16-bit reserved word after it is 0). It never sets key or sequence.
//!
//! Contract: [`parse`] accepts version 0 without the routing bit (as Linux
//! does), with optional checksum, key and sequence fields, and reports the
//! header length; it never panics. [`emit`] writes what IPVS writes.

use super::{be16, be32, put16, WireError};

/// Checksum present (C).
pub const FLAG_CSUM: u16 = 0x8000;
/// Routing present (R, RFC 1701; refused).
pub const FLAG_ROUTING: u16 = 0x4000;
/// Key present (K).
pub const FLAG_KEY: u16 = 0x2000;
/// Sequence number present (S).
pub const FLAG_SEQ: u16 = 0x1000;
/// Version bits (0 for GRE; 1 is PPTP's enhanced GRE).
pub const VERSION_MASK: u16 = 0x0007;
/// Length of the base header (flags/version + protocol type).
pub const BASE_LEN: usize = 4;
/// Offset of the checksum field when C is set.
pub const CHECKSUM_OFFSET: usize = 4;

/// A parsed GRE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Flags and version word.
    pub flags: u16,
    /// Protocol type (an ethertype).
    pub protocol: u16,
    /// Checksum field, when present.
    pub checksum: Option<u16>,
    /// Key, when present.
    pub key: Option<u32>,
    /// Sequence number, when present.
    pub seq: Option<u32>,
    /// Header length in bytes (4 to 16).
    pub len: usize,
}

/// Header length for these flags (4 bytes per optional field present).
pub fn header_len(flags: u16) -> usize {
    BASE_LEN
        + 4 * (usize::from(flags & FLAG_CSUM != 0)
            + usize::from(flags & FLAG_KEY != 0)
            + usize::from(flags & FLAG_SEQ != 0))
}

/// Parses the GRE header at the start of `b`. Errors: `Truncated`,
/// `Unsupported` (version other than 0, or the routing bit).
pub fn parse(b: &[u8]) -> Result<Header, WireError> {
    if b.len() < BASE_LEN {
        return Err(WireError::Truncated);
    }
    let flags = be16(b, 0);
    if flags & (VERSION_MASK | FLAG_ROUTING) != 0 {
        return Err(WireError::Unsupported);
    }
    let len = header_len(flags);
    if b.len() < len {
        return Err(WireError::Truncated);
    }
    let mut at = BASE_LEN;
    let mut next = |present: bool| {
        present.then(|| {
            let v = be32(b, at);
            at += 4;
            v
        })
    };
    let checksum = next(flags & FLAG_CSUM != 0).map(|w| (w >> 16) as u16);
    let key = next(flags & FLAG_KEY != 0);
    let seq = next(flags & FLAG_SEQ != 0);
    Ok(Header {
        flags,
        protocol: be16(b, 2),
        checksum,
        key,
        seq,
        len,
    })
}

/// Writes the header IPVS writes: version 0, `protocol`, and a zeroed
/// checksum + reserved word when `csum` (the caller fills the checksum).
/// Returns the length written (4 or 8). Error: `Truncated`.
pub fn emit(buf: &mut [u8], protocol: u16, csum: bool) -> Result<usize, WireError> {
    let flags = if csum { FLAG_CSUM } else { 0 };
    let len = header_len(flags);
    let h = buf.get_mut(..len).ok_or(WireError::Truncated)?;
    put16(h, 0, flags);
    put16(h, 2, protocol);
    if csum {
        h[4..8].fill(0);
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_construct_and_parse() {
        let mut b = [0xaau8; 8];
        assert_eq!(emit(&mut b, 0x0800, false), Ok(4));
        assert_eq!(&b[..4], &[0, 0, 0x08, 0x00]);
        assert_eq!(emit(&mut b, 0x86dd, true), Ok(8));
        assert_eq!(b, [0x80, 0, 0x86, 0xdd, 0, 0, 0, 0]);
        let h = parse(&b).unwrap();
        assert_eq!((h.protocol, h.checksum, h.len), (0x86dd, Some(0), 8));
        assert_eq!(emit(&mut b[..7], 0x0800, true), Err(WireError::Truncated));
    }

    #[test]
    fn key_and_seq() {
        // C, K, S: checksum 0x1234, key 7, seq 9.
        let b = [
            0xb0, 0, 0x08, 0, 0x12, 0x34, 0, 0, 0, 0, 0, 7, 0, 0, 0, 9, 0x45,
        ];
        let h = parse(&b).unwrap();
        assert_eq!(
            (h.checksum, h.key, h.seq, h.len),
            (Some(0x1234), Some(7), Some(9), 16)
        );
        assert_eq!(parse(&b[..15]), Err(WireError::Truncated));
        assert_eq!(parse(&b[..3]), Err(WireError::Truncated));
    }

    #[test]
    fn version_and_routing_refused() {
        assert_eq!(parse(&[0, 1, 0x88, 0x0b]), Err(WireError::Unsupported));
        assert_eq!(
            parse(&[0x40, 0, 8, 0, 0, 0, 0, 0]),
            Err(WireError::Unsupported)
        );
    }
}
