//! uvs-sync: the wire format of IPVS connection synchronisation, protocol
//! version 1 — what `ipvsadm --start-daemon master|backup` sends and
//! receives — with no I/O.
//!
//! The layout is the Linux kernel's (`ip_vs_sync.c`), so a uvs master can
//! feed a kernel backup and the other way round:
//!
//! * A message (one UDP datagram, by default to 224.0.0.81:8848 with TTL 1)
//!   starts with an 8-byte header: a zero byte (so version-0 receivers,
//!   which read it as a connection count, drop it), the sync ID, the
//!   message size (big-endian, header included), the connection count, the
//!   version (1) and two zero bytes.
//! * Then the connections, each starting on a 4-byte boundary of the
//!   message (the padding is counted in the message size but not in the
//!   connection's own size): type (bit 0 set for IPv6), protocol,
//!   version (high 4 bits, 0) and size (low 12 bits) of the entry, 32-bit
//!   flags, 16-bit state, client/virtual/destination ports, firewall mark,
//!   timeout in seconds, then client, virtual and destination addresses
//!   (4 or 16 bytes each): 36 bytes for IPv4, 72 for IPv6.
//! * Then options, each a type byte, a length byte and the data: TCP
//!   sequence adjustment data (type 1, 24 bytes), persistence-engine data
//!   (type 2, up to 255 bytes) and its engine's name (type 3, up to 16).
//!   An option type with bit 6 set is optional: a receiver that does not
//!   know it skips it; an unknown mandatory one drops that connection.
//!
//! [`MessageWriter`] builds messages up to a maximum length
//! (`--sync-maxlen`); [`decode`] checks a received datagram as a kernel
//! backup does — a bad header or a malformed entry drops the rest of the
//! datagram, an entry the receiver cannot use (unknown protocol or state,
//! unknown mandatory option) drops only that entry — and says which.
//!
//! Protocol states and flags travel as the kernel's numbers
//! ([`tcp_state`], [`flags`]); mapping them to and from uvs's connection
//! table is the caller's business.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The default multicast group, 224.0.0.81.
pub const DEFAULT_GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// The default UDP port (a master with several sync threads uses port + id).
pub const DEFAULT_PORT: u16 = 8848;
/// The default multicast TTL.
pub const DEFAULT_TTL: u8 = 1;
/// The protocol version uvs speaks.
pub const VERSION: u8 = 1;
/// Message header length.
pub const HEADER_LEN: usize = 8;
/// Length of an IPv4 connection entry without options.
pub const CONN_V4_LEN: usize = 36;
/// Length of an IPv6 connection entry without options.
pub const CONN_V6_LEN: usize = 72;
/// Length of the sequence option's data (two `ip_vs_seq`).
pub const SEQ_DATA_LEN: usize = 24;
/// Longest persistence-engine data.
pub const PE_DATA_MAX: usize = 255;
/// Longest persistence-engine name.
pub const PE_NAME_MAX: usize = 16;
/// Largest connection entry the 12-bit size field can describe.
pub const CONN_MAX_LEN: usize = 0x0fff;

/// Option types.
pub mod opt {
    /// TCP sequence adjustment data.
    pub const SEQ_DATA: u8 = 1;
    /// Persistence-engine data (for example a SIP Call-ID).
    pub const PE_DATA: u8 = 2;
    /// Persistence-engine name.
    pub const PE_NAME: u8 = 3;
    /// Set in an option type: the option may be skipped by a receiver that
    /// does not know it.
    pub const F_OPTIONAL: u8 = 1 << 6;
}

