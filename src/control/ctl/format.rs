//! ipvsadm 1.31's output formats, byte for byte: `-L` (with `--stats`,
//! `--rate`, `--thresholds`, `--persistent-conn`, `--tun-info`, `--exact`,
//! `--nosort`), `-L -c`, `--timeout`, `-S`.
//!
//! Facts reproduced (ipvsadm.c / libipvs.c):
//! * `-L` starts with `IP Virtual Server version 1.2.1 (size=4096)` except
//!   when one service is listed; `-S` prints no header.
//! * Fixed-width columns padded with spaces, so server lines end in spaces.
//! * Sorting: services by fwmark, family, protocol, address, port; servers
//!   by address, port. Addresses (each 32-bit word for IPv6) and fwmarks
//!   are compared by the C expression `(int)(a - b)` on unsigned values,
//!   i.e. wrapping subtraction read as signed: 200.0.0.1 sorts before
//!   10.0.0.1. That order is not transitive, so the result depends on the
//!   sort algorithm and the input order; this module uses the same top-down
//!   merge sort as glibc's `qsort` (`msort`) on servers newest first, as the
//!   kernel hands them out. Services are sorted from configuration order
//!   (the kernel's hash order cannot be reproduced).
//! * Large numbers: `%9llu` below 10^8, else `%8llu` + K/M/G/T in steps of
//!   1000; `--exact` prints the whole number at least 9 wide.
//! * IPv6 addresses as glibc's `inet_ntop` writes them, in brackets.
//!
//! ipvsadm resolves names unless `-n` is given; uvs always prints numeric
//! addresses and ports (the daemon does no DNS on its control path).

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use uvs_sched::FwdMethod;

use super::model::{
    Config, DestConfig, Family, Netmask, Proto, ServiceConfig, SvcKey, Timeouts, TunType,
};
use super::CtlError;

/// First line of a full `-L` listing (version 1.2.1, default table size).
pub const VERSION_LINE: &str = "IP Virtual Server version 1.2.1 (size=4096)\n";

/// The `-L` options that shape the output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOpts {
    /// List only this service (no version line).
    pub service: Option<SvcKey>,
    /// `-n` (accepted; output is always numeric).
    pub numeric: bool,
    /// `-c`: connection entries.
    pub connection: bool,
    /// `--stats`.
    pub stats: bool,
    /// `--rate`.
    pub rate: bool,
    /// `--thresholds`.
    pub thresholds: bool,
    /// `--persistent-conn`.
    pub persistent_conn: bool,
    /// `--timeout`.
    pub timeout: bool,
    /// `--daemon`.
    pub daemon: bool,
    /// `--tun-info`.
    pub tun_info: bool,
    /// `--exact`.
    pub exact: bool,
    /// `--json` (uvs): the same listing as JSON (`json.rs`).
    pub json: bool,
    /// `--nosort`: configuration order.
    pub nosort: bool,
}

/// Traffic counters and rates of a service or server (the kernel's
/// `ip_vs_stats64`: totals, and per-second rates from the estimator).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets client → server.
    pub inpkts: u64,
    /// Packets server → client.
    pub outpkts: u64,
    /// Bytes client → server.
    pub inbytes: u64,
    /// Bytes server → client.
    pub outbytes: u64,
    /// Connections per second.
    pub cps: u64,
    /// Packets per second in.
    pub inpps: u64,
    /// Packets per second out.
    pub outpps: u64,
    /// Bytes per second in.
    pub inbps: u64,
    /// Bytes per second out.
    pub outbps: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.conns += o.conns;
        self.inpkts += o.inpkts;
        self.outpkts += o.outpkts;
        self.inbytes += o.inbytes;
        self.outbytes += o.outbytes;
        self.cps += o.cps;
        self.inpps += o.inpps;
        self.outpps += o.outpps;
        self.inbps += o.inbps;
        self.outbps += o.outbps;
    }
}

/// Live state of one real server, from the runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestCounters {
    /// ActiveConn.
    pub active_conns: u32,
    /// InActConn.
    pub inactive_conns: u32,
    /// PersistConn (templates).
    pub persistent_conns: u32,
    /// Traffic counters.
    pub stats: Stats,
}

/// One connection entry for `-L -c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRow {
    /// Protocol.
    pub proto: Proto,
    /// Time left before expiry, milliseconds.
    pub expire_ms: u64,
    /// State name as IPVS prints it (`ESTABLISHED`, `TIME_WAIT`, `UDP`, …).
    pub state: String,
    /// Client address and port.
    pub client: SocketAddr,
    /// Virtual address and port.
    pub virt: SocketAddr,
    /// Real server address and port.
    pub dest: SocketAddr,
}

