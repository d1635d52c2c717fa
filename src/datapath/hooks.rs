//! The emulated netfilter hook chain, as data.
//!
//! Like `nf_register_net_hooks`, every function that looks at packets is an
//! entry (hook point, priority, function) and each hook point runs its
//! entries in ascending priority. IPVS's functions sit at the kernel's own
//! priorities, next to the emulated filter table, so a request meets the
//! filter table (0) before IPVS (98/99) exactly as in the kernel — the
//! ordering that makes "ipvsadm shows nothing" puzzles, and that uvs makes
//! visible: every entry has an index, and each worker counts the packets
//! every entry saw and its verdicts (per worker, so the hot path shares no
//! counter cache lines between cores).
//!
//! A packet IPVS tunnels (`-i`) is stolen by its IPVS entry; its outer
//! packet then meets the LOCAL_OUT and POST_ROUTING table entries as a
//! packet of the director's own, as `ip_vs_tunnel_xmit`'s `ip_local_out`
//! sends it (`pipeline/tun_out.rs`).

/// Netfilter hook points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// Before routing.
    PreRouting,
    /// Addressed to this host (a VIP or a local address).
    LocalIn,
    /// Routed through this host.
    Forward,
    /// Sent by this host.
    LocalOut,
    /// After routing, on the way out.
    PostRouting,
}

impl HookPoint {
    /// Number of hook points.
    pub const COUNT: usize = 5;

    /// The netfilter name.
    pub fn name(self) -> &'static str {
        match self {
            HookPoint::PreRouting => "PRE_ROUTING",
            HookPoint::LocalIn => "LOCAL_IN",
            HookPoint::Forward => "FORWARD",
            HookPoint::LocalOut => "LOCAL_OUT",
            HookPoint::PostRouting => "POST_ROUTING",
        }
    }
}

/// The functions a hook entry can run (enum dispatch: no indirect calls,
/// no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookFn {
    /// The emulated `mangle` table (`uvs tables`): MARK rules.
    Mangle,
    /// The emulated `nat` table's destination half (PREROUTING, OUTPUT).
    NatDst,
    /// The emulated `filter` table (`uvs filter` rules, then `uvs tables`).
    Filter,
    /// The emulated `nat` table's source half (INPUT, POSTROUTING).
    NatSrc,
    /// `ip_vs_reply`: NAT replies from real servers, source rewritten to the VIP.
    IpvsReply,
    /// `ip_vs_remote_request`: requests to a virtual service (and ICMP
    /// errors from clients about them, `ip_vs_in_icmp`).
    IpvsRequest,
    /// `ip_vs_forward_icmp`: ICMP errors from real servers about NAT
    /// connections, on their way to the client.
    IpvsForwardIcmp,
    /// `ip_vs_local_reply`: at LOCAL_OUT, NAT replies sent by the director
    /// itself (as `IpvsReply`, for packets of local origin).
    IpvsLocalReply,
    /// `ip_vs_local_request`: at LOCAL_OUT, requests to a virtual service
    /// from processes on the director (as `IpvsRequest`).
    IpvsLocalRequest,
}

impl HookFn {
    /// The kernel's name for the function.
    pub fn name(self) -> &'static str {
        match self {
            HookFn::Mangle => "mangle",
            HookFn::NatDst => "nat",
            HookFn::Filter => "filter",
            HookFn::NatSrc => "nat",
            HookFn::IpvsReply => "ip_vs_reply",
            HookFn::IpvsRequest => "ip_vs_remote_request",
            HookFn::IpvsForwardIcmp => "ip_vs_forward_icmp",
            HookFn::IpvsLocalReply => "ip_vs_local_reply",
            HookFn::IpvsLocalRequest => "ip_vs_local_request",
        }
    }
}

