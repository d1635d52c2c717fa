//! The director's local prefixes in the steering program's `local` map, kept
//! in step with the kernel's routes (issue 15: a NAT reply addressed to the
//! director answers the director's own connection, and is the kernel's).
//!
//! Why the kernel's local routes, and not `bpf_fib_lookup` or uvs's own
//! connection table:
//!
//! * `bpf_fib_lookup` answers "forwarding disabled" before it looks at the
//!   destination when the receiving interface does not forward, which a
//!   director running uvs need not do (uvs forwards in userspace); its
//!   verdict would depend on a sysctl.
//! * A connection-table check would need uvs's table in a BPF map, written
//!   per connection from the data path.
//! * The local routes (`type local`, in every table) are what the AF_PACKET
//!   guard's `fib daddr type local` matches: every address of the director
//!   and AnyIP prefixes. One prefix match per packet from a NAT real server
//!   in an LPM trie; nothing per connection.
//!
//! [`LocalWatcher::start`] dumps the routes once before it returns (so the
//! map is complete when the program first sees traffic), then a thread
//! applies route events as they come; a lost event (socket overrun) is
//! answered by a fresh dump and the difference. Route identity is
//! (family, prefix, table, interface, metric), kept in a set, so a route
//! seen both in a dump and in an event counts once; a prefix leaves the map
//! with its last route.

#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::prog::local_key;
use super::sys::bpf::Map;
use super::sys::rtnl::RtnlSocket;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTN_LOCAL: u8 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// A local prefix: address (host bits as the route has them) and length.
pub type Prefix = (IpAddr, u8);

/// One local route, as the kernel identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub prefix: Prefix,
    pub table: u32,
    pub oif: u32,
    pub metric: u32,
}

/// What one netlink message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    /// A local route added (or listed in a dump).
    New(Route),
    /// A local route removed.
    Del(Route),
    /// The end of the dump with this sequence number.
    Done(u32),
    /// An error answer to request `seq` (a negative errno).
    Error { seq: u32, errno: i32 },
    /// Anything else (other route types, other messages).
    Other,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The messages of one datagram; a truncated message ends the list.
pub fn parse(buf: &[u8]) -> Vec<Msg> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(len) = u32_at(buf, at) {
        let len = len as usize;
        if len < 16 || at + len > buf.len() {
            break;
        }
        let m = &buf[at..at + len];
        let ty = u16_at(m, 4).unwrap_or(0);
        let seq = u32_at(m, 8).unwrap_or(0);
        out.push(match ty {
            NLMSG_DONE => Msg::Done(seq),
            NLMSG_ERROR => Msg::Error {
                seq,
                errno: u32_at(m, 16).unwrap_or(0) as i32,
            },
            RTM_NEWROUTE | RTM_DELROUTE => match route(&m[16..]) {
                Some(r) if ty == RTM_NEWROUTE => Msg::New(r),
                Some(r) => Msg::Del(r),
                None => Msg::Other,
            },
            _ => Msg::Other,
        });
        at += len.div_ceil(4) * 4;
    }
    out
}

/// A `struct rtmsg` and its attributes, if it is a local IPv4/IPv6 route.
fn route(b: &[u8]) -> Option<Route> {
    let (family, dst_len, table8, ty) = (*b.first()?, *b.get(1)?, *b.get(4)?, *b.get(7)?);
    if ty != RTN_LOCAL || (family != AF_INET && family != AF_INET6) {
        return None;
    }
    let mut r = Route {
        prefix: match family {
            AF_INET => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), dst_len),
            _ => (IpAddr::V6(Ipv6Addr::UNSPECIFIED), dst_len),
        },
        table: u32::from(table8),
        oif: 0,
        metric: 0,
    };
    let mut at = 12;
    while let (Some(len), Some(kind)) = (u16_at(b, at), u16_at(b, at + 2)) {
        let len = len as usize;
        if len < 4 || at + len > b.len() {
            break;
        }
        let v = &b[at + 4..at + len];
        match (kind, family, v.len()) {
            (RTA_DST, AF_INET, 4) => {
                let o: [u8; 4] = v.try_into().ok()?;
                r.prefix.0 = IpAddr::V4(o.into());
            }
            (RTA_DST, AF_INET6, 16) => {
                let o: [u8; 16] = v.try_into().ok()?;
                r.prefix.0 = IpAddr::V6(o.into());
            }
            (RTA_OIF, _, 4) => r.oif = u32_at(v, 0)?,
            (RTA_PRIORITY, _, 4) => r.metric = u32_at(v, 0)?,
            (RTA_TABLE, _, 4) => r.table = u32_at(v, 0)?,
            _ => {}
        }
        at += len.div_ceil(4) * 4;
    }
    Some(r)
}

/// The local routes known, and how many carry each prefix.
#[derive(Debug, Default)]
pub struct LocalRoutes {
    routes: HashSet<Route>,
    counts: HashMap<Prefix, u32>,
}

