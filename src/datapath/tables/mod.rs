//! Emulated netfilter tables (`mangle`, `nat`, `filter`) in iptables' own
//! language: `uvs tables restore` reads `iptables-save` text,
//! `uvs tables save [-c]` writes it back, `uvs run --tables FILE` loads it.
//!
//! Contract:
//! * [`parse`] is a pure function of the text: a [`Ruleset`] or the first
//!   error, naming its line ([`TablesError`]). Nothing is applied from a
//!   text that has an error anywhere (the daemon publishes a ruleset whole,
//!   RCU-style, like the service snapshot).
//! * A text replaces the tables it names; the others stay
//!   ([`Ruleset::replaced_by`], as `iptables-restore` without `--noflush`).
//! * The walk ([`Ruleset::run`]) allocates nothing and takes no lock: each
//!   chain is indexed by exact destination port and by destination host
//!   address, so a packet compares itself only with the rules that could
//!   match it plus the rules that fit no index, in rule order.
//! * Every rule and every built-in chain's policy counts packets and bytes,
//!   per worker slot (no cache line written by two workers while there are
//!   no more workers than [`SLOTS`]).
//! * The nat table translates ([`nat`], [`natct`]): the first packet of a
//!   flow walks its chains, later packets and replies follow the recorded
//!   mapping.
//! * What uvs does not do yet is refused at load with the line's number,
//!   never accepted and ignored: REDIRECT, SNAT at INPUT, address ranges.
//!   `-i` matches the arrival interface ([`iface`]), `-o` the interface
//!   the kernel's route lookup would choose ([`route`]); `-i` reached from
//!   OUTPUT/POSTROUTING and `-o` reached from PREROUTING/INPUT are refused.
//! * `-m set` matches the emulated ipsets ([`ipset`]), which live in the
//!   same published snapshot: a set change is a new [`Ruleset`] sharing
//!   every table ([`Ruleset::with_sets`]). A rule naming a set that does
//!   not exist is refused at load.
//! * `-m addrtype` types addresses by the director's own ([`addrtype`]).

pub mod addrtype;
mod eval;
pub mod iface;
pub mod ipset;
pub mod log;
pub mod nat;
pub mod natct;
mod parse;
pub mod route;
mod save;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use foldhash::HashMap;

use crate::datapath::hooks::HookPoint;

pub use eval::{CtFacts, CtState, IpvsFacts, Pkt, TableVerdict};
pub use log::Seen;
pub use parse::{parse, parse_with};

/// A text that could not be loaded: the line (1-based) and why.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {msg}")]
pub struct TablesError {
    pub line: usize,
    pub msg: String,
}

/// The emulated tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableId {
    Mangle,
    Nat,
    Filter,
}

impl TableId {
    pub const ALL: [TableId; 3] = [TableId::Mangle, TableId::Nat, TableId::Filter];

    pub fn name(self) -> &'static str {
        match self {
            TableId::Mangle => "mangle",
            TableId::Nat => "nat",
            TableId::Filter => "filter",
        }
    }

    /// The priority of this table's hook entry at `point` (for the trace).
    pub fn priority(self, point: HookPoint) -> i32 {
        use crate::datapath::hooks::{PRI_FILTER, PRI_MANGLE, PRI_NAT_DST, PRI_NAT_SRC};
        match (self, point) {
            (TableId::Mangle, _) => PRI_MANGLE,
            (TableId::Nat, HookPoint::PreRouting | HookPoint::LocalOut) => PRI_NAT_DST,
            (TableId::Nat, _) => PRI_NAT_SRC,
            (TableId::Filter, _) => PRI_FILTER,
        }
    }

    /// The table's built-in chains, in iptables-save's order.
    pub fn builtins(self) -> &'static [&'static str] {
        match self {
            TableId::Mangle => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
            TableId::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
            TableId::Filter => &["INPUT", "FORWARD", "OUTPUT"],
        }
    }
}

