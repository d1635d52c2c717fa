//! `uvs run`: the daemon. Owns the configuration, turns each accepted change
//! into a new service snapshot for the workers, keeps the kernel guard's
//! sets in step, and answers the control socket until SIGINT/SIGTERM.
//!
//! A change is all-or-nothing and costs what it changes: the command edits
//! the configuration in place, recording how to undo itself; the daemon
//! takes the services the [`ctl::Applied`] result names, plans their new
//! runtime objects (schedulers may reject flags), sends the guard only the
//! set elements whose presence changed, and only then publishes the new
//! snapshot (which shares every untouched service with the old one). If
//! any step fails, the configuration is undone and everything is as it was.
//! Real servers new to a service are handed to the next-hop resolver in the
//! background; no command waits for ARP/ND.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use foldhash::{HashSet, HashSetExt};

use crate::control::connlist;
use crate::control::ctl;
use crate::control::lifecycle::{self, State};
use crate::control::reload;
use crate::control::socket::{self, Answer, Reply};
use crate::control::{metrics, registry};
use crate::datapath::estimator::INTERVAL_MS;
use crate::datapath::filter::{FilterTable, Rule};
use crate::datapath::pipeline::Pipeline;
use crate::datapath::service::{
    Change, ClientMask, DestSpec, Persistence, Plan, ServiceSpec, Services, SvcId,
};
use crate::datapath::stats::{Stats, NO_SLOT};
use crate::engine::{self, Engine, EngineConfig};
use crate::sys::guard::{self, KernelGuard, Owned};

