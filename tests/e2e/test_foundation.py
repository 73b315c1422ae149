"""The foundation: agent transport, query, eval, config, list, PROBING=1."""
import json
import os
import socket
import subprocess
import time

import pytest

from conftest import BUILD, PY, PYVER, agent_listening, probing, wait_for


def curl(pid, path, data=None, headers=(), port=None):
    """Talks raw HTTP to an agent; returns (status, body)."""
    args = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"]
    if port is None:
        args += ["--abstract-unix-socket", "probing-%d" % pid]
        url = "http://probing" + path
    else:
        url = "http://127.0.0.1:%d%s" % (port, path)
    for h in headers:
        args += ["-H", h]
    if data is not None:
        args += ["--data-binary", "@-"]
    r = subprocess.run(args + [url], input=data, capture_output=True,
                       text=isinstance(data, str) or data is None)
    out = r.stdout if isinstance(r.stdout, str) else r.stdout.decode()
    body, _, code = out.rpartition("\n")
    return int(code or 0), body


# query ---------------------------------------------------------------

def test_query_table_json_csv(spawn):
    p = spawn("idle.py")
    r = probing("-t", p.pid, "query", "SELECT 1 AS one, 'a b' AS s, 2.5 AS r, NULL AS n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["one", "s", "r", "n"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["1", "a", "b", "2.5"]

    r = probing("-t", p.pid, "query", "-f", "json", "SELECT 1 AS one, 'x' AS s, 0.1 AS r, NULL AS n")
    assert json.loads(r.stdout) == [{"one": 1, "s": "x", "r": 0.1, "n": None}]

    r = probing("-t", p.pid, "query", "-f", "csv", "SELECT 'a,b' AS s, 'say \"hi\"' AS q")
    assert r.stdout == 's,q\n"a,b","say ""hi"""\n'


def test_query_several_statements_and_user_tables(spawn):
    p = spawn("idle.py")
    r = probing("-t", p.pid, "query", "-f", "json",
                "CREATE TABLE notes(k TEXT, v INT); INSERT INTO notes VALUES ('a', 1), ('b', 2); "
                "SELECT k, v FROM notes ORDER BY v DESC")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"k": "b", "v": 2}, {"k": "a", "v": 1}]


def test_query_sql_error_is_sqlite_message_and_exit_1(spawn):
    p = spawn("idle.py")
    r = probing("-t", p.pid, "query", "SELEC 1")
    assert r.returncode == 1
    assert r.stderr == 'probing: near "SELEC": syntax error\n'
    r = probing("-t", p.pid, "query", "SELECT nope FROM python.torch_trace")
    assert r.returncode == 1 and "no such column: nope" in r.stderr
    # the agent keeps serving
    assert probing("-t", p.pid, "query", "SELECT 2").returncode == 0


def test_query_several_targets_has_a_target_column(spawn):
    a, b = spawn("idle.py"), spawn("idle.py")
    r = probing("-t", "%d,%d" % (a.pid, b.pid), "query", "-f", "json", "SELECT 7 AS x")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"target": str(a.pid), "x": 7},
                                    {"target": str(b.pid), "x": 7}]


def test_tables_lists_documented_tables(spawn):
    p = spawn("idle.py")
    r = probing("-t", p.pid, "tables", "-f", "json")
    rows = json.loads(r.stdout)
    cols = [x["column"] for x in rows if x["table"] == "python.torch_trace"]
    assert cols[:6] == ["step", "seq", "module", "stage", "allocated", "duration"]


# eval ----------------------------------------------------------------

def test_eval_sees_globals_prints_repr_and_output(spawn):
    p = spawn("idle.py")
    p.wait_out("ready")  # the agent answers before __main__ has run
    r = probing("-t", p.pid, "eval", "answer + 1")
    assert (r.returncode, r.stdout) == (0, "42\n")
    r = probing("-t", p.pid, "eval", "print('hello from eval'); newvar = [1, 2]")
    assert r.stdout == "hello from eval\n"
    assert probing("-t", p.pid, "eval", "newvar").stdout == "[1, 2]\n"
    assert probing("-t", p.pid, "eval", "None").stdout == ""
    # the target's own stdout never saw the eval's output and keeps going
    n = p.out().count("tick")
    wait_for(lambda: p.out().count("tick") > n, 10, "the workload's own output")
    # (by line: the pid in "ready PID" may hold the digits 42)
    assert "hello from eval" not in p.out() and "42" not in p.out().splitlines()


