//! The configuration model: virtual services, their real servers and the
//! global timeouts, as plain data. [`Config::apply`] is the one place that
//! edits it, with ipvsadm's client-side validation and the kernel's checks
//! (`ip_vs_ctl.c`) in the same order and with the same messages.
//!
//! The model knows nothing of workers, schedulers' state or counters; the
//! runtime turns an [`Applied`] (or a diff of two `Config`s) into changes of
//! the live service table.
//!
//! Cost: services are indexed by key ([`ServiceTable`]: a hash map plus an
//! insertion-order index), so one command costs O(what it changes), never
//! O(services). Commands edit the configuration in place; each records how
//! to reverse itself in an [`Undo`], which is how a batch (`-R`) stays
//! all-or-nothing in O(its lines) and how the runtime backs a command out
//! when committing it fails ([`Config::undo`]) — no copy of the
//! configuration is ever made.
//!
//! Support gates: features the engine does not have yet are refused here,
//! each in one function ([`supported_fwd`], [`check_scheduler`],
//! [`check_pe`]) collected in [`Gates`], so lifting one is a one-line change.

use std::net::{IpAddr, Ipv4Addr};

use uvs_sched::{FwdMethod, Registry};

use super::args::{Command, ServiceOpts};
use super::table::UndoStep;
pub use super::table::{ServiceTable, Undo};
use super::{CtlError, LineError};

/// Longest persistence / connection timeout ipvsadm accepts (31 days).
pub const MAX_TIMEOUT: u32 = 86_400 * 31;
/// Persistence timeout when `-p` has no value: libipvs's
/// `IPVS_SVC_PERSISTENT_TIMEOUT`, 6 × 60 s (the man page says 300; the code wins).
pub const DEFAULT_PERSISTENCE: u32 = 360;
/// Scheduler when `-s` is not given.
pub const DEFAULT_SCHED: &str = "wlc";
/// The schedulers the Linux kernel has, in `ipvsadm -h` order.
pub const KERNEL_SCHEDULERS: [&str; 14] = [
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// Transport protocol of an address-based virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// `-t`.
    Tcp,
    /// `-u`.
    Udp,
    /// `--sctp-service`.
    Sctp,
}

impl Proto {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }
    /// Name in `-L` and `-c` output.
    pub fn list_name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }
    /// The option `-S` writes for it.
    pub fn save_flag(self) -> &'static str {
        match self {
            Proto::Tcp => "-t",
            Proto::Udp => "-u",
            Proto::Sctp => "--sctp-service",
        }
    }
}

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 (sorts first, as AF_INET < AF_INET6).
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// What identifies a virtual service (the kernel's lookup key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SvcKey {
    /// Protocol, virtual address and port (port 0: any port, persistent only).
    Addr {
        /// Transport protocol.
        proto: Proto,
        /// Virtual IP.
        addr: IpAddr,
        /// Virtual port.
        port: u16,
    },
    /// Firewall mark service (`-f`), IPv4 unless `-6`.
    Fwmark {
        /// The mark (> 0).
        mark: u32,
        /// Address family of the traffic it matches.
        family: Family,
    },
}

impl SvcKey {
    /// Address family of the service.
    pub fn family(&self) -> Family {
        match *self {
            SvcKey::Addr { addr, .. } => Family::of(addr),
            SvcKey::Fwmark { family, .. } => family,
        }
    }
    /// The protocol, `None` for fwmark services.
    pub fn proto(&self) -> Option<Proto> {
        match *self {
            SvcKey::Addr { proto, .. } => Some(proto),
            SvcKey::Fwmark { .. } => None,
        }
    }
    /// The virtual port (0 for fwmark services).
    pub fn port(&self) -> u16 {
        match *self {
            SvcKey::Addr { port, .. } => port,
            SvcKey::Fwmark { .. } => 0,
        }
    }
    /// Whether this is a fwmark service.
    pub fn is_fwmark(&self) -> bool {
        matches!(self, SvcKey::Fwmark { .. })
    }
}

