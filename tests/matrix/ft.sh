#!/bin/sh
# make roots: builds, or reuses, a free-threaded CPython (--disable-gil)
# inside the sid root, from Debian's own source (apt-get source, checked
# against the archive's signed index), so that the matrix can show that
# probing refuses such a build clearly at inject and at PROBING=1 start.
# Debian ships no free-threaded interpreter. The source is python3.14's
# when the mirror serves it, else python3.13's (newest version first;
# 3.13 was the first with --disable-gil). Installed in the root's
# /opt/python-ft, with bin/python-ft naming the interpreter (python3.Xt);
# its stamp is written last, so a build cut short is made again.
# usage: tests/matrix/ft.sh          (after tests/matrix/roots.sh sid)
set -e
. "$(dirname "$0")/lib.sh"

dir=$ROOTS/sid
FT_PREFIX=/opt/python-ft
FT_SRC=/usr/src/python-ft
FT_STAMP=$FT_PREFIX/.probing-ft-ok
# What building it needs beyond the root's packages (ctypes: libffi).
FT_PKGS="libffi-dev xz-utils"

[ "$(id -u)" = 0 ] || die "building a free-threaded python in a root needs root (chroot, mount)"
[ -f "$dir/$STAMP" ] || die "no sid root at $dir (make roots first)"
trap 'root_umount "$dir"' EXIT
trap 'exit 1' INT TERM
root_lock "$dir"
if [ -f "$dir$FT_STAMP" ]; then
	echo "python-ft: reused ($dir$FT_PREFIX, made $(cat "$dir$FT_STAMP"))"
	exit 0
fi
t0=$(date +%s)
log=$ROOTS/sid-ft.log
rm -rf "$dir$FT_PREFIX" "$dir$FT_SRC"
root_mount "$dir"
echo "python-ft: fetching Debian's python3.14 (or 3.13) source and building it in $dir$FT_PREFIX"
# The source index goes to a list directory of its own: the root's apt
# state is left as it was.
root_sh "$dir" "set -e
	apt-get update -qq
	apt-get install -y -q --no-install-recommends $FT_PKGS
	mkdir -p $FT_SRC/lists/partial $FT_SRC/cache/archives/partial
	cd $FT_SRC
	echo 'deb-src $MIRROR sid main' >sources.list
	apt='-o Dir::Etc::SourceList=$FT_SRC/sources.list -o Dir::Etc::SourceParts=/nonexistent -o Dir::State::Lists=$FT_SRC/lists -o Dir::Cache=$FT_SRC/cache'
	apt-get \$apt update -qq
	for pkg in python3.14 python3.13; do
		for v in \$(apt-cache \$apt showsrc \$pkg | sed -n 's/^Version: //p' | sort -urV); do
			apt-get \$apt source --download-only \$pkg=\$v && break 2
		done
	done
	tar -xf python3.1*.orig.tar.*
	cd Python-3.1*/
	OPT='-DNDEBUG -O2' ./configure -q --disable-gil --prefix=$FT_PREFIX --without-ensurepip
	make -s -j2
	make -s install
	cd $FT_PREFIX/bin
	ln -sf \$(ls | grep -E '^python3\\.[0-9]+t\$') python-ft" >"$log" 2>&1 ||
	{ tail -30 "$log" >&2; die "building a free-threaded python in $dir failed (log: $log)"; }
rm -rf "$dir$FT_SRC"
root_sh "$dir" "$FT_PREFIX/bin/python-ft -c 'import sys, sysconfig; assert sysconfig.get_config_var(\"Py_GIL_DISABLED\") and not sys._is_gil_enabled()'" ||
	die "the python built in $dir is not free-threaded (log: $log)"
echo "python-ft: $(root_sh "$dir" "$FT_PREFIX/bin/python-ft -VV" | head -1) in $(($(date +%s) - t0)) s"
date -u +%FT%TZ >"$dir$FT_STAMP"
