//! Connection sync between two directors (`uvsadm --start-daemon`): a
//! master sends its connections, a backup installs them, and after the
//! master is killed the backup carries the established NAT connections on.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use uvs::lab::{self, Director, EchoConn, Lab};
use uvs::sys::netns;

mod common;
use common::root_or_skip;

const SERVICE: [&str; 3] = [
    "-A -t 192.0.2.10:80 -s rr",
    "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m",
    "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m",
];
const CONNS: usize = 200;

fn ip_in(ns: &str, args: &str) {
    let st = Command::new("ip")
        .args(["-n", ns])
        .args(args.split_whitespace())
        .status()
        .expect("ip runs");
    assert!(st.success(), "ip -n {ns} {args}");
}

fn director(lab: &Lab, host: &str, sync: &str) -> Director {
    director_of(lab, host, &SERVICE, sync)
}

fn director_of(lab: &Lab, host: &str, service: &[&str], sync: &str) -> Director {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_uvs"));
    let d = Director::start_in(lab, host, exe, &[]).expect("uvs run");
    for c in service {
        d.uvsadm(c)
            .unwrap_or_else(|e| panic!("{e}\n{}", d.log_text()));
    }
    d.uvsadm(sync)
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_text()));
    d
}

/// Connections the test opens and closes among the long-lived ones, so
/// that connections end while the master syncs.
const CHURN: usize = 50;

/// The expiry column (`mm:ss`) of the ESTABLISHED rows of `-L -n -c`, in
/// seconds.
fn established_expiry(listing: &str) -> Vec<u64> {
    listing
        .lines()
        .filter(|l| l.contains("ESTABLISHED"))
        .filter_map(|l| {
            let (m, s) = l.split_whitespace().nth(1)?.split_once(':')?;
            Some(m.parse::<u64>().ok()? * 60 + s.parse::<u64>().ok()?)
        })
        .collect()
}

/// Sends `msg` to the sync group from namespace `ns` (address `src`), as
/// another director on the segment would.
fn send_sync_from(ns: &str, src: std::net::Ipv4Addr, msg: Vec<u8>) {
    netns::run_in(ns, move || {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_multicast_if_v4(&src).unwrap();
        s.set_multicast_ttl_v4(1).unwrap();
        let to: SocketAddr = "224.0.0.81:8848".parse().unwrap();
        s.send_to(&msg, &to.into()).unwrap();
    })
    .expect("sender namespace");
}

/// One sync message of `syncid` about a connection to real server `rs`,
/// with TCP sequence adjustment data when `seq` (as a kernel master sends
/// for a connection its FTP helper rewrote).
fn message(syncid: u8, rs: &str, seq: bool) -> Vec<u8> {
    let adj = uvs_sync::Seq {
        init_seq: 1000,
        delta: 4,
        previous_delta: 0,
    };
    let c = uvs_sync::Conn {
        protocol: 6,
        flags: 0,
        state: uvs_sync::tcp_state::ESTABLISHED,
        caddr: "198.51.100.10".parse().unwrap(),
        cport: if seq { 2 } else { 1 },
        vaddr: "192.0.2.10".parse().unwrap(),
        vport: 80,
        daddr: rs.parse().unwrap(),
        dport: 80,
        fwmark: 0,
        timeout: 900,
        seq: seq.then_some((adj, adj)),
        pe: None,
    };
    let mut w = uvs_sync::MessageWriter::new(syncid, 1472);
    assert!(w.push(&c).unwrap().is_none());
    w.finish().unwrap()
}

