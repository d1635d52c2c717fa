//! The control socket's event loop: every client is served at once, none
//! can hold up another (see the parent module's contract).
//!
//! One thread, one mio poll. A client's request is read as it arrives
//! (within [`REQUEST_DEADLINE`] of its connection); once whole it is
//! handled, and the reply is written as the client takes it. A streamed
//! reply is asked for its next piece only when the previous one has been
//! written, so a client that reads slowly holds one piece of memory, not
//! the whole listing; a client that takes nothing for [`WRITE_TIMEOUT`] is
//! dropped. Peers other than root and the daemon's own uid get a refusal
//! and nothing else.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};

use super::wire::{self, KIND_STATUS, KIND_STDERR, KIND_STDOUT};
use super::{Answer, Next, Reply, Stream};

/// A whole request must arrive within this time of the connection.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// A reply the client takes nothing of for this long is abandoned.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
/// Most clients served at once; more are told so and closed.
pub const MAX_CLIENTS: usize = 128;
/// How often a stream that had nothing to say is asked again, and the
/// longest the loop sleeps before it looks at `stop`.
const TICK: Duration = Duration::from_millis(50);
/// A refused peer's input is read and dropped for this long at most, so
/// that closing does not reset its connection before it reads the refusal.
const DRAIN: Duration = Duration::from_secs(1);
/// Bytes read per read call.
const READ_CHUNK: usize = 64 << 10;
/// Roughly how much of a streamed reply is made at a time.
pub const STREAM_CHUNK: usize = 256 << 10;

const LISTENER: Token = Token(usize::MAX);

enum State {
    /// Collecting the request.
    Reading,
    /// Writing `out[sent..]`, then the rest of `stream` if any.
    Writing {
        stream: Option<Box<dyn Stream>>,
        /// The stream had nothing; ask again on the next tick.
        idle: bool,
    },
    /// A refused peer: its input is read and dropped until EOF.
    Draining,
}

struct Client {
    sock: UnixStream,
    state: State,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    /// When the current phase must be over (request read, or progress
    /// made on the reply).
    deadline: Instant,
    /// Its uid, for the log.
    uid: u32,
}

