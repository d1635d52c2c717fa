//! IP tunnelling (`-i`), IPVS's `ip_vs_tunnel_xmit` / `_v6`: the request is
//! encapsulated, unchanged but for its TTL, in a packet to the real server,
//! which decapsulates it and answers the client directly. Decapsulation for
//! that real-server endpoint is [`decap()`].
//!
//! What the kernel builds, and so what [`encap`] builds (checked against
//! `ip_vs_xmit.c`, `ip_vs_prepare_tunneled_skb`, `ipvs_gue_encap`,
//! `ipvs_gre_encap`):
//! * Families: the inner packet keeps its family (the service's); the outer
//!   header has the real server's. All four combinations are allowed
//!   (IPv4-in-IPv4, IPv6-in-IPv6, IPv6-in-IPv4, IPv4-in-IPv6), for every
//!   tunnel type.
//! * ipip: outer protocol 4 (inner IPv4) or 41 (inner IPv6).
//! * GRE: outer protocol 47; GRE version 0 with protocol type = inner
//!   ethertype; with `--tun-csum` the C bit and a checksum over the GRE header
//!   and the inner packet.
//! * GUE: outer UDP to `--tun-port`, source port a hash of the inner flow
//!   mapped onto the local port range (`udp_flow_src_port`), then a GUE
//!   variant 0 header whose protocol is 4 or 41. UDP checksum: 0 with
//!   `--tun-nocsum`; computed with `--tun-csum` and with `--tun-remcsum`.
//!   With `--tun-remcsum` and a pending inner checksum (`CsumMode::Partial`,
//!   the kernel's `CHECKSUM_PARTIAL`), the private-flags and remote-checksum
//!   options are added (12-byte GUE header) and the inner checksum is left
//!   pending on the wire for the receiver to complete.
//! * Outer header: TTL / hop limit = the inner one after the inner packet's
//!   TTL was decremented (the inner packet is forwarded, so it loses one);
//!   DSCP copied and ECN encapsulated per RFC 6040 (`INET_ECN_encapsulate`:
//!   CE becomes ECT(0)); IPv4: DF copied from an IPv4 inner packet when
//!   `pmtu_disc` is on (never set for an IPv6 inner packet), IP ID 0 when DF
//!   is set (`ip_select_ident` without a socket) and the caller's `ident`
//!   otherwise, no options; IPv6: flow label 0.
//!
//! Checksums and offload: in `CsumMode::Full` every checksum written is
//! complete. In `Partial` mode a TCP/UDP inner checksum is left pending unless
//! remote checksum offload carries it; outer GRE/UDP checksums are still
//! computed correctly, by local checksum offload (the completed inner L4 data
//! sums to the complement of the pending pseudo-header field, RFC 7259-style
//! LCO as Linux's `lco_csum`), and [`Encapsulated::pending`] tells the engine
//! where the inner checksum must be completed (virtio `NEEDS_CSUM` with
//! `csum_start`/`csum_offset`). A pending SCTP CRC-32C is completed in
//! software first: a tunnel cannot carry it pending.
//!
//! Contract: no allocation, no panic; on `Err` the buffer is unchanged. The
//! caller hands a buffer whose frame starts at `frame_start`, with at least
//! [`TunParams::overhead`] (at most [`MAX_OVERHEAD`]) free bytes before it.

pub mod decap;

pub use decap::{decap, decap_frame, DecapError, Decapsulated};

use std::net::IpAddr;

use super::{check_parsed, decrement_ttl, fits, NeedsFrag, XmitError};
use crate::checksum::{self, fill_l4_checksum, CsumMode};
use crate::parse::{IpVersion, Parsed};
use crate::wire::ethernet::ethertype;
use crate::wire::{gre, gue, ip_proto, ipv4, ipv6, put16, udp};

/// Tunnel type (`--tun-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TunKind {
    /// IP in IP (protocol 4 / 41), the default.
    #[default]
    Ipip,
    /// Generic UDP Encapsulation to `--tun-port`.
    Gue,
    /// GRE (protocol 47).
    Gre,
}

