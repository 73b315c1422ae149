/* Every thread's Python and native stack, even when the GIL is held forever,
 * without sending the job a signal.
 *
 * How a capture works (backtrace_capture, on a request thread):
 * 1. List /proc/self/task (the agent's own "probing-*" threads are left
 *    out) and read each thread's state before anything disturbs it.
 * 2. Index the interpreter's thread states, then have the unwinding helper
 *    (bt-native.c: ptrace from another process, no signal, interrupted
 *    calls restarted) hold each thread in turn; in that one stop it unwinds
 *    the native stack and copies the Python frame chain from where
 *    bt-python.c says CPython keeps it. Both halves describe the same
 *    moment of that thread, and no GIL is needed: the other threads run on
 *    meanwhile. A thread it cannot hold is read as it is.
 * 3. Try the GIL for a short while on a py worker, for the threading names
 *    (remembered for when it cannot be had: its holder is then stuck
 *    outside Python, in a C call that kept it, ...).
 * 4. Outside any lock: decode the Python frames, symbolize native addresses
 *    with dladdr and replace each _PyEval_EvalFrameDefault native frame by
 *    the Python frames it was running.
 *
 * probing.backtrace.native=false skips the helper: no thread is stopped,
 * Python frames only, read under the GIL when it can be had quickly (then
 * no Python code runs anywhere), else as they are. */
#define _GNU_SOURCE 1
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define Py_BUILD_CORE 1
#include <Python.h>
#include <internal/pycore_runtime.h>
#include <internal/pycore_interp.h>

#include "agent.h"
#include "bt-helper.h"
#include "log.h"

#define BT_THREADS_MAX 4096 /* threads one capture looks at */
#define BT_PY_MAX      1024 /* Python frames kept per thread */
#define BT_NAME_CACHE  256  /* python thread names remembered */
#define BT_SYM_CACHE   1024 /* native addresses symbolized per capture */

static pthread_mutex_t bt_lock = PTHREAD_MUTEX_INITIALIZER;

/* Python thread names seen the last time the GIL could be had; read
 * without the GIL later. Guarded by bt_lock. */
static struct {
	long tid;
	char *name;
} bt_names[BT_NAME_CACHE];

/* A symbolized native address; the strings belong to the loader and stay
 * valid while the library is loaded (for the capture). */
struct bt_sym {
	uintptr_t ip; /* 0: empty */
	const char *func, *lib;
	uintptr_t base;
};

/* Everything one capture works on; lives on the request thread's heap. */
struct bt_work {
	struct backtrace *bt;
	int native;   /* native frames wanted */
	int gil_held; /* the walk runs under the GIL */
	int gil_ms;   /* how long to try for it */
	struct bt_py *reader;
	long *tids;
	uintptr_t *tstates;
	struct bt_pyraw **raw; /* per thread, BT_PY_MAX each */
	int *nraw;             /* -1: not a Python thread */
	struct bt_native *nat; /* per thread when native */
	char **pyname;
	struct bt_sym *syms; /* open addressing, BT_SYM_CACHE entries */
	char exe[512];       /* /proc/self/exe */
};

/* The thread with this tid in the capture, or -1. */
static int
bt_thread_index(struct backtrace *bt, long tid)
{
	int i;

	for (i = 0; i < bt->nthreads; i++)
		if (bt->threads[i].tid == tid)
			return i;
	return -1;
}

/* Under the GIL: the names of threading.Thread objects, by native id. */
static void
bt_python_names(struct bt_work *w)
{
	PyObject *mods = PyImport_GetModuleDict(), *mod, *active, *key, *t;
	PyObject *name, *nid;
	Py_ssize_t pos = 0;
	const char *s;
	long tid;
	int ti;

	mod = mods != NULL ? PyDict_GetItemString(mods, "threading") : NULL;
	if (mod == NULL)
		return;
	active = PyObject_GetAttrString(mod, "_active");
	if (active == NULL || !PyDict_Check(active))
		goto out;
	while (PyDict_Next(active, &pos, &key, &t)) {
		name = PyObject_GetAttrString(t, "_name");
		nid = PyObject_GetAttrString(t, "_native_id");
		PyErr_Clear();
		if (name != NULL && nid != NULL && PyUnicode_Check(name) &&
		    PyLong_Check(nid)) {
			tid = PyLong_AsLong(nid);
			s = PyUnicode_AsUTF8(name);
			ti = s != NULL ? bt_thread_index(w->bt, tid) : -1;
			if (ti >= 0 && w->pyname[ti] == NULL)
				w->pyname[ti] = strdup(s);
		}
		PyErr_Clear();
		Py_XDECREF(name);
		Py_XDECREF(nid);
	}
out:
	PyErr_Clear();
	Py_XDECREF(active);
}

