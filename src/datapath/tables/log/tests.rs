//! The formatter against hand-checked kernel-format lines, the options'
//! parse and iptables-save text, and the queue's bound.

use std::io::Write;
use std::sync::{Arc, Mutex};

use super::format::{fields, line};
use super::*;
use crate::datapath::tables::iface::Links;
use crate::datapath::tables::{parse, Ruleset};

/// IPv4 checksum of a header (the formatter ignores it; kept valid anyway).
fn csum(h: &[u8]) -> [u8; 2] {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    (!(s as u16)).to_be_bytes()
}

/// An IPv4 header (no options) before `l4`.
#[allow(clippy::too_many_arguments)]
fn v4(
    tos: u8,
    id: u16,
    frag: u16,
    ttl: u8,
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    l4: &[u8],
) -> Vec<u8> {
    let len = (20 + l4.len()) as u16;
    let mut h = vec![0x45, tos];
    h.extend(len.to_be_bytes());
    h.extend(id.to_be_bytes());
    h.extend(frag.to_be_bytes());
    h.extend([ttl, proto, 0, 0]);
    h.extend(src);
    h.extend(dst);
    let c = csum(&h);
    h[10..12].copy_from_slice(&c);
    h.extend(l4);
    h
}

/// An IPv6 header before `rest` (extension headers and L4).
fn v6(tc: u8, flow: u32, next: u8, hop: u8, src: [u16; 8], dst: [u16; 8], rest: &[u8]) -> Vec<u8> {
    let w0 = (6u32 << 28) | (u32::from(tc) << 20) | (flow & 0xfffff);
    let mut h = w0.to_be_bytes().to_vec();
    h.extend((rest.len() as u16).to_be_bytes());
    h.extend([next, hop]);
    for s in src.iter().chain(dst.iter()) {
        h.extend(s.to_be_bytes());
    }
    h.extend(rest);
    h
}

fn tcp(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, win: u16, opts: &[u8]) -> Vec<u8> {
    let doff = (20 + opts.len()) / 4;
    let mut t = Vec::new();
    t.extend(sport.to_be_bytes());
    t.extend(dport.to_be_bytes());
    t.extend(seq.to_be_bytes());
    t.extend(ack.to_be_bytes());
    t.extend([(doff as u8) << 4, flags]);
    t.extend(win.to_be_bytes());
    t.extend([0, 0, 0, 0]);
    t.extend(opts);
    t
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend(sport.to_be_bytes());
    u.extend(dport.to_be_bytes());
    u.extend(((8 + payload.len()) as u16).to_be_bytes());
    u.extend([0, 0]);
    u.extend(payload);
    u
}

const C4: [u8; 4] = [198, 51, 100, 10];
const VIP4: [u8; 4] = [192, 0, 2, 10];
const C6: [u16; 8] = [0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 0x10];
const VIP6: [u16; 8] = [0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 0x10];
const SYN_OPTS: [u8; 20] = [
    0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0, 0, 0, 1, 0, 0, 0, 0, 0x01, 0x03, 0x03, 0x07,
];

fn spec(opts: &[(&str, Option<&str>)]) -> LogSpec {
    let mut s = LogSpec::default();
    for (o, v) in opts {
        s.option(o, *v).unwrap();
    }
    s
}

#[test]
fn a_tcp_syn_over_ipv4_reads_as_the_kernels_line() {
    let p = v4(
        0,
        54321,
        0x4000,
        64,
        6,
        C4,
        VIP4,
        &tcp(40000, 80, 1, 0, 0x02, 64240, &SYN_OPTS),
    );
    let mut r = Record::new(spec(&[("--log-prefix", Some("web: "))]), 1234, &p).with_in("c0");
    r.mac = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    r.has_mac = true;
    let mut s = String::new();
    line(&r, 5_000_000, &mut s);
    assert_eq!(
        s,
        "<4>[    6.234000] web: IN=c0 OUT= MAC=02:00:00:00:00:01:02:00:00:00:00:02:08:00 \
         SRC=198.51.100.10 DST=192.0.2.10 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=54321 DF \
         PROTO=TCP SPT=40000 DPT=80 WINDOW=64240 RES=0x00 SYN URGP=0 \n"
    );
    // --log-tcp-sequence and --log-tcp-options.
    let f = fields(&p, flag::TCP_SEQUENCE | flag::TCP_OPTIONS);
    assert!(
        f.ends_with(
            "PROTO=TCP SPT=40000 DPT=80 SEQ=1 ACK=0 WINDOW=64240 RES=0x00 SYN URGP=0 \
             OPT (020405B40402080A000000010000000001030307) "
        ),
        "{f}"
    );
}

