//! A minimal rtnetlink socket for the local-address watcher
//! (`super::super::local`): subscribed to IPv4 and IPv6 route events, able
//! to ask for a route dump, and read with a timeout. It sends and receives
//! bytes only; the messages are parsed (safely) by the caller.
//!
//! Self-contained on purpose: the daemon's netlink module belongs to the
//! route/neighbour resolver, and this socket must live in the namespace of
//! the interfaces the XDP program is attached to (it is opened on the
//! caller's thread, and a socket stays in the namespace it was made in).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// `RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE`: route changes, which include
/// the local routes the kernel adds and removes with each address.
const GROUPS: u32 = 0x40 | 0x400;
const RTM_GETROUTE: u16 = 26;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;

/// A route-event socket.
#[derive(Debug)]
pub struct RtnlSocket {
    fd: OwnedFd,
    seq: u32,
}

impl RtnlSocket {
    /// Opens the socket in the calling thread's network namespace,
    /// subscribed to route events, with a receive timeout of `timeout`.
    pub fn open(timeout: Duration) -> io::Result<RtnlSocket> {
        // SAFETY: plain socket(2); the result is checked and owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain old data; zero is a valid value.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        sa.nl_groups = GROUPS;
        // SAFETY: `sa` is a live sockaddr_nl of the length passed.
        let rc = unsafe {
            libc::bind(
                raw,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // A large buffer makes an overrun (ENOBUFS, answered by a re-dump)
        // unlikely even when many addresses change at once.
        let rcvbuf: libc::c_int = 1 << 20;
        for (opt, p, len) in [
            (
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast::<libc::c_void>(),
                std::mem::size_of::<libc::timeval>(),
            ),
            (
                libc::SO_RCVBUF,
                (&rcvbuf as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>(),
            ),
        ] {
            // SAFETY: `p` points at a live value of `len` bytes.
            let rc =
                unsafe { libc::setsockopt(raw, libc::SOL_SOCKET, opt, p, len as libc::socklen_t) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(RtnlSocket { fd, seq: 0 })
    }

    /// Asks for a dump of every route of `family` (`AF_INET`/`AF_INET6`);
    /// returns the request's sequence number (the dump ends with an
    /// `NLMSG_DONE` carrying it).
    pub fn request_dump(&mut self, family: u8) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        // nlmsghdr (16) + rtmsg (12), native byte order.
        let mut m = [0u8; 28];
        m[0..4].copy_from_slice(&28u32.to_ne_bytes());
        m[4..6].copy_from_slice(&RTM_GETROUTE.to_ne_bytes());
        m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        m[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        m[16] = family;
        // SAFETY: sockaddr_nl is plain old data; zero (the kernel) is valid.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: `m` and `sa` are live buffers of the lengths passed.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                m.as_ptr().cast(),
                m.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    /// Reads one datagram (one or more netlink messages) into `buf`;
    /// `Ok(0)` on timeout. `ENOBUFS` means events were lost (overrun).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a live, exclusively borrowed buffer of the length
        // passed; the kernel writes at most that many bytes.
        let rc = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
                _ => Err(e),
            };
        }
        Ok(rc as usize)
    }
}
