"""A job that prints a counter as fast as it can, flushing every line
(as PYTHONUNBUFFERED=1 or print(..., flush=True) does), with globals for
eval tests. Each line is `n <counter> <padding>` so a torn or lost line
shows in the output."""
import os
import time

answer = 41
print("ready", os.getpid(), flush=True)
n = 0
while True:
    n += 1
    print("n", n, "x" * 20, flush=True)
    if n % 200 == 0:
        time.sleep(0.001)