#[test]
fn tcp_flags_reserved_bits_mark_and_macdecode() {
    // ACK PSH FIN with CWR/ECE and a reserved bit, at POSTROUTING (no IN,
    // no MAC), marked.
    let mut t = tcp(80, 40000, 7, 9, 0x80 | 0x40 | 0x10 | 0x08 | 0x01, 501, &[]);
    t[12] |= 0x01;
    let p = v4(0, 1, 0, 63, 6, VIP4, C4, &t);
    let mut r = Record::new(spec(&[("--log-level", Some("info"))]), 0, &p).with_out("c0");
    r.mark = 0x4000;
    let mut s = String::new();
    line(&r, 0, &mut s);
    assert_eq!(
        s,
        "<6>[    0.000000] IN= OUT=c0 SRC=192.0.2.10 DST=198.51.100.10 LEN=40 TOS=0x00 \
         PREC=0x00 TTL=63 ID=1 PROTO=TCP SPT=80 DPT=40000 WINDOW=501 RES=0x04 CWR ECE ACK \
         PSH FIN URGP=0 MARK=0x4000 \n"
    );
    let mut r = Record::new(spec(&[("--log-macdecode", None)]), 0, &p).with_in("s0");
    r.mac = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    r.has_mac = true;
    let mut s = String::new();
    line(&r, 0, &mut s);
    assert!(
        s.contains(
            "IN=s0 OUT= MACSRC=02:00:00:00:00:02 MACDST=02:00:00:00:00:01 MACPROTO=0800 SRC="
        ),
        "{s}"
    );
}

#[test]
fn udp_and_tos_precedence_over_ipv4() {
    let p = v4(0xd0, 7, 0, 63, 17, C4, VIP4, &udp(5353, 53, b"hello"));
    assert_eq!(
        fields(&p, 0),
        "SRC=198.51.100.10 DST=192.0.2.10 LEN=33 TOS=0x10 PREC=0xC0 TTL=63 ID=7 \
         PROTO=UDP SPT=5353 DPT=53 LEN=13 "
    );
    // A later fragment: no ports; MF and the offset.
    let p = v4(0, 8, 0x2000 | 185, 64, 17, C4, VIP4, b"continued data..");
    assert_eq!(
        fields(&p, 0),
        "SRC=198.51.100.10 DST=192.0.2.10 LEN=36 TOS=0x00 PREC=0x00 TTL=64 ID=8 MF \
         FRAG:185 PROTO=UDP "
    );
    // Cut short: the kernel's INCOMPLETE.
    let p = v4(0, 9, 0, 64, 17, C4, VIP4, &[0, 53, 0]);
    assert!(fields(&p, 0).ends_with("PROTO=UDP INCOMPLETE [3 bytes] "));
}

#[test]
fn ip_options_are_printed_with_log_ip_options() {
    let mut p = v4(0, 3, 0, 64, 17, C4, VIP4, &[]);
    // Router alert (4 bytes) inserted: IHL 6.
    p[0] = 0x46;
    p.splice(20..20, [0x94, 0x04, 0x00, 0x00]);
    p.extend(udp(1, 2, b""));
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    assert!(
        fields(&p, flag::IP_OPTIONS).contains("ID=3 OPT (94040000) PROTO=UDP SPT=1 DPT=2 LEN=8 ")
    );
    assert!(fields(&p, 0).contains("ID=3 PROTO=UDP SPT=1 DPT=2 LEN=8 "));
}

