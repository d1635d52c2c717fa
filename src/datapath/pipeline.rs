//! The packet pipeline without I/O: parse → hook chain (filter, IPVS reply,
//! IPVS request) → connection table → scheduler → NAT rewrite. A worker
//! calls [`Pipeline::process`] on each frame in place and transmits what it
//! returns; benchmarks and tests call it on buffers directly.
//!
//! Established flows touch: one parse, this thread's copy of the
//! configuration snapshots (two plain loads to check their generations, see
//! `snapshot.rs`), one connection lookup and state update under one shard
//! lock (requests probe the request side; packets not addressed to a VIP
//! only the reply side), and an in-place rewrite. No allocation, no global
//! lock, no syscall, and no write to a shared reference count: the lookup
//! returns a plain copy ([`uvs_conntrack::Hit`]), not an `Arc<Dest>`.

use std::net::IpAddr;
use std::sync::Arc;

use std::cell::RefCell;

use uvs_conntrack::{Dir, Hit, InsertError, NewConn, PacketInfo, Table, Tuple, Update};
use uvs_fwd::xmit::icmp::{nat_icmp_error, IcmpNat};
use uvs_fwd::{CsumMode, ParseError, Parsed};
use uvs_sched::{FwdMethod, SchedKey, TunConfig};

use crate::datapath::filter::{FilterKey, FilterTable, Target};
use crate::datapath::frag6;
use crate::datapath::hooks::{HookChain, HookFn, HookPoint, Plan};
use crate::datapath::service::{Pe, ServiceRt, Services};
use crate::datapath::snapshot::{Cached, Snapshot};
use crate::datapath::stats::{add, DropReason, WorkerStats};
use crate::datapath::tables::{Ruleset, TableId};
use crate::datapath::trace::Tracer;

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;

/// What to do with a frame after processing. Every variant that leads to
/// a transmission carries the packet's parse as it is *after* the rewrite
/// (`pkt`: addresses and ports as rewritten, `ttl` as received), so the
/// egress stage never parses again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not uvs's packet: leave it to the kernel (which also received it).
    Pass,
    /// Dropped, for this reason (already counted).
    Drop(DropReason),
    /// Dropped (counted), and the sender is owed an ICMP error: port
    /// unreachable for `NoDestination`, time exceeded for `TtlExceeded`.
    /// The frame is unchanged; `pkt` is its parse.
    Reject { reason: DropReason, pkt: Parsed },
    /// Rewritten in place; send it toward `next_hop` (the address whose
    /// route and neighbour give the interface and MACs). `dnat_from` is the
    /// destination a NAT request had before its rewrite, so an ICMP error
    /// about it (path MTU) can quote the packet as the client sent it;
    /// `snat_from` is the source a NAT reply had before its rewrite (the
    /// real server's address and port), so a path MTU error about it goes
    /// back to the real server, as the kernel checks the MTU before SNAT.
    Xmit {
        next_hop: IpAddr,
        dnat_from: Option<(IpAddr, u16)>,
        snat_from: Option<(IpAddr, u16)>,
        pkt: Parsed,
    },
    /// To be encapsulated toward the real server `next_hop` (`-i`); the
    /// egress stage does it, since the outer source and the path MTU come
    /// with the route it resolves. The frame is unchanged.
    Tunnel {
        next_hop: IpAddr,
        tun: TunConfig,
        pkt: Parsed,
    },
}

/// This thread's copies of the snapshots, one generation each.
struct ThreadSnapshots {
    services: Cached<Services>,
    filter: Cached<FilterTable>,
    tables: Cached<Ruleset>,
    vips: Vips,
    plan: plan::Cached,
    /// The established-flow cache (`fast.rs`).
    fast: fast::FlowCache,
}

thread_local! {
    static SNAPSHOTS: RefCell<ThreadSnapshots> = const {
        RefCell::new(ThreadSnapshots {
            services: Cached::EMPTY,
            filter: Cached::EMPTY,
            tables: Cached::EMPTY,
            vips: Vips::EMPTY,
            plan: plan::Cached::EMPTY,
            fast: fast::FlowCache::EMPTY,
        })
    };
}

/// Most virtual addresses [`Vips`] lists inline.
const SMALL_VIPS: usize = 8;

