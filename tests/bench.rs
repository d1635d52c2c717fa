//! `uvs bench` end to end, as a user runs it: the built binary builds its
//! labs, drives real traffic through iptables DNAT, nftables DNAT, plain
//! routing and uvs, and writes its CSV, report and plots. No timing
//! thresholds: the test checks that every peer balanced its traffic, that
//! every figure is there and non-zero, and that nothing is left behind
//! (also after SIGINT). Needs root; skips, saying why, without it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root_or_skip(test: &str) -> bool {
    if uvs::lab::demo::is_root() {
        return true;
    }
    eprintln!("skipping {test}: uvs bench creates network namespaces and needs root");
    false
}

/// Namespaces whose name starts with `prefix`.
fn namespaces(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn spawn(args: &[&str], log: &Path) -> Child {
    let f = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_uvs"))
        .arg("bench")
        .args(args)
        .stdout(f.try_clone().expect("log"))
        .stderr(f)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn uvs bench")
}

fn wait(child: &mut Child, limit: Duration, log: &Path) -> std::process::ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("uvs bench still running after {limit:?}:\n{}", read(log));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("uvs-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    TempDir(d)
}

#[test]
fn bench_quick_compares_every_peer_with_balanced_traffic() {
    if !root_or_skip("bench_quick_compares_every_peer_with_balanced_traffic") {
        return;
    }
    // scripts/test.sh installs these; a root run without them is a broken
    // setup, not a reason to skip.
    if let Err(e) = uvs::lab::bench::check_tools(&uvs::lab::bench::peers::Peer::ALL) {
        panic!("uvs bench cannot run: missing {e} (scripts/test.sh installs them)");
    }
    let dir = temp("quick");
    let out = dir.0.join("out");
    let log = dir.0.join("log");
    let mut child = spawn(
        &["--quick", "--out", out.to_str().expect("utf-8 path")],
        &log,
    );
    let prefix = format!("uvsb{}x", child.id());
    let st = wait(&mut child, Duration::from_secs(600), &log);
    let text = read(&log);
    assert!(st.success(), "uvs bench --quick failed ({st}):\n{text}");
    assert!(
        text.contains("[1/8] iptables N=1 rep 1/1"),
        "progress printed:\n{text}"
    );
    assert_eq!(namespaces(&prefix), Vec::<String>::new(), "labs removed");

    // The CSV: every peer at both N, balanced, every figure non-zero.
    let csv = read(&out.join("results.csv"));
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("peer,services,rep,metric,value,unit"));
    let mut figs: BTreeMap<(String, usize, String), f64> = BTreeMap::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f.len(), 6, "csv row {l:?}");
        let v: f64 = f[4].parse().unwrap_or_else(|_| panic!("value in {l:?}"));
        let m = uvs::lab::bench::Metric::parse(f[3]).unwrap_or_else(|| panic!("metric in {l:?}"));
        if m.may_be_zero() {
            assert!(v >= 0.0, "{l}");
        } else {
            assert!(v > 0.0, "every figure non-zero: {l}");
        }
        figs.insert(
            (f[0].to_string(), f[1].parse().expect("N"), f[3].to_string()),
            v,
        );
    }
    let rates = [
        "short_rps",
        "latency_p50_us",
        "latency_p99_us",
        "keepalive_rps",
        "stream_gbps",
        "udp_sent_pps",
        "udp_received_pps",
        "answers_rs1",
        "answers_rs2",
    ];
    let updates = ["load_ms", "add_one_ms", "remove_one_ms"];
    for peer in ["iptables", "nftables", "routing", "uvs"] {
        for n in [1usize, 100] {
            for m in rates {
                let v = figs.get(&(peer.to_string(), n, m.to_string()));
                assert!(
                    v.is_some_and(|&v| v > 0.0),
                    "{peer} N={n} {m}: {v:?}\n{csv}"
                );
            }
            // uvs's own counts: how its worker waited, what it dropped.
            for m in ["latency_worker_sleeps_per_request", "udp_loss_counted_pct"] {
                let v = figs.get(&(peer.to_string(), n, m.to_string()));
                if peer == "uvs" {
                    assert!(v.is_some_and(|&v| v >= 0.0), "{peer} N={n} {m}: {v:?}");
                } else {
                    assert!(v.is_none(), "{peer} N={n} {m}: only uvs counts");
                }
            }
            // Every peer: what the client's and servers' sockets dropped.
            let v = figs.get(&(peer.to_string(), n, "udp_loss_sockets_pct".to_string()));
            assert!(v.is_some_and(|&v| v >= 0.0), "{peer} N={n} sockets: {v:?}");
            for m in updates {
                let v = figs.get(&(peer.to_string(), n, m.to_string()));
                if peer == "routing" {
                    assert!(v.is_none(), "routing has no services to change");
                } else {
                    assert!(v.is_some_and(|&v| v > 0.0), "{peer} N={n} {m}: {v:?}");
                }
            }
        }
    }

    let report = read(&out.join("report.md"));
    assert!(report.contains("## Medians"), "{report}");
    assert!(
        report.contains("## uvs / peer (ratio of medians)"),
        "{report}"
    );
    assert!(report.contains("## Every repetition"), "{report}");
    assert!(!report.contains("Failures"), "{report}");
    for p in uvs::lab::bench::plot::PLOTS.map(|(_, f)| f) {
        let bytes = std::fs::read(out.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{p} is a PNG");
        assert!(report.contains(&format!("]({p})")), "report links {p}");
    }
}

#[test]
fn bench_removes_its_lab_on_sigint() {
    if !root_or_skip("bench_removes_its_lab_on_sigint") {
        return;
    }
    let dir = temp("sigint");
    let log = dir.0.join("log");
    let mut child = spawn(
        &[
            "--peers",
            "routing",
            "--services",
            "1",
            "--reps",
            "1",
            "--seconds",
            "20",
        ],
        &log,
    );
    let prefix = format!("uvsb{}x", child.id());
    // Interrupt while traffic runs: once the lab exists and a little after.
    let end = Instant::now() + Duration::from_secs(60);
    while namespaces(&prefix).len() < 5 {
        assert!(Instant::now() < end, "no lab came up:\n{}", read(&log));
        assert!(
            child.try_wait().expect("wait").is_none(),
            "bench ended early:\n{}",
            read(&log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let st = wait(&mut child, Duration::from_secs(60), &log);
    let text = read(&log);
    assert_eq!(st.code(), Some(130), "exit after SIGINT:\n{text}");
    assert!(text.contains("interrupted"), "{text}");
    assert_eq!(
        namespaces(&prefix),
        Vec::<String>::new(),
        "lab removed:\n{text}"
    );
}
