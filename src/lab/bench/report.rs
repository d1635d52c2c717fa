//! The bench's outputs: `results.csv` (one row per figure per
//! repetition), `report.md` (medians with their spread, ratios uvs/peer,
//! every repetition, failures) and the plots of [`super::plot`].
//!
//! Medians are over repetitions; the spread is the range (min–max) of the
//! repetitions. A ratio is uvs's median over the peer's median: above 1 is
//! better for uvs on rates, below 1 on latency and times.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use super::peers::Peer;
use super::{Metric, Opts, Results};

/// The figures shown in the median and ratio tables, in order.
pub const SHOWN: [Metric; 14] = [
    Metric::ShortRps,
    Metric::LatP50Us,
    Metric::LatP99Us,
    Metric::KeepaliveRps,
    Metric::StreamGbps,
    Metric::UdpSentPps,
    Metric::UdpRecvPps,
    Metric::UdpLossPct,
    Metric::LatSleepsPerReq,
    Metric::UdpCountedPct,
    Metric::UdpSocketLossPct,
    Metric::LoadMs,
    Metric::AddMs,
    Metric::RemoveMs,
];

/// Median and range of a figure over repetitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub reps: usize,
}

/// The median of `v` (mean of the middle two for an even count).
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// The statistic of one figure of one peer at one N, if it has samples.
pub fn stat(res: &Results, peer: Peer, n: usize, metric: Metric) -> Option<Stat> {
    let mut v: Vec<f64> = res
        .samples
        .iter()
        .filter(|s| s.peer == peer && s.services == n && s.metric == metric)
        .map(|s| s.value)
        .collect();
    let reps = v.len();
    let median = median(&mut v)?;
    Some(Stat {
        median,
        min: v[0],
        max: v[reps - 1],
        reps,
    })
}

/// Digits grouped by thousands: 12345 → "12,345".
fn grouped(v: f64) -> String {
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// A figure as a person reads it (unit not included).
pub fn fmt(metric: Metric, v: f64) -> String {
    match metric {
        Metric::StreamGbps => format!("{v:.2}"),
        Metric::UdpLossPct | Metric::UdpCountedPct | Metric::UdpSocketLossPct => {
            format!("{v:.1}")
        }
        Metric::LatSleepsPerReq => format!("{v:.2}"),
        Metric::LoadMs | Metric::AddMs | Metric::RemoveMs if v < 100.0 => format!("{v:.2}"),
        _ => grouped(v),
    }
}

/// A progress line with the figures of one configuration.
pub fn one_line(figs: &[(Metric, f64)]) -> String {
    let get = |m: Metric| figs.iter().find(|(k, _)| *k == m).map(|&(_, v)| fmt(m, v));
    let mut parts = Vec::new();
    let mut put = |label: &str, m: Metric| {
        if let Some(v) = get(m) {
            parts.push(format!("{label} {v} {}", m.unit()));
        }
    };
    put("short", Metric::ShortRps);
    put("p50", Metric::LatP50Us);
    put("p99", Metric::LatP99Us);
    put("keep-alive", Metric::KeepaliveRps);
    put("stream", Metric::StreamGbps);
    put("UDP sent", Metric::UdpSentPps);
    put("received", Metric::UdpRecvPps);
    put("loss", Metric::UdpLossPct);
    put("counted", Metric::UdpCountedPct);
    put("at sockets", Metric::UdpSocketLossPct);
    put("sleeps/request", Metric::LatSleepsPerReq);
    put("load", Metric::LoadMs);
    put("add", Metric::AddMs);
    put("remove", Metric::RemoveMs);
    put("rs1", Metric::AnswersRs1);
    put("rs2", Metric::AnswersRs2);
    put("errors", Metric::Errors);
    parts.join(", ")
}

fn cell(res: &Results, peer: Peer, n: usize, m: Metric) -> String {
    match stat(res, peer, n, m) {
        Some(s) if s.reps > 1 => {
            format!("{} ({}–{})", fmt(m, s.median), fmt(m, s.min), fmt(m, s.max))
        }
        Some(s) => fmt(m, s.median),
        None if res
            .failures
            .iter()
            .any(|f| f.peer == peer && f.services == n) =>
        {
            "failed".into()
        }
        None => "—".into(),
    }
}

fn medians_md(res: &Results, opts: &Opts) -> String {
    let mut o = String::new();
    for m in SHOWN {
        let _ = writeln!(o, "### {} ({})\n", m.title(), m.unit());
        let _ = write!(o, "| services |");
        for p in &opts.peers {
            let _ = write!(o, " {p} |");
        }
        let _ = write!(o, "\n|---:|");
        for _ in &opts.peers {
            let _ = write!(o, "---:|");
        }
        o.push('\n');
        for &n in &opts.services {
            let _ = write!(o, "| {} |", grouped(n as f64));
            for &p in &opts.peers {
                let _ = write!(o, " {} |", cell(res, p, n, m));
            }
            o.push('\n');
        }
        o.push('\n');
    }
    o
}

/// The medians tables as plain text, for the end of a run.
pub fn medians_text(res: &Results, opts: &Opts) -> String {
    let mut o = String::from("\nuvs bench: medians");
    if opts.reps > 1 {
        o.push_str(" (min–max)");
    }
    o.push_str(":\n\n");
    o.push_str(&medians_md(res, opts));
    if !res.failures.is_empty() {
        o.push_str(&failures_md(res));
    }
    o
}

fn failures_md(res: &Results) -> String {
    let mut o = String::from(
        "## Failures (no figures)\n\n| peer | services | rep | why |\n|---|---:|---:|---|\n",
    );
    for f in &res.failures {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            f.peer,
            f.services,
            f.rep.map_or("all".to_string(), |r| r.to_string()),
            f.reason.replace('|', "\\|").replace('\n', " ")
        );
    }
    o.push('\n');
    o
}

