//! `iptables-save` text → [`Ruleset`]: a pure function (no I/O, no
//! global state), so it can be fuzzed and so a bad text changes nothing.

use foldhash::HashMapExt;

use super::eval::CtState;
use super::nat::{NatKind, NatTo};
use super::natct::PortPick;
use super::{
    eval::Index, Chain, ChainNames, IpvsMatch, Matches, Policy, Ports, Prefix, Rule, Ruleset,
    Table, TableId, TablesError, Target,
};

/// Deepest chain of jumps a ruleset may hold (the walk's fixed stack).
pub const MAX_DEPTH: usize = 16;

/// Parses a whole `iptables-save` text (`*table`, `:CHAIN POLICY
/// [pkts:bytes]`, `-N`, `-A`, `-I`, `COMMIT`; `#` comments). The first
/// error ends it, naming its line.
pub fn parse(text: &str) -> Result<Ruleset, TablesError> {
    parse_with(text, &super::ipset::Sets::default())
}

/// [`parse`] with the ipsets that `-m set` rules may name (a rule naming
/// another set is refused, as iptables does); the ruleset holds them.
pub fn parse_with(text: &str, sets: &super::ipset::Sets) -> Result<Ruleset, TablesError> {
    let mut done: Vec<Table> = Vec::new();
    let mut cur: Option<Building> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |msg: String| TablesError { line, msg };
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(name) = l.strip_prefix('*') {
            if let Some(b) = &cur {
                return Err(err(format!(
                    "*{name} before COMMIT of *{} (line {})",
                    b.id.name(),
                    b.line
                )));
            }
            let id = match name.trim() {
                "mangle" => TableId::Mangle,
                "nat" => TableId::Nat,
                "filter" => TableId::Filter,
                t => {
                    return Err(err(format!(
                        "table '{t}' is not emulated (mangle, nat, filter)"
                    )))
                }
            };
            if done.iter().any(|t| t.id == id) {
                return Err(err(format!("table *{name} appears twice")));
            }
            cur = Some(Building::new(id, line));
            continue;
        }
        let Some(b) = cur.as_mut() else {
            return Err(err(format!(
                "'{l}' outside a table (expected *mangle, *nat or *filter)"
            )));
        };
        if l == "COMMIT" {
            let b = cur.take().expect("checked above");
            done.push(b.finish()?);
            continue;
        }
        if let Some(decl) = l.strip_prefix(':') {
            b.declare(decl).map_err(err)?;
            continue;
        }
        let words = tokenize(l).map_err(err)?;
        b.command(&words, line, sets).map_err(err)?;
    }
    if let Some(b) = cur {
        return Err(TablesError {
            line: b.line,
            msg: format!("*{} has no COMMIT", b.id.name()),
        });
    }
    let mut r = Ruleset::from_tables(done);
    r.sets = std::sync::Arc::new(sets.clone());
    Ok(r)
}

/// A rule whose jump is still a name (chains may be declared after use
/// within a table).
struct PendingRule {
    rule: Rule,
    jump: Option<(String, bool)>,
}

struct ChainB {
    name: String,
    policy: Option<Policy>,
    base: (u64, u64),
    declared: bool,
    rules: Vec<PendingRule>,
}

struct Building {
    id: TableId,
    line: usize,
    chains: Vec<ChainB>,
    names: ChainNames,
}

impl Building {
    fn new(id: TableId, line: usize) -> Building {
        let mut b = Building {
            id,
            line,
            chains: Vec::new(),
            names: ChainNames::new(),
        };
        for n in id.builtins() {
            b.add_chain(n, Some(Policy::Accept));
        }
        b
    }

    fn add_chain(&mut self, name: &str, policy: Option<Policy>) -> usize {
        let i = self.chains.len();
        self.chains.push(ChainB {
            name: name.to_string(),
            policy,
            base: (0, 0),
            declared: false,
            rules: Vec::new(),
        });
        self.names.insert(name.to_string(), i);
        i
    }

