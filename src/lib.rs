//! uvs: the engine, control plane and lab.
//!
//! The rooms of this crate follow the data path's shape:
//!
//! * [`datapath`] — the pure per-packet stages: hook chain, emulated tables,
//!   service table, pipeline, counters (no I/O);
//! * [`io`] — packet sockets: RX rings and batched TX;
//! * [`engine`] — worker threads: rings, poll, wakers, the timer;
//! * [`sys`] — system integration: netlink, neighbours, the kernel guard,
//!   network namespaces;
//! * [`control`] — the control plane: uvsadm's language (`ctl`), the
//!   control socket and the daemon;
//! * [`tunnel`] — the real servers' tunnel endpoint;
//! * [`lab`] — the namespace lab and `uvs demo`.

pub mod bgp;
pub mod control;
pub mod datapath;
pub mod engine;
pub mod fault;
pub mod fuzz;
pub mod health;
pub mod io;
pub mod lab;
pub mod sync;
pub mod sys;
pub mod tunnel;
