//! Flood defence as the kernel's IPVS has it (`ip_vs_ctl.c`'s defence
//! timer, `ip_vs_random_dropentry`, `ip_vs_todrop`), driven by the caller:
//! no I/O, no timer of its own.
//!
//! # The contract
//!
//! * Call [`Table::defense_tick`] once a second from one control thread,
//!   with `now` and the host's available memory in pages (the caller reads
//!   it, e.g. `MemAvailable` from `/proc/meminfo`; `None` when unknown).
//! * The tick decides whether memory is short: the table has fewer free
//!   entries than `100 - Config::defense_threshold_pct` percent of its cap,
//!   or the host has fewer than `amemthresh` pages available (the kernel's
//!   only test). From that it sets which automatic defences are engaged
//!   (`drop_entry`, `drop_packet`, `secure_tcp` set to 1 or 2; 3 is always
//!   engaged, 0 never) and the `drop_packet` rate.
//! * While `drop_entry` is engaged the tick walks the whole table in
//!   bounded steps (one shard part, at most [`SWEEP_STEP`](crate::SWEEP_STEP)
//!   slots per lock hold) and drops, as the kernel's random drop does:
//!   every TCP SYN_RECV/SYNACK and SCTP INIT1/INIT entry older than a
//!   second (the kernel's takes them at any age, also a real client's
//!   handshake in flight); and ESTABLISHED
//!   (TCP, SCTP) or datagram entries that have been idle for at least
//!   `Config::todrop_idle_ms` (the kernel's 60 s) and saw 1 to 8 packets:
//!   those of 1 or 2 packets (a handshake that never carried data) at once,
//!   and one in every *n* of those with *n* = 3..8 packets (fewer packets,
//!   dropped sooner). The kernel samples a random 1/32 of its hash table
//!   per second and drops 1 in 2 of its 2-packet entries; uvs visits every
//!   entry, and drops every 2-packet one, so a flood's entries are gone
//!   within a second of reaching the idle threshold. Templates are never
//!   dropped here.
//! * Per packet, [`Table::drop_new_packet`] is one relaxed load while
//!   `drop_packet` is not engaged; engaged, a per-thread countdown (no
//!   shared write) drops one in every *rate* connection-opening packets.
//!
//! Costs: the tick is O(1) when nothing is engaged and O(table) per second
//! while `drop_entry` is (a few milliseconds per million entries, in short
//! lock holds); the per-packet cost is one load.

use std::cell::Cell;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::config::Defense;
use crate::entry::{flag, Addr, Entry};
use crate::expire::{FRESH_MS, SWEEP_STEP};
use crate::proto::ipproto;
use crate::proto::sctp::SctpState;
use crate::proto::tcp::TcpState;
use crate::shard::Family;
use crate::table::{Releases, Table};

/// Engaged bits.
const SECURE: u32 = 1;
const DROP_ENTRY: u32 = 2;
const DROP_PACKET: u32 = 4;

/// The kernel's default `amemthresh` (pages).
pub const AMEMTHRESH_DEFAULT: u32 = 1024;
/// The kernel's default `am_droprate`.
pub const AM_DROPRATE_DEFAULT: u32 = 10;

/// Entries with at most this many packets are the low-packet ones
/// `drop_entry` may take (the kernel's `todrop_rate` table's size).
pub(crate) const LOW_PACKETS: u32 = 8;

/// The defence's shared state (in the table).
#[derive(Debug)]
pub(crate) struct State {
    engaged: AtomicU32,
    drop_rate: AtomicU32,
    amemthresh: AtomicU32,
    am_droprate: AtomicU32,
    idle_ms: u32,
    dropped: AtomicU64,
    ticks: AtomicU64,
    /// The kernel's per-packet-count countdown (index = packets, 0..=8);
    /// only the tick touches it.
    countdown: Mutex<[u8; 9]>,
}

impl State {
    pub(crate) fn new(idle_ms: u32) -> Self {
        State {
            engaged: AtomicU32::new(0),
            drop_rate: AtomicU32::new(0),
            amemthresh: AtomicU32::new(AMEMTHRESH_DEFAULT),
            am_droprate: AtomicU32::new(AM_DROPRATE_DEFAULT),
            idle_ms,
            dropped: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            countdown: Mutex::new([0; 9]),
        }
    }

