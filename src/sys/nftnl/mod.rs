//! A minimal nf_tables client over netlink: builds tables, sets, chains,
//! rules and set elements and applies them in atomic transactions, and
//! reads tables and set elements back, without running `nft` (no nftables
//! package needed).
//!
//! Contract:
//! * [`NftSock`] is one `AF_NETLINK`/`NETLINK_NETFILTER` socket, bound to
//!   the network namespace of the thread that called [`NftSock::open`]. A
//!   table created through it with [`NFT_TABLE_F_OWNER`] belongs to it:
//!   only this socket may change it, and the kernel deletes the table when
//!   the socket closes, however the process ends (SIGKILL included).
//! * [`NftSock::commit`] sends one [`Batch`] as one nfnetlink batch
//!   (`BATCH_BEGIN`, its messages, `BATCH_END`) in a single `send`, so the
//!   kernel applies all of it or none. Every message asks for an
//!   acknowledgement; the call returns when each one was answered, at the
//!   first error (named by what the failing message did, with the kernel's
//!   extended-ack text when it gives one), or after the 2 s receive
//!   timeout. Replies to an earlier, abandoned transaction are recognised
//!   by sequence number and skipped.
//! * Keys are given as the kernel stores them: for a concatenation, each
//!   field in network byte order, zero-padded to a multiple of 4 bytes
//!   (nf_tables' 32-bit registers) — see [`key`].
//!
//! Control-path code: it allocates and makes syscalls, once per change.

mod msg;

pub use msg::{reg, Base, Batch, Expr, Ingress, KeyType, MetaKey, SetRef, R1, RTN_LOCAL};

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use msg::align4;

/// Kernel ABI numbers (uapi `netlink.h`, `nfnetlink.h`, `nf_tables.h`).
mod abi {
    pub const NLMSG_HDRLEN: usize = 16;
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;
    pub const NLM_F_REQUEST: u16 = 0x001;
    pub const NLM_F_ACK: u16 = 0x004;
    pub const NLM_F_DUMP: u16 = 0x300;
    pub const NLM_F_CREATE: u16 = 0x400;
    pub const NLM_F_APPEND: u16 = 0x800;
    /// In an error message: the request's payload was left out.
    pub const NLM_F_CAPPED: u16 = 0x100;
    /// In an error message: extended-ack attributes follow.
    pub const NLM_F_ACK_TLVS: u16 = 0x200;
    pub const NLMSGERR_ATTR_MSG: u16 = 1;
    pub const NLA_F_NESTED: u16 = 0x8000;
    pub const NLA_TYPE_MASK: u16 = 0x3fff;
    pub const NETLINK_NETFILTER: i32 = 12;
    pub const NETLINK_CAP_ACK: i32 = 10;
    pub const NETLINK_EXT_ACK: i32 = 11;

    pub const NFNL_MSG_BATCH_BEGIN: u16 = 16;
    pub const NFNL_MSG_BATCH_END: u16 = 17;
    pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
    pub const NFT_MSG_NEWTABLE: u16 = 0;
    pub const NFT_MSG_GETTABLE: u16 = 1;
    pub const NFT_MSG_DELTABLE: u16 = 2;
    pub const NFT_MSG_NEWCHAIN: u16 = 3;
    pub const NFT_MSG_NEWRULE: u16 = 6;
    pub const NFT_MSG_GETRULE: u16 = 7;
    pub const NFT_MSG_NEWSET: u16 = 9;
    pub const NFT_MSG_NEWSETELEM: u16 = 12;
    pub const NFT_MSG_GETSETELEM: u16 = 13;
    pub const NFT_MSG_DELSETELEM: u16 = 14;
    /// `struct nfgenmsg`: family (u8), version (u8), res_id (be16).
    pub const NFGENMSG_LEN: usize = 4;

