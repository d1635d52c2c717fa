//! uvs-sched: IPVS's schedulers and the by-name registry that finds them.
//!
//! The crate never sees a packet and does no I/O. The engine keeps one
//! [`Scheduler`] object per service; the control path calls
//! [`Scheduler::update`] with the service's destination list whenever a
//! destination is added, edited or removed (this may allocate and rebuild
//! tables), and worker threads call [`Scheduler::schedule`] concurrently for
//! each new connection (this never allocates; lblc/lblcr inserting a new
//! destination address is the one bounded exception, see [`locality`]).
//!
//! Every scheduler publishes an immutable per-service state with `ArcSwap`
//! and reads weight, counts and flags live from the [`Dest`] atomics; none
//! takes a lock shared by all workers. The kernel's fourteen, one file each:
//!
//! | name | file | cost per pick |
//! |---|---|---|
//! | rr | [`rr`] | O(1) (CAS cursor; skips unschedulable servers) |
//! | wrr | [`wrr`] | O(1) (precomputed gcd-stepped period, CAS cursor) |
//! | lc, wlc, sed, nq | [`lc`], [`wlc`], [`sed`], [`nq`] | O(n), as the kernel |
//! | dh, sh, mh | [`dh`], [`sh`], [`mh`] | O(1) table lookup |
//! | lblc, lblcr | [`lblc`], [`lblcr`] | hit: one shard read lock; miss: O(n) wlc |
//! | fo, ovf | [`fo`], [`ovf`] | O(1) while the heaviest server is usable |
//! | twos | [`twos`] | O(log n) draw |
//!
//! What the caller must do: call `update()` after every add, edit (weights
//! included: wrr, sh, mh, fo, ovf and twos build from the weights they saw
//! there) and removal; pass the list in the order the scheduler should walk
//! it; put a real clock in [`SchedKey::now_ms`] for lblc/lblcr expiry.

mod common;
pub mod dest;
pub mod explain;
pub mod flags;
pub mod locality;
pub mod registry;
#[cfg(test)]
mod testutil;

pub mod dh;
pub mod fo;
pub mod lblc;
pub mod lblcr;
pub mod lc;
pub mod mh;
pub mod nq;
pub mod ovf;
pub mod rr;
pub mod sed;
pub mod sh;
pub mod twos;
pub mod wlc;
pub mod wrr;

use std::net::IpAddr;
use std::sync::Arc;

pub use dest::{Dest, FwdMethod, TunConfig, TunCsum, TunType};
pub use explain::Explain;
pub use flags::SchedFlags;
pub use registry::{Registry, SchedError, SchedParams};

/// The connection fields a scheduler may look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedKey {
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub proto: u8,
    /// Client address and port.
    pub src: IpAddr,
    pub sport: u16,
    /// Virtual (destination) address and port as the client sent it.
    pub dst: IpAddr,
    pub dport: u16,
    /// Caller's clock in milliseconds (for schedulers with expiring state).
    pub now_ms: u64,
}

/// One scheduling algorithm bound to one service (`ip_vs_scheduler`).
pub trait Scheduler: Send + Sync + std::fmt::Debug {
    /// The registry name (`rr`, `wlc`, …).
    fn name(&self) -> &'static str;
    /// Rebuilds per-service state for a new destination list. Control path:
    /// may allocate. After it returns, `schedule` never picks a destination
    /// missing from `dests`.
    fn update(&self, dests: &[Arc<Dest>]);
    /// Picks the destination for a new connection, or `None` when no
    /// destination is available. Never allocates; callable from many threads.
    fn schedule(&self, key: &SchedKey) -> Option<Arc<Dest>>;
    /// [`Scheduler::schedule`], given the destination list the caller holds
    /// for this service: the list last passed to `update`, or one passed
    /// before it (a worker still on an older configuration snapshot).
    /// Removed destinations are marked unavailable before `update` runs, so
    /// an older list never yields one. A scheduler whose state is only a
    /// copy of the list (rr) picks from `dests` and skips loading its own
    /// copy; the others ignore it.
    #[inline]
    fn schedule_in(&self, dests: &[Arc<Dest>], key: &SchedKey) -> Option<Arc<Dest>> {
        let _ = dests;
        self.schedule(key)
    }

    /// [`Scheduler::schedule`], the same pick with the same effects, also
    /// saying why in `why` (see [`explain`]). Only traced packets call it,
    /// so the untraced path pays nothing for explaining; it never
    /// allocates either. The default reports the bare pick.
    fn schedule_explained(&self, key: &SchedKey, why: &mut Explain) -> Option<Arc<Dest>> {
        let d = self.schedule(key);
        if d.is_none() {
            why.how = explain::How::NoDestination;
        }
        d
    }
    /// Drops per-client state unused since before `now_ms` minus the
    /// scheduler's expiration (lblc, lblcr; a no-op for the others). Picks
    /// expire lazily too; an engine timer calling this (say once a minute)
    /// also frees the memory of services that get no new connections.
    /// Control path: may take locks and walk the whole table.
    fn expire(&self, _now_ms: u64) {}
}
