//! ipvsadm 1.31's command line: argv words → [`Command`], with ipvsadm's
//! rules, its order of checks and its messages.
//!
//! Words are read as popt reads them for ipvsadm: short options (`-t ADDR`,
//! `-tADDR`, clusters such as `-Ln`), long options (`--tcp-service ADDR`,
//! `--tcp-service=ADDR`), `--` ending the options, `-p` taking the next
//! word as its timeout unless that starts with `-`. The first option must
//! be the command (else "Try `uvsadm -h' …"); `-h` and `-v` there answer at
//! once. The other options then come in any order and are checked one by
//! one as they come, then against ipvsadm's command × option table, then
//! per command — so the first error ipvsadm would print is the one given.
//!
//! Differences from ipvsadm, all harmless to its scripts:
//! * A server without a port takes the service's port wherever `-r` stands
//!   (ipvsadm copies the port of a service named before `-r` only).
//! * Addresses and ports are numeric here; `uvsadm` replaces host and port
//!   names by numbers before it sends a command
//!   ([`super::names::resolve`]).
//! * A leading `ipvsadm`/`uvsadm` word is skipped (as in `-R` input).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use uvs_sched::FwdMethod;

use super::format::ListOpts;
use super::model::{
    DestConfig, Family, Netmask, Proto, SvcKey, TunCsum, TunOpts, TunType, DEFAULT_PERSISTENCE,
    DEFAULT_SCHED, MAX_TIMEOUT,
};
pub use super::options::CmdKind;
use super::options::{tun_usage, usage_of, Key, Opt, Popt, Use};
use super::words::{c_atoi, inet_aton, number_in, parse_service};
use super::{CtlError, LineError};

/// The attributes `-A`/`-E` give a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOpts {
    /// The service.
    pub key: SvcKey,
    /// Scheduler (`-s`, default `wlc`).
    pub sched: String,
    /// `-b` words as given.
    pub sched_flags: Vec<String>,
    /// `-p [T]`: persistence timeout.
    pub persistent: Option<u32>,
    /// `-M`; `None` = one client address.
    pub netmask: Option<Netmask>,
    /// `-o`.
    pub ops: bool,
    /// `--pe NAME`.
    pub pe: Option<String>,
}

impl ServiceOpts {
    /// Defaults for a service key: `wlc`, not persistent.
    pub fn new(key: SvcKey) -> ServiceOpts {
        ServiceOpts {
            key,
            sched: DEFAULT_SCHED.to_string(),
            sched_flags: Vec::new(),
            persistent: None,
            netmask: None,
            ops: false,
            pe: None,
        }
    }
}

/// One parsed ipvsadm command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `-A`.
    AddService(ServiceOpts),
    /// `-E` (replaces every attribute; servers are kept).
    EditService(ServiceOpts),
    /// `-D`.
    DeleteService(SvcKey),
    /// `-C`.
    Clear,
    /// `-a`.
    AddServer {
        /// The service.
        svc: SvcKey,
        /// The server with all its attributes.
        dest: DestConfig,
    },
    /// `-e` (replaces every attribute of the server).
    EditServer {
        /// The service.
        svc: SvcKey,
        /// The server with all its attributes.
        dest: DestConfig,
    },
    /// `-d`.
    DeleteServer {
        /// The service.
        svc: SvcKey,
        /// Server address.
        addr: IpAddr,
        /// Server port.
        port: u16,
    },
    /// `-L`/`-l` (also `-c`, `--timeout`, `--daemon` views).
    List(ListOpts),
    /// `-S`.
    Save {
        /// `-n` (uvs always prints numerically).
        numeric: bool,
    },
    /// `-R`: commands follow on standard input.
    Restore,
    /// `-Z [SERVICE]`.
    Zero(Option<SvcKey>),
    /// `--set TCP TCPFIN UDP` (0 keeps a value).
    SetTimeouts {
        /// TCP ESTABLISHED timeout.
        tcp: u32,
        /// TCP FIN_WAIT timeout.
        tcp_fin: u32,
        /// UDP timeout.
        udp: u32,
    },
    /// `--start-daemon master|backup` with its options.
    StartDaemon(SyncConfig),
    /// `--stop-daemon master|backup`.
    StopDaemon(SyncRole),
    /// `-h`.
    Help,
    /// `-v`.
    Version,
}

