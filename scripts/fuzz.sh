#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 20), on
# nightly, without sanitizers unless SANITIZER=address. New inputs
# libFuzzer finds go to fuzz/work/TARGET (ignored by git); the checked-in
# seeds in fuzz/corpus/TARGET are read, not written. Prints each target's
# executions; a crash stops the script with libFuzzer's report and leaves
# the input in fuzz/artifacts/TARGET/ (add it to fuzz/corpus/TARGET once
# fixed: tests/fuzz_corpus.rs replays it on stable from then on).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
secs=${1:-20}
shift || true
cd "$(dirname "$0")/../fuzz"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: no nightly toolchain with cargo-fuzz (cargo install cargo-fuzz);" \
    "tests/fuzz_corpus.rs runs the same targets on stable" >&2
  exit 0
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^path = "fuzz_targets\/\(.*\)\.rs"/\1/p' Cargo.toml)
fi
san=${SANITIZER:-none}
cargo +nightly fuzz build --sanitizer "$san"
for t in "${targets[@]}"; do
  mkdir -p "work/$t"
  log=$(mktemp)
  if ! cargo +nightly fuzz run --sanitizer "$san" "$t" "work/$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1; then
    tail -n 40 "$log"
    rm -f "$log"
    echo "fuzz.sh: $t FAILED" >&2
    exit 1
  fi
  runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
  echo "fuzz $t: ${runs:-?} executions in ${secs}s, no crash"
  rm -f "$log"
done