/// Tunnel checksum option (`--tun-nocsum` | `--tun-csum` | `--tun-remcsum`).
///
/// As in the kernel, ipip ignores it, and GRE treats `RemCsum` as `NoCsum`
/// (ipvsadm only offers `--tun-remcsum` for GUE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TunCsum {
    /// No outer checksum (the default).
    #[default]
    NoCsum,
    /// Outer GRE / UDP checksum.
    Csum,
    /// GUE remote checksum offload (outer UDP checksum too).
    RemCsum,
}

/// Largest encapsulation overhead: IPv6 + UDP + GUE with remote checksum
/// offload. A headroom of this many bytes before every frame suffices.
pub const MAX_OVERHEAD: usize = ipv6::HEADER_LEN + udp::HEADER_LEN + 12;

/// Default GUE source port range: Linux's `ip_local_port_range`.
pub const DEFAULT_SPORT_RANGE: (u16, u16) = (32768, 60999);

/// How to encapsulate toward one real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunParams {
    /// Tunnel type.
    pub kind: TunKind,
    /// Outer source: the director's address on the route to `dst` (what
    /// the kernel's route lookup picks).
    pub src: IpAddr,
    /// Outer destination: the real server.
    pub dst: IpAddr,
    /// GUE destination port (`--tun-port`); unused otherwise.
    pub port: u16,
    /// Checksum option.
    pub csum: TunCsum,
    /// The `pmtu_disc` knob (default on): copy DF from an IPv4 inner packet
    /// and refuse oversized DF packets; off: never set DF, let them fragment.
    pub pmtu_disc: bool,
    /// GUE source port range (inclusive), normally the local port range.
    pub sport_range: (u16, u16),
    /// Seed of the GUE source-port flow hash (the kernel's is random per boot).
    pub hash_seed: u32,
}

impl TunParams {
    /// Parameters with the defaults: no checksum, `pmtu_disc` on, the
    /// default source port range, seed 0.
    pub fn new(kind: TunKind, src: IpAddr, dst: IpAddr) -> TunParams {
        TunParams {
            kind,
            src,
            dst,
            port: 0,
            csum: TunCsum::NoCsum,
            pmtu_disc: true,
            sport_range: DEFAULT_SPORT_RANGE,
            hash_seed: 0,
        }
    }

    /// Family of the outer header (the real server's).
    pub fn outer_version(&self) -> IpVersion {
        if self.dst.is_ipv4() {
            IpVersion::V4
        } else {
            IpVersion::V6
        }
    }

    /// Bytes [`encap`] adds in front of this packet's IP header.
    pub fn overhead(&self, p: &Parsed, mode: CsumMode) -> usize {
        let rem = self.remcsum_applies(pending_field(p, mode).is_some());
        overhead(self.kind, self.outer_version(), self.csum, rem)
    }

    fn remcsum_applies(&self, pending: bool) -> bool {
        pending && self.kind == TunKind::Gue && self.csum == TunCsum::RemCsum
    }
}

/// Encapsulation overhead: outer IP header plus tunnel header.
/// `remcsum_option`: the GUE remote-checksum options are added (only when the
/// inner checksum is pending and `csum` is `RemCsum`).
pub fn overhead(kind: TunKind, outer: IpVersion, csum: TunCsum, remcsum_option: bool) -> usize {
    let ip = match outer {
        IpVersion::V4 => ipv4::HEADER_LEN,
        IpVersion::V6 => ipv6::HEADER_LEN,
    };
    ip + match kind {
        TunKind::Ipip => 0,
        TunKind::Gre => gre::header_len(if csum == TunCsum::Csum {
            gre::FLAG_CSUM
        } else {
            0
        }),
        TunKind::Gue => udp::HEADER_LEN + gue::header_len(remcsum_option),
    }
}

