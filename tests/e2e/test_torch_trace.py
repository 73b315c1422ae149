"""python.torch_trace: module, backward and optimizer-step rows from live
training loops, reached the three ways a process gets the agent."""
import json
import os
import re
import time

import pytest

from conftest import PY, WORKLOADS, needs_torch, probing, wait_for

TRAIN = os.path.join(WORKLOADS, "train_torch.py")

pytestmark = needs_torch


def q(pid, sql):
    r = probing("-t", pid, "query", "-f", "json", sql)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if r.stdout.strip() else []


def rows_for(pid, where="1"):
    return q(pid, "SELECT step, seq, module, stage, allocated, duration, rank "
                  "FROM python.torch_trace WHERE %s ORDER BY step, seq" % where)


def wait_rows(pid, where="1", n=1, timeout=30):
    return wait_for(lambda: len(rows_for(pid, where)) >= n and rows_for(pid, where),
                    timeout, "%d torch_trace rows where %s" % (n, where), interval=0.1)


def full_step(pid):
    """The rows of the newest step that has its optimizer-step row."""
    def get():
        r = q(pid, "SELECT MAX(step) AS s FROM python.torch_trace WHERE stage = 'step'")
        return r and r[0]["s"] is not None and r[0]["s"]
    s = wait_for(get, 30, "a complete traced step", interval=0.1)
    return rows_for(pid, "step = %d" % s)


def last_step(p):
    """The number of the workload's last complete `step N` line."""
    return int(re.findall(r"^step (\d+)$", p.out(), re.M)[-1])


def train(spawn, *argv, env=None, probing_mode="1"):
    p = spawn(None, probing=probing_mode, env=env, wait=False,
              argv=[PY, TRAIN] + [str(a) for a in argv])
    p.wait_out("ready", timeout=120)
    return p


# the table ---------------------------------------------------------------

def test_columns_names_stages_and_order(spawn):
    p = train(spawn, "--sleep", "0.02")
    rows = full_step(p.pid)
    mods = [(r["module"], r["stage"]) for r in rows]
    fwd = [m for m, s in mods if s == "forward"]
    assert fwd[:3] == ["Net", "Net.encoder", "Net.encoder.0"], fwd
    assert "Net.head" in fwd and "CrossEntropyLoss" in fwd
    bwd = [m for m, s in mods if s == "backward"]
    assert set(bwd) >= {"Net", "Net.encoder", "Net.encoder.0", "Net.encoder.2", "Net.head"}, bwd
    # backward runs in reverse: the head before the encoder's first layer,
    # the root last
    assert bwd.index("Net.head") < bwd.index("Net.encoder.0") < bwd.index("Net")
    assert mods[-1] == ("SGD", "step")
    assert [r["seq"] for r in rows] == list(range(len(rows)))
    for r in rows:
        assert r["duration"] > 0 and r["allocated"] == 0 and r["rank"] == 0
    net_f = [r for r in rows if r["module"] == "Net" and r["stage"] == "forward"][0]
    enc_f = [r for r in rows if r["module"] == "Net.encoder" and r["stage"] == "forward"][0]
    assert net_f["duration"] >= enc_f["duration"]
    cols = q(p.pid, "SELECT * FROM python.torch_trace LIMIT 1")[0]
    assert list(cols)[:6] == ["step", "seq", "module", "stage", "allocated", "duration"]


def test_steps_count_optimizer_steps_from_zero(spawn):
    p = train(spawn, "--sleep", "0.01")
    p.wait_out("step 5")
    steps = q(p.pid, "SELECT step FROM python.torch_trace WHERE stage = 'step' ORDER BY step")
    steps = [r["step"] for r in steps]
    assert steps[:5] == [0, 1, 2, 3, 4]


def test_inference_steps_are_outermost_calls(spawn):
    p = train(spawn, "--infer", "--sleep", "0.01")
    p.wait_out("step 4")
    rows = rows_for(p.pid, "module = 'Net'")
    assert [r["step"] for r in rows][:3] == [0, 1, 2]
    assert {r["stage"] for r in rows_for(p.pid)} == {"forward"}