/* The part that wants a still process: every thread's frames, each
 * thread held while its own are copied (native), or under the GIL. */
static void
bt_still_part(struct bt_work *w)
{
	struct bth_layout layout;
	const struct bt_native *nat;
	int i, n = w->bt->nthreads;

	bt_py_index(w->reader);
	if (w->native) {
		for (i = 0; i < n; i++)
			w->tstates[i] = bt_py_tstate(w->reader, w->tids[i]);
		bt_py_layout(&layout);
		bt_native_capture(w->tids, w->tstates, n, &layout, w->nat);
	}
	for (i = 0; i < n; i++) {
		nat = w->native ? &w->nat[i] : NULL;
		if (nat != NULL && nat->py != NULL)
			w->nraw[i] = bt_py_from_helper(
			    nat->py, nat->npy, w->raw[i], BT_PY_MAX);
		else /* not held: as it is now */
			w->nraw[i] = bt_py_snap(
			    w->reader, w->tids[i], w->raw[i], BT_PY_MAX);
	}
}

/* Under the GIL: the frames (when no thread is held) and the names. */
static int
bt_gil_job(void *arg, char **cause)
{
	struct bt_work *w = arg;

	(void)cause;
	w->gil_held = 1;
	bt_eval_calibrate();
	if (!w->native)
		bt_still_part(w);
	bt_python_names(w);
	return 0;
}

/* A thread of the capture's own (blocking every signal, as the request
 * thread that starts it does): the threading names under the GIL, while
 * the helper holds the job's threads one by one. */
static void *
bt_names_thread(void *arg)
{
	struct bt_work *w = arg;

	pthread_setname_np(pthread_self(), "probing-btname");
	if (py_available(NULL) != 0 ||
	    py_run(bt_gil_job, w, w->gil_ms, NULL) != 0)
		w->gil_held = 0;
	return NULL;
}

