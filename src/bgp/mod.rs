//! Announcing the VIPs over BGP through BIRD 2 (`uvs run --bgp-peer …`), for
//! several directors behind routers that spread flows over them by ECMP.
//!
//! Contract:
//! * uvs announces exactly the VIPs of its address services (not fwmark
//!   services, which have no address) that have at least one real server of
//!   weight > 0. A service whose servers are all removed or at weight 0 —
//!   by uvsadm, a reload or the health checks, which all commit through the
//!   daemon — stops holding its VIP up; a VIP shared by several services
//!   stays announced while any of them holds it. IPv4 VIPs go to IPv4 peers
//!   and IPv6 VIPs to IPv6 peers.
//! * Each committed change costs O(services it touched) on the control
//!   thread ([`VipSet::set`]); when the announced set changed, the BGP thread
//!   writes the whole BIRD configuration (one `route … blackhole;` line per
//!   VIP) and tells BIRD to re-read it over its control socket (`configure`):
//!   once per batch of changes, at most every [`MIN_INTERVAL`]. BIRD applies
//!   the static routes' difference without touching the BGP sessions.
//! * BIRD runs as uvs's child (`bird -f`) with `PR_SET_PDEATHSIG` = SIGTERM:
//!   if uvs dies, even by SIGKILL, the kernel signals BIRD, whose shutdown
//!   closes every session with a Cease, so the routers drop this director at
//!   once (and within the hold time should BIRD itself be stuck). Graceful
//!   restart is off, so no router keeps a dead director's routes as stale.
//! * On a clean stop uvs first withdraws everything (an empty set, one more
//!   `configure`, a short pause for the UPDATEs to leave), then stops BIRD,
//!   then removes its runtime directory (configuration, control socket, PID
//!   file). A directory left by a crashed run is cleared at the next start.
//! * A BIRD that exits while uvs runs is logged, counted
//!   (`bgp.bird_restarts`) and started again (after [`RESTART_DELAY`]); the
//!   routers have meanwhile withdrawn this director, which is the safe side.

mod bird;
#[cfg(test)]
mod tests;

pub use bird::Bgp;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::control::ctl;

/// The shortest time between two reconfigurations of BIRD: changes that
/// arrive meanwhile are applied together.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);
/// How long a BIRD that exited waits before it is started again.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);

/// `uvs run`'s BGP options (flattened into its command line).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BgpArgs {
    /// Announce the VIPs of healthy services over BGP to this router
    /// (repeatable), through a BIRD 2 daemon that uvs runs as its child
    /// (see the README, "Several directors behind ECMP"). Needs
    /// --bgp-local-as and --bgp-peer-as.
    #[arg(long = "bgp-peer", value_name = "ADDR")]
    pub peers: Vec<IpAddr>,
    /// This director's AS number.
    #[arg(long = "bgp-local-as", value_name = "ASN")]
    pub local_as: Option<u32>,
    /// The routers' AS number (the same AS as --bgp-local-as: iBGP).
    #[arg(long = "bgp-peer-as", value_name = "ASN")]
    pub peer_as: Option<u32>,
    /// BGP hold time proposed to the routers, 3..65535 seconds (the keepalive
    /// interval is a third of it); a director that stops answering is
    /// dropped by the routers after this long.
    #[arg(long = "bgp-hold-time", value_name = "SECS", default_value_t = 9)]
    pub hold_time: u16,
    /// The BGP router ID [default: BIRD's choice, the lowest IPv4 address
    /// of an interface].
    #[arg(long = "bgp-router-id", value_name = "IPV4")]
    pub router_id: Option<Ipv4Addr>,
    /// The local address of the sessions [default: the one the route to
    /// the peer uses].
    #[arg(long = "bgp-local-address", value_name = "ADDR")]
    pub local_address: Option<IpAddr>,
    /// The BIRD 2 daemon to run [default: `bird` in PATH, Debian package
    /// bird2].
    #[arg(long = "bird", value_name = "PATH")]
    pub bird: Option<PathBuf>,
    /// Where BIRD's configuration, control socket and PID file live while
    /// uvs runs (removed on exit) [default: the control socket's path with
    /// `.bird` for `.sock`].
    #[arg(long = "bgp-runtime-dir", value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
}

