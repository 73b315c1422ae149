"""The repl: a Python prompt running in the target, driven through a
pseudo-terminal with pexpect, and scripted through a pipe."""
import os
import time

import pexpect
import pytest

from conftest import PROBING, probing, wait_for

TARGET = '''
import os, time

class Model:
    def __init__(self):
        self.learning_rate = 0.125
        self.batch_size = 32

model = Model()
print("ready", os.getpid(), flush=True)
n = 0
while True:
    n += 1
    if n % 25 == 0:
        print("tick", n, flush=True)
    time.sleep(0.02)
'''


@pytest.fixture
def target(spawn, tmp_path):
    path = tmp_path / "repl_target.py"
    path.write_text(TARGET)
    p = spawn(str(path))
    p.wait_out("ready")
    return p


def open_repl(pid, home):
    env = dict(os.environ, HOME=str(home), TERM="xterm")
    env.pop("PROBING", None)
    child = pexpect.spawn(PROBING, ["-t", str(pid), "repl"], env=env,
                          encoding="utf-8", timeout=15, dimensions=(40, 160))
    child.expect(">>> ")
    return child


def eval_threads(pid):
    """How many repl statement threads the target has now."""
    n = 0
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, t)) as f:
                n += f.read().strip() == "probing-eval"
        except OSError:
            pass
    return n


def ticks(p):
    return p.out().count("tick")


def test_repl_tab_completes_a_live_attribute(target, tmp_path):
    r = open_repl(target.pid, tmp_path)
    r.send("model.lea\t")
    r.expect("rning_rate")
    r.send("\r")
    r.expect("0.125")
    r.expect(">>> ")
    r.send("model.bat\t")
    r.expect("ch_size")
    r.send(" + 1\r")
    r.expect("33")
    r.expect(">>> ")
    r.sendeof()
    r.expect(pexpect.EOF)


def test_repl_multiline_def_then_call(target, tmp_path):
    r = open_repl(target.pid, tmp_path)
    r.send("def double(x):\r")
    r.expect(r"\.\.\. ")
    r.send("    return x * 2\r")
    r.expect(r"\.\.\. ")
    r.send("\r")
    r.expect(">>> ")
    r.send("double(21)\r")
    r.expect("42")
    r.expect(">>> ")
    # open brackets continue too, and a for loop prints each line
    r.send("xs = [1,\r")
    r.expect(r"\.\.\. ")
    r.send("      2]\r")
    r.expect(">>> ")
    r.send("for x in xs:\r")
    r.expect(r"\.\.\. ")
    r.send("    print('item', x)\r")
    r.expect(r"\.\.\. ")
    r.send("\r")
    r.expect("item 1")
    r.expect("item 2")
    r.expect(">>> ")
    # the def landed in the target's __main__
    assert probing("-t", target.pid, "eval", "double(5)").stdout == "10\n"


def test_repl_prints_reprs_and_tracebacks_like_python(target, tmp_path):
    r = open_repl(target.pid, tmp_path)
    r.send("'ab' * 2\r")
    r.expect("'abab'")
    r.expect(">>> ")
    r.send("None\r")
    r.expect(">>> ")
    assert r.before.strip() == "None"  # only the echo of the input
    r.send("1/0\r")
    r.expect("Traceback \\(most recent call last\\):")
    r.expect('File "<stdin>", line 1, in <module>')
    r.expect("ZeroDivisionError: division by zero")
    r.expect(">>> ")
    r.send("1 +\r")
    r.expect("SyntaxError")
    r.expect(">>> ")


def test_repl_ctrl_c_interrupts_a_running_sleep_only(target, tmp_path):
    r = open_repl(target.pid, tmp_path)
    r.send("import time; time.sleep(30)\r")
    wait_for(lambda: eval_threads(target.pid) == 1, 10, "the statement to run")
    before = ticks(target)
    t0 = time.monotonic()
    r.sendintr()
    r.expect("KeyboardInterrupt")
    r.expect(">>> ")
    assert time.monotonic() - t0 < 3
    # the repl and the agent go on; the job's own thread was not touched
    r.send("6 * 7\r")
    r.expect("42")
    r.expect(">>> ")
    wait_for(lambda: ticks(target) > before + 2, 10, "the job to keep running")
    assert target.alive()
    assert "KeyboardInterrupt" not in target.err()


