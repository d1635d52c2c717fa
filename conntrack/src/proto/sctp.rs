//! SCTP association states as IPVS tracks them (`ip_vs_proto_sctp.c`
//! behaviour), as a `const` table indexed by direction, chunk event and
//! state.
//!
//! The engine passes the type of the packet's first chunk; when that chunk is
//! a COOKIE ECHO or COOKIE ACK bundled with a following ABORT, the engine
//! passes ABORT (the kernel looks at the second chunk in that case only).
//! States are those seen at the real server; INIT1 and REJECTED exist to give
//! dropped or refused INITs a short timeout.

/// SCTP association state (`IP_VS_SCTP_S_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SctpState {
    /// Nothing seen.
    None = 0,
    /// First client INIT sent, no INIT ACK yet.
    Init1 = 1,
    /// A repeated client INIT.
    Init = 2,
    /// Server's INIT ACK sent, waiting for COOKIE ECHO.
    CookieSent = 3,
    /// Client's COOKIE ECHO sent, waiting for COOKIE ACK.
    CookieReplied = 4,
    /// Server-initiated: server's INIT sent.
    CookieWait = 5,
    /// Server-initiated: client's INIT ACK sent.
    Cookie = 6,
    /// Server-initiated: server's COOKIE ECHO sent.
    CookieEchoed = 7,
    /// Association up; the only active state.
    Established = 8,
    /// SHUTDOWN sent by the server.
    ShutdownSent = 9,
    /// SHUTDOWN sent by the client.
    ShutdownReceived = 10,
    /// SHUTDOWN ACK sent.
    ShutdownAckSent = 11,
    /// INIT answered with ABORT.
    Rejected = 12,
    /// Closed.
    Closed = 13,
}

/// Number of SCTP states.
pub const SCTP_STATES: usize = 14;

/// Every state in table order.
pub const ALL_SCTP_STATES: [SctpState; SCTP_STATES] = [
    SctpState::None,
    SctpState::Init1,
    SctpState::Init,
    SctpState::CookieSent,
    SctpState::CookieReplied,
    SctpState::CookieWait,
    SctpState::Cookie,
    SctpState::CookieEchoed,
    SctpState::Established,
    SctpState::ShutdownSent,
    SctpState::ShutdownReceived,
    SctpState::ShutdownAckSent,
    SctpState::Rejected,
    SctpState::Closed,
];

impl SctpState {
    /// The name `ipvsadm -L -c` prints.
    pub const fn name(self) -> &'static str {
        match self {
            SctpState::None => "NONE",
            SctpState::Init1 => "INIT1",
            SctpState::Init => "INIT",
            SctpState::CookieSent => "C-SENT",
            SctpState::CookieReplied => "C-REPLIED",
            SctpState::CookieWait => "C-WAIT",
            SctpState::Cookie => "COOKIE",
            SctpState::CookieEchoed => "C-ECHOED",
            SctpState::Established => "ESTABLISHED",
            SctpState::ShutdownSent => "S-SENT",
            SctpState::ShutdownReceived => "S-RECEIVED",
            SctpState::ShutdownAckSent => "S-ACK-SENT",
            SctpState::Rejected => "REJECTED",
            SctpState::Closed => "CLOSED",
        }
    }

    /// Looks a state up by its printed name, case-insensitively.
    pub fn from_name(s: &str) -> Option<Self> {
        ALL_SCTP_STATES
            .iter()
            .copied()
            .find(|st| st.name().eq_ignore_ascii_case(s))
    }

    pub(crate) const fn from_u8(v: u8) -> Self {
        if (v as usize) < SCTP_STATES {
            ALL_SCTP_STATES[v as usize]
        } else {
            SctpState::Closed
        }
    }

    /// Counted in ActiveConn (only ESTABLISHED, as in the kernel).
    pub const fn is_active(self) -> bool {
        matches!(self, SctpState::Established)
    }

    /// Default timeout in milliseconds (kernel defaults: max RTO 61 s for
    /// the handshake and shutdown states).
    pub const fn default_timeout_ms(self) -> u32 {
        const S: u32 = 1000;
        match self {
            SctpState::None => 2 * S,
            SctpState::Init1 | SctpState::Rejected => 4 * S,
            SctpState::Established => 15 * 60 * S,
            _ => 61 * S,
        }
    }
}

