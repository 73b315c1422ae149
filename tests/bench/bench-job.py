#!/usr/bin/python3
"""bench-job: the whole job, side by side in one run (medians).

- `SELECT 1` over N probed idle processes at once (-t a,b,c...), next to
  one `probing -t PID query` per process in turn; N = 16, 64, 256 (as
  many as half the free memory holds: the RSS of one is measured).
- `backtrace --merge` over the 8 ranks of a hung dist_job.py job (gloo,
  rank 7 sleeps outside the all_reduce the others wait in), next to
  `py-spy dump` on each of the 8 pids in turn (py-spy from PyPI, in the
  venv .build/bench-venv, made here when missing).
- The collectives wrapper: all_reduce of a 1-element tensor on a 1-rank
  gloo group, through the agent's wrapper and through its __wrapped__
  original in the same process, and in a process without the agent.
- `probing top --batch` over the N idle processes: the CLI's CPU time over
  its run, as % of one core.

usage: bench-job.py [--max N] [--runs R]
"""
import argparse
import json
import os
import re
import resource
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import PROBING, PY, ROOT, med, rss_kb, start, stop, table, userbase  # noqa: E402

WORKLOADS = os.path.join(ROOT, "tests", "workloads")
VENV = os.path.join(ROOT, ".build", "bench-venv")
PYSPY = os.path.join(VENV, "bin", "py-spy")

WRAPPER = r"""
import os, sys, time, json, statistics
import torch, torch.distributed as dist
dist.init_process_group("gloo", rank=0, world_size=1)
t = torch.ones(1)
deadline = time.monotonic() + 20
while sys.argv[1] == "agent" and not hasattr(dist.all_reduce, "__wrapped__"):
    if time.monotonic() > deadline:
        sys.exit("the agent's wrappers never went in")
    time.sleep(0.05)
calls = {"wrapped": dist.all_reduce,
         "unwrapped": getattr(dist.all_reduce, "__wrapped__", dist.all_reduce)}
per = {k: [] for k in calls}
for k, f in calls.items():
    for _ in range(2000):
        f(t)
for block in range(40):
    for k, f in calls.items():
        t0 = time.perf_counter_ns()
        for _ in range(2000):
            f(t)
        per[k].append((time.perf_counter_ns() - t0) / 2000 / 1000)
# the difference inside each pair of blocks, then its median
diff = [w - u for w, u in zip(per["wrapped"], per["unwrapped"])]
print(json.dumps({"wrapped": statistics.median(per["wrapped"]),
                  "unwrapped": statistics.median(per["unwrapped"]),
                  "added": statistics.median(diff)}))
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def listening():
    """The pids with a listening @probing-PID socket."""
    out = set()
    with open("/proc/net/unix") as f:
        for line in f:
            p = line.split()
            if len(p) >= 8 and p[7].startswith("@probing-") and int(p[3], 16) & 0x10000:
                out.add(int(p[7][len("@probing-"):]))
    return out


def start_idle(n, env):
    """n idle.py processes with the agent, started at once; waits for all."""
    procs = [subprocess.Popen([PY, os.path.join(WORKLOADS, "idle.py")],
                              env=dict(env, PROBING="1"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(n)]
    deadline = time.monotonic() + 60 + n
    while not {p.pid for p in procs} <= listening():
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            for p in procs:
                stop(p)
            raise SystemExit("idle workloads failed to start")
        time.sleep(0.2)
    return procs


def mem_available_kb():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def run_ms(argv, env=None, ok=(0,)):
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, env=env)
    ms = (time.perf_counter() - t0) * 1000
    if r.returncode not in ok:
        raise SystemExit("%s failed: %s" % (" ".join(argv[:4]), r.stderr.decode()[-500:]))
    return ms, r


def bench_fanout(env, sizes, runs):
    """Rows of the SELECT 1 table and the top table, and the RSS figure."""
    rows, top_rows = [], []
    procs = start_idle(sizes[0], env)
    one_kb = med([rss_kb(p.pid) for p in procs])
    fit = int(mem_available_kb() / 2 / max(one_kb, 1))
    try:
        for n in sizes:
            if n > fit:
                rows.append([n, "skipped: %d fit in half the free memory" % fit, "", "", ""])
                continue
            if len(procs) < n:
                procs += start_idle(n - len(procs), env)
            pids = [str(p.pid) for p in procs[:n]]
            argv = [PROBING, "-t", ",".join(pids), "query", "-f", "json", "SELECT 1 AS one"]
            run_ms(argv)
            times = []
            for _ in range(runs):
                ms, r = run_ms(argv)
                if len(json.loads(r.stdout)) != n:
                    raise SystemExit("fan-out over %d returned %s" % (n, r.stdout[:200]))
                times.append(ms)
            t0 = time.perf_counter()
            for pid in pids:
                run_ms([PROBING, "-t", pid, "query", "SELECT 1"])
            each = (time.perf_counter() - t0) * 1000
            rows.append([n, "%.0f ms" % med(times), "%.0f ms" % min(times),
                         "%.0f ms" % each, "%.1fx" % (each / med(times))])
            top_rows.append(bench_top(pids))
    finally:
        for p in procs:
            stop(p)
    return rows, top_rows, one_kb, fit


def bench_top(pids, iterations=10):
    """top --batch over pids, once a second: its CPU as % of one core."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([PROBING, "-t", ",".join(pids), "top", "--batch", "--iterations",
                        str(iterations), "--interval", "1"], capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit("top failed: %s" % r.stderr.decode()[-500:])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return [len(pids), "%d x 1 s" % iterations, "%.1f s" % wall, "%.2f s" % cpu,
            "%.1f%%" % (100 * cpu / wall)]


