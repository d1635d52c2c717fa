//! Later fragments follow their first through the pipeline: IPv6, and
//! IPv4 as AF_XDP delivers it (not reassembled).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::CsumMode;
use uvs_sched::{FwdMethod, SchedParams};

use crate::datapath::pipeline::{Pipeline, Verdict};
use crate::datapath::service::{DestSpec, ServiceSpec, Services};
use crate::datapath::stats::{DropReason, WorkerStats};

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().expect("literal address")
}

fn pipeline() -> Pipeline {
    pipeline_for("2001:db8:f::10", "2001:db8:5::11")
}

fn pipeline_for(vip: &str, rs: &str) -> Pipeline {
    let p = Pipeline::new(uvs_conntrack::Table::new(uvs_conntrack::Config::default()));
    let spec = ServiceSpec {
        proto: 17,
        addr: ip(vip),
        port: 53,
        sched: "rr".into(),
        params: SchedParams::default(),
        persistence: None,
        one_packet: false,
        pe: None,
        dests: vec![DestSpec {
            addr: ip(rs),
            port: 5353,
            fwd: FwdMethod::Masq,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            tun: Default::default(),
        }],
    };
    p.services.store(Arc::new(
        Services::default().rebuild(&[spec]).expect("plan"),
    ));
    p
}

/// Fragment `frag` of a UDP datagram `src` → `dst` (ports 40000 → 53 or
/// the reverse for a reply); fragment identification from the builder.
fn frag(src: &str, dst: &str, sport: u16, dport: u16, frag: (usize, bool)) -> Vec<u8> {
    FrameSpec {
        src: ip(src),
        dst: ip(dst),
        sport,
        dport,
        l4: L4Spec::Udp { zero_csum: false },
        frag: Some(frag),
        payload: vec![0x42; 64],
        csum: CsumMode::Full,
        ..FrameSpec::udp_v6()
    }
    .build()
}

#[test]
fn later_fragments_get_the_first_fragments_nat_both_ways() {
    let pl = pipeline();
    let st = WorkerStats::default();
    // Request: first fragment, then a later one.
    let mut f1 = frag("2001:db8:c::10", "2001:db8:f::10", 40000, 53, (0, true));
    let v = pl.process(&mut f1, CsumMode::Full, 1_000, &st);
    assert!(matches!(v, Verdict::Xmit { .. }), "{v:?}");
    let mut f2 = frag("2001:db8:c::10", "2001:db8:f::10", 40000, 53, (72, false));
    let v = pl.process(&mut f2, CsumMode::Full, 1_001, &st);
    let Verdict::Xmit { next_hop, pkt, .. } = v else {
        panic!("{v:?}");
    };
    assert_eq!(
        (next_hop, pkt.dst),
        (ip("2001:db8:5::11"), ip("2001:db8:5::11"))
    );
    let q = uvs_fwd::parse(&f2).expect("parses");
    assert_eq!((q.src, q.dst), (ip("2001:db8:c::10"), ip("2001:db8:5::11")));

    // Reply from the real server, fragmented too: source back to the VIP.
    let mut r1 = frag("2001:db8:5::11", "2001:db8:c::10", 5353, 40000, (0, true));
    let v = pl.process(&mut r1, CsumMode::Full, 1_002, &st);
    assert!(matches!(v, Verdict::Xmit { .. }), "{v:?}");
    let mut r2 = frag("2001:db8:5::11", "2001:db8:c::10", 5353, 40000, (72, false));
    let v = pl.process(&mut r2, CsumMode::Full, 1_003, &st);
    let Verdict::Xmit { next_hop, pkt, .. } = v else {
        panic!("{v:?}");
    };
    assert_eq!(
        (next_hop, pkt.src),
        (ip("2001:db8:c::10"), ip("2001:db8:f::10"))
    );
    let q = uvs_fwd::parse(&r2).expect("parses");
    assert_eq!(q.src, ip("2001:db8:f::10"));
}

