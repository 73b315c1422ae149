/* inj-test.h - helpers the injector's C tests share: a tap-like ok(),
 * children that are killed at the end, pipes, waits with timeouts, and the
 * test payload built from tests/workloads. Each test program includes it
 * once; what one program does not use is marked unused. */
#ifndef PROBING_INJ_TEST_H
#define PROBING_INJ_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "../../injector/injector.h"

#define INJ_TEST __attribute__((unused)) static

#define PYTHON       "/usr/bin/python3"
#define MAX_CHILDREN 32

INJ_TEST int passed, failed;
INJ_TEST char tmpdir[64];
INJ_TEST char payload[1024];
INJ_TEST char embed_host[1024];
INJ_TEST pid_t children[MAX_CHILDREN];

INJ_TEST void ok(int cond, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Print an ok/not ok line and count it. */
INJ_TEST void
ok(int cond, const char *fmt, ...)
{
	va_list ap;

	printf("%s - ", cond ? "ok" : "not ok");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (cond)
		passed++;
	else
		failed++;
}

/* Monotonic milliseconds. */
INJ_TEST double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Sleep ms milliseconds (only to pace loops, never to wait for state). */
INJ_TEST void
nap_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Remember a child to kill at the end. */
INJ_TEST void
track(pid_t pid)
{
	int i;

	for (i = 0; i < MAX_CHILDREN; i++) {
		if (children[i] == 0) {
			children[i] = pid;
			return;
		}
	}
}

/* Kill and reap a child; a child already gone is fine. */
INJ_TEST void
reap(pid_t pid)
{
	int i;

	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR)
		;
	for (i = 0; i < MAX_CHILDREN; i++) {
		if (children[i] == pid)
			children[i] = 0;
	}
}

/* Whether pid is alive and not a zombie. */
INJ_TEST int
alive(pid_t pid)
{
	char fn[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(fn, sizeof fn, "/proc/%d/stat", (int)pid);
	fd = open(fn, O_RDONLY);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p != NULL && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* Read one line from fd within timeout_ms; returns its length or -1. */
INJ_TEST int
read_line(int fd, char *buf, size_t len, int timeout_ms)
{
	double deadline = now_ms() + timeout_ms;
	size_t got = 0;

	while (got + 1 < len) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		int left = (int)(deadline - now_ms());
		ssize_t n;

		if (left <= 0 || poll(&pfd, 1, left) <= 0)
			return -1;
		n = read(fd, buf + got, 1);
		if (n <= 0)
			return -1;
		if (buf[got] == '\n')
			break;
		got++;
	}
	buf[got] = '\0';
	return (int)got;
}

/* Poll until pid sits in syscall nr (per /proc/PID/syscall). */
INJ_TEST int
wait_syscall(pid_t pid, long nr, int timeout_ms)
{
	double deadline = now_ms() + timeout_ms;
	char fn[64], buf[64];

	snprintf(fn, sizeof fn, "/proc/%d/syscall", (int)pid);
	while (now_ms() < deadline) {
		int fd = open(fn, O_RDONLY);
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;

		if (fd >= 0)
			close(fd);
		if (n > 0) {
			buf[n] = '\0';
			if (strtol(buf, NULL, 10) == nr && buf[0] != 'r')
				return 0;
		}
		nap_ms(5);
	}
	return -1;
}

/* Poll until file fn contains text. */
INJ_TEST int
wait_file(const char *fn, const char *text, int timeout_ms)
{
	double deadline = now_ms() + timeout_ms;
	char buf[4096];

	while (now_ms() < deadline) {
		int fd = open(fn, O_RDONLY);
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;

		if (fd >= 0)
			close(fd);
		if (n > 0) {
			buf[n] = '\0';
			if (strstr(buf, text) != NULL)
				return 0;
		}
		nap_ms(5);
	}
	return -1;
}

/*
 * Start argv with the write end of a report pipe on fd 3, optionally the
 * read end of an input pipe on fd 4, and env ("K=V", NULL-ended) added.
 * Returns the pid; *report gets the read end of the report pipe.
 */
INJ_TEST pid_t
spawn(char *const argv[], const char *const env[], int *report, int *input)
{
	int rp[2], ip[2] = { -1, -1 }, i;
	pid_t pid;

	if (pipe2(rp, O_CLOEXEC) < 0 ||
	    (input != NULL && pipe2(ip, O_CLOEXEC) < 0)) {
		perror("pipe");
		exit(2);
	}
	pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(2);
	}
	if (pid == 0) {
		dup2(rp[1], 3);
		if (input != NULL)
			dup2(ip[0], 4);
		for (i = 0; env != NULL && env[i] != NULL; i++)
			putenv((char *)env[i]);
		execv(argv[0], argv);
		_exit(127);
	}
	track(pid);
	close(rp[1]);
	*report = rp[0];
	if (input != NULL) {
		close(ip[0]);
		*input = ip[1];
	}
	return pid;
}

