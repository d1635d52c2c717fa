//! The data path's pure stages: what happens to a packet between RX and TX,
//! with no I/O — the hook chain and its emulated tables, the service table,
//! the pipeline that runs IPVS's functions, and the per-worker counters.

pub mod egress;
pub mod estimator;
pub mod filter;
pub mod frag6;
pub mod hooks;
pub mod pe_sip;
pub mod pipeline;
pub mod prefix;
pub mod service;
pub mod snapshot;
pub mod stats;
pub mod tables;
pub mod trace;
