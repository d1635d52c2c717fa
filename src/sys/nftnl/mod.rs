//! A minimal nf_tables client over netlink: adds and deletes set elements
//! of an existing table in one atomic transaction, without running `nft`.
//!
//! Contract:
//! * [`NftSock`] is one `AF_NETLINK`/`NETLINK_NETFILTER` socket, bound to
//!   the network namespace of the thread that called [`NftSock::open`].
//! * [`NftSock::commit`] sends one nfnetlink batch (`BATCH_BEGIN`, then
//!   `NFT_MSG_DELSETELEM` / `NFT_MSG_NEWSETELEM` messages of at most
//!   [`ELEMS_PER_MSG`] elements, then `BATCH_END`) in a single `send`, so
//!   the kernel applies all of it or none; every element message asks for
//!   an acknowledgement, and the call returns when each one was answered
//!   (or the first error, or the 2 s receive timeout). Replies to an
//!   earlier, abandoned transaction are recognised by sequence number and
//!   skipped.
//! * Keys are given as the kernel stores them: for a concatenation, each
//!   field in network byte order, zero-padded to a multiple of 4 bytes
//!   (nf_tables' 32-bit registers) — see [`key`].
//!
//! Control-path code: it allocates and makes syscalls, once per change.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Kernel ABI numbers (uapi `netlink.h`, `nfnetlink.h`, `nf_tables.h`).
mod abi {
    pub const NLMSG_HDRLEN: usize = 16;
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLM_F_REQUEST: u16 = 0x001;
    pub const NLM_F_ACK: u16 = 0x004;
    pub const NLM_F_CREATE: u16 = 0x400;
    pub const NLA_F_NESTED: u16 = 0x8000;
    pub const NETLINK_NETFILTER: i32 = 12;
    pub const NETLINK_CAP_ACK: i32 = 10;

    pub const NFNL_MSG_BATCH_BEGIN: u16 = 16;
    pub const NFNL_MSG_BATCH_END: u16 = 17;
    pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
    pub const NFT_MSG_NEWSETELEM: u16 = 12;
    pub const NFT_MSG_DELSETELEM: u16 = 14;
    /// `struct nfgenmsg`: family (u8), version (u8), res_id (be16).
    pub const NFGENMSG_LEN: usize = 4;

    pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
    pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
    pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub const NFTA_LIST_ELEM: u16 = 1;
    pub const NFTA_SET_ELEM_KEY: u16 = 1;
    pub const NFTA_DATA_VALUE: u16 = 1;
}

