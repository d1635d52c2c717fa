//! `uvs bench`: uvs against the kernel's DNAT (kube-proxy's iptables and
//! nftables shapes) and plain routing, in one run, on this machine.
//!
//! For every service count N and peer, the bench builds a fresh, uniquely
//! named namespace lab (`scripts/lab.sh`: client, director, two real
//! servers), starts its own servers in the real-server namespaces, loads the
//! peer with the same N services once (timed; see [`peers`]), and then, for
//! each repetition, measures from the client namespace (see [`load`]):
//! serial connect+request+close latency, short-connection and keep-alive
//! request rates, one TCP stream's throughput, a 64-byte UDP flood, then the
//! time to add and to remove one service. Everything a configuration made is
//! removed when it ends, also on failure and on SIGINT (the caller raises
//! the stop flag; every loop here is bounded and watches it).
//!
//! A peer whose traffic was not balanced (one real server never answered)
//! is reported as failed, with no figures. Results go to stdout as they
//! come and, with an output directory, to `results.csv`, `report.md` and
//! PNG plots ([`report`], [`plot`]).

pub mod load;
mod metric;
pub mod peers;
pub mod plot;
pub mod report;
pub mod server;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lab::{Director, Lab};
use crate::sys::netns;
pub use metric::Metric;
use peers::Peer;

/// What can stop a bench run as a whole (a single configuration's failure
/// is reported in the results instead).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A bad option value.
    #[error("{0}")]
    Usage(String),
    /// Programs the chosen peers need are not installed.
    #[error("missing {0}")]
    Missing(String),
    /// Stopped by a signal; what was made is removed.
    #[error("interrupted; the lab was removed")]
    Interrupted,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn ioe(what: impl Into<String>) -> impl FnOnce(io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// One figure of one configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub peer: Peer,
    pub services: usize,
    /// Repetition, from 1.
    pub rep: usize,
    pub metric: Metric,
    pub value: f64,
}

/// A configuration that gave no figures, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub peer: Peer,
    pub services: usize,
    /// The repetition that failed; `None`: the whole configuration (lab,
    /// load, or a director that died).
    pub rep: Option<usize>,
    pub reason: String,
}

/// What the bench was asked to do.
#[derive(Debug, Clone)]
pub struct Opts {
    pub peers: Vec<Peer>,
    pub services: Vec<usize>,
    pub reps: usize,
    /// Measured services first instead of last.
    pub first: bool,
    /// Length of each traffic test.
    pub test_time: Duration,
    /// Serial latency samples (at most; also bounded by `test_time`).
    pub latency_samples: u64,
    /// Parallel connections of the rate tests.
    pub conns: usize,
    /// The `uvs` executable to run as the director.
    pub uvs_exe: PathBuf,
    pub out: Option<PathBuf>,
}

impl Opts {
    /// The full defaults: every peer, N = 1, 1000, 10000, three repetitions.
    pub fn full(uvs_exe: PathBuf) -> Opts {
        Opts {
            peers: Peer::ALL.to_vec(),
            services: vec![1, 1000, 10_000],
            reps: 3,
            first: false,
            test_time: Duration::from_secs(3),
            latency_samples: 2000,
            conns: 64,
            uvs_exe,
            out: None,
        }
    }

    /// `--quick`: N = 1 and 100, short tests, one repetition.
    pub fn quick(uvs_exe: PathBuf) -> Opts {
        Opts {
            services: vec![1, 100],
            reps: 1,
            test_time: Duration::from_millis(500),
            latency_samples: 200,
            ..Opts::full(uvs_exe)
        }
    }
}

/// Parses `--peers iptables,uvs`.
pub fn parse_peers(s: &str) -> Result<Vec<Peer>, BenchError> {
    let mut v = Vec::new();
    for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let p = Peer::parse(w).ok_or_else(|| {
            BenchError::Usage(format!(
                "unknown peer '{w}' (peers: {})",
                Peer::ALL.map(Peer::name).join(", ")
            ))
        })?;
        if !v.contains(&p) {
            v.push(p);
        }
    }
    if v.is_empty() {
        return Err(BenchError::Usage("--peers names no peer".into()));
    }
    v.sort();
    Ok(v)
}

