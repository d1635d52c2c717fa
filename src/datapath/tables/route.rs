//! `-o NAME`, `! -o NAME`, `-o PREFIX+`: the interface a packet leaves by,
//! as the kernel's route lookup would choose it.
//!
//! Contract:
//! * [`Routes`] is a pure, per-snapshot route table: the main and local
//!   tables as read over netlink ([`read_routes`]), looked up by longest
//!   prefix. It lives in the published [`super::Ruleset`] beside `-i`'s
//!   link map, is read when a ruleset with an `-o` rule is published and
//!   again on every route, address or link event (`nat::follow_addrs`,
//!   woken by `nat::watch_addrs`), never per packet.
//! * Which interface: the local table first, as the kernel's default
//!   policy rules order them (`from all lookup local` at preference 0):
//!   a main route inside a local route's prefix is never chosen. A route
//!   of type `local` leaves by the loopback device (ifindex 1), as the
//!   kernel sends to its own addresses; unreachable, blackhole, prohibit
//!   and throw routes leave by no interface (0: no `-o NAME` matches, every
//!   `! -o NAME` does). Of two routes of one prefix the lower metric wins.
//!   Other policy rules (uvs's own local-client rule among them) and route
//!   `tos`/marks are not consulted; a multipath (ECMP) route gives its
//!   first live next hop's interface (the kernel picks one by a per-flow
//!   hash); a route through a next-hop object (`nhid`) gives none.
//! * Which address is routed ([`route_to`]): at FORWARD and OUTPUT the
//!   packet's destination after DNAT (the packet the walk sees); at
//!   POSTROUTING the next hop uvs actually sends to — the real server of
//!   a NAT or DR request, the client of a NAT reply — which the pipeline
//!   hands over once per packet sent, only when a rule has `-o`
//!   ([`set_next_hop`]). A tunnelled packet's outer packet is routed to
//!   its real server at OUTPUT and POSTROUTING alike
//!   (`pipeline/tun_out.rs`).
//! * Cost: a lookup is one hash probe per prefix length present (at most
//!   33 or 129, whatever the number of routes), made only when a rule with
//!   `-o` is tested, and at most once per packet: the last answer is kept
//!   per thread, keyed by the snapshot's generation and the address. No
//!   allocation, lock or syscall.
//!
//! iptables refuses `-o` where no output interface is chosen yet
//! (PREROUTING, INPUT) and `-i` where packets have none (OUTPUT,
//! POSTROUTING), also in user chains reached from there: [`hooks_check`].

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use foldhash::{HashMap, HashMapExt};

use crate::datapath::hooks::HookPoint;
use crate::sys::netlink::{RouteEntry, RouteKind, TABLE_LOCAL, TABLE_MAIN};

/// The loopback device's index, in every network namespace.
pub const LOOPBACK_IFINDEX: u32 = 1;

static NEXT_GEN: AtomicU64 = AtomicU64::new(1);

/// The address of `gen`'s last lookup on this thread, and its answer.
type Memo = (u64, IpAddr, u32);

const NONE: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

thread_local! {
    static MEMO: Cell<Memo> = const { Cell::new((0, NONE, 0)) };
    static NEXT_HOP: Cell<(IpAddr, IpAddr)> = const { Cell::new((NONE, NONE)) };
}

/// The packet about to walk POSTROUTING has destination `dst` and goes to
/// `via` (its `Verdict::Xmit` next hop). One thread-local store.
#[inline]
pub fn set_next_hop(dst: IpAddr, via: IpAddr) {
    NEXT_HOP.with(|c| c.set((dst, via)));
}

/// [`set_next_hop`] of a packet uvs is about to send (`Verdict::Xmit`).
#[inline]
pub fn set_next_hop_of(v: &crate::datapath::pipeline::Verdict) {
    if let crate::datapath::pipeline::Verdict::Xmit { next_hop, pkt, .. } = v {
        set_next_hop(pkt.dst, *next_hop);
    }
}

/// The address whose route gives a packet's output interface (see the
/// module doc): the next hop handed over for this destination at
/// POSTROUTING, else the destination itself.
#[inline]
pub fn route_to(point: HookPoint, dst: IpAddr) -> IpAddr {
    if point == HookPoint::PostRouting {
        let (d, via) = NEXT_HOP.with(|c| c.get());
        if d == dst {
            return via;
        }
    }
    dst
}

/// One family's prefixes: per prefix length present (longest first), the
/// masked prefixes and the interface each leaves by.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lpm {
    /// Address bits: 32 or 128.
    width: u8,
    by_len: Vec<(u8, HashMap<u128, u32>)>,
}

fn mask(a: u128, len: u8, width: u8) -> u128 {
    let host = u32::from(width - len.min(width));
    if host >= 128 {
        0
    } else {
        (a >> host) << host
    }
}

impl Lpm {
    fn new(width: u8) -> Lpm {
        Lpm {
            width,
            by_len: Vec::new(),
        }
    }

    /// The interface of the longest prefix holding `a`, with the number of
    /// hash probes made.
    #[inline]
    fn get(&self, a: u128) -> (Option<u32>, usize) {
        let mut probes = 0;
        for (len, m) in &self.by_len {
            probes += 1;
            if let Some(&o) = m.get(&mask(a, *len, self.width)) {
                return (Some(o), probes);
            }
        }
        (None, probes)
    }

    fn contains_prefix(&self, key: u128, len: u8) -> bool {
        self.by_len
            .iter()
            .any(|(l, m)| *l <= len && m.contains_key(&mask(key, *l, self.width)))
    }