/// Which side of connection sync a daemon is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncRole {
    /// Sends the connections of this director.
    Master,
    /// Installs what a master sends.
    Backup,
}

impl SyncRole {
    /// `master` or `backup`, as ipvsadm writes it.
    pub fn name(self) -> &'static str {
        match self {
            SyncRole::Master => "master",
            SyncRole::Backup => "backup",
        }
    }
}

/// A sync daemon's options, as ipvsadm passes them to the kernel: what was
/// not given is `None` (the daemon picks the kernel's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// Master or backup.
    pub role: SyncRole,
    /// `--mcast-interface` (ipvsadm's default: `eth0`).
    pub ifname: String,
    /// `--syncid` (default 0: a backup then accepts every sync ID).
    pub syncid: u8,
    /// `--sync-maxlen`.
    pub maxlen: Option<u16>,
    /// `--mcast-group`.
    pub group: Option<IpAddr>,
    /// `--mcast-port`.
    pub port: Option<u16>,
    /// `--mcast-ttl`.
    pub ttl: Option<u8>,
    /// `--sync-peer` (a uvs extension; ipvsadm and the kernel sync only by
    /// multicast): the other director's unicast address. A master sends to
    /// it instead of the group; a backup takes messages from it only.
    pub peer: Option<IpAddr>,
}

impl Command {
    /// For commands that only read (or, for `-R`, need input), the option
    /// naming them; `None` for commands that change the configuration.
    pub fn query_name(&self) -> Option<&'static str> {
        match self {
            Command::List(_) => Some("-L"),
            Command::Save { .. } => Some("-S"),
            Command::Restore => Some("-R"),
            Command::Help => Some("-h"),
            Command::Version => Some("-v"),
            _ => None,
        }
    }
}

/// Whether a word is the program name ipvsadm scripts may start with.
fn is_program_word(w: &str) -> bool {
    let base = w.rsplit('/').next().unwrap_or(w);
    base == "ipvsadm" || base == "uvsadm"
}

/// The words after a leading program word.
pub(crate) fn command_words(argv: &[String]) -> &[String] {
    match argv.first() {
        Some(w) if is_program_word(w) => &argv[1..],
        _ => argv,
    }
}

/// Everything the options of one command said, as ipvsadm collects it.
struct Given {
    cmd: CmdKind,
    seen: u64,
    svc: Option<SvcKey>,
    sched: Option<String>,
    persistent: Option<u32>,
    netmask: Netmask,
    server: Option<(IpAddr, Option<u16>)>,
    fwd: FwdMethod,
    weight: u32,
    u_threshold: u32,
    l_threshold: u32,
    ops: bool,
    pe: Option<String>,
    sched_flags: Option<String>,
    tun_type: TunType,
    tun_port: Option<u16>,
    tun_csum: TunCsum,
    sync: SyncConfig,
}

impl Given {
    fn has(&self, o: Opt) -> bool {
        self.seen & o.bit() != 0
    }

    /// ipvsadm's `set_option`: each option once.
    fn set(&mut self, o: Opt) -> Result<(), CtlError> {
        if self.has(o) {
            return Err(CtlError::DuplicateOption(o.name()));
        }
        self.seen |= o.bit();
        Ok(())
    }

    /// One option, checked as ipvsadm checks it when it reads it.
    fn take(&mut self, key: Key, value: Option<&str>, word: String) -> Result<(), CtlError> {
        let v = value.unwrap_or("");
        match key {
            Key::Cmd(_) | Key::Help | Key::Version => return Err(CtlError::InvalidOption(word)),
            Key::Sort => {}
            Key::Svc(proto) => {
                self.set(Opt::Service)?;
                let (addr, port) = parse_service(v).ok_or(CtlError::IllegalVirtualAddr)?;
                if addr.is_ipv6() {
                    self.netmask = Netmask::V6(128);
                }
                self.svc = Some(SvcKey::Addr {
                    proto,
                    addr,
                    port: port.unwrap_or(0),
                });
            }
            Key::Fwmark => {
                self.set(Opt::Service)?;
                let mark = number_in(v, 1, u32::MAX.into())
                    .ok_or_else(|| CtlError::InvalidFwmark(v.to_string()))?;
                self.svc = Some(SvcKey::Fwmark {
                    mark: mark as u32,
                    family: Family::V4,
                });
            }
            Key::Ipv6 => match &mut self.svc {
                Some(SvcKey::Fwmark { family, .. }) => {
                    *family = Family::V6;
                    self.netmask = Netmask::V6(128);
                }
                _ => return Err(CtlError::SixBeforeF),
            },
            Key::Fwd(m) => {
                self.set(Opt::Forward)?;
                self.fwd = m;
            }
            Key::Plain(o) => {
                self.set(o)?;
                self.plain(o, value, v)?;
            }
        }
        Ok(())
    }

