//! The system's names for `uvsadm` ([`ctl::names::Names`]), bounded in
//! time: services from `/etc/services` (a file, no network), host names
//! through the C library's resolver (`/etc/hosts`, then DNS as
//! `nsswitch.conf` says), each look-up run on a helper thread that is
//! abandoned when its time is up, so a dead name server costs seconds, not
//! minutes. Reverse look-ups for a listing are made together, several at
//! a time, within one budget ([`SystemNames::prefetch`]); an address not
//! named by then is printed as a number.
//!
//! Only `uvsadm` uses this; the daemon never looks names up.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ctl::names::Names;
use super::ctl::Proto;

/// How long a host name in a command may take to resolve.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the reverse look-ups of one listing may take together.
pub const REVERSE_BUDGET: Duration = Duration::from_secs(2);
/// Reverse look-ups in flight at once.
const REVERSE_THREADS: usize = 8;

/// Names from the system. Every answer is kept, so a large `-R` file
/// naming the same hosts and ports asks the system once per name.
#[derive(Debug, Default)]
pub struct SystemNames {
    /// (name or alias, protocol) → port, the first entry winning.
    ports: HashMap<(String, String), u16>,
    /// (port, protocol) → name, the first entry winning (getservbyport).
    services: HashMap<(u16, String), String>,
    reverse: HashMap<IpAddr, String>,
    forward: RefCell<HashMap<String, Option<Ipv4Addr>>>,
    forward_timeout: Duration,
}

fn proto_word(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Sctp => "sctp",
    }
}

impl SystemNames {
    /// Reads `/etc/services` (none if it is missing).
    pub fn new() -> SystemNames {
        let text = std::fs::read_to_string("/etc/services").unwrap_or_default();
        SystemNames::with_services(&text)
    }

