#!/usr/bin/python3
"""torch_trace overhead: step time of CPU training loops with probing's
hooks on and off, all measured in this one process, interleaved, medians
over repeats. Prints a table; exits 0 (no thresholds here: the targets are
printed next to the numbers).

The agent is loaded into this process (as PROBING=1 would) and switched
with `probing config`, so "off" is the agent loaded with
probing.torch.enabled=false: every torch hook removed.

usage: bench-torch.py [--repeats N] [--steps N] [--quick]
"""
import argparse
import json
import os
import socket
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "agent", "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "workloads"))

parser = argparse.ArgumentParser()
parser.add_argument("--repeats", type=int, default=15)
parser.add_argument("--steps", type=int, default=20, help="steps per measurement")
parser.add_argument("--quick", action="store_true", help="3 repeats of 20 steps")
args = parser.parse_args()
if args.quick:
    args.repeats, args.steps = 3, 20

os.environ["PROBING"] = "1"
os.environ["PROBING_TORCH_PROFILING"] = "off"
os.environ.setdefault("PROBING_LOG", "/tmp/probing-bench-%d.log" % os.getpid())
from probing import _boot  # noqa: E402  (loads the agent, as PROBING=1 does)

core = _boot.load()
if core is None or core.socket() is None:
    sys.exit("bench-torch: the agent did not load (run make first)")

import torch  # noqa: E402
from torch_steps import PyTracer, build  # noqa: E402

torch.set_num_threads(1)
torch.manual_seed(0)
PID = os.getpid()


def config(kv):
    """POST /config to the agent in this process (what `probing config`
    sends), over its abstract unix socket."""
    key, value = kv.split("=", 1)
    body = json.dumps({"key": key, "value": value}).encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0probing-%d" % PID)
    s.sendall(b"POST /config HTTP/1.1\r\nHost: probing\r\nConnection: close\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
              + body)
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
    s.close()
    if b" 200 " not in data.split(b"\r\n", 1)[0]:
        sys.exit("bench-torch: config %s failed: %r" % (kv, data[-300:]))


def mlp_of(w):
    """61 modules: Sequential root + 20 x (Linear, LayerNorm, ReLU)."""
    return build("mlp", w)


MLP_WIDTH = [0]


def mlp():
    """The MLP at the widest width whose step takes at most 12 ms here
    (the target is a 5-20 ms step), found once."""
    if not MLP_WIDTH[0]:
        for w in (512, 384, 256, 192, 128, 96, 64, 48, 32):
            model, x, y = mlp_of(w)
            opt = torch.optim.SGD(model.parameters(), lr=1e-4)
            run_steps(model, opt, x, y, 3)
            t = low(run_steps(model, opt, x, y, 30))
            MLP_WIDTH[0] = w
            if t <= 0.012:
                break
    return mlp_of(MLP_WIDTH[0])


def tiny():
    """The worst case: 241 modules that each do almost nothing."""
    return build("tiny")


def run_steps(model, opt, x, y, n):
    """CPU seconds of this thread for each of n training steps. torch runs
    on this one thread (set_num_threads(1); CPU autograd runs backward here
    too), so its CPU time is the step's own cost."""
    out = []
    for _ in range(n):
        t0 = time.thread_time()
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        out.append(time.thread_time() - t0)
    return out


