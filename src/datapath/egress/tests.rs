//! The egress stage without root: a fake TX queue records what leaves, a
//! table answers neighbour lookups.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::wire::{ip_proto, ipv4};
use uvs_fwd::CsumMode;
use uvs_sched::{TunConfig, TunType};

use super::*;

/// What left, and how.
#[derive(Debug)]
struct Sent {
    frame: Vec<u8>,
    vnet: VnetHdr,
    ifindex: u32,
    in_place: bool,
}

#[derive(Debug, Default)]
struct FakeTx {
    sent: Vec<Sent>,
}

impl<'b> TxQueue<'b> for FakeTx {
    fn forward(&mut self, buf: &'b mut [u8], at: usize, vnet: &VnetHdr, ifindex: u32) {
        self.sent.push(Sent {
            frame: buf[at..].to_vec(),
            vnet: *vnet,
            ifindex,
            in_place: true,
        });
    }
    fn copy(&mut self, frame: &[u8], vnet: &VnetHdr, ifindex: u32) {
        self.sent.push(Sent {
            frame: frame.to_vec(),
            vnet: *vnet,
            ifindex,
            in_place: false,
        });
    }
    fn flush(&mut self) {}
}

#[derive(Debug, Default)]
struct Table(RefCell<HashMap<IpAddr, Lookup>>);

impl Table {
    fn set(&self, a: IpAddr, l: Lookup) {
        self.0.borrow_mut().insert(a, l);
    }
}

impl Neighbours for Table {
    fn lookup(&self, dst: IpAddr) -> Lookup {
        self.0
            .borrow()
            .get(&dst)
            .copied()
            .unwrap_or(Lookup::Unreachable)
    }
}

const CLIENT: &str = "198.51.100.1";
const VIP: &str = "192.0.2.10";
const RS: &str = "203.0.113.11";
const LB: &str = "203.0.113.1";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn hop(mtu: u32) -> NextHop {
    NextHop {
        ifindex: 7,
        src_mac: [2, 0, 0, 0, 0, 0xaa],
        dst_mac: [2, 0, 0, 0, 0, 0xbb],
        mtu,
        src_ip: Some(ip(LB)),
    }
}

/// Neighbours: the real server and the client behind a path of `mtu`.
fn table(mtu: u32) -> Table {
    let t = Table::default();
    t.set(ip(RS), Lookup::Ready(hop(mtu)));
    t.set(ip(CLIENT), Lookup::Ready(hop(1500)));
    t
}

/// A ring-like buffer: headroom, then the frame.
fn with_headroom(frame: &[u8]) -> (Vec<u8>, usize) {
    let mut b = vec![0u8; HEADROOM + 10];
    b.extend_from_slice(frame);
    (b, HEADROOM + 10)
}

fn udp(payload: usize, df: bool) -> Vec<u8> {
    let mut f = FrameSpec {
        payload: vec![0x5a; payload],
        ..FrameSpec::udp_v4()
    }
    .build();
    // The builder sets DF; clear it when asked.
    if !df {
        f[14 + 6] &= !0x40;
        ipv4::Packet::new_unchecked(&mut f[14..]).fill_checksum();
    }
    f
}

/// Runs `frame` with verdict `v` through a fresh stage.
fn run(frame: &[u8], vnet: VnetHdr, v: Verdict, nb: &Table, st: &WorkerStats) -> Vec<Sent> {
    let mut e = Egress::new(1, 0);
    let mut q = FakeTx::default();
    let (mut buf, at) = with_headroom(frame);
    e.output(&mut buf, at, vnet, v, nb, 0, st, &mut q);
    q.sent
}

/// The frame DNAT'd to RS:8080 and its NAT verdict, as the pipeline makes.
fn dnat(mut frame: Vec<u8>) -> (Vec<u8>, Verdict) {
    let p = uvs_fwd::parse(&frame).expect("parses");
    uvs_fwd::dnat(&mut frame, &p, ip(RS), 8080, CsumMode::Full).expect("dnat");
    let v = Verdict::Xmit {
        next_hop: ip(RS),
        dnat_from: Some((p.dst, p.dport)),
        snat_from: None,
        pkt: Parsed {
            dst: ip(RS),
            dport: 8080,
            ..p
        },
    };
    (frame, v)
}

fn drops(st: &WorkerStats, r: DropReason) -> u64 {
    st.drops[r as usize].load(Relaxed)
}

