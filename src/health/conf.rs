//! The part of a keepalived.conf that uvs runs: virtual servers, their real
//! servers and checkers, as plain data ([`KaConfig`]), made by
//! [`super::parse`]. Durations are as written (keepalived accepts
//! fractional seconds for its timers); defaults are keepalived.conf(5)'s.

use std::net::IpAddr;
use std::time::Duration;

use crate::control::ctl::{Netmask, SvcKey};
use uvs_sched::FwdMethod;

/// keepalived's `delay_loop` default.
pub const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);
/// keepalived's `connect_timeout` default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// keepalived's `retry` default: one retry…
pub const DEFAULT_RETRY: u32 = 1;
/// …after one second.
pub const DEFAULT_DELAY_BEFORE_RETRY: Duration = Duration::from_secs(1);

/// Where a block starts, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    /// The file (the main one or an included one).
    pub file: String,
    /// 1-based line.
    pub line: usize,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The virtual servers of a keepalived.conf, in file order, and what the
/// parser warned about (sections and keywords uvs does not run).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KaConfig {
    pub services: Vec<VirtualServer>,
    /// `file:line: text`, in file order.
    pub warnings: Vec<String>,
}

/// One `virtual_server` (a `virtual_server group` yields one per member).
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualServer {
    pub key: SvcKey,
    pub at: At,
    /// `lb_algo` (`lvs_sched`); `wlc`, ipvsadm's default, when missing.
    pub sched: String,
    /// `lb_kind` (`lvs_method`): NAT, DR, TUN.
    pub fwd: FwdMethod,
    /// `persistence_timeout` seconds.
    pub persistent: Option<u32>,
    /// `persistence_granularity`.
    pub netmask: Option<Netmask>,
    /// `ops`.
    pub ops: bool,
    /// `quorum` (default 1): the live weight the service needs.
    pub quorum: u32,
    /// `hysteresis` (default 0) around `quorum`.
    pub hysteresis: u32,
    /// `sorry_server IP PORT`: in the table instead of the real servers
    /// while the quorum is lost.
    pub sorry: Option<(IpAddr, u16)>,
    /// `sorry_server_inhibit`: the sorry server stays at weight 0 when not
    /// needed instead of being removed.
    pub sorry_inhibit: bool,
    pub real: Vec<RealServer>,
}

/// One `real_server`.
#[derive(Debug, Clone, PartialEq)]
pub struct RealServer {
    pub addr: IpAddr,
    pub port: u16,
    pub at: At,
    /// `weight` (default 1).
    pub weight: u32,
    /// `inhibit_on_failure`: weight 0 on failure instead of removal.
    pub inhibit: bool,
    /// `uthreshold` / `lthreshold`.
    pub u_threshold: u32,
    pub l_threshold: u32,
    pub checks: Vec<Check>,
}

/// One checker of a real server.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub kind: CheckKind,
    pub at: At,
    /// `connect_ip` (default: the real server's address).
    pub connect_ip: Option<IpAddr>,
    /// `connect_port` (default: the real server's port).
    pub connect_port: Option<u16>,
    /// `connect_timeout` (HTTP: the whole exchange; MISC: `misc_timeout`).
    pub timeout: Duration,
    /// `retry` (`nb_get_retry`): failed probes tolerated on a live server.
    pub retry: u32,
    /// `delay_before_retry`.
    pub delay_before_retry: Duration,
    /// `delay_loop`: time between probes.
    pub delay_loop: Duration,
}

/// What a checker probes.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// `TCP_CHECK`: a connection is accepted within the timeout.
    Tcp,
    /// `HTTP_GET`: every `url` answers with an accepted status (and body
    /// digest, if given).
    Http(Vec<Url>),
    /// `MISC_CHECK`: the command (run by `/bin/sh -c`) exits 0 (or 2..255
    /// with `misc_dynamic`, which sets the weight to code − 2).
    Misc { command: String, dynamic: bool },
    /// `UDP_CHECK`: the datagram draws no ICMP error (and, with
    /// `require_reply`, an answer starting with the given bytes).
    Udp {
        payload: Vec<u8>,
        require_reply: Option<Vec<u8>>,
    },
}

/// One `url` of an `HTTP_GET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub path: String,
    /// Accepted status ranges (inclusive); empty = 200..=299.
    pub status: Vec<(u16, u16)>,
    /// `digest`: MD5 of the body, lower-case hex.
    pub digest: Option<String>,
}

impl Url {
    /// Whether `code` is an accepted status.
    pub fn accepts(&self, code: u16) -> bool {
        if self.status.is_empty() {
            return (200..=299).contains(&code);
        }
        self.status
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&code))
    }
}
