//! Direct routing (`-g`, ipvsadm's default), IPVS's `ip_vs_dr_xmit`: the
//! packet goes to the real server unchanged at layer 3 — it still carries
//! the virtual address, which the real server holds on a non-ARPing
//! interface — and only its layer-2 destination changes.
//!
//! What the kernel changes, and so what uvs changes:
//! * the TTL / hop limit, decremented by one: the packet is forwarded
//!   through a new output route (`__ip_vs_get_out_rt` → `decrement_ttl`), and
//!   a packet arriving with TTL <= 1 is dropped with ICMP time exceeded
//!   ([`XmitError::TtlExceeded`]);
//! * the IPv4 header checksum (`ip_send_check`), here updated incrementally;
//! * the Ethernet header: the destination MAC becomes the real server's, the
//!   source the egress interface's. The engine does this with
//!   [`crate::xmit::set_macs`] once it has resolved the real server's address
//!   as the (on-link) next hop, as for every other method.
//!
//! Addresses, ports and L4 checksums are untouched, so the checksum mode does
//! not matter: a pending (`CsumMode::Partial`) L4 checksum stays pending.
//! The MTU check is [`crate::xmit::fits`] with the route MTU.
//!
//! Contract: in place, no allocation, no panic; on `Err` the frame is unchanged.

use super::{check_parsed, decrement_ttl, XmitError};
use crate::parse::Parsed;

/// Prepares a request for direct routing: decrements the TTL / hop limit
/// (IPv4 header checksum updated). Any IP protocol is accepted, as in IPVS
/// ("used for ANY protocol"); fragments too.
pub fn dr(frame: &mut [u8], p: &Parsed) -> Result<(), XmitError> {
    check_parsed(frame, p)?;
    decrement_ttl(frame, p.l3_off, p.version).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{FrameSpec, L4Spec};
    use crate::parse::parse;

    #[test]
    fn only_ttl_changes() {
        for spec in [FrameSpec::tcp_v4(), FrameSpec::udp_v6(), {
            let mut s = FrameSpec::tcp_v4();
            s.l4 = L4Spec::Raw(47);
            s.frag = Some((8, true));
            s
        }] {
            let mut f = spec.build();
            let p = parse(&f).unwrap();
            dr(&mut f, &p).unwrap();
            let mut want = spec.clone();
            want.ttl -= 1;
            assert_eq!(f, want.build());
        }
    }

    #[test]
    fn ttl_one_is_refused() {
        let mut spec = FrameSpec::tcp_v4();
        spec.ttl = 1;
        let mut f = spec.build();
        let p = parse(&f).unwrap();
        assert_eq!(dr(&mut f, &p), Err(XmitError::TtlExceeded));
        assert_eq!(f, spec.build());
        assert_eq!(dr(&mut f[..30], &p), Err(XmitError::FrameMismatch));
    }
}
