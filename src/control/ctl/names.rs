//! Host and port names, as ipvsadm uses them, kept out of the daemon.
//!
//! ipvsadm resolves names in its own process: `-t www:http` is looked up
//! before the kernel sees numbers, and without `-n` its listings print
//! `gethostbyaddr`/`getservbyport` names. uvs does the same in `uvsadm`:
//! [`resolve`] turns the names in a command (or an `-R` script) into
//! numbers before it is sent, and [`rename`] turns the numbers of the
//! daemon's numeric output into names, keeping ipvsadm's columns. Both
//! take the look-ups as a [`Names`], so they are pure and testable; the
//! system's (bounded in time) is `control::resolver`.
//!
//! ipvsadm's rules kept: host names resolve to IPv4 only (`gethostbyname`);
//! a port name is looked up for the service's protocol; in listings an
//! IPv6 host name stays in brackets, IPv4 service names are cut at 33
//! characters and server names at 28, as ipvsadm cuts them.

use std::net::{IpAddr, Ipv4Addr};

use super::args::command_words;
use super::format::{addr_port, ListOpts};
use super::model::Proto;
use super::options::{Key, Opt, Popt};
use super::words::{inet_aton, number_in, parse_service, split_service};
use super::Command;

/// Name look-ups in both directions.
pub trait Names {
    /// The IPv4 address of a host name.
    fn host_v4(&self, name: &str) -> Option<Ipv4Addr>;
    /// The port of a service name for a protocol (`/etc/services`).
    fn port(&self, name: &str, proto: Proto) -> Option<u16>;
    /// The host name of an address.
    fn host_of(&self, addr: IpAddr) -> Option<String>;
    /// The service name of a port for a protocol.
    fn service_of(&self, port: u16, proto: Proto) -> Option<String>;
}

/// No names at all: everything stays numeric.
#[derive(Debug, Clone, Copy, Default)]
pub struct Numeric;

impl Names for Numeric {
    fn host_v4(&self, _: &str) -> Option<Ipv4Addr> {
        None
    }
    fn port(&self, _: &str, _: Proto) -> Option<u16> {
        None
    }
    fn host_of(&self, _: IpAddr) -> Option<String> {
        None
    }
    fn service_of(&self, _: u16, _: Proto) -> Option<String> {
        None
    }
}

/// One `ADDR[:PORT]` word with its names looked up, or `None` to leave it
/// as it is (already numeric, or a name that does not resolve: the daemon
/// then refuses it with ipvsadm's "illegal … address" error).
fn resolve_word(word: &str, proto: Option<Proto>, names: &dyn Names) -> Option<String> {
    if parse_service(word).is_some() {
        return None;
    }
    let s = split_service(word)?;
    let addr = match s.v6 {
        Some(a) => IpAddr::V6(a),
        None => IpAddr::V4(inet_aton(s.host).or_else(|| names.host_v4(s.host))?),
    };
    let port = match s.port {
        None => None,
        Some(p) => Some(match number_in(p, 0, 65535) {
            Some(n) => n as u16,
            None => names.port(p, proto?)?,
        }),
    };
    Some(match (addr, port) {
        (a, Some(p)) => addr_port(a, p),
        (IpAddr::V4(a), None) => a.to_string(),
        (IpAddr::V6(a), None) => a.to_string(),
    })
}

/// A command line with the host and port names of its service and server
/// words replaced by numbers. Words that are numeric already, or do not
/// resolve, are left alone; nothing else changes.
pub fn resolve(argv: &[String], names: &dyn Names) -> Vec<String> {
    let skip = argv.len() - command_words(argv).len();
    let words = &argv[skip..];
    let mut out = argv.to_vec();
    // The service's protocol names the ports of the server too.
    let mut found = Vec::new();
    let mut proto = None;
    let mut p = Popt::new(words);
    while let Some(Ok((d, v))) = p.next_opt() {
        let Some(v) = v else { continue };
        match d.key {
            Key::Svc(pr) => {
                proto = Some(pr);
                found.push((v, Some(pr)));
            }
            Key::Plain(Opt::Server) => found.push((v, None)),
            _ => {}
        }
    }
    for (v, pr) in found {
        let word = &words[v.word];
        if let Some(new) = resolve_word(&word[v.at..], pr.or(proto), names) {
            out[skip + v.word] = format!("{}{new}", &word[..v.at]);
        }
    }
    out
}

/// An `-R` script with every command line [`resolve`]d; blank and comment
/// lines are kept, so line numbers stay true.
pub fn resolve_script(text: &str, names: &dyn Names) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            out.push_str(line);
        } else {
            let words: Vec<String> = t.split_whitespace().map(String::from).collect();
            out.push_str(&resolve(&words, names).join(" "));
        }
        out.push('\n');
    }
    out
}

