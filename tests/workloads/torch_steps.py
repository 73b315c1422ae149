"""CPU training loops for the torch_trace benchmarks.

torch_steps.py MODEL MODE RATE STEPS [WARMUP]
  MODEL  mlp (61 modules: 20 x Linear, LayerNorm, ReLU; width 32) or
         tiny (241 modules that each do almost nothing)
  MODE   off (agent loaded, torch tracing off), on (probing's hooks at RATE),
         floor (the same global forward hooks as C functions that return at
         once: what torch's own hook dispatch costs), floor-bw (those plus a
         do-nothing pre-hook on each module output's grad_fn) or python
         (the same tracing as plain Python hooks)
  WARMUP steps run first; then callgrind's instrumentation (valgrind
         --tool=callgrind --instr-atstart=no) covers exactly the STEPS.
The agent is loaded from the checkout as PROBING=1 would. PyTracer and
FloorHooks are also used by tests/bench/bench-torch.py.
"""
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def noop_hooks():
    """The noop_hooks extension (tests/workloads/noop_hooks.c), compiled
    into .build/bench/ for this Python when missing or older than its
    source."""
    import importlib.util
    import subprocess
    import sysconfig
    src = os.path.join(ROOT, "tests", "workloads", "noop_hooks.c")
    out_dir = os.path.join(ROOT, ".build", "bench", "py%d.%d" % sys.version_info[:2])
    so = os.path.join(out_dir, "noop_hooks.so")
    if not os.path.exists(so) or os.path.getmtime(so) < os.path.getmtime(src):
        os.makedirs(out_dir, exist_ok=True)
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-I" + sysconfig.get_paths()["include"],
                        "-o", so + ".tmp", src], check=True)
        os.replace(so + ".tmp", so)
    spec = importlib.util.spec_from_file_location("noop_hooks", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class FloorHooks:
    """Global module forward hooks that do nothing (C functions returning
    None at once): the cost of torch calling any hook at all. With
    backward=True the forward hook also puts a do-nothing pre-hook on the
    grad_fn of each module's output (as probing does to time backward):
    torch's cost for those node hooks too."""

    def __init__(self, backward=False):
        self.backward = backward

    def __enter__(self):
        import torch
        mm = torch.nn.modules.module
        nh = noop_hooks()
        nh.setup(torch.Tensor, torch.empty(0))
        self.handles = [mm.register_module_forward_pre_hook(nh.pre),
                        mm.register_module_forward_hook(
                            nh.post_bw if self.backward else nh.post)]
        return self

    def __exit__(self, *a):
        for h in self.handles:
            h.remove()


class PyTracer:
    """The same tracing as probing's, as plain Python hooks: perf_counter
    and a list append, backward timed on autograd nodes the same way."""

    def __init__(self, root):
        self.names = {m: (type(root).__name__ + "." + n if n else type(root).__name__)
                      for n, m in root.named_modules()}
        self.rows, self.stack, self.handles = [], [], []

    def pre(self, m, inp):
        self.stack.append(time.perf_counter())

    def post(self, m, inp, out):
        import torch
        t0 = self.stack.pop()
        name = self.names.get(m, "?")
        self.rows.append((name, "forward", time.perf_counter() - t0))
        go = out.grad_fn if isinstance(out, torch.Tensor) else None
        if go is None:
            return
        x = inp[0] if inp and isinstance(inp[0], torch.Tensor) else None
        gx = x.grad_fn if x is not None else None
        start = []
        go.register_prehook(lambda g: start.append(time.perf_counter()))

        def end(*a):
            if start:
                self.rows.append((name, "backward", time.perf_counter() - start[0]))
        if gx is None or gx is go:
            go.register_hook(end)
        else:
            gx.register_prehook(end)

    def __enter__(self):
        import torch
        mm = torch.nn.modules.module
        self.handles = [mm.register_module_forward_pre_hook(self.pre),
                        mm.register_module_forward_hook(self.post)]
        return self

    def __exit__(self, *a):
        for h in self.handles:
            h.remove()
        self.rows.clear()


def build(kind, width=32):
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x)

    if kind == "tiny":
        return (nn.Sequential(*[Tiny() for _ in range(120)]), torch.randn(2, 4),
                torch.randn(2, 4))
    layers = []
    for _ in range(20):
        layers += [nn.Linear(width, width), nn.LayerNorm(width), nn.ReLU()]
    return nn.Sequential(*layers), torch.randn(64, width), torch.randn(64, width)


def main():
    kind, mode, rate, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    warmup = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    sys.path.insert(0, os.path.join(ROOT, "agent", "python"))
    os.environ["PROBING"] = "1"
    os.environ["PROBING_TORCH_PROFILING"] = "on" if mode == "on" else "off"
    os.environ["PROBING_SAMPLE_RATE"] = rate
    from probing import _boot
    _boot.load()
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, x, y = build(kind)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    tracer = (PyTracer(model) if mode == "python" else
              FloorHooks() if mode == "floor" else
              FloorHooks(backward=True) if mode == "floor-bw" else None)
    if tracer:
        tracer.__enter__()
    nh = noop_hooks()
    for i in range(warmup + steps):
        if i == warmup:
            nh.instr_start()
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    nh.instr_stop()


if __name__ == "__main__":
    main()
