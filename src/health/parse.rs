//! keepalived.conf reader: words, `{ }` blocks, `!`/`#` comments, quoted
//! strings and `include` (a path, or a `*`/`?` pattern in its last part,
//! relative to the including file's directory), then the `virtual_server`
//! semantics into a [`KaConfig`].
//!
//! Contract: every problem is an error naming `file:line` and nothing of
//! the file is used; every section and keyword uvs does not run is a
//! warning naming `file:line` (never silently ignored). A statement is the
//! words of one line, optionally followed by a `{ … }` block (the `{` may
//! open on the next line); `}` may close on the line of the last statement.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::control::ctl::{Family, Netmask, Proto, SvcKey};
use uvs_sched::FwdMethod;

use super::conf::*;

/// Why a keepalived.conf is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {msg}")]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub msg: String,
}

/// Deepest `include` nesting (keepalived's own limit is similar); stops
/// a file including itself.
const MAX_INCLUDE_DEPTH: usize = 8;

#[derive(Debug, Clone)]
struct Tok {
    text: String,
    file: Arc<str>,
    line: usize,
}

/// One statement: its words and, if it has one, its block.
#[derive(Debug)]
struct Node {
    words: Vec<Tok>,
    block: Option<Vec<Node>>,
}

impl Node {
    fn at(&self) -> At {
        At {
            file: self.words[0].file.to_string(),
            line: self.words[0].line,
        }
    }
    fn key(&self) -> &str {
        &self.words[0].text
    }
    fn err(&self, msg: impl Into<String>) -> ParseError {
        ParseError {
            file: self.words[0].file.to_string(),
            line: self.words[0].line,
            msg: msg.into(),
        }
    }
}

/// Reads `path` (and what it includes) and parses it.
pub fn parse_file(path: &Path) -> Result<KaConfig, ParseError> {
    let text = std::fs::read_to_string(path).map_err(|e| ParseError {
        file: path.display().to_string(),
        line: 0,
        msg: format!("cannot read: {e}"),
    })?;
    parse_text(&path.display().to_string(), &text)
}

/// Parses `text`, the contents of the file `name` (includes are read
/// relative to its directory).
pub fn parse_text(name: &str, text: &str) -> Result<KaConfig, ParseError> {
    let mut lines = Vec::new();
    tokenize(name, text, 0, &mut lines)?;
    let steps: Vec<Step> = lines
        .into_iter()
        .flat_map(|l| l.into_iter().map(Some).chain(std::iter::once(None)))
        .collect();
    let mut pos = 0;
    let nodes = block(&steps, &mut pos, None)?;
    let mut groups = Groups::default();
    for n in nodes.iter().filter(|n| n.key() == "virtual_server_group") {
        group(n, &mut groups)?;
    }
    let mut out = KaConfig::default();
    for n in &nodes {
        top(n, &groups, &mut out)?;
    }
    Ok(out)
}

/// Splits into lines of words, expanding `include` lines in place.
fn tokenize(
    name: &str,
    text: &str,
    depth: usize,
    out: &mut Vec<Vec<Tok>>,
) -> Result<(), ParseError> {
    let file: Arc<str> = Arc::from(name);
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let bad = |msg: String| ParseError {
            file: name.to_string(),
            line,
            msg,
        };
        let mut words = Vec::new();
        let mut chars = raw.chars().peekable();
        let mut cur = String::new();
        let push = |cur: &mut String, words: &mut Vec<Tok>| {
            if !cur.is_empty() {
                words.push(Tok {
                    text: std::mem::take(cur),
                    file: file.clone(),
                    line,
                });
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '!' | '#' => break,
                '"' => {
                    push(&mut cur, &mut words);
                    let mut s = String::new();
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some(ch) => s.push(ch),
                            None => return Err(bad("unterminated quoted string".into())),
                        }
                    }
                    words.push(Tok {
                        text: s,
                        file: file.clone(),
                        line,
                    });
                }
                '{' | '}' => {
                    push(&mut cur, &mut words);
                    words.push(Tok {
                        text: c.to_string(),
                        file: file.clone(),
                        line,
                    });
                }
                c if c.is_whitespace() => push(&mut cur, &mut words),
                c => cur.push(c),
            }
        }
        push(&mut cur, &mut words);
        if words.first().is_some_and(|w| w.text == "include") {
            if words.len() != 2 {
                return Err(bad("include takes one path".into()));
            }
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(bad(format!(
                    "include nested deeper than {MAX_INCLUDE_DEPTH} (a file including itself?)"
                )));
            }
            let base = Path::new(name).parent().unwrap_or(Path::new("."));
            let pattern = base.join(&words[1].text);
            let files =
                expand(&pattern).map_err(|e| bad(format!("include {}: {e}", words[1].text)))?;
            for f in files {
                let t = std::fs::read_to_string(&f)
                    .map_err(|e| bad(format!("include {}: {e}", f.display())))?;
                tokenize(&f.display().to_string(), &t, depth + 1, out)?;
            }
            continue;
        }
        if !words.is_empty() {
            out.push(words);
        }
    }
    Ok(())
}

