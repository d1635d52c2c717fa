//! Seeded simulation: a small engine drives the table with clients that
//! reuse ports against TIME_WAIT, servers that are drained (weight 0),
//! removed and re-added, a persistent service, UDP flows, and
//! `expire_nodest_conn` switched on and off. Invariants are checked as it
//! runs and after every full expiry pass:
//! * a packet is only forwarded to an available server;
//! * a SYN reusing a TIME_WAIT tuple is forwarded (first packet not lost);
//! * established flows on a drained (weight 0) server keep flowing, and no
//!   new unpersisted connection goes to it;
//! * each server's ActiveConn/InActConn equal a recount of the listing;
//! * the listing has no duplicates and matches `len()`;
//! * with `expire_nodest_conn` on, no entry of a removed server survives a
//!   sweep;
//! * a persistence template does not outlive its timeout after its last
//!   bind and the last moment one of its connections was open (not
//!   stretched by TIME_WAIT).

mod common;
use common::*;

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uvs_conntrack::proto::tcp::flags::{ACK, FIN, SYN};
use uvs_conntrack::{
    may_create, Config, ConnState, Dest, Dir, FwdMethod, InsertError, Knobs, NewConn, PacketInfo,
    Table, TcpState, TemplateKey, Tuple, Update,
};

const TICK: u64 = 500;
const PERSIST_MS: u32 = 10_000;
const VIP: &str = "192.0.2.10";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Established,
    TimeWait,
}

#[derive(Debug, Clone)]
struct Flow {
    tuple: Tuple,
    daddr: IpAddr,
    dport: u16,
    phase: Phase,
    drops: u32,
    /// A packet was dropped because the server was removed: the client's
    /// connection may be gone for good.
    broken: bool,
}

struct Sim {
    t: Table,
    rng: StdRng,
    now: u64,
    dests: Vec<Arc<Dest>>,
    rr: usize,
    // Ordered maps: the same seed walks the flows in the same order, so a
    // failure reproduces.
    flows: BTreeMap<(u8, IpAddr, u16, u16), Flow>,
    /// Template key → (last bind, last time a controlled flow was open).
    tpl_seen: BTreeMap<IpAddr, (u64, u64)>,
    stretched: u32,
    reuse_syns: u32,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Forwarded(IpAddr, u16),
    Dropped,
}

impl Sim {
    fn new(seed: u64, release: bool) -> Self {
        let t = Table::new(Config {
            max_entries: 100_000,
            shards: 8,
            seed,
            knobs: Knobs {
                release_template_on_close: release,
                ..Knobs::default()
            },
            ..Config::default()
        });
        let dests = (0..3)
            .map(|i| dest(&format!("203.0.113.{}", 11 + i), 0, FwdMethod::Masq))
            .collect();
        Sim {
            t,
            rng: StdRng::seed_from_u64(seed),
            now: 1,
            dests,
            rr: 0,
            flows: BTreeMap::new(),
            tpl_seen: BTreeMap::new(),
            stretched: 0,
            reuse_syns: 0,
        }
    }

    fn schedule(&mut self) -> Option<Arc<Dest>> {
        for _ in 0..self.dests.len() {
            self.rr = (self.rr + 1) % self.dests.len();
            let d = &self.dests[self.rr];
            if d.can_schedule() {
                return Some(d.clone());
            }
        }
        None
    }

    fn tkey(tu: &Tuple) -> TemplateKey {
        TemplateKey {
            proto: tu.proto,
            caddr: tu.src,
            vaddr: tu.dst,
            vport: tu.dport,
            fwmark: 0,
            pe: 0,
        }
    }

