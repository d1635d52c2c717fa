//! The fixed-size trace record a worker fills for one traced packet.
//!
//! Everything here is `Copy` and of bounded size (texts are truncated into
//! inline buffers, lists have fixed capacities with a count of what did
//! not fit), so a worker builds and queues a record without allocating.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use uvs_fwd::{ParseError, Parsed};
use uvs_sched::{Explain, FwdMethod};

use crate::datapath::hooks::{HookFn, HookPoint, HookVerdict};
use crate::datapath::stats::DropReason;

/// Most hook entries a record lists.
pub const MAX_HOOKS: usize = 16;
/// Most table rules a record lists (a rule walk may visit more; see
/// [`Record::rules_lost`]).
pub const MAX_RULES: usize = 8;

/// UTF-8 text in an inline buffer of `N` bytes, truncated at a character
/// boundary when longer.
#[derive(Clone, Copy)]
pub struct Text<const N: usize> {
    len: u16,
    buf: [u8; N],
}

impl<const N: usize> Text<N> {
    /// The empty text.
    pub const EMPTY: Self = Text {
        len: 0,
        buf: [0; N],
    };

    /// `v` formatted, truncated to `N` bytes.
    pub fn of(v: &dyn fmt::Display) -> Self {
        let mut t = Self::EMPTY;
        let _ = fmt::write(&mut t, format_args!("{v}"));
        t
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only whole characters are ever copied in (see `write_str`).
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }
}

impl<const N: usize> fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let l = self.len as usize;
            if l + c.len_utf8() > N {
                return Err(fmt::Error);
            }
            c.encode_utf8(&mut self.buf[l..]);
            self.len += c.len_utf8() as u16;
        }
        Ok(())
    }
}

impl<const N: usize> fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// One hook entry the packet met, with its verdict.
#[derive(Debug, Clone, Copy)]
pub struct HookVisit {
    pub point: HookPoint,
    pub priority: i32,
    pub func: HookFn,
    pub verdict: HookVerdict,
}

/// One table rule whose target was applied to the packet (reported by the
/// table through [`super::rule`]).
#[derive(Debug, Clone, Copy)]
pub struct RuleVisit {
    pub point: HookPoint,
    pub priority: i32,
    pub table: &'static str,
    pub chain: Text<32>,
    /// 1-based position in its chain, as `iptables -L --line-numbers`.
    pub rule_no: u32,
    pub text: Text<160>,
    /// The target's verdict as iptables names it (`DROP`, `ACCEPT`,
    /// `RETURN`, `MARK`, …).
    pub verdict: &'static str,
}

/// A connection entry as the trace saw it.
#[derive(Debug, Clone, Copy)]
pub struct ConnView {
    /// `ipvsadm -L -c`'s state name.
    pub state: &'static str,
    /// Found as a reply (server → client) rather than a request.
    pub reply: bool,
    pub client: SocketAddr,
    pub virt: SocketAddr,
    pub server: SocketAddr,
    pub fwd: FwdMethod,
    /// The timeout of its state now, in milliseconds.
    pub timeout_ms: u32,
}

/// The service the packet matched.
#[derive(Debug, Clone, Copy)]
pub struct SvcView {
    pub proto: u8,
    pub addr: IpAddr,
    pub port: u16,
    pub sched: &'static str,
    pub persistent: bool,
}

/// The scheduler's pick and why.
#[derive(Debug, Clone, Copy)]
pub struct SchedView {
    pub sched: &'static str,
    pub picked: Option<SocketAddr>,
    pub why: Explain,
}

/// What the pipeline decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not uvs's: left to the kernel.
    Pass,
    /// Dropped, for this reason.
    Drop(DropReason),
    /// Dropped, and an ICMP error is owed to the sender.
    Reject(DropReason),
    /// Rewritten and sent toward `next_hop`; `before` is the packet as it
    /// arrived, `after` as it leaves.
    Xmit { next_hop: IpAddr },
    /// Encapsulated toward the real server `next_hop` (`-i`).
    Tunnel { next_hop: IpAddr },
}

/// What the egress stage did with a packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// Sent: out of `ifindex`, MACs `src` → `dst`.
    Sent {
        ifindex: u32,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        mtu: u32,
    },
    /// Waiting for the neighbour to answer (parked).
    Parked,
    /// The next hop is an address of this host.
    Local,
    /// No route or no neighbour.
    Unreachable,
}

/// One traced packet.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    /// Order of matching in the session (from 1).
    pub seq: u64,
    /// The ring it came through: one per worker thread, numbered in the
    /// order the threads first traced a packet.
    pub ring: u16,
    /// The interface it arrived on.
    pub ifindex: u32,
    /// Bytes of the frame.
    pub len: u32,
    /// Traced because it belongs to a traced connection (a reply), not by
    /// the filter.
    pub followed: bool,
    /// The parse, or why it failed.
    pub parsed: Result<Parsed, ParseError>,
    /// The hook point its route decision gave (`None`: not uvs's).
    pub point: Option<HookPoint>,
    pub hooks: [Option<HookVisit>; MAX_HOOKS],
    pub rules: [Option<RuleVisit>; MAX_RULES],
    /// Rules applied beyond [`MAX_RULES`].
    pub rules_lost: u32,
    pub conn_before: Option<ConnView>,
    pub conn_after: Option<ConnView>,
    /// A new connection entry was made for it.
    pub conn_new: bool,
    pub service: Option<SvcView>,
    pub sched: Option<SchedView>,
    pub outcome: Outcome,
    /// The packet as it leaves (after NAT), when it is sent.
    pub rewritten: Option<Parsed>,
    pub egress: Option<Egress>,
    /// Dropped by the egress stage (after the pipeline sent it on).
    pub egress_drop: Option<DropReason>,
}

impl Record {
    /// A record with nothing filled in.
    pub const EMPTY: Record = Record {
        seq: 0,
        ring: 0,
        ifindex: 0,
        len: 0,
        followed: false,
        parsed: Err(ParseError::NotIp),
        point: None,
        hooks: [None; MAX_HOOKS],
        rules: [None; MAX_RULES],
        rules_lost: 0,
        conn_before: None,
        conn_after: None,
        conn_new: false,
        service: None,
        sched: None,
        outcome: Outcome::Pass,
        rewritten: None,
        egress: None,
        egress_drop: None,
    };

    /// Adds a rule visit (counted in `rules_lost` when full).
    pub fn push_rule(&mut self, r: RuleVisit) {
        match self.rules.iter_mut().find(|s| s.is_none()) {
            Some(s) => *s = Some(r),
            None => self.rules_lost = self.rules_lost.saturating_add(1),
        }
    }
}
