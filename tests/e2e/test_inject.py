"""inject: attach to a running Python process started without probing."""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import BUILD, PY, PYVER, ROOT, agent_listening, probing, wait_for

INJECTED = re.compile(r"^probing: injected into (\d+) \(python (3\.\d+\.\d+)\) in (\d+) ms\n$")


def inject(pid, *extra):
    # These tests are about the ptrace call; 3.14+ would take PEP 768 first
    # (its own tests: test_versions.py).
    r = probing("-t", pid, "inject", *extra, env={"PROBING_INJECT": "ptrace"})
    return r


def assert_injected(p, *extra):
    r = inject(p.pid, *extra)
    assert r.returncode == 0, r.stderr
    m = INJECTED.match(r.stdout)
    assert m and int(m.group(1)) == p.pid, r.stdout
    assert agent_listening(p.pid)
    return r


SLEEPER = """
import os, sys, time
print("ready", os.getpid(), flush=True)
while True:
    t0 = time.monotonic()
    time.sleep(2)
    print("slept %.3f" % (time.monotonic() - t0), flush=True)
"""


def test_inject_sleeping_target_keeps_sleep_length(spawn, tmp_path):
    s = tmp_path / "sleeper.py"
    s.write_text(SLEEPER)
    p = spawn(str(s), probing=None, wait=False)
    p.wait_out("ready")
    time.sleep(0.5)  # let it be inside time.sleep(2)
    assert_injected(p)
    wait_for(lambda: p.out().count("slept") >= 2, 10, "two sleeps")
    for line in p.out().splitlines():
        if line.startswith("slept"):
            assert 1.95 <= float(line.split()[1]) <= 2.5, p.out()
    # afterwards every command works as with PROBING=1
    assert probing("-t", p.pid, "eval", "1 + 1").stdout == "2\n"
    assert probing("-t", p.pid, "query", "SELECT 1").returncode == 0
    assert probing("-t", p.pid, "config", "probing.sample_rate").stdout == "1.0\n"
    assert "probing" not in p.out() + p.err()


READER = """
import os, sys
r = int(sys.argv[1])
print("ready", os.getpid(), flush=True)
data = os.read(r, 100)
print("read", data.decode(), flush=True)
"""


def test_inject_target_blocked_in_read_keeps_waiting(spawn, tmp_path):
    s = tmp_path / "reader.py"
    s.write_text(READER)
    r, w = os.pipe()
    p = spawn(None, probing=None, wait=False, argv=[PY, str(s), str(r)], pass_fds=(r,))
    os.close(r)
    p.wait_out("ready")
    time.sleep(0.2)
    assert_injected(p)
    time.sleep(0.3)
    assert "read" not in p.out().replace("ready", "")
    os.write(w, b"payload")
    p.wait_out("read payload")
    os.close(w)


LOCKER = """
import os, threading, time
lock = threading.Lock()
lock.acquire()
print("ready", os.getpid(), flush=True)
threading.Thread(target=lambda: (time.sleep(1.5), lock.release()), daemon=True).start()
lock.acquire()
print("acquired", flush=True)
time.sleep(60)
"""

BUSY = """
import os
print("ready", os.getpid(), flush=True)
n = 0
while True:
    n += 1
"""

THREADS = """
import os, threading, time
def work(i):
    x = 0
    while True:
        x += sum(range(100))
        time.sleep(0.001)
for i in range(8):
    threading.Thread(target=work, args=(i,), daemon=True, name="worker-%d" % i).start()
print("ready", os.getpid(), flush=True)
while True:
    time.sleep(0.01)
"""


@pytest.mark.parametrize("script", [LOCKER, BUSY, THREADS], ids=["lock", "busy", "threads"])
def test_inject_lock_busy_and_threaded_targets(spawn, tmp_path, script):
    s = tmp_path / "t.py"
    s.write_text(script)
    p = spawn(str(s), probing=None, wait=False)
    p.wait_out("ready")
    assert_injected(p)
    assert probing("-t", p.pid, "eval", "import threading; len(threading.enumerate()) > 0").stdout == "True\n"
    if script is LOCKER:
        p.wait_out("acquired")
    if script is BUSY:
        assert int(probing("-t", p.pid, "eval", "n").stdout) > 0


HOLD = """
import ctypes, os, sys
lib = ctypes.PyDLL(sys.argv[1])
lib.hold_gil_for.argtypes = [ctypes.c_double]
print("ready", os.getpid(), flush=True)
lib.hold_gil_for(20.0)
"""


