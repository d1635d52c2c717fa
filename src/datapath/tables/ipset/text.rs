//! ipset's language: `ipset save` text in ([`restore`]), the commands
//! (`create`, `add`, `del`, `test`, `flush`, `destroy`, `save`, `list`)
//! through [`command`], and the `save`/`list` layouts out. Pure functions
//! of their input and the current [`Sets`]: a text with an error anywhere
//! changes nothing.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::{IpSet, Key, Opts, SetType, Sets, Val};

/// Why a command or a restore text was refused (`line` for a text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{msg}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct IpsetError {
    pub line: Option<usize>,
    pub msg: String,
}

impl IpsetError {
    fn cmd(msg: impl Into<String>) -> IpsetError {
        IpsetError {
            line: None,
            msg: msg.into(),
        }
    }
}

/// What a command did: the sets to publish if they changed, its output,
/// and its exit status (`test` of an absent member: 1, as ipset).
#[derive(Debug)]
pub struct Outcome {
    pub sets: Option<Sets>,
    pub out: String,
    pub status: u8,
}

/// How many rules refer to each set (destroying one in use is refused).
pub type Refs<'a> = &'a dyn Fn(u32) -> usize;

/// `ipset restore [-exist]`: every line applied to a copy of `sets`, which
/// is returned whole, or the first error with its line.
pub fn restore(sets: &Sets, refs: Refs<'_>, text: &str, exist: bool) -> Result<Sets, IpsetError> {
    let mut new = sets.clone();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') || l == "COMMIT" {
            continue;
        }
        let err = |msg: String| IpsetError {
            line: Some(line),
            msg,
        };
        let words = tokenize(l).map_err(err)?;
        let (words, ex) = strip_exist(&words);
        match words.first().map(String::as_str) {
            Some(
                "create" | "-N" | "add" | "-A" | "del" | "-D" | "flush" | "-F" | "destroy" | "-X",
            ) => {
                apply(&mut new, refs, &words, exist || ex).map_err(err)?;
            }
            Some(c) => {
                return Err(err(format!(
                    "'{c}' in a restore text (create, add, del, flush, destroy)"
                )))
            }
            None => {}
        }
    }
    Ok(new)
}

/// A sets file (`uvs run --ipsets`, re-read on reload): its sets, each
/// replacing the current set of that name whole (its members become the
/// file's; its match counters stay), on top of `sets`. A set that rules
/// use may not change type or family.
pub fn reload(sets: &Sets, refs: Refs<'_>, text: &str) -> Result<Sets, IpsetError> {
    let fresh = restore(&Sets::default(), &|_| 0, text, false)?;
    let mut new = sets.clone();
    for (_, s) in fresh.iter() {
        let mut s = s.clone();
        match new.id(&s.name) {
            Some(id) => {
                let cur = new
                    .get(id)
                    .ok_or_else(|| IpsetError::cmd("set table out of step"))?;
                if (cur.kind != s.kind || cur.opts.v6 != s.opts.v6) && refs(id) > 0 {
                    return Err(IpsetError::cmd(format!(
                        "set {} would change from {} to {} while {} rule(s) use it",
                        s.name,
                        cur.kind.name(),
                        s.kind.name(),
                        refs(id)
                    )));
                }
                s.hits = cur.hits.clone();
                new.put(id, s);
            }
            None => {
                new.create(s);
            }
        }
    }
    Ok(new)
}