/// The hook point a built-in chain runs at.
pub fn chain_point(name: &str) -> Option<HookPoint> {
    Some(match name {
        "PREROUTING" => HookPoint::PreRouting,
        "INPUT" => HookPoint::LocalIn,
        "FORWARD" => HookPoint::Forward,
        "OUTPUT" => HookPoint::LocalOut,
        "POSTROUTING" => HookPoint::PostRouting,
        _ => return None,
    })
}

/// Calls `f(base, point, chain, rule)` for every rule of every chain a
/// built-in chain `base` (running at `point`) reaches through jumps and
/// gotos (`edges`), stopping at the first error: the load-time checks of
/// where a match or target may be used, as x_tables makes them.
pub(super) fn each_reached_rule(
    chains: &[Chain],
    edges: &[Vec<(usize, usize)>],
    mut f: impl FnMut(usize, HookPoint, usize, &Rule) -> Result<(), TablesError>,
) -> Result<(), TablesError> {
    for (b, c) in chains.iter().enumerate() {
        let Some(point) = c.policy.and_then(|_| chain_point(&c.name)) else {
            continue;
        };
        let mut seen = vec![false; chains.len()];
        let mut todo = vec![b];
        while let Some(i) = todo.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            for r in &chains[i].rules {
                f(b, point, i, r)?;
            }
            todo.extend(edges[i].iter().map(|&(t, _)| t));
        }
    }
    Ok(())
}

pub use crate::datapath::prefix::Prefix;

/// Inclusive port ranges (`--dport 80`, `1024:65535`, multiport lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports(pub Vec<(u16, u16)>);

impl Ports {
    pub fn contains(&self, p: u16) -> bool {
        self.0.iter().any(|&(a, b)| a <= p && p <= b)
    }

    /// The single port, when this is exactly one.
    pub fn single(&self) -> Option<u16> {
        match self.0.as_slice() {
            [(a, b)] if a == b => Some(*a),
            _ => None,
        }
    }
}

/// `-m ipvs` options (each optional, each negatable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpvsMatch {
    pub ipvs: Option<bool>,
    pub vaddr: Option<(bool, Prefix)>,
    pub vport: Option<(bool, u16)>,
    pub vproto: Option<(bool, u8)>,
    /// GATE, IPIP, MASQ.
    pub vmethod: Option<(bool, uvs_sched::FwdMethod)>,
    /// `--vdir ORIGINAL` is `Some(false)` reply; `Some(true)` original.
    pub vdir_original: Option<bool>,
}

/// Everything a rule matches on; `bool` is "negated".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matches {
    pub proto: Option<(bool, u8)>,
    pub src: Option<(bool, Prefix)>,
    pub dst: Option<(bool, Prefix)>,
    pub sport: Option<(bool, Ports)>,
    pub dport: Option<(bool, Ports)>,
    /// `-i NAME` ([`iface`]).
    pub iif: Option<iface::IfMatch>,
    /// `-o NAME` ([`route`]: the interface of the packet's route).
    pub oif: Option<iface::IfMatch>,
    /// `--mark V[/M]`.
    pub mark: Option<(bool, u32, u32)>,
    /// `--ctstate` bits ([`CtState`]).
    pub ctstate: Option<(bool, u8)>,
    pub ipvs: Option<IpvsMatch>,
    /// `-m set --match-set` (each must match).
    pub sets: Vec<ipset::SetMatch>,
    /// `-m addrtype`.
    pub addrtype: Option<addrtype::AddrType>,
}

/// Rule targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// No `-j`: the rule only counts.
    None,
    Accept,
    Drop,
    Reject,
    Return,
    /// `-j CHAIN` (index into the table's chains).
    Jump(usize),
    /// `-g CHAIN`.
    Goto(usize),
    /// `MARK`: `mark = (mark & !mask) ^ xor` (`--set-xmark`; `--set-mark
    /// V/M` is xor = V with the masked bits cleared first, which is the
    /// same with `mask` = M and `xor` = V).
    Mark {
        mask: u32,
        xor: u32,
    },
    /// `LOG`: counted, and a kernel-format line ([`log`]); the walk goes on.
    Log(log::LogSpec),
    /// `DNAT`, `SNAT`, `MASQUERADE`: the flow's translation (nat table).
    Nat(nat::NatTo),
}