/// What `uvs run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOpts {
    pub interfaces: Vec<String>,
    pub workers: usize,
    pub control: PathBuf,
    pub config: Option<String>,
    pub filter: Option<String>,
    pub ring_frames: usize,
    pub mh_table_size: u32,
    pub knobs: Vec<String>,
    /// Packet backend (`--io`).
    pub io: engine::IoMode,
    /// `--busy-poll` microseconds (0: off).
    pub busy_poll_us: u32,
    /// The files re-read by `uvs reload` / SIGHUP (see [`reload`]).
    pub sources: lifecycle::Sources,
    /// `--metrics ADDR:PORT`: serve Prometheus text at `/metrics`.
    pub metrics: Option<SocketAddr>,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error(transparent)]
    Guard(#[from] guard::GuardError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("filter rules: {0}")]
    Filter(#[from] crate::datapath::filter::FilterError),
    #[error("control socket {path}: {err}")]
    Control { path: String, err: std::io::Error },
    #[error("an engine thread panicked ({first}; {count} panic(s) in all); uvs stopped")]
    Fault { first: String, count: u64 },
    #[error("metrics address {addr}: {err}")]
    Metrics {
        addr: SocketAddr,
        err: std::io::Error,
    },
}

/// The daemon's state on the control thread.
struct Daemon {
    pipeline: Arc<Pipeline>,
    engine: Engine,
    /// The nftables guard; `None` with AF_XDP, whose program is the guard.
    guard: Option<KernelGuard>,
    /// What the guard's sets (or the XDP program's maps) hold, by service.
    owned: Owned,
    config: ctl::Config,
    mh_table_size: u32,
    /// The files a reload re-reads.
    sources: lifecycle::Sources,
    ring_frames: usize,
}

/// The runtime form of one configured service, or what the engine cannot
/// do yet (refused loudly rather than parsed and ignored).
pub fn spec(s: &ctl::ServiceConfig, mh_table_size: u32) -> Result<ServiceSpec, String> {
    let (proto, addr, port) = match s.key {
        ctl::SvcKey::Addr { proto, addr, port } => (proto.number(), addr, port),
        ctl::SvcKey::Fwmark { .. } => {
            return Err("fwmark services (-f) are not supported yet".into())
        }
    };
    if s.ops {
        return Err("one-packet scheduling (-o) is not supported yet".into());
    }
    Ok(ServiceSpec {
        proto,
        addr,
        port,
        sched: s.sched.clone(),
        params: uvs_sched::SchedParams {
            flags: s.sched_flags.clone(),
            // Like the kernel's module parameter: only mh has a table.
            mh_table_size: (s.sched == "mh").then_some(mh_table_size),
        },
        persistence: s.persistent.map(|t| Persistence {
            timeout_ms: t.saturating_mul(1000),
            mask: match s.netmask {
                ctl::Netmask::V4(m) => ClientMask::V4(u32::from(m)),
                ctl::Netmask::V6(len) => ClientMask::V6(len),
            },
        }),
        dests: s
            .dests
            .iter()
            .map(|d| DestSpec {
                addr: d.addr,
                port: d.port,
                fwd: d.fwd,
                weight: d.weight,
                u_threshold: d.u_threshold,
                l_threshold: d.l_threshold,
                tun: d.tun.map(tun_config).unwrap_or_default(),
            })
            .collect(),
    })
}

/// The configuration key of a runtime service.
fn key_of((proto, addr, port): SvcId) -> Option<ctl::SvcKey> {
    let proto = match proto {
        6 => ctl::Proto::Tcp,
        17 => ctl::Proto::Udp,
        132 => ctl::Proto::Sctp,
        _ => return None,
    };
    Some(ctl::SvcKey::Addr { proto, addr, port })
}

/// The runtime key of a configured service (`None` for fwmark services,
/// which never reach the runtime).
fn id_of(key: &ctl::SvcKey) -> Option<SvcId> {
    match *key {
        ctl::SvcKey::Addr { proto, addr, port } => Some((proto.number(), addr, port)),
        ctl::SvcKey::Fwmark { .. } => None,
    }
}

/// Collects the services `applied` touched; `Cleared` touches every
/// service of `running`.
fn touched(applied: &ctl::Applied, running: &Services, out: &mut Vec<ctl::SvcKey>) {
    use ctl::Applied as A;
    match applied {
        A::Nothing | A::Zeroed(_) | A::TimeoutsSet(_) => {}
        A::ServiceAdded(k) | A::ServiceEdited(k) | A::ServiceDeleted(k) => out.push(*k),
        A::DestAdded { svc, .. } | A::DestEdited { svc, .. } | A::DestDeleted { svc, .. } => {
            out.push(*svc)
        }
        A::Cleared => out.extend(running.iter().filter_map(|s| key_of(s.id()))),
        A::Batch(v) => v.iter().for_each(|a| touched(a, running, out)),
    }
}

/// ipvsadm's tunnel options as the destination keeps them.
fn tun_config(t: ctl::TunOpts) -> uvs_sched::TunConfig {
    uvs_sched::TunConfig {
        kind: t.kind,
        port: t.port.unwrap_or(0),
        csum: t.csum,
    }
}

/// Live numbers for listings: connection counts from the destinations,
/// traffic counters and rates from the workers' statistics, entries from
/// the connection table.
struct Live<'a> {
    snap: Arc<crate::datapath::service::Services>,
    conns: &'a uvs_conntrack::Table,
    stats: &'a Stats,
    now: u64,
}

/// A counter slot's totals and rates as listings show them.
pub fn slot_stats(stats: &Stats, id: u32) -> ctl::Stats {
    if id == NO_SLOT {
        return ctl::Stats::default();
    }
    let c = stats.counters(id);
    let r = stats.rates(id);
    ctl::Stats {
        conns: c.conns,
        inpkts: c.inpkts,
        outpkts: c.outpkts,
        inbytes: c.inbytes,
        outbytes: c.outbytes,
        cps: r.cps,
        inpps: r.inpps,
        outpps: r.outpps,
        inbps: r.inbps,
        outbps: r.outbps,
    }
}

/// A real server's own counter slot (the low half of its tag).
pub fn dest_slot(d: &uvs_sched::Dest) -> u32 {
    match d.stats_tag() {
        uvs_sched::Dest::NO_STATS => NO_SLOT,
        t => t as u32,
    }
}