/// The files of an include pattern, sorted; a pattern (with `*` or `?`
/// in its last part) may match none, a plain path must exist.
fn expand(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let last = pattern
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("no file name")?;
    if !last.contains(['*', '?']) {
        if !pattern.is_file() {
            return Err("no such file".into());
        }
        return Ok(vec![pattern.to_path_buf()]);
    }
    let dir = pattern.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        if let Some(n) = e.file_name().to_str() {
            if glob(last.as_bytes(), n.as_bytes()) && e.path().is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `*` and `?` matching of one path part.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

/// One word, or the end of a line (`None`).
type Step = Option<Tok>;

/// The statements up to the `}` closing `open` (to the end at top level).
fn block(steps: &[Step], i: &mut usize, open: Option<&Tok>) -> Result<Vec<Node>, ParseError> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut words: Vec<Tok> = Vec::new();
    let flush = |words: &mut Vec<Tok>, nodes: &mut Vec<Node>| {
        if !words.is_empty() {
            nodes.push(Node {
                words: std::mem::take(words),
                block: None,
            });
        }
    };
    while *i < steps.len() {
        let step = &steps[*i];
        *i += 1;
        let Some(t) = step else {
            flush(&mut words, &mut nodes);
            continue;
        };
        match t.text.as_str() {
            "{" => {
                let inner = block(steps, i, Some(t))?;
                if words.is_empty() {
                    // A `{` opening its own line belongs to the statement
                    // before it.
                    match nodes.last_mut() {
                        Some(n) if n.block.is_none() => n.block = Some(inner),
                        _ => {
                            return Err(ParseError {
                                file: t.file.to_string(),
                                line: t.line,
                                msg: "'{' without a keyword before it".into(),
                            })
                        }
                    }
                } else {
                    nodes.push(Node {
                        words: std::mem::take(&mut words),
                        block: Some(inner),
                    });
                }
            }
            "}" => {
                flush(&mut words, &mut nodes);
                if open.is_none() {
                    return Err(ParseError {
                        file: t.file.to_string(),
                        line: t.line,
                        msg: "'}' without a matching '{'".into(),
                    });
                }
                return Ok(nodes);
            }
            _ => words.push(t.clone()),
        }
    }
    flush(&mut words, &mut nodes);
    match open {
        Some(t) => Err(ParseError {
            file: t.file.to_string(),
            line: t.line,
            msg: "'{' is never closed".into(),
        }),
        None => Ok(nodes),
    }
}

/// A `virtual_server_group`'s members.
type Groups = foldhash::HashMap<String, Vec<GroupMember>>;

#[derive(Debug, Clone, Copy)]
enum GroupMember {
    Addr(IpAddr, u16),
    Fwmark(u32),
}

/// Timers a virtual or real server hands down to its checkers.
#[derive(Debug, Clone, Copy)]
struct Inherit {
    delay_loop: Duration,
    timeout: Option<Duration>,
    retry: Option<u32>,
    delay_before_retry: Option<Duration>,
    inhibit: bool,
}

fn warn(out: &mut KaConfig, n: &Node, what: &str) {
    out.warnings.push(format!("{}: {what}", n.at()));
}

fn unknown(out: &mut KaConfig, n: &Node, inside: &str) {
    warn(
        out,
        n,
        &format!(
            "'{}' in {inside} is not implemented by uvs; ignored",
            n.key()
        ),
    );
}

/// The statement's single argument.
fn arg(n: &Node) -> Result<&str, ParseError> {
    match n.words.len() {
        2 => Ok(&n.words[1].text),
        _ => Err(n.err(format!("'{}' takes one value", n.key()))),
    }
}

fn no_arg(n: &Node) -> Result<(), ParseError> {
    match n.words.len() {
        1 => Ok(()),
        _ => Err(n.err(format!("'{}' takes no value", n.key()))),
    }
}

fn num<T: std::str::FromStr>(n: &Node, s: &str, what: &str) -> Result<T, ParseError> {
    s.parse()
        .map_err(|_| n.err(format!("{what} '{s}' is not a valid number")))
}

fn uint(n: &Node, max: u32) -> Result<u32, ParseError> {
    let v: u32 = num(n, arg(n)?, n.key())?;
    if v > max {
        return Err(n.err(format!("{} {v} is out of range (0..{max})", n.key())));
    }
    Ok(v)
}

/// Seconds, fractions allowed (keepalived's timers), more than 0.
fn secs(n: &Node) -> Result<Duration, ParseError> {
    let s = arg(n)?;
    let v: f64 = num(n, s, n.key())?;
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        return Err(n.err(format!("{} {s}: expected seconds in (0, 86400]", n.key())));
    }
    Ok(Duration::from_secs_f64(v))
}

