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
//! checker's, reach its stack), except replies to the nat table's
//! MASQUERADE ports (61440-65535, above the director's own ephemeral
//! ports) on the director's addresses, which uvs un-NATs. The sets change
//! with the configuration, never per packet.
//!
//! The daemon keeps the wanted set contents in an [`Owned`]: what each
//! service contributes, with a reference count per element, because one
//! element can be wanted by several services (the same NAT real server
//! behind two services). A configuration change yields a [`Delta`] — only
//! the elements whose presence changed — and [`KernelGuard::apply`] sends
//! just that, over nf_tables netlink ([`super::nftnl`], one atomic batch),
//! so a change costs what it changes, not the size of the sets. The table,
//! its sets, chains and rules are made the same way: uvs runs no `nft`
//! process and needs no nftables package.
//!
//! The table carries `NFT_TABLE_F_OWNER`: it belongs to the guard's netlink
//! socket, which the daemon holds for its lifetime, so the kernel deletes
//! the table when uvs ends, however it ends (SIGKILL, a panic, OOM) — a
//! dead uvs never leaves the VIPs black-holed. It is also deleted
//! explicitly on a clean exit. At install a table of the same name that
//! nobody owns (left by an older uvs) is replaced in the same transaction;
//! one owned by a live process is not touched ([`GuardError::Busy`]).

use std::net::IpAddr;

use foldhash::{HashMap, HashMapExt};

use super::nftnl::{
    self, Base, Batch, Expr, Ingress, KeyField, KeyType, MetaKey, NftError, NftSock, OwnedTable,
    SetChange, SetRef, NFPROTO_NETDEV, NFT_TABLE_F_OWNER, R1,
};

/// Failures talking to nf_tables.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// nf_tables refused a change, or could not be reached.
    #[error(transparent)]
    Netlink(#[from] NftError),
    /// The table belongs to another live process.
    #[error("nftables table netdev {0} belongs to another running process (another uvs in this network namespace?)")]
    Busy(String),
    /// The kernel cannot give a table an owner.
    #[error("this kernel's nf_tables cannot give table netdev {0} an owner (NFT_TABLE_F_OWNER needs Linux 5.12 or later)")]
    NoOwner(String),
}

impl GuardError {
    /// `err` from a transaction on `table`: EPERM there means another
    /// socket owns it (the capability itself is checked before start), and
    /// EOPNOTSUPP on adding it a kernel without owned tables.
    pub(crate) fn on_table(table: &str, err: NftError) -> GuardError {
        let adding_table =
            matches!(&err, NftError::Kernel { what, .. } if what.starts_with("add table"));
        match err.errno() {
            Some(libc::EPERM) => GuardError::Busy(table.to_string()),
            Some(libc::EOPNOTSUPP) if adding_table => GuardError::NoOwner(table.to_string()),
            _ => GuardError::Netlink(err),
        }
    }
}

/// A (protocol, address, port) triple; port 0 = every port of a persistent
/// port-0 service.
pub type Endpoint = (u8, IpAddr, u16);

const TABLE: &str = "uvs";

/// Packets the guard kept from the kernel's own stack (uvs handles them),
/// summed over the interfaces, by rule kind. Replies addressed to the
/// director pass and are not counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// `guard.service`: to a VIP.
    pub service: u64,
    /// `guard.nat_reply`: a NAT real server's reply to a client.
    pub nat_reply: u64,
    /// `guard.nat_icmp`: a NAT real server's ICMP error.
    pub nat_icmp: u64,
}

/// Reads the guard's rule counters over a netlink socket of its own, so any
/// thread (`uvs stats`, `/metrics`) may ask without the owner's socket.
pub fn counters() -> Result<Counters, GuardError> {
    let mut c = Counters::default();
    for r in NftSock::open()?.rule_counters(NFPROTO_NETDEV, TABLE)? {
        match r.set.as_deref().unwrap_or("") {
            s if s.starts_with("svc") => c.service += r.packets,
            s if s.starts_with("rsa") => c.nat_icmp += r.packets,
            s if s.starts_with("rs") => c.nat_reply += r.packets,
            _ => {}
        }
    }
    Ok(c)
}

