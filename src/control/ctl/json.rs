//! `uvsadm -L … --json`: the listings of `format` as JSON, with the same
//! content: services in the same order with their servers (`-L`), their
//! traffic counters (`--stats`) and rates (`--rate`), the connection table
//! (`-c`) and the timeouts (`--timeout`). Numbers are exact (no K/M).

use serde_json::{json, Value};

use super::format::{sorted_dests, sorted_services, ConnRow, Counters, ListOpts, Stats};
use super::model::{Config, Family, ServiceConfig, SvcKey};
use super::CtlError;

fn stats(s: &Stats) -> Value {
    json!({
        "conns": s.conns,
        "inpkts": s.inpkts,
        "outpkts": s.outpkts,
        "inbytes": s.inbytes,
        "outbytes": s.outbytes,
    })
}

fn rate(s: &Stats) -> Value {
    json!({
        "cps": s.cps,
        "inpps": s.inpps,
        "outpps": s.outpps,
        "inbps": s.inbps,
        "outbps": s.outbps,
    })
}

fn service(svc: &ServiceConfig, o: &ListOpts, c: &dyn Counters) -> Value {
    let mut v = match svc.key {
        SvcKey::Addr { proto, addr, port } => json!({
            "proto": proto.list_name(),
            "address": addr.to_string(),
            "port": port,
        }),
        SvcKey::Fwmark { mark, family } => json!({
            "fwmark": mark,
            "family": match family { Family::V4 => "IPv4", Family::V6 => "IPv6" },
        }),
    };
    v["scheduler"] = json!(svc.sched);
    v["flags"] = json!(svc.sched_flags);
    v["persistent"] = json!(svc.persistent);
    v["pe"] = json!(svc.pe);
    v["ops"] = json!(svc.ops);
    let mut sum = Stats::default();
    let mut servers = Vec::new();
    for d in sorted_dests(svc, o.nosort) {
        let dc = c.dest(&svc.key, d);
        sum = add(sum, &dc.stats);
        let mut s = json!({
            "address": d.addr.to_string(),
            "port": d.port,
            "forward": d.fwd.list_name(),
            "weight": d.weight,
            "active_conns": dc.active_conns,
            "inactive_conns": dc.inactive_conns,
            "persistent_conns": dc.persistent_conns,
            "u_threshold": d.u_threshold,
            "l_threshold": d.l_threshold,
        });
        if o.stats {
            s["stats"] = stats(&dc.stats);
        }
        if o.rate {
            s["rate"] = rate(&dc.stats);
        }
        servers.push(s);
    }
    let own = c.service(svc, &sum);
    if o.stats {
        v["stats"] = stats(&own);
    }
    if o.rate {
        v["rate"] = rate(&own);
    }
    v["servers"] = Value::Array(servers);
    v
}

fn add(mut a: Stats, b: &Stats) -> Stats {
    a.conns += b.conns;
    a.inpkts += b.inpkts;
    a.outpkts += b.outpkts;
    a.inbytes += b.inbytes;
    a.outbytes += b.outbytes;
    a.cps += b.cps;
    a.inpps += b.inpps;
    a.outpps += b.outpps;
    a.inbps += b.inbps;
    a.outbps += b.outbps;
    a
}

fn conn(r: &ConnRow) -> Value {
    json!({
        "proto": r.proto.list_name(),
        "expire_s": r.expire_ms / 1000,
        "state": r.state,
        "source": r.client.to_string(),
        "virtual": r.virt.to_string(),
        "destination": r.dest.to_string(),
    })
}