#[test]
fn icmp_echo_and_errors_over_ipv4() {
    let echo = [8, 0, 0, 0, 0x12, 0x34, 0, 1];
    let p = v4(0, 2, 0, 64, 1, C4, VIP4, &echo);
    assert!(fields(&p, 0).ends_with("PROTO=ICMP TYPE=8 CODE=0 ID=4660 SEQ=1 "));
    // Port unreachable quoting the UDP datagram.
    let quoted = v4(0, 1, 0, 64, 17, VIP4, C4, &udp(53, 5353, b"hello"));
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend(&quoted);
    let p = v4(0xc0, 5, 0, 64, 1, VIP4, C4, &icmp);
    assert_eq!(
        fields(&p, 0),
        "SRC=192.0.2.10 DST=198.51.100.10 LEN=61 TOS=0x00 PREC=0xC0 TTL=64 ID=5 PROTO=ICMP \
         TYPE=3 CODE=3 [SRC=192.0.2.10 DST=198.51.100.10 LEN=33 TOS=0x00 PREC=0x00 TTL=64 \
         ID=1 PROTO=UDP SPT=53 DPT=5353 LEN=13 ] "
    );
    // Fragmentation needed: the MTU after the quote; a quoted TCP header
    // cut to 8 bytes is INCOMPLETE.
    let seg = tcp(80, 40000, 1, 1, 0x10, 100, &[]);
    let mut q = v4(0, 1, 0x4000, 64, 6, VIP4, C4, &seg);
    q.truncate(28);
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
    icmp.extend(&q);
    let p = v4(0, 6, 0, 64, 1, [203, 0, 113, 1], VIP4, &icmp);
    assert!(
        fields(&p, 0).ends_with(
            "TYPE=3 CODE=4 [SRC=192.0.2.10 DST=198.51.100.10 LEN=40 TOS=0x00 PREC=0x00 TTL=64 \
             ID=1 DF PROTO=TCP INCOMPLETE [8 bytes] ] MTU=1400 "
        ),
        "{}",
        fields(&p, 0)
    );
}

#[test]
fn tcp_udp_and_icmpv6_over_ipv6() {
    let p = v6(
        0x28,
        0x12345,
        6,
        64,
        C6,
        VIP6,
        &tcp(40000, 443, 5, 6, 0x18, 65535, &[]),
    );
    assert_eq!(
        fields(&p, 0),
        "SRC=2001:0db8:000c:0000:0000:0000:0000:0010 DST=2001:0db8:000f:0000:0000:0000:0000:0010 \
         LEN=60 TC=40 HOPLIMIT=64 FLOWLBL=74565 PROTO=TCP SPT=40000 DPT=443 WINDOW=65535 \
         RES=0x00 ACK PSH URGP=0 "
    );
    // A first fragment (M set) of a UDP datagram.
    let mut rest = vec![17, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef];
    rest.extend(udp(5353, 53, b"hi"));
    let p = v6(0, 0, 44, 63, C6, VIP6, &rest);
    assert!(
        fields(&p, 0).ends_with(
            "LEN=58 TC=0 HOPLIMIT=63 FLOWLBL=0 FRAG:0 INCOMPLETE ID:deadbeef PROTO=UDP \
             SPT=5353 DPT=53 LEN=10 "
        ),
        "{}",
        fields(&p, 0)
    );
    // With --log-ip-options the extension header is in OPT ( … ).
    assert!(fields(&p, flag::IP_OPTIONS)
        .contains("FLOWLBL=0 OPT ( FRAG:0 INCOMPLETE ID:deadbeef ) PROTO=UDP "));
    // Echo request.
    let p = v6(0, 0, 58, 64, C6, VIP6, &[128, 0, 0, 0, 0, 1, 0, 2]);
    assert!(fields(&p, 0).ends_with("PROTO=ICMPv6 TYPE=128 CODE=0 ID=1 SEQ=2 "));
    // Packet too big quoting a TCP segment: bracketed, then the MTU.
    let q = v6(
        0,
        0,
        6,
        63,
        VIP6,
        C6,
        &tcp(443, 40000, 1, 1, 0x10, 100, &[]),
    );
    let mut icmp = vec![2, 0, 0, 0, 0, 0, 0x05, 0x00];
    icmp.extend(&q);
    let p = v6(0, 0, 58, 64, [0x2001, 0xdb8, 5, 0, 0, 0, 0, 1], VIP6, &icmp);
    assert!(
        fields(&p, 0).ends_with(
            "PROTO=ICMPv6 TYPE=2 CODE=0 [SRC=2001:0db8:000f:0000:0000:0000:0000:0010 \
             DST=2001:0db8:000c:0000:0000:0000:0000:0010 LEN=60 TC=0 HOPLIMIT=63 FLOWLBL=0 \
             PROTO=TCP SPT=443 DPT=40000 WINDOW=100 RES=0x00 ACK URGP=0 ] MTU=1280 "
        ),
        "{}",
        fields(&p, 0)
    );
}

