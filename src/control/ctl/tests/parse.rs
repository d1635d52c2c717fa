//! Tests of the parser: every option and error of ipvsadm's command line.

use super::*;

// ------------------------------------------------------- parsing commands

#[test]
fn parse_add_service_defaults() {
    let Command::AddService(o) = ok("-A -t 192.0.2.10:80") else {
        panic!("not -A")
    };
    assert_eq!(o.key, tcp("192.0.2.10", 80));
    assert_eq!(o.sched, "wlc");
    assert_eq!(o.persistent, None);
    assert_eq!(o.netmask, None);
    assert!(!o.ops && o.pe.is_none() && o.sched_flags.is_empty());
}

#[test]
fn parse_long_and_equals_forms_agree() {
    let a = ok("-A -t 192.0.2.10:80 -s rr -p 60");
    let b = ok("--add-service --tcp-service=192.0.2.10:80 --scheduler rr --persistent=60");
    let c = ok("--add-service --tcp-service 192.0.2.10:80 --scheduler=rr --persistent 60");
    assert_eq!(a, b);
    assert_eq!(a, c);
}

#[test]
fn parse_attached_and_clustered_short_options() {
    assert_eq!(
        ok("-At 192.0.2.10:80 -srr"),
        ok("-A -t 192.0.2.10:80 -s rr")
    );
    assert_eq!(ok("-Ln"), ok("-L -n"));
    assert_eq!(ok("-A -t192.0.2.1:80 -p60"), ok("-A -t 192.0.2.1:80 -p 60"));
}

#[test]
fn parse_leading_program_word() {
    assert_eq!(ok("ipvsadm -A -t 192.0.2.10:80"), ok("-A -t 192.0.2.10:80"));
    assert_eq!(ok("uvsadm -C"), Command::Clear);
    assert_eq!(ok("/sbin/ipvsadm -C"), Command::Clear);
}

#[test]
fn parse_empty_means_list() {
    assert_eq!(parse(&[]), Ok(Command::List(ListOpts::default())));
    assert_eq!(ok("ipvsadm"), Command::List(ListOpts::default()));
}

#[test]
fn parse_every_command() {
    assert!(matches!(
        ok("-E -u 192.0.2.10:53 -s rr"),
        Command::EditService(_)
    ));
    assert_eq!(
        ok("-D -t 192.0.2.10:80"),
        Command::DeleteService(tcp("192.0.2.10", 80))
    );
    assert_eq!(ok("--clear"), Command::Clear);
    assert!(matches!(
        ok("-a -t 192.0.2.10:80 -r 203.0.113.11"),
        Command::AddServer { .. }
    ));
    assert!(matches!(
        ok("-e -t 192.0.2.10:80 -r 203.0.113.11 -m"),
        Command::EditServer { .. }
    ));
    assert_eq!(
        ok("-d -t 192.0.2.10:80 -r 203.0.113.11:8080"),
        Command::DeleteServer {
            svc: tcp("192.0.2.10", 80),
            addr: v4("203.0.113.11"),
            port: 8080
        }
    );
    assert!(matches!(ok("-l"), Command::List(_)));
    assert_eq!(ok("-S -n"), Command::Save { numeric: true });
    assert_eq!(ok("--save"), Command::Save { numeric: false });
    assert_eq!(ok("-R"), Command::Restore);
    assert_eq!(ok("-Z"), Command::Zero(None));
    assert_eq!(
        ok("--zero -t 192.0.2.10:80"),
        Command::Zero(Some(tcp("192.0.2.10", 80)))
    );
    assert_eq!(
        ok("--set 100 20 30"),
        Command::SetTimeouts {
            tcp: 100,
            tcp_fin: 20,
            udp: 30
        }
    );
    assert_eq!(ok("-h"), Command::Help);
    assert_eq!(ok("--help"), Command::Help);
    assert_eq!(ok("-v"), Command::Version);
    assert_eq!(ok("--version"), Command::Version);
}

