//! The peers uvs is compared with, and the one service set they are all
//! loaded with.
//!
//! Every peer gets the same services: `N - 1` filler TCP services, then the
//! measured TCP service 192.0.2.10:80 and the measured UDP service
//! 192.0.2.10:53 (or those two first, with `--first`). Each service has the
//! same two real servers, 203.0.113.11 and .12 (ports 80 and 53), so that
//! no peer pays for resolving thousands of neighbours the lab does not have.
//!
//! * iptables: kube-proxy's iptables mode in the director's nat table:
//!   PREROUTING → KUBE-SERVICES (one rule per service, walked in order) →
//!   KUBE-SVC-* (`statistic --mode random --probability 0.5`) → KUBE-SEP-*
//!   (DNAT), loaded by one `iptables-restore`; a change is kube-proxy's
//!   partial `iptables-restore --noflush`: KUBE-SERVICES rewritten whole,
//!   plus the changed service's chains.
//! * nftables: kube-proxy's nftables mode: a verdict map keyed by
//!   `ipv4_addr . inet_proto . inet_service`, a chain per service picking an
//!   endpoint with `numgen random mod 2 vmap`, a chain per endpoint doing
//!   `dnat to`; loaded by one `nft -f`; a change is an `nft -f` of only
//!   what changed.
//! * routing: no load balancer; the client talks to the real servers'
//!   addresses through the director, which only forwards (the ceiling).
//! * uvs: `uvs run` in the director, the services loaded by `uvsadm -R`,
//!   changes by uvsadm commands over the control socket.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::server::{TCP_PORT, UDP_PORT};

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    Iptables,
    Nftables,
    Routing,
    Uvs,
}

impl Peer {
    /// Every peer, in report order.
    pub const ALL: [Peer; 4] = [Peer::Iptables, Peer::Nftables, Peer::Routing, Peer::Uvs];

    pub fn name(self) -> &'static str {
        match self {
            Peer::Iptables => "iptables",
            Peer::Nftables => "nftables",
            Peer::Routing => "routing",
            Peer::Uvs => "uvs",
        }
    }

    pub fn parse(s: &str) -> Option<Peer> {
        Peer::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Whether the peer balances (and so has services to load and change).
    pub fn balances(self) -> bool {
        self != Peer::Routing
    }

    /// The programs the peer needs, with the Debian package of each.
    pub fn tools(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Peer::Iptables => &[("iptables-restore", "iptables")],
            Peer::Nftables => &[("nft", "nftables")],
            Peer::Routing | Peer::Uvs => &[],
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The measured VIP.
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The two real servers (scripts/lab.sh).
pub const RS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(203, 0, 113, 11),
    Ipv4Addr::new(203, 0, 113, 12),
];
/// Filler VIPs are 192.0.2.FILLER_BASE … +FILLER_VIPS-1, ports from 1024.
const FILLER_BASE: u8 = 20;
const FILLER_VIPS: usize = 230;
/// The most services a run may ask for (filler VIPs × ports).
pub const MAX_SERVICES: usize = FILLER_VIPS * (65535 - 1024);

/// The transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
    fn uvs_flag(self) -> &'static str {
        match self {
            Proto::Tcp => "-t",
            Proto::Udp => "-u",
        }
    }
}

