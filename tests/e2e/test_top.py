"""probing top: the live view, driven inside a private tmux server with
send-keys and read with capture-pane; and its --batch text output."""
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile

import pytest

from conftest import PROBING, PY, ROOT, WORKLOADS, needs_torch, probing, wait_for



class Tmux:
    """A private tmux server (-L NAME) running one command in one pane,
    under sh so that its exit status lands in a file: tmux may see the pty
    close before it reaps the child, and then knows no status."""

    def __init__(self, name, argv, env=None, x=160, y=48):
        self.name = name
        self.base = ["tmux", "-L", name, "-f", "/dev/null"]
        self.status_path = os.path.join(tempfile.mkdtemp(prefix="probing-top-"), "status")
        subprocess.run(self.base + ["kill-server"], capture_output=True)
        cmd = " ".join(shlex.quote(a) for a in argv)
        cmd = "%s; echo $? > %s" % (cmd, shlex.quote(self.status_path))
        e = dict(os.environ)
        e.pop("TMUX", None)
        e.update(env or {})
        subprocess.run(self.base + ["new-session", "-d", "-x", str(x), "-y", str(y),
                                    "-e", "LANG=C.UTF-8", cmd],
                       check=True, env=e, cwd=ROOT)
        self.tmux("set-option", "-g", "remain-on-exit", "on")

    def tmux(self, *args):
        return subprocess.run(self.base + list(args), capture_output=True,
                              text=True).stdout

    def keys(self, *keys):
        self.tmux("send-keys", "-t", "0", *keys)

    def type(self, text):
        self.tmux("send-keys", "-t", "0", "-l", text)

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", "0")

    def pane(self, fmt):
        return self.tmux("display-message", "-p", "-t", "0", fmt).strip()

    def pid(self):
        """The probing process: the child of the pane's shell."""
        sh = int(self.pane("#{pane_pid}"))
        def child():
            with open("/proc/%d/task/%d/children" % (sh, sh)) as f:
                kids = f.read().split()
            return kids and int(kids[0])
        return wait_for(child, 10, "the pane's command")

    def wait(self, pred, timeout=20, what="the screen"):
        """Polls the screen until pred(text) holds; returns the text."""
        last = [""]

        def check():
            last[0] = self.screen()
            return pred(last[0])
        try:
            wait_for(check, timeout, what, interval=0.05)
        except BaseException:
            print("last screen:\n" + last[0])
            raise
        return last[0]

    def wait_text(self, text, timeout=20):
        return self.wait(lambda s: text in s, timeout, repr(text))

    def status(self):
        """The command's exit status once it has exited, else None."""
        try:
            with open(self.status_path) as f:
                text = f.read().strip()
        except OSError:
            return None
        return int(text) if text else None

    def wait_exit(self, timeout=10):
        wait_for(lambda: self.status() is not None, timeout, "top to exit")
        # the terminal was given back: tmux left the alternate screen
        wait_for(lambda: self.pane("#{alternate_on}") == "0", 10,
                 "the normal screen back")
        return self.status()

    def kill(self):
        subprocess.run(self.base + ["kill-server"], capture_output=True)
        sock = os.path.join(os.environ.get("TMUX_TMPDIR", "/tmp"),
                            "tmux-%d" % os.getuid(), self.name)
        if os.path.exists(sock):
            os.unlink(sock)


@pytest.fixture
def tmux(request):
    servers = []

    def start(argv, **kw):
        t = Tmux("probing-top-%d-%d" % (os.getpid(), len(servers)), argv, **kw)
        servers.append(t)
        return t
    yield start
    for t in servers:
        t.kill()


def row_of(screen, pid):
    """The Processes pane's line of pid, or ''."""
    for line in screen.splitlines():
        if line.startswith("%d " % pid):
            return line
    return ""


def step_of(screen, pid):
    m = re.search(r" (?:running|hung|idle) +(\d+) ", row_of(screen, pid))
    return int(m.group(1)) if m else -1


def state_of(screen, pid):
    parts = row_of(screen, pid).split()
    states = {"running", "idle", "hung", "exited", "unreachable", "connecting", "unprobed"}
    return next((p for p in parts if p in states), None)


