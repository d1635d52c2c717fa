//! ipvsadm's command line: argv words → [`Command`].
//!
//! Accepted forms: short options (`-t ADDR`, `-tADDR`, clusters such as
//! `-Ln`), long options (`--tcp-service ADDR`, `--tcp-service=ADDR`), an
//! optional leading `ipvsadm`/`uvsadm` word (as in `-R` input), options in
//! any order. Each option is checked against the command it is used with,
//! like ipvsadm's command × option table, and every error names the word
//! at fault. Only syntax and per-command rules live here; checks that need
//! the service (address family, ports, thresholds, gates) are in
//! [`super::model`] so programmatic commands get them too.
//!
//! Addresses and ports must be numeric: the daemon never resolves names.

use std::mem::discriminant;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use uvs_sched::FwdMethod;

use super::format::ListOpts;
use super::model::{
    DestConfig, Family, Netmask, Proto, SvcKey, TunCsum, TunOpts, TunType, DEFAULT_PERSISTENCE,
    DEFAULT_SCHED, MAX_TIMEOUT,
};
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
    /// `-h`.
    Help,
    /// `-v`.
    Version,
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

/// The command options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdKind {
    /// `-A`
    AddService,
    /// `-E`
    EditService,
    /// `-D`
    DeleteService,
    /// `-C`
    Clear,
    /// `-a`
    AddServer,
    /// `-e`
    EditServer,
    /// `-d`
    DeleteServer,
    /// `-L`
    List,
    /// `-S`
    Save,
    /// `-R`
    Restore,
    /// `-Z`
    Zero,
    /// `--set`
    Set,
    /// `-h`
    Help,
    /// `-v`
    Version,
    /// `--start-daemon`
    StartDaemon,
    /// `--stop-daemon`
    StopDaemon,
}

impl CmdKind {
    /// The short spelling used in messages.
    pub fn name(self) -> &'static str {
        match self {
            CmdKind::AddService => "-A",
            CmdKind::EditService => "-E",
            CmdKind::DeleteService => "-D",
            CmdKind::Clear => "-C",
            CmdKind::AddServer => "-a",
            CmdKind::EditServer => "-e",
            CmdKind::DeleteServer => "-d",
            CmdKind::List => "-L",
            CmdKind::Save => "-S",
            CmdKind::Restore => "-R",
            CmdKind::Zero => "-Z",
            CmdKind::Set => "--set",
            CmdKind::Help => "-h",
            CmdKind::Version => "-v",
            CmdKind::StartDaemon => "--start-daemon",
            CmdKind::StopDaemon => "--stop-daemon",
        }
    }
}

/// Which service option: `-t`, `-u`, `--sctp-service`, `-f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SvcOpt {
    Proto(Proto),
    Fwmark,
}

/// Option identities. Variants with a payload form one group (two of them
/// count as a duplicate, like ipvsadm's single "forwarding-method" option).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cmd(CmdKind),
    Service(SvcOpt),
    Ipv6,
    Sched,
    Persistent,
    Netmask,
    SchedFlags,
    Ops,
    Pe,
    Server,
    Fwd(FwdMethod),
    Weight,
    UThreshold,
    LThreshold,
    TunType,
    TunPort,
    TunCsum(TunCsum),
    Numeric,
    Connection,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    Timeout,
    Daemon,
    TunInfo,
    Exact,
    /// `--json` (uvs): the listing as JSON.
    Json,
    Sort,
    NoSort,
    /// Sync daemon options: recognised so the error is "not supported".
    DaemonOpt,
}

