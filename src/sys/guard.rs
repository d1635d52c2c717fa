//! Keeps the kernel's hands off the packets uvs owns.
//!
//! An AF_PACKET socket sees packets alongside the kernel, which would also
//! process them: answer a SYN to a VIP it owns with a RST, forward a NAT reply
//! a second time, or send ICMP errors. uvs installs one nftables table,
//! `netdev uvs`, with an ingress chain on each interface it attaches to
//! (ingress runs after packet taps, so uvs still sees everything) that drops
//! exactly the traffic uvs handles: packets to a service (VIP, protocol,
//! port) and NAT replies from a masqueraded real server (address, protocol,
//! port) that are not addressed to the director itself (`fib daddr type !=
//! local`: replies to the director's own connections, such as a health
//! checker's, reach its stack). The sets change with the configuration, never per packet.
//!
//! The daemon keeps the wanted set contents in an [`Owned`]: what each
//! service contributes, with a reference count per element, because one
//! element can be wanted by several services (the same NAT real server
//! behind two services). A configuration change yields a [`Delta`] — only
//! the elements whose presence changed — and [`KernelGuard::apply`] sends
//! just that, over nf_tables netlink ([`super::nftnl`], one atomic batch, no
//! `nft` process), so a change costs what it changes, not the size of the
//! sets. Installing and removing the table (once per run) use `nft`.
//!
//! The table is replaced atomically at start (a crash leaves a stale one
//! behind: it is cleaned first) and deleted on exit, signals included.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use foldhash::{HashMap, HashMapExt};

use super::nftnl::{self, KeyField, NftError, NftSock, SetChange};

/// Failures talking to nftables.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// `nft` could not be run.
    #[error("cannot run nft (install the nftables package): {0}")]
    Spawn(#[from] std::io::Error),
    /// `nft` rejected the script.
    #[error("nft failed: {0}")]
    Nft(String),
    /// nf_tables refused a set change over netlink.
    #[error(transparent)]
    Netlink(#[from] NftError),
}

/// A (protocol, address, port) triple; port 0 = every port of a persistent
/// port-0 service.
pub type Endpoint = (u8, IpAddr, u16);

const TABLE: &str = "uvs";

/// The installed table; dropping it removes the table.
#[derive(Debug)]
pub struct KernelGuard {
    installed: bool,
    /// Set changes go here (opened in the guard's namespace at install).
    sock: NftSock,
}

/// Runs `nft -f -` on `script` (one atomic transaction).
pub(crate) fn nft(script: &str) -> Result<(), GuardError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(GuardError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Removes a table left behind by a uvs that did not exit cleanly.
pub fn remove_stale() -> Result<(), GuardError> {
    nft(&format!(
        "add table netdev {TABLE}\ndelete table netdev {TABLE}\n"
    ))
}

impl KernelGuard {
    /// Replaces any existing `netdev uvs` table with an empty-set one hooked
    /// on `devices`.
    pub fn install(devices: &[String]) -> Result<Self, GuardError> {
        let mut s = format!(
            "add table netdev {TABLE}\ndelete table netdev {TABLE}\ntable netdev {TABLE} {{\n"
        );
        for fam in ["4", "6"] {
            let a = if fam == "4" { "ipv4_addr" } else { "ipv6_addr" };
            s += &format!("  set svc{fam} {{ type {a} . inet_proto . inet_service; }}\n");
            s += &format!("  set svcw{fam} {{ type {a} . inet_proto; }}\n");
            s += &format!("  set rs{fam} {{ type {a} . inet_proto . inet_service; }}\n");
            s += &format!("  set rsw{fam} {{ type {a} . inet_proto; }}\n");
            s += &format!("  set rsa{fam} {{ type {a}; }}\n");
        }
        for (i, dev) in devices.iter().enumerate() {
            s += &format!("  chain in{i} {{\n    type filter hook ingress device \"{dev}\" priority -500; policy accept;\n");
            for (fam, ip) in [("4", "ip"), ("6", "ip6")] {
                s += &format!("    {ip} daddr . meta l4proto . th dport @svc{fam} counter drop\n");
                s += &format!("    {ip} daddr . meta l4proto @svcw{fam} counter drop\n");
                // NAT replies go to clients; a reply addressed to the
                // director itself answers its own connection (a health
                // check, an operator's curl) and stays the kernel's.
                s += &format!("    {ip} saddr . meta l4proto . th sport @rs{fam} fib daddr type != local counter drop\n");
                s += &format!("    {ip} saddr . meta l4proto @rsw{fam} fib daddr type != local counter drop\n");
            }
            // ICMP errors from NAT real servers: uvs relays them rewritten.
            s += "    ip saddr @rsa4 icmp type { destination-unreachable, source-quench, time-exceeded, parameter-problem } fib daddr type != local counter drop\n";
            s += "    ip6 saddr @rsa6 icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } fib daddr type != local counter drop\n";
            s += "  }\n";
        }
        s += "}\n";
        let sock = NftSock::open()?;
        nft(&s)?;
        Ok(KernelGuard {
            installed: true,
            sock,
        })
    }

    /// Sends `delta` to the kernel in one transaction (nothing when it is
    /// empty). When the kernel refuses it the sets are as they were (the
    /// batch is atomic); after a timeout their state is unknown.
    pub fn apply(&mut self, delta: &Delta) -> Result<(), GuardError> {
        if delta.is_empty() {
            return Ok(());
        }
        self.sock
            .commit(nftnl::NFPROTO_NETDEV, TABLE, &set_changes(delta))?;
        Ok(())
    }

    /// Removes the table now (also done on drop).
    pub fn remove(&mut self) -> Result<(), GuardError> {
        if std::mem::take(&mut self.installed) {
            nft(&format!("delete table netdev {TABLE}\n"))?;
        }
        Ok(())
    }
}

impl Drop for KernelGuard {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("uvs: removing nftables table netdev {TABLE}: {e}");
        }
    }
}

