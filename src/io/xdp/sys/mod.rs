//! The only unsafe code of the AF_XDP backend: `bpf(2)` commands
//! ([`bpf`]), the AF_XDP socket with its UMEM and four mmapped rings
//! ([`xsk`]), and a route-event netlink socket ([`rtnl`]). Every function here is safe to call with any arguments: sizes
//! handed to the kernel come from the types that own the memory, and ring
//! indices and UMEM addresses are checked before memory is touched.

pub mod bpf;
pub mod gather;
mod ring;
pub mod rtnl;
pub mod xsk;
pub mod xsk_seam;
