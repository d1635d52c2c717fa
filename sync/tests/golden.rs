//! Golden messages written byte by byte from the layout the kernel documents
//! in `ip_vs_sync.c` (version-1 header, `struct ip_vs_sync_v4` /
//! `ip_vs_sync_v6`, the option encoding), not produced by the encoder under
//! test: what a kernel master sends decodes, and what uvs sends is exactly
//! these bytes.

use std::net::IpAddr;
use uvs_sync::{decode, flags, proto, tcp_state, Conn, MessageWriter, PeData, Seq};

/// An IPv4 TCP NAT connection, ESTABLISHED, 900 s left, and a second entry
/// with sequence data: what a kernel master sends with syncid 5.
#[rustfmt::skip]
const V4_TWO: &[u8] = &[
    // header: reserved 0, syncid 5, size 8+36+62 = 106, 2 conns, version 1, spare
    0x00, 0x05, 0x00, 106,   0x02, 0x01, 0x00, 0x00,
    // entry 1: type 0 (IPv4), TCP, ver 0 | size 36
    0x00, 6, 0x00, 36,
    0x00, 0x00, 0x00, 0x00,        // flags: MASQ
    0x00, 0x01,  0x9c, 0x40,       // state ESTABLISHED, cport 40000
    0x00, 80,    0x1f, 0x90,       // vport 80, dport 8080
    0x00, 0x00, 0x00, 0x00,        // fwmark
    0x00, 0x00, 0x03, 0x84,        // timeout 900 s
    198, 51, 100, 2,               // caddr
    192, 0, 2, 10,                 // vaddr
    203, 0, 113, 11,               // daddr
    // entry 2 at offset 44: TCP, size 36 + 2 + 24 = 62, flags IN_SEQ|OUT_SEQ|INACTIVE
    0x00, 6, 0x00, 62,
    0x00, 0x00, 0x07, 0x00,
    0x00, 0x03,  0x9c, 0x41,       // state SYN_RECV, cport 40001
    0x00, 80,    0x1f, 0x90,
    0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 60,
    198, 51, 100, 2,
    192, 0, 2, 10,
    203, 0, 113, 12,
    0x01, 24,                      // option SEQ_DATA, 24 bytes
    0, 0, 0, 1,  0, 0, 0, 2,  0, 0, 0, 3,   // in_seq
    0, 0, 0, 4,  0, 0, 0, 5,  0, 0, 0, 6,   // out_seq
];

/// An IPv6 UDP DR connection then a persistence template with SIP data,
/// syncid 0.
#[rustfmt::skip]
const V6_TEMPLATE: &[u8] = &[
    // header: syncid 0, size 8 + 72 + 48 = 128, 2 conns, version 1
    0x00, 0x00, 0x00, 128,   0x02, 0x01, 0x00, 0x00,
    // entry 1: type 1 (IPv6), UDP, size 72, flags DROUTE
    0x01, 17, 0x00, 72,
    0x00, 0x00, 0x00, 0x03,
    0x00, 0x00,  0x13, 0xc4,       // state 0, cport 5060
    0x13, 0xc4,  0x13, 0xc4,       // vport 5060, dport 5060
    0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x2c,        // 300 s
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11,
    // entry 2 at 80: IPv4 template, UDP, size 36 + (2+5) + (2+3) = 48
    0x00, 17, 0x00, 48,
    0x00, 0x00, 0x18, 0x00,        // flags TEMPLATE | NO_CPORT, MASQ
    0x00, 0x00,  0x00, 0x00,       // state 0, cport 0
    0x13, 0xc4,  0x13, 0xc4,
    0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x68,        // 360 s
    198, 51, 100, 2,
    192, 0, 2, 20,
    203, 0, 113, 11,
    0x02, 5, b'c', b'a', b'l', b'l', b'1',   // PE_DATA "call1"
    0x03, 3, b's', b'i', b'p',               // PE_NAME "sip"
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4_two() -> Vec<Conn> {
    let base = Conn {
        protocol: proto::TCP,
        flags: flags::MASQ,
        state: tcp_state::ESTABLISHED,
        caddr: ip("198.51.100.2"),
        cport: 40000,
        vaddr: ip("192.0.2.10"),
        vport: 80,
        daddr: ip("203.0.113.11"),
        dport: 8080,
        fwmark: 0,
        timeout: 900,
        seq: None,
        pe: None,
    };
    let second = Conn {
        flags: flags::IN_SEQ | flags::OUT_SEQ | flags::INACTIVE,
        state: tcp_state::SYN_RECV,
        cport: 40001,
        daddr: ip("203.0.113.12"),
        timeout: 60,
        seq: Some((
            Seq {
                init_seq: 1,
                delta: 2,
                previous_delta: 3,
            },
            Seq {
                init_seq: 4,
                delta: 5,
                previous_delta: 6,
            },
        )),
        ..base.clone()
    };
    vec![base, second]
}

fn v6_template() -> Vec<Conn> {
    vec![
        Conn {
            protocol: proto::UDP,
            flags: flags::DROUTE,
            state: 0,
            caddr: ip("2001:db8:1::2"),
            cport: 5060,
            vaddr: ip("2001:db8::10"),
            vport: 5060,
            daddr: ip("2001:db8:2::11"),
            dport: 5060,
            fwmark: 0,
            timeout: 300,
            seq: None,
            pe: None,
        },
        Conn {
            protocol: proto::UDP,
            flags: flags::TEMPLATE | flags::NO_CPORT,
            state: 0,
            caddr: ip("198.51.100.2"),
            cport: 0,
            vaddr: ip("192.0.2.20"),
            vport: 5060,
            daddr: ip("203.0.113.11"),
            dport: 5060,
            fwmark: 0,
            timeout: 360,
            seq: None,
            pe: Some(PeData {
                name: b"sip".to_vec(),
                data: b"call1".to_vec(),
            }),
        },
    ]
}

fn encode(syncid: u8, conns: &[Conn]) -> Vec<u8> {
    let mut w = MessageWriter::new(syncid, 1472);
    for c in conns {
        assert_eq!(w.push(c).unwrap(), None);
    }
    w.finish().unwrap()
}

#[test]
fn uvs_sends_the_documented_bytes() {
    assert_eq!(encode(5, &v4_two()), V4_TWO);
    assert_eq!(V6_TEMPLATE.len(), 128);
    assert_eq!(encode(0, &v6_template()), V6_TEMPLATE);
}

#[test]
fn a_kernel_masters_message_decodes() {
    let d = decode(V4_TWO, 5).unwrap();
    assert_eq!(d.syncid, 5);
    assert_eq!(d.dropped, None);
    let mut want = v4_two();
    for c in &mut want {
        c.flags |= flags::SYNC;
    }
    assert_eq!(d.conns, want);

    let d = decode(V6_TEMPLATE, 0).unwrap();
    assert_eq!(d.conns.len(), 2);
    assert!(d.conns[0].caddr.is_ipv6());
    assert_eq!(d.conns[1].pe.as_ref().unwrap().data, b"call1");
    assert_eq!(
        d.conns[1].flags,
        flags::TEMPLATE | flags::NO_CPORT | flags::SYNC
    );
}
