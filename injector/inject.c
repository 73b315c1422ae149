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

#include "injector.h"

#define INJECT_MAX_TRIES   200
#define INJECT_MAIN_TRIES  100 /* tries on the main thread before others */
#define INJECT_OTHER_TRIES 10  /* tries on each other thread in turn */
#define INJECT_RUN_US      1000
#define INJECT_STOP_MS     1000
#define INJECT_CALL_MS     5000
#define INJECT_RED_ZONE    128
#define INJECT_PAGE        4096ULL
#define INJECT_RTLD_NOW    0x2
#define INJECT_RTLD_GLOBAL 0x100
#define INJECT_EPERM                                                      \
	"cannot attach to pid %d: operation not permitted (try as root, " \
	"grant CAP_SYS_PTRACE, or set kernel.yama.ptrace_scope=0)"

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
	uint64_t dlopen;  /* dlopen or __libc_dlopen_mode */
	uint64_t dlerror; /* 0 when the target has none */
	uint64_t int3;    /* address of a 0xCC byte in executable memory */
};

/* Replace *cause (when cause is not NULL) by a formatted message. */
void
inject_cause(char **cause, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	if (cause == NULL)
		return;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	free(*cause);
	*cause = msg;
}

/* Monotonic clock in milliseconds. */
double
inject_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Classify a mapped file by its base name. */
static enum inject_map_kind
inject_maps_kind(const char *path)
{
	const char *b = strrchr(path, '/');

	b = b != NULL ? b + 1 : path;
	if (strncmp(b, "libc.so", 7) == 0 || strncmp(b, "ld-musl-", 8) == 0 ||
	    (strncmp(b, "libc-", 5) == 0 && strstr(b, ".so") != NULL))
		return INJECT_MAP_LIBC;
	if (strncmp(b, "ld-", 3) == 0 && strstr(b, ".so") != NULL)
		return INJECT_MAP_LDSO;
	if (strncmp(b, "libdl.so", 8) == 0 ||
	    (strncmp(b, "libdl-", 6) == 0 && strstr(b, ".so") != NULL))
		return INJECT_MAP_LIBDL;
	return INJECT_MAP_OTHER;
}

/* Free a mapping list; an empty one is a no-op. */
void
inject_maps_free(struct inject_maps *maps)
{
	size_t i;

	for (i = 0; i < maps->n; i++)
		free(maps->v[i].path);
	free(maps->v);
	maps->v = NULL;
	maps->n = 0;
}

/* Read /proc/PID/maps into maps. Returns 0 or -1 with *cause set. */
int
inject_maps_read(pid_t pid, struct inject_maps *maps, char **cause)
{
	char fn[64], *line = NULL, *p;
	struct inject_map *m, *v;
	size_t cap = 0, alloc = 0;
	unsigned long long start, end, off, ino;
	unsigned dmaj, dmin;
	int n, len;
	FILE *f;

	maps->v = NULL;
	maps->n = 0;
	snprintf(fn, sizeof fn, "/proc/%d/maps", (int)pid);
	f = fopen(fn, "re");
	if (f == NULL) {
		if (errno == ENOENT)
			inject_cause(cause, "no such process: %d", (int)pid);
		else if (errno == EACCES || errno == EPERM)
			inject_cause(cause, INJECT_EPERM, (int)pid);
		else
			inject_cause(
			    cause, "cannot read %s: %s", fn, strerror(errno));
		return -1;
	}
	while (getline(&line, &cap, f) > 0) {
		char perms[5];

		if (sscanf(line, "%llx-%llx %4s %llx %x:%x %llu %n", &start,
			&end, perms, &off, &dmaj, &dmin, &ino, &n) < 7)
			continue;
		if (maps->n == alloc) {
			alloc = alloc != 0 ? alloc * 2 : 64;
			v = realloc(maps->v, alloc * sizeof *v);
			if (v == NULL)
				goto nomem;
			maps->v = v;
		}
		p = line + n;
		len = (int)strcspn(p, "\n");
		p[len] = '\0';
		m = &maps->v[maps->n];
		memset(m, 0, sizeof *m);
		m->start = start;
		m->end = end;
		m->offset = off;
		m->inode = ino;
		memcpy(m->perms, perms, sizeof m->perms);
		if (len > 10 && strcmp(p + len - 10, " (deleted)") == 0) {
			p[len - 10] = '\0';
			m->deleted = 1;
		}
		m->path = strdup(p);
		if (m->path == NULL)
			goto nomem;
		maps->n++;
		if (m->path[0] == '/')
			m->kind = inject_maps_kind(m->path);
	}
	if (ferror(f)) {
		inject_cause(cause, "cannot read %s: %s", fn, strerror(errno));
		goto fail;
	}
	if (maps->n == 0) {
		inject_cause(cause, "pid %d has exited", (int)pid);
		goto fail;
	}
	free(line);
	fclose(f);
	return 0;
nomem:
	inject_cause(cause, "pid %d: out of memory", (int)pid);
fail:
	free(line);
	fclose(f);
	inject_maps_free(maps);
	return -1;
}

