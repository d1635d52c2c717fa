//! Lab traffic: the tiny real servers and clients used by `uvs demo`, the lab
//! tests and the benchmarks. Everything here runs inside namespaces made by
//! `scripts/lab.sh` and talks only to documentation addresses.
//!
//! Server protocol (TCP): a connection that starts with `GET ` gets an
//! HTTP/1.0 answer whose body is the server's name (so curl works); any
//! other connection is a line echo: each line comes back as `NAME:line`.
//! UDP: each datagram comes back as `NAME:payload`. Clients count answers by
//! server name, which is how tests see where the load balancer sent them.

pub mod bench;
pub mod demo;
pub mod ecmp;
pub mod flood;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The embedded lab script (also `scripts/lab.sh`).
pub const LAB_SH: &str = include_str!("../../scripts/lab.sh");

/// Runs `scripts/lab.sh ARGS` from the embedded copy.
pub fn lab_sh(args: &[&str]) -> io::Result<()> {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(LAB_SH)
        .arg("lab.sh")
        .args(args)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "lab.sh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A lab of namespaces that is removed when dropped (also on panic).
#[derive(Debug)]
pub struct Lab {
    /// The prefix of every namespace name.
    pub prefix: String,
}

impl Lab {
    /// Builds the lab (`lab.sh up PREFIX OPTIONS…`; options `--vip-on-lb`,
    /// `--dr`, see the script).
    pub fn up(prefix: &str, options: &[&str]) -> io::Result<Lab> {
        let mut args = vec!["up", prefix];
        args.extend_from_slice(options);
        lab_sh(&args)?;
        Ok(Lab {
            prefix: prefix.to_string(),
        })
    }
    /// Namespace name of a lab host: `c`, `lb`, `sw`, `rs1`, `rs2`.
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = lab_sh(&["down", &self.prefix]) {
            eprintln!("uvs lab: teardown: {e}");
        }
    }
}

/// A running lab server; stops when dropped.
#[derive(Debug)]
pub struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn handle_tcp(name: &str, mut s: TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut first = String::new();
    r.read_line(&mut first)?;
    if first.starts_with("GET ") {
        // Read the rest of the request head, then answer and close.
        let mut line = String::new();
        while r.read_line(&mut line)? > 0 && line.trim_end() != "" {
            line.clear();
        }
        let body = format!("{name}\n");
        write!(s, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
        return Ok(());
    }
    let mut line = first;
    loop {
        if line.is_empty() {
            return Ok(());
        }
        write!(s, "{name}:{line}")?;
        line.clear();
        r.read_line(&mut line)?;
    }
}

/// Serves TCP and UDP on `addr`'s ports (`0.0.0.0`/`::` are fine) in the
/// current thread's namespace, answering as `name`.
pub fn serve(name: &str, tcp: &[SocketAddr], udp: &[SocketAddr]) -> io::Result<Server> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for a in tcp {
        let l = TcpListener::bind(a)?;
        l.set_nonblocking(true)?;
        let (stop, name) = (stop.clone(), name.to_string());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let name = name.clone();
                        let _ = s.set_nonblocking(false);
                        std::thread::spawn(move || {
                            let _ = handle_tcp(&name, s);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }));
    }
    for a in udp {
        let u = udp_bind_shared(*a)?;
        u.set_read_timeout(Some(Duration::from_millis(50)))?;
        let (stop, name) = (stop.clone(), name.to_string());
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let prefix = format!("{name}:");
            let mut out = Vec::with_capacity(4096);
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = u.recv_from(&mut buf) {
                    out.clear();
                    out.extend_from_slice(prefix.as_bytes());
                    out.extend_from_slice(&buf[..n]);
                    let _ = u.send_to(&out, peer);
                }
            }
        }));
    }
    Ok(Server { stop, threads })
}

