/* Who this process is in its job: rank, world size, job id, backend.
 *
 * Read when asked, never cached: a job may set RANK or call
 * init_process_group long after the agent came. Under the GIL (a py worker,
 * bounded wait) the answer comes from torch.distributed when it is
 * initialized and from os.environ as it is now; when the GIL cannot be had
 * it comes from /proc/self/environ, the environment the process started
 * with, and `source` says so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <Python.h>

#include "agent.h"
#include "log.h"

/* The environment variables read, in the order their meaning is tried. */
static const char *const identity_env_names[IDENTITY_ENV_COUNT] = {
	[ID_RANK] = "RANK",
	[ID_LOCAL_RANK] = "LOCAL_RANK",
	[ID_WORLD_SIZE] = "WORLD_SIZE",
	[ID_LOCAL_WORLD_SIZE] = "LOCAL_WORLD_SIZE",
	[ID_GROUP_RANK] = "GROUP_RANK",
	[ID_MASTER_ADDR] = "MASTER_ADDR",
	[ID_MASTER_PORT] = "MASTER_PORT",
	[ID_RUN_ID] = "TORCHELASTIC_RUN_ID",
	[ID_SLURM_JOB_ID] = "SLURM_JOB_ID",
	[ID_SLURM_PROCID] = "SLURM_PROCID",
	[ID_SLURM_LOCALID] = "SLURM_LOCALID",
	[ID_SLURM_NTASKS] = "SLURM_NTASKS",
	[ID_OMPI_RANK] = "OMPI_COMM_WORLD_RANK",
	[ID_OMPI_LOCAL_RANK] = "OMPI_COMM_WORLD_LOCAL_RANK",
	[ID_OMPI_SIZE] = "OMPI_COMM_WORLD_SIZE",
};

static void
identity_put(char *dst, size_t len, const char *s)
{
	snprintf(dst, len, "%s", s != NULL ? s : "");
}

/* Fills env from /proc/self/environ: the environment at exec. */
static void
identity_env_proc(struct identity *id)
{
	FILE *f = fopen("/proc/self/environ", "re");
	char *buf = NULL, *p;
	size_t cap = 0, n = 0, got;
	int i;

	if (f == NULL)
		return;
	do {
		if (n + 4096 + 1 > cap) {
			char *nb = realloc(buf, cap = n + 65536);

			if (nb == NULL)
				break;
			buf = nb;
		}
		got = fread(buf + n, 1, cap - n - 1, f);
		n += got;
	} while (got > 0);
	fclose(f);
	if (buf == NULL)
		return;
	buf[n] = '\0';
	for (p = buf; p < buf + n; p += strlen(p) + 1) {
		for (i = 0; i < IDENTITY_ENV_COUNT; i++) {
			size_t k = strlen(identity_env_names[i]);

			if (strncmp(p, identity_env_names[i], k) == 0 &&
			    p[k] == '=')
				identity_put(
				    id->env[i], sizeof id->env[i], p + k + 1);
		}
	}
	free(buf);
}

/* GIL held: str(obj) into dst; clears any error. */
static void
identity_py_str(char *dst, size_t len, PyObject *obj)
{
	PyObject *s = obj != NULL ? PyObject_Str(obj) : NULL;
	const char *u = s != NULL ? PyUnicode_AsUTF8(s) : NULL;

	if (u != NULL)
		identity_put(dst, len, u);
	Py_XDECREF(s);
	PyErr_Clear();
}

/* GIL held: calls mod.name() and returns a new reference or NULL (no
 * error left set). */
static PyObject *
identity_py_call(PyObject *mod, const char *name)
{
	PyObject *r = PyObject_CallMethod(mod, name, NULL);

	if (r == NULL)
		PyErr_Clear();
	return r;
}

static long
identity_py_long(PyObject *mod, const char *name)
{
	PyObject *r = identity_py_call(mod, name);
	long v = r != NULL ? PyLong_AsLong(r) : -1;

	Py_XDECREF(r);
	PyErr_Clear();
	return v;
}

/* GIL held: the default group's TCPStore address, unwrapping prefix
 * stores, into id->store_*. */