/* Return the mapping that holds addr, or NULL. */
const struct inject_map *
inject_maps_find(const struct inject_maps *maps, uint64_t addr)
{
	size_t lo = 0, hi = maps->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (addr < maps->v[mid].start)
			hi = mid;
		else if (addr >= maps->v[mid].end)
			lo = mid + 1;
		else
			return &maps->v[mid];
	}
	return NULL;
}

/* Return the first mapping of the given kind, or NULL. */
static const struct inject_map *
inject_maps_first(const struct inject_maps *maps, enum inject_map_kind kind)
{
	size_t i;

	for (i = 0; i < maps->n; i++) {
		if (maps->v[i].kind == kind)
			return &maps->v[i];
	}
	return NULL;
}

/*
 * Open the ELF file behind mapping m as the target sees it (through
 * /proc/PID/root, or map_files for a file deleted since) and find the
 * address it is loaded at. Returns 0 or -1.
 */
static int
inject_open_object(pid_t pid, const struct inject_maps *maps,
    const struct inject_map *m, struct elf_file *ef, uint64_t *base,
    char **cause)
{
	uint64_t vaddr, offset;
	char fn[PATH_MAX + 64];
	size_t i;

	if (m->deleted)
		snprintf(fn, sizeof fn, "/proc/%d/map_files/%llx-%llx",
		    (int)pid, (unsigned long long)m->start,
		    (unsigned long long)m->end);
	else
		snprintf(fn, sizeof fn, "/proc/%d/root%s", (int)pid, m->path);
	if (elf_open(ef, fn, cause) < 0)
		return -1;
	if (elf_first_load(ef, &vaddr, &offset) < 0)
		goto bad;
	for (i = 0; i < maps->n; i++) {
		const struct inject_map *o = &maps->v[i];

		if (strcmp(o->path, m->path) == 0 && o->inode == m->inode &&
		    o->offset == (offset & ~(INJECT_PAGE - 1))) {
			*base = o->start - (vaddr & ~(INJECT_PAGE - 1));
			return 0;
		}
	}
bad:
	inject_cause(cause, "pid %d: cannot find the load address of %s",
	    (int)pid, m->path);
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

/*
 * Check that pid is a live process nobody traces. Returns 0 or -1 with
 * *cause set.
 */
static int
inject_check_process(pid_t pid, char **cause)
{
	char state[64], tracer[64];

	if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH) ||
	    inject_status_field(pid, "State:", state, sizeof state) < 0) {
		inject_cause(cause, "no such process: %d", (int)pid);
		return -1;
	}
	if (state[0] == 'Z' || state[0] == 'X') {
		inject_cause(cause, "pid %d has exited", (int)pid);
		return -1;
	}
	if (inject_status_field(pid, "TracerPid:", tracer, sizeof tracer) ==
		0 &&
	    strtol(tracer, NULL, 10) > 0) {
		inject_cause(cause,
		    "pid %d is already traced by pid %ld (a debugger?)",
		    (int)pid, strtol(tracer, NULL, 10));
		return -1;
	}
	return 0;
}

/*
 * Find dlopen and dlerror in the target: libc's (glibc 2.34+, musl), else
 * libdl's, else glibc's private __libc_dlopen_mode. Returns 0 or -1.
 */
static int
inject_resolve(pid_t pid, const struct inject_maps *maps,
    struct inject_funcs *fn, char **cause)
{
	const struct inject_map *libc, *libdl;
	struct elf_file ef;
	uint64_t base, v;

