/* Torch tracing: the global module forward hooks
 * (torch.nn.modules.module.register_module_forward_pre_hook and
 * register_module_forward_hook, two C functions) and the names of modules.
 *
 * A per-thread stack pairs the pre- and post-hook of each call by the
 * Python frame that calls both (its _call_impl): the post-hook finds its
 * entry on top, in one comparison; an entry left by a forward that raised
 * is dropped by the next pre-hook, which keeps only entries whose frame is
 * still a caller of its own (found a few frames up, not by walking the
 * whole stack). A traced call writes its forward row and arms the backward
 * hooks (torch-bw.c). Names: the outermost module by its class, the
 * others by their dotted path below it, kept in a map keyed by the module
 * (checked through a weakref, so a dead module's slot is never trusted).
 *
 * Threads: under the GIL; the stack is per thread. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <Python.h>

#include "agent.h"
#include "torch.h"

#define TORCH_STACK 128 /* nested module calls tracked per thread */

/* One module call in flight on a thread. */
struct torch_frame {
	PyObject *module;  /* borrowed: alive while its call runs */
	const void *frame; /* its _call_impl frame, for identity only */
	int sampled;
	const char *name;
	int64_t step, seq;
	double t0;
};

struct torch_tls {
	struct torch_frame st[TORCH_STACK];
	int n;
};

/* A module's name; key is not owned, wr says whether it is still alive. */
struct torch_name_ent {
	PyObject *key;
	PyObject *wr;
	const char *name;
};

static struct {
	PyObject *pre_fn, *post_fn;         /* our two hooks as callables */
	PyObject *pre_handle, *post_handle; /* while registered */
	PyObject *modmod;                   /* torch.nn.modules.module */
	int on;                             /* registered now */
	struct torch_name_ent *names;       /* open addressing by module */
	size_t names_cap, names_n;
} torch_fwd;

static __thread struct torch_tls torch_tls;

int
torch_fwd_busy(void)
{
	return torch_tls.n;
}

/* Names ------------------------------------------------------------------ */

static size_t
torch_hash_ptr(const void *p)
{
	uint64_t x = (uint64_t)(uintptr_t)p;

	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return (size_t)x;
}