/// The MTU check of a tunnelled packet (`__ip_vs_get_out_rt` in tunnel mode):
/// the tunnel MTU is `route_mtu` minus the overhead; below 68 (IPv4 outer) or
/// 1280 (IPv6 outer) the packet is dropped without ICMP; with `pmtu_disc` off
/// an IPv4 inner packet always passes (it will be fragmented); otherwise as
/// [`fits`] with the tunnel MTU, whose `NeedsFrag::mtu` is what the kernel
/// reports to the client in fragmentation-needed / packet-too-big.
pub fn check_mtu(
    frame: &[u8],
    p: &Parsed,
    params: &TunParams,
    route_mtu: u32,
    mode: CsumMode,
) -> Result<(), NeedsFrag> {
    let ov = params.overhead(p, mode) as u32;
    let mtu = route_mtu.saturating_sub(ov);
    let min = match params.outer_version() {
        IpVersion::V4 => 68,
        IpVersion::V6 => 1280,
    };
    if mtu < min {
        return Err(NeedsFrag {
            mtu,
            len: p.ip_len,
            send_icmp: false,
        });
    }
    if p.is_ipv4() && !params.pmtu_disc {
        return Ok(());
    }
    fits(frame, p, mtu)
}

/// An inner checksum the sender still has to complete (virtio-net
/// `NEEDS_CSUM`): the internet checksum of `[start, end of packet)` goes at
/// `start + offset`. Offsets are relative to the new frame start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingCsum {
    /// Where summing starts (the inner L4 header): virtio `csum_start`.
    pub start: usize,
    /// Offset of the checksum field from `start`: virtio `csum_offset`.
    pub offset: usize,
}

/// Where [`encap`] left the encapsulated frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encapsulated {
    /// Offset of the new frame in the buffer (`frame_start - overhead`).
    pub start: usize,
    /// Length of the new frame (Ethernet padding of the original dropped).
    pub len: usize,
    /// Bytes added before the inner IP header.
    pub overhead: usize,
    /// The inner L4 checksum is still pending (Partial mode, no remote
    /// checksum offload): the engine must send with `NEEDS_CSUM` here.
    pub pending: Option<PendingCsum>,
}

/// Encapsulates the frame at `buf[frame_start..]`, parsed as `p`, toward
/// `params.dst` (module doc for every field). The Ethernet header (VLAN tags
/// included) moves in front of the new outer header with its innermost
/// ethertype set to the outer family; its MACs are left for the engine to set
/// ([`crate::xmit::set_macs`]) toward the next hop to `params.dst`.
/// `ident` is the outer IPv4 ID when DF is clear (a per-worker counter will
/// do); ignored otherwise.
///
/// Errors (buffer unchanged): `FrameMismatch`, `FamilyMismatch` (outer
/// `src`/`dst` of different families), `TtlExceeded` (answer with ICMP time
/// exceeded), `NoHeadroom`, `TooLarge`, and the errors of completing a
/// pending SCTP CRC.
pub fn encap(
    buf: &mut [u8],
    frame_start: usize,
    p: &Parsed,
    params: &TunParams,
    ident: u16,
    mode: CsumMode,
) -> Result<Encapsulated, XmitError> {
    // ---- validate everything first: an error leaves the buffer untouched ----
    let frame = buf.get(frame_start..).ok_or(XmitError::FrameMismatch)?;
    let plan = plan(frame, p, params, mode, frame_start)?;
    let Plan {
        outer_v4,
        pending_rel,
        remcsum,
        ov,
        ip_hdr,
        outer_payload,
        ..
    } = plan;
    let sctp_pending =
        mode == CsumMode::Partial && p.proto == ip_proto::SCTP && p.has_l4 && !p.is_fragment;
    let inner_len = p.ip_len;
    let l3 = p.l3_off;

    // ---- the inner packet: CRC, TTL ----
    if sctp_pending {
        // Validates before writing; the only fallible step left before the
        // rewrite, so an error still leaves the buffer as it was.
        fill_l4_checksum(&mut buf[frame_start..], p)?;
    }
    let ttl = decrement_ttl(&mut buf[frame_start..], l3, p.version)?;

    // ---- Ethernet header, moved into the headroom ----
    let start = frame_start - ov;
    buf.copy_within(frame_start..frame_start + l3, start);
    let outer_ethertype = if outer_v4 {
        ethertype::IPV4
    } else {
        ethertype::IPV6
    };
    put16(buf, start + l3 - 2, outer_ethertype);

    // ---- outer IP and tunnel headers ----
    let o = start + l3; // outer IP header
    let t = o + ip_hdr; // tunnel header
    let inner = frame_start + l3; // inner IP header (did not move)
    let l4_abs = frame_start + p.l4_off;
    let emitted = write_head(&mut buf[o..inner], p, params, &plan, ttl, ident);
    debug_assert!(emitted.is_ok(), "lengths checked before writing");

    // ---- outer checksums ----
    let local_pending = if remcsum { None } else { pending_rel };
    let outer_csum = match params.kind {
        TunKind::Gre => params.csum == TunCsum::Csum,
        TunKind::Gue => params.csum != TunCsum::NoCsum,
        TunKind::Ipip => false,
    };
    if outer_csum {
        // Sum of the inner packet as it will be on the wire once complete.
        let inner_sum = match local_pending {
            Some(rel) => {
                // Local checksum offload: the completed L4 part sums to the
                // complement of the pending pseudo-header sum in the field.
                let f = l4_abs + rel;
                let field = u16::from_be_bytes([buf[f], buf[f + 1]]);
                checksum::add(checksum::sum(&buf[inner..l4_abs]), u64::from(!field))
            }
            None => checksum::sum(&buf[inner..inner + inner_len]),
        };
        match params.kind {
            TunKind::Gre => {
                let c = !checksum::fold(checksum::add(checksum::sum(&buf[t..inner]), inner_sum));
                put16(buf, t + gre::CHECKSUM_OFFSET, c);
            }
            _ => {
                let pseudo = checksum::pseudo_header(
                    &params.src,
                    &params.dst,
                    ip_proto::UDP,
                    outer_payload as u32,
                )
                .unwrap_or(0);
                let s = checksum::add(pseudo, checksum::sum(&buf[t..inner]));
                let mut c = !checksum::fold(checksum::add(s, inner_sum));
                if c == 0 {
                    c = 0xffff;
                }
                put16(buf, t + udp::CHECKSUM_OFFSET, c);
            }
        }
    }

    Ok(Encapsulated {
        start,
        len: l3 + ip_hdr + outer_payload,
        overhead: ov,
        pending: local_pending.map(|rel| PendingCsum {
            start: l4_abs - start,
            offset: rel,
        }),
    })
}

