//! The `--ecmp` lab (`scripts/lab.sh up PREFIX --ecmp N`): a router that
//! spreads flows over N directors by ECMP, the VIPs learnt over BGP from
//! each director's BIRD. Helpers to read the router's routes.

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::Lab;

/// The router's address on the directors' segment (its BGP address).
pub const ROUTER: &str = "198.51.100.129";
/// The router's AS and the directors' (eBGP).
pub const ROUTER_AS: u32 = 65000;
/// See [`ROUTER_AS`].
pub const DIRECTOR_AS: u32 = 65010;

/// Director `k`'s (1-based) address on the router's segment: the next hop
/// the router learns for its VIPs.
pub fn director_addr(k: u32) -> IpAddr {
    IpAddr::from([198, 51, 100, 129 + k as u8])
}

/// Whether BIRD 2 can be run here (`bird` in PATH).
pub fn bird_available() -> bool {
    std::process::Command::new("bird")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The next hops of the router's kernel route to `vip` (host route),
/// sorted; empty when there is none.
pub fn next_hops(lab: &Lab, vip: IpAddr) -> io::Result<Vec<IpAddr>> {
    let out = std::process::Command::new("ip")
        .args(["-n", &lab.ns("r"), "-j", "route", "show", "exact"])
        .arg(vip.to_string())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip route show: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_next_hops(&String::from_utf8_lossy(&out.stdout))
}

/// The gateways in `ip -j route` output: `nexthops[].gateway` of a
/// multipath route, or `gateway` of a single-path one.
pub fn parse_next_hops(json: &str) -> io::Result<Vec<IpAddr>> {
    let v: serde_json::Value = if json.trim().is_empty() {
        serde_json::Value::Array(vec![])
    } else {
        serde_json::from_str(json).map_err(io::Error::other)?
    };
    let mut hops = Vec::new();
    for r in v.as_array().into_iter().flatten() {
        let paths = match r.get("nexthops").and_then(|n| n.as_array()) {
            Some(n) => n.iter().collect::<Vec<_>>(),
            None => vec![r],
        };
        hops.extend(
            paths
                .iter()
                .filter_map(|p| p.get("gateway")?.as_str()?.parse::<IpAddr>().ok()),
        );
    }
    hops.sort_unstable();
    Ok(hops)
}

/// Polls (every 10 ms, up to `timeout`) until the router's next hops to
/// `vip` are exactly `want` (sorted); returns how long it took, or the
/// last hops seen.
pub fn wait_next_hops(
    lab: &Lab,
    vip: IpAddr,
    want: &[IpAddr],
    timeout: Duration,
) -> Result<Duration, Vec<IpAddr>> {
    let mut want = want.to_vec();
    want.sort_unstable();
    let t0 = Instant::now();
    loop {
        let hops = next_hops(lab, vip).unwrap_or_default();
        if hops == want {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            return Err(hops);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_multipath_routes() {
        let multi = r#"[{"dst":"192.0.2.10","protocol":"bird","metric":32,"flags":[],"nexthops":[{"gateway":"198.51.100.131","dev":"f0","weight":1,"flags":[]},{"gateway":"198.51.100.130","dev":"f0","weight":1,"flags":[]}]}]"#;
        assert_eq!(
            parse_next_hops(multi).unwrap(),
            vec![director_addr(1), director_addr(2)]
        );
        let single = r#"[{"dst":"192.0.2.10","gateway":"198.51.100.131","dev":"f0","protocol":"bird","metric":32,"flags":[]}]"#;
        assert_eq!(parse_next_hops(single).unwrap(), vec![director_addr(2)]);
        assert!(parse_next_hops("[]").unwrap().is_empty());
        assert!(parse_next_hops("\n").unwrap().is_empty());
    }
}