/// `NF_IP_PRI_RAW`: the raw table (not emulated; before conntrack).
pub const PRI_RAW: i32 = -300;
/// `NF_IP_PRI_CONNTRACK`: where the kernel's conntrack looks a packet up.
/// uvs's own connection table answers `-m conntrack` and `-m ipvs` from
/// here on (looked up at most once per packet).
pub const PRI_CONNTRACK: i32 = -200;
/// `NF_IP_PRI_MANGLE`.
pub const PRI_MANGLE: i32 = -150;
/// `NF_IP_PRI_NAT_DST` (nat/DNAT), which LOCAL_OUT's IPVS functions sit
/// just above (`ip_vs_local_reply` −99, `ip_vs_local_request` −98).
pub const PRI_NAT_DST: i32 = -100;
/// Netfilter's priority of the filter table (`NF_IP_PRI_FILTER`).
pub const PRI_FILTER: i32 = 0;
/// `NF_IP_PRI_SECURITY` (not emulated).
pub const PRI_SECURITY: i32 = 50;
/// `NF_IP_PRI_NAT_SRC` (nat/SNAT), which IPVS's LOCAL_IN functions sit just below.
pub const PRI_NAT_SRC: i32 = 100;

/// One registered hook function.
#[derive(Debug)]
pub struct HookEntry {
    /// Where it runs.
    pub point: HookPoint,
    /// Lower runs first.
    pub priority: i32,
    /// What it runs.
    pub func: HookFn,
    /// Why it sits there (printed by `uvs stats`).
    pub why: &'static str,
    /// Position in [`HookChain::all`], for per-worker counters.
    pub index: usize,
}

impl HookEntry {
    const fn new(point: HookPoint, priority: i32, func: HookFn, why: &'static str) -> Self {
        HookEntry {
            point,
            priority,
            func,
            why,
            index: 0,
        }
    }
}

/// Most entries a chain may hold (sizes the per-worker counter arrays).
pub const MAX_ENTRIES: usize = 24;

/// Most entries one hook point may hold (sizes a [`Plan`]).
pub const MAX_PER_POINT: usize = 8;

/// Netfilter verdicts as the chain sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookVerdict {
    /// Go on to the next entry.
    Accept,
    /// Stop: the packet dies here.
    Drop,
    /// Stop: the function took the packet and transmits it.
    Stolen,
}

/// The registrations uvs makes, in the kernel's terms.
pub fn default_entries() -> Vec<HookEntry> {
    use HookFn::*;
    use HookPoint::*;
    vec![
        HookEntry::new(
            PreRouting,
            PRI_MANGLE,
            Mangle,
            "mangle PREROUTING: marks are set before routing, so a MARK can make a packet a fwmark service's",
        ),
        HookEntry::new(
            PreRouting,
            PRI_NAT_DST,
            NatDst,
            "nat PREROUTING: DNAT before the routing decision, as the kernel's",
        ),
        HookEntry::new(
            LocalIn,
            PRI_MANGLE,
            Mangle,
            "mangle INPUT: before filter, after routing",
        ),
        HookEntry::new(
            Forward,
            PRI_MANGLE,
            Mangle,
            "mangle FORWARD: before filter FORWARD",
        ),
        HookEntry::new(
            LocalOut,
            PRI_MANGLE,
            Mangle,
            "mangle OUTPUT: locally sent packets, before nat OUTPUT",
        ),
        HookEntry::new(
            LocalOut,
            PRI_NAT_DST,
            NatDst,
            "nat OUTPUT: DNAT of local packets, just before IPVS's LOCAL_OUT functions (-99, -98)",
        ),
        HookEntry::new(
            LocalOut,
            PRI_FILTER,
            Filter,
            "filter OUTPUT: after IPVS's LOCAL_OUT functions, as in the kernel",
        ),
        HookEntry::new(
            PostRouting,
            PRI_MANGLE,
            Mangle,
            "mangle POSTROUTING: last look before nat SNAT",
        ),
        HookEntry::new(
            PostRouting,
            PRI_NAT_SRC,
            NatSrc,
            "nat POSTROUTING: SNAT/MASQUERADE on the way out",
        ),
        HookEntry::new(
            LocalIn,
            PRI_NAT_SRC,
            NatSrc,
            "nat INPUT: after IPVS (98, 99), so IPVS sees the original source",
        ),
        HookEntry::new(
            LocalIn,
            PRI_FILTER,
            Filter,
            "filter INPUT: runs before IPVS, so a DROP here hides the packet from IPVS",
        ),
        HookEntry::new(
            Forward,
            PRI_FILTER,
            Filter,
            "filter FORWARD: NAT replies pass it before IPVS rewrites them",
        ),
        HookEntry::new(
            LocalIn,
            PRI_NAT_SRC - 2,
            IpvsReply,
            "NAT replies addressed to the director, before request scheduling",
        ),
        HookEntry::new(
            LocalIn,
            PRI_NAT_SRC - 1,
            IpvsRequest,
            "after filter so firewall rules apply; before nat SNAT so IPVS sees original addresses",
        ),
        HookEntry::new(
            Forward,
            PRI_NAT_SRC - 1,
            IpvsForwardIcmp,
            "ICMP errors about connections, before ip_vs_reply so they are not taken for replies",
        ),
        HookEntry::new(
            Forward,
            PRI_NAT_SRC,
            IpvsReply,
            "NAT replies routed through the director, after filter FORWARD",
        ),
        HookEntry::new(
            LocalOut,
            PRI_NAT_DST + 1,
            IpvsLocalReply,
            "replies of the director's own sockets, after nat OUTPUT DNAT so IPVS sees its result",
        ),
        HookEntry::new(
            LocalOut,
            PRI_NAT_DST + 2,
            IpvsLocalRequest,
            "local clients' requests to a VIP, after ip_vs_local_reply and before filter OUTPUT",
        ),
    ]
}

