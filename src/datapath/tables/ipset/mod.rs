//! Emulated ipsets, in ipset's own language: `uvs ipset restore` reads
//! `ipset save` text, `uvs ipset save|list|add|del|test|flush|destroy|
//! create` work as ipset's commands do, and `-m set --match-set NAME
//! DIR[,DIR…]` in the tables matches against them.
//!
//! Contract:
//! * [`Sets`] is immutable once published: every change builds a new one
//!   (inside a new [`super::Ruleset`]) and the workers switch to it whole,
//!   so a packet sees one version of every set.
//! * A change costs what it touches: a set's members are a persistent hash
//!   map (`imbl`'s, as the service snapshot's), so adding or deleting an
//!   entry copies one path of it, and the set table is one `Arc` per set.
//! * A lookup is hashed: one probe per lookup for the `ip`/`port` types,
//!   one per prefix length present for the `net` types (at most 33 or 129,
//!   however many entries), never a scan of the members. It allocates
//!   nothing and takes no lock.
//! * Matches are counted per set ([`IpSet::hits`]) in per-worker slots.
//! * What ipset has and uvs does not is refused with the line or option
//!   (timeouts other than 0, per-entry counters, skbinfo, forceadd, other
//!   set types), never accepted and ignored.

mod text;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use foldhash::HashMap;
use imbl::shared_ptr::DefaultSharedPtr;

/// A set's members: persistent, so a new version shares all but one path.
type Members = imbl::GenericHashMap<Key, Val, foldhash::fast::RandomState, DefaultSharedPtr>;

pub use text::{command, list, reload, restore, save, IpsetError, Outcome, Refs};

/// The set types uvs emulates (what kube-proxy's IPVS proxier creates, and
/// `hash:net`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetType {
    HashIp,
    HashNet,
    HashIpPort,
    HashIpPortIp,
    HashIpPortNet,
    BitmapPort,
}

impl SetType {
    pub const ALL: [SetType; 6] = [
        SetType::HashIp,
        SetType::HashNet,
        SetType::HashIpPort,
        SetType::HashIpPortIp,
        SetType::HashIpPortNet,
        SetType::BitmapPort,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashNet => "hash:net",
            SetType::HashIpPort => "hash:ip,port",
            SetType::HashIpPortIp => "hash:ip,port,ip",
            SetType::HashIpPortNet => "hash:ip,port,net",
            SetType::BitmapPort => "bitmap:port",
        }
    }

    /// How many packet fields a lookup needs (`--match-set`'s directions).
    pub fn dims(self) -> usize {
        match self {
            SetType::HashIp | SetType::HashNet | SetType::BitmapPort => 1,
            SetType::HashIpPort => 2,
            SetType::HashIpPortIp | SetType::HashIpPortNet => 3,
        }
    }

    /// ipset's revision of the type (for `list`'s header).
    fn revision(self) -> u8 {
        match self {
            SetType::HashIp => 6,
            SetType::HashNet => 7,
            SetType::HashIpPort => 6,
            SetType::HashIpPortIp => 5,
            SetType::HashIpPortNet => 8,
            SetType::BitmapPort => 4,
        }
    }

    fn has_net(self) -> bool {
        matches!(self, SetType::HashNet | SetType::HashIpPortNet)
    }
}

/// One member, as looked up: the unused fields are 0.
#[derive(Debug, Clone, Copy, Eq, PartialOrd, Ord)]
pub struct Key {
    /// First address (`hash:ip*`; `hash:net`'s network, masked).
    pub a: u128,
    pub proto: u8,
    pub port: u16,
    /// Second address (`hash:ip,port,ip`; `hash:ip,port,net`'s network).
    pub b: u128,
    /// Prefix length of the `net` dimension.
    pub cidr: u8,
}

/// What a member carries besides its key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Val {
    /// `nomatch` (net types): the member excludes its net from a wider one.
    pub nomatch: bool,
    pub comment: Option<Arc<str>>,
}

/// `create`'s options, kept for `save`/`list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opts {
    pub v6: bool,
    pub hashsize: u32,
    pub maxelem: u32,
    /// `bitmap:port`'s `range A-B`.
    pub range: (u16, u16),
    /// `timeout 0` was given (entries never expire).
    pub timeout0: bool,
    pub comment: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            v6: false,
            hashsize: 1024,
            maxelem: 65536,
            range: (0, 65535),
            timeout0: false,
            comment: false,
        }
    }
}

/// Per-worker match counters of one set, kept across the set's versions.
#[derive(Debug, Default)]
pub struct Hits([HitSlot; super::SLOTS]);

#[derive(Debug, Default)]
#[repr(align(128))]
struct HitSlot([AtomicU64; 2]);

impl Hits {
    #[inline]
    fn count(&self, bytes: u32) {
        let s = &self.0[super::my_slot()];
        s.0[0].fetch_add(1, Relaxed);
        s.0[1].fetch_add(u64::from(bytes), Relaxed);
    }

