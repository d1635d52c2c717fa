//! The pure half of a commit: which services a command touches, what the
//! guard is sent, which servers are resolved, and undo on refusal.

use super::*;

/// The daemon's state without its I/O.
struct St {
    config: ctl::Config,
    running: Arc<Services>,
    owned: Owned,
}

impl St {
    fn new() -> St {
        St {
            config: ctl::Config::default(),
            running: Arc::new(Services::default()),
            owned: Owned::default(),
        }
    }

    /// One command as `Daemon::uvsadm` runs it; returns the guard delta and
    /// the addresses to resolve.
    fn run(
        &mut self,
        line: &str,
        stdin: Option<&str>,
    ) -> Result<(guard::Delta, Vec<IpAddr>), String> {
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        let cmd = ctl::parse(&words).map_err(|e| e.to_string())?;
        let mut undo = ctl::Undo::new();
        let out = ctl::execute_logged(
            &mut self.config,
            &cmd,
            stdin,
            &ctl::NoCounters,
            &ctl::Gates::default(),
            &mut undo,
        )
        .map_err(|e| e.to_string())?;
        match prepare(
            &self.config,
            &out.applied,
            &self.running,
            &mut self.owned,
            4093,
        ) {
            Ok(p) => {
                self.running = Arc::new(p.plan.commit());
                Ok((p.delta, p.resolve))
            }
            Err(e) => {
                self.config.undo(undo);
                Err(e)
            }
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_command_touches_only_its_service() {
    let mut st = St::new();
    let rules = "-A -t 192.0.2.1:80 -s rr\n-a -t 192.0.2.1:80 -r 203.0.113.1:80 -m\n\
                 -A -t 192.0.2.2:80 -s rr\n-a -t 192.0.2.2:80 -r 203.0.113.1:80 -m\n";
    let (d, resolve) = st.run("-R", Some(rules)).unwrap();
    // Two services, one shared NAT server (its port element and address).
    assert_eq!(d.add.len(), 4, "{d:?}");
    assert_eq!(resolve, [ip("203.0.113.1")], "once per address");
    let other = st.running.get(&(6, ip("192.0.2.2"), 80)).unwrap().clone();
    let (d, resolve) = st
        .run("-a -t 192.0.2.1:80 -r 203.0.113.2:80 -m", None)
        .unwrap();
    assert_eq!(
        d.add,
        [
            guard::Elem::NatServer((6, ip("203.0.113.2"), 80)),
            guard::Elem::NatAddr(ip("203.0.113.2"))
        ]
    );
    assert!(d.del.is_empty());
    assert_eq!(resolve, [ip("203.0.113.2")], "only the new server");
    assert!(Arc::ptr_eq(
        &other,
        st.running.get(&(6, ip("192.0.2.2"), 80)).unwrap()
    ));
    // Deleting a service keeps the server the other one still uses.
    let (d, _) = st.run("-D -t 192.0.2.1:80", None).unwrap();
    assert_eq!(d.del.len(), 3, "{d:?}");
    assert!(!d.del.contains(&guard::Elem::NatAddr(ip("203.0.113.1"))));
    assert!(!st.running.is_vip(ip("192.0.2.1")));
    // -E with the same scheduler keeps the runtime's scheduler.
    let sched = st
        .running
        .get(&(6, ip("192.0.2.2"), 80))
        .unwrap()
        .sched
        .clone();
    let (d, resolve) = st.run("-E -t 192.0.2.2:80 -s rr -p 60", None).unwrap();
    assert!(d.is_empty() && resolve.is_empty());
    let svc = st.running.get(&(6, ip("192.0.2.2"), 80)).unwrap();
    assert!(Arc::ptr_eq(&sched, &svc.sched));
    assert_eq!(svc.persistence.unwrap().timeout_ms, 60_000);
}

#[test]
fn clear_removes_every_service_and_a_refused_change_is_undone() {
    let mut st = St::new();
    st.run("-A -t 192.0.2.1:80", None).unwrap();
    st.run("-A -u 192.0.2.1:53", None).unwrap();
    let (d, _) = st.run("-C", None).unwrap();
    assert_eq!(d.del.len(), 2);
    assert!(st.running.is_empty() && st.owned.is_empty());
    // What the model accepts the runtime now runs (one-packet scheduling
    // too); a bad `-R` line refuses the whole input.
    st.run("-A -t 192.0.2.1:80", None).unwrap();
    st.run("-A -u 192.0.2.1:54 -o", None).unwrap();
    assert!(
        st.running
            .get(&(17, ip("192.0.2.1"), 54))
            .unwrap()
            .one_packet
    );
    let before = st.config.clone();
    let e = st
        .run(
            "-R",
            Some("-A -t 192.0.2.9:80\n-A -u 192.0.2.1:55 -s nosuch\n"),
        )
        .unwrap_err();
    assert!(e.contains("line 2") && e.contains("not found"), "{e}");
    assert_eq!(st.config, before);
    assert_eq!(st.running.len(), 2);
    // Fwmark services reach the runtime under their mark's key, and
    // claim nothing from the kernel themselves (their MARK rules do).
    let (d, _) = st.run("-A -f 7", None).unwrap();
    assert!(d.is_empty());
    let key = crate::datapath::service::fwmark_id(false, 7);
    assert!(st.running.get(&key).is_some());
    assert!(st.running.find_fwmark(false, 7).is_some());
    assert!(!st.running.is_vip(key.1));
}
