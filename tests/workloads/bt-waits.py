"""Workloads for the harm tests of backtrace: python3 bt-waits.py MODE.

  c-waits   threads in C waits through ctypes.CDLL that do not retry on
            EINTR: usleep, poll, epoll_wait, nanosleep, read() on an idle
            pipe, sigtimedwait on every real-time signal (blocked in that
            thread); a thread reaping children with waitpid(-1) and a
            SIGCHLD handler that counts. Prints "ready <pid>", then, once
            the file $ARM_FILE exists, installs a handler on every
            real-time signal and prints "armed". Each wait lasts
            $WAIT_SECONDS; when all are over it prints one line per wait,
            "result NAME ELAPSED RETURN ERRNO", then "handler-calls N",
            "sigchld N", "reaped PIDS" and "done".
  gil-sleep the main thread in libc's sleep(3600) through ctypes.PyDLL, so
            it keeps the GIL; a bystander thread. Prints "returned" and
            exits if the sleep ever ends.
  seccomp   a seccomp filter on every thread makes ptrace fail with EPERM;
            threads parked in Python.
  subreaper the process is a child subreaper (PR_SET_CHILD_SUBREAPER);
            threads parked in Python.
  fork      once $ARM_FILE exists, forks a child that lists its open fds
            ("child {fd: link}") and exits.
"""
import ctypes
import os
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

if (os.environ.get("PROBING", "0") not in ("", "0")
        and "probing._core" not in sys.modules):
    # Not installed: load the agent from this checkout, as probing.pth would.
    sys.path.insert(0, os.path.join(ROOT, "agent", "python"))
    import probing._boot  # noqa: F401,E402

libc = ctypes.CDLL(None, use_errno=True)


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def park_forever():
    while True:
        time.sleep(3600)


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def timespec(secs):
    return Timespec(int(secs), int((secs - int(secs)) * 1e9))


def rt_sigset():
    """A sigset_t (128 bytes) holding every real-time signal."""
    s = (ctypes.c_ulong * 16)()
    for sig in range(signal.SIGRTMIN, signal.SIGRTMAX + 1):
        s[(sig - 1) // 64] |= 1 << ((sig - 1) % 64)
    return s


def c_waits():
    secs = float(os.environ.get("WAIT_SECONDS", "5"))
    ms = int(secs * 1000)
    results = {}
    handler_calls = [0]
    sigchld = [0]
    reaped = []
    rfd, wfd = os.pipe()
    epfd = libc.epoll_create1(0)

    def timed(name, call):
        def run():
            ctypes.set_errno(0)
            t0 = time.monotonic()
            r = call()
            elapsed = time.monotonic() - t0
            results[name] = (elapsed, r, ctypes.get_errno())
        return threading.Thread(target=run, name=name, daemon=True)

    def sigwait():
        # Blocked here (sigtimedwait needs that), not in the other threads.
        signal.pthread_sigmask(signal.SIG_BLOCK,
                               range(signal.SIGRTMIN, signal.SIGRTMAX + 1))
        got = []
        ctypes.set_errno(0)
        t0 = time.monotonic()
        while True:
            left = secs - (time.monotonic() - t0)
            if left <= 0:
                break
            r = libc.sigtimedwait(ctypes.byref(rt_sigset()), None,
                                  ctypes.byref(timespec(left)))
            if r > 0:
                got.append(r)
            elif ctypes.get_errno() != 11:  # EAGAIN: the timeout
                got.append(-ctypes.get_errno())
        results["sigtimedwait"] = (time.monotonic() - t0, len(got), 0)

    def reaper():
        while True:
            try:
                pid, _ = os.waitpid(-1, 0)
                reaped.append(pid)
            except ChildProcessError:
                time.sleep(0.002)

    buf = ctypes.create_string_buffer(8)
    events = ctypes.create_string_buffer(12 * 4)
    threads = [
        timed("usleep", lambda: libc.usleep(int(secs * 1e6))),
        timed("poll", lambda: libc.poll(None, 0, ms)),
        timed("epoll_wait", lambda: libc.epoll_wait(epfd, events, 4, ms)),
        timed("nanosleep", lambda: libc.nanosleep(ctypes.byref(timespec(secs)), None)),
        timed("read", lambda: libc.read(rfd, buf, 1)),
        threading.Thread(target=sigwait, name="sigtimedwait", daemon=True),
    ]
    signal.signal(signal.SIGCHLD, lambda s, f: sigchld.__setitem__(0, sigchld[0] + 1))
    threading.Thread(target=reaper, name="reaper", daemon=True).start()
    for t in threads:
        t.start()
    say("ready %d" % os.getpid())
    arm = os.environ["ARM_FILE"]
    while not os.path.exists(arm):
        time.sleep(0.01)

    def count(signum, frame):
        handler_calls[0] += 1
    for sig in range(signal.SIGRTMIN, signal.SIGRTMAX + 1):
        signal.signal(sig, count)
    say("armed")
    for t in threads:
        if t.name != "read":
            t.join()
    os.write(wfd, b"x")
    threads[4].join()
    for name in ("usleep", "poll", "epoll_wait", "nanosleep", "read", "sigtimedwait"):
        elapsed, r, err = results[name]
        say("result %s %.6f %d %d" % (name, elapsed, r, err))
    say("handler-calls %d" % handler_calls[0])
    say("sigchld %d" % sigchld[0])
    say("reaped %s" % (",".join(map(str, reaped)) or "-"))
    say("done")
    park_forever()


def gil_sleep():
    threading.Thread(target=park_forever, name="bystander", daemon=True).start()
    say("ready %d" % os.getpid())
    ctypes.PyDLL(None).sleep(3600)
    say("returned")


def seccomp():
    # BPF: load the syscall number; ptrace (101) -> ERRNO(EPERM), else allow.
    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte),
                    ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]

    insns = (Insn * 4)(Insn(0x20, 0, 0, 0), Insn(0x15, 0, 1, 101),
                       Insn(0x06, 0, 0, 0x00050000 | 1), Insn(0x06, 0, 0, 0x7fff0000))
    prog = Prog(4, insns)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise SystemExit("no_new_privs: errno %d" % ctypes.get_errno())
    # seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog)
    if libc.syscall(317, 1, 1, ctypes.byref(prog)) != 0:
        raise SystemExit("seccomp: errno %d" % ctypes.get_errno())
    threading.Thread(target=park_forever, name="parked", daemon=True).start()
    say("ready %d" % os.getpid())
    park_forever()


def subreaper():
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise SystemExit("subreaper: errno %d" % ctypes.get_errno())
    threading.Thread(target=park_forever, name="parked", daemon=True).start()
    say("ready %d" % os.getpid())
    park_forever()


def fork_after():
    say("ready %d" % os.getpid())
    arm = os.environ["ARM_FILE"]
    while not os.path.exists(arm):
        time.sleep(0.01)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        fds = {}
        for fd in os.listdir("/proc/self/fd"):
            try:
                fds[fd] = os.readlink("/proc/self/fd/" + fd)
            except OSError:
                pass
        os.write(w, repr(fds).encode())
        os._exit(0)
    os.close(w)
    say("child " + os.read(r, 65536).decode())
    os.waitpid(pid, 0)
    park_forever()


if __name__ == "__main__":
    {"c-waits": c_waits, "gil-sleep": gil_sleep, "seccomp": seccomp,
     "subreaper": subreaper, "fork": fork_after}[sys.argv[1]]()
