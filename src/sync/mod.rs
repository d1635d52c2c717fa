//! The connection sync daemon: `uvsadm --start-daemon master|backup`.
//!
//! A **master** thread wakes every 100 ms, collects the connections that
//! the packet path marked for sending ([`uvs_conntrack::Table::sync_page`],
//! a fixed number of table slots per tick, so a full pass over a table of
//! a million entries takes about two seconds — the kernel's own flush
//! delay — and costs the same per tick whatever the table holds), and
//! sends them as IPVS sync protocol version 1 messages ([`uvs_sync`]) to
//! the multicast group, by default 224.0.0.81:8848 with TTL 1, out of the
//! `--mcast-interface`. Messages are flushed at the end of every tick, so a
//! connection reaches the backup within about 100 ms of being marked.
//!
//! A **backup** thread joins the group on its interface and installs every
//! connection it receives into this director's table, bound to this
//! director's own real server of that service
//! ([`uvs_conntrack::Table::install_synced`]). When this director takes
//! over (its VIPs start receiving the traffic), those connections carry on
//! to the same real servers.
//!
//! Persistence templates travel with the connections they control (the
//! kernel's `IP_VS_CONN_F_TEMPLATE` entries, state 0, the template's own
//! timeout) and a backup installs them
//! ([`uvs_conntrack::Table::install_synced_template`]), so after takeover
//! a persistent client's *new* connections go to the real server the
//! master had chosen for it.
//!
//! **Unicast** (`--sync-peer ADDR`, a uvs extension: ipvsadm 1.31 has no
//! such option and the kernel's sync-daemon netlink attributes name only a
//! multicast group, port and TTL): a master sends its messages to ADDR
//! instead of the group; a backup listens on the port of its interface
//! without joining a group and takes messages from ADDR only (others are
//! counted, `sync.backup.other_sender`). The TTL is `--mcast-ttl`'s
//! (default 1: raise it when the peer is beyond a router).
//!
//! The wire format is the kernel's, so uvs and a kernel IPVS director can
//! be master and backup of each other. What a backup cannot use is counted
//! by reason and never stops it: messages for another sync ID, malformed
//! messages, entries for a service or real server this director does not
//! have (or a template for a service that is not persistent here).

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use uvs_conntrack::{
    pe_digest, ConnInfo, ConnState, ListCursor, NewConn, Synced, SyncedTemplate, TemplateKey,
};
use uvs_sched::FwdMethod;
use uvs_sync::{decode, flags, Conn, MessageError, MessageWriter};

use crate::control::ctl::{SyncConfig, SyncRole};
use crate::datapath::pipeline::Pipeline;
use crate::datapath::service::{Pe, Services};

/// Master tick.
const TICK: Duration = Duration::from_millis(100);
/// Table slots a master visits per tick.
const SLOTS_PER_TICK: usize = 64 * 1024;
/// IPv4 + UDP headers, for the default message length.
const IP_UDP_V4: usize = 28;
/// IPv6 + UDP headers.
const IP_UDP_V6: usize = 48;

/// Why a daemon could not start or stop (ipvsadm's texts for the kernel's
/// errors).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// `EEXIST`.
    #[error("Daemon has already run")]
    Running,
    /// `ESRCH`.
    #[error("No daemon is running")]
    NotRunning,
    /// `ENODEV`.
    #[error("No such device")]
    NoDevice,
    /// The socket could not be set up.
    #[error("sync daemon socket: {0}")]
    Socket(#[from] io::Error),
}