impl ctl::Counters for Live<'_> {
    fn dest(&self, svc: &ctl::SvcKey, d: &ctl::DestConfig) -> ctl::DestCounters {
        let dest = id_of(svc)
            .and_then(|id| self.snap.get(&id))
            .and_then(|s| s.dest(d.addr, d.port));
        dest.map_or_else(ctl::DestCounters::default, |x| ctl::DestCounters {
            active_conns: x.active_conns(),
            inactive_conns: x.inactive_conns(),
            persistent_conns: x.persistent_conns(),
            stats: slot_stats(self.stats, dest_slot(x)),
        })
    }

    fn service(&self, svc: &ctl::ServiceConfig, _sum_of_dests: &ctl::Stats) -> ctl::Stats {
        id_of(&svc.key)
            .and_then(|id| self.snap.get(&id))
            .map_or_else(ctl::Stats::default, |s| slot_stats(self.stats, s.stats.id))
    }

    fn connections(&self) -> Vec<ctl::ConnRow> {
        let mut rows = Vec::new();
        self.conns
            .for_each_entry(self.now, |c| rows.push(connlist::row(c)));
        rows
    }
}

/// The guard elements of one service.
fn guard_elems(spec: &ServiceSpec) -> Vec<guard::Elem> {
    let nat = spec
        .dests
        .iter()
        .filter(|d| d.fwd == uvs_sched::FwdMethod::Masq)
        .map(|d| (d.addr, d.port));
    guard::service_elems((spec.proto, spec.addr, spec.port), nat)
}

/// The pure half of a commit, made by [`prepare`]: nothing shared has
/// changed yet.
#[derive(Debug)]
pub struct Prepared {
    /// The new runtime objects of the touched services.
    pub plan: Plan,
    /// What the kernel guard's sets must gain and lose.
    pub delta: guard::Delta,
    /// Takes the guard bookkeeping back if the kernel refuses `delta`.
    pub staged: guard::Staged,
    /// Addresses of real servers new to their service, each once.
    pub resolve: Vec<IpAddr>,
}

/// Plans the runtime side of `applied`, a change already made to `config`:
/// the runtime objects of exactly the services it touched (planned against
/// `running`) and the guard delta (recorded in `owned`; on error `owned` is
/// unchanged). Costs O(what changed).
pub fn prepare(
    config: &ctl::Config,
    applied: &ctl::Applied,
    running: &Services,
    owned: &mut Owned,
    mh_table_size: u32,
) -> Result<Prepared, String> {
    let mut keys = Vec::new();
    touched(applied, running, &mut keys);
    let mut seen = HashSet::with_capacity(keys.len());
    let mut changes = Vec::with_capacity(keys.len());
    let mut elems = Vec::with_capacity(keys.len());
    let mut resolve = Vec::new();
    for key in keys {
        if !seen.insert(key) {
            continue;
        }
        match config.service(&key) {
            Some(svc) => {
                let spec = spec(svc, mh_table_size)?;
                let id = (spec.proto, spec.addr, spec.port);
                let old = running.get(&id);
                resolve.extend(
                    spec.dests
                        .iter()
                        .filter(|d| old.and_then(|o| o.dest(d.addr, d.port)).is_none())
                        .map(|d| d.addr),
                );
                elems.push((id, Some(guard_elems(&spec))));
                changes.push(Change::Upsert(spec));
            }
            None => {
                if let Some(id) = id_of(&key) {
                    elems.push((id, None));
                    changes.push(Change::Remove(id));
                }
            }
        }
    }
    let plan = running.plan(changes).map_err(|e| e.to_string())?;
    let (delta, staged) = owned.change(elems);
    // Many services often share servers: ask once per address.
    let mut asked = HashSet::with_capacity(resolve.len());
    resolve.retain(|a| asked.insert(*a));
    Ok(Prepared {
        plan,
        delta,
        staged,
        resolve,
    })
}

/// Applies a guard delta to the XDP program's maps (AF_XDP mode, where the
/// program is the guard): one map entry per changed element. On error the
/// entries already changed are changed back, so the maps hold what they did.
fn steer(
    x: &mut crate::io::xdp::XdpIo,
    delta: &guard::Delta,
) -> Result<(), crate::io::xdp::XdpError> {
    use guard::Elem;
    // (element, adding?) in order; NatAddr is implied by its NatServer
    // (the program's map counts the real server's address itself).
    let ops = delta
        .del
        .iter()
        .map(|e| (e, false))
        .chain(delta.add.iter().map(|e| (e, true)));
    let one = |x: &mut crate::io::xdp::XdpIo, e: &Elem, add: bool| {
        let st = x.steering();
        match (*e, add) {
            (Elem::Service((p, a, port)), true) => st.add_service(p, a, port),
            (Elem::Service((p, a, port)), false) => st.remove_service(p, a, port),
            (Elem::NatServer((p, a, port)), true) => st.add_nat_server(p, a, port),
            (Elem::NatServer((p, a, port)), false) => st.remove_nat_server(p, a, port),
            (Elem::NatAddr(_), _) => Ok(()),
        }
    };
    let mut done: Vec<(&Elem, bool)> = Vec::new();
    for (e, add) in ops {
        if let Err(err) = one(x, e, add) {
            for (e, add) in done.into_iter().rev() {
                let _ = one(x, e, !add);
            }
            return Err(err);
        }
        done.push((e, add));
    }
    Ok(())
}