/// Chunk event (`IP_VS_SCTP_*` event index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SctpEvent {
    /// DATA and every chunk without its own row (SACK, HEARTBEAT, ECN…).
    Data = 0,
    /// INIT.
    Init = 1,
    /// INIT ACK.
    InitAck = 2,
    /// COOKIE ECHO.
    CookieEcho = 3,
    /// COOKIE ACK.
    CookieAck = 4,
    /// SHUTDOWN.
    Shutdown = 5,
    /// SHUTDOWN ACK.
    ShutdownAck = 6,
    /// SHUTDOWN COMPLETE.
    ShutdownComplete = 7,
    /// ERROR.
    Error = 8,
    /// ABORT.
    Abort = 9,
}

/// Every event in table order.
pub const ALL_SCTP_EVENTS: [SctpEvent; 10] = [
    SctpEvent::Data,
    SctpEvent::Init,
    SctpEvent::InitAck,
    SctpEvent::CookieEcho,
    SctpEvent::CookieAck,
    SctpEvent::Shutdown,
    SctpEvent::ShutdownAck,
    SctpEvent::ShutdownComplete,
    SctpEvent::Error,
    SctpEvent::Abort,
];

/// SCTP chunk type numbers (RFC 9260).
pub mod chunk {
    /// DATA.
    pub const DATA: u8 = 0;
    /// INIT.
    pub const INIT: u8 = 1;
    /// INIT ACK.
    pub const INIT_ACK: u8 = 2;
    /// SACK.
    pub const SACK: u8 = 3;
    /// HEARTBEAT.
    pub const HEARTBEAT: u8 = 4;
    /// HEARTBEAT ACK.
    pub const HEARTBEAT_ACK: u8 = 5;
    /// ABORT.
    pub const ABORT: u8 = 6;
    /// SHUTDOWN.
    pub const SHUTDOWN: u8 = 7;
    /// SHUTDOWN ACK.
    pub const SHUTDOWN_ACK: u8 = 8;
    /// ERROR.
    pub const ERROR: u8 = 9;
    /// COOKIE ECHO.
    pub const COOKIE_ECHO: u8 = 10;
    /// COOKIE ACK.
    pub const COOKIE_ACK: u8 = 11;
    /// SHUTDOWN COMPLETE.
    pub const SHUTDOWN_COMPLETE: u8 = 14;
}

impl SctpEvent {
    /// Maps a chunk type to its event; unknown types count as DATA.
    pub const fn from_chunk(t: u8) -> Self {
        match t {
            chunk::INIT => SctpEvent::Init,
            chunk::INIT_ACK => SctpEvent::InitAck,
            chunk::ABORT => SctpEvent::Abort,
            chunk::SHUTDOWN => SctpEvent::Shutdown,
            chunk::SHUTDOWN_ACK => SctpEvent::ShutdownAck,
            chunk::ERROR => SctpEvent::Error,
            chunk::COOKIE_ECHO => SctpEvent::CookieEcho,
            chunk::COOKIE_ACK => SctpEvent::CookieAck,
            chunk::SHUTDOWN_COMPLETE => SctpEvent::ShutdownComplete,
            _ => SctpEvent::Data,
        }
    }
}

use SctpState::{
    Closed as CL, Cookie as CO, CookieEchoed as CE, CookieReplied as CR, CookieSent as CS,
    CookieWait as CW, Established as ES, Init as IN, Init1 as I1, Rejected as RJ,
    ShutdownAckSent as SA, ShutdownReceived as SR, ShutdownSent as SS,
};

