/* eval, the repl's statements and completion: Python code run in the
 * target's __main__, and the `probing` module an injected process gets.
 *
 * Every eval (a `probing eval`, an API eval, a repl statement) runs on a
 * thread of its own ("probing-eval"), never on a py worker, so that one
 * that never ends ties up nothing but itself: queries, backtraces and
 * config keep their workers. Stopping one raises KeyboardInterrupt in its
 * thread with PyThreadState_SetAsyncExc (under the GIL, from a py worker):
 * it lands at the next bytecode, which for a thread inside a C call is
 * when that call returns; until then `probing evals` lists it.
 *
 * A `probing eval` waits on its request's own thread (eval_run) until the
 * code ends, its deadline passes or the client goes away; the last two
 * stop it. A repl statement is started (eval_start), its output collected
 * (eval_wait) and stopped (eval_interrupt) by separate requests.
 *
 * Output goes into the job's buffer through _emit, bounded by
 * probing.max_result_bytes: a write past it raises in the eval and the
 * request fails with the limit's message. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <Python.h>

#include "agent.h"
#include "clock.h"
#include "log.h"

/* A finished statement nobody came for is forgotten after this long. */
#define EVAL_KEEP_S 120
/* How long an eval may take to stop once interrupted before the request
 * says it has not. */
#define EVAL_GRACE_MS 1000
/* Evals running at once (each has a thread). */
#define EVAL_MAX_RUNNING 32

/* The helper module's source, made from eval-helper.py at build time. */
extern const char eval_helper_source[];

/* The helper module's namespace; touched only with the GIL held. */
static PyObject *eval_helper;
static int eval_provided; /* GIL: the probing module is in place */

enum eval_kind { EVAL_ONCE, EVAL_STATEMENT };

/* One eval. Linked in eval_jobs and guarded by eval_lock, but for code
 * (GIL). It is freed by whoever unlinks it: the request that collects its
 * end, or its own thread when nobody will (interrupted). */
struct eval_job {
	long id;
	enum eval_kind kind;
	char *text;          /* EVAL_ONCE: the source */
	PyObject *code;      /* EVAL_STATEMENT: compiled, until it runs */
	char summary[72];    /* the code's first line, for `evals` */
	unsigned long ident; /* its Python thread id; 0 until it has the GIL */
	long tid;            /* its native thread id; 0 until it runs */
	double created;      /* monotonic seconds */
	double stop_at;      /* when KeyboardInterrupt was raised in it, or 0 */
	int waited;          /* an eval_run request waits for it */
	int interrupted;     /* nobody wants its output any more */
	int finishing;       /* past the code: no async exception now */
	int done;
	int exited;  /* it raised SystemExit */
	int too_big; /* its output went past probing.max_result_bytes */
	char *out;   /* printed since the last wait */
	size_t len, cap;
	char *error;
	time_t done_at;
	struct eval_job *next;
};

static pthread_mutex_t eval_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t eval_changed = PTHREAD_COND_INITIALIZER;
static struct eval_job *eval_jobs;
static long eval_next_id = 1;

static PyObject *eval_py_emit(PyObject *, PyObject *);
static PyMethodDef eval_emit_def = { "_emit", eval_py_emit, METH_VARARGS,
	"appends text to an eval's output" };

static double
eval_now(void)
{
	return clock_ms() / 1000.0;
}

/* The CLOCK_REALTIME time ms from now, for pthread_cond_timedwait. */
static struct timespec
eval_deadline(int ms)
{
	return clock_abstime(ms);
}
/* Returns the helper's function name (borrowed), loading it once. Loading
 * runs Python, which may let another py worker in: the namespace is
 * published only once complete. */