fn ip(n: &Node, s: &str) -> Result<IpAddr, ParseError> {
    s.parse()
        .map_err(|_| n.err(format!("'{s}' is not an IP address")))
}

fn port(n: &Node, s: &str) -> Result<u16, ParseError> {
    num(n, s, "port")
}

fn block_of(n: &Node) -> Result<&[Node], ParseError> {
    n.block
        .as_deref()
        .ok_or_else(|| n.err(format!("'{}' needs a {{ }} block", n.key())))
}

fn hex(n: &Node, s: &str) -> Result<Vec<u8>, ParseError> {
    let s = s.trim_start_matches("0x");
    if s.len() & 1 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(n.err(format!("'{s}' is not hex bytes")));
    }
    Ok((0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
        .collect())
}

fn top(n: &Node, groups: &Groups, out: &mut KaConfig) -> Result<(), ParseError> {
    match n.key() {
        "virtual_server" => virtual_server(n, groups, out),
        "virtual_server_group" => Ok(()),
        k => {
            warn(
                out,
                n,
                &format!("section '{k}' is not implemented by uvs; ignored"),
            );
            Ok(())
        }
    }
}

fn group(n: &Node, groups: &mut Groups) -> Result<(), ParseError> {
    let name = arg(n)?.to_string();
    let mut members = Vec::new();
    for m in block_of(n)? {
        let w: Vec<&str> = m.words.iter().map(|t| t.text.as_str()).collect();
        match w.as_slice() {
            ["fwmark", mark] => members.push(GroupMember::Fwmark(num(m, mark, "fwmark")?)),
            [addr, p] => {
                let p = port(m, p)?;
                // `A.B.C.D-E`: a range of the last byte (IPv4) or group.
                match addr.rsplit_once('-') {
                    Some((first, last)) => {
                        let a = ip(m, first)?;
                        let end: u16 = u16::from_str_radix(last, if a.is_ipv4() { 10 } else { 16 })
                            .map_err(|_| m.err(format!("bad range end '{last}'")))?;
                        let (start, base) = match a {
                            IpAddr::V4(v) => (u16::from(v.octets()[3]), u128::from(u32::from(v))),
                            IpAddr::V6(v) => (v.segments()[7], u128::from(v)),
                        };
                        if end < start || (a.is_ipv4() && end > 255) {
                            return Err(m.err(format!("bad address range '{addr}'")));
                        }
                        for k in 0..=u128::from(end - start) {
                            let x = base + k;
                            members.push(GroupMember::Addr(
                                match a {
                                    IpAddr::V4(_) => IpAddr::V4((x as u32).into()),
                                    IpAddr::V6(_) => IpAddr::V6(x.into()),
                                },
                                p,
                            ));
                        }
                    }
                    None => members.push(GroupMember::Addr(ip(m, addr)?, p)),
                }
            }
            _ => return Err(m.err("expected 'ADDRESS PORT' or 'fwmark MARK'")),
        }
    }
    if groups.insert(name.clone(), members).is_some() {
        return Err(n.err(format!("virtual_server_group {name} is defined twice")));
    }
    Ok(())
}

