//! System integration: what uvs asks of the host kernel besides packets —
//! routes and neighbours over netlink, the neighbour cache and resolver, the
//! nftables guard that keeps the kernel off uvs's traffic, network
//! namespaces, and the prerequisite checks run before anything changes.

pub mod guard;
pub mod local_out;
pub mod neigh;
pub mod netlink;
pub mod netns;
pub mod nftnl;
pub mod prereq;