/// Parses `--services 1,1000,10000` (each 1 … [`peers::MAX_SERVICES`]).
pub fn parse_services(s: &str) -> Result<Vec<usize>, BenchError> {
    let mut v = Vec::new();
    for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let n: usize = w
            .replace('_', "")
            .parse()
            .map_err(|_| BenchError::Usage(format!("--services: '{w}' is not a count")))?;
        if n == 0 || n > peers::MAX_SERVICES {
            return Err(BenchError::Usage(format!(
                "--services: {n} is outside 1 … {}",
                peers::MAX_SERVICES
            )));
        }
        v.push(n);
    }
    if v.is_empty() {
        return Err(BenchError::Usage("--services names no count".into()));
    }
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// The kernel tools the run needs.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    pub iptables_restore: Option<PathBuf>,
    pub nft: Option<PathBuf>,
}

/// Finds every program the lab and the chosen peers need, or names each
/// missing one with its Debian package.
pub fn check_tools(peers: &[Peer]) -> Result<Tools, BenchError> {
    check_tools_with(peers, peers::find_tool)
}

fn check_tools_with(
    peers: &[Peer],
    find: impl Fn(&str) -> Option<PathBuf>,
) -> Result<Tools, BenchError> {
    let mut need: Vec<(&str, &str, &str)> = vec![
        ("ip", "iproute2", "the lab"),
        ("sysctl", "procps", "the lab"),
        ("bash", "bash", "the lab"),
    ];
    for p in peers {
        for (prog, pkg) in p.tools() {
            need.push((prog, pkg, p.name()));
        }
    }
    let mut missing = Vec::new();
    let mut tools = Tools::default();
    for (prog, pkg, who) in need {
        match find(prog) {
            Some(path) if prog == "iptables-restore" => tools.iptables_restore = Some(path),
            Some(path) if prog == "nft" => tools.nft = Some(path),
            Some(_) => {}
            None => missing.push(format!("{prog} (Debian package {pkg}, for {who})")),
        }
    }
    if missing.is_empty() {
        Ok(tools)
    } else {
        Err(BenchError::Missing(format!(
            "{}; install them, or leave those peers out with --peers",
            missing.join(", ")
        )))
    }
}

/// Whether we run as root (namespaces need it).
pub fn is_root() -> bool {
    super::demo::is_root()
}

/// The whole run's outcome.
#[derive(Debug, Clone)]
pub struct Results {
    pub samples: Vec<Sample>,
    pub failures: Vec<Failure>,
    /// A line about the run (options, kernel, tool versions) for the report.
    pub about: Vec<String>,
    /// Files written to `--out`.
    pub files: Vec<PathBuf>,
}

