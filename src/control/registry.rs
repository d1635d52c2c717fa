//! Every counter uvs keeps, named, in one list: the registry that `uvs
//! stats` (text), `uvs stats --json` and `/metrics` (Prometheus) all read.
//!
//! A [`Sample`] has the name `uvs stats` prints (`drop.filtered`), the
//! Prometheus family it belongs to (`drops`, exposed as `uvs_drops_total`)
//! with its labels (`reason="filtered"`), and its value. The registry is
//! built on demand on the control thread (never on the data path) from the
//! workers' counters ([`engine`]), the service table ([`services`]) and
//! whatever a backend adds: [`Registry::counter`] takes one named counter,
//! [`Registry::text_counters`] a `name value` report such as the AF_XDP
//! program's (a `drop.X` name joins the drop reasons).

use std::fmt::Write as _;

use serde_json::{json, Map, Value};
use uvs_fwd::ParseError;

use crate::control::daemon;
use crate::datapath::hooks::HookChain;
use crate::datapath::pipeline::Pipeline;
use crate::datapath::service::Services;
use crate::datapath::stats::{DropReason, Stats};

/// One named value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The name `uvs stats` prints.
    pub key: String,
    /// Prometheus family, without the `uvs_` prefix and `_total` suffix.
    pub family: String,
    pub help: &'static str,
    /// A gauge (a level), not a counter (a total that only grows).
    pub gauge: bool,
    pub labels: Vec<(&'static str, String)>,
    pub value: u64,
    /// Shown after the value in text (a hook entry's rule).
    pub note: &'static str,
    /// Part of `uvs stats` (engine counters), or only of `/metrics`
    /// (services and servers, which `uvsadm -L --stats` lists).
    pub in_stats: bool,
}

/// The samples, in a stable order.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    pub samples: Vec<Sample>,
}

impl Registry {
    /// Adds a counter `key` in `family` with `labels`.
    pub fn counter(
        &mut self,
        key: impl Into<String>,
        family: impl Into<String>,
        help: &'static str,
        labels: Vec<(&'static str, String)>,
        value: u64,
    ) {
        self.samples.push(Sample {
            key: key.into(),
            family: family.into(),
            help,
            gauge: false,
            labels,
            value,
            note: "",
            in_stats: true,
        });
    }

    /// Adds a gauge (same as [`Registry::counter`], a level).
    pub fn gauge(
        &mut self,
        key: impl Into<String>,
        family: impl Into<String>,
        help: &'static str,
        labels: Vec<(&'static str, String)>,
        value: u64,
    ) {
        self.counter(key, family, help, labels, value);
        if let Some(s) = self.samples.last_mut() {
            s.gauge = true;
        }
    }

    /// Adds every `name value` line of `text` as a counter: `drop.X` as the
    /// drop reason X, any other `a.b` as family `a_b`. Other lines (`#`
    /// comments) are ignored.
    pub fn text_counters(&mut self, text: &str) {
        for line in text.lines() {
            let Some((k, v)) = line.split_once(' ') else {
                continue;
            };
            let Ok(v) = v.trim().parse::<u64>() else {
                continue;
            };
            match k.strip_prefix("drop.") {
                Some(r) => self.counter(k, "drops", DROPS_HELP, vec![("reason", r.into())], v),
                None => self.counter(k, k.replace(['.', '-'], "_"), "uvs counter", vec![], v),
            }
        }
    }

    /// `uvs stats` text: `name value` lines; hook entries as
    /// `hook.POINT.PRIO.FUNC seen N dropped N stolen N  # rule`.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for x in self.samples.iter().filter(|x| x.in_stats) {
            if x.family == "hook_packets" {
                let outcome = label(x, "outcome");
                match outcome {
                    "seen" => {
                        let _ = write!(s, "{} seen {}", x.key, x.value);
                    }
                    "dropped" => {
                        let _ = write!(s, " dropped {}", x.value);
                    }
                    _ => {
                        let _ = writeln!(s, " stolen {}  # {}", x.value, x.note);
                    }
                }
            } else {
                let _ = writeln!(s, "{} {}", x.key, x.value);
            }
        }
        s
    }

