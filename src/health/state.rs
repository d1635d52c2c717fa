//! The health of every checker and server, and the table it implies. Pure
//! data: [`super::runner`] feeds it probe results, the daemon reads the
//! table. Costs are O(servers) per table and per reload, O(log checkers)
//! per probe scheduled (a heap of due times, stale entries skipped).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use foldhash::{HashMap, HashMapExt};

use super::conf::{Check, KaConfig, VirtualServer};
use super::key_name;
use crate::control::ctl::{Command, DestConfig, ServiceOpts, SvcKey, TunOpts};
use uvs_sched::FwdMethod;

/// A real server of a virtual server.
pub type ServerId = (SvcKey, IpAddr, u16);
/// One checker: its server and its place among the server's checkers.
pub type CheckerId = (SvcKey, IpAddr, u16, usize);

/// What `uvs stats` shows of one server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCounters {
    /// Probes finished.
    pub checks: u64,
    /// Probes failed.
    pub failures: u64,
    /// Up → down and down → up changes.
    pub transitions: u64,
    /// Passing its checks now.
    pub up: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Checker {
    pub check: Check,
    /// Where the probe goes.
    pub target: SocketAddr,
    /// New on every (re)start: results of an older probe are dropped.
    pub serial: u64,
    pub up: bool,
    retries_left: u32,
    pub due: Instant,
    pub in_flight: bool,
    /// `misc_dynamic`'s weight from the last exit code.
    dyn_weight: Option<u32>,
}

/// One probe to run.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: CheckerId,
    pub serial: u64,
    pub check: Check,
    pub target: SocketAddr,
}

/// The health of everything in one keepalived file.
#[derive(Debug, Clone)]
pub struct State {
    conf: KaConfig,
    checkers: HashMap<CheckerId, Checker>,
    servers: HashMap<ServerId, ServerCounters>,
    quorum_up: HashMap<SvcKey, bool>,
    serial: u64,
    /// (due, serial, checker): an entry whose checker has another serial
    /// or due time, or is in flight, is stale and skipped.
    heap: BinaryHeap<Due>,
}

/// A heap entry: the earliest `at` first (serials are unique, so `at` and
/// `serial` order entries completely).
#[derive(Debug, Clone)]
struct Due {
    at: Instant,
    serial: u64,
    id: CheckerId,
}

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.serial) == (o.at, o.serial)
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Due {
    /// Reversed: `BinaryHeap` is a max-heap.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.serial).cmp(&(self.at, self.serial))
    }
}

/// A state worked out for a re-read file, not running yet, with what
/// changed among the checkers.
#[derive(Debug)]
pub struct Staged {
    pub(super) state: State,
    /// Checkers kept (with their state), started (new or changed), stopped.
    pub checkers: [usize; 3],
}

impl Staged {
    /// The commands of the staged table (see [`State::commands`]).
    pub fn commands(&mut self) -> Vec<Command> {
        self.state.commands()
    }
    /// The services it owns.
    pub fn keys(&self) -> Vec<SvcKey> {
        self.state.keys()
    }
    /// The file's configuration.
    pub fn conf(&self) -> &KaConfig {
        &self.state.conf
    }
    /// The warnings of the file.
    pub fn warnings(&self) -> &[String] {
        &self.state.conf.warnings
    }
}

impl State {
    /// Every server up, every checker due now.
    pub fn new(conf: KaConfig) -> State {
        let mut s = State {
            conf: KaConfig::default(),
            checkers: HashMap::new(),
            servers: HashMap::new(),
            quorum_up: HashMap::new(),
            serial: 0,
            heap: BinaryHeap::new(),
        };
        s.stage_into(conf, &mut [0; 3]);
        s
    }

    /// The configuration it checks.
    pub fn conf(&self) -> &KaConfig {
        &self.conf
    }

    /// The services the file owns, in file order.
    pub fn keys(&self) -> Vec<SvcKey> {
        self.conf.services.iter().map(|v| v.key).collect()
    }

    /// The state for `conf`: checkers whose service, server, place and
    /// configuration are unchanged keep their state and schedule.
    pub fn stage(&self, conf: KaConfig) -> Staged {
        let mut s = self.clone();
        let mut counts = [0; 3];
        s.stage_into(conf, &mut counts);
        Staged {
            state: s,
            checkers: counts,
        }
    }

    /// Installs a staged state. Kept checkers take their live state, not
    /// the one copied at staging: probe results recorded in between (and
    /// probes still in flight) stay valid.
    pub fn install(&mut self, staged: Staged) {
        let mut new = staged.state;
        for (id, c) in new.checkers.iter_mut() {
            match self.checkers.get(id) {
                Some(live) if live.serial == c.serial => *c = live.clone(),
                _ => {}
            }
        }
        let ups: Vec<(ServerId, bool)> = new
            .servers
            .keys()
            .map(|sid| {
                let n = new.count_checks(*sid);
                let up = (0..n).all(|i| {
                    new.checkers
                        .get(&(sid.0, sid.1, sid.2, i))
                        .is_some_and(|c| c.up)
                });
                (*sid, up)
            })
            .collect();
        for (sid, up) in ups {
            let cnt = new.servers.get_mut(&sid).expect("listed above");
            if let Some(live) = self.servers.get(&sid) {
                *cnt = ServerCounters { up, ..*live };
                if up != live.up {
                    cnt.transitions += 1;
                }
            }
        }
        *self = new;
        self.reheap();
    }

