/* Torch tracing, the ground floor every torch-*.c file uses: the shared
 * state, the step clock and sampling, interned strings, CUDA handles and
 * the row written into python.torch_trace. It calls no other torch file.
 *
 * Threads: under the GIL (see torch.h); the rows go into a ring with its
 * own lock, read by SQL on request threads. */
#define Py_BUILD_CORE 1
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <Python.h>
#include <internal/pycore_frame.h>
#if PY_VERSION_HEX >= 0x030E0000
#include <internal/pycore_interpframe_structs.h>
#endif

#include "agent.h"
#include "clock.h"
#include "log.h"
#include "torch.h"

#define TORCH_RATE_DEN 1000000 /* sample_rate in millionths */

struct torch_state torch_st;
struct torch_clock torch_clk;

/* Interned strings: an open-addressing set, grown by doubling. */
static struct {
	const char **tab;
	size_t cap, n;
} torch_strs;

/* torch.cuda and the C++ entry points read for `allocated`. */
static struct {
	PyObject *mod, *stats, *dev;
	PyObject *s_initialized;
	int on;               /* CUDA was initialized by the job */
	int64_t checked_step; /* when not on: the step last checked, + 1 */
} torch_cuda;

static __thread long torch_tid;
static double torch_wall_off; /* 0: read it at the next row */

double
torch_now(void)
{
	return clock_ms() * 1e-3;
}

/* CLOCK_REALTIME minus CLOCK_MONOTONIC, read again at each new step (so a
 * row's time costs no second clock read, and a step of the wall clock is
 * followed within a step). */
static double
torch_wall_offset(void)
{
	return clock_wall() - torch_now();
}

static _PyInterpreterFrame *
torch_current_frame(void)
{
	PyThreadState *ts = PyThreadState_Get();

#if PY_VERSION_HEX >= 0x030D0000
	return ts->current_frame;
#else
	return ts->cframe->current_frame;
#endif
}

/* Python frames on this thread's stack. (The recursion counters will not
 * do: they also count C calls, which differ before and after the
 * interpreter specializes a call site.) */
int
torch_depth(void)
{
	_PyInterpreterFrame *f;
	int d = 0;

	for (f = torch_current_frame(); f != NULL; f = f->previous)
		d++;
	return d;
}

const void *
torch_frame(void)
{
	return torch_current_frame();
}

int
torch_frame_below(const void *frame)
{
	_PyInterpreterFrame *f = torch_current_frame();

	for (f = f ? f->previous : NULL; f != NULL; f = f->previous) {
		if (f == frame)
			return 1;
	}
	return 0;
}

PyObject *
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

