//! The nat table's targets (`DNAT`, `SNAT`, `MASQUERADE`) as parsed, and
//! what the pipeline needs to apply them: the options' meaning, where in
//! the hook chain each target may be used, and the addresses MASQUERADE
//! takes.
//!
//! Contract:
//! * `--to-destination ADDR[:PORT[-PORT]]`, `--to-source ADDR[:PORT[-PORT]]`
//!   (`[ADDR]:PORT` for IPv6), `--to-ports PORT[-PORT]` (MASQUERADE),
//!   `--random`, `--random-fully`, `--persistent` are read with iptables'
//!   meaning. An address range (`A-B`) is refused: uvs maps to one address,
//!   which is also all `--persistent` asks for (it keeps a client on one
//!   address of a range), so `--persistent` is accepted.
//! * DNAT's port range, as nf_nat picks a destination port: the packet's
//!   own port when it lies in the range and the reply tuple is free, else
//!   the first free port from the range's start (`--random`,
//!   `--random-fully`: from a hashed or random offset); see
//!   [`super::natct::NatTable::dnat_port`]. A range of one port is always
//!   that port.
//! * MASQUERADE's addresses follow the director's: re-read on every
//!   address event ([`watch_addrs`]), and the nat entries of flows
//!   masqueraded to an address that went away are dropped, as the kernel
//!   drops their conntrack entries.
//! * MASQUERADE takes the address of the director's interface whose
//!   connected subnet holds the packet's next destination (as the kernel's
//!   `inet_select_addr` on the route's interface for an on-link next hop),
//!   else the first address of the family; without `--to-ports` its ports
//!   come from [`MASQ_PORTS`], above Linux's default ephemeral range
//!   (`ip_local_port_range` 32768–60999), so a reply to one is never a
//!   reply to one of the director's own sockets, and uvs's guard keeps
//!   exactly those from the kernel.
//! * Where a target may be used (checked at load, as x_tables checks a
//!   target's hooks): DNAT from PREROUTING and OUTPUT; SNAT and MASQUERADE
//!   from POSTROUTING (SNAT at INPUT is refused: uvs does not rewrite
//!   packets it leaves to the director's own stack). REDIRECT is refused:
//!   it delivers to the director's own sockets.

use std::net::IpAddr;

use super::natct::PortPick;
use super::Prefix;
use crate::datapath::hooks::HookPoint;

/// Source ports of MASQUERADE without `--to-ports` (`0xf000..=0xffff`).
pub const MASQ_PORTS: (u16, u16) = (61440, 65535);
/// Source ports of SNAT with an address and no port (nf_nat's default
/// for a source port of 1024 and above).
pub const SNAT_PORTS: (u16, u16) = (1024, 65535);

/// Which nat target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    Dnat,
    Snat,
    Masquerade,
}

impl NatKind {
    pub fn name(self) -> &'static str {
        match self {
            NatKind::Dnat => "DNAT",
            NatKind::Snat => "SNAT",
            NatKind::Masquerade => "MASQUERADE",
        }
    }

    /// Whether the target may run at `point` (see the module doc).
    pub fn valid_at(self, point: HookPoint) -> bool {
        match self {
            NatKind::Dnat => matches!(point, HookPoint::PreRouting | HookPoint::LocalOut),
            NatKind::Snat | NatKind::Masquerade => point == HookPoint::PostRouting,
        }
    }
}

/// A nat rule's target with its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatTo {
    pub kind: NatKind,
    /// `None` for MASQUERADE (the outgoing interface's address).
    pub addr: Option<IpAddr>,
    /// Inclusive port range (`None`: the port stays, or MASQUERADE's own).
    pub ports: Option<(u16, u16)>,
    pub pick: PortPick,
}