    /// (packets, bytes) that matched the set.
    pub fn total(&self) -> (u64, u64) {
        self.0.iter().fold((0, 0), |t, s| {
            (t.0 + s.0[0].load(Relaxed), t.1 + s.0[1].load(Relaxed))
        })
    }
}

/// One set: its type, options and members.
#[derive(Debug, Clone)]
pub struct IpSet {
    pub name: String,
    pub kind: SetType,
    pub opts: Opts,
    members: Members,
    /// Members per prefix length of the net dimension (net types).
    cidr_count: Arc<[u32; 129]>,
    /// The prefix lengths present, longest first (net types).
    cidrs: Arc<[u8]>,
    pub hits: Arc<Hits>,
}

impl IpSet {
    pub fn new(name: &str, kind: SetType, opts: Opts) -> IpSet {
        IpSet {
            name: name.to_string(),
            kind,
            opts,
            members: Members::default(),
            cidr_count: Arc::new([0; 129]),
            cidrs: Arc::from(Vec::new()),
            hits: Arc::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn get(&self, k: &Key) -> Option<&Val> {
        self.members.get(k)
    }

    /// The members in a stable order (for `save` and `list`).
    pub fn sorted(&self) -> Vec<(&Key, &Val)> {
        let mut v: Vec<_> = self.members.iter().collect();
        v.sort_unstable_by_key(|(k, _)| **k);
        v
    }

    /// Adds or replaces a member; `false` if it was there.
    pub(crate) fn insert(&mut self, k: Key, v: Val) -> bool {
        let fresh = self.members.insert(k, v).is_none();
        if fresh && self.kind.has_net() {
            self.cidr_delta(k.cidr, true);
        }
        fresh
    }

    /// Removes a member; `false` if it was not there.
    pub(crate) fn remove(&mut self, k: &Key) -> bool {
        let gone = self.members.remove(k).is_some();
        if gone && self.kind.has_net() {
            self.cidr_delta(k.cidr, false);
        }
        gone
    }

    pub(crate) fn flush(&mut self) {
        self.members = Members::default();
        self.cidr_count = Arc::new([0; 129]);
        self.cidrs = Arc::from(Vec::new());
    }

    /// Bounded work: 129 counters and the list of lengths present.
    fn cidr_delta(&mut self, cidr: u8, add: bool) {
        let mut c = *self.cidr_count;
        let n = &mut c[usize::from(cidr.min(128))];
        *n = if add { *n + 1 } else { n.saturating_sub(1) };
        self.cidrs = (0..=128u8)
            .rev()
            .filter(|&l| c[usize::from(l)] > 0)
            .collect();
        self.cidr_count = Arc::new(c);
    }

    /// Whether the packet's fields (`fields[i]` for dimension `i`) are a
    /// member; counts a match.
    #[inline]
    pub fn test(&self, f: &[Field; 3], bytes: u32) -> bool {
        let hit = self.lookup(f);
        if hit {
            self.hits.count(bytes);
        }
        hit
    }

    #[inline]
    fn lookup(&self, f: &[Field; 3]) -> bool {
        let addr = |d: &Field| match d.addr {
            IpAddr::V4(a) if !self.opts.v6 => Some(u128::from(u32::from(a))),
            IpAddr::V6(a) if self.opts.v6 => Some(u128::from(a)),
            _ => None,
        };
        let port = |d: &Field| d.port;
        let bits = if self.opts.v6 { 128 } else { 32 };
        let probe = |k: Key| self.members.get(&k).map(|v| !v.nomatch);
        match self.kind {
            SetType::HashIp => addr(&f[0]).is_some_and(|a| probe(Key::a(a)).unwrap_or(false)),
            SetType::BitmapPort => port(&f[0]).is_some_and(|(_, p)| {
                probe(Key {
                    port: p,
                    ..Key::a(0)
                })
                .unwrap_or(false)
            }),
            SetType::HashIpPort => match (addr(&f[0]), port(&f[1])) {
                (Some(a), Some((proto, port))) => probe(Key {
                    proto,
                    port,
                    ..Key::a(a)
                })
                .unwrap_or(false),
                _ => false,
            },
            SetType::HashIpPortIp => match (addr(&f[0]), port(&f[1]), addr(&f[2])) {
                (Some(a), Some((proto, port)), Some(b)) => probe(Key {
                    proto,
                    port,
                    b,
                    ..Key::a(a)
                })
                .unwrap_or(false),
                _ => false,
            },
            // Most specific prefix first: the first member found decides
            // (a `nomatch` one excludes).
            SetType::HashNet => addr(&f[0]).is_some_and(|a| {
                self.cidrs.iter().find_map(|&c| {
                    probe(Key {
                        cidr: c,
                        ..Key::a(mask(a, c, bits))
                    })
                }) == Some(true)
            }),
            SetType::HashIpPortNet => match (addr(&f[0]), port(&f[1]), addr(&f[2])) {
                (Some(a), Some((proto, port)), Some(b)) => {
                    self.cidrs.iter().find_map(|&c| {
                        probe(Key {
                            a,
                            proto,
                            port,
                            b: mask(b, c, bits),
                            cidr: c,
                        })
                    }) == Some(true)
                }
                _ => false,
            },
        }
    }
}

impl Key {
    fn fields(&self) -> (u128, u8, u16, u128, u8) {
        (self.a, self.proto, self.port, self.b, self.cidr)
    }
}

// By hand only so that the unit tests can count the comparisons a lookup
// makes; the same as derived.
impl PartialEq for Key {
    #[inline]
    fn eq(&self, o: &Key) -> bool {
        #[cfg(test)]
        tests::counted_eq();
        self.fields() == o.fields()
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.fields().hash(h)
    }
}

impl Key {
    fn a(a: u128) -> Key {
        Key {
            a,
            proto: 0,
            port: 0,
            b: 0,
            cidr: 0,
        }
    }
}

/// `a` (a `bits`-wide address, right-aligned) with only its first `len`
/// bits.
pub(crate) fn mask(a: u128, len: u8, bits: u8) -> u128 {
    let len = len.min(bits);
    if len == 0 {
        return 0;
    }
    let drop = u32::from(bits - len);
    if drop == 0 {
        a
    } else {
        a & !((1u128 << drop) - 1)
    }
}

/// One packet field a set dimension is looked up by.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub addr: IpAddr,
    /// (protocol, port) when the packet has ports.
    pub port: Option<(u8, u16)>,
}

/// The sets as one published table: stable ids (a rule holds its set's
/// id), names to ids.
#[derive(Debug, Clone, Default)]
pub struct Sets {
    slots: Vec<Option<Arc<IpSet>>>,
    names: HashMap<String, u32>,
}

impl Sets {
    /// The set with id `id`.
    #[inline]
    pub fn get(&self, id: u32) -> Option<&IpSet> {
        self.slots.get(id as usize).and_then(|s| s.as_deref())
    }

