"""A workload that idles, with globals for eval tests."""
import os
import sys
import time

answer = 41
print("ready", os.getpid(), flush=True)
n = 0
while True:
    n += 1
    if n % 50 == 0:
        print("tick", n, flush=True)
    time.sleep(0.02)