def test_rows_visible_without_delay(spawn):
    """A step's rows are in the ring before the loop goes on: the first
    query after the loop printed "step N" sees step N-1's optimizer row
    (no flush interval, no polling)."""
    p = train(spawn, "--sleep", "0.3")
    p.wait_out("step 2")
    for _ in range(3):
        n = last_step(p)
        rows = rows_for(p.pid, "stage = 'step' AND step = %d" % (n - 1))
        assert len(rows) == 1, (n, rows)
        p.wait_out("step %d" % (n + 1))


# correctness -------------------------------------------------------------

def losses(spawn, tmp_path, name, probing_mode, model):
    path = tmp_path / name
    p = spawn(None, probing=probing_mode, wait=False,
              argv=[PY, TRAIN, "--steps", "30", "--model", model, "--losses", str(path)])
    p.p.wait(timeout=120)
    assert p.p.returncode == 0, p.err()
    return path.read_text().split()


@pytest.mark.parametrize("model", ["inplace", "tuple"])
def test_losses_bit_identical_with_tracing(spawn, tmp_path, model):
    """In-place ReLU after traced modules (the ResNet pattern), residual
    adds, tuple outputs: training computes exactly what it does unprobed."""
    plain = losses(spawn, tmp_path, "plain", None, model)
    traced = losses(spawn, tmp_path, "traced", "1", model)
    assert len(plain) == 30
    assert traced == plain


def test_inplace_model_has_backward_rows(spawn):
    p = train(spawn, "--model", "inplace", "--sleep", "0.01")
    rows = full_step(p.pid)
    bwd = {r["module"] for r in rows if r["stage"] == "backward"}
    assert {"Net.encoder.2.fc1", "Net.encoder.2.relu", "Net.encoder.2", "Net.encoder.1"} <= bwd
    assert "BackwardHookFunction" not in p.err()


def test_dataloader_workers_keep_working(spawn):
    p = train(spawn, "--workers", "2", "--sleep", "0.01", "--steps", "40")
    p.wait_out("done", timeout=120)
    assert p.p.wait(timeout=30) == 0, p.err()


def test_dataloader_workers_do_not_serve(spawn):
    p = train(spawn, "--workers", "2", "--sleep", "0.05")
    p.wait_out("step 3")
    kids = [int(x) for x in open("/proc/%d/task/%d/children" % (p.pid, p.pid)).read().split()]
    assert len(kids) >= 2
    names = open("/proc/net/unix").read()
    for k in kids:
        assert "@probing-%d" % k not in names
    assert rows_for(p.pid, "stage = 'step'")


# the three ways in -------------------------------------------------------

def test_torch_imported_after_the_agent(spawn):
    p = train(spawn, "--import-delay", "1.0", "--sleep", "0.01")
    rows = full_step(p.pid)
    assert rows[0]["module"] == "Net"


def test_first_step_right_after_import_is_traced(spawn):
    """A loop that starts at once after `import torch`: its first forward
    and optimizer step are traced as step 0, one seq each (the optimizer
    taking over the step count kept the first step's seq), and the trace
    counts the steps the loop counts."""
    for _ in range(3):
        p = train(spawn, "--import-delay", "0.2", "--sleep", "0.3")
        p.wait_out("step 2")
        first = rows_for(p.pid, "step = 0")
        assert [r["seq"] for r in first] == list(range(len(first))), first
        assert (first[0]["module"], first[0]["stage"]) == ("Net", "forward"), first
        assert (first[-1]["module"], first[-1]["stage"]) == ("SGD", "step"), first
        before = last_step(p)
        m = q(p.pid, "SELECT MAX(step) AS s FROM python.torch_trace WHERE stage = 'step'")[0]["s"]
        after = last_step(p)
        # "step N" is printed after the loop's N-th step, traced as N - 1.
        assert before - 1 <= m <= after - 1, (before, m, after)
        p.kill()


