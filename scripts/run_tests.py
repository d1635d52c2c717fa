#!/usr/bin/env python3
"""Runs the workspace's test binaries a few at a time (scripts/test.sh).

`cargo test --workspace` runs its test binaries one after another. Most of
ours are lab tests, which spend their time waiting (on namespaces being
built, on uvs coming up, on paced traffic and timeouts) and use a few CPU
seconds each, so on two cores they can run side by side: each lab test
builds its own namespaces under a prefix unique to its process, and the tests
inside one binary still run one at a time (each binary's SERIAL lock).

    scripts/run_tests.py [--jobs N] [--test NAME]...

builds every test binary (`cargo test --workspace --no-run`, so features
resolve as in `cargo test --workspace`), then runs, at most N at a time
(default: UVS_TEST_JOBS, else 3; 1 runs them one after another as cargo
would):
  * every test binary, once, from its package's directory, as cargo does;
  * the binaries named by --test again with UVS_LAB_IO=af_xdp (the lab suite
    under the AF_XDP backend, issue 9);
  * the doc tests (`cargo test --workspace --doc`);
  * then the binaries named in ALONE, one at a time with nothing beside them.
Each binary's output is printed whole when it ends; the exit status is 1 if
any failed. Every run is bounded (UVS_TEST_TIMEOUT seconds, default 900).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

# Started first, so that the longest ones do not end the run alone (from
# scripts/test_times.sh; the others follow in cargo's order).
SLOWEST_FIRST = ["lab", "bench", "robustness", "tunnel", "xdp", "memory", "stats", "sync"]
# Run after the others, alone: the SYN/ACK flood must reach a uvs that has
# the CPU to drain it (beside other tests its RX ring overflowed and the
# table never filled: seen once in tests/flood.rs).
ALONE = ["flood"]


def binaries():
    """(package:kind:target, executable, package dir) of every test binary."""
    out = subprocess.run(
        ["cargo", "test", "--workspace", "--no-run", "--message-format=json"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    found = []
    for line in out.splitlines():
        m = json.loads(line)
        if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
            pkg = m["package_id"].split("#")[-1].split("@")[0]
            name = pkg + ":" + m["target"]["kind"][0] + ":" + m["target"]["name"]
            found.append((name, m["target"]["name"], m["executable"], os.path.dirname(m["manifest_path"])))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("UVS_TEST_JOBS", "3")))
    ap.add_argument("--test", action="append", default=[], metavar="NAME")
    a = ap.parse_args()
    timeout = int(os.environ.get("UVS_TEST_TIMEOUT", "900"))

    bins = binaries()
    rank = {n: i for i, n in enumerate(SLOWEST_FIRST)}
    bins.sort(key=lambda b: rank.get(b[1], len(rank)))
    jobs = [(name, [exe], cwd, {}) for name, _, exe, cwd in bins]
    at = sum(1 for b in bins if b[1] in rank)
    for t in a.test:
        # The lab tests are the uvs package's (tests/NAME.rs).
        hits = [b for b in bins if b[0] == "uvs:test:" + t]
        if len(hits) != 1:
            sys.exit(f"run_tests: --test {t}: no tests/{t}.rs in the uvs package")
        name, _, exe, cwd = hits[0]
        # After the slowest, before the rest, in the order given.
        jobs.insert(at, (name + " (UVS_LAB_IO=af_xdp)", [exe], cwd, {"UVS_LAB_IO": "af_xdp"}))
        at += 1
    jobs.append(("doc tests", ["cargo", "test", "--workspace", "--doc"], os.getcwd(), {}))

    lock = threading.Lock()
    failed = []

    def run(job):
        name, argv, cwd, env = job
        start = time.monotonic()
        with tempfile.TemporaryFile(mode="w+") as log:
            try:
                p = subprocess.run(
                    argv, cwd=cwd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                    timeout=timeout,
                )
                rc = p.returncode
            except subprocess.TimeoutExpired:
                rc = f"timed out after {timeout} s"
            log.seek(0)
            text = log.read()
        secs = time.monotonic() - start
        with lock:
            print(f"==== {name}: {'ok' if rc == 0 else 'FAILED (' + str(rc) + ')'} in {secs:.1f} s", flush=True)
            sys.stdout.write(text)
            sys.stdout.flush()
            if rc != 0:
                failed.append(name)

    alone = [j for j in jobs if j[0].split(":")[-1].split(" ")[0] in ALONE]
    jobs = [j for j in jobs if j not in alone]
    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        list(pool.map(run, jobs))
    for j in alone:
        run(j)
    jobs += alone
    print(f"run_tests: {len(jobs)} runs, {len(failed)} failed" + "".join(f"\n  FAILED {f}" for f in failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
