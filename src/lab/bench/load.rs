//! The bench's load generator, run in the client namespace against the
//! servers of [`super::server`]. Every test is bounded in time and in count,
//! and returns early when the stop flag is raised (SIGINT).
//!
//! A test aims at a list of targets: one VIP for a load balancer, or the two
//! real servers for plain routing, which the client then balances itself
//! (connection or socket `k` goes to target `k mod len`). Answers are
//! counted per real server, which is how the bench sees balance.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers per real server (`rs1`, `rs2`) and failed requests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Answers {
    /// Index 0 is `rs1`, 1 is `rs2`.
    pub by_server: [u64; 2],
    pub failures: u64,
    pub first_error: Option<String>,
}

impl Answers {
    fn ok(&mut self, server: usize) {
        self.by_server[server] += 1;
    }
    fn fail(&mut self, e: impl std::fmt::Display) {
        self.failures += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
    /// All answers.
    pub fn total(&self) -> u64 {
        self.by_server.iter().sum()
    }
    /// Adds another tally to this one.
    pub fn merge(&mut self, o: &Answers) {
        for (a, b) in self.by_server.iter_mut().zip(o.by_server) {
            *a += b;
        }
        self.failures += o.failures;
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
    }
}

/// The real server an answer names: `rs1…` is 0, `rs2…` is 1.
fn server_of(answer: &[u8]) -> Option<usize> {
    match answer {
        [b'r', b's', b'1', ..] => Some(0),
        [b'r', b's', b'2', ..] => Some(1),
        _ => None,
    }
}

/// A request-rate test's outcome.
#[derive(Debug, Clone)]
pub struct RateRun {
    pub answers: Answers,
    pub elapsed: Duration,
}

impl RateRun {
    /// Answered requests per second.
    pub fn per_sec(&self) -> f64 {
        self.answers.total() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug)]
enum St {
    /// Waiting to (re)connect at this time.
    Idle(Instant),
    Connecting,
    Reading,
}

#[derive(Debug)]
struct Slot {
    s: Option<TcpStream>,
    st: St,
    since: Instant,
    got: [u8; 16],
    len: usize,
}

/// Request rate with `conns` connections in parallel for `dur` (at most
/// `max` answers), on `threads` client threads. Short connections
/// (`keepalive == false`): connect, send `Q`, read the answer, close, again.
/// Keep-alive: each connection stays open and asks again.
pub fn tcp_rate(
    targets: &[SocketAddr],
    conns: usize,
    threads: usize,
    keepalive: bool,
    dur: Duration,
    max: u64,
    stop: &AtomicBool,
) -> io::Result<RateRun> {
    let threads = threads.clamp(1, conns.max(1));
    let start = Instant::now();
    let results: Vec<io::Result<Answers>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let n = conns / threads + usize::from(t < conns % threads);
                sc.spawn(move || {
                    rate_thread(
                        targets,
                        t,
                        n,
                        keepalive,
                        start + dur,
                        max / threads as u64,
                        stop,
                    )
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("client thread panicked")))
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let mut answers = Answers::default();
    for r in results {
        answers.merge(&r?);
    }
    Ok(RateRun { answers, elapsed })
}

fn rate_thread(
    targets: &[SocketAddr],
    thread: usize,
    conns: usize,
    keepalive: bool,
    end: Instant,
    max: u64,
    stop: &AtomicBool,
) -> io::Result<Answers> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut a = Answers::default();
    let now = Instant::now();
    let mut slots: Vec<Slot> = (0..conns)
        .map(|_| Slot {
            s: None,
            st: St::Idle(now),
            since: now,
            got: [0; 16],
            len: 0,
        })
        .collect();
    // Which target the next new connection goes to (plain routing's own
    // round robin); threads start at different targets.
    let mut next = thread;
    let mut last_scan = now;
    while Instant::now() < end && a.total() < max && !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for (k, sl) in slots.iter_mut().enumerate() {
            if let St::Idle(at) = sl.st {
                if at <= now {
                    let t = targets[next % targets.len()];
                    next += 1;
                    connect(&poll, k, sl, t, &mut a);
                }
            }
        }
        match poll.poll(&mut events, Some(Duration::from_millis(5))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if let Some(sl) = slots.get_mut(ev.token().0) {
                on_event(sl, keepalive, &mut a);
            }
        }
        // A request stuck past its timeout (a lost SYN waits a second
        // before the kernel retries) fails and its slot starts over.
        let now = Instant::now();
        if now.duration_since(last_scan) > Duration::from_millis(100) {
            last_scan = now;
            for sl in slots.iter_mut() {
                if !matches!(sl.st, St::Idle(_)) && now.duration_since(sl.since) > REQUEST_TIMEOUT {
                    a.fail("request timed out");
                    sl.s = None;
                    sl.st = St::Idle(now);
                }
            }
        }
    }
    Ok(a)
}

