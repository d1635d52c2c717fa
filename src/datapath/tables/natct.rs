//! The nat table's own connection tracking, as netfilter's nf_nat keeps
//! it: the first packet of a flow walks the nat chains and decides (a
//! destination half at PREROUTING/OUTPUT, a source half at POSTROUTING);
//! the decision is recorded here under two keys, the flow's original tuple
//! and the tuple its replies arrive with, and every later packet of either
//! direction follows it without walking a rule. Replies are un-NATed.
//!
//! Contract:
//! * Pure: no I/O, no clock (`now` in milliseconds from the caller), no
//!   global lock. The table is [`SHARDS`] shards, each behind its own
//!   lock; a packet takes one shard lock for its lookup, a new flow two
//!   (its two keys) plus one per source port it probes.
//! * Bounded: at most `max` keys in all (two per flow). A flow that needs a
//!   translation recorded when its shard is full is refused
//!   ([`NatError::Full`], a counted drop for the caller); expired entries
//!   are reclaimed a few per insert (a clock hand per shard), never by a
//!   scan whose cost grows with the table.
//! * Timeouts, modelled on nf_conntrack's defaults: TCP 120 s until a reply
//!   is seen (`nf_conntrack_tcp_timeout_syn_sent`), then 5 days
//!   (`_established`); 120 s once a FIN is seen (`_time_wait`), 10 s after
//!   a RST (`_close`). UDP 30 s until a reply (`nf_conntrack_udp_timeout`),
//!   120 s after (`_stream`). SCTP as UDP. A SYN that reopens a tuple whose
//!   entry is closing starts a new flow, as conntrack does.
//! * Source ports ([`confirm`](NatTable::confirm)), as nf_nat picks them:
//!   without `--random`/`--random-fully` the flow's own port is kept when
//!   it lies in the range and the reply tuple it gives is free; otherwise
//!   up to [`PORT_TRIES`] ports are tried in turn from a starting point in
//!   the range — a hash of the flow (the default), a hash keyed with a
//!   per-table secret (`--random`), or a fresh pseudo-random number per
//!   flow (`--random-fully`). A reply tuple is free when no live entry
//!   holds it; the check and the insert are one step under the shard lock,
//!   so two workers cannot give two flows the same reply tuple.

use std::cell::Cell;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use foldhash::HashMap;
use uvs_conntrack::Tuple;

/// Shards of the table (a power of two).
pub const SHARDS: usize = 64;
/// Default bound on keys (two per flow).
pub const DEFAULT_MAX: usize = 1 << 18;
/// Source ports tried for one flow before it is refused.
pub const PORT_TRIES: usize = 128;
/// Expired entries looked at per insert, per shard.
const CLOCK_STEP: usize = 4;

/// Which way a packet goes in its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatDir {
    /// As the flow's first packet went.
    Original,
    /// The other way.
    Reply,
}

/// A flow's recorded decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// The first packet's tuple before any translation.
    pub orig: Tuple,
    /// The destination the original direction is given (DNAT).
    pub dnat: Option<(IpAddr, u16)>,
    /// The source the original direction is given (SNAT, MASQUERADE).
    pub snat: Option<(IpAddr, u16)>,
    /// The tuple replies arrive with.
    pub reply: Tuple,
    /// The source half is MASQUERADE's (its entries go when the address
    /// does, [`NatTable::forget_masq`]).
    pub masq: bool,
}

impl Mapping {
    /// The destination rewrite a packet of direction `d` gets where
    /// destinations are translated (PREROUTING, OUTPUT): DNAT for the
    /// original direction, the SNAT undone for replies.
    pub fn dst_manip(&self, d: NatDir) -> Option<(IpAddr, u16)> {
        match d {
            NatDir::Original => self.dnat,
            NatDir::Reply => self.snat.map(|_| (self.orig.src, self.orig.sport)),
        }
    }

    /// The source rewrite a packet of direction `d` gets at POSTROUTING:
    /// SNAT for the original direction, the DNAT undone for replies.
    pub fn src_manip(&self, d: NatDir) -> Option<(IpAddr, u16)> {
        match d {
            NatDir::Original => self.snat,
            NatDir::Reply => self.dnat.map(|_| (self.orig.dst, self.orig.dport)),
        }
    }
}

/// What a lookup found: the flow's mapping and the packet's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatHit {
    pub m: Mapping,
    pub dir: NatDir,
}

/// How a source port is chosen (`SNAT`/`MASQUERADE` options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortPick {
    /// Keep the flow's port when free, else probe from a hash of the flow.
    #[default]
    Keep,
    /// `--random`: probe from a keyed hash of the flow.
    Random,
    /// `--random-fully`: probe from a fresh pseudo-random number.
    Fully,
}

