#!/bin/sh
# GPU check for torch_trace: on a machine with CUDA PyTorch 2.x, builds the
# agent for that python and shows that `allocated` follows
# torch.cuda.memory_allocated() during a real CUDA training loop.
# usage: tests/bench/gpu-check.sh   (PYTHON=python3 by default)
set -eu
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
"$PY" - <<'PYEOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu-check: torch.cuda.is_available() is false; nothing to check")
print("python %s, torch %s, %s" % (sys.version.split()[0], torch.__version__,
                                   torch.cuda.get_device_name(0)))
PYEOF
make -s agent PYTHON="$PY"
exec "$PY" tests/bench/gpu_check.py
