//! A local client's SYN meets LOCAL_OUT's `ip_vs_local_request`.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use uvs_fwd::build::FrameSpec;
use uvs_fwd::CsumMode;
use uvs_sched::{FwdMethod, SchedParams};

use crate::datapath::hooks::HookFn;
use crate::datapath::pipeline::{Pipeline, Verdict};
use crate::datapath::service::{DestSpec, ServiceSpec};
use crate::datapath::stats::WorkerStats;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_local_clients_syn_is_scheduled_at_local_out() {
    let p = Pipeline::new(uvs_conntrack::Table::new(uvs_conntrack::Config::default()));
    let spec = ServiceSpec {
        proto: 6,
        addr: ip("192.0.2.10"),
        port: 80,
        sched: "rr".into(),
        params: SchedParams::default(),
        persistence: None,
        one_packet: false,
        pe: None,
        dests: vec![DestSpec {
            addr: ip("203.0.113.11"),
            port: 80,
            fwd: FwdMethod::Masq,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            tun: Default::default(),
        }],
    };
    let snap = p.services.load().rebuild(&[spec]).unwrap();
    p.services.store(Arc::new(snap));
    let st = WorkerStats::default();
    let mut f = FrameSpec {
        src: ip("203.0.113.1"),
        ..FrameSpec::tcp_v4()
    }
    .build();
    match p.process_local_out(&mut f, CsumMode::Full, 1, &st) {
        Verdict::Xmit { next_hop, pkt, .. } => {
            assert_eq!(next_hop, ip("203.0.113.11"));
            assert_eq!(pkt.src, ip("203.0.113.1"));
        }
        v => panic!("{v:?}"),
    }
    let e = p
        .hooks
        .all()
        .find(|e| e.func == HookFn::IpvsLocalRequest)
        .expect("registered");
    assert_eq!(e.priority, -98);
    assert_eq!(st.hook_stolen[e.index].load(Relaxed), 1);
    // The LOCAL_IN request function did not see it.
    let r = p
        .hooks
        .all()
        .find(|e| e.func == HookFn::IpvsRequest)
        .unwrap();
    assert_eq!(st.hook_seen[r.index].load(Relaxed), 0);
}