    /// `:NAME POLICY [pkts:bytes]`.
    fn declare(&mut self, decl: &str) -> Result<(), String> {
        let mut w = decl.split_whitespace();
        let name = w.next().ok_or("':' needs a chain name")?;
        let policy = w.next().ok_or_else(|| format!(":{name} needs a policy"))?;
        let base = match w.next() {
            None => (0, 0),
            Some(c) => parse_counts(c)?,
        };
        if let Some(x) = w.next() {
            return Err(format!("unexpected '{x}' after :{name}'s counters"));
        }
        let builtin = self.id.builtins().contains(&name);
        let i = match (builtin, policy) {
            (true, "ACCEPT" | "DROP") => self.names[name],
            (true, p) => return Err(format!("built-in chain {name}: policy '{p}' (ACCEPT or DROP)")),
            (false, "-") => {
                valid_chain_name(name)?;
                match self.names.get(name) {
                    Some(&i) => i,
                    None => self.add_chain(name, None),
                }
            }
            (false, p) => {
                return Err(format!(
                    "user chain {name} takes policy '-', not '{p}' (or {name} is not a built-in chain of *{})",
                    self.id.name()
                ))
            }
        };
        let c = &mut self.chains[i];
        if c.declared {
            return Err(format!("chain {name} declared twice"));
        }
        c.declared = true;
        c.base = base;
        if builtin {
            c.policy = Some(if policy == "DROP" {
                Policy::Drop
            } else {
                Policy::Accept
            });
        }
        Ok(())
    }

    fn command(
        &mut self,
        words: &[Word],
        line: usize,
        sets: &super::ipset::Sets,
    ) -> Result<(), String> {
        let mut w = words;
        let mut base = (0, 0);
        if let Some(c) = w.first().filter(|c| c.text.starts_with('[')) {
            base = parse_counts(&c.text)?;
            w = &w[1..];
        }
        let (cmd, rest) = w.split_first().ok_or("counters without a command")?;
        match cmd.text.as_str() {
            "-N" | "--new-chain" => {
                let [name] = rest else {
                    return Err("-N takes one chain name".into());
                };
                valid_chain_name(&name.text)?;
                if self.names.contains_key(&name.text) {
                    return Err(format!("chain {} already exists", name.text));
                }
                self.add_chain(&name.text, None);
                Ok(())
            }
            "-A" | "--append" | "-I" | "--insert" => {
                let (chain, mut rest) = rest
                    .split_first()
                    .ok_or_else(|| format!("{} needs a chain", cmd.text))?;
                let ci = *self
                    .names
                    .get(&chain.text)
                    .ok_or_else(|| format!("no chain {} in *{}", chain.text, self.id.name()))?;
                let mut at = None;
                if cmd.text.starts_with("-I") || cmd.text == "--insert" {
                    at = Some(0);
                    if let Some(n) = rest.first().and_then(|n| n.text.parse::<usize>().ok()) {
                        let len = self.chains[ci].rules.len();
                        if n == 0 || n > len + 1 {
                            return Err(format!("-I {} {n}: chain has {len} rules", chain.text));
                        }
                        at = Some(n - 1);
                        rest = &rest[1..];
                    }
                }
                let r = rule(self.id, rest, base, line, sets)?;
                if r.rule.m.iif.is_some() && matches!(chain.text.as_str(), "OUTPUT" | "POSTROUTING")
                {
                    return Err(format!(
                        "-i can't be used in the {} chain (packets there have no input interface)",
                        chain.text
                    ));
                }
                if r.rule.m.oif.is_some() && matches!(chain.text.as_str(), "PREROUTING" | "INPUT") {
                    return Err(format!(
                        "-o can't be used in the {} chain (the output interface is not chosen there yet)",
                        chain.text
                    ));
                }
                let rules = &mut self.chains[ci].rules;
                match at {
                    None => rules.push(r),
                    Some(i) => rules.insert(i, r),
                }
                Ok(())
            }
            c => Err(format!(
                "unknown command '{c}' (expected -A, -I, -N, :CHAIN, COMMIT)"
            )),
        }
    }

