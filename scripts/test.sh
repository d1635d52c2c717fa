#!/usr/bin/env bash
# Runs every uvs test: installs what the tests need (as root, from Debian's
# archive), then formatting, clippy (which also type-checks the benchmarks), and all unit,
# property, fixture and network-namespace lab tests. Lab tests need root and
# skip, saying why, without it.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nft >/dev/null || need+=(nftables)
# uvs bench's peers (iptables-nft; nftables above) and its plots' font.
command -v iptables-restore >/dev/null || need+=(iptables)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
command -v ip >/dev/null || need+=(iproute2)
command -v curl >/dev/null || need+=(curl)
# scripts/run_tests.py, the runner below.
command -v python3 >/dev/null || need+=(python3)
command -v ping >/dev/null || need+=(iputils-ping)
# /etc/services, for uvsadm's port names (tests/uvsadm_golden.rs).
[ -f /etc/services ] || need+=(netbase)
# tests/packaging.rs: the man pages through groff, the unit through systemd-analyze.
command -v groff >/dev/null || need+=(groff-base)
command -v systemd-analyze >/dev/null || need+=(systemd)
# tests/ecmp.rs: BIRD 2 on the lab router and on every director.
command -v bird >/dev/null || need+=(bird2)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "test.sh: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "test.sh: not root, cannot install ${need[*]}; lab tests will skip"
  fi
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# No `cargo bench --no-run`: clippy --all-targets above type-checks every
# bench, and a release build of every dependency costs CI minutes (the
# suite's budget is 15 on 2 cores); the benches are run by hand (README).
# Every test binary of `cargo test --workspace`, the doc tests, and the lab
# suite again under the AF_XDP backend (issue 9: both backends in CI; the
# binaries named by --test below, the longest first: every one that starts
# uvs through the lab's director, but xdp, which runs both backends
# itself), three at a time: lab tests mostly wait
# (UVS_TEST_JOBS=1 runs them one after another; scripts/run_tests.py says more).
scripts/run_tests.py --test lab --test bench --test director_local --test overload --test trace --test tunnel --test tables --test stats --test health --test reload --test flood --test ecmp --test nat --test local_clients --test pmtu --test sync --test onepacket --test guard --test netlink_events --test control_socket --test demo
# Fuzzing (issue 12): the tests above replay every fuzz corpus and run a
# bounded mutation smoke on stable (tests/fuzz_corpus.rs). With
# UVS_FUZZ_SECS=N and a nightly cargo-fuzz, each libFuzzer target also runs
# N seconds (opt-in: its nightly build takes minutes on 2 cores).
if [ "${UVS_FUZZ_SECS:-0}" != 0 ]; then
  scripts/fuzz.sh "$UVS_FUZZ_SECS"
fi