impl Target {
    /// iptables' name of the target (what a trace records).
    pub fn iptables_name(&self) -> &'static str {
        match self {
            Target::None => "",
            Target::Accept => "ACCEPT",
            Target::Drop => "DROP",
            Target::Reject => "REJECT",
            Target::Return => "RETURN",
            Target::Jump(_) => "JUMP",
            Target::Goto(_) => "GOTO",
            Target::Mark { .. } => "MARK",
            Target::Log(_) => "LOG",
            Target::Nat(n) => n.kind.name(),
        }
    }
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub m: Matches,
    pub target: Target,
    /// The rule as written after `-A CHAIN` (for `save`).
    pub text: String,
    /// `[pkts:bytes]` it was restored with.
    pub base: (u64, u64),
    /// Line in the text it came from.
    pub line: usize,
}

/// Built-in chain policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

/// One chain: its rules in order and their index.
#[derive(Debug, Clone)]
pub struct Chain {
    pub name: String,
    /// `None` for user chains.
    pub policy: Option<Policy>,
    pub base: (u64, u64),
    pub rules: Vec<Rule>,
    /// Position of the chain's first rule in the table's counter array.
    pub(crate) first: usize,
    pub(crate) index: eval::Index,
}

/// Counters of one worker slot: (packets, bytes) per rule, then per chain
/// policy.
#[derive(Debug)]
#[repr(align(128))]
struct Slot(Box<[[AtomicU64; 2]]>);

/// Worker slots per table: workers beyond this share slots (still exact,
/// atomically added).
pub const SLOTS: usize = 16;

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_SLOT: usize = NEXT_SLOT.fetch_add(1, Relaxed) % SLOTS;
}

/// This thread's counter slot.
#[inline]
pub(crate) fn my_slot() -> usize {
    MY_SLOT.try_with(|s| *s).unwrap_or(0)
}

/// One table: chains, the built-ins' positions by hook point, counters.
#[derive(Debug)]
pub struct Table {
    pub id: TableId,
    pub chains: Vec<Chain>,
    /// Built-in chain at each hook point (by `HookPoint as usize`).
    pub(crate) at: [Option<usize>; HookPoint::COUNT],
    /// Rules in all chains.
    pub(crate) n_rules: usize,
    slots: Box<[Slot]>,
}

impl Table {
    pub(crate) fn new(id: TableId, chains: Vec<Chain>) -> Table {
        let mut chains = chains;
        let mut first = 0;
        for c in &mut chains {
            c.first = first;
            first += c.rules.len();
            c.index = eval::Index::build(&c.rules);
        }
        let n_rules = first;
        let mut at = [None; HookPoint::COUNT];
        for (i, c) in chains.iter().enumerate() {
            if c.policy.is_some() {
                if let Some(p) = chain_point(&c.name) {
                    at[p as usize] = Some(i);
                }
            }
        }
        let n = n_rules + chains.len();
        let slots = (0..SLOTS)
            .map(|_| {
                Slot(
                    (0..n)
                        .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                        .collect(),
                )
            })
            .collect();
        Table {
            id,
            chains,
            at,
            n_rules,
            slots,
        }
    }

    /// The chain named `name`.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    #[inline]
    pub(crate) fn count(&self, counter: usize, bytes: u32) {
        if let Some(c) = self.slots[my_slot()].0.get(counter) {
            c[0].fetch_add(1, Relaxed);
            c[1].fetch_add(u64::from(bytes), Relaxed);
        }
    }

    fn counted(&self, counter: usize) -> (u64, u64) {
        let mut t = (0, 0);
        for s in self.slots.iter() {
            t.0 += s.0[counter][0].load(Relaxed);
            t.1 += s.0[counter][1].load(Relaxed);
        }
        t
    }