/// The hook chain: entries per point, sorted by priority.
#[derive(Debug)]
pub struct HookChain {
    points: Vec<(HookPoint, Vec<HookEntry>)>,
    /// Position in `points` of each hook point's list (by `HookPoint as
    /// usize`), so the per-packet [`HookChain::at`] does not search.
    slot: [Option<usize>; HookPoint::COUNT],
}

impl HookChain {
    /// Sorts `entries` into per-point lists (stable for equal priorities,
    /// like netfilter: registration order breaks ties).
    pub fn new(entries: Vec<HookEntry>) -> Self {
        let mut points: Vec<(HookPoint, Vec<HookEntry>)> = Vec::new();
        for e in entries {
            match points.iter_mut().find(|(p, _)| *p == e.point) {
                Some((_, v)) => v.push(e),
                None => points.push((e.point, vec![e])),
            }
        }
        for (_, v) in &mut points {
            v.sort_by_key(|e| e.priority);
        }
        points.sort_by_key(|(p, _)| *p);
        let mut i = 0;
        for (_, v) in &mut points {
            for e in v {
                e.index = i;
                i += 1;
            }
        }
        assert!(
            i <= MAX_ENTRIES,
            "hook chain holds {i} entries, more than MAX_ENTRIES"
        );
        let mut slot = [None; HookPoint::COUNT];
        for (i, (p, v)) in points.iter().enumerate() {
            assert!(
                v.len() <= MAX_PER_POINT,
                "{} holds {} entries, more than MAX_PER_POINT",
                p.name(),
                v.len()
            );
            slot[*p as usize] = Some(i);
        }
        HookChain { points, slot }
    }

    /// The entries of one hook point in the order they run.
    #[inline]
    pub fn at(&self, point: HookPoint) -> &[HookEntry] {
        match self.slot[point as usize] {
            Some(i) => &self.points[i].1,
            None => &[],
        }
    }

    /// Every entry, point by point, in running order.
    pub fn all(&self) -> impl Iterator<Item = &HookEntry> {
        self.points.iter().flat_map(|(_, v)| v.iter())
    }
}

impl HookChain {
    /// The entries `keep` says can act, point by point in running order:
    /// what one configuration's packets walk. Built when the configuration
    /// changes (a bounded loop over the registrations, no allocation), so
    /// an entry that cannot act (an empty table's) costs packets nothing,
    /// as an nftables hook is registered only while its base chain exists.
    pub fn plan(&self, mut keep: impl FnMut(&HookEntry) -> bool) -> Plan {
        let mut plan = Plan::EMPTY;
        for e in self.all().filter(|e| keep(e)) {
            let (at, len) = (
                &mut plan.at[e.point as usize],
                &mut plan.len[e.point as usize],
            );
            at[*len as usize] = Planned {
                func: e.func,
                index: e.index as u8,
            };
            *len += 1;
        }
        plan
    }
}

