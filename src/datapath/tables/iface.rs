//! `-i NAME`, `! -i NAME`, `-i PREFIX+`: the interface a packet arrived on.
//!
//! Contract: the worker stores the arrival ifindex in a thread-local
//! ([`set_rx`], one store per frame, by `engine.rs` before the pipeline
//! runs; 0 for packets of the director's own stack, which have no input
//! interface). A rule's name is matched against the director's links as
//! read when the ruleset is published and again on every link or address
//! event ([`read_links`], `nat::follow_addrs`): one hash probe and one
//! short string compare per rule, never a syscall per packet.
//!
//! `-i` is accepted at PREROUTING, INPUT and FORWARD only (also in user
//! chains reached from there), as iptables does. `-o` names are the same
//! [`IfMatch`], tested against the interface of the packet's route
//! ([`super::route`]).

use std::cell::Cell;

use foldhash::{HashMap, HashMapExt};

thread_local! {
    static RX_IF: Cell<u32> = const { Cell::new(0) };
}

/// The interface the worker's current frame arrived on (0: none).
#[inline]
pub fn set_rx(ifindex: u32) {
    RX_IF.with(|c| c.set(ifindex));
}

/// What [`set_rx`] last stored on this thread.
#[inline]
pub fn rx() -> u32 {
    RX_IF.with(|c| c.get())
}

/// Interface names longer than this are not interface names (IFNAMSIZ-1).
pub const NAME_MAX: usize = 15;

/// One `[!] -i NAME` (`NAME+` is a prefix, as in iptables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfMatch {
    pub neg: bool,
    /// The name, without the `+`.
    pub name: Box<str>,
    pub wild: bool,
}

impl IfMatch {
    pub fn parse(neg: bool, s: &str) -> Result<IfMatch, String> {
        let (name, wild) = match s.strip_suffix('+') {
            Some(p) => (p, true),
            None => (s, false),
        };
        if s.is_empty() || name.len() > NAME_MAX || name.contains(['/', ' ', '+']) {
            return Err(format!("'{s}' is not an interface name"));
        }
        Ok(IfMatch {
            neg,
            name: name.into(),
            wild,
        })
    }

    /// Whether `name` is named by this match (negation aside).
    pub fn names(&self, name: &str) -> bool {
        if self.wild {
            name.starts_with(&*self.name)
        } else {
            name == &*self.name
        }
    }

    /// Whether a packet that arrived on `ifindex` matches.
    #[inline]
    pub fn test(&self, links: &Links, ifindex: u32) -> bool {
        let hit = links.0.get(&ifindex).is_some_and(|n| self.names(n));
        hit != self.neg
    }

    /// As iptables-save writes it (after `!`).
    pub fn text(&self) -> String {
        format!("{}{}", self.name, if self.wild { "+" } else { "" })
    }
}

/// The director's links: ifindex → name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links(pub HashMap<u32, Box<str>>);

impl Links {
    pub fn from_pairs<'a>(v: impl IntoIterator<Item = (u32, &'a str)>) -> Links {
        let mut m = HashMap::new();
        for (i, n) in v {
            m.insert(i, n.into());
        }
        Links(m)
    }
}

/// The director's links now (the control plane only).
pub fn read_links() -> Links {
    match crate::sys::netlink::links() {
        Ok(v) => Links::from_pairs(v.iter().map(|l| (l.index, l.name.as_str()))),
        Err(e) => {
            log::warn!("uvs tables: reading the director's links for -i: {e}");
            Links::default()
        }
    }
}