/// One `uvs ipset` command (its words after `ipset`); `stdin` is the text
/// of `restore`.
pub fn command(
    sets: &Sets,
    refs: Refs<'_>,
    words: &[String],
    stdin: Option<&str>,
) -> Result<Outcome, IpsetError> {
    let (words, exist) = strip_exist(words);
    let ok = |out: String| Outcome {
        sets: None,
        out,
        status: 0,
    };
    match words.first().map(String::as_str) {
        Some("restore" | "-R") => {
            let new = restore(sets, refs, stdin.unwrap_or(""), exist)?;
            Ok(Outcome {
                sets: Some(new),
                out: String::new(),
                status: 0,
            })
        }
        Some("save" | "-S") => {
            let one = pick(sets, words.get(1))?;
            Ok(ok(save(sets, one)))
        }
        Some("list" | "-L") => {
            let names = words[1..].iter().any(|w| w == "-n" || w == "-name");
            let terse = words[1..].iter().any(|w| w == "-t" || w == "-terse");
            let name = words[1..].iter().find(|w| !w.starts_with('-'));
            let one = pick(sets, name)?;
            Ok(ok(list(sets, refs, one, names, terse)))
        }
        Some("test" | "-T") => {
            let [_, name, entry, rest @ ..] = &words[..] else {
                return Err(IpsetError::cmd("test needs SETNAME ENTRY"));
            };
            let s = find(sets, name)?;
            let (keys, _) = parse_entry(s, entry, rest).map_err(IpsetError::cmd)?;
            let hit = keys.iter().all(|k| s.get(k).is_some_and(|v| !v.nomatch));
            Ok(if hit {
                ok(format!("{entry} is in set {name}.\n"))
            } else {
                Outcome {
                    sets: None,
                    out: format!("{entry} is NOT in set {name}.\n"),
                    status: 1,
                }
            })
        }
        Some("version" | "-v" | "--version") => Ok(ok(
            "ipset v7.0, protocol version: 7 (uvs's emulation)\n".into(),
        )),
        Some(_) => {
            let mut new = sets.clone();
            apply(&mut new, refs, &words, exist).map_err(IpsetError::cmd)?;
            Ok(Outcome {
                sets: Some(new),
                out: String::new(),
                status: 0,
            })
        }
        None => Err(IpsetError::cmd(
            "expected restore | save | list | create | add | del | test | flush | destroy",
        )),
    }
}

fn strip_exist(words: &[String]) -> (Vec<String>, bool) {
    let exist = words.iter().any(|w| w == "-exist" || w == "-!");
    let v = words
        .iter()
        .filter(|w| *w != "-exist" && *w != "-!")
        .cloned()
        .collect();
    (v, exist)
}

fn find<'a>(sets: &'a Sets, name: &str) -> Result<&'a IpSet, IpsetError> {
    sets.id(name).and_then(|i| sets.get(i)).ok_or_else(|| {
        IpsetError::cmd(format!(
            "The set with the given name does not exist: {name}"
        ))
    })
}

fn pick(sets: &Sets, name: Option<&String>) -> Result<Option<u32>, IpsetError> {
    match name {
        None => Ok(None),
        Some(n) => sets.id(n).map(Some).ok_or_else(|| {
            IpsetError::cmd(format!("The set with the given name does not exist: {n}"))
        }),
    }
}

