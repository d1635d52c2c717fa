//! The data path of local clients ([`crate::sys::local_out`] sets the
//! device up): the TUN device `uvs-lo` as one more RX source of worker 0
//! and, for every worker, the sink that writes local clients' replies
//! into it.
//!
//! * **RX** ([`LocalRx`]): a round reads up to [`SLOTS`] packets with
//!   `read(2)` (a TUN fd hands out one packet per call) into slots owned
//!   here, each with headroom and a placeholder Ethernet header in front
//!   of the IP packet (zero MACs, the ethertype of its version): the form
//!   [`crate::datapath::pipeline::Pipeline::process_local_out`] takes. The
//!   frames then go through the pipeline (LOCAL_OUT) and the egress stage
//!   and leave, in place, in one TX batch of the worker.
//! * **Delivery** ([`LocalSink::deliver`]): a packet the pipeline
//!   rewrote for a local-client address (a real server's reply, un-NATed)
//!   loses its Ethernet header and is written into the TUN with its
//!   virtio-net header (checksum and GSO offsets rebased from the frame
//!   onto the IP packet), so the stack delivers it to the local socket. A
//!   TUN fd takes one packet per `write(2)`: that is one syscall per reply
//!   packet, as in the tunnel endpoint. Nothing here allocates per packet.
//! * Counters: per worker, on their own cache lines (`local.from_tun`,
//!   `local.to_tun`); losses under drop reasons.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::datapath::egress::HEADROOM;
use crate::datapath::stats::{add, DropReason, WorkerStats};
use crate::io::{RxFrame, VnetHdr};
use crate::tunnel::TunDev;

/// Packets read from the TUN per round.
pub const SLOTS: usize = 32;
/// Largest IP packet read (the TUN has no offloads turned on, so the stack
/// sends at most the device's MTU; 64 KiB covers any MTU).
const PKT_MAX: usize = 65_536;
const ETH: usize = 14;
const VNET: usize = VnetHdr::LEN;

/// One worker's counters, alone on their cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    from_tun: AtomicU64,
    to_tun: AtomicU64,
}

/// Per-worker counters of the local-client device.
#[derive(Debug)]
pub struct LocalStats {
    slots: Vec<Slot>,
}

impl LocalStats {
    /// Counters for `workers` workers.
    pub fn new(workers: usize) -> LocalStats {
        LocalStats {
            slots: (0..workers.max(1)).map(|_| Slot::default()).collect(),
        }
    }

    fn slot(&self, worker: usize) -> &Slot {
        &self.slots[worker % self.slots.len()]
    }

    /// (packets read from the TUN, packets written into it), summed.
    pub fn sums(&self) -> (u64, u64) {
        self.slots.iter().fold((0, 0), |(f, t), s| {
            (f + s.from_tun.load(Relaxed), t + s.to_tun.load(Relaxed))
        })
    }
}

/// The device and the local-client addresses, shared by the workers.
#[derive(Debug, Clone)]
pub struct LocalIo {
    /// The TUN device `uvs-lo`.
    pub tun: Arc<TunDev>,
    /// The IPv4 local-client address, if any.
    pub v4: Option<Ipv4Addr>,
    /// The IPv6 local-client address, if any.
    pub v6: Option<Ipv6Addr>,
    /// The counters.
    pub stats: Arc<LocalStats>,
}

/// One worker's delivery into the TUN.
#[derive(Debug)]
pub struct LocalSink {
    io: LocalIo,
    worker: usize,
}

impl LocalSink {
    /// Worker `worker`'s sink.
    pub fn new(io: LocalIo, worker: usize) -> LocalSink {
        LocalSink { io, worker }
    }

    /// Whether `dst` is a local-client address (its packets go to the TUN).
    #[inline]
    pub fn owns(&self, dst: IpAddr) -> bool {
        match dst {
            IpAddr::V4(a) => self.io.v4 == Some(a),
            IpAddr::V6(a) => self.io.v6 == Some(a),
        }
    }

    /// Writes the rewritten frame `frame` (Ethernet header first) into the
    /// TUN, its Ethernet header replaced by the virtio-net header `vnet`
    /// rebased onto the IP packet.
    pub fn deliver(&self, frame: &mut [u8], vnet: VnetHdr, st: &WorkerStats) {
        if frame.len() <= ETH {
            st.drop(DropReason::Malformed);
            return;
        }
        // Offsets count from the frame's start on RX, from the IP header
        // in a TUN device's (IFF_TUN) header.
        let h = rebase(vnet, false);
        let pkt = &mut frame[ETH - VNET..];
        h.write_to(pkt);
        match self.io.tun.write_packet(pkt) {
            Ok(()) => add(&self.io.stats.slot(self.worker).to_tun, 1),
            Err(_) => st.drop(DropReason::LocalTunWrite),
        }
    }
}

/// Whether the placeholder frame `frame` carries a multicast packet.
pub fn is_multicast(frame: &[u8]) -> bool {
    match frame.get(ETH).map(|b| b >> 4) {
        Some(4) => frame.get(ETH + 16).is_some_and(|b| (224..240).contains(b)),
        Some(6) => frame.get(ETH + 24) == Some(&0xff),
        _ => false,
    }
}

