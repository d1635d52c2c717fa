//! The outer packets of IPVS tunnelling (`-i`) through the director's
//! LOCAL_OUT and POST_ROUTING hooks.
//!
//! The kernel's `ip_vs_tunnel_xmit` builds the outer packet and sends it
//! with `ip_local_out`, as a packet of the director's own: it walks
//! LOCAL_OUT (mangle OUTPUT −150, nat OUTPUT −100, filter OUTPUT 0; IPVS's
//! own LOCAL_OUT functions let it pass, it carries `ipvs_property`), then
//! POST_ROUTING (mangle −150, nat 100). uvs encapsulates in the egress
//! stage, where the route gives the outer source; the walk is made here,
//! once per packet IPVS tunnels (a GSO super-packet once, as in the
//! kernel, which segments after the hooks), on the outer headers as the
//! egress stage will write them ([`uvs_fwd::xmit::tun::outer_head`]).
//!
//! What rules see of the outer packet:
//! * the real server as destination, the outer protocol (4 or 41 for
//!   ipip, 47 GRE, 17 GUE with its UDP ports), its length, TTL and DS
//!   field; as source the director's address toward the real server, taken
//!   as MASQUERADE takes it (the address on the real server's subnet, else
//!   the first of its family) — the route's preferred source the egress
//!   stage uses is that same address on a connected subnet;
//! * the inner packet's mark (the kernel keeps `skb->mark`);
//! * `--ctstate NEW`: `ip_vs_tunnel_xmit_prepare` drops the inner
//!   packet's conntrack entry (`nf_reset_ct`), so the kernel's conntrack
//!   meets the outer packet as a new flow, and a tunnel is never answered
//!   on its outer tuple; `-m ipvs --ipvs` alone matches it (IPVS sent
//!   it: `ipvs_property`), any other `-m ipvs` option does not (its outer
//!   tuple is no IPVS connection's), as xt_ipvs decides;
//! * `-o`: the interface of the real server's route (route snapshot), at
//!   OUTPUT and POSTROUTING alike; LOG lines show the outer header, then
//!   the inner packet, with no `IN=`.
//!
//! Verdicts: a DROP or REJECT drops the packet (`drop.filtered`, the
//! entry's dropped count) after IPVS took it, as in the kernel; MARK sets
//! the mark later chains see. The nat table is not walked for outer
//! packets (README, Known limits).
//!
//! Cost: nothing unless a mangle or filter OUTPUT or mangle POSTROUTING
//! chain has a rule or a DROP policy ([`Ruleset::tunnel_walk_on`]); then a
//! header build on the stack (no allocation) and the chains' walks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use uvs_fwd::xmit::tun::outer_head;
use uvs_fwd::CsumMode;

use super::{Ctx, Pipeline, Verdict, UDP};
use crate::datapath::hooks::{HookFn, HookPoint};
use crate::datapath::stats::{add, DropReason, WorkerStats};
use crate::datapath::tables::log::CAPTURE;
use crate::datapath::tables::{CtFacts, CtState, Pkt, Ruleset, Seen, TableId, TableVerdict};

/// An Ethernet header's length (the walk's frame starts with a blank one).
const ETH: usize = 14;
/// The longest outer head: IPv6 (40), UDP (8), GUE with the remote
/// checksum option (8).
const HEAD_MAX: usize = 64;

/// Where the outer packet walks, in the kernel's order (the nat entries
/// are not walked, see the module doc).
const WALK: [(HookPoint, TableId, HookFn); 3] = [
    (HookPoint::LocalOut, TableId::Mangle, HookFn::Mangle),
    (HookPoint::LocalOut, TableId::Filter, HookFn::Filter),
    (HookPoint::PostRouting, TableId::Mangle, HookFn::Mangle),
];

impl Pipeline {
    /// The walk of a tunnelled packet's outer packet (`out` a
    /// `Verdict::Tunnel`, the frame its inner packet): becomes a drop when
    /// a chain drops it.
    #[allow(clippy::too_many_arguments)]
    #[cold]
    #[inline(never)]
    pub(super) fn tunnel_out(
        &self,
        tables: &Ruleset,
        frame: &[u8],
        csum: CsumMode,
        now: u64,
        ctx: &mut Ctx,
        st: &WorkerStats,
        out: &mut Verdict,
    ) {
        let Verdict::Tunnel { next_hop, tun, pkt } = *out else {
            return;
        };
        let src = tables
            .local
            .masq_addr(next_hop)
            .filter(|a| a.is_ipv4() == next_hop.is_ipv4())
            .unwrap_or(match next_hop {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            });
        let params = crate::datapath::egress::tunnel_params(tun, src, next_hop);
        let mut buf = [0u8; ETH + HEAD_MAX + CAPTURE];
        let Ok(o) = outer_head(frame, &pkt, &params, csum, &mut buf[ETH..ETH + HEAD_MAX]) else {
            // Not to be sent (TTL, size): the egress stage refuses it the
            // same way, and counts it.
            return;
        };
        let ethertype: u16 = if next_hop.is_ipv4() { 0x0800 } else { 0x86dd };
        buf[12..ETH].copy_from_slice(&ethertype.to_be_bytes());
        let inner = frame.get(pkt.l3_off..pkt.ip_end).unwrap_or(&[]);
        let at = ETH + o.head_len;
        let n = inner.len().min(buf.len() - at);
        buf[at..at + n].copy_from_slice(&inner[..n]);
        let seen = Seen {
            frame: &buf[..at + n],
            l3_off: ETH,
            ip_end: ETH + o.ip_len,
            now_ms: now,
        };
        let k = Pkt {
            proto: o.proto,
            src,
            dst: next_hop,
            sport: o.sport,
            dport: o.dport,
            has_ports: o.proto == UDP,
            len: o.ip_len as u32,
        };
        // `-o` at POSTROUTING routes the real server, as at OUTPUT.
        crate::datapath::tables::route::set_next_hop(next_hop, next_hop);
        let mut ct = || CtFacts {
            state: CtState::NEW | CtState::IPVS_PROPERTY,
            ipvs: None,
        };
        for (point, id, func) in WALK {
            if !tables.active(id, point) {
                continue;
            }
            let Some(e) = self.hooks.at(point).iter().find(|e| e.func == func) else {
                continue;
            };
            add(&st.hook_seen[e.index], 1);
            let mut mark = ctx.mark;
            let v = tables.run_seen(id, point, &k, &seen, &mut mark, &mut ct);
            ctx.mark = mark;
            if let TableVerdict::Drop | TableVerdict::Reject = v {
                add(&st.hook_dropped[e.index], 1);
                st.drop(DropReason::Filtered);
                *out = Verdict::Drop(DropReason::Filtered);
                return;
            }
        }
    }
}

#[cfg(test)]
#[path = "tun_out_tests.rs"]
mod tests;
