//! cargo-fuzz target `ctl`: the body is `uvs::fuzz::text::ctl` (see there),
//! which `tests/fuzz_corpus.rs` also replays on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| uvs::fuzz::text::ctl(data));
