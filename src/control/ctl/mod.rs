//! The control plane's pure core: ipvsadm's command line, the configuration
//! model it edits, and ipvsadm's output formats. No I/O happens here.
//!
//! Flow of one command:
//!
//! 1. `uvsadm` sends its argv (without the program name) to the daemon over
//!    the control socket; for `-R` it also sends its standard input.
//! 2. The daemon parses the words with [`args::parse`] into a [`Command`],
//!    so every client gets the same validation and messages.
//! 3. Changing commands go to [`Config::apply`] (one command) or
//!    [`Config::apply_batch`] / [`Config::restore`] (`-R` and
//!    `uvs run --config FILE`, all-or-nothing: a bad line leaves the running
//!    configuration exactly as it was). The [`Applied`] result says what
//!    changed, so the runtime can reconcile workers without a full rebuild;
//!    [`execute_logged`] also records an [`Undo`], so the runtime can back
//!    the change out if it cannot commit it ([`Config::undo`]).
//! 4. Query commands (`-L`, `-S`, `--timeout`, `-c`) never change the model;
//!    [`mod@format`] renders them byte-for-byte as ipvsadm 1.31 does, taking live
//!    counters from the runtime through the [`Counters`] trait.
//!
//! [`execute`] does steps 2–4 in one call. The socket transport and the
//! runtime reconcile (publishing the model to workers) live outside this
//! module.
//!
//! Errors carry ipvsadm 1.31's texts and exit statuses
//! ([`CtlError::exit_status`], [`CtlError::error_text`]).
//!
//! Deliberate differences from ipvsadm, all loud rather than silent:
//! * The daemon reads numeric addresses and ports only (no DNS or
//!   `/etc/services` look-ups on its control path); `uvsadm` turns names
//!   into numbers before it sends a command and numbers into names in what
//!   it prints without `-n`, in its own process, as ipvsadm does.
//! * Options after the command may come in any order (see [`args`]).
//! * `-R` is all or nothing: a bad line leaves the configuration as it was.
//! * Features the engine does not have yet are refused with a "not supported
//!   yet" error by the gates in [`model`] ([`model::supported_fwd`],
//!   [`model::check_scheduler`], [`model::check_pe`]); the sync daemon
//!   commands are refused too.

pub mod args;
pub mod format;
pub mod help;
pub mod json;
pub mod model;
pub mod names;
mod options;
pub mod table;
#[cfg(test)]
mod tests;
pub mod words;

pub use args::{parse, parse_script, CmdKind, Command, ServiceOpts, SyncConfig, SyncRole};
pub use format::{
    connections, largenum, list, save, ConnRow, Counters, DestCounters, ListOpts, NoCounters, Stats,
};
pub use help::{usage, version};
pub use model::{
    check_pe, check_scheduler, supported_fwd, Applied, Config, DestConfig, Family, Gates, Netmask,
    Proto, ServiceConfig, ServiceTable, SvcKey, Timeouts, TunCsum, TunOpts, TunType, Undo,
    KERNEL_SCHEDULERS,
};

