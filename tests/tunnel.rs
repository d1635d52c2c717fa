//! Lab tests of `uvs tunnel-endpoint`: a real process in the real server's
//! namespace decapsulates tunnel packets sent from the director's namespace
//! and the real server's own stack answers the client directly.
//!
//! No director runs: the tests craft the director's output themselves (raw
//! IP sockets in the `lb` namespace; outer headers from
//! `uvs_fwd::xmit::tun::encap`, what the director's engine uses, and one
//! ipip header assembled by hand here), so they test the endpoint alone. The
//! lab is `lab.sh --dr`: VIPs on the real servers' `lo`, replies straight to
//! the client's second leg. Each test builds its own prefixed lab and
//! removes it, also on failure; they need root and skip without it.

use std::collections::BTreeMap;

use std::net::{IpAddr, SocketAddr, UdpSocket};

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use uvs::lab::{self, Lab, Server};
use uvs::sys::netns;
use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_fwd::wire::tcp;
use uvs_fwd::xmit::tun::{encap, TunCsum, TunKind, TunParams, MAX_OVERHEAD};
use uvs_fwd::CsumMode;

mod common;

use common::{root_or_skip, Endpoint};

static SERIAL: Mutex<()> = Mutex::new(());

const GUE_PORT: u16 = 6080;
const RS1: &str = "203.0.113.11";
const RS1_V6: &str = "2001:db8:5::11";
const LB: &str = "203.0.113.1";
const LB_V6: &str = "2001:db8:5::1";
const CLIENT: &str = "198.51.100.10";
const CLIENT_V6: &str = "2001:db8:c::10";
const VIP: &str = "192.0.2.10";
const VIP_V6: &str = "2001:db8:f::10";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

struct Setup {
    // Field order is drop order: the endpoint, the server, then the lab.
    ep: Option<Endpoint>,
    _server: Server,
    lab: Lab,
}

fn setup(tag: &str) -> Setup {
    let prefix = format!("uvtun{}{tag}", std::process::id() % 100000);
    let lab = Lab::up(&prefix, &["--dr"]).expect("lab up");
    let server = lab::serve_in(&lab.ns("rs1"), "rs1", 80, 53).expect("rs1 server");
    let port = GUE_PORT.to_string();
    let ep = Endpoint::start(&lab, "rs1", &["--gue-port", &port, "--gue-port", "5555"]);
    Setup {
        ep: Some(ep),
        _server: server,
        lab,
    }
}

impl Setup {
    fn ep(&self) -> &Endpoint {
        self.ep.as_ref().expect("endpoint running")
    }