/* Reads the first line of /proc/self/task/TID/<what> into buf. */
static int
bt_proc_line(long tid, const char *what, char *buf, size_t len)
{
	char path[96];
	FILE *f;
	int ok;

	snprintf(path, sizeof path, "/proc/self/task/%ld/%s", tid, what);
	f = fopen(path, "re");
	if (f == NULL)
		return -1;
	ok = fgets(buf, (int)len, f) != NULL;
	fclose(f);
	if (!ok)
		return -1;
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

/* Names of the syscalls a waiting thread is usually in. */
static const char *
bt_syscall_name(long nr)
{
#if defined(__x86_64__)
	static const struct {
		long nr;
		const char *name;
	} names[] = {
		{ 0, "read" },
		{ 1, "write" },
		{ 7, "poll" },
		{ 23, "select" },
		{ 34, "pause" },
		{ 35, "nanosleep" },
		{ 42, "connect" },
		{ 43, "accept" },
		{ 44, "sendto" },
		{ 45, "recvfrom" },
		{ 46, "sendmsg" },
		{ 47, "recvmsg" },
		{ 61, "wait4" },
		{ 72, "fcntl" },
		{ 128, "rt_sigtimedwait" },
		{ 202, "futex" },
		{ 230, "clock_nanosleep" },
		{ 232, "epoll_wait" },
		{ 247, "waitid" },
		{ 270, "pselect6" },
		{ 271, "ppoll" },
		{ 281, "epoll_pwait" },
		{ 288, "accept4" },
		{ 441, "epoll_pwait2" },
	};
	size_t i;

	for (i = 0; i < sizeof names / sizeof names[0]; i++)
		if (names[i].nr == nr)
			return names[i].name;
#endif
	(void)nr;
	return NULL;
}

/* Describes what thread tid is doing right now. */
static char *
bt_thread_state(long tid, long gil_tid)
{
#if PY_VERSION_HEX >= 0x030C0000
	PyInterpreterState *interp = _PyRuntime.interpreters.main;
	uintptr_t gil = interp ? (uintptr_t)interp->ceval.gil : 0;
#else
	uintptr_t gil = (uintptr_t)&_PyRuntime.ceval.gil;
#endif
	char line[256], *p, *out = NULL;
	const char *name;
	long nr;
	unsigned long arg0;

	if (tid == gil_tid)
		return strdup("holding the GIL");
	if (bt_proc_line(tid, "syscall", line, sizeof line) != 0)
		return strdup("unknown");
	if (strncmp(line, "running", 7) == 0)
		return strdup("running");
	nr = strtol(line, &p, 10);
	if (p == line || nr < 0)
		return strdup("running");
	arg0 = strtoul(p, NULL, 16);
	if (gil != 0 && nr == SYS_futex && arg0 >= gil &&
	    arg0 < gil + sizeof(struct _gil_runtime_state))
		return strdup("waiting for the GIL");
	name = bt_syscall_name(nr);
	if (name != NULL) {
		if (asprintf(&out, "idle in a syscall (%s)", name) < 0)
			out = NULL;
	} else if (asprintf(&out, "idle in a syscall (%ld)", nr) < 0) {
		out = NULL;
	}
	return out;
}

/* Fills bt->threads from /proc/self/task; only_tid 0 means all. */
static int
bt_list_threads(struct backtrace *bt, long only_tid, char **cause)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	struct backtrace_thread *t;
	char comm[64];
	long tid, gil_tid = py_gil_holder_tid();
	int cap = 0;

	if (d == NULL) {
		cause_set(cause, "cannot list threads: %s", strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		tid = strtol(de->d_name, NULL, 10);
		if (tid <= 0 || (only_tid != 0 && tid != only_tid))
			continue;
		if (bt_proc_line(tid, "comm", comm, sizeof comm) != 0)
			continue; /* exited */
		if (strncmp(comm, "probing-", 8) == 0)
			continue; /* the agent's own */
		if (bt->nthreads == BT_THREADS_MAX)
			break;
		if (bt->nthreads == cap) {
			cap = cap ? cap * 2 : 16;
			t = realloc(bt->threads, sizeof *t * (size_t)cap);
			if (t == NULL) {
				closedir(d);
				cause_set(cause, "out of memory");
				return -1;
			}
			bt->threads = t;
		}
		t = &bt->threads[bt->nthreads++];
		memset(t, 0, sizeof *t);
		t->tid = tid;
		t->name = strdup(comm);
		t->state = bt_thread_state(tid, gil_tid);
	}
	closedir(d);
	if (only_tid != 0 && bt->nthreads == 0) {
		cause_set(
		    cause, "no thread %ld in pid %d", only_tid, (int)agent_pid);
		return -1;
	}
	return 0;
}

/* Orders threads: the main thread first, then by tid. */
static int
bt_thread_cmp(const void *a, const void *b)
{
	const struct backtrace_thread *x = a, *y = b;

	if (x->tid == y->tid)
		return 0;
	if (x->tid == (long)agent_pid)
		return -1;
	if (y->tid == (long)agent_pid)
		return 1;
	return x->tid < y->tid ? -1 : 1;
}

/* Appends a frame to t; returns 0 or -1 when out of memory. */
static int
bt_push(struct backtrace_thread *t, int *cap, enum backtrace_frame_type type,
    const char *func, const char *file, int lineno, uintptr_t offset)
{
	struct backtrace_frame *f;

	if (t->nframes == *cap) {
		*cap = *cap ? *cap * 2 : 32;
		f = realloc(t->frames, sizeof *f * (size_t)*cap);
		if (f == NULL)
			return -1;
		t->frames = f;
	}
	f = &t->frames[t->nframes];
	f->type = type;
	f->func = strdup(func != NULL ? func : "??");
	f->file = strdup(file != NULL ? file : "");
	f->lineno = lineno;
	f->offset = offset;
	if (f->func == NULL || f->file == NULL) {
		free(f->func);
		free(f->file);
		return -1;
	}
	t->nframes++;
	return 0;
}

/* The function and library of address ip, through the capture's cache. */
static const struct bt_sym *
bt_symbolize(struct bt_work *w, uintptr_t ip)
{
	struct bt_sym *s;
	size_t h = (size_t)((ip * 0x9e3779b97f4a7c15ULL) >> 40), i;
	Dl_info di;
	ssize_t n;

	if (w->exe[0] == '\0') {
		n = readlink("/proc/self/exe", w->exe, sizeof w->exe - 1);
		w->exe[n > 0 ? n : 0] = '\0';
	}
	for (i = 0; i < BT_SYM_CACHE; i++) {
		s = &w->syms[(h + i) % BT_SYM_CACHE];
		if (s->ip == ip || s->ip == 0)
			break;
	}
	if (i == BT_SYM_CACHE)
		s = &w->syms[h % BT_SYM_CACHE]; /* full: evict */
	else if (s->ip == ip && ip != 0)
		return s;
	memset(s, 0, sizeof *s);
	s->ip = ip;
	memset(&di, 0, sizeof di);
	if (dladdr((void *)ip, &di) != 0) {
		s->func = di.dli_sname;
		s->lib = di.dli_fname;
		s->base = (uintptr_t)di.dli_fbase;
	}
	/* The main program comes back as "" or its bare argv[0]. */
	if (s->lib == NULL || *s->lib == '\0' ||
	    (w->exe[0] != '\0' && strchr(s->lib, '/') == NULL))
		s->lib = w->exe;
	return s;
}

typedef char *(*bt_demangle_fn)(const char *, char *, size_t *, int *);

/* A C++ symbol demangled without its parameter list into buf, using the
 * process's own libstdc++ when it has one; else sym itself. */
static const char *
bt_demangle(const char *sym, char *buf, size_t len)
{
	static bt_demangle_fn fn;
	static int looked;
	char *out;
	size_t i;
	int status = -1, depth = 0;

	if (sym == NULL || strncmp(sym, "_Z", 2) != 0)
		return sym;
	if (!looked) {
		/* Only when the process already has it: never load it. */
		void *h = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_NOLOAD);

		fn = (bt_demangle_fn)dlsym(
		    h ? h : RTLD_DEFAULT, "__cxa_demangle");
		looked = 1;
	}
	if (fn == NULL || (out = fn(sym, NULL, NULL, &status)) == NULL)
		return sym;
	/* Cut the parameters: the first '(' outside template brackets that
	 * does not belong to "operator()". */
	for (i = 0; out[i] != '\0'; i++) {
		if (out[i] == '<')
			depth++;
		else if (out[i] == '>' && depth > 0)
			depth--;
		else if (out[i] == '(' && depth == 0 &&
		    !(i >= 8 && strncmp(out + i - 8, "operator", 8) == 0)) {
			out[i] = '\0';
			break;
		}
	}
	snprintf(buf, len, "%s", out);
	free(out);
	return buf;
}

