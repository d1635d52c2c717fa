//! Reload without loss, with real traffic: `uvs run --config FILE --filter
//! FILE` in the lab, the files edited, `uvs reload` (the CLI) and SIGHUP.
//! An established connection to a server that stays keeps working, new
//! connections follow the new table, a broken file changes nothing and
//! `uvs reload` exits non-zero naming the line. Needs root; skips without.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use uvs::lab::{self, EchoConn};
use uvs::sys::netns;

mod common;

use common::{root_or_skip, Setup};

fn vip(s: &str) -> SocketAddr {
    s.parse().expect("valid literal address")
}

const FIRST: &str = "\
# the table at start
-A -t 192.0.2.10:80 -s wrr
-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 1
-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 1
";

/// rs1 stays with weight 3, rs2:80 goes, rs2:8080 (a second server in
/// rs2's namespace, "rs2b") comes with weight 1.
const SECOND: &str = "\
-A -t 192.0.2.10:80 -s wrr
-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 3
-a -t 192.0.2.10:80 -r 203.0.113.12:8080 -m -w 1
";

/// rs2:80 back, all three with weight 1.
const THIRD: &str = "\
-A -t 192.0.2.10:80 -s wrr
-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 1
-a -t 192.0.2.10:80 -r 203.0.113.12:8080 -m -w 1
-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 1
";

/// Line 3 has a weight out of range.
const BROKEN: &str = "\
-A -t 192.0.2.10:80 -s rr
-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m
-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 70000
";

/// `uvs reload --control PATH`, the command an operator (or systemd's
/// ExecReload) runs: (exit code, stdout, stderr).
fn uvs_reload(control: &Path) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_uvs"))
        .arg("reload")
        .arg("--control")
        .arg(control)
        .output()
        .expect("run uvs reload");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

struct Files {
    config: PathBuf,
    filter: PathBuf,
}

impl Files {
    fn new(prefix: &str) -> Files {
        let base = std::env::temp_dir().join(prefix);
        let f = Files {
            config: base.with_extension("rules"),
            filter: base.with_extension("filter"),
        };
        std::fs::write(&f.config, FIRST).unwrap();
        std::fs::write(&f.filter, "-A INPUT -p tcp --dport 81 -j DROP\n").unwrap();
        f
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(&self.filter);
    }
}

fn tally(s: &Setup, n: usize) -> lab::Tally {
    netns::run_in(&s.lab.ns("c"), move || {
        lab::tcp_requests(vip("192.0.2.10:80"), n, Duration::from_secs(60))
    })
    .expect("client namespace")
}

fn echo(s: &Setup) -> EchoConn {
    netns::run_in(&s.lab.ns("c"), || EchoConn::connect(vip("192.0.2.10:80")))
        .expect("client namespace")
        .expect("echo connection")
}