def test_eval_exception_traceback_on_stderr_exit_1(spawn):
    p = spawn("idle.py")
    r = probing("-t", p.pid, "eval", "def f():\n    return 1/0\nf()")
    assert r.returncode == 1
    assert "ZeroDivisionError: division by zero" in r.stderr
    assert 'File "<probing>", line 2, in f' in r.stderr
    r = probing("-t", p.pid, "eval", "x = (")
    assert r.returncode == 1 and "SyntaxError" in r.stderr


def test_eval_system_exit_does_not_exit_target(spawn):
    p = spawn("idle.py")
    r = probing("-t", p.pid, "eval", "import sys; sys.exit(3)")
    assert r.returncode == 1 and "SystemExit: 3" in r.stderr
    r = probing("-t", p.pid, "eval", "raise KeyboardInterrupt")
    assert r.returncode == 1 and "KeyboardInterrupt" in r.stderr
    assert p.alive()
    assert probing("-t", p.pid, "eval", "answer").stdout == "41\n"


# config --------------------------------------------------------------

def test_config_list_get_set_and_invalid(spawn):
    p = spawn("idle.py")
    r = probing("-t", p.pid, "config", "-f", "json")
    keys = {x["key"]: x for x in json.loads(r.stdout)}
    assert keys["probing.sample_rate"]["value"] == "1.0"
    assert keys["probing.buffer_size"]["default"] == "10000"
    assert keys["probing.server.port"]["value"] == "0"
    assert keys["probing.torch.enabled"]["value"] == "true"
    assert all(x["description"] for x in keys.values())
    assert probing("-t", p.pid, "config", "probing.buffer_size").stdout == "10000\n"
    assert probing("-t", p.pid, "config", "probing.sample_rate=0.25").returncode == 0
    assert probing("-t", p.pid, "config", "probing.sample_rate").stdout == "0.25\n"
    for bad, msg in [("probing.sample_rate=1.5", "must be between 0 and 1"),
                     ("probing.buffer_size=0", "must be between 1"),
                     ("probing.buffer_size=ten", "expected an integer"),
                     ("probing.server.port=70000", "between 0 and 65535"),
                     ("probing.torch.enabled=maybe", "expected true or false"),
                     ("probing.nope=1", "unknown config key 'probing.nope'")]:
        r = probing("-t", p.pid, "config", bad)
        assert r.returncode == 1 and msg in r.stderr, (bad, r.stderr)
    assert probing("-t", p.pid, "config", "probing.sample_rate").stdout == "0.25\n"


def test_agent_rejects_invalid_config_over_the_wire(spawn):
    p = spawn("idle.py")
    code, body = curl(p.pid, "/config", '{"key": "probing.buffer_size", "value": -3}')
    assert code == 400 and "must be between 1" in json.loads(body)["error"]
    code, body = curl(p.pid, "/config", '{"key": "probing.buffer_size"}')
    assert code == 400 and "needs a 'value'" in json.loads(body)["error"]
    assert probing("-t", p.pid, "config", "probing.buffer_size").stdout == "10000\n"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_tcp_port_stays_closed_without_a_token(spawn):
    port = free_port()
    p = spawn("idle.py", env={"PROBING_PORT": str(port)})
    # the warning may follow the socket by a moment
    wait_for(lambda: "not serving tcp port %d" % port in p.err(), 10, "the warning")
    assert "PROBING_AUTH_TOKEN" in p.err()
    assert probing("-t", p.pid, "config", "probing.server.port").stdout == "0\n"
    r = probing("-t", p.pid, "config", "probing.server.port=%d" % port)
    assert r.returncode == 1 and r.stdout == ""
    assert "not serving tcp port %d" % port in r.stderr and "PROBING_AUTH_TOKEN" in r.stderr
    conns = subprocess.run(["ss", "-ltnH", "sport = :%d" % port], capture_output=True, text=True).stdout
    assert conns.strip() == ""
    r = probing("-t", "127.0.0.1:%d" % port, "query", "SELECT 5")
    assert r.returncode == 1 and "cannot connect" in r.stderr


