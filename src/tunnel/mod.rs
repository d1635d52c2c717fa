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
//! * **Admission** ([`policy`]): only packets from the configured
//!   directors are decapsulated, and only inner packets to an address of
//!   this host from a source that is neither local nor martian are
//!   delivered; the rest are dropped and counted by reason.
//! * **Delivery**: the inner packet goes to a TUN device (`IFF_TUN`,
//!   `IFF_NO_PI`, `IFF_VNET_HDR`), i.e. into the local stack as if it had
//!   arrived on that device. Its reverse-path filter is left as the host set
//!   it (a strict one would drop the clients' packets: the endpoint warns at
//!   start, and `uvs tunnel-endpoint`'s prerequisite check refuses
//!   it). A TUN fd takes one packet per
//!   `write(2)`: that write is the one syscall per packet this path makes;
//!   nothing allocates per packet.
//! * **Kernel guard**: an nftables table `netdev uvs_tun` drops, at ingress,
//!   the outer tunnel packets addressed to this host, so the kernel does not
//!   answer them with ICMP protocol/port unreachable (the ring sees them
//!   first: packet taps run before ingress hooks). It is replaced at start (a
//!   stale one from a crash is cleaned) and removed on exit, SIGINT/SIGTERM
//!   included. Its address sets follow the host's addresses: the endpoint
//!   subscribes to the kernel's address notifications (`RTNLGRP_IPV4_IFADDR`,
//!   `RTNLGRP_IPV6_IFADDR`) and re-reads the addresses once per burst of
//!   them, never on a timer.
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
use std::os::fd::AsRawFd;
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
use crate::sys::netlink;

const VNET_HDR_LEN: usize = VnetHdr::LEN;

mod dev;
mod nft;
pub mod policy;

use crate::sys::guard::GuardError;
use dev::strict_rp_filter;
pub use dev::TunDev;
pub use nft::{remove_stale, TunnelGuard};
pub use policy::Directors;

/// The nftables table of the endpoint (`netdev uvs_tun`).
pub const TABLE: &str = "uvs_tun";

/// Frames drained per ring per round.
const BATCH: usize = 64;
/// How often the rings' kernel drop counters are read.
const DROPS_EVERY: Duration = Duration::from_secs(1);
/// How often a changed stats file is rewritten.
const STATS_EVERY: Duration = Duration::from_millis(200);
const TUN_TOKEN: Token = Token(usize::MAX);
const ADDR_TOKEN: Token = Token(usize::MAX - 1);

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
    /// Outer source addresses whose packets are decapsulated (`--director`).
    pub directors: Vec<IpAddr>,
    /// Decapsulate every host's packets (`--any-director`).
    pub any_director: bool,
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
    /// Neither `--director` nor `--any-director` was given.
    #[error(
        "no --director given: name the directors whose tunnel packets to accept \
         (--director ADDR, repeatable), or accept every host with --any-director"
    )]
    NoDirectors,
}

