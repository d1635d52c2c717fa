//! Tests of the control-plane core: every option and error of the parser,
//! the model's validation and atomic batches, and golden output compared
//! byte for byte (trailing spaces included) with ipvsadm's formats.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use uvs_sched::FwdMethod;

use super::format::{self, addr_port, ntop6};
use super::model::canonical_sched_flags;
use super::*;

mod parse;

// ---------------------------------------------------------------- helpers

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn p(s: &str) -> Result<Command, CtlError> {
    parse(&words(s))
}

fn ok(s: &str) -> Command {
    match p(s) {
        Ok(c) => c,
        Err(e) => panic!("{s:?} failed to parse: {e}"),
    }
}

fn err(s: &str) -> String {
    match p(s) {
        Ok(c) => panic!("{s:?} parsed unexpectedly: {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn allow_fwd(_: FwdMethod) -> Result<(), CtlError> {
    Ok(())
}
fn allow_kernel_scheds(name: &str) -> Result<(), CtlError> {
    if KERNEL_SCHEDULERS.contains(&name) {
        Ok(())
    } else {
        Err(CtlError::UnknownScheduler(name.to_string()))
    }
}
fn allow_sip(name: &str) -> Result<(), CtlError> {
    if name == "sip" {
        Ok(())
    } else {
        Err(CtlError::UnknownPe(name.to_string()))
    }
}

/// Gates of a complete IPVS, so the model's own checks can be tested
/// whatever the engine supports today.
const OPEN: Gates = Gates {
    fwd: allow_fwd,
    scheduler: allow_kernel_scheds,
    pe: allow_sip,
};

fn open_cfg(script: &str) -> Config {
    let mut cfg = Config::new();
    if let Err(e) = cfg.restore_with(script, &OPEN) {
        panic!("script failed: {e}");
    }
    cfg
}

fn apply_open(cfg: &mut Config, line: &str) -> Result<Applied, CtlError> {
    cfg.apply_with(&ok(line), &OPEN)
}

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().expect("test literal"))
}
fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse().expect("test literal"))
}
fn tcp(addr: &str, port: u16) -> SvcKey {
    SvcKey::Addr {
        proto: Proto::Tcp,
        addr: v4(addr),
        port,
    }
}

fn list_opts(s: &str) -> ListOpts {
    match ok(s) {
        Command::List(o) => o,
        c => panic!("not a list command: {c:?}"),
    }
}

/// Counters keyed on the server's last address byte, to tell lines apart.
fn counters_by_host(_: &SvcKey, d: &DestConfig) -> DestCounters {
    let host = match d.addr {
        IpAddr::V4(a) => u32::from(a.octets()[3]),
        IpAddr::V6(a) => u32::from(a.segments()[7]),
    };
    DestCounters {
        active_conns: host % 7,
        inactive_conns: host % 11,
        persistent_conns: host % 3,
        stats: Stats::default(),
    }
}

// ------------------------------------------------------------------ model

#[test]
fn add_and_list_flow_with_default_gates() {
    // Masquerading is supported today whatever schedulers exist; the
    // default scheduler is only accepted if uvs-sched has it.
    let mut cfg = Config::new();
    let add = ok("-A -t 192.0.2.10:80 -s rr");
    match (cfg.apply(&add), check_scheduler("rr")) {
        (Ok(Applied::ServiceAdded(k)), Ok(())) => assert_eq!(k, tcp("192.0.2.10", 80)),
        (Err(e), Err(g)) => {
            assert_eq!(e, g);
            assert!(cfg.services.is_empty());
            return;
        }
        other => panic!("gate and apply disagree: {other:?}"),
    }
    let a = cfg.apply(&ok("-a -t 192.0.2.10:80 -r 203.0.113.11:8080 -m -w 2"));
    assert_eq!(
        a,
        Ok(Applied::DestAdded {
            svc: tcp("192.0.2.10", 80),
            addr: v4("203.0.113.11"),
            port: 8080
        })
    );
}

#[test]
fn gate_forwarding_methods() {
    assert_eq!(supported_fwd(FwdMethod::Masq), Ok(()));
    assert_eq!(supported_fwd(FwdMethod::Route), Ok(()));
    assert_eq!(supported_fwd(FwdMethod::Tunnel), Ok(()));
    assert_eq!(
        supported_fwd(FwdMethod::Local).map_err(|e| e.to_string()),
        Err("forwarding method 'local' is not supported yet (only -m, -g and -i)".into())
    );
    // Through apply with the default gates: -a without -m means -g.
    let mut cfg = open_cfg("-A -t 192.0.2.10:80 -s rr");
    cfg.apply(&ok("-a -t 192.0.2.10:80 -r 203.0.113.11"))
        .expect("direct routing");
    assert_eq!(cfg.services[0].dests[0].fwd, FwdMethod::Route);
    cfg.apply(&ok("-a -t 192.0.2.10:80 -r 203.0.113.12 -i --tun-type gre"))
        .expect("tunnel");
    assert_eq!(cfg.services[0].dests[1].fwd, FwdMethod::Tunnel);
    // A refused edit changes nothing.
    let before = cfg.clone();
    let e = cfg
        .apply(&ok("-E -t 192.0.2.10:80 -s rr -p --pe ftp"))
        .unwrap_err();
    assert_eq!(e, CtlError::UnknownPe("ftp".into()));
    assert_eq!(cfg, before);
}