static void
identity_py_store(struct identity *id, PyObject *dist)
{
	PyObject *c10d = PyObject_GetAttrString(dist, "distributed_c10d");
	PyObject *store =
	    c10d != NULL ? identity_py_call(c10d, "_get_default_store") : NULL;
	PyObject *host, *port;
	int depth;

	PyErr_Clear();
	for (depth = 0; store != NULL && depth < 4; depth++) {
		PyObject *under =
		    PyObject_GetAttrString(store, "underlying_store");

		PyErr_Clear();
		if (under == NULL || under == Py_None) {
			Py_XDECREF(under);
			break;
		}
		Py_DECREF(store);
		store = under;
	}
	host = store != NULL ? PyObject_GetAttrString(store, "host") : NULL;
	port = store != NULL ? PyObject_GetAttrString(store, "port") : NULL;
	PyErr_Clear();
	if (host != NULL && port != NULL && PyLong_Check(port)) {
		identity_py_str(id->store_host, sizeof id->store_host, host);
		id->store_port = (int)PyLong_AsLong(port);
		PyErr_Clear();
	}
	Py_XDECREF(host);
	Py_XDECREF(port);
	Py_XDECREF(store);
	Py_XDECREF(c10d);
}

/* GIL held: os.environ as it is now, and torch.distributed. */
static int
identity_py(void *arg, char **cause)
{
	struct identity *id = arg;
	PyObject *mods = PyImport_GetModuleDict();
	PyObject *os = PyDict_GetItemString(mods, "os");
	PyObject *torch = PyDict_GetItemString(mods, "torch");
	PyObject *dist = PyDict_GetItemString(mods, "torch.distributed");
	PyObject *environ, *v;
	int i;

	(void)cause;
	environ = os != NULL ? PyObject_GetAttrString(os, "environ") : NULL;
	PyErr_Clear();
	for (i = 0; environ != NULL && i < IDENTITY_ENV_COUNT; i++) {
		v = PyMapping_GetItemString(environ, identity_env_names[i]);
		id->env[i][0] = '\0';
		if (v != NULL)
			identity_py_str(id->env[i], sizeof id->env[i], v);
		Py_XDECREF(v);
		PyErr_Clear();
	}
	if (environ != NULL)
		id->source = "environ";
	Py_XDECREF(environ);
	if (torch != NULL) {
		v = PyObject_GetAttrString(torch, "__version__");
		identity_py_str(id->torch, sizeof id->torch, v);
		Py_XDECREF(v);
	}
	if (dist != NULL) {
		PyObject *avail = identity_py_call(dist, "is_available");
		PyObject *init = avail == Py_True
		    ? identity_py_call(dist, "is_initialized")
		    : NULL;

		if (init == Py_True) {
			id->dist_rank = identity_py_long(dist, "get_rank");
			id->dist_world_size =
			    identity_py_long(dist, "get_world_size");
			v = identity_py_call(dist, "get_backend");
			identity_py_str(id->backend, sizeof id->backend, v);
			Py_XDECREF(v);
			identity_py_store(id, dist);
			id->source = "torch.distributed";
		}
		Py_XDECREF(avail);
		Py_XDECREF(init);
	}
	PyErr_Clear();
	return 0;
}

/* The first set variable of ids as an int, or -1. */
static int
identity_env_int(const struct identity *id, const enum identity_env *ids, int n)
{
	int i;
	char *end;
	long v;

	for (i = 0; i < n; i++) {
		if (id->env[ids[i]][0] == '\0')
			continue;
		v = strtol(id->env[ids[i]], &end, 10);
		if (*end == '\0' && v >= 0 && v <= 1 << 24)
			return (int)v;
	}
	return -1;
}

/* Decides rank, world size and job from what was read. */
static void
identity_settle(struct identity *id)
{
	static const enum identity_env rank[] = { ID_RANK, ID_SLURM_PROCID,
		ID_OMPI_RANK };
	static const enum identity_env local[] = { ID_LOCAL_RANK,
		ID_SLURM_LOCALID, ID_OMPI_LOCAL_RANK };
	static const enum identity_env world[] = { ID_WORLD_SIZE,
		ID_SLURM_NTASKS, ID_OMPI_SIZE };
	static const enum identity_env lworld[] = { ID_LOCAL_WORLD_SIZE };
	static const enum identity_env group[] = { ID_GROUP_RANK };
	static const enum identity_env mport[] = { ID_MASTER_PORT };
	const char *run = id->env[ID_RUN_ID];

	id->rank =
	    id->dist_rank >= 0 ? id->dist_rank : identity_env_int(id, rank, 3);
	id->world_size = id->dist_world_size > 0
	    ? id->dist_world_size
	    : identity_env_int(id, world, 3);
	id->local_rank = identity_env_int(id, local, 3);
	id->local_world_size = identity_env_int(id, lworld, 1);
	id->group_rank = identity_env_int(id, group, 1);
	id->master_port = identity_env_int(id, mport, 1);
	if (id->store_host[0] != '\0' && id->master_port < 0) {
		identity_put(id->env[ID_MASTER_ADDR],
		    sizeof id->env[ID_MASTER_ADDR], id->store_host);
		id->master_port = id->store_port;
	}
	/* torchrun's default run id is "none", the same for every job. */
	if (run[0] != '\0' && strcmp(run, "none") != 0)
		snprintf(id->job, sizeof id->job, "torchelastic:%s", run);
	else if (id->env[ID_SLURM_JOB_ID][0] != '\0')
		snprintf(id->job, sizeof id->job, "slurm:%s",
		    id->env[ID_SLURM_JOB_ID]);
	else if (id->store_host[0] != '\0')
		snprintf(id->job, sizeof id->job, "c10d:%s:%d", id->store_host,
		    id->store_port);
	else if (id->env[ID_MASTER_ADDR][0] != '\0' && id->master_port > 0)
		snprintf(id->job, sizeof id->job, "c10d:%s:%d",
		    id->env[ID_MASTER_ADDR], id->master_port);
	else
		id->job[0] = '\0';
}

