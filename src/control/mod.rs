//! The control plane: ipvsadm's language and configuration model ([`ctl`],
//! pure), the control socket ([`socket`]) and the daemon that commits
//! changes to the data path ([`daemon`]).

pub mod ctl;
pub mod daemon;
pub mod metrics;
pub mod registry;
pub mod socket;