impl Daemon {
    /// Brings the runtime in line with the services `applied` touched in
    /// the (already edited) configuration (see the module doc). On error
    /// nothing in the runtime changed; the caller undoes the configuration.
    fn commit(&mut self, applied: &ctl::Applied) -> Result<(), String> {
        let running = self.pipeline.services.load_full();
        let p = prepare(
            &self.config,
            applied,
            &running,
            &mut self.owned,
            self.mh_table_size,
        )?;
        let kernel = match (&mut self.guard, &mut self.engine.io) {
            (Some(g), _) => g.apply(&p.delta).map_err(|e| e.to_string()),
            (None, engine::IoBackend::AfXdp(x)) => steer(x, &p.delta).map_err(|e| e.to_string()),
            (None, _) => Ok(()),
        };
        if let Err(e) = kernel {
            self.owned.revert(p.staged);
            return Err(e);
        }
        if !p.plan.is_empty() {
            self.pipeline.services.store(Arc::new(p.plan.commit()));
        }
        let t = &self.config.timeouts;
        let mut ct = self.pipeline.conns.timeouts();
        ct.set_tcp_tcpfin_udp(t.tcp, t.tcp_fin, t.udp);
        self.pipeline.conns.set_timeouts(&ct);
        // Learn new real servers' next hops in the background, so first
        // packets rarely wait for ARP/ND; a cached one costs a map read.
        for a in p.resolve {
            let _ = self.engine.resolver.lookup(a);
        }
        Ok(())
    }

    /// A control request's answer: the streamed and guarded requests here,
    /// every other one by [`Daemon::handle`].
    fn answer(&mut self, argv: Vec<String>) -> Answer {
        match argv.first().map(String::as_str) {
            // `-L -c` (not `--json`) is streamed: millions of entries list.
            Some("uvsadm") => match ctl::parse(&argv[1..]) {
                Ok(ctl::Command::List(o)) if o.connection && !o.json => {
                    let (pl, now) = (self.pipeline.clone(), self.engine.now_ms());
                    Answer::Stream(Box::new(connlist::Listing::new(pl, now, o.persistent_conn)))
                }
                _ => self.handle(argv).into(),
            },
            // A NUL byte in `-R` input refuses all of it.
            Some("uvsadm-restore") => match argv.get(1).and_then(|t| nul_line(t)) {
                Some(line) => Reply::err(format!(
                    "uvsadm: line {line} of the -R input holds a NUL byte; nothing was applied"
                ))
                .into(),
                None => self.handle(argv).into(),
            },
            Some("test-fill") => connlist::fill(
                &self.pipeline.conns,
                &self.pipeline.services.load(),
                self.engine.now_ms(),
                &argv[1..],
            )
            .into(),
            _ => self.handle(argv).into(),
        }
    }

    fn handle(&mut self, argv: Vec<String>) -> Reply {
        match argv.first().map(String::as_str) {
            Some("ping") => Reply::ok("pong\n"),
            Some("stats") => {
                let mut extra = self.engine.resolver.stats().render();
                if let engine::IoBackend::AfXdp(x) = &self.engine.io {
                    extra += &x.report();
                }
                let r = registry::collect(&registry::Sources {
                    pipeline: &self.pipeline,
                    stats: &self.engine.stats,
                    guard: self.guard.is_some(),
                    extra: &extra,
                    services: false,
                    ring_frames: self.ring_frames,
                });
                match argv.get(1).map(String::as_str) {
                    None => Reply::ok(r.text()),
                    Some("--json") => Reply::ok(format!("{}\n", r.json())),
                    Some(o) => Reply::err(format!("uvs stats: unknown option {o}")),
                }
            }
            Some("filter") => self.filter(&argv[1..]),
            Some("uvsadm") => self.uvsadm(&argv[1..], None),
            // `uvsadm -R`: the commands arrive as one text, applied as one batch.
            Some("uvsadm-restore") => self.uvsadm(
                &["-R".to_string()],
                Some(argv.get(1).map_or("", String::as_str)),
            ),
            // `uvs reload` and SIGHUP (see reload.rs).
            Some("reload") => match self.sources.read() {
                Ok(texts) => self.reload(texts),
                Err(e) => self.reload_refused(e),
            },
            _ => Reply::err(format!("unknown control request {:?}", argv.first())),
        }
    }