/// create/add/del/flush/destroy on `sets`.
fn apply(sets: &mut Sets, refs: Refs<'_>, w: &[String], exist: bool) -> Result<(), String> {
    let name = w.get(1).map(String::as_str);
    match (w[0].as_str(), name) {
        ("create" | "-N", Some(name)) => {
            let kind = w.get(2).ok_or("create needs SETNAME TYPE")?;
            let (kind, opts) = parse_create(kind, &w[3..])?;
            valid_name(name)?;
            if let Some(id) = sets.id(name) {
                let cur = sets.get(id).ok_or("set table out of step")?;
                // -exist: an identical create is no error (ipset's rule).
                if exist && cur.kind == kind && cur.opts == opts {
                    return Ok(());
                }
                return Err(format!(
                    "Set cannot be created: set with the same name already exists: {name}"
                ));
            }
            sets.create(IpSet::new(name, kind, opts));
            Ok(())
        }
        ("add" | "-A" | "del" | "-D", Some(name)) => {
            let add = w[0] == "add" || w[0] == "-A";
            let id = sets
                .id(name)
                .ok_or_else(|| format!("The set with the given name does not exist: {name}"))?;
            let entry = w
                .get(2)
                .ok_or_else(|| format!("{} needs SETNAME ENTRY", w[0]))?;
            let mut s = sets.get(id).ok_or("set table out of step")?.clone();
            let (keys, val) = parse_entry(&s, entry, &w[3..])?;
            for k in keys {
                if add {
                    if s.get(&k).is_some() {
                        if exist {
                            // -exist re-adds: the new options replace the old.
                            s.insert(k, val.clone());
                            continue;
                        }
                        return Err(format!(
                            "Element cannot be added to the set {name}: it's already added: {entry}"
                        ));
                    }
                    if s.len() >= s.opts.maxelem as usize {
                        return Err(format!(
                            "Element cannot be added to the set {name}: set is full (maxelem {})",
                            s.opts.maxelem
                        ));
                    }
                    s.insert(k, val.clone());
                } else if !s.remove(&k) && !exist {
                    return Err(format!(
                        "Element cannot be deleted from the set {name}: it's not added: {entry}"
                    ));
                }
            }
            sets.put(id, s);
            Ok(())
        }
        ("flush" | "-F", None) => {
            let ids: Vec<u32> = sets.iter().map(|(i, _)| i).collect();
            for id in ids {
                let mut s = sets.get(id).ok_or("set table out of step")?.clone();
                s.flush();
                sets.put(id, s);
            }
            Ok(())
        }
        ("flush" | "-F", Some(name)) => {
            let id = sets
                .id(name)
                .ok_or_else(|| format!("The set with the given name does not exist: {name}"))?;
            let mut s = sets.get(id).ok_or("set table out of step")?.clone();
            s.flush();
            sets.put(id, s);
            Ok(())
        }
        ("destroy" | "-X", name) => {
            let ids: Vec<(u32, String)> = match name {
                Some(n) => vec![(
                    sets.id(n).ok_or_else(|| {
                        format!("The set with the given name does not exist: {n}")
                    })?,
                    n.to_string(),
                )],
                None => sets.iter().map(|(i, s)| (i, s.name.clone())).collect(),
            };
            for (id, n) in &ids {
                if refs(*id) > 0 {
                    return Err(format!(
                        "Set cannot be destroyed: it is in use by a kernel component: {n} ({} rule(s) of uvs's tables)",
                        refs(*id)
                    ));
                }
            }
            for (id, _) in ids {
                sets.destroy(id);
            }
            Ok(())
        }
        (c, None) => Err(format!("{c} needs a set name")),
        (c, Some(_)) => Err(format!(
            "unknown command '{c}' (create, add, del, test, flush, destroy, save, list, restore)"
        )),
    }
}

fn valid_name(n: &str) -> Result<(), String> {
    let plain = n
        .chars()
        .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
    if n.is_empty() || n.len() > 31 || n.starts_with('-') || !plain {
        return Err(format!(
            "invalid set name '{n}' (1 to 31 printable characters, no quotes)"
        ));
    }
    Ok(())
}

fn num(opt: &str, v: Option<&String>) -> Result<u32, String> {
    let v = v.ok_or_else(|| format!("{opt} needs a value"))?;
    v.parse().map_err(|_| format!("{opt} '{v}': not a number"))
}

