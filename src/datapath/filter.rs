//! The emulated netfilter `filter` table (INPUT and FORWARD chains).
//!
//! Rules use iptables' syntax, a subset: `-A INPUT|FORWARD [-p tcp|udp|sctp|icmp]
//! [-s ADDR[/LEN]] [-d ADDR[/LEN]] [--sport P] [--dport P] -j ACCEPT|DROP`.
//! The first matching rule decides; no match means ACCEPT (the chain
//! policy). Each rule counts its matches. The table registers on the hook
//! chain at priority 0, so a DROP here stops a packet before IPVS sees it —
//! as in the kernel. It judges only what reaches uvs's hooks: packets uvs
//! does not own stay the kernel's business.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::datapath::hooks::{HookPoint, PRI_FILTER};
use crate::datapath::prefix::{Prefix, PrefixError};

/// A rule that could not be parsed, with the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    /// Anything wrong in a rule line.
    #[error("filter rule '{rule}': {msg}")]
    Bad { rule: String, msg: String },
    /// Deleting a rule that is not there.
    #[error("filter: no such rule: {0}")]
    NoSuchRule(String),
}

/// The packet fields the table matches on.
#[derive(Debug, Clone, Copy)]
pub struct FilterKey {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// Rule targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Accept,
    Drop,
}

/// One rule with its match counter.
#[derive(Debug)]
pub struct Rule {
    pub chain: HookPoint,
    pub proto: Option<u8>,
    pub src: Option<Prefix>,
    pub dst: Option<Prefix>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub target: Target,
    /// Packets this rule matched.
    pub hits: AtomicU64,
}

impl PartialEq for Rule {
    fn eq(&self, o: &Self) -> bool {
        (
            self.chain,
            self.proto,
            self.src,
            self.dst,
            self.sport,
            self.dport,
            self.target,
        ) == (o.chain, o.proto, o.src, o.dst, o.sport, o.dport, o.target)
    }
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        1 => "icmp".into(),
        58 => "ipv6-icmp".into(),
        n => n.to_string(),
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chain = if self.chain == HookPoint::Forward {
            "FORWARD"
        } else {
            "INPUT"
        };
        write!(f, "-A {chain}")?;
        if let Some(p) = self.proto {
            write!(f, " -p {}", proto_name(p))?;
        }
        if let Some(s) = self.src {
            write!(f, " -s {s}")?;
        }
        if let Some(d) = self.dst {
            write!(f, " -d {d}")?;
        }
        if let Some(p) = self.sport {
            write!(f, " --sport {p}")?;
        }
        if let Some(p) = self.dport {
            write!(f, " --dport {p}")?;
        }
        let t = if self.target == Target::Drop {
            "DROP"
        } else {
            "ACCEPT"
        };
        write!(f, " -j {t}")
    }
}