/* The cached name of module m, or NULL. */
static const char *
torch_name_get(PyObject *m)
{
	size_t i, mask;
	struct torch_name_ent *e;

	if (torch_fwd.names_cap == 0)
		return NULL;
	mask = torch_fwd.names_cap - 1;
	for (i = torch_hash_ptr(m) & mask;
	     (e = &torch_fwd.names[i])->key != NULL; i = (i + 1) & mask) {
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
	size_t i, j, cap = torch_fwd.names_cap ? torch_fwd.names_cap * 2 : 1024;
	struct torch_name_ent *tab, *e;

	tab = calloc(cap, sizeof *tab);
	if (tab == NULL)
		return -1;
	torch_fwd.names_n = 0;
	for (i = 0; i < torch_fwd.names_cap; i++) {
		e = &torch_fwd.names[i];
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
		torch_fwd.names_n++;
	}
	free(torch_fwd.names);
	torch_fwd.names = tab;
	torch_fwd.names_cap = cap;
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
	if ((torch_fwd.names_n + 1) * 2 > torch_fwd.names_cap &&
	    torch_name_grow() != 0)
		return;
	wr = PyWeakref_NewRef(m, NULL);
	if (wr == NULL) {
		PyErr_Clear();
		return;
	}
	mask = torch_fwd.names_cap - 1;
	for (i = torch_hash_ptr(m) & mask;
	     (e = &torch_fwd.names[i])->key != NULL; i = (i + 1) & mask) {
		if (e->key == m)
			break;
	}
	if (e->key == NULL)
		torch_fwd.names_n++;
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

/* The hooks -------------------------------------------------------------- */

static PyObject *
torch_fwd_pre(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	struct torch_tls *t = &torch_tls;
	struct torch_frame *f;
	const void *frame;
	int sampled;
	int64_t step;

	(void)self;
	if (torch_st.child || !torch_st.installed || nargs < 1)
		Py_RETURN_NONE;
	frame = torch_frame();
	while (t->n > 0 && !torch_frame_below(t->st[t->n - 1].frame))
		t->n--; /* their forward raised */
	if (t->n == 0)
		torch_clock_tick(args[0]);
	step = torch_step();
	sampled = torch_sampled(step);
	if (t->n >= TORCH_STACK)
		Py_RETURN_NONE;
	f = &t->st[t->n++];
	f->module = args[0];
	f->frame = frame;
	f->sampled = sampled;
	f->name = NULL;
	if (sampled) {
		f->step = step;
		f->seq = torch_clk.seq++;
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
	const void *frame;
	double now;
	int i;

	(void)self;
	if (torch_st.child || nargs < 3)
		Py_RETURN_NONE;
	now = torch_now();
	frame = torch_frame();
	for (i = t->n - 1; i >= 0; i--) {
		if (t->st[i].frame == frame && t->st[i].module == args[0])
			break;
	}
	if (i < 0) {
		/* A call that began before the hooks went in (they go in on
		 * another thread, maybe mid-forward) encloses all we saw. */
		if (t->n == 0)
			torch_clock_reroot(args[0]);
		Py_RETURN_NONE;
	}
	f = t->st[i];
	t->n = i;
	if (!f.sampled || !torch_st.installed)
		Py_RETURN_NONE;
	torch_emit(f.step, f.seq, f.name, "forward", f.t0, now);
	torch_bw_arm(f.name, f.step, args[1], args[2]);
	if (torch_swallow("forward hook") != 0)
		return NULL;
	Py_RETURN_NONE;
}

int
torch_fwd_set(int on)
{
	PyObject *h;

	if (on == torch_fwd.on)
		return 0;
	if (!on) {
		h = PyObject_CallMethod(torch_fwd.pre_handle, "remove", NULL);
		Py_XDECREF(h);
		h = PyObject_CallMethod(torch_fwd.post_handle, "remove", NULL);
		Py_XDECREF(h);
		Py_CLEAR(torch_fwd.pre_handle);
		Py_CLEAR(torch_fwd.post_handle);
		torch_fwd.on = 0;
		return torch_swallow("removing forward hooks");
	}
	if (torch_fwd.modmod == NULL &&
	    (torch_fwd.modmod = torch_getattr_path(
		 "torch.nn.modules.module", NULL)) == NULL)
		goto fail;
	torch_fwd.pre_handle = PyObject_CallMethod(torch_fwd.modmod,
	    "register_module_forward_pre_hook", "O", torch_fwd.pre_fn);
	if (torch_fwd.pre_handle == NULL)
		goto fail;
	torch_fwd.post_handle = PyObject_CallMethod(torch_fwd.modmod,
	    "register_module_forward_hook", "O", torch_fwd.post_fn);
	if (torch_fwd.post_handle == NULL)
		goto fail;
	torch_fwd.on = 1;
	return 0;
fail:
	torch_swallow("registering forward hooks");
	if (torch_fwd.pre_handle != NULL) {
		h = PyObject_CallMethod(torch_fwd.pre_handle, "remove", NULL);
		Py_XDECREF(h);
		PyErr_Clear();
	}
	Py_CLEAR(torch_fwd.pre_handle);
	return -1;
}

static PyMethodDef torch_fwd_pre_def = { "probing_forward_pre_hook",
	(PyCFunction)(void (*)(void))torch_fwd_pre, METH_FASTCALL, NULL };
static PyMethodDef torch_fwd_post_def = { "probing_forward_hook",
	(PyCFunction)(void (*)(void))torch_fwd_post, METH_FASTCALL, NULL };

int
torch_fwd_init(void)
{
	torch_fwd.pre_fn = PyCFunction_New(&torch_fwd_pre_def, NULL);
	torch_fwd.post_fn = PyCFunction_New(&torch_fwd_post_def, NULL);
	return torch_fwd.pre_fn && torch_fwd.post_fn ? 0 : -1;
}