/* Merges thread ti's native addresses with its Python frames py: each eval
 * loop frame stands for the Python frames up to the next entry frame. */
static int
bt_merge(struct bt_work *w, int ti, const uintptr_t *ips, int nips,
    const struct bt_pyframe *py, int npy)
{
	struct backtrace_thread *t = &w->bt->threads[ti];
	int j = 0, k, cap = 0, evalf;
	const struct bt_sym *s;
	const char *lib, *sym;
	char name[512];
	uintptr_t base, lo, hi, ip;
	int ranged = bt_eval_range(&lo, &hi) == 0;

	for (k = 0; k < nips; k++) {
		ip = k == 0 ? ips[k] : ips[k] - 1;
		s = bt_symbolize(w, ip);
		sym = s->func;
		lib = s->lib;
		base = s->base;
		/* The loop's extent when known (an exported wrapper of it must
		 * not count twice), else its exported name. */
		evalf = ranged ? ip >= lo && ip < hi
			       : sym != NULL &&
			strcmp(sym, "_PyEval_EvalFrameDefault") == 0;
		if (evalf && j < npy) {
			do {
				if (bt_push(t, &cap, BACKTRACE_PYTHON,
					py[j].func, py[j].file, py[j].lineno,
					0) != 0)
					return -1;
			} while (!py[j++].entry && j < npy);
			continue;
		}
		if (bt_push(t, &cap, BACKTRACE_NATIVE,
			bt_demangle(sym, name, sizeof name), lib, 0,
			ips[k] - base) != 0)
			return -1;
	}
	for (; j < npy; j++)
		if (bt_push(t, &cap, BACKTRACE_PYTHON, py[j].func, py[j].file,
			py[j].lineno, 0) != 0)
			return -1;
	return 0;
}

