//! Destination (real server) state shared by the scheduler, the connection
//! table and the control plane — the analogue of the kernel's `ip_vs_dest`.
//!
//! A `Dest` lives behind an `Arc`: the service's scheduler holds it, every
//! connection entry bound to it holds it, and the control plane keeps it in a
//! per-service trash list after `-d` so that re-adding the same server brings
//! its connections back (the kernel's `dest_trash`). All mutable state is
//! atomic so that workers never lock to read or count.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

/// How packets reach the destination (`-m`, `-g`, `-i`, and local delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FwdMethod {
    /// `-m`: NAT (ipvsadm prints `Masq`).
    Masq = 0,
    /// The real server is an address of the director itself (`Local`).
    Local = 1,
    /// `-i`: IP tunnel (`Tunnel`).
    Tunnel = 2,
    /// `-g`: direct routing (`Route`).
    Route = 3,
}

impl FwdMethod {
    /// The name ipvsadm prints in `-L` output.
    pub fn list_name(self) -> &'static str {
        match self {
            FwdMethod::Masq => "Masq",
            FwdMethod::Local => "Local",
            FwdMethod::Tunnel => "Tunnel",
            FwdMethod::Route => "Route",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => FwdMethod::Masq,
            1 => FwdMethod::Local,
            2 => FwdMethod::Tunnel,
            _ => FwdMethod::Route,
        }
    }
}

/// Tunnel encapsulation of a `-i` destination (`--tun-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TunType {
    /// IP in IP (the default).
    #[default]
    Ipip,
    /// Generic UDP Encapsulation to [`TunConfig::port`].
    Gue,
    /// GRE.
    Gre,
}

/// Tunnel checksum option (`--tun-nocsum`, `--tun-csum`, `--tun-remcsum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TunCsum {
    #[default]
    NoCsum,
    Csum,
    RemCsum,
}

impl TunType {
    /// The name ipvsadm uses.
    pub fn name(self) -> &'static str {
        match self {
            TunType::Ipip => "ipip",
            TunType::Gue => "gue",
            TunType::Gre => "gre",
        }
    }
}

impl TunCsum {
    /// The ipvsadm option that selects it.
    pub fn option(self) -> &'static str {
        match self {
            TunCsum::NoCsum => "--tun-nocsum",
            TunCsum::Csum => "--tun-csum",
            TunCsum::RemCsum => "--tun-remcsum",
        }
    }
    /// The short form in `-L --tun-info` output.
    pub fn info(self) -> &'static str {
        match self {
            TunCsum::NoCsum => "-c",
            TunCsum::Csum => "+c",
            TunCsum::RemCsum => "r+c",
        }
    }
}

/// Tunnel settings of a destination, as the kernel keeps them in
/// `ip_vs_dest` (`tun_type`, `tun_port`, `tun_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TunConfig {
    pub kind: TunType,
    /// GUE destination port (0 for ipip and GRE).
    pub port: u16,
    pub csum: TunCsum,
}

impl TunConfig {
    fn pack(self) -> u32 {
        let k = match self.kind {
            TunType::Ipip => 0,
            TunType::Gue => 1,
            TunType::Gre => 2,
        };
        let c = match self.csum {
            TunCsum::NoCsum => 0,
            TunCsum::Csum => 1,
            TunCsum::RemCsum => 2,
        };
        k | c << 2 | u32::from(self.port) << 16
    }
    fn unpack(v: u32) -> Self {
        TunConfig {
            kind: match v & 3 {
                1 => TunType::Gue,
                2 => TunType::Gre,
                _ => TunType::Ipip,
            },
            csum: match (v >> 2) & 3 {
                1 => TunCsum::Csum,
                2 => TunCsum::RemCsum,
                _ => TunCsum::NoCsum,
            },
            port: (v >> 16) as u16,
        }
    }
}

const F_AVAILABLE: u8 = 1;
const F_OVERLOAD: u8 = 2;

/// One real server of one service.
#[repr(align(64))]
pub struct Dest {
    /// Real server address.
    pub addr: IpAddr,
    /// Real server port (0 = the client's destination port, for port-0 services).
    pub port: u16,
    weight: AtomicU32,
    fwd: AtomicU8,
    tun: AtomicU32,
    flags: AtomicU8,
    u_threshold: AtomicU32,
    l_threshold: AtomicU32,
    /// Where the embedding program counts this server's traffic (opaque
    /// here; [`Dest::NO_STATS`] until assigned). Read per packet, written
    /// once on the control path.
    stats: AtomicU64,
    /// Written on every connection bound or unbound, by any worker: kept
    /// off the line the per-packet path reads (`flags`), and, since `Dest`
    /// is cache-line aligned, off the `Arc`'s reference counts too.
    counts: Counts,
}

/// The connection counts, on their own cache line.
#[repr(align(64))]
struct Counts {
    /// ActiveConn in the high half, InActConn in the low half: one word,
    /// so a state change that moves a connection from one to the other is
    /// one atomic update of the shared line, not two, and a reader sees
    /// both halves of one moment. Neither half can carry into the other:
    /// the connection table's cap is below 2³².
    conns: AtomicU64,
    persistent: AtomicU32,
}

