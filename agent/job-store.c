/* This rank's endpoint in the job's own rendezvous store, so that the
 * agent of any rank can name every other (`-t job:PID` across hosts).
 *
 * The store is the one the job already runs: the default group's
 * TCPStore, or MASTER_ADDR:MASTER_PORT. We talk to it through a client
 * connection of our own (never the job's), with short timeouts, under
 * keys `probing/<rank>` holding {rank, host, addr, port, pid}. A plain
 * socket connect is tried first, so that a store that went away costs
 * the job's threads nothing while we hold the GIL. The client asks for
 * no libuv: libuv only matters to the store's server side, and torch
 * built without it (Debian's 2.6 and 2.14) refuses a client that asks for
 * it, the default since 2.4; torch before 2.2 has no such argument.
 *
 * Threads: publishing runs on a detached thread of its own that hands the
 * Python part to a py worker; reading runs on a request thread the same
 * way. The helper functions below live in a private dict, made once. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <Python.h>

#include "agent.h"
#include "log.h"

#define JOBSTORE_GIL_MS 2000

static const char jobstore_src[] =
    "import json, socket\n"
    "from datetime import timedelta\n"
    "def _client(host, port, timeout):\n"
    "    socket.create_connection((host, port), timeout=timeout).close()\n"
    "    import torch.distributed as d\n"
    "    kw = dict(is_master=False, timeout=timedelta(seconds=timeout))\n"
    "    try:\n"
    "        return d.TCPStore(host, port, use_libuv=False, **kw)\n"
    "    except TypeError:\n"
    "        return d.TCPStore(host, port, **kw)\n"
    "def _addr(host, port):\n"
    "    try:\n"
    "        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "        s.connect((host, port))\n"
    "        a = s.getsockname()[0]\n"
    "        s.close()\n"
    "        return a\n"
    "    except OSError:\n"
    "        return None\n"
    "def publish(host, port, rank, info):\n"
    "    st = _client(host, port, 2.0)\n"
    "    info = json.loads(info)\n"
    "    info['addr'] = _addr(host, port)\n"
    "    st.set('probing/%d' % rank, json.dumps(info))\n"
    "def members(host, port, world):\n"
    "    st = _client(host, port, 2.0)\n"
    "    st.set_timeout(timedelta(milliseconds=50))\n"
    "    out = []\n"
    "    for r in range(world):\n"
    "        try:\n"
    "            out.append(json.loads(st.get('probing/%d' % r)))\n"
    "        except Exception:\n"
    "            pass\n"
    "    return json.dumps(out)\n";

static PyObject *jobstore_ns; /* GIL: the dict of the functions above */

/* GIL held: the dict of the helper functions, made once. */
static PyObject *
jobstore_funcs(char **cause)
{
	PyObject *ns, *r;

	if (jobstore_ns != NULL)
		return jobstore_ns;
	ns = PyDict_New();
	if (ns == NULL ||
	    PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()) !=
		0) {
		Py_XDECREF(ns);
		PyErr_Clear();
		cause_set(cause, "out of memory");
		return NULL;
	}
	r = PyRun_String(jobstore_src, Py_file_input, ns, ns);
	if (r == NULL) {
		Py_DECREF(ns);
		PyErr_Clear();
		cause_set(cause, "cannot set up the store client");
		return NULL;
	}
	Py_DECREF(r);
	jobstore_ns = ns;
	return ns;
}

/* GIL held: the text of the pending exception, cleared, into *cause. */
static void
jobstore_error(const char *what, char **cause)
{
	PyObject *type, *value, *tb, *s;
	const char *msg;

	PyErr_Fetch(&type, &value, &tb);
	s = value != NULL ? PyObject_Str(value) : NULL;
	msg = s != NULL ? PyUnicode_AsUTF8(s) : NULL;
	cause_set(cause, "%s: %s%s%s", what,
	    type != NULL ? ((PyTypeObject *)type)->tp_name : "error",
	    msg != NULL && *msg ? ": " : "", msg != NULL ? msg : "");
	Py_XDECREF(s);
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
	PyErr_Clear();
}

