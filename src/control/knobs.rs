//! Runtime knobs: the kernel's IPVS sysctls that uvs implements, set with
//! `uvs run --set-knob NAME=VALUE` at start and read or changed live with
//! `uvs knob [NAME=VALUE…]` (the `knob` control request).
//!
//! A knob is one entry of [`KNOBS`]: its name, its range, a line of help,
//! and two plain functions that read it from and write it into
//! [`Settings`] (the values of every knob, as data). [`Settings::of`]
//! reads the running values from the pipeline and [`Settings::apply`]
//! stores them back, so adding a knob is one table entry, one `Settings`
//! field and a line in each of those two functions. Values are integers,
//! as the sysctls are; a change is checked whole before anything is
//! applied (several `NAME=VALUE` in one request are all-or-nothing).
//!
//! The defences `drop_entry`, `drop_packet` and `secure_tcp` take the
//! kernel's values: 0 never, 1 and 2 automatic (engaged while memory is
//! short; listed as 2 while engaged and 1 while not, as the kernel rewrites
//! the sysctl), 3 always. What "short" means, and what each defence does,
//! is in `uvs-conntrack`'s `defense.rs`; [`tick`] runs it once a second.

use uvs_conntrack::{Defense, Knobs as ConnKnobs, Table};

use crate::datapath::pipeline::Pipeline;

/// The value of every knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The connection table's knobs.
    pub conn: ConnKnobs,
    /// `amemthresh`: pages of available host memory below which the
    /// automatic defences engage.
    pub amemthresh: u32,
    /// `am_droprate`: `drop_packet=3` drops one in this many new packets.
    pub am_droprate: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            conn: ConnKnobs::default(),
            amemthresh: uvs_conntrack::AMEMTHRESH_DEFAULT,
            am_droprate: uvs_conntrack::AM_DROPRATE_DEFAULT,
        }
    }
}

/// Which automatic defences are engaged now (for the 1/2 display).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Engaged {
    pub secure_tcp: bool,
    pub drop_entry: bool,
    pub drop_packet: bool,
}

/// One knob: a table entry.
#[derive(Debug)]
pub struct Knob {
    pub name: &'static str,
    pub min: u32,
    pub max: u32,
    pub help: &'static str,
    /// The value as listed.
    pub get: fn(&Settings, &Engaged) -> u32,
    /// Stores a value already checked against `min..=max`.
    pub set: fn(&mut Settings, u32),
}

impl Knob {
    /// The default value.
    pub fn default_value(&self) -> u32 {
        (self.get)(&Settings::default(), &Engaged::default())
    }
}

fn defense(v: u32) -> Defense {
    // Checked against 0..=3 before `set` is called.
    Defense::from_level(v).unwrap_or_default()
}

/// Every knob, in listing order.
pub const KNOBS: &[Knob] = &[
    Knob {
        name: "expire_nodest_conn",
        min: 0,
        max: 1,
        help: "expire a connection at once when its real server is removed",
        get: |s, _| s.conn.expire_nodest_conn as u32,
        set: |s, v| s.conn.expire_nodest_conn = v != 0,
    },
    Knob {
        name: "expire_quiescent_template",
        min: 0,
        max: 1,
        help: "a persistence template whose server has weight 0 is not used",
        get: |s, _| s.conn.expire_quiescent_template as u32,
        set: |s, v| s.conn.expire_quiescent_template = v != 0,
    },
    Knob {
        name: "sloppy_tcp",
        min: 0,
        max: 1,
        help: "any TCP segment but a RST may create a connection",
        get: |s, _| s.conn.sloppy_tcp as u32,
        set: |s, v| s.conn.sloppy_tcp = v != 0,
    },
    Knob {
        name: "sloppy_sctp",
        min: 0,
        max: 1,
        help: "any SCTP chunk but ABORT may create an association",
        get: |s, _| s.conn.sloppy_sctp as u32,
        set: |s, v| s.conn.sloppy_sctp = v != 0,
    },
    Knob {
        name: "conn_reuse_mode",
        min: 0,
        max: 3,
        help: "a SYN on a closing tuple: 0 reuse, bit 0 reschedule, bit 1 also DR/TUN in FIN_WAIT",
        get: |s, _| s.conn.conn_reuse_mode as u32,
        set: |s, v| s.conn.conn_reuse_mode = v as u8,
    },
    Knob {
        name: "schedule_icmp",
        min: 0,
        max: 1,
        help: "a client's ICMP error about a connection not held creates it",
        get: |s, _| s.conn.schedule_icmp as u32,
        set: |s, v| s.conn.schedule_icmp = v != 0,
    },
    Knob {
        name: "drop_entry",
        min: 0,
        max: 3,
        help: "drop handshake and idle low-packet entries; evict when the table is full",
        get: |s, e| s.conn.drop_entry.level(e.drop_entry),
        set: |s, v| s.conn.drop_entry = defense(v),
    },
    Knob {
        name: "drop_packet",
        min: 0,
        max: 3,
        help: "drop one in every rate connection-opening packets",
        get: |s, e| s.conn.drop_packet.level(e.drop_packet),
        set: |s, v| s.conn.drop_packet = defense(v),
    },
    Knob {
        name: "secure_tcp",
        min: 0,
        max: 3,
        help: "the defensive TCP state table",
        get: |s, e| s.conn.secure_tcp.level(e.secure_tcp),
        set: |s, v| s.conn.secure_tcp = defense(v),
    },
    Knob {
        name: "amemthresh",
        min: 0,
        max: u32::MAX,
        help: "pages of available memory below which automatic defences engage",
        get: |s, _| s.amemthresh,
        set: |s, v| s.amemthresh = v,
    },
    Knob {
        name: "am_droprate",
        min: 0,
        max: u32::MAX,
        help: "drop_packet=3 drops one in this many",
        get: |s, _| s.am_droprate,
        set: |s, v| s.am_droprate = v,
    },
];

