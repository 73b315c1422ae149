"""Workloads for the backtrace tests: python3 bt-workload.py MODE.

Each mode gets its threads into a known, lasting state, then prints
"ready <pid>" on stdout and waits to be killed.

  shapes    recursion, custom and non-ASCII thread names, a generator and a
            coroutine in progress, exec strings, lambdas, a class body
  deadlock  two threads deadlocked on threading.Locks
  hold-gil  the main thread stuck in a C call that keeps the GIL (ctypes.PyDLL)
  spin-gil  the same, busy-looping in C
  sleeper   two threads sleep a known time and report how long they slept
  masked    a thread that blocks every signal
"""
import ctypes
import os
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


def ready():
    sys.stdout.write("ready %d\n" % os.getpid())
    sys.stdout.flush()


def park_forever():
    while True:
        time.sleep(3600)


# --- shapes ---------------------------------------------------------------

def recurse(n, event):
    if n == 0:
        event.set()
        park_forever()
    return recurse(n - 1, event)


def gen_body(event):
    event.set()
    yield park_forever()


def drive_generator(event):
    for _ in gen_body(event):
        pass


async def coro_inner(event):
    event.set()
    park_forever()


async def coro_outer(event):
    await coro_inner(event)


def drive_coroutine(event):
    c = coro_outer(event)
    try:
        c.send(None)
    except StopIteration:
        pass


def exec_string(event):
    exec("def from_exec(e):\n    e.set()\n    park_forever()\nfrom_exec(event)\n",
         {"park_forever": park_forever, "event": event})


def run_lambda(event):
    f = lambda e: (e.set(), park_forever())  # noqa: E731
    f(event)


def class_body(event):
    class Holder:
        event.set()
        park_forever()
    return Holder


def größe_função(event):
    event.set()
    park_forever()


def shapes():
    started = []
    specs = [
        ("recursion-thread", lambda e: recurse(25, e)),
        ("generator-thread", drive_generator),
        ("coroutine-thread", drive_coroutine),
        ("exec-thread", exec_string),
        ("lambda-thread", run_lambda),
        ("class-thread", class_body),
        ("ünïcødé-线程", größe_função),
    ]
    for name, fn in specs:
        e = threading.Event()
        threading.Thread(target=fn, args=(e,), name=name, daemon=True).start()
        started.append(e)
    for e in started:
        e.wait(10)
    ready()
    park_forever()


# --- deadlock -------------------------------------------------------------

def deadlock():
    a, b = threading.Lock(), threading.Lock()
    both = threading.Barrier(3)

    def take_a_then_b():
        with a:
            both.wait()
            with b:
                pass

    def take_b_then_a():
        with b:
            both.wait()
            with a:
                pass

    threading.Thread(target=take_a_then_b, name="locker-ab", daemon=True).start()
    threading.Thread(target=take_b_then_a, name="locker-ba", daemon=True).start()
    both.wait()
    ready()
    park_forever()


# --- hold-gil -------------------------------------------------------------

def call_into_c(lib, spin):
    (lib.hold_gil_forever if spin else lib.hold_gil_sleep)()


def hold_gil(spin=False):
    so = os.environ.get("HOLD_GIL_SO",
                        os.path.join(ROOT, ".build", "tests", "hold-gil.so"))
    lib = ctypes.PyDLL(so)
    threading.Thread(target=park_forever, name="bystander", daemon=True).start()
    # Tell the test, then never come back: the GIL is held from now on.
    ready()
    call_into_c(lib, spin)


# --- masked ---------------------------------------------------------------

def masked():
    import signal
    started = threading.Event()

    def blocked():
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        started.set()
        park_forever()

    threading.Thread(target=blocked, name="masked-thread", daemon=True).start()
    started.wait(10)
    ready()
    park_forever()


# --- sleeper --------------------------------------------------------------

def sleeper():
    secs = float(os.environ.get("SLEEP_SECONDS", "2"))
    out = {}

    def sleep_once():
        t0 = time.monotonic()
        time.sleep(secs)
        out["slept"] = time.monotonic() - t0

    t = threading.Thread(target=sleep_once, name="sleeper", daemon=True)
    t.start()
    ready()
    t0 = time.monotonic()
    time.sleep(secs)
    main_slept = time.monotonic() - t0
    t.join()
    sys.stdout.write("slept %.6f %.6f\n" % (main_slept, out["slept"]))
    sys.stdout.flush()
    park_forever()


if __name__ == "__main__":
    mode = sys.argv[1]
    {"shapes": shapes, "deadlock": deadlock, "hold-gil": hold_gil,
     "spin-gil": lambda: hold_gil(spin=True), "sleeper": sleeper, "masked": masked}[mode]()