/// `ADDR`, `ADDR:P`, `ADDR:P-Q`, `[V6]`, `[V6]:P[-Q]`.
pub fn parse_to(s: &str, opt: &str) -> Result<(IpAddr, Option<(u16, u16)>), String> {
    let (a, ports) = if let Some(rest) = s.strip_prefix('[') {
        let (a, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("{opt} {s}: missing ']'"))?;
        match tail {
            "" => (a, None),
            t => (
                a,
                Some(
                    t.strip_prefix(':')
                        .ok_or_else(|| format!("{opt} {s}: expected ':' after ']'"))?,
                ),
            ),
        }
    } else if s.matches(':').count() == 1 {
        let (a, p) = s.split_once(':').unwrap_or((s, ""));
        (a, Some(p))
    } else {
        (s, None)
    };
    if a.contains('-') {
        return Err(format!(
            "{opt} {s}: address ranges are not emulated (give one address)"
        ));
    }
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("{opt} {s}: invalid address '{a}'"))?;
    let ports = ports.map(|p| parse_ports(p, opt)).transpose()?;
    Ok((addr, ports))
}

/// `P` or `P-Q`, ports 1–65535.
pub fn parse_ports(s: &str, opt: &str) -> Result<(u16, u16), String> {
    let one = |x: &str| match x.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{opt}: invalid port '{x}'")),
    };
    let (a, b) = match s.split_once('-') {
        None => (one(s)?, one(s)?),
        Some((a, b)) => (one(a)?, one(b)?),
    };
    if a > b {
        return Err(format!("{opt}: port range '{s}' is backwards"));
    }
    Ok((a, b))
}

/// The director's addresses with their connected subnets, for
/// MASQUERADE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalNets(pub Vec<(Prefix, IpAddr)>);

impl LocalNets {
    /// The address MASQUERADE gives a packet going to `next`.
    pub fn masq_addr(&self, next: IpAddr) -> Option<IpAddr> {
        self.0
            .iter()
            .filter(|(p, _)| p.contains(next))
            .max_by_key(|(p, _)| p.len)
            .or_else(|| {
                self.0
                    .iter()
                    .find(|(_, a)| a.is_ipv4() == next.is_ipv4() && !a.is_loopback())
            })
            .map(|(_, a)| *a)
    }
}

/// The director's addresses with their subnets, read from the kernel when
/// a ruleset with nat rules is published and again on every address
/// change ([`watch_addrs`], [`follow_addrs`]); never per packet.
pub fn local_nets() -> LocalNets {
    let all = crate::sys::netlink::Netlink::open().and_then(|mut n| n.addrs_with_len());
    match all {
        Ok(v) => LocalNets(
            v.into_iter()
                .filter(|(_, a, _)| !a.is_loopback())
                .map(|(_, addr, len)| (Prefix { addr, len }, addr))
                .collect(),
        ),
        Err(e) => {
            log::warn!("uvs tables: reading the director's addresses for MASQUERADE: {e}");
            LocalNets::default()
        }
    }
}

impl super::Ruleset {
    /// Whether packets uvs sends meet a POSTROUTING table (mangle with a
    /// rule or a DROP policy there, or nat rules). O(1).
    #[inline]
    pub fn post_routing_on(&self) -> bool {
        self.nat_on || self.active(super::TableId::Mangle, HookPoint::PostRouting)
    }
}

/// MASQUERADE's addresses as they are now (`now`): the ruleset to publish
/// and the addresses that went away, or `None` when nothing changed or no
/// nat rule needs them.
pub fn refreshed(cur: &super::Ruleset, now: LocalNets) -> Option<(super::Ruleset, Vec<IpAddr>)> {
    if !(cur.nat_on || cur.needs_local) || cur.local == now {
        return None;
    }
    let gone: Vec<IpAddr> = cur
        .local
        .0
        .iter()
        .map(|&(_, a)| a)
        .filter(|a| !now.0.iter().any(|(_, b)| b == a))
        .collect();
    Some((
        cur.replaced_by(super::Ruleset::default())
            .with_local_nets(now),
        gone,
    ))
}