/// A knob setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnobError {
    #[error("knob '{0}': expected NAME=VALUE")]
    Syntax(String),
    #[error("unknown knob '{name}' (known: {known})")]
    Unknown { name: String, known: String },
    #[error("knob {name}: value '{value}' must be {min}..{max}")]
    Range {
        name: &'static str,
        value: String,
        min: u32,
        max: u32,
    },
}

/// The knob called `name`.
pub fn find(name: &str) -> Result<&'static Knob, KnobError> {
    KNOBS
        .iter()
        .find(|k| k.name == name)
        .ok_or_else(|| KnobError::Unknown {
            name: name.to_string(),
            known: KNOBS.iter().map(|k| k.name).collect::<Vec<_>>().join(" "),
        })
}

/// Parses `NAME=VALUE` into the knob and a value in its range.
pub fn parse(spec: &str) -> Result<(&'static Knob, u32), KnobError> {
    let (name, val) = spec
        .split_once('=')
        .ok_or_else(|| KnobError::Syntax(spec.to_string()))?;
    let k = find(name.trim())?;
    let val = val.trim();
    let v = val
        .parse::<u32>()
        .ok()
        .filter(|v| (k.min..=k.max).contains(v))
        .ok_or_else(|| KnobError::Range {
            name: k.name,
            value: val.to_string(),
            min: k.min,
            max: k.max,
        })?;
    Ok((k, v))
}

impl Settings {
    /// Applies one `NAME=VALUE` to these settings.
    pub fn set(&mut self, spec: &str) -> Result<(), KnobError> {
        let (k, v) = parse(spec)?;
        (k.set)(self, v);
        Ok(())
    }

    /// The running values, and which automatic defences are engaged.
    pub fn of(p: &Pipeline) -> (Settings, Engaged) {
        let t: &Table = &p.conns;
        let d = t.defense_status();
        (
            Settings {
                conn: t.knobs(),
                amemthresh: t.amemthresh(),
                am_droprate: t.am_droprate(),
            },
            Engaged {
                secure_tcp: d.secure_tcp,
                drop_entry: d.drop_entry,
                drop_packet: d.drop_packet,
            },
        )
    }

    /// Makes these the running values (each takes effect at the next packet
    /// or defence tick).
    pub fn apply(&self, p: &Pipeline) {
        p.conns.set_knobs(&self.conn);
        p.conns.set_amemthresh(self.amemthresh);
        p.conns.set_am_droprate(self.am_droprate);
    }

    /// `name value` lines, one per knob.
    pub fn listing(&self, e: &Engaged) -> String {
        KNOBS
            .iter()
            .map(|k| format!("{} {}\n", k.name, (k.get)(self, e)))
            .collect()
    }
}

/// The `knob` control request: no arguments lists every knob; otherwise
/// every `NAME=VALUE` is checked, then all are applied, and the new values
/// of the knobs named are listed.
pub fn request(args: &[String], p: &Pipeline) -> Result<String, KnobError> {
    let (mut s, e) = Settings::of(p);
    if args.is_empty() {
        return Ok(s.listing(&e));
    }
    let mut named = Vec::with_capacity(args.len());
    for a in args {
        let (k, v) = parse(a)?;
        (k.set)(&mut s, v);
        named.push(k);
    }
    s.apply(p);
    let (s, e) = Settings::of(p);
    Ok(named
        .iter()
        .map(|k| format!("{} {}\n", k.name, (k.get)(&s, &e)))
        .collect())
}

/// Pages of memory the host has available (`MemAvailable` in
/// `/proc/meminfo`), or `None` when it cannot be read.
pub fn mem_available_pages() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if page > 0 { page as u64 } else { 4096 };
    Some(kib * 1024 / page)
}