    /// `uvs stats --json`: the same content as [`Registry::text`]: every
    /// counter by name under `counters`, the hook entries under `hooks`.
    pub fn json(&self) -> Value {
        let mut counters = Map::new();
        let mut hooks: Vec<Value> = Vec::new();
        for x in self.samples.iter().filter(|x| x.in_stats) {
            if x.family == "hook_packets" {
                let outcome = label(x, "outcome");
                if outcome == "seen" {
                    hooks.push(json!({
                        "hook": x.key,
                        "point": label(x, "point"),
                        "priority": label(x, "priority").parse::<i64>().unwrap_or(0),
                        "function": label(x, "function"),
                        "rule": x.note,
                    }));
                }
                if let Some(Value::Object(h)) = hooks.last_mut() {
                    h.insert(outcome.to_string(), json!(x.value));
                }
            } else {
                counters.insert(x.key.clone(), json!(x.value));
            }
        }
        json!({ "counters": counters, "hooks": hooks })
    }
}

fn label<'a>(s: &'a Sample, k: &str) -> &'a str {
    s.labels
        .iter()
        .find(|(n, _)| *n == k)
        .map_or("", |(_, v)| v.as_str())
}

const DROPS_HELP: &str = "Packets uvs dropped, by reason";

/// The engine's counters: totals, drops and parse errors by reason, hook
/// entries, and per worker the packets received and sent.
pub fn engine(r: &mut Registry, stats: &Stats, hooks: &HookChain) {
    let sum = |f: &dyn Fn(&crate::datapath::stats::WorkerStats) -> u64| -> u64 {
        stats.workers.iter().map(|w| f(w)).sum()
    };
    use std::sync::atomic::Ordering::Relaxed;
    let totals: [(&str, &str, &'static str, u64); 12] = [
        (
            "rx",
            "received_packets",
            "Packets received from the rings",
            sum(&|w| w.rx.load(Relaxed)),
        ),
        (
            "tx",
            "sent_packets",
            "Packets transmitted",
            sum(&|w| w.tx.load(Relaxed)),
        ),
        (
            "passed_to_kernel",
            "passed_to_kernel_packets",
            "Packets left to the kernel (not uvs's)",
            sum(&|w| w.passed.load(Relaxed)),
        ),
        (
            "icmp_sent",
            "icmp_sent",
            "ICMP errors sent",
            sum(&|w| w.icmp_sent.load(Relaxed)),
        ),
        (
            "icmp_rate_limited",
            "icmp_rate_limited",
            "ICMP errors not sent: over the rate limit",
            sum(&|w| w.icmp_limited.load(Relaxed)),
        ),
        (
            "rx.skipped_vlan",
            "rx_skipped_vlan",
            "Frames skipped: the kernel had moved their VLAN tag out (seen again on the VLAN device)",
            sum(&|w| w.skipped_vlan.load(Relaxed)),
        ),
        (
            "rx.skipped_other_host",
            "rx_skipped_other_host",
            "Frames skipped: not addressed to this host",
            sum(&|w| w.skipped_other_host.load(Relaxed)),
        ),
        (
            "tx.ring_full_fallback",
            "tx_ring_full_fallback",
            "Frames sent by sendmmsg because their TX ring was full (not lost)",
            sum(&|w| w.tx_ring_fallback.load(Relaxed)),
        ),
        (
            "worker.sleeps",
            "worker_sleeps",
            "Times a worker found its sources empty and slept (each costs a wake-up)",
            sum(&|w| w.sleeps.load(Relaxed)),
        ),
        (
            "worker.spin_caught",
            "worker_spin_caught",
            "Idle periods a worker's spin ended by finding a packet instead of sleeping",
            sum(&|w| w.spin_caught.load(Relaxed)),
        ),
        (
            "connection_races",
            "connection_races",
            "New connections another worker created first",
            sum(&|w| w.conn_races.load(Relaxed)),
        ),
        (
            "connections",
            "connections_created",
            "Connections created",
            sum(&|w| w.conns.load(Relaxed)),
        ),
    ];
    for (key, fam, help, v) in totals {
        r.counter(key, fam, help, vec![], v);
    }
    let (lines, dropped) = crate::datapath::tables::log::totals();
    r.counter(
        "log.lines",
        "log_lines",
        "LOG rules' lines written (stderr)",
        vec![],
        lines,
    );
    r.counter(
        "log.dropped",
        "log_dropped",
        "LOG rules' lines not written: the worker's log queue was full",
        vec![],
        dropped,
    );
    for d in DropReason::ALL {
        r.counter(
            format!("drop.{}", d.name()),
            "drops",
            DROPS_HELP,
            vec![("reason", d.name().into())],
            stats.drops(d),
        );
    }
    for e in ParseError::ALL {
        r.counter(
            format!("parse.{}", e.name()),
            "parse_errors",
            "Unparseable packets, by reason (all counted in drop.malformed)",
            vec![("reason", e.name().into())],
            sum(&|w| w.parse[e.index()].load(Relaxed)),
        );
    }
    for e in hooks.all() {
        let i = e.index;
        let key = format!("hook.{}.{}.{}", e.point.name(), e.priority, e.func.name());
        let per: [(&str, u64); 3] = [
            ("seen", sum(&|w| w.hook_seen[i].load(Relaxed))),
            ("dropped", sum(&|w| w.hook_dropped[i].load(Relaxed))),
            ("stolen", sum(&|w| w.hook_stolen[i].load(Relaxed))),
        ];
        for (outcome, v) in per {
            r.samples.push(Sample {
                key: key.clone(),
                family: "hook_packets".into(),
                help: "Packets each hook entry saw, dropped and stole (took for transmission)",
                gauge: false,
                labels: vec![
                    ("point", e.point.name().into()),
                    ("priority", e.priority.to_string()),
                    ("function", e.func.name().into()),
                    ("outcome", outcome.into()),
                ],
                value: v,
                note: e.why,
                in_stats: true,
            });
        }
    }
    for (n, w) in stats.workers.iter().enumerate() {
        let l = || vec![("worker", n.to_string())];
        r.counter(
            format!("worker.{n}.rx"),
            "worker_received_packets",
            "Packets received, per worker",
            l(),
            w.rx.load(Relaxed),
        );
        r.counter(
            format!("worker.{n}.tx"),
            "worker_sent_packets",
            "Packets transmitted, per worker",
            l(),
            w.tx.load(Relaxed),
        );
        r.counter(
            format!("worker.{n}.rx_queue_full"),
            "worker_rx_queue_full_drops",
            "Packets the kernel dropped on this worker's full RX ring",
            l(),
            w.drops[DropReason::RxQueueFull as usize].load(Relaxed),
        );
    }
}

/// Per service and real server: the traffic counters and rates
/// (`uvsadm -L --stats`/`--rate`) and the servers' connection counts;
/// labels `proto`, `vip`, `port` and, for servers, `server`. Only in
/// `/metrics` (`in_stats` false). O(services + servers).
pub fn services(r: &mut Registry, snap: &Services, stats: &Stats) {
    let mut svcs: Vec<_> = snap.iter().collect();
    svcs.sort_by_key(|s| (s.proto, s.addr, s.port));
    for s in svcs {
        let proto = match s.proto {
            6 => "tcp",
            17 => "udp",
            132 => "sctp",
            _ => "other",
        };
        let base = vec![
            ("proto", proto.to_string()),
            ("vip", s.addr.to_string()),
            ("port", s.port.to_string()),
        ];
        let key = format!("service.{proto}.{}", addr_port(s.addr, s.port));
        traffic(r, &key, "service", &base, stats, s.stats.id);
        for d in &s.dests {
            let mut l = base.clone();
            l.push(("server", addr_port(d.addr, d.port)));
            let dkey = format!("{key}.{}", addr_port(d.addr, d.port));
            traffic(r, &dkey, "server", &l, stats, daemon::dest_slot(d));
            let conns: [(&str, &'static str, u32); 3] = [
                (
                    "active",
                    "Active (established) connections",
                    d.active_conns(),
                ),
                (
                    "inactive",
                    "Inactive connections (every other state)",
                    d.inactive_conns(),
                ),
                ("persistent", "Persistence templates", d.persistent_conns()),
            ];
            for (what, help, v) in conns {
                r.gauge(
                    format!("{dkey}.{what}_connections"),
                    format!("server_{what}_connections"),
                    help,
                    l.clone(),
                    u64::from(v),
                );
                if let Some(x) = r.samples.last_mut() {
                    x.in_stats = false;
                }
            }
        }
    }
}

fn addr_port(a: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(a, port).to_string()
}

/// One service's or server's counters and rates.
fn traffic(
    r: &mut Registry,
    key: &str,
    who: &str,
    labels: &[(&'static str, String)],
    stats: &Stats,
    id: u32,
) {
    let slot = daemon::slot_stats(stats, id);
    let counters: [(&str, &'static str, u64); 5] = [
        ("connections", "Connections scheduled", slot.conns),
        ("in_packets", "Packets client to server", slot.inpkts),
        ("out_packets", "Packets server to client", slot.outpkts),
        (
            "in_bytes",
            "Bytes client to server (IP lengths)",
            slot.inbytes,
        ),
        (
            "out_bytes",
            "Bytes server to client (IP lengths)",
            slot.outbytes,
        ),
    ];
    for (what, help, v) in counters {
        r.counter(
            format!("{key}.{what}"),
            format!("{who}_{what}"),
            help,
            labels.to_vec(),
            v,
        );
        if let Some(x) = r.samples.last_mut() {
            x.in_stats = false;
        }
    }
    let rates: [(&str, &'static str, u64); 5] = [
        (
            "cps",
            "Connections per second (the 2 s estimator)",
            slot.cps,
        ),
        (
            "in_pps",
            "Packets per second in (the 2 s estimator)",
            slot.inpps,
        ),
        (
            "out_pps",
            "Packets per second out (the 2 s estimator)",
            slot.outpps,
        ),
        (
            "in_bps",
            "Bytes per second in (the 2 s estimator)",
            slot.inbps,
        ),
        (
            "out_bps",
            "Bytes per second out (the 2 s estimator)",
            slot.outbps,
        ),
    ];
    for (what, help, v) in rates {
        r.gauge(
            format!("{key}.{what}"),
            format!("{who}_rate_{what}"),
            help,
            labels.to_vec(),
            v,
        );
        if let Some(x) = r.samples.last_mut() {
            x.in_stats = false;
        }
    }
}

/// What the registry is built from.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    pub pipeline: &'a Pipeline,
    pub stats: &'a Stats,
    /// The nftables guard is installed (AF_PACKET).
    pub guard: bool,
    /// `name value` lines a backend adds (the AF_XDP program's counters).
    pub extra: &'a str,
    /// Per service and server too (`/metrics`).
    pub services: bool,
    /// `--ring-frames`.
    pub ring_frames: usize,
}

/// Every counter, from `src`.
pub fn collect(src: &Sources<'_>) -> Registry {
    let mut r = Registry::default();
    engine(&mut r, src.stats, &src.pipeline.hooks);
    r.text_counters(src.extra);
    if src.guard {
        // Unreadable (the table is being replaced): left out this time.
        if let Ok(c) = crate::sys::guard::counters() {
            guard(&mut r, &c);
        }
    }
    r.gauge(
        "connection_table.entries",
        "connection_table_entries",
        "Entries in the connection table (connections and templates)",
        vec![],
        src.pipeline.conns.len() as u64,
    );
    crate::control::knobs::samples(&mut r, &src.pipeline.conns);
    r.gauge(
        "workers",
        "workers",
        "Worker threads",
        vec![],
        src.stats.workers.len() as u64,
    );
    r.gauge(
        "ring_frames",
        "ring_frames",
        "Frames per RX ring (AF_PACKET)",
        vec![],
        src.ring_frames as u64,
    );
    let snap = src.pipeline.services.load_full();
    totals(&mut r, &snap, src.stats);
    if src.services {
        services(&mut r, &snap, src.stats);
    }
    r
}

/// The totals over every service, as the kernel's `/proc/net/ip_vs_stats`
/// shows them: connections, packets and bytes each way, and their rates
/// (the sum of the services' estimators, which is the estimator of the
/// sum: its averaging is linear). A deleted service's share leaves the
/// totals with it. In `uvs stats` as `total.*` and in `/metrics` as
/// `uvs_total_*`. O(services).
pub fn totals(r: &mut Registry, snap: &Services, stats: &Stats) {
    let mut t = crate::control::ctl::Stats::default();
    for s in snap.iter() {
        let x = daemon::slot_stats(stats, s.stats.id);
        t.conns += x.conns;
        t.inpkts += x.inpkts;
        t.outpkts += x.outpkts;
        t.inbytes += x.inbytes;
        t.outbytes += x.outbytes;
        t.cps += x.cps;
        t.inpps += x.inpps;
        t.outpps += x.outpps;
        t.inbps += x.inbps;
        t.outbps += x.outbps;
    }
    let counters: [(&str, &'static str, u64); 5] = [
        (
            "connections",
            "Connections scheduled, all services",
            t.conns,
        ),
        (
            "in_packets",
            "Packets client to server, all services",
            t.inpkts,
        ),
        (
            "out_packets",
            "Packets server to client, all services",
            t.outpkts,
        ),
        (
            "in_bytes",
            "Bytes client to server, all services",
            t.inbytes,
        ),
        (
            "out_bytes",
            "Bytes server to client, all services",
            t.outbytes,
        ),
    ];
    for (what, help, v) in counters {
        r.counter(
            format!("total.{what}"),
            format!("total_{what}"),
            help,
            vec![],
            v,
        );
    }
    let rates: [(&str, &'static str, u64); 5] = [
        ("cps", "Connections per second, all services", t.cps),
        ("in_pps", "Packets per second in, all services", t.inpps),
        ("out_pps", "Packets per second out, all services", t.outpps),
        ("in_bps", "Bytes per second in, all services", t.inbps),
        ("out_bps", "Bytes per second out, all services", t.outbps),
    ];
    for (what, help, v) in rates {
        r.gauge(
            format!("total.{what}"),
            format!("total_rate_{what}"),
            help,
            vec![],
            v,
        );
    }
}

/// The kernel guard's counters (packets kept from the director's own stack
/// because uvs handles them), as `guard.KIND`.
pub fn guard(r: &mut Registry, c: &crate::sys::guard::Counters) {
    for (what, v) in [
        ("service", c.service),
        ("nat_reply", c.nat_reply),
        ("nat_icmp", c.nat_icmp),
    ] {
        r.counter(
            format!("guard.{what}"),
            "guard_kept_packets",
            "Packets the kernel guard kept from the director's own stack (uvs handles them)",
            vec![("kind", what.into())],
            v,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_keeps_the_stats_format_and_json_has_the_same_content() {
        let stats = Stats::new(2);
        let hooks = HookChain::default();
        let mut r = Registry::default();
        engine(&mut r, &stats, &hooks);
        r.text_counters("xdp.steered 5\ndrop.xdp_no_socket 2\n# comment\n");
        let text = r.text();
        assert!(
            text.starts_with("rx 0\ntx 0\npassed_to_kernel 0\n"),
            "{text}"
        );
        assert!(text.contains("\ndrop.rx_queue_full 0\n"), "{text}");
        assert!(text.contains("\ndrop.xdp_no_socket 2\n"), "{text}");
        let hook = text.lines().find(|l| l.starts_with("hook.")).unwrap();
        assert!(hook.contains(" seen 0 dropped 0 stolen 0  # "), "{hook}");
        let j = r.json();
        let c = j["counters"].as_object().unwrap();
        // Every non-hook text line is a JSON counter with the same value.
        for l in text.lines().filter(|l| !l.starts_with("hook.")) {
            let (k, v) = l.split_once(' ').unwrap();
            assert_eq!(c[k], json!(v.parse::<u64>().unwrap()), "{k}");
        }
        let hooks_json = j["hooks"].as_array().unwrap();
        assert_eq!(
            hooks_json.len(),
            text.lines().filter(|l| l.starts_with("hook.")).count()
        );
        assert_eq!(hooks_json[0]["stolen"], json!(0));
    }
}
