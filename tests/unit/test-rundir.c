/* Unit tests for shared/rundir.c: the per-user directory is refused when
 * it is a symbolic link, owned by another uid, or group/world-writable,
 * and files in it are never followed through links or FIFOs. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rundir.h"
#include "unit.h"

/* Opens path as uid's directory; returns whether it was refused with a
 * cause containing want. */
static int
refused(const char *path, uid_t uid, int create, const char *want)
{
	char *cause = NULL;
	int fd = rundir_open(path, uid, create, &cause), ok;

	if (fd >= 0) {
		close(fd);
		printf("# %s was accepted\n", path);
		return 0;
	}
	ok = cause != NULL && strstr(cause, want) != NULL;
	if (!ok)
		printf("# %s -> %s\n", path, cause ? cause : "(null)");
	free(cause);
	return ok;
}

int
main(void)
{
	char base[] = "/tmp/probing-unit-XXXXXX", p[256], q[256], *cause;
	uid_t me = geteuid();
	struct stat sb;
	int fd, dfd;

	if (mkdtemp(base) == NULL)
		return 1;

	/* created fresh: 0700, ours */
	snprintf(p, sizeof p, "%s/good", base);
	fd = rundir_open(p, me, 1, NULL);
	CHECK(fd >= 0, "a fresh directory is created and accepted");
	CHECK(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0700,
	    "the directory is made 0700");
	dfd = fd;

	/* a symbolic link to a good directory is refused */
	snprintf(q, sizeof q, "%s/link", base);
	CHECK(symlink(p, q) == 0, "symlink made");
	CHECK(refused(q, me, 1, "symbolic link"), "a symlink is refused");

	/* group- or world-writable */
	snprintf(q, sizeof q, "%s/open", base);
	CHECK(mkdir(q, 0700) == 0 && chmod(q, 0777) == 0, "open dir made");
	CHECK(refused(q, me, 1, "world-writable"),
	    "a world-writable directory is refused");
	CHECK(chmod(q, 0770) == 0, "chmod");
	CHECK(refused(q, me, 1, "group- or world-writable"),
	    "a group-writable directory is refused");

	/* owned by someone else */
	snprintf(q, sizeof q, "%s/theirs", base);
	CHECK(mkdir(q, 0700) == 0, "their dir made");
	if (me == 0) {
		CHECK(chown(q, 65534, 65534) == 0, "chown");
		CHECK(refused(q, 0, 1, "owned by uid 65534"),
		    "a directory of another uid is refused");
	} else
		CHECK(refused(q, me + 1, 0, "owned by uid"),
		    "a directory of another uid is refused");

	/* not a directory */
	snprintf(q, sizeof q, "%s/file", base);
	fd = open(q, O_WRONLY | O_CREAT, 0600);
	close(fd);
	CHECK(refused(q, me, 1, "not a directory"), "a file is refused");

	/* files in it: a planted symlink and a FIFO are refused at once */
	CHECK(symlinkat("/etc/passwd", dfd, "1.log") == 0, "planted link");
	cause = NULL;
	fd = rundir_open_file(
	    dfd, "1.log", "1.log", O_WRONLY | O_APPEND, me, 0, &cause);
	CHECK(fd < 0 && cause && strstr(cause, "symbolic link"),
	    "a log planted as a symlink is refused");
	free(cause);
	CHECK(mkfifoat(dfd, "2.init", 0600) == 0, "fifo made");
	cause = NULL;
	fd = rundir_open_file(dfd, "2.init", "2.init", O_RDONLY, me, 1, &cause);
	CHECK(fd < 0 && cause && strstr(cause, "not a regular file"),
	    "a FIFO init file is refused without blocking");
	free(cause);
	fd = rundir_open_file(
	    dfd, "3.log", "3.log", O_WRONLY | O_APPEND, me, 0, NULL);
	CHECK(fd >= 0 && fstat(fd, &sb) == 0 && (sb.st_mode & 0777) == 0600,
	    "a new file is made 0600");
	if (fd >= 0)
		close(fd);

	/* the path: XDG only when it is a safe directory of the user */
	rundir_path("", me, NULL, q, sizeof q);
	snprintf(p, sizeof p, "/tmp/probing-%u", (unsigned)me);
	CHECK(strcmp(q, p) == 0, "without XDG_RUNTIME_DIR: /tmp/probing-UID");
	rundir_path("", me, base, q, sizeof q);
	snprintf(p, sizeof p, "%s/probing", base);
	CHECK(strcmp(q, p) == 0, "a safe XDG_RUNTIME_DIR is used");
	snprintf(p, sizeof p, "%s/open", base);
	rundir_path("", me, p, q, sizeof q);
	CHECK(strncmp(q, "/tmp/probing-", 13) == 0,
	    "an unsafe XDG_RUNTIME_DIR is not used");

	close(dfd);
	snprintf(p, sizeof p, "rm -rf '%s'", base);
	if (system(p) != 0)
		printf("# cannot remove %s\n", base);
	return unit_summary();
}
