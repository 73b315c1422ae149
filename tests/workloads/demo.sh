#!/bin/sh
# make demo: start the bundled training workload with the agent and show
# what probing sees in it.
set -u
cd "$(dirname "$0")/../.."
base=$PWD/.build/demo
site=$(PYTHONUSERBASE=$base /usr/bin/python3 -c 'import site; print(site.getusersitepackages())')
make -s install PREFIX="$base/prefix" PYSITE="$site" >/dev/null || exit 1

PYTHONUSERBASE=$base PROBING=1 /usr/bin/python3 tests/workloads/demo_train.py \
    >"$base/train.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null' EXIT INT TERM
i=0
until ./probing -t $pid query "SELECT 1" >/dev/null 2>&1; do
	i=$((i + 1)); [ $i -gt 200 ] && { echo "demo: agent did not start"; cat "$base/train.log"; exit 1; }
	sleep 0.05
done
show() { printf '\n$ %s\n' "$*"; "$@"; }
show ./probing list
show ./probing -t $pid eval "model"
show ./probing -t $pid eval "step, loss.item()"
show ./probing -t $pid config
sleep 1
show ./probing -t $pid query "SELECT module, stage, COUNT(*) AS calls, ROUND(AVG(duration)*1000, 3) AS avg_ms FROM python.torch_trace GROUP BY module, stage ORDER BY avg_ms DESC LIMIT 12"
show ./probing -t $pid query "SELECT COUNT(*) AS rows FROM python.torch_trace"