    #[inline(always)]
    pub(crate) fn secure_engaged(&self) -> bool {
        self.engaged.load(Relaxed) & SECURE != 0
    }
}

/// What the last [`Table::defense_tick`] decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefenseStatus {
    /// Memory (table room or host pages) is short.
    pub short_of_memory: bool,
    /// `secure_tcp` is engaged.
    pub secure_tcp: bool,
    /// `drop_entry` is engaged.
    pub drop_entry: bool,
    /// `drop_packet` is engaged, dropping one in `drop_rate` new packets.
    pub drop_packet: bool,
    /// 0 when no packet is dropped.
    pub drop_rate: u32,
    /// Entries `drop_entry` removed in this tick.
    pub dropped_now: u64,
    /// Entries `drop_entry` removed since the table was made.
    pub dropped_total: u64,
}

thread_local! {
    /// `drop_packet`'s countdown, one per worker thread.
    static COUNTDOWN: Cell<u32> = const { Cell::new(0) };
}

/// The kernel's rate: `thresh / (thresh - avail)`, at least 1.
fn rate(thresh: u64, avail: u64) -> Option<u32> {
    (avail < thresh).then(|| (thresh / (thresh - avail)).clamp(1, u32::MAX as u64) as u32)
}

impl Table {
    /// `amemthresh` in pages (kernel default 1024).
    pub fn amemthresh(&self) -> u32 {
        self.defense.amemthresh.load(Relaxed)
    }

    /// Sets `amemthresh` (pages); takes effect at the next tick.
    pub fn set_amemthresh(&self, pages: u32) {
        self.defense.amemthresh.store(pages, Relaxed);
    }

    /// `am_droprate`: `drop_packet` mode 3 drops one in this many (kernel
    /// default 10; 0 drops nothing).
    pub fn am_droprate(&self) -> u32 {
        self.defense.am_droprate.load(Relaxed)
    }

    /// Sets `am_droprate`; takes effect at the next tick.
    pub fn set_am_droprate(&self, rate: u32) {
        self.defense.am_droprate.store(rate, Relaxed);
    }

    /// The last tick's decisions (and the drop total).
    pub fn defense_status(&self) -> DefenseStatus {
        let e = self.defense.engaged.load(Relaxed);
        DefenseStatus {
            short_of_memory: false,
            secure_tcp: e & SECURE != 0,
            drop_entry: e & DROP_ENTRY != 0,
            drop_packet: e & DROP_PACKET != 0,
            drop_rate: self.defense.drop_rate.load(Relaxed),
            dropped_now: 0,
            dropped_total: self.defense.dropped.load(Relaxed),
        }
    }

    /// Should this connection-opening packet be dropped (`drop_packet`)?
    /// Call before scheduling it; one relaxed load unless engaged.
    #[inline]
    pub fn drop_new_packet(&self) -> bool {
        let rate = self.defense.drop_rate.load(Relaxed);
        if rate == 0 {
            return false;
        }
        COUNTDOWN.with(|c| {
            let v = c.get();
            if v > 1 && v <= rate {
                c.set(v - 1);
                false
            } else {
                c.set(rate);
                true
            }
        })
    }

