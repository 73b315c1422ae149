"""probing: look inside a running Python / PyTorch process.

In the probed process the agent serves @probing-<pid>; from any Python
where this package is installed, connect() talks to it:

    import probing
    with probing.connect(pid=12345) as probe:
        probe.query("SELECT * FROM python.backtrace")   # list of dicts
        probe.eval("model.training")                    # what it printed
        probe.config("probing.sample_rate", 0.5)

Inside a probed process, @probing.table("name") makes a Python function a
table, python.<name>, that each query calls.

Only the standard library is used: HTTP/1.1 with JSON bodies over the
abstract unix socket @probing-<pid>, or TCP with a bearer token.
"""
import builtins as _builtins
import os as _os
import sys as _sys

# http.client, json and socket are imported when a Probe is made, not here:
# this module is also imported inside every probed job, where they would
# cost megabytes of memory for nothing.

__version__ = "0.1.0"
__all__ = ["connect", "Probe", "table", "untable", "Error",
           "ConnectionError", "RemoteError", "AgentError", "ConfigError",
           "TimeoutError"]

_TIMEOUT_HDR = "X-Probing-Timeout-Ms"


class Error(Exception):
    """Base of the errors this package raises."""


class ConnectionError(Error, _builtins.ConnectionError):
    """The agent could not be reached; the message names the endpoint."""


class AgentError(Error):
    """The agent refused a request (an SQL error, the GIL not available in
    time, ...); the message is the agent's."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class TimeoutError(AgentError, _builtins.TimeoutError):
    """The agent answered, but the work ran out of time: an eval stopped
    at its timeout, a query past its deadline, the GIL or the store busy
    for longer than the timeout. The connection is fine."""


class ConfigError(AgentError, ValueError):
    """A config key that does not exist or a value it does not accept."""


class RemoteError(Error):
    """Code run by Probe.eval raised in the target. remote_traceback holds
    the target's traceback text; output what it printed before."""

    def __init__(self, remote_traceback, output=""):
        self.remote_traceback = remote_traceback
        self.output = output
        lines = remote_traceback.rstrip("\n").splitlines()
        super().__init__(lines[-1] if lines else "remote error")

    def __str__(self):
        return "%s\n\nremote traceback:\n%s" % (self.args[0],
                                                 self.remote_traceback.rstrip("\n"))


def _unix_connection(pid, timeout):
    """An http.client connection to the abstract socket @probing-<pid>."""
    import http.client
    import socket

    class UnixHTTPConnection(http.client.HTTPConnection):
        def connect(self):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect("\0probing-%d" % pid)
                _check_peer(s, pid)
            except BaseException:
                s.close()
                raise
            self.sock = s

    return UnixHTTPConnection("probing", timeout=timeout)