/// One virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svc {
    pub proto: Proto,
    pub vip: Ipv4Addr,
    pub port: u16,
    /// The real servers' port.
    pub rport: u16,
    /// Its name (`bench/svc7`), as kube-proxy's `namespace/name`.
    pub name: String,
    /// 16 hex digits naming its chains, as kube-proxy's hashed suffix.
    hash: String,
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Svc {
    fn new(proto: Proto, vip: Ipv4Addr, port: u16, rport: u16, name: String) -> Svc {
        let hash = format!("{:016X}", fnv(&format!("{name}:{}", proto.name())));
        Svc {
            proto,
            vip,
            port,
            rport,
            name,
            hash,
        }
    }
    fn svc_chain(&self) -> String {
        format!("KUBE-SVC-{}", self.hash)
    }
    fn sep_chain(&self, k: usize) -> String {
        format!(
            "KUBE-SEP-{}",
            &format!("{:016X}", fnv(&format!("{}{k}", self.hash)))
        )
    }
    fn nft_service(&self) -> String {
        format!(
            "service-{}-{}/{}/p{}",
            &self.hash[..8],
            self.name,
            self.proto.name(),
            self.port
        )
    }
    fn nft_endpoint(&self, k: usize) -> String {
        format!(
            "endpoint-{}-{}/{}/p{}__{}/{}",
            &format!("{:016X}", fnv(&format!("{}{k}", self.hash)))[..8],
            self.name,
            self.proto.name(),
            self.port,
            RS[k],
            self.rport
        )
    }
}

/// The service set of a run with `n` services (n ≥ 1): the fillers and the
/// two measured services, those last unless `first`.
pub fn service_set(n: usize, first: bool) -> Vec<Svc> {
    let measured = [
        Svc::new(Proto::Tcp, VIP, TCP_PORT, TCP_PORT, "bench/measured".into()),
        Svc::new(Proto::Udp, VIP, UDP_PORT, UDP_PORT, "bench/measured".into()),
    ];
    let fillers = (0..n.saturating_sub(1)).map(|i| {
        let vip = Ipv4Addr::new(192, 0, 2, FILLER_BASE + (i % FILLER_VIPS) as u8);
        let port = 1024 + (i / FILLER_VIPS) as u16;
        Svc::new(Proto::Tcp, vip, port, TCP_PORT, format!("bench/svc{i}"))
    });
    let mut v = Vec::with_capacity(n + 1);
    if first {
        v.extend(measured.iter().cloned());
        v.extend(fillers);
    } else {
        v.extend(fillers);
        v.extend(measured.iter().cloned());
    }
    v
}

/// The service added and removed again to time one change.
pub fn change_service() -> Svc {
    Svc::new(
        Proto::Tcp,
        Ipv4Addr::new(192, 0, 2, 251),
        8080,
        TCP_PORT,
        "bench/added".into(),
    )
}

/// Where the client sends TCP and UDP traffic for `peer`.
pub fn targets(peer: Peer) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    match peer {
        Peer::Routing => (
            RS.iter()
                .map(|&a| SocketAddr::from((a, TCP_PORT)))
                .collect(),
            RS.iter()
                .map(|&a| SocketAddr::from((a, UDP_PORT)))
                .collect(),
        ),
        _ => (
            vec![SocketAddr::from((VIP, TCP_PORT))],
            vec![SocketAddr::from((VIP, UDP_PORT))],
        ),
    }
}

// ---- iptables (kube-proxy's iptables mode) ----

fn ipt_service_rule(out: &mut String, s: &Svc) {
    let p = s.proto.name();
    let _ = writeln!(
        out,
        "-A KUBE-SERVICES -d {}/32 -p {p} -m comment --comment \"{} cluster IP\" -m {p} --dport {} -j {}",
        s.vip,
        s.name,
        s.port,
        s.svc_chain()
    );
}

fn ipt_declare(out: &mut String, s: &Svc) {
    let _ = writeln!(out, ":{} - [0:0]", s.svc_chain());
    for k in 0..RS.len() {
        let _ = writeln!(out, ":{} - [0:0]", s.sep_chain(k));
    }
}

fn ipt_chains(out: &mut String, s: &Svc) {
    let (p, svc) = (s.proto.name(), s.svc_chain());
    let _ = writeln!(
        out,
        "-A {svc} -m comment --comment \"{} -> {}:{}\" -m statistic --mode random --probability 0.50000000000 -j {}",
        s.name,
        RS[0],
        s.rport,
        s.sep_chain(0)
    );
    let _ = writeln!(
        out,
        "-A {svc} -m comment --comment \"{} -> {}:{}\" -j {}",
        s.name,
        RS[1],
        s.rport,
        s.sep_chain(1)
    );
    for (k, rs) in RS.iter().enumerate() {
        let sep = s.sep_chain(k);
        let _ = writeln!(
            out,
            "-A {sep} -s {rs}/32 -m comment --comment {} -j KUBE-MARK-MASQ",
            s.name
        );
        let _ = writeln!(
            out,
            "-A {sep} -p {p} -m comment --comment {} -m {p} -j DNAT --to-destination {rs}:{}",
            s.name, s.rport
        );
    }
}

