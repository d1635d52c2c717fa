#!/usr/bin/env bash
# Where the suite's run time goes: builds the workspace's test binaries
# (`cargo test --workspace --no-run`, as scripts/test.sh does), runs each
# once in turn, as `cargo test` would, and prints the binaries and the tests
# slowest first. Per-test times come from libtest's `--report-time`, an
# unstable flag of the test binaries themselves: RUSTC_BOOTSTRAP=1 is set for
# those runs only (it changes nothing that cargo builds). Lab tests need
# root, like scripts/test.sh. Needs GNU time (Debian's `time`) for each
# binary's CPU seconds, which a loaded machine inflates less than wall time;
# the ranking holds better than the figures.
#
#   scripts/test_times.sh [OUTDIR] [REGEX]   binaries whose name matches REGEX
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/test-times}
filt=${2:-.}
mkdir -p "$out"
cargo test --workspace --no-run --message-format=json 2>/dev/null |
  python3 -c '
import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        pkg = m["package_id"].split("#")[-1].split("@")[0]
        kind = m["target"]["kind"][0]
        print(pkg + ":" + kind + ":" + m["target"]["name"], m["executable"], m["manifest_path"])
' >"$out/binaries.txt"
: >"$out/binaries-time.txt"
while read -r name exe manifest; do
  [[ "$name" =~ $filt ]] || continue
  log="$out/${name//:/_}.log"
  rc=0
  # GNU time: wall, and user+sys CPU of the binary and every child it
  # waited for (uvs, the lab's ip and nft commands).
  (cd "$(dirname "$manifest")" && RUSTC_BOOTSTRAP=1 /usr/bin/time -o "$log.time" -f '%e %U %S' \
    "$exe" -Z unstable-options --report-time) >"$log" 2>&1 || rc=$?
  # (its last line: a failing binary's status line comes first)
  read -r wall user sys < <(tail -n 1 "$log.time") || true
  printf '%8.1f s  cpu %7.1f s  rc %-3d %s\n' "$wall" "$(echo "$user + $sys" | bc -l)" "$rc" "$name" \
    >>"$out/binaries-time.txt"
done <"$out/binaries.txt"
echo "== binaries, slowest first (wall time of each run; cpu: user+sys, children included)"
sort -rn "$out/binaries-time.txt"
echo "== tests, slowest first"
grep -h ' <[0-9.]*s>$' "$out"/*.log |
  sed -E 's/^test (.*) \.\.\. (.*) <([0-9.]+)s>$/\3 s  \1 (\2)/' | sort -rn | head -40
