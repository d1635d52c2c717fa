//! `uvs run` with a missing prerequisite: one clear message, a non-zero
//! exit, and nothing left behind (no nf_tables table, no socket file).
//! Runs in a namespace of its own; needs root, skips without it.

use std::path::Path;
use std::process::{Command, Output};

use uvs::sys::netns;
use uvs::sys::nftnl::{NftSock, NFPROTO_NETDEV};

mod common;

use common::root_or_skip;

/// A namespace with one veth pair (`p0`, `p1`), deleted on drop.
struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Ns {
        let ns = Ns(format!("uvp{}{tag}", std::process::id() % 100000));
        for args in [
            &["netns", "add", &ns.0][..],
            &[
                "-n", &ns.0, "link", "add", "p0", "type", "veth", "peer", "name", "p1",
            ],
            &["-n", &ns.0, "link", "set", "p0", "up"],
        ] {
            let ok = Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip {args:?}");
        }
        ns
    }

    fn tables(&self) -> Vec<String> {
        netns::run_in(&self.0, || {
            NftSock::open()
                .and_then(|mut s| s.tables(NFPROTO_NETDEV))
                .expect("nf_tables listing")
        })
        .expect("namespace")
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The message is one line that says `what` once.
fn one_clear_line(o: &Output, what: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "exit status; stderr: {e}");
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
    assert_eq!(e.matches(what).count(), 1, "{what} once: {e}");
    assert!(e.starts_with("uvs run: "), "{e}");
}

#[test]
fn run_names_a_missing_interface_and_leaves_nothing() {
    if !root_or_skip("run_names_a_missing_interface_and_leaves_nothing") {
        return;
    }
    let ns = Ns::new("i");
    let dir = std::env::temp_dir().join(format!("uvs-prereq-{}", std::process::id()));
    let sock = dir.join("uvs.sock");
    let o = Command::new("ip")
        .args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_uvs"), "run"])
        .args(["-i", "p0", "-i", "nosuch0", "--control"])
        .arg(&sock)
        .output()
        .unwrap();
    one_clear_line(&o, "no interface named `nosuch0`");
    assert!(stderr(&o).contains("ip -br link"), "{}", stderr(&o));
    assert!(!sock.exists(), "socket file left");
    assert!(!dir.exists(), "socket directory made");
    assert!(ns.tables().is_empty(), "{:?}", ns.tables());
}

#[test]
fn run_names_an_unwritable_control_directory_and_leaves_nothing() {
    if !root_or_skip("run_names_an_unwritable_control_directory_and_leaves_nothing") {
        return;
    }
    let ns = Ns::new("c");
    let dir = std::env::temp_dir().join(format!("uvs-prereq-ro-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A read-only file system on `dir`, in a private mount namespace only
    // (root could write to any directory whatever its mode).
    let script = format!(
        "mount -t tmpfs -o ro uvsro '{d}' && exec ip netns exec '{ns}' '{uvs}' run -i p0 --control '{d}/run/uvs.sock'",
        d = dir.display(),
        ns = ns.0,
        uvs = env!("CARGO_BIN_EXE_uvs"),
    );
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    one_clear_line(&o, "read-only file system");
    assert!(stderr(&o).contains("--control"), "{}", stderr(&o));
    assert!(!Path::new(&dir).join("run").exists());
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ns.tables().is_empty(), "{:?}", ns.tables());
}
