"""No one else gets in: a local user (uid 65534) against a root job. TCP
without the token runs nothing, planted links and FIFOs in /tmp are never
followed or waited on, a squatted @probing-PID is refused by the CLI, and a
flood of idle connections leaves the job its file descriptors."""
import json
import os
import re
import resource
import shutil
import socket
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import PROBING, PY, WORKLOADS, probing, wait_for

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
# The other user's own programs (a squatter, a flood) run on the system's
# python; the target's python may live where only root reaches (pyenv's
# under /root), and then no job of another uid can run on it.
OTHER_PY = "/usr/bin/python3"
OTHERS_RUN_PY = subprocess.run(NOBODY + [PY, "-c", "pass"], capture_output=True).returncode == 0


def as_nobody(argv, env=None, timeout=60, nofile=None, **kw):
    """Runs argv as uid 65534 (with a higher fd limit when nofile)."""
    e = {"PATH": "/usr/bin:/bin"}
    e.update(env or {})

    def limits():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    return subprocess.run(NOBODY + [str(a) for a in argv], env=e, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limits, **kw)


def nobody_dir():
    """A scratch directory uid 65534 may write into."""
    d = tempfile.mkdtemp(prefix="probing-sec-")
    os.chmod(d, 0o777)
    return d


def victim_file():
    """A root-owned file an attacker would like the agent to append to."""
    fd, path = tempfile.mkstemp(prefix="probing-victim-")
    os.write(fd, b"untouched\n")
    os.close(fd)
    os.chmod(path, 0o644)
    return path


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# TCP ------------------------------------------------------------------

def test_other_user_cannot_run_code_over_tcp_without_a_token(spawn):
    port = free_port()
    p = spawn("idle.py", env={"PROBING_PORT": str(port)})
    r = as_nobody([PROBING, "-t", "127.0.0.1:%d" % port, "eval", "import os; os.getuid()"])
    assert r.returncode == 1 and r.stdout == ""
    assert "cannot connect" in r.stderr
    assert "not serving tcp port %d" % port in p.err()


