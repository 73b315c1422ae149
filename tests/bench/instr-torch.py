"""torch_trace overhead in instructions, which this shared VM cannot
disturb: each mode runs the same loop for 40 and for 140 steps under
valgrind (cachegrind, no cache simulation); the difference / 100 is the
instructions of one step, start-up cancelled out. Slow (minutes): run it
on its own: `make bench-instr`.
"""
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOOP = os.path.join(ROOT, "tests", "workloads", "torch_steps.py")
MODES = [("MLP, no tracing", "mlp", "off", "1.0"),
         ("MLP, probing sample_rate 1.0", "mlp", "on", "1.0"),
         ("MLP, probing sample_rate 0.1", "mlp", "on", "0.1"),
         ("MLP, Python hooks", "mlp", "python", "1.0"),
         ("tiny, no tracing", "tiny", "off", "1.0"),
         ("tiny, probing sample_rate 1.0", "tiny", "on", "1.0"),
         ("tiny, Python hooks", "tiny", "python", "1.0")]
CALLS = {"mlp": 61, "tiny": 241}
SHORT, LONG = 40, 140


def irefs(model, mode, rate, steps):
    out = tempfile.mktemp(prefix="cg-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBING")}
    env["PROBING_LOG"] = out + ".log"
    r = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                        "--cachegrind-out-file=" + out, "/usr/bin/python3", LOOP,
                        model, mode, rate, str(steps)], capture_output=True, text=True, env=env)
    m = re.search(r"I\s+refs:\s+([\d,]+)", r.stderr)
    for f in (out, out + ".log"):
        if os.path.exists(f):
            os.unlink(f)
    if m is None:
        sys.exit("valgrind failed: " + r.stderr[-2000:])
    return int(m.group(1).replace(",", ""))


jobs = [(m, e, r, n) for _, m, e, r in MODES for n in (SHORT, LONG)]
with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
    counts = dict(zip(jobs, pool.map(lambda j: irefs(*j), jobs)))
per_step = {name: (counts[(m, e, r, LONG)] - counts[(m, e, r, SHORT)]) / (LONG - SHORT)
            for name, m, e, r in MODES}
print("\ntorch_trace overhead in instructions per training step (valgrind; "
      "MLP: 61 modules, width 32; tiny: 241 modules)")
print("%-30s  %14s  %7s  %s" % ("case", "instr / step", "ratio", "target"))
print("%s  %s  %s  %s" % ("-" * 30, "-" * 14, "-" * 7, "-" * 7))
targets = {"MLP, probing sample_rate 1.0": "<= 1.05", "MLP, probing sample_rate 0.1": "<= 1.01",
           "tiny, probing sample_rate 1.0": "<= 1.30"}
for name, model, _, _ in MODES:
    base = per_step[("MLP" if model == "mlp" else "tiny") + ", no tracing"]
    print("%-30s  %14.0f  %7.3f  %s" % (name, per_step[name], per_step[name] / base,
                                       targets.get(name, "")))
for model, label in (("mlp", "MLP"), ("tiny", "tiny")):
    base = per_step[label + ", no tracing"]
    ours = (per_step[label + ", probing sample_rate 1.0"] - base) / CALLS[model]
    theirs = (per_step[label + ", Python hooks"] - base) / CALLS[model]
    print("added per module call, %s: probing %.0f, Python hooks %.0f instructions: "
          "ratio %.2f (target <= 0.50)" % (label, ours, theirs, ours / theirs))
