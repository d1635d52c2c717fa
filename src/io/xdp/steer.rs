//! The steering API: what uvs owns, kept in the XDP program's maps one entry
//! at a time, and the program's attachment to interfaces.
//!
//! One [`Steering`] holds the maps shared by every interface (`owned`, the
//! per-CPU counters); [`Steering::attach`] loads the program once per
//! interface around that interface's own XSKMAP (RX queue → socket) and
//! attaches it through a BPF link — natively (`XDP_FLAGS_DRV_MODE`), or in
//! generic mode only when the caller allows that fallback, and the
//! [`Attachment`] says which. Dropping the `Attachment` detaches; so does
//! the process ending in any way, because the link is a file descriptor.
//!
//! Configuration changes cost what they change: each `add_*`/`remove_*` is
//! one map update or delete (two for the first/last NAT server on an
//! address). Several services may share a real server, so entries are
//! reference-counted here and leave the map with their last user.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::OwnedFd;

use super::asm::AsmError;
use super::prog::{
    self, local_key, Key, Maps, COUNTERS, FRAG_KEY_LEN, FRAG_MAX_ENTRIES, KEY_LEN, LOCAL_KEY_LEN,
};
use super::sys::bpf::{LoadError, Map, MapType, Prog, BPF_F_XDP_HAS_FRAGS};
use super::sys::xsk::XskSocket;

/// `XDP_FLAGS_SKB_MODE`: generic XDP, run on the skb after allocation.
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native XDP, run by the driver.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// Entries the `owned` map holds by default.
pub const DEFAULT_MAX_ENTRIES: u32 = 1 << 16;
/// Local prefixes the `local` map holds (allocated as used).
pub const LOCAL_MAX_ENTRIES: u32 = 1 << 14;

/// Failures of the AF_XDP steering.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// A `bpf(2)` or socket operation failed.
    #[error("AF_XDP unavailable: {what}: {source}{}", hint(source))]
    Sys {
        what: &'static str,
        source: io::Error,
    },
    /// The kernel's verifier refused the steering program.
    #[error("the kernel refused the XDP steering program: {error}\n{log}")]
    Verifier { error: io::Error, log: String },
    /// Neither native nor (if allowed) generic attach worked.
    #[error("cannot attach XDP to interface {ifindex}: native: {native}{}", generic.as_ref().map(|g| format!("; generic: {g}")).unwrap_or_default())]
    Attach {
        ifindex: u32,
        native: io::Error,
        generic: Option<io::Error>,
    },
    /// A failure on one named interface.
    #[error("{name}: {source}")]
    On { name: String, source: Box<XdpError> },
    /// The `owned` map is full.
    #[error("XDP steering map full ({0} entries)")]
    Full(u32),
    /// The program generator failed (a bug).
    #[error(transparent)]
    Asm(#[from] AsmError),
}

fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) => " (needs root, or CAP_BPF and CAP_NET_ADMIN)",
        Some(libc::ENOSYS) | Some(libc::EAFNOSUPPORT) => " (kernel built without BPF/AF_XDP)",
        _ => "",
    }
}

fn sys(what: &'static str) -> impl FnOnce(io::Error) -> XdpError {
    move |source| XdpError::Sys { what, source }
}

/// How the program runs on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// Generic XDP on the skb (`XDP_FLAGS_SKB_MODE`), the named fallback.
    Generic,
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        })
    }
}

/// The program's per-decision counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SteerCounters {
    /// Owned packets redirected into a uvs socket.
    pub steered: u64,
    /// Packets left to the kernel.
    pub passed: u64,
    /// Owned packets dropped: no uvs socket on their RX queue.
    pub no_socket: u64,
    /// NAT replies and ICMP errors from real servers addressed to the
    /// director itself, left to its kernel.
    pub pass_local: u64,
}

/// The shared maps and the reference counts of their entries.
#[derive(Debug)]
pub struct Steering {
    owned: Map,
    counters: Map,
    local: Map,
    frags: Map,
    refs: HashMap<Key, u32>,
    max_entries: u32,
}

/// The program loaded for one interface, with that interface's XSKMAP;
/// not attached yet.
#[derive(Debug)]
pub struct Program {
    prog: Prog,
    xsks: Map,
}

/// A [`Program`] attached to an interface; detached when dropped.
#[derive(Debug)]
pub struct Attachment {
    // Field order is drop order: detach first.
    _link: OwnedFd,
    program: Program,
    ifindex: u32,
    mode: AttachMode,
}

/// Number of possible CPUs (the width of a per-CPU map value).
fn possible_cpus() -> io::Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut n = 0;
    for part in s.trim().split(',') {
        let bad = || io::Error::other(format!("cannot parse CPU list {s:?}"));
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: usize = a.parse().map_err(|_| bad())?;
        let b: usize = b.parse().map_err(|_| bad())?;
        n = n.max(b + 1).max(a + 1);
    }
    Ok(n)
}

