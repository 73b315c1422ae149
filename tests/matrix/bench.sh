#!/bin/sh
# make bench-matrix: tests/bench/bench-matrix.py on each root's default
# python3 (after make matrix built probing there) and on each venv the
# matrix made (the host's and pyenv's); prints one table (.build/matrix/bench.md).
# usage: tests/matrix/bench.sh [N]
set -e
. "$(dirname "$0")/lib.sh"
src=$(cd "$(dirname "$0")/../.." && pwd)
out=$src/.build/matrix
mkdir -p "$out"
n=${1:-7}
: >"$out/bench.md"
for name in $ROOT_NAMES; do
	dir=$ROOTS/$name
	[ -x "$dir/usr/src/probing/probing" ] || die "probing is not built in root $name (make matrix)"
	trap 'root_umount "$dir"' EXIT
	trap 'exit 1' INT TERM
	root_mount "$dir"
	root_uninstall_site "$dir"
	py=$(readlink -f "$dir/usr/bin/python3" | sed "s|^$dir||")
	root_sh "$dir" "cd /usr/src/probing && PROBING_TEST_PYTHON=$py python3 tests/bench/bench-matrix.py $n" \
		>"$out/bench-$name.log" 2>&1 || { tail -5 "$out/bench-$name.log" >&2; die "bench in root $name failed"; }
	root_install "$dir"
	root_umount "$dir"
	trap - EXIT INT TERM
	tail -2 "$out/bench-$name.log" | sed "s/^| /| $name | /; 1s/^| $name | python/| where | python/" >>"$out/bench.md"
done
for venv in "$ROOTS"/venv-*/; do
	v=$(basename "$venv" | sed 's/^venv-//')
	[ -x "$venv/bin/python" ] || continue
	(cd "$src" && PROBING_TEST_PYTHON=$venv/bin/python python3 tests/bench/bench-matrix.py "$n") \
		>"$out/bench-$v.log" 2>&1 || { tail -5 "$out/bench-$v.log" >&2; die "bench on the $v venv failed"; }
	tail -1 "$out/bench-$v.log" | sed "s/^| /| $v venv | /" >>"$out/bench.md"
done
# one header
awk 'NR == 1 || !/^\| where/' "$out/bench.md" | sed '1a| --- | --- | --- | --- | --- | --- | --- | --- | --- |'
