//! Reload without loss: what `uvs reload` (or SIGHUP) changes when the files
//! `uvs run` was started with are read again. Pure: the texts come in, a
//! [`Plan`] goes out; nothing here touches the running daemon.
//!
//! Contract:
//! * A file is the desired state of what it governs: `--config`
//!   (ipvsadm-save format) of the virtual services, their real servers and
//!   the timeouts; `--filter` of the filter table. A file that `uvs run` was
//!   not given governs nothing, and what it would govern is left as it is.
//! * Every file is parsed and checked whole before anything changes; the
//!   first problem refuses the whole reload, naming the file and the line
//!   ([`ReloadError`]).
//! * The difference against the running configuration is expressed as
//!   ordinary uvsadm commands ([`diff`]): `-D`/`-A`/`-E` for services,
//!   `-d`/`-a`/`-e` for real servers, `--set` for timeouts, and only for
//!   what differs. The daemon applies them through its incremental path
//!   (with undo, committing only the touched services), so services and
//!   servers that stay keep their runtime objects, counters and
//!   connections. Remaining servers keep their order; new ones are appended.
//! * Filter rules equal to a running rule keep its counter (the same rule
//!   object is reused); an unchanged table is not replaced at all.
//!
//! Cost: O(services + servers) of the two configurations (the files are
//! re-read whole), plus what the daemon's commit costs for what changed.
//!
//! * `--keepalived` (a keepalived.conf) is the desired state of its
//!   `virtual_server`s, as their real servers' health says
//!   ([`crate::health`]); `--config` governs every other service and may
//!   not name one of them. A reload keeps the health of every checker
//!   whose configuration is unchanged ([`plan_with`]).
//!
//! More sources (`--tables`) join as further fields of [`Texts`] and
//! [`Plan`], each parsed and checked in [`plan`] before the daemon applies
//! any.

use std::fmt;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};

use crate::control::ctl::{self, Command, Config, CtlError, ServiceConfig, ServiceOpts, SvcKey};
use crate::datapath::filter::{FilterError, FilterTable, Rule};
use crate::health;

/// One file's text and the name it is reported under (its path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// The path, for messages.
    pub name: String,
    /// The whole file.
    pub text: String,
}

/// The texts of the files a reload re-reads; `None` = not configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Texts {
    /// `--config` (ipvsadm-save format).
    pub config: Option<Text>,
    /// `--filter` (filter rules, iptables syntax).
    pub filter: Option<Text>,
    /// `--keepalived` (keepalived.conf; its includes are read by the parser).
    pub keepalived: Option<Text>,
}

/// Why a reload changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A file could not be read.
    #[error("reading {name}: {err}")]
    Read {
        /// The path.
        name: String,
        /// The OS error.
        err: std::io::Error,
    },
    /// A line of the configuration file is wrong (syntax, validation, or
    /// something the engine does not support).
    #[error("{name}: line {line}: {msg}")]
    Config {
        /// The path.
        name: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// The filter file is wrong (the message names the line).
    #[error("{name}: {err}")]
    Filter {
        /// The path.
        name: String,
        /// The parser's error.
        err: FilterError,
    },
    /// The `--tables` file is wrong (the error names the line).
    #[error("{name}: {err}")]
    Tables {
        /// The path.
        name: String,
        /// The parser's error.
        err: crate::datapath::tables::TablesError,
    },
    /// The keepalived file is wrong (the message names file:line).
    #[error("{0}")]
    Keepalived(#[from] health::ParseError),
    /// Applying the difference failed (the daemon undid it).
    #[error("applying the change: {0}")]
    Apply(String),
}

/// What a reload will change, worked out before anything changes.
#[derive(Debug)]
pub struct Plan {
    /// uvsadm commands turning the running configuration into the file's,
    /// in the order to apply them; empty when nothing differs or no
    /// `--config` was given.
    pub commands: Vec<Command>,
    /// The new filter table, `None` to keep the running one.
    pub filter: Option<FilterTable>,
    /// What changed, for the log and `uvs reload`.
    pub summary: Summary,
    /// The keepalived file's health state, to install once the commands
    /// are applied; `None` without `--keepalived`.
    pub keepalived: Option<health::Staged>,
}

/// Counts of what a reload changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Whether a configuration file was read.
    pub config: bool,
    /// Services added, removed, edited (`-A`, `-D`, `-E`).
    pub services: [usize; 3],
    /// Real servers added, removed, edited (`-a`, `-d`, `-e`).
    pub servers: [usize; 3],
    /// Whether the timeouts change.
    pub timeouts: bool,
    /// Whether a filter file was read.
    pub filter: bool,
    /// Filter rules kept (with their counters), added, removed.
    pub rules: [usize; 3],
    /// Whether a keepalived file was read.
    pub keepalived: bool,
    /// Its services added, removed, edited.
    pub ka_services: [usize; 3],
    /// Its real servers added, removed, edited.
    pub ka_servers: [usize; 3],
    /// Its checkers kept (with their health), started, stopped.
    pub checkers: [usize; 3],
}

