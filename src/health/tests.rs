//! The keepalived.conf reader, the health state machine and the probes
//! (against listeners on 127.0.0.1 in the test process).

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use super::conf::*;
use super::*;
use crate::control::ctl::{self, Proto};

const GOOD: &str = r#"
! Configuration File for keepalived
global_defs {
   router_id LVS_DEVEL
}
vrrp_instance VI_1 {
    state MASTER
    virtual_ipaddress {
        192.0.2.10
    }
}
virtual_server 192.0.2.10 80 {
    delay_loop 1.5
    lb_algo wrr
    lb_kind NAT
    persistence_timeout 50
    protocol TCP
    quorum 2
    hysteresis 0
    sorry_server 203.0.113.99 80
    virtualhost www.example.com

    real_server 203.0.113.11 80 {
        weight 3
        TCP_CHECK {
            connect_timeout 0.5
            connect_port 8080
            retry 2
            delay_before_retry 0.2
        }
    }
    real_server 203.0.113.12 80
    {
        weight 1
        inhibit_on_failure
        HTTP_GET {
            url {
                path /health
                status_code 200 }
            url {
                path /other
                status_code 200-204 301
                digest 0cc175b9c0f1b6a831c399e269772661
            }
            connect_timeout 2
        }
        MISC_CHECK {
            misc_path "/bin/true --flag"
            misc_dynamic
        }
        notify_down /bin/false
    }
}
virtual_server 192.0.2.10 53 {
    protocol UDP
    lb_kind DR
    real_server 203.0.113.11 53 {
        UDP_CHECK {
            payload 6869
            require_reply
        }
    }
}
"#;

fn parse(s: &str) -> Result<KaConfig, ParseError> {
    parse_text("/etc/keepalived/keepalived.conf", s)
}

fn key(addr: &str, port: u16, proto: Proto) -> ctl::SvcKey {
    ctl::SvcKey::Addr {
        proto,
        addr: addr.parse().unwrap(),
        port,
    }
}

