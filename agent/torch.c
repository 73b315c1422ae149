/* Torch tracing: global module forward hooks, autograd node hooks for
 * backward time and optimizer step hooks, all in C, writing rows into
 * python.torch_trace.
 *
 * How it is wired:
 * - Forward: torch.nn.modules.module.register_module_forward_pre_hook and
 *   register_module_forward_hook with two C functions. A per-thread stack
 *   pairs the calls; an entry left by a forward that raised is dropped by
 *   comparing Python recursion depths.
 * - Backward (torch 1.13 and 2.x alike): nothing wraps a tensor and no
 *   module backward hook is used, so autograd computes exactly what it
 *   would without us (in-place ops after a module included). After a traced
 *   forward, hooks go on autograd nodes: a pre-hook on the grad_fn of the
 *   module's output starts the clock; the module's backward ends when the
 *   pre-hook on the grad_fn of its first input fires (the gradient of the
 *   input is complete), or, when the input and output share a node (an
 *   in-place module), at that node's post-hook, or, when the input has no
 *   grad_fn (data, a leaf), at the end of the backward pass (a callback
 *   queued on the autograd engine). A module whose output holds no tensor
 *   gets no backward row, and the log says so once per module.
 * - Optimizer: torch 2.x global register_optimizer_step_pre_hook/post_hook.
 *   torch 1.13 has none, so `step` of every Optimizer subclass is replaced
 *   by a small C callable that calls the original between the two hooks
 *   (classes defined later are found by a rescan at most once a second);
 *   disabling puts the original back where it is still ours.
 * - The step clock: optimizer steps completed (the outermost step call of
 *   nested ones); before any optimizer step is seen, completed calls of the
 *   outermost module (the first one seen: the model, not the loss after it). A step is traced when step % round(1/rate) == 0. In
 *   a step that is not traced the forward hooks are taken off entirely
 *   (once an optimizer drives the clock), so such steps cost nothing.
 * - torch imported after the agent: a finder at the front of sys.meta_path
 *   answers only for "torch" by wrapping the real loader; after torch's
 *   exec_module it takes itself out and starts the setup thread, which
 *   installs the hooks once the import is over (never from inside the
 *   import: that left the import lock held for other threads).
 *
 * Threads: every torch_* hook runs under the GIL, which guards all the
 * state below; torch_init and the config appliers hand work to a py worker
 * with py_run. Rows reference interned names that are never freed. */
#define Py_BUILD_CORE 1
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <Python.h>
#include <structmember.h>
#include <internal/pycore_frame.h>
#if PY_VERSION_HEX >= 0x030E0000
#include <internal/pycore_interpframe_structs.h>
#endif

#include "agent.h"
#include "log.h"

#define TORCH_STACK      128 /* nested module calls tracked per thread */
#define TORCH_OSTACK     8   /* nested optimizer steps */
#define TORCH_NODE_EV    6   /* events per node hook object */
#define TORCH_NODE_CACHE 8

/* One module call in flight on a thread. */
struct torch_frame {
	PyObject *module; /* borrowed: alive while its call runs */
	int depth;
	int sampled;
	const char *name;
	int64_t step, seq;
	double t0;
};

struct torch_tls {
	struct torch_frame st[TORCH_STACK];
	int n;
	long tid;
};

/* The backward of one traced module call, shared by the node hooks that
 * start and end it (plain refcount, under the GIL). */
struct torch_bwcall {
	int refs;
	int done;
	int eob; /* ends at the end of the backward pass */
	const char *name;
	int64_t step;
	double t0;
	struct torch_bwcall *eob_next;
};

enum torch_ev { TORCH_START, TORCH_END };
enum torch_hook_kind { TORCH_PRE, TORCH_POST };

/* A callable registered on one autograd node; owns its calls' refs. */
struct torch_nodehook {
	PyObject_HEAD int n;
	struct torch_bwcall *call[TORCH_NODE_EV];
	enum torch_ev ev[TORCH_NODE_EV];
};

/* Optimizer.step replaced on a class (torch 1.13). */
struct torch_stepwrap {
	PyObject_HEAD PyObject *orig;
	PyObject *dict;
};

struct torch_loaderwrap {
	PyObject_HEAD PyObject *orig;
};

struct torch_patch {
	PyObject *cls;
	PyObject *orig;
	PyObject *wrap;
};

struct torch_name_ent {
	PyObject *key; /* not owned; checked through wr */
	PyObject *wr;
	const char *name;
};

struct torch_ostep {
	PyObject *opt;
	int depth;
	double t0;
};

/* All under the GIL except rate (written by a request thread, read whole)
 * and child (set in the fork child before anything else runs). */
static struct {
	int want;      /* tracing wanted (probing.torch.enabled) */
	int installed; /* hooks in place */
	int fwd_on;    /* forward hooks registered now */
	volatile int child;
	volatile double rate;
	PyObject *fwd_pre_fn, *fwd_post_fn, *opt_pre_fn, *opt_post_fn;
	PyObject *fwd_pre_handle, *fwd_post_handle;
	PyObject *opt_pre_handle, *opt_post_handle;
	PyObject *modmod;    /* torch.nn.modules.module */
	PyObject *optimizer; /* torch.optim.optimizer.Optimizer */
	PyTypeObject *tensor_type;
	PyObject *engine; /* Variable._execution_engine */
	PyObject *eob_fn;
	PyObject *cuda, *cuda_stats, *cuda_dev;
	int cuda_on;
	int global_optim_hooks;
	struct torch_patch *patches;
	size_t npatches;
	double last_scan;
	PyObject *finder;
	int finder_busy;
	/* the step clock */
	int optim_mode;
	int64_t opt_steps, root_calls;
	PyObject *clock; /* weakref to the outermost module that counts */
	int64_t cur_step, seq;
	int cur_valid, cur_sampled;
	struct torch_ostep ostack[TORCH_OSTACK];
	int on;
	/* backward */
	struct torch_bwcall *eob_list;
	int eob_queued;
	struct {
		PyObject *node, *hook;
		enum torch_hook_kind kind;
	} cache[TORCH_NODE_CACHE];
	int cache_next;
	/* names */
	struct torch_name_ent *names;
	size_t names_cap, names_n;
	const char **interned;
	size_t interned_cap, interned_n;
	PyObject *s_grad_fn, *s_queue_callback; /* interned names */
	PyObject *s_backward_hooks, *s_register_hook_dict, *zero;
	PyObject *dummy; /* torch.empty(0): carries hook dicts to nodes */
	int no_fast;
	int rank;
	uint64_t errors, rows;
} T;

static __thread struct torch_tls torch_tls;

static PyTypeObject torch_nodehook_type;
static PyTypeObject torch_stepwrap_type;
static PyTypeObject torch_finder_type;
static PyTypeObject torch_loaderwrap_type;