/// `h` with its offsets moved onto the frame (`onto_frame`: past a
/// prepended Ethernet header) or back onto the IP packet; a header that
/// uses no offsets stays as it is.
fn rebase(mut h: VnetHdr, onto_frame: bool) -> VnetHdr {
    let e = ETH as u16;
    if h.needs_csum() {
        h.csum_start = if onto_frame {
            h.csum_start.saturating_add(e)
        } else {
            h.csum_start.saturating_sub(e)
        };
    }
    if h.is_gso() {
        h.hdr_len = if onto_frame {
            h.hdr_len.saturating_add(e)
        } else {
            h.hdr_len.saturating_sub(e)
        };
    }
    h
}

/// One read packet: `buf[at..at + len]` is its placeholder frame.
#[derive(Debug)]
struct Packet {
    buf: Box<[u8]>,
    len: usize,
    vnet: VnetHdr,
}

/// Where the placeholder frame starts in a slot (the TX headroom before).
const AT: usize = HEADROOM;

/// Worker 0's reader of the TUN.
#[derive(Debug)]
pub struct LocalRx {
    io: LocalIo,
    ifindex: u32,
    slots: Vec<Packet>,
}

impl LocalRx {
    /// A reader of `io`'s device (interface index `ifindex`).
    pub fn new(io: LocalIo, ifindex: u32) -> LocalRx {
        let slots = (0..SLOTS)
            .map(|_| Packet {
                buf: vec![0u8; AT + ETH + PKT_MAX].into_boxed_slice(),
                len: 0,
                vnet: VnetHdr::default(),
            })
            .collect();
        LocalRx { io, ifindex, slots }
    }

    /// The device's fd, to poll.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.io.tun.as_raw_fd()
    }

    /// Reads what the stack sent (at most [`SLOTS`] packets) and hands
    /// each, as a frame at LOCAL_OUT, to `each`. Returns how many, and
    /// whether the device is drained (a read found nothing, or failed).
    pub fn round<'b>(
        &'b mut self,
        st: &WorkerStats,
        mut each: impl FnMut(RxFrame<'b>),
    ) -> (usize, bool) {
        let fd = self.io.tun.as_raw_fd();
        let mut n = 0;
        let mut drained = false;
        let mut reads = 0;
        while n < SLOTS && reads < 2 * SLOTS {
            reads += 1;
            let p = &mut self.slots[n];
            // The virtio-net header lands where the Ethernet header ends,
            // the IP packet right after.
            let into = &mut p.buf[AT + ETH - VNET..];
            // SAFETY: read(2) into a live buffer of the length passed.
            let r = unsafe { libc::read(fd, into.as_mut_ptr().cast(), into.len()) };
            if r < 0 {
                drained = true;
                break;
            }
            // Shorter than any IP header: not a packet to process.
            if r <= (VNET + 20) as isize {
                st.drop(DropReason::Malformed);
                continue;
            }
            let r = r as usize;
            let vnet = rebase(VnetHdr::read_from(into).unwrap_or_default(), true);
            let ethertype: u16 = match into[VNET] >> 4 {
                6 => 0x86dd,
                _ => 0x0800,
            };
            let eth = &mut p.buf[AT..AT + ETH];
            eth[..12].fill(0);
            eth[12..].copy_from_slice(&ethertype.to_be_bytes());
            p.len = ETH + r - VNET;
            p.vnet = vnet;
            n += 1;
        }
        let stats = &self.io.stats;
        add(&stats.slot(0).from_tun, n as u64);
        for p in self.slots[..n].iter_mut() {
            let wire_len = p.len;
            let buf = &mut p.buf[..AT + wire_len];
            each(RxFrame {
                buf,
                at: AT,
                vnet: p.vnet,
                wire_len,
                ifindex: self.ifindex,
                skip: None,
            });
        }
        (n, drained)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::VNET_F_NEEDS_CSUM;

    #[test]
    fn offsets_move_past_the_placeholder_header_and_back() {
        let h = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: 1,
            hdr_len: 40,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        let f = rebase(h, true);
        assert_eq!((f.csum_start, f.hdr_len, f.csum_offset), (34, 54, 16));
        assert_eq!(rebase(f, false), h);
        // A header without offload fields is left as it is.
        let none = VnetHdr::default();
        assert_eq!(rebase(none, true), none);
        assert_eq!(rebase(none, false), none);
    }

    #[test]
    fn multicast_is_told_from_unicast_by_version_and_destination() {
        let mut v4 = vec![0u8; ETH + 20];
        v4[ETH] = 0x45;
        v4[ETH + 16] = 224;
        assert!(is_multicast(&v4));
        v4[ETH + 16] = 192;
        assert!(!is_multicast(&v4));
        let mut v6 = vec![0u8; ETH + 40];
        v6[ETH] = 0x60;
        v6[ETH + 24] = 0xff;
        assert!(is_multicast(&v6));
        v6[ETH + 24] = 0x20;
        assert!(!is_multicast(&v6));
        assert!(!is_multicast(&v6[..ETH]));
    }

    #[test]
    fn counters_are_summed_over_workers() {
        let s = LocalStats::new(3);
        add(&s.slot(0).from_tun, 2);
        add(&s.slot(2).to_tun, 5);
        add(&s.slot(4).to_tun, 1);
        assert_eq!(s.sums(), (2, 6));
    }
}
