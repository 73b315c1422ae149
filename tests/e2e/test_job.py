"""The whole job: 4-rank gloo jobs (torch.multiprocessing.spawn and
torchrun), one rank going wrong, seen from one pid."""
import json
import os
import re
import socket

import pytest

from conftest import PY, WORKLOADS, agent_listening, probing, wait_for


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_job(spawn, mode="skip", odd=2, after=20, world=4):
    port = free_port()
    p = spawn(None, probing="2", wait=False, argv=[PY, os.path.join(WORKLOADS, "dist_job.py"), str(port)],
              env={"DIVERGE_RANK": str(odd), "DIVERGE_MODE": mode,
                   "DIVERGE_AFTER": str(after), "WORLD": str(world)},
              )
    pids = {}

    def ranks_up():
        for m in re.finditer(r"rank (\d+) pid (\d+)", p.out()):
            pids[int(m.group(1))] = int(m.group(2))
        return len(pids) == world and all(agent_listening(x) for x in pids.values())

    try:
        wait_for(ranks_up, 120, "every rank with its agent")
    except BaseException:
        print("out:", p.out()[-3000:], "err:", p.err()[-3000:], "pids:", pids)
        raise
    return p, pids, port


@pytest.fixture
def job_skip(spawn):
    p, pids, _ = start_job(spawn, "skip")
    # the others are stuck in all_reduce once rank 2 stops stepping
    wait_for(lambda: "step 2 10" in p.out(), 60, "rank 2 to reach step 10")
    return p, pids


def test_merge_names_the_odd_rank(job_skip):
    p, pids = job_skip
    targets = ",".join(str(pids[r]) for r in sorted(pids))

    def merged():
        r = probing("-t", targets, "backtrace", "--merge", "-f", "json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def find(nodes, func):
        for n in nodes:
            if n["func"] == func:
                return n
            got = find(n["children"], func)
            if got:
                return got
        return None

    def settled():
        tree = merged()
        odd = find(tree, "odd_one_out")
        ar = find(tree, "all_reduce")
        return (tree, odd, ar) if odd and ar and ar["ranks"] == [0, 1, 3] else None

    tree, odd, ar = wait_for(settled, 60, "ranks 0,1,3 in all_reduce and 2 elsewhere")
    assert odd["ranks"] == [2]
    assert odd["frame_type"] == "Python" and odd["file"].endswith("dist_job.py")
    top = [n for n in tree if n["func"] == "<module>"]
    assert top and top[0]["ranks"] == [0, 1, 2, 3]
    text = probing("-t", targets, "backtrace", "--merge").stdout
    assert re.search(r"\[0-1,3\] all_reduce", text)
    assert re.search(r"\[2\] train .*only these", text)
    assert re.search(r"\[2\] odd_one_out \(", text)
    # collapsed by default: no eval-loop frames between Python frames
    assert "_PyEval_EvalFrameDefault" not in text
    full = probing("-t", targets, "backtrace", "--merge", "--native", "all").stdout
    assert "Py_RunMain" in full or "_start" in full


def test_merge_bad_native_value():
    r = probing("-t", "1", "backtrace", "--merge", "--native", "some")
    assert r.returncode == 2 and r.stdout == ""
    assert "--native takes all or collapsed" in r.stderr