#[test]
fn a_nat_packet_that_fits_leaves_in_place_with_its_macs() {
    let st = WorkerStats::default();
    let (frame, v) = dnat(udp(100, false));
    let vnet = VnetHdr::pending_csum(34, 6);
    let sent = run(&frame, vnet, v, &table(1500), &st);
    assert_eq!(sent.len(), 1);
    let s = &sent[0];
    assert!(s.in_place);
    assert_eq!((s.ifindex, s.vnet), (7, vnet), "offloads handed on");
    assert_eq!(&s.frame[..6], &hop(1500).dst_mac);
    assert_eq!(&s.frame[6..12], &hop(1500).src_mac);
    assert_eq!(&s.frame[12..], &frame[12..]);
}

fn tunnel_verdict(frame: &[u8]) -> Verdict {
    Verdict::Tunnel {
        next_hop: ip(RS),
        tun: TunConfig {
            kind: TunType::Ipip,
            ..TunConfig::default()
        },
        pkt: uvs_fwd::parse(frame).expect("parses"),
    }
}

#[test]
fn tunnel_encapsulates_in_place_from_the_routes_source() {
    let st = WorkerStats::default();
    let frame = udp(100, false);
    let sent = run(
        &frame,
        VnetHdr::default(),
        tunnel_verdict(&frame),
        &table(1500),
        &st,
    );
    assert_eq!(sent.len(), 1, "{:?}", st.drops);
    let s = &sent[0];
    assert!(s.in_place);
    let p = uvs_fwd::parse(&s.frame).expect("outer parses");
    assert_eq!((p.proto, p.src, p.dst), (ip_proto::IPIP, ip(LB), ip(RS)));
    // The inner packet follows the outer header, TTL decremented.
    let inner = &s.frame[p.l4_off..];
    assert_eq!(&inner[12..], &frame[14 + 12..]);
    assert_eq!(inner[8], frame[14 + 8] - 1);
}

#[test]
fn a_gso_super_packet_is_segmented_before_tunnelling() {
    let st = WorkerStats::default();
    let frame = FrameSpec {
        payload: vec![7; 4000],
        l4: L4Spec::Tcp {
            flags: 0x18,
            options: Vec::new(),
        },
        ..FrameSpec::tcp_v4()
    }
    .build();
    let vnet = VnetHdr {
        gso_type: 1,
        gso_size: 1000,
        ..VnetHdr::default()
    };
    let sent = run(&frame, vnet, tunnel_verdict(&frame), &table(1500), &st);
    assert_eq!(sent.len(), 4, "{:?}", st.drops);
    let mut payload = 0;
    for s in &sent {
        assert!(!s.in_place, "segments are built in scratch space");
        assert!(!s.vnet.is_gso());
        let p = uvs_fwd::parse(&s.frame).expect("outer parses");
        assert_eq!(p.proto, ip_proto::IPIP);
        let ip_len = p.ip_len;
        assert!(ip_len <= 1500);
        // outer IPv4 20 + inner IPv4 20 + TCP 20.
        payload += ip_len - 60;
    }
    assert_eq!(payload, 4000);
}

#[test]
fn a_tunnel_too_small_for_a_df_packet_answers_fragmentation_needed() {
    let st = WorkerStats::default();
    let frame = udp(1400, true);
    let sent = run(
        &frame,
        VnetHdr::default(),
        tunnel_verdict(&frame),
        &table(1420),
        &st,
    );
    assert_eq!(drops(&st, DropReason::TooBig), 1);
    assert_eq!(sent.len(), 1);
    let p = uvs_fwd::parse(&sent[0].frame).expect("icmp parses");
    assert_eq!((p.proto, p.icmp_type, p.icmp_code), (ip_proto::ICMP, 3, 4));
    assert_eq!((p.src, p.dst), (ip(VIP), ip(CLIENT)));
    let mtu = u16::from_be_bytes([sent[0].frame[p.l4_off + 6], sent[0].frame[p.l4_off + 7]]);
    assert_eq!(mtu, 1420 - 20, "the path MTU less the ipip header");
}