/// The kernel's connection flags (`IP_VS_CONN_F_*`) as they travel.
pub mod flags {
    /// Forwarding method mask.
    pub const FWD_MASK: u32 = 0x0007;
    /// NAT (masquerading).
    pub const MASQ: u32 = 0x0000;
    /// Local node.
    pub const LOCALNODE: u32 = 0x0001;
    /// IP tunnelling.
    pub const TUNNEL: u32 = 0x0002;
    /// Direct routing.
    pub const DROUTE: u32 = 0x0003;
    /// Cache bypass.
    pub const BYPASS: u32 = 0x0004;
    /// The entry was created by sync (set by every receiver).
    pub const SYNC: u32 = 0x0020;
    /// Hashed in the table (never sent).
    pub const HASHED: u32 = 0x0040;
    /// No output packets.
    pub const NOOUTPUT: u32 = 0x0080;
    /// Not established (counts as inactive).
    pub const INACTIVE: u32 = 0x0100;
    /// Output sequence adjustment.
    pub const OUT_SEQ: u32 = 0x0200;
    /// Input sequence adjustment.
    pub const IN_SEQ: u32 = 0x0400;
    /// Both sequence adjustments.
    pub const SEQ_MASK: u32 = 0x0600;
    /// Client port not known yet (persistence template with port 0).
    pub const NO_CPORT: u32 = 0x0800;
    /// A persistence template, not a connection.
    pub const TEMPLATE: u32 = 0x1000;
    /// One-packet scheduling (never synced).
    pub const ONE_PACKET: u32 = 0x2000;
    /// The bits a backup accepts from a message.
    pub const BACKUP_MASK: u32 = FWD_MASK | NOOUTPUT | INACTIVE | SEQ_MASK | NO_CPORT | TEMPLATE;
    /// The bits a backup updates on an entry it already has.
    pub const BACKUP_UPD_MASK: u32 = INACTIVE | SEQ_MASK;
}

/// The kernel's TCP state numbers (`IP_VS_TCP_S_*`).
pub mod tcp_state {
    /// No state.
    pub const NONE: u16 = 0;
    /// Established.
    pub const ESTABLISHED: u16 = 1;
    /// SYN sent.
    pub const SYN_SENT: u16 = 2;
    /// SYN received.
    pub const SYN_RECV: u16 = 3;
    /// FIN wait.
    pub const FIN_WAIT: u16 = 4;
    /// TIME_WAIT.
    pub const TIME_WAIT: u16 = 5;
    /// Closed.
    pub const CLOSE: u16 = 6;
    /// CLOSE_WAIT.
    pub const CLOSE_WAIT: u16 = 7;
    /// LAST_ACK.
    pub const LAST_ACK: u16 = 8;
    /// LISTEN.
    pub const LISTEN: u16 = 9;
    /// SYN+ACK seen.
    pub const SYNACK: u16 = 10;
    /// Number of TCP states.
    pub const COUNT: u16 = 11;
}

/// The kernel's SCTP state numbers (`IP_VS_SCTP_S_*`).
pub mod sctp_state {
    /// No state.
    pub const NONE: u16 = 0;
    /// INIT sent by the client.
    pub const INIT1: u16 = 1;
    /// INIT seen.
    pub const INIT: u16 = 2;
    /// COOKIE_ECHO sent.
    pub const COOKIE_SENT: u16 = 3;
    /// COOKIE_ECHO replied.
    pub const COOKIE_REPLIED: u16 = 4;
    /// COOKIE_WAIT.
    pub const COOKIE_WAIT: u16 = 5;
    /// COOKIE seen.
    pub const COOKIE: u16 = 6;
    /// COOKIE_ECHOED.
    pub const COOKIE_ECHOED: u16 = 7;
    /// Established.
    pub const ESTABLISHED: u16 = 8;
    /// SHUTDOWN sent.
    pub const SHUTDOWN_SENT: u16 = 9;
    /// SHUTDOWN received.
    pub const SHUTDOWN_RECEIVED: u16 = 10;
    /// SHUTDOWN_ACK sent.
    pub const SHUTDOWN_ACK_SENT: u16 = 11;
    /// REJECTED.
    pub const REJECTED: u16 = 12;
    /// Closed.
    pub const CLOSED: u16 = 13;
    /// Number of SCTP states.
    pub const COUNT: u16 = 14;
}

/// IP protocol numbers a sync entry may carry.
pub mod proto {
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// SCTP.
    pub const SCTP: u8 = 132;
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// One TCP sequence-adjustment record (`struct ip_vs_seq`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seq {
    /// Where the adjustment starts.
    pub init_seq: u32,
    /// The current delta.
    pub delta: u32,
    /// The delta before the last change.
    pub previous_delta: u32,
}

