/* The floor of torch hook cost for tests/bench: a Python extension module
 * with two C functions that return None at once, registered as the same
 * global module forward hooks probing uses, so a benchmark can tell what
 * torch's own hook dispatch costs from what probing adds. post_bw also
 * puts one do-nothing pre-hook on the grad_fn of each module's output the
 * way probing does (node._register_hook_dict): torch's cost of the node
 * hooks that time backward, without probing's own work. Also starts and
 * stops callgrind's instrumentation around the measured steps (no-ops
 * outside valgrind). Built on demand by tests/workloads/torch_steps.py. */
#include <Python.h>

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_START_INSTRUMENTATION
#define CALLGRIND_STOP_INSTRUMENTATION
#endif

static PyObject *
noop_hook(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	(void)self;
	(void)args;
	(void)nargs;
	Py_RETURN_NONE;
}

static PyObject *
noop_instr_start(PyObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	CALLGRIND_START_INSTRUMENTATION;
	Py_RETURN_NONE;
}

static PyObject *
noop_instr_stop(PyObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	CALLGRIND_STOP_INSTRUMENTATION;
	Py_RETURN_NONE;
}

static PyObject *noop_dummy, *noop_tensor, *noop_fn;
static PyObject *s_grad_fn, *s_hooks, *s_register;

/* setup(Tensor, torch.empty(0)): what post_bw needs. */
static PyObject *
noop_setup(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	(void)self;
	if (nargs != 2)
		return PyErr_Format(PyExc_TypeError, "setup(Tensor, dummy)");
	Py_XSETREF(noop_tensor, Py_NewRef(args[0]));
	Py_XSETREF(noop_dummy, Py_NewRef(args[1]));
	s_grad_fn = PyUnicode_InternFromString("grad_fn");
	s_hooks = PyUnicode_InternFromString("_backward_hooks");
	s_register = PyUnicode_InternFromString("_register_hook_dict");
	if (!s_grad_fn || !s_hooks || !s_register)
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *
noop_post_bw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	PyObject *g, *d, *r;

	(void)self;
	if (nargs < 3 || noop_tensor == NULL ||
	    !PyObject_TypeCheck(args[2], (PyTypeObject *)noop_tensor))
		Py_RETURN_NONE;
	g = PyObject_GetAttr(args[2], s_grad_fn);
	if (g == NULL || g == Py_None) {
		Py_XDECREF(g);
		PyErr_Clear();
		Py_RETURN_NONE;
	}
	d = PyDict_New();
	if (d != NULL && PyDict_SetItem(d, Py_False, noop_fn) == 0 &&
	    PyObject_SetAttr(noop_dummy, s_hooks, d) == 0) {
		r = PyObject_CallMethod(
		    g, "_register_hook_dict", "O", noop_dummy);
		Py_XDECREF(r);
	}
	Py_XDECREF(d);
	Py_DECREF(g);
	if (PyErr_Occurred())
		return NULL;
	Py_RETURN_NONE;
}

static PyMethodDef noop_methods[] = {
	{ "setup", (PyCFunction)(void (*)(void))noop_setup, METH_FASTCALL,
	    "setup(Tensor, dummy tensor) for post_bw" },
	{ "post_bw", (PyCFunction)(void (*)(void))noop_post_bw, METH_FASTCALL,
	    "forward hook that puts a do-nothing pre-hook on the output's "
	    "grad_fn" },
	{ "instr_start", noop_instr_start, METH_NOARGS,
	    "callgrind: count from here" },
	{ "instr_stop", noop_instr_stop, METH_NOARGS,
	    "callgrind: stop counting" },
	{ "pre", (PyCFunction)(void (*)(void))noop_hook, METH_FASTCALL,
	    "forward pre-hook that does nothing" },
	{ "post", (PyCFunction)(void (*)(void))noop_hook, METH_FASTCALL,
	    "forward hook that does nothing" },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef noop_module = { PyModuleDef_HEAD_INIT, "noop_hooks",
	"C hooks that return at once", -1, noop_methods, NULL, NULL, NULL,
	NULL };

PyMODINIT_FUNC PyInit_noop_hooks(void);

PyMODINIT_FUNC
PyInit_noop_hooks(void)
{
	PyObject *m = PyModule_Create(&noop_module);

	if (m != NULL && noop_fn == NULL)
		noop_fn = PyObject_GetAttrString(m, "pre");
	return m;
}
