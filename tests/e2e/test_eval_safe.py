"""eval and query never harm the job: a printing job survives evals of
every kind, evals and queries can be stopped, results are bounded, and the
agent keeps answering."""
import re

from conftest import probing, wait_for

KINDS = ["import json", "1/0", "import sys; sys.exit(4)", "time.sleep(0.02)",
         "print('from eval', n)"]


def check_counter(text):
    """Every line of the printer's output is whole and the counter never
    skips or repeats."""
    lines = text.split("\n")
    assert lines[0].startswith("ready")
    last = 0
    for line in lines[1:-1]:
        m = re.fullmatch(r"n (\d+) x{20}", line)
        assert m, "torn line %r after n %d" % (line, last)
        assert int(m.group(1)) == last + 1, "n %s after n %d" % (m.group(1), last)
        last += 1
    return last


def test_flushing_print_job_survives_30_evals_of_every_kind(spawn):
    p = spawn("flush_printer.py")
    p.wait_out("n 1 ")
    for i in range(30):
        for code in KINDS:
            r = probing("-t", p.pid, "eval", code)
            assert p.alive(), "job died (%s) after eval %r: %s" % (
                p.p.returncode, code, p.err()[-2000:])
            assert r.returncode in (0, 1), r.stderr
            if code.startswith("print"):
                assert r.stdout.startswith("from eval "), r.stdout
    assert "from eval" not in p.out()
    before = check_counter(p.out())
    wait_for(lambda: check_counter(p.out()) > before, 10, "the job printing on")