#[test]
fn a_df_nat_packet_too_big_gets_fragmentation_needed_quoting_the_vip() {
    let st = WorkerStats::default();
    let (frame, v) = dnat(udp(1400, true));
    let sent = run(&frame, VnetHdr::default(), v, &table(1000), &st);
    assert_eq!(drops(&st, DropReason::TooBig), 1);
    assert_eq!(st.icmp_sent.load(Relaxed), 1);
    assert_eq!(sent.len(), 1);
    let f = &sent[0].frame;
    let p = uvs_fwd::parse(f).expect("icmp parses");
    assert_eq!((p.icmp_type, p.icmp_code), (3, 4));
    assert_eq!(u16::from_be_bytes([f[p.l4_off + 6], f[p.l4_off + 7]]), 1000);
    let q = uvs_fwd::embedded(f, &p).expect("a quote");
    assert_eq!(
        (q.src, q.dst, q.dport),
        (ip(CLIENT), ip(VIP), 80),
        "as sent"
    );
}

#[test]
fn an_ipv6_nat_packet_too_big_gets_packet_too_big() {
    let st = WorkerStats::default();
    let frame = FrameSpec {
        payload: vec![1; 1400],
        ..FrameSpec::udp_v6()
    }
    .build();
    let p = uvs_fwd::parse(&frame).expect("parses");
    let v = Verdict::Xmit {
        next_hop: ip(RS),
        dnat_from: None,
        snat_from: None,
        pkt: p,
    };
    let t = table(1280);
    t.set(p.src, Lookup::Ready(hop(1500)));
    let sent = run(&frame, VnetHdr::default(), v, &t, &st);
    assert_eq!(sent.len(), 1);
    let a = uvs_fwd::parse(&sent[0].frame).expect("icmpv6 parses");
    assert_eq!((a.proto, a.icmp_type, a.dst), (ip_proto::ICMPV6, 2, p.src));
}

#[test]
fn ipv4_without_df_is_fragmented_to_the_path_mtu() {
    let st = WorkerStats::default();
    let (frame, v) = dnat(udp(1400, false));
    let sent = run(&frame, VnetHdr::default(), v, &table(1000), &st);
    assert_eq!(sent.len(), 2, "{:?}", st.drops);
    let mut data = 0;
    for (i, s) in sent.iter().enumerate() {
        assert_eq!(&s.frame[..6], &hop(1000).dst_mac);
        let p = uvs_fwd::parse(&s.frame).expect("fragment parses");
        assert!(p.is_fragment && p.ip_len <= 1000);
        assert_eq!(p.is_first_fragment, i == 0);
        data += p.ip_len - 20;
    }
    assert_eq!(data, 8 + 1400, "UDP header and payload, split");
}

#[test]
fn a_rejected_packet_gets_port_unreachable_from_the_vip() {
    let st = WorkerStats::default();
    let frame = udp(10, false);
    let v = Verdict::Reject {
        reason: DropReason::NoDestination,
        pkt: uvs_fwd::parse(&frame).expect("parses"),
    };
    let sent = run(&frame, VnetHdr::default(), v, &table(1500), &st);
    assert_eq!(sent.len(), 1);
    let p = uvs_fwd::parse(&sent[0].frame).expect("icmp parses");
    assert_eq!((p.icmp_type, p.icmp_code), (3, 3));
    assert_eq!((p.src, p.dst), (ip(VIP), ip(CLIENT)));
    assert_eq!(sent[0].ifindex, 7);
}

#[test]
fn icmp_answers_are_rate_limited() {
    let st = WorkerStats::default();
    let frame = udp(10, false);
    let v = Verdict::Reject {
        reason: DropReason::TtlExceeded,
        pkt: uvs_fwd::parse(&frame).expect("parses"),
    };
    let nb = table(1500);
    let mut e = Egress::new(1, 0);
    let mut q = FakeTx::default();
    for _ in 0..60 {
        let (mut buf, at) = with_headroom(&frame);
        e.output(&mut buf, at, VnetHdr::default(), v, &nb, 5, &st, &mut q);
    }
    assert_eq!(q.sent.len(), 50, "the burst");
    assert_eq!(st.icmp_limited.load(Relaxed), 10);
    let p = uvs_fwd::parse(&q.sent[0].frame).expect("icmp parses");
    assert_eq!(p.icmp_type, 11, "time exceeded");
}