impl Kind {
    /// Group name for duplicate messages.
    fn group(self) -> &'static str {
        match self {
            Kind::Cmd(_) => "command",
            Kind::Service(_) => "service",
            Kind::Fwd(_) => "forwarding method",
            Kind::TunCsum(_) => "tunnel checksum",
            _ => "identical",
        }
    }

    /// Commands the option belongs to (for the "only with" message).
    fn valid_with(self) -> &'static str {
        match self {
            Kind::Service(_) | Kind::Ipv6 => "-A/-E/-D/-a/-e/-d/-L/-Z",
            Kind::Sched
            | Kind::Persistent
            | Kind::Netmask
            | Kind::SchedFlags
            | Kind::Ops
            | Kind::Pe => "-A/-E",
            Kind::Server => "-a/-e/-d",
            Kind::Fwd(_)
            | Kind::Weight
            | Kind::UThreshold
            | Kind::LThreshold
            | Kind::TunType
            | Kind::TunPort
            | Kind::TunCsum(_) => "-a/-e",
            Kind::Numeric => "-L/-S",
            Kind::DaemonOpt => "--start-daemon",
            _ => "-L",
        }
    }

    /// ipvsadm's command × option table.
    fn allowed(self, cmd: CmdKind) -> bool {
        use CmdKind as C;
        match self {
            Kind::Cmd(_) => true,
            Kind::Service(_) | Kind::Ipv6 => matches!(
                cmd,
                C::AddService
                    | C::EditService
                    | C::DeleteService
                    | C::AddServer
                    | C::EditServer
                    | C::DeleteServer
                    | C::List
                    | C::Zero
            ),
            Kind::Sched
            | Kind::Persistent
            | Kind::Netmask
            | Kind::SchedFlags
            | Kind::Ops
            | Kind::Pe => matches!(cmd, C::AddService | C::EditService),
            Kind::Server => matches!(cmd, C::AddServer | C::EditServer | C::DeleteServer),
            Kind::Fwd(_)
            | Kind::Weight
            | Kind::UThreshold
            | Kind::LThreshold
            | Kind::TunType
            | Kind::TunPort
            | Kind::TunCsum(_) => matches!(cmd, C::AddServer | C::EditServer),
            Kind::Numeric => matches!(cmd, C::List | C::Save),
            Kind::DaemonOpt => matches!(cmd, C::StartDaemon | C::StopDaemon),
            Kind::Connection
            | Kind::Stats
            | Kind::Rate
            | Kind::Thresholds
            | Kind::PersistentConn
            | Kind::Timeout
            | Kind::Daemon
            | Kind::TunInfo
            | Kind::Exact
            | Kind::Json
            | Kind::Sort
            | Kind::NoSort => cmd == C::List,
        }
    }
}

/// Whether an option takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    No,
    Yes,
    /// `-p [T]`: takes the next word only if it is a number.
    OptionalNumber,
}

struct Def {
    short: Option<char>,
    long: &'static str,
    kind: Kind,
    arg: Arg,
}

const fn def(short: Option<char>, long: &'static str, kind: Kind, arg: Arg) -> Def {
    Def {
        short,
        long,
        kind,
        arg,
    }
}

