/* The agent's entry points: the load-time constructor, fork handling and
 * the Python module `probing._core`. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <Python.h>

#include "agent.h"
#include "endpoint.h"
#include "log.h"
#include "rundir.h"

pid_t agent_pid;
static int agent_running;
static char agent_pyver[32];

const char *
agent_python_version(void)
{
	return agent_pyver;
}

/* Fork child: the parent's threads are gone, and none of the agent's fds
 * (sockets, the event loop's epoll, pipe and eventfd, the log) stays
 * open in it. */
static void
agent_atfork_child(void)
{
	agent_running = 0;
	server_after_fork();
	py_after_fork();
	bt_native_after_fork();
	log_after_fork();
}

/* Checks the interpreter is the version this agent was built for. */
static int
agent_check_python(char **cause)
{
	char *lc = NULL;
	const char *v = Py_GetVersion();
	size_t n = strcspn(v, " ");

	snprintf(agent_pyver, sizeof agent_pyver, "%.*s", (int)n, v);
	if ((int)(Py_Version >> 24) != PY_MAJOR_VERSION ||
	    (int)((Py_Version >> 16) & 0xff) != PY_MINOR_VERSION) {
		cause_set(cause,
		    "this agent is built for python %d.%d but pid %d runs %s",
		    PY_MAJOR_VERSION, PY_MINOR_VERSION, (int)agent_pid,
		    agent_pyver);
		return -1;
	}
	if (py_layout_free_threaded()) {
		cause_set(cause,
		    "pid %d runs a free-threaded python %s, which probing does "
		    "not support",
		    (int)agent_pid, agent_pyver);
		return -1;
	}
	if (py_layout_check(&lc) != 0) {
		log_info("python frames will not be read: %s", lc);
		free(lc);
	}
	return 0;
}

/* Opens the per-user directory and the log in it (or $PROBING_LOG);
 * returns the directory's fd or -1. */
static int
agent_open_files(void)
{
	char dir[256], path[300], *cause = NULL, *dcause = NULL;
	const char *logp = getenv("PROBING_LOG");
	int fd;

	rundir_path("", geteuid(), getenv("XDG_RUNTIME_DIR"), dir, sizeof dir);
	fd = rundir_open(dir, geteuid(), 1, &dcause);
	if (fd >= 0)
		rundir_clean(fd);
	if (logp != NULL && *logp != '\0')
		log_open(logp, 0, &cause);
	else if (fd >= 0) {
		snprintf(path, sizeof path, "%s/%d.log", dir, (int)agent_pid);
		log_open(path, 1, &cause);
	}
	if (dcause != NULL)
		log_info("no log or init file: %s", dcause);
	free(dcause);
	free(cause);
	return fd;
}

/* At a clean exit of the process (not of a forked child) the log goes. */
__attribute__((destructor)) static void
agent_fini(void)
{
	if (agent_pid != 0 && getpid() == agent_pid)
		log_remove();
}

__attribute__((constructor)) static void
agent_init(void)
{
	sigset_t all, old;
	char *cause = NULL;
	int dir;

	if (agent_running)
		return;
	agent_pid = getpid();
	dir = agent_open_files();
	if (agent_check_python(&cause) != 0)
		goto fail;
	config_load_env(getenv("PROBING") != NULL);
	config_load_file(dir);
	if (dir >= 0)
		close(dir);
	/* Agent threads inherit a mask that blocks every signal, so the
	 * application's handlers only ever run on its own threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	if (store_open(&cause) != 0 || server_start(&cause) != 0) {
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		goto fail;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_atfork(NULL, NULL, agent_atfork_child);
	agent_running = 1;
	log_info("agent started (python %s)", agent_pyver);
	torch_init();
	eval_init();
	bt_eval_init();
	return;
fail:
	if (dir >= 0)
		close(dir);
	log_info("agent not started: %s", cause_str(cause));
	free(cause);
}

static PyObject *
agent_py_socket(PyObject *self, PyObject *args)
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
agent_py_log_path(PyObject *self, PyObject *args)
{
	(void)self;
	(void)args;
	return PyUnicode_FromString(log_path());
}

/* table_register(name, fn, columns=None): python.<name> calls fn. */
static PyObject *
agent_py_table_register(PyObject *self, PyObject *args, PyObject *kw)
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
agent_py_table_unregister(PyObject *self, PyObject *args)
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

static PyMethodDef agent_py_methods[] = {
	{ "socket", agent_py_socket, METH_NOARGS,
	    "the agent's unix socket name, or None when it did not start" },
	{ "log_path", agent_py_log_path, METH_NOARGS, "the agent's log file" },
	{ "table_register",
	    (PyCFunction)(void (*)(void))agent_py_table_register,
	    METH_VARARGS | METH_KEYWORDS,
	    "table_register(name, fn, columns=None): each query of "
	    "python.<name> calls fn() for its rows (dicts, or tuples with "
	    "columns); registering a name again replaces it" },
	{ "table_unregister", agent_py_table_unregister, METH_VARARGS,
	    "table_unregister(name): removes the user table python.<name>" },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef agent_py_module = { PyModuleDef_HEAD_INIT,
	"probing._core", "the probing agent, running inside this process", -1,
	agent_py_methods, NULL, NULL, NULL, NULL };

PyObject *
agent_py_core(void)
{
	return PyModule_Create(&agent_py_module);
}

PyMODINIT_FUNC PyInit__core(void);

PyMODINIT_FUNC
PyInit__core(void)
{
	return PyModule_Create(&agent_py_module);
}