    fn plain(&mut self, o: Opt, value: Option<&str>, v: &str) -> Result<(), CtlError> {
        let int_max = i64::from(i32::MAX);
        match o {
            Opt::Scheduler => self.sched = Some(v.to_string()),
            Opt::Persistent => {
                self.persistent = Some(match value {
                    None => DEFAULT_PERSISTENCE,
                    Some(t) => timeout(t, 1)?,
                })
            }
            Opt::Netmask => {
                self.netmask = if self.svc.map(|s| s.family()) == Some(Family::V6) {
                    let p = c_atoi(v);
                    if !(1..=128).contains(&p) {
                        return Err(CtlError::IllegalV6Netmask);
                    }
                    Netmask::V6(p as u8)
                } else {
                    Netmask::V4(inet_aton(v).ok_or(CtlError::IllegalPersistentMask)?)
                }
            }
            Opt::Server => self.server = Some(parse_service(v).ok_or(CtlError::IllegalRealAddr)?),
            Opt::Weight => {
                self.weight = number_in(v, 0, 65535).ok_or(CtlError::IllegalWeight)? as u32
            }
            Opt::UThreshold => {
                self.u_threshold =
                    number_in(v, 0, int_max).ok_or(CtlError::IllegalUThreshold)? as u32
            }
            Opt::LThreshold => {
                self.l_threshold =
                    number_in(v, 0, int_max).ok_or(CtlError::IllegalLThreshold)? as u32
            }
            Opt::SyncId => {
                self.sync.syncid =
                    number_in(v, 0, 255).ok_or(CtlError::IllegalDaemonValue("syncid"))? as u8;
            }
            Opt::McastIf => self.sync.ifname = v.to_string(),
            Opt::McastGroup => self.sync.group = Some(mcast_group(v)?),
            Opt::SyncPeer => self.sync.peer = Some(sync_peer(v)?),
            Opt::McastPort => {
                self.sync.port = Some(
                    number_in(v, 1, 65535).ok_or(CtlError::IllegalDaemonValue("mcast-port"))?
                        as u16,
                );
            }
            Opt::McastTtl => {
                self.sync.ttl = Some(
                    number_in(v, 1, 255).ok_or(CtlError::IllegalDaemonValue("mcast-ttl"))? as u8,
                );
            }
            Opt::SyncMaxlen => {
                self.sync.maxlen = Some(
                    number_in(v, 1, 65535 - 20 - 8)
                        .ok_or(CtlError::IllegalDaemonValue("sync-maxlen"))?
                        as u16,
                );
            }
            Opt::Ops => self.ops = true,
            Opt::Pe => self.pe = Some(v.to_string()),
            Opt::SchedFlags => self.sched_flags = Some(v.to_string()),
            Opt::TunType => {
                self.tun_type = match v {
                    "ipip" => TunType::Ipip,
                    "gue" => TunType::Gue,
                    "gre" => TunType::Gre,
                    _ => return Err(CtlError::IllegalTunType),
                }
            }
            Opt::TunPort => {
                self.tun_port = Some(number_in(v, 1, 65535).ok_or(CtlError::IllegalTunPort)? as u16)
            }
            Opt::TunNoCsum => self.tun_csum = TunCsum::NoCsum,
            Opt::TunCsum => self.tun_csum = TunCsum::Csum,
            Opt::TunRemCsum => self.tun_csum = TunCsum::RemCsum,
            Opt::Numeric
            | Opt::Connection
            | Opt::Service
            | Opt::Forward
            | Opt::Timeout
            | Opt::Daemon
            | Opt::Stats
            | Opt::Rate
            | Opt::Thresholds
            | Opt::PersistentConn
            | Opt::NoSort
            | Opt::Exact
            | Opt::Json
            | Opt::TunInfo => {}
        }
        Ok(())
    }

