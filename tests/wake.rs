//! How the workers' waiting and placement (`--idle-spin`, `--busy-poll`,
//! `--worker-cpus`, …) change serial latency through uvs, beside iptables
//! DNAT in the same lab: a measurement, `#[ignore]`d (it asserts nothing
//! about time; run it by hand as root):
//!
//! ```text
//! UVS_WAKE_AB='iptables||--idle-spin 50' UVS_WAKE_EXE=target/release/uvs \
//!     cargo test --test wake -- --ignored --nocapture
//! ```
//!
//! `UVS_WAKE_AB` lists sets separated by `|`: `iptables` is kube-proxy's
//! iptables DNAT in the director (no uvs); anything else is `uvs run`'s
//! arguments (an empty set is the defaults). Each round runs every set in
//! turn in one lab, so a change of the machine's load hits every set
//! alike. Per set and round it prints the p50 and p90 of `uvs bench`'s
//! serial connect+request+close test (its servers and client), and for uvs
//! the workers' sleeps and spin catches per forwarded packet (`uvs stats`)
//! and their context switches and migrations (`/proc`).
//!
//! A set `!CMD;ARGS` runs the shell command CMD once that uvs is up, with
//! `$PID` its process id (`!taskset -a -p -c 0 $PID;` pins all its threads).
//!
//! `UVS_WAKE_LOAD_CPUS=0` pins the client and the servers (the test's
//! threads) to those CPUs. `UVS_WAKE_PERF=DIR` records the scheduler's
//! wake-ups and the IPIs of the whole machine during each measurement
//! (`perf record -a`, files in DIR) and prints, per woken party (client,
//! servers, uvs workers, others) and whether it ran on the waker's CPU
//! (local) or the other (remote): how many wake-ups each request cost and
//! how long each took from the wake-up to running; and the IPIs sent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use uvs::lab;
use uvs::lab::bench::{load, peers, server};
use uvs::sys::netns;

mod common;

use common::root_or_skip;
use uvs::lab::Director;

const RR: [&str; 3] = [
    "-A -t 192.0.2.10:80 -s rr",
    "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m",
    "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m",
];

/// The calling thread's kernel id.
fn tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// `uvs bench`'s serial test (at most `n` requests, at most 20 s): the
/// p50 and p90 in µs, and the client thread's id.
fn serial(lab: &lab::Lab, n: u64) -> (u64, u64, i32) {
    netns::run_in(&lab.ns("c"), move || {
        let vip: SocketAddr = "192.0.2.10:80".parse().unwrap();
        let stop = AtomicBool::new(false);
        let me = tid();
        let r = load::latency(&[vip], n, Duration::from_secs(20), &stop).expect("latency");
        (
            r.hist.value_at_quantile(0.5),
            r.hist.value_at_quantile(0.9),
            me,
        )
    })
    .expect("client namespace")
}

/// Thread ids of this process.
fn tids(pid: u32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The uvs worker threads of process `pid`.
fn workers(pid: u32) -> Vec<i32> {
    tids(pid)
        .into_iter()
        .filter(|t| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{t}/comm"))
                .is_ok_and(|c| c.starts_with("uvs-worker"))
        })
        .collect()
}

/// Summed over `threads` of `pid`: voluntary switches, involuntary
/// switches, migrations (`/proc/PID/task/TID/sched`).
fn sched_counts(pid: u32, threads: &[i32]) -> [u64; 3] {
    let mut out = [0; 3];
    for t in threads {
        let s = std::fs::read_to_string(format!("/proc/{pid}/task/{t}/sched")).unwrap_or_default();
        for l in s.lines() {
            let mut it = l.split(':');
            let (Some(k), Some(v)) = (it.next(), it.next()) else {
                continue;
            };
            let v: u64 = v.trim().parse().unwrap_or(0);
            match k.trim() {
                "nr_voluntary_switches" => out[0] += v,
                "nr_involuntary_switches" => out[1] += v,
                "se.nr_migrations" => out[2] += v,
                _ => {}
            }
        }
    }
    out
}

/// Pins every thread of `pid` (or the calling thread, `pid` 0) to `cpus`.
fn pin(pid: u32, cpus: &[usize]) {
    let targets = if pid == 0 { vec![0] } else { tids(pid) };
    for t in targets {
        uvs::io::place::pin(t, cpus).unwrap_or_else(|e| panic!("sched_setaffinity {t}: {e}"));
    }
}