impl Summary {
    /// Whether the reload changes anything.
    pub fn is_empty(&self) -> bool {
        self.services == [0; 3]
            && self.servers == [0; 3]
            && !self.timeouts
            && self.rules[1..] == [0, 0]
            && self.ka_services == [0; 3]
            && self.ka_servers == [0; 3]
            && self.checkers[1..] == [0, 0]
    }

    fn count(&mut self, c: &Command) {
        let (services, servers) = (&mut self.services, &mut self.servers);
        if let Command::SetTimeouts { .. } = c {
            self.timeouts = true;
        }
        count_into(c, services, servers);
    }
}

fn count_into(c: &Command, services: &mut [usize; 3], servers: &mut [usize; 3]) {
    match c {
        Command::AddService(_) => services[0] += 1,
        Command::DeleteService(_) => services[1] += 1,
        Command::EditService(_) => services[2] += 1,
        Command::AddServer { .. } => servers[0] += 1,
        Command::DeleteServer { .. } => servers[1] += 1,
        Command::EditServer { .. } => servers[2] += 1,
        _ => {}
    }
}

impl Summary {
    fn count_ka(&mut self, c: &Command) {
        count_into(c, &mut self.ka_services, &mut self.ka_servers);
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.config {
            let [sa, sd, se] = self.services;
            let [ra, rd, re] = self.servers;
            parts.push(format!(
                "services +{sa} -{sd} ~{se}, real servers +{ra} -{rd} ~{re}{}",
                if self.timeouts { ", timeouts set" } else { "" }
            ));
        }
        if self.filter {
            let [k, a, d] = self.rules;
            parts.push(format!("filter rules {k} kept, +{a} -{d}"));
        }
        if self.keepalived {
            let [sa, sd, se] = self.ka_services;
            let [ra, rd, re] = self.ka_servers;
            let [k, s, t] = self.checkers;
            parts.push(format!(
                "keepalived services +{sa} -{sd} ~{se}, real servers +{ra} -{rd} ~{re}, checkers {k} kept, {s} started, {t} stopped"
            ));
        }
        if parts.is_empty() {
            return f.write_str("no --config, --filter or --keepalived file to re-read");
        }
        if self.is_empty() {
            parts.push("nothing changed".into());
        }
        f.write_str(&parts.join("; "))
    }
}

/// Parses and checks every text and works out the difference against the
/// running `config` and `filter`. `check` is the engine's own test of a
/// service (what it can run today); its refusal is reported with the line
/// that created the service. Nothing is changed.
pub fn plan(
    config: &Config,
    filter: &FilterTable,
    texts: &Texts,
    check: impl Fn(&ServiceConfig) -> Result<(), String>,
) -> Result<Plan, ReloadError> {
    plan_with(config, filter, texts, check, None)
}