/// The peer's uid (`SO_PEERCRED`, fixed at connect time).
fn peer_uid(s: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` holds the
    // size of `cred`, as getsockopt(2) requires for SO_PEERCRED.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// The reply frames of a whole (not streamed) reply.
pub(super) fn encode_reply(out: &mut Vec<u8>, r: &Reply) {
    if !r.stdout.is_empty() {
        wire::push_frame(out, KIND_STDOUT, r.stdout.as_bytes());
    }
    if !r.stderr.is_empty() {
        wire::push_frame(out, KIND_STDERR, r.stderr.as_bytes());
    }
    wire::push_frame(out, KIND_STATUS, &[r.status]);
}

/// What became of a client after it was driven.
#[derive(PartialEq, Eq)]
enum Fate {
    Keep,
    Close,
}

impl Client {
    fn new(sock: UnixStream, uid: u32, allowed: bool, now: Instant) -> Client {
        let mut c = Client {
            sock,
            state: State::Reading,
            inbuf: Vec::new(),
            out: Vec::new(),
            sent: 0,
            deadline: now + REQUEST_DEADLINE,
            uid,
        };
        if !allowed {
            let me = super::own_uid();
            c.reply(
                Reply::err(format!(
                    "uvs: permission denied: uid {uid} may not use the control socket \
                     (only root and uid {me} may)"
                ))
                .into(),
                now,
            );
        }
        c
    }

    fn reply(&mut self, a: Answer, now: Instant) {
        self.out.clear();
        self.sent = 0;
        let stream = match a {
            Answer::Done(r) => {
                encode_reply(&mut self.out, &r);
                None
            }
            Answer::Stream(s) => Some(s),
        };
        self.state = State::Writing {
            stream,
            idle: false,
        };
        self.deadline = now + WRITE_TIMEOUT;
    }

    /// Reads, handles, writes as far as the socket allows.
    fn drive(
        &mut self,
        now: Instant,
        allowed: bool,
        handle: &mut dyn FnMut(Vec<String>) -> Answer,
    ) -> Fate {
        if let State::Reading = self.state {
            match self.read_request() {
                Ok(None) => return Fate::Keep,
                Ok(Some(argv)) => {
                    self.inbuf = Vec::new();
                    let a = handle(argv);
                    self.reply(a, now);
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Fate::Close,
                Err(e) => {
                    log::debug!("control client (uid {}): {e}", self.uid);
                    self.reply(Reply::err(format!("bad control request: {e}")).into(), now);
                }
            }
        }
        if let State::Draining = self.state {
            let mut buf = [0u8; 4096];
            loop {
                match self.sock.read(&mut buf) {
                    Ok(0) => return Fate::Close,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Fate::Keep,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Fate::Close,
                }
            }
        }
        self.write(now, allowed)
    }

    /// Reads what is there; the words once the request is whole.
    fn read_request(&mut self) -> io::Result<Option<Vec<String>>> {
        let mut got = false;
        loop {
            let at = self.inbuf.len();
            self.inbuf.resize(at + READ_CHUNK, 0);
            let r = self.sock.read(&mut self.inbuf[at..]);
            self.inbuf.truncate(at + *r.as_ref().unwrap_or(&0));
            match r {
                Ok(0) => {
                    // A whole request may end with the peer's EOF.
                    return match wire::decode_request(&self.inbuf) {
                        Ok(Some(w)) => Ok(Some(w)),
                        Ok(None) => Err(io::ErrorKind::UnexpectedEof.into()),
                        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                    };
                }
                Ok(_) => got = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            // Refuse an impossible request as soon as it shows.
            if let Err(e) = wire::decode_request(&self.inbuf) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        if !got {
            return Ok(None);
        }
        wire::decode_request(&self.inbuf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn write(&mut self, now: Instant, allowed: bool) -> Fate {
        let State::Writing { stream, idle } = &mut self.state else {
            return Fate::Keep;
        };
        *idle = false;
        loop {
            while self.sent < self.out.len() {
                match self.sock.write(&self.out[self.sent..]) {
                    Ok(n) => {
                        self.sent += n;
                        self.deadline = now + WRITE_TIMEOUT;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Fate::Keep,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Fate::Close,
                }
            }
            self.out.clear();
            self.sent = 0;
            let Some(s) = stream else {
                break;
            };
            let mut text = String::new();
            match s.next(&mut text) {
                Next::More => wire::push_frame(&mut self.out, KIND_STDOUT, text.as_bytes()),
                Next::Idle => {
                    if !text.is_empty() {
                        wire::push_frame(&mut self.out, KIND_STDOUT, text.as_bytes());
                    }
                    *idle = self.out.is_empty();
                    if *idle {
                        // Nothing to write while a stream waits: it is not
                        // the client's delay.
                        self.deadline = now + WRITE_TIMEOUT;
                        return Fate::Keep;
                    }
                }
                Next::End(mut r) => {
                    r.stdout.insert_str(0, &text);
                    encode_reply(&mut self.out, &r);
                    *stream = None;
                }
            }
        }
        if allowed {
            return Fate::Close;
        }
        // A refusal is out: let the peer read it before the socket closes.
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
        self.state = State::Draining;
        self.deadline = now + DRAIN;
        Fate::Keep
    }
}

/// Serves `listener` until `stop()` (see the module doc).
pub(super) fn run(
    listener: &std::os::unix::net::UnixListener,
    stop: &dyn Fn() -> bool,
    handle: &mut dyn FnMut(Vec<String>) -> Answer,
) -> io::Result<()> {
    let std_l = listener.try_clone()?;
    std_l.set_nonblocking(true)?;
    let mut l = UnixListener::from_std(std_l);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut l, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(256);
    // Clients by token; `allowed` beside each.
    let mut clients: Vec<Option<(Client, bool)>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let me = super::own_uid();
    let mut to_drive: Vec<usize> = Vec::new();
    while !stop() {
        let now = Instant::now();
        let mut wait = TICK;
        for (c, _) in clients.iter().flatten() {
            wait = wait.min(c.deadline.saturating_duration_since(now));
        }
        if let Err(e) = poll.poll(&mut events, Some(wait)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let now = Instant::now();
        to_drive.clear();
        for ev in events.iter() {
            if ev.token() == LISTENER {
                accept(&l, &poll, &mut clients, &mut free, me, now, &mut to_drive);
            } else {
                to_drive.push(ev.token().0);
            }
        }
        // Streams that had nothing, and clients past their deadline.
        for (i, slot) in clients.iter().enumerate() {
            if let Some((c, _)) = slot {
                let idle = matches!(c.state, State::Writing { idle: true, .. });
                if idle || c.deadline <= now {
                    to_drive.push(i);
                }
            }
        }
        to_drive.sort_unstable();
        to_drive.dedup();
        for &i in &to_drive {
            let Some(Some((c, allowed))) = clients.get_mut(i) else {
                continue;
            };
            let mut fate = c.drive(now, *allowed, handle);
            if fate == Fate::Keep && c.deadline <= now {
                log::debug!(
                    "control client (uid {}): dropped, {}",
                    c.uid,
                    match c.state {
                        State::Reading => "no whole request in time",
                        State::Writing { .. } => "its reply not taken in time",
                        State::Draining => "refused",
                    }
                );
                fate = Fate::Close;
            }
            if fate == Fate::Close {
                if let Some((mut c, _)) = clients[i].take() {
                    let _ = poll.registry().deregister(&mut c.sock);
                }
                free.push(i);
            }
        }
    }
    Ok(())
}

/// Accepts every waiting connection.
fn accept(
    l: &UnixListener,
    poll: &Poll,
    clients: &mut Vec<Option<(Client, bool)>>,
    free: &mut Vec<usize>,
    me: u32,
    now: Instant,
    to_drive: &mut Vec<usize>,
) {
    loop {
        let mut sock = match l.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of descriptors, say: the clients being served go on.
                log::warn!("control socket: {e}");
                return;
            }
        };
        let uid = match peer_uid(&sock) {
            Ok(u) => u,
            Err(e) => {
                log::warn!("control socket: peer credentials: {e}");
                continue;
            }
        };
        let allowed = uid == 0 || uid == me;
        if clients.len() - free.len() >= MAX_CLIENTS {
            // Told, not queued: the socket buffer takes this short reply.
            let mut out = Vec::new();
            encode_reply(
                &mut out,
                &Reply::err(format!(
                    "uvs: {MAX_CLIENTS} control clients are being served; try again"
                )),
            );
            let _ = sock.write(&out);
            continue;
        }
        if !allowed {
            log::warn!("control socket: refused uid {uid}");
        }
        let i = free.pop().unwrap_or_else(|| {
            clients.push(None);
            clients.len() - 1
        });
        if let Err(e) =
            poll.registry()
                .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)
        {
            log::warn!("control socket: {e}");
            free.push(i);
            continue;
        }
        clients[i] = Some((Client::new(sock, uid, allowed, now), allowed));
        to_drive.push(i);
    }
}