#[test]
fn gate_schedulers() {
    assert_eq!(
        check_scheduler("nosuch").map_err(|e| e.to_string()),
        Err("Scheduler or persistence engine not found".into())
    );
    for name in KERNEL_SCHEDULERS {
        match check_scheduler(name) {
            Ok(()) => assert!(uvs_sched::Registry::contains(name)),
            Err(CtlError::SchedulerNotSupported { name: n, available }) => {
                assert_eq!(n, name);
                let known: Vec<&str> = uvs_sched::Registry::names().collect();
                let want = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(" ")
                };
                assert_eq!(available, want);
                let msg = check_scheduler(name).unwrap_err().to_string();
                assert_eq!(
                    msg,
                    format!("scheduler '{name}' is not supported yet (available: {want})")
                );
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
    let mut cfg = Config::new();
    assert_eq!(
        cfg.apply(&ok("-A -t 192.0.2.10:80 -s fancy")),
        Err(CtlError::UnknownScheduler("fancy".into()))
    );
}

#[test]
fn gate_persistence_engines() {
    let mut cfg = Config::new();
    let e = cfg.apply_with(
        &ok("-A -u 192.0.2.1:5060 -s rr -p --pe sip"),
        &Gates {
            scheduler: allow_kernel_scheds,
            ..Gates::default()
        },
    );
    assert!(e.is_ok(), "{e:?}");
    assert_eq!(check_pe("sip"), Ok(()));
    // Where the kernel would ignore it: without -p, or on TCP.
    for bad in [
        "-A -u 192.0.2.1:5061 -s rr --pe sip",
        "-A -t 192.0.2.1:5060 -s rr -p --pe sip",
    ] {
        let e = cfg.apply_with(
            &ok(bad),
            &Gates {
                scheduler: allow_kernel_scheds,
                ..Gates::default()
            },
        );
        assert_eq!(e.unwrap_err(), CtlError::PeNeedsPersistentUdp("sip".into()));
    }
    assert_eq!(check_pe("ftp"), Err(CtlError::UnknownPe("ftp".into())));
}

#[test]
fn service_exists_and_missing() {
    let mut cfg = open_cfg("-A -t 192.0.2.10:80 -s rr");
    assert_eq!(
        apply_open(&mut cfg, "-A -t 192.0.2.10:80 -s wrr"),
        Err(CtlError::ServiceExists)
    );
    assert_eq!(
        CtlError::ServiceExists.to_string(),
        "Service already exists"
    );
    assert_eq!(
        apply_open(&mut cfg, "-E -t 192.0.2.10:81 -s wrr"),
        Err(CtlError::NoSuchService)
    );
    assert_eq!(
        apply_open(&mut cfg, "-D -t 192.0.2.10:81"),
        Err(CtlError::NoSuchService)
    );
    assert_eq!(
        apply_open(&mut cfg, "-Z -t 192.0.2.10:81"),
        Err(CtlError::NoSuchService)
    );
    assert_eq!(
        apply_open(&mut cfg, "-L -t 192.0.2.10:81"),
        Err(CtlError::NoSuchService)
    );
    assert_eq!(CtlError::NoSuchService.to_string(), "No such service");
    // Same address, other protocol or port: other services.
    assert!(apply_open(&mut cfg, "-A -u 192.0.2.10:80 -s rr").is_ok());
    assert!(apply_open(&mut cfg, "-A -t 192.0.2.10:81 -s rr").is_ok());
    assert_eq!(cfg.services.len(), 3);
}

#[test]
fn destination_exists_and_missing() {
    let mut cfg = open_cfg(
        "-A -t 192.0.2.10:80 -s rr
         -a -t 192.0.2.10:80 -r 203.0.113.11 -m",
    );
    assert_eq!(
        apply_open(&mut cfg, "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 5"),
        Err(CtlError::DestExists)
    );
    assert_eq!(
        CtlError::DestExists.to_string(),
        "Destination already exists"
    );
    // Another port is another destination.
    assert!(apply_open(&mut cfg, "-a -t 192.0.2.10:80 -r 203.0.113.11:81 -m").is_ok());
    assert_eq!(
        apply_open(&mut cfg, "-e -t 192.0.2.10:80 -r 203.0.113.12 -m"),
        Err(CtlError::NoSuchDest)
    );
    assert_eq!(
        apply_open(&mut cfg, "-d -t 192.0.2.10:80 -r 203.0.113.12"),
        Err(CtlError::NoSuchDest)
    );
    assert_eq!(CtlError::NoSuchDest.to_string(), "No such destination");
    for line in [
        "-a -t 192.0.2.10:99 -r 203.0.113.11 -m",
        "-e -t 192.0.2.10:99 -r 203.0.113.11 -m",
        "-d -t 192.0.2.10:99 -r 203.0.113.11",
    ] {
        assert_eq!(
            apply_open(&mut cfg, line),
            Err(CtlError::ServiceNotDefined),
            "{line}"
        );
    }
    assert_eq!(
        CtlError::ServiceNotDefined.to_string(),
        "Service not defined"
    );
}

#[test]
fn edit_and_delete() {
    let mut cfg = open_cfg(
        "-A -t 192.0.2.10:80 -s rr -p 60
         -a -t 192.0.2.10:80 -r 203.0.113.11 -m -w 3 -x 10 -y 5
         -a -t 192.0.2.10:80 -r 203.0.113.12 -m",
    );
    // -E replaces every attribute (scheduler back to wlc, persistence off)
    // and keeps the servers.
    assert_eq!(
        apply_open(&mut cfg, "-E -t 192.0.2.10:80"),
        Ok(Applied::ServiceEdited(tcp("192.0.2.10", 80)))
    );
    let svc = &cfg.services[0];
    assert_eq!(
        (svc.sched.as_str(), svc.persistent, svc.dests.len()),
        ("wlc", None, 2)
    );
    // -e replaces the server's attributes.
    assert!(apply_open(&mut cfg, "-e -t 192.0.2.10:80 -r 203.0.113.11 -m -w 0").is_ok());
    let d = cfg.services[0]
        .dest(v4("203.0.113.11"), 80)
        .expect("present");
    assert_eq!((d.weight, d.u_threshold, d.l_threshold), (0, 0, 0));
    assert_eq!(
        apply_open(&mut cfg, "-d -t 192.0.2.10:80 -r 203.0.113.11"),
        Ok(Applied::DestDeleted {
            svc: tcp("192.0.2.10", 80),
            addr: v4("203.0.113.11"),
            port: 80
        })
    );
    assert_eq!(cfg.services[0].dests.len(), 1);
    assert_eq!(
        apply_open(&mut cfg, "-D -t 192.0.2.10:80"),
        Ok(Applied::ServiceDeleted(tcp("192.0.2.10", 80)))
    );
    assert!(cfg.services.is_empty());
}

#[test]
fn clear_zero_and_timeouts() {
    let mut cfg = open_cfg(
        "-A -t 192.0.2.10:80 -s rr
         -A -u 192.0.2.10:53 -s rr",
    );
    assert_eq!(apply_open(&mut cfg, "-Z"), Ok(Applied::Zeroed(None)));
    assert_eq!(
        apply_open(&mut cfg, "-Z -t 192.0.2.10:80"),
        Ok(Applied::Zeroed(Some(tcp("192.0.2.10", 80))))
    );
    assert_eq!(cfg.timeouts, Timeouts::default());
    assert_eq!(
        apply_open(&mut cfg, "--set 0 30 0"),
        Ok(Applied::TimeoutsSet(Timeouts {
            tcp: 900,
            tcp_fin: 30,
            udp: 300
        }))
    );
    assert_eq!(apply_open(&mut cfg, "-C"), Ok(Applied::Cleared));
    assert!(cfg.services.is_empty());
    // Timeouts survive -C, as in the kernel.
    assert_eq!(cfg.timeouts.tcp_fin, 30);
}

#[test]
fn queries_do_not_change_the_model() {
    let mut cfg = open_cfg("-A -t 192.0.2.10:80 -s rr");
    let before = cfg.clone();
    for q in [
        "-L -n",
        "-S -n",
        "-L --timeout",
        "-L -c",
        "-h",
        "-v",
        "-L -t 192.0.2.10:80",
    ] {
        assert_eq!(apply_open(&mut cfg, q), Ok(Applied::Nothing), "{q}");
    }
    assert_eq!(apply_open(&mut cfg, "-R"), Err(CtlError::RestoreNeedsInput));
    assert_eq!(cfg, before);
}

#[test]
fn zero_port_only_for_persistent_services() {
    let mut cfg = Config::new();
    assert_eq!(
        err("-A -t 192.0.2.10 -s rr"),
        "Zero port specified for non-persistent service"
    );
    assert!(apply_open(&mut cfg, "-A -t 192.0.2.10:0 -s rr -p").is_ok());
    // fwmark services have no port at all.
    assert!(apply_open(&mut cfg, "-A -f 1 -s rr").is_ok());
}

#[test]
fn ops_only_for_udp_and_fwmark() {
    let mut cfg = Config::new();
    assert_eq!(
        err("-A -t 192.0.2.10:80 -s rr -o"),
        "One-Packet Scheduling is only for UDP virtual services"
    );
    assert_eq!(
        p("-A --sctp-service 192.0.2.10:80 -s rr -o"),
        Err(CtlError::OpsNotUdp)
    );
    assert!(apply_open(&mut cfg, "-A -u 192.0.2.10:53 -s rr -o").is_ok());
    assert!(apply_open(&mut cfg, "-A -f 9 -s rr --ops").is_ok());
}

#[test]
fn sched_flags_are_checked_and_canonical() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        canonical_sched_flags("sh", &s(&["sh-port", "sh-fallback", "sh-port"])),
        Ok(s(&["sh-fallback", "sh-port"]))
    );
    // The bits are shared: flag-1 on sh is sh-fallback.
    assert_eq!(
        canonical_sched_flags("sh", &s(&["flag-1"])),
        Ok(s(&["sh-fallback"]))
    );
    assert_eq!(
        canonical_sched_flags("mh", &s(&["flag-3", "mh-port"])),
        Ok(s(&["mh-port", "flag-3"]))
    );
    assert_eq!(
        canonical_sched_flags("rr", &s(&["flag-2"])),
        Ok(s(&["flag-2"]))
    );
    assert_eq!(
        canonical_sched_flags("rr", &s(&["sh-port"])).map_err(|e| e.to_string()),
        Err("incompatible scheduler flag `sh-port'".into())
    );
    assert_eq!(
        canonical_sched_flags("sh", &s(&["mh-port"])),
        Err(CtlError::IncompatibleSchedFlag("mh-port".into()))
    );
    assert_eq!(
        canonical_sched_flags("sh", &s(&["fast"])),
        Err(CtlError::InvalidSchedFlag("fast".into()))
    );
    // Order of -s and -b on the line does not matter.
    let mut cfg = Config::new();
    assert!(apply_open(&mut cfg, "-A -u 192.0.2.1:53 -b sh-port -s sh").is_ok());
    assert_eq!(cfg.services[0].sched_flags, s(&["sh-port"]));
}