    pub const NFTA_TABLE_NAME: u16 = 1;
    pub const NFTA_TABLE_FLAGS: u16 = 2;
    pub const NFTA_CHAIN_TABLE: u16 = 1;
    pub const NFTA_CHAIN_NAME: u16 = 3;
    pub const NFTA_CHAIN_HOOK: u16 = 4;
    pub const NFTA_CHAIN_POLICY: u16 = 5;
    pub const NFTA_CHAIN_TYPE: u16 = 7;
    pub const NFTA_HOOK_HOOKNUM: u16 = 1;
    pub const NFTA_HOOK_PRIORITY: u16 = 2;
    pub const NFTA_HOOK_DEV: u16 = 3;
    pub const NF_NETDEV_INGRESS: u32 = 0;
    pub const NF_DROP: u32 = 0;
    pub const NF_ACCEPT: u32 = 1;
    pub const NFTA_RULE_TABLE: u16 = 1;
    pub const NFTA_RULE_CHAIN: u16 = 2;
    pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
    pub const NFTA_EXPR_NAME: u16 = 1;
    pub const NFTA_EXPR_DATA: u16 = 2;
    pub const NFTA_SET_TABLE: u16 = 1;
    pub const NFTA_SET_NAME: u16 = 2;
    pub const NFTA_SET_FLAGS: u16 = 3;
    pub const NFTA_SET_KEY_TYPE: u16 = 4;
    pub const NFTA_SET_KEY_LEN: u16 = 5;
    pub const NFTA_SET_DESC: u16 = 9;
    pub const NFTA_SET_ID: u16 = 10;
    pub const NFTA_SET_DESC_SIZE: u16 = 1;
    pub const NFT_SET_ANONYMOUS: u32 = 0x1;
    pub const NFT_SET_CONSTANT: u32 = 0x2;
    pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
    pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
    pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
    pub const NFTA_LIST_ELEM: u16 = 1;
    pub const NFTA_SET_ELEM_KEY: u16 = 1;
    pub const NFTA_DATA_VALUE: u16 = 1;
    pub const NFTA_DATA_VERDICT: u16 = 2;
    pub const NFTA_VERDICT_CODE: u16 = 1;
    pub const NFTA_META_DREG: u16 = 1;
    pub const NFTA_META_KEY: u16 = 2;
    pub const NFTA_CMP_SREG: u16 = 1;
    pub const NFTA_CMP_OP: u16 = 2;
    pub const NFTA_CMP_DATA: u16 = 3;
    pub const NFTA_PAYLOAD_DREG: u16 = 1;
    pub const NFTA_PAYLOAD_BASE: u16 = 2;
    pub const NFTA_PAYLOAD_OFFSET: u16 = 3;
    pub const NFTA_PAYLOAD_LEN: u16 = 4;
    pub const NFTA_LOOKUP_SET: u16 = 1;
    pub const NFTA_LOOKUP_SREG: u16 = 2;
    pub const NFTA_LOOKUP_SET_ID: u16 = 4;
    pub const NFTA_FIB_DREG: u16 = 1;
    pub const NFTA_FIB_RESULT: u16 = 2;
    pub const NFTA_FIB_FLAGS: u16 = 3;
    pub const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
    pub const NFTA_FIB_F_DADDR: u32 = 2;
    pub const NFTA_COUNTER_BYTES: u16 = 1;
    pub const NFTA_COUNTER_PACKETS: u16 = 2;
    pub const NFTA_IMMEDIATE_DREG: u16 = 1;
    pub const NFTA_IMMEDIATE_DATA: u16 = 2;
}

/// The `netdev` family of nf_tables tables.
pub const NFPROTO_NETDEV: u8 = 5;
/// Table flag: the table belongs to the netlink socket that created it
/// and is deleted with it (Linux 5.12).
pub const NFT_TABLE_F_OWNER: u32 = 0x2;
/// Elements per message: keeps each message well below a page multiple the
/// kernel handles comfortably; a transaction has as many as it needs.
pub const ELEMS_PER_MSG: usize = 1024;
const RECV_TIMEOUT_SECS: libc::time_t = 2;
const RECV_BUF_LEN: usize = 64 * 1024;