    /// (packets, bytes) of rule `i` of chain `c`, with its restored base.
    pub fn rule_counts(&self, c: usize, i: usize) -> (u64, u64) {
        let ch = &self.chains[c];
        let (p, b) = self.counted(ch.first + i);
        (p + ch.rules[i].base.0, b + ch.rules[i].base.1)
    }

    /// (packets, bytes) of chain `c`'s policy, with its restored base.
    pub fn policy_counts(&self, c: usize) -> (u64, u64) {
        let (p, b) = self.counted(self.n_rules + c);
        (p + self.chains[c].base.0, b + self.chains[c].base.1)
    }
}

/// The tables as the workers see them (immutable; replaced whole).
#[derive(Debug)]
pub struct Ruleset {
    tables: [Option<std::sync::Arc<Table>>; 3],
    /// Whether any loaded rule reads the connection table (`-m conntrack`,
    /// `-m ipvs`), so packets need not look it up early otherwise.
    pub needs_ct: bool,
    /// No rule and no DROP policy anywhere (worked out once per ruleset,
    /// not per packet).
    empty: bool,
    /// The nat table has a rule (then packets look their flow up in the
    /// nat connection table).
    pub nat_on: bool,
    /// The director's addresses, for MASQUERADE (set by the daemon).
    pub local: nat::LocalNets,
    /// The same, hashed, for `-m addrtype` (built with `local`).
    pub addrs: std::sync::Arc<addrtype::LocalAddrs>,
    /// Some rule has `-m addrtype`, or tunnelled packets walk the tables
    /// ([`Ruleset::tunnel_walk_on`]: their outer source is read from it):
    /// then the daemon reads `local`.
    pub needs_local: bool,
    /// The director's links, for `-i` (set by the daemon).
    pub links: std::sync::Arc<iface::Links>,
    /// Some rule has `-i` or `-o`, or is a LOG rule (whose lines name
    /// interfaces): then the daemon reads `links`.
    pub needs_links: bool,
    /// The director's routes, for `-o` (set by the daemon).
    pub routes: std::sync::Arc<route::Routes>,
    /// Some rule has `-o` (then the daemon reads `routes`).
    pub needs_routes: bool,
    /// The ipsets `-m set` rules look up (ids fixed at parse).
    pub sets: std::sync::Arc<ipset::Sets>,
}

impl Default for Ruleset {
    fn default() -> Self {
        Ruleset {
            tables: [None, None, None],
            needs_ct: false,
            empty: true,
            nat_on: false,
            local: nat::LocalNets::default(),
            addrs: Default::default(),
            needs_local: false,
            links: Default::default(),
            needs_links: false,
            routes: Default::default(),
            needs_routes: false,
            sets: Default::default(),
        }
    }
}

impl Ruleset {
    pub(crate) fn from_tables(tables: Vec<Table>) -> Ruleset {
        let mut r = Ruleset::default();
        for t in tables {
            let i = t.id as usize;
            r.tables[i] = Some(std::sync::Arc::new(t));
        }
        r.needs_ct = r.compute_needs_ct();
        r.empty = r.compute_empty();
        r.nat_on = r.table(TableId::Nat).is_some_and(|t| t.n_rules > 0);
        r.needs_local = r.any_rule(|r| r.m.addrtype.is_some()) || r.tunnel_walk_on();
        r.needs_links = r.any_rule(needs_links);
        r.needs_routes = r.any_rule(needs_routes);
        r
    }

    /// This ruleset with `-o`'s routes ([`route::read_routes`]).
    pub fn with_routes(mut self, routes: route::Routes) -> Ruleset {
        self.routes = std::sync::Arc::new(routes);
        self
    }

    /// This ruleset with `-i`'s links ([`iface::read_links`]).
    pub fn with_links(mut self, links: iface::Links) -> Ruleset {
        self.links = std::sync::Arc::new(links);
        self
    }

