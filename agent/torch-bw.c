/* Torch tracing: a module's backward time from hooks on autograd nodes,
 * the same on torch 1.13 and 2.x.
 *
 * Nothing wraps a tensor and no module backward hook is used, so autograd
 * computes exactly what it would without us (in-place ops after a module
 * included). After a traced forward, hooks go on autograd nodes: a
 * pre-hook on the grad_fn of the module's output starts the clock; the
 * module's backward ends when the pre-hook on the grad_fn of its first
 * input fires (the gradient of the input is complete), or, when the input
 * and output share a node (an in-place module), at that node's post-hook,
 * or, when the input has no grad_fn (data, a leaf), at the end of the
 * backward pass (a callback queued on the autograd engine). A module
 * whose output holds no tensor gets no backward row, and the log says so
 * once per module.
 *
 * Ownership: a struct torch_bwcall is shared by the hooks that start and
 * end it and by the end-of-backward list (plain refcount, under the GIL);
 * a node hook object is owned by the node it is registered on, and the
 * recent-node cache holds a reference to both. */
#include <stdint.h>
#include <stdlib.h>

#include <Python.h>

#include "agent.h"
#include "log.h"
#include "torch.h"

#define TORCH_NODE_EV    6 /* events per node hook object */
#define TORCH_NODE_CACHE 8

/* The backward of one traced module call. */
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

static struct {
	PyObject *engine; /* Variable._execution_engine, or NULL */
	PyObject *eob_fn; /* torch_bw_eob as a callable */
	struct torch_bwcall *eob_list;
	int eob_queued;
	/* the nodes hooked last, so that several calls share one hook */
	struct {
		PyObject *node, *hook;
		enum torch_hook_kind kind;
	} cache[TORCH_NODE_CACHE];
	int cache_next;
	PyObject *dummy; /* torch.empty(0): carries hook dicts to nodes */
	int no_fast;     /* nodes lack _register_hook_dict */
	PyObject *s_grad_fn, *s_queue_callback; /* interned names */
	PyObject *s_backward_hooks, *s_register_hook_dict, *zero;
} torch_bw;

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
	torch_emit(c->step, c->step == torch_clk.cur_step ? torch_clk.seq++ : 0,
	    c->name, "backward", c->t0, now);
}

void
torch_bw_forget(void)
{
	int i;

	for (i = 0; i < TORCH_NODE_CACHE; i++) {
		Py_CLEAR(torch_bw.cache[i].node);
		Py_CLEAR(torch_bw.cache[i].hook);
	}
}

/* Called by the autograd engine when a backward pass ends. */
static PyObject *
torch_bw_eob(PyObject *self, PyObject *unused)
{
	struct torch_bwcall *c;

	(void)self;
	(void)unused;
	torch_bw.eob_queued = 0;
	while ((c = torch_bw.eob_list) != NULL) {
		torch_bw.eob_list = c->eob_next;
		if (!torch_st.child)
			torch_bwcall_finish(c);
		torch_bwcall_unref(c);
	}
	torch_bw_forget();
	Py_RETURN_NONE;
}

static void
torch_bw_eob_add(struct torch_bwcall *c)
{
	PyObject *r;

	if (torch_bw.engine == NULL)
		return;
	c->refs++;
	c->eob_next = torch_bw.eob_list;
	torch_bw.eob_list = c;
	if (torch_bw.eob_queued)
		return;
	r = PyObject_CallMethodOneArg(
	    torch_bw.engine, torch_bw.s_queue_callback, torch_bw.eob_fn);
	if (r != NULL) {
		torch_bw.eob_queued = 1;
		Py_DECREF(r);
		return;
	}
	torch_bw.eob_list = c->eob_next;
	torch_bwcall_unref(c);
	torch_swallow("queue_callback");
}

void
torch_bw_clear(void)
{
	struct torch_bwcall *c;

	torch_bw_forget();
	/* Pending end-of-backward calls still fire once; they find
	 * nothing to do. */
	while ((c = torch_bw.eob_list) != NULL) {
		torch_bw.eob_list = c->eob_next;
		c->done = 1;
		torch_bwcall_unref(c);
	}
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
				torch_bw_eob_add(c);
		} else
			torch_bwcall_finish(c);
	}
}