#[test]
fn backup_takes_over_established_nat_connections() {
    if !root_or_skip("backup_takes_over_established_nat_connections") {
        return;
    }
    let lab = Lab::up(
        &format!("uxsyf{}", std::process::id() % 100000),
        &["--pair"],
    )
    .expect("lab up");
    let _s1 = lab::serve_in(&lab.ns("rs1"), "rs1", 80, 53).expect("rs1");
    let _s2 = lab::serve_in(&lab.ns("rs2"), "rs2", 80, 53).expect("rs2");
    // Sync over the server-side segment both directors share.
    let master = director(
        &lab,
        "lb",
        "--start-daemon master --mcast-interface s0 --syncid 7",
    );
    let backup = director(
        &lab,
        "lb2",
        "--start-daemon backup --mcast-interface s0 --syncid 7",
    );
    assert_eq!(
        master.uvsadm("-L --daemon").unwrap(),
        "master sync daemon (mcast=s0, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
    );
    assert!(backup
        .uvsadm("-L --daemon")
        .unwrap()
        .starts_with("backup sync daemon (mcast=s0, syncid=7"));

    // 200 long-lived connections through the master, each past its third
    // packet (what the master syncs); among them 50 that end at once
    // (churn: their end is synced while the others are).
    let vip: SocketAddr = "192.0.2.10:80".parse().unwrap();
    let (conns, before): (Vec<EchoConn>, Vec<String>) = netns::run_in(&lab.ns("c"), move || {
        let mut cs = Vec::new();
        let mut who = Vec::new();
        for i in 0..CONNS {
            let mut c = EchoConn::connect(vip).expect("connect");
            who.push(c.ping(&format!("hello {i}")).expect("first echo"));
            cs.push(c);
            if i % (CONNS / CHURN) == 0 {
                let mut gone = EchoConn::connect(vip).expect("connect");
                gone.ping(&format!("bye {i}")).expect("churn echo");
            }
        }
        (cs, who)
    })
    .expect("client namespace");

    // Wait (bounded) until the backup holds exactly the 200 open ones as
    // established: the 50 that ended are not.
    let end = Instant::now() + Duration::from_secs(10);
    let listing = |d: &Director| d.uvsadm("-L -n -c").unwrap_or_default();
    let count = |d: &Director| established_expiry(&listing(d)).len();
    while count(&backup) != CONNS && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let synced = count(&backup);
    assert_eq!(synced, CONNS, "backup:\n{}", backup.log_text());
    // Counted on both sides (uvs stats), nothing lost or refused. The
    // churned connections' ends may still be on their way (the backup's
    // established count above does not wait for them): bounded wait.
    let want = (CONNS + CHURN) as u64;
    for (d, name) in [
        (&master, "sync.master.conns"),
        (&backup, "sync.backup.conns"),
    ] {
        let at_least = || d.counter(name).unwrap_or(0) >= want;
        assert!(
            common::wait_until(Duration::from_secs(5), at_least),
            "{name}: {} < {want}",
            d.counter(name).unwrap_or(0)
        );
    }
    for c in [
        "bad_messages",
        "other_syncid",
        "bad_entries",
        "no_dest",
        "errors",
    ] {
        assert_eq!(
            backup.counter(&format!("sync.backup.{c}")).unwrap(),
            0,
            "{c}"
        );
    }

    // Messages the backup must drop, each counted under its name: another
    // sync ID, a real server it does not have, a datagram that is no
    // sync message; and a connection with sequence data, installed
    // without it (counted).
    let rs1 = std::net::Ipv4Addr::new(203, 0, 113, 11);
    send_sync_from(&lab.ns("rs1"), rs1, message(9, "203.0.113.11", false));
    send_sync_from(&lab.ns("rs1"), rs1, message(7, "203.0.113.99", false));
    send_sync_from(&lab.ns("rs1"), rs1, b"not a sync message".to_vec());
    send_sync_from(&lab.ns("rs1"), rs1, message(7, "203.0.113.11", true));
    let end = Instant::now() + Duration::from_secs(5);
    let dropped = |d: &Director| {
        ["other_syncid", "no_dest", "bad_messages", "seq_ignored"]
            .map(|c| d.counter(&format!("sync.backup.{c}")).unwrap_or(0))
    };
    while dropped(&backup) != [1, 1, 1, 1] && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        dropped(&backup),
        [1, 1, 1, 1],
        "other_syncid, no_dest, bad_messages, seq_ignored"
    );

    // Without refresh, when would the backup's copies expire?
    let expiry = established_expiry(&listing(&backup));
    let (exp_min, exp_max) = (
        expiry.iter().min().copied().unwrap_or(0),
        expiry.iter().max().copied().unwrap_or(0),
    );

    // The master dies; the client and the real servers route via lb2.
    // Every connection then asks at once (one thread each: the sockets
    // stay in their namespace), and each notes when its answer came.
    let t0 = Instant::now();
    master.kill().expect("SIGKILL");
    ip_in(&lab.ns("c"), "route replace 192.0.2.0/24 via 198.51.100.2");
    for rs in ["rs1", "rs2"] {
        ip_in(&lab.ns(rs), "route replace default via 203.0.113.2");
    }
    let askers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            std::thread::spawn(move || {
                let r = c.ping(&format!("again {i}")).map_err(|e| e.to_string());
                (r, t0.elapsed())
            })
        })
        .collect();
    let after: Vec<(Result<String, String>, Duration)> =
        askers.into_iter().map(|h| h.join().unwrap()).collect();
    let kept = after
        .iter()
        .zip(&before)
        .filter(|((a, _), b)| a.as_ref().ok() == Some(*b))
        .count();
    let mut times: Vec<Duration> = after
        .iter()
        .filter(|(a, _)| a.is_ok())
        .map(|(_, t)| *t)
        .collect();
    times.sort();
    let p50 = times.get(times.len() / 2).copied().unwrap_or_default();
    let max = times.last().copied().unwrap_or_default();
    eprintln!(
        "failover: {kept}/{CONNS} connections kept; first answer after the master's \
         SIGKILL (routes moved by the test): p50 {p50:?}, max {max:?}; the backup's \
         copies would expire without refresh in {exp_min}..{exp_max} s"
    );
    assert!(
        kept * 1000 >= CONNS * 995,
        "{kept}/{CONNS} survived: {:?}\nbackup log:\n{}",
        after
            .iter()
            .filter(|(a, _)| a.is_err())
            .take(3)
            .collect::<Vec<_>>(),
        backup.log_text()
    );
    // The master sends what is left of each timeout: TCP ESTABLISHED's
    // 900 s less the time since it was synced (a minute of slack for a
    // loaded machine).
    assert!(exp_min >= 840 && exp_max <= 900, "{exp_min}..{exp_max}");
}

