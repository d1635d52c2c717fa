//! The established-flow fast path: a per-worker flow cache in front of the
//! hook walk.
//!
//! **What it holds.** One direct-mapped table of [`WAYS`] ways per worker
//! thread (allocated once, on its first fill; fixed size, never grown),
//! keyed by the packet's tuple as it is on the wire. A way records what the
//! slow path decided for the flow: the rewrite (DNAT, the reply's SNAT,
//! direct routing or a tunnel) and its next hop, the real server's counter
//! tag, the hook entries the walk visited (their `hook_seen` counters) and
//! the one that took the packet (`hook_stolen`), plus what keeps it valid.
//!
//! **When a way is used** (all must hold, else the packet takes the slow
//! path, which may fill the way again):
//! * the packet is TCP with ACK and no SYN, FIN or RST, or UDP; not a
//!   fragment, not sent by the director itself;
//! * the services, filter and tables generations are those it was filled
//!   under (a change of any of them empties the cache in O(1): an epoch);
//! * when filled, no `uvs filter` rule, emulated table (mangle, nat, filter)
//!   or mark could act at the hook points the packet crosses: PRE_ROUTING
//!   has no entry in the plan, the packet's point has IPVS's entries only,
//!   the nat table is empty and POST_ROUTING has nothing to run. Adding a
//!   rule anywhere moves a generation;
//! * no `uvs trace` is armed, and this director is not a sync master (which
//!   counts every packet of a connection in its entry);
//! * the connection is still the same live entry, in a state the packet
//!   cannot change: its [`Ticket`] (one atomic load of the slot's version,
//!   which the connection table bumps on removal, reuse and every state or
//!   flag change — a FIN from the other side, `-C`, expiry, eviction);
//! * its refresh is not due (below).
//!
//! **The timer.** A fast packet does not write the shared entry (a cache
//! line the other direction's worker and the expiry sweep write), so it
//! does not refresh the entry's timer or counters. Instead a way is used
//! only until `min(1 s, timeout / 16)` after the packet that filled it;
//! the next packet then takes the slow path, which refreshes the entry
//! under its lock, and fills the way again. So a connection may expire up
//! to that much earlier than with every packet refreshing it (at most 1 s
//! for a 900 s ESTABLISHED timeout; its packets keep it alive as before).
//! The packets a way forwarded are added to the entry's packet and byte
//! counters when the way is filled again or replaced, so those counters lag
//! by at most one refresh interval; the worker's `--stats` counters and the
//! hook counters are exact for every packet, identical to the slow path's.
//!
//! **Destination changes** (weight, removal, `expire_nodest_conn`) come with
//! a services store, which moves its generation; a packet that arrives
//! between a commit marking a server unavailable and the store that
//! publishes it may still be forwarded to it, as it would have been a moment
//! earlier.
//!
//! **Cost.** Flat in the number of services, rules and connections: one
//! hash of the tuple, one way, three generation loads, the ticket load, the
//! knob and trace flags, the rewrite and this worker's own counters. No
//! lock, no allocation, no write outside this worker's memory. Flows whose
//! tuples share a way evict each other and fall back to the slow path.
//! A NAT way's rewrite is prepared at the fill ([`FlowNat`]: the checksum
//! deltas of its address, port and TTL change folded once), so a packet's
//! checksums take one addition each; packets it does not describe (UDP
//! without a checksum, TTL 1) take the general rewrite, with the same
//! result (`fwd/tests/nat_props.rs`).

use std::net::IpAddr;

use uvs_conntrack::{Dir, FwdMethod, Ticket, Tuple, Update};
use uvs_fwd::xmit::nat::FlowNat;
use uvs_fwd::{CsumMode, Parsed, Side};
use uvs_sched::TunConfig;

use super::{tuple, xmit_reason, Ctx, Pipeline, Verdict, TCP, UDP};
use crate::datapath::hooks::{HookFn, HookPoint, Plan, MAX_PER_POINT};
use crate::datapath::stats::{add, DropReason, WorkerStats};
use crate::datapath::tables::Ruleset;