/// What [`outer_head`] wrote: the outer packet as the hooks it walks on
/// its way out see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    /// The outer IP protocol: 4 or 41 (ipip), 47 (GRE), 17 (GUE).
    pub proto: u8,
    /// GUE's outer UDP ports (0 for ipip and GRE).
    pub sport: u16,
    pub dport: u16,
    /// The outer IP length.
    pub ip_len: usize,
    /// Bytes written: the outer IP header and the tunnel header.
    pub head_len: usize,
}

/// What the outer header takes from the inner packet.
struct Inner {
    ttl: u8,
    tos: u8,
    df: bool,
    proto: u8,
    ethertype: u16,
}

/// The inner packet's TTL (refused at 1 or less), DS field and DF (kept
/// only with path MTU discovery), and its protocol and ethertype as the
/// outer header names them.
fn inner_fields(frame: &[u8], p: &Parsed, params: &TunParams) -> Result<Inner, XmitError> {
    let l3 = p.l3_off;
    let inner = match p.version {
        IpVersion::V4 => Inner {
            ttl: frame[l3 + 8],
            tos: frame[l3 + 1],
            df: params.pmtu_disc && u16::from(frame[l3 + 6]) << 8 & ipv4::FLAG_DF != 0,
            proto: ip_proto::IPIP,
            ethertype: ethertype::IPV4,
        },
        IpVersion::V6 => Inner {
            ttl: frame[l3 + 7],
            tos: (frame[l3] << 4) | (frame[l3 + 1] >> 4),
            df: false,
            proto: ip_proto::IPV6,
            ethertype: ethertype::IPV6,
        },
    };
    if inner.ttl <= 1 {
        return Err(XmitError::TtlExceeded);
    }
    Ok(inner)
}

