#!/bin/sh
# make install-root ROOT=DIR: copies this source tree into DIR/usr/src/probing,
# builds it there (chroot) with an agent for every python3.X the root has,
# and installs it under /usr/local, so that `chroot DIR probing -t PID ...`
# and `chroot DIR env PROBING=1 python3.X ...` work.
# usage: tests/matrix/install-root.sh DIR
set -e
. "$(dirname "$0")/lib.sh"
src=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:?usage: install-root.sh DIR}
[ -x "$dir/bin/sh" ] || die "$dir is not a root file system (make roots makes them)"
[ "$(id -u)" = 0 ] || die "building in a root needs root (chroot, mount)"

pythons=$(root_pythons "$dir" | while read -r p; do
	[ -f "$dir/usr/include/$p/Python.h" ] && echo "/usr/bin/$p"; done | tr '\n' ' ')
[ -n "$pythons" ] || die "no python3.X with its -dev package in $dir"

# The tracked and untracked-but-not-ignored files: what a clone would have,
# plus the work in progress, never the host's build outputs.
rm -rf "$dir/usr/src/probing"
mkdir -p "$dir/usr/src/probing"
(cd "$src" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) |
	tar -C "$dir/usr/src/probing" -xf -

trap 'root_umount "$dir"' EXIT INT TERM
root_mount "$dir"
root_sh "$dir" "cd /usr/src/probing && make -s -j2 PYTHONS='$pythons' >/tmp/probing-build.log 2>&1 &&
	make -s install PREFIX=/usr/local PYTHONS='$pythons' >>/tmp/probing-build.log 2>&1" ||
	{ tail -30 "$dir/tmp/probing-build.log" >&2; die "building probing in $dir failed (log: $dir/tmp/probing-build.log)"; }
echo "installed probing in $dir with agents for: $(cd "$dir/usr/local/lib/probing" && ls | tr "\n" " ")"