static PyObject *
eval_helper_fn(const char *name, char **cause)
{
	PyObject *code = NULL, *ns = NULL, *emit = NULL, *r;

	if (eval_helper == NULL) {
		code = Py_CompileString(
		    eval_helper_source, "<probing-eval-helper>", Py_file_input);
		ns = PyDict_New();
		emit = PyCFunction_New(&eval_emit_def, NULL);
		if (code == NULL || ns == NULL || emit == NULL ||
		    PyDict_SetItemString(ns, "_emit", emit) != 0 ||
		    PyDict_SetItemString(
			ns, "__builtins__", PyEval_GetBuiltins()) != 0)
			goto fail;
		r = PyEval_EvalCode(code, ns, ns);
		if (r == NULL)
			goto fail;
		Py_DECREF(r);
		if (eval_helper == NULL)
			eval_helper = Py_NewRef(ns);
		Py_DECREF(ns);
		Py_DECREF(code);
		Py_DECREF(emit);
	}
	r = PyDict_GetItemString(eval_helper, name);
	if (r == NULL)
		cause_set(cause, "the eval helper has no %s", name);
	return r;
fail:
	PyErr_Clear();
	Py_XDECREF(code);
	Py_XDECREF(ns);
	Py_XDECREF(emit);
	cause_set(
	    cause, "cannot load the eval helper in pid %d", (int)agent_pid);
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
	if (!PyUnicode_Check(s))
		return json_string("<not text>");
	b = PyUnicode_AsEncodedString(s, "utf-8", "backslashreplace");
	if (b == NULL) {
		PyErr_Clear();
		return json_string("<unprintable>");
	}
	j = json_stringn(PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
	Py_DECREF(b);
	return j != NULL ? j : json_string("<unprintable>");
}

/* GIL: puts probing._core (and a `probing` module when the package is
 * not importable) in sys.modules, once. Failure is logged, not fatal. */
static void
eval_provide(void)
{
	PyObject *fn, *core, *r;
	char *cause = NULL;

	if (eval_provided)
		return;
	/* Set when done: a second worker may run it meanwhile, harmlessly,
	 * but none goes on before the module is there. */
	fn = eval_helper_fn("provide", &cause);
	core = fn != NULL ? py_core_new() : NULL;
	r = core != NULL ? PyObject_CallOneArg(fn, core) : NULL;
	if (r == NULL) {
		PyErr_Clear();
		log_info("cannot provide the probing module: %s",
		    cause != NULL ? cause : "the helper failed");
	}
	Py_XDECREF(r);
	Py_XDECREF(core);
	free(cause);
	eval_provided = 1;
}

struct eval_call {
	const char *text;
	int final;
	json_t *result;
};

static int
eval_complete_run(void *arg, char **cause)
{
	struct eval_call *c = arg;
	PyObject *fn, *r;
	json_t *matches;
	Py_ssize_t i;

	eval_provide();
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
	struct eval_call c = { text, 0, NULL };

	if (py_run_bounded(eval_complete_run, &c, timeout_ms, cause) != 0)
		return NULL;
	return c.result;
}

/* eval_lock held: the job with id, or NULL. */
static struct eval_job *
eval_job_find(long id)
{
	struct eval_job *j;

	for (j = eval_jobs; j != NULL; j = j->next) {
		if (j->id == id)
			return j;
	}
	return NULL;
}

/* eval_lock held: unlinks and frees j (its code is already gone). */
static void
eval_job_free(struct eval_job *j)
{
	struct eval_job **p;

	for (p = &eval_jobs; *p != NULL; p = &(*p)->next) {
		if (*p == j) {
			*p = j->next;
			break;
		}
	}
	free(j->text);
	free(j->out);
	free(j->error);
	free(j);
}

/* eval_lock held: forgets finished statements nobody came for, and
 * counts those still running. */
static int
eval_job_purge(void)
{
	struct eval_job *j, *next;
	time_t now = time(NULL);
	int running = 0;

	for (j = eval_jobs; j != NULL; j = next) {
		next = j->next;
		if (j->done && !j->waited && now - j->done_at > EVAL_KEEP_S)
			eval_job_free(j);
		else if (!j->done)
			running++;
	}
	return running;
}

/* eval_lock held: a new linked job for code (copied), or NULL with
 * *cause when too many run already. */
static struct eval_job *
eval_job_new(enum eval_kind kind, const char *code, char **cause)
{
	struct eval_job *j;
	size_t n;

	if (eval_job_purge() >= EVAL_MAX_RUNNING) {
		cause_set(cause,
		    "%d evals are still running in pid %d; stop one first "
		    "(see: probing -t %d evals)",
		    EVAL_MAX_RUNNING, (int)agent_pid, (int)agent_pid);
		return NULL;
	}
	j = calloc(1, sizeof *j);
	if (j == NULL ||
	    (kind == EVAL_ONCE && (j->text = strdup(code)) == NULL)) {
		free(j);
		cause_set(cause, "out of memory");
		return NULL;
	}
	while (*code == '\n' || *code == ' ')
		code++;
	n = strcspn(code, "\n");
	snprintf(j->summary, sizeof j->summary, "%.*s%s",
	    (int)(n < sizeof j->summary - 4 ? n : sizeof j->summary - 4), code,
	    n < sizeof j->summary - 4 && code[n] == '\0' ? "" : "...");
	j->kind = kind;
	j->created = eval_now();
	j->id = eval_next_id++;
	j->next = eval_jobs;
	eval_jobs = j;
	return j;
}

/* eval_lock held: appends n bytes to j's output; -1 past the limit. */
static int
eval_job_append(struct eval_job *j, const char *s, size_t n)
{
	size_t cap, limit = store_result_limit();
	char *p;

	if (j->interrupted || n == 0)
		return 0;
	if (j->too_big || j->len + n > limit) {
		j->too_big = 1;
		return -1;
	}
	if (j->len + n + 1 > j->cap) {
		cap = j->cap ? j->cap : 4096;
		while (cap < j->len + n + 1)
			cap *= 2;
		p = realloc(j->out, cap);
		if (p == NULL) {
			j->too_big = 1;
			return -1;
		}
		j->out = p;
		j->cap = cap;
	}
	memcpy(j->out + j->len, s, n);
	j->len += n;
	pthread_cond_broadcast(&eval_changed);
	return 0;
}

/* _emit(job, text), called by an eval's output (GIL held). Past the
 * limit it raises in the eval, which then fails with the limit's text;
 * the size is checked before the text is copied. */
static PyObject *
eval_py_emit(PyObject *self, PyObject *args)
{
	struct eval_job *j;
	PyObject *text, *b = NULL;
	char *cause = NULL;
	long id;
	int rc = 0;

	(void)self;
	if (!PyArg_ParseTuple(args, "lU:_emit", &id, &text))
		return NULL;
	pthread_mutex_lock(&eval_lock);
	j = eval_job_find(id);
	if (j != NULL && !j->interrupted &&
	    j->len + (size_t)PyUnicode_GET_LENGTH(text) > store_result_limit())
		j->too_big = 1;
	rc = j != NULL && j->too_big ? -1 : 0;
	pthread_mutex_unlock(&eval_lock);
	if (rc == 0) {
		b = PyUnicode_AsEncodedString(
		    text, "utf-8", "backslashreplace");
		if (b == NULL)
			return NULL;
		pthread_mutex_lock(&eval_lock);
		j = eval_job_find(id);
		if (j != NULL)
			rc = eval_job_append(j, PyBytes_AS_STRING(b),
			    (size_t)PyBytes_GET_SIZE(b));
		pthread_mutex_unlock(&eval_lock);
		Py_DECREF(b);
	}
	if (rc != 0) {
		store_too_big(&cause);
		PyErr_SetString(PyExc_RuntimeError, cause_str(cause));
		free(cause);
		return NULL;
	}
	Py_RETURN_NONE;
}

/* GIL: a Python str as malloc'd UTF-8 (invalid text replaced), or NULL. */
static char *
eval_cstr(PyObject *s)
{
	PyObject *b = PyUnicode_AsEncodedString(s, "utf-8", "backslashreplace");
	char *r;

	if (b == NULL) {
		PyErr_Clear();
		return strdup("<unprintable>");
	}
	r = strdup(PyBytes_AS_STRING(b));
	Py_DECREF(b);
	return r;
}

/* GIL: calls helper fn with one argument; returns its result or NULL
 * (the exception cleared). */
static PyObject *
eval_call1(const char *name, PyObject *arg)
{
	PyObject *fn = eval_helper_fn(name, NULL);
	PyObject *r = fn != NULL ? PyObject_CallOneArg(fn, arg) : NULL;

	if (r == NULL)
		PyErr_Clear();
	return r;
}

/* GIL: runs j's code between push and pop; fills error and exited. */
static void
eval_job_exec(struct eval_job *j, char **error, int *exited)
{
	PyObject *id, *emit = NULL, *r = NULL, *t, *arg;
	int interrupted;

	eval_provide();
	id = PyLong_FromLong(j->id);
	if (id != NULL)
		emit = eval_call1("Emit", id);
	Py_XDECREF(id);
	t = emit != NULL ? eval_call1("push", emit) : NULL;
	if (t != NULL && j->kind == EVAL_ONCE) {
		arg = PyUnicode_DecodeUTF8(
		    j->text, (Py_ssize_t)strlen(j->text), "replace");
		if (arg != NULL)
			r = eval_call1("run", arg);
		else
			PyErr_Clear();
		Py_XDECREF(arg);
	} else if (t != NULL)
		r = eval_call1("run_interactive", j->code);
	Py_XDECREF(t);

	/* From here on the code is over: no KeyboardInterrupt may land in
	 * the clean-up. */
	pthread_mutex_lock(&eval_lock);
	j->finishing = 1;
	interrupted = j->stop_at != 0;
	pthread_mutex_unlock(&eval_lock);
	py_drop_async_exc();
	PyErr_Clear();
	t = eval_call1("pop", Py_None);
	Py_XDECREF(t);
	Py_XDECREF(emit);

	if (r != NULL && PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2) {
		t = PyTuple_GET_ITEM(r, 0);
		if (PyUnicode_Check(t))
			*error = eval_cstr(t);
		*exited = PyObject_IsTrue(PyTuple_GET_ITEM(r, 1)) == 1;
	} else if (interrupted) /* it landed outside the code */
		*error = strdup("KeyboardInterrupt\n");
	else if (asprintf(error, "probing: the eval helper failed in pid %d\n",
		     (int)agent_pid) < 0)
		*error = NULL;
	PyErr_Clear();
	Py_XDECREF(r);
}

/* An eval's thread: takes the GIL, runs it, records the end. */
static void *
eval_thread(void *arg)
{
	struct eval_job *j = arg;
	PyGILState_STATE gs;
	char *error = NULL;
	int skip, exited = 0;

	pthread_setname_np(pthread_self(), "probing-eval");
	pthread_mutex_lock(&eval_lock);
	j->tid = (long)gettid();
	pthread_mutex_unlock(&eval_lock);
	gs = PyGILState_Ensure();
	pthread_mutex_lock(&eval_lock);
	j->ident = PyThread_get_thread_ident();
	skip = j->interrupted;
	pthread_cond_broadcast(&eval_changed);
	pthread_mutex_unlock(&eval_lock);
	if (!skip)
		eval_job_exec(j, &error, &exited);
	Py_CLEAR(j->code);
	pthread_mutex_lock(&eval_lock);
	j->done = 1;
	j->done_at = time(NULL);
	j->exited = exited;
	j->error = error;
	if (j->interrupted && !j->waited)
		eval_job_free(j);
	pthread_cond_broadcast(&eval_changed);
	pthread_mutex_unlock(&eval_lock);
	PyGILState_Release(gs);
	return NULL;
}

/* Starts j on a new thread; 0, or -1 with *cause. Any thread. */
static int
eval_job_launch(struct eval_job *j, char **cause)
{
	pthread_attr_t attr;
	sigset_t all, old;
	pthread_t t;
	int err;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 8 * 1024 * 1024);
	/* The new thread blocks every signal, so the application's
	 * handlers never run on it. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&t, &attr, eval_thread, j);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (err != 0) {
		cause_set(cause, "cannot start a thread for the eval: %s",
		    strerror(err));
		return -1;
	}
	return 0;
}

struct eval_stop {
	long id;
	int sent;
};

/* py worker (GIL): raises KeyboardInterrupt in the eval's thread. */
static int
eval_stop_run(void *arg, char **cause)
{
	struct eval_stop *s = arg;
	struct eval_job *j;

	(void)cause;
	pthread_mutex_lock(&eval_lock);
	j = eval_job_find(s->id);
	if (j != NULL && !j->done && !j->finishing && j->ident != 0) {
		s->sent = PyThreadState_SetAsyncExc(
			      j->ident, PyExc_KeyboardInterrupt) == 1;
		if (s->sent && j->stop_at == 0)
			j->stop_at = eval_now();
	}
	pthread_mutex_unlock(&eval_lock);
	return 0;
}

/* Stops eval id; returns 1 when KeyboardInterrupt was raised in it, 0
 * when it was not running, -1 with *cause when the GIL could not be had
 * to raise it. */
static int
eval_stop(long id, int timeout_ms, char **cause)
{
	struct eval_stop s = { id, 0 };

	if (py_run(eval_stop_run, &s, timeout_ms, cause) != 0)
		return -1;
	return s.sent;
}

static int
eval_start_run(void *arg, char **cause)
{
	struct eval_call *c = arg;
	PyObject *fn, *r, *code;
	struct eval_job *j;
	json_t *printed;

	eval_provide();
	fn = eval_helper_fn("compile_interactive", cause);
	if (fn == NULL)
		return -1;
	r = PyObject_CallFunction(fn, "si", c->text, c->final);
	if (r == NULL || !PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 3) {
		Py_XDECREF(r);
		PyErr_Clear();
		cause_set(
		    cause, "the repl helper failed in pid %d", (int)agent_pid);
		return -1;
	}
	code = PyTuple_GET_ITEM(r, 0);
	printed = eval_str(PyTuple_GET_ITEM(r, 2));
	if (code == Py_None) {
		if (PyTuple_GET_ITEM(r, 1) == Py_None)
			c->result = json_pack(
			    "{s:b, s:o}", "more", 1, "output", printed);
		else
			c->result = json_pack("{s:b, s:o, s:o, s:b}", "done", 1,
			    "output", printed, "error",
			    eval_str(PyTuple_GET_ITEM(r, 1)), "exit", 0);
		Py_DECREF(r);
		return 0;
	}
	pthread_mutex_lock(&eval_lock);
	j = eval_job_new(EVAL_STATEMENT, c->text, cause);
	if (j != NULL)
		j->code = Py_NewRef(code);
	pthread_mutex_unlock(&eval_lock);
	Py_DECREF(r);
	if (j == NULL) {
		json_decref(printed);
		return -1;
	}
	if (eval_job_launch(j, cause) != 0) {
		Py_CLEAR(j->code);
		pthread_mutex_lock(&eval_lock);
		eval_job_free(j);
		pthread_mutex_unlock(&eval_lock);
		json_decref(printed);
		return -1;
	}
	c->result =
	    json_pack("{s:I, s:o}", "id", (json_int_t)j->id, "output", printed);
	return 0;
}

json_t *
eval_start(const char *code, int final, int timeout_ms, char **cause)
{
	struct eval_call c = { code, final, NULL };

	if (py_run(eval_start_run, &c, timeout_ms, cause) != 0)
		return NULL;
	return c.result;
}

/* eval_lock held: the end of a finished one-shot eval as a reply; frees
 * it. stopped: when it was interrupted (monotonic), or 0. */
static json_t *
eval_run_reply(struct eval_job *j, double stopped, int *status, char **cause)
{
	json_t *out;

	if (j->too_big) {
		store_too_big(cause);
		*status = 413;
		out = NULL;
	} else {
		out = json_pack("{s:s%, s:o, s:b}", "output",
		    j->out ? j->out : "", j->len, "error",
		    j->error ? json_string(j->error) : json_null(), "exit",
		    j->exited);
		if (out == NULL)
			cause_set(cause, "out of memory");
		else if (stopped != 0)
			json_object_set_new(out, "interrupted_after",
			    json_real(stopped - j->created));
	}
	eval_job_free(j);
	return out;
}

json_t *
eval_run(const char *code, int timeout_ms, int *status, char **cause)
{
	struct eval_job *j;
	struct timespec ts;
	double limit, stopped = 0, now;
	char holder[256];
	long id, tid;
	int gone = 0, started;

	if (py_available(cause) != 0) {
		*status = 503;
		return NULL;
	}
	pthread_mutex_lock(&eval_lock);
	j = eval_job_new(EVAL_ONCE, code, cause);
	if (j != NULL)
		j->waited = 1;
	pthread_mutex_unlock(&eval_lock);
	if (j == NULL) {
		*status = 503;
		return NULL;
	}
	limit = j->created + timeout_ms / 1000.0;
	if (eval_job_launch(j, cause) != 0) {
		pthread_mutex_lock(&eval_lock);
		eval_job_free(j);
		pthread_mutex_unlock(&eval_lock);
		*status = 503;
		return NULL;
	}
	pthread_mutex_lock(&eval_lock);
	while (!j->done) {
		now = eval_now();
		if (stopped == 0 &&
		    (now >= limit || (gone = request_gone()) != 0)) {
			if (j->ident == 0)
				break; /* it never had the GIL */
			stopped = now;
			id = j->id;
			pthread_mutex_unlock(&eval_lock);
			eval_stop(id, EVAL_GRACE_MS, NULL);
			pthread_mutex_lock(&eval_lock);
			if (gone)
				break; /* nobody to tell */
			continue;
		}
		if (stopped != 0 && now >= stopped + EVAL_GRACE_MS / 1000.0)
			break;
		/* Wake at the deadline, and every 100 ms to see whether the
		 * client is still there. */
		ts = eval_deadline(stopped == 0 && limit - now < 0.1
			? (int)((limit - now) * 1000) + 1
			: 100);
		pthread_cond_timedwait(&eval_changed, &eval_lock, &ts);
	}
	if (j->done) {
		json_t *r = eval_run_reply(j, stopped, status, cause);

		pthread_mutex_unlock(&eval_lock);
		return r;
	}
	/* Left running: its thread frees it when it ends. */
	j->waited = 0;
	j->interrupted = 1;
	started = j->ident != 0;
	tid = j->tid;
	id = j->id;
	now = stopped - j->created;
	pthread_mutex_unlock(&eval_lock);
	*status = 504;
	if (!started) {
		py_gil_holder(holder, sizeof holder);
		cause_set(cause,
		    "could not take the GIL within %d ms: it is held by %s; "
		    "the eval was dropped",
		    timeout_ms, holder);
	} else
		cause_set(cause,
		    "interrupted after %.1f s, but eval %ld has not stopped: "
		    "its thread %ld is inside a call that has not returned, "
		    "and stops when it returns (see: probing -t %d evals)",
		    now, id, tid, (int)agent_pid);
	return NULL;
}

json_t *
eval_wait(long id, int wait_ms, char **cause)
{
	struct eval_job *j;
	struct timespec deadline = eval_deadline(wait_ms);
	json_t *out;
	int err = 0;

	pthread_mutex_lock(&eval_lock);
	j = eval_job_find(id);
	while (j != NULL && !j->done && j->len == 0 && !j->interrupted &&
	    !j->too_big && err != ETIMEDOUT) {
		err = pthread_cond_timedwait(
		    &eval_changed, &eval_lock, &deadline);
		j = eval_job_find(id);
	}
	if (j == NULL || j->interrupted || j->kind != EVAL_STATEMENT) {
		pthread_mutex_unlock(&eval_lock);
		cause_set(cause, "no running statement %ld in pid %d", id,
		    (int)agent_pid);
		return NULL;
	}
	out = json_pack("{s:b, s:s%}", "done", j->done, "output",
	    j->out ? j->out : "", j->len);
	j->len = 0;
	if (out != NULL && j->done) {
		if (j->too_big) {
			char *msg = NULL;

			store_too_big(&msg);
			json_object_set_new(out, "truncated", json_true());
			json_object_set_new(
			    out, "error", json_sprintf("probing: %s\n", msg));
			free(msg);
		} else
			json_object_set_new(out, "error",
			    j->error ? json_string(j->error) : json_null());
		json_object_set_new(out, "exit", json_boolean(j->exited));
		eval_job_free(j);
	}
	pthread_mutex_unlock(&eval_lock);
	if (out == NULL)
		cause_set(cause, "out of memory");
	return out;
}

json_t *
eval_interrupt(long id, int timeout_ms, char **cause)
{
	struct eval_job *j;
	int running, sent;

	/* First give up its output (unless a `probing eval` still waits
	 * for it), so that the client is free at once even when the GIL
	 * cannot be had to stop it. */
	pthread_mutex_lock(&eval_lock);
	j = eval_job_find(id);
	running = j != NULL && !j->done;
	if (j != NULL && j->done && !j->waited)
		eval_job_free(j);
	else if (j != NULL && !j->waited)
		j->interrupted = 1;
	pthread_cond_broadcast(&eval_changed);
	pthread_mutex_unlock(&eval_lock);
	if (!running)
		return json_pack("{s:b}", "interrupted", 0);
	sent = eval_stop(id, timeout_ms, cause);
	if (sent < 0)
		return NULL;
	return json_pack("{s:b}", "interrupted", sent);
}

json_t *
eval_list(void)
{
	static const char *const kinds[] = {
		[EVAL_ONCE] = "eval", [EVAL_STATEMENT] = "repl"
	};
	struct eval_job *j;
	json_t *rows = json_array();
	double now = eval_now();
	const char *state;

	pthread_mutex_lock(&eval_lock);
	for (j = eval_jobs; j != NULL && rows != NULL; j = j->next) {
		if (j->done)
			continue;
		if (j->ident == 0)
			state = j->interrupted ? "dropped, waiting for the GIL"
					       : "waiting for the GIL";
		else if (j->stop_at != 0)
			state = "interrupted, inside a call that has not "
				"returned";
		else
			state = "running";
		json_array_append_new(rows,
		    json_pack("[I, I, s, s, f, s]", (json_int_t)j->id,
			(json_int_t)j->tid, kinds[j->kind], state,
			floor((now - j->created) * 10) / 10, j->summary));
	}
	pthread_mutex_unlock(&eval_lock);
	return json_pack("{s:[s,s,s,s,s,s], s:[s,s,s,s,s,s], s:o}", "columns",
	    "id", "thread", "kind", "state", "seconds", "code", "types",
	    "INTEGER", "INTEGER", "TEXT", "TEXT", "REAL", "TEXT", "rows", rows);
}

static int
eval_provide_run(void *arg, char **cause)
{
	(void)arg;
	(void)cause;
	eval_provide();
	return 0;
}

/* Provides the modules once the interpreter runs; gives up after a while
 * in a process where it never does. */
static void *
eval_init_thread(void *unused)
{
	char *cause = NULL;
	int i;

	(void)unused;
	for (i = 0; i < 600; i++) {
		if (py_run(eval_provide_run, NULL, 1000, &cause) == 0)
			return NULL;
		free(cause);
		cause = NULL;
		sleep(1);
	}
	log_info("python did not start: no probing module provided");
	return NULL;
}

void
eval_init(void)
{
	thread_start(eval_init_thread, NULL, "probing-init");
}
