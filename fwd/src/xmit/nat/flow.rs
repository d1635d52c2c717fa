//! A NAT rewrite prepared once for a flow, for a flow cache that rewrites
//! many packets of one connection the same way.
//!
//! Every packet of a flow changes the same address and port from the same
//! old values to the same new ones, and its TTL by one, so each checksum
//! moves by the same amount (RFC 1624 eqn. 3: the field's sum gains
//! `~old + new` for every changed word). [`FlowNat::new`] folds those
//! words into one 16-bit delta per checksum, once: the L4 checksum's with
//! the port (complete checksums) and without it (`CsumMode::Partial`, whose
//! field leaves the ports to the completer), and the IPv4 header
//! checksum's with the TTL word (`ttl << 8 | proto` less 0x100, whose
//! `~old + new` is always 0xfeff). [`FlowNat::apply`] then adds one delta
//! per field.
//!
//! Same result as [`super::dnat`] / [`super::snat`] with the same address
//! and port, for every packet (a property test compares them): folding the
//! words once, beforehand, gives what folding each in turn gives (a
//! ones'-complement sum is zero only when every term is). Packets the
//! delta does not describe — another old address or port than the one it
//! was prepared from, a fragment, SCTP, ICMP, UDP without a checksum, TTL
//! at 1, an IPv6 routing header, a `Parsed` that does not fit the frame —
//! take the general rewrite, errors included.

use std::net::IpAddr;

use super::{rewrite, Side, XmitError};
use crate::checksum::{self, CsumMode};
use crate::parse::{IpVersion, Parsed};
use crate::wire::ip_proto;

/// See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowNat {
    side: Side,
    /// The address and port a packet must have on `side` now.
    old: IpAddr,
    old_port: u16,
    /// What they become.
    new: IpAddr,
    port: u16,
    /// Folded `~old + new` of the changed words: the L4 checksum's with
    /// the port, without it, and the IPv4 header checksum's (address and
    /// TTL).
    l4_full: u16,
    l4_partial: u16,
    ip4: u16,
}

