"""The bundled demo: a small PyTorch model training on random data.

python3 demo_train.py [--slow] [--steps N]; runs until killed by default.
"""
import argparse
import os
import time

import torch
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--slow", action="store_true", help="a slower, wider model")
parser.add_argument("--steps", type=int, default=0, help="stop after N steps")
args = parser.parse_args()

torch.manual_seed(0)
width = 512 if args.slow else 256


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, width), nn.ReLU(inplace=True),
                                     nn.Linear(width, width), nn.ReLU(inplace=True))
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.encoder(x))


model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
loss_fn = nn.CrossEntropyLoss()
x = torch.randn(128, 64)
y = torch.randint(0, 10, (128,))
print("training", os.getpid(), flush=True)
step = 0
while args.steps == 0 or step < args.steps:
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    step += 1
    if step % 200 == 0:
        print("step", step, "loss %.4f" % loss.item(), flush=True)
    time.sleep(0.005 if not args.slow else 0.02)