    /// One uvsadm command: parsed, validated and applied to the
    /// configuration by `ctl`, then committed to the runtime — or refused
    /// and undone, leaving everything as it was.
    fn uvsadm(&mut self, args: &[String], stdin: Option<&str>) -> Reply {
        let cmd = match ctl::parse(args) {
            Ok(c) => c,
            Err(e) => return ctl_refused(&e),
        };
        let live = Live {
            snap: self.pipeline.services.load_full(),
            conns: &self.pipeline.conns,
            stats: &self.engine.stats,
            now: self.engine.now_ms(),
        };
        let mut undo = ctl::Undo::new();
        let gates = ctl::Gates::default();
        let out = ctl::execute_logged(&mut self.config, &cmd, stdin, &live, &gates, &mut undo);
        drop(live);
        let out = match out {
            Ok(o) => o,
            Err(e) => return ctl_refused(&e),
        };
        if out.applied != ctl::Applied::Nothing {
            if let Err(e) = self.commit(&out.applied) {
                self.config.undo(undo);
                // Refused by the runtime, as ipvsadm's kernel errors: 255.
                return Reply {
                    status: 255,
                    ..Reply::err(e)
                };
            }
            zero(
                &out.applied,
                &self.pipeline.services.load_full(),
                &self.engine.stats,
            );
        }
        Reply::ok(out.output)
    }

    /// A reload with the files' new contents: planned whole by
    /// [`reload::plan`] (a bad file changes nothing), then applied as one
    /// undoable batch of uvsadm commands and committed like any command,
    /// so only the services that differ are rebuilt.
    fn reload(&mut self, texts: reload::Texts) -> Reply {
        lifecycle::notify(State::Reloading);
        let mh = self.mh_table_size;
        let filter = self.pipeline.filter.load_full();
        let plan = match reload::plan(&self.config, &filter, &texts, |s| spec(s, mh).map(drop)) {
            Ok(p) => p,
            Err(e) => return self.reload_refused(e),
        };
        let (applied, undo) = match reload::apply(&mut self.config, &plan.commands) {
            Ok(a) => a,
            Err(e) => return self.reload_refused(reload::ReloadError::Apply(e.to_string())),
        };
        if let Err(e) = self.commit(&ctl::Applied::Batch(applied)) {
            self.config.undo(undo);
            return self.reload_refused(reload::ReloadError::Apply(e));
        }
        if let Some(f) = plan.filter {
            self.pipeline.filter.store(Arc::new(f));
        }
        eprintln!("uvs: reloaded: {}", plan.summary);
        lifecycle::notify(State::Ready("running (reloaded)"));
        Reply::ok(format!("reloaded: {}\n", plan.summary))
    }

    fn reload_refused(&self, e: reload::ReloadError) -> Reply {
        eprintln!("uvs: reload refused, nothing changed: {e}");
        lifecycle::notify(State::Ready("running (last reload refused)"));
        Reply::err(format!("reload refused, nothing changed: {e}"))
    }

    fn filter(&mut self, args: &[String]) -> Reply {
        let cur = self.pipeline.filter.load_full();
        let rest = args.get(1..).unwrap_or(&[]).join(" ");
        let new = match args.first().map(String::as_str) {
            Some("list") => return Reply::ok(cur.listing()),
            Some("flush") => FilterTable::default(),
            Some("add") => match Rule::parse(&rest) {
                Ok(r) => cur.with_rule(r),
                Err(e) => return Reply::err(e),
            },
            Some("del") => match Rule::parse(&rest).and_then(|r| cur.without_rule(&r)) {
                Ok(t) => t,
                Err(e) => return Reply::err(e),
            },
            _ => return Reply::err("uvs filter: expected add RULE | del RULE | list | flush"),
        };
        self.pipeline.filter.store(Arc::new(new));
        Reply::ok("")
    }
}