def ensure_pyspy():
    """py-spy in the bench venv, installed there from PyPI when missing;
    None when it cannot be (offline)."""
    if not os.access(PYSPY, os.X_OK):
        r = subprocess.run([sys.executable, "-m", "venv", VENV], capture_output=True)
        if r.returncode == 0:
            r = subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", "py-spy"],
                               capture_output=True)
        if r.returncode != 0:
            print("bench-job: cannot install py-spy into %s: %s"
                  % (VENV, r.stderr.decode()[-300:]), file=sys.stderr)
            return None
    return PYSPY


def bench_merge(env, runs):
    pyspy = ensure_pyspy()
    port = free_port()
    job = start([PY, os.path.join(WORKLOADS, "dist_job.py"), str(port)],
                dict(env, PROBING="2", WORLD="8", DIVERGE_RANK="7", DIVERGE_MODE="skip",
                     DIVERGE_AFTER="5"), timeout=180)
    try:
        pids = {}
        deadline = time.monotonic() + 180
        while len(pids) < 8 or not set(pids.values()) <= listening():
            for m in re.finditer(r"rank (\d+) pid (\d+)", open(job.out_path).read()):
                pids[int(m.group(1))] = int(m.group(2))
            if time.monotonic() > deadline or job.poll() is not None:
                raise SystemExit("the 8-rank job failed: " + open(job.out_path).read()[-2000:])
            time.sleep(0.2)
        targets = ",".join(str(pids[r]) for r in range(8))
        argv = [PROBING, "-t", targets, "backtrace", "--merge"]
        # wait until the tree shows the hang: ranks 0-6 in all_reduce
        deadline = time.monotonic() + 120
        while "[0-6] all_reduce" not in run_ms(argv)[1].stdout.decode():
            if time.monotonic() > deadline:
                raise SystemExit("the job never hung as planned")
            time.sleep(0.5)
        merge = [run_ms(argv)[0] for _ in range(runs)]
        # the same found from one pid: every local agent asked who it is,
        # the job's store read by rank 0's agent
        job_argv = [PROBING, "-t", "job:%d" % pids[0], "backtrace", "--merge"]
        found = [run_ms(job_argv)[0] for _ in range(runs)]
        each = []
        for _ in range(runs):
            t0 = time.perf_counter()
            for r in range(8):
                run_ms([PROBING, "-t", str(pids[r]), "backtrace"])
            each.append((time.perf_counter() - t0) * 1000)
        spy = []
        for _ in range(max(3, runs // 2) if pyspy else 0):
            t0 = time.perf_counter()
            for r in range(8):
                run_ms([pyspy, "dump", "--pid", str(pids[r])])
            spy.append((time.perf_counter() - t0) * 1000)
    finally:
        subprocess.run(["pkill", "-KILL", "-P", str(job.pid)], capture_output=True)
        stop(job)
    m = med(merge)
    return [["probing -t 8 pids backtrace --merge", "%.0f ms" % m, "1.0x"],
            ["probing -t job:PID backtrace --merge (ranks found)", "%.0f ms" % med(found),
             "%.1fx" % (med(found) / m)],
            ["probing -t PID backtrace, each pid in turn", "%.0f ms" % med(each),
             "%.1fx" % (med(each) / m)],
            ["py-spy dump --pid PID, each pid in turn",
             "%.0f ms" % med(spy) if spy else "not measured (no py-spy)",
             "%.1fx" % (med(spy) / m) if spy else ""]]


def bench_wrapper(env):
    rows = []
    for label, probing in (("agent", "1"), ("none", None)):
        port = str(free_port())
        e = dict(env, MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        if probing:
            e["PROBING"] = probing
        r = subprocess.run([PY, "-c", WRAPPER, label], env=e, capture_output=True,
                           text=True, timeout=600)
        if r.returncode != 0:
            raise SystemExit("wrapper bench failed: " + r.stderr[-1000:])
        rows.append((label, json.loads(r.stdout.strip().splitlines()[-1])))
    agent, none = rows[0][1], rows[1][1]
    return [["all_reduce (the agent's wrapper)", "%.2f us" % agent["wrapped"],
             "+%.2f us" % agent["added"]],
            ["all_reduce.__wrapped__ (same process)", "%.2f us" % agent["unwrapped"], ""],
            ["all_reduce, no agent", "%.2f us" % none["unwrapped"], ""]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max", type=int, default=256)
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    env = userbase()
    sizes = [n for n in (16, 64, 256) if n <= a.max]
    fan, top, one_kb, fit = bench_fanout(env, sizes, a.runs)
    merge = bench_merge(env, a.runs)
    wrap = bench_wrapper(env)
    print("bench-job: %d cores; an idle python with the agent: %.1f MB RSS "
          "(%d fit in half the free memory)" % (os.cpu_count(), one_kb / 1024, fit))
    table("SELECT 1 over N probed idle processes (median of %d)" % a.runs,
          ["N", "-t a,b,c... (fan-out)", "best", "one CLI per pid in turn", "ratio"], fan)
    table("backtrace of the 8 ranks of a hung gloo job (median)",
          ["command", "wall", "vs merge"], merge)
    table("collectives wrapper, all_reduce of 1 element on a 1-rank gloo group "
          "(median of 40 blocks of 2000 calls)", ["call", "per call", "added"], wrap)
    table("probing top --batch over N targets (CPU of the CLI over its run)",
          ["N", "rounds", "wall", "CPU", "% of a core"], top)


if __name__ == "__main__":
    main()
