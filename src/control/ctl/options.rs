//! ipvsadm's options and popt's way of reading them: the option table,
//! ipvsadm's command × option and tunnel type × option tables, and a
//! reader that yields one option (and where its value is) at a time.
//!
//! popt's rules kept here: short options cluster (`-Ln`) and take the rest
//! of their word as value (`-tADDR`, one `=` skipped); long options take
//! `=VALUE` or the next word; `--` ends the options; an optional value
//! (`-p`) is the next word unless that starts with `-`. A word popt cannot
//! read is "unknown option", "missing argument" or "option does not take
//! an argument", named by the word.

use uvs_sched::FwdMethod;

use super::model::{Proto, TunType};
use super::CtlError;

/// The command options, in ipvsadm's order (its `cmdnames`).
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
    /// `-L`
    List,
    /// `-a`
    AddServer,
    /// `-d`
    DeleteServer,
    /// `-e`
    EditServer,
    /// `--set`
    Set,
    /// `--start-daemon`
    StartDaemon,
    /// `--stop-daemon`
    StopDaemon,
    /// `-R`
    Restore,
    /// `-S`
    Save,
    /// `-Z`
    Zero,
}

impl CmdKind {
    /// The short spelling.
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
            CmdKind::StartDaemon => "--start-daemon",
            CmdKind::StopDaemon => "--stop-daemon",
        }
    }

    /// The name ipvsadm's messages use (`add-service`, `flush`, `set`, …).
    pub fn ipvsadm_name(self) -> &'static str {
        match self {
            CmdKind::AddService => "add-service",
            CmdKind::EditService => "edit-service",
            CmdKind::DeleteService => "delete-service",
            CmdKind::Clear => "flush",
            CmdKind::List => "list",
            CmdKind::AddServer => "add-server",
            CmdKind::DeleteServer => "delete-server",
            CmdKind::EditServer => "edit-server",
            CmdKind::Set => "set",
            CmdKind::StartDaemon => "start-daemon",
            CmdKind::StopDaemon => "stop-daemon",
            CmdKind::Restore => "restore",
            CmdKind::Save => "save",
            CmdKind::Zero => "zero",
        }
    }
}

/// ipvsadm's options as its checks know them (one "forwarding-method" for
/// `-g`/`-i`/`-m`, one "service-address" for `-t`/`-u`/`--sctp-service`/
/// `-f`), in the order it checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Opt {
    Numeric,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    McastIf,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    SyncId,
    Exact,
    Ops,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNoCsum,
    TunCsum,
    TunRemCsum,
    /// `--json` (uvs's own): the listing as JSON.
    Json,
    /// `--sync-peer` (uvs's own): unicast sync with this director.
    SyncPeer,
}

impl Opt {
    pub(crate) const ALL: [Opt; 36] = [
        Opt::Numeric,
        Opt::Connection,
        Opt::Service,
        Opt::Scheduler,
        Opt::Persistent,
        Opt::Netmask,
        Opt::Server,
        Opt::Forward,
        Opt::Weight,
        Opt::UThreshold,
        Opt::LThreshold,
        Opt::McastIf,
        Opt::Timeout,
        Opt::Daemon,
        Opt::Stats,
        Opt::Rate,
        Opt::Thresholds,
        Opt::PersistentConn,
        Opt::NoSort,
        Opt::SyncId,
        Opt::Exact,
        Opt::Ops,
        Opt::Pe,
        Opt::SchedFlags,
        Opt::McastGroup,
        Opt::McastPort,
        Opt::McastTtl,
        Opt::SyncMaxlen,
        Opt::TunInfo,
        Opt::TunType,
        Opt::TunPort,
        Opt::TunNoCsum,
        Opt::TunCsum,
        Opt::TunRemCsum,
        Opt::Json,
        Opt::SyncPeer,
    ];

