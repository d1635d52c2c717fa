//! The control plane: ipvsadm's language and configuration model ([`ctl`],
//! pure), the control socket ([`socket`]), the daemon that commits
//! changes to the data path ([`daemon`]), and uvsadm's bounded name
//! look-ups ([`resolver`]).

pub mod connlist;
pub mod ctl;
pub mod daemon;
pub mod dest_check;
pub mod ipset;
pub mod knobs;
pub mod lifecycle;
pub mod metrics;
pub mod registry;
pub mod reload;
pub mod resolver;
pub mod socket;
pub mod trace;
