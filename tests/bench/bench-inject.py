"""inject figures: whole-process time until the agent answers, and the
longest stall a heartbeat thread inside the target sees, idle and
allocation-heavy, each next to the same target's stalls without injection.

Run: make bench (or /usr/bin/python3 tests/bench/bench-inject.py)."""
import os
import re
import subprocess
import time

from benchlib import PROBING, PY, WORKLOADS, med, start, stop, table

RUNS = {"idle": 15, "alloc": 8}
env = {k: v for k, v in os.environ.items() if not k.startswith("PROBING")}
env["PYTHONUNBUFFERED"] = "1"


def gaps(p):
    out = open(p.out_path).read()
    return [(float(a), float(b)) for a, b in re.findall(r"gap (\S+) (\S+)", out)]


def one(kind):
    argv = [PY, os.path.join(WORKLOADS, "heartbeat.py")] + (["--alloc"] if kind == "alloc" else [])
    p = start(argv, env, wait_text="ready")
    while len(gaps(p)) < 4:  # let it settle for a second
        time.sleep(0.05)
    t0 = time.monotonic()
    r = subprocess.run([PROBING, "-t", str(p.pid), "inject", "-v"], capture_output=True, text=True)
    wall = (time.monotonic() - t0) * 1000
    t1 = time.monotonic()
    if r.returncode != 0:
        stop(p)
        raise SystemExit("inject failed: " + r.stderr)
    while not [g for g in gaps(p) if g[0] > t1 + 0.3]:
        time.sleep(0.05)
    g = gaps(p)
    before = [ms for t, ms in g if t < t0]
    during = [ms for t, ms in g if t0 <= t <= t1 + 0.3]
    stop(p)
    stopped = float(re.search(r"stopped (\S+) ms", r.stderr).group(1))
    return wall, max(during), max(before), stopped


rows = []
for kind, n in RUNS.items():
    res = [one(kind) for _ in range(n)]
    walls = [r[0] for r in res]
    rows.append([kind, n, "%.1f" % med(walls), "%.1f" % max(walls),
                 "%.2f" % med([r[3] for r in res]), "%.2f" % max(r[3] for r in res),
                 "%.2f" % med([r[1] for r in res]), "%.2f" % med([r[2] for r in res])])
table("probing -t PID inject (ms): wall = until the agent answers; stopped = "
      "time the injected thread was held (injector's count); heartbeat = the "
      "longest gap between a target thread's 1 ms ticks in the windows during "
      "the injection, next to the windows before it",
      ["target", "runs", "wall median", "wall max", "stopped median",
       "stopped max", "heartbeat gap during", "heartbeat gap before"], rows)
print("budgets: wall median <= 50 ms; stall <= 5 ms idle, <= 50 ms allocation-heavy")
