//! The runtime service table: what the workers read for every new
//! connection, published RCU-style.
//!
//! The control plane builds a new immutable [`Services`] snapshot from the
//! configuration and swaps it in (`arc_swap`); workers load the current one
//! without locks. Real servers are `Arc<Dest>`s that survive snapshots —
//! their connection counts live in them — and a removed real server stays in
//! its service's trash so that re-adding it brings its connections back
//! (the kernel's `dest_trash`). Each service keeps its scheduler object
//! across snapshots; the scheduler is told about destination changes with
//! `Scheduler::update`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

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

/// What the configuration says about one virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub proto: u8,
    pub addr: IpAddr,
    pub port: u16,
    pub sched: String,
    pub params: SchedParams,
    pub persistence: Option<Persistence>,
    pub dests: Vec<DestSpec>,
}

/// Per-service traffic counters (`--stats`).
#[derive(Debug, Default)]
pub struct Stats {
    pub conns: AtomicU64,
    pub inpkts: AtomicU64,
    pub outpkts: AtomicU64,
    pub inbytes: AtomicU64,
    pub outbytes: AtomicU64,
}

impl Stats {
    /// Counts one packet in direction `inbound` (client → server).
    pub fn packet(&self, inbound: bool, bytes: usize) {
        if inbound {
            self.inpkts.fetch_add(1, Relaxed);
            self.inbytes.fetch_add(bytes as u64, Relaxed);
        } else {
            self.outpkts.fetch_add(1, Relaxed);
            self.outbytes.fetch_add(bytes as u64, Relaxed);
        }
    }
}

/// One virtual service as the workers see it.
#[derive(Debug)]
pub struct ServiceRt {
    pub proto: u8,
    pub addr: IpAddr,
    pub port: u16,
    pub sched: Arc<dyn Scheduler>,
    pub params: SchedParams,
    pub persistence: Option<Persistence>,
    /// Current real servers, in configuration order.
    pub dests: Vec<Arc<Dest>>,
    /// Removed real servers, kept so a re-add resumes their connections.
    pub trash: Vec<Arc<Dest>>,
    pub stats: Arc<Stats>,
}

/// Errors building a snapshot; the running one stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Sched(#[from] SchedError),
}

/// An immutable snapshot of every service.
#[derive(Debug, Default)]
pub struct Services {
    services: Vec<Arc<ServiceRt>>,
    /// Sorted, deduplicated VIPs: the "is it local" route decision.
    vips: Vec<IpAddr>,
}

impl Services {
    /// The service for (protocol, VIP, port), falling back to a port-0
    /// (every port) service on that VIP.
    pub fn find(&self, proto: u8, addr: IpAddr, port: u16) -> Option<&Arc<ServiceRt>> {
        let mut wildcard = None;
        for s in &self.services {
            if s.proto == proto && s.addr == addr {
                if s.port == port {
                    return Some(s);
                }
                if s.port == 0 {
                    wildcard = Some(s);
                }
            }
        }
        wildcard
    }

    /// Whether `addr` is a virtual address (packets to it go to LOCAL_IN).
    pub fn is_vip(&self, addr: IpAddr) -> bool {
        self.vips.binary_search(&addr).is_ok()
    }

    /// All services.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ServiceRt>> {
        self.services.iter()
    }

    /// Builds the snapshot for `specs`, reusing schedulers, destinations and
    /// counters from `self` wherever the service or server already existed.
    /// Fails without side effects on the running snapshot's schedulers when
    /// a scheduler cannot be built; only then are existing objects updated.
    pub fn rebuild(&self, specs: &[ServiceSpec]) -> Result<Services, ServiceError> {
        // Phase 1: everything that can fail, touching nothing shared.
        let mut plans = Vec::with_capacity(specs.len());
        for spec in specs {
            let old = self
                .services
                .iter()
                .find(|s| s.proto == spec.proto && s.addr == spec.addr && s.port == spec.port);
            let mut dests = Vec::with_capacity(spec.dests.len());
            let mut reused: Vec<Arc<Dest>> = Vec::new();
            for d in &spec.dests {
                let existing = old.and_then(|o| {
                    o.dests
                        .iter()
                        .chain(o.trash.iter())
                        .find(|x| x.addr == d.addr && x.port == d.port)
                });
                let dest = match existing {
                    Some(x) => {
                        reused.push(x.clone());
                        x.clone()
                    }
                    None => Arc::new(Dest::new(d.addr, d.port, d.weight, d.fwd)),
                };
                dests.push(dest);
            }
            let keep_sched =
                old.filter(|o| o.sched.name() == spec.sched && o.params == spec.params);
            let sched: Arc<dyn Scheduler> = match keep_sched {
                Some(o) => o.sched.clone(),
                None => Arc::from(Registry::create(&spec.sched, &spec.params, &dests)?),
            };
            let mut trash: Vec<Arc<Dest>> = Vec::new();
            if let Some(o) = old {
                for x in o.dests.iter().chain(o.trash.iter()) {
                    if !dests.iter().any(|d| Arc::ptr_eq(d, x)) {
                        trash.push(x.clone());
                    }
                }
            }
            plans.push((spec, old, dests, sched, trash));
        }
        // Phase 2: publish edits to shared objects (cannot fail).
        let mut services = Vec::with_capacity(plans.len());
        for (spec, old, dests, sched, trash) in plans {
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
            services.push(Arc::new(ServiceRt {
                proto: spec.proto,
                addr: spec.addr,
                port: spec.port,
                sched,
                params: spec.params.clone(),
                persistence: spec.persistence,
                dests,
                trash,
                stats: old.map_or_else(Default::default, |o| o.stats.clone()),
            }));
        }
        // Servers of deleted services are unavailable too.
        for o in &self.services {
            if !services
                .iter()
                .any(|s| s.proto == o.proto && s.addr == o.addr && s.port == o.port)
            {
                o.dests.iter().for_each(|d| d.set_available(false));
            }
        }
        let mut vips: Vec<IpAddr> = services.iter().map(|s| s.addr).collect();
        vips.sort();
        vips.dedup();
        Ok(Services { services, vips })
    }
}