/// Failures talking nf_tables.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The socket could not be opened or used.
    #[error("nf_tables netlink socket: {0}")]
    Socket(#[from] io::Error),
    /// The kernel refused the transaction.
    #[error("nf_tables refused to {what}: {err}{}", in_parens(.detail))]
    Kernel {
        /// What the refused message did, e.g. `delete elements of set rsa4`.
        what: String,
        /// The errno the kernel answered.
        err: io::Error,
        /// The kernel's extended-ack message, when it gave one.
        detail: Option<String>,
    },
    /// No answer within the receive timeout.
    #[error("nf_tables did not answer in time")]
    Timeout,
    /// An answer that does not parse.
    #[error("malformed nf_tables answer: {0}")]
    Malformed(&'static str),
}

fn in_parens(d: &Option<String>) -> String {
    d.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
}

impl NftError {
    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NftError::Kernel { err, .. } => err.raw_os_error(),
            _ => None,
        }
    }
}

/// One set's change: `keys` added to or deleted from `set`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetChange {
    /// Add (`true`) or delete.
    pub add: bool,
    /// Set name in the table.
    pub set: String,
    /// Keys as built by [`key`].
    pub keys: Vec<Vec<u8>>,
}

impl Batch {
    /// Applies `changes` to the sets of `table`, deletions first.
    pub fn set_changes(&mut self, table: &str, changes: &[SetChange]) {
        let ordered = changes
            .iter()
            .filter(|c| !c.add)
            .chain(changes.iter().filter(|c| c.add));
        for c in ordered {
            self.elems(table, &SetRef::named(&c.set), c.add, &c.keys);
        }
    }
}

/// A set key from its fields: each field in network byte order, padded
/// with zeros to a multiple of 4 bytes.
pub fn key(fields: &[KeyField]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.len() * 8);
    for f in fields {
        match *f {
            KeyField::Addr(IpAddr::V4(a)) => out.extend_from_slice(&a.octets()),
            KeyField::Addr(IpAddr::V6(a)) => out.extend_from_slice(&a.octets()),
            KeyField::Proto(p) => out.extend_from_slice(&[p, 0, 0, 0]),
            KeyField::Port(p) => {
                out.extend_from_slice(&p.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
        }
    }
    out
}

/// One field of a set key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyField {
    /// `ipv4_addr` / `ipv6_addr`.
    Addr(IpAddr),
    /// `inet_proto`.
    Proto(u8),
    /// `inet_service`.
    Port(u16),
}

/// An open nf_tables netlink socket.
#[derive(Debug)]
pub struct NftSock {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

fn setsockopt_int(fd: &OwnedFd, level: i32, name: i32, val: i32) -> io::Result<()> {
    // SAFETY: `val` is a valid int and the length matches it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&val as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A message that waits for its acknowledgement.
struct Pending {
    seq: u32,
    what: String,
}

impl NftSock {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<NftSock, NftError> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                abi::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: `raw` is a freshly created descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a valid sockaddr_nl and the length matches it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // Errors without a copy of our (possibly large) request, but with
        // the kernel's reason as text where it has one.
        setsockopt_int(&fd, libc::SOL_NETLINK, abi::NETLINK_CAP_ACK, 1)?;
        let _ = setsockopt_int(&fd, libc::SOL_NETLINK, abi::NETLINK_EXT_ACK, 1);
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: `tv` is a valid timeval and the length matches it.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(NftSock {
            fd,
            seq: std::process::id().wrapping_mul(0x9e37_79b9),
            buf: vec![0; RECV_BUF_LEN],
        })
    }

    /// Applies `batch` in one transaction; see the module doc.
    pub fn commit(&mut self, batch: &Batch) -> Result<(), NftError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (msg, first, pending) = frame(&mut self.seq, batch);
        self.grow_sndbuf(msg.len())?;
        self.send(&msg)?;
        self.await_acks(first, pending)
    }

