/* Every thread's Python and native stack, even when the GIL is held forever.
 *
 * How a capture works (backtrace_capture, on a request thread):
 * 1. List /proc/self/task (the agent's own "probing-*" threads are left
 *    out) and read each thread's state before anything disturbs it.
 * 2. Try to take the GIL for a short while on a py worker. Holding it, send
 *    each thread a real-time signal whose handler only unwinds its own stack
 *    with libunwind into a static slot and posts a semaphore (native frames),
 *    then walk the interpreter's thread states and frames (Python frames).
 *    With the GIL held no Python code runs anywhere, so both halves describe
 *    the same moment.
 * 3. If the GIL cannot be had quickly its holder is stuck outside Python
 *    (in C code, a blocking call that kept the GIL, ...), so no Python frame
 *    changes either: the same two steps run without the GIL. Frame
 *    structures are then read through process_vm_readv on our own pid, so a
 *    bad pointer is an error for that thread, never a crash.
 * 4. Outside any lock and any handler: symbolize native addresses with
 *    dladdr and replace each _PyEval_EvalFrameDefault native frame by the
 *    Python frames it was running.
 *
 * The signal: the highest real-time signal whose action is SIG_DFL when
 * first needed; the handler stays installed for the life of the process
 * (a late signal after uninstalling would kill the process). It is sent
 * with SA_RESTART, so restartable calls resume; sleeps, poll/select/epoll
 * and timed futex waits return EINTR, which Python retries with the time
 * left (PEP 475). C code that does not retry those calls may see EINTR:
 * probing.backtrace.native=false sends no signal at all. */
#define Py_BUILD_CORE 1
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define UNW_LOCAL_ONLY
#include <libunwind.h>
#include <Python.h>
#include <internal/pycore_runtime.h>
#include <internal/pycore_interp.h>
#include <internal/pycore_frame.h>
#if PY_VERSION_HEX >= 0x030E0000
#include <internal/pycore_interpframe_structs.h>
#endif

#include "agent.h"
#include "log.h"

#define BT_SLOTS      512  /* threads one capture can signal */
#define BT_NATIVE_MAX 128  /* native frames kept per thread */
#define BT_PY_MAX     1024 /* Python frames kept per thread */
#define BT_STR_MAX    1024 /* characters of a name or file kept */
#define BT_SIGNAL_MS  100  /* how long a thread may take to answer */
#define BT_CODE_CACHE 512  /* code objects decoded once per capture */
#define BT_NAME_CACHE 256  /* python thread names remembered */
#define BT_SYM_CACHE  1024 /* native addresses symbolized per capture */

enum bt_slot_state { BT_IDLE, BT_WANT, BT_BUSY, BT_DONE };

/* One thread's native capture. The capturing thread owns a slot while its
 * state is WANT..DONE; the handler of thread `tid` writes ips and n between
 * a successful WANT->BUSY exchange and storing DONE. Static, so a signal
 * that arrives late never writes into freed memory. */
struct bt_slot {
	_Atomic int state;
	_Atomic pid_t tid;
	int n;
	uintptr_t ips[BT_NATIVE_MAX];
};

static struct bt_slot bt_slots[BT_SLOTS];
static sem_t bt_sem;
static int bt_signo;         /* 0: not chosen yet; -1: none free */
static int bt_native_broken; /* a handler never finished: stop signalling */
static pthread_mutex_t bt_lock = PTHREAD_MUTEX_INITIALIZER;

/* Python thread names seen the last time the GIL could be had; read
 * without the GIL later. Guarded by bt_lock. */
static struct {
	long tid;
	char *name;
} bt_names[BT_NAME_CACHE];

/* One Python frame before merging; strings point into the code cache. */
struct bt_pyframe {
	const char *func, *file;
	int lineno;
	int entry; /* the first frame its C eval call ran */
};

/* A decoded code object, valid for one capture. */
struct bt_code {
	uintptr_t addr;
	char *func, *file;
	unsigned char *table;
	size_t tablelen;
	int firstlineno, firsttraceable;
};

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
	int signo;    /* 0: native frames are not captured */
	int gil_held; /* the walk runs under the GIL */
	char *native_cause;
	const char **nosig; /* per thread: why it is not signalled, or NULL */
	struct bt_pyframe **py; /* per thread, NULL when not a Python thread */
	int *npy;
	char **pyname;
	struct bt_code *codes;
	int ncodes;
	struct bt_sym *syms; /* open addressing, BT_SYM_CACHE entries */
	char exe[512];       /* /proc/self/exe */
	int read_pipe[2]; /* fallback reader when process_vm_readv is denied */
};