    /// Sends an outer IP packet from the director's namespace (raw socket:
    /// the kernel routes it and resolves the neighbour, bytes unchanged).
    fn send_from_lb(&self, pkt: Vec<u8>) {
        let dst = outer_dst(&pkt);
        netns::run_in(&self.lab.ns("lb"), move || {
            let dom = if dst.is_ipv4() {
                Domain::IPV4
            } else {
                Domain::IPV6
            };
            // IPPROTO_RAW: the header is ours (IP_HDRINCL / IPv6 likewise).
            let s = Socket::new(dom, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))
                .expect("raw socket");
            s.send_to(&pkt, &SockAddr::from(SocketAddr::new(dst, 0)))
                .expect("raw send");
        })
        .expect("lb namespace");
    }

    /// Sends `vnet + frame` out of the director's server-side interface
    /// with a packet socket, as the director's engine does (a pending
    /// checksum stays pending across the veth pair and the bridge).
    fn send_frame_from_lb(&self, buf: Vec<u8>) {
        let (ifindex, _) = self.link("lb", "s0");
        netns::run_in(&self.lab.ns("lb"), move || {
            use uvs::io::{TxQueue, TxSink, VnetHdr};
            let mut tx = uvs::io::TxBatch::new(4, 1).expect("packet socket");
            let vnet = VnetHdr::read_from(&buf).expect("a virtio-net header");
            tx.queue().copy(&buf[VnetHdr::LEN..], &vnet, ifindex);
            let err = std::io::Error::last_os_error();
            let c = tx.take_counts();
            assert_eq!((c.sent, c.dropped), (1, 0), "packet socket: {err}");
        })
        .expect("lb namespace");
    }

    /// (ifindex, MAC) of `dev` in a lab namespace.
    fn link(&self, host: &str, dev: &str) -> (u32, [u8; 6]) {
        let out = self.ns_cmd(host, &["ip", "-o", "link", "show", dev]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let index = text
            .split(':')
            .next()
            .and_then(|i| i.trim().parse().ok())
            .unwrap_or_else(|| panic!("no ifindex in {text:?}"));
        let mac = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC in {text:?}"));
        let mut m = [0u8; 6];
        for (b, h) in m.iter_mut().zip(mac.split(':')) {
            *b = u8::from_str_radix(h, 16).expect("hex MAC");
        }
        (index, m)
    }

    /// A UDP socket on the client's address (the answer's destination).
    fn client_udp(&self, v6: bool, port: u16) -> UdpSocket {
        let a = SocketAddr::new(ip(if v6 { CLIENT_V6 } else { CLIENT }), port);
        netns::run_in(&self.lab.ns("c"), move || {
            let u = UdpSocket::bind(a).expect("client bind");
            u.set_read_timeout(Some(Duration::from_millis(400)))
                .expect("timeout");
            u
        })
        .expect("client namespace")
    }

    /// Sends `pkt` (a tunnelled request from `client` port `port`) until the
    /// client receives the real server's answer (3 tries); returns it.
    fn exchange(&self, client: &UdpSocket, pkt: &[u8]) -> Option<String> {
        self.exchange_with(client, || self.send_from_lb(pkt.to_vec()))
    }

    /// [`Self::exchange`] with any way of sending.
    fn exchange_with(&self, client: &UdpSocket, send: impl Fn()) -> Option<String> {
        let mut buf = [0u8; 2048];
        for _ in 0..3 {
            send();
            if let Ok((n, _)) = client.recv_from(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    }

    /// A kernel SNMP counter of a lab namespace (`Icmp` `OutDestUnreachs`…).
    fn snmp(&self, host: &str, file: &str, group: &str, name: &str) -> u64 {
        let (f, g, n) = (file.to_string(), group.to_string(), name.to_string());
        netns::run_in(&self.lab.ns(host), move || {
            let t = std::fs::read_to_string(format!("/proc/thread-self/net/{f}")).expect("snmp");
            if f == "snmp6" {
                return t
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(char::is_whitespace)?;
                        (k == format!("{g}{n}")).then(|| v.trim().parse().ok())?
                    })
                    .expect("snmp6 counter");
            }
            let mut lines = t.lines().filter(|l| l.starts_with(&format!("{g}:")));
            let (h, v) = (lines.next().expect("header"), lines.next().expect("values"));
            let i = h.split_whitespace().position(|x| x == n).expect("counter");
            v.split_whitespace()
                .nth(i)
                .and_then(|x| x.parse().ok())
                .expect("number")
        })
        .expect("namespace")
    }

    /// Kernel counters that explain a missing answer.
    fn diag(&self) -> String {
        let mut out = String::new();
        for (host, file, g, n) in [
            ("rs1", "snmp", "Udp", "NoPorts"),
            ("rs1", "snmp", "Udp", "InErrors"),
            ("rs1", "snmp", "Udp", "InDatagrams"),
            ("rs1", "snmp", "Udp", "OutDatagrams"),
            ("rs1", "snmp", "Icmp", "OutDestUnreachs"),
            ("rs1", "snmp", "Ip", "InAddrErrors"),
            ("c", "snmp", "Udp", "NoPorts"),
            ("c", "snmp", "Udp", "InDatagrams"),
            ("c", "snmp", "Icmp", "OutDestUnreachs"),
        ] {
            out += &format!("{host} {g}.{n}={} ", self.snmp(host, file, g, n));
        }
        out
    }

    fn ns_cmd(&self, host: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.lab.ns(host)])
            .args(args)
            .output()
            .expect("command runs")
    }
}

fn outer_dst(pkt: &[u8]) -> IpAddr {
    match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 20 => IpAddr::from([pkt[16], pkt[17], pkt[18], pkt[19]]),
        Some(6) if pkt.len() >= 40 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&pkt[24..40]);
            IpAddr::from(a)
        }
        _ => panic!("not an IP packet"),
    }
}

/// The client's request to the VIP: UDP `client:sport → VIP:53` (or TCP SYN
/// to port 80), in the inner packet's family.
fn request(v6: bool, sport: u16, l4: L4Spec, payload: &[u8]) -> FrameSpec {
    let mut s = if v6 {
        FrameSpec::udp_v6()
    } else {
        FrameSpec::udp_v4()
    };
    (s.src, s.dst) = if v6 {
        (ip(CLIENT_V6), ip(VIP_V6))
    } else {
        (ip(CLIENT), ip(VIP))
    };
    s.sport = sport;
    s.dport = if matches!(l4, L4Spec::Tcp { .. }) {
        80
    } else {
        53
    };
    s.l4 = l4;
    s.payload = payload.to_vec();
    s
}