/// The service lookup of one services generation: the services themselves
/// when a configuration has at most [`SMALL_VIPS`] services (a few compares
/// instead of a map probe per new connection), else the snapshot's map.
/// Derived per thread when the generation moves, in time bounded by
/// `SMALL_VIPS` whatever the number of services. (The route decision, "is
/// this a VIP?", is the snapshot's flat set at any size.)
struct Vips {
    /// Generation of the services snapshot this was derived from (0: none).
    gen: u64,
    small: bool,
    /// The services, when `small` (their count is `svcs_n`).
    svcs: [Option<Arc<ServiceRt>>; SMALL_VIPS],
    svcs_n: usize,
}

impl Vips {
    const EMPTY: Vips = Vips {
        gen: 0,
        small: false,
        svcs: [const { None }; SMALL_VIPS],
        svcs_n: 0,
    };

    /// Brings the list to `services` of generation `gen`.
    #[inline(always)]
    fn follow(&mut self, gen: u64, services: &Services) {
        if self.gen != gen {
            self.derive(gen, services);
        }
    }

    #[cold]
    #[inline(never)]
    fn derive(&mut self, gen: u64, services: &Services) {
        self.gen = gen;
        self.svcs_n = 0;
        self.svcs = [const { None }; SMALL_VIPS];
        self.small = services.len() <= SMALL_VIPS;
        if !self.small {
            return;
        }
        for svc in services.iter() {
            if svc.proto == crate::datapath::service::FWMARK {
                continue;
            }
            self.svcs[self.svcs_n] = Some(Arc::clone(svc));
            self.svcs_n += 1;
        }
    }

    /// [`Services::find`]: the exact service, else the address's port-0
    /// service.
    #[inline]
    fn find<'a>(
        &'a self,
        services: &'a Services,
        proto: u8,
        addr: IpAddr,
        port: u16,
    ) -> Option<&'a Arc<ServiceRt>> {
        if !self.small {
            return services.find(proto, addr, port);
        }
        let list = self.svcs[..self.svcs_n].iter().flatten();
        let exact = |want: u16| {
            list.clone()
                .find(|s| s.port == want && s.proto == proto && s.addr == addr)
        };
        exact(port).or_else(|| if port == 0 { None } else { exact(0) })
    }
}

/// The services as this packet sees them: the snapshot and this thread's
/// small-configuration copy of it.
struct View<'a> {
    services: &'a Services,
    small: &'a Vips,
}

/// What one hook function decided. `Done`'s verdict is written into the
/// caller's slot rather than returned, so the large [`Verdict`] is built
/// once, in place, and never moved through the chain.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Continue,
    Done,
}

/// Everything the workers share: read-mostly configuration snapshots and
/// the connection table.
#[derive(Debug)]
pub struct Pipeline {
    pub services: Snapshot<Services>,
    pub filter: Snapshot<FilterTable>,
    /// The emulated iptables tables (`uvs tables`).
    pub tables: Snapshot<Ruleset>,
    pub conns: Table,
    pub hooks: HookChain,
    /// `uvs trace`: armed while a trace runs (see `trace.rs`).
    pub trace: Tracer,
    /// The nat table's connection tracking (`tables/natct.rs`).
    pub nat: crate::datapath::tables::natct::NatTable,
}

/// The connection lookup and state update, done at most once per packet
/// (one shard lock) even though two hook functions (reply at 98, request at
/// 99) ask for it. At FORWARD (not addressed to a VIP) only the reply side
/// is probed, as the kernel's `ip_vs_out` does.
struct Ctx {
    looked_up: bool,
    point: HookPoint,
    hit: Option<(Hit, Dir, Update)>,
    /// The packet's firewall mark (`skb->mark`), set by MARK rules.
    mark: u32,
    /// The nat table's view of the packet's flow (`pipeline/nat.rs`).
    nat: nat::NatCtx,
}

impl Ctx {
    /// Before the walk at `point`.
    #[inline(always)]
    fn new(point: HookPoint) -> Ctx {
        Ctx {
            looked_up: false,
            point,
            hit: None,
            mark: 0,
            nat: nat::NatCtx::default(),
        }
    }
}

