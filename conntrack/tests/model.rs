//! Random operation sequences against a plain model: inserts (NAT and DR,
//! colliding tuples), lookups from both sides, updates, removals, time
//! passing and sweeps. After every step the table and the model agree on
//! which entries exist, and the destinations' counts match.

mod common;
use common::*;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use proptest::prelude::*;
use uvs_conntrack::proto::tcp::flags::{ACK, SYN};
use uvs_conntrack::{
    Config, Defense, Dest, Dir, FwdMethod, InsertError, Knobs, NewConn, PacketInfo, Table, Tuple,
    Update,
};

#[derive(Debug, Clone)]
enum Op {
    Insert { c: u8, p: u8, v: u8, d: u8 },
    Ack { c: u8, p: u8, v: u8 },
    Remove { c: u8, p: u8, v: u8 },
    Reply { c: u8, p: u8, d: u8 },
    Advance(u32),
    Sweep(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6u8, 0..6u8, 0..2u8, 0..4u8).prop_map(|(c, p, v, d)| Op::Insert { c, p, v, d }),
        2 => (0..6u8, 0..6u8, 0..2u8).prop_map(|(c, p, v)| Op::Ack { c, p, v }),
        1 => (0..6u8, 0..6u8, 0..2u8).prop_map(|(c, p, v)| Op::Remove { c, p, v }),
        2 => (0..6u8, 0..6u8, 0..4u8).prop_map(|(c, p, d)| Op::Reply { c, p, d }),
        1 => (0..120_000u32).prop_map(Op::Advance),
        1 => (1..600u16).prop_map(Op::Sweep),
    ]
}

#[derive(Debug, Clone)]
struct M {
    d: usize,
    expires: u64,
    established: bool,
}

type Key = (u8, u8, u8);

struct World {
    t: Table,
    dests: Vec<Arc<Dest>>,
    m: HashMap<Key, M>,
    now: u64,
}

