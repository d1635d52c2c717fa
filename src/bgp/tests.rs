use std::io::BufReader;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::bird::read_reply;
use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(addr: &str, port: u16) -> ctl::SvcKey {
    ctl::SvcKey::Addr {
        proto: ctl::Proto::Tcp,
        addr: ip(addr),
        port,
    }
}

fn cfg() -> BgpConfig {
    BgpConfig {
        peers: vec![ip("198.51.100.129")],
        local_as: 65010,
        peer_as: 65000,
        hold_time: 3,
        router_id: None,
        local_address: None,
        bird: PathBuf::from("/usr/sbin/bird"),
        runtime_dir: PathBuf::from("/run/uvs/uvs.bird"),
    }
}

#[test]
fn a_vip_stays_while_any_service_holds_it() {
    let mut s = VipSet::default();
    assert!(s.set(tcp("192.0.2.10", 80), Some(ip("192.0.2.10"))));
    // A second service on the same VIP: no change to announce.
    assert!(!s.set(tcp("192.0.2.10", 443), Some(ip("192.0.2.10"))));
    assert!(!s.set(tcp("192.0.2.10", 443), Some(ip("192.0.2.10"))));
    assert!(s.set(tcp("192.0.2.20", 80), Some(ip("192.0.2.20"))));
    assert_eq!(s.vips(), vec![ip("192.0.2.10"), ip("192.0.2.20")]);
    assert!(!s.set(tcp("192.0.2.10", 80), None));
    assert_eq!(s.len(), 2);
    assert!(s.set(tcp("192.0.2.10", 443), None));
    assert!(!s.set(tcp("192.0.2.10", 443), None));
    assert!(s.set(tcp("192.0.2.20", 80), None));
    assert!(s.is_empty());
}

#[test]
fn only_services_with_a_weighted_server_are_announced() {
    let mut c = ctl::Config::default();
    c.restore(
        "-A -t 192.0.2.10:80 -s mh\n\
         -a -t 192.0.2.10:80 -r 203.0.113.11:80 -g -w 0\n\
         -A -t 192.0.2.20:80 -s rr\n\
         -a -t 192.0.2.20:80 -r 203.0.113.11:80 -g -w 0\n\
         -a -t 192.0.2.20:80 -r 203.0.113.12:80 -g -w 2\n\
         -A -u 192.0.2.30:53 -s rr\n\
         -A -f 7 -s rr\n\
         -a -f 7 -r 203.0.113.11:0 -g\n",
    )
    .unwrap();
    let got: Vec<_> = c.services.iter().filter_map(announced_vip).collect();
    assert_eq!(got, vec![ip("192.0.2.20")]);
}