#[test]
fn a_packet_waits_for_its_neighbour_then_leaves_or_expires() {
    let st = WorkerStats::default();
    let (frame, v) = dnat(udp(100, false));
    let nb = table(1500);
    nb.set(ip(RS), Lookup::Pending);
    let mut e = Egress::new(1, 0);
    let mut q = FakeTx::default();
    for _ in 0..2 {
        let (mut buf, at) = with_headroom(&frame);
        e.output(&mut buf, at, VnetHdr::default(), v, &nb, 0, &st, &mut q);
    }
    assert_eq!((q.sent.len(), e.parked()), (0, 2));
    e.retry_parked(&nb, 10, &st, &mut q);
    assert_eq!((q.sent.len(), e.parked()), (0, 2), "still pending");
    nb.set(ip(RS), Lookup::Ready(hop(1500)));
    e.retry_parked(&nb, 20, &st, &mut q);
    assert_eq!((q.sent.len(), e.parked()), (2, 0));
    assert!(!q.sent[0].in_place);
    assert_eq!(&q.sent[0].frame[12..], &frame[12..]);
    // A neighbour that never answers: dropped after the timeout.
    nb.set(ip(RS), Lookup::Pending);
    let (mut buf, at) = with_headroom(&frame);
    e.output(&mut buf, at, VnetHdr::default(), v, &nb, 100, &st, &mut q);
    e.retry_parked(&nb, 100 + park::PARK_TIMEOUT_MS, &st, &mut q);
    assert_eq!((q.sent.len(), e.parked()), (2, 0));
    assert_eq!(drops(&st, DropReason::NoRoute), 1);
}

#[test]
fn no_route_is_counted() {
    let st = WorkerStats::default();
    let (frame, v) = dnat(udp(10, false));
    let sent = run(&frame, VnetHdr::default(), v, &Table::default(), &st);
    assert!(sent.is_empty());
    assert_eq!(drops(&st, DropReason::NoRoute), 1);
}

/// A DF reply RS:8080 → CLIENT after SNAT to VIP:80, and its verdict, as
/// the pipeline's NAT reply path makes them, and the reply as sent; `v6`
/// for the IPv6 version.
fn snat_reply(payload: usize, v6: bool) -> (Vec<u8>, Verdict, Parsed, Vec<u8>) {
    let (rs, client, vip): (IpAddr, IpAddr, IpAddr) = if v6 {
        (
            ip("2001:db8:2::11"),
            ip("2001:db8:1::1"),
            ip("2001:db8::10"),
        )
    } else {
        (ip(RS), ip(CLIENT), ip(VIP))
    };
    let mut frame = FrameSpec {
        src: rs,
        dst: client,
        sport: 8080,
        dport: 40000,
        payload: vec![0x33; payload],
        ..if v6 {
            FrameSpec::udp_v6()
        } else {
            FrameSpec::udp_v4()
        }
    }
    .build();
    let sent = frame.clone();
    let orig = uvs_fwd::parse(&frame).expect("parses");
    uvs_fwd::snat(&mut frame, &orig, vip, 80, CsumMode::Full).expect("snat");
    let v = Verdict::Xmit {
        next_hop: client,
        dnat_from: None,
        snat_from: Some((rs, 8080)),
        pkt: Parsed {
            src: vip,
            sport: 80,
            ..orig
        },
    };
    (frame, v, orig, sent)
}

#[test]
fn a_nat_reply_too_big_for_the_client_path_is_answered_to_the_real_server() {
    for v6 in [false, true] {
        let st = WorkerStats::default();
        let (frame, v, orig, as_sent) = snat_reply(1400, v6);
        let t = Table::default();
        let lb = if v6 { ip("2001:db8:2::1") } else { ip(LB) };
        // The client's path is narrow; the real server is on a 1500 link.
        t.set(
            orig.dst,
            Lookup::Ready(NextHop {
                src_ip: None,
                ..hop(1280)
            }),
        );
        t.set(
            orig.src,
            Lookup::Ready(NextHop {
                src_ip: Some(lb),
                ifindex: 9,
                ..hop(1500)
            }),
        );
        let sent = run(&frame, VnetHdr::default(), v, &t, &st);
        assert_eq!(drops(&st, DropReason::TooBig), 1);
        assert_eq!(sent.len(), 1, "only the error leaves");
        assert_eq!(sent[0].ifindex, 9, "toward the real server");
        let f = &sent[0].frame;
        let p = uvs_fwd::parse(f).expect("error parses");
        let want_type = if v6 {
            (ip_proto::ICMPV6, 2, 0)
        } else {
            (ip_proto::ICMP, 3, 4)
        };
        assert_eq!((p.proto, p.icmp_type, p.icmp_code), want_type);
        assert_eq!(
            (p.src, p.dst),
            (lb, orig.src),
            "from this host to the server"
        );
        let q = uvs_fwd::embedded(f, &p).expect("a quote");
        assert_eq!(
            (q.src, q.sport, q.dst, q.dport),
            (orig.src, 8080, orig.dst, 40000),
            "the reply as the real server sent it"
        );
        // The quoted IP header is the one sent: TTL as received, valid sum.
        let qh = &f[p.payload_off..];
        let n = qh.len().min(as_sent.len() - 14);
        assert_eq!(&qh[..n], &as_sent[14..14 + n]);
    }
}