def test_tcp_port_live_with_a_token(spawn):
    env = {"PROBING_AUTH_TOKEN": "t0k"}
    p = spawn("idle.py", env=env)
    port = free_port()
    assert probing("-t", p.pid, "config", "probing.server.port=%d" % port).returncode == 0
    r = probing("-t", "127.0.0.1:%d" % port, "query", "SELECT 5", env=env)
    assert r.returncode == 0 and "5" in r.stdout
    # moving it: the old port stops answering
    port2 = free_port()
    assert probing("-t", p.pid, "config", "probing.server.port=%d" % port2).returncode == 0
    assert probing("-t", "127.0.0.1:%d" % port2, "query", "SELECT 1", env=env).returncode == 0
    r = probing("-t", "127.0.0.1:%d" % port, "query", "SELECT 1", env=env)
    assert r.returncode == 1 and "cannot connect" in r.stderr
    assert probing("-t", p.pid, "config", "probing.server.port=0").returncode == 0
    assert probing("-t", "127.0.0.1:%d" % port2, "query", "SELECT 1", env=env).returncode == 1


def test_tcp_port_in_use_changes_nothing(spawn):
    p = spawn("idle.py", env={"PROBING_AUTH_TOKEN": "t0k"})
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    s.listen(1)
    port = s.getsockname()[1]
    r = probing("-t", p.pid, "config", "probing.server.port=%d" % port)
    assert r.returncode == 1 and "Address already in use" in r.stderr
    assert probing("-t", p.pid, "config", "probing.server.port").stdout == "0\n"
    s.close()


def test_tcp_token_required_except_health(spawn):
    port = free_port()
    p = spawn("idle.py", env={"PROBING_PORT": str(port), "PROBING_AUTH_TOKEN": "s3cret"})
    wait_for(lambda: curl(p.pid, "/health", port=port)[0] == 200, 10, "tcp health")
    # without the token TCP says only that it is alive
    assert json.loads(curl(p.pid, "/health", port=port)[1]) == {"alive": True}
    code, body = curl(p.pid, "/health", port=port, headers=["Authorization: bEaReR s3cret"])
    assert code == 200 and json.loads(body)["pid"] == p.pid
    code, body = curl(p.pid, "/query", '{"sql": "SELECT 1"}', port=port)
    assert code == 401 and "missing token" in body
    code, body = curl(p.pid, "/query", '{"sql": "SELECT 1"}', port=port,
                      headers=["Authorization: Bearer wrong"])
    assert code == 401 and "wrong token" in body
    r = probing("-t", "127.0.0.1:%d" % port, "query", "SELECT 1", env={"PROBING_AUTH_TOKEN": "nope"})
    assert r.returncode == 1 and "wrong token" in r.stderr
    r = probing("-t", "127.0.0.1:%d" % port, "query", "SELECT 9", env={"PROBING_AUTH_TOKEN": "s3cret"})
    assert r.returncode == 0 and "9" in r.stdout
    conns = subprocess.run(["ss", "-ltnH", "sport = :%d" % port], capture_output=True, text=True).stdout
    assert "0.0.0.0:%d" % port in conns


# bad input over the wire --------------------------------------------

def test_bad_requests_get_clear_errors_and_agent_keeps_serving(spawn):
    p = spawn("idle.py")
    code, body = curl(p.pid, "/query", "{not json")
    assert code == 400 and "malformed JSON" in json.loads(body)["error"]
    code, body = curl(p.pid, "/query", '{"sq": 1}')
    assert code == 400 and "string 'sql'" in json.loads(body)["error"]
    code, body = curl(p.pid, "/nope")
    assert code == 404 and "no such route: /nope" in json.loads(body)["error"]
    code, body = curl(p.pid, "/query")
    assert code == 405
    code, _ = curl(p.pid, "/query", b"x" * (1024 * 1024 + 10))
    assert code == 413
    code, body = curl(p.pid, "/health")
    h = json.loads(body)
    assert code == 200 and h["pid"] == p.pid and h["python"].startswith("3.")
    assert probing("-t", p.pid, "query", "SELECT 1").returncode == 0


def test_other_users_are_refused(spawn):
    p = spawn("idle.py")
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        os.path.join(os.path.dirname(BUILD), "..", "probing"),
                        "-t", str(p.pid), "query", "SELECT 1"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "uid 65534 may not probe pid %d" % p.pid in r.stderr


