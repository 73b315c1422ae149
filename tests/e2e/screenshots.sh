#!/bin/sh
# make screenshots: runs the demo (tests/workloads/demo.sh) inside a private
# tmux server, visits every pane of `probing top`, and writes one PNG per
# pane into screenshots/, rendered from the real terminal contents with
# their colours (tmux capture-pane -e, then tests/e2e/ansi2png.py).
set -u
cd "$(dirname "$0")/../.."
root=$PWD
out=$root/screenshots
cols=160
rows=48
sock=probing-shots-$$
tm() { tmux -L "$sock" -f /dev/null "$@"; }
tmp=$(mktemp -d)
cleanup() {
	# Quit top (the first key may only close the help); demo.sh then
	# stops the training processes. Make sure of it either way.
	i=0
	while tm has-session 2>/dev/null && [ $i -lt 50 ]; do
		[ $((i % 5)) -eq 0 ] && tm send-keys -t 0 F10 2>/dev/null
		i=$((i + 1))
		sleep 0.1
	done
	tm kill-server 2>/dev/null
	rm -f "${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)/$sock"
	[ -f .build/demo/demo.pids ] && kill $(cat .build/demo/demo.pids) 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

command -v tmux >/dev/null || { echo "screenshots: tmux is missing (make deps)" >&2; exit 1; }
command -v convert >/dev/null || { echo "screenshots: imagemagick is missing (make deps)" >&2; exit 1; }
mkdir -p "$out"

# waitfor TEXT [SECONDS]: polls the pane until TEXT shows up.
waitfor() {
	n=$(( ${2:-60} * 10 ))
	i=0
	until tm capture-pane -p -t 0 2>/dev/null | grep -qF -- "$1"; do
		i=$((i + 1))
		if [ $i -gt $n ]; then
			echo "screenshots: timed out waiting for '$1'; the screen:" >&2
			tm capture-pane -p -t 0 >&2
			exit 1
		fi
		sleep 0.1
	done
}

# shot NAME: the pane as it is now, with colours, into screenshots/NAME.png.
shot() {
	tm capture-pane -e -p -N -t 0 >"$tmp/$1.txt" || exit 1
	/usr/bin/python3 tests/e2e/ansi2png.py "$tmp/$1.txt" "$out/$1.png" $cols $rows || exit 1
	echo "screenshots/$1.png"
}

tm new-session -d -x $cols -y $rows -e LANG=C.UTF-8 -e TERM=tmux-256color \
    "tests/workloads/demo.sh --interval 0.5" || exit 1
waitfor "2 targets: 2 running" 180
# Let a few seconds of steps arrive so that every column has numbers.
waitfor "(linear." 60
i=0
while [ $i -lt 30 ]; do i=$((i + 1)); sleep 0.1; done
shot top-1-processes

# Enter: the selected process's charts (step time, allocated memory)
tm send-keys -t 0 Enter
waitfor "Allocated memory"
shot top-1-charts
tm send-keys -t 0 Escape
waitfor "MAIN THREAD"

tm send-keys -t 0 F3
waitfor "Net.encoder.0"
shot top-2-modules

tm send-keys -t 0 F4
waitfor "MainThread"
shot top-3-stacks

tm send-keys -t 0 F5 F7
waitfor "sql [all]>"
tm send-keys -t 0 -l "SELECT module, stage, COUNT(*) AS calls, ROUND(AVG(duration) * 1000, 3) AS avg_ms FROM python.torch_trace WHERE module LIKE 'Net%' GROUP BY module, stage ORDER BY avg_ms DESC"
tm send-keys -t 0 Enter
waitfor " rows, "
shot top-4-sql

tm send-keys -t 0 F6
waitfor ">>>"
tm send-keys -t 0 -l "model"
tm send-keys -t 0 Enter
waitfor "(head): Linear"
tm send-keys -t 0 -l "loss.item() / 0"
tm send-keys -t 0 Enter
waitfor "ZeroDivisionError"
shot top-5-eval

tm send-keys -t 0 F2 F1
waitfor "probing top: keys"
shot top-6-help
