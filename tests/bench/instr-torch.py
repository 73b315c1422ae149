"""torch_trace overhead in instructions, which this shared VM cannot
disturb: each case runs tests/workloads/torch_steps.py under callgrind with
instrumentation off until WARMUP steps are done, then counts exactly STEPS
training steps (start-up, torch's import and the first steps excluded);
instructions / STEPS is one step. Only the training thread is counted
(--separate-threads): the agent's threads answer whoever queries it. Side by side: no tracing, the floor (the
same global forward hooks as C functions that return at once), the floor
plus a do-nothing pre-hook on each module output's grad_fn (torch's cost of
the node hooks that time backward), probing, and the same tracing as
Python hooks. Slow (minutes): run it on its own: `make bench-instr`.

usage: instr-torch.py [--steps N] [--warmup N] [--profile DIR]
  --profile DIR  keep the callgrind files there (callgrind_annotate them)
"""
import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOOP = os.path.join(ROOT, "tests", "workloads", "torch_steps.py")
PY = os.environ.get("PROBING_TEST_PYTHON", "/usr/bin/python3")
MODES = [("MLP, no tracing", "mlp", "off", "1.0"),
         ("MLP, floor: C hooks doing nothing", "mlp", "floor", "1.0"),
         ("MLP, floor + grad_fn hooks", "mlp", "floor-bw", "1.0"),
         ("MLP, probing sample_rate 1.0", "mlp", "on", "1.0"),
         ("MLP, probing sample_rate 0.1", "mlp", "on", "0.1"),
         ("MLP, Python hooks", "mlp", "python", "1.0"),
         ("tiny, no tracing", "tiny", "off", "1.0"),
         ("tiny, floor: C hooks doing nothing", "tiny", "floor", "1.0"),
         ("tiny, floor + grad_fn hooks", "tiny", "floor-bw", "1.0"),
         ("tiny, probing sample_rate 1.0", "tiny", "on", "1.0"),
         ("tiny, Python hooks", "tiny", "python", "1.0")]
CALLS = {"mlp": 61, "tiny": 241}
TARGETS = {"MLP, probing sample_rate 1.0": "<= 1.05", "MLP, probing sample_rate 0.1": "<= 1.01",
           "tiny, probing sample_rate 1.0": "<= 1.30"}

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=30)
parser.add_argument("--warmup", type=int, default=5)
parser.add_argument("--profile", default="")
args = parser.parse_args()


def irefs(model, mode, rate):
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        out = os.path.join(args.profile, "callgrind.%s-%s-%s" % (model, mode, rate))
    else:
        out = tempfile.mktemp(prefix="cg-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBING")}
    env["PROBING_LOG"] = out + ".log"
    r = subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                        "--separate-threads=yes", "--callgrind-out-file=" + out, PY, LOOP,
                        model, mode, rate, str(args.steps), str(args.warmup)],
                       capture_output=True, text=True, env=env)
    m = re.search(r"Collected\s*:\s*(\d+)", r.stderr)
    if m is None or r.returncode != 0:
        sys.exit("valgrind failed: " + r.stderr[-2000:])
    n = int(m.group(1))
    # The main thread's own file (out-01) when callgrind split them.
    files = sorted(glob.glob(out + "-*"))
    main = [f for f in files if f.endswith("-01")]
    if main:
        with open(main[0]) as f:
            t = re.search(r"^totals:\s*(\d+)", f.read(), re.M)
        if t:
            n = int(t.group(1))
    if not args.profile:
        for f in files + [out]:
            if os.path.exists(f):
                os.unlink(f)
    if os.path.exists(out + ".log"):
        os.unlink(out + ".log")
    return n


jobs = [(m, e, r) for _, m, e, r in MODES]
with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
    counts = dict(zip(jobs, pool.map(lambda j: irefs(*j), jobs)))
per_step = {name: counts[(m, e, r)] / args.steps for name, m, e, r in MODES}
print("\ntorch_trace overhead in instructions per training step (callgrind, %d steps "
      "counted after %d; MLP: 61 modules, width 32; tiny: 241 modules)" %
      (args.steps, args.warmup))
print("%-36s  %14s  %7s  %s" % ("case", "instr / step", "ratio", "target"))
print("%s  %s  %s  %s" % ("-" * 36, "-" * 14, "-" * 7, "-" * 7))
for name, model, _, _ in MODES:
    base = per_step[("MLP" if model == "mlp" else "tiny") + ", no tracing"]
    print("%-36s  %14.0f  %7.3f  %s" % (name, per_step[name], per_step[name] / base,
                                       TARGETS.get(name, "")))
for model, label in (("mlp", "MLP"), ("tiny", "tiny")):
    base = per_step[label + ", no tracing"]

    def added(case):
        return (per_step[label + ", " + case] - base) / CALLS[model]
    ours, floor = added("probing sample_rate 1.0"), added("floor: C hooks doing nothing")
    floor_bw, py = added("floor + grad_fn hooks"), added("Python hooks")
    print("added per module call, %s: probing %.0f, floor %.0f (ratio %.2f), floor + grad_fn "
          "hooks %.0f (ratio %.2f), Python hooks %.0f (ratio %.2f)" %
          (label, ours, floor, ours / floor, floor_bw, ours / floor_bw, py, ours / py))