#[test]
fn family_mismatch_and_ports_and_thresholds() {
    let mut cfg = open_cfg(
        "-A -t 192.0.2.10:80 -s rr
         -A -f 5 -6 -s rr",
    );
    assert_eq!(
        err("-a -t 192.0.2.10:80 -r [2001:db8::1]:80 -m"),
        "Different address family is allowed only for tunneling servers"
    );
    assert_eq!(
        p("-a -f 5 -6 -r 203.0.113.1 -m"),
        Err(CtlError::FamilyMismatch)
    );
    // Tunnelling may cross families.
    assert!(apply_open(&mut cfg, "-a -t 192.0.2.10:80 -r 2001:db8::1 -i").is_ok());
    assert!(apply_open(&mut cfg, "-a -f 5 -6 -r 2001:db8::2 -m").is_ok());
    // Thresholds: -y above -x is refused (also when -x is unset).
    assert_eq!(
        apply_open(
            &mut cfg,
            "-a -t 192.0.2.10:80 -r 203.0.113.1 -m -x 10 -y 11"
        )
        .map_err(|e| e.to_string()),
        Err("Numerical result out of range".into())
    );
    assert_eq!(
        apply_open(&mut cfg, "-a -t 192.0.2.10:80 -r 203.0.113.1 -m -y 3"),
        Err(CtlError::ThresholdOrder { lower: 3, upper: 0 })
    );
    assert!(apply_open(
        &mut cfg,
        "-a -t 192.0.2.10:80 -r 203.0.113.1 -m -x 10 -y 10"
    )
    .is_ok());
    // Programmatic commands get the port rule the parser applies silently.
    let key = tcp("192.0.2.10", 80);
    let dr = DestConfig {
        addr: v4("203.0.113.2"),
        port: 8080,
        fwd: FwdMethod::Route,
        weight: 1,
        u_threshold: 0,
        l_threshold: 0,
        tun: None,
    };
    assert_eq!(
        cfg.apply_with(
            &Command::AddServer {
                svc: key,
                dest: dr.clone()
            },
            &OPEN
        ),
        Err(CtlError::DestPortMismatch {
            dest: 8080,
            svc: 80
        })
    );
    let tun_on_masq = DestConfig {
        fwd: FwdMethod::Masq,
        tun: Some(TunOpts::default()),
        ..dr
    };
    assert_eq!(
        cfg.apply_with(
            &Command::AddServer {
                svc: key,
                dest: tun_on_masq
            },
            &OPEN
        ),
        Err(CtlError::TunnelOptionsNeedIpip)
    );
}

#[test]
fn tunnel_servers_always_carry_their_options() {
    let mut cfg = open_cfg("-A -t 192.0.2.10:80 -s rr");
    let dest = DestConfig {
        addr: v4("203.0.113.2"),
        port: 80,
        fwd: FwdMethod::Tunnel,
        weight: 1,
        u_threshold: 0,
        l_threshold: 0,
        tun: None,
    };
    let svc = tcp("192.0.2.10", 80);
    assert!(cfg
        .apply_with(&Command::AddServer { svc, dest }, &OPEN)
        .is_ok());
    assert_eq!(cfg.services[0].dests[0].tun, Some(TunOpts::default()));
}

// ------------------------------------------------------- batches, scripts

const SCRIPT: &str = "\
# uvs example
-A -t 192.0.2.10:80 -s rr

ipvsadm -a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 1
   -a -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 1
uvsadm
-A -u 192.0.2.10:53 -s wrr -p 50
";

#[test]
fn parse_script_skips_blank_comment_and_bare_program_lines() {
    let cmds = parse_script(SCRIPT).expect("valid script");
    let lines: Vec<usize> = cmds.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, vec![2, 4, 5, 7]);
    assert!(matches!(cmds[0].1, Command::AddService(_)));
    assert!(matches!(cmds[1].1, Command::AddServer { .. }));
}

#[test]
fn parse_script_names_the_bad_line() {
    let e = parse_script("-A -t 192.0.2.10:80\n\n-a -t 192.0.2.10:80 -r 203.0.113.1 -w x\n")
        .unwrap_err();
    assert_eq!(e.line, 3);
    assert_eq!(e.to_string(), "line 3: illegal weight specified");
}

#[test]
fn batch_is_all_or_nothing_and_names_the_line() {
    let mut cfg = open_cfg("-A -t 192.0.2.10:80 -s rr\n-a -t 192.0.2.10:80 -r 203.0.113.11 -m");
    let before = cfg.clone();
    let bad = "\
-A -u 192.0.2.10:53 -s rr
-a -u 192.0.2.10:53 -r 203.0.113.11 -m
-a -t 192.0.2.10:80 -r 203.0.113.11 -m
-A -t 192.0.2.20:80 -s rr
";
    let e = cfg.restore_with(bad, &OPEN).unwrap_err();
    assert_eq!(e.line, 3);
    assert_eq!(e.error, CtlError::DestExists);
    assert_eq!(e.to_string(), "line 3: Destination already exists");
    assert_eq!(
        cfg, before,
        "a failed batch must leave the configuration as it was"
    );

    // A syntax error is caught before anything is applied, too.
    let e = cfg
        .restore_with("-A -u 192.0.2.10:53 -s rr\n-L -Q\n", &OPEN)
        .unwrap_err();
    assert_eq!(e.to_string(), "line 2: -Q: unknown option");
    assert_eq!(cfg, before);

    // The same batch without the bad line applies completely.
    let good: String = bad
        .lines()
        .filter(|l| !l.starts_with("-a -t"))
        .map(|l| format!("{l}\n"))
        .collect();
    let applied = cfg.restore_with(&good, &OPEN).expect("valid batch");
    assert_eq!(applied.len(), 3);
    assert_eq!(cfg.services.len(), 3);
}