    /// The name in ipvsadm's messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Opt::Numeric => "numeric",
            Opt::Connection => "connection",
            Opt::Service => "service-address",
            Opt::Scheduler => "scheduler",
            Opt::Persistent => "persistent",
            Opt::Netmask => "netmask",
            Opt::Server => "real-server",
            Opt::Forward => "forwarding-method",
            Opt::Weight => "weight",
            Opt::UThreshold => "u-threshold",
            Opt::LThreshold => "l-threshold",
            Opt::McastIf => "mcast-interface",
            Opt::Timeout => "timeout",
            Opt::Daemon => "daemon",
            Opt::Stats => "stats",
            Opt::Rate => "rate",
            Opt::Thresholds => "thresholds",
            Opt::PersistentConn => "persistent-conn",
            Opt::NoSort => "nosort",
            Opt::SyncId => "syncid",
            Opt::Exact => "exact",
            Opt::Ops => "ops",
            Opt::Pe => "pe",
            Opt::SchedFlags => "sched-flags",
            Opt::McastGroup => "mcast-group",
            Opt::McastPort => "mcast-port",
            Opt::McastTtl => "mcast-ttl",
            Opt::SyncMaxlen => "sync-maxlen",
            Opt::TunInfo => "tun-info",
            Opt::TunType => "tun-type",
            Opt::TunPort => "tun-port",
            Opt::TunNoCsum => "tun-nocsum",
            Opt::TunCsum => "tun-csum",
            Opt::TunRemCsum => "tun-remcsum",
            Opt::Json => "json",
            Opt::SyncPeer => "sync-peer",
        }
    }

    pub(crate) fn bit(self) -> u64 {
        1 << self as u8
    }
}

/// How a command treats an option (ipvsadm's command × option table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    Illegal,
    Optional,
    Compulsory,
    /// At most one of the command's exclusive options.
    Exclusive,
}

/// ipvsadm's command × option table, written per command as the options it
/// needs, takes, or takes one of; every other option is illegal with it.
pub(crate) fn usage_of(cmd: CmdKind, opt: Opt) -> Use {
    use CmdKind as C;
    use Opt as O;
    let (compulsory, optional, exclusive): (&[Opt], &[Opt], &[Opt]) = match cmd {
        C::AddService | C::EditService => (
            &[O::Service],
            &[
                O::Scheduler,
                O::Persistent,
                O::Netmask,
                O::Ops,
                O::Pe,
                O::SchedFlags,
            ],
            &[],
        ),
        C::DeleteService => (&[O::Service], &[], &[]),
        C::Clear | C::Set | C::Restore => (&[], &[], &[]),
        C::List => (
            &[],
            &[
                O::Numeric,
                O::Stats,
                O::Rate,
                O::Thresholds,
                O::PersistentConn,
                O::NoSort,
                O::SyncId,
                O::Exact,
                O::TunInfo,
                O::Json,
            ],
            &[O::Connection, O::Service, O::Timeout, O::Daemon],
        ),
        C::AddServer | C::EditServer => (
            &[O::Service, O::Server],
            &[
                O::Forward,
                O::Weight,
                O::UThreshold,
                O::LThreshold,
                O::TunType,
                O::TunPort,
                O::TunNoCsum,
                O::TunCsum,
                O::TunRemCsum,
            ],
            &[],
        ),
        C::DeleteServer => (&[O::Service, O::Server], &[], &[]),
        C::StartDaemon => (
            &[],
            &[
                O::McastIf,
                O::SyncId,
                O::McastPort,
                O::McastTtl,
                O::SyncMaxlen,
            ],
            // A unicast peer replaces the group.
            &[O::McastGroup, O::SyncPeer],
        ),
        C::StopDaemon => (&[], &[O::SyncId], &[]),
        C::Save => (&[], &[O::Numeric], &[]),
        C::Zero => (&[], &[O::Service], &[]),
    };
    if compulsory.contains(&opt) {
        Use::Compulsory
    } else if optional.contains(&opt) {
        Use::Optional
    } else if exclusive.contains(&opt) {
        Use::Exclusive
    } else {
        Use::Illegal
    }
}

