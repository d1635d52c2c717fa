use super::*;

fn v4(c: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(c))
}

fn conn() -> Conn {
    Conn {
        protocol: proto::TCP,
        flags: flags::MASQ,
        state: tcp_state::ESTABLISHED,
        caddr: v4([198, 51, 100, 2]),
        cport: 40000,
        vaddr: v4([192, 0, 2, 10]),
        vport: 80,
        daddr: v4([203, 0, 113, 11]),
        dport: 8080,
        fwmark: 0,
        timeout: 900,
        seq: None,
        pe: None,
    }
}

fn received(mut c: Conn) -> Conn {
    c.flags = (c.flags & flags::BACKUP_MASK) | flags::SYNC;
    c
}

#[test]
fn round_trip_keeps_every_field() {
    let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
    let cases = vec![
        conn(),
        Conn {
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
            flags: flags::SEQ_MASK | flags::INACTIVE,
            ..conn()
        },
        Conn {
            caddr: v6("2001:db8:1::2"),
            vaddr: v6("2001:db8::10"),
            daddr: v6("2001:db8:2::11"),
            protocol: proto::UDP,
            state: 0,
            flags: flags::DROUTE,
            ..conn()
        },
        Conn {
            flags: flags::TEMPLATE | flags::NO_CPORT,
            protocol: proto::UDP,
            state: 0,
            cport: 0,
            pe: Some(PeData {
                name: b"sip".to_vec(),
                data: b"a84b4c76e66710".to_vec(),
            }),
            ..conn()
        },
    ];
    let mut w = MessageWriter::new(7, 1472);
    for c in &cases {
        assert_eq!(w.push(c).unwrap(), None);
    }
    let m = w.finish().unwrap();
    let d = decode(&m, 7).unwrap();
    assert_eq!(d.syncid, 7);
    assert_eq!(d.dropped, None);
    assert!(d.skipped.is_empty());
    let want: Vec<Conn> = cases.into_iter().map(received).collect();
    assert_eq!(d.conns, want);
}

#[test]
fn a_full_message_is_handed_out_and_the_entry_starts_the_next() {
    // Header 8 + 3 × 36 = 116; a fourth entry needs 152.
    let mut w = MessageWriter::new(0, 150);
    for _ in 0..3 {
        assert_eq!(w.push(&conn()).unwrap(), None);
    }
    let m = w.push(&conn()).unwrap().expect("fourth entry overflows");
    assert_eq!(m.len(), 116);
    assert_eq!(decode(&m, 0).unwrap().conns.len(), 3);
    assert_eq!(w.len(), 1);
    assert_eq!(decode(&w.finish().unwrap(), 0).unwrap().conns.len(), 1);
    assert_eq!(w.finish(), None);
}

#[test]
fn entries_after_an_odd_length_one_are_4_byte_aligned() {
    let odd = Conn {
        flags: flags::TEMPLATE,
        state: 0,
        pe: Some(PeData {
            name: b"sip".to_vec(),
            data: b"x".to_vec(),
        }),
        ..conn()
    };
    assert_eq!(odd.encoded_len(), 36 + 3 + 5);
    let mut w = MessageWriter::new(0, 1472);
    w.push(&odd).unwrap();
    w.push(&conn()).unwrap();
    let m = w.finish().unwrap();
    // 8 + 44 = 52 is aligned: no padding.
    assert_eq!(m.len(), 8 + 44 + 36);
    let d = decode(&m, 0).unwrap();
    assert_eq!(d.conns.len(), 2);

    let odder = Conn {
        pe: Some(PeData {
            name: b"sip".to_vec(),
            data: b"xy".to_vec(),
        }),
        ..odd
    };
    let mut w = MessageWriter::new(0, 1472);
    w.push(&odder).unwrap();
    w.push(&conn()).unwrap();
    let m = w.finish().unwrap();
    // 8 + 45 = 53, three bytes of padding, then 36.
    assert_eq!(m.len(), 8 + 45 + 3 + 36);
    assert_eq!(&m[53..56], &[0, 0, 0]);
    assert_eq!(decode(&m, 0).unwrap().conns.len(), 2);
}

#[test]
fn what_cannot_be_sent_says_why() {
    let mixed = Conn {
        daddr: "2001:db8::1".parse().unwrap(),
        ..conn()
    };
    let mut w = MessageWriter::new(0, 1472);
    assert_eq!(w.push(&mixed), Err(EncodeError::MixedFamilies));
    let one = Conn {
        flags: flags::ONE_PACKET,
        ..conn()
    };
    assert_eq!(w.push(&one), Err(EncodeError::OnePacket));
    let long_name = Conn {
        pe: Some(PeData {
            name: vec![b'a'; 17],
            data: vec![1],
        }),
        ..conn()
    };
    assert_eq!(w.push(&long_name), Err(EncodeError::PeName(17)));
    assert!(w.is_empty());
}

