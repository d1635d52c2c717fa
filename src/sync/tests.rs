//! A received template as the backup's scheduler would have made it: the
//! key, the real server and the timeout, or the counter it goes to.

use std::net::{IpAddr, Ipv4Addr};

use uvs_conntrack::pe_digest;
use uvs_sched::{FwdMethod, SchedParams};
use uvs_sync::{flags, Conn, PeData};

use super::{template_of, Skip};
use crate::datapath::service::{
    Change, ClientMask, DestSpec, Pe, Persistence, ServiceSpec, Services, FWMARK,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn spec(proto: u8, addr: IpAddr, port: u16, dport: u16, persistent: bool) -> ServiceSpec {
    ServiceSpec {
        proto,
        addr,
        port,
        sched: "rr".into(),
        params: SchedParams::default(),
        persistence: persistent.then_some(Persistence {
            timeout_ms: 300_000,
            mask: ClientMask::V4(u32::MAX),
        }),
        one_packet: false,
        pe: None,
        dests: vec![DestSpec {
            addr: ip("203.0.113.11"),
            port: dport,
            fwd: FwdMethod::Masq,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            tun: Default::default(),
        }],
    }
}

fn services(specs: Vec<ServiceSpec>) -> Services {
    Services::default()
        .plan(specs.into_iter().map(Change::Upsert).collect())
        .unwrap()
        .commit()
}

fn template(protocol: u8, vaddr: IpAddr, vport: u16, dport: u16, timeout: u32) -> Conn {
    Conn {
        protocol,
        flags: flags::TEMPLATE | flags::SYNC,
        state: 0,
        caddr: ip("198.51.100.10"),
        cport: 0,
        vaddr,
        vport,
        daddr: ip("203.0.113.11"),
        dport,
        fwmark: 0,
        timeout,
        seq: None,
        pe: None,
    }
}

#[test]
fn a_template_of_a_persistent_service_keys_as_the_scheduler_does() {
    let s = services(vec![
        spec(6, ip("192.0.2.10"), 80, 80, true),
        spec(6, ip("192.0.2.11"), 0, 0, true),
        spec(6, ip("192.0.2.12"), 80, 80, false),
    ]);
    let t = template_of(&template(6, ip("192.0.2.10"), 80, 80, 120), &s).unwrap();
    assert_eq!(
        (
            t.key.proto,
            t.key.caddr,
            t.key.vaddr,
            t.key.vport,
            t.key.fwmark,
            t.key.pe
        ),
        (6, ip("198.51.100.10"), ip("192.0.2.10"), 80, 0, 0)
    );
    assert_eq!(
        (t.dest.addr, t.dport, t.timeout_ms),
        (ip("203.0.113.11"), 80, 120_000)
    );
    // No timeout in the message: the service's own -p.
    let t = template_of(&template(6, ip("192.0.2.10"), 80, 80, 0), &s).unwrap();
    assert_eq!(t.timeout_ms, 300_000);
    // A port-0 service: virtual and server port 0.
    let t = template_of(&template(6, ip("192.0.2.11"), 0, 0, 60), &s).unwrap();
    assert_eq!((t.key.vport, t.dport), (0, 0));
    // Not persistent here, no such server, no such service.
    for c in [
        template(6, ip("192.0.2.12"), 80, 80, 60),
        template(6, ip("192.0.2.10"), 80, 8080, 60),
        template(17, ip("192.0.2.10"), 80, 80, 60),
    ] {
        assert_eq!(template_of(&c, &s).err(), Some(Skip::NoDest), "{c:?}");
    }
}

#[test]
fn a_fwmark_template_carries_the_mark_in_its_virtual_address() {
    let mark = Ipv4Addr::from(7u32);
    let s = services(vec![spec(FWMARK, IpAddr::V4(mark), 0, 80, true)]);
    let t = template_of(&template(0, IpAddr::V4(mark), 0, 80, 60), &s).unwrap();
    assert_eq!((t.key.proto, t.key.fwmark, t.key.vport), (0, 7, 0));
    let other = IpAddr::V4(Ipv4Addr::from(8u32));
    assert_eq!(
        template_of(&template(0, other, 0, 80, 60), &s).err(),
        Some(Skip::NoDest)
    );
}

#[test]
fn a_sip_template_keys_by_the_call_id_digest_and_other_engines_are_refused() {
    let mut sip = spec(17, ip("192.0.2.10"), 5060, 5060, true);
    sip.pe = Some(Pe::Sip);
    let s = services(vec![sip, spec(17, ip("192.0.2.11"), 5060, 5060, true)]);
    let with = |vaddr: &str, name: &[u8]| {
        let mut c = template(17, ip(vaddr), 5060, 5060, 60);
        c.pe = Some(PeData {
            name: name.to_vec(),
            data: b"call-1@client".to_vec(),
        });
        c
    };
    let t = template_of(&with("192.0.2.10", b"sip"), &s).unwrap();
    assert_eq!(t.key.pe, pe_digest(b"call-1@client"));
    assert_eq!(
        template_of(&with("192.0.2.10", b"other"), &s).err(),
        Some(Skip::BadEntry)
    );
    // PE data for a service without an engine here.
    assert_eq!(
        template_of(&with("192.0.2.11", b"sip"), &s).err(),
        Some(Skip::BadEntry)
    );
    // A SIP service's template without PE data.
    assert_eq!(
        template_of(&template(17, ip("192.0.2.10"), 5060, 5060, 60), &s).err(),
        Some(Skip::BadEntry)
    );
}
