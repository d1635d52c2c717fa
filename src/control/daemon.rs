//! `uvs run`: the daemon. Owns the configuration, turns each accepted change
//! into a new service snapshot for the workers, keeps the kernel guard's
//! sets in step, and answers the control socket until SIGINT/SIGTERM.
//!
//! A change is all-or-nothing: the command is validated against a copy of
//! the configuration, the snapshot is built (schedulers may reject flags),
//! and only then are the copy, the snapshot and the guard committed. A
//! rejected change leaves everything as it was and names the problem.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::control::ctl;
use crate::control::socket::{self, Reply};
use crate::datapath::filter::{FilterTable, Rule};
use crate::datapath::pipeline::Pipeline;
use crate::datapath::service::{ClientMask, DestSpec, Persistence, ServiceSpec};
use crate::engine::{self, Engine, EngineConfig};
use crate::sys::guard::{self, Endpoint, KernelGuard};

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
}

/// The daemon's state on the control thread.
struct Daemon {
    pipeline: Arc<Pipeline>,
    engine: Engine,
    /// The nftables guard; `None` with AF_XDP, whose program is the guard.
    guard: Option<KernelGuard>,
    config: ctl::Config,
    mh_table_size: u32,
}

/// The runtime form of a configuration, or what the engine cannot do yet
/// (refused loudly rather than parsed and ignored).
fn specs(cfg: &ctl::Config, mh_table_size: u32) -> Result<Vec<ServiceSpec>, String> {
    let mut out = Vec::with_capacity(cfg.services.len());
    for s in &cfg.services {
        let (proto, addr, port) = match s.key {
            ctl::SvcKey::Addr { proto, addr, port } => (proto.number(), addr, port),
            ctl::SvcKey::Fwmark { .. } => {
                return Err("fwmark services (-f) are not supported yet".into())
            }
        };
        if s.ops {
            return Err("one-packet scheduling (-o) is not supported yet".into());
        }
        out.push(ServiceSpec {
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
        });
    }
    Ok(out)
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
/// entries from the connection table.
struct Live<'a> {
    snap: Arc<crate::datapath::service::Services>,
    conns: &'a uvs_conntrack::Table,
    now: u64,
}

impl ctl::Counters for Live<'_> {
    fn dest(&self, svc: &ctl::SvcKey, d: &ctl::DestConfig) -> ctl::DestCounters {
        let ctl::SvcKey::Addr { proto, addr, port } = *svc else {
            return ctl::DestCounters::default();
        };
        let dest = self.snap.find(proto.number(), addr, port).and_then(|s| {
            s.dests
                .iter()
                .find(|x| x.addr == d.addr && x.port == d.port)
        });
        dest.map_or_else(ctl::DestCounters::default, |x| ctl::DestCounters {
            active_conns: x.active_conns(),
            inactive_conns: x.inactive_conns(),
            persistent_conns: x.persistent_conns(),
            stats: ctl::Stats::default(),
        })
    }

    fn connections(&self) -> Vec<ctl::ConnRow> {
        let mut rows = Vec::new();
        self.conns.for_each_entry(self.now, |c| {
            let proto = match c.proto {
                6 => ctl::Proto::Tcp,
                17 => ctl::Proto::Udp,
                _ => ctl::Proto::Sctp,
            };
            rows.push(ctl::ConnRow {
                proto,
                expire_ms: c.expires_in_ms,
                state: c.state.name().to_string(),
                client: SocketAddr::new(c.caddr, c.cport),
                virt: SocketAddr::new(c.vaddr, c.vport),
                dest: SocketAddr::new(c.daddr, c.dport),
            });
        });
        rows
    }
}

/// The traffic the kernel must leave to uvs under `specs`.
fn owned(specs: &[ServiceSpec]) -> (Vec<Endpoint>, Vec<Endpoint>) {
    let svcs = specs.iter().map(|s| (s.proto, s.addr, s.port)).collect();
    let mut nat: Vec<Endpoint> = specs
        .iter()
        .flat_map(|s| {
            s.dests
                .iter()
                .filter(|d| d.fwd == uvs_sched::FwdMethod::Masq)
                .map(move |d| (s.proto, d.addr, if d.port == 0 { s.port } else { d.port }))
        })
        .collect();
    nat.sort();
    nat.dedup();
    (svcs, nat)
}

