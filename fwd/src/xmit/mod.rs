//! Forwarding methods (IPVS's `ip_vs_xmit.c`): how a packet is rewritten
//! before it leaves. One file per method: [`nat`] (masquerading) now; `dr.rs`
//! (direct routing: MAC rewrite only) and `tun.rs` (ipip/gue/gre
//! encapsulation) follow in issue 5.
//!
//! Contract: every function works in place on a frame the caller parsed with
//! [`crate::parse::parse`], never allocates, never panics (a `Parsed` that
//! does not fit the frame is `XmitError::FrameMismatch`), and leaves the frame
//! untouched when it returns an error.

pub mod nat;

use crate::wire::ethernet::MacAddr;

/// Why a rewrite was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum XmitError {
    /// TTL / hop limit would reach 0. Drop the packet; the kernel's IPVS
    /// (`decrement_ttl` in `ip_vs_xmit.c`) answers with ICMP Time Exceeded,
    /// TTL exceeded in transit (type 11, code 0) for IPv4, or ICMPv6 Time
    /// Exceeded, hop limit exceeded in transit (type 3, code 0) for IPv6.
    #[error("TTL exceeded in transit")]
    TtlExceeded,
    /// New address family differs from the packet's.
    #[error("address family mismatch")]
    FamilyMismatch,
    /// No rewrite defined for this protocol (only TCP, UDP, SCTP, ICMP, ICMPv6).
    #[error("unsupported protocol {0}")]
    UnsupportedProtocol(u8),
    /// The frame is shorter than the `Parsed` describing it (or not a frame).
    #[error("frame does not match its parse result")]
    FrameMismatch,
    /// A whole-packet checksum was asked of a fragment.
    #[error("packet is a fragment")]
    Fragment,
    /// IPv6 UDP with checksum 0 in `CsumMode::Full`: invalid (RFC 8200 §8.1),
    /// and an incremental update of a missing checksum would be garbage.
    #[error("IPv6 UDP with zero checksum")]
    ZeroUdpChecksumV6,
    /// IPv6 routing header with segments left: the pseudo-header destination
    /// is the final segment, not the header's, so the update would be wrong.
    #[error("IPv6 routing header with segments left")]
    Ipv6RoutingHeader,
}

/// Rewrites the Ethernet source and destination MACs (VLAN tags untouched).
pub fn set_macs(frame: &mut [u8], src: MacAddr, dst: MacAddr) -> Result<(), XmitError> {
    let h = frame.get_mut(..12).ok_or(XmitError::FrameMismatch)?;
    h[..6].copy_from_slice(&dst);
    h[6..12].copy_from_slice(&src);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_macs_writes_dst_then_src() {
        let mut f = [0u8; 16];
        set_macs(&mut f, [1; 6], [2; 6]).unwrap();
        assert_eq!(&f[..12], &[2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1]);
        assert_eq!(&f[12..], &[0; 4]);
        assert_eq!(
            set_macs(&mut [0u8; 11], [1; 6], [2; 6]),
            Err(XmitError::FrameMismatch)
        );
    }
}