#[test]
fn a_later_fragment_without_its_first_is_counted_or_left_to_the_kernel() {
    let pl = pipeline();
    let st = WorkerStats::default();
    let mut f = frag("2001:db8:c::99", "2001:db8:f::10", 40000, 53, (72, false));
    let v = pl.process(&mut f, CsumMode::Full, 1_000, &st);
    assert_eq!(v, Verdict::Drop(DropReason::FragmentUnmatched));
    assert_eq!(
        st.drops[DropReason::FragmentUnmatched as usize].load(Relaxed),
        1
    );
    // Not to a VIP: the kernel's.
    let mut f = frag("2001:db8:5::11", "2001:db8:c::99", 5353, 40000, (72, false));
    assert_eq!(
        pl.process(&mut f, CsumMode::Full, 1_000, &st),
        Verdict::Pass
    );
    // Expired: the first fragment's decision is forgotten after TTL_MS.
    let mut f1 = frag("2001:db8:c::10", "2001:db8:f::10", 40001, 53, (0, true));
    assert!(matches!(
        pl.process(&mut f1, CsumMode::Full, 1_000, &st),
        Verdict::Xmit { .. }
    ));
    let mut f2 = frag("2001:db8:c::10", "2001:db8:f::10", 40001, 53, (72, false));
    let late = 1_000 + super::TTL_MS;
    assert_eq!(
        pl.process(&mut f2, CsumMode::Full, late, &st),
        Verdict::Drop(DropReason::FragmentUnmatched)
    );
}

#[test]
fn ipv4_later_fragments_get_the_first_fragments_nat_both_ways() {
    let pl = pipeline_for("192.0.2.10", "203.0.113.11");
    let st = WorkerStats::default();
    let v4 = |src: &str, dst: &str, sport, dport, f: (usize, bool)| {
        FrameSpec {
            src: ip(src),
            dst: ip(dst),
            sport,
            dport,
            l4: L4Spec::Udp { zero_csum: false },
            frag: Some(f),
            payload: vec![0x42; 64],
            csum: CsumMode::Full,
            ..FrameSpec::udp_v4()
        }
        .build()
    };
    let mut f1 = v4("198.51.100.10", "192.0.2.10", 40000, 53, (0, true));
    let v = pl.process(&mut f1, CsumMode::Full, 1_000, &st);
    assert!(matches!(v, Verdict::Xmit { .. }), "{v:?}");
    let mut f2 = v4("198.51.100.10", "192.0.2.10", 40000, 53, (72, false));
    let v = pl.process(&mut f2, CsumMode::Full, 1_001, &st);
    let Verdict::Xmit { next_hop, pkt, .. } = v else {
        panic!("{v:?}");
    };
    assert_eq!(
        (next_hop, pkt.dst),
        (ip("203.0.113.11"), ip("203.0.113.11"))
    );
    let q = uvs_fwd::parse(&f2).expect("parses, header checksum and all");
    assert_eq!((q.src, q.dst), (ip("198.51.100.10"), ip("203.0.113.11")));
    assert_eq!(uvs_fwd::checksum::checksum(&f2[q.l3_off..q.l4_off]), 0);

    let mut r1 = v4("203.0.113.11", "198.51.100.10", 5353, 40000, (0, true));
    let v = pl.process(&mut r1, CsumMode::Full, 1_002, &st);
    assert!(matches!(v, Verdict::Xmit { .. }), "{v:?}");
    let mut r2 = v4("203.0.113.11", "198.51.100.10", 5353, 40000, (72, false));
    let v = pl.process(&mut r2, CsumMode::Full, 1_003, &st);
    let Verdict::Xmit { pkt, .. } = v else {
        panic!("{v:?}");
    };
    assert_eq!(pkt.src, ip("192.0.2.10"));

    // Same addresses and identification, another protocol: another
    // datagram, whose first was not seen.
    let mut t = v4("198.51.100.10", "192.0.2.10", 40000, 53, (72, false));
    t[14 + 9] = 6;
    t[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let c = uvs_fwd::checksum::checksum(&t[14..34]);
    t[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(
        pl.process(&mut t, CsumMode::Full, 1_004, &st),
        Verdict::Drop(DropReason::FragmentUnmatched)
    );
}
