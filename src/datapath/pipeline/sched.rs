//! Choosing a new connection's real server, shared by the request path and
//! `schedule_icmp`: the persistence template (with a persistence engine's
//! key, `--pe sip`) or the scheduler. Also the `schedule_icmp` knob itself:
//! an ICMP error from a client about a connection the table does not hold
//! is scheduled like that connection's first packet (the kernel's
//! `ip_vs_in_icmp` with `sysctl_schedule_icmp`), so the error reaches a
//! real server instead of being left to the director's kernel.

use std::sync::Arc;

use uvs_conntrack::{Dir, Handle, NewConn, PacketInfo, TemplateKey, Tuple};
use uvs_fwd::Parsed;
use uvs_sched::{Dest, SchedKey};

use super::{Pipeline, View, SCTP, TCP, UDP};
use crate::datapath::service::ServiceRt;
use crate::datapath::stats::{add, DropReason, WorkerStats};
use crate::datapath::trace;

impl Pipeline {
    /// The real server for a new connection `key` of service `svc`, and the
    /// template that chose it (persistent services). `pe` is the
    /// persistence engine's key (0: none); `mark` the packet's firewall
    /// mark (a fwmark service's template is the mark's).
    pub(super) fn pick_dest(
        &self,
        svc: &ServiceRt,
        key: &SchedKey,
        pe: u64,
        mark: u32,
    ) -> Result<(Arc<Dest>, Option<Handle>), DropReason> {
        let Some(per) = svc.persistence else {
            return trace::schedule(&*svc.sched, &svc.dests, key)
                .map(|d| (d, None))
                .ok_or(DropReason::NoDestination);
        };
        // The client's template picks the server; a new client is
        // scheduled once and the template remembers the choice.
        // A fwmark service's template is the mark's, for every address
        // and port it covers (as the kernel's).
        let fwm = svc.proto == crate::datapath::service::FWMARK;
        let tk = TemplateKey {
            proto: if fwm { 0 } else { key.proto },
            caddr: per.mask.apply(key.src),
            vaddr: if fwm { svc.addr } else { key.dst },
            vport: svc.port,
            fwmark: if fwm { mark } else { 0 },
            pe,
        };
        let t = match self.conns.lookup_template(&tk, key.now_ms) {
            Some(t) => t,
            None => {
                let dest = trace::schedule(&*svc.sched, &svc.dests, key)
                    .ok_or(DropReason::NoDestination)?;
                self.conns
                    .get_or_insert_template(
                        &tk,
                        &dest,
                        dest.port,
                        dest.fwd_method(),
                        per.timeout_ms,
                        key.now_ms,
                    )
                    .map_err(|_| DropReason::TableFull)?
            }
        };
        Ok((Arc::clone(t.dest()), Some(t)))
    }

    /// `schedule_icmp`: `inner` is the quoted header of ICMP error `p` from
    /// a client (the packet it could not take, VIP → client), for which no
    /// connection exists. Creates the connection as if the client had sent
    /// its first packet and returns it (as `lookup_related` would), or
    /// `Ok(None)` when no service owns the tuple (or the knob is off).
    /// TCP and UDP only; the connection starts in the state a packet
    /// without flags leaves.
    pub(super) fn schedule_icmp(
        &self,
        inner: &Tuple,
        p: &Parsed,
        now: u64,
        services: &View<'_>,
        st: &WorkerStats,
    ) -> Result<Option<(Handle, Dir)>, DropReason> {
        if !self.conns.knobs().schedule_icmp || !matches!(inner.proto, TCP | UDP) {
            return Ok(None);
        }
        // The quoted packet went VIP → client: the request is its inverse.
        let (caddr, cport, vaddr, vport) = (inner.dst, inner.dport, inner.src, inner.sport);
        if vaddr != p.dst {
            return Ok(None);
        }
        let Some(svc) = services
            .small
            .find(services.services, inner.proto, vaddr, vport)
        else {
            return Ok(None);
        };
        if svc.pe.is_some() {
            // A persistence engine keys the UDP payload, which an ICMP
            // error does not carry whole: the kernel's SIP engine drops it.
            return Err(DropReason::PeNoCallId);
        }
        let key = SchedKey {
            proto: inner.proto,
            src: caddr,
            sport: cport,
            dst: vaddr,
            dport: vport,
            now_ms: now,
        };
        let (dest, tpl) = self.pick_dest(svc, &key, 0, 0)?;
        let dport = if dest.port == 0 { vport } else { dest.port };
        let tag = dest.stats_tag();
        let nc = NewConn {
            proto: inner.proto,
            caddr,
            cport,
            vaddr,
            vport,
            daddr: dest.addr,
            dport,
            fwd: dest.fwd_method(),
            dest,
        };
        let bytes = p.ip_len as u32;
        let info = match inner.proto {
            TCP => PacketInfo::tcp(0, bytes),
            SCTP => PacketInfo::sctp(0, bytes),
            _ => PacketInfo::udp(bytes),
        };
        let r = match &tpl {
            Some(t) => self.conns.add_controlled(nc, t, info, now),
            None => self.conns.add(nc, info, now),
        };
        // `Exists`: another worker created it meanwhile; use that one.
        if let Ok(()) = r {
            add(&st.conns, 1);
            st.count_conn(tag);
        }
        let found = self.conns.lookup_related(inner);
        match found {
            Some(f) => Ok(Some(f)),
            None => Err(DropReason::TableFull),
        }
    }
}

#[cfg(test)]
mod tests;
