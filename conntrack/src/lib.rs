//! uvs-conntrack: the IPVS connection table, with the kernel's semantics and
//! no I/O. Every operation takes `now`, milliseconds of the caller's
//! monotonic clock.
//!
//! # Using it (the engine's side)
//!
//! * Per packet: [`Table::lookup_update`] (one lock; [`Table::lookup_update_out`]
//!   for the reply side only, [`Table::lookup_update_into`] with [`Sides`] to
//!   choose the sides in the caller's slot), or [`Table::lookup`]
//!   (`lookup_in` / `lookup_out` when the hook already knows the direction)
//!   then [`Table::update`] with the returned [`Dir`]. Act on the
//!   [`Update`]: `Forward`, `Drop`, or `Reschedule` (the old entry is
//!   gone; schedule this same packet and insert a new entry, so the first
//!   packet of a reused tuple is not lost). Miss → if [`may_create`] allows,
//!   schedule and [`Table::insert`] ([`Table::add`] when no handle is
//!   needed: the `Arc<Dest>` moves into the entry; `Err(Exists)` means another worker won
//!   the race: look up again). DR/TUN connections are only ever found as
//!   `Dir::In`; only NAT connections are indexed by their reply.
//! * Persistent services: [`Table::lookup_template`] /
//!   [`Table::get_or_insert_template`], then [`Table::insert_controlled`]
//!   (or [`Table::add_controlled`]).
//! * ICMP errors: [`Table::lookup_related`] with the embedded header, then
//!   [`Table::update_related`].
//! * Periodically (e.g. every 10–100 ms from one thread):
//!   [`Table::expire`]`(now, budget)`; a full pass takes about
//!   `len / budget` calls.
//! * Once a second: [`Table::defense_tick`]`(now, host_pages)`, the
//!   kernel's flood defence (`drop_entry`, `drop_packet`, `secure_tcp`;
//!   `defense.rs`); before scheduling a new connection,
//!   [`Table::drop_new_packet`].
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
//! The table is split into `Config::shards` shards, each one lock over a
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
//! # Active and inactive counts
//!
//! As in the kernel, a connection is bound to its destination as
//! *inactive* and counts as active only while ESTABLISHED (TCP and SCTP);
//! UDP is always inactive. `Dest::conn_bound(false)` on insert,
//! `Dest::conn_state_moved` exactly when a transition crosses ESTABLISHED,
//! `Dest::conn_unbound` on removal (expiry, eviction, reschedule,
//! `remove`), `Dest::template_bound` for templates. (So SYN_RECV counts as
//! inactive: a half-open flood weighs 1/256 of established load in
//! `lc`/`wlc`'s overhead.)
//!
//! # Locking and allocation
//!
//! One spin lock per shard (see `lock.rs`: one compare-and-swap to take,
//! a plain store to release); no operation holds two. `lookup`, `update`,
//! `lookup_update` and `expire` allocate nothing. `lookup_update` returns a
//! [`Hit`], a plain copy of the entry (and of its destination's tunnel
//! settings), so the per-packet path writes nothing outside the shard. A
//! [`Handle`] (from `lookup`, `insert`, templates) is a copy of the entry's
//! identity plus one `Arc<Dest>` clone (an atomic increment on the
//! destination, the price of handing the engine a `Dest` it can keep while
//! the entry may expire concurrently). `insert` allocates only when a
//! shard's slab needs a new 256-entry chunk or its index grows (never with
//! `Config::presize`), and even then rarely: each IPv4 part starts with
//! its first chunk and index room for 1/32 of its share of the cap, and
//! the sweep ([`Table::expire`]) allocates the next chunk and grows an
//! index ahead (`Part::prepare`), so an insert allocates only in a shard
//! that fills faster than the sweep visits it. Listing allocates the
//! caller's rows.
//!
//! # Expiry
//!
//! No timer per entry: a packet only rewrites `expires` (one store). The
//! incremental sweep in [`Table::expire`] walks each shard's slab a bounded
//! step at a time under that shard's lock and removes what has expired;
//! lookups that meet an expired entry before the sweep does treat it as gone.
//! Cost: O(1) per entry per pass, bounded pause per lock hold. Details in
//! `expire.rs`.

//!
//! Call [`Table::expire`] regularly with a budget sized to the table, e.g.
//! every 100 ms with `budget = max(4096, len / 20)` for a pass every ~2 s.
//! Entries then outlive their timeout by at most one pass as far as the
//! destination counts see; packets never see an expired entry.
//!
//! # Performance (measured here, 2-core VM; criterion benches in `benches/`)
//!
//! * 1K entries: lookup hit ≈ 28 ns, lookup + update ≈ 55 ns, insert with
//!   one update ≈ 240 ns.
//! * 1M entries, random access: lookup hit ≈ 210 ns, lookup + update ≈
//!   400 ns. The table is then ~60 MB, larger than the last-level cache:
//!   each lookup is two dependent DRAM misses (index slot, entry). Batched
//!   lookups with prefetch would hide them; the kernel's table has the same
//!   two misses (bucket, `ip_vs_conn`).
//! * Memory: 61.5 bytes per IPv4 NAT connection at 1M (48-byte entry, two
//!   index slots); 10M spoofed SYNs against a 1M cap run at ≈ 0.6 µs each
//!   with eviction.

pub mod config;
mod defense;
mod entry;
mod expire;
mod handle;
mod hash;
mod index;
mod insert;
mod list;
mod lock;
pub mod proto;
mod shard;
mod sync;
mod table;
mod template;
mod ticket;
mod update;

pub use config::{Config, Defense, Knobs, Timeouts, UnknownState};
pub use defense::{DefenseStatus, AMEMTHRESH_DEFAULT, AM_DROPRATE_DEFAULT};
pub use entry::MAX_TIMEOUT_MS;
pub use expire::{EVICT_SCAN, SWEEP_STEP};
pub use handle::{Handle, Hit};
pub use list::{ConnInfo, ListCursor, LIST_STEP};
pub use proto::sctp::SctpState;
pub use proto::tcp::TcpState;
pub use proto::{ipproto, may_create, ConnState};
pub use sync::{Synced, SyncedTemplate, SYNC_PERIOD, SYNC_THRESHOLD};
pub use table::{Dir, InsertError, NewConn, PacketInfo, Sides, Stats, Table, Tuple, Update};
pub use template::{mask_addr, pe_digest, TemplateKey};
pub use ticket::{Ticket, REFRESH_MAX_MS};
pub use uvs_sched::{Dest, FwdMethod};