static PyObject *
torch_nodehook_call(PyObject *self, PyObject *args, PyObject *kw)
{
	(void)args;
	(void)kw;
	if (!torch_st.child)
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

	if (torch_bw.dummy == NULL || torch_bw.no_fast)
		return -1;
	d = PyDict_New();
	if (d == NULL || PyDict_SetItem(d, torch_bw.zero, hook) != 0 ||
	    PyObject_SetAttr(torch_bw.dummy, torch_bw.s_backward_hooks, d) !=
		0) {
		Py_XDECREF(d);
		PyErr_Clear();
		return -1;
	}
	Py_DECREF(d);
	r = PyObject_CallMethodOneArg(
	    node, torch_bw.s_register_hook_dict, torch_bw.dummy);
	if (r == NULL) {
		/* A torch whose nodes lack it: the slow path from now on. */
		PyErr_Clear();
		torch_bw.no_fast = 1;
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
		if (torch_bw.cache[i].node == node &&
		    torch_bw.cache[i].kind == kind &&
		    ((struct torch_nodehook *)torch_bw.cache[i].hook)->n <
			TORCH_NODE_EV)
			return (struct torch_nodehook *)torch_bw.cache[i].hook;
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
	i = torch_bw.cache_next;
	torch_bw.cache_next = (i + 1) % TORCH_NODE_CACHE;
	Py_XSETREF(torch_bw.cache[i].node, Py_NewRef(node));
	Py_XSETREF(torch_bw.cache[i].hook, (PyObject *)h);
	torch_bw.cache[i].kind = kind;
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
	return torch_st.tensor_type != NULL &&
	    PyObject_TypeCheck(o, torch_st.tensor_type);
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
	PyObject *g = PyObject_GetAttr(t, torch_bw.s_grad_fn);

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

void
torch_bw_arm(const char *name, int64_t step, PyObject *input, PyObject *output)
{
	PyObject *o, *x, *go, *gx = NULL;
	struct torch_bwcall *c;

	o = torch_first_tensor(output);
	if (o == NULL) {
		torch_bw_skip(name, "its output holds no tensor");
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
	c->name = name;
	c->step = step;
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
		torch_bw_skip(name, "cannot hook its autograd nodes");
	torch_swallow("backward hook registration");
out:
	Py_DECREF(go);
	Py_XDECREF(gx);
}

static PyMethodDef torch_bw_eob_def = { "probing_backward_done", torch_bw_eob,
	METH_NOARGS, NULL };

int
torch_bw_init(void)
{
	if (PyType_Ready(&torch_nodehook_type) != 0)
		return -1;
	torch_bw.eob_fn = PyCFunction_New(&torch_bw_eob_def, NULL);
	torch_bw.s_grad_fn = PyUnicode_InternFromString("grad_fn");
	torch_bw.s_queue_callback =
	    PyUnicode_InternFromString("queue_callback");
	torch_bw.s_backward_hooks =
	    PyUnicode_InternFromString("_backward_hooks");
	torch_bw.s_register_hook_dict =
	    PyUnicode_InternFromString("_register_hook_dict");
	torch_bw.zero = PyLong_FromLong(0);
	if (!torch_bw.eob_fn || !torch_bw.s_grad_fn ||
	    !torch_bw.s_queue_callback || !torch_bw.s_backward_hooks ||
	    !torch_bw.s_register_hook_dict || !torch_bw.zero)
		return -1;
	return 0;
}

void
torch_bw_load(void)
{
	PyObject *var;

	if (torch_bw.engine == NULL) {
		var = torch_getattr_path("torch.autograd.variable", "Variable");
		torch_bw.engine = var
		    ? PyObject_GetAttrString(var, "_execution_engine")
		    : NULL;
		Py_XDECREF(var);
		if (torch_bw.engine == NULL)
			PyErr_Clear(); /* backward rows end at the node */
	}
	if (torch_bw.dummy == NULL) {
		var = torch_getattr_path("torch", "empty");
		torch_bw.dummy =
		    var ? PyObject_CallFunction(var, "i", 0) : NULL;
		Py_XDECREF(var);
		PyErr_Clear();
	}
}
