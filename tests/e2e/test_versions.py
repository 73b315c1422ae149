"""What differs between Python versions: the layout check against the
interpreter's own debug offsets (3.13+), the PEP 768 way in (3.14+) and its
ptrace fallback. A test exists only where its interpreter has the thing it
tests (tests/run counts a skipped test as a failure)."""
import json
import os
import subprocess

import pytest

from conftest import (BUILD, PY, PYVER, ROOT, Proc, agent_listening, probing,
                      wait_for)

VER = tuple(int(x) for x in PYVER.split("."))
# A free-threaded build (python3.14t: ABI tag "t"); the matrix builds one
# in the sid root (tests/matrix/ft.sh). Probing refuses it.
FREE_THREADED = "t" in subprocess.run(
    [PY, "-c", "import sys; print(getattr(sys, 'abiflags', ''))"],
    capture_output=True, text=True).stdout
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


# A target that shows it goes on: a tick a line, nothing else, no error.
TICKING = """
import os, sys, time
print("ready", os.getpid(), flush=True)
n = 0
while True:
    n += 1
    print("tick", n, flush=True)
    time.sleep(0.05)
"""

# A program run with PROBING=1: its output and exit status are its own.
PROGRAM = """
import sys, threading
t = threading.Thread(target=lambda: print("from a thread"))
t.start()
t.join()
print("out", sum(range(10)))
print("err", file=sys.stderr)
sys.exit(3)
"""


def ft_version():
    return subprocess.run([PY, "-c", "import sys; print(sys.version.split()[0])"],
                          capture_output=True, text=True).stdout.strip()


def ft_start(tmp_path, exe=PY):
    s = tmp_path / "ticking.py"
    s.write_text(TICKING)
    p = Proc([exe, str(s)], dict(os.environ, PYTHONUNBUFFERED="1"))
    p.wait_out("tick 1")
    return p


def ft_unharmed(p):
    """The target runs on as before: not stopped, still ticking, its output
    only its own, no agent in it and nothing of ours left behind."""
    with open("/proc/%d/stat" % p.pid) as f:
        state = f.read().rsplit(")", 1)[1].split()[0]
    assert state not in ("T", "t"), "pid %d left stopped (%s)" % (p.pid, state)
    out = p.out()
    n = int(out[:out.rfind("\n")].split()[-1])
    p.wait_out("tick %d" % (n + 2), timeout=30)
    lines = p.out().splitlines()
    assert lines[0] == "ready %d" % p.pid
    assert lines[1:n + 2] == ["tick %d" % i for i in range(1, n + 2)]
    assert p.err() == "" and p.alive()
    with open("/proc/%d/maps" % p.pid) as f:
        assert "libprobing" not in f.read()
    assert not agent_listening(p.pid)
    assert not os.path.exists("/tmp/probing-%d.remote.py" % p.pid)


def inject_refuses_free_threaded(tmp_path, how, exe):
    p = ft_start(tmp_path, exe)
    try:
        env = {"PROBING_INJECT": how} if how else None
        r = probing("-t", p.pid, "inject", "-v", env=env)
        assert r.returncode == 1 and r.stdout == "", (r.stdout, r.stderr)
        assert r.stderr == ("probing: pid %d runs python %st, a free-threaded "
                            "build, which probing does not support\n"
                            % (p.pid, ft_version())), r.stderr
        ft_unharmed(p)
    finally:
        p.kill()


def ft_userbase(tmp_path):
    """The package (no agent: none is built for a free-threaded python)
    in a private user site of PY, as `make install` lays it out."""
    env = dict(os.environ, PYTHONUSERBASE=str(tmp_path / "base"))
    site = subprocess.run(
        [PY, "-c", "import site; print(site.getusersitepackages())"],
        env=env, capture_output=True, text=True, check=True).stdout.strip()
    src = os.path.join(ROOT, "agent", "python")
    os.makedirs(os.path.join(site, "probing"))
    for rel in ["probing.pth"] + ["probing/" + f for f in
                                  os.listdir(os.path.join(src, "probing"))
                                  if f.endswith(".py")]:
        with open(os.path.join(src, rel)) as a, open(os.path.join(site, rel), "w") as b:
            b.write(a.read())
    for k in list(env):
        if k.startswith("PROBING"):
            del env[k]
    return env