fn udp_request(v6: bool, sport: u16, payload: &[u8]) -> FrameSpec {
    request(v6, sport, L4Spec::Udp { zero_csum: false }, payload)
}

/// What the director sends: `spec` encapsulated toward rs1 (outer family
/// `outer_v6`), as an IP packet (Ethernet header removed).
fn tunnelled(spec: &FrameSpec, kind: TunKind, csum: TunCsum, outer_v6: bool) -> Vec<u8> {
    let (src, dst) = if outer_v6 {
        (ip(LB_V6), ip(RS1_V6))
    } else {
        (ip(LB), ip(RS1))
    };
    let mut p = TunParams::new(kind, src, dst);
    p.port = GUE_PORT;
    p.csum = csum;
    let mut buf = vec![0u8; MAX_OVERHEAD];
    buf.extend_from_slice(&spec.build());
    let parsed = uvs_fwd::parse(&buf[MAX_OVERHEAD..]).expect("request parses");
    let e = encap(&mut buf, MAX_OVERHEAD, &parsed, &p, 1, spec.csum).expect("encap");
    buf[e.start + 14..e.start + e.len].to_vec()
}

/// IPv4-in-IPv4 assembled by hand (independently of `encap`): a 20-byte
/// outer header, protocol 4, then the inner packet unchanged.
fn ipip_by_hand(inner: &[u8]) -> Vec<u8> {
    ipip_from([203, 0, 113, 1], inner)
}

/// [`ipip_by_hand`] with outer source `src`.
fn ipip_from(src: [u8; 4], inner: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + inner.len()) as u16).to_be_bytes());
    h[6] = 0x40; // DF
    h[8] = 64;
    h[9] = 4;
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&[203, 0, 113, 11]);
    let c = !uvs_fwd::checksum::fold(uvs_fwd::checksum::sum(&h));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(inner);
    h
}

#[test]
fn udp_answers_come_back_through_every_tunnel_kind_and_family() {
    if !root_or_skip("udp_answers_come_back_through_every_tunnel_kind_and_family") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("udp");
    // (name, tunnel, outer checksum, outer v6, inner v6, inner csum mode)
    let cases = [
        ("ipip 4in4", TunKind::Ipip, TunCsum::NoCsum, false, false),
        ("ipip 6in6", TunKind::Ipip, TunCsum::NoCsum, true, true),
        ("ipip 6in4", TunKind::Ipip, TunCsum::NoCsum, false, true),
        ("ipip 4in6", TunKind::Ipip, TunCsum::NoCsum, true, false),
        ("gre 4in4", TunKind::Gre, TunCsum::NoCsum, false, false),
        ("gre csum 4in4", TunKind::Gre, TunCsum::Csum, false, false),
        ("gre csum 6in6", TunKind::Gre, TunCsum::Csum, true, true),
        (
            "gue nocsum 4in4",
            TunKind::Gue,
            TunCsum::NoCsum,
            false,
            false,
        ),
        ("gue csum 4in4", TunKind::Gue, TunCsum::Csum, false, false),
        ("gue nocsum 6in6", TunKind::Gue, TunCsum::NoCsum, true, true),
        ("gue csum 4in6", TunKind::Gue, TunCsum::Csum, true, false),
    ];
    let mut want = BTreeMap::<&str, u64>::new();
    for (i, (name, kind, csum, outer_v6, inner_v6)) in cases.into_iter().enumerate() {
        let sport = 20000 + i as u16;
        let client = s.client_udp(inner_v6, sport);
        let payload = format!("{name} #{i}");
        let pkt = tunnelled(
            &udp_request(inner_v6, sport, payload.as_bytes()),
            kind,
            csum,
            outer_v6,
        );
        let got = s.exchange(&client, &pkt);
        assert_eq!(
            got.as_deref(),
            Some(format!("rs1:{payload}").as_str()),
            "{name}: counters {:?}\n{}\n{}",
            s.ep().counters(),
            s.ep().log(),
            s.diag()
        );
        *want
            .entry(match kind {
                TunKind::Ipip => "decap.ipip",
                TunKind::Gue => "decap.gue",
                TunKind::Gre => "decap.gre",
            })
            .or_default() += 1;
    }
    // Hand-made ipip and GUE with remote checksum offload (the inner UDP
    // checksum travels pending; the endpoint completes it).
    let client = s.client_udp(false, 20100);
    let inner = udp_request(false, 20100, b"by hand").build();
    let got = s.exchange(&client, &ipip_by_hand(&inner[14..]));
    assert_eq!(got.as_deref(), Some("rs1:by hand"));
    let client = s.client_udp(false, 20101);
    let mut req = udp_request(false, 20101, b"remcsum");
    req.csum = CsumMode::Partial;
    let pkt = tunnelled(&req, TunKind::Gue, TunCsum::RemCsum, false);
    assert_eq!(s.exchange(&client, &pkt).as_deref(), Some("rs1:remcsum"));
    // Every packet counted as decapsulated (the file lags up to 200 ms),
    // none dropped.
    s.ep().wait_counter("decap.gue", want["decap.gue"] + 1);
    let c = s.ep().counters();
    assert!(c["decap.ipip"] > want["decap.ipip"], "{c:?}");
    assert!(c["decap.gre"] >= want["decap.gre"], "{c:?}");
    assert!(c["decap.gue"] > want["decap.gue"], "{c:?}");
    let drops: u64 = c
        .iter()
        .filter(|(k, _)| k.starts_with("drop."))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(drops, 0, "{c:?}");
    // The kernel never saw the outer packets: no ICMP unreachable for them.
    assert_eq!(s.snmp("rs1", "snmp", "Icmp", "OutDestUnreachs"), 0);
    assert_eq!(s.snmp("rs1", "snmp6", "Icmp6", "OutDestUnreachs"), 0);
}

