//! BIRD as uvs's child, and the thread that keeps its configuration in step
//! with the announced set (see the module above for the contract).
//!
//! The thread that spawns BIRD is the one that lives as long as it:
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends,
//! so BIRD is started (and restarted) only from the `uvs-bgp` thread, which
//! ends after it has stopped BIRD itself.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{announced_vip, render, BgpConfig, BgpError, VipSet, MIN_INTERVAL, RESTART_DELAY};
use crate::control::ctl;
use crate::control::registry::Registry;

/// The files of the runtime directory (the only ones removed from it).
const CONF: &str = "bird.conf";
const CONF_NEW: &str = "bird.conf.new";
const CTL: &str = "bird.ctl";
const PID: &str = "bird.pid";

/// How long BIRD may take to answer on its control socket at start.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// A control socket request's time limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// After the withdrawing `configure` of a clean stop: time for the UPDATEs.
const WITHDRAW_PAUSE: Duration = Duration::from_millis(300);
/// How often the thread looks at BIRD when nothing changes.
const LIVENESS: Duration = Duration::from_millis(500);

/// The running BGP speaker; [`Bgp::stop`] (or drop) withdraws, stops BIRD
/// and removes the runtime directory.
#[derive(Debug)]
pub struct Bgp {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// VIPs in the configuration BIRD last accepted.
    announced: AtomicU64,
    reconfigures: AtomicU64,
    failures: AtomicU64,
    restarts: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    set: VipSet,
    /// Bumped whenever the announced set changes.
    generation: u64,
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Bgp {
    /// Clears the runtime directory, writes BIRD's configuration for the
    /// services of `config`, starts BIRD and waits until its control socket
    /// answers.
    pub fn start(cfg: BgpConfig, config: &ctl::Config) -> Result<Bgp, BgpError> {
        let shared = Arc::new(Shared::default());
        {
            let mut st = shared.lock();
            for svc in &config.services {
                st.set.set(svc.key, announced_vip(svc));
            }
        }
        let dir = cfg.runtime_dir.clone();
        let dir_err = |err| BgpError::RuntimeDir {
            path: dir.display().to_string(),
            err,
        };
        clear_dir(&dir).map_err(dir_err)?;
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(dir_err)?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(dir_err)?;
        let vips = shared.lock().set.vips();
        write_conf(&dir, &render(&cfg, &vips)).map_err(dir_err)?;
        shared.announced.store(vips.len() as u64, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("uvs-bgp".into())
            .spawn(move || speaker(&sh, &cfg, tx))
            .map_err(|err| BgpError::Spawn {
                path: "the uvs-bgp thread".into(),
                err,
            })?;
        let mut bgp = Bgp {
            shared,
            thread: Some(thread),
            dir,
        };
        match rx.recv() {
            Ok(Ok(())) => {
                log::info!(
                    "bgp: BIRD announces {} VIP(s); runtime directory {}",
                    vips.len(),
                    bgp.dir.display()
                );
                Ok(bgp)
            }
            Ok(Err(e)) => {
                bgp.shutdown();
                Err(e)
            }
            Err(_) => {
                bgp.shutdown();
                Err(BgpError::NotReady("the uvs-bgp thread ended".into()))
            }
        }
    }

    /// After a commit: the services `keys` of `config` (as it is now) may
    /// hold their VIPs up or not any more. O(keys); wakes the BGP thread
    /// only when the announced set changed.
    pub fn update(&self, config: &ctl::Config, keys: &[ctl::SvcKey]) {
        let mut st = self.shared.lock();
        let mut changed = false;
        for k in keys {
            changed |= st.set.set(*k, config.service(k).and_then(announced_vip));
        }
        if changed {
            st.generation += 1;
            self.shared.wake.notify_all();
        }
    }

    /// `bgp.*` in `uvs stats`.
    pub fn register(&self, r: &mut Registry) {
        let s = &self.shared;
        r.gauge(
            "bgp.announced",
            "bgp_announced",
            "VIPs in the configuration BIRD last accepted",
            vec![],
            s.announced.load(Ordering::Relaxed),
        );
        r.counter(
            "bgp.reconfigures",
            "bgp_reconfigures",
            "BIRD configurations accepted after a change of the announced set",
            vec![],
            s.reconfigures.load(Ordering::Relaxed),
        );
        r.counter(
            "bgp.reconfigure_failures",
            "bgp_reconfigure_failures",
            "BIRD reconfigurations refused or unanswered (tried again)",
            vec![],
            s.failures.load(Ordering::Relaxed),
        );
        r.counter(
            "bgp.bird_restarts",
            "bgp_bird_restarts",
            "times BIRD exited while uvs ran and was started again",
            vec![],
            s.restarts.load(Ordering::Relaxed),
        );
    }

    /// Withdraws every VIP, stops BIRD, removes the runtime directory.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(t) = self.thread.take() else {
            return;
        };
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        let _ = t.join();
        if let Err(e) = clear_dir(&self.dir) {
            log::warn!("bgp: removing {}: {e}", self.dir.display());
        }
    }
}