/// The installed table; dropping it removes the table (and so does the
/// end of the process: the kernel deletes it with the socket).
#[derive(Debug)]
pub struct KernelGuard {
    /// Owns the table: opened in the guard's namespace at install, and
    /// the only socket that may change it.
    table: OwnedTable,
}

/// Removes a `netdev` table `table` left by a process that did not own it
/// (an owned one dies with its owner); nothing when there is none.
pub(crate) fn remove_table(table: &str) -> Result<(), GuardError> {
    let mut b = Batch::new(NFPROTO_NETDEV);
    b.add_table(table, None);
    b.del_table(table);
    NftSock::open()?
        .commit(&b)
        .map_err(|e| GuardError::on_table(table, e))
}

/// Removes a table left behind by an older uvs that did not exit cleanly.
pub fn remove_stale() -> Result<(), GuardError> {
    remove_table(TABLE)
}

/// `meta protocol` is IPv4 (`v6`: IPv6), the dependency of every `ip`
/// (`ip6`) match in a netdev chain.
pub(crate) fn l3(v6: bool) -> [Expr; 2] {
    let ethertype: u16 = if v6 { 0x86dd } else { 0x0800 };
    [
        Expr::Meta {
            key: MetaKey::Protocol,
            dreg: R1,
        },
        Expr::Cmp {
            sreg: R1,
            neq: false,
            data: ethertype.to_be_bytes().to_vec(),
        },
    ]
}

/// Loads the source (`src`) or destination address into the registers
/// from `NFT_REG_1` on.
pub(crate) fn load_addr(v6: bool, src: bool) -> Expr {
    let (offset, len) = match (v6, src) {
        (false, true) => (12, 4),
        (false, false) => (16, 4),
        (true, true) => (8, 16),
        (true, false) => (24, 16),
    };
    Expr::Payload {
        base: Base::Network,
        offset,
        len,
        dreg: R1,
    }
}

/// `meta l4proto == proto`.
pub(crate) fn l4proto_is(proto: u8) -> [Expr; 2] {
    [
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: R1,
        },
        Expr::Cmp {
            sreg: R1,
            neq: false,
            data: vec![proto],
        },
    ]
}

/// `ADDR . meta l4proto [. th PORT] @set`: the address at the register
/// file's start, the protocol and the port in the 4-byte slots after it.
pub(crate) fn tuple_lookup(v6: bool, src: bool, port: bool, set: &str) -> Vec<Expr> {
    let alen = if v6 { 16 } else { 4 };
    let mut v = vec![
        load_addr(v6, src),
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: nftnl::reg(alen),
        },
    ];
    if port {
        v.push(Expr::Payload {
            base: Base::Transport,
            offset: if src { 0 } else { 2 },
            len: 2,
            dreg: nftnl::reg(alen + 4),
        });
    }
    v.push(Expr::Lookup {
        set: SetRef::named(set),
        sreg: R1,
    });
    v
}

/// `fib daddr type != local`: the packet is not addressed to this host.
fn not_to_me() -> [Expr; 2] {
    [
        Expr::FibDaddrType { dreg: R1 },
        Expr::Cmp {
            sreg: R1,
            neq: true,
            data: nftnl::RTN_LOCAL.to_ne_bytes().to_vec(),
        },
    ]
}

/// `fib daddr type local`: the packet is addressed to this host.
fn to_me() -> [Expr; 2] {
    [
        Expr::FibDaddrType { dreg: R1 },
        Expr::Cmp {
            sreg: R1,
            neq: false,
            data: nftnl::RTN_LOCAL.to_ne_bytes().to_vec(),
        },
    ]
}

/// High bytes of the destination ports of replies to the nat table's
/// MASQUERADE (`tables::nat::MASQ_PORTS`, 0xf000..=0xffff).
const MASQ_PORT_HIGH: std::ops::RangeInclusive<u8> = 0xf0..=0xff;

/// ICMP error types uvs relays for NAT real servers: destination
/// unreachable, source quench, time exceeded, parameter problem; for
/// ICMPv6 destination unreachable, packet too big, time exceeded,
/// parameter problem.
const ICMP4_ERRORS: [u8; 4] = [3, 4, 11, 12];
const ICMP6_ERRORS: [u8; 4] = [1, 2, 3, 4];