/// What a daemon did, for `uvs stats` and the closing of a test.
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Messages sent (master) or received (backup).
    pub messages: AtomicU64,
    /// Connections sent (master) or installed (backup).
    pub conns: AtomicU64,
    /// Master: templates sent. Backup: templates installed.
    pub templates: AtomicU64,
    /// Backup: messages dropped whole (bad header, length or version).
    pub bad_messages: AtomicU64,
    /// Backup: messages of another sync ID (`--syncid`), dropped whole.
    pub other_syncid: AtomicU64,
    /// Backup with `--sync-peer`: datagrams from another address, dropped.
    pub other_sender: AtomicU64,
    /// Backup: connections installed without the sequence adjustment their
    /// master sent (uvs has no application helpers to apply one).
    pub seq_ignored: AtomicU64,
    /// Backup: entries skipped (malformed, unknown protocol or state).
    pub bad_entries: AtomicU64,
    /// Backup: entries for a service or real server this director lacks,
    /// or templates for a service not persistent here.
    pub no_dest: AtomicU64,
    /// Send or install errors (table full, socket errors).
    pub errors: AtomicU64,
}

struct Running {
    cfg: SyncConfig,
    maxlen: usize,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<SyncStats>,
    pipeline: Arc<Pipeline>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.cfg.role == SyncRole::Master {
            set_marking(&self.pipeline, false);
        }
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The master and backup daemons of one uvs (each at most once, as in
/// the kernel; both may run at the same time).
#[derive(Default)]
pub struct SyncDaemons {
    master: Option<Running>,
    backup: Option<Running>,
}

impl std::fmt::Debug for SyncDaemons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.list())
    }
}

fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

fn group_of(cfg: &SyncConfig) -> IpAddr {
    cfg.group.unwrap_or(IpAddr::V4(uvs_sync::DEFAULT_GROUP_V4))
}

impl SyncDaemons {
    /// Starts the master or backup daemon; `epoch` is the engine's clock
    /// (what the connection table's `now` counts from).
    pub fn start(
        &mut self,
        cfg: SyncConfig,
        pipeline: Arc<Pipeline>,
        epoch: Instant,
    ) -> Result<(), SyncError> {
        if self.slot(cfg.role).is_some() {
            return Err(SyncError::Running);
        }
        let index = ifindex(&cfg.ifname).ok_or(SyncError::NoDevice)?;
        let group = group_of(&cfg);
        let port = cfg.port.unwrap_or(uvs_sync::DEFAULT_PORT);
        let hdr = if cfg.peer.unwrap_or(group).is_ipv6() {
            IP_UDP_V6
        } else {
            IP_UDP_V4
        };
        // The kernel's default message length: a 1500-byte datagram (a
        // backup reads into a 64 KiB buffer whatever it is).
        let maxlen = cfg.maxlen.map_or(1500 - hdr, usize::from);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(SyncStats::default());
        let (st, sp, pl) = (stats.clone(), stop.clone(), pipeline.clone());
        let thread = match cfg.role {
            SyncRole::Master => {
                let sock = master_socket(&cfg, index, group, port)?;
                let syncid = cfg.syncid;
                std::thread::Builder::new()
                    .name("uvs-sync-master".into())
                    .spawn(move || master(sock, syncid, maxlen, pipeline, epoch, &st, &sp))?
            }
            SyncRole::Backup => {
                let sock = backup_socket(&cfg, index, group, port)?;
                let (syncid, peer) = (cfg.syncid, cfg.peer);
                std::thread::Builder::new()
                    .name("uvs-sync-backup".into())
                    .spawn(move || backup(sock, syncid, peer, pipeline, epoch, &st, &sp))?
            }
        };
        let role = cfg.role;
        if role == SyncRole::Master {
            set_marking(&pl, true);
        }
        *self.slot(role) = Some(Running {
            cfg,
            maxlen,
            stop,
            thread: Some(thread),
            stats,
            pipeline: pl,
        });
        Ok(())
    }

    /// Stops the master or backup daemon.
    pub fn stop(&mut self, role: SyncRole) -> Result<(), SyncError> {
        self.slot(role)
            .take()
            .map(drop)
            .ok_or(SyncError::NotRunning)
    }

