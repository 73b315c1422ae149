#!/bin/sh
# make demo: start two small PyTorch training processes with the agent
# (one slower than the other), open `probing top` on them, and stop them
# when it quits. Without a terminal it prints `top --batch` three times.
set -u
cd "$(dirname "$0")/../.."
base=$PWD/.build/demo
mkdir -p "$base"
site=$(PYTHONUSERBASE=$base /usr/bin/python3 -c 'import site; print(site.getusersitepackages())')
make -s install PREFIX="$base/prefix" PYSITE="$site" >/dev/null || exit 1
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
	echo "demo: python3-torch is missing (make deps)" >&2
	exit 1
fi

pids=""
stop() {
	[ -n "$pids" ] && kill $pids 2>/dev/null
	pids=""
}
trap stop EXIT
trap 'stop; exit 130' INT TERM HUP

PYTHONUSERBASE=$base PROBING=1 /usr/bin/python3 tests/workloads/demo_train.py \
    >"$base/train-fast.log" 2>&1 &
fast=$!
PYTHONUSERBASE=$base PROBING=1 /usr/bin/python3 tests/workloads/demo_train.py --slow \
    >"$base/train-slow.log" 2>&1 &
slow=$!
pids="$fast $slow"
echo "$pids" >"$base/demo.pids"

# Wait for both agents to answer and to have traced a first step.
for p in $fast $slow; do
	i=0
	until [ "$(./probing -t $p query -f csv "SELECT COUNT(*) > 0 FROM python.torch_trace WHERE stage = 'step'" 2>/dev/null | tail -1)" = 1 ]; do
		i=$((i + 1))
		if [ $i -gt 600 ] || ! kill -0 $p 2>/dev/null; then
			echo "demo: the training processes did not start" >&2
			cat "$base/train-fast.log" "$base/train-slow.log" >&2
			exit 1
		fi
		sleep 0.05
	done
done

if [ -t 0 ] && [ -t 1 ]; then
	./probing -t "$fast,$slow" top "$@"
else
	./probing -t "$fast,$slow" top --batch --iterations 3 "$@"
fi
