//! What `uvs run`, `uvs demo` and `uvs bench` need from the host, checked
//! before they change anything.
//!
//! Contract: [`check`] only looks — it reads `/proc/self/status`, opens and
//! closes sockets, resolves names, and probes namespaces and veth pairs in
//! a throwaway network namespace that dies with the probing thread — and
//! leaves the host as it found it. It reports every missing piece at once,
//! each once, with what to do about it (a Debian package, a capability, an
//! option), as one [`Missing`] error.
//!
//! [`describe`] renders an error with its causes for the command line,
//! leaving out a cause whose text its parent already printed (thiserror
//! variants that both print and expose their source would otherwise say
//! it twice).

use std::ffi::CString;
use std::fmt::Write as _;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A capability uvs may need (`linux/capability.h` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// Interfaces, routes, nf_tables, XDP attachment.
    NetAdmin = 12,
    /// Packet sockets.
    NetRaw = 13,
    /// Network namespaces (and BPF where CAP_BPF is absent).
    SysAdmin = 21,
    /// Loading BPF programs.
    Bpf = 39,
}

impl Cap {
    fn name(self) -> &'static str {
        match self {
            Cap::NetAdmin => "CAP_NET_ADMIN",
            Cap::NetRaw => "CAP_NET_RAW",
            Cap::SysAdmin => "CAP_SYS_ADMIN",
            Cap::Bpf => "CAP_BPF",
        }
    }
}

/// What a command needs.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// The command, for messages: `uvs run`, `uvs demo`.
    pub command: &'static str,
    /// Capabilities, each needed (a pair: either one will do).
    pub caps: Vec<(Cap, Option<Cap>)>,
    /// Whether the command starts child processes that need real root
    /// (`ip netns add`): capabilities of uvs alone would not pass to them.
    pub root: bool,
    /// Network namespaces and veth pairs (probed in a throwaway
    /// namespace).
    pub netns_veth: bool,
    /// AF_PACKET sockets.
    pub packet: bool,
    /// AF_XDP sockets.
    pub xdp: bool,
    /// nf_tables over netlink (the AF_PACKET guard).
    pub nf_tables: bool,
    /// Programs it runs: (name, Debian package).
    pub programs: Vec<(&'static str, &'static str)>,
    /// Interfaces that must exist in this network namespace.
    pub interfaces: Vec<String>,
    /// Where the control socket goes: its directory must be creatable and
    /// writable.
    pub control: Option<PathBuf>,
    /// A TUN device (`/dev/net/tun`) and a reverse-path filter that lets
    /// decapsulated packets in (`uvs tunnel-endpoint`).
    pub tun: bool,
}

/// One missing prerequisite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lack {
    /// What is missing.
    pub what: String,
    /// How to get it.
    pub fix: String,
}

/// Everything missing, in one message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.command, .lacks))]
pub struct Missing {
    /// The command that cannot run.
    pub command: &'static str,
    /// What it lacks, each once.
    pub lacks: Vec<Lack>,
}

fn render(command: &str, lacks: &[Lack]) -> String {
    match lacks {
        [one] => format!("{command}: {}; {}", one.what, one.fix),
        _ => {
            let mut s = format!("{command}: cannot start, missing:");
            for l in lacks {
                let _ = write!(s, "\n  - {}; {}", l.what, l.fix);
            }
            s
        }
    }
}

/// `uvs run`'s needs: `interfaces` named with `-i`, the control socket at
/// `control`, and AF_XDP when `xdp` was asked for explicitly.
pub fn for_run(interfaces: &[String], control: &Path, xdp: bool, packet: bool) -> Needs {
    let mut caps = vec![(Cap::NetAdmin, None), (Cap::NetRaw, None)];
    if xdp {
        caps.push((Cap::Bpf, Some(Cap::SysAdmin)));
    }
    Needs {
        command: "uvs run",
        caps,
        packet,
        xdp,
        nf_tables: packet,
        interfaces: interfaces.to_vec(),
        control: Some(control.to_path_buf()),
        ..Needs::default()
    }
}

/// `uvs tunnel-endpoint`'s needs: packet sockets, nf_tables (its guard
/// table), a TUN device, the interfaces named with `-i`, and an IPv4
/// reverse-path filter that is not strict (it would drop every
/// decapsulated packet; uvs does not change it).
pub fn for_tunnel_endpoint(interfaces: &[String]) -> Needs {
    Needs {
        command: "uvs tunnel-endpoint",
        caps: vec![(Cap::NetAdmin, None), (Cap::NetRaw, None)],
        packet: true,
        nf_tables: true,
        tun: true,
        interfaces: interfaces.to_vec(),
        ..Needs::default()
    }
}

