//! Why a scheduler picked the server it picked, for `uvs trace`.
//!
//! [`Scheduler::schedule_explained`](crate::Scheduler::schedule_explained)
//! schedules exactly as [`Scheduler::schedule`](crate::Scheduler::schedule)
//! does (same state, same side effects) and also fills an [`Explain`]: a
//! small fixed-size value (no allocation), so it may run on a worker. It is
//! called only for packets being traced; the untraced path keeps calling
//! `schedule`, which has no explaining to do. Schedulers that do not
//! override it report the bare pick ([`How::Picked`]); rr names the server
//! it continued after, the least-connection family the overheads it
//! compared, and both list the servers they passed over and why.

use std::fmt;
use std::net::SocketAddr;

use crate::Dest;

/// Most passed-over servers an [`Explain`] names (the rest are counted).
pub const SKIPPED: usize = 4;

/// Why a server was passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Weight 0 (quiesced).
    WeightZero,
    /// Over its upper connection threshold (`-x`).
    Overloaded,
    /// Removed from the service (its connections linger).
    Unavailable,
}

impl Skip {
    /// Why `d` cannot take a new connection, if it cannot.
    pub fn of(d: &Dest) -> Option<Skip> {
        if d.can_schedule() {
            None
        } else if !d.is_available() {
            Some(Skip::Unavailable)
        } else if d.is_overloaded() {
            Some(Skip::Overloaded)
        } else {
            Some(Skip::WeightZero)
        }
    }

    /// The words a trace prints.
    pub fn name(self) -> &'static str {
        match self {
            Skip::WeightZero => "weight 0 skipped",
            Skip::Overloaded => "overloaded",
            Skip::Unavailable => "removed",
        }
    }
}

/// One server's load as the least-connection schedulers compare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub server: SocketAddr,
    /// `active × 256 + inactive` (or the scheduler's own formula).
    pub overhead: u64,
    pub weight: u32,
}

/// How the pick was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum How {
    /// Not explained further (the scheduler's own rule).
    #[default]
    Picked,
    /// Round robin: the next schedulable server after `after` (`None`: the
    /// first pick, from the head of the list).
    NextAfter { after: Option<SocketAddr> },
    /// The least overhead per weight; `next` is the runner-up, if any.
    Least { chosen: Load, next: Option<Load> },
    /// No server could take the connection.
    NoDestination,
}

/// A scheduler's reason for one pick (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Explain {
    pub how: How,
    /// Servers passed over, in the order met (the first [`SKIPPED`]).
    pub skipped: [Option<(SocketAddr, Skip)>; SKIPPED],
    /// How many were passed over in all.
    pub n_skipped: u32,
}

impl Explain {
    /// Notes that `d` was passed over because of `why`.
    pub fn skip(&mut self, d: &Dest, why: Skip) {
        if let Some(slot) = self.skipped.get_mut(self.n_skipped as usize) {
            *slot = Some((SocketAddr::new(d.addr, d.port), why));
        }
        self.n_skipped = self.n_skipped.saturating_add(1);
    }

    /// The reason as one line, e.g. `rr: next after 203.0.113.11:80` or
    /// `wlc: 203.0.113.12:80 overhead 3 < 5 (203.0.113.11:80)`; `sched` is
    /// the scheduler's name and `picked` the server chosen.
    pub fn line(&self, sched: &str, picked: Option<SocketAddr>) -> String {
        Line(self, sched, picked).to_string()
    }
}

struct Line<'a>(&'a Explain, &'a str, Option<SocketAddr>);

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Line(e, sched, picked) = *self;
        write!(f, "{sched}: ")?;
        match (e.how, picked) {
            (How::NoDestination, _) | (_, None) => write!(f, "no server can take it")?,
            (How::NextAfter { after: Some(a) }, Some(p)) => write!(f, "{p}, next after {a}")?,
            (How::NextAfter { after: None }, Some(p)) => write!(f, "{p}, first in the list")?,
            (How::Least { chosen, next }, Some(p)) => {
                let w = |l: &Load| {
                    if l.weight == 1 {
                        String::new()
                    } else {
                        format!("/{}", l.weight)
                    }
                };
                write!(f, "{p} overhead {}{}", chosen.overhead, w(&chosen))?;
                match next {
                    Some(n) => write!(f, " < {}{} ({})", n.overhead, w(&n), n.server)?,
                    None => write!(f, ", the only one schedulable")?,
                }
            }
            (How::Picked, Some(p)) => write!(f, "{p}")?,
        }
        for (a, why) in e.skipped.iter().flatten() {
            write!(f, "; {a} {}", why.name())?;
        }
        if e.n_skipped as usize > SKIPPED {
            write!(f, "; {} more skipped", e.n_skipped as usize - SKIPPED)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FwdMethod;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lines_read_as_the_issue_asks() {
        let e = Explain {
            how: How::NextAfter {
                after: Some(sa("203.0.113.11:80")),
            },
            ..Default::default()
        };
        assert_eq!(
            e.line("rr", Some(sa("203.0.113.12:80"))),
            "rr: 203.0.113.12:80, next after 203.0.113.11:80"
        );
        let l = |s: &str, o| Load {
            server: sa(s),
            overhead: o,
            weight: 1,
        };
        let mut e = Explain {
            how: How::Least {
                chosen: l("203.0.113.12:80", 3),
                next: Some(l("203.0.113.11:80", 5)),
            },
            ..Default::default()
        };
        let d = Dest::new("203.0.113.13".parse().unwrap(), 80, 0, FwdMethod::Masq);
        e.skip(&d, Skip::of(&d).unwrap());
        assert_eq!(
            e.line("wlc", Some(sa("203.0.113.12:80"))),
            "wlc: 203.0.113.12:80 overhead 3 < 5 (203.0.113.11:80); 203.0.113.13:80 weight 0 skipped"
        );
        let none = Explain {
            how: How::NoDestination,
            ..Default::default()
        };
        assert_eq!(none.line("rr", None), "rr: no server can take it");
    }

    #[test]
    fn skips_beyond_the_array_are_counted() {
        let mut e = Explain::default();
        let d = Dest::new("203.0.113.13".parse().unwrap(), 80, 0, FwdMethod::Masq);
        for _ in 0..6 {
            e.skip(&d, Skip::WeightZero);
        }
        assert_eq!(e.n_skipped, 6);
        assert!(e.line("rr", None).ends_with("; 2 more skipped"));
    }
}