impl Drop for Bgp {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Removes the runtime directory's known files and the directory (absent:
/// fine). Other files in it are left, and make it an error.
fn clear_dir(dir: &Path) -> io::Result<()> {
    for f in [CONF, CONF_NEW, CTL, PID] {
        match std::fs::remove_file(dir.join(f)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Replaces the configuration file atomically (BIRD never reads half).
fn write_conf(dir: &Path, text: &str) -> io::Result<()> {
    let new = dir.join(CONF_NEW);
    std::fs::write(&new, text)?;
    std::fs::rename(&new, dir.join(CONF))
}

/// `bird -f` (foreground: the child is BIRD itself) with SIGTERM as its
/// parent-death signal, in its own process group; its output goes where
/// uvs's goes.
fn spawn(cfg: &BgpConfig) -> Result<Child, BgpError> {
    let dir = &cfg.runtime_dir;
    let parent = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(&cfg.bird);
    cmd.arg("-f")
        .arg("-c")
        .arg(dir.join(CONF))
        .arg("-s")
        .arg(dir.join(CTL))
        .arg("-P")
        .arg(dir.join(PID))
        .stdin(Stdio::null())
        // Its own process group: a terminal's Ctrl-C reaches uvs alone,
        // which then withdraws before it stops BIRD.
        .process_group(0);
    // SAFETY: the closure runs in the forked child before exec; it calls
    // only prctl(2) and getppid(2), which are async-signal-safe, and builds
    // its errors without allocating.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // uvs died between fork and prctl: the signal will never come.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    };
    cmd.spawn().map_err(|err| BgpError::Spawn {
        path: cfg.bird.display().to_string(),
        err,
    })
}

/// Waits until BIRD answers on its control socket.
fn wait_ready(cfg: &BgpConfig, child: &mut Child) -> Result<(), BgpError> {
    let end = Instant::now() + READY_TIMEOUT;
    let sock = cfg.runtime_dir.join(CTL);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(BgpError::NotReady(format!("bird exited ({st})")));
        }
        if request(&sock, "show status").is_ok() {
            return Ok(());
        }
        if Instant::now() > end {
            terminate(child);
            return Err(BgpError::NotReady(format!(
                "no answer on {} within {READY_TIMEOUT:?}",
                sock.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM (BIRD's orderly shutdown: a Cease to every peer), SIGKILL after
/// 3 s; reaped.
fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on the PID of our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One request on BIRD's control socket; the reply's text, or why not.
/// Replies are lines `NNNN-text` (more follow), `NNNN text` (the last) and
/// ` text` (continuing the previous); codes 8000 and up are errors.
pub fn request(sock: &Path, cmd: &str) -> Result<String, String> {
    let s = UnixStream::connect(sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(REQUEST_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    read_reply(&mut r)?; // the greeting, "0001 BIRD 2.x ready."
    (&s).write_all(format!("{cmd}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    read_reply(&mut r)
}

/// Reads one reply (see [`request`]).
pub fn read_reply(r: &mut impl BufRead) -> Result<String, String> {
    let mut text = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err(format!("BIRD closed the socket after {text:?}"));
        }
        let l = line.trim_end_matches('\n');
        let code = l.get(..4).and_then(|c| c.parse::<u32>().ok());
        match (code, l.as_bytes().get(4)) {
            (Some(code), Some(b' ')) | (Some(code), None) => {
                text.push_str(l.get(5..).unwrap_or(""));
                return if code >= 8000 { Err(text) } else { Ok(text) };
            }
            (Some(_), Some(b'-')) => {
                text.push_str(&l[5..]);
                text.push('\n');
            }
            _ => {
                text.push_str(l.trim_start());
                text.push('\n');
            }
        }
    }
}

/// The `uvs-bgp` thread: starts BIRD, reports readiness on `ready`, then
/// applies each change of the announced set (rate-limited), restarts BIRD
/// if it exits, and on stop withdraws and stops it.
fn speaker(shared: &Shared, cfg: &BgpConfig, ready: std::sync::mpsc::Sender<Result<(), BgpError>>) {
    let started = spawn(cfg).and_then(|mut c| wait_ready(cfg, &mut c).map(|()| c));
    let mut child = match started {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let sock = cfg.runtime_dir.join(CTL);
    let mut applied = shared.lock().generation;
    let mut last = Instant::now() - MIN_INTERVAL;
    loop {
        let st = shared.lock();
        let (st, _) = shared
            .wake
            .wait_timeout_while(st, LIVENESS, |s| !s.stop && s.generation == applied)
            .unwrap_or_else(|p| p.into_inner());
        if st.stop {
            break;
        }
        drop(st);
        if let Ok(Some(status)) = child.try_wait() {
            log::error!(
                "bgp: BIRD exited ({status}); the routers drop this director; restarting in {RESTART_DELAY:?}"
            );
            shared.restarts.fetch_add(1, Ordering::Relaxed);
            if pause(shared, RESTART_DELAY) {
                return;
            }
            // It reads the configuration file, which holds the newest set.
            let written = write_current(shared, cfg);
            match spawn(cfg).and_then(|mut c| wait_ready(cfg, &mut c).map(|()| c)) {
                Ok(c) => {
                    child = c;
                    if let Ok((g, n)) = written {
                        applied = g;
                        shared.announced.store(n, Ordering::Relaxed);
                    }
                }
                Err(e) => log::error!("bgp: {e}"),
            }
            continue;
        }
        let due = last + MIN_INTERVAL;
        if Instant::now() < due {
            if pause(shared, due - Instant::now()) {
                break;
            }
            continue;
        }
        let gen = shared.lock().generation;
        if gen == applied {
            continue;
        }
        last = Instant::now();
        match write_current(shared, cfg)
            .map_err(|e| e.to_string())
            .and_then(|w| request(&sock, "configure").map(|_| w))
        {
            Ok((g, n)) => {
                applied = g;
                shared.announced.store(n, Ordering::Relaxed);
                shared.reconfigures.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                shared.failures.fetch_add(1, Ordering::Relaxed);
                log::warn!("bgp: BIRD reconfiguration failed (tried again): {e}");
            }
        }
    }
    // A clean stop: withdraw, give the UPDATEs a moment, stop BIRD.
    if child.try_wait().ok().flatten().is_none() {
        let empty = render(cfg, &[]);
        match write_conf(&cfg.runtime_dir, &empty)
            .map_err(|e| e.to_string())
            .and_then(|()| request(&sock, "configure"))
        {
            Ok(_) => {
                shared.announced.store(0, Ordering::Relaxed);
                log::info!("bgp: VIPs withdrawn");
                std::thread::sleep(WITHDRAW_PAUSE);
            }
            Err(e) => log::warn!("bgp: withdrawing: {e}; stopping BIRD closes the sessions"),
        }
    }
    terminate(&mut child);
}

/// Writes the configuration for the set as it is now; returns its
/// generation and how many VIPs it announces.
fn write_current(shared: &Shared, cfg: &BgpConfig) -> io::Result<(u64, u64)> {
    let (vips, gen) = {
        let st = shared.lock();
        (st.set.vips(), st.generation)
    };
    write_conf(&cfg.runtime_dir, &render(cfg, &vips))?;
    Ok((gen, vips.len() as u64))
}

/// Sleeps `d` unless a stop comes first; returns whether it did.
fn pause(shared: &Shared, d: Duration) -> bool {
    let st = shared.lock();
    let (st, _) = shared
        .wake
        .wait_timeout_while(st, d, |s| !s.stop)
        .unwrap_or_else(|p| p.into_inner());
    st.stop
}