/// The transaction that (re)creates the table hooked on `devices`, with
/// empty sets: the rules of the module doc, in `nft`'s terms
///
/// ```text
/// ip daddr . meta l4proto . th dport @svc4 counter drop
/// ip saddr . meta l4proto . th sport @rs4 fib daddr type != local counter drop
/// ip saddr . meta l4proto . th sport @rs4 fib daddr type local
///     @th,16,8 { 0xf0-0xff } counter drop
/// ip daddr . meta l4proto @svcw4 counter drop
/// ip saddr . meta l4proto @rsw4 fib daddr type != local counter drop
/// (the same five for ip6)
/// ip saddr @rsa4 icmp type { destination-unreachable, source-quench,
///     time-exceeded, parameter-problem } fib daddr type != local counter drop
/// ip6 saddr @rsa6 icmpv6 type { destination-unreachable, packet-too-big,
///     time-exceeded, parameter-problem } fib daddr type != local counter drop
/// ```
fn install_batch(devices: &[String]) -> Batch {
    use KeyType::{InetProto, InetService, Ipv4Addr, Ipv6Addr};
    let mut b = Batch::new(NFPROTO_NETDEV);
    // An unowned leftover is replaced in the same transaction.
    b.add_table(TABLE, None);
    b.del_table(TABLE);
    b.add_table(TABLE, Some(NFT_TABLE_F_OWNER));
    for (fam, a) in [("4", Ipv4Addr), ("6", Ipv6Addr)] {
        b.add_set(TABLE, &format!("svc{fam}"), &[a, InetProto, InetService]);
        b.add_set(TABLE, &format!("svcw{fam}"), &[a, InetProto]);
        b.add_set(TABLE, &format!("rs{fam}"), &[a, InetProto, InetService]);
        b.add_set(TABLE, &format!("rsw{fam}"), &[a, InetProto]);
        b.add_set(TABLE, &format!("rsa{fam}"), &[a]);
    }
    for (i, dev) in devices.iter().enumerate() {
        let chain = format!("in{i}");
        b.add_ingress_chain(
            TABLE,
            &Ingress {
                name: &chain,
                device: dev,
                priority: -500,
            },
        );
        let drop = [Expr::Counter, Expr::Drop];
        for (fam, v6) in [("4", false), ("6", true)] {
            // Every rule only drops, so their order changes nothing but
            // the cost: the common cases first. A request to a service is
            // one lookup (the first rule); a NAT reply one failed lookup
            // and one hit; the port-0 sets, which few configurations
            // fill, are looked up last.
            let service = |b: &mut Batch, set: String, port: bool| {
                let mut r = l3(v6).to_vec();
                r.extend(tuple_lookup(v6, false, port, &set));
                r.extend(drop.clone());
                b.add_rule(TABLE, &chain, &r);
            };
            // NAT replies go to clients; a reply addressed to the
            // director itself answers its own connection (a health
            // check, an operator's curl) and stays the kernel's.
            let nat_reply = |b: &mut Batch, set: String, port: bool| {
                let mut r = l3(v6).to_vec();
                r.extend(tuple_lookup(v6, true, port, &set));
                r.extend(not_to_me());
                r.extend(drop.clone());
                b.add_rule(TABLE, &chain, &r);
            };
            service(&mut b, format!("svc{fam}"), true);
            nat_reply(&mut b, format!("rs{fam}"), true);
            // Replies to the nat table's MASQUERADE ports on the
            // director's own addresses are uvs's to un-NAT (below the
            // range the director's own sockets use).
            let high: Vec<Vec<u8>> = MASQ_PORT_HIGH.map(|b| vec![b]).collect();
            let anon = b.anon_set(TABLE, KeyType::InetProto, &high);
            let mut r = l3(v6).to_vec();
            r.extend(tuple_lookup(v6, true, true, &format!("rs{fam}")));
            r.extend(to_me());
            r.push(Expr::Payload {
                base: Base::Transport,
                offset: 2,
                len: 1,
                dreg: R1,
            });
            r.push(Expr::Lookup {
                set: anon,
                sreg: R1,
            });
            r.extend(drop.clone());
            b.add_rule(TABLE, &chain, &r);
            service(&mut b, format!("svcw{fam}"), false);
            nat_reply(&mut b, format!("rsw{fam}"), false);
        }
        // ICMP errors from NAT real servers: uvs relays them rewritten.
        for (v6, set, proto, ty, types) in [
            (false, "rsa4", 1, KeyType::IcmpType, ICMP4_ERRORS),
            (true, "rsa6", 58, KeyType::Icmpv6Type, ICMP6_ERRORS),
        ] {
            let keys: Vec<Vec<u8>> = types.iter().map(|t| vec![*t]).collect();
            let anon = b.anon_set(TABLE, ty, &keys);
            let mut r = l3(v6).to_vec();
            r.push(load_addr(v6, true));
            r.push(Expr::Lookup {
                set: SetRef::named(set),
                sreg: R1,
            });
            r.extend(l4proto_is(proto));
            r.push(Expr::Payload {
                base: Base::Transport,
                offset: 0,
                len: 1,
                dreg: R1,
            });
            r.push(Expr::Lookup {
                set: anon,
                sreg: R1,
            });
            r.extend(not_to_me());
            r.extend(drop.clone());
            b.add_rule(TABLE, &chain, &r);
        }
    }
    b
}

