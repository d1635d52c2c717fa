//! IPv4 fragmentation on output, as the kernel's `ip_fragment` does it for a
//! packet without DF that exceeds the route MTU — the case [`crate::xmit::fits`]
//! lets through: the kernel would fragment it, an AF_PACKET sender must do it
//! itself. It matters after tunnel encapsulation (an outer packet without
//! DF, e.g. with `pmtu_disc` off or a non-DF inner packet, grows past the
//! MTU), and for NAT/DR of non-DF packets onto a smaller MTU.
//!
//! Each fragment gets: the original L2 header; the IPv4 header with the same
//! ID, total length, fragment offset (the original's plus the data before
//! it, so a fragment is fragmented correctly) and MF (set on all but the
//! last, and on the last too when the original had it), options as the
//! kernel leaves them (all in the first fragment; in the others, options
//! without the "copied" flag replaced by NOPs, so the header length stays),
//! and the header checksum. Fragment data is a multiple of 8 bytes except in
//! the last. L4 checksums are untouched (they cover the whole datagram).
//!
//! Contract: no allocation, no panic; fragments are written one at a time
//! into the caller's scratch buffer at `headroom` and handed to `emit`.
//!
//! [`ipv6_fragment_id`] finds an IPv6 fragment's identification, which is
//! what ties a later fragment (no L4 header, no ports) to its first.

use crate::parse::{IpVersion, Parsed};
use crate::wire::{ipv4, put16};
use crate::xmit::{check_parsed, XmitError};

/// Fragments the IPv4 packet of `frame` (parsed as `p`) so that every
/// fragment's IP length is at most `mtu`. `emit(buf, headroom)` receives
/// each fragment frame at `buf[headroom..]`. Returns the number of
/// fragments (1, a copy, when the packet already fits).
///
/// Errors (nothing emitted): `FrameMismatch`; `FamilyMismatch` (IPv6: a
/// router never fragments it); `DontFragment` (DF set and too big: answer
/// with ICMP fragmentation needed instead); `BufferTooSmall`; `TooLarge` (an
/// MTU leaving no room for 8 bytes of data after the header).
pub fn fragment_ipv4(
    frame: &[u8],
    p: &Parsed,
    mtu: usize,
    scratch: &mut [u8],
    headroom: usize,
    mut emit: impl FnMut(&mut [u8], usize),
) -> Result<usize, XmitError> {
    check_parsed(frame, p)?;
    if p.version != IpVersion::V4 {
        return Err(XmitError::FamilyMismatch);
    }
    let l3 = p.l3_off;
    let hl = usize::from(frame[l3] & 0x0f) * 4;
    if hl < ipv4::HEADER_LEN || l3 + hl > p.ip_end {
        return Err(XmitError::FrameMismatch);
    }
    let flags_off = u16::from_be_bytes([frame[l3 + 6], frame[l3 + 7]]);
    if flags_off & ipv4::FLAG_DF != 0 && p.ip_len > mtu {
        return Err(XmitError::DontFragment);
    }
    let data = &frame[l3 + hl..p.ip_end];
    if p.ip_len <= mtu {
        let len = p.ip_end;
        let out = scratch
            .get_mut(headroom..headroom + len)
            .ok_or(XmitError::BufferTooSmall)?;
        out.copy_from_slice(&frame[..len]);
        emit(&mut scratch[..headroom + len], headroom);
        return Ok(1);
    }
    let per = mtu.saturating_sub(hl) & !7;
    if per == 0 {
        return Err(XmitError::TooLarge);
    }
    if scratch.len() < headroom + l3 + hl + per {
        return Err(XmitError::BufferTooSmall);
    }
    let orig_off = usize::from(flags_off & 0x1fff) * 8;
    let orig_mf = flags_off & ipv4::FLAG_MF != 0;
    let count = data.len().div_ceil(per);
    for (i, chunk) in data.chunks(per).enumerate() {
        let h = headroom;
        let len = l3 + hl + chunk.len();
        let out = &mut scratch[..h + len];
        out[h..h + l3 + hl].copy_from_slice(&frame[..l3 + hl]);
        out[h + l3 + hl..].copy_from_slice(chunk);
        let o = h + l3;
        if i > 0 {
            strip_uncopied_options(&mut out[o + ipv4::HEADER_LEN..o + hl]);
        }
        put16(out, o + 2, (hl + chunk.len()) as u16);
        let last = i + 1 == count;
        let off = (orig_off + i * per) / 8;
        let mf = if !last || orig_mf { ipv4::FLAG_MF } else { 0 };
        put16(out, o + 6, mf | (off as u16 & 0x1fff));
        ipv4::Packet::new_unchecked(&mut out[o..o + hl]).fill_checksum();
        emit(out, h);
    }
    Ok(count)
}

/// Replaces options without the "copied" flag (bit 0x80 of the type) by NOPs,
/// as `ip_options_fragment` does for non-first fragments. A malformed option
/// list is padded with NOPs from where it breaks.
fn strip_uncopied_options(opts: &mut [u8]) {
    const EOL: u8 = 0;
    const NOP: u8 = 1;
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            EOL => break,
            NOP => i += 1,
            t => {
                let len = opts.get(i + 1).map_or(0, |&l| usize::from(l));
                if len < 2 || i + len > opts.len() {
                    opts[i..].fill(NOP);
                    break;
                }
                if t & 0x80 == 0 {
                    opts[i..i + len].fill(NOP);
                }
                i += len;
            }
        }
    }
}