/// The source half of a first packet's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrcNat {
    pub addr: IpAddr,
    /// Inclusive port range to map into.
    pub ports: (u16, u16),
    pub pick: PortPick,
    /// MASQUERADE's (the director's address), not SNAT's.
    pub masq: bool,
}

/// A first packet's facts at POSTROUTING, where the flow is confirmed.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    /// Its tuple as it arrived.
    pub orig: Tuple,
    /// What PREROUTING/OUTPUT decided for its destination.
    pub dnat: Option<(IpAddr, u16)>,
    /// Its tuple now (after DNAT and after IPVS's own rewrite), before the
    /// source half.
    pub out: Tuple,
}

/// What a packet shows the timers (TCP flags; 0 for other protocols).
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    pub tcp_flags: u8,
}

/// Refusals of [`NatTable::confirm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NatError {
    /// The shard that would hold a key is full.
    #[error("nat connection table full")]
    Full,
    /// Every port tried gives a reply tuple that is taken.
    #[error("no free source port in the range")]
    NoPort,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

const S: u32 = 1000;
const TCP_SYN_SENT: u32 = 120 * S;
const TCP_ESTABLISHED: u32 = 5 * 24 * 3600 * S;
const TCP_TIME_WAIT: u32 = 120 * S;
const TCP_CLOSE: u32 = 10 * S;
const UDP_UNREPLIED: u32 = 30 * S;
const UDP_REPLIED: u32 = 120 * S;

/// The timer both keys of a flow share.
#[derive(Debug)]
struct Life {
    last: AtomicU64,
    timeout: AtomicU32,
    replied: AtomicBool,
    closing: AtomicBool,
}

impl Life {
    fn expired(&self, now: u64) -> bool {
        now.saturating_sub(self.last.load(Relaxed)) > u64::from(self.timeout.load(Relaxed))
    }

    /// The packet's effect on the timer.
    fn touch(&self, proto: u8, dir: NatDir, seen: Seen, now: u64) {
        self.last.store(now, Relaxed);
        if dir == NatDir::Reply && !self.replied.load(Relaxed) {
            self.replied.store(true, Relaxed);
        }
        let replied = self.replied.load(Relaxed);
        let t = if proto == 6 {
            let f = seen.tcp_flags;
            if f & RST != 0 {
                self.closing.store(true, Relaxed);
                TCP_CLOSE
            } else if f & FIN != 0 || self.closing.load(Relaxed) {
                self.closing.store(true, Relaxed);
                TCP_TIME_WAIT
            } else if replied {
                TCP_ESTABLISHED
            } else {
                TCP_SYN_SENT
            }
        } else if replied {
            UDP_REPLIED
        } else {
            UDP_UNREPLIED
        };
        if self.timeout.load(Relaxed) != t {
            self.timeout.store(t, Relaxed);
        }
    }
}

#[derive(Debug)]
struct Slot {
    m: Mapping,
    dir: NatDir,
    id: u64,
    life: Arc<Life>,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Tuple, Slot>,
    /// Keys in insertion order with their slot's id (stale ids are skipped).
    clock: VecDeque<(Tuple, u64)>,
    next_id: u64,
}

