/* Torch tracing: noticing `import torch` when the agent came first. A
 * finder at the front of sys.meta_path answers only for "torch", by
 * asking the finders after it and wrapping the loader they return; after
 * torch's exec_module the wrapper takes the finder out and calls the
 * on_import function it was given (torch.c starts its setup thread, which
 * installs the hooks once the import is over: never from inside the
 * import, which left the import lock held for other threads).
 *
 * Threads: under the GIL (import machinery and py workers). A loader
 * wrapper owns the original loader; the finder object lives for good. */
#include <stdlib.h>

#include <Python.h>

#include "agent.h"
#include "log.h"
#include "torch.h"

struct torch_loaderwrap {
	PyObject_HEAD PyObject *orig;
};

static struct {
	PyObject *finder; /* created once, never freed */
	int busy;         /* asking the other finders */
	void (*on_import)(void);
} torch_find;

void
torch_finder_remove(void)
{
	PyObject *meta = PySys_GetObject("meta_path");
	Py_ssize_t i;

	if (torch_find.finder == NULL || meta == NULL || !PyList_Check(meta))
		return;
	for (i = PyList_GET_SIZE(meta) - 1; i >= 0; i--) {
		if (PyList_GET_ITEM(meta, i) == torch_find.finder &&
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
	if (r != NULL && !torch_st.child) {
		torch_finder_remove();
		if (torch_find.on_import != NULL)
			torch_find.on_import();
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
 * finders after this one) gets a loader that calls on_import once torch
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
	if (torch_find.busy || !PyUnicode_Check(name) ||
	    PyUnicode_CompareWithASCIIString(name, "torch") != 0)
		Py_RETURN_NONE;
	meta = PySys_GetObject("meta_path");
	if (meta == NULL || (copy = PySequence_List(meta)) == NULL)
		goto none;
	torch_find.busy = 1;
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
	torch_find.busy = 0;
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

int
torch_finder_init(void)
{
	if (PyType_Ready(&torch_finder_type) != 0 ||
	    PyType_Ready(&torch_loaderwrap_type) != 0)
		return -1;
	return 0;
}

int
torch_finder_add(void (*on_import)(void), char **cause)
{
	PyObject *meta;

	torch_find.on_import = on_import;
	if (torch_find.finder == NULL &&
	    (torch_find.finder = PyType_GenericNew(
		 &torch_finder_type, NULL, NULL)) == NULL) {
		PyErr_Clear();
		cause_set(cause, "cannot create the import finder");
		return -1;
	}
	meta = PySys_GetObject("meta_path");
	if (meta == NULL || !PyList_Check(meta)) {
		cause_set(cause, "sys.meta_path is not a list");
		return -1;
	}
	if (PySequence_Contains(meta, torch_find.finder) != 1 &&
	    PyList_Insert(meta, 0, torch_find.finder) != 0) {
		PyErr_Clear();
		cause_set(cause, "cannot add to sys.meta_path");
		return -1;
	}
	return 0;
}
