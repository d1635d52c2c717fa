//! Running code inside a named network namespace (`ip netns` convention:
//! `/run/netns/NAME`). The namespace is per thread, so a closure runs on a
//! fresh thread that joins the namespace first; the caller's thread never
//! changes namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Moves the current thread into the namespace `name`.
pub fn enter(name: &str) -> io::Result<()> {
    let f = File::open(format!("/run/netns/{name}"))?;
    // SAFETY: setns(2) with a valid namespace fd; it only affects this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a new thread inside namespace `name` and returns its result.
pub fn run_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let name = name.to_string();
    std::thread::spawn(move || -> io::Result<T> {
        enter(&name)?;
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("thread in namespace panicked"))?
}

/// Starts `f` on a detached thread inside namespace `name`; the thread
/// reports whether it could enter the namespace before `f` runs.
pub fn spawn_in(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    let name = name.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let r = enter(&name);
        let ok = r.is_ok();
        let _ = tx.send(r);
        if ok {
            f();
        }
    });
    rx.recv()
        .map_err(|_| io::Error::other("namespace thread died"))??;
    Ok(h)
}
