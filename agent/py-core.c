/* The Python module `probing._core`: what the `probing` package (and the
 * eval helper) call in the agent. Every function runs with the GIL held. */
#include <stdlib.h>

#include <Python.h>

#include "agent.h"
#include "endpoint.h"
#include "log.h"

static PyObject *
py_core_socket(PyObject *self, PyObject *args)
{
	char name[64];

	(void)self;
	(void)args;
	if (!agent_running)
		Py_RETURN_NONE;
	endpoint_socket_name(agent_pid, name, sizeof name);
	return PyUnicode_FromFormat("@%s", name);
}

static PyObject *
py_core_log_path(PyObject *self, PyObject *args)
{
	(void)self;
	(void)args;
	return PyUnicode_FromString(log_path());
}

/* table_register(name, fn, columns=None): python.<name> calls fn. */
static PyObject *
py_core_table_register(PyObject *self, PyObject *args, PyObject *kw)
{
	static char name_kw[] = "name", fn_kw[] = "fn",
		    columns_kw[] = "columns";
	static char *kwlist[] = { name_kw, fn_kw, columns_kw, NULL };
	PyObject *fn, *columns = Py_None;
	const char *name;
	char *cause = NULL;

	(void)self;
	if (!PyArg_ParseTupleAndKeywords(
		args, kw, "sO|O:table_register", kwlist, &name, &fn, &columns))
		return NULL;
	if (tbl_python_add(name, fn, columns, &cause) != 0) {
		PyErr_SetString(PyExc_ValueError, cause_str(cause));
		free(cause);
		return NULL;
	}
	Py_RETURN_NONE;
}

/* table_unregister(name): removes python.<name>. */
static PyObject *
py_core_table_unregister(PyObject *self, PyObject *args)
{
	const char *name;
	char *cause = NULL;

	(void)self;
	if (!PyArg_ParseTuple(args, "s:table_unregister", &name))
		return NULL;
	if (tbl_python_remove(name, &cause) != 0) {
		PyErr_SetString(PyExc_ValueError, cause_str(cause));
		free(cause);
		return NULL;
	}
	Py_RETURN_NONE;
}

static PyMethodDef py_core_methods[] = {
	{ "socket", py_core_socket, METH_NOARGS,
	    "the agent's unix socket name, or None when it did not start" },
	{ "log_path", py_core_log_path, METH_NOARGS, "the agent's log file" },
	{ "table_register", (PyCFunction)(void (*)(void))py_core_table_register,
	    METH_VARARGS | METH_KEYWORDS,
	    "table_register(name, fn, columns=None): each query of "
	    "python.<name> calls fn() for its rows (dicts, or tuples with "
	    "columns); registering a name again replaces it" },
	{ "table_unregister", py_core_table_unregister, METH_VARARGS,
	    "table_unregister(name): removes the user table python.<name>" },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef py_core_module = { PyModuleDef_HEAD_INIT,
	"probing._core", "the probing agent, running inside this process", -1,
	py_core_methods, NULL, NULL, NULL, NULL };

PyObject *
py_core_new(void)
{
	return PyModule_Create(&py_core_module);
}

PyMODINIT_FUNC PyInit__core(void);

PyMODINIT_FUNC
PyInit__core(void)
{
	return PyModule_Create(&py_core_module);
}
