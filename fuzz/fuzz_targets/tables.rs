//! cargo-fuzz target `tables`: the body is `uvs::fuzz::text::tables` (see there),
//! which `tests/fuzz_corpus.rs` also replays on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| uvs::fuzz::text::tables(data));
