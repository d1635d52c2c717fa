//! Golden tests of uvsadm against ipvsadm 1.31's behaviour: the real
//! `uvsadm` binary, run once per case of `tests/fixtures/uvsadm_golden.txt`,
//! talks to a control socket answered by the engine's own command core
//! (`ctl`: parser, model, formats, error texts and exit statuses — what
//! `uvs run` answers with, without a data path, so no root is needed), and,
//! as root, to a real `uvs run` in a lab. Every case checks stdout, stderr
//! and the exit status exactly.
//!
//! Fixture format: `$ ARGS` starts a case (words split on blanks), `< TEXT`
//! lines are its standard input, `> TEXT` and `! TEXT` the expected stdout
//! and stderr lines, `? N` the exit status, which ends the case. Cases run
//! in order against one configuration. `#` lines are comments.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod common;

use uvs::control::ctl;
use uvs::control::socket::{Reply, Server};

/// One fixture case.
#[derive(Debug, Default)]
struct Case {
    line: usize,
    args: Vec<String>,
    stdin: Option<String>,
    stdout: String,
    stderr: String,
    status: i32,
}

fn push_line(s: &mut String, text: &str) {
    s.push_str(text);
    s.push('\n');
}

fn cases(text: &str) -> Vec<Case> {
    let mut out = Vec::new();
    let mut cur: Option<Case> = None;
    for (n, raw) in text.lines().enumerate() {
        let (tag, rest) = match raw.split_at_checked(1) {
            Some((t, r)) => (t, r.strip_prefix(' ').unwrap_or(r)),
            None => continue,
        };
        match tag {
            "#" => {}
            "$" => {
                assert!(cur.is_none(), "line {}: case without '?'", n + 1);
                cur = Some(Case {
                    line: n + 1,
                    args: rest.split_whitespace().map(String::from).collect(),
                    ..Case::default()
                });
            }
            "<" | ">" | "!" | "?" => {
                let c = cur
                    .as_mut()
                    .unwrap_or_else(|| panic!("line {}: outside a case", n + 1));
                match tag {
                    "<" => push_line(c.stdin.get_or_insert_with(String::new), rest),
                    ">" => push_line(&mut c.stdout, rest),
                    "!" => push_line(&mut c.stderr, rest),
                    _ => {
                        c.status = rest.trim().parse().expect("status");
                        out.extend(cur.take());
                    }
                }
            }
            _ => panic!("line {}: unknown tag {tag:?}", n + 1),
        }
    }
    assert!(cur.is_none(), "last case has no '?'");
    out
}

/// What `uvs run` answers a uvsadm request with, minus the runtime commit.
fn answer(cfg: &mut ctl::Config, argv: &[String]) -> Reply {
    let (args, stdin) = match argv.first().map(String::as_str) {
        Some("uvsadm") => (argv[1..].to_vec(), None),
        Some("uvsadm-restore") => (vec!["-R".to_string()], argv.get(1).map(String::as_str)),
        _ => return Reply::err("unknown request"),
    };
    let refused = |e: ctl::CtlError| Reply {
        status: e.exit_status(),
        stdout: String::new(),
        stderr: e.error_text(),
    };
    let cmd = match ctl::parse(&args) {
        Ok(c) => c,
        Err(e) => return refused(e),
    };
    let mut undo = ctl::Undo::new();
    match ctl::execute_logged(
        cfg,
        &cmd,
        stdin,
        &ctl::NoCounters,
        &ctl::Gates::default(),
        &mut undo,
    ) {
        Ok(o) => Reply::ok(o.output),
        Err(e) => refused(e),
    }
}

struct Engine {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Engine {
    fn start(tag: &str) -> Engine {
        let path =
            std::env::temp_dir().join(format!("uvs-golden-{tag}-{}.sock", std::process::id()));
        let server = Server::bind(&path).expect("bind the control socket");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut cfg = ctl::Config::new();
            server.serve(|| s.load(Ordering::Relaxed), |argv| answer(&mut cfg, &argv));
        });
        Engine {
            path,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(control: &Path, c: &Case) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_uvsadm"))
        .arg("--control")
        .arg(control)
        .args(&c.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("uvsadm runs");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = &c.stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    let o = child.wait_with_output().expect("uvsadm exits");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// Runs every case of a fixture against a fresh engine.
fn check(tag: &str, text: &str, min_cases: usize) {
    let engine = Engine::start(tag);
    check_at(&engine.path, text, min_cases);
}

/// Runs every case of a fixture against the engine at `control`.
fn check_at(control: &Path, text: &str, min_cases: usize) {
    let mut failures = Vec::new();
    let all = cases(text);
    assert!(all.len() >= min_cases, "the table has {} cases", all.len());
    for c in &all {
        let (status, stdout, stderr) = run(control, c);
        if (status, &stdout, &stderr) != (c.status, &c.stdout, &c.stderr) {
            failures.push(format!(
                "line {}: uvsadm {}\n  status {status} (want {})\n  stdout {stdout:?}\n  want   {:?}\n  stderr {stderr:?}\n  want   {:?}",
                c.line,
                c.args.join(" "),
                c.status,
                c.stdout,
                c.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn uvsadm_matches_the_golden_table() {
    check("errors", include_str!("fixtures/uvsadm_golden.txt"), 100);
}

#[test]
fn uvs_run_matches_the_golden_table() {
    if !common::root_or_skip("uvs_run_matches_the_golden_table") {
        return;
    }
    // The same table through the daemon, its commits and its control socket.
    let s = common::Setup::start("gld", &[], &[]);
    check_at(
        &s.d.control,
        include_str!("fixtures/uvsadm_golden.txt"),
        100,
    );
}

/// Whether this machine's files give the names the names table expects
/// (no look-up may leave the machine, so nothing else is used).
fn local_names_as_expected() -> bool {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let first = hosts
        .lines()
        .map(|l| {
            l.split('#')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
        })
        .find(|w| w.first() == Some(&"127.0.0.1"));
    let services = std::fs::read_to_string("/etc/services").unwrap_or_default();
    let has = |name: &str, pp: &str| {
        services.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() >= 2 && w[0] == name && w[1] == pp
        })
    };
    first.is_some_and(|w| w.get(1) == Some(&"localhost"))
        && has("http", "80/tcp")
        && has("domain", "53/tcp")
        && has("domain", "53/udp")
        && !services.contains("\t8089/tcp")
        && !services.contains(" 8089/tcp")
}

#[test]
fn uvsadm_names_match_the_golden_table() {
    if !local_names_as_expected() {
        eprintln!("skipped: /etc/hosts or /etc/services are not as the names table expects");
        return;
    }
    check(
        "names",
        include_str!("fixtures/uvsadm_golden_names.txt"),
        10,
    );
}