    /// The id of the set named `name`.
    pub fn id(&self, name: &str) -> Option<u32> {
        self.names.get(name).copied()
    }

    /// The sets in creation order of their ids.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &IpSet)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_deref().map(|s| (i as u32, s)))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Adds a new set (its name must be free); returns its id.
    pub(crate) fn create(&mut self, s: IpSet) -> u32 {
        let id = match self.slots.iter().position(Option::is_none) {
            Some(i) => i as u32,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        self.names.insert(s.name.clone(), id);
        self.slots[id as usize] = Some(Arc::new(s));
        id
    }

    /// Replaces the set with id `id` (its name unchanged).
    pub(crate) fn put(&mut self, id: u32, s: IpSet) {
        if let Some(slot) = self.slots.get_mut(id as usize) {
            *slot = Some(Arc::new(s));
        }
    }

    pub(crate) fn destroy(&mut self, id: u32) {
        if let Some(slot) = self.slots.get_mut(id as usize) {
            if let Some(s) = slot.take() {
                self.names.remove(&s.name);
            }
        }
    }
}

/// `-m set [!] --match-set NAME DIR[,DIR…]` in a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetMatch {
    pub neg: bool,
    pub id: u32,
    /// Per dimension: the packet's source (else its destination).
    pub src: [bool; 3],
}

/// `--match-set NAME FLAGS` against `sets` (`neg`: `!` before it).
pub fn parse_match(sets: &Sets, neg: bool, name: &str, flags: &str) -> Result<SetMatch, String> {
    let s = sets.id(name).and_then(|id| sets.get(id).map(|s| (id, s)));
    let Some((id, s)) = s else {
        return Err(format!(
            "set {name} doesn't exist (create it first: uvs ipset create or restore, uvs run --ipsets)"
        ));
    };
    let parts: Vec<&str> = flags.split(',').collect();
    if parts.len() > 6 {
        return Err(format!("--match-set {name} {flags}: at most 6 directions"));
    }
    let mut src = [false; 3];
    for (i, p) in parts.iter().enumerate() {
        match *p {
            "src" => {
                if let Some(x) = src.get_mut(i) {
                    *x = true;
                }
            }
            "dst" => {}
            p => return Err(format!("--match-set {name}: direction '{p}' (src or dst)")),
        }
    }
    if parts.len() < s.kind.dims() {
        return Err(format!(
            "--match-set {name} {flags}: {name} is {} and needs {} direction(s) (the kernel would never match it)",
            s.kind.name(),
            s.kind.dims()
        ));
    }
    Ok(SetMatch { neg, id, src })
}

impl SetMatch {
    /// Whether the packet matches (before negation is applied: `neg` is).
    #[inline]
    pub fn test(&self, sets: &Sets, k: &super::Pkt) -> bool {
        let Some(s) = sets.get(self.id) else {
            // Destroying a set in use is refused: not reached.
            return self.neg;
        };
        let port = k.has_ports.then_some(());
        let field = |src: bool| Field {
            addr: if src { k.src } else { k.dst },
            port: port.map(|()| (k.proto, if src { k.sport } else { k.dport })),
        };
        let f = [field(self.src[0]), field(self.src[1]), field(self.src[2])];
        s.test(&f, k.len) != self.neg
    }
}

#[cfg(test)]
mod tests;
