//! Per-packet cost of the fwd hot path without I/O: parse a 64-byte TCP frame,
//! then DNAT it (Full and Partial checksum modes), and a full L4 checksum
//! fill for comparison, and SCTP's CRC-32C over 1,480 bytes. Run by the lead:
//! `cargo bench -p uvs-fwd --bench nat`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::{dnat, fill_l4_checksum, parse, snat, CsumMode};

fn frame64(mode: CsumMode) -> Vec<u8> {
    let mut s = FrameSpec::tcp_v4();
    s.l4 = L4Spec::Tcp {
        flags: 0x10,
        options: vec![],
    };
    s.payload = vec![0x55; 10]; // 14 + 20 + 20 + 10 = 64 bytes
    s.csum = mode;
    let f = s.build();
    assert_eq!(f.len(), 64);
    f
}

fn bench(c: &mut Criterion) {
    let rs: IpAddr = Ipv4Addr::new(203, 0, 113, 11).into();
    let vip: IpAddr = Ipv4Addr::new(192, 0, 2, 10).into();
    let base = frame64(CsumMode::Full);
    c.bench_function("parse_tcp4_64B", |b| b.iter(|| parse(black_box(&base))));

    for (name, mode) in [
        ("parse_dnat_tcp4_64B_full", CsumMode::Full),
        ("parse_dnat_tcp4_64B_partial", CsumMode::Partial),
    ] {
        let orig = frame64(mode);
        let mut f = orig.clone();
        c.bench_function(name, |b| {
            b.iter(|| {
                // Reset the TTL so every iteration forwards (copy: 64 bytes).
                f.copy_from_slice(&orig);
                let p = parse(black_box(&f)).expect("valid frame");
                dnat(&mut f, &p, rs, 8080, mode).expect("rewrite");
                black_box(&f);
            })
        });
    }

    let mut f = base.clone();
    c.bench_function("parse_snat_dnat_roundtrip_tcp4_64B", |b| {
        b.iter(|| {
            f.copy_from_slice(&base);
            let p = parse(&f).expect("valid frame");
            dnat(&mut f, &p, rs, 8080, CsumMode::Full).expect("dnat");
            let p = parse(&f).expect("valid frame");
            snat(&mut f, &p, vip, 80, CsumMode::Full).expect("snat");
            black_box(&f);
        })
    });

    let mut f = frame64(CsumMode::Partial);
    let p = parse(&f).expect("valid frame");
    c.bench_function("fill_l4_checksum_tcp4_64B", |b| {
        b.iter(|| fill_l4_checksum(black_box(&mut f), &p).expect("fill"))
    });

    // SCTP's CRC-32C over a full-size 1,480-byte segment.
    let seg: Vec<u8> = (0..1480u32).map(|i| i as u8).collect();
    c.bench_function("crc32c_1480B", |b| {
        b.iter(|| uvs_fwd::checksum::crc32c(black_box(&seg)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
