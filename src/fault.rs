//! Faults of the engine's threads. A worker (or the timer) that panics is
//! never silent: the panic is caught at the top of the thread, logged with
//! its message, counted, and the engine's stop flag is raised; `uvs run`
//! sees the count, logs it and exits non-zero, so a supervisor (systemd's
//! `Restart=`) restarts it whole. A worker is not restarted in place: its
//! rings and sockets went down with the panic, and a data path missing one
//! worker's share of the traffic is worse than none.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// The panics of the engine's threads.
#[derive(Debug, Default)]
pub struct Faults {
    panics: AtomicU64,
    first: Mutex<Option<String>>,
}

/// A panic payload's message (`panic!` gives a `&str` or a `String`).
fn message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

impl Faults {
    /// Runs `f` as thread `name`'s body; a panic in it is logged, counted
    /// and raises `stop` (see the module doc). `None` if it panicked.
    pub fn guard<R>(&self, name: &str, stop: &AtomicBool, f: impl FnOnce() -> R) -> Option<R> {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => Some(r),
            Err(p) => {
                let msg = message(p.as_ref());
                log::error!("{name} panicked: {msg}; stopping the engine");
                self.panics.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| format!("{name}: {msg}"));
                stop.store(true, Ordering::Relaxed);
                None
            }
        }
    }

    /// Panics so far.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// The first panic: its thread and message.
    pub fn first(&self) -> Option<String> {
        self.first.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, RawFd};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::datapath::pipeline::Pipeline;
    use crate::engine::{Backend, Engine};
    use crate::io::{RxRing, RxSource, TxBatch};

    #[test]
    fn a_panic_is_caught_counted_and_stops() {
        let f = Faults::default();
        let stop = AtomicBool::new(false);
        assert_eq!(f.guard("ok", &stop, || 7), Some(7));
        assert!(!stop.load(Ordering::Relaxed));
        let r: Option<()> = f.guard("uvs-worker-3", &stop, || panic!("boom {}", 1));
        assert_eq!(r, None);
        assert_eq!(f.panics(), 1);
        assert!(stop.load(Ordering::Relaxed));
        assert_eq!(f.first().as_deref(), Some("uvs-worker-3: boom 1"));
    }

    /// A source that is always readable and panics when read (the second
    /// end of the pair is kept so the first stays readable).
    #[allow(dead_code)]
    struct Bomb(
        std::os::unix::net::UnixDatagram,
        std::os::unix::net::UnixDatagram,
    );

    impl AsRawFd for Bomb {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
    }

    impl RxSource for Bomb {
        type Batch<'a> = <RxRing as RxSource>::Batch<'a>;
        fn rx_batch(&mut self, _max: usize) -> Self::Batch<'_> {
            panic!("injected worker fault")
        }
        fn ifindex(&self) -> u32 {
            1
        }
        fn take_kernel_drops(&mut self) -> std::io::Result<u64> {
            Ok(0)
        }
    }

    #[test]
    fn a_panicking_worker_is_counted_and_stops_the_engine() {
        let Ok(tx) = TxBatch::new(8, 1) else {
            eprintln!("skipping: a packet socket needs CAP_NET_RAW");
            return;
        };
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        b.send(b"x").unwrap();
        let pl = Arc::new(Pipeline::new(uvs_conntrack::Table::new(Default::default())));
        let mut e = Engine::start_with(
            pl,
            Vec::new(),
            vec![Backend {
                rx: vec![Bomb(a, b)],
                tx,
            }],
            0,
        )
        .expect("engine starts");
        let end = Instant::now() + Duration::from_secs(10);
        while e.faults.panics() == 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(e.faults.panics(), 1);
        assert!(e.faults.first().unwrap().contains("injected worker fault"));
        e.stop();
    }
}
