//! The nat table's hook entries in the pipeline: the destination half at
//! PREROUTING (and OUTPUT), the source half at POSTROUTING, with the flow
//! recorded in the nat connection table (`tables/natct.rs`).
//!
//! * PREROUTING: a packet of a recorded flow gets its destination rewrite
//!   (DNAT, or a reply's SNAT undone) without a rule walk; a first packet
//!   walks the nat PREROUTING chain (a DNAT rewrites it) and is pending.
//!   Routing is then decided on the new destination.
//! * POSTROUTING, for every packet uvs transmits (IPVS's or the nat
//!   table's own): a recorded flow gets its source rewrite (SNAT, or a
//!   reply's DNAT undone); a pending first packet, as IPVS has rewritten
//!   it, walks the nat POSTROUTING chain and its flow is recorded.
//! * mangle POSTROUTING runs first at POSTROUTING, for every packet uvs
//!   transmits (`Xmit`; tunnelled ones walk it on their outer header in
//!   `tun_out.rs`), so its MARKs reach nat POSTROUTING's `-m mark`; a
//!   DROP there is `drop.filtered`.
//! * A packet of a translated flow that no IPVS function took is
//!   forwarded by uvs (TTL decremented once), not left to the kernel: the
//!   kernel's own copy is kept from it by the guard (`dnat_claims`).
//! * ICMP errors (conntrack's RELATED packets) about a recorded flow are
//!   translated as nf_nat's `nf_nat_icmp_reply_translation` does: the
//!   error belongs to the direction of the quoted packet's inverse, and
//!   at each half it gets that direction's rewrite on its outer header
//!   (PREROUTING: destination; POSTROUTING: source) and the opposite
//!   rewrite on the quoted header (its source address and port; its
//!   destination address and port), so the quote reads as the packet its
//!   receiver sent. The quoted and outer IPv4 header checksums and the
//!   ICMP checksum are recomputed (`uvs_fwd::xmit::icmp::nat_icmp_error`).
//!   The flow's timer does not move. An error whose flow is untranslated
//!   is left as before.
//! * Only when the nat table has a rule (`Ruleset::nat_on`): an empty nat
//!   table costs a packet nothing.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use uvs_conntrack::Tuple;
use uvs_fwd::xmit::icmp::{nat_icmp_error, IcmpNat};
use uvs_fwd::{CsumMode, IpVersion, Parsed};

use super::{is_icmp_error, tuple, xmit_reason, Ctx, Pipeline, Step, Verdict, SCTP, TCP, UDP};
use crate::datapath::hooks::{HookFn, HookPoint, PRI_NAT_DST, PRI_NAT_SRC};
use crate::datapath::stats::{add, DropReason, WorkerStats};
use crate::datapath::tables::nat::{NatKind, MASQ_PORTS, SNAT_PORTS};
use crate::datapath::tables::natct::{Mapping, NatDir, NatError, NatHit, Pending, Seen, SrcNat};
use crate::datapath::tables::{CtState, Pkt, Ruleset, TableId, TableVerdict};

/// What the nat entries know of a packet's flow.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct NatCtx {
    /// The recorded flow and the packet's direction in it.
    hit: Option<NatHit>,
    /// A first packet's facts, until POSTROUTING records its flow.
    pending: Option<Pending>,
    /// The flow is translated: uvs sends the packet.
    pub(super) owned: bool,
    /// The destination a DNAT replaced (for ICMP errors about the packet).
    dnat_from: Option<(IpAddr, u16)>,
    /// An ICMP error's flow (the one its quote belongs to) and the
    /// error's direction in it.
    related: Option<NatHit>,
}

impl NatCtx {
    /// `--ctstate` bits of a recorded flow: ESTABLISHED with SNAT/DNAT.
    pub(super) fn ct_bits(&self) -> u8 {
        self.hit.map_or(0, |h| {
            CtState::ESTABLISHED
                | if h.m.snat.is_some() { CtState::SNAT } else { 0 }
                | if h.m.dnat.is_some() { CtState::DNAT } else { 0 }
        })
    }
}

/// A mapping as `uvs trace` shows it (formatted only when tracing).
struct MapText<'a>(&'static str, &'a Mapping, NatDir);