def test_inject_into_running_loop(spawn):
    p = train(spawn, "--sleep", "0.01", probing_mode=None)
    p.wait_out("step 3")
    r = probing("-t", p.pid, "inject")
    assert r.returncode == 0, r.stderr
    rows = full_step(p.pid)
    assert rows[0]["module"] == "Net" and rows[-1]["module"] == "SGD"
    n = last_step(p)
    p.wait_out("step %d" % (n + 5))
    assert p.alive()


# live config ------------------------------------------------------------

def test_sample_rate_traces_whole_steps(spawn):
    p = train(spawn, "--sleep", "0.005", env={"PROBING_SAMPLE_RATE": "0.25"})
    p.wait_out("step 20")
    per = q(p.pid, "SELECT step, COUNT(*) AS n FROM python.torch_trace "
                   "WHERE step < 16 GROUP BY step ORDER BY step")
    assert [r["step"] for r in per] == [0, 4, 8, 12]
    assert len({r["n"] for r in per}) == 1  # all of a step or none of it


def test_sample_rate_traces_exactly_that_share_of_steps(spawn):
    """0.7 is 7 of every 10 steps (not rounded to every step): step s is
    traced when ceil((s+1)*0.7) > ceil(s*0.7), the same steps on every rank."""
    p = train(spawn, "--sleep", "0.005", env={"PROBING_SAMPLE_RATE": "0.7"})
    p.wait_out("step 32")
    steps = {r["step"] for r in q(p.pid, "SELECT DISTINCT step FROM python.torch_trace "
                                         "WHERE stage = 'step' AND step < 30")}
    for lo in (0, 10, 20):
        assert len([s for s in steps if lo <= s < lo + 10]) == 7, sorted(steps)
    assert steps == {s for s in range(30) if -(-(s + 1) * 7 // 10) > -(-s * 7 // 10)}


def test_sample_rate_live(spawn):
    p = train(spawn, "--sleep", "0.005")
    p.wait_out("step 3")
    r = probing("-t", p.pid, "config", "probing.sample_rate=0.1")
    assert r.returncode == 0, r.stderr
    n = last_step(p)
    p.wait_out("step %d" % (n + 35))
    steps = [x["step"] for x in q(p.pid, "SELECT DISTINCT step FROM python.torch_trace "
                                         "WHERE step > %d ORDER BY step" % (n + 2))]
    assert steps and all(s % 10 == 0 for s in steps), steps


def test_disable_removes_hooks_and_enable_resumes(spawn):
    p = train(spawn, "--sleep", "0.005")
    p.wait_out("step 3")
    r = probing("-t", p.pid, "config", "probing.torch.enabled=false")
    assert r.returncode == 0, r.stderr
    r = probing("-t", p.pid, "eval",
                "import torch.nn.modules.module as m\n"
                "print(len(m._global_forward_pre_hooks), len(m._global_forward_hooks), "
                "type(torch.optim.SGD.__dict__['step']).__name__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "0", "function"]
    time.sleep(0.1)
    n0 = len(rows_for(p.pid))
    time.sleep(0.3)
    assert len(rows_for(p.pid)) == n0
    r = probing("-t", p.pid, "config", "probing.torch.enabled=true")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: len(rows_for(p.pid)) > n0, 10, "rows after enabling again")


def test_disabled_at_start(spawn):
    p = train(spawn, "--sleep", "0.005", env={"PROBING_TORCH_PROFILING": "off"})
    p.wait_out("step 10")
    assert rows_for(p.pid) == []
    r = probing("-t", p.pid, "config", "probing.torch.enabled=true")
    assert r.returncode == 0, r.stderr
    wait_rows(p.pid, "stage = 'step'")


def test_buffer_size_keeps_newest(spawn):
    p = train(spawn, "--sleep", "0.005")
    r = probing("-t", p.pid, "config", "probing.buffer_size=50")
    assert r.returncode == 0, r.stderr
    p.wait_out("step 10")
    rows = q(p.pid, "SELECT step FROM python.torch_trace")
    assert len(rows) == 50
    assert min(x["step"] for x in rows) > 3


IMPORT_AFTER = """
import os, threading, time, _imp
time.sleep(0.3)
import torch
m = torch.nn.Linear(2, 2)
m(torch.randn(1, 2))
time.sleep(0.5)
done = []
t = threading.Thread(target=lambda: (__import__("json"), done.append(1)), daemon=True)
t.start()
t.join(5)
print("held", _imp.lock_held(), "other thread imported", bool(done), flush=True)
time.sleep(60)
"""


def test_import_torch_under_the_agent_leaves_the_import_lock_free(spawn, tmp_path):
    # Regression: installing the hooks from inside torch's own import left
    # the interpreter's import lock held, so other threads could not import.
    s = tmp_path / "imp.py"
    s.write_text(IMPORT_AFTER)
    for _ in range(3):
        p = spawn(str(s))
        p.wait_out("held", timeout=60)
        assert "held False other thread imported True" in p.out(), p.out()
        r = probing("-t", p.pid, "eval", "import codeop; 'ok'", timeout=30)
        assert r.stdout == "'ok'\n", r.stderr
        p.kill()


AT_ONCE = """
import sys, time
time.sleep(0.3)
calls = set()
def prof(frame, event, arg):
    if event == "call":
        calls.add(frame.f_code.co_name)
def first_call():
    pass
if sys.argv[1] == "profiled":
    sys.setprofile(prof)
try:
    raise KeyError("the program's own")
except KeyError:
    import torch
    first_call()
    from torch.nn.modules import module
    print("hooks", len(module._global_forward_pre_hooks), len(module._global_forward_hooks),
          "handling", repr(sys.exc_info()[1]), flush=True)
t0 = time.monotonic()
while not module._global_forward_pre_hooks and time.monotonic() < t0 + 30:
    first_call()
sys.setprofile(None)
print("hooks in", bool(module._global_forward_pre_hooks), flush=True)
print("profiler saw", sorted(c for c in calls if c.startswith("register_") and "hook" in c), flush=True)
time.sleep(60)
"""


def test_hooks_go_in_before_the_importing_threads_next_call(spawn, tmp_path):
    """The hooks go in on the thread that imported torch, at its first call
    after the import, so no model can run untraced in between; the thread
    keeps the exception it was handling."""
    s = tmp_path / "at_once.py"
    s.write_text(AT_ONCE)
    for _ in range(3):
        p = spawn(None, argv=[PY, str(s), "plain"])
        p.wait_out("profiler saw", timeout=120)
        assert "hooks 1 1 handling KeyError(\"the program's own\")" in p.out(), p.out()
        p.kill()


def test_hooks_go_in_under_a_profiler_unseen(spawn, tmp_path):
    """Under a profiler the hooks go in too (on 3.11, from the setup thread's
    next ask, 0.2 ms later: a call queued from inside another would stall a
    traced 3.11 thread), and the program's profiler sees none of the calls
    that put them in."""
    s = tmp_path / "at_once.py"
    s.write_text(AT_ONCE)
    p = spawn(None, argv=[PY, str(s), "profiled"])
    p.wait_out("profiler saw", timeout=120)
    assert "handling KeyError(\"the program's own\")" in p.out(), p.out()
    assert "hooks in True" in p.out() and "profiler saw []" in p.out(), p.out()


def test_steps_continue_the_optimizers_own_count_after_inject(spawn):
    """Ranks probed at different times number steps alike: Adam keeps a
    count of its steps, and the clock starts from it."""
    p = train(spawn, "--sleep", "0.01", "--optim", "Adam", probing_mode=None)
    p.wait_out("step 20")
    r = probing("-t", p.pid, "inject")
    assert r.returncode == 0, r.stderr
    got = wait_for(lambda: q(p.pid, "SELECT MIN(step) AS s FROM python.torch_trace "
                                    "WHERE stage = 'step'")[0]["s"], 30, "a traced step")
    assert got >= 20
    p.wait_out("step %d" % (got + 3))  # printed once got+3 steps are done
    # one row per step from there on, numbered on
    rows = q(p.pid, "SELECT step FROM python.torch_trace WHERE stage = 'step' ORDER BY step")
    assert [x["step"] for x in rows[:3]] == [got, got + 1, got + 2]
