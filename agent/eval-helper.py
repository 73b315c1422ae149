# Runs code for `probing eval` in __main__ and captures what it prints.
# Output of the eval's own thread goes to a buffer; other threads' output
# still reaches the original stream, which is put back afterwards.
import ast
import io
import sys
import threading
import traceback

_bufs = {}
_lock = threading.Lock()


class _Tee:
    def __init__(self, orig):
        self._orig = orig

    def write(self, s):
        buf = _bufs.get(threading.get_ident())
        if buf is not None:
            return buf.write(s)
        return self._orig.write(s)

    def flush(self):
        if threading.get_ident() not in _bufs:
            self._orig.flush()

    def __getattr__(self, name):
        return getattr(self._orig, name)


def _push(buf):
    with _lock:
        _bufs[threading.get_ident()] = buf
        for name in ("stdout", "stderr"):
            cur = getattr(sys, name)
            if not isinstance(cur, _Tee):
                setattr(sys, name, _Tee(cur))


def _pop():
    with _lock:
        _bufs.pop(threading.get_ident(), None)
        if _bufs:
            return
        for name in ("stdout", "stderr"):
            cur = getattr(sys, name)
            if isinstance(cur, _Tee):
                setattr(sys, name, cur._orig)


def _format(e, skip):
    tb = e.__traceback__
    for _ in range(skip):
        if tb is not None:
            tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb))


def run(code):
    buf = io.StringIO()
    err = None
    g = sys.modules["__main__"].__dict__
    _push(buf)
    try:
        try:
            tree = ast.parse(code, "<probing>", "exec")
        except SyntaxError as e:
            return "", "".join(traceback.format_exception_only(type(e), e))
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        try:
            exec(compile(tree, "<probing>", "exec"), g)
            if last is not None:
                v = eval(compile(last, "<probing>", "eval"), g)
                if v is not None:
                    buf.write(repr(v) + "\n")
        except BaseException as e:
            err = _format(e, 1)
    finally:
        _pop()
    return buf.getvalue(), err


def complete(text):
    import rlcompleter
    c = rlcompleter.Completer(sys.modules["__main__"].__dict__)
    out = []
    for i in range(1000):
        m = c.complete(text, i)
        if m is None:
            break
        out.append(m)
    return out
