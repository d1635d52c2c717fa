//! The egress stage: from the pipeline's [`Verdict`] to frames in a
//! [`TxQueue`], with no I/O of its own.
//!
//! It does what follows forwarding decisions: the next hop's MACs, the path
//! MTU (ICMP fragmentation needed / packet too big, or IPv4 fragmentation),
//! tunnel encapsulation (GSO super-packets segmented first, since no virtio
//! GSO type exists for ipip/GRE/GUE), ICMP errors the director owes a sender
//! (port unreachable, time exceeded, too big) under a rate limit, and
//! neighbour parking as a bounded queue ([`park`]).
//!
//! The path MTU is checked against the packet as it arrived, as the
//! kernel's `ip_forward` does before NAT: a NAT reply too big for the
//! client's path gets its fragmentation needed / packet too big back at the
//! real server that sent it (quoting the reply with SNAT undone, from this
//! host's address toward that server), and a request's error goes to the
//! client quoting it with DNAT undone. Path MTU errors are exempt from the
//! rate limit, as in the kernel (`icmpv4_mask_allow`, `icmpv6_xrlim_allow`):
//! limiting them would break path MTU discovery.
//!
//! Contract:
//! * Time is the caller's `now` (milliseconds on the engine's clock);
//!   neighbours come through [`Neighbours`]; frames leave only through the
//!   queue. Nothing here parses a frame the pipeline already parsed: the
//!   verdict carries the parse, the RX frame its offload metadata.
//! * A frame that fits goes out in place ([`TxQueue::forward`]), encapsulated
//!   in place in its headroom if tunnelled; fragments, segments, ICMP errors
//!   and parked packets are built in scratch space and copied
//!   ([`TxQueue::copy`]).
//! * Every packet that does not leave is counted under a drop reason (or
//!   `icmp_rate_limited` for an answer not sent).
//! * No allocation after [`Egress::new`].

pub mod limit;
pub mod park;
mod tunnel;

pub(crate) use tunnel::params as tunnel_params;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

use uvs_fwd::xmit::icmp::{self, IcmpKind};
use uvs_fwd::{Parsed, Side};

use crate::datapath::pipeline::Verdict;
use crate::datapath::stats::{add, DropReason, WorkerStats};
use crate::io::{TxQueue, VnetHdr};
use crate::sys::neigh::{Lookup, NextHop, Resolver};

use limit::TokenBucket;
use park::{Action, ParkQueue, PARK_FRAME_MAX};

/// Free bytes kept before frames built in scratch space or parked: room for
/// tunnel headers plus a TX header.
pub const HEADROOM: usize = 128;

/// Where next hops come from (the resolver; a table in tests).
pub trait Neighbours {
    /// The next hop toward `dst`, as [`Resolver::lookup`] answers.
    fn lookup(&self, dst: IpAddr) -> Lookup;
}

impl Neighbours for Resolver {
    fn lookup(&self, dst: IpAddr) -> Lookup {
        Resolver::lookup(self, dst)
    }
}

/// A frame ready to leave from its buffer: `buf[at..end]`.
#[derive(Debug, Clone, Copy)]
struct Ready {
    at: usize,
    end: usize,
    vnet: VnetHdr,
    ifindex: u32,
}

/// Scratch space and per-worker state of the stage (apart from parking, so
/// both can be borrowed at once).
#[derive(Debug)]
struct Work {
    icmp: Vec<u8>,
    /// One fragment or TCP segment (with headroom).
    seg: Vec<u8>,
    /// A copy of a packet as the client sent it (NAT undone), to quote.
    orig: Vec<u8>,
    /// Outer IPv4 IDs of tunnelled packets and ICMP errors.
    ident: u16,
    icmp_limit: TokenBucket,
}

/// One worker's egress stage.
#[derive(Debug)]
pub struct Egress {
    work: Work,
    park: ParkQueue,
    /// Local clients' replies go into the `uvs-lo` TUN device, not out.
    local: Option<crate::io::tun_local::LocalSink>,
}

