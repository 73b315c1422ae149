"""A workload whose place in a job changes while it runs: it sets RANK and
friends in os.environ when it reads 'set' on a fifo-like file, and can join
a one-process gloo group. Used by the identity tests."""
import os
import sys
import time

print("ready", os.getpid(), flush=True)
done = set()
while True:
    time.sleep(0.02)
    ctl = os.environ.get("RANK_CTL")
    if not ctl or not os.path.exists(ctl):
        continue
    with open(ctl) as f:
        cmd = f.read().strip()
    if cmd in done:
        continue
    done.add(cmd)
    if cmd == "env":
        os.environ.update(RANK="5", WORLD_SIZE="8", LOCAL_RANK="1",
                          TORCHELASTIC_RUN_ID="run-42")
        print("env set", flush=True)
    elif cmd == "dist":
        import torch.distributed as dist
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%s" % os.environ["DIST_PORT"],
                                rank=0, world_size=1)
        print("dist set", flush=True)