    /// Where the daemon of `role` is kept.
    fn slot(&mut self, role: SyncRole) -> &mut Option<Running> {
        match role {
            SyncRole::Master => &mut self.master,
            SyncRole::Backup => &mut self.backup,
        }
    }

    /// The running daemons, master first.
    fn running(&self) -> impl Iterator<Item = &Running> {
        [&self.master, &self.backup].into_iter().flatten()
    }

    /// `-L --daemon`, as ipvsadm prints what the kernel reports: each
    /// running daemon with its interface, sync ID, message length, group,
    /// port and TTL.
    pub fn list(&self) -> String {
        let mut out = String::new();
        for r in self.running() {
            let c = &r.cfg;
            // ipvsadm's line; a unicast peer shows where the group would.
            let to = match c.peer {
                Some(p) => format!("peer={p}"),
                None => format!("group={}", group_of(c)),
            };
            out.push_str(&format!(
                "{} sync daemon (mcast={}, syncid={}, maxlen={}, {to}, port={}, ttl={})\n",
                c.role.name(),
                c.ifname,
                c.syncid,
                r.maxlen,
                c.port.unwrap_or(uvs_sync::DEFAULT_PORT),
                c.ttl.unwrap_or(uvs_sync::DEFAULT_TTL),
            ));
        }
        out
    }

    /// `name value` lines of the running daemons' counters, for `uvs
    /// stats` and `/metrics` (`sync.master.messages`, `sync.backup.conns`, …).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for r in self.running() {
            let s = &r.stats;
            let role = r.cfg.role.name();
            for (name, v) in [
                ("messages", &s.messages),
                ("conns", &s.conns),
                ("templates", &s.templates),
                ("bad_messages", &s.bad_messages),
                ("other_syncid", &s.other_syncid),
                ("other_sender", &s.other_sender),
                ("bad_entries", &s.bad_entries),
                ("no_dest", &s.no_dest),
                ("seq_ignored", &s.seq_ignored),
                ("errors", &s.errors),
            ] {
                out.push_str(&format!("sync.{role}.{name} {}\n", v.load(Relaxed)));
            }
        }
        out
    }
}

/// Switches the packet path's marking of connections for a master.
fn set_marking(pl: &Pipeline, on: bool) {
    let mut k = pl.conns.knobs();
    k.sync_master = on;
    pl.conns.set_knobs(&k);
}