/// `TYPE [family inet|inet6] [hashsize N] [maxelem N] [range A-B]
/// [timeout 0] [comment] …`.
fn parse_create(kind: &str, w: &[String]) -> Result<(SetType, Opts), String> {
    let kind = SetType::ALL
        .into_iter()
        .find(|t| t.name() == kind)
        .ok_or_else(|| {
            format!(
                "set type '{kind}' is not emulated ({})",
                SetType::ALL.map(SetType::name).join(", ")
            )
        })?;
    let mut o = Opts::default();
    let bitmap = kind == SetType::BitmapPort;
    let mut range = None;
    let mut i = 0;
    while i < w.len() {
        let opt = w[i].as_str();
        let val = w.get(i + 1);
        let hash_only = |o: &str| {
            if bitmap {
                Err(format!("{o} is not an option of bitmap:port"))
            } else {
                Ok(())
            }
        };
        match opt {
            "family" => {
                hash_only(opt)?;
                o.v6 = match val.map(String::as_str) {
                    Some("inet") => false,
                    Some("inet6") => true,
                    v => return Err(format!("family {v:?}: inet or inet6")),
                };
                i += 1;
            }
            "-4" => o.v6 = false,
            "-6" => o.v6 = true,
            "hashsize" => {
                hash_only(opt)?;
                o.hashsize = num(opt, val)?;
                i += 1;
            }
            "maxelem" => {
                hash_only(opt)?;
                o.maxelem = num(opt, val)?;
                if o.maxelem == 0 {
                    return Err("maxelem 0".into());
                }
                i += 1;
            }
            // Tuning of the kernel's table layout: no meaning here.
            "bucketsize" | "initval" => {
                hash_only(opt)?;
                val.ok_or_else(|| format!("{opt} needs a value"))?;
                i += 1;
            }
            "range" => {
                if !bitmap {
                    return Err("range is an option of bitmap:port".into());
                }
                let v = val.ok_or("range needs A-B")?;
                range = Some(port_range(v)?);
                i += 1;
            }
            "timeout" => {
                if num(opt, val)? != 0 {
                    return Err(
                        "timeout: uvs's sets do not expire members (only timeout 0 is accepted)"
                            .into(),
                    );
                }
                o.timeout0 = true;
                i += 1;
            }
            "comment" => o.comment = true,
            "counters" | "skbinfo" | "forceadd" | "netmask" | "markmask" => {
                return Err(format!("create option '{opt}' is not emulated"))
            }
            o => return Err(format!("unknown create option '{o}'")),
        }
        i += 1;
    }
    if bitmap {
        o.range = range.ok_or("bitmap:port needs range A-B")?;
        o.maxelem = u32::from(o.range.1 - o.range.0) + 1;
    }
    Ok((kind, o))
}

fn port_range(v: &str) -> Result<(u16, u16), String> {
    let p = |s: &str| s.parse::<u16>().map_err(|_| format!("invalid port '{s}'"));
    let (a, b) = match v.split_once('-') {
        Some((a, b)) => (p(a)?, p(b)?),
        None => (p(v)?, p(v)?),
    };
    Ok(if a <= b { (a, b) } else { (b, a) })
}

fn addr(s: &str, v6: bool) -> Result<u128, String> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) if !v6 => Ok(u128::from(u32::from(a))),
        Ok(IpAddr::V6(a)) if v6 => Ok(u128::from(a)),
        Ok(_) => Err(format!(
            "'{s}' is not of the set's family ({})",
            if v6 { "inet6" } else { "inet" }
        )),
        Err(_) => Err(format!("invalid address '{s}' (no host names)")),
    }
}

/// `NET[/LEN]` as (masked network, length).
fn net(s: &str, v6: bool) -> Result<(u128, u8), String> {
    let bits = if v6 { 128 } else { 32 };
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (
            a,
            l.parse::<u8>()
                .ok()
                .filter(|l| *l <= bits)
                .ok_or_else(|| format!("invalid prefix length in '{s}'"))?,
        ),
        None => (s, bits),
    };
    if len == 0 {
        return Err(format!("'{s}': a zero prefix length cannot be stored"));
    }
    Ok((super::mask(addr(a, v6)?, len, bits), len))
}

/// `[PROTO:]PORT[-PORT]` as (protocol, ports).
fn proto_ports(s: &str) -> Result<(u8, (u16, u16)), String> {
    let (proto, ports) = match s.split_once(':') {
        Some((p, ports)) => (
            match p {
                "tcp" => 6,
                "udp" => 17,
                "sctp" => 132,
                "udplite" => 136,
                p => return Err(format!("protocol '{p}' in '{s}' (tcp, udp, sctp, udplite)")),
            },
            ports,
        ),
        None => (6, s),
    };
    Ok((proto, port_range(ports)?))
}