static double
torch_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double
torch_wall(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Python frames on this thread's stack: equal for the pre- and post-hook
 * of one module call (both called from its _call_impl frame), smaller for
 * any call made after it unwound. (The recursion counters will not do:
 * they also count C calls, which differ before and after the interpreter
 * specializes a call site.) */
static int
torch_depth(void)
{
	PyThreadState *ts = PyThreadState_Get();
	_PyInterpreterFrame *f;
	int d = 0;

#if PY_VERSION_HEX >= 0x030D0000
	f = ts->current_frame;
#else
	f = ts->cframe->current_frame;
#endif
	for (; f != NULL; f = f->previous)
		d++;
	return d;
}

/* The object weak reference wr points to, or NULL when it died; the
 * pointer is for comparing identity only (no reference is kept). Under
 * the GIL. */
static PyObject *
torch_weak_target(PyObject *wr)
{
	PyObject *o;

#if PY_VERSION_HEX >= 0x030D0000
	if (PyWeakref_GetRef(wr, &o) != 1) {
		PyErr_Clear();
		return NULL;
	}
	Py_DECREF(o);
#else
	o = PyWeakref_GetObject(wr);
	if (o == NULL)
		PyErr_Clear();
#endif
	return o == Py_None ? NULL : o;
}

/* Clears a Python error raised inside our code, counting it; errors that
 * are not Exceptions (KeyboardInterrupt, SystemExit) are the user's own
 * and stay set. Returns -1 when one stays set. */
static int
torch_swallow(const char *what)
{
	PyObject *type, *value, *tb;

	if (!PyErr_Occurred())
		return 0;
	if (!PyErr_ExceptionMatches(PyExc_Exception))
		return -1;
	PyErr_Fetch(&type, &value, &tb);
	if (T.errors++ < 10) {
		PyObject *s = value ? PyObject_Str(value) : NULL;
		const char *msg = s ? PyUnicode_AsUTF8(s) : NULL;

		log_info("torch: %s failed: %s", what, msg ? msg : "?");
		Py_XDECREF(s);
		PyErr_Clear();
	}
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
	return 0;
}

/* Names ------------------------------------------------------------------ */

static uint64_t
torch_hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

static size_t
torch_hash_ptr(const void *p)
{
	uint64_t x = (uint64_t)(uintptr_t)p;

	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return (size_t)x;
}

/* Returns a copy of s that lives as long as the process, or NULL. */
static const char *
torch_intern(const char *s)
{
	size_t i, cap, mask;
	const char **tab;
	char *copy;

	if (T.interned_n * 2 + 2 > T.interned_cap) {
		cap = T.interned_cap ? T.interned_cap * 2 : 256;
		tab = calloc(cap, sizeof *tab);
		if (tab == NULL)
			return NULL;
		for (i = 0; i < T.interned_cap; i++) {
			size_t j;

			if (T.interned[i] == NULL)
				continue;
			j = torch_hash_str(T.interned[i]) & (cap - 1);
			while (tab[j] != NULL)
				j = (j + 1) & (cap - 1);
			tab[j] = T.interned[i];
		}
		free(T.interned);
		T.interned = tab;
		T.interned_cap = cap;
	}
	mask = T.interned_cap - 1;
	for (i = torch_hash_str(s) & mask; T.interned[i] != NULL;
	     i = (i + 1) & mask) {
		if (strcmp(T.interned[i], s) == 0)
			return T.interned[i];
	}
	copy = strdup(s);
	if (copy == NULL)
		return NULL;
	T.interned[i] = copy;
	T.interned_n++;
	return copy;
}

/* The cached name of module m, or NULL. */
static const char *
torch_name_get(PyObject *m)
{
	size_t i, mask;
	struct torch_name_ent *e;

	if (T.names_cap == 0)
		return NULL;
	mask = T.names_cap - 1;
	for (i = torch_hash_ptr(m) & mask; (e = &T.names[i])->key != NULL;
	     i = (i + 1) & mask) {
		if (e->key == m)
			return e->wr != NULL && torch_weak_target(e->wr) == m
			    ? e->name
			    : NULL;
	}
	return NULL;
}

/* Grows the name map, dropping entries whose module died. */
static int
torch_name_grow(void)
{
	size_t i, j, cap = T.names_cap ? T.names_cap * 2 : 1024;
	struct torch_name_ent *tab, *e;

	tab = calloc(cap, sizeof *tab);
	if (tab == NULL)
		return -1;
	T.names_n = 0;
	for (i = 0; i < T.names_cap; i++) {
		e = &T.names[i];
		if (e->key == NULL)
			continue;
		if (e->wr == NULL || torch_weak_target(e->wr) != e->key) {
			Py_XDECREF(e->wr);
			continue;
		}
		j = torch_hash_ptr(e->key) & (cap - 1);
		while (tab[j].key != NULL)
			j = (j + 1) & (cap - 1);
		tab[j] = *e;
		T.names_n++;
	}
	free(T.names);
	T.names = tab;
	T.names_cap = cap;
	return 0;
}

static void
torch_name_put(PyObject *m, const char *name)
{
	size_t i, mask;
	struct torch_name_ent *e;
	PyObject *wr;

	if (name == NULL)
		return;
	if ((T.names_n + 1) * 2 > T.names_cap && torch_name_grow() != 0)
		return;
	wr = PyWeakref_NewRef(m, NULL);
	if (wr == NULL) {
		PyErr_Clear();
		return;
	}
	mask = T.names_cap - 1;
	for (i = torch_hash_ptr(m) & mask; (e = &T.names[i])->key != NULL;
	     i = (i + 1) & mask) {
		if (e->key == m)
			break;
	}
	if (e->key == NULL)
		T.names_n++;
	Py_XDECREF(e->wr);
	e->key = m;
	e->wr = wr;
	e->name = name;
}

/* Names every module under root: the root by its class, the others by
 * their dotted path below it. */
static void
torch_name_walk(PyObject *root)
{
	PyObject *it, *item, *sub, *key;
	const char *cls = _PyType_Name(Py_TYPE(root)), *path;
	char *full;

	it = PyObject_CallMethod(root, "named_modules", NULL);
	if (it == NULL || !PyIter_Check(it)) {
		Py_XDECREF(it);
		torch_swallow("named_modules");
		return;
	}
	while ((item = PyIter_Next(it)) != NULL) {
		if (PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 2 &&
		    PyUnicode_Check(key = PyTuple_GET_ITEM(item, 0)) &&
		    (path = PyUnicode_AsUTF8(key)) != NULL) {
			sub = PyTuple_GET_ITEM(item, 1);
			if (*path == '\0')
				torch_name_put(sub, torch_intern(cls));
			else if (asprintf(&full, "%s.%s", cls, path) >= 0) {
				torch_name_put(sub, torch_intern(full));
				free(full);
			}
		}
		Py_DECREF(item);
	}
	Py_DECREF(it);
	torch_swallow("named_modules");
}

/* The name of the module in frame f (f->module), walking the root (the
 * bottom of the stack) on a miss; a module the root does not hold is
 * named below its caller by its class. */
static const char *
torch_name(struct torch_tls *t, struct torch_frame *f)
{
	const char *name = torch_name_get(f->module), *cls;
	char *full;

	if (name != NULL)
		return name;
	torch_name_walk(t->st[0].module);
	if ((name = torch_name_get(f->module)) != NULL)
		return name;
	cls = _PyType_Name(Py_TYPE(f->module));
	if (f == &t->st[0] || f[-1].name == NULL)
		name = torch_intern(cls);
	else if (asprintf(&full, "%s.%s", f[-1].name, cls) >= 0) {
		name = torch_intern(full);
		free(full);
	}
	torch_name_put(f->module, name);
	return name != NULL ? name : "?";
}

/* Rows ------------------------------------------------------------------- */

/* torch.cuda.memory_allocated() in MB once CUDA is initialized, else 0;
 * never initializes CUDA. */
static double
torch_allocated(void)
{
	PyObject *v, *dev, *d, *a, *b, *c;
	double mb = 0;

	if (T.cuda == NULL)
		return 0;
	if (!T.cuda_on) {
		v = PyObject_GetAttrString(T.cuda, "_initialized");
		if (v == NULL) {
			PyErr_Clear();
			return 0;
		}
		T.cuda_on = PyObject_IsTrue(v) == 1;
		Py_DECREF(v);
		if (!T.cuda_on)
			return 0;
	}
	if (T.cuda_stats != NULL && T.cuda_dev != NULL) {
		/* Nested stats straight from C++: memory_allocated() flattens
		 * the whole dict in Python first. */
		dev = PyObject_CallNoArgs(T.cuda_dev);
		d = dev ? PyObject_CallOneArg(T.cuda_stats, dev) : NULL;
		a = d && PyDict_Check(d)
		    ? PyDict_GetItemString(d, "allocated_bytes")
		    : NULL;
		b = a && PyDict_Check(a) ? PyDict_GetItemString(a, "all")
					 : NULL;
		c = b && PyDict_Check(b) ? PyDict_GetItemString(b, "current")
					 : NULL;
		if (c != NULL)
			mb = PyFloat_AsDouble(c) / (1024.0 * 1024.0);
		Py_XDECREF(dev);
		Py_XDECREF(d);
		if (c != NULL && !PyErr_Occurred())
			return mb;
		PyErr_Clear();
	}
	v = PyObject_CallMethod(T.cuda, "memory_allocated", NULL);
	if (v != NULL)
		mb = PyFloat_AsDouble(v) / (1024.0 * 1024.0);
	Py_XDECREF(v);
	torch_swallow("torch.cuda.memory_allocated");
	return mb;
}

static void
torch_emit(int64_t step, int64_t seq, const char *name, const char *stage,
    double duration)
{
	struct torch_trace_rec r;
	struct torch_tls *t = &torch_tls;

	if (tbl_torch_trace_ring.buf == NULL)
		return;
	if (t->tid == 0)
		t->tid = (long)syscall(SYS_gettid);
	memset(&r, 0, sizeof r);
	r.step = step;
	r.seq = seq;
	r.module = name;
	r.stage = stage;
	r.allocated = torch_allocated();
	r.duration = duration;
	r.time = torch_wall();
	r.thread_id = t->tid;
	r.rank = T.rank;
	ring_push(&tbl_torch_trace_ring, &r);
	T.rows++;
}

/* The step clock ------------------------------------------------------- */

static int64_t
torch_step(void)
{
	if (T.optim_mode)
		return T.opt_steps;
	return T.root_calls > 0 ? T.root_calls - 1 : 0;
}

/* Counts a call of the clock module: the first outermost module seen
 * (the model, not the loss called after it), replaced when it dies. */
static void
torch_clock_tick(PyObject *m)
{
	PyObject *cur = T.clock ? torch_weak_target(T.clock) : NULL;

	if (cur == NULL) {
		Py_CLEAR(T.clock);
		if ((T.clock = PyWeakref_NewRef(m, NULL)) == NULL) {
			PyErr_Clear();
			return;
		}
		cur = m;
	}
	if (cur == m)
		T.root_calls++;
}

/* Whether step is traced; decided once per step so that a step is traced
 * whole or not at all. Numbers the calls of a new step from 0. */
static int
torch_sampled(int64_t step)
{
	double r, n;

	if (T.cur_valid && step == T.cur_step)
		return T.cur_sampled;
	T.cur_valid = 1;
	T.cur_step = step;
	T.seq = 0;
	r = T.rate;
	if (r <= 0) {
		T.cur_sampled = 0;
		return 0;
	}
	n = round(1.0 / r);
	if (n < 1)
		n = 1;
	T.cur_sampled = n >= 9.2e18 ? step == 0 : step % (int64_t)n == 0;
	return T.cur_sampled;
}

/* Backward -------------------------------------------------------------- */

static void
torch_bwcall_unref(struct torch_bwcall *c)
{
	if (c != NULL && --c->refs == 0)
		free(c);
}

static void
torch_bwcall_finish(struct torch_bwcall *c)
{
	double now;

	if (c->done || c->t0 == 0)
		return;
	now = torch_now();
	c->done = 1;
	torch_emit(c->step, c->step == T.cur_step ? T.seq++ : 0, c->name,
	    "backward", now - c->t0);
}

static void
torch_cache_clear(void)
{
	int i;

	for (i = 0; i < TORCH_NODE_CACHE; i++) {
		Py_CLEAR(T.cache[i].node);
		Py_CLEAR(T.cache[i].hook);
	}
}

/* Called by the autograd engine when a backward pass ends. */
static PyObject *
torch_eob(PyObject *self, PyObject *unused)
{
	struct torch_bwcall *c;

	(void)self;
	(void)unused;
	T.eob_queued = 0;
	while ((c = T.eob_list) != NULL) {
		T.eob_list = c->eob_next;
		if (!T.child)
			torch_bwcall_finish(c);
		torch_bwcall_unref(c);
	}
	torch_cache_clear();
	Py_RETURN_NONE;
}

static void
torch_eob_add(struct torch_bwcall *c)
{
	PyObject *r;

	if (T.engine == NULL)
		return;
	c->refs++;
	c->eob_next = T.eob_list;
	T.eob_list = c;
	if (T.eob_queued)
		return;
	r = PyObject_CallMethodOneArg(T.engine, T.s_queue_callback, T.eob_fn);
	if (r != NULL) {
		T.eob_queued = 1;
		Py_DECREF(r);
		return;
	}
	T.eob_list = c->eob_next;
	torch_bwcall_unref(c);
	torch_swallow("queue_callback");
}

static void
torch_nodehook_fire(struct torch_nodehook *h)
{
	struct torch_bwcall *c;
	int i;

	for (i = 0; i < h->n; i++) {
		c = h->call[i];
		if (h->ev[i] == TORCH_START) {
			if (c->done || c->t0 != 0)
				continue;
			c->t0 = torch_now();
			if (c->eob)
				torch_eob_add(c);
		} else
			torch_bwcall_finish(c);
	}
}

static PyObject *
torch_nodehook_call(PyObject *self, PyObject *args, PyObject *kw)
{
	(void)args;
	(void)kw;
	if (!T.child)
		torch_nodehook_fire((struct torch_nodehook *)self);
	if (torch_swallow("backward hook") != 0)
		return NULL;
	Py_RETURN_NONE;
}

static void
torch_nodehook_dealloc(PyObject *self)
{
	struct torch_nodehook *h = (struct torch_nodehook *)self;
	int i;

	for (i = 0; i < h->n; i++)
		torch_bwcall_unref(h->call[i]);
	Py_TYPE(self)->tp_free(self);
}

static PyTypeObject torch_nodehook_type = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "probing.NodeHook",
	.tp_basicsize = sizeof(struct torch_nodehook),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_dealloc = torch_nodehook_dealloc,
	.tp_call = torch_nodehook_call,
	.tp_doc = "probing: times a module's backward (returns None)",
};