/// What an offloading director sends: the inner UDP checksum left pending
/// (virtio `NEEDS_CSUM`, `csum_start` at the inner UDP header) and outer GUE
/// / GRE checksums computed by local checksum offload. The endpoint
/// completes the inner checksum before verifying the outer one.
#[test]
fn pending_checksums_from_an_offloading_director_are_completed() {
    if !root_or_skip("pending_checksums_from_an_offloading_director_are_completed") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("csum");
    let (_, lb_mac) = s.link("lb", "s0");
    let (_, rs_mac) = s.link("rs1", "eth0");
    let cases = [
        ("gue csum 4in4", TunKind::Gue, TunCsum::Csum, false, false),
        ("gre csum 6in4", TunKind::Gre, TunCsum::Csum, false, true),
        ("ipip 4in6", TunKind::Ipip, TunCsum::NoCsum, true, false),
        ("gue csum 6in6", TunKind::Gue, TunCsum::Csum, true, true),
    ];
    for (i, (name, kind, csum, outer_v6, inner_v6)) in cases.into_iter().enumerate() {
        let sport = 22000 + i as u16;
        let client = s.client_udp(inner_v6, sport);
        let mut req = udp_request(inner_v6, sport, name.as_bytes());
        req.csum = CsumMode::Partial;
        let (src, dst) = if outer_v6 {
            (ip(LB_V6), ip(RS1_V6))
        } else {
            (ip(LB), ip(RS1))
        };
        let mut p = TunParams::new(kind, src, dst);
        p.port = GUE_PORT;
        p.csum = csum;
        let mut buf = vec![0u8; MAX_OVERHEAD];
        buf.extend_from_slice(&req.build());
        let parsed = uvs_fwd::parse(&buf[MAX_OVERHEAD..]).expect("request parses");
        let e = encap(&mut buf, MAX_OVERHEAD, &parsed, &p, 1, CsumMode::Partial).expect("encap");
        let pending = e.pending.expect("inner checksum left pending");
        let mut out = vec![0u8; 10];
        out[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
        out[6..8].copy_from_slice(&(pending.start as u16).to_ne_bytes());
        out[8..10].copy_from_slice(&(pending.offset as u16).to_ne_bytes());
        out.extend_from_slice(&buf[e.start..e.start + e.len]);
        uvs_fwd::set_macs(&mut out[10..], lb_mac, rs_mac).expect("Ethernet frame");
        let got = s.exchange_with(&client, || s.send_frame_from_lb(out.clone()));
        assert_eq!(
            got.as_deref(),
            Some(format!("rs1:{name}").as_str()),
            "{name}: {:?}",
            s.ep().counters()
        );
    }
    // The pending checksums reached the endpoint as such and were completed.
    assert!(s.ep().wait_counter("offload.csum_completed", 4) >= 4);
    let c = s.ep().counters();
    let drops: u64 = c
        .iter()
        .filter(|(k, _)| k.starts_with("drop."))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(drops, 0, "{c:?}");
}

/// Sends (up to 3 times) until `sniff` (a raw TCP socket in the client
/// namespace) sees a segment VIP:80 → client:`dport` whose flags, masked
/// with `want`, equal `want`.
fn await_tcp(sniff: &Socket, dport: u16, want: u8, send: impl Fn()) -> bool {
    for _ in 0..3 {
        send();
        let end = Instant::now() + Duration::from_millis(600);
        while Instant::now() < end {
            let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
            let Ok(n) = sniff.recv(&mut b) else { continue };
            // SAFETY: recv initialised the first n bytes.
            let b: Vec<u8> = b[..n].iter().map(|x| unsafe { x.assume_init() }).collect();
            let hl = usize::from(b[0] & 0x0f) * 4;
            let t = &b[hl.min(b.len())..];
            if b[12..16] == [192, 0, 2, 10]
                && t.len() >= 14
                && t[0..2] == 80u16.to_be_bytes()
                && t[2..4] == dport.to_be_bytes()
                && t[13] & want == want
            {
                return true;
            }
        }
    }
    false
}

/// A TCP SYN through the tunnel reaches the real server's stack, whose
/// SYN-ACK goes straight to the client (seen there with a raw socket).
#[test]
fn tcp_syn_through_the_tunnel_gets_a_syn_ack_at_the_client() {
    if !root_or_skip("tcp_syn_through_the_tunnel_gets_a_syn_ack_at_the_client") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("tcp");
    let sniff = netns::run_in(&s.lab.ns("c"), || {
        let r = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP)).expect("raw tcp");
        r.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        r
    })
    .expect("client namespace");
    let syn = request(
        false,
        30000,
        L4Spec::Tcp {
            flags: tcp::flags::SYN,
            options: Vec::new(),
        },
        b"",
    );
    for (kind, csum) in [
        (TunKind::Gre, TunCsum::Csum),
        (TunKind::Gue, TunCsum::NoCsum),
        (TunKind::Ipip, TunCsum::NoCsum),
    ] {
        let pkt = tunnelled(&syn, kind, csum, false);
        assert!(
            await_tcp(&sniff, 30000, tcp::flags::SYN | tcp::flags::ACK, || s
                .send_from_lb(pkt.clone())),
            "{kind:?}: no SYN-ACK at the client; counters {:?}",
            s.ep().counters()
        );
    }
}