impl Shard {
    /// A few steps of the clock hand: expired entries go, live ones go to
    /// the back.
    fn reclaim(&mut self, now: u64) {
        for _ in 0..CLOCK_STEP {
            let Some((k, id)) = self.clock.pop_front() else {
                return;
            };
            match self.map.get(&k) {
                Some(s) if s.id == id => {
                    if s.life.expired(now) {
                        self.map.remove(&k);
                    } else {
                        self.clock.push_back((k, id));
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether `k` is held by a live entry (an expired one is removed).
    fn live(&mut self, k: &Tuple, now: u64) -> bool {
        match self.map.get(k) {
            Some(s) if s.life.expired(now) => {
                self.map.remove(k);
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    fn insert(&mut self, k: Tuple, m: Mapping, dir: NatDir, life: &Arc<Life>) {
        self.next_id += 1;
        let id = self.next_id;
        self.map.insert(
            k,
            Slot {
                m,
                dir,
                id,
                life: Arc::clone(life),
            },
        );
        self.clock.push_back((k, id));
        // Stale clock positions never outnumber the keys by much.
        if self.clock.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.clock
                .retain(|(k, id)| map.get(k).is_some_and(|s| s.id == *id));
        }
    }
}

/// The nat connection table (see the module doc).
#[derive(Debug)]
pub struct NatTable {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: foldhash::fast::FixedState,
    /// `--random`'s key.
    secret: u64,
}

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
}

impl NatTable {
    /// A table of at most `max` keys; `seed` keys the shard hash and
    /// `--random`'s port hash.
    pub fn new(max: usize, seed: u64) -> NatTable {
        NatTable {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: max.div_ceil(SHARDS).max(1),
            hasher: foldhash::fast::FixedState::with_seed(seed),
            secret: seed.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn shard(&self, k: &Tuple) -> std::sync::MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(k) as usize & (SHARDS - 1);
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The flow of a packet with tuple `t` (as it arrived), its timer
    /// moved on. `None` for a packet of no recorded flow: it is a first
    /// packet and walks the chains.
    pub fn lookup(&self, t: &Tuple, seen: Seen, now: u64) -> Option<NatHit> {
        let mut sh = self.shard(t);
        let s = sh.map.get(t)?;
        let reopen = s.dir == NatDir::Original
            && t.proto == 6
            && seen.tcp_flags & (SYN | ACK) == SYN
            && s.life.closing.load(Relaxed);
        if s.life.expired(now) || reopen {
            sh.map.remove(t);
            return None;
        }
        s.life.touch(t.proto, s.dir, seen, now);
        Some(NatHit { m: s.m, dir: s.dir })
    }

    /// The flow holding key `t`, without moving its timer: how an ICMP
    /// error finds the flow it is about (conntrack's RELATED packets do
    /// not refresh their flow's timeout). `None` when no live entry holds
    /// it.
    pub fn peek(&self, t: &Tuple, now: u64) -> Option<NatHit> {
        let sh = self.shard(t);
        let s = sh.map.get(t)?;
        if s.life.expired(now) {
            return None;
        }
        Some(NatHit { m: s.m, dir: s.dir })
    }

    /// Whether a live entry holds key `t` (for a destination port choice:
    /// a tuple is free when no flow's key is it).
    pub fn held(&self, t: &Tuple, now: u64) -> bool {
        self.peek(t, now).is_some()
    }

    /// DNAT's destination port in `range` for a first packet of tuple `t`
    /// (as it arrived) sent to `to`, as nf_nat chooses a destination: the
    /// packet's own port when it lies in the range and the reply tuple it
    /// gives (`to:port → t.src:t.sport`, before any source half) is free;
    /// else the first free port from the range's start (`--random`,
    /// `--random-fully`: from a keyed hash or a pseudo-random offset),
    /// trying at most [`PORT_TRIES`]. `None` when every port tried is
    /// taken. The check is not a claim: the flow's keys are taken when it
    /// is confirmed at POSTROUTING (a race between two workers for the
    /// same reply tuple there is settled as for any flow).
    pub fn dnat_port(
        &self,
        t: &Tuple,
        to: IpAddr,
        (lo, hi): (u16, u16),
        pick: PortPick,
        now: u64,
    ) -> Option<u16> {
        let free = |port: u16| {
            !self.held(
                &Tuple {
                    proto: t.proto,
                    src: to,
                    sport: port,
                    dst: t.src,
                    dport: t.sport,
                },
                now,
            )
        };
        if pick == PortPick::Keep && (lo..=hi).contains(&t.dport) && free(t.dport) {
            return Some(t.dport);
        }
        let span = u64::from(hi - lo) + 1;
        let start = match pick {
            PortPick::Keep => 0,
            PortPick::Random => self.hasher.hash_one((*t, self.secret)),
            PortPick::Fully => self.next_random(),
        } % span;
        (0..(PORT_TRIES as u64).min(span))
            .map(|i| lo + ((start + i) % span) as u16)
            .find(|&port| free(port))
    }

    /// Records a first packet's flow: `p` with the source half `src`
    /// (`None`: the source stays). The mapping, or why not.
    pub fn confirm(
        &self,
        p: &Pending,
        src: Option<SrcNat>,
        seen: Seen,
        now: u64,
    ) -> Result<NatHit, NatError> {
        let life = Arc::new(Life {
            last: AtomicU64::new(now),
            timeout: AtomicU32::new(0),
            replied: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        });
        life.touch(p.orig.proto, NatDir::Original, seen, now);
        let reply_to = |addr: IpAddr, port: u16| Tuple {
            proto: p.out.proto,
            src: p.out.dst,
            sport: p.out.dport,
            dst: addr,
            dport: port,
        };
        let mut m = Mapping {
            orig: p.orig,
            dnat: p.dnat,
            snat: None,
            reply: reply_to(p.out.src, p.out.sport),
            masq: src.is_some_and(|s| s.masq),
        };
        // The reply key first: where a clash is found and a port chosen.
        match src {
            None => self.claim(m.reply, &m, &life, now)?,
            Some(s) => {
                let (lo, hi) = s.ports;
                let span = u64::from(hi - lo) + 1;
                let own = p.out.sport;
                let mut done = false;
                if s.pick == PortPick::Keep && (lo..=hi).contains(&own) {
                    m.snat = Some((s.addr, own));
                    m.reply = reply_to(s.addr, own);
                    done = self.try_claim(m.reply, &m, &life, now)?;
                }
                if !done {
                    let start = match s.pick {
                        PortPick::Keep => self.hasher.hash_one(p.orig),
                        PortPick::Random => self.hasher.hash_one((p.orig, self.secret)),
                        PortPick::Fully => self.next_random(),
                    } % span;
                    for i in 0..(PORT_TRIES as u64).min(span) {
                        let port = lo + ((start + i) % span) as u16;
                        m.snat = Some((s.addr, port));
                        m.reply = reply_to(s.addr, port);
                        if self.try_claim(m.reply, &m, &life, now)? {
                            done = true;
                            break;
                        }
                    }
                }
                if !done {
                    return Err(NatError::NoPort);
                }
            }
        }
        // The original key. Another worker may have confirmed the same
        // flow meanwhile: then its mapping stands and this one's reply key
        // goes.
        let mut sh = self.shard(&p.orig);
        if sh.live(&p.orig, now) {
            let theirs = sh.map.get(&p.orig).map(|s| s.m);
            drop(sh);
            let mut r = self.shard(&m.reply);
            if r.map
                .get(&m.reply)
                .is_some_and(|s| Arc::ptr_eq(&s.life, &life))
            {
                r.map.remove(&m.reply);
            }
            return Ok(NatHit {
                m: theirs.unwrap_or(m),
                dir: NatDir::Original,
            });
        }
        if sh.map.len() >= self.per_shard {
            drop(sh);
            self.shard(&m.reply).map.remove(&m.reply);
            return Err(NatError::Full);
        }
        sh.insert(p.orig, m, NatDir::Original, &life);
        Ok(NatHit {
            m,
            dir: NatDir::Original,
        })
    }

    /// Takes `k` for the reply direction whatever holds it (a flow with
    /// no source translation: its reply tuple is its own).
    fn claim(&self, k: Tuple, m: &Mapping, life: &Arc<Life>, now: u64) -> Result<(), NatError> {
        let mut sh = self.shard(&k);
        sh.reclaim(now);
        if !sh.live(&k, now) && sh.map.len() >= self.per_shard {
            return Err(NatError::Full);
        }
        sh.insert(k, *m, NatDir::Reply, life);
        Ok(())
    }

    /// Takes `k` for the reply direction if no live entry holds it.
    fn try_claim(
        &self,
        k: Tuple,
        m: &Mapping,
        life: &Arc<Life>,
        now: u64,
    ) -> Result<bool, NatError> {
        let mut sh = self.shard(&k);
        sh.reclaim(now);
        if sh.live(&k, now) {
            return Ok(false);
        }
        if sh.map.len() >= self.per_shard {
            return Err(NatError::Full);
        }
        sh.insert(k, *m, NatDir::Reply, life);
        Ok(true)
    }

    /// xorshift64* per thread, seeded from the table's secret and the
    /// thread's first use.
    fn next_random(&self) -> u64 {
        RNG.with(|c| {
            let mut x = c.get();
            if x == 0 {
                x = self.secret ^ (c as *const Cell<u64> as u64) | 1;
            }
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            c.set(x);
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        })
    }

    /// Drops the entries of flows MASQUERADEd to one of `gone` (addresses
    /// the director no longer has), as the kernel drops a masqueraded
    /// flow's conntrack entry with its address: the flow's next packet is
    /// a first packet again and gets an address the director has. A scan
    /// of every shard, one lock at a time, on an address event (the
    /// control thread; never per packet). Returns the keys removed.
    pub fn forget_masq(&self, gone: &[IpAddr]) -> usize {
        if gone.is_empty() {
            return 0;
        }
        let mut n = 0;
        for s in self.shards.iter() {
            let mut sh = s.lock().unwrap_or_else(|e| e.into_inner());
            let before = sh.map.len();
            sh.map
                .retain(|_, s| !(s.m.masq && s.m.snat.is_some_and(|(a, _)| gone.contains(&a))));
            n += before - sh.map.len();
        }
        n
    }

    /// Keys held now (live or not yet reclaimed), for stats and tests.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for NatTable {
    fn default() -> Self {
        NatTable::new(DEFAULT_MAX, 0x5eed_a7c7)
    }
}

#[cfg(test)]
#[path = "natct_tests.rs"]
mod tests;