/* Reads n bytes at remote address src of our own process into dst; returns
 * 0, or -1 when any byte cannot be read. Never faults. */
static int
bt_read(struct bt_work *w, void *dst, uintptr_t src, size_t n)
{
	static int use_pipe;
	struct iovec local = { dst, n }, remote = { (void *)src, n };
	ssize_t got;

	if (src == 0 || n == 0)
		return src == 0 ? -1 : 0;
	if (!use_pipe) {
		got = process_vm_readv(agent_pid, &local, 1, &remote, 1, 0);
		if (got == (ssize_t)n)
			return 0;
		if (got >= 0 || (errno != ENOSYS && errno != EPERM))
			return -1;
		use_pipe = 1;
	}
	/* write(2) from a bad address fails with EFAULT instead of faulting;
	 * chunks stay below the pipe's capacity. */
	if (w->read_pipe[0] < 0 && pipe2(w->read_pipe, O_CLOEXEC) != 0)
		return -1;
	while (n > 0) {
		size_t chunk = n > 4096 ? 4096 : n;

		if (write(w->read_pipe[1], (void *)src, chunk) !=
		    (ssize_t)chunk)
			return -1;
		if (read(w->read_pipe[0], dst, chunk) != (ssize_t)chunk)
			return -1;
		dst = (char *)dst + chunk;
		src += chunk;
		n -= chunk;
	}
	return 0;
}

/* Appends code point c to the UTF-8 buffer out (of size cap) at *len. */
static void
bt_utf8_put(char *out, size_t cap, size_t *len, uint32_t c)
{
	char b[4];
	size_t n;

	if (c < 0x80) {
		b[0] = (char)c;
		n = 1;
	} else if (c < 0x800) {
		b[0] = (char)(0xc0 | (c >> 6));
		b[1] = (char)(0x80 | (c & 0x3f));
		n = 2;
	} else if (c < 0x10000) {
		if (c >= 0xd800 && c <= 0xdfff)
			c = 0xfffd; /* lone surrogate */
		b[0] = (char)(0xe0 | (c >> 12));
		b[1] = (char)(0x80 | ((c >> 6) & 0x3f));
		b[2] = (char)(0x80 | (c & 0x3f));
		n = 3;
	} else {
		if (c > 0x10ffff)
			c = 0xfffd;
		b[0] = (char)(0xf0 | (c >> 18));
		b[1] = (char)(0x80 | ((c >> 12) & 0x3f));
		b[2] = (char)(0x80 | ((c >> 6) & 0x3f));
		b[3] = (char)(0x80 | (c & 0x3f));
		n = 4;
	}
	if (*len + n < cap) {
		memcpy(out + *len, b, n);
		*len += n;
	}
}

/* Reads the str object at addr as malloc'd UTF-8; NULL if unreadable. */
static char *
bt_read_str(struct bt_work *w, uintptr_t addr)
{
	PyCompactUnicodeObject u;
	PyTypeObject *type;
	uintptr_t data;
	size_t len, kind, i, outlen = 0, cap;
	unsigned char *raw = NULL;
	char *out;
	uint32_t c;

	if (bt_read(w, &u, addr, sizeof u) != 0)
		return NULL;
	type = Py_TYPE((PyObject *)&u);
	if (type != &PyUnicode_Type)
		return NULL;
	len = (size_t)u._base.length;
	if (len > BT_STR_MAX)
		len = BT_STR_MAX;
	kind = u._base.state.kind;
	if (kind != 1 && kind != 2 && kind != 4)
		return NULL;
	if (u._base.state.compact && u._base.state.ascii)
		data = addr + sizeof(PyASCIIObject);
	else if (u._base.state.compact)
		data = addr + sizeof(PyCompactUnicodeObject);
	else if (bt_read(w, &data, addr + offsetof(PyUnicodeObject, data.any),
		     sizeof data) != 0)
		return NULL;
	raw = malloc(len * kind + 1);
	cap = len * 4 + 1;
	out = malloc(cap);
	if (raw == NULL || out == NULL || bt_read(w, raw, data, len * kind)) {
		free(raw);
		free(out);
		return NULL;
	}
	for (i = 0; i < len; i++) {
		if (kind == 1)
			c = raw[i];
		else if (kind == 2)
			c = ((uint16_t *)(void *)raw)[i];
		else
			c = ((uint32_t *)(void *)raw)[i];
		bt_utf8_put(out, cap, &outlen, c);
	}
	out[outlen] = '\0';
	free(raw);
	return out;
}