/// What `--bgp-*` asked for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    pub peers: Vec<IpAddr>,
    pub local_as: u32,
    pub peer_as: u32,
    pub hold_time: u16,
    pub router_id: Option<Ipv4Addr>,
    pub local_address: Option<IpAddr>,
    /// The BIRD binary, found.
    pub bird: PathBuf,
    pub runtime_dir: PathBuf,
}

/// A BGP setup uvs cannot run.
#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    #[error("{0}")]
    Options(String),
    #[error(
        "--bgp-peer: BIRD 2's `bird` was not found in PATH (Debian package bird2); \
         install it or name it with --bird PATH"
    )]
    NoBird,
    #[error("--bird {path}: {why}")]
    BadBird { path: String, why: String },
    #[error("BGP runtime directory {path}: {err}")]
    RuntimeDir { path: String, err: std::io::Error },
    #[error("starting {path}: {err}")]
    Spawn { path: String, err: std::io::Error },
    #[error("BIRD did not come up: {0} (its messages are above)")]
    NotReady(String),
}

impl BgpArgs {
    /// `None` without `--bgp-peer` (and no other `--bgp-*` option); the
    /// checked configuration otherwise. `control` is the control socket's
    /// path (the runtime directory's default).
    pub fn config(&self, control: &Path) -> Result<Option<BgpConfig>, BgpError> {
        let opt = |s: &str| Err(BgpError::Options(s.to_string()));
        if self.peers.is_empty() {
            if self.local_as.is_some()
                || self.peer_as.is_some()
                || self.router_id.is_some()
                || self.local_address.is_some()
                || self.bird.is_some()
                || self.runtime_dir.is_some()
            {
                return opt("the --bgp-* options and --bird need --bgp-peer ADDR");
            }
            return Ok(None);
        }
        let (Some(local_as), Some(peer_as)) = (self.local_as, self.peer_as) else {
            return opt("--bgp-peer needs --bgp-local-as ASN and --bgp-peer-as ASN");
        };
        if local_as == 0 || peer_as == 0 {
            return opt("--bgp-local-as/--bgp-peer-as: AS 0 is reserved");
        }
        if self.hold_time < 3 {
            return opt("--bgp-hold-time: 3..65535 seconds");
        }
        let mut seen = BTreeSet::new();
        for p in &self.peers {
            if p.is_unspecified() || p.is_multicast() || !seen.insert(*p) {
                return Err(BgpError::Options(format!(
                    "--bgp-peer {p}: not a unicast address, or given twice"
                )));
            }
        }
        let bird = match &self.bird {
            Some(p) => check_bird(p)?,
            None => check_bird(&find_in_path("bird").ok_or(BgpError::NoBird)?)?,
        };
        let runtime_dir = match &self.runtime_dir {
            Some(d) => d.clone(),
            None => control.with_extension("bird"),
        };
        Ok(Some(BgpConfig {
            peers: self.peers.clone(),
            local_as,
            peer_as,
            hold_time: self.hold_time,
            router_id: self.router_id,
            local_address: self.local_address,
            bird,
            runtime_dir,
        }))
    }
}