/// An entry (`ENTRY [comment "…"] [nomatch] [timeout 0]`) as the keys it
/// stands for (a port range: one per port) and its value.
fn parse_entry(s: &IpSet, entry: &str, rest: &[String]) -> Result<(Vec<Key>, Val), String> {
    let mut val = Val::default();
    let mut i = 0;
    while i < rest.len() {
        match rest[i].as_str() {
            "comment" => {
                if !s.opts.comment {
                    return Err(format!("set {} was created without comment", s.name));
                }
                let c = rest.get(i + 1).ok_or("comment needs a text")?;
                val.comment = Some(Arc::from(c.as_str()));
                i += 1;
            }
            "nomatch" => {
                if !s.kind.has_net() {
                    return Err(format!("nomatch is for net types, not {}", s.kind.name()));
                }
                val.nomatch = true;
            }
            "timeout" => {
                if num("timeout", rest.get(i + 1))? != 0 {
                    return Err("timeout: uvs's sets do not expire members (only timeout 0)".into());
                }
                i += 1;
            }
            o => return Err(format!("unknown entry option '{o}'")),
        }
        i += 1;
    }
    let v6 = s.opts.v6;
    let parts: Vec<&str> = entry.split(',').collect();
    if parts.len() != s.kind.dims() {
        return Err(format!(
            "'{entry}': a {} entry has {} part(s)",
            s.kind.name(),
            s.kind.dims()
        ));
    }
    let base = Key::a(0);
    let host = |p: &str| -> Result<u128, String> {
        match p.split_once('/') {
            Some((a, l)) if l == (if v6 { "128" } else { "32" }) => addr(a, v6),
            Some(_) => Err(format!(
                "'{p}': {} takes addresses, not networks",
                s.kind.name()
            )),
            None => addr(p, v6),
        }
    };
    let with_ports = |k: Key, pp: &str| -> Result<Vec<Key>, String> {
        let (proto, (a, b)) = proto_ports(pp)?;
        Ok((a..=b).map(|port| Key { proto, port, ..k }).collect())
    };
    let keys = match s.kind {
        SetType::HashIp => vec![Key::a(host(parts[0])?)],
        SetType::HashNet => {
            let (a, cidr) = net(parts[0], v6)?;
            vec![Key { cidr, ..Key::a(a) }]
        }
        SetType::HashIpPort => with_ports(Key::a(host(parts[0])?), parts[1])?,
        SetType::HashIpPortIp => {
            let b = host(parts[2])?;
            with_ports(
                Key {
                    b,
                    ..Key::a(host(parts[0])?)
                },
                parts[1],
            )?
        }
        SetType::HashIpPortNet => {
            let (b, cidr) = net(parts[2], v6)?;
            with_ports(
                Key {
                    b,
                    cidr,
                    ..Key::a(host(parts[0])?)
                },
                parts[1],
            )?
        }
        SetType::BitmapPort => {
            let (a, b) = port_range(parts[0])?;
            let (lo, hi) = s.opts.range;
            if a < lo || b > hi {
                return Err(format!("'{entry}' is outside the set's range {lo}-{hi}"));
            }
            (a..=b).map(|port| Key { port, ..base }).collect()
        }
    };
    Ok((keys, val))
}

fn show_addr(a: u128, v6: bool) -> String {
    if v6 {
        Ipv6Addr::from(a).to_string()
    } else {
        Ipv4Addr::from(a as u32).to_string()
    }
}

fn proto_name(p: u8) -> &'static str {
    match p {
        17 => "udp",
        132 => "sctp",
        136 => "udplite",
        _ => "tcp",
    }
}