    /// The engine's new-connection path.
    fn new_conn(&mut self, tu: &Tuple, p: PacketInfo) -> Outcome {
        let persistent = tu.dport == 443;
        let tpl = if persistent {
            match self.t.lookup_template(&Self::tkey(tu), self.now) {
                Some(h) => Some(h),
                None => {
                    let Some(d) = self.schedule() else {
                        return Outcome::Dropped;
                    };
                    let h = self
                        .t
                        .get_or_insert_template(
                            &Self::tkey(tu),
                            &d,
                            0,
                            FwdMethod::Masq,
                            PERSIST_MS,
                            self.now,
                        )
                        .expect("template insert");
                    Some(h)
                }
            }
        } else {
            None
        };
        let d = match &tpl {
            Some(h) => h.dest().clone(),
            None => match self.schedule() {
                Some(d) => d,
                None => return Outcome::Dropped,
            },
        };
        if tpl.is_none() {
            assert!(d.weight() > 0, "new connection to a drained server");
        }
        let c = NewConn {
            proto: tu.proto,
            caddr: tu.src,
            cport: tu.sport,
            vaddr: tu.dst,
            vport: tu.dport,
            daddr: d.addr,
            dport: tu.dport, // port-0 style servers: keep the service port
            dest: d.clone(),
            fwd: FwdMethod::Masq,
        };
        let res = match &tpl {
            Some(h) => {
                let e = self.tpl_seen.entry(tu.src).or_insert((0, 0));
                e.0 = self.now;
                self.t.insert_controlled(c, h, p, self.now)
            }
            None => self.t.insert(c, p, self.now),
        };
        match res {
            Ok(h) => Outcome::Forwarded(h.daddr(), h.dport()),
            Err(InsertError::ReplyTupleInUse) => Outcome::Dropped,
            Err(e) => panic!("insert failed: {e}"),
        }
    }

    /// The engine's per-packet path.
    fn packet(&mut self, tu: &Tuple, p: PacketInfo) -> Outcome {
        match self.t.lookup(tu) {
            Some((h, dir)) => match self.t.update(&h, dir, p, self.now) {
                Update::Forward => {
                    assert!(h.dest().is_available(), "forwarded to a removed server");
                    Outcome::Forwarded(h.daddr(), h.dport())
                }
                Update::Drop => Outcome::Dropped,
                Update::Reschedule => {
                    assert_eq!(dir, Dir::In);
                    self.new_conn(tu, p)
                }
            },
            None => {
                let is_request = tu.dst == ip(VIP);
                if is_request && may_create(tu.proto, &p, &self.t.knobs()) {
                    self.new_conn(tu, p)
                } else {
                    Outcome::Dropped
                }
            }
        }
    }

    fn reply(tu: &Tuple, daddr: IpAddr, dport: u16) -> Tuple {
        Tuple {
            proto: tu.proto,
            src: daddr,
            sport: dport,
            dst: tu.src,
            dport: tu.sport,
        }
    }

    fn open_flow(&mut self) {
        let client = ip(&format!("198.51.100.{}", self.rng.gen_range(1..=12)));
        let sport = self.rng.gen_range(1024..1032); // few ports: reuse
        let r: f64 = self.rng.gen();
        let (proto, dport) = if r < 0.6 {
            (TCP, 80)
        } else if r < 0.8 {
            (TCP, 443)
        } else {
            (UDP, 53)
        };
        let key = (proto, client, sport, dport);
        if let Some(f) = self.flows.get(&key) {
            if f.phase != Phase::TimeWait {
                return;
            }
        }
        let tu = Tuple {
            proto,
            src: client,
            sport,
            dst: ip(VIP),
            dport,
        };
        let reuse = self
            .t
            .lookup_in(&tu)
            .is_some_and(|h| h.state() == ConnState::Tcp(TcpState::TimeWait));
        let can_schedule = self.dests.iter().any(|d| d.can_schedule());
        if proto == UDP {
            if let Outcome::Forwarded(da, dp) = self.packet(&tu, PacketInfo::udp(80)) {
                let back = Self::reply(&tu, da, dp);
                assert!(matches!(
                    self.packet(&back, PacketInfo::udp(120)),
                    Outcome::Forwarded(..)
                ));
                self.flows.insert(
                    key,
                    Flow {
                        tuple: tu,
                        daddr: da,
                        dport: dp,
                        phase: Phase::Established,
                        drops: 0,
                        broken: false,
                    },
                );
            }
            return;
        }
        let out = self.packet(&tu, PacketInfo::tcp(SYN, 60));
        // With the kernel's template behaviour a TIME_WAIT connection is
        // still controlled and is not rescheduled (the hurt this fixes).
        if reuse && self.t.knobs().release_template_on_close {
            self.reuse_syns += 1;
            let tpl_ok = dport != 443
                || self.t.lookup_template(&Self::tkey(&tu), self.now).is_some()
                || can_schedule;
            if can_schedule && tpl_ok {
                assert!(
                    matches!(out, Outcome::Forwarded(..)),
                    "SYN on TIME_WAIT tuple lost"
                );
            }
        }
        let Outcome::Forwarded(da, dp) = out else {
            return;
        };
        let back = Self::reply(&tu, da, dp);
        assert!(matches!(
            self.packet(&back, PacketInfo::tcp(SYN | ACK, 60)),
            Outcome::Forwarded(..)
        ));
        assert!(matches!(
            self.packet(&tu, PacketInfo::tcp(ACK, 52)),
            Outcome::Forwarded(..)
        ));
        self.flows.insert(
            key,
            Flow {
                tuple: tu,
                daddr: da,
                dport: dp,
                phase: Phase::Established,
                drops: 0,
                broken: false,
            },
        );
    }

