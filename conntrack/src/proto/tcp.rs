//! TCP connection states as IPVS tracks them (`ip_vs_proto_tcp.c`
//! behaviour), written as `const` transition tables.
//!
//! The director sees only part of a TCP conversation, so the states are
//! IPVS's own (not RFC 793's): NAT connections see both directions
//! ([`TcpDir::Input`] client→server, [`TcpDir::Output`] server→client);
//! DR/TUN connections only see the client's side ([`TcpDir::InputOnly`]).
//! Each packet is reduced to one event, chosen in the order
//! rst > syn > fin > ack; a segment with none of those flags moves the
//! connection to CLOSE (the kernel does the same).
//!
//! Two tables exist: the normal one and the `secure_tcp` one, which keeps a
//! connection in SYN_RECV until the server has answered (so spoofed SYNs and
//! bare ACK floods never reach ESTABLISHED's long timeout). Both are the
//! kernel's `tcp_states` and `tcp_states_dos`, cell for cell
//! (`tests/tcp_states.rs`).
//!
//! One rule on top of the tables (in `update.rs`): in both, a server's ACK
//! on a SYN_RECV or SYNACK entry establishes it. A server sends one to a
//! client that never confirmed the handshake when a second SYN with another
//! sequence number arrives (RFC 5961's challenge ACK), so every spoofed
//! SYN sent twice to a NAT service became ESTABLISHED (15 minutes). uvs
//! lets a server's packet establish an entry only once the client has sent
//! a bare ACK on it; a real handshake always has, so its transitions are
//! the kernel's.

/// TCP connection state (`IP_VS_TCP_S_*`; the discriminant is the index used
/// in the tables and the timeout array).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpState {
    /// No packet seen yet.
    None = 0,
    /// Handshake completed; the only state counted as active.
    Established = 1,
    /// The server side sent a SYN (seen in OUTPUT).
    SynSent = 2,
    /// The client sent a SYN.
    SynRecv = 3,
    /// A FIN was seen.
    FinWait = 4,
    /// Both FINs were seen.
    TimeWait = 5,
    /// Reset or closed.
    Close = 6,
    /// The client closed first.
    CloseWait = 7,
    /// Last ACK awaited.
    LastAck = 8,
    /// Listening (active FTP data; unused by uvs's packet path).
    Listen = 9,
    /// SYN+ACK seen under `secure_tcp`.
    SynAck = 10,
}

/// Number of TCP states.
pub const TCP_STATES: usize = 11;

/// Every state, in table order.
pub const ALL_TCP_STATES: [TcpState; TCP_STATES] = [
    TcpState::None,
    TcpState::Established,
    TcpState::SynSent,
    TcpState::SynRecv,
    TcpState::FinWait,
    TcpState::TimeWait,
    TcpState::Close,
    TcpState::CloseWait,
    TcpState::LastAck,
    TcpState::Listen,
    TcpState::SynAck,
];

impl TcpState {
    /// The name `ipvsadm -L -c` prints.
    pub const fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::SynAck => "SYNACK",
        }
    }

    /// Looks a state up by its printed name, case-insensitively (config and
    /// per-state timeout settings).
    pub fn from_name(s: &str) -> Option<Self> {
        ALL_TCP_STATES
            .iter()
            .copied()
            .find(|st| st.name().eq_ignore_ascii_case(s))
    }

    /// From the stored byte; out-of-range bytes (never written) read as CLOSE.
    pub(crate) const fn from_u8(v: u8) -> Self {
        if (v as usize) < TCP_STATES {
            ALL_TCP_STATES[v as usize]
        } else {
            TcpState::Close
        }
    }

    /// Counted in the destination's ActiveConn (the kernel counts only
    /// ESTABLISHED; every other state is InActConn).
    pub const fn is_active(self) -> bool {
        matches!(self, TcpState::Established)
    }

    /// Default timeout in milliseconds (kernel defaults).
    pub const fn default_timeout_ms(self) -> u32 {
        const S: u32 = 1000;
        match self {
            TcpState::None => 2 * S,
            TcpState::Established => 15 * 60 * S,
            TcpState::SynSent => 2 * 60 * S,
            TcpState::SynRecv => 60 * S,
            TcpState::FinWait => 2 * 60 * S,
            TcpState::TimeWait => 2 * 60 * S,
            TcpState::Close => 10 * S,
            TcpState::CloseWait => 60 * S,
            TcpState::LastAck => 30 * S,
            TcpState::Listen => 2 * 60 * S,
            TcpState::SynAck => 2 * 60 * S,
        }
    }
}