fn rules(text: &str) -> String {
    format!(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{text}COMMIT\n"
    )
}

fn saved_rules(r: &Ruleset) -> Vec<String> {
    r.save(false)
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(String::from)
        .collect()
}

#[test]
fn options_are_saved_back_as_iptables_save_writes_them() {
    let text = rules(
        "-A FORWARD -p tcp --dport 80 -j LOG --log-prefix \"web: \" --log-level info --log-tcp-sequence\n\
         -A INPUT -j LOG --log-level warning --log-prefix drop\n\
         -A INPUT -j LOG --log-uid --log-ip-options --log-prefix \"say \\\"hi\\\"\" --log-level 7 --log-tcp-options\n\
         -A OUTPUT -j LOG\n",
    );
    let r = parse(&text).unwrap();
    let want = [
        "-A INPUT -j LOG --log-prefix drop",
        "-A INPUT -j LOG --log-prefix \"say \\\"hi\\\"\" --log-level 7 --log-tcp-options --log-ip-options --log-uid",
        "-A FORWARD -p tcp --dport 80 -j LOG --log-prefix \"web: \" --log-level 6 --log-tcp-sequence",
        "-A OUTPUT -j LOG",
    ];
    assert_eq!(saved_rules(&r), want);
    // The saved text reads back to itself.
    let again = parse(&r.save(false)).unwrap();
    assert_eq!(saved_rules(&again), want);
    let Some(t) = r.table(crate::datapath::tables::TableId::Filter) else {
        panic!("filter table");
    };
    let crate::datapath::tables::Target::Log(s) = &t.chain("INPUT").unwrap().rules[1].target else {
        panic!("a LOG rule");
    };
    assert_eq!(s.prefix(), "say \"hi\"");
    assert_eq!(s.level, 7);
    // LOG rules make the daemon read the links (for IN=).
    assert!(r.needs_links);
}

#[test]
fn bad_options_are_refused_with_the_line() {
    let cases = [
        (
            "-A INPUT -j LOG --log-prefix 123456789012345678901234567890\n",
            "Maximum prefix length 29 for --log-prefix",
        ),
        ("-A INPUT -j LOG --log-level 8\n", "log level '8' unknown"),
        (
            "-A INPUT -j LOG --log-level loud\n",
            "log level 'loud' unknown",
        ),
        (
            "-A INPUT --log-prefix x -j LOG\n",
            "--log-prefix needs -j LOG",
        ),
        ("-A INPUT -j DROP --log-uid\n", "--log-uid needs -j LOG"),
        (
            "-A INPUT -j LOG --log-bogus\n",
            "unknown option '--log-bogus' of -j LOG",
        ),
        (
            "-A INPUT -j LOG --log-prefix a --log-prefix b\n",
            "can't specify --log-prefix twice",
        ),
        ("-A INPUT -j LOG --log-prefix \"\"\n", "No prefix specified"),
        ("-A INPUT -j LOG --log-level\n", "--log-level needs a value"),
    ];
    for (rule, msg) in cases {
        let e = parse(&rules(rule))
            .err()
            .unwrap_or_else(|| panic!("{rule} parsed"));
        assert_eq!(e.line, 5, "{rule}: {e}");
        assert!(e.msg.contains(msg), "{rule}: {e}");
    }
    // 29 bytes is the most.
    assert!(parse(&rules(
        "-A INPUT -j LOG --log-prefix 12345678901234567890123456789\n"
    ))
    .is_ok());
}

