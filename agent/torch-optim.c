/* Torch tracing: optimizer steps. On torch 2.x the global
 * register_optimizer_step_pre_hook/post_hook; torch 1.13 has none, so
 * `step` of every Optimizer subclass is replaced by a small C callable
 * that calls the original between the two hooks (classes defined later
 * are found by a rescan at most once a second, run from the outermost
 * module call through torch_clk.on_root); removing puts the original back
 * where it is still ours.
 *
 * The end of an outermost step advances the step clock, and the forward
 * hooks are taken off through steps that are not traced, so those cost
 * nothing.
 *
 * Threads: under the GIL. A wrapper owns the original function; the patch
 * list owns the class, the original and the wrapper until removed. */
#include <stddef.h>
#include <stdlib.h>

#include <Python.h>
#include <structmember.h>

#include "agent.h"
#include "torch.h"

#define TORCH_OSTACK 8 /* nested optimizer steps */

/* Optimizer.step replaced on a class (torch 1.13). */
struct torch_stepwrap {
	PyObject_HEAD PyObject *orig;
	PyObject *dict;
};

struct torch_patch {
	PyObject *cls;
	PyObject *orig;
	PyObject *wrap;
};

/* One optimizer step in flight. */
struct torch_ostep {
	PyObject *opt; /* borrowed: alive while its step runs */
	int depth;
	double t0;
};

static struct {
	PyObject *pre_fn, *post_fn; /* the global hooks as callables */
	PyObject *pre_handle, *post_handle;
	PyObject *optimizer; /* torch.optim.optimizer.Optimizer */
	int global;          /* global optimizer hooks in use */
	struct torch_patch *patches;
	size_t npatches;
	double last_scan;
	struct torch_ostep ostack[TORCH_OSTACK];
	int on; /* steps in flight (may exceed TORCH_OSTACK) */
} torch_opt;

/* The steps opt says it has completed (Adam and the like keep 'step' in
 * each parameter's state), so that ranks probed at different times
 * number steps alike; 0 when it keeps no count. */
static int64_t
torch_opt_own_count(PyObject *opt)
{
	PyObject *groups = PyObject_GetAttrString(opt, "param_groups");
	PyObject *state = PyObject_GetAttrString(opt, "state");
	PyObject *g, *params, *p, *st, *step, *f;
	int64_t n = 0;

	g = groups != NULL && PyList_Check(groups) && PyList_GET_SIZE(groups)
	    ? PyList_GET_ITEM(groups, 0)
	    : NULL;
	params = g != NULL && PyDict_Check(g)
	    ? PyDict_GetItemString(g, "params")
	    : NULL;
	p = params != NULL && PyList_Check(params) && PyList_GET_SIZE(params)
	    ? PyList_GET_ITEM(params, 0)
	    : NULL;
	st = p != NULL && state != NULL && PyDict_Check(state)
	    ? PyDict_GetItem(state, p)
	    : NULL;
	step = st != NULL && PyDict_Check(st) ? PyDict_GetItemString(st, "step")
					      : NULL;
	f = step != NULL ? PyNumber_Float(step) : NULL;
	if (f != NULL) {
		double v = PyFloat_AsDouble(f);

		if (v >= 0 && v < 1e15)
			n = (int64_t)v;
	}
	Py_XDECREF(f);
	Py_XDECREF(groups);
	Py_XDECREF(state);
	torch_swallow("reading the optimizer's step count");
	PyErr_Clear();
	return n;
}

static void
torch_opt_enter(PyObject *opt)
{
	int depth = torch_depth(), n = torch_opt.on;

	while (n > 0 && n <= TORCH_OSTACK &&
	    torch_opt.ostack[n - 1].depth >= depth)
		n--; /* their step raised */
	torch_opt.on = n;
	if (!torch_clk.optim_mode) {
		/* Steps are counted by the optimizer from now on. When its
		 * count goes on from the module calls' (the first step of a
		 * loop), this step's rows keep their seq: no second seq 0. */
		int64_t own = torch_opt_own_count(opt);

		torch_clk.optim_mode = 1;
		if (torch_clk.cur_step != own)
			torch_clk.cur_valid = 0;
		torch_clk.opt_steps = own;
	}
	if (n < TORCH_OSTACK) {
		torch_opt.ostack[n].opt = opt;
		torch_opt.ostack[n].depth = depth;
		torch_opt.ostack[n].t0 = torch_now();
	}
	torch_opt.on = n + 1;
	if (n == 0)
		torch_bw_forget(); /* the backward pass is over */
}

static void
torch_opt_exit(int ok)
{
	struct torch_ostep s;
	int64_t step;
	double now = torch_now();

	if (torch_opt.on == 0)
		return;
	torch_opt.on--;
	if (torch_opt.on >= TORCH_OSTACK || torch_opt.on > 0)
		return; /* only the outermost step counts */
	s = torch_opt.ostack[0];
	if (!ok)
		return;
	step = torch_clk.opt_steps;
	if (torch_sampled(step))
		torch_emit(step, torch_clk.seq++,
		    torch_intern(_PyType_Name(Py_TYPE(s.opt))), "step", s.t0,
		    now);
	torch_clk.opt_steps++;
	/* Park the forward hooks through steps that are not traced. */
	if (torch_fwd_busy() == 0 && torch_st.installed)
		torch_fwd_set(torch_sampled(torch_clk.opt_steps));
}

