//! Network-namespace fixtures for the tests of `netlink` and `neigh`:
//! two namespaces joined by a veth pair, documentation addresses only, no
//! route toward the host network, always removed (Drop).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Side A's address on the veth, IPv4 and IPv6.
pub const A4: &str = "198.51.100.1";
/// Side B's address on the veth, IPv4 and IPv6.
pub const B4: &str = "198.51.100.2";
pub const A6: &str = "2001:db8:1::1";
pub const B6: &str = "2001:db8:1::2";

/// Two namespaces `a` and `b`, joined by veth `va` (in a) / `vb` (in b).
/// In a: 203.0.113.0/24 and 2001:db8:2::/64 via b; 192.0.2.0/26 and
/// 2001:db8:ff::/48 unreachable; 192.0.2.64/26 blackhole; 192.0.2.128/26
/// prohibit; no route at all to 192.0.2.192/26 and the rest of
/// 2001:db8::/32.
pub struct Lab {
    pub a: String,
    pub b: String,
}

/// Whether namespace tests can run here; prints why not when they cannot.
pub fn available(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{test}: skipped: needs root to create network namespaces");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("{test}: skipped: the `ip` command (iproute2) is not installed");
        return false;
    }
    true
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip runs (checked by `available`)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Lab {
    /// Builds the lab; panics (after cleaning up) when a step fails.
    pub fn new() -> Lab {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let lab = Lab {
            a: format!("uvsnl-{pid}-{n}-a"),
            b: format!("uvsnl-{pid}-{n}-b"),
        };
        let (a, b) = (lab.a.as_str(), lab.b.as_str());
        ip(&["netns", "add", a]);
        ip(&["netns", "add", b]);
        ip(&[
            "link", "add", "va", "netns", a, "type", "veth", "peer", "name", "vb", "netns", b,
        ]);
        for (ns, dev, v4, v6) in [(a, "va", A4, A6), (b, "vb", B4, B6)] {
            // Without DAD the link-local address is usable at once: the
            // kernel sends no neighbour solicitation while its only
            // link-local source is still tentative (~1 s after link up),
            // which a long-running host never sees but a fresh lab does.
            ip(&[
                "netns",
                "exec",
                ns,
                "sh",
                "-c",
                &format!("echo 0 > /proc/sys/net/ipv6/conf/{dev}/accept_dad"),
            ]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        // Carrier and operstate follow link-up asynchronously (linkwatch
        // batches them, up to a second): until then the peer's IPv6 does
        // not answer solicitations. Wait so tests start on a settled link.
        let start = std::time::Instant::now();
        while [(a, "va"), (b, "vb")]
            .iter()
            .any(|(ns, dev)| !ip(&["-n", ns, "-o", "link", "show", dev]).contains("state UP"))
        {
            assert!(start.elapsed().as_secs() < 5, "veth never came up");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        ip(&["-n", a, "route", "add", "203.0.113.0/24", "via", B4]);
        ip(&["-n", a, "-6", "route", "add", "2001:db8:2::/64", "via", B6]);
        ip(&["-n", a, "route", "add", "unreachable", "192.0.2.0/26"]);
        ip(&["-n", a, "route", "add", "blackhole", "192.0.2.64/26"]);
        ip(&["-n", a, "route", "add", "prohibit", "192.0.2.128/26"]);
        ip(&[
            "-n",
            a,
            "-6",
            "route",
            "add",
            "unreachable",
            "2001:db8:ff::/48",
        ]);
        lab
    }

    /// Runs `f` on a fresh thread inside namespace `ns`.
    pub fn run_in<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{ns}");
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).expect("namespace file exists while the lab lives");
                // SAFETY: `file` is an open namespace descriptor; setns
                // only changes this (test-owned) thread's namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// The interface index of `dev` in `ns`.
    pub fn ifindex(&self, ns: &str, dev: &str) -> u32 {
        let out = ip(&["-n", ns, "-o", "link", "show", dev]);
        out.split(':')
            .next()
            .and_then(|s| s.trim().parse().ok())
            .expect("`ip -o link show` starts with the index")
    }

    /// The MAC of `dev` in `ns`, as `ip link` shows it.
    pub fn mac(&self, ns: &str, dev: &str) -> [u8; 6] {
        let out = ip(&["-n", ns, "-o", "link", "show", dev]);
        let text = out
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .expect("`ip link` shows link/ether");
        let mut mac = [0u8; 6];
        for (i, part) in text.split(':').enumerate() {
            mac[i] = u8::from_str_radix(part, 16).expect("hex MAC");
        }
        mac
    }

    /// Runs an `ip` command (arguments as given).
    pub fn ip(&self, args: &[&str]) -> String {
        ip(args)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