/// The identification of the IPv6 fragment `frame` (parsed as `p`): the
/// fragment header is found between the fixed header and `l4_off` (after
/// hop-by-hop, routing, destination options or AH headers). `None` when
/// `p` is no IPv6 fragment or the chain does not lead to one. Never panics.
pub fn ipv6_fragment_id(frame: &[u8], p: &Parsed) -> Option<u32> {
    if p.version != IpVersion::V6 || !p.is_fragment {
        return None;
    }
    let mut next = *frame.get(p.l3_off + 6)?;
    let mut at = p.l3_off + 40;
    while at < p.l4_off {
        let len = match next {
            44 => {
                let id = frame.get(at + 4..at + 8)?;
                return Some(u32::from_be_bytes([id[0], id[1], id[2], id[3]]));
            }
            0 | 43 | 60 => (usize::from(*frame.get(at + 1)?) + 1) * 8,
            51 => (usize::from(*frame.get(at + 1)?) + 2) * 4,
            _ => return None,
        };
        next = *frame.get(at)?;
        at += len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::FrameSpec;
    use crate::parse::parse;

    fn frags(spec: &FrameSpec, mtu: usize) -> Vec<Vec<u8>> {
        let f = spec.build();
        let p = parse(&f).unwrap();
        let mut scratch = vec![0u8; 2048];
        let mut v = Vec::new();
        let n = fragment_ipv4(&f, &p, mtu, &mut scratch, 16, |b, h| {
            v.push(b[h..].to_vec())
        })
        .unwrap();
        assert_eq!(n, v.len());
        v
    }

    #[test]
    fn fragments_reassemble() {
        let mut spec = FrameSpec::udp_v4();
        spec.frag = Some((0, false)); // no DF, not a fragment
        spec.payload = (0..3000).map(|i| i as u8).collect();
        spec.ip_options = vec![0x07, 7, 4, 0, 0, 0, 0, 0x83, 3, 4, 1, 0]; // RR (not copied), LSRR-like (copied)
        let orig = spec.build();
        let v = frags(&spec, 1500);
        assert_eq!(v.len(), 3);
        let mut data = Vec::new();
        for (i, f) in v.iter().enumerate() {
            let p = parse(f).expect("fragment parses (header checksum valid)");
            assert!(p.ip_len <= 1500);
            assert!(p.is_fragment);
            let w = u16::from_be_bytes([f[20], f[21]]);
            assert_eq!(usize::from(w & 0x1fff) * 8, data.len());
            assert_eq!(w & 0x2000 != 0, i < 2, "MF on all but the last");
            assert_eq!(&f[18..20], &orig[18..20], "same ID");
            if i == 0 {
                assert_eq!(&f[34..46], &orig[34..46], "all options in the first");
            } else {
                assert_eq!(&f[34..46], &[1, 1, 1, 1, 1, 1, 1, 0x83, 3, 4, 1, 0]);
            }
            data.extend_from_slice(&f[p.l4_off..p.ip_end]);
        }
        assert_eq!(&data[..], &orig[14 + 32..]);
    }

    #[test]
    fn fits_refusals_and_fragment_of_fragment() {
        let mut spec = FrameSpec::udp_v4();
        spec.frag = Some((0, false));
        spec.payload = vec![1; 100];
        let f = spec.build();
        assert_eq!(frags(&spec, 1500), vec![f.clone()]);
        // A middle fragment at offset 1480 with MF: all pieces keep MF.
        let mut mid = FrameSpec::udp_v4();
        mid.frag = Some((1480, true));
        mid.payload = vec![2; 1000];
        let v = frags(&mid, 576);
        assert_eq!(v.len(), 2);
        for (i, f) in v.iter().enumerate() {
            let w = u16::from_be_bytes([f[20], f[21]]);
            assert_ne!(w & 0x2000, 0);
            assert_eq!(usize::from(w & 0x1fff) * 8, 1480 + i * 552);
        }
        // DF set: refused. IPv6: refused. MTU too small for 8 bytes: refused.
        let df = FrameSpec::tcp_v4();
        let mut big = df.clone();
        big.payload = vec![0; 1000];
        let b = big.build();
        let mut s = [0u8; 2048];
        let p = parse(&b).unwrap();
        assert_eq!(
            fragment_ipv4(&b, &p, 576, &mut s, 0, |_, _| {}),
            Err(XmitError::DontFragment)
        );
        let six = FrameSpec::udp_v6().build();
        assert_eq!(
            fragment_ipv4(&six, &parse(&six).unwrap(), 1280, &mut s, 0, |_, _| {}),
            Err(XmitError::FamilyMismatch)
        );
        let mut nd = FrameSpec::udp_v4();
        nd.frag = Some((0, false));
        nd.payload = vec![0; 100];
        let n = nd.build();
        let np = parse(&n).unwrap();
        assert_eq!(
            fragment_ipv4(&n, &np, 27, &mut s, 0, |_, _| {}),
            Err(XmitError::TooLarge)
        );
        assert_eq!(
            fragment_ipv4(&n, &np, 60, &mut s[..40], 0, |_, _| {}),
            Err(XmitError::BufferTooSmall)
        );
    }

    #[test]
    fn malformed_options_become_nops() {
        let mut o = [0x07, 9, 0, 0];
        strip_uncopied_options(&mut o);
        assert_eq!(o, [1, 1, 1, 1]);
        let mut o = [0x83, 4, 9, 9, 0, 5, 5, 5];
        strip_uncopied_options(&mut o);
        assert_eq!(o, [0x83, 4, 9, 9, 0, 5, 5, 5]);
    }
}
