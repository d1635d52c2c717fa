//! Frame builders for tests, benches, fuzzing and tools.
//!
//! Contract: these allocate and are **not** for the per-packet path. They
//! build frames field by field and compute every checksum from scratch (never
//! incrementally), so tests can compare the NAT code's incremental results
//! against them. With `csum = CsumMode::Partial` the L4 checksum field holds
//! the folded pseudo-header sum, as a Linux stack with offload leaves it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::checksum::{self, CsumMode};
use crate::wire::ethernet::{ethertype, MacAddr};
use crate::wire::{ip_proto, tcp};

/// The L4 part of a [`FrameSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L4Spec {
    /// TCP with these flags and options (options length a multiple of 4).
    Tcp {
        /// Flag bits.
        flags: u8,
        /// Raw options.
        options: Vec<u8>,
    },
    /// UDP; `zero_csum` sends checksum 0 ("none", IPv4 only in Full mode).
    Udp {
        /// Send checksum 0.
        zero_csum: bool,
    },
    /// SCTP common header (CRC-32C filled in Full mode) followed by the payload.
    Sctp,
    /// ICMP (IPv4) or ICMPv6 (IPv6), chosen by address family, with 4 zero
    /// type-specific bytes.
    Icmp {
        /// Type.
        msg_type: u8,
        /// Code.
        code: u8,
    },
    /// Any other protocol number: the payload only.
    Raw(u8),
}

/// A frame description; [`FrameSpec::build`] turns it into bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSpec {
    /// Ethernet source.
    pub src_mac: MacAddr,
    /// Ethernet destination.
    pub dst_mac: MacAddr,
    /// VLAN TCIs, outermost first (two tags: outer 802.1ad, inner 802.1Q).
    pub vlans: Vec<u16>,
    /// Source address (family picks IPv4/IPv6).
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (TCP/UDP/SCTP).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TTL / hop limit.
    pub ttl: u8,
    /// IPv4 options (padded with EOL to a multiple of 4, at most 40 bytes).
    pub ip_options: Vec<u8>,
    /// IPv6 extension headers to insert, by type (HOPOPTS, DSTOPTS, ROUTING
    /// with segments left 0); each 8 bytes of padding options.
    pub ext_headers: Vec<u8>,
    /// Fragment (offset in bytes, multiple of 8; more-fragments flag). A
    /// non-zero offset omits the L4 header: the payload is the fragment data.
    pub frag: Option<(usize, bool)>,
    /// L4 part.
    pub l4: L4Spec,
    /// L4 payload.
    pub payload: Vec<u8>,
    /// How the L4 checksum field is filled.
    pub csum: CsumMode,
    /// Zero bytes appended after the IP packet (Ethernet padding).
    pub padding: usize,
}

impl FrameSpec {
    fn base(src: IpAddr, dst: IpAddr, l4: L4Spec) -> FrameSpec {
        FrameSpec {
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            dst_mac: [0x02, 0, 0, 0, 0, 0x02],
            vlans: Vec::new(),
            src,
            dst,
            sport: 40000,
            dport: 80,
            ttl: 64,
            ip_options: Vec::new(),
            ext_headers: Vec::new(),
            frag: None,
            l4,
            payload: b"hello".to_vec(),
            csum: CsumMode::Full,
            padding: 0,
        }
    }

    /// A TCP SYN 198.51.100.1:40000 → 192.0.2.10:80 with payload "hello".
    pub fn tcp_v4() -> FrameSpec {
        Self::base(
            Ipv4Addr::new(198, 51, 100, 1).into(),
            Ipv4Addr::new(192, 0, 2, 10).into(),
            L4Spec::Tcp {
                flags: tcp::flags::SYN,
                options: Vec::new(),
            },
        )
    }

    /// A UDP datagram 198.51.100.1:40000 → 192.0.2.10:80.
    pub fn udp_v4() -> FrameSpec {
        Self::base(
            Ipv4Addr::new(198, 51, 100, 1).into(),
            Ipv4Addr::new(192, 0, 2, 10).into(),
            L4Spec::Udp { zero_csum: false },
        )
    }

    /// A TCP SYN `[2001:db8:100::1]:40000` → `[2001:db8:2::10]:80`.
    pub fn tcp_v6() -> FrameSpec {
        Self::base(
            v6("2001:db8:100::1"),
            v6("2001:db8:2::10"),
            L4Spec::Tcp {
                flags: tcp::flags::SYN,
                options: Vec::new(),
            },
        )
    }

    /// A UDP datagram `[2001:db8:100::1]:40000` → `[2001:db8:2::10]:80`.
    pub fn udp_v6() -> FrameSpec {
        Self::base(
            v6("2001:db8:100::1"),
            v6("2001:db8:2::10"),
            L4Spec::Udp { zero_csum: false },
        )
    }

    fn proto(&self) -> u8 {
        match &self.l4 {
            L4Spec::Tcp { .. } => ip_proto::TCP,
            L4Spec::Udp { .. } => ip_proto::UDP,
            L4Spec::Sctp => ip_proto::SCTP,
            L4Spec::Icmp { .. } if self.src.is_ipv4() => ip_proto::ICMP,
            L4Spec::Icmp { .. } => ip_proto::ICMPV6,
            L4Spec::Raw(p) => *p,
        }
    }

