//! Lab tests of one-packet scheduling (`-o`) and the SIP persistence engine
//! (`--pe sip`): real UDP datagrams from one client socket through `uvs run`
//! to two direct-routing real servers (so each answer comes straight from
//! the server that got the datagram, naming itself). Each test builds its
//! own uniquely prefixed lab and removes it, also on failure; root only.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::Duration;

use uvs::sys::netns;

mod common;

use common::{root_or_skip, Setup};

static SERIAL: Mutex<()> = Mutex::new(());

const VIP: &str = "192.0.2.10:53";

fn setup(tag: &str) -> Setup {
    Setup::start(
        &format!("uvo{}{tag}", std::process::id() % 100000),
        &["--dr"],
        &[],
    )
}

fn cmds(s: &Setup, cmds: &[&str]) {
    for c in cmds {
        s.d.uvsadm(c)
            .unwrap_or_else(|e| panic!("{c}: {e}\nuvs log:\n{}", s.d.log_text()));
    }
}

/// Sends each payload from ONE client socket (port `sport`) and returns
/// the name of the server that answered each (`None`: no answer).
fn exchange(s: &Setup, sport: u16, payloads: Vec<Vec<u8>>) -> Vec<Option<String>> {
    netns::run_in(&s.lab.ns("c"), move || {
        let vip: SocketAddr = VIP.parse().unwrap();
        let u = UdpSocket::bind(SocketAddr::from(([0u8; 4], sport))).expect("bind");
        u.connect(vip).expect("connect");
        u.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let mut out = Vec::new();
        for m in payloads {
            let mut got = None;
            // Retries: the first datagram may wait on neighbour resolution.
            // A late answer to an earlier send (of this or a previous
            // datagram) is skipped, not taken for this one's.
            'send: for _ in 0..3 {
                u.send(&m).expect("send");
                let mut buf = [0u8; 2048];
                while let Ok(n) = u.recv(&mut buf) {
                    let a = String::from_utf8_lossy(&buf[..n]).to_string();
                    let (name, echo) = a.split_once(':').expect("name:echo");
                    if echo.as_bytes() == m.as_slice() {
                        got = Some(name.to_string());
                        break 'send;
                    }
                }
            }
            out.push(got);
        }
        out
    })
    .expect("client namespace")
}

fn count(v: &[Option<String>], name: &str) -> usize {
    v.iter().filter(|n| n.as_deref() == Some(name)).count()
}

#[test]
fn one_packet_splits_100_datagrams_from_one_socket_50_50() {
    if !root_or_skip("one_packet_splits_100_datagrams_from_one_socket_50_50") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("o");
    cmds(
        &s,
        &[
            &format!("-A -u {VIP} -s rr -o"),
            &format!("-a -u {VIP} -r 203.0.113.11:53 -g"),
            &format!("-a -u {VIP} -r 203.0.113.12:53 -g"),
        ],
    );
    let list = s.d.uvsadm("-L -n").unwrap();
    assert!(list.contains("UDP  192.0.2.10:53 rr ops\n"), "{list}");
    let save = s.d.uvsadm("-S -n").unwrap();
    assert!(save.contains("-A -u 192.0.2.10:53 -s rr -o\n"), "{save}");
    // Warm-up: both servers' neighbour entries resolved, so none of the
    // 100 counted datagrams needs a retry (a retry moves rr on by one).
    let warm = (0..4).map(|i| format!("warm {i}").into_bytes()).collect();
    exchange(&s, 40053, warm);
    let msgs = (0..100)
        .map(|i| format!("dgram {i}").into_bytes())
        .collect();
    let to = exchange(&s, 40053, msgs);
    assert_eq!(count(&to, "rs1") + count(&to, "rs2"), 100, "{to:?}");
    assert_eq!((count(&to, "rs1"), count(&to, "rs2")), (50, 50), "{to:?}");
    // No connection entry stayed.
    let conns = s.d.uvsadm("-L -n -c").unwrap();
    assert_eq!(conns.lines().count(), 2, "{conns}");
}

