//! `pipeline`: the stateful harness. The input is a program: each step is
//! either a configuration change (a set of services, chosen by bits, from
//! NAT, DR and TUN services over TCP, UDP and SCTP, IPv4 and IPv6, some
//! persistent) or a packet (a request to a VIP or a real server's reply,
//! chosen fields, optionally one byte flipped) run through
//! [`Pipeline::process`] at a clock the program advances.
//!
//! Invariants checked on every packet: no panic; a dropped packet is
//! counted under its reason, once; a packet passed on, tunnelled or
//! rejected is unchanged; a transmitted one parses again to exactly the
//! addresses and ports its verdict names, and keeps a valid L4 checksum
//! when it had one.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::checksum::verify_l4_checksum;
use uvs_fwd::CsumMode;
use uvs_sched::{FwdMethod, SchedParams, TunConfig, TunType};

use super::Bytes;
use crate::datapath::pipeline::{Pipeline, Verdict};
use crate::datapath::service::{ClientMask, DestSpec, Persistence, ServiceSpec};
use crate::datapath::stats::WorkerStats;

/// Steps per input, at most (bounds the work of one input).
const MAX_STEPS: usize = 256;

const PROTOS: [u8; 3] = [6, 17, 132];

fn vip(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::from([0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 0x10])
    } else {
        IpAddr::from([192, 0, 2, 10])
    }
}

fn server(v6: bool, n: u8) -> IpAddr {
    if v6 {
        IpAddr::from([0x2001, 0xdb8, 5, 0, 0, 0, 0, 0x11 + u16::from(n)])
    } else {
        IpAddr::from([203, 0, 113, 11 + n])
    }
}

fn client(v6: bool, n: u8) -> IpAddr {
    if v6 {
        IpAddr::from([0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 0x10 + u16::from(n)])
    } else {
        IpAddr::from([198, 51, 100, 10 + n])
    }
}

/// The service set that bit mask `bits` (and `sched`) selects: bit `i` is
/// protocol `PROTOS[i % 3]`, family `i / 3 % 2`, method `i / 6` (NAT, DR,
/// TUN ipip/GUE/GRE), VIP port 80 + `i / 6`.
fn services(bits: u16, sched: u8) -> Vec<ServiceSpec> {
    let scheds = ["rr", "wrr", "lc", "sh", "mh", "sed"];
    (0..15u16)
        .filter(|i| bits & (1 << i) != 0)
        .map(|i| {
            let (proto, v6, m) = (PROTOS[usize::from(i % 3)], i / 3 % 2 == 1, i / 6);
            let (fwd, tun) = match m {
                0 => (FwdMethod::Masq, TunConfig::default()),
                1 => (FwdMethod::Route, TunConfig::default()),
                _ => (
                    FwdMethod::Tunnel,
                    TunConfig {
                        kind: [TunType::Ipip, TunType::Gue, TunType::Gre][usize::from(sched % 3)],
                        port: if sched % 3 == 1 { 6080 } else { 0 },
                        ..TunConfig::default()
                    },
                ),
            };
            let dest = |n: u8| DestSpec {
                addr: server(v6, n),
                port: if fwd == FwdMethod::Masq { 8080 } else { 80 + m },
                fwd,
                weight: u32::from(n) + u32::from(sched >> 4 & 1),
                u_threshold: 0,
                l_threshold: 0,
                tun,
            };
            ServiceSpec {
                proto,
                addr: vip(v6),
                port: 80 + m,
                sched: scheds[usize::from(sched >> 1) % scheds.len()].into(),
                params: SchedParams::default(),
                persistence: (sched & 0x80 != 0).then_some(Persistence {
                    timeout_ms: 300_000,
                    mask: if v6 {
                        ClientMask::V6(128)
                    } else {
                        ClientMask::V4(u32::MAX)
                    },
                }),
                one_packet: false,
                pe: None,
                dests: vec![dest(0), dest(1)],
            }
        })
        .collect()
}