/// Ways per worker (a power of two).
pub(crate) const WAYS: usize = 4096;
const WAY_BITS: u32 = WAYS.trailing_zeros();

/// What the slow path did with the flow's packets.
#[derive(Debug, Clone, Copy)]
enum Act {
    /// NAT request: the destination becomes the real server (the
    /// rewrite's checksum deltas prepared at the fill).
    Dnat(FlowNat),
    /// NAT reply: the source becomes the virtual service, sent to the client.
    Snat { nat: FlowNat, caddr: IpAddr },
    /// Direct routing toward the real server.
    Route { daddr: IpAddr },
    /// Encapsulated toward the real server.
    Tunnel { daddr: IpAddr, tun: TunConfig },
}

#[derive(Debug)]
struct Way {
    key: Tuple,
    /// The cache's epoch when filled (generations it was filled under).
    epoch: u64,
    /// The slow path is due from this time on (ms of the caller's clock).
    refresh_at: u64,
    ticket: Ticket,
    dir: Dir,
    act: Act,
    tag: u64,
    /// `hook_seen` entries, in walk order; the last one took the packet.
    seen: [u8; MAX_PER_POINT],
    seen_n: u8,
    /// Packets and bytes forwarded since the fill, not yet in the entry.
    pend_pkts: u32,
    pend_bytes: u64,
}

/// One worker thread's flow cache (in its `SNAPSHOTS`).
#[derive(Debug)]
pub(super) struct FlowCache {
    /// Services, filter and tables generations of the current epoch.
    gens: (u64, u64, u64),
    epoch: u64,
    ways: Option<Box<[Option<Way>]>>,
}

/// TCP flags the fast path refuses (they can change a connection's state).
const STATE_FLAGS: u8 = uvs_fwd::wire::tcp::flags::SYN
    | uvs_fwd::wire::tcp::flags::FIN
    | uvs_fwd::wire::tcp::flags::RST;
const ACK: u8 = uvs_fwd::wire::tcp::flags::ACK;

/// A packet that cannot change its connection's state when the entry is
/// steady (`uvs_conntrack::Table::steady_ticket`).
#[inline(always)]
fn steady_packet(p: &Parsed) -> bool {
    !p.is_fragment
        && match p.proto {
            TCP => p.tcp_flags & (STATE_FLAGS | ACK) == ACK,
            UDP => true,
            _ => false,
        }
}

/// Whether `p` is of flow `k` (the tuple's equality, inlined: ports and
/// protocol first, which differ most often between flows sharing a way).
#[inline(always)]
fn is_flow(k: &Tuple, p: &Parsed) -> bool {
    k.sport == p.sport
        && k.dport == p.dport
        && k.proto == p.proto
        && k.dst == p.dst
        && k.src == p.src
}

/// The way of a tuple: a multiplicative hash of its words.
#[inline(always)]
fn slot(t: &Tuple) -> usize {
    #[inline(always)]
    fn word(a: IpAddr) -> u64 {
        match a {
            IpAddr::V4(a) => u64::from(u32::from(a)),
            IpAddr::V6(a) => {
                let v = u128::from(a);
                (v as u64) ^ ((v >> 64) as u64).rotate_left(29)
            }
        }
    }
    const K1: u64 = 0x9e37_79b9_7f4a_7c15;
    const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;
    let ports = (u64::from(t.sport) << 24) | (u64::from(t.dport) << 8) | u64::from(t.proto);
    let x = word(t.src).rotate_left(32) ^ word(t.dst);
    let h = (x ^ ports.wrapping_mul(K2)).wrapping_mul(K1);
    (h >> (64 - WAY_BITS)) as usize
}

impl FlowCache {
    pub(super) const EMPTY: FlowCache = FlowCache {
        gens: (0, 0, 0),
        epoch: 0,
        ways: None,
    };