/// [`plan`] with the running keepalived health: the keepalived file's
/// services are left out of the `--config` difference (which may not name
/// them) and planned from the re-read file and the kept health state.
pub fn plan_with(
    config: &Config,
    filter: &FilterTable,
    texts: &Texts,
    check: impl Fn(&ServiceConfig) -> Result<(), String>,
    health: Option<&health::Health>,
) -> Result<Plan, ReloadError> {
    let mut summary = Summary::default();
    let mut commands = Vec::new();
    // The services a keepalived file owns, before and after.
    let mut owned: Vec<SvcKey> = health.map(|h| h.keys()).unwrap_or_default();
    let mut staged = None;
    if let (Some(t), Some(h)) = (&texts.keepalived, health) {
        let s = h.stage(health::parse_text(&t.name, &t.text)?);
        owned.extend(s.keys());
        staged = Some(s);
    }
    let mut seen: foldhash::HashSet<SvcKey> = foldhash::HashSetExt::with_capacity(owned.len());
    owned.retain(|k| seen.insert(*k));
    if let Some(t) = &texts.config {
        let new = parse_config(t, &check)?;
        let new_owned: Vec<SvcKey> = staged.as_ref().map(|s| s.keys()).unwrap_or_default();
        if let Some(k) = new_owned.iter().find(|k| new.service(k).is_some()) {
            return Err(ReloadError::Config {
                name: t.name.clone(),
                line: 0,
                msg: format!(
                    "service {} is also a virtual_server of the keepalived file",
                    health::key_name(k)
                ),
            });
        }
        commands = diff(&health::without(config, &owned), &new);
        summary.config = true;
        commands.iter().for_each(|c| summary.count(c));
    }
    if let Some(s) = &mut staged {
        let cmds = s.commands();
        let desired = health::build(s.conf(), &cmds, config.timeouts)?;
        for svc in desired.services.iter() {
            check(svc).map_err(|msg| health::refusal(s.conf(), &svc.key, &msg))?;
        }
        let ka = diff(&health::only(config, &owned), &desired);
        summary.keepalived = true;
        summary.checkers = s.checkers;
        ka.iter().for_each(|c| summary.count_ka(c));
        commands.extend(ka);
    }
    let mut new_filter = None;
    if let Some(t) = &texts.filter {
        let parsed = FilterTable::parse_file(&t.text).map_err(|err| ReloadError::Filter {
            name: t.name.clone(),
            err,
        })?;
        let (table, counts) = merge_filter(filter, parsed);
        summary.filter = true;
        summary.rules = counts;
        new_filter = table;
    }
    Ok(Plan {
        commands,
        filter: new_filter,
        summary,
        keepalived: staged,
    })
}

/// Parses a configuration file into a fresh configuration (all-or-nothing,
/// ipvsadm's validation), then runs `check` on every service, naming the
/// line of its `-A` when it refuses.
pub fn parse_config(
    t: &Text,
    check: impl Fn(&ServiceConfig) -> Result<(), String>,
) -> Result<Config, ReloadError> {
    let bad = |line: usize, msg: String| ReloadError::Config {
        name: t.name.clone(),
        line,
        msg,
    };
    let cmds = ctl::parse_script(&t.text).map_err(|e| bad(e.line, e.error.to_string()))?;
    let mut cfg = Config::new();
    cfg.apply_batch(&cmds)
        .map_err(|e| bad(e.line, e.error.to_string()))?;
    let mut line_of: HashMap<SvcKey, usize> = HashMap::with_capacity(cfg.services.len());
    for (line, c) in &cmds {
        if let Command::AddService(o) = c {
            line_of.entry(o.key).or_insert(*line);
        }
    }
    for s in cfg.services.iter() {
        if let Err(msg) = check(s) {
            return Err(bad(line_of.get(&s.key).copied().unwrap_or(0), msg));
        }
    }
    Ok(cfg)
}

