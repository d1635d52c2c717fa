//! uvs as a system daemon: `--help` texts that tell the truth, man pages and
//! completions generated from the clap definitions, the hand-written
//! uvsadm(8), the systemd unit, the Debian package's assets, and the
//! sd_notify protocol seen by a socket the test owns (that one needs root
//! for the lab; it skips without).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

const UVS: &str = env!("CARGO_BIN_EXE_uvs");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(UVS).args(args).output().expect("run uvs");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn help(sub: &[&str]) -> String {
    let mut a = sub.to_vec();
    a.push("--help");
    let (ok, out, err) = run(&a);
    assert!(ok, "uvs {sub:?} --help: {err}");
    out
}

/// The visible subcommands, from `uvs --help`.
fn subcommands() -> Vec<String> {
    let h = help(&[]);
    let list = h
        .split("Commands:\n")
        .nth(1)
        .expect("a Commands section")
        .split("\n\n")
        .next()
        .unwrap();
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| *w != "help")
        .map(String::from)
        .collect()
}

/// A directory under the temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("uvs-pkg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn every_daemon_subcommand_documents_control_and_uvs_control() {
    let subs = subcommands();
    for s in ["run", "stats", "filter", "reload"] {
        assert!(subs.iter().any(|x| x == s), "{s} in {subs:?}");
        let h = help(&[s]);
        assert!(h.contains("--control <PATH>"), "uvs {s} --help:\n{h}");
        assert!(h.contains("[env: UVS_CONTROL"), "uvs {s} --help:\n{h}");
        assert!(h.contains("/run/uvs/uvs.sock"), "uvs {s} --help:\n{h}");
    }
    assert!(!subs.iter().any(|x| x == "gen-docs"), "hidden: {subs:?}");
    // The variable is really read, and --control wins over it.
    let o = Command::new(UVS)
        .arg("stats")
        .env("UVS_CONTROL", "/nonexistent/uvs-env.sock")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("/nonexistent/uvs-env.sock"),
        "{err}"
    );
    let o = Command::new(UVS)
        .args(["reload", "--control", "/nonexistent/uvs-flag.sock"])
        .env("UVS_CONTROL", "/nonexistent/uvs-env.sock")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("uvs-flag.sock"),
        "{err}"
    );
}

#[test]
fn set_knob_help_lists_every_knob_the_daemon_knows() {
    // The daemon's own parser names every knob it knows when refusing one.
    let mut k = uvs_conntrack::Knobs::default();
    let e = uvs::control::daemon::set_knob(&mut k, "no_such_knob=1").unwrap_err();
    let known = e.split("(known: ").nth(1).expect("known list");
    let known: Vec<&str> = known.trim_end_matches(')').split_whitespace().collect();
    assert!(known.len() >= 6, "{known:?}");
    let h = help(&["run"]).replace('\n', " ");
    for name in &known {
        assert!(
            h.contains(&format!("{name}=")),
            "uvs run --help lacks {name}:\n{h}"
        );
        uvs::control::daemon::set_knob(&mut k, &format!("{name}=0")).unwrap();
    }
}

#[test]
fn run_help_says_what_uvs_installs_and_needs() {
    let h = help(&["run"]).replace('\n', " ");
    let h = h.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "nftables table `netdev uvs`",
        "XDP program",
        "root, or CAP_NET_ADMIN and CAP_NET_RAW",
        "CAP_BPF and CAP_SYS_ADMIN for af_xdp",
        "SIGHUP or `uvs reload`",
        "READY=1",
    ] {
        assert!(h.contains(want), "uvs run --help lacks {want:?}:\n{h}");
    }
    // `-h` stays short; the long text is for --help.
    let (_, short, _) = run(&["run", "-h"]);
    assert!(short.len() < h.len(), "{short}");
}

#[test]
fn version_is_the_crates() {
    let (ok, out, _) = run(&["--version"]);
    assert!(ok);
    assert_eq!(out.trim(), format!("uvs {}", env!("CARGO_PKG_VERSION")));
}

/// `groff -man -ww -z` warnings for a page (empty = clean), or `None`
/// without groff.
fn groff_warnings(page: &Path) -> Option<String> {
    let o = Command::new("groff")
        .args(["-k", "-man", "-ww", "-z"])
        .arg(page)
        .output()
        .ok()?;
    assert!(o.status.success(), "groff on {}", page.display());
    Some(String::from_utf8_lossy(&o.stderr).into())
}