/* Puts hook on node as a pre-hook the way Tensor.register_hook does
 * (node._register_hook_dict with a dict {0: hook}, read from the
 * _backward_hooks of a private empty tensor): all in C++, unlike
 * Node.register_prehook, whose RemovableHandle is built in Python and
 * costs several times more. Returns 0, or -1 (error cleared) to fall back
 * to register_prehook. */
static int
torch_prehook_fast(PyObject *node, PyObject *hook)
{
	PyObject *d, *r;

	if (T.dummy == NULL || T.no_fast)
		return -1;
	d = PyDict_New();
	if (d == NULL || PyDict_SetItem(d, T.zero, hook) != 0 ||
	    PyObject_SetAttr(T.dummy, T.s_backward_hooks, d) != 0) {
		Py_XDECREF(d);
		PyErr_Clear();
		return -1;
	}
	Py_DECREF(d);
	r = PyObject_CallMethodOneArg(node, T.s_register_hook_dict, T.dummy);
	if (r == NULL) {
		/* A torch whose nodes lack it: the slow path from now on. */
		PyErr_Clear();
		T.no_fast = 1;
		log_info("torch: node._register_hook_dict failed; backward "
			 "hooks go through register_prehook");
		return -1;
	}
	Py_DECREF(r);
	return 0;
}

