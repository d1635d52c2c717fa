//! The rule walk: per chain, an index by exact destination port and by
//! destination host, merged in rule order with the rules neither index
//! holds; a fixed stack for jumps. No allocation, no lock.

use std::net::IpAddr;

use foldhash::{HashMap, HashMapExt};

use super::{Matches, Policy, Rule, Ruleset, Table, TableId, Target};
use crate::datapath::hooks::HookPoint;
use crate::datapath::tables::parse::MAX_DEPTH;

/// `--ctstate` bits.
#[derive(Debug)]
pub struct CtState;

impl CtState {
    pub const NEW: u8 = 1;
    pub const ESTABLISHED: u8 = 2;
    pub const RELATED: u8 = 4;
    pub const INVALID: u8 = 8;
    /// conntrack's virtual states: the flow's source (destination) is
    /// translated — by the nat table, or (DNAT) by IPVS's NAT forwarding,
    /// which the kernel records in the flow's conntrack entry.
    pub const SNAT: u8 = 16;
    pub const DNAT: u8 = 32;
    /// Not a `--ctstate` (no rule can name it): the packet was sent by
    /// IPVS without being one of its connections' (a tunnel's outer
    /// packet, `skb->ipvs_property` in the kernel), which `-m ipvs --ipvs`
    /// alone matches, as xt_ipvs does.
    pub const IPVS_PROPERTY: u8 = 128;
}

/// What `-m ipvs` sees of the packet's IPVS connection.
#[derive(Debug, Clone, Copy)]
pub struct IpvsFacts {
    pub vaddr: IpAddr,
    pub vport: u16,
    pub vproto: u8,
    pub method: uvs_sched::FwdMethod,
    /// The packet goes client → server.
    pub original: bool,
}

/// The connection facts of a packet, from uvs's own connection table.
#[derive(Debug, Clone, Copy)]
pub struct CtFacts {
    /// One of NEW, ESTABLISHED, RELATED, INVALID, with SNAT and DNAT
    /// ([`CtState`]).
    pub state: u8,
    pub ipvs: Option<IpvsFacts>,
}

/// The packet fields the tables match on.
#[derive(Debug, Clone, Copy)]
pub struct Pkt {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// Whether `sport`/`dport` are real (TCP, UDP, SCTP with headers).
    pub has_ports: bool,
    /// IP length, for the byte counters.
    pub len: u32,
}

/// What rules look up besides the packet: the ipsets and the director's
/// addresses (both from the published [`Ruleset`]).
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    pub sets: &'a super::ipset::Sets,
    pub addrs: &'a super::addrtype::LocalAddrs,
    pub links: &'a super::iface::Links,
    /// `-o`'s routes, and where the walk runs (which address is routed).
    pub routes: &'a super::route::Routes,
    pub point: HookPoint,
    /// The frame, for LOG rules' lines (`None`: LOG only counts).
    pub seen: Option<&'a super::log::Seen<'a>>,
}

impl Env<'_> {
    /// The interface the packet leaves by (asked by `-o` rules and LOG
    /// lines' `OUT=`).
    #[inline]
    fn oif(&self, k: &Pkt) -> u32 {
        self.routes.oif(super::route::route_to(self.point, k.dst))
    }
}

/// A table's decision at one hook point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableVerdict {
    Accept,
    Drop,
    Reject,
    /// A nat target matched: the flow's translation (the nat table's walk
    /// ends there, as for ACCEPT).
    Nat(super::nat::NatTo),
}

/// Rule positions of one chain, by what a packet can be looked up by.
#[derive(Debug, Clone, Default)]
pub struct Index {
    by_dport: HashMap<u16, Box<[u32]>>,
    by_dst: HashMap<IpAddr, Box<[u32]>>,
    rest: Box<[u32]>,
}

impl Index {
    /// Each rule goes to exactly one list: its exact destination port, else
    /// its destination host, else the rest.
    pub fn build(rules: &[Rule]) -> Index {
        let mut dp: HashMap<u16, Vec<u32>> = HashMap::new();
        let mut dst: HashMap<IpAddr, Vec<u32>> = HashMap::new();
        let mut rest = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let i = i as u32;
            match (&r.m.dport, &r.m.dst) {
                (Some((false, p)), _) if p.single().is_some() => {
                    dp.entry(p.single().unwrap_or(0)).or_default().push(i)
                }
                (_, Some((false, d))) if d.is_host() => dst.entry(d.addr).or_default().push(i),
                _ => rest.push(i),
            }
        }
        Index {
            by_dport: dp.into_iter().map(|(k, v)| (k, v.into())).collect(),
            by_dst: dst.into_iter().map(|(k, v)| (k, v.into())).collect(),
            rest: rest.into(),
        }
    }

    /// The three candidate lists of a packet.
    #[inline]
    pub(super) fn lists<'a>(&'a self, k: &Pkt) -> [&'a [u32]; 3] {
        let dp = if k.has_ports && !self.by_dport.is_empty() {
            self.by_dport.get(&k.dport).map_or(&[][..], |v| v)
        } else {
            &[]
        };
        let ds = if self.by_dst.is_empty() {
            &[][..]
        } else {
            self.by_dst.get(&k.dst).map_or(&[][..], |v| v)
        };
        [dp, ds, &self.rest]
    }
}

