//! Software segmentation of TCP super-packets (TSO/GSO), as the kernel's
//! `tcp_gso_segment` / `inet_gso_segment` / `ipv6_gso_segment` do it.
//!
//! A local stack on veth (or a virtual NIC) hands AF_PACKET frames far larger
//! than the MTU, with `gso_size` (the MSS) in the virtio-net header. The
//! engine can pass most of them on with that header and let the kernel
//! segment on the way out, but not an encapsulated one: virtio has no GSO
//! type for ipip / GRE / GUE. So it segments first with [`segment_tcp`] and
//! encapsulates each segment.
//!
//! Each segment gets: the original Ethernet, IP (options and extension
//! headers included) and TCP headers (options included); `gso_size` bytes of
//! payload (the last one the rest); IPv4 total length and header checksum,
//! IPv4 ID = original ID + segment index (the kernel increments it unless
//! the packet asked for a fixed ID, which virtio cannot say), IPv6 payload
//! length; TCP sequence number advanced by the payload already sent; FIN and
//! PSH only on the last segment, CWR only on the first; and a complete TCP
//! checksum, whatever the original's state (`CsumMode::Partial` is the norm
//! for GSO frames: the field holds a pseudo-header sum over the whole
//! super-packet, useless per segment).
//!
//! Contract: no allocation, no panic; segments are written one at a time into
//! the caller's scratch buffer at `headroom` (so the caller can encapsulate
//! in place, see [`crate::xmit::tun::MAX_OVERHEAD`]) and handed to `emit`
//! before the next one overwrites them. The original frame is not modified.

use crate::checksum;
use crate::parse::{IpVersion, Parsed};
use crate::wire::{ip_proto, ipv4, ipv6, put16, put32, tcp};
use crate::xmit::{check_parsed, XmitError};

