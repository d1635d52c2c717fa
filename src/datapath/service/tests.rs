//! The snapshot's look-ups and its incremental update: only touched
//! services change, and dest trash, scheduler reuse and counters behave as
//! with a whole rebuild.

use super::*;
use uvs_sched::FwdMethod;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn dest(a: &str, weight: u32) -> DestSpec {
    DestSpec {
        addr: ip(a),
        port: 80,
        fwd: FwdMethod::Masq,
        weight,
        u_threshold: 0,
        l_threshold: 0,
        tun: Default::default(),
    }
}

fn spec(vip: &str, port: u16, sched: &str, dests: Vec<DestSpec>) -> ServiceSpec {
    ServiceSpec {
        proto: 6,
        addr: ip(vip),
        port,
        sched: sched.into(),
        params: SchedParams::default(),
        persistence: None,
        one_packet: false,
        pe: None,
        dests,
    }
}

fn apply(s: &Services, changes: Vec<Change>) -> Services {
    s.plan(changes).unwrap().commit()
}

#[test]
fn find_is_exact_then_port_zero_and_is_vip_counts_services() {
    let s = apply(
        &Services::default(),
        vec![
            Change::Upsert(spec("192.0.2.1", 80, "rr", vec![])),
            Change::Upsert(spec("192.0.2.1", 0, "rr", vec![])),
            Change::Upsert(spec("192.0.2.2", 443, "rr", vec![])),
        ],
    );
    assert_eq!(s.len(), 3);
    assert_eq!(s.find(6, ip("192.0.2.1"), 80).unwrap().port, 80);
    assert_eq!(s.find(6, ip("192.0.2.1"), 81).unwrap().port, 0);
    assert!(s.find(17, ip("192.0.2.1"), 80).is_none());
    assert!(s.find(6, ip("192.0.2.2"), 80).is_none());
    assert!(s.is_vip(ip("192.0.2.1")) && s.is_vip(ip("192.0.2.2")));
    assert!(!s.is_vip(ip("192.0.2.3")));
    // An IPv6 address with the same low bits is another address.
    assert!(!s.is_vip(ip("::c000:201")) && !s.is_vip(ip("::ffff:192.0.2.1")));
    assert!(s.find(6, ip("::c000:202"), 443).is_none());
    // A VIP stays one while any service is on it.
    let s = apply(&s, vec![Change::Remove((6, ip("192.0.2.1"), 80))]);
    assert!(s.is_vip(ip("192.0.2.1")));
    let s = apply(&s, vec![Change::Remove((6, ip("192.0.2.1"), 0))]);
    assert!(!s.is_vip(ip("192.0.2.1")));
    assert!(s.find(6, ip("192.0.2.1"), 81).is_none());
    // Removing a missing service is nothing.
    assert!(s
        .plan(vec![Change::Remove((6, ip("192.0.2.9"), 1))])
        .unwrap()
        .is_empty());
}

#[test]
fn an_update_rebuilds_only_the_touched_service() {
    let mut changes = Vec::new();
    for i in 0..100u16 {
        changes.push(Change::Upsert(spec(
            "192.0.2.1",
            1000 + i,
            "rr",
            vec![dest("203.0.113.1", 1)],
        )));
    }
    let a = apply(&Services::default(), changes);
    let b = apply(
        &a,
        vec![Change::Upsert(spec(
            "192.0.2.1",
            1000,
            "rr",
            vec![dest("203.0.113.1", 1), dest("203.0.113.2", 1)],
        ))],
    );
    for i in 1..100u16 {
        let id = (6, ip("192.0.2.1"), 1000 + i);
        assert!(
            Arc::ptr_eq(a.get(&id).unwrap(), b.get(&id).unwrap()),
            "{i} shared"
        );
    }
    let id = (6, ip("192.0.2.1"), 1000);
    let (old, new) = (a.get(&id).unwrap(), b.get(&id).unwrap());
    assert!(!Arc::ptr_eq(old, new));
    assert!(Arc::ptr_eq(&old.dests[0], &new.dests[0]), "server kept");
    assert!(Arc::ptr_eq(&old.sched, &new.sched), "scheduler kept");
    assert!(Arc::ptr_eq(&old.stats, &new.stats), "counters kept");
    assert_eq!(new.dests.len(), 2);
    // The old snapshot is untouched (workers may still hold it).
    assert_eq!(old.dests.len(), 1);
    assert_eq!(a.len(), 100);
}

