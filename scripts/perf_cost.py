#!/usr/bin/env python3
"""CPU per request (µs), by inclusive kernel or user frame, from a `perf record
-a -g -F 999` profile: `perf script -F comm,tid,time,ip,sym` on stdin, one
sample per millisecond of CPU (999 Hz). A frame counts a sample once if it
is anywhere on the sample's stack (inclusive time).

    perf script -i perf.data --time START,END -F comm,tid,time,ip,sym \\
        | scripts/perf_cost.py REQUESTS COMM_REGEX FRAME...

REQUESTS: how many requests (or packets) the window carried; COMM_REGEX:
the threads to count (for `uvs bench`: '^uvs' takes the bench's client and
server threads, named after the binary, and the uvs workers). Prints the
total per request, split by thread name, then each FRAME's share.
"""
import collections
import re
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    req = float(sys.argv[1])
    comm_re = re.compile(sys.argv[2])
    frames = sys.argv[3:]
    total, inc, by_comm = 0, collections.Counter(), collections.Counter()
    comm, stack = None, []

    def flush():
        nonlocal total
        if comm is None or not comm_re.search(comm):
            return
        total += 1
        by_comm[comm] += 1
        names = {s.split("+")[0] for s in stack}
        for f in frames:
            if f in names:
                inc[f] += 1

    for line in sys.stdin:
        if not line.strip():
            flush()
            comm, stack = None, []
        elif not line.startswith((" ", "\t")):
            flush()
            stack = []
            m = re.match(r"^(.*?)\s+(\d+)\s+", line)
            comm = m.group(1).strip() if m else None
        else:
            p = line.split()
            if len(p) >= 2:
                stack.append(p[1])
    flush()
    us = lambda n: n * 1001.0 / req
    print(f"total {us(total):6.2f} us/req  "
          + "  ".join(f"{c}={us(n):.2f}" for c, n in by_comm.most_common()))
    for f in frames:
        print(f"{us(inc[f]):6.2f}  {f}")


if __name__ == "__main__":
    main()
