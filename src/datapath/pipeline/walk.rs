//! The hook walk at a packet's hook point: the plan's entries in order
//! (PRE_ROUTING's tables, then the point's filter, tables and IPVS
//! entries), the filter and emulated-tables hooks, and the conntrack facts
//! their matches ask for.

use uvs_conntrack::{Dir, Tuple};
use uvs_fwd::{CsumMode, Parsed};
use uvs_sched::FwdMethod;

use super::{is_icmp_error, local_out, Ctx, Pipeline, Step, Verdict, View, SCTP, TCP, UDP};
use crate::datapath::filter::{FilterKey, FilterTable, Target};
use crate::datapath::hooks::{HookFn, HookPoint, Plan};
use crate::datapath::stats::{add, DropReason, WorkerStats};
use crate::datapath::tables::{Ruleset, TableId};

impl Pipeline {
    /// The hook chain at the packet's hook point: the entries of `plan`
    /// (those that can act under this configuration).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn hooks_run(
        &self,
        frame: &mut [u8],
        p: &Parsed,
        icmp_error: bool,
        csum: CsumMode,
        now_ms: u64,
        services: &View<'_>,
        filter: &FilterTable,
        tables: &Ruleset,
        plan: &Plan,
        ctx: &mut Ctx,
        st: &WorkerStats,
        out: &mut Verdict,
    ) {
        let mut point = ctx.point;
        // The packet as the nat table has rewritten it (a copy of `p`
        // until then).
        let mut cur = *p;
        // PRE_ROUTING (the tables' entries only): before the routing
        // decision, so a MARK can route a packet to a fwmark service.
        // Locally sent packets start at LOCAL_OUT, not PRE_ROUTING.
        let pre = plan.at(HookPoint::PreRouting);
        if !pre.is_empty() && point != HookPoint::LocalOut {
            for e in pre {
                add(&st.hook_seen[e.index as usize], 1);
                let step = match e.func {
                    HookFn::NatDst if tables.nat_on => self.nat_dst(
                        tables,
                        HookPoint::PreRouting,
                        frame,
                        &mut cur,
                        csum,
                        now_ms,
                        ctx,
                        st,
                        out,
                    ),
                    _ => self.tables_hook(
                        tables,
                        e.func,
                        HookPoint::PreRouting,
                        frame,
                        &cur,
                        now_ms,
                        ctx,
                        st,
                        out,
                    ),
                };
                if step == Step::Done {
                    return Self::hook_done(e.index as usize, &cur, st, out);
                }
            }
            // DNAT (or a reply's un-SNAT) changed the destination: the
            // routing decision is made on the new one.
            if cur.dst != p.dst && point != HookPoint::LocalOut {
                point = local_out::route(false, services.services.is_vip(cur.dst));
                ctx.point = point;
            }
            // A fwmark service's traffic is the director's own (as with
            // the `ip rule fwmark ... lookup local` its kernel setup needs).
            if point == HookPoint::Forward
                && ctx.mark != 0
                && services
                    .services
                    .find_fwmark(!p.is_ipv4(), ctx.mark)
                    .is_some()
            {
                point = HookPoint::LocalIn;
                ctx.point = point;
            }
        }
        for e in plan.at(point) {
            add(&st.hook_seen[e.index as usize], 1);
            let p = &cur;
            let step = match e.func {
                // DNAT of local packets (nat OUTPUT); nat INPUT has no
                // translation uvs applies (parse refuses SNAT there).
                HookFn::NatDst if tables.nat_on => {
                    self.nat_dst(tables, point, frame, &mut cur, csum, now_ms, ctx, st, out)
                }
                HookFn::NatSrc if tables.nat_on => Step::Continue,
                HookFn::Mangle | HookFn::NatDst | HookFn::NatSrc => {
                    self.tables_hook(tables, e.func, point, frame, p, now_ms, ctx, st, out)
                }
                HookFn::Filter => match Self::filter_hook(filter, point, p, st, out) {
                    Step::Continue => {
                        self.tables_hook(tables, e.func, point, frame, p, now_ms, ctx, st, out)
                    }
                    s => s,
                },
                HookFn::IpvsReply | HookFn::IpvsLocalReply if icmp_error => Step::Continue,
                HookFn::IpvsReply | HookFn::IpvsLocalReply => {
                    self.ipvs_reply(frame, p, csum, now_ms, ctx, st, out)
                }
                HookFn::IpvsRequest | HookFn::IpvsLocalRequest if icmp_error => {
                    self.ipvs_icmp(frame, p, csum, now_ms, Dir::In, services, st, out)
                }
                HookFn::IpvsRequest | HookFn::IpvsLocalRequest => {
                    self.ipvs_request(frame, p, csum, now_ms, services, ctx, st, out)
                }
                HookFn::IpvsForwardIcmp if icmp_error => {
                    self.ipvs_icmp(frame, p, csum, now_ms, Dir::Out, services, st, out)
                }
                HookFn::IpvsForwardIcmp => Step::Continue,
            };
            if step == Step::Done {
                if tables.post_routing_on() {
                    self.nat_post(tables, frame, csum, now_ms, ctx, st, out);
                }
                Self::hook_done(e.index as usize, &cur, st, out);
                // IPVS took it (counted above); a tunnel's outer packet then
                // meets LOCAL_OUT and POST_ROUTING (`tun_out.rs`).
                if matches!(out, Verdict::Tunnel { .. }) && tables.tunnel_walk_on() {
                    self.tunnel_out(tables, frame, csum, now_ms, ctx, st, out);
                }
                return;
            }
        }
        // A packet the nat table translates is uvs's to send.
        if tables.nat_on && ctx.nat.owned {
            return self.nat_forward(tables, frame, &cur, csum, now_ms, ctx, st, out);
        }
        *out = self.pass(st);
    }

    /// Counts what entry `index` decided and turns drops that owe the
    /// sender an ICMP error into rejects.
    #[inline(always)]
    pub(super) fn hook_done(index: usize, p: &Parsed, st: &WorkerStats, out: &mut Verdict) {
        match *out {
            Verdict::Xmit { .. } | Verdict::Tunnel { .. } => add(&st.hook_stolen[index], 1),
            Verdict::Drop(r) => {
                add(&st.hook_dropped[index], 1);
                if let DropReason::NoDestination | DropReason::TtlExceeded = r {
                    *out = Verdict::Reject { reason: r, pkt: *p };
                }
            }
            Verdict::Reject { .. } => add(&st.hook_dropped[index], 1),
            Verdict::Pass => {}
        }
    }

    /// The emulated tables' entry `func` at `point` (see `tables/`).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn tables_hook(
        &self,
        tables: &Ruleset,
        func: HookFn,
        point: HookPoint,
        frame: &[u8],
        p: &Parsed,
        now: u64,
        ctx: &mut Ctx,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> Step {
        let id = match func {
            HookFn::Mangle => TableId::Mangle,
            HookFn::NatDst | HookFn::NatSrc => TableId::Nat,
            _ => TableId::Filter,
        };
        if !tables.active(id, point) {
            return Step::Continue;
        }
        let k = crate::datapath::tables::Pkt {
            proto: p.proto,
            src: p.src,
            dst: p.dst,
            sport: p.sport,
            dport: p.dport,
            has_ports: matches!(p.proto, TCP | UDP | SCTP) && p.has_ports(),
            len: p.ip_len as u32,
        };
        let mut mark = ctx.mark;
        let icmp_error = is_icmp_error(p);
        let mut facts = None;
        let mut ct = || *facts.get_or_insert_with(|| self.ct_facts(frame, p, now, icmp_error, ctx));
        let seen = crate::datapath::tables::Seen::new(frame, p, now);
        let v = tables.run_seen(id, point, &k, &seen, &mut mark, &mut ct);
        ctx.mark = mark;
        use crate::datapath::tables::TableVerdict as T;
        match v {
            // Only the nat table has nat targets (`nat_dst`, `nat_post`).
            T::Accept | T::Nat(_) => Step::Continue,
            T::Drop => Self::drop(st, DropReason::Filtered, out),
            T::Reject => {
                st.drop(DropReason::Filtered);
                Self::done(
                    out,
                    Verdict::Reject {
                        reason: DropReason::Filtered,
                        pkt: *p,
                    },
                )
            }
        }
    }

    /// `-m conntrack` / `-m ipvs` facts from uvs's connection table (the
    /// lookup the IPVS entries would make anyway, done once).
    pub(super) fn ct_facts(
        &self,
        frame: &[u8],
        p: &Parsed,
        now: u64,
        icmp_error: bool,
        ctx: &mut Ctx,
    ) -> crate::datapath::tables::CtFacts {
        use crate::datapath::tables::{CtFacts, CtState, IpvsFacts};
        if icmp_error {
            let related = uvs_fwd::embedded(frame, p).ok().is_some_and(|emb| {
                let inner = Tuple {
                    proto: emb.proto,
                    src: emb.src,
                    sport: emb.sport,
                    dst: emb.dst,
                    dport: emb.dport,
                };
                emb.has_ports && self.conns.lookup_related(&inner).is_some()
            }) || self.nat_related(frame, p, now, ctx);
            let state = if related {
                CtState::RELATED
            } else {
                CtState::INVALID
            };
            return CtFacts { state, ipvs: None };
        }
        let nat_bits = ctx.nat.ct_bits();
        let mut f = match self.lookup(frame, p, now, ctx) {
            Some((h, dir, _)) => CtFacts {
                // IPVS's NAT forwarding is recorded in the kernel's
                // conntrack entry as a DNAT.
                state: CtState::ESTABLISHED
                    | if h.fwd() == FwdMethod::Masq {
                        CtState::DNAT
                    } else {
                        0
                    },
                ipvs: Some(IpvsFacts {
                    vaddr: h.vaddr(),
                    vport: h.vport(),
                    vproto: p.proto,
                    method: h.fwd(),
                    original: *dir == Dir::In,
                }),
            },
            // A flow only the nat table tracks is established once seen.
            None if nat_bits != 0 => CtFacts {
                state: CtState::ESTABLISHED,
                ipvs: None,
            },
            None => CtFacts {
                state: CtState::NEW,
                ipvs: None,
            },
        };
        f.state |= nat_bits & !CtState::ESTABLISHED;
        f
    }

    #[inline(always)]
    pub(super) fn filter_hook(
        filter: &FilterTable,
        point: HookPoint,
        p: &Parsed,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> Step {
        // No rules (the usual case): ACCEPT without building a key.
        if filter.rules().is_empty() {
            return Step::Continue;
        }
        let k = FilterKey {
            proto: p.proto,
            src: p.src,
            dst: p.dst,
            sport: p.sport,
            dport: p.dport,
        };
        match filter.check(point, &k) {
            Target::Accept => Step::Continue,
            Target::Drop => Self::drop(st, DropReason::Filtered, out),
        }
    }
}
