"""The process's place in its job: python.process and /identity, read
when asked (the job may set its rank after the agent came)."""
import json
import socket
import subprocess

from conftest import needs_torch, probing


def process_row(pid):
    r = probing("-t", pid, "query", "-f", "json", "SELECT * FROM python.process")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 1
    return rows[0]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_process_row_from_start_environment(spawn):
    p = spawn("idle.py", env={"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                              "TORCHELASTIC_RUN_ID": "abc", "MASTER_ADDR": "10.0.0.1",
                              "MASTER_PORT": "29500"})
    row = process_row(p.pid)
    assert row["pid"] == p.pid
    assert row["host"] == socket.gethostname()
    assert (row["rank"], row["world_size"], row["local_rank"]) == (3, 4, 1)
    assert row["job"] == "torchelastic:abc"
    assert row["master_addr"] == "10.0.0.1" and row["master_port"] == 29500
    assert row["python"].startswith("3.")
    assert row["endpoint"] == "@probing-%d" % p.pid
    assert row["source"] == "environ"
    assert row["start_time"] > 1e9


def test_no_job_gives_nulls(spawn):
    p = spawn("idle.py")
    row = process_row(p.pid)
    assert row["rank"] is None and row["world_size"] is None and row["job"] is None


def rank_env_after_environ(spawn, tmp_path):
    """rank_env.py once it has set RANK and friends in os.environ."""
    ctl = tmp_path / "ctl"
    p = spawn("rank_env.py", env={"RANK_CTL": str(ctl), "DIST_PORT": str(free_port())})
    p.wait_out("ready")
    assert process_row(p.pid)["rank"] is None
    ctl.write_text("env")
    p.wait_out("env set")
    row = process_row(p.pid)
    assert (row["rank"], row["world_size"], row["job"]) == (5, 8, "torchelastic:run-42")
    return p, ctl


def test_identity_follows_environ(spawn, tmp_path):
    rank_env_after_environ(spawn, tmp_path)


@needs_torch
def test_identity_follows_torch_distributed(spawn, tmp_path):
    p, ctl = rank_env_after_environ(spawn, tmp_path)
    ctl.write_text("dist")
    p.wait_out("dist set", timeout=60)
    row = process_row(p.pid)
    assert row["source"] == "torch.distributed"
    assert row["backend"] == "gloo"
    assert (row["rank"], row["world_size"]) == (0, 1)  # the group wins over RANK=5
    assert row["torch"]


def test_identity_route(spawn):
    p = spawn("idle.py", env={"SLURM_JOB_ID": "77", "SLURM_PROCID": "2", "SLURM_NTASKS": "16"})
    r = subprocess.run(["curl", "-sf", "--abstract-unix-socket", "probing-%d" % p.pid,
                        "http://agent/identity"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["rank"], out["world_size"], out["job"]) == (2, 16, "slurm:77")
    assert out["pid"] == p.pid


def test_list_shows_rank_world_size_and_job(spawn):
    p = spawn("idle.py", env={"RANK": "6", "WORLD_SIZE": "8", "TORCHELASTIC_RUN_ID": "xyz"})
    q = spawn("idle.py")
    r = probing("list", "-f", "json")
    assert r.returncode == 0, r.stderr
    rows = {x["pid"]: x for x in json.loads(r.stdout)}
    assert (rows[p.pid]["rank"], rows[p.pid]["world_size"], rows[p.pid]["job"]) == \
        (6, 8, "torchelastic:xyz")
    assert (rows[q.pid]["rank"], rows[q.pid]["world_size"], rows[q.pid]["job"]) == (None, None, None)
    text = probing("list").stdout.splitlines()
    assert text[0].split()[:6] == ["pid", "user", "python", "rank", "world_size", "job"]
    # (numbers are right-aligned: a 4-digit pid among 5-digit ones is indented)
    line = [x for x in text if x.split()[:1] == [str(p.pid)]][0]
    assert "torchelastic:xyz" in line