fn ratios_md(res: &Results, opts: &Opts) -> String {
    let others: Vec<Peer> = opts
        .peers
        .iter()
        .copied()
        .filter(|&p| p != Peer::Uvs)
        .collect();
    if !opts.peers.contains(&Peer::Uvs) || others.is_empty() {
        return String::new();
    }
    let mut o = String::from(
        "## uvs / peer (ratio of medians)\n\nAbove 1 is better for uvs on rates; below 1 on latency and times.\n\n| figure | services |",
    );
    for p in &others {
        let _ = write!(o, " uvs / {p} |");
    }
    o.push_str("\n|---|---:|");
    for _ in &others {
        o.push_str("---:|");
    }
    o.push('\n');
    for m in SHOWN {
        // Loss and what sent; uvs's own counts have no peer to divide by.
        if matches!(
            m,
            Metric::UdpLossPct
                | Metric::UdpSentPps
                | Metric::LatSleepsPerReq
                | Metric::UdpCountedPct
                | Metric::UdpSocketLossPct
        ) {
            continue;
        }
        for &n in &opts.services {
            let _ = write!(o, "| {} | {} |", m.title(), grouped(n as f64));
            for &p in &others {
                let r = match (stat(res, Peer::Uvs, n, m), stat(res, p, n, m)) {
                    (Some(u), Some(q)) if q.median > 0.0 => format!("{:.2}", u.median / q.median),
                    _ => "—".into(),
                };
                let _ = write!(o, " {r} |");
            }
            o.push('\n');
        }
    }
    o.push('\n');
    o
}

fn every_rep_md(res: &Results) -> String {
    let mut o = String::from("## Every repetition\n\n| peer | services | rep |");
    for m in super::Metric::ALL {
        let _ = write!(o, " {} |", m.key());
    }
    o.push_str("\n|---|---:|---:|");
    for _ in super::Metric::ALL {
        o.push_str("---:|");
    }
    o.push('\n');
    let mut keys: Vec<(usize, usize, Peer)> = res
        .samples
        .iter()
        .map(|s| (s.services, s.rep, s.peer))
        .collect();
    keys.sort();
    keys.dedup();
    for (n, rep, peer) in keys {
        let _ = write!(o, "| {peer} | {n} | {rep} |");
        for m in super::Metric::ALL {
            let v = res
                .samples
                .iter()
                .find(|s| s.peer == peer && s.services == n && s.rep == rep && s.metric == m)
                .map_or("—".to_string(), |s| fmt(m, s.value));
            let _ = write!(o, " {v} |");
        }
        o.push('\n');
    }
    o.push('\n');
    o
}