fn cpu_list(s: &str) -> Vec<usize> {
    s.split(',').filter_map(|c| c.trim().parse().ok()).collect()
}

/// Who a woken thread is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Client,
    Server,
    Worker,
    Other,
}

/// What the trace of one measurement showed.
#[derive(Debug, Default)]
struct Trace {
    /// Per woken role and whether it then ran on another CPU than the
    /// waker's (remote): the summed time from the wake-up (`sched_waking`)
    /// to running (`sched_switch` to it) in ns, and how many.
    to_run: BTreeMap<(Role, bool), (u64, u64)>,
    /// Per role: wake-ups that came before the task had switched out.
    unswitched: BTreeMap<Role, u64>,
    /// IPIs sent, by call site.
    ipis: BTreeMap<String, u64>,
}

/// Reads the trace in `file` (`perf script`).
fn trace_summary(file: &str, roles: &BTreeMap<i32, Role>) -> Trace {
    let out = std::process::Command::new("perf")
        .args(["script", "-i", file, "-F", "cpu,time,event,trace"])
        .output()
        .expect("perf script");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |l: &str, k: &str| -> Option<String> {
        let i = l.find(k)? + k.len();
        Some(l[i..].split_whitespace().next()?.to_string())
    };
    let role = |p: i32| *roles.get(&p).unwrap_or(&Role::Other);
    // Woken, not yet running: (when, the waker's CPU).
    let mut woken: BTreeMap<i32, (u64, usize)> = BTreeMap::new();
    let mut tr = Trace::default();
    for l in text.lines() {
        // "[001]  1650.500805:  sched:…"
        let Some((cpu, rest)) = l
            .trim_start()
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
        else {
            continue;
        };
        let Ok(cpu) = cpu.parse::<usize>() else {
            continue;
        };
        let Some(ts) = rest.split_whitespace().next().and_then(|t| {
            let (s, us) = t.trim_end_matches(':').split_once('.')?;
            Some(s.parse::<u64>().ok()? * 1_000_000_000 + us.parse::<u64>().ok()? * 1000)
        }) else {
            continue;
        };
        if l.contains("sched:sched_waking:") {
            if let Some(p) = field(l, " pid=").and_then(|p| p.parse().ok()) {
                woken.insert(p, (ts, cpu));
            }
        } else if l.contains("sched:sched_switch:") {
            // Woken before it had switched out (still on its CPU, about
            // to sleep): the wake-up cost no switch.
            if let Some(p) = field(l, " prev_pid=").and_then(|p| p.parse::<i32>().ok()) {
                if woken.remove(&p).is_some() {
                    *tr.unswitched.entry(role(p)).or_default() += 1;
                }
            }
            if let Some(p) = field(l, " next_pid=").and_then(|p| p.parse::<i32>().ok()) {
                if let Some((at, from)) = woken.remove(&p) {
                    let e = tr.to_run.entry((role(p), from != cpu)).or_default();
                    e.0 += ts.saturating_sub(at);
                    e.1 += 1;
                }
            }
        } else if l.contains("ipi:ipi_send_cpu:") {
            let why = field(l, "callsite=")
                .map(|c| c.split('+').next().unwrap_or("").to_string())
                .unwrap_or_default();
            *tr.ipis.entry(why).or_default() += 1;
        } else if l.contains("sched:sched_wake_idle_without_ipi:") {
            *tr.ipis
                .entry("(idle woken without IPI)".into())
                .or_default() += 1;
        }
    }
    tr
}

/// `perf record` of the machine's wake-ups and IPIs, stopped with SIGINT.
struct Perf(std::process::Child);