@needs_torch
def test_top_three_targets_one_killed_sql_eval_resize(spawn, tmux):
    fast = spawn("demo_train.py")
    slow = spawn(None, argv=[PY, os.path.join(ROOT, "tests/workloads/demo_train.py"), "--slow"])
    slow.wait_agent()
    idle = spawn("idle.py")
    pids = [fast.pid, slow.pid, idle.pid]
    t = tmux([PROBING, "-t", ",".join(map(str, pids)), "top", "--interval", "0.5"])

    # three rows: the trainers running with step times, the idle one idle
    s = t.wait(lambda s: state_of(s, fast.pid) == "running" and
               state_of(s, slow.pid) == "running" and state_of(s, idle.pid) == "idle",
               30, "two running and one idle target")
    assert "PID/ENDPOINT" in s and "3 targets" in s
    # (the command column cuts "--slow" short behind a longer "python3.X")
    assert re.search(r"demo_train\.py --?s?l?o?w?\s+running\s+\d+\s+[\d.]+", row_of(s, slow.pid))
    t.wait(lambda s: "idle.py:" in row_of(s, idle.pid), 20, "idle's main-thread frame")

    # one dies mid-run: it is marked exited and the rest go on
    idle.kill()
    s = t.wait(lambda s: state_of(s, idle.pid) == "exited", 20, "exited")
    step = step_of(s, fast.pid)
    t.wait(lambda s: state_of(s, fast.pid) == "running" and step_of(s, fast.pid) > step,
           20, "the others still updating")

    # modules of the selected (first) process, with a sparkline
    t.keys("F3")
    s = t.wait_text("Net.encoder.0")
    assert "Modules of %d" % fast.pid in s and "SHARE" in s
    t.keys("a")
    t.wait_text("Modules of all 3 targets")

    # stacks: every thread, MainThread with Python frames
    t.keys("F4")
    s = t.wait(lambda s: "Thread %d MainThread" % fast.pid in s and "Python" in s, 20, "stacks")

    # SQL: a wrong column is shown inline, then a right query fills the grid
    t.keys("F5")
    t.wait_text("sql [%d]>" % fast.pid)
    t.type("SELECT nosuchcol FROM python.torch_trace")
    t.keys("Enter")
    t.wait_text("no such column: nosuchcol")
    t.type("SELECT module, COUNT(*) AS calls FROM python.torch_trace "
           "WHERE stage = 'forward' GROUP BY module ORDER BY module")
    t.keys("Enter")
    s = t.wait_text("Net.encoder.2")
    assert "no such column" not in s and "calls" in s
    # history: Up brings back the last query
    t.keys("Up")
    t.wait_text("sql [%d]> SELECT module, COUNT(*)" % fast.pid)
    t.keys("C-u")
    # all targets: a first column names the target; the dead one is left out
    t.keys("F7")
    t.wait_text("sql [all]>")
    t.type("SELECT COUNT(*) AS n FROM python.torch_trace")
    t.keys("Enter")
    s = t.wait(lambda s: re.search(r"^target\s+n", s, re.M) and
               re.search(r"^%d\s+\d+" % slow.pid, s, re.M), 20, "rows per target")
    assert re.search(r"^%d\s+\d+" % fast.pid, s, re.M)

    # eval: a traceback shown below the input; the pane stays usable
    t.keys("F6")
    t.wait_text("python [%d]>>>" % fast.pid)
    t.type("1/0")
    t.keys("Enter")
    t.wait_text("ZeroDivisionError: division by zero")
    t.type("6 * 7")
    t.keys("Enter")
    t.wait(lambda s: re.search(r"^42\s*$", s, re.M), 20, "42")

    # resizing redraws to the new size, and back
    t.keys("F2")
    t.tmux("resize-window", "-t", "0", "-x", "100", "-y", "30")
    s = t.wait(lambda s: len(s.rstrip("\n").split("\n")) == 30 and
               s.rstrip("\n").split("\n")[-1].startswith("F1Help"), 20, "a 100x30 frame")
    assert all(len(line) <= 100 for line in s.splitlines())
    assert state_of(s, slow.pid) == "running"
    t.tmux("resize-window", "-t", "0", "-x", "160", "-y", "48")
    t.wait(lambda s: len(s.rstrip("\n").split("\n")) == 48 and "MAIN THREAD" in s, 20,
           "a 160x48 frame")

    # help, then quit: the terminal is given back
    t.keys("F1")
    t.wait_text("probing top: keys")
    t.keys("x")
    t.wait(lambda s: "probing top: keys" not in s, 10, "help closed")
    t.keys("q")
    assert t.wait_exit() == 0, t.screen()


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGTERM, signal.SIGINT])
def test_top_restores_the_terminal_on_signals(spawn, tmux, sig):
    p = spawn("idle.py")
    t = tmux([PROBING, "-t", str(p.pid), "top"])
    t.wait(lambda s: state_of(s, p.pid) == "idle", 20, "idle")
    assert t.pane("#{alternate_on}") == "1"
    os.kill(t.pid(), sig)
    # SIGINT and SIGTERM end it cleanly; a crash dies of its signal
    assert t.wait_exit() == (128 + sig if sig == signal.SIGSEGV else 0)


