/* inject.c - make a running process dlopen a shared object; find its python */

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>

#include "clock.h"
#include "log.h"
#include "injector.h"

#define INJECT_MAX_TRIES   60
#define INJECT_MAIN_TRIES  20    /* tries on the main thread before others */
#define INJECT_OTHER_TRIES 4     /* tries on each other thread in turn */
#define INJECT_STEP_MAX    20000 /* instructions stepped per try */
#define INJECT_STEP_MS     1000  /* and time: a step waits for a CPU */
#define INJECT_SAFE_MS     10000 /* for a safe point in all */
#define INJECT_RUN_US      1000
#define INJECT_STOP_MS     1000
#define INJECT_CALL_MS     5000
#define INJECT_RED_ZONE    128
#define INJECT_PAGE        4096ULL
#define INJECT_RTLD_NOW    0x2
#define INJECT_RTLD_GLOBAL 0x100

/* One injector_load call, run on its own tracer thread. */
struct inject_job {
	pid_t pid;
	const char *so_path;
	struct injector_stats *st;
	char **cause;
	int rc;
};

/* Where the functions to call live in the target. */
struct inject_funcs {
	uint64_t dlopen;         /* dlopen or __libc_dlopen_mode */
	uint64_t dlerror;        /* 0 when the target has none */
	uint64_t errno_location; /* __errno_location; 0 when none */
	uint64_t int3; /* address of a 0xCC byte in executable memory */
};

/*
 * Open the ELF file behind mapping m as the target sees it (through
 * /proc/PID/root, or map_files for a file deleted since) and find the
 * address it is loaded at. Returns 0 or -1.
 */
static int
inject_open_object(pid_t pid, const struct maps *maps,
    const struct maps_entry *m, struct elf_file *ef, uint64_t *base,
    char **cause)
{
	uint64_t vaddr, offset;
	char fn[PATH_MAX + 64];
	size_t i;

	snprintf(fn, sizeof fn, "/proc/%d/root%s", (int)pid, m->path);
	/* A file deleted since, or a path that means nothing through
	 * /proc/PID/root (a target in another mount namespace inside a
	 * chroot: maps shows the path from that namespace's root). */
	if (m->deleted || access(fn, R_OK) != 0)
		snprintf(fn, sizeof fn, "/proc/%d/map_files/%llx-%llx",
		    (int)pid, (unsigned long long)m->start,
		    (unsigned long long)m->end);
	if (elf_open(ef, fn, cause) < 0)
		return -1;
	if (elf_first_load(ef, &vaddr, &offset) < 0)
		goto bad;
	for (i = 0; i < maps->n; i++) {
		const struct maps_entry *o = &maps->v[i];

		if (strcmp(o->path, m->path) == 0 && o->inode == m->inode &&
		    o->offset == (offset & ~(INJECT_PAGE - 1))) {
			*base = o->start - (vaddr & ~(INJECT_PAGE - 1));
			return 0;
		}
	}
bad:
	cause_set(cause, "pid %d: cannot find the load address of %s", (int)pid,
	    m->path);
	elf_close(ef);
	return -1;
}

/*
 * Find the line key ("TracerPid:") in /proc/PID/status and copy its value
 * into text. Returns 0, or -1 when the process or the line is missing.
 */
static int
inject_status_field(pid_t pid, const char *key, char *text, size_t textlen)
{
	char fn[64], line[256];
	size_t klen = strlen(key);
	int rc = -1;
	FILE *f;

	snprintf(fn, sizeof fn, "/proc/%d/status", (int)pid);
	f = fopen(fn, "re");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL) {
		const char *p = line + klen;

		if (strncmp(line, key, klen) != 0)
			continue;
		while (isspace((unsigned char)*p))
			p++;
		snprintf(text, textlen, "%.*s", (int)strcspn(p, "\n"), p);
		rc = 0;
		break;
	}
	fclose(f);
	return rc;
}

