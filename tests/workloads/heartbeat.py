"""A target with a heartbeat thread that reports the longest gap between
its 1 ms ticks in each 0.25 s window: `gap WINDOW_END_MONOTONIC MAX_MS`.

heartbeat.py [--alloc]   --alloc: the main thread and 3 more churn memory
"""
import os
import sys
import threading
import time


def heartbeat():
    window_end = time.monotonic() + 0.25
    worst = 0.0
    last = time.monotonic()
    while True:
        time.sleep(0.001)
        now = time.monotonic()
        worst = max(worst, now - last)
        last = now
        if now >= window_end:
            sys.stdout.write("gap %.6f %.3f\n" % (now, worst * 1000))
            sys.stdout.flush()
            worst = 0.0
            window_end = now + 0.25


def churn():
    keep = []
    while True:
        keep.append([bytearray(256) for _ in range(64)])
        if len(keep) > 200:
            keep = keep[100:]


threading.Thread(target=heartbeat, daemon=True).start()
if "--alloc" in sys.argv:
    for _ in range(3):
        threading.Thread(target=churn, daemon=True).start()
print("ready", os.getpid(), flush=True)
if "--alloc" in sys.argv:
    churn()
while True:
    time.sleep(0.05)
