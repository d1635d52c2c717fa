//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::net::IpAddr;
use std::sync::Arc;

use uvs_conntrack::{Config, Dest, FwdMethod, NewConn, Tuple};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SCTP: u8 = 132;

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address literal")
}

pub fn dest(addr: &str, port: u16, fwd: FwdMethod) -> Arc<Dest> {
    Arc::new(Dest::new(ip(addr), port, 1, fwd))
}

pub fn table(max: usize) -> uvs_conntrack::Table {
    uvs_conntrack::Table::new(Config {
        max_entries: max,
        shards: 16,
        seed: 42,
        ..Config::default()
    })
}

/// A connection from 198.51.100.1:`cport` to 192.0.2.10:80 via `d`.
pub fn conn(proto: u8, cport: u16, d: &Arc<Dest>) -> NewConn {
    NewConn {
        proto,
        caddr: ip("198.51.100.1"),
        cport,
        vaddr: ip("192.0.2.10"),
        vport: 80,
        daddr: d.addr,
        dport: d.port,
        dest: d.clone(),
        fwd: d.fwd_method(),
    }
}

/// The request tuple of `c`.
pub fn req(c: &NewConn) -> Tuple {
    Tuple {
        proto: c.proto,
        src: c.caddr,
        sport: c.cport,
        dst: c.vaddr,
        dport: c.vport,
    }
}

/// The (un-NATed) reply tuple of `c`.
pub fn reply(c: &NewConn) -> Tuple {
    Tuple {
        proto: c.proto,
        src: c.daddr,
        sport: c.dport,
        dst: c.caddr,
        dport: c.cport,
    }
}
