//! Tunnel encapsulation toward a real server (`-i`): outer headers, the
//! tunnel's path MTU, a fresh virtio-net header (the inner checksum may stay
//! pending), MACs toward the next hop. GSO super-packets are segmented
//! first: no virtio GSO type exists for ipip, GRE or GUE.

use std::net::IpAddr;

use uvs_fwd::gso;
use uvs_fwd::xmit::tun::{self, TunCsum as FwdTunCsum, TunKind, TunParams};
use uvs_fwd::{CsumMode, Parsed};
use uvs_sched::{TunConfig, TunCsum as SchedTunCsum, TunType};

use crate::io::{TxQueue, VnetHdr};
use crate::sys::neigh::NextHop;

use super::{Ready, HEADROOM};

/// Why a packet could not be tunnelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fail {
    TooBig { mtu: u32, send_icmp: bool },
    Ttl,
    Rewrite,
}

/// The encapsulation parameters of a destination's tunnel settings.
pub(crate) fn params(tun: TunConfig, src: IpAddr, dst: IpAddr) -> TunParams {
    let kind = match tun.kind {
        TunType::Ipip => TunKind::Ipip,
        TunType::Gue => TunKind::Gue,
        TunType::Gre => TunKind::Gre,
    };
    TunParams {
        port: tun.port,
        csum: match tun.csum {
            SchedTunCsum::NoCsum => FwdTunCsum::NoCsum,
            SchedTunCsum::Csum => FwdTunCsum::Csum,
            SchedTunCsum::RemCsum => FwdTunCsum::RemCsum,
        },
        ..TunParams::new(kind, src, dst)
    }
}

/// Encapsulates the frame at `buf[at..]` (parsed as `p`, free headroom
/// before it) in place toward `params.dst`; returns where it now lies.
pub(super) fn encap(
    buf: &mut [u8],
    at: usize,
    p: &Parsed,
    params: &TunParams,
    nh: &NextHop,
    ident: &mut u16,
    csum: CsumMode,
) -> Result<Ready, Fail> {
    tun::check_mtu(&buf[at..], p, params, nh.mtu, csum).map_err(|nf| Fail::TooBig {
        mtu: nf.mtu,
        send_icmp: nf.send_icmp,
    })?;
    *ident = ident.wrapping_add(1);
    let e = tun::encap(buf, at, p, params, *ident, csum).map_err(|e| match e {
        uvs_fwd::XmitError::TtlExceeded => Fail::Ttl,
        _ => Fail::Rewrite,
    })?;
    let vnet = e.pending.map_or(VnetHdr::default(), |pc| {
        VnetHdr::pending_csum(pc.start, pc.offset)
    });
    let end = e.start + e.len;
    uvs_fwd::set_macs(&mut buf[e.start..end], nh.src_mac, nh.dst_mac).map_err(|_| Fail::Rewrite)?;
    Ok(Ready {
        at: e.start,
        end,
        vnet,
        ifindex: nh.ifindex,
    })
}

/// Segments the TCP super-packet `frame` (parsed as `p`) into `gso_size`
/// segments in `seg` and queues each one tunnelled; stops at the first
/// segment that fails (its reason is returned).
#[allow(clippy::too_many_arguments)]
pub(super) fn segmented<'b>(
    frame: &[u8],
    p: &Parsed,
    gso_size: u16,
    params: &TunParams,
    nh: &NextHop,
    seg: &mut [u8],
    ident: &mut u16,
    q: &mut impl TxQueue<'b>,
) -> Result<(), Fail> {
    let mut first_err = Ok(());
    let done = gso::segment_tcp(frame, p, gso_size, seg, HEADROOM, |s, h| {
        if first_err.is_err() {
            return;
        }
        // A segment has the super-packet's headers, so its parse is the
        // super-packet's with its own length.
        let len = s.len() - h;
        let sp = Parsed {
            ip_len: len - p.l3_off,
            ip_end: len,
            ..*p
        };
        first_err = encap(s, h, &sp, params, nh, ident, CsumMode::Full)
            .map(|r| q.copy(&s[r.at..r.end], &r.vnet, r.ifindex));
    });
    done.map_err(|_| Fail::Rewrite).and(first_err)
}
