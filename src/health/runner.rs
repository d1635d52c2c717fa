//! The checker thread: schedules every checker of a [`Health`] by its due
//! time, hands due probes to a small fixed pool of probe threads (so a
//! probe waiting for its timeout delays no other), records the results,
//! and when the table changes calls `on_change` (the daemon's
//! `health-sync`, through its control socket, so every table change is
//! made by the daemon's one writer). A failed `on_change` is retried.
//!
//! Nothing here runs on the data path or holds the state's lock across a
//! probe or `on_change`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::Job;
use super::{probe, Health};

/// The longest the scheduler sleeps: how soon it sees a reload's new
/// checkers and a stop.
const TICK: Duration = Duration::from_millis(50);

/// Probe threads.
pub const POOL: usize = 4;

/// The running checker; stopped and joined on drop (probe threads finish
/// their current probe, bounded by its timeout, on their own).
#[derive(Debug)]
pub struct Runner {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Done = (Job, Result<Option<u32>, String>);

/// Starts checking `health`; `on_change` returns whether the change was
/// applied (else it is tried again on the next tick).
pub fn start(
    health: Arc<Health>,
    on_change: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<Runner> {
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
    for i in 0..POOL {
        let (rx, tx) = (job_rx.clone(), done_tx.clone());
        std::thread::Builder::new()
            .name(format!("uvs-probe{i}"))
            .spawn(move || {
                for job in rx {
                    let r = probe::run(&job.check, job.target);
                    if tx.send((job, r)).is_err() {
                        break;
                    }
                }
            })?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sp = stop.clone();
    let thread = std::thread::Builder::new()
        .name("uvs-health".into())
        .spawn(move || {
            let mut jobs = Vec::new();
            let mut dirty = false;
            while !sp.load(Ordering::Relaxed) {
                let next = health.lock().due(Instant::now(), &mut jobs);
                for j in jobs.drain(..) {
                    let _ = job_tx.send(j);
                }
                let wait = next
                    .map_or(TICK, |n| n.saturating_duration_since(Instant::now()))
                    .min(TICK);
                if let Ok(d) = done_rx.recv_timeout(wait) {
                    let mut st = health.lock();
                    let now = Instant::now();
                    dirty |= st.record(d.0.id, d.0.serial, d.1, now);
                    while let Ok(d) = done_rx.try_recv() {
                        dirty |= st.record(d.0.id, d.0.serial, d.1, now);
                    }
                }
                if dirty {
                    dirty = !on_change();
                }
            }
            // Dropping job_tx ends the probe threads after their probe.
        })?;
    Ok(Runner {
        stop,
        thread: Some(thread),
    })
}