/// Persistence-engine data of a template (for example `sip` and a Call-ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeData {
    /// The engine's name (≤ 16 bytes); the kernel requires it with data.
    pub name: Vec<u8>,
    /// The data (1–255 bytes).
    pub data: Vec<u8>,
}

/// One connection (or persistence template) as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    /// IP protocol number.
    pub protocol: u8,
    /// `IP_VS_CONN_F_*` flags ([`flags`]); HASHED is never sent.
    pub flags: u32,
    /// The kernel's state number for the protocol ([`tcp_state`], …); 0
    /// for templates.
    pub state: u16,
    /// Client address (IPv4 and IPv6 entries keep all three addresses in
    /// one family).
    pub caddr: IpAddr,
    /// Client port.
    pub cport: u16,
    /// Virtual address.
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address.
    pub daddr: IpAddr,
    /// Real server port.
    pub dport: u16,
    /// Firewall mark of the service (0 if none).
    pub fwmark: u32,
    /// Remaining timeout in seconds (0: the receiver uses its default for
    /// the state).
    pub timeout: u32,
    /// Input and output sequence adjustment.
    pub seq: Option<(Seq, Seq)>,
    /// Persistence-engine data.
    pub pe: Option<PeData>,
}

impl Conn {
    /// IPv6 entry?
    pub fn is_v6(&self) -> bool {
        self.caddr.is_ipv6()
    }

    /// The entry's encoded length, without the padding before it.
    pub fn encoded_len(&self) -> usize {
        let mut n = if self.is_v6() {
            CONN_V6_LEN
        } else {
            CONN_V4_LEN
        };
        if self.seq.is_some() {
            n += 2 + SEQ_DATA_LEN;
        }
        if let Some(pe) = &self.pe {
            n += 2 + pe.data.len() + 2 + pe.name.len();
        }
        n
    }

    fn check(&self) -> Result<(), EncodeError> {
        let fam = |a: &IpAddr| a.is_ipv6();
        if fam(&self.caddr) != fam(&self.vaddr) || fam(&self.caddr) != fam(&self.daddr) {
            return Err(EncodeError::MixedFamilies);
        }
        if let Some(pe) = &self.pe {
            if pe.data.is_empty() || pe.data.len() > PE_DATA_MAX {
                return Err(EncodeError::PeData(pe.data.len()));
            }
            if pe.name.is_empty() || pe.name.len() > PE_NAME_MAX {
                return Err(EncodeError::PeName(pe.name.len()));
            }
        }
        if self.flags & flags::ONE_PACKET != 0 {
            return Err(EncodeError::OnePacket);
        }
        Ok(())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let len = self.encoded_len();
        out.push(u8::from(self.is_v6()));
        out.push(self.protocol);
        // Version 0 of the entry format in the high 4 bits.
        out.extend_from_slice(&((len as u16) & CONN_MAX_LEN as u16).to_be_bytes());
        out.extend_from_slice(&(self.flags & !flags::HASHED).to_be_bytes());
        out.extend_from_slice(&self.state.to_be_bytes());
        out.extend_from_slice(&self.cport.to_be_bytes());
        out.extend_from_slice(&self.vport.to_be_bytes());
        out.extend_from_slice(&self.dport.to_be_bytes());
        out.extend_from_slice(&self.fwmark.to_be_bytes());
        out.extend_from_slice(&self.timeout.to_be_bytes());
        for a in [self.caddr, self.vaddr, self.daddr] {
            match a {
                IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
            }
        }
        if let Some((i, o)) = &self.seq {
            out.push(opt::SEQ_DATA);
            out.push(SEQ_DATA_LEN as u8);
            for s in [i, o] {
                out.extend_from_slice(&s.init_seq.to_be_bytes());
                out.extend_from_slice(&s.delta.to_be_bytes());
                out.extend_from_slice(&s.previous_delta.to_be_bytes());
            }
        }
        if let Some(pe) = &self.pe {
            out.push(opt::PE_DATA);
            out.push(pe.data.len() as u8);
            out.extend_from_slice(&pe.data);
            out.push(opt::PE_NAME);
            out.push(pe.name.len() as u8);
            out.extend_from_slice(&pe.name);
        }
    }
}

