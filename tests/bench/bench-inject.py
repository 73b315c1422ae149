"""inject figures: whole-process time until the agent answers, and the
longest stall a heartbeat thread inside the target sees, idle and
allocation-heavy, each next to the same target's stalls without injection;
then success counts into `os.stat` and `os.listdir` loops (stops land in
libc there) while two CPU hogs run, fresh targets each time, next to gdb's
`call dlopen(...)` into the same loops.

Run: make bench (or /usr/bin/python3 tests/bench/bench-inject.py [N [GDB_N]]),
N loops per kind (default 100), GDB_N for gdb (default 10: it takes ~1 s
each)."""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from benchlib import PROBING, PY, WORKLOADS, med, start, stop, table

RUNS = {"idle": 15, "alloc": 8}
LOOPS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
GDB_LOOPS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
LOOP = """
import os, sys
d = sys.argv[1]
print("ready", os.getpid(), flush=True)
while True:
    os.%s(d)
"""
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
    # the windows from the injection to the first one ending 0.3 s after it
    during = [ms for t, ms in g if t0 <= t <= t1 + 0.3] + \
        [ms for t, ms in g if t > t1 + 0.3][:1]
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


def agent_answers(pid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run([PROBING, "-t", str(pid), "eval", "1"], capture_output=True, text=True)
        if r.stdout == "1\n":
            return True
        time.sleep(0.05)
    return False


def gdb_inject(pid):
    """gdb's way: attach, call dlopen wherever the thread stopped, detach."""
    agent = glob.glob(os.path.join(os.path.dirname(PROBING), "agent", "libprobing-*.so"))[0]
    r = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx", "-q", "-ex",
                        'call (void *) dlopen("%s", 2)' % agent],
                       capture_output=True, text=True, timeout=60)
    ok = r.returncode == 0 and re.search(r"\$1 = \(void \*\) 0x[0-9a-f]+", r.stdout) is not None
    errs = [l for l in (r.stdout + r.stderr).splitlines()
            if re.search(r"^Couldn't|^Cannot|[Ee]rror", l)]
    return ok, errs[-1] if errs else ("call returned" if ok else "no handle")


def loop_runs(call, n, how):
    """Inject into n fresh `os.<call>` loops; returns (ok, harmed, walls, ways)."""
    d = tempfile.mkdtemp(prefix="bench-inject-")
    script = os.path.join(d, "loop.py")
    open(script, "w").write(LOOP % call)
    empty = os.path.join(d, "empty")
    os.mkdir(empty)
    ok = harmed = 0
    walls, calls, ways = [], [], {}
    for _ in range(n):
        p = start([PY, script, empty], env, wait_text="ready")
        t0 = time.monotonic()
        if how == "probing":
            r = subprocess.run([PROBING, "-t", str(p.pid), "inject", "-v"], capture_output=True, text=True)
            good = r.returncode == 0
            c = re.search(r"the call took (\S+) ms", r.stderr)
            if c:
                calls.append(float(c.group(1)))
            m = re.search(r"thread \d+: (stopped outside|stopped in a waiting|stepped out|stepped \d+)",
                          r.stderr)
            if m:
                way = re.sub(r"\d+", "N", m.group(1))
                ways[way] = ways.get(way, 0) + 1
        else:
            good, note = gdb_inject(p.pid)
            good = good and agent_answers(p.pid)
            ways[note] = ways.get(note, 0) + 1
        walls.append((time.monotonic() - t0) * 1000)
        time.sleep(0.2)  # let the loop run on after the injection
        alive = p.poll() is None
        out = open(p.out_path).read()
        if not alive or "Error" in out:
            harmed += 1
        elif good:
            ok += 1
        stop(p)
    shutil.rmtree(d)
    return ok, harmed, walls, calls, ways


hogs = [subprocess.Popen([PY, "-c", "while True: pass"]) for _ in range(2)]
rows = []
try:
    for call in ("stat", "listdir"):
        for how, n in (("probing", LOOPS), ("gdb", GDB_LOOPS if shutil.which("gdb") else 0)):
            if n == 0:
                continue
            ok, harmed, walls, calls, ways = loop_runs(call, n, how)
            rows.append(["os.%s loop" % call, how, n, ok, harmed, "%.0f" % med(walls),
                         "%.2f" % med(calls) if calls else "-",
                         ", ".join("%s %d" % kv for kv in sorted(ways.items())) or "-"])
finally:
    for h in hogs:
        h.kill()
        h.wait()
table("inject into busy syscall loops while two CPU hogs run (fresh target each run; "
      "ok = the agent answers; harmed = the target died or raised; wall ms = "
      "the injecting command until the agent answers, gdb's includes its attach; "
      "injector = probing's own time, stop to release)",
      ["target", "injector", "runs", "ok", "harmed", "wall median",
       "injector median", "how (probing -v; gdb's message)"], rows)
print("goals: 100 of 100 into each loop; injector median <= 10 ms")
