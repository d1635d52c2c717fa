//! The XDP steering program, written with [`super::asm`].
//!
//! Per packet it decides one thing: does uvs own it? Owned packets are
//! redirected into the AF_XDP socket of the receiving RX queue (an XSKMAP
//! indexed by queue); everything else goes on to the kernel (`XDP_PASS`).
//! The program forwards nothing itself: every packet uvs forwards is
//! processed by uvs's engine in userspace.
//!
//! Owned, by one hash map (`owned`) the control plane edits entry by entry:
//!
//! * service tuples: destination (VIP, protocol, port), or (VIP, protocol,
//!   port 0) for a port-0 service — TCP, UDP and SCTP;
//! * NAT reply tuples: source (real server, protocol, port), port 0 again
//!   being every port;
//! * ICMP errors (IPv4 destination-unreachable, source-quench,
//!   time-exceeded, parameter-problem; ICMPv6 1–4) whose source is a NAT real
//!   server: uvs relays them rewritten;
//! * ICMP errors about a service's packets, whoever sends them: the quoted
//!   header's source is a service tuple (a client's port-unreachable about
//!   a reply, which `schedule_icmp` may schedule; a router's
//!   fragmentation-needed about a DR server's reply from the VIP). The
//!   quoted IPv6 header must be followed by its transport header directly.
//!
//! A NAT reply or ICMP error addressed to the director itself is not uvs's:
//! it answers a connection the director's own stack started (a health
//! checker, monitoring, an operator's `curl` to a real server), so it goes
//! to the kernel, counted as [`COUNTER_PASS_LOCAL`]. "Addressed to the
//! director" is a longest-prefix match of the destination in the `local`
//! map, which mirrors the kernel's local routes (`type local`: every
//! address of the director, and AnyIP prefixes) — the AF_PACKET guard's
//! `fib daddr type local`. Service tuples are uvs's whatever their
//! destination. Two exceptions, as in the guard, are uvs's although
//! addressed to the director:
//!
//! * a NAT reply (TCP, UDP, SCTP) to a port of the nat table's
//!   MASQUERADE (`MASQ_PORTS`, 61440–65535: above Linux's ephemeral
//!   ports, so never a reply to the director's own sockets) — one byte
//!   compared, no lookup;
//! * a NAT reply or ICMP error to a local-client address (`--local-src`,
//!   an address of the director's `uvs-lo`): an `owned` entry of that
//!   address ([`Key::local_client`]), looked up only for packets from NAT
//!   real servers to local addresses.
//!
//! This is the nftables guard's rule set (`src/sys/guard.rs`), so in AF_XDP
//! mode the program is the kernel guard too: what it steers, the kernel never
//! sees. Like the guard it leaves to the kernel what it cannot classify: VLAN
//! tags and more than three IPv6 extension headers.
//!
//! Fragments after the first carry no ports, so no tuple can own them; they
//! follow their first fragment instead. A first fragment (IPv4: offset 0
//! with more-fragments; IPv6: a fragment header, offset 0, M set) that is
//! steered leaves its datagram's identity — (source, destination,
//! identification, protocol), [`FRAG_KEY_LEN`] bytes — in the `frags` LRU
//! map; a later fragment found there is steered too (uvs repeats the first
//! fragment's rewrite: `datapath::frag6`), any other goes to the kernel.
//! Under AF_PACKET the kernel reassembles IPv4 for uvs's sockets, which see
//! every fragment anyway; here nothing would reach uvs but the first. A
//! later fragment that overtakes its first one goes to the kernel, which
//! cannot complete the datagram either (its first fragment is uvs's). The
//! map is written once per steered first fragment (not per packet) and is
//! LRU, so a flood of first fragments only ages out older identities.
//!
//! Every decision is counted in a per-CPU array (no shared cache line):
//! [`COUNTER_STEERED`], [`COUNTER_PASSED`], [`COUNTER_PASS_LOCAL`], and
//! [`COUNTER_NO_SOCKET`] for an owned packet that arrived on a queue without
//! a uvs socket, which is dropped — the kernel must not answer it in uvs's
//! place.
//!
//! Cost per packet: at most four hash lookups, one prefix match and one
//! more hash lookup (both only for a packet from a NAT real server) and one
//! counter, whatever the number of services.
#![forbid(unsafe_code)]

use std::net::IpAddr;

use crate::datapath::tables::nat::MASQ_PORTS;

use super::asm::{
    Alu, Asm, AsmError, Cond, Insn, Size, FP, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9,
};

/// Bytes in a key of the `owned` map.
pub const KEY_LEN: usize = 20;

