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
//! Deliberate differences from ipvsadm, all loud rather than silent:
//! * Addresses and ports must be numeric (no DNS or `/etc/services`
//!   look-ups on the daemon's control path). Output is always numeric, with
//!   or without `-n`.
//! * Options may appear in any order (ipvsadm wants the command first and
//!   `-6` after `-f`).
//! * Features the engine does not have yet are refused with a "not supported
//!   yet" error by the gates in [`model`] ([`model::supported_fwd`],
//!   [`model::check_scheduler`], [`model::check_pe`]); the sync daemon
//!   commands are refused too.

pub mod args;
pub mod format;
pub mod json;
pub mod model;
pub mod table;
#[cfg(test)]
mod tests;

pub use args::{parse, parse_script, usage, version, CmdKind, Command, ServiceOpts};
pub use format::{
    connections, largenum, list, save, ConnRow, Counters, DestCounters, ListOpts, NoCounters, Stats,
};
pub use model::{
    check_pe, check_scheduler, supported_fwd, Applied, Config, DestConfig, Family, Gates, Netmask,
    Proto, ServiceConfig, ServiceTable, SvcKey, Timeouts, TunCsum, TunOpts, TunType, Undo,
    KERNEL_SCHEDULERS,
};

/// Everything that can go wrong parsing or applying a control command.
///
/// Messages name the offending word; where ipvsadm/the kernel has a
/// well-known text ("Service already exists", …) the same text is used so
/// scripts grepping for it keep working.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CtlError {
    // ---- command-line syntax ----
    /// An option nobody knows.
    #[error("unknown option {0}")]
    UnknownOption(String),
    /// An option that needs a value got none.
    #[error("option {0} requires a value")]
    MissingValue(String),
    /// A flag option was given `=value`.
    #[error("option {0} does not take a value")]
    UnexpectedValue(String),
    /// A word that is neither an option nor expected.
    #[error("unexpected argument '{0}'")]
    UnexpectedArgument(String),
    /// No command option (-A, -a, -L, …) at all.
    #[error("no command given (one of -A -E -D -C -a -e -d -L -S -R -Z --set -h -v)")]
    NoCommand,
    /// Two command options.
    #[error("multiple commands specified: {0} and {1}")]
    MultipleCommands(String, String),
    /// The same option (or two of one group, like -g and -m) twice.
    #[error("multiple {0} options specified: {1} and {2}")]
    DuplicateOption(&'static str, String, String),
    /// An option the command does not take.
    #[error("option {opt} is not valid with {cmd} (only with {valid})")]
    OptionNotAllowed {
        /// The option as typed.
        opt: String,
        /// The command, e.g. `-A`.
        cmd: &'static str,
        /// Commands the option belongs to.
        valid: &'static str,
    },
    /// A command is missing a compulsory option.
    #[error("{cmd} requires {what}")]
    MissingOption {
        /// The command, e.g. `-a`.
        cmd: &'static str,
        /// What is missing, e.g. "a real server (`-r ADDR[:PORT]`)".
        what: &'static str,
    },
    /// Two list options that cannot go together.
    #[error("options {0} and {1} conflict in the list command")]
    ListConflict(String, String),
    /// `-6` without `-f`.
    #[error("-6 is only valid with a fwmark service (-f)")]
    Ipv6WithoutFwmark,
    /// `--set` without exactly three values.
    #[error("--set requires 3 timeout values (tcp tcpfin udp)")]
    SetNeedsThree,
    /// Not an IP address.
    #[error("invalid address '{0}'")]
    InvalidAddress(String),
    /// A host name where uvs needs a number.
    #[error("host name '{0}' is not supported: give a numeric IPv4 or IPv6 address")]
    HostName(String),
    /// A bad port in ADDR:PORT.
    #[error("invalid port '{port}' in '{input}'")]
    InvalidPort {
        /// The port text.
        port: String,
        /// The whole ADDR:PORT word.
        input: String,
    },
    /// A number out of range or not a number.
    #[error("invalid value '{value}' for {opt} (expected {min}..{max})")]
    InvalidNumber {
        /// The option, e.g. `-w`.
        opt: String,
        /// The text given.
        value: String,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A netmask that does not fit the service's family.
    #[error("invalid netmask '{0}' (IPv4: dotted mask such as 255.255.255.0; IPv6: prefix length 1..128)")]
    InvalidNetmask(String),
    /// A `-b` word that is no scheduler flag.
    #[error("invalid scheduler flag '{0}' (known: flag-1 flag-2 flag-3 sh-fallback sh-port mh-fallback mh-port)")]
    InvalidSchedFlag(String),
    /// A `-b` flag of another scheduler (`sh-port` with `-s rr`).
    #[error("scheduler flag '{flag}' is not valid with scheduler '{sched}'")]
    IncompatibleSchedFlag {
        /// The flag.
        flag: String,
        /// The service's scheduler.
        sched: String,
    },
    /// `--tun-type` other than ipip, gue, gre.
    #[error("invalid tunnel type '{0}' (one of ipip, gue, gre)")]
    InvalidTunType(String),
    /// Tunnel options on a server that is not tunnelled.
    #[error("tunnel options (--tun-*) need the ipip forwarding method (-i)")]
    TunnelOptionsNeedIpip,
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
    /// The sync daemon and other features uvs does not implement.
    #[error("{0} is not supported yet")]
    Unsupported(&'static str),

    // ---- configuration semantics (ipvsadm client and kernel checks) ----
    /// Port 0 is a wildcard and only makes sense with persistence.
    #[error("zero port specified for non-persistent service")]
    ZeroPortNotPersistent,
    /// `-o` on a TCP or SCTP service.
    #[error("one-packet scheduling (-o) is only for UDP and fwmark services")]
    OpsNotUdp,
    /// A real server of the other address family without tunnelling.
    #[error("different address family is allowed only for tunneling servers")]
    FamilyMismatch,
    /// A direct-routing or tunnelling server with its own port.
    #[error("server port {dest} differs from the service port {svc}: direct routing and tunneling servers must use the service port")]
    DestPortMismatch {
        /// The server's port.
        dest: u16,
        /// The service's port.
        svc: u16,
    },
    /// `-y` above `-x`.
    #[error("lower threshold (-y {lower}) is above upper threshold (-x {upper})")]
    ThresholdOrder {
        /// `-y`.
        lower: u32,
        /// `-x`.
        upper: u32,
    },
    /// Kernel: `-A` of an existing service.
    #[error("Service already exists")]
    ServiceExists,
    /// Kernel: `-E`, `-D`, `-Z`, `-L SERVICE` of a missing service.
    #[error("No such service")]
    NoSuchService,
    /// Kernel: a server command on a missing service.
    #[error("Service not defined")]
    ServiceNotDefined,
    /// Kernel: `-a` of an existing server.
    #[error("Destination already exists")]
    DestExists,
    /// Kernel: `-e`/`-d` of a missing server.
    #[error("No such destination")]
    NoSuchDest,

    // ---- support gates (lifted as the engine grows) ----
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
    /// A scheduler name the kernel does not have either.
    #[error("unknown scheduler '{0}'")]
    UnknownScheduler(String),
    /// A persistence engine the kernel has but uvs does not.
    #[error("persistence engine '{0}' is not supported yet")]
    PeNotSupported(String),
    /// A persistence engine nobody has.
    #[error("unknown persistence engine '{0}' (the kernel has: sip)")]
    UnknownPe(String),

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
            // Validates the service first (apply answers "No such service").
            cfg.apply_with(cmd, gates)?;
            format::list(cfg, opts, counters)?
        }
        Command::Save { .. } => format::save(cfg),
        Command::Help => args::usage(),
        Command::Version => args::version(),
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