impl FlowNat {
    /// The rewrite of `side`'s address and port to `new`, `port` for
    /// packets that have `old`, `old_port` there; `None` when the families
    /// differ.
    pub fn new(side: Side, old: IpAddr, old_port: u16, new: IpAddr, port: u16) -> Option<FlowNat> {
        let bytes = |a: IpAddr| match a {
            IpAddr::V4(a) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&a.octets());
                b
            }
            IpAddr::V6(a) => a.octets(),
        };
        if old.is_ipv4() != new.is_ipv4() {
            return None;
        }
        let old_sum = u64::from(!checksum::fold(checksum::sum(&bytes(old))));
        let new_sum = u64::from(checksum::fold(checksum::sum(&bytes(new))));
        let addr = old_sum + new_sum;
        Some(FlowNat {
            side,
            old,
            old_port,
            new,
            port,
            l4_full: checksum::fold(addr + u64::from(!old_port) + u64::from(port)),
            l4_partial: checksum::fold(addr),
            // The TTL word loses 0x100: ~t + (t - 0x100) = 0xfeff.
            ip4: checksum::fold(addr + 0xfeff),
        })
    }

    /// The address packets get.
    #[inline(always)]
    pub fn addr(&self) -> IpAddr {
        self.new
    }

    /// The port packets get.
    #[inline(always)]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Rewrites `frame` (parsed as `p`) as [`super::dnat`] (side `Dst`) or
    /// [`super::snat`] (`Src`) with the prepared address and port would,
    /// with the same contract: in place, TTL decremented, checksums
    /// updated per `mode`, and on `Err` the frame untouched.
    #[inline(always)]
    pub fn apply(&self, frame: &mut [u8], p: &Parsed, mode: CsumMode) -> Result<(), XmitError> {
        if self.apply_fast(frame, p, mode) {
            return Ok(());
        }
        rewrite(frame, p, self.side, self.new, self.port, mode)
    }

    /// A whole TCP or UDP packet with a checksum, the old address and port
    /// and a TTL above 1; false, with the frame untouched, otherwise.
    /// Fixed-size views of the IP header and of the L4 header up to its
    /// checksum: one bounds check each.
    #[inline(always)]
    fn apply_fast(&self, frame: &mut [u8], p: &Parsed, mode: CsumMode) -> bool {
        let (old, old_port) = match self.side {
            Side::Src => (p.src, p.sport),
            Side::Dst => (p.dst, p.dport),
        };
        let (udp, csum_off) = match p.proto {
            ip_proto::TCP => (false, 16),
            ip_proto::UDP => (true, 6),
            _ => return false,
        };
        if old != self.old
            || old_port != self.old_port
            || !p.has_l4
            || p.is_fragment
            || p.l3_off > p.l4_off
            || p.l4_off + csum_off + 2 > p.payload_off
            || p.payload_off > p.ip_end
            || p.ip_end > frame.len()
        {
            return false;
        }
        let (ip, l4) = frame.split_at_mut(p.l4_off);
        let Some(l4) = l4.get_mut(..csum_off + 2) else {
            return false;
        };
        let full = mode == CsumMode::Full;
        let old_csum = u16::from_be_bytes([l4[csum_off], l4[csum_off + 1]]);
        // UDP without a checksum (IPv4: stays 0; IPv6: refused): the
        // general path.
        if udp && full && old_csum == 0 {
            return false;
        }
        let ip = &mut ip[p.l3_off..];
        let port_at = match self.side {
            Side::Src => 0,
            Side::Dst => 2,
        };
        match (self.new, p.version) {
            (IpAddr::V4(a), IpVersion::V4) => {
                let Some(Ok(h)) = ip.get_mut(..20).map(<&mut [u8; 20]>::try_from) else {
                    return false;
                };
                let ttl = h[8];
                if ttl <= 1 {
                    return false;
                }
                let at = match self.side {
                    Side::Src => 12,
                    Side::Dst => 16,
                };
                h[at..at + 4].copy_from_slice(&a.octets());
                h[8] = ttl - 1;
                let ic = u16::from_be_bytes([h[10], h[11]]);
                let ic = !checksum::fold32(u32::from(!ic) + u32::from(self.ip4));
                [h[10], h[11]] = ic.to_be_bytes();
            }
            (IpAddr::V6(a), IpVersion::V6) => {
                let Some(Ok(h)) = ip.get_mut(..40).map(<&mut [u8; 40]>::try_from) else {
                    return false;
                };
                let ttl = h[7];
                if ttl <= 1 || p.routing_pending {
                    return false;
                }
                let at = match self.side {
                    Side::Src => 8,
                    Side::Dst => 24,
                };
                h[at..at + 16].copy_from_slice(&a.octets());
                h[7] = ttl - 1;
            }
            _ => return false,
        }
        let mut c = if full {
            !checksum::fold32(u32::from(!old_csum) + u32::from(self.l4_full))
        } else {
            checksum::fold32(u32::from(old_csum) + u32::from(self.l4_partial))
        };
        if udp && full && c == 0 {
            c = 0xffff;
        }
        [l4[csum_off], l4[csum_off + 1]] = c.to_be_bytes();
        [l4[port_at], l4[port_at + 1]] = self.port.to_be_bytes();
        true
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::build::{FrameSpec, L4Spec};
    use crate::parse::parse;

    /// The delta path itself takes whole TCP and UDP packets of both
    /// families and both modes (the property test in `tests/nat_props.rs`
    /// compares its bytes with the general rewrite's), and leaves UDP
    /// without a checksum to the general path.
    #[test]
    fn whole_tcp_and_udp_take_the_delta() {
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        let s6: IpAddr = "2001:db8:1::11".parse().unwrap();
        for (spec, new) in [
            (FrameSpec::tcp_v4(), "203.0.113.11".parse().unwrap()),
            (FrameSpec::udp_v4(), "203.0.113.11".parse().unwrap()),
            (
                FrameSpec {
                    src: s6,
                    dst: v6,
                    ..FrameSpec::tcp_v4()
                },
                s6,
            ),
            (
                FrameSpec {
                    src: s6,
                    dst: v6,
                    ..FrameSpec::udp_v4()
                },
                s6,
            ),
        ] {
            for mode in [CsumMode::Full, CsumMode::Partial] {
                let f = FrameSpec {
                    csum: mode,
                    ..spec.clone()
                }
                .build();
                let p = parse(&f).unwrap();
                for side in [Side::Src, Side::Dst] {
                    let (old, port) = match side {
                        Side::Src => (p.src, p.sport),
                        Side::Dst => (p.dst, p.dport),
                    };
                    let nat = FlowNat::new(side, old, port, new, 8080).unwrap();
                    assert!(nat.apply_fast(&mut f.clone(), &p, mode), "{spec:?}");
                }
            }
            let mut f = FrameSpec {
                l4: L4Spec::Udp { zero_csum: true },
                ..spec.clone()
            }
            .build();
            let p = parse(&f).unwrap();
            let nat = FlowNat::new(Side::Dst, p.dst, p.dport, new, 8080).unwrap();
            assert!(!nat.apply_fast(&mut f, &p, CsumMode::Full));
        }
    }
}
