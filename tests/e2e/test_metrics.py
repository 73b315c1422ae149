"""/metrics and `probing metrics`: Prometheus text that promtool accepts,
scraped by a real Prometheus server (Debian's `prometheus`) from two
probed jobs over TCP with a token."""
import json
import os
import re
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request

import pytest

from conftest import PY, WORKLOADS, needs_torch, probing, wait_for

TOKEN = "metrics-test-token"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def promtool_ok(text):
    r = subprocess.run(["promtool", "check", "metrics"], input=text,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def series(text, name):
    """The samples of name as (labels dict, value)."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^%s\{(.*)\} (\S+)$" % re.escape(name), line)
        if m:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
            out.append((labels, float(m.group(2))))
    return out


def metrics(pid):
    r = probing("-t", pid, "metrics")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return r.stdout


def test_metrics_without_torch(spawn):
    p = spawn("idle.py", env={"RANK": "2", "SLURM_JOB_ID": "4242"})
    text = metrics(p.pid)
    promtool_ok(text)
    up = series(text, "probing_agent_uptime_seconds")
    assert len(up) == 1 and up[0][1] >= 0
    labels = up[0][0]
    assert labels["rank"] == "2" and labels["job"] == "slurm:4242"
    assert labels["host"] == socket.gethostname()
    assert series(text, "probing_ring_dropped_rows_total")
    assert "probing_torch_steps_total" not in text
    assert p.alive() and "Traceback" not in p.err()


@needs_torch
def test_metrics_with_torch(spawn):
    p = spawn("train_torch.py", env={}, argv=[PY, os.path.join(
        WORKLOADS, "train_torch.py"), "--steps", "0", "--sleep", "0.01"])
    p.wait_out("step 5", timeout=60)

    def steps():
        s = series(metrics(p.pid), "probing_torch_steps_total")
        return s and s[0][1] >= 3
    wait_for(steps, timeout=30, what="steps in /metrics", interval=0.2)
    text = metrics(p.pid)
    promtool_ok(text)
    mods = series(text, "probing_torch_module_seconds_count")
    stages = {(l["module"], l["stage"]) for l, _ in mods}
    assert ("Net", "forward") in stages and ("Net", "backward") in stages
    assert series(text, "probing_torch_optimizer_step_seconds_sum")[0][0][
        "optimizer"] == "SGD"
    h = series(text, "probing_torch_step_duration_seconds_count")
    assert h and h[0][1] >= 1
    inf = [v for l, v in series(text, "probing_torch_step_duration_seconds_bucket")
           if l["le"] == "+Inf"]
    assert inf == [h[0][1]]
    assert series(text, "probing_torch_memory_allocated_bytes")
    # Counters only grow between scrapes.
    s1 = series(text, "probing_torch_steps_total")[0][1]
    wait_for(lambda: series(metrics(p.pid), "probing_torch_steps_total")[0][1] > s1,
             timeout=30, what="more steps", interval=0.2)
    assert p.alive()


@needs_torch
def test_metrics_tracing_disabled(spawn):
    p = spawn("train_torch.py", env={"PROBING_TORCH_PROFILING": "off"},
              argv=[PY, os.path.join(WORKLOADS, "train_torch.py"),
                    "--steps", "0", "--sleep", "0.01"])
    p.wait_out("step 3", timeout=60)
    text = metrics(p.pid)
    promtool_ok(text)
    assert series(text, "probing_torch_tracing_enabled")[0][1] == 0
    assert "probing_torch_steps_total" not in text
    assert series(text, "probing_ring_rows_total")[0][1] == 0


def test_metrics_usage_errors():
    r = probing("metrics")
    assert r.returncode == 2 and r.stdout == "" and "no target" in r.stderr
    r = probing("-t", "1", "metrics", "extra")
    assert r.returncode == 2 and r.stdout == ""


def test_metrics_several_targets_merge(spawn):
    a = spawn("idle.py", env={"RANK": "0"})
    b = spawn("idle.py", env={"RANK": "1"})
    r = probing("-t", "%d,%d" % (a.pid, b.pid), "metrics")
    assert r.returncode == 0, r.stderr
    promtool_ok(r.stdout)
    ranks = {l["rank"] for l, _ in series(r.stdout, "probing_agent_uptime_seconds")}
    assert ranks == {"0", "1"}
    assert r.stdout.count("# TYPE probing_agent_uptime_seconds ") == 1


def prom_get(port, path, **params):
    url = "http://127.0.0.1:%d%s?%s" % (port, path, urllib.parse.urlencode(params))
    with urllib.request.urlopen(url, timeout=10) as f:
        return json.loads(f.read())


@needs_torch
@pytest.mark.skipif(shutil.which("prometheus") is None,
                    reason="prometheus is missing (make deps)")
def test_prometheus_scrapes_two_jobs(spawn, tmp_path):
    ports = [free_port(), free_port(), free_port()]
    jobs = []
    for rank, port in enumerate(ports):
        jobs.append(spawn("train_torch.py", env={
            "PROBING_PORT": str(port), "PROBING_AUTH_TOKEN": TOKEN,
            "RANK": str(rank), "WORLD_SIZE": "2",
            "TORCHELASTIC_RUN_ID": "jobA"},
            argv=[PY, os.path.join(WORKLOADS, "train_torch.py"), "--steps", "0",
                  "--sleep", "0.02"]))
    for j in jobs:
        j.wait_out("step 2", timeout=60)
    tok = tmp_path / "token"
    tok.write_text(TOKEN)
    bad = tmp_path / "bad-token"
    bad.write_text("not-the-token")
    cfg = tmp_path / "prometheus.yml"
    # honor_labels keeps the agent's job label (the training job) rather
    # than renaming it exported_job.
    cfg.write_text("""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: probing
    honor_labels: true
    authorization:
      credentials_file: %s
    static_configs:
      - targets: ['127.0.0.1:%d', '127.0.0.1:%d']
  - job_name: wrong-token
    authorization:
      credentials_file: %s
    static_configs:
      - targets: ['127.0.0.1:%d']
""" % (tok, ports[0], ports[1], bad, ports[2]))
    r = subprocess.run(["promtool", "check", "config", str(cfg)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    web = free_port()
    log = open(tmp_path / "prometheus.log", "w")
    prom = subprocess.Popen(
        ["prometheus", "--config.file=%s" % cfg,
         "--storage.tsdb.path=%s" % (tmp_path / "tsdb"),
         "--web.listen-address=127.0.0.1:%d" % web, "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def result(q):
            try:
                r = prom_get(web, "/api/v1/query", query=q)
            except OSError:
                return None
            return r["data"]["result"] if r.get("status") == "success" else None

        got = wait_for(lambda: (lambda r: r if r and len(r) == 2 else None)(
            result('probing_torch_steps_total{job="torchelastic:jobA"} > 0')),
            timeout=90, what="two jobs' steps in Prometheus", interval=0.5)
        labels = sorted((s["metric"]["rank"], s["metric"]["host"],
                         s["metric"]["job"]) for s in got)
        assert labels == [("0", socket.gethostname(), "torchelastic:jobA"),
                          ("1", socket.gethostname(), "torchelastic:jobA")]
        for q in ('probing_agent_uptime_seconds{job="torchelastic:jobA"}',
                  'probing_torch_step_duration_seconds_count{job="torchelastic:jobA"}',
                  'probing_torch_module_seconds_sum{job="torchelastic:jobA",module="Net",'
                  'stage="forward"}',
                  'probing_ring_dropped_rows_total{job="torchelastic:jobA",table="torch_trace"}'):
            r = wait_for(lambda: (lambda r: r if r and len(r) == 2 else None)(
                result(q)), timeout=30, what=q, interval=0.5)
            assert {s["metric"]["rank"] for s in r} == {"0", "1"}

        def wrong_down():
            t = prom_get(web, "/api/v1/targets")["data"]["activeTargets"]
            t = [x for x in t if x["labels"]["job"] == "wrong-token"]
            return t if t and t[0]["health"] == "down" else None
        t = wait_for(wrong_down, timeout=30, what="the wrong-token target down",
                     interval=0.5)
        assert "401" in t[0]["lastError"]
        up = result('up{job="wrong-token"}')
        assert up and up[0]["value"][1] == "0"
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=20)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()
        log.close()
    for j in jobs:
        assert j.alive(), j.err()


@needs_torch
def test_metrics_collectives_of_a_job(userbase):
    from test_job import start_job, stop_job
    p, pids, _ = start_job(userbase, "skip", odd=-1, world=2)
    try:
        def done():
            t = metrics(pids[1])
            s = [v for l, v in series(t, "probing_torch_collectives_total")
                 if l["op"] == "all_reduce" and l["state"] == "done"]
            return t if s and s[0] >= 3 else None
        text = wait_for(done, timeout=60, what="all_reduce counted", interval=0.5)
        promtool_ok(text)
        up = series(text, "probing_agent_uptime_seconds")[0][0]
        assert up["rank"] == "1"
        assert series(text, "probing_torch_collective_seconds_count")
        assert series(text, "probing_torch_collectives_running")
        assert [v for l, v in series(text, "probing_ring_rows_total")
                if l["table"] == "collectives"][0] >= 3
    finally:
        stop_job(p)