/// A packet the program describes: a request (client → VIP) or a reply
/// (server → client, NAT), family, protocol, ports from small sets so that
/// steps meet each other's connections.
fn packet(b: &mut Bytes<'_>) -> (FrameSpec, Option<(usize, u8)>) {
    let (what, flags, len, mutate) = (b.u8(), b.u8(), b.u8(), b.u8());
    let v6 = what & 1 != 0;
    let proto = PROTOS[usize::from(what >> 1 & 3) % 3];
    let reply = what & 8 != 0;
    let (c, s) = (client(v6, what >> 4 & 3), server(v6, what >> 6 & 1));
    let cport = 40000 + u16::from(flags & 3);
    let vport = 80 + u16::from(len & 3);
    let mut spec = if v6 {
        FrameSpec::tcp_v6()
    } else {
        FrameSpec::tcp_v4()
    };
    (spec.src, spec.dst, spec.sport, spec.dport) = if reply {
        (s, c, 8080, cport)
    } else {
        (c, vip(v6), cport, vport)
    };
    spec.l4 = match proto {
        6 => L4Spec::Tcp {
            flags: flags >> 2 & 0x3f,
            options: Vec::new(),
        },
        17 => L4Spec::Udp { zero_csum: false },
        _ => L4Spec::Sctp,
    };
    spec.payload = if proto == 132 {
        // One chunk: type from the flags (INIT, INIT ACK, DATA, …), length 4.
        let mut p = vec![flags >> 2 & 0xf, 0, 0, 4];
        p.resize(4 + usize::from(len >> 2) * 4, 0x55);
        p
    } else {
        vec![0x5a; usize::from(len) * 6]
    };
    spec.ttl = if mutate & 0x0f == 1 { 1 } else { 64 };
    spec.csum = if mutate & 0x10 != 0 {
        CsumMode::Partial
    } else {
        CsumMode::Full
    };
    // The high bits ask for one byte flipped: at a chosen offset.
    let flip = (mutate & 0x20 != 0).then(|| (usize::from(b.u8()), b.u8() | 1));
    (spec, flip)
}

/// The harness body (see the module doc).
pub fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    // A small table, fixed seed: cheap to make per input, reproducible.
    let cfg = uvs_conntrack::Config {
        max_entries: 4096,
        shards: 4,
        seed: 1,
        presize: false,
        ..uvs_conntrack::Config::default()
    };
    let pl = Pipeline::new(uvs_conntrack::Table::new(cfg));
    let st = WorkerStats::default();
    let mut now: u64 = 1_000;
    for _ in 0..MAX_STEPS {
        if b.is_empty() {
            break;
        }
        let op = b.u8();
        now += u64::from(op >> 4) * u64::from(op >> 4) * 250;
        if op & 7 == 0 {
            let (bits, sched) = (b.u16(), b.u8());
            let base = pl.services.load_full();
            if let Ok(s) = base.rebuild(&services(bits, sched)) {
                pl.services.store(Arc::new(s));
            }
            continue;
        }
        let (spec, flip) = packet(&mut b);
        let mut frame = spec.build();
        if let Some((at, x)) = flip {
            let n = frame.len();
            frame[at % n] ^= x;
        }
        step(&pl, &st, frame, spec.csum, now);
    }
}

fn step(pl: &Pipeline, st: &WorkerStats, mut frame: Vec<u8>, csum: CsumMode, now: u64) {
    let before = frame.clone();
    let parsed = uvs_fwd::parse(&frame);
    let valid = parsed.as_ref().is_ok_and(|p| {
        csum == CsumMode::Full
            && p.has_l4
            && !p.is_fragment
            && verify_l4_checksum(&frame, p) == Ok(true)
    });
    let drops: u64 = st.drops.iter().map(|d| d.load(Relaxed)).sum();
    let v = pl.process(&mut frame, csum, now, st);
    let drops_after: u64 = st.drops.iter().map(|d| d.load(Relaxed)).sum();
    match v {
        Verdict::Drop(r) | Verdict::Reject { reason: r, .. } => {
            assert_eq!(drops_after, drops + 1, "one drop counted for {r:?}");
            assert!(st.drops[r as usize].load(Relaxed) > 0);
            if let Verdict::Reject { pkt, .. } = v {
                assert_eq!(frame, before, "a rejected packet is unchanged");
                assert_eq!(Ok(pkt), parsed, "the reject carries the parse");
            }
        }
        Verdict::Pass | Verdict::Tunnel { .. } => {
            assert_eq!(drops_after, drops, "{v:?} is no drop");
            assert_eq!(frame, before, "{v:?} leaves the frame alone");
            if let Verdict::Tunnel { pkt, .. } = v {
                assert_eq!(Ok(pkt), parsed, "the tunnel verdict carries the parse");
            }
        }
        Verdict::Xmit { pkt, .. } => {
            assert_eq!(drops_after, drops, "a transmitted packet is no drop");
            let q = uvs_fwd::parse(&frame).expect("a transmitted packet parses");
            assert_eq!(
                (q.src, q.dst, q.sport, q.dport, q.proto),
                (pkt.src, pkt.dst, pkt.sport, pkt.dport, pkt.proto),
                "the verdict names the packet as rewritten"
            );
            if valid && q.has_l4 {
                assert_eq!(
                    verify_l4_checksum(&frame, &q),
                    Ok(true),
                    "checksum kept valid: {pkt:?}"
                );
            }
        }
    }
}