#[test]
fn a_removed_server_goes_to_the_trash_and_comes_back_on_re_add() {
    let a = apply(
        &Services::default(),
        vec![Change::Upsert(spec(
            "192.0.2.1",
            80,
            "wlc",
            vec![dest("203.0.113.1", 1), dest("203.0.113.2", 1)],
        ))],
    );
    let id = (6, ip("192.0.2.1"), 80);
    let second = a.get(&id).unwrap().dests[1].clone();
    second.conn_bound(true);
    let b = apply(
        &a,
        vec![Change::Upsert(spec(
            "192.0.2.1",
            80,
            "wlc",
            vec![dest("203.0.113.1", 1)],
        ))],
    );
    let svc = b.get(&id).unwrap();
    assert_eq!(svc.dests.len(), 1);
    assert!(Arc::ptr_eq(&svc.trash[0], &second));
    assert!(!second.is_available());
    assert!(svc.dest(ip("203.0.113.2"), 80).is_none());
    let c = apply(
        &b,
        vec![Change::Upsert(spec(
            "192.0.2.1",
            80,
            "wlc",
            vec![dest("203.0.113.1", 1), dest("203.0.113.2", 5)],
        ))],
    );
    let svc = c.get(&id).unwrap();
    let back = svc.dest(ip("203.0.113.2"), 80).unwrap();
    assert!(Arc::ptr_eq(back, &second), "re-add resumes the same server");
    assert!(back.is_available());
    assert_eq!(back.active_conns(), 1, "its connections are still counted");
    assert_eq!(back.weight(), 5);
    assert!(svc.trash.is_empty());
}

#[test]
fn a_new_scheduler_is_built_and_deleted_services_servers_are_unavailable() {
    let a = apply(
        &Services::default(),
        vec![Change::Upsert(spec(
            "192.0.2.1",
            80,
            "rr",
            vec![dest("203.0.113.1", 1)],
        ))],
    );
    let id = (6, ip("192.0.2.1"), 80);
    let b = apply(
        &a,
        vec![Change::Upsert(spec(
            "192.0.2.1",
            80,
            "wlc",
            vec![dest("203.0.113.1", 1)],
        ))],
    );
    let (old, new) = (a.get(&id).unwrap(), b.get(&id).unwrap());
    assert_eq!(new.sched.name(), "wlc");
    assert!(!Arc::ptr_eq(&old.sched, &new.sched));
    let d = new.dests[0].clone();
    let c = apply(&b, vec![Change::Remove(id)]);
    assert!(c.is_empty());
    assert!(!d.is_available());
    // Re-adding the service starts afresh (new server objects).
    let e = apply(
        &c,
        vec![Change::Upsert(spec(
            "192.0.2.1",
            80,
            "rr",
            vec![dest("203.0.113.1", 1)],
        ))],
    );
    assert!(!Arc::ptr_eq(&e.get(&id).unwrap().dests[0], &d));
}

#[test]
fn a_failing_plan_changes_nothing_shared() {
    let a = apply(
        &Services::default(),
        vec![Change::Upsert(spec(
            "192.0.2.1",
            80,
            "rr",
            vec![dest("203.0.113.1", 1)],
        ))],
    );
    let id = (6, ip("192.0.2.1"), 80);
    let err = a.plan(vec![
        Change::Upsert(spec("192.0.2.1", 80, "rr", vec![dest("203.0.113.1", 9)])),
        Change::Upsert(spec("192.0.2.2", 80, "no-such-scheduler", vec![])),
    ]);
    assert!(err.is_err());
    assert_eq!(a.get(&id).unwrap().dests[0].weight(), 1);
    assert!(!a.is_vip(ip("192.0.2.2")));
}

#[test]
fn many_servers_are_found_through_the_index_and_last_change_wins() {
    let dests: Vec<DestSpec> = (1..=40)
        .map(|i| dest(&format!("203.0.113.{i}"), 1))
        .collect();
    let s = apply(
        &Services::default(),
        vec![
            Change::Upsert(spec("192.0.2.1", 80, "rr", vec![])),
            Change::Upsert(spec("192.0.2.1", 80, "rr", dests)),
        ],
    );
    let svc = s.get(&(6, ip("192.0.2.1"), 80)).unwrap();
    assert_eq!(svc.dests.len(), 40);
    for i in 1..=40 {
        let d = svc.dest(ip(&format!("203.0.113.{i}")), 80).unwrap();
        assert_eq!(d.addr, ip(&format!("203.0.113.{i}")));
    }
    assert!(svc.dest(ip("203.0.113.41"), 80).is_none());
}

#[test]
fn rebuild_deletes_what_the_specs_lack() {
    let a = apply(
        &Services::default(),
        vec![
            Change::Upsert(spec("192.0.2.1", 80, "rr", vec![dest("203.0.113.1", 1)])),
            Change::Upsert(spec("192.0.2.2", 80, "rr", vec![])),
        ],
    );
    let b = a.rebuild(&[spec("192.0.2.2", 80, "rr", vec![])]).unwrap();
    assert_eq!(b.len(), 1);
    assert!(!b.is_vip(ip("192.0.2.1")));
    assert!(!a.get(&(6, ip("192.0.2.1"), 80)).unwrap().dests[0].is_available());
}
