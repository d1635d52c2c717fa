//! Lab tests of the traffic counters and rates (`uvsadm -L -n --stats`,
//! `--rate`, `-Z`) against what the client itself sent and received: its
//! namespace's own TCP segment and IP byte counters. They need root and
//! skip without it; one at a time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uvs::lab;
use uvs::sys::netns;

mod common;

use common::{root_or_skip, Setup};

static SERIAL: Mutex<()> = Mutex::new(());

const RR: [&str; 3] = [
    "-A -t 192.0.2.10:80 -s rr",
    "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m",
    "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m",
];

/// Where `uvs run --metrics` listens, inside the director's namespace.
const METRICS: &str = "127.0.0.1:9188";

fn setup(tag: &str) -> Setup {
    let s = Setup::start(
        &format!("uvst{}{tag}", std::process::id() % 100000),
        &[],
        &["--metrics", METRICS],
    );
    for c in RR {
        s.d.uvsadm(c)
            .unwrap_or_else(|e| panic!("{e}\nuvs log:\n{}", s.d.log_text()));
    }
    s
}

/// The client namespace's own counters: TCP segments out/in (`Tcp`
/// `OutSegs`, `InSegs`, `RetransSegs`) and IPv4 bytes (`IpExt` `OutOctets`,
/// `InOctets`: IP packet lengths, what IPVS counts as bytes).
fn client_counters(s: &Setup) -> BTreeMap<String, u64> {
    netns::run_in(&s.lab.ns("c"), || {
        let mut m = BTreeMap::new();
        for f in ["snmp", "netstat"] {
            let t = std::fs::read_to_string(format!("/proc/thread-self/net/{f}")).expect(f);
            let lines: Vec<&str> = t.lines().collect();
            for pair in lines.chunks(2) {
                let [h, v] = pair else { continue };
                let (g, names) = h.split_once(':').expect("group");
                let vals = v.split_once(':').expect("values").1;
                for (n, x) in names.split_whitespace().zip(vals.split_whitespace()) {
                    if let Ok(x) = x.parse() {
                        m.insert(format!("{g}.{n}"), x);
                    }
                }
            }
        }
        m
    })
    .expect("client namespace")
}

fn delta(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>, k: &str) -> u64 {
    b[k] - a[k]
}

/// The numbers of the listing line that starts with `prefix` (after its
/// first field).
fn row(list: &str, prefix: &str) -> Vec<u64> {
    let l = list
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in\n{list}"));
    l.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

fn requests(s: &Setup, n: usize) -> lab::Tally {
    netns::run_in(&s.lab.ns("c"), move || {
        lab::tcp_requests(
            "192.0.2.10:80".parse::<SocketAddr>().unwrap(),
            n,
            Duration::from_secs(60),
        )
    })
    .expect("client namespace")
}

/// A real HTTP GET of /metrics from the director's namespace; the body.
fn get_metrics(s: &Setup) -> String {
    netns::run_in(&s.lab.ns("lb"), || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(METRICS).expect("metrics listens");
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: lab\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).expect("answer");
        out
    })
    .expect("lb namespace")
}

/// Parses Prometheus text exposition strictly: every line is a `# HELP`,
/// `# TYPE`, `# EOF` or a `name{labels} value` sample of a declared
/// family. Returns `name{labels}` → value.
fn parse_prometheus(body: &str) -> BTreeMap<String, f64> {
    let mut types = BTreeMap::new();
    let mut out = BTreeMap::new();
    for l in body.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (n, t) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge"].contains(&t), "{l}");
            types.insert(n.to_string(), t.to_string());
            continue;
        }
        if l.starts_with("# HELP ") || l == "# EOF" {
            continue;
        }
        let (series, v) = l.rsplit_once(' ').unwrap_or_else(|| panic!("sample {l:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{l}"
        );
        let fam = name.strip_suffix("_total").unwrap_or(name);
        assert!(types.contains_key(fam), "undeclared {name}: {l}");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels.strip_prefix('{').and_then(|x| x.strip_suffix('}'));
                let inner = inner.unwrap_or_else(|| panic!("labels {l:?}"));
                for kv in inner.split(',') {
                    let (k, v) = kv.split_once('=').expect("label k=v");
                    assert!(
                        !k.is_empty() && v.starts_with('"') && v.ends_with('"'),
                        "{l}"
                    );
                }
            }
        }
        out.insert(
            series.to_string(),
            v.parse().unwrap_or_else(|_| panic!("{l}")),
        );
    }
    assert!(body.trim_end().ends_with("# EOF"), "no # EOF");
    out
}