	fn->dlopen = fn->dlerror = 0;
	libc = inject_maps_first(maps, INJECT_MAP_LIBC);
	if (libc == NULL) {
		inject_cause(cause,
		    "pid %d has no libc mapped (a static "
		    "binary?); cannot load code into it",
		    (int)pid);
		return -1;
	}
	if (inject_open_object(pid, maps, libc, &ef, &base, cause) < 0)
		return -1;
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
	libdl = inject_maps_first(maps, INJECT_MAP_LIBDL);
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
		inject_cause(cause, "pid %d: cannot find dlopen in %s",
		    (int)pid, libc->path);
		return -1;
	}
	return 0;
}

/* Find a 0xCC byte in executable memory of the target. Returns 0 or -1. */
static int
inject_find_int3(pid_t pid, int memfd, const struct inject_maps *maps,
    uint64_t *addr, char **cause)
{
	unsigned char buf[16384], *hit;
	uint64_t at, len;
	size_t i;

	for (i = 0; i < maps->n; i++) {
		const struct inject_map *m = &maps->v[i];

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
	inject_cause(
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
		inject_cause(cause, "no such process: %d", (int)pid);
	else if (errno == EACCES || errno == EPERM)
		inject_cause(cause, INJECT_EPERM, (int)pid);
	else
		inject_cause(cause, "cannot open %s: %s", fn, strerror(errno));
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

/*
 * Stop a thread of pid at a safe point: the main thread first, then the
 * others in turn, letting each run a moment between tries. Returns 0 with
 * t stopped, or -1.
 */
static int
inject_stop_safe(pid_t pid, int memfd, const struct inject_maps *maps,
    struct ptrace_thread *t, struct injector_stats *st, char **cause)
{
	pid_t tids[256], want;
	const char *why = "unknown";
	size_t ntids;
	int i;

	ntids = inject_threads(pid, tids, sizeof tids / sizeof tids[0]);
	for (i = 0; i < INJECT_MAX_TRIES; i++) {
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
			if (want != pid && errno == ESRCH)
				continue;
			return -1;
		}
		if (ptrace_stop(t, INJECT_STOP_MS, cause) < 0) {
			/* Another thread that ended: go on with the rest. */
			if (want != pid && errno == ESRCH &&
			    kill(pid, 0) == 0) {
				t->seized = 0;
				continue;
			}
			return -1;
		}
		st->attempts++;
		if (safety_check(t, maps, &why))
			return 0;
		if (ptrace_resume(t, cause) < 0)
			return -1;
		usleep(INJECT_RUN_US);
	}
	if (ptrace_stop(t, INJECT_STOP_MS, NULL) == 0)
		ptrace_detach(t);
	inject_cause(cause,
	    "pid %d: no thread reached a safe point in %d "
	    "tries (last: %s); try again",
	    (int)pid, INJECT_MAX_TRIES, why);
	return -1;
}

/* Do the work of injector_load on the calling (tracer) thread. */
static int
inject_load(
    pid_t pid, const char *so_path, struct injector_stats *st, char **cause)
{
	struct inject_maps maps = { NULL, 0 };
	struct inject_funcs fn;
	struct ptrace_thread t;
	char err[1024];
	double t0 = inject_now_ms();
	uint64_t sp, handle = 0, msg = 0, path_at, args[2];
	size_t len;
	int memfd = -1, rc = -1, called;

	memset(&t, 0, sizeof t);
	len = so_path != NULL ? strlen(so_path) : 0;
	if (len == 0 || len >= PATH_MAX) {
		inject_cause(cause, "pid %d: bad shared object path", (int)pid);
		goto out;
	}
	if (inject_check_process(pid, cause) < 0)
		goto out;
	if (inject_maps_read(pid, &maps, cause) < 0)
		goto out;
	memfd = inject_open_mem(pid, O_RDWR, cause);
	if (memfd < 0)
		goto out;
	if (inject_resolve(pid, &maps, &fn, cause) < 0 ||
	    inject_find_int3(pid, memfd, &maps, &fn.int3, cause) < 0)
		goto out;
	if (inject_stop_safe(pid, memfd, &maps, &t, st, cause) < 0) {
		if (!t.seized && errno == EPERM)
			inject_check_process(pid, cause);
		goto out;
	}
	if (ptrace_save(&t, cause) < 0)
		goto detach;

	/* The path goes below the red zone, the call's frame below it. */
	path_at = (t.regs.rsp - INJECT_RED_ZONE - (len + 1)) & ~(uint64_t)15;
	if (ptrace_mem_write(memfd, path_at, so_path, len + 1) < 0) {
		inject_cause(cause, "pid %d: cannot write to its stack: %s",
		    (int)pid, strerror(errno));
		goto detach;
	}
	args[0] = path_at;
	args[1] = INJECT_RTLD_NOW | INJECT_RTLD_GLOBAL;
	sp = path_at - 16;
	called = ptrace_call(&t, fn.dlopen, args, 2, fn.int3, sp,
	    INJECT_CALL_MS, &handle, cause);
	if (called == 0 && handle == 0) {
		err[0] = '\0';
		if (fn.dlerror != 0 &&
		    ptrace_call(&t, fn.dlerror, NULL, 0, fn.int3, sp,
			INJECT_CALL_MS, &msg, NULL) == 0 &&
		    msg != 0)
			inject_read_string(memfd, msg, err, sizeof err);
		if (err[0] != '\0')
			inject_cause(cause, "pid %d: dlopen %s failed: %s",
			    (int)pid, so_path, err);
		else
			inject_cause(cause, "pid %d: dlopen %s failed",
			    (int)pid, so_path);
	}
	if (t.seized && ptrace_restore(&t, called == 0 ? cause : NULL) < 0)
		goto detach;
	if (called == 0 && handle != 0)
		rc = 0;
detach:
	ptrace_detach(&t);
out:
	st->stopped_ms = t.stopped_ms;
	if (memfd >= 0)
		close(memfd);
	inject_maps_free(&maps);
	st->total_ms = inject_now_ms() - t0;
	return rc;
}

/* Thread body running one injection. */
static void *
inject_job_run(void *arg)
{
	struct inject_job *job = arg;

	job->rc = inject_load(job->pid, job->so_path, job->st, job->cause);
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
 * Read Py_Version (3.11+) from the object behind mapping m. Returns 0 with
 * *hex set, -1 when the object has none; *has_py tells whether it holds
 * the Python runtime at all.
 */
static int
inject_read_py_version(pid_t pid, int memfd, const struct inject_maps *maps,
    const struct inject_map *m, uint64_t *hex, int *has_py)
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
	elf_close(&ef);
	return rc;
}

int
injector_python_version(
    pid_t pid, int *major, int *minor, char *full, size_t fulllen, char **cause)
{
	struct inject_maps maps = { NULL, 0 };
	const struct inject_map *obj = NULL;
	char exe[PATH_MAX], fn[64];
	uint64_t hex = 0;
	int maj = 0, min = 0, named = 0, has_py = 0, memfd = -1, rc = -1;
	ssize_t n;
	size_t i;

	if (cause != NULL)
		*cause = NULL;
	if (full != NULL && fulllen > 0)
		full[0] = '\0';
	if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH)) {
		inject_cause(cause, "no such process: %d", (int)pid);
		return -1;
	}
	if (inject_maps_read(pid, &maps, cause) < 0)
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
	    inject_read_py_version(pid, memfd, &maps, obj, &hex, &has_py) ==
		0) {
		maj = (int)((hex >> 24) & 0xff);
		min = (int)((hex >> 16) & 0xff);
		if (full != NULL && fulllen > 0) {
			unsigned level = (unsigned)((hex >> 4) & 0xf);
			unsigned serial = (unsigned)(hex & 0xf);

			if (level == 0xf)
				snprintf(full, fulllen, "%d.%d.%u", maj, min,
				    (unsigned)((hex >> 8) & 0xff));
			else
				snprintf(full, fulllen, "%d.%d.%u%s%u", maj,
				    min, (unsigned)((hex >> 8) & 0xff),
				    level == 0xa       ? "a"
					: level == 0xb ? "b"
						       : "rc",
				    serial);
		}
	} else if (!named) {
		if (has_py)
			inject_cause(cause,
			    "pid %d runs python but its version "
			    "could not be determined",
			    (int)pid);
		else
			inject_cause(
			    cause, "pid %d is not a python process", (int)pid);
		goto out;
	}
	*major = maj;
	*minor = min;
	rc = 0;
out:
	if (memfd >= 0)
		close(memfd);
	inject_maps_free(&maps);
	return rc;
}