/// Index of the steered-packet counter.
pub const COUNTER_STEERED: u32 = 0;
/// Index of the passed-to-the-kernel counter.
pub const COUNTER_PASSED: u32 = 1;
/// Index of the owned-but-no-socket (dropped) counter.
pub const COUNTER_NO_SOCKET: u32 = 2;
/// Index of the counter of NAT replies and ICMP errors from a real server
/// addressed to the director itself, passed to its kernel.
pub const COUNTER_PASS_LOCAL: u32 = 3;
/// Entries in the counter array.
pub const COUNTERS: u32 = 4;
/// Bytes in a key of the `frags` map: `[source 16][destination 16]
/// [identification 4, network order: IPv4's 2 first][protocol][family 4 or
/// 6][pad 2]`, IPv4 addresses in the first 4 of their 16 bytes.
pub const FRAG_KEY_LEN: usize = 40;
/// Datagrams whose first fragment was steered, remembered at once (LRU).
pub const FRAG_MAX_ENTRIES: u32 = 4096;
/// Bytes in a key of the `local` map (`struct bpf_lpm_trie_key` with 20
/// bytes of data): see [`local_key`].
pub const LOCAL_KEY_LEN: usize = 24;

/// XDP verdicts.
pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;
pub const XDP_REDIRECT: i32 = 4;

// Key tags (byte 19): what kind of entry, which family.
const TAG_SVC4: u8 = 1;
const TAG_SVC6: u8 = 2;
const TAG_RS4: u8 = 3;
const TAG_RS6: u8 = 4;
const TAG_RSADDR4: u8 = 5;
const TAG_RSADDR6: u8 = 6;
const TAG_LCLIENT4: u8 = 7;
const TAG_LCLIENT6: u8 = 8;

/// High byte of the destination ports of replies to the nat table's
/// MASQUERADE (`MASQ_PORTS`, `0xf000..=0xffff`): one byte compared, no
/// map lookup.
const MASQ_PORT_HIGH: i32 = (MASQ_PORTS.0 >> 8) as i32;
const _: () = assert!(MASQ_PORTS.0 & 0xff == 0 && MASQ_PORTS.1 == 0xffff);

// Key layout on the program's stack: address at fp-24 (16 bytes, IPv4 in the
// first 4, the rest zero), port at fp-8 (network order), protocol at fp-6,
// tag at fp-5. The counter index lives at fp-28.
const K_ADDR: i16 = -24;
const K_PORT: i16 = -8;
const K_PROTO: i16 = -6;
const K_TAG: i16 = -5;
const K_COUNTER: i16 = -28;
// The `local` map's key at fp-56: prefix length (bits), family tag (a
// native u32: 4 or 6), then the destination address (16 bytes, zeroed).
// Every field is aligned for its store, as the verifier requires.
const L_PLEN: i16 = -56;
const L_TAG: i16 = -52;
const L_ADDR: i16 = -48;
const LOCAL_TAG4: u32 = 4;
const LOCAL_TAG6: u32 = 6;
// The `frags` map's key at fp-96 (FRAG_KEY_LEN bytes, zeroed at the start),
// the flag "this is a first fragment: note it when steered" at fp-104 (a
// zeroed u64), and the map's one-byte value at fp-108.
const F_KEY: i16 = -96;
const F_FIRST: i16 = -104;
const F_VALUE: i16 = -108;