def test_top_batch_iterations(spawn):
    p = spawn("idle.py")
    r = probing("-t", p.pid, "top", "--batch", "--iterations", "3", "--interval", "0.1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("probing top - ") == 3
    assert r.stdout.count("Modules of %d" % p.pid) == 3
    row = [line for line in r.stdout.splitlines() if line.startswith("%d " % p.pid)]
    assert len(row) == 3 and all(" idle " in line for line in row), r.stdout
    assert "idle.py:" in row[-1]


@needs_torch
def test_top_batch_shows_steps_and_modules(spawn):
    p = spawn("demo_train.py")

    def ready():
        r = probing("-t", p.pid, "top", "--batch")
        # running with step 0 is right after the first step: wait for more
        return (r.returncode == 0 and "Net.encoder.0" in r.stdout and
                state_of(r.stdout, p.pid) == "running" and
                step_of(r.stdout, p.pid) >= 1 and r.stdout)
    out = wait_for(ready, 30, "steps and modules in --batch", interval=0.2)
    assert step_of(out, p.pid) >= 1
    header = out[out.index("MODULE"):].splitlines()[0].split()
    assert header == ["MODULE", "CALLS", "FWD", "ms", "BWD", "ms", "SHARE", "MB"]


def test_top_batch_dead_target_does_not_stop_the_rest(spawn):
    p = spawn("idle.py")
    r = probing("-t", "%d,999999,127.0.0.1:1" % p.pid, "top", "--batch", timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith("%d " % p.pid) and " idle " in line for line in lines)
    assert any(line.startswith("999999 ") and " exited " in line for line in lines)
    assert any(line.startswith("127.0.0.1:1 ") and " unreachable " in line for line in lines)


def test_top_tcp_targets_with_token(spawn):
    ports = []
    procs = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
        s.close()
        procs.append(spawn("idle.py", env={"PROBING_PORT": str(ports[-1]),
                                          "PROBING_AUTH_TOKEN": "tok3n"}))
    targets = ",".join("127.0.0.1:%d" % port for port in ports)
    r = probing("-t", targets, "top", "--batch", env={"PROBING_AUTH_TOKEN": "tok3n"})
    assert r.returncode == 0, r.stderr
    for port in ports:
        row = [line for line in r.stdout.splitlines()
               if line.startswith("127.0.0.1:%d " % port)]
        assert row and " idle " in row[0] and "idle.py" in row[0], r.stdout
    r = probing("-t", targets, "top", "--batch", env={"PROBING_AUTH_TOKEN": "wrong"})
    rows = [line for line in r.stdout.splitlines() if line.startswith("127.0.0.1:")]
    assert len(rows) == 2 and all(" unreachable " in line and "token" in line
                                  for line in rows), r.stdout


def test_top_without_targets_lists_probed_and_unprobed(spawn):
    probed = spawn("idle.py")
    plain = spawn("idle.py", probing=None)
    plain.wait_out("ready")
    r = probing("top", "--batch")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith("%d " % probed.pid) and " idle " in line for line in lines)
    assert any(line.startswith("%d " % plain.pid) and " unprobed " in line for line in lines)


def test_top_injects_into_a_greyed_process(spawn, tmux):
    plain = spawn("idle.py", probing=None)
    plain.wait_out("ready")
    t = tmux([PROBING, "top"])
    t.wait(lambda s: state_of(s, plain.pid) == "unprobed", 20, "the unprobed row")
    # select it: Down until its row is the highlighted one
    for _ in range(100):
        if _selected_pid(t) == plain.pid:
            break
        t.keys("Down")
        wait_for(lambda: _selected_pid(t) is not None, 5, "a highlighted row")
    assert _selected_pid(t) == plain.pid
    t.keys("i")
    t.wait(lambda s: state_of(s, plain.pid) in ("idle", "running"), 30, "injected")
    assert "injected into %d" % plain.pid in t.screen()


def _selected_pid(t):
    """The pid on the highlighted row (cyan background or reverse video)."""
    for line in t.tmux("capture-pane", "-p", "-e", "-t", "0").splitlines():
        m = re.match(r"^((?:\x1b\[[0-9;]*m)+)(\d+) ", line)
        if m and re.search(r"[\[;](46|7)[;m]", m.group(1)):
            return int(m.group(2))
    return None