impl Steering {
    /// Creates the shared maps (`max_entries` owned tuples at most).
    pub fn new(max_entries: u32) -> Result<Steering, XdpError> {
        let cpus = possible_cpus().map_err(sys("reading the possible CPUs"))?;
        let owned = Map::create(
            MapType::Hash,
            "uvs_owned",
            KEY_LEN as u32,
            1,
            max_entries,
            cpus,
        )
        .map_err(sys("creating the steering map"))?;
        let counters = Map::create(MapType::PerCpuArray, "uvs_steer_cnt", 4, 8, COUNTERS, cpus)
            .map_err(sys("creating the steering counters"))?;
        let local = Map::create(
            MapType::LpmTrie,
            "uvs_local",
            LOCAL_KEY_LEN as u32,
            1,
            LOCAL_MAX_ENTRIES,
            cpus,
        )
        .map_err(sys("creating the local-prefix map"))?;
        let frags = Map::create(
            MapType::LruHash,
            "uvs_frags",
            FRAG_KEY_LEN as u32,
            1,
            FRAG_MAX_ENTRIES,
            cpus,
        )
        .map_err(sys("creating the fragment map"))?;
        Ok(Steering {
            owned,
            counters,
            local,
            frags,
            refs: HashMap::new(),
            max_entries,
        })
    }

    /// Loads and attaches the program: [`Steering::load`], then
    /// [`Program::attach`].
    pub fn attach(
        &self,
        ifindex: u32,
        queues: u32,
        allow_generic: bool,
    ) -> Result<Attachment, XdpError> {
        self.load(queues)?.attach(ifindex, allow_generic)
    }

    /// Loads the program for one interface around a new XSKMAP of `queues`
    /// entries (one per RX queue); the verifier checks it here.
    pub fn load(&self, queues: u32) -> Result<Program, XdpError> {
        let cpus = possible_cpus().map_err(sys("reading the possible CPUs"))?;
        let xsks = Map::create(MapType::XskMap, "uvs_xsks", 4, 4, queues.max(1), cpus)
            .map_err(sys("creating the XSK map"))?;
        let insns = prog::steering_program(Maps {
            owned: self.owned.raw_fd(),
            xsks: xsks.raw_fd(),
            counters: self.counters.raw_fd(),
            local: self.local.raw_fd(),
            frags: self.frags.raw_fd(),
        })?;
        // Frags-aware where the kernel knows the flag (5.18), so a driver
        // may hand the program packets larger than a page; without it the
        // same program, unchanged (it reads headers in the first buffer).
        let prog = Prog::load_xdp_flags("uvs_steer", &insns, BPF_F_XDP_HAS_FRAGS)
            .or_else(|_| Prog::load_xdp("uvs_steer", &insns))
            .map_err(|LoadError { error, log }| XdpError::Verifier { error, log })?;
        Ok(Program { prog, xsks })
    }

    fn add(&mut self, key: Key) -> Result<(), XdpError> {
        if let Some(n) = self.refs.get_mut(&key) {
            *n += 1;
            return Ok(());
        }
        if self.refs.len() as u32 >= self.max_entries {
            return Err(XdpError::Full(self.max_entries));
        }
        self.owned
            .update(&key.0, &[1])
            .map_err(sys("adding a steering entry"))?;
        self.refs.insert(key, 1);
        Ok(())
    }