/// `uvs demo`'s (and the lab part of `uvs bench`'s) needs: a namespace
/// lab built by `scripts/lab.sh` with `ip`, and `uvs run` inside it.
pub fn for_lab(command: &'static str) -> Needs {
    Needs {
        command,
        caps: vec![
            (Cap::NetAdmin, None),
            (Cap::NetRaw, None),
            (Cap::SysAdmin, None),
        ],
        root: true,
        netns_veth: true,
        packet: true,
        nf_tables: true,
        programs: vec![("ip", "iproute2"), ("bash", "bash"), ("sysctl", "procps")],
        ..Needs::default()
    }
}

/// Checks `n`; see the module doc.
pub fn check(n: &Needs) -> Result<(), Missing> {
    let mut lacks = Vec::new();
    let eff = effective_caps();
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "uvs".into());
    let mut caps_ok = true;
    if n.root && euid() != 0 {
        caps_ok = false;
        lacks.push(Lack {
            what: "root (it builds network namespaces with `ip netns`)".into(),
            fix: format!("run it as root: sudo {exe} {}", sub(n.command)),
        });
    } else {
        let missing: Vec<String> = n
            .caps
            .iter()
            .filter(|(a, b)| !has(eff, *a) && !b.is_some_and(|b| has(eff, b)))
            .map(|(a, b)| match b {
                Some(b) => format!("{} (or {})", a.name(), b.name()),
                None => a.name().to_string(),
            })
            .collect();
        if !missing.is_empty() {
            caps_ok = false;
            let list: Vec<String> = n
                .caps
                .iter()
                .map(|(a, _)| a.name().trim_start_matches("CAP_").to_lowercase())
                .map(|c| format!("cap_{c}"))
                .collect();
            lacks.push(Lack {
                what: format!("the capabilities {}", missing.join(", ")),
                fix: format!(
                    "run it as root (sudo {exe} {}), or grant them: sudo setcap {}+ep {exe}",
                    sub(n.command),
                    list.join(",")
                ),
            });
        }
    }
    for (prog, pkg) in &n.programs {
        if find_program(prog).is_none() {
            lacks.push(Lack {
                what: format!("the `{prog}` command"),
                fix: format!("install it: apt-get install {pkg}"),
            });
        }
    }
    // The kernel probes need the privileges; without them they would only
    // repeat the capability message.
    if caps_ok {
        if n.netns_veth {
            lacks.extend(probe_netns_veth(n.packet));
        } else if n.packet {
            lacks.extend(probe_socket(
                libc::AF_PACKET,
                "AF_PACKET sockets",
                "a kernel with CONFIG_PACKET",
            ));
        }
        if n.xdp {
            lacks.extend(probe_socket(
                libc::AF_XDP,
                "AF_XDP sockets",
                "a kernel with CONFIG_XDP_SOCKETS, or --io af_packet",
            ));
        }
        if n.nf_tables {
            lacks.extend(probe_nf_tables());
        }
    }
    for i in &n.interfaces {
        if !interface_exists(i) {
            lacks.push(Lack {
                what: format!("no interface named `{i}` in this network namespace"),
                fix: "name one that `ip -br link` lists".into(),
            });
        }
    }
    if let Some(c) = &n.control {
        lacks.extend(check_control(c));
    }
    if n.tun {
        lacks.extend(check_tun());
    }
    if lacks.is_empty() {
        Ok(())
    } else {
        Err(Missing {
            command: n.command,
            lacks,
        })
    }
}

/// `/dev/net/tun`, and `all`/`default` IPv4 rp_filter not strict (a new
/// TUN device takes `default`; the kernel applies the larger of `all` and
/// the device's value).
fn check_tun() -> Vec<Lack> {
    let mut v = Vec::new();
    if !Path::new("/dev/net/tun").exists() {
        v.push(Lack {
            what: "/dev/net/tun (TUN devices)".into(),
            fix: "load the tun module (modprobe tun), or run it where /dev/net/tun exists".into(),
        });
    }
    let read = |k: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{k}/rp_filter"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    for k in ["all", "default"] {
        if read(k) == "1" {
            v.push(Lack {
                what: format!(
                    "net.ipv4.conf.{k}.rp_filter is strict (1): the kernel would drop every \
                     decapsulated packet (its client is routed through another interface)"
                ),
                fix: format!("make it loose: sysctl -w net.ipv4.conf.{k}.rp_filter=2"),
            });
        }
    }
    v
}