impl Rule {
    /// Parses one rule line (an optional leading `iptables` word is allowed).
    pub fn parse(line: &str) -> Result<Rule, FilterError> {
        let bad = |msg: String| FilterError::Bad {
            rule: line.trim().to_string(),
            msg,
        };
        let mut words = line.split_whitespace().peekable();
        if words.peek() == Some(&"iptables") {
            words.next();
        }
        let mut chain = None;
        let mut rule = Rule {
            chain: HookPoint::LocalIn,
            proto: None,
            src: None,
            dst: None,
            sport: None,
            dport: None,
            target: Target::Accept,
            hits: AtomicU64::new(0),
        };
        let mut target = None;
        while let Some(w) = words.next() {
            let mut val = |what: &str| words.next().ok_or_else(|| bad(format!("{w} needs {what}")));
            match w {
                "-A" | "--append" => {
                    chain = Some(match val("a chain")? {
                        "INPUT" => HookPoint::LocalIn,
                        "FORWARD" => HookPoint::Forward,
                        c => {
                            return Err(bad(format!("unsupported chain '{c}' (INPUT or FORWARD)")))
                        }
                    })
                }
                "-p" | "--protocol" => {
                    rule.proto = Some(match val("a protocol")? {
                        "tcp" => 6,
                        "udp" => 17,
                        "sctp" => 132,
                        "icmp" => 1,
                        "icmpv6" | "ipv6-icmp" => 58,
                        p => p
                            .parse()
                            .map_err(|_| bad(format!("unknown protocol '{p}'")))?,
                    })
                }
                "-s" | "--source" => {
                    rule.src = Some(parse_prefix(val("an address")?).map_err(bad)?)
                }
                "-d" | "--destination" => {
                    rule.dst = Some(parse_prefix(val("an address")?).map_err(bad)?)
                }
                "--sport" | "--source-port" => {
                    rule.sport = Some(parse_port(val("a port")?).map_err(bad)?)
                }
                "--dport" | "--destination-port" => {
                    rule.dport = Some(parse_port(val("a port")?).map_err(bad)?)
                }
                "-j" | "--jump" => {
                    target = Some(match val("a target")? {
                        "ACCEPT" => Target::Accept,
                        "DROP" => Target::Drop,
                        t => return Err(bad(format!("unsupported target '{t}' (ACCEPT or DROP)"))),
                    })
                }
                other => return Err(bad(format!("unknown option '{other}'"))),
            }
        }
        rule.chain = chain.ok_or_else(|| bad("missing -A INPUT|FORWARD".into()))?;
        rule.target = target.ok_or_else(|| bad("missing -j ACCEPT|DROP".into()))?;
        if (rule.sport.is_some() || rule.dport.is_some())
            && !matches!(rule.proto, Some(6 | 17 | 132))
        {
            return Err(bad("--sport/--dport need -p tcp, udp or sctp".into()));
        }
        if let (Some(s), Some(d)) = (rule.src, rule.dst) {
            if s.addr.is_ipv4() != d.addr.is_ipv4() {
                return Err(bad("-s and -d are of different address families".into()));
            }
        }
        Ok(rule)
    }

    fn matches(&self, k: &FilterKey) -> bool {
        self.proto.is_none_or(|p| p == k.proto)
            && self.src.is_none_or(|s| s.contains(k.src))
            && self.dst.is_none_or(|d| d.contains(k.dst))
            && self.sport.is_none_or(|p| p == k.sport)
            && self.dport.is_none_or(|p| p == k.dport)
    }
}

fn parse_prefix(s: &str) -> Result<Prefix, String> {
    Prefix::parse(s).map_err(|e| match e {
        PrefixError::Address(a) => format!("invalid address '{a}'"),
        PrefixError::Length { len, .. } => format!("invalid prefix length '{len}' in '{s}'"),
    })
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.parse().map_err(|_| format!("invalid port '{s}'"))
}

/// The table: an immutable rule list, replaced whole on change (rules are
/// shared, so their counters survive edits).
#[derive(Debug, Default, Clone)]
pub struct FilterTable {
    rules: Vec<Arc<Rule>>,
}

