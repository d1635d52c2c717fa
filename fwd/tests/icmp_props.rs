//! Property tests of ICMP: for random quoted packets (both families, TCP,
//! UDP, SCTP, ICMP, IPv4 options, quotes cut anywhere from 8 bytes on) the
//! NAT of an ICMP error equals the error built from scratch around the
//! translated quote (its L4 checksum kept, as the kernel keeps it); and a
//! built error always has valid checksums, the right size limit and the
//! original's prefix as its quote.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::xmit::icmp::{build_icmp_error, nat_icmp_error, IcmpKind, IcmpNat, MAX_ERROR_FRAME};
use uvs_fwd::{embedded, parse, CsumMode};

fn addr(v4: bool, bits: u128) -> IpAddr {
    if v4 {
        // Keep clear of 0/8, multicast and broadcast: those are never answered.
        IpAddr::V4(Ipv4Addr::from((bits as u32 & 0x3fff_ffff) | 0x0100_0000))
    } else {
        IpAddr::V6(Ipv6Addr::from(
            (bits & !(0xffu128 << 120)) | (0x20u128 << 120),
        ))
    }
}

prop_compose! {
    fn quoted()(
        v4 in any::<bool>(),
        a in any::<[u128; 2]>(),
        ports in any::<[u16; 2]>(),
        ttl in 2u8..=255,
        payload in prop::collection::vec(any::<u8>(), 0..1600),
        opt_words in 0usize..=10,
        l4 in 0u8..4,
    ) -> FrameSpec {
        let mut s = FrameSpec::tcp_v4();
        s.src = addr(v4, a[0]);
        s.dst = addr(v4, a[1]);
        s.sport = ports[0];
        s.dport = ports[1];
        s.ttl = ttl;
        s.payload = payload;
        if v4 {
            s.ip_options = vec![1; opt_words * 4];
        }
        s.l4 = match l4 {
            0 => L4Spec::Tcp { flags: 0x10, options: vec![] },
            1 => L4Spec::Udp { zero_csum: false },
            2 => L4Spec::Sctp,
            // Echo request (an ICMPv6 type below 128 would be an error).
            _ => L4Spec::Icmp { msg_type: if v4 { 8 } else { 128 }, code: 0 },
        };
        s
    }
}

/// An ICMP destination-unreachable from `from` to `to` quoting the IP
/// header of `q` and `n` bytes after it.
fn error_spec(q: &FrameSpec, n: usize, from: IpAddr, to: IpAddr) -> FrameSpec {
    let f = q.build();
    let p = parse(&f).unwrap();
    let mut s = FrameSpec::tcp_v4();
    s.src = from;
    s.dst = to;
    s.l4 = L4Spec::Icmp {
        msg_type: if from.is_ipv4() { 3 } else { 1 },
        code: 3,
    };
    s.payload = f[p.l3_off..(p.l4_off + n).min(p.ip_end)].to_vec();
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, .. ProptestConfig::default() })]

    #[test]
    fn nat_equals_rebuilt_error(q in quoted(), n in 8usize..200, b in any::<[u128; 2]>(), port in any::<u16>(), to_client in any::<bool>()) {
        let v4 = q.src.is_ipv4();
        let (vip, rs) = (addr(v4, b[0]), addr(v4, b[1]));
        let portful = !matches!(q.l4, L4Spec::Icmp { .. });
        let (input, nat, mut want_q, from, to) = if to_client {
            // The real server's error about the client's (DNATed) request.
            let mut at_rs = q.clone();
            at_rs.dst = rs;
            let mut w = q.clone();
            w.dst = vip;
            if portful { w.dport = port; }
            (error_spec(&at_rs, n, rs, q.src), IcmpNat::to_client(vip, port), w, vip, q.src)
        } else {
            // The client side's error about a reply from the VIP.
            let mut reply = q.clone();
            reply.src = vip;
            let mut w = q.clone();
            w.src = rs;
            if portful { w.sport = port; }
            (error_spec(&reply, n, q.dst, vip), IcmpNat::to_server(rs, port), w, q.dst, rs)
        };
        want_q.ttl = q.ttl;
        let mut want = error_spec(&want_q, n, from, to);
        // The quoted L4 checksum (SCTP: CRC-32C) is left as it was, as far
        // as the quote holds it.
        let hl = if v4 { 20 + q.ip_options.len() } else { 40 };
        let field = match q.l4 {
            L4Spec::Tcp { .. } => Some(hl + 16..hl + 18),
            L4Spec::Udp { .. } => Some(hl + 6..hl + 8),
            L4Spec::Sctp => Some(hl + 8..hl + 12),
            // ICMPv6 sums a pseudo-header; ICMPv4's checksum is unaffected.
            L4Spec::Icmp { .. } if !v4 => Some(hl + 2..hl + 4),
            _ => None,
        };
        if let Some(r) = field {
            let end = r.end.min(input.payload.len());
            for i in r.start..end {
                want.payload[i] = input.payload[i];
            }
        }
        want.ttl -= 1;
        let mut f = input.build();
        let p = parse(&f).unwrap();
        let e = embedded(&f, &p).unwrap();
        nat_icmp_error(&mut f, &p, &e, &nat, CsumMode::Full).unwrap();
        prop_assert_eq!(&f, &want.build());
        prop_assert!(common::naive_verify(&f));
    }

    #[test]
    fn built_errors_are_valid(q in quoted(), b in any::<u128>(), kind in 0u8..4, mtu in any::<u32>()) {
        let f = q.build();
        let p = parse(&f).unwrap();
        let src = addr(q.src.is_ipv4(), b);
        let kind = [IcmpKind::PortUnreachable, IcmpKind::HostUnreachable, IcmpKind::TooBig { mtu }, IcmpKind::TimeExceeded][usize::from(kind)];
        let mut out = [0u8; MAX_ERROR_FRAME];
        let n = build_icmp_error(&mut out, &f, &p, kind, src, 7).unwrap();
        let out = &out[..n];
        let e = parse(out).unwrap();
        prop_assert_eq!((e.src, e.dst), (src, q.src));
        let limit = if q.src.is_ipv4() { 576 } else { 1280 };
        prop_assert!(e.ip_len <= limit);
        let quote = &out[e.payload_off..];
        prop_assert_eq!(quote, &f[14..14 + quote.len()]);
        prop_assert!(quote.len() == p.ip_len || e.ip_len == limit);
        prop_assert!(common::naive_verify(out));
    }
}
