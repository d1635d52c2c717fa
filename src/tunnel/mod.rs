//! `uvs tunnel-endpoint`: the real-server side of IPVS's tunnel method
//! (`-i`), for hosts without the kernel's ipip/ip6tnl/gre/fou modules.
//!
//! The director encapsulates a request to the real server (ipip, GRE or GUE,
//! outer and inner family each IPv4 or IPv6); the real server must strip the
//! outer headers and hand the inner packet, addressed to the VIP, to its own
//! stack, which answers the client directly. This endpoint does that in
//! userspace:
//!
//! * **RX**: one AF_PACKET ring ([`RxRing`]) per attached interface, each in
//!   its own fanout group, polled with mio. A frame is a *tunnel candidate*
//!   when its outer protocol is 4, 41 or 47, or UDP to one of the configured
//!   GUE ports, and its outer destination is an address of this host;
//!   everything else is left to the kernel, untouched.
//! * **Decapsulation**: [`uvs_fwd::xmit::tun::decap_frame`] validates the
//!   outer headers and tunnel checksums; a candidate it refuses is dropped
//!   and counted by reason ([`DropReason`]).
//! * **Delivery**: the inner packet goes to a TUN device (`IFF_TUN`,
//!   `IFF_NO_PI`, `IFF_VNET_HDR`), i.e. into the local stack as if it had
//!   arrived on that device. Its reverse-path filter is relaxed (the inner
//!   source, the client, is routed elsewhere). A TUN fd takes one packet per
//!   `write(2)`: that write is the one syscall per packet this path makes;
//!   nothing allocates per packet.
//! * **Kernel guard**: an nftables table `netdev uvs_tun` drops, at ingress,
//!   the outer tunnel packets addressed to this host, so the kernel does not
//!   answer them with ICMP protocol/port unreachable (the ring sees them
//!   first: packet taps run before ingress hooks). It is replaced at start (a
//!   stale one from a crash is cleaned) and removed on exit, SIGINT/SIGTERM
//!   included. Its address sets follow the host's addresses.
//!
//! Offloads: a frame from a local stack across veth may carry a pending
//! checksum (virtio `NEEDS_CSUM`): it is completed in software before
//! decapsulation, so outer GUE/GRE checksums (computed by local checksum
//! offload against the completed inner one) verify. A GSO super-packet keeps
//! its pending inner checksum and its segmentation metadata, handed to the
//! TUN device with offsets rebased onto the inner packet (ipip, and GRE/GUE
//! without outer checksum: an outer checksum over a super-packet cannot be
//! verified before segmentation, so such a packet is dropped as `checksum`).
//!
//! Contract of [`process`] (the per-packet function): no allocation, no
//! syscall, no panic on any input.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use uvs_fwd::wire::ethernet::{self, ethertype};
use uvs_fwd::wire::{ip_proto, ipv4, ipv6, udp};
use uvs_fwd::xmit::tun::{decap_frame, DecapError, TunKind};

use crate::engine::{self, EngineError};
use crate::io::{RxBatch, RxRing, RxSkip, RxSource, VnetHdr, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM};

const VNET_HDR_LEN: usize = VnetHdr::LEN;
use crate::sys::guard::{self, GuardError};

/// The nftables table of the endpoint (`netdev uvs_tun`).
pub const TABLE: &str = "uvs_tun";

/// Frames drained per ring per round.
const BATCH: usize = 64;
/// How often the host's addresses are re-read (the guard follows them).
const ADDR_REFRESH: Duration = Duration::from_secs(1);
/// How often a changed stats file is rewritten.
const STATS_EVERY: Duration = Duration::from_millis(200);
const TUN_TOKEN: Token = Token(usize::MAX);

/// What `uvs tunnel-endpoint` was asked to do.
#[derive(Debug, Clone)]
pub struct EndpointOpts {
    /// Interfaces to receive on; empty: every up, non-loopback Ethernet one.
    pub interfaces: Vec<String>,
    /// UDP ports on which GUE is expected (the directors' `--tun-port`).
    pub gue_ports: Vec<u16>,
    /// Name of the TUN device to create.
    pub tun_name: String,
    /// Frames per RX ring (each holds a 64 KiB GSO packet).
    pub ring_frames: usize,
    /// File rewritten with the counters while running (and at exit).
    pub stats_file: Option<PathBuf>,
}