#[test]
fn batch_refuses_queries_and_nested_restore() {
    let mut cfg = Config::new();
    for (line, want) in [
        ("-L -n", CtlError::NotInScript("-L")),
        ("-S", CtlError::NotInScript("-S")),
        ("-R", CtlError::TryHelp),
    ] {
        let script = format!("-A -t 192.0.2.10:80 -s rr\n{line}\n");
        let e = cfg.restore_with(&script, &OPEN).unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(e.error, want);
        assert!(cfg.services.is_empty());
    }
}

#[test]
fn config_from_script_uses_default_gates() {
    // An unknown engine is refused by the default gate.
    let e =
        Config::from_script("-A -t 192.0.2.10:80 -s rr\n-E -t 192.0.2.10:80 -s rr -p --pe ftp\n")
            .unwrap_err();
    match check_scheduler("rr") {
        Ok(()) => {
            assert_eq!(e.line, 2);
            assert_eq!(e.error, CtlError::UnknownPe("ftp".into()));
        }
        Err(g) => {
            assert_eq!(e.line, 1);
            assert_eq!(e.error, g);
        }
    }
}

// ------------------------------------------------------------ golden -L -n

const GOLDEN_SCRIPT: &str = "\
-A -f 259 -s rr
-A -u 192.0.2.10:53 -s wrr -p 50
-A -t 192.0.2.10:80 -s rr
-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 1
-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 1
";

fn golden_counters(_: &SvcKey, d: &DestConfig) -> DestCounters {
    let inactive = if d.addr == v4("203.0.113.11") { 5 } else { 3 };
    DestCounters {
        inactive_conns: inactive,
        ..DestCounters::default()
    }
}

#[test]
fn golden_list_numeric() {
    let cfg = open_cfg(GOLDEN_SCRIPT);
    let out = list(&cfg, &list_opts("-L -n"), &golden_counters).expect("listing");
    let want = concat!(
        "IP Virtual Server version 1.2.1 (size=4096)\n",
        "Prot LocalAddress:Port Scheduler Flags\n",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        "TCP  192.0.2.10:80 rr\n",
        "  -> 203.0.113.11:80              Masq    1      0          5         \n",
        "  -> 203.0.113.12:80              Masq    1      0          3         \n",
        "UDP  192.0.2.10:53 wrr persistent 50\n",
        "FWM  259 rr\n",
    );
    assert_eq!(out, want);
    // Through execute, with the argv the client sends.
    let mut cfg2 = cfg.clone();
    let got =
        execute_command(&mut cfg2, &ok("-L -n"), None, &golden_counters, &OPEN).expect("execute");
    assert_eq!(got.output, want);
    assert_eq!(got.applied, Applied::Nothing);
}

#[test]
fn golden_list_one_service_has_no_version_line() {
    let cfg = open_cfg(GOLDEN_SCRIPT);
    let out = list(&cfg, &list_opts("-L -n -t 192.0.2.10:80"), &golden_counters).expect("listing");
    assert_eq!(
        out,
        concat!(
            "Prot LocalAddress:Port Scheduler Flags\n",
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
            "TCP  192.0.2.10:80 rr\n",
            "  -> 203.0.113.11:80              Masq    1      0          5         \n",
            "  -> 203.0.113.12:80              Masq    1      0          3         \n",
        )
    );
    assert_eq!(
        list(&cfg, &list_opts("-L -t 192.0.2.99:80"), &NoCounters),
        Err(CtlError::NoSuchService)
    );
}

#[test]
fn golden_list_empty() {
    let out = list(&Config::new(), &ListOpts::default(), &NoCounters).expect("listing");
    assert_eq!(
        out,
        concat!(
            "IP Virtual Server version 1.2.1 (size=4096)\n",
            "Prot LocalAddress:Port Scheduler Flags\n",
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        )
    );
}

#[test]
fn golden_list_service_flags_forwarding_and_ipv6() {
    let cfg = open_cfg(
        "-A -u 192.0.2.20:53 -s sh -b sh-port,sh-fallback -p 120 -M 255.255.255.0 --pe sip -o
         -A -t [2001:db8::10]:443 -s wlc -p -M 64
         -a -t [2001:db8::10]:443 -r [2001:db8::2]:8443 -m -w 65535
         -A -f 7 -6 -s rr
         -a -f 7 -6 -r 2001:db8::3 -g -w 0
         -A --sctp-service 192.0.2.30:9 -s rr
         -a --sctp-service 192.0.2.30:9 -r 203.0.113.5 -i
         -a --sctp-service 192.0.2.30:9 -r 203.0.113.6 -g -w 20",
    );
    let out = list(&cfg, &list_opts("-Ln"), &counters_by_host).expect("listing");
    let want = concat!(
        "IP Virtual Server version 1.2.1 (size=4096)\n",
        "Prot LocalAddress:Port Scheduler Flags\n",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        "UDP  192.0.2.20:53 sh (sh-fallback,sh-port) persistent 120 mask 255.255.255.0 pe sip ops\n",
        "SCTP 192.0.2.30:9 rr\n",
        "  -> 203.0.113.5:9                Tunnel  1      5          5         \n",
        "  -> 203.0.113.6:9                Route   20     6          6         \n",
        "TCP  [2001:db8::10]:443 wlc persistent 360 mask 64\n",
        "  -> [2001:db8::2]:8443           Masq    65535  2          2         \n",
        "FWM  7 IPv6 rr\n",
        "  -> [2001:db8::3]:0              Route   0      3          3         \n",
    );
    assert_eq!(out, want);
}

#[test]
fn golden_sorting_services() {
    // fwmark first by mark (non-fwmark services have mark 0), then family,
    // protocol (TCP 6 < UDP 17 < SCTP 132), address, port.
    let cfg = open_cfg(
        "-A -f 2 -s rr
         -A -f 1 -6 -s rr
         -A -f 1 -s rr
         -A --sctp-service 192.0.2.1:1 -s rr
         -A -t [2001:db8::1]:80 -s rr
         -A -u 192.0.2.1:80 -s rr
         -A -t 192.0.2.2:80 -s rr
         -A -t 192.0.2.1:443 -s rr
         -A -t 192.0.2.1:80 -s rr",
    );
    let out = list(&cfg, &ListOpts::default(), &NoCounters).expect("listing");
    let services: Vec<&str> = out.lines().skip(3).collect();
    assert_eq!(
        services,
        vec![
            "TCP  192.0.2.1:80 rr",
            "TCP  192.0.2.1:443 rr",
            "TCP  192.0.2.2:80 rr",
            "UDP  192.0.2.1:80 rr",
            "SCTP 192.0.2.1:1 rr",
            "TCP  [2001:db8::1]:80 rr",
            "FWM  1 rr",
            "FWM  1 IPv6 rr",
            "FWM  2 rr",
        ]
    );
    // --nosort keeps configuration order.
    let out = list(&cfg, &list_opts("-L --nosort"), &NoCounters).expect("listing");
    assert_eq!(out.lines().nth(3), Some("FWM  2 rr"));
}

