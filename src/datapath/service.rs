//! The runtime service table: what the workers read for every new
//! connection, published RCU-style.
//!
//! Contract:
//! * Workers load the current immutable [`Services`] snapshot (`arc_swap`)
//!   and ask [`Services::find`] / [`Services::is_vip`]: hash look-ups on
//!   (protocol, VIP, port) and on the VIP, reading shared memory only (no
//!   lock, no write, no allocation). `is_vip`, asked for every packet, is
//!   a flat open-addressing set (`service/vipset.rs`) whose cost does not
//!   grow with the number of services.
//! * The control plane changes a snapshot by [`Services::plan`]ning the
//!   services a command touched and committing the [`Plan`]: only those
//!   services' runtime objects are built, and the new snapshot shares every
//!   other entry with the old one (persistent hash maps, `imbl`), so one
//!   change costs O(what it changes), never O(services).
//! * Real servers are `Arc<Dest>`s that survive snapshots — their connection
//!   counts live in them — and a removed real server stays in its service's
//!   trash so that re-adding it brings its connections back (the kernel's
//!   `dest_trash`). Each service keeps its scheduler object across
//!   snapshots while its scheduler name and flags stay; the scheduler is
//!   told about destination changes with `Scheduler::update`. Counters
//!   (`Stats`) stay with the service until it is deleted. The servers of a
//!   deleted service are marked unavailable.
//! * A snapshot made [`Services::counted`] gives each new service and each
//!   new real server a counter slot in the workers' statistics (`--stats`):
//!   a service keeps its slot across snapshots and changes, a re-added
//!   (deleted, then added) service gets a new one, counting from zero, as
//!   the kernel's does. Without it (benchmarks, tests) nothing is counted.
//! * Planning does everything that can fail (building schedulers) without
//!   touching shared objects; committing cannot fail.

use std::net::IpAddr;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt, HashSet};
use imbl::shared_ptr::DefaultSharedPtr;
use uvs_sched::{Dest, FwdMethod, Registry, SchedError, SchedParams, Scheduler, TunConfig};

/// What the configuration says about one real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestSpec {
    pub addr: IpAddr,
    pub port: u16,
    pub fwd: FwdMethod,
    pub weight: u32,
    pub u_threshold: u32,
    pub l_threshold: u32,
    pub tun: TunConfig,
}

/// How a persistent service groups clients (`-M`): an IPv4 netmask (need
/// not be contiguous, as ipvsadm allows) or an IPv6 prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMask {
    V4(u32),
    V6(u8),
}

impl ClientMask {
    /// The client address as its persistence template sees it.
    pub fn apply(self, a: IpAddr) -> IpAddr {
        match (self, a) {
            (ClientMask::V4(m), IpAddr::V4(v)) => IpAddr::V4((u32::from(v) & m).into()),
            (ClientMask::V6(len), a @ IpAddr::V6(_)) => uvs_conntrack::mask_addr(a, len),
            (_, a) => a,
        }
    }
}

/// Persistence (`-p TIMEOUT [-M MASK]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    pub timeout_ms: u32,
    pub mask: ClientMask,
}

/// A persistence engine (`--pe`): what besides the client keys a
/// persistent service's templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pe {
    /// `sip`: the SIP Call-ID of each datagram (`pe_sip.rs`).
    Sip,
}

/// What the configuration says about one virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub proto: u8,
    pub addr: IpAddr,
    pub port: u16,
    pub sched: String,
    pub params: SchedParams,
    pub persistence: Option<Persistence>,
    /// `-o`: each UDP datagram is scheduled on its own and leaves no
    /// connection entry (the kernel's IP_VS_SVC_F_ONEPACKET).
    pub one_packet: bool,
    /// `--pe`: the persistence engine (with `persistence` only).
    pub pe: Option<Pe>,
    pub dests: Vec<DestSpec>,
}

/// A service's traffic counters (`--stats`): its slot in the workers'
/// statistics, held for as long as the service exists.
pub type Stats = crate::datapath::stats::SvcSlot;

/// Where new services and servers get their counter slots.
type Counted = Option<Arc<crate::datapath::stats::Stats>>;