impl Pipeline {
    /// A pipeline with the default hook registrations.
    pub fn new(conns: Table) -> Pipeline {
        Pipeline {
            services: Snapshot::from_pointee(Services::default()),
            filter: Snapshot::from_pointee(FilterTable::default()),
            tables: Snapshot::from_pointee(Ruleset::default()),
            conns,
            hooks: HookChain::default(),
            trace: Tracer::default(),
            nat: Default::default(),
        }
    }

    /// Processes one Ethernet frame in place.
    ///
    /// A thin wrapper over [`Pipeline::process_into`]: its one local is
    /// the returned value, so the verdict is built in the caller's slot
    /// (no copy of the large [`Verdict`] on return).
    #[inline]
    pub fn process(
        &self,
        frame: &mut [u8],
        csum: CsumMode,
        now_ms: u64,
        st: &WorkerStats,
    ) -> Verdict {
        let mut v = Verdict::Pass;
        self.process_into(frame, csum, now_ms, st, &mut v);
        v
    }

    /// [`Pipeline::process`], writing the verdict into `out` (whatever it
    /// held before is overwritten).
    pub fn process_into(
        &self,
        frame: &mut [u8],
        csum: CsumMode,
        now_ms: u64,
        st: &WorkerStats,
        out: &mut Verdict,
    ) {
        self.process_from(frame, csum, now_ms, st, false, out)
    }

    /// [`Pipeline::process_into`] for a frame received (`local_out` false)
    /// or sent by the director's own stack (true: it meets LOCAL_OUT).
    #[inline(always)]
    fn process_from(
        &self,
        frame: &mut [u8],
        csum: CsumMode,
        now_ms: u64,
        st: &WorkerStats,
        local_out: bool,
        out: &mut Verdict,
    ) {
        // Matched by reference: the parse result is not moved again.
        let parsed = uvs_fwd::parse(frame);
        let p = match &parsed {
            Ok(p) => p,
            Err(ParseError::NotIp) => {
                *out = self.pass(st);
                return;
            }
            Err(e) => {
                add(&st.parse[e.index()], 1);
                st.drop(DropReason::Malformed);
                *out = Verdict::Drop(DropReason::Malformed);
                return;
            }
        };
        // TCP and UDP with their headers, and ICMP errors that may be about
        // them, are IPVS's; the rest (non-first fragments, other
        // protocols) stays with the kernel.
        if p.is_fragment && !p.has_l4 {
            *out = self.later_fragment(frame, p, csum, now_ms, st);
            return;
        }
        let icmp_error = is_icmp_error(p);
        if !icmp_error && (!matches!(p.proto, TCP | UDP | SCTP) || !p.has_ports()) {
            *out = self.pass(st);
            return;
        }
        // The snapshots, from this thread's copies (no locked instruction
        // per packet); the shared ones only when the thread has none to
        // lend (re-entered, or being torn down).
        // The thread's copies, reached without a closure so that the chain
        // is inlined here and writes the verdict straight into `out`.
        if let Ok(cell) = SNAPSHOTS.try_with(|c| c as *const RefCell<ThreadSnapshots>) {
            // SAFETY: `cell` points at this thread's `SNAPSHOTS`. `try_with`
            // succeeded, so the thread's TLS destructors have not run, and
            // they cannot run before this function returns (it calls no
            // code that could end the thread); the reference does not
            // outlive this call.
            let cell = unsafe { &*cell };
            if let Ok(mut c) = cell.try_borrow_mut() {
                let ThreadSnapshots {
                    services,
                    filter,
                    tables,
                    vips,
                    plan,
                    fast,
                } = &mut *c;
                // An established flow's packet its way can forward.
                let cacheable = !local_out && !icmp_error;
                if cacheable && fast.forward(self, frame, p, csum, now_ms, st, out) {
                    return;
                }
                let (gen, s) = services.get_gen(&self.services);
                let ((fg, f), (tg, t)) =
                    (filter.get_gen(&self.filter), tables.get_gen(&self.tables));
                vips.follow(gen, s);
                let plan = plan.get((fg, tg), &self.hooks, f, t);
                let point = local_out::route(local_out, s.is_vip(p.dst));
                let view = View {
                    services: s,
                    small: vips,
                };
                let mut ctx = Ctx::new(point);
                self.hooks_run(
                    frame, p, icmp_error, csum, now_ms, &view, f, t, plan, &mut ctx, st, out,
                );
                if cacheable && ctx.hit.is_some() {
                    fast.fill(self, p, (gen, fg, tg), plan, t, &ctx, out, now_ms);
                }
                if p.is_fragment {
                    frag6::note_first(frame, p, out, now_ms);
                }
                return;
            }
        }
        self.process_shared(frame, p, icmp_error, csum, now_ms, st, local_out, out)
    }

