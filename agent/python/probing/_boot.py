"""Start-time enable: loads the agent when PROBING asks for it.

Imported by probing.pth only when PROBING is set and not 0. Never raises:
a bad value is reported once on stderr and the program goes on.
"""
import os
import sys

_MODES = "0, 1, 2, followed, nested, regex:PATTERN or NAME.py"


def _warn(msg):
    try:
        sys.stderr.write("probing: %s\n" % msg)
    except Exception:
        pass


def _script_name():
    """Base name of the script being run, read from /proc (sys.argv is not
    set yet while site runs)."""
    try:
        with open("/proc/self/cmdline", "rb") as f:
            args = f.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return ""
    i = 1
    while i < len(args):
        a = args[i]
        if a in ("-c", "-m"):
            return a if a == "-c" else (args[i + 1] if i + 1 < len(args) else "")
        if a in ("-X", "-W", "--check-hash-based-pycs"):
            i += 2
            continue
        if a.startswith("-") and a != "-":
            i += 1
            continue
        return os.path.basename(a)
    return ""


def _wanted(value):
    """Returns (load, keep_env) for a PROBING value, or None if invalid."""
    v = value.strip()
    low = v.lower()
    if low in ("", "0"):
        return False, True
    if low in ("1", "followed"):
        return True, False
    if low in ("2", "nested"):
        return True, True
    if low.startswith("regex:"):
        import re
        try:
            pat = re.compile(v[6:])
        except re.error as e:
            _warn("ignoring PROBING=%r: bad regex: %s" % (value, e))
            return None
        return bool(pat.search(_script_name())), True
    if low.endswith(".py") and "/" not in v:
        return _script_name() == v, True
    _warn("ignoring PROBING=%r: expected %s" % (value, _MODES))
    return None


def _agent_path():
    here = os.path.dirname(os.path.abspath(__file__))
    name = "libprobing-%d.%d.so" % sys.version_info[:2]
    for d in (os.environ.get("PROBING_AGENT_DIR", ""), here,
              os.path.join(here, "..", "..")):
        p = os.path.join(d, name) if d else ""
        if p and os.path.exists(p):
            return os.path.realpath(p)
    return None


def load():
    """Loads the agent into this process; returns the probing._core module
    or None (after one line on stderr)."""
    if "probing._core" in sys.modules:
        return sys.modules["probing._core"]
    if "t" in getattr(sys, "abiflags", ""):
        # A free-threaded build (its ABI tag: python3.14t). The agent
        # reads the interpreter's structures as a build with the GIL lays
        # them out: it is never loaded here.
        _warn("python %st is a free-threaded build, which probing does not "
              "support; running without it" % sys.version.split()[0])
        return None
    path = _agent_path()
    if path is None:
        _warn("no agent built for python %d.%d next to %s" %
              (sys.version_info[0], sys.version_info[1],
               os.path.dirname(os.path.abspath(__file__))))
        return None
    try:
        import importlib.machinery
        import importlib.util
        loader = importlib.machinery.ExtensionFileLoader("probing._core", path)
        spec = importlib.util.spec_from_file_location("probing._core", path,
                                                      loader=loader)
        mod = importlib.util.module_from_spec(spec)
        loader.exec_module(mod)
        sys.modules["probing._core"] = mod
        return mod
    except Exception as e:
        _warn("cannot load the agent %s: %s" % (path, e))
        return None


def _main():
    value = os.environ.get("PROBING", "0")
    want = _wanted(value)
    if want is None:
        return
    load_it, keep_env = want
    # The agent reads PROBING at load to know it may warn on stderr, so
    # the variable goes only afterwards.
    mod = load() if load_it else None
    if not keep_env:
        os.environ.pop("PROBING", None)
    if mod is None:
        return
    sock = mod.socket()
    if sock is None:
        _warn("the agent did not start; see %s" % mod.log_path())
    else:
        _warn("agent listening on %s (pid %d)" % (sock, os.getpid()))


try:
    _main()
except Exception as e:  # never stop the program for probing
    _warn("start-up failed: %s" % e)