/// Persistence granularity (`-M`): which client addresses share a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Netmask {
    /// IPv4 mask as ipvsadm takes it (dotted; not required to be contiguous).
    V4(Ipv4Addr),
    /// IPv6 prefix length 1..=128.
    V6(u8),
}

impl Netmask {
    /// The default for a family: one client address (/32, /128).
    pub fn default_for(family: Family) -> Netmask {
        match family {
            Family::V4 => Netmask::V4(Ipv4Addr::BROADCAST),
            Family::V6 => Netmask::V6(128),
        }
    }
    /// The family this mask is for.
    pub fn family(&self) -> Family {
        match self {
            Netmask::V4(_) => Family::V4,
            Netmask::V6(_) => Family::V6,
        }
    }
}

pub use uvs_sched::{TunCsum, TunType};

/// Tunnel parameters of a tunnelling (`-i`) real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunOpts {
    /// Encapsulation.
    pub kind: TunType,
    /// Destination UDP port (gue only, required there).
    pub port: Option<u16>,
    /// Checksum mode.
    pub csum: TunCsum,
}

impl Default for TunOpts {
    fn default() -> Self {
        TunOpts {
            kind: TunType::Ipip,
            port: None,
            csum: TunCsum::NoCsum,
        }
    }
}

impl TunOpts {
    /// ipvsadm's tunnel type × option table: gue needs a port and may have
    /// any checksum mode; gre has no port and no remote checksum; ipip has
    /// neither port nor checksum options.
    pub fn validate(&self) -> Result<(), CtlError> {
        let kind = self.kind.name();
        match self.kind {
            TunType::Gue => {
                if self.port.is_none() {
                    return Err(CtlError::TunPortRequired);
                }
            }
            TunType::Ipip | TunType::Gre => {
                if self.port.is_some() {
                    return Err(CtlError::TunOptionInvalid {
                        opt: "--tun-port",
                        kind,
                    });
                }
                let bad = matches!(
                    (self.kind, self.csum),
                    (TunType::Ipip, TunCsum::Csum | TunCsum::RemCsum)
                        | (TunType::Gre, TunCsum::RemCsum)
                );
                if bad {
                    return Err(CtlError::TunOptionInvalid {
                        opt: self.csum.option(),
                        kind,
                    });
                }
            }
        }
        if self.port == Some(0) {
            return Err(CtlError::InvalidNumber {
                opt: "--tun-port".into(),
                value: "0".into(),
                min: 1,
                max: 65535,
            });
        }
        Ok(())
    }
}

/// One real server of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestConfig {
    /// Real server address.
    pub addr: IpAddr,
    /// Real server port (for fwmark services 0 = the packet's port).
    pub port: u16,
    /// Forwarding method.
    pub fwd: FwdMethod,
    /// Weight 0..=65535 (0 = quiescent).
    pub weight: u32,
    /// Upper connection threshold (`-x`, 0 = none).
    pub u_threshold: u32,
    /// Lower connection threshold (`-y`, 0 = 3/4 of `-x`).
    pub l_threshold: u32,
    /// Tunnel parameters; `Some` exactly when `fwd` is `Tunnel`.
    pub tun: Option<TunOpts>,
}

/// One virtual service and its real servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Lookup key.
    pub key: SvcKey,
    /// Scheduler name (a `uvs_sched` registry name).
    pub sched: String,
    /// Scheduler flags, canonical names in bit order (see [`canonical_sched_flags`]).
    pub sched_flags: Vec<String>,
    /// Persistence timeout in seconds (`-p`), `None` = not persistent.
    pub persistent: Option<u32>,
    /// Persistence granularity.
    pub netmask: Netmask,
    /// One-packet scheduling (`-o`, UDP and fwmark only).
    pub ops: bool,
    /// Persistence engine (`--pe`).
    pub pe: Option<String>,
    /// Real servers in the order they were added.
    pub dests: Vec<DestConfig>,
}