    /// [`Pipeline::process`] with the shared snapshots, when this thread
    /// has no copies to lend (re-entered, or being torn down).
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn process_shared(
        &self,
        frame: &mut [u8],
        p: &Parsed,
        icmp_error: bool,
        csum: CsumMode,
        now_ms: u64,
        st: &WorkerStats,
        local_out: bool,
        out: &mut Verdict,
    ) {
        let (s, f) = (self.services.load_full(), self.filter.load_full());
        let t = self.tables.load_full();
        let point = local_out::route(local_out, s.is_vip(p.dst));
        let none = Vips::EMPTY;
        let view = View {
            services: &s,
            small: &none,
        };
        let plan = plan::build(&self.hooks, &f, &t);
        let mut ctx = Ctx::new(point);
        self.hooks_run(
            frame, p, icmp_error, csum, now_ms, &view, &f, &t, &plan, &mut ctx, st, out,
        );
        if p.is_fragment {
            frag6::note_first(frame, p, out, now_ms);
        }
    }

    /// A fragment after the first (IPv4 ones only under AF_XDP: AF_PACKET
    /// reads IPv4 reassembled): what its first fragment got
    /// (`frag6`); without one, dropped if addressed to a VIP, else the
    /// kernel's.
    #[cold]
    #[inline(never)]
    fn later_fragment(
        &self,
        frame: &mut [u8],
        p: &Parsed,
        csum: CsumMode,
        now_ms: u64,
        st: &WorkerStats,
    ) -> Verdict {
        match frag6::follow_later(frame, p, csum, now_ms) {
            Some(Verdict::Drop(r)) => {
                st.drop(r);
                Verdict::Drop(r)
            }
            Some(v) => v,
            None if self.services.load_full().is_vip(p.dst) => {
                st.drop(DropReason::FragmentUnmatched);
                Verdict::Drop(DropReason::FragmentUnmatched)
            }
            None => self.pass(st),
        }
    }