impl Perf {
    fn start(file: &str) -> Perf {
        let c = std::process::Command::new("perf")
            .args([
                "record",
                "-q",
                "-m",
                "16M",
                "-a",
                "-e",
                "sched:sched_waking",
                "-e",
                "sched:sched_wakeup",
                "-e",
                "sched:sched_wake_idle_without_ipi",
                "-e",
                "ipi:ipi_send_cpu",
                "-e",
                "sched:sched_switch",
                "-o",
                file,
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("perf record");
        std::thread::sleep(Duration::from_millis(500));
        Perf(c)
    }

    fn stop(mut self) {
        // SAFETY: kill with the PID of our own child; no memory passed.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

#[test]
#[ignore]
fn serial_latency_by_waiting_policy() {
    if !root_or_skip("serial_latency_by_waiting_policy") {
        return;
    }
    let sets: Vec<String> = std::env::var("UVS_WAKE_AB")
        .unwrap_or_else(|_| "|--idle-spin 50".into())
        .split('|')
        .map(str::to_string)
        .collect();
    let rounds: usize = std::env::var("UVS_WAKE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let requests: u64 = std::env::var("UVS_WAKE_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let perf_dir = std::env::var("UVS_WAKE_PERF").ok();
    if let Ok(c) = std::env::var("UVS_WAKE_LOAD_CPUS") {
        // Inherited by the threads made from here on: servers, clients.
        pin(0, &cpu_list(&c));
    }
    let exe = std::env::var("UVS_WAKE_EXE").unwrap_or_else(|_| env!("CARGO_BIN_EXE_uvs").into());
    let lab = lab::Lab::up(&format!("uvwk{}", std::process::id() % 100000), &[]).expect("lab");
    let me = std::process::id();
    let before = tids(me);
    let _s1 = server::start_in(&lab.ns("rs1"), "rs1").expect("rs1");
    let _s2 = server::start_in(&lab.ns("rs2"), "rs2").expect("rs2");
    let server_tids: Vec<i32> = tids(me)
        .into_iter()
        .filter(|t| !before.contains(t))
        .collect();
    let ipt = peers::find_tool("iptables-restore");
    let mut p50s = vec![Vec::new(); sets.len()];
    for round in 1..=rounds {
        for (k, set) in sets.iter().enumerate() {
            let is_ipt = set.trim() == "iptables";
            let d = if is_ipt {
                let svcs = peers::service_set(1, false);
                let stop = std::sync::Arc::new(AtomicBool::new(false));
                let prog = ipt.as_ref().expect("iptables-restore");
                peers::run_tool(
                    &lab.ns("lb"),
                    prog,
                    &[],
                    peers::iptables_full(&svcs),
                    Duration::from_secs(30),
                    &stop,
                )
                .expect("iptables rules");
                None
            } else {
                // `!CMD;ARGS`: CMD (a shell command, `$PID` uvs's process)
                // runs once uvs is up: `!chrt -f -a -p 1 $PID;` for example.
                let (cmd, args) = match set.strip_prefix('!') {
                    Some(r) => r
                        .split_once(';')
                        .map_or((Some(r), ""), |(c, a)| (Some(c), a)),
                    None => (None, set.as_str()),
                };
                let args: Vec<&str> = args.split_whitespace().collect();
                let d = Director::start(&lab, std::path::Path::new(&exe), &args).expect("uvs run");
                if let Some(c) = cmd {
                    let st = std::process::Command::new("sh")
                        .args(["-c", c])
                        .env("PID", d.pid().to_string())
                        .status()
                        .expect("sh");
                    assert!(st.success(), "{c}: {st}");
                }
                for c in RR {
                    d.uvsadm(c).expect("service");
                }
                Some(d)
            };
            // Warm: neighbours resolved, the servers' first threads made.
            let _ = serial(&lab, 50);
            let read = |k: &str| d.as_ref().and_then(|d| d.counter(k).ok()).unwrap_or(0);
            let pid = d.as_ref().map_or(0, |d| d.pid());
            let ws = workers(pid);
            let (rx0, sl0, ca0) = (
                read("rx"),
                read("worker.sleeps"),
                read("worker.spin_caught"),
            );
            let s0 = sched_counts(pid, &ws);
            let file = perf_dir
                .as_ref()
                .map(|dir| format!("{dir}/wake-r{round}-s{k}.data"));
            let perf = file.as_deref().map(Perf::start);
            let (p50, p90, client) = serial(&lab, requests);
            if let Some(p) = perf {
                p.stop();
            }
            p50s[k].push(p50);
            let mut line = format!("round {round} [{set}]: p50 {p50} µs, p90 {p90} µs");
            if d.is_some() {
                let rx = (read("rx") - rx0).max(1) as f64;
                let (sl, ca) = (
                    read("worker.sleeps") - sl0,
                    read("worker.spin_caught") - ca0,
                );
                let s1 = sched_counts(pid, &ws);
                line += &format!(
                    ", per packet: sleeps {:.3}, caught {:.3}, vol sw {:.3}, invol sw {:.3}, migrations {:.3}",
                    sl as f64 / rx,
                    ca as f64 / rx,
                    (s1[0] - s0[0]) as f64 / rx,
                    (s1[1] - s0[1]) as f64 / rx,
                    (s1[2] - s0[2]) as f64 / rx,
                );
            }
            println!("{line}");
            if let Some(f) = &file {
                let mut roles: BTreeMap<i32, Role> = BTreeMap::new();
                roles.insert(client, Role::Client);
                for t in &server_tids {
                    roles.insert(*t, Role::Server);
                }
                for t in &ws {
                    roles.insert(*t, Role::Worker);
                }
                let tr = trace_summary(f, &roles);
                let n = requests as f64;
                let mut s = String::from("    woken per request, then running after mean µs:");
                for ((r, remote), (sum, c)) in &tr.to_run {
                    let at = if *remote { "remote" } else { "local" };
                    s += &format!(
                        " {r:?} {at} {:.2} after {:.1}",
                        *c as f64 / n,
                        *sum as f64 / (*c).max(1) as f64 / 1000.0
                    );
                }
                s += "\n    woken before switching out, per request:";
                for (r, c) in &tr.unswitched {
                    s += &format!(" {r:?} {:.2}", *c as f64 / n);
                }
                s += "\n    IPIs per request:";
                for (why, c) in &tr.ipis {
                    s += &format!(" {why} {:.2}", *c as f64 / n);
                }
                println!("{s}");
            }
            if is_ipt {
                // An empty nat table: the next set starts clean.
                let stop = std::sync::Arc::new(AtomicBool::new(false));
                peers::run_tool(
                    &lab.ns("lb"),
                    ipt.as_ref().unwrap(),
                    &[],
                    "*nat\nCOMMIT\n".into(),
                    Duration::from_secs(30),
                    &stop,
                )
                .expect("iptables flush");
            }
            drop(d);
        }
    }
    for (set, mut v) in sets.iter().zip(p50s) {
        v.sort_unstable();
        println!(
            "[{set}]: median p50 over {rounds} rounds {} µs (min {}, max {})",
            v[v.len() / 2],
            v[0],
            v[v.len() - 1]
        );
    }
}

/// The CPUs worker thread `t` of `pid` may run on (`Cpus_allowed_list`).
fn allowed(pid: u32, t: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{t}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// `--worker-cpus` pins each worker to its CPU, `--fanout cpu` pins worker
/// k to CPU k; both forward every request.
#[test]
fn pinned_workers_run_where_told_and_forward() {
    if !root_or_skip("pinned_workers_run_where_told_and_forward") {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let last = (cpus - 1).to_string();
    let sets: [(&str, Vec<&str>, Vec<String>); 2] = [
        ("p", vec!["--worker-cpus", &last], vec![last.clone()]),
        (
            "f",
            vec!["--workers", "2", "--fanout", "cpu"],
            vec!["0".into(), (1 % cpus).to_string()],
        ),
    ];
    for (tag, args, want) in sets {
        let s = common::Setup::start(
            &format!("uvwp{}{tag}", std::process::id() % 100000),
            &[],
            &args,
        );
        for c in RR {
            s.d.uvsadm(c)
                .unwrap_or_else(|e| panic!("{e}\nuvs log:\n{}", s.d.log_text()));
        }
        let pid = s.d.pid();
        let mut ws = workers(pid);
        // uvs-worker-0, uvs-worker-1, …
        ws.sort_by_key(|t| std::fs::read_to_string(format!("/proc/{pid}/task/{t}/comm")).ok());
        let got: Vec<String> = ws.iter().map(|&t| allowed(pid, t)).collect();
        assert_eq!(got, want, "{args:?}: the workers' CPUs");
        let t = netns::run_in(&s.lab.ns("c"), || {
            lab::tcp_requests(
                "192.0.2.10:80".parse::<SocketAddr>().unwrap(),
                100,
                Duration::from_secs(30),
            )
        })
        .expect("client namespace");
        assert_eq!(t.failures, 0, "{args:?}: {t:?}\n{}", s.d.log_text());
        assert_eq!(t.total(), 100, "{args:?}: {t:?}");
    }
}