/// The whole nat table, for one `iptables-restore`.
pub fn iptables_full(svcs: &[Svc]) -> String {
    let mut o = String::with_capacity(svcs.len() * 900 + 512);
    o.push_str("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n");
    for s in svcs {
        ipt_declare(&mut o, s);
    }
    o.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    o.push_str("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n");
    for s in svcs {
        ipt_service_rule(&mut o, s);
    }
    for s in svcs {
        ipt_chains(&mut o, s);
    }
    o.push_str("COMMIT\n");
    o
}

/// kube-proxy's partial sync (`iptables-restore --noflush`) after `change`
/// was added (`added`) or removed: KUBE-SERVICES rewritten for `now` (the
/// services that exist afterwards), the changed service's chains written or
/// deleted.
pub fn iptables_change(now: &[Svc], change: &Svc, added: bool) -> String {
    let mut o = String::with_capacity(now.len() * 160 + 1024);
    o.push_str("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n");
    ipt_declare(&mut o, change);
    o.push_str("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n");
    for s in now {
        ipt_service_rule(&mut o, s);
    }
    if added {
        ipt_chains(&mut o, change);
    } else {
        let _ = writeln!(o, "-X {}", change.svc_chain());
        for k in 0..RS.len() {
            let _ = writeln!(o, "-X {}", change.sep_chain(k));
        }
    }
    o.push_str("COMMIT\n");
    o
}

// ---- nftables (kube-proxy's nftables mode) ----

const NFT_T: &str = "ip kube-proxy";

fn nft_add_chains(o: &mut String, s: &Svc) {
    let _ = writeln!(o, "add chain {NFT_T} {}", s.nft_service());
    for k in 0..RS.len() {
        let _ = writeln!(o, "add chain {NFT_T} {}", s.nft_endpoint(k));
    }
}

fn nft_add_rules(o: &mut String, s: &Svc) {
    let _ = writeln!(
        o,
        "add rule {NFT_T} {} numgen random mod 2 vmap {{ 0 : goto {} , 1 : goto {} }}",
        s.nft_service(),
        s.nft_endpoint(0),
        s.nft_endpoint(1)
    );
    for (k, rs) in RS.iter().enumerate() {
        let ep = s.nft_endpoint(k);
        let _ = writeln!(
            o,
            "add rule {NFT_T} {ep} ip saddr {rs} jump mark-for-masquerade"
        );
        let _ = writeln!(
            o,
            "add rule {NFT_T} {ep} meta l4proto {} dnat to {rs}:{}",
            s.proto.name(),
            s.rport
        );
    }
}

fn nft_element(s: &Svc) -> String {
    format!("{} . {} . {}", s.vip, s.proto.name(), s.port)
}

/// The whole `kube-proxy` table, for one `nft -f`.
pub fn nftables_full(svcs: &[Svc]) -> String {
    let mut o = String::with_capacity(svcs.len() * 700 + 1024);
    let _ = writeln!(o, "add table {NFT_T}");
    let _ = writeln!(
        o,
        "add chain {NFT_T} nat-prerouting {{ type nat hook prerouting priority dstnat ; policy accept ; }}"
    );
    let _ = writeln!(o, "add chain {NFT_T} services");
    let _ = writeln!(o, "add chain {NFT_T} mark-for-masquerade");
    for s in svcs {
        nft_add_chains(&mut o, s);
    }
    let _ = writeln!(
        o,
        "add map {NFT_T} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP traffic\" ; }}"
    );
    let _ = writeln!(o, "add rule {NFT_T} nat-prerouting jump services");
    let _ = writeln!(
        o,
        "add rule {NFT_T} mark-for-masquerade mark set mark or 0x4000"
    );
    let _ = writeln!(
        o,
        "add rule {NFT_T} services ip daddr . meta l4proto . th dport vmap @service-ips"
    );
    for s in svcs {
        nft_add_rules(&mut o, s);
    }
    for s in svcs {
        let _ = writeln!(
            o,
            "add element {NFT_T} service-ips {{ {} : goto {} }}",
            nft_element(s),
            s.nft_service()
        );
    }
    o
}

