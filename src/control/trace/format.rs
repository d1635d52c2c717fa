//! One trace record as a block of text, or as one JSON object.
//!
//! The text block, one line per fact, in the order the packet met them:
//!
//! ```text
//! #1 on c0 (ring 0), 74 bytes
//!   parse: IPv4 TCP 198.51.100.10:40000 -> 192.0.2.10:80 [SYN] ttl 64, 60 bytes
//!   hook LOCAL_IN 0 filter: ACCEPT
//!   hook LOCAL_IN 98 ip_vs_reply: ACCEPT
//!   hook LOCAL_IN 99 ip_vs_remote_request: STOLEN
//!   service: TCP 192.0.2.10:80 rr
//!   scheduler: rr: 203.0.113.12:80, next after 203.0.113.11:80
//!   connection: new: none -> SYN_RECV (timeout 60 s) 198.51.100.10:40000 -> 192.0.2.10:80 -> 203.0.113.12:80 masq
//!   forward: masq, DNAT 192.0.2.10:80 -> 203.0.113.12:80
//!   egress: next hop 203.0.113.12 via s0, MAC 02:00:00:00:00:01 -> 02:00:00:00:00:02
//!   result: sent
//! ```
//!
//! A table rule that decided is listed under its hook entry
//! (`rule filter INPUT #1 "-A INPUT … -j DROP": DROP`); a drop is named
//! by its counter (`result: dropped: filtered`). The JSON object has the
//! same facts under the keys `seq`, `ring`, `iface`, `bytes`, `followed`,
//! `parse`, `hooks` (each with its `rules`), `service`, `scheduler`,
//! `connection`, `forward`, `egress` and `result`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde_json::{json, Value};
use uvs_fwd::Parsed;
use uvs_sched::FwdMethod;

use super::Ifaces;
use crate::datapath::hooks::HookVerdict;
use crate::datapath::trace::{ConnView, EgressView, Outcome, Record, RuleVisit};

fn proto_name(p: u8) -> String {
    match p {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "ICMPv6".into(),
        132 => "SCTP".into(),
        n => format!("proto {n}"),
    }
}

fn iface(ifaces: &Ifaces, index: u32) -> String {
    ifaces
        .iter()
        .find(|(i, _)| *i == index)
        .map_or_else(|| format!("ifindex {index}"), |(_, n)| n.clone())
}

fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn tcp_flags(f: u8) -> String {
    const NAMES: [(u8, &str); 6] = [
        (0x02, "SYN"),
        (0x10, "ACK"),
        (0x01, "FIN"),
        (0x04, "RST"),
        (0x08, "PSH"),
        (0x20, "URG"),
    ];
    let v: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect();
    v.join(",")
}

fn endpoint(p: &Parsed, src: bool) -> String {
    let (a, port) = if src {
        (p.src, p.sport)
    } else {
        (p.dst, p.dport)
    };
    if p.has_ports() {
        SocketAddr::new(a, port).to_string()
    } else {
        a.to_string()
    }
}

fn verdict_name(v: HookVerdict) -> &'static str {
    match v {
        HookVerdict::Accept => "ACCEPT",
        HookVerdict::Drop => "DROP",
        HookVerdict::Stolen => "STOLEN",
    }
}

fn fwd_name(f: FwdMethod) -> &'static str {
    match f {
        FwdMethod::Masq => "masq",
        FwdMethod::Route => "route",
        FwdMethod::Tunnel => "tunnel",
        FwdMethod::Local => "local",
    }
}

fn parse_line(p: &Parsed) -> String {
    let fam = if p.is_ipv4() { "IPv4" } else { "IPv6" };
    let mut s = format!(
        "{fam} {} {} -> {}",
        proto_name(p.proto),
        endpoint(p, true),
        endpoint(p, false)
    );
    if p.proto == 6 && p.has_l4 {
        let _ = write!(s, " [{}]", tcp_flags(p.tcp_flags));
    }
    if p.is_fragment {
        s.push_str(" fragment");
    }
    let _ = write!(s, " ttl {}, {} bytes", p.ttl, p.ip_len);
    s
}

fn conn_line(c: &ConnView) -> String {
    format!(
        "{} -> {} -> {} {}",
        c.client,
        c.virt,
        c.server,
        fwd_name(c.fwd)
    )
}

/// The scheduler's line: its own reason, or what a persistent service did.
fn sched_line(r: &Record) -> Option<String> {
    let persistent = r.service.is_some_and(|s| s.persistent);
    match (&r.sched, persistent, r.conn_new, r.conn_after) {
        (Some(s), p, _, _) => {
            let mut l = s.why.line(s.sched, s.picked);
            if p {
                l.push_str(" (new persistent template)");
            }
            Some(l)
        }
        (None, true, true, Some(c)) => Some(format!("persistent template: {}", c.server)),
        _ => None,
    }
}