/// Why the endpoint could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// Interface selection failed.
    #[error(transparent)]
    Interfaces(#[from] EngineError),
    /// A packet ring could not be opened.
    #[error("opening a packet ring on {iface}: {err} (needs root / CAP_NET_RAW)")]
    Ring {
        /// Interface name.
        iface: String,
        /// The error.
        err: io::Error,
    },
    /// The TUN device could not be created or brought up.
    #[error("TUN device {name}: {err} (needs /dev/net/tun and CAP_NET_ADMIN)")]
    Tun {
        /// Device name asked for.
        name: String,
        /// The error.
        err: io::Error,
    },
    /// A sysctl could not be read or written.
    #[error("sysctl {path}: {err}")]
    Sysctl {
        /// The /proc/sys path.
        path: String,
        /// The error.
        err: io::Error,
    },
    /// The host's addresses could not be listed.
    #[error("listing local addresses: {0}")]
    Addresses(io::Error),
    /// nftables refused the guard table.
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// Polling or the stats file failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Why a tunnel candidate was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// Larger than a ring frame: the ring kept only part of it.
    Truncated,
    /// Outer IP header invalid (IPv4 header checksum included).
    BadOuter,
    /// Outer packet is an IPv6 fragment (no reassembly here).
    OuterFragment,
    /// GRE/UDP/GUE header cut short or inconsistent.
    BadTunnelHeader,
    /// GRE or UDP checksum wrong.
    Checksum,
    /// Tunnel feature not carried (GRE routing/version, GUE control, flags).
    Unsupported,
    /// Inner packet missing, of the wrong version or too long.
    BadInner,
    /// GUE remote checksum offload option out of range.
    BadRemcsum,
    /// The virtio-net header's checksum/GSO offsets do not fit the packet.
    BadOffload,
    /// The TUN device refused the inner packet.
    TunWrite,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 10;
    /// All reasons, in index order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Truncated,
        DropReason::BadOuter,
        DropReason::OuterFragment,
        DropReason::BadTunnelHeader,
        DropReason::Checksum,
        DropReason::Unsupported,
        DropReason::BadInner,
        DropReason::BadRemcsum,
        DropReason::BadOffload,
        DropReason::TunWrite,
    ];

    /// Counter name (`drop.NAME` in [`Counters::render`]).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated_by_ring",
            DropReason::BadOuter => "bad_outer",
            DropReason::OuterFragment => "outer_fragment",
            DropReason::BadTunnelHeader => "bad_tunnel_header",
            DropReason::Checksum => "checksum",
            DropReason::Unsupported => "unsupported",
            DropReason::BadInner => "bad_inner",
            DropReason::BadRemcsum => "bad_remcsum",
            DropReason::BadOffload => "bad_offload",
            DropReason::TunWrite => "tun_write",
        }
    }

    fn from_decap(e: DecapError) -> DropReason {
        match e {
            // A candidate (right protocol or port) decap does not recognise:
            // its tunnel header is too short to be one.
            DecapError::NotTunnel | DecapError::BadTunnelHeader => DropReason::BadTunnelHeader,
            DecapError::BadOuter => DropReason::BadOuter,
            DecapError::OuterFragment => DropReason::OuterFragment,
            DecapError::Checksum => DropReason::Checksum,
            DecapError::Unsupported => DropReason::Unsupported,
            DecapError::BadInner => DropReason::BadInner,
            DecapError::BadRemcsum => DropReason::BadRemcsum,
        }
    }
}

/// The endpoint's counters (single thread: plain integers).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Packets decapsulated and delivered, by tunnel type (ipip, gue, gre).
    pub decap: [u64; 3],
    /// Inner bytes delivered to the TUN device.
    pub bytes: u64,
    /// Delivered packets whose pending checksum (virtio `NEEDS_CSUM`) was
    /// completed in software.
    pub csum_completed: u64,
    /// Delivered GSO super-packets (segmented by the stack after the TUN).
    pub gso: u64,
    /// Tunnel-looking packets to an address not of this host (left alone).
    pub not_local: u64,
    /// Candidates dropped, by [`DropReason`].
    pub drops: [u64; DropReason::COUNT],
    /// Packets the local stack sent into the TUN device (read and discarded;
    /// nothing is routed through it, but IPv6 may send ND/MLD there).
    pub tun_discarded: u64,
}

fn kind_index(k: TunKind) -> usize {
    match k {
        TunKind::Ipip => 0,
        TunKind::Gue => 1,
        TunKind::Gre => 2,
    }
}

impl Counters {
    /// Packets decapsulated with tunnel type `k`.
    pub fn decapsulated(&self, k: TunKind) -> u64 {
        self.decap[kind_index(k)]
    }

    /// Drops for reason `r`.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }

    /// Counts one outcome of [`process`] (delivery is counted by the caller
    /// once the write succeeded).
    fn count(&mut self, o: &Outcome) {
        match *o {
            Outcome::Pass | Outcome::Deliver { .. } => {}
            Outcome::NotLocal => self.not_local += 1,
            Outcome::Drop(r) => self.drops[r as usize] += 1,
        }
    }

    /// One `name value` line per counter, like `uvs stats`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (k, name) in [
            (TunKind::Ipip, "ipip"),
            (TunKind::Gue, "gue"),
            (TunKind::Gre, "gre"),
        ] {
            let _ = writeln!(s, "decap.{name} {}", self.decapsulated(k));
        }
        let _ = writeln!(s, "decap.bytes {}", self.bytes);
        let _ = writeln!(s, "offload.csum_completed {}", self.csum_completed);
        let _ = writeln!(s, "offload.gso {}", self.gso);
        let _ = writeln!(s, "pass.not_local {}", self.not_local);
        for r in DropReason::ALL {
            let _ = writeln!(s, "drop.{} {}", r.name(), self.dropped(r));
        }
        let _ = writeln!(s, "tun.discarded {}", self.tun_discarded);
        s
    }
}

/// The addresses of this host (all interfaces, loopback's VIPs included):
/// a tunnel packet is for the endpoint only when addressed to one of them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LocalAddrs {
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
}

impl LocalAddrs {
    /// A set of the given addresses.
    pub fn new(addrs: impl IntoIterator<Item = IpAddr>) -> LocalAddrs {
        let mut l = LocalAddrs::default();
        for a in addrs {
            match a {
                IpAddr::V4(a) => l.v4.push(a),
                IpAddr::V6(a) => l.v6.push(a),
            }
        }
        l.v4.sort_unstable();
        l.v4.dedup();
        l.v6.sort_unstable();
        l.v6.dedup();
        l
    }

    /// The addresses of every interface of this network namespace.
    pub fn from_system() -> LocalAddrs {
        LocalAddrs::new(
            pnet_datalink::interfaces()
                .into_iter()
                .flat_map(|i| i.ips.into_iter().map(|n| n.ip())),
        )
    }