/// One connection in the active half of [`Counts::conns`].
const ACTIVE_ONE: u64 = 1 << 32;
/// One connection in the inactive half.
const INACTIVE_ONE: u64 = 1;

/// `v` with one connection taken from the half `one` names, saturating at
/// zero (a counting bug must not wrap to 4 billion connections).
#[inline(always)]
fn take_one(v: u64, one: u64) -> u64 {
    let half = if one == ACTIVE_ONE {
        v >> 32
    } else {
        v & 0xffff_ffff
    };
    if half == 0 {
        v
    } else {
        v - one
    }
}

impl fmt::Debug for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dest")
            .field("addr", &self.addr)
            .field("port", &self.port)
            .field("weight", &self.weight())
            .field("fwd", &self.fwd_method())
            .field("available", &self.is_available())
            .field("overloaded", &self.is_overloaded())
            .field("active", &self.active_conns())
            .field("inactive", &self.inactive_conns())
            .finish()
    }
}

impl Dest {
    /// A new, available destination with no connections.
    pub fn new(addr: IpAddr, port: u16, weight: u32, fwd: FwdMethod) -> Self {
        Dest {
            addr,
            port,
            weight: AtomicU32::new(weight),
            fwd: AtomicU8::new(fwd as u8),
            tun: AtomicU32::new(0),
            flags: AtomicU8::new(F_AVAILABLE),
            u_threshold: AtomicU32::new(0),
            l_threshold: AtomicU32::new(0),
            stats: AtomicU64::new(Self::NO_STATS),
            counts: Counts {
                conns: AtomicU64::new(0),
                persistent: AtomicU32::new(0),
            },
        }
    }

    /// The counter tag of a destination nobody counts.
    pub const NO_STATS: u64 = u64::MAX;
    /// The embedder's counter tag for this server (read per packet).
    #[inline]
    pub fn stats_tag(&self) -> u64 {
        self.stats.load(Relaxed)
    }
    /// Sets the counter tag (control path, before the server is published).
    pub fn set_stats_tag(&self, tag: u64) {
        self.stats.store(tag, Relaxed)
    }

    /// Current weight (0 = quiescent: no new connections).
    #[inline]
    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }
    /// Sets the weight (control path).
    pub fn set_weight(&self, w: u32) {
        self.weight.store(w, Relaxed)
    }
    /// Forwarding method for new connections.
    #[inline]
    pub fn fwd_method(&self) -> FwdMethod {
        FwdMethod::from_u8(self.fwd.load(Relaxed))
    }
    /// Sets the forwarding method (control path, `-e`).
    pub fn set_fwd_method(&self, m: FwdMethod) {
        self.fwd.store(m as u8, Relaxed)
    }
    /// Tunnel settings for `-i` (ignored for other methods).
    #[inline]
    pub fn tun_config(&self) -> TunConfig {
        TunConfig::unpack(self.tun.load(Relaxed))
    }
    /// Sets the tunnel settings (control path, `-a`/`-e`).
    pub fn set_tun_config(&self, t: TunConfig) {
        self.tun.store(t.pack(), Relaxed)
    }
    /// Active connections (ActiveConn: ESTABLISHED, as the kernel counts).
    #[inline]
    pub fn active_conns(&self) -> u32 {
        (self.counts.conns.load(Relaxed) >> 32) as u32
    }
    /// Inactive connections (every other state; all UDP).
    #[inline]
    pub fn inactive_conns(&self) -> u32 {
        self.counts.conns.load(Relaxed) as u32
    }
    /// Persistence templates pointing at this server.
    pub fn persistent_conns(&self) -> u32 {
        self.counts.persistent.load(Relaxed)
    }
    /// Upper/lower connection thresholds (`-x`, `-y`; 0 = unset).
    pub fn thresholds(&self) -> (u32, u32) {
        (
            self.u_threshold.load(Relaxed),
            self.l_threshold.load(Relaxed),
        )
    }
    /// Sets thresholds and re-evaluates the overload flag (control path).
    pub fn set_thresholds(&self, upper: u32, lower: u32) {
        self.u_threshold.store(upper, Relaxed);
        self.l_threshold.store(lower, Relaxed);
        self.update_overload();
    }
    /// Still part of its service. Cleared by `-d`; set again when the same
    /// server is re-added (its connections then resume).
    #[inline]
    pub fn is_available(&self) -> bool {
        self.flags.load(Relaxed) & F_AVAILABLE != 0
    }
    /// Marks the destination available or removed (control path).
    pub fn set_available(&self, yes: bool) {
        if yes {
            self.flags.fetch_or(F_AVAILABLE, Relaxed);
        } else {
            self.flags.fetch_and(!F_AVAILABLE, Relaxed);
        }
    }
    /// Over its upper threshold: gets no new connections.
    #[inline]
    pub fn is_overloaded(&self) -> bool {
        self.flags.load(Relaxed) & F_OVERLOAD != 0
    }
    /// May receive a new connection: available, weight > 0, not overloaded.
    #[inline]
    pub fn can_schedule(&self) -> bool {
        self.flags.load(Relaxed) == F_AVAILABLE && self.weight() > 0
    }

    /// The kernel's `ip_vs_dest_totalconns`-based overload rule: at or above
    /// `-x` the server is overloaded; the flag clears below `-y`, or below
    /// 3/4 of `-x` when `-y` is unset. Called whenever the counts change.
    fn update_overload(&self) {
        let (upper, lower) = self.thresholds();
        let both = self.counts.conns.load(Relaxed);
        let total = ((both >> 32) as u32).saturating_add(both as u32);
        // Read before writing: most calls change nothing, and a locked
        // write here would bounce the line every packet reads `flags` from.
        let over = self.is_overloaded();
        if upper == 0 {
            if over {
                self.flags.fetch_and(!F_OVERLOAD, Relaxed);
            }
        } else if total >= upper {
            if !over {
                self.flags.fetch_or(F_OVERLOAD, Relaxed);
            }
        } else {
            // Without -y the kernel clears when `total * 4 < upper * 3`, i.e.
            // below the exact 3/4 of -x (upper 10 clears at 7, not at 6 as
            // an integer `upper * 3 / 4` would); u64 so large -x cannot wrap.
            let clears = if lower != 0 {
                total < lower
            } else {
                (total as u64) * 4 < (upper as u64) * 3
            };
            if clears && over {
                self.flags.fetch_and(!F_OVERLOAD, Relaxed);
            }
        }
    }

    /// A connection was bound to this destination (`ip_vs_bind_dest`).
    pub fn conn_bound(&self, active: bool) {
        let one = if active { ACTIVE_ONE } else { INACTIVE_ONE };
        self.counts.conns.fetch_add(one, Relaxed);
        self.update_overload();
    }
    /// A connection left this destination (`ip_vs_unbind_dest`).
    pub fn conn_unbound(&self, active: bool) {
        let one = if active { ACTIVE_ONE } else { INACTIVE_ONE };
        let _ = self
            .counts
            .conns
            .fetch_update(Relaxed, Relaxed, |v| Some(take_one(v, one)));
        self.update_overload();
    }
    /// A connection moved between the active and inactive counts.
    pub fn conn_state_moved(&self, now_active: bool) {
        let (from, to) = if now_active {
            (INACTIVE_ONE, ACTIVE_ONE)
        } else {
            (ACTIVE_ONE, INACTIVE_ONE)
        };
        // One compare-and-swap moves it (the old pair was two updates).
        let _ = self
            .counts
            .conns
            .fetch_update(Relaxed, Relaxed, |v| Some(take_one(v, from) + to));
    }
    /// A persistence template was bound (`true`) or unbound (`false`).
    pub fn template_bound(&self, bound: bool) {
        if bound {
            self.counts.persistent.fetch_add(1, Relaxed);
        } else {
            let _ = self
                .counts
                .persistent
                .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
        }
    }
}