def test_repl_ctrl_c_stops_a_busy_statement_at_once(target, tmp_path):
    r = open_repl(target.pid, tmp_path)
    r.send("spins = 0\r")
    r.expect(">>> ")
    r.send("while True: spins += 1\r")
    r.expect(r"\.\.\. ")
    r.send("\r")
    wait_for(lambda: eval_threads(target.pid) == 1, 10, "the statement to run")
    r.sendintr()
    r.expect("KeyboardInterrupt")
    r.expect(">>> ")
    # a pure-Python loop stops at its next bytecode: the thread ends
    wait_for(lambda: eval_threads(target.pid) == 0, 10, "the statement to stop")
    r.send("spins > 0\r")
    r.expect("True")
    assert target.alive()


def test_repl_ctrl_c_discards_the_input(target, tmp_path):
    r = open_repl(target.pid, tmp_path)
    r.send("x = (1,\r")
    r.expect(r"\.\.\. ")
    r.sendintr()
    r.expect("KeyboardInterrupt")
    r.expect(">>> ")
    r.send("2 + 2\r")
    r.expect("4")
    r.expect(">>> ")
    r.send("'x' in dir()\r")
    r.expect("False")


def test_repl_interrupted_output_never_reaches_the_target(target, tmp_path):
    r = open_repl(target.pid, tmp_path)
    r.send("import time; time.sleep(1); print('late-output')\r")
    wait_for(lambda: eval_threads(target.pid) == 1, 10, "the statement to run")
    r.sendintr()
    r.expect("KeyboardInterrupt")
    r.expect(">>> ")
    # the sleep returns, the KeyboardInterrupt lands, the thread ends
    wait_for(lambda: eval_threads(target.pid) == 0, 10, "the statement to end")
    assert "late-output" not in target.out()
    assert "late-output" not in target.err()
    assert "KeyboardInterrupt" not in target.err()


def test_repl_ctrl_d_and_exit_leave_the_target_running(target, tmp_path):
    r = open_repl(target.pid, tmp_path)
    r.sendeof()
    r.expect(pexpect.EOF)
    r.close()
    assert r.exitstatus == 0
    r = open_repl(target.pid, tmp_path)
    r.send("exit()\r")
    r.expect(pexpect.EOF)
    r.close()
    assert r.exitstatus == 0
    # SystemExit raised by a statement leaves the repl, not the target
    r = open_repl(target.pid, tmp_path)
    r.send("import sys; sys.exit(3)\r")
    r.expect(pexpect.EOF)
    r.close()
    assert target.alive()
    # exit() was not run in the target: its stdin is still open
    assert probing("-t", target.pid, "eval", "import sys; sys.stdin.closed").stdout == "False\n"


def test_repl_keeps_history_in_home(target, tmp_path):
    r = open_repl(target.pid, tmp_path)
    r.send("history_marker = 17\r")
    r.expect(">>> ")
    r.sendeof()
    r.expect(pexpect.EOF)
    hist = tmp_path / ".probing_history"
    assert "history_marker" in hist.read_text()
    assert hist.stat().st_mode & 0o077 == 0
    # the next session can recall it with the up arrow
    r = open_repl(target.pid, tmp_path)
    r.send("\x1b[A\r")
    r.expect(">>> ")
    r.send("history_marker\r")
    r.expect("17")


def test_repl_reads_statements_from_a_pipe(target):
    script = ("x = 5\n"
              "x * 2\n"
              "def g():\n"
              "    return x\n"
              "print(g())\n"
              "for i in range(2):\n"
              "    print('i', i)\n"
              "if x:\n"
              "    print('yes')\n"
              "else:\n"
              "    print('no')\n"
              "print('secret-output')\n")
    r = probing("-t", target.pid, "repl", input=script)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "10\n5\ni 0\ni 1\nyes\nsecret-output\n"
    assert r.stderr == ""
    assert "secret-output" not in target.out()

    r = probing("-t", target.pid, "repl", input="print('a')\n1/0\nprint('b')\n")
    assert r.returncode == 1
    assert r.stdout == "a\nb\n"
    assert "ZeroDivisionError: division by zero" in r.stderr
    assert 'File "<stdin>", line 1' in r.stderr

    r = probing("-t", target.pid, "repl", input="def h(:\n")
    assert r.returncode == 1 and "SyntaxError" in r.stderr


def test_repl_needs_one_target_and_a_live_agent(target, spawn):
    plain = spawn("idle.py", probing=None)
    r = probing("-t", "%d,%d" % (target.pid, plain.pid), "repl", input="")
    assert r.returncode == 2 and "one target" in r.stderr
    r = probing("-t", plain.pid, "repl", input="1\n")
    assert r.returncode == 1
    assert r.stderr.startswith("probing: no probing agent in pid %d" % plain.pid)
