//! The reload diff: only what differs becomes a command, the result equals
//! the file, bad files are refused with their line, filter counters survive.

use std::sync::atomic::Ordering::Relaxed;

use super::*;

fn text(name: &str, t: &str) -> Text {
    Text {
        name: name.into(),
        text: t.into(),
    }
}

fn cfg(t: &str) -> Config {
    Config::from_script(t).unwrap()
}

fn ok(_: &ServiceConfig) -> Result<(), String> {
    Ok(())
}

const BASE: &str = "\
-A -t 192.0.2.10:80 -s rr
-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 1
-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 1
-A -u 192.0.2.10:53 -s wrr
-a -u 192.0.2.10:53 -r 203.0.113.11:53 -m -w 3
";

/// Applies `diff(old, new)` to `old` and checks it then equals `new`
/// (same `-S` output); returns the commands.
fn roundtrip(old: &str, new: &str) -> Vec<Command> {
    let mut running = cfg(old);
    let want = cfg(new);
    let cmds = diff(&running, &want);
    apply(&mut running, &cmds).unwrap();
    assert_eq!(ctl::save(&running), ctl::save(&want));
    assert_eq!(running.timeouts, want.timeouts);
    cmds
}

#[test]
fn same_file_is_no_command() {
    assert!(roundtrip(BASE, BASE).is_empty());
    let p = plan(
        &cfg(BASE),
        &FilterTable::default(),
        &Texts {
            config: Some(text("rules", BASE)),
            filter: None,
            keepalived: None,
        },
        ok,
    )
    .unwrap();
    assert!(p.commands.is_empty());
    assert!(p.summary.is_empty());
    assert_eq!(
        p.summary.to_string(),
        "services +0 -0 ~0, real servers +0 -0 ~0; nothing changed"
    );
}

#[test]
fn one_added_one_removed_one_weight_changed() {
    let new = "\
-A -t 192.0.2.10:80 -s rr
-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 5
-a -t 192.0.2.10:80 -r 203.0.113.13:80 -m -w 1
-A -u 192.0.2.10:53 -s wrr
-a -u 192.0.2.10:53 -r 203.0.113.11:53 -m -w 3
";
    let cmds = roundtrip(BASE, new);
    let svc: SvcKey = SvcKey::Addr {
        proto: ctl::Proto::Tcp,
        addr: "192.0.2.10".parse().unwrap(),
        port: 80,
    };
    assert_eq!(cmds.len(), 3, "{cmds:?}");
    assert!(
        matches!(&cmds[0], Command::DeleteServer { svc: s, addr, port: 80 }
        if *s == svc && addr.to_string() == "203.0.113.11")
    );
    assert!(matches!(&cmds[1], Command::EditServer { dest, .. }
        if dest.addr.to_string() == "203.0.113.12" && dest.weight == 5));
    assert!(matches!(&cmds[2], Command::AddServer { dest, .. }
        if dest.addr.to_string() == "203.0.113.13"));
}

#[test]
fn services_added_removed_and_edited() {
    let new = "\
-A -t 192.0.2.10:80 -s wlc -p 60
-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 1
-a -t 192.0.2.10:80 -r 203.0.113.12:80 -m -w 1
-A -t [2001:db8::10]:443 -s sh -b sh-port
-a -t [2001:db8::10]:443 -r [2001:db8::11]:443 -g
";
    let cmds = roundtrip(BASE, new);
    let kinds: Vec<&str> = cmds
        .iter()
        .map(|c| match c {
            Command::DeleteService(_) => "D",
            Command::EditService(_) => "E",
            Command::AddService(_) => "A",
            Command::AddServer { .. } => "a",
            _ => "?",
        })
        .collect();
    // The UDP service goes, the TCP one is edited (servers untouched), the
    // IPv6 one comes with its server.
    assert_eq!(kinds, ["D", "E", "A", "a"]);
}

#[test]
fn timeouts_follow_the_file() {
    let cmds = roundtrip(BASE, &format!("{BASE}--set 100 20 30\n"));
    assert!(matches!(
        cmds[..],
        [Command::SetTimeouts {
            tcp: 100,
            tcp_fin: 20,
            udp: 30
        }]
    ));
    // Back to the defaults when the line goes.
    let cmds = roundtrip(&format!("{BASE}--set 100 20 30\n"), BASE);
    assert_eq!(cmds.len(), 1);
}

#[test]
fn empty_file_removes_everything_and_back() {
    assert_eq!(roundtrip(BASE, "").len(), 2);
    assert_eq!(roundtrip("", BASE).len(), 5);
}

#[test]
fn forwarding_and_tunnel_changes_are_edits() {
    let old = "-A -t 192.0.2.10:80 -s rr\n-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m\n";
    let new = "-A -t 192.0.2.10:80 -s rr\n\
               -a -t 192.0.2.10:80 -r 203.0.113.11:80 -i --tun-type gue --tun-port 6080\n";
    let cmds = roundtrip(old, new);
    assert!(matches!(cmds[..], [Command::EditServer { .. }]));
}