/// Where listings get live numbers. Closures
/// `Fn(&SvcKey, &DestConfig) -> DestCounters` implement it.
pub trait Counters {
    /// Counters of one real server.
    fn dest(&self, svc: &SvcKey, dest: &DestConfig) -> DestCounters;
    /// Counters of a service; by default the sum of its servers' (the
    /// kernel keeps them separately, so a runtime that has them should
    /// return its own).
    fn service(&self, _svc: &ServiceConfig, sum_of_dests: &Stats) -> Stats {
        *sum_of_dests
    }
    /// Connection entries for `-c`.
    fn connections(&self) -> Vec<ConnRow> {
        Vec::new()
    }
}

impl<F> Counters for F
where
    F: Fn(&SvcKey, &DestConfig) -> DestCounters,
{
    fn dest(&self, svc: &SvcKey, dest: &DestConfig) -> DestCounters {
        self(svc, dest)
    }
}

/// All counters zero, no connections (a configuration without a runtime).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCounters;

impl Counters for NoCounters {
    fn dest(&self, _: &SvcKey, _: &DestConfig) -> DestCounters {
        DestCounters::default()
    }
}

/// Formats an IPv6 address exactly as glibc's `inet_ntop`: the first
/// longest run of two or more zero words becomes `::`, and `::a.b.c.d` /
/// `::ffff:a.b.c.d` keep the IPv4 tail dotted (Rust's `Display` differs
/// for the first form).
pub fn ntop6(a: &Ipv6Addr) -> String {
    let w = a.segments();
    let (mut best, mut best_len) = (usize::MAX, 0);
    let mut i = 0;
    while i < 8 {
        if w[i] == 0 {
            let start = i;
            while i < 8 && w[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                best = start;
                best_len = i - start;
            }
        } else {
            i += 1;
        }
    }
    if best_len < 2 {
        best = usize::MAX;
    }
    let mut s = String::with_capacity(40);
    for (i, word) in w.iter().enumerate() {
        if best != usize::MAX && i >= best && i < best + best_len {
            if i == best {
                s.push(':');
            }
            continue;
        }
        if i != 0 {
            s.push(':');
        }
        if i == 6 && best == 0 && (best_len == 6 || (best_len == 5 && w[5] == 0xffff)) {
            let o = a.octets();
            let _ = write!(s, "{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
            break;
        }
        let _ = write!(s, "{word:x}");
    }
    if best != usize::MAX && best + best_len == 8 {
        s.push(':');
    }
    s
}

/// `ADDR:PORT` with IPv6 in brackets (ipvsadm's `addrport_to_anyname -n`).
pub fn addr_port(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{}]:{port}", ntop6(&a)),
    }
}

/// ipvsadm's `print_largenum`.
pub fn largenum(v: u64, exact: bool) -> String {
    if exact {
        let digits = v.to_string();
        let width = if digits.len() <= 8 {
            9
        } else {
            digits.len() + 1
        };
        return format!("{digits:>width$}");
    }
    const K: u64 = 1_000;
    if v < 100_000_000 {
        format!("{v:9}")
    } else if v < 1_000_000_000 {
        format!("{:8}K", v / K)
    } else if v < 100_000_000_000 {
        format!("{:8}M", v / (K * K))
    } else if v < 100_000_000_000_000 {
        format!("{:8}G", v / (K * K * K))
    } else {
        format!("{:8}T", v / (K * K * K * K))
    }
}

/// C's `(int)(a - b)` on unsigned 32-bit values, as an ordering.
fn wrap_cmp(a: u32, b: u32) -> Ordering {
    (a.wrapping_sub(b) as i32).cmp(&0)
}

/// libipvs's address comparison: word by word, wrapping.
fn addr_cmp(a: IpAddr, b: IpAddr) -> Ordering {
    match (a, b) {
        (IpAddr::V4(x), IpAddr::V4(y)) => wrap_cmp(u32::from(x), u32::from(y)),
        (IpAddr::V6(x), IpAddr::V6(y)) => {
            let (x, y) = (x.octets(), y.octets());
            for i in 0..4 {
                let word = |o: &[u8; 16]| {
                    u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
                };
                let r = wrap_cmp(word(&x), word(&y));
                if r != Ordering::Equal {
                    return r;
                }
            }
            Ordering::Equal
        }
        // Mixed families only occur for tunnelling servers; ipvsadm reads
        // garbage there, uvs puts IPv4 first.
        (a, b) => Family::of(a).cmp(&Family::of(b)),
    }
}