    /// Forwards `p` from its way when the way is valid (see the module
    /// docs), writing the verdict into `out` and counting exactly what the
    /// slow path would; false (nothing done) otherwise.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        &mut self,
        pl: &Pipeline,
        frame: &mut [u8],
        p: &Parsed,
        csum: CsumMode,
        now: u64,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> bool {
        if !steady_packet(p) || tests_off() {
            return false;
        }
        let Some(ways) = self.ways.as_deref_mut() else {
            return false;
        };
        let gens = (
            pl.services.generation(),
            pl.filter.generation(),
            pl.tables.generation(),
        );
        if gens != self.gens || pl.trace.armed() || pl.conns.sync_master() {
            return false;
        }
        let Some(Some(w)) = ways.get_mut(slot(&tuple(p))) else {
            return false;
        };
        if !is_flow(&w.key, p) || w.epoch != self.epoch || now >= w.refresh_at || !w.ticket.valid()
        {
            return false;
        }
        let (seen, n) = (&w.seen, (w.seen_n as usize).min(MAX_PER_POINT));
        // Indices the fill took from the plan: in range (no division to
        // bound them, as `get` would not need one either).
        for &i in &seen[..n] {
            if let Some(c) = st.hook_seen.get(i as usize) {
                add(c, 1);
            }
        }
        let stolen = seen[n.saturating_sub(1)] as usize;
        w.pend_pkts = w.pend_pkts.wrapping_add(1);
        w.pend_bytes = w.pend_bytes.wrapping_add(p.ip_len as u64);
        // Each arm writes the verdict in place, as `xmit_request` does.
        let r = match &w.act {
            Act::Dnat(nat) => {
                st.count_packet(w.tag, true, p.ip_len);
                nat.apply(frame, p, csum).map(|()| {
                    *out = Verdict::Xmit {
                        next_hop: nat.addr(),
                        dnat_from: Some((p.dst, p.dport)),
                        snat_from: None,
                        pkt: *p,
                    };
                    // The parse copied whole, then its two fields: fewer
                    // stores than building it field by field.
                    if let Verdict::Xmit { pkt, .. } = out {
                        (pkt.dst, pkt.dport) = (nat.addr(), nat.port());
                    }
                })
            }
            Act::Snat { nat, caddr } => nat.apply(frame, p, csum).map(|()| {
                st.count_packet(w.tag, false, p.ip_len);
                *out = Verdict::Xmit {
                    next_hop: *caddr,
                    dnat_from: None,
                    snat_from: Some((p.src, p.sport)),
                    pkt: Parsed {
                        src: nat.addr(),
                        sport: nat.port(),
                        ..*p
                    },
                }
            }),
            Act::Route { daddr } => {
                st.count_packet(w.tag, true, p.ip_len);
                uvs_fwd::xmit::dr::dr(frame, p).map(|()| {
                    *out = Verdict::Xmit {
                        next_hop: *daddr,
                        dnat_from: None,
                        snat_from: None,
                        pkt: *p,
                    }
                })
            }
            Act::Tunnel { daddr, tun } => {
                st.count_packet(w.tag, true, p.ip_len);
                *out = Verdict::Tunnel {
                    next_hop: *daddr,
                    tun: *tun,
                    pkt: *p,
                };
                Ok(())
            }
        };
        #[cfg(test)]
        tests::HITS.with(|h| h.set(h.get() + 1));
        match r {
            Ok(()) => {
                if let Some(c) = st.hook_stolen.get(stolen) {
                    add(c, 1);
                }
            }
            // As `hook_done` after `Pipeline::drop`.
            Err(e) => {
                let r = xmit_reason(&e);
                st.drop(r);
                if let Some(c) = st.hook_dropped.get(stolen) {
                    add(c, 1);
                }
                *out = match r {
                    DropReason::TtlExceeded => Verdict::Reject { reason: r, pkt: *p },
                    r => Verdict::Drop(r),
                };
            }
        }
        true
    }

