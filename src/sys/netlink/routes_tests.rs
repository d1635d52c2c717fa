//! The table dump, as `-o`'s route snapshot, answers as the kernel's own
//! lookup (`ip route get`) does in a namespace lab.

use std::net::IpAddr;
use std::process::Command;

use super::super::testns::{self, Lab, A4, A6, B4, B6};
use super::*;
use crate::datapath::tables::route::{Routes, LOOPBACK_IFINDEX};

fn ip_ok(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_snapshot_chooses_the_kernels_interface() {
    if !testns::available("the_snapshot_chooses_the_kernels_interface") {
        return;
    }
    let lab = Lab::new();
    let a = lab.a.as_str();
    // A second link (d0), a lower-metric duplicate prefix and an ECMP route.
    // (A veth pair inside the namespace: no dummy module needed.)
    ip_ok(&[
        "-n", a, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ]);
    ip_ok(&["-n", a, "link", "set", "d1", "up"]);
    ip_ok(&["-n", a, "link", "set", "d0", "up"]);
    ip_ok(&["-n", a, "addr", "add", "192.0.2.193/27", "dev", "d0"]);
    ip_ok(&[
        "-n",
        a,
        "route",
        "add",
        "198.51.100.128/25",
        "dev",
        "va",
        "metric",
        "50",
    ]);
    ip_ok(&[
        "-n",
        a,
        "route",
        "add",
        "198.51.100.128/25",
        "dev",
        "d0",
        "metric",
        "10",
    ]);
    let ecmp = "nexthop via 198.51.100.2 dev va nexthop via 192.0.2.194 dev d0";
    let mut args = vec!["-n", a, "route", "add", "203.0.113.128/25"];
    args.extend(ecmp.split(' '));
    ip_ok(&args);
    let (va, d0) = (lab.ifindex(a, "va"), lab.ifindex(a, "d0"));
    let dsts = [
        B4,
        A4,
        "127.0.0.1",
        "203.0.113.7",
        "203.0.113.200",
        "192.0.2.1",
        "192.0.2.65",
        "192.0.2.129",
        "192.0.2.200",
        "192.0.2.193",
        "198.51.100.200",
        "8.8.8.8",
        B6,
        A6,
        "2001:db8:2::5",
        "2001:db8:ff::1",
        "2001:db8:99::1",
    ];
    let (entries, kernel) = lab.run_in(a, || {
        let mut nl = Netlink::open().expect("open");
        let kernel: Vec<_> = dsts
            .iter()
            .map(|d| nl.route_get(d.parse().unwrap()).expect("route_get"))
            .collect();
        (routes().expect("dump"), kernel)
    });
    let snap = Routes::from_entries(&entries);
    for (d, k) in dsts.iter().zip(&kernel) {
        let want = if k.is_local() {
            LOOPBACK_IFINDEX
        } else if k.is_unreachable() {
            0
        } else {
            k.oif.unwrap_or(0)
        };
        let got = snap.lookup(d.parse::<IpAddr>().unwrap());
        if *d == "203.0.113.200" {
            // ECMP: the first live next hop; the kernel hashes the flow.
            assert_eq!(got, va, "{d}");
            assert!(want == va || want == d0, "{d}: {k:?}");
        } else {
            assert_eq!(got, want, "{d}: the kernel says {k:?}\n{entries:?}");
        }
    }
    assert_eq!(snap.lookup("198.51.100.200".parse().unwrap()), d0);
    assert!(entries
        .iter()
        .all(|e| e.table == TABLE_MAIN || e.table == TABLE_LOCAL));
}