/// What the rewrite did, from the packet as it came and as it leaves.
fn rewrite_line(before: &Parsed, after: &Parsed, fwd: Option<FwdMethod>) -> String {
    let f = fwd.map_or("forwarded", fwd_name);
    if (before.src, before.sport) != (after.src, after.sport) {
        format!(
            "{f}, SNAT {} -> {} (back to the virtual service)",
            endpoint(before, true),
            endpoint(after, true)
        )
    } else if (before.dst, before.dport) != (after.dst, after.dport) {
        format!(
            "{f}, DNAT {} -> {}",
            endpoint(before, false),
            endpoint(after, false)
        )
    } else {
        format!("{f}, addresses unchanged")
    }
}

fn result_line(r: &Record) -> String {
    match (r.outcome, r.egress_drop) {
        (Outcome::Pass, _) => "passed to the kernel (not uvs's)".into(),
        (Outcome::Drop(d), _) => format!("dropped: {}", d.name()),
        (Outcome::Reject(d), _) => format!("dropped: {} (ICMP error to the sender)", d.name()),
        (_, Some(d)) => format!("dropped at egress: {}", d.name()),
        (_, None) => match r.egress {
            Some(EgressView::Parked) => "parked until the neighbour answers".into(),
            _ => "sent".into(),
        },
    }
}

fn rule_text(v: &RuleVisit) -> String {
    format!(
        "rule {} {} #{} \"{}\": {}",
        v.table,
        v.chain.as_str(),
        v.rule_no,
        v.text.as_str(),
        v.verdict
    )
}

/// The record as a text block (ends with a blank line).
pub fn text(r: &Record, ifaces: &Ifaces) -> String {
    let mut s = format!(
        "#{} on {} (ring {}), {} bytes\n",
        r.seq,
        iface(ifaces, r.ifindex),
        r.ring,
        r.len
    );
    let mut line = |k: &str, v: &str| {
        let _ = writeln!(s, "  {k}: {v}");
    };
    match &r.parsed {
        Ok(p) => line("parse", &parse_line(p)),
        Err(e) => line("parse", &format!("failed: {}", e.name())),
    }
    if r.followed {
        line("traced", "a packet of a traced connection");
    }
    for h in r.hooks.iter().flatten() {
        let mut l = format!(
            "{} {} {}: {}",
            h.point.name(),
            h.priority,
            h.func.name(),
            verdict_name(h.verdict)
        );
        for v in r
            .rules
            .iter()
            .flatten()
            .filter(|v| v.point == h.point && v.priority == h.priority)
        {
            let _ = write!(l, "\n    {}", rule_text(v));
        }
        line("hook", &l);
    }
    if r.rules_lost > 0 {
        line("rules", &format!("{} more not recorded", r.rules_lost));
    }
    if let Some(v) = r.service {
        line(
            "service",
            &format!(
                "{} {} {}{}",
                proto_name(v.proto),
                SocketAddr::new(v.addr, v.port),
                v.sched,
                if v.persistent { " persistent" } else { "" }
            ),
        );
    }
    if let Some(l) = sched_line(r) {
        line("scheduler", &l);
    }
    match (r.conn_before, r.conn_after) {
        (None, None) => {}
        (b, a) => {
            let state = |c: Option<ConnView>| c.map_or("none", |c| c.state);
            let kind = if r.conn_new { "new" } else { "found" };
            let c = a.or(b).map(|c| conn_line(&c)).unwrap_or_default();
            let to = a.map_or(String::new(), |a| {
                format!(" (timeout {} s)", a.timeout_ms / 1000)
            });
            line(
                "connection",
                &format!("{kind}: {} -> {}{to} {c}", state(b), state(a)),
            );
        }
    }
    if let (Ok(p), Some(after)) = (&r.parsed, &r.rewritten) {
        let fwd = r.conn_after.or(r.conn_before).map(|c| c.fwd);
        line("forward", &rewrite_line(p, after, fwd));
    }
    let hop = match r.outcome {
        Outcome::Xmit { next_hop } | Outcome::Tunnel { next_hop } => Some(next_hop),
        _ => None,
    };
    if let (Some(e), Some(hop)) = (r.egress, hop) {
        let l = match e {
            EgressView::Sent {
                ifindex,
                src_mac,
                dst_mac,
                mtu,
            } => format!(
                "next hop {hop} via {}, MAC {} -> {}, mtu {mtu}",
                iface(ifaces, ifindex),
                mac(&src_mac),
                mac(&dst_mac)
            ),
            EgressView::Parked => format!("next hop {hop}: neighbour not resolved yet"),
            EgressView::Local => format!("next hop {hop} is an address of this host"),
            EgressView::Unreachable => format!("next hop {hop}: no route or no neighbour"),
        };
        line("egress", &l);
    }
    line("result", &result_line(r));
    s.push('\n');
    s
}