/// One element of the guard's sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Elem {
    /// Traffic to a service (protocol, VIP, port; port 0 = every port).
    Service(Endpoint),
    /// NAT replies from a masqueraded real server (protocol, address,
    /// port; port 0 = every port).
    NatServer(Endpoint),
    /// ICMP errors from a masqueraded real server's address.
    NatAddr(IpAddr),
}

impl Elem {
    /// The set that holds it, e.g. `svc4`, `rsw6`, `rsa4`.
    pub fn set(&self) -> String {
        let fam = |a: &IpAddr| if a.is_ipv4() { "4" } else { "6" };
        match self {
            Elem::Service((_, a, 0)) => format!("svcw{}", fam(a)),
            Elem::Service((_, a, _)) => format!("svc{}", fam(a)),
            Elem::NatServer((_, a, 0)) => format!("rsw{}", fam(a)),
            Elem::NatServer((_, a, _)) => format!("rs{}", fam(a)),
            Elem::NatAddr(a) => format!("rsa{}", fam(a)),
        }
    }

    /// The element as the set's key.
    fn key(&self) -> Vec<u8> {
        use KeyField::{Addr, Port, Proto};
        match *self {
            Elem::Service((p, a, 0)) | Elem::NatServer((p, a, 0)) => {
                nftnl::key(&[Addr(a), Proto(p)])
            }
            Elem::Service((p, a, port)) | Elem::NatServer((p, a, port)) => {
                nftnl::key(&[Addr(a), Proto(p), Port(port)])
            }
            Elem::NatAddr(a) => nftnl::key(&[Addr(a)]),
        }
    }
}

/// The elements to add to and delete from the kernel's sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// Elements that became wanted.
    pub add: Vec<Elem>,
    /// Elements no longer wanted.
    pub del: Vec<Elem>,
}

impl Delta {
    /// Nothing changes.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.del.is_empty()
    }
}

