"""backtrace: every thread's Python and native stack, also when the process
is hung (GIL held forever in C, deadlocked threads, agent injected late)."""
import ast
import json
import os
import re
import subprocess
import time

import pytest

from conftest import BUILD, PY, Proc, WORKLOADS, needs_torch, probing, wait_for

WORKLOAD = os.path.join(WORKLOADS, "bt-workload.py")
WAITS = os.path.join(WORKLOADS, "bt-waits.py")
HOLD_GIL_SO = os.path.join(BUILD, "hold-gil.so")
COLUMNS = ["func", "file", "lineno", "depth", "frame_type", "thread_id",
           "thread_name"]


def source_line(snippet):
    """The 1-based line of the workload that contains snippet."""
    with open(WORKLOAD, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if snippet in line:
                return i
    raise AssertionError("%r not in the workload" % snippet)


@pytest.fixture
def workload():
    """workload(mode, agent=True, env={}) starts bt-workload.py MODE, waits
    for "ready" (and the agent), and kills it after the test."""
    procs = []

    def start(mode, agent=True, env=None, script=WORKLOAD):
        e = {k: v for k, v in os.environ.items() if not k.startswith("PROBING")}
        e["PYTHONUNBUFFERED"] = "1"
        e["HOLD_GIL_SO"] = HOLD_GIL_SO
        if agent:
            e["PROBING"] = "1"
        e.update(env or {})
        p = Proc([PY, script, mode], e)
        procs.append(p)
        wait_for(lambda: "ready" in p.out() or not p.alive(), 20,
                 "the %s workload" % mode)
        assert p.alive(), p.err()
        if agent:
            p.wait_agent()
        return p

    yield start
    for p in procs:
        p.kill()


def bt_json(pid, *args):
    r = probing("-t", pid, "backtrace", "-f", "json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def thread_named(threads, name):
    for t in threads:
        if t["thread_name"] == name:
            return t
    raise AssertionError("no thread %r in %s" % (name, [t["thread_name"] for t in threads]))


def py_funcs(thread):
    return [f["func"] for f in thread["frames"] if f["type"] == "Python"]


def index_of(frames, func, start=0):
    for i in range(start, len(frames)):
        if frames[i]["func"] == func:
            return i
    raise AssertionError("no frame %r after %d in %s" % (func, start, [f["func"] for f in frames]))


def test_table_has_the_documented_columns_first(workload):
    p = workload("shapes")
    r = probing("-t", p.pid, "query", "-f", "json",
                "SELECT * FROM python.backtrace")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert list(rows[0].keys())[:7] == COLUMNS
    types = {row["frame_type"] for row in rows}
    assert types == {"Python", "Native"}
    for row in rows:
        assert isinstance(row["depth"], int)
        assert isinstance(row["thread_id"], int)
        if row["frame_type"] == "Python":
            assert isinstance(row["lineno"], int) and row["lineno"] > 0
    # depth counts from 0, innermost first, per thread
    by_tid = {}
    for row in rows:
        by_tid.setdefault(row["thread_id"], []).append(row["depth"])
    for depths in by_tid.values():
        assert depths == list(range(len(depths)))
    # the agent's own threads are not shown
    assert not any(row["thread_name"].startswith("probing-") for row in rows)


def test_shapes_recursion_names_generators_exec_lambda_class(workload):
    p = workload("shapes")
    threads = bt_json(p.pid)
    park = source_line("time.sleep(3600)")

    rec = thread_named(threads, "recursion-thread")
    funcs = py_funcs(rec)
    assert funcs[0] == "park_forever"
    assert funcs[1:27] == ["recurse"] * 26
    recurse_frames = [f for f in rec["frames"] if f["func"] == "recurse"]
    assert recurse_frames[0]["lineno"] == source_line("def recurse(") + 3
    assert {f["lineno"] for f in recurse_frames[1:]} == {source_line("return recurse(n - 1, event)")}
    assert rec["frames"][index_of(rec["frames"], "park_forever")]["lineno"] == park

    gen = py_funcs(thread_named(threads, "generator-thread"))
    assert gen[:3] == ["park_forever", "gen_body", "drive_generator"]

    coro = py_funcs(thread_named(threads, "coroutine-thread"))
    assert coro[:4] == ["park_forever", "coro_inner", "coro_outer", "drive_coroutine"]

    ex = thread_named(threads, "exec-thread")
    pyf = [f for f in ex["frames"] if f["type"] == "Python"]
    assert [f["func"] for f in pyf[:4]] == ["park_forever", "from_exec", "<module>", "exec_string"]
    assert pyf[1]["file"] == "<string>" and pyf[1]["lineno"] == 3
    assert pyf[2]["file"] == "<string>" and pyf[2]["lineno"] == 4

    lam = py_funcs(thread_named(threads, "lambda-thread"))
    assert lam[:3] == ["park_forever", "run_lambda.<locals>.<lambda>", "run_lambda"]

    cls = py_funcs(thread_named(threads, "class-thread"))
    assert cls[:3] == ["park_forever", "class_body.<locals>.Holder", "class_body"]

    uni = thread_named(threads, "ünïcødé-线程")
    f = uni["frames"][index_of(uni["frames"], "größe_função")]
    assert f["file"] == WORKLOAD and f["lineno"] == source_line("def größe_função") + 2


def test_python_and_native_frames_merge_in_call_order(workload):
    p = workload("shapes")
    main = thread_named(bt_json(p.pid), "MainThread")
    frames = main["frames"]
    funcs = [f["func"] for f in frames]
    # innermost: the sleep syscall in libc, then the Python frames that
    # called it, then the interpreter's start-up native frames
    assert frames[0]["type"] == "Native" and "libc" in frames[0]["file"]
    i = index_of(frames, "park_forever")
    assert all(f["type"] == "Native" for f in frames[:i])
    assert funcs[i:i + 3] == ["park_forever", "shapes", "<module>"]
    # Py_RunMain, or Py_BytesMain where it is inlined there (a build
    # without --enable-shared, e.g. 3.12.5 from source)
    start = [k for k, f in enumerate(funcs) if f in ("Py_RunMain", "Py_BytesMain")]
    assert start and start[0] > i + 2, funcs
    # eval-loop frames are replaced by the Python frames they ran
    assert "_PyEval_EvalFrameDefault" not in funcs
    assert main["state"] == "idle in a syscall (clock_nanosleep)"


def test_gil_held_forever_in_c_answers_within_a_second(workload):
    p = workload("hold-gil")
    t0 = time.monotonic()
    r = probing("-t", p.pid, "backtrace")
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert elapsed < 1.0, "backtrace took %.2fs" % elapsed
    text = r.stdout
    header = re.search(r"^thread %d .*$" % p.pid, text, re.M)
    assert header and "holding the GIL" in header.group(0), text
    main = text[header.start():].split("\n\n")[0].splitlines()
    names = [re.split(r" [\[(]", line.strip())[0] for line in main[1:]]
    # native frames inside the C call, then the Python frames that led to it
    assert names.index("hold_gil_inner") < names.index("hold_gil_sleep") \
        < names.index("call_into_c") < names.index("hold_gil") < names.index("<module>")
    assert re.search(r"hold_gil_sleep \[hold-gil\.so\+0x[0-9a-f]+\]", text)
    assert "call_into_c (%s:%d)" % (WORKLOAD, source_line("(lib.hold_gil_forever if spin")) in text
    # the other thread is shown too
    assert "park_forever (%s:" % WORKLOAD in text.split("\n\n", 1)[1]


def test_gil_held_by_a_busy_c_loop(workload):
    p = workload("spin-gil")
    t0 = time.monotonic()
    threads = bt_json(p.pid, "--thread", p.pid)
    assert time.monotonic() - t0 < 1.0
    assert len(threads) == 1
    main = threads[0]
    assert main["state"] == "holding the GIL"
    funcs = [f["func"] for f in main["frames"]]
    assert funcs[0] == "hold_gil_inner"
    assert funcs.index("hold_gil_forever") < funcs.index("call_into_c") < funcs.index("hold_gil")


def test_agent_injected_while_already_hung(workload):
    p = workload("hold-gil", agent=False)
    r = probing("-t", p.pid, "inject")
    assert r.returncode == 0, r.stderr
    threads = bt_json(p.pid)
    main = [t for t in threads if t["thread_id"] == p.pid][0]
    assert main["state"] == "holding the GIL"
    funcs = py_funcs(main)
    # frames entered long before the agent was loaded
    assert funcs == ["call_into_c", "hold_gil", "<module>"]
    assert "hold_gil_sleep" in [f["func"] for f in main["frames"]]
    others = [t for t in threads if t["thread_id"] != p.pid]
    assert any(py_funcs(t)[:1] == ["park_forever"] for t in others)


def test_deadlocked_threads_show_both_stacks(workload):
    p = workload("deadlock")
    threads = bt_json(p.pid)
    ab = thread_named(threads, "locker-ab")
    ba = thread_named(threads, "locker-ba")
    fa = [f for f in ab["frames"] if f["type"] == "Python"][0]
    fb = [f for f in ba["frames"] if f["type"] == "Python"][0]
    assert fa["func"] == "deadlock.<locals>.take_a_then_b"
    assert fb["func"] == "deadlock.<locals>.take_b_then_a"
    lines = [i for i, l in enumerate(open(WORKLOAD, encoding="utf-8"), 1) if l.strip() == "with b:"]
    assert fa["lineno"] in lines
    lines = [i for i, l in enumerate(open(WORKLOAD, encoding="utf-8"), 1) if l.strip() == "with a:"]
    assert fb["lineno"] in lines
    for t in (ab, ba):
        assert t["state"] == "idle in a syscall (futex)"
        # 3.13+ locks wait in the parking lot
        assert {"PyThread_acquire_lock_timed", "_PySemaphore_Wait"} & \
            {f["func"] for f in t["frames"]}


def test_signals_do_not_shorten_sleeps(workload):
    p = workload("sleeper", env={"SLEEP_SECONDS": "1.5"})
    n = 0
    while "slept" not in p.out():
        r = probing("-t", p.pid, "backtrace")
        assert r.returncode == 0, r.stderr
        n += 1
        assert n < 10000
    assert n >= 5
    m = wait_for(lambda: re.search(r"slept ([0-9.]+) ([0-9.]+)", p.out()), 10, "the sleep result")
    assert float(m.group(1)) >= 1.5 and float(m.group(2)) >= 1.5, m.group(0)


def test_native_opt_out_sends_no_signal(workload):
    p = workload("shapes")
    r = probing("-t", p.pid, "config", "probing.backtrace.native=false")
    assert r.returncode == 0, r.stderr
    with open("/proc/%d/status" % p.pid) as f:
        caught = int(re.search(r"SigCgt:\s*([0-9a-f]+)", f.read()).group(1), 16)
    threads = bt_json(p.pid)
    assert all(f["type"] == "Python" for t in threads for f in t["frames"])
    assert all(t["note"] is None for t in threads)
    rec = thread_named(threads, "recursion-thread")
    assert py_funcs(rec)[:27] == ["park_forever"] + ["recurse"] * 26
    with open("/proc/%d/status" % p.pid) as f:
        after = int(re.search(r"SigCgt:\s*([0-9a-f]+)", f.read()).group(1), 16)
    assert after == caught, "a signal handler was installed"


def test_thread_blocking_every_signal_gets_native_frames(workload):
    p = workload("masked")
    r = probing("-t", p.pid, "backtrace")
    assert r.returncode == 0, r.stderr
    block = [b for b in r.stdout.split("\n\n") if '"masked-thread"' in b][0]
    assert "native unwinding failed" not in block
    assert "park_forever (%s:%d)" % (WORKLOAD, source_line("time.sleep(3600)")) in block
    assert "masked.<locals>.blocked (" in block
    assert "clock_nanosleep [libc.so.6+0x" in block


def children(pid):
    """The pids of every child of pid (all its threads)."""
    out = []
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
            out += f.read().split()
    return out


def test_c_waits_keep_their_length_and_see_no_signal(workload, tmp_path):
    """usleep, poll, epoll_wait, nanosleep (C, no EINTR retry), read() on an
    idle pipe and sigtimedwait on every real-time signal, under 10
    backtraces: none ends early, errno stays 0, no signal arrives, no
    handler on any real-time signal runs, no child is seen."""
    secs = 8.0
    arm = tmp_path / "arm"
    p = workload("c-waits", script=WAITS,
                 env={"WAIT_SECONDS": str(secs), "ARM_FILE": str(arm)})
    inside = 0
    waiting = {"usleep", "poll", "epoll_wait", "nanosleep", "read", "sigtimedwait"}
    for i in range(10):
        threads = bt_json(p.pid)
        if i == 0:
            # the application takes every real-time signal from now on
            arm.write_text("")
            p.wait_out("armed")
        named = {t["thread_name"]: t for t in threads}
        if "done" in p.out() or not waiting <= set(named):
            continue
        inside += 1
        for name in waiting:
            t = named[name]
            assert t["state"].startswith("idle in a syscall"), t
            assert t["note"] is None, t
            assert t["frames"][0]["type"] == "Native", t
            assert "c_waits.<locals>" in " ".join(py_funcs(t)), t
    assert inside > 0, "no backtrace landed while the threads waited"
    p.wait_out("done", timeout=120)
    out = p.out()
    results = {m.group(1): (float(m.group(2)), int(m.group(3)), int(m.group(4)))
               for m in re.finditer(r"^result (\S+) (\S+) (-?\d+) (\d+)$", out, re.M)}
    for name in ("usleep", "poll", "epoll_wait", "nanosleep"):
        elapsed, ret, err = results[name]
        assert elapsed >= secs - 0.002 and ret == 0 and err == 0, (name, results[name])
    assert results["read"][1:] == (1, 0), results["read"]
    elapsed, received, _ = results["sigtimedwait"]
    assert received == 0 and elapsed >= secs - 0.002, results["sigtimedwait"]
    assert "handler-calls 0\n" in out
    assert "sigchld 0\n" in out
    assert "reaped -\n" in out
    assert children(p.pid) == []


def test_gil_wedged_job_stays_inside_its_call(workload):
    """The main thread in libc sleep() keeping the GIL (ctypes.PyDLL):
    Python and native frames, and the sleep goes on."""
    p = workload("gil-sleep", script=WAITS)
    for _ in range(10):
        threads = bt_json(p.pid)
    main = [t for t in threads if t["thread_id"] == p.pid][0]
    assert main["state"] == "holding the GIL"
    funcs = [f["func"] for f in main["frames"]]
    assert funcs.index("sleep") < funcs.index("gil_sleep") < funcs.index("<module>"), funcs
    assert main["frames"][0]["type"] == "Native"
    assert p.alive() and "returned" not in p.out()
    with open("/proc/%d/syscall" % p.pid) as f:
        # still in clock_nanosleep (230), or in restart_syscall (219): the
        # kernel's way of resuming it with the time that was left
        assert f.read().split()[0] in ("230", "219")
    others = [t for t in threads if t["thread_id"] != p.pid]
    assert any(py_funcs(t)[:1] == ["park_forever"] for t in others)


def test_no_ptrace_gives_python_frames_and_a_note(workload):
    """A seccomp filter denies ptrace: Python frames still, and each thread
    says why its native frames are missing."""
    p = workload("seccomp", script=WAITS)
    threads = bt_json(p.pid)
    for t in threads:
        assert t["note"] is not None and "ptrace is not allowed" in t["note"], t
        assert "seccomp" in t["note"], t
        assert all(f["type"] == "Python" for f in t["frames"]), t
    assert py_funcs(thread_named(threads, "parked"))[:1] == ["park_forever"]
    main = [t for t in threads if t["thread_id"] == p.pid][0]
    assert py_funcs(main)[:2] == ["park_forever", "seccomp"]


def test_subreaper_job_gets_no_helper(workload):
    """The helper is orphaned on purpose; in a child subreaper it would
    become the job's child: Python frames only, and a note."""
    p = workload("subreaper", script=WAITS)
    threads = bt_json(p.pid)
    for t in threads:
        assert t["note"] is not None and "child subreaper" in t["note"], t
    assert py_funcs(thread_named(threads, "parked"))[:1] == ["park_forever"]
    assert children(p.pid) == []


def test_thread_traced_by_another_tool(workload):
    """A thread that strace holds is named as such; the others unwind."""
    p = workload("shapes")
    rec = thread_named(bt_json(p.pid), "recursion-thread")
    tid = rec["thread_id"]
    st = subprocess.Popen(["strace", "-p", str(tid), "-o", "/dev/null"],
                          stderr=subprocess.DEVNULL)
    try:
        def tracer():
            with open("/proc/%d/task/%d/status" % (p.pid, tid)) as f:
                return int(re.search(r"TracerPid:\s*(\d+)", f.read()).group(1))
        wait_for(tracer, 20, "strace to attach")
        threads = bt_json(p.pid)
        rec = thread_named(threads, "recursion-thread")
        assert rec["note"] == "native unwinding failed: the thread is traced by pid %d" % st.pid
        assert py_funcs(rec)[:27] == ["park_forever"] + ["recurse"] * 26
        gen = thread_named(threads, "generator-thread")
        assert gen["note"] is None and gen["frames"][0]["type"] == "Native"
    finally:
        st.kill()
        st.wait()


def test_forked_child_does_not_inherit_the_helper(workload, tmp_path):
    """After a backtrace the agent holds the helper's socket and pidfd; a
    child forked then holds neither."""
    arm = tmp_path / "arm"
    p = workload("fork", script=WAITS, env={"ARM_FILE": str(arm)})
    bt_json(p.pid)
    links = [os.readlink("/proc/%d/fd/%s" % (p.pid, fd))
             for fd in os.listdir("/proc/%d/fd" % p.pid)]
    assert any(l.startswith("socket:") for l in links)
    assert "anon_inode:[pidfd]" in links
    arm.write_text("")
    line = [l for l in p.wait_out("child ") and p.out().splitlines()
            if l.startswith("child ")][0]
    fds = ast.literal_eval(line[len("child "):])
    assert not [l for l in fds.values() if l.startswith("socket:")
                or l == "anon_inode:[pidfd]" or "probing-unwind" in l], fds


def test_helper_is_not_a_child_of_the_job(workload):
    p = workload("shapes")
    bt_json(p.pid)
    assert children(p.pid) == []
    helpers = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv[:2] == [b"probing-unwind", str(p.pid).encode()]:
                helpers.append(int(pid))
    assert len(helpers) == 1
    # the helper ends with the job
    p.kill()
    wait_for(lambda: not os.path.exists("/proc/%d/cmdline" % helpers[0])
             or open("/proc/%d/stat" % helpers[0]).read().split()[2] == "Z", 20,
             "the helper to exit")


def test_thread_filter_and_errors(workload):
    p = workload("deadlock")
    threads = bt_json(p.pid)
    ab = thread_named(threads, "locker-ab")
    only = bt_json(p.pid, "--thread", ab["thread_id"])
    assert [t["thread_id"] for t in only] == [ab["thread_id"]]
    assert only[0]["thread_name"] == "locker-ab"
    r = probing("-t", p.pid, "backtrace", "--thread", "999999999")
    assert r.returncode == 1 and "no thread 999999999" in r.stderr
    r = probing("-t", p.pid, "backtrace", "--thread", "abc")
    assert r.returncode == 2
    r = probing("-t", p.pid, "backtrace", "-f", "yaml")
    assert r.returncode == 2


def test_text_output_format(workload):
    p = workload("deadlock")
    r = probing("-t", p.pid, "backtrace")
    assert r.returncode == 0, r.stderr
    blocks = r.stdout.strip().split("\n\n")
    assert blocks[0].startswith('thread %d "MainThread": ' % p.pid)
    for b in blocks:
        lines = b.splitlines()
        assert re.match(r'^thread \d+ ".*": .+$', lines[0]), lines[0]
        for l in lines[1:]:
            assert re.match(r"^    (\(.*\)|\S.* \(.+:\d+\)|\S.* \[.+\+0x[0-9a-f]+\])$", l), l


TORCH_LOOP = """
import os, torch
a = torch.randn(256, 256)
print("ready", os.getpid(), flush=True)
while True:
    a = torch.tanh(a @ a.t() / 256)
"""


@needs_torch
def test_cpp_frames_are_demangled(spawn, tmp_path):
    s = tmp_path / "mm.py"
    s.write_text(TORCH_LOOP)
    p = spawn(str(s))
    p.wait_out("ready")

    def demangled():
        frames = [f["func"] for t in bt_json(p.pid) for f in t["frames"]
                  if f["type"] == "Native"]
        return [f for f in frames if f.startswith("at::")] and frames

    frames = wait_for(demangled, 20, "a frame inside ATen")
    assert not [f for f in frames if f.startswith("_Z")], frames