#[test]
fn reads_virtual_servers_real_servers_and_checkers() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.services.len(), 2);
    let v = &c.services[0];
    assert_eq!(v.key, key("192.0.2.10", 80, Proto::Tcp));
    assert_eq!(v.at.to_string(), "/etc/keepalived/keepalived.conf:12");
    assert_eq!(
        (v.sched.as_str(), v.fwd, v.persistent, v.quorum),
        ("wrr", uvs_sched::FwdMethod::Masq, Some(50), 2)
    );
    assert_eq!(v.sorry, Some(("203.0.113.99".parse().unwrap(), 80)));
    let r1 = &v.real[0];
    assert_eq!((r1.weight, r1.inhibit), (3, false));
    let t = &r1.checks[0];
    assert_eq!(t.kind, CheckKind::Tcp);
    assert_eq!(
        (t.connect_port, t.timeout, t.retry, t.delay_before_retry),
        (
            Some(8080),
            Duration::from_millis(500),
            2,
            Duration::from_millis(200)
        )
    );
    assert_eq!(t.delay_loop, Duration::from_millis(1500), "inherited");
    let r2 = &v.real[1];
    assert_eq!((r2.weight, r2.inhibit), (1, true));
    match &r2.checks[0].kind {
        CheckKind::Http(urls) => {
            assert_eq!(urls[0].path, "/health");
            assert!(urls[0].accepts(200) && !urls[0].accepts(201));
            assert!(urls[1].accepts(203) && urls[1].accepts(301) && !urls[1].accepts(302));
            assert_eq!(
                urls[1].digest.as_deref(),
                Some("0cc175b9c0f1b6a831c399e269772661")
            );
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(r2.checks[0].timeout, Duration::from_secs(2));
    assert_eq!(r2.checks[0].retry, DEFAULT_RETRY);
    assert_eq!(
        r2.checks[1].kind,
        CheckKind::Misc {
            command: "/bin/true --flag".into(),
            dynamic: true
        }
    );
    // misc_timeout defaults to delay_loop.
    assert_eq!(r2.checks[1].timeout, Duration::from_millis(1500));
    let u = &c.services[1];
    assert_eq!(u.key, key("192.0.2.10", 53, Proto::Udp));
    assert_eq!(u.fwd, uvs_sched::FwdMethod::Route);
    assert_eq!(u.real[0].checks[0].delay_loop, DEFAULT_DELAY_LOOP);
    assert_eq!(
        u.real[0].checks[0].kind,
        CheckKind::Udp {
            payload: b"hi".to_vec(),
            require_reply: Some(Vec::new())
        }
    );
}

#[test]
fn sections_and_keywords_uvs_does_not_run_are_warned_with_their_line() {
    let c = parse(GOOD).unwrap();
    let f = "/etc/keepalived/keepalived.conf";
    assert_eq!(
        c.warnings,
        vec![
            format!("{f}:3: section 'global_defs' is not implemented by uvs; ignored"),
            format!("{f}:6: section 'vrrp_instance' is not implemented by uvs; ignored"),
            format!("{f}:21: 'virtualhost' in virtual_server is not implemented by uvs; ignored"),
            format!("{f}:51: 'notify_down' in real_server is not implemented by uvs; ignored"),
        ]
    );
}

#[test]
fn errors_name_file_and_line() {
    let f = "/etc/keepalived/keepalived.conf";
    for (text, line, what) in [
        ("virtual_server 192.0.2.10 80 {\n  delay_loop x\n}\n", 2, "not a valid number"),
        ("virtual_server 192.0.2.10 80 {\n  real_server 1.2.3 80 {\n  }\n}\n", 2, "not an IP address"),
        ("virtual_server 192.0.2.10 80 {\n  lb_kind FOO\n}\n", 2, "expected NAT, DR or TUN"),
        ("\nvirtual_server 192.0.2.10 80 {\n  real_server 203.0.113.1 80 {\n", 3, "never closed"),
        ("}\n", 1, "without a matching"),
        (
            "virtual_server 192.0.2.10 80 {\n real_server 203.0.113.1 80 {\n  weight 70000\n }\n}\n",
            3,
            "out of range",
        ),
        (
            "virtual_server 192.0.2.10 80 {\n real_server 203.0.113.1 80 {\n  HTTP_GET {\n  }\n }\n}\n",
            3,
            "at least one url",
        ),
        (
            "virtual_server 192.0.2.10 80 {\n}\nvirtual_server 192.0.2.10 80 {\n}\n",
            3,
            "given twice",
        ),
        ("include /nonexistent/uvs-health-x.conf\n", 1, "no such file"),
        ("virtual_server 192.0.2.10 80\n", 1, "needs a { } block"),
    ] {
        let e = parse(text).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), (f, line), "{text:?}: {e}");
        assert!(e.to_string().contains(what), "{e}");
        assert!(e.to_string().starts_with(&format!("{f}:{line}: ")), "{e}");
    }
}