impl ServiceConfig {
    /// The real server `addr:port`, if present.
    pub fn dest(&self, addr: IpAddr, port: u16) -> Option<&DestConfig> {
        self.dests.iter().find(|d| d.addr == addr && d.port == port)
    }
}

/// Global connection timeouts (`--set`), seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP ESTABLISHED.
    pub tcp: u32,
    /// TCP FIN_WAIT.
    pub tcp_fin: u32,
    /// UDP.
    pub udp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// Virtual services, by key and in the order they were added.
    pub services: ServiceTable,
    /// Global timeouts.
    pub timeouts: Timeouts,
}

/// What one command changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Nothing (queries).
    Nothing,
    /// `-A`.
    ServiceAdded(SvcKey),
    /// `-E`: attributes replaced, servers kept.
    ServiceEdited(SvcKey),
    /// `-D`.
    ServiceDeleted(SvcKey),
    /// `-C`: every service removed.
    Cleared,
    /// `-a`.
    DestAdded {
        /// The service.
        svc: SvcKey,
        /// Server address.
        addr: IpAddr,
        /// Server port.
        port: u16,
    },
    /// `-e`.
    DestEdited {
        /// The service.
        svc: SvcKey,
        /// Server address.
        addr: IpAddr,
        /// Server port.
        port: u16,
    },
    /// `-d`.
    DestDeleted {
        /// The service.
        svc: SvcKey,
        /// Server address.
        addr: IpAddr,
        /// Server port.
        port: u16,
    },
    /// `-Z`: zero the counters of one service or all (runtime state only).
    Zeroed(Option<SvcKey>),
    /// `--set`: the timeouts now in force.
    TimeoutsSet(Timeouts),
    /// `-R` / a configuration file: every command's result, in order.
    Batch(Vec<Applied>),
}

/// The support gates, one function each. [`Gates::default`] is what the
/// engine can do today; tests and future engines may pass others.
#[derive(Debug, Clone, Copy)]
pub struct Gates {
    /// Accepts or refuses a forwarding method.
    pub fwd: fn(FwdMethod) -> Result<(), CtlError>,
    /// Accepts or refuses a scheduler name.
    pub scheduler: fn(&str) -> Result<(), CtlError>,
    /// Accepts or refuses a persistence engine.
    pub pe: fn(&str) -> Result<(), CtlError>,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            fwd: supported_fwd,
            scheduler: check_scheduler,
            pe: check_pe,
        }
    }
}

/// Gate: the forwarding methods the engine has (NAT, direct routing,
/// tunnelling).
pub fn supported_fwd(m: FwdMethod) -> Result<(), CtlError> {
    match m {
        FwdMethod::Masq | FwdMethod::Route | FwdMethod::Tunnel => Ok(()),
        FwdMethod::Local => Err(CtlError::FwdNotSupported("local")),
    }
}

/// Gate: a scheduler must be registered in `uvs_sched`; a kernel scheduler
/// that is not yet is "not supported yet", anything else unknown.
pub fn check_scheduler(name: &str) -> Result<(), CtlError> {
    if Registry::contains(name) {
        return Ok(());
    }
    if KERNEL_SCHEDULERS.contains(&name) {
        let available: Vec<&str> = Registry::names().collect();
        let available = if available.is_empty() {
            "none".to_string()
        } else {
            available.join(" ")
        };
        return Err(CtlError::SchedulerNotSupported {
            name: name.to_string(),
            available,
        });
    }
    Err(CtlError::UnknownScheduler(name.to_string()))
}

/// Gate: persistence engines (the kernel has `sip`, and so has uvs).
pub fn check_pe(name: &str) -> Result<(), CtlError> {
    if name == "sip" {
        Ok(())
    } else {
        Err(CtlError::UnknownPe(name.to_string()))
    }
}