    /// Names with the services of a text in `/etc/services` format.
    pub fn with_services(text: &str) -> SystemNames {
        let mut ports = HashMap::new();
        let mut services = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut w = line.split_whitespace();
            let (Some(name), Some(pp)) = (w.next(), w.next()) else {
                continue;
            };
            let Some((port, proto)) = pp.split_once('/') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            services
                .entry((port, proto.to_string()))
                .or_insert_with(|| name.to_string());
            for n in std::iter::once(name).chain(w) {
                ports
                    .entry((n.to_string(), proto.to_string()))
                    .or_insert(port);
            }
        }
        SystemNames {
            ports,
            services,
            reverse: HashMap::new(),
            forward: RefCell::new(HashMap::new()),
            forward_timeout: FORWARD_TIMEOUT,
        }
    }

    /// Looks up the host names of `addrs`, several at a time, for at most
    /// `budget` in all; [`Names::host_of`] then answers from what came back.
    pub fn prefetch(&mut self, addrs: impl IntoIterator<Item = IpAddr>, budget: Duration) {
        let todo: Vec<IpAddr> = addrs
            .into_iter()
            .filter(|a| !self.reverse.contains_key(a))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if todo.is_empty() {
            return;
        }
        let deadline = Instant::now() + budget;
        let n = todo.len();
        let queue = Arc::new(Mutex::new(todo));
        let (tx, rx) = mpsc::channel();
        for _ in 0..REVERSE_THREADS.min(n) {
            let queue = queue.clone();
            let tx = tx.clone();
            // Detached: a look-up still blocked at the deadline is left to
            // finish (or die with the process) on its own.
            std::thread::spawn(move || loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some(a) = next else { break };
                if tx.send((a, reverse_lookup(a))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for _ in 0..n {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((a, Some(name))) => {
                    self.reverse.insert(a, name);
                }
                Ok((_, None)) => {}
                Err(_) => break,
            }
        }
    }
}

/// `getnameinfo(NI_NAMEREQD)`: the host name of an address, if it has one.
fn reverse_lookup(addr: IpAddr) -> Option<String> {
    let mut host = [0u8; 1025];
    let rc = match addr {
        IpAddr::V4(a) => {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sa` is an initialised sockaddr_in and the length
            // given is its size; `host` is writable for the length given;
            // no service buffer is asked for (null, length 0).
            unsafe {
                libc::getnameinfo(
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    host.as_mut_ptr().cast(),
                    host.len() as libc::socklen_t,
                    std::ptr::null_mut(),
                    0,
                    libc::NI_NAMEREQD,
                )
            }
        }
        IpAddr::V6(a) => {
            let sa = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for an initialised sockaddr_in6.
            unsafe {
                libc::getnameinfo(
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    host.as_mut_ptr().cast(),
                    host.len() as libc::socklen_t,
                    std::ptr::null_mut(),
                    0,
                    libc::NI_NAMEREQD,
                )
            }
        }
    };
    if rc != 0 {
        return None;
    }
    let name = CStr::from_bytes_until_nul(&host).ok()?.to_str().ok()?;
    (!name.is_empty()).then(|| name.to_string())
}

impl Names for SystemNames {
    fn host_v4(&self, name: &str) -> Option<Ipv4Addr> {
        if let Some(known) = self.forward.borrow().get(name) {
            return *known;
        }
        let (tx, rx) = mpsc::channel();
        let owned = name.to_string();
        std::thread::spawn(move || {
            let found = (owned.as_str(), 0)
                .to_socket_addrs()
                .ok()
                .and_then(|mut it| {
                    it.find_map(|s| match s.ip() {
                        IpAddr::V4(a) => Some(a),
                        IpAddr::V6(_) => None,
                    })
                });
            let _ = tx.send(found);
        });
        let found = rx.recv_timeout(self.forward_timeout).ok().flatten();
        self.forward.borrow_mut().insert(name.to_string(), found);
        found
    }

    fn port(&self, name: &str, proto: Proto) -> Option<u16> {
        self.ports
            .get(&(name.to_string(), proto_word(proto).to_string()))
            .copied()
    }

    fn host_of(&self, addr: IpAddr) -> Option<String> {
        self.reverse.get(&addr).cloned()
    }

    fn service_of(&self, port: u16, proto: Proto) -> Option<String> {
        self.services
            .get(&(port, proto_word(proto).to_string()))
            .cloned()
    }
}

/// A [`Names`] that only notes which addresses a listing would name (the
/// first of two passes: collect, [`SystemNames::prefetch`], then name).
#[derive(Debug, Default)]
pub struct Collect {
    /// The addresses asked for.
    pub addrs: RefCell<BTreeSet<IpAddr>>,
}

impl Names for Collect {
    fn host_v4(&self, _: &str) -> Option<Ipv4Addr> {
        None
    }
    fn port(&self, _: &str, _: Proto) -> Option<u16> {
        None
    }
    fn host_of(&self, addr: IpAddr) -> Option<String> {
        self.addrs.borrow_mut().insert(addr);
        None
    }
    fn service_of(&self, _: u16, _: Proto) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_file_both_ways() {
        let n = SystemNames::with_services(
            "# comment\nhttp\t\t80/tcp\t\twww\t# WWW\nhttp 80/udp\ndomain 53/tcp\ndomain 53/udp\nbad x/tcp\n",
        );
        assert_eq!(n.port("http", Proto::Tcp), Some(80));
        assert_eq!(n.port("www", Proto::Tcp), Some(80));
        assert_eq!(n.port("www", Proto::Udp), None);
        assert_eq!(n.port("domain", Proto::Udp), Some(53));
        assert_eq!(n.port("domain", Proto::Sctp), None);
        assert_eq!(n.service_of(80, Proto::Tcp).as_deref(), Some("http"));
        assert_eq!(n.service_of(81, Proto::Tcp), None);
    }

    #[test]
    fn numeric_loopback_reverse_is_bounded() {
        // 127.0.0.1 is in every /etc/hosts; whatever it is called, the
        // look-up ends within its budget.
        let mut n = SystemNames::with_services("");
        let t = Instant::now();
        n.prefetch(["127.0.0.1".parse().unwrap()], Duration::from_secs(2));
        assert!(t.elapsed() < Duration::from_secs(3));
        assert_eq!(n.host_of("192.0.2.99".parse().unwrap()), None);
    }
}