/// A key of the `local` map: `[prefix length + 32, u32][family tag,
/// u32][address 16]` — the tag is matched as the first 32 bits of every
/// prefix, so IPv4 and IPv6 prefixes never match each other. Address bits
/// past `len` are zeroed.
pub fn local_key(addr: IpAddr, len: u8) -> [u8; LOCAL_KEY_LEN] {
    let mut k = [0u8; LOCAL_KEY_LEN];
    let mut a = [0u8; 16];
    let (tag, max) = match addr {
        IpAddr::V4(v4) => {
            a[..4].copy_from_slice(&v4.octets());
            (LOCAL_TAG4, 32)
        }
        IpAddr::V6(v6) => {
            a = v6.octets();
            (LOCAL_TAG6, 128)
        }
    };
    let len = len.min(max);
    for (i, b) in a.iter_mut().enumerate() {
        let keep = (u32::from(len)).saturating_sub(i as u32 * 8).min(8);
        *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
    k[0..4].copy_from_slice(&(32 + u32::from(len)).to_ne_bytes());
    k[4..8].copy_from_slice(&tag.to_ne_bytes());
    k[8..].copy_from_slice(&a);
    k
}

/// A key of the `owned` map: `[address 16][port 2, network order][protocol][tag]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; KEY_LEN]);

impl Key {
    fn new(tag4: u8, tag6: u8, proto: u8, addr: IpAddr, port: u16) -> Key {
        let mut k = [0u8; KEY_LEN];
        let tag = match addr {
            IpAddr::V4(a) => {
                k[..4].copy_from_slice(&a.octets());
                tag4
            }
            IpAddr::V6(a) => {
                k[..16].copy_from_slice(&a.octets());
                tag6
            }
        };
        k[16..18].copy_from_slice(&port.to_be_bytes());
        k[18] = proto;
        k[19] = tag;
        Key(k)
    }

    /// Packets to a service: (VIP, protocol, port), port 0 = every port.
    pub fn service(proto: u8, vip: IpAddr, port: u16) -> Key {
        Key::new(TAG_SVC4, TAG_SVC6, proto, vip, port)
    }

    /// NAT replies: from (real server, protocol, port), port 0 = every port.
    pub fn nat_server(proto: u8, rs: IpAddr, port: u16) -> Key {
        Key::new(TAG_RS4, TAG_RS6, proto, rs, port)
    }

    /// ICMP errors from a NAT real server's address.
    pub fn nat_address(rs: IpAddr) -> Key {
        Key::new(TAG_RSADDR4, TAG_RSADDR6, 0, rs, 0)
    }

    /// NAT replies and ICMP errors from real servers to a local-client
    /// address (`--local-src`), which is local to the director but uvs's.
    pub fn local_client(addr: IpAddr) -> Key {
        Key::new(TAG_LCLIENT4, TAG_LCLIENT6, 0, addr, 0)
    }
}

// Constants compared with values loaded from the packet: the program runs in
// the host's byte order, so network-order fields are compared as the same
// bytes read natively.
fn ne16(b: [u8; 2]) -> i32 {
    i32::from(u16::from_ne_bytes(b))
}

const ETH_HLEN: i16 = 14;
const IPPROTO_ICMP: i32 = 1;
const IPPROTO_TCP: i32 = 6;
const IPPROTO_UDP: i32 = 17;
const IPPROTO_SCTP: i32 = 132;
const IPPROTO_ICMPV6: i32 = 58;
const IPV6_HOPOPTS: i32 = 0;
const IPV6_ROUTING: i32 = 43;
const IPV6_FRAGMENT: i32 = 44;
const IPV6_DSTOPTS: i32 = 60;
/// Extension headers walked before giving up (to the kernel).
const EXT6_MAX: usize = 3;
const HELPER_MAP_LOOKUP: i32 = 1;
const HELPER_MAP_UPDATE: i32 = 2;
const HELPER_REDIRECT_MAP: i32 = 51;
// struct xdp_md
const MD_DATA: i16 = 0;
const MD_DATA_END: i16 = 4;
const MD_RX_QUEUE: i16 = 16;

/// The map file descriptors the program is built around.
#[derive(Debug, Clone, Copy)]
pub struct Maps {
    /// `BPF_MAP_TYPE_HASH`, key [`KEY_LEN`] bytes, value 1 byte.
    pub owned: i32,
    /// `BPF_MAP_TYPE_XSKMAP` of this interface, indexed by RX queue.
    pub xsks: i32,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY` of u64, [`COUNTERS`] entries.
    pub counters: i32,
    /// `BPF_MAP_TYPE_LPM_TRIE`, key [`LOCAL_KEY_LEN`] bytes, value 1 byte:
    /// the director's local prefixes.
    pub local: i32,
    /// `BPF_MAP_TYPE_LRU_HASH`, key [`FRAG_KEY_LEN`] bytes, value 1 byte:
    /// datagrams whose first fragment was steered.
    pub frags: i32,
}

struct Gen {
    a: Asm,
    maps: Maps,
}

impl Gen {
    /// `if owned[key] goto steer` (r1..r5 and r0 clobbered).
    fn lookup(&mut self, steer: super::asm::Label) {
        self.a.load_map_fd(R1, self.maps.owned);
        self.a.mov(R2, FP);
        self.a.alu_imm(Alu::Add, R2, i32::from(K_ADDR));
        self.a.call(HELPER_MAP_LOOKUP);
        self.a.jmp_imm(Cond::Ne, R0, 0, steer);
    }

    /// Bumps counter `idx` and returns `action`.
    fn count_and_return(&mut self, idx: u32, action: i32) {
        let a = &mut self.a;
        a.store_imm(Size::W, FP, K_COUNTER, idx as i32);
        a.load_map_fd(R1, self.maps.counters);
        a.mov(R2, FP);
        a.alu_imm(Alu::Add, R2, i32::from(K_COUNTER));
        a.call(HELPER_MAP_LOOKUP);
        let skip = a.label();
        a.jmp_imm(Cond::Eq, R0, 0, skip);
        // Per-CPU value: this CPU only, no atomic needed.
        a.load(Size::DW, R1, R0, 0);
        a.alu_imm(Alu::Add, R1, 1);
        a.store(Size::DW, R0, 0, R1);
        a.bind(skip);
        a.mov_imm(R0, action);
        a.exit();
    }

    /// From a NAT real server (the `owned` match is done): steered if the
    /// destination (at `daddr` in the packet, IPv4 or IPv6) is not local,
    /// or (`ported`: r9 is a TCP/UDP/SCTP header) its port is one of
    /// MASQUERADE's, or it is a local-client address; else to the kernel.
    /// Ends the path.
    fn unless_local(&mut self, v6: bool, daddr: i16, ported: bool, steer: super::asm::Label) {
        let a = &mut self.a;
        if ported {
            // A reply to the nat table's MASQUERADE: uvs's to un-NAT, on
            // the director's own address too (the guard's `@th,16,8
            // 0xf0-0xff`; the director's sockets use lower ports).
            a.load(Size::B, R0, R9, 2);
            a.jmp_imm(Cond::Ge, R0, MASQ_PORT_HIGH, steer);
        }
        a.store_imm(Size::DW, FP, L_ADDR, 0);
        a.store_imm(Size::DW, FP, L_ADDR + 8, 0);
        if v6 {
            a.store_imm(Size::W, FP, L_PLEN, 32 + 128);
            a.store_imm(Size::W, FP, L_TAG, LOCAL_TAG6 as i32);
            a.load(Size::DW, R0, R7, daddr);
            a.store(Size::DW, FP, L_ADDR, R0);
            a.load(Size::DW, R0, R7, daddr + 8);
            a.store(Size::DW, FP, L_ADDR + 8, R0);
        } else {
            a.store_imm(Size::W, FP, L_PLEN, 32 + 32);
            a.store_imm(Size::W, FP, L_TAG, LOCAL_TAG4 as i32);
            a.load(Size::W, R0, R7, daddr);
            a.store(Size::W, FP, L_ADDR, R0);
        }
        a.load_map_fd(R1, self.maps.local);
        a.mov(R2, FP);
        a.alu_imm(Alu::Add, R2, i32::from(L_PLEN));
        a.call(HELPER_MAP_LOOKUP);
        a.jmp_imm(Cond::Eq, R0, 0, steer);
        // Local, but perhaps a local client's (`--local-src`): its address
        // is on the director's `uvs-lo`, its replies are uvs's. Only
        // packets from NAT real servers to local addresses pay this lookup.
        let (tag, words) = if v6 {
            (TAG_LCLIENT6, 4)
        } else {
            (TAG_LCLIENT4, 1)
        };
        for i in 0..words {
            a.load(Size::W, R0, R7, daddr + 4 * i);
            a.store(Size::W, FP, K_ADDR + 4 * i, R0);
        }
        a.store_imm(Size::H, FP, K_PORT, 0);
        a.store_imm(Size::B, FP, K_PROTO, 0);
        a.store_imm(Size::B, FP, K_TAG, i32::from(tag));
        self.lookup(steer);
        self.count_and_return(COUNTER_PASS_LOCAL, XDP_PASS);
    }

    /// The `frags` key of an IPv4 fragment (r7 = data, header bounds-checked).
    fn frag_key4(&mut self) {
        let a = &mut self.a;
        a.load(Size::W, R0, R7, ETH_HLEN + 12);
        a.store(Size::W, FP, F_KEY, R0);
        a.load(Size::W, R0, R7, ETH_HLEN + 16);
        a.store(Size::W, FP, F_KEY + 16, R0);
        a.load(Size::H, R0, R7, ETH_HLEN + 4);
        a.store(Size::H, FP, F_KEY + 32, R0);
        a.load(Size::B, R0, R7, ETH_HLEN + 9);
        a.store(Size::B, FP, F_KEY + 36, R0);
        a.store_imm(Size::B, FP, F_KEY + 37, 4);
    }

    /// The `frags` key of an IPv6 fragment (r7 = data, r9 = its fragment
    /// header, both bounds-checked).
    fn frag_key6(&mut self) {
        let a = &mut self.a;
        for (from, to) in [(8, 0), (16, 8), (24, 16), (32, 24)] {
            a.load(Size::DW, R0, R7, ETH_HLEN + from);
            a.store(Size::DW, FP, F_KEY + to, R0);
        }
        a.load(Size::W, R0, R9, 4);
        a.store(Size::W, FP, F_KEY + 32, R0);
        a.load(Size::B, R0, R9, 0);
        a.store(Size::B, FP, F_KEY + 36, R0);
        a.store_imm(Size::B, FP, F_KEY + 37, 6);
    }

    /// A later fragment (its key built): steered if its first was, else to
    /// the kernel. Ends the path.
    fn follow_first(&mut self, steer: super::asm::Label, pass: super::asm::Label) {
        let a = &mut self.a;
        a.load_map_fd(R1, self.maps.frags);
        a.mov(R2, FP);
        a.alu_imm(Alu::Add, R2, i32::from(F_KEY));
        a.call(HELPER_MAP_LOOKUP);
        a.jmp_imm(Cond::Ne, R0, 0, steer);
        a.ja(pass);
    }

    /// An ICMP error (r9 its header, bounds-checked for 8 bytes) whose
    /// quoted packet came from a service tuple: steered, else to the
    /// kernel. Ends the path.
    fn about_a_service(&mut self, v6: bool, steer: super::asm::Label, pass: super::asm::Label) {
        let ported = self.a.label();
        let a = &mut self.a;
        // The quoted IP header at r9 + 8; its transport header in r4.
        let inner = 8i16;
        a.mov(R2, R9);
        a.alu_imm(Alu::Add, R2, i32::from(inner) + if v6 { 40 } else { 20 });
        a.jmp_reg(Cond::Gt, R2, R8, pass);
        if v6 {
            a.mov(R4, R2);
            a.load(Size::B, R5, R9, inner + 6);
            a.load(Size::DW, R0, R9, inner + 8);
            a.store(Size::DW, FP, K_ADDR, R0);
            a.load(Size::DW, R0, R9, inner + 16);
            a.store(Size::DW, FP, K_ADDR + 8, R0);
        } else {
            // A quoted later fragment has no ports.
            a.load(Size::H, R3, R9, inner + 6);
            a.alu_imm(Alu::And, R3, ne16([0x1f, 0xff]));
            a.jmp_imm(Cond::Ne, R3, 0, pass);
            a.load(Size::B, R3, R9, inner);
            a.alu_imm(Alu::And, R3, 0x0f);
            a.alu_imm(Alu::Lsh, R3, 2);
            a.jmp_imm(Cond::Lt, R3, 20, pass);
            a.mov(R4, R9);
            a.alu_imm(Alu::Add, R4, i32::from(inner));
            a.alu_reg(Alu::Add, R4, R3);
            a.load(Size::B, R5, R9, inner + 9);
            a.load(Size::W, R0, R9, inner + 12);
            a.store(Size::W, FP, K_ADDR, R0);
        }
        a.mov(R2, R4);
        a.alu_imm(Alu::Add, R2, 4);
        a.jmp_reg(Cond::Gt, R2, R8, pass);
        self.if_ported(R5, ported);
        let a = &mut self.a;
        a.ja(pass);
        a.bind(ported);
        a.store(Size::B, FP, K_PROTO, R5);
        a.load(Size::H, R0, R4, 0);
        a.store(Size::H, FP, K_PORT, R0);
        a.store_imm(
            Size::B,
            FP,
            K_TAG,
            i32::from(if v6 { TAG_SVC6 } else { TAG_SVC4 }),
        );
        self.lookup(steer);
        self.a.store_imm(Size::H, FP, K_PORT, 0);
        self.lookup(steer);
        self.a.ja(pass);
    }

    /// Jumps to `to` when `reg` is TCP, UDP or SCTP.
    fn if_ported(&mut self, reg: super::asm::Reg, to: super::asm::Label) {
        for p in [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP] {
            self.a.jmp_imm(Cond::Eq, reg, p, to);
        }
    }
}