/// One entry of a [`Plan`]: its function and its [`HookEntry::index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub func: HookFn,
    pub index: u8,
}

/// The entries of a [`HookChain`] that can act under one configuration,
/// per hook point, inline (see [`HookChain::plan`]). Entries left out see
/// no packet: their counters stay still and `uvs trace` does not list
/// them.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    at: [[Planned; MAX_PER_POINT]; HookPoint::COUNT],
    len: [u8; HookPoint::COUNT],
}

impl Plan {
    /// No entry anywhere.
    pub const EMPTY: Plan = Plan {
        at: [[Planned {
            func: HookFn::Filter,
            index: 0,
        }; MAX_PER_POINT]; HookPoint::COUNT],
        len: [0; HookPoint::COUNT],
    };

    /// The entries that run at `point`, in order.
    #[inline(always)]
    pub fn at(&self, point: HookPoint) -> &[Planned] {
        let i = point as usize;
        &self.at[i][..(self.len[i] as usize).min(MAX_PER_POINT)]
    }
}

impl Default for HookChain {
    fn default() -> Self {
        HookChain::new(default_entries())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_runs_before_ipvs_and_reply_before_request() {
        let c = HookChain::default();
        let li: Vec<_> = c
            .at(HookPoint::LocalIn)
            .iter()
            .map(|e| (e.func, e.priority))
            .collect();
        assert_eq!(
            li,
            vec![
                (HookFn::Mangle, -150),
                (HookFn::Filter, 0),
                (HookFn::IpvsReply, 98),
                (HookFn::IpvsRequest, 99),
                (HookFn::NatSrc, 100)
            ]
        );
        let fw: Vec<_> = c
            .at(HookPoint::Forward)
            .iter()
            .map(|e| (e.func, e.priority))
            .collect();
        assert_eq!(
            fw,
            vec![
                (HookFn::Mangle, -150),
                (HookFn::Filter, 0),
                (HookFn::IpvsForwardIcmp, 99),
                (HookFn::IpvsReply, 100)
            ]
        );
        let pre: Vec<_> = c
            .at(HookPoint::PreRouting)
            .iter()
            .map(|e| (e.func, e.priority))
            .collect();
        assert_eq!(pre, vec![(HookFn::Mangle, -150), (HookFn::NatDst, -100)]);
        let post: Vec<_> = c
            .at(HookPoint::PostRouting)
            .iter()
            .map(|e| (e.func, e.priority))
            .collect();
        assert_eq!(post, vec![(HookFn::Mangle, -150), (HookFn::NatSrc, 100)]);
        assert!(c.all().all(|e| !e.why.is_empty()));
    }

    #[test]
    fn a_plan_keeps_the_running_order_of_what_can_act() {
        let c = HookChain::default();
        let plan = c.plan(|e| !matches!(e.func, HookFn::Mangle | HookFn::NatSrc));
        let li: Vec<_> = plan.at(HookPoint::LocalIn).iter().map(|e| e.func).collect();
        assert_eq!(
            li,
            vec![HookFn::Filter, HookFn::IpvsReply, HookFn::IpvsRequest]
        );
        for e in plan.at(HookPoint::LocalIn) {
            let entry = c.all().find(|x| x.index == e.index as usize).unwrap();
            assert_eq!((entry.point, entry.func), (HookPoint::LocalIn, e.func));
        }
        assert!(plan.at(HookPoint::PostRouting).is_empty());
        assert!(Plan::EMPTY.at(HookPoint::Forward).is_empty());
    }

    #[test]
    fn registration_order_breaks_priority_ties() {
        let c = HookChain::new(vec![
            HookEntry::new(HookPoint::LocalIn, 5, HookFn::IpvsRequest, ""),
            HookEntry::new(HookPoint::LocalIn, 5, HookFn::Filter, ""),
            HookEntry::new(HookPoint::LocalIn, -1, HookFn::IpvsReply, ""),
        ]);
        let li: Vec<_> = c.at(HookPoint::LocalIn).iter().map(|e| e.func).collect();
        assert_eq!(
            li,
            vec![HookFn::IpvsReply, HookFn::IpvsRequest, HookFn::Filter]
        );
    }
}
