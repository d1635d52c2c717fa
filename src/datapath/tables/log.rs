//! The LOG target: kernel-format log lines (`-j LOG --log-prefix "web: "`).
//!
//! Contract:
//! * [`LogSpec`] is what a rule's options say ([`LogSpec::option`] parses
//!   them as iptables does; [`LogSpec::save_text`] writes them back as
//!   iptables-save does). `--log-prefix` (at most 29 bytes, no newline),
//!   `--log-level` (a name or 0–7; default 4, warning), `--log-tcp-sequence`,
//!   `--log-tcp-options`, `--log-ip-options` and `--log-macdecode` are
//!   honoured. `--log-uid` is accepted and saved, and prints nothing: the
//!   kernel prints `UID= GID=` only for packets of a local socket, and the
//!   packets uvs sees (forwarded, or written to its TUN device by local
//!   clients) carry no socket owner.
//! * On the packet path a LOG hit ([`record`]) copies what the line needs
//!   into one fixed-size [`Record`] (the first [`CAPTURE`] bytes of the IP
//!   packet, the Ethernet addresses, the interface names, the mark, the
//!   rule's spec and the caller's timestamp) and pushes it onto this
//!   worker's bounded queue: no allocation (the queue is made once per
//!   thread), no lock, no syscall. A full queue drops the record and counts
//!   it (`log.dropped`); nothing is recorded while no [`Drain`] runs (a
//!   library user's pipeline only counts its LOG rules).
//! * A [`Drain`] thread takes at most a queue's length of records from
//!   each worker's queue, formats them ([`format::line`]) and writes them
//!   in batches (each write whole lines, at most 4 KiB, so a pipe never
//!   interleaves them with other output); written lines count as
//!   `log.lines`. While records come it passes every [`TICK`], so a flood
//!   is bounded to `--log-queue` lines per worker per tick, the rest
//!   counted as dropped. After a pass that found nothing it sleeps until
//!   a record is queued (no periodic wake-up: a daemon without LOG rules,
//!   or whose LOG rules match nothing, never wakes it). The doorbell is
//!   `need_wakeup`-like ([`push`]): the drain raises a flag before it
//!   parks, and only the first record pushed after that takes the flag
//!   down and unparks it — one `futex` wake (and an uncontended lock of
//!   the drains' handles) per sleep of the drain, never one per packet;
//!   every other record costs a fence and one load of a line the drain
//!   writes only when it parks or wakes.
//! * Where lines go: the daemon's stderr, each line starting `<N>` (its
//!   syslog level), which systemd's journal reads as the line's priority
//!   (`SyslogLevelPrefix=`, on by default) — so `journalctl -u uvs -p
//!   warning` filters them as `journalctl -k` would the kernel's; then the
//!   packet's time on the monotonic clock, as the kernel's printk time
//!   (`[ 1234.567000]`, millisecond resolution), then the kernel's fields.
//! * `OUT=` is empty at PREROUTING and INPUT (as the kernel prints it); at
//!   FORWARD, OUTPUT and POSTROUTING it names the interface the route
//!   snapshot `-o` matches against gives (`route.rs`: the destination's
//!   route, at POSTROUTING the next hop's). `IN=` and `MAC=` are printed at
//!   PREROUTING, INPUT and FORWARD (the kernel has no input device at
//!   OUTPUT and POSTROUTING).

pub mod format;

use std::cell::OnceCell;
use std::io::Write;
use std::sync::atomic::{
    fence, AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst,
};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use crate::datapath::hooks::HookPoint;
use crate::datapath::stats::add;

/// Bytes of the IP packet a record keeps: enough for the headers of an
/// ICMP error quoting a TCP segment, each with options.
pub const CAPTURE: usize = 192;

/// The longest `--log-prefix` (the kernel's 30-byte field, NUL included).
pub const PREFIX_MAX: usize = 29;

/// Default records per worker queue (`uvs run --log-queue`).
pub const DEFAULT_QUEUE: usize = 1024;

/// How often the drain thread passes while records come.
pub const TICK: Duration = Duration::from_millis(10);