#[test]
fn stats_count_exactly_what_the_client_sent_and_received_and_z_zeroes() {
    if !root_or_skip("stats_count_exactly_what_the_client_sent_and_received_and_z_zeroes") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("c");
    const N: usize = 200;
    let before = client_counters(&s);
    let t = requests(&s, N);
    assert_eq!(t.failures, 0, "{t:?}\n{}", s.d.log_text());
    // The last FIN/ACKs are on their way; then nothing moves.
    std::thread::sleep(Duration::from_millis(500));
    let after = client_counters(&s);
    let list = s.d.uvsadm("-L -n --stats --exact").expect("list");
    let svc = row(&list, "TCP  192.0.2.10:80");
    let (r1, r2) = (
        row(&list, "-> 203.0.113.11:80"),
        row(&list, "-> 203.0.113.12:80"),
    );
    let out_segs = delta(&before, &after, "Tcp.OutSegs");
    let retrans = delta(&before, &after, "Tcp.RetransSegs");
    let in_segs = delta(&before, &after, "Tcp.InSegs");
    let out_octets = delta(&before, &after, "IpExt.OutOctets");
    let in_octets = delta(&before, &after, "IpExt.InOctets");
    let why = format!(
        "{list}\nclient: out {out_segs} segs (+{retrans} retransmitted) {out_octets} B, in {in_segs} segs {in_octets} B"
    );
    // Conns, InPkts, OutPkts, InBytes, OutBytes.
    assert_eq!(svc[0], N as u64, "{why}");
    assert_eq!((r1[0], r2[0]), (N as u64 / 2, N as u64 / 2), "{why}");
    assert_eq!(svc[1], out_segs + retrans, "every client segment in: {why}");
    assert_eq!(svc[2], in_segs, "every reply out: {why}");
    assert_eq!(svc[3], out_octets, "{why}");
    assert_eq!(svc[4], in_octets, "{why}");
    for i in 0..5 {
        assert_eq!(
            svc[i],
            r1[i] + r2[i],
            "servers add up to the service: {why}"
        );
    }

    // /metrics: a real HTTP GET; Prometheus text; the same counters.
    let http = get_metrics(&s);
    let (head, body) = http.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let m = parse_prometheus(body);
    let svc_l = r#"{proto="tcp",vip="192.0.2.10",port="80"}"#;
    let names = [
        "connections",
        "in_packets",
        "out_packets",
        "in_bytes",
        "out_bytes",
    ];
    for (i, n) in names.iter().enumerate() {
        let k = format!("uvs_service_{n}_total{svc_l}");
        assert_eq!(
            m.get(&k).copied(),
            Some(svc[i] as f64),
            "{k}
{body}"
        );
        let k = format!(
            r#"uvs_server_{n}_total{{proto="tcp",vip="192.0.2.10",port="80",server="203.0.113.11:80"}}"#
        );
        assert_eq!(
            m.get(&k).copied(),
            Some(r1[i] as f64),
            "{k}
{body}"
        );
    }
    // The totals over every service (one here), as /proc/net/ip_vs_stats.
    for (i, n) in names.iter().enumerate() {
        let k = format!("uvs_total_{n}_total");
        assert_eq!(m.get(&k).copied(), Some(svc[i] as f64), "{k}\n{body}");
    }
    assert_eq!(s.d.counter("total.connections").unwrap(), svc[0]);
    // The control thread's counters (resolver; AF_XDP's under --io af_xdp).
    assert!(m.keys().any(|k| k.starts_with("uvs_resolver_")), "{body}");
    if common::uses_af_xdp(&s.d) {
        assert!(m.contains_key("uvs_xdp_steered_total"), "{body}");
    }
    assert!(
        m.contains_key(r#"uvs_drops_total{reason="filtered"}"#),
        "{body}"
    );
    assert!(m.contains_key("uvs_connection_table_entries"), "{body}");
    assert!(
        m.keys().any(|k| k.starts_with("uvs_hook_packets_total{")),
        "{body}"
    );
    // `uvs stats --json` has what `uvs stats` prints.
    let text = s.d.call(&["stats"]).unwrap().stdout;
    let j: serde_json::Value =
        serde_json::from_str(&s.d.call(&["stats", "--json"]).unwrap().stdout).expect("JSON");
    for l in text.lines().filter(|l| !l.starts_with("hook.")) {
        let (k, v) = l.split_once(' ').expect("name value");
        assert_eq!(
            j["counters"][k].as_u64(),
            Some(v.parse().unwrap()),
            "{k}
{text}
{j}"
        );
    }
    let hooks: Vec<&str> = text.lines().filter(|l| l.starts_with("hook.")).collect();
    assert_eq!(j["hooks"].as_array().map(Vec::len), Some(hooks.len()));
    for (h, l) in j["hooks"].as_array().unwrap().iter().zip(&hooks) {
        let want = format!(
            "{} seen {} dropped {} stolen {}",
            h["hook"].as_str().unwrap(),
            h["seen"],
            h["dropped"],
            h["stolen"]
        );
        assert!(l.starts_with(&want), "{l} vs {want}");
    }

    // `uvsadm -L -n --stats --json` parses and agrees with the text.
    let j: serde_json::Value =
        serde_json::from_str(&s.d.uvsadm("-L -n --stats --json").expect("json")).expect("JSON");
    let keys = ["conns", "inpkts", "outpkts", "inbytes", "outbytes"];
    let js = &j["services"][0];
    assert_eq!(js["address"], "192.0.2.10", "{j}");
    let got: Vec<u64> = keys
        .iter()
        .map(|k| js["stats"][k].as_u64().unwrap())
        .collect();
    assert_eq!(got, svc, "{j}\n{list}");
    let got: Vec<u64> = keys
        .iter()
        .map(|k| js["servers"][0]["stats"][k].as_u64().unwrap())
        .collect();
    assert_eq!(got, r1, "{j}\n{list}");
    // -c --json: as many entries as the text, same sources.
    let ct = s.d.uvsadm("-L -n -c").expect("-c");
    let cj: serde_json::Value =
        serde_json::from_str(&s.d.uvsadm("-L -n -c --json").expect("-c json")).expect("JSON");
    let rows = ct.lines().count() - 2;
    assert_eq!(
        cj["connections"].as_array().map(Vec::len),
        Some(rows),
        "{ct}\n{cj}"
    );
    if let Some(c0) = cj["connections"].as_array().and_then(|a| a.first()) {
        assert!(ct.contains(c0["source"].as_str().unwrap()), "{ct}\n{cj}");
    }

    // -Z on the service zeroes it and its servers; traffic counts again.
    s.d.uvsadm("-Z -t 192.0.2.10:80").expect("-Z");
    let z = s.d.uvsadm("-L -n --stats").expect("list");
    assert_eq!(row(&z, "TCP  192.0.2.10:80"), vec![0; 5], "{z}");
    assert_eq!(row(&z, "-> 203.0.113.11:80"), vec![0; 5], "{z}");
    let t = requests(&s, 10);
    assert_eq!(t.failures, 0, "{t:?}");
    let l = s.d.uvsadm("-L -n --stats").expect("list");
    assert_eq!(row(&l, "TCP  192.0.2.10:80")[0], 10, "{l}");
    // -Z of everything.
    s.d.uvsadm("-Z").expect("-Z");
    let z = s.d.uvsadm("-L -n --stats").expect("list");
    assert_eq!(row(&z, "TCP  192.0.2.10:80"), vec![0; 5], "{z}");
}

#[test]
fn a_steady_stream_reads_as_its_rate() {
    if !root_or_skip("a_steady_stream_reads_as_its_rate") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("r");
    // Paced at 500 connections/s for 10 s (bounded in count and time);
    // the rate actually achieved is what the estimator must approach.
    const RATE: u64 = 500;
    const SECS: u64 = 10;
    let (sent, secs) = netns::run_in(&s.lab.ns("c"), move || {
        let vip: SocketAddr = "192.0.2.10:80".parse().unwrap();
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < RATE * SECS && start.elapsed() < Duration::from_secs(SECS + 5) {
            let due = start + Duration::from_micros(sent * 1_000_000 / RATE);
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            if lab::tcp_request(vip, Duration::from_secs(2)).is_ok() {
                sent += 1;
            }
        }
        (sent, start.elapsed().as_secs_f64())
    })
    .expect("client namespace");
    let list = s.d.uvsadm("-L -n --rate").expect("list");
    let cps = row(&list, "TCP  192.0.2.10:80")[0] as f64;
    let achieved = sent as f64 / secs;
    // After 4 to 5 intervals of 2 s at a steady rate the estimate is
    // 1 - (3/4)^n of it: 68% to 76%; the bound allows for the start and
    // for a client that did not hold its pace.
    assert!(
        cps >= 0.55 * achieved && cps <= 1.1 * achieved,
        "cps {cps}, client {achieved:.0}/s ({sent} in {secs:.1} s)\n{list}"
    );
    let r = row(&list, "-> 203.0.113.11:80")[0] as f64;
    assert!(r >= 0.4 * cps && r <= 0.6 * cps + 1.0, "{list}");
}

/// `worker.sleeps` and `worker.spin_caught` count how the worker waited
/// for packets in serial traffic: sleeping at once (the default), every
/// gap is a sleep and no spin catches anything; with a fixed spin far
/// longer than the gaps (`--busy-poll`), most packets are caught without a
/// sleep.
#[test]
fn worker_sleeps_and_spin_catches_are_counted() {
    if !root_or_skip("worker_sleeps_and_spin_catches_are_counted") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (tag, args) in [("w", &[][..]), ("b", &["--busy-poll", "20000"][..])] {
        let s = Setup::start(
            &format!("uvst{}{tag}", std::process::id() % 100000),
            &[],
            args,
        );
        for c in RR {
            s.d.uvsadm(c)
                .unwrap_or_else(|e| panic!("{e}\nuvs log:\n{}", s.d.log_text()));
        }
        let read = |k: &str| s.d.counter(k).unwrap_or_else(|e| panic!("{k}: {e}"));
        let (rx0, sleeps0, caught0) = (
            read("rx"),
            read("worker.sleeps"),
            read("worker.spin_caught"),
        );
        let t = requests(&s, 100);
        assert_eq!(t.failures, 0, "{t:?}\n{}", s.d.log_text());
        let rx = read("rx") - rx0;
        let sleeps = read("worker.sleeps") - sleeps0;
        let caught = read("worker.spin_caught") - caught0;
        eprintln!("{args:?}: {rx} packets, {sleeps} sleeps, {caught} caught by the spin");
        assert!(rx >= 100 * 4, "{tag}: rx {rx}");
        if args.is_empty() {
            assert_eq!(caught, 0, "no spin, nothing caught");
            assert!(sleeps >= 100, "{tag}: {sleeps} sleeps for {rx} packets");
        } else {
            assert!(caught >= 100, "{tag}: {caught} caught for {rx} packets");
            assert!(sleeps < rx / 4, "{tag}: {sleeps} sleeps for {rx} packets");
        }
    }
}

/// What the director's own stack sends on an interface is not copied into
/// uvs's RX rings: `rx.skipped_other_host` (frames a ring holds that are
/// not for this host, skipped) stays put while the director pings the
/// client 200 times. A socket's `PACKET_IGNORE_OUTGOING` stops applying
/// once it joins a fanout group; the group's own flag says it instead
/// (before it did, each echo request was copied in and skipped).
#[test]
fn the_directors_own_packets_are_not_copied_into_the_rings() {
    if !root_or_skip("the_directors_own_packets_are_not_copied_into_the_rings") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("o");
    let read = |k: &str| s.d.counter(k).unwrap_or_else(|e| panic!("{k}: {e}"));
    let skipped0 = read("rx.skipped_other_host");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &s.lab.ns("lb"), "ping", "-q", "-c", "200"])
        .args(["-i", "0.005", "-w", "10", "198.51.100.10"])
        .output()
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "ping: {text}");
    let skipped = read("rx.skipped_other_host") - skipped0;
    // A few multicast frames (IPv6 neighbour discovery) may come by.
    assert!(
        skipped < 50,
        "{skipped} frames skipped during 200 echo requests the director sent\n{text}"
    );
}