/// `name` in a directory of PATH, if it is there.
fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Refuses what is not BIRD 2 or later (BIRD 1.x speaks another
/// configuration language): `bird --version` prints `BIRD version 2.…`.
fn check_bird(path: &Path) -> Result<PathBuf, BgpError> {
    let bad = |why: String| BgpError::BadBird {
        path: path.display().to_string(),
        why,
    };
    let out = std::process::Command::new(path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| bad(e.to_string()))?;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_once("BIRD version ")
        .map_or("", |(_, v)| v.trim_start());
    match version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
    {
        Some(m) if m >= 2 => Ok(path.to_path_buf()),
        _ => Err(bad(format!(
            "not BIRD 2 (`--version` said {:?})",
            text.trim()
        ))),
    }
}

/// The VIP a configured service holds up: its address while it has a real
/// server of weight > 0; none for fwmark services.
pub fn announced_vip(svc: &ctl::ServiceConfig) -> Option<IpAddr> {
    match svc.key {
        ctl::SvcKey::Addr { addr, .. } if svc.dests.iter().any(|d| d.weight > 0) => Some(addr),
        _ => None,
    }
}

/// Which services hold which VIPs up; a VIP is announced while at least one
/// does. Every operation is O(1) (hash maps), so a change costs what it
/// touched, whatever the number of services.
#[derive(Debug, Default)]
pub struct VipSet {
    by_service: HashMap<ctl::SvcKey, IpAddr>,
    holders: HashMap<IpAddr, u32>,
}

impl VipSet {
    /// Records that `key` now holds up `vip` (or nothing); returns whether
    /// the set of announced VIPs changed.
    pub fn set(&mut self, key: ctl::SvcKey, vip: Option<IpAddr>) -> bool {
        let old = match vip {
            Some(v) => self.by_service.insert(key, v),
            None => self.by_service.remove(&key),
        };
        if old == vip {
            return false;
        }
        let mut changed = false;
        if let Some(o) = old {
            if let Some(n) = self.holders.get_mut(&o) {
                *n -= 1;
                if *n == 0 {
                    self.holders.remove(&o);
                    changed = true;
                }
            }
        }
        if let Some(v) = vip {
            let n = self.holders.entry(v).or_insert(0);
            *n += 1;
            changed |= *n == 1;
        }
        changed
    }

    /// The announced VIPs, sorted (O(VIPs): once per reconfiguration).
    pub fn vips(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.holders.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// How many VIPs are announced.
    pub fn len(&self) -> usize {
        self.holders.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }
}

/// The static protocols that carry the VIPs (what the sessions export).
const STATIC4: &str = "uvs_vips4";
const STATIC6: &str = "uvs_vips6";

/// BIRD's configuration announcing `vips` (sorted) to `cfg`'s peers.
pub fn render(cfg: &BgpConfig, vips: &[IpAddr]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(1024 + vips.len() * 40);
    s.push_str("# Written by uvs (uvs run --bgp-peer); rewritten on every change.\n");
    s.push_str("log stderr all;\n");
    if let Some(id) = cfg.router_id {
        let _ = writeln!(s, "router id {id};");
    }
    // Interfaces and their addresses: BGP needs them for directly
    // connected peers. No kernel protocol: the director's own routing
    // table is left alone (the blackholes are for export only).
    s.push_str("protocol device { scan time 10; }\n");
    for (name, v6) in [(STATIC4, false), (STATIC6, true)] {
        let _ = writeln!(s, "protocol static {name} {{\n  {};", chan(v6));
        for vip in vips.iter().filter(|v| v.is_ipv6() == v6) {
            let _ = writeln!(s, "  route {vip}/{} blackhole;", if v6 { 128 } else { 32 });
        }
        s.push_str("}\n");
    }
    let keepalive = (cfg.hold_time / 3).max(1);
    for (i, peer) in cfg.peers.iter().enumerate() {
        let v6 = peer.is_ipv6();
        let local = cfg
            .local_address
            .filter(|a| a.is_ipv6() == v6)
            .map_or(String::new(), |a| format!("{a} "));
        let _ = writeln!(
            s,
            "protocol bgp uvs_peer{n} {{\n  local {local}as {las};\n  neighbor {peer} as {pas};\n  \
             hold time {h};\n  keepalive time {keepalive};\n  connect retry time 5;\n  \
             error wait time 1, 10;\n  graceful restart off;\n  long lived graceful restart off;\n  \
             {c} {{ import none; export where proto = \"{p}\"; }};\n}}",
            n = i + 1,
            las = cfg.local_as,
            pas = cfg.peer_as,
            h = cfg.hold_time,
            c = chan(v6),
            p = if v6 { STATIC6 } else { STATIC4 },
        );
    }
    s
}

fn chan(v6: bool) -> &'static str {
    if v6 {
        "ipv6"
    } else {
        "ipv4"
    }
}
