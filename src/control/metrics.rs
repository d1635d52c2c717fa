//! `uvs run --metrics ADDR:PORT`: the registry ([`registry`]) served as
//! Prometheus text at `GET /metrics`, by one small thread off the data
//! path.
//!
//! Contract: names are `uvs_FAMILY` (counters `uvs_FAMILY_total`), labels
//! as the registry gives them (`reason`, `vip`/`port`/`proto`/`server`,
//! `worker`, …); the encoding is `prometheus-client`'s (OpenMetrics text,
//! which Prometheus reads). Requests are served one at a time and bounded:
//! at most [`MAX_REQUEST`] bytes of request head, read within
//! [`IO_TIMEOUT`], the answer written within [`IO_TIMEOUT`]; a slow or
//! silent client is dropped when its time is up, so it delays the others
//! by at most that. Anything but `GET /metrics` gets 404/405/400.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::control::registry::Registry;

/// Largest request head read.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request, and to take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

type Labels = Vec<(String, String)>;

/// The registry in Prometheus text format.
pub fn encode(r: &Registry) -> String {
    // One family per name, in first-seen order, its samples by labels.
    let mut order: Vec<&str> = Vec::new();
    let mut fams: BTreeMap<&str, Vec<&crate::control::registry::Sample>> = BTreeMap::new();
    for s in &r.samples {
        let e = fams.entry(&s.family).or_default();
        if e.is_empty() {
            order.push(&s.family);
        }
        e.push(s);
    }
    let mut reg = prometheus_client::registry::Registry::with_prefix("uvs");
    for name in order {
        let samples = &fams[name];
        let labels = |s: &crate::control::registry::Sample| -> Labels {
            s.labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        if samples[0].gauge {
            let f = Family::<Labels, Gauge>::default();
            for s in samples {
                f.get_or_create(&labels(s))
                    .set(i64::try_from(s.value).unwrap_or(i64::MAX));
            }
            reg.register(name, samples[0].help, f);
        } else {
            let f = Family::<Labels, Counter>::default();
            for s in samples {
                f.get_or_create(&labels(s)).inc_by(s.value);
            }
            reg.register(name, samples[0].help, f);
        }
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

/// The running server; stopped and joined on drop.
#[derive(Debug)]
pub struct MetricsServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds `addr` and serves `collect()`'s registry at `/metrics` from a
/// thread of its own.
pub fn serve(
    addr: SocketAddr,
    collect: impl Fn() -> Registry + Send + 'static,
) -> std::io::Result<MetricsServer> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    let addr = l.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let sp = stop.clone();
    let thread = std::thread::Builder::new()
        .name("uvs-metrics".into())
        .spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, peer)) => {
                        if let Err(e) = answer(s, &collect) {
                            log::debug!("metrics: {peer}: {e}");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => wait_readable(&l, 100),
                    Err(e) => {
                        log::warn!("metrics: accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(MetricsServer {
        addr,
        stop,
        thread: Some(thread),
    })
}

fn wait_readable(l: &TcpListener, ms: i32) {
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(l),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd, as the count says.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// Reads one request head (bounded in size and time) and answers it.
fn answer(mut s: TcpStream, collect: &impl Fn() -> Registry) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let end = Instant::now() + IO_TIMEOUT;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut n = 0;
    let head_end = loop {
        if let Some(i) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            break Some(i);
        }
        if n == buf.len() {
            break None;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request not complete in time",
            ));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf[n..])? {
            0 => return Ok(()),
            k => n += k,
        }
    };
    let (status, body) = match head_end {
        None => ("431 Request Header Fields Too Large", String::new()),
        Some(i) => {
            let head = String::from_utf8_lossy(&buf[..i]);
            let mut first = head.lines().next().unwrap_or("").split_whitespace();
            match (first.next(), first.next()) {
                (Some("GET"), Some("/metrics")) => ("200 OK", encode(&collect())),
                (Some("GET"), Some(_)) => ("404 Not Found", "try /metrics\n".into()),
                (Some(_), Some(_)) => ("405 Method Not Allowed", String::new()),
                _ => ("400 Bad Request", String::new()),
            }
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registry {
        let mut r = Registry::default();
        r.counter(
            "drop.filtered",
            "drops",
            "Drops",
            vec![("reason", "filtered".into())],
            3,
        );
        r.counter(
            "drop.too_big",
            "drops",
            "Drops",
            vec![("reason", "too_big".into())],
            0,
        );
        r.gauge("workers", "workers", "Workers", vec![], 2);
        r
    }

    #[test]
    fn families_are_named_uvs_and_counters_end_in_total() {
        let t = encode(&reg());
        assert!(t.contains("# TYPE uvs_drops counter\n"), "{t}");
        assert!(
            t.contains("uvs_drops_total{reason=\"filtered\"} 3\n"),
            "{t}"
        );
        assert!(t.contains("uvs_drops_total{reason=\"too_big\"} 0\n"), "{t}");
        assert!(
            t.contains("# TYPE uvs_workers gauge\nuvs_workers 2\n"),
            "{t}"
        );
        assert!(t.ends_with("# EOF\n"), "{t}");
    }

    fn get(addr: SocketAddr, req: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(req).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest_and_a_silent_client_is_dropped() {
        let srv = serve("127.0.0.1:0".parse().unwrap(), reg).unwrap();
        // A client that connects and says nothing: dropped after its time.
        let silent = TcpStream::connect(srv.addr).unwrap();
        let t0 = Instant::now();
        let ok = get(srv.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(t0.elapsed() < IO_TIMEOUT + Duration::from_secs(2));
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("uvs_drops_total{reason=\"filtered\"} 3"),
            "{ok}"
        );
        drop(silent);
        let nf = get(srv.addr, b"GET / HTTP/1.1\r\n\r\n");
        assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");
        let m = get(srv.addr, b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(m.starts_with("HTTP/1.1 405"), "{m}");
        let big = vec![b'a'; MAX_REQUEST + 10];
        let b = get(srv.addr, &big);
        assert!(b.starts_with("HTTP/1.1 431") || b.is_empty(), "{b}");
    }
}