    /// The once-a-second defence step (see the module docs): decides what
    /// is engaged from the table's room and `avail_pages` (the host's
    /// available memory in pages, if known), and runs `drop_entry`'s pass.
    pub fn defense_tick(&self, now: u64, avail_pages: Option<u64>) -> DefenseStatus {
        let k = self.knobs();
        let free = self.max.saturating_sub(self.len()) as u64;
        let reserve = self.max.saturating_sub(self.defense_at) as u64;
        let thresh = self.amemthresh() as u64;
        let by_table = rate(reserve, free);
        let by_host = avail_pages.and_then(|a| rate(thresh, a));
        let short = by_table.is_some() || by_host.is_some();
        // The tighter of the two: the smaller rate drops more.
        let auto_rate = by_table.into_iter().chain(by_host).min().unwrap_or(0);
        let drop_rate = match k.drop_packet {
            Defense::Off => 0,
            Defense::Auto => auto_rate,
            Defense::Always => self.am_droprate(),
        };
        let mut bits = 0;
        if k.secure_tcp.active(short) {
            bits |= SECURE;
        }
        if k.drop_entry.active(short) {
            bits |= DROP_ENTRY;
        }
        if drop_rate != 0 {
            bits |= DROP_PACKET;
        }
        self.defense.engaged.store(bits, Relaxed);
        self.defense.drop_rate.store(drop_rate, Relaxed);
        self.defense.ticks.fetch_add(1, Relaxed);
        let dropped_now = if bits & DROP_ENTRY != 0 {
            self.drop_entries(now) as u64
        } else {
            0
        };
        let total = self.defense.dropped.fetch_add(dropped_now, Relaxed) + dropped_now;
        DefenseStatus {
            short_of_memory: short,
            secure_tcp: bits & SECURE != 0,
            drop_entry: bits & DROP_ENTRY != 0,
            drop_packet: bits & DROP_PACKET != 0,
            drop_rate,
            dropped_now,
            dropped_total: total,
        }
    }

    /// One `drop_entry` pass over every shard; returns the entries removed.
    fn drop_entries(&self, now: u64) -> usize {
        let mut countdown = match self.defense.countdown.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut removed = 0;
        for s in 0..self.shards.len() as u32 {
            removed += self.drop_part::<Ipv4Addr>(s, now, &mut countdown);
            removed += self.drop_part::<Ipv6Addr>(s, now, &mut countdown);
        }
        removed
    }

    fn drop_part<A: Family>(&self, shard: u32, now: u64, countdown: &mut [u8; 9]) -> usize {
        let mut removed = 0;
        let mut idx = 0u32;
        loop {
            let mut rel: Releases = Releases::new(A::WIDE);
            let done = {
                let mut g = self.lock(shard);
                let (part, stats) = A::split(&mut g);
                let end = part.slots().min(idx.saturating_add(SWEEP_STEP as u32));
                while idx < end && !rel.full() {
                    let i = idx;
                    idx += 1;
                    let Some(e) = part.live(i) else { continue };
                    // Expired ones are the sweep's (counted as expired).
                    if e.remaining(now) <= 0 || !self.todrop(e, now, countdown) {
                        continue;
                    }
                    let old = part.remove(&self.hasher, i);
                    stats.dropped_entry += 1;
                    self.retire(old, stats, &mut rel);
                    removed += 1;
                }
                idx >= part.slots()
            };
            self.apply_releases(&rel);
            if done {
                return removed;
            }
        }
    }

    /// The kernel's choice of what `drop_entry` removes.
    fn todrop<A: Addr>(&self, e: &Entry<A>, now: u64, countdown: &mut [u8; 9]) -> bool {
        if e.flags & flag::TEMPLATE != 0 {
            return false;
        }
        // Idle since its last packet: the state's timeout minus what is left.
        let left = e.remaining(now).max(0) as u32;
        let idle = self.timeout_ms(e.proto, e.state).saturating_sub(left);
        // A handshake goes once it is a second old: a real client's lasts a
        // round trip (the kernel takes it at any age).
        let low_packet = match e.proto {
            ipproto::TCP => match TcpState::from_u8(e.state) {
                TcpState::SynRecv | TcpState::SynAck => return idle >= FRESH_MS,
                TcpState::Established => true,
                _ => false,
            },
            ipproto::SCTP => match SctpState::from_u8(e.state) {
                SctpState::Init1 | SctpState::Init => return idle >= FRESH_MS,
                SctpState::Established => true,
                _ => false,
            },
            _ => true,
        };
        if !low_packet || idle < self.defense.idle_ms {
            return false;
        }
        let n = e.pkts;
        if n == 0 || n > LOW_PACKETS {
            return false;
        }
        if n <= 2 {
            return true;
        }
        let c = &mut countdown[n as usize];
        if *c > 1 {
            *c -= 1;
            return false;
        }
        *c = n as u8;
        true
    }
}
