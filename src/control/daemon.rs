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
use crate::control::knobs;
use crate::control::lifecycle::{self, State};
use crate::control::reload;
use crate::control::socket::{self, Answer, Reply};
use crate::control::{metrics, registry};
use crate::datapath::estimator::INTERVAL_MS;
use crate::datapath::filter::{FilterTable, Rule};
use crate::datapath::pipeline::Pipeline;
use crate::datapath::service::{
    fwmark_id, Change, ClientMask, DestSpec, Pe, Persistence, Plan, ServiceSpec, Services, SvcId,
    FWMARK,
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
    /// `--tables`: the file's name and text.
    pub tables: Option<reload::Text>,
    /// `--ipsets`: `ipset save` text, loaded before the tables.
    pub ipsets: Option<reload::Text>,
    pub ring_frames: usize,
    pub mh_table_size: u32,
    pub knobs: Vec<String>,
    /// `--conn-max`: the connection table's cap (connections + templates).
    pub conn_max: usize,
    /// Packet backend (`--io`).
    pub io: engine::IoMode,
    /// How AF_PACKET transmits (`--tx`).
    pub tx: engine::TxMode,
    /// `--busy-poll` microseconds (0: off).
    pub busy_poll_us: u32,
    /// `--idle-spin` microseconds (0: off).
    pub idle_spin_us: u32,
    /// `--worker-nice`: the workers' nice value (0: unchanged).
    pub worker_nice: i32,
    /// `--worker-cpus`: the CPU of each worker, in turn (empty: unpinned).
    pub worker_cpus: Vec<usize>,
    /// `--worker-fifo`, `--worker-sched-idle`: the workers' policy.
    pub worker_policy: crate::io::place::Policy,
    /// `--fanout`: how the AF_PACKET rings share an interface's packets.
    pub fanout: crate::io::Fanout,
    /// The files re-read by `uvs reload` / SIGHUP (see [`reload`]).
    pub sources: lifecycle::Sources,
    /// `--metrics ADDR:PORT`: serve Prometheus text at `/metrics`.
    pub metrics: Option<SocketAddr>,
    /// `--keepalived FILE`: its virtual servers, health-checked.
    pub keepalived: Option<reload::Text>,
    /// `--bgp-peer …`: announce the healthy services' VIPs through BIRD.
    pub bgp: Option<crate::bgp::BgpConfig>,
    /// `--local-src ADDR`: local clients reach the VIPs from this address
    /// (one per family; empty: off). See [`crate::sys::local_out`].
    pub local_src: Vec<IpAddr>,
    /// `--log-queue`: records per worker queue of LOG lines.
    pub log_queue: usize,
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
    #[error("tables {name}: {err}")]
    Tables {
        name: String,
        err: crate::datapath::tables::TablesError,
    },
    #[error("control socket {path}: {err}")]
    Control { path: String, err: std::io::Error },
    #[error("an engine thread panicked ({first}; {count} panic(s) in all); uvs stopped")]
    Fault { first: String, count: u64 },
    #[error(transparent)]
    Local(#[from] crate::sys::local_out::LocalError),
    #[error("metrics address {addr}: {err}")]
    Metrics {
        addr: SocketAddr,
        err: std::io::Error,
    },
    #[error("BGP: {0}")]
    Bgp(#[from] crate::bgp::BgpError),
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
    /// `--start-daemon`'s connection sync daemons.
    sync: crate::sync::SyncDaemons,
    /// `--keepalived`'s health state (see [`crate::health`]).
    health: Option<Arc<crate::health::Health>>,
    /// `--bgp-peer`'s speaker: told which services each commit touched.
    bgp: Option<crate::bgp::Bgp>,
    /// `--local-src`: the local-client device, rules and routes.
    local: Option<crate::sys::local_out::LocalClients>,
}

/// The runtime form of one configured service, or what the engine cannot
/// do yet (refused loudly rather than parsed and ignored).
pub fn spec(s: &ctl::ServiceConfig, mh_table_size: u32) -> Result<ServiceSpec, String> {
    let (proto, addr, port) = match s.key {
        ctl::SvcKey::Addr { proto, addr, port } => (proto.number(), addr, port),
        ctl::SvcKey::Fwmark { mark, family } => fwmark_id(family == ctl::Family::V6, mark),
    };
    // `-o` needs nothing more here: the configuration model admits it for
    // UDP services only, as ipvsadm does.
    let pe = match s.pe.as_deref() {
        None => None,
        Some("sip") => Some(Pe::Sip),
        Some(other) => return Err(format!("persistence engine '{other}' is unknown")),
    };
    // A PE without -p, or on TCP/SCTP, is refused by the model
    // (`CtlError::PeNeedsPersistentUdp`).
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
        one_packet: s.ops,
        pe,
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
        FWMARK => {
            let (mark, family) = match addr {
                IpAddr::V4(a) => (u32::from(a), ctl::Family::V4),
                IpAddr::V6(a) => (u128::from(a) as u32, ctl::Family::V6),
            };
            return Some(ctl::SvcKey::Fwmark { mark, family });
        }
        6 => ctl::Proto::Tcp,
        17 => ctl::Proto::Udp,
        132 => ctl::Proto::Sctp,
        _ => return None,
    };
    Some(ctl::SvcKey::Addr { proto, addr, port })
}

/// The runtime key of a configured service (fwmark services: [`fwmark_id`]).
fn id_of(key: &ctl::SvcKey) -> Option<SvcId> {
    match *key {
        ctl::SvcKey::Addr { proto, addr, port } => Some((proto.number(), addr, port)),
        ctl::SvcKey::Fwmark { mark, family } => Some(fwmark_id(family == ctl::Family::V6, mark)),
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
    if spec.proto == FWMARK {
        // The traffic is claimed by the MARK rules that feed the service
        // (see `tables_claims`); its NAT servers' replies, of any protocol
        // the mark may carry, here.
        let mut v = Vec::new();
        for d in spec
            .dests
            .iter()
            .filter(|d| d.fwd == uvs_sched::FwdMethod::Masq && d.port != 0)
        {
            for proto in [6, 17, 132] {
                v.push(guard::Elem::NatServer((proto, d.addr, d.port)));
            }
            v.push(guard::Elem::NatAddr(d.addr));
        }
        return v;
    }
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
        // A subnet's broadcast address, known only from the routes.
        if crate::control::dest_check::first_refused(&p.resolve).is_some() {
            self.owned.revert(p.staged);
            return Err(ctl::CtlError::NotUnicast.to_string());
        }
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
        if let Some(b) = &self.bgp {
            let mut keys = Vec::new();
            touched(applied, &running, &mut keys);
            b.update(&self.config, &keys);
        }
        if let Some(l) = &mut self.local {
            // The services run; only local clients' way to them failed.
            if let Err(e) = l.follow(&p.delta) {
                log::warn!("{e}");
            }
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
            // `uvs trace`: produced on its own thread (control/trace.rs).
            Some("trace") => crate::control::trace::answer(
                &self.pipeline,
                self.engine.stats.workers.len(),
                self.engine
                    .ifaces
                    .iter()
                    .map(|i| (i.index, i.name.clone()))
                    .collect(),
                &argv[1..],
            ),
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
            // The counters only the control thread can read (the resolver's,
            // the AF_XDP program's and sockets'), for `/metrics`.
            Some("stats-extra") => Reply::ok(self.stats_extra()),
            Some("stats") => {
                let extra = self.stats_extra();
                let mut r = registry::collect(&registry::Sources {
                    pipeline: &self.pipeline,
                    stats: &self.engine.stats,
                    guard: self.guard.is_some(),
                    extra: &extra,
                    services: false,
                    ring_frames: self.ring_frames,
                });
                if let Some(h) = &self.health {
                    h.register(&mut r);
                }
                if let Some(b) = &self.bgp {
                    b.register(&mut r);
                }
                match argv.get(1).map(String::as_str) {
                    None => Reply::ok(r.text()),
                    Some("--json") => Reply::ok(format!("{}\n", r.json())),
                    Some(o) => Reply::err(format!("uvs stats: unknown option {o}")),
                }
            }
            Some("filter") => self.filter(&argv[1..]),
            Some("tables") => self.tables(&argv[1..]),
            Some("ipset") => {
                let cur = self.pipeline.tables.load_full();
                let (new, reply) = crate::control::ipset::request(&cur, &argv[1..]);
                if let Some(r) = new {
                    self.pipeline.tables.store(Arc::new(r));
                }
                reply
            }
            // `uvs knob [NAME=VALUE…]` (see knobs.rs).
            Some("knob") => match knobs::request(&argv[1..], &self.pipeline) {
                Ok(out) => Reply::ok(out),
                Err(e) => Reply::err(e),
            },
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
            // From the health checker thread (see crate::health::runner).
            Some("health-sync") => self.health_sync(),
            Some("tables-addrs") => {
                Reply::ok(crate::datapath::tables::nat::follow_addrs(&self.pipeline))
            }
            _ => Reply::err(format!("unknown control request {:?}", argv.first())),
        }
    }

    /// `name value` lines of the resolver's counters and, under AF_XDP,
    /// the program's and sockets' ([`registry::Registry::text_counters`]).
    fn stats_extra(&self) -> String {
        let mut extra = self.engine.resolver.stats().render();
        if let engine::IoBackend::AfXdp(x) = &self.engine.io {
            extra += &x.report();
        }
        extra += &self.sync.render();
        if let Some(l) = &self.local {
            extra += &l.stats_lines();
        }
        extra
    }

    /// The keepalived services' table as their health says now, applied as
    /// the difference through the ordinary commit.
    fn health_sync(&mut self) -> Reply {
        let Some(h) = &self.health else {
            return Reply::err("no --keepalived file");
        };
        let r = crate::health::sync(h, &self.config)
            .map_err(|e| e.to_string())
            .and_then(|cmds| self.apply_commands(&cmds).map(|()| cmds.len()));
        match r {
            Ok(n) => {
                log::info!("health: table updated ({n} change(s))");
                Reply::ok("")
            }
            Err(e) => {
                log::warn!("health: table update refused: {e}");
                Reply::err(e)
            }
        }
    }

    /// Applies uvsadm commands as one undoable batch and commits it.
    fn apply_commands(&mut self, cmds: &[ctl::Command]) -> Result<(), String> {
        let (applied, undo) = reload::apply(&mut self.config, cmds).map_err(|e| e.to_string())?;
        if let Err(e) = self.commit(&ctl::Applied::Batch(applied)) {
            self.config.undo(undo);
            return Err(e);
        }
        Ok(())
    }

    /// One uvsadm command: parsed, validated and applied to the
    /// configuration by `ctl`, then committed to the runtime — or refused
    /// and undone, leaving everything as it was.
    fn uvsadm(&mut self, args: &[String], stdin: Option<&str>) -> Reply {
        let cmd = match ctl::parse(args) {
            Ok(c) => c,
            Err(e) => return ctl_refused(&e),
        };
        // The sync daemons change no configuration: run here, not in ctl.
        let synced = match &cmd {
            ctl::Command::StartDaemon(c) => Some(self.sync.start(
                c.clone(),
                self.pipeline.clone(),
                self.engine.epoch(),
            )),
            ctl::Command::StopDaemon(r) => Some(self.sync.stop(*r)),
            ctl::Command::List(o) if o.daemon && !o.json => return Reply::ok(self.sync.list()),
            _ => None,
        };
        match synced {
            Some(Ok(())) => return Reply::ok(""),
            // A kernel error for ipvsadm: its text, exit 255.
            Some(Err(e)) => {
                return Reply {
                    status: 255,
                    ..Reply::err(e)
                }
            }
            None => {}
        }
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
        // `--ipsets` then `--tables`: read and parsed before anything
        // changes (the tables against the new sets).
        let cur_tables = self.pipeline.tables.load_full();
        let sets = match self.sources.read_ipsets() {
            Ok(None) => None,
            Ok(Some(t)) => match crate::control::ipset::from_file(&cur_tables, &t.name, &t.text) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => return self.reload_refused(reload::ReloadError::Apply(e)),
            },
            Err(e) => return self.reload_refused(e),
        };
        let staged = sets.clone().unwrap_or_else(|| cur_tables.sets.clone());
        let tables = match self.sources.read_tables() {
            Ok(None) => None,
            Ok(Some(t)) => match crate::datapath::tables::parse_with(&t.text, &staged) {
                Ok(r) => Some(r),
                Err(err) => {
                    return self.reload_refused(reload::ReloadError::Tables { name: t.name, err })
                }
            },
            Err(e) => return self.reload_refused(e),
        };
        let filter = self.pipeline.filter.load_full();
        let check = |s: &ctl::ServiceConfig| spec(s, mh).map(drop);
        let health = self.health.as_deref();
        let plan = match reload::plan_with(&self.config, &filter, &texts, check, health) {
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
        if let Some(s) = sets {
            self.pipeline
                .tables
                .store(Arc::new(cur_tables.with_sets(s)));
        }
        if let Some(t) = tables {
            if let Err(e) = self.publish_tables(t) {
                self.pipeline.tables.store(cur_tables);
                return self.reload_refused(reload::ReloadError::Apply(e));
            }
        }
        if let (Some(h), Some(staged)) = (&self.health, plan.keepalived) {
            staged.warnings().iter().for_each(|w| log::warn!("{w}"));
            h.install(staged);
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

    /// `uvs tables restore TEXT | save [-c] | list`.
    fn tables(&mut self, args: &[String]) -> Reply {
        let cur = self.pipeline.tables.load_full();
        match (
            args.first().map(String::as_str),
            args.get(1).map(String::as_str),
        ) {
            (Some("save"), None) => Reply::ok(cur.save(false)),
            (Some("save"), Some("-c")) => Reply::ok(cur.save(true)),
            (Some("list"), None) => Reply::ok(cur.listing()),
            (Some("restore"), Some(text)) => {
                match crate::datapath::tables::parse_with(text, &cur.sets) {
                    Ok(new) => match self.publish_tables(new) {
                        Ok(()) => Reply::ok(""),
                        Err(e) => Reply::err(format!("uvs tables restore: {e}")),
                    },
                    Err(e) => Reply::err(format!("uvs tables restore: {e}; nothing changed\n")),
                }
            }
            _ => Reply::err("uvs tables: expected restore TEXT | save [-c] | list\n"),
        }
    }

    /// Replaces the tables `new` names (the others stay) and claims from
    /// the kernel what its MARK rules feed to uvs's fwmark services.
    fn publish_tables(&mut self, new: crate::datapath::tables::Ruleset) -> Result<(), String> {
        let mut merged = self.pipeline.tables.load_full().replaced_by(new);
        let mut claims: Vec<guard::Elem> = merged
            .mark_claims()
            .into_iter()
            .map(guard::Elem::Service)
            .collect();
        if merged.nat_on || merged.needs_local {
            merged = merged.with_local_nets(crate::datapath::tables::nat::local_nets());
        }
        if merged.needs_links {
            merged = merged.with_links(crate::datapath::tables::iface::read_links());
        }
        if merged.needs_routes {
            merged = merged.with_routes(crate::datapath::tables::route::read_routes());
        }
        if merged.nat_on {
            claims.extend(crate::datapath::tables::nat::guard_claims(&merged));
        }
        let (delta, staged) = self.owned.change([(TABLES_OWNER, Some(claims))]);
        let kernel = match (&mut self.guard, &mut self.engine.io) {
            (Some(g), _) => g.apply(&delta).map_err(|e| e.to_string()),
            (None, engine::IoBackend::AfXdp(x)) => steer(x, &delta).map_err(|e| e.to_string()),
            (None, _) => Ok(()),
        };
        if let Err(e) = kernel {
            self.owned.revert(staged);
            return Err(e);
        }
        if let Some(l) = &mut self.local {
            if let Err(e) = l.follow_replies(&delta) {
                log::warn!("{e}");
            }
            // nat OUTPUT DNAT for local clients: the hosts the rules name
            // are routed into uvs-lo, as VIPs are.
            let (hosts, loose) = crate::datapath::tables::nat::output_dnat(&merged);
            for line in loose {
                log::warn!(
                    "uvs tables: line {line}: a nat OUTPUT DNAT rule without -d HOST: the \
                     director's own packets meet it only on their way to a VIP or to a host \
                     another OUTPUT DNAT rule names (only those are routed into {})",
                    crate::sys::local_out::DEV
                );
            }
            if let Err(e) = l.follow_dnat(hosts) {
                log::warn!("{e}");
            }
        }
        self.pipeline.tables.store(Arc::new(merged));
        Ok(())
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

/// The guard's owner key for what the tables claim (no service has it:
/// protocol 255 is reserved).
const TABLES_OWNER: SvcId = (255, IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

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

/// The largest `--log-queue` (records of about 300 bytes per worker).
pub const LOG_QUEUE_MAX: usize = 1 << 16;

/// Runs the daemon until `stop` is set.
pub fn run(opts: RunOpts, stop: &AtomicBool) -> Result<(), DaemonError> {
    let ifaces = engine::interfaces(&opts.interfaces)?;
    if opts.log_queue == 0 || opts.log_queue > LOG_QUEUE_MAX {
        return Err(DaemonError::Config(format!(
            "--log-queue {}: must be 1..{LOG_QUEUE_MAX}",
            opts.log_queue
        )));
    }
    // Before the workers start: each makes its queue on its first LOG hit.
    crate::datapath::tables::log::set_queue_len(opts.log_queue);
    let mut settings = knobs::Settings::default();
    for k in &opts.knobs {
        settings
            .set(k)
            .map_err(|e| DaemonError::Config(e.to_string()))?;
    }
    if opts.conn_max == 0 || opts.conn_max > CONN_MAX_LIMIT {
        return Err(DaemonError::Config(format!(
            "--conn-max {}: must be 1..{CONN_MAX_LIMIT}",
            opts.conn_max
        )));
    }
    let table_cfg = uvs_conntrack::Config {
        seed: random_seed(),
        max_entries: opts.conn_max,
        knobs: settings.conn,
        ..Default::default()
    };
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
    let mut health = None;
    if let Some(t) = &opts.keepalived {
        let check = |s: &ctl::ServiceConfig| spec(s, opts.mh_table_size).map(drop);
        let (h, applied) = crate::health::load(t, &mut config, check)
            .map_err(|e| DaemonError::Config(e.to_string()))?;
        loaded.extend(applied);
        health = Some(h);
    }
    let filter = match &opts.filter {
        Some(t) => FilterTable::parse_file(t)?,
        None => FilterTable::default(),
    };
    let sets = match &opts.ipsets {
        Some(t) => Arc::new(
            crate::control::ipset::from_file(&Default::default(), &t.name, &t.text)
                .map_err(DaemonError::Config)?,
        ),
        None => Default::default(),
    };
    let tables =
        match &opts.tables {
            Some(t) => Some(crate::datapath::tables::parse_with(&t.text, &sets).map_err(
                |err| DaemonError::Tables {
                    name: t.name.clone(),
                    err,
                },
            )?),
            None => None,
        };
    let server = socket::Server::bind(&opts.control).map_err(|err| DaemonError::Control {
        path: opts.control.display().to_string(),
        err,
    })?;

    let names: Vec<String> = ifaces.iter().map(|i| i.name.clone()).collect();
    let mut local = match opts.local_src.is_empty() {
        true => None,
        false => Some(crate::sys::local_out::LocalClients::start(
            &opts.local_src,
            opts.workers.max(1),
        )?),
    };
    let pipeline = Arc::new(Pipeline::new(uvs_conntrack::Table::new(table_cfg)));
    settings.apply(&pipeline);
    pipeline.filter.store(Arc::new(filter));
    let mut engine = Engine::start(
        pipeline.clone(),
        ifaces,
        &EngineConfig {
            workers: opts.workers,
            ring_frames: opts.ring_frames,
            io: opts.io,
            tx: opts.tx,
            busy_poll_us: opts.busy_poll_us,
            idle_spin_us: opts.idle_spin_us,
            worker_nice: opts.worker_nice,
            worker_cpus: opts.worker_cpus.clone(),
            worker_policy: opts.worker_policy,
            fanout: opts.fanout,
            local: local.as_ref().map(|l| (l.io(), l.ifindex())),
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
    if let Some(l) = &mut local {
        use crate::sys::local_out::Claim;
        l.claim_replies(match &mut engine.io {
            engine::IoBackend::AfXdp(x) => Claim::Xdp(x.steering()),
            engine::IoBackend::AfPacket { .. } => Claim::Nft(&names),
        })?;
    }
    let workers = engine.stats.workers.len();
    // LOG rules' lines, to stderr (journald reads their `<N>` level).
    let log_drain =
        crate::datapath::tables::log::Drain::start(engine.epoch(), Box::new(std::io::stderr()))
            .map_err(|e| DaemonError::Engine(engine::EngineError::Io(e)))?;
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
        sync: Default::default(),
        health: health.clone(),
        bgp: None,
        local,
    };
    d.commit(&ctl::Applied::Batch(loaded))
        .map_err(DaemonError::Config)?;
    let with_sets = d.pipeline.tables.load_full().with_sets(sets);
    d.pipeline.tables.store(Arc::new(with_sets));
    if let Some(t) = tables {
        d.publish_tables(t).map_err(DaemonError::Config)?;
    }
    // Prometheus: the registry from the shared counters, on its own
    // thread; the counters only the control thread reads (resolver,
    // AF_XDP) it asks for over the control socket, as any client would.
    let metrics = match opts.metrics {
        None => None,
        Some(addr) => {
            let (pl, st) = (d.pipeline.clone(), d.engine.stats.clone());
            let guard = d.guard.is_some();
            let ring_frames = opts.ring_frames;
            let control = opts.control.clone();
            let health = health.clone();
            let m = metrics::serve(addr, move || {
                let extra = socket::call(&control, &["stats-extra".to_string()])
                    .map(|r| r.stdout)
                    .unwrap_or_default();
                let mut r = registry::collect(&registry::Sources {
                    pipeline: &pl,
                    stats: &st,
                    guard,
                    extra: &extra,
                    services: true,
                    ring_frames,
                });
                if let Some(h) = &health {
                    h.register(&mut r);
                }
                r
            })
            .map_err(|err| DaemonError::Metrics { addr, err })?;
            log::info!("metrics at http://{}/metrics", m.addr);
            Some(m)
        }
    };
    // Announced once the services are in place and the engine runs.
    if let Some(cfg) = opts.bgp.clone() {
        d.bgp = Some(crate::bgp::Bgp::start(cfg, &d.config)?);
    }
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
    // The health checker applies its changes through the control socket,
    // like SIGHUP's reload: one writer.
    let checker = match health {
        None => None,
        Some(h) => {
            let control = opts.control.clone();
            let sync = move || {
                let argv = ["health-sync".to_string()];
                // Answered (even refused, which the daemon logs): done;
                // unreachable: tried again.
                socket::call(&control, &argv).is_ok()
            };
            Some(
                crate::health::runner::start(h, sync)
                    .map_err(|e| DaemonError::Engine(engine::EngineError::Io(e)))?,
            )
        }
    };
    // MASQUERADE's addresses follow the director's.
    let nat_addrs = crate::datapath::tables::nat::watch_addrs(opts.control.clone())
        .map_err(|e| log::warn!("uvs tables: not following address changes: {e}"))
        .ok();
    // A panicked engine thread stops the daemon too (crate::fault).
    let faults = d.engine.faults.clone();
    server.serve(
        || stop.load(Ordering::Relaxed) || faults.panics() > 0,
        |argv| d.answer(argv),
    );
    // Withdrawn first, so the routers move new flows away while this
    // director still forwards the ones in flight.
    if let Some(b) = d.bgp.take() {
        b.stop();
    }
    // Closed first, so a checker waiting on it is answered (refused) and
    // stops.
    drop(server);
    drop(checker);
    drop(nat_addrs);
    log::info!("stopping");
    lifecycle::notify(State::Stopping);
    drop(metrics);
    drop(ticker);
    d.engine.stop();
    // After the workers: the last records are written.
    drop(log_drain);
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

/// The largest `--conn-max`: what 256 shards of 2²² slots per family hold
/// is more; this keeps the table's memory (≈ 62 bytes an entry) sane.
pub const CONN_MAX_LIMIT: usize = 1 << 28;

/// `--set-knob NAME=VALUE` on the connection table's knobs alone (the
/// parser is [`knobs`]'; the knobs outside the table are checked and
/// ignored here).
pub fn set_knob(k: &mut uvs_conntrack::Knobs, spec: &str) -> Result<(), String> {
    let mut s = knobs::Settings {
        conn: *k,
        ..Default::default()
    };
    s.set(spec).map_err(|e| e.to_string())?;
    *k = s.conn;
    Ok(())
}

#[cfg(test)]
mod tests;
