/* The interpreter's own way in (PEP 768, Python 3.14+): ask the target to
 * load the agent itself at its next safe point, by running
 * `sys.remote_exec(pid, script)` in a Python of the same version here. The
 * target's main thread runs the script between two bytecodes, holding the
 * GIL and no libc lock, so no ptrace stop is needed. It cannot happen while
 * that thread is wedged in C code: the caller waits a little and falls
 * back to the ptrace call (cmd-inject.c).
 *
 * The script never raises and never prints (the target would report an
 * error on its stderr): it removes itself, then loads the agent with
 * ctypes. A script that runs late, after a fallback loaded the agent, loads
 * the same file again, which dlopen makes a no-op. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "xmalloc.h"
#include "tui.h"

/* Finds a python<major>.<minor> we can run: the target's own executable
 * when it sees our file system, else one on PATH; 0 or -1 with *cause. */
static int
remote_exec_python(
    pid_t pid, int major, int minor, char *out, size_t len, char **cause)
{
	char link[64], exe[PATH_MAX], want[32], *dirs, *dir, *save = NULL;
	const char *path = getenv("PATH"), *base;
	struct stat a, b;
	ssize_t n;

	snprintf(want, sizeof want, "python%d.%d", major, minor);
	snprintf(link, sizeof link, "/proc/%d/exe", (int)pid);
	n = readlink(link, exe, sizeof exe - 1);
	snprintf(link, sizeof link, "/proc/%d/root", (int)pid);
	if (n > 0 && stat(link, &a) == 0 && stat("/", &b) == 0 &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
		exe[n] = '\0';
		base = strrchr(exe, '/');
		base = base ? base + 1 : exe;
		if (strcmp(base, want) == 0 && access(exe, X_OK) == 0) {
			snprintf(out, len, "%s", exe);
			return 0;
		}
	}
	dirs = xstrdup(path ? path : "/usr/local/bin:/usr/bin:/bin");
	for (dir = strtok_r(dirs, ":", &save); dir != NULL;
	     dir = strtok_r(NULL, ":", &save)) {
		snprintf(out, len, "%s/%s", *dir ? dir : ".", want);
		if (access(out, X_OK) == 0) {
			free(dirs);
			return 0;
		}
	}
	free(dirs);
	cause_set(cause, "no %s here to call sys.remote_exec with", want);
	return -1;
}

/* Writes the script the target runs into its /tmp, readable by its user;
 * inside gets the script's path as the target sees it. */
static int
remote_exec_script(
    pid_t pid, const char *agent, char *inside, size_t len, char **cause)
{
	char path[PATH_MAX], status[64], line[256];
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;
	FILE *f;
	int fd;

	snprintf(status, sizeof status, "/proc/%d/status", (int)pid);
	if ((f = fopen(status, "re")) != NULL) {
		while (fgets(line, sizeof line, f) != NULL) {
			unsigned long v;

			if (sscanf(line, "Uid: %*u %lu", &v) == 1)
				uid = (uid_t)v;
			else if (sscanf(line, "Gid: %*u %lu", &v) == 1)
				gid = (gid_t)v;
		}
		fclose(f);
	}
	snprintf(inside, len, "/tmp/probing-%d.remote.py", (int)pid);
	snprintf(path, sizeof path, "/proc/%d/root%s", (int)pid, inside);
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
		cause_set(cause, "cannot write %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (geteuid() == 0 && uid != (uid_t)-1 && fchown(fd, uid, gid) != 0) {
		cause_set(cause, "cannot give %s to uid %u: %s", path,
		    (unsigned)uid, strerror(errno));
		fclose(f);
		unlink(path);
		return -1;
	}
	fprintf(f,
	    "# probing: loads its agent (PEP 768, from `probing inject`)\n"
	    "try:\n"
	    "    import os\n"
	    "    os.unlink(%s%s%s)\n"
	    "except BaseException:\n"
	    "    pass\n"
	    "try:\n"
	    "    import ctypes\n"
	    "    ctypes.CDLL(%s%s%s)\n"
	    "except BaseException:\n"
	    "    pass\n",
	    "'", inside, "'", "'", agent, "'");
	if (fclose(f) != 0) {
		cause_set(cause, "cannot write %s: %s", path, strerror(errno));
		unlink(path);
		return -1;
	}
	return 0;
}

int
remote_exec_load(
    pid_t pid, int major, int minor, const char *agent, char **cause)
{
	char python[PATH_MAX], script[128], code[256], err[512] = "";
	int pfd[2], status;
	size_t got = 0;
	ssize_t n;
	pid_t child;

	if (major < 3 || (major == 3 && minor < 14)) {
		cause_set(cause, "python %d.%d has no sys.remote_exec (3.14+)",
		    major, minor);
		return -1;
	}
	if (strchr(agent, '\'') != NULL || strchr(agent, '\\') != NULL) {
		cause_set(cause, "the agent's path %s needs quoting", agent);
		return -1;
	}
	if (remote_exec_python(
		pid, major, minor, python, sizeof python, cause) != 0 ||
	    remote_exec_script(pid, agent, script, sizeof script, cause) != 0)
		return -1;
	snprintf(code, sizeof code, "import sys; sys.remote_exec(%d, '%s')",
	    (int)pid, script);
	if (pipe2(pfd, O_CLOEXEC) != 0) {
		cause_set(cause, "pipe: %s", strerror(errno));
		return -1;
	}
	child = fork();
	if (child < 0) {
		cause_set(cause, "fork: %s", strerror(errno));
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	if (child == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, 0);
		dup2(pfd[1], 1);
		dup2(pfd[1], 2);
		execl(python, python, "-I", "-c", code, (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	while ((n = read(pfd[0], err + got, sizeof err - 1 - got)) > 0)
		got += (size_t)n;
	close(pfd[0]);
	err[got] = '\0';
	while (waitpid(child, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	/* The exception's last line says why (permission, disabled, ...). */
	while (got > 0 && err[got - 1] == '\n')
		err[--got] = '\0';
	cause_set(cause, "%s -c 'sys.remote_exec(...)' failed: %s", python,
	    strrchr(err, '\n') ? strrchr(err, '\n') + 1
			       : (err[0] ? err : "no output"));
	snprintf(code, sizeof code, "/proc/%d/root%s", (int)pid, script);
	unlink(code);
	return -1;
}