impl KernelGuard {
    /// Replaces any unowned `netdev uvs` table with an empty-set one hooked
    /// on `devices`, owned by a socket this guard keeps.
    pub fn install(devices: &[String]) -> Result<Self, GuardError> {
        let mut sock = NftSock::open()?;
        sock.commit(&install_batch(devices))
            .map_err(|e| GuardError::on_table(TABLE, e))?;
        Ok(KernelGuard {
            table: OwnedTable::new(TABLE, sock),
        })
    }

    /// Sends `delta` to the kernel in one transaction (nothing when it is
    /// empty). When the kernel refuses it the sets are as they were (the
    /// batch is atomic); after a timeout their state is unknown.
    pub fn apply(&mut self, delta: &Delta) -> Result<(), GuardError> {
        if delta.is_empty() {
            return Ok(());
        }
        let mut b = Batch::new(NFPROTO_NETDEV);
        b.set_changes(TABLE, &set_changes(delta));
        self.table.sock().commit(&b)?;
        Ok(())
    }

    /// Removes the table now (also done on drop).
    pub fn remove(&mut self) -> Result<(), GuardError> {
        Ok(self.table.remove()?)
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
    use std::process::Command;

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

    fn lab_ns(tag: &str) -> Option<Ns> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("{tag}: skipped (needs root for a network namespace)");
            return None;
        }
        let ns = Ns(format!("uvsguard-{tag}-{}", std::process::id()));
        for args in [
            &["netns", "add", &ns.0][..],
            &[
                "-n", &ns.0, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
            ],
        ] {
            let ok = Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip {args:?}");
        }
        Some(ns)
    }

    /// Every set's keys, read back over netlink, as `set: hex key` lines.
    fn read_back(sock: &mut NftSock) -> Vec<String> {
        let mut out = Vec::new();
        for set in [
            "svc4", "svcw4", "rs4", "rsw4", "rsa4", "svc6", "svcw6", "rs6", "rsw6", "rsa6",
        ] {
            for k in sock
                .set_keys(NFPROTO_NETDEV, TABLE, set)
                .expect("set listed")
            {
                let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
                out.push(format!("{set}: {hex}"));
            }
        }
        out.sort();
        out
    }

    fn hex(e: Elem) -> String {
        let h: String = e.key().iter().map(|b| format!("{b:02x}")).collect();
        format!("{}: {h}", e.set())
    }

    #[test]
    fn deltas_reach_the_kernel_sets_over_netlink() {
        let Some(ns) = lab_ns("delta") else { return };
        let (first, second, second_b, err, third, gone) = crate::sys::netns::run_in(&ns.0, || {
            let mut g = KernelGuard::install(&["d0".to_string()]).expect("installs");
            let mut rd = NftSock::open().expect("socket");
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
            let first = read_back(&mut rd);
            let (d, _) = o.change([((6, ip("192.0.2.1"), 80), None), svc(81, &[])]);
            g.apply(&d).expect("deletes and adds");
            let second = read_back(&mut rd);
            // The last service behind the shared server goes: so does it.
            let (d, _) = o.change([((6, ip("192.0.2.1"), 82), None)]);
            g.apply(&d).expect("deletes");
            let second_b = read_back(&mut rd);
            // Deleting what is not there is refused, and changes nothing.
            let bogus = Delta {
                add: vec![Elem::Service((6, ip("192.0.2.9"), 9))],
                del: vec![Elem::NatAddr(ip("203.0.113.99"))],
            };
            let err = g.apply(&bogus).expect_err("refused");
            let third = read_back(&mut rd);
            assert_eq!(counters().expect("counters"), Counters::default());
            g.remove().expect("removes");
            let gone = rd.tables(NFPROTO_NETDEV).expect("tables");
            (first, second, second_b, err.to_string(), third, gone)
        })
        .expect("runs in the namespace");
        let svc80 = hex(Elem::Service((6, ip("192.0.2.1"), 80)));
        let rs = hex(Elem::NatServer((6, ip("203.0.113.1"), 8080)));
        let rsa = hex(Elem::NatAddr(ip("203.0.113.1")));
        let wild6 = hex(Elem::Service((6, ip("2001:db8::1"), 0)));
        for want in [&svc80, &rs, &rsa, &wild6] {
            assert!(first.contains(want), "{want} in {first:?}");
        }
        assert_eq!(first.len(), 5, "{first:?}");
        assert!(!second.contains(&svc80), "{second:?}");
        assert!(second.contains(&hex(Elem::Service((6, ip("192.0.2.1"), 81)))));
        assert!(
            second.contains(&rs),
            "the server behind :82 stays: {second:?}"
        );
        assert!(
            !second_b.contains(&rs) && !second_b.contains(&rsa),
            "{second_b:?}"
        );
        assert!(err.contains("delete") && err.contains("rsa4"), "{err}");
        assert_eq!(second_b, third, "a refused batch changes nothing");
        assert!(!gone.contains(&TABLE.to_string()), "{gone:?}");
    }

    #[test]
    fn the_table_is_owned_by_the_guards_socket_and_dies_with_it() {
        let Some(ns) = lab_ns("owner") else { return };
        let (during, busy, after, stale_replaced) = crate::sys::netns::run_in(&ns.0, || {
            let mut rd = NftSock::open().expect("socket");
            let mut g =
                KernelGuard::install(&["d0".to_string(), "d1".to_string()]).expect("installs");
            let during = rd.tables(NFPROTO_NETDEV).expect("tables");
            // Another socket may neither replace nor delete it...
            let busy = KernelGuard::install(&["d0".to_string()])
                .expect_err("owned by the first guard")
                .to_string();
            assert!(remove_stale().is_err());
            // ...and closing the owner's socket (what process death does)
            // deletes it, without any remove.
            drop(g.table.take_owner());
            // The kernel releases an owned table when it learns of the
            // socket's release, which may come a moment after the close
            // returned (seen once under load): wait for it, bounded.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            let after = loop {
                let t = rd.tables(NFPROTO_NETDEV).expect("tables");
                if !t.contains(&TABLE.to_string()) || std::time::Instant::now() > deadline {
                    break t;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            };
            // An unowned leftover of the same name is replaced.
            let mut b = Batch::new(NFPROTO_NETDEV);
            b.add_table(TABLE, None);
            rd.commit(&b).expect("unowned table");
            let mut g = KernelGuard::install(&["d0".to_string()]).expect("replaces");
            g.remove().expect("removes");
            let stale_replaced = rd.tables(NFPROTO_NETDEV).expect("tables");
            (during, busy, after, stale_replaced)
        })
        .expect("runs in the namespace");
        assert!(during.contains(&TABLE.to_string()), "{during:?}");
        assert!(busy.contains("another running process"), "{busy}");
        assert!(!after.contains(&TABLE.to_string()), "{after:?}");
        assert!(!stale_replaced.contains(&TABLE.to_string()));
    }

    /// The rules as an `nft` script, for comparison (in the order of
    /// [`install_batch`]).
    const NFT_SCRIPT: &str = "table netdev uvsref {
  set svc4 { type ipv4_addr . inet_proto . inet_service; }
  set svcw4 { type ipv4_addr . inet_proto; }
  set rs4 { type ipv4_addr . inet_proto . inet_service; }
  set rsw4 { type ipv4_addr . inet_proto; }
  set rsa4 { type ipv4_addr; }
  set svc6 { type ipv6_addr . inet_proto . inet_service; }
  set svcw6 { type ipv6_addr . inet_proto; }
  set rs6 { type ipv6_addr . inet_proto . inet_service; }
  set rsw6 { type ipv6_addr . inet_proto; }
  set rsa6 { type ipv6_addr; }
  chain in0 {
    type filter hook ingress device \"d0\" priority -500; policy accept;
    ip daddr . meta l4proto . th dport @svc4 counter drop
    ip saddr . meta l4proto . th sport @rs4 fib daddr type != local counter drop
    ip saddr . meta l4proto . th sport @rs4 fib daddr type local @th,16,8 { 240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255 } counter drop
    ip daddr . meta l4proto @svcw4 counter drop
    ip saddr . meta l4proto @rsw4 fib daddr type != local counter drop
    ip6 daddr . meta l4proto . th dport @svc6 counter drop
    ip6 saddr . meta l4proto . th sport @rs6 fib daddr type != local counter drop
    ip6 saddr . meta l4proto . th sport @rs6 fib daddr type local @th,16,8 { 240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255 } counter drop
    ip6 daddr . meta l4proto @svcw6 counter drop
    ip6 saddr . meta l4proto @rsw6 fib daddr type != local counter drop
    ip saddr @rsa4 icmp type { destination-unreachable, source-quench, time-exceeded, parameter-problem } fib daddr type != local counter drop
    ip6 saddr @rsa6 icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } fib daddr type != local counter drop
  }
}
";

    #[test]
    fn nft_lists_the_netlink_table_as_the_rules_it_replaces() {
        // `nft` is only the oracle here: uvs itself never runs it.
        if Command::new("nft").arg("-v").output().is_err() {
            eprintln!("nft_lists_the_netlink_table_as_the_rules_it_replaces: skipped (no nft)");
            return;
        }
        let Some(ns) = lab_ns("oracle") else { return };
        let nft = |args: &[&str], stdin: Option<&str>| {
            use std::io::Write as _;
            let mut c = Command::new("ip")
                .args(["netns", "exec", &ns.0, "nft"])
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("nft runs");
            if let Some(s) = stdin {
                c.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
            }
            drop(c.stdin.take());
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "nft {args:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        nft(&["-f", "-"], Some(NFT_SCRIPT));
        // nft types a raw-payload set as its integer type and lists it in
        // hex; uvs's 1-byte set is typed inet_proto, listed in decimal:
        // the same bytes.
        let hex: Vec<String> = MASQ_PORT_HIGH.map(|b| format!("{b:#04x}")).collect();
        let dec: Vec<String> = MASQ_PORT_HIGH.map(|b| b.to_string()).collect();
        let want = nft(&["list", "table", "netdev", "uvsref"], None)
            .replace("uvsref", TABLE)
            .replace(&hex.join(", "), &dec.join(", "));
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let name = ns.0.clone();
        let t = std::thread::spawn(move || {
            crate::sys::netns::enter(&name).unwrap();
            let g = KernelGuard::install(&["d0".to_string()]).expect("installs");
            tx.send(()).unwrap();
            let _ = done_rx.recv();
            drop(g);
        });
        rx.recv().expect("installed");
        let got = nft(&["list", "table", "netdev", TABLE], None);
        done_tx.send(()).unwrap();
        t.join().unwrap();
        // Ownership is the one intended difference: nft names the owning
        // process after the table.
        let (head, rest) = got.split_once('\n').expect("listing");
        assert!(head.contains("# progname"), "owned: {head}");
        let got = format!(
            "table netdev {TABLE} {{\n{}",
            rest.replace("\tflags owner\n", "").trim_start_matches('\n')
        );
        assert_eq!(got, want, "netlink:\n{got}\nnft:\n{want}");
    }
}