/// `--log-level` when not given (the kernel's default, warning).
pub const DEFAULT_LEVEL: u8 = 4;

/// Option flags (the kernel's `XT_LOG_*` values).
pub mod flag {
    pub const TCP_SEQUENCE: u8 = 0x01;
    pub const TCP_OPTIONS: u8 = 0x02;
    pub const IP_OPTIONS: u8 = 0x04;
    pub const UID: u8 = 0x08;
    pub const MACDECODE: u8 = 0x20;
}

/// The syslog level names iptables accepts, with their numbers.
const LEVELS: [(&str, u8); 9] = [
    ("emerg", 0),
    ("panic", 0),
    ("alert", 1),
    ("crit", 2),
    ("error", 3),
    ("warning", 4),
    ("notice", 5),
    ("info", 6),
    ("debug", 7),
];

/// The boolean options, in iptables-save's order, with their flags.
const FLAGS: [(&str, u8); 5] = [
    ("--log-tcp-sequence", flag::TCP_SEQUENCE),
    ("--log-tcp-options", flag::TCP_OPTIONS),
    ("--log-ip-options", flag::IP_OPTIONS),
    ("--log-uid", flag::UID),
    ("--log-macdecode", flag::MACDECODE),
];

/// A LOG rule's options. `Copy` and small: a record carries it whole, so a
/// line never depends on the ruleset still being the one that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSpec {
    prefix: [u8; PREFIX_MAX],
    prefix_len: u8,
    pub level: u8,
    pub flags: u8,
    /// Options already given (for "twice" errors): bit 0 prefix, 1 level.
    seen: u8,
}

impl Default for LogSpec {
    fn default() -> Self {
        LogSpec {
            prefix: [0; PREFIX_MAX],
            prefix_len: 0,
            level: DEFAULT_LEVEL,
            flags: 0,
            seen: 0,
        }
    }
}

impl LogSpec {
    /// Whether option `opt` takes a value.
    pub fn takes_value(opt: &str) -> bool {
        matches!(opt, "--log-prefix" | "--log-level")
    }

    /// Applies one option (`value` for those that [take
    /// one](LogSpec::takes_value)); errors as iptables words them.
    pub fn option(&mut self, opt: &str, value: Option<&str>) -> Result<(), String> {
        let once = |seen: &mut u8, bit: u8| {
            if *seen & bit != 0 {
                return Err(format!("can't specify {opt} twice"));
            }
            *seen |= bit;
            Ok(())
        };
        match (opt, value) {
            ("--log-prefix", Some(p)) => {
                once(&mut self.seen, 1)?;
                if p.is_empty() {
                    return Err("No prefix specified for --log-prefix".into());
                }
                if p.len() > PREFIX_MAX {
                    return Err(format!(
                        "Maximum prefix length {PREFIX_MAX} for --log-prefix"
                    ));
                }
                if p.contains('\n') {
                    return Err("Newlines not allowed in --log-prefix".into());
                }
                self.prefix[..p.len()].copy_from_slice(p.as_bytes());
                self.prefix_len = p.len() as u8;
                Ok(())
            }
            ("--log-level", Some(l)) => {
                once(&mut self.seen, 2)?;
                self.level = match l.parse::<u8>() {
                    Ok(n) if n <= 7 => n,
                    _ => LEVELS
                        .iter()
                        .find(|(name, _)| *name == l)
                        .map(|&(_, n)| n)
                        .ok_or_else(|| {
                            format!(
                                "log level '{l}' unknown (0-7, or emerg, alert, crit, error, warning, notice, info, debug)"
                            )
                        })?,
                };
                Ok(())
            }
            (o, None) => {
                let &(_, f) = FLAGS.iter().find(|(n, _)| *n == o).ok_or_else(|| {
                    format!(
                        "unknown option '{o}' of -j LOG (--log-prefix, --log-level, --log-tcp-sequence, --log-tcp-options, --log-ip-options, --log-uid, --log-macdecode)"
                    )
                })?;
                self.flags |= f;
                Ok(())
            }
            (o, Some(_)) => Err(format!("{o} takes no value")),
        }
    }

