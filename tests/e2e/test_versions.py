"""What differs between Python versions: the layout check against the
interpreter's own debug offsets (3.13+), the PEP 768 way in (3.14+) and its
ptrace fallback. A test exists only where its interpreter has the thing it
tests (tests/run counts a skipped test as a failure)."""
import json
import os
import subprocess

from conftest import BUILD, PY, PYVER, agent_listening, probing, wait_for

VER = tuple(int(x) for x in PYVER.split("."))
HOLD_GIL_SO = os.path.join(BUILD, "hold-gil.so")

# A target that corrupts one offset its interpreter publishes about itself
# (_PyRuntime.debug_offsets.runtime_state.interpreters_head, at byte 40 of
# _Py_DebugOffsets on 3.13 to 3.15): what a patch release that moved a
# field would look like to the agent. Nothing in CPython reads its own
# debug offsets, so the target runs on unchanged.
SKEWED = """
import ctypes, os, sys, time
rt = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))
assert ctypes.string_at(rt, 8) == b"xdebugpy"
head = ctypes.c_uint64.from_address(rt + 40)
head.value += 8
def spin():
    while True:
        time.sleep(0.05)
print("ready", os.getpid(), flush=True)
spin()
"""

IDLE = """
import os, time
def idle():
    while True:
        time.sleep(0.01)
print("ready", os.getpid(), flush=True)
idle()
"""

HOLD = """
import ctypes, os, sys, time
lib = ctypes.PyDLL(sys.argv[1])
lib.hold_gil_for.argtypes = [ctypes.c_double]
print("ready", os.getpid(), flush=True)
lib.hold_gil_for(10.0)
print("released", flush=True)
while True:
    time.sleep(0.05)
"""


def bt(pid):
    r = probing("-t", pid, "backtrace", "-f", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def frames_refused_when_the_layout_differs(spawn, tmp_path):
    s = tmp_path / "skewed.py"
    s.write_text(SKEWED)
    p = spawn(None, probing=None, wait=False, argv=[PY, str(s)])
    p.wait_out("ready")
    r = probing("-t", p.pid, "inject")
    assert r.returncode == 0, r.stderr
    main = [t for t in bt(p.pid) if t["thread_id"] == p.pid][0]
    assert not [f for f in main["frames"] if f["type"] == "Python"]
    note = main.get("thread_note") or main.get("note") or ""
    assert "python frames not read: python %s" % PYVER in note, main
    assert "_PyRuntimeState.interpreters.head" in note
    # the rest of the agent works, and the target is unharmed
    assert probing("-t", p.pid, "eval", "1 + 1").stdout == "2\n"
    assert p.alive() and "Traceback" not in p.err()


def inject_v(pid, env=None):
    return probing("-t", pid, "inject", "-v", env=env, timeout=60)


def inject_through_pep768(spawn, tmp_path):
    s = tmp_path / "idle.py"
    s.write_text(IDLE)
    p = spawn(None, probing=None, wait=False, argv=[PY, str(s)])
    p.wait_out("ready")
    r = inject_v(p.pid)
    assert r.returncode == 0, r.stderr
    assert "through PEP 768" in r.stderr, r.stderr
    assert agent_listening(p.pid)
    assert probing("-t", p.pid, "eval", "1 + 1").stdout == "2\n"
    main = [t for t in bt(p.pid) if t["thread_id"] == p.pid][0]
    assert "idle" in [f["func"] for f in main["frames"] if f["type"] == "Python"]
    # the script removed itself, printed nothing, and a second inject is a no-op
    assert not os.path.exists("/tmp/probing-%d.remote.py" % p.pid)
    assert p.err() == "" and p.out() == "ready %d\n" % p.pid
    assert "already probed" in probing("-t", p.pid, "inject").stdout


def inject_falls_back_to_ptrace_when_the_gil_is_wedged(spawn, tmp_path):
    s = tmp_path / "hold.py"
    s.write_text(HOLD)
    p = spawn(None, probing=None, wait=False, argv=[PY, str(s), HOLD_GIL_SO])
    p.wait_out("ready")
    r = inject_v(p.pid)
    assert r.returncode == 0, r.stderr
    assert "falling back to ptrace" in r.stderr, r.stderr
    assert agent_listening(p.pid)
    assert probing("-t", p.pid, "query", "SELECT 7").stdout.split()[-1] == "7"
    # when the C call returns, the late script loads the same agent again:
    # a no-op, and silent
    p.wait_out("released", timeout=60)
    wait_for(lambda: not os.path.exists("/tmp/probing-%d.remote.py" % p.pid), 20,
             "the late script to run")
    assert p.alive() and p.err() == ""
    assert probing("-t", p.pid, "eval", "1 + 1").stdout == "2\n"


def pep768_off_takes_ptrace(spawn, tmp_path):
    s = tmp_path / "idle.py"
    s.write_text(IDLE)
    p = spawn(None, probing=None, wait=False, argv=[PY, str(s)],
              env={"PYTHON_DISABLE_REMOTE_DEBUG": "1"})
    p.wait_out("ready")
    r = inject_v(p.pid)
    assert r.returncode == 0, r.stderr
    assert "falling back to ptrace" in r.stderr, r.stderr
    assert agent_listening(p.pid) and p.err() == ""


if VER >= (3, 13):  # _PyRuntime.debug_offsets
    test_frames_refused_when_the_layout_differs = frames_refused_when_the_layout_differs
if VER >= (3, 14):  # sys.remote_exec
    test_inject_through_pep768 = inject_through_pep768
    test_inject_falls_back_to_ptrace_when_the_gil_is_wedged = \
        inject_falls_back_to_ptrace_when_the_gil_is_wedged
    test_pep768_off_takes_ptrace = pep768_off_takes_ptrace