/* Our hook of the given kind on node, registering one if the recent ones
 * do not include it; a borrowed reference (the cache holds it) or NULL. */
static struct torch_nodehook *
torch_nodehook_on(PyObject *node, enum torch_hook_kind kind)
{
	struct torch_nodehook *h;
	PyObject *handle;
	int i;

	for (i = 0; i < TORCH_NODE_CACHE; i++) {
		if (T.cache[i].node == node && T.cache[i].kind == kind &&
		    ((struct torch_nodehook *)T.cache[i].hook)->n <
			TORCH_NODE_EV)
			return (struct torch_nodehook *)T.cache[i].hook;
	}
	h = PyObject_New(struct torch_nodehook, &torch_nodehook_type);
	if (h == NULL)
		return NULL;
	h->n = 0;
	if (kind != TORCH_PRE || torch_prehook_fast(node, (PyObject *)h) != 0) {
		handle = PyObject_CallMethod(node,
		    kind == TORCH_PRE ? "register_prehook" : "register_hook",
		    "O", (PyObject *)h);
		if (handle == NULL) {
			Py_DECREF(h);
			return NULL;
		}
		Py_DECREF(handle);
	}
	i = T.cache_next;
	T.cache_next = (i + 1) % TORCH_NODE_CACHE;
	Py_XSETREF(T.cache[i].node, Py_NewRef(node));
	Py_XSETREF(T.cache[i].hook, (PyObject *)h);
	T.cache[i].kind = kind;
	return h;
}

static int
torch_nodehook_add(PyObject *node, enum torch_hook_kind kind,
    struct torch_bwcall *c, enum torch_ev ev)
{
	struct torch_nodehook *h = torch_nodehook_on(node, kind);

	if (h == NULL)
		return -1;
	h->call[h->n] = c;
	h->ev[h->n] = ev;
	h->n++;
	c->refs++;
	return 0;
}

static int
torch_is_tensor(PyObject *o)
{
	return T.tensor_type != NULL && PyObject_TypeCheck(o, T.tensor_type);
}

/* The first tensor in o: o itself, or an item of a tuple, list or dict
 * (one level); borrowed, or NULL. */
static PyObject *
torch_first_tensor(PyObject *o)
{
	PyObject *k, *v;
	Py_ssize_t i, n, pos = 0;

	if (torch_is_tensor(o))
		return o;
	if (PyTuple_Check(o) || PyList_Check(o)) {
		n = PySequence_Fast_GET_SIZE(o);
		for (i = 0; i < n; i++) {
			v = PySequence_Fast_GET_ITEM(o, i);
			if (torch_is_tensor(v))
				return v;
		}
	} else if (PyDict_Check(o)) {
		while (PyDict_Next(o, &pos, &k, &v)) {
			if (torch_is_tensor(v))
				return v;
		}
	}
	return NULL;
}

/* The grad_fn of tensor t as a new reference, NULL when it has none. */
static PyObject *
torch_grad_fn(PyObject *t)
{
	PyObject *g = PyObject_GetAttr(t, T.s_grad_fn);

	if (g == Py_None) {
		Py_DECREF(g);
		return NULL;
	}
	if (g == NULL)
		PyErr_Clear();
	return g;
}

static void
torch_bw_skip(const char *name, const char *why)
{
	static const char *said[64];
	static int nsaid;
	int i;

	for (i = 0; i < nsaid; i++) {
		if (said[i] == name)
			return;
	}
	if (nsaid < 64)
		said[nsaid++] = name;
	log_info("torch: no backward timing for %s: %s", name, why);
}

/* Puts the hooks that time the backward of the call in f. */
static void
torch_bw_arm(const struct torch_frame *f, PyObject *input, PyObject *output)
{
	PyObject *o, *x, *go, *gx = NULL;
	struct torch_bwcall *c;

	o = torch_first_tensor(output);
	if (o == NULL) {
		torch_bw_skip(f->name, "its output holds no tensor");
		return;
	}
	if ((go = torch_grad_fn(o)) == NULL)
		return; /* no autograd here: no backward */
	x = torch_first_tensor(input);
	if (x != NULL)
		gx = torch_grad_fn(x);
	c = calloc(1, sizeof *c);
	if (c == NULL)
		goto out;
	c->refs = 1;
	c->name = f->name;
	c->step = f->step;
	c->eob = gx == NULL;
	if (torch_nodehook_add(go, TORCH_PRE, c, TORCH_START) != 0)
		goto fail;
	if (gx == go) {
		if (torch_nodehook_add(go, TORCH_POST, c, TORCH_END) != 0)
			goto fail;
	} else if (gx != NULL &&
	    torch_nodehook_add(gx, TORCH_PRE, c, TORCH_END) != 0)
		goto fail;
	torch_bwcall_unref(c);
	goto out;
fail:
	c->done = 1;
	torch_bwcall_unref(c);
	if (PyErr_Occurred() && PyErr_ExceptionMatches(PyExc_Exception))
		torch_bw_skip(f->name, "cannot hook its autograd nodes");
	torch_swallow("backward hook registration");
out:
	Py_DECREF(go);
	Py_XDECREF(gx);
}

/* Forward hooks ---------------------------------------------------------- */

static void torch_optim_scan(void);

