"""Foundation figures: query latency, GROUP BY over 10,000 rows, agent RSS.

Run: make bench (or /usr/bin/python3 tests/bench/bench-foundation.py)."""
import json
import os
import subprocess
import time

from benchlib import (PROBING, PY, WORKLOADS, med, rss_kb, start, stop, table,
                      timed, userbase)

N = 50
env = userbase()

# 1. whole-process `probing query "SELECT 1"` next to curl doing the same request
p = start([PY, os.path.join(WORKLOADS, "idle.py")], env, probing="1")
q = timed([PROBING, "-t", str(p.pid), "query", "SELECT 1"], N)
c = timed(["curl", "-s", "--abstract-unix-socket", "probing-%d" % p.pid,
           "--data-binary", '{"sql":"SELECT 1"}', "http://x/query"], N)
t = timed(["/bin/true"], N)
table("probing -t PID query 'SELECT 1' (ms, %d runs)" % N,
      ["command", "median", "p90", "ratio to budget 10 ms"],
      [["probing query", "%.2f" % med(q), "%.2f" % sorted(q)[int(N * .9)], "%.2f" % (med(q) / 10)],
       ["curl, same request", "%.2f" % med(c), "%.2f" % sorted(c)[int(N * .9)], "%.2f" % (med(c) / 10)],
       ["/bin/true (process start)", "%.2f" % med(t), "%.2f" % sorted(t)[int(N * .9)], ""]])

# 2. agent resident memory: the same idle script with and without the agent
plain = start([PY, os.path.join(WORKLOADS, "idle.py")], env, wait_text="ready")
time.sleep(1)
subprocess.run([PROBING, "-t", str(p.pid), "query", "SELECT * FROM python.torch_trace"],
               capture_output=True)
a, b = rss_kb(p.pid), rss_kb(plain.pid)
table("resident memory of an idle python (MB)",
      ["process", "VmRSS", "difference (budget 10 MB)"],
      [["without agent", "%.1f" % (b / 1024), ""],
       ["with agent (PROBING=1)", "%.1f" % (a / 1024), "%.1f" % ((a - b) / 1024)]])
stop(p)
stop(plain)

# 3. GROUP BY over 10,000 torch_trace rows, end to end
t = start([PY, os.path.join(WORKLOADS, "demo_train.py")], env, probing="1", wait_text="training")
deadline = time.monotonic() + 120
sql_count = "SELECT COUNT(*) FROM python.torch_trace"
while True:
    r = subprocess.run([PROBING, "-t", str(t.pid), "query", "-f", "json", sql_count],
                       capture_output=True, text=True)
    n = list(json.loads(r.stdout)[0].values())[0] if r.returncode == 0 else 0
    if n >= 10000 or time.monotonic() > deadline:
        break
    time.sleep(0.2)
subprocess.run([PROBING, "-t", str(t.pid), "config", "probing.torch.enabled=false"], check=True)
g = timed([PROBING, "-t", str(t.pid), "query",
           "SELECT module, AVG(duration) FROM python.torch_trace GROUP BY module"], N)
one = timed([PROBING, "-t", str(t.pid), "query", "SELECT 1"], N)
table("GROUP BY module over %d torch_trace rows (ms, %d runs)" % (n, N),
      ["query", "median", "p90", "ratio to budget 20 ms"],
      [["SELECT module, AVG(duration) ... GROUP BY module", "%.2f" % med(g),
        "%.2f" % sorted(g)[int(N * .9)], "%.2f" % (med(g) / 20)],
       ["SELECT 1 (same process)", "%.2f" % med(one), "%.2f" % sorted(one)[int(N * .9)], ""]])
stop(t)