fn proto_named(s: &str) -> Option<Proto> {
    match s {
        "TCP" => Some(Proto::Tcp),
        "UDP" => Some(Proto::Udp),
        "SCTP" => Some(Proto::Sctp),
        _ => None,
    }
}

/// ipvsadm's `addrport_to_anyname` without `-n`: names where there are
/// some, numbers where not.
fn any_name(word: &str, proto: Proto, names: &dyn Names) -> Option<String> {
    let (addr, port) = parse_service(word)?;
    let port = port?;
    let host = names.host_of(addr).unwrap_or_else(|| match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => super::format::ntop6(&a),
    });
    let port = names
        .service_of(port, proto)
        .unwrap_or_else(|| port.to_string());
    Some(match addr {
        IpAddr::V4(_) => format!("{host}:{port}"),
        IpAddr::V6(_) => format!("[{host}]:{port}"),
    })
}

fn cut(mut s: String, max: usize, v4: bool) -> String {
    if v4 && s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The width of a fixed column at the start of `rest`: the field is
/// `width` wide unless its text is longer.
fn field_end(rest: &str, width: usize) -> usize {
    let token = rest.split(' ').next().unwrap_or("").len();
    token.max(width).min(rest.len())
}

/// The daemon's numeric output of `cmd` as ipvsadm prints it without `-n`.
/// Returns `text` unchanged for other commands or with `-n`.
pub fn rename(cmd: &Command, text: &str, names: &dyn Names) -> String {
    match cmd {
        Command::Save { numeric: false } => rename_save(text, names),
        Command::List(o) if !o.numeric && !o.timeout && !o.daemon => rename_list(o, text, names),
        _ => text.to_string(),
    }
}

fn rename_save(text: &str, names: &dyn Names) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut w: Vec<String> = line.split(' ').map(String::from).collect();
        let proto = match w.get(1).map(String::as_str) {
            Some("-t") => Some(Proto::Tcp),
            Some("-u") => Some(Proto::Udp),
            Some("--sctp-service") => Some(Proto::Sctp),
            _ => None,
        };
        let fwmark = w.get(1).map(String::as_str) == Some("-f");
        if let Some(proto) = proto {
            if let Some(n) = any_name(&w[2], proto, names) {
                w[2] = n;
            }
        }
        if proto.is_some() || fwmark {
            if let Some(i) = w.iter().position(|x| x == "-r") {
                let proto = proto.unwrap_or(Proto::Tcp);
                if let Some(n) = w.get(i + 1).and_then(|d| any_name(d, proto, names)) {
                    w[i + 1] = n;
                }
            }
        }
        out.push_str(&w.join(" "));
        out.push('\n');
    }
    out
}

fn rename_list(o: &ListOpts, text: &str, names: &dyn Names) -> String {
    let mut out = String::with_capacity(text.len());
    let mut proto = Proto::Tcp;
    let columns = o.stats || o.rate;
    for (n, line) in text.lines().enumerate() {
        let renamed = if o.connection {
            (n >= 2).then(|| rename_conn(line, names)).flatten()
        } else if let Some(rest) = line.strip_prefix("  -> ") {
            // A server: "%-28s" then the other columns.
            let end = field_end(rest, 28);
            let token = rest.split(' ').next().unwrap_or("");
            any_name(token, proto, names).map(|name| {
                let v4 = !name.starts_with('[');
                format!("  -> {:<28}{}", cut(name, 28, v4), &rest[end..])
            })
        } else if let Some(p) = line.get(..4).and_then(|p| proto_named(p.trim_end())) {
            // A service: "PROT ADDR:PORT", cut at 33, padded to 33 when
            // counters follow.
            proto = p;
            let rest = &line[5..];
            let token = rest.split(' ').next().unwrap_or("");
            any_name(token, p, names).map(|name| {
                let v4 = !name.starts_with('[');
                let svc = cut(format!("{:<4} {name}", p.list_name()), 33, v4);
                if columns {
                    let end = (5 + token.len()).max(33).min(line.len());
                    format!("{svc:<33}{}", &line[end..])
                } else {
                    format!("{svc}{}", &rest[token.len()..])
                }
            })
        } else {
            if line.starts_with("FWM ") {
                proto = Proto::Tcp;
            }
            None
        };
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// One `-c` row: `%-3s %-6s %-11s %-18s %-18s %s`.
fn rename_conn(line: &str, names: &dyn Names) -> Option<String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let [pro, expire, state, c, v, d] = w.as_slice() else {
        return None;
    };
    let proto = proto_named(pro)?;
    let name = |s: &str| any_name(s, proto, names).unwrap_or_else(|| s.to_string());
    Some(format!(
        "{pro:<3} {expire:<6} {state:<11} {:<18} {:<18} {}",
        name(c),
        name(v),
        name(d)
    ))
}

#[cfg(test)]
#[path = "names_tests.rs"]
mod tests;