/// The 1-based line of the first NUL byte in `text`, if any.
pub fn nul_line(text: &str) -> Option<usize> {
    let at = text.find('\0')?;
    Some(text[..at].matches('\n').count() + 1)
}

/// A refused uvsadm command: ipvsadm's text and exit status.
fn ctl_refused(e: &ctl::CtlError) -> Reply {
    Reply {
        status: e.exit_status(),
        stdout: String::new(),
        stderr: e.error_text(),
    }
}

/// `-Z`: the counters and rates of one service and its servers, or of all,
/// start again from zero (as the kernel's `ip_vs_zero_service`).
pub fn zero(applied: &ctl::Applied, snap: &Services, stats: &Stats) {
    let one = |s: &crate::datapath::service::ServiceRt| {
        stats.zero(s.stats.id);
        for d in s.dests.iter().chain(&s.trash) {
            stats.zero(dest_slot(d));
        }
    };
    match applied {
        ctl::Applied::Zeroed(None) => snap.iter().for_each(|s| one(s)),
        ctl::Applied::Zeroed(Some(k)) => {
            if let Some(s) = id_of(k).and_then(|id| snap.get(&id)) {
                one(s)
            }
        }
        ctl::Applied::Batch(v) => v.iter().for_each(|a| zero(a, snap, stats)),
        _ => {}
    }
}

/// The estimator's timer thread: every [`INTERVAL_MS`] one estimator step
/// for every counter slot; stopped and joined on drop.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn estimator_thread(stats: Arc<Stats>) -> std::io::Result<Ticker> {
    let stop = Arc::new(AtomicBool::new(false));
    let sp = stop.clone();
    let thread = std::thread::Builder::new()
        .name("uvs-estimator".into())
        .spawn(move || {
            let mut next = std::time::Instant::now() + Duration::from_millis(INTERVAL_MS);
            while !sp.load(Ordering::Relaxed) {
                let now = std::time::Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(Duration::from_millis(100)));
                    continue;
                }
                stats.estimate();
                // Fixed steps from the start, so a late tick does not
                // shift the later ones.
                next += Duration::from_millis(INTERVAL_MS);
            }
        })?;
    Ok(Ticker {
        stop,
        thread: Some(thread),
    })
}

