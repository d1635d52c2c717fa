//! Names in commands and listings, with a table instead of the system.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::control::ctl::{list, parse, save, Config, NoCounters};

struct Table {
    hosts: HashMap<&'static str, Ipv4Addr>,
    addrs: HashMap<IpAddr, &'static str>,
}

fn table() -> Table {
    let mut hosts = HashMap::new();
    hosts.insert("www", Ipv4Addr::new(192, 0, 2, 10));
    hosts.insert("rs1", Ipv4Addr::new(203, 0, 113, 11));
    let mut addrs = HashMap::new();
    addrs.insert("192.0.2.10".parse().unwrap(), "www.example.org");
    addrs.insert("203.0.113.11".parse().unwrap(), "rs1");
    addrs.insert(
        "203.0.113.12".parse().unwrap(),
        "a-very-long-real-server-name.example.org",
    );
    addrs.insert("2001:db8::10".parse().unwrap(), "six");
    Table { hosts, addrs }
}

impl Names for Table {
    fn host_v4(&self, name: &str) -> Option<Ipv4Addr> {
        self.hosts.get(name).copied()
    }
    fn port(&self, name: &str, proto: Proto) -> Option<u16> {
        match (name, proto) {
            ("http" | "www", Proto::Tcp) => Some(80),
            ("domain", Proto::Tcp | Proto::Udp) => Some(53),
            _ => None,
        }
    }
    fn host_of(&self, addr: IpAddr) -> Option<String> {
        self.addrs.get(&addr).map(|s| s.to_string())
    }
    fn service_of(&self, port: u16, proto: Proto) -> Option<String> {
        match (port, proto) {
            (80, Proto::Tcp) => Some("http".into()),
            (53, _) => Some("domain".into()),
            _ => None,
        }
    }
}

fn w(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

#[test]
fn commands_get_numbers_for_names() {
    let t = table();
    let r = |s: &str| resolve(&w(s), &t).join(" ");
    assert_eq!(r("-A -t www:http -s rr"), "-A -t 192.0.2.10:80 -s rr");
    assert_eq!(
        r("-a -t www:http -r rs1:www -m"),
        "-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m"
    );
    // The server's port is named for the service's protocol, wherever -r is.
    assert_eq!(
        r("-a -r rs1:domain -u www:domain -m"),
        "-a -r 203.0.113.11:53 -u 192.0.2.10:53 -m"
    );
    assert_eq!(r("-A -twww:http"), "-A -t192.0.2.10:80");
    assert_eq!(
        r("-A --tcp-service=www:80"),
        "-A --tcp-service=192.0.2.10:80"
    );
    assert_eq!(r("uvsadm -D -t www"), "uvsadm -D -t 192.0.2.10");
    assert_eq!(r("-A -t [2001:db8::1]:http"), "-A -t [2001:db8::1]:80");
    // Unknown names, wrong protocols and numbers stay as they are.
    for same in [
        "-A -t nowhere:80",
        "-A -u www:http",
        "-A -t 192.0.2.1:80 -s rr",
        "-A -t [2001:db8::1]",
        "-L -n",
    ] {
        assert_eq!(r(same), same);
    }
    assert_eq!(
        resolve_script("# c\n\n-A -t www:http\n", &t),
        "# c\n\n-A -t 192.0.2.10:80\n"
    );
}

fn cfg(script: &str) -> Config {
    let mut c = Config::new();
    c.restore(script).expect("script");
    c
}

#[test]
fn listings_print_names_in_ipvsadm_s_columns() {
    let t = table();
    let c = cfg("-A -t 192.0.2.10:80 -s rr
-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m
-a -t 192.0.2.10:80 -r 203.0.113.12:8080 -m -w 3
-A -u 192.0.2.10:53 -s rr
-A -t [2001:db8::10]:443 -s rr
-a -t [2001:db8::10]:443 -r [2001:db8::11]:443 -m");
    let cmd = parse(&w("-L")).unwrap();
    let Command::List(o) = &cmd else { panic!() };
    let numeric = list(&c, o, &NoCounters).unwrap();
    let named = rename(&cmd, &numeric, &t);
    let want = concat!(
        "IP Virtual Server version 1.2.1 (size=4096)\n",
        "Prot LocalAddress:Port Scheduler Flags\n",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        "TCP  www.example.org:http rr\n",
        "  -> rs1:http                     Masq    1      0          0         \n",
        "  -> a-very-long-real-server-name Masq    3      0          0         \n",
        "UDP  www.example.org:domain rr\n",
        "TCP  [six]:443 rr\n",
        "  -> [2001:db8::11]:443           Masq    1      0          0         \n",
    );
    assert_eq!(named, want);
    // With counters the service column is 33 wide, names cut there.
    let cmd = parse(&w("-L --stats")).unwrap();
    let Command::List(o) = &cmd else { panic!() };
    let named = rename(&cmd, &list(&c, o, &NoCounters).unwrap(), &t);
    assert!(
        named.contains(&format!(
            "\n{:<33}{:>9}{:>9}",
            "TCP  www.example.org:http", 0, 0
        )),
        "{named}"
    );
    // -n, --timeout: untouched.
    let cmd = parse(&w("-L -n")).unwrap();
    assert_eq!(rename(&cmd, &numeric, &t), numeric);
}

#[test]
fn save_prints_names() {
    let t = table();
    let c = cfg("-A -t 192.0.2.10:80 -s rr -p 60
-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m
-A -f 3 -s rr
-a -f 3 -r 203.0.113.11 -g");
    let named = rename(&parse(&w("-S")).unwrap(), &save(&c), &t);
    assert_eq!(
        named,
        concat!(
            "-A -t www.example.org:http -s rr -p 60\n",
            "-a -t www.example.org:http -r rs1:http -m -w 1\n",
            "-A -f 3 -s rr\n",
            "-a -f 3 -r rs1:0 -g -w 1\n",
        )
    );
    assert_eq!(
        rename(&parse(&w("-S -n")).unwrap(), &save(&c), &t),
        save(&c)
    );
}

#[test]
fn connection_entries_print_names() {
    use crate::control::ctl::{connections, ConnRow};
    let t = table();
    let row = ConnRow {
        proto: Proto::Tcp,
        expire_ms: 61_000,
        state: "ESTABLISHED".into(),
        client: "198.51.100.10:40000".parse().unwrap(),
        virt: "192.0.2.10:80".parse().unwrap(),
        dest: "203.0.113.11:80".parse().unwrap(),
    };
    let cmd = parse(&w("-L -c")).unwrap();
    let named = rename(&cmd, &connections(&[row]), &t);
    let want = format!(
        "IPVS connection entries\n\
         pro expire {:<11} {:<18} {:<18} destination\n\
         {:<3} {:<6} {:<11} {:<18} {:<18} {}\n",
        "state",
        "source",
        "virtual",
        "TCP",
        "01:01",
        "ESTABLISHED",
        "198.51.100.10:40000",
        "www.example.org:http",
        "rs1:http"
    );
    assert_eq!(named, want);
}
