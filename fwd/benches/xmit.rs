//! Per-packet cost of the other forwarding methods, without I/O: DR, tunnel
//! encapsulation (ipip; GRE and GUE with checksums, 64 and 1500 bytes) and
//! decapsulation, building an ICMP error, translating one, and segmenting a
//! 64 KB TSO super-packet. Run by the lead: `cargo bench -p uvs-fwd --bench xmit`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::gso::segment_tcp;
use uvs_fwd::xmit::icmp::{build_icmp_error, nat_icmp_error, IcmpKind, IcmpNat, MAX_ERROR_FRAME};
use uvs_fwd::xmit::tun::{decap_frame, encap, TunCsum, TunKind, TunParams, MAX_OVERHEAD};
use uvs_fwd::{dr, embedded, parse, CsumMode};

fn tcp4(payload: usize) -> Vec<u8> {
    let mut s = FrameSpec::tcp_v4();
    s.l4 = L4Spec::Tcp {
        flags: 0x10,
        options: vec![],
    };
    s.payload = vec![0x55; payload];
    s.build()
}

fn bench(c: &mut Criterion) {
    let dir: IpAddr = Ipv4Addr::new(203, 0, 113, 1).into();
    let rs: IpAddr = Ipv4Addr::new(203, 0, 113, 11).into();
    let vip: IpAddr = Ipv4Addr::new(192, 0, 2, 10).into();

    let f64b = tcp4(10);
    let mut f = f64b.clone();
    c.bench_function("parse_dr_tcp4_64B", |b| {
        b.iter(|| {
            f.copy_from_slice(&f64b);
            let p = parse(black_box(&f)).expect("valid frame");
            dr(&mut f, &p).expect("dr");
        })
    });

    for (name, kind, csum, payload) in [
        ("encap_ipip_tcp4_64B", TunKind::Ipip, TunCsum::NoCsum, 10),
        ("encap_gre_csum_tcp4_64B", TunKind::Gre, TunCsum::Csum, 10),
        ("encap_gue_csum_tcp4_64B", TunKind::Gue, TunCsum::Csum, 10),
        (
            "encap_gue_csum_tcp4_1500B",
            TunKind::Gue,
            TunCsum::Csum,
            1446,
        ),
        (
            "encap_ipip_tcp4_1500B",
            TunKind::Ipip,
            TunCsum::NoCsum,
            1446,
        ),
    ] {
        let orig = tcp4(payload);
        let p = parse(&orig).expect("valid frame");
        let mut t = TunParams::new(kind, dir, rs);
        t.csum = csum;
        t.port = 6080;
        let mut buf = vec![0u8; MAX_OVERHEAD + orig.len()];
        c.bench_function(name, |b| {
            b.iter(|| {
                buf[MAX_OVERHEAD..].copy_from_slice(&orig);
                let e = encap(&mut buf, MAX_OVERHEAD, &p, &t, 1, CsumMode::Full).expect("encap");
                black_box(e);
            })
        });
        let e = {
            buf[MAX_OVERHEAD..].copy_from_slice(&orig);
            encap(&mut buf, MAX_OVERHEAD, &p, &t, 1, CsumMode::Full).expect("encap")
        };
        let enc = buf[e.start..e.start + e.len].to_vec();
        let mut d = enc.clone();
        c.bench_function(&name.replace("encap", "decap"), |b| {
            b.iter(|| {
                d.copy_from_slice(&enc);
                black_box(decap_frame(black_box(&mut d), &[6080]).expect("decap"));
            })
        });
    }

    let orig = tcp4(10);
    let p = parse(&orig).expect("valid frame");
    let mut out = [0u8; MAX_ERROR_FRAME];
    c.bench_function("build_port_unreachable_tcp4", |b| {
        b.iter(|| {
            build_icmp_error(
                &mut out,
                black_box(&orig),
                &p,
                IcmpKind::PortUnreachable,
                vip,
                1,
            )
            .expect("icmp")
        })
    });

    // An error from the real server about a request, translated for the client.
    let mut at_rs = FrameSpec::tcp_v4();
    at_rs.dst = rs;
    let q = at_rs.build();
    let mut e = FrameSpec::tcp_v4();
    e.src = rs;
    e.dst = at_rs.src;
    e.l4 = L4Spec::Icmp {
        msg_type: 3,
        code: 3,
    };
    e.payload = q[14..].to_vec();
    let err = e.build();
    let mut g = err.clone();
    let nat = IcmpNat::to_client(vip, 80);
    c.bench_function("nat_icmp_error_tcp4", |b| {
        b.iter(|| {
            g.copy_from_slice(&err);
            let p = parse(&g).expect("valid frame");
            let emb = embedded(&g, &p).expect("quote");
            nat_icmp_error(&mut g, &p, &emb, &nat, CsumMode::Full).expect("nat");
        })
    });

    let tso = tcp4(65000);
    let p = parse(&tso).expect("valid frame");
    let mut scratch = vec![0u8; 2048];
    c.bench_function("segment_tcp4_65000B_mss1448", |b| {
        b.iter(|| {
            let mut bytes = 0;
            segment_tcp(
                black_box(&tso),
                &p,
                1448,
                &mut scratch,
                MAX_OVERHEAD,
                |s, h| bytes += s.len() - h,
            )
            .expect("segment");
            black_box(bytes)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
