//! The AF_XDP backend: an XDP program that steers the packets uvs owns into
//! AF_XDP sockets and leaves the rest to the kernel, the maps the control
//! plane edits entry by entry, and the sockets themselves.
//!
//! * [`prog`] — the steering program (generated with the small assembler in
//!   [`asm`], so no BPF toolchain is needed to build uvs) and its map keys;
//! * [`steer`] — [`Steering`]: `add_service`, `remove_service`,
//!   `add_nat_server`, `remove_nat_server`, counters, and [`Attachment`]s
//!   to interfaces (native XDP, generic only as a named fallback; detached
//!   on drop and whenever the process ends);
//! * [`XskSocket`] — UMEM registered once, frames on a free stack (no
//!   per-packet allocation), batched RX/TX/fill/completion rings,
//!   `need_wakeup`, and `XDP_STATISTICS`.
//!
//! All unsafe code is in [`sys`]. Everything here needs root (or CAP_BPF and
//! CAP_NET_ADMIN) at run time; errors say so.

pub mod asm;
pub mod auto;
pub mod backend;
pub mod csum;
pub mod local;
pub mod multibuf;
pub mod port;
pub mod prog;
pub mod steer;
pub mod sys;

pub use backend::{AttachPolicy, XdpIo};
pub use port::XskTxSet;
pub use prog::{
    COUNTER_NO_SOCKET, COUNTER_PASSED, COUNTER_PASS_LOCAL, COUNTER_STEERED, XDP_DROP, XDP_PASS,
    XDP_REDIRECT,
};
pub use steer::{
    AttachMode, Attachment, Program, SteerCounters, Steering, XdpError, DEFAULT_MAX_ENTRIES,
};
pub use sys::xsk::{RxAction, XskConfig, XskRx, XskSocket, XskStats, XskStatsHandle, XskTx};
pub use sys::xsk_seam::{XskRxBatch, XskTxQueue};
