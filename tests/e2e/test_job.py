"""The whole job: 4-rank gloo jobs (torch.multiprocessing.spawn and
torchrun), one rank going wrong, seen from one pid."""
import json
import os
import re
import socket
import subprocess
import tempfile

import pytest

from conftest import PROBING, PY, Proc, TORCH_ENV, WORKLOADS, agent_listening, needs_torch, probing, wait_for

# every test here runs a torch.distributed job
pytestmark = needs_torch


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_job(userbase, mode="skip", odd=2, after=20, world=4, launch="spawn", job=""):
    """Starts dist_job.py with the agent in every rank (PROBING=2: the
    launcher and the processes it starts), by torch.multiprocessing.spawn
    or torchrun; returns (proc, {rank: pid}, port). The caller kills proc
    with stop_job."""
    port = free_port()
    env = dict(userbase, PROBING="2", DIVERGE_RANK=str(odd), DIVERGE_MODE=mode,
               DIVERGE_AFTER=str(after), WORLD=str(world), LAUNCH=launch, JOB=job)
    script = os.path.join(WORKLOADS, "dist_job.py")
    if launch == "torchrun" and TORCH_ENV.get("USE_LIBUV") == "0":
        # its rendezvous makes a TCPStore asking for libuv whatever the
        # environment says: no torchrun job can start on such a torch
        pytest.skip("torchrun cannot start on a torch built without libuv (Debian's 2.6 and 2.14)")
    if launch == "torchrun":
        # Debian's torch 1.13 on Python 3.11 cannot parse the default
        # --redirects 0 (IntFlag iteration changed); 1 with --tee 1 works.
        logs = tempfile.mkdtemp(prefix="probing-torchrun-")
        argv = [PY, "-m", "torch.distributed.run", "--nproc_per_node", str(world),
                "--master_port", str(port), "--redirects", "1", "--tee", "1",
                "--log_dir", logs, script]
    else:
        argv = [PY, script, str(port)]
    p = Proc(argv, env)
    pids = {}

    def ranks_up():
        for m in re.finditer(r"rank (\d+) pid (\d+)", p.out()):
            pids[int(m.group(1))] = int(m.group(2))
        return len(pids) == world and all(agent_listening(x) for x in pids.values())

    try:
        wait_for(ranks_up, 120, "every rank with its agent")
    except BaseException:
        print("out:", p.out()[-3000:], "err:", p.err()[-3000:], "pids:", pids)
        stop_job(p)
        raise
    return p, pids, port


def stop_job(p):
    """Kills the launcher and every rank it started."""
    subprocess.run(["pkill", "-KILL", "-P", str(p.pid)], capture_output=True)
    p.kill()


def diagnose(pid, want_waiting, timeout=90):
    """Runs hang on job:pid until it names want_waiting as the waiting
    ranks; returns the JSON and the text run's output."""
    def once():
        r = probing("-t", "job:%d" % pid, "hang", "-f", "json")
        assert r.stdout, r.stderr
        d = json.loads(r.stdout)
        return (r, d) if d["hung"] and d["waiting"] == want_waiting else None

    r, d = wait_for(once, timeout, "a hang naming ranks %s as waiting" % want_waiting)
    assert r.returncode == 1
    return d, probing("-t", "job:%d" % pid, "hang").stdout


@pytest.mark.parametrize("launch,mode,job", [
    ("spawn", "exit", ""), ("torchrun", "wedge", ""), ("spawn", "skip", "ddp")])