    fn remove(&mut self, key: Key) -> Result<(), XdpError> {
        match self.refs.get_mut(&key) {
            None => Ok(()),
            Some(n) if *n > 1 => {
                *n -= 1;
                Ok(())
            }
            Some(_) => {
                self.refs.remove(&key);
                match self.owned.delete(&key.0) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        Err(sys("removing a steering entry")(e))
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// Steers packets to (VIP, protocol, port); port 0 = every port.
    pub fn add_service(&mut self, proto: u8, vip: IpAddr, port: u16) -> Result<(), XdpError> {
        self.add(Key::service(proto, vip, port))
    }

    /// Stops steering packets to a service (after its last `add_service`).
    pub fn remove_service(&mut self, proto: u8, vip: IpAddr, port: u16) -> Result<(), XdpError> {
        self.remove(Key::service(proto, vip, port))
    }

    /// Steers NAT replies from (real server, protocol, port) — port 0 =
    /// every port — and ICMP errors from the real server's address.
    pub fn add_nat_server(&mut self, proto: u8, rs: IpAddr, port: u16) -> Result<(), XdpError> {
        self.add(Key::nat_server(proto, rs, port))?;
        if let Err(e) = self.add(Key::nat_address(rs)) {
            let _ = self.remove(Key::nat_server(proto, rs, port));
            return Err(e);
        }
        Ok(())
    }

    /// Undoes one `add_nat_server`.
    pub fn remove_nat_server(&mut self, proto: u8, rs: IpAddr, port: u16) -> Result<(), XdpError> {
        self.remove(Key::nat_server(proto, rs, port))?;
        self.remove(Key::nat_address(rs))
    }

    /// Steers NAT replies and ICMP errors from real servers to `addr`, a
    /// local-client address (`--local-src`), although `addr` is local.
    pub fn add_local_client(&mut self, addr: IpAddr) -> Result<(), XdpError> {
        self.add(Key::local_client(addr))
    }

    /// Undoes one `add_local_client`.
    pub fn remove_local_client(&mut self, addr: IpAddr) -> Result<(), XdpError> {
        self.remove(Key::local_client(addr))
    }

    /// Marks `addr/len` as local to the director (or no longer): NAT
    /// replies and ICMP errors addressed there go to the kernel. The
    /// [`super::local::LocalWatcher`] does this from the kernel's routes.
    pub fn set_local(&self, addr: IpAddr, len: u8, local: bool) -> Result<(), XdpError> {
        let k = local_key(addr, len);
        let r = if local {
            self.local.update(&k, &[1])
        } else {
            match self.local.delete(&k) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                r => r,
            }
        };
        r.map_err(sys("changing the local-prefix map"))
    }

    /// A second handle on the `local` map, for the thread that keeps it.
    pub fn local_map(&self) -> Result<Map, XdpError> {
        self.local
            .try_clone()
            .map_err(sys("duplicating the local-prefix map"))
    }

    /// Entries in the `owned` map.
    pub fn entries(&self) -> usize {
        self.refs.len()
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<SteerCounters, XdpError> {
        let mut buf = vec![0u8; self.counters.value_len()];
        let mut read = |idx: u32| -> Result<u64, XdpError> {
            self.counters
                .lookup(&idx.to_ne_bytes(), &mut buf)
                .map_err(sys("reading the steering counters"))?;
            Ok(buf
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
                .sum())
        };
        Ok(SteerCounters {
            steered: read(prog::COUNTER_STEERED)?,
            passed: read(prog::COUNTER_PASSED)?,
            no_socket: read(prog::COUNTER_NO_SOCKET)?,
            pass_local: read(prog::COUNTER_PASS_LOCAL)?,
        })
    }
}

impl Program {
    /// Attaches to interface `ifindex` (of the calling thread's network
    /// namespace) natively; in generic mode only if `allow_generic` and
    /// native attach failed.
    pub fn attach(self, ifindex: u32, allow_generic: bool) -> Result<Attachment, XdpError> {
        let (link, mode) = match self.prog.attach_xdp(ifindex, XDP_FLAGS_DRV_MODE) {
            Ok(l) => (l, AttachMode::Native),
            Err(native) if allow_generic => {
                match self.prog.attach_xdp(ifindex, XDP_FLAGS_SKB_MODE) {
                    Ok(l) => (l, AttachMode::Generic),
                    Err(g) => {
                        return Err(XdpError::Attach {
                            ifindex,
                            native,
                            generic: Some(g),
                        })
                    }
                }
            }
            Err(native) => {
                return Err(XdpError::Attach {
                    ifindex,
                    native,
                    generic: None,
                })
            }
        };
        Ok(Attachment {
            _link: link,
            program: self,
            ifindex,
            mode,
        })
    }

    /// Attaches to interface `ifindex` in generic mode only (the named
    /// fallback, asked for explicitly).
    pub fn attach_generic(self, ifindex: u32) -> Result<Attachment, XdpError> {
        let link = self
            .prog
            .attach_xdp(ifindex, XDP_FLAGS_SKB_MODE)
            .map_err(|g| XdpError::Attach {
                ifindex,
                native: io::Error::from(io::ErrorKind::Unsupported),
                generic: Some(g),
            })?;
        Ok(Attachment {
            _link: link,
            program: self,
            ifindex,
            mode: AttachMode::Generic,
        })
    }

    /// Directs steered packets of RX queue `queue` into `xsk` (bound to
    /// that queue of this program's interface).
    pub fn set_socket(&self, queue: u32, xsk: &XskSocket) -> Result<(), XdpError> {
        self.xsks
            .update(&queue.to_ne_bytes(), &(xsk.raw_fd() as u32).to_ne_bytes())
            .map_err(sys("adding a socket to the XSK map"))
    }

    /// Stops directing queue `queue` anywhere (its owned packets are then
    /// dropped and counted as `no_socket`).
    pub fn clear_socket(&self, queue: u32) -> Result<(), XdpError> {
        match self.xsks.delete(&queue.to_ne_bytes()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(sys("clearing the XSK map")(e)),
            _ => Ok(()),
        }
    }

    /// Runs the program once on `packet` without a device
    /// (`BPF_PROG_TEST_RUN`, RX queue 0) and returns the XDP verdict.
    pub fn test_run(&self, packet: &[u8]) -> Result<u32, XdpError> {
        self.prog
            .test_run(packet)
            .map_err(sys("test-running the XDP program"))
    }
}

impl Attachment {
    /// How the program runs on this interface.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// The interface.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The attached program (its XSKMAP).
    pub fn program(&self) -> &Program {
        &self.program
    }
}
