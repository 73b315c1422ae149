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
  python3-pexpect python3-torch tmux curl strace iproute2 procps psmisc
  ca-certificates"

die() { echo "probing-matrix: $*" >&2; exit 1; }

# Mounts what programs in root $1 need from the host: /proc (torch reads
# /proc/cpuinfo; the injector reads /proc/PID), /sys, /dev with /dev/pts and
# /dev/shm (the tests drive ptys; DataLoader uses shared memory). /tmp stays
# the root's own: the tests need no file shared with the host, since pids
# and abstract sockets already are (a chroot changes neither namespace).
root_mount() {
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

# Undoes root_mount; quiet when nothing is mounted.
root_umount() {
	for m in dev sys proc; do
		mountpoint -q "$1/$m" && umount -R "$1/$m" 2>/dev/null ||
			{ mountpoint -q "$1/$m" && umount -lR "$1/$m"; }
	done
	return 0
}

# Runs a shell command line inside root $1 (mounted by the caller).
root_sh() {
	r=$1
	shift
	chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 TERM=${TERM:-xterm} DEBIAN_FRONTEND=noninteractive \
		/bin/sh -c "$*"
}

# The python3.X interpreters root $1 has, newest last, one per line.
root_pythons() {
	ls "$1"/usr/bin/ 2>/dev/null | grep -E '^python3\.[0-9]+$' | sort -t. -k2 -n
}