    fn traffic(&mut self) {
        let keys: Vec<_> = self.flows.keys().copied().collect();
        for k in keys {
            let f = self.flows[&k].clone();
            if f.phase != Phase::Established {
                continue;
            }
            if f.tuple.dport == 443 {
                let e = self.tpl_seen.entry(f.tuple.src).or_insert((0, 0));
                e.1 = self.now;
            }
            let r: f64 = self.rng.gen();
            if r < 0.3 {
                let d = self.dests.iter().find(|d| d.addr == f.daddr).cloned();
                let p = if f.tuple.proto == TCP {
                    PacketInfo::tcp(ACK, 1000)
                } else {
                    PacketInfo::udp(100)
                };
                let out = self.packet(&f.tuple, p);
                match (&out, d) {
                    // Drained servers keep their established flows; only a
                    // UDP flow whose server was removed may move
                    // (expire_nodest_conn reschedules it).
                    (Outcome::Forwarded(a, _), Some(d)) if *a != d.addr => {
                        assert!(
                            f.tuple.proto == UDP && !d.is_available(),
                            "flow moved server mid-stream"
                        );
                    }
                    (Outcome::Dropped, Some(d)) => {
                        assert!(
                            !d.is_available() || f.tuple.proto == UDP || f.broken,
                            "established flow to an available server dropped"
                        );
                        if !d.is_available() {
                            self.flows.get_mut(&k).expect("flow").broken = true;
                        }
                    }
                    _ => {}
                }
                let fl = self.flows.get_mut(&k).expect("flow");
                match out {
                    Outcome::Forwarded(a, p) => {
                        fl.daddr = a;
                        fl.dport = p;
                        fl.drops = 0;
                    }
                    Outcome::Dropped => fl.drops += 1,
                }
                if fl.drops > 3 {
                    self.flows.remove(&k); // the client gives up
                }
            } else if r < 0.36 && f.tuple.proto == TCP {
                // Orderly close: client FIN, server FIN, last ACK.
                let back = Self::reply(&f.tuple, f.daddr, f.dport);
                self.packet(&f.tuple, PacketInfo::tcp(FIN | ACK, 52));
                self.packet(&back, PacketInfo::tcp(FIN | ACK, 52));
                self.packet(&f.tuple, PacketInfo::tcp(ACK, 52));
                if let Some(fl) = self.flows.get_mut(&k) {
                    fl.phase = Phase::TimeWait;
                }
            } else if r < 0.40 && f.tuple.proto == UDP {
                self.flows.remove(&k); // UDP flows just stop
            }
        }
    }

    fn admin(&mut self) {
        let r: f64 = self.rng.gen();
        let i = self.rng.gen_range(0..self.dests.len());
        let d = self.dests[i].clone();
        if r < 0.01 {
            d.set_weight(if d.weight() == 0 { 1 } else { 0 });
        } else if r < 0.02 {
            if d.is_available() {
                // Its connections may now be dropped or swept away.
                for f in self.flows.values_mut().filter(|f| f.daddr == d.addr) {
                    f.broken = true;
                }
            }
            d.set_available(!d.is_available());
        } else if r < 0.025 {
            let mut k = self.t.knobs();
            k.expire_nodest_conn = !k.expire_nodest_conn;
            self.t.set_knobs(&k);
        }
    }

