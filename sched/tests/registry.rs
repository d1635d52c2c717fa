//! The by-name registry: every scheduler is found, unknown names list the
//! known ones, and flags are checked per scheduler.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use uvs_sched::{Dest, FwdMethod, Registry, SchedError, SchedKey, SchedParams};

fn dests(weights: &[u32]) -> Vec<Arc<Dest>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            Arc::new(Dest::new(
                IpAddr::V4(Ipv4Addr::new(203, 0, 113, i as u8 + 1)),
                80,
                w,
                FwdMethod::Masq,
            ))
        })
        .collect()
}

fn key() -> SchedKey {
    SchedKey {
        proto: 6,
        src: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
        sport: 40000,
        dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        dport: 80,
        now_ms: 0,
    }
}

#[test]
fn every_registered_scheduler_builds_and_picks() {
    let ds = dests(&[1, 2, 3]);
    for name in Registry::names() {
        let s = Registry::create(name, &SchedParams::default(), &ds).unwrap();
        assert_eq!(s.name(), name);
        let d = s.schedule(&key()).expect("a server is available");
        assert!(ds.iter().any(|x| Arc::ptr_eq(x, &d)), "{name}");
    }
}

#[test]
fn rr_and_wrr_registered() {
    assert!(Registry::contains("rr"));
    assert!(Registry::contains("wrr"));
}

#[test]
fn unknown_name_lists_known_ones() {
    let err = Registry::create("nope", &SchedParams::default(), &[]).unwrap_err();
    match &err {
        SchedError::Unknown { name, known } => {
            assert_eq!(name, "nope");
            for n in Registry::names() {
                assert!(known.split(' ').any(|k| k == n), "{n} missing from {known}");
            }
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("rr"));
}

#[test]
fn foreign_flags_rejected() {
    let params = SchedParams {
        flags: vec!["sh-port".into()],
        mh_table_size: None,
    };
    assert!(matches!(
        Registry::create("rr", &params, &[]),
        Err(SchedError::BadParam { sched: "rr", .. })
    ));
}