/// Server orders as glibc 2.36's `qsort` produced them with libipvs's
/// comparator on the kernel's newest-first list (checked with a C program
/// on this machine): the wrapping compare puts 200.x before 10.x.
#[test]
fn golden_sorting_servers_wrapping_compare() {
    let cases: [(&[&str], &[&str]); 4] = [
        (&["200.0.0.1", "10.0.0.1"], &["200.0.0.1", "10.0.0.1"]),
        (&["10.0.0.1", "200.0.0.1"], &["200.0.0.1", "10.0.0.1"]),
        (
            &[
                "200.0.0.1",
                "10.0.0.1",
                "100.0.0.1",
                "10.0.0.2",
                "254.0.0.1",
                "1.0.0.1",
                "128.0.0.1",
            ],
            &[
                "200.0.0.1",
                "254.0.0.1",
                "1.0.0.1",
                "10.0.0.1",
                "10.0.0.2",
                "100.0.0.1",
                "128.0.0.1",
            ],
        ),
        (
            &[
                "203.0.113.11",
                "203.0.113.12",
                "10.0.0.1",
                "192.0.2.1",
                "127.0.0.1",
                "138.0.0.1",
                // 1.0.0.1 compares with each of these as 0.0.0.1 would.
                "1.0.0.1",
            ],
            &[
                "127.0.0.1",
                "138.0.0.1",
                "192.0.2.1",
                "203.0.113.11",
                "203.0.113.12",
                "1.0.0.1",
                "10.0.0.1",
            ],
        ),
    ];
    for (kernel_order, want) in cases {
        // The kernel lists newest first, so add in reverse.
        let mut script = String::from("-A -t 192.0.2.10:80 -s rr\n");
        for a in kernel_order.iter().rev() {
            script.push_str(&format!("-a -t 192.0.2.10:80 -r {a} -m\n"));
        }
        let cfg = open_cfg(&script);
        let got: Vec<String> = format::sorted_dests(&cfg.services[0], false)
            .iter()
            .map(|d| d.addr.to_string())
            .collect();
        assert_eq!(got, want.to_vec(), "kernel order {kernel_order:?}");
        let nosort: Vec<String> = format::sorted_dests(&cfg.services[0], true)
            .iter()
            .map(|d| d.addr.to_string())
            .collect();
        assert_eq!(nosort, kernel_order.to_vec());
    }
    // Same address: by port.
    let cfg = open_cfg(
        "-A -t 192.0.2.10:80 -s rr
         -a -t 192.0.2.10:80 -r 203.0.113.1:90 -m
         -a -t 192.0.2.10:80 -r 203.0.113.1:8080 -m
         -a -t 192.0.2.10:80 -r 203.0.113.1:81 -m",
    );
    let ports: Vec<u16> = format::sorted_dests(&cfg.services[0], false)
        .iter()
        .map(|d| d.port)
        .collect();
    assert_eq!(ports, vec![81, 90, 8080]);
}

#[test]
fn golden_sorting_services_wrapping_compare() {
    let cfg = open_cfg(
        "-A -t 10.0.0.1:80 -s rr
         -A -t 200.0.0.1:80 -s rr",
    );
    let out = list(&cfg, &list_opts("-L -n"), &NoCounters).expect("listing");
    let services: Vec<&str> = out.lines().skip(3).collect();
    assert_eq!(
        services,
        vec!["TCP  200.0.0.1:80 rr", "TCP  10.0.0.1:80 rr"]
    );
}

// --------------------------------------------------- stats, rate, columns

#[test]
fn largenum_formats() {
    assert_eq!(largenum(0, false), "        0");
    assert_eq!(largenum(99_999_999, false), " 99999999");
    assert_eq!(largenum(100_000_000, false), "  100000K");
    assert_eq!(largenum(999_999_999, false), "  999999K");
    assert_eq!(largenum(1_000_000_000, false), "    1000M");
    assert_eq!(largenum(99_999_999_999, false), "   99999M");
    assert_eq!(largenum(100_000_000_000, false), "     100G");
    assert_eq!(largenum(99_999_999_999_999, false), "   99999G");
    assert_eq!(largenum(100_000_000_000_000, false), "     100T");
    assert_eq!(largenum(u64::MAX, false), "18446744T");
    assert_eq!(largenum(5, true), "        5");
    assert_eq!(largenum(12_345_678, true), " 12345678");
    assert_eq!(largenum(123_456_789, true), " 123456789");
    assert_eq!(largenum(u64::MAX, true), " 18446744073709551615");
}

fn traffic(_: &SvcKey, d: &DestConfig) -> DestCounters {
    let big = d.addr == v4("203.0.113.11");
    DestCounters {
        active_conns: 1,
        inactive_conns: 2,
        persistent_conns: 0,
        stats: Stats {
            conns: if big { 123 } else { 7 },
            inpkts: if big { 150_000_000 } else { 10 },
            outpkts: 20,
            inbytes: if big { 2_500_000_000 } else { 1000 },
            outbytes: if big { 123_456_789_012_345 } else { 0 },
            cps: 3,
            inpps: 4,
            outpps: 5,
            inbps: if big { 300_000_000 } else { 600 },
            outbps: 700,
        },
    }
}

#[test]
fn golden_list_stats() {
    let cfg = open_cfg(GOLDEN_SCRIPT);
    let out = list(&cfg, &list_opts("-L -n --stats"), &traffic).expect("listing");
    let want = concat!(
        "IP Virtual Server version 1.2.1 (size=4096)\n",
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n",
        "  -> RemoteAddress:Port\n",
        "TCP  192.0.2.10:80                     130  150000K       40    2500M     123T\n",
        "  -> 203.0.113.11:80                   123  150000K       20    2500M     123T\n",
        "  -> 203.0.113.12:80                     7       10       20     1000        0\n",
        "UDP  192.0.2.10:53                       0        0        0        0        0\n",
        "FWM  259                                 0        0        0        0        0\n",
    );
    assert_eq!(out, want);
    let exact = list(&cfg, &list_opts("-L -n --stats --exact"), &traffic).expect("listing");
    assert!(exact.contains(
        "TCP  192.0.2.10:80                     130 150000010       40 2500001000 123456789012345\n"
    ));
}

#[test]
fn golden_list_rate() {
    let cfg = open_cfg(GOLDEN_SCRIPT);
    let out = list(&cfg, &list_opts("-L -n --rate"), &traffic).expect("listing");
    let want = concat!(
        "IP Virtual Server version 1.2.1 (size=4096)\n",
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n",
        "  -> RemoteAddress:Port\n",
        "TCP  192.0.2.10:80                       6        8       10  300000K     1400\n",
        "  -> 203.0.113.11:80                     3        4        5  300000K      700\n",
        "  -> 203.0.113.12:80                     3        4        5      600      700\n",
        "UDP  192.0.2.10:53                       0        0        0        0        0\n",
        "FWM  259                                 0        0        0        0        0\n",
    );
    assert_eq!(out, want);
}

/// A runtime with its own service counters (the kernel keeps them apart
/// from the servers', e.g. after a server was removed).
struct OwnServiceStats;
impl Counters for OwnServiceStats {
    fn dest(&self, _: &SvcKey, _: &DestConfig) -> DestCounters {
        DestCounters::default()
    }
    fn service(&self, _: &ServiceConfig, _: &Stats) -> Stats {
        Stats {
            conns: 42,
            ..Stats::default()
        }
    }
}