impl fmt::Display for MapText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (m, o) = (self.1, self.1.orig);
        write!(
            f,
            "nat: {} {} -> {}",
            self.0,
            SocketAddr::new(o.src, o.sport),
            SocketAddr::new(o.dst, o.dport)
        )?;
        if let Some((a, p)) = m.dnat {
            write!(f, " DNAT to {}", SocketAddr::new(a, p))?;
        }
        if let Some((a, p)) = m.snat {
            write!(f, " SNAT to {}", SocketAddr::new(a, p))?;
        }
        if m.dnat.is_none() && m.snat.is_none() {
            f.write_str(" untranslated")?;
        }
        if self.2 == NatDir::Reply {
            f.write_str(" (reply)")?;
        }
        Ok(())
    }
}

/// The nat key an ICMP error's flow is found by: the inverse of its
/// quoted packet's tuple (`None` when the quote has no ports).
fn related_key(frame: &[u8], p: &Parsed) -> Option<(uvs_fwd::Embedded, Tuple)> {
    let emb = uvs_fwd::embedded(frame, p).ok()?;
    if !emb.has_ports || !matches!(emb.proto, TCP | UDP | SCTP) {
        return None;
    }
    let key = Tuple {
        proto: emb.proto,
        src: emb.dst,
        sport: emb.dport,
        dst: emb.src,
        dport: emb.sport,
    };
    Some((emb, key))
}

/// One half of an ICMP error's translation: the outer destination
/// (`outer_dst`; else the outer source) becomes `to`'s address, the quoted
/// header's opposite side `to` (address and port), every checksum fixed; the TTL is left as it was (the forward
/// decrements it once). `cur` is the packet as it now is.
fn icmp_half(
    frame: &mut [u8],
    cur: &mut Parsed,
    outer_dst: bool,
    (a, port): (IpAddr, u16),
    csum: CsumMode,
) -> Result<(), DropReason> {
    let emb = uvs_fwd::embedded(frame, cur).map_err(|_| DropReason::Rewrite)?;
    let nat = if outer_dst {
        IcmpNat::to_server(a, port)
    } else {
        IcmpNat::to_client(a, port)
    };
    nat_icmp_error(frame, cur, &emb, &nat, csum).map_err(|e| xmit_reason(&e))?;
    ttl_add(frame, cur, 1);
    // Outer and quoted headers both changed: parsed again (errors only).
    *cur = uvs_fwd::parse(frame).map_err(|_| DropReason::Rewrite)?;
    Ok(())
}

/// The nat chain of a destination manipulation at `point` (the trace's
/// name for it).
fn dst_chain(point: HookPoint) -> &'static str {
    if point == HookPoint::LocalOut {
        "OUTPUT"
    } else {
        "PREROUTING"
    }
}

fn seen(p: &Parsed) -> Seen {
    Seen {
        tcp_flags: if p.proto == TCP { p.tcp_flags } else { 0 },
    }
}

fn pkt(p: &Parsed) -> Pkt {
    Pkt {
        proto: p.proto,
        src: p.src,
        dst: p.dst,
        sport: p.sport,
        dport: p.dport,
        has_ports: p.has_ports(),
        len: p.ip_len as u32,
    }
}