    /// Whether `a` is one of them (a handful: a linear scan is fastest).
    pub fn contains(&self, a: IpAddr) -> bool {
        match a {
            IpAddr::V4(a) => self.v4.contains(&a),
            IpAddr::V6(a) => self.v6.contains(&a),
        }
    }
}

/// What [`process`] decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not a tunnel packet: the kernel's.
    Pass,
    /// A tunnel packet, but not addressed to this host: the kernel's.
    NotLocal,
    /// Write `buf[start..end]` (a virtio-net header for the TUN device, then
    /// the inner packet) to the TUN device.
    Deliver {
        /// Start of the TUN virtio-net header in `buf`.
        start: usize,
        /// End of the inner packet in `buf`.
        end: usize,
        /// Tunnel type.
        kind: TunKind,
        /// What was done about checksum/segmentation offload.
        offload: Offload,
    },
    /// A tunnel packet for this host that cannot be delivered.
    Drop(DropReason),
}

/// Offload state of a delivered packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    /// Every checksum was complete on arrival.
    None,
    /// A pending checksum was completed in software.
    Completed,
    /// A GSO super-packet, handed on with its metadata.
    Gso,
}

/// If `frame` is a tunnel candidate (outer protocol 4/41/47, or UDP to a GUE
/// port), its outer destination and the end of its outer IP packet.
fn candidate(frame: &[u8], gue_ports: &[u16]) -> Option<(IpAddr, usize)> {
    let e = ethernet::Frame::new_checked(frame)
        .and_then(|f| f.encap())
        .ok()?;
    let l3 = frame.get(e.l3_off..)?;
    let (dst, proto, l4, end, first_fragment) = match e.ethertype {
        ethertype::IPV4 => {
            let ip = ipv4::Packet::new_checked(l3).ok()?;
            (
                IpAddr::V4(ip.dst_addr()),
                ip.protocol(),
                ip.header_len(),
                usize::from(ip.total_len()),
                ip.frag_offset() == 0,
            )
        }
        ethertype::IPV6 => {
            let ip = ipv6::Packet::new_checked(l3).ok()?;
            let up = ip.upper_layer().ok()?;
            (
                IpAddr::V6(ip.dst_addr()),
                up.proto,
                up.offset,
                ip.total_len(),
                up.frag.is_none_or(|f| f.offset == 0),
            )
        }
        _ => return None,
    };
    let tunnel = match proto {
        ip_proto::IPIP | ip_proto::IPV6 | ip_proto::GRE => true,
        // A non-first fragment carries no ports: not recognisable as GUE.
        ip_proto::UDP if first_fragment => l3
            .get(l4..end)
            .and_then(|b| udp::Packet::new_checked(b).ok())
            .is_some_and(|u| gue_ports.contains(&u.dst_port())),
        _ => false,
    };
    tunnel.then_some((dst, e.l3_off + end))
}

/// [`candidate`] from the headers alone, for a frame cut short by the ring
/// (whose length fields exceed what is there): outer protocol 4/41/47 or
/// UDP to a GUE port, IPv6 extension headers not followed.
fn looks_tunnel(frame: &[u8], gue_ports: &[u16]) -> bool {
    let Ok(e) = ethernet::Frame::new_checked(frame).and_then(|f| f.encap()) else {
        return false;
    };
    let b = |i: usize| frame.get(e.l3_off + i).copied();
    let (proto, l4) = match e.ethertype {
        ethertype::IPV4 => (b(9), b(0).map(|v| usize::from(v & 0x0f) * 4)),
        ethertype::IPV6 => (b(6), Some(ipv6::HEADER_LEN)),
        _ => return false,
    };
    match proto {
        Some(ip_proto::IPIP | ip_proto::IPV6 | ip_proto::GRE) => true,
        Some(ip_proto::UDP) => l4
            .and_then(|l4| Some(u16::from_be_bytes([b(l4 + 2)?, b(l4 + 3)?])))
            .is_some_and(|port| gue_ports.contains(&port)),
        _ => false,
    }
}