/// The once-a-second defence step for the engine's timer thread: reads the
/// host's available memory and runs the table's [`Table::defense_tick`].
pub fn tick(t: &Table, now: u64) {
    let s = t.defense_tick(now, mem_available_pages());
    if s.dropped_now != 0 {
        log::debug!("drop_entry removed {} entries", s.dropped_now);
    }
}

/// The connection table's counters and the defence's state, for `uvs
/// stats` and `/metrics`: every entry the table gave up, by reason.
pub fn samples(r: &mut crate::control::registry::Registry, t: &Table) {
    let s = t.stats();
    let counters: [(&str, &str, &'static str, u64); 8] = [
        (
            "inserted",
            "inserted",
            "Entries inserted (connections and templates)",
            s.inserted,
        ),
        (
            "expired",
            "expired",
            "Entries removed when their timeout ran out",
            s.expired,
        ),
        (
            "evicted",
            "evicted",
            "Entries evicted from a full table for a new one (drop_entry)",
            s.evicted,
        ),
        (
            "evicted_established",
            "evicted_established",
            "Of evicted: low-packet ESTABLISHED entries",
            s.evicted_established,
        ),
        (
            "dropped_entry",
            "dropped_entry",
            "Entries removed by drop_entry's once-a-second pass",
            s.dropped_entry,
        ),
        (
            "refused_full",
            "refused_full",
            "New entries refused: table full, nothing to evict",
            s.refused_full,
        ),
        (
            "refused_exists",
            "refused_exists",
            "New entries refused: the tuple was taken",
            s.refused_exists,
        ),
        (
            "rescheduled",
            "rescheduled",
            "Entries replaced by a new connection on their tuple",
            s.rescheduled,
        ),
    ];
    for (key, fam, help, v) in counters {
        r.counter(
            format!("connection_table.{key}"),
            format!("connection_table_{fam}"),
            help,
            vec![],
            v,
        );
    }
    let d = t.defense_status();
    let gauges: [(&str, &'static str, u64); 4] = [
        (
            "secure_tcp",
            "1 while the secure_tcp defence is engaged",
            d.secure_tcp as u64,
        ),
        (
            "drop_entry",
            "1 while the drop_entry defence is engaged",
            d.drop_entry as u64,
        ),
        (
            "drop_packet",
            "1 while the drop_packet defence is engaged",
            d.drop_packet as u64,
        ),
        (
            "drop_rate",
            "drop_packet drops one in this many new packets (0: none)",
            d.drop_rate as u64,
        ),
    ];
    for (key, help, v) in gauges {
        r.gauge(
            format!("defense.{key}"),
            format!("defense_{key}"),
            help,
            vec![],
            v,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline() -> Pipeline {
        Pipeline::new(Table::new(uvs_conntrack::Config::default()))
    }

    #[test]
    fn every_knob_round_trips_through_its_table_entry() {
        for k in KNOBS {
            let mut s = Settings::default();
            let v = if k.max == 1 { 1 } else { k.max.min(3) };
            s.set(&format!("{}={v}", k.name)).unwrap();
            assert_eq!((k.get)(&s, &Engaged::default()), v.min(k.max), "{}", k.name);
            s.set(&format!("{}={}", k.name, k.min)).unwrap();
            assert_eq!((k.get)(&s, &Engaged::default()), k.min, "{}", k.name);
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let mut s = Settings::default();
        let e = s.set("secure_tcp=4").unwrap_err().to_string();
        assert_eq!(e, "knob secure_tcp: value '4' must be 0..3");
        let e = s.set("nope=1").unwrap_err().to_string();
        assert!(
            e.starts_with("unknown knob 'nope' (known: expire_nodest_conn"),
            "{e}"
        );
        assert!(
            e.contains(" drop_packet ") && e.contains(" amemthresh "),
            "{e}"
        );
        assert_eq!(
            s.set("drop_entry").unwrap_err(),
            KnobError::Syntax("drop_entry".into())
        );
        assert!(s.set("amemthresh=-1").is_err());
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn automatic_modes_list_as_the_kernel_shows_them() {
        let p = pipeline();
        let out = request(&["drop_packet=1".into(), "amemthresh=4096".into()], &p).unwrap();
        assert_eq!(out, "drop_packet 1\namemthresh 4096\n");
        // Engaged by a host short of memory: listed as 2.
        p.conns.defense_tick(0, Some(10));
        let all = request(&[], &p).unwrap();
        assert!(all.contains("\ndrop_packet 2\n"), "{all}");
        assert!(all.contains("\ndrop_entry 2\n"), "{all}");
        assert!(all.contains("\nsecure_tcp 0\n"), "{all}");
        // All-or-nothing: one bad setting changes nothing.
        assert!(request(&["secure_tcp=3".into(), "sloppy_tcp=2".into()], &p).is_err());
        assert_eq!(p.conns.knobs().secure_tcp, Defense::Off);
    }

    #[test]
    fn host_memory_is_read() {
        assert!(mem_available_pages().is_some_and(|p| p > 0));
    }
}