impl LocalRoutes {
    /// Applies one message; `set(prefix, present)` is called when a prefix
    /// gains its first route or loses its last.
    pub fn apply(&mut self, m: &Msg, set: &mut impl FnMut(Prefix, bool)) {
        match m {
            Msg::New(r) if self.routes.insert(*r) => {
                let n = self.counts.entry(r.prefix).or_insert(0);
                *n += 1;
                if *n == 1 {
                    set(r.prefix, true);
                }
            }
            Msg::Del(r) if self.routes.remove(r) => {
                if let Some(n) = self.counts.get_mut(&r.prefix) {
                    *n -= 1;
                    if *n == 0 {
                        self.counts.remove(&r.prefix);
                        set(r.prefix, false);
                    }
                }
            }
            _ => {}
        }
    }

    /// Forgets every route (before a fresh dump) and returns the prefixes
    /// that were present, for [`LocalRoutes::reconcile`].
    pub fn forget(&mut self) -> HashSet<Prefix> {
        self.routes.clear();
        std::mem::take(&mut self.counts).into_keys().collect()
    }

    /// After a dump into a forgotten state: `set` for each prefix that came
    /// or went since `before`.
    pub fn reconcile(&self, before: &HashSet<Prefix>, set: &mut impl FnMut(Prefix, bool)) {
        for p in before {
            if !self.counts.contains_key(p) {
                set(*p, false);
            }
        }
        for p in self.counts.keys() {
            if !before.contains(p) {
                set(*p, true);
            }
        }
    }

    /// Prefixes present.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// No prefix present.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// Counters of the watcher, read by `uvs stats`.
#[derive(Debug, Default)]
pub struct LocalStats {
    /// Local prefixes in the map now.
    pub prefixes: AtomicU64,
    /// Map updates that failed (the map full, say): such a prefix's replies
    /// are steered to uvs, which passes them to the kernel as before.
    pub errors: AtomicU64,
    /// Fresh dumps after lost events.
    pub resyncs: AtomicU64,
}

/// The `local` map and the thread that keeps it.
#[derive(Debug)]
pub struct LocalWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<LocalStats>,
}

struct Keeper {
    sock: RtnlSocket,
    map: Map,
    routes: LocalRoutes,
    stats: Arc<LocalStats>,
    buf: Vec<u8>,
}

/// How long a dump may take before start-up gives up.
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

impl Keeper {
    fn set(map: &Map, stats: &LocalStats, p: Prefix, present: bool) {
        let k = local_key(p.0, p.1);
        let r = if present {
            map.update(&k, &[1])
        } else {
            match map.delete(&k) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                r => r,
            }
        };
        if r.is_err() {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn handle(&mut self, msgs: &[Msg]) {
        let (map, stats) = (&self.map, &*self.stats);
        for m in msgs {
            self.routes
                .apply(m, &mut |p, on| Self::set(map, stats, p, on));
        }
        stats
            .prefixes
            .store(self.routes.len() as u64, Ordering::Relaxed);
    }

    /// Dumps both families' routes and brings the map in line. Events
    /// arriving meanwhile are applied in order, to the new state.
    fn resync(&mut self) -> io::Result<()> {
        let before = self.routes.forget();
        let mut quiet = |_: Prefix, _: bool| {};
        for family in [AF_INET, AF_INET6] {
            let seq = self.sock.request_dump(family)?;
            let end = Instant::now() + DUMP_TIMEOUT;
            'dump: loop {
                if Instant::now() > end {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no end to the route dump",
                    ));
                }
                let n = self.sock.recv(&mut self.buf)?;
                for m in parse(&self.buf[..n]) {
                    match m {
                        Msg::Done(s) if s == seq => break 'dump,
                        Msg::Error { seq: s, errno } if s == seq && errno != 0 => {
                            return Err(io::Error::from_raw_os_error(-errno));
                        }
                        m => self.routes.apply(&m, &mut quiet),
                    }
                }
            }
        }
        let (map, stats) = (&self.map, &*self.stats);
        self.routes
            .reconcile(&before, &mut |p, on| Self::set(map, stats, p, on));
        stats
            .prefixes
            .store(self.routes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            match self.sock.recv(&mut self.buf) {
                Ok(0) => {}
                Ok(n) => {
                    let msgs = parse(&self.buf[..n]);
                    self.handle(&msgs);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                    if self.resync().is_err() {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

impl LocalWatcher {
    /// Fills `map` with the local prefixes of the calling thread's network
    /// namespace and keeps it in step from a thread until dropped.
    pub fn start(map: Map) -> io::Result<LocalWatcher> {
        let sock = RtnlSocket::open(Duration::from_millis(100))?;
        let stats = Arc::new(LocalStats::default());
        let mut k = Keeper {
            sock,
            map,
            routes: LocalRoutes::default(),
            stats: stats.clone(),
            buf: vec![0u8; 1 << 16],
        };
        k.resync()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("uvs-xdp-local".into())
            .spawn(move || k.run(&s2))?;
        Ok(LocalWatcher {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    /// Its counters.
    pub fn stats(&self) -> &LocalStats {
        &self.stats
    }
}

impl Drop for LocalWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