#[cfg(test)]
mod tun_tests {
    use super::*;

    #[test]
    fn tun_config_round_trips() {
        let d = Dest::new("203.0.113.11".parse().unwrap(), 80, 1, FwdMethod::Tunnel);
        assert_eq!(d.tun_config(), TunConfig::default());
        for kind in [TunType::Ipip, TunType::Gue, TunType::Gre] {
            for csum in [TunCsum::NoCsum, TunCsum::Csum, TunCsum::RemCsum] {
                let t = TunConfig {
                    kind,
                    csum,
                    port: 6080,
                };
                d.set_tun_config(t);
                assert_eq!(d.tun_config(), t);
            }
        }
    }
}

#[cfg(test)]
mod count_tests {
    use super::*;

    /// The two halves of one word count apart, move in one step, and
    /// saturate at zero without borrowing from each other.
    #[test]
    fn active_and_inactive_share_a_word_without_mixing() {
        let d = Dest::new("203.0.113.11".parse().unwrap(), 80, 1, FwdMethod::Masq);
        d.conn_bound(false);
        d.conn_bound(false);
        d.conn_bound(true);
        assert_eq!((d.active_conns(), d.inactive_conns()), (1, 2));
        d.conn_state_moved(true);
        assert_eq!((d.active_conns(), d.inactive_conns()), (2, 1));
        d.conn_state_moved(false);
        d.conn_state_moved(false);
        assert_eq!((d.active_conns(), d.inactive_conns()), (0, 3));
        // A spurious move from an empty half only adds to the other.
        d.conn_state_moved(false);
        assert_eq!((d.active_conns(), d.inactive_conns()), (0, 4));
        for _ in 0..4 {
            d.conn_unbound(false);
        }
        // Unbinding from an empty half leaves both at zero.
        d.conn_unbound(false);
        d.conn_unbound(true);
        assert_eq!((d.active_conns(), d.inactive_conns()), (0, 0));
        // Thresholds see the sum of both halves.
        d.set_thresholds(2, 0);
        d.conn_bound(true);
        assert!(!d.is_overloaded());
        d.conn_bound(false);
        assert!(d.is_overloaded());
        d.conn_unbound(true);
        assert!(!d.is_overloaded());
    }
}