impl Egress {
    /// A stage whose IPv4 IDs start after `ident` (workers use different
    /// seeds), with its rate limiter full at `now_ms`.
    pub fn new(ident: u16, now_ms: u64) -> Egress {
        Egress {
            work: Work {
                icmp: vec![0u8; HEADROOM + icmp::MAX_ERROR_FRAME],
                seg: vec![0u8; HEADROOM + PARK_FRAME_MAX],
                orig: vec![0u8; PARK_FRAME_MAX],
                ident,
                icmp_limit: TokenBucket::new(now_ms),
            },
            park: ParkQueue::new(),
            local: None,
        }
    }

    /// Delivers packets for local-client addresses into the TUN device
    /// (`uvs run --local-src`).
    pub fn set_local(&mut self, sink: crate::io::tun_local::LocalSink) {
        self.local = Some(sink);
    }

    /// Packets waiting for a neighbour.
    pub fn parked(&self) -> usize {
        self.park.len()
    }

    /// Sends the frame `buf[at..]` (free headroom before it) as `v` says;
    /// `vnet` is its RX offload metadata.
    #[allow(clippy::too_many_arguments)]
    pub fn output<'b>(
        &mut self,
        buf: &'b mut [u8],
        at: usize,
        vnet: VnetHdr,
        v: Verdict,
        nb: &impl Neighbours,
        now_ms: u64,
        st: &WorkerStats,
        q: &mut impl TxQueue<'b>,
    ) {
        let next_hop = match v {
            Verdict::Pass | Verdict::Drop(_) => return,
            Verdict::Reject { reason, pkt } => {
                let kind = match reason {
                    DropReason::TtlExceeded => IcmpKind::TimeExceeded,
                    _ => IcmpKind::PortUnreachable,
                };
                let Egress { work, park, .. } = self;
                let from = IcmpFrom::Dst;
                return work.answer(&buf[at..], &pkt, kind, from, nb, now_ms, st, park, q);
            }
            Verdict::Xmit { next_hop, .. } | Verdict::Tunnel { next_hop, .. } => next_hop,
        };
        // A reply for a local client: into the TUN, before any neighbour.
        if let Some(l) = self.local.as_ref().filter(|l| l.owns(next_hop)) {
            return l.deliver(&mut buf[at..], vnet, st);
        }
        match nb.lookup(next_hop) {
            Lookup::Ready(nh) => {
                let Egress { work, park, .. } = self;
                if let Some(r) = work.emit(buf, at, vnet, &v, &nh, nb, now_ms, st, park, q) {
                    let (out, _) = buf.split_at_mut(r.end);
                    q.forward(out, r.at, &r.vnet, r.ifindex);
                }
            }
            Lookup::Pending => {
                self.park
                    .park(&buf[at..], vnet, Action::Emit(v), next_hop, now_ms, st)
            }
            // A rewritten packet for this host itself, or no way there.
            Lookup::Local | Lookup::Unreachable => st.drop(DropReason::NoRoute),
        }
    }

    /// Sends the parked packets whose neighbour is known now, and drops
    /// (counted) those that cannot be sent or waited too long.
    pub fn retry_parked<'b>(
        &mut self,
        nb: &impl Neighbours,
        now_ms: u64,
        st: &WorkerStats,
        q: &mut impl TxQueue<'b>,
    ) {
        let mut from = 0;
        while let Some((mut p, l)) = self.park.take_due(|a| nb.lookup(a), now_ms, &mut from) {
            match l {
                Lookup::Ready(nh) => {
                    let buf = &mut p.buf[..HEADROOM + p.len];
                    let Egress { work, park, .. } = self;
                    let ready = match p.action {
                        Action::Emit(v) => {
                            work.emit(buf, HEADROOM, p.vnet, &v, &nh, nb, now_ms, st, park, q)
                        }
                        Action::Plain => plain(buf, HEADROOM, p.vnet, &nh, st),
                    };
                    if let Some(r) = ready {
                        q.copy(&buf[r.at..r.end], &r.vnet, r.ifindex);
                    }
                }
                _ => st.drop(DropReason::NoRoute),
            }
            self.park.give_back(p.buf);
        }
    }
}

/// A complete frame: MACs toward `nh`, ready to leave whole.
fn plain(
    buf: &mut [u8],
    at: usize,
    vnet: VnetHdr,
    nh: &NextHop,
    st: &WorkerStats,
) -> Option<Ready> {
    match uvs_fwd::set_macs(&mut buf[at..], nh.src_mac, nh.dst_mac) {
        Ok(()) => Some(Ready {
            at,
            end: buf.len(),
            vnet,
            ifindex: nh.ifindex,
        }),
        Err(_) => {
            st.drop(DropReason::Rewrite);
            None
        }
    }
}

