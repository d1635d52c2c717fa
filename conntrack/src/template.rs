//! Persistence templates (`-p TIMEOUT`, `-M NETMASK`, port-0 and fwmark
//! services).
//!
//! A template is an entry keyed by (proto, masked client address, client
//! port 0, virtual address or firewall mark, virtual port) that maps a
//! client to a real server. It lives in the in-index of its own shard,
//! counts in the destination's persistent count (not Active/InActConn), and
//! holds its timeout (the `-p` value) in the entry. Each connection created
//! under it holds a reference (`Entry::aux`) and the template counts them;
//! a template is never removed while it controls a connection: when its
//! timer runs out it is re-armed (the kernel's requeue). Binding a new
//! connection refreshes the template's timer.
//!
//! A template found with a removed server, or (with
//! `expire_quiescent_template`) a server of weight 0, is invalidated: taken
//! out of the index at once (the next connection is scheduled afresh) and
//! freed when its last controlled connection ends.
//!
//! With `release_template_on_close` (default on) a connection gives its
//! template back when it reaches TIME_WAIT/CLOSE, so closing connections do
//! not stretch persistence past the `-p` timeout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use uvs_sched::{Dest, FwdMethod};

use crate::entry::{flag, Entry, MAX_TIMEOUT_MS};
use crate::shard::{key_hash, Family, Part, ShardStats, KIND_TPL, KIND_TPL_MARK, REF_SHIFT};
use crate::table::{Handle, InsertError, NewConn, PacketInfo, Releases, Table};
use crate::Knobs;

/// What identifies a persistence template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TemplateKey {
    /// IP protocol of the service (fwmark services: the packet's protocol,
    /// or one value the engine picks for all, e.g. 0 like the kernel).
    pub proto: u8,
    /// Client address with the service's `-M` netmask applied
    /// ([`mask_addr`]).
    pub caddr: IpAddr,
    /// Virtual address (ignored for fwmark services, give any address of
    /// the client's family).
    pub vaddr: IpAddr,
    /// Virtual port; 0 for port-0 and fwmark services.
    pub vport: u16,
    /// Firewall mark of a fwmark service; 0 otherwise.
    pub fwmark: u32,
    /// A persistence engine's key ([`pe_digest`] of the SIP Call-ID under
    /// `--pe sip`); 0 for services without one. Only its low 48 bits
    /// count: they are stored in the template's client-port and byte-count
    /// slots (both unused by templates), so an entry stays 48 bytes.
    pub pe: u64,
}

/// The 48-bit digest (never 0) of a persistence engine's key bytes, for
/// [`TemplateKey::pe`]. Two keys with one digest share a template (a call
/// that lands on another call's server): with 47 significant bits, about
/// one pair in 10^14.
pub fn pe_digest(data: &[u8]) -> u64 {
    // FNV-1a: the data is short (a Call-ID) and the table's own seeded
    // hash covers the index, so this only has to spread the bytes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h & 0xffff_ffff_ffff) | 1
}

/// The (client-port, byte-count) slots that hold a template's `pe` key.
#[inline(always)]
fn pe_slots(pe: u64) -> (u16, u32) {
    (pe as u16, (pe >> 16) as u32)
}