fn virtual_server(n: &Node, groups: &Groups, out: &mut KaConfig) -> Result<(), ParseError> {
    let w: Vec<&str> = n.words[1..].iter().map(|t| t.text.as_str()).collect();
    let members = match w.as_slice() {
        ["fwmark", mark] => vec![GroupMember::Fwmark(num(n, mark, "fwmark")?)],
        ["group", name] => groups
            .get(*name)
            .cloned()
            .ok_or_else(|| n.err(format!("no virtual_server_group {name}")))?,
        [addr, p] => vec![GroupMember::Addr(ip(n, addr)?, port(n, p)?)],
        _ => {
            return Err(n.err(
                "expected 'virtual_server ADDRESS PORT', 'virtual_server fwmark MARK' or 'virtual_server group NAME'",
            ))
        }
    };
    let mut vs = VirtualServer {
        key: SvcKey::Fwmark {
            mark: 0,
            family: Family::V4,
        },
        at: n.at(),
        sched: "wlc".into(),
        fwd: FwdMethod::Masq,
        persistent: None,
        netmask: None,
        ops: false,
        quorum: 1,
        hysteresis: 0,
        sorry: None,
        sorry_inhibit: false,
        real: Vec::new(),
    };
    let mut proto = Proto::Tcp;
    let mut inherit = Inherit {
        delay_loop: DEFAULT_DELAY_LOOP,
        timeout: None,
        retry: None,
        delay_before_retry: None,
        inhibit: false,
    };
    let body = block_of(n)?;
    // Timers first: they apply to every real server, wherever written.
    for s in body {
        match s.key() {
            "delay_loop" => inherit.delay_loop = secs(s)?,
            "connect_timeout" => inherit.timeout = Some(secs(s)?),
            "retry" | "nb_get_retry" => inherit.retry = Some(uint(s, 1_000_000)?),
            "delay_before_retry" => inherit.delay_before_retry = Some(secs(s)?),
            "inhibit_on_failure" => {
                no_arg(s)?;
                inherit.inhibit = true
            }
            _ => {}
        }
    }
    let mut family = None;
    for s in body {
        match s.key() {
            "delay_loop" | "connect_timeout" | "retry" | "nb_get_retry" | "delay_before_retry"
            | "inhibit_on_failure" => {}
            "lb_algo" | "lvs_sched" => vs.sched = arg(s)?.to_string(),
            "lb_kind" | "lvs_method" => {
                vs.fwd = match arg(s)?.to_ascii_uppercase().as_str() {
                    "NAT" => FwdMethod::Masq,
                    "DR" => FwdMethod::Route,
                    "TUN" => FwdMethod::Tunnel,
                    k => return Err(s.err(format!("lb_kind {k}: expected NAT, DR or TUN"))),
                }
            }
            "persistence_timeout" => vs.persistent = Some(uint(s, u32::MAX)?),
            "persistence_granularity" => {
                let v = arg(s)?;
                vs.netmask = Some(match v.parse::<std::net::Ipv4Addr>() {
                    Ok(m) => Netmask::V4(m),
                    Err(_) => Netmask::V6(num::<u8>(s, v, "granularity")?.min(128)),
                });
            }
            "protocol" => {
                proto = match arg(s)?.to_ascii_uppercase().as_str() {
                    "TCP" => Proto::Tcp,
                    "UDP" => Proto::Udp,
                    "SCTP" => Proto::Sctp,
                    p => return Err(s.err(format!("protocol {p}: expected TCP, UDP or SCTP"))),
                }
            }
            "ops" => {
                no_arg(s)?;
                vs.ops = true
            }
            "quorum" => vs.quorum = uint(s, u32::MAX)?,
            "hysteresis" => vs.hysteresis = uint(s, u32::MAX)?,
            "sorry_server" => match &s.words[1..] {
                [a, p] => vs.sorry = Some((ip(s, &a.text)?, port(s, &p.text)?)),
                _ => return Err(s.err("expected 'sorry_server ADDRESS PORT'")),
            },
            "sorry_server_inhibit" => {
                no_arg(s)?;
                vs.sorry_inhibit = true
            }
            "real_server" => {
                let r = real_server(s, &inherit, out)?;
                if vs.real.iter().any(|x| (x.addr, x.port) == (r.addr, r.port)) {
                    return Err(s.err(format!("real_server {} {} is given twice", r.addr, r.port)));
                }
                match family {
                    None => family = Some(r.addr.is_ipv4()),
                    Some(v4) if v4 != r.addr.is_ipv4() => {
                        return Err(s.err(
                            "real servers of one virtual server must be of one address family",
                        ))
                    }
                    _ => {}
                }
                vs.real.push(r);
            }
            _ => unknown(out, s, "virtual_server"),
        }
    }
    for m in members {
        let mut v = vs.clone();
        v.key = match m {
            GroupMember::Addr(addr, port) => SvcKey::Addr { proto, addr, port },
            GroupMember::Fwmark(mark) => SvcKey::Fwmark {
                mark,
                family: if family == Some(false) {
                    Family::V6
                } else {
                    Family::V4
                },
            },
        };
        if out.services.iter().any(|o| o.key == v.key) {
            return Err(n.err(format!(
                "virtual server {} is given twice",
                crate::health::key_name(&v.key)
            )));
        }
        out.services.push(v);
    }
    Ok(())
}