    fn finish(self) -> Result<Table, TablesError> {
        let names = self.names;
        let mut chains = Vec::with_capacity(self.chains.len());
        let mut edges: Vec<Vec<(usize, usize)>> = Vec::with_capacity(self.chains.len());
        for c in self.chains {
            let mut rules = Vec::with_capacity(c.rules.len());
            let mut out = Vec::new();
            for p in c.rules {
                let mut r = p.rule;
                if let Some((name, goto)) = p.jump {
                    let &t = names.get(&name).ok_or_else(|| TablesError {
                        line: r.line,
                        msg: format!("no chain or target '{name}'"),
                    })?;
                    out.push((t, r.line));
                    r.target = if goto {
                        Target::Goto(t)
                    } else {
                        Target::Jump(t)
                    };
                }
                rules.push(r);
            }
            edges.push(out);
            chains.push(Chain {
                name: c.name,
                policy: c.policy,
                base: c.base,
                rules,
                first: 0,
                index: Index::default(),
            });
        }
        for (i, c) in chains.iter().enumerate() {
            for &(t, line) in &edges[i] {
                if chains[t].policy.is_some() {
                    return Err(TablesError {
                        line,
                        msg: format!("cannot jump to built-in chain {}", chains[t].name),
                    });
                }
            }
            let _ = c;
        }
        // Loops and depth: a walk from every chain (chains are few; the
        // depth bound keeps this small).
        for start in 0..chains.len() {
            depth_check(&edges, start, 0, &mut vec![start])?;
        }
        if self.id == TableId::Nat {
            super::nat::hooks_check(&chains, &edges)?;
        }
        super::route::hooks_check(&chains, &edges)?;
        Ok(Table::new(self.id, chains))
    }
}

fn depth_check(
    edges: &[Vec<(usize, usize)>],
    c: usize,
    depth: usize,
    path: &mut Vec<usize>,
) -> Result<(), TablesError> {
    for &(t, line) in &edges[c] {
        if path.contains(&t) {
            return Err(TablesError {
                line,
                msg: "this jump makes a loop".into(),
            });
        }
        if depth + 1 >= MAX_DEPTH {
            return Err(TablesError {
                line,
                msg: format!("jumps nest deeper than {MAX_DEPTH} chains"),
            });
        }
        path.push(t);
        depth_check(edges, t, depth + 1, path)?;
        path.pop();
    }
    Ok(())
}

fn valid_chain_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > 28 || n.starts_with('-') || n.starts_with('!') {
        return Err(format!("invalid chain name '{n}'"));
    }
    if matches!(
        n,
        "ACCEPT"
            | "DROP"
            | "REJECT"
            | "RETURN"
            | "MARK"
            | "LOG"
            | "DNAT"
            | "SNAT"
            | "MASQUERADE"
            | "REDIRECT"
    ) {
        return Err(format!("chain name '{n}' is a target's"));
    }
    Ok(())
}

fn parse_counts(s: &str) -> Result<(u64, u64), String> {
    let inner = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .ok_or_else(|| format!("counters '{s}': expected [packets:bytes]"))?;
    let (p, b) = inner
        .split_once(':')
        .ok_or_else(|| format!("counters '{s}': expected [packets:bytes]"))?;
    match (p.parse(), b.parse()) {
        (Ok(p), Ok(b)) => Ok((p, b)),
        _ => Err(format!("counters '{s}': expected [packets:bytes]")),
    }
}

/// One word of a rule line, as written (quotes kept for `save`) and as
/// meant.
struct Word {
    text: String,
    raw: String,
}

/// Splits a line as iptables-restore does: blanks separate words, double
/// quotes group them.
fn tokenize(l: &str) -> Result<Vec<Word>, String> {
    let mut v = Vec::new();
    let mut chars = l.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(v);
        }
        let (mut text, mut raw) = (String::new(), String::new());
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() && !quoted {
                break;
            }
            chars.next();
            raw.push(c);
            match c {
                '"' => quoted = !quoted,
                '\\' if quoted => {
                    if let Some(n) = chars.next() {
                        raw.push(n);
                        text.push(n);
                    }
                }
                c => text.push(c),
            }
        }
        if quoted {
            return Err("unterminated quote".into());
        }
        v.push(Word { text, raw });
    }
}

fn parse_prefix(s: &str) -> Result<Prefix, String> {
    Prefix::parse(s).map_err(|e| match e {
        crate::datapath::prefix::PrefixError::Address(a) => {
            format!("invalid address '{a}' (no host names, no lists)")
        }
        crate::datapath::prefix::PrefixError::Length { len, .. } => {
            format!("invalid prefix length '{len}' in '{s}'")
        }
    })
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s {
        "http" => Ok(80),
        "https" => Ok(443),
        "ssh" => Ok(22),
        "domain" => Ok(53),
        _ => s.parse().map_err(|_| format!("invalid port '{s}'")),
    }
}