    fn stage_into(&mut self, conf: KaConfig, counts: &mut [usize; 3]) {
        let now = Instant::now();
        let mut checkers = HashMap::with_capacity(self.checkers.len());
        let mut servers = HashMap::with_capacity(self.servers.len());
        for vs in &conf.services {
            for rs in &vs.real {
                let sid = (vs.key, rs.addr, rs.port);
                let mut counters = self.servers.get(&sid).copied().unwrap_or(ServerCounters {
                    up: true,
                    ..Default::default()
                });
                for (i, c) in rs.checks.iter().enumerate() {
                    let id = (vs.key, rs.addr, rs.port, i);
                    match self.checkers.remove(&id) {
                        Some(old) if old.check == *c => {
                            counts[0] += 1;
                            checkers.insert(id, old);
                        }
                        _ => {
                            counts[1] += 1;
                            self.serial += 1;
                            checkers.insert(
                                id,
                                Checker {
                                    check: c.clone(),
                                    target: SocketAddr::new(
                                        c.connect_ip.unwrap_or(rs.addr),
                                        c.connect_port.unwrap_or(rs.port),
                                    ),
                                    serial: self.serial,
                                    up: true,
                                    retries_left: c.retry,
                                    due: now,
                                    in_flight: false,
                                    dyn_weight: None,
                                },
                            );
                        }
                    }
                }
                counters.up = (0..rs.checks.len()).all(|i| {
                    checkers
                        .get(&(vs.key, rs.addr, rs.port, i))
                        .is_some_and(|c: &Checker| c.up)
                });
                servers.insert(sid, counters);
            }
        }
        counts[2] += self.checkers.len();
        self.quorum_up
            .retain(|k, _| conf.services.iter().any(|v| v.key == *k));
        self.checkers = checkers;
        self.servers = servers;
        self.conf = conf;
        self.reheap();
    }

    /// The heap from the checkers (after a reload: O(checkers)).
    fn reheap(&mut self) {
        self.heap = self
            .checkers
            .iter()
            .filter(|(_, c)| !c.in_flight)
            .map(|(id, c)| Due {
                at: c.due,
                serial: c.serial,
                id: *id,
            })
            .collect();
    }

    /// Checkers due by `now` and idle, marked in flight, as jobs; also the
    /// earliest time another becomes due.
    pub fn due(&mut self, now: Instant, jobs: &mut Vec<Job>) -> Option<Instant> {
        while let Some(&Due {
            at: due,
            serial,
            id,
        }) = self.heap.peek()
        {
            let Some(c) = self.checkers.get_mut(&id) else {
                self.heap.pop();
                continue;
            };
            if c.serial != serial || c.due != due || c.in_flight {
                self.heap.pop();
                continue;
            }
            if due > now {
                return Some(due);
            }
            self.heap.pop();
            c.in_flight = true;
            jobs.push(Job {
                id,
                serial,
                check: c.check.clone(),
                target: c.target,
            });
        }
        None
    }

    /// Records a probe's result (`Ok(Some(w))`: `misc_dynamic`'s weight);
    /// returns whether the table changes.
    pub fn record(
        &mut self,
        id: CheckerId,
        serial: u64,
        result: Result<Option<u32>, String>,
        now: Instant,
    ) -> bool {
        let Some(c) = self.checkers.get_mut(&id) else {
            return false;
        };
        if c.serial != serial {
            return false;
        }
        c.in_flight = false;
        let sid = (id.0, id.1, id.2);
        let Some(counters) = self.servers.get_mut(&sid) else {
            return false;
        };
        // Scheduled again below; the heap entry is pushed once `due` is set.
        counters.checks += 1;
        let mut changed = false;
        match result {
            Ok(w) => {
                c.retries_left = c.check.retry;
                c.due = now + c.check.delay_loop;
                changed |= c.dyn_weight != w;
                c.dyn_weight = w;
                c.up = true;
            }
            Err(e) => {
                counters.failures += 1;
                if c.up && c.retries_left > 0 {
                    c.retries_left -= 1;
                    c.due = now + c.check.delay_before_retry;
                    log::debug!(
                        "health: {} {}: check failed ({e}), {} retr{} left",
                        key_name(&id.0),
                        SocketAddr::new(id.1, id.2),
                        c.retries_left,
                        if c.retries_left == 1 { "y" } else { "ies" }
                    );
                } else {
                    if c.up {
                        log::warn!(
                            "health: {} real server {}: check at {} failed: {e}",
                            key_name(&id.0),
                            SocketAddr::new(id.1, id.2),
                            c.check.at
                        );
                    }
                    c.up = false;
                    c.retries_left = c.check.retry;
                    c.due = now + c.check.delay_loop;
                }
            }
        }
        self.heap.push(Due {
            at: c.due,
            serial: c.serial,
            id,
        });
        let n = self.count_checks(sid);
        let up = (0..n).all(|i| {
            self.checkers
                .get(&(sid.0, sid.1, sid.2, i))
                .is_some_and(|c| c.up)
        });
        let counters = self.servers.get_mut(&sid).expect("looked up above");
        if up != counters.up {
            counters.up = up;
            counters.transitions += 1;
            changed = true;
            log::warn!(
                "health: {} real server {} is {}",
                key_name(&sid.0),
                SocketAddr::new(sid.1, sid.2),
                if up { "UP again" } else { "DOWN" }
            );
        }
        changed
    }

