"""python.collectives names each call's own group: the wrapper keeps a
group's name, size and rank between calls (asked of torch once per
group), and must never hand one group's to another."""
import json
import socket

from conftest import PY, needs_torch, probing

# every test here runs a torch.distributed job
pytestmark = needs_torch

SCRIPT = r"""
import sys, time, torch, torch.distributed as dist
dist.init_process_group("gloo", rank=0, world_size=1)
deadline = time.monotonic() + 30
while not hasattr(dist.all_reduce, "__wrapped__") and time.monotonic() < deadline:
    time.sleep(0.05)
t = torch.ones(3, dtype=torch.float64)
dist.all_reduce(t)
g = dist.new_group([0])
dist.all_reduce(torch.ones(2, dtype=torch.int32), group=g)
dist.destroy_process_group(g)
del g
dist.all_reduce(t)
print("done", flush=True)
while True:
    time.sleep(0.1)
"""


def test_collectives_rows_name_each_group(spawn):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = spawn(None, env={"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
              argv=[PY, "-c", SCRIPT])
    p.wait_out("done", 60)
    r = probing("-t", p.pid, "query", "-f", "json",
                "SELECT group_name, group_size, rank, numel, dtype, state "
                "FROM python.collectives WHERE op = 'all_reduce'")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(x["numel"], x["dtype"], x["group_size"], x["rank"], x["state"]) for x in rows] == [
        (3, "torch.float64", 1, 0, "done"), (2, "torch.int32", 1, 0, "done"),
        (3, "torch.float64", 1, 0, "done")]
    names = [x["group_name"] for x in rows]
    assert names[0] == names[2] != names[1], names
    assert p.alive()