/// Every option ipvsadm 1.31 knows.
const OPTIONS: &[Def] = &[
    def(
        Some('A'),
        "add-service",
        Kind::Cmd(CmdKind::AddService),
        Arg::No,
    ),
    def(
        Some('E'),
        "edit-service",
        Kind::Cmd(CmdKind::EditService),
        Arg::No,
    ),
    def(
        Some('D'),
        "delete-service",
        Kind::Cmd(CmdKind::DeleteService),
        Arg::No,
    ),
    def(Some('C'), "clear", Kind::Cmd(CmdKind::Clear), Arg::No),
    def(
        Some('a'),
        "add-server",
        Kind::Cmd(CmdKind::AddServer),
        Arg::No,
    ),
    def(
        Some('e'),
        "edit-server",
        Kind::Cmd(CmdKind::EditServer),
        Arg::No,
    ),
    def(
        Some('d'),
        "delete-server",
        Kind::Cmd(CmdKind::DeleteServer),
        Arg::No,
    ),
    def(Some('L'), "list", Kind::Cmd(CmdKind::List), Arg::No),
    def(Some('l'), "list", Kind::Cmd(CmdKind::List), Arg::No),
    def(Some('S'), "save", Kind::Cmd(CmdKind::Save), Arg::No),
    def(Some('R'), "restore", Kind::Cmd(CmdKind::Restore), Arg::No),
    def(Some('Z'), "zero", Kind::Cmd(CmdKind::Zero), Arg::No),
    def(None, "set", Kind::Cmd(CmdKind::Set), Arg::No),
    def(Some('h'), "help", Kind::Cmd(CmdKind::Help), Arg::No),
    def(Some('v'), "version", Kind::Cmd(CmdKind::Version), Arg::No),
    def(
        None,
        "start-daemon",
        Kind::Cmd(CmdKind::StartDaemon),
        Arg::Yes,
    ),
    def(
        None,
        "stop-daemon",
        Kind::Cmd(CmdKind::StopDaemon),
        Arg::Yes,
    ),
    def(
        Some('t'),
        "tcp-service",
        Kind::Service(SvcOpt::Proto(Proto::Tcp)),
        Arg::Yes,
    ),
    def(
        Some('u'),
        "udp-service",
        Kind::Service(SvcOpt::Proto(Proto::Udp)),
        Arg::Yes,
    ),
    def(
        None,
        "sctp-service",
        Kind::Service(SvcOpt::Proto(Proto::Sctp)),
        Arg::Yes,
    ),
    def(
        Some('f'),
        "fwmark-service",
        Kind::Service(SvcOpt::Fwmark),
        Arg::Yes,
    ),
    def(Some('6'), "ipv6", Kind::Ipv6, Arg::No),
    def(Some('s'), "scheduler", Kind::Sched, Arg::Yes),
    def(
        Some('p'),
        "persistent",
        Kind::Persistent,
        Arg::OptionalNumber,
    ),
    def(Some('M'), "netmask", Kind::Netmask, Arg::Yes),
    def(Some('b'), "sched-flags", Kind::SchedFlags, Arg::Yes),
    def(Some('o'), "ops", Kind::Ops, Arg::No),
    def(None, "pe", Kind::Pe, Arg::Yes),
    def(Some('r'), "real-server", Kind::Server, Arg::Yes),
    def(
        Some('g'),
        "gatewaying",
        Kind::Fwd(FwdMethod::Route),
        Arg::No,
    ),
    def(Some('i'), "ipip", Kind::Fwd(FwdMethod::Tunnel), Arg::No),
    def(
        Some('m'),
        "masquerading",
        Kind::Fwd(FwdMethod::Masq),
        Arg::No,
    ),
    def(Some('w'), "weight", Kind::Weight, Arg::Yes),
    def(Some('x'), "u-threshold", Kind::UThreshold, Arg::Yes),
    def(Some('y'), "l-threshold", Kind::LThreshold, Arg::Yes),
    def(None, "tun-type", Kind::TunType, Arg::Yes),
    def(None, "tun-port", Kind::TunPort, Arg::Yes),
    def(None, "tun-nocsum", Kind::TunCsum(TunCsum::NoCsum), Arg::No),
    def(None, "tun-csum", Kind::TunCsum(TunCsum::Csum), Arg::No),
    def(
        None,
        "tun-remcsum",
        Kind::TunCsum(TunCsum::RemCsum),
        Arg::No,
    ),
    def(Some('n'), "numeric", Kind::Numeric, Arg::No),
    def(Some('c'), "connection", Kind::Connection, Arg::No),
    def(None, "stats", Kind::Stats, Arg::No),
    def(None, "rate", Kind::Rate, Arg::No),
    def(None, "thresholds", Kind::Thresholds, Arg::No),
    def(None, "persistent-conn", Kind::PersistentConn, Arg::No),
    def(None, "timeout", Kind::Timeout, Arg::No),
    def(None, "daemon", Kind::Daemon, Arg::No),
    def(None, "tun-info", Kind::TunInfo, Arg::No),
    def(Some('X'), "exact", Kind::Exact, Arg::No),
    def(None, "json", Kind::Json, Arg::No),
    def(None, "sort", Kind::Sort, Arg::No),
    def(None, "nosort", Kind::NoSort, Arg::No),
    def(None, "mcast-interface", Kind::DaemonOpt, Arg::Yes),
    def(None, "syncid", Kind::DaemonOpt, Arg::Yes),
    def(None, "sync-maxlen", Kind::DaemonOpt, Arg::Yes),
    def(None, "mcast-group", Kind::DaemonOpt, Arg::Yes),
    def(None, "mcast-port", Kind::DaemonOpt, Arg::Yes),
    def(None, "mcast-ttl", Kind::DaemonOpt, Arg::Yes),
];