def test_top_usage_errors():
    r = probing("top", "--iterations", "0", "--batch")
    assert r.returncode == 2 and "invalid --iterations" in r.stderr
    r = probing("top", "--interval", "x")
    assert r.returncode == 2 and "invalid --interval" in r.stderr
    r = probing("-t", "1", "top", input="")
    assert r.returncode == 1 and "needs a terminal" in r.stderr


def test_top_across_network_namespaces(spawn):
    """Two agents in a network namespace of their own, reached over a veth
    pair with a token: the unix socket is out of reach there, TCP is not."""
    n = os.getpid() % 200 + 20
    ns, host, peer = "probing-t%d" % n, "prbh%d" % n, "prbp%d" % n
    net = "10.231.%d" % n

    def ip(*args):
        subprocess.run(["ip"] + list(args), check=True, capture_output=True)

    ip("netns", "add", ns)
    try:
        ip("link", "add", host, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", ns)
        ip("addr", "add", net + ".1/24", "dev", host)
        ip("link", "set", host, "up")
        ip("netns", "exec", ns, "ip", "addr", "add", net + ".2/24", "dev", peer)
        ip("netns", "exec", ns, "ip", "link", "set", peer, "up")
        ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        env = {"PROBING_AUTH_TOKEN": "n3t"}
        targets = []
        for port in (9101, 9102):
            spawn(None, wait=False, env=dict(env, PROBING_PORT=str(port)),
                  argv=["ip", "netns", "exec", ns, PY, os.path.join(WORKLOADS, "idle.py")])
            targets.append("%s.2:%d" % (net, port))

        def both_idle():
            r = probing("-t", ",".join(targets), "top", "--batch", env=env, timeout=30)
            rows = [l for l in r.stdout.splitlines() if l.startswith(net)]
            return len(rows) == 2 and all(" idle " in l and "idle.py" in l for l in rows) and rows
        wait_for(both_idle, 30, "both agents in the namespace", interval=0.3)
        r = probing("-t", targets[0], "query", "SELECT 1", env={"PROBING_AUTH_TOKEN": "bad"})
        assert r.returncode == 1 and "wrong token" in r.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", host], capture_output=True)


def test_top_exits_when_its_terminal_vanishes(spawn):
    """A dropped SSH session: the pty goes away and SIGHUP is ignored
    (nohup). top must exit instead of spinning on a dead terminal."""
    import pty
    p = spawn("idle.py")
    m, s = pty.openpty()
    subprocess.run(["stty", "-F", os.ttyname(s), "rows", "40", "cols", "120"], check=True)
    top = subprocess.Popen([PROBING, "-t", str(p.pid), "top"], stdin=s, stdout=s, stderr=s,
                           env=dict(os.environ, TERM="xterm"), start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    os.close(s)
    try:
        out = b""
        def drawn():
            nonlocal out
            out += os.read(m, 65536)
            return b"Processes" in out
        wait_for(drawn, 20, "the first frame")
        os.close(m)
        wait_for(lambda: top.poll() is not None, 10, "top to exit after the hangup")
    finally:
        if top.poll() is None:
            top.kill()
        top.wait()


GIL_HOLDER = """
import ctypes, os, sys, threading, time
lib = ctypes.PyDLL(os.environ["HOLD_GIL_SO"])
go = threading.Event()
def holder():
    go.wait()
    lib.hold_gil_sleep()  # keeps the GIL, never returns
threading.Thread(target=holder, name="holder", daemon=True).start()
print("ready", flush=True)
time.sleep(0.5)
go.set()
while True:
    time.sleep(0.1)
"""


def test_top_stacks_gil_holder_first_and_one_key_table(spawn, tmux, tmp_path):
    """The Stacks pane puts the thread holding the GIL first (found from the
    thread state's value, whatever thread it is), and every pane moves with
    the same keys; the key bar and the help come from one pane table."""
    script = tmp_path / "gil_holder.py"
    script.write_text(GIL_HOLDER)
    p = spawn(str(script), env={"HOLD_GIL_SO": os.path.join(ROOT, ".build/tests/hold-gil.so")})
    p.wait_out("ready")
    t = tmux([PROBING, "-t", str(p.pid), "top"], x=140, y=16)
    s = t.wait(lambda s: state_of(s, p.pid) is not None, 20, "the target's row")
    assert s.rstrip("\n").split("\n")[-1].startswith(
        "F1Help F2Procs F3Modules F4Stacks F5SQL F6Eval F10Quit")

    def threads(s):
        return [l for l in s.splitlines() if l.startswith("Thread ")]
    t.keys("3")  # a digit shows the pane too
    s = t.wait(lambda s: threads(s) and "holding the GIL" in s, 30, "the holder")
    first = threads(s)[0]
    assert " holder: holding the GIL" in first, s
    # End goes to the last line (the holder's header scrolls away), Home
    # back to the first; PgDn moves by a page
    t.keys("End")
    t.wait(lambda s: first not in s, 10, "the end of the stacks")
    t.keys("Home")
    t.wait(lambda s: threads(s) and threads(s)[0] == first, 10, "the top again")
    t.keys("NPage")
    t.wait(lambda s: first not in s, 10, "a page down")
    # the help lists the panes from the same table
    t.keys("F1")
    s = t.wait_text("probing top: keys")
    assert "F2..F6, 1..5    Processes, Modules, Stacks, SQL, Eval" in s
    t.keys("x")
    t.keys("q")
    assert t.wait_exit() == 0


BLOCKS = "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"
ASCII_SPARK = "_.-:=+*#"
BARS = "\u258f\u258e\u258d\u258c\u258b\u258a\u2589\u2588"


def spark_of(screen, pid):
    """The LAST 60 cell of pid's row: the word after the MED ms column."""
    m = re.search(r" (?:running|hung|idle) +\d+ +[\d.]+ +[\d.]+ +(\S+) ",
                  row_of(screen, pid))
    return m.group(1) if m else ""


@needs_torch
@pytest.mark.parametrize("lang", ["C.UTF-8", "C"])
def test_top_charts_sparkline_bars_and_detail_view(spawn, tmux, lang):
    utf8 = lang != "C"
    chars = BLOCKS if utf8 else ASCII_SPARK
    p = spawn("train_torch.py")
    t = tmux(["env", "LANG=" + lang, "LC_ALL=" + lang, PROBING, "-t", str(p.pid), "top",
              "--interval", "0.3"])

    # the Processes row: a step-time sparkline of block characters (ASCII
    # under LANG=C) that grows as steps come in
    s = t.wait(lambda s: len(spark_of(s, p.pid)) >= 2, 40, "a sparkline in the row")
    assert "LAST 60" in s
    spark = spark_of(s, p.pid)
    assert all(c in chars for c in spark), (spark, s)
    if not utf8:
        assert not any(c in BLOCKS for c in s), s
    # the frame column still shows after it
    assert "MAIN THREAD" in s

    # Modules: a bar per module, the root (all the time) the longest
    t.keys("F3")
    s = t.wait(lambda s: "TIME SHARE" in s and
               re.search(r"%\s+\d+\s+[" + (BARS if utf8 else "#") + "]+", s),
               30, "module bars")
    if not utf8:
        assert not any(c in BLOCKS for c in s), s

    # Enter on the process opens its charts: step time and memory
    t.keys("F2")
    t.wait(lambda s: row_of(s, p.pid) != "", 10, "the Processes pane")
    for close in ("Escape", "Enter", "q"):
        t.keys("Enter")
        s = t.wait(lambda s: "Charts of %d" % p.pid in s and "Allocated memory" in s,
                   10, "the detail view")
        assert "Step time over the last" in s
        lines = s.splitlines()
        top = next(i for i, l in enumerate(lines) if l.startswith("Step time over"))
        chart = "\n".join(lines[top + 1:top + 4])
        assert any(c in chart for c in (BLOCKS if utf8 else ASCII_SPARK)), s
        if not utf8:
            assert not any(c in BLOCKS for c in s), s
        t.keys(close)
        s = t.wait(lambda s: "Charts of" not in s and row_of(s, p.pid) != "", 10,
                   "the view closed by %s" % close)
    # q closed the view, not the program; a second q quits
    assert t.status() is None
    t.keys("q")
    assert t.wait_exit() == 0, t.screen()


@needs_torch
def test_top_batch_has_no_sparkline_column(spawn):
    p = spawn("train_torch.py")

    def ready():
        r = probing("-t", p.pid, "top", "--batch")
        return (r.returncode == 0 and state_of(r.stdout, p.pid) == "running" and r.stdout)
    out = wait_for(ready, 30, "a running row in --batch", interval=0.2)
    header = next(l for l in out.splitlines() if l.startswith("PID/ENDPOINT"))
    assert header.split()[:12] == ["PID/ENDPOINT", "RANK", "COMMAND", "STATE", "STEP",
                                   "LAST", "ms", "MED", "ms", "FWD", "ms", "BWD"]
    assert "LAST 60" not in out and not any(c in BLOCKS for c in out)