/// Runs the bench. A raised `stop` ends it early: what the current
/// configuration made is removed, what was measured so far is printed and
/// written, and the result is [`BenchError::Interrupted`].
pub fn run(opts: &Opts, stop: &Arc<AtomicBool>) -> Result<Results, BenchError> {
    if opts.reps == 0 || opts.conns == 0 || opts.test_time.is_zero() {
        return Err(BenchError::Usage(
            "--reps, --conns and --seconds must be positive".into(),
        ));
    }
    let tools = check_tools(&opts.peers)?;
    if let Some(dir) = &opts.out {
        std::fs::create_dir_all(dir).map_err(ioe(format!("creating {}", dir.display())))?;
    }
    let about = about(opts, &tools);
    for l in &about {
        println!("uvs bench: {l}");
    }
    let total = opts.services.len() * opts.reps * opts.peers.len();
    let mut res = Results {
        samples: Vec::new(),
        failures: Vec::new(),
        about,
        files: Vec::new(),
    };
    let mut k = 0;
    for &n in &opts.services {
        let svcs = peers::service_set(n, opts.first);
        for &peer in &opts.peers {
            if stop.load(Ordering::Relaxed) {
                return finish(res, opts, true);
            }
            let first = k + 1;
            k += opts.reps;
            let tag = format!("[{first}-{k}/{total}] {peer} N={n}");
            if let Err(reason) = run_peer(opts, &tools, peer, &svcs, first, total, stop, &mut res) {
                if stop.load(Ordering::Relaxed) {
                    return finish(res, opts, true);
                }
                println!("uvs bench: {tag}: FAILED: {reason}");
                // A peer that failed outside one repetition (lab, load, a
                // director that died) gets no figures at all at this N.
                res.samples.retain(|s| !(s.peer == peer && s.services == n));
                res.failures.push(Failure {
                    peer,
                    services: n,
                    rep: None,
                    reason,
                });
            }
            if stop.load(Ordering::Relaxed) {
                return finish(res, opts, true);
            }
        }
    }
    finish(res, opts, false)
}

/// Prints the medians and writes the output files; after an interrupt
/// (`interrupted`), with what was measured so far, then reports it.
fn finish(mut res: Results, opts: &Opts, interrupted: bool) -> Result<Results, BenchError> {
    if interrupted && res.samples.is_empty() {
        return Err(BenchError::Interrupted);
    }
    if interrupted {
        res.about
            .push("interrupted: the results are partial".into());
    }
    print!("{}", report::medians_text(&res, opts));
    if let Some(dir) = &opts.out {
        res.files = report::write_all(dir, &res, opts)
            .map_err(ioe(format!("writing {}", dir.display())))?;
        for f in &res.files {
            println!("uvs bench: wrote {}", f.display());
        }
    }
    if interrupted {
        return Err(BenchError::Interrupted);
    }
    Ok(res)
}

fn first_line(cmd: &std::path::Path, arg: &str) -> String {
    std::process::Command::new(cmd)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn about(opts: &Opts, tools: &Tools) -> Vec<String> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut v = vec![
        format!(
            "peers {}; services {}; {} repetition(s); measured service {}; {:.1} s per traffic test, {} parallel connections",
            opts.peers.iter().map(|p| p.name()).collect::<Vec<_>>().join(","),
            opts.services.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
            opts.reps,
            if opts.first { "first" } else { "last" },
            opts.test_time.as_secs_f64(),
            opts.conns
        ),
        format!(
            "uvs {}, Linux {}, {cores} cores shared by client, director and servers",
            env!("CARGO_PKG_VERSION"),
            kernel.trim()
        ),
    ];
    if let Some(p) = &tools.iptables_restore {
        v.push(format!("iptables: {}", first_line(p, "--version")));
    }
    if let Some(p) = &tools.nft {
        v.push(format!("nftables: {}", first_line(p, "--version")));
    }
    v
}

/// Names unique within the machine: the process ID and a per-process count.
fn next_prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "uvsb{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Loading 50,000 services into some peers takes many minutes.
const LOAD_LIMIT: Duration = Duration::from_secs(3600);
/// kube-proxy's partial iptables restore rewrites KUBE-SERVICES whole, so
/// at tens of thousands of services one change can take minutes.
const CHANGE_LIMIT: Duration = Duration::from_secs(1200);

/// A peer loaded into a lab: for uvs, its running director.
struct Loaded {
    director: Option<Director>,
    load: Option<Duration>,
}