/// The `nft -f` transaction kube-proxy's nftables mode sends when `change`
/// is added or removed: only that service's objects.
pub fn nftables_change(change: &Svc, added: bool) -> String {
    let mut o = String::new();
    if added {
        nft_add_chains(&mut o, change);
        nft_add_rules(&mut o, change);
        let _ = writeln!(
            o,
            "add element {NFT_T} service-ips {{ {} : goto {} }}",
            nft_element(change),
            change.nft_service()
        );
    } else {
        let _ = writeln!(
            o,
            "delete element {NFT_T} service-ips {{ {} }}",
            nft_element(change)
        );
        let chains: Vec<String> = std::iter::once(change.nft_service())
            .chain((0..RS.len()).map(|k| change.nft_endpoint(k)))
            .collect();
        for c in &chains {
            let _ = writeln!(o, "flush chain {NFT_T} {c}");
        }
        for c in &chains {
            let _ = writeln!(o, "delete chain {NFT_T} {c}");
        }
    }
    o
}

// ---- uvs ----

fn uvs_service(o: &mut String, s: &Svc) {
    let f = s.proto.uvs_flag();
    let _ = writeln!(o, "-A {f} {}:{} -s rr", s.vip, s.port);
    for rs in RS {
        let _ = writeln!(o, "-a {f} {}:{} -r {rs}:{} -m -w 1", s.vip, s.port, s.rport);
    }
}

/// The `uvsadm -R` script loading `svcs`.
pub fn uvs_restore(svcs: &[Svc]) -> String {
    let mut o = String::with_capacity(svcs.len() * 150);
    for s in svcs {
        uvs_service(&mut o, s);
    }
    o
}

/// The uvsadm commands that add `change` (three) or remove it (one).
pub fn uvs_change(change: &Svc, added: bool) -> Vec<String> {
    if added {
        let mut o = String::new();
        uvs_service(&mut o, change);
        o.lines().map(str::to_string).collect()
    } else {
        vec![format!(
            "-D {} {}:{}",
            change.proto.uvs_flag(),
            change.vip,
            change.port
        )]
    }
}

// ---- running the kernel's tools ----