fn svc_cmp(a: &ServiceConfig, b: &ServiceConfig) -> Ordering {
    let fields = |s: &ServiceConfig| match s.key {
        SvcKey::Addr { proto, addr, port } => {
            (0u32, s.key.family(), proto.number(), Some(addr), port)
        }
        // ipvsadm gives fwmark services protocol TCP and address zero.
        SvcKey::Fwmark { mark, family } => (mark, family, Proto::Tcp.number(), None, 0),
    };
    let (fa, afa, pa, aa, porta) = fields(a);
    let (fb, afb, pb, ab, portb) = fields(b);
    wrap_cmp(fa, fb)
        .then(afa.cmp(&afb))
        .then(pa.cmp(&pb))
        .then_with(|| match (aa, ab) {
            (Some(x), Some(y)) => addr_cmp(x, y),
            _ => Ordering::Equal,
        })
        .then(porta.cmp(&portb))
}

fn dest_cmp(a: &DestConfig, b: &DestConfig) -> Ordering {
    addr_cmp(a.addr, b.addr).then(a.port.cmp(&b.port))
}

/// glibc's `msort`: top-down merge sort, left half `n/2`, ties (and
/// `<= 0`) taken from the left. Deterministic for non-transitive
/// comparisons, unlike `slice::sort_by`, which may panic on them.
fn msort<T: Copy>(v: &mut [T], cmp: &impl Fn(&T, &T) -> Ordering) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    msort(&mut v[..n1], cmp);
    msort(&mut v[n1..], cmp);
    let mut merged = Vec::with_capacity(n);
    let (mut i, mut j) = (0, n1);
    while i < n1 && j < n {
        if cmp(&v[i], &v[j]) != Ordering::Greater {
            merged.push(v[i]);
            i += 1;
        } else {
            merged.push(v[j]);
            j += 1;
        }
    }
    merged.extend_from_slice(&v[i..n1]);
    merged.extend_from_slice(&v[j..n]);
    v.copy_from_slice(&merged);
}

/// Services in listing order.
pub fn sorted_services(cfg: &Config, nosort: bool) -> Vec<&ServiceConfig> {
    let mut v: Vec<&ServiceConfig> = cfg.services.iter().collect();
    if !nosort {
        msort(&mut v, &|a: &&ServiceConfig, b: &&ServiceConfig| {
            svc_cmp(a, b)
        });
    }
    v
}

/// A service's servers in listing order. The kernel keeps servers newest
/// first (`list_add_rcu` at the head), which is both the `--nosort` order
/// and the input ipvsadm sorts — it matters for the non-transitive compare.
pub fn sorted_dests(svc: &ServiceConfig, nosort: bool) -> Vec<&DestConfig> {
    let mut v: Vec<&DestConfig> = svc.dests.iter().rev().collect();
    if !nosort {
        msort(&mut v, &|a: &&DestConfig, b: &&DestConfig| dest_cmp(a, b));
    }
    v
}

/// The service column of `-L` (`TCP  192.0.2.10:80`, `FWM  259 IPv6`).
fn list_name(key: &SvcKey) -> String {
    match *key {
        SvcKey::Addr { proto, addr, port } => {
            let mut s = format!("{:<4} {}", proto.list_name(), addr_port(addr, port));
            // ipvsadm cuts IPv4 names at 33 bytes (never reached numerically).
            if addr.is_ipv4() {
                s.truncate(33);
            }
            s
        }
        SvcKey::Fwmark { mark, family } => match family {
            Family::V4 => format!("FWM  {mark}"),
            Family::V6 => format!("FWM  {mark} IPv6"),
        },
    }
}

/// The service options of `-S` (`-t 192.0.2.10:80`, `-f 259 -6`).
fn rule_name(key: &SvcKey) -> String {
    match *key {
        SvcKey::Addr { proto, addr, port } => {
            format!("{} {}", proto.save_flag(), addr_port(addr, port))
        }
        SvcKey::Fwmark { mark, family } => match family {
            Family::V4 => format!("-f {mark}"),
            Family::V6 => format!("-f {mark} -6"),
        },
    }
}

/// The persistence mask if it is not the family default.
fn mask_text(svc: &ServiceConfig) -> Option<String> {
    if svc.netmask == Netmask::default_for(svc.key.family()) {
        return None;
    }
    Some(match svc.netmask {
        Netmask::V4(m) => m.to_string(),
        Netmask::V6(p) => p.to_string(),
    })
}

