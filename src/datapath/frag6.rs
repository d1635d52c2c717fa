//! Fragments of connections, without reassembly: the first fragment
//! carries the ports and goes through the pipeline like any packet; what
//! was decided for it (NAT to which address, DR or tunnel toward which
//! real server) is remembered under the fragment's (source, destination,
//! identification), and the later fragments — no L4 header, no ports, so
//! no connection lookup — get the same treatment: the same address
//! rewrite (a later fragment holds no L4 checksum to fix, see `uvs_fwd`'s
//! NAT contract) toward the same next hop. Requests and NAT replies alike.
//!
//! IPv6 always, and IPv4 under AF_XDP. (Under AF_PACKET the kernel
//! reassembles IPv4 before uvs reads it: the fanout group has
//! `PACKET_FANOUT_FLAG_DEFRAG`, which covers IPv4 only. All fragments of one
//! datagram reach the same worker: the fanout hash of an IPv6 fragment
//! covers addresses and flow label, not ports. Under AF_XDP the steering
//! program lets a later fragment through only after its first, and a
//! datagram's fragments reach one worker when they arrive on one RX queue:
//! a veth has one, and NICs hash fragments by addresses; a NIC that hashed
//! a first fragment by its ports would split a datagram over workers, and
//! its later fragments would be dropped as unmatched.) The key's identification is IPv6's 32 bits, or IPv4's 16
//! with the protocol above them (an IPv4 datagram is (source, destination,
//! protocol, identification)).
//!
//! Contract:
//! * Per worker thread, a fixed table of [`SLOTS`] entries, direct-mapped
//!   by a hash of the key; made at the thread's first fragment, never
//!   grown; an entry lives [`TTL_MS`] (the kernel keeps fragments 60 s)
//!   or until another datagram's first fragment takes its slot. No lock,
//!   no allocation per packet, cost independent of the number of flows.
//! * A later fragment whose first fragment was not seen (it came later,
//!   or its slot was retaken) is dropped as `fragment_unmatched` when it is
//!   addressed to a VIP, and left to the kernel otherwise (uvs cannot tell
//!   a NAT reply's later fragment from other forwarded traffic without its
//!   first).

use std::cell::RefCell;
use std::net::IpAddr;

use uvs_fwd::{CsumMode, Parsed};
use uvs_sched::TunConfig;

use crate::datapath::pipeline::Verdict;

/// Entries per worker.
pub const SLOTS: usize = 1024;
/// How long a first fragment's decision is kept.
pub const TTL_MS: u64 = 30_000;

/// What the first fragment got, to be repeated for the later ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    /// NAT: the destination (request) or source (reply) becomes `addr`.
    Nat {
        dst: bool,
        addr: IpAddr,
        next_hop: IpAddr,
    },
    /// Direct routing toward `next_hop` (TTL only).
    Route { next_hop: IpAddr },
    /// Encapsulation toward `next_hop`.
    Tunnel { next_hop: IpAddr, tun: TunConfig },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    expires_ms: u64,
    follow: Follow,
}

thread_local! {
    static TABLE: RefCell<Vec<Option<Entry>>> = const { RefCell::new(Vec::new()) };
}

fn slot(src: &IpAddr, dst: &IpAddr, id: u32) -> usize {
    // FNV-1a over the key: cheap, and spread enough for a direct map.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for x in b {
            h = (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3);
        }
    };
    for a in [src, dst] {
        match a {
            IpAddr::V4(a) => eat(&a.octets()),
            IpAddr::V6(a) => eat(&a.octets()),
        }
    }
    eat(&id.to_be_bytes());
    (h as usize) % SLOTS
}

/// Remembers what the pipeline decided (`v`) for the first fragment `p`
/// (its parse as received; `frame` as rewritten: the fragment header is
/// unchanged).
pub fn note_first(frame: &[u8], p: &Parsed, v: &Verdict, now_ms: u64) {
    if !p.is_first_fragment {
        return;
    }
    let Some(id) = fragment_id(frame, p) else {
        return;
    };
    let follow = match *v {
        Verdict::Xmit {
            next_hop,
            dnat_from,
            snat_from,
            pkt,
        } => match (dnat_from, snat_from) {
            (Some(_), _) => Follow::Nat {
                dst: true,
                addr: pkt.dst,
                next_hop,
            },
            (None, Some(_)) => Follow::Nat {
                dst: false,
                addr: pkt.src,
                next_hop,
            },
            (None, None) => Follow::Route { next_hop },
        },
        Verdict::Tunnel { next_hop, tun, .. } => Follow::Tunnel { next_hop, tun },
        _ => return,
    };
    let e = Entry {
        src: p.src,
        dst: p.dst,
        id,
        expires_ms: now_ms.saturating_add(TTL_MS),
        follow,
    };
    let _ = TABLE.try_with(|t| {
        if let Ok(mut t) = t.try_borrow_mut() {
            if t.is_empty() {
                t.resize(SLOTS, None);
            }
            let i = slot(&e.src, &e.dst, id);
            t[i] = Some(e);
        }
    });
}

/// The identification of fragment `p` (see the module doc), `None` if it
/// is no fragment.
fn fragment_id(frame: &[u8], p: &Parsed) -> Option<u32> {
    if p.is_ipv4() {
        if !p.is_fragment {
            return None;
        }
        let id = frame.get(p.l3_off + 4..p.l3_off + 6)?;
        return Some(u32::from(p.proto) << 16 | u32::from(u16::from_be_bytes([id[0], id[1]])));
    }
    uvs_fwd::frag::ipv6_fragment_id(frame, p)
}

/// The verdict for a later fragment `p` (no L4 header): its first
/// fragment's treatment, the frame rewritten in place; `None` when no
/// first fragment is remembered for it (the caller drops or passes it).
pub fn follow_later(frame: &mut [u8], p: &Parsed, csum: CsumMode, now_ms: u64) -> Option<Verdict> {
    let id = fragment_id(frame, p)?;
    let follow = TABLE
        .try_with(|t| {
            let t = t.try_borrow().ok()?;
            let e = t.get(slot(&p.src, &p.dst, id))?.as_ref()?;
            (e.src == p.src && e.dst == p.dst && e.id == id && now_ms < e.expires_ms)
                .then_some(e.follow)
        })
        .ok()
        .flatten()?;
    Some(match follow {
        Follow::Nat {
            dst,
            addr,
            next_hop,
        } => {
            let (r, pkt) = if dst {
                (
                    uvs_fwd::dnat(frame, p, addr, 0, csum),
                    Parsed { dst: addr, ..*p },
                )
            } else {
                (
                    uvs_fwd::snat(frame, p, addr, 0, csum),
                    Parsed { src: addr, ..*p },
                )
            };
            match r {
                Ok(()) => Verdict::Xmit {
                    next_hop,
                    dnat_from: None,
                    snat_from: None,
                    pkt,
                },
                Err(_) => return Some(rewrite_failed()),
            }
        }
        Follow::Route { next_hop } => match uvs_fwd::dr(frame, p) {
            Ok(()) => Verdict::Xmit {
                next_hop,
                dnat_from: None,
                snat_from: None,
                pkt: *p,
            },
            Err(_) => return Some(rewrite_failed()),
        },
        Follow::Tunnel { next_hop, tun } => Verdict::Tunnel {
            next_hop,
            tun,
            pkt: *p,
        },
    })
}

fn rewrite_failed() -> Verdict {
    Verdict::Drop(crate::datapath::stats::DropReason::Rewrite)
}

#[cfg(test)]
mod tests;