/// Where a walk stands in one chain: the chain and a cursor per list.
#[derive(Clone, Copy, Default)]
struct Frame {
    chain: usize,
    cur: [usize; 3],
}

impl Frame {
    /// The next candidate rule position in rule order.
    #[inline]
    fn next(&mut self, lists: &[&[u32]; 3]) -> Option<u32> {
        let mut best: Option<(u32, usize)> = None;
        for (j, l) in lists.iter().enumerate() {
            if let Some(&p) = l.get(self.cur[j]) {
                if best.is_none_or(|(b, _)| p < b) {
                    best = Some((p, j));
                }
            }
        }
        let (p, j) = best?;
        self.cur[j] += 1;
        Some(p)
    }
}

fn pfx(m: Option<(bool, super::Prefix)>, a: IpAddr) -> bool {
    m.is_none_or(|(n, p)| p.contains(a) != n)
}

impl Matches {
    /// Whether the packet matches; `ct` is asked (once per packet, by the
    /// caller's memo) only by rules that read the connection table.
    fn test(&self, k: &Pkt, mark: u32, env: Env<'_>, ct: &mut impl FnMut() -> CtFacts) -> bool {
        let ports = |m: &Option<(bool, super::Ports)>, p: u16| {
            m.as_ref()
                .is_none_or(|(n, r)| k.has_ports && r.contains(p) != *n)
        };
        self.proto.is_none_or(|(n, p)| (p == k.proto) != n)
            && pfx(self.src, k.src)
            && pfx(self.dst, k.dst)
            && ports(&self.sport, k.sport)
            && ports(&self.dport, k.dport)
            && self
                .iif
                .as_ref()
                .is_none_or(|m| m.test(env.links, super::iface::rx()))
            && self
                .oif
                .as_ref()
                .is_none_or(|m| m.test(env.links, env.oif(k)))
            && self.mark.is_none_or(|(n, v, m)| ((mark & m) == v) != n)
            && self
                .addrtype
                .as_ref()
                .is_none_or(|a| a.test(env.addrs, k.src, k.dst))
            && self.sets.iter().all(|m| m.test(env.sets, k))
            && self.ct_test(ct)
    }

    fn ct_test(&self, ct: &mut impl FnMut() -> CtFacts) -> bool {
        if self.ctstate.is_none() && self.ipvs.is_none() {
            return true;
        }
        let f = ct();
        if let Some((n, bits)) = self.ctstate {
            if ((f.state & bits) != 0) == n {
                return false;
            }
        }
        let Some(x) = &self.ipvs else {
            return true;
        };
        let Some(v) = f.ipvs else {
            let only_property = x.vaddr.is_none()
                && x.vport.is_none()
                && x.vproto.is_none()
                && x.vmethod.is_none()
                && x.vdir_original.is_none();
            // Sent by IPVS, no connection of it: only `--ipvs` alone holds
            // (xt_ipvs finds no connection for the other options).
            if f.state & CtState::IPVS_PROPERTY != 0 {
                return only_property && x.ipvs == Some(true);
            }
            // Not an IPVS packet: only `! --ipvs` (and nothing else) holds.
            return x.ipvs == Some(false) && only_property;
        };
        x.ipvs != Some(false)
            && x.vaddr.is_none_or(|(n, p)| p.contains(v.vaddr) != n)
            && x.vport.is_none_or(|(n, p)| (p == v.vport) != n)
            && x.vproto.is_none_or(|(n, p)| (p == v.vproto) != n)
            && x.vmethod.is_none_or(|(n, m)| (m == v.method) != n)
            && x.vdir_original.is_none_or(|o| o == v.original)
    }
}