/// `P`, `A:B`, `:B`, `A:`.
fn parse_range(s: &str) -> Result<(u16, u16), String> {
    match s.split_once(':') {
        None => parse_port(s).map(|p| (p, p)),
        Some((a, b)) => {
            let a = if a.is_empty() { 0 } else { parse_port(a)? };
            let b = if b.is_empty() { 65535 } else { parse_port(b)? };
            if a > b {
                return Err(format!("port range '{s}' is backwards"));
            }
            Ok((a, b))
        }
    }
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("invalid number '{s}'"))
}

/// `V` or `V/M` (mask defaults to all ones).
fn parse_mark(s: &str) -> Result<(u32, u32), String> {
    match s.split_once('/') {
        None => Ok((parse_u32(s)?, u32::MAX)),
        Some((v, m)) => Ok((parse_u32(v)?, parse_u32(m)?)),
    }
}

fn parse_proto(s: &str) -> Result<u8, String> {
    Ok(match s {
        "tcp" => 6,
        "udp" => 17,
        "sctp" => 132,
        "icmp" => 1,
        "icmpv6" | "ipv6-icmp" => 58,
        // The outer protocols of IPVS tunnels (`pipeline/tun_out.rs`), by
        // /etc/protocols' names as iptables-save prints them.
        "ipv4" | "ipencap" => 4,
        "ipv6" => 41,
        "gre" => 47,
        p => p.parse().map_err(|_| format!("unknown protocol '{p}'"))?,
    })
}