#[test]
fn the_header_is_checked_as_a_backup_does() {
    let mut w = MessageWriter::new(3, 1472);
    w.push(&conn()).unwrap();
    let m = w.finish().unwrap();
    assert_eq!(decode(&m[..3], 0), Err(MessageError::Short(3)));
    assert_eq!(
        decode(&m[..40], 0),
        Err(MessageError::Size { said: 44, len: 40 })
    );
    assert_eq!(decode(&m, 4), Err(MessageError::SyncId(3)));
    assert!(decode(&m, 3).is_ok());
    let mut v0 = m.clone();
    v0[0] = 1; // a version-0 message's first byte is its connection count
    assert_eq!(decode(&v0, 0), Err(MessageError::Version));
}

#[test]
fn a_bad_entry_drops_the_rest_and_an_unusable_one_only_itself() {
    let mut w = MessageWriter::new(0, 1472);
    for p in [proto::TCP, 99, proto::TCP, proto::TCP] {
        w.push(&Conn {
            protocol: p,
            ..conn()
        })
        .unwrap();
    }
    let mut m = w.finish().unwrap();
    // Entry 2 (at 8 + 2 × 36) gets format version 1.
    m[8 + 72 + 2] |= 0x10;
    let d = decode(&m, 0).unwrap();
    assert_eq!(d.conns.len(), 1);
    assert_eq!(d.skipped, vec![(1, EntryError::Protocol(99))]);
    assert_eq!(
        d.dropped,
        Some(MessageError::EntryVersion {
            index: 2,
            version: 1
        })
    );
}

#[test]
fn options_are_checked() {
    let with = |opts: &[u8]| {
        let mut m = vec![0, 0, 0, 0, 1, VERSION, 0, 0];
        let mut w = MessageWriter::new(0, 1472);
        w.push(&conn()).unwrap();
        let one = w.finish().unwrap();
        let mut e = one[8..].to_vec();
        e.extend_from_slice(opts);
        let n = e.len() as u16;
        e[2..4].copy_from_slice(&n.to_be_bytes());
        m.extend_from_slice(&e);
        let n = m.len() as u16;
        m[2..4].copy_from_slice(&n.to_be_bytes());
        decode(&m, 0).unwrap()
    };
    // An optional unknown option is skipped.
    let d = with(&[opt::F_OPTIONAL | 9, 2, 0xaa, 0xbb]);
    assert_eq!(d.conns.len(), 1);
    // A mandatory unknown one drops the entry only.
    let d = with(&[9, 2, 0xaa, 0xbb]);
    assert_eq!(d.skipped, vec![(0, EntryError::MandatoryOption(9))]);
    assert_eq!(d.dropped, None);
    // Zero length, short sequence data, data without a name.
    assert!(matches!(
        with(&[opt::PE_DATA, 0]).dropped,
        Some(MessageError::Malformed { index: 0, .. })
    ));
    assert!(matches!(
        with(&[opt::SEQ_DATA, 4, 0, 0, 0, 0]).dropped,
        Some(MessageError::Malformed { index: 0, .. })
    ));
    assert_eq!(
        with(&[opt::PE_DATA, 1, 7]).skipped,
        vec![(0, EntryError::PeWithoutName)]
    );
}

#[test]
fn a_backup_masks_flags_and_zeroes_template_states() {
    let mut w = MessageWriter::new(0, 1472);
    w.push(&Conn {
        flags: flags::TUNNEL | flags::HASHED | 0x8000,
        ..conn()
    })
    .unwrap();
    w.push(&Conn {
        flags: flags::TEMPLATE,
        state: 5,
        ..conn()
    })
    .unwrap();
    w.push(&Conn {
        state: tcp_state::COUNT,
        ..conn()
    })
    .unwrap();
    let d = decode(&w.finish().unwrap(), 0).unwrap();
    assert_eq!(d.conns[0].flags, flags::TUNNEL | flags::SYNC);
    assert_eq!(d.conns[1].state, 0);
    assert_eq!(
        d.skipped,
        vec![(
            2,
            EntryError::State {
                proto: "TCP",
                state: 11
            }
        )]
    );
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A small deterministic mutation sweep over a valid message.
    let mut w = MessageWriter::new(0, 1472);
    w.push(&conn()).unwrap();
    w.push(&Conn {
        seq: Some((Seq::default(), Seq::default())),
        ..conn()
    })
    .unwrap();
    let m = w.finish().unwrap();
    let mut x: u32 = 0x9e37_79b9;
    for _ in 0..20_000 {
        let mut b = m.clone();
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let i = x as usize % b.len();
            b[i] = (x >> 8) as u8;
        }
        let cut = (x >> 20) as usize % (b.len() + 1);
        let _ = decode(&b[..cut], 0);
        let _ = decode(&b, 0);
    }
}