/// `delta` as per-set changes: one per set and direction, sets in name
/// order.
fn set_changes(delta: &Delta) -> Vec<SetChange> {
    let mut out = Vec::new();
    for (add, elems) in [(false, &delta.del), (true, &delta.add)] {
        let mut by_set: std::collections::BTreeMap<String, Vec<Vec<u8>>> = Default::default();
        for e in elems {
            by_set.entry(e.set()).or_default().push(e.key());
        }
        out.extend(
            by_set
                .into_iter()
                .map(|(set, keys)| SetChange { add, set, keys }),
        );
    }
    out
}

/// What a service makes the guard drop: its own traffic and its NAT real
/// servers' replies and ICMP errors. `nat_servers` are the masqueraded
/// servers' (address, port); port 0 takes the service's port.
pub fn service_elems(
    (proto, addr, port): Endpoint,
    nat_servers: impl IntoIterator<Item = (IpAddr, u16)>,
) -> Vec<Elem> {
    let mut v = vec![Elem::Service((proto, addr, port))];
    for (a, p) in nat_servers {
        v.push(Elem::NatServer((proto, a, if p == 0 { port } else { p })));
        v.push(Elem::NatAddr(a));
    }
    v
}

/// The wanted contents of the guard's sets, by contributing service, with
/// a reference count per element.
#[derive(Debug, Default)]
pub struct Owned {
    by_service: HashMap<Endpoint, Vec<Elem>>,
    counts: HashMap<Elem, u32>,
}

/// A change made by [`Owned::change`] that [`Owned::revert`] can take back.
#[derive(Debug, Default)]
pub struct Staged {
    /// Each changed service's previous contribution, first change first.
    prev: Vec<(Endpoint, Option<Vec<Elem>>)>,
}

impl Owned {
    /// Number of distinct wanted elements.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Nothing is wanted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Whether `e` is wanted.
    pub fn contains(&self, e: &Elem) -> bool {
        self.counts.contains_key(e)
    }

    /// Sets what each service contributes (`None`: the service is gone) and
    /// returns the net delta for the kernel: elements whose presence changed
    /// over the whole batch, each once. Costs O(elements of the changed
    /// services).
    pub fn change(
        &mut self,
        changes: impl IntoIterator<Item = (Endpoint, Option<Vec<Elem>>)>,
    ) -> (Delta, Staged) {
        // Element → whether it was wanted before the batch.
        let mut before: HashMap<Elem, bool> = HashMap::new();
        let mut staged = Staged::default();
        for (id, new) in changes {
            let old = self.set(id, new, &mut before);
            staged.prev.push((id, old));
        }
        let mut delta = Delta::default();
        for (e, was) in before {
            match (was, self.counts.contains_key(&e)) {
                (false, true) => delta.add.push(e),
                (true, false) => delta.del.push(e),
                _ => {}
            }
        }
        delta.add.sort_unstable();
        delta.del.sort_unstable();
        (delta, staged)
    }

    /// Takes back a [`Owned::change`] (the kernel refused its delta).
    pub fn revert(&mut self, staged: Staged) {
        let mut scratch = HashMap::new();
        for (id, old) in staged.prev.into_iter().rev() {
            self.set(id, old, &mut scratch);
        }
    }

