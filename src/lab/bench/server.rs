//! The bench's real servers: one mio event loop per real-server namespace,
//! serving TCP and UDP until stopped.
//!
//! Protocol (TCP, port [`TCP_PORT`]): the first byte of a connection picks
//! its mode.
//! * `Q` (query): every `Q` byte received is answered with `NAME\n`; the
//!   connection ends when the client closes it (the client closes first, so
//!   TIME_WAIT stays on the client, as with HTTP/1.0 clients).
//! * `S` (stream): every byte after the `S` is counted and discarded; at the
//!   client's end of stream the server answers `NAME BYTES\n` and closes.
//!
//! UDP (port [`UDP_PORT`]): each datagram comes back unchanged except its
//! first byte, which becomes the server's id byte (`1` or `2`), so the
//! client can tell who answered without parsing.
//!
//! The loop holds no lock and allocates only per connection; it polls with
//! a short timeout so it notices the stop flag within 50 ms.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

/// The bench's TCP service port on the real servers.
pub const TCP_PORT: u16 = 80;
/// The bench's UDP service port on the real servers.
pub const UDP_PORT: u16 = 53;

/// Connections a server keeps at once; more are refused (closed at once).
const MAX_CONNS: usize = 65_536;
const LISTENER: Token = Token(usize::MAX - 1);
const UDP: Token = Token(usize::MAX - 2);

/// A running bench server; stops (and joins its thread) when dropped.
#[derive(Debug)]
pub struct BenchServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a bench server answering as `name` (`rs1`/`rs2`; the id byte of
/// UDP answers is the name's last byte) inside namespace `ns`, on all of its
/// IPv4 addresses.
pub fn start_in(ns: &str, name: &str) -> io::Result<BenchServer> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let (s2, name) = (stop.clone(), name.to_string());
    let thread = crate::sys::netns::spawn_in(ns, move || {
        let tcp = TcpListener::bind(SocketAddr::from(([0u8; 4], TCP_PORT)));
        let udp = UdpSocket::bind(SocketAddr::from(([0u8; 4], UDP_PORT)));
        match (tcp, udp) {
            (Ok(tcp), Ok(udp)) => {
                let _ = tx.send(Ok(()));
                if let Err(e) = serve(&name, tcp, udp, &s2) {
                    eprintln!("uvs bench: server {name}: {e}");
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                let _ = tx.send(Err(e));
            }
        }
    })?;
    rx.recv()
        .map_err(|_| io::Error::other("bench server thread died"))??;
    Ok(BenchServer {
        stop,
        thread: Some(thread),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No byte seen yet.
    New,
    Query,
    Stream,
}

#[derive(Debug)]
struct Conn {
    s: TcpStream,
    mode: Mode,
    /// Pending output and how much of it is written.
    out: Vec<u8>,
    sent: usize,
    /// Bytes counted in stream mode.
    count: u64,
    /// Close once `out` is flushed.
    closing: bool,
}

impl Conn {
    /// Writes what is pending; `Ok(true)` when all of it is out.
    fn flush(&mut self) -> io::Result<bool> {
        while self.sent < self.out.len() {
            match self.s.write(&self.out[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.sent = 0;
        Ok(true)
    }

    /// Reads all that is there; `Ok(false)` when the connection is done.
    fn on_event(&mut self, name: &[u8], buf: &mut [u8]) -> io::Result<bool> {
        if self.closing {
            // The stream's answer is queued; only flushing is left.
            return Ok(!self.flush()?);
        }
        loop {
            match self.s.read(buf) {
                Ok(0) => {
                    if self.mode == Mode::Stream {
                        self.out.extend_from_slice(name);
                        self.out
                            .extend_from_slice(format!(" {}\n", self.count).as_bytes());
                        self.closing = true;
                    } else {
                        return Ok(false);
                    }
                    break;
                }
                Ok(n) => {
                    let mut data = &buf[..n];
                    if self.mode == Mode::New {
                        self.mode = if data[0] == b'S' {
                            Mode::Stream
                        } else {
                            Mode::Query
                        };
                        if self.mode == Mode::Stream {
                            data = &data[1..];
                        }
                    }
                    match self.mode {
                        Mode::Stream => self.count += data.len() as u64,
                        _ => {
                            for _ in data.iter().filter(|&&b| b == b'Q') {
                                self.out.extend_from_slice(name);
                                self.out.push(b'\n');
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let flushed = self.flush()?;
        Ok(!(flushed && self.closing))
    }
}

fn serve(
    name: &str,
    mut tcp: TcpListener,
    mut udp: UdpSocket,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    poll.registry()
        .register(&mut tcp, LISTENER, Interest::READABLE)?;
    poll.registry()
        .register(&mut udp, UDP, Interest::READABLE)?;
    let id = *name.as_bytes().last().unwrap_or(&b'?');
    let name = name.as_bytes();
    // A slab of connections: index = token, `free` lists empty slots.
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(Duration::from_millis(50))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            match ev.token() {
                LISTENER => loop {
                    match tcp.accept() {
                        Ok((mut s, _)) => {
                            let live = conns.len() - free.len();
                            if live >= MAX_CONNS {
                                continue; // dropped: closed at once
                            }
                            let _ = s.set_nodelay(true);
                            let k = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            poll.registry().register(
                                &mut s,
                                Token(k),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            conns[k] = Some(Conn {
                                s,
                                mode: Mode::New,
                                out: Vec::new(),
                                sent: 0,
                                count: 0,
                                closing: false,
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // Out of descriptors or a connection reset before
                        // accept: not fatal; the next event retries.
                        Err(_) => break,
                    }
                },
                UDP => loop {
                    match udp.recv_from(&mut buf) {
                        Ok((n, peer)) => {
                            if n > 0 {
                                buf[0] = id;
                            }
                            // A full send buffer loses the answer, which the
                            // client counts as loss.
                            let _ = udp.send_to(&buf[..n], peer);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                },
                Token(k) => {
                    let keep = match conns.get_mut(k).and_then(Option::as_mut) {
                        Some(c) => c.on_event(name, &mut buf).unwrap_or(false),
                        None => continue,
                    };
                    if !keep {
                        if let Some(mut c) = conns[k].take() {
                            let _ = poll.registry().deregister(&mut c.s);
                        }
                        free.push(k);
                    }
                }
            }
        }
    }
    Ok(())
}