/// Why an entry cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Client, virtual and real server addresses must share a family.
    #[error("a sync entry's addresses must all be IPv4 or all IPv6")]
    MixedFamilies,
    /// Persistence-engine data length out of 1..=255.
    #[error("persistence-engine data of {0} bytes (1 to 255 can be sent)")]
    PeData(usize),
    /// Persistence-engine name length out of 1..=16.
    #[error("persistence-engine name of {0} bytes (1 to 16 can be sent)")]
    PeName(usize),
    /// One-packet entries are never synced.
    #[error("one-packet entries are not synced")]
    OnePacket,
    /// The entry does not fit even in an empty message.
    #[error("an entry of {len} bytes does not fit a message of at most {maxlen}")]
    TooLong {
        /// The entry's length.
        len: usize,
        /// The message limit.
        maxlen: usize,
    },
}

/// Builds version-1 messages of at most `maxlen` bytes (the sync daemon's
/// `--sync-maxlen`, the kernel's default being the interface MTU minus the
/// IP and UDP headers), as the kernel's master does: entries are appended
/// while they fit, each 4-byte aligned; a full message is handed out and a
/// new one begun.
#[derive(Debug)]
pub struct MessageWriter {
    syncid: u8,
    maxlen: usize,
    buf: Vec<u8>,
    count: u8,
}

impl MessageWriter {
    /// A writer for `syncid`; `maxlen` is clamped to what a 16-bit size and
    /// a header plus one IPv4 entry allow.
    pub fn new(syncid: u8, maxlen: usize) -> MessageWriter {
        let maxlen = maxlen.clamp(HEADER_LEN + CONN_V4_LEN, u16::MAX as usize);
        let mut w = MessageWriter {
            syncid,
            maxlen,
            buf: Vec::with_capacity(maxlen),
            count: 0,
        };
        w.begin();
        w
    }

    fn begin(&mut self) {
        self.buf.clear();
        self.buf
            .extend_from_slice(&[0, self.syncid, 0, 0, 0, VERSION, 0, 0]);
        self.count = 0;
    }

    /// Entries in the message being built.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// No entry yet?
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends `c`. If it does not fit (by length, or because the 8-bit
    /// count is full), the message built so far is returned and `c` starts
    /// the next one.
    pub fn push(&mut self, c: &Conn) -> Result<Option<Vec<u8>>, EncodeError> {
        c.check()?;
        let len = c.encoded_len();
        if HEADER_LEN + len > self.maxlen || len > CONN_MAX_LEN {
            return Err(EncodeError::TooLong {
                len,
                maxlen: self.maxlen,
            });
        }
        let pad = (4 - self.buf.len() % 4) % 4;
        let mut done = None;
        if self.buf.len() + pad + len > self.maxlen || self.count == u8::MAX {
            done = self.finish();
        }
        let pad = (4 - self.buf.len() % 4) % 4;
        self.buf.resize(self.buf.len() + pad, 0);
        c.encode(&mut self.buf);
        self.count += 1;
        Ok(done)
    }

    /// The message built so far (None if it holds no entry); the writer
    /// starts a new one.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        if self.count == 0 {
            return None;
        }
        let size = self.buf.len() as u16;
        self.buf[2..4].copy_from_slice(&size.to_be_bytes());
        self.buf[4] = self.count;
        let out = std::mem::replace(&mut self.buf, Vec::with_capacity(self.maxlen));
        self.begin();
        Some(out)
    }
}