impl Work {
    /// Puts a processed frame (`buf[at..]`) toward `nh`: returns it ready to
    /// leave, or has queued copies (fragments, segments) itself, or counted
    /// why it does not leave.
    #[allow(clippy::too_many_arguments)]
    fn emit<'b>(
        &mut self,
        buf: &mut [u8],
        at: usize,
        vnet: VnetHdr,
        v: &Verdict,
        nh: &NextHop,
        nb: &impl Neighbours,
        now_ms: u64,
        st: &WorkerStats,
        park: &mut ParkQueue,
        q: &mut impl TxQueue<'b>,
    ) -> Option<Ready> {
        match *v {
            Verdict::Xmit {
                dnat_from,
                snat_from,
                pkt,
                ..
            } => {
                // Cheap test first: only a frame longer than the MTU plus an
                // Ethernet header can be too big. A GSO super-packet is cut
                // by the kernel on the way out into segments of its
                // `gso_size`: each of those must fit (the kernel's
                // `skb_gso_validate_network_len`; a veth drops them
                // silently otherwise).
                let too_long = if vnet.is_gso() {
                    gso_segment_len(&pkt, vnet) > nh.mtu as usize
                } else {
                    buf.len() - at > nh.mtu as usize + 14
                };
                if too_long {
                    let o = Oversized {
                        pkt: &pkt,
                        vnet,
                        nh,
                        dnat_from,
                        snat_from,
                    };
                    return self.oversized(buf, at, &o, nb, now_ms, st, park, q);
                }
                plain(buf, at, vnet, nh, st)
            }
            Verdict::Tunnel {
                next_hop, tun, pkt, ..
            } => {
                let Some(src) = nh.src_ip else {
                    st.drop(DropReason::NoRoute);
                    return None;
                };
                let params = tunnel::params(tun, src, next_hop);
                let r = if vnet.is_gso() {
                    tunnel::segmented(
                        &buf[at..],
                        &pkt,
                        vnet.gso_size,
                        &params,
                        nh,
                        &mut self.seg,
                        &mut self.ident,
                        q,
                    )
                    .map(|()| None)
                } else {
                    tunnel::encap(
                        buf,
                        at,
                        &pkt,
                        &params,
                        nh,
                        &mut self.ident,
                        vnet.csum_mode(),
                    )
                    .map(Some)
                };
                match r {
                    Ok(ready) => ready,
                    Err(tunnel::Fail::TooBig { mtu, send_icmp }) => {
                        st.drop(DropReason::TooBig);
                        if send_icmp {
                            let kind = IcmpKind::TooBig { mtu };
                            let from = IcmpFrom::Dst;
                            self.answer(&buf[at..], &pkt, kind, from, nb, now_ms, st, park, q);
                        }
                        None
                    }
                    Err(tunnel::Fail::Ttl) => {
                        st.drop(DropReason::TtlExceeded);
                        let kind = IcmpKind::TimeExceeded;
                        let from = IcmpFrom::Dst;
                        self.answer(&buf[at..], &pkt, kind, from, nb, now_ms, st, park, q);
                        None
                    }
                    Err(tunnel::Fail::Rewrite) => {
                        st.drop(DropReason::Rewrite);
                        None
                    }
                }
            }
            Verdict::Pass | Verdict::Drop(_) | Verdict::Reject { .. } => None,
        }
    }

    /// A NAT/DR packet that may exceed the path MTU (`ensure_mtu_is_adequate`):
    /// with DF (or IPv6) it is dropped and the sender gets fragmentation
    /// needed / packet too big; an IPv4 packet without DF is fragmented.
    #[allow(clippy::too_many_arguments)]
    fn oversized<'b>(
        &mut self,
        buf: &mut [u8],
        at: usize,
        o: &Oversized<'_>,
        nb: &impl Neighbours,
        now_ms: u64,
        st: &WorkerStats,
        park: &mut ParkQueue,
        q: &mut impl TxQueue<'b>,
    ) -> Option<Ready> {
        let (p, nh) = (o.pkt, o.nh);
        let gso = o.vnet.is_gso();
        // What must fit: the packet, or each segment of a super-packet.
        let seg = Parsed {
            ip_len: if gso {
                gso_segment_len(p, o.vnet)
            } else {
                p.ip_len
            },
            ..*p
        };
        if let Err(nf) = uvs_fwd::fits(&buf[at..], &seg, nh.mtu) {
            st.drop(DropReason::TooBig);
            if !nf.send_icmp {
                return None;
            }
            let kind = IcmpKind::TooBig { mtu: nf.mtu };
            // The kernel checks the MTU before NAT: quote the packet as its
            // sender sent it, NAT undone.
            let undo = match (o.dnat_from, o.snat_from) {
                (Some((vaddr, vport)), _) => Some((Side::Dst, vaddr, vport)),
                (None, Some((raddr, rport))) => Some((Side::Src, raddr, rport)),
                (None, None) => None,
            };
            match undo {
                Some((side, addr, port)) => {
                    // Only the start is quoted: copy what the scratch space
                    // holds (a super-packet is longer) and undo the NAT on
                    // that, its headers in it.
                    let n = (buf.len() - at).min(self.orig.len());
                    let mut orig = std::mem::take(&mut self.orig);
                    orig[..n].copy_from_slice(&buf[at..at + n]);
                    let mode = o.vnet.csum_mode();
                    let end = p.ip_end.min(n).max(p.payload_off);
                    let head = Parsed {
                        ip_end: end,
                        ip_len: end - p.l3_off,
                        ..*p
                    };
                    let quoted = (head.ip_end <= n)
                        .then(|| undo_nat(&mut orig[..n], &head, side, addr, port, mode))
                        .flatten();
                    if let Some(quoted) = quoted {
                        // A reply's sender is a real server, not a holder of
                        // the address it wrote to: answer from this host's
                        // address toward it (the reply's VIP if none).
                        let from = match side {
                            Side::Dst => IcmpFrom::Dst,
                            Side::Src => IcmpFrom::Route { fallback: p.src },
                        };
                        self.answer(&orig[..n], &quoted, kind, from, nb, now_ms, st, park, q);
                    }
                    self.orig = orig;
                }
                None => self.answer(&buf[at..], p, kind, IcmpFrom::Dst, nb, now_ms, st, park, q),
            }
            return None;
        }
        if gso {
            // Segments too long without DF: the kernel would segment, then
            // fragment; uvs sends neither (and no error is owed).
            st.drop(DropReason::TooBig);
            return None;
        }
        if p.ip_len <= nh.mtu as usize {
            // It fits after all (VLAN tags made the frame long).
            return plain(buf, at, o.vnet, nh, st);
        }
        // Fragments cannot leave their checksum to offload: complete it.
        if o.vnet.needs_csum() && uvs_fwd::fill_l4_checksum(&mut buf[at..], p).is_err() {
            st.drop(DropReason::Rewrite);
            return None;
        }
        let r = uvs_fwd::frag::fragment_ipv4(
            &buf[at..],
            p,
            nh.mtu as usize,
            &mut self.seg,
            HEADROOM,
            |f, h| {
                if uvs_fwd::set_macs(&mut f[h..], nh.src_mac, nh.dst_mac).is_ok() {
                    q.copy(&f[h..], &VnetHdr::default(), nh.ifindex);
                }
            },
        );
        if r.is_err() {
            st.drop(DropReason::Rewrite);
        }
        None
    }

    /// Answers the sender of `frame` (parsed as `p`) with an ICMP error from
    /// the address `from` names, within the rate limit (path MTU errors
    /// exempt). Parked when the sender's next hop is not known yet (its
    /// first packet).
    #[allow(clippy::too_many_arguments)]
    fn answer<'b>(
        &mut self,
        frame: &[u8],
        p: &Parsed,
        kind: IcmpKind,
        from: IcmpFrom,
        nb: &impl Neighbours,
        now_ms: u64,
        st: &WorkerStats,
        park: &mut ParkQueue,
        q: &mut impl TxQueue<'b>,
    ) {
        let pmtu = matches!(kind, IcmpKind::TooBig { .. });
        if !pmtu && !self.icmp_limit.take(now_ms) {
            return add(&st.icmp_limited, 1);
        }
        let route = nb.lookup(p.src);
        let src = match (from, route) {
            (IcmpFrom::Dst, _) => p.dst,
            (
                IcmpFrom::Route { .. },
                Lookup::Ready(NextHop {
                    src_ip: Some(a), ..
                }),
            ) if a.is_ipv4() == p.is_ipv4() => a,
            (IcmpFrom::Route { fallback }, _) => fallback,
        };
        self.ident = self.ident.wrapping_add(1);
        let out = &mut self.icmp[HEADROOM..];
        let Ok(n) = icmp::build_icmp_error(out, frame, p, kind, src, self.ident) else {
            // Not to be answered (an ICMP error itself, a broadcast...).
            return;
        };
        add(&st.icmp_sent, 1);
        let buf = &mut self.icmp[..HEADROOM + n];
        match route {
            Lookup::Ready(nh) => {
                if let Some(r) = plain(buf, HEADROOM, VnetHdr::default(), &nh, st) {
                    q.copy(&buf[r.at..r.end], &r.vnet, r.ifindex);
                }
            }
            Lookup::Pending => park.park(
                &buf[HEADROOM..],
                VnetHdr::default(),
                Action::Plain,
                p.src,
                now_ms,
                st,
            ),
            Lookup::Local | Lookup::Unreachable => st.drop(DropReason::NoRoute),
        }
    }
}

