"""The whole job across two "hosts": ranks in two network namespaces joined
by a veth pair, gloo over the veth, every agent on TCP with one token.
From a pid on either side, `job:` finds every rank: the local ones by unix
socket (abstract sockets are per network namespace), the others over TCP
at the endpoint they published in the job's c10d store."""
import json
import os
import re
import subprocess

import pytest

from conftest import PROBING, PY, Proc, WORKLOADS, needs_torch, wait_for

# every test here runs a torch.distributed job
pytestmark = needs_torch

TOKEN = "two-hosts-t0ken"
AGENT_PORT = 9300  # + rank; the namespaces are new, so every port is free


def ip(*args):
    subprocess.run(["ip"] + list(args), check=True, capture_output=True)


def listening_in_its_netns(pid):
    """True when @probing-PID listens in pid's own network namespace."""
    name = "@probing-%d" % pid
    try:
        with open("/proc/%d/net/unix" % pid) as f:
            return any(len(p) >= 8 and p[7] == name and int(p[3], 16) & 0x10000
                       for p in (line.split() for line in f))
    except OSError:
        return False


def probing_in(ns, *args, token=TOKEN, timeout=60):
    """Runs ./probing inside network namespace ns."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBING")}
    if token:
        env["PROBING_AUTH_TOKEN"] = token
    return subprocess.run(["ip", "netns", "exec", ns, PROBING] + [str(a) for a in args],
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_hosts(userbase):
    """Ranks 0-1 in namespace A (which also holds the store, at rank 0),
    ranks 2-3 in B; rank 3 leaves the loop after 20 steps and sleeps, so
    the others wait in all_reduce. Yields (namespaces, {rank: pid})."""
    n = os.getpid() % 200 + 20
    ns = ("probing-ja%d" % n, "probing-jb%d" % n)
    dev = ("pja%d" % n, "pjb%d" % n)
    addr = ("10.232.%d.1" % n, "10.232.%d.2" % n)
    procs = []
    try:
        for x in ns:
            ip("netns", "add", x)
        ip("link", "add", dev[0], "netns", ns[0], "type", "veth", "peer", "name", dev[1],
           "netns", ns[1])
        for x, d, a in zip(ns, dev, addr):
            ip("-n", x, "addr", "add", a + "/24", "dev", d)
            ip("-n", x, "link", "set", d, "up")
            ip("-n", x, "link", "set", "lo", "up")
        for rank in range(4):
            side = rank // 2
            env = dict(userbase, PROBING="1", PROBING_PORT=str(AGENT_PORT + rank),
                       PROBING_AUTH_TOKEN=TOKEN, LAUNCH="torchrun", RANK=str(rank),
                       WORLD_SIZE="4", LOCAL_RANK=str(rank % 2), MASTER_ADDR=addr[0],
                       MASTER_PORT="29400", GLOO_SOCKET_IFNAME=dev[side],
                       DIVERGE_RANK="3", DIVERGE_MODE="skip", DIVERGE_AFTER="20")
            procs.append(Proc(["ip", "netns", "exec", ns[side], PY,
                               os.path.join(WORKLOADS, "dist_job.py")], env))
        pids = {r: p.pid for r, p in enumerate(procs)}

        def up():
            for p in procs:
                assert p.alive(), "rank died: %s" % p.err()[-3000:]
            return all("rank %d pid %d" % (r, p.pid) in p.out() for r, p in enumerate(procs)) \
                and all(listening_in_its_netns(p.pid) for p in procs)
        wait_for(up, 120, "every rank stepping with its agent", interval=0.2)
        yield ns, pids
    finally:
        for p in procs:
            p.kill()
        for x in ns:
            subprocess.run(["ip", "netns", "del", x], capture_output=True)


def rows_of(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("side", [0, 1])
def test_job_target_reaches_every_rank_from_either_side(two_hosts, side):
    ns, pids = two_hosts
    local = (0, 1) if side == 0 else (2, 3)
    sql = "SELECT rank, world_size, pid FROM python.process"

    def everyone():
        r = probing_in(ns[side], "-t", "job:%d" % pids[local[1]], "query", "-f", "json", sql)
        rows = rows_of(r) if r.returncode == 0 else []
        return rows if [x["rank"] for x in rows] == [0, 1, 2, 3] else None

    # the store is read live; a rank publishes once its group is up
    rows = wait_for(everyone, 60, "all four ranks from namespace %s" % ns[side], interval=0.5)
    assert [x["pid"] for x in rows] == [pids[r] for r in range(4)]
    for x in rows:
        if x["rank"] in local:
            assert x["target"] == str(pids[x["rank"]])  # unix socket
        else:
            assert re.fullmatch(r"10\.232\.\d+\.\d:%d" % (AGENT_PORT + x["rank"]), x["target"])
    # the remote ranks need the token: without it they are named, the local ones still answer
    r = probing_in(ns[side], "-t", "job:%d" % pids[local[0]], "query", "-f", "json", sql,
                   token="wrong")
    assert r.returncode == 1
    assert sorted(x["rank"] for x in json.loads(r.stdout)) == list(local)
    assert "token" in r.stderr


def test_hang_and_merge_across_hosts(two_hosts):
    ns, pids = two_hosts

    def diagnosed():
        r = probing_in(ns[0], "-t", "job:%d" % pids[0], "hang", "-f", "json")
        d = json.loads(r.stdout) if r.stdout else {}
        return (r, d) if d.get("hung") and d.get("waiting") == [0, 1, 2] else None

    r, d = wait_for(diagnosed, 90, "a hang naming ranks 0-2 as waiting", interval=0.5)
    assert r.returncode == 1
    assert d["collective"]["op"] == "all_reduce"
    assert [x["rank"] for x in d["not_waiting"]] == [3]
    assert d["not_waiting"][0]["func"] == "odd_one_out"

    r = probing_in(ns[1], "-t", "job:%d" % pids[3], "backtrace", "--merge")
    assert r.returncode == 0, r.stderr
    assert re.search(r"\[0-2\] all_reduce", r.stdout), r.stdout
    assert re.search(r"\[3\] odd_one_out \(", r.stdout), r.stdout