/// Why a received datagram was dropped from some point on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Shorter than a header.
    #[error("sync message of {0} bytes is shorter than its header")]
    Short(usize),
    /// The header's size is not the datagram's.
    #[error("sync message says {said} bytes but is {len}")]
    Size {
        /// The size in the header.
        said: usize,
        /// The datagram's length.
        len: usize,
    },
    /// A version-0 (or unknown) message.
    #[error(
        "sync message is not protocol version 1 (a version-0 master? set its sync_version to 1)"
    )]
    Version,
    /// Another sync ID.
    #[error("sync message for syncid {0}, not ours")]
    SyncId(u8),
    /// An entry runs past the datagram.
    #[error("sync entry {0} runs past the end of the message")]
    Truncated(usize),
    /// An entry has an unknown format version.
    #[error("sync entry {index} has format version {version}")]
    EntryVersion {
        /// Which entry.
        index: usize,
        /// The version found.
        version: u8,
    },
    /// An entry is malformed (unknown type, bad option length, duplicated
    /// option, …).
    #[error("sync entry {index} is malformed: {why}")]
    Malformed {
        /// Which entry.
        index: usize,
        /// What is wrong.
        why: &'static str,
    },
}

/// Why one entry of a good message was skipped (the rest still applies).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// A protocol the receiver does not balance.
    #[error("protocol {0} is not synced")]
    Protocol(u8),
    /// A state number beyond the protocol's states.
    #[error("state {state} is not a {proto} state")]
    State {
        /// The protocol's name.
        proto: &'static str,
        /// The state number.
        state: u16,
    },
    /// An option the receiver must understand but does not.
    #[error("unknown mandatory option {0}")]
    MandatoryOption(u8),
    /// Persistence-engine data without the engine's name.
    #[error("persistence-engine data without its name")]
    PeWithoutName,
}

/// A decoded datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The sender's sync ID.
    pub syncid: u8,
    /// Entries usable as they are: flags masked to what a backup accepts
    /// (`flags::BACKUP_MASK`) plus `flags::SYNC`; a template's state is 0.
    pub conns: Vec<Conn>,
    /// Entries skipped, with their index and why.
    pub skipped: Vec<(usize, EntryError)>,
    /// Set when the datagram was dropped from some entry on (the entries
    /// before it are in `conns`).
    pub dropped: Option<MessageError>,
}

/// Decodes a received datagram as a kernel backup does. `want_syncid` 0
/// accepts every sync ID. A header error is `Err`; an error inside the
/// entries keeps what came before it ([`Decoded::dropped`]).
pub fn decode(buf: &[u8], want_syncid: u8) -> Result<Decoded, MessageError> {
    if buf.len() < 4 {
        return Err(MessageError::Short(buf.len()));
    }
    let said = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    if said != buf.len() {
        return Err(MessageError::Size {
            said,
            len: buf.len(),
        });
    }
    if want_syncid != 0 && buf[1] != want_syncid {
        return Err(MessageError::SyncId(buf[1]));
    }
    if buf.len() < HEADER_LEN || buf[0] != 0 || buf[5] != VERSION || buf[6] != 0 || buf[7] != 0 {
        return Err(MessageError::Version);
    }
    let mut out = Decoded {
        syncid: buf[1],
        conns: Vec::new(),
        skipped: Vec::new(),
        dropped: None,
    };
    let mut at = HEADER_LEN;
    for index in 0..buf[4] as usize {
        match entry(buf, at, index) {
            Ok((next, Ok(c))) => {
                out.conns.push(c);
                at = next;
            }
            Ok((next, Err(e))) => {
                out.skipped.push((index, e));
                at = next;
            }
            Err(e) => {
                out.dropped = Some(e);
                break;
            }
        }
    }
    Ok(out)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Fills an option's slot; Err if the option came before.
fn once<'a>(slot: &mut Option<&'a [u8]>, data: &'a [u8]) -> Result<(), ()> {
    match slot.replace(data) {
        None => Ok(()),
        Some(_) => Err(()),
    }
}

type EntryResult = Result<(usize, Result<Conn, EntryError>), MessageError>;

