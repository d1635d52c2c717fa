//! uvs: the engine, control plane and lab.

pub mod control;
pub mod filter;
pub mod guard;
pub mod hooks;
pub mod io;
pub mod lab;
pub mod netns;