    /// From (prefix length, masked key) → (metric, interface): the lowest
    /// metric already chosen.
    fn from_best(width: u8, best: HashMap<(u8, u128), (u32, u32)>) -> Lpm {
        let mut by: HashMap<u8, HashMap<u128, u32>> = HashMap::new();
        for ((len, key), (_, oif)) in best {
            by.entry(len).or_default().insert(key, oif);
        }
        let mut by_len: Vec<_> = by.into_iter().collect();
        by_len.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
        Lpm { width, by_len }
    }
}

/// The director's routes (main and local tables) as one snapshot.
#[derive(Debug, Clone)]
pub struct Routes {
    /// Distinguishes snapshots for the per-thread memo.
    gen: u64,
    v4: Lpm,
    v6: Lpm,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            gen: NEXT_GEN.fetch_add(1, Relaxed),
            v4: Lpm::new(32),
            v6: Lpm::new(128),
        }
    }
}

/// Equal when they route alike (the generation aside).
impl PartialEq for Routes {
    fn eq(&self, o: &Routes) -> bool {
        self.v4 == o.v4 && self.v6 == o.v6
    }
}

impl Eq for Routes {}

fn key(a: IpAddr) -> (u128, bool) {
    match a {
        IpAddr::V4(x) => (u128::from(u32::from(x)), false),
        IpAddr::V6(x) => (u128::from(x), true),
    }
}

impl Routes {
    /// The table a dump describes (see the module doc for the choices).
    pub fn from_entries(entries: &[RouteEntry]) -> Routes {
        let mut r = Routes::default();
        for v6 in [false, true] {
            let width = if v6 { 128 } else { 32 };
            let pick = |table: u32| {
                let mut best: HashMap<(u8, u128), (u32, u32)> = HashMap::new();
                for e in entries
                    .iter()
                    .filter(|e| e.table == table && e.dst.is_ipv6() == v6 && e.len <= width)
                {
                    let oif = match e.kind {
                        RouteKind::Local => LOOPBACK_IFINDEX,
                        RouteKind::Unreachable
                        | RouteKind::Blackhole
                        | RouteKind::Prohibit
                        | RouteKind::Throw => 0,
                        _ => e.oif.unwrap_or(0),
                    };
                    let k = (e.len, mask(key(e.dst).0, e.len, width));
                    let b = best.entry(k).or_insert((e.metric, oif));
                    if e.metric < b.0 {
                        *b = (e.metric, oif);
                    }
                }
                best
            };
            let local = Lpm::from_best(width, pick(TABLE_LOCAL));
            let mut all = pick(TABLE_MAIN);
            // The local table is asked first: what it covers is its own.
            all.retain(|&(len, k), _| !local.contains_prefix(k, len));
            for (len, m) in &local.by_len {
                for (&k, &o) in m {
                    all.insert((*len, k), (0, o));
                }
            }
            let lpm = Lpm::from_best(width, all);
            if v6 {
                r.v6 = lpm;
            } else {
                r.v4 = lpm;
            }
        }
        r
    }

    /// The interface a packet to `to` leaves by (0: none). Pure.
    #[inline]
    pub fn lookup(&self, to: IpAddr) -> u32 {
        self.lookup_probes(to).0
    }

    /// [`Routes::lookup`] with the number of hash probes it made.
    pub fn lookup_probes(&self, to: IpAddr) -> (u32, usize) {
        let (k, v6) = key(to);
        let (o, n) = if v6 { self.v6.get(k) } else { self.v4.get(k) };
        (o.unwrap_or(0), n)
    }

    /// [`Routes::lookup`], answered from this thread's last lookup when it
    /// was of the same snapshot and address.
    #[inline]
    pub fn oif(&self, to: IpAddr) -> u32 {
        MEMO.with(|m| {
            let (g, a, o) = m.get();
            if g == self.gen && a == to {
                return o;
            }
            let o = self.lookup(to);
            m.set((self.gen, to, o));
            o
        })
    }

    /// Prefixes held, both families (for the log).
    pub fn len(&self) -> usize {
        [&self.v4, &self.v6]
            .iter()
            .flat_map(|l| &l.by_len)
            .map(|(_, m)| m.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The director's routes now (the control plane only).
pub fn read_routes() -> Routes {
    match crate::sys::netlink::routes() {
        Ok(v) => Routes::from_entries(&v),
        Err(e) => {
            log::warn!("uvs tables: reading the director's routes for -o: {e}");
            Routes::default()
        }
    }
}

/// `-i` only where packets have an input interface, `-o` only where the
/// output interface is chosen, also in the user chains each built-in chain
/// reaches (as x_tables checks a match's hooks at load).
pub(super) fn hooks_check(
    chains: &[super::Chain],
    edges: &[Vec<(usize, usize)>],
) -> Result<(), super::TablesError> {
    super::each_reached_rule(chains, edges, |b, point, i, r| {
        let no_in = matches!(point, HookPoint::LocalOut | HookPoint::PostRouting);
        let no_out = matches!(point, HookPoint::PreRouting | HookPoint::LocalIn);
        let (opt, why) = if no_in && r.m.iif.is_some() {
            ("-i", "packets there have no input interface")
        } else if no_out && r.m.oif.is_some() {
            ("-o", "the output interface is not chosen there yet")
        } else {
            return Ok(());
        };
        let msg = if i == b {
            format!(
                "{opt} can't be used in the {} chain ({why})",
                chains[b].name
            )
        } else {
            format!(
                "{opt} can't be used in chain {}, reached from {} ({why})",
                chains[i].name, chains[b].name
            )
        };
        Err(super::TablesError { line: r.line, msg })
    })
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
