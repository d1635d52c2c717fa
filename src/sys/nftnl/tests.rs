use super::*;

#[test]
fn keys_pad_every_field_to_four_bytes() {
    let k = key(&[
        KeyField::Addr("192.0.2.1".parse().unwrap()),
        KeyField::Proto(6),
        KeyField::Port(0x1f90),
    ]);
    assert_eq!(k, [192, 0, 2, 1, 6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
    let k6 = key(&[
        KeyField::Addr("2001:db8::1".parse().unwrap()),
        KeyField::Proto(17),
    ]);
    assert_eq!(k6.len(), 20);
    assert_eq!(&k6[16..], [17, 0, 0, 0]);
}

#[test]
fn concatenated_key_types_combine_six_bits_per_field() {
    use KeyType::*;
    // As nft declares `ipv6_addr . inet_proto . inet_service`.
    assert_eq!(
        KeyType::concat(&[Ipv6Addr, InetProto, InetService]),
        (0x830d, 24)
    );
    assert_eq!(KeyType::concat(&[Ipv4Addr, InetProto]), ((7 << 6) | 12, 8));
    assert_eq!(KeyType::concat(&[InetService]), (13, 2));
    assert_eq!(reg(0), 1);
    assert_eq!(reg(4), 9);
    assert_eq!(reg(16), 2);
    assert_eq!(reg(20), 13);
}

/// (type, flags, seq) of each message in a datagram.
fn walk(b: &[u8]) -> Vec<(u16, u16, u32)> {
    messages(b)
        .unwrap()
        .iter()
        .map(|m| (m.kind, m.flags, m.seq))
        .collect()
}

#[test]
fn a_batch_is_framed_and_chunked_deletions_first() {
    let mut seq = 100;
    let keys: Vec<Vec<u8>> = (0..ELEMS_PER_MSG as u32 + 1)
        .map(|i| i.to_be_bytes().to_vec())
        .collect();
    let changes = [
        SetChange {
            add: true,
            set: "rsa4".into(),
            keys,
        },
        SetChange {
            add: false,
            set: "svc4".into(),
            keys: vec![vec![1; 12]],
        },
    ];
    let mut batch = Batch::new(NFPROTO_NETDEV);
    batch.set_changes("uvs", &changes);
    let (b, first, pending) = frame(&mut seq, &batch);
    assert_eq!(first, 101);
    let what: Vec<&str> = pending.iter().map(|p| p.what.as_str()).collect();
    assert_eq!(
        what,
        [
            "delete elements of set svc4",
            "add elements of set rsa4",
            "add elements of set rsa4"
        ]
    );
    assert_eq!(pending[0].seq, 102);
    assert_eq!(seq, 105);
    let kinds: Vec<u16> = walk(&b).iter().map(|m| m.0).collect();
    assert_eq!(
        kinds,
        [16, (10 << 8) | 14, (10 << 8) | 12, (10 << 8) | 12, 17]
    );
    // Batch begin names the nftables subsystem (big endian).
    assert_eq!(&b[18..20], &10u16.to_be_bytes());
}

#[test]
fn a_rule_nests_its_expressions_by_name() {
    let mut batch = Batch::new(NFPROTO_NETDEV);
    let set = batch.add_set("uvs", "rsa4", &[KeyType::Ipv4Addr]);
    batch.add_rule(
        "uvs",
        "in0",
        &[Expr::Lookup { set, sreg: R1 }, Expr::Counter, Expr::Drop],
    );
    let body = &batch.msgs[1].body;
    assert_eq!(batch.msgs[1].kind, abi::NFT_MSG_NEWRULE);
    assert_eq!(cstr(attr(body, abi::NFTA_RULE_TABLE).unwrap()), "uvs");
    let exprs = attr(body, abi::NFTA_RULE_EXPRESSIONS).unwrap();
    let names: Vec<String> = attrs(exprs)
        .map(|(_, e)| cstr(attr(e, abi::NFTA_EXPR_NAME).unwrap()))
        .collect();
    assert_eq!(names, ["lookup", "counter", "immediate"]);
    let lookup = attr(attrs(exprs).next().unwrap().1, abi::NFTA_EXPR_DATA).unwrap();
    assert_eq!(cstr(attr(lookup, abi::NFTA_LOOKUP_SET).unwrap()), "rsa4");
    assert_eq!(
        attr(lookup, abi::NFTA_LOOKUP_SREG).unwrap(),
        1u32.to_be_bytes()
    );
    assert_eq!(
        attr(lookup, abi::NFTA_LOOKUP_SET_ID).unwrap(),
        1u32.to_be_bytes()
    );
    // The drop verdict: immediate data → verdict → code 0.
    let imm = attr(attrs(exprs).nth(2).unwrap().1, abi::NFTA_EXPR_DATA).unwrap();
    let code = attr(imm, abi::NFTA_IMMEDIATE_DATA)
        .and_then(|d| attr(d, abi::NFTA_DATA_VERDICT))
        .and_then(|v| attr(v, abi::NFTA_VERDICT_CODE))
        .unwrap();
    assert_eq!(code, 0u32.to_be_bytes());
}

fn error_msg(seq: u32, err: i32, ext: Option<&str>) -> Vec<u8> {
    let mut b = Vec::new();
    let flags = if ext.is_some() {
        abi::NLM_F_CAPPED | abi::NLM_F_ACK_TLVS
    } else {
        abi::NLM_F_CAPPED
    };
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&abi::NLMSG_ERROR.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&err.to_ne_bytes());
    b.extend_from_slice(&[0; 16]);
    if let Some(t) = ext {
        msg::Attrs(&mut b).str(abi::NLMSGERR_ATTR_MSG, t);
    }
    end_msg(&mut b, 0);
    b
}

#[test]
fn acks_are_parsed_with_errno_and_extended_text() {
    let mut b = error_msg(7, 0, None);
    b.extend(error_msg(8, -2, Some("no such set")));
    let acks: Vec<(u32, i32, Option<String>)> = messages(&b)
        .unwrap()
        .iter()
        .map(|m| {
            let a = m.error().unwrap().unwrap();
            (m.seq, a.errno, a.detail)
        })
        .collect();
    assert_eq!(
        acks,
        [(7, 0, None), (8, 2, Some("no such set".to_string()))]
    );
    assert!(messages(&b[..20]).is_err());
}