    fn send(&self, msg: &[u8]) -> Result<(), NftError> {
        // SAFETY: `msg` is a valid buffer of `msg.len()` bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// A transaction is one datagram: make room for it (root may exceed
    /// the system's default buffer limit with SO_SNDBUFFORCE).
    fn grow_sndbuf(&self, len: usize) -> Result<(), NftError> {
        let want = i32::try_from(len.saturating_add(4096)).unwrap_or(i32::MAX);
        if len < 128 * 1024 {
            return Ok(());
        }
        setsockopt_int(&self.fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want)
            .or_else(|_| setsockopt_int(&self.fd, libc::SOL_SOCKET, libc::SO_SNDBUF, want))
            .map_err(NftError::Socket)
    }

    /// One datagram from the kernel into `buf`; its length.
    fn recv(&mut self) -> Result<usize, NftError> {
        // SAFETY: `buf` is a valid, writable buffer of its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => NftError::Timeout,
                _ => NftError::Socket(e),
            });
        }
        Ok(n as usize)
    }

    /// Reads answers until every message in `pending` was acknowledged, or
    /// an error about this batch (sequence numbers from `first`: the batch
    /// begin itself is refused without the capability).
    fn await_acks(&mut self, first: u32, mut pending: Vec<Pending>) -> Result<(), NftError> {
        let last = pending.last().map_or(first, |p| p.seq).wrapping_add(1);
        let ours = |seq: u32| seq.wrapping_sub(first) <= last.wrapping_sub(first);
        while !pending.is_empty() {
            let n = self.recv()?;
            for m in messages(&self.buf[..n])? {
                let Some(e) = m.error()? else { continue };
                if !ours(m.seq) {
                    continue; // an earlier transaction's late answer
                }
                let i = pending.iter().position(|p| p.seq == m.seq);
                if e.errno != 0 {
                    let what = i.map_or_else(
                        || "begin a transaction".to_string(),
                        |i| pending[i].what.clone(),
                    );
                    return Err(NftError::Kernel {
                        what,
                        err: io::Error::from_raw_os_error(e.errno),
                        detail: e.detail,
                    });
                }
                if let Some(i) = i {
                    pending.swap_remove(i);
                }
            }
        }
        Ok(())
    }

    /// Runs a dump request `kind` with `attrs`; calls `each` with every
    /// answer's attributes.
    fn dump(
        &mut self,
        family: u8,
        kind: u16,
        attrs: impl FnOnce(&mut msg::Attrs<'_>),
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), NftError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut b = Vec::new();
        let at = header(
            &mut b,
            (abi::NFNL_SUBSYS_NFTABLES << 8) | kind,
            abi::NLM_F_REQUEST | abi::NLM_F_DUMP,
            seq,
            family,
            0,
        );
        attrs(&mut msg::Attrs(&mut b));
        end_msg(&mut b, at);
        self.send(&b)?;
        loop {
            let n = self.recv()?;
            let buf = std::mem::take(&mut self.buf);
            let res = (|| {
                for m in messages(&buf[..n])? {
                    if m.seq != seq {
                        continue;
                    }
                    match m.kind {
                        abi::NLMSG_DONE => return Ok(true),
                        abi::NLMSG_ERROR => {
                            let e = m.error()?.ok_or(NftError::Malformed("error"))?;
                            return Err(NftError::Kernel {
                                what: "list".to_string(),
                                err: io::Error::from_raw_os_error(e.errno),
                                detail: e.detail,
                            });
                        }
                        _ => each(m.payload.get(abi::NFGENMSG_LEN..).unwrap_or_default()),
                    }
                }
                Ok(false)
            })();
            self.buf = buf;
            if res? {
                return Ok(());
            }
        }
    }

    /// The names of the tables of `family` in this socket's namespace.
    pub fn tables(&mut self, family: u8) -> Result<Vec<String>, NftError> {
        let mut out = Vec::new();
        self.dump(
            family,
            abi::NFT_MSG_GETTABLE,
            |_| {},
            |m| {
                if let Some(name) = attr(m, abi::NFTA_TABLE_NAME) {
                    out.push(cstr(name));
                }
            },
        )?;
        Ok(out)
    }

    /// The keys in `set` of `table` (ENOENT when either does not exist).
    pub fn set_keys(
        &mut self,
        family: u8,
        table: &str,
        set: &str,
    ) -> Result<Vec<Vec<u8>>, NftError> {
        let mut out = Vec::new();
        self.dump(
            family,
            abi::NFT_MSG_GETSETELEM,
            |a| {
                a.str(abi::NFTA_SET_ELEM_LIST_TABLE, table);
                a.str(abi::NFTA_SET_ELEM_LIST_SET, set);
            },
            |m| {
                let Some(list) = attr(m, abi::NFTA_SET_ELEM_LIST_ELEMENTS) else {
                    return;
                };
                for (_, e) in attrs(list) {
                    if let Some(v) =
                        attr(e, abi::NFTA_SET_ELEM_KEY).and_then(|k| attr(k, abi::NFTA_DATA_VALUE))
                    {
                        out.push(v.to_vec());
                    }
                }
            },
        )?;
        Ok(out)
    }
}