static PyObject *
torch_fwd_pre(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	struct torch_tls *t = &torch_tls;
	struct torch_frame *f;
	int depth, sampled;
	int64_t step;

	(void)self;
	if (T.child || !T.installed || nargs < 1)
		Py_RETURN_NONE;
	depth = torch_depth();
	while (t->n > 0 && t->st[t->n - 1].depth >= depth)
		t->n--; /* their forward raised */
	if (t->n == 0) {
		if (!T.optim_mode)
			torch_clock_tick(args[0]);
		if (!T.global_optim_hooks)
			torch_optim_scan();
	}
	step = torch_step();
	sampled = torch_sampled(step);
	if (t->n >= TORCH_STACK)
		Py_RETURN_NONE;
	f = &t->st[t->n++];
	f->module = args[0];
	f->depth = depth;
	f->sampled = sampled;
	f->name = NULL;
	if (sampled) {
		f->step = step;
		f->seq = T.seq++;
		f->name = torch_name(t, f);
		f->t0 = torch_now();
	}
	if (torch_swallow("forward pre-hook") != 0)
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *
torch_fwd_post(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	struct torch_tls *t = &torch_tls;
	struct torch_frame f;
	double now;
	int depth, i;

	(void)self;
	if (T.child || nargs < 3)
		Py_RETURN_NONE;
	now = torch_now();
	depth = torch_depth();
	for (i = t->n - 1; i >= 0; i--) {
		if (t->st[i].module == args[0] && t->st[i].depth == depth)
			break;
	}
	if (i < 0)
		Py_RETURN_NONE;
	f = t->st[i];
	t->n = i;
	if (!f.sampled || !T.installed)
		Py_RETURN_NONE;
	torch_emit(f.step, f.seq, f.name, "forward", now - f.t0);
	torch_bw_arm(&f, args[1], args[2]);
	if (torch_swallow("forward hook") != 0)
		return NULL;
	Py_RETURN_NONE;
}

/* Registers (on) or removes the forward hooks; 0 or -1 (error cleared). */
static int
torch_fwd_set(int on)
{
	PyObject *h;

	if (on == T.fwd_on)
		return 0;
	if (!on) {
		h = PyObject_CallMethod(T.fwd_pre_handle, "remove", NULL);
		Py_XDECREF(h);
		h = PyObject_CallMethod(T.fwd_post_handle, "remove", NULL);
		Py_XDECREF(h);
		Py_CLEAR(T.fwd_pre_handle);
		Py_CLEAR(T.fwd_post_handle);
		T.fwd_on = 0;
		return torch_swallow("removing forward hooks");
	}
	T.fwd_pre_handle = PyObject_CallMethod(
	    T.modmod, "register_module_forward_pre_hook", "O", T.fwd_pre_fn);
	if (T.fwd_pre_handle == NULL)
		goto fail;
	T.fwd_post_handle = PyObject_CallMethod(
	    T.modmod, "register_module_forward_hook", "O", T.fwd_post_fn);
	if (T.fwd_post_handle == NULL)
		goto fail;
	T.fwd_on = 1;
	return 0;
fail:
	torch_swallow("registering forward hooks");
	if (T.fwd_pre_handle != NULL) {
		h = PyObject_CallMethod(T.fwd_pre_handle, "remove", NULL);
		Py_XDECREF(h);
		PyErr_Clear();
	}
	Py_CLEAR(T.fwd_pre_handle);
	return -1;
}

/* Optimizer ------------------------------------------------------------- */

static void
torch_opt_enter(PyObject *opt)
{
	int depth = torch_depth(), n = T.on;

	while (n > 0 && n <= TORCH_OSTACK && T.ostack[n - 1].depth >= depth)
		n--; /* their step raised */
	T.on = n;
	if (!T.optim_mode) {
		T.optim_mode = 1;
		T.cur_valid = 0;
	}
	if (n < TORCH_OSTACK) {
		T.ostack[n].opt = opt;
		T.ostack[n].depth = depth;
		T.ostack[n].t0 = torch_now();
	}
	T.on = n + 1;
	if (n == 0)
		torch_cache_clear(); /* the backward pass is over */
}

static void
torch_opt_exit(PyObject *opt, int ok)
{
	struct torch_ostep s;
	int64_t step;
	double now = torch_now();

	(void)opt;
	if (T.on == 0)
		return;
	T.on--;
	if (T.on >= TORCH_OSTACK || T.on > 0)
		return; /* only the outermost step counts */
	s = T.ostack[0];
	if (!ok)
		return;
	step = T.opt_steps;
	if (torch_sampled(step))
		torch_emit(step, T.seq++,
		    torch_intern(_PyType_Name(Py_TYPE(s.opt))), "step",
		    now - s.t0);
	T.opt_steps++;
	/* Park the forward hooks through steps that are not traced. */
	if (torch_tls.n == 0 && T.installed)
		torch_fwd_set(torch_sampled(T.opt_steps));
}

static PyObject *
torch_opt_pre(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	(void)self;
	if (!T.child && T.installed && nargs >= 1)
		torch_opt_enter(args[0]);
	if (torch_swallow("optimizer pre-hook") != 0)
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *
torch_opt_post(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	(void)self;
	if (!T.child && T.installed && nargs >= 1)
		torch_opt_exit(args[0], 1);
	if (torch_swallow("optimizer hook") != 0)
		return NULL;
	Py_RETURN_NONE;
}

/* torch 1.13: the C callable that replaces Optimizer subclasses' step. */
static PyObject *
torch_stepwrap_call(PyObject *self, PyObject *args, PyObject *kw)
{
	struct torch_stepwrap *w = (struct torch_stepwrap *)self;
	PyObject *opt =
	    PyTuple_GET_SIZE(args) > 0 ? PyTuple_GET_ITEM(args, 0) : NULL;
	int active = opt != NULL && T.installed && !T.child;
	PyObject *r;

	if (active) {
		torch_opt_enter(opt);
		if (torch_swallow("optimizer pre-hook") != 0)
			return NULL;
	}
	r = PyObject_Call(w->orig, args, kw);
	if (active && T.installed) {
		if (r != NULL) {
			torch_opt_exit(opt, 1);
			torch_swallow("optimizer hook");
		} else
			torch_opt_exit(opt, 0);
	}
	return r;
}

static PyObject *
torch_stepwrap_get(PyObject *self, PyObject *obj, PyObject *type)
{
	(void)type;
	if (obj == NULL || obj == Py_None)
		return Py_NewRef(self);
	return PyMethod_New(self, obj);
}

/* Attributes not set on the wrapper (__name__, __qualname__, __doc__)
 * come from the original. */
static PyObject *
torch_stepwrap_getattro(PyObject *self, PyObject *name)
{
	PyObject *v = PyObject_GenericGetAttr(self, name);

	if (v != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError))
		return v;
	PyErr_Clear();
	return PyObject_GetAttr(((struct torch_stepwrap *)self)->orig, name);
}

static void
torch_stepwrap_dealloc(PyObject *self)
{
	struct torch_stepwrap *w = (struct torch_stepwrap *)self;

	Py_XDECREF(w->orig);
	Py_XDECREF(w->dict);
	Py_TYPE(self)->tp_free(self);
}

static PyMemberDef torch_stepwrap_members[] = {
	{ "__wrapped__", T_OBJECT, offsetof(struct torch_stepwrap, orig),
	    READONLY, NULL },
	{ NULL, 0, 0, 0, NULL },
};

static PyTypeObject torch_stepwrap_type = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "probing.OptimizerStep",
	.tp_basicsize = sizeof(struct torch_stepwrap),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_dealloc = torch_stepwrap_dealloc,
	.tp_call = torch_stepwrap_call,
	.tp_descr_get = torch_stepwrap_get,
	.tp_getattro = torch_stepwrap_getattro,
	.tp_setattro = PyObject_GenericSetAttr,
	.tp_dictoffset = offsetof(struct torch_stepwrap, dict),
	.tp_members = torch_stepwrap_members,
	.tp_doc = "probing: times Optimizer.step (torch without global "
		  "optimizer hooks)",
};