#[test]
fn bad_line_is_named_and_nothing_planned() {
    let broken =
        "-A -t 192.0.2.10:80 -s rr\n\n-a -t 192.0.2.10:80 -r 203.0.113.11:80 -m -w 99999\n";
    let e = plan(
        &cfg(BASE),
        &FilterTable::default(),
        &Texts {
            config: Some(text("/etc/uvs/rules", broken)),
            filter: None,
            keepalived: None,
        },
        ok,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("/etc/uvs/rules: line 3: "), "{msg}");
    // ipvsadm's own text for the bad weight.
    assert!(msg.contains("illegal weight"), "{msg}");
    // Syntax errors too.
    let e = parse_config(&text("r", "-A -t 192.0.2.10:80\n-Q\n"), ok).unwrap_err();
    assert!(e.to_string().starts_with("r: line 2: "), "{e}");
    // A server for a service the file never defines.
    let e = parse_config(&text("r", "-a -t 192.0.2.10:80 -r 203.0.113.1\n"), ok).unwrap_err();
    assert!(e.to_string().starts_with("r: line 1: "), "{e}");
}

#[test]
fn engine_refusal_names_the_services_line() {
    let t = text("r", "-A -t 192.0.2.1:80\n-A -t 192.0.2.2:80 -s rr\n");
    let e = parse_config(&t, |s| {
        if s.sched == "rr" {
            Err("no rr today".into())
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert_eq!(e.to_string(), "r: line 2: no rr today");
}

#[test]
fn apply_is_all_or_nothing() {
    let mut running = cfg(BASE);
    let before = ctl::save(&running);
    let want = cfg("");
    let mut cmds = diff(
        &running,
        &cfg(BASE.lines().take(3).collect::<Vec<_>>().join("\n").as_str()),
    );
    // A command that must fail after others succeeded.
    cmds.push(Command::DeleteService(SvcKey::Addr {
        proto: ctl::Proto::Sctp,
        addr: "192.0.2.99".parse().unwrap(),
        port: 1,
    }));
    assert!(apply(&mut running, &cmds).is_err());
    assert_eq!(ctl::save(&running), before);
    // And a successful one can be undone by the caller.
    let cmds = diff(&running, &want);
    let (_, undo) = apply(&mut running, &cmds).unwrap();
    assert!(running.services.is_empty());
    running.undo(undo);
    assert_eq!(ctl::save(&running), before);
}

#[test]
fn filter_rules_keep_their_counters() {
    let old = FilterTable::parse_file(
        "-A INPUT -p tcp -s 198.51.100.10 --dport 80 -j DROP\n-A FORWARD -p udp -j DROP\n",
    )
    .unwrap();
    old.rules()[0].hits.store(7, Relaxed);
    let new = FilterTable::parse_file(
        "# comment\n-A INPUT -p icmp -j DROP\n-A INPUT -p tcp -s 198.51.100.10 --dport 80 -j DROP\n",
    )
    .unwrap();
    let (t, counts) = merge_filter(&old, new);
    let t = t.unwrap();
    assert_eq!(counts, [1, 1, 1]);
    assert_eq!(t.rules().len(), 2);
    assert_eq!(t.rules()[1].hits.load(Relaxed), 7);
    assert!(Arc::ptr_eq(&t.rules()[1], &old.rules()[0]));
    // The same rules in the same order: keep the running table.
    let same = FilterTable::parse_file(
        "-A INPUT -p tcp -s 198.51.100.10 --dport 80 -j DROP\n\n-A FORWARD -p udp -j DROP\n",
    )
    .unwrap();
    assert!(matches!(merge_filter(&old, same), (None, [2, 0, 0])));
    // A rule given twice is kept once and added once.
    let twice = "-A FORWARD -p udp -j DROP\n-A FORWARD -p udp -j DROP\n";
    let (_, counts) = merge_filter(&old, FilterTable::parse_file(twice).unwrap());
    assert_eq!(counts, [1, 1, 1]);
}

#[test]
fn bad_filter_file_is_refused_with_its_line() {
    let e = plan(
        &Config::new(),
        &FilterTable::default(),
        &Texts {
            config: Some(text("rules", BASE)),
            filter: Some(text(
                "/etc/uvs/filter",
                "-A INPUT -j DROP\n-A INPUT -p bogus -j DROP\n",
            )),
            keepalived: None,
        },
        ok,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("/etc/uvs/filter: "), "{msg}");
    assert!(msg.contains("line 2"), "{msg}");
}

#[test]
fn summary_counts_and_reads() {
    let p = plan(
        &cfg(BASE),
        &FilterTable::default(),
        &Texts {
            config: Some(text("rules", "-A -t 192.0.2.10:80 -s rr\n")),
            filter: Some(text("f", "-A INPUT -p tcp -j DROP\n")),
            keepalived: None,
        },
        ok,
    )
    .unwrap();
    assert_eq!(
        p.summary.to_string(),
        "services +0 -1 ~0, real servers +0 -2 ~0; filter rules 0 kept, +1 -0"
    );
    let none = plan(&cfg(BASE), &FilterTable::default(), &Texts::default(), ok).unwrap();
    assert_eq!(
        none.summary.to_string(),
        "no --config, --filter or --keepalived file to re-read"
    );
    assert!(none.commands.is_empty() && none.filter.is_none());
}