    /// Replaces `id`'s contribution, noting in `before` the prior presence
    /// of every element it touches; returns the previous contribution.
    fn set(
        &mut self,
        id: Endpoint,
        new: Option<Vec<Elem>>,
        before: &mut HashMap<Elem, bool>,
    ) -> Option<Vec<Elem>> {
        let old = match new {
            Some(v) => {
                for e in &v {
                    before
                        .entry(*e)
                        .or_insert_with(|| self.counts.contains_key(e));
                    *self.counts.entry(*e).or_insert(0) += 1;
                }
                self.by_service.insert(id, v)
            }
            None => self.by_service.remove(&id),
        };
        for e in old.iter().flatten() {
            before.entry(*e).or_insert(true);
            if let Some(n) = self.counts.get_mut(e) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(e);
                }
            }
        }
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn svc(port: u16, servers: &[(&str, u16)]) -> (Endpoint, Option<Vec<Elem>>) {
        let id = (6, ip("192.0.2.1"), port);
        let nat = servers.iter().map(|(a, p)| (ip(a), *p));
        (id, Some(service_elems(id, nat)))
    }

    #[test]
    fn a_new_service_adds_its_elements_once() {
        let mut o = Owned::default();
        let (d, _) = o.change([svc(80, &[("203.0.113.1", 8080), ("203.0.113.1", 8081)])]);
        assert_eq!(
            d.add,
            vec![
                Elem::Service((6, ip("192.0.2.1"), 80)),
                Elem::NatServer((6, ip("203.0.113.1"), 8080)),
                Elem::NatServer((6, ip("203.0.113.1"), 8081)),
                Elem::NatAddr(ip("203.0.113.1")),
            ]
        );
        assert!(d.del.is_empty());
    }

    #[test]
    fn a_server_shared_by_two_services_stays_until_the_last_goes() {
        let mut o = Owned::default();
        o.change([svc(80, &[("203.0.113.1", 8080)])]);
        let (d, _) = o.change([svc(81, &[("203.0.113.1", 8080)])]);
        assert_eq!(d.add, vec![Elem::Service((6, ip("192.0.2.1"), 81))]);
        let id80 = (6, ip("192.0.2.1"), 80);
        let (d, _) = o.change([(id80, None)]);
        assert_eq!(d.del, vec![Elem::Service(id80)], "shared server kept");
        assert!(d.add.is_empty());
        let (d, _) = o.change([((6, ip("192.0.2.1"), 81), None)]);
        assert_eq!(d.del.len(), 3);
        assert!(o.is_empty());
    }

    #[test]
    fn an_unchanged_element_is_not_sent_and_port_zero_takes_the_service_port() {
        let mut o = Owned::default();
        o.change([svc(80, &[("203.0.113.1", 0)])]);
        assert!(o.contains(&Elem::NatServer((6, ip("203.0.113.1"), 80))));
        // Editing the service (same servers plus one) sends only the new one.
        let (d, _) = o.change([svc(80, &[("203.0.113.1", 0), ("203.0.113.2", 80)])]);
        assert_eq!(
            d.add,
            vec![
                Elem::NatServer((6, ip("203.0.113.2"), 80)),
                Elem::NatAddr(ip("203.0.113.2")),
            ]
        );
        assert!(d.del.is_empty());
    }

    #[test]
    fn a_batch_yields_the_net_delta_and_revert_restores_the_counts() {
        let mut o = Owned::default();
        o.change([svc(80, &[("203.0.113.1", 80)])]);
        let id = (6, ip("192.0.2.1"), 80);
        // Delete and re-add in one batch: nothing to send.
        let (d, _) = o.change([(id, None), svc(80, &[("203.0.113.1", 80)])]);
        assert!(d.is_empty(), "{d:?}");
        let (d, staged) = o.change([(id, None), svc(90, &[])]);
        assert_eq!(d.add, vec![Elem::Service((6, ip("192.0.2.1"), 90))]);
        assert_eq!(d.del.len(), 3);
        o.revert(staged);
        assert_eq!(o.len(), 3);
        assert!(o.contains(&Elem::Service(id)));
        assert!(!o.contains(&Elem::Service((6, ip("192.0.2.1"), 90))));
        // After the revert the same change yields the same delta again.
        let (d2, _) = o.change([(id, None), svc(90, &[])]);
        assert_eq!(d, d2);
    }

    #[test]
    fn set_changes_group_elements_per_set_deletions_first() {
        let d = Delta {
            add: vec![
                Elem::Service((6, ip("192.0.2.1"), 80)),
                Elem::Service((17, ip("192.0.2.1"), 53)),
                Elem::Service((6, ip("2001:db8::1"), 0)),
            ],
            del: vec![Elem::NatAddr(ip("203.0.113.1"))],
        };
        let c = set_changes(&d);
        let shape: Vec<(bool, &str, usize)> = c
            .iter()
            .map(|c| (c.add, c.set.as_str(), c.keys.len()))
            .collect();
        assert_eq!(
            shape,
            [(false, "rsa4", 1), (true, "svc4", 2), (true, "svcw6", 1)]
        );
        assert_eq!(c[0].keys[0], [203, 0, 113, 1]);
        assert_eq!(c[1].keys[0], [192, 0, 2, 1, 6, 0, 0, 0, 0, 80, 0, 0]);
        assert_eq!(c[2].keys[0].len(), 20);
    }

    /// A namespace this test owns, deleted on drop (also on failure).
    struct Ns(String);

    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    #[test]
    fn deltas_reach_the_kernel_sets_over_netlink() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || Command::new("nft").arg("-v").output().is_err() {
            eprintln!("deltas_reach_the_kernel_sets_over_netlink: skipped (needs root and nft)");
            return;
        }
        let ns = Ns(format!("uvsguard-{}", std::process::id()));
        let ip_cmd = |args: &[&str]| {
            let ok = Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip {args:?}");
        };
        ip_cmd(&["netns", "add", &ns.0]);
        ip_cmd(&[
            "-n", &ns.0, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
        ]);
        let listing = crate::sys::netns::run_in(&ns.0, || {
            let list = || {
                let out = Command::new("nft")
                    .args(["list", "table", "netdev", TABLE])
                    .output()
                    .expect("nft runs");
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let mut g = KernelGuard::install(&["d0".to_string()]).expect("installs");
            let mut o = Owned::default();
            let (d, _) = o.change([
                svc(80, &[("203.0.113.1", 8080)]),
                svc(82, &[("203.0.113.1", 8080)]),
                (
                    (6, ip("2001:db8::1"), 0),
                    Some(service_elems((6, ip("2001:db8::1"), 0), [])),
                ),
            ]);
            g.apply(&d).expect("adds");
            let first = list();
            let (d, _) = o.change([((6, ip("192.0.2.1"), 80), None), svc(81, &[])]);
            g.apply(&d).expect("deletes and adds");
            let second = list();
            // The last service behind the shared server goes: so does it.
            let (d, _) = o.change([((6, ip("192.0.2.1"), 82), None)]);
            g.apply(&d).expect("deletes");
            let second_b = list();
            // Deleting what is not there is refused, and changes nothing.
            let bogus = Delta {
                add: vec![Elem::Service((6, ip("192.0.2.9"), 9))],
                del: vec![Elem::NatAddr(ip("203.0.113.99"))],
            };
            let err = g.apply(&bogus).expect_err("refused");
            let third = list();
            g.remove().expect("removes");
            (first, second, second_b, err.to_string(), third)
        })
        .expect("runs in the namespace");
        let (first, second, second_b, err, third) = listing;
        for want in [
            "192.0.2.1 . tcp . 80",
            "203.0.113.1 . tcp . 8080",
            "2001:db8::1 . tcp",
        ] {
            assert!(first.contains(want), "{want} in {first}");
        }
        assert!(first.contains("elements = { 203.0.113.1 }"), "{first}");
        assert!(!second.contains("192.0.2.1 . tcp . 80"), "{second}");
        assert!(second.contains("192.0.2.1 . tcp . 81"), "{second}");
        assert!(
            second.contains("203.0.113.1 . tcp . 8080"),
            "the server behind :82 stays: {second}"
        );
        assert!(!second_b.contains("203.0.113.1"), "{second_b}");
        assert!(!second_b.contains("192.0.2.1 . tcp . 82"), "{second_b}");
        assert!(err.contains("delete") && err.contains("rsa4"), "{err}");
        assert_eq!(second_b, third, "a refused batch changes nothing");
    }
}
