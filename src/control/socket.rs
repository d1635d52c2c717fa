//! The control socket: a Unix stream socket (default `/run/uvs/uvs.sock`,
//! mode 0600) over which `uvsadm` and `uvs` subcommands talk to the engine.
//!
//! Contract:
//! * One request per connection: argv words, each its own length-prefixed
//!   frame (a `-R` text is one word), bounded in size ([`wire`]). The
//!   daemon parses the words itself, so every client (uvsadm, `uvs
//!   filter`, scripts) gets the same validation and messages.
//! * The reply is a sequence of stdout/stderr frames ended by a status
//!   frame. A handler answers with a whole [`Reply`] or with a [`Stream`],
//!   which is asked for its output piece by piece as the client takes it
//!   (`-L -c` of millions of connections, `uvs trace`); [`call`] collects
//!   a reply, [`call_streamed`] hands the pieces on as they come.
//! * Clients are served together by one event loop ([`serve`]): a client
//!   that sends nothing, trickles, or never reads its reply delays no
//!   other; each has [`REQUEST_DEADLINE`] to send its request and is
//!   dropped when it takes nothing of its reply for [`WRITE_TIMEOUT`].
//! * Only root and the daemon's own uid are served (`SO_PEERCRED`, as
//!   ipvsadm needs CAP_NET_ADMIN for everything, listings too); anyone
//!   else gets a refusal, whatever the socket's mode.
//! * The socket is created with mode 0600: bound inside a private 0700
//!   directory, given its mode there and only then renamed into place, so
//!   it is never reachable with a wider mode.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod serve;
pub mod wire;

pub use serve::{MAX_CLIENTS, REQUEST_DEADLINE, STREAM_CHUNK, WRITE_TIMEOUT};

/// Default control socket path.
pub const DEFAULT_PATH: &str = "/run/uvs/uvs.sock";
/// Environment variable naming the control socket.
pub const ENV: &str = "UVS_CONTROL";
/// How long a client waits for the next piece of a reply.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A command's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// 0 on success, else the exit status the client should use.
    pub status: u8,
    pub stdout: String,
    pub stderr: String,
}

impl Reply {
    /// Success with output.
    pub fn ok(stdout: impl Into<String>) -> Reply {
        Reply {
            status: 0,
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }
    /// Failure with a message (exit status 2, as ipvsadm uses for bad input).
    pub fn err(msg: impl std::fmt::Display) -> Reply {
        Reply {
            status: 2,
            stdout: String::new(),
            stderr: format!("{msg}\n"),
        }
    }
}

/// What a [`Stream`] did when asked for more.
#[derive(Debug)]
pub enum Next {
    /// It appended output and has more.
    More,
    /// It has nothing now (what it appended, if anything, is sent); ask
    /// again shortly (`uvs trace` waiting for packets).
    Idle,
    /// It is finished: this reply's stdout follows what it appended, then
    /// its stderr and status end the answer.
    End(Reply),
}

/// A reply made piece by piece on the control thread, as the client takes
/// it. `next` should append about [`STREAM_CHUNK`] bytes and return soon
/// (it runs on the thread that serves every client); it is dropped, unasked,
/// when the client goes away.
pub trait Stream: Send {
    /// Appends the next piece of standard output to `out`.
    fn next(&mut self, out: &mut String) -> Next;
}

/// A handler's answer: whole, or streamed.
pub enum Answer {
    Done(Reply),
    Stream(Box<dyn Stream>),
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Done(r) => f.debug_tuple("Done").field(r).finish(),
            Answer::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

impl From<Reply> for Answer {
    fn from(r: Reply) -> Answer {
        Answer::Done(r)
    }
}

/// The effective uid of this process.
fn own_uid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The socket path: `--control` if given, else `$UVS_CONTROL`, else the default.
pub fn path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// Sends `argv` to the engine at `path` and returns its whole reply.
pub fn call(path: &Path, argv: &[String]) -> io::Result<Reply> {
    let mut stdout = String::new();
    let mut r = call_streamed(path, argv, |piece| {
        stdout.push_str(piece);
        Ok(())
    })?;
    r.stdout = stdout;
    Ok(r)
}

/// Sends `argv` and hands each piece of standard output to `on_stdout` as
/// it arrives; returns the status and standard error (stdout empty). An
/// error from `on_stdout` ends the call (and the daemon stops making the
/// reply when the connection closes).
pub fn call_streamed(
    path: &Path,
    argv: &[String],
    mut on_stdout: impl FnMut(&str) -> io::Result<()>,
) -> io::Result<Reply> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach uvs at {} ({e}); is `uvs run` running?",
                path.display()
            ),
        )
    })?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    // A daemon that refuses us answers before reading: read its answer
    // even if it closed its side while we were writing.
    let sent = s.write_all(&wire::request(argv));
    let mut reply = Reply::default();
    let mut buf = Vec::new();
    let mut r = io::BufReader::with_capacity(256 << 10, &s);
    loop {
        let kind = match wire::read_frame(&mut r, &mut buf) {
            Ok(k) => k,
            Err(e) => {
                sent?;
                return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                    io::Error::new(e.kind(), "the control reply was cut off")
                } else {
                    e
                });
            }
        };
        let text = String::from_utf8_lossy(&buf);
        match kind {
            wire::KIND_STDOUT => on_stdout(&text)?,
            wire::KIND_STDERR => reply.stderr.push_str(&text),
            wire::KIND_STATUS => {
                reply.status = buf.first().copied().unwrap_or(2);
                return Ok(reply);
            }
            k => {
                return Err(io::Error::other(format!(
                    "unknown control reply frame {k:#04x}"
                )))
            }
        }
    }
}

/// A bound control socket.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Binds `path` with mode 0600 (see the module doc), replacing a stale
    /// socket file; refuses a path a running daemon answers on.
    pub fn bind(path: &Path) -> io::Result<Server> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir)?;
        if path.exists() && UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by a running uvs", path.display()),
            ));
        }
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::other(format!("{} names no file", path.display())))?;
        let private = dir.join(format!(
            ".{}.{}.bind",
            name.to_string_lossy(),
            std::process::id()
        ));
        // A leftover of an earlier process with our PID: ours to clear.
        let _ = std::fs::remove_file(private.join("s"));
        let _ = std::fs::remove_dir(&private);
        std::fs::DirBuilder::new().mode(0o700).create(&private)?;
        let inner = private.join("s");
        let bound = (|| -> io::Result<UnixListener> {
            let l = UnixListener::bind(&inner)?;
            // Only we can reach it in here; narrow it before it is public.
            std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&inner, path)?;
            Ok(l)
        })();
        let _ = std::fs::remove_file(&inner);
        let _ = std::fs::remove_dir(&private);
        let listener = bound?;
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Answers requests until `stop()` returns true, every client at once
    /// (see the module doc); `handle` runs on this thread, one request at
    /// a time, so the configuration has one writer.
    pub fn serve<A: Into<Answer>>(
        &self,
        stop: impl Fn() -> bool,
        mut handle: impl FnMut(Vec<String>) -> A,
    ) {
        let mut h = |argv: Vec<String>| handle(argv).into();
        while !stop() {
            match serve::run(&self.listener, &stop, &mut h) {
                Ok(()) => return,
                Err(e) => {
                    log::warn!("control socket: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
