"""The whole job when part of it is broken: the job's store went away, a
rank whose agent does not answer. `job:` still answers with what it can
reach and names the rest on stderr."""
import json
import os
import re
import signal

from conftest import needs_torch, probing, wait_for

# every test here runs a torch.distributed job
pytestmark = needs_torch
from test_job import start_job


def kill_pids(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_job_target_when_the_store_went_away(userbase):
    """torchrun's launcher holds the store; killed, its ranks run on (gloo
    talks rank to rank) and are still found on this host."""
    p, pids, port = start_job(userbase, "skip", after=10 ** 9, launch="torchrun")
    try:
        p.kill()
        sql = "SELECT rank, job FROM python.process"

        def local_only():
            r = probing("-t", "job:%d" % pids[1], "query", "-f", "json", sql)
            return r if "store" in r.stderr else None

        r = wait_for(local_only, 30, "the store's error on stderr", interval=0.3)
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)
        assert [x["rank"] for x in rows] == [0, 1, 2, 3]
        assert {x["job"] for x in rows} == {"c10d:127.0.0.1:%d" % port}
        assert re.search(r"probing: job c10d:127\.0\.0\.1:%d: cannot read the job's store: "
                         r".*refused" % port, r.stderr), r.stderr
        assert all(os.path.exists("/proc/%d" % pid) for pid in pids.values())
    finally:
        p.kill()
        kill_pids(pids.values())


def test_job_target_with_a_stopped_rank(userbase):
    """A rank whose agent cannot answer (the process is stopped): the
    others' rows come back after the timeout, that rank is named."""
    p, pids, port = start_job(userbase, "skip", after=10 ** 9)
    try:
        wait_for(lambda: "step 0 10" in p.out(), 60, "rank 0 to step")
        os.kill(pids[2], signal.SIGSTOP)
        r = probing("--timeout", "1", "-t", "job:%d" % pids[0], "query", "-f", "json",
                    "SELECT rank FROM python.process")
        assert r.returncode == 1
        assert [x["rank"] for x in json.loads(r.stdout)] == [0, 1, 3]
        assert re.search(r"probing: rank 2 \(%d\): " % pids[2], r.stderr), r.stderr
        # hang names it by rank and pid too, as not answering (not as not found)
        r = probing("--timeout", "1", "-t", "job:%d" % pids[0], "hang", "-f", "json")
        d = json.loads(r.stdout)
        assert [(x["rank"], x["target"]) for x in d["no_answer"]] == [(2, str(pids[2]))], d
        assert d["not_found"] == []
        r = probing("--timeout", "1", "-t", "job:%d" % pids[0], "hang")
        assert "rank 2 (%d) did not answer" % pids[2] in r.stdout, r.stdout
        os.kill(pids[2], signal.SIGCONT)
        # it answers again, and was left running
        r = probing("-t", "job:%d" % pids[0], "query", "-f", "json",
                    "SELECT rank FROM python.process")
        assert [x["rank"] for x in json.loads(r.stdout)] == [0, 1, 2, 3], r.stderr
        n = p.out().count("step 2 ")
        wait_for(lambda: p.out().count("step 2 ") > n, 30, "rank 2 to step again")
    finally:
        os.kill(pids[2], signal.SIGCONT)
        kill_pids(pids.values())
        p.kill()