/// The page as plain text (`groff -man -Tascii`, no bold/underline), or the
/// roff source with `\-` as `-` without groff.
fn render(page: &Path) -> String {
    let o = Command::new("groff")
        .args(["-k", "-man", "-Tutf8", "-P-c", "-P-b", "-P-u", "-P-o"])
        .arg(page)
        .env("MANWIDTH", "200")
        .output();
    match o {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into(),
        _ => std::fs::read_to_string(page).unwrap().replace("\\-", "-"),
    }
}

#[test]
fn man_pages_and_completions_are_generated_for_every_subcommand() {
    let dir = TempDir::new("docs");
    let (ok, _, err) = run(&["gen-docs", dir.0.to_str().unwrap()]);
    assert!(ok, "{err}");
    let subs = subcommands();
    let mut pages = vec!["uvs".to_string()];
    pages.extend(subs.iter().map(|s| format!("uvs-{s}")));
    for p in &pages {
        let path = dir.0.join("man").join(format!("{p}.8"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{p}.8: {e}"));
        assert!(text.contains(".TH"), "{p}.8 is roff");
        if let Some(w) = groff_warnings(&path) {
            assert!(w.is_empty(), "{p}.8: {w}");
        }
        let plain = render(&path);
        assert!(
            plain.contains("NAME") && plain.len() > 200,
            "{p}.8:\n{plain}"
        );
    }
    let top = render(&dir.0.join("man/uvs.8"));
    for s in &subs {
        assert!(
            top.contains(&format!("uvs-{s}(8)")),
            "uvs.8 lacks {s}:\n{top}"
        );
    }
    let run8 = render(&dir.0.join("man/uvs-run.8"));
    let run8 = run8.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        run8.contains("UVS_CONTROL") && run8.contains("netdev uvs"),
        "{run8}"
    );
    let man = std::fs::read_dir(dir.0.join("man")).unwrap().count();
    assert_eq!(man, pages.len(), "no page for a hidden subcommand");
    for f in ["uvs.bash", "_uvs", "uvs.fish"] {
        let c = std::fs::read_to_string(dir.0.join("completions").join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        for s in &subs {
            assert!(c.contains(s.as_str()), "{f} lacks {s}");
        }
        assert!(c.contains("control"), "{f} lacks --control");
    }
    // bash can load its completion.
    if Command::new("bash").arg("--version").output().is_ok() {
        let st = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {} && complete -p uvs",
                dir.0.join("completions/uvs.bash").display()
            ))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "bash completion loads");
    }
}

#[test]
fn uvsadm_page_covers_every_option_of_uvsadm_help() {
    let page = Path::new(ROOT).join("docs/man/uvsadm.8");
    if let Some(w) = groff_warnings(&page) {
        assert!(w.is_empty(), "uvsadm.8: {w}");
    }
    let plain = render(&page);
    for sec in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "COMMANDS",
        "PARAMETERS",
        "EXAMPLE 1",
        "IPv6",
        "FILES",
        "SEE ALSO",
    ] {
        assert!(plain.contains(sec), "uvsadm.8 lacks section {sec}");
    }
    // Every option word uvsadm -h shows is described.
    let usage = uvs::control::ctl::usage();
    let mut missing = Vec::new();
    for w in usage.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
        let opt = w.trim_end_matches('-');
        let short = opt.len() == 2 && opt.starts_with('-');
        let long = opt.len() > 3 && opt.starts_with("--");
        if (short || long) && !plain.contains(opt) {
            missing.push(opt.to_string());
        }
    }
    missing.dedup();
    assert!(missing.is_empty(), "uvsadm.8 lacks {missing:?}");
    for s in uvs::control::ctl::KERNEL_SCHEDULERS {
        assert!(plain.contains(s), "uvsadm.8 lacks scheduler {s}");
    }
}

fn cargo_toml() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap()
}

#[test]
fn systemd_unit_is_type_notify_with_reload_and_capabilities() {
    let unit = std::fs::read_to_string(Path::new(ROOT).join("dist/uvs.service")).unwrap();
    let has = |l: &str| unit.lines().any(|x| x.trim() == l);
    for l in [
        "Type=notify",
        "ExecReload=/usr/bin/uvs reload",
        "RuntimeDirectory=uvs",
        "ProtectSystem=strict",
        "EnvironmentFile=-/etc/default/uvs",
        "NoNewPrivileges=yes",
    ] {
        assert!(has(l), "uvs.service lacks {l}");
    }
    for key in ["CapabilityBoundingSet=", "AmbientCapabilities="] {
        let caps = unit
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key}"));
        for c in ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_ADMIN", "CAP_BPF"] {
            assert!(caps.split_whitespace().any(|x| x == c), "{key} lacks {c}");
        }
    }
    // systemd's own check, with the binary this build made in place of
    // /usr/bin/uvs (man pages are not installed here: --man=no).
    let Ok(v) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: unit not verified by systemd");
        return;
    };
    assert!(v.status.success());
    let dir = TempDir::new("unit");
    let path = dir.0.join("uvs.service");
    std::fs::write(&path, unit.replace("/usr/bin/uvs", UVS)).unwrap();
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.trim().is_empty(), "{err}");
}