    /// ipvsadm's `generic_opt_check`: the command × option table, options
    /// in table order.
    fn check_table(&self) -> Result<(), CtlError> {
        let cmd = self.cmd.ipvsadm_name();
        let mut first_exclusive: Option<Opt> = None;
        for o in Opt::ALL {
            match (usage_of(self.cmd, o), self.has(o)) {
                (Use::Compulsory, false) => {
                    return Err(CtlError::NeedOption { opt: o.name(), cmd })
                }
                (Use::Illegal, true) => return Err(CtlError::IllegalOption { opt: o.name(), cmd }),
                (Use::Exclusive, true) => match first_exclusive {
                    None => first_exclusive = Some(o),
                    Some(other) => {
                        return Err(CtlError::OptionConflict {
                            opt: o.name(),
                            other: other.name(),
                            cmd,
                        })
                    }
                },
                _ => {}
            }
        }
        Ok(())
    }

    /// ipvsadm's `tunnel_opt_check` for the server's tunnel type.
    fn check_tunnel(&self) -> Result<(), CtlError> {
        let tun = self.tun_type.name();
        let mut first: Option<Opt> = None;
        for o in [Opt::TunPort, Opt::TunNoCsum, Opt::TunCsum, Opt::TunRemCsum] {
            match (tun_usage(self.tun_type, o), self.has(o)) {
                (Use::Compulsory, false) => {
                    return Err(CtlError::TunNeedOption { opt: o.name(), tun })
                }
                (Use::Illegal, true) => {
                    return Err(CtlError::TunIllegalOption { opt: o.name(), tun })
                }
                (Use::Exclusive, true) => match first {
                    None => first = Some(o),
                    Some(other) => {
                        return Err(CtlError::TunOptionConflict {
                            opt: o.name(),
                            other: other.name(),
                            tun,
                        })
                    }
                },
                _ => {}
            }
        }
        Ok(())
    }
}

/// ipvsadm's `parse_timeout`.
fn timeout(v: &str, min: i64) -> Result<u32, CtlError> {
    number_in(v, min, MAX_TIMEOUT.into())
        .map(|t| t as u32)
        .ok_or_else(|| CtlError::InvalidTimeout(v.to_string()))
}

/// `--sync-peer`: a unicast address of either family.
fn sync_peer(v: &str) -> Result<IpAddr, CtlError> {
    v.parse::<IpAddr>()
        .ok()
        .filter(|a| !a.is_multicast() && !a.is_unspecified())
        .ok_or(CtlError::IllegalDaemonValue("sync-peer"))
}

/// `--mcast-group`: a multicast address of either family.
fn mcast_group(v: &str) -> Result<IpAddr, CtlError> {
    let a = if v.contains(':') {
        v.parse::<Ipv6Addr>()
            .ok()
            .filter(|a| a.is_multicast())
            .map(IpAddr::V6)
    } else {
        v.parse::<Ipv4Addr>()
            .ok()
            .filter(|a| a.is_multicast())
            .map(IpAddr::V4)
    };
    if let Some(a) = a {
        Ok(a)
    } else {
        Err(CtlError::InvalidMcastGroup {
            v6: v.contains(':'),
            value: v.to_string(),
        })
    }
}

/// ipvsadm's `parse_sched_flags`: comma-separated words, each known and,
/// for the sh/mh ones, matching the scheduler.
fn sched_flag_words(sched: &str, text: &str) -> Result<Vec<String>, CtlError> {
    let mut out = Vec::new();
    let words: Vec<&str> = text.split(',').filter(|w| !w.is_empty()).collect();
    if words.is_empty() {
        return Err(CtlError::InvalidSchedFlag(String::new()));
    }
    for f in words {
        match f {
            "flag-1" | "flag-2" | "flag-3" => {}
            "sh-fallback" | "sh-port" | "mh-fallback" | "mh-port" => {
                if sched != &f[..2] {
                    return Err(CtlError::IncompatibleSchedFlag(f.to_string()));
                }
            }
            _ => return Err(CtlError::InvalidSchedFlag(f.to_string())),
        }
        out.push(f.to_string());
    }
    Ok(out)
}