fn real_server(n: &Node, up: &Inherit, out: &mut KaConfig) -> Result<RealServer, ParseError> {
    let (addr, p) = match &n.words[1..] {
        [a, p] => (ip(n, &a.text)?, port(n, &p.text)?),
        _ => return Err(n.err("expected 'real_server ADDRESS PORT'")),
    };
    let body = block_of(n)?;
    let mut inherit = *up;
    for s in body {
        match s.key() {
            "delay_loop" => inherit.delay_loop = secs(s)?,
            "connect_timeout" => inherit.timeout = Some(secs(s)?),
            "retry" | "nb_get_retry" => inherit.retry = Some(uint(s, 1_000_000)?),
            "delay_before_retry" => inherit.delay_before_retry = Some(secs(s)?),
            "inhibit_on_failure" => {
                no_arg(s)?;
                inherit.inhibit = true
            }
            _ => {}
        }
    }
    let mut r = RealServer {
        addr,
        port: p,
        at: n.at(),
        weight: 1,
        inhibit: inherit.inhibit,
        u_threshold: 0,
        l_threshold: 0,
        checks: Vec::new(),
    };
    for s in body {
        match s.key() {
            "delay_loop" | "connect_timeout" | "retry" | "nb_get_retry" | "delay_before_retry"
            | "inhibit_on_failure" => {}
            "weight" => r.weight = uint(s, 65535)?,
            "uthreshold" => r.u_threshold = uint(s, u32::MAX)?,
            "lthreshold" => r.l_threshold = uint(s, u32::MAX)?,
            "TCP_CHECK" | "HTTP_GET" | "MISC_CHECK" | "UDP_CHECK" => {
                r.checks.push(checker(s, &inherit, out)?)
            }
            k @ ("SSL_GET" | "SMTP_CHECK" | "DNS_CHECK" | "BFD_CHECK" | "PING_CHECK"
            | "FILE_CHECK") => warn(
                out,
                s,
                &format!("checker {k} is not implemented by uvs; this server is not checked by it"),
            ),
            _ => unknown(out, s, "real_server"),
        }
    }
    Ok(r)
}