/// One option occurrence: what it is, as typed, and its value.
#[derive(Debug)]
struct Occ {
    kind: Kind,
    typed: String,
    value: Option<String>,
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Splits argv into option occurrences and positional words.
fn tokenize(words: &[String]) -> Result<(Vec<Occ>, Vec<String>), CtlError> {
    let mut occs = Vec::new();
    let mut positional = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        i += 1;
        if let Some(body) = w.strip_prefix("--").filter(|b| !b.is_empty()) {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let d = OPTIONS
                .iter()
                .find(|d| d.long == name)
                .ok_or_else(|| CtlError::UnknownOption(format!("--{name}")))?;
            let typed = format!("--{name}");
            let value = match d.arg {
                Arg::No => {
                    if inline.is_some() {
                        return Err(CtlError::UnexpectedValue(typed));
                    }
                    None
                }
                Arg::Yes => match inline {
                    Some(v) => Some(v),
                    None => {
                        let v = words
                            .get(i)
                            .ok_or_else(|| CtlError::MissingValue(typed.clone()))?;
                        i += 1;
                        Some(v.clone())
                    }
                },
                Arg::OptionalNumber => match inline {
                    Some(v) => Some(v),
                    None if words.get(i).is_some_and(|v| is_number(v)) => {
                        i += 1;
                        Some(words[i - 1].clone())
                    }
                    None => None,
                },
            };
            occs.push(Occ {
                kind: d.kind,
                typed,
                value,
            });
        } else if w.len() > 1 && w.starts_with('-') {
            // A cluster of short options; one taking a value ends it.
            let chars: Vec<char> = w[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                let d = OPTIONS
                    .iter()
                    .find(|d| d.short == Some(c))
                    .ok_or_else(|| CtlError::UnknownOption(format!("-{c}")))?;
                let typed = format!("-{c}");
                let rest: String = chars[j..].iter().collect();
                let value = match d.arg {
                    Arg::No => None,
                    Arg::Yes => {
                        j = chars.len();
                        if rest.is_empty() {
                            let v = words
                                .get(i)
                                .ok_or_else(|| CtlError::MissingValue(typed.clone()))?;
                            i += 1;
                            Some(v.clone())
                        } else {
                            Some(rest)
                        }
                    }
                    Arg::OptionalNumber => {
                        j = chars.len();
                        if !rest.is_empty() {
                            Some(rest)
                        } else if words.get(i).is_some_and(|v| is_number(v)) {
                            i += 1;
                            Some(words[i - 1].clone())
                        } else {
                            None
                        }
                    }
                };
                occs.push(Occ {
                    kind: d.kind,
                    typed,
                    value,
                });
            }
        } else {
            positional.push(w.clone());
        }
    }
    Ok((occs, positional))
}

/// Whether a word is the program name ipvsadm scripts may start with.
fn is_program_word(w: &str) -> bool {
    let base = w.rsplit('/').next().unwrap_or(w);
    base == "ipvsadm" || base == "uvsadm"
}