impl Daemon {
    /// Validates and commits `new` (see the module doc).
    fn commit(&mut self, new: ctl::Config) -> Result<(), String> {
        let specs = specs(&new, self.mh_table_size)?;
        let snapshot = self
            .pipeline
            .services
            .load()
            .rebuild(&specs)
            .map_err(|e| e.to_string())?;
        let (svcs, nat) = owned(&specs);
        if let Some(g) = &self.guard {
            g.update(&svcs, &nat).map_err(|e| e.to_string())?;
        }
        if let engine::IoBackend::AfXdp(x) = &mut self.engine.io {
            x.set_owned(&svcs, &nat).map_err(|e| e.to_string())?;
        }
        self.pipeline.services.store(Arc::new(snapshot));
        let mut t = self.pipeline.conns.timeouts();
        t.set_tcp_tcpfin_udp(new.timeouts.tcp, new.timeouts.tcp_fin, new.timeouts.udp);
        self.pipeline.conns.set_timeouts(&t);
        self.config = new;
        // Learn the real servers' next hops now, so first packets rarely
        // wait for ARP/ND.
        let dests: Vec<IpAddr> = specs
            .iter()
            .flat_map(|s| s.dests.iter().map(|d| d.addr))
            .collect();
        for a in dests {
            let _ = self
                .engine
                .resolver
                .resolve_blocking(a, Duration::from_millis(500));
        }
        Ok(())
    }

    fn handle(&mut self, argv: Vec<String>) -> Reply {
        match argv.first().map(String::as_str) {
            Some("ping") => Reply::ok("pong\n"),
            Some("stats") => {
                let mut r = self.engine.stats.report(&self.pipeline.hooks);
                if let engine::IoBackend::AfXdp(x) = &self.engine.io {
                    r += &x.report();
                }
                Reply::ok(r)
            }
            Some("filter") => self.filter(&argv[1..]),
            Some("uvsadm") => self.uvsadm(&argv[1..], None),
            // `uvsadm -R`: the commands arrive as one text, applied as one batch.
            Some("uvsadm-restore") => self.uvsadm(
                &["-R".to_string()],
                Some(argv.get(1).map_or("", String::as_str)),
            ),
            _ => Reply::err(format!("unknown control request {:?}", argv.first())),
        }
    }

    /// One uvsadm command: parsed and validated by `ctl` against a copy of
    /// the configuration, then committed to the runtime (or refused, leaving
    /// everything as it was).
    fn uvsadm(&mut self, args: &[String], stdin: Option<&str>) -> Reply {
        let cmd = match ctl::parse(args) {
            Ok(c) => c,
            Err(e) => return Reply::err(e),
        };
        let live = Live {
            snap: self.pipeline.services.load_full(),
            conns: &self.pipeline.conns,
            now: self.engine.now_ms(),
        };
        let mut new = self.config.clone();
        let out = match ctl::execute_command(&mut new, &cmd, stdin, &live, &ctl::Gates::default()) {
            Ok(o) => o,
            Err(e) => return Reply::err(e),
        };
        if out.applied != ctl::Applied::Nothing {
            if let Err(e) = self.commit(new) {
                return Reply::err(e);
            }
        }
        Reply::ok(out.output)
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
    if let Some(text) = &opts.config {
        config
            .restore(text)
            .map_err(|e| DaemonError::Config(e.to_string()))?;
        specs(&config, opts.mh_table_size).map_err(DaemonError::Config)?;
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
    let mut d = Daemon {
        pipeline,
        engine,
        guard,
        config: ctl::Config::default(),
        mh_table_size: opts.mh_table_size,
    };
    d.commit(config).map_err(DaemonError::Config)?;
    eprintln!(
        "uvs: running on {} with {} worker(s), {}; control socket {}",
        names.join(", "),
        workers,
        d.engine.io.describe(),
        opts.control.display()
    );
    server.serve(|| stop.load(Ordering::Relaxed), |argv| d.handle(argv));
    eprintln!("uvs: stopping");
    d.engine.stop();
    // Guard drop removes the nftables table; the server's drop the socket.
    drop(d);
    Ok(())
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