/// ipvsadm's tunnel type × option table (port, then the checksum modes).
pub(crate) fn tun_usage(kind: TunType, opt: Opt) -> Use {
    match (kind, opt) {
        (TunType::Gue, Opt::TunPort) => Use::Compulsory,
        (TunType::Gue, Opt::TunNoCsum | Opt::TunCsum | Opt::TunRemCsum)
        | (TunType::Gre, Opt::TunNoCsum | Opt::TunCsum) => Use::Exclusive,
        _ => Use::Illegal,
    }
}

/// What an option word does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Cmd(CmdKind),
    Help,
    Version,
    Svc(Proto),
    Fwmark,
    Ipv6,
    Fwd(FwdMethod),
    /// `--sort`: a no-op kept for old scripts.
    Sort,
    /// Any other option: recorded under its name, value checked by kind.
    Plain(Opt),
}

/// Whether an option takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arg {
    No,
    Yes,
    /// `-p [T]`.
    Optional,
}

pub(crate) struct Def {
    short: Option<char>,
    long: &'static str,
    pub(crate) key: Key,
    arg: Arg,
}

const fn def(short: Option<char>, long: &'static str, key: Key, arg: Arg) -> Def {
    Def {
        short,
        long,
        key,
        arg,
    }
}

/// Every option ipvsadm 1.31 knows.
const OPTIONS: &[Def] = &[
    def(
        Some('A'),
        "add-service",
        Key::Cmd(CmdKind::AddService),
        Arg::No,
    ),
    def(
        Some('E'),
        "edit-service",
        Key::Cmd(CmdKind::EditService),
        Arg::No,
    ),
    def(
        Some('D'),
        "delete-service",
        Key::Cmd(CmdKind::DeleteService),
        Arg::No,
    ),
    def(Some('C'), "clear", Key::Cmd(CmdKind::Clear), Arg::No),
    def(Some('L'), "list", Key::Cmd(CmdKind::List), Arg::No),
    def(Some('l'), "list", Key::Cmd(CmdKind::List), Arg::No),
    def(Some('Z'), "zero", Key::Cmd(CmdKind::Zero), Arg::No),
    def(
        Some('a'),
        "add-server",
        Key::Cmd(CmdKind::AddServer),
        Arg::No,
    ),
    def(
        Some('e'),
        "edit-server",
        Key::Cmd(CmdKind::EditServer),
        Arg::No,
    ),
    def(
        Some('d'),
        "delete-server",
        Key::Cmd(CmdKind::DeleteServer),
        Arg::No,
    ),
    def(None, "set", Key::Cmd(CmdKind::Set), Arg::No),
    def(Some('h'), "help", Key::Help, Arg::No),
    def(Some('v'), "version", Key::Version, Arg::No),
    def(Some('R'), "restore", Key::Cmd(CmdKind::Restore), Arg::No),
    def(Some('S'), "save", Key::Cmd(CmdKind::Save), Arg::No),
    def(
        None,
        "start-daemon",
        Key::Cmd(CmdKind::StartDaemon),
        Arg::Yes,
    ),
    def(None, "stop-daemon", Key::Cmd(CmdKind::StopDaemon), Arg::Yes),
    def(Some('t'), "tcp-service", Key::Svc(Proto::Tcp), Arg::Yes),
    def(Some('u'), "udp-service", Key::Svc(Proto::Udp), Arg::Yes),
    def(None, "sctp-service", Key::Svc(Proto::Sctp), Arg::Yes),
    def(Some('f'), "fwmark-service", Key::Fwmark, Arg::Yes),
    def(Some('s'), "scheduler", Key::Plain(Opt::Scheduler), Arg::Yes),
    def(
        Some('p'),
        "persistent",
        Key::Plain(Opt::Persistent),
        Arg::Optional,
    ),
    def(Some('M'), "netmask", Key::Plain(Opt::Netmask), Arg::Yes),
    def(Some('r'), "real-server", Key::Plain(Opt::Server), Arg::Yes),
    def(
        Some('m'),
        "masquerading",
        Key::Fwd(FwdMethod::Masq),
        Arg::No,
    ),
    def(Some('i'), "ipip", Key::Fwd(FwdMethod::Tunnel), Arg::No),
    def(Some('g'), "gatewaying", Key::Fwd(FwdMethod::Route), Arg::No),
    def(Some('w'), "weight", Key::Plain(Opt::Weight), Arg::Yes),
    def(
        Some('x'),
        "u-threshold",
        Key::Plain(Opt::UThreshold),
        Arg::Yes,
    ),
    def(
        Some('y'),
        "l-threshold",
        Key::Plain(Opt::LThreshold),
        Arg::Yes,
    ),
    def(Some('n'), "numeric", Key::Plain(Opt::Numeric), Arg::No),
    def(
        Some('c'),
        "connection",
        Key::Plain(Opt::Connection),
        Arg::No,
    ),
    def(None, "mcast-interface", Key::Plain(Opt::McastIf), Arg::Yes),
    def(None, "syncid", Key::Plain(Opt::SyncId), Arg::Yes),
    def(None, "timeout", Key::Plain(Opt::Timeout), Arg::No),
    def(None, "daemon", Key::Plain(Opt::Daemon), Arg::No),
    def(None, "stats", Key::Plain(Opt::Stats), Arg::No),
    def(None, "rate", Key::Plain(Opt::Rate), Arg::No),
    def(None, "thresholds", Key::Plain(Opt::Thresholds), Arg::No),
    def(
        None,
        "persistent-conn",
        Key::Plain(Opt::PersistentConn),
        Arg::No,
    ),
    def(None, "nosort", Key::Plain(Opt::NoSort), Arg::No),
    def(None, "sort", Key::Sort, Arg::No),
    def(Some('X'), "exact", Key::Plain(Opt::Exact), Arg::No),
    def(None, "json", Key::Plain(Opt::Json), Arg::No),
    def(Some('6'), "ipv6", Key::Ipv6, Arg::No),
    def(Some('o'), "ops", Key::Plain(Opt::Ops), Arg::No),
    def(None, "pe", Key::Plain(Opt::Pe), Arg::Yes),
    def(
        Some('b'),
        "sched-flags",
        Key::Plain(Opt::SchedFlags),
        Arg::Yes,
    ),
    def(None, "mcast-group", Key::Plain(Opt::McastGroup), Arg::Yes),
    def(None, "mcast-port", Key::Plain(Opt::McastPort), Arg::Yes),
    def(None, "mcast-ttl", Key::Plain(Opt::McastTtl), Arg::Yes),
    def(None, "sync-maxlen", Key::Plain(Opt::SyncMaxlen), Arg::Yes),
    def(None, "sync-peer", Key::Plain(Opt::SyncPeer), Arg::Yes),
    def(None, "tun-info", Key::Plain(Opt::TunInfo), Arg::No),
    def(None, "tun-type", Key::Plain(Opt::TunType), Arg::Yes),
    def(None, "tun-port", Key::Plain(Opt::TunPort), Arg::Yes),
    def(None, "tun-nocsum", Key::Plain(Opt::TunNoCsum), Arg::No),
    def(None, "tun-csum", Key::Plain(Opt::TunCsum), Arg::No),
    def(None, "tun-remcsum", Key::Plain(Opt::TunRemCsum), Arg::No),
];