/// Maps `-b` words to the kernel's three flag bits and back to the names
/// ipvsadm prints for the scheduler (`sh-fallback,sh-port` for sh,
/// `mh-…` for mh, `flag-N` otherwise), in bit order without duplicates.
pub fn canonical_sched_flags(sched: &str, flags: &[String]) -> Result<Vec<String>, CtlError> {
    let mut bits = [false; 3];
    for f in flags {
        let bit = match f.as_str() {
            "flag-1" => 0,
            "flag-2" => 1,
            "flag-3" => 2,
            "sh-fallback" | "sh-port" | "mh-fallback" | "mh-port" => {
                let owner = &f[..2];
                if sched != owner {
                    return Err(CtlError::IncompatibleSchedFlag(f.clone()));
                }
                if f.ends_with("fallback") {
                    0
                } else {
                    1
                }
            }
            _ => return Err(CtlError::InvalidSchedFlag(f.clone())),
        };
        bits[bit] = true;
    }
    let names: [&str; 3] = match sched {
        "sh" => ["sh-fallback", "sh-port", "flag-3"],
        "mh" => ["mh-fallback", "mh-port", "flag-3"],
        _ => ["flag-1", "flag-2", "flag-3"],
    };
    Ok(bits
        .iter()
        .zip(names)
        .filter(|(set, _)| **set)
        .map(|(_, n)| n.to_string())
        .collect())
}

impl Config {
    /// An empty configuration with default timeouts.
    pub fn new() -> Config {
        Config::default()
    }

    /// The service with this key.
    pub fn service(&self, key: &SvcKey) -> Option<&ServiceConfig> {
        self.services.get(key)
    }

    fn service_mut(&mut self, key: &SvcKey) -> Option<&mut ServiceConfig> {
        self.services.get_mut(key)
    }

    /// Applies one command with the default gates. On error nothing changed.
    pub fn apply(&mut self, cmd: &Command) -> Result<Applied, CtlError> {
        self.apply_with(cmd, &Gates::default())
    }

    /// Applies one command with explicit gates. On error nothing changed.
    pub fn apply_with(&mut self, cmd: &Command, gates: &Gates) -> Result<Applied, CtlError> {
        self.apply_logged(cmd, gates, &mut Undo::new())
    }

