//! Hashing schedulers: a fixed key keeps its server; fallback flags route
//! around an unavailable server and return when it is back; Maglev's slot
//! balance and disruption bounds.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use common::{build, dests, index_of, key_from, TestRng};
use uvs_sched::mh::{Mh, MH_PRIMES};
use uvs_sched::{SchedFlags, SchedKey, Scheduler};

fn keys(n: usize) -> Vec<SchedKey> {
    let mut rng = TestRng(12345);
    (0..n)
        .map(|_| {
            let mut k = key_from(rng.next_u32(), (rng.next_u32() >> 16) as u16);
            k.dst = IpAddr::V4(Ipv4Addr::from(rng.next_u32()));
            k
        })
        .collect()
}

#[test]
fn fixed_key_keeps_its_server() {
    for (name, flags) in [
        ("sh", vec![]),
        ("sh", vec!["sh-port"]),
        ("dh", vec![]),
        ("mh", vec![]),
        ("mh", vec!["mh-port", "mh-fallback"]),
        ("lblc", vec![]),
        ("lblcr", vec![]),
    ] {
        let ds = dests(&[1, 2, 3, 1, 1]);
        let s = build(name, &flags, &ds);
        for k in keys(200) {
            let first = s.schedule(&k).expect("servers up");
            for _ in 0..5 {
                let again = s.schedule(&k).expect("servers up");
                assert!(Arc::ptr_eq(&first, &again), "{name} {flags:?} moved a key");
            }
        }
        // Rebuilding with the same membership changes nothing either.
        let ks = keys(200);
        let before: Vec<_> = ks.iter().map(|k| s.schedule(k).unwrap()).collect();
        s.update(&ds);
        for (k, b) in ks.iter().zip(&before) {
            assert!(
                Arc::ptr_eq(&s.schedule(k).unwrap(), b),
                "{name}: update moved a key"
            );
        }
    }
}

#[test]
fn port_flags_ignore_the_port_only_when_unset() {
    let ds = dests(&[1, 1, 1, 1]);
    for (name, flag) in [("sh", "sh-port"), ("mh", "mh-port")] {
        let plain = build(name, &[], &ds);
        let with_port = build(name, &[flag], &ds);
        let base = key_from(0xc633_6405, 1);
        let mut plain_seen = std::collections::HashSet::new();
        let mut port_seen = std::collections::HashSet::new();
        for p in 1..200u16 {
            let k = SchedKey { sport: p, ..base };
            plain_seen.insert(index_of(&ds, &plain.schedule(&k).unwrap()));
            port_seen.insert(index_of(&ds, &with_port.schedule(&k).unwrap()));
        }
        assert_eq!(plain_seen.len(), 1, "{name}: one client, one server");
        assert_eq!(port_seen.len(), 4, "{name} {flag}: ports spread");
    }
}

#[test]
fn fallback_routes_around_and_returns() {
    for (name, flag) in [("sh", "sh-fallback"), ("mh", "mh-fallback")] {
        let ds = dests(&[1, 1, 1, 1]);
        let strict = build(name, &[], &ds);
        let fb = build(name, &[flag], &ds);
        let ks = keys(2000);
        let home: Vec<usize> = ks
            .iter()
            .map(|k| index_of(&ds, &fb.schedule(k).unwrap()))
            .collect();
        // Server 2 goes down (overloaded), membership unchanged.
        ds[2].set_thresholds(1, 0);
        ds[2].conn_bound(true);
        let mut moved_to = HashMap::new();
        for (k, &h) in ks.iter().zip(&home) {
            let d = fb.schedule(k).expect("fallback finds a server");
            let i = index_of(&ds, &d);
            assert_ne!(i, 2, "{name}: picked the down server");
            if h == 2 {
                *moved_to.entry(i).or_insert(0) += 1;
                assert!(
                    strict.schedule(k).is_none(),
                    "{name} without fallback fails"
                );
                // Deterministic while the state holds.
                assert!(Arc::ptr_eq(&fb.schedule(k).unwrap(), &d));
            } else {
                assert_eq!(i, h, "{name}: a key of an up server moved");
            }
        }
        if name == "mh" {
            // Re-hashing spreads a down server's clients over all the others.
            assert_eq!(moved_to.len(), 3, "{name}: keys spread {moved_to:?}");
        } else {
            // The kernel's sh probes bucket `i + 2 × bucket`: with a table
            // that repeats every 4 buckets they all land on one server.
            assert!(!moved_to.is_empty());
        }
        // Back up: everyone goes home.
        ds[2].conn_unbound(true);
        for (k, &h) in ks.iter().zip(&home) {
            assert_eq!(index_of(&ds, &fb.schedule(k).unwrap()), h);
        }
    }
}