#[test]
fn parse_service_kinds() {
    let key = |s: &str| match ok(s) {
        Command::DeleteService(k) => k,
        c => panic!("{c:?}"),
    };
    assert_eq!(
        key("-D -u 192.0.2.1:53"),
        SvcKey::Addr {
            proto: Proto::Udp,
            addr: v4("192.0.2.1"),
            port: 53
        }
    );
    assert_eq!(
        key("-D --udp-service 192.0.2.1:53"),
        key("-D -u 192.0.2.1:53")
    );
    assert_eq!(
        key("-D --sctp-service 192.0.2.1:9"),
        SvcKey::Addr {
            proto: Proto::Sctp,
            addr: v4("192.0.2.1"),
            port: 9
        }
    );
    assert_eq!(
        key("-D -f 259"),
        SvcKey::Fwmark {
            mark: 259,
            family: Family::V4
        }
    );
    // -6 comes after -f, as ipvsadm wants it.
    let v6mark = SvcKey::Fwmark {
        mark: 7,
        family: Family::V6,
    };
    assert_eq!(key("-D -f 7 -6"), v6mark);
    assert_eq!(key("-D --fwmark-service 7 --ipv6"), v6mark);
    assert_eq!(err("-D -6 --fwmark-service 7"), "-6 used before -f\n");
    assert_eq!(
        key("-D -t [2001:db8::1]:443"),
        SvcKey::Addr {
            proto: Proto::Tcp,
            addr: v6("2001:db8::1"),
            port: 443
        }
    );
    // Without a port: port 0 (valid only with -p, checked by the model).
    assert_eq!(key("-D -t 192.0.2.1"), tcp("192.0.2.1", 0));
    assert_eq!(key("-D -t 2001:db8::5").port(), 0);
}

