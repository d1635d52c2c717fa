//! Overload: more 64-byte UDP than uvs can forward, and every datagram
//! accounted for. Needs root (namespaces); skipped otherwise.
//!
//! The client blasts a NAT service over 64 flows (bounded in count and in
//! time); two sink servers count what arrives. A datagram can die:
//! * on the client's veth (the receiving CPU's backlog was full): the
//!   client's `eth0` TX drops;
//! * in uvs: its RX ring was full (`drop.rx_queue_full`, the kernel's
//!   `PACKET_STATISTICS`; under AF_XDP `drop.xdp_rx_ring_full` or
//!   `drop.xdp_fill_ring_empty`, its `XDP_STATISTICS`), or any other named
//!   drop in `uvs stats`
//!   (`tx_failed` includes the director's `s0` refusing a frame);
//! * on the switch's veth ports toward the servers: their TX drops;
//! * in a server's socket buffer (sized large): `Udp RcvbufErrors`.
//!
//! The test checks sent = received + uvs's drops + the drops outside uvs,
//! within 1%, and that uvs really was overloaded (its own drops are not 0).

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uvs::lab::{Director, Lab};
use uvs::sys::netns;

mod common;

use common::{parse_counters, root_or_skip};

const PORT: u16 = 5001;
const FLOWS: u16 = 64;
/// Bounds of the blast: whichever comes first.
const MAX_DATAGRAMS: u64 = 3_000_000;
const MAX_TIME: Duration = Duration::from_secs(3);
/// UDP payload of a 64-byte Ethernet frame (with its FCS): 64 − 4 − 14 − 20 − 8.
const PAYLOAD: usize = 18;

/// A UDP sink in a namespace, counting datagrams until stopped.
struct Sink {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    fn start(ns: &str) -> Sink {
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = netns::spawn_in(ns, move || {
            let sock = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )
            .expect("udp socket");
            let big = 64 << 20;
            let fd = sock.as_raw_fd();
            // SAFETY: setsockopt of an int on a socket we own (root may
            // exceed rmem_max: a buffer large enough not to be the bottleneck).
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&big as *const i32).cast(),
                    std::mem::size_of::<i32>() as u32,
                )
            };
            assert_eq!(rc, 0, "SO_RCVBUFFORCE");
            let addr: SocketAddr = format!("0.0.0.0:{PORT}").parse().expect("literal");
            sock.bind(&addr.into()).expect("bind the sink");
            let sock: UdpSocket = sock.into();
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let _ = tx.send(());
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if sock.recv(&mut buf).is_ok() {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .expect("server namespace");
        rx.recv_timeout(Duration::from_secs(5)).expect("sink up");
        Sink {
            count,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A line of `/proc/net/snmp` style: `group: names…` then `group: values…`.
fn snmp(ns: &str, group: &str, name: &str) -> u64 {
    let (g, n) = (format!("{group}:"), name.to_string());
    netns::run_in(ns, move || {
        let t = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("snmp");
        let mut lines = t.lines().filter(|l| l.starts_with(&g));
        let names: Vec<&str> = lines.next().expect("names").split_whitespace().collect();
        let vals: Vec<&str> = lines.next().expect("values").split_whitespace().collect();
        let i = names.iter().position(|x| *x == n).expect("counter");
        vals[i].parse().expect("number")
    })
    .expect("namespace")
}

/// TX drops of every interface in `ns` but loopback (`/proc/net/dev`).
fn tx_drops(ns: &str) -> BTreeMap<String, u64> {
    netns::run_in(ns, || {
        let t = std::fs::read_to_string("/proc/thread-self/net/dev").expect("net/dev");
        t.lines()
            .skip(2)
            .filter_map(|l| {
                let (dev, rest) = l.split_once(':')?;
                let v: Vec<u64> = rest
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                // rx: bytes packets errs drop fifo frame compressed multicast;
                // tx: bytes packets errs drop …
                let dev = dev.trim().to_string();
                if dev == "lo" {
                    return None;
                }
                Some((dev, *v.get(11)?))
            })
            .collect()
    })
    .expect("namespace")
}

/// The 64 flows' sockets, connected to the VIP, sending in `sendmmsg`
/// batches until a bound is reached; returns the datagrams the kernel took.
fn blast(vip: SocketAddr) -> u64 {
    let socks: Vec<UdpSocket> = (0..FLOWS)
        .map(|i| {
            let s = UdpSocket::bind(("198.51.100.10", 30000 + i)).expect("client bind");
            s.connect(vip).expect("connect");
            s
        })
        .collect();
    const B: usize = 32;
    let payload = [0x42u8; PAYLOAD];
    let mut iov = [libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: PAYLOAD,
    }; B];
    // SAFETY: mmsghdr is plain old data; zero is a valid value.
    let mut msgs: [libc::mmsghdr; B] = unsafe { std::mem::zeroed() };
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let (start, mut sent) = (Instant::now(), 0u64);
    'out: loop {
        for s in &socks {
            if sent >= MAX_DATAGRAMS || start.elapsed() >= MAX_TIME {
                break 'out;
            }
            // SAFETY: msgs point at live iovecs over `payload`; connected
            // sockets need no address.
            let rc = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), B as u32, 0) };
            if rc > 0 {
                sent += rc as u64;
            }
        }
    }
    sent
}

/// Everything counted, at one moment.
#[derive(Debug, Clone, Default)]
struct Tally {
    received: u64,
    uvs_drops: BTreeMap<String, u64>,
    client_tx_drops: u64,
    switch_tx_drops: u64,
    rcvbuf_errors: u64,
}