/// Decodes the entry at `at`; returns where the next one starts.
fn entry(buf: &[u8], at: usize, index: usize) -> EntryResult {
    if at + CONN_V4_LEN > buf.len() {
        return Err(MessageError::Truncated(index));
    }
    let ver_size = be16(buf, at + 2);
    let size = (ver_size & CONN_MAX_LEN as u16) as usize;
    let end = at + size;
    if end > buf.len() {
        return Err(MessageError::Truncated(index));
    }
    if ver_size >> 12 != 0 {
        return Err(MessageError::EntryVersion {
            index,
            version: (ver_size >> 12) as u8,
        });
    }
    let malformed = |why| MessageError::Malformed { index, why };
    let v6 = match buf[at] {
        0 => false,
        t if t & 1 != 0 => true,
        _ => return Err(malformed("unknown entry type")),
    };
    let fixed = if v6 { CONN_V6_LEN } else { CONN_V4_LEN };
    if size < fixed {
        return Err(malformed("entry shorter than its addresses"));
    }
    let addr = |i: usize| -> IpAddr {
        let a = at + 24 + i * if v6 { 16 } else { 4 };
        if v6 {
            let mut o = [0u8; 16];
            o.copy_from_slice(&buf[a..a + 16]);
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            IpAddr::V4(Ipv4Addr::new(buf[a], buf[a + 1], buf[a + 2], buf[a + 3]))
        }
    };
    let mut c = Conn {
        protocol: buf[at + 1],
        flags: be32(buf, at + 4),
        state: be16(buf, at + 8),
        cport: be16(buf, at + 10),
        vport: be16(buf, at + 12),
        dport: be16(buf, at + 14),
        fwmark: be32(buf, at + 16),
        timeout: be32(buf, at + 20),
        caddr: addr(0),
        vaddr: addr(1),
        daddr: addr(2),
        seq: None,
        pe: None,
    };
    let next = at + ((size + 3) & !3);
    let mut p = at + fixed;
    let mut pe_data: Option<&[u8]> = None;
    let mut pe_name: Option<&[u8]> = None;
    let mut unknown = None;
    while p < end {
        if p + 2 > end {
            return Err(malformed("option header past the entry"));
        }
        let (ty, len) = (buf[p], buf[p + 1] as usize);
        p += 2;
        if len == 0 || p + len > end {
            return Err(malformed("option length"));
        }
        let data = &buf[p..p + len];
        match ty & !opt::F_OPTIONAL {
            opt::SEQ_DATA => {
                if len != SEQ_DATA_LEN {
                    return Err(malformed("sequence option length"));
                }
                if c.seq.is_some() {
                    return Err(malformed("sequence option twice"));
                }
                let s = |o: usize| Seq {
                    init_seq: be32(data, o),
                    delta: be32(data, o + 4),
                    previous_delta: be32(data, o + 8),
                };
                c.seq = Some((s(0), s(12)));
            }
            opt::PE_DATA => {
                once(&mut pe_data, data).map_err(|_| malformed("persistence data twice"))?
            }
            opt::PE_NAME => {
                if len > PE_NAME_MAX {
                    return Err(malformed("persistence-engine name too long"));
                }
                once(&mut pe_name, data).map_err(|_| malformed("persistence-engine name twice"))?;
            }
            other if ty & opt::F_OPTIONAL == 0 => {
                unknown.get_or_insert(other);
            }
            _ => {}
        }
        p += len;
    }
    if let Some(o) = unknown {
        return Ok((next, Err(EntryError::MandatoryOption(o))));
    }
    c.flags = (c.flags & flags::BACKUP_MASK) | flags::SYNC;
    if c.flags & flags::TEMPLATE != 0 {
        // The protocol of a template decides neither state nor timeout.
        c.state = 0;
    } else {
        let (name, count) = match c.protocol {
            proto::TCP => ("TCP", tcp_state::COUNT),
            proto::SCTP => ("SCTP", sctp_state::COUNT),
            proto::UDP => ("UDP", 1),
            proto::ICMP | proto::ICMPV6 => ("ICMP", 1),
            p => return Ok((next, Err(EntryError::Protocol(p)))),
        };
        if c.state >= count {
            return Ok((
                next,
                Err(EntryError::State {
                    proto: name,
                    state: c.state,
                }),
            ));
        }
    }
    match (pe_data, pe_name) {
        (Some(d), Some(n)) => {
            c.pe = Some(PeData {
                name: n.to_vec(),
                data: d.to_vec(),
            })
        }
        (Some(_), None) => return Ok((next, Err(EntryError::PeWithoutName))),
        _ => {}
    }
    Ok((next, Ok(c)))
}

#[cfg(test)]
mod tests;
