//! Table configuration: size, seed, timeouts and the kernel's sysctl knobs.
//!
//! Everything here is plain data. The table copies the knobs and timeouts
//! into atomics, so the control plane can change them at run time
//! ([`crate::Table::set_knobs`], [`crate::Table::set_timeouts`]) while workers
//! read them with one relaxed load per packet.

use crate::proto::ipproto;
use crate::proto::sctp::{SctpState, ALL_SCTP_STATES, SCTP_STATES};
use crate::proto::tcp::{TcpState, ALL_TCP_STATES, TCP_STATES};
use crate::MAX_TIMEOUT_MS;

/// How a flood defence (`drop_entry`, `drop_packet`, `secure_tcp`)
/// engages: the kernel's sysctl values 0 (never), 1 and 2 (automatic: on
/// while memory is short, see [`crate::Table::defense_tick`]; the kernel
/// shows 2 while engaged and 1 while not), 3 (always).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Defense {
    /// Never (0).
    #[default]
    Off,
    /// While the table is at least `Config::defense_threshold_pct` full or
    /// the host's available memory is below `amemthresh` (1 or 2).
    Auto,
    /// Always (3).
    Always,
}

impl Defense {
    /// From the kernel's sysctl value (0..=3); `None` outside it.
    pub fn from_level(v: u32) -> Option<Self> {
        match v {
            0 => Some(Defense::Off),
            1 | 2 => Some(Defense::Auto),
            3 => Some(Defense::Always),
            _ => None,
        }
    }

    /// The sysctl value the kernel would show: automatic modes read 2
    /// while `engaged`, else 1.
    pub fn level(self, engaged: bool) -> u32 {
        match self {
            Defense::Off => 0,
            Defense::Auto => 1 + engaged as u32,
            Defense::Always => 3,
        }
    }

    /// Whether the defence acts now, given the memory verdict.
    #[inline(always)]
    pub fn active(self, short_of_memory: bool) -> bool {
        match self {
            Defense::Off => false,
            Defense::Auto => short_of_memory,
            Defense::Always => true,
        }
    }

    fn bits(self) -> u32 {
        match self {
            Defense::Off => 0,
            Defense::Auto => 1,
            Defense::Always => 3,
        }
    }
    #[inline(always)]
    fn from_bits(b: u32) -> Self {
        match b & 3 {
            0 => Defense::Off,
            3 => Defense::Always,
            _ => Defense::Auto,
        }
    }
}

/// The kernel's connection-table sysctls, as uvs settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// `expire_nodest_conn`: a packet for a connection whose server was
    /// removed expires the entry at once (and, if it may open a connection,
    /// is rescheduled: newer kernels' behaviour). Off: the packet is dropped
    /// and the entry's timer is *not* refreshed, so it dies after its timeout
    /// even under steady traffic, and re-adding the server resumes the flow.
    /// The sweep also expires such entries when on.
    pub expire_nodest_conn: bool,
    /// `expire_quiescent_template`: a persistence template whose server has
    /// weight 0 is invalidated on lookup, so new connections are scheduled
    /// afresh (connections already bound continue).
    pub expire_quiescent_template: bool,
    /// `sloppy_tcp`: any non-RST segment may create a connection.
    pub sloppy_tcp: bool,
    /// `sloppy_sctp`: any chunk but ABORT may create an association.
    pub sloppy_sctp: bool,
    /// `conn_reuse_mode`: 0 = a SYN on a TIME_WAIT/CLOSE tuple reuses the old
    /// entry (same server); bit 0 = reschedule it; bit 1 = also reschedule
    /// DR/TUN connections in FIN_WAIT. Default 1.
    pub conn_reuse_mode: u8,
    /// `secure_tcp`: use the defensive TCP table: a client's ACK alone
    /// never establishes a NAT connection (it stays SYN_RECV, 60 s, until
    /// the server's SYN+ACK, then SYNACK until the server speaks again),
    /// and a DR/TUN SYN starts in SYNACK.
    pub secure_tcp: Defense,
    /// `drop_entry`: while engaged, [`crate::Table::defense_tick`] drops
    /// handshake entries and low-packet idle ones (the kernel's
    /// `ip_vs_random_dropentry`, see `defense.rs`), and an insert into a
    /// full table evicts an entry still in its handshake (TCP
    /// SYN_RECV/SYNACK, SCTP INIT1/INIT), a single-packet datagram flow or,
    /// failing those, the ESTABLISHED entry with the fewest packets (≤ 8)
    /// instead of refusing the new one. A full table counts as short of
    /// memory, so the automatic mode evicts there. uvs defaults this to 1
    /// (automatic) because its table has a hard cap (the kernel's default
    /// is 0, with a table bounded only by memory).
    pub drop_entry: Defense,
    /// `drop_packet`: while engaged, one in every *rate* packets that would
    /// open a connection is dropped before it is scheduled; the rate is
    /// `amemthresh / (amemthresh - available)` in the automatic mode and
    /// `am_droprate` in mode 3 (see [`crate::Table::drop_new_packet`]).
    pub drop_packet: Defense,
    /// uvs policy (no kernel knob): a controlled connection releases its
    /// persistence template when it reaches TIME_WAIT/CLOSE (TCP) or
    /// CLOSED/REJECTED (SCTP), so persistence is not stretched by closing
    /// connections beyond the `-p` timeout. Off = the kernel's behaviour.
    pub release_template_on_close: bool,
    /// The sync daemon runs as master: packets mark the connections it
    /// should send (`uvsadm --start-daemon master`; not a kernel sysctl).
    pub sync_master: bool,
    /// `schedule_icmp`: an ICMP error from a client about a connection the
    /// table does not hold (e.g. one a failed-over director had) is
    /// scheduled like the connection's first packet: a new entry, and the
    /// error goes to the chosen real server. Off (the default): such
    /// errors are left alone.
    pub schedule_icmp: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            expire_nodest_conn: false,
            expire_quiescent_template: false,
            sloppy_tcp: false,
            sloppy_sctp: false,
            conn_reuse_mode: 1,
            secure_tcp: Defense::Off,
            drop_entry: Defense::Auto,
            drop_packet: Defense::Off,
            release_template_on_close: true,
            sync_master: false,
            schedule_icmp: false,
        }
    }
}