/// What [`Work::oversized`] needs about the packet.
struct Oversized<'a> {
    pkt: &'a Parsed,
    vnet: VnetHdr,
    nh: &'a NextHop,
    dnat_from: Option<(IpAddr, u16)>,
    snat_from: Option<(IpAddr, u16)>,
}

/// The IP length of each segment a GSO super-packet is cut into: its
/// headers (IP, extension headers, L4) plus `gso_size` bytes of payload.
fn gso_segment_len(p: &Parsed, vnet: VnetHdr) -> usize {
    let headers = p.payload_off.saturating_sub(p.l3_off);
    p.ip_len.min(headers + usize::from(vnet.gso_size))
}

/// The source of an ICMP error the director sends.
#[derive(Debug, Clone, Copy)]
enum IcmpFrom {
    /// The address the packet was sent to (a VIP: local to the director,
    /// as the kernel's `icmp_send` picks for a local destination).
    Dst,
    /// This host's address on the route back to the sender (a forwarded
    /// packet's destination is not ours); `fallback` when the route names
    /// none.
    Route { fallback: IpAddr },
}

/// Undoes the NAT of `frame` (parsed as `p`, after the rewrite): `side`
/// gets `addr`/`port` back. The TTL / hop limit is left as received (the
/// rewrites decrement it; the kernel quotes the packet before its own
/// decrement). Returns the parse of the packet as its sender sent it.
fn undo_nat(
    frame: &mut [u8],
    p: &Parsed,
    side: Side,
    addr: IpAddr,
    port: u16,
    mode: uvs_fwd::CsumMode,
) -> Option<Parsed> {
    // The rewrite refuses TTL <= 1 (the pipeline's rewrite left at least
    // 1): lift it first, set it back after.
    set_ttl(frame, p, p.ttl.max(2))?;
    let r = match side {
        Side::Dst => uvs_fwd::dnat(frame, p, addr, port, mode),
        Side::Src => uvs_fwd::snat(frame, p, addr, port, mode),
    };
    r.ok()?;
    set_ttl(frame, p, p.ttl)?;
    Some(match side {
        Side::Dst => Parsed {
            dst: addr,
            dport: port,
            ..*p
        },
        Side::Src => Parsed {
            src: addr,
            sport: port,
            ..*p
        },
    })
}

/// Writes the IPv4 TTL (header checksum updated) or IPv6 hop limit.
fn set_ttl(frame: &mut [u8], p: &Parsed, ttl: u8) -> Option<()> {
    let l3 = p.l3_off;
    if p.is_ipv4() {
        let old = u16::from_be_bytes([*frame.get(l3 + 8)?, *frame.get(l3 + 9)?]);
        let new = u16::from(ttl) << 8 | (old & 0xff);
        let c = u16::from_be_bytes([*frame.get(l3 + 10)?, *frame.get(l3 + 11)?]);
        let c = uvs_fwd::checksum::update16(c, old, new);
        frame[l3 + 8] = ttl;
        frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    } else {
        *frame.get_mut(l3 + 7)? = ttl;
    }
    Some(())
}