    /// After the slow path forwarded `p` (its verdict in `out`, the walk's
    /// context in `ctx`, under generations `gens`): fills the packet's way
    /// when the decision may be reused (see the module docs), first adding
    /// the packets the way's previous occupant forwarded to its entry.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fill(
        &mut self,
        pl: &Pipeline,
        p: &Parsed,
        gens: (u64, u64, u64),
        plan: &Plan,
        tables: &Ruleset,
        ctx: &Ctx,
        out: &Verdict,
        now: u64,
    ) {
        if !steady_packet(p)
            || tests_off()
            || !matches!(out, Verdict::Xmit { .. } | Verdict::Tunnel { .. })
            || ctx.mark != 0
            || tables.nat_on
            || tables.post_routing_on()
            || (matches!(out, Verdict::Tunnel { .. }) && tables.tunnel_walk_on())
            || pl.trace.armed()
            || pl.conns.sync_master()
            || !plan.at(HookPoint::PreRouting).is_empty()
            || !matches!(ctx.point, HookPoint::LocalIn | HookPoint::Forward)
        {
            return;
        }
        let Some((h, dir, Update::Forward)) = &ctx.hit else {
            return;
        };
        if !h.steady(*dir) {
            return;
        }
        // The walk as the slow path made it: IPVS entries that pass the
        // packet on, up to the one that took it.
        let want = match dir {
            Dir::In => HookFn::IpvsRequest,
            Dir::Out => HookFn::IpvsReply,
        };
        let (mut seen, mut n, mut took) = ([0u8; MAX_PER_POINT], 0usize, false);
        for e in plan.at(ctx.point) {
            seen[n] = e.index;
            n += 1;
            if e.func == want {
                took = true;
                break;
            }
            if !matches!(e.func, HookFn::IpvsReply | HookFn::IpvsForwardIcmp) {
                return;
            }
        }
        if !took {
            return;
        }
        // A NAT way's rewrite, prepared from this packet's old address
        // and port (the way's key: every packet it forwards has them).
        let nat = |side, old, old_port, new, port| FlowNat::new(side, old, old_port, new, port);
        let act = match (dir, h.fwd()) {
            (Dir::In, FwdMethod::Masq) => {
                match nat(Side::Dst, p.dst, p.dport, h.daddr(), h.dport()) {
                    Some(n) => Act::Dnat(n),
                    None => return,
                }
            }
            (Dir::In, FwdMethod::Route) => Act::Route { daddr: h.daddr() },
            (Dir::In, FwdMethod::Tunnel) => Act::Tunnel {
                daddr: h.daddr(),
                tun: h.tun_config(),
            },
            (Dir::Out, FwdMethod::Masq) => {
                match nat(Side::Src, p.src, p.sport, h.vaddr(), h.vport()) {
                    Some(nat) => Act::Snat {
                        nat,
                        caddr: h.caddr(),
                    },
                    None => return,
                }
            }
            _ => return,
        };
        if self.gens != gens {
            self.gens = gens;
            self.epoch += 1;
        }
        let ways = self
            .ways
            .get_or_insert_with(|| (0..WAYS).map(|_| None).collect());
        let key = tuple(p);
        let Some(w) = ways.get_mut(slot(&key)) else {
            return;
        };
        if let Some(old) = w.take() {
            if old.pend_pkts != 0 {
                pl.conns.credit(
                    &old.ticket,
                    &old.key,
                    old.dir,
                    old.pend_pkts,
                    old.pend_bytes,
                );
            }
        }
        let Some((ticket, interval)) = pl.conns.steady_ticket(&key, *dir) else {
            return;
        };
        *w = Some(Way {
            key,
            epoch: self.epoch,
            refresh_at: now.saturating_add(interval),
            ticket,
            dir: *dir,
            act,
            tag: h.stats_tag(),
            seen,
            seen_n: n as u8,
            pend_pkts: 0,
            pend_bytes: 0,
        });
    }
}

/// Unit tests run the same packets with the cache off, to compare.
#[inline(always)]
fn tests_off() -> bool {
    #[cfg(test)]
    return tests::OFF.with(std::cell::Cell::get);
    #[cfg(not(test))]
    false
}

#[cfg(test)]
#[path = "fast_tests.rs"]
mod tests;
