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

use std::cell::RefCell;

use uvs_conntrack::{Dir, Hit, Table, Tuple, Update};
use uvs_fwd::{CsumMode, ParseError, Parsed};
use uvs_sched::TunConfig;

use crate::datapath::filter::FilterTable;
use crate::datapath::frag6;
use crate::datapath::hooks::{HookChain, HookPoint};
use crate::datapath::service::Services;
use crate::datapath::snapshot::{Cached, Snapshot};
use crate::datapath::stats::{add, DropReason, WorkerStats};
use crate::datapath::tables::Ruleset;
use crate::datapath::trace::Tracer;
use vips::Vips;

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
/// is probed, as the kernel's `ip_vs_out` does; for a bare TCP SYN only the
/// request side (`Pipeline::sides`).
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
mod ipvs;
mod local_out;
mod nat;
mod plan;
mod sched;
#[cfg(test)]
mod tests;
mod tun_out;
mod vips;
mod walk;
