# The Python half of eval, the repl and completion (agent/eval.c calls
# these under the GIL). Code runs in __main__; what an eval's own thread
# prints goes to a buffer of its own, other threads still reach the
# original streams. An eval's thread cannot read the target's stdin, close
# it, or write to its descriptors.
#
# How output is captured, and why this way: sys.stdout, sys.stderr,
# sys.stdin and sys.displayhook each get a thread-aware wrapper the first
# time an eval runs, and the wrapper stays there for good. It is never put
# back and never freed: the job's print() holds a *borrowed* reference to
# sys.stdout while it writes (and gives up the GIL in the write), so
# replacing the object there and dropping the last reference to it
# crashed printing jobs. Installing once is safe (the wrapper keeps the
# original alive) and every later eval changes nothing in sys. When the
# job puts its own object there later, the next eval wraps that one, and
# every wrapper ever made is kept in _installed.
# An own `print` in the eval's namespace was the other way; it was not
# taken: eval runs in __main__, so a binding there is the job's (and a
# builtins copy needs a globals dict of its own), and it would miss the
# output of nested scopes (comprehensions, functions the eval defines) and
# of library code (pprint, traceback, warnings), which would then land in
# the job's own output.
#
# Only _thread, not threading: importing threading from an agent thread
# would make that thread the process's "main thread" in threading's eyes.
import _thread
import builtins
import io
import sys

_bufs = {}
_lock = _thread.allocate_lock()
_installed = []  # every wrapper put in sys, kept alive for good
_get_ident = _thread.get_ident
_last = None  # the value this helper last stored in builtins._


def _mine():
    return bool(_bufs) and _get_ident() in _bufs


class _Tee:
    def __init__(self, orig):
        self._orig = orig

    def write(self, s):
        # The job's own prints come here too: when no eval runs, one
        # test and the original's write.
        if _bufs:
            buf = _bufs.get(_get_ident())
            if buf is not None:
                return buf.write(s)
        return self._orig.write(s)

    def flush(self):
        if not _bufs or _get_ident() not in _bufs:
            self._orig.flush()

    def fileno(self):
        if _mine():
            raise io.UnsupportedOperation(
                "probing captures this output: it has no file descriptor")
        return self._orig.fileno()

    def isatty(self):
        return False if _mine() else self._orig.isatty()

    def __getattr__(self, name):
        return getattr(self._orig, name)


class _Stdin(_Tee):
    """The target's stdin, which a remote statement sees at EOF."""

    def read(self, *args):
        return "" if _mine() else self._orig.read(*args)

    def readline(self, *args):
        return "" if _mine() else self._orig.readline(*args)

    def readlines(self, *args):
        return [] if _mine() else self._orig.readlines(*args)

    def close(self):
        # site's exit() closes stdin before raising SystemExit.
        if not _mine():
            self._orig.close()

    def __iter__(self):
        return iter(()) if _mine() else iter(self._orig)


class _Display:
    """sys.displayhook: a remote statement's bare expression prints its
    repr into its own buffer."""

    def __init__(self, orig):
        self._orig = orig

    def __call__(self, value):
        global _last
        buf = _bufs.get(_thread.get_ident())
        if buf is None:
            return self._orig(value)
        if value is None:
            return
        buf.write(repr(value) + "\n")
        # Like the REPL's `_`, unless the program owns builtins._ (gettext).
        if not hasattr(builtins, "_") or builtins._ is _last:
            builtins._ = _last = value

    def __getattr__(self, name):
        return getattr(self._orig, name)


_WRAPPERS = (("stdout", _Tee), ("stderr", _Tee), ("stdin", _Stdin),
             ("displayhook", _Display))


def _install():
    """Wraps each of sys's streams that is not wrapped yet (see the top
    of this file: a wrapper is never removed)."""
    for name, cls in _WRAPPERS:
        cur = getattr(sys, name, None)
        if cur is not None and type(cur) is not cls:
            w = cls(cur)
            _installed.append(w)
            setattr(sys, name, w)


def push(buf):
    with _lock:
        _bufs[_thread.get_ident()] = buf
        _install()


def pop():
    with _lock:
        _bufs.pop(_thread.get_ident(), None)


def _traceback():
    import traceback
    return traceback


def _format(e, skip):
    tb = e.__traceback__
    for _ in range(skip):
        if tb is not None:
            tb = tb.tb_next
    return "".join(_traceback().format_exception(type(e), e, tb))


def _format_only(e):
    return "".join(_traceback().format_exception_only(type(e), e))