def probing_1_refuses_free_threaded_once(tmp_path):
    s = tmp_path / "program.py"
    s.write_text(PROGRAM)
    env = ft_userbase(tmp_path)
    plain = subprocess.run([PY, str(s)], env=env, capture_output=True,
                           text=True, timeout=60)
    assert plain.returncode == 3 and "probing" not in plain.stderr
    for mode in ("1", "2"):
        r = subprocess.run([PY, str(s)], env=dict(env, PROBING=mode),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 3 and r.stdout == plain.stdout, r
        assert r.stderr == ("probing: python %st is a free-threaded build, which "
                            "probing does not support; running without it\n"
                            % ft_version()) + plain.stderr, r.stderr


def agent_loaded_anyway_does_not_start(tmp_path):
    """An agent that gets in all the same (an older probing, a hand-made
    ctypes.CDLL) finds the build free-threaded at once and does nothing."""
    agent = os.path.join(ROOT, "agent", "libprobing-%s.so" % PYVER)
    assert os.path.exists(agent), "no agent built for python %s" % PYVER
    log = tmp_path / "agent.log"
    s = tmp_path / "load.py"
    s.write_text("import ctypes, sys\nctypes.CDLL(sys.argv[1])\n" + TICKING)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PROBING_LOG=str(log))
    p = Proc([PY, str(s), agent], env)
    try:
        p.wait_out("tick 3")
        assert p.err() == "" and not agent_listening(p.pid)
        assert ("agent not started: pid %d runs python %st, a free-threaded "
                "build, which probing does not support" % (p.pid, ft_version())
                ) in log.read_text()
        assert p.alive()
    finally:
        p.kill()


def agent_build_refused():
    agent = os.path.join(ROOT, "agent", "libprobing-%s.so" % PYVER)
    before = os.stat(agent).st_mtime_ns if os.path.exists(agent) else None
    r = subprocess.run(["make", "-s", "-C", ROOT, "--no-print-directory",
                        "agent", "PYTHON=" + PY], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and r.stdout == "", r
    assert ("probing: %s is a free-threaded build (python%st), which probing "
            "does not support\n" % (PY, PYVER)) in r.stderr, r.stderr
    after = os.stat(agent).st_mtime_ns if os.path.exists(agent) else None
    assert after == before


if FREE_THREADED:
    # Everything below needs the agent in the target: none of it applies.
    test_inject_refuses_free_threaded = pytest.mark.parametrize(
        "how", ["", "ptrace"])(pytest.mark.parametrize(
            # the same build under a name without the "t"
            "exe", [e for e in (PY, os.path.join(os.path.dirname(PY), "python" + PYVER))
                    if os.path.exists(e)]
        )(inject_refuses_free_threaded))
    test_probing_1_refuses_free_threaded_once = probing_1_refuses_free_threaded_once
    test_free_threaded_agent_loaded_anyway_does_not_start = \
        agent_loaded_anyway_does_not_start
    test_free_threaded_agent_build_refused = agent_build_refused
elif VER >= (3, 13):  # _PyRuntime.debug_offsets
    test_frames_refused_when_the_layout_differs = frames_refused_when_the_layout_differs
if VER >= (3, 14) and not FREE_THREADED:  # sys.remote_exec
    test_inject_through_pep768 = inject_through_pep768
    test_inject_falls_back_to_ptrace_when_the_gil_is_wedged = \
        inject_falls_back_to_ptrace_when_the_gil_is_wedged
    test_pep768_off_takes_ptrace = pep768_off_takes_ptrace