    fn count_checks(&self, sid: ServerId) -> usize {
        self.conf
            .services
            .iter()
            .find(|v| v.key == sid.0)
            .and_then(|v| v.real.iter().find(|r| (r.addr, r.port) == (sid.1, sid.2)))
            .map_or(0, |r| r.checks.len())
    }

    /// Every server's counters, in file order.
    pub fn counters(&self) -> Vec<(SvcKey, IpAddr, u16, ServerCounters)> {
        let mut out = Vec::new();
        for vs in &self.conf.services {
            for rs in &vs.real {
                if let Some(c) = self.servers.get(&(vs.key, rs.addr, rs.port)) {
                    out.push((vs.key, rs.addr, rs.port, *c));
                }
            }
        }
        out
    }

    /// The uvsadm commands building every service of the file as health
    /// says it should be now (see the module doc); updates each service's
    /// quorum state.
    pub fn commands(&mut self) -> Vec<Command> {
        let mut out = Vec::new();
        for vs in &self.conf.services {
            let mut live = Vec::with_capacity(vs.real.len());
            let mut live_weight: u64 = 0;
            for rs in &vs.real {
                let up = self
                    .servers
                    .get(&(vs.key, rs.addr, rs.port))
                    .is_some_and(|c| c.up);
                let w = (0..rs.checks.len())
                    .filter_map(|i| {
                        self.checkers
                            .get(&(vs.key, rs.addr, rs.port, i))
                            .and_then(|c| c.dyn_weight)
                    })
                    .next_back()
                    .unwrap_or(rs.weight);
                if up {
                    live_weight += u64::from(w);
                }
                live.push((rs, up, w));
            }
            let q = u64::from(vs.quorum);
            let h = u64::from(vs.hysteresis);
            let quorum = self.quorum_up.entry(vs.key).or_insert(live_weight >= q);
            if *quorum && live_weight + h < q {
                *quorum = false;
                log::warn!(
                    "health: {}: quorum lost (live weight {live_weight}, quorum {q})",
                    key_name(&vs.key)
                );
            } else if !*quorum && live_weight >= q + h {
                *quorum = true;
                log::warn!(
                    "health: {}: quorum regained (live weight {live_weight})",
                    key_name(&vs.key)
                );
            }
            let sorry_in = !*quorum && vs.sorry.is_some();
            out.push(Command::AddService(opts(vs)));
            for (rs, up, w) in live {
                let weight = match (up && !sorry_in, rs.inhibit) {
                    (true, _) => w,
                    (false, true) => 0,
                    (false, false) => continue,
                };
                out.push(Command::AddServer {
                    svc: vs.key,
                    dest: dest(vs, rs.addr, rs.port, weight, rs.u_threshold, rs.l_threshold),
                });
            }
            if let Some((addr, port)) = vs.sorry {
                let taken = vs.real.iter().any(|r| (r.addr, r.port) == (addr, port));
                if !taken && (sorry_in || vs.sorry_inhibit) {
                    out.push(Command::AddServer {
                        svc: vs.key,
                        dest: dest(vs, addr, port, u32::from(sorry_in), 0, 0),
                    });
                }
            }
        }
        out
    }
}

fn opts(vs: &VirtualServer) -> ServiceOpts {
    ServiceOpts {
        key: vs.key,
        sched: vs.sched.clone(),
        sched_flags: Vec::new(),
        persistent: vs.persistent,
        netmask: vs.netmask,
        ops: vs.ops,
        pe: None,
    }
}

fn dest(vs: &VirtualServer, addr: IpAddr, port: u16, weight: u32, u: u32, l: u32) -> DestConfig {
    DestConfig {
        addr,
        port,
        fwd: vs.fwd,
        weight,
        u_threshold: u,
        l_threshold: l,
        tun: (vs.fwd == FwdMethod::Tunnel).then(TunOpts::default),
    }
}