int
injector_check(pid_t pid, char **cause)
{
	char state[64], tracer[64];

	if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH) ||
	    inject_status_field(pid, "State:", state, sizeof state) < 0) {
		cause_set(cause, "no such process: %d", (int)pid);
		return -1;
	}
	if (state[0] == 'Z' || state[0] == 'X') {
		cause_set(cause, "pid %d has exited", (int)pid);
		return -1;
	}
	if (injector_check_stopped(pid, cause) < 0)
		return -1;
	if (inject_status_field(pid, "TracerPid:", tracer, sizeof tracer) ==
		0 &&
	    strtol(tracer, NULL, 10) > 0) {
		cause_set(cause,
		    "pid %d is already traced by pid %ld (a debugger?)",
		    (int)pid, strtol(tracer, NULL, 10));
		return -1;
	}
	return 0;
}

int
injector_check_stopped(pid_t pid, char **cause)
{
	char state[64];

	if (inject_status_field(pid, "State:", state, sizeof state) == 0 &&
	    state[0] == 'T') {
		cause_set(cause,
		    "pid %d is stopped (state T): resume it with kill -CONT %d "
		    "first",
		    (int)pid, (int)pid);
		return -1;
	}
	return 0;
}

int
injector_maps_file(pid_t pid, const char *prefix, char *path, size_t len)
{
	struct maps maps;
	size_t i, n = strlen(prefix);
	int rc = 0;

	if (maps_read(pid, &maps, NULL) < 0)
		return -1;
	for (i = 0; i < maps.n && rc == 0; i++) {
		const char *b = strrchr(maps.v[i].path, '/');

		if (b != NULL && strncmp(b + 1, prefix, n) == 0) {
			snprintf(path, len, "%s", maps.v[i].path);
			rc = 1;
		}
	}
	maps_free(&maps);
	return rc;
}

/*
 * Find dlopen and dlerror in the target: libc's (glibc 2.34+, musl), else
 * libdl's, else glibc's private __libc_dlopen_mode. Returns 0 or -1.
 */
static int
inject_resolve(
    pid_t pid, const struct maps *maps, struct inject_funcs *fn, char **cause)
{
	const struct maps_entry *libc, *libdl;
	struct elf_file ef;
	uint64_t base, v;

	fn->dlopen = fn->dlerror = fn->errno_location = 0;
	libc = maps_first(maps, MAPS_LIBC);
	if (libc == NULL) {
		cause_set(cause,
		    "pid %d has no libc mapped (a static "
		    "binary?); cannot load code into it",
		    (int)pid);
		return -1;
	}
	if (inject_open_object(pid, maps, libc, &ef, &base, cause) < 0)
		return -1;
	if (elf_symbol(&ef, "__errno_location", &v) == 0)
		fn->errno_location = base + v;
	if (elf_symbol(&ef, "dlopen", &v) == 0) {
		fn->dlopen = base + v;
		if (elf_symbol(&ef, "dlerror", &v) == 0)
			fn->dlerror = base + v;
		elf_close(&ef);
		return 0;
	}
	if (elf_symbol(&ef, "__libc_dlopen_mode", &v) == 0)
		fn->dlopen = base + v;
	elf_close(&ef);
	libdl = maps_first(maps, MAPS_LIBDL);
	if (libdl != NULL &&
	    inject_open_object(pid, maps, libdl, &ef, &base, NULL) == 0) {
		if (elf_symbol(&ef, "dlopen", &v) == 0) {
			fn->dlopen = base + v;
			if (elf_symbol(&ef, "dlerror", &v) == 0)
				fn->dlerror = base + v;
		}
		elf_close(&ef);
	}
	if (fn->dlopen == 0) {
		cause_set(cause, "pid %d: cannot find dlopen in %s", (int)pid,
		    libc->path);
		return -1;
	}
	return 0;
}

