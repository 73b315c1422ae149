"""Per-interpreter figures for the version matrix, one row per run (so a
regression on one Python or torch shows): inject into an idle target
(through PEP 768 and through ptrace side by side where the interpreter has
sys.remote_exec), backtrace of an 8-thread target, and a torch training
step with torch_trace on against the same loop without the agent.

Run: PROBING_TEST_PYTHON=/path/to/python3.X /usr/bin/python3
tests/bench/bench-matrix.py [N] (default N=7 of each); make matrix runs it
in every root (MATRIX_BENCH=1). Medians, ms."""
import subprocess
import sys
import time

from benchlib import PROBING, PY, med, start, stop, userbase

N = int(sys.argv[1]) if len(sys.argv) > 1 else 7
IDLE = """
import os, threading, time
def idle():
    while True:
        time.sleep(0.01)
for _ in range(7):
    threading.Thread(target=idle, daemon=True).start()
print("ready", os.getpid(), flush=True)
idle()
"""
STEP = """
import os, sys, time, torch
torch.manual_seed(0)
torch.set_num_threads(1)
m = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
opt = torch.optim.SGD(m.parameters(), lr=0.01)
x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
def step():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(m(x), y).backward()
    opt.step()
for _ in range(50):
    step()
t = []
for _ in range(400):
    t0 = time.perf_counter(); step(); t.append(time.perf_counter() - t0)
t.sort()
print("step_ms %.4f" % (t[len(t) // 2] * 1000), flush=True)
"""


def run(argv, env):
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    if r.returncode != 0:
        raise SystemExit("%s failed: %s" % (argv, r.stderr[-500:]))
    return r


def inject_ms(env, how):
    """Medians of `probing inject` into fresh idle targets."""
    e = dict(env, PROBING_INJECT=how)
    times = []
    for _ in range(N):
        p = start([PY, "-c", IDLE], env, wait_text="ready")
        t0 = time.perf_counter()
        r = run([PROBING, "-t", str(p.pid), "inject", "-v"], e)
        times.append((time.perf_counter() - t0) * 1000)
        stop(p)
        want = "through PEP 768" if how == "pep768" else "ptrace"
        if want not in r.stderr:
            raise SystemExit("inject did not go %s: %s" % (how, r.stderr))
    return med(times)


def main():
    env = userbase()
    ver = run([PY, "-c", "import sys; print(sys.version.split()[0])"], env).stdout.strip()
    has_torch = subprocess.run([PY, "-c", "import torch"], env=env,
                               capture_output=True).returncode == 0
    tv = run([PY, "-c", "import torch; print(torch.__version__)"], env).stdout.strip() \
        if has_torch else "-"
    row = {"python": ver, "torch": tv}
    pep768 = tuple(int(x) for x in ver.split(".")[:2]) >= (3, 14)
    row["inject pep768"] = "%.0f" % inject_ms(env, "pep768") if pep768 else "-"
    row["inject ptrace"] = "%.0f" % inject_ms(env, "ptrace")
    p = start([PY, "-c", IDLE], env, probing="1", wait_text="ready")
    times = []
    for _ in range(N):
        t0 = time.perf_counter()
        run([PROBING, "-t", str(p.pid), "backtrace"], env)
        times.append((time.perf_counter() - t0) * 1000)
    stop(p)
    row["backtrace 8 thr"] = "%.0f" % med(times)
    if has_torch:
        off = [float(run([PY, "-c", STEP], env).stdout.split()[1]) for _ in range(3)]
        on = [float(run([PY, "-c", STEP], dict(env, PROBING="1")).stdout.split()[-1])
              for _ in range(3)]
        row["step off"] = "%.3f" % med(off)
        row["step traced"] = "%.3f" % med(on)
        row["ratio"] = "%.2f" % (med(on) / med(off))
    else:
        row["step off"] = row["step traced"] = row["ratio"] = "-"
    print("| " + " | ".join(row) + " |")
    print("| " + " | ".join(row.values()) + " |")


main()
