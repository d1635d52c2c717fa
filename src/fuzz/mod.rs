//! Fuzz target bodies, shared by the `fuzz/` crate (cargo-fuzz on
//! libFuzzer, nightly) and `tests/fuzz_corpus.rs` (which replays every
//! checked-in corpus file, `fuzz/corpus/<target>/`, on stable Rust, and
//! runs a short bounded mutation loop over it).
//!
//! Contract: each body takes arbitrary bytes and returns normally; it
//! panics only when the code under test breaks an invariant it promises
//! (a panic inside that code, a rewritten packet that no longer parses or
//! lost a valid checksum, a verdict that disagrees with the packet, a
//! parser that accepts what it cannot print back). Nothing here does I/O
//! or depends on time; a given input always runs the same way.

pub mod packet;
pub mod pipeline;
pub mod text;

/// A target's body.
pub type Body = fn(&[u8]);

/// Every target: its name (the corpus directory and the `fuzz/` binary)
/// and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("parse", packet::parse),
    ("rewrite", packet::rewrite),
    ("decap", packet::decap),
    ("pipeline", pipeline::run),
    ("ctl", text::ctl),
    ("filter", text::filter),
    ("tables", text::tables),
    ("ctl_frame", text::ctl_frame),
];

/// A small deterministic byte reader over a fuzz input: the harnesses take
/// their choices from it, and read zeros once it is used up.
#[derive(Debug)]
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Bytes<'a> {
        Bytes { data }
    }
    /// The next byte (0 once empty).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }
    /// The next big-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    /// Up to `n` next bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }
    /// Whether anything is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}