/// The control thread's answer to an address change (`tables-addrs`, sent
/// by [`watch_addrs`]): MASQUERADE's addresses re-read and published, and
/// the nat entries of flows masqueraded to an address that went away
/// dropped, as the kernel does. What changed, for the log.
pub fn follow_addrs(p: &crate::datapath::pipeline::Pipeline) -> String {
    let mut cur = p.tables.load_full();
    if cur.needs_links {
        let now = super::iface::read_links();
        if *cur.links != now {
            let new = cur.replaced_by(super::Ruleset::default()).with_links(now);
            p.tables.store(std::sync::Arc::new(new));
            log::info!("uvs tables: -i/-o's links re-read");
            cur = p.tables.load_full();
        }
    }
    if cur.needs_routes {
        let now = super::route::read_routes();
        if *cur.routes != now {
            let n = now.len();
            let new = cur.replaced_by(super::Ruleset::default()).with_routes(now);
            p.tables.store(std::sync::Arc::new(new));
            log::info!("uvs tables: -o's routes re-read ({n} prefixes)");
            cur = p.tables.load_full();
        }
    }
    if !(cur.nat_on || cur.needs_local) {
        return String::new();
    }
    let Some((new, gone)) = refreshed(&cur, local_nets()) else {
        return String::new();
    };
    p.tables.store(std::sync::Arc::new(new));
    let n = p.nat.forget_masq(&gone);
    let msg = format!(
        "MASQUERADE's addresses re-read; {} gone, {n} nat entries of theirs dropped\n",
        gone.len()
    );
    log::info!("uvs tables: {}", msg.trim_end());
    msg
}

/// Watches the director's addresses, links and routes (rtnetlink groups)
/// and asks the daemon, over its control socket, to re-read them when they
/// change (`tables-addrs`: MASQUERADE's addresses, `-i`/`-o`'s links,
/// `-o`'s routes). Subscribed in the caller's namespace. The thread
/// sleeps in a poller on the netlink socket (no periodic wake-up), drains
/// it when readable (the control plane only), and stops when the handle
/// is dropped.
pub fn watch_addrs(control: std::path::PathBuf) -> std::io::Result<AddrWatch> {
    use crate::sys::netlink::{Event, Events, Group};
    use mio::{unix::SourceFd, Interest, Poll, Token, Waker};
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering::Relaxed;
    const EVENTS: Token = Token(0);
    const STOP: Token = Token(1);
    let groups = [
        Group::Ipv4Addr,
        Group::Ipv6Addr,
        Group::Link,
        Group::Ipv4Route,
        Group::Ipv6Route,
    ];
    let mut ev = Events::subscribe(&groups).map_err(std::io::Error::other)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut SourceFd(&ev.as_raw_fd()), EVENTS, Interest::READABLE)?;
    let waker = std::sync::Arc::new(Waker::new(poll.registry(), STOP)?);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::Builder::new()
        .name("uvs-nat-addrs".into())
        .spawn(move || {
            let mut events = mio::Events::with_capacity(4);
            while !s.load(Relaxed) {
                if let Err(e) = poll.poll(&mut events, None) {
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        log::warn!("uvs tables: address events: {e}");
                        return;
                    }
                }
                let mut changed = false;
                loop {
                    match ev.drain(|e| {
                        // Links too: `-i` follows renames and new links;
                        // routes: `-o`'s table.
                        changed |= matches!(
                            e,
                            Event::Addr { .. }
                                | Event::Link { .. }
                                | Event::Route { .. }
                                | Event::Resync
                        );
                    }) {
                        Ok(n) if n >= Events::DRAIN_MAX => continue,
                        Ok(_) => break,
                        Err(e) => {
                            log::warn!("uvs tables: address events: {e}");
                            break;
                        }
                    }
                }
                if changed && !s.load(Relaxed) {
                    let argv = ["tables-addrs".to_string()];
                    if let Err(e) = crate::control::socket::call(&control, &argv) {
                        log::warn!("uvs tables: re-reading addresses: {e}");
                    }
                }
            }
        })?;
    Ok(AddrWatch {
        stop,
        waker,
        thread: Some(thread),
    })
}

