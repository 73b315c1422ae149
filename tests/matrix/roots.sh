#!/bin/sh
# make roots: creates, or reuses, the Debian root file systems the matrix
# runs in (trixie: Python 3.13 + torch 2.6; sid: Python 3.14 + torch 2.14,
# with every other python3.X sid carries). A root with its stamp is reused
# as it is; one without (half made) is removed and made again.
# usage: tests/matrix/roots.sh [NAME ...]    (default: every root)
set -e
. "$(dirname "$0")/lib.sh"

command -v debootstrap >/dev/null ||
	die "debootstrap is missing (apt-get install debootstrap, or make deps-matrix)"
[ "$(id -u)" = 0 ] || die "making a root needs root (debootstrap, chroot, mount)"

# The extra python3.X-dev packages of root $1: every python3.X sid or
# trixie carries besides the default one (sid: 3.13 and 3.15 when present).
extra_pythons() {
	root_sh "$1" "apt-cache pkgnames python3. 2>/dev/null" |
		grep -E '^python3\.[0-9]+-dev$' | sort -u | tr '\n' ' '
}

make_root() {
	name=$1
	dir=$ROOTS/$name
	if [ -f "$dir/$STAMP" ]; then
		echo "root $name: reused ($dir, made $(cat "$dir/$STAMP"))"
		return 0
	fi
	t0=$(date +%s)
	if [ -e "$dir" ]; then
		echo "root $name: half made, removing $dir"
		root_lock "$dir"
		root_umount "$dir"
		rm -rf --one-file-system "$dir"
	fi
	mkdir -p "$ROOTS"
	echo "root $name: debootstrap $name (minbase) into $dir"
	debootstrap --variant=minbase "$name" "$dir" "$MIRROR" >"$ROOTS/$name.log" 2>&1 ||
		{ tail -20 "$ROOTS/$name.log" >&2; die "debootstrap $name failed (log: $ROOTS/$name.log)"; }
	cp /etc/resolv.conf "$dir/etc/resolv.conf"
	for f in /etc/apt/apt.conf.d/99*; do [ -f "$f" ] && cp "$f" "$dir/etc/apt/apt.conf.d/"; done
	printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
		>"$dir/etc/dpkg/dpkg.cfg.d/probing-nodoc"
	trap 'root_umount "$dir"' EXIT
	trap 'exit 1' INT TERM
	root_mount "$dir"
	echo "root $name: installing the build and test packages"
	root_sh "$dir" "apt-get update -qq" >>"$ROOTS/$name.log" 2>&1 ||
		die "apt-get update in root $name failed (log: $ROOTS/$name.log)"
	extra=$(extra_pythons "$dir")
	# shellcheck disable=SC2086
	root_sh "$dir" "apt-get install -y -q --no-install-recommends $(echo $ROOT_PKGS) $extra" \
		>>"$ROOTS/$name.log" 2>&1 ||
		{ tail -20 "$ROOTS/$name.log" >&2; die "apt-get install in root $name failed (log: $ROOTS/$name.log)"; }
	root_sh "$dir" "apt-get clean"
	root_umount "$dir"
	trap - EXIT INT TERM
	echo "root $name: $(root_pythons "$dir" | tr '\n' ' ')in $(($(date +%s) - t0)) s"
	date -u +%FT%TZ >"$dir/$STAMP"
}

for name in ${*:-$ROOT_NAMES}; do
	case " $ROOT_NAMES " in *" $name "*) ;; *) die "unknown root $name (known: $ROOT_NAMES)" ;; esac
	make_root "$name"
done

# sid also gets a free-threaded python (ft.sh): the version tests check
# that probing refuses it. Its source comes from the archive, which can
# drop a version: without it the matrix runs, less that combination.
case " ${*:-$ROOT_NAMES} " in *" sid "*)
	sh "$(dirname "$0")/ft.sh" ||
		echo "python-ft: not built; the matrix runs without its free-threaded combination" >&2
	;;
esac
