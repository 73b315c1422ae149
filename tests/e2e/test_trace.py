"""`probing trace`: torch_trace rows as Chrome trace-event JSON, read back
with Perfetto's trace processor when it can run here (else a schema check,
see trace_reader.py)."""
import json
import os
import subprocess
import time

from conftest import PY, ROOT, WORKLOADS, needs_torch, probing, wait_for  # noqa: F401

VENV_PY = os.path.join(ROOT, ".build", "venv", "bin", "python")


def read_trace(path):
    py = VENV_PY if os.path.exists(VENV_PY) else PY
    r = subprocess.run([py, os.path.join(os.path.dirname(__file__), "trace_reader.py"),
                        path], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    print("trace reader: %s %s" % (doc["reader"], doc["note"]))
    assert doc["errors"] == [], doc["errors"][:10]
    return doc


def train(spawn, *extra, env=None):
    return spawn("train_torch.py", env=env or {}, argv=[
        PY, os.path.join(WORKLOADS, "train_torch.py"), "--steps", "0"] + list(extra))


@needs_torch
def test_trace_steps_nest_module_calls(spawn, tmp_path):
    p = train(spawn, "--sleep", "0.01")
    p.wait_out("step 6", timeout=60)
    out = tmp_path / "t.json"
    r = probing("-t", p.pid, "trace", "--steps", "3", "-o", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
    raw = json.loads(out.read_text())
    meta = [e for e in raw["traceEvents"] if e["ph"] == "M"]
    assert {"process_name": "rank 0 (pid %d)" % p.pid}.items() <= {
        e["name"]: e["args"].get("name") for e in meta}.items()
    doc = read_trace(str(out))
    slices = doc["slices"]
    steps = [s for s in slices if s["cat"] == "train_step"]
    assert len(steps) == 3, [s["name"] for s in steps]
    assert all(s["depth"] == 0 and s["pid"] == p.pid for s in steps)
    calls = [s for s in slices if s["cat"] != "train_step"]
    assert calls and all(s["depth"] >= 1 for s in calls), calls
    by = {(s["name"], s["cat"]): s for s in calls}
    for (name, cat), parent in ((("Net", "forward"), "step "),
                                (("Net.encoder", "forward"), "Net"),
                                (("Net.encoder.0", "forward"), "Net.encoder"),
                                (("Net", "backward"), "step "),
                                (("SGD", "step"), "step ")):
        got = by[(name, cat)]["parent"] or ""
        assert got.startswith(parent), (name, cat, got, slices)
    assert p.alive()


@needs_torch
def test_trace_empty_ring_is_a_valid_empty_file(spawn, tmp_path):
    p = spawn("idle.py")
    out = tmp_path / "empty.json"
    r = probing("-t", p.pid, "trace", "-o", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "no torch_trace rows" in r.stderr
    assert json.loads(out.read_text())["traceEvents"] == []
    assert read_trace(str(out))["slices"] == []
    r = probing("-t", p.pid, "trace")
    assert r.returncode == 0 and json.loads(r.stdout)["traceEvents"] == []


@needs_torch
def test_trace_unwritable_output_is_a_clear_error(spawn, tmp_path):
    p = spawn("idle.py")
    r = probing("-t", p.pid, "trace", "-o", "/nonexistent/dir/t.json")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("probing: cannot write /nonexistent/dir/t.json: "
                               "No such file or directory"), r.stderr
    r = probing("-t", p.pid, "trace", "-o", tmp_path)
    assert r.returncode == 1 and "Is a directory" in r.stderr


def test_trace_usage_errors():
    for args in (["--steps", "0"], ["--steps", "x"], ["extra"], ["-q"]):
        r = probing("-t", "1", "trace", *args)
        assert r.returncode == 2 and r.stdout == "", (args, r.stderr)
    r = probing("trace")
    assert r.returncode == 2 and "no target" in r.stderr


@needs_torch
def test_trace_10000_rows(spawn, tmp_path):
    p = train(spawn, env={"PROBING_TORCH_PROFILING": "on"})
    def rows():
        r = probing("-t", p.pid, "query", "-f", "json",
                    "SELECT COALESCE(MAX(id), 0) AS n FROM python.torch_trace")
        return r.returncode == 0 and json.loads(r.stdout)[0]["n"] >= 10000
    wait_for(rows, timeout=180, what="10,000 torch_trace rows", interval=0.5)
    out = tmp_path / "big.json"
    t0 = time.monotonic()
    r = probing("-t", p.pid, "trace", "-o", out)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["otherData"]["rows"] == 10000
    print("trace of 10000 rows: %.2f s, %d bytes" % (took, out.stat().st_size))
    got = read_trace(str(out))
    assert len([s for s in got["slices"] if s["cat"] != "train_step"]) == 10000
    assert p.alive()


@needs_torch
def test_trace_of_a_job_has_a_process_per_rank_and_collectives(userbase, tmp_path):
    from test_job import start_job, stop_job
    p, pids, _ = start_job(userbase, "skip", odd=-1, world=2)
    try:
        wait_for(lambda: "step 1 10" in p.out(), 60, "rank 1 at step 10")
        out = tmp_path / "job.json"
        r = probing("-t", "job:%d" % pids[0], "trace", "-o", out)
        assert r.returncode == 0, r.stderr
        raw = json.loads(out.read_text())
        names = {e["pid"]: e["args"]["name"] for e in raw["traceEvents"]
                 if e["ph"] == "M" and e["name"] == "process_name"}
        assert names == {pids[0]: "rank 0 (pid %d)" % pids[0],
                         pids[1]: "rank 1 (pid %d)" % pids[1]}, names
        doc = read_trace(str(out))
        coll = [s for s in doc["slices"] if s["cat"] == "collective"]
        assert {s["pid"] for s in coll} == set(pids.values())
        assert "all_reduce" in {s["name"] for s in coll}
    finally:
        stop_job(p)