    /// Applies one command in place, appending how to reverse it to `undo`.
    /// On error nothing changed and nothing was appended.
    pub fn apply_logged(
        &mut self,
        cmd: &Command,
        gates: &Gates,
        undo: &mut Undo,
    ) -> Result<Applied, CtlError> {
        let log = &mut undo.steps;
        match cmd {
            Command::AddService(opts) => {
                // The kernel looks the service up before anything else.
                if self.service(&opts.key).is_some() {
                    return Err(CtlError::ServiceExists);
                }
                let new = build_service(opts, gates)?;
                self.services.push(new);
                log.push(UndoStep::Added(opts.key));
                Ok(Applied::ServiceAdded(opts.key))
            }
            Command::EditService(opts) => {
                if self.service(&opts.key).is_none() {
                    return Err(CtlError::NoSuchService);
                }
                let new = build_service(opts, gates)?;
                let svc = self.service_mut(&opts.key).ok_or(CtlError::NoSuchService)?;
                let dests = std::mem::take(&mut svc.dests);
                let old = std::mem::replace(svc, ServiceConfig { dests, ..new });
                log.push(UndoStep::Edited(old));
                Ok(Applied::ServiceEdited(opts.key))
            }
            Command::DeleteService(key) => {
                let (seq, old) = self.services.remove(key).ok_or(CtlError::NoSuchService)?;
                log.push(UndoStep::Deleted(seq, old));
                Ok(Applied::ServiceDeleted(*key))
            }
            Command::Clear => {
                log.push(UndoStep::Cleared(std::mem::take(&mut self.services)));
                Ok(Applied::Cleared)
            }
            Command::AddServer { svc, dest } => {
                let service = self.service_mut(svc).ok_or(CtlError::ServiceNotDefined)?;
                // The kernel's order: thresholds, then an existing server,
                // then the address of a new one.
                check_thresholds(dest)?;
                if service.dest(dest.addr, dest.port).is_some() {
                    return Err(CtlError::DestExists);
                }
                check_unicast(dest.addr)?;
                let dest = check_dest(&service.key, dest, gates)?;
                let (addr, port) = (dest.addr, dest.port);
                service.dests.push(dest);
                log.push(UndoStep::DestAdded(*svc));
                Ok(Applied::DestAdded {
                    svc: *svc,
                    addr,
                    port,
                })
            }
            Command::EditServer { svc, dest } => {
                let service = self.service_mut(svc).ok_or(CtlError::ServiceNotDefined)?;
                check_thresholds(dest)?;
                if service.dest(dest.addr, dest.port).is_none() {
                    return Err(CtlError::NoSuchDest);
                }
                let dest = check_dest(&service.key, dest, gates)?;
                let i = service
                    .dests
                    .iter()
                    .position(|d| d.addr == dest.addr && d.port == dest.port)
                    .ok_or(CtlError::NoSuchDest)?;
                let (addr, port) = (dest.addr, dest.port);
                let old = std::mem::replace(&mut service.dests[i], dest);
                log.push(UndoStep::DestEdited(*svc, i, old));
                Ok(Applied::DestEdited {
                    svc: *svc,
                    addr,
                    port,
                })
            }
            Command::DeleteServer { svc, addr, port } => {
                let service = self.service_mut(svc).ok_or(CtlError::ServiceNotDefined)?;
                let i = service
                    .dests
                    .iter()
                    .position(|d| d.addr == *addr && d.port == *port)
                    .ok_or(CtlError::NoSuchDest)?;
                let old = service.dests.remove(i);
                log.push(UndoStep::DestDeleted(*svc, i, old));
                Ok(Applied::DestDeleted {
                    svc: *svc,
                    addr: *addr,
                    port: *port,
                })
            }
            Command::Zero(key) => {
                if let Some(k) = key {
                    self.service(k).ok_or(CtlError::NoSuchService)?;
                }
                Ok(Applied::Zeroed(*key))
            }
            Command::SetTimeouts { tcp, tcp_fin, udp } => {
                for (opt, v) in [("tcp", tcp), ("tcpfin", tcp_fin), ("udp", udp)] {
                    check_range(
                        &format!("--set {opt}"),
                        u64::from(*v),
                        0,
                        MAX_TIMEOUT.into(),
                    )?;
                }
                // 0 keeps the current value, as in the kernel.
                log.push(UndoStep::Timeouts(self.timeouts));
                let t = &mut self.timeouts;
                for (slot, v) in [
                    (&mut t.tcp, tcp),
                    (&mut t.tcp_fin, tcp_fin),
                    (&mut t.udp, udp),
                ] {
                    if *v != 0 {
                        *slot = *v;
                    }
                }
                Ok(Applied::TimeoutsSet(self.timeouts))
            }
            Command::List(opts) => {
                if let Some(k) = &opts.service {
                    self.service(k).ok_or(CtlError::NoSuchService)?;
                }
                Ok(Applied::Nothing)
            }
            Command::Save { .. } | Command::Help | Command::Version => Ok(Applied::Nothing),
            Command::Restore => Err(CtlError::RestoreNeedsInput),
            // The daemon runs these itself (they change no configuration);
            // here only a `-R` line can bring them.
            Command::StartDaemon(_) | Command::StopDaemon(_) => Err(CtlError::Unsupported(
                "--start-daemon/--stop-daemon in -R input (run them as commands)",
            )),
        }
    }

    /// Applies a batch all-or-nothing with the default gates: the commands
    /// run in place, and if one fails the ones before it are undone.
    /// Queries and `-R` are refused. `cmds` pairs each command with its line
    /// number for the error.
    pub fn apply_batch(&mut self, cmds: &[(usize, Command)]) -> Result<Vec<Applied>, LineError> {
        self.apply_batch_with(cmds, &Gates::default())
    }