def _check_peer(s, pid):
    """Anyone may bind @probing-<pid> first: trust the listener only when
    it is pid (or a thread of it) running as pid's user or root."""
    import socket
    import struct

    qpid, quid, _ = struct.unpack("3i", s.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    try:
        with open("/proc/%d/status" % pid) as f:
            uid = [int(l.split()[2]) for l in f if l.startswith("Uid:")][0]
    except (OSError, IndexError, ValueError):
        uid = None
    if (quid in (0, uid) and qpid > 0 and
            (qpid == pid or _os.path.exists("/proc/%d/task/%d" % (pid, qpid)))):
        return
    raise ConnectionError("@probing-%d is held by pid %d (uid %d), not by "
                          "the target: refusing" % (pid, qpid, quid))


def _no_agent(pid, err):
    if not _os.path.exists("/proc/%d" % pid):
        return "no such process: %d" % pid
    if isinstance(err, (_builtins.ConnectionRefusedError, FileNotFoundError)):
        return ("no probing agent in pid %d (start it with PROBING=1 or "
                "run: probing -t %d inject)" % (pid, pid))
    return "cannot connect to pid %d: %s" % (pid, err)


class Probe:
    """A connection to one agent. Each call is one HTTP request; nothing
    is kept open between calls, so a Probe is cheap and thread-safe."""

    def __init__(self, pid=None, address=None, token=None, timeout=5.0):
        if (pid is None) == (address is None):
            raise TypeError("connect() needs pid= or address=, not both")
        self.pid = None
        self.host = self.port = None
        if pid is not None:
            self.pid = int(pid)
            self.endpoint = "pid %d" % self.pid
        else:
            host, sep, port = str(address).rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError("bad address %r: expected host:port" % (address,))
            self.host, self.port = host.strip("[]"), int(port)
            self.endpoint = "%s:%d" % (host, self.port)
        if token is None:
            token = _os.environ.get("PROBING_AUTH_TOKEN") or None
        self.token = token
        self.timeout = float(timeout)
        self._health = self._request("GET", "/health")

    def __repr__(self):
        return "<probing.Probe %s (python %s)>" % (self.endpoint,
                                                  self._health.get("python", "?"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        """Nothing stays open between calls; kept for symmetry."""

    # transport -----------------------------------------------------

    def _request(self, method, path, body=None, timeout=None):
        import http.client as _http
        import json as _json
        import socket as _socket

        if timeout is None:
            timeout = self.timeout
        # The agent answers by its own deadline; this one is for an agent
        # that cannot (a stopped or wedged process).
        wait = timeout + 10
        if self.pid is not None:
            conn = _unix_connection(self.pid, wait)
        else:
            conn = _http.HTTPConnection(self.host, self.port, timeout=wait)
        headers = {_TIMEOUT_HDR: str(max(1, int(timeout * 1000))),
                   "Connection": "close"}
        data = None
        if body is not None:
            data = _json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token is not None and self.pid is None:
            headers["Authorization"] = "Bearer " + self.token
        connected = False
        try:
            try:
                conn.connect()
                connected = True
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except _socket.timeout:
                if not connected:
                    raise ConnectionError("cannot connect to %s: timed out"
                                          % self.endpoint) from None
                raise TimeoutError("%s did not answer within %.1f s (%s)" %
                                   (self.endpoint, wait,
                                    _stopped(self.pid) or "its agent is "
                                    "wedged or too busy")) from None
            except ConnectionError:
                raise
            except OSError as e:
                if self.pid is not None:
                    msg = _no_agent(self.pid, e)
                else:
                    msg = "cannot connect to %s: %s" % (self.endpoint,
                                                        e.strerror or e)
                raise ConnectionError(msg) from None
            except _http.HTTPException as e:
                raise ConnectionError("%s answered badly: %s" %
                                      (self.endpoint, e)) from None
        finally:
            conn.close()
        try:
            reply = _json.loads(raw.decode("utf-8", "replace"))
        except ValueError:
            raise AgentError("%s sent a malformed reply (http %d)" %
                             (self.endpoint, resp.status), resp.status) from None
        if resp.status != 200:
            msg = reply.get("error") if isinstance(reply, dict) else None
            cls = TimeoutError if resp.status == 504 else AgentError
            raise cls(msg or "the agent refused the request (http %d)"
                      % resp.status, resp.status)
        return reply

    # queries -------------------------------------------------------

    def _query(self, sql):
        r = self._request("POST", "/query", {"sql": sql})
        return r["columns"], r["rows"]

    def query(self, sql):
        """Runs SQL in the agent; returns the rows as a list of dicts."""
        cols, rows = self._query(sql)
        return [dict(zip(cols, row)) for row in rows]

    def query_df(self, sql):
        """Runs SQL in the agent; returns a pandas DataFrame."""
        try:
            import pandas
        except ImportError as e:
            raise ImportError(
                "probing: query_df needs pandas, which is not importable "
                "in this Python (%s); install it, or use query(), which "
                "returns a list of dicts" % e) from None
        cols, rows = self._query(sql)
        return pandas.DataFrame(rows, columns=cols)

    def backtrace(self):
        """Every thread's frames in the target: python.backtrace's rows."""
        return self.query("SELECT * FROM python.backtrace")

    # eval ----------------------------------------------------------

    def eval(self, code, timeout=None):
        """Runs code in the target's __main__; returns what it printed,
        with the repr of a final bare expression. A remote exception
        raises RemoteError carrying the remote traceback. After timeout
        seconds (default: the Probe's) KeyboardInterrupt is raised in the
        code and this raises TimeoutError."""
        r = self._request("POST", "/eval", {"code": code}, timeout)
        out = r.get("output") or ""
        if r.get("interrupted_after") is not None:
            e = TimeoutError("eval interrupted after %.1f s" %
                             r["interrupted_after"], 200)
            e.output = out
            raise e
        if r.get("error"):
            raise RemoteError(r["error"], out)
        return out

    # config --------------------------------------------------------

    def _config_keys(self):
        keys = {k["key"]: k for k in self._request("GET", "/config")["keys"]}
        for k in keys.values():
            k["value"] = _config_value(k["value"])
        return keys

    def config(self, key=None, value=None, **kwargs):
        """config() returns every key and its value; config("key") one
        value; config("key", value) or config(sample_rate=0.5) sets keys
        (a keyword is a key with "probing." and dots dropped: server_port
        is probing.server.port). Setting returns the new values."""
        keys = self._config_keys()
        if key is None and value is None and not kwargs:
            return {k: v["value"] for k, v in keys.items()}
        wanted = {}
        if key is not None:
            if key not in keys:
                raise ConfigError("unknown config key '%s' (known: %s)" %
                                  (key, ", ".join(sorted(keys))))
            if value is None and not kwargs:
                return keys[key]["value"]
            wanted[key] = value
        elif value is not None:
            raise TypeError("config(value=...) needs a key")
        short = {k[len("probing."):].replace(".", "_") if k.startswith("probing.")
                 else k.replace(".", "_"): k for k in keys}
        for name, v in kwargs.items():
            full = name if name in keys else short.get(name)
            if full is None:
                raise ConfigError("unknown config key '%s' (known: %s)" %
                                  (name, ", ".join(sorted(keys))))
            wanted[full] = v
        for k, v in wanted.items():
            if v is None:
                raise ConfigError("config key '%s' needs a value" % k)
            try:
                self._request("POST", "/config", {"key": k, "value": v})
            except AgentError as e:
                raise ConfigError(str(e), e.status) from None
        new = self._config_keys()
        return {k: new[k]["value"] for k in wanted}


def _stopped(pid):
    """'pid N is stopped ...' when pid is stopped (SIGSTOP), else None."""
    if pid is None:
        return None
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    if state in ("T", "t"):
        return ("pid %d is stopped (state %s): resume it with kill -CONT %d"
                % (pid, state, pid))
    return None


def _config_value(text):
    """The agent sends values as text: booleans and numbers come back as
    such."""
    if text in ("true", "false"):
        return text == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except (TypeError, ValueError):
            pass
    return text


def connect(pid=None, address=None, token=None, timeout=5.0):
    """Connects to the agent of pid (its unix socket) or at address
    ("host:port", TCP; token defaults to $PROBING_AUTH_TOKEN). timeout is
    how long the agent may wait for the target's GIL, in seconds. Raises
    probing.ConnectionError when nobody answers. Usable with `with`."""
    return Probe(pid=pid, address=address, token=token, timeout=timeout)


_pending = {}  # registrations made where no agent runs


def table(name=None, *, columns=None):
    """Decorator: @table("my_data") makes python.my_data a table whose
    every query calls the function. Rows are dicts (columns are the union
    of their keys) or, with columns=[...], tuples. The function stays
    callable as before; registering a name again replaces it. Outside a
    probed process it registers nothing."""
    def register(fn):
        tname = name if isinstance(name, str) else fn.__name__
        core = _sys.modules.get("probing._core")
        if core is None:
            _pending[tname] = (fn, columns)
        else:
            core.table_register(tname, fn, columns)
        return fn
    if callable(name):
        return register(name)
    if name is not None and not isinstance(name, str):
        raise TypeError("table() takes a table name (str)")
    return register


def untable(name):
    """Removes the user table python.<name> (made with @table); a
    built-in table or an unknown name raises ValueError."""
    if not isinstance(name, str):
        raise TypeError("untable() takes a table name (str)")
    core = _sys.modules.get("probing._core")
    if core is None:
        if _pending.pop(name, None) is None:
            raise ValueError("no table python.%s" % name)
        return
    core.table_unregister(name)