fn parsed_json(p: &Parsed) -> Value {
    json!({
        "family": if p.is_ipv4() { "ipv4" } else { "ipv6" },
        "proto": proto_name(p.proto),
        "src": p.src.to_string(),
        "sport": p.has_ports().then_some(p.sport),
        "dst": p.dst.to_string(),
        "dport": p.has_ports().then_some(p.dport),
        "tcp_flags": (p.proto == 6 && p.has_l4).then(|| tcp_flags(p.tcp_flags)),
        "ttl": p.ttl,
        "bytes": p.ip_len,
        "fragment": p.is_fragment,
    })
}

fn conn_json(c: &ConnView) -> Value {
    json!({
        "state": c.state,
        "reply": c.reply,
        "client": c.client.to_string(),
        "virtual": c.virt.to_string(),
        "server": c.server.to_string(),
        "fwd": fwd_name(c.fwd),
        "timeout_ms": c.timeout_ms,
    })
}

/// The record as one JSON object (one line).
pub fn json(r: &Record, ifaces: &Ifaces) -> Value {
    let hooks: Vec<Value> = r
        .hooks
        .iter()
        .flatten()
        .map(|h| {
            let rules: Vec<Value> = r
                .rules
                .iter()
                .flatten()
                .filter(|v| v.point == h.point && v.priority == h.priority)
                .map(|v| {
                    json!({"table": v.table, "chain": v.chain.as_str(), "rule": v.rule_no,
                           "text": v.text.as_str(), "verdict": v.verdict})
                })
                .collect();
            json!({"point": h.point.name(), "priority": h.priority, "function": h.func.name(),
                   "verdict": verdict_name(h.verdict), "rules": rules})
        })
        .collect();
    let (next_hop, kind) = match r.outcome {
        Outcome::Xmit { next_hop } => (Some(next_hop.to_string()), "xmit"),
        Outcome::Tunnel { next_hop } => (Some(next_hop.to_string()), "tunnel"),
        Outcome::Pass => (None, "pass"),
        Outcome::Drop(_) => (None, "drop"),
        Outcome::Reject(_) => (None, "reject"),
    };
    let drop = match (r.outcome, r.egress_drop) {
        (Outcome::Drop(d) | Outcome::Reject(d), _) | (_, Some(d)) => Some(d.name()),
        _ => None,
    };
    let egress = r.egress.map(|e| match e {
        EgressView::Sent {
            ifindex,
            src_mac,
            dst_mac,
            mtu,
        } => json!({"iface": iface(ifaces, ifindex), "src_mac": mac(&src_mac),
                    "dst_mac": mac(&dst_mac), "mtu": mtu}),
        EgressView::Parked => json!({"parked": true}),
        EgressView::Local => json!({"local": true}),
        EgressView::Unreachable => json!({"unreachable": true}),
    });
    let forward = match (&r.parsed, &r.rewritten) {
        (Ok(p), Some(a)) => Some(json!({
            "text": rewrite_line(p, a, r.conn_after.or(r.conn_before).map(|c| c.fwd)),
            "packet": parsed_json(a),
        })),
        _ => None,
    };
    json!({
        "seq": r.seq,
        "ring": r.ring,
        "iface": iface(ifaces, r.ifindex),
        "bytes": r.len,
        "followed": r.followed,
        "parse": match &r.parsed {
            Ok(p) => parsed_json(p),
            Err(e) => json!({"error": e.name()}),
        },
        "hooks": hooks,
        "rules_lost": r.rules_lost,
        "service": r.service.map(|v| json!({
            "proto": proto_name(v.proto),
            "address": SocketAddr::new(v.addr, v.port).to_string(),
            "scheduler": v.sched,
            "persistent": v.persistent,
        })),
        "scheduler": sched_line(r).map(|l| json!({
            "name": r.sched.map(|s| s.sched),
            "picked": r.sched.and_then(|s| s.picked).map(|a| a.to_string()),
            "reason": l,
        })),
        "connection": (r.conn_before.is_some() || r.conn_after.is_some()).then(|| json!({
            "new": r.conn_new,
            "before": r.conn_before.as_ref().map(conn_json),
            "after": r.conn_after.as_ref().map(conn_json),
        })),
        "forward": forward,
        "egress": egress,
        "result": {"kind": kind, "next_hop": next_hop, "drop": drop, "text": result_line(r)},
    })
}