/// Completes a pending (virtio `NEEDS_CSUM`) checksum in software, as the
/// kernel's `skb_checksum_help`: the field holds the pseudo-header sum, so
/// the complemented sum from `start` to the end of the packet is the value.
fn complete_checksum(frame: &mut [u8], start: usize, offset: usize, end: usize) -> bool {
    let field = start + offset;
    if start >= end || field + 2 > end || end > frame.len() {
        return false;
    }
    let mut c = !uvs_fwd::checksum::fold(uvs_fwd::checksum::sum(&frame[start..end]));
    // 0 and 0xffff are the same checksum; 0 would mean "none" in UDP.
    if c == 0 {
        c = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Decides what to do with one received frame: `buf` is the ring's virtio
/// header followed by the Ethernet frame. On [`Outcome::Deliver`] the TUN
/// virtio header has been written in place (over outer header bytes, which
/// are no longer needed) right before the inner packet, so the range can be
/// written to the TUN device as it is.
pub fn process(buf: &mut [u8], local: &LocalAddrs, gue_ports: &[u16]) -> Outcome {
    let Some((hdr, frame)) = buf.split_first_chunk_mut::<VNET_HDR_LEN>() else {
        return Outcome::Pass;
    };
    let Some((dst, ip_end)) = candidate(frame, gue_ports) else {
        return Outcome::Pass;
    };
    if !local.contains(dst) {
        return Outcome::NotLocal;
    }
    let rx = VnetHdr::read(hdr);
    let pending = rx.flags & VNET_F_NEEDS_CSUM != 0;
    let gso = rx.gso_type != 0;
    let start = usize::from(rx.csum_start);
    // A pending checksum is completed now, so that outer tunnel checksums,
    // computed against the completed value, verify; a GSO packet's stays
    // pending (each segment gets its own when the stack segments it).
    if pending && !gso && !complete_checksum(frame, start, usize::from(rx.csum_offset), ip_end) {
        return Outcome::Drop(DropReason::BadOffload);
    }
    let d = match decap_frame(frame, gue_ports) {
        Ok(d) => d,
        Err(e) => return Outcome::Drop(DropReason::from_decap(e)),
    };
    let mut tx = VnetHdr::default();
    if gso {
        // Offsets were relative to the frame; the TUN device's are relative
        // to the inner IP header.
        let Some(cs) = start.checked_sub(d.offset) else {
            return Outcome::Drop(DropReason::BadOffload);
        };
        if !pending || cs + usize::from(rx.csum_offset) + 2 > d.len {
            return Outcome::Drop(DropReason::BadOffload);
        }
        tx = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: rx.gso_type,
            // The TUN device refuses a head length beyond the packet.
            hdr_len: rx
                .hdr_len
                .saturating_sub(d.offset as u16)
                .min(u16::try_from(d.len).unwrap_or(u16::MAX)),
            gso_size: rx.gso_size,
            csum_start: cs as u16,
            csum_offset: rx.csum_offset,
        };
    } else if pending && start >= d.offset {
        // We just computed the inner L4 checksum ourselves.
        tx.flags = VNET_F_DATA_VALID;
    }
    // The inner packet sits at buf[VNET_HDR_LEN + d.offset..]; its TUN header
    // goes in the VNET_HDR_LEN bytes before it (d.offset >= an Ethernet and
    // an IP header, so these are outer header bytes).
    let hstart = d.offset;
    let end = VNET_HDR_LEN + d.offset + d.len;
    if end > buf.len() {
        return Outcome::Drop(DropReason::BadInner);
    }
    let _ = tx.write_to(&mut buf[hstart..]);
    let offload = match (gso, pending) {
        (true, _) => Offload::Gso,
        (false, true) => Offload::Completed,
        (false, false) => Offload::None,
    };
    Outcome::Deliver {
        start: hstart,
        end,
        kind: d.kind,
        offload,
    }
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn ifreq_named(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface names are 1 to 15 bytes",
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(ifr)
}

/// A TUN device owned by this process: it disappears when the fd closes
/// (it is not made persistent), so a crash leaves nothing behind.
#[derive(Debug)]
pub struct TunDev {
    fd: OwnedFd,
    /// The device name.
    pub name: String,
}

impl TunDev {
    /// Creates TUN device `name` (`IFF_TUN | IFF_NO_PI | IFF_VNET_HDR`,
    /// non-blocking) and brings it up.
    pub fn open(name: &str) -> io::Result<TunDev> {
        // SAFETY: open(2) of a constant NUL-terminated path; the fd is owned below.
        let raw = cvt(unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: `raw` is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut ifr = ifreq_named(name)?;
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
        // SAFETY: TUNSETIFF reads and writes the ifreq passed, which lives
        // for the call.
        cvt(unsafe { libc::ioctl(raw, libc::TUNSETIFF, &mut ifr as *mut libc::ifreq) })?;
        let tun = TunDev {
            fd,
            name: name.to_string(),
        };
        tun.set_up()?;
        Ok(tun)
    }

    /// Sets IFF_UP (SIOCGIFFLAGS / SIOCSIFFLAGS on a datagram socket).
    fn set_up(&self) -> io::Result<()> {
        // SAFETY: plain socket(2) call; the fd is owned right below.
        let raw =
            cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `raw` is a fresh fd we own.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut ifr = ifreq_named(&self.name)?;
        // SAFETY: SIOCGIFFLAGS fills ifr_flags of the ifreq passed.
        cvt(unsafe {
            libc::ioctl(
                sock.as_raw_fd(),
                libc::SIOCGIFFLAGS,
                &mut ifr as *mut libc::ifreq,
            )
        })?;
        // SAFETY: the kernel just wrote ifru_flags, the union's active field.
        let flags = unsafe { ifr.ifr_ifru.ifru_flags };
        ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as i16;
        // SAFETY: SIOCSIFFLAGS reads the ifreq passed.
        cvt(unsafe {
            libc::ioctl(
                sock.as_raw_fd(),
                libc::SIOCSIFFLAGS,
                &mut ifr as *mut libc::ifreq,
            )
        })?;
        Ok(())
    }

    /// Writes one packet (virtio-net header + IP packet).
    pub fn write_packet(&self, pkt: &[u8]) -> io::Result<()> {
        // SAFETY: write(2) from a live slice of the length passed.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != pkt.len() {
            return Err(io::Error::other("short write to the TUN device"));
        }
        Ok(())
    }

    /// Reads and discards whatever the stack sent into the device; returns
    /// how many packets.
    fn discard(&self, scratch: &mut [u8]) -> u64 {
        let mut n = 0;
        loop {
            // SAFETY: read(2) into a live buffer of the length passed.
            let r = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    scratch.as_mut_ptr().cast(),
                    scratch.len(),
                )
            };
            if r <= 0 {
                return n;
            }
            n += 1;
        }
    }
}

impl AsRawFd for TunDev {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn sysctl_read(path: &str) -> Result<String, TunnelError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|err| TunnelError::Sysctl {
            path: path.into(),
            err,
        })
}