/* One call into the store: what to call and what came back. */
struct jobstore_call {
	const struct identity *id;
	const char *info; /* publish: this rank's JSON */
	char *result;     /* members: JSON text, malloc'd */
};

/* The store's address: the default group's store, else MASTER_*. */
static int
jobstore_addr(const struct identity *id, const char **host, int *port)
{
	if (id->store_host[0] != '\0' && id->store_port > 0) {
		*host = id->store_host;
		*port = id->store_port;
	} else {
		*host = id->env[ID_MASTER_ADDR];
		*port = id->master_port;
	}
	return (*host)[0] != '\0' && *port > 0 ? 0 : -1;
}

static int
jobstore_call_py(void *arg, char **cause)
{
	struct jobstore_call *c = arg;
	PyObject *ns = jobstore_funcs(cause), *fn, *r;
	const char *host, *text;
	int port;

	if (ns == NULL)
		return -1;
	jobstore_addr(c->id, &host, &port);
	if (c->info != NULL) {
		fn = PyDict_GetItemString(ns, "publish");
		r = PyObject_CallFunction(
		    fn, "siis", host, port, c->id->rank, c->info);
	} else {
		fn = PyDict_GetItemString(ns, "members");
		r = PyObject_CallFunction(
		    fn, "sii", host, port, c->id->world_size);
	}
	if (r == NULL) {
		jobstore_error(c->info != NULL
			? "cannot publish in the job's store"
			: "cannot read the job's store",
		    cause);
		return -1;
	}
	text = PyUnicode_Check(r) ? PyUnicode_AsUTF8(r) : NULL;
	if (text != NULL)
		c->result = strdup(text);
	Py_DECREF(r);
	PyErr_Clear();
	return 0;
}

static void *
jobstore_publish_thread(void *unused)
{
	struct identity *id = malloc(sizeof *id);
	struct jobstore_call c = { 0 };
	const char *host;
	char info[512], *cause = NULL;
	int port, tcp = (int)config_get(CONFIG_SERVER_PORT);

	(void)unused;
	if (id == NULL)
		return NULL;
	identity_read(id, JOBSTORE_GIL_MS);
	if (id->rank < 0 || jobstore_addr(id, &host, &port) != 0) {
		free(id);
		return NULL;
	}
	snprintf(info, sizeof info,
	    "{\"rank\": %d, \"host\": \"%s\", \"port\": %d, \"pid\": %d}",
	    id->rank, id->host, tcp > 0 ? tcp : 0, (int)id->pid);
	c.id = id;
	c.info = info;
	if (py_run(jobstore_call_py, &c, JOBSTORE_GIL_MS, &cause) != 0) {
		log_info("job store: %s", cause_str(cause));
		free(cause);
	} else {
		log_info("job store: published rank %d at %s:%d", id->rank,
		    host, port);
	}
	free(id);
	return NULL;
}

void
jobstore_publish_async(void)
{
	thread_start(jobstore_publish_thread, NULL, "probing-store");
}

json_t *
jobstore_members(const struct identity *id, int timeout_ms, char **cause)
{
	struct jobstore_call c = { .id = id };
	const char *host;
	json_t *r;
	int port;

	if (jobstore_addr(id, &host, &port) != 0) {
		cause_set(cause, "the job has no rendezvous store to read");
		return NULL;
	}
	if (id->world_size <= 0) {
		cause_set(cause, "the job's world size is not known");
		return NULL;
	}
	if (py_run(jobstore_call_py, &c, timeout_ms, cause) != 0)
		return NULL;
	r = c.result != NULL ? json_loads(c.result, 0, NULL) : NULL;
	free(c.result);
	if (r == NULL)
		cause_set(cause, "the job's store gave no members");
	return r;
}