def test_other_user_cannot_run_code_over_tcp_with_a_token_guess(spawn):
    port = free_port()
    p = spawn("idle.py", env={"PROBING_PORT": str(port), "PROBING_AUTH_TOKEN": "s3cret-t0ken"})
    wait_for(lambda: probing("-t", "127.0.0.1:%d" % port, "query", "SELECT 1",
                             env={"PROBING_AUTH_TOKEN": "s3cret-t0ken"}).returncode == 0,
             20, "tcp serving")
    for guess in ("guess", "s3cret-t0ke", "s3cret-t0ken0", ""):
        r = as_nobody([PROBING, "-t", "127.0.0.1:%d" % port, "eval", "import os; os.getuid()"],
                      env={"PROBING_AUTH_TOKEN": guess} if guess else {})
        assert r.returncode == 1 and r.stdout == "", guess
        assert ("wrong token" if guess else "missing token") in r.stderr, r.stderr
    # /health without the token says only that it is alive
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = read_all(s)
    assert reply.startswith(b"HTTP/1.1 200")
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1]) == {"alive": True}
    # a request without the token is refused before its body is read:
    # the answer comes though the body never does
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(b"POST /eval HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    reply = read_all(s)
    assert reply.startswith(b"HTTP/1.1 401") and b"missing token" in reply
    # the scheme is case-insensitive for the real token
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    body = b'{"sql": "SELECT 42 AS x"}'
    s.sendall(b"POST /query HTTP/1.1\r\nHost: x\r\nAuthorization: BEARER s3cret-t0ken\r\n"
              b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    reply = read_all(s)
    assert reply.startswith(b"HTTP/1.1 200") and b"42" in reply
    assert p.alive()


def read_all(s):
    out = b""
    while True:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            break
        if not d:
            break
        out += d
    s.close()
    return out


# files in /tmp ----------------------------------------------------------

def test_inject_does_not_write_through_planted_links(spawn):
    p = spawn("idle.py", probing=None)
    victim = victim_file()
    init = victim_file()
    with open(init, "w") as f:
        f.write("probing.sample_rate=0.125\n")
    log_link, init_link = "/tmp/probing-%d.log" % p.pid, "/tmp/probing-%d.init" % p.pid
    for f in (log_link, init_link):  # left by a dead process of that pid
        if os.path.lexists(f):
            os.unlink(f)
    try:
        r = as_nobody(["ln", "-sf", victim, log_link])
        assert r.returncode == 0, r.stderr
        r = as_nobody(["ln", "-sf", init, init_link])
        assert r.returncode == 0, r.stderr
        r = probing("-t", p.pid, "inject")
        assert r.returncode == 0, r.stderr
        assert probing("-t", p.pid, "query", "SELECT 1").returncode == 0
        assert probing("-t", p.pid, "config", "probing.sample_rate").stdout == "1.0\n"
        assert open(victim).read() == "untouched\n"
    finally:
        for f in (log_link, init_link, victim, init):
            if os.path.lexists(f):
                os.unlink(f)


def test_probing_start_ignores_fifos_and_links_in_tmp(spawn, tmp_path):
    """The job runs as pid 1 of a pid namespace, so the names planted for
    it (/tmp/probing-1.*) can be no other process's."""
    victim = victim_file()
    planted = []
    try:
        for n in range(1, 4):
            for kind, path in (("fifo", "/tmp/probing-%d.init" % n), ("link", "/tmp/probing-%d.log" % n)):
                if os.path.lexists(path):
                    os.unlink(path)
                r = as_nobody(["mkfifo", path] if kind == "fifo" else ["ln", "-s", victim, path])
                assert r.returncode == 0, r.stderr
                planted.append(path)
        xdg = str(tmp_path / "run")
        os.mkdir(xdg, 0o700)
        p = spawn(None, argv=["unshare", "--pid", "--fork", "--kill-child", PY,
                              os.path.join(WORKLOADS, "idle.py")],
                  env={"XDG_RUNTIME_DIR": xdg}, wait=False)
        wait_for(lambda: "agent listening on @probing-1" in p.err() or not p.alive(), 20,
                 "the agent of the namespaced job (it hangs on a FIFO in today's code)")
        assert "agent listening on @probing-1 (pid 1)" in p.err(), p.err()
        assert open(victim).read() == "untouched\n"
        assert os.path.exists(os.path.join(xdg, "probing", "1.log"))
        assert stat.S_IMODE(os.stat(os.path.join(xdg, "probing")).st_mode) == 0o700
    finally:
        for f in planted + [victim]:
            if os.path.lexists(f):
                os.unlink(f)


def test_inject_copy_of_the_agent_is_not_written_through_a_planted_link(spawn):
    """A target that cannot see the agent file gets a copy: not in /tmp,
    where uid 65534 planted the name as a link to a root file."""
    import sysconfig
    victim = victim_file()
    ver = sysconfig.get_python_version()
    planted = "/tmp/libprobing-%s.so" % ver
    script = "import os, time\nprint('ready', os.getpid(), flush=True)\nwhile True: time.sleep(0.05)\n"
    hide = os.path.dirname(os.path.dirname(PROBING))
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            "mount -t tmpfs none %s && exec %s -c \"$0\"" % (hide, PY), script]
    p = spawn(None, probing=None, wait=False, argv=argv)
    try:
        # the workload's stdout is unbuffered: wait for the whole line
        pid = int(wait_for(lambda: re.search(r"ready (\d+)\n", p.out()), 20,
                           "the target's pid").group(1))
        if os.path.lexists(planted):
            os.unlink(planted)
        assert as_nobody(["ln", "-s", victim, planted]).returncode == 0
        r = probing("-t", pid, "inject")
        assert r.returncode == 0, r.stderr
        assert probing("-t", pid, "eval", "os.getpid()").stdout == "%d\n" % pid
        assert open(victim).read() == "untouched\n"
    finally:
        for f in (planted, victim):
            if os.path.lexists(f):
                os.unlink(f)


@pytest.mark.skipif(not OTHERS_RUN_PY, reason="%s cannot be run by other users" % PY)
def test_planted_user_directory_is_refused(spawn):
    """A job of uid 4242: uid 65534 plants /tmp/probing-4242 first."""
    d = "/tmp/probing-4242"
    if os.path.lexists(d):
        shutil.rmtree(d) if not os.path.islink(d) else os.unlink(d)
    p = spawn(None, probing=None, argv=["setpriv", "--reuid=4242", "--regid=4242", "--clear-groups",
                                        PY, os.path.join(WORKLOADS, "idle.py")])
    theirs = nobody_dir()
    try:
        wait_for(lambda: os.path.exists("/proc/%d/status" % p.pid) and
                 "4242" in open("/proc/%d/status" % p.pid).read().split("Uid:")[1].split("\n")[0],
                 10, "the job to run as uid 4242")
        assert as_nobody(["ln", "-s", theirs, d]).returncode == 0
        r = probing("-t", p.pid, "inject", "-D", "probing.sample_rate=0.5")
        assert r.returncode == 1 and "refusing" in r.stderr and "symbolic link" in r.stderr, r.stderr
        os.unlink(d)
        assert as_nobody(["mkdir", "-m", "0777", d]).returncode == 0
        r = probing("-t", p.pid, "inject", "-D", "probing.sample_rate=0.5")
        assert r.returncode == 1 and "owned by uid 65534" in r.stderr, r.stderr
        # plain inject: the agent starts, logs nowhere, writes nothing there
        r = probing("-t", p.pid, "inject")
        assert r.returncode == 0, r.stderr
        assert probing("-t", p.pid, "query", "SELECT 1").returncode == 0
        assert os.listdir(d) == [] and os.listdir(theirs) == []
    finally:
        if os.path.islink(d):
            os.unlink(d)
        elif os.path.isdir(d):
            shutil.rmtree(d)
        shutil.rmtree(theirs)


# the socket name --------------------------------------------------------

SQUAT = r'''
import socket, sys, threading
pid, log = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\0probing-%d" % pid)
s.listen(16)
body = (b'{"output": "FORGED", "error": null, "columns": ["x"], "types": ["TEXT"],'
        b' "rows": [["FORGED"]], "pid": %d, "python": "FORGED", "version": "0",'
        b' "tcp_port": 0, "uid": 0, "auth": false, "keys": []}\n' % pid)
print("ready", flush=True)
def serve(c):
    c.settimeout(3)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            d = c.recv(65536)
            if not d:
                break
            data += d
    except OSError:
        pass
    with open(log, "ab") as f:
        f.write(data)
    try:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    except OSError:
        pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''


def test_squatted_socket_is_refused(spawn, userbase):
    p = spawn("idle.py", probing=None)
    d = nobody_dir()
    script, got = os.path.join(d, "squat.py"), os.path.join(d, "got")
    with open(script, "w") as f:
        f.write(SQUAT)
    open(got, "w").close()
    os.chmod(got, 0o666)
    sq = subprocess.Popen(NOBODY + [OTHER_PY, script, str(p.pid), got], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    try:
        assert sq.stdout.readline().strip() == "ready"
        want = "@probing-%d is held by pid %d (uid 65534), not by the target: refusing" % (p.pid, sq.pid)
        for args in (["eval", "SECRET = 'hunter2'"], ["query", "SELECT 1"],
                     ["config", "probing.sample_rate"], ["backtrace"],
                     ["inject", "-D", "probing.sample_rate=0.5"], ["top", "--batch"]):
            r = probing("-t", p.pid, *args)
            assert "FORGED" not in r.stdout and "already probed" not in r.stdout, args
            assert want in r.stdout + r.stderr, (args, r.stdout, r.stderr)
            if args[0] != "top":
                assert r.returncode == 1 and r.stdout == "", (args, r.stdout)
        r = probing("list", "-f", "json")
        assert r.returncode == 0
        assert p.pid not in [row["pid"] for row in json.loads(r.stdout)]
        # the Python API refuses the same way
        r = subprocess.run([PY, "-c", "import probing\ntry:\n probing.connect(pid=%d)\n"
                            "except probing.ConnectionError as e:\n print(e)" % p.pid],
                           env=userbase, capture_output=True, text=True, timeout=60)
        assert r.stdout.strip() == want, (r.stdout, r.stderr)
        assert open(got, "rb").read() == b"", "the request went to the squatter"
    finally:
        sq.kill()
        sq.wait()
        shutil.rmtree(d)


# connections -----------------------------------------------------------

JOB = r'''
import os, socket, time
fails = 0
print("ready", flush=True)
while True:
    for i in range(20):
        try:
            os.close(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            fails += 1
        try:
            socket.socket().close()
        except OSError:
            fails += 1
    time.sleep(0.002)
'''

FLOOD = r'''
import socket, sys, time
port, pid, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
socks = []
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    socks.append(s)
    if i % 50 == 49:
        time.sleep(0.05)  # let the listen backlog drain
for i in range(100):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect("\0probing-%d" % pid)
    except OSError:
        pass
    socks.append(s)
time.sleep(1)
for s in socks[:50]:   # half-sent and trickling heads
    try:
        s.send(b"POST /eval HTTP/1.1\r\nContent-Length: 10\r\n")
    except OSError:
        pass
print("holding %d" % len(socks), flush=True)
time.sleep(float(sys.argv[4]))
'''


def test_idle_connections_leave_the_job_its_fds(spawn, tmp_path):
    port = free_port()
    job = tmp_path / "job.py"
    job.write_text(JOB)
    p = spawn(None, argv=["sh", "-c", "ulimit -n 1024 && exec %s %s" % (PY, job)],
              env={"PROBING_PORT": str(port), "PROBING_AUTH_TOKEN": "t0k3n"})
    p.wait_out("ready")
    d = nobody_dir()
    flood = os.path.join(d, "flood.py")
    with open(flood, "w") as f:
        f.write(FLOOD)
    fl = subprocess.Popen(NOBODY + [OTHER_PY, flood, str(port), str(p.pid), "1100", "12"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096)))
    try:
        line = fl.stdout.readline()
        assert line.startswith("holding"), fl.stderr.read()
        # the flood's SYNs are retried for seconds; watch the job meanwhile
        nfds = 0
        for i in range(60):
            nfds = max(nfds, len(os.listdir("/proc/%d/fd" % p.pid)))
            time.sleep(0.1)
        r = probing("-t", p.pid, "query", "SELECT 7 AS x", timeout=60)
        assert r.returncode == 0 and "7" in r.stdout, r.stderr
        r = probing("-t", p.pid, "eval", "fails", timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == "0", (r.stdout, r.stderr)
        assert nfds < 300, "the agent holds %d fds" % nfds
        assert p.alive()
    finally:
        fl.kill()
        fl.wait()
        shutil.rmtree(d)


def test_log_is_private_and_removed_at_a_clean_exit(spawn, tmp_path):
    xdg = tmp_path / "run"
    xdg.mkdir(mode=0o700)
    d = xdg / "probing"
    d.mkdir(mode=0o700)
    stale = d / "999999999.log"   # no such pid
    stale.write_text("old\n")
    flag = tmp_path / "stop"
    script = tmp_path / "job.py"
    script.write_text("import os, time\nwhile not os.path.exists(%r): time.sleep(0.02)\n" % str(flag))
    p = spawn(None, argv=[PY, str(script)], env={"XDG_RUNTIME_DIR": str(xdg)})
    log = d / ("%d.log" % p.pid)
    assert log.exists() and stat.S_IMODE(log.stat().st_mode) == 0o600
    assert not stale.exists(), "a dead pid's log is removed at agent start"
    assert probing("-t", p.pid, "query", "SELECT 1").returncode == 0
    flag.write_text("x")
    assert p.p.wait(timeout=30) == 0
    assert not log.exists(), "the log is removed when the process exits cleanly"
    # probing list removes what a killed process left
    stale.write_text("old\n")
    r = probing("list", env={"XDG_RUNTIME_DIR": str(xdg)})
    assert r.returncode == 0 and not stale.exists()