#[test]
fn renders_one_blackhole_per_vip_and_one_session_per_peer() {
    let mut c = cfg();
    c.peers.push(ip("2001:db8:1::1"));
    c.router_id = Some("198.51.100.130".parse().unwrap());
    let text = render(
        &c,
        &[ip("192.0.2.10"), ip("192.0.2.20"), ip("2001:db8:f::10")],
    );
    let want = "\
# Written by uvs (uvs run --bgp-peer); rewritten on every change.
log stderr all;
router id 198.51.100.130;
protocol device { scan time 10; }
protocol static uvs_vips4 {
  ipv4;
  route 192.0.2.10/32 blackhole;
  route 192.0.2.20/32 blackhole;
}
protocol static uvs_vips6 {
  ipv6;
  route 2001:db8:f::10/128 blackhole;
}
protocol bgp uvs_peer1 {
  local as 65010;
  neighbor 198.51.100.129 as 65000;
  hold time 3;
  keepalive time 1;
  connect retry time 5;
  error wait time 1, 10;
  graceful restart off;
  long lived graceful restart off;
  ipv4 { import none; export where proto = \"uvs_vips4\"; };
}
protocol bgp uvs_peer2 {
  local as 65010;
  neighbor 2001:db8:1::1 as 65000;
  hold time 3;
  keepalive time 1;
  connect retry time 5;
  error wait time 1, 10;
  graceful restart off;
  long lived graceful restart off;
  ipv6 { import none; export where proto = \"uvs_vips6\"; };
}
";
    assert_eq!(text, want);
    // Withdrawn: the static protocols stay, empty.
    let empty = render(&cfg(), &[]);
    assert!(empty.contains("protocol static uvs_vips4 {\n  ipv4;\n}\n"));
    assert!(!empty.contains("route "));
}

#[test]
fn local_address_goes_to_sessions_of_its_family() {
    let mut c = cfg();
    c.local_address = Some(ip("198.51.100.130"));
    assert!(render(&c, &[]).contains("  local 198.51.100.130 as 65010;\n"));
    c.local_address = Some(ip("2001:db8::1"));
    assert!(render(&c, &[]).contains("  local as 65010;\n"));
}

#[test]
fn options_are_checked() {
    let control = Path::new("/run/uvs/x.sock");
    assert!(BgpArgs::default().config(control).unwrap().is_none());
    let err = |a: BgpArgs| a.config(control).unwrap_err().to_string();
    let base = BgpArgs {
        peers: vec![ip("198.51.100.129")],
        local_as: Some(65010),
        peer_as: Some(65000),
        hold_time: 9,
        bird: Some(PathBuf::from("/nonexistent/bird")),
        ..Default::default()
    };
    assert!(err(BgpArgs {
        local_as: Some(1),
        peers: vec![],
        ..base.clone()
    })
    .contains("need --bgp-peer"));
    assert!(err(BgpArgs {
        peer_as: None,
        ..base.clone()
    })
    .contains("--bgp-peer-as"));
    assert!(err(BgpArgs {
        hold_time: 2,
        ..base.clone()
    })
    .contains("3..65535"));
    assert!(err(BgpArgs {
        peers: vec![ip("198.51.100.129"), ip("198.51.100.129")],
        ..base.clone()
    })
    .contains("given twice"));
    let e = err(base.clone());
    assert!(e.starts_with("--bird /nonexistent/bird: "), "{e}");
    // Not BIRD: refused by its --version.
    let e = err(BgpArgs {
        bird: Some(PathBuf::from("/bin/true")),
        ..base.clone()
    });
    assert!(e.contains("not BIRD 2"), "{e}");
}

#[test]
fn runtime_dir_defaults_next_to_the_control_socket() {
    let Some(bird) = super::find_in_path("bird") else {
        eprintln!("skipping: no bird in PATH");
        return;
    };
    let a = BgpArgs {
        peers: vec![ip("198.51.100.129")],
        local_as: Some(65010),
        peer_as: Some(65000),
        hold_time: 9,
        bird: Some(bird),
        ..Default::default()
    };
    let c = a.config(Path::new("/run/uvs/lb1.sock")).unwrap().unwrap();
    assert_eq!(c.runtime_dir, PathBuf::from("/run/uvs/lb1.bird"));
}

#[test]
fn control_replies_parse() {
    let mut r = BufReader::new(&b"0001 BIRD 2.0.12 ready.\n"[..]);
    assert_eq!(read_reply(&mut r).unwrap(), "BIRD 2.0.12 ready.");
    let mut r =
        BufReader::new(&b"0002-Reading configuration from /x/bird.conf\n0003 Reconfigured\n"[..]);
    assert_eq!(
        read_reply(&mut r).unwrap(),
        "Reading configuration from /x/bird.conf\nReconfigured"
    );
    let mut r = BufReader::new(
        &b"0002-Reading configuration from /x/bird.conf\n8002 /x/bird.conf:3:1 syntax error\n"[..],
    );
    assert!(read_reply(&mut r).unwrap_err().ends_with("syntax error"));
    let mut r = BufReader::new(
        &b"1000-BIRD 2.0.12\n Router ID is 1.2.3.4\n0013 Daemon is up and running\n"[..],
    );
    assert_eq!(
        read_reply(&mut r).unwrap(),
        "BIRD 2.0.12\nRouter ID is 1.2.3.4\nDaemon is up and running"
    );
    let mut r = BufReader::new(&b"0002-half"[..]);
    assert!(read_reply(&mut r).is_err());
}