#[test]
fn service_stats_can_come_from_the_runtime() {
    let cfg = open_cfg("-A -t 192.0.2.10:80 -s rr");
    let out = list(&cfg, &list_opts("-L --stats"), &OwnServiceStats).expect("listing");
    assert!(out.ends_with(
        "TCP  192.0.2.10:80                      42        0        0        0        0\n"
    ));
}

#[test]
fn golden_list_thresholds_and_persistent_conn() {
    let cfg = open_cfg(
        "-A -t 192.0.2.10:80 -s rr -p 30
         -a -t 192.0.2.10:80 -r 203.0.113.11 -m -w 4 -x 100 -y 50",
    );
    let out = list(&cfg, &list_opts("-L -n --thresholds"), &counters_by_host).expect("listing");
    assert_eq!(
        out,
        concat!(
            "IP Virtual Server version 1.2.1 (size=4096)\n",
            "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n",
            "  -> RemoteAddress:Port\n",
            "TCP  192.0.2.10:80 rr persistent 30\n",
            "  -> 203.0.113.11:80              100        50         4          0         \n",
        )
    );
    let out = list(
        &cfg,
        &list_opts("-L -n --persistent-conn"),
        &counters_by_host,
    )
    .expect("listing");
    assert_eq!(
        out,
        concat!(
            "IP Virtual Server version 1.2.1 (size=4096)\n",
            "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n",
            "  -> RemoteAddress:Port\n",
            "TCP  192.0.2.10:80 rr persistent 30\n",
            "  -> 203.0.113.11:80              4         2           4          0         \n",
        )
    );
}

#[test]
fn golden_list_tun_info() {
    let cfg = open_cfg(
        "-A -t 192.0.2.10:80 -s rr
         -a -t 192.0.2.10:80 -r 203.0.113.1 -i
         -a -t 192.0.2.10:80 -r 203.0.113.2 -i --tun-type gue --tun-port 6080 --tun-remcsum
         -a -t 192.0.2.10:80 -r 203.0.113.3 -i --tun-type gre --tun-csum
         -a -t 192.0.2.10:80 -r 203.0.113.4:8080 -m",
    );
    let out = list(&cfg, &list_opts("-L -n --tun-info"), &NoCounters).expect("listing");
    assert_eq!(
        out,
        concat!(
            "IP Virtual Server version 1.2.1 (size=4096)\n",
            "Prot LocalAddress:Port Scheduler Flags\n",
            "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n",
            "TCP  192.0.2.10:80 rr\n",
            "  -> 203.0.113.1:80               Tunnel  ipip          1      0          0         \n",
            "  -> 203.0.113.2:80               Tunnel  gue:6080:r+c  1      0          0         \n",
            "  -> 203.0.113.3:80               Tunnel  gre:+c        1      0          0         \n",
            "  -> 203.0.113.4:8080             Masq    n/a           1      0          0         \n",
        )
    );
}

#[test]
fn golden_timeout_and_daemon() {
    let mut cfg = Config::new();
    assert_eq!(
        list(&cfg, &list_opts("-L --timeout"), &NoCounters),
        Ok("Timeout (tcp tcpfin udp): 900 120 300\n".to_string())
    );
    assert!(apply_open(&mut cfg, "--set 3600 0 60").is_ok());
    assert_eq!(
        list(&cfg, &list_opts("-L --timeout"), &NoCounters),
        Ok("Timeout (tcp tcpfin udp): 3600 120 60\n".to_string())
    );
    assert_eq!(
        list(&cfg, &list_opts("-L --daemon"), &NoCounters),
        Ok(String::new())
    );
}

// ------------------------------------------------------------------- -c

#[test]
fn golden_connections() {
    let sa = |s: &str| -> SocketAddr { s.parse().expect("test literal") };
    let rows = [
        ConnRow {
            proto: Proto::Tcp,
            expire_ms: 899_999,
            state: "ESTABLISHED".into(),
            client: sa("198.51.100.7:40312"),
            virt: sa("192.0.2.10:80"),
            dest: sa("203.0.113.11:80"),
        },
        ConnRow {
            proto: Proto::Udp,
            expire_ms: 5_000,
            state: "UDP".into(),
            client: sa("198.51.100.7:5353"),
            virt: sa("192.0.2.10:53"),
            dest: sa("203.0.113.12:53"),
        },
        ConnRow {
            proto: Proto::Tcp,
            expire_ms: 6_000_000,
            state: "TIME_WAIT".into(),
            client: sa("[2001:db8::7]:40000"),
            virt: sa("[2001:db8::10]:443"),
            dest: sa("[2001:db8::2]:8443"),
        },
    ];
    let want = concat!(
        "IPVS connection entries\n",
        "pro expire state       source             virtual            destination\n",
        "TCP 14:59  ESTABLISHED 198.51.100.7:40312 192.0.2.10:80      203.0.113.11:80\n",
        "UDP 00:05  UDP         198.51.100.7:5353  192.0.2.10:53      203.0.113.12:53\n",
        "TCP 100:00 TIME_WAIT   [2001:db8::7]:40000 [2001:db8::10]:443 [2001:db8::2]:8443\n",
    );
    assert_eq!(connections(&rows), want);

    struct WithConns(Vec<ConnRow>);
    impl Counters for WithConns {
        fn dest(&self, _: &SvcKey, _: &DestConfig) -> DestCounters {
            DestCounters::default()
        }
        fn connections(&self) -> Vec<ConnRow> {
            self.0.clone()
        }
    }
    let out = list(
        &Config::new(),
        &list_opts("-L -n -c"),
        &WithConns(rows.to_vec()),
    );
    assert_eq!(out, Ok(want.to_string()));
}

// ------------------------------------------------------------------ save

#[test]
fn golden_save() {
    let cfg = open_cfg(GOLDEN_SCRIPT);
    assert_eq!(
        save(&cfg),
        concat!(
            "-A -t 192.0.2.10:80 -s rr\n",
            "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 1\n",
            "-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 1\n",
            "-A -u 192.0.2.10:53 -s wrr -p 50\n",
            "-A -f 259 -s rr\n",
        )
    );
    assert_eq!(save(&Config::new()), "");
}

const RICH: &str = "\
-A -u 192.0.2.20:53 -s sh -b sh-port,sh-fallback -p 120 -M 255.255.255.0 --pe sip -o
-a -u 192.0.2.20:53 -r 203.0.113.9:5353 -m -w 7
-A -t [2001:db8::10]:443 -s wlc -p -M 64
-a -t [2001:db8::10]:443 -r [2001:db8::2]:8443 -m -w 65535
-a -t [2001:db8::10]:443 -r 203.0.113.8 -i --tun-type gre --tun-csum
-A -f 7 -6 -s mh -b mh-fallback
-a -f 7 -6 -r 2001:db8::3 -g -w 0
-A --sctp-service 192.0.2.30:9 -s rr
-a --sctp-service 192.0.2.30:9 -r 203.0.113.5 -i
-a --sctp-service 192.0.2.30:9 -r 203.0.113.6 -i --tun-type gue --tun-port 6080 --tun-remcsum
-a --sctp-service 192.0.2.30:9 -r 203.0.113.7 -g -w 20
-A -t 192.0.2.40:0 -s lc -p 10
-a -t 192.0.2.40:0 -r 203.0.113.40 -m
";