    /// The prefix as given (validated UTF-8 at parse).
    pub fn prefix(&self) -> &str {
        std::str::from_utf8(&self.prefix[..self.prefix_len as usize]).unwrap_or("")
    }

    /// The options as iptables-save writes them after `-j LOG` (each with
    /// its leading space; empty for a LOG with defaults only).
    pub fn save_text(&self) -> String {
        let mut s = String::new();
        if self.prefix_len > 0 {
            s.push_str(" --log-prefix ");
            s.push_str(&save_string(self.prefix()));
        }
        if self.level != DEFAULT_LEVEL {
            s.push_str(&format!(" --log-level {}", self.level));
        }
        for (name, f) in FLAGS {
            if self.flags & f != 0 {
                s.push(' ');
                s.push_str(name);
            }
        }
        s
    }
}

/// A string as iptables-save writes an option's value: bare when it is
/// only letters, digits, `_` and `-`; else in double quotes, with `"`, `\`
/// and `'` escaped by a backslash.
pub fn save_string(v: &str) -> String {
    let bare = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        return v.to_string();
    }
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        if matches!(c, '"' | '\\' | '\'') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// An interface name, NUL-padded (IFNAMSIZ).
pub type IfName = [u8; 16];

fn if_name(s: &str) -> IfName {
    let mut n = [0u8; 16];
    let b = s.as_bytes();
    let l = b.len().min(15);
    n[..l].copy_from_slice(&b[..l]);
    n
}

/// One LOG hit, as the drain formats it. Fixed size: no pointer into the
/// frame, the ruleset or the links outlives the packet.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    /// The caller's clock (the engine's milliseconds).
    pub now_ms: u64,
    pub spec: LogSpec,
    /// The packet's mark when the rule matched.
    pub mark: u32,
    /// `IN=` (empty: none) and `OUT=`.
    pub in_name: IfName,
    pub out_name: IfName,
    /// Destination MAC, source MAC, ethertype; printed only with an input
    /// interface.
    pub mac: [u8; 14],
    pub has_mac: bool,
    /// The first [`CAPTURE`] bytes of the IP packet.
    pub ip: [u8; CAPTURE],
    pub ip_len: u16,
}

impl Record {
    /// A record of the IP packet `ip` (its first [`CAPTURE`] bytes).
    pub fn new(spec: LogSpec, now_ms: u64, ip: &[u8]) -> Record {
        let mut r = Record {
            now_ms,
            spec,
            mark: 0,
            in_name: [0; 16],
            out_name: [0; 16],
            mac: [0; 14],
            has_mac: false,
            ip: [0; CAPTURE],
            ip_len: 0,
        };
        let n = ip.len().min(CAPTURE);
        r.ip[..n].copy_from_slice(&ip[..n]);
        r.ip_len = n as u16;
        r
    }

    /// With `IN=name`.
    pub fn with_in(mut self, name: &str) -> Record {
        self.in_name = if_name(name);
        self
    }

    /// With `OUT=name`.
    pub fn with_out(mut self, name: &str) -> Record {
        self.out_name = if_name(name);
        self
    }
}

/// What a LOG rule needs of the packet besides the walk's [`super::Pkt`]:
/// the frame as it is at this hook (after any rewrite so far), where its
/// IP packet lies, and the caller's clock.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub frame: &'a [u8],
    pub l3_off: usize,
    pub ip_end: usize,
    pub now_ms: u64,
}