/* Find a 0xCC byte in executable memory of the target. Returns 0 or -1. */
static int
inject_find_int3(
    pid_t pid, int memfd, const struct maps *maps, uint64_t *addr, char **cause)
{
	unsigned char buf[16384], *hit;
	uint64_t at, len;
	size_t i;

	for (i = 0; i < maps->n; i++) {
		const struct maps_entry *m = &maps->v[i];

		if (m->perms[2] != 'x' || strcmp(m->path, "[vsyscall]") == 0)
			continue;
		for (at = m->start; at < m->end; at += len) {
			len = m->end - at;
			if (len > sizeof buf)
				len = sizeof buf;
			if (ptrace_mem_read(memfd, at, buf, len) < 0)
				break;
			hit = memchr(buf, 0xcc, len);
			if (hit != NULL) {
				*addr = at + (uint64_t)(hit - buf);
				return 0;
			}
		}
	}
	cause_set(
	    cause, "pid %d: no int3 byte found in executable memory", (int)pid);
	return -1;
}

/* Open /proc/PID/mem. Returns the descriptor or -1 with *cause set. */
static int
inject_open_mem(pid_t pid, int flags, char **cause)
{
	char fn[64];
	int fd;

	snprintf(fn, sizeof fn, "/proc/%d/mem", (int)pid);
	fd = open(fn, flags | O_CLOEXEC);
	if (fd >= 0)
		return fd;
	if (errno == ENOENT)
		cause_set(cause, "no such process: %d", (int)pid);
	else if (errno == EACCES || errno == EPERM)
		cause_set(cause, INJECTOR_EPERM, (int)pid);
	else
		cause_set(cause, "cannot open %s: %s", fn, strerror(errno));
	return -1;
}

/* List the thread ids of pid, pid first. Returns the count (>= 1). */
static size_t
inject_threads(pid_t pid, pid_t *tids, size_t max)
{
	char fn[64];
	struct dirent *de;
	size_t n = 1;
	DIR *d;

	tids[0] = pid;
	snprintf(fn, sizeof fn, "/proc/%d/task", (int)pid);
	d = opendir(fn);
	if (d == NULL)
		return n;
	while (n < max && (de = readdir(d)) != NULL) {
		long tid = strtol(de->d_name, NULL, 10);

		if (tid > 0 && tid != pid)
			tids[n++] = (pid_t)tid;
	}
	closedir(d);
	return n;
}

/* Drop a cause set by a failure the caller recovers from. */
static void
inject_uncause(char **cause)
{
	if (cause != NULL) {
		free(*cause);
		*cause = NULL;
	}
}

/* Read a NUL-terminated string of the target into buf. */
static void
inject_read_string(int memfd, uint64_t addr, char *buf, size_t len)
{
	size_t got = 0;

	while (got + 1 < len) {
		uint64_t a = addr + got;
		size_t chunk = INJECT_PAGE - (a & (INJECT_PAGE - 1));

		if (chunk > len - 1 - got)
			chunk = len - 1 - got;
		if (ptrace_mem_read(memfd, a, buf + got, chunk) < 0)
			break;
		if (memchr(buf + got, '\0', chunk) != NULL)
			return;
		got += chunk;
	}
	buf[got] = '\0';
}

/* Say in st->how how thread t was brought to a safe point. */
static void
inject_describe(const struct ptrace_thread *t, const struct safety_result *res,
    struct injector_stats *st)
{
	long nr = (long)t->regs.orig_rax >= 0 ? (long)t->regs.orig_rax
					      : (long)t->regs.rax;

	st->tid = t->tid;
	st->steps = res->steps;
	if (res->steps == 0 && res->verdict == SAFETY_OUTSIDE)
		snprintf(st->how, sizeof st->how,
		    "thread %d: stopped outside libc and the loader",
		    (int)t->tid);
	else if (res->steps == 0)
		snprintf(st->how, sizeof st->how,
		    "thread %d: stopped in a waiting syscall (%ld)",
		    (int)t->tid, nr);
	else if (res->verdict == SAFETY_OUTSIDE)
		snprintf(st->how, sizeof st->how,
		    "thread %d: stepped out of %s in %d instructions",
		    (int)t->tid, res->what, res->steps);
	else
		snprintf(st->how, sizeof st->how,
		    "thread %d: stepped %d instructions in %s to a waiting "
		    "syscall (%ld)",
		    (int)t->tid, res->steps, res->what, nr);
}

