/* The per-user directory for the agent's files. Nothing in it is trusted
 * until checked: the directory with lstat and fstat (owner, type, mode),
 * each file opened without following links or blocking, then fstat'ed.
 * Both the agent (its own directory) and the CLI (a target's, maybe as
 * root for another user) use it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "rundir.h"

/* Whether the dir at path is a real directory of uid that no one else may
 * write into. */
static int
rundir_safe(const char *path, uid_t uid)
{
	struct stat sb;

	return lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode) &&
	    sb.st_uid == uid && (sb.st_mode & 022) == 0;
}

void
rundir_path(const char *root, uid_t uid, const char *xdg, char *buf, size_t len)
{
	char base[512];

	if (xdg != NULL && xdg[0] == '/') {
		snprintf(base, sizeof base, "%s%s", root, xdg);
		if (rundir_safe(base, uid)) {
			snprintf(buf, len, "%s/probing", base);
			return;
		}
	}
	snprintf(buf, len, "%s/tmp/probing-%u", root, (unsigned)uid);
}

/* Says what is wrong with sb for a directory of uid, or NULL. */
static const char *
rundir_wrong(const struct stat *sb, uid_t uid, char *buf, size_t len)
{
	if (S_ISLNK(sb->st_mode))
		return "it is a symbolic link";
	if (!S_ISDIR(sb->st_mode))
		return "it is not a directory";
	if (sb->st_uid != uid) {
		snprintf(buf, len, "it is owned by uid %u, not %u",
		    (unsigned)sb->st_uid, (unsigned)uid);
		return buf;
	}
	if (sb->st_mode & 022) {
		snprintf(buf, len, "it is group- or world-writable (mode %03o)",
		    (unsigned)(sb->st_mode & 0777));
		return buf;
	}
	return NULL;
}

int
rundir_open(const char *path, uid_t uid, int create, char **cause)
{
	struct stat l, f = { 0 };
	const char *why;
	char buf[128];
	int fd, made = 0;

	if (create) {
		if (mkdir(path, 0700) == 0)
			made = 1;
		else if (errno != EEXIST) {
			cause_set(cause, "cannot create %s: %s", path,
			    strerror(errno));
			return -1;
		}
	}
	if (lstat(path, &l) != 0) {
		cause_set(cause, "cannot use %s: %s", path, strerror(errno));
		return -1;
	}
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && S_ISDIR(l.st_mode)) {
		cause_set(cause, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	/* Made by root for another user (the CLI writing a target's
	 * settings): hand it over before anything goes in. */
	if (fd >= 0 && made && l.st_uid != uid &&
	    fchown(fd, uid, (gid_t)-1) == 0)
		fstat(fd, &l);
	if (fd >= 0 && fstat(fd, &f) != 0) {
		cause_set(cause, "cannot use %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	why = rundir_wrong(&l, uid, buf, sizeof buf);
	if (why == NULL && (f.st_dev != l.st_dev || f.st_ino != l.st_ino))
		why = "it was replaced while being checked";
	if (why == NULL)
		why = rundir_wrong(&f, uid, buf, sizeof buf);
	if (why != NULL) {
		cause_set(cause, "refusing %s: %s", path, why);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

int
rundir_open_file(int dir, const char *path_for_errors, const char *name,
    int flags, uid_t uid, int root_ok, char **cause)
{
	int base = O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, fd = -1;
	struct stat sb;

	if (flags != O_RDONLY)
		fd = openat(dir, name, flags | base | O_CREAT | O_EXCL, 0600);
	if (fd < 0 && (flags == O_RDONLY || errno == EEXIST))
		fd = openat(dir, name, flags | base);
	if (fd < 0) {
		int err = errno;

		cause_set(cause, "cannot open %s: %s", path_for_errors,
		    err == ELOOP ? "it is a symbolic link" : strerror(err));
		errno = err;
		return -1;
	}
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_nlink != 1 ||
	    !(sb.st_uid == uid || (root_ok && sb.st_uid == 0))) {
		cause_set(cause,
		    "refusing %s: not a regular file of uid %u with one link",
		    path_for_errors, (unsigned)uid);
		close(fd);
		errno = EPERM;
		return -1;
	}
	if ((sb.st_mode & 0777) != 0600 && sb.st_uid == geteuid())
		fchmod(fd, 0600);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

/* Reads the value of name from a NUL-separated environ file into buf. */
static int
rundir_environ(pid_t pid, const char *name, char *buf, size_t len)
{
	char path[64], env[65536];
	size_t n, i, nl = strlen(name);
	int fd;
	ssize_t r;

	snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	r = read(fd, env, sizeof env - 1);
	close(fd);
	if (r <= 0)
		return -1;
	n = (size_t)r;
	env[n] = '\0';
	for (i = 0; i < n; i += strlen(env + i) + 1) {
		if (strncmp(env + i, name, nl) == 0 && env[i + nl] == '=') {
			snprintf(buf, len, "%s", env + i + nl + 1);
			return 0;
		}
	}
	return -1;
}

int
rundir_pid_uid(pid_t pid, uid_t *uid)
{
	char path[64], line[256];
	unsigned ruid, euid;
	int found = 0;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (f == NULL)
		return -1;
	while (!found && fgets(line, sizeof line, f) != NULL)
		found = sscanf(line, "Uid: %u %u", &ruid, &euid) == 2;
	fclose(f);
	if (found)
		*uid = (uid_t)euid;
	return found ? 0 : -1;
}

int
rundir_of_pid(pid_t pid, char *buf, size_t len, uid_t *uid, char **cause)
{
	char root[64], xdg[512];

	if (rundir_pid_uid(pid, uid) != 0) {
		cause_set(cause, "no such process: %d", (int)pid);
		return -1;
	}
	snprintf(root, sizeof root, "/proc/%d/root", (int)pid);
	rundir_path(root, *uid,
	    rundir_environ(pid, "XDG_RUNTIME_DIR", xdg, sizeof xdg) == 0 ? xdg
									 : NULL,
	    buf, len);
	return 0;
}

void
rundir_clean(int dir)
{
	struct dirent *de;
	char ext[8];
	int pid, fd = dup(dir);
	DIR *d;

	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return;
	}
	rewinddir(d);
	while ((de = readdir(d)) != NULL) {
		if (sscanf(de->d_name, "%d.%7s", &pid, ext) != 2 || pid <= 0 ||
		    (strcmp(ext, "log") != 0 && strcmp(ext, "init") != 0))
			continue;
		if (kill(pid, 0) != 0 && errno == ESRCH)
			unlinkat(dir, de->d_name, 0);
	}
	closedir(d);
}