/// Applies a prefix length (`-M 255.255.255.0` = 24) to an address.
pub fn mask_addr(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let p = prefix.min(32) as u32;
            let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let p = prefix.min(128) as u32;
            let m = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

impl Table {
    /// Finds a valid template. Expired-and-idle templates are removed; ones
    /// whose server is gone (or quiescent, with `expire_quiescent_template`)
    /// are invalidated and not returned. Does not refresh the timer (binding
    /// a connection does).
    pub fn lookup_template(&self, k: &TemplateKey, now: u64) -> Option<Handle> {
        match k.caddr {
            IpAddr::V4(c) => self.tpl_typed::<Ipv4Addr>(k, c, now, None).ok(),
            IpAddr::V6(c) => self.tpl_typed::<Ipv6Addr>(k, c, now, None).ok(),
        }
    }

    /// Returns the valid template for `k`, creating it for `dest` when there
    /// is none (so two workers racing on one client agree on one server).
    /// `dport` is the server port the template records (0 for port-0
    /// services); `timeout_ms` the `-p` value.
    pub fn get_or_insert_template(
        &self,
        k: &TemplateKey,
        dest: &Arc<Dest>,
        dport: u16,
        fwd: FwdMethod,
        timeout_ms: u32,
        now: u64,
    ) -> Result<Handle, InsertError> {
        let new = NewTpl {
            dest,
            dport,
            fwd,
            timeout_ms: timeout_ms.min(MAX_TIMEOUT_MS),
        };
        let r = match k.caddr {
            IpAddr::V4(c) => self.tpl_typed::<Ipv4Addr>(k, c, now, Some(new)),
            IpAddr::V6(c) => self.tpl_typed::<Ipv6Addr>(k, c, now, Some(new)),
        };
        self.counted(r)
    }

    /// Inserts a connection controlled by template `tpl` (from
    /// `lookup_template`/`get_or_insert_template`): the template's count of
    /// controlled connections goes up and its timer restarts.
    pub fn insert_controlled(
        &self,
        c: NewConn,
        tpl: &Handle,
        first: PacketInfo,
        now: u64,
    ) -> Result<Handle, InsertError> {
        let r = self.insert_controlled_inner(c, tpl, first, now, true);
        self.counted(r).and_then(|h| h.ok_or(InsertError::Full))
    }

    /// [`Table::insert_controlled`] without a handle for the caller (see
    /// [`Table::add`]).
    pub fn add_controlled(
        &self,
        c: NewConn,
        tpl: &Handle,
        first: PacketInfo,
        now: u64,
    ) -> Result<(), InsertError> {
        let r = self.insert_controlled_inner(c, tpl, first, now, false);
        self.counted(r).map(|_| ())
    }

    fn insert_controlled_inner(
        &self,
        c: NewConn,
        tpl: &Handle,
        first: PacketInfo,
        now: u64,
        handle: bool,
    ) -> Result<Option<Handle>, InsertError> {
        if !tpl.is_template() {
            return Err(InsertError::TemplateGone);
        }
        if tpl.caddr().is_ipv4() != c.caddr.is_ipv4() {
            return Err(InsertError::FamilyMismatch);
        }
        let r = (tpl.shard << REF_SHIFT) | tpl.idx;
        let bound = if c.caddr.is_ipv4() {
            self.bind_template::<Ipv4Addr>(tpl, now)
        } else {
            self.bind_template::<Ipv6Addr>(tpl, now)
        };
        if !bound {
            return Err(InsertError::TemplateGone);
        }
        match self.insert_with_aux(c, first, now, r + 1, handle) {
            Ok(h) => Ok(h),
            Err(e) => {
                if tpl.caddr().is_ipv4() {
                    self.release_template::<Ipv4Addr>(r);
                } else {
                    self.release_template::<Ipv6Addr>(r);
                }
                Err(e)
            }
        }
    }

    /// Restarts the timer of template `tpl` as binding a connection would,
    /// without binding one: one-packet scheduling (`-o`) uses a template
    /// for a datagram whose connection does not stay. False when the
    /// template is gone or invalidated.
    pub fn touch_template(&self, tpl: &Handle, now: u64) -> bool {
        if !tpl.is_template() {
            return false;
        }
        if tpl.caddr().is_ipv4() {
            self.refresh_template::<Ipv4Addr>(tpl, now, 0)
        } else {
            self.refresh_template::<Ipv6Addr>(tpl, now, 0)
        }
    }

    fn bind_template<A: Family>(&self, tpl: &Handle, now: u64) -> bool {
        self.refresh_template::<A>(tpl, now, 1)
    }

    fn refresh_template<A: Family>(&self, tpl: &Handle, now: u64, bind: u32) -> bool {
        let mut g = self.lock(tpl.shard);
        let part = A::part(&mut g);
        let ok = part
            .live(tpl.idx)
            .is_some_and(|e| tpl.matches(e) && e.flags & flag::UNHASHED == 0);
        if ok {
            let e = part.get_mut(tpl.idx);
            e.aux += bind;
            e.expires = (now as u32).wrapping_add(e.pkts);
        }
        ok
    }

    fn tpl_typed<A: Family>(
        &self,
        k: &TemplateKey,
        caddr: A,
        now: u64,
        create: Option<NewTpl<'_>>,
    ) -> Result<Handle, InsertError> {
        let mark = k.fwmark != 0;
        let vaddr = if mark {
            A::from_mark(k.fwmark)
        } else {
            A::from_ip(k.vaddr).ok_or(InsertError::FamilyMismatch)?
        };
        let kind = if mark { KIND_TPL_MARK } else { KIND_TPL };
        let shard = self.shard_of(k.proto, caddr, 0);
        let (pe_port, pe_rest) = pe_slots(k.pe);
        let hash = key_hash(&self.hasher, k.proto, kind, caddr, pe_port, vaddr, k.vport);
        let knobs = self.knobs();
        let mut rel: Releases = Releases::new(A::WIDE);
        let res = {
            let mut g = self.lock(shard);
            let (part, stats) = A::split(&mut g);
            let found = part
                .find_tpl(
                    hash,
                    k.proto,
                    mark,
                    caddr,
                    (pe_port, pe_rest),
                    vaddr,
                    k.vport,
                )
                .map(|(_, idx)| idx);
            let valid =
                found.filter(|&idx| self.check_template(part, stats, idx, now, &knobs, &mut rel));
            match (valid, create) {
                (Some(idx), _) => {
                    Handle::new(shard, idx, part.get(idx)).ok_or(InsertError::TemplateGone)
                }
                (None, None) => Err(InsertError::TemplateGone),
                (None, Some(n)) => self.create_template(
                    part, stats, shard, k, caddr, vaddr, mark, n, now, &knobs, &mut rel,
                ),
            }
        };
        self.apply_releases(&rel);
        res
    }

    /// The kernel's `ip_vs_check_template`, plus expiry of idle templates
    /// the sweep has not reached. True when the template may be used.
    fn check_template<A: Family, const N: usize>(
        &self,
        part: &mut Part<A>,
        stats: &mut ShardStats,
        idx: u32,
        now: u64,
        knobs: &Knobs,
        rel: &mut Releases<N>,
    ) -> bool {
        let e = part.get(idx);
        let Some(dest) = e.dest.as_ref() else {
            return false;
        };
        let usable =
            dest.is_available() && !(knobs.expire_quiescent_template && dest.weight() == 0);
        let expired = e.remaining(now) <= 0;
        let controlling = e.aux != 0;
        if usable && !expired {
            return true;
        }
        if !controlling {
            let old = part.remove(&self.hasher, idx);
            stats.expired += 1;
            self.retire(old, stats, rel);
            return false;
        }
        if !usable {
            // Keep it for its connections, but never hand it out again.
            part.unhash_in(&self.hasher, idx);
            return false;
        }
        // Expired but still controlling: requeued, still valid.
        let e = part.get_mut(idx);
        e.expires = (now as u32).wrapping_add(e.pkts);
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn create_template<A: Family, const N: usize>(
        &self,
        part: &mut Part<A>,
        stats: &mut ShardStats,
        shard: u32,
        k: &TemplateKey,
        caddr: A,
        vaddr: A,
        mark: bool,
        n: NewTpl<'_>,
        now: u64,
        knobs: &Knobs,
        rel: &mut Releases<N>,
    ) -> Result<Handle, InsertError> {
        let daddr = A::from_ip(n.dest.addr).ok_or(InsertError::FamilyMismatch)?;
        if !self.reserve(stats) {
            let evicted =
                knobs.drop_entry != crate::Defense::Off && self.evict_one(part, stats, now, rel);
            if !evicted || !self.reserve(stats) {
                stats.refused_full += 1;
                return Err(InsertError::Full);
            }
        }
        let flags = flag::TEMPLATE | if mark { flag::FWMARK } else { 0 } | n.fwd as u8;
        let (pe_port, pe_rest) = pe_slots(k.pe);
        let entry = Entry {
            dest: Some(n.dest.clone()),
            caddr,
            vaddr,
            daddr,
            cport: pe_port,
            vport: k.vport,
            dport: n.dport,
            proto: k.proto,
            state: 0,
            flags,
            expires: (now as u32).wrapping_add(n.timeout_ms),
            pkts: n.timeout_ms,
            bytes: pe_rest,
            aux: 0,
        };
        let Some(idx) = part.alloc(entry) else {
            self.unreserve(stats);
            stats.refused_full += 1;
            return Err(InsertError::Full);
        };
        n.dest.template_bound(true);
        part.index(&self.hasher, idx);
        stats.inserted += 1;
        Handle::new(shard, idx, part.get(idx)).ok_or(InsertError::Full)
    }
}

#[derive(Debug, Clone, Copy)]
struct NewTpl<'a> {
    dest: &'a Arc<Dest>,
    dport: u16,
    fwd: FwdMethod,
    timeout_ms: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let a: IpAddr = "198.51.100.77".parse().unwrap();
        assert_eq!(mask_addr(a, 24), "198.51.100.0".parse::<IpAddr>().unwrap());
        assert_eq!(mask_addr(a, 32), a);
        assert_eq!(mask_addr(a, 0), "0.0.0.0".parse::<IpAddr>().unwrap());
        let b: IpAddr = "2001:db8::1234".parse().unwrap();
        assert_eq!(mask_addr(b, 64), "2001:db8::".parse::<IpAddr>().unwrap());
    }
}
