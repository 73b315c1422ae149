"""`probing completion bash|zsh`: the scripts parse, and in a real bash
and a real zsh (inside a private tmux server) Tab completes commands,
options, config keys and the pid of a probed process after -t."""
import os
import shutil
import subprocess
import uuid

import pytest

from conftest import ROOT, probing, wait_for


def script(shell, tmp_path):
    r = probing("completion", shell)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    path = tmp_path / ("probing." + shell)
    path.write_text(r.stdout)
    return str(path)


def test_completion_scripts_parse(tmp_path):
    b = script("bash", tmp_path)
    assert subprocess.run(["bash", "-n", b]).returncode == 0
    z = script("zsh", tmp_path)
    assert subprocess.run(["zsh", "-n", z]).returncode == 0
    text = open(b).read()
    for word in ("query", "trace", "metrics", "probing.sample_rate", "--steps",
                 "table json csv"):
        assert word in text, word


def test_completion_usage_errors():
    for args, msg in (([], "which shell"), (["fish"], "no completion for shell 'fish'"),
                      (["bash", "x"], "too many")):
        r = probing("completion", *args)
        assert r.returncode == 2 and r.stdout == "" and msg in r.stderr, r.stderr


def bash_complete(tmp_path, line):
    """Runs the bash function on line (completing its last word) and
    returns COMPREPLY."""
    b = script("bash", tmp_path)
    words = line.split(" ")
    prog = 'COMP_WORDS=(%s); COMP_CWORD=%d; _probing; printf "%%s\\n" "${COMPREPLY[@]}"' % (
        " ".join("'%s'" % w for w in words), len(words) - 1)
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", "source %s; %s" % (b, prog)],
                       capture_output=True, text=True,
                       env=dict(os.environ, PATH=ROOT + ":" + os.environ["PATH"]))
    assert r.returncode == 0, r.stderr
    return r.stdout.split("\n")[:-1]


def test_bash_completes_commands_options_keys_pids_tables(spawn, tmp_path):
    p = spawn("idle.py")
    assert "trace" in bash_complete(tmp_path, "probing tr")
    assert bash_complete(tmp_path, "probing -t 1 trace --st") == ["--steps"]
    assert bash_complete(tmp_path, "probing -t 1 query -f j") == ["json"]
    assert bash_complete(tmp_path, "probing -t 1 config probing.sam") == [
        "probing.sample_rate"]
    assert str(p.pid) in bash_complete(tmp_path, "probing -t ")
    assert str(p.pid) in bash_complete(tmp_path, "probing -t %s" % str(p.pid)[:-1])
    assert "12,%d" % p.pid in bash_complete(tmp_path, "probing -t 12,")
    tables = bash_complete(tmp_path, "probing -t %d query python.t" % p.pid)
    assert "python.torch_trace" in tables
    assert bash_complete(tmp_path, "probing completion z") == ["zsh"]


class Shell:
    """An interactive shell in a private tmux server."""

    def __init__(self, argv, env):
        self.base = ["tmux", "-L", "probing-compl-" + uuid.uuid4().hex[:8], "-f",
                     "/dev/null"]
        subprocess.run(self.base + ["new-session", "-d", "-x", "200", "-y", "50",
                                    "env", *["%s=%s" % kv for kv in env.items()],
                                    *argv], check=True)

    def keys(self, *k):
        subprocess.run(self.base + ["send-keys", "-t", "0", *k], check=True)

    def text(self, t):
        subprocess.run(self.base + ["send-keys", "-t", "0", "-l", t], check=True)

    def screen(self):
        return subprocess.run(self.base + ["capture-pane", "-p", "-t", "0"],
                              capture_output=True, text=True).stdout

    def close(self):
        subprocess.run(self.base + ["kill-server"], capture_output=True)


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_tab_completes_a_real_pid(spawn, tmp_path, shell):
    if shutil.which(shell) is None:
        pytest.skip("%s is missing (make deps)" % shell)
    p = spawn("idle.py")
    path = script(shell, tmp_path)
    env = {"PATH": ROOT + ":" + os.environ["PATH"], "HOME": str(tmp_path),
           "TERM": "xterm", "PS1": "$ ", "PROMPT": "$ "}
    if shell == "bash":
        argv = ["bash", "--norc", "--noprofile", "-i"]
        setup = "source %s; echo READY" % path
    else:
        argv = ["zsh", "-f", "-i"]
        setup = ("autoload -Uz compinit; compinit -u -D; source %s; echo READY"
                 % path)
    sh = Shell(argv, env)
    try:
        sh.text(setup)
        sh.keys("Enter")
        wait_for(lambda: "READY\n" in sh.screen() or sh.screen().count("READY") >= 2,
                 timeout=30, what="%s to start" % shell, interval=0.1)
        sh.keys("C-l")
        # Everything but the last digit: Tab completes it (uniquely, or
        # the candidates are listed with a second Tab).
        sh.text("probing -t %s" % str(p.pid)[:-1])
        sh.keys("Tab")
        sh.keys("Tab")
        wait_for(lambda: str(p.pid) in sh.screen(), timeout=30,
                 what="pid %d completed by %s" % (p.pid, shell), interval=0.1)
        sh.keys("C-u")
        sh.keys("C-l")
        sh.text("probing metr")
        sh.keys("Tab")
        wait_for(lambda: "probing metrics" in sh.screen(), timeout=30,
                 what="a command completed by %s" % shell, interval=0.1)
    finally:
        sh.close()
    assert p.alive()


def test_make_install_puts_bash_completion(tmp_path):
    prefix = tmp_path / "prefix"
    site = tmp_path / "site"
    r = subprocess.run(["make", "-s", "-C", ROOT, "install", "PREFIX=%s" % prefix,
                        "PYSITE=%s" % site], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    comp = prefix / "share" / "bash-completion" / "completions" / "probing"
    assert comp.exists()
    assert "complete -F _probing probing" in comp.read_text()
    assert subprocess.run(["bash", "-n", str(comp)]).returncode == 0