impl FilterTable {
    /// Parses a rules file: one rule a line; blank and `#` lines ignored.
    /// The first bad line rejects the whole file, naming its line number.
    pub fn parse_file(text: &str) -> Result<FilterTable, FilterError> {
        let mut t = FilterTable::default();
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let r = Rule::parse(l).map_err(|e| match e {
                FilterError::Bad { rule, msg } => FilterError::Bad {
                    rule,
                    msg: format!("line {}: {msg}", i + 1),
                },
                e => e,
            })?;
            t.rules.push(Arc::new(r));
        }
        Ok(t)
    }

    /// A table of exactly these rules, in order (a reload reuses running
    /// rules, and so their counters).
    pub fn from_rules(rules: Vec<Arc<Rule>>) -> FilterTable {
        FilterTable { rules }
    }

    /// A copy with `rule` appended.
    pub fn with_rule(&self, rule: Rule) -> FilterTable {
        let mut t = self.clone();
        t.rules.push(Arc::new(rule));
        t
    }

    /// A copy without the first rule equal to `rule`.
    pub fn without_rule(&self, rule: &Rule) -> Result<FilterTable, FilterError> {
        let i = self
            .rules
            .iter()
            .position(|r| **r == *rule)
            .ok_or_else(|| FilterError::NoSuchRule(rule.to_string()))?;
        let mut t = self.clone();
        t.rules.remove(i);
        Ok(t)
    }

    /// Rules in order.
    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// The verdict for a packet at `chain`: the first matching rule's target
    /// (counted), else ACCEPT.
    pub fn check(&self, chain: HookPoint, k: &FilterKey) -> Target {
        // `n`: the rule's number in its chain, for `uvs trace`.
        let mut n = 0;
        for r in &self.rules {
            if r.chain != chain {
                continue;
            }
            n += 1;
            if r.matches(k) {
                r.hits.fetch_add(1, Relaxed);
                let name = match chain {
                    HookPoint::Forward => "FORWARD",
                    _ => "INPUT",
                };
                let verdict = match r.target {
                    Target::Accept => "ACCEPT",
                    Target::Drop => "DROP",
                };
                crate::datapath::trace::rule(chain, PRI_FILTER, "filter", name, n, &**r, verdict);
                return r.target;
            }
        }
        Target::Accept
    }

    /// `iptables -L -v`-like listing with hit counts.
    pub fn listing(&self) -> String {
        let mut s = String::new();
        for r in &self.rules {
            s.push_str(&format!("{:>10} {}\n", r.hits.load(Relaxed), r));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: &str, dport: u16) -> FilterKey {
        FilterKey {
            proto: 6,
            src: src.parse().unwrap(),
            dst: "192.0.2.10".parse().unwrap(),
            sport: 40000,
            dport,
        }
    }

    #[test]
    fn first_match_wins_and_counts() {
        let t = FilterTable::parse_file(
            "# comment\n-A INPUT -p tcp -s 198.51.100.0/24 --dport 80 -j DROP\n-A INPUT -p tcp -j ACCEPT\n",
        )
        .unwrap();
        assert_eq!(
            t.check(HookPoint::LocalIn, &key("198.51.100.10", 80)),
            Target::Drop
        );
        assert_eq!(
            t.check(HookPoint::LocalIn, &key("198.51.100.10", 81)),
            Target::Accept
        );
        assert_eq!(
            t.check(HookPoint::LocalIn, &key("203.0.113.5", 80)),
            Target::Accept
        );
        assert_eq!(
            t.check(HookPoint::Forward, &key("198.51.100.10", 80)),
            Target::Accept
        );
        assert_eq!(t.rules()[0].hits.load(Relaxed), 1);
        assert_eq!(t.rules()[1].hits.load(Relaxed), 2);
    }

    #[test]
    fn bad_rules_name_the_problem() {
        let e = |s| Rule::parse(s).unwrap_err().to_string();
        assert!(e("-A OUTPUT -j DROP").contains("unsupported chain 'OUTPUT'"));
        assert!(e("-A INPUT --dport 80 -j DROP").contains("need -p tcp"));
        assert!(e("-A INPUT -s 1.2.3.4/33 -j DROP").contains("invalid prefix length"));
        assert!(e("-A INPUT -p tcp").contains("missing -j"));
        assert!(e("-A INPUT -j REJECT").contains("unsupported target"));
        let f = FilterTable::parse_file("-A INPUT -j DROP\n\n-A INPUT -x\n")
            .unwrap_err()
            .to_string();
        assert!(f.contains("line 3"), "{f}");
    }

    #[test]
    fn display_round_trips() {
        let r =
            Rule::parse("iptables -A FORWARD -p udp -d 2001:db8::/32 --sport 53 -j DROP").unwrap();
        assert_eq!(Rule::parse(&r.to_string()).unwrap(), r);
        let t = FilterTable::default().with_rule(r);
        let r2 = Rule::parse("-A FORWARD -p udp -d 2001:db8::/32 --sport 53 -j DROP").unwrap();
        assert!(t.without_rule(&r2).unwrap().rules().is_empty());
        assert!(t
            .without_rule(&Rule::parse("-A INPUT -j DROP").unwrap())
            .is_err());
    }
}