/// Malformed tunnel packets are dropped and counted (and never answered by
/// the kernel); SIGTERM removes the nftables table and the TUN device, and a
/// stale table is replaced at start.
#[test]
fn malformed_packets_are_counted_and_sigterm_cleans_up() {
    if !root_or_skip("malformed_packets_are_counted_and_sigterm_cleans_up") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = setup("bad");
    // A working exchange first (neighbours resolved, endpoint proven up).
    let client = s.client_udp(false, 21000);
    let good = tunnelled(
        &udp_request(false, 21000, b"ok"),
        TunKind::Gre,
        TunCsum::Csum,
        false,
    );
    assert_eq!(s.exchange(&client, &good).as_deref(), Some("rs1:ok"));
    s.ep().wait_counter("decap.gre", 1);
    let base = s.ep().counters();
    // GRE with a wrong checksum (the outer IPv4 header stays valid).
    let mut bad_gre = good.clone();
    let gre_csum = 20 + 4;
    bad_gre[gre_csum] ^= 0x5a;
    s.send_from_lb(bad_gre);
    // ipip whose inner header claims more bytes than the outer carries.
    let inner = udp_request(false, 21000, b"short").build();
    let mut bad_ipip = ipip_by_hand(&inner[14..]);
    bad_ipip[20 + 2] = 0x04;
    s.send_from_lb(bad_ipip);
    // GUE over IPv6 whose UDP checksum is wrong.
    let mut bad_gue = tunnelled(
        &udp_request(true, 21001, b"gue"),
        TunKind::Gue,
        TunCsum::Csum,
        true,
    );
    let n = bad_gue.len();
    bad_gue[n - 1] ^= 0x01;
    s.send_from_lb(bad_gue);
    assert_eq!(
        s.ep().wait_counter("drop.checksum", 2),
        2,
        "{}",
        s.ep().log()
    );
    assert_eq!(s.ep().wait_counter("drop.bad_inner", 1), 1);
    let c = s.ep().counters();
    assert_eq!(c["decap.gre"], base["decap.gre"], "{c:?}");
    // A late answer to a retried good exchange may still be queued (the
    // exchange resends after 400 ms on a loaded machine); only an answer to
    // a malformed packet is a failure.
    let mut buf = [0u8; 64];
    while let Ok((n, _)) = client.recv_from(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]);
        assert_eq!(text, "rs1:ok", "no answer to a malformed packet expected");
    }
    assert_eq!(s.snmp("rs1", "snmp", "Icmp", "OutDestUnreachs"), 0);
    assert_eq!(s.snmp("rs1", "snmp6", "Icmp6", "OutDestUnreachs"), 0);

    // The table and the device exist while running...
    let table = ["nft", "list", "table", "netdev", uvs::tunnel::TABLE];
    assert!(s.ns_cmd("rs1", &table).status.success());
    assert!(s
        .ns_cmd("rs1", &["ip", "link", "show", "uvstun0"])
        .status
        .success());
    // ... and are gone after SIGTERM, which prints the counters.
    let (ok, printed) = s.ep.take().expect("running").stop();
    assert!(ok, "endpoint exit status");
    assert_eq!(printed.get("drop.checksum"), Some(&2), "{printed:?}");
    assert!(
        !s.ns_cmd("rs1", &table).status.success(),
        "table left behind"
    );
    assert!(!s
        .ns_cmd("rs1", &["ip", "link", "show", "uvstun0"])
        .status
        .success());

    // A stale table (as a crash leaves) is replaced at start, not merged.
    let t = uvs::tunnel::TABLE;
    for cmd in [
        &["nft", "add", "table", "netdev", t][..],
        &["nft", "add", "chain", "netdev", t, "stale"],
    ] {
        assert!(s.ns_cmd("rs1", cmd).status.success(), "{cmd:?}");
    }
    let ep = Endpoint::start(&s.lab, "rs1", &[]);
    let list = s.ns_cmd("rs1", &table);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("chain in0") && !text.contains("stale"),
        "{text}"
    );
    let (ok, _) = ep.stop();
    assert!(ok);
    assert!(!s.ns_cmd("rs1", &table).status.success());
}

