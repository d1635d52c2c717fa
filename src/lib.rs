//! uvs: the engine, control plane and lab.

pub mod control;
pub mod ctl;
pub mod daemon;
pub mod demo;
pub mod engine;
pub mod filter;
pub mod guard;
pub mod hooks;
pub mod io;
pub mod lab;
pub mod neigh;
pub mod netlink;
pub mod netns;
pub mod pipeline;
pub mod service;
pub mod stats;
pub mod tunnel;
