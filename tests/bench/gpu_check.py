"""Runs a short CUDA training loop with the agent loaded in this process
and prints, step by step, `allocated` of the model's forward row in
python.torch_trace next to torch.cuda.memory_allocated() read by the loop
right after the same forward. Exits 1 when they differ.

Run by tests/bench/gpu-check.sh (which builds the agent first).
"""
import json
import os
import socket
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "agent", "python"))
os.environ["PROBING"] = "1"
os.environ.setdefault("PROBING_LOG", "/tmp/probing-gpu-check-%d.log" % os.getpid())
from probing import _boot  # noqa: E402  (loads the agent: PROBING=1)

core = _boot.load()
if core is None or core.socket() is None:
    sys.exit("gpu_check: the agent did not start")

import torch  # noqa: E402  (imported after the agent, as with PROBING=1)
from torch import nn  # noqa: E402


def query(sql):
    """POST /query over the agent's abstract unix socket."""
    body = json.dumps({"sql": sql}).encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0probing-%d" % os.getpid())
    s.sendall(b"POST /query HTTP/1.1\r\nHost: probing\r\nContent-Type: application/json\r\n"
              b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        out = b""
        while rest:
            n, _, rest = rest.partition(b"\r\n")
            n = int(n, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        rest = out
    r = json.loads(rest)
    if "error" in r:
        sys.exit("gpu_check: query failed: %s" % r["error"])
    return [dict(zip(r["columns"], row)) for row in r["rows"]]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(inplace=True),
                                     nn.Linear(4096, 4096), nn.ReLU(inplace=True))
        self.head = nn.Linear(4096, 1024)

    def forward(self, x):
        return self.head(self.encoder(x))


torch.manual_seed(0)
dev = torch.device("cuda")
model = Net().to(dev)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
mine = {}
for step in range(16):
    batch = 256 * (1 + step % 4)  # memory goes up and down
    x = torch.randn(batch, 1024, device=dev)
    opt.zero_grad(set_to_none=True)
    out = model(x)
    mine[step] = torch.cuda.memory_allocated() / 2**20
    loss = out.float().pow(2).mean()
    loss.backward()
    opt.step()
torch.cuda.synchronize()

rows = query("SELECT step, allocated FROM python.torch_trace "
             "WHERE module = 'Net' AND stage = 'forward' ORDER BY step")
print("%4s  %22s  %28s  %s" % ("step", "torch_trace allocated", "torch.cuda.memory_allocated()", ""))
bad = 0
for r in rows:
    m = mine.get(r["step"])
    ok = m is not None and abs(m - r["allocated"]) < 1e-6
    bad += not ok
    print("%4d  %19.1f MB  %25.1f MB  %s" % (r["step"], r["allocated"], m or -1, "ok" if ok else "DIFFERS"))
print()
print("one step, every row (step 5):")
for r in query("SELECT seq, module, stage, allocated, duration FROM python.torch_trace "
               "WHERE step = 5 ORDER BY seq"):
    print("  %3d  %-16s %-9s %9.1f MB  %8.3f ms" % (r["seq"], r["module"], r["stage"],
                                                   r["allocated"], r["duration"] * 1e3))
if not rows or bad:
    print("gpu_check: FAILED (%d of %d steps differ)" % (bad, len(rows)))
    sys.exit(1)
print("gpu_check: ok, allocated follows torch.cuda.memory_allocated() over %d steps" % len(rows))
