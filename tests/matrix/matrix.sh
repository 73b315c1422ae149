#!/bin/sh
# make matrix: the end-to-end suite in each root (make roots) for each of
# its python3.X, and on the host with torch 2.13 from PyPI in a venv of
# Debian's python3 and one of the pyenv-built python3. Prints
# one line per combination (passed, failed, skipped, seconds), the table in
# .build/matrix/summary, and ends with `N passed, N failed`.
# usage: tests/matrix/matrix.sh [NAME|host|pyenv ...]   (default: all of them)
# Exits 1 when any test failed or a combination's pytest did not run.
# The tests: the whole end-to-end suite but the shell-completion scripts
# (bash and zsh, no Python in them); MATRIX_TESTS replaces the list,
# MATRIX_PYTEST="-k inject" narrows it.
set -e
. "$(dirname "$0")/lib.sh"
src=$(cd "$(dirname "$0")/../.." && pwd)
out=$src/.build/matrix
mkdir -p "$out"
: >"$out/summary"
TESTS=${MATRIX_TESTS:-"tests/e2e --ignore=tests/e2e/test_completion.py"}
TESTS=$(echo $TESTS)
t_start=$(date +%s)
total_p=0
total_f=0

# Counts a junit file into the totals and the summary: label, xml, seconds.
count() {
	set -- "$1" "$2" "$3" "$(python3 "$src/tests/matrix/junit.py" "$2")"
	# shellcheck disable=SC2086
	set -- "$1" "$2" "$3" $4
	total_p=$((total_p + $4))
	total_f=$((total_f + $5))
	line=$(printf '%-34s %4d passed %3d failed %3d skipped %5d s' "$1" "$4" "$5" "$6" "$3")
	echo "$line" | tee -a "$out/summary"
	[ -n "$7" ] && echo "    failed: $7" | tee -a "$out/summary" &&
		python3 "$src/tests/matrix/junit.py" --why "$2" | tee -a "$out/summary"
	return 0
}

run_root() {
	name=$1
	dir=$ROOTS/$name
	[ -f "$dir/$STAMP" ] || die "root $name is not made (make roots)"
	t0=$(date +%s)
	trap 'root_umount "$dir"' EXIT
	trap 'exit 1' INT TERM
	root_mount "$dir"
	# The tests see the build tree only, as on the host; installed after.
	root_uninstall_site "$dir"
	root_build "$dir" "$src"
	echo "root $name: built in $(($(date +%s) - t0)) s" | tee -a "$out/summary"
	for p in $(root_pythons "$dir"); do
		[ -f "$dir/usr/include/$p/Python.h" ] || continue
		v=$(root_sh "$dir" "$p -c 'import sys; print(sys.version.split()[0])'")
		tv=$(root_sh "$dir" "$p -c 'import torch; print(torch.__version__)' 2>/dev/null" || echo none)
		t0=$(date +%s)
		rm -f "$dir/tmp/matrix.xml"
		# shellcheck disable=SC2086
		root_sh "$dir" "cd /usr/src/probing && PROBING_TEST_PYTHON=/usr/bin/$p \
			timeout ${MATRIX_TIMEOUT:-1500} python3 -m pytest -q -p no:cacheprovider \
			--junitxml /tmp/matrix.xml $TESTS $MATRIX_PYTEST" \
			>"$out/$name-$p.log" 2>&1 || true
		cp "$dir/tmp/matrix.xml" "$out/$name-$p.xml" 2>/dev/null || :
		count "$name $p ($v, torch $tv)" "$out/$name-$p.xml" $(($(date +%s) - t0))
	done
	# The free-threaded python ft.sh built, if any: its refusals (at
	# inject, at PROBING=1 start, at build) are all that apply to it.
	if [ -x "$dir/opt/python-ft/bin/python-ft" ]; then
		v=$(root_sh "$dir" "/opt/python-ft/bin/python-ft -c 'import sys; print(sys.version.split()[0] + sys.abiflags)'")
		t0=$(date +%s)
		rm -f "$dir/tmp/matrix.xml"
		root_sh "$dir" "cd /usr/src/probing && PROBING_TEST_PYTHON=/opt/python-ft/bin/python-ft \
			timeout ${MATRIX_TIMEOUT:-1500} python3 -m pytest -q -p no:cacheprovider \
			--junitxml /tmp/matrix.xml tests/e2e/test_versions.py" >"$out/$name-ft.log" 2>&1 || true
		cp "$dir/tmp/matrix.xml" "$out/$name-ft.xml" 2>/dev/null || :
		count "$name python-ft ($v, free-threaded)" "$out/$name-ft.xml" $(($(date +%s) - t0))
	elif [ "$name" = sid ]; then
		echo "sid python-ft: not built (make roots says why); combination not run" | tee -a "$out/summary"
	fi
	root_install "$dir"
	root_umount "$dir"
	trap - EXIT INT TERM
}