    /// This ruleset with MASQUERADE's (and `-m addrtype`'s) addresses.
    pub fn with_local_nets(mut self, local: nat::LocalNets) -> Ruleset {
        self.addrs = std::sync::Arc::new(addrtype::LocalAddrs::from_nets(&local));
        self.local = local;
        self
    }

    /// This ruleset with other ipsets: the tables are shared, so a set
    /// change costs the set's new version, not the tables. The ids the
    /// rules hold must still name the same sets (the ipset commands never
    /// renumber a set, and never destroy one in use).
    pub fn with_sets(&self, sets: std::sync::Arc<ipset::Sets>) -> Ruleset {
        Ruleset {
            tables: self.tables.clone(),
            needs_ct: self.needs_ct,
            empty: self.empty,
            nat_on: self.nat_on,
            local: self.local.clone(),
            addrs: self.addrs.clone(),
            needs_local: self.needs_local,
            links: self.links.clone(),
            needs_links: self.needs_links,
            routes: self.routes.clone(),
            needs_routes: self.needs_routes,
            sets,
        }
    }

    fn any_rule(&self, f: impl Fn(&Rule) -> bool) -> bool {
        self.tables
            .iter()
            .flatten()
            .any(|t| t.chains.iter().flat_map(|c| &c.rules).any(&f))
    }

    /// How many rules look up set `id` (ipset's References).
    pub fn set_refs(&self, id: u32) -> usize {
        self.tables
            .iter()
            .flatten()
            .flat_map(|t| t.chains.iter().flat_map(|c| &c.rules))
            .filter(|r| r.m.sets.iter().any(|m| m.id == id))
            .count()
    }

    fn compute_needs_ct(&self) -> bool {
        self.tables.iter().flatten().any(|t| {
            t.chains
                .iter()
                .flat_map(|c| &c.rules)
                .any(|r| r.m.ctstate.is_some() || r.m.ipvs.is_some())
        })
    }

    /// This ruleset with the tables `new` holds replacing its own (the
    /// others, with their counters, stay).
    pub fn replaced_by(&self, new: Ruleset) -> Ruleset {
        let mut r = Ruleset::default();
        for (i, t) in new.tables.into_iter().enumerate() {
            r.tables[i] = t.or_else(|| self.tables[i].clone());
        }
        r.needs_ct = r.compute_needs_ct();
        r.empty = r.compute_empty();
        r.nat_on = r.table(TableId::Nat).is_some_and(|t| t.n_rules > 0);
        r.needs_local = r.any_rule(|r| r.m.addrtype.is_some()) || r.tunnel_walk_on();
        r.local = self.local.clone();
        r.addrs = self.addrs.clone();
        r.needs_links = r.any_rule(needs_links);
        r.links = self.links.clone();
        r.needs_routes = r.any_rule(needs_routes);
        r.routes = self.routes.clone();
        // Tables are parsed against the current sets (`parse_with`): the
        // sets stay.
        r.sets = self.sets.clone();
        r
    }

    /// One table, if loaded.
    pub fn table(&self, id: TableId) -> Option<&Table> {
        self.tables[id as usize].as_deref()
    }

