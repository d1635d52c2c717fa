//! uvs-conntrack: the IPVS connection table, with the kernel's semantics and
//! no I/O. Every operation takes `now`, milliseconds of the caller's
//! monotonic clock.
//!
//! # Using it (the engine's side)
//!
//! * Per packet: [`Table::lookup`] (or `lookup_in` / `lookup_out` when the
//!   hook already knows the direction). Hit → [`Table::update`] with the
//!   returned [`Dir`] and act on the [`Update`]: `Forward`, `Drop`, or
//!   `Reschedule` (the old entry is gone; schedule this same packet and
//!   insert a new entry, so the first packet of a reused tuple is not lost).
//!   Miss → if [`may_create`] allows, schedule and [`Table::insert`]
//!   (`Err(Exists)` means another worker won the race: look up again).
//! * Persistent services: [`Table::lookup_template`] /
//!   [`Table::get_or_insert_template`], then [`Table::insert_controlled`].
//! * ICMP errors: [`Table::lookup_related`] with the embedded header, then
//!   [`Table::update_related`].
//! * Periodically (e.g. every 10–100 ms from one thread):
//!   [`Table::expire`]`(now, budget)`; a full pass takes about
//!   `len / budget` calls.
//! * Control plane: [`Table::set_timeouts`] (`--set`), [`Table::set_knobs`],
//!   [`Table::list_page`] / [`Table::for_each_entry`] (`-L -c`),
//!   [`Table::stats`].
//!
//! # Key and hash
//!
//! Connections are indexed by the request tuple (proto, caddr, cport,
//! vaddr, vport) and NAT connections also by the reply tuple (proto, daddr,
//! dport, caddr, cport) — the tuples exactly as the packets carry them. The
//! hash is seeded ([`Config::seed`]; see `hash.rs`): a folded 128-bit
//! multiply keyed with 256 bits derived from the seed, so tuples colliding in
//! one director do not collide in another.
//!
//! # Shards, and where a reply lands
//!
//! The table is split into `Config::shards` shards, each one mutex over a
//! slab and two open-addressing indexes. The shard is chosen by a hash of
//! the *client endpoint* (proto, caddr, cport) alone: a request carries it as
//! its source, a NAT reply as its destination. So a reply always lands in the
//! same shard as its request, an insert or removal updates both indexes under
//! one lock, and no operation ever holds two shard locks. Workers on
//! different cores contend only when they touch the same shard at the same
//! moment.
//!
//! # Entry layout and size
//!
//! An IPv4 entry is 48 bytes (`entry.rs` documents each field): the
//! `Arc<Dest>` (8), three addresses (12), three ports (6), protocol, state,
//! flags (3), expiry (4), packet and byte counters (8), and one word that is
//! the controlling template's reference for a connection, the controlled
//! count for a template, or the free-list link for a free slot. Each index
//! slot is 4 bytes (8-bit hash tag + 24-bit slot number) at ≤ 81 % load; a
//! DR/TUN connection has one slot, a NAT connection two. IPv6 entries are
//! 88 bytes. Slabs grow in 256-entry chunks and never move entries.
//!
//! # Expiry
//!
//! No timer per entry: a packet only rewrites `expires` (one store). The
//! incremental sweep in [`Table::expire`] walks each shard's slab a bounded
//! step at a time under that shard's lock and removes what has expired;
//! lookups that meet an expired entry before the sweep does treat it as gone.
//! Cost: O(1) per entry per pass, bounded pause per lock hold. Details in
//! `expire.rs`.

pub mod config;
mod entry;
mod expire;
mod hash;
mod index;
mod list;
pub mod proto;
mod shard;
mod table;
mod template;

pub use config::{Config, Defense, Knobs, Timeouts, UnknownState};
pub use entry::MAX_TIMEOUT_MS;
pub use expire::{EVICT_SCAN, SWEEP_STEP};
pub use list::{ConnInfo, ListCursor, LIST_STEP};
pub use proto::sctp::SctpState;
pub use proto::tcp::TcpState;
pub use proto::{ipproto, may_create, ConnState};
pub use table::{Dir, Handle, InsertError, NewConn, PacketInfo, Stats, Table, Tuple, Update};
pub use template::{mask_addr, TemplateKey};
pub use uvs_sched::{Dest, FwdMethod};
