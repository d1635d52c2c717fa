//! Health checks configured as a keepalived.conf (`uvs run --keepalived
//! FILE`): the file's `virtual_server` blocks become services, their real
//! servers are probed, and a failing server gets keepalived's treatment.
//!
//! Contract:
//! * [`parse`] reads the file (with its `include`s) all-or-nothing: a
//!   problem names `file:line` and nothing is used; sections and keywords
//!   uvs does not run are warnings naming `file:line`.
//! * The services of the file are owned by it: the table of each is
//!   worked out from the file and the servers' health ([`State::commands`])
//!   and the daemon applies only the difference, as uvsadm commands through
//!   its ordinary commit path. `--config` may not name the same services.
//! * A real server is up while all its checkers are up; every server starts
//!   up (keepalived without `alpha`). A checker on a live server that fails
//!   is retried `retry` times, `delay_before_retry` apart, before the server
//!   goes down; a down server comes back on the first success. Probes run
//!   every `delay_loop`.
//! * Down: removed from its service, or left at weight 0 with
//!   `inhibit_on_failure`. A service whose live weight falls below
//!   `quorum − hysteresis` has lost its quorum (regained at `quorum +
//!   hysteresis`); with a `sorry_server` the table then holds only the
//!   sorry server (inhibited servers at weight 0).
//! * Probes run off the data path ([`runner`]): one scheduling thread and a
//!   small fixed pool of probe threads, each probe bounded by its timeout,
//!   in the network namespace of the process.
//! * Every transition is logged and counted per server (checks, failures,
//!   transitions, state), in `uvs stats` and `/metrics` ([`Health::register`]).
//! * A reload ([`Health::stage`]) keeps the state of every checker whose
//!   configuration is unchanged; changed checkers start again (up), removed
//!   ones stop.

pub mod conf;
pub mod md5;
pub mod parse;
pub mod probe;
pub mod runner;
mod state;

use std::sync::{Arc, Mutex, MutexGuard};

pub use conf::KaConfig;
pub use parse::{parse_file, parse_text, ParseError};
pub use state::{ServerCounters, Staged, State};

use crate::control::ctl::{self, Command, SvcKey};
use crate::control::registry::Registry;

/// A service key as health messages and counter names show it:
/// `tcp/192.0.2.10:80`, `fwmark/5`.
pub fn key_name(k: &SvcKey) -> String {
    match *k {
        SvcKey::Addr { proto, addr, port } => format!(
            "{}/{}",
            proto.list_name().to_ascii_lowercase(),
            std::net::SocketAddr::new(addr, port)
        ),
        SvcKey::Fwmark { mark, .. } => format!("fwmark/{mark}"),
    }
}

/// The health state shared by the daemon (which applies tables, reloads
/// and reports) and the checker thread (which records probe results).
#[derive(Debug)]
pub struct Health {
    state: Mutex<State>,
}

impl Health {
    /// Health for `conf`, every server up.
    pub fn new(conf: KaConfig) -> Arc<Health> {
        Arc::new(Health {
            state: Mutex::new(State::new(conf)),
        })
    }

    /// The state, locked (control-plane only; never held across a probe or
    /// a control-socket call).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it leaves plain data; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The commands that build the file's services as their health says
    /// they should be now.
    pub fn commands(&self) -> Vec<Command> {
        self.lock().commands()
    }

    /// The services the file owns.
    pub fn keys(&self) -> Vec<SvcKey> {
        self.lock().keys()
    }

    /// The state for a re-read file, worked out without changing anything
    /// (see [`State::stage`]).
    pub fn stage(&self, conf: KaConfig) -> Staged {
        self.lock().stage(conf)
    }

    /// Makes a staged state the running one (after the daemon applied it).
    pub fn install(&self, staged: Staged) {
        self.lock().install(staged);
    }

    /// Adds every server's counters to `r` (family `health_*`).
    pub fn register(&self, r: &mut Registry) {
        let st = self.lock();
        for (svc, addr, port, c) in st.counters() {
            let server = std::net::SocketAddr::new(addr, port).to_string();
            let name = format!("health.{}/{server}", key_name(&svc));
            let labels = vec![("service", key_name(&svc)), ("server", server)];
            r.counter(
                format!("{name}.checks"),
                "health_checks",
                "health probes run, by real server",
                labels.clone(),
                c.checks,
            );
            r.counter(
                format!("{name}.failures"),
                "health_failures",
                "health probes failed, by real server",
                labels.clone(),
                c.failures,
            );
            r.counter(
                format!("{name}.transitions"),
                "health_transitions",
                "health state changes (up to down or back), by real server",
                labels.clone(),
                c.transitions,
            );
            r.gauge(
                format!("{name}.up"),
                "health_up",
                "1 while the real server passes its checks",
                labels,
                u64::from(c.up),
            );
        }
    }
}