def test_inject_into_c_call_holding_the_gil(spawn, tmp_path):
    s = tmp_path / "hold.py"
    s.write_text(HOLD)
    p = spawn(None, probing=None, wait=False, argv=[PY, str(s), os.path.join(BUILD, "hold-gil.so")])
    p.wait_out("ready")
    assert_injected(p)
    assert probing("-t", p.pid, "query", "SELECT 11").stdout.split()[-1] == "11"
    r = probing("--timeout", "0.3", "-t", p.pid, "eval", "1")
    assert r.returncode == 1 and "could not take the GIL" in r.stderr


EMBED = """
import os, threading, time
value = 'embedded'
def embedded_worker():
    while True:
        time.sleep(0.05)
threading.Thread(target=embedded_worker, daemon=True).start()
print('ready', os.getpid(), flush=True)
while True:
    time.sleep(0.05)
"""


def build_embed_host(tmp_path):
    """tests/workloads/embed-host.c built against the target interpreter's
    libpython, as the interpreter's own sysconfig describes it: the shared
    one where it has one (returns True), else the static libpython.a."""
    cfg = subprocess.run([PY, "-c", "import sysconfig as s; v = s.get_config_var; "
                          "print(s.get_paths()['include']); print(v('LIBDIR')); "
                          "print(v('LIBPL')); print(v('LDVERSION')); print(v('LIBS') or ''); "
                          "print(v('SYSLIBS') or ''); print(v('LINKFORSHARED') or '')"],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    inc, libdir, libpl, ldver, libs, syslibs, linkfor = cfg[:7]
    shared = os.path.exists(os.path.join(libdir, "libpython%s.so" % ldver))
    host = str(tmp_path / "embed-host")
    src = os.path.join(ROOT, "tests", "workloads", "embed-host.c")
    argv = ["cc", "-O1", "-I" + inc, "-o", host, src]
    if shared:
        argv += ["-L" + libdir, "-lpython" + ldver, "-Wl,-rpath," + libdir]
    else:
        argv += [os.path.join(libpl, "libpython%s.a" % ldver)] + \
            (libs + " " + syslibs + " " + linkfor).split()
    r = subprocess.run(argv, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return host, shared


def test_inject_embedded_libpython(spawn, tmp_path):
    s = tmp_path / "e.py"
    s.write_text(EMBED)
    host, shared = build_embed_host(tmp_path)
    p = spawn(None, probing=None, wait=False, argv=[host, str(s)])
    p.wait_out("ready")
    maps = open("/proc/%d/maps" % p.pid).read()
    assert ("libpython%s" % PYVER in maps) == shared, "libpython %s mapped: %s" % (PYVER, shared)
    assert_injected(p)
    assert probing("-t", p.pid, "eval", "value").stdout == "'embedded'\n"
    assert probing("-t", p.pid, "query", "SELECT 7").stdout.split()[-1] == "7"
    bt = probing("-t", p.pid, "backtrace")
    assert bt.returncode == 0, bt.stderr
    assert "embedded_worker (%s:" % s in bt.stdout
    # the main thread's Python frames sit between the embedding program's
    # call into libpython and the sleep, in call order
    main = bt.stdout.split("\n\n")[0]
    order = [main.find(w) for w in ("clock_nanosleep", "<module> (%s:" % s, "PyEval_EvalCode")]
    order.append(main.rfind("[embed-host+"))
    assert -1 not in order and order == sorted(order), main
    assert p.p.poll() is None


def test_inject_again_is_a_noop_that_applies_settings(spawn):
    p = spawn("idle.py", probing=None, wait=False)
    p.wait_out("ready")
    assert_injected(p, "-D", "probing.buffer_size=123")
    assert probing("-t", p.pid, "config", "probing.buffer_size").stdout == "123\n"
    r = inject(p.pid, "-D", "probing.buffer_size=456")
    assert r.returncode == 0 and "already probed" in r.stdout
    assert probing("-t", p.pid, "config", "probing.buffer_size").stdout == "456\n"
    # a PROBING=1 process counts as probed too
    q = spawn("idle.py")
    r = inject(q.pid)
    assert r.returncode == 0 and "already probed" in r.stdout


def test_inject_d_settings_in_force_from_the_start(spawn):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    # TCP is served only with a token, which the job has in its environment
    p = spawn("idle.py", probing=None, wait=False, env={"PROBING_AUTH_TOKEN": "t0k"})
    p.wait_out("ready")
    assert_injected(p, "-D", "probing.server.port=%d" % port, "-D", "probing.sample_rate=0.5")
    r = probing("-t", "127.0.0.1:%d" % port, "config", "probing.sample_rate",
                env={"PROBING_AUTH_TOKEN": "t0k"})
    assert r.stdout == "0.5\n"


def test_inject_bad_settings_are_usage_errors(spawn):
    for args, msg in [(["-D", "probing.sample_rate=7"], "between 0 and 1"),
                      (["-D", "nokey=1"], "unknown config key 'nokey'"),
                      (["-D", "novalue"], "-D needs key=value")]:
        r = probing("-t", "1", "inject", *args)
        assert r.returncode == 2 and msg in r.stderr, r.stderr


def test_inject_refusals_have_clear_messages(spawn, tmp_path):
    r = inject(4000000)
    assert r.returncode == 1 and "no such process: 4000000" in r.stderr
    sl = subprocess.Popen(["sleep", "60"])
    try:
        r = inject(sl.pid)
        assert r.returncode == 1 and "pid %d is not a python process" % sl.pid in r.stderr
    finally:
        sl.kill()
        sl.wait()
    p = spawn("idle.py", probing=None, wait=False)
    p.wait_out("ready")
    tracer = subprocess.Popen(["strace", "-p", str(p.pid), "-o", "/dev/null"],
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: "TracerPid:\t0" not in open("/proc/%d/status" % p.pid).read(), 10, "strace")
        # (PEP 768 needs no ptrace attach, so 3.14+ would just work)
        r = probing("-t", p.pid, "inject", env={"PROBING_INJECT": "ptrace"})
        assert r.returncode == 1
        assert "pid %d is already traced by pid %d" % (p.pid, tracer.pid) in r.stderr
    finally:
        tracer.kill()
        tracer.wait()
    # missing permission: another user may not ptrace root's process
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        os.path.join(ROOT, "probing"), "-t", str(p.pid), "inject"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "operation not permitted" in r.stderr and "CAP_SYS_PTRACE" in r.stderr
    assert "ptrace_scope" in r.stderr and "root" in r.stderr
    # a program without an agent for the target's python
    lone = tmp_path / "bin"
    lone.mkdir()
    shutil.copy(os.path.join(ROOT, "probing"), lone / "probing")
    r = subprocess.run([str(lone / "probing"), "-t", str(p.pid), "inject"],
                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 1 and "no agent built for python %s" % PYVER in r.stderr
    assert "make PYTHONS=python%s" % PYVER in r.stderr
    assert p.alive() and not agent_listening(p.pid)


SIGNALS = """
import os, signal, sys, time
# Python's own handlers coalesce; the wakeup fd gets one byte per signal
# the process really received, so it counts them exactly.
r, w = os.pipe()
os.set_blocking(w, False)
signal.signal(signal.SIGRTMIN + 2, lambda s, f: None)
signal.set_wakeup_fd(w)
print("ready", os.getpid(), flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
time.sleep(0.3)
os.set_blocking(r, False)
count = len(os.read(r, 1 << 20))
print("count", count, flush=True)
sys.exit(7)
"""


def test_signals_during_injection_are_delivered_and_exit_code_kept(spawn, tmp_path):
    s = tmp_path / "sig.py"
    s.write_text(SIGNALS)
    flag = tmp_path / "done"
    p = spawn(None, probing=None, wait=False, argv=[PY, str(s), str(flag)])
    p.wait_out("ready")
    sent = 0
    inj = subprocess.Popen([os.path.join(ROOT, "probing"), "-t", str(p.pid), "inject"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while inj.poll() is None:  # a signal every 0.2 ms while it injects
        os.kill(p.pid, signal.SIGRTMIN + 2)
        sent += 1
        time.sleep(0.0002)
    for _ in range(20):
        os.kill(p.pid, signal.SIGRTMIN + 2)
        sent += 1
    assert inj.returncode == 0, inj.stderr.read()
    time.sleep(0.3)
    flag.write_text("x")
    p.wait_out("count")
    assert int(p.out().split("count")[1].split()[0]) == sent
    assert p.p.wait(10) == 7


FP = """
import math, os, sys
print("ready", os.getpid(), flush=True)
bad = 0
i = 0
while not os.path.exists(sys.argv[1]):
    i += 1
    x = math.sqrt(2.0) * i / 3.0
    y = (x * 3.0) / i
    if abs(y * y - 2.0) > 1e-12:
        bad += 1
print("bad", bad, "iterations", i, flush=True)
"""


def test_repeated_injections_never_corrupt_floating_point(spawn, tmp_path):
    s = tmp_path / "fp.py"
    s.write_text(FP)
    flag = tmp_path / "stop"
    p = spawn(None, probing=None, wait=False, argv=[PY, str(s), str(flag)])
    p.wait_out("ready")
    assert_injected(p)
    for _ in range(30):  # every one is a hijack round trip on a busy thread
        r = inject(p.pid)
        assert r.returncode == 0
        assert probing("-t", p.pid, "eval", "1.5 * 2").stdout == "3.0\n"
    flag.write_text("x")
    p.wait_out("iterations")
    assert p.out().split("bad")[1].split()[0] == "0"


def test_target_in_another_mount_namespace(spawn, tmp_path):
    # The target cannot see the repository: /work is hidden under a tmpfs.
    script = "import os, time\nprint('ready', os.getpid(), flush=True)\nwhile True: time.sleep(0.05)\n"
    hide = os.path.dirname(ROOT)
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            "mount -t tmpfs none %s && exec %s -c \"$0\"" % (hide, PY), script]
    p = spawn(None, probing=None, wait=False, argv=argv)
    p.wait_out("ready")
    pid = int(p.out().split()[1])
    assert not os.path.exists("/proc/%d/root%s/probing" % (pid, ROOT))
    r = inject(pid)
    assert r.returncode == 0, r.stderr
    assert probing("-t", pid, "eval", "os.getpid()").stdout == "%d\n" % pid
    os.kill(pid, signal.SIGKILL)


ERRNO_SPIN = """
import ctypes, os, sys
lib = ctypes.CDLL(sys.argv[1])
lib.errno_spin.argtypes = [ctypes.c_double]
print("ready", os.getpid(), flush=True)
while True:
    print("errno", lib.errno_spin(0.5), flush=True)
"""


def test_inject_keeps_errno_of_the_hijacked_thread(spawn, tmp_path):
    # The C function clears errno, spins and returns errno: the agent's
    # work on the hijacked thread (a missing init file...) must not show.
    s = tmp_path / "errno.py"
    s.write_text(ERRNO_SPIN)
    p = spawn(None, probing=None, wait=False, argv=[PY, str(s), os.path.join(BUILD, "errno-spin.so")])
    p.wait_out("ready")
    r = assert_injected(p, "-v")
    seen = p.out().count("errno")
    wait_for(lambda: p.out().count("errno") >= seen + 2, 10, "two more spins")
    values = [l.split()[1] for l in p.out().splitlines() if l.startswith("errno")]
    assert set(values) == {"0"}, values
    assert "errno kept" in r.stderr, r.stderr


HOG = "while True: pass\n"

SYSCALL_LOOP = """
import os, sys
d = sys.argv[1]
print("ready", os.getpid(), flush=True)
while True:
    os.%s(d)
"""


@pytest.mark.parametrize("call", ["listdir", "stat"])
def test_inject_into_busy_syscall_loops_under_load(spawn, tmp_path, call):
    # Stops land inside libc's wrappers far more often than chance; each
    # injection steps the thread out and none is refused or harmed.
    empty = tmp_path / "empty"
    empty.mkdir()
    s = tmp_path / "loop.py"
    s.write_text(SYSCALL_LOOP % call)
    hogs = [spawn(None, probing=None, wait=False, argv=[PY, "-c", HOG]) for _ in range(2)]
    ways = []
    for _ in range(5):  # fresh targets: the agent loads once per process
        p = spawn(None, probing=None, wait=False, argv=[PY, str(s), str(empty)])
        p.wait_out("ready")
        r = inject(p.pid, "-v")
        assert r.returncode == 0, r.stderr
        m = re.search(r"^probing: (thread \d+: [^;]+); errno kept$", r.stderr, re.M)
        assert m, r.stderr
        ways.append(m.group(1))
        assert probing("-t", p.pid, "eval", "1").stdout == "1\n"
        assert p.alive() and p.err() == "", p.err()
        p.kill()
    assert all(h.alive() for h in hogs)
    print(ways)


def test_inject_into_a_stopped_job_says_so(spawn):
    p = spawn("idle.py", probing=None, wait=False)
    p.wait_out("ready")
    os.kill(p.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: open("/proc/%d/stat" % p.pid).read().rsplit(")", 1)[1].split()[0] == "T",
                 10, "stopped")
        r = inject(p.pid)
        assert r.returncode == 1 and r.stdout == ""
        assert r.stderr == "probing: pid %d is stopped (state T): resume it with kill -CONT %d first\n" % (
            p.pid, p.pid)
    finally:
        os.kill(p.pid, signal.SIGCONT)
    assert_injected(p)


FORKER = """
import os, time
pid = os.fork()
if pid == 0:
    while True:
        time.sleep(0.05)
print("child", pid, flush=True)
while True:
    time.sleep(0.05)
"""


def test_inject_into_a_forked_child_of_a_probed_parent_says_so(spawn, tmp_path):
    s = tmp_path / "forker.py"
    s.write_text(FORKER)
    p = spawn(str(s))
    # the whole line: unbuffered, print writes "child", the pid and the
    # newline one by one
    m = wait_for(lambda: re.search(r"child (\d+)\n", p.out()), 20, "the child's pid")
    child = int(m.group(1))
    r = inject(child)
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert ("pid %d is a fork of pid %d and inherited its agent, which does not run in a "
            "forked child" % (child, p.pid)) in r.stderr, r.stderr
    os.kill(child, signal.SIGKILL)