int
torch_swallow(const char *what)
{
	PyObject *type, *value, *tb;

	if (!PyErr_Occurred())
		return 0;
	if (!PyErr_ExceptionMatches(PyExc_Exception))
		return -1;
	PyErr_Fetch(&type, &value, &tb);
	if (torch_st.errors++ < 10) {
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

/* Interned strings ------------------------------------------------------- */

static uint64_t
torch_hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

const char *
torch_intern(const char *s)
{
	size_t i, cap, mask;
	const char **tab;
	char *copy;

	if (torch_strs.n * 2 + 2 > torch_strs.cap) {
		cap = torch_strs.cap ? torch_strs.cap * 2 : 256;
		tab = calloc(cap, sizeof *tab);
		if (tab == NULL)
			return NULL;
		for (i = 0; i < torch_strs.cap; i++) {
			size_t j;

			if (torch_strs.tab[i] == NULL)
				continue;
			j = torch_hash_str(torch_strs.tab[i]) & (cap - 1);
			while (tab[j] != NULL)
				j = (j + 1) & (cap - 1);
			tab[j] = torch_strs.tab[i];
		}
		free(torch_strs.tab);
		torch_strs.tab = tab;
		torch_strs.cap = cap;
	}
	mask = torch_strs.cap - 1;
	for (i = torch_hash_str(s) & mask; torch_strs.tab[i] != NULL;
	     i = (i + 1) & mask) {
		if (strcmp(torch_strs.tab[i], s) == 0)
			return torch_strs.tab[i];
	}
	copy = strdup(s);
	if (copy == NULL)
		return NULL;
	torch_strs.tab[i] = copy;
	torch_strs.n++;
	return copy;
}

PyObject *
torch_getattr_path(const char *module, const char *attr)
{
	PyObject *m = PyImport_ImportModule(module), *v;

	if (m == NULL)
		return NULL;
	v = attr ? PyObject_GetAttrString(m, attr) : Py_NewRef(m);
	Py_DECREF(m);
	return v;
}

/* Rows ------------------------------------------------------------------- */

void
torch_cuda_load(void)
{
	if (torch_cuda.mod != NULL)
		return;
	torch_cuda.mod = torch_getattr_path("torch.cuda", NULL);
	torch_cuda.stats = torch_getattr_path("torch._C", "_cuda_memoryStats");
	torch_cuda.dev = torch_getattr_path("torch._C", "_cuda_getDevice");
	torch_cuda.s_initialized = PyUnicode_InternFromString("_initialized");
	PyErr_Clear();
}

/* torch.cuda.memory_allocated() in MB once CUDA is initialized, else 0;
 * never initializes CUDA. */
static double
torch_allocated(void)
{
	PyObject *v, *dev, *d, *a, *b, *c;
	double mb = 0;

	if (torch_cuda.mod == NULL || torch_cuda.s_initialized == NULL)
		return 0;
	if (!torch_cuda.on) {
		/* Once a step: torch.cuda._initialized is a module lookup. */
		if (torch_cuda.checked_step == torch_clk.cur_step + 1)
			return 0;
		torch_cuda.checked_step = torch_clk.cur_step + 1;
		v = PyObject_GetAttr(torch_cuda.mod, torch_cuda.s_initialized);
		if (v == NULL) {
			PyErr_Clear();
			return 0;
		}
		torch_cuda.on = PyObject_IsTrue(v) == 1;
		Py_DECREF(v);
		if (!torch_cuda.on)
			return 0;
	}
	if (torch_cuda.stats != NULL && torch_cuda.dev != NULL) {
		/* Nested stats straight from C++: memory_allocated() flattens
		 * the whole dict in Python first. */
		dev = PyObject_CallNoArgs(torch_cuda.dev);
		d = dev ? PyObject_CallOneArg(torch_cuda.stats, dev) : NULL;
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
	v = PyObject_CallMethod(torch_cuda.mod, "memory_allocated", NULL);
	if (v != NULL)
		mb = PyFloat_AsDouble(v) / (1024.0 * 1024.0);
	Py_XDECREF(v);
	torch_swallow("torch.cuda.memory_allocated");
	return mb;
}

void
torch_emit(int64_t step, int64_t seq, const char *name, const char *stage,
    double t0, double t1)
{
	struct torch_trace_rec r;

	if (tbl_torch_trace_ring.buf == NULL)
		return;
	if (torch_tid == 0)
		torch_tid = (long)syscall(SYS_gettid);
	memset(&r, 0, sizeof r);
	r.step = step;
	r.seq = seq;
	r.module = name;
	r.stage = stage;
	r.allocated = torch_allocated();
	r.duration = t1 - t0;
	if (torch_wall_off == 0)
		torch_wall_off = torch_wall_offset();
	r.time = t1 + torch_wall_off;
	r.thread_id = torch_tid;
	r.rank = torch_st.rank;
	ring_push(&tbl_torch_trace_ring, &r);
	torch_st.rows++;
}

/* The step clock ------------------------------------------------------- */

int64_t
torch_step(void)
{
	if (torch_clk.optim_mode)
		return torch_clk.opt_steps;
	return torch_clk.root_calls > 0 ? torch_clk.root_calls - 1 : 0;
}

void
torch_clock_tick(PyObject *m)
{
	PyObject *cur;

	if (torch_clk.on_root != NULL)
		torch_clk.on_root();
	if (torch_clk.optim_mode)
		return;
	cur = torch_clk.root ? torch_weak_target(torch_clk.root) : NULL;
	if (cur == NULL) {
		Py_CLEAR(torch_clk.root);
		if ((torch_clk.root = PyWeakref_NewRef(m, NULL)) == NULL) {
			PyErr_Clear();
			return;
		}
		cur = m;
	}
	if (cur == m)
		torch_clk.root_calls++;
}

/* The clock module is m after all: its call, now ending, began before the
 * hooks went in, so the module first seen at the top was inside it (left
 * as the root, steps would stop counting). That call was step 0. */
void
torch_clock_reroot(PyObject *m)
{
	PyObject *wr;

	if (torch_clk.optim_mode || torch_clk.root_calls > 1)
		return;
	if ((wr = PyWeakref_NewRef(m, NULL)) == NULL) {
		PyErr_Clear();
		return;
	}
	Py_XSETREF(torch_clk.root, wr);
	torch_clk.root_calls = 1;
}

int
torch_sampled(int64_t step)
{
	int64_t p, a;
	double r;

	if (torch_clk.cur_valid && step == torch_clk.cur_step)
		return torch_clk.cur_sampled;
	torch_clk.cur_valid = 1;
	torch_clk.cur_step = step;
	torch_clk.seq = 0;
	torch_wall_off = 0;
	r = torch_st.rate;
	if (r <= 0 || step < 0) {
		torch_clk.cur_sampled = 0;
		return 0;
	}
	/* rate = p / TORCH_RATE_DEN exactly (0.7 is 7 of 10): step s owns
	 * [s*rate, (s+1)*rate) and is traced when that holds an integer. */
	p = r >= 1 ? TORCH_RATE_DEN : llround(r * TORCH_RATE_DEN);
	if (p < 1)
		p = 1;
	a = step % TORCH_RATE_DEN * p % TORCH_RATE_DEN;
	torch_clk.cur_sampled = a == 0 || a + p > TORCH_RATE_DEN;
	return torch_clk.cur_sampled;
}