#[test]
fn golden_save_every_field() {
    let cfg = open_cfg(RICH);
    assert_eq!(
        save(&cfg),
        concat!(
            "-A -t 192.0.2.40:0 -s lc -p 10\n",
            "-a -t 192.0.2.40:0 -r 203.0.113.40:0 -m -w 1\n",
            "-A -u 192.0.2.20:53 -s sh -p 120 -M 255.255.255.0 --pe sip -o -b sh-fallback,sh-port\n",
            "-a -u 192.0.2.20:53 -r 203.0.113.9:5353 -m -w 7\n",
            "-A --sctp-service 192.0.2.30:9 -s rr\n",
            "-a --sctp-service 192.0.2.30:9 -r 203.0.113.5:9 -i -w 1 --tun-type ipip\n",
            "-a --sctp-service 192.0.2.30:9 -r 203.0.113.6:9 -i -w 1 --tun-type gue --tun-port 6080 --tun-remcsum\n",
            "-a --sctp-service 192.0.2.30:9 -r 203.0.113.7:9 -g -w 20\n",
            "-A -t [2001:db8::10]:443 -s wlc -p 360 -M 64\n",
            "-a -t [2001:db8::10]:443 -r 203.0.113.8:443 -i -w 1 --tun-type gre --tun-csum\n",
            "-a -t [2001:db8::10]:443 -r [2001:db8::2]:8443 -m -w 65535\n",
            "-A -f 7 -6 -s mh -b mh-fallback\n",
            "-a -f 7 -6 -r [2001:db8::3]:0 -g -w 0\n",
        )
    );
}

#[test]
fn save_restore_round_trip() {
    let original = open_cfg(RICH);
    let text = save(&original);
    let cmds = parse_script(&text).expect("save output parses");
    let mut again = Config::new();
    again
        .apply_batch_with(&cmds, &OPEN)
        .expect("save output applies");
    // Same services and servers (order of services may differ: -S sorts).
    assert_eq!(again.services.len(), original.services.len());
    for svc in &original.services {
        let back = again.service(&svc.key).expect("service restored");
        let mut a = svc.clone();
        let mut b = back.clone();
        a.dests.sort_by_key(|d| (d.addr, d.port));
        b.dests.sort_by_key(|d| (d.addr, d.port));
        assert_eq!(a, b);
    }
    // And saving again gives the same text.
    assert_eq!(save(&again), text);
}

#[test]
fn save_drops_thresholds_like_ipvsadm() {
    let cfg = open_cfg(
        "-A -t 192.0.2.10:80 -s rr
         -a -t 192.0.2.10:80 -r 203.0.113.1 -m -x 10 -y 5",
    );
    assert_eq!(
        save(&cfg),
        "-A -t 192.0.2.10:80 -s rr\n-a -t 192.0.2.10:80 -r 203.0.113.1:80 -m -w 1\n"
    );
}

// ---------------------------------------------------------------- execute

#[test]
fn execute_runs_the_whole_flow() {
    let mut cfg = Config::new();
    let run = |cfg: &mut Config, line: &str, stdin: Option<&str>| {
        execute_command(cfg, &ok(line), stdin, &NoCounters, &OPEN)
    };
    let out = run(&mut cfg, "-R", Some(GOLDEN_SCRIPT)).expect("restore");
    assert!(matches!(out.applied, Applied::Batch(ref v) if v.len() == 5));
    assert_eq!(
        run(&mut cfg, "-S -n", None).expect("save").output,
        save(&cfg)
    );
    assert!(run(&mut cfg, "-h", None)
        .expect("help")
        .output
        .contains("Usage:"));
    assert!(run(&mut cfg, "-v", None)
        .expect("version")
        .output
        .starts_with("uvsadm"));
    assert_eq!(run(&mut cfg, "-R", None), Err(CtlError::RestoreNeedsInput));
    let e = run(&mut cfg, "-R", Some("-C\n-A -t 192.0.2.1:80 -s nope\n")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 2: Scheduler or persistence engine not found"
    );
    assert_eq!(cfg.services.len(), 3, "failed -R must not clear");
    let out = run(&mut cfg, "-D -f 259", None).expect("delete");
    assert_eq!(
        out.applied,
        Applied::ServiceDeleted(SvcKey::Fwmark {
            mark: 259,
            family: Family::V4
        })
    );
    assert_eq!(out.output, "");
    // The argv entry point parses for itself.
    let e = execute(&mut cfg, &words("-A -t 192.0.2.1:x"), None, &NoCounters).unwrap_err();
    assert_eq!(
        e.to_string(),
        "illegal virtual server address[:port] specified"
    );
}

// ------------------------------------------------------------ formatting

#[test]
fn ipv6_text_matches_inet_ntop() {
    let f = |s: &str| ntop6(&s.parse::<Ipv6Addr>().expect("literal"));
    assert_eq!(f("::"), "::");
    assert_eq!(f("::1"), "::1");
    assert_eq!(f("2001:db8::1"), "2001:db8::1");
    assert_eq!(f("2001:db8:0:0:1:0:0:1"), "2001:db8::1:0:0:1");
    assert_eq!(f("2001:db8:0:1:1:1:1:1"), "2001:db8:0:1:1:1:1:1");
    assert_eq!(f("1:0:0:2:0:0:0:3"), "1:0:0:2::3");
    assert_eq!(f("1::"), "1::");
    assert_eq!(f("::ffff:192.0.2.1"), "::ffff:192.0.2.1");
    // glibc keeps the deprecated IPv4-compatible form dotted; Rust does not.
    assert_eq!(f("::192.0.2.1"), "::192.0.2.1");
    assert_eq!(f("::0.0.1.2"), "::102");
    assert_eq!(f("fe80::aBc"), "fe80::abc");
    assert_eq!(addr_port(v6("2001:db8::1"), 80), "[2001:db8::1]:80");
    assert_eq!(addr_port(v4("192.0.2.1"), 0), "192.0.2.1:0");
}

#[test]
fn long_names_equal_short_names() {
    let pairs = [
        ("-A -t 192.0.2.1:80 -s rr -p 5 -M 255.255.0.0 -b flag-1", "--add-service --tcp-service 192.0.2.1:80 --scheduler rr --persistent 5 --netmask 255.255.0.0 --sched-flags flag-1"),
        ("-E -u 192.0.2.1:53 -o", "--edit-service --udp-service 192.0.2.1:53 --ops"),
        ("-D -f 3 -6", "--delete-service --fwmark-service 3 --ipv6"),
        ("-a -t 192.0.2.1:80 -r 203.0.113.1:81 -m -w 2 -x 9 -y 4", "--add-server --tcp-service 192.0.2.1:80 --real-server 203.0.113.1:81 --masquerading --weight 2 --u-threshold 9 --l-threshold 4"),
        ("-e -t 192.0.2.1:80 -r 203.0.113.1 -g", "--edit-server -t 192.0.2.1:80 --real-server=203.0.113.1 --gatewaying"),
        ("-a -t 192.0.2.1:80 -r 203.0.113.1 -i", "-a -t 192.0.2.1:80 -r 203.0.113.1 --ipip"),
        ("-d -t 192.0.2.1:80 -r 203.0.113.1", "--delete-server -t 192.0.2.1:80 -r 203.0.113.1"),
        ("-L -n -c", "--list --numeric --connection"),
        ("-L -X", "-L --exact"),
        ("-S -n", "--save --numeric"),
        ("-R", "--restore"),
        ("-Z", "--zero"),
        ("-C", "--clear"),
    ];
    for (short, long) in pairs {
        assert_eq!(ok(short), ok(long), "{short} vs {long}");
    }
}