    /// Whether no table has a rule or a DROP policy (then the hooks skip
    /// the walk). O(1).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    fn compute_empty(&self) -> bool {
        self.tables
            .iter()
            .flatten()
            .all(|t| t.n_rules == 0 && t.chains.iter().all(|c| c.policy != Some(Policy::Drop)))
    }

    /// Whether the outer packets of IPVS tunnelling meet a table: mangle
    /// or filter OUTPUT, or mangle POSTROUTING, has a rule or a DROP policy
    /// (see `pipeline/tun_out.rs`). O(1).
    #[inline]
    pub fn tunnel_walk_on(&self) -> bool {
        self.active(TableId::Mangle, HookPoint::LocalOut)
            || self.active(TableId::Filter, HookPoint::LocalOut)
            || self.active(TableId::Mangle, HookPoint::PostRouting)
    }

    /// Whether `id` has anything to do at `point`.
    #[inline]
    pub fn active(&self, id: TableId, point: HookPoint) -> bool {
        self.tables[id as usize]
            .as_ref()
            .and_then(|t| t.at[point as usize].map(|c| (t, c)))
            .is_some_and(|(t, c)| {
                !t.chains[c].rules.is_empty() || t.chains[c].policy == Some(Policy::Drop)
            })
    }

    /// The marks that mangle MARK rules can set, with the (protocol,
    /// destination host, port) each such rule names when it names all
    /// three: what uvs must claim from the kernel for fwmark services.
    pub fn mark_claims(&self) -> Vec<(u8, IpAddr, u16)> {
        let mut v = Vec::new();
        let Some(t) = self.table(TableId::Mangle) else {
            return v;
        };
        for r in t.chains.iter().flat_map(|c| &c.rules) {
            if !matches!(r.target, Target::Mark { .. }) {
                continue;
            }
            let (Some((false, p)), Some((false, d))) = (r.m.proto, r.m.dst) else {
                continue;
            };
            if !d.is_host() {
                continue;
            }
            if let Some((false, ports)) = &r.m.dport {
                for &(a, b) in &ports.0 {
                    // Bounded: a claim per port, for ranges up to 64 ports.
                    if b - a < 64 {
                        v.extend((a..=b).map(|port| (p, d.addr, port)));
                    }
                }
            }
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// A (protocol, address, port) uvs claims from the kernel.
pub type Claim = (u8, IpAddr, u16);

impl Ruleset {
    /// What DNAT rules make uvs's: the (protocol, destination host, port)
    /// each names when it names all three (to claim from the kernel as a
    /// service's), and the (protocol, address, port) it sends them to (whose
    /// replies uvs un-NATs).
    pub fn dnat_claims(&self) -> (Vec<Claim>, Vec<Claim>) {
        let (mut to_us, mut servers) = (Vec::new(), Vec::new());
        let Some(t) = self.table(TableId::Nat) else {
            return (to_us, servers);
        };
        for r in t.chains.iter().flat_map(|c| &c.rules) {
            let Target::Nat(n) = r.target else {
                continue;
            };
            let (nat::NatKind::Dnat, Some(addr), Some((false, p))) = (n.kind, n.addr, r.m.proto)
            else {
                continue;
            };
            let ports: Vec<u16> = match &r.m.dport {
                Some((false, ports)) => ports
                    .0
                    .iter()
                    .filter(|(a, b)| b - a < 64)
                    .flat_map(|&(a, b)| a..=b)
                    .collect(),
                _ => Vec::new(),
            };
            if let Some((false, d)) = r.m.dst {
                if d.is_host() {
                    to_us.extend(ports.iter().map(|&port| (p, d.addr, port)));
                }
            }
            match n.ports {
                // A range: each port of it (bounded), else any port.
                Some((a, b)) if b - a < 64 => servers.extend((a..=b).map(|x| (p, addr, x))),
                Some(_) => servers.push((p, addr, 0)),
                None if !ports.is_empty() => servers.extend(ports.iter().map(|&x| (p, addr, x))),
                // Any port: every reply of that server and protocol.
                None => servers.push((p, addr, 0)),
            }
        }
        for v in [&mut to_us, &mut servers] {
            v.sort_unstable();
            v.dedup();
        }
        (to_us, servers)
    }
}

/// Whether rule `r` needs the director's links (`-i`, LOG's `IN=`).
fn needs_links(r: &Rule) -> bool {
    r.m.iif.is_some() || r.m.oif.is_some() || matches!(r.target, Target::Log(_))
}

/// `-o`, and LOG lines' `OUT=`, ask the route table.
fn needs_routes(r: &Rule) -> bool {
    r.m.oif.is_some() || matches!(r.target, Target::Log(_))
}

/// Lookup of a chain by name inside a table being built.
pub(crate) type ChainNames = HashMap<String, usize>;

#[cfg(test)]
mod tests;