/* Replaces cls.step when cls defines it as a plain function. */
static void
torch_optim_patch(PyObject *cls)
{
	PyObject *d = ((PyTypeObject *)cls)->tp_dict, *step, *dict;
	struct torch_stepwrap *w;
	struct torch_patch *p;

	step = d ? PyDict_GetItemString(d, "step") : NULL;
	if (step == NULL || !PyFunction_Check(step))
		return;
	p = realloc(T.patches, (T.npatches + 1) * sizeof *p);
	if (p == NULL)
		return;
	T.patches = p;
	w = PyObject_New(struct torch_stepwrap, &torch_stepwrap_type);
	if (w == NULL)
		return;
	w->orig = Py_NewRef(step);
	/* Keep what decorators put there (1.13's `hooked` marker). */
	dict = PyObject_GetAttrString(step, "__dict__");
	w->dict = dict && PyDict_Check(dict) ? PyDict_Copy(dict) : PyDict_New();
	Py_XDECREF(dict);
	if (w->dict == NULL ||
	    PyObject_SetAttrString(cls, "step", (PyObject *)w) != 0) {
		Py_DECREF(w);
		torch_swallow("patching Optimizer.step");
		return;
	}
	p = &T.patches[T.npatches++];
	p->cls = Py_NewRef(cls);
	p->orig = Py_NewRef(step);
	p->wrap = (PyObject *)w;
}

static void
torch_optim_walk(PyObject *cls, int depth)
{
	PyObject *subs;
	Py_ssize_t i;

	if (depth > 32 || !PyType_Check(cls))
		return;
	if (depth > 0) /* Optimizer.step itself only raises */
		torch_optim_patch(cls);
	subs = PyObject_CallMethod(cls, "__subclasses__", NULL);
	if (subs == NULL || !PyList_Check(subs)) {
		Py_XDECREF(subs);
		PyErr_Clear();
		return;
	}
	for (i = 0; i < PyList_GET_SIZE(subs); i++)
		torch_optim_walk(PyList_GET_ITEM(subs, i), depth + 1);
	Py_DECREF(subs);
}

/* Wraps step of Optimizer classes not yet wrapped; at most once a second
 * after the first time. */
static void
torch_optim_scan(void)
{
	double now = torch_now();

	if (T.optimizer == NULL || now - T.last_scan < 1.0)
		return;
	T.last_scan = now;
	torch_optim_walk(T.optimizer, 0);
}

static void
torch_optim_unpatch(void)
{
	struct torch_patch *p;
	PyObject *cur;
	size_t i;

	for (i = 0; i < T.npatches; i++) {
		p = &T.patches[i];
		cur = PyDict_GetItemString(
		    ((PyTypeObject *)p->cls)->tp_dict, "step");
		/* If something wrapped ours since, ours stays, inert. */
		if (cur == p->wrap &&
		    PyObject_SetAttrString(p->cls, "step", p->orig) != 0)
			PyErr_Clear();
		Py_DECREF(p->cls);
		Py_DECREF(p->orig);
		Py_DECREF(p->wrap);
	}
	free(T.patches);
	T.patches = NULL;
	T.npatches = 0;
}

/* Install and remove ----------------------------------------------------- */

static PyObject *
torch_getattr_path(const char *module, const char *attr)
{
	PyObject *m = PyImport_ImportModule(module), *v;

	if (m == NULL)
		return NULL;
	v = attr ? PyObject_GetAttrString(m, attr) : Py_NewRef(m);
	Py_DECREF(m);
	return v;
}

static PyMethodDef torch_fwd_pre_def = { "probing_forward_pre_hook",
	(PyCFunction)(void (*)(void))torch_fwd_pre, METH_FASTCALL, NULL };
static PyMethodDef torch_fwd_post_def = { "probing_forward_hook",
	(PyCFunction)(void (*)(void))torch_fwd_post, METH_FASTCALL, NULL };
static PyMethodDef torch_opt_pre_def = { "probing_optimizer_pre_hook",
	(PyCFunction)(void (*)(void))torch_opt_pre, METH_FASTCALL, NULL };
static PyMethodDef torch_opt_post_def = { "probing_optimizer_hook",
	(PyCFunction)(void (*)(void))torch_opt_post, METH_FASTCALL, NULL };
static PyMethodDef torch_eob_def = { "probing_backward_done", torch_eob,
	METH_NOARGS, NULL };

static int
torch_types_ready(void)
{
	static int ready;

	if (ready)
		return 0;
	if (PyType_Ready(&torch_nodehook_type) != 0 ||
	    PyType_Ready(&torch_stepwrap_type) != 0 ||
	    PyType_Ready(&torch_finder_type) != 0 ||
	    PyType_Ready(&torch_loaderwrap_type) != 0)
		return -1;
	T.fwd_pre_fn = PyCFunction_New(&torch_fwd_pre_def, NULL);
	T.fwd_post_fn = PyCFunction_New(&torch_fwd_post_def, NULL);
	T.opt_pre_fn = PyCFunction_New(&torch_opt_pre_def, NULL);
	T.opt_post_fn = PyCFunction_New(&torch_opt_post_def, NULL);
	T.eob_fn = PyCFunction_New(&torch_eob_def, NULL);
	T.s_grad_fn = PyUnicode_InternFromString("grad_fn");
	T.s_queue_callback = PyUnicode_InternFromString("queue_callback");
	T.s_backward_hooks = PyUnicode_InternFromString("_backward_hooks");
	T.s_register_hook_dict =
	    PyUnicode_InternFromString("_register_hook_dict");
	T.zero = PyLong_FromLong(0);
	if (!T.fwd_pre_fn || !T.fwd_post_fn || !T.opt_pre_fn ||
	    !T.opt_post_fn || !T.eob_fn || !T.s_grad_fn ||
	    !T.s_queue_callback || !T.s_backward_hooks ||
	    !T.s_register_hook_dict || !T.zero)
		return -1;
	ready = 1;
	return 0;
}

static void torch_uninstall(void);

