"""A small seeded PyTorch training loop for the torch_trace tests.

python3 train_torch.py [--steps N] [--model mlp|inplace|tuple] [--sleep S]
    [--losses FILE] [--workers N] [--import-delay S] [--infer]

Prints "ready PID" once torch is imported and the model built, then
"step N" after each step; with --losses writes every loss as float.hex().
--steps 0 runs until killed. --import-delay sleeps before importing torch
(so an agent loaded at start sees torch arrive later).
"""
import argparse
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=0)
parser.add_argument("--model", default="mlp")
parser.add_argument("--sleep", type=float, default=0.0)
parser.add_argument("--losses", default="")
parser.add_argument("--workers", type=int, default=0)
parser.add_argument("--import-delay", type=float, default=0.0)
parser.add_argument("--infer", action="store_true", help="no optimizer, no grad")
parser.add_argument("--optim", default="SGD")
args = parser.parse_args()

if args.import_delay:
    print("waiting", os.getpid(), flush=True)
    time.sleep(args.import_delay)

import torch
from torch import nn

torch.manual_seed(0)
torch.set_num_threads(1)


class Block(nn.Module):
    """Linear + in-place ReLU + a residual: the torchvision ResNet pattern
    that breaks naive full backward hooks."""

    def __init__(self, w):
        super().__init__()
        self.fc1 = nn.Linear(w, w)
        self.bn1 = nn.BatchNorm1d(w)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(w, w)
        self.bn2 = nn.BatchNorm1d(w)

    def forward(self, x):
        out = self.relu(self.bn1(self.fc1(x)))
        out = self.bn2(self.fc2(out))
        out += x
        return self.relu(out)


class TupleOut(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.fc = nn.Linear(w, w)

    def forward(self, x):
        y = self.fc(x)
        return y, {"aux": y.detach()}


class Net(nn.Module):
    def __init__(self, kind, w=64):
        super().__init__()
        self.kind = kind
        if kind == "inplace":
            self.encoder = nn.Sequential(nn.Linear(32, w), nn.ReLU(inplace=True),
                                         Block(w), Block(w))
        else:
            self.encoder = nn.Sequential(nn.Linear(32, w), nn.ReLU(),
                                         nn.Linear(w, w), nn.ReLU())
        self.pair = TupleOut(w) if kind == "tuple" else None
        self.head = nn.Linear(w, 10)

    def forward(self, x):
        h = self.encoder(x)
        if self.pair is not None:
            h, _ = self.pair(h)
        return self.head(h)


model = Net(args.model)
opt = getattr(torch.optim, args.optim)(model.parameters(), lr=0.01)
loss_fn = nn.CrossEntropyLoss()
xs = torch.randn(256, 32)
ys = torch.randint(0, 10, (256,))
loader = None
if args.workers:
    ds = torch.utils.data.TensorDataset(xs, ys)
    # fork, as the tests mean (3.14 made forkserver the default, which
    # would re-run this script, with no __main__ guard, in each worker)
    loader = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=args.workers,
                                         multiprocessing_context="fork")

out = open(args.losses, "w") if args.losses else None
print("ready", os.getpid(), flush=True)


def batches():
    while True:
        if loader is not None:
            for b in loader:
                yield b
        else:
            for i in range(0, 256, 32):
                yield xs[i:i + 32], ys[i:i + 32]


step = 0
for x, y in batches():
    if args.steps and step >= args.steps:
        break
    if args.infer:
        with torch.no_grad():
            loss = loss_fn(model(x), y)
    else:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    if out:
        out.write(loss.item().hex() + "\n")
        out.flush()
    step += 1
    print("step", step, flush=True)
    if args.sleep:
        time.sleep(args.sleep)
if out:
    out.close()
print("done", flush=True)