fn load_peer(
    opts: &Opts,
    tools: &Tools,
    lab: &Lab,
    peer: Peer,
    svcs: &[peers::Svc],
    stop: &Arc<AtomicBool>,
) -> io::Result<Loaded> {
    let lb = lab.ns("lb");
    let tool = |p: &Option<PathBuf>| p.clone().ok_or_else(|| io::Error::other("tool not found"));
    Ok(match peer {
        Peer::Routing => {
            // The client reaches the real servers through the director.
            let st = std::process::Command::new("ip")
                .args([
                    "-n",
                    &lab.ns("c"),
                    "route",
                    "add",
                    "203.0.113.0/24",
                    "via",
                    "198.51.100.1",
                ])
                .status()?;
            if !st.success() {
                return Err(io::Error::other(
                    "adding the client's route to the real servers",
                ));
            }
            Loaded {
                director: None,
                load: None,
            }
        }
        Peer::Iptables => {
            let t = peers::run_tool(
                &lb,
                &tool(&tools.iptables_restore)?,
                &[],
                peers::iptables_full(svcs),
                LOAD_LIMIT,
                stop,
            )?;
            Loaded {
                director: None,
                load: Some(t),
            }
        }
        Peer::Nftables => {
            let t = peers::run_tool(
                &lb,
                &tool(&tools.nft)?,
                &["-f", "-"],
                peers::nftables_full(svcs),
                LOAD_LIMIT,
                stop,
            )?;
            Loaded {
                director: None,
                load: Some(t),
            }
        }
        Peer::Uvs => {
            let d = Director::start(lab, &opts.uvs_exe, &[])?;
            let script = peers::uvs_restore(svcs);
            let t0 = Instant::now();
            let r = d.call(&["uvsadm-restore", &script])?;
            let t = t0.elapsed();
            if r.status != 0 {
                return Err(io::Error::other(format!("uvsadm -R: {}", r.stderr.trim())));
            }
            Loaded {
                director: Some(d),
                load: Some(t),
            }
        }
    })
}