/// Parses one command line: argv without the program name (a leading
/// `ipvsadm`/`uvsadm` word is skipped). No words at all means `-L`, as for
/// ipvsadm.
pub fn parse(argv: &[String]) -> Result<Command, CtlError> {
    let words = match argv.first() {
        Some(w) if is_program_word(w) => &argv[1..],
        _ => argv,
    };
    if words.is_empty() {
        return Ok(Command::List(ListOpts::default()));
    }
    let (occs, positional) = tokenize(words)?;

    // Exactly one command.
    let mut cmd: Option<(CmdKind, &Occ)> = None;
    for o in &occs {
        if let Kind::Cmd(c) = o.kind {
            if let Some((_, first)) = cmd {
                return Err(CtlError::MultipleCommands(
                    first.typed.clone(),
                    o.typed.clone(),
                ));
            }
            cmd = Some((c, o));
        }
    }
    let (cmd, _) = cmd.ok_or(CtlError::NoCommand)?;
    if matches!(cmd, CmdKind::StartDaemon | CmdKind::StopDaemon) {
        return Err(CtlError::Unsupported(
            "the connection sync daemon (--start-daemon/--stop-daemon)",
        ));
    }

    // Each option once, and only with commands that take it.
    for (n, o) in occs.iter().enumerate() {
        if matches!(o.kind, Kind::Cmd(_)) {
            continue;
        }
        if let Some(prev) = occs[..n]
            .iter()
            .find(|p| discriminant(&p.kind) == discriminant(&o.kind))
        {
            return Err(CtlError::DuplicateOption(
                o.kind.group(),
                prev.typed.clone(),
                o.typed.clone(),
            ));
        }
        if !o.kind.allowed(cmd) {
            return Err(CtlError::OptionNotAllowed {
                opt: o.typed.clone(),
                cmd: cmd.name(),
                valid: o.kind.valid_with(),
            });
        }
    }
    let find = |pred: fn(Kind) -> bool| occs.iter().find(|o| pred(o.kind));
    let has = |k: Kind| occs.iter().any(|o| o.kind == k);

    if cmd != CmdKind::Set {
        if let Some(p) = positional.first() {
            return Err(CtlError::UnexpectedArgument(p.clone()));
        }
    }

    let svc = match find(|k| matches!(k, Kind::Service(_))) {
        Some(o) => Some(parse_service(o, has(Kind::Ipv6))?),
        None => {
            if has(Kind::Ipv6) {
                return Err(CtlError::Ipv6WithoutFwmark);
            }
            None
        }
    };
    let need_svc = |svc: Option<SvcKey>| {
        svc.ok_or(CtlError::MissingOption {
            cmd: cmd.name(),
            what: "a service (-t, -u, --sctp-service ADDR:PORT or -f MARK)",
        })
    };

    Ok(match cmd {
        CmdKind::AddService | CmdKind::EditService => {
            let opts = service_opts(need_svc(svc)?, &occs)?;
            if cmd == CmdKind::AddService {
                Command::AddService(opts)
            } else {
                Command::EditService(opts)
            }
        }
        CmdKind::DeleteService => Command::DeleteService(need_svc(svc)?),
        CmdKind::Clear => Command::Clear,
        CmdKind::AddServer | CmdKind::EditServer | CmdKind::DeleteServer => {
            let svc = need_svc(svc)?;
            let server = find(|k| k == Kind::Server).ok_or(CtlError::MissingOption {
                cmd: cmd.name(),
                what: "a real server (-r ADDR[:PORT])",
            })?;
            let (addr, port) = parse_addr_port(value(server)?)?;
            let port = port.unwrap_or(svc.port());
            if cmd == CmdKind::DeleteServer {
                Command::DeleteServer { svc, addr, port }
            } else {
                let dest = dest_config(&svc, addr, port, &occs)?;
                if cmd == CmdKind::AddServer {
                    Command::AddServer { svc, dest }
                } else {
                    Command::EditServer { svc, dest }
                }
            }
        }
        CmdKind::List => Command::List(list_opts(svc, &occs)?),
        CmdKind::Save => Command::Save {
            numeric: has(Kind::Numeric),
        },
        CmdKind::Restore => Command::Restore,
        CmdKind::Zero => Command::Zero(svc),
        CmdKind::Set => {
            let [tcp, tcp_fin, udp] = positional.as_slice() else {
                return Err(CtlError::SetNeedsThree);
            };
            Command::SetTimeouts {
                tcp: number("--set tcp", tcp, 0, MAX_TIMEOUT.into())? as u32,
                tcp_fin: number("--set tcpfin", tcp_fin, 0, MAX_TIMEOUT.into())? as u32,
                udp: number("--set udp", udp, 0, MAX_TIMEOUT.into())? as u32,
            }
        }
        CmdKind::Help => Command::Help,
        CmdKind::Version => Command::Version,
        CmdKind::StartDaemon | CmdKind::StopDaemon => {
            return Err(CtlError::Unsupported(
                "the connection sync daemon (--start-daemon/--stop-daemon)",
            ))
        }
    })
}

