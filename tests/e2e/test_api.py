"""The Python API: probing.connect() from a second process, and
@probing.table inside a probed one (PROBING=1 or injected)."""
import json
import os
import socket
import subprocess
import textwrap

import pytest

from conftest import PY, probing


def client(userbase, code, env=None, extra_path=None):
    """Runs code in a second Python where the package is installed; the
    code prints one JSON value, which is returned."""
    e = dict(userbase)
    if env:
        e.update(env)
    if extra_path:
        e["PYTHONPATH"] = extra_path
    r = subprocess.run([PY, "-c", textwrap.dedent(code)], env=e,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connect_query_and_eval_from_a_second_process(spawn, userbase):
    p = spawn("idle.py")
    p.wait_out("ready")
    out = client(userbase, """
        import json, probing
        from probing import connect
        with connect(pid=%d) as probe:
            rows = probe.query("SELECT 1 AS one, 'x' AS s, 2.5 AS r, NULL AS n")
            printed = probe.eval("print('hello'); answer + 1")
            try:
                probe.eval("def f():\\n    return missing_name\\nf()")
                remote = None
            except probing.RemoteError as e:
                remote = [str(e.args[0]), e.remote_traceback]
            try:
                probe.query("SELEC 1")
                agent = None
            except probing.AgentError as e:
                agent = str(e)
        print(json.dumps({"rows": rows, "printed": printed, "remote": remote,
                          "agent": agent, "repr": repr(probe)}))
    """ % p.pid)
    assert out["rows"] == [{"one": 1, "s": "x", "r": 2.5, "n": None}]
    assert out["printed"] == "hello\n42\n"
    msg, tb = out["remote"]
    assert msg == "NameError: name 'missing_name' is not defined"
    assert tb.startswith("Traceback (most recent call last):")
    assert 'File "<probing>", line 2, in f' in tb
    assert out["agent"] == 'near "SELEC": syntax error'
    assert "pid %d" % p.pid in out["repr"]


def test_backtrace_returns_frames_as_dicts(spawn, userbase):
    p = spawn("idle.py")
    p.wait_out("ready")
    frames = client(userbase, """
        import json, probing
        print(json.dumps(probing.connect(pid=%d).backtrace()))
    """ % p.pid)
    assert frames and all(isinstance(f, dict) for f in frames)
    assert {"func", "file", "lineno", "thread_id"} <= set(frames[0])
    assert any((f["file"] or "").endswith("idle.py") for f in frames)


def test_config_reads_sets_and_validates(spawn, userbase):
    p = spawn("idle.py")
    out = client(userbase, """
        import json, probing
        probe = probing.connect(pid=%d)
        all_ = probe.config()
        one = probe.config("probing.sample_rate")
        set_ = probe.config(sample_rate=0.25)
        set2 = probe.config("probing.buffer_size", 500)
        errors = []
        for args, kw in [((), {"sample_rate": 5}), (("nope",), {}),
                         ((), {"no_such_key": 1})]:
            try:
                probe.config(*args, **kw)
            except probing.ConfigError as e:
                errors.append([str(e), isinstance(e, ValueError)])
        print(json.dumps({"all": all_, "one": one, "set": set_, "set2": set2,
                          "after": probe.config("probing.sample_rate"),
                          "errors": errors}))
    """ % p.pid)
    assert out["all"]["probing.sample_rate"] == 1.0
    assert out["all"]["probing.torch.enabled"] in (True, False)
    assert out["one"] == 1.0
    assert out["set"] == {"probing.sample_rate": 0.25}
    assert out["set2"] == {"probing.buffer_size": 500}
    assert out["after"] == 0.25
    (bad_value, ve), (unknown, _), (unknown_kw, _) = out["errors"]
    assert "probing.sample_rate" in bad_value and ve
    assert "unknown config key 'nope'" in unknown
    assert "unknown config key 'no_such_key'" in unknown_kw
    # the same validation as the CLI
    r = probing("-t", p.pid, "config", "probing.sample_rate=5")
    assert r.returncode == 1 and r.stderr.strip().endswith(bad_value)


def test_connection_errors_name_the_endpoint(spawn, userbase):
    plain = spawn("idle.py", probing=None)
    port = free_port()
    out = client(userbase, """
        import json, probing
        out = []
        for kw in (dict(pid=%d), dict(address="127.0.0.1:%d")):
            try:
                probing.connect(**kw)
            except probing.ConnectionError as e:
                out.append([str(e), isinstance(e, ConnectionError)])
        print(json.dumps(out))
    """ % (plain.pid, port))
    (nopid, builtin1), (noport, builtin2) = out
    assert nopid.startswith("no probing agent in pid %d" % plain.pid)
    assert noport.startswith("cannot connect to 127.0.0.1:%d" % port)
    assert builtin1 and builtin2


def test_tcp_with_a_token(spawn, userbase):
    port = free_port()
    p = spawn("idle.py", env={"PROBING_PORT": str(port),
                              "PROBING_AUTH_TOKEN": "s3cret"})
    out = client(userbase, """
        import json, probing
        good = probing.connect(address="127.0.0.1:%d", token="s3cret")
        rows = good.query("SELECT 7 AS x")
        try:
            probing.connect(address="127.0.0.1:%d", token="wrong").query("SELECT 1")
            bad = None
        except probing.AgentError as e:
            bad = [str(e), e.status]
        print(json.dumps({"rows": rows, "bad": bad}))
    """ % (port, port), env={"PROBING_AUTH_TOKEN": ""})
    assert out["rows"] == [{"x": 7}]
    assert out["bad"] == ["wrong token", 401]


def test_query_df_needs_pandas_and_says_so(spawn, userbase, tmp_path):
    p = spawn("idle.py")
    code = """
        import json, probing
        probe = probing.connect(pid=%d)
        try:
            df = probe.query_df("SELECT 1 AS a, 'x' AS b UNION ALL SELECT 2, 'y'")
            print(json.dumps({"rows": df.rows, "columns": df.columns}))
        except ImportError as e:
            print(json.dumps({"error": str(e)}))
    """ % p.pid
    out = client(userbase, code)
    assert "query_df needs pandas" in out["error"]
    # with a pandas importable, rows and columns go to DataFrame
    (tmp_path / "pandas.py").write_text(
        "class DataFrame:\n"
        "    def __init__(self, rows, columns):\n"
        "        self.rows, self.columns = rows, columns\n")
    out = client(userbase, code, extra_path=str(tmp_path))
    assert out == {"rows": [[1, "x"], [2, "y"]], "columns": ["a", "b"]}


TABLES = '''
import os, time
from probing import table

calls = 0

@table("my_data")
def get_my_data():
    global calls
    calls += 1
    return [{"key": "value", "n": 1},
            {"n": 2.5, "flag": True, "blob": b"\\x00\\x01"},
            {"key": None, "obj": [1, 2]}]

@table("broken")
def broken():
    raise ValueError("cannot read the rows")

@table("pairs", columns=["name", "size"])
def pairs():
    return [("a", 1), ("b", 2)]

print("ready", os.getpid(), flush=True)
while True:
    time.sleep(0.05)
'''


@pytest.fixture
def tables(spawn, tmp_path):
    path = tmp_path / "tables.py"
    path.write_text(TABLES)
    p = spawn(str(path))
    p.wait_out("ready")
    return p


def query_json(pid, sql):
    r = probing("-t", pid, "query", "-f", "json", sql)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_table_with_mixed_rows(tables):
    rows = query_json(tables.pid, "SELECT * FROM python.my_data")
    assert rows == [
        {"key": "value", "n": 1.0, "flag": None, "blob": None, "obj": None},
        {"key": None, "n": 2.5, "flag": 1, "blob": "x'0001'", "obj": None},
        {"key": None, "n": None, "flag": None, "blob": None, "obj": "[1, 2]"},
    ]
    # numbers stay numbers: SQL arithmetic and types work on them
    assert query_json(tables.pid, "SELECT sum(n) AS s, typeof(n) AS t "
                      "FROM python.my_data WHERE n IS NOT NULL") == [{"s": 3.5, "t": "real"}]
    r = probing("-t", tables.pid, "tables", "-f", "json")
    cols = {(c["table"], c["column"]): c["type"] for c in json.loads(r.stdout)}
    assert cols[("python.my_data", "key")] == "TEXT"
    assert cols[("python.my_data", "n")] == "REAL"
    assert cols[("python.my_data", "flag")] == "INTEGER"
    assert cols[("python.pairs", "size")] == "INTEGER"
    # each query calls the function; the function is still callable
    before = int(probing("-t", tables.pid, "eval", "calls").stdout)
    query_json(tables.pid, "SELECT count(*) FROM python.my_data")
    assert int(probing("-t", tables.pid, "eval", "calls").stdout) == before + 1
    assert probing("-t", tables.pid, "eval", "len(get_my_data())").stdout == "3\n"


def test_table_with_tuples_and_columns(tables):
    assert query_json(tables.pid, "SELECT * FROM python.pairs ORDER BY size DESC") == [
        {"name": "b", "size": 2}, {"name": "a", "size": 1}]


def test_table_whose_function_raises_fails_only_that_query(tables):
    r = probing("-t", tables.pid, "query", "SELECT * FROM python.broken")
    assert r.returncode == 1
    assert r.stderr == "probing: python.broken: ValueError: cannot read the rows\n"
    # the agent keeps serving, other tables too
    assert query_json(tables.pid, "SELECT count(*) AS n FROM python.my_data") == [{"n": 3}]
    assert tables.alive()


def test_table_reregistered_replaces_it(tables):
    r = probing("-t", tables.pid, "eval",
                "@table('my_data')\ndef other():\n    return [{'z': 9}]")
    assert r.returncode == 0, r.stderr
    assert query_json(tables.pid, "SELECT * FROM python.my_data") == [{"z": 9}]
    r = probing("-t", tables.pid, "eval", "table('9bad')(other)")
    assert r.returncode == 1 and "bad table name '9bad'" in r.stderr
    for name in ("backtrace", "BackTrace", "torch_trace", "TORCH_TRACE"):
        r = probing("-t", tables.pid, "eval", "table(%r)(other)" % name)
        assert r.returncode == 1, name
        assert "ValueError: python.%s is a built-in table of the agent" % name in r.stderr
    r = probing("-t", tables.pid, "query", "SELECT count(*) FROM python.backtrace")
    assert r.returncode == 0, r.stderr


def test_untable_removes_a_user_table_only(tables):
    r = probing("-t", tables.pid, "eval", "import probing; probing.untable('pairs')")
    assert r.returncode == 0, r.stderr
    r = probing("-t", tables.pid, "query", "SELECT * FROM python.pairs")
    assert r.returncode == 1 and "no such table: python.pairs" in r.stderr
    assert "python.pairs" not in probing("-t", tables.pid, "tables").stdout
    for name in ("pairs", "backtrace", "Torch_Trace", "nosuch"):
        r = probing("-t", tables.pid, "eval", "probing.untable(%r)" % name)
        assert r.returncode == 1 and "ValueError" in r.stderr, name
    # registered again, it is back
    r = probing("-t", tables.pid, "eval", "table('pairs')(lambda: [{'a': 1}])")
    assert r.returncode == 0, r.stderr
    assert query_json(tables.pid, "SELECT * FROM python.pairs") == [{"a": 1}]


def test_table_read_through_the_api(tables, userbase):
    rows = client(userbase, """
        import json, probing
        print(json.dumps(probing.connect(pid=%d).query("SELECT * FROM python.pairs")))
    """ % tables.pid)
    assert rows == [{"name": "a", "size": 1}, {"name": "b", "size": 2}]


def test_table_in_an_injected_process_without_the_package(spawn, tmp_path):
    # -s: no user site, so the package is not importable in the target
    p = spawn(None, probing=None, argv=[PY, "-s", os.path.join(
        os.path.dirname(__file__), "..", "workloads", "idle.py")])
    p.wait_out("ready")
    r = probing("-t", p.pid, "inject")
    assert r.returncode == 0, r.stderr
    r = probing("-t", p.pid, "eval", "import probing\n"
                "print(getattr(probing, '__file__', 'provided by the agent'))\n"
                "from probing import table\n"
                "@table('injected')\n"
                "def injected():\n"
                "    return [{'x': 1, 'y': 'one'}, {'x': 2}]\n"
                "injected()[0]['y']")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "provided by the agent\n'one'\n"
    assert query_json(p.pid, "SELECT * FROM python.injected") == [
        {"x": 1, "y": "one"}, {"x": 2, "y": None}]