/// One rule's counter, as [`NftSock::rule_counters`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCounter {
    /// The rule's chain.
    pub chain: String,
    /// The first named set the rule looks up (its identity in uvs's
    /// tables), if any.
    pub set: Option<String>,
    /// Packets that reached the counter.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl NftSock {
    /// The counters of the rules of `table` that have one, in rule order.
    pub fn rule_counters(&mut self, family: u8, table: &str) -> Result<Vec<RuleCounter>, NftError> {
        let be64 = |b: Option<&[u8]>| {
            b.and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes)
        };
        let mut out = Vec::new();
        self.dump(
            family,
            abi::NFT_MSG_GETRULE,
            |a| a.str(abi::NFTA_RULE_TABLE, table),
            |m| {
                let chain = attr(m, abi::NFTA_RULE_CHAIN).map(cstr).unwrap_or_default();
                let mut set = None;
                let mut counter = None;
                for (_, e) in attrs(attr(m, abi::NFTA_RULE_EXPRESSIONS).unwrap_or_default()) {
                    let name = attr(e, abi::NFTA_EXPR_NAME).map(cstr).unwrap_or_default();
                    let data = attr(e, abi::NFTA_EXPR_DATA).unwrap_or_default();
                    match name.as_str() {
                        "lookup" if set.is_none() => {
                            set = attr(data, abi::NFTA_LOOKUP_SET)
                                .map(cstr)
                                .filter(|s| !s.starts_with("__set"));
                        }
                        "counter" => {
                            counter = Some((
                                be64(attr(data, abi::NFTA_COUNTER_PACKETS)),
                                be64(attr(data, abi::NFTA_COUNTER_BYTES)),
                            ));
                        }
                        _ => {}
                    }
                }
                if let Some((packets, bytes)) = counter {
                    out.push(RuleCounter {
                        chain,
                        set,
                        packets,
                        bytes,
                    });
                }
            },
        )?;
        Ok(out)
    }
}

/// The attributes in `b`: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & abi::NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let v = &b[4..len];
        b = &b[align4(len).min(b.len())..];
        Some((kind, v))
    })
}

/// The first attribute of type `kind` in `b`.
fn attr(b: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(b).find(|a| a.0 == kind).map(|a| a.1)
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// One netlink message of a datagram.
struct Message<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// An `NLMSG_ERROR` answer: errno 0 is an acknowledgement.
struct Ack {
    errno: i32,
    detail: Option<String>,
}

impl Message<'_> {
    /// The acknowledgement or error this message carries, if it is one.
    fn error(&self) -> Result<Option<Ack>, NftError> {
        if self.kind != abi::NLMSG_ERROR {
            return Ok(None);
        }
        let p = self.payload;
        if p.len() < 4 + abi::NLMSG_HDRLEN {
            return Err(NftError::Malformed("short error message"));
        }
        let err = i32::from_ne_bytes(p[0..4].try_into().expect("4 bytes"));
        let mut detail = None;
        if self.flags & abi::NLM_F_ACK_TLVS != 0 {
            // After the errno: the request's header, and its payload
            // unless capped; then the extended-ack attributes.
            let orig = u32::from_ne_bytes(p[4..8].try_into().expect("4 bytes")) as usize;
            let skip = if self.flags & abi::NLM_F_CAPPED != 0 {
                abi::NLMSG_HDRLEN
            } else {
                align4(orig)
            };
            if let Some(tlvs) = p.get(4 + skip..) {
                detail = attr(tlvs, abi::NLMSGERR_ATTR_MSG).map(cstr);
            }
        }
        Ok(Some(Ack {
            errno: -err,
            detail,
        }))
    }
}