/// Issue 2's quiesce step: as with ipvsadm, -e replaces every attribute,
/// so the forwarding method must be repeated; without -m it means -g,
/// which today's gate refuses loudly instead of silently switching.
#[test]
fn quiesce_with_edit_server() {
    let mut cfg = open_cfg(
        "-A -t 192.0.2.10:80 -s rr
         -a -t 192.0.2.10:80 -r 203.0.113.11 -m -w 3",
    );
    // -e replaces every attribute: without -m the server becomes -g.
    let mut dr = cfg.clone();
    dr.apply(&ok("-e -t 192.0.2.10:80 -r 203.0.113.11 -w 0"))
        .expect("edit");
    assert_eq!(dr.services[0].dests[0].fwd, FwdMethod::Route);
    assert!(cfg
        .apply(&ok("-e -t 192.0.2.10:80 -r 203.0.113.11 -m -w 0"))
        .is_ok());
    let out = list(&cfg, &list_opts("-L -n"), &NoCounters).expect("listing");
    assert!(
        out.ends_with("  -> 203.0.113.11:80              Masq    0      0          0         \n")
    );
}

#[test]
fn execute_accepts_a_closure_for_counters() {
    let mut cfg = open_cfg(GOLDEN_SCRIPT);
    let out = execute_command(
        &mut cfg,
        &ok("-L -n -t 192.0.2.10:80"),
        None,
        &golden_counters,
        &OPEN,
    )
    .expect("list");
    assert!(out
        .output
        .contains("  -> 203.0.113.11:80              Masq    1      0          5         \n"));
    let zero = |_: &SvcKey, _: &DestConfig| DestCounters::default();
    let out = execute(&mut cfg, &words("-L --timeout"), None, &zero).expect("timeout");
    assert_eq!(out.output, "Timeout (tcp tcpfin udp): 900 120 300\n");
}

// ------------------------------------------------ indexed table and undo

fn keys_in_order(cfg: &Config) -> Vec<u16> {
    cfg.services.iter().map(|s| s.key.port()).collect()
}

#[test]
fn the_table_keeps_insertion_order_through_deletes_and_edits() {
    let mut cfg = open_cfg(
        "-A -t 192.0.2.1:30\n-A -t 192.0.2.1:10\n-A -t 192.0.2.1:20\n-A -t 192.0.2.1:40\n",
    );
    apply_open(&mut cfg, "-D -t 192.0.2.1:10").unwrap();
    apply_open(&mut cfg, "-E -t 192.0.2.1:20 -s rr").unwrap();
    apply_open(&mut cfg, "-A -t 192.0.2.1:10").unwrap();
    assert_eq!(keys_in_order(&cfg), [30, 20, 40, 10]);
    assert_eq!(cfg.services.len(), 4);
    assert_eq!(cfg.service(&tcp("192.0.2.1", 20)).unwrap().sched, "rr");
    let nosort = format::list(&cfg, &list_opts("-L -n --nosort"), &NoCounters).unwrap();
    let at = |p: &str| nosort.find(p).unwrap();
    assert!(at(":30") < at(":20") && at(":20") < at(":40") && at(":40") < at(":10"));
}

#[test]
fn undo_restores_exactly_what_each_command_changed() {
    let base = "-A -t 192.0.2.1:80 -s rr\n-a -t 192.0.2.1:80 -r 203.0.113.1:80 -m\n\
                -a -t 192.0.2.1:80 -r 203.0.113.2:80 -m -w 3\n-A -t 192.0.2.2:80\n\
                -A -u 192.0.2.3:53\n--set 10 20 30\n";
    let lines = [
        "-A -t 192.0.2.9:80",
        "-E -t 192.0.2.1:80 -s wlc -p 60",
        "-D -t 192.0.2.1:80",
        "-D -t 192.0.2.2:80",
        "-C",
        "-a -t 192.0.2.1:80 -r 203.0.113.3:80 -m",
        "-e -t 192.0.2.1:80 -r 203.0.113.1:80 -m -w 7",
        "-d -t 192.0.2.1:80 -r 203.0.113.1:80",
        "--set 0 99 0",
    ];
    for line in lines {
        let mut cfg = open_cfg(base);
        let before = cfg.clone();
        let mut undo = Undo::new();
        cfg.apply_logged(&ok(line), &OPEN, &mut undo).unwrap();
        assert_ne!(cfg, before, "{line} changed something");
        cfg.undo(undo);
        assert_eq!(cfg, before, "{line} undone");
        assert_eq!(format::save(&cfg), format::save(&before));
        // Adding after the undo appends at the end, as before it.
        apply_open(&mut cfg, "-A -t 192.0.2.200:1").unwrap();
        assert_eq!(
            cfg.services.iter().last().unwrap().key,
            tcp("192.0.2.200", 1)
        );
    }
    // A sequence undone at once.
    let mut cfg = open_cfg(base);
    let before = cfg.clone();
    let mut undo = Undo::new();
    for line in lines {
        let _ = cfg.apply_logged(&ok(line), &OPEN, &mut undo);
    }
    cfg.undo(undo);
    assert_eq!(cfg, before);
    assert_eq!(keys_in_order(&cfg), [80, 80, 53]);
}

#[test]
fn a_failed_command_records_nothing_and_restore_logged_is_all_or_nothing() {
    let mut cfg = open_cfg("-A -t 192.0.2.1:80\n");
    let before = cfg.clone();
    let mut undo = Undo::new();
    assert!(cfg
        .apply_logged(&ok("-A -t 192.0.2.1:80"), &OPEN, &mut undo)
        .is_err());
    assert!(undo.is_empty());
    let bad = "-A -t 192.0.2.2:80\n-D -t 192.0.2.1:80\n-a -t 192.0.2.7:80 -r 203.0.113.1\n";
    assert!(cfg.restore_logged(bad, &OPEN, &mut undo).is_err());
    assert!(undo.is_empty());
    assert_eq!(cfg, before);
    // A good batch can be backed out later (the runtime refused it).
    let good = "-C\n-A -t 192.0.2.2:80\n-A -t 192.0.2.3:80\n";
    cfg.restore_logged(good, &OPEN, &mut undo).unwrap();
    assert_eq!(keys_in_order(&cfg), [80, 80]);
    cfg.undo(undo);
    assert_eq!(cfg, before);
}

#[test]
fn a_large_restore_and_its_failure_cost_no_copy() {
    let mut script = String::new();
    for i in 0..5000u32 {
        script += &format!(
            "-A -t 10.{}.{}.{}:80 -s rr\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        );
    }
    let mut cfg = Config::new();
    cfg.restore(&script).unwrap();
    assert_eq!(cfg.services.len(), 5000);
    let first = cfg.services.iter().next().unwrap().key;
    assert_eq!(first, tcp("10.0.0.0", 80));
    let before = cfg.clone();
    // A second batch whose last line fails leaves the first batch alone.
    let mut more: String = (0..1000u32)
        .map(|i| format!("-A -t 10.1.{}.{}:80\n", i >> 8, i & 255))
        .collect();
    more += "-D -t 10.0.0.7:80\n-A -t 10.0.0.0:80\n";
    let e = cfg.restore(&more).unwrap_err();
    assert_eq!(e.line, 1002);
    assert_eq!(cfg, before);
}
