//! cargo-fuzz target `pipeline`: the body is `uvs::fuzz::pipeline::run` (see there),
//! which `tests/fuzz_corpus.rs` also replays on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| uvs::fuzz::pipeline::run(data));
