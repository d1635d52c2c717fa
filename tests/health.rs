//! Health checks from a keepalived.conf, with real traffic: `uvs run
//! --keepalived FILE` in the lab (delay_loop 1, short timeouts). A real
//! server's listener is killed and new connections go only to the other
//! within 2 × delay_loop; it comes back and is restored;
//! `inhibit_on_failure` leaves weight 0; HTTP_GET with a wrong status code
//! and MISC_CHECK's exit code fail a server; unknown sections are warned; a
//! bad file is refused with file:line, at start and on reload; a reload
//! under load (short connections and one long transfer) fails nothing and
//! keeps the health of unchanged checkers. Needs root; skips without.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use uvs::lab::{self, Director, EchoConn, Lab};
use uvs::sys::netns;

mod common;

use common::root_or_skip;

const VIP: &str = "192.0.2.10:80";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("valid literal address")
}

/// Port 80: rs1 plain, rs2 inhibited on failure. Port 81: HTTP_GET with a
/// status rs1 never sends (so rs1 is never in it), rs2 with the right one.
/// Port 82: rs1 checked by a command on a flag file.
fn conf(flag: &Path, rs2_weight: u32) -> String {
    format!(
        r#"! uvs health test
global_defs {{
    router_id uvs_test
}}
vrrp_instance VI_1 {{
    state MASTER
}}
virtual_server 192.0.2.10 80 {{
    delay_loop 1
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 203.0.113.11 80 {{
        weight 1
        TCP_CHECK {{
            connect_timeout 1
            retry 1
            delay_before_retry 0.3
        }}
    }}
    real_server 203.0.113.12 80 {{
        weight {rs2_weight}
        inhibit_on_failure
        TCP_CHECK {{
            connect_timeout 1
            retry 0
        }}
    }}
}}
virtual_server 192.0.2.10 81 {{
    delay_loop 1
    lb_algo rr
    real_server 203.0.113.11 80 {{
        HTTP_GET {{
            url {{
                path /
                status_code 201
            }}
            connect_timeout 1
            retry 0
        }}
    }}
    real_server 203.0.113.12 80 {{
        HTTP_GET {{
            url {{
                path /
                status_code 200
            }}
            connect_timeout 1
        }}
    }}
}}
virtual_server 192.0.2.10 82 {{
    delay_loop 1
    lb_algo rr
    real_server 203.0.113.11 80 {{
        MISC_CHECK {{
            misc_path "test -e {flag}"
            misc_timeout 1
            retry 0
        }}
    }}
}}
"#,
        flag = flag.display()
    )
}

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