/// `uvs run` → `run`.
fn sub(command: &str) -> &str {
    command.rsplit(' ').next().unwrap_or(command)
}

fn euid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() }
}

/// The effective capability set (`CapEff` of `/proc/self/status`); all
/// set for root when it cannot be read.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(if euid() == 0 { u64::MAX } else { 0 })
}

fn has(eff: u64, c: Cap) -> bool {
    eff & (1u64 << c as u32) != 0
}

/// `prog` in `$PATH`, if there as an executable file.
pub fn find_program(prog: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn interface_exists(name: &str) -> bool {
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Opens and closes a socket of `family`.
fn probe_socket(family: i32, what: &str, fix: &str) -> Option<Lack> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd >= 0 {
        // SAFETY: `fd` is a fresh descriptor owned here; dropping closes it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        return None;
    }
    let e = io::Error::last_os_error();
    Some(Lack {
        what: format!("{what} ({e})"),
        fix: format!("this needs {fix}"),
    })
}

/// Lists nf_tables tables over netlink: reachable, nothing changed.
fn probe_nf_tables() -> Option<Lack> {
    let r = super::nftnl::NftSock::open()
        .and_then(|mut s| s.tables(super::nftnl::NFPROTO_NETDEV).map(drop));
    r.err().map(|e| Lack {
        what: format!("nf_tables over netlink ({e})"),
        fix: "this needs a kernel with CONFIG_NF_TABLES and CONFIG_NF_TABLES_NETDEV (Linux 5.12+ for owned tables)".into(),
    })
}

/// In a throwaway network namespace (a thread's own, gone when it ends):
/// creates one, a veth pair in it, and (`packet`) a packet socket.
fn probe_netns_veth(packet: bool) -> Vec<Lack> {
    let r = std::thread::spawn(move || -> Vec<Lack> {
        // SAFETY: unshare(2) with a constant flag; it affects only this
        // thread, which ends right after the probes.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let e = io::Error::last_os_error();
            return vec![Lack {
                what: format!("network namespaces ({e})"),
                fix: "this needs a kernel with CONFIG_NET_NS, and root".into(),
            }];
        }
        let mut v = Vec::new();
        if let Err(e) = add_veth() {
            v.push(Lack {
                what: format!("veth interfaces ({e})"),
                fix: "this needs a kernel with CONFIG_VETH (the veth module)".into(),
            });
        }
        if packet {
            v.extend(probe_socket(
                libc::AF_PACKET,
                "AF_PACKET sockets",
                "a kernel with CONFIG_PACKET",
            ));
        }
        v
    })
    .join();
    r.unwrap_or_else(|_| {
        vec![Lack {
            what: "the namespace probe failed".into(),
            fix: "see the message above".into(),
        }]
    })
}