def test_hang_other_ways_a_rank_goes_wrong(userbase, launch, mode, job):
    p, pids, _ = start_job(userbase, mode, launch=launch, job=job,
                           after=30 if job else 20)
    try:
        d, text = diagnose(pids[0], [0, 1, 3])
        if mode == "exit":
            # rank 2 is gone: its agent went with it
            assert d["not_found"] == [2] or [x["target"] for x in d["no_answer"]] == [str(pids[2])]
            assert "no agent found for rank 2" in text or "did not answer" in text
        else:
            odd = d["not_waiting"]
            assert [x["rank"] for x in odd] == [2]
        if mode == "wedge":
            assert odd[0]["func"] == "odd_one_out" and odd[0]["state"] == "holding the GIL"
            assert odd[0]["stepping"] is False
        if job == "ddp":
            # DDP's allreduce comes from C++: named from the stacks
            assert "collective" not in d
            assert "c10d code" in text
            # its loop: in train_ddp's sleep, or inside the model's forward
            assert odd[0]["func"] == "train_ddp" or "/torch/" in odd[0]["file"], odd
    finally:
        for m in re.finditer(r"holder pid (\d+)", p.out()):
            subprocess.run(["kill", "-KILL", m.group(1)], capture_output=True)
        stop_job(p)


@pytest.fixture(scope="module")
def job_skip(userbase):
    p, pids, _ = start_job(userbase, "skip")
    # the others are stuck in all_reduce once rank 2 stops stepping
    wait_for(lambda: "step 2 10" in p.out(), 60, "rank 2 to reach step 10")
    yield p, pids
    stop_job(p)


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


@pytest.fixture(scope="module")
def job_running(userbase):
    """A healthy 4-rank job (the odd rank goes wrong only much later)."""
    p, pids, port = start_job(userbase, "skip", after=10 ** 9)
    wait_for(lambda: "step 0 10" in p.out(), 60, "rank 0 to step")
    yield p, pids, port
    stop_job(p)


def test_job_target_finds_every_rank_in_rank_order(job_running):
    p, pids, port = job_running
    for r in (0, 3):
        out = probing("-t", "job:%d" % pids[r], "query", "-f", "json",
                      "SELECT rank, world_size, job, backend FROM python.process")
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        assert [x["rank"] for x in rows] == [0, 1, 2, 3]
        assert [x["target"] for x in rows] == [str(pids[i]) for i in range(4)]
        assert {x["job"] for x in rows} == {"c10d:127.0.0.1:%d" % port}
        assert {x["backend"] for x in rows} == {"gloo"}


def test_job_store_lists_every_rank(job_running):
    p, pids, port = job_running

    def members():
        r = subprocess.run(["curl", "-s", "--abstract-unix-socket",
                            "probing-%d" % pids[1], "http://agent/job"],
                           capture_output=True, text=True, timeout=30)
        got = json.loads(r.stdout).get("members") or []
        return got if len(got) == 4 else None

    got = wait_for(members, 30, "every rank published in the job's store")
    assert sorted((m["rank"], m["pid"]) for m in got) == sorted((r, pid) for r, pid in pids.items())


def test_collectives_rows_line_up_across_ranks(job_running):
    p, pids, port = job_running
    targets = ",".join(str(pids[r]) for r in range(4))
    r = probing("-t", targets, "query", "-f", "json",
                "SELECT rank, seq, op, group_name, group_size, numel, dtype, bytes, state, site "
                "FROM python.collectives WHERE state = 'done' ORDER BY seq DESC LIMIT 50")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert {x["rank"] for x in rows} == {0, 1, 2, 3}
    x = rows[0]
    assert (x["op"], x["group_size"], x["numel"], x["dtype"], x["bytes"]) == \
        ("all_reduce", 4, 1, "torch.float32", 4)
    assert x["site"].endswith("dist_job.py:%d" % line_of("dist.all_reduce(t)"))
    # the group's own sequence numbers: the same collective has the same seq everywhere
    by_rank = {}
    for x in rows:
        by_rank.setdefault(x["rank"], set()).add(x["seq"])
    common = set.intersection(*by_rank.values())
    assert common, by_rank


def line_of(text):
    with open(os.path.join(WORKLOADS, "dist_job.py")) as f:
        for i, line in enumerate(f, 1):
            if text in line:
                return i
    raise AssertionError(text)


