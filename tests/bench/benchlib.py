"""Helpers for the benchmarks: processes with and without the agent, timing
of whole commands, medians. Figures are medians from one run, side by side."""
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROBING = os.path.join(ROOT, "probing")
PY = os.environ.get("PROBING_TEST_PYTHON", "/usr/bin/python3")
WORKLOADS = os.path.join(ROOT, "tests", "workloads")


def userbase():
    """Installs into .build/bench so PROBING=1 works; returns its env."""
    base = os.path.join(ROOT, ".build", "bench")
    site = subprocess.run([PY, "-c", "import site; print(site.getusersitepackages())"],
                          env=dict(os.environ, PYTHONUSERBASE=base),
                          capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["make", "-s", "-C", ROOT, "install", "PREFIX=" + base + "/prefix",
                    "PYSITE=" + site, "PYTHON=" + PY], check=True, stdout=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBING")}
    env["PYTHONUSERBASE"] = base
    env["PYTHONUNBUFFERED"] = "1"
    return env


def agent_up(pid):
    with open("/proc/net/unix") as f:
        return any(("@probing-%d" % pid) in line for line in f)


def start(argv, env, probing=None, wait_text=None, timeout=60):
    e = dict(env)
    if probing:
        e["PROBING"] = probing
    out = tempfile.NamedTemporaryFile(prefix="bench-", delete=False)
    p = subprocess.Popen(argv, env=e, stdout=out, stderr=subprocess.STDOUT)
    p.out_path = out.name
    deadline = time.monotonic() + timeout
    while True:
        ok = True
        if probing:
            ok = agent_up(p.pid)
        if wait_text:
            ok = ok and wait_text in open(out.name).read()
        if ok:
            return p
        if p.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("workload failed to start: " + open(out.name).read()[-2000:])
        time.sleep(0.01)


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    p.wait()


def timed(argv, n, env=None):
    """Wall times in ms of running argv n times (after one warm-up)."""
    subprocess.run(argv, capture_output=True, env=env)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, env=env)
        times.append((time.perf_counter() - t0) * 1000)
        if r.returncode != 0:
            raise SystemExit("%s failed: %s" % (argv, r.stderr.decode()[-500:]))
    return times


def med(xs):
    return statistics.median(xs)


def rss_kb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def table(title, header, rows):
    print("\n" + title)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = "  ".join("%%-%ds" % w for w in widths)
    print(fmt % tuple(header))
    print(fmt % tuple("-" * w for w in widths))
    for r in rows:
        print(fmt % tuple(r))
    sys.stdout.flush()
