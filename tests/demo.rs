//! `uvs demo` on a host without the nftables package: run with a `PATH`
//! in which no `nft` exists, it builds its lab, balances, cleans up and
//! exits 0. Needs root; skips without it.

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Command;

mod common;

use common::root_or_skip;

/// A directory of links to every program on `PATH` except `nft*`.
fn path_without_nft() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("uvs-demo-nonft-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in std::env::split_paths(&path) {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with("nft") || dir.join(&name).exists() {
                continue;
            }
            let _ = symlink(e.path(), dir.join(&name));
        }
    }
    dir
}

#[test]
fn demo_passes_without_nft() {
    if !root_or_skip("demo_passes_without_nft") {
        return;
    }
    let dir = path_without_nft();
    let found = Command::new("sh")
        .args(["-c", "command -v nft"])
        .env("PATH", &dir)
        .output()
        .unwrap();
    assert!(!found.status.success(), "nft still on the PATH");
    let out = Command::new(env!("CARGO_BIN_EXE_uvs"))
        .args(["demo", "--requests", "100"])
        .env("PATH", &dir)
        .output()
        .expect("uvs demo runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "uvs demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("TCP rr balanced"), "{stdout}");
    assert!(stdout.contains("UDP wrr 3:1 balanced"), "{stdout}");
}