    /// The hook chain at the packet's hook point: the entries of `plan`
    /// (those that can act under this configuration).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn hooks_run(
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
    fn hook_done(index: usize, p: &Parsed, st: &WorkerStats, out: &mut Verdict) {
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
    fn tables_hook(
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
    fn ct_facts(
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

    fn pass(&self, st: &WorkerStats) -> Verdict {
        add(&st.passed, 1);
        Verdict::Pass
    }

    #[inline(always)]
    fn drop(st: &WorkerStats, r: DropReason, out: &mut Verdict) -> Step {
        st.drop(r);
        *out = Verdict::Drop(r);
        Step::Done
    }

    /// Sets the verdict and ends the chain.
    #[inline(always)]
    fn done(out: &mut Verdict, v: Verdict) -> Step {
        *out = v;
        Step::Done
    }

    #[inline(always)]
    fn filter_hook(
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

    #[inline(always)]
    fn lookup<'c>(
        &self,
        frame: &[u8],
        p: &Parsed,
        now: u64,
        ctx: &'c mut Ctx,
    ) -> Option<&'c (Hit, Dir, Update)> {
        if !ctx.looked_up {
            ctx.looked_up = true;
            let (t, info) = (tuple(p), Self::info(frame, p));
            // Written into the context's slot in place (no move of the
            // found copy).
            let out_only = ctx.point == HookPoint::Forward;
            self.conns
                .lookup_update_into(&t, out_only, info, now, &mut ctx.hit);
        }
        ctx.hit.as_ref()
    }

    /// What the state machines need: TCP flags, or the first SCTP chunk's
    /// type (right after the 12-byte common header).
    fn info(frame: &[u8], p: &Parsed) -> PacketInfo {
        let bytes = p.ip_len as u32;
        match p.proto {
            TCP => PacketInfo::tcp(p.tcp_flags, bytes),
            SCTP => PacketInfo::sctp(frame.get(p.l4_off + 12).copied().unwrap_or(0), bytes),
            _ => PacketInfo::udp(bytes),
        }
    }

    /// `ip_vs_reply`: a NAT reply from a real server gets the VIP back as
    /// its source and goes to the client.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn ipvs_reply(
        &self,
        frame: &mut [u8],
        p: &Parsed,
        csum: CsumMode,
        now: u64,
        ctx: &mut Ctx,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> Step {
        let Some((h, Dir::Out, update)) = self.lookup(frame, p, now, ctx) else {
            return Step::Continue;
        };
        if h.fwd() != FwdMethod::Masq {
            return Step::Continue;
        }
        match update {
            Update::Forward => {}
            Update::Drop | Update::Reschedule => {
                return Self::drop(st, DropReason::DestRemoved, out)
            }
        }
        match uvs_fwd::snat(frame, p, h.vaddr(), h.vport(), csum) {
            Ok(()) => {
                st.count_packet(h.stats_tag(), false, p.ip_len);
                *out = Verdict::Xmit {
                    next_hop: h.caddr(),
                    dnat_from: None,
                    snat_from: Some((p.src, p.sport)),
                    pkt: Parsed {
                        src: h.vaddr(),
                        sport: h.vport(),
                        ..*p
                    },
                };
                Step::Done
            }
            Err(e) => Self::drop(st, xmit_reason(&e), out),
        }
    }

    /// An ICMP error quoting a packet of a connection (`ip_vs_in_icmp` for
    /// errors from the client side, `want` = In; `ip_vs_forward_icmp` for
    /// errors from a real server, `want` = Out): NAT rewrites outer and
    /// quoted headers; DR and TUN forward it as the connection's packets.
    /// Errors create connections only under the `schedule_icmp` knob
    /// (`sched.rs`).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn ipvs_icmp(
        &self,
        frame: &mut [u8],
        p: &Parsed,
        csum: CsumMode,
        now: u64,
        want: Dir,
        services: &View<'_>,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> Step {
        let Ok(emb) = uvs_fwd::embedded(frame, p) else {
            return Step::Continue;
        };
        if !emb.has_ports || !matches!(emb.proto, TCP | UDP | SCTP) {
            return Step::Continue;
        }
        let inner = Tuple {
            proto: emb.proto,
            src: emb.src,
            sport: emb.sport,
            dst: emb.dst,
            dport: emb.dport,
        };
        let found = match self.conns.lookup_related(&inner) {
            None if want == Dir::In => match self.schedule_icmp(&inner, p, now, services, st) {
                Ok(f) => f,
                Err(r) => return Self::drop(st, r, out),
            },
            f => f,
        };
        let Some((h, dir)) = found else {
            return Step::Continue;
        };
        if dir != want {
            return Step::Continue;
        }
        if self.conns.update_related(&h, dir, p.ip_len as u32, now) != Update::Forward {
            return Self::drop(st, DropReason::DestRemoved, out);
        }
        st.count_packet(h.dest().stats_tag(), dir == Dir::In, p.ip_len);
        let (nat, next_hop) = match (dir, h.fwd()) {
            (Dir::Out, FwdMethod::Masq) => (IcmpNat::to_client(h.vaddr(), h.vport()), h.caddr()),
            (Dir::In, FwdMethod::Masq) => (IcmpNat::to_server(h.daddr(), h.dport()), h.daddr()),
            (Dir::In, _) => return self.xmit_handle(frame, p, csum, &h, st, out),
            (Dir::Out, _) => return Step::Continue,
        };
        match nat_icmp_error(frame, p, &emb, &nat, csum) {
            // Outer and quoted headers both changed: parse once more here
            // (ICMP errors only), so egress gets the packet as it now is.
            Ok(()) => match uvs_fwd::parse(frame) {
                Ok(pkt) => Self::done(
                    out,
                    Verdict::Xmit {
                        next_hop,
                        dnat_from: None,
                        snat_from: None,
                        pkt,
                    },
                ),
                Err(_) => Self::drop(st, DropReason::Rewrite, out),
            },
            Err(e) => Self::drop(st, xmit_reason(&e), out),
        }
    }

    /// `ip_vs_remote_request`: a packet to a virtual service: an existing
    /// connection's packet is forwarded to its real server; a new one is
    /// scheduled first.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn ipvs_request(
        &self,
        frame: &mut [u8],
        p: &Parsed,
        csum: CsumMode,
        now: u64,
        services: &View<'_>,
        ctx: &mut Ctx,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> Step {
        if let Some((h, Dir::In, update)) = self.lookup(frame, p, now, ctx) {
            match update {
                Update::Forward => {
                    st.count_packet(h.stats_tag(), true, p.ip_len);
                    return self.xmit_request(
                        frame,
                        p,
                        csum,
                        h.fwd(),
                        h.daddr(),
                        h.dport(),
                        h.tun_config(),
                        st,
                        out,
                    );
                }
                Update::Drop => return Self::drop(st, DropReason::DestRemoved, out),
                // A SYN reusing a finished connection's tuple: schedule it
                // afresh below, with this very packet.
                Update::Reschedule => {}
            }
        }
        self.ipvs_schedule(frame, p, csum, now, services, ctx.mark, st, out)
    }

    /// A new connection (or a reused tuple's): find the service, schedule,
    /// insert, forward. Apart from the per-packet path so that path stays
    /// small enough to inline.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn ipvs_schedule(
        &self,
        frame: &mut [u8],
        p: &Parsed,
        csum: CsumMode,
        now: u64,
        services: &View<'_>,
        mark: u32,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> Step {
        // The kernel's order (`ip_vs_service_find`): the packet's mark's
        // service first, then (protocol, address, port), then port 0.
        let by_mark = match mark {
            0 => None,
            m => services.services.find_fwmark(!p.is_ipv4(), m),
        };
        let found = by_mark.or_else(|| {
            services
                .small
                .find(services.services, p.proto, p.dst, p.dport)
        });
        let Some(svc) = found else {
            return Step::Continue;
        };
        let info = Self::info(frame, p);
        if !uvs_conntrack::may_create(p.proto, &info, &self.conns.knobs()) {
            // The kernel would pass this to its own stack, which answers
            // with a RST; uvs owns the VIP and drops it instead.
            return Self::drop(st, DropReason::NoConnection, out);
        }
        // The `drop_packet` flood defence: one load unless engaged.
        if self.conns.drop_new_packet() {
            return Self::drop(st, DropReason::DefenseDropPacket, out);
        }
        let key = SchedKey {
            proto: p.proto,
            src: p.src,
            sport: p.sport,
            dst: p.dst,
            dport: p.dport,
            now_ms: now,
        };
        // A persistence engine adds its key to the template's (`--pe sip`:
        // the Call-ID; a datagram without one cannot be keyed: dropped).
        let pe = match svc.pe {
            None => 0,
            Some(Pe::Sip) => match crate::datapath::pe_sip::template_key(frame, p) {
                Some(k) => k,
                None => return Self::drop(st, DropReason::PeNoCallId, out),
            },
        };
        let (dest, tpl) = match self.pick_dest(svc, &key, pe, mark) {
            Ok(x) => x,
            Err(r) => return Self::drop(st, r, out),
        };
        let fwd = dest.fwd_method();
        let tun = match fwd {
            FwdMethod::Tunnel => dest.tun_config(),
            _ => TunConfig::default(),
        };
        // Port 0 (a port-0 service's server): the client's port.
        let dport = if dest.port == 0 { p.dport } else { dest.port };
        let daddr = dest.addr;
        let tag = dest.stats_tag();
        if svc.one_packet && p.proto == UDP {
            // `-o`: this datagram alone was scheduled; no entry stays (a
            // template used keeps its timer running, as binding would).
            if let Some(t) = &tpl {
                self.conns.touch_template(t, now);
            }
            add(&st.conns, 1);
            st.count_conn(tag);
            st.count_packet(tag, true, p.ip_len);
            return self.xmit_request(frame, p, csum, fwd, daddr, dport, tun, st, out);
        }
        let nc = NewConn {
            proto: p.proto,
            caddr: p.src,
            cport: p.sport,
            vaddr: p.dst,
            vport: p.dport,
            daddr,
            dport,
            dest,
            fwd,
        };
        // `add`: the entry takes the scheduler's `Arc<Dest>`; no handle
        // (and no further reference count on the destination) comes back.
        let inserted = match &tpl {
            Some(t) => self.conns.add_controlled(nc, t, info, now),
            None => self.conns.add(nc, info, now),
        };
        match inserted {
            Ok(_) => {}
            // Another worker created it first (its packets hashed elsewhere):
            // follow that entry.
            Err(InsertError::Exists) => {
                add(&st.conn_races, 1);
                return match self.conns.lookup_in(&tuple(p)) {
                    Some(h) => {
                        st.count_packet(h.dest().stats_tag(), true, p.ip_len);
                        self.xmit_handle(frame, p, csum, &h, st, out)
                    }
                    None => Self::drop(st, DropReason::TableFull, out),
                };
            }
            Err(_) => return Self::drop(st, DropReason::TableFull, out),
        }
        add(&st.conns, 1);
        st.count_conn(tag);
        st.count_packet(tag, true, p.ip_len);
        self.xmit_request(frame, p, csum, fwd, daddr, dport, tun, st, out)
    }

    /// Forwards a packet along an existing connection found by handle
    /// (ICMP errors, insert races: not the per-packet path).
    fn xmit_handle(
        &self,
        frame: &mut [u8],
        p: &Parsed,
        csum: CsumMode,
        h: &uvs_conntrack::Handle,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> Step {
        self.xmit_request(
            frame,
            p,
            csum,
            h.fwd(),
            h.daddr(),
            h.dport(),
            h.dest().tun_config(),
            st,
            out,
        )
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn xmit_request(
        &self,
        frame: &mut [u8],
        p: &Parsed,
        csum: CsumMode,
        fwd: FwdMethod,
        daddr: IpAddr,
        dport: u16,
        tun: TunConfig,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> Step {
        // Each arm writes the verdict in place (no move of a built one).
        match fwd {
            FwdMethod::Masq => match uvs_fwd::dnat(frame, p, daddr, dport, csum) {
                Ok(()) => {
                    *out = Verdict::Xmit {
                        next_hop: daddr,
                        dnat_from: Some((p.dst, p.dport)),
                        snat_from: None,
                        pkt: Parsed {
                            dst: daddr,
                            dport,
                            ..*p
                        },
                    }
                }
                Err(e) => return Self::drop(st, xmit_reason(&e), out),
            },
            // Direct routing: the packet keeps the VIP; only the TTL and, in
            // the worker, the MACs change (the real server is on-link).
            FwdMethod::Route => match uvs_fwd::xmit::dr::dr(frame, p) {
                Ok(()) => {
                    *out = Verdict::Xmit {
                        next_hop: daddr,
                        dnat_from: None,
                        snat_from: None,
                        pkt: *p,
                    }
                }
                Err(e) => return Self::drop(st, xmit_reason(&e), out),
            },
            FwdMethod::Tunnel => {
                *out = Verdict::Tunnel {
                    next_hop: daddr,
                    tun,
                    pkt: *p,
                }
            }
            FwdMethod::Local => return Self::drop(st, DropReason::Unsupported, out),
        }
        Step::Done
    }
}

/// The connection-table key of a packet as it is on the wire.
fn tuple(p: &Parsed) -> Tuple {
    Tuple {
        proto: p.proto,
        src: p.src,
        sport: p.sport,
        dst: p.dst,
        dport: p.dport,
    }
}

fn is_icmp_error(p: &Parsed) -> bool {
    p.has_l4
        && match p.proto {
            1 => p.is_ipv4() && uvs_fwd::wire::icmpv4::is_error(p.icmp_type),
            58 => !p.is_ipv4() && uvs_fwd::wire::icmpv6::is_error(p.icmp_type),
            _ => false,
        }
}

fn xmit_reason(e: &uvs_fwd::XmitError) -> DropReason {
    match e {
        uvs_fwd::XmitError::TtlExceeded => DropReason::TtlExceeded,
        _ => DropReason::Rewrite,
    }
}

mod fast;
mod local_out;
mod nat;
mod plan;
mod sched;
#[cfg(test)]
mod tests;
mod tun_out;
