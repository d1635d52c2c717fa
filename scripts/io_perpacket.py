#!/usr/bin/env python3
"""Per-forwarded-packet cost of uvs's workers, in figures that do not depend
on how busy the machine is: context switches (voluntary and not), syscalls
(by name) and CPU time of the worker threads, divided by the packets they
forwarded. Needs root; builds its own lab (prefix uxio) and removes it.

    scripts/io_perpacket.py [--uvs target/debug/uvs] [--io af_packet|af_xdp]
                            [--workers N] [--reps N] [--perf-record DIR]
                            [-- EXTRA uvs run ARGS]

With --perf-record, `perf record -a -g` runs over each case (bounded by the
case's time limit) and `perf report` writes, into DIR, the split by thread
and DSO and the top kernel symbols of the uvs worker threads.

Two bounded runs through a UDP NAT service (192.0.2.10:53, two echo
servers): `serial` (one datagram in flight: request, answer, next) and
`burst` (datagrams sent back to back, answers counted). Every loop is
bounded in count and in time. Only lab addresses are used.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

P = "uxio"
HERE = os.path.dirname(os.path.abspath(__file__))

SERVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("0.0.0.0", 53))
s.settimeout(0.5)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    try:
        d, a = s.recvfrom(2048)
    except socket.timeout:
        continue
    s.sendto(d, a)
"""

CLIENT = r"""
import socket, sys, time, json
mode, n, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("198.51.100.10", 0))
dst = ("192.0.2.10", 53)
payload = b"x" * 18
sent = got = 0
start = time.time()
end = start + limit
if mode == "serial":
    s.settimeout(0.2)
    while sent < n and time.time() < end:
        s.sendto(payload, dst); sent += 1
        try:
            s.recvfrom(2048); got += 1
        except socket.timeout:
            pass
else:
    s.setblocking(False)
    while sent < n and time.time() < end:
        try:
            s.sendto(payload, dst); sent += 1
        except BlockingIOError:
            pass
        if sent % 64 == 0:
            while True:
                try:
                    s.recvfrom(2048); got += 1
                except BlockingIOError:
                    break
    s.settimeout(0.3)
    while True:
        try:
            s.recvfrom(2048); got += 1
        except socket.timeout:
            break
print(json.dumps({"sent": sent, "got": got, "secs": time.time() - start}))
"""


def sh(*a, **kw):
    return subprocess.run(a, check=True, **kw)


def worker_tids(pid):
    out = []
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{t}/comm").read().strip()
        except OSError:
            continue
        if comm.startswith("uvs-worker"):
            out.append(int(t))
    return sorted(out)


def task_figures(pid, tid):
    st = open(f"/proc/{pid}/task/{tid}/status").read()
    vol = int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", st).group(1))
    nvol = int(re.search(r"nonvoluntary_ctxt_switches:\s+(\d+)", st).group(1))
    fields = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    # Time on a CPU in ns (exact, unlike the tick-sampled utime/stime).
    run_ns = int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
    return {"vol": vol, "nvol": nvol, "utime": utime, "stime": stime, "run_ns": run_ns}


def stats(sock):
    out = subprocess.run(
        [args.uvs, "stats", "--json", "--control", sock],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)["counters"]


def flat(d, pre=""):
    r = {}
    for k, v in d.items():
        if isinstance(v, dict):
            r.update(flat(v, pre + k + "."))
        elif isinstance(v, (int, float)):
            r[pre + k] = v
    return r


SYSCALLS = ["epoll_wait", "epoll_pwait", "sendmmsg", "sendto", "recvfrom",
            "getsockopt", "sched_yield", "poll", "futex", "write", "read"]


def perf_report(data, out):
    """The shares a profile gives whatever the machine's load: by thread
    and DSO, and the uvs workers' own symbols."""
    with open(out, "w") as f:
        for extra in (["--sort", "comm,dso", "--percent-limit", "0.7"],
                      ["--comms", "uvs-worker-0", "--percentage", "relative", "--sort", "dso,sym",
                       "--percent-limit", "0.5"]):
            r = subprocess.run(["perf", "report", "-i", data, "--no-children", "-g", "none",
                                "--stdio"] + extra,
                               capture_output=True, text=True)
            f.write(r.stdout)