/// Where an option's value is: `words[word][at..]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ValAt {
    pub(crate) word: usize,
    pub(crate) at: usize,
}

/// popt's reading of argv, one option at a time; words that are no option
/// are kept in `args`.
pub(crate) struct Popt<'a> {
    words: &'a [String],
    next: usize,
    /// Inside a cluster of short options: the word and the next char.
    cluster: Option<(usize, usize)>,
    /// After `--`.
    no_more: bool,
    /// Positional words, in order.
    pub(crate) args: Vec<usize>,
    /// The last word consumed (popt's "bad option" is that word).
    last: usize,
}

impl<'a> Popt<'a> {
    pub(crate) fn new(words: &'a [String]) -> Popt<'a> {
        Popt {
            words,
            next: 0,
            cluster: None,
            no_more: false,
            args: Vec::new(),
            last: 0,
        }
    }

    pub(crate) fn last_word(&self) -> String {
        self.words.get(self.last).cloned().unwrap_or_default()
    }

    fn popt_err(&self, reason: &'static str) -> CtlError {
        CtlError::Popt {
            word: self.last_word(),
            reason,
        }
    }

    pub(crate) fn value(&self, v: ValAt) -> &'a str {
        &self.words[v.word][v.at..]
    }

    /// The next word as a value, for an option at the end of its word.
    fn next_value(&mut self, arg: Arg) -> Result<Option<ValAt>, CtlError> {
        match self.words.get(self.next) {
            None if arg == Arg::Optional => Ok(None),
            None => Err(self.popt_err("missing argument")),
            Some(w) if arg == Arg::Optional && w.starts_with('-') => Ok(None),
            Some(_) => {
                self.last = self.next;
                self.next += 1;
                Ok(Some(ValAt {
                    word: self.last,
                    at: 0,
                }))
            }
        }
    }