/// Splits the TCP super-packet `frame` (parsed as `p`) into segments of at
/// most `gso_size` payload bytes. For each segment, `emit(buf, headroom)` is
/// called with `buf` = the scratch buffer up to the segment's end, the
/// segment frame starting at `headroom`. Returns the number of segments (1
/// when the payload already fits, or is empty).
///
/// Errors (nothing emitted): `FrameMismatch`, `UnsupportedProtocol` (not
/// TCP), `Fragment`, `Ipv6RoutingHeader` (the pseudo-header destination would
/// be the final segment's), `BadGsoSize` (0), `BufferTooSmall` (scratch
/// cannot hold `headroom` + headers + one segment).
pub fn segment_tcp(
    frame: &[u8],
    p: &Parsed,
    gso_size: u16,
    scratch: &mut [u8],
    headroom: usize,
    mut emit: impl FnMut(&mut [u8], usize),
) -> Result<usize, XmitError> {
    check_parsed(frame, p)?;
    if p.proto != ip_proto::TCP || !p.has_l4 {
        return Err(XmitError::UnsupportedProtocol(p.proto));
    }
    if p.is_fragment {
        return Err(XmitError::Fragment);
    }
    if p.routing_pending {
        return Err(XmitError::Ipv6RoutingHeader);
    }
    if gso_size == 0 {
        return Err(XmitError::BadGsoSize);
    }
    let mss = usize::from(gso_size);
    let hdr_len = p.payload_off;
    let tcp_hl = p.payload_off - p.l4_off;
    if tcp_hl < tcp::HEADER_LEN {
        return Err(XmitError::FrameMismatch);
    }
    let payload = &frame[p.payload_off..p.ip_end];
    let seg_max = hdr_len + mss.min(payload.len());
    if scratch.len() < headroom.saturating_add(seg_max) {
        return Err(XmitError::BufferTooSmall);
    }
    let count = payload.len().div_ceil(mss).max(1);
    let l3 = p.l3_off;
    let l4 = p.l4_off;
    let ip_hdr_len = l4 - l3; // IPv4 header with options / IPv6 + extensions
    let seq0 = u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]]);
    let flags0 = frame[l4 + 13];
    let ident0 = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]);
    for (i, chunk) in payload
        .chunks(mss)
        .chain(payload.is_empty().then_some(&payload[..0]))
        .enumerate()
    {
        let h = headroom;
        let seg_len = hdr_len + chunk.len();
        let out = &mut scratch[..h + seg_len];
        out[h..h + hdr_len].copy_from_slice(&frame[..hdr_len]);
        out[h + hdr_len..].copy_from_slice(chunk);
        let (o3, o4) = (h + l3, h + l4);
        match p.version {
            IpVersion::V4 => {
                // Lengths only shrink from a valid original: they fit 16 bits.
                put16(out, o3 + 2, (ip_hdr_len + tcp_hl + chunk.len()) as u16);
                put16(out, o3 + 4, ident0.wrapping_add(i as u16));
                let mut ip = ipv4::Packet::new_unchecked(&mut out[o3..o4]);
                ip.fill_checksum();
            }
            IpVersion::V6 => {
                let plen = ip_hdr_len - ipv6::HEADER_LEN + tcp_hl + chunk.len();
                put16(out, o3 + 4, plen as u16);
            }
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        put32(out, o4 + 4, seq);
        let mut flags = flags0;
        if i + 1 < count {
            flags &= !(tcp::flags::FIN | tcp::flags::PSH);
        }
        if i > 0 {
            flags &= !tcp::flags::CWR;
        }
        out[o4 + 13] = flags;
        put16(out, o4 + tcp::CHECKSUM_OFFSET, 0);
        let tcp_len = tcp_hl + chunk.len();
        let pseudo =
            checksum::pseudo_header(&p.src, &p.dst, ip_proto::TCP, tcp_len as u32).unwrap_or(0);
        let c = !checksum::fold(checksum::add(pseudo, checksum::sum(&out[o4..])));
        put16(out, o4 + tcp::CHECKSUM_OFFSET, c);
        emit(out, h);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{FrameSpec, L4Spec};
    use crate::checksum::{verify_l4_checksum, CsumMode};
    use crate::parse::parse;

    fn segments(spec: &FrameSpec, mss: u16) -> Vec<Vec<u8>> {
        let f = spec.build();
        let p = parse(&f).unwrap();
        let mut scratch = vec![0u8; 2048];
        let mut out = Vec::new();
        let n = segment_tcp(&f, &p, mss, &mut scratch, 60, |b, h| {
            out.push(b[h..].to_vec())
        })
        .unwrap();
        assert_eq!(n, out.len());
        out
    }

    /// Each segment equals the spec rebuilt with that slice of the payload,
    /// sequence number, flags and IP ID.
    fn check(spec: &FrameSpec, mss: u16) {
        let segs = segments(spec, mss);
        let chunks: Vec<&[u8]> = if spec.payload.is_empty() {
            vec![&[]]
        } else {
            spec.payload.chunks(usize::from(mss)).collect()
        };
        assert_eq!(segs.len(), chunks.len());
        let L4Spec::Tcp { flags, options } = &spec.l4 else {
            unreachable!()
        };
        for (i, (seg, chunk)) in segs.iter().zip(&chunks).enumerate() {
            let mut want = spec.clone();
            want.csum = CsumMode::Full;
            want.payload = chunk.to_vec();
            want.padding = 0;
            let mut fl = *flags;
            if i + 1 < chunks.len() {
                fl &= !(tcp::flags::FIN | tcp::flags::PSH);
            }
            if i > 0 {
                fl &= !tcp::flags::CWR;
            }
            want.l4 = L4Spec::Tcp {
                flags: fl,
                options: options.clone(),
            };
            let mut w = want.build();
            let q = parse(&w).unwrap();
            // FrameSpec uses seq 0x01020304 and ID 0x1c46: advance them, and
            // recompute both checksums the slow way.
            let seq = 0x0102_0304u32.wrapping_add((i * usize::from(mss)) as u32);
            w[q.l4_off + 4..q.l4_off + 8].copy_from_slice(&seq.to_be_bytes());
            if q.is_ipv4() {
                let id = 0x1c46u16.wrapping_add(i as u16);
                w[q.l3_off + 4..q.l3_off + 6].copy_from_slice(&id.to_be_bytes());
                ipv4::Packet::new_unchecked(&mut w[q.l3_off..q.l4_off]).fill_checksum();
            }
            crate::checksum::fill_l4_checksum(&mut w, &q).unwrap();
            assert!(seg == &w, "segment {i} differs");
            assert!(verify_l4_checksum(seg, &parse(seg).unwrap()).unwrap());
        }
    }

    fn big(mut spec: FrameSpec, n: usize, flags: u8) -> FrameSpec {
        spec.payload = (0..n).map(|i| (i * 7) as u8).collect();
        spec.l4 = L4Spec::Tcp {
            flags,
            options: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
        };
        spec.csum = CsumMode::Partial;
        spec
    }

    #[test]
    fn v4_and_v6_segments_equal_rebuilt_packets() {
        use tcp::flags::*;
        check(&big(FrameSpec::tcp_v4(), 5000, ACK | PSH | FIN | CWR), 1448);
        check(&big(FrameSpec::tcp_v6(), 4000, ACK | PSH | CWR | ECE), 1428);
        check(&big(FrameSpec::tcp_v4(), 2896, ACK), 1448);
        check(&big(FrameSpec::tcp_v4(), 10, ACK | FIN), 1448);
        check(&big(FrameSpec::tcp_v6(), 0, ACK | FIN), 1448);
        let mut s = big(FrameSpec::tcp_v4(), 3000, ACK | PSH);
        s.ip_options = vec![1, 1, 1, 1];
        s.vlans = vec![5];
        s.padding = 3;
        check(&s, 1000);
        let mut s = big(FrameSpec::tcp_v6(), 3000, ACK | PSH);
        s.ext_headers = vec![0, 60];
        check(&s, 999);
    }

    #[test]
    fn sequence_wraps() {
        let spec = big(FrameSpec::tcp_v4(), 3000, tcp::flags::ACK);
        let mut f = spec.build();
        let p = parse(&f).unwrap();
        f[p.l4_off + 4..p.l4_off + 8].copy_from_slice(&0xffff_fc00u32.to_be_bytes());
        let mut scratch = [0u8; 1600];
        let mut seqs = Vec::new();
        segment_tcp(&f, &p, 1000, &mut scratch, 0, |b, h| {
            let q = parse(&b[h..]).unwrap();
            seqs.push(u32::from_be_bytes([
                b[h + q.l4_off + 4],
                b[h + q.l4_off + 5],
                b[h + q.l4_off + 6],
                b[h + q.l4_off + 7],
            ]));
        })
        .unwrap();
        assert_eq!(seqs, vec![0xffff_fc00, 0xffff_ffe8, 0x0000_03d0]);
    }

    #[test]
    fn refusals() {
        let spec = big(FrameSpec::tcp_v4(), 3000, tcp::flags::ACK);
        let f = spec.build();
        let p = parse(&f).unwrap();
        let mut scratch = [0u8; 1500];
        let mut n = 0;
        let mut count = |_: &mut [u8], _: usize| n += 1;
        assert_eq!(
            segment_tcp(&f, &p, 0, &mut scratch, 0, &mut count),
            Err(XmitError::BadGsoSize)
        );
        assert_eq!(
            segment_tcp(&f, &p, 1448, &mut scratch, 64, &mut count),
            Err(XmitError::BufferTooSmall)
        );
        assert_eq!(
            segment_tcp(&f[..100], &p, 1000, &mut scratch, 0, &mut count),
            Err(XmitError::FrameMismatch)
        );
        let u = FrameSpec::udp_v4().build();
        assert_eq!(
            segment_tcp(&u, &parse(&u).unwrap(), 1000, &mut scratch, 0, &mut count),
            Err(XmitError::UnsupportedProtocol(17))
        );
        let mut fr = FrameSpec::tcp_v4();
        fr.frag = Some((0, true));
        let fr = fr.build();
        assert_eq!(
            segment_tcp(&fr, &parse(&fr).unwrap(), 1000, &mut scratch, 0, &mut count),
            Err(XmitError::Fragment)
        );
        assert_eq!(n, 0);
    }
}