#[test]
fn daemon_commands_answer_as_ipvsadm() {
    if !root_or_skip("daemon_commands_answer_as_ipvsadm") {
        return;
    }
    let lab = Lab::up(&format!("uxsyd{}", std::process::id() % 100000), &[]).expect("lab up");
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_uvs"));
    let d = Director::start(&lab, exe, &[]).expect("uvs run");
    assert_eq!(d.uvsadm("-L --daemon").unwrap(), "");
    let r = d.call(&["uvsadm", "--stop-daemon", "master"]).unwrap();
    assert_eq!(
        (r.status, r.stderr.as_str()),
        (255, "No daemon is running\n")
    );
    let r = d
        .call(&[
            "uvsadm",
            "--start-daemon",
            "backup",
            "--mcast-interface",
            "nosuch0",
        ])
        .unwrap();
    assert_eq!((r.status, r.stderr.as_str()), (255, "No such device\n"));
    d.uvsadm("--start-daemon master --mcast-interface s0 --mcast-port 9000 --mcast-ttl 2")
        .unwrap();
    let r = d
        .call(&[
            "uvsadm",
            "--start-daemon",
            "master",
            "--mcast-interface",
            "s0",
        ])
        .unwrap();
    assert_eq!(
        (r.status, r.stderr.as_str()),
        (255, "Daemon has already run\n")
    );
    assert_eq!(
        d.uvsadm("-L --daemon").unwrap(),
        "master sync daemon (mcast=s0, syncid=0, maxlen=1472, group=224.0.0.81, port=9000, ttl=2)\n"
    );
    d.uvsadm("--stop-daemon master").unwrap();
    assert_eq!(d.uvsadm("-L --daemon").unwrap(), "");
}

/// One request on a new connection from `src`: the answering server.
fn ask_from(src: IpAddr, vip: SocketAddr, line: &str) -> std::io::Result<(TcpStream, String)> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.bind(&SocketAddr::new(src, 0).into())?;
    s.connect_timeout(&vip.into(), Duration::from_secs(3))?;
    let mut s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    writeln!(s, "{line}")?;
    let mut a = String::new();
    BufReader::new(s.try_clone()?).read_line(&mut a)?;
    let (name, echo) = a
        .trim_end()
        .split_once(':')
        .ok_or_else(|| std::io::Error::other(format!("bad echo {a:?}")))?;
    if echo != line {
        return Err(std::io::Error::other(format!("echo {echo:?}")));
    }
    Ok((s, name.to_string()))
}