/// The outer IP and tunnel headers [`encap`] would put in front of the
/// frame (parsed as `p`), written to `out` without touching the frame:
/// what the director's LOCAL_OUT and POST_ROUTING hooks see of a
/// tunnelled packet (the kernel's `ip_vs_tunnel_xmit` sends it through
/// `ip_local_out`). The same addresses, protocol, TTL, DS field, DF, GUE
/// ports and lengths as `encap`'s; the IPv4 ID is 0 (encap's comes from
/// the sender's counter) and no outer checksum is filled in.
///
/// Errors as [`encap`]'s validation: `FamilyMismatch`, `TtlExceeded`,
/// `TooLarge`, `FrameMismatch`, `NoHeadroom` (`out` too short).
pub fn outer_head(
    frame: &[u8],
    p: &Parsed,
    params: &TunParams,
    mode: CsumMode,
    out: &mut [u8],
) -> Result<Outer, XmitError> {
    let plan = plan(frame, p, params, mode, out.len())?;
    let ov = plan.ov;
    let (proto, sport) = write_head(&mut out[..ov], p, params, &plan, plan.inner.ttl - 1, 0)
        .map_err(|_| XmitError::FrameMismatch)?;
    Ok(Outer {
        proto,
        sport,
        dport: if params.kind == TunKind::Gue {
            params.port
        } else {
            0
        },
        ip_len: plan.ip_hdr + plan.outer_payload,
        head_len: ov,
    })
}

/// What [`encap`] and [`outer_head`] both work out, and check, before
/// writing anything.
struct Plan {
    outer_v4: bool,
    /// The inner L4 checksum field left pending (Partial mode).
    pending_rel: Option<usize>,
    /// GUE's remote checksum offload carries it.
    remcsum: bool,
    /// The outer IP and tunnel headers' length.
    ov: usize,
    ip_hdr: usize,
    /// The outer IP payload: tunnel header and inner packet.
    outer_payload: usize,
    inner: Inner,
}

/// Checks a frame (parsed as `p`) can be tunnelled with `room` bytes for
/// the outer headers, in this order: `FrameMismatch` (`p` does not fit the
/// frame, no Ethernet header, a pending checksum field outside the L4
/// header), `FamilyMismatch`, `NoHeadroom`, `TooLarge`, `TtlExceeded`.
fn plan(
    frame: &[u8],
    p: &Parsed,
    params: &TunParams,
    mode: CsumMode,
    room: usize,
) -> Result<Plan, XmitError> {
    check_parsed(frame, p)?;
    let outer_v4 = match (params.src, params.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => true,
        (IpAddr::V6(_), IpAddr::V6(_)) => false,
        _ => return Err(XmitError::FamilyMismatch),
    };
    if p.l3_off < 2 {
        // No ethertype to rewrite: not an Ethernet frame.
        return Err(XmitError::FrameMismatch);
    }
    let pending_rel = pending_field(p, mode);
    if let Some(rel) = pending_rel {
        if p.l4_off + rel + 2 > p.payload_off {
            return Err(XmitError::FrameMismatch);
        }
    }
    let remcsum = params.remcsum_applies(pending_rel.is_some());
    let ov = overhead(params.kind, params.outer_version(), params.csum, remcsum);
    if room < ov {
        return Err(XmitError::NoHeadroom);
    }
    let ip_hdr = if outer_v4 {
        ipv4::HEADER_LEN
    } else {
        ipv6::HEADER_LEN
    };
    let outer_payload = ov - ip_hdr + p.ip_len;
    if outer_payload > if outer_v4 { 65535 - ip_hdr } else { 65535 } {
        return Err(XmitError::TooLarge);
    }
    let inner = inner_fields(frame, p, params)?;
    Ok(Plan {
        outer_v4,
        pending_rel,
        remcsum,
        ov,
        ip_hdr,
        outer_payload,
        inner,
    })
}