/* Reads the bytes object at addr; returns a malloc'd copy or NULL. */
static unsigned char *
bt_read_bytes(struct bt_work *w, uintptr_t addr, size_t *len)
{
	PyBytesObject b;
	unsigned char *out;

	if (bt_read(w, &b, addr, offsetof(PyBytesObject, ob_sval)) != 0 ||
	    Py_TYPE((PyObject *)&b) != &PyBytes_Type || Py_SIZE(&b) < 0 ||
	    Py_SIZE(&b) > (1 << 24))
		return NULL;
	*len = (size_t)Py_SIZE(&b);
	out = malloc(*len + 1);
	if (out == NULL ||
	    bt_read(w, out, addr + offsetof(PyBytesObject, ob_sval), *len)) {
		free(out);
		return NULL;
	}
	return out;
}

/* Location table decoding (3.11+: InternalDocs/locations.md), reading
 * only inside [p, end). */
static unsigned int
bt_varint(const unsigned char **p, const unsigned char *end)
{
	unsigned int v = 0, shift = 0, b;

	do {
		if (*p >= end || shift > 28)
			return v;
		b = *(*p)++;
		v |= (b & 63) << shift;
		shift += 6;
	} while (b & 64);
	return v;
}

static int
bt_svarint(const unsigned char **p, const unsigned char *end)
{
	unsigned int u = bt_varint(p, end);

	return (u & 1) ? -(int)(u >> 1) : (int)(u >> 1);
}

/* The line of the instruction at byte offset addrq, or 0 if it has none:
 * what PyCode_Addr2Line computes, done on a copy of co_linetable. */
static int
bt_addr2line(const struct bt_code *c, int addrq)
{
	const unsigned char *p = c->table, *end = c->table + c->tablelen;
	const unsigned char *q;
	int line = c->firstlineno, start = 0, stop, code, delta;

	if (addrq < 0)
		return c->firstlineno;
	while (p < end) {
		code = (*p >> 3) & 15;
		stop = start + ((*p & 7) + 1) * (int)sizeof(_Py_CODEUNIT);
		q = p + 1;
		switch (code) {
		case 13: /* no column */
		case 14: /* long form */
			delta = bt_svarint(&q, end);
			break;
		case 11:
		case 12:
			delta = code - 10;
			break;
		default: /* 15 no location, 10 and short forms: same line */
			delta = 0;
			break;
		}
		line += delta;
		if (addrq >= start && addrq < stop)
			return code == 15 ? 0 : line;
		start = stop;
		do
			p++;
		while (p < end && (*p & 128) == 0);
	}
	return 0;
}

/* The decoded code object at addr, from the cache or read now. */
static struct bt_code *
bt_code_get(struct bt_work *w, uintptr_t addr)
{
	PyCodeObject co;
	struct bt_code *c;
	int i;

	for (i = 0; i < w->ncodes; i++)
		if (w->codes[i].addr == addr)
			return &w->codes[i];
	if (bt_read(w, &co, addr, sizeof co) != 0 ||
	    Py_TYPE((PyObject *)&co) != &PyCode_Type)
		return NULL;
	if (w->ncodes == BT_CODE_CACHE) {
		/* Full: reuse the oldest entry (rare, deep varied stacks). */
		free(w->codes[0].func);
		free(w->codes[0].file);
		free(w->codes[0].table);
		memmove(&w->codes[0], &w->codes[1],
		    sizeof w->codes[0] * (BT_CODE_CACHE - 1));
		w->ncodes--;
	}
	c = &w->codes[w->ncodes];
	memset(c, 0, sizeof *c);
	c->addr = addr;
	c->func = bt_read_str(w, (uintptr_t)co.co_qualname);
	if (c->func == NULL)
		c->func = bt_read_str(w, (uintptr_t)co.co_name);
	c->file = bt_read_str(w, (uintptr_t)co.co_filename);
	c->table = bt_read_bytes(w, (uintptr_t)co.co_linetable, &c->tablelen);
	c->firstlineno = co.co_firstlineno;
	c->firsttraceable = co._co_firsttraceable;
	if (c->func == NULL || c->file == NULL) {
		free(c->func);
		free(c->file);
		free(c->table);
		return NULL;
	}
	w->ncodes++;
	return c;
}

