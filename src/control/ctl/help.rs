//! `uvsadm -h` and `uvsadm -v`: laid out as ipvsadm 1.31 lays out its own
//! (a version line; then "Usage:", "Commands:", "virtual-service:",
//! "Options:" and "Daemon Options:" blocks, long option, short option and
//! description in columns), with uvsadm's own version line and words.

use super::model::{DEFAULT_SCHED, KERNEL_SCHEDULERS};

/// The IPVS version uvs reports (the kernel's 1.2.1 formats).
pub const IPVS_VERSION: &str = "1.2.1";

/// `uvsadm -v`: one line, in ipvsadm's shape
/// (`NAME vVERSION (… IPVS vX.Y.Z)`).
pub fn version() -> String {
    format!(
        "uvsadm v{} (ipvsadm v1.31 command line, uvs engine, IPVS v{IPVS_VERSION})\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `uvsadm -h`.
pub fn usage() -> String {
    let p = "uvsadm";
    let mut s = version();
    s.push_str("Usage:\n");
    for line in [
        "-A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [--pe persistence_engine] [-b sched-flags]",
        "-D virtual-service",
        "-C",
        "-R",
        "-S [-n]",
        "-a|e virtual-service -r server-address [options]",
        "-d virtual-service -r server-address",
        "-L|l [virtual-service] [options]",
        "-Z [virtual-service]",
        "--set tcp tcpfin udp",
        "--start-daemon {master|backup} [daemon-options]",
        "--stop-daemon {master|backup}",
        "-h",
    ] {
        s.push_str(&format!("  {p} {line}\n"));
    }
    s.push('\n');
    s.push_str("Commands:\nEither long or short options are allowed.\n");
    // Commands in ipvsadm's narrower columns: text from column 30.
    commands(
        &mut s,
        &[
            ("--add-service", "-A", "add a virtual service"),
            ("--edit-service", "-E", "change a virtual service's options"),
            ("--delete-service", "-D", "delete a virtual service"),
            ("--clear", "-C", "delete every virtual service"),
            ("--restore", "-R", "read commands from standard input"),
            (
                "--save",
                "-S",
                "write the rules as commands to standard output",
            ),
            (
                "--add-server",
                "-a",
                "add a real server to a virtual service",
            ),
            ("--edit-server", "-e", "change a real server's options"),
            ("--delete-server", "-d", "delete a real server"),
            ("--list", "-L|-l", "list the table"),
            ("--zero", "-Z", "zero the counters of one or every service"),
            ("--set tcp tcpfin udp", "", "set the connection timeouts"),
            (
                "--start-daemon",
                "",
                "start the connection sync daemon (not built)",
            ),
            (
                "--stop-daemon",
                "",
                "stop the connection sync daemon (not built)",
            ),
            ("--help", "-h", "show this help"),
        ],
    );
    s.push('\n');
    s.push_str("virtual-service:\n");
    table(
        &mut s,
        &[
            (
                "--tcp-service|-t",
                "service-address",
                "host[:port], IPv6 as [addr]:port",
            ),
            (
                "--udp-service|-u",
                "service-address",
                "host[:port], IPv6 as [addr]:port",
            ),
            (
                "--sctp-service",
                "service-address",
                "host[:port], IPv6 as [addr]:port",
            ),
            (
                "--fwmark-service|-f",
                "fwmark",
                "an integer above zero (not built)",
            ),
        ],
    );
    s.push('\n');
    let schedulers = KERNEL_SCHEDULERS.join("|");
    let sched_line = format!("one of {schedulers},");
    let sched_default = format!("the default scheduler is {DEFAULT_SCHED}.");
    s.push_str("Options:\n");
    table(
        &mut s,
        &[
            ("--ipv6", "-6", "the fwmark service is IPv6"),
            ("--scheduler", "-s scheduler", &sched_line),
            ("", "", &sched_default),
            ("--pe", "engine", "persistence engine: sip (not built)"),
            (
                "--persistent",
                "-p [timeout]",
                "persistent service (360 s if no timeout)",
            ),
            ("--netmask", "-M netmask", "client mask of persistence"),
            (
                "--real-server",
                "-r server-address",
                "host[:port] of a real server",
            ),
            ("--gatewaying", "-g", "direct routing (the default)"),
            ("--ipip", "-i", "tunnelling"),
            ("--masquerading", "-m", "masquerading (NAT)"),
            ("--tun-type", "type", "ipip|gue|gre, ipip by default"),
            ("--tun-port", "port", "tunnel destination port (gue)"),
            ("--tun-nocsum", "", "tunnel without checksum"),
            ("--tun-csum", "", "tunnel with checksum"),
            ("--tun-remcsum", "", "tunnel with remote checksum offload"),
            (
                "--weight",
                "-w weight",
                "weight of the real server (0..65535)",
            ),
            (
                "--u-threshold",
                "-x uthreshold",
                "most connections a real server takes",
            ),
            (
                "--l-threshold",
                "-y lthreshold",
                "connections at which it takes new ones again",
            ),
            ("--connection", "-c", "list the connection entries"),
            ("--timeout", "", "list the timeouts (tcp tcpfin udp)"),
            ("--daemon", "", "list the sync daemon (none runs)"),
            ("--stats", "", "list counters"),
            ("--rate", "", "list rates"),
            ("--exact", "", "numbers in full"),
            ("--json", "", "the listing as JSON (uvs)"),
            ("--thresholds", "", "list thresholds"),
            ("--persistent-conn", "", "list persistent connections"),
            ("--tun-info", "", "list tunnel settings"),
            ("--nosort", "", "list in configuration order"),
            ("--sort", "", "no effect (kept for old scripts)"),
            ("--ops", "-o", "one-packet scheduling (not built)"),
            ("--numeric", "-n", "addresses and ports as numbers"),
            (
                "--sched-flags",
                "-b flags",
                "scheduler flags, comma separated",
            ),
        ],
    );
    s.push_str("Daemon Options:\n");
    table(
        &mut s,
        &[
            ("--syncid", "sid", "sync id (0..255)"),
            ("--sync-maxlen", "length", "longest sync message"),
            (
                "--mcast-interface",
                "interface",
                "interface of the sync traffic",
            ),
            ("--mcast-group", "address", "multicast group, IPv4 or IPv6"),
            ("--mcast-port", "port", "UDP port"),
            ("--mcast-ttl", "ttl", "multicast TTL"),
            (
                "--sync-peer",
                "address",
                "uvs: unicast sync with this director",
            ),
        ],
    );
    s.push('\n');
    s.push_str(
        "uvsadm's own option: --control PATH, the engine's control socket\n\
         (default: $UVS_CONTROL, else /run/uvs/uvs.sock).\n",
    );
    s
}

/// Rows of `  LONG  SHORT  TEXT` with the description from column 30.
fn commands(s: &mut String, rows: &[(&str, &str, &str)]) {
    for (long, short, text) in rows {
        let left = format!("{long:<17} {short}");
        let line = format!("  {left:<27} {text}");
        s.push_str(line.trim_end());
        s.push('\n');
    }
}

/// Rows of `  LONG  SHORT  TEXT`, the description starting at column 38
/// as in ipvsadm's help.
fn table(s: &mut String, rows: &[(&str, &str, &str)]) {
    for (long, short, text) in rows {
        let left = if short.is_empty() {
            long.to_string()
        } else if long.is_empty() {
            String::new()
        } else {
            format!("{long:<14} {short}")
        };
        let line = format!("  {left:<35} {text}");
        s.push_str(line.trim_end());
        s.push('\n');
    }
}