/// Waits (bounded) until `uvsadm -S -n` satisfies `want`; returns the
/// time it took and the listing.
fn wait_table(d: &Director, what: &str, want: impl Fn(&str) -> bool) -> (Duration, String) {
    let t0 = Instant::now();
    loop {
        let l = d.uvsadm("-S -n").expect("uvsadm -S");
        if want(&l) {
            return (t0.elapsed(), l);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{what}: table stayed\n{l}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tally(lab: &Lab, vip: &str, n: usize) -> lab::Tally {
    let vip = addr(vip);
    netns::run_in(&lab.ns("c"), move || {
        lab::tcp_requests(vip, n, Duration::from_secs(60))
    })
    .expect("client namespace")
}

#[test]
fn keepalived_checks_remove_restore_and_reload() {
    if !root_or_skip("keepalived_checks_remove_restore_and_reload") {
        return;
    }
    let prefix = format!("uvh{}", std::process::id() % 100000);
    let base = std::env::temp_dir().join(&prefix);
    let (file, flag, bad) = (
        base.with_extension("conf"),
        base.with_extension("flag"),
        base.with_extension("bad.conf"),
    );
    let _files = common::RemoveOnDrop(vec![file.clone(), flag.clone(), bad.clone()]);
    std::fs::write(&flag, "").unwrap();
    std::fs::write(&file, conf(&flag, 1)).unwrap();
    // Line 5 has a port that is not one.
    std::fs::write(
        &bad,
        "virtual_server 192.0.2.10 80 {\n  delay_loop 1\n  real_server 203.0.113.11 80 {\n    TCP_CHECK {\n      connect_port http\n    }\n  }\n}\n",
    )
    .unwrap();
    let lab = Lab::up(&prefix, &[]).expect("lab up");
    let mut rs1 = Some(lab::serve_in(&lab.ns("rs1"), "rs1", 80, 53).expect("rs1"));
    let rs2 = lab::serve_in(&lab.ns("rs2"), "rs2", 80, 53).expect("rs2");
    let exe = Path::new(env!("CARGO_BIN_EXE_uvs"));

    // A bad file is refused at start, naming file:line.
    let e = Director::start(&lab, exe, &["--keepalived", bad.to_str().unwrap()]).unwrap_err();
    let want = format!("{}:5: ", bad.display());
    assert!(e.to_string().contains(&want), "{e}");

    let d = Director::start(
        &lab,
        exe,
        &["--keepalived", file.to_str().unwrap(), "--workers", "1"],
    )
    .expect("uvs run");
    let log = || d.log_text();
    let f = file.display().to_string();
    for w in [
        format!("{f}:2: section 'global_defs' is not implemented by uvs; ignored"),
        format!("{f}:5: section 'vrrp_instance' is not implemented by uvs; ignored"),
    ] {
        assert!(log().contains(&w), "no warning {w:?}:\n{}", log());
    }

    // HTTP_GET with a status rs1 never answers: rs1 leaves port 81.
    wait_table(&d, "HTTP_GET status", |l| {
        !l.contains("192.0.2.10:81 -r 203.0.113.11:80")
            && l.contains("192.0.2.10:81 -r 203.0.113.12:80")
    });
    let t = tally(&lab, "192.0.2.10:81", 6);
    assert_eq!((t.count("rs2"), t.failures), (6, 0), "{t:?}");

    // Both up on port 80: 1:1. (A probe sent while the lab's neighbours
    // are still resolving may time out; that server is back at its next
    // probe, a delay_loop later.)
    wait_table(&d, "both up", |l| {
        l.contains("192.0.2.10:80 -r 203.0.113.11:80 -m -w 1")
            && l.contains("192.0.2.10:80 -r 203.0.113.12:80 -m -w 1")
    });
    let key = "health.tcp/192.0.2.10:80/203.0.113.11:80";
    let flips = d.counter(&format!("{key}.transitions")).unwrap();
    let t = tally(&lab, VIP, 10);
    assert_eq!(
        (t.count("rs1"), t.count("rs2"), t.failures),
        (5, 5, 0),
        "{t:?}"
    );

    // rs1's listener is killed: within 2 × delay_loop it is gone and new
    // connections go only to rs2.
    drop(rs1.take());
    let (took, l) = wait_table(&d, "rs1 down", |l| {
        !l.contains("192.0.2.10:80 -r 203.0.113.11:80")
    });
    assert!(took <= Duration::from_secs(2), "took {took:?}\n{}", log());
    assert!(
        l.contains("192.0.2.10:80 -r 203.0.113.12:80 -m -w 1"),
        "{l}"
    );
    let t = tally(&lab, VIP, 10);
    assert_eq!((t.count("rs2"), t.failures), (10, 0), "{t:?}");
    assert!(
        log().contains("real server 203.0.113.11:80 is DOWN"),
        "{}",
        log()
    );
    // MISC_CHECK's server is the same rs1, checked by a command that still
    // passes: it stays on port 82.
    assert!(l.contains("192.0.2.10:82 -r 203.0.113.11:80"), "{l}");

    // Counted: one transition, failures, visible in uvs stats.
    assert_eq!(d.counter(&format!("{key}.up")).unwrap(), 0);
    assert_eq!(d.counter(&format!("{key}.transitions")).unwrap(), flips + 1);
    assert!(d.counter(&format!("{key}.failures")).unwrap() >= 2);

    // A reload while rs1 is down: rs2's weight changes; rs1's checker is
    // unchanged and keeps its state (down), under load: short connections
    // and one long transfer fail nothing.
    let ns = lab.ns("c");
    let load = std::thread::spawn(move || {
        netns::run_in(&ns, || {
            lab::tcp_requests(addr(VIP), 120, Duration::from_secs(30))
        })
        .expect("client namespace")
    });
    let ns = lab.ns("c");
    let long = std::thread::spawn(move || {
        netns::run_in(&ns, || -> Result<String, String> {
            let mut c = EchoConn::connect(addr(VIP)).map_err(|e| e.to_string())?;
            let first = c.ping("start").map_err(|e| e.to_string())?;
            for i in 0..150 {
                let who = c
                    .ping(&format!("line {i}"))
                    .map_err(|e| format!("line {i}: {e}"))?;
                if who != first {
                    return Err(format!("line {i} answered by {who}, not {first}"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(first)
        })
        .expect("client namespace")
    });
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&file, conf(&flag, 2)).unwrap();
    let (code, out, err) = uvs_reload(&d.control);
    assert_eq!(code, 0, "{out}{err}\n{}", log());
    assert!(
        out.contains("keepalived services +0 -0 ~0, real servers +0 -0 ~1")
            && out.contains("checkers 5 kept, 0 started, 0 stopped"),
        "{out}"
    );
    let t = load.join().expect("load thread");
    assert_eq!(
        (t.failures, t.total()),
        (0, 120),
        "under load: {t:?}\n{}",
        log()
    );
    assert_eq!(t.count("rs1"), 0, "rs1 stays down across the reload: {t:?}");
    assert_eq!(long.join().expect("long transfer"), Ok("rs2".to_string()));
    let l = d.uvsadm("-S -n").unwrap();
    assert!(
        !l.contains("192.0.2.10:80 -r 203.0.113.11:80")
            && l.contains("192.0.2.10:80 -r 203.0.113.12:80 -m -w 2"),
        "{l}"
    );

    // A bad keepalived file on reload: refused with file:line, nothing changed.
    std::fs::copy(&bad, &file).unwrap();
    let (code, _, err) = uvs_reload(&d.control);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("{f}:5: ")) && err.contains("nothing changed"),
        "{err}"
    );
    assert_eq!(d.uvsadm("-S -n").unwrap(), l);
    std::fs::write(&file, conf(&flag, 2)).unwrap();

    // rs1 comes back: restored.
    rs1 = Some(lab::serve_in(&lab.ns("rs1"), "rs1", 80, 53).expect("rs1 again"));
    wait_table(&d, "rs1 up", |l| {
        l.contains("192.0.2.10:80 -r 203.0.113.11:80 -m -w 1")
    });
    let t = tally(&lab, VIP, 10);
    assert_eq!(
        (t.count("rs1"), t.count("rs2"), t.failures),
        (5, 5, 0),
        "{t:?}"
    );
    assert!(
        log().contains("real server 203.0.113.11:80 is UP again"),
        "{}",
        log()
    );
    assert_eq!(d.counter(&format!("{key}.transitions")).unwrap(), flips + 2);

    // MISC_CHECK: the command's exit code fails the server.
    std::fs::remove_file(&flag).unwrap();
    wait_table(&d, "MISC_CHECK exit 1", |l| !l.contains("192.0.2.10:82 -r"));
    std::fs::write(&flag, "").unwrap();
    wait_table(&d, "MISC_CHECK exit 0", |l| {
        l.contains("192.0.2.10:82 -r 203.0.113.11:80")
    });

    // inhibit_on_failure: rs2's listener is killed, it stays at weight 0.
    drop(rs2);
    let (_, l) = wait_table(&d, "rs2 inhibited", |l| {
        l.contains("192.0.2.10:80 -r 203.0.113.12:80 -m -w 0")
    });
    assert!(
        l.contains("192.0.2.10:80 -r 203.0.113.11:80 -m -w 1"),
        "{l}"
    );
    let listing = d.uvsadm("-L -n").unwrap();
    assert!(listing.contains("203.0.113.12:80"), "{listing}");
    let t = tally(&lab, VIP, 6);
    assert_eq!((t.count("rs1"), t.failures), (6, 0), "{t:?}");

    let st = d.stop().expect("uvs stops");
    assert!(st.success(), "uvs exit {st}");
    drop(rs1);
}