/// Persistence templates sync, over unicast (`--sync-peer`): 8 clients of a `-p` service, each on the
/// real server the master chose; after the master is killed, their *new*
/// connections (asked in the reverse order, so that the backup's own
/// round robin would give each the other server) land on the same real
/// servers via the backup.
#[test]
fn persistent_clients_keep_their_real_servers_after_takeover() {
    if !root_or_skip("persistent_clients_keep_their_real_servers_after_takeover") {
        return;
    }
    let lab = Lab::up(
        &format!("uxsyp{}", std::process::id() % 100000),
        &["--pair"],
    )
    .expect("lab up");
    let _s1 = lab::serve_in(&lab.ns("rs1"), "rs1", 80, 53).expect("rs1");
    let _s2 = lab::serve_in(&lab.ns("rs2"), "rs2", 80, 53).expect("rs2");
    let service = [
        "-A -t 192.0.2.10:80 -s rr -p 300",
        "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m",
        "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m",
    ];
    let master = director_of(
        &lab,
        "lb",
        &service,
        "--start-daemon master --mcast-interface s0 --syncid 3 --sync-peer 203.0.113.2",
    );
    let backup = director_of(
        &lab,
        "lb2",
        &service,
        "--start-daemon backup --mcast-interface s0 --syncid 3 --sync-peer 203.0.113.1",
    );
    assert_eq!(
        master.uvsadm("-L --daemon").unwrap(),
        "master sync daemon (mcast=s0, syncid=3, maxlen=1472, peer=203.0.113.2, port=8848, ttl=1)\n"
    );
    const CLIENTS: u8 = 8;
    let clients: Vec<IpAddr> = (0..CLIENTS)
        .map(|i| IpAddr::from([198, 51, 100, 101 + i]))
        .collect();
    for a in &clients {
        ip_in(&lab.ns("c"), &format!("addr add {a}/24 dev eth0"));
    }
    let vip: SocketAddr = "192.0.2.10:80".parse().unwrap();
    let cl = clients.clone();
    // Each client's connection stays open: its third packet (the request)
    // gets it, and its template, synced.
    let (_open, before): (Vec<TcpStream>, Vec<String>) = netns::run_in(&lab.ns("c"), move || {
        cl.iter()
            .enumerate()
            .map(|(i, &a)| ask_from(a, vip, &format!("first {i}")).expect("first ask"))
            .unzip()
    })
    .expect("client namespace");
    assert!(
        before.iter().any(|s| s == "rs1") && before.iter().any(|s| s == "rs2"),
        "{before:?}"
    );
    let end = Instant::now() + Duration::from_secs(10);
    while backup.counter("sync.backup.templates").unwrap_or(0) < u64::from(CLIENTS)
        && Instant::now() < end
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        backup.counter("sync.backup.templates").unwrap(),
        u64::from(CLIENTS),
        "{}",
        backup.log_text()
    );
    assert_eq!(
        master.counter("sync.master.templates").unwrap(),
        u64::from(CLIENTS)
    );
    // Listed on the backup as templates (client port 0).
    let listed = backup.uvsadm("-L -n -c").unwrap();
    let templates = listed.lines().filter(|l| l.contains(":0 ")).count();
    assert_eq!(templates, usize::from(CLIENTS), "{listed}");

    master.kill().expect("SIGKILL");
    ip_in(&lab.ns("c"), "route replace 192.0.2.0/24 via 198.51.100.2");
    for rs in ["rs1", "rs2"] {
        ip_in(&lab.ns(rs), "route replace default via 203.0.113.2");
    }
    let conns_before = backup.counter("sync.backup.conns").unwrap();
    let cl = clients.clone();
    let after: Vec<String> = netns::run_in(&lab.ns("c"), move || {
        let mut v: Vec<String> = cl
            .iter()
            .enumerate()
            .rev()
            .map(|(i, &a)| ask_from(a, vip, &format!("new {i}")).expect("new ask").1)
            .collect();
        v.reverse();
        v
    })
    .expect("client namespace");
    eprintln!("persistence across failover: before {before:?}, after {after:?}");
    assert_eq!(after, before, "{}", backup.log_text());
    // Unicast: the backup took messages from its peer only, and all of
    // them were its sync ID's.
    for c in ["other_sender", "other_syncid", "bad_messages", "no_dest"] {
        assert_eq!(
            backup.counter(&format!("sync.backup.{c}")).unwrap(),
            0,
            "{c}"
        );
    }
    // A well-formed message from another address is dropped, counted.
    netns::run_in(&lab.ns("rs1"), || {
        let s = std::net::UdpSocket::bind("203.0.113.11:0").unwrap();
        s.send_to(&message(3, "203.0.113.11", false), "203.0.113.2:8848")
            .unwrap();
    })
    .expect("rs1 namespace");
    let end = Instant::now() + Duration::from_secs(5);
    while backup.counter("sync.backup.other_sender").unwrap_or(0) == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(backup.counter("sync.backup.other_sender").unwrap(), 1);
    assert_eq!(backup.counter("sync.backup.conns").unwrap(), conns_before);
}