def run(code):
    """`probing eval`: runs code as a module on the eval's own thread
    (between push and pop); a final bare expression prints its repr.
    Returns (traceback text or None, False)."""
    import ast
    out = _bufs[_thread.get_ident()]
    g = sys.modules["__main__"].__dict__
    try:
        tree = ast.parse(code, "<probing>", "exec")
    except (SyntaxError, ValueError) as e:
        return _format_only(e), False
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    try:
        exec(compile(tree, "<probing>", "exec"), g)
        if last is not None:
            v = eval(compile(last, "<probing>", "eval"), g)
            if v is not None:
                out.write(repr(v) + "\n")
    except BaseException as e:
        return _format(e, 1), False
    return None, False


_compiler = None


def compile_interactive(src, final):
    """The repl's rule for one input: returns (code, error, printed). code
    and error are both None while the statement is incomplete; final
    compiles what there is (end of input)."""
    global _compiler
    import codeop
    if _compiler is None:
        _compiler = codeop.CommandCompiler()
    buf = io.StringIO()  # SyntaxWarnings land here, not in the target
    push(buf)
    try:
        if final:
            code = compile(src, "<stdin>", "single")
        else:
            code = _compiler(src, "<stdin>", "single")
        return code, None, buf.getvalue()
    except (SyntaxError, ValueError, OverflowError) as e:
        return None, _format_only(e), buf.getvalue()
    finally:
        pop()


class Emit:
    """An eval's output: each write goes to the agent at once (a repl
    client sees it while the statement runs); past the agent's limit it
    raises."""

    def __init__(self, job):
        self._job = job

    def write(self, s):
        s = str(s)
        _emit(self._job, s)  # noqa: F821 (set by eval.c)
        return len(s)

    def flush(self):
        pass


def run_interactive(code):
    """Runs one compiled repl statement in __main__ (on the statement's
    own thread, between push and pop). Returns (error, exited)."""
    try:
        exec(code, sys.modules["__main__"].__dict__)
    except SystemExit:
        return None, True
    except BaseException as e:
        return _format(e, 1), False
    return None, False


_completer = None


def _completer_class():
    """rlcompleter.Completer from a private copy of the module: importing
    the real one would import readline into the target (which may write
    to its terminal) and replace its completer."""
    global _completer
    if _completer is None:
        import importlib.util
        spec = importlib.util.find_spec("rlcompleter")
        real_import = builtins.__import__

        def no_readline(name, *args, **kwargs):
            if name == "readline":
                raise ImportError("no readline for probing's completer")
            return real_import(name, *args, **kwargs)

        ns = {"__name__": "probing_rlcompleter",
              "__builtins__": dict(builtins.__dict__,
                                   __import__=no_readline)}
        src = spec.loader.get_source("rlcompleter")
        exec(compile(src, spec.origin, "exec"), ns)
        _completer = ns["Completer"]
    return _completer


def complete(text):
    c = _completer_class()(sys.modules["__main__"].__dict__)
    out = []
    for i in range(1000):
        m = c.complete(text, i)
        if m is None:
            break
        out.append(m)
    return out


def table(name=None, *, columns=None):
    """@table("name") registers python.<name>: each query calls the
    function and reads its rows (dicts, or tuples with columns=)."""
    def register(fn):
        sys.modules["probing._core"].table_register(
            name if isinstance(name, str) else fn.__name__, fn, columns)
        return fn
    return register(name) if callable(name) else register


table.__module__ = "probing"


def untable(name):
    """untable("name") removes the user table python.<name>."""
    sys.modules["probing._core"].table_unregister(name)


untable.__module__ = "probing"


def provide(core):
    """Makes `from probing import table` work in a process whose agent was
    injected: probing._core is this agent, and `probing` is a small module
    of its own when the package is not importable here."""
    mods = sys.modules
    if "probing._core" not in mods:
        mods["probing._core"] = core
    if "probing" in mods:
        # Tables registered before the agent came (the package keeps them).
        pending = getattr(mods["probing"], "_pending", None)
        while pending:
            name, (fn, columns) = pending.popitem()
            try:
                mods["probing._core"].table_register(name, fn, columns)
            except Exception:
                pass
        return
    try:
        import importlib.util
        if importlib.util.find_spec("probing") is not None:
            return
    except (ImportError, ValueError):
        pass
    import types
    m = types.ModuleType("probing", "probing, provided by the agent in "
                         "this process (the package is not installed "
                         "here): table() registers python.<name> tables")
    m.__path__ = []
    m._core = mods["probing._core"]
    m.table = table
    m.untable = untable
    mods["probing"] = m