/// Parses one command line: argv without the program name (a leading
/// `ipvsadm`/`uvsadm` word is skipped). No words at all means `-L`, as for
/// ipvsadm.
pub fn parse(argv: &[String]) -> Result<Command, CtlError> {
    let words = command_words(argv);
    if words.is_empty() {
        return Ok(Command::List(ListOpts::default()));
    }
    let mut p = Popt::new(words);
    // The first option is the command; anything else there is a usage error.
    let mut role = SyncRole::Master;
    let cmd = match p.next_opt() {
        Some(Ok((d, v))) => match d.key {
            Key::Help => return Ok(Command::Help),
            Key::Version => return Ok(Command::Version),
            Key::Cmd(c) => {
                if let (CmdKind::StartDaemon | CmdKind::StopDaemon, Some(v)) = (c, v) {
                    role = match p.value(v) {
                        "master" => SyncRole::Master,
                        "backup" => SyncRole::Backup,
                        _ => return Err(CtlError::IllegalDaemonState(c == CmdKind::StartDaemon)),
                    };
                }
                c
            }
            _ => return Err(CtlError::TryHelp),
        },
        _ => return Err(CtlError::TryHelp),
    };
    let mut g = Given {
        cmd,
        seen: 0,
        svc: None,
        sched: None,
        persistent: None,
        netmask: Netmask::V4(Ipv4Addr::BROADCAST),
        server: None,
        fwd: FwdMethod::Route,
        weight: 1,
        u_threshold: 0,
        l_threshold: 0,
        ops: false,
        pe: None,
        sched_flags: None,
        tun_type: TunType::Ipip,
        tun_port: None,
        tun_csum: TunCsum::NoCsum,
        sync: SyncConfig {
            role,
            ifname: "eth0".to_string(),
            syncid: 0,
            maxlen: None,
            group: None,
            port: None,
            ttl: None,
            peer: None,
        },
    };
    while let Some(next) = p.next_opt() {
        let (d, v) = next?;
        let value = v.map(|v| p.value(v));
        g.take(d.key, value, p.last_word())?;
    }
    let mut args = p.args.iter().map(|&i| words[i].as_str());
    let set = if cmd == CmdKind::Set {
        match (args.next(), args.next(), args.next()) {
            (Some(a), Some(b), Some(c)) => Some((timeout(a, 0)?, timeout(b, 0)?, timeout(c, 0)?)),
            _ => return Err(CtlError::SetNeedsThree),
        }
    } else {
        None
    };
    if let Some(a) = args.next() {
        return Err(CtlError::UnexpectedArgument(a.to_string()));
    }
    let sched = g.sched.clone().unwrap_or_else(|| DEFAULT_SCHED.to_string());
    let sched_flags = match g.sched_flags.as_deref() {
        Some(t) if !t.is_empty() => sched_flag_words(&sched, t)?,
        _ => Vec::new(),
    };
    g.check_table()?;
    build(g, sched, sched_flags, set)
}

