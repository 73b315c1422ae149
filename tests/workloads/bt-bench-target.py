"""Target for tests/bench/bench-backtrace.py: 10 worker threads (light work,
then short sleeps, a few calls deep) and a heartbeat thread that sleeps 1 ms
at a time and records the longest gap beyond that.

stdin commands, one per line, each answered by one stdout line:
  reset    start a new measuring window      -> "ok"
  report   the window's longest gap in ms    -> "gap 1.234"
"""
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if (os.environ.get("PROBING", "0") not in ("", "0")
        and "probing._core" not in sys.modules):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)),
                                    "agent", "python"))
    import probing._boot  # noqa: F401,E402

lock = threading.Lock()
max_gap = 0.0


def heartbeat():
    global max_gap
    prev = time.perf_counter()
    while True:
        time.sleep(0.001)
        now = time.perf_counter()
        gap = now - prev - 0.001
        prev = now
        if gap > max_gap:
            with lock:
                max_gap = max(max_gap, gap)


def work(depth):
    if depth:
        return work(depth - 1)
    while True:
        sum(range(200))
        time.sleep(0.005)


for i in range(10):
    threading.Thread(target=work, args=(4,), name="worker-%d" % i,
                     daemon=True).start()
threading.Thread(target=heartbeat, name="heartbeat", daemon=True).start()
print("ready %d" % os.getpid(), flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "reset":
        with lock:
            max_gap = 0.0
        print("ok", flush=True)
    elif cmd == "report":
        with lock:
            print("gap %.3f" % (max_gap * 1000), flush=True)