/// The `netdev` family of nf_tables tables.
pub const NFPROTO_NETDEV: u8 = 5;
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
    #[error("nf_tables refused {op} on set {set}: {err}")]
    Kernel {
        /// `add` or `delete`.
        op: &'static str,
        /// The set's name.
        set: String,
        /// The errno the kernel answered.
        err: io::Error,
    },
    /// No answer within the receive timeout.
    #[error("nf_tables did not answer in time")]
    Timeout,
    /// An answer that does not parse.
    #[error("malformed nf_tables answer: {0}")]
    Malformed(&'static str),
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
        // Errors without a copy of our (possibly large) request.
        setsockopt_int(&fd, libc::SOL_NETLINK, abi::NETLINK_CAP_ACK, 1)?;
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

    /// Applies `changes` to sets of `table` (of `family`) in one
    /// transaction; see the module doc.
    pub fn commit(
        &mut self,
        family: u8,
        table: &str,
        changes: &[SetChange],
    ) -> Result<(), NftError> {
        let (msg, pending) = batch(&mut self.seq, family, table, changes);
        if pending.is_empty() {
            return Ok(());
        }
        self.grow_sndbuf(msg.len())?;
        // SAFETY: `msg` is a valid buffer of `msg.len()` bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error().into());
        }
        self.await_acks(pending)
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

    /// Reads answers until every sequence number in `pending` was
    /// acknowledged, or an error.
    fn await_acks(
        &mut self,
        mut pending: Vec<(u32, &'static str, String)>,
    ) -> Result<(), NftError> {
        while !pending.is_empty() {
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
            for (seq, errno) in acks(&self.buf[..n as usize])? {
                let Some(i) = pending.iter().position(|p| p.0 == seq) else {
                    continue; // an earlier transaction's late answer
                };
                let (_, op, set) = pending.swap_remove(i);
                if errno != 0 {
                    return Err(NftError::Kernel {
                        op,
                        set,
                        err: io::Error::from_raw_os_error(errno),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The acknowledgements (sequence number, errno; 0 = success) in one
/// datagram from the kernel.
fn acks(mut b: &[u8]) -> Result<Vec<(u32, i32)>, NftError> {
    let mut out = Vec::new();
    while b.len() >= abi::NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(b[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        let seq = u32::from_ne_bytes(b[8..12].try_into().expect("4 bytes"));
        if len < abi::NLMSG_HDRLEN || len > b.len() {
            return Err(NftError::Malformed("message length"));
        }
        if kind == abi::NLMSG_ERROR {
            let p = &b[abi::NLMSG_HDRLEN..len];
            if p.len() < 4 {
                return Err(NftError::Malformed("short error message"));
            }
            let err = i32::from_ne_bytes(p[0..4].try_into().expect("4 bytes"));
            out.push((seq, -err));
        }
        b = &b[align4(len).min(b.len())..];
    }
    Ok(out)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds netlink messages in a byte buffer.
struct Writer {
    b: Vec<u8>,
}

impl Writer {
    /// Starts a message; returns its offset for [`Writer::end_msg`].
    fn msg(&mut self, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let at = self.b.len();
        self.b.extend_from_slice(&0u32.to_ne_bytes());
        self.b.extend_from_slice(&kind.to_ne_bytes());
        self.b.extend_from_slice(&flags.to_ne_bytes());
        self.b.extend_from_slice(&seq.to_ne_bytes());
        self.b.extend_from_slice(&0u32.to_ne_bytes());
        self.b.extend_from_slice(&[family, 0]);
        self.b.extend_from_slice(&res_id.to_be_bytes());
        debug_assert_eq!(self.b.len() - at, abi::NLMSG_HDRLEN + abi::NFGENMSG_LEN);
        at
    }

    fn end_msg(&mut self, at: usize) {
        let len = (self.b.len() - at) as u32;
        self.b[at..at + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = (4 + data.len()) as u16;
        self.b.extend_from_slice(&len.to_ne_bytes());
        self.b.extend_from_slice(&kind.to_ne_bytes());
        self.b.extend_from_slice(data);
        self.b.resize(align4(self.b.len()), 0);
    }

    fn str_attr(&mut self, kind: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v);
    }

    fn nest(&mut self, kind: u16) -> usize {
        let at = self.b.len();
        self.b.extend_from_slice(&0u16.to_ne_bytes());
        self.b
            .extend_from_slice(&(kind | abi::NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn end_nest(&mut self, at: usize) {
        let len = (self.b.len() - at) as u16;
        self.b[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

/// The batch for `changes` and the (sequence, op, set) of each message
/// that will be acknowledged. Deletions go first.
fn batch(
    seq: &mut u32,
    family: u8,
    table: &str,
    changes: &[SetChange],
) -> (Vec<u8>, Vec<(u32, &'static str, String)>) {
    let mut w = Writer { b: Vec::new() };
    let mut pending = Vec::new();
    let mut next = || {
        *seq = seq.wrapping_add(1);
        *seq
    };
    let begin = w.msg(
        abi::NFNL_MSG_BATCH_BEGIN,
        abi::NLM_F_REQUEST,
        next(),
        0,
        abi::NFNL_SUBSYS_NFTABLES,
    );
    w.end_msg(begin);
    let ordered = changes
        .iter()
        .filter(|c| !c.add)
        .chain(changes.iter().filter(|c| c.add));
    for c in ordered {
        for chunk in c.keys.chunks(ELEMS_PER_MSG) {
            let (kind, flags, op) = if c.add {
                (abi::NFT_MSG_NEWSETELEM, abi::NLM_F_CREATE, "add")
            } else {
                (abi::NFT_MSG_DELSETELEM, 0, "delete")
            };
            let s = next();
            let m = w.msg(
                (abi::NFNL_SUBSYS_NFTABLES << 8) | kind,
                abi::NLM_F_REQUEST | abi::NLM_F_ACK | flags,
                s,
                family,
                0,
            );
            w.str_attr(abi::NFTA_SET_ELEM_LIST_TABLE, table);
            w.str_attr(abi::NFTA_SET_ELEM_LIST_SET, &c.set);
            let list = w.nest(abi::NFTA_SET_ELEM_LIST_ELEMENTS);
            for k in chunk {
                let e = w.nest(abi::NFTA_LIST_ELEM);
                let kn = w.nest(abi::NFTA_SET_ELEM_KEY);
                w.attr(abi::NFTA_DATA_VALUE, k);
                w.end_nest(kn);
                w.end_nest(e);
            }
            w.end_nest(list);
            w.end_msg(m);
            pending.push((s, op, c.set.clone()));
        }
    }
    let end = w.msg(
        abi::NFNL_MSG_BATCH_END,
        abi::NLM_F_REQUEST,
        next(),
        0,
        abi::NFNL_SUBSYS_NFTABLES,
    );
    w.end_msg(end);
    (w.b, pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_pad_every_field_to_four_bytes() {
        let k = key(&[
            KeyField::Addr("192.0.2.1".parse().unwrap()),
            KeyField::Proto(6),
            KeyField::Port(0x1f90),
        ]);
        assert_eq!(k, [192, 0, 2, 1, 6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        let k6 = key(&[
            KeyField::Addr("2001:db8::1".parse().unwrap()),
            KeyField::Proto(17),
        ]);
        assert_eq!(k6.len(), 20);
        assert_eq!(&k6[16..], [17, 0, 0, 0]);
    }

    #[test]
    fn a_batch_is_framed_and_chunked() {
        let mut seq = 100;
        let keys: Vec<Vec<u8>> = (0..ELEMS_PER_MSG as u32 + 1)
            .map(|i| i.to_be_bytes().to_vec())
            .collect();
        let changes = [
            SetChange {
                add: true,
                set: "rsa4".into(),
                keys,
            },
            SetChange {
                add: false,
                set: "svc4".into(),
                keys: vec![vec![1; 12]],
            },
        ];
        let (b, pending) = batch(&mut seq, NFPROTO_NETDEV, "uvs", &changes);
        // delete first, then the add in two messages; begin and end unacked.
        let ops: Vec<(&str, &str)> = pending.iter().map(|p| (p.1, p.2.as_str())).collect();
        assert_eq!(ops, [("delete", "svc4"), ("add", "rsa4"), ("add", "rsa4")]);
        assert_eq!(pending[0].0, 102);
        assert_eq!(seq, 105);
        // Walk the messages: lengths chain to the end, types as expected.
        let mut kinds = Vec::new();
        let mut rest = &b[..];
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            kinds.push(u16::from_ne_bytes([rest[4], rest[5]]));
            rest = &rest[len..];
        }
        assert_eq!(
            kinds,
            [16, (10 << 8) | 14, (10 << 8) | 12, (10 << 8) | 12, 17]
        );
        // Batch begin names the nftables subsystem (big endian).
        assert_eq!(&b[18..20], &10u16.to_be_bytes());
    }

    #[test]
    fn acks_are_parsed_with_errno() {
        let mut b = Vec::new();
        for (seq, err) in [(7u32, 0i32), (8, -2)] {
            b.extend_from_slice(&36u32.to_ne_bytes());
            b.extend_from_slice(&abi::NLMSG_ERROR.to_ne_bytes());
            b.extend_from_slice(&0u16.to_ne_bytes());
            b.extend_from_slice(&seq.to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            b.extend_from_slice(&err.to_ne_bytes());
            b.extend_from_slice(&[0; 16]);
        }
        assert_eq!(acks(&b).unwrap(), [(7, 0), (8, 2)]);
        assert!(acks(&b[..20]).is_err());
    }
}