fn fwd_switch(m: FwdMethod) -> &'static str {
    match m {
        FwdMethod::Masq => "-m",
        FwdMethod::Tunnel => "-i",
        FwdMethod::Local | FwdMethod::Route => "-g",
    }
}

/// `--tun-info` column: `ipip`, `gue:PORT:-c`, `gre:+c`, or `n/a`.
fn tun_info(d: &DestConfig) -> String {
    match (d.fwd, d.tun) {
        (FwdMethod::Tunnel, Some(t)) => match t.kind {
            TunType::Ipip => "ipip".to_string(),
            TunType::Gue => format!("gue:{}:{}", t.port.unwrap_or(0), t.csum.info()),
            TunType::Gre => format!("gre:{}", t.csum.info()),
        },
        _ => "n/a".to_string(),
    }
}

fn title(out: &mut String, o: &ListOpts) {
    let head = "Prot LocalAddress:Port";
    if o.stats {
        let _ = writeln!(
            out,
            "{head:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        );
    } else if o.rate {
        let _ = writeln!(
            out,
            "{head:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        );
    } else if o.thresholds {
        let _ = writeln!(
            out,
            "{head:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        );
    } else if o.persistent_conn {
        let _ = writeln!(
            out,
            "{head:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Weight", "PersistConn", "ActiveConn", "InActConn"
        );
    } else if o.tun_info {
        out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n",
        );
    } else {
        out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        );
    }
}

fn stats_cols(out: &mut String, s: &Stats, rate: bool, exact: bool) {
    let v = if rate {
        [s.cps, s.inpps, s.outpps, s.inbps, s.outbps]
    } else {
        [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes]
    };
    for n in v {
        out.push_str(&largenum(n, exact));
    }
}

fn service_entry(out: &mut String, svc: &ServiceConfig, o: &ListOpts, c: &dyn Counters) {
    let dests = sorted_dests(svc, o.nosort);
    let counters: Vec<DestCounters> = dests.iter().map(|d| c.dest(&svc.key, d)).collect();
    let name = list_name(&svc.key);
    if o.stats || o.rate {
        let mut sum = Stats::default();
        for dc in &counters {
            sum.add(&dc.stats);
        }
        let s = c.service(svc, &sum);
        let _ = write!(out, "{name:<33}");
        stats_cols(out, &s, !o.stats, o.exact);
    } else {
        let _ = write!(out, "{name} {}", svc.sched);
        if !svc.sched_flags.is_empty() {
            let _ = write!(out, " ({})", svc.sched_flags.join(","));
        }
        if let Some(t) = svc.persistent {
            let _ = write!(out, " persistent {t}");
            if let Some(m) = mask_text(svc) {
                let _ = write!(out, " mask {m}");
            }
        }
        if let Some(pe) = &svc.pe {
            let _ = write!(out, " pe {pe}");
        }
        if svc.ops {
            out.push_str(" ops");
        }
    }
    out.push('\n');

    for (d, dc) in dests.iter().zip(&counters) {
        let name = addr_port(d.addr, d.port);
        if o.stats {
            let _ = write!(out, "  -> {name:<28}");
            stats_cols(out, &dc.stats, false, o.exact);
        } else if o.rate {
            // ipvsadm prints the first three server rates plainly.
            let s = &dc.stats;
            let _ = write!(
                out,
                "  -> {name:<28} {:8} {:8} {:8}",
                s.cps, s.inpps, s.outpps
            );
            out.push_str(&largenum(s.inbps, o.exact));
            out.push_str(&largenum(s.outbps, o.exact));
        } else if o.thresholds {
            let _ = write!(
                out,
                "  -> {name:<28} {:<10} {:<10} {:<10} {:<10}",
                d.u_threshold, d.l_threshold, dc.active_conns, dc.inactive_conns
            );
        } else if o.persistent_conn {
            let _ = write!(
                out,
                "  -> {name:<28} {:<9} {:<11} {:<10} {:<10}",
                d.weight, dc.persistent_conns, dc.active_conns, dc.inactive_conns
            );
        } else if o.tun_info {
            let _ = write!(
                out,
                "  -> {name:<28} {:<7} {:<13} {:<6} {:<10} {:<10}",
                d.fwd.list_name(),
                tun_info(d),
                d.weight,
                dc.active_conns,
                dc.inactive_conns
            );
        } else {
            let _ = write!(
                out,
                "  -> {name:<28} {:<7} {:<6} {:<10} {:<10}",
                d.fwd.list_name(),
                d.weight,
                dc.active_conns,
                dc.inactive_conns
            );
        }
        out.push('\n');
    }
}

/// `-L`: the service table, or the `-c`, `--timeout`, `--daemon` views.
/// A service given with `-L SERVICE` must exist ("No such service").
pub fn list(cfg: &Config, o: &ListOpts, counters: &dyn Counters) -> Result<String, CtlError> {
    if o.json {
        return super::json::list(cfg, o, counters);
    }
    if o.connection {
        let mut out = connections(&counters.connections());
        if o.persistent_conn {
            // ipvsadm adds the persistence engine columns to the title;
            // rows have them only for connections of a `--pe` service.
            out = out.replacen(&connections_title(false), &connections_title(true), 1);
        }
        return Ok(out);
    }
    if o.timeout {
        return Ok(timeout(&cfg.timeouts));
    }
    if o.daemon {
        // No sync daemon runs, so ipvsadm would print nothing either.
        return Ok(String::new());
    }
    let mut out = String::new();
    if let Some(key) = &o.service {
        let svc = cfg.service(key).ok_or(CtlError::NoSuchService)?;
        title(&mut out, o);
        service_entry(&mut out, svc, o, counters);
        return Ok(out);
    }
    out.push_str(VERSION_LINE);
    title(&mut out, o);
    for svc in sorted_services(cfg, o.nosort) {
        service_entry(&mut out, svc, o, counters);
    }
    Ok(out)
}

/// `-S`: the configuration as commands `-R` reads back. Thresholds are not
/// saved (as in ipvsadm).
pub fn save(cfg: &Config) -> String {
    let mut out = String::new();
    for svc in sorted_services(cfg, false) {
        let name = rule_name(&svc.key);
        let _ = write!(out, "-A {name} -s {}", svc.sched);
        if let Some(t) = svc.persistent {
            let _ = write!(out, " -p {t}");
            if let Some(m) = mask_text(svc) {
                let _ = write!(out, " -M {m}");
            }
        }
        if let Some(pe) = &svc.pe {
            let _ = write!(out, " --pe {pe}");
        }
        if svc.ops {
            out.push_str(" -o");
        }
        // ipvsadm writes the scheduler flags last.
        if !svc.sched_flags.is_empty() {
            let _ = write!(out, " -b {}", svc.sched_flags.join(","));
        }
        out.push('\n');
        for d in sorted_dests(svc, false) {
            let _ = write!(
                out,
                "-a {name} -r {} {} -w {}",
                addr_port(d.addr, d.port),
                fwd_switch(d.fwd),
                d.weight
            );
            if let (FwdMethod::Tunnel, Some(t)) = (d.fwd, d.tun) {
                let _ = write!(out, " --tun-type {}", t.kind.name());
                match t.kind {
                    TunType::Ipip => {}
                    TunType::Gue => {
                        let _ = write!(
                            out,
                            " --tun-port {} {}",
                            t.port.unwrap_or(0),
                            t.csum.option()
                        );
                    }
                    TunType::Gre => {
                        let _ = write!(out, " {}", t.csum.option());
                    }
                }
            }
            out.push('\n');
        }
    }
    out
}

/// The title line of `-L -c`, with the `--persistent-conn` columns or not.
fn connections_title(pe: bool) -> String {
    if pe {
        format!(
            "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} pe_data\n",
            "state", "source", "virtual", "destination", "pe name"
        )
    } else {
        format!(
            "pro expire {:<11} {:<18} {:<18} destination\n",
            "state", "source", "virtual"
        )
    }
}

/// `-L -c`: the connection table.
pub fn connections(rows: &[ConnRow]) -> String {
    let mut out = connections_head(false);
    for r in rows {
        connection_row(&mut out, r);
    }
    out
}

/// The two title lines of `-L -c` (with `--persistent-conn`'s columns or
/// not), for a listing made piece by piece.
pub fn connections_head(pe: bool) -> String {
    let mut out = String::from("IPVS connection entries\n");
    out.push_str(&connections_title(pe));
    out
}

/// One `-L -c` row, appended to `out`.
pub fn connection_row(out: &mut String, r: &ConnRow) {
    let secs = r.expire_ms / 1000;
    let expire = format!("{:02}:{:02}", secs / 60, secs % 60);
    let _ = writeln!(
        out,
        "{:<3} {:<6} {:<11} {:<18} {:<18} {}",
        r.proto.list_name(),
        expire,
        r.state,
        addr_port(r.client.ip(), r.client.port()),
        addr_port(r.virt.ip(), r.virt.port()),
        addr_port(r.dest.ip(), r.dest.port())
    );
}

/// `-L --timeout`.
pub fn timeout(t: &Timeouts) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        t.tcp, t.tcp_fin, t.udp
    )
}
