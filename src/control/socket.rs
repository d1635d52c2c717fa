//! The control socket: a Unix stream socket (default `/run/uvs/uvs.sock`,
//! mode 0600) over which `uvsadm` and `uvs` subcommands talk to the engine.
//!
//! Wire format, both directions length-prefixed (u32 big-endian):
//! request = argv words joined by NUL; response = one status byte (0 = ok,
//! otherwise the exit status to use), then stdout text, then stderr text.
//! The daemon parses the words itself, so every client (uvsadm, `uvs filter`,
//! scripts) gets the same validation and messages.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default control socket path.
pub const DEFAULT_PATH: &str = "/run/uvs/uvs.sock";
/// Environment variable naming the control socket.
pub const ENV: &str = "UVS_CONTROL";
const MAX_MSG: usize = 64 << 20;

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

fn write_frame(w: &mut impl Write, b: &[u8]) -> io::Result<()> {
    w.write_all(&(b.len() as u32).to_be_bytes())?;
    w.write_all(b)
}

/// Reads one length-prefixed frame (also the fuzz target's decoder).
pub(crate) fn read_frame(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut l = [0u8; 4];
    r.read_exact(&mut l)?;
    let n = u32::from_be_bytes(l) as usize;
    if n > MAX_MSG {
        return Err(io::Error::other(format!(
            "control message of {n} bytes is too large"
        )));
    }
    let mut b = vec![0u8; n];
    r.read_exact(&mut b)?;
    Ok(b)
}

/// The socket path: `--control` if given, else `$UVS_CONTROL`, else the default.
pub fn path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// Sends `argv` to the engine at `path` and returns its reply.
pub fn call(path: &Path, argv: &[String]) -> io::Result<Reply> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach uvs at {} ({e}); is `uvs run` running?",
                path.display()
            ),
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write_frame(&mut s, argv.join("\0").as_bytes())?;
    let mut b = read_frame(&mut s)?;
    if b.is_empty() {
        return Err(io::Error::other("empty control reply"));
    }
    let status = b.remove(0);
    let out = read_frame(&mut s)?;
    Ok(Reply {
        status,
        stdout: String::from_utf8_lossy(&out).into(),
        stderr: String::from_utf8_lossy(&b).into(),
    })
}

/// A bound control socket.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Binds `path` (mode 0600), replacing a stale socket file.
    pub fn bind(path: &Path) -> io::Result<Server> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running uvs", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Answers requests until `stop()` returns true, one at a time (the
    /// configuration is changed by one writer).
    pub fn serve(&self, stop: impl Fn() -> bool, mut handle: impl FnMut(Vec<String>) -> Reply) {
        while !stop() {
            match self.listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let reply = match read_frame(&mut s) {
                        Ok(b) => {
                            let text = String::from_utf8_lossy(&b);
                            let argv = if text.is_empty() {
                                Vec::new()
                            } else {
                                text.split('\0').map(String::from).collect()
                            };
                            handle(argv)
                        }
                        Err(e) => Reply::err(format!("bad control request: {e}")),
                    };
                    let mut head = vec![reply.status];
                    head.extend_from_slice(reply.stderr.as_bytes());
                    let _ = write_frame(&mut s, &head)
                        .and_then(|_| write_frame(&mut s, reply.stdout.as_bytes()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Wait for the next client without adding latency to
                    // its command; wake now and then to check `stop`.
                    let mut pfd = libc::pollfd {
                        fd: std::os::fd::AsRawFd::as_raw_fd(&self.listener),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: `pfd` is one valid pollfd, as the count says.
                    unsafe { libc::poll(&mut pfd, 1, 100) };
                }
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