/// Writes the outer IP header (`ttl`; `ident` unless DF is kept) and the
/// tunnel header into `head` (`plan.ov` bytes, as [`plan`] checked), no
/// outer checksum; returns the outer protocol and GUE's source port (0
/// for ipip and GRE).
fn write_head(
    head: &mut [u8],
    p: &Parsed,
    params: &TunParams,
    plan: &Plan,
    ttl: u8,
    ident: u16,
) -> Result<(u8, u16), crate::wire::WireError> {
    let Plan {
        ip_hdr: t,
        outer_payload,
        ref inner,
        ..
    } = *plan;
    let mut sport = 0;
    let next_proto = match params.kind {
        TunKind::Ipip => inner.proto,
        TunKind::Gre => {
            // Lengths were checked: the header fits.
            let _ = gre::emit(
                &mut head[t..],
                inner.ethertype,
                params.csum == TunCsum::Csum,
            );
            ip_proto::GRE
        }
        TunKind::Gue => {
            sport = flow_sport(p, params.hash_seed, params.sport_range);
            put16(head, t, sport);
            put16(head, t + 2, params.port);
            put16(head, t + 4, outer_payload as u16);
            put16(head, t + 6, 0);
            let rem = match (plan.remcsum, plan.pending_rel) {
                (true, Some(rel)) => {
                    let start_rel = p.l4_off - p.l3_off;
                    Some((start_rel as u16, (start_rel + rel) as u16))
                }
                _ => None,
            };
            let _ = gue::emit(&mut head[t + udp::HEADER_LEN..], inner.proto, rem);
            ip_proto::UDP
        }
    };
    let tos = ecn_encapsulate(inner.tos);
    match (params.src, params.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => ipv4::Repr {
            src,
            dst,
            protocol: next_proto,
            ttl,
            tos,
            ident: if inner.df { 0 } else { ident },
            flags_frag: if inner.df { ipv4::FLAG_DF } else { 0 },
            payload_len: outer_payload,
        }
        .emit(&mut head[..t])?,
        (IpAddr::V6(src), IpAddr::V6(dst)) => ipv6::Repr {
            src,
            dst,
            next_header: next_proto,
            hop_limit: ttl,
            traffic_class: tos,
            flow_label: 0,
            payload_len: outer_payload,
        }
        .emit(&mut head[..t])?,
        // Checked by `plan`.
        _ => {}
    }
    Ok((next_proto, sport))
}

/// Offset of a pending (Partial mode) TCP/UDP checksum field within the L4
/// header; `None` when the checksum is complete or not an internet checksum.
fn pending_field(p: &Parsed, mode: CsumMode) -> Option<usize> {
    if mode != CsumMode::Partial || !p.has_l4 || p.is_fragment {
        return None;
    }
    match p.proto {
        ip_proto::TCP => Some(crate::wire::tcp::CHECKSUM_OFFSET),
        ip_proto::UDP => Some(udp::CHECKSUM_OFFSET),
        _ => None,
    }
}

/// RFC 6040 normal-mode encapsulation of the DS field: DSCP copied, ECN
/// copied except CE, which becomes ECT(0) (`INET_ECN_encapsulate`).
fn ecn_encapsulate(tos: u8) -> u8 {
    let ecn = tos & 3;
    (tos & !3) | if ecn == 3 { 2 } else { ecn }
}

/// GUE source port: a hash of the inner flow mapped onto `range`, so one
/// flow keeps one outer 5-tuple (ECMP and RSS spread flows, never reorder).
fn flow_sport(p: &Parsed, seed: u32, range: (u16, u16)) -> u16 {
    let mut h = seed ^ 0x9e37_79b9;
    let mut mix = |w: u32| {
        h = (h ^ w).wrapping_mul(0x0100_0193).rotate_left(13);
    };
    for a in [p.src, p.dst] {
        match a {
            IpAddr::V4(a) => mix(u32::from(a)),
            IpAddr::V6(a) => {
                for c in a.octets().chunks_exact(4) {
                    mix(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                }
            }
        }
    }
    mix(u32::from(p.proto));
    mix(u32::from(p.sport) << 16 | u32::from(p.dport));
    // murmur3 finaliser: every input bit reaches every output bit.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    let (lo, hi) = (range.0.min(range.1), range.0.max(range.1));
    let span = u64::from(hi - lo) + 1;
    lo + ((u64::from(h) * span) >> 32) as u16
}

#[cfg(test)]
mod tests;