/// Parses the words after `-A CHAIN` into a rule of table `id`.
fn rule(
    id: TableId,
    words: &[Word],
    base: (u64, u64),
    line: usize,
    sets: &super::ipset::Sets,
) -> Result<PendingRule, String> {
    let mut m = Matches::default();
    let mut target = Target::None;
    let mut target_name: Option<String> = None;
    let mut jump = None;
    let mut modules: Vec<&str> = Vec::new();
    let mut mark_opt: Option<(u32, u32, bool)> = None;
    let mut neg = false;
    // LOG's option words (left out of the saved text) and the word `LOG`
    // (after which they are written back in iptables-save's form).
    let (mut log_words, mut log_at) = (Vec::new(), None);
    let mut i = 0;
    let next = |i: &mut usize, what: &str, opt: &str| -> Result<String, String> {
        *i += 1;
        words
            .get(*i)
            .map(|w| w.text.clone())
            .ok_or_else(|| format!("{opt} needs {what}"))
    };
    while i < words.len() {
        let w = words[i].text.as_str();
        if w == "!" {
            if neg {
                return Err("'!' twice".into());
            }
            neg = true;
            i += 1;
            continue;
        }
        let n = std::mem::take(&mut neg);
        let needs = |module: &str, modules: &[&str]| {
            if modules.contains(&module) {
                Ok(())
            } else {
                Err(format!("{w} needs -m {module}"))
            }
        };
        match w {
            "-p" | "--protocol" => {
                m.proto = Some((n, parse_proto(&next(&mut i, "a protocol", w)?)?))
            }
            "-s" | "--source" => m.src = Some((n, parse_prefix(&next(&mut i, "an address", w)?)?)),
            "-d" | "--destination" => {
                m.dst = Some((n, parse_prefix(&next(&mut i, "an address", w)?)?))
            }
            "-i" | "--in-interface" | "-o" | "--out-interface" => {
                let dev = next(&mut i, "an interface", w)?;
                if w.starts_with("-i") || w == "--in-interface" {
                    m.iif = Some(super::iface::IfMatch::parse(n, &dev)?);
                } else {
                    m.oif = Some(super::iface::IfMatch::parse(n, &dev)?);
                }
            }
            "-m" | "--match" => {
                let name = next(&mut i, "a match name", w)?;
                let known = [
                    "tcp",
                    "udp",
                    "sctp",
                    "multiport",
                    "mark",
                    "conntrack",
                    "state",
                    "ipvs",
                    "comment",
                    "set",
                    "addrtype",
                ];
                let Some(k) = known.iter().find(|k| **k == name) else {
                    return Err(format!(
                        "match '-m {name}' is not emulated ({})",
                        known.join(", ")
                    ));
                };
                if matches!(*k, "tcp" | "udp" | "sctp")
                    && m.proto.map(|p| p.1) != Some(parse_proto(k)?)
                {
                    return Err(format!("-m {k} needs -p {k} first"));
                }
                modules.push(k);
            }
            "--sport" | "--source-port" | "--dport" | "--destination-port" => {
                if !matches!(m.proto, Some((false, 6 | 17 | 132))) {
                    return Err(format!("{w} needs -p tcp, udp or sctp"));
                }
                let r = parse_range(&next(&mut i, "a port", w)?)?;
                let v = Some((n, Ports(vec![r])));
                if w.contains('s') && w != "--dport" && w != "--destination-port" {
                    m.sport = v;
                } else {
                    m.dport = v;
                }
            }
            "--sports" | "--source-ports" | "--dports" | "--destination-ports" => {
                needs("multiport", &modules)?;
                if !matches!(m.proto, Some((false, 6 | 17 | 132))) {
                    return Err(format!("{w} needs -p tcp, udp or sctp"));
                }
                let list = next(&mut i, "a port list", w)?;
                let v: Vec<_> = list.split(',').map(parse_range).collect::<Result<_, _>>()?;
                if v.len() > 15 {
                    return Err(format!("{w}: more than 15 ports"));
                }
                let v = Some((n, Ports(v)));
                if w.starts_with("--s") {
                    m.sport = v;
                } else {
                    m.dport = v;
                }
            }
            "--mark" => {
                needs("mark", &modules)?;
                let (v, mk) = parse_mark(&next(&mut i, "a mark", w)?)?;
                m.mark = Some((n, v, mk));
            }
            "--ctstate" | "--state" => {
                if !modules.contains(&"conntrack") && !modules.contains(&"state") {
                    return Err(format!("{w} needs -m conntrack"));
                }
                let mut bits = 0;
                for s in next(&mut i, "states", w)?.split(',') {
                    bits |= match s {
                        "NEW" => CtState::NEW,
                        "ESTABLISHED" => CtState::ESTABLISHED,
                        "RELATED" => CtState::RELATED,
                        "INVALID" => CtState::INVALID,
                        "SNAT" => CtState::SNAT,
                        "DNAT" => CtState::DNAT,
                        // uvs tracks every flow it sees (no raw NOTRACK):
                        // a bit no packet has.
                        "UNTRACKED" => 64,
                        s => {
                            return Err(format!(
                                "unknown state '{s}' (NEW, ESTABLISHED, RELATED, INVALID, UNTRACKED, SNAT, DNAT)"
                            ))
                        }
                    };
                }
                m.ctstate = Some((n, bits));
            }
            "--ipvs" | "--vaddr" | "--vport" | "--vproto" | "--vmethod" | "--vdir" => {
                needs("ipvs", &modules)?;
                let x = m.ipvs.get_or_insert_with(IpvsMatch::default);
                match w {
                    "--ipvs" => x.ipvs = Some(!n),
                    "--vaddr" => {
                        x.vaddr = Some((n, parse_prefix(&next(&mut i, "an address", w)?)?))
                    }
                    "--vport" => x.vport = Some((n, parse_port(&next(&mut i, "a port", w)?)?)),
                    "--vproto" => {
                        x.vproto = Some((n, parse_proto(&next(&mut i, "a protocol", w)?)?))
                    }
                    "--vmethod" => {
                        let v = next(&mut i, "GATE, IPIP or MASQ", w)?;
                        let f = match v.as_str() {
                            "GATE" => uvs_sched::FwdMethod::Route,
                            "IPIP" => uvs_sched::FwdMethod::Tunnel,
                            "MASQ" => uvs_sched::FwdMethod::Masq,
                            v => return Err(format!("--vmethod '{v}' (GATE, IPIP or MASQ)")),
                        };
                        x.vmethod = Some((n, f));
                    }
                    _ => {
                        if n {
                            return Err("--vdir cannot be negated".into());
                        }
                        x.vdir_original =
                            Some(match next(&mut i, "ORIGINAL or REPLY", w)?.as_str() {
                                "ORIGINAL" => true,
                                "REPLY" => false,
                                v => return Err(format!("--vdir '{v}' (ORIGINAL or REPLY)")),
                            });
                    }
                }
            }
            "--match-set" | "--set" => {
                needs("set", &modules)?;
                let name = next(&mut i, "a set name", w)?;
                let flags = next(&mut i, "src/dst flags", w)?;
                m.sets
                    .push(super::ipset::parse_match(sets, n, &name, &flags)?);
            }
            "--src-type" | "--dst-type" => {
                needs("addrtype", &modules)?;
                let t = super::addrtype::parse_types(&next(&mut i, "address types", w)?)?;
                let a = m.addrtype.get_or_insert_with(Default::default);
                let side = if w == "--src-type" {
                    &mut a.src
                } else {
                    &mut a.dst
                };
                if side.is_some() {
                    return Err(format!("{w} twice"));
                }
                *side = Some((n, t));
            }
            "--limit-iface-in" | "--limit-iface-out" => {
                return Err(format!("{w}: uvs's tables do not match interfaces yet"))
            }
            "--comment" => {
                needs("comment", &modules)?;
                next(&mut i, "a comment", w)?;
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                if target_name.is_some() {
                    return Err("more than one target".into());
                }
                let t = next(&mut i, "a target", w)?;
                let goto = w.starts_with("-g") || w == "--goto";
                target = match t.as_str() {
                    _ if goto => {
                        jump = Some((t.clone(), true));
                        Target::None
                    }
                    "ACCEPT" => Target::Accept,
                    "DROP" => Target::Drop,
                    "RETURN" => Target::Return,
                    "REJECT" => {
                        if id != TableId::Filter {
                            return Err("REJECT is valid in the filter table only".into());
                        }
                        Target::Reject
                    }
                    "MARK" => Target::Mark { mask: 0, xor: 0 },
                    "LOG" => {
                        log_at = Some(i);
                        Target::Log(Default::default())
                    }
                    "DNAT" | "SNAT" | "MASQUERADE" if id != TableId::Nat => {
                        return Err(format!("{t} is valid in the nat table only"))
                    }
                    "DNAT" | "SNAT" | "MASQUERADE" => Target::Nat(NatTo {
                        kind: match t.as_str() {
                            "DNAT" => NatKind::Dnat,
                            "SNAT" => NatKind::Snat,
                            _ => NatKind::Masquerade,
                        },
                        addr: None,
                        ports: None,
                        pick: PortPick::Keep,
                    }),
                    "REDIRECT" => {
                        return Err(
                            "-j REDIRECT is not emulated: it delivers to the director's own sockets, which uvs leaves to the kernel (DNAT to an address instead)".into(),
                        )
                    }
                    _ => {
                        jump = Some((t.clone(), false));
                        Target::None
                    }
                };
                target_name = Some(t);
            }
            "--set-mark" | "--set-xmark" => {
                if target_name.as_deref() != Some("MARK") {
                    return Err(format!("{w} needs -j MARK"));
                }
                let (v, mk) = parse_mark(&next(&mut i, "a mark", w)?)?;
                mark_opt = Some((v, mk, w == "--set-xmark"));
            }
            // The MARK shorthands, as --set-xmark V/M.
            "--xor-mark" | "--or-mark" | "--and-mark" => {
                if target_name.as_deref() != Some("MARK") {
                    return Err(format!("{w} needs -j MARK"));
                }
                let v = parse_u32(&next(&mut i, "a mark", w)?)?;
                mark_opt = Some(match w {
                    "--xor-mark" => (v, 0, true),
                    "--or-mark" => (v, v, true),
                    _ => (0, !v, true),
                });
            }
            "--to-destination" | "--to-source" | "--to-ports" | "--random" | "--random-fully"
            | "--persistent" => {
                let Target::Nat(to) = &mut target else {
                    return Err(format!("{w} needs -j DNAT, SNAT or MASQUERADE"));
                };
                match (w, to.kind) {
                    ("--to-destination", NatKind::Dnat) | ("--to-source", NatKind::Snat) => {
                        let (a, ports) = super::nat::parse_to(&next(&mut i, "an address", w)?, w)?;
                        if ports.is_some() && !matches!(m.proto, Some((false, 6 | 17 | 132))) {
                            return Err(format!("{w} with a port needs -p tcp, udp or sctp"));
                        }
                        to.addr = Some(a);
                        to.ports = ports;
                    }
                    ("--to-ports", NatKind::Masquerade) => {
                        if !matches!(m.proto, Some((false, 6 | 17 | 132))) {
                            return Err(format!("{w} needs -p tcp, udp or sctp"));
                        }
                        to.ports = Some(super::nat::parse_ports(&next(&mut i, "ports", w)?, w)?);
                    }
                    ("--random", _) => to.pick = PortPick::Random,
                    ("--random-fully", _) => to.pick = PortPick::Fully,
                    // One address per rule: every connection of a client
                    // gets it, which is what --persistent keeps.
                    ("--persistent", NatKind::Dnat | NatKind::Snat) => {}
                    (w, k) => return Err(format!("{w} is not an option of -j {}", k.name())),
                }
            }
            w if w.starts_with("--log-") => {
                let Target::Log(spec) = &mut target else {
                    return Err(format!("{w} needs -j LOG"));
                };
                log_words.push(i);
                let v = match super::log::LogSpec::takes_value(w) {
                    true => Some(next(&mut i, "a value", w)?),
                    false => None,
                };
                if v.is_some() {
                    log_words.push(i);
                }
                spec.option(w, v.as_deref())?;
            }
            "--reject-with" => {
                if target_name.as_deref() != Some("REJECT") {
                    return Err(format!("{w} needs -j REJECT"));
                }
                let v = next(&mut i, "an ICMP type", w)?;
                if !matches!(
                    v.as_str(),
                    "icmp-port-unreachable" | "icmp6-port-unreachable"
                ) {
                    return Err(format!(
                        "--reject-with {v}: uvs answers with port unreachable only"
                    ));
                }
            }
            o => return Err(format!("unknown option '{o}'")),
        }
        if n && !matches!(
            w,
            "-p" | "--protocol"
                | "-s"
                | "--source"
                | "-d"
                | "--destination"
                | "-i"
                | "--in-interface"
                | "-o"
                | "--out-interface"
                | "--sport"
                | "--source-port"
                | "--dport"
                | "--destination-port"
                | "--sports"
                | "--source-ports"
                | "--dports"
                | "--destination-ports"
                | "--mark"
                | "--ctstate"
                | "--state"
                | "--ipvs"
                | "--vaddr"
                | "--vport"
                | "--vproto"
                | "--vmethod"
                | "--match-set"
                | "--set"
                | "--src-type"
                | "--dst-type"
        ) {
            return Err(format!("'!' cannot negate {w}"));
        }
        i += 1;
    }
    if neg {
        return Err("'!' at the end of the rule".into());
    }
    if target_name.as_deref() == Some("MARK") {
        let (v, mk, xmark) = mark_opt.ok_or("-j MARK needs --set-mark or --set-xmark")?;
        // --set-mark V/M: clear M's bits, then set V's (iptables: the
        // same as --set-xmark V/(M|V)); --set-xmark V/M: clear M, xor V.
        target = if xmark {
            Target::Mark { mask: mk, xor: v }
        } else {
            Target::Mark {
                mask: mk | v,
                xor: v,
            }
        };
    }
    if id == TableId::Nat && matches!(target, Target::Drop | Target::Reject) {
        return Err("the nat table is not for filtering: DROP belongs in the filter table".into());
    }
    if let Target::Nat(to) = &target {
        match (to.kind, to.addr) {
            (NatKind::Dnat, None) => return Err("-j DNAT needs --to-destination".into()),
            (NatKind::Snat, None) => return Err("-j SNAT needs --to-source".into()),
            _ => {}
        }
        let fam = to.addr.map(|a| a.is_ipv4());
        let other = [m.src, m.dst]
            .into_iter()
            .flatten()
            .map(|(_, p)| p.addr.is_ipv4());
        if let Some(f) = fam {
            if other.into_iter().any(|o| o != f) {
                return Err("the nat address and -s/-d are of different address families".into());
            }
        }
    }
    if let (Some((_, s)), Some((_, d))) = (m.src, m.dst) {
        if s.addr.is_ipv4() != d.addr.is_ipv4() {
            return Err("-s and -d are of different address families".into());
        }
    }
    let mut text = String::new();
    for (j, w) in words.iter().enumerate() {
        if log_words.contains(&j) {
            continue;
        }
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&w.raw);
        if let (Some(at), Target::Log(spec)) = (log_at, &target) {
            if at == j {
                text.push_str(&spec.save_text());
            }
        }
    }
    Ok(PendingRule {
        rule: Rule {
            m,
            target,
            text,
            base,
            line,
        },
        jump,
    })
}