#[test]
fn reload_applies_only_the_difference_and_refuses_a_bad_file() {
    if !root_or_skip("reload_applies_only_the_difference_and_refuses_a_bad_file") {
        return;
    }
    let prefix = format!("uvr{}", std::process::id() % 100000);
    let files = Files::new(&prefix);
    let config = files.config.to_str().unwrap().to_string();
    let filter = files.filter.to_str().unwrap().to_string();
    let s = Setup::start(
        &prefix,
        &[],
        &["--config", &config, "--filter", &filter, "--workers", "1"],
    );
    let log = || s.d.log_text();
    // A second server in rs2's namespace, to be added by the reload.
    let _rs2b = lab::serve_in(&s.lab.ns("rs2"), "rs2b", 8080, 5353).expect("rs2b");

    // Traffic flows by the first file: 1:1.
    let t = tally(&s, 40);
    assert_eq!(t.failures, 0, "{:?}\n{}", t.first_error, log());
    assert_eq!((t.count("rs1"), t.count("rs2")), (20, 20), "{t:?}");

    // An established connection to rs1, the server that stays.
    let mut conns = vec![echo(&s), echo(&s)];
    let mut names = Vec::new();
    for (i, c) in conns.iter_mut().enumerate() {
        names.push(c.ping(&format!("hello {i}")).expect("echo before reload"));
    }
    let keep = names.iter().position(|n| n == "rs1").expect("one on rs1");
    let mut kept = conns.swap_remove(keep);
    let mut gone = conns.pop().expect("one on rs2");

    // Edit: one server added, one removed, one weight changed.
    std::fs::write(&files.config, SECOND).unwrap();
    std::fs::write(
        &files.filter,
        "-A INPUT -p tcp --dport 81 -j DROP\n-A INPUT -p udp --dport 9 -j DROP\n",
    )
    .unwrap();
    let (code, out, err) = uvs_reload(&s.d.control);
    assert_eq!(code, 0, "{out}{err}\n{}", log());
    assert!(
        out.contains("services +0 -0 ~0, real servers +1 -1 ~1")
            && out.contains("filter rules 1 kept, +1 -0"),
        "{out}"
    );
    assert!(log().contains("uvs: reloaded: "), "{}", log());

    // The established connection to rs1 is untouched.
    for i in 0..5 {
        assert_eq!(
            kept.ping(&format!("after {i}")).expect("kept connection"),
            "rs1",
            "{}",
            log()
        );
    }
    // The removed server's connection: its packets are dropped and counted,
    // as kernel IPVS does after `-d` (expire_nodest_conn=0); weight 0 is
    // how a server is drained.
    let removed_drops = s.d.counter("drop.dest_removed").unwrap();
    gone.send("gone").unwrap();
    assert!(gone.recv("gone", Duration::from_millis(500)).is_err());
    assert!(s.d.counter("drop.dest_removed").unwrap() > removed_drops);

    // New connections follow the new table: wrr 3:1, none to rs2:80.
    let t = tally(&s, 80);
    assert_eq!(t.failures, 0, "{:?}\n{}", t.first_error, log());
    assert_eq!(
        (t.count("rs1"), t.count("rs2b"), t.count("rs2")),
        (60, 20, 0),
        "{t:?}"
    );
    assert_eq!(
        s.d.uvsadm("-S -n").unwrap(),
        "-A -t 192.0.2.10:80 -s wrr\n\
         -a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 3\n\
         -a -t 192.0.2.10:80 -r 203.0.113.12:8080 -m -w 1\n"
    );
    let rules = s.d.call(&["filter", "list"]).unwrap().stdout;
    assert!(rules.contains("--dport 9 -j DROP"), "{rules}");

    // A reload under load: short connections keep coming while rs2:80
    // comes back and rs1's weight changes; none fails.
    let ns = s.lab.ns("c");
    let load = std::thread::spawn(move || {
        netns::run_in(&ns, || {
            lab::tcp_requests(vip("192.0.2.10:80"), 150, Duration::from_secs(30))
        })
        .expect("client namespace")
    });
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&files.config, THIRD).unwrap();
    let (code, out, err) = uvs_reload(&s.d.control);
    assert_eq!(code, 0, "{out}{err}\n{}", log());
    assert!(out.contains("real servers +1 -0 ~1"), "{out}");
    let t = load.join().expect("load thread");
    assert_eq!(t.failures, 0, "under load: {:?}\n{}", t.first_error, log());
    assert_eq!(t.total(), 150, "{t:?}");
    assert!(t.count("rs2") > 0, "rs2 back during the load: {t:?}");
    // rs2:80 is back, so is its connection: the client's retransmission of
    // the dropped line is answered.
    assert_eq!(gone.recv("gone", Duration::from_secs(20)).unwrap(), "rs2");
    assert_eq!(kept.ping("under load").expect("kept connection"), "rs1");
    let t = tally(&s, 30);
    assert_eq!(
        (t.count("rs1"), t.count("rs2"), t.count("rs2b"), t.failures),
        (10, 10, 10, 0),
        "{t:?}"
    );
    let listing = s.d.uvsadm("-S -n").unwrap();

    // A broken file: refused, naming the line; the table is as it was.
    std::fs::write(&files.config, BROKEN).unwrap();
    std::fs::write(&files.filter, "-A INPUT -j DROP\n").unwrap();
    let (code, out, err) = uvs_reload(&s.d.control);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains(&format!("{config}: line 3: ")) && err.contains("nothing changed"),
        "{err}"
    );
    assert!(
        log().contains("reload refused, nothing changed"),
        "{}",
        log()
    );
    assert_eq!(s.d.uvsadm("-S -n").unwrap(), listing);
    let now = s.d.call(&["filter", "list"]).unwrap().stdout;
    assert_eq!(now, rules, "the filter file is not applied alone either");
    assert_eq!(kept.ping("after refusal").expect("kept connection"), "rs1");
    let t = tally(&s, 9);
    assert_eq!(
        (t.count("rs1"), t.count("rs2"), t.count("rs2b"), t.failures),
        (3, 3, 3, 0),
        "{t:?}"
    );

    // SIGHUP does the same as `uvs reload`: back to the first file.
    std::fs::write(&files.config, FIRST).unwrap();
    std::fs::write(&files.filter, "").unwrap();
    // SAFETY: kill(2) on the PID of the uvs process this test started
    // (`ip netns exec` execs uvs, so the child's PID is uvs's).
    unsafe { libc::kill(s.d.pid() as i32, libc::SIGHUP) };
    let end = Instant::now() + Duration::from_secs(5);
    while s.d.uvsadm("-S -n").unwrap() == listing {
        assert!(Instant::now() < end, "SIGHUP did not reload:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let now = s.d.uvsadm("-S -n").unwrap();
    assert!(
        !now.contains(":8080") && now.contains("203.0.113.12:80 -m -w 1"),
        "{now}"
    );
    assert_eq!(s.d.call(&["filter", "list"]).unwrap().stdout, "");
    assert_eq!(kept.ping("after SIGHUP").expect("kept connection"), "rs1");
    let t = tally(&s, 20);
    assert_eq!(
        (t.count("rs1"), t.count("rs2"), t.failures),
        (10, 10, 0),
        "{t:?}"
    );
    drop(kept);
    drop(gone);
    let d = s.d;
    let st = d.stop().expect("uvs stops");
    assert!(st.success(), "uvs exit {st}");
}
