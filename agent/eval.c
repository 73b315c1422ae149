/* eval and completion: Python code run in the target's __main__. */
#include <stdlib.h>
#include <string.h>

#include <Python.h>

#include "agent.h"
#include "log.h"

/* The helper module's source, made from eval-helper.py at build time. */
extern const char eval_helper_source[];

/* The helper module's namespace; touched only with the GIL held. */
static PyObject *eval_helper;

/* Returns the helper's function name (borrowed), loading it once. */
static PyObject *
eval_helper_fn(const char *name, char **cause)
{
	PyObject *code, *r;

	if (eval_helper == NULL) {
		code = Py_CompileString(eval_helper_source,
		    "<probing-eval-helper>", Py_file_input);
		if (code == NULL)
			goto fail;
		eval_helper = PyDict_New();
		if (eval_helper == NULL) {
			Py_DECREF(code);
			goto fail;
		}
		PyDict_SetItemString(eval_helper, "__builtins__",
		    PyEval_GetBuiltins());
		r = PyEval_EvalCode(code, eval_helper, eval_helper);
		Py_DECREF(code);
		if (r == NULL) {
			Py_CLEAR(eval_helper);
			goto fail;
		}
		Py_DECREF(r);
	}
	return PyDict_GetItemString(eval_helper, name);
fail:
	PyErr_Clear();
	cause_set(cause, "cannot load the eval helper in pid %d",
	    (int)agent_pid);
	return NULL;
}

/* A Python str as a JSON string (invalid text replaced). */
static json_t *
eval_str(PyObject *s)
{
	PyObject *b;
	json_t *j;

	if (s == NULL || s == Py_None)
		return json_null();
	b = PyUnicode_AsEncodedString(s, "utf-8", "backslashreplace");
	if (b == NULL) {
		PyErr_Clear();
		return json_string("<unprintable>");
	}
	j = json_stringn(PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
	Py_DECREF(b);
	return j != NULL ? j : json_string("<unprintable>");
}

struct eval_call {
	const char *text;
	json_t *result;
};

static int
eval_call_run(void *arg, char **cause)
{
	struct eval_call *c = arg;
	PyObject *fn, *r;

	fn = eval_helper_fn("run", cause);
	if (fn == NULL)
		return -1;
	r = PyObject_CallFunction(fn, "s", c->text);
	if (r == NULL || !PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2) {
		Py_XDECREF(r);
		PyErr_Clear();
		cause_set(cause, "the eval helper failed in pid %d",
		    (int)agent_pid);
		return -1;
	}
	c->result = json_pack("{s:o, s:o}", "output",
	    eval_str(PyTuple_GET_ITEM(r, 0)), "error",
	    eval_str(PyTuple_GET_ITEM(r, 1)));
	Py_DECREF(r);
	return 0;
}

json_t *
eval_run(const char *code, int timeout_ms, char **cause)
{
	struct eval_call c = { code, NULL };

	if (py_run(eval_call_run, &c, timeout_ms, cause) != 0)
		return NULL;
	return c.result;
}

static int
eval_complete_run(void *arg, char **cause)
{
	struct eval_call *c = arg;
	PyObject *fn, *r;
	json_t *matches;
	Py_ssize_t i;

	fn = eval_helper_fn("complete", cause);
	if (fn == NULL)
		return -1;
	r = PyObject_CallFunction(fn, "s", c->text);
	if (r == NULL || !PyList_Check(r)) {
		Py_XDECREF(r);
		PyErr_Clear();
		cause_set(cause, "completion failed in pid %d", (int)agent_pid);
		return -1;
	}
	matches = json_array();
	for (i = 0; i < PyList_GET_SIZE(r); i++)
		json_array_append_new(matches, eval_str(PyList_GET_ITEM(r, i)));
	Py_DECREF(r);
	c->result = json_pack("{s:o}", "matches", matches);
	return 0;
}

json_t *
eval_complete(const char *text, int timeout_ms, char **cause)
{
	struct eval_call c = { text, NULL };

	if (py_run(eval_complete_run, &c, timeout_ms, cause) != 0)
		return NULL;
	return c.result;
}