/// The messages in one datagram from the kernel.
fn messages(mut b: &[u8]) -> Result<Vec<Message<'_>>, NftError> {
    let mut out = Vec::new();
    while b.len() >= abi::NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(b[0..4].try_into().expect("4 bytes")) as usize;
        if len < abi::NLMSG_HDRLEN || len > b.len() {
            return Err(NftError::Malformed("message length"));
        }
        out.push(Message {
            kind: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            seq: u32::from_ne_bytes(b[8..12].try_into().expect("4 bytes")),
            payload: &b[abi::NLMSG_HDRLEN..len],
        });
        b = &b[align4(len).min(b.len())..];
    }
    Ok(out)
}

/// Starts a message in `b`; returns its offset for [`end_msg`].
fn header(b: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
    let at = b.len();
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&[family, 0]);
    b.extend_from_slice(&res_id.to_be_bytes());
    debug_assert_eq!(b.len() - at, abi::NLMSG_HDRLEN + abi::NFGENMSG_LEN);
    at
}

fn end_msg(b: &mut [u8], at: usize) {
    let len = (b.len() - at) as u32;
    b[at..at + 4].copy_from_slice(&len.to_ne_bytes());
}

/// The datagram for `batch`, the batch begin's sequence number, and the
/// messages that will be acknowledged.
fn frame(seq: &mut u32, batch: &Batch) -> (Vec<u8>, u32, Vec<Pending>) {
    let mut b =
        Vec::with_capacity(64 + batch.msgs.iter().map(|m| m.body.len() + 20).sum::<usize>());
    let mut pending = Vec::with_capacity(batch.msgs.len());
    let mut next = || {
        *seq = seq.wrapping_add(1);
        *seq
    };
    let first = next();
    let at = header(
        &mut b,
        abi::NFNL_MSG_BATCH_BEGIN,
        abi::NLM_F_REQUEST,
        first,
        0,
        abi::NFNL_SUBSYS_NFTABLES,
    );
    end_msg(&mut b, at);
    for m in &batch.msgs {
        let s = next();
        let at = header(
            &mut b,
            (abi::NFNL_SUBSYS_NFTABLES << 8) | m.kind,
            abi::NLM_F_REQUEST | abi::NLM_F_ACK | m.flags,
            s,
            batch.family,
            0,
        );
        b.extend_from_slice(&m.body);
        end_msg(&mut b, at);
        pending.push(Pending {
            seq: s,
            what: m.what.clone(),
        });
    }
    let at = header(
        &mut b,
        abi::NFNL_MSG_BATCH_END,
        abi::NLM_F_REQUEST,
        next(),
        0,
        abi::NFNL_SUBSYS_NFTABLES,
    );
    end_msg(&mut b, at);
    (b, first, pending)
}

/// A `netdev` table this process committed through `sock` with
/// [`NFT_TABLE_F_OWNER`]: changed only through [`OwnedTable::sock`],
/// deleted by [`OwnedTable::remove`] or on drop, and by the kernel when
/// the socket closes (which is what a crash amounts to).
#[derive(Debug)]
pub struct OwnedTable {
    name: &'static str,
    installed: bool,
    sock: NftSock,
}

impl OwnedTable {
    /// Adopts `sock`, through which table `name` was just committed.
    pub fn new(name: &'static str, sock: NftSock) -> Self {
        OwnedTable {
            name,
            installed: true,
            sock,
        }
    }

    /// The owning socket, the only one that may change the table.
    pub fn sock(&mut self) -> &mut NftSock {
        &mut self.sock
    }

    /// Deletes the table now (also done on drop).
    pub fn remove(&mut self) -> Result<(), NftError> {
        if std::mem::take(&mut self.installed) {
            let mut b = Batch::new(NFPROTO_NETDEV);
            b.del_table(self.name);
            self.sock.commit(&b)?;
        }
        Ok(())
    }

    /// Hands out the owning socket (replaced by a fresh one) without
    /// deleting the table: tests close it to see the kernel delete it.
    #[cfg(test)]
    pub(crate) fn take_owner(&mut self) -> NftSock {
        self.installed = false;
        std::mem::replace(&mut self.sock, NftSock::open().expect("socket"))
    }
}

impl Drop for OwnedTable {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            log::warn!("removing nftables table netdev {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests;
