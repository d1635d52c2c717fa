//! uvs: the load balancer daemon (`uvs run`), the namespace demo
//! (`uvs demo`), the comparison with the kernel's DNAT (`uvs bench`), the real-server tunnel endpoint (`uvs tunnel-endpoint`) and
//! small control commands (`uvs stats`, `uvs filter`, `uvs trace`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use uvs::control::socket;
use uvs::engine::IoMode;

#[derive(Parser, Debug)]
#[command(
    name = "uvs",
    version,
    about = "Linux IPVS as a userspace L4 load balancer",
    after_long_help = "\
Environment:
  UVS_CONTROL  the control socket, for every subcommand that has --control
               (the option wins; default /run/uvs/uvs.sock). uvsadm reads it too.

Files:
  /run/uvs/uvs.sock    the control socket (mode 0600)
  /etc/default/uvs     UVS_ARGS and UVS_CONTROL for the systemd unit uvs.service

See also uvsadm(8), the ipvsadm-syntax front end, and uvs-run(8)."
)]
struct Cli {
    /// Log level on stderr: error, warn, info, debug, trace (or RUST_LOG
    /// syntax, e.g. `uvs=debug`). Default: $RUST_LOG, else info.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Logs to stderr as `uvs: LEVEL: message` (`info` without the level).
fn init_log(level: Option<&str>) {
    use std::io::Write as _;
    let mut b = env_logger::Builder::new();
    match (level, std::env::var("RUST_LOG")) {
        (Some(l), _) => b.parse_filters(l),
        (None, Ok(env)) => b.parse_filters(&env),
        (None, Err(_)) => b.filter_level(log::LevelFilter::Info),
    };
    b.format(|f, r| match r.level() {
        log::Level::Info => writeln!(f, "uvs: {}", r.args()),
        l => writeln!(f, "uvs: {}: {}", l.as_str().to_lowercase(), r.args()),
    });
    let _ = b.try_init();
}

/// `uvs run --io`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[value(rename_all = "snake_case")]
enum Io {
    Auto,
    AfXdp,
    AfXdpGeneric,
    AfPacket,
}

/// `uvs run --tx`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[value(rename_all = "snake_case")]
enum Tx {
    Ring,
    Sendmmsg,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the load balancer in this network namespace.
    ///
    /// What uvs installs on the host while it runs: with --io af_packet
    /// (the default), one nftables table `netdev uvs` whose ingress chains
    /// make the kernel ignore the traffic uvs owns (packets to a service,
    /// NAT replies from real servers), removed on exit and replaced if a
    /// stale one is found at start; with --io af_xdp, an XDP program on each
    /// interface (through a BPF link, detached when uvs exits however it
    /// exits) that steers what uvs owns into AF_XDP sockets, and no nftables
    /// table. Also the control socket (--control, mode 0600), and with
    /// --local-src the TUN device uvs-lo, a policy rule, its routes and
    /// the nftables table `netdev uvs_lo` (see --local-src).
    ///
    /// What it needs: root, or CAP_NET_ADMIN and CAP_NET_RAW (packet
    /// sockets, nf_tables netlink), plus CAP_BPF and CAP_SYS_ADMIN for
    /// af_xdp (XDP program, BPF maps; Linux 5.9 or later); the `nft` program
    /// (Debian package nftables) for the af_packet guard.
    ///
    /// SIGHUP or `uvs reload` re-reads --config, --filter, --tables and
    /// --keepalived and applies only the difference. SIGINT/SIGTERM stop it. Under systemd
    /// (Type=notify) it reports READY=1 once the workers run and the
    /// control socket listens, and STOPPING=1 on the way out.
    Run {
        /// Attach only to this interface (repeatable). Default: every
        /// interface that is up, except loopback.
        #[arg(short = 'i', long = "interface")]
        interfaces: Vec<String>,
        /// Worker threads (default: one per core; one on a machine of up to
        /// two cores, whose other core the kernel's side of forwarding
        /// needs). Under AF_XDP at most one per RX queue.
        #[arg(long)]
        workers: Option<usize>,
        /// Control socket to listen on [default: /run/uvs/uvs.sock].
        #[arg(long, env = socket::ENV, value_name = "PATH")]
        control: Option<PathBuf>,
        /// Load an ipvsadm-save format configuration at start; re-read on
        /// reload (the file is then the whole table: services and servers
        /// not in it are removed).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Load filter-table rules (iptables syntax, one a line) at start;
        /// re-read on reload.
        #[arg(long, value_name = "FILE")]
        filter: Option<PathBuf>,
        /// Load emulated iptables tables (iptables-save text: *mangle,
        /// *nat, *filter) at start; re-read on reload (see `uvs tables`).
        #[arg(long, value_name = "FILE")]
        tables: Option<PathBuf>,
        /// Load emulated ipsets (`ipset save` text) before --tables, for
        /// their `-m set` rules; re-read on reload (each set in the file
        /// then holds exactly the file's members; see `uvs ipset`).
        #[arg(long, value_name = "FILE")]
        ipsets: Option<PathBuf>,
        /// Load the virtual_server blocks of a keepalived.conf and check
        /// their real servers as keepalived does (TCP_CHECK, HTTP_GET,
        /// MISC_CHECK, UDP_CHECK): a failing server is removed, or set to
        /// weight 0 with inhibit_on_failure, and restored when it passes
        /// again. Sections uvs does not run are warned about. Re-read on
        /// reload (checkers whose configuration is unchanged keep their
        /// state). Its services may not also be in --config.
        #[arg(long, value_name = "FILE")]
        keepalived: Option<PathBuf>,
        /// Frames per RX ring, each sized to the interface's MTU (2 KiB at
        /// 1500); larger (GSO) packets are read whole from the socket.
        #[arg(long, default_value_t = 2048)]
        ring_frames: usize,
        /// Lookup table size of the mh (Maglev) scheduler, one of the
        /// kernel's primes (251 … 131071); like the kernel module parameter,
        /// it applies to every mh service.
        #[arg(long, default_value_t = 4093)]
        mh_table_size: u32,
        /// The kernel's IPVS sysctls that uvs implements, as NAME=VALUE
        /// (repeatable; `uvs knob` lists and changes them while running);
        /// each with its values and [default]:
        /// expire_nodest_conn=0|1 [0], expire_quiescent_template=0|1 [0],
        /// sloppy_tcp=0|1 [0], sloppy_sctp=0|1 [0], conn_reuse_mode=0..3 [1],
        /// schedule_icmp=0|1 [0], drop_entry=0..3 [1], drop_packet=0..3 [0],
        /// secure_tcp=0..3 [0], amemthresh=PAGES [1024], am_droprate=N [10].
        /// The defences drop_entry, drop_packet and secure_tcp take the
        /// kernel's modes: 0 never, 1 or 2 automatic (engaged while the
        /// connection table is over 75% full or the host has fewer than
        /// amemthresh pages available; listed as 2 while engaged), 3 always.
        #[arg(long = "set-knob", value_name = "NAME=VALUE")]
        knobs: Vec<String>,
        /// The connection table's cap (connections and templates). A full
        /// table evicts handshake and low-packet entries (drop_entry) or
        /// refuses new connections (drop_entry=0).
        #[arg(long = "conn-max", value_name = "N", default_value_t = 1 << 20)]
        conn_max: usize,
        /// Same as --set-knob amemthresh=PAGES.
        #[arg(long, value_name = "PAGES")]
        amemthresh: Option<u32>,
        /// Packet backend: af_packet (rings, nftables guard), af_xdp (an
        /// XDP program steers what uvs owns into AF_XDP sockets and is the
        /// guard; native attach only), af_xdp_generic (the same program in
        /// generic mode: on a veth the peer keeps GSO, so TCP super-packets
        /// cross uvs whole), auto (af_xdp where every interface
        /// takes the program natively and none is a veth, whose peer would
        /// lose GSO; else af_packet). The start-up line says which runs
        /// and why.
        #[arg(long, value_enum, default_value_t = Io::AfPacket)]
        io: Io,
        /// How AF_PACKET transmits: ring (a PACKET_TX_RING per interface,
        /// one send call per round; GSO packets and frames that find the
        /// ring full go by sendmmsg) or sendmmsg (every frame by sendmmsg).
        #[arg(long, value_enum, default_value_t = Tx::Ring)]
        tx: Tx,
        /// Busy polling, for dedicated cores: a worker whose sources ran
        /// dry keeps polling them for USECS microseconds before it sleeps
        /// (under AF_XDP the sockets also get SO_BUSY_POLL and
        /// SO_PREFER_BUSY_POLL, so the polling runs the device's receive
        /// processing). Costs a core per worker while traffic flows; 0 (the
        /// default) sleeps at once. Overrides --idle-spin.
        #[arg(long = "busy-poll", value_name = "USECS", default_value_t = 0)]
        busy_poll: u32,
        /// Adaptive spin: after a round that found packets, a worker polls
        /// its sources again for up to USECS microseconds before it
        /// sleeps, but only while recent gaps between packets were that
        /// short (a real server's answer to what it just forwarded); gaps
        /// longer than USECS, or being descheduled while spinning, shrink
        /// the spin to nothing. It saves a sleep and a wake-up per packet
        /// of request/answer traffic at the price of CPU while it spins. 0
        /// (the default) sleeps at once; --busy-poll overrides it.
        #[arg(long = "idle-spin", value_name = "USECS", default_value_t = 0)]
        idle_spin: u32,
        /// Nice value of the worker threads, -20 (first) to 19. The kernel
        /// runs its own forwarding in softirq context, ahead of every
        /// process; a negative value gives uvs's workers the CPU before
        /// other processes on shared cores (a load generator, a build), so
        /// their rings do not overflow while those run. 0 (the default)
        /// leaves them at the process's priority. Needs CAP_SYS_NICE for a
        /// negative value; where refused, a warning and the workers run
        /// unchanged.
        #[arg(long = "worker-nice", value_name = "N", default_value_t = 0,
              allow_negative_numbers = true,
              value_parser = clap::value_parser!(i32).range(-20..=19))]
        worker_nice: i32,
        #[command(flatten)]
        place: Box<uvs::io::place::PlaceArgs>,
        /// Serve Prometheus metrics at http://ADDR:PORT/metrics (off by
        /// default; a loopback address is suggested).
        #[arg(long, value_name = "ADDR:PORT")]
        metrics: Option<std::net::SocketAddr>,
        #[command(flatten)]
        bgp: Box<uvs::bgp::BgpArgs>,
        /// Local clients: processes on this host reach the VIPs through
        /// uvs, balanced like remote clients (NAT, direct-routing and
        /// tunnel services), as IPVS's LOCAL_OUT hooks do. ADDR (one IPv4,
        /// one IPv6; repeatable) is their source address: not yet an
        /// address of this host, routed back to it by the real servers.
        /// uvs creates the TUN device `uvs-lo` with ADDR, the policy rule
        /// `iif lo lookup 30070` (per family) with a route per VIP in table
        /// 30070, and (AF_PACKET) the nftables table `netdev uvs_lo`; all
        /// removed on exit. Under AF_XDP the XDP program claims the
        /// replies.
        #[arg(long = "local-src", value_name = "ADDR")]
        local_src: Vec<std::net::IpAddr>,
        /// LOG rules (`-j LOG` in --tables) write the kernel's log line of
        /// each packet they match to stderr, starting `<N>` (its
        /// --log-level), which systemd's journal takes as the priority.
        /// Each worker queues up to RECORDS lines; a thread writes them
        /// every 10 ms; a full queue drops the line, counted as
        /// log.dropped in `uvs stats` (written ones as log.lines).
        #[arg(long = "log-queue", value_name = "RECORDS", default_value_t = 1024)]
        log_queue: usize,
    },
    /// Build a namespace lab, balance real TCP and UDP traffic through uvs,
    /// print the result and remove the lab. Needs root.
    Demo {
        /// Short TCP requests to send.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
    },
    /// Compare uvs with the kernel's DNAT on this machine: for each N,
    /// build a fresh namespace lab per peer, load N services (the measured
    /// one last), measure from a client namespace, remove the lab. Peers:
    /// iptables and nftables DNAT in kube-proxy's shapes, plain routing (no
    /// load balancer, the ceiling) and uvs. Writes results.csv, report.md
    /// and PNG plots with --out. Needs root, and iptables / nftables for
    /// those peers.
    Bench {
        /// Peers to compare, comma-separated: iptables,nftables,routing,uvs.
        #[arg(long, default_value = "iptables,nftables,routing,uvs")]
        peers: String,
        /// Service counts N to sweep, comma-separated [default: 1,1000,10000;
        /// with --quick 1,100].
        #[arg(long)]
        services: Option<String>,
        /// Repetitions of every configuration (medians and spread)
        /// [default: 3; with --quick 1].
        #[arg(long)]
        reps: Option<usize>,
        /// Put the measured services first instead of last (the best case
        /// for rule lists walked in order).
        #[arg(long)]
        first: bool,
        /// Small N, short tests, one repetition: a first look, and CI.
        #[arg(long)]
        quick: bool,
        /// Seconds per traffic test [default: 3; with --quick 0.5].
        #[arg(long)]
        seconds: Option<f64>,
        /// Parallel connections of the request-rate tests.
        #[arg(long, default_value_t = 64)]
        conns: usize,
        /// Directory for results.csv, report.md and the plots.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Real-server tunnel endpoint (TUN mode, `-i`): receive the director's
    /// ipip/GUE/GRE packets addressed to this host, decapsulate them and
    /// hand the inner packet to the local stack through a TUN device. Needs
    /// root; no kernel tunnel module. Counters are printed on exit.
    TunnelEndpoint {
        /// Receive only on this interface (repeatable). Default: every
        /// interface that is up, except loopback.
        #[arg(short = 'i', long = "interface")]
        interfaces: Vec<String>,
        /// UDP port on which GUE packets arrive, the directors' --tun-port
        /// (repeatable). Without it, GUE is not decapsulated.
        #[arg(long = "gue-port")]
        gue_ports: Vec<u16>,
        /// Name of the TUN device to create (removed on exit).
        #[arg(long, default_value = "uvstun0")]
        tun_name: String,
        /// Frames per RX ring, each sized to the interface's MTU (2 KiB at
        /// 1500); larger (GSO) packets are read whole from the socket.
        #[arg(long, default_value_t = 512)]
        ring_frames: usize,
        /// Keep the counters in this file (`name value` lines, rewritten
        /// while running and at exit).
        #[arg(long)]
        stats_file: Option<PathBuf>,
        /// Decapsulate tunnel packets from this director address only
        /// (repeatable); others are dropped and counted as
        /// drop.not_director. One of --director and --any-director is
        /// required.
        #[arg(long = "director", value_name = "ADDR")]
        directors: Vec<std::net::IpAddr>,
        /// Decapsulate tunnel packets from every host (anyone who reaches
        /// this host can then inject packets; said loudly at start).
        #[arg(long)]
        any_director: bool,
    },
    /// Print the engine's counters (drops by reason, hook entries).
    Stats {
        /// Control socket of the running uvs [default: /run/uvs/uvs.sock].
        #[arg(long, env = socket::ENV, value_name = "PATH")]
        control: Option<PathBuf>,
        /// The same counters as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show what uvs does with each matching packet, as it happens: the
    /// interface it came in on, the parse, every hook entry it met (and
    /// the table rule that decided), the connection entry before and
    /// after, the service, the scheduler's pick and reason, the rewrite,
    /// next hop, MACs and outgoing interface, or the named drop reason.
    /// Replies of a traced NAT connection are shown too. Runs until
    /// --count packets were shown or --timeout passed (or Ctrl-C). Costs
    /// nothing while no trace runs; a reader too slow for the traffic
    /// loses records (counted at the end), never packets.
    Trace {
        /// Control socket of the running uvs [default: /run/uvs/uvs.sock].
        #[arg(long, env = socket::ENV, value_name = "PATH")]
        control: Option<PathBuf>,
        /// Protocol: tcp, udp, sctp or icmp (ICMPv6 too).
        #[arg(short = 'p', long = "protocol", value_name = "PROTO")]
        proto: Option<String>,
        /// Source address or prefix.
        #[arg(short = 's', long = "source", value_name = "ADDR[/LEN]")]
        src: Option<String>,
        /// Destination address or prefix.
        #[arg(short = 'd', long = "destination", value_name = "ADDR[/LEN]")]
        dst: Option<String>,
        /// Source port.
        #[arg(long, value_name = "P")]
        sport: Option<u16>,
        /// Destination port.
        #[arg(long, value_name = "P")]
        dport: Option<u16>,
        /// Stop after N packets.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Stop after S seconds.
        #[arg(long, value_name = "S")]
        timeout: Option<f64>,
        /// One JSON object per packet, one per line (and a last `end` object).
        #[arg(long)]
        json: bool,
    },
    /// List the kernel-sysctl knobs of the running uvs (`NAME VALUE`), or
    /// change them: `uvs knob secure_tcp=1 drop_packet=2` (all or none
    /// applied; the names and values are `uvs run --set-knob`'s).
    Knob {
        /// Control socket of the running uvs [default: /run/uvs/uvs.sock].
        #[arg(long, env = socket::ENV, value_name = "PATH")]
        control: Option<PathBuf>,
        /// NAME=VALUE settings; none lists every knob.
        settings: Vec<String>,
    },
    /// Re-read the files `uvs run` was started with (--config, --filter,
    /// --tables, --ipsets, --keepalived) and apply only the difference: services and real servers that stay
    /// keep their connections (a removed server's are dropped, as after
    /// `uvsadm -d`; weight 0 drains). A bad file changes nothing; the error names
    /// the file and line, and the exit status is non-zero. SIGHUP to
    /// `uvs run` does the same (the answer goes to its log).
    Reload {
        /// Control socket of the running uvs [default: /run/uvs/uvs.sock].
        #[arg(long, env = socket::ENV, value_name = "PATH")]
        control: Option<PathBuf>,
    },
    /// The emulated filter table: `add RULE`, `del RULE`, `list`, `flush`
    /// (RULE in iptables syntax, e.g. `-A INPUT -p tcp --dport 80 -j DROP`).
    Filter {
        /// Control socket of the running uvs [default: /run/uvs/uvs.sock].
        #[arg(long, env = socket::ENV, value_name = "PATH")]
        control: Option<PathBuf>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// The emulated iptables tables (mangle, nat, filter) in iptables'
    /// own language: `restore` reads iptables-save text from stdin and
    /// replaces the tables it names, all or nothing (an error names the
    /// line; the running tables stay); `save [-c]` writes them back (with
    /// `[packets:bytes]` counters); `list` shows every chain with exact
    /// counters, like `iptables -L -v -n -x`.
    Tables {
        /// Control socket of the running uvs [default: /run/uvs/uvs.sock].
        #[arg(long, env = socket::ENV, value_name = "PATH")]
        control: Option<PathBuf>,
        #[command(subcommand)]
        op: TablesOp,
    },
    /// Emulated ipsets for the tables' `-m set`, in ipset's own language:
    /// `restore [-exist]` reads `ipset save` text from stdin, all or
    /// nothing (an error names the line); `save [NAME]`, `list [NAME]
    /// [-n] [-t]` (ipset's -L layout, with each set's match counters),
    /// `create NAME TYPE [OPTIONS]`, `add|del NAME ENTRY [-exist]`, `test
    /// NAME ENTRY` (exit 1 if absent), `flush [NAME]`, `destroy [NAME]`
    /// (refused while a rule uses the set). Types: hash:ip, hash:net,
    /// hash:ip,port, hash:ip,port,ip, hash:ip,port,net, bitmap:port.
    Ipset {
        /// Control socket of the running uvs [default: /run/uvs/uvs.sock].
        #[arg(long, env = socket::ENV, value_name = "PATH")]
        control: Option<PathBuf>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Write the man pages (section 8: uvs and uvs-SUBCOMMAND) and the
    /// shell completions (bash, zsh, fish) into DIR, for packaging.
    #[command(hide = true)]
    GenDocs {
        /// Output directory: DIR/man/*.8, DIR/completions/{uvs.bash,_uvs,uvs.fish}.
        dir: PathBuf,
    },
}

/// `uvs gen-docs DIR`: man pages and completions from the clap definitions,
/// so they never disagree with `--help`.
fn gen_docs(dir: &std::path::Path) -> Result<ExitCode> {
    use clap::CommandFactory;
    let man = dir.join("man");
    let comp = dir.join("completions");
    for d in [&man, &comp] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut cmd = Cli::command();
    // Gives subcommands their display names (uvs-run) and bin names (uvs run).
    cmd.build();
    let page = |c: clap::Command| {
        clap_mangen::Man::new(c)
            .section("8")
            .manual("System Manager's Manual")
            .source(format!("uvs {}", env!("CARGO_PKG_VERSION")))
            .generate_to(&man)
            .with_context(|| format!("writing man pages into {}", man.display()))
    };
    page(cmd.clone())?;
    // Not clap's own `help` subcommand: `uvs help X` is `uvs X --help`.
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        page(sub.clone())?;
    }
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "uvs", &comp)
            .with_context(|| format!("writing {shell} completions"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `uvs tables` operations.
#[derive(Debug, Subcommand)]
enum TablesOp {
    /// Replace the tables named in the iptables-save text on stdin.
    Restore,
    /// Write the tables as iptables-save text.
    Save {
        /// With each chain's and rule's [packets:bytes].
        #[arg(short = 'c', long)]
        counters: bool,
    },
    /// Every chain with exact packet and byte counters.
    List,
}

fn remote(path: Option<PathBuf>, argv: Vec<String>) -> Result<ExitCode> {
    let r = socket::call(&socket::path(path.as_deref()), &argv)?;
    print!("{}", r.stdout);
    eprint!("{}", r.stderr);
    Ok(ExitCode::from(r.status))
}

/// `uvs trace`: the words checked here (the same parser as the daemon's),
/// then the daemon's stream printed as it comes.
fn trace(path: Option<PathBuf>, words: Vec<String>) -> Result<ExitCode> {
    use std::io::Write as _;
    if let Err(e) = uvs::control::trace::Request::parse(&words) {
        eprintln!("uvs trace: {e}");
        return Ok(ExitCode::from(2));
    }
    let mut argv = vec!["trace".to_string()];
    argv.extend(words);
    let mut out = std::io::stdout().lock();
    let r = socket::call_streamed(&socket::path(path.as_deref()), &argv, |b| {
        out.write_all(b.as_bytes())?;
        out.flush()
    })?;
    eprint!("{}", r.stderr);
    Ok(ExitCode::from(r.status))
}

struct BenchArgs {
    peers: String,
    services: Option<String>,
    reps: Option<usize>,
    first: bool,
    quick: bool,
    seconds: Option<f64>,
    conns: usize,
    out: Option<PathBuf>,
}

fn bench(a: BenchArgs) -> Result<ExitCode> {
    use uvs::lab::bench;
    let exe = std::env::current_exe().context("finding the uvs executable")?;
    let mut o = if a.quick {
        bench::Opts::quick(exe)
    } else {
        bench::Opts::full(exe)
    };
    o.peers = bench::parse_peers(&a.peers)?;
    if let Some(s) = &a.services {
        o.services = bench::parse_services(s)?;
    }
    if let Some(r) = a.reps {
        o.reps = r;
    }
    if let Some(s) = a.seconds {
        if !(s.is_finite() && (0.05..=600.0).contains(&s)) {
            bail!("--seconds must be between 0.05 and 600");
        }
        o.test_time = std::time::Duration::from_secs_f64(s);
    }
    o.first = a.first;
    o.conns = a.conns;
    o.out = a.out;
    // Everything missing at once: root, kernel features, the lab's and the
    // chosen peers' programs.
    let mut needs = uvs::sys::prereq::for_lab("uvs bench");
    for p in &o.peers {
        needs.programs.extend(p.tools().iter().copied());
    }
    uvs::sys::prereq::check(&needs)?;
    bench::check_tools(&o.peers)?;
    // SIGINT/SIGTERM raise the flag; the bench then removes what it made
    // and returns.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    match bench::run(&o, &stop) {
        Ok(r) if r.failures.is_empty() => Ok(ExitCode::SUCCESS),
        Ok(r) => {
            eprintln!(
                "uvs bench: {} configuration(s) failed (see above)",
                r.failures.len()
            );
            Ok(ExitCode::from(1))
        }
        Err(bench::BenchError::Interrupted) => {
            eprintln!("uvs bench: interrupted; the lab was removed");
            Ok(ExitCode::from(130))
        }
        Err(e) => Err(e.into()),
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(c) => c,
        Err(e) => {
            if let Some(m) = e.downcast_ref::<uvs::sys::prereq::Missing>() {
                eprintln!("{m}");
            } else {
                let e: &(dyn std::error::Error + 'static) = e.as_ref();
                eprintln!("uvs: {}", uvs::sys::prereq::describe(e));
            }
            ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let cli = Cli::parse();
    init_log(cli.log_level.as_deref());
    match cli.cmd {
        Cmd::Run {
            interfaces,
            workers,
            control,
            config,
            filter,
            tables,
            ipsets,
            keepalived,
            ring_frames,
            mh_table_size,
            mut knobs,
            conn_max,
            amemthresh,
            io,
            tx,
            busy_poll,
            idle_spin,
            worker_nice,
            place,
            metrics,
            bgp,
            local_src,
            log_queue,
        } => {
            knobs.extend(amemthresh.map(|p| format!("amemthresh={p}")));
            // What it needs, checked before anything is changed.
            let control = socket::path(control.as_deref());
            let bgp = bgp.config(&control)?;
            uvs::sys::prereq::check(&uvs::sys::prereq::for_run(
                &interfaces,
                &control,
                io == Io::AfXdp,
                io != Io::AfXdp,
            ))?;
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, stop.clone())
                    .context("installing signal handlers")?;
            }
            uvs::control::lifecycle::reload_on_sighup(&control)
                .context("installing the SIGHUP handler")?;
            let sources = uvs::control::lifecycle::Sources {
                config,
                filter,
                tables,
                keepalived,
                ipsets,
            };
            // Read as a reload reads them (same paths, same errors).
            let texts = sources.read()?;
            let tables = sources.read_tables()?;
            let ipsets = sources.read_ipsets()?;
            let opts = uvs::control::daemon::RunOpts {
                interfaces,
                workers: workers.unwrap_or_else(|| {
                    uvs::engine::default_workers(
                        std::thread::available_parallelism().map_or(1, |n| n.get()),
                    )
                }),
                control,
                config: texts.config.map(|t| t.text),
                filter: texts.filter.map(|t| t.text),
                tables,
                ipsets,
                keepalived: texts.keepalived,
                ring_frames,
                mh_table_size,
                knobs,
                conn_max,
                io: match io {
                    Io::Auto => IoMode::Auto,
                    Io::AfXdp => IoMode::AfXdp,
                    Io::AfXdpGeneric => IoMode::AfXdpGeneric,
                    Io::AfPacket => IoMode::AfPacket,
                },
                tx: match tx {
                    Tx::Ring => uvs::engine::TxMode::Ring,
                    Tx::Sendmmsg => uvs::engine::TxMode::Sendmmsg,
                },
                busy_poll_us: busy_poll,
                idle_spin_us: idle_spin,
                worker_nice,
                worker_cpus: place.worker_cpus.clone(),
                worker_policy: place.policy(),
                fanout: place.fanout.into(),
                sources,
                metrics,
                bgp,
                local_src,
                log_queue,
            };
            uvs::control::daemon::run(opts, &stop)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::TunnelEndpoint {
            interfaces,
            gue_ports,
            tun_name,
            ring_frames,
            stats_file,
            directors,
            any_director,
        } => {
            uvs::sys::prereq::check(&uvs::sys::prereq::for_tunnel_endpoint(&interfaces))?;
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, stop.clone())
                    .context("installing signal handlers")?;
            }
            let opts = uvs::tunnel::EndpointOpts {
                interfaces,
                gue_ports,
                tun_name,
                ring_frames,
                stats_file,
                directors,
                any_director,
            };
            let c = uvs::tunnel::run(&opts, &stop)?;
            print!("{}", c.render());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo { requests } => {
            uvs::sys::prereq::check(&uvs::sys::prereq::for_lab("uvs demo"))?;
            let ok = uvs::lab::demo::run(requests)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Bench {
            peers,
            services,
            reps,
            first,
            quick,
            seconds,
            conns,
            out,
        } => bench(BenchArgs {
            peers,
            services,
            reps,
            first,
            quick,
            seconds,
            conns,
            out,
        }),
        Cmd::Stats { control, json } => {
            let mut v = vec!["stats".to_string()];
            if json {
                v.push("--json".into());
            }
            remote(control, v)
        }
        Cmd::Reload { control } => remote(control, vec!["reload".into()]),
        Cmd::Trace {
            control,
            proto,
            src,
            dst,
            sport,
            dport,
            count,
            timeout,
            json,
        } => {
            let mut w = Vec::new();
            let opts = [
                ("-p", proto),
                ("-s", src),
                ("-d", dst),
                ("--sport", sport.map(|p| p.to_string())),
                ("--dport", dport.map(|p| p.to_string())),
                ("--count", count.map(|n| n.to_string())),
                ("--timeout", timeout.map(|t| t.to_string())),
            ];
            for (o, v) in opts {
                if let Some(v) = v {
                    w.push(o.to_string());
                    w.push(v);
                }
            }
            if json {
                w.push("--json".into());
            }
            trace(control, w)
        }
        Cmd::Knob { control, settings } => {
            let mut argv = vec!["knob".to_string()];
            argv.extend(settings);
            remote(control, argv)
        }
        Cmd::GenDocs { dir } => gen_docs(&dir),
        Cmd::Tables { control, op } => {
            let v = match op {
                TablesOp::Restore => {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                        .context("reading the tables from stdin")?;
                    vec!["tables".into(), "restore".into(), text]
                }
                TablesOp::Save { counters } => {
                    let mut v = vec!["tables".to_string(), "save".into()];
                    if counters {
                        v.push("-c".into());
                    }
                    v
                }
                TablesOp::List => vec!["tables".into(), "list".into()],
            };
            remote(control, v)
        }
        Cmd::Ipset { control, args } => {
            let mut v = vec!["ipset".to_string()];
            let restore = matches!(args.first().map(String::as_str), Some("restore" | "-R"));
            v.extend(args);
            if restore {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .context("reading the sets from stdin")?;
                v.push(text);
            }
            remote(control, v)
        }
        Cmd::Filter { control, args } => {
            let mut v = vec!["filter".to_string()];
            v.extend(args);
            remote(control, v)
        }
    }
}