impl Knobs {
    /// `release_template_on_close` in the packed form.
    pub(crate) const RELEASE_ON_CLOSE_BIT: u32 = 32;
    /// `schedule_icmp`'s shift in the packed form (above
    /// `conn_reuse_mode`'s byte).
    const SCHEDULE_ICMP_BIT: u32 = 24;

    /// `secure_tcp` from the packed form.
    #[inline(always)]
    pub(crate) fn secure_tcp_of(v: u32) -> Defense {
        Defense::from_bits(v >> 6)
    }

    pub(crate) fn pack(&self) -> u32 {
        (self.expire_nodest_conn as u32)
            | (self.expire_quiescent_template as u32) << 1
            | (self.sloppy_tcp as u32) << 2
            | (self.sloppy_sctp as u32) << 3
            | (self.release_template_on_close as u32) << 5
            | self.secure_tcp.bits() << 6
            | (self.conn_reuse_mode as u32) << 8
            | self.drop_entry.bits() << 16
            | self.drop_packet.bits() << 18
            | (self.sync_master as u32) << 25
            | (self.schedule_icmp as u32) << Self::SCHEDULE_ICMP_BIT
    }
    #[inline(always)]
    pub(crate) fn unpack(v: u32) -> Self {
        Knobs {
            expire_nodest_conn: v & 1 != 0,
            expire_quiescent_template: v & 2 != 0,
            sloppy_tcp: v & 4 != 0,
            sloppy_sctp: v & 8 != 0,
            release_template_on_close: v & 32 != 0,
            secure_tcp: Defense::from_bits(v >> 6),
            conn_reuse_mode: (v >> 8) as u8,
            drop_entry: Defense::from_bits(v >> 16),
            drop_packet: Defense::from_bits(v >> 18),
            sync_master: v & Self::SYNC_MASTER_BIT != 0,
            schedule_icmp: (v >> Self::SCHEDULE_ICMP_BIT) & 1 != 0,
        }
    }
}

/// Timeouts in milliseconds, per protocol state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP, indexed by `TcpState as usize`.
    pub tcp: [u32; TCP_STATES],
    /// SCTP, indexed by `SctpState as usize`.
    pub sctp: [u32; SCTP_STATES],
    /// UDP and every other protocol.
    pub udp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        let mut tcp = [0; TCP_STATES];
        for s in ALL_TCP_STATES {
            tcp[s as usize] = s.default_timeout_ms();
        }
        let mut sctp = [0; SCTP_STATES];
        for s in ALL_SCTP_STATES {
            sctp[s as usize] = s.default_timeout_ms();
        }
        Timeouts {
            tcp,
            sctp,
            udp: 300_000,
        }
    }
}

/// A per-state timeout name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state {state:?} for protocol {proto}")]
pub struct UnknownState {
    /// Protocol number given.
    pub proto: u8,
    /// State name given.
    pub state: String,
}

impl Timeouts {
    /// `ipvsadm --set tcp tcpfin udp` (seconds; 0 keeps the current value):
    /// sets ESTABLISHED, FIN_WAIT and UDP.
    pub fn set_tcp_tcpfin_udp(&mut self, tcp_s: u32, tcpfin_s: u32, udp_s: u32) {
        let ms = |s: u32| s.saturating_mul(1000).min(MAX_TIMEOUT_MS);
        if tcp_s != 0 {
            self.tcp[TcpState::Established as usize] = ms(tcp_s);
        }
        if tcpfin_s != 0 {
            self.tcp[TcpState::FinWait as usize] = ms(tcpfin_s);
        }
        if udp_s != 0 {
            self.udp = ms(udp_s);
        }
    }

    /// The `--timeout` triple in seconds: (tcp, tcpfin, udp).
    pub fn tcp_tcpfin_udp(&self) -> (u32, u32, u32) {
        (
            self.tcp[TcpState::Established as usize] / 1000,
            self.tcp[TcpState::FinWait as usize] / 1000,
            self.udp / 1000,
        )
    }