/* Remembers Python thread names (GIL path) or fills them in (no GIL). */
static void
bt_names_apply(struct bt_work *w)
{
	struct backtrace *bt = w->bt;
	int i, k, slot;
	char *s;

	for (i = 0; i < bt->nthreads; i++) {
		if (w->gil_held && w->pyname[i] != NULL) {
			slot = -1;
			for (k = 0; k < BT_NAME_CACHE; k++) {
				if (bt_names[k].tid == bt->threads[i].tid ||
				    (slot < 0 && bt_names[k].tid == 0))
					slot = k;
				if (bt_names[k].tid == bt->threads[i].tid)
					break;
			}
			if (slot < 0)
				slot =
				    (int)(bt->threads[i].tid % BT_NAME_CACHE);
			s = strdup(w->pyname[i]);
			if (s != NULL) {
				free(bt_names[slot].name);
				bt_names[slot].name = s;
				bt_names[slot].tid = bt->threads[i].tid;
			}
		} else if (!w->gil_held) {
			for (k = 0; k < BT_NAME_CACHE; k++)
				if (bt_names[k].tid == bt->threads[i].tid &&
				    bt_names[k].name != NULL)
					w->pyname[i] = strdup(bt_names[k].name);
		}
		if (w->pyname[i] != NULL) {
			free(bt->threads[i].name);
			bt->threads[i].name = w->pyname[i];
			w->pyname[i] = NULL;
		}
	}
}

static void
bt_work_free(struct bt_work *w)
{
	int i;

	for (i = 0; w->bt != NULL && i < w->bt->nthreads; i++) {
		if (w->raw != NULL)
			free(w->raw[i]);
		if (w->pyname != NULL)
			free(w->pyname[i]);
	}
	bt_py_free(w->reader);
	if (w->nat != NULL)
		bt_native_free(w->nat, w->bt->nthreads);
	free(w->tids);
	free(w->tstates);
	free(w->raw);
	free(w->nraw);
	free(w->nat);
	free(w->pyname);
	free(w->syms);
}

/* Allocates the per-thread parts of w; 0, or -1 when out of memory. */
static int
bt_work_alloc(struct bt_work *w)
{
	size_t n = (size_t)w->bt->nthreads + 1;
	int i;

	w->reader = bt_py_new();
	w->tids = calloc(n, sizeof *w->tids);
	w->tstates = calloc(n, sizeof *w->tstates);
	w->raw = calloc(n, sizeof *w->raw);
	w->nraw = calloc(n, sizeof *w->nraw);
	w->pyname = calloc(n, sizeof *w->pyname);
	w->syms = calloc(BT_SYM_CACHE, sizeof *w->syms);
	if (w->native)
		w->nat = calloc(n, sizeof *w->nat);
	if (w->reader == NULL || w->tids == NULL || w->tstates == NULL ||
	    w->raw == NULL || w->nraw == NULL || w->pyname == NULL ||
	    w->syms == NULL || (w->native && w->nat == NULL))
		return -1;
	for (i = 0; i < w->bt->nthreads; i++) {
		w->tids[i] = w->bt->threads[i].tid;
		w->nraw[i] = -1;
		w->raw[i] = malloc(sizeof **w->raw * BT_PY_MAX);
		if (w->raw[i] == NULL)
			return -1;
	}
	return 0;
}