/* Puts every hook in place (torch is imported); 0 or -1 with *cause. */
static int
torch_install(char **cause)
{
	PyObject *optmod, *var;

	if (T.installed)
		return 0;
	if (torch_types_ready() != 0)
		goto fail;
	if (T.modmod == NULL &&
	    (T.modmod = torch_getattr_path("torch.nn.modules.module", NULL)) ==
		NULL)
		goto fail;
	if (T.tensor_type == NULL) {
		T.tensor_type =
		    (PyTypeObject *)torch_getattr_path("torch", "Tensor");
		if (T.tensor_type == NULL)
			goto fail;
	}
	if (T.engine == NULL) {
		var = torch_getattr_path("torch.autograd.variable", "Variable");
		T.engine = var
		    ? PyObject_GetAttrString(var, "_execution_engine")
		    : NULL;
		Py_XDECREF(var);
		if (T.engine == NULL)
			PyErr_Clear(); /* backward rows end at the node */
	}
	if (T.dummy == NULL) {
		var = torch_getattr_path("torch", "empty");
		T.dummy = var ? PyObject_CallFunction(var, "i", 0) : NULL;
		Py_XDECREF(var);
		PyErr_Clear();
	}
	if (T.cuda == NULL) {
		T.cuda = torch_getattr_path("torch.cuda", NULL);
		T.cuda_stats =
		    torch_getattr_path("torch._C", "_cuda_memoryStats");
		T.cuda_dev = torch_getattr_path("torch._C", "_cuda_getDevice");
		PyErr_Clear();
	}
	T.installed = 1;
	T.cur_valid = 0;
	if (torch_fwd_set(1) != 0) {
		cause_set(cause, "cannot register the module forward hooks");
		T.installed = 0;
		return -1;
	}
	optmod = PyImport_ImportModule("torch.optim.optimizer");
	if (optmod == NULL)
		goto fail;
	Py_XSETREF(T.optimizer, PyObject_GetAttrString(optmod, "Optimizer"));
	if (PyObject_HasAttrString(
		optmod, "register_optimizer_step_pre_hook")) {
		T.global_optim_hooks = 1;
		T.opt_pre_handle = PyObject_CallMethod(optmod,
		    "register_optimizer_step_pre_hook", "O", T.opt_pre_fn);
		T.opt_post_handle = T.opt_pre_handle
		    ? PyObject_CallMethod(optmod,
			  "register_optimizer_step_post_hook", "O",
			  T.opt_post_fn)
		    : NULL;
	} else {
		T.last_scan = -10;
		torch_optim_scan();
	}
	Py_DECREF(optmod);
	if (PyErr_Occurred())
		goto fail;
	log_info("torch: tracing on (torch hooks installed, %s)",
	    T.global_optim_hooks ? "global optimizer hooks"
				 : "Optimizer.step wrapped");
	return 0;
fail:
	cause_set(cause, "cannot install the torch hooks");
	torch_swallow("installing the torch hooks");
	PyErr_Clear();
	torch_uninstall();
	return -1;
}

static void
torch_uninstall(void)
{
	PyObject *h;
	struct torch_bwcall *c;

	torch_fwd_set(0);
	if (T.opt_pre_handle) {
		h = PyObject_CallMethod(T.opt_pre_handle, "remove", NULL);
		Py_XDECREF(h);
	}
	if (T.opt_post_handle) {
		h = PyObject_CallMethod(T.opt_post_handle, "remove", NULL);
		Py_XDECREF(h);
	}
	PyErr_Clear();
	Py_CLEAR(T.opt_pre_handle);
	Py_CLEAR(T.opt_post_handle);
	torch_optim_unpatch();
	torch_cache_clear();
	/* Pending end-of-backward calls still fire once; they find
	 * nothing to do. */
	while ((c = T.eob_list) != NULL) {
		T.eob_list = c->eob_next;
		c->done = 1;
		torch_bwcall_unref(c);
	}
	if (T.installed)
		log_info("torch: tracing off (%llu rows, %llu errors)",
		    (unsigned long long)T.rows, (unsigned long long)T.errors);
	T.installed = 0;
	T.on = 0;
}

/* The import finder -------------------------------------------------------- */

static void torch_start_setup(void);

static void
torch_finder_remove(void)
{
	PyObject *meta = PySys_GetObject("meta_path");
	Py_ssize_t i;

	if (T.finder == NULL || meta == NULL || !PyList_Check(meta))
		return;
	for (i = PyList_GET_SIZE(meta) - 1; i >= 0; i--) {
		if (PyList_GET_ITEM(meta, i) == T.finder &&
		    PySequence_DelItem(meta, i) != 0)
			PyErr_Clear();
	}
}

static PyObject *
torch_loaderwrap_create(PyObject *self, PyObject *spec)
{
	PyObject *orig = ((struct torch_loaderwrap *)self)->orig;

	if (!PyObject_HasAttrString(orig, "create_module"))
		Py_RETURN_NONE;
	return PyObject_CallMethod(orig, "create_module", "O", spec);
}

static PyObject *
torch_loaderwrap_exec(PyObject *self, PyObject *module)
{
	PyObject *orig = ((struct torch_loaderwrap *)self)->orig, *spec, *r;

	/* torch sees its own loader everywhere while it runs. */
	if (PyObject_SetAttrString(module, "__loader__", orig) != 0)
		PyErr_Clear();
	spec = PyObject_GetAttrString(module, "__spec__");
	if (spec == NULL || PyObject_SetAttrString(spec, "loader", orig) != 0)
		PyErr_Clear();
	Py_XDECREF(spec);
	r = PyObject_CallMethod(orig, "exec_module", "O", module);
	/* The hooks go in from the setup thread once this import is over,
	 * not from inside torch's own import. */
	if (r != NULL && !T.child) {
		torch_finder_remove();
		torch_start_setup();
	}
	return r;
}

static void
torch_loaderwrap_dealloc(PyObject *self)
{
	Py_XDECREF(((struct torch_loaderwrap *)self)->orig);
	Py_TYPE(self)->tp_free(self);
}

static PyMethodDef torch_loaderwrap_methods[] = {
	{ "create_module", torch_loaderwrap_create, METH_O, NULL },
	{ "exec_module", torch_loaderwrap_exec, METH_O, NULL },
	{ NULL, NULL, 0, NULL },
};

static PyTypeObject torch_loaderwrap_type = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "probing.TorchLoader",
	.tp_basicsize = sizeof(struct torch_loaderwrap),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_dealloc = torch_loaderwrap_dealloc,
	.tp_methods = torch_loaderwrap_methods,
	.tp_doc = "probing: runs torch's loader, then starts the hooks' setup",
};

/* find_spec: None for every name but "torch", whose spec (found by the
 * finders after this one) gets a loader that starts the setup once torch
 * has run. */
static PyObject *
torch_finder_find_spec(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { (char *)"fullname", (char *)"path",
		(char *)"target", NULL };
	PyObject *name, *path = Py_None, *target = Py_None;
	PyObject *meta, *copy = NULL, *fs, *spec = NULL, *loader;
	struct torch_loaderwrap *w;
	Py_ssize_t i;

	if (!PyArg_ParseTupleAndKeywords(
		args, kw, "O|OO", kwlist, &name, &path, &target)) {
		PyErr_Clear();
		Py_RETURN_NONE;
	}
	if (T.finder_busy || !PyUnicode_Check(name) ||
	    PyUnicode_CompareWithASCIIString(name, "torch") != 0)
		Py_RETURN_NONE;
	meta = PySys_GetObject("meta_path");
	if (meta == NULL || (copy = PySequence_List(meta)) == NULL)
		goto none;
	T.finder_busy = 1;
	for (i = 0; i < PyList_GET_SIZE(copy) && spec == NULL; i++) {
		if (PyList_GET_ITEM(copy, i) == self)
			continue;
		fs = PyObject_GetAttrString(
		    PyList_GET_ITEM(copy, i), "find_spec");
		if (fs == NULL) {
			PyErr_Clear();
			continue;
		}
		spec =
		    PyObject_CallFunctionObjArgs(fs, name, path, target, NULL);
		Py_DECREF(fs);
		if (spec == NULL)
			break;
		if (spec == Py_None)
			Py_CLEAR(spec);
	}
	T.finder_busy = 0;
	Py_DECREF(copy);
	if (spec == NULL)
		goto none;
	loader = PyObject_GetAttrString(spec, "loader");
	if (loader == NULL || loader == Py_None) {
		Py_XDECREF(loader);
		PyErr_Clear();
		return spec;
	}
	w = PyObject_New(struct torch_loaderwrap, &torch_loaderwrap_type);
	if (w != NULL) {
		w->orig = loader;
		if (PyObject_SetAttrString(spec, "loader", (PyObject *)w) != 0)
			PyErr_Clear();
		Py_DECREF(w);
	} else
		Py_DECREF(loader);
	PyErr_Clear();
	return spec;
none:
	/* The import system asks the other finders itself. */
	PyErr_Clear();
	Py_RETURN_NONE;
}