/// The lab's first IPv4 and IPv6 VIPs (scripts/lab.sh).
pub const LAB_VIP4: &str = "192.0.2.10";
/// See [`LAB_VIP4`].
pub const LAB_VIP6: &str = "2001:db8:f::10";

/// A UDP socket bound with SO_REUSEADDR, so a wildcard and a specific
/// address can share a port (the specific one gets its datagrams).
fn udp_bind_shared(a: SocketAddr) -> io::Result<UdpSocket> {
    let d = if a.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let sock = socket2::Socket::new(d, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    sock.bind(&a.into())?;
    Ok(sock.into())
}

/// Starts a lab server inside namespace `ns` serving TCP `tcp_port` and UDP
/// `udp_port` on all addresses (IPv4 and IPv6).
pub fn serve_in(ns: &str, name: &str, tcp_port: u16, udp_port: u16) -> io::Result<Server> {
    let (tx, rx) = std::sync::mpsc::channel();
    let name = name.to_string();
    crate::sys::netns::run_in(ns, move || {
        let any6: SocketAddr = SocketAddr::from(([0u16; 8], tcp_port));
        let any6u: SocketAddr = SocketAddr::from(([0u16; 8], udp_port));
        // `[::]` sockets accept IPv4 too (bindv6only=0 is Linux's default).
        // UDP also listens on the lab VIPs where the host has them (DR and
        // TUN real servers, VIP on `lo`), so its answers come from the
        // address the client asked, as a real DR service's must.
        let mut udp = vec![any6u];
        for v in [LAB_VIP4, LAB_VIP6] {
            if let Ok(ip) = v.parse::<std::net::IpAddr>() {
                let a = SocketAddr::new(ip, udp_port);
                // A probe bind: fails unless the host has the address.
                if std::net::UdpSocket::bind(a).is_ok() {
                    udp.push(a);
                }
            }
        }
        let _ = tx.send(serve(&name, &[any6], &udp));
    })?;
    rx.recv()
        .map_err(|_| io::Error::other("server thread died"))?
}

/// Tallies of a client run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Answers per server name.
    pub by_server: BTreeMap<String, usize>,
    /// Requests that failed (refused, reset, timed out, garbled), with the
    /// first error seen.
    pub failures: usize,
    pub first_error: Option<String>,
}

impl Tally {
    fn ok(&mut self, name: &str) {
        *self.by_server.entry(name.to_string()).or_default() += 1;
    }
    fn fail(&mut self, e: String) {
        self.failures += 1;
        self.first_error.get_or_insert(e);
    }
    /// Answers from `server`.
    pub fn count(&self, server: &str) -> usize {
        self.by_server.get(server).copied().unwrap_or(0)
    }
    /// All answers.
    pub fn total(&self) -> usize {
        self.by_server.values().sum()
    }
}

/// One HTTP-style request over a fresh TCP connection; returns the server name.
pub fn tcp_request(vip: SocketAddr, timeout: Duration) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&vip, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let body = resp
        .split("\r\n\r\n")
        .nth(1)
        .ok_or_else(|| io::Error::other(format!("bad response {resp:?}")))?;
    Ok(body.trim().to_string())
}

/// `n` sequential short TCP connections to `vip`, bounded by `deadline`.
pub fn tcp_requests(vip: SocketAddr, n: usize, deadline: Duration) -> Tally {
    let mut t = Tally::default();
    let end = Instant::now() + deadline;
    for _ in 0..n {
        if Instant::now() > end {
            t.fail("deadline reached".into());
            break;
        }
        match tcp_request(vip, Duration::from_secs(3)) {
            Ok(name) => t.ok(&name),
            Err(e) => t.fail(e.to_string()),
        }
    }
    t
}

