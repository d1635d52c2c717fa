//! cargo-fuzz target `ctl_frame`: the body is `uvs::fuzz::text::ctl_frame` (see there),
//! which `tests/fuzz_corpus.rs` also replays on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| uvs::fuzz::text::ctl_frame(data));