/// The uvsadm commands that turn `old` into `new`, touching only what
/// differs: services gone are deleted, new ones added with their servers;
/// for a service in both, its attributes are edited if they differ, then
/// its servers deleted, added or edited one by one. O(services + servers).
pub fn diff(old: &Config, new: &Config) -> Vec<Command> {
    let mut out = Vec::new();
    for s in old.services.iter() {
        if new.service(&s.key).is_none() {
            out.push(Command::DeleteService(s.key));
        }
    }
    for s in new.services.iter() {
        let svc = s.key;
        let Some(o) = old.service(&svc) else {
            out.push(Command::AddService(opts(s)));
            out.extend(s.dests.iter().map(|d| Command::AddServer {
                svc,
                dest: d.clone(),
            }));
            continue;
        };
        if !same_attrs(o, s) {
            out.push(Command::EditService(opts(s)));
        }
        let mut was: HashMap<_, _> = HashMap::with_capacity(o.dests.len());
        was.extend(o.dests.iter().map(|d| ((d.addr, d.port), d)));
        let mut now: HashMap<_, _> = HashMap::with_capacity(s.dests.len());
        now.extend(s.dests.iter().map(|d| ((d.addr, d.port), d)));
        for d in &o.dests {
            if !now.contains_key(&(d.addr, d.port)) {
                out.push(Command::DeleteServer {
                    svc,
                    addr: d.addr,
                    port: d.port,
                });
            }
        }
        for d in &s.dests {
            match was.get(&(d.addr, d.port)) {
                None => out.push(Command::AddServer {
                    svc,
                    dest: d.clone(),
                }),
                Some(w) if *w != d => out.push(Command::EditServer {
                    svc,
                    dest: d.clone(),
                }),
                Some(_) => {}
            }
        }
    }
    if old.timeouts != new.timeouts {
        let t = new.timeouts;
        out.push(Command::SetTimeouts {
            tcp: t.tcp,
            tcp_fin: t.tcp_fin,
            udp: t.udp,
        });
    }
    out
}

/// Applies `commands` (from [`diff`]) to `config` all-or-nothing; returns
/// what each changed and how to reverse them all, so the caller can back
/// them out if the runtime refuses. On error `config` is as it was.
pub fn apply(
    config: &mut Config,
    commands: &[Command],
) -> Result<(Vec<ctl::Applied>, ctl::Undo), CtlError> {
    let gates = ctl::Gates::default();
    let mut undo = ctl::Undo::new();
    let mut done = Vec::with_capacity(commands.len());
    for c in commands {
        match config.apply_logged(c, &gates, &mut undo) {
            Ok(a) => done.push(a),
            Err(e) => {
                config.undo(undo);
                return Err(e);
            }
        }
    }
    Ok((done, undo))
}

/// The new filter table for `new`'s rules, in `new`'s order, reusing the
/// running rule object (and so its counter) for every rule equal to one in
/// `old`; `None` when the rules and their order are unchanged. Also returns
/// the counts of rules kept, added and removed.
pub fn merge_filter(old: &FilterTable, new: FilterTable) -> (Option<FilterTable>, [usize; 3]) {
    let old_rules = old.rules();
    let unchanged = old_rules.len() == new.rules().len()
        && old_rules.iter().zip(new.rules()).all(|(a, b)| a == b);
    if unchanged {
        return (None, [old_rules.len(), 0, 0]);
    }
    // Equal rules by their text; a rule given twice is matched twice.
    let mut pool: HashMap<String, Vec<&Arc<Rule>>> = HashMap::with_capacity(old_rules.len());
    for r in old_rules.iter().rev() {
        pool.entry(r.to_string()).or_default().push(r);
    }
    let mut kept = 0;
    let rules: Vec<Arc<Rule>> = new
        .rules()
        .iter()
        .map(|r| match pool.get_mut(&r.to_string()).and_then(Vec::pop) {
            Some(o) => {
                kept += 1;
                Arc::clone(o)
            }
            None => Arc::clone(r),
        })
        .collect();
    let added = rules.len() - kept;
    let removed = old_rules.len() - kept;
    (Some(FilterTable::from_rules(rules)), [kept, added, removed])
}

/// The `-A`/`-E` options that recreate a service's attributes.
pub(crate) fn opts(s: &ServiceConfig) -> ServiceOpts {
    ServiceOpts {
        key: s.key,
        sched: s.sched.clone(),
        sched_flags: s.sched_flags.clone(),
        persistent: s.persistent,
        netmask: Some(s.netmask),
        ops: s.ops,
        pe: s.pe.clone(),
    }
}

/// Whether two services have the same attributes (servers aside).
fn same_attrs(a: &ServiceConfig, b: &ServiceConfig) -> bool {
    (
        &a.sched,
        &a.sched_flags,
        a.persistent,
        a.netmask,
        a.ops,
        &a.pe,
    ) == (
        &b.sched,
        &b.sched_flags,
        b.persistent,
        b.netmask,
        b.ops,
        &b.pe,
    )
}

#[cfg(test)]
mod tests;