/// A persistent hash map (structurally shared between snapshots).
type PMap<K, V> = imbl::GenericHashMap<K, V, foldhash::fast::RandomState, DefaultSharedPtr>;

/// What identifies a service on the data path: (protocol, VIP, port).
/// A firewall-mark service (`-f MARK`) has the key [`fwmark_id`].
pub type SvcId = (u8, IpAddr, u16);

/// The protocol number of fwmark services' keys (no packet has it: the
/// data path looks them up by mark only, [`Services::find_fwmark`]).
pub const FWMARK: u8 = 0;

/// The key of the fwmark service for `mark` (`-6 -f MARK` when `v6`): the
/// mark stands where the address does, in the family's form, port 0. Such
/// keys are no VIPs.
pub fn fwmark_id(v6: bool, mark: u32) -> SvcId {
    let addr = if v6 {
        IpAddr::V6(std::net::Ipv6Addr::from(u128::from(mark)))
    } else {
        IpAddr::V4(std::net::Ipv4Addr::from(mark))
    };
    (FWMARK, addr, 0)
}

/// Services with more real servers than this get a hash index for
/// [`ServiceRt::dest`]; below it a scan of the vector is cheaper.
const DEST_INDEX_MIN: usize = 8;

/// One virtual service as the workers see it.
#[derive(Debug)]
pub struct ServiceRt {
    pub proto: u8,
    pub addr: IpAddr,
    pub port: u16,
    pub sched: Arc<dyn Scheduler>,
    pub params: SchedParams,
    pub persistence: Option<Persistence>,
    /// See [`ServiceSpec::one_packet`].
    pub one_packet: bool,
    /// See [`ServiceSpec::pe`].
    pub pe: Option<Pe>,
    /// Current real servers, in configuration order.
    pub dests: Vec<Arc<Dest>>,
    /// Removed real servers, kept so a re-add resumes their connections.
    pub trash: Vec<Arc<Dest>>,
    pub stats: Arc<Stats>,
    /// (address, port) → index in `dests`, for services with many servers.
    index: Option<HashMap<(IpAddr, u16), usize>>,
}

impl ServiceRt {
    /// The current real server `addr:port` (listings' counters), O(1).
    pub fn dest(&self, addr: IpAddr, port: u16) -> Option<&Arc<Dest>> {
        match &self.index {
            Some(ix) => ix.get(&(addr, port)).map(|&i| &self.dests[i]),
            None => self.dests.iter().find(|d| d.addr == addr && d.port == port),
        }
    }

    /// This service's key.
    pub fn id(&self) -> SvcId {
        (self.proto, self.addr, self.port)
    }
}

/// Errors building a snapshot; the running one stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Sched(#[from] SchedError),
}

/// One service's change, for [`Services::plan`].
#[derive(Debug, Clone)]
pub enum Change {
    /// Add the service or bring it to this spec.
    Upsert(ServiceSpec),
    /// Delete the service (absent: nothing to do).
    Remove(SvcId),
}

impl Change {
    fn id(&self) -> SvcId {
        match self {
            Change::Upsert(s) => (s.proto, s.addr, s.port),
            Change::Remove(id) => *id,
        }
    }
}

/// An immutable snapshot of every service.
#[derive(Clone, Default)]
pub struct Services {
    services: PMap<SvcId, Arc<ServiceRt>>,
    /// VIP → number of services on it (the control plane's count).
    vips: PMap<IpAddr, u32>,
    /// The same VIPs as a flat set: the per-packet "is it local" route
    /// decision (`service/vipset.rs`).
    vipset: vipset::VipSet,
    /// The workers' statistics, when services are counted.
    counted: Counted,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("services", &self.services.len())
            .field("vips", &self.vips.len())
            .finish()
    }
}

/// What [`Services::plan`] prepared for one service.
#[derive(Debug)]
enum Step {
    Upsert {
        spec: ServiceSpec,
        dests: Vec<Arc<Dest>>,
        sched: Arc<dyn Scheduler>,
        trash: Vec<Arc<Dest>>,
        stats: Arc<Stats>,
    },
    Remove(Arc<ServiceRt>),
}

/// A validated change of a snapshot; [`Plan::commit`] applies it.
#[derive(Debug)]
pub struct Plan {
    base: Services,
    steps: Vec<Step>,
}