/// The per-command checks after the table, then the command itself.
fn build(
    g: Given,
    sched: String,
    sched_flags: Vec<String>,
    set: Option<(u32, u32, u32)>,
) -> Result<Command, CtlError> {
    // The table has made sure a service is there where one is needed.
    let svc = g.svc;
    let need_svc = || {
        svc.ok_or(CtlError::NeedOption {
            opt: Opt::Service.name(),
            cmd: g.cmd.ipvsadm_name(),
        })
    };
    Ok(match g.cmd {
        CmdKind::AddService | CmdKind::EditService => {
            let key = need_svc()?;
            if matches!(key, SvcKey::Addr { port: 0, .. }) && g.persistent.is_none() {
                return Err(CtlError::ZeroPortNotPersistent);
            }
            if g.ops && !matches!(key.proto(), None | Some(Proto::Udp)) {
                return Err(CtlError::OpsNotUdp);
            }
            let netmask = (g.has(Opt::Netmask) || key.family() == Family::V6)
                .then_some(g.netmask)
                .filter(|m| *m != Netmask::default_for(key.family()));
            let opts = ServiceOpts {
                key,
                sched,
                sched_flags,
                persistent: g.persistent,
                netmask,
                ops: g.ops,
                pe: g.pe.clone(),
            };
            if g.cmd == CmdKind::AddService {
                Command::AddService(opts)
            } else {
                Command::EditService(opts)
            }
        }
        CmdKind::DeleteService => Command::DeleteService(need_svc()?),
        CmdKind::Clear => Command::Clear,
        CmdKind::AddServer | CmdKind::EditServer | CmdKind::DeleteServer => {
            let svc = need_svc()?;
            let (addr, port) = g.server.ok_or(CtlError::NeedOption {
                opt: Opt::Server.name(),
                cmd: g.cmd.ipvsadm_name(),
            })?;
            let mut port = port.unwrap_or(svc.port());
            if g.cmd == CmdKind::DeleteServer {
                return Ok(Command::DeleteServer { svc, addr, port });
            }
            if !svc.is_fwmark() && matches!(g.fwd, FwdMethod::Route | FwdMethod::Tunnel) {
                port = svc.port();
            }
            if Family::of(addr) != svc.family() && g.fwd != FwdMethod::Tunnel {
                return Err(CtlError::FamilyMismatch);
            }
            let tun_opts = Opt::TunType.bit()
                | Opt::TunPort.bit()
                | Opt::TunNoCsum.bit()
                | Opt::TunCsum.bit()
                | Opt::TunRemCsum.bit();
            if g.seen & tun_opts != 0 && g.fwd != FwdMethod::Tunnel {
                return Err(CtlError::TunnelOptionsNeedIpip);
            }
            g.check_tunnel()?;
            let dest = DestConfig {
                addr,
                port,
                fwd: g.fwd,
                weight: g.weight,
                u_threshold: g.u_threshold,
                l_threshold: g.l_threshold,
                tun: (g.fwd == FwdMethod::Tunnel).then_some(TunOpts {
                    kind: g.tun_type,
                    port: g.tun_port,
                    csum: g.tun_csum,
                }),
            };
            if g.cmd == CmdKind::AddServer {
                Command::AddServer { svc, dest }
            } else {
                Command::EditServer { svc, dest }
            }
        }
        CmdKind::List => {
            let has = |o: Opt| g.has(o);
            let views = has(Opt::Connection) || has(Opt::Timeout) || has(Opt::Daemon);
            let columns = has(Opt::Stats) || has(Opt::Rate) || has(Opt::Thresholds);
            if (views && columns)
                || ((has(Opt::Timeout) || has(Opt::Daemon)) && has(Opt::PersistentConn))
            {
                return Err(CtlError::ListConflict);
            }
            Command::List(ListOpts {
                service: svc,
                numeric: has(Opt::Numeric),
                connection: has(Opt::Connection),
                stats: has(Opt::Stats),
                rate: has(Opt::Rate),
                thresholds: has(Opt::Thresholds),
                persistent_conn: has(Opt::PersistentConn),
                timeout: has(Opt::Timeout),
                daemon: has(Opt::Daemon),
                tun_info: has(Opt::TunInfo),
                exact: has(Opt::Exact),
                json: has(Opt::Json),
                nosort: has(Opt::NoSort),
            })
        }
        CmdKind::Save => Command::Save {
            numeric: g.has(Opt::Numeric),
        },
        CmdKind::Restore => Command::Restore,
        CmdKind::Zero => Command::Zero(svc),
        CmdKind::Set => {
            let (tcp, tcp_fin, udp) = set.ok_or(CtlError::SetNeedsThree)?;
            Command::SetTimeouts { tcp, tcp_fin, udp }
        }
        CmdKind::StartDaemon => Command::StartDaemon(g.sync),
        CmdKind::StopDaemon => Command::StopDaemon(g.sync.role),
    })
}

/// Parses `-R` input / an ipvsadm-save file: one command a line, blank
/// lines and `#` comments ignored, a leading `ipvsadm`/`uvsadm` word
/// allowed. Returns each command with its 1-based line number.
pub fn parse_script(text: &str) -> Result<Vec<(usize, Command)>, LineError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let words: Vec<String> = trimmed.split_whitespace().map(String::from).collect();
        // A line holding only the program word is no command (ipvsadm skips it).
        if words.len() == 1 && is_program_word(&words[0]) {
            continue;
        }
        let cmd = parse(&words).map_err(|error| LineError {
            line: line_no,
            error,
        })?;
        out.push((line_no, cmd));
    }
    Ok(out)
}