    fn short(&mut self, word: usize, at: usize) -> Result<(&'static Def, Option<ValAt>), CtlError> {
        let w = &self.words[word];
        let c = w[at..].chars().next().unwrap_or('-');
        let after = at + c.len_utf8();
        self.cluster = (after < w.len()).then_some((word, after));
        let d = OPTIONS
            .iter()
            .find(|d| d.short == Some(c))
            .ok_or_else(|| self.popt_err("unknown option"))?;
        if d.arg == Arg::No {
            // `-L=x`: popt refuses a value for a flag here too.
            if self
                .cluster
                .is_some_and(|(_, rest)| w.as_bytes()[rest] == b'=')
            {
                return Err(self.popt_err("option does not take an argument"));
            }
            return Ok((d, None));
        }
        if let Some((_, rest)) = self.cluster.take() {
            // The rest of the word is the value (popt skips one '=').
            let rest = rest + usize::from(w.as_bytes()[rest] == b'=');
            return Ok((d, Some(ValAt { word, at: rest })));
        }
        Ok((d, self.next_value(d.arg)?))
    }

    /// The next option and its value; `None` when the words are used up.
    pub(crate) fn next_opt(&mut self) -> Option<Result<(&'static Def, Option<ValAt>), CtlError>> {
        if let Some((word, at)) = self.cluster {
            return Some(self.short(word, at));
        }
        while let Some(w) = self.words.get(self.next) {
            let i = self.next;
            self.next += 1;
            if self.no_more || w == "-" || !w.starts_with('-') {
                self.args.push(i);
                continue;
            }
            self.last = i;
            if w == "--" {
                self.no_more = true;
                continue;
            }
            if let Some(body) = w.strip_prefix("--") {
                let (name, inline) = match body.split_once('=') {
                    Some((n, _)) => (n, Some(2 + n.len() + 1)),
                    None => (body, None),
                };
                let Some(d) = OPTIONS.iter().find(|d| d.long == name) else {
                    return Some(Err(self.popt_err("unknown option")));
                };
                return Some(match (d.arg, inline) {
                    (Arg::No, Some(_)) => Err(self.popt_err("option does not take an argument")),
                    (Arg::No, None) => Ok((d, None)),
                    (_, Some(at)) => Ok((d, Some(ValAt { word: i, at }))),
                    (arg, None) => self.next_value(arg).map(|v| (d, v)),
                });
            }
            return Some(self.short(i, 1));
        }
        None
    }
}