#[test]
fn includes_and_groups() {
    let dir = std::env::temp_dir().join(format!("uvs-health-inc-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    std::fs::write(
        dir.join("conf.d/a.conf"),
        "virtual_server group web {\n real_server 203.0.113.11 80 {\n  TCP_CHECK {\n  }\n }\n}\n",
    )
    .unwrap();
    std::fs::write(dir.join("conf.d/b.conf"), "bogus_section {\n}\n").unwrap();
    let main = dir.join("keepalived.conf");
    std::fs::write(
        &main,
        "virtual_server_group web {\n 192.0.2.10-11 80\n 2001:db8::1 80\n}\ninclude conf.d/*.conf\n",
    )
    .unwrap();
    let c = parse_file(&main).unwrap();
    let keys: Vec<_> = c.services.iter().map(|v| key_name(&v.key)).collect();
    assert_eq!(
        keys,
        [
            "tcp/192.0.2.10:80",
            "tcp/192.0.2.11:80",
            "tcp/[2001:db8::1]:80"
        ]
    );
    let b = dir.join("conf.d/b.conf").display().to_string();
    assert_eq!(
        c.warnings,
        [format!(
            "{b}:1: section 'bogus_section' is not implemented by uvs; ignored"
        )]
    );
    let a = dir.join("conf.d/a.conf").display().to_string();
    assert_eq!(c.services[0].at.to_string(), format!("{a}:1"));
    // An error in an included file names that file.
    std::fs::write(dir.join("conf.d/b.conf"), "virtual_server x 80 {\n}\n").unwrap();
    let e = parse_file(&main).unwrap_err();
    assert_eq!((e.file.as_str(), e.line), (b.as_str(), 1), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

const TWO: &str = "
virtual_server 192.0.2.10 80 {
    delay_loop 1
    lb_algo rr
    real_server 203.0.113.11 80 {
        TCP_CHECK {
            retry 1
            delay_before_retry 0.2
        }
    }
    real_server 203.0.113.12 80 {
        inhibit_on_failure
        TCP_CHECK {
            retry 0
        }
    }
}
";

fn listing(st: &mut State) -> String {
    let cfg = build(&st.conf().clone(), &st.commands(), ctl::Timeouts::default()).unwrap();
    ctl::save(&cfg)
}

fn ids(st: &State) -> Vec<state::CheckerId> {
    let mut jobs = Vec::new();
    let mut st = st.clone();
    st.due(Instant::now() + Duration::from_secs(3600), &mut jobs);
    let mut v: Vec<_> = jobs.iter().map(|j| j.id).collect();
    v.sort_by_key(|id| (id.2, id.1));
    v
}

fn serial(st: &State, id: state::CheckerId) -> u64 {
    let mut jobs = Vec::new();
    st.clone()
        .due(Instant::now() + Duration::from_secs(3600), &mut jobs);
    jobs.iter().find(|j| j.id == id).unwrap().serial
}

#[test]
fn retry_then_down_then_up_with_and_without_inhibit() {
    let mut st = State::new(parse(TWO).unwrap());
    let all = listing(&mut st);
    assert!(all.contains("203.0.113.11:80 -m -w 1") && all.contains("203.0.113.12:80 -m -w 1"));
    let [a, b] = ids(&st)[..] else { panic!() };
    let (sa, sb) = (serial(&st, a), serial(&st, b));
    let now = Instant::now();
    let fail = || Err("refused".to_string());
    // rs1 has one retry: the first failure keeps it.
    assert!(!st.record(a, sa, fail(), now));
    assert!(listing(&mut st).contains("203.0.113.11:80"));
    // The second removes it.
    assert!(st.record(a, sa, fail(), now));
    assert!(!listing(&mut st).contains("203.0.113.11:80"));
    // rs2 (no retry, inhibit_on_failure): weight 0 at once.
    assert!(st.record(b, sb, fail(), now));
    assert!(listing(&mut st).contains("-r 203.0.113.12:80 -m -w 0"));
    // A stale result (an older serial) changes nothing.
    assert!(!st.record(b, sb + 100, Ok(None), now));
    // Back on the first success.
    assert!(st.record(a, sa, Ok(None), now));
    assert!(st.record(b, sb, Ok(None), now));
    assert_eq!(listing(&mut st), all);
    let c = st.counters();
    assert_eq!(
        (c[0].3.checks, c[0].3.failures, c[0].3.transitions),
        (3, 2, 2)
    );
    assert!(c[0].3.up && c[1].3.up);
}

#[test]
fn quorum_lost_brings_in_the_sorry_server() {
    let text = "
virtual_server 192.0.2.10 80 {
    quorum 2
    sorry_server 203.0.113.99 80
    real_server 203.0.113.11 80 {
        TCP_CHECK {
            retry 0
        }
    }
    real_server 203.0.113.12 80 {
        inhibit_on_failure
        TCP_CHECK {
            retry 0
        }
    }
}
";
    let mut st = State::new(parse(text).unwrap());
    assert!(!listing(&mut st).contains("203.0.113.99"));
    let [a, b] = ids(&st)[..] else { panic!() };
    assert!(st.record(a, serial(&st, a), Err("x".into()), Instant::now()));
    let l = listing(&mut st);
    assert!(l.contains("203.0.113.99:80 -m -w 1"), "{l}");
    assert!(
        !l.contains("203.0.113.11") && l.contains("203.0.113.12:80 -m -w 0"),
        "{l}"
    );
    assert!(st.record(a, serial(&st, a), Ok(None), Instant::now()));
    let l = listing(&mut st);
    assert!(!l.contains("203.0.113.99"), "{l}");
    let _ = b;
}

#[test]
fn reload_keeps_unchanged_checkers_and_restarts_changed_ones() {
    let mut st = State::new(parse(TWO).unwrap());
    let [a, b] = ids(&st)[..] else { panic!() };
    let now = Instant::now();
    st.record(a, serial(&st, a), Err("x".into()), now);
    st.record(a, serial(&st, a), Err("x".into()), now);
    st.record(b, serial(&st, b), Err("x".into()), now);
    // Same file: both stay down.
    let staged = st.stage(parse(TWO).unwrap());
    assert_eq!(staged.checkers, [2, 0, 0]);
    st.install(staged);
    let l = listing(&mut st);
    assert!(
        !l.contains("203.0.113.11") && l.contains("203.0.113.12:80 -m -w 0"),
        "{l}"
    );
    // rs2's check changes: it starts again, up; rs1 stays down.
    let changed = TWO.replace("            retry 0", "            retry 3");
    let staged = st.stage(parse(&changed).unwrap());
    assert_eq!(staged.checkers, [1, 1, 0], "one kept, one restarted");
    st.install(staged);
    let l = listing(&mut st);
    assert!(
        !l.contains("203.0.113.11") && l.contains("203.0.113.12:80 -m -w 1"),
        "{l}"
    );
}

#[test]
fn only_and_without_split_a_configuration() {
    let mut cfg = ctl::Config::new();
    cfg.restore("-A -t 192.0.2.10:80 -s rr\n-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m\n-A -u 192.0.2.10:53 -s rr\n")
        .unwrap();
    let k = [key("192.0.2.10", 80, Proto::Tcp)];
    assert_eq!(
        ctl::save(&only(&cfg, &k)),
        "-A -t 192.0.2.10:80 -s rr\n-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 1\n"
    );
    assert_eq!(ctl::save(&without(&cfg, &k)), "-A -u 192.0.2.10:53 -s rr\n");
}

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

fn check(kind: CheckKind) -> Check {
    Check {
        kind,
        at: At {
            file: "t".into(),
            line: 1,
        },
        connect_ip: None,
        connect_port: None,
        timeout: Duration::from_secs(2),
        retry: 0,
        delay_before_retry: Duration::from_secs(1),
        delay_loop: Duration::from_secs(1),
    }
}

#[test]
fn tcp_probe_passes_on_a_listener_and_fails_without() {
    let (l, a) = listener();
    assert_eq!(probe::run(&check(CheckKind::Tcp), a), Ok(None));
    drop(l);
    let e = probe::run(&check(CheckKind::Tcp), a).unwrap_err();
    assert!(e.contains("connect"), "{e}");
}

/// Answers each connection with `answer`, `n` times.
fn http_server(answer: &'static str, n: usize) -> (std::thread::JoinHandle<()>, SocketAddr) {
    use std::io::{Read, Write};
    let (l, a) = listener();
    let t = std::thread::spawn(move || {
        for _ in 0..n {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(answer.as_bytes());
        }
    });
    (t, a)
}

fn url(path: &str, status: &[(u16, u16)], digest: Option<&str>) -> Url {
    Url {
        path: path.into(),
        status: status.to_vec(),
        digest: digest.map(String::from),
    }
}

#[test]
fn http_probe_checks_status_and_digest() {
    let ok = "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na";
    let (t, a) = http_server(ok, 4);
    let c = |u: Url| check(CheckKind::Http(vec![u]));
    assert_eq!(probe::run(&c(url("/", &[], None)), a), Ok(None));
    let e = probe::run(&c(url("/", &[(201, 201)], None)), a).unwrap_err();
    assert!(e.contains("status 200"), "{e}");
    let md5_a = "0cc175b9c0f1b6a831c399e269772661";
    assert_eq!(probe::run(&c(url("/", &[], Some(md5_a))), a), Ok(None));
    let e = probe::run(&c(url("/", &[], Some(&"0".repeat(32)))), a).unwrap_err();
    assert!(e.contains("digest"), "{e}");
    t.join().unwrap();
    // A server that never answers: bounded by the timeout.
    let (_l, a) = listener();
    let mut slow = c(url("/", &[], None));
    slow.timeout = Duration::from_millis(300);
    let t0 = Instant::now();
    assert!(probe::run(&slow, a).is_err());
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn misc_probe_follows_the_exit_code_and_is_bounded() {
    let m = |cmd: &str, dynamic| {
        check(CheckKind::Misc {
            command: cmd.into(),
            dynamic,
        })
    };
    let any: SocketAddr = "127.0.0.1:1".parse().unwrap();
    assert_eq!(probe::run(&m("exit 0", false), any), Ok(None));
    assert!(probe::run(&m("exit 1", false), any)
        .unwrap_err()
        .contains("exited with 1"));
    assert!(probe::run(&m("exit 7", false), any).is_err());
    assert_eq!(probe::run(&m("exit 7", true), any), Ok(Some(5)));
    assert!(probe::run(&m("exit 1", true), any).is_err());
    let mut slow = m("sleep 5", false);
    slow.timeout = Duration::from_millis(200);
    let t0 = Instant::now();
    assert!(probe::run(&slow, any).unwrap_err().contains("timed out"));
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn udp_probe_fails_on_port_unreachable() {
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let a = u.local_addr().unwrap();
    let c = |req: Option<Vec<u8>>| {
        let mut c = check(CheckKind::Udp {
            payload: b"hi".to_vec(),
            require_reply: req,
        });
        c.timeout = Duration::from_millis(200);
        c
    };
    // Open and silent: passes unless an answer is required.
    assert_eq!(probe::run(&c(None), a), Ok(None));
    assert!(probe::run(&c(Some(Vec::new())), a).is_err());
    drop(u);
    assert!(probe::run(&c(None), a).is_err());
    let _: IpAddr = a.ip();
}

#[test]
fn counters_reach_stats_text_and_prometheus() {
    let h = Health::new(parse(TWO).unwrap());
    let id = ids(&h.lock())[0];
    let s = serial(&h.lock(), id);
    for _ in 0..2 {
        h.lock().record(id, s, Err("x".into()), Instant::now());
    }
    let mut r = crate::control::registry::Registry::default();
    h.register(&mut r);
    let key = "health.tcp/192.0.2.10:80/203.0.113.11:80";
    let get = |k: &str| r.samples.iter().find(|x| x.key == k).map(|x| x.value);
    assert_eq!(get(&format!("{key}.checks")), Some(2));
    assert_eq!(get(&format!("{key}.failures")), Some(2));
    assert_eq!(get(&format!("{key}.transitions")), Some(1));
    assert_eq!(get(&format!("{key}.up")), Some(0));
    let text = crate::control::metrics::encode(&r);
    assert!(
        text.contains(
            "uvs_health_transitions_total{service=\"tcp/192.0.2.10:80\",server=\"203.0.113.11:80\"} 1"
        ),
        "{text}"
    );
}