fn connect(poll: &Poll, k: usize, sl: &mut Slot, t: SocketAddr, a: &mut Answers) {
    let now = Instant::now();
    let r = TcpStream::connect(t).and_then(|mut s| {
        s.set_nodelay(true)?;
        poll.registry()
            .register(&mut s, Token(k), Interest::READABLE | Interest::WRITABLE)?;
        Ok(s)
    });
    match r {
        Ok(s) => {
            sl.s = Some(s);
            sl.st = St::Connecting;
            sl.since = now;
            sl.len = 0;
        }
        Err(e) => {
            // Out of ports or addresses: retry shortly, counted.
            a.fail(format!("connect: {e}"));
            sl.s = None;
            sl.st = St::Idle(now + Duration::from_millis(1));
        }
    }
}

fn on_event(sl: &mut Slot, keepalive: bool, a: &mut Answers) {
    let Some(s) = sl.s.as_mut() else { return };
    if let St::Connecting = sl.st {
        if let Ok(Some(e)) | Err(e) = s.take_error() {
            a.fail(format!("connect: {e}"));
            sl.s = None;
            sl.st = St::Idle(Instant::now());
            return;
        }
        match s.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(e) => {
                a.fail(format!("connect: {e}"));
                sl.s = None;
                sl.st = St::Idle(Instant::now());
                return;
            }
        }
        match s.write(b"Q") {
            Ok(1) => sl.st = St::Reading,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            r => {
                a.fail(format!("send: {r:?}"));
                sl.s = None;
                sl.st = St::Idle(Instant::now());
                return;
            }
        }
    }
    loop {
        match s.read(&mut sl.got[sl.len..]) {
            Ok(0) => {
                a.fail("closed before the answer");
                break;
            }
            Ok(n) => {
                sl.len += n;
                if !sl.got[..sl.len].contains(&b'\n') {
                    if sl.len == sl.got.len() {
                        a.fail("answer too long");
                        break;
                    }
                    continue;
                }
                match server_of(&sl.got[..sl.len]) {
                    Some(i) => a.ok(i),
                    None => {
                        a.fail(format!("bad answer {:?}", &sl.got[..sl.len]));
                        break;
                    }
                }
                if !keepalive {
                    break;
                }
                sl.len = 0;
                sl.since = Instant::now();
                match s.write(b"Q") {
                    Ok(1) => return,
                    r => {
                        a.fail(format!("send: {r:?}"));
                        break;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                a.fail(format!("read: {e}"));
                break;
            }
        }
    }
    // Done (answered or failed): the client closes first, then reconnects.
    sl.s = None;
    sl.st = St::Idle(Instant::now());
}

/// One serial connect + `Q` + answer + close; the answering server.
fn one_request(t: SocketAddr) -> io::Result<usize> {
    let mut s = std::net::TcpStream::connect_timeout(&t, REQUEST_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    s.write_all(b"Q")?;
    let mut got = [0u8; 16];
    let mut len = 0;
    while !got[..len].contains(&b'\n') {
        if len == got.len() {
            return Err(io::Error::other("answer too long"));
        }
        match s.read(&mut got[len..])? {
            0 => return Err(io::Error::other("closed before the answer")),
            n => len += n,
        }
    }
    server_of(&got[..len]).ok_or_else(|| io::Error::other(format!("bad answer {:?}", &got[..len])))
}

/// Serial requests until `want` answers or `dur` passed: readiness probe
/// (it also fills the neighbour caches before anything is timed).
pub fn probe(targets: &[SocketAddr], want: u64, dur: Duration, stop: &AtomicBool) -> Answers {
    let mut a = Answers::default();
    let end = Instant::now() + dur;
    let mut k = 0;
    while a.total() < want && Instant::now() < end && !stop.load(Ordering::Relaxed) {
        match one_request(targets[k % targets.len()]) {
            Ok(i) => a.ok(i),
            Err(e) => {
                a.fail(e);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        k += 1;
    }
    a
}

/// Serial latency: connect + request + answer + close, one at a time.
#[derive(Debug, Clone)]
pub struct LatencyRun {
    /// Microseconds per request.
    pub hist: Histogram<u64>,
    pub answers: Answers,
}

/// Up to `samples` serial requests within `dur`.
pub fn latency(
    targets: &[SocketAddr],
    samples: u64,
    dur: Duration,
    stop: &AtomicBool,
) -> io::Result<LatencyRun> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let mut answers = Answers::default();
    let end = Instant::now() + dur;
    for k in 0..samples {
        if Instant::now() >= end || stop.load(Ordering::Relaxed) {
            break;
        }
        let t0 = Instant::now();
        match one_request(targets[k as usize % targets.len()]) {
            Ok(i) => {
                answers.ok(i);
                let us = t0.elapsed().as_micros().clamp(1, 60_000_000) as u64;
                hist.record(us)
                    .map_err(|e| io::Error::other(e.to_string()))?;
            }
            Err(e) => answers.fail(e),
        }
    }
    Ok(LatencyRun { hist, answers })
}

/// One TCP stream's outcome.
#[derive(Debug, Clone)]
pub struct StreamRun {
    /// Bytes the server counted.
    pub bytes: u64,
    pub elapsed: Duration,
    pub server: usize,
}

impl StreamRun {
    /// Gigabits per second that reached the server.
    pub fn gbit_per_sec(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }
}

/// One connection sending 64 KiB writes for `dur` (at most `max_bytes`),
/// then half-closing; the server answers with the bytes it received.
pub fn stream(
    t: SocketAddr,
    dur: Duration,
    max_bytes: u64,
    stop: &AtomicBool,
) -> io::Result<StreamRun> {
    let mut s = std::net::TcpStream::connect_timeout(&t, REQUEST_TIMEOUT)?;
    s.set_write_timeout(Some(Duration::from_secs(3)))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let chunk = vec![0x5au8; 64 * 1024];
    let start = Instant::now();
    s.write_all(b"S")?;
    let mut sent = 0u64;
    while start.elapsed() < dur && sent < max_bytes && !stop.load(Ordering::Relaxed) {
        s.write_all(&chunk)?;
        sent += chunk.len() as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let elapsed = start.elapsed();
    let (name, bytes) = answer
        .trim_end()
        .split_once(' ')
        .ok_or_else(|| io::Error::other(format!("bad stream answer {answer:?}")))?;
    let server = server_of(name.as_bytes())
        .ok_or_else(|| io::Error::other(format!("bad stream answer {answer:?}")))?;
    let bytes = bytes
        .parse()
        .map_err(|_| io::Error::other(format!("bad stream answer {answer:?}")))?;
    Ok(StreamRun {
        bytes,
        elapsed,
        server,
    })
}

/// A datagram flood's outcome.
#[derive(Debug, Clone)]
pub struct UdpRun {
    pub sent: u64,
    /// Answers per real server.
    pub by_server: [u64; 2],
    /// The sending period.
    pub elapsed: Duration,
}

impl UdpRun {
    pub fn received(&self) -> u64 {
        self.by_server.iter().sum()
    }
    pub fn sent_per_sec(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn received_per_sec(&self) -> f64 {
        self.received() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    /// Datagrams sent that got no answer, in percent.
    pub fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        100.0 * self.sent.saturating_sub(self.received()) as f64 / self.sent as f64
    }
}

/// Size of each datagram's payload.
pub const DATAGRAM: usize = 64;

/// Sends 64-byte datagrams as fast as the client can from `sockets` UDP
/// sockets (each its own flow) for `dur` (at most `max` datagrams), reading
/// the echoes as they come, then waits briefly for stragglers.
pub fn udp_flood(
    targets: &[SocketAddr],
    sockets: usize,
    dur: Duration,
    max: u64,
    stop: &AtomicBool,
) -> io::Result<UdpRun> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);
    let mut socks = Vec::with_capacity(sockets);
    for k in 0..sockets.max(1) {
        let u = std::net::UdpSocket::bind(SocketAddr::from(([0u8; 4], 0)))?;
        u.connect(targets[k % targets.len()])?;
        u.set_nonblocking(true)?;
        let mut u = UdpSocket::from_std(u);
        poll.registry()
            .register(&mut u, Token(k), Interest::READABLE)?;
        socks.push(u);
    }
    let mut payload = [0u8; DATAGRAM];
    payload[0] = b'x';
    let mut buf = [0u8; 2048];
    let mut run = UdpRun {
        sent: 0,
        by_server: [0; 2],
        elapsed: Duration::ZERO,
    };
    let start = Instant::now();
    let mut drain = |poll: &mut Poll,
                     events: &mut Events,
                     wait: Duration,
                     run: &mut UdpRun|
     -> io::Result<bool> {
        match poll.poll(events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(e),
        }
        let mut any = false;
        for ev in events.iter() {
            let u = &socks[ev.token().0];
            // A refused datagram (ICMP) shows as an error: skip it.
            while let Ok(n) = u.recv(&mut buf) {
                any = true;
                if n == DATAGRAM {
                    match buf[0] {
                        b'1' => run.by_server[0] += 1,
                        b'2' => run.by_server[1] += 1,
                        _ => {}
                    }
                }
            }
        }
        Ok(any)
    };
    let mut i = 0u64;
    'send: while start.elapsed() < dur && !stop.load(Ordering::Relaxed) {
        for u in &socks {
            if run.sent >= max {
                break 'send;
            }
            payload[1..9].copy_from_slice(&i.to_le_bytes());
            i += 1;
            // A full queue (EAGAIN, ENOBUFS) is not a datagram sent.
            if u.send(&payload).is_ok() {
                run.sent += 1;
            }
        }
        drain(&mut poll, &mut events, Duration::ZERO, &mut run)?;
    }
    run.elapsed = start.elapsed();
    // Answers still in flight: wait until 100 ms pass without one (at most
    // half a second).
    let tail = Instant::now();
    while tail.elapsed() < Duration::from_millis(500)
        && drain(&mut poll, &mut events, Duration::from_millis(100), &mut run)?
    {}
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_their_server() {
        assert_eq!(server_of(b"rs1\n"), Some(0));
        assert_eq!(server_of(b"rs2 123\n"), Some(1));
        assert_eq!(server_of(b"rs3\n"), None);
        assert_eq!(server_of(b""), None);
    }

    #[test]
    fn udp_loss_is_a_percentage_of_sent() {
        let r = UdpRun {
            sent: 200,
            by_server: [90, 60],
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(r.received(), 150);
        assert!((r.loss_pct() - 25.0).abs() < 1e-9);
        assert!((r.sent_per_sec() - 100.0).abs() < 1e-9);
    }
}