#[test]
fn parse_service_options() {
    let Command::AddService(o) =
        ok("-A -u 192.0.2.1:53 -s sh -p -M 255.255.255.0 -b sh-port,sh-fallback -o --pe sip")
    else {
        panic!()
    };
    assert_eq!(o.sched, "sh");
    assert_eq!(o.persistent, Some(360));
    assert_eq!(
        o.netmask,
        Some(Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(o.sched_flags, vec!["sh-port", "sh-fallback"]);
    assert!(o.ops);
    assert_eq!(o.pe.as_deref(), Some("sip"));
}

#[test]
fn parse_persistent_takes_only_a_number() {
    let pers = |s: &str| match ok(s) {
        Command::AddService(o) => o.persistent,
        c => panic!("{c:?}"),
    };
    assert_eq!(pers("-A -t 192.0.2.1:80 -p"), Some(360));
    assert_eq!(pers("-A -t 192.0.2.1:80 -p 120"), Some(120));
    assert_eq!(pers("-A -t 192.0.2.1:80 -p -s rr"), Some(360));
    assert_eq!(pers("-A -p -t 192.0.2.1:80"), Some(360));
    assert_eq!(pers("-A -t 192.0.2.1:80 --persistent"), Some(360));
    assert_eq!(pers("-A -t 192.0.2.1:80 --persistent 9"), Some(9));
    assert_eq!(pers("-A -t 192.0.2.1:80"), None);
    assert_eq!(pers("-A -t 192.0.2.1:80 -p600"), Some(600));
    assert_eq!(
        pers("-A -t 192.0.2.1:80 --persistent=2678400"),
        Some(2678400)
    );
    assert_eq!(
        err("-A -t 192.0.2.1:80 -p 0"),
        "invalid timeout value `0' specified"
    );
    assert_eq!(
        err("-A -t 192.0.2.1:80 -p 2678401"),
        "invalid timeout value `2678401' specified"
    );
    // popt gives -p the next word unless it starts with '-'.
    assert_eq!(
        err("-A -t 192.0.2.1:80 -p abc"),
        "invalid timeout value `abc' specified"
    );
}

#[test]
fn parse_netmask_as_ipvsadm_reads_it() {
    let mask = |s: &str| match ok(s) {
        Command::AddService(o) => o.netmask,
        c => panic!("{c:?}"),
    };
    assert_eq!(
        mask("-A -t [2001:db8::1]:80 -p -M 64"),
        Some(Netmask::V6(64))
    );
    // ipvsadm reads -M by the family known so far; a later IPv6 service
    // resets the mask to /128.
    assert_eq!(mask("-A -M 64 -t [2001:db8::1]:80 -p"), None);
    assert_eq!(mask("-A -f 3 -6 -p -M 48"), Some(Netmask::V6(48)));
    assert_eq!(mask("-A -f 3 -6 -p -M 48abc"), Some(Netmask::V6(48)));
    // inet_aton: 24 is the mask 0.0.0.24, 255.0.0 is 255.0.0.0.
    assert_eq!(
        mask("-A -t 192.0.2.1:80 -p -M 24"),
        Some(Netmask::V4(Ipv4Addr::new(0, 0, 0, 24)))
    );
    assert_eq!(
        mask("-A -t 192.0.2.1:80 -p -M 255.0.0"),
        Some(Netmask::V4(Ipv4Addr::new(255, 0, 0, 0)))
    );
    assert_eq!(
        err("-A -t [2001:db8::1]:80 -p -M 129"),
        "illegal ipv6 netmask specified"
    );
    assert_eq!(
        err("-A -t 192.0.2.1:80 -p -M 255.0.0.0.0"),
        "illegal virtual server persistent mask specified"
    );
}

#[test]
fn parse_server_defaults_to_route_weight_1_and_service_port() {
    let Command::AddServer { svc, dest } = ok("-a -t 192.0.2.10:80 -r 203.0.113.11") else {
        panic!()
    };
    assert_eq!(svc, tcp("192.0.2.10", 80));
    assert_eq!(
        dest,
        DestConfig {
            addr: v4("203.0.113.11"),
            port: 80,
            fwd: FwdMethod::Route,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            tun: None
        }
    );
}

#[test]
fn parse_server_options() {
    let Command::EditServer { dest, .. } = ok(
        "-e -t 192.0.2.10:80 --real-server 203.0.113.11:8080 --masquerading --weight 0 -x 100 -y 50",
    ) else {
        panic!()
    };
    assert_eq!(dest.port, 8080);
    assert_eq!(dest.fwd, FwdMethod::Masq);
    assert_eq!(dest.weight, 0);
    assert_eq!((dest.u_threshold, dest.l_threshold), (100, 50));
    let fwd = |s: &str| match ok(s) {
        Command::AddServer { dest, .. } => (dest.fwd, dest.port),
        c => panic!("{c:?}"),
    };
    assert_eq!(
        fwd("-a -t 192.0.2.1:80 -r 203.0.113.1:81 -m"),
        (FwdMethod::Masq, 81)
    );
    assert_eq!(
        fwd("-a -t 192.0.2.1:80 -r 203.0.113.1:81 --gatewaying"),
        (FwdMethod::Route, 80)
    );
    // ipvsadm: DR and TUN servers take the service port, whatever -r said.
    assert_eq!(
        fwd("-a -t 192.0.2.1:80 -r 203.0.113.1:81 -g"),
        (FwdMethod::Route, 80)
    );
    assert_eq!(
        fwd("-a -t 192.0.2.1:80 -r 203.0.113.1:81 -i"),
        (FwdMethod::Tunnel, 80)
    );
    assert_eq!(
        fwd("-a -t 192.0.2.1:80 -r 203.0.113.1:81 --ipip"),
        (FwdMethod::Tunnel, 80)
    );
    // A fwmark service has no port to impose.
    assert_eq!(fwd("-a -f 5 -r 203.0.113.1:81 -g"), (FwdMethod::Route, 81));
    assert_eq!(fwd("-a -f 5 -r 203.0.113.1 -m"), (FwdMethod::Masq, 0));
    assert_eq!(
        fwd("-a -t 192.0.2.1:80 -r [2001:db8::9]:81 -i"),
        (FwdMethod::Tunnel, 80)
    );
    assert_eq!(
        err("-a -t 192.0.2.1:80 -r [2001:db8::9]:81 -m"),
        "Different address family is allowed only for tunneling servers"
    );
}

#[test]
fn parse_weight_and_threshold_ranges() {
    let w = |s: &str| match ok(s) {
        Command::AddServer { dest, .. } => dest.weight,
        c => panic!("{c:?}"),
    };
    assert_eq!(w("-a -t 192.0.2.1:80 -r 203.0.113.1 -w 65535"), 65535);
    assert_eq!(w("-a -t 192.0.2.1:80 -r 203.0.113.1 -w0"), 0);
    assert_eq!(w("-a -t 192.0.2.1:80 -r 203.0.113.1 -w +7"), 7);
    let r = "-a -t 192.0.2.1:80 -r 203.0.113.1";
    assert_eq!(err(&format!("{r} -w 65536")), "illegal weight specified");
    assert_eq!(err(&format!("{r} -w -1")), "illegal weight specified");
    assert_eq!(err(&format!("{r} --weight=x")), "illegal weight specified");
    assert_eq!(
        err(&format!("{r} -x 2147483648")),
        "illegal u_threshold specified"
    );
    assert_eq!(err(&format!("{r} -y 1.5")), "illegal l_threshold specified");
}

#[test]
fn parse_tunnel_options() {
    let tun = |s: &str| match ok(s) {
        Command::AddServer { dest, .. } => dest.tun,
        c => panic!("{c:?}"),
    };
    let base = "-a -t 192.0.2.1:80 -r 203.0.113.1 -i";
    assert_eq!(tun(base), Some(TunOpts::default()));
    assert_eq!(
        tun(&format!("{base} --tun-type ipip")),
        Some(TunOpts::default())
    );
    assert_eq!(
        tun(&format!("{base} --tun-type gue --tun-port 6080 --tun-csum")),
        Some(TunOpts {
            kind: TunType::Gue,
            port: Some(6080),
            csum: TunCsum::Csum
        })
    );
    assert_eq!(
        tun(&format!(
            "{base} --tun-type gue --tun-port=6080 --tun-remcsum"
        )),
        Some(TunOpts {
            kind: TunType::Gue,
            port: Some(6080),
            csum: TunCsum::RemCsum
        })
    );
    assert_eq!(
        tun(&format!("{base} --tun-type gre --tun-csum")),
        Some(TunOpts {
            kind: TunType::Gre,
            port: None,
            csum: TunCsum::Csum
        })
    );
    assert_eq!(tun("-a -t 192.0.2.1:80 -r 203.0.113.1 -m"), None);
}

#[test]
fn parse_tunnel_option_errors() {
    let base = "-a -t 192.0.2.1:80 -r 203.0.113.1";
    let e = |tail: &str| err(&format!("{base} {tail}"));
    assert_eq!(
        e("-m --tun-type gue"),
        "Tunnel options conflict with forward method"
    );
    assert_eq!(
        e("--tun-csum"),
        "Tunnel options conflict with forward method"
    );
    assert_eq!(
        e("-i --tun-type gue"),
        "You need to supply the 'tun-port' option for the 'gue' tunnel type"
    );
    assert_eq!(
        e("-i --tun-type gre --tun-remcsum"),
        "Illegal 'tun-remcsum' option with the 'gre' tunnel type"
    );
    assert_eq!(
        e("-i --tun-type gre --tun-port 5"),
        "Illegal 'tun-port' option with the 'gre' tunnel type"
    );
    assert_eq!(
        e("-i --tun-nocsum"),
        "Illegal 'tun-nocsum' option with the 'ipip' tunnel type"
    );
    assert_eq!(
        e("-i --tun-port 5"),
        "Illegal 'tun-port' option with the 'ipip' tunnel type"
    );
    assert_eq!(e("-i --tun-type vxlan"), "illegal tunnel type specified");
    assert_eq!(
        e("-i --tun-type gue --tun-port 5 --tun-csum --tun-nocsum"),
        "The option 'tun-csum' conflicts with the 'tun-nocsum' option in the 'gue' tunnel type"
    );
    assert_eq!(
        e("-i --tun-type gue --tun-port 0"),
        "illegal tunnel port specified"
    );
}

#[test]
fn parse_list_options() {
    let o = list_opts(
        "-L -n --stats --rate --thresholds --persistent-conn --tun-info --exact --sort --nosort",
    );
    assert!(o.numeric && o.stats && o.rate && o.thresholds && o.persistent_conn);
    assert!(o.tun_info && o.exact && o.nosort);
    assert!(list_opts("-L -c").connection);
    assert!(list_opts("-L --connection").connection);
    assert!(list_opts("-L --timeout").timeout);
    assert!(list_opts("-L --daemon").daemon);
    assert!(list_opts("-L -X").exact);
    assert_eq!(
        list_opts("-L -t 192.0.2.1:80 -n").service,
        Some(tcp("192.0.2.1", 80))
    );
    assert!(list_opts("--list --numeric").numeric);
}

#[test]
fn parse_list_conflicts() {
    for bad in [
        "-L -c --stats",
        "-L --timeout --rate",
        "-L --daemon --persistent-conn",
    ] {
        assert_eq!(err(bad), "options conflicts in the list command", "{bad}");
    }
    assert_eq!(
        err("-L -c --timeout"),
        "The option 'timeout' conflicts with the 'connection' option in the 'list' command"
    );
    assert_eq!(
        err("-L -t 192.0.2.1:80 --daemon"),
        "The option 'daemon' conflicts with the 'service-address' option in the 'list' command"
    );
    // ipvsadm lists connections with the persistence engine columns.
    assert!(list_opts("-L -c --persistent-conn").persistent_conn);
}

#[test]
fn parse_addresses_and_ports_as_ipvsadm() {
    let svc = |s: &str| match p(&format!("-D -t {s}")) {
        Ok(Command::DeleteService(k)) => Ok(k),
        Ok(c) => panic!("{c:?}"),
        Err(e) => Err(e),
    };
    assert_eq!(svc("192.0.2.1:80"), Ok(tcp("192.0.2.1", 80)));
    assert_eq!(svc("192.0.2.1"), Ok(tcp("192.0.2.1", 0)));
    // inet_aton's short forms, as ipvsadm reads them.
    assert_eq!(svc("192.0.513:80"), Ok(tcp("192.0.2.1", 80)));
    assert_eq!(
        svc("[2001:db8::1]:80"),
        Ok(SvcKey::Addr {
            proto: Proto::Tcp,
            addr: v6("2001:db8::1"),
            port: 80
        })
    );
    for bad in [
        "80",
        "300.1.1.1:80",
        "[2001:db8::1]",
        "[2001:db8::1",
        "[::1]x80",
        "192.0.2.1:x",
        "192.0.2.1:65536",
        "192.0.2.1:",
        "www.example.com:80",
    ] {
        assert_eq!(svc(bad), Err(CtlError::IllegalVirtualAddr), "{bad:?}");
    }
    assert_eq!(
        err("-a -t 192.0.2.1:80 -r [2001:db8::1]"),
        "illegal real server address[:port] specified"
    );
}

#[test]
fn parse_fwmark_and_set_ranges() {
    assert_eq!(err("-A -f 0"), "invalid fwmark value `0' specified");
    assert_eq!(
        err("-A -f 4294967296"),
        "invalid fwmark value `4294967296' specified"
    );
    assert_eq!(
        err("-A --fwmark-service x"),
        "invalid fwmark value `x' specified"
    );
    assert_eq!(err("--set 1 2"), "--set option requires 3 timeout values");
    assert_eq!(err("--set 1 2 3 4"), "unexpected argument 4");
    assert_eq!(err("--set 1 2 x"), "invalid timeout value `x' specified");
    assert_eq!(
        err("--set 2678401 2 3"),
        "invalid timeout value `2678401' specified"
    );
}

#[test]
fn parse_command_errors() {
    let try_help = "Try `uvsadm -h' or 'uvsadm --help' for more information.";
    assert_eq!(err("-t 192.0.2.1:80"), try_help);
    assert_eq!(err("-t 192.0.2.1:80 -A"), try_help);
    assert_eq!(err("--foo -A"), try_help);
    assert_eq!(err("-A -L"), "invalid option `-L'");
    assert_eq!(err("-A -t 192.0.2.1:80 -R"), "invalid option `-R'");
    assert_eq!(err("-L -h"), "invalid option `-h'");
    assert_eq!(err("-A -t 192.0.2.1:80 --foo"), "--foo: unknown option");
    assert_eq!(err("-A -t 192.0.2.1:80 -q"), "-q: unknown option");
    assert_eq!(err("-A -t 192.0.2.1:80 -s"), "-s: missing argument");
    assert_eq!(err("-A --tcp-service"), "--tcp-service: missing argument");
    assert_eq!(
        err("-L --numeric=yes"),
        "--numeric=yes: option does not take an argument"
    );
    assert_eq!(err("-A -t 192.0.2.1:80 extra"), "unexpected argument extra");
    assert_eq!(
        err("-A -t 192.0.2.1:80 -s rr -s wrr"),
        "multiple 'scheduler' options specified"
    );
    assert_eq!(
        err("-A -t 192.0.2.1:80 -u 192.0.2.1:53"),
        "multiple 'service-address' options specified"
    );
    assert_eq!(
        err("-a -t 192.0.2.1:80 -r 203.0.113.1 -g -m"),
        "multiple 'forwarding-method' options specified"
    );
    assert_eq!(
        err("-A -t 192.0.2.1:80 -w 3"),
        "Illegal 'weight' option with the 'add-service' command"
    );
    assert_eq!(
        err("-a -t 192.0.2.1:80 -r 203.0.113.1 -s rr"),
        "Illegal 'scheduler' option with the 'add-server' command"
    );
    assert_eq!(
        err("-A -t 192.0.2.1:80 -r 203.0.113.1"),
        "Illegal 'real-server' option with the 'add-service' command"
    );
    assert_eq!(
        err("-C -n"),
        "Illegal 'numeric' option with the 'flush' command"
    );
    assert_eq!(
        err("-R -n"),
        "Illegal 'numeric' option with the 'restore' command"
    );
    assert_eq!(
        err("-S --stats"),
        "Illegal 'stats' option with the 'save' command"
    );
    assert_eq!(
        err("-A -s rr"),
        "You need to supply the 'service-address' option for the 'add-service' command"
    );
    assert_eq!(
        err("-a -t 192.0.2.1:80"),
        "You need to supply the 'real-server' option for the 'add-server' command"
    );
    assert_eq!(
        err("-L -c --timeout"),
        "The option 'timeout' conflicts with the 'connection' option in the 'list' command"
    );
    assert_eq!(err("-D -t 192.0.2.1:80 -6"), "-6 used before -f\n");
    assert_eq!(err("-A -6 -f 1"), "-6 used before -f\n");
    assert_eq!(
        ok("--start-daemon master"),
        Command::StartDaemon(SyncConfig {
            role: SyncRole::Master,
            ifname: "eth0".into(),
            syncid: 0,
            maxlen: None,
            group: None,
            port: None,
            ttl: None,
            peer: None,
        })
    );
    assert_eq!(
        ok(
            "--start-daemon backup --mcast-interface s0 --syncid 9 --sync-maxlen 1400 \
            --mcast-group 239.1.2.3 --mcast-port 9000 --mcast-ttl 3"
        ),
        Command::StartDaemon(SyncConfig {
            role: SyncRole::Backup,
            ifname: "s0".into(),
            syncid: 9,
            maxlen: Some(1400),
            group: Some("239.1.2.3".parse().unwrap()),
            port: Some(9000),
            ttl: Some(3),
            peer: None,
        })
    );
    // uvs's unicast extension, instead of a group.
    assert_eq!(
        ok("--start-daemon master --mcast-interface s0 --sync-peer 203.0.113.2"),
        Command::StartDaemon(SyncConfig {
            role: SyncRole::Master,
            ifname: "s0".into(),
            syncid: 0,
            maxlen: None,
            group: None,
            port: None,
            ttl: None,
            peer: Some("203.0.113.2".parse().unwrap()),
        })
    );
    assert_eq!(
        err("--start-daemon master --sync-peer 224.0.0.81"),
        "illegal sync-peer specified"
    );
    assert_eq!(
        err("--start-daemon master --mcast-group 239.1.2.3 --sync-peer 203.0.113.2"),
        "The option 'sync-peer' conflicts with the 'mcast-group' option in the 'start-daemon' command"
    );
    assert_eq!(
        err("--start-daemon primary"),
        "illegal start-daemon parameter specified"
    );
    assert_eq!(err("--stop-daemon x"), "illegal start_daemon specified");
    assert_eq!(
        ok("--stop-daemon backup --syncid 3"),
        Command::StopDaemon(SyncRole::Backup)
    );
    assert_eq!(
        err("--stop-daemon backup --syncid 256"),
        "illegal syncid specified"
    );
    // -L takes --syncid (and ignores it), as ipvsadm does.
    assert!(matches!(ok("-L -n --syncid 3"), Command::List(_)));
}

#[test]
fn exit_statuses_are_ipvsadm_s() {
    let status = |s: &str| p(s).unwrap_err().exit_status();
    assert_eq!(status("-t 192.0.2.1:80"), 255);
    assert_eq!(status("-A -t 192.0.2.1:80 --foo"), 255);
    assert_eq!(status("-A -t 192.0.2.1:80 -s"), 255);
    assert_eq!(status("-A -t 192.0.2.1:80 -R"), 2);
    assert_eq!(status("-A -t 192.0.2.1"), 2);
    assert_eq!(status("-a -t 192.0.2.1:80 -r x"), 2);
    assert_eq!(CtlError::ServiceExists.exit_status(), 255);
    assert_eq!(CtlError::NotUnicast.exit_status(), 255);
    assert_eq!(CtlError::ListNoSuchService.exit_status(), 1);
    let mut cfg = Config::new();
    let run = |cfg: &mut Config, s: &str| execute(cfg, &words(s), None, &NoCounters);
    assert_eq!(
        run(&mut cfg, "-L -t 192.0.2.1:80"),
        Err(CtlError::ListNoSuchService)
    );
    assert_eq!(
        run(&mut cfg, "-D -t 192.0.2.1:80"),
        Err(CtlError::NoSuchService)
    );
}

#[test]
fn usage_and_version_texts() {
    assert!(version().starts_with("uvsadm v"));
    assert!(version().contains("IPVS v1.2.1"));
    let u = usage();
    assert!(u.starts_with(&version()));
    for needle in [
        "\nUsage:\n  uvsadm -A|E virtual-service",
        "\nCommands:\nEither long or short options are allowed.\n",
        "\nvirtual-service:\n",
        "\nOptions:\n",
        "\nDaemon Options:\n",
        "  --set tcp tcpfin udp",
        "--control PATH",
    ] {
        assert!(u.contains(needle), "usage lacks {needle:?}");
    }
}