static PyMethodDef torch_finder_methods[] = {
	{ "find_spec", (PyCFunction)(void (*)(void))torch_finder_find_spec,
	    METH_VARARGS | METH_KEYWORDS, NULL },
	{ NULL, NULL, 0, NULL },
};

static PyTypeObject torch_finder_type = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "probing.TorchFinder",
	.tp_basicsize = sizeof(PyObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_methods = torch_finder_methods,
	.tp_doc = "probing: notices when torch is imported",
};

/* Start-up and config ---------------------------------------------------- */

enum torch_job_rc { TORCH_DONE, TORCH_RETRY, TORCH_NOT_RUN };

/* Makes T.want true: hooks now if torch is imported, else the finder.
 * Returns TORCH_RETRY while torch is half imported. */
static int
torch_enable(char **cause)
{
	PyObject *mods = PySys_GetObject("modules"), *torch, *spec, *init;
	PyObject *meta, *bootstrap, *locks;
	int busy = 0;

	if (torch_types_ready() != 0) {
		PyErr_Clear();
		cause_set(cause, "cannot create the torch hook types");
		return -1;
	}
	torch = mods && PyDict_Check(mods) ? PyDict_GetItemString(mods, "torch")
					   : NULL;
	if (torch != NULL) {
		spec = PyObject_GetAttrString(torch, "__spec__");
		init =
		    spec ? PyObject_GetAttrString(spec, "_initializing") : NULL;
		busy = init != NULL && PyObject_IsTrue(init) == 1;
		Py_XDECREF(spec);
		Py_XDECREF(init);
		PyErr_Clear();
		if (busy)
			return TORCH_RETRY;
		torch_finder_remove();
		return torch_install(cause) == 0 ? TORCH_DONE : -1;
	}
	/* Between find_spec and sys.modules, an import holds its lock. */
	bootstrap =
	    mods ? PyDict_GetItemString(mods, "_frozen_importlib") : NULL;
	locks = bootstrap ? PyObject_GetAttrString(bootstrap, "_module_locks")
			  : NULL;
	busy = locks && PyDict_Check(locks) &&
	    PyDict_GetItemString(locks, "torch") != NULL;
	Py_XDECREF(locks);
	PyErr_Clear();
	if (busy)
		return TORCH_RETRY;
	if (T.finder == NULL &&
	    (T.finder = PyType_GenericNew(&torch_finder_type, NULL, NULL)) ==
		NULL) {
		PyErr_Clear();
		cause_set(cause, "cannot create the import finder");
		return -1;
	}
	meta = PySys_GetObject("meta_path");
	if (meta == NULL || !PyList_Check(meta)) {
		cause_set(cause, "sys.meta_path is not a list");
		return -1;
	}
	if (PySequence_Contains(meta, T.finder) != 1 &&
	    PyList_Insert(meta, 0, T.finder) != 0) {
		PyErr_Clear();
		cause_set(cause, "cannot add to sys.meta_path");
		return -1;
	}
	return TORCH_DONE;
}

struct torch_job {
	int want;
	int rc;
};

static int
torch_job_run(void *arg, char **cause)
{
	struct torch_job *j = arg;

	if (T.child)
		return 0;
	T.want = j->want;
	if (!j->want) {
		torch_finder_remove();
		torch_uninstall();
		j->rc = TORCH_DONE;
		return 0;
	}
	j->rc = torch_enable(cause);
	return j->rc < 0 ? -1 : 0;
}

static int
torch_apply_enabled(double v, char **cause)
{
	struct torch_job j = { v != 0, 0 };
	int i;

	for (i = 0; i < 50; i++) {
		if (py_run(torch_job_run, &j, 2000, cause) != 0)
			return -1;
		if (j.rc != TORCH_RETRY)
			return 0;
		usleep(100 * 1000);
	}
	cause_set(cause, "torch is still being imported; try again");
	return -1;
}

static int
torch_apply_rate(double v, char **cause)
{
	(void)cause;
	T.rate = v; /* takes effect at the next step */
	return 0;
}

/* Waits for the interpreter and sets up tracing once. */
static void *
torch_setup_thread(void *unused)
{
	struct torch_job j;
	char *cause = NULL;
	unsigned delay_ms = 10;
	int logged = 0;

	(void)unused;
	for (;;) {
		j.want = 1;
		j.rc = TORCH_NOT_RUN;
		if (T.want == 0 || T.installed)
			break;
		if (py_run(torch_job_run, &j, 1000, &cause) == 0 &&
		    j.rc == TORCH_DONE)
			break;
		if (j.rc < 0) {
			log_info(
			    "torch: tracing not set up: %s", cause_str(cause));
			free(cause);
			break;
		}
		if (cause != NULL && !logged++)
			log_info("torch: setup waits: %s", cause);
		free(cause);
		cause = NULL;
		/* While torch imports, look often: its first module calls
		 * may follow right after. */
		if (j.rc == TORCH_RETRY)
			delay_ms = 2;
		usleep(delay_ms * 1000);
		if (delay_ms < 1000)
			delay_ms *= 2;
	}
	return NULL;
}

static void
torch_atfork_child(void)
{
	T.child = 1;
}

void
torch_init(void)
{
	const char *rank = getenv("RANK");

	T.rank = rank ? atoi(rank) : 0;
	T.rate = config_get(CONFIG_SAMPLE_RATE);
	T.want = config_get(CONFIG_TORCH_ENABLED) != 0;
	config_on_change(CONFIG_TORCH_ENABLED, torch_apply_enabled);
	config_on_change(CONFIG_SAMPLE_RATE, torch_apply_rate);
	pthread_atfork(NULL, NULL, torch_atfork_child);
	if (!T.want) {
		log_info("torch: tracing off at start");
		return;
	}
	torch_start_setup();
}

/* Starts the thread that sets tracing up under the GIL (all signals
 * blocked in it). */
static void
torch_start_setup(void)
{
	pthread_attr_t attr;
	sigset_t all, old;
	pthread_t t;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	if (pthread_create(&t, &attr, torch_setup_thread, NULL) == 0)
		pthread_setname_np(t, "probing-torch");
	else
		log_info("torch: cannot start the setup thread");
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}
