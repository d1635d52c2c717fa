//! uvs-fwd: wire formats, checksums and forwarding methods. No I/O.
//!
//! Per-packet entry points for the engine: [`parse::parse`] → [`Parsed`],
//! then the forwarding method — [`xmit::nat::dnat`] / [`xmit::nat::snat`]
//! (NAT), [`xmit::dr::dr`] (direct routing), [`xmit::tun::encap`] (ipip, GRE,
//! GUE) — with [`xmit::fits`] / [`xmit::tun::check_mtu`] before it, and
//! [`xmit::set_macs`] toward the next hop. [`checksum::fill_l4_checksum`]
//! completes offloaded checksums. The real-server tunnel endpoint uses
//! [`xmit::tun::decap_frame`]; a TSO/GSO super-packet that must be
//! encapsulated is cut first with [`gso::segment_tcp`], an IPv4 packet
//! without DF that outgrows the MTU with [`frag::fragment_ipv4`]; ICMP errors are
//! built and translated by [`xmit::icmp`]. None of them allocates or panics,
//! whatever the input.

pub mod build;
pub mod checksum;
pub mod frag;
pub mod gso;
pub mod parse;
pub mod wire;
pub mod xmit;

pub use checksum::{fill_l4_checksum, CsumMode};
pub use parse::{embedded, parse, Embedded, IpVersion, ParseError, Parsed};
pub use xmit::dr::dr;
pub use xmit::nat::{dnat, snat};
pub use xmit::{fits, set_macs, NeedsFrag, Side, XmitError};
