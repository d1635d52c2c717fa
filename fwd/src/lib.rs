//! uvs-fwd: wire formats, checksums and forwarding methods. No I/O.
//!
//! Per-packet entry points for the engine: [`parse::parse`] → [`Parsed`],
//! then [`xmit::nat::dnat`] / [`xmit::nat::snat`] and [`xmit::set_macs`];
//! [`checksum::fill_l4_checksum`] completes offloaded checksums. None of them
//! allocates or panics, whatever the input.

pub mod build;
pub mod checksum;
pub mod parse;
pub mod wire;
pub mod xmit;

pub use checksum::{fill_l4_checksum, CsumMode};
pub use parse::{embedded, parse, Embedded, IpVersion, ParseError, Parsed};
pub use xmit::nat::{dnat, snat};
pub use xmit::{set_macs, XmitError};