/// A configuration holding only the services `keys` of `config` (their
/// servers in order), with `config`'s timeouts: the part of the running
/// table a keepalived file owns, to diff its desired table against.
pub fn only(config: &ctl::Config, keys: &[SvcKey]) -> ctl::Config {
    let mut cmds = Vec::new();
    for k in keys {
        if let Some(s) = config.service(k) {
            cmds.push(Command::AddService(crate::control::reload::opts(s)));
            cmds.extend(s.dests.iter().map(|d| Command::AddServer {
                svc: s.key,
                dest: d.clone(),
            }));
        }
    }
    let mut out = ctl::Config::new();
    // Rebuilding what the table already accepted cannot fail; if it ever
    // did, the diff would re-add the services, which the commit refuses.
    let _ = crate::control::reload::apply(&mut out, &cmds);
    out.timeouts = config.timeouts;
    out
}

/// `config` without the services `keys` (what `--config` governs when a
/// keepalived file owns `keys`).
pub fn without(config: &ctl::Config, keys: &[SvcKey]) -> ctl::Config {
    let mut out = config.clone();
    let cmds: Vec<Command> = keys
        .iter()
        .filter(|k| config.service(k).is_some())
        .map(|k| Command::DeleteService(*k))
        .collect();
    let _ = crate::control::reload::apply(&mut out, &cmds);
    out
}

/// The desired configuration from `commands` (see [`State::commands`] of
/// `conf`), validated as uvsadm validates them, with `timeouts`; a refusal
/// names the `virtual_server` it comes from.
pub fn build(
    conf: &KaConfig,
    commands: &[Command],
    timeouts: ctl::Timeouts,
) -> Result<ctl::Config, ParseError> {
    let mut out = ctl::Config::new();
    for c in commands {
        if let Err(e) = out.apply(c) {
            let key = match c {
                Command::AddService(o) => o.key,
                Command::AddServer { svc, .. } => *svc,
                _ => continue,
            };
            return Err(refusal(conf, &key, &e.to_string()));
        }
    }
    out.timeouts = timeouts;
    Ok(out)
}

/// An error about the service `key`, at its `virtual_server` line.
pub fn refusal(conf: &KaConfig, key: &SvcKey, msg: &str) -> ParseError {
    let at = conf.services.iter().find(|v| v.key == *key).map(|v| &v.at);
    ParseError {
        file: at.map_or_else(String::new, |a| a.file.clone()),
        line: at.map_or(0, |a| a.line),
        msg: format!("virtual_server {}: {msg}", key_name(key)),
    }
}

/// At start: parses the keepalived file `text`, logs its warnings, and
/// adds its services (every server up) to `config`, refusing one that
/// `config` (from `--config`) has already and one `check` (the engine's
/// test) refuses. Returns the health and what the addition changed.
pub fn load(
    text: &crate::control::reload::Text,
    config: &mut ctl::Config,
    check: impl Fn(&ctl::ServiceConfig) -> Result<(), String>,
) -> Result<(Arc<Health>, Vec<ctl::Applied>), ParseError> {
    let conf = parse_text(&text.name, &text.text)?;
    for w in &conf.warnings {
        log::warn!("{w}");
    }
    if let Some(v) = conf
        .services
        .iter()
        .find(|v| config.service(&v.key).is_some())
    {
        return Err(refusal(&conf, &v.key, "is also a service of --config"));
    }
    let health = Health::new(conf);
    let cmds = health.commands();
    let desired = build(health.lock().conf(), &cmds, config.timeouts)?;
    for svc in desired.services.iter() {
        check(svc).map_err(|msg| refusal(health.lock().conf(), &svc.key, &msg))?;
    }
    let (applied, _) = crate::control::reload::apply(config, &cmds).map_err(|e| {
        refusal(
            health.lock().conf(),
            &desired.services[0].key,
            &e.to_string(),
        )
    })?;
    Ok((health, applied))
}

/// The commands that bring the running `config`'s keepalived services in
/// line with their health now: only the difference.
pub fn sync(health: &Health, config: &ctl::Config) -> Result<Vec<Command>, ParseError> {
    let mut st = health.lock();
    let cmds = st.commands();
    let keys = st.keys();
    let desired = build(st.conf(), &cmds, config.timeouts)?;
    drop(st);
    Ok(crate::control::reload::diff(&only(config, &keys), &desired))
}

#[cfg(test)]
mod tests;