impl<'a> Seen<'a> {
    /// The packet `p` (a parse of `frame`) at time `now_ms`.
    #[inline]
    pub fn new(frame: &'a [u8], p: &uvs_fwd::Parsed, now_ms: u64) -> Seen<'a> {
        Seen {
            frame,
            l3_off: p.l3_off,
            ip_end: p.ip_end,
            now_ms,
        }
    }
}

/// One worker's queue and its dropped count (written by that worker only).
struct Queue {
    q: ArrayQueue<Record>,
    dropped: AtomicU64,
}

static QUEUES: Mutex<Vec<Arc<Queue>>> = Mutex::new(Vec::new());
static QUEUE_LEN: AtomicUsize = AtomicUsize::new(DEFAULT_QUEUE);
/// Drains running; records are made only while one does.
static DRAINS: AtomicUsize = AtomicUsize::new(0);
static LINES: AtomicU64 = AtomicU64::new(0);
/// The doorbell: a drain is parked (or about to park) until a record comes.
static SLEEPING: AtomicBool = AtomicBool::new(false);
/// The running drains' threads, for the doorbell to unpark.
static DRAIN_THREADS: Mutex<Vec<Thread>> = Mutex::new(Vec::new());
/// Passes the drains made (each wake-up makes one), for tests and stats.
static PASSES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static MINE: OnceCell<Arc<Queue>> = const { OnceCell::new() };
}

/// Sets the length of the queues made from now on (`--log-queue`; the
/// daemon sets it before its workers start).
pub fn set_queue_len(n: usize) {
    QUEUE_LEN.store(n.max(1), Relaxed);
}

fn new_queue() -> Arc<Queue> {
    let q = Arc::new(Queue {
        q: ArrayQueue::new(QUEUE_LEN.load(Relaxed).max(1)),
        dropped: AtomicU64::new(0),
    });
    if let Ok(mut v) = QUEUES.lock() {
        v.push(q.clone());
    }
    q
}

/// Lines written and records dropped (full queue), since the process
/// started.
pub fn totals() -> (u64, u64) {
    let dropped = QUEUES
        .lock()
        .map(|v| v.iter().map(|q| q.dropped.load(Relaxed)).sum())
        .unwrap_or(0);
    (LINES.load(Relaxed), dropped)
}

/// A LOG hit of the rule `spec` at `point`: a record onto this worker's
/// queue (see the module's contract). `links` names the interfaces.
#[inline(never)]
pub fn record(
    spec: &LogSpec,
    point: HookPoint,
    seen: &Seen<'_>,
    links: &super::iface::Links,
    mark: u32,
    out_if: u32,
) {
    if DRAINS.load(Relaxed) == 0 {
        return;
    }
    let ip = seen
        .frame
        .get(seen.l3_off..seen.ip_end.min(seen.frame.len()))
        .unwrap_or(&[]);
    let mut r = Record::new(*spec, seen.now_ms, ip);
    r.mark = mark;
    let name = |i: u32| -> IfName {
        match links.0.get(&i) {
            Some(n) => if_name(n),
            // Not (yet) in the links read: the index, so the line still
            // says where.
            None if i != 0 => {
                let mut b = [0u8; 16];
                let mut w = &mut b[..15];
                let _ = write!(w, "if{i}");
                b
            }
            None => [0; 16],
        }
    };
    if matches!(
        point,
        HookPoint::PreRouting | HookPoint::LocalIn | HookPoint::Forward
    ) {
        r.in_name = name(super::iface::rx());
        if let (Some(m), Some(t)) = (
            seen.frame.get(..12),
            seen.frame.get(seen.l3_off.wrapping_sub(2)..seen.l3_off),
        ) {
            r.mac[..12].copy_from_slice(m);
            r.mac[12..].copy_from_slice(t);
            r.has_mac = r.in_name[0] != 0;
        }
    }
    r.out_name = name(out_if);
    push(r);
}

/// Onto this thread's queue, or counted as dropped; rings the doorbell
/// when a drain sleeps (see the module's contract).
fn push(r: Record) {
    let _ = MINE.try_with(|m| {
        let q = m.get_or_init(new_queue);
        if q.q.push(r).is_err() {
            add(&q.dropped, 1);
            return;
        }
        // Pairs with the fence in `sleep_until_queued`: either this load
        // sees the flag raised, or that drain's last look sees the record.
        fence(SeqCst);
        if SLEEPING.load(Relaxed) && SLEEPING.swap(false, SeqCst) {
            wake_drains();
        }
    });
}