/*
 * Stop a thread of pid at a safe point: the main thread first, then the
 * others in turn. A thread stopped inside libc or the loader is
 * single-stepped out; one that cannot be (a long run of libc code, a
 * libc lock wait) runs a moment before the next try. Returns 0 with t
 * stopped, or -1.
 */
static int
inject_stop_safe(pid_t pid, int memfd, const struct maps *maps,
    struct ptrace_thread *t, struct injector_stats *st, char **cause)
{
	pid_t tids[256], want;
	struct safety_result res;
	const char *why = "unknown";
	double deadline = clock_ms() + INJECT_SAFE_MS;
	size_t ntids;
	int i;

	ntids = inject_threads(pid, tids, sizeof tids / sizeof tids[0]);
	for (i = 0; i < INJECT_MAX_TRIES && clock_ms() < deadline; i++) {
		want = pid;
		if (i >= INJECT_MAIN_TRIES && ntids > 1)
			want = tids[1 +
			    ((size_t)(i - INJECT_MAIN_TRIES) /
				INJECT_OTHER_TRIES) %
				(ntids - 1)];
		if (t->seized && t->tid != want) {
			if (ptrace_stop(t, INJECT_STOP_MS, cause) < 0)
				return -1;
			ptrace_detach(t);
		}
		if (!t->seized &&
		    ptrace_seize(t, pid, want, memfd, cause) < 0) {
			if (want != pid && errno == ESRCH) {
				inject_uncause(cause);
				continue;
			}
			return -1;
		}
		if (ptrace_stop(t, INJECT_STOP_MS, cause) < 0) {
			/* Another thread that ended: go on with the rest. */
			if (want != pid && errno == ESRCH &&
			    kill(pid, 0) == 0) {
				inject_uncause(cause);
				t->seized = 0;
				continue;
			}
			return -1;
		}
		st->attempts++;
		if (safety_step_out(t, maps, INJECT_STEP_MAX, INJECT_STEP_MS,
			&res, cause) < 0)
			return -1;
		if (res.verdict == SAFETY_OUTSIDE ||
		    res.verdict == SAFETY_WAITING) {
			inject_describe(t, &res, st);
			return 0;
		}
		why = res.why;
		if (ptrace_resume(t, cause) < 0)
			return -1;
		usleep(INJECT_RUN_US);
	}
	if (ptrace_stop(t, INJECT_STOP_MS, NULL) == 0)
		ptrace_detach(t);
	cause_set(cause,
	    "pid %d: no thread reached a safe point in %d tries and %.1f s "
	    "(last: %s); try again",
	    (int)pid, i,
	    INJECT_SAFE_MS / 1000.0 - (deadline - clock_ms()) / 1000.0, why);
	return -1;
}

/*
 * Read the errno of the stopped thread t by calling __errno_location in it.
 * Returns 0 with *at and *value set, -1 with *cause set (the thread is left
 * stopped for ptrace_restore).
 */
static int
inject_errno_read(struct ptrace_thread *t, const struct inject_funcs *fn,
    uint64_t sp, uint64_t *at, int *value, char **cause)
{
	if (ptrace_call(t, fn->errno_location, NULL, 0, fn->int3, sp,
		INJECT_CALL_MS, at, cause) < 0)
		return -1;
	if (*at == 0 ||
	    ptrace_mem_read(t->memfd, *at, value, sizeof *value) < 0) {
		cause_set(cause, "pid %d: cannot read errno of thread %d",
		    (int)t->pid, (int)t->tid);
		return -1;
	}
	return 0;
}

/*
 * Call dlopen(so_path) in the stopped thread t with the path at path_at and
 * the frame below sp; on a NULL handle fetch dlerror() into the cause.
 * Returns 0 when the call ran (rc tells whether dlopen succeeded), -1 when
 * it did not return normally.
 */
