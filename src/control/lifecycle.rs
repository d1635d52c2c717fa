//! How `uvs run` lives under a service manager: the files it re-reads on
//! reload ([`Sources`]), SIGHUP as a reload ([`reload_on_sighup`]), and the
//! systemd readiness protocol ([`notify`], through the `sd-notify` crate; a
//! no-op without `NOTIFY_SOCKET`).
//!
//! SIGHUP does not reload from the signal handler: a thread waits for the
//! signal and sends the daemon's own control socket a `reload` request, so
//! a reload is one more control command, serialised with every other
//! change on the control thread (one writer), answered and logged the same
//! way as `uvs reload`.

use std::path::{Path, PathBuf};

use crate::control::reload::{ReloadError, Text, Texts};
use crate::control::socket;

/// The files `uvs run` was started with, re-read on every reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--filter FILE`.
    pub filter: Option<PathBuf>,
    /// `--tables FILE` (iptables-save text).
    pub tables: Option<PathBuf>,
    /// `--keepalived FILE` (its includes are read when it is parsed).
    pub keepalived: Option<PathBuf>,
    /// `--ipsets FILE` (`ipset save` text).
    pub ipsets: Option<PathBuf>,
}

impl Sources {
    /// Reads every configured file; the first unreadable one fails.
    pub fn read(&self) -> Result<Texts, ReloadError> {
        Ok(Texts {
            config: read(&self.config)?,
            filter: read(&self.filter)?,
            keepalived: read(&self.keepalived)?,
        })
    }

    /// Reads the `--ipsets` file, if one was given.
    pub fn read_ipsets(&self) -> Result<Option<Text>, ReloadError> {
        read(&self.ipsets)
    }

    /// Reads the `--tables` file, if one was given.
    pub fn read_tables(&self) -> Result<Option<Text>, ReloadError> {
        read(&self.tables)
    }
}

/// Reads one optional file, named by its path in the error.
fn read(p: &Option<PathBuf>) -> Result<Option<Text>, ReloadError> {
    let Some(p) = p else { return Ok(None) };
    let name = p.display().to_string();
    match std::fs::read_to_string(p) {
        Ok(text) => Ok(Some(Text { name, text })),
        Err(err) => Err(ReloadError::Read { name, err }),
    }
}

/// Makes SIGHUP reload the daemon listening on `control`: installs the
/// handler now (so SIGHUP no longer ends the process) and starts a thread
/// that, per signal, sends `reload` to the control socket and logs the
/// answer.
pub fn reload_on_sighup(control: &Path) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    let control = control.to_path_buf();
    std::thread::Builder::new()
        .name("uvs-sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                match socket::call(&control, &["reload".to_string()]) {
                    // The daemon logs the outcome itself.
                    Ok(_) => {}
                    Err(e) => eprintln!("uvs: SIGHUP: reload: {e}"),
                }
            }
        })?;
    Ok(())
}

/// What `uvs run` tells the service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State<'a> {
    /// Workers run and the control socket listens (READY=1, STATUS=).
    Ready(&'a str),
    /// A reload begins (RELOADING=1 with the monotonic time, as systemd
    /// wants it).
    Reloading,
    /// Stopping (STOPPING=1).
    Stopping,
}

/// Sends `state` to the service manager if there is one (`NOTIFY_SOCKET`);
/// a failure is logged, never fatal.
pub fn notify(state: State<'_>) {
    use sd_notify::NotifyState as N;
    let r = match state {
        State::Ready(status) => sd_notify::notify(&[N::Ready, N::Status(status)]),
        State::Reloading => N::monotonic_usec_now()
            .and_then(|now| sd_notify::notify(&[N::Reloading, now, N::Status("reloading")])),
        State::Stopping => sd_notify::notify(&[N::Stopping, N::Status("stopping")]),
    };
    if let Err(e) = r {
        eprintln!("uvs: telling the service manager ({state:?}): {e}");
    }
}