#[test]
fn deb_metadata_names_files_that_exist() {
    let toml = cargo_toml();
    let deb = toml
        .split("[package.metadata.deb]")
        .nth(1)
        .expect("[package.metadata.deb]");
    let deb = deb.split("\n[").next().unwrap();
    for want in [
        "dist/uvs.service",
        "docs/man/uvsadm.8",
        "target/release/uvs",
        "target/release/uvsadm",
        "target/assets/completions/uvs.bash",
        "target/assets/completions/_uvs",
        "target/assets/completions/uvs.fish",
        "target/assets/man/*.8",
        "dist/uvs.default",
    ] {
        assert!(deb.contains(want), "deb assets lack {want}");
    }
    // Every asset outside target/ is in the repository.
    for src in deb
        .split('"')
        .filter(|s| s.starts_with("dist/") || s.starts_with("docs/"))
    {
        assert!(Path::new(ROOT).join(src).exists(), "{src} missing");
    }
}

/// A child process stopped (SIGTERM, then SIGKILL) if the test fails.
struct Running(std::process::Child);

impl Running {
    /// SIGTERM and wait up to 10 s (then SIGKILL); the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        if let Some(st) = self.0.try_wait().unwrap() {
            return st;
        }
        // SAFETY: kill(2) on the PID of a child this test spawned (`ip
        // netns exec` execs uvs, so it is uvs's PID) and has not reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Some(st) = self.0.try_wait().unwrap() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        self.0.wait().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Receives one notification datagram, up to `timeout`.
fn recv(sock: &UnixDatagram, timeout: Duration) -> String {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut b = [0u8; 4096];
    match sock.recv(&mut b) {
        Ok(n) => String::from_utf8_lossy(&b[..n]).into(),
        Err(e) => panic!("no notification within {timeout:?}: {e}"),
    }
}

#[test]
fn notify_ready_comes_after_the_control_socket_answers() {
    if !common::root_or_skip("notify_ready_comes_after_the_control_socket_answers") {
        return;
    }
    let prefix = format!("uvp{}", std::process::id() % 100000);
    let lab = uvs::lab::Lab::up(&prefix, &[]).expect("lab up");
    let dir = TempDir::new("notify");
    let notify = dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    let control = PathBuf::from(format!("/run/uvs/{prefix}.sock"));
    let log = dir.0.join("uvs.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Running(
        Command::new("ip")
            .args(["netns", "exec", &lab.ns("lb")])
            .arg(UVS)
            .args(["run", "--workers", "1", "--control"])
            .arg(&control)
            .env("NOTIFY_SOCKET", &notify)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let started = Instant::now();
    let first = recv(&sock, Duration::from_secs(30));
    // The moment READY=1 arrives, the control socket must answer.
    let ping = uvs::control::socket::call(&control, &["ping".to_string()]);
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "{first}\n{}",
        log_text()
    );
    assert!(first.contains("STATUS=running on "), "{first}");
    assert_eq!(ping.expect("control answers").stdout, "pong\n");
    assert!(started.elapsed() < Duration::from_secs(30));
    // A reload says RELOADING=1, then READY=1 again.
    let o = Command::new(UVS)
        .args(["reload", "--control"])
        .arg(&control)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = recv(&sock, Duration::from_secs(5));
    assert!(r.lines().any(|l| l == "RELOADING=1"), "{r}");
    assert!(r.lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{r}");
    let r = recv(&sock, Duration::from_secs(5));
    assert!(r.lines().any(|l| l == "READY=1"), "{r}");
    // SIGTERM: STOPPING=1, then a clean exit.
    let st = child.stop();
    let s = recv(&sock, Duration::from_secs(1));
    assert!(s.lines().any(|l| l == "STOPPING=1"), "{s}");
    assert!(st.success(), "uvs exit {st}: {}", log_text());
    assert!(!control.exists(), "control socket removed");
    drop(lab);
}