impl Table {
    /// Walks the built-in chain at `point`: the first rule whose target
    /// decides ends it; the chain's policy otherwise. MARK rules change
    /// `mark` and go on. `None` when the table has no chain there.
    pub fn run(
        &self,
        point: HookPoint,
        k: &Pkt,
        mark: &mut u32,
        env: Env<'_>,
        ct: &mut impl FnMut() -> CtFacts,
    ) -> Option<TableVerdict> {
        let base = self.at[point as usize]?;
        let mut stack = [Frame::default(); MAX_DEPTH];
        let mut depth = 0;
        stack[0] = Frame {
            chain: base,
            cur: [0; 3],
        };
        loop {
            let f = &mut stack[depth];
            let chain = &self.chains[f.chain];
            let lists = chain.index.lists(k);
            let mut next = None;
            while let Some(p) = f.next(&lists) {
                let r = &chain.rules[p as usize];
                if r.m.test(k, *mark, env, ct) {
                    self.count(chain.first + p as usize, k.len);
                    // Where `uvs trace` records the rule applied (branch
                    // `trace`'s `trace::rule(point, self.id.priority(point),
                    // self.id.name(), &chain.name, p + 1, &r.text,
                    // r.target.iptables_name())`), once merged.
                    match r.target {
                        Target::None => continue,
                        Target::Log(ref spec) => {
                            // In the trace too (a LOG hit goes on walking).
                            crate::datapath::trace::rule(
                                point,
                                self.id.priority(point),
                                self.id.name(),
                                &chain.name,
                                p + 1,
                                &r.text,
                                "LOG",
                            );
                            if let Some(s) = env.seen {
                                // The kernel has no output device before
                                // routing (PREROUTING, INPUT).
                                let out = match point {
                                    HookPoint::PreRouting | HookPoint::LocalIn => 0,
                                    _ => env.oif(k),
                                };
                                super::log::record(spec, point, s, env.links, *mark, out);
                            }
                            continue;
                        }
                        Target::Nat(n) => {
                            crate::datapath::trace::rule(
                                point,
                                self.id.priority(point),
                                self.id.name(),
                                &chain.name,
                                p + 1,
                                &r.text,
                                r.target.iptables_name(),
                            );
                            return Some(TableVerdict::Nat(n));
                        }
                        Target::Mark { mask, xor } => {
                            *mark = (*mark & !mask) ^ xor;
                            continue;
                        }
                        Target::Accept => return Some(TableVerdict::Accept),
                        Target::Drop => return Some(TableVerdict::Drop),
                        Target::Reject => return Some(TableVerdict::Reject),
                        Target::Return => break,
                        Target::Jump(c) => {
                            next = Some((c, false));
                            break;
                        }
                        Target::Goto(c) => {
                            next = Some((c, true));
                            break;
                        }
                    }
                }
            }
            match next {
                Some((c, goto)) => {
                    // Parse bounds the nesting below MAX_DEPTH; a goto
                    // replaces the current frame.
                    if !goto {
                        depth = (depth + 1).min(MAX_DEPTH - 1);
                    }
                    stack[depth] = Frame {
                        chain: c,
                        cur: [0; 3],
                    };
                }
                None => {
                    // End of chain (or RETURN): back to the caller, or the
                    // built-in chain's policy.
                    // (A goto from the built-in chain ends there too.)
                    if depth == 0 {
                        self.count(self.n_rules + base, k.len);
                        return Some(match self.chains[base].policy {
                            Some(Policy::Drop) => TableVerdict::Drop,
                            _ => TableVerdict::Accept,
                        });
                    }
                    depth -= 1;
                }
            }
        }
    }
}

impl Ruleset {
    /// Runs table `id` at `point` (see [`Table::run`]); ACCEPT when the
    /// table is not loaded or has no chain there. Without the frame, LOG
    /// rules only count ([`Ruleset::run_seen`] writes their lines).
    #[inline]
    pub fn run(
        &self,
        id: TableId,
        point: HookPoint,
        k: &Pkt,
        mark: &mut u32,
        ct: &mut impl FnMut() -> CtFacts,
    ) -> TableVerdict {
        self.run_env(id, point, k, None, mark, ct)
    }

    /// [`Ruleset::run`] for the packet `seen`, whose LOG hits become
    /// lines ([`super::log`]).
    #[inline]
    pub fn run_seen(
        &self,
        id: TableId,
        point: HookPoint,
        k: &Pkt,
        seen: &super::log::Seen<'_>,
        mark: &mut u32,
        ct: &mut impl FnMut() -> CtFacts,
    ) -> TableVerdict {
        self.run_env(id, point, k, Some(seen), mark, ct)
    }

    #[inline]
    fn run_env(
        &self,
        id: TableId,
        point: HookPoint,
        k: &Pkt,
        seen: Option<&super::log::Seen<'_>>,
        mark: &mut u32,
        ct: &mut impl FnMut() -> CtFacts,
    ) -> TableVerdict {
        let env = Env {
            sets: &self.sets,
            addrs: &self.addrs,
            links: &self.links,
            routes: &self.routes,
            point,
            seen,
        };
        match self.table(id) {
            Some(t) => t
                .run(point, k, mark, env, ct)
                .unwrap_or(TableVerdict::Accept),
            None => TableVerdict::Accept,
        }
    }
}
