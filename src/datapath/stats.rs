//! Per-worker counters: every drop has a named reason, every hook entry its
//! seen/dropped/stolen counts. Each worker writes only its own block (single
//! writer: a plain load+store, no locked instruction, no shared cache line);
//! the control thread sums the blocks when asked.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;
use uvs_fwd::ParseError;

use crate::datapath::hooks::{HookChain, MAX_ENTRIES};

/// Why uvs dropped a packet (parse errors are counted apart, per reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// Unparseable (the parse counters say why).
    Malformed,
    /// A filter-table rule said DROP.
    Filtered,
    /// No connection and not a connection-opening packet (e.g. a stray ACK).
    NoConnection,
    /// The service has no available real server.
    NoDestination,
    /// The connection's real server was removed (`expire_nodest_conn`).
    DestRemoved,
    /// TTL / hop limit would reach zero.
    TtlExceeded,
    /// The connection table refused a new entry (full).
    TableFull,
    /// No route or neighbour toward the next hop.
    NoRoute,
    /// A forwarding method or packet kind uvs does not handle yet.
    Unsupported,
    /// The rewrite failed on a malformed packet.
    Rewrite,
    /// The ring truncated a frame too big for it.
    Truncated,
    /// The kernel refused a transmission.
    TxFailed,
    /// Too many packets waiting for neighbour resolution.
    ParkFull,
    /// Larger than the path (or tunnel) MTU and not to be fragmented.
    TooBig,
    /// Dropped by the kernel before uvs saw it: the RX queue (ring) was
    /// full (`PACKET_STATISTICS` `tp_drops`, read periodically).
    RxQueueFull,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 15;
    /// All reasons, in index order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Malformed,
        DropReason::Filtered,
        DropReason::NoConnection,
        DropReason::NoDestination,
        DropReason::DestRemoved,
        DropReason::TtlExceeded,
        DropReason::TableFull,
        DropReason::NoRoute,
        DropReason::Unsupported,
        DropReason::Rewrite,
        DropReason::Truncated,
        DropReason::TxFailed,
        DropReason::ParkFull,
        DropReason::TooBig,
        DropReason::RxQueueFull,
    ];
    /// Counter name.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Filtered => "filtered",
            DropReason::NoConnection => "no_connection",
            DropReason::NoDestination => "no_destination",
            DropReason::DestRemoved => "dest_removed",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::TableFull => "table_full",
            DropReason::NoRoute => "no_route",
            DropReason::Unsupported => "unsupported",
            DropReason::Rewrite => "rewrite_failed",
            DropReason::Truncated => "truncated_by_ring",
            DropReason::TxFailed => "tx_failed",
            DropReason::ParkFull => "neighbour_queue_full",
            DropReason::TooBig => "too_big",
            DropReason::RxQueueFull => "rx_queue_full",
        }
    }
}

fn arr<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

/// One worker's counters.
#[derive(Debug)]
pub struct WorkerStats {
    pub rx: AtomicU64,
    pub tx: AtomicU64,
    /// Packets left to the kernel (not uvs's).
    pub passed: AtomicU64,
    /// New connections created.
    pub conns: AtomicU64,
    /// ICMP errors sent (port unreachable, time exceeded, too big).
    pub icmp_sent: AtomicU64,
    /// ICMP errors not sent: over the rate limit.
    pub icmp_limited: AtomicU64,
    /// New connections another worker had already created (insert race).
    pub conn_races: AtomicU64,
    pub parse: [AtomicU64; ParseError::COUNT],
    pub drops: [AtomicU64; DropReason::COUNT],
    pub hook_seen: [AtomicU64; MAX_ENTRIES],
    pub hook_dropped: [AtomicU64; MAX_ENTRIES],
    pub hook_stolen: [AtomicU64; MAX_ENTRIES],
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            rx: AtomicU64::new(0),
            tx: AtomicU64::new(0),
            passed: AtomicU64::new(0),
            conns: AtomicU64::new(0),
            icmp_sent: AtomicU64::new(0),
            conn_races: AtomicU64::new(0),
            icmp_limited: AtomicU64::new(0),
            parse: arr(),
            drops: arr(),
            hook_seen: arr(),
            hook_dropped: arr(),
            hook_stolen: arr(),
        }
    }
}

/// Adds `n` to a counter that only the calling worker writes.
#[inline]
pub fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl WorkerStats {
    /// Counts a drop.
    #[inline]
    pub fn drop(&self, r: DropReason) {
        add(&self.drops[r as usize], 1);
    }
}

/// The counters of every worker.
#[derive(Debug)]
pub struct Stats {
    pub workers: Vec<CachePadded<WorkerStats>>,
}

impl Stats {
    /// Counter blocks for `n` workers.
    pub fn new(n: usize) -> Stats {
        Stats {
            workers: (0..n)
                .map(|_| CachePadded::new(WorkerStats::default()))
                .collect(),
        }
    }

    fn sum(&self, f: impl Fn(&WorkerStats) -> &AtomicU64) -> u64 {
        self.workers.iter().map(|w| f(w).load(Relaxed)).sum()
    }

    /// Total drops for `r`.
    pub fn drops(&self, r: DropReason) -> u64 {
        self.sum(|w| &w.drops[r as usize])
    }

    /// `uvs stats` text: totals, drops and parse errors by reason, hook entries.
    pub fn report(&self, hooks: &HookChain) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "rx {}\ntx {}\npassed_to_kernel {}\nicmp_sent {}\nicmp_rate_limited {}\nconnection_races {}\nconnections {}",
            self.sum(|w| &w.rx),
            self.sum(|w| &w.tx),
            self.sum(|w| &w.passed),
            self.sum(|w| &w.icmp_sent),
            self.sum(|w| &w.icmp_limited),
            self.sum(|w| &w.conn_races),
            self.sum(|w| &w.conns)
        );
        for r in DropReason::ALL {
            let _ = writeln!(s, "drop.{} {}", r.name(), self.drops(r));
        }
        for e in ParseError::ALL {
            let _ = writeln!(
                s,
                "parse.{} {}",
                e.name(),
                self.sum(|w| &w.parse[e.index()])
            );
        }
        for e in hooks.all() {
            let i = e.index;
            let _ = writeln!(
                s,
                "hook.{}.{}.{} seen {} dropped {} stolen {}  # {}",
                e.point.name(),
                e.priority,
                e.func.name(),
                self.sum(|w| &w.hook_seen[i]),
                self.sum(|w| &w.hook_dropped[i]),
                self.sum(|w| &w.hook_stolen[i]),
                e.why
            );
        }
        s
    }
}