def low(v):
    """The 10th percentile: on this shared VM a step's time only ever gets
    longer than its own cost (steal, frequency), so the low end is the
    estimate that noise does not move; medians are printed too."""
    v = sorted(v)
    return v[len(v) // 10]


def calls_per_step(model):
    return sum(1 for _ in model.modules())


def measure(name, build, modes):
    model, x, y = build()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    run_steps(model, opt, x, y, 10)  # warm up
    times = {m: [] for m in modes}
    for _ in range(args.repeats):
        for mode in modes:
            if mode == "off":
                times[mode] += run_steps(model, opt, x, y, args.steps)
            elif mode.startswith("probing"):
                config("probing.sample_rate=" + mode.split("@")[1])
                config("probing.torch.enabled=true")
                run_steps(model, opt, x, y, 3)
                times[mode] += run_steps(model, opt, x, y, args.steps)
                config("probing.torch.enabled=false")
            elif mode == "python":
                with PyTracer(model):
                    run_steps(model, opt, x, y, 3)
                    times[mode] += run_steps(model, opt, x, y, args.steps)
            elif mode == "profiler":
                from torch.profiler import ProfilerActivity, profile
                with profile(activities=[ProfilerActivity.CPU]):
                    run_steps(model, opt, x, y, 3)
                    times[mode] += run_steps(model, opt, x, y, args.steps)
    return ({m: low(v) for m, v in times.items()},
            {m: statistics.median(v) for m, v in times.items()}, calls_per_step(model))


TRACE_COLUMNS = ["step", "seq", "module", "stage", "allocated", "duration", "time",
                 "thread_id", "rank"]


def main():
    print("bench-torch: torch %s, python %d.%d, %d repeats (modes interleaved) x %d "
          "steps each; per-step CPU time of the training thread, 10th percentile "
          "(median in brackets)\n" %
          (torch.__version__, sys.version_info[0], sys.version_info[1],
           args.repeats, args.steps))
    res, med, calls = measure("mlp", mlp, ["off", "probing@1.0", "probing@0.1", "python",
                                           "profiler"])
    tres, tmed, tcalls = measure("tiny", tiny, ["off", "probing@1.0", "python"])
    base, tbase = res["off"], tres["off"]

    def added_us(t, b, c):
        return (t - b) / c * 1e6

    rows = [
        ("MLP (%d modules, width %d), no tracing" % (calls, MLP_WIDTH[0]), "%.2f (%.2f) ms" % (base * 1e3, med["off"] * 1e3), "1.000", ""),
        ("MLP, probing sample_rate 1.0", "%.2f (%.2f) ms" % (res["probing@1.0"] * 1e3, med["probing@1.0"] * 1e3),
         "%.3f" % (res["probing@1.0"] / base), "<= 1.05"),
        ("MLP, probing sample_rate 0.1", "%.2f (%.2f) ms" % (res["probing@0.1"] * 1e3, med["probing@0.1"] * 1e3),
         "%.3f" % (res["probing@0.1"] / base), "<= 1.01"),
        ("MLP, same tracing as Python hooks", "%.2f (%.2f) ms" % (res["python"] * 1e3, med["python"] * 1e3),
         "%.3f" % (res["python"] / base), ""),
        ("MLP, torch.profiler (reference)", "%.2f (%.2f) ms" % (res["profiler"] * 1e3, med["profiler"] * 1e3),
         "%.3f" % (res["profiler"] / base), ""),
        ("tiny modules (%d), no tracing" % tcalls, "%.2f (%.2f) ms" % (tbase * 1e3, tmed["off"] * 1e3), "1.000", ""),
        ("tiny modules, probing sample_rate 1.0", "%.2f (%.2f) ms" % (tres["probing@1.0"] * 1e3, tmed["probing@1.0"] * 1e3),
         "%.3f" % (tres["probing@1.0"] / tbase), "<= 1.30"),
        ("tiny modules, Python hooks", "%.2f (%.2f) ms" % (tres["python"] * 1e3, tmed["python"] * 1e3),
         "%.3f" % (tres["python"] / tbase), ""),
    ]
    pa, py = added_us(res["probing@1.0"], base, calls), added_us(res["python"], base, calls)
    tpa, tpy = added_us(tres["probing@1.0"], tbase, tcalls), added_us(tres["python"], tbase, tcalls)
    rows += [
        ("added per module call, MLP: probing / Python", "%.2f / %.2f us" % (pa, py),
         "%.2f" % (pa / py if py > 0 else float("nan")), "<= 0.50"),
        ("added per module call, tiny: probing / Python", "%.2f / %.2f us" % (tpa, tpy),
         "%.2f" % (tpa / tpy if tpy > 0 else float("nan")), "<= 0.50"),
    ]
    # The ring: one fixed-size record per row (struct torch_trace_rec: the
    # id and each column, 8 bytes apiece), calloc'd at buffer_size rows.
    rec = 8 * (1 + len(TRACE_COLUMNS))
    rows.append(("ring memory at buffer_size 10000", "%.2f MB" % (rec * 10000 / 1e6),
                 "%d B/row" % rec, "<= 2 MB"))
    w = max(len(r[0]) for r in rows)
    print("%-*s  %20s  %8s  %s" % (w, "case", "step / value", "ratio", "target"))
    print("%s  %s  %s  %s" % ("-" * w, "-" * 20, "-" * 8, "-" * 7))
    for r in rows:
        print("%-*s  %20s  %8s  %s" % (w, r[0], r[1], r[2], r[3]))


main()