/* The code object a frame runs and its instruction pointer: 3.13 renamed
 * both (instr_ptr is the current instruction, prev_instr the one before,
 * but _PyInterpreterFrame_LASTI computes the same index from each); 3.14
 * tags the low bits of the code reference. */
#if PY_VERSION_HEX >= 0x030E0000
#define BT_FRAME_CODE(f)  ((uintptr_t)(f).f_executable.bits & ~(uintptr_t)7)
#define BT_FRAME_INSTR(f) ((uintptr_t)(f).instr_ptr)
#elif PY_VERSION_HEX >= 0x030D0000
#define BT_FRAME_CODE(f)  ((uintptr_t)(f).f_executable)
#define BT_FRAME_INSTR(f) ((uintptr_t)(f).instr_ptr)
#else
#define BT_FRAME_CODE(f)  ((uintptr_t)(f).f_code)
#define BT_FRAME_INSTR(f) ((uintptr_t)(f).prev_instr)
#endif

/* Walks one thread's frame chain from frame fa into w->py[ti], innermost
 * first. */
static void
bt_walk_tstate(struct bt_work *w, int ti, uintptr_t fa)
{
	_PyInterpreterFrame f;
	struct bt_pyframe *out;
	struct bt_code *c;
	uintptr_t code0;
	int n = 0, lasti;

	out = calloc(BT_PY_MAX, sizeof *out);
	if (out == NULL)
		return;
	for (; fa != 0 && n < BT_PY_MAX; fa = (uintptr_t)f.previous) {
		if (bt_read(w, &f, fa, sizeof f) != 0)
			break;
#if PY_VERSION_HEX >= 0x030C0000
		/* Owned by the C stack or the interpreter (3.14 renamed it):
		 * the shim an eval call puts below its first frame. */
		if (f.owner > FRAME_OWNED_BY_FRAME_OBJECT) {
			if (n > 0)
				out[n - 1].entry = 1;
			continue;
		}
#endif
		c = bt_code_get(w, BT_FRAME_CODE(f));
		if (c == NULL)
			break;
		code0 =
		    BT_FRAME_CODE(f) + offsetof(PyCodeObject, co_code_adaptive);
		lasti = (int)(((intptr_t)BT_FRAME_INSTR(f) - (intptr_t)code0) /
		    (intptr_t)sizeof(_Py_CODEUNIT));
		if (f.owner != FRAME_OWNED_BY_GENERATOR &&
		    lasti < c->firsttraceable)
			continue; /* incomplete: not started yet */
		out[n].func = c->func;
		out[n].file = c->file;
		out[n].lineno = c->table != NULL
		    ? bt_addr2line(c, lasti * (int)sizeof(_Py_CODEUNIT))
		    : 0;
#if PY_VERSION_HEX < 0x030C0000
		out[n].entry = f.is_entry;
#endif
		n++;
	}
	w->py[ti] = out;
	w->npy[ti] = n;
}

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

/* The innermost frame of thread state ts (copied into our memory), or 0. */
static uintptr_t
bt_first_frame(struct bt_work *w, const PyThreadState *ts)
{
#if PY_VERSION_HEX >= 0x030D0000
	(void)w;
	return (uintptr_t)ts->current_frame;
#else
	_PyCFrame cf;

	if (bt_read(w, &cf, (uintptr_t)ts->cframe, sizeof cf) != 0)
		return 0;
	return (uintptr_t)cf.current_frame;
#endif
}

