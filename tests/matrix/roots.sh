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

# The packages root $1 needs: ROOT_PKGS, and the -dev and -venv packages
# of every python3.X sid or trixie carries besides the default one (sid:
# 3.13 and 3.15 when present).
wanted_pkgs() {
	echo $ROOT_PKGS $(root_sh "$1" "apt-cache pkgnames python3. 2>/dev/null" |
		grep -E '^python3\.[0-9]+-(dev|venv)$' | sort -u)
}

# Those of them root $1 does not have installed.
missing_pkgs() {
	# shellcheck disable=SC2046
	root_sh "$1" "dpkg-query -W -f '\${Package} \${db:Status-Status}\n' $(wanted_pkgs "$1") 2>&1" |
		awk '/^dpkg-query: no packages found matching/ { print $NF; next }
			$2 != "installed" { print $1 }' | tr '\n' ' '
}

# Installs packages $3... into root $1 (name $2), mounted here.
install_pkgs() {
	dir=$1
	name=$2
	shift 2
	trap 'root_umount "$dir"' EXIT
	trap 'exit 1' INT TERM
	root_mount "$dir"
	root_sh "$dir" "apt-get update -qq" >>"$ROOTS/$name.log" 2>&1 ||
		die "apt-get update in root $name failed (log: $ROOTS/$name.log)"
	root_sh "$dir" "apt-get install -y -q --no-install-recommends $*" >>"$ROOTS/$name.log" 2>&1 ||
		{ tail -20 "$ROOTS/$name.log" >&2; die "apt-get install in root $name failed (log: $ROOTS/$name.log)"; }
	root_sh "$dir" "apt-get clean"
	root_umount "$dir"
	trap - EXIT INT TERM
}

# Root $1 trusts the certificate authorities the host added locally
# (/usr/local/share/ca-certificates: a TLS proxy in front of PyPI, say), so
# that pip in the root reaches what the host's pip reaches.
sync_ca() {
	ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1 || return 0
	diff -qr /usr/local/share/ca-certificates "$1/usr/local/share/ca-certificates" >/dev/null 2>&1 &&
		return 0
	rm -rf "$1/usr/local/share/ca-certificates"
	cp -r /usr/local/share/ca-certificates "$1/usr/local/share/ca-certificates"
	root_sh "$1" "update-ca-certificates" >>"$ROOTS/$(basename "$1").log" 2>&1 ||
		die "update-ca-certificates in $1 failed (log: $ROOTS/$(basename "$1").log)"
}

make_root() {
	name=$1
	dir=$ROOTS/$name
	if [ -f "$dir/$STAMP" ]; then
		# made before; packages the matrix has come to need since are added
		missing=$(missing_pkgs "$dir")
		if [ -n "$missing" ]; then
			t0=$(date +%s)
			echo "root $name: adding $missing"
			root_lock "$dir"
			# shellcheck disable=SC2086
			install_pkgs "$dir" "$name" $missing
			echo "root $name: added in $(($(date +%s) - t0)) s"
		fi
		sync_ca "$dir"
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
	echo "root $name: installing the build and test packages"
	# shellcheck disable=SC2046
	install_pkgs "$dir" "$name" $(wanted_pkgs "$dir")
	sync_ca "$dir"
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
