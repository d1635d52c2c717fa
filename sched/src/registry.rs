//! The by-name registry (`ip_vs_scheduler_get` / `register_ip_vs_scheduler`).
//!
//! Registration is an explicit list, [`SCHEDULERS`], of (name, constructor)
//! pairs: one line per scheduler file, no central `match`, and the set is
//! visible in one place without linker tricks.

use std::sync::Arc;

use crate::{Dest, Scheduler};

/// Flags and options a service passes to its scheduler (`-b`, mh table size).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedParams {
    /// `-b` flags as given (`sh-fallback`, `sh-port`, `mh-fallback`, `mh-port`, `flag-1..3`).
    pub flags: Vec<String>,
    /// Maglev table size (a kernel prime); `None` = default 4093.
    pub mh_table_size: Option<u32>,
}

/// Errors from looking up or building a scheduler.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchedError {
    /// No scheduler registered under this name.
    #[error("unknown scheduler '{name}' (known: {known})")]
    Unknown { name: String, known: String },
    /// A flag or option the scheduler does not accept.
    #[error("scheduler '{sched}': {msg}")]
    BadParam { sched: &'static str, msg: String },
}

/// Builds a scheduler for one service.
pub type Constructor = fn(&SchedParams, &[Arc<Dest>]) -> Result<Box<dyn Scheduler>, SchedError>;

/// Every scheduler uvs has, by name. Add a line here with a new file.
pub const SCHEDULERS: &[(&str, Constructor)] = &[
    ("rr", crate::rr::Rr::create),
    ("wrr", crate::wrr::Wrr::create),
    ("lc", crate::lc::Lc::create),
    ("wlc", crate::wlc::Wlc::create),
    ("sed", crate::sed::Sed::create),
    ("nq", crate::nq::Nq::create),
    ("fo", crate::fo::Fo::create),
    ("ovf", crate::ovf::Ovf::create),
    ("dh", crate::dh::Dh::create),
    ("sh", crate::sh::Sh::create),
    ("mh", crate::mh::Mh::create),
    ("lblc", crate::lblc::Lblc::create),
    ("lblcr", crate::lblcr::Lblcr::create),
    ("twos", crate::twos::Twos::create),
];

/// The registry: lookup by name, listing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Registry;

impl Registry {
    /// Names of all registered schedulers, in registration order.
    pub fn names() -> impl Iterator<Item = &'static str> {
        SCHEDULERS.iter().map(|(n, _)| *n)
    }

    /// Whether `name` is registered.
    pub fn contains(name: &str) -> bool {
        SCHEDULERS.iter().any(|(n, _)| *n == name)
    }

    /// Builds the scheduler `name` for a service with `dests`.
    pub fn create(
        name: &str,
        params: &SchedParams,
        dests: &[Arc<Dest>],
    ) -> Result<Box<dyn Scheduler>, SchedError> {
        let ctor = SCHEDULERS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
            .ok_or_else(|| SchedError::Unknown {
                name: name.to_string(),
                known: Self::names().collect::<Vec<_>>().join(" "),
            })?;
        ctor(params, dests)
    }
}
