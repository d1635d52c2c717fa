//! The overload flag driven by `-x`/`-y`: set at or above the upper
//! threshold, cleared below the lower one, or below 3/4 of the upper one
//! when no lower threshold is set; overloaded servers get no new
//! connections from any scheduler.

mod common;

use common::{build, dests, key_from};
use uvs_sched::Registry;

#[test]
fn upper_sets_lower_clears() {
    let d = &dests(&[1])[0];
    d.set_thresholds(4, 2);
    for _ in 0..3 {
        d.conn_bound(true);
    }
    assert!(!d.is_overloaded(), "3 < 4");
    d.conn_bound(false); // inactive connections count too
    assert!(d.is_overloaded(), "4 >= 4");
    d.conn_unbound(true); // 3: still above -y
    assert!(d.is_overloaded());
    d.conn_unbound(true); // 2: not below 2
    assert!(d.is_overloaded());
    d.conn_unbound(true); // 1 < 2: clears
    assert!(!d.is_overloaded());
    assert!(d.can_schedule());
}

#[test]
fn without_lower_clears_below_three_quarters_of_upper() {
    // -x 10: 3/4 is 7.5, so the flag clears at 7 (7 × 4 < 30), not at 6.
    let d = &dests(&[1])[0];
    d.set_thresholds(10, 0);
    for _ in 0..10 {
        d.conn_bound(true);
    }
    assert!(d.is_overloaded());
    d.conn_unbound(true);
    d.conn_unbound(true); // 8
    assert!(d.is_overloaded(), "8 is not below 7.5");
    d.conn_unbound(true); // 7
    assert!(!d.is_overloaded(), "7 is below 7.5");

    // -x 8: 3/4 is exactly 6, cleared at 5.
    let d = &dests(&[1])[0];
    d.set_thresholds(8, 0);
    for _ in 0..8 {
        d.conn_bound(false);
    }
    assert!(d.is_overloaded());
    d.conn_unbound(false);
    d.conn_unbound(false); // 6
    assert!(d.is_overloaded(), "6 is not below 6");
    d.conn_unbound(false); // 5
    assert!(!d.is_overloaded());
}

#[test]
fn no_upper_threshold_never_overloads_and_clearing_it_clears() {
    let d = &dests(&[1])[0];
    for _ in 0..1000 {
        d.conn_bound(true);
    }
    assert!(!d.is_overloaded());
    d.set_thresholds(5, 0);
    assert!(d.is_overloaded(), "re-evaluated when -x is set");
    d.set_thresholds(0, 0);
    assert!(!d.is_overloaded(), "-x 0 clears");
}

#[test]
fn every_scheduler_skips_an_overloaded_server() {
    for name in Registry::names() {
        let ds = dests(&[1, 1]);
        ds[0].set_thresholds(1, 0);
        ds[0].conn_bound(true);
        ds[1].set_weight(0);
        // sh/mh: without fallback they may fail, but must not pick 0.
        let s = build(name, &[], &ds);
        for c in 0..50u32 {
            let k = key_from(0xc633_6400 + c, 1000);
            assert!(s.schedule(&k).is_none(), "{name}: nothing is schedulable");
        }
        ds[1].set_weight(1);
        s.update(&ds);
        for c in 0..50u32 {
            let k = key_from(0xc633_6400 + c, 1000);
            if let Some(d) = s.schedule(&k) {
                assert!(
                    std::sync::Arc::ptr_eq(&d, &ds[1]),
                    "{name} picked the overloaded one"
                );
            }
        }
    }
}
