//! The LOCAL_OUT entry of the pipeline: packets sent by processes on the
//! director itself (local clients of a VIP, IPVS's `ip_vs_local_request`
//! and `ip_vs_local_reply`). The caller hands over the packet as an
//! Ethernet frame (a device that carries bare IP packets, such as a TUN,
//! gets a placeholder Ethernet header in front); the verdicts are those of
//! [`Pipeline::process`]. It is fed by the `uvs-lo` TUN device that the
//! VIPs are routed to for local origin (`uvs run --local-src`, see
//! [`crate::sys::local_out`] and [`crate::io::tun_local`]).

use uvs_fwd::CsumMode;

use super::{Pipeline, Verdict};
use crate::datapath::hooks::HookPoint;
use crate::datapath::stats::WorkerStats;

impl Pipeline {
    /// Processes one frame the director's own stack sent, in place: it
    /// meets the LOCAL_OUT hook entries.
    pub fn process_local_out(
        &self,
        frame: &mut [u8],
        csum: CsumMode,
        now_ms: u64,
        st: &WorkerStats,
    ) -> Verdict {
        let mut v = Verdict::Pass;
        self.process_from(frame, csum, now_ms, st, true, &mut v);
        v
    }
}

/// The routing decision: the director's own packets meet LOCAL_OUT; VIPs
/// are local, so requests meet LOCAL_IN; everything else (NAT replies to
/// clients) is forwarded.
#[inline(always)]
pub(super) fn route(local_out: bool, to_vip: bool) -> HookPoint {
    if local_out {
        HookPoint::LocalOut
    } else if to_vip {
        HookPoint::LocalIn
    } else {
        HookPoint::Forward
    }
}

#[cfg(test)]
mod tests;
