# Shared by the matrix scripts: where the roots are, and how to enter one.
# Sourced, not run. A root is usable only when its stamp file exists; the
# stamp is written last, so a root cut short by a crash or a kill is rebuilt.

ROOTS=${PROBING_ROOTS:-/var/cache/probing-roots}
MIRROR=${PROBING_MIRROR:-http://deb.debian.org/debian}
STAMP=.probing-root-ok

# The roots the matrix knows: name, Debian suite.
ROOT_NAMES="trixie sid"

# Packages every root gets: what building probing and running its
# end-to-end suite needs (the same tools `make deps` installs on the host).
ROOT_PKGS="gcc make pkg-config libevent-dev libsqlite3-dev libjansson-dev
  libunwind-dev libncurses-dev libedit-dev xxd python3-dev python3-pytest
  python3-pexpect python3-torch python3-venv promtool tmux curl strace
  iproute2 procps psmisc ca-certificates"

die() { echo "probing-matrix: $*" >&2; exit 1; }

# Takes root $1's lock (held until root_umount or exit): two matrix, bench,
# roots or install-root runs on one root would replace each other's build
# and unmount /proc under each other.
root_lock() {
	[ "${ROOT_LOCKED:-}" = "$1" ] && return 0
	mkdir -p "$(dirname "$1")"
	exec 9>"$1.lock"
	flock -w "${ROOT_LOCK_WAIT:-3600}" 9 || die "$1 is in use by another run (lock $1.lock)"
	ROOT_LOCKED=$1
}

# Mounts what programs in root $1 need from the host: /proc (torch reads
# /proc/cpuinfo; the injector reads /proc/PID), /sys, /dev with /dev/pts and
# /dev/shm (the tests drive ptys; DataLoader uses shared memory). /tmp stays
# the root's own: the tests need no file shared with the host, since pids
# and abstract sockets already are (a chroot changes neither namespace).
root_mount() {
	root_lock "$1"
	# The root on a mount of its own, so that / in it is a mount point
	# (unshare -m --propagation and ip netns change /'s propagation).
	mountpoint -q "$1" || mount --bind "$1" "$1" || die "cannot bind-mount $1 on itself"
	for m in proc sys dev; do
		mountpoint -q "$1/$m" && continue
		mkdir -p "$1/$m"
		case $m in
		proc) mount -t proc proc "$1/proc" ;;
		sys) mount --rbind /sys "$1/sys" && mount --make-rslave "$1/sys" ;;
		dev) mount --rbind /dev "$1/dev" && mount --make-rslave "$1/dev" ;;
		esac || die "cannot mount /$m in $1"
	done
}

# Undoes root_mount and drops the lock; does nothing to a root this run
# has not locked (another run's mounts).
root_umount() {
	[ "${ROOT_LOCKED:-}" = "$1" ] || return 0
	if mountpoint -q "$1"; then
		umount -R "$1" 2>/dev/null || umount -lR "$1"
	fi
	exec 9>&-
	ROOT_LOCKED=
	return 0
}

# The python3.X of root $1 that have their -dev package, as /usr/bin paths.
root_dev_pythons() {
	root_pythons "$1" | while read -r p; do
		[ -f "$1/usr/include/$p/Python.h" ] && echo "/usr/bin/$p"
	done | tr '\n' ' '
}

# Copies source tree $2 into root $1 (mounted) at /usr/src/probing and
# builds it there with an agent for each python3.X: the tracked and
# untracked-but-not-ignored files, what a clone would have plus the work in
# progress, never the host's build outputs.
root_build() {
	pythons=$(root_dev_pythons "$1")
	[ -n "$pythons" ] || die "no python3.X with its -dev package in $1"
	rm -rf "$1/usr/src/probing"
	mkdir -p "$1/usr/src/probing"
	(cd "$2" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) |
		tar -C "$1/usr/src/probing" -xf -
	root_sh "$1" "cd /usr/src/probing && make -s -j2 PYTHONS='$pythons' >/tmp/probing-build.log 2>&1" ||
		{ tail -30 "$1/tmp/probing-build.log" >&2; die "building probing in $1 failed (log: $1/tmp/probing-build.log)"; }
}

# Installs what root_build built into root $1's /usr/local and each
# python3.X's site (the .pth that PROBING=1 goes through).
root_install() {
	root_sh "$1" "cd /usr/src/probing && make -s install PREFIX=/usr/local PYTHONS='$(root_dev_pythons "$1")' >>/tmp/probing-build.log 2>&1" ||
		{ tail -30 "$1/tmp/probing-build.log" >&2; die "installing probing in $1 failed (log: $1/tmp/probing-build.log)"; }
}

# Removes what root_install put into the Pythons' sites, so that the tests
# see the build tree only, as on the host.
root_uninstall_site() {
	for p in $(root_pythons "$1"); do
		rm -rf "$1/usr/local/lib/$p/dist-packages/probing" "$1/usr/local/lib/$p/dist-packages/probing.pth"
	done
}

# Runs a shell command line inside root $1 (mounted by the caller).
root_sh() {
	r=$1
	shift
	chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 TERM=${TERM:-xterm} DEBIAN_FRONTEND=noninteractive \
		/bin/sh -c "$*" 9>&-
}

# The python3.X interpreters root $1 has, newest last, one per line.
root_pythons() {
	ls "$1"/usr/bin/ 2>/dev/null | grep -E '^python3\.[0-9]+$' | sort -t. -k2 -n
}