/// Why a tunnel candidate (or, for `RxQueueFull`, any packet) was dropped.
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
    /// The kernel could not put a packet (candidate or not) in a full RX
    /// ring (`PACKET_STATISTICS`, read with the address refresh).
    RxQueueFull,
    /// The outer source is not one of the directors.
    NotDirector,
    /// The inner destination is not an address of this host.
    InnerDstNotLocal,
    /// The inner source is an address of this host.
    InnerSrcLocal,
    /// The inner source is a martian (see [`policy::martian`]).
    InnerSrcMartian,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 15;
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
        DropReason::RxQueueFull,
        DropReason::NotDirector,
        DropReason::InnerDstNotLocal,
        DropReason::InnerSrcLocal,
        DropReason::InnerSrcMartian,
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
            DropReason::RxQueueFull => "rx_queue_full",
            DropReason::NotDirector => "not_director",
            DropReason::InnerDstNotLocal => "inner_dst_not_local",
            DropReason::InnerSrcLocal => "inner_src_local",
            DropReason::InnerSrcMartian => "inner_src_martian",
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
    /// Times the host's addresses were re-read because the kernel announced
    /// an address change (there is no periodic re-read).
    pub addr_events: u64,
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
        let _ = writeln!(s, "addr.rereads {}", self.addr_events);
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
    pub fn from_system() -> Result<LocalAddrs, TunnelError> {
        let addrs = netlink::addrs().map_err(|e| TunnelError::Addresses(io::Error::other(e)))?;
        Ok(LocalAddrs::new(addrs.into_iter().map(|(_, a)| a)))
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
/// port), its outer source and destination and the end of its outer IP
/// packet.
fn candidate(frame: &[u8], gue_ports: &[u16]) -> Option<(IpAddr, IpAddr, usize)> {
    let e = ethernet::Frame::new_checked(frame)
        .and_then(|f| f.encap())
        .ok()?;
    let l3 = frame.get(e.l3_off..)?;
    let (src, dst, proto, l4, end, first_fragment) = match e.ethertype {
        ethertype::IPV4 => {
            let ip = ipv4::Packet::new_checked(l3).ok()?;
            (
                IpAddr::V4(ip.src_addr()),
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
                IpAddr::V6(ip.src_addr()),
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
    tunnel.then_some((src, dst, e.l3_off + end))
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
///
/// [`process_from`] with every host a director.
pub fn process(buf: &mut [u8], local: &LocalAddrs, gue_ports: &[u16]) -> Outcome {
    process_from(buf, local, gue_ports, &Directors::Any)
}

/// [`process`], decapsulating only packets from `directors` (and, in
/// either, delivering only inner packets [`policy::refuse_inner`] admits).
pub fn process_from(
    buf: &mut [u8],
    local: &LocalAddrs,
    gue_ports: &[u16],
    directors: &Directors,
) -> Outcome {
    let Some((hdr, frame)) = buf.split_first_chunk_mut::<VNET_HDR_LEN>() else {
        return Outcome::Pass;
    };
    let Some((src, dst, ip_end)) = candidate(frame, gue_ports) else {
        return Outcome::Pass;
    };
    if !local.contains(dst) {
        return Outcome::NotLocal;
    }
    if !directors.admits(src) {
        return Outcome::Drop(DropReason::NotDirector);
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
    let inner = frame.get(d.offset..d.offset + d.len).unwrap_or(&[]);
    if let Some(r) = policy::refuse_inner(inner, local) {
        return Outcome::Drop(r);
    }
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

/// The receive side's per-round context (what the ring callback touches).
struct Ctx<'a> {
    tun: &'a TunDev,
    local: &'a LocalAddrs,
    gue_ports: &'a [u16],
    directors: &'a Directors,
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
    let o = process_from(buf, ctx.local, ctx.gue_ports, ctx.directors);
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
    let directors = match (opts.any_director, &opts.directors[..]) {
        (true, _) => {
            eprintln!(
                "uvs tunnel-endpoint: WARNING: --any-director: tunnel packets from every host \
                 are decapsulated; anyone who reaches this host can put packets with any \
                 client address into its stack. Name the directors with --director ADDR."
            );
            Directors::Any
        }
        (false, []) => return Err(TunnelError::NoDirectors),
        (false, d) => Directors::Only(d.to_vec()),
    };
    let ifaces = engine::interfaces(&opts.interfaces)?;
    // Subscribed before the first read: no change between the two is missed.
    let mut addr_events = netlink::Events::subscribe(&netlink::Group::ADDRS)
        .map_err(|e| TunnelError::Addresses(io::Error::other(e)))?;
    let mut local = LocalAddrs::from_system()?;
    // Clean a stale table first, so a crashed run's rules never outlive it.
    remove_stale()?;
    let tun = TunDev::open(&opts.tun_name).map_err(|err| TunnelError::Tun {
        name: opts.tun_name.clone(),
        err,
    })?;
    if strict_rp_filter(&tun.name)? {
        eprintln!(
            "uvs tunnel-endpoint: WARNING: IPv4 rp_filter is strict (1) on {}: the kernel \
             drops decapsulated packets whose client is routed elsewhere; set \
             net.ipv4.conf.all.rp_filter and net.ipv4.conf.default.rp_filter to 0 or 2 \
             (uvs leaves it as the host set it)",
            tun.name
        );
    }
    let mut poll = Poll::new()?;
    let mut rings = Vec::with_capacity(ifaces.len());
    // Fanout group ids are per namespace; keep clear of `uvs run`'s.
    let group_base = (std::process::id() as u16).wrapping_mul(13) ^ 0x5a00;
    for (k, ifc) in ifaces.iter().enumerate() {
        let ring = RxRing::open(
            ifc.index,
            group_base.wrapping_add(k as u16),
            opts.ring_frames.max(2),
            crate::io::Fanout::Cpu,
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
    poll.registry().register(
        &mut SourceFd(&addr_events.as_raw_fd()),
        ADDR_TOKEN,
        Interest::READABLE,
    )?;
    let names: Vec<String> = ifaces.iter().map(|i| i.name.clone()).collect();
    let mut nft = TunnelGuard::install(&names, &opts.gue_ports, &local)?;
    let mut c = Counters::default();
    if let Some(p) = &opts.stats_file {
        write_stats(p, &c)?;
    }
    eprintln!(
        "uvs tunnel-endpoint: {} up; receiving on {}; directors: {}; GUE ports: {}",
        tun.name,
        names.join(", "),
        match &directors {
            Directors::Any => "any".to_string(),
            Directors::Only(v) => v
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        },
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
    let mut last_drops = Instant::now();
    let mut addr_pending = false;
    let (mut last_stats, mut written) = (Instant::now(), c.clone());
    while !stop.load(Ordering::Relaxed) {
        // Edge-triggered: every ring is drained fully each round; the
        // timeout bounds how late a stop is seen.
        let wait = if addr_pending {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        if let Err(e) = poll.poll(&mut events, Some(wait)) {
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
                    directors: &directors,
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
        if addr_pending || events.iter().any(|e| e.token() == ADDR_TOKEN) {
            // Edge-triggered: drain the notifications (the rest next round
            // if a flood stopped the drain), then re-read once.
            let mut changed = false;
            match addr_events.drain(|_| changed = true) {
                Ok(n) => addr_pending = n >= netlink::Events::DRAIN_MAX,
                Err(e) => {
                    addr_pending = false;
                    eprintln!("uvs tunnel-endpoint: reading address notifications: {e}");
                }
            }
            if changed {
                c.addr_events += 1;
                match LocalAddrs::from_system() {
                    Ok(now) if now != local => {
                        if let Err(e) = nft.update(&now) {
                            eprintln!("uvs tunnel-endpoint: updating the address sets: {e}");
                        }
                        local = now;
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("uvs tunnel-endpoint: {e}"),
                }
            }
        }
        if last_drops.elapsed() >= DROPS_EVERY {
            last_drops = Instant::now();
            for ring in &mut rings {
                if let Ok(n) = ring.take_kernel_drops() {
                    c.drops[DropReason::RxQueueFull as usize] += n;
                }
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
mod tests;