/// The JSON form of `format::list`'s output for the same options.
pub fn list(cfg: &Config, o: &ListOpts, c: &dyn Counters) -> Result<String, CtlError> {
    let v = if o.connection {
        json!({ "connections": c.connections().iter().map(conn).collect::<Vec<_>>() })
    } else if o.timeout {
        let t = &cfg.timeouts;
        json!({ "timeout": { "tcp": t.tcp, "tcpfin": t.tcp_fin, "udp": t.udp } })
    } else if o.daemon {
        json!({ "daemons": [] })
    } else if let Some(key) = &o.service {
        let svc = cfg.service(key).ok_or(CtlError::NoSuchService)?;
        json!({ "services": [service(svc, o, c)] })
    } else {
        let svcs: Vec<Value> = sorted_services(cfg, o.nosort)
            .into_iter()
            .map(|s| service(s, o, c))
            .collect();
        json!({ "version": "1.2.1", "size": 4096, "services": svcs })
    };
    Ok(format!("{v}\n"))
}

#[cfg(test)]
mod tests {
    use super::super::format::DestCounters;
    use super::super::model::DestConfig;
    use super::*;

    fn cfg() -> Config {
        let mut c = Config::default();
        c.restore(
            "-A -t 192.0.2.10:80 -s rr\n\
             -a -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 2\n\
             -a -t 192.0.2.10:80 -r 203.0.113.11:80 -m\n\
             -A -u 192.0.2.10:53 -s wlc\n",
        )
        .unwrap();
        c
    }

    fn counters(_: &SvcKey, d: &DestConfig) -> DestCounters {
        let n = u64::from(d.port) + d.weight as u64 * 1_000_000_000;
        DestCounters {
            active_conns: d.weight,
            inactive_conns: 1,
            persistent_conns: 0,
            stats: Stats {
                conns: n,
                inpkts: n + 1,
                outpkts: n + 2,
                inbytes: n + 3,
                outbytes: n + 4,
                cps: 5,
                inpps: 6,
                outpps: 7,
                inbps: 8,
                outbps: 9,
            },
        }
    }

    fn opts(stats: bool, rate: bool) -> ListOpts {
        ListOpts {
            stats,
            rate,
            exact: true,
            json: true,
            ..ListOpts::default()
        }
    }

    #[test]
    fn json_listing_has_the_text_listings_rows_in_order() {
        let c = cfg();
        for (st, rt) in [(false, false), (true, false), (false, true)] {
            let o = opts(st, rt);
            let j: Value = serde_json::from_str(&list(&c, &o, &counters).unwrap()).unwrap();
            let text = super::super::format::list(
                &c,
                &ListOpts {
                    json: false,
                    ..o.clone()
                },
                &counters,
            )
            .unwrap();
            let svcs = j["services"].as_array().unwrap();
            assert_eq!(svcs.len(), 2);
            // Server lines of the text, in order, against the JSON servers.
            let rows: Vec<Vec<u64>> = text
                .lines()
                .filter(|l| l.starts_with("  -> ") && !l.contains("RemoteAddress"))
                .map(|l| {
                    l.split_whitespace()
                        .filter_map(|w| w.parse().ok())
                        .collect()
                })
                .collect();
            let servers: Vec<&Value> = svcs
                .iter()
                .flat_map(|s| s["servers"].as_array().unwrap())
                .collect();
            assert_eq!(rows.len(), servers.len(), "{text}");
            for (r, s) in rows.iter().zip(&servers) {
                let want: Vec<u64> = if st {
                    ["conns", "inpkts", "outpkts", "inbytes", "outbytes"]
                        .iter()
                        .map(|k| s["stats"][k].as_u64().unwrap())
                        .collect()
                } else if rt {
                    ["cps", "inpps", "outpps", "inbps", "outbps"]
                        .iter()
                        .map(|k| s["rate"][k].as_u64().unwrap())
                        .collect()
                } else {
                    ["weight", "active_conns", "inactive_conns"]
                        .iter()
                        .map(|k| s[k].as_u64().unwrap())
                        .collect()
                };
                assert_eq!(r, &want, "{text}\n{j}");
            }
            assert_eq!(svcs[0]["proto"], "TCP");
            assert_eq!(svcs[0]["servers"][0]["address"], "203.0.113.11");
        }
    }
}