impl Services {
    /// An empty snapshot whose services and servers are counted in `stats`
    /// (the snapshots made from it are too).
    pub fn counted(stats: Arc<crate::datapath::stats::Stats>) -> Services {
        Services {
            counted: Some(stats),
            ..Services::default()
        }
    }

    /// The service for (protocol, VIP, port), falling back to a port-0
    /// (every port) service on that VIP.
    #[inline]
    pub fn find(&self, proto: u8, addr: IpAddr, port: u16) -> Option<&Arc<ServiceRt>> {
        if let Some(s) = self.services.get(&(proto, addr, port)) {
            return Some(s);
        }
        if port == 0 {
            return None;
        }
        self.services.get(&(proto, addr, 0))
    }

    /// The fwmark service of `mark` for the family (`v6`).
    #[inline]
    pub fn find_fwmark(&self, v6: bool, mark: u32) -> Option<&Arc<ServiceRt>> {
        self.services.get(&fwmark_id(v6, mark))
    }

    /// Whether `addr` is a virtual address (packets to it go to LOCAL_IN).
    #[inline]
    pub fn is_vip(&self, addr: IpAddr) -> bool {
        self.vipset.contains(addr)
    }

    /// The service with exactly this key (no port-0 fallback).
    pub fn get(&self, id: &SvcId) -> Option<&Arc<ServiceRt>> {
        self.services.get(id)
    }

    /// All services, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ServiceRt>> {
        self.services.values()
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// No services.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Prepares `changes` against this snapshot, reusing schedulers,
    /// destinations and counters of the services that already exist. Costs
    /// O(servers of the changed services); fails, touching nothing shared,
    /// when a scheduler cannot be built. A service changed twice keeps its
    /// last change.
    pub fn plan(&self, changes: Vec<Change>) -> Result<Plan, ServiceError> {
        let mut last: HashMap<SvcId, usize> = HashMap::with_capacity(changes.len());
        for (i, c) in changes.iter().enumerate() {
            last.insert(c.id(), i);
        }
        let mut steps = Vec::with_capacity(last.len());
        for (i, change) in changes.into_iter().enumerate() {
            let id = change.id();
            if last.get(&id) != Some(&i) {
                continue;
            }
            let old = self.services.get(&id).cloned();
            match change {
                Change::Remove(_) => {
                    if let Some(o) = old {
                        steps.push(Step::Remove(o));
                    }
                }
                Change::Upsert(spec) => steps.push(plan_one(spec, old, &self.counted)?),
            }
        }
        Ok(Plan {
            base: self.clone(),
            steps,
        })
    }

    /// Builds the snapshot for exactly `specs` (every other service is
    /// deleted): a whole-configuration reconcile, O(services). The control
    /// plane uses [`Services::plan`] with the services a command touched.
    pub fn rebuild(&self, specs: &[ServiceSpec]) -> Result<Services, ServiceError> {
        let keep: HashSet<SvcId> = specs.iter().map(|s| (s.proto, s.addr, s.port)).collect();
        let mut changes: Vec<Change> = self
            .services
            .keys()
            .filter(|k| !keep.contains(*k))
            .map(|k| Change::Remove(*k))
            .collect();
        changes.extend(specs.iter().cloned().map(Change::Upsert));
        Ok(self.plan(changes)?.commit())
    }
}