/// A member as ipset prints it.
fn show(s: &IpSet, k: &Key, v: &Val) -> String {
    let v6 = s.opts.v6;
    let mut t = match s.kind {
        SetType::HashIp => show_addr(k.a, v6),
        SetType::HashNet => format!("{}/{}", show_addr(k.a, v6), k.cidr),
        SetType::HashIpPort => format!("{},{}:{}", show_addr(k.a, v6), proto_name(k.proto), k.port),
        SetType::HashIpPortIp => format!(
            "{},{}:{},{}",
            show_addr(k.a, v6),
            proto_name(k.proto),
            k.port,
            show_addr(k.b, v6)
        ),
        SetType::HashIpPortNet => format!(
            "{},{}:{},{}/{}",
            show_addr(k.a, v6),
            proto_name(k.proto),
            k.port,
            show_addr(k.b, v6),
            k.cidr
        ),
        SetType::BitmapPort => k.port.to_string(),
    };
    if s.opts.timeout0 {
        t.push_str(" timeout 0");
    }
    if let Some(c) = &v.comment {
        let c = c.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = write!(t, " comment \"{c}\"");
    }
    if v.nomatch {
        t.push_str(" nomatch");
    }
    t
}

/// `create` options as ipset prints them (`save`'s line, `list`'s
/// Header).
fn header(s: &IpSet) -> String {
    let o = &s.opts;
    let mut h = if s.kind == SetType::BitmapPort {
        format!("range {}-{}", o.range.0, o.range.1)
    } else {
        format!(
            "family {} hashsize {} maxelem {}",
            if o.v6 { "inet6" } else { "inet" },
            o.hashsize,
            o.maxelem
        )
    };
    if o.timeout0 {
        h.push_str(" timeout 0");
    }
    if o.comment {
        h.push_str(" comment");
    }
    h
}

/// `ipset save [NAME]`.
pub fn save(sets: &Sets, one: Option<u32>) -> String {
    let mut out = String::new();
    for (id, s) in sets.iter().filter(|(i, _)| one.is_none_or(|o| o == *i)) {
        let _ = id;
        let _ = writeln!(out, "create {} {} {}", s.name, s.kind.name(), header(s));
        for (k, v) in s.sorted() {
            let _ = writeln!(out, "add {} {}", s.name, show(s, k, v));
        }
    }
    out
}

/// `ipset list [NAME] [-n] [-t]`, in ipset's layout, with uvs's match
/// counters on a line before `Members:`.
pub fn list(sets: &Sets, refs: Refs<'_>, one: Option<u32>, names: bool, terse: bool) -> String {
    let mut out = String::new();
    let mut first = true;
    for (id, s) in sets.iter().filter(|(i, _)| one.is_none_or(|o| o == *i)) {
        if names {
            let _ = writeln!(out, "{}", s.name);
            continue;
        }
        if !first {
            out.push('\n');
        }
        first = false;
        let (pk, by) = s.hits.total();
        let _ = writeln!(out, "Name: {}", s.name);
        let _ = writeln!(out, "Type: {}", s.kind.name());
        let _ = writeln!(out, "Revision: {}", s.kind.revision());
        let _ = writeln!(out, "Header: {}", header(s));
        // An estimate (ipset's field, which kube-proxy skips over).
        let _ = writeln!(out, "Size in memory: {}", 200 + s.len() * 64);
        let _ = writeln!(out, "References: {}", refs(id));
        let _ = writeln!(out, "Number of entries: {}", s.len());
        let _ = writeln!(out, "Matches: {pk} packets, {by} bytes");
        if terse {
            continue;
        }
        out.push_str("Members:\n");
        for (k, v) in s.sorted() {
            let _ = writeln!(out, "{}", show(s, k, v));
        }
    }
    out
}

/// Splits a line as ipset does: blanks separate words, double quotes group
/// them (a comment's text).
fn tokenize(l: &str) -> Result<Vec<String>, String> {
    let mut v = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut any) = (false, false);
    let mut chars = l.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    v.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if any || !cur.is_empty() {
        v.push(cur);
    }
    Ok(v)
}