/// Builds the steering program around `maps`. r6 = ctx, r7 = data,
/// r8 = data_end, r9 = transport header (bounds-checked for 8 bytes).
pub fn steering_program(maps: Maps) -> Result<Vec<Insn>, AsmError> {
    let mut g = Gen {
        a: Asm::new(),
        maps,
    };
    let pass = g.a.label();
    let steer = g.a.label();
    let v4 = g.a.label();
    let v6 = g.a.label();

    let a = &mut g.a;
    a.mov(R6, R1);
    a.load(Size::W, R7, R6, MD_DATA);
    a.load(Size::W, R8, R6, MD_DATA_END);
    // The key starts zeroed: IPv4 addresses use 4 of its 16 bytes.
    a.store_imm(Size::DW, FP, K_ADDR, 0);
    a.store_imm(Size::DW, FP, K_ADDR + 8, 0);
    a.store_imm(Size::W, FP, K_PORT, 0);
    for off in (F_KEY..F_KEY + FRAG_KEY_LEN as i16).step_by(8) {
        a.store_imm(Size::DW, FP, off, 0);
    }
    a.store_imm(Size::DW, FP, F_FIRST, 0);
    // Ethernet.
    a.mov(R2, R7);
    a.alu_imm(Alu::Add, R2, i32::from(ETH_HLEN));
    a.jmp_reg(Cond::Gt, R2, R8, pass);
    a.load(Size::H, R3, R7, 12);
    a.jmp_imm(Cond::Eq, R3, ne16([0x08, 0x00]), v4);
    a.jmp_imm(Cond::Eq, R3, ne16([0x86, 0xdd]), v6);
    a.ja(pass);

    // IPv4.
    let ports4 = a.label();
    let icmp4 = a.label();
    let later4 = a.label();
    let whole4 = a.label();
    a.bind(v4);
    a.mov(R2, R7);
    a.alu_imm(Alu::Add, R2, i32::from(ETH_HLEN) + 20);
    a.jmp_reg(Cond::Gt, R2, R8, pass);
    // A fragment after the first has no transport header: it follows its
    // first. A first fragment is noted if it is steered.
    a.load(Size::H, R4, R7, ETH_HLEN + 6);
    a.mov(R3, R4);
    a.alu_imm(Alu::And, R3, ne16([0x1f, 0xff]));
    a.jmp_imm(Cond::Ne, R3, 0, later4);
    a.alu_imm(Alu::And, R4, ne16([0x20, 0x00]));
    a.jmp_imm(Cond::Eq, R4, 0, whole4);
    g.frag_key4();
    let a = &mut g.a;
    a.store_imm(Size::DW, FP, F_FIRST, 1);
    a.bind(whole4);
    a.load(Size::B, R3, R7, ETH_HLEN);
    a.alu_imm(Alu::And, R3, 0x0f);
    a.alu_imm(Alu::Lsh, R3, 2);
    a.jmp_imm(Cond::Lt, R3, 20, pass);
    a.load(Size::B, R5, R7, ETH_HLEN + 9);
    a.store(Size::B, FP, K_PROTO, R5);
    a.mov(R9, R7);
    a.alu_imm(Alu::Add, R9, i32::from(ETH_HLEN));
    a.alu_reg(Alu::Add, R9, R3);
    a.mov(R2, R9);
    a.alu_imm(Alu::Add, R2, 8);
    a.jmp_reg(Cond::Gt, R2, R8, pass);
    a.jmp_imm(Cond::Eq, R5, IPPROTO_ICMP, icmp4);
    g.if_ported(R5, ports4);
    g.a.ja(pass);

    g.a.bind(ports4);
    // To a service: destination address and port.
    g.a.load(Size::W, R0, R7, ETH_HLEN + 16);
    g.a.store(Size::W, FP, K_ADDR, R0);
    g.a.load(Size::H, R0, R9, 2);
    g.a.store(Size::H, FP, K_PORT, R0);
    g.a.store_imm(Size::B, FP, K_TAG, i32::from(TAG_SVC4));
    g.lookup(steer);
    g.a.store_imm(Size::H, FP, K_PORT, 0);
    g.lookup(steer);
    // From a NAT real server: source address and port.
    let rs4 = g.a.label();
    g.a.load(Size::W, R0, R7, ETH_HLEN + 12);
    g.a.store(Size::W, FP, K_ADDR, R0);
    g.a.load(Size::H, R0, R9, 0);
    g.a.store(Size::H, FP, K_PORT, R0);
    g.a.store_imm(Size::B, FP, K_TAG, i32::from(TAG_RS4));
    g.lookup(rs4);
    g.a.store_imm(Size::H, FP, K_PORT, 0);
    g.lookup(rs4);
    g.a.ja(pass);
    g.a.bind(rs4);
    g.unless_local(false, ETH_HLEN + 16, true, steer);

    let icmperr4 = g.a.label();
    g.a.bind(icmp4);
    g.a.load(Size::B, R0, R9, 0);
    for t in [3, 4, 11, 12] {
        g.a.jmp_imm(Cond::Eq, R0, t, icmperr4);
    }
    g.a.ja(pass);
    g.a.bind(icmperr4);
    g.a.load(Size::W, R0, R7, ETH_HLEN + 12);
    g.a.store(Size::W, FP, K_ADDR, R0);
    g.a.store_imm(Size::B, FP, K_PROTO, 0);
    g.a.store_imm(Size::B, FP, K_TAG, i32::from(TAG_RSADDR4));
    let rserr4 = g.a.label();
    g.lookup(rserr4);
    g.about_a_service(false, steer, pass);
    g.a.bind(rserr4);
    g.unless_local(false, ETH_HLEN + 16, false, steer);
    g.a.bind(later4);
    g.frag_key4();
    g.follow_first(steer, pass);

    // IPv6: the fixed header, up to EXT6_MAX hop-by-hop / routing /
    // destination-options headers, a fragment header (a later fragment
    // follows its first), then the transport header.
    let ports6 = g.a.label();
    let icmp6 = g.a.label();
    let l4_6 = g.a.label();
    let frag6 = g.a.label();
    let a = &mut g.a;
    a.bind(v6);
    a.mov(R2, R7);
    a.alu_imm(Alu::Add, R2, i32::from(ETH_HLEN) + 40);
    a.jmp_reg(Cond::Gt, R2, R8, pass);
    a.load(Size::B, R5, R7, ETH_HLEN + 6);
    a.mov(R9, R7);
    a.alu_imm(Alu::Add, R9, i32::from(ETH_HLEN) + 40);
    for _ in 0..EXT6_MAX {
        let ext = a.label();
        let next = a.label();
        for h in [IPV6_HOPOPTS, IPV6_ROUTING, IPV6_DSTOPTS] {
            a.jmp_imm(Cond::Eq, R5, h, ext);
        }
        a.ja(next);
        a.bind(ext);
        a.mov(R2, R9);
        a.alu_imm(Alu::Add, R2, 8);
        a.jmp_reg(Cond::Gt, R2, R8, pass);
        a.load(Size::B, R5, R9, 0);
        // Length in 8-byte units, not counting the first 8: 8..2048 bytes.
        a.load(Size::B, R3, R9, 1);
        a.alu_imm(Alu::Add, R3, 1);
        a.alu_imm(Alu::Lsh, R3, 3);
        a.alu_reg(Alu::Add, R9, R3);
        a.bind(next);
    }
    a.jmp_imm(Cond::Eq, R5, IPV6_FRAGMENT, frag6);
    a.ja(l4_6);
    let later6 = a.label();
    let atomic6 = a.label();
    a.bind(frag6);
    a.mov(R2, R9);
    a.alu_imm(Alu::Add, R2, 8);
    a.jmp_reg(Cond::Gt, R2, R8, pass);
    a.load(Size::H, R4, R9, 2);
    a.mov(R3, R4);
    a.alu_imm(Alu::And, R3, ne16([0xff, 0xf8]));
    a.jmp_imm(Cond::Ne, R3, 0, later6);
    // Offset 0 without M is a whole datagram (RFC 6946), not noted.
    a.alu_imm(Alu::And, R4, ne16([0x00, 0x01]));
    a.jmp_imm(Cond::Eq, R4, 0, atomic6);
    g.frag_key6();
    let a = &mut g.a;
    a.store_imm(Size::DW, FP, F_FIRST, 1);
    a.bind(atomic6);
    a.load(Size::B, R5, R9, 0);
    a.alu_imm(Alu::Add, R9, 8);
    a.bind(l4_6);
    a.mov(R2, R9);
    a.alu_imm(Alu::Add, R2, 8);
    a.jmp_reg(Cond::Gt, R2, R8, pass);
    a.store(Size::B, FP, K_PROTO, R5);
    a.jmp_imm(Cond::Eq, R5, IPPROTO_ICMPV6, icmp6);
    g.if_ported(R5, ports6);
    g.a.ja(pass);

    let copy_addr6 = |a: &mut Asm, off: i16| {
        a.load(Size::DW, R0, R7, off);
        a.store(Size::DW, FP, K_ADDR, R0);
        a.load(Size::DW, R0, R7, off + 8);
        a.store(Size::DW, FP, K_ADDR + 8, R0);
    };
    g.a.bind(ports6);
    copy_addr6(&mut g.a, ETH_HLEN + 24);
    g.a.load(Size::H, R0, R9, 2);
    g.a.store(Size::H, FP, K_PORT, R0);
    g.a.store_imm(Size::B, FP, K_TAG, i32::from(TAG_SVC6));
    g.lookup(steer);
    g.a.store_imm(Size::H, FP, K_PORT, 0);
    g.lookup(steer);
    copy_addr6(&mut g.a, ETH_HLEN + 8);
    g.a.load(Size::H, R0, R9, 0);
    g.a.store(Size::H, FP, K_PORT, R0);
    g.a.store_imm(Size::B, FP, K_TAG, i32::from(TAG_RS6));
    let rs6 = g.a.label();
    g.lookup(rs6);
    g.a.store_imm(Size::H, FP, K_PORT, 0);
    g.lookup(rs6);
    g.a.ja(pass);
    g.a.bind(rs6);
    g.unless_local(true, ETH_HLEN + 24, true, steer);

    let icmperr6 = g.a.label();
    g.a.bind(icmp6);
    g.a.load(Size::B, R0, R9, 0);
    for t in [1, 2, 3, 4] {
        g.a.jmp_imm(Cond::Eq, R0, t, icmperr6);
    }
    g.a.ja(pass);
    g.a.bind(icmperr6);
    copy_addr6(&mut g.a, ETH_HLEN + 8);
    g.a.store_imm(Size::B, FP, K_PROTO, 0);
    g.a.store_imm(Size::B, FP, K_TAG, i32::from(TAG_RSADDR6));
    let rserr6 = g.a.label();
    g.lookup(rserr6);
    g.about_a_service(true, steer, pass);
    g.a.bind(rserr6);
    g.unless_local(true, ETH_HLEN + 24, false, steer);
    g.a.bind(later6);
    g.frag_key6();
    g.follow_first(steer, pass);

    // Owned: into this queue's socket; without one, dropped and counted.
    let redirected = g.a.label();
    let noted = g.a.label();
    g.a.bind(steer);
    // A first fragment: its later fragments follow it here.
    g.a.load(Size::DW, R0, FP, F_FIRST);
    g.a.jmp_imm(Cond::Eq, R0, 0, noted);
    g.a.store_imm(Size::B, FP, F_VALUE, 1);
    g.a.load_map_fd(R1, g.maps.frags);
    g.a.mov(R2, FP);
    g.a.alu_imm(Alu::Add, R2, i32::from(F_KEY));
    g.a.mov(R3, FP);
    g.a.alu_imm(Alu::Add, R3, i32::from(F_VALUE));
    g.a.mov_imm(R4, 0); // BPF_ANY
    g.a.call(HELPER_MAP_UPDATE);
    g.a.bind(noted);
    g.a.load(Size::W, R2, R6, MD_RX_QUEUE);
    g.a.load_map_fd(R1, g.maps.xsks);
    // Flags 0: a missing socket returns XDP_ABORTED (0), told apart below.
    g.a.mov_imm(R3, 0);
    g.a.call(HELPER_REDIRECT_MAP);
    g.a.jmp_imm(Cond::Eq, R0, XDP_REDIRECT, redirected);
    g.count_and_return(COUNTER_NO_SOCKET, XDP_DROP);
    g.a.bind(redirected);
    g.count_and_return(COUNTER_STEERED, XDP_REDIRECT);
    g.a.bind(pass);
    g.count_and_return(COUNTER_PASSED, XDP_PASS);
    g.a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn program_assembles_and_fits() {
        let p = steering_program(Maps {
            owned: 3,
            xsks: 4,
            counters: 5,
            local: 6,
            frags: 7,
        })
        .expect("assembles");
        assert!(p.len() > 50 && p.len() < 1000, "{} instructions", p.len());
        // The last instruction returns.
        assert_eq!(p.last().map(|i| i.code), Some(0x95));
    }

    #[test]
    fn keys_separate_family_kind_and_port() {
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
        let k = Key::service(6, v4, 80);
        assert_eq!(&k.0[..4], &[192, 0, 2, 10]);
        assert_eq!(&k.0[4..16], &[0; 12]);
        assert_eq!(&k.0[16..], &[0, 80, 6, TAG_SVC4]);
        assert_ne!(k, Key::nat_server(6, v4, 80));
        assert_ne!(k, Key::service(17, v4, 80));
        let v6 = IpAddr::V6(Ipv6Addr::new(0xc000, 0x020a, 0, 0, 0, 0, 0, 0));
        assert_ne!(
            k,
            Key::service(6, v6, 80),
            "same leading bytes, other family"
        );
        assert_eq!(Key::nat_address(v4).0[16..], [0, 0, 0, TAG_RSADDR4]);
        let l = Key::local_client(v4);
        assert_eq!(&l.0[..4], &[192, 0, 2, 10]);
        assert_eq!(l.0[16..], [0, 0, 0, TAG_LCLIENT4]);
        assert_eq!(Key::local_client(v6).0[16..], [0, 0, 0, TAG_LCLIENT6]);
        assert_eq!(MASQ_PORT_HIGH, 0xf0);
    }

    #[test]
    fn local_keys_mask_past_the_prefix_and_keep_families_apart() {
        let k = local_key(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77)), 24);
        assert_eq!(&k[0..4], &(32u32 + 24).to_ne_bytes());
        assert_eq!(&k[4..8], &LOCAL_TAG4.to_ne_bytes());
        assert_eq!(&k[8..12], &[192, 0, 2, 0]);
        assert_eq!(&k[12..], &[0; 12]);
        let k = local_key(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77)), 99);
        assert_eq!(&k[0..4], &(32u32 + 32).to_ne_bytes(), "capped at 32");
        assert_eq!(&k[8..12], &[192, 0, 2, 77]);
        let a6: Ipv6Addr = "2001:db8:5::ff".parse().unwrap();
        let k = local_key(IpAddr::V6(a6), 20);
        assert_eq!(&k[4..8], &LOCAL_TAG6.to_ne_bytes());
        assert_eq!(
            &k[8..12],
            &[0x20, 0x01, 0x00, 0x00],
            "0x0d cut to its first 4 bits"
        );
        assert_eq!(&k[12..], &[0; 12]);
        assert_eq!(local_key(IpAddr::V6(a6), 128)[8..], a6.octets());
    }
}
