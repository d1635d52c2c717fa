//! The pipeline set-up shared by the allocation test and the pipeline
//! benchmark: a TCP rr service 192.0.2.10:80 with two NAT real servers.

use std::sync::Arc;

use uvs::datapath::pipeline::Pipeline;
use uvs::datapath::service::{DestSpec, ServiceSpec, Services};
use uvs_fwd::build::{FrameSpec, L4Spec};
use uvs_sched::{FwdMethod, SchedParams};

/// A TCP frame from `fwd`'s test builder.
pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    FrameSpec {
        src: src.parse().expect("literal address"),
        dst: dst.parse().expect("literal address"),
        sport,
        dport,
        l4: L4Spec::Tcp {
            flags,
            options: Vec::new(),
        },
        payload: vec![0x55; payload],
        ..FrameSpec::tcp_v4()
    }
    .build()
}

pub fn pipeline() -> Pipeline {
    pipeline_on(Services::default())
}

/// The same pipeline with its services planned from `base` (e.g. a
/// [`Services::counted`] snapshot, whose servers are counted).
pub fn pipeline_on(base: Services) -> Pipeline {
    pipeline_among(base, 0)
}

/// [`pipeline_on`] with `others` more TCP services in front of the
/// measured one (VIPs 10.x.y.z:80, one server each), for the look-ups'
/// cost against the number of services.
pub fn pipeline_among(base: Services, others: usize) -> Pipeline {
    let p = Pipeline::new(uvs_conntrack::Table::new(uvs_conntrack::Config::default()));
    let dest = |a: &str| DestSpec {
        addr: a.parse().unwrap(),
        port: 80,
        fwd: FwdMethod::Masq,
        weight: 1,
        u_threshold: 0,
        l_threshold: 0,
        tun: Default::default(),
    };
    let spec = ServiceSpec {
        proto: 6,
        addr: "192.0.2.10".parse().unwrap(),
        port: 80,
        sched: "rr".into(),
        params: SchedParams::default(),
        persistence: None,
        one_packet: false,
        pe: None,
        dests: vec![dest("203.0.113.11"), dest("203.0.113.12")],
    };
    let mut specs: Vec<ServiceSpec> = (0..others as u32)
        .map(|i| ServiceSpec {
            addr: std::net::Ipv4Addr::from(0x0a00_0000 + i).into(),
            dests: vec![dest("203.0.113.11")],
            ..spec.clone()
        })
        .collect();
    specs.push(spec);
    let snap = base.rebuild(&specs).unwrap();
    p.services.store(Arc::new(snap));
    p
}