/// Which table column set a packet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpDir {
    /// Client → server through the director, replies also seen (NAT).
    Input = 0,
    /// Server → client (NAT replies).
    Output = 1,
    /// Client → server when replies bypass the director (DR, TUN).
    InputOnly = 2,
}

/// The event a segment represents, after rst > syn > fin > ack priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpEvent {
    /// SYN set (and RST clear).
    Syn = 0,
    /// FIN set (RST and SYN clear).
    Fin = 1,
    /// ACK only.
    Ack = 2,
    /// RST set.
    Rst = 3,
}

/// TCP header flag bits (byte 13 of the header).
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

impl TcpEvent {
    /// Reduces header flags to one event in the order rst > syn > fin > ack;
    /// `None` when none of those bits is set.
    pub const fn from_flags(f: u8) -> Option<Self> {
        if f & flags::RST != 0 {
            Some(TcpEvent::Rst)
        } else if f & flags::SYN != 0 {
            Some(TcpEvent::Syn)
        } else if f & flags::FIN != 0 {
            Some(TcpEvent::Fin)
        } else if f & flags::ACK != 0 {
            Some(TcpEvent::Ack)
        } else {
            None
        }
    }
}

use TcpState::{
    Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA, Listen as LI,
    SynAck as SA, SynRecv as SR, SynSent as SS, TimeWait as TW,
};

/// `TABLE[dir][event][state]` → next state. Columns in [`ALL_TCP_STATES`]
/// order: NO ES SS SR FW TW CL CW LA LI SA.
pub type TcpTable = [[[TcpState; TCP_STATES]; 4]; 3];

/// The normal transition table.
pub const TCP_TABLE: TcpTable = [
    // INPUT
    [
        /* syn */ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /* fin */ [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
        /* ack */ [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /* rst */ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
    ],
    // OUTPUT
    [
        /* syn */ [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
        /* fin */ [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        /* ack */ [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        /* rst */ [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    // INPUT_ONLY
    [
        /* syn */ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /* fin */ [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        /* ack */ [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /* rst */ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

/// The `secure_tcp` table: a client's ACK alone does not establish a NAT
/// connection (it stays SYN_RECV until the server's SYN+ACK moved it to
/// SYNACK), and DR/TUN SYNs start in SYNACK.
pub const TCP_TABLE_SECURE: TcpTable = [
    // INPUT
    [
        /* syn */ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SA],
        /* fin */ [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, SA],
        /* ack */ [ES, ES, SS, SR, FW, TW, CL, CW, CL, LI, SA],
        /* rst */ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
    // OUTPUT
    [
        /* syn */ [SS, ES, SS, SA, SS, SS, SS, SS, SS, LI, SA],
        /* fin */ [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        /* ack */ [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        /* rst */ [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    // INPUT_ONLY
    [
        /* syn */ [SA, ES, ES, SR, SA, SA, SA, SA, SA, SA, SA],
        /* fin */ [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        /* ack */ [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /* rst */ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

/// The next state for a segment with header flags `f`.
pub const fn next_state(table: &TcpTable, dir: TcpDir, state: TcpState, f: u8) -> TcpState {
    match TcpEvent::from_flags(f) {
        Some(ev) => table[dir as usize][ev as usize][state as usize],
        // No rst/syn/fin/ack: the kernel treats the segment as closing.
        None => TcpState::Close,
    }
}
