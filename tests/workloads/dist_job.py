"""A 4-rank torch.distributed job on gloo, for the whole-job tests.

Every rank loops: a small matmul, then all_reduce. The rank named by
DIVERGE_RANK goes wrong after DIVERGE_AFTER steps in the way DIVERGE_MODE
says: skip (leaves the loop and sleeps in Python), wedge (a C call that
holds the GIL), exit. LAUNCH=spawn (default) starts the ranks with
torch.multiprocessing.spawn; under torchrun the script is one rank.
Each rank prints "rank R pid P" once and "step R S" every 10 steps."""
import ctypes
import os
import sys
import time

import torch
import torch.distributed as dist

WORLD = int(os.environ.get("WORLD", "4"))
ODD = int(os.environ.get("DIVERGE_RANK", "-1"))
MODE = os.environ.get("DIVERGE_MODE", "skip")
AFTER = int(os.environ.get("DIVERGE_AFTER", "20"))


def odd_one_out():
    if MODE == "skip":
        while True:
            time.sleep(0.1)
    elif MODE == "wedge":
        ctypes.PyDLL(None).sleep(3600)
    elif MODE == "exit":
        # The process ends; a child keeps its sockets open, so the other
        # ranks wait as they would under NCCL (with gloo alone they would
        # see the closed connections and fail at once).
        child = os.fork()
        if child == 0:
            time.sleep(120)
            os._exit(0)
        print("holder pid %d" % child, flush=True)
        os._exit(0)


def train(rank, world):
    if "RANK" not in os.environ:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    else:
        dist.init_process_group("gloo")
    rank = dist.get_rank()
    print("rank %d pid %d" % (rank, os.getpid()), flush=True)
    if os.environ.get("JOB") == "ddp":
        return train_ddp(rank)
    x = torch.ones(64, 64)
    step = 0
    while True:
        if rank == ODD and step == AFTER:
            odd_one_out()
        y = x @ x
        t = torch.tensor([float(rank)])
        dist.all_reduce(t)
        if step % 10 == 0:
            print("step %d %d" % (rank, step), flush=True)
        step += 1
        time.sleep(0.01)
        del y


def train_ddp(rank):
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.manual_seed(0)
    model = DDP(torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(),
                                    torch.nn.Linear(32, 1)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(16, 32)
    step = 0
    while True:
        loss = model(x).sum()
        if not (rank == ODD and step >= AFTER):
            loss.backward()
            opt.step()
            opt.zero_grad()
        if step % 10 == 0:
            print("step %d %d" % (rank, step), flush=True)
        step += 1
        time.sleep(0.01)


if __name__ == "__main__":
    if os.environ.get("LAUNCH", "spawn") == "torchrun":
        train(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    else:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", sys.argv[1] if len(sys.argv) > 1 else "29511")
        import torch.multiprocessing as mp
        mp.spawn(train, args=(WORLD,), nprocs=WORLD, join=True)