/// Source ports of [`udp_requests`]: handed out in order from 20000 to
/// 59999 across every call in this process, so no two exchanges share a
/// tuple.
static NEXT_UDP_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// `n` UDP request/answer exchanges, each from its own source port, bound
/// explicitly (an ephemeral port the kernel hands out twice would join the
/// earlier exchange's IPVS connection, as it should), so each is a new IPVS
/// connection.
pub fn udp_requests(vip: SocketAddr, n: usize, deadline: Duration) -> Tally {
    let mut t = Tally::default();
    let end = Instant::now() + deadline;
    for i in 0..n {
        if Instant::now() > end {
            t.fail("deadline reached".into());
            break;
        }
        let k = NEXT_UDP_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 20000 + (k % 40000) as u16;
        let bind = if vip.is_ipv4() {
            SocketAddr::from(([0u8; 4], port))
        } else {
            SocketAddr::from(([0u16; 8], port))
        };
        let r = (|| -> io::Result<String> {
            let u = UdpSocket::bind(bind)?;
            // Connected: only answers from the VIP itself are accepted.
            u.connect(vip)?;
            u.set_read_timeout(Some(Duration::from_millis(500)))?;
            let msg = format!("ping {i}");
            // One retry: UDP may lose the first datagram while a neighbour resolves.
            for _ in 0..3 {
                u.send_to(msg.as_bytes(), vip)?;
                let mut buf = [0u8; 2048];
                if let Ok((len, _)) = u.recv_from(&mut buf) {
                    let s = String::from_utf8_lossy(&buf[..len]).to_string();
                    let (name, echo) = s
                        .split_once(':')
                        .ok_or_else(|| io::Error::other(format!("bad answer {s:?}")))?;
                    if echo != msg {
                        return Err(io::Error::other(format!("answer {echo:?} to {msg:?}")));
                    }
                    return Ok(name.to_string());
                }
            }
            Err(io::Error::new(io::ErrorKind::TimedOut, "no UDP answer"))
        })();
        match r {
            Ok(name) => t.ok(&name),
            Err(e) => t.fail(e.to_string()),
        }
    }
    t
}

/// A long-lived line-echo connection (to check that open connections keep
/// working across configuration changes).
#[derive(Debug)]
pub struct EchoConn {
    s: TcpStream,
    r: BufReader<TcpStream>,
}

impl EchoConn {
    /// Connects to `vip`.
    pub fn connect(vip: SocketAddr) -> io::Result<EchoConn> {
        let s = TcpStream::connect_timeout(&vip, Duration::from_secs(3))?;
        s.set_nodelay(true)?;
        let r = BufReader::new(s.try_clone()?);
        Ok(EchoConn { s, r })
    }
    /// Sends a line and returns the answering server's name.
    pub fn ping(&mut self, line: &str) -> io::Result<String> {
        self.send(line)?;
        self.recv(line, Duration::from_secs(3))
    }
    /// Sends a line without waiting for the answer.
    pub fn send(&mut self, line: &str) -> io::Result<()> {
        writeln!(self.s, "{line}")
    }
    /// Waits up to `timeout` for the echo of `line`; returns the server name.
    pub fn recv(&mut self, line: &str, timeout: Duration) -> io::Result<String> {
        self.s.set_read_timeout(Some(timeout))?;
        let mut a = String::new();
        if self.r.read_line(&mut a)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let (name, echo) = a
            .trim_end()
            .split_once(':')
            .ok_or_else(|| io::Error::other(format!("bad echo {a:?}")))?;
        if echo != line {
            return Err(io::Error::other(format!("echo {echo:?} for {line:?}")));
        }
        Ok(name.to_string())
    }
}

/// A `uvs run` process inside the lab's director namespace, stopped (by its
/// PID, with SIGTERM so it cleans up) when dropped.
#[derive(Debug)]
pub struct Director {
    child: std::process::Child,
    /// Its control socket.
    pub control: std::path::PathBuf,
    /// Where its output goes.
    pub log: std::path::PathBuf,
}