# A venv of interpreter $2 (the system's packages visible: pytest, the user
# site the tests install into), with torch 2.13 from PyPI on top when $3 is
# "torch" (the CPU wheel on these machines' disk is for 3.11: another
# Python would pull a CUDA build of several GB), beside the roots (outside
# the repository: a test hides the repository from its target, whose
# python this is), tested as combination $1.
run_venv() {
	venv=$ROOTS/venv-$1
	t0=$(date +%s)
	check='import sys'
	[ "$3" = torch ] && check='import torch, sys; sys.exit(not torch.__version__.startswith("2.13"))'
	if ! "$venv/bin/python" -c "$check" 2>/dev/null ||
		! [ "$("$venv/bin/python" -c 'import sys; print(sys._base_executable)')" -ef "$2" ]; then
		rm -rf "$venv"
		"$2" -m venv --system-site-packages "$venv" >"$out/$1-venv.log" 2>&1 ||
			{ tail -20 "$out/$1-venv.log" >&2; die "venv on $2 failed (log: $out/$1-venv.log)"; }
		if [ "$3" = torch ]; then
			"$venv/bin/pip" install -q torch==2.13.0 >>"$out/$1-venv.log" 2>&1 ||
				{ tail -20 "$out/$1-venv.log" >&2; die "pip install torch==2.13.0 on $2 failed (log: $out/$1-venv.log)"; }
		fi
	fi
	v=$("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])')
	tv=$("$venv/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo none)
	echo "$1 venv on $2 ($v, torch $tv): ready in $(($(date +%s) - t0)) s" | tee -a "$out/summary"
	t0=$(date +%s)
	rm -f "$out/$1.xml"
	# shellcheck disable=SC2086
	(cd "$src" && PROBING_TEST_PYTHON=$venv/bin/python timeout "${MATRIX_TIMEOUT:-1500}" \
		python3 -m pytest -q -p no:cacheprovider --junitxml "$out/$1.xml" $TESTS $MATRIX_PYTEST) \
		>"$out/$1.log" 2>&1 || true
	count "$1 venv ($v, torch $tv)" "$out/$1.xml" $(($(date +%s) - t0))
}

# The pyenv-built interpreters, 3.11 and later (python3 on these machines'
# PATH is pyenv's 3.11; it also has 3.12 and 3.13.0): built with
# --enable-shared, each links its own libpython3.X.so, unlike Debian's,
# whose python3 has libpython linked in statically. MATRIX_PYENV names
# others (python3 paths, space-separated).
pyenv_pythons() {
	if [ -n "$MATRIX_PYENV" ]; then
		echo "$MATRIX_PYENV"
		return
	fi
	command -v pyenv >/dev/null || return 0
	for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.[0-9]+\.[0-9]+$' | sort -t. -k2 -n); do
		[ "$(echo "$v" | cut -d. -f2)" -ge 11 ] && echo "$(pyenv root)/versions/$v/bin/python3"
	done
}

run_pyenv() {
	pys=$(pyenv_pythons)
	if [ -z "$pys" ]; then
		[ -n "$1" ] && die "no pyenv here (set MATRIX_PYENV=/path/to/python3)"
		echo "pyenv: no pyenv interpreter on this machine; combination not run" | tee -a "$out/summary"
		return 0
	fi
	for py in $pys; do
		v=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
		if [ "$v" = 3.11 ]; then
			run_venv "pyenv-$v" "$py" torch
		else
			run_venv "pyenv-$v" "$py"
		fi
	done
}

for what in ${*:-$ROOT_NAMES host pyenv}; do
	case $what in
	host) run_venv host /usr/bin/python3 torch ;;
	pyenv) run_pyenv "$*" ;;
	*) run_root "$what" ;;
	esac
done
echo "matrix: all in $(($(date +%s) - t_start)) s; logs in $out" | tee -a "$out/summary"
echo "matrix: $total_p passed, $total_f failed"
[ "$total_f" = 0 ]