/// Only the directors get in: a tunnel packet from another host is dropped
/// and counted (`drop.not_director`), and so is an inner packet to an
/// address not of this host, from a martian, or from this host itself;
/// without `--director` (or `--any-director`) the endpoint refuses to start.
#[test]
fn only_directors_and_sane_inner_packets_get_in() {
    if !root_or_skip("only_directors_and_sane_inner_packets_get_in") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("dir");
    let client = s.client_udp(false, 22000);
    let inner = |src: &str, dst: &str, payload: &[u8]| {
        let mut r = udp_request(false, 22000, payload);
        (r.src, r.dst) = (ip(src), ip(dst));
        r.build()[14..].to_vec()
    };
    // From the director: answered.
    let good = ipip_by_hand(&inner(CLIENT, VIP, b"ok"));
    assert_eq!(s.exchange(&client, &good).as_deref(), Some("rs1:ok"));
    // The same from a host that is not a director (outer source spoofed
    // in the director's namespace): dropped, counted, never answered.
    let spoofed = ipip_from([203, 0, 113, 99], &inner(CLIENT, VIP, b"intruder"));
    s.send_from_lb(spoofed);
    assert_eq!(
        s.ep().wait_counter("drop.not_director", 1),
        1,
        "{}",
        s.ep().log()
    );
    // From the director, but inner packets the stack must not take.
    for (src, dst, counter) in [
        ("127.0.0.1", VIP, "drop.inner_src_martian"),
        (CLIENT, "192.0.2.99", "drop.inner_dst_not_local"),
        (RS1, VIP, "drop.inner_src_local"),
    ] {
        s.send_from_lb(ipip_by_hand(&inner(src, dst, b"bad")));
        assert_eq!(s.ep().wait_counter(counter, 1), 1, "{counter}");
    }
    // Each refusal counted above; none answered (the stats file lags by
    // up to 200 ms, so decap.ipip is not compared).
    let mut buf = [0u8; 64];
    while let Ok((n, _)) = client.recv_from(&mut buf) {
        assert_eq!(
            &buf[..n],
            b"rs1:ok",
            "only the director's packet is answered"
        );
    }
    // No director named: refused, loudly, before anything is installed.
    let out = s.ns_cmd(
        "rs1",
        &[
            env!("CARGO_BIN_EXE_uvs"),
            "tunnel-endpoint",
            "--tun-name",
            "uvstun9",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no --director given"), "{err}");
}