/// Adds `delta` to the TTL (hop limit), keeping the IPv4 header checksum
/// (RFC 1624); false when it would leave 1..=255.
fn ttl_add(frame: &mut [u8], p: &Parsed, delta: i16) -> bool {
    let v4 = p.version == IpVersion::V4;
    let at = p.l3_off + if v4 { 8 } else { 7 };
    let Some(&old) = frame.get(at) else {
        return false;
    };
    let new = i16::from(old) + delta;
    if !(1..=255).contains(&new) {
        return false;
    }
    let new = new as u8;
    frame[at] = new;
    if v4 {
        let c = p.l3_off + 10;
        let Some(&[hi, lo]) = frame
            .get(c..c + 2)
            .and_then(|s| <&[u8; 2]>::try_from(s).ok())
        else {
            return false;
        };
        let proto = frame[at + 1];
        let (m, m2) = (
            u32::from(u16::from_be_bytes([old, proto])),
            u32::from(u16::from_be_bytes([new, proto])),
        );
        let mut sum = u32::from(!u16::from_be_bytes([hi, lo])) + (!m & 0xffff) + m2;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        frame[c..c + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    }
    true
}

/// Rewrites the destination (`dst`) or source of `cur` in `frame`,
/// leaving the TTL as it was (the forward decrements it once).
fn rewrite(
    frame: &mut [u8],
    cur: &mut Parsed,
    dst: bool,
    (a, port): (IpAddr, u16),
    csum: CsumMode,
) -> Result<(), DropReason> {
    let r = if dst {
        uvs_fwd::dnat(frame, cur, a, port, csum)
    } else {
        uvs_fwd::snat(frame, cur, a, port, csum)
    };
    r.map_err(|e| xmit_reason(&e))?;
    ttl_add(frame, cur, 1);
    if dst {
        cur.dst = a;
        cur.dport = port;
    } else {
        cur.src = a;
        cur.sport = port;
    }
    Ok(())
}

impl Pipeline {
    /// The nat table's destination half (PREROUTING, OUTPUT).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn nat_dst(
        &self,
        tables: &Ruleset,
        point: HookPoint,
        frame: &mut [u8],
        cur: &mut Parsed,
        csum: CsumMode,
        now: u64,
        ctx: &mut Ctx,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> Step {
        if is_icmp_error(cur) {
            return self.nat_icmp_dst(point, frame, cur, csum, now, ctx, st, out);
        }
        if !cur.has_ports() || ctx.nat.hit.is_some() {
            return Step::Continue;
        }
        let t = tuple(cur);
        let to = match self.nat.lookup(&t, seen(cur), now) {
            Some(hit) => {
                ctx.nat.hit = Some(hit);
                ctx.nat.owned = hit.m.dnat.is_some() || hit.m.snat.is_some();
                crate::datapath::trace::rule(
                    point,
                    PRI_NAT_DST,
                    "nat",
                    dst_chain(point),
                    0,
                    &MapText("existing mapping", &hit.m, hit.dir),
                    "FOLLOW",
                );
                match hit.m.dst_manip(hit.dir) {
                    Some(to) => to,
                    None => return Step::Continue,
                }
            }
            None => {
                let k = pkt(cur);
                let mut mark = ctx.mark;
                let mut facts = None;
                let v = {
                    let f: &[u8] = frame;
                    let p: &Parsed = cur;
                    let mut ct =
                        || *facts.get_or_insert_with(|| self.ct_facts(f, p, now, false, ctx));
                    let seen = crate::datapath::tables::Seen::new(f, p, now);
                    tables.run_seen(TableId::Nat, point, &k, &seen, &mut mark, &mut ct)
                };
                ctx.mark = mark;
                let dnat = match v {
                    TableVerdict::Nat(n) if n.kind == NatKind::Dnat => match (n.addr, n.ports) {
                        (Some(a), None) => Some((a, cur.dport)),
                        (Some(a), Some((lo, hi))) if lo == hi => Some((a, lo)),
                        (Some(a), Some(r)) => match self.nat.dnat_port(&t, a, r, n.pick, now) {
                            Some(port) => Some((a, port)),
                            None => return Self::drop(st, DropReason::NatNoPort, out),
                        },
                        (None, _) => None,
                    },
                    _ => None,
                };
                ctx.nat.pending = Some(Pending {
                    orig: t,
                    dnat,
                    out: t,
                });
                match dnat {
                    Some(to) => {
                        ctx.nat.owned = true;
                        to
                    }
                    None => return Step::Continue,
                }
            }
        };
        if ctx.nat.hit.is_none_or(|h| h.dir == NatDir::Original) {
            ctx.nat.dnat_from = Some((cur.dst, cur.dport));
        }
        if let Err(r) = rewrite(frame, cur, true, to, csum) {
            return Self::drop(st, r, out);
        }
        // The connection table is asked again, with the new tuple.
        ctx.looked_up = false;
        ctx.hit = None;
        Step::Continue
    }

    /// The destination half for an ICMP error (module doc): its flow
    /// found, the outer destination and the quoted source rewritten.
    #[allow(clippy::too_many_arguments)]
    #[cold]
    fn nat_icmp_dst(
        &self,
        point: HookPoint,
        frame: &mut [u8],
        cur: &mut Parsed,
        csum: CsumMode,
        now: u64,
        ctx: &mut Ctx,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> Step {
        if ctx.nat.related.is_some() {
            return Step::Continue;
        }
        let Some(hit) = related_key(frame, cur).and_then(|(_, k)| self.nat.peek(&k, now)) else {
            return Step::Continue;
        };
        ctx.nat.related = Some(hit);
        if hit.m.dnat.is_none() && hit.m.snat.is_none() {
            return Step::Continue;
        }
        ctx.nat.owned = true;
        crate::datapath::trace::rule(
            point,
            PRI_NAT_DST,
            "nat",
            dst_chain(point),
            0,
            &MapText("ICMP error related to mapping", &hit.m, hit.dir),
            "FOLLOW",
        );
        let Some(to) = hit.m.dst_manip(hit.dir) else {
            return Step::Continue;
        };
        if let Err(r) = icmp_half(frame, cur, true, to, csum) {
            return Self::drop(st, r, out);
        }
        Step::Continue
    }

    /// Whether an ICMP error is about a flow the nat table records
    /// (`--ctstate RELATED`).
    pub(super) fn nat_related(&self, frame: &[u8], p: &Parsed, now: u64, ctx: &Ctx) -> bool {
        ctx.nat.related.is_some()
            || related_key(frame, p).is_some_and(|(_, k)| self.nat.held(&k, now))
    }

    /// The nat table's source half, for a packet uvs transmits (`out` an
    /// `Xmit`): the recorded rewrite, or a first packet's walk of nat
    /// POSTROUTING and its flow recorded.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn nat_post(
        &self,
        tables: &Ruleset,
        frame: &mut [u8],
        csum: CsumMode,
        now: u64,
        ctx: &mut Ctx,
        st: &WorkerStats,
        out: &mut Verdict,
    ) {
        let Verdict::Xmit { pkt: p, .. } = out else {
            return;
        };
        let mut cur = *p;
        // `-o` at POSTROUTING routes the next hop (DR: the real server).
        if tables.needs_routes {
            crate::datapath::tables::route::set_next_hop_of(out);
        }
        if tables.active(TableId::Mangle, HookPoint::PostRouting)
            && !self.mangle_post(tables, frame, &cur, now, ctx, st, out)
        {
            return;
        }
        if !tables.nat_on {
            return;
        }
        if is_icmp_error(&cur) {
            // An error's source half: its flow's, found at PREROUTING.
            let Some(to) = ctx.nat.related.and_then(|h| h.m.src_manip(h.dir)) else {
                return;
            };
            if let Err(r) = icmp_half(frame, &mut cur, false, to, csum) {
                return Self::nat_drop(st, r, out);
            }
            if let Verdict::Xmit { pkt, .. } = out {
                *pkt = cur;
            }
            return;
        }
        if !cur.has_ports() {
            return;
        }
        for e in self.hooks.at(HookPoint::PostRouting) {
            if e.func == HookFn::NatSrc {
                add(&st.hook_seen[e.index], 1);
            }
        }
        let to = if let Some(hit) = ctx.nat.hit {
            hit.m.src_manip(hit.dir)
        } else if let Some(mut pend) = ctx.nat.pending.take() {
            pend.out = tuple(&cur);
            let src = match self.nat_src_walk(tables, frame, &cur, now, ctx) {
                Ok(s) => s,
                Err(r) => return Self::nat_drop(st, r, out),
            };
            let translated = src.is_some() || pend.dnat.is_some();
            match self.nat.confirm(&pend, src, seen(&cur), now) {
                Ok(hit) => {
                    crate::datapath::trace::rule(
                        HookPoint::PostRouting,
                        PRI_NAT_SRC,
                        "nat",
                        "POSTROUTING",
                        0,
                        &MapText("new mapping", &hit.m, hit.dir),
                        if hit.m.snat.is_some() {
                            "SNAT"
                        } else {
                            "RECORD"
                        },
                    );
                    hit.m.snat
                }
                // An untranslated flow is walked again next time.
                Err(_) if !translated => None,
                Err(NatError::Full) => return Self::nat_drop(st, DropReason::NatTableFull, out),
                Err(NatError::NoPort) => return Self::nat_drop(st, DropReason::NatNoPort, out),
            }
        } else {
            None
        };
        let Some(to) = to else {
            return;
        };
        if let Err(r) = rewrite(frame, &mut cur, false, to, csum) {
            return Self::nat_drop(st, r, out);
        }
        if let Verdict::Xmit { pkt, .. } = out {
            *pkt = cur;
        }
    }

    /// mangle POSTROUTING, for every packet uvs sends, before nat
    /// POSTROUTING (as the kernel's priorities order them): its MARKs are
    /// what nat POSTROUTING's `-m mark` sees. False when it dropped the
    /// packet.
    #[allow(clippy::too_many_arguments)]
    #[cold]
    fn mangle_post(
        &self,
        tables: &Ruleset,
        frame: &[u8],
        cur: &Parsed,
        now: u64,
        ctx: &mut Ctx,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> bool {
        for e in self.hooks.at(HookPoint::PostRouting) {
            if e.func == HookFn::Mangle {
                add(&st.hook_seen[e.index], 1);
            }
        }
        let k = Pkt {
            has_ports: matches!(cur.proto, TCP | UDP | SCTP) && cur.has_ports(),
            ..pkt(cur)
        };
        let mut mark = ctx.mark;
        let icmp = is_icmp_error(cur);
        let mut facts = None;
        let mut ct = || *facts.get_or_insert_with(|| self.ct_facts(frame, cur, now, icmp, ctx));
        let seen = crate::datapath::tables::Seen::new(frame, cur, now);
        let v = tables.run_seen(
            TableId::Mangle,
            HookPoint::PostRouting,
            &k,
            &seen,
            &mut mark,
            &mut ct,
        );
        ctx.mark = mark;
        match v {
            TableVerdict::Accept | TableVerdict::Nat(_) => true,
            TableVerdict::Drop | TableVerdict::Reject => {
                Self::nat_drop(st, DropReason::Filtered, out);
                false
            }
        }
    }

    /// nat POSTROUTING for a first packet: its source half.
    fn nat_src_walk(
        &self,
        tables: &Ruleset,
        frame: &[u8],
        cur: &Parsed,
        now: u64,
        ctx: &mut Ctx,
    ) -> Result<Option<SrcNat>, DropReason> {
        let k = pkt(cur);
        let mut mark = ctx.mark;
        let mut facts = None;
        let mut ct = || *facts.get_or_insert_with(|| self.ct_facts(frame, cur, now, false, ctx));
        let seen = crate::datapath::tables::Seen::new(frame, cur, now);
        let v = tables.run_seen(
            TableId::Nat,
            HookPoint::PostRouting,
            &k,
            &seen,
            &mut mark,
            &mut ct,
        );
        ctx.mark = mark;
        let TableVerdict::Nat(n) = v else {
            return Ok(None);
        };
        let addr = match n.addr {
            Some(a) => a,
            None => tables
                .local
                .masq_addr(cur.dst)
                .ok_or(DropReason::NatNoAddress)?,
        };
        let ports = n.ports.unwrap_or(match n.kind {
            NatKind::Masquerade => MASQ_PORTS,
            _ if cur.sport < 1024 => (1, 1023),
            _ => SNAT_PORTS,
        });
        Ok(Some(SrcNat {
            addr,
            ports,
            pick: n.pick,
            masq: n.kind == NatKind::Masquerade,
        }))
    }

    fn nat_drop(st: &WorkerStats, r: DropReason, out: &mut Verdict) {
        st.drop(r);
        *out = Verdict::Drop(r);
    }

    /// A translated flow's packet that no IPVS function took: uvs forwards
    /// it toward its (new) destination.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn nat_forward(
        &self,
        tables: &Ruleset,
        frame: &mut [u8],
        cur: &Parsed,
        csum: CsumMode,
        now: u64,
        ctx: &mut Ctx,
        st: &WorkerStats,
        out: &mut Verdict,
    ) {
        if !ttl_add(frame, cur, -1) {
            st.drop(DropReason::TtlExceeded);
            *out = Verdict::Reject {
                reason: DropReason::TtlExceeded,
                pkt: *cur,
            };
            return;
        }
        *out = Verdict::Xmit {
            next_hop: cur.dst,
            dnat_from: ctx.nat.dnat_from,
            snat_from: None,
            pkt: *cur,
        };
        self.nat_post(tables, frame, csum, now, ctx, st, out);
    }
}

#[cfg(test)]
#[path = "nat_tests.rs"]
mod tests;