fn value(o: &Occ) -> Result<&str, CtlError> {
    o.value
        .as_deref()
        .ok_or_else(|| CtlError::MissingValue(o.typed.clone()))
}

/// A decimal number in `min..=max` (no sign, no spaces).
fn number(opt: &str, s: &str, min: u64, max: u64) -> Result<u64, CtlError> {
    let bad = || CtlError::InvalidNumber {
        opt: opt.to_string(),
        value: s.to_string(),
        min,
        max,
    };
    if !is_number(s) {
        return Err(bad());
    }
    let v: u64 = s.parse().map_err(|_| bad())?;
    if v < min || v > max {
        return Err(bad());
    }
    Ok(v)
}

/// `ADDR[:PORT]`, `[V6ADDR][:PORT]` or a bare IPv6 address (no port).
pub fn parse_addr_port(s: &str) -> Result<(IpAddr, Option<u16>), CtlError> {
    let port_of = |p: &str| -> Result<u16, CtlError> {
        if !is_number(p) {
            return Err(CtlError::InvalidPort {
                port: p.to_string(),
                input: s.to_string(),
            });
        }
        p.parse::<u16>().map_err(|_| CtlError::InvalidPort {
            port: p.to_string(),
            input: s.to_string(),
        })
    };
    if let Some(inner) = s.strip_prefix('[') {
        let (host, rest) = inner
            .split_once(']')
            .ok_or_else(|| CtlError::InvalidAddress(s.to_string()))?;
        let addr: Ipv6Addr = host
            .parse()
            .map_err(|_| CtlError::InvalidAddress(s.to_string()))?;
        let port = match rest {
            "" => None,
            _ => match rest.strip_prefix(':') {
                Some(p) => Some(port_of(p)?),
                None => return Err(CtlError::InvalidAddress(s.to_string())),
            },
        };
        return Ok((IpAddr::V6(addr), port));
    }
    if let Ok(v6) = s.parse::<Ipv6Addr>() {
        return Ok((IpAddr::V6(v6), None));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let addr: Ipv4Addr = host.parse().map_err(|_| {
        if host.bytes().any(|b| b.is_ascii_alphabetic()) {
            CtlError::HostName(host.to_string())
        } else {
            CtlError::InvalidAddress(s.to_string())
        }
    })?;
    let port = port.map(port_of).transpose()?;
    Ok((IpAddr::V4(addr), port))
}

fn parse_service(o: &Occ, ipv6: bool) -> Result<SvcKey, CtlError> {
    let v = value(o)?;
    match o.kind {
        Kind::Service(SvcOpt::Fwmark) => Ok(SvcKey::Fwmark {
            mark: number(&o.typed, v, 1, u32::MAX.into())? as u32,
            family: if ipv6 { Family::V6 } else { Family::V4 },
        }),
        Kind::Service(SvcOpt::Proto(proto)) => {
            if ipv6 {
                return Err(CtlError::Ipv6WithoutFwmark);
            }
            let (addr, port) = parse_addr_port(v)?;
            Ok(SvcKey::Addr {
                proto,
                addr,
                port: port.unwrap_or(0),
            })
        }
        _ => Err(CtlError::UnknownOption(o.typed.clone())),
    }
}

fn service_opts(key: SvcKey, occs: &[Occ]) -> Result<ServiceOpts, CtlError> {
    let mut opts = ServiceOpts::new(key);
    for o in occs {
        match o.kind {
            Kind::Sched => opts.sched = value(o)?.to_string(),
            Kind::Persistent => {
                opts.persistent = Some(match &o.value {
                    Some(v) => number(&o.typed, v, 1, MAX_TIMEOUT.into())? as u32,
                    None => DEFAULT_PERSISTENCE,
                })
            }
            Kind::Netmask => opts.netmask = Some(parse_netmask(value(o)?, key.family())?),
            Kind::SchedFlags => {
                opts.sched_flags = value(o)?
                    .split(',')
                    .map(str::trim)
                    .filter(|f| !f.is_empty())
                    .map(String::from)
                    .collect()
            }
            Kind::Ops => opts.ops = true,
            Kind::Pe => opts.pe = Some(value(o)?.to_string()),
            _ => {}
        }
    }
    Ok(opts)
}

/// `-M`: dotted mask for IPv4 services, prefix length for IPv6 ones
/// (decided by the service, whatever the option order).
fn parse_netmask(s: &str, family: Family) -> Result<Netmask, CtlError> {
    let bad = || CtlError::InvalidNetmask(s.to_string());
    match family {
        Family::V4 => s.parse::<Ipv4Addr>().map(Netmask::V4).map_err(|_| bad()),
        Family::V6 => match number("-M", s, 1, 128) {
            Ok(p) => Ok(Netmask::V6(p as u8)),
            Err(_) => Err(bad()),
        },
    }
}

fn dest_config(
    svc: &SvcKey,
    addr: IpAddr,
    port: u16,
    occs: &[Occ],
) -> Result<DestConfig, CtlError> {
    let mut d = DestConfig {
        addr,
        port,
        // ipvsadm's default forwarding method is direct routing.
        fwd: FwdMethod::Route,
        weight: 1,
        u_threshold: 0,
        l_threshold: 0,
        tun: None,
    };
    let mut tun_type: Option<TunType> = None;
    let mut tun_port: Option<u16> = None;
    let mut tun_csum: Option<(TunCsum, &'static str)> = None;
    for o in occs {
        match o.kind {
            Kind::Fwd(m) => d.fwd = m,
            Kind::Weight => d.weight = number(&o.typed, value(o)?, 0, 65535)? as u32,
            Kind::UThreshold => {
                d.u_threshold = number(&o.typed, value(o)?, 0, i32::MAX as u64)? as u32
            }
            Kind::LThreshold => {
                d.l_threshold = number(&o.typed, value(o)?, 0, i32::MAX as u64)? as u32
            }
            Kind::TunType => {
                let v = value(o)?;
                tun_type = Some(match v {
                    "ipip" => TunType::Ipip,
                    "gue" => TunType::Gue,
                    "gre" => TunType::Gre,
                    _ => return Err(CtlError::InvalidTunType(v.to_string())),
                })
            }
            Kind::TunPort => tun_port = Some(number(&o.typed, value(o)?, 1, 65535)? as u16),
            Kind::TunCsum(c) => tun_csum = Some((c, c.option())),
            _ => {}
        }
    }
    let tun_given = tun_type.is_some() || tun_port.is_some() || tun_csum.is_some();
    if d.fwd == FwdMethod::Tunnel {
        let kind = tun_type.unwrap_or(TunType::Ipip);
        // ipvsadm refuses even the default --tun-nocsum on ipip.
        if let (TunType::Ipip, Some((_, opt))) = (kind, tun_csum) {
            return Err(CtlError::TunOptionInvalid {
                opt,
                kind: kind.name(),
            });
        }
        let tun = TunOpts {
            kind,
            port: tun_port,
            csum: tun_csum.map(|(c, _)| c).unwrap_or_default(),
        };
        tun.validate()?;
        d.tun = Some(tun);
    } else if tun_given {
        return Err(CtlError::TunnelOptionsNeedIpip);
    }
    // ipvsadm: direct-routing and tunnelling servers take the service's
    // port, whatever -r said (fwmark services have no port to take).
    if matches!(d.fwd, FwdMethod::Route | FwdMethod::Tunnel) && !svc.is_fwmark() {
        d.port = svc.port();
    }
    Ok(d)
}

fn list_opts(service: Option<SvcKey>, occs: &[Occ]) -> Result<ListOpts, CtlError> {
    let has = |k: Kind| occs.iter().any(|o| o.kind == k);
    let typed = |k: Kind| {
        occs.iter()
            .find(|o| o.kind == k)
            .map(|o| o.typed.clone())
            .unwrap_or_default()
    };
    // ipvsadm: one of -c, a service, --timeout, --daemon; and the views
    // -c/--timeout/--daemon exclude the column options.
    let exclusive: Vec<String> = occs
        .iter()
        .filter(|o| {
            matches!(
                o.kind,
                Kind::Connection | Kind::Service(_) | Kind::Timeout | Kind::Daemon
            )
        })
        .map(|o| o.typed.clone())
        .collect();
    if exclusive.len() > 1 {
        return Err(CtlError::ListConflict(
            exclusive[0].clone(),
            exclusive[1].clone(),
        ));
    }
    for view in [Kind::Connection, Kind::Timeout, Kind::Daemon] {
        for col in [
            Kind::Stats,
            Kind::PersistentConn,
            Kind::Rate,
            Kind::Thresholds,
        ] {
            if has(view) && has(col) {
                return Err(CtlError::ListConflict(typed(view), typed(col)));
            }
        }
    }
    Ok(ListOpts {
        service,
        numeric: has(Kind::Numeric),
        connection: has(Kind::Connection),
        stats: has(Kind::Stats),
        rate: has(Kind::Rate),
        thresholds: has(Kind::Thresholds),
        persistent_conn: has(Kind::PersistentConn),
        timeout: has(Kind::Timeout),
        daemon: has(Kind::Daemon),
        tun_info: has(Kind::TunInfo),
        exact: has(Kind::Exact),
        json: has(Kind::Json),
        nosort: has(Kind::NoSort),
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

/// `uvsadm -v` text.
pub fn version() -> String {
    format!(
        "uvsadm v{} (ipvsadm 1.31 command line, IPVS 1.2.1 formats)\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `uvsadm -h` text.
pub fn usage() -> String {
    let mut s = version();
    s.push_str(
        "Usage:
  uvsadm -A|-E SERVICE [-s SCHED] [-p [TIMEOUT]] [-M NETMASK] [-b FLAGS] [-o] [--pe NAME]
  uvsadm -D SERVICE
  uvsadm -C
  uvsadm -R                      (commands on standard input)
  uvsadm -S [-n]
  uvsadm -a|-e SERVICE -r SERVER[:PORT] [-g|-i|-m] [-w WEIGHT] [-x UPPER] [-y LOWER]
                                 [--tun-type ipip|gue|gre] [--tun-port PORT]
                                 [--tun-nocsum|--tun-csum|--tun-remcsum]
  uvsadm -d SERVICE -r SERVER[:PORT]
  uvsadm -L|-l [SERVICE] [-n] [-c] [--stats] [--rate] [--thresholds]
                                 [--persistent-conn] [--timeout] [--daemon]
                                 [--tun-info] [--exact] [--sort|--nosort] [--json]
  uvsadm -Z [SERVICE]
  uvsadm --set TCP TCPFIN UDP    (0 keeps a value)
  uvsadm -h | -v

SERVICE: -t|--tcp-service ADDR:PORT, -u|--udp-service ADDR:PORT,
         --sctp-service ADDR:PORT, -f|--fwmark-service MARK [-6]
         (IPv6 as [2001:db8::1]:80; addresses and ports are numeric)
Defaults: scheduler wlc, persistence 300 s, forwarding -g, weight 1.
Schedulers: rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh twos.
Forwarding: -m masquerading (NAT), -g gatewaying (direct routing), -i tunnel.
Not built yet (refused by name): -f fwmark services, -o, --pe sip.
Output is always numeric.
uvsadm's own option: --control PATH, the engine's control socket
(default: $UVS_CONTROL, else /run/uvs/uvs.sock).
",
    );
    s
}
