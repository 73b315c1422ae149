"""CPU training loops for the torch_trace benchmarks.

torch_steps.py MODEL MODE RATE STEPS
  MODEL  mlp (61 modules: 20 x Linear, LayerNorm, ReLU; width 32) or
         tiny (241 modules that each do almost nothing)
  MODE   off (agent loaded, torch tracing off), on (probing's hooks at RATE)
         or python (the same tracing as plain Python hooks)
The agent is loaded from the checkout as PROBING=1 would. PyTracer is also
used by tests/bench/bench-torch.py.
"""
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    tracer = PyTracer(model) if mode == "python" else None
    if tracer:
        tracer.__enter__()
    for _ in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


if __name__ == "__main__":
    main()