fn master_socket(cfg: &SyncConfig, index: u32, group: IpAddr, port: u16) -> io::Result<UdpSocket> {
    let to = cfg.peer.unwrap_or(group);
    let dom = if to.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(dom, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind_device(Some(cfg.ifname.as_bytes()))?;
    let ttl = u32::from(cfg.ttl.unwrap_or(uvs_sync::DEFAULT_TTL));
    if let Some(peer) = cfg.peer {
        if peer.is_ipv6() {
            s.set_unicast_hops_v6(ttl)?;
        } else {
            s.set_ttl(ttl)?;
        }
    } else if group.is_ipv6() {
        s.set_multicast_if_v6(index)?;
        s.set_multicast_hops_v6(ttl)?;
        s.set_multicast_loop_v6(false)?;
    } else {
        s.set_multicast_ttl_v4(ttl)?;
        s.set_multicast_loop_v4(false)?;
    }
    s.connect(&SockAddr::from(SocketAddr::new(to, port)))?;
    s.set_write_timeout(Some(Duration::from_millis(200)))?;
    Ok(s.into())
}

fn backup_socket(cfg: &SyncConfig, index: u32, group: IpAddr, port: u16) -> io::Result<UdpSocket> {
    let dom = if group.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    if let Some(peer) = cfg.peer {
        // Unicast: any local address of the interface, no group.
        let (dom, any) = if peer.is_ipv6() {
            (Domain::IPV6, IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED))
        } else {
            (Domain::IPV4, IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED))
        };
        let s = Socket::new(dom, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.bind_device(Some(cfg.ifname.as_bytes()))?;
        s.bind(&SockAddr::from(SocketAddr::new(any, port)))?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        return Ok(s.into());
    }
    let s = Socket::new(dom, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.bind_device(Some(cfg.ifname.as_bytes()))?;
    s.bind(&SockAddr::from(SocketAddr::new(group, port)))?;
    match group {
        IpAddr::V4(g) => {
            s.join_multicast_v4_n(&g, &socket2::InterfaceIndexOrAddress::Index(index))?
        }
        IpAddr::V6(g) => s.join_multicast_v6(&g, index)?,
    }
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(s.into())
}

/// A marked connection as the kernel's master would send it.
fn to_wire(c: &ConnInfo) -> Conn {
    let mut f = c.fwd as u32;
    if c.template {
        f |= flags::TEMPLATE;
    } else if !c.state.is_active() {
        f |= flags::INACTIVE;
    }
    Conn {
        protocol: c.proto,
        flags: f,
        state: if c.template { 0 } else { c.state.number() },
        caddr: c.caddr,
        cport: c.cport,
        vaddr: c.vaddr,
        vport: c.vport,
        daddr: c.daddr,
        dport: c.dport,
        fwmark: c.fwmark.unwrap_or(0),
        timeout: (c.expires_in_ms / 1000) as u32,
        seq: None,
        pe: None,
    }
}

fn master(
    sock: UdpSocket,
    syncid: u8,
    maxlen: usize,
    pl: Arc<Pipeline>,
    epoch: Instant,
    stats: &SyncStats,
    stop: &AtomicBool,
) {
    let mut w = MessageWriter::new(syncid, maxlen);
    let mut cur = ListCursor::default();
    let mut batch = Vec::with_capacity(1024);
    let send = |m: Vec<u8>| match sock.send(&m) {
        Ok(_) => {
            stats.messages.fetch_add(1, Relaxed);
        }
        Err(_) => {
            stats.errors.fetch_add(1, Relaxed);
        }
    };
    while !stop.load(Relaxed) {
        std::thread::sleep(TICK);
        let now = epoch.elapsed().as_millis() as u64;
        batch.clear();
        cur = pl
            .conns
            .sync_page(cur, SLOTS_PER_TICK, now, &mut batch)
            .unwrap_or_default();
        for c in &batch {
            match w.push(&to_wire(c)) {
                Ok(Some(m)) => send(m),
                Ok(None) => {}
                Err(_) => {
                    stats.errors.fetch_add(1, Relaxed);
                    continue;
                }
            }
            let n = if c.template {
                &stats.templates
            } else {
                &stats.conns
            };
            n.fetch_add(1, Relaxed);
        }
        if let Some(m) = w.finish() {
            send(m);
        }
    }
}

fn backup(
    sock: UdpSocket,
    syncid: u8,
    peer: Option<IpAddr>,
    pl: Arc<Pipeline>,
    epoch: Instant,
    stats: &SyncStats,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Relaxed) {
        let n = match sock.recv_from(&mut buf) {
            Ok((n, from)) if peer.is_none_or(|p| p == from.ip()) => n,
            Ok(_) => {
                stats.other_sender.fetch_add(1, Relaxed);
                continue;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => {
                stats.errors.fetch_add(1, Relaxed);
                continue;
            }
        };
        let bytes = &buf[..n];
        stats.messages.fetch_add(1, Relaxed);
        let d = match decode(bytes, syncid) {
            Ok(d) => d,
            Err(MessageError::SyncId(_)) => {
                stats.other_syncid.fetch_add(1, Relaxed);
                continue;
            }
            Err(_) => {
                stats.bad_messages.fetch_add(1, Relaxed);
                continue;
            }
        };
        let bad = d.skipped.len() as u64 + u64::from(d.dropped.is_some());
        stats.bad_entries.fetch_add(bad, Relaxed);
        let now = epoch.elapsed().as_millis() as u64;
        let services = pl.services.load_full();
        for c in d.conns {
            if c.flags & flags::TEMPLATE != 0 {
                let counter = match template_of(&c, &services) {
                    Ok(t) => match pl.conns.install_synced_template(t, now) {
                        Ok(()) => &stats.templates,
                        Err(_) => &stats.errors,
                    },
                    Err(counter) => counter.of(stats),
                };
                counter.fetch_add(1, Relaxed);
                continue;
            }
            let Some(state) = ConnState::from_number(c.protocol, c.state) else {
                stats.bad_entries.fetch_add(1, Relaxed);
                continue;
            };
            let dest = services
                .find(c.protocol, c.vaddr, c.vport)
                .and_then(|s| s.dest(c.daddr, c.dport).cloned());
            let Some(dest) = dest else {
                stats.no_dest.fetch_add(1, Relaxed);
                continue;
            };
            let fwd: FwdMethod = dest.fwd_method();
            let s = Synced {
                conn: NewConn {
                    proto: c.protocol,
                    caddr: c.caddr,
                    cport: c.cport,
                    vaddr: c.vaddr,
                    vport: c.vport,
                    daddr: c.daddr,
                    dport: c.dport,
                    dest,
                    fwd,
                },
                state,
                timeout_ms: (c.timeout > 0).then(|| c.timeout.saturating_mul(1000)),
            };
            let seq = c.seq.is_some();
            match pl.conns.install_synced(s, now) {
                Ok(()) => {
                    stats.conns.fetch_add(1, Relaxed);
                    if seq {
                        stats.seq_ignored.fetch_add(1, Relaxed);
                    }
                }
                Err(_) => {
                    stats.errors.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

/// Why a received template was not installed: the counter it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// No such service, real server, or the service is not persistent.
    NoDest,
    /// A persistence engine this service does not run.
    BadEntry,
}

impl Skip {
    fn of(self, s: &SyncStats) -> &AtomicU64 {
        match self {
            Skip::NoDest => &s.no_dest,
            Skip::BadEntry => &s.bad_entries,
        }
    }
}

/// A received template as this director's scheduler would have made it.
/// Protocol 0 is a firewall-mark service's template: the kernel (and uvs)
/// keep the service's mark in its virtual address.
fn template_of(c: &Conn, services: &Services) -> Result<SyncedTemplate, Skip> {
    let fwmark = if c.protocol == 0 {
        match c.vaddr {
            IpAddr::V4(v) => u32::from(v),
            IpAddr::V6(v) => u128::from(v) as u32,
        }
    } else {
        0
    };
    let svc = if fwmark != 0 {
        services.find_fwmark(c.caddr.is_ipv6(), fwmark)
    } else {
        services.find(c.protocol, c.vaddr, c.vport)
    }
    .ok_or(Skip::NoDest)?;
    let per = svc.persistence.ok_or(Skip::NoDest)?;
    let dest = svc.dest(c.daddr, c.dport).cloned().ok_or(Skip::NoDest)?;
    let pe = match (&c.pe, svc.pe) {
        (None, None) => 0,
        // The SIP engine's data is the Call-ID; uvs keys by its digest.
        (Some(p), Some(Pe::Sip)) if p.name == b"sip" => pe_digest(&p.data),
        _ => return Err(Skip::BadEntry),
    };
    let timeout_ms = if c.timeout > 0 {
        c.timeout.saturating_mul(1000)
    } else {
        per.timeout_ms
    };
    Ok(SyncedTemplate {
        key: TemplateKey {
            proto: c.protocol,
            caddr: c.caddr,
            vaddr: c.vaddr,
            vport: c.vport,
            fwmark,
            pe,
        },
        fwd: dest.fwd_method(),
        dest,
        dport: c.dport,
        timeout_ms,
    })
}

#[cfg(test)]
mod tests;