# CLI conventions ------------------------------------------------------

def test_cli_usage_errors_exit_2_and_help():
    assert probing("--help").returncode == 0
    assert "query" in probing("help").stdout
    r = probing("help", "query")
    assert r.returncode == 0 and "-f FORMAT" in r.stdout
    assert probing("query", "--help").returncode == 0
    for args, msg in [(["frobnicate"], "unknown command 'frobnicate'"),
                      (["query", "SELECT 1"], "no target"),
                      (["-t", "abc", "query", "SELECT 1"], "invalid target 'abc'"),
                      (["-t", "1", "query"], "no SQL given"),
                      (["-t", "1", "query", "-f", "xml", "SELECT 1"], "unknown format 'xml'"),
                      (["--timeout", "-1", "-t", "1", "query", "x"], "invalid --timeout"),
                      ([], "no command given")]:
        r = probing(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert msg in r.stderr and "usage:" in r.stderr, (args, r.stderr)
    man = probing("help", "--man").stdout
    assert man.startswith(".TH PROBING 1") and "inject" in man


def test_no_agent_and_dead_pid_messages(spawn):
    p = spawn("idle.py", probing=None, wait=False)
    p.wait_out("ready")
    r = probing("-t", p.pid, "query", "SELECT 1")
    assert r.returncode == 1
    assert r.stderr == ("probing: no probing agent in pid %d (start it with PROBING=1 "
                        "or run: probing -t %d inject)\n" % (p.pid, p.pid))
    p.kill()
    r = probing("-t", p.pid, "query", "SELECT 1")
    assert r.returncode == 1 and "no such process: %d" % p.pid in r.stderr


def test_list_finds_probed_processes(spawn):
    a = spawn("idle.py")
    plain = spawn("idle.py", probing=None, wait=False)
    r = probing("list", "-f", "json")
    rows = {x["pid"]: x for x in json.loads(r.stdout)}
    assert a.pid in rows and plain.pid not in rows
    assert rows[a.pid]["unix"] == "@probing-%d" % a.pid
    assert rows[a.pid]["user"] == "root"
    assert "idle.py" in rows[a.pid]["command"]
    a.kill()
    rows = {x["pid"] for x in json.loads(probing("list", "-f", "json").stdout)}
    assert a.pid not in rows


# PROBING=... -----------------------------------------------------------

CHILD = """
import os, subprocess, sys, time
print("ready", os.getpid(), flush=True)
c = subprocess.Popen([sys.executable, "-c", "import time, os; print('child', os.getpid(), flush=True); time.sleep(60)"])
print("childpid", c.pid, flush=True)
time.sleep(60)
"""


def test_probing_1_removes_env_so_children_are_not_probed(spawn, tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(CHILD)
    p = spawn(str(script), probing="1")
    p.wait_out("childpid")
    child = int(p.out().split("childpid")[1].split()[0])
    assert probing("-t", p.pid, "eval", "'PROBING' in os.environ").stdout == "False\n"
    wait_for(lambda: "child" in p.out().replace("childpid", ""), 10, "child start")
    time.sleep(0.3)
    assert not agent_listening(child)
    assert "agent listening on @probing-%d" % p.pid in p.err()
    subprocess.run(["kill", "-9", str(child)])


def test_probing_2_probes_python_children(spawn, tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(CHILD)
    p = spawn(str(script), probing="nested")
    p.wait_out("childpid")
    child = int(p.out().split("childpid")[1].split()[0])
    wait_for(lambda: agent_listening(child), 10, "the child's agent")
    subprocess.run(["kill", "-9", str(child)])


@pytest.mark.parametrize("value,expect", [
    ("regex:^idl", True), ("regex:^train", False), ("idle.py", True), ("other.py", False),
    ("0", False), ("", False)])
def test_probing_filters(spawn, value, expect):
    p = spawn("idle.py", probing=value, wait=False)
    p.wait_out("ready")
    if expect:
        wait_for(lambda: agent_listening(p.pid), 10, "agent")
    else:
        time.sleep(0.2)
        assert not agent_listening(p.pid)
        assert "probing" not in p.err()


def test_malformed_variables_warn_once_and_are_ignored(spawn):
    p = spawn("idle.py", env={"PROBING_PORT": "80x", "PROBING_SAMPLE_RATE": "2"})
    err = p.err()
    assert err.count("ignoring PROBING_PORT='80x'") == 1
    assert err.count("ignoring PROBING_SAMPLE_RATE='2'") == 1
    assert probing("-t", p.pid, "config", "probing.sample_rate").stdout == "1.0\n"
    p2 = spawn("idle.py", probing="bogus", wait=False)
    p2.wait_out("ready")
    assert "ignoring PROBING='bogus'" in p2.err()
    assert not agent_listening(p2.pid)


def test_env_values_are_read_at_start(spawn):
    p = spawn("idle.py", env={"PROBING_SAMPLE_RATE": "0.5", "PROBING_TORCH_PROFILING": "off"})
    assert probing("-t", p.pid, "config", "probing.sample_rate").stdout == "0.5\n"
    assert probing("-t", p.pid, "config", "probing.torch.enabled").stdout == "false\n"


# the GIL, threads, fork, idle cost -------------------------------------

HOLD = """
import ctypes, os, sys
lib = ctypes.PyDLL(sys.argv[1])
lib.hold_gil_for.argtypes = [ctypes.c_double]
print("ready", os.getpid(), flush=True)
lib.hold_gil_for(30.0)
"""


def test_gil_timeout_names_holder_and_drops_request(spawn, tmp_path):
    script = tmp_path / "hold.py"
    script.write_text(HOLD)
    p = spawn(None, argv=[PY, str(script), os.path.join(BUILD, "hold-gil.so")])
    p.wait_out("ready")
    t0 = time.monotonic()
    r = probing("--timeout", "0.5", "-t", p.pid, "eval", "open('/tmp/probing-dropped-%d', 'w')" % p.pid)
    assert time.monotonic() - t0 < 5
    assert r.returncode == 1
    assert "could not take the GIL within 500 ms" in r.stderr
    assert "the main thread %d" % p.pid in r.stderr
    # requests that need no Python still work
    assert probing("-t", p.pid, "query", "SELECT 3").stdout.split()[-1] == "3"
    assert probing("-t", p.pid, "config", "probing.buffer_size").returncode == 0
    p.kill()
    assert not os.path.exists("/tmp/probing-dropped-%d" % p.pid)


FORKER = """
import os, time
print("ready", os.getpid(), flush=True)
pid = os.fork()
if pid == 0:
    time.sleep(30)
    os._exit(0)
print("forked", pid, flush=True)
time.sleep(30)
"""


def test_forked_child_does_not_serve_parent_socket(spawn, tmp_path):
    script = tmp_path / "fork.py"
    script.write_text(FORKER)
    p = spawn(str(script))
    p.wait_out("forked")
    for _ in range(20):
        assert probing("-t", p.pid, "eval", "os.getpid()").stdout == "%d\n" % p.pid


def agent_cpu_ticks(pid):
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            comm = open("/proc/%d/task/%s/comm" % (pid, tid)).read().strip()
            if comm.startswith("probing-"):
                f = open("/proc/%d/task/%s/stat" % (pid, tid)).read().rsplit(")", 1)[1].split()
                total += int(f[11]) + int(f[12])
        except OSError:
            pass
    return total


def test_agent_costs_no_cpu_when_idle(spawn):
    p = spawn("idle.py")
    probing("-t", p.pid, "eval", "1")
    before = agent_cpu_ticks(p.pid)
    time.sleep(2)
    assert agent_cpu_ticks(p.pid) - before == 0


def test_agent_writes_nothing_to_job_output(spawn):
    p = spawn("idle.py")
    for args in (["query", "SELECT 1"], ["eval", "print(1)"], ["query", "bad sql"],
                 ["config", "probing.sample_rate=0.5"]):
        probing("-t", p.pid, *args)
    p.wait_out("tick")
    assert "probing" not in p.out()
    assert p.err().strip() == "probing: agent listening on @probing-%d (pid %d)" % (p.pid, p.pid)


def test_installed_program_finds_its_agent(userbase):
    prog = os.path.join(userbase["PREFIX"], "bin", "probing")
    r = subprocess.run([prog, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("probing ")
    assert os.path.exists(os.path.join(userbase["PREFIX"], "share/man/man1/probing.1"))
    assert os.path.exists(os.path.join(userbase["PREFIX"], "lib/probing/libprobing-%s.so" % PYVER))