/// Unparks every drain (the doorbell's rare path: once per drain sleep).
#[cold]
#[inline(never)]
fn wake_drains() {
    if let Ok(v) = DRAIN_THREADS.lock() {
        for t in v.iter() {
            t.unpark();
        }
    }
}

/// Drain passes made since the process started (each wake-up makes one).
pub fn passes() -> u64 {
    PASSES.load(Relaxed)
}

/// Parks the calling drain until a record is queued or `stop` is set
/// (or spuriously, which costs one empty pass). Records pushed before the
/// flag was raised are seen by the last look.
fn sleep_until_queued(stop: &AtomicBool) {
    SLEEPING.store(true, SeqCst);
    fence(SeqCst);
    let queued = QUEUES
        .lock()
        .map(|v| v.iter().any(|q| !q.q.is_empty()))
        .unwrap_or(false);
    if !queued && !stop.load(SeqCst) {
        std::thread::park();
    }
    SLEEPING.store(false, SeqCst);
}

/// The drain thread (see the module's contract); stopped, after a last
/// drain, and joined on drop.
#[derive(Debug)]
pub struct Drain {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drain {
    /// Starts draining every worker's queue into `out`. `epoch` is the
    /// zero of the callers' clock (the engine's), to print each line's
    /// time on the monotonic clock.
    pub fn start(epoch: Instant, out: Box<dyn Write + Send>) -> std::io::Result<Drain> {
        let stop = Arc::new(AtomicBool::new(false));
        let sp = stop.clone();
        // Whole milliseconds, as the records' clock counts.
        let base_us = mono_us().saturating_sub(epoch.elapsed().as_micros() as u64) / 1000 * 1000;
        DRAINS.fetch_add(1, Relaxed);
        let spawned = std::thread::Builder::new()
            .name("uvs-log".into())
            .spawn(move || {
                let me = std::thread::current();
                if let Ok(mut v) = DRAIN_THREADS.lock() {
                    v.push(me.clone());
                }
                let mut out = out;
                let mut buf = String::with_capacity(8192);
                loop {
                    let last = sp.load(SeqCst);
                    PASSES.fetch_add(1, Relaxed);
                    let n = drain_once(base_us, &mut buf, &mut *out);
                    if last {
                        break;
                    }
                    if n > 0 {
                        // Records are coming: the next pass a tick later
                        // (so a flood is bounded per tick).
                        std::thread::sleep(TICK);
                    } else {
                        sleep_until_queued(&sp);
                    }
                }
                let _ = out.flush();
                if let Ok(mut v) = DRAIN_THREADS.lock() {
                    v.retain(|t| t.id() != me.id());
                }
                DRAINS.fetch_sub(1, Relaxed);
            });
        match spawned {
            Ok(t) => Ok(Drain {
                stop,
                thread: Some(t),
            }),
            Err(e) => {
                DRAINS.fetch_sub(1, Relaxed);
                Err(e)
            }
        }
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Writes at most this much at once: whole lines, under a pipe's atomic
/// write size.
const WRITE_AT: usize = 3072;

/// One pass over every queue: at most a queue's length of records each,
/// formatted and written in batches. Returns the lines written.
fn drain_once(base_us: u64, buf: &mut String, out: &mut dyn Write) -> u64 {
    let queues: Vec<Arc<Queue>> = match QUEUES.lock() {
        Ok(v) => v.clone(),
        Err(_) => return 0,
    };
    let mut n = 0;
    for q in &queues {
        for _ in 0..q.q.capacity() {
            let Some(r) = q.q.pop() else { break };
            format::line(&r, base_us, buf);
            n += 1;
            if buf.len() >= WRITE_AT {
                let _ = out.write_all(buf.as_bytes());
                buf.clear();
            }
        }
    }
    if !buf.is_empty() {
        let _ = out.write_all(buf.as_bytes());
        buf.clear();
    }
    LINES.fetch_add(n, Relaxed);
    n
}

/// Microseconds on CLOCK_MONOTONIC (what the kernel's printk time counts,
/// less suspended time).
fn mono_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, a valid,
    // exclusively borrowed local; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1000
}

#[cfg(test)]
mod tests;