impl Tally {
    fn outside(&self) -> u64 {
        self.client_tx_drops + self.switch_tx_drops + self.rcvbuf_errors
    }
}

fn tally(lab: &Lab, d: &Director, sinks: &[Sink]) -> Tally {
    let stats = d.call(&["stats"]).expect("uvs stats").stdout;
    Tally {
        received: sinks.iter().map(Sink::received).sum(),
        uvs_drops: parse_counters(&stats)
            .into_iter()
            .filter(|(k, _)| k.starts_with("drop."))
            .collect(),
        client_tx_drops: tx_drops(&lab.ns("c")).values().sum(),
        switch_tx_drops: tx_drops(&lab.ns("sw")).values().sum(),
        rcvbuf_errors: snmp(&lab.ns("rs1"), "Udp", "RcvbufErrors")
            + snmp(&lab.ns("rs2"), "Udp", "RcvbufErrors"),
    }
}

#[test]
fn overload_every_datagram_is_accounted_for() {
    if !root_or_skip("overload_every_datagram_is_accounted_for") {
        return;
    }
    let prefix = format!("uvo{}", std::process::id() % 100000);
    let lab = Lab::up(&prefix, &[]).expect("lab up");
    let sinks = [Sink::start(&lab.ns("rs1")), Sink::start(&lab.ns("rs2"))];
    // One worker: the client's one thread must be able to outrun it.
    let d = Director::start(
        &lab,
        Path::new(env!("CARGO_BIN_EXE_uvs")),
        &["--workers", "1"],
    )
    .expect("uvs run");
    for c in [
        format!("-A -u 192.0.2.10:{PORT} -s rr"),
        format!("-a -u 192.0.2.10:{PORT} -r 203.0.113.11:{PORT} -m"),
        format!("-a -u 192.0.2.10:{PORT} -r 203.0.113.12:{PORT} -m"),
    ] {
        d.uvsadm(&c)
            .unwrap_or_else(|e| panic!("{e}\n{}", d.log_text()));
    }
    let vip: SocketAddr = format!("192.0.2.10:{PORT}").parse().expect("literal");
    // Warm-up: neighbours resolved on every hop (a lost first ARP costs
    // the kernel a second's retry), until each server has heard a flow;
    // bounded in time.
    let heard: Vec<Arc<AtomicU64>> = sinks.iter().map(|s| s.count.clone()).collect();
    netns::run_in(&lab.ns("c"), move || {
        let end = Instant::now() + Duration::from_secs(5);
        while heard.iter().any(|h| h.load(Ordering::Relaxed) == 0) && Instant::now() < end {
            // Two new flows a round: round robin gives one to each server.
            for _ in 0..2 {
                let s = UdpSocket::bind("198.51.100.10:0").expect("bind");
                let _ = s.send_to(b"warm", vip);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .expect("client namespace");
    std::thread::sleep(Duration::from_millis(200));
    let before = tally(&lab, &d, &sinks);
    assert!(
        before.received > 0,
        "warm-up reached no server: {before:?}\n{}\n{}",
        d.log_text(),
        d.call(&["stats"]).map(|r| r.stdout).unwrap_or_default()
    );

    let sent = netns::run_in(&lab.ns("c"), move || blast(vip)).expect("client namespace");
    // Let the queues drain (socket buffers, rings, backlogs): until every
    // datagram is accounted for, or nothing has moved for a second
    // (bounded: 10 s), rather than a fixed time a loaded machine may exceed.
    let counted = |t: &Tally| t.received + t.uvs_drops.values().sum::<u64>() + t.outside();
    let (end, mut still) = (Instant::now() + Duration::from_secs(10), 0);
    let mut after = tally(&lab, &d, &sinks);
    while counted(&after) - counted(&before) < sent && still < 5 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        let now = tally(&lab, &d, &sinks);
        still = if counted(&now) == counted(&after) {
            still + 1
        } else {
            0
        };
        after = now;
    }

    let received = after.received - before.received;
    let uvs: BTreeMap<String, u64> = after
        .uvs_drops
        .iter()
        .map(|(k, v)| (k.clone(), v - before.uvs_drops.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    let uvs_dropped: u64 = uvs.values().sum();
    let outside = after.outside() - before.outside();
    let accounted = received + uvs_dropped + outside;
    let report = format!(
        "sent {sent}, received {received}, dropped by uvs {uvs_dropped} {uvs:?}, \
         outside uvs {outside} (client veth {}, switch veths {}, server rcvbuf {}); \
         accounted {accounted}\n{}",
        after.client_tx_drops - before.client_tx_drops,
        after.switch_tx_drops - before.switch_tx_drops,
        after.rcvbuf_errors - before.rcvbuf_errors,
        d.call(&["stats"]).map(|r| r.stdout).unwrap_or_default()
    );
    eprintln!("{report}");
    // A floor that catches a broken blast, not a slow machine: a loaded one
    // has sent only ~80,000 in the 3 s (and still overloaded uvs).
    assert!(sent > 10_000, "the client hardly sent: {report}");
    let queue_full: u64 = [
        "drop.rx_queue_full",
        "drop.xdp_rx_ring_full",
        "drop.xdp_fill_ring_empty",
    ]
    .iter()
    .filter_map(|k| uvs.get(*k))
    .sum();
    assert!(queue_full > 0, "uvs was not overloaded: {report}");
    let diff = sent.abs_diff(accounted);
    assert!(
        diff * 100 <= sent,
        "{diff} datagrams unaccounted for (over 1%): {report}"
    );
    drop(d);
    drop(sinks);
    drop(lab);
}