/// `SCTP_TABLE[dir][event][state]` with dir 0 INPUT, 1 OUTPUT, 2 INPUT_ONLY
/// (same direction indices as [`crate::proto::tcp::TcpDir`]). Columns:
/// NO I1 IN CS CR CW CO CE ES SS SR SA RJ CL.
pub const SCTP_TABLE: [[[SctpState; SCTP_STATES]; 10]; 3] = [
    // INPUT
    [
        /* data */ [ES, I1, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* init */ [I1, IN, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, IN, IN],
        /* i_ak */ [CW, CW, CW, CS, CR, CO, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* c_ec */ [CR, IN, IN, CR, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* c_ak */ [ES, I1, IN, CS, CR, CW, CO, ES, ES, SS, SR, SA, RJ, CL],
        /* shut */ [SR, I1, IN, CS, CR, CW, CO, CE, SR, SS, SR, SA, RJ, CL],
        /* s_ak */ [CL, IN, IN, CS, CR, CW, CO, CE, ES, CL, SR, CL, RJ, CL],
        /* s_co */ [CL, CL, CL, CS, CR, CW, CO, CE, ES, SS, SR, CL, RJ, CL],
        /* err  */ [CL, I1, IN, CS, CR, CW, CO, CL, ES, SS, SR, SA, RJ, CL],
        /* abrt */ [CL, CL, CL, CL, CL, RJ, CL, CL, CL, CL, CL, CL, CL, CL],
    ],
    // OUTPUT
    [
        /* data */ [ES, I1, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* init */ [CW, CW, CW, CW, CW, CW, CW, CW, ES, CW, CW, CW, CW, CW],
        /* i_ak */ [CS, CS, CS, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* c_ec */ [CE, CE, CE, CE, CE, CE, CE, CE, ES, SS, SR, SA, RJ, CL],
        /* c_ak */ [ES, ES, ES, ES, ES, ES, ES, ES, ES, SS, SR, SA, RJ, CL],
        /* shut */ [SS, SS, SS, SS, SS, SS, SS, SS, SS, SS, SR, SA, RJ, CL],
        /* s_ak */ [SA, SA, SA, SA, SA, CW, CO, CE, ES, SA, SA, SA, RJ, CL],
        /* s_co */ [CL, I1, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* err  */ [CL, CL, CL, CL, CL, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* abrt */ [CL, RJ, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL],
    ],
    // INPUT_ONLY
    [
        /* data */ [ES, I1, IN, CS, CR, ES, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* init */ [I1, IN, IN, IN, IN, IN, CO, CE, ES, SS, SR, SA, IN, IN],
        /* i_ak */ [CE, CE, CE, CE, CE, CE, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* c_ec */ [ES, ES, ES, ES, ES, ES, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* c_ak */ [ES, I1, IN, ES, ES, CW, ES, ES, ES, SS, SR, SA, RJ, CL],
        /* shut */ [SR, I1, IN, CS, CR, CW, CO, CE, SR, SS, SR, SA, RJ, CL],
        /* s_ak */ [CL, IN, IN, CS, CR, CW, CO, CE, CL, CL, SR, CL, RJ, CL],
        /* s_co */ [CL, CL, CL, CL, CL, CW, CO, CE, ES, SS, CL, CL, RJ, CL],
        /* err  */ [CL, I1, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* abrt */ [CL, CL, CL, CL, CL, RJ, CL, CL, CL, CL, CL, CL, CL, CL],
    ],
];

/// The next state for a packet whose (first) chunk has type `chunk_type`.
/// `dir` uses the TCP direction numbering (0 in, 1 out, 2 input-only).
pub const fn next_state(dir: usize, state: SctpState, chunk_type: u8) -> SctpState {
    SCTP_TABLE[dir][SctpEvent::from_chunk(chunk_type) as usize][state as usize]
}
