//! The fuzz targets (`uvs::fuzz`, run by the `fuzz/` crate under
//! cargo-fuzz) on stable Rust: every checked-in corpus file
//! (`fuzz/corpus/<target>/`) is replayed, so a crash once found and added
//! there stays fixed; then a short, bounded mutation loop over each corpus
//! (count and time bounded) as CI's fuzz smoke when no nightly is around.
//!
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus` rewrites
//! the seed files from `fwd`'s frame builder.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use uvs::fuzz::TARGETS;
use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::CsumMode;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).expect("corpus file");
            (p, b)
        })
        .collect()
}

/// Runs `f` on `input`; on a panic, keeps the input for `cargo fuzz run
/// TARGET FILE` and fails naming it.
fn run_one(target: &str, f: fn(&[u8]), input: &[u8], what: &str) {
    if catch_unwind(AssertUnwindSafe(|| f(input))).is_err() {
        let keep = std::env::temp_dir().join(format!("uvs-fuzz-crash-{target}.bin"));
        let _ = std::fs::write(&keep, input);
        panic!(
            "target {target} failed on {what}; input kept at {}",
            keep.display()
        );
    }
}

#[test]
fn every_corpus_file_replays_cleanly() {
    for (name, f) in TARGETS {
        let files = corpus(name);
        assert!(!files.is_empty(), "target {name} has no corpus");
        for (path, bytes) in files {
            run_one(name, *f, &bytes, &path.display().to_string());
        }
    }
}

/// xorshift64*: a seeded, reproducible mutation stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One libFuzzer-like mutation: flip, set, insert, delete, duplicate a
/// range, truncate, or splice another input in.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    let n = input.len();
    match rng.below(8) {
        0 if n > 0 => {
            let i = rng.below(n);
            input[i] ^= 1 << rng.below(8);
        }
        1 if n > 0 => {
            let i = rng.below(n);
            input[i] = [0, 0xff, 0x7f, 0x80, 1][rng.below(5)];
        }
        2 => {
            let i = rng.below(n + 1);
            input.insert(i, rng.next() as u8);
        }
        3 if n > 0 => {
            let i = rng.below(n);
            let k = rng.below(n - i) + 1;
            input.drain(i..i + k.min(8));
        }
        4 if n > 1 => {
            let i = rng.below(n);
            let k = rng.below(n - i).min(16) + 1;
            let part = input[i..i + k].to_vec();
            let at = rng.below(n + 1);
            input.splice(at..at, part);
        }
        5 => input.truncate(rng.below(n + 1)),
        6 if !other.is_empty() => {
            let i = rng.below(other.len());
            let at = rng.below(n + 1);
            input.truncate(at);
            input.extend_from_slice(&other[i..]);
        }
        _ => {
            let i = rng.below(n + 1);
            let v = (rng.next() as u16).to_be_bytes();
            input.splice(i..i, v);
        }
    }
}