def test_job_target_errors(spawn, tmp_path):
    p = spawn("idle.py")
    r = probing("-t", "job:%d" % p.pid, "query", "SELECT 1")
    assert r.returncode == 1 and r.stdout == ""
    assert "is not in a distributed job" in r.stderr
    hosts = tmp_path / "hosts"
    hosts.write_text("# ranks\n%d\n\nnot a target\n" % p.pid)
    r = probing("-t", "@%s" % hosts, "query", "SELECT 1")
    assert r.returncode == 2 and r.stdout == ""
    assert "%s:4:" % hosts in r.stderr
    hosts.write_text("%d  # the only one\n" % p.pid)
    r = probing("-t", "@%s" % hosts, "query", "-f", "json", "SELECT 1 AS one")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"one": 1}]
    r = probing("-t", "@%s" % (tmp_path / "missing"), "query", "SELECT 1")
    assert r.returncode == 1 and "cannot read host file" in r.stderr


def test_hang_names_the_rank_that_skipped_the_collective(job_skip):
    p, pids = job_skip

    def diagnosed():
        r = probing("-t", "job:%d" % pids[0], "hang", "-f", "json")
        d = json.loads(r.stdout)
        return (r, d) if d["hung"] and d["waiting"] == [0, 1, 3] else None

    r, d = wait_for(diagnosed, 60, "a hang naming ranks 0,1,3 as waiting")
    assert r.returncode == 1
    c = d["collective"]
    assert c["op"] == "all_reduce" and c["group_size"] == 4
    assert c["site"].endswith("dist_job.py:%d" % line_of("dist.all_reduce(t)"))
    assert [w["rank"] for w in d["not_waiting"]] == [2]
    odd = d["not_waiting"][0]
    assert odd["func"] == "odd_one_out" and odd["file"].endswith("dist_job.py")
    assert odd["target"] == str(pids[2]) and odd["stepping"] is False
    text = probing("-t", "job:%d" % pids[3], "hang")
    assert text.returncode == 1
    assert re.search(r"hang: ranks 0-1,3 wait in all_reduce \(group \S+ of 4, seq \d+\) "
                     r"called at \S+dist_job.py:\d+, for \d+\.\d s", text.stdout), text.stdout
    assert re.search(r"rank 2 \(%d\) is not in it: odd_one_out \(\S+dist_job.py:\d+\)" % pids[2],
                     text.stdout), text.stdout


def test_hang_says_nothing_on_a_healthy_job(job_running):
    p, pids, port = job_running
    r = probing("-t", "job:%d" % pids[1], "hang", "--interval", "0.5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("no hang")


def test_hang_bad_interval():
    r = probing("-t", "1", "hang", "--interval", "0")
    assert r.returncode == 2 and r.stdout == "" and "--interval" in r.stderr


def test_top_over_a_job_shows_one_row_per_rank_in_rank_order(job_running):
    p, pids, port = job_running
    r = probing("-t", "job:%d" % pids[2], "top", "--batch", "-n", "2", "-d", "1", timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if x.split()[:1] and x.split()[0] in
             {str(v) for v in pids.values()}]
    # the last round: pid and rank columns, in rank order
    tail = lines[-4:]
    assert [int(x.split()[0]) for x in tail] == [pids[i] for i in range(4)], r.stdout
    assert [x.split()[1] for x in tail] == ["0", "1", "2", "3"], r.stdout
    assert "RANK" in r.stdout


def test_top_stacks_pane_merges_every_rank(job_skip):
    """m in the Stacks pane: one tree over every target with rank sets."""
    from test_top import Tmux
    p, pids = job_skip
    t = Tmux("probing-job-top-%d" % os.getpid(),
             [PROBING, "-t", "job:%d" % pids[0], "top"], x=180, y=60)
    try:
        t.wait(lambda s: all(("%d " % pid) in s for pid in pids.values()), 60, "every rank")
        t.keys("3")
        t.wait_text("Stacks of", 30)
        t.keys("m")
        s = t.wait(lambda s: "[0-1,3] all_reduce" in s and "[2] odd_one_out" in s, 60,
                   "the merged tree")
        assert "Stacks merged over 4 targets" in s
        assert re.search(r"\[0-3\] \S+", s)
        t.keys("m")
        t.wait_text("Stacks of", 30)
    finally:
        t.kill()
