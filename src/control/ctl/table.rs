//! The configuration's service table and the undo record of commands.
//!
//! [`ServiceTable`] finds a service by key in O(1) and keeps the order in
//! which services were added; [`Undo`] lists, per applied command, how to
//! reverse it ([`super::Config::undo`]), each step costing what its command
//! changed.

use std::collections::BTreeMap;

use foldhash::HashMap;

use super::model::{Config, DestConfig, ServiceConfig, SvcKey, Timeouts};

/// The virtual services of a configuration: found by key in O(1) and
/// iterated in the order they were added (`-L --nosort`, and the input of
/// the sorted listings). Removing one keeps the others' order in
/// O(log services).
#[derive(Debug, Clone, Default)]
pub struct ServiceTable {
    /// Key → (insertion sequence number, service).
    by_key: HashMap<SvcKey, (u64, ServiceConfig)>,
    /// Sequence number → key: the insertion order.
    order: BTreeMap<u64, SvcKey>,
    /// The next sequence number.
    pub(super) next: u64,
}

impl ServiceTable {
    /// Number of services.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// No services.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The service with this key.
    pub fn get(&self, key: &SvcKey) -> Option<&ServiceConfig> {
        self.by_key.get(key).map(|(_, s)| s)
    }

    pub(super) fn get_mut(&mut self, key: &SvcKey) -> Option<&mut ServiceConfig> {
        self.by_key.get_mut(key).map(|(_, s)| s)
    }

    /// Services in the order they were added.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &ServiceConfig> + '_ {
        self.order.values().map(move |k| &self.by_key[k].1)
    }

    /// Appends a service whose key is not present yet.
    pub(super) fn push(&mut self, svc: ServiceConfig) {
        self.insert_at(self.next, svc);
        self.next += 1;
    }

    pub(super) fn insert_at(&mut self, seq: u64, svc: ServiceConfig) {
        self.order.insert(seq, svc.key);
        self.by_key.insert(svc.key, (seq, svc));
    }

    pub(super) fn remove(&mut self, key: &SvcKey) -> Option<(u64, ServiceConfig)> {
        let (seq, svc) = self.by_key.remove(key)?;
        self.order.remove(&seq);
        Some((seq, svc))
    }
}

impl PartialEq for ServiceTable {
    /// Same services in the same order.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for ServiceTable {}

impl std::ops::Index<usize> for ServiceTable {
    type Output = ServiceConfig;

    /// The `i`-th service in insertion order: O(i), for tests and tools.
    fn index(&self, i: usize) -> &ServiceConfig {
        self.iter().nth(i).expect("service index out of range")
    }
}

impl<'a> IntoIterator for &'a ServiceTable {
    type Item = &'a ServiceConfig;
    type IntoIter = Box<dyn DoubleEndedIterator<Item = &'a ServiceConfig> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// How to reverse the commands applied since it was made (see
/// [`Config::undo`]). Each step costs what its command changed.
#[derive(Debug, Default)]
pub struct Undo {
    pub(super) steps: Vec<UndoStep>,
}

impl Undo {
    /// An empty record.
    pub fn new() -> Undo {
        Undo::default()
    }

    /// Nothing to undo.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

#[derive(Debug)]
pub(super) enum UndoStep {
    /// `-A`: remove the (last added) service again.
    Added(SvcKey),
    /// `-E`: the previous attributes (its `dests` are empty and stay).
    Edited(ServiceConfig),
    /// `-D`: put the service back where it was.
    Deleted(u64, ServiceConfig),
    /// `-C`: the whole table as it was.
    Cleared(ServiceTable),
    /// `-a`: drop the service's last server.
    DestAdded(SvcKey),
    /// `-e`: the server's previous settings at its index.
    DestEdited(SvcKey, usize, DestConfig),
    /// `-d`: put the server back at its index.
    DestDeleted(SvcKey, usize, DestConfig),
    /// `--set`: the previous timeouts.
    Timeouts(Timeouts),
}

impl Config {
    /// Reverses the commands recorded in `undo`, newest first, leaving the
    /// configuration exactly as it was before the first of them (order and
    /// all). `undo` must have been filled by commands on `self` since.
    pub fn undo(&mut self, undo: Undo) {
        for step in undo.steps.into_iter().rev() {
            match step {
                UndoStep::Added(key) => {
                    if let Some((seq, _)) = self.services.remove(&key) {
                        if seq + 1 == self.services.next {
                            self.services.next = seq;
                        }
                    }
                }
                UndoStep::Edited(old) => {
                    if let Some(svc) = self.services.get_mut(&old.key) {
                        let dests = std::mem::take(&mut svc.dests);
                        *svc = ServiceConfig { dests, ..old };
                    }
                }
                UndoStep::Deleted(seq, old) => self.services.insert_at(seq, old),
                UndoStep::Cleared(table) => self.services = table,
                UndoStep::DestAdded(key) => {
                    if let Some(svc) = self.services.get_mut(&key) {
                        svc.dests.pop();
                    }
                }
                UndoStep::DestEdited(key, i, old) => {
                    if let Some(slot) = self.services.get_mut(&key).and_then(|s| s.dests.get_mut(i))
                    {
                        *slot = old;
                    }
                }
                UndoStep::DestDeleted(key, i, old) => {
                    if let Some(svc) = self.services.get_mut(&key) {
                        svc.dests.insert(i.min(svc.dests.len()), old);
                    }
                }
                UndoStep::Timeouts(t) => self.timeouts = t,
            }
        }
    }
}