/// Runs the daemon until `stop` is set.
pub fn run(opts: RunOpts, stop: &AtomicBool) -> Result<(), DaemonError> {
    let ifaces = engine::interfaces(&opts.interfaces)?;
    let mut table_cfg = uvs_conntrack::Config {
        seed: random_seed(),
        ..Default::default()
    };
    for k in &opts.knobs {
        set_knob(&mut table_cfg.knobs, k).map_err(DaemonError::Config)?;
    }
    // Validate everything given at start before touching the system.
    let mut config = ctl::Config::default();
    let mut loaded = Vec::new();
    if let Some(text) = &opts.config {
        loaded = config
            .restore(text)
            .map_err(|e| DaemonError::Config(e.to_string()))?;
        for s in &config.services {
            spec(s, opts.mh_table_size).map_err(DaemonError::Config)?;
        }
    }
    let filter = match &opts.filter {
        Some(t) => FilterTable::parse_file(t)?,
        None => FilterTable::default(),
    };
    let server = socket::Server::bind(&opts.control).map_err(|err| DaemonError::Control {
        path: opts.control.display().to_string(),
        err,
    })?;

    let names: Vec<String> = ifaces.iter().map(|i| i.name.clone()).collect();
    let pipeline = Arc::new(Pipeline::new(uvs_conntrack::Table::new(table_cfg)));
    pipeline.filter.store(Arc::new(filter));
    let engine = Engine::start(
        pipeline.clone(),
        ifaces,
        &EngineConfig {
            workers: opts.workers,
            ring_frames: opts.ring_frames,
            io: opts.io,
            busy_poll_us: opts.busy_poll_us,
        },
    )?;
    let guard = match engine.io {
        engine::IoBackend::AfPacket { .. } => Some(KernelGuard::install(&names)?),
        engine::IoBackend::AfXdp(_) => {
            // The XDP program is the guard; a table left by a crashed
            // AF_PACKET run would still drop traffic uvs no longer owns.
            let _ = guard::remove_stale();
            None
        }
    };
    let workers = engine.stats.workers.len();
    pipeline
        .services
        .store(Arc::new(Services::counted(engine.stats.clone())));
    let ticker = estimator_thread(engine.stats.clone())
        .map_err(|e| DaemonError::Engine(engine::EngineError::Io(e)))?;
    let mut d = Daemon {
        pipeline,
        engine,
        guard,
        owned: Owned::default(),
        config,
        mh_table_size: opts.mh_table_size,
        sources: opts.sources.clone(),
        ring_frames: opts.ring_frames,
    };
    d.commit(&ctl::Applied::Batch(loaded))
        .map_err(DaemonError::Config)?;
    // Prometheus: the registry from the shared counters, on its own
    // thread (AF_XDP's program counters stay in `uvs stats`).
    let metrics = match opts.metrics {
        None => None,
        Some(addr) => {
            let (pl, st) = (d.pipeline.clone(), d.engine.stats.clone());
            let guard = d.guard.is_some();
            let ring_frames = opts.ring_frames;
            let m = metrics::serve(addr, move || {
                registry::collect(&registry::Sources {
                    pipeline: &pl,
                    stats: &st,
                    guard,
                    extra: "",
                    services: true,
                    ring_frames,
                })
            })
            .map_err(|err| DaemonError::Metrics { addr, err })?;
            log::info!("metrics at http://{}/metrics", m.addr);
            Some(m)
        }
    };
    log::info!(
        "running on {} with {} worker(s), {}; control socket {}",
        names.join(", "),
        workers,
        d.engine.io.describe(),
        opts.control.display()
    );
    lifecycle::notify(State::Ready(&format!(
        "running on {} with {workers} worker(s)",
        names.join(", ")
    )));
    // A panicked engine thread stops the daemon too (crate::fault).
    let faults = d.engine.faults.clone();
    server.serve(
        || stop.load(Ordering::Relaxed) || faults.panics() > 0,
        |argv| d.answer(argv),
    );
    log::info!("stopping");
    lifecycle::notify(State::Stopping);
    drop(metrics);
    drop(ticker);
    d.engine.stop();
    // Guard drop removes the nftables table; the server's drop the socket.
    drop(d);
    match faults.panics() {
        0 => Ok(()),
        count => Err(DaemonError::Fault {
            first: faults.first().unwrap_or_default(),
            count,
        }),
    }
}

/// A hash seed from the OS, so clients cannot aim at one table shard.
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom(2) writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 8 {
        // Fall back to time and PID: still differs per run.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return t ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_ne_bytes(b)
}

/// `--set-knob NAME=VALUE`: the kernel's IPVS sysctls that the connection
/// table implements.
pub fn set_knob(k: &mut uvs_conntrack::Knobs, spec: &str) -> Result<(), String> {
    let (name, val) = spec
        .split_once('=')
        .ok_or_else(|| format!("knob '{spec}': expected NAME=VALUE"))?;
    let flag = || match val {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(format!("knob {name}: value '{val}' must be 0 or 1")),
    };
    match name {
        "expire_nodest_conn" => k.expire_nodest_conn = flag()?,
        "expire_quiescent_template" => k.expire_quiescent_template = flag()?,
        "sloppy_tcp" => k.sloppy_tcp = flag()?,
        "sloppy_sctp" => k.sloppy_sctp = flag()?,
        "drop_entry" => k.drop_entry = flag()?,
        "conn_reuse_mode" => {
            k.conn_reuse_mode = val
                .parse::<u8>()
                .ok()
                .filter(|v| *v <= 3)
                .ok_or_else(|| format!("knob conn_reuse_mode: value '{val}' must be 0..3"))?
        }
        _ => {
            return Err(format!(
                "unknown knob '{name}' (known: expire_nodest_conn expire_quiescent_template sloppy_tcp sloppy_sctp drop_entry conn_reuse_mode)"
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