/// The stable fuzz smoke: each target's corpus mutated for at most
/// `UVS_FUZZ_SMOKE_ITERS` inputs (default 2,000) or `UVS_FUZZ_SMOKE_SECS`
/// seconds (default 3), whichever ends first; seeded by `UVS_FUZZ_SEED`
/// for reproduction.
#[test]
fn bounded_mutation_smoke() {
    let iters: usize = std::env::var("UVS_FUZZ_SMOKE_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let seed: u64 = std::env::var("UVS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1234);
    let secs: u64 = std::env::var("UVS_FUZZ_SMOKE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for (ti, (name, f)) in TARGETS.iter().enumerate() {
        let files: Vec<Vec<u8>> = corpus(name).into_iter().map(|(_, b)| b).collect();
        let mut rng = Rng(seed ^ (ti as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let end = Instant::now() + Duration::from_secs(secs);
        let mut done = 0;
        while done < iters && Instant::now() < end {
            let mut input = files[rng.below(files.len())].clone();
            let other = &files[rng.below(files.len())];
            for _ in 0..=rng.below(4) {
                mutate(&mut rng, &mut input, other);
            }
            run_one(name, *f, &input, &format!("mutation {done} (seed {seed})"));
            done += 1;
        }
        eprintln!("fuzz smoke {name}: {done} inputs");
    }
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

/// Packet seeds: the builder's shapes (TCP/UDP/SCTP/ICMP, IPv4/IPv6,
/// VLANs, options, extension headers, fragments, pending checksums).
fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let mut v = Vec::new();
    let mut add = |n: &'static str, s: FrameSpec| v.push((n, s.build()));
    add("tcp4", FrameSpec::tcp_v4());
    add("udp4", FrameSpec::udp_v4());
    add("tcp6", FrameSpec::tcp_v6());
    add("udp6", FrameSpec::udp_v6());
    add(
        "sctp4",
        FrameSpec {
            l4: L4Spec::Sctp,
            payload: vec![1, 0, 0, 8, 0, 0, 0, 0],
            ..FrameSpec::tcp_v4()
        },
    );
    add(
        "icmp4_unreach",
        FrameSpec {
            l4: L4Spec::Icmp {
                msg_type: 3,
                code: 4,
            },
            payload: {
                let inner = FrameSpec::tcp_v4().build();
                inner[14..14 + 28].to_vec()
            },
            ..FrameSpec::udp_v4()
        },
    );
    add(
        "icmp6_toobig",
        FrameSpec {
            l4: L4Spec::Icmp {
                msg_type: 2,
                code: 0,
            },
            payload: FrameSpec::udp_v6().build()[14..14 + 48].to_vec(),
            ..FrameSpec::udp_v6()
        },
    );
    add(
        "vlan2_tcp4_opts",
        FrameSpec {
            vlans: vec![10, 20],
            ip_options: vec![1, 1, 1, 0],
            ..FrameSpec::tcp_v4()
        },
    );
    add(
        "tcp6_ext",
        FrameSpec {
            ext_headers: vec![0, 60, 43],
            ..FrameSpec::tcp_v6()
        },
    );
    add(
        "udp4_frag_first",
        FrameSpec {
            frag: Some((0, true)),
            payload: vec![9; 64],
            ..FrameSpec::udp_v4()
        },
    );
    add(
        "udp6_frag_later",
        FrameSpec {
            frag: Some((64, false)),
            ..FrameSpec::udp_v6()
        },
    );
    add(
        "tcp4_partial",
        FrameSpec {
            csum: CsumMode::Partial,
            ..FrameSpec::tcp_v4()
        },
    );
    add(
        "udp4_zero_csum",
        FrameSpec {
            l4: L4Spec::Udp { zero_csum: true },
            ..FrameSpec::udp_v4()
        },
    );
    v
}

#[test]
#[ignore = "rewrites fuzz/corpus seed files"]
fn write_seed_corpus() {
    for (n, f) in frames() {
        write("parse", n, &f);
        write("decap", n, &f);
        for sel in [0u8, 1, 2, 3, 0x44, 0x25, 0x86] {
            let mut b = vec![sel];
            b.extend_from_slice(&f);
            write("rewrite", &format!("{n}_{sel:02x}"), &b);
        }
    }
    // Tunnel packets for decap: each kind, each outer family.
    for (i, sel) in [3u8, 4, 5, 6, 0x63, 0x44, 0x26].into_iter().enumerate() {
        for (n, f) in frames().into_iter().take(4) {
            let p = uvs_fwd::parse(&f).expect("seed parses");
            let mut buf = vec![0u8; 128];
            buf.extend_from_slice(&f);
            use uvs_fwd::xmit::tun::{encap, TunCsum, TunKind, TunParams};
            let kind = [TunKind::Ipip, TunKind::Gue, TunKind::Gue, TunKind::Gre][i % 4];
            let (s, d): (std::net::IpAddr, std::net::IpAddr) = if sel & 0x40 != 0 {
                (
                    "2001:db8:5::1".parse().unwrap(),
                    "2001:db8:5::11".parse().unwrap(),
                )
            } else {
                (
                    "203.0.113.1".parse().unwrap(),
                    "203.0.113.11".parse().unwrap(),
                )
            };
            let mut params = TunParams::new(kind, s, d);
            params.port = uvs::fuzz::packet::GUE_PORT;
            params.csum = if i == 2 {
                TunCsum::RemCsum
            } else if sel & 0x20 != 0 {
                TunCsum::Csum
            } else {
                TunCsum::NoCsum
            };
            let e = encap(&mut buf, 128, &p, &params, 1, CsumMode::Full).expect("encap");
            write(
                "decap",
                &format!("tun{i}_{n}"),
                &buf[e.start..e.start + e.len],
            );
        }
    }
    // Pipeline programs: all services, then requests and replies.
    let programs: [(&str, Vec<u8>); 4] = [
        (
            "nat_tcp_v4",
            vec![
                0, 0xff, 0xff, 0x02, 1, 0x00, 0x08, 10, 0, 0x11, 0x08, 0x10, 0x00, 9, 0x28, 10, 0,
            ],
        ),
        (
            "nat_udp_v6_reply",
            vec![
                0, 0x7f, 0xff, 0x00, 1, 0x03, 0, 20, 0, 1, 0x0b, 0, 20, 0, 0x21, 0x03, 0, 20, 0,
            ],
        ),
        (
            "sctp_dr_tun",
            vec![
                0, 0xff, 0xff, 0x13, 1, 0x04, 0x04, 4, 0, 1, 0x05, 0x04, 1, 0, 0x31, 0x14, 0x04, 2,
                0,
            ],
        ),
        (
            "flip_and_reconfig",
            vec![
                0, 0xff, 0xff, 0x80, 1, 0x00, 0x08, 10, 0x21, 17, 0x40, 0, 0x01, 0x00, 0x02, 1, 0,
                0, 0, 1,
            ],
        ),
    ];
    for (n, p) in programs {
        write("pipeline", n, &p);
    }
    let ctl: [&[u8]; 8] = [
        b"\0-A\0-t\x00192.0.2.10:80\0-s\0rr",
        b"\0-a\0-t\x00192.0.2.10:80\0-r\x00203.0.113.11:80\0-m\0-w\x003",
        b"\0-L\0-n\0--stats",
        b"\0--set\x005\x006\x007",
        b"\x01-A -t 192.0.2.10:80 -s wrr -p 300\n-a -t 192.0.2.10:80 -r 203.0.113.11 -g\n",
        b"\x01# comment\n\nipvsadm -A -u [2001:db8:f::10]:53 -s sh -b sh-port\n",
        b"\x01-A -f 1 -s rr\n-a -f 1 -r 203.0.113.12:0 -i --tun-type gue --tun-port 6080\n",
        b"\x01-C\n-D -t 192.0.2.10:80\n-Z\n",
    ];
    for (i, c) in ctl.iter().enumerate() {
        write("ctl", &format!("seed{i}"), c);
    }
    let filter: [&[u8]; 3] = [
        b"-A INPUT -p tcp -s 198.51.100.0/24 --dport 80 -j DROP\n",
        b"-A FORWARD -p udp -d 2001:db8::/32 --sport 53 -j ACCEPT\n-A INPUT -j DROP\n",
        b"-I INPUT 1 -p sctp --dport 9 -j DROP\n",
    ];
    for (i, c) in filter.iter().enumerate() {
        write("filter", &format!("seed{i}"), c);
    }
    let frame = |words: &[u8]| {
        let mut b = (words.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(words);
        b
    };
    write("ctl_frame", "list", &frame(b"-L\0-n"));
    let mut two = frame(b"-A\0-t\x00192.0.2.10:80");
    two.extend(frame(b"-Z"));
    write("ctl_frame", "two", &two);
    write("ctl_frame", "huge_len", &[0xff, 0xff, 0xff, 0xff, 0]);
}