/// A writer the test reads back.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The drain tests share the process's queues and doorbell: one at a time.
static DRAIN_TESTS: Mutex<()> = Mutex::new(());

#[test]
fn a_flood_larger_than_the_queue_is_counted_and_the_rest_written() {
    let _one = DRAIN_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let out = Shared::default();
    let drain = Drain::start(Instant::now(), Box::new(out.clone())).unwrap();
    let (lines0, dropped0) = totals();
    set_queue_len(8);
    // A fresh thread: its queue is made with the length just set.
    let sent = 200u64;
    std::thread::spawn(move || {
        let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        frame.extend(v4(0, 1, 0, 64, 17, C4, VIP4, &udp(40000, 9, b"x")));
        let seen = Seen {
            frame: &frame,
            l3_off: 14,
            ip_end: frame.len(),
            now_ms: 1,
        };
        let links = Links::from_pairs([(7, "c0")]);
        crate::datapath::tables::iface::set_rx(7);
        let s = spec(&[("--log-prefix", Some("flood: "))]);
        for _ in 0..sent {
            record(&s, HookPoint::Forward, &seen, &links, 0, 0);
        }
    })
    .join()
    .unwrap();
    set_queue_len(DEFAULT_QUEUE);
    // Stopping drains what is left.
    drop(drain);
    let (lines, dropped) = totals();
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let written = text
        .lines()
        .filter(|l| l.contains(" flood: IN=c0 OUT= MAC="))
        .count() as u64;
    let dropped = dropped - dropped0;
    // Faster than a tick: most of the flood did not fit in 8.
    assert!(dropped >= sent / 2, "dropped {dropped}, written {written}");
    assert_eq!(written + dropped, sent, "{text}");
    assert!(lines - lines0 >= written);
    let l = text.lines().next().unwrap_or("");
    assert!(l.starts_with("<4>["), "{l}");
    assert!(l.ends_with("PROTO=UDP SPT=40000 DPT=9 LEN=9 "), "{l}");
}

#[test]
fn an_idle_drain_sleeps_until_a_record_is_queued_then_writes_it_at_once() {
    let _one = DRAIN_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let out = Shared::default();
    let drain = Drain::start(Instant::now(), Box::new(out.clone())).unwrap();
    // Nothing queued: after its first pass the drain parks. Before, it woke
    // every 100 ms (10 passes in this second).
    std::thread::sleep(Duration::from_millis(100));
    let p0 = passes();
    std::thread::sleep(Duration::from_millis(1000));
    let idle = passes() - p0;
    assert!(idle <= 1, "{idle} passes in an idle second");
    // One record rings the doorbell: written well within a tick or two,
    // not after a sleep.
    let t0 = Instant::now();
    std::thread::spawn(|| {
        let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        frame.extend(v4(0, 1, 0, 64, 17, C4, VIP4, &udp(40001, 9, b"x")));
        let seen = Seen {
            frame: &frame,
            l3_off: 14,
            ip_end: frame.len(),
            now_ms: 1,
        };
        let links = Links::from_pairs([(7, "c0")]);
        let s = spec(&[("--log-prefix", Some("bell: "))]);
        record(&s, HookPoint::Forward, &seen, &links, 0, 0);
    })
    .join()
    .unwrap();
    let written = || {
        String::from_utf8(out.0.lock().unwrap().clone())
            .unwrap()
            .contains(" bell: ")
    };
    while !written() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = t0.elapsed();
    assert!(written(), "the record was never written");
    assert!(took < Duration::from_millis(500), "written after {took:?}");
    // Then idle again: a pass a tick later finds nothing and parks.
    std::thread::sleep(Duration::from_millis(100));
    let p1 = passes();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        passes() - p1 <= 1,
        "{} passes after the record",
        passes() - p1
    );
    drop(drain);
}