static int
inject_call_dlopen(struct ptrace_thread *t, const struct inject_funcs *fn,
    const char *so_path, uint64_t path_at, uint64_t sp, int *ok, char **cause)
{
	uint64_t handle = 0, msg = 0, args[2];
	char err[1024];

	args[0] = path_at;
	args[1] = INJECT_RTLD_NOW | INJECT_RTLD_GLOBAL;
	*ok = 0;
	if (ptrace_call(t, fn->dlopen, args, 2, fn->int3, sp, INJECT_CALL_MS,
		&handle, cause) < 0)
		return -1;
	if (handle != 0) {
		*ok = 1;
		return 0;
	}
	err[0] = '\0';
	if (fn->dlerror != 0 &&
	    ptrace_call(t, fn->dlerror, NULL, 0, fn->int3, sp, INJECT_CALL_MS,
		&msg, NULL) == 0 &&
	    msg != 0)
		inject_read_string(t->memfd, msg, err, sizeof err);
	if (err[0] != '\0')
		cause_set(cause, "pid %d: dlopen %s failed: %s", (int)t->pid,
		    so_path, err);
	else
		cause_set(
		    cause, "pid %d: dlopen %s failed", (int)t->pid, so_path);
	return 0;
}

/* Do the work of injector_load on the calling (tracer) thread. */
static int
inject_load(
    pid_t pid, const char *so_path, struct injector_stats *st, char **cause)
{
	struct maps maps = { NULL, 0 };
	struct inject_funcs fn;
	struct ptrace_thread t;
	double t0 = clock_ms();
	uint64_t sp, path_at, errno_at = 0;
	size_t len;
	int memfd = -1, rc = -1, called = -1, ok = 0, saved_errno = 0;

	memset(&t, 0, sizeof t);
	len = so_path != NULL ? strlen(so_path) : 0;
	if (len == 0 || len >= PATH_MAX) {
		cause_set(cause, "pid %d: bad shared object path", (int)pid);
		goto out;
	}
	if (injector_check(pid, cause) < 0)
		goto out;
	if (maps_read(pid, &maps, cause) < 0)
		goto out;
	memfd = inject_open_mem(pid, O_RDWR, cause);
	if (memfd < 0)
		goto out;
	if (inject_resolve(pid, &maps, &fn, cause) < 0 ||
	    inject_find_int3(pid, memfd, &maps, &fn.int3, cause) < 0)
		goto out;
	if (inject_stop_safe(pid, memfd, &maps, &t, st, cause) < 0) {
		if (!t.seized && errno == EPERM) {
			/* Say why better when the process says more. */
			char *better = NULL;

			if (injector_check(pid, &better) < 0) {
				inject_uncause(cause);
				if (cause != NULL)
					*cause = better;
				else
					free(better);
			}
		}
		goto out;
	}
	if (ptrace_save(&t, cause) < 0)
		goto detach;

	/* The path goes below the red zone, the call's frame below it. */
	path_at = (t.regs.rsp - INJECT_RED_ZONE - (len + 1)) & ~(uint64_t)15;
	if (ptrace_mem_write(memfd, path_at, so_path, len + 1) < 0) {
		cause_set(cause, "pid %d: cannot write to its stack: %s",
		    (int)pid, strerror(errno));
		goto detach;
	}
	sp = path_at - 16;
	/* errno is the thread's: what dlopen and the constructors set in it
	 * must not reach the code the thread goes back to. */
	if (fn.errno_location != 0 &&
	    inject_errno_read(&t, &fn, sp, &errno_at, &saved_errno, cause) < 0)
		goto restore;
	called = inject_call_dlopen(&t, &fn, so_path, path_at, sp, &ok, cause);
	if (called == 0 && errno_at != 0) {
		if (ptrace_mem_write(memfd, errno_at, &saved_errno,
			sizeof saved_errno) < 0) {
			inject_uncause(cause);
			cause_set(cause,
			    "pid %d: cannot restore errno of thread %d: %s",
			    (int)pid, (int)t.tid, strerror(errno));
			called = -1;
		} else {
			st->errno_kept = 1;
		}
	}
restore:
	if (t.seized &&
	    ptrace_restore(&t, called == 0 && ok ? cause : NULL) < 0)
		goto detach;
	if (called == 0 && ok)
		rc = 0;
detach:
	ptrace_detach(&t);
out:
	st->stopped_ms = t.stopped_ms;
	if (memfd >= 0)
		close(memfd);
	maps_free(&maps);
	st->total_ms = clock_ms() - t0;
	return rc;
}

