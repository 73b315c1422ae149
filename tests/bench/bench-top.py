#!/usr/bin/python3
"""bench-top: `probing top` attached to N (default 32) training processes,
refreshing once a second, inside a private tmux server.

Measures, over one window: the TUI's CPU, each agent's probing-* threads'
CPU with the TUI attached minus the same threads without it (the cost of
serving it), and the time to redraw one frame (the hidden --bench-frames
option times full redraws alternating the Processes and Modules panes).
Prints a table; no thresholds.

usage: bench-top.py [--agents N] [--window SECONDS]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import PROBING, PY, start, stop, table, userbase  # noqa: E402

WORKLOAD = r"""
import os, time, torch
from torch import nn
torch.set_num_threads(1)
model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(16, 32); y = torch.randint(0, 10, (16,))
print("ready", os.getpid(), flush=True)
while True:
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    time.sleep(0.2)
"""

def proc_ns(path):
    """CPU time in ns from a schedstat file (finer than stat's ticks)."""
    with open(path) as f:
        return int(f.read().split()[0])


def tui_ns(pid):
    return sum(proc_ns("/proc/%d/task/%s/schedstat" % (pid, t))
               for t in os.listdir("/proc/%d/task" % pid))


def agent_ns(pid):
    """CPU ns of pid's probing-* threads (the agent's own)."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        base = "/proc/%d/task/%s" % (pid, tid)
        try:
            with open(base + "/comm") as f:
                if not f.read().startswith("probing-"):
                    continue
            total += proc_ns(base + "/schedstat")
        except OSError:
            pass
    return total


def window(pids, tui_pid, secs):
    """CPU % (of one core) over secs: the TUI's and each agent's."""
    a0 = [agent_ns(p) for p in pids]
    t0 = tui_ns(tui_pid) if tui_pid else 0
    w0 = time.monotonic()
    time.sleep(secs)
    dt = time.monotonic() - w0
    a1 = [agent_ns(p) for p in pids]
    t1 = tui_ns(tui_pid) if tui_pid else 0
    pct = lambda d: 100.0 * d / 1e9 / dt
    return pct(t1 - t0), [pct(b - a) for a, b in zip(a0, a1)]


def tmux(sock, *args):
    return subprocess.run(["tmux", "-L", sock, "-f", "/dev/null"] + list(args),
                          capture_output=True, text=True)


def wait_screen(sock, pred, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = tmux(sock, "capture-pane", "-p", "-t", "0").stdout
        if pred(s):
            return s
        time.sleep(0.2)
    raise SystemExit("bench-top: timed out; the screen:\n" + s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=32)
    ap.add_argument("--window", type=float, default=20)
    args = ap.parse_args()
    env = userbase()
    procs = []
    sock = "probing-bench-top-%d" % os.getpid()
    try:
        for _ in range(args.agents):
            procs.append(start([PY, "-c", WORKLOAD], env, probing="1",
                               wait_text="ready", timeout=300))
        pids = [p.pid for p in procs]
        targets = ",".join(map(str, pids))
        print("bench-top: %d training processes (one step every ~0.2 s), "
              "window %.0f s, %d CPUs" % (len(pids), args.window, os.cpu_count()))

        # the agents' own threads without any client
        _, base = window(pids, None, args.window)

        # the TUI attached, refreshing once a second
        tmux(sock, "kill-server")
        tmux(sock, "new-session", "-d", "-x", "160", "-y", "48", "-e", "LANG=C.UTF-8",
             "%s -t %s top --interval 1" % (PROBING, targets))
        wait_screen(sock, lambda s: "%d targets: %d running" % (len(pids), len(pids)) in s)
        tui_pid = int(tmux(sock, "display-message", "-p", "-t", "0",
                           "#{pane_pid}").stdout.strip())
        tui, with_tui = window(pids, tui_pid, args.window)
        tmux(sock, "send-keys", "-t", "0", "q")
        tmux(sock, "kill-server")

        # frame time: --bench-frames with the same 32 targets
        err = tempfile.NamedTemporaryFile(prefix="bench-top-", delete=False).name
        tmux(sock, "new-session", "-d", "-x", "160", "-y", "48", "-e", "LANG=C.UTF-8",
             "%s -t %s top --interval 1 --bench-frames 400 2>%s" % (PROBING, targets, err))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "frames" not in open(err).read():
            time.sleep(0.2)
        tmux(sock, "kill-server")
        frame = dict(zip(*[iter(open(err).read().split())] * 2))
        os.unlink(err)

        # one --batch round over all of them
        t0 = time.perf_counter()
        r = subprocess.run([PROBING, "-t", targets, "top", "--batch"], capture_output=True)
        batch_ms = (time.perf_counter() - t0) * 1000
        if r.returncode != 0:
            raise SystemExit("top --batch failed: " + r.stderr.decode())

        serving = [w - b for w, b in zip(with_tui, base)]
        rows = [
            ["TUI process (probing top), CPU % of a core", "%.2f" % tui],
            ["agent threads, no client: CPU % median / max",
             "%.2f / %.2f" % (statistics.median(base), max(base))],
            ["agent threads, TUI attached: CPU % median / max",
             "%.2f / %.2f" % (statistics.median(with_tui), max(with_tui))],
            ["serving the TUI per agent (difference): median / max",
             "%.2f / %.2f" % (statistics.median(serving), max(serving))],
            ["redraw one frame, ms: mean / max (%s frames)" % frame.get("frames", "?"),
             "%s / %s" % (frame.get("mean_ms", "?"), frame.get("max_ms", "?"))],
            ["top --batch, one round over all targets, ms", "%.0f" % batch_ms],
        ]
        table("probing top with %d agents" % len(pids), ["measure", "value"], rows)
    finally:
        tmux(sock, "kill-server")
        for p in procs:
            stop(p)


if __name__ == "__main__":
    main()