/* The process's start as unix time, from /proc/self/stat and btime. */
static double
identity_start_time(void)
{
	static double start;
	char buf[1024], *p;
	unsigned long long ticks = 0, btime = 0;
	FILE *f;
	int i;

	if (start > 0)
		return start;
	f = fopen("/proc/self/stat", "re");
	if (f != NULL && fgets(buf, sizeof buf, f) != NULL &&
	    (p = strrchr(buf, ')')) != NULL) {
		/* Field 22 is starttime; p points at the end of field 2. */
		for (i = 2; i < 21 && p != NULL; i++)
			p = strchr(p + 1, ' ');
		if (p != NULL)
			ticks = strtoull(p + 1, NULL, 10);
	}
	if (f != NULL)
		fclose(f);
	f = fopen("/proc/stat", "re");
	while (f != NULL && fgets(buf, sizeof buf, f) != NULL) {
		if (strncmp(buf, "btime ", 6) == 0)
			btime = strtoull(buf + 6, NULL, 10);
	}
	if (f != NULL)
		fclose(f);
	if (btime > 0)
		start = (double)btime + (double)ticks / sysconf(_SC_CLK_TCK);
	return start;
}

void
identity_read(struct identity *id, int gil_ms)
{
	char *cause = NULL;

	memset(id, 0, sizeof *id);
	id->dist_rank = id->dist_world_size = -1;
	id->store_port = -1;
	id->pid = agent_pid;
	if (gethostname(id->host, sizeof id->host - 1) != 0)
		identity_put(id->host, sizeof id->host, "?");
	id->start_time = identity_start_time();
	id->source = "proc";
	if (py_run(identity_py, id, gil_ms, &cause) != 0) {
		log_info("identity without the GIL: %s", cause);
		free(cause);
		identity_env_proc(id);
	}
	identity_settle(id);
}

static json_t *
identity_int(int v)
{
	return v >= 0 ? json_integer(v) : json_null();
}

static json_t *
identity_text(const char *s)
{
	return s[0] != '\0' ? json_string(s) : json_null();
}

json_t *
identity_json(const struct identity *id)
{
	json_t *o = json_object();
	char ep[300];
	int port = (int)config_get(CONFIG_SERVER_PORT);

	if (o == NULL)
		return NULL;
	if (port > 0)
		snprintf(ep, sizeof ep, "%s:%d", id->host, port);
	else
		snprintf(ep, sizeof ep, "@probing-%d", (int)id->pid);
	json_object_set_new(o, "pid", json_integer(id->pid));
	json_object_set_new(o, "host", json_string(id->host));
	json_object_set_new(o, "rank", identity_int(id->rank));
	json_object_set_new(o, "local_rank", identity_int(id->local_rank));
	json_object_set_new(o, "world_size", identity_int(id->world_size));
	json_object_set_new(
	    o, "local_world_size", identity_int(id->local_world_size));
	json_object_set_new(o, "group_rank", identity_int(id->group_rank));
	json_object_set_new(o, "job", identity_text(id->job));
	json_object_set_new(o, "backend", identity_text(id->backend));
	json_object_set_new(
	    o, "master_addr", identity_text(id->env[ID_MASTER_ADDR]));
	json_object_set_new(o, "master_port", identity_int(id->master_port));
	json_object_set_new(o, "python", json_string(agent_python_version()));
	json_object_set_new(o, "torch", identity_text(id->torch));
	json_object_set_new(o, "endpoint", json_string(ep));
	json_object_set_new(o, "tcp_port", json_integer(port));
	json_object_set_new(o, "start_time", json_real(id->start_time));
	json_object_set_new(o, "source", json_string(id->source));
	return o;
}
