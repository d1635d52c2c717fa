//! The probes: each runs on a probe thread of [`super::runner`] and ends
//! within its checker's timeout (HTTP: the whole exchange, every `url`;
//! MISC: the command is killed, with its process group, when time is up).
//! `Ok(Some(w))` is a pass that sets the weight (`misc_dynamic`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::conf::{Check, CheckKind, Url};

/// Largest HTTP answer read (status line and body for the digest).
const MAX_HTTP: usize = 1 << 20;

/// Runs one probe of `check` against `target`.
pub fn run(check: &Check, target: SocketAddr) -> Result<Option<u32>, String> {
    let deadline = Instant::now() + check.timeout;
    match &check.kind {
        CheckKind::Tcp => tcp(target, check.timeout).map(|_| None),
        CheckKind::Http(urls) => urls
            .iter()
            .try_for_each(|u| http(target, u, deadline))
            .map(|_| None),
        CheckKind::Misc { command, dynamic } => misc(command, *dynamic, check.timeout),
        CheckKind::Udp {
            payload,
            require_reply,
        } => udp(target, payload, require_reply.as_deref(), check.timeout).map(|_| None),
    }
}

fn tcp(target: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("connect {target}: {e}"))
}

fn left(deadline: Instant) -> Result<Duration, String> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        return Err("timed out".into());
    }
    Ok(d)
}

/// `GET path` over HTTP/1.0; the status must be accepted (and the body's
/// MD5 match `digest`).
fn http(target: SocketAddr, url: &Url, deadline: Instant) -> Result<(), String> {
    let mut s = tcp(target, left(deadline)?)?;
    let io = |e: std::io::Error| format!("GET {} from {target}: {e}", url.path);
    s.set_write_timeout(Some(left(deadline)?)).map_err(io)?;
    // One write: a server answering after its first read sees it all.
    let req = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: uvs-health\r\nConnection: close\r\n\r\n",
        url.path,
        target.ip()
    );
    s.write_all(req.as_bytes()).map_err(io)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        s.set_read_timeout(Some(left(deadline)?)).map_err(io)?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_HTTP {
                    return Err(format!("GET {}: answer over {MAX_HTTP} bytes", url.path));
                }
                // Without a digest the status line is enough.
                if url.digest.is_none() && buf.contains(&b'\n') {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .filter(|_| line.starts_with("HTTP/"))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {}: not an HTTP answer: {:?}", url.path, line.trim()))?;
    if !url.accepts(code) {
        return Err(format!("GET {}: status {code}", url.path));
    }
    if let Some(want) = &url.digest {
        let body = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(&buf[..0], |i| &buf[i + 4..]);
        let got = super::md5::hex(body);
        if &got != want {
            return Err(format!("GET {}: digest {got}, expected {want}", url.path));
        }
    }
    Ok(())
}

/// `/bin/sh -c command`, in its own process group, killed at `timeout`.
fn misc(command: &str, dynamic: bool, timeout: Duration) -> Result<Option<u32>, String> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Command, Stdio};
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("running {command:?}: {e}"))?;
    let end = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                // SAFETY: kill(2) on the process group of the child this
                // function started (process_group(0) made its PID the
                // group's ID); it has not been reaped, so the ID is ours.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                return Err(format!("{command:?} timed out after {timeout:?}"));
            }
            Err(e) => return Err(format!("waiting for {command:?}: {e}")),
        }
    };
    match status.code() {
        Some(0) => Ok(None),
        Some(c) if dynamic && c >= 2 => Ok(Some(c as u32 - 2)),
        Some(c) => Err(format!("{command:?} exited with {c}")),
        None => Err(format!(
            "{command:?} killed by signal {}",
            status.signal().unwrap_or(0)
        )),
    }
}

/// One datagram; an ICMP error (seen as ECONNREFUSED on the connected
/// socket) fails, silence passes unless an answer is required.
fn udp(
    target: SocketAddr,
    payload: &[u8],
    require: Option<&[u8]>,
    timeout: Duration,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("UDP {target}: {e}");
    let any: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let u = UdpSocket::bind(any).map_err(io)?;
    u.connect(target).map_err(io)?;
    u.set_read_timeout(Some(timeout)).map_err(io)?;
    u.send(payload).map_err(io)?;
    let mut buf = [0u8; 2048];
    match u.recv(&mut buf) {
        Ok(n) => match require {
            Some(want) if !buf[..n].starts_with(want) => {
                Err(format!("UDP {target}: answer does not start as required"))
            }
            _ => Ok(()),
        },
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            match require {
                Some(_) => Err(format!("UDP {target}: no answer within {timeout:?}")),
                None => Ok(()),
            }
        }
        Err(e) => Err(io(e)),
    }
}
