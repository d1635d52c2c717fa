//! cargo-fuzz target `rewrite`: the body is `uvs::fuzz::packet::rewrite` (see there),
//! which `tests/fuzz_corpus.rs` also replays on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| uvs::fuzz::packet::rewrite(data));
