"""Shared helpers for the end-to-end tests: real processes, the real
./probing binary, the real installed .pth."""
import os
import signal
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROBING = os.path.join(ROOT, "probing")
# The interpreter the workloads run on; the matrix sets it to each python3.X
# of a root, or to a venv's (tests/matrix/matrix.sh).
PY = os.environ.get("PROBING_TEST_PYTHON", "/usr/bin/python3")
PYVER = subprocess.run([PY, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                       capture_output=True, text=True).stdout.strip()
# Whether PY can import torch (the workloads' interpreter, not pytest's),
# and the environment its jobs need: a torch built without libuv (Debian's
# 2.6 and 2.14) fails every env:// rendezvous unless USE_LIBUV=0, as its
# users set.
_TORCH = subprocess.run([PY, "-c", """if 1:
    import torch, torch.distributed as d
    try:
        d.TCPStore("127.0.0.1", 0, 1, True, use_libuv=True)
    except RuntimeError as e:
        print("no-libuv" if "libuv" in str(e) else "")
    except TypeError:
        pass
"""], capture_output=True, text=True)
HAVE_TORCH = _TORCH.returncode == 0
TORCH_ENV = {"USE_LIBUV": "0"} if "no-libuv" in _TORCH.stdout else {}
# Marks a test whose workload imports torch (the matrix has Pythons without).
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="no torch for %s" % PY)
WORKLOADS = os.path.join(ROOT, "tests", "workloads")
BUILD = os.path.join(ROOT, ".build", "tests")


def wait_for(fn, timeout=10.0, what="condition", interval=0.01):
    """Polls fn until it returns a true value; fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def probing(*args, env=None, timeout=60, input=None):
    """Runs ./probing and returns the CompletedProcess (text)."""
    e = dict(os.environ)
    e.pop("PROBING", None)
    if env:
        e.update(env)
    return subprocess.run([PROBING] + [str(a) for a in args], env=e,
                          capture_output=True, text=True, timeout=timeout,
                          input=input)


def agent_listening(pid):
    """True when @probing-PID is a listening socket."""
    name = "@probing-%d" % pid
    with open("/proc/net/unix") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[7] == name and int(parts[3], 16) & 0x10000:
                return True
    return False


class Proc:
    """A workload process; its stdout/stderr go to files read on demand."""

    def __init__(self, argv, env, cwd=None, pass_fds=()):
        self.dir = tempfile.mkdtemp(prefix="probing-test-")
        self.out_path = os.path.join(self.dir, "out")
        self.err_path = os.path.join(self.dir, "err")
        self.p = subprocess.Popen(argv, env=env, cwd=cwd,
                                  stdout=open(self.out_path, "w"),
                                  stderr=open(self.err_path, "w"),
                                  stdin=subprocess.DEVNULL, pass_fds=pass_fds)
        self.pid = self.p.pid

    def out(self):
        with open(self.out_path, errors="replace") as f:
            return f.read()

    def err(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def wait_out(self, text, timeout=60):
        """Waits until a whole line of the output holds text: with
        PYTHONUNBUFFERED a print writes its parts one by one, so a test
        that then parses the line must not see half of it."""
        def whole():
            out = self.out()
            return text in out[:out.rfind("\n") + 1]
        return wait_for(whole, timeout, "%r in the workload's output" % text)

    def wait_agent(self, timeout=20):
        wait_for(lambda: agent_listening(self.pid) or self.p.poll() is not None,
                 timeout, "the agent of pid %d" % self.pid)
        assert self.p.poll() is None, "workload died: %s" % self.err()

    def alive(self):
        return self.p.poll() is None

    def kill(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait()


def prints_ready(argv):
    """Whether the workload argv runs prints "ready" once its globals are
    set (idle.py, heartbeat.py, train_torch.py ...)."""
    script = next((a for a in argv[1:] if a.endswith(".py")), None)
    if script is None or not os.path.exists(script):
        return False
    with open(script) as f:
        return 'print("ready"' in f.read()


@pytest.fixture(scope="session")
def userbase(tmp_path_factory):
    """`make install` into a private prefix and user site, so PROBING=1
    goes through the real probing.pth. Returns the env for workloads."""
    base = str(tmp_path_factory.mktemp("userbase"))
    prefix = os.path.join(base, "prefix")
    site = subprocess.run(
        [PY, "-c", "import site, os; print(site.getusersitepackages())"],
        env=dict(os.environ, PYTHONUSERBASE=base), capture_output=True,
        text=True, check=True).stdout.strip()
    r = subprocess.run(["make", "-s", "-C", ROOT, "install", "PREFIX=" + prefix,
                        "PYSITE=" + site, "PYTHON=" + PY],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    env = dict(os.environ, PYTHONUSERBASE=base, PYTHONUNBUFFERED="1", **TORCH_ENV)
    for k in list(env):
        if k.startswith("PROBING"):
            del env[k]
    env["PREFIX"] = prefix
    return env


@pytest.fixture
def spawn(userbase):
    """spawn(script_or_argv, probing="1", env={}) starts a workload (with
    the agent when probing is set) and kills it after the test."""
    procs = []

    def start(script, probing="1", env=None, wait=True, argv=None, pass_fds=()):
        e = dict(userbase)
        if probing is not None:
            e["PROBING"] = probing
        if env:
            e.update(env)
        if argv is None:
            path = script if os.path.exists(script) else os.path.join(WORKLOADS, script)
            argv = [PY, path]
        p = Proc(argv, e, pass_fds=pass_fds)
        procs.append(p)
        if wait and probing not in (None, "0", ""):
            p.wait_agent()
            # The agent listens from site's import, before the script
            # runs: an eval of the script's globals must wait for them.
            if prints_ready(argv):
                p.wait_out("ready")
        return p

    yield start
    for p in procs:
        p.kill()