/// `ip link add uvsprobe0 type veth` over rtnetlink, in this thread's
/// namespace; the kernel's answer.
fn add_veth() -> io::Result<()> {
    const RTM_NEWLINK: u16 = 16;
    const IFLA_IFNAME: u16 = 3;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_INFO_KIND: u16 = 1;
    const FLAGS: u16 = 0x1 | 0x4 | 0x400 | 0x200; // request, ack, create, excl
    fn attr(b: &mut Vec<u8>, kind: u16, data: &[u8]) {
        b.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(data);
        b.resize((b.len() + 3) & !3, 0);
    }
    let mut info = Vec::new();
    attr(&mut info, IFLA_INFO_KIND, b"veth");
    let mut m = vec![0u8; 16 + 16]; // nlmsghdr + ifinfomsg (AF_UNSPEC, all 0)
    attr(&mut m, IFLA_IFNAME, b"uvsprobe0\0");
    attr(&mut m, IFLA_LINKINFO | 0x8000, &info);
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
    m[6..8].copy_from_slice(&FLAGS.to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    use std::os::fd::AsRawFd as _;
    // SAFETY: `m` is a valid buffer of its length.
    if unsafe { libc::send(fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 1024];
    // SAFETY: `buf` is a valid, writable buffer of its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 20 {
        return Err(io::Error::last_os_error());
    }
    // NLMSG_ERROR: errno after the 16-byte header (0: acknowledged).
    let err = i32::from_ne_bytes(buf[16..20].try_into().expect("4 bytes"));
    if u16::from_ne_bytes([buf[4], buf[5]]) == 2 && err != 0 {
        return Err(io::Error::from_raw_os_error(-err));
    }
    Ok(())
}

/// The control socket's directory: created by `uvs run` if absent, so the
/// nearest existing ancestor must be a writable directory on a writable
/// file system.
fn check_control(sock: &Path) -> Option<Lack> {
    let dir = sock.parent().filter(|d| !d.as_os_str().is_empty())?;
    let mut at = dir;
    while !at.exists() {
        at = at.parent()?;
    }
    let lack = |why: String| Lack {
        what: format!(
            "cannot create the control socket {} ({why})",
            sock.display()
        ),
        fix: "choose another path with --control PATH or UVS_CONTROL".into(),
    };
    if !at.is_dir() {
        return Some(lack(format!("{} is not a directory", at.display())));
    }
    let c = CString::new(at.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path; `st` is written by the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0 && st.f_flag & libc::ST_RDONLY != 0 {
        return Some(lack(format!(
            "{} is on a read-only file system",
            at.display()
        )));
    }
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        let e = io::Error::last_os_error();
        return Some(lack(format!("{}: {e}", at.display())));
    }
    None
}

/// `e` and its causes joined with ": ", leaving out a cause whose text is
/// already part of what was printed.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !s.is_empty() && !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot run thing: {0}")]
        Io(#[from] io::Error),
    }

    #[test]
    fn a_cause_already_printed_is_not_repeated() {
        let e = Outer::from(io::Error::from_raw_os_error(libc::ENOENT));
        let d = describe(&e);
        assert_eq!(d.matches("No such file or directory").count(), 1, "{d}");
        assert!(d.starts_with("cannot run thing: "), "{d}");
    }

    #[test]
    fn one_lack_reads_as_one_sentence_several_as_a_list() {
        let l = |w: &str| Lack {
            what: w.into(),
            fix: "do y".into(),
        };
        let one = Missing {
            command: "uvs run",
            lacks: vec![l("x")],
        };
        assert_eq!(one.to_string(), "uvs run: x; do y");
        let two = Missing {
            command: "uvs demo",
            lacks: vec![l("a"), l("b")],
        };
        assert_eq!(
            two.to_string(),
            "uvs demo: cannot start, missing:\n  - a; do y\n  - b; do y"
        );
    }

    #[test]
    fn names_missing_interfaces_programs_and_control_directories() {
        let dir = std::env::temp_dir().join(format!("uvs-prereq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, "").unwrap();
        let n = Needs {
            command: "uvs run",
            programs: vec![("uvs-no-such-program", "uvs-pkg")],
            interfaces: vec!["uvsnosuch0".into(), "lo".into()],
            control: Some(file.join("uvs.sock")),
            ..Needs::default()
        };
        let e = check(&n).expect_err("missing");
        let _ = std::fs::remove_dir_all(&dir);
        let text = e.to_string();
        assert_eq!(e.lacks.len(), 3, "{text}");
        assert!(text.contains("`uvs-no-such-program`") && text.contains("apt-get install uvs-pkg"));
        assert!(
            text.contains("`uvsnosuch0`") && !text.contains("`lo`"),
            "{text}"
        );
        assert!(text.contains("is not a directory"), "{text}");
        // A path whose directory does not exist yet is fine: it is made.
        let ok = Needs {
            control: Some(std::env::temp_dir().join("uvs-prereq-new/a/b/uvs.sock")),
            ..Needs::default()
        };
        assert!(check(&ok).is_ok());
    }

    #[test]
    fn the_lab_probe_leaves_nothing_behind() {
        if euid() != 0 {
            eprintln!("the_lab_probe_leaves_nothing_behind: skipped (needs root)");
            return;
        }
        let before = std::fs::read_dir("/sys/class/net").map(|d| d.count()).ok();
        let mut n = for_lab("uvs demo");
        n.programs.clear(); // only the kernel probes here
        assert_eq!(check(&n), Ok(()));
        let after = std::fs::read_dir("/sys/class/net").map(|d| d.count()).ok();
        assert_eq!(before, after, "no interface added here");
        assert!(!interface_exists("uvsprobe0"));
    }
}