/* Walks every interpreter's thread states. */
static void
bt_walk_python(struct bt_work *w)
{
	PyInterpreterState is;
	PyThreadState ts;
	uintptr_t ia, ta;
	int ni = 0, nt, ti;

	if (bt_read(w, &ia, (uintptr_t)&_PyRuntime.interpreters.head,
		sizeof ia) != 0)
		return;
	for (; ia != 0 && ni < 64; ia = (uintptr_t)is.next, ni++) {
		if (bt_read(w, &is, ia, sizeof is) != 0)
			return;
		nt = 0;
		for (ta = (uintptr_t)is.threads.head; ta != 0 && nt < 4096;
		     ta = (uintptr_t)ts.next, nt++) {
			if (bt_read(w, &ts, ta, sizeof ts) != 0)
				break;
			ti = bt_thread_index(w->bt, (long)ts.native_thread_id);
			if (ti < 0 || w->py[ti] != NULL)
				continue;
			bt_walk_tstate(w, ti, bt_first_frame(w, &ts));
		}
	}
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

/* The handler: unwinds the interrupted context of this thread into its
 * slot. Async-signal-safe: atomics, libunwind local unwinding, sem_post. */
static void
bt_handler(int sig, siginfo_t *si, void *uc)
{
	int saved = errno, i, expect, n = 0;
	pid_t tid = (pid_t)syscall(SYS_gettid);
	struct bt_slot *s;
	unw_cursor_t cur;
	unw_word_t ip;

	(void)sig;
	if (si->si_code != SI_TKILL || si->si_pid != agent_pid)
		goto out;
	for (i = 0; i < BT_SLOTS; i++) {
		s = &bt_slots[i];
		if (atomic_load(&s->tid) != tid)
			continue;
		expect = BT_WANT;
		if (!atomic_compare_exchange_strong(
			&s->state, &expect, BT_BUSY))
			continue;
		if (unw_init_local2(&cur, (unw_context_t *)uc,
			UNW_INIT_SIGNAL_FRAME) == 0) {
			do {
				if (unw_get_reg(&cur, UNW_REG_IP, &ip) != 0 ||
				    ip == 0)
					break;
				s->ips[n++] = (uintptr_t)ip;
			} while (n < BT_NATIVE_MAX && unw_step(&cur) > 0);
		}
		s->n = n;
		atomic_store(&s->state, BT_DONE);
		sem_post(&bt_sem);
		break;
	}
out:
	errno = saved;
}

/* Chooses and installs the signal once; returns it, or -1 with *cause. */
static int
bt_signal_setup(char **cause)
{
	struct sigaction sa, old;
	unw_context_t ctx;
	unw_cursor_t cur;
	int s;

	if (bt_signo > 0)
		return bt_signo;
	if (bt_signo < 0) {
		cause_set(cause, "no free real-time signal");
		return -1;
	}
	/* Warm libunwind's caches here rather than in the first handler. */
	unw_getcontext(&ctx);
	if (unw_init_local(&cur, &ctx) == 0)
		while (unw_step(&cur) > 0)
			;
	if (sem_init(&bt_sem, 0, 0) != 0) {
		cause_set(
		    cause, "cannot create a semaphore: %s", strerror(errno));
		return -1;
	}
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = bt_handler;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigfillset(&sa.sa_mask);
	for (s = SIGRTMAX; s >= SIGRTMIN; s--) {
		if (sigaction(s, NULL, &old) != 0 ||
		    (old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL)
			continue; /* the application's */
		if (sigaction(s, &sa, NULL) == 0) {
			bt_signo = s;
			log_info(
			    "backtrace: native unwinding uses signal %d", s);
			return s;
		}
	}
	bt_signo = -1;
	cause_set(cause, "no free real-time signal");
	return -1;
}

/* Signals every thread that has a slot and waits for the answers; each
 * slot ends IDLE (no answer) or DONE. */
static void
bt_signal_all(struct bt_work *w)
{
	struct backtrace *bt = w->bt;
	struct timespec deadline;
	int i, pending, expect, spins;

	for (i = 0; i < bt->nthreads; i++) {
		if (w->nosig[i] != NULL)
			continue;
		atomic_store(&bt_slots[i].tid, (pid_t)bt->threads[i].tid);
		atomic_store(&bt_slots[i].state, BT_WANT);
		if (syscall(SYS_tgkill, agent_pid, (pid_t)bt->threads[i].tid,
			w->signo) != 0) {
			expect = BT_WANT;
			atomic_compare_exchange_strong(
			    &bt_slots[i].state, &expect, BT_IDLE);
		}
	}
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_nsec += BT_SIGNAL_MS * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	for (;;) {
		pending = 0;
		for (i = 0; i < bt->nthreads; i++) {
			int st = atomic_load(&bt_slots[i].state);

			pending += st == BT_WANT || st == BT_BUSY;
		}
		if (pending == 0)
			break;
		if (sem_timedwait(&bt_sem, &deadline) != 0 &&
		    errno == ETIMEDOUT)
			break;
	}
	/* Withdraw what was not answered; wait out a handler mid-way. */
	for (i = 0; i < bt->nthreads; i++) {
		expect = BT_WANT;
		atomic_compare_exchange_strong(
		    &bt_slots[i].state, &expect, BT_IDLE);
		for (spins = 0;
		     atomic_load(&bt_slots[i].state) == BT_BUSY && spins < 1000;
		     spins++)
			usleep(100);
		if (atomic_load(&bt_slots[i].state) == BT_BUSY) {
			bt_native_broken = 1;
			log_info("backtrace: thread %ld never finished its "
				 "unwinding; native frames are off",
			    bt->threads[i].tid);
		}
	}
	while (sem_trywait(&bt_sem) == 0)
		;
}

/* Copies the answered slots out; called after bt_signal_all. */
static void
bt_collect_native(struct bt_work *w, uintptr_t **ips, int *nips)
{
	int i;

	for (i = 0; i < w->bt->nthreads; i++) {
		struct bt_slot *s = &bt_slots[i];

		nips[i] = -1;
		if (atomic_load(&s->state) == BT_DONE) {
			ips[i] = malloc(sizeof(uintptr_t) * (size_t)(s->n + 1));
			if (ips[i] != NULL) {
				memcpy(ips[i], s->ips,
				    sizeof(uintptr_t) * (size_t)s->n);
				nips[i] = s->n;
			}
		}
		if (atomic_load(&s->state) != BT_BUSY) {
			atomic_store(&s->state, BT_IDLE);
			atomic_store(&s->tid, 0);
		}
	}
}

/* Native capture plus Python walk: the part that wants a still process. */
struct bt_job {
	struct bt_work *w;
	uintptr_t **ips;
	int *nips;
};

static void
bt_still_part(struct bt_job *job)
{
	struct bt_work *w = job->w;

	if (w->signo > 0) {
		bt_signal_all(w);
		bt_collect_native(w, job->ips, job->nips);
	}
	bt_walk_python(w);
}

static int
bt_gil_job(void *arg, char **cause)
{
	struct bt_job *job = arg;

	(void)cause;
	job->w->gil_held = 1;
	bt_still_part(job);
	bt_python_names(job->w);
	return 0;
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
		if (bt->nthreads == BT_SLOTS)
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

/* Whether signo is set in the hex mask that follows key in the text of
 * a /proc status file. */
static int
bt_mask_has(const char *status, const char *key, int signo)
{
	const char *p = strstr(status, key);
	unsigned long long mask;

	if (p == NULL)
		return 0;
	mask = strtoull(p + strlen(key), NULL, 16);
	return signo >= 1 && signo <= 64 && ((mask >> (signo - 1)) & 1);
}

/* Why thread tid cannot answer signo now, or NULL: a signal it blocks
 * would only queue up until it unblocks. */
static const char *
bt_signal_blocked(long tid, int signo)
{
	char path[96], buf[4096];
	ssize_t n;
	int fd;

	snprintf(path, sizeof path, "/proc/self/task/%ld/status", tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return "the thread exited";
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	if (bt_mask_has(buf, "\nSigBlk:", signo))
		return "the thread blocks the signal used to reach it";
	if (bt_mask_has(buf, "\nSigPnd:", signo))
		return "an earlier signal to the thread is still pending";
	return NULL;
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

/* Merges thread ti's native addresses with its Python frames: each eval
 * loop frame stands for the Python frames up to the next entry frame. */
static int
bt_merge(struct bt_work *w, int ti, const uintptr_t *ips, int nips)
{
	struct backtrace_thread *t = &w->bt->threads[ti];
	const struct bt_pyframe *py = w->py[ti];
	int npy = w->npy[ti], j = 0, k, cap = 0, evalf;
	const struct bt_sym *s;
	const char *lib, *sym;
	char name[512];
	uintptr_t base;

	for (k = 0; k < nips; k++) {
		/* A return address points after the call; look up the call. */
		s = bt_symbolize(w, k == 0 ? ips[k] : ips[k] - 1);
		sym = s->func;
		lib = s->lib;
		base = s->base;
		evalf =
		    sym != NULL && strcmp(sym, "_PyEval_EvalFrameDefault") == 0;
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
bt_work_free(struct bt_work *w, uintptr_t **ips)
{
	int i;

	for (i = 0; w->bt != NULL && i < w->bt->nthreads; i++) {
		if (w->py != NULL)
			free(w->py[i]);
		if (w->pyname != NULL)
			free(w->pyname[i]);
		if (ips != NULL)
			free(ips[i]);
	}
	for (i = 0; i < w->ncodes; i++) {
		free(w->codes[i].func);
		free(w->codes[i].file);
		free(w->codes[i].table);
	}
	free(w->codes);
	free(w->syms);
	free(w->py);
	free(w->npy);
	free(w->pyname);
	free(w->native_cause);
	free(w->nosig);
	if (w->read_pipe[0] >= 0) {
		close(w->read_pipe[0]);
		close(w->read_pipe[1]);
	}
}

struct backtrace *
backtrace_capture(long only_tid, int gil_ms, char **cause)
{
	struct bt_work w = { .read_pipe = { -1, -1 } };
	struct bt_job job = { .w = &w };
	struct backtrace *bt;
	char *gil_cause = NULL;
	int i, n, failed = 0, native;
	const char *why;

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
	w.py = calloc((size_t)n + 1, sizeof *w.py);
	w.npy = calloc((size_t)n + 1, sizeof *w.npy);
	w.pyname = calloc((size_t)n + 1, sizeof *w.pyname);
	w.codes = calloc(BT_CODE_CACHE, sizeof *w.codes);
	w.syms = calloc(BT_SYM_CACHE, sizeof *w.syms);
	job.ips = calloc((size_t)n + 1, sizeof *job.ips);
	job.nips = calloc((size_t)n + 1, sizeof *job.nips);
	if (w.py == NULL || w.npy == NULL || w.pyname == NULL ||
	    w.codes == NULL || w.syms == NULL || job.ips == NULL ||
	    job.nips == NULL) {
		cause_set(cause, "out of memory");
		goto fail;
	}
	for (i = 0; i < n; i++)
		job.nips[i] = -1;
	w.nosig = calloc((size_t)n + 1, sizeof *w.nosig);
	if (w.nosig == NULL) {
		cause_set(cause, "out of memory");
		goto fail;
	}
	native = config_get(CONFIG_BACKTRACE_NATIVE) != 0;
	if (native && bt_native_broken)
		cause_set(&w.native_cause, "an earlier unwinding never ended");
	else if (native)
		w.signo = bt_signal_setup(&w.native_cause);
	if (w.signo < 0)
		w.signo = 0;
	for (i = 0; w.signo > 0 && i < n; i++)
		w.nosig[i] = bt_signal_blocked(bt->threads[i].tid, w.signo);
	if (py_available(NULL) != 0 ||
	    py_run(bt_gil_job, &job, gil_ms, &gil_cause) != 0) {
		/* The GIL is stuck: nothing runs Python, read it as it is. */
		w.gil_held = 0;
		bt_still_part(&job);
		bt->without_gil = 1;
	}
	free(gil_cause);
	bt_names_apply(&w);
	for (i = 0; i < n; i++) {
		struct backtrace_thread *t = &bt->threads[i];

		if (job.nips[i] < 0 && native) {
			why = w.nosig[i] != NULL ? w.nosig[i] : w.native_cause;
			if (why == NULL)
				why = "the thread did not answer the signal "
				      "within 100 ms";
			if (asprintf(&t->note, "native unwinding failed: %s",
				why) < 0)
				t->note = NULL;
		}
		if (bt_merge(
			&w, i, job.ips[i], job.nips[i] < 0 ? 0 : job.nips[i])) {
			failed = 1;
			break;
		}
	}
	if (failed) {
		cause_set(cause, "out of memory");
		goto fail;
	}
	bt_work_free(&w, job.ips);
	free(job.ips);
	free(job.nips);
	pthread_mutex_unlock(&bt_lock);
	return bt;
fail:
	bt_work_free(&w, job.ips);
	free(job.ips);
	free(job.nips);
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