/* Thread body running one injection. */
static void *
inject_job_run(void *arg)
{
	struct inject_job *job = arg;

	/* Naps while waiting for stops last what they ask, not 50 us more. */
	prctl(PR_SET_TIMERSLACK, 1UL);
	/* Waits for the target's stops block instead of polling. */
	ptrace_tick_start();
	job->rc = inject_load(job->pid, job->so_path, job->st, job->cause);
	ptrace_tick_stop();
	return NULL;
}

/*
 * The work runs on a thread of its own with all signals blocked: the
 * kernel detaches a tracer thread's tracees when it ends, so a thread left
 * with an interrupt pending (one that never stopped, in uninterruptible
 * sleep) is released when the job returns instead of stopping later under
 * a tracer that no longer looks.
 */
int
injector_load(
    pid_t pid, const char *so_path, struct injector_stats *st, char **cause)
{
	struct injector_stats dummy;
	struct inject_job job;
	sigset_t all, old;
	pthread_t th;
	int started;

	if (cause != NULL)
		*cause = NULL;
	if (st == NULL)
		st = &dummy;
	memset(st, 0, sizeof *st);
	job.pid = pid;
	job.so_path = so_path;
	job.st = st;
	job.cause = cause;
	job.rc = -1;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	started = pthread_create(&th, NULL, inject_job_run, &job) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (started)
		pthread_join(th, NULL);
	else
		inject_job_run(&job);
	return job.rc;
}

/* Parse "3.11" after prefix at the start of base name b. */
static int
inject_parse_version(const char *b, const char *prefix, int *major, int *minor)
{
	size_t n = strlen(prefix);

	if (strncmp(b, prefix, n) != 0)
		return -1;
	if (sscanf(b + n, "%d.%d", major, minor) != 2 || *major < 2)
		return -1;
	return 0;
}

/* Return the base name of path. */
static const char *
inject_basename(const char *path)
{
	const char *b = strrchr(path, '/');

	return b != NULL ? b + 1 : path;
}

/*
 * Whether the runtime at addr (_PyRuntime) says it is a free-threaded
 * build: 3.13+ start it with _Py_DebugOffsets, the cookie "xdebugpy", the
 * version and the free_threaded flag (the same first 24 bytes in 3.13 to
 * 3.15). 0 when it publishes nothing (3.11, 3.12: no free-threaded build).
 */
static int
inject_free_threaded(int memfd, uint64_t addr)
{
	unsigned char head[24];
	uint64_t ft;

	if (ptrace_mem_read(memfd, addr, head, sizeof head) != 0 ||
	    memcmp(head, "xdebugpy", 8) != 0)
		return 0;
	memcpy(&ft, head + 16, sizeof ft);
	return ft != 0;
}

/*
 * Read Py_Version (3.11+) from the object behind mapping m. Returns 0 with
 * *hex set, -1 when the object has none; *has_py tells whether it holds
 * the Python runtime at all, *ft whether that is a free-threaded build.
 */
static int
inject_read_py_version(pid_t pid, int memfd, const struct maps *maps,
    const struct maps_entry *m, uint64_t *hex, int *has_py, int *ft)
{
	struct elf_file ef;
	uint64_t base, v;
	int rc = -1;

	if (inject_open_object(pid, maps, m, &ef, &base, NULL) < 0)
		return -1;
	if (elf_symbol(&ef, "Py_Initialize", &v) == 0)
		*has_py = 1;
	if (elf_symbol(&ef, "Py_Version", &v) == 0 &&
	    ptrace_mem_read(memfd, base + v, hex, sizeof *hex) == 0) {
		*has_py = 1;
		rc = 0;
	}
	if (elf_symbol(&ef, "_PyRuntime", &v) == 0)
		*ft = inject_free_threaded(memfd, base + v);
	elf_close(&ef);
	return rc;
}