fn sip(method: &str, call_header: &str, call: &str, seq: usize) -> Vec<u8> {
    format!(
        "{method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.10:5060\r\n\
         {call_header}: {call}\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn sip_call_ids_from_one_client_port_stick_to_their_own_servers() {
    if !root_or_skip("sip_call_ids_from_one_client_port_stick_to_their_own_servers") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("sip");
    cmds(
        &s,
        &[
            &format!("-A -u {VIP} -s rr -p 60 -o --pe sip"),
            &format!("-a -u {VIP} -r 203.0.113.11:53 -g"),
            &format!("-a -u {VIP} -r 203.0.113.12:53 -g"),
        ],
    );
    let list = s.d.uvsadm("-L -n").unwrap();
    assert!(
        list.contains("UDP  192.0.2.10:53 rr persistent 60 pe sip ops\n"),
        "{list}"
    );
    // Two calls from one client socket, interleaved; call B also in the
    // compact form `i:`.
    let mut msgs = Vec::new();
    for i in 0..10 {
        msgs.push(sip("INVITE", "Call-ID", "a84b4c76e66710@client.example", i));
        let hdr = if i % 2 == 0 { "Call-ID" } else { "i" };
        msgs.push(sip("INVITE", hdr, "f81d4fae-7dec@client.example", i));
    }
    let to = exchange(&s, 5060, msgs);
    let (a, b): (Vec<_>, Vec<_>) = to.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let first = |v: &[(usize, &Option<String>)]| v[0].1.clone().expect("answered");
    let (sa, sb) = (first(&a), first(&b));
    assert_ne!(sa, sb, "{to:?}");
    assert!(a.iter().all(|(_, n)| n.as_deref() == Some(&sa)), "{to:?}");
    assert!(b.iter().all(|(_, n)| n.as_deref() == Some(&sb)), "{to:?}");
    // A datagram without a Call-ID is dropped, and counted.
    let to = exchange(&s, 5060, vec![b"no call id here".to_vec()]);
    assert_eq!(to, vec![None]);
    assert!(s.d.counter("drop.pe_no_call_id").unwrap() >= 1);
    // --pe sip without persistence or on TCP is refused.
    for bad in [
        "-A -u 192.0.2.10:5060 -s rr --pe sip",
        "-A -t 192.0.2.10:5060 -s rr -p --pe sip",
    ] {
        assert!(s.d.uvsadm(bad).is_err(), "{bad} accepted");
    }
}

/// The Internet checksum of `b`.
fn inet_csum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// ICMP port unreachable as the client would send it about a datagram
/// VIP:53 → client:`cport` that it had no socket for.
fn port_unreachable_about(cport: u16) -> Vec<u8> {
    let mut ip = vec![0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0];
    ip.extend_from_slice(&[192, 0, 2, 10, 198, 51, 100, 10]);
    let c = inet_csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&53u16.to_be_bytes());
    ip.extend_from_slice(&cport.to_be_bytes());
    ip.extend_from_slice(&[0, 8, 0, 0]);
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&ip);
    let c = inet_csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    icmp
}

#[test]
fn schedule_icmp_schedules_a_clients_icmp_error_about_an_unknown_connection() {
    if !root_or_skip("schedule_icmp_schedules_a_clients_icmp_error_about_an_unknown_connection") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::start(
        &format!("uvo{}icmp", std::process::id() % 100000),
        &["--dr"],
        &["--set-knob", "schedule_icmp=1"],
    );
    cmds(
        &s,
        &[
            &format!("-A -u {VIP} -s rr"),
            &format!("-a -u {VIP} -r 203.0.113.11:53 -g"),
            &format!("-a -u {VIP} -r 203.0.113.12:53 -g"),
        ],
    );
    let cport = 41234;
    netns::run_in(&s.lab.ns("c"), move || {
        let raw = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::ICMPV4),
        )
        .expect("raw ICMP socket");
        let to: SocketAddr = "192.0.2.10:0".parse().unwrap();
        raw.send_to(&port_unreachable_about(cport), &to.into())
            .expect("send ICMP");
    })
    .expect("client namespace");
    // The error created the connection it is about.
    let mut conns = String::new();
    for _ in 0..40 {
        conns = s.d.uvsadm("-L -n -c").unwrap();
        if conns.contains(&format!("198.51.100.10:{cport}")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let row = conns
        .lines()
        .find(|l| l.contains(&format!("198.51.100.10:{cport}")))
        .unwrap_or_else(|| panic!("no entry for the ICMP error:\n{conns}\n{}", s.d.log_text()))
        .to_string();
    // The client's next datagram from that port follows it.
    let to = exchange(&s, cport, vec![b"after the error".to_vec()]);
    let server = to[0].clone().expect("answered");
    let addr = if server == "rs1" {
        "203.0.113.11:53"
    } else {
        "203.0.113.12:53"
    };
    assert!(row.ends_with(addr), "{row} vs {server}");
}