/// Everything that can go wrong parsing or applying a control command.
///
/// Each error has ipvsadm 1.31's text and exit status
/// ([`CtlError::exit_status`]): 2 for what ipvsadm itself refuses, 255 for
/// its usage errors and for what the kernel refuses, 1 for `-L` of a
/// missing service. Errors only uvs has (features not built yet, checks
/// of programmatic commands) have their own texts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CtlError {
    // ---- usage (popt), exit 255 ----
    /// No command, or the first option is not one.
    #[error("Try `uvsadm -h' or 'uvsadm --help' for more information.")]
    TryHelp,
    /// popt could not read an option (`--bogus: unknown option`).
    #[error("{word}: {reason}")]
    Popt {
        /// The word at fault.
        word: String,
        /// popt's reason: "unknown option", "missing argument", …
        reason: &'static str,
    },

    // ---- ipvsadm's own checks, exit 2 ----
    /// A command (or `-h`/`-v`) after the first option.
    #[error("invalid option `{0}'")]
    InvalidOption(String),
    /// A word that is no option.
    #[error("unexpected argument {0}")]
    UnexpectedArgument(String),
    /// `--set` without three values.
    #[error("--set option requires 3 timeout values")]
    SetNeedsThree,
    /// The same option twice (or two of one group, like `-g` and `-m`).
    #[error("multiple '{0}' options specified")]
    DuplicateOption(&'static str),
    /// A command without an option it needs.
    #[error("You need to supply the '{opt}' option for the '{cmd}' command")]
    NeedOption {
        /// ipvsadm's name of the option.
        opt: &'static str,
        /// ipvsadm's name of the command.
        cmd: &'static str,
    },
    /// An option the command does not take.
    #[error("Illegal '{opt}' option with the '{cmd}' command")]
    IllegalOption {
        /// ipvsadm's name of the option.
        opt: &'static str,
        /// ipvsadm's name of the command.
        cmd: &'static str,
    },
    /// Two options of which the command takes one.
    #[error("The option '{opt}' conflicts with the '{other}' option in the '{cmd}' command")]
    OptionConflict {
        /// The later option.
        opt: &'static str,
        /// The earlier one.
        other: &'static str,
        /// ipvsadm's name of the command.
        cmd: &'static str,
    },
    /// A tunnel type without an option it needs (gue: `--tun-port`).
    #[error("You need to supply the '{opt}' option for the '{tun}' tunnel type")]
    TunNeedOption {
        /// ipvsadm's name of the option.
        opt: &'static str,
        /// The tunnel type.
        tun: &'static str,
    },
    /// A tunnel option the tunnel type does not have.
    #[error("Illegal '{opt}' option with the '{tun}' tunnel type")]
    TunIllegalOption {
        /// ipvsadm's name of the option.
        opt: &'static str,
        /// The tunnel type.
        tun: &'static str,
    },
    /// Two checksum modes.
    #[error("The option '{opt}' conflicts with the '{other}' option in the '{tun}' tunnel type")]
    TunOptionConflict {
        /// The later option.
        opt: &'static str,
        /// The earlier one.
        other: &'static str,
        /// The tunnel type.
        tun: &'static str,
    },
    /// `-L` views that exclude each other's columns.
    #[error("options conflicts in the list command")]
    ListConflict,
    /// A bad `-t`/`-u`/`--sctp-service` word.
    #[error("illegal virtual server address[:port] specified")]
    IllegalVirtualAddr,
    /// A bad `-r` word.
    #[error("illegal real server address[:port] specified")]
    IllegalRealAddr,
    /// A bad `-f` mark.
    #[error("invalid fwmark value `{0}' specified")]
    InvalidFwmark(String),
    /// A bad `-p` or `--set` value.
    #[error("invalid timeout value `{0}' specified")]
    InvalidTimeout(String),
    /// A bad `-M` for an IPv4 service.
    #[error("illegal virtual server persistent mask specified")]
    IllegalPersistentMask,
    /// A bad `-M` for an IPv6 service.
    #[error("illegal ipv6 netmask specified")]
    IllegalV6Netmask,
    /// A bad `-w`.
    #[error("illegal weight specified")]
    IllegalWeight,
    /// A bad `-x`.
    #[error("illegal u_threshold specified")]
    IllegalUThreshold,
    /// A bad `-y`.
    #[error("illegal l_threshold specified")]
    IllegalLThreshold,
    /// A bad `--syncid`, `--mcast-port`, `--mcast-ttl` or `--sync-maxlen`.
    #[error("illegal {0} specified")]
    IllegalDaemonValue(&'static str),
    /// A `--mcast-group` that is no multicast address.
    #[error("invalid IPv{} mcast-group `{value}'", if *v6 { 6 } else { 4 })]
    InvalidMcastGroup {
        /// Whether it looked like IPv6 (has a `:`).
        v6: bool,
        /// The word.
        value: String,
    },
    /// `--start-daemon`/`--stop-daemon` other than master or backup
    /// (`true` for start; ipvsadm words the two differently).
    #[error("{}", if *.0 { "illegal start-daemon parameter specified" } else { "illegal start_daemon specified" })]
    IllegalDaemonState(bool),
    /// `-6` without a `-f` before it (ipvsadm's text ends in a newline).
    #[error("-6 used before -f\n")]
    SixBeforeF,
    /// A bad `--tun-type`.
    #[error("illegal tunnel type specified")]
    IllegalTunType,
    /// A bad `--tun-port`.
    #[error("illegal tunnel port specified")]
    IllegalTunPort,
    /// A `-b` word that is no scheduler flag.
    #[error("invalid scheduler flag `{0}'")]
    InvalidSchedFlag(String),
    /// A `-b` flag of another scheduler (`sh-port` with `-s rr`).
    #[error("incompatible scheduler flag `{0}'")]
    IncompatibleSchedFlag(String),
    /// Port 0 is a wildcard and only makes sense with persistence.
    #[error("Zero port specified for non-persistent service")]
    ZeroPortNotPersistent,
    /// `-o` on a TCP or SCTP service.
    #[error("One-Packet Scheduling is only for UDP virtual services")]
    OpsNotUdp,
    /// A real server of the other address family without tunnelling.
    #[error("Different address family is allowed only for tunneling servers")]
    FamilyMismatch,
    /// Tunnel options on a server that is not tunnelled.
    #[error("Tunnel options conflict with forward method")]
    TunnelOptionsNeedIpip,

    // ---- checks of programmatic commands (uvs's texts), exit 2 ----
    /// A number out of range.
    #[error("invalid value '{value}' for {opt} (expected {min}..{max})")]
    InvalidNumber {
        /// The option, e.g. `-w`.
        opt: String,
        /// The value given.
        value: String,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A netmask that does not fit the service's family.
    #[error("invalid netmask '{0}' (IPv4: dotted mask such as 255.255.255.0; IPv6: prefix length 1..128)")]
    InvalidNetmask(String),
    /// A tunnel option the tunnel type does not have.
    #[error("option {opt} is not valid for tunnel type {kind}")]
    TunOptionInvalid {
        /// The option, e.g. `--tun-port`.
        opt: &'static str,
        /// The tunnel type.
        kind: &'static str,
    },
    /// `--tun-type gue` without `--tun-port`.
    #[error("tunnel type gue requires --tun-port")]
    TunPortRequired,
    /// A direct-routing or tunnelling server with its own port.
    #[error("server port {dest} differs from the service port {svc}: direct routing and tunneling servers must use the service port")]
    DestPortMismatch {
        /// The server's port.
        dest: u16,
        /// The service's port.
        svc: u16,
    },

    // ---- the kernel's refusals, exit 255 ----
    /// `-A` of an existing service.
    #[error("Service already exists")]
    ServiceExists,
    /// `-E`, `-D`, `-Z` of a missing service.
    #[error("No such service")]
    NoSuchService,
    /// A server command on a missing service.
    #[error("Service not defined")]
    ServiceNotDefined,
    /// `-a` of an existing server.
    #[error("Destination already exists")]
    DestExists,
    /// `-e`/`-d` of a missing server.
    #[error("No such destination")]
    NoSuchDest,
    /// A scheduler name the kernel does not have (ENOENT).
    #[error("Scheduler or persistence engine not found")]
    UnknownScheduler(String),
    /// A persistence engine the kernel does not have (ENOENT).
    #[error("Scheduler or persistence engine not found")]
    UnknownPe(String),
    /// A real server address that is not unicast: multicast, broadcast,
    /// 0.0.0.0/8, `::`, link-local, v4-mapped (EINVAL).
    #[error("Invalid operation.  Possibly wrong module version, address not unicast, ...")]
    NotUnicast,
    /// `-y` above `-x` (ERANGE).
    #[error("Numerical result out of range")]
    ThresholdOrder {
        /// `-y`.
        lower: u32,
        /// `-x`.
        upper: u32,
    },

    // ---- `-L` of a missing service, exit 1 ----
    /// `-L SERVICE` of a service that does not exist.
    #[error("No such service")]
    ListNoSuchService,

    // ---- support gates (lifted as the engine grows), exit 255 ----
    /// A forwarding method the engine cannot do yet.
    #[error("forwarding method '{0}' is not supported yet (only -m, -g and -i)")]
    FwdNotSupported(&'static str),
    /// One of the kernel's schedulers that uvs-sched has not built yet.
    #[error("scheduler '{name}' is not supported yet (available: {available})")]
    SchedulerNotSupported {
        /// The scheduler asked for.
        name: String,
        /// Schedulers uvs has, space separated.
        available: String,
    },
    /// A persistence engine the kernel has but uvs does not.
    #[error("persistence engine '{0}' is not supported yet")]
    PeNotSupported(String),
    /// `--pe` where it would do nothing: the kernel consults a persistence
    /// engine only when scheduling a persistent service, and its SIP engine
    /// keys UDP datagrams only (uvs refuses rather than ignore it).
    #[error("persistence engine '{0}' needs a persistent UDP or fwmark service (-p)")]
    PeNeedsPersistentUdp(String),
    /// A feature uvs does not implement.
    #[error("{0} is not supported yet")]
    Unsupported(&'static str),

    // ---- flow ----
    /// `-R` without its input.
    #[error("-R reads commands from standard input, none was given")]
    RestoreNeedsInput,
    /// A query or `-R` inside a restore script.
    #[error("{0} is not allowed in a restore script")]
    NotInScript(&'static str),
    /// A bad line of a restore script or configuration file.
    #[error(transparent)]
    Script(Box<LineError>),
}

impl CtlError {
    /// The exit status ipvsadm 1.31 gives this error.
    pub fn exit_status(&self) -> u8 {
        use CtlError as E;
        match self {
            E::TryHelp | E::Popt { .. } => 255,
            E::ServiceExists
            | E::NoSuchService
            | E::ServiceNotDefined
            | E::DestExists
            | E::NoSuchDest
            | E::UnknownScheduler(_)
            | E::UnknownPe(_)
            | E::NotUnicast
            | E::ThresholdOrder { .. }
            | E::FwdNotSupported(_)
            | E::SchedulerNotSupported { .. }
            | E::PeNotSupported(_)
            | E::PeNeedsPersistentUdp(_)
            | E::Unsupported(_) => 255,
            E::ListNoSuchService => 1,
            E::Script(l) => l.error.exit_status(),
            _ => 2,
        }
    }

    /// What the client prints on standard error: ipvsadm's text and a
    /// newline; for `-R`, then the line it was on (uvs restores all or
    /// nothing, where ipvsadm would have applied the lines before).
    pub fn error_text(&self) -> String {
        match self {
            CtlError::Script(l) => format!(
                "{}\nuvsadm: -R: line {} refused, nothing restored\n",
                l.error, l.line
            ),
            e => format!("{e}\n"),
        }
    }
}

/// An error on one line of a restore script or configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub error: CtlError,
}

impl From<LineError> for CtlError {
    fn from(e: LineError) -> Self {
        CtlError::Script(Box::new(e))
    }
}

/// The result of [`execute`]: text for the client's stdout and what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Output to print (ipvsadm's formats); empty for changing commands.
    pub output: String,
    /// What changed in the configuration ([`Applied::Nothing`] for queries).
    pub applied: Applied,
}

/// Parses one command line (argv without the program name), applies it to
/// `cfg` with the default support gates, and renders query output.
///
/// `stdin` is the client's standard input, needed only by `-R`. On error
/// `cfg` is unchanged.
pub fn execute(
    cfg: &mut Config,
    argv: &[String],
    stdin: Option<&str>,
    counters: &dyn Counters,
) -> Result<Outcome, CtlError> {
    let cmd = args::parse(argv)?;
    execute_command(cfg, &cmd, stdin, counters, &Gates::default())
}

/// [`execute`] for an already parsed command and explicit gates.
pub fn execute_command(
    cfg: &mut Config,
    cmd: &Command,
    stdin: Option<&str>,
    counters: &dyn Counters,
    gates: &Gates,
) -> Result<Outcome, CtlError> {
    execute_logged(cfg, cmd, stdin, counters, gates, &mut Undo::new())
}

/// [`execute_command`] that records how to reverse the change in `undo`
/// ([`Config::undo`]), for a runtime that may still refuse it. On error
/// `cfg` and `undo` are unchanged.
pub fn execute_logged(
    cfg: &mut Config,
    cmd: &Command,
    stdin: Option<&str>,
    counters: &dyn Counters,
    gates: &Gates,
    undo: &mut Undo,
) -> Result<Outcome, CtlError> {
    let output = match cmd {
        Command::Restore => {
            let text = stdin.ok_or(CtlError::RestoreNeedsInput)?;
            let applied = cfg.restore_logged(text, gates, undo)?;
            return Ok(Outcome {
                output: String::new(),
                applied: Applied::Batch(applied),
            });
        }
        Command::List(opts) => {
            // ipvsadm exits 1, not 255, when the listed service is missing.
            let missing = |e| match e {
                CtlError::NoSuchService => CtlError::ListNoSuchService,
                e => e,
            };
            cfg.apply_with(cmd, gates).map_err(missing)?;
            format::list(cfg, opts, counters).map_err(missing)?
        }
        Command::Save { .. } => format::save(cfg),
        Command::Help => help::usage(),
        Command::Version => help::version(),
        _ => {
            let applied = cfg.apply_logged(cmd, gates, undo)?;
            return Ok(Outcome {
                output: String::new(),
                applied,
            });
        }
    };
    Ok(Outcome {
        output,
        applied: Applied::Nothing,
    })
}