/// The address watcher's thread ([`watch_addrs`]): woken, stopped and
/// joined on drop.
#[derive(Debug)]
pub struct AddrWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    waker: std::sync::Arc<mio::Waker>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for AddrWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the guard must keep from the kernel for the nat table (see
/// [`super::Ruleset::dnat_claims`]): DNAT'd destinations as a service's,
/// the DNAT targets' replies and ICMP errors as a NAT real server's (uvs
/// translates those errors; the kernel would forward them untranslated).
pub fn guard_claims(r: &super::Ruleset) -> Vec<crate::sys::guard::Elem> {
    use crate::sys::guard::Elem;
    let (to_us, servers) = r.dnat_claims();
    let mut addrs: Vec<IpAddr> = servers.iter().map(|&(_, a, _)| a).collect();
    addrs.sort_unstable();
    addrs.dedup();
    to_us
        .into_iter()
        .map(Elem::Service)
        .chain(servers.into_iter().map(Elem::NatServer))
        .chain(addrs.into_iter().map(Elem::NatAddr))
        .collect()
}

/// The nat OUTPUT DNAT rules, for local clients (`--local-src`): the
/// hosts the rules reached from nat OUTPUT name with `-d HOST` (uvs routes
/// them into its `uvs-lo` device for local origin, so the director's own
/// packets to them meet nat OUTPUT), and the lines of those that name none
/// (a local packet meets them only on its way to a VIP or such a host).
pub fn output_dnat(r: &super::Ruleset) -> (Vec<IpAddr>, Vec<usize>) {
    let (mut hosts, mut loose) = (Vec::new(), Vec::new());
    let Some(t) = r.table(super::TableId::Nat) else {
        return (hosts, loose);
    };
    let Some(start) = t.at[HookPoint::LocalOut as usize] else {
        return (hosts, loose);
    };
    let mut seen = vec![false; t.chains.len()];
    let mut todo = vec![start];
    while let Some(c) = todo.pop() {
        if std::mem::replace(&mut seen[c], true) {
            continue;
        }
        for rule in &t.chains[c].rules {
            match rule.target {
                super::Target::Jump(j) | super::Target::Goto(j) => todo.push(j),
                super::Target::Nat(NatTo {
                    kind: NatKind::Dnat,
                    ..
                }) => match rule.m.dst {
                    Some((false, d)) if d.is_host() => hosts.push(d.addr),
                    _ => loose.push(rule.line),
                },
                _ => {}
            }
        }
    }
    hosts.sort_unstable();
    hosts.dedup();
    loose.sort_unstable();
    (hosts, loose)
}

/// Each nat target is reachable only from built-in chains it may run at
/// (see `nat.rs`), as x_tables checks a target's hooks at load.
pub(super) fn hooks_check(
    chains: &[super::Chain],
    edges: &[Vec<(usize, usize)>],
) -> Result<(), super::TablesError> {
    super::each_reached_rule(chains, edges, |b, point, _, r| {
        let super::Target::Nat(n) = r.target else {
            return Ok(());
        };
        if n.kind.valid_at(point) {
            return Ok(());
        }
        let why = match (n.kind, point) {
            (NatKind::Snat, crate::datapath::hooks::HookPoint::LocalIn) => {
                " (uvs does not rewrite packets it leaves to the director's own stack)"
            }
            (NatKind::Dnat, _) => ": DNAT is valid from PREROUTING and OUTPUT",
            _ => ": SNAT and MASQUERADE are valid from POSTROUTING",
        };
        Err(super::TablesError {
            line: r.line,
            msg: format!("{} reached from {}{why}", n.kind.name(), chains[b].name),
        })
    })
}