#[test]
fn dh_and_lblc_keep_the_destination_not_the_source() {
    let ds = dests(&[1, 1, 1]);
    for name in ["dh", "lblc", "lblcr"] {
        let s = build(name, &[], &ds);
        let mut rng = TestRng(99);
        let first = s.schedule(&key_from(1, 1)).unwrap();
        for _ in 0..100 {
            let k = key_from(rng.next_u32(), (rng.next_u32() >> 16) as u16);
            assert!(Arc::ptr_eq(&s.schedule(&k).unwrap(), &first), "{name}");
        }
    }
}

#[test]
fn mh_equal_weights_slot_counts_within_one_at_every_size() {
    for &size in &MH_PRIMES[..6] {
        for n in [2usize, 5, 13, 100] {
            let ds = dests(&vec![7; n]);
            let mh = Mh::new(&ds, SchedFlags::default(), size);
            let c = mh.slot_counts();
            let spread = c.iter().max().unwrap() - c.iter().min().unwrap();
            assert!(spread <= 1, "size {size}, n {n}: {c:?}");
        }
    }
}

#[test]
fn mh_removing_one_of_n_remaps_about_one_nth() {
    // Margin: Maglev moves the removed server's slots (1/N) plus some
    // others, because refilling shifts who wins contested preferences. With
    // the default 4093 table the extra measured +0.1 % (N = 3), +1.1 %
    // (N = 10), +2.3 % (N = 50), +3.4 % (N = 100), +2.1 % (N = 200) of the
    // table: the bound is 1/N + 4 %. It shrinks as size / N grows.
    for n in [3usize, 5, 10, 20, 50, 100, 200] {
        let ds = dests(&vec![1; n]);
        let mh = Mh::new(&ds, SchedFlags::default(), 4093);
        let before = mh.table();
        let removed = Arc::clone(&ds[n / 2]);
        let rest: Vec<_> = ds
            .iter()
            .filter(|d| !Arc::ptr_eq(d, &removed))
            .cloned()
            .collect();
        mh.update(&rest);
        let after = mh.table();
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| !Arc::ptr_eq(b, a))
            .count();
        let frac = moved as f64 / 4093.0;
        let own = 1.0 / n as f64;
        assert!(
            frac <= own + 0.04,
            "n={n}: moved {frac:.4}, removed server owned {own:.4}"
        );
        // Slots of surviving servers mostly stay: every slot of the removed
        // one had to move.
        assert!(frac >= own * 0.95);
    }
}

#[test]
fn mh_tables_agree_across_instances() {
    // Two directors with the same configuration build the same table.
    let ds = dests(&[3, 1, 2, 5]);
    let a = Mh::new(&ds, SchedFlags::default(), 4093);
    let b = Mh::new(&ds, SchedFlags::default(), 4093);
    let ta = a.table();
    let tb = b.table();
    assert!(ta.iter().zip(&tb).all(|(x, y)| Arc::ptr_eq(x, y)));
    // Even with freshly allocated but identical destinations.
    let ds2 = dests(&[3, 1, 2, 5]);
    let c = Mh::new(&ds2, SchedFlags::default(), 4093);
    let ia: Vec<usize> = ta.iter().map(|d| index_of(&ds, d)).collect();
    let ic: Vec<usize> = c.table().iter().map(|d| index_of(&ds2, d)).collect();
    assert_eq!(ia, ic);
}

#[test]
fn mh_scheduler_trait_object_has_name() {
    let ds = dests(&[1]);
    let s: Box<dyn Scheduler> = build("mh", &[], &ds);
    assert_eq!(s.name(), "mh");
}