fn sysctl_write(path: &str, v: &str) -> Result<(), TunnelError> {
    std::fs::write(path, v).map_err(|err| TunnelError::Sysctl {
        path: path.into(),
        err,
    })
}

/// Relaxes the reverse-path filter of the TUN device: inner packets arrive
/// there from the client, whose address is routed through another
/// interface, so strict mode would drop them all. The kernel applies the
/// larger of `all` and the device's value: with `all` strict (1), only loose
/// (2) on the device lifts strictness; otherwise 0 turns the check off.
fn relax_rp_filter(dev: &str) -> Result<(), TunnelError> {
    let all = sysctl_read("/proc/sys/net/ipv4/conf/all/rp_filter")?;
    let v = if all == "1" { "2" } else { "0" };
    sysctl_write(&format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter"), v)
}

/// The `netdev uvs_tun` table; dropping it removes the table.
#[derive(Debug)]
pub struct TunnelGuard {
    installed: bool,
}

/// Removes a `netdev uvs_tun` table left by an endpoint that did not exit
/// cleanly.
pub fn remove_stale() -> Result<(), GuardError> {
    guard::nft(&format!(
        "add table netdev {TABLE}\ndelete table netdev {TABLE}\n"
    ))
}

impl TunnelGuard {
    /// Replaces any existing table with one hooked on `devices` that drops
    /// outer tunnel packets (protocols 4, 41, 47 and UDP to `gue_ports`)
    /// addressed to `local`.
    pub fn install(
        devices: &[String],
        gue_ports: &[u16],
        local: &LocalAddrs,
    ) -> Result<TunnelGuard, GuardError> {
        let mut s = format!(
            "add table netdev {TABLE}\ndelete table netdev {TABLE}\ntable netdev {TABLE} {{\n"
        );
        s += "  set local4 { type ipv4_addr; }\n  set local6 { type ipv6_addr; }\n";
        let ports = gue_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        for (i, dev) in devices.iter().enumerate() {
            s += &format!(
                "  chain in{i} {{\n    type filter hook ingress device \"{dev}\" priority -500; policy accept;\n"
            );
            for (ip, set) in [("ip", "local4"), ("ip6", "local6")] {
                s += &format!("    {ip} daddr @{set} meta l4proto {{ 4, 41, 47 }} counter drop\n");
                if !ports.is_empty() {
                    s += &format!("    {ip} daddr @{set} udp dport {{ {ports} }} counter drop\n");
                }
            }
            s += "  }\n";
        }
        s += "}\n";
        s += &Self::elements(local);
        guard::nft(&s)?;
        Ok(TunnelGuard { installed: true })
    }

    fn elements(local: &LocalAddrs) -> String {
        let mut s = format!("flush set netdev {TABLE} local4\nflush set netdev {TABLE} local6\n");
        let join = |v: Vec<String>| v.join(", ");
        if !local.v4.is_empty() {
            let e = join(local.v4.iter().map(|a| a.to_string()).collect());
            s += &format!("add element netdev {TABLE} local4 {{ {e} }}\n");
        }
        if !local.v6.is_empty() {
            let e = join(local.v6.iter().map(|a| a.to_string()).collect());
            s += &format!("add element netdev {TABLE} local6 {{ {e} }}\n");
        }
        s
    }

    /// Replaces the address sets (one transaction).
    pub fn update(&self, local: &LocalAddrs) -> Result<(), GuardError> {
        guard::nft(&Self::elements(local))
    }

    /// Removes the table now (also done on drop).
    pub fn remove(&mut self) -> Result<(), GuardError> {
        if std::mem::take(&mut self.installed) {
            guard::nft(&format!("delete table netdev {TABLE}\n"))?;
        }
        Ok(())
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("uvs tunnel-endpoint: removing nftables table netdev {TABLE}: {e}");
        }
    }
}

/// The receive side's per-round context (what the ring callback touches).
struct Ctx<'a> {
    tun: &'a TunDev,
    local: &'a LocalAddrs,
    gue_ports: &'a [u16],
    c: &'a mut Counters,
}

/// Handles one ring frame: decide, deliver, count.
fn on_frame(ctx: &mut Ctx<'_>, f: crate::io::RxFrame<'_>) {
    // From the virtio-net header on (the ring keeps its raw bytes right
    // before the frame; the headroom before it is unused here).
    let buf = &mut f.buf[f.at - VNET_HDR_LEN..];
    if let Some(skip) = f.skip {
        // A frame the ring truncated keeps its headers: count it when they
        // say tunnel (it cannot be delivered; the guard drops it for the
        // kernel too).
        if skip == RxSkip::Truncated
            && buf
                .get(VNET_HDR_LEN..)
                .is_some_and(|fr| looks_tunnel(fr, ctx.gue_ports))
        {
            ctx.c.drops[DropReason::Truncated as usize] += 1;
        }
        return;
    }
    let o = process(buf, ctx.local, ctx.gue_ports);
    ctx.c.count(&o);
    if let Outcome::Deliver {
        start,
        end,
        kind,
        offload,
    } = o
    {
        match ctx.tun.write_packet(&buf[start..end]) {
            Ok(()) => {
                ctx.c.decap[kind_index(kind)] += 1;
                ctx.c.bytes += (end - start - VNET_HDR_LEN) as u64;
                match offload {
                    Offload::None => {}
                    Offload::Completed => ctx.c.csum_completed += 1,
                    Offload::Gso => ctx.c.gso += 1,
                }
            }
            Err(_) => ctx.c.drops[DropReason::TunWrite as usize] += 1,
        }
    }
}

