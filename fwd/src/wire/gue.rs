//! Generic UDP Encapsulation (draft-ietf-intarea-gue) as Linux implements it
//! (`include/net/gue.h`, `net/ipv4/fou*.c`) and IPVS emits it for
//! `--tun-type gue` (`ipvs_gue_encap`).
//!
//! Variant 0 header (4 bytes, then `hlen` × 4 bytes of options):
//! byte 0 = version (2 bits, 0) | C control bit | hlen (5 bits); byte 1 =
//! protocol of the payload (4 ipip, 41 IPv6) or control type; bytes 2..4 =
//! flags. Linux knows one flag, [`FLAG_PRIV`]: a 4-byte private-flags word
//! follows, whose only known bit is [`PFLAG_REMCSUM`] (remote checksum
//! offload): then 4 more bytes, checksum start and checksum offset (16 bits
//! each, relative to the start of the encapsulated packet). The receiver
//! computes the inner L4 checksum over `[start, end)` and writes it at
//! `offset`, so the sender may leave it pending.
//!
//! Variant 1 (the first two bits 01) carries an IPv4 or IPv6 packet directly
//! after the UDP header, without a GUE header; Linux's receiver accepts it.
//!
//! Contract: [`parse`] refuses unknown flags and private flags, as Linux's
//! `validate_gue_flags` does, and never panics; [`emit`] writes what IPVS
//! writes (no flags, or the private flags with remote checksum offload).

use super::{be16, be32, ip_proto, put16, put32, WireError};

/// Base header length.
pub const BASE_LEN: usize = 4;
/// Private flags are present in the options.
pub const FLAG_PRIV: u16 = 0x0001;
/// Length of the private flags word.
pub const LEN_PRIV: usize = 4;
/// Remote checksum offload (private flag).
pub const PFLAG_REMCSUM: u32 = 0x8000_0000;
/// Length of the remote checksum offload option.
pub const LEN_REMCSUM: usize = 4;

/// A parsed GUE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// Variant 0 data or control message.
    V0 {
        /// C bit: a control message (`proto_ctype` is the control type).
        control: bool,
        /// IP protocol of the payload, or control type.
        proto_ctype: u8,
        /// Flags word.
        flags: u16,
        /// Remote checksum offload option: (checksum start, checksum offset).
        remcsum: Option<(u16, u16)>,
        /// Header length including options (payload starts here).
        len: usize,
    },
    /// Variant 1: the UDP payload is an IP packet of this protocol (ipip or
    /// IPv6), starting at offset 0.
    Direct {
        /// `ip_proto::IPIP` or `ip_proto::IPV6`.
        proto: u8,
    },
}

/// Header length IPVS writes: 4, or 12 with remote checksum offload.
pub fn header_len(remcsum: bool) -> usize {
    BASE_LEN + if remcsum { LEN_PRIV + LEN_REMCSUM } else { 0 }
}

/// Parses the GUE header at the start of a UDP payload. Errors: `Truncated`,
/// `Unsupported` (version 2 or 3, unknown flags or private flags, a variant 1
/// payload that is neither IPv4 nor IPv6), `BadHeaderLen` (flags need more
/// option bytes than `hlen` gives).
pub fn parse(b: &[u8]) -> Result<Header, WireError> {
    let first = *b.first().ok_or(WireError::Truncated)?;
    match first >> 6 {
        0 => {}
        1 => {
            return match first >> 4 {
                4 => Ok(Header::Direct {
                    proto: ip_proto::IPIP,
                }),
                6 => Ok(Header::Direct {
                    proto: ip_proto::IPV6,
                }),
                _ => Err(WireError::Unsupported),
            }
        }
        _ => return Err(WireError::Unsupported),
    }
    if b.len() < BASE_LEN {
        return Err(WireError::Truncated);
    }
    let optlen = usize::from(first & 0x1f) * 4;
    let len = BASE_LEN + optlen;
    if b.len() < len {
        return Err(WireError::Truncated);
    }
    let flags = be16(b, 2);
    if flags & !FLAG_PRIV != 0 {
        return Err(WireError::Unsupported);
    }
    let mut remcsum = None;
    if flags & FLAG_PRIV != 0 {
        if optlen < LEN_PRIV {
            return Err(WireError::BadHeaderLen);
        }
        let pflags = be32(b, BASE_LEN);
        if pflags & !PFLAG_REMCSUM != 0 {
            return Err(WireError::Unsupported);
        }
        if pflags & PFLAG_REMCSUM != 0 {
            if optlen < LEN_PRIV + LEN_REMCSUM {
                return Err(WireError::BadHeaderLen);
            }
            let at = BASE_LEN + LEN_PRIV;
            remcsum = Some((be16(b, at), be16(b, at + 2)));
        }
    }
    Ok(Header::V0 {
        control: first & 0x20 != 0,
        proto_ctype: b[1],
        flags,
        remcsum,
        len,
    })
}