/// Finds `prog` on `$PATH` or in the sbin directories (root's tools live
/// there, and a test's `$PATH` may not list them).
pub fn find_tool(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Runs `prog args` inside namespace `ns` with `input` on its standard
/// input and returns its wall time, from start to exit. Killed (by its PID)
/// after `limit` or when `stop` is raised; fails with its stderr when it
/// fails. The child is started from a thread inside the namespace, so it is
/// born there without `ip netns exec`'s extra process.
pub fn run_tool(
    ns: &str,
    prog: &Path,
    args: &[&str],
    input: String,
    limit: Duration,
    stop: &Arc<AtomicBool>,
) -> io::Result<Duration> {
    let (prog, stop) = (prog.to_path_buf(), stop.clone());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    crate::sys::netns::run_in(ns, move || -> io::Result<Duration> {
        let what = format!("{} {}", prog.display(), args.join(" "));
        let start = Instant::now();
        let mut child = Command::new(&prog)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin"))?;
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("no stderr"))?;
        // Feed and drain on helper threads, so a large script or a chatty
        // failure never blocks the wait below.
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut next_note = Duration::from_secs(30);
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            // A large load can take minutes: say that it is still going.
            if start.elapsed() >= next_note {
                println!(
                    "uvs bench:   {} still running after {} s",
                    what.trim_end(),
                    next_note.as_secs()
                );
                next_note += Duration::from_secs(30);
            }
            if start.elapsed() > limit || stop.load(Ordering::Relaxed) {
                let _ = child.kill();
                let _ = child.wait();
                let _ = feeder.join();
                let _ = reader.join();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{what}: stopped after {:.1} s",
                        start.elapsed().as_secs_f64()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let took = start.elapsed();
        let _ = feeder.join();
        let err = reader.join().unwrap_or_default();
        if !status.success() {
            let tail: String = err.lines().take(5).collect::<Vec<_>>().join("; ");
            return Err(io::Error::other(format!("{what}: {status}: {tail}")));
        }
        Ok(took)
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_set_puts_the_measured_services_last_or_first() {
        let s = service_set(5, false);
        assert_eq!(s.len(), 6);
        assert_eq!((s[4].vip, s[4].port, s[4].proto), (VIP, 80, Proto::Tcp));
        assert_eq!((s[5].vip, s[5].port, s[5].proto), (VIP, 53, Proto::Udp));
        let f = service_set(5, true);
        assert_eq!((f[0].vip, f[0].port), (VIP, 80));
        assert_eq!(service_set(1, false).len(), 2);
    }

    #[test]
    fn fillers_are_distinct_and_avoid_the_measured_and_changed_services() {
        let s = service_set(20_000, false);
        let mut keys: Vec<_> = s
            .iter()
            .map(|s| (s.vip, s.port, s.proto == Proto::Tcp))
            .collect();
        let c = change_service();
        keys.push((c.vip, c.port, true));
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n);
        let mut chains: Vec<_> = s.iter().map(Svc::svc_chain).collect();
        chains.sort();
        chains.dedup();
        assert_eq!(chains.len(), s.len());
        assert!(
            chains.iter().all(|c| c.len() <= 28),
            "iptables chain names fit"
        );
    }

    #[test]
    fn iptables_shape_is_kube_proxys() {
        let s = service_set(2, false);
        let t = iptables_full(&s);
        assert!(t.starts_with("*nat\n") && t.ends_with("COMMIT\n"));
        assert_eq!(t.matches("-A KUBE-SERVICES ").count(), 3);
        assert_eq!(t.matches("--probability 0.5").count(), 3);
        assert_eq!(t.matches("-j DNAT --to-destination").count(), 6);
        // The measured TCP service is the second-last rule of KUBE-SERVICES.
        let rules: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES "))
            .collect();
        assert!(rules[1].contains("-d 192.0.2.10/32 -p tcp") && rules[1].contains("--dport 80 "));
        let c = change_service();
        let add = iptables_change(&s, &c, true);
        assert!(add.contains(&format!(":{} - [0:0]", c.svc_chain())));
        let del = iptables_change(&s, &c, false);
        assert!(del.contains(&format!("-X {}", c.svc_chain())));
    }

    #[test]
    fn nftables_shape_is_kube_proxys() {
        let s = service_set(3, false);
        let t = nftables_full(&s);
        assert!(t.contains("type ipv4_addr . inet_proto . inet_service : verdict"));
        assert_eq!(t.matches("numgen random mod 2 vmap").count(), 4);
        assert!(t.contains("add element ip kube-proxy service-ips { 192.0.2.10 . udp . 53 : goto "));
        let del = nftables_change(&change_service(), false);
        assert!(del
            .starts_with("delete element ip kube-proxy service-ips { 192.0.2.251 . tcp . 8080 }"));
    }

    #[test]
    fn uvs_script_has_three_lines_per_service() {
        let s = service_set(2, false);
        assert_eq!(uvs_restore(&s).lines().count(), 9);
        assert_eq!(uvs_change(&change_service(), true).len(), 3);
        assert_eq!(
            uvs_change(&change_service(), false),
            vec!["-D -t 192.0.2.251:8080"]
        );
    }
}