/// Adds one service, then removes it; the two wall times.
fn change_peer(
    tools: &Tools,
    lab: &Lab,
    peer: Peer,
    loaded: &Loaded,
    svcs: &[peers::Svc],
    stop: &Arc<AtomicBool>,
) -> io::Result<Option<(Duration, Duration)>> {
    let lb = lab.ns("lb");
    let c = peers::change_service();
    let tool = |p: &Option<PathBuf>| p.clone().ok_or_else(|| io::Error::other("tool not found"));
    Ok(Some(match peer {
        Peer::Routing => return Ok(None),
        Peer::Iptables => {
            let ipt = tool(&tools.iptables_restore)?;
            let mut with: Vec<peers::Svc> = svcs.to_vec();
            with.push(c.clone());
            let add = peers::run_tool(
                &lb,
                &ipt,
                &["--noflush", "--counters"],
                peers::iptables_change(&with, &c, true),
                CHANGE_LIMIT,
                stop,
            )?;
            let del = peers::run_tool(
                &lb,
                &ipt,
                &["--noflush", "--counters"],
                peers::iptables_change(svcs, &c, false),
                CHANGE_LIMIT,
                stop,
            )?;
            (add, del)
        }
        Peer::Nftables => {
            let nft = tool(&tools.nft)?;
            let add = peers::run_tool(
                &lb,
                &nft,
                &["-f", "-"],
                peers::nftables_change(&c, true),
                CHANGE_LIMIT,
                stop,
            )?;
            let del = peers::run_tool(
                &lb,
                &nft,
                &["-f", "-"],
                peers::nftables_change(&c, false),
                CHANGE_LIMIT,
                stop,
            )?;
            (add, del)
        }
        Peer::Uvs => {
            let d = loaded
                .director
                .as_ref()
                .ok_or_else(|| io::Error::other("no director"))?;
            let time = |cmds: Vec<String>| -> io::Result<Duration> {
                let t0 = Instant::now();
                for cmd in &cmds {
                    d.uvsadm(cmd)?;
                }
                Ok(t0.elapsed())
            };
            (
                time(peers::uvs_change(&c, true))?,
                time(peers::uvs_change(&c, false))?,
            )
        }
    }))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One peer at one N in its own lab: loads it once, then runs every
/// repetition, recording figures and per-repetition failures in `res`.
/// An error is a failure of the whole configuration.
#[allow(clippy::too_many_arguments)]
fn run_peer(
    opts: &Opts,
    tools: &Tools,
    peer: Peer,
    svcs: &[peers::Svc],
    first: usize,
    total: usize,
    stop: &Arc<AtomicBool>,
    res: &mut Results,
) -> Result<(), String> {
    // The set holds the N TCP services and the measured UDP service.
    let n = svcs.len() - 1;
    let prefix = next_prefix();
    println!("uvs bench: {peer} N={n}: building lab {prefix}");
    let lab = Lab::up(&prefix, &[]).map_err(|e| format!("building lab {prefix}: {e}"))?;
    let _rs1 = server::start_in(&lab.ns("rs1"), "rs1").map_err(|e| format!("server rs1: {e}"))?;
    let _rs2 = server::start_in(&lab.ns("rs2"), "rs2").map_err(|e| format!("server rs2: {e}"))?;
    if peer.balances() {
        let s = if n == 1 { "" } else { "s" };
        println!("uvs bench: {peer} N={n}: loading {n} service{s} and the measured UDP one");
    }
    let loaded = load_peer(opts, tools, &lab, peer, svcs, stop)
        .map_err(|e| format!("loading {} services: {e}", svcs.len()))?;
    for rep in 1..=opts.reps {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let tag = format!(
            "[{}/{total}] {peer} N={n} rep {rep}/{}",
            first + rep - 1,
            opts.reps
        );
        let t0 = Instant::now();
        match measure(opts, tools, &lab, peer, &loaded, svcs, stop) {
            Ok(mut figs) => {
                // The load happened once, before the first repetition.
                if let (1, Some(t)) = (rep, loaded.load) {
                    figs.insert(0, (Metric::LoadMs, ms(t)));
                }
                println!(
                    "uvs bench: {tag}: {} ({:.1} s)",
                    report::one_line(&figs),
                    t0.elapsed().as_secs_f64()
                );
                res.samples
                    .extend(figs.into_iter().map(|(metric, value)| Sample {
                        peer,
                        services: n,
                        rep,
                        metric,
                        value,
                    }));
            }
            Err(reason) if !stop.load(Ordering::Relaxed) => {
                println!("uvs bench: {tag}: FAILED: {reason}");
                res.failures.push(Failure {
                    peer,
                    services: n,
                    rep: Some(rep),
                    reason,
                });
            }
            Err(_) => break,
        }
    }
    if let Some(d) = loaded.director {
        let log = d.log.clone();
        let text = d.log_text();
        let st = d.stop();
        let _ = std::fs::remove_file(&log);
        match st {
            Ok(st) if !st.success() => {
                // Its last words are enough to say why.
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(5)..].join(" / ");
                return Err(format!("uvs run exited {st}: {tail}"));
            }
            Err(e) => return Err(format!("stopping uvs run: {e}")),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// The readiness probe and the serial latency test, run in the client
/// namespace.
fn latency_test(
    t: &[std::net::SocketAddr],
    opts: &Opts,
    stop: &AtomicBool,
) -> io::Result<load::LatencyRun> {
    // Readiness (and warm neighbour caches) before anything is timed.
    let p = load::probe(t, 20, Duration::from_secs(10), stop);
    if p.total() == 0 {
        return Err(io::Error::other(format!(
            "the service never answered (first error: {})",
            p.first_error.unwrap_or_default()
        )));
    }
    load::latency(t, opts.latency_samples, opts.test_time * 2, stop)
}

/// The TCP rate and stream tests after [`latency_test`]'s `lat`, run in
/// the client namespace: figures and answers.
fn tcp_tests(
    t: &[std::net::SocketAddr],
    lat: load::LatencyRun,
    opts: &Opts,
    stop: &AtomicBool,
) -> io::Result<(Vec<(Metric, f64)>, load::Answers)> {
    let d = opts.test_time;
    let short = load::tcp_rate(t, opts.conns, 2, false, d, 50_000_000, stop)?;
    let keep = load::tcp_rate(t, opts.conns, 2, true, d, 500_000_000, stop)?;
    let st = load::stream(t[0], d, 1 << 40, stop)?;
    let tests = [
        ("latency", &lat.answers),
        ("short-connection", &short.answers),
        ("keep-alive", &keep.answers),
    ];
    for (what, a) in tests {
        if a.total() == 0 {
            return Err(io::Error::other(format!(
                "the {what} test got no answer (first error: {})",
                a.first_error.clone().unwrap_or_default()
            )));
        }
    }
    let mut all = lat.answers.clone();
    all.merge(&short.answers);
    all.merge(&keep.answers);
    let figs = vec![
        (Metric::LatP50Us, lat.hist.value_at_quantile(0.5) as f64),
        (Metric::LatP99Us, lat.hist.value_at_quantile(0.99) as f64),
        (Metric::ShortRps, short.per_sec()),
        (Metric::KeepaliveRps, keep.per_sec()),
        (Metric::StreamGbps, st.gbit_per_sec()),
    ];
    Ok((figs, all))
}

/// `Udp InErrors` (datagrams a UDP socket could not take: a full receive
/// buffer, a bad checksum) summed over the client's and real servers'
/// namespaces; `None` if one cannot be read.
fn udp_in_errors(lab: &Lab) -> Option<u64> {
    let mut sum = 0;
    for host in ["c", "rs1", "rs2"] {
        let snmp = netns::run_in(&lab.ns(host), || {
            std::fs::read_to_string("/proc/thread-self/net/snmp").ok()
        })
        .ok()??;
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
        let (names, values) = (udp.next()?, udp.next()?);
        let i = names.split_whitespace().position(|n| n == "InErrors")?;
        sum += values.split_whitespace().nth(i)?.parse::<u64>().ok()?;
    }
    Some(sum)
}

/// What `uvs stats` says of how the workers waited and what they dropped.
#[derive(Debug, Clone, Copy)]
struct UvsCounts {
    /// `worker.sleeps`.
    sleeps: u64,
    /// Every `drop.*` counter, summed.
    drops: u64,
}

/// Reads [`UvsCounts`] from a running `uvs run`; `None` if it does not
/// answer.
fn uvs_counts(d: &Director) -> Option<UvsCounts> {
    let r = d.call(&["stats"]).ok()?;
    let mut c = UvsCounts {
        sleeps: 0,
        drops: 0,
    };
    for l in r.stdout.lines() {
        let Some((k, v)) = l.split_once(' ') else {
            continue;
        };
        let Ok(v) = v.trim().parse::<u64>() else {
            continue;
        };
        if k == "worker.sleeps" {
            c.sleeps = v;
        } else if k.starts_with("drop.") {
            c.drops += v;
        }
    }
    Some(c)
}

fn measure(
    opts: &Opts,
    tools: &Tools,
    lab: &Lab,
    peer: Peer,
    loaded: &Loaded,
    svcs: &[peers::Svc],
    stop: &Arc<AtomicBool>,
) -> Result<Vec<(Metric, f64)>, String> {
    let (tcp, udp) = peers::targets(peer);
    let client = lab.ns("c");
    let mut figs = Vec::new();
    // uvs's own counters around a test (sleeps, drops), when it is the peer.
    let counts = || loaded.director.as_ref().and_then(uvs_counts);
    let (o, s, t) = (opts.clone(), stop.clone(), tcp.clone());
    let before = counts();
    let lat = netns::run_in(&client, move || latency_test(&t, &o, &s))
        .and_then(|r| r)
        .map_err(|e| format!("TCP tests: {e}"))?;
    if let (Some(a), Some(b)) = (before, counts()) {
        let n = lat.answers.total().max(1) as f64;
        figs.push((Metric::LatSleepsPerReq, (b.sleeps - a.sleeps) as f64 / n));
    }
    let (o, s) = (opts.clone(), stop.clone());
    let (tcp_figs, tally) = netns::run_in(&client, move || tcp_tests(&tcp, lat, &o, &s))
        .and_then(|r| r)
        .map_err(|e| format!("TCP tests: {e}"))?;
    figs.extend(tcp_figs);
    let (d, s) = (opts.test_time, stop.clone());
    let before = counts();
    let sock_before = udp_in_errors(lab);
    let u = netns::run_in(&client, move || {
        load::udp_flood(&udp, 16, d, 200_000_000, &s)
    })
    .and_then(|r| r)
    .map_err(|e| format!("UDP test: {e}"))?;
    figs.extend([
        (Metric::UdpSentPps, u.sent_per_sec()),
        (Metric::UdpRecvPps, u.received_per_sec()),
        (Metric::UdpLossPct, u.loss_pct()),
    ]);
    // The last datagrams and the kernel's ring drop counts (read every
    // 100 ms) settle first.
    if before.is_some() {
        std::thread::sleep(Duration::from_millis(300));
    }
    if let (Some(a), Some(b)) = (sock_before, udp_in_errors(lab)) {
        let sent = u.sent.max(1) as f64;
        figs.push((
            Metric::UdpSocketLossPct,
            100.0 * b.saturating_sub(a) as f64 / sent,
        ));
    }
    if let (Some(a), Some(b)) = (before, counts()) {
        let sent = u.sent.max(1) as f64;
        figs.push((
            Metric::UdpCountedPct,
            100.0 * b.drops.saturating_sub(a.drops) as f64 / sent,
        ));
    }
    if stop.load(Ordering::Relaxed) {
        return Err("interrupted".into());
    }
    let change = change_peer(tools, lab, peer, loaded, svcs, stop)
        .map_err(|e| format!("changing one service: {e}"))?;
    if let Some((add, del)) = change {
        figs.push((Metric::AddMs, ms(add)));
        figs.push((Metric::RemoveMs, ms(del)));
    }
    // Balance: both real servers must have answered, over TCP and UDP.
    let [a1, a2] = tally.by_server;
    if a1 == 0 || a2 == 0 {
        return Err(format!(
            "TCP traffic not balanced: rs1 answered {a1}, rs2 {a2}"
        ));
    }
    let [u1, u2] = u.by_server;
    if u1 == 0 || u2 == 0 {
        return Err(format!(
            "UDP traffic not balanced: rs1 answered {u1}, rs2 {u2}"
        ));
    }
    figs.push((Metric::AnswersRs1, a1 as f64));
    figs.push((Metric::AnswersRs2, a2 as f64));
    figs.push((Metric::Errors, tally.failures as f64));
    Ok(figs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_are_named_with_their_packages() {
        let none = |_: &str| None;
        let e = check_tools_with(&[Peer::Iptables, Peer::Uvs], none).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("iptables-restore (Debian package iptables, for iptables)"),
            "{m}"
        );
        assert!(
            m.contains("ip (Debian package iproute2, for the lab)"),
            "{m}"
        );
        assert!(!m.contains("nft "), "{m}");
        let all = |p: &str| Some(PathBuf::from(format!("/x/{p}")));
        let t = check_tools_with(&Peer::ALL, all).unwrap();
        assert_eq!(t.nft, Some(PathBuf::from("/x/nft")));
    }

    #[test]
    fn peer_and_service_lists_parse_or_say_why_not() {
        assert_eq!(
            parse_peers("uvs,iptables").unwrap(),
            vec![Peer::Iptables, Peer::Uvs]
        );
        assert!(parse_peers("ipvs")
            .unwrap_err()
            .to_string()
            .contains("unknown peer 'ipvs'"));
        assert_eq!(
            parse_services("10000,1,1_000").unwrap(),
            vec![1, 1000, 10_000]
        );
        assert!(parse_services("0").is_err());
        assert!(parse_services("x").is_err());
    }
}
