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

trap 'root_umount "$dir"' EXIT
trap 'exit 1' INT TERM
root_mount "$dir"
root_build "$dir" "$src"
root_install "$dir"
echo "installed probing in $dir with agents for: $(cd "$dir/usr/local/lib/probing" && ls | tr '\n' ' ')"