fn checker(n: &Node, up: &Inherit, out: &mut KaConfig) -> Result<Check, ParseError> {
    let inside = n.key().to_string();
    let mut c = Check {
        kind: CheckKind::Tcp,
        at: n.at(),
        connect_ip: None,
        connect_port: None,
        timeout: up.timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        retry: up.retry.unwrap_or(DEFAULT_RETRY),
        delay_before_retry: up.delay_before_retry.unwrap_or(DEFAULT_DELAY_BEFORE_RETRY),
        delay_loop: up.delay_loop,
    };
    let mut urls = Vec::new();
    let mut command = None;
    let mut misc_timeout = None;
    let mut dynamic = false;
    let mut payload = Vec::new();
    let mut require_reply = None;
    for s in block_of(n)? {
        match (inside.as_str(), s.key()) {
            (_, "connect_ip") => c.connect_ip = Some(ip(s, arg(s)?)?),
            (_, "connect_port") => c.connect_port = Some(port(s, arg(s)?)?),
            (_, "connect_timeout") => c.timeout = secs(s)?,
            (_, "retry" | "nb_get_retry") => c.retry = uint(s, 1_000_000)?,
            (_, "delay_before_retry") => c.delay_before_retry = secs(s)?,
            (_, "delay_loop") => c.delay_loop = secs(s)?,
            ("HTTP_GET", "url") => urls.push(url(s, out)?),
            ("MISC_CHECK", "misc_path") => command = Some(arg(s)?.to_string()),
            ("MISC_CHECK", "misc_timeout") => misc_timeout = Some(secs(s)?),
            ("MISC_CHECK", "misc_dynamic") => {
                no_arg(s)?;
                dynamic = true
            }
            ("UDP_CHECK", "payload") => payload = hex(s, arg(s)?)?,
            ("UDP_CHECK", "require_reply") => {
                require_reply = Some(match s.words.len() {
                    1 => Vec::new(),
                    _ => hex(s, arg(s)?)?,
                })
            }
            _ => unknown(out, s, &inside),
        }
    }
    c.kind = match inside.as_str() {
        "TCP_CHECK" => CheckKind::Tcp,
        "HTTP_GET" => {
            if urls.is_empty() {
                return Err(n.err("HTTP_GET needs at least one url { path … }"));
            }
            CheckKind::Http(urls)
        }
        "MISC_CHECK" => {
            let command = command.ok_or_else(|| n.err("MISC_CHECK needs misc_path"))?;
            // keepalived: without misc_timeout the script has delay_loop.
            c.timeout = misc_timeout.unwrap_or(c.delay_loop);
            CheckKind::Misc { command, dynamic }
        }
        _ => CheckKind::Udp {
            payload,
            require_reply,
        },
    };
    Ok(c)
}

fn url(n: &Node, out: &mut KaConfig) -> Result<Url, ParseError> {
    let mut u = Url {
        path: String::new(),
        status: Vec::new(),
        digest: None,
    };
    for s in block_of(n)? {
        match s.key() {
            "path" => u.path = arg(s)?.to_string(),
            "status_code" => {
                if s.words.len() < 2 {
                    return Err(s.err("status_code needs a value"));
                }
                for w in &s.words[1..] {
                    let (lo, hi) = w.text.split_once('-').unwrap_or((&w.text, &w.text));
                    let (lo, hi): (u16, u16) = (num(s, lo, "status")?, num(s, hi, "status")?);
                    if !(100..=599).contains(&lo) || hi < lo || hi > 599 {
                        return Err(s.err(format!("status_code {}: expected 100..599", w.text)));
                    }
                    u.status.push((lo, hi));
                }
            }
            "digest" => {
                let d = arg(s)?.to_ascii_lowercase();
                if d.len() != 32 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(s.err(format!("digest {d}: expected 32 hex digits (MD5)")));
                }
                u.digest = Some(d);
            }
            _ => unknown(out, s, "url"),
        }
    }
    if !u.path.starts_with('/') {
        return Err(n.err("url needs a path starting with '/'"));
    }
    Ok(u)
}