    /// Sets one state's timeout by protocol and state name (as printed by
    /// `-L -c`; UDP's only state is `UDP`).
    pub fn set_state(&mut self, proto: u8, state: &str, ms: u32) -> Result<(), UnknownState> {
        let ms = ms.min(MAX_TIMEOUT_MS);
        let err = || UnknownState {
            proto,
            state: state.to_string(),
        };
        match proto {
            ipproto::TCP => {
                let s = TcpState::from_name(state).ok_or_else(err)?;
                self.tcp[s as usize] = ms;
            }
            ipproto::SCTP => {
                let s = SctpState::from_name(state).ok_or_else(err)?;
                self.sctp[s as usize] = ms;
            }
            _ => {
                if !state.eq_ignore_ascii_case("UDP") {
                    return Err(err());
                }
                self.udp = ms;
            }
        }
        Ok(())
    }
}

/// Table construction parameters.
#[derive(Debug, Clone)]
pub struct Config {
    /// Hard cap on entries (connections + templates). Memory never grows past
    /// what this many entries need.
    pub max_entries: usize,
    /// Number of shards (rounded up to a power of two, 1..=1024). More
    /// shards: less lock contention and smaller per-shard pauses when an
    /// index grows; fewer: less fixed overhead for small tables.
    pub shards: usize,
    /// Hash seed. Use a random value in production (the engine should draw
    /// it from the OS); tests pass a fixed one for reproducibility.
    pub seed: u64,
    /// Size each shard's index for `max_entries` up front, so it never grows
    /// (no pause, no rehash, no allocation on insert but the slab's
    /// chunks) at the cost of ~10 bytes × `max_entries` from the start (as
    /// the kernel's table is a fixed bucket array). Off by default: while
    /// the table holds far fewer connections than its cap, a presized index
    /// is sparse, and new connections then miss the CPU caches (and fault
    /// in fresh pages) more than the amortized growth costs them
    /// (`benches/pipeline`'s `new_connection`).
    pub presize: bool,
    /// Table fill (percent of `max_entries`) at which `Defense::Auto`
    /// defences engage (the kernel uses free memory only; uvs has a cap,
    /// and also watches the host's memory against `amemthresh`).
    pub defense_threshold_pct: u8,
    /// `drop_entry` drops a low-packet ESTABLISHED (or datagram) entry only
    /// once it has been idle this long: the kernel's 60 s, "enough time for
    /// a normal connection to get through". Tests shorten it.
    pub todrop_idle_ms: u32,
    /// The sysctl-like knobs.
    pub knobs: Knobs,
    /// Initial timeouts.
    pub timeouts: Timeouts,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_entries: 1 << 20,
            shards: 256,
            seed: 0x5eed_0fc0_ffee,
            presize: false,
            defense_threshold_pct: 75,
            todrop_idle_ms: 60_000,
            knobs: Knobs::default(),
            timeouts: Timeouts::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_roundtrip() {
        let k = Knobs {
            expire_nodest_conn: true,
            expire_quiescent_template: false,
            sloppy_tcp: true,
            sloppy_sctp: false,
            conn_reuse_mode: 3,
            secure_tcp: Defense::Auto,
            drop_entry: Defense::Off,
            drop_packet: Defense::Always,
            release_template_on_close: true,
            sync_master: true,
            schedule_icmp: true,
        };
        assert_eq!(Knobs::unpack(k.pack()), k);
        let k = Knobs {
            drop_entry: Defense::Always,
            secure_tcp: Defense::Off,
            drop_packet: Defense::Auto,
            ..k
        };
        assert_eq!(Knobs::unpack(k.pack()), k);
        assert_eq!(Knobs::unpack(Knobs::default().pack()), Knobs::default());
    }

    #[test]
    fn defense_levels_are_the_kernels() {
        for v in 0..=3 {
            let d = Defense::from_level(v).unwrap();
            assert_eq!(d.level(v == 2), v);
        }
        assert_eq!(Defense::from_level(4), None);
        assert!(!Defense::Auto.active(false) && Defense::Auto.active(true));
        assert!(Defense::Always.active(false) && !Defense::Off.active(true));
    }

    #[test]
    fn set_keeps_zero_values() {
        let mut t = Timeouts::default();
        t.set_tcp_tcpfin_udp(0, 30, 0);
        assert_eq!(t.tcp_tcpfin_udp(), (900, 30, 300));
        t.set_tcp_tcpfin_udp(60, 0, 10);
        assert_eq!(t.tcp_tcpfin_udp(), (60, 30, 10));
    }

    #[test]
    fn set_state_by_name() {
        let mut t = Timeouts::default();
        t.set_state(ipproto::TCP, "time_wait", 5000).unwrap();
        assert_eq!(t.tcp[TcpState::TimeWait as usize], 5000);
        t.set_state(ipproto::SCTP, "C-SENT", 7000).unwrap();
        assert_eq!(t.sctp[SctpState::CookieSent as usize], 7000);
        assert!(t.set_state(ipproto::TCP, "BOGUS", 1).is_err());
    }
}