    /// [`Config::apply_batch`] with explicit gates.
    pub fn apply_batch_with(
        &mut self,
        cmds: &[(usize, Command)],
        gates: &Gates,
    ) -> Result<Vec<Applied>, LineError> {
        let mut undo = Undo::new();
        match self.apply_batch_logged(cmds, gates, &mut undo) {
            Ok(done) => Ok(done),
            Err(e) => {
                self.undo(undo);
                Err(e)
            }
        }
    }

    /// Applies a batch in place, recording every applied command in `undo`;
    /// on error returns at the bad line, and the caller undoes.
    fn apply_batch_logged(
        &mut self,
        cmds: &[(usize, Command)],
        gates: &Gates,
        undo: &mut Undo,
    ) -> Result<Vec<Applied>, LineError> {
        let mut done = Vec::with_capacity(cmds.len());
        for (line, cmd) in cmds {
            let at = |error| LineError { line: *line, error };
            // ipvsadm answers a nested -R with its usage hint.
            if *cmd == Command::Restore {
                return Err(at(CtlError::TryHelp));
            }
            if let Some(name) = cmd.query_name() {
                return Err(at(CtlError::NotInScript(name)));
            }
            done.push(self.apply_logged(cmd, gates, undo).map_err(at)?);
        }
        Ok(done)
    }

    /// [`Config::restore_with`], recording the applied commands in `undo`
    /// so the caller can back the whole batch out later. On error the
    /// configuration is unchanged and `undo` is as it was.
    pub fn restore_logged(
        &mut self,
        text: &str,
        gates: &Gates,
        undo: &mut Undo,
    ) -> Result<Vec<Applied>, LineError> {
        let cmds = super::args::parse_script(text)?;
        let mut mine = Undo::new();
        match self.apply_batch_logged(&cmds, gates, &mut mine) {
            Ok(done) => {
                undo.steps.append(&mut mine.steps);
                Ok(done)
            }
            Err(e) => {
                self.undo(mine);
                Err(e)
            }
        }
    }

    /// Parses and applies a restore script (`-R` input, ipvsadm-save
    /// format) all-or-nothing with the default gates.
    pub fn restore(&mut self, text: &str) -> Result<Vec<Applied>, LineError> {
        self.restore_with(text, &Gates::default())
    }

    /// [`Config::restore`] with explicit gates.
    pub fn restore_with(&mut self, text: &str, gates: &Gates) -> Result<Vec<Applied>, LineError> {
        let cmds = super::args::parse_script(text)?;
        self.apply_batch_with(&cmds, gates)
    }

    /// Builds a configuration from a file in ipvsadm-save format
    /// (`uvs run --config FILE`).
    pub fn from_script(text: &str) -> Result<Config, LineError> {
        let mut cfg = Config::new();
        cfg.restore(text)?;
        Ok(cfg)
    }
}

fn check_range(opt: &str, v: u64, min: u64, max: u64) -> Result<(), CtlError> {
    if v < min || v > max {
        return Err(CtlError::InvalidNumber {
            opt: opt.to_string(),
            value: v.to_string(),
            min,
            max,
        });
    }
    Ok(())
}