#[test]
fn path_mtu_errors_are_not_rate_limited() {
    let st = WorkerStats::default();
    let (frame, v, orig, _) = snat_reply(1400, false);
    let t = Table::default();
    t.set(orig.dst, Lookup::Ready(hop(1000)));
    t.set(orig.src, Lookup::Ready(hop(1500)));
    let mut e = Egress::new(1, 0);
    let mut q = FakeTx::default();
    for _ in 0..200 {
        let (mut buf, at) = with_headroom(&frame);
        e.output(&mut buf, at, VnetHdr::default(), v, &t, 5, &st, &mut q);
    }
    assert_eq!(q.sent.len(), 200, "every one answered");
    assert_eq!(st.icmp_limited.load(Relaxed), 0);
    assert_eq!(st.icmp_sent.load(Relaxed), 200);
}

#[test]
fn undoing_nat_keeps_a_ttl_of_two_answerable() {
    let mut spec = FrameSpec::udp_v4();
    spec.ttl = 2;
    let mut f = spec.build();
    let p0 = uvs_fwd::parse(&f).expect("parses");
    uvs_fwd::dnat(&mut f, &p0, ip(RS), 8080, CsumMode::Full).expect("dnat");
    let p = Parsed {
        dst: ip(RS),
        dport: 8080,
        ..p0
    };
    let q = undo_nat(&mut f, &p, Side::Dst, p0.dst, p0.dport, CsumMode::Full).expect("undone");
    assert_eq!(q.dst, p0.dst);
    assert_eq!(f, spec.build(), "byte for byte the packet as sent");
}

#[test]
fn a_gso_reply_whose_segments_outgrow_the_client_path_is_answered() {
    let st = WorkerStats::default();
    let mut spec = FrameSpec {
        src: ip(RS),
        dst: ip(CLIENT),
        sport: 8080,
        dport: 40000,
        payload: vec![7; 20_000],
        l4: L4Spec::Tcp {
            flags: 0x18,
            options: Vec::new(),
        },
        ..FrameSpec::tcp_v4()
    };
    spec.csum = CsumMode::Partial;
    let mut frame = spec.build();
    let orig = uvs_fwd::parse(&frame).expect("parses");
    uvs_fwd::snat(&mut frame, &orig, ip(VIP), 80, CsumMode::Partial).expect("snat");
    let v = Verdict::Xmit {
        next_hop: ip(CLIENT),
        dnat_from: None,
        snat_from: Some((ip(RS), 8080)),
        pkt: Parsed {
            src: ip(VIP),
            sport: 80,
            ..orig
        },
    };
    let vnet = VnetHdr {
        gso_type: 1,
        gso_size: 1448,
        ..VnetHdr::pending_csum(34, 16)
    };
    let t = Table::default();
    t.set(ip(CLIENT), Lookup::Ready(hop(1400)));
    t.set(
        ip(RS),
        Lookup::Ready(NextHop {
            ifindex: 9,
            ..hop(1500)
        }),
    );
    let sent = run(&frame, vnet, v, &t, &st);
    assert_eq!(drops(&st, DropReason::TooBig), 1);
    assert_eq!(sent.len(), 1, "the error only");
    let f = &sent[0].frame;
    let p = uvs_fwd::parse(f).expect("error parses");
    assert_eq!(
        (p.icmp_type, p.icmp_code, p.src, p.dst),
        (3, 4, ip(LB), ip(RS))
    );
    assert_eq!(u16::from_be_bytes([f[p.l4_off + 6], f[p.l4_off + 7]]), 1400);
    let q = uvs_fwd::embedded(f, &p).expect("a quote");
    assert_eq!((q.src, q.sport), (ip(RS), 8080));

    // Segments that fit leave whole, for the kernel to cut.
    let t = table(1500);
    t.set(ip(CLIENT), Lookup::Ready(hop(1500)));
    let (mut frame2, v2) = (spec.build(), v);
    uvs_fwd::snat(&mut frame2, &orig, ip(VIP), 80, CsumMode::Partial).expect("snat");
    let sent = run(&frame2, vnet, v2, &t, &st);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].in_place && sent[0].vnet.is_gso());
}
