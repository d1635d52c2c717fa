//! `uvs trace`, the daemon's side: the request's words parsed into a
//! [`Request`], a trace started on the pipeline's [`Tracer`], and each
//! record written as one block of text (or one JSON object per line with
//! `--json`) to a caller's sink as it arrives, until `--count` packets
//! were shown, `--timeout` passed, or the sink fails (the client went
//! away). The control socket streams what the sink is given; see
//! [`stream`]. The blocks are formatted here, on the control side; the
//! workers only fill fixed-size records.

pub mod format;

use std::io;
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::control::socket::{Answer, Next, Reply, Stream, STREAM_CHUNK};
use crate::datapath::pipeline::Pipeline;
use crate::datapath::trace::{Prefix, TraceFilter, Tracer};

/// How often the stream wakes while idle (to see the timeout, and to
/// find a client that went away: an empty keep-alive chunk).
const IDLE: Duration = Duration::from_millis(500);

/// What `uvs trace` asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub filter: TraceFilter,
    pub count: Option<u64>,
    pub timeout: Option<Duration>,
    pub json: bool,
}

/// The usage line, for errors.
pub const USAGE: &str = "uvs trace [-p tcp|udp|sctp|icmp] [-s ADDR[/LEN]] [-d ADDR[/LEN]] \
[--sport P] [--dport P] [--count N] [--timeout S] [--json]";

fn prefix(opt: &str, v: &str) -> Result<Prefix, String> {
    Prefix::parse(v).map_err(|e| match e {
        crate::datapath::prefix::PrefixError::Address(_) => {
            format!("{opt} {v}: not an IP address[/LEN]")
        }
        crate::datapath::prefix::PrefixError::Length { max, .. } => {
            format!("{opt} {v}: prefix length must be 0..{max}")
        }
    })
}

fn number<T: std::str::FromStr>(opt: &str, v: &str, what: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{opt} {v}: expected {what}"))
}

impl Request {
    /// Parses the words after `trace` (as `uvs trace` sends them).
    pub fn parse(args: &[String]) -> Result<Request, String> {
        let mut r = Request::default();
        let mut it = args.iter();
        while let Some(opt) = it.next() {
            let opt = opt.as_str();
            if opt == "--json" {
                r.json = true;
                continue;
            }
            let v = it
                .next()
                .ok_or_else(|| format!("{opt}: a value is missing"))?
                .as_str();
            match opt {
                "-p" | "--protocol" => {
                    r.filter.proto = Some(match v {
                        "tcp" => 6,
                        "udp" => 17,
                        "sctp" => 132,
                        "icmp" | "icmpv6" | "ipv6-icmp" => 1,
                        _ => return Err(format!("-p {v}: expected tcp, udp, sctp or icmp")),
                    })
                }
                "-s" | "--source" => r.filter.src = Some(prefix(opt, v)?),
                "-d" | "--destination" => r.filter.dst = Some(prefix(opt, v)?),
                "--sport" => r.filter.sport = Some(number(opt, v, "a port 0..65535")?),
                "--dport" => r.filter.dport = Some(number(opt, v, "a port 0..65535")?),
                "--count" => {
                    let n: u64 = number(opt, v, "a count of packets (1 or more)")?;
                    if n == 0 {
                        return Err(format!(
                            "{opt} {v}: expected a count of packets (1 or more)"
                        ));
                    }
                    r.count = Some(n);
                }
                "--timeout" => {
                    let s: f64 = number(opt, v, "seconds")?;
                    if !(s > 0.0 && s.is_finite() && s < 1e9) {
                        return Err(format!("{opt} {v}: expected seconds (more than 0)"));
                    }
                    r.timeout = Some(Duration::from_secs_f64(s));
                }
                _ => return Err(format!("unknown option {opt}; usage: {USAGE}")),
            }
        }
        Ok(r)
    }

    /// The words `uvs trace` sends for this request (the inverse of
    /// [`Request::parse`]).
    pub fn words(&self) -> Vec<String> {
        let mut w = vec!["trace".to_string()];
        let mut push = |o: &str, v: String| {
            w.push(o.to_string());
            w.push(v);
        };
        if let Some(p) = self.filter.proto {
            let name = match p {
                6 => "tcp",
                17 => "udp",
                132 => "sctp",
                _ => "icmp",
            };
            push("-p", name.into());
        }
        if let Some(s) = self.filter.src {
            push("-s", s.to_string());
        }
        if let Some(d) = self.filter.dst {
            push("-d", d.to_string());
        }
        if let Some(p) = self.filter.sport {
            push("--sport", p.to_string());
        }
        if let Some(p) = self.filter.dport {
            push("--dport", p.to_string());
        }
        if let Some(n) = self.count {
            push("--count", n.to_string());
        }
        if let Some(t) = self.timeout {
            push("--timeout", t.as_secs_f64().to_string());
        }
        if self.json {
            w.push("--json".into());
        }
        w
    }
}