/// `-A`/`-E` validation (ipvsadm's client checks, then the kernel's), then
/// the gates. Returns the service without servers.
fn build_service(o: &ServiceOpts, gates: &Gates) -> Result<ServiceConfig, CtlError> {
    let family = o.key.family();
    match o.key {
        SvcKey::Addr { port: 0, .. } if o.persistent.is_none() => {
            return Err(CtlError::ZeroPortNotPersistent)
        }
        SvcKey::Fwmark { mark: 0, .. } => {
            return Err(CtlError::InvalidNumber {
                opt: "-f".into(),
                value: "0".into(),
                min: 1,
                max: u32::MAX.into(),
            })
        }
        _ => {}
    }
    if o.ops && !matches!(o.key.proto(), None | Some(Proto::Udp)) {
        return Err(CtlError::OpsNotUdp);
    }
    if let Some(t) = o.persistent {
        check_range("-p", t.into(), 1, MAX_TIMEOUT.into())?;
    }
    let netmask = o.netmask.unwrap_or(Netmask::default_for(family));
    match netmask {
        Netmask::V6(p) if family == Family::V6 && (1..=128).contains(&p) => {}
        Netmask::V4(_) if family == Family::V4 => {}
        Netmask::V4(m) => return Err(CtlError::InvalidNetmask(m.to_string())),
        Netmask::V6(p) => return Err(CtlError::InvalidNetmask(p.to_string())),
    }
    let sched_flags = canonical_sched_flags(&o.sched, &o.sched_flags)?;
    (gates.scheduler)(&o.sched)?;
    if let Some(pe) = &o.pe {
        (gates.pe)(pe)?;
        if o.persistent.is_none() || !matches!(o.key.proto(), None | Some(Proto::Udp)) {
            return Err(CtlError::PeNeedsPersistentUdp(pe.clone()));
        }
    }
    Ok(ServiceConfig {
        key: o.key,
        sched: o.sched.clone(),
        sched_flags,
        persistent: o.persistent,
        netmask,
        ops: o.ops,
        pe: o.pe.clone(),
        dests: Vec::new(),
    })
}

/// `-a`/`-e` validation, normalising `tun` (a tunnelling server always
/// carries its tunnel options), then the forwarding gate.
fn check_dest(key: &SvcKey, d: &DestConfig, gates: &Gates) -> Result<DestConfig, CtlError> {
    let mut d = d.clone();
    check_range("-w", d.weight.into(), 0, 65535)?;
    if d.fwd == FwdMethod::Tunnel {
        let tun = d.tun.unwrap_or_default();
        tun.validate()?;
        d.tun = Some(tun);
    } else if d.tun.is_some() {
        return Err(CtlError::TunnelOptionsNeedIpip);
    }
    if Family::of(d.addr) != key.family() && d.fwd != FwdMethod::Tunnel {
        return Err(CtlError::FamilyMismatch);
    }
    if matches!(d.fwd, FwdMethod::Route | FwdMethod::Tunnel)
        && !key.is_fwmark()
        && d.port != key.port()
    {
        return Err(CtlError::DestPortMismatch {
            dest: d.port,
            svc: key.port(),
        });
    }
    check_thresholds(&d)?;
    (gates.fwd)(d.fwd)?;
    Ok(d)
}

/// The kernel refuses a lower threshold above the upper one (ERANGE), also
/// when the upper one is 0 (no limit).
fn check_thresholds(d: &DestConfig) -> Result<(), CtlError> {
    if d.l_threshold > d.u_threshold {
        return Err(CtlError::ThresholdOrder {
            lower: d.l_threshold,
            upper: d.u_threshold,
        });
    }
    Ok(())
}

/// The kernel's check of a new real server's address (EINVAL): IPv4 must
/// be unicast or local (not 0.0.0.0/8, 255.255.255.255 or multicast);
/// IPv6 must be unicast and not link-local (not `::`, multicast,
/// `::ffff:0:0/96`, `fe80::/10`). A subnet's broadcast address, which the
/// kernel finds in the director's routes, is checked by the daemon
/// (`control::dest_check`).
pub fn check_unicast(addr: IpAddr) -> Result<(), CtlError> {
    let ok = match addr {
        IpAddr::V4(a) => !(a.octets()[0] == 0 || a.is_broadcast() || a.is_multicast()),
        IpAddr::V6(a) => {
            let s = a.segments();
            let mapped = s[..5].iter().all(|&w| w == 0) && s[5] == 0xffff;
            let link_local = s[0] & 0xffc0 == 0xfe80;
            !(a.is_unspecified() || a.is_multicast() || mapped || link_local)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(CtlError::NotUnicast)
    }
}