impl Director {
    /// Starts `uvs_exe run` in `lab`'s director namespace with `args` and
    /// waits until its control socket answers. With `UVS_LAB_IO` set, `--io
    /// VALUE` is passed too (to run lab tests under another backend), unless
    /// `args` name their own `--io` (a test of one backend keeps it), and
    /// with `UVS_LAB_ARGS` its whitespace-separated words (to A/B a `uvs
    /// run` option in the lab tests and `uvs bench`).
    pub fn start(lab: &Lab, uvs_exe: &std::path::Path, args: &[&str]) -> io::Result<Director> {
        Director::start_in(lab, "lb", uvs_exe, args)
    }

    /// [`Director::start`] in the lab host `host` (`lb`, or `lb2` of a
    /// `--pair` lab).
    pub fn start_in(
        lab: &Lab,
        host: &str,
        uvs_exe: &std::path::Path,
        args: &[&str],
    ) -> io::Result<Director> {
        let name = match host {
            "lb" => lab.prefix.clone(),
            h => format!("{}-{h}", lab.prefix),
        };
        let control = std::path::PathBuf::from(format!("/run/uvs/{name}.sock"));
        let log = std::env::temp_dir().join(format!("{name}-uvs.log"));
        let out = std::fs::File::create(&log)?;
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.ns(host)])
            .arg(uvs_exe)
            .arg("run")
            .arg("--control")
            .arg(&control)
            // The whole lab suite under another backend:
            // UVS_LAB_IO=af_xdp cargo test --test lab
            .args(
                std::env::var("UVS_LAB_IO")
                    .ok()
                    .filter(|_| !args.iter().any(|a| *a == "--io" || a.starts_with("--io=")))
                    .map(|io| vec!["--io".to_string(), io])
                    .unwrap_or_default(),
            )
            .args(
                std::env::var("UVS_LAB_ARGS")
                    .map(|a| a.split_whitespace().map(String::from).collect::<Vec<_>>())
                    .unwrap_or_default(),
            )
            .args(args)
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        let mut d = Director {
            child,
            control,
            log,
        };
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = crate::control::socket::call(&d.control, &["ping".to_string()]) {
                if r.status == 0 {
                    return Ok(d);
                }
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                return Err(io::Error::other(format!(
                    "uvs run exited ({st}): {}",
                    d.log_text()
                )));
            }
            if Instant::now() > end {
                return Err(io::Error::other(format!(
                    "uvs run did not come up: {}",
                    d.log_text()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process ID (for signalling it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a control request (`["uvsadm", "-L", "-n"]`, `["stats"]`, …).
    pub fn call(&self, argv: &[&str]) -> io::Result<crate::control::socket::Reply> {
        let v: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        crate::control::socket::call(&self.control, &v)
    }

    /// Runs a uvsadm command (words split on spaces) and fails on an error reply.
    pub fn uvsadm(&self, cmd: &str) -> io::Result<String> {
        let mut v = vec!["uvsadm"];
        v.extend(cmd.split_whitespace());
        let r = self.call(&v)?;
        if r.status != 0 {
            return Err(io::Error::other(format!(
                "uvsadm {cmd}: {}",
                r.stderr.trim()
            )));
        }
        Ok(r.stdout)
    }

    /// Reads one counter from `uvs stats` (e.g. `drop.filtered`).
    pub fn counter(&self, name: &str) -> io::Result<u64> {
        let r = self.call(&["stats"])?;
        r.stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .ok_or_else(|| io::Error::other(format!("no counter {name} in stats")))
    }

    /// SIGTERM, then wait (SIGKILL after 10 s); returns the exit status.
    pub fn stop(mut self) -> io::Result<std::process::ExitStatus> {
        self.terminate()
    }

    /// SIGKILL (a crash: uvs cleans up nothing itself), then wait.
    pub fn kill(mut self) -> io::Result<std::process::ExitStatus> {
        self.child.kill()?;
        self.child.wait()
    }

    fn terminate(&mut self) -> io::Result<std::process::ExitStatus> {
        if let Some(st) = self.child.try_wait()? {
            return Ok(st);
        }
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}