/// Phase 1 for one service: everything that can fail, touching nothing
/// shared.
fn plan_one(
    spec: ServiceSpec,
    old: Option<Arc<ServiceRt>>,
    counted: &Counted,
) -> Result<Step, ServiceError> {
    // The service's counters: kept from the running service, else new (a
    // slot in the workers' statistics when counted).
    let stats = match (&old, counted) {
        (Some(o), _) => o.stats.clone(),
        (None, Some(c)) => c.service_slot(),
        (None, None) => Arc::new(Stats {
            id: crate::datapath::stats::NO_SLOT,
        }),
    };
    // The old service's servers, current and trashed, by (address, port).
    let known: HashMap<(IpAddr, u16), &Arc<Dest>> = old
        .iter()
        .flat_map(|o| o.dests.iter().chain(o.trash.iter()))
        .map(|d| ((d.addr, d.port), d))
        .collect();
    let dests: Vec<Arc<Dest>> = spec
        .dests
        .iter()
        .map(|d| match known.get(&(d.addr, d.port)) {
            Some(x) => Arc::clone(x),
            None => {
                let d = Arc::new(Dest::new(d.addr, d.port, d.weight, d.fwd));
                if let Some(c) = counted {
                    c.dest_slot(&stats, &d);
                }
                d
            }
        })
        .collect();
    let keep_sched = old
        .as_ref()
        .filter(|o| o.sched.name() == spec.sched && o.params == spec.params);
    let sched: Arc<dyn Scheduler> = match keep_sched {
        Some(o) => o.sched.clone(),
        None => Arc::from(Registry::create(&spec.sched, &spec.params, &dests)?),
    };
    let trash: Vec<Arc<Dest>> = match &old {
        Some(o) => {
            let current: HashSet<*const Dest> = dests.iter().map(Arc::as_ptr).collect();
            o.dests
                .iter()
                .chain(o.trash.iter())
                .filter(|x| !current.contains(&Arc::as_ptr(x)))
                .cloned()
                .collect()
        }
        None => Vec::new(),
    };
    drop(known);
    Ok(Step::Upsert {
        spec,
        dests,
        sched,
        trash,
        stats,
    })
}

impl Plan {
    /// Number of services this plan changes.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// The plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Phase 2: publishes the edits to shared objects (weights, availability,
    /// schedulers) and returns the new snapshot, sharing every untouched
    /// entry with the old one. Cannot fail.
    pub fn commit(self) -> Services {
        let Plan { base, steps } = self;
        let Services {
            mut services,
            mut vips,
            vipset,
            counted,
        } = base;
        let before = vips.clone();
        // The VIPs whose service count this commit changed.
        let mut touched: Vec<IpAddr> = Vec::new();
        for step in steps {
            match step {
                Step::Upsert {
                    spec,
                    dests,
                    sched,
                    trash,
                    stats,
                } => {
                    for (d, ds) in dests.iter().zip(&spec.dests) {
                        d.set_weight(ds.weight);
                        d.set_fwd_method(ds.fwd);
                        d.set_thresholds(ds.u_threshold, ds.l_threshold);
                        d.set_tun_config(ds.tun);
                        d.set_available(true);
                    }
                    for t in &trash {
                        t.set_available(false);
                    }
                    sched.update(&dests);
                    let index = (dests.len() > DEST_INDEX_MIN).then(|| {
                        dests
                            .iter()
                            .enumerate()
                            .map(|(i, d)| ((d.addr, d.port), i))
                            .collect()
                    });
                    let rt = Arc::new(ServiceRt {
                        proto: spec.proto,
                        addr: spec.addr,
                        port: spec.port,
                        sched,
                        params: spec.params,
                        persistence: spec.persistence,
                        one_packet: spec.one_packet,
                        pe: spec.pe,
                        dests,
                        trash,
                        stats,
                        index,
                    });
                    if services.insert(rt.id(), rt).is_none() && spec.proto != FWMARK {
                        *vips.entry(spec.addr).or_insert(0) += 1;
                        touched.push(spec.addr);
                    }
                }
                Step::Remove(o) => {
                    // Servers of deleted services are unavailable too.
                    o.dests.iter().for_each(|d| d.set_available(false));
                    services.remove(&o.id());
                    if o.proto == FWMARK {
                        continue;
                    }
                    touched.push(o.addr);
                    if let imbl::hashmap::Entry::Occupied(mut e) = vips.entry(o.addr) {
                        *e.get_mut() -= 1;
                        if *e.get() == 0 {
                            e.remove();
                        }
                    }
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for a in touched {
            match (before.contains_key(&a), vips.contains_key(&a)) {
                (false, true) => added.push(a),
                (true, false) => removed.push(a),
                _ => {}
            }
        }
        let vipset = vipset.update(&added, &removed, || vips.keys().copied(), vips.len());
        Services {
            services,
            vips,
            vipset,
            counted,
        }
    }
}

#[cfg(test)]
mod tests;
mod vipset;