def run_case(pid, sock, mode, n, limit, rep=0):
    tids = worker_tids(pid)
    before = {t: task_figures(pid, t) for t in tids}
    s0 = flat(stats(sock))
    evs = ",".join(["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{s}" for s in SYSCALLS])
    perf_out = tempfile.NamedTemporaryFile(delete=False, suffix=".perf")
    perf = subprocess.Popen(
        ["perf", "stat", "-x,", "-o", perf_out.name, "-e", evs,
         "-t", ",".join(map(str, tids)), "--", "sleep", str(limit + 1.5)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    rec = None
    if args.perf_record:
        data = os.path.join(args.perf_record, f"{mode}-{rep}.data")
        rec = subprocess.Popen(["perf", "record", "-a", "-g", "-q", "-o", data, "--",
                                "sleep", str(limit)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    c = subprocess.run(
        ["ip", "netns", "exec", f"{P}-c", sys.executable, "-c", CLIENT, mode, str(n), str(limit)],
        check=True, capture_output=True, text=True, timeout=limit + 10,
    )
    res = json.loads(c.stdout)
    if rec:
        # Ends with its own bounded sleep; stop it early once traffic ended.
        rec.send_signal(2)
        rec.wait(timeout=limit + 30)
        perf_report(data, data.replace(".data", ".txt"))
    time.sleep(0.3)
    s1 = flat(stats(sock))
    after = {t: task_figures(pid, t) for t in tids}
    perf.wait(timeout=limit + 10)
    sc = {}
    for line in open(perf_out.name):
        parts = line.strip().split(",")
        if len(parts) > 2 and parts[0].replace(".", "").isdigit():
            sc[parts[2].split(":")[-1].replace("sys_enter_", "")] = int(float(parts[0]))
    os.unlink(perf_out.name)
    # Only the packets forwarded during the counted window count.
    pk = s1.get("tx", 0) - s0.get("tx", 0)
    rx = s1.get("rx", 0) - s0.get("rx", 0)
    tot = {k: sum(after[t][k] - before[t][k] for t in tids) for k in before[tids[0]]}
    drops = {k: s1[k] - s0.get(k, 0) for k in s1 if k.startswith("drop") and s1[k] != s0.get(k, 0)}
    per = lambda x: x / pk if pk else float("nan")
    row = {
        "mode": mode, "sent": res["sent"], "answers": res["got"], "uvs_rx": rx, "uvs_tx": pk,
        "vol_sw/pkt": round(per(tot["vol"]), 3), "invol_sw/pkt": round(per(tot["nvol"]), 3),
        "syscalls/pkt": round(per(sc.get("raw_syscalls", sc.get("sys_enter", 0))), 3),
        "client_s": round(res["secs"], 2),
        "cpu_ns/pkt": round(per(tot["run_ns"])),
        "cpu_us/pkt(usr)": round(per(tot["utime"]) * 1e6 / os.sysconf("SC_CLK_TCK"), 2),
        "cpu_us/pkt(sys)": round(per(tot["stime"]) * 1e6 / os.sysconf("SC_CLK_TCK"), 2),
        "by_call/pkt": {k: round(per(v), 3) for k, v in sc.items() if v and k != "sys_enter"},
        "drops": drops,
    }
    return row


def main():
    global args
    ap = argparse.ArgumentParser()
    ap.add_argument("--uvs", default="target/debug/uvs")
    ap.add_argument("--io", default="af_packet")
    ap.add_argument("--workers", default="", help="default: uvs's own")
    ap.add_argument("--serial", type=int, default=3000)
    ap.add_argument("--burst", type=int, default=60000)
    ap.add_argument("--reps", type=int, default=1, help="repetitions of both cases")
    ap.add_argument("--perf-record", default="", help="directory for perf profiles")
    ap.add_argument("extra", nargs="*")
    args = ap.parse_args()
    args.uvs = os.path.abspath(args.uvs)
    tmp = tempfile.mkdtemp(prefix="uxio-")
    cfg = os.path.join(tmp, "rules")
    with open(cfg, "w") as f:
        f.write("-A -u 192.0.2.10:53 -s rr\n"
                "-a -u 192.0.2.10:53 -r 203.0.113.11:53 -m\n"
                "-a -u 192.0.2.10:53 -r 203.0.113.12:53 -m\n")
    sock = os.path.join(tmp, "uvs.sock")
    procs = []
    sh(os.path.join(HERE, "lab.sh"), "up", P, stdout=subprocess.DEVNULL)
    try:
        for rs in ("rs1", "rs2"):
            procs.append(subprocess.Popen(["ip", "netns", "exec", f"{P}-{rs}", sys.executable, "-c", SERVER, "60"]))
        log = open(os.path.join(tmp, "uvs.log"), "w")
        d = subprocess.Popen(
            ["ip", "netns", "exec", f"{P}-lb", args.uvs, "run", "--config", cfg, "--control", sock,
             "--io", args.io] + (["--workers", args.workers] if args.workers else []) + args.extra,
            stdout=log, stderr=subprocess.STDOUT,
        )
        procs.append(d)
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        # Warm up: ARP, neighbours, connections.
        subprocess.run(["ip", "netns", "exec", f"{P}-c", sys.executable, "-c", CLIENT, "serial", "50", "3"],
                       check=True, capture_output=True)
        if args.perf_record:
            os.makedirs(args.perf_record, exist_ok=True)
        for k in range(args.reps):
            for mode, n in (("serial", args.serial), ("burst", args.burst)):
                print(json.dumps(run_case(d.pid, sock, mode, n, 8.0, k)), flush=True)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        sh(os.path.join(HERE, "lab.sh"), "down", P)
        print("log:", open(os.path.join(tmp, "uvs.log")).read()[-600:], file=sys.stderr)


if __name__ == "__main__":
    main()