/* Start a python -c script with fd 3 as its report pipe. */
INJ_TEST pid_t
spawn_python(const char *script, const char *const env[], int *report)
{
	char *argv[] = { (char *)PYTHON, (char *)"-c", (char *)script, NULL };

	return spawn(argv, env, report, NULL);
}

/* Copy the payload to a fresh name so its constructor runs again. */
INJ_TEST void
payload_copy(const char *name, char *out, size_t outlen)
{
	char buf[65536];
	int in, o;
	ssize_t n;

	snprintf(out, outlen, "%s/%s", tmpdir, name);
	in = open(payload, O_RDONLY);
	o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0755);
	if (in < 0 || o < 0) {
		perror("payload copy");
		exit(2);
	}
	while ((n = read(in, buf, sizeof buf)) > 0) {
		if (write(o, buf, (size_t)n) != n) {
			perror("payload copy");
			exit(2);
		}
	}
	close(in);
	close(o);
}

/*
 * Build tests/workloads/WHAT.c into the temporary directory as WHAT+suffix
 * with cc PRE -o OUT SRC POST, unless $ENV names a ready one or one lies
 * next to this program.
 */
INJ_TEST int
build(const char *what, const char *env, const char *suffix, char *out,
    size_t outlen, const char *pre, const char *post)
{
	char src[640], cmd[4096], dir[512], *slash;
	const char *given = getenv(env);
	ssize_t n;

	if (given != NULL && given[0] != '\0') {
		snprintf(out, outlen, "%s", given);
		return 0;
	}
	/* The Makefile builds the workloads next to the test program. */
	n = readlink("/proc/self/exe", dir, sizeof dir - 1);
	if (n > 0) {
		dir[n] = '\0';
		slash = strrchr(dir, '/');
		if (slash != NULL) {
			*slash = '\0';
			snprintf(out, outlen, "%s/%s%s", dir, what, suffix);
			if (access(out, R_OK) == 0)
				return 0;
		}
	}
	snprintf(dir, sizeof dir, "%s", __FILE__);
	slash = strrchr(dir, '/');
	if (slash != NULL)
		*slash = '\0';
	else
		snprintf(dir, sizeof dir, ".");
	snprintf(src, sizeof src, "%s/../workloads/%s.c", dir, what);
	if (access(src, R_OK) != 0)
		snprintf(src, sizeof src, "tests/workloads/%s.c", what);
	snprintf(out, outlen, "%s/%s%s", tmpdir, what, suffix);
	snprintf(cmd, sizeof cmd, "cc %s -o '%s' '%s' %s", pre, out, src, post);
	return system(cmd) == 0 ? 0 : -1;
}

/* Remove the temporary directory and what is in it. */
INJ_TEST void
cleanup(void)
{
	char cmd[128];
	int i;

	for (i = 0; i < MAX_CHILDREN; i++)
		reap(children[i]);
	if (tmpdir[0] != '\0') {
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			fprintf(stderr, "# cannot remove %s\n", tmpdir);
	}
}

#endif