/// `report.md`.
pub fn markdown(res: &Results, opts: &Opts, plots: &[PathBuf]) -> String {
    let mut o = String::from("# uvs bench\n\n");
    for l in &res.about {
        let _ = writeln!(o, "* {l}");
    }
    o.push_str(
        "\nEverything (client, director, real servers) shares this machine's cores over veth pairs: \
         compare peers within this run, not with figures from elsewhere.\n\n",
    );
    if !res.failures.is_empty() {
        o.push_str(&failures_md(res));
    }
    o.push_str("## Medians");
    if opts.reps > 1 {
        o.push_str(" (min–max over the repetitions)");
    }
    o.push_str("\n\n");
    o.push_str(&medians_md(res, opts));
    o.push_str(&ratios_md(res, opts));
    if !plots.is_empty() {
        o.push_str("## Plots\n\n");
        for p in plots {
            if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                let _ = writeln!(o, "![{name}]({name})\n");
            }
        }
    }
    o.push_str(&every_rep_md(res));
    o
}

/// `results.csv`: `peer,services,rep,metric,value,unit`.
pub fn csv(res: &Results) -> String {
    let mut o = String::from("peer,services,rep,metric,value,unit\n");
    for s in &res.samples {
        let _ = writeln!(
            o,
            "{},{},{},{},{},{}",
            s.peer,
            s.services,
            s.rep,
            s.metric.key(),
            s.value,
            s.metric.unit()
        );
    }
    o
}

/// Writes the CSV, the plots and the report into `dir`; the files written.
pub fn write_all(dir: &Path, res: &Results, opts: &Opts) -> io::Result<Vec<PathBuf>> {
    let csv_path = dir.join("results.csv");
    std::fs::write(&csv_path, csv(res))?;
    let plots = super::plot::write_plots(dir, res, opts)?;
    let md_path = dir.join("report.md");
    std::fs::write(&md_path, markdown(res, opts, &plots))?;
    let mut files = vec![csv_path, md_path];
    files.extend(plots);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::bench::{Failure, Sample};

    fn results() -> Results {
        let mut samples = Vec::new();
        for (rep, v) in [(1, 100.0), (2, 300.0), (3, 200.0)] {
            for (peer, k) in [(Peer::Iptables, 1.0), (Peer::Uvs, 2.0)] {
                samples.push(Sample {
                    peer,
                    services: 10,
                    rep,
                    metric: Metric::ShortRps,
                    value: v * k,
                });
            }
        }
        Results {
            samples,
            failures: vec![Failure {
                peer: Peer::Nftables,
                services: 10,
                rep: Some(1),
                reason: "UDP traffic not balanced".into(),
            }],
            about: vec!["test".into()],
            files: vec![],
        }
    }

    fn opts() -> Opts {
        Opts {
            peers: vec![Peer::Iptables, Peer::Nftables, Peer::Uvs],
            services: vec![10],
            ..Opts::full("uvs".into())
        }
    }

    #[test]
    fn medians_spread_and_ratios() {
        let r = results();
        let s = stat(&r, Peer::Iptables, 10, Metric::ShortRps).unwrap();
        assert_eq!((s.median, s.min, s.max, s.reps), (200.0, 100.0, 300.0, 3));
        let md = markdown(&r, &opts(), &[]);
        assert!(
            md.contains("| 10 | 200 (100–300) | failed | 400 (200–600) |"),
            "{md}"
        );
        assert!(
            md.contains("| short-connection requests/s | 10 | 2.00 | — |"),
            "{md}"
        );
        assert!(md.contains("UDP traffic not balanced"));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn csv_has_a_row_per_figure() {
        let c = csv(&results());
        assert_eq!(c.lines().count(), 7);
        assert!(c.contains("\nuvs,10,2,short_rps,600,req/s\n"));
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(1234567.4), "1,234,567");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(fmt(Metric::AddMs, 0.8412), "0.84");
    }
}