int
injector_python_version(
    pid_t pid, int *major, int *minor, char *full, size_t fulllen, char **cause)
{
	struct maps maps = { NULL, 0 };
	const struct maps_entry *obj = NULL;
	char exe[PATH_MAX], fn[64], ver[32] = "";
	uint64_t hex = 0;
	unsigned level;
	int maj = 0, min = 0, named = 0, has_py = 0, ft = 0, memfd = -1;
	int rc = -1;
	ssize_t n;
	size_t i;

	if (cause != NULL)
		*cause = NULL;
	if (full != NULL && fulllen > 0)
		full[0] = '\0';
	if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH)) {
		cause_set(cause, "no such process: %d", (int)pid);
		return -1;
	}
	if (maps_read(pid, &maps, cause) < 0)
		return -1;
	for (i = 0; i < maps.n && obj == NULL; i++) {
		const char *b = inject_basename(maps.v[i].path);

		if (maps.v[i].path[0] == '/' &&
		    inject_parse_version(b, "libpython", &maj, &min) == 0) {
			obj = &maps.v[i];
			named = 1;
		}
	}
	if (obj == NULL) {
		snprintf(fn, sizeof fn, "/proc/%d/exe", (int)pid);
		n = readlink(fn, exe, sizeof exe - 1);
		if (n > 0) {
			exe[n] = '\0';
			if (n > 10 && strcmp(exe + n - 10, " (deleted)") == 0)
				exe[n - 10] = '\0';
			if (inject_parse_version(inject_basename(exe), "python",
				&maj, &min) == 0)
				named = 1;
			for (i = 0; i < maps.n && obj == NULL; i++) {
				if (strcmp(maps.v[i].path, exe) == 0)
					obj = &maps.v[i];
			}
		}
	}
	memfd = inject_open_mem(pid, O_RDONLY, NULL);
	if (obj != NULL && memfd >= 0 &&
	    inject_read_py_version(
		pid, memfd, &maps, obj, &hex, &has_py, &ft) == 0) {
		maj = (int)((hex >> 24) & 0xff);
		min = (int)((hex >> 16) & 0xff);
		level = (unsigned)((hex >> 4) & 0xf);
		if (level == 0xf)
			snprintf(ver, sizeof ver, "%d.%d.%u", maj, min,
			    (unsigned)((hex >> 8) & 0xff));
		else
			snprintf(ver, sizeof ver, "%d.%d.%u%s%u", maj, min,
			    (unsigned)((hex >> 8) & 0xff),
			    level == 0xa       ? "a"
				: level == 0xb ? "b"
					       : "rc",
			    (unsigned)(hex & 0xf));
	} else if (!named) {
		if (has_py)
			cause_set(cause,
			    "pid %d runs python but its version "
			    "could not be determined",
			    (int)pid);
		else
			cause_set(
			    cause, "pid %d is not a python process", (int)pid);
		goto out;
	}
	if (ver[0] == '\0')
		snprintf(ver, sizeof ver, "%d.%d", maj, min);
	/* The agent reads the interpreter's structures as a build with the
	 * GIL lays them out: a free-threaded one never gets it. */
	if (ft) {
		cause_set(cause,
		    "pid %d runs python %st, a free-threaded build, which "
		    "probing does not support",
		    (int)pid, ver);
		goto out;
	}
	if (full != NULL && fulllen > 0 && hex != 0)
		snprintf(full, fulllen, "%s", ver);
	*major = maj;
	*minor = min;
	rc = 0;
out:
	if (memfd >= 0)
		close(memfd);
	maps_free(&maps);
	return rc;
}
