//! Helpers shared by the lab test binaries (each includes this module).
#![allow(dead_code)] // each binary uses its own subset

pub mod pipeline;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use uvs::lab::{self, Director, Lab, Server};

/// Root check; prints why a test is skipped.
pub fn root_or_skip(test: &str) -> bool {
    if uvs::lab::demo::is_root() {
        return true;
    }
    eprintln!("skipping {test}: lab tests create network namespaces and need root");
    false
}

/// A lab (`scripts/lab.sh` options `lab_opts`) with the lab servers on both
/// real servers (TCP 80, UDP 53) and `uvs run ARGS` in the director.
pub struct Setup {
    // Field order is drop order: stop uvs, then the servers, then the lab.
    pub d: Director,
    /// The real servers' lab servers, kept running.
    pub servers: (Server, Server),
    pub lab: Lab,
}

impl Setup {
    /// Builds it under the namespace prefix `prefix`.
    pub fn start(prefix: &str, lab_opts: &[&str], args: &[&str]) -> Setup {
        let lab = Lab::up(prefix, lab_opts).expect("lab up");
        let s1 = lab::serve_in(&lab.ns("rs1"), "rs1", 80, 53).expect("rs1 server");
        let s2 = lab::serve_in(&lab.ns("rs2"), "rs2", 80, 53).expect("rs2 server");
        let exe = std::path::Path::new(env!("CARGO_BIN_EXE_uvs"));
        let d = Director::start(&lab, exe, args).expect("uvs run");
        Setup {
            d,
            servers: (s1, s2),
            lab,
        }
    }
}

/// `uvs tunnel-endpoint` in a namespace; stopped by PID with SIGTERM (so it
/// cleans up) when dropped.
pub struct Endpoint {
    child: Child,
    stats: PathBuf,
    out: PathBuf,
}

impl Endpoint {
    pub fn start(lab: &Lab, host: &str, args: &[&str]) -> Endpoint {
        let base = std::env::temp_dir().join(format!("{}-{host}-tun", lab.prefix));
        let stats = base.with_extension("stats");
        let out = base.with_extension("log");
        let _ = std::fs::remove_file(&stats);
        let log = std::fs::File::create(&out).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns(host)])
            .arg(env!("CARGO_BIN_EXE_uvs"))
            .arg("tunnel-endpoint")
            .arg("--stats-file")
            .arg(&stats)
            // The lab's director (its server-side addresses), unless the
            // test says whom to accept.
            .args(
                if args
                    .iter()
                    .any(|a| *a == "--director" || *a == "--any-director")
                {
                    &[][..]
                } else {
                    &["--director", "203.0.113.1", "--director", "2001:db8:5::1"][..]
                },
            )
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn uvs tunnel-endpoint");
        let mut e = Endpoint { child, stats, out };
        // Ready once the stats file exists: written after every setup step.
        let end = Instant::now() + Duration::from_secs(20);
        while !e.stats.exists() {
            if let Ok(Some(st)) = e.child.try_wait() {
                panic!("endpoint exited ({st}): {}", e.log());
            }
            assert!(Instant::now() < end, "endpoint not up: {}", e.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        e
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn counters(&self) -> BTreeMap<String, u64> {
        parse_counters(&std::fs::read_to_string(&self.stats).unwrap_or_default())
    }

    /// Waits (up to 3 s) until counter `name` reaches `want`; returns it.
    pub fn wait_counter(&self, name: &str, want: u64) -> u64 {
        let end = Instant::now() + Duration::from_secs(3);
        loop {
            let v = self.counters().get(name).copied().unwrap_or(0);
            if v >= want || Instant::now() > end {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait; returns (success, the counters it printed).
    pub fn stop(mut self) -> (bool, BTreeMap<String, u64>) {
        let st = self.terminate();
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        (st, parse_counters(&out))
    }

    fn terminate(&mut self) -> bool {
        if let Ok(Some(st)) = self.child.try_wait() {
            return st.success();
        }
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

/// Whether `d` runs on AF_XDP (its stats carry the program's counters).
pub fn uses_af_xdp(d: &Director) -> bool {
    d.counter("xdp.steered").is_ok()
}

/// Whether some interface of namespace `ns` has an XDP program attached.
pub fn xdp_attached(ns: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", ns, "link", "show"])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

pub fn parse_counters(s: &str) -> BTreeMap<String, u64> {
    s.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.terminate();
        let _ = std::fs::remove_file(&self.stats);
        let _ = std::fs::remove_file(&self.out);
    }
}

/// Polls `cond` every 20 ms until it holds or `limit` has passed; returns
/// whether it held. For waits on something that will happen (a counter
/// moving, a process gone): as quick as the machine allows, and as patient
/// as a loaded one needs, where a fixed sleep is either too long or too short.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `uvs trace ARGV` on `d`'s control socket while `traffic` runs:
/// `traffic` starts once the trace says it is tracing. Returns the trace's
/// exit status and everything it printed.
pub fn trace_during(
    d: &Director,
    argv: Vec<String>,
    traffic: impl FnOnce(),
) -> (std::io::Result<u8>, String) {
    let control = d.control.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let r = uvs::control::socket::call_streamed(&control, &argv, |b| {
            if b.starts_with("tracing ") {
                let _ = tx.send(());
            }
            text.push_str(b);
            Ok(())
        });
        (r.map(|r| r.status), text)
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the trace starts");
    traffic();
    reader.join().unwrap()
}

/// Files a test wrote, removed when this drops (also when the test fails).
pub struct RemoveOnDrop(pub Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}