    fn check(&mut self) {
        while self.t.expire(self.now, 1 << 20) > 0 {}
        let mut listed = Vec::new();
        self.t.for_each_entry(self.now, |i| listed.push(i.clone()));
        assert_eq!(listed.len(), self.t.len());
        // Connections are unique by tuple. (Templates may repeat: an
        // invalidated template stays, unlisted by lookups, until its
        // connections end, while a new one serves the same client.)
        let conns: Vec<_> = listed.iter().filter(|i| !i.template).collect();
        let keys: HashSet<_> = conns
            .iter()
            .map(|i| (i.proto, i.caddr, i.cport, i.vaddr, i.vport))
            .collect();
        assert_eq!(keys.len(), conns.len(), "duplicate entries");
        let nodest = self.t.knobs().expire_nodest_conn;
        for d in &self.dests {
            let mine = || listed.iter().filter(|i| !i.template && i.daddr == d.addr);
            let active = mine().filter(|i| i.state.is_active()).count() as u32;
            let inactive = mine().filter(|i| !i.state.is_active()).count() as u32;
            assert_eq!(
                (d.active_conns(), d.inactive_conns()),
                (active, inactive),
                "counts of {}",
                d.addr
            );
            let tpls = listed
                .iter()
                .filter(|i| i.template && i.daddr == d.addr)
                .count() as u32;
            assert_eq!(d.persistent_conns(), tpls);
            if nodest && !d.is_available() {
                assert_eq!(
                    active + inactive,
                    0,
                    "entries of a removed server survived the sweep"
                );
            }
        }
        // Connections of the persistent service still open (including ones
        // the model's clients gave up on) keep their template legitimately.
        for i in listed.iter().filter(|i| !i.template && i.vport == 443) {
            if !matches!(
                i.state,
                ConnState::Tcp(TcpState::TimeWait | TcpState::Close)
            ) {
                self.tpl_seen.entry(i.caddr).or_insert((0, 0)).1 = self.now;
            }
        }
        for i in listed.iter().filter(|i| i.template && i.controlled == 0) {
            let (bind, open) = self.tpl_seen.get(&i.caddr).copied().unwrap_or((0, 0));
            // Requeue while controlling may add one more timeout.
            let limit = bind.max(open) + 2 * PERSIST_MS as u64 + 2 * TICK;
            if self.now > limit {
                self.stretched += 1;
            }
        }
    }
}

fn run(seed: u64, release: bool, ticks: u32) -> Sim {
    let mut s = Sim::new(seed, release);
    for tick in 0..ticks {
        s.now += TICK;
        for _ in 0..s.rng.gen_range(0..4) {
            s.open_flow();
        }
        s.traffic();
        s.admin();
        s.t.expire(s.now, 64);
        if tick % 10 == 9 {
            s.check();
        }
    }
    s
}

#[test]
fn seeded_simulation() {
    for seed in 1..=10 {
        let s = run(seed, true, 2000);
        assert_eq!(s.stretched, 0, "seed {seed}: persistence stretched");
        assert!(s.reuse_syns > 0, "seed {seed}: no port reuse exercised");
        let st = s.t.stats();
        assert!(st.rescheduled > 0, "seed {seed}: nothing rescheduled");
        assert!(
            st.nodest_dropped + st.nodest_expired > 0,
            "seed {seed}: no removed server hit"
        );
        eprintln!("seed {seed}: {} reuse SYNs, {st:?}", s.reuse_syns);
    }
}

#[test]
fn kernel_template_mode_is_stretched_by_time_wait() {
    // Shows what `release_template_on_close` fixes: with the kernel's
    // behaviour, TIME_WAIT connections keep templates alive long past -p.
    let stretched: u32 = (1..=3).map(|seed| run(seed, false, 2000).stretched).sum();
    assert!(stretched > 0);
}

/// Many more seeds than CI runs (`cargo test -p uvs-conntrack --test
/// simulation -- --ignored`): each seed's run is deterministic, so a
/// failing seed is a reproducible case.
#[test]
#[ignore]
fn seeded_simulation_sweep() {
    for seed in 11..=400 {
        let s = run(seed, true, 2000);
        assert_eq!(s.stretched, 0, "seed {seed}: persistence stretched");
    }
}