impl World {
    fn caddr(c: u8) -> IpAddr {
        ip(&format!("198.51.100.{}", c + 1))
    }
    fn vaddr(v: u8) -> IpAddr {
        ip(&format!("192.0.2.{}", v + 10))
    }
    fn req(&self, (c, p, v): Key) -> Tuple {
        Tuple {
            proto: TCP,
            src: Self::caddr(c),
            sport: 1000 + p as u16,
            dst: Self::vaddr(v),
            dport: 80,
        }
    }
    fn nat(&self, d: usize) -> bool {
        self.dests[d].fwd_method() == FwdMethod::Masq
    }
    /// The live model entry that owns reply tuple (client, dest).
    fn reply_owner(&self, c: u8, p: u8, d: usize) -> Option<Key> {
        self.m
            .iter()
            .find(|(k, e)| k.0 == c && k.1 == p && e.d == d && self.nat(d))
            .map(|(k, _)| *k)
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Insert { c, p, v, d } => {
                let d = d as usize;
                let key = (c, p, v);
                let dest = self.dests[d].clone();
                let nc = NewConn {
                    proto: TCP,
                    caddr: Self::caddr(c),
                    cport: 1000 + p as u16,
                    vaddr: Self::vaddr(v),
                    vport: 80,
                    daddr: dest.addr,
                    dport: dest.port,
                    dest: dest.clone(),
                    fwd: dest.fwd_method(),
                };
                let res = self.t.insert(nc, PacketInfo::tcp(SYN, 60), self.now);
                // Expired leftovers on either key are replaced.
                let now = self.now;
                let in_live = self.m.get(&key).is_some_and(|e| e.expires > now);
                let out_owner = if self.nat(d) {
                    self.reply_owner(c, p, d)
                } else {
                    None
                };
                let out_live = out_owner.is_some_and(|k| self.m[&k].expires > now);
                if in_live {
                    assert_eq!(res.unwrap_err(), InsertError::Exists);
                    return;
                }
                // An expired entry on the same request tuple is dropped
                // first, whatever happens next.
                self.m.remove(&key);
                if let Some(k) = out_owner.filter(|k| *k != key) {
                    if out_live {
                        assert_eq!(res.unwrap_err(), InsertError::ReplyTupleInUse);
                        return;
                    }
                    self.m.remove(&k);
                }
                self.m.remove(&key);
                let h = res.expect("insert");
                assert_eq!(h.daddr(), dest.addr);
                self.m.insert(
                    key,
                    M {
                        d,
                        expires: now + 60_000,
                        established: false,
                    },
                );
            }
            Op::Ack { c, p, v } => {
                let key = (c, p, v);
                let tu = self.req(key);
                let got = self.t.lookup(&tu);
                assert_eq!(got.is_some(), self.m.contains_key(&key), "lookup {key:?}");
                let Some((h, dir)) = got else { return };
                assert_eq!(dir, Dir::In);
                let u = self.t.update(&h, dir, PacketInfo::tcp(ACK, 52), self.now);
                let e = self.m.get_mut(&key).expect("model entry");
                if e.expires <= self.now {
                    assert_eq!(u, Update::Drop);
                    self.m.remove(&key);
                } else {
                    assert_eq!(u, Update::Forward);
                    e.established = true;
                    e.expires = self.now + 900_000;
                }
            }
            Op::Remove { c, p, v } => {
                let key = (c, p, v);
                if let Some((h, _)) = self.t.lookup(&self.req(key)) {
                    assert!(self.t.remove(&h));
                    assert!(self.m.remove(&key).is_some());
                } else {
                    assert!(!self.m.contains_key(&key));
                }
            }
            Op::Reply { c, p, d } => {
                let d = d as usize;
                let dest = &self.dests[d];
                let tu = Tuple {
                    proto: TCP,
                    src: dest.addr,
                    sport: dest.port,
                    dst: Self::caddr(c),
                    dport: 1000 + p as u16,
                };
                let got = self.t.lookup_out(&tu);
                let want = self.reply_owner(c, p, d);
                assert_eq!(
                    got.as_ref().map(|h| h.vaddr()),
                    want.map(|k| Self::vaddr(k.2)),
                    "reply {c} {p} {d}"
                );
            }
            Op::Advance(ms) => self.now += ms as u64,
            Op::Sweep(budget) => {
                self.t.expire(self.now, budget as usize);
                // Partial sweep: whatever it removed must have been expired.
                let now = self.now;
                let t = &self.t;
                let reqs: Vec<_> = self.m.keys().copied().collect();
                for k in reqs {
                    if t.lookup(&self.req(k)).is_none() {
                        assert!(self.m[&k].expires <= now, "live entry swept: {k:?}");
                        self.m.remove(&k);
                    }
                }
            }
        }
    }

    fn check(&self) {
        assert_eq!(self.t.len(), self.m.len());
        for (i, d) in self.dests.iter().enumerate() {
            let mine = self.m.values().filter(|e| e.d == i);
            let active = mine.clone().filter(|e| e.established).count() as u32;
            let inactive = mine.filter(|e| !e.established).count() as u32;
            assert_eq!(
                (d.active_conns(), d.inactive_conns()),
                (active, inactive),
                "dest {i}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]
    #[test]
    fn table_matches_model(ops in proptest::collection::vec(op(), 1..300)) {
        let t = Table::new(Config {
            max_entries: 10_000,
            shards: 2,
            seed: 5,
            knobs: Knobs { drop_entry: Defense::Off, ..Knobs::default() },
            ..Config::default()
        });
        let dests = vec![
            dest("203.0.113.11", 80, FwdMethod::Masq),
            dest("203.0.113.12", 80, FwdMethod::Masq),
            dest("203.0.113.11", 8080, FwdMethod::Masq),
            dest("203.0.113.13", 80, FwdMethod::Route),
        ];
        let mut w = World { t, dests, m: HashMap::new(), now: 1 };
        for o in &ops {
            w.step(o);
            w.check();
        }
        // A full sweep far in the future empties everything.
        w.now += 10_000_000;
        while w.t.expire(w.now, 1 << 16) > 0 {}
        prop_assert!(w.t.is_empty());
        for d in &w.dests {
            prop_assert_eq!(d.active_conns() + d.inactive_conns(), 0);
        }
    }
}