    /// L4 header + payload with the checksum filled per `self.csum`.
    fn l4_bytes(&self) -> Vec<u8> {
        let proto = self.proto();
        let mut b = Vec::new();
        if matches!(self.frag, Some((off, _)) if off != 0) {
            b.extend_from_slice(&self.payload);
            return b;
        }
        // (checksum offset, pseudo-header used, udp zero rule)
        let (csum_off, pseudo, zero) = match &self.l4 {
            L4Spec::Tcp { flags, options } => {
                b.extend_from_slice(&self.sport.to_be_bytes());
                b.extend_from_slice(&self.dport.to_be_bytes());
                b.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // seq
                b.extend_from_slice(&0u32.to_be_bytes()); // ack
                b.push((((20 + options.len()) / 4) as u8) << 4);
                b.push(*flags);
                b.extend_from_slice(&64240u16.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
                b.extend_from_slice(options);
                (Some(16), true, false)
            }
            L4Spec::Udp { zero_csum } => {
                b.extend_from_slice(&self.sport.to_be_bytes());
                b.extend_from_slice(&self.dport.to_be_bytes());
                b.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                (if *zero_csum { None } else { Some(6) }, true, false)
            }
            L4Spec::Sctp => {
                b.extend_from_slice(&self.sport.to_be_bytes());
                b.extend_from_slice(&self.dport.to_be_bytes());
                b.extend_from_slice(&0xdead_beefu32.to_be_bytes()); // verification tag
                b.extend_from_slice(&[0, 0, 0, 0]);
                (None, false, true)
            }
            L4Spec::Icmp { msg_type, code } => {
                b.extend_from_slice(&[*msg_type, *code, 0, 0, 0, 0, 0, 0]);
                (Some(2), proto == ip_proto::ICMPV6, false)
            }
            L4Spec::Raw(_) => (None, false, false),
        };
        b.extend_from_slice(&self.payload);
        if zero && self.csum == CsumMode::Full {
            let crc = checksum::crc32c(&b);
            b[8..12].copy_from_slice(&crc.to_le_bytes());
        }
        if let Some(off) = csum_off {
            let ph = if pseudo {
                checksum::pseudo_header(&self.src, &self.dst, proto, b.len() as u32).unwrap_or(0)
            } else {
                0
            };
            let field = match self.csum {
                CsumMode::Full => {
                    let c = !checksum::fold(checksum::add(ph, checksum::sum(&b)));
                    if c == 0 && proto == ip_proto::UDP {
                        0xffff
                    } else {
                        c
                    }
                }
                CsumMode::Partial => checksum::fold(ph),
            };
            b[off..off + 2].copy_from_slice(&field.to_be_bytes());
        }
        b
    }

    /// Builds the frame.
    pub fn build(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        let mut f = Vec::with_capacity(128 + l4.len());
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for (i, tci) in self.vlans.iter().enumerate() {
            let tpid = if i == 0 && self.vlans.len() > 1 {
                ethertype::QINQ
            } else {
                ethertype::VLAN
            };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        let proto = self.proto();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&ethertype::IPV4.to_be_bytes());
                let mut opts = self.ip_options.clone();
                opts.resize(opts.len().div_ceil(4) * 4, 0);
                let hl = 20 + opts.len();
                let tl = (hl + l4.len()) as u16;
                let ff = match self.frag {
                    Some((off, more)) => {
                        ((off / 8) as u16 & 0x1fff) | if more { 0x2000 } else { 0 }
                    }
                    None => 0x4000,
                };
                let start = f.len();
                f.push(0x40 | (hl / 4) as u8);
                f.push(0);
                f.extend_from_slice(&tl.to_be_bytes());
                f.extend_from_slice(&0x1c46u16.to_be_bytes());
                f.extend_from_slice(&ff.to_be_bytes());
                f.push(self.ttl);
                f.push(proto);
                f.extend_from_slice(&[0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                f.extend_from_slice(&opts);
                let c = checksum::checksum(&f[start..]);
                f[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&ethertype::IPV6.to_be_bytes());
                let mut chain: Vec<u8> = self.ext_headers.clone();
                if self.frag.is_some() {
                    chain.push(ip_proto::FRAGMENT);
                }
                let ext_len = chain.len() * 8;
                let first = chain.first().copied().unwrap_or(proto);
                f.extend_from_slice(&0x6000_0000u32.to_be_bytes());
                f.extend_from_slice(&((ext_len + l4.len()) as u16).to_be_bytes());
                f.push(first);
                f.push(self.ttl);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                for (i, t) in chain.iter().enumerate() {
                    let next = chain.get(i + 1).copied().unwrap_or(proto);
                    match (*t, self.frag) {
                        (ip_proto::FRAGMENT, Some((off, more))) => {
                            let w = (off as u16 & 0xfff8) | u16::from(more);
                            f.extend_from_slice(&[next, 0]);
                            f.extend_from_slice(&w.to_be_bytes());
                            f.extend_from_slice(&0x0bad_cafeu32.to_be_bytes());
                        }
                        // Routing: type 4 (SRH-like), segments left 0; others PadN.
                        (ip_proto::ROUTING, _) => f.extend_from_slice(&[next, 0, 4, 0, 0, 0, 0, 0]),
                        _ => f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]),
                    }
                }
            }
            _ => panic!("FrameSpec: src and dst must be the same family"),
        }
        f.extend_from_slice(&l4);
        f.resize(f.len() + self.padding, 0);
        f
    }
}

fn v6(s: &str) -> IpAddr {
    // Test-support constants above are valid literals.
    IpAddr::V6(s.parse::<Ipv6Addr>().expect("valid IPv6 literal"))
}
