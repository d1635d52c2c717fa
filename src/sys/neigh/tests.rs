use super::*;
use crate::sys::netlink::testns::{self, Lab, A4, A6, B4, B6};
use crossbeam_channel::Receiver;

fn v(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Short timings so the tests take fractions of a second.
fn quick() -> ResolverConfig {
    ResolverConfig {
        refresh_after: Duration::from_millis(200),
        negative_ttl: Duration::from_millis(200),
        // Above the kernel's 1 s retransmit time, so one lost
        // solicitation does not fail a test.
        resolve_timeout: Duration::from_millis(1500),
        idle_expiry: Duration::from_secs(60),
        queue_len: 64,
        max_entries: 1000,
    }
}

/// A resolver whose notify callback counts and signals a channel.
fn resolver(config: ResolverConfig) -> (Resolver, Receiver<()>, Arc<AtomicUsize>) {
    let (tx, rx) = channel::unbounded();
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    let r = Resolver::new(config, move || {
        c.fetch_add(1, Ordering::SeqCst);
        let _ = tx.send(());
    })
    .expect("resolver");
    (r, rx, count)
}

/// Looks `dst` up until the answer is no longer Pending (each wait is a
/// notify, as a parked packet would be retried).
fn settle(r: &Resolver, notified: &Receiver<()>, dst: IpAddr) -> Lookup {
    let limit = Instant::now() + Duration::from_secs(3);
    loop {
        match r.lookup(dst) {
            Lookup::Pending if Instant::now() < limit => {
                let _ = notified.recv_timeout(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

#[test]
fn miss_is_pending_then_notify_then_ready() {
    if !testns::available("miss_is_pending_then_notify_then_ready") {
        return;
    }
    let lab = Lab::new();
    let va = lab.ifindex(&lab.a, "va");
    let my_mac = lab.mac(&lab.a, "va");
    let peer_mac = lab.mac(&lab.b, "vb");
    let expected = NextHop {
        ifindex: va,
        src_mac: my_mac,
        dst_mac: peer_mac,
        mtu: 1500,
        src_ip: None,
    };
    // The preferred source differs per family; it must be there.
    let strip = |l: Lookup| match l {
        Lookup::Ready(h) => {
            assert!(h.src_ip.is_some(), "{h:?} has no source address");
            Lookup::Ready(NextHop { src_ip: None, ..h })
        }
        other => other,
    };
    lab.run_in(&lab.a, || {
        let (r, notified, count) = resolver(quick());
        // Connected peers and destinations behind the peer as gateway,
        // none of them ever contacted before.
        for dst in [B4, "203.0.113.7", B6, "2001:db8:2::5"] {
            let dst = v(dst);
            let before = r.stats().resolutions;
            let notifies = count.load(Ordering::SeqCst);
            assert_eq!(r.lookup(dst), Lookup::Pending, "{dst}: a miss");
            // More packets before the answer: no new request (counted
            // below). A next hop whose neighbour is already known may
            // be ready within these lookups.
            for _ in 0..100 {
                let l = strip(r.lookup(dst));
                assert!(
                    l == Lookup::Pending || l == Lookup::Ready(expected),
                    "{dst}: {l:?}"
                );
            }
            notified
                .recv_timeout(Duration::from_secs(3))
                .unwrap_or_else(|_| panic!("{dst}: notify never called"));
            assert!(count.load(Ordering::SeqCst) > notifies);
            assert_eq!(strip(r.lookup(dst)), Lookup::Ready(expected), "{dst}");
            assert_eq!(r.stats().resolutions, before + 1, "{dst}: one resolution");
            while notified.try_recv().is_ok() {}
        }
        assert_eq!(r.stats().failed, 0);
        assert!(r.stats().probes >= 2, "IPv4 and IPv6 peers were probed");
    });
}

#[test]
fn no_route_and_silent_neighbour_are_negatively_cached() {
    if !testns::available("no_route_and_silent_neighbour_are_negatively_cached") {
        return;
    }
    let lab = Lab::new();
    lab.run_in(&lab.a, || {
        let (r, notified, _) = resolver(ResolverConfig {
            resolve_timeout: Duration::from_millis(300),
            ..quick()
        });
        // 192.0.2.1: unreachable route; 192.0.2.65: blackhole;
        // 198.51.100.10 and 2001:db8:1::10: on-link, nobody answers.
        for dst in [
            "192.0.2.1",
            "192.0.2.65",
            "2001:db8:99::1",
            "198.51.100.10",
            "2001:db8:1::10",
        ] {
            let dst = v(dst);
            assert_eq!(settle(&r, &notified, dst), Lookup::Unreachable, "{dst}");
            let started = r.stats().resolutions;
            // Remembered: no new resolution while the answer is fresh.
            assert_eq!(r.lookup(dst), Lookup::Unreachable, "{dst}");
            assert_eq!(r.stats().resolutions, started);
            // Forgotten after negative_ttl: the next lookup retries.
            std::thread::sleep(Duration::from_millis(450));
            assert_eq!(r.lookup(dst), Lookup::Pending, "{dst}: retried");
            assert_eq!(settle(&r, &notified, dst), Lookup::Unreachable, "{dst}");
            assert_eq!(r.stats().resolutions, started + 1, "{dst}");
        }
    });
}

#[test]
fn resolve_blocking_answers_and_fills_the_cache() {
    if !testns::available("resolve_blocking_answers_and_fills_the_cache") {
        return;
    }
    let lab = Lab::new();
    let peer_mac = lab.mac(&lab.b, "vb");
    lab.run_in(&lab.a, || {
        let (r, _, _) = resolver(quick());
        let t = Duration::from_secs(3);
        let hop = r.resolve_blocking(v("203.0.113.9"), t).expect("resolves");
        assert_eq!(hop.dst_mac, peer_mac);
        // The packet path now hits at once.
        assert_eq!(r.lookup(v("203.0.113.9")), Lookup::Ready(hop));
        assert_eq!(
            r.resolve_blocking(v("203.0.113.9"), t).expect("cached"),
            hop
        );

        match r.resolve_blocking(v(A6), t) {
            Err(ResolveError::Local(a)) => assert_eq!(a, v(A6)),
            other => panic!("own address: {other:?}"),
        }
        assert_eq!(r.lookup(v(A6)), Lookup::Local);
        assert_eq!(r.lookup(v(A4)), Lookup::Pending);
        match r.resolve_blocking(v("192.0.2.129"), t) {
            Err(ResolveError::NoRoute { kind, .. }) => assert_eq!(kind, RouteKind::Prohibit),
            other => panic!("prohibited: {other:?}"),
        }
        match r.resolve_blocking(v("198.51.100.77"), t) {
            Err(ResolveError::NoNeighbour { next_hop, .. }) => {
                assert_eq!(next_hop, v("198.51.100.77"))
            }
            other => panic!("silent neighbour: {other:?}"),
        }
        match r.resolve_blocking(v("198.51.100.78"), Duration::from_millis(50)) {
            Err(ResolveError::Timeout(_)) => {}
            other => panic!("shorter than the neighbour timeout: {other:?}"),
        }
    });
}

#[test]
fn notifications_follow_route_changes_without_polling() {
    if !testns::available("notifications_follow_route_changes_without_polling") {
        return;
    }
    let lab = Lab::new();
    let dst = v("203.0.113.20");
    // No timer could notice the changes within the test.
    let config = ResolverConfig {
        refresh_after: Duration::from_secs(600),
        ..quick()
    };
    let (r, notified, _) = lab.run_in(&lab.a, || resolver(config));
    // The resolver's socket stays in namespace a: the test thread can
    // leave it.
    assert!(matches!(settle(&r, &notified, dst), Lookup::Ready(_)));
    let before = r.stats();
    lab.ip(&["-n", &lab.a, "route", "del", "203.0.113.0/24"]);
    let t = Instant::now();
    while r.lookup(dst) != Lookup::Unreachable {
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "route removal not followed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    lab.ip(&["-n", &lab.a, "route", "add", "203.0.113.0/24", "via", B4]);
    let t = Instant::now();
    while !matches!(r.lookup(dst), Lookup::Ready(_)) {
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "route return not followed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let after = r.stats();
    assert!(after.events > before.events, "{after:?}");
    assert_eq!(after.resyncs, 0, "{after:?}");
    // One re-resolution per change (route events come in pairs at most),
    // none from a timer.
    assert!(
        after.resolutions - before.resolutions <= 4,
        "{before:?} {after:?}"
    );
}

#[test]
fn neighbour_changes_are_followed_at_once() {
    if !testns::available("neighbour_changes_are_followed_at_once") {
        return;
    }
    let lab = Lab::new();
    let dst = v("203.0.113.21");
    let config = ResolverConfig {
        refresh_after: Duration::from_secs(600),
        ..quick()
    };
    let (r, notified, _) = lab.run_in(&lab.a, || resolver(config));
    let Lookup::Ready(hop) = settle(&r, &notified, dst) else {
        panic!("resolves");
    };
    assert_eq!(hop.dst_mac, lab.mac(&lab.b, "vb"));
    let before = r.stats();
    // The gateway's entry gets another MAC: published without asking
    // the kernel anything.
    lab.ip(&[
        "-n",
        &lab.a,
        "neigh",
        "replace",
        B4,
        "lladdr",
        "02:00:00:00:00:42",
        "dev",
        "va",
    ]);
    let t = Instant::now();
    loop {
        match r.lookup(dst) {
            Lookup::Ready(h) if h.dst_mac == [2, 0, 0, 0, 0, 0x42] => break,
            other => {
                assert!(t.elapsed() < Duration::from_millis(100), "{other:?}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    assert_eq!(r.stats().resolutions, before.resolutions, "{:?}", r.stats());
    // The entry removed: re-resolved (probe, the peer answers), back to
    // the peer's real MAC.
    lab.ip(&["-n", &lab.a, "neigh", "del", B4, "dev", "va"]);
    let t = Instant::now();
    loop {
        match r.lookup(dst) {
            Lookup::Ready(h) if h.dst_mac == hop.dst_mac => break,
            other => {
                assert!(t.elapsed() < Duration::from_millis(500), "{other:?}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let after = r.stats();
    assert!(
        after.events > before.events && after.probes > before.probes,
        "{after:?}"
    );
}

#[test]
fn idle_entries_expire_and_flush_forgets() {
    if !testns::available("idle_entries_expire_and_flush_forgets") {
        return;
    }
    let lab = Lab::new();
    lab.run_in(&lab.a, || {
        let config = ResolverConfig {
            idle_expiry: Duration::from_millis(300),
            ..quick()
        };
        let (r, notified, _) = resolver(config);
        assert!(matches!(settle(&r, &notified, v(B4)), Lookup::Ready(_)));
        // Served from this thread's cache from now on.
        assert!(matches!(r.lookup(v(B4)), Lookup::Ready(_)));
        assert_eq!(r.len(), 1);
        let limit = Instant::now() + Duration::from_secs(3);
        while !r.is_empty() {
            assert!(Instant::now() < limit, "idle entry kept");
            std::thread::sleep(Duration::from_millis(20));
        }
        let got = settle(&r, &notified, v(B6));
        assert!(matches!(got, Lookup::Ready(_)), "{got:?} {:?}", r.stats());
        assert!(matches!(r.lookup(v(B6)), Lookup::Ready(_)));
        r.flush();
        let limit = Instant::now() + Duration::from_secs(1);
        while !r.is_empty() {
            assert!(Instant::now() < limit, "flush kept entries");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Flushed: the thread's cached answer is stale, not served (the
        // lookup is a miss again).
        assert_eq!(
            r.lookup(v(B6)),
            Lookup::Pending,
            "flushed answer still cached"
        );
    });
}

#[test]
fn full_cache_refuses_new_destinations() {
    if !testns::available("full_cache_refuses_new_destinations") {
        return;
    }
    let lab = Lab::new();
    lab.run_in(&lab.a, || {
        let (r, notified, _) = resolver(ResolverConfig {
            max_entries: 2,
            ..quick()
        });
        assert!(matches!(settle(&r, &notified, v(B4)), Lookup::Ready(_)));
        assert!(matches!(settle(&r, &notified, v(B6)), Lookup::Ready(_)));
        assert_eq!(r.len(), 2);
        let third = v("203.0.113.30");
        for _ in 0..3 {
            assert_eq!(r.lookup(third), Lookup::Pending);
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(r.lookup(third), Lookup::Pending, "never queued");
        let stats = r.stats();
        assert_eq!((stats.resolutions, stats.table_full), (2, 4));
        // Cached answers are still served.
        assert!(matches!(r.lookup(v(B4)), Lookup::Ready(_)));
    });
}

#[test]
fn drop_stops_the_thread_promptly() {
    if !testns::available("drop_stops_the_thread_promptly") {
        return;
    }
    let lab = Lab::new();
    lab.run_in(&lab.a, || {
        let (r, _, _) = resolver(ResolverConfig {
            resolve_timeout: Duration::from_secs(30),
            ..quick()
        });
        // A resolution that would wait for a long time.
        assert_eq!(r.lookup(v("198.51.100.99")), Lookup::Pending);
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        drop(r);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    });
}