static PyObject *
torch_opt_pre(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	(void)self;
	if (!torch_st.child && torch_st.installed && nargs >= 1)
		torch_opt_enter(args[0]);
	if (torch_swallow("optimizer pre-hook") != 0)
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *
torch_opt_post(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	(void)self;
	(void)args;
	if (!torch_st.child && torch_st.installed && nargs >= 1)
		torch_opt_exit(1);
	if (torch_swallow("optimizer hook") != 0)
		return NULL;
	Py_RETURN_NONE;
}

/* torch 1.13: the C callable that replaces Optimizer subclasses' step ----- */

static PyObject *
torch_stepwrap_call(PyObject *self, PyObject *args, PyObject *kw)
{
	struct torch_stepwrap *w = (struct torch_stepwrap *)self;
	PyObject *opt =
	    PyTuple_GET_SIZE(args) > 0 ? PyTuple_GET_ITEM(args, 0) : NULL;
	int active = opt != NULL && torch_st.installed && !torch_st.child;
	PyObject *r;

	if (active) {
		torch_opt_enter(opt);
		if (torch_swallow("optimizer pre-hook") != 0)
			return NULL;
	}
	r = PyObject_Call(w->orig, args, kw);
	if (active && torch_st.installed) {
		if (r != NULL) {
			torch_opt_exit(1);
			torch_swallow("optimizer hook");
		} else
			torch_opt_exit(0);
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
	p = realloc(torch_opt.patches, (torch_opt.npatches + 1) * sizeof *p);
	if (p == NULL)
		return;
	torch_opt.patches = p;
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
	p = &torch_opt.patches[torch_opt.npatches++];
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

	if (torch_opt.optimizer == NULL || now - torch_opt.last_scan < 1.0)
		return;
	torch_opt.last_scan = now;
	torch_optim_walk(torch_opt.optimizer, 0);
}

static void
torch_optim_unpatch(void)
{
	struct torch_patch *p;
	PyObject *cur;
	size_t i;

	for (i = 0; i < torch_opt.npatches; i++) {
		p = &torch_opt.patches[i];
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
	free(torch_opt.patches);
	torch_opt.patches = NULL;
	torch_opt.npatches = 0;
}

/* Install and remove ----------------------------------------------------- */

int
torch_optim_install(void)
{
	PyObject *optmod = PyImport_ImportModule("torch.optim.optimizer");

	if (optmod == NULL)
		return -1;
	Py_XSETREF(
	    torch_opt.optimizer, PyObject_GetAttrString(optmod, "Optimizer"));
	if (PyObject_HasAttrString(
		optmod, "register_optimizer_step_pre_hook")) {
		torch_opt.global = 1;
		torch_opt.pre_handle = PyObject_CallMethod(optmod,
		    "register_optimizer_step_pre_hook", "O", torch_opt.pre_fn);
		torch_opt.post_handle = torch_opt.pre_handle
		    ? PyObject_CallMethod(optmod,
			  "register_optimizer_step_post_hook", "O",
			  torch_opt.post_fn)
		    : NULL;
	} else {
		torch_opt.last_scan = -10;
		torch_optim_scan();
		torch_clk.on_root = torch_optim_scan;
	}
	Py_DECREF(optmod);
	return PyErr_Occurred() ? -1 : 0;
}

void
torch_optim_uninstall(void)
{
	PyObject *h;

	torch_clk.on_root = NULL;
	if (torch_opt.pre_handle) {
		h = PyObject_CallMethod(torch_opt.pre_handle, "remove", NULL);
		Py_XDECREF(h);
	}
	if (torch_opt.post_handle) {
		h = PyObject_CallMethod(torch_opt.post_handle, "remove", NULL);
		Py_XDECREF(h);
	}
	PyErr_Clear();
	Py_CLEAR(torch_opt.pre_handle);
	Py_CLEAR(torch_opt.post_handle);
	torch_optim_unpatch();
	torch_opt.on = 0;
}

int
torch_optim_global(void)
{
	return torch_opt.global;
}

static PyMethodDef torch_opt_pre_def = { "probing_optimizer_pre_hook",
	(PyCFunction)(void (*)(void))torch_opt_pre, METH_FASTCALL, NULL };
static PyMethodDef torch_opt_post_def = { "probing_optimizer_hook",
	(PyCFunction)(void (*)(void))torch_opt_post, METH_FASTCALL, NULL };

int
torch_optim_init(void)
{
	if (PyType_Ready(&torch_stepwrap_type) != 0)
		return -1;
	torch_opt.pre_fn = PyCFunction_New(&torch_opt_pre_def, NULL);
	torch_opt.post_fn = PyCFunction_New(&torch_opt_post_def, NULL);
	return torch_opt.pre_fn && torch_opt.post_fn ? 0 : -1;
}