/* Decodes, merges and annotates thread i; 0, or -1 when out of memory. */
static int
bt_finish_thread(struct bt_work *w, int i, struct bt_pyframe *py)
{
	struct backtrace_thread *t = &w->bt->threads[i];
	const struct bt_native *nat = w->native ? &w->nat[i] : NULL;
	char *layout = NULL;
	int npy = 0;

	if (w->nraw[i] > 0)
		npy = bt_py_decode(w->reader, w->raw[i], w->nraw[i], py);
	t->stop_us = nat != NULL ? nat->stop_us : -1;
	if (nat != NULL && nat->nips < 0 &&
	    asprintf(&t->note, "native unwinding failed: %s",
		nat->note[0] ? nat->note : "unknown error") < 0)
		t->note = NULL;
	if (t->note == NULL && py_layout_check(&layout) != 0 &&
	    asprintf(&t->note, "python frames not read: %s", layout) < 0)
		t->note = NULL;
	free(layout);
	return bt_merge(w, i, nat != NULL ? nat->ips : NULL,
	    nat != NULL && nat->nips > 0 ? nat->nips : 0, py, npy);
}

struct backtrace *
backtrace_capture(long only_tid, int gil_ms, char **cause)
{
	struct bt_work w;
	struct bt_pyframe *py = NULL;
	struct backtrace *bt;
	pthread_t namer_thread;
	int i, n, namer;

	memset(&w, 0, sizeof w);
	bt = calloc(1, sizeof *bt);
	if (bt == NULL) {
		cause_set(cause, "out of memory");
		return NULL;
	}
	pthread_mutex_lock(&bt_lock);
	w.bt = bt;
	if (bt_list_threads(bt, only_tid, cause) != 0)
		goto fail;
	n = bt->nthreads;
	if (n > 1)
		qsort(bt->threads, (size_t)n, sizeof bt->threads[0],
		    bt_thread_cmp);
	w.native = config_get(CONFIG_BACKTRACE_NATIVE) != 0;
	py = malloc(sizeof *py * BT_PY_MAX);
	if (py == NULL || bt_work_alloc(&w) != 0) {
		cause_set(cause, "out of memory");
		goto fail;
	}
	w.gil_ms = gil_ms;
	if (w.native) {
		/* Held threads are read one at a time without the GIL, so the
		 * others run on; the names are fetched meanwhile. */
		namer =
		    pthread_create(&namer_thread, NULL, bt_names_thread, &w);
		bt_still_part(&w);
		if (namer == 0)
			pthread_join(namer_thread, NULL);
		else
			bt_names_thread(&w);
	} else if (py_available(NULL) != 0 ||
	    py_run(bt_gil_job, &w, gil_ms, NULL) != 0) {
		/* Without holding threads, the GIL keeps Python frames still;
		 * it is stuck: nothing runs Python, read it as it is. */
		w.gil_held = 0;
		bt_still_part(&w);
	}
	bt->without_gil = w.native || !w.gil_held;
	bt_names_apply(&w);
	for (i = 0; i < n; i++) {
		if (bt_finish_thread(&w, i, py) != 0) {
			cause_set(cause, "out of memory");
			goto fail;
		}
	}
	free(py);
	bt_work_free(&w);
	pthread_mutex_unlock(&bt_lock);
	return bt;
fail:
	free(py);
	bt_work_free(&w);
	pthread_mutex_unlock(&bt_lock);
	backtrace_free(bt);
	return NULL;
}

void
backtrace_free(struct backtrace *bt)
{
	int i, k;

	if (bt == NULL)
		return;
	for (i = 0; i < bt->nthreads; i++) {
		for (k = 0; k < bt->threads[i].nframes; k++) {
			free(bt->threads[i].frames[k].func);
			free(bt->threads[i].frames[k].file);
		}
		free(bt->threads[i].frames);
		free(bt->threads[i].name);
		free(bt->threads[i].state);
		free(bt->threads[i].note);
	}
	free(bt->threads);
	free(bt);
}
