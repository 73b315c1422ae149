"""Backtrace figures: whole-process `probing -t PID backtrace` on a 10-thread
target, how long each thread is held stopped (the helper measures it:
python.backtrace's thread_stop_us), and the longest stall a heartbeat
thread in the target sees during one backtrace, next to gdb dumping the
same target, measured in one run.

Run: make bench (or /usr/bin/python3 tests/bench/bench-backtrace.py)."""
import json
import os
import shutil
import subprocess
import sys
import time

from benchlib import PROBING, PY, WORKLOADS, med, stop, table

N = 20       # probing runs
N_GDB = 3    # gdb runs (each stops the target for a long while)
SETTLE = 0.05  # seconds the heartbeat gets after each command to notice


class Target:
    """The target process, driven through its stdin."""

    def __init__(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROBING")}
        env["PROBING"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        self.p = subprocess.Popen([PY, os.path.join(WORKLOADS, "bt-bench-target.py")],
                                  env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True)
        line = self.p.stdout.readline()
        if not line.startswith("ready"):
            raise SystemExit("bench target failed to start")
        self.pid = self.p.pid
        deadline = time.monotonic() + 20
        while subprocess.run([PROBING, "-t", str(self.pid), "query", "SELECT 1"],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("the agent did not come up in the bench target")
            time.sleep(0.05)

    def ask(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def window(self, argv):
        """Runs argv (or just waits when None) inside one heartbeat window;
        returns (wall ms of argv, longest heartbeat gap in ms)."""
        self.ask("reset")
        t0 = time.perf_counter()
        if argv is not None:
            r = subprocess.run(argv, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit("%s failed: %s" % (argv[:3], r.stderr[-500:]))
        wall = (time.perf_counter() - t0) * 1000
        time.sleep(SETTLE)
        return wall, float(self.ask("report").split()[1])


def main():
    t = Target()
    try:
        bt = [PROBING, "-t", str(t.pid), "backtrace"]
        t.window(bt)  # warm-up: first use starts the unwinding helper
        base = [t.window(None)[1] for _ in range(N)]
        runs = [t.window(bt) for _ in range(N)]
        base += [t.window(None)[1] for _ in range(N)]
        baseline = med(base)
        wall = [w for w, _ in runs]
        stall = [max(0.0, g - baseline) for _, g in runs]
        rows = [["probing backtrace", "%.2f" % med(wall), "%.2f" % max(wall),
                 "%.3f" % med(stall), "%.3f" % max(stall)]]
        # Per-thread stop time, as the helper measured it.
        stops = []
        for _ in range(N):
            r = subprocess.run([PROBING, "-t", str(t.pid), "query", "-f", "json",
                                "SELECT thread_id, max(thread_stop_us) AS us "
                                "FROM python.backtrace GROUP BY thread_id"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit("query failed: " + r.stderr[-500:])
            stops += [row["us"] / 1000 for row in json.loads(r.stdout)
                      if row["us"] is not None]
        if not stops:
            raise SystemExit("no thread was stopped (is ptrace allowed?)")
        rows.append(["  one thread held stopped (helper)", "%.3f" % med(stops),
                     "%.3f" % max(stops), "", ""])
        # Control: the cheapest request, to show this machine's own jitter.
        q = [t.window([PROBING, "-t", str(t.pid), "query", "SELECT 1"])
             for _ in range(N)]
        qstall = [max(0.0, g - baseline) for _, g in q]
        rows.append(["control: probing query 'SELECT 1'",
                     "%.2f" % med([w for w, _ in q]), "%.2f" % max(w for w, _ in q),
                     "%.3f" % med(qstall), "%.3f" % max(qstall)])
        gdb = shutil.which("gdb")
        if gdb:
            g = [t.window([gdb, "-p", str(t.pid), "-batch", "-nx",
                           "-ex", "thread apply all bt"]) for _ in range(N_GDB)]
            gwall = [w for w, _ in g]
            gstall = [max(0.0, s - baseline) for _, s in g]
            rows.append(["gdb thread apply all bt", "%.2f" % med(gwall),
                         "%.2f" % max(gwall), "%.3f" % med(gstall),
                         "%.3f" % max(gstall)])
        table("backtrace of a 10-thread target (%d probing runs, %d gdb runs; "
              "heartbeat baseline gap %.3f ms subtracted)" % (N, N_GDB, baseline),
              ["command", "wall median ms", "wall max ms", "stall median ms",
               "stall max ms"], rows)
        if gdb:
            ratio_w = med(gwall) / med(wall)
            ratio_s = (med(gstall) / med(stall)) if med(stall) > 0 else float("inf")
            table("gdb / probing", ["figure", "ratio", "goal"],
                  [["wall time", "%.0fx" % ratio_w, ">= 40x"],
                   ["heartbeat stall", "%.0fx" % ratio_s, ">= 100x"]])
        print("\nbudgets: wall median <= 10 ms: %.2f ms; one thread stopped "
              "<= 1 ms median: %.3f ms (%d threads x %d runs); heartbeat stall "
              "<= 2 ms: median %.3f ms, worst of %d %.3f ms (control worst "
              "%.3f ms)" % (med(wall), med(stops), len(stops) // N, N, med(stall),
                            N, max(stall), max(qstall)))
    finally:
        stop(t.p)


if __name__ == "__main__":
    sys.exit(main())
