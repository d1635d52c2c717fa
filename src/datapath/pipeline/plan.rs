//! Which hook entries a configuration's packets walk: the [`Plan`] of the
//! chain for one (filter rules, emulated tables) pair, derived per worker
//! thread when either generation moves and never per packet.
//!
//! Contract: an entry is left out exactly when running it could not
//! change the packet, its mark or its fate — the per-packet checks it
//! replaces (`uvs filter` rules in the entry's chain; `Ruleset::active`
//! for mangle and filter at the point) give ACCEPT without a side effect
//! in that case. The nat entries stay in at every point while the nat
//! table holds any rule, since a flow translated at one point is followed
//! at the others. IPVS's own entries always run.

use crate::datapath::filter::FilterTable;
use crate::datapath::hooks::{HookChain, HookEntry, HookFn, HookPoint, Plan};
use crate::datapath::tables::{Ruleset, TableId};

const POINTS: [HookPoint; HookPoint::COUNT] = [
    HookPoint::PreRouting,
    HookPoint::LocalIn,
    HookPoint::Forward,
    HookPoint::LocalOut,
    HookPoint::PostRouting,
];

/// Whether entry `e` can act on a packet under `filter` and `tables`.
fn can_act(e: &HookEntry, filter: &FilterTable, tables: &Ruleset, nat: bool) -> bool {
    match e.func {
        HookFn::Mangle => tables.active(TableId::Mangle, e.point),
        HookFn::NatDst | HookFn::NatSrc => nat,
        HookFn::Filter => {
            filter.rules().iter().any(|r| r.chain == e.point)
                || tables.active(TableId::Filter, e.point)
        }
        HookFn::IpvsReply
        | HookFn::IpvsRequest
        | HookFn::IpvsForwardIcmp
        | HookFn::IpvsLocalReply
        | HookFn::IpvsLocalRequest => true,
    }
}

/// The plan of `chain` under `filter` and `tables`.
pub(super) fn build(chain: &HookChain, filter: &FilterTable, tables: &Ruleset) -> Plan {
    let nat = POINTS.iter().any(|&p| tables.active(TableId::Nat, p));
    chain.plan(|e| can_act(e, filter, tables, nat))
}

/// One thread's plan, for the filter and tables generations it was built
/// from (0: none yet).
pub(super) struct Cached {
    gens: (u64, u64),
    plan: Plan,
}

impl Cached {
    pub(super) const EMPTY: Cached = Cached {
        gens: (0, 0),
        plan: Plan::EMPTY,
    };

    /// The plan for generations `gens` of `filter` and `tables`.
    #[inline(always)]
    pub(super) fn get(
        &mut self,
        gens: (u64, u64),
        chain: &HookChain,
        filter: &FilterTable,
        tables: &Ruleset,
    ) -> &Plan {
        if self.gens != gens {
            self.rebuild(gens, chain, filter, tables);
        }
        &self.plan
    }

    #[cold]
    #[inline(never)]
    fn rebuild(&mut self, gens: (u64, u64), chain: &HookChain, f: &FilterTable, t: &Ruleset) {
        self.plan = build(chain, f, t);
        self.gens = gens;
    }
}