/// Writes a variant 0 data header for payload protocol `proto`, with the
/// remote checksum offload option when `remcsum` is `Some((start, offset))`.
/// Returns the length written. Error: `Truncated`.
pub fn emit(buf: &mut [u8], proto: u8, remcsum: Option<(u16, u16)>) -> Result<usize, WireError> {
    let len = header_len(remcsum.is_some());
    let h = buf.get_mut(..len).ok_or(WireError::Truncated)?;
    h[0] = ((len - BASE_LEN) / 4) as u8;
    h[1] = proto;
    match remcsum {
        None => put16(h, 2, 0),
        Some((start, offset)) => {
            put16(h, 2, FLAG_PRIV);
            put32(h, BASE_LEN, PFLAG_REMCSUM);
            put16(h, BASE_LEN + LEN_PRIV, start);
            put16(h, BASE_LEN + LEN_PRIV + 2, offset);
        }
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A header Linux emitted with remote checksum offload for an inner IPv4
    // UDP packet (checksum start 20, field at 26), as published in a
    // Wireshark GUE dissector's notes: 02 04 00 01 | 80 00 00 00 | 00 14 00 1a.
    static REMCSUM: [u8; 12] = [2, 4, 0, 1, 0x80, 0, 0, 0, 0, 0x14, 0, 0x1a];

    #[test]
    fn test_deconstruct_remcsum() {
        assert_eq!(
            parse(&REMCSUM),
            Ok(Header::V0 {
                control: false,
                proto_ctype: 4,
                flags: FLAG_PRIV,
                remcsum: Some((20, 26)),
                len: 12
            })
        );
    }

    #[test]
    fn test_construct() {
        let mut b = [0xffu8; 12];
        assert_eq!(emit(&mut b, 4, Some((20, 26))), Ok(12));
        assert_eq!(b, REMCSUM);
        assert_eq!(emit(&mut b, 41, None), Ok(4));
        assert_eq!(&b[..4], &[0, 41, 0, 0]);
        assert_eq!(
            emit(&mut b[..11], 4, Some((0, 0))),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn variants_and_errors() {
        assert_eq!(
            parse(&[0x45, 0]),
            Ok(Header::Direct {
                proto: ip_proto::IPIP
            })
        );
        assert_eq!(
            parse(&[0x60]),
            Ok(Header::Direct {
                proto: ip_proto::IPV6
            })
        );
        assert_eq!(parse(&[0x50]), Err(WireError::Unsupported));
        assert_eq!(parse(&[0x80, 0, 0, 0]), Err(WireError::Unsupported));
        assert_eq!(parse(&[]), Err(WireError::Truncated));
        assert_eq!(parse(&[0, 4, 0]), Err(WireError::Truncated));
        // Unknown flag; private flags without room; unknown private flag.
        assert_eq!(parse(&[0, 4, 0x80, 0]), Err(WireError::Unsupported));
        assert_eq!(parse(&[0, 4, 0, 1]), Err(WireError::BadHeaderLen));
        assert_eq!(
            parse(&[1, 4, 0, 1, 0x40, 0, 0, 0]),
            Err(WireError::Unsupported)
        );
        assert_eq!(
            parse(&[1, 4, 0, 1, 0x80, 0, 0, 0]),
            Err(WireError::BadHeaderLen)
        );
        // hlen beyond the buffer.
        assert_eq!(parse(&[3, 4, 0, 0, 0, 0]), Err(WireError::Truncated));
        // Control message; surplus option space is allowed.
        assert!(matches!(
            parse(&[0x21, 7, 0, 0, 0, 0, 0, 0]),
            Ok(Header::V0 {
                control: true,
                proto_ctype: 7,
                len: 8,
                ..
            })
        ));
    }
}