fn write_stats(path: &std::path::Path, c: &Counters) -> io::Result<()> {
    // Write then rename: a reader never sees half a file.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, c.render())?;
    std::fs::rename(&tmp, path)
}

/// Runs the endpoint until `stop` is set (SIGINT/SIGTERM); returns the
/// final counters. Everything it installed is removed before it returns.
pub fn run(opts: &EndpointOpts, stop: &AtomicBool) -> Result<Counters, TunnelError> {
    let ifaces = engine::interfaces(&opts.interfaces)?;
    let mut local = LocalAddrs::from_system();
    // Clean a stale table first, so a crashed run's rules never outlive it.
    remove_stale()?;
    let tun = TunDev::open(&opts.tun_name).map_err(|err| TunnelError::Tun {
        name: opts.tun_name.clone(),
        err,
    })?;
    relax_rp_filter(&tun.name)?;
    let mut poll = Poll::new()?;
    let mut rings = Vec::with_capacity(ifaces.len());
    // Fanout group ids are per namespace; keep clear of `uvs run`'s.
    let group_base = (std::process::id() as u16).wrapping_mul(13) ^ 0x5a00;
    for (k, ifc) in ifaces.iter().enumerate() {
        let ring = RxRing::open(
            ifc.index,
            group_base.wrapping_add(k as u16),
            opts.ring_frames.max(2),
        )
        .map_err(|err| TunnelError::Ring {
            iface: ifc.name.clone(),
            err,
        })?;
        poll.registry().register(
            &mut SourceFd(&ring.as_raw_fd()),
            Token(k),
            Interest::READABLE,
        )?;
        rings.push(ring);
    }
    poll.registry().register(
        &mut SourceFd(&tun.as_raw_fd()),
        TUN_TOKEN,
        Interest::READABLE,
    )?;
    let names: Vec<String> = ifaces.iter().map(|i| i.name.clone()).collect();
    let mut nft = TunnelGuard::install(&names, &opts.gue_ports, &local)?;
    let mut c = Counters::default();
    if let Some(p) = &opts.stats_file {
        write_stats(p, &c)?;
    }
    eprintln!(
        "uvs tunnel-endpoint: {} up; receiving on {}; GUE ports: {}",
        tun.name,
        names.join(", "),
        if opts.gue_ports.is_empty() {
            "none".to_string()
        } else {
            opts.gue_ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let mut events = Events::with_capacity(64);
    let mut scratch = vec![0u8; 65_536];
    let mut last_refresh = Instant::now();
    let (mut last_stats, mut written) = (Instant::now(), c.clone());
    while !stop.load(Ordering::Relaxed) {
        // Edge-triggered: every ring is drained fully each round; the
        // timeout bounds how late a stop or an address change is seen.
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(100))) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e.into());
            }
        }
        loop {
            let mut got = 0;
            for ring in &mut rings {
                let mut ctx = Ctx {
                    tun: &tun,
                    local: &local,
                    gue_ports: &opts.gue_ports,
                    c: &mut c,
                };
                let batch = ring.rx_batch(BATCH);
                while let Some(f) = batch.next_frame() {
                    got += 1;
                    on_frame(&mut ctx, f);
                }
            }
            if got == 0 {
                break;
            }
        }
        if events.iter().any(|e| e.token() == TUN_TOKEN) {
            c.tun_discarded += tun.discard(&mut scratch);
        }
        if last_refresh.elapsed() >= ADDR_REFRESH {
            last_refresh = Instant::now();
            let now = LocalAddrs::from_system();
            if now != local {
                if let Err(e) = nft.update(&now) {
                    eprintln!("uvs tunnel-endpoint: updating the address sets: {e}");
                }
                local = now;
            }
        }
        if let Some(p) = &opts.stats_file {
            if c != written && last_stats.elapsed() >= STATS_EVERY {
                write_stats(p, &c)?;
                (last_stats, written) = (Instant::now(), c.clone());
            }
        }
    }
    nft.remove()?;
    if let Some(p) = &opts.stats_file {
        write_stats(p, &c)?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uvs_fwd::build::FrameSpec;
    use uvs_fwd::xmit::tun::{encap, TunCsum, TunParams, MAX_OVERHEAD};
    use uvs_fwd::CsumMode;

    const RS: &str = "203.0.113.11";
    const LB: &str = "203.0.113.1";

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal address")
    }

    fn local() -> LocalAddrs {
        LocalAddrs::new([ip(RS), ip("2001:db8:5::11"), ip("192.0.2.10")])
    }

    /// A ring-like buffer (virtio header + frame) of `spec` encapsulated
    /// with `params`; `vnet` is the RX virtio header.
    fn tunnelled(spec: &FrameSpec, params: &TunParams, vnet: VnetHdr) -> (Vec<u8>, Vec<u8>) {
        let (b, inner, _) = tunnelled_pending(spec, params, vnet);
        (b, inner)
    }

    /// [`tunnelled`], also returning where the director left the inner
    /// checksum pending (frame offsets), if it did.
    fn tunnelled_pending(
        spec: &FrameSpec,
        params: &TunParams,
        vnet: VnetHdr,
    ) -> (Vec<u8>, Vec<u8>, Option<(usize, usize)>) {
        let frame = spec.build();
        let mut buf = vec![0u8; MAX_OVERHEAD];
        buf.extend_from_slice(&frame);
        let p = uvs_fwd::parse(&buf[MAX_OVERHEAD..]).expect("inner parses");
        let e = encap(&mut buf, MAX_OVERHEAD, &p, params, 7, spec.csum).expect("encap");
        let mut out = vec![0u8; VNET_HDR_LEN];
        vnet.write_to(&mut out);
        out.extend_from_slice(&buf[e.start..e.start + e.len]);
        // The inner IP packet as it must reach the stack (TTL decremented by
        // the director's forwarding).
        let l3 = 14;
        let mut inner = frame[l3..].to_vec();
        if spec.src.is_ipv4() {
            let mut ipk = ipv4::Packet::new_unchecked(&mut inner[..]);
            ipk.set_ttl(spec.ttl - 1);
            ipk.fill_checksum();
        } else {
            inner[7] = spec.ttl - 1;
        }
        (out, inner, e.pending.map(|p| (p.start, p.offset)))
    }

    fn delivered(buf: &[u8], o: Outcome) -> (VnetHdr, &[u8]) {
        let Outcome::Deliver { start, end, .. } = o else {
            panic!("not delivered: {o:?}");
        };
        let h: &[u8; VNET_HDR_LEN] = buf[start..start + VNET_HDR_LEN]
            .try_into()
            .expect("ten bytes");
        (VnetHdr::read(h), &buf[start + VNET_HDR_LEN..end])
    }

    fn params(kind: TunKind, outer_v6: bool) -> TunParams {
        let (src, dst) = if outer_v6 {
            (ip("2001:db8:5::1"), ip("2001:db8:5::11"))
        } else {
            (ip(LB), ip(RS))
        };
        let mut p = TunParams::new(kind, src, dst);
        p.port = 6080;
        p
    }

    #[test]
    fn every_kind_and_family_mix_is_delivered_unchanged() {
        for kind in [TunKind::Ipip, TunKind::Gre, TunKind::Gue] {
            for outer_v6 in [false, true] {
                for spec in [FrameSpec::udp_v4(), FrameSpec::tcp_v6()] {
                    let (mut buf, inner) =
                        tunnelled(&spec, &params(kind, outer_v6), VnetHdr::default());
                    let o = process(&mut buf, &local(), &[6080]);
                    let (h, pkt) = delivered(&buf, o);
                    assert_eq!(h, VnetHdr::default(), "{kind:?} v6={outer_v6}");
                    assert_eq!(pkt, &inner[..], "{kind:?} outer v6={outer_v6}");
                    assert!(matches!(o, Outcome::Deliver { kind: k, .. } if k == kind));
                }
            }
        }
    }

    #[test]
    fn outer_checksums_are_verified() {
        for kind in [TunKind::Gre, TunKind::Gue] {
            let mut p = params(kind, false);
            p.csum = TunCsum::Csum;
            let (mut buf, _) = tunnelled(&FrameSpec::udp_v4(), &p, VnetHdr::default());
            assert!(matches!(
                process(&mut buf.clone(), &local(), &[6080]),
                Outcome::Deliver { .. }
            ));
            // Flip a payload byte: the tunnel checksum no longer matches.
            let n = buf.len();
            buf[n - 1] ^= 0x55;
            assert_eq!(
                process(&mut buf, &local(), &[6080]),
                Outcome::Drop(DropReason::Checksum),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn pending_inner_checksum_is_completed_and_outer_gue_checksum_verifies() {
        let mut spec = FrameSpec::tcp_v4();
        spec.csum = CsumMode::Partial;
        let mut p = params(TunKind::Gue, false);
        p.csum = TunCsum::Csum;
        // Where the director's engine would say the inner checksum starts.
        let mut full = spec.clone();
        full.csum = CsumMode::Full;
        let (_, want) = tunnelled(&full, &p, VnetHdr::default());
        let (probe, _, pending) = tunnelled_pending(&spec, &p, VnetHdr::default());
        let (start, offset) = pending.expect("the director leaves it pending");
        // outer: 14 eth + 20 ip + 8 udp + 4 gue, then inner IP 20: TCP at 66.
        assert_eq!((start, offset), (14 + 20 + 8 + 4 + 20, 16));
        let vnet = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            csum_start: start as u16,
            csum_offset: offset as u16,
            ..VnetHdr::default()
        };
        let mut buf = probe.clone();
        vnet.write_to(&mut buf[..VNET_HDR_LEN]);
        let o = process(&mut buf, &local(), &[6080]);
        assert!(matches!(
            o,
            Outcome::Deliver {
                offload: Offload::Completed,
                ..
            }
        ));
        let (h, pkt) = delivered(&buf, o);
        assert_eq!(h.flags, VNET_F_DATA_VALID);
        assert_eq!(pkt, &want[..]);
    }

    #[test]
    fn gso_metadata_is_rebased_onto_the_inner_packet() {
        let mut spec = FrameSpec::tcp_v4();
        spec.csum = CsumMode::Partial;
        spec.payload = vec![7; 3000];
        let (mut buf, inner) = tunnelled(&spec, &params(TunKind::Ipip, false), VnetHdr::default());
        let tcp_start = 14 + 20 + 20;
        VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: 1, // VIRTIO_NET_HDR_GSO_TCPV4
            hdr_len: (tcp_start + 20) as u16,
            gso_size: 1448,
            csum_start: tcp_start as u16,
            csum_offset: 16,
        }
        .write_to(&mut buf[..VNET_HDR_LEN]);
        let o = process(&mut buf, &local(), &[]);
        assert!(matches!(
            o,
            Outcome::Deliver {
                offload: Offload::Gso,
                ..
            }
        ));
        let (h, pkt) = delivered(&buf, o);
        assert_eq!(
            h,
            VnetHdr {
                flags: VNET_F_NEEDS_CSUM,
                gso_type: 1,
                hdr_len: 40,
                gso_size: 1448,
                csum_start: 20,
                csum_offset: 16,
            }
        );
        assert_eq!(pkt, &inner[..]);
        // Offsets pointing into the outer header are refused.
        let (mut buf, _) = tunnelled(&spec, &params(TunKind::Ipip, false), VnetHdr::default());
        VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: 1,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
            ..VnetHdr::default()
        }
        .write_to(&mut buf[..VNET_HDR_LEN]);
        assert_eq!(
            process(&mut buf, &local(), &[]),
            Outcome::Drop(DropReason::BadOffload)
        );
    }

    #[test]
    fn other_traffic_is_passed_and_foreign_tunnels_not_local() {
        // Plain UDP to the host, and UDP to a port that is not GUE's.
        let mut plain = vec![0u8; VNET_HDR_LEN];
        let mut s = FrameSpec::udp_v4();
        s.dst = ip(RS);
        plain.extend_from_slice(&s.build());
        assert_eq!(process(&mut plain, &local(), &[6080]), Outcome::Pass);
        let (mut gue, _) = tunnelled(
            &FrameSpec::udp_v4(),
            &params(TunKind::Gue, false),
            VnetHdr::default(),
        );
        assert_eq!(process(&mut gue.clone(), &local(), &[5555]), Outcome::Pass);
        // Addressed to someone else.
        let foreign = LocalAddrs::new([ip("203.0.113.12")]);
        assert_eq!(process(&mut gue, &foreign, &[6080]), Outcome::NotLocal);
        // Too short to hold a virtio header.
        assert_eq!(process(&mut [0u8; 3], &local(), &[]), Outcome::Pass);
    }

    #[test]
    fn malformed_candidates_are_dropped_by_reason() {
        // ipip whose inner header announces more than the outer carries.
        let (mut buf, _) = tunnelled(
            &FrameSpec::udp_v4(),
            &params(TunKind::Ipip, false),
            VnetHdr::default(),
        );
        let inner = VNET_HDR_LEN + 14 + 20;
        buf[inner + 2] = 0x05; // total length 0x05xx
        assert_eq!(
            process(&mut buf, &local(), &[]),
            Outcome::Drop(DropReason::BadInner)
        );
        // Bad outer IPv4 header checksum.
        let (mut buf, _) = tunnelled(
            &FrameSpec::udp_v4(),
            &params(TunKind::Gre, false),
            VnetHdr::default(),
        );
        buf[VNET_HDR_LEN + 14 + 10] ^= 0xff;
        assert_eq!(
            process(&mut buf, &local(), &[]),
            Outcome::Drop(DropReason::BadOuter)
        );
    }

    /// Every truncation and every single-byte corruption of valid tunnel
    /// packets: never a panic, and a delivery stays inside the buffer.
    #[test]
    fn malformed_input_never_panics() {
        for kind in [TunKind::Ipip, TunKind::Gre, TunKind::Gue] {
            for outer_v6 in [false, true] {
                let (buf, _) = tunnelled(
                    &FrameSpec::tcp_v6(),
                    &params(kind, outer_v6),
                    VnetHdr {
                        flags: VNET_F_NEEDS_CSUM,
                        csum_start: 70,
                        csum_offset: 16,
                        ..VnetHdr::default()
                    },
                );
                for cut in 0..buf.len() {
                    let mut b = buf[..cut].to_vec();
                    check(&mut b);
                }
                for i in 0..buf.len() {
                    for x in [0x01u8, 0x80, 0xff] {
                        let mut b = buf.clone();
                        b[i] ^= x;
                        check(&mut b);
                    }
                }
            }
        }
        fn check(b: &mut [u8]) {
            let n = b.len();
            if let Outcome::Deliver { start, end, .. } = process(b, &local(), &[6080]) {
                assert!(start + VNET_HDR_LEN <= end && end <= n);
            }
        }
    }

    #[test]
    fn truncated_frames_are_recognised_from_their_headers() {
        let (buf, _) = tunnelled(
            &FrameSpec::udp_v4(),
            &params(TunKind::Gue, false),
            VnetHdr::default(),
        );
        let frame = &buf[VNET_HDR_LEN..];
        let cut = &frame[..14 + 20 + 8];
        assert!(candidate(cut, &[6080]).is_none());
        assert!(looks_tunnel(cut, &[6080]));
        assert!(!looks_tunnel(cut, &[5555]));
        let (buf, _) = tunnelled(
            &FrameSpec::tcp_v6(),
            &params(TunKind::Gre, true),
            VnetHdr::default(),
        );
        assert!(looks_tunnel(&buf[VNET_HDR_LEN..VNET_HDR_LEN + 60], &[]));
        let mut plain = FrameSpec::udp_v4();
        plain.dst = ip(RS);
        assert!(!looks_tunnel(&plain.build()[..40], &[6080]));
    }

    #[test]
    fn counters_render_every_name() {
        let mut c = Counters::default();
        c.count(&Outcome::Drop(DropReason::Checksum));
        c.count(&Outcome::NotLocal);
        c.decap[kind_index(TunKind::Gre)] = 2;
        let r = c.render();
        assert!(r.contains("decap.gre 2\n"), "{r}");
        assert!(r.contains("drop.checksum 1\n"), "{r}");
        assert!(r.contains("pass.not_local 1\n"), "{r}");
        assert_eq!(r.lines().count(), 3 + 4 + DropReason::COUNT + 1);
    }
}