/// Names of the interfaces uvs is attached to, by index (for the blocks).
pub type Ifaces = Vec<(u32, String)>;

/// Runs the trace `req` on `tracer` (with `workers` rings) and hands each
/// formatted block to `out`; an empty chunk now and then while idle is a
/// keep-alive. The first chunk is a header (`tracing …`, or a JSON
/// `start` object): the trace is armed from then on. Ends at the count, the timeout or the first error from
/// `out`, with a last chunk saying how many packets were shown and how
/// many records a slow reader lost. Returns `Err` only if the trace could
/// not start (another one runs), before anything was written.
pub fn stream(
    tracer: &Tracer,
    workers: usize,
    ifaces: &Ifaces,
    req: &Request,
    out: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<(), String> {
    let sub = tracer
        .start(req.filter, req.count, workers)
        .map_err(|e| e.to_string())?;
    let end = req.timeout.map(|t| Instant::now() + t);
    let mut shown = 0u64;
    // First a header: the trace is armed from here on.
    let what = req.words()[1..]
        .iter()
        .filter(|w| *w != "--json")
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    let head = if req.json {
        format!("{}\n", serde_json::json!({"start": {"filter": what}}))
    } else if what.is_empty() {
        "tracing every packet\n\n".to_string()
    } else {
        format!("tracing {what}\n\n")
    };
    let mut ok = out(head.as_bytes()).is_ok();
    while ok && req.count.is_none_or(|c| shown < c) {
        let wait = match end {
            Some(e) => match e.checked_duration_since(Instant::now()) {
                Some(left) => left.min(IDLE),
                None => break,
            },
            None => IDLE,
        };
        ok = match sub.recv_timeout(wait) {
            Some(r) => {
                shown += 1;
                let text = if req.json {
                    format!("{}\n", format::json(&r, ifaces))
                } else {
                    format::text(&r, ifaces)
                };
                out(text.as_bytes()).is_ok()
            }
            None => out(b"").is_ok(),
        };
    }
    let (matched, lost) = (sub.matched(), sub.lost());
    drop(sub);
    if ok {
        let end = if req.json {
            format!(
                "{}\n",
                serde_json::json!({"end": {"shown": shown, "matched": matched, "lost": lost}})
            )
        } else {
            format!(
                "trace ended: {shown} packet(s) shown, {lost} record(s) lost to a slow reader\n"
            )
        };
        let _ = out(end.as_bytes());
    }
    Ok(())
}

/// The daemon's answer to `trace ARGS`: an error reply for bad words or
/// while another trace runs, else a stream of what [`stream`] writes on a
/// thread of its own (it waits for packets; the control thread must not).
pub fn answer(pl: &Arc<Pipeline>, workers: usize, ifaces: Ifaces, args: &[String]) -> Answer {
    let req = match Request::parse(args) {
        Ok(r) => r,
        Err(e) => return Answer::Done(Reply::err(format!("uvs trace: {e}"))),
    };
    if pl.trace.armed() {
        return Answer::Done(Reply::err(
            "uvs trace: a trace is already running (one at a time)",
        ));
    }
    // A few blocks in flight: a slow client stalls the trace thread, whose
    // rings then lose records (counted), never the workers.
    let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(16);
    let pl = Arc::clone(pl);
    let run = move || {
        let mut out = |b: &[u8]| {
            tx.send(b.to_vec())
                .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
        };
        if let Err(e) = stream(&pl.trace, workers, &ifaces, &req, &mut out) {
            let _ = out(format!("uvs trace: {e}\n").as_bytes());
        }
    };
    match std::thread::Builder::new()
        .name("uvs-trace".into())
        .spawn(run)
    {
        Ok(_) => Answer::Stream(Box::new(Blocks(rx))),
        Err(e) => Answer::Done(Reply::err(format!("uvs trace: cannot start: {e}"))),
    }
}

/// The control thread's side of a trace: takes what the trace thread
/// wrote, never waiting; the trace thread ends when this is dropped (the
/// client went away) at its next write.
struct Blocks(crossbeam_channel::Receiver<Vec<u8>>);

impl Stream for Blocks {
    fn next(&mut self, out: &mut String) -> Next {
        loop {
            match self.0.try_recv() {
                Ok(b) => {
                    out.push_str(&String::from_utf8_lossy(&b));
                    if out.len() >= STREAM_CHUNK {
                        return Next::More;
                    }
                }
                Err(crossbeam_channel::TryRecvError::Empty) if out.is_empty() => return Next::Idle,
                Err(crossbeam_channel::TryRecvError::Empty) => return Next::More,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    return Next::End(Reply::ok(""))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
