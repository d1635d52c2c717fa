//! The IPVS hook functions: the connection lookup (once per packet), the
//! reply's SNAT, ICMP errors about connections, the request's forwarding
//! and a new connection's scheduling, and the forwarding methods' rewrites.

use std::net::IpAddr;

use uvs_conntrack::{Dir, Hit, InsertError, NewConn, PacketInfo, Sides, Tuple, Update};
use uvs_fwd::xmit::icmp::{nat_icmp_error, IcmpNat};
use uvs_fwd::{CsumMode, Parsed};
use uvs_sched::{FwdMethod, SchedKey, TunConfig};

use super::{tuple, xmit_reason, Ctx, Pipeline, Step, Verdict, View, SCTP, TCP, UDP};
use crate::datapath::hooks::HookPoint;
use crate::datapath::service::Pe;
use crate::datapath::stats::{add, DropReason, WorkerStats};

impl Pipeline {
    #[inline(always)]
    pub(super) fn lookup<'c>(
        &self,
        frame: &[u8],
        p: &Parsed,
        now: u64,
        ctx: &'c mut Ctx,
    ) -> Option<&'c (Hit, Dir, Update)> {
        if !ctx.looked_up {
            ctx.looked_up = true;
            let (t, info) = (tuple(p), Self::info(frame, p));
            // Written into the context's slot in place (no move of the
            // found copy).
            let sides = Self::sides(p, ctx.point);
            self.conns
                .lookup_update_into(&t, sides, info, now, &mut ctx.hit);
        }
        ctx.hit.as_ref()
    }

    /// The sides of the connection table a packet's lookup probes. At
    /// FORWARD (not addressed to a VIP) the reply side only, as the
    /// kernel's `ip_vs_out`. A bare TCP SYN (no ACK) the request side only:
    /// a server answers a client's SYN with SYN-ACK, so a bare SYN is never
    /// taken as a NAT reply (a simultaneous open of a client whose address
    /// is a VIP, which no server of a NAT service makes, would be scheduled
    /// as a new connection instead). This spares each new connection a
    /// second lock, on the shard of the VIP endpoint, which every new
    /// connection to that service would take. Every other packet to a VIP
    /// (or sent by the director) probes both: the replies of a local
    /// client that sources from a VIP address arrive there.
    #[inline(always)]
    pub(super) fn sides(p: &Parsed, point: HookPoint) -> Sides {
        const SYN: u8 = uvs_fwd::wire::tcp::flags::SYN;
        const ACK: u8 = uvs_fwd::wire::tcp::flags::ACK;
        if point == HookPoint::Forward {
            Sides::Reply
        } else if p.proto == TCP && p.tcp_flags & (SYN | ACK) == SYN {
            Sides::Request
        } else {
            Sides::Both
        }
    }

    /// What the state machines need: TCP flags, or the first SCTP chunk's
    /// type (right after the 12-byte common header).
    pub(super) fn info(frame: &[u8], p: &Parsed) -> PacketInfo {
        let bytes = p.ip_len as u32;
        match p.proto {
            TCP => PacketInfo::tcp(p.tcp_flags, bytes),
            SCTP => PacketInfo::sctp(frame.get(p.l4_off + 12).copied().unwrap_or(0), bytes),
            _ => PacketInfo::udp(bytes),
        }
    }

    /// `ip_vs_reply`: a NAT reply from a real server gets the VIP back as
    /// its source and goes to the client.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ipvs_reply(
        &self,
        frame: &mut [u8],
        p: &Parsed,
        csum: CsumMode,
        now: u64,
        ctx: &mut Ctx,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> Step {
        let Some((h, Dir::Out, update)) = self.lookup(frame, p, now, ctx) else {
            return Step::Continue;
        };
        if h.fwd() != FwdMethod::Masq {
            return Step::Continue;
        }
        match update {
            Update::Forward => {}
            Update::Drop | Update::Reschedule => {
                return Self::drop(st, DropReason::DestRemoved, out)
            }
        }
        match uvs_fwd::snat(frame, p, h.vaddr(), h.vport(), csum) {
            Ok(()) => {
                st.count_packet(h.stats_tag(), false, p.ip_len);
                *out = Verdict::Xmit {
                    next_hop: h.caddr(),
                    dnat_from: None,
                    snat_from: Some((p.src, p.sport)),
                    pkt: Parsed {
                        src: h.vaddr(),
                        sport: h.vport(),
                        ..*p
                    },
                };
                Step::Done
            }
            Err(e) => Self::drop(st, xmit_reason(&e), out),
        }
    }

    /// An ICMP error quoting a packet of a connection (`ip_vs_in_icmp` for
    /// errors from the client side, `want` = In; `ip_vs_forward_icmp` for
    /// errors from a real server, `want` = Out): NAT rewrites outer and
    /// quoted headers; DR and TUN forward it as the connection's packets.
    /// Errors create connections only under the `schedule_icmp` knob
    /// (`sched.rs`).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn ipvs_icmp(
        &self,
        frame: &mut [u8],
        p: &Parsed,
        csum: CsumMode,
        now: u64,
        want: Dir,
        services: &View<'_>,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> Step {
        let Ok(emb) = uvs_fwd::embedded(frame, p) else {
            return Step::Continue;
        };
        if !emb.has_ports || !matches!(emb.proto, TCP | UDP | SCTP) {
            return Step::Continue;
        }
        let inner = Tuple {
            proto: emb.proto,
            src: emb.src,
            sport: emb.sport,
            dst: emb.dst,
            dport: emb.dport,
        };
        let found = match self.conns.lookup_related(&inner) {
            None if want == Dir::In => match self.schedule_icmp(&inner, p, now, services, st) {
                Ok(f) => f,
                Err(r) => return Self::drop(st, r, out),
            },
            f => f,
        };
        let Some((h, dir)) = found else {
            return Step::Continue;
        };
        if dir != want {
            return Step::Continue;
        }
        if self.conns.update_related(&h, dir, p.ip_len as u32, now) != Update::Forward {
            return Self::drop(st, DropReason::DestRemoved, out);
        }
        st.count_packet(h.dest().stats_tag(), dir == Dir::In, p.ip_len);
        let (nat, next_hop) = match (dir, h.fwd()) {
            (Dir::Out, FwdMethod::Masq) => (IcmpNat::to_client(h.vaddr(), h.vport()), h.caddr()),
            (Dir::In, FwdMethod::Masq) => (IcmpNat::to_server(h.daddr(), h.dport()), h.daddr()),
            (Dir::In, _) => return self.xmit_handle(frame, p, csum, &h, st, out),
            (Dir::Out, _) => return Step::Continue,
        };
        match nat_icmp_error(frame, p, &emb, &nat, csum) {
            // Outer and quoted headers both changed: parse once more here
            // (ICMP errors only), so egress gets the packet as it now is.
            Ok(()) => match uvs_fwd::parse(frame) {
                Ok(pkt) => Self::done(
                    out,
                    Verdict::Xmit {
                        next_hop,
                        dnat_from: None,
                        snat_from: None,
                        pkt,
                    },
                ),
                Err(_) => Self::drop(st, DropReason::Rewrite, out),
            },
            Err(e) => Self::drop(st, xmit_reason(&e), out),
        }
    }

    /// `ip_vs_remote_request`: a packet to a virtual service: an existing
    /// connection's packet is forwarded to its real server; a new one is
    /// scheduled first.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn ipvs_request(
        &self,
        frame: &mut [u8],
        p: &Parsed,
        csum: CsumMode,
        now: u64,
        services: &View<'_>,
        ctx: &mut Ctx,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> Step {
        if let Some((h, Dir::In, update)) = self.lookup(frame, p, now, ctx) {
            match update {
                Update::Forward => {
                    st.count_packet(h.stats_tag(), true, p.ip_len);
                    return self.xmit_request(
                        frame,
                        p,
                        csum,
                        h.fwd(),
                        h.daddr(),
                        h.dport(),
                        h.tun_config(),
                        st,
                        out,
                    );
                }
                Update::Drop => return Self::drop(st, DropReason::DestRemoved, out),
                // A SYN reusing a finished connection's tuple: schedule it
                // afresh below, with this very packet.
                Update::Reschedule => {}
            }
        }
        self.ipvs_schedule(frame, p, csum, now, services, ctx.mark, st, out)
    }

    /// A new connection (or a reused tuple's): find the service, schedule,
    /// insert, forward. Apart from the per-packet path so that path stays
    /// small enough to inline.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn ipvs_schedule(
        &self,
        frame: &mut [u8],
        p: &Parsed,
        csum: CsumMode,
        now: u64,
        services: &View<'_>,
        mark: u32,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> Step {
        // The kernel's order (`ip_vs_service_find`): the packet's mark's
        // service first, then (protocol, address, port), then port 0.
        let by_mark = match mark {
            0 => None,
            m => services.services.find_fwmark(!p.is_ipv4(), m),
        };
        let found = by_mark.or_else(|| {
            services
                .small
                .find(services.services, p.proto, p.dst, p.dport)
        });
        let Some(svc) = found else {
            return Step::Continue;
        };
        let info = Self::info(frame, p);
        if !uvs_conntrack::may_create(p.proto, &info, &self.conns.knobs()) {
            // The kernel would pass this to its own stack, which answers
            // with a RST; uvs owns the VIP and drops it instead.
            return Self::drop(st, DropReason::NoConnection, out);
        }
        // The `drop_packet` flood defence: one load unless engaged.
        if self.conns.drop_new_packet() {
            return Self::drop(st, DropReason::DefenseDropPacket, out);
        }
        let key = SchedKey {
            proto: p.proto,
            src: p.src,
            sport: p.sport,
            dst: p.dst,
            dport: p.dport,
            now_ms: now,
        };
        // A persistence engine adds its key to the template's (`--pe sip`:
        // the Call-ID; a datagram without one cannot be keyed: dropped).
        let pe = match svc.pe {
            None => 0,
            Some(Pe::Sip) => match crate::datapath::pe_sip::template_key(frame, p) {
                Some(k) => k,
                None => return Self::drop(st, DropReason::PeNoCallId, out),
            },
        };
        let (dest, tpl) = match self.pick_dest(svc, &key, pe, mark) {
            Ok(x) => x,
            Err(r) => return Self::drop(st, r, out),
        };
        let fwd = dest.fwd_method();
        let tun = match fwd {
            FwdMethod::Tunnel => dest.tun_config(),
            _ => TunConfig::default(),
        };
        // Port 0 (a port-0 service's server): the client's port.
        let dport = if dest.port == 0 { p.dport } else { dest.port };
        let daddr = dest.addr;
        let tag = dest.stats_tag();
        if svc.one_packet && p.proto == UDP {
            // `-o`: this datagram alone was scheduled; no entry stays (a
            // template used keeps its timer running, as binding would).
            if let Some(t) = &tpl {
                self.conns.touch_template(t, now);
            }
            add(&st.conns, 1);
            st.count_conn(tag);
            st.count_packet(tag, true, p.ip_len);
            return self.xmit_request(frame, p, csum, fwd, daddr, dport, tun, st, out);
        }
        let nc = NewConn {
            proto: p.proto,
            caddr: p.src,
            cport: p.sport,
            vaddr: p.dst,
            vport: p.dport,
            daddr,
            dport,
            dest,
            fwd,
        };
        // `add`: the entry takes the scheduler's `Arc<Dest>`; no handle
        // (and no further reference count on the destination) comes back.
        let inserted = match &tpl {
            Some(t) => self.conns.add_controlled(nc, t, info, now),
            None => self.conns.add(nc, info, now),
        };
        match inserted {
            Ok(_) => {}
            // Another worker created it first (its packets hashed elsewhere):
            // follow that entry.
            Err(InsertError::Exists) => {
                add(&st.conn_races, 1);
                return match self.conns.lookup_in(&tuple(p)) {
                    Some(h) => {
                        st.count_packet(h.dest().stats_tag(), true, p.ip_len);
                        self.xmit_handle(frame, p, csum, &h, st, out)
                    }
                    None => Self::drop(st, DropReason::TableFull, out),
                };
            }
            Err(_) => return Self::drop(st, DropReason::TableFull, out),
        }
        add(&st.conns, 1);
        st.count_conn(tag);
        st.count_packet(tag, true, p.ip_len);
        self.xmit_request(frame, p, csum, fwd, daddr, dport, tun, st, out)
    }

    /// Forwards a packet along an existing connection found by handle
    /// (ICMP errors, insert races: not the per-packet path).
    pub(super) fn xmit_handle(
        &self,
        frame: &mut [u8],
        p: &Parsed,
        csum: CsumMode,
        h: &uvs_conntrack::Handle,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> Step {
        self.xmit_request(
            frame,
            p,
            csum,
            h.fwd(),
            h.daddr(),
            h.dport(),
            h.dest().tun_config(),
            st,
            out,
        )
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn xmit_request(
        &self,
        frame: &mut [u8],
        p: &Parsed,
        csum: CsumMode,
        fwd: FwdMethod,
        daddr: IpAddr,
        dport: u16,
        tun: TunConfig,
        st: &WorkerStats,
        out: &mut Verdict,
    ) -> Step {
        // Each arm writes the verdict in place (no move of a built one).
        match fwd {
            FwdMethod::Masq => match uvs_fwd::dnat(frame, p, daddr, dport, csum) {
                Ok(()) => {
                    *out = Verdict::Xmit {
                        next_hop: daddr,
                        dnat_from: Some((p.dst, p.dport)),
                        snat_from: None,
                        pkt: Parsed {
                            dst: daddr,
                            dport,
                            ..*p
                        },
                    }
                }
                Err(e) => return Self::drop(st, xmit_reason(&e), out),
            },
            // Direct routing: the packet keeps the VIP; only the TTL and, in
            // the worker, the MACs change (the real server is on-link).
            FwdMethod::Route => match uvs_fwd::xmit::dr::dr(frame, p) {
                Ok(()) => {
                    *out = Verdict::Xmit {
                        next_hop: daddr,
                        dnat_from: None,
                        snat_from: None,
                        pkt: *p,
                    }
                }
                Err(e) => return Self::drop(st, xmit_reason(&e), out),
            },
            FwdMethod::Tunnel => {
                *out = Verdict::Tunnel {
                    next_hop: daddr,
                    tun,
                    pkt: *p,
                }
            }
            FwdMethod::Local => return Self::drop(st, DropReason::Unsupported, out),
        }
        Step::Done
    }
}
