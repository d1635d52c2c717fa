//! `uvs demo`: a whole load balancer in one command. Builds a uniquely named
//! namespace lab, starts `uvs run` in the director namespace, configures a
//! TCP (rr) and a UDP (wrr 3:1) service with uvsadm commands, sends real
//! traffic from the client, prints where it went and `uvsadm -L -n`, and
//! removes everything it made. Succeeds only when traffic was balanced as
//! configured.

use std::io;
use std::time::Duration;

use crate::lab::{self, Director, Lab, Tally};
use crate::sys::netns;

/// Whether we run as root (namespaces need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn show(t: &Tally) -> String {
    let mut s: Vec<String> = t
        .by_server
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if t.failures > 0 {
        s.push(format!(
            "failed={} (first: {})",
            t.failures,
            t.first_error.as_deref().unwrap_or("")
        ));
    }
    s.join(" ")
}

/// Runs the demo; `Ok(true)` when the traffic was balanced as configured.
pub fn run(requests: usize) -> io::Result<bool> {
    let prefix = format!("uvsdemo{}", std::process::id());
    println!("uvs demo: building lab '{prefix}': client 198.51.100.10, director, real servers 203.0.113.11 and .12");
    let lab = Lab::up(&prefix, &[])?;
    println!(
        "uvs demo: starting lab servers (TCP :80, UDP :53) in {} and {}",
        lab.ns("rs1"),
        lab.ns("rs2")
    );
    let _rs1 = lab::serve_in(&lab.ns("rs1"), "rs1", 80, 53)?;
    let _rs2 = lab::serve_in(&lab.ns("rs2"), "rs2", 80, 53)?;
    let exe = std::env::current_exe()?;
    println!("uvs demo: starting `uvs run` in {}", lab.ns("lb"));
    let d = Director::start(&lab, &exe, &[])?;
    let cmds = [
        "-A -t 192.0.2.10:80 -s rr",
        "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 1",
        "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 1",
        "-A -u 192.0.2.10:53 -s wrr",
        "-a -u 192.0.2.10:53 -r 203.0.113.11:53 -m -w 3",
        "-a -u 192.0.2.10:53 -r 203.0.113.12:53 -m -w 1",
    ];
    for c in cmds {
        println!("uvs demo: uvsadm {c}");
        d.uvsadm(c)?;
    }
    let vip = "192.0.2.10:80".parse().map_err(io::Error::other)?;
    println!("uvs demo: client sends {requests} short TCP requests to 192.0.2.10:80 ...");
    let tcp = netns::run_in(&lab.ns("c"), move || {
        lab::tcp_requests(vip, requests, Duration::from_secs(120))
    })?;
    println!("uvs demo:   TCP answers by server: {}", show(&tcp));
    let uvip = "192.0.2.10:53".parse().map_err(io::Error::other)?;
    let udp_n = 400;
    println!(
        "uvs demo: client sends {udp_n} UDP requests (each from a new port) to 192.0.2.10:53 ..."
    );
    let udp = netns::run_in(&lab.ns("c"), move || {
        lab::udp_requests(uvip, udp_n, Duration::from_secs(60))
    })?;
    println!("uvs demo:   UDP answers by server: {}", show(&udp));
    println!("uvs demo: uvsadm -L -n");
    print!("{}", d.uvsadm("-L -n")?);
    let half = requests / 2;
    let tcp_ok =
        tcp.failures == 0 && tcp.count("rs1") == requests - half && tcp.count("rs2") == half;
    let udp_ok =
        udp.failures == 0 && udp.count("rs1") == udp_n * 3 / 4 && udp.count("rs2") == udp_n / 4;
    if !(tcp_ok && udp_ok) {
        println!("uvs demo: not balanced as configured; the engine's non-zero counters:");
        let stats = d.call(&["stats"])?.stdout;
        for l in stats
            .lines()
            .filter(|l| !l.ends_with(" 0") && !l.contains("seen 0 "))
        {
            println!("  {l}");
        }
        print!(
            "{}",
            d.uvsadm("-L -n -c")?
                .lines()
                .filter(|l| l.starts_with("UDP"))
                .count()
                .to_string()
                + " UDP entries listed\n"
        );
    }
    println!("uvs demo: stopping uvs and removing the lab");
    let status = d.stop()?;
    drop(lab);
    println!(
        "uvs demo: TCP rr {} (expected {}/{}), UDP wrr 3:1 {} (expected {}/{}), uvs exit {}",
        if tcp_ok { "balanced" } else { "NOT balanced" },
        requests - half,
        half,
        if udp_ok { "balanced" } else { "NOT balanced" },
        udp_n * 3 / 4,
        udp_n / 4,
        status
    );
    Ok(tcp_ok && udp_ok && status.success())
}
