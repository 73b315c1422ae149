/* eval, the repl's statements and completion: Python code run in the
 * target's __main__, and the `probing` module an injected process gets.
 *
 * A repl statement runs on a thread of its own ("probing-eval"), not on a
 * py worker, so that it can be interrupted and so that one blocked in a C
 * call (time.sleep) ties up nothing but itself. Interrupting raises
 * KeyboardInterrupt in that thread with PyThreadState_SetAsyncExc: it
 * stops at its next bytecode, which for a thread inside a C call is when
 * that call returns. Its output from then on is dropped. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <Python.h>

#include "agent.h"
#include "log.h"

/* Output kept per statement between two waits. */
#define EVAL_MAX_OUTPUT (16 * 1024 * 1024)
/* A finished statement nobody came for is forgotten after this long. */
#define EVAL_KEEP_S 120

/* The helper module's source, made from eval-helper.py at build time. */
extern const char eval_helper_source[];

/* The helper module's namespace; touched only with the GIL held. */
static PyObject *eval_helper;
static int eval_provided; /* GIL: the probing module is in place */

/* One repl statement. Linked in eval_jobs and guarded by eval_lock, but
 * for code (GIL). Freed by whoever unlinks it: the waiter that collects
 * it, or its thread when it was interrupted. */
struct eval_job {
	long id;
	PyObject *code;      /* the compiled statement, until it runs */
	unsigned long ident; /* its Python thread id; 0 until it runs */
	int interrupted;     /* nobody wants its output any more */
	int finishing;       /* past the statement: no async exception now */
	int done;
	int exited; /* it raised SystemExit */
	char *out;  /* printed since the last wait */
	size_t len, cap;
	int truncated;
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
	"appends text to a repl statement's output" };

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
	core = fn != NULL ? agent_py_core() : NULL;
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
eval_call_run(void *arg, char **cause)
{
	struct eval_call *c = arg;
	PyObject *fn, *r;

	eval_provide();
	fn = eval_helper_fn("run", cause);
	if (fn == NULL)
		return -1;
	r = PyObject_CallFunction(fn, "s", c->text);
	if (r == NULL || !PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2) {
		Py_XDECREF(r);
		PyErr_Clear();
		cause_set(
		    cause, "the eval helper failed in pid %d", (int)agent_pid);
		return -1;
	}
	c->result =
	    json_pack("{s:o, s:o}", "output", eval_str(PyTuple_GET_ITEM(r, 0)),
		"error", eval_str(PyTuple_GET_ITEM(r, 1)));
	Py_DECREF(r);
	return 0;
}

json_t *
eval_run(const char *code, int timeout_ms, char **cause)
{
	struct eval_call c = { code, 0, NULL };

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

	if (py_run(eval_complete_run, &c, timeout_ms, cause) != 0)
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
	free(j->out);
	free(j->error);
	free(j);
}

/* eval_lock held: forgets finished statements nobody came for. */
static void
eval_job_purge(void)
{
	struct eval_job *j, *next;
	time_t now = time(NULL);

	for (j = eval_jobs; j != NULL; j = next) {
		next = j->next;
		if (j->done && now - j->done_at > EVAL_KEEP_S)
			eval_job_free(j);
	}
}

/* eval_lock held: appends n bytes to j's output, up to the limit. */
static void
eval_job_append(struct eval_job *j, const char *s, size_t n)
{
	size_t cap;
	char *p;

	if (j->interrupted || n == 0)
		return;
	if (j->len + n > EVAL_MAX_OUTPUT) {
		j->truncated = 1;
		return;
	}
	if (j->len + n + 1 > j->cap) {
		cap = j->cap ? j->cap : 4096;
		while (cap < j->len + n + 1)
			cap *= 2;
		p = realloc(j->out, cap);
		if (p == NULL) {
			j->truncated = 1;
			return;
		}
		j->out = p;
		j->cap = cap;
	}
	memcpy(j->out + j->len, s, n);
	j->len += n;
	pthread_cond_broadcast(&eval_changed);
}

/* _emit(job, text), called by a statement's output (GIL held). */
static PyObject *
eval_py_emit(PyObject *self, PyObject *args)
{
	struct eval_job *j;
	PyObject *text, *b;
	long id;

	(void)self;
	if (!PyArg_ParseTuple(args, "lU:_emit", &id, &text))
		return NULL;
	b = PyUnicode_AsEncodedString(text, "utf-8", "backslashreplace");
	if (b == NULL)
		return NULL;
	pthread_mutex_lock(&eval_lock);
	j = eval_job_find(id);
	if (j != NULL)
		eval_job_append(
		    j, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
	pthread_mutex_unlock(&eval_lock);
	Py_DECREF(b);
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

/* GIL: runs j's statement between push and pop; fills error and exited. */
static void
eval_job_exec(struct eval_job *j, char **error, int *exited)
{
	PyObject *id, *emit = NULL, *r = NULL, *t;
	int interrupted;

	id = PyLong_FromLong(j->id);
	if (id != NULL)
		emit = eval_call1("Emit", id);
	Py_XDECREF(id);
	t = emit != NULL ? eval_call1("push", emit) : NULL;
	if (t != NULL)
		r = eval_call1("run_interactive", j->code);
	Py_XDECREF(t);

	/* From here on the statement is over: no KeyboardInterrupt may land
	 * in the clean-up. */
	pthread_mutex_lock(&eval_lock);
	j->finishing = 1;
	interrupted = j->interrupted;
	pthread_mutex_unlock(&eval_lock);
	PyThreadState_SetAsyncExc(j->ident, NULL);
	PyErr_Clear();
	t = eval_call1("pop", Py_None);
	Py_XDECREF(t);
	Py_XDECREF(emit);

	if (r != NULL && PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2) {
		t = PyTuple_GET_ITEM(r, 0);
		if (PyUnicode_Check(t))
			*error = eval_cstr(t);
		*exited = PyObject_IsTrue(PyTuple_GET_ITEM(r, 1)) == 1;
	} else if (interrupted) /* it landed outside the statement */
		*error = strdup("KeyboardInterrupt\n");
	else if (asprintf(error, "probing: the repl helper failed in pid %d\n",
		     (int)agent_pid) < 0)
		*error = NULL;
	PyErr_Clear();
	Py_XDECREF(r);
}

/* A statement's thread: takes the GIL, runs it, records the end. */
static void *
eval_thread(void *arg)
{
	struct eval_job *j = arg;
	PyGILState_STATE gs;
	char *error = NULL;
	int skip, exited = 0;

	pthread_setname_np(pthread_self(), "probing-eval");
	gs = PyGILState_Ensure();
	pthread_mutex_lock(&eval_lock);
	j->ident = PyThread_get_thread_ident();
	skip = j->interrupted;
	pthread_mutex_unlock(&eval_lock);
	if (!skip)
		eval_job_exec(j, &error, &exited);
	Py_CLEAR(j->code);
	pthread_mutex_lock(&eval_lock);
	j->done = 1;
	j->done_at = time(NULL);
	j->exited = exited;
	j->error = error;
	if (j->interrupted)
		eval_job_free(j);
	pthread_cond_broadcast(&eval_changed);
	pthread_mutex_unlock(&eval_lock);
	PyGILState_Release(gs);
	return NULL;
}

/* GIL: starts j->code on a new thread; 0, or -1 with *cause. */
static int
eval_job_launch(struct eval_job *j, char **cause)
{
	pthread_attr_t attr;
	pthread_t t;
	int err;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 8 * 1024 * 1024);
	/* The py worker blocks every signal; the new thread inherits that,
	 * so the application's handlers never run on it. */
	err = pthread_create(&t, &attr, eval_thread, j);
	pthread_attr_destroy(&attr);
	if (err != 0) {
		cause_set(cause, "cannot start a thread for the statement: %s",
		    strerror(err));
		return -1;
	}
	return 0;
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
	j = calloc(1, sizeof *j);
	if (j == NULL) {
		json_decref(printed);
		Py_DECREF(r);
		cause_set(cause, "out of memory");
		return -1;
	}
	j->code = Py_NewRef(code);
	Py_DECREF(r);
	pthread_mutex_lock(&eval_lock);
	eval_job_purge();
	j->id = eval_next_id++;
	j->next = eval_jobs;
	eval_jobs = j;
	pthread_mutex_unlock(&eval_lock);
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

json_t *
eval_wait(long id, int wait_ms, char **cause)
{
	struct eval_job *j;
	struct timespec deadline;
	json_t *out;
	int err = 0;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += wait_ms / 1000;
	deadline.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&eval_lock);
	j = eval_job_find(id);
	while (j != NULL && !j->done && j->len == 0 && !j->interrupted &&
	    err != ETIMEDOUT) {
		err = pthread_cond_timedwait(
		    &eval_changed, &eval_lock, &deadline);
		j = eval_job_find(id);
	}
	if (j == NULL || j->interrupted) {
		pthread_mutex_unlock(&eval_lock);
		cause_set(cause, "no running statement %ld in pid %d", id,
		    (int)agent_pid);
		return NULL;
	}
	out = json_pack("{s:b, s:s%}", "done", j->done, "output",
	    j->out ? j->out : "", j->len);
	if (out != NULL && j->truncated && j->done)
		json_object_set_new(out, "truncated", json_true());
	j->len = 0;
	if (out != NULL && j->done) {
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

struct eval_stop {
	long id;
	int sent;
};

static int
eval_interrupt_run(void *arg, char **cause)
{
	struct eval_stop *s = arg;
	struct eval_job *j;

	(void)cause;
	pthread_mutex_lock(&eval_lock);
	j = eval_job_find(s->id);
	if (j != NULL && !j->done && !j->finishing && j->ident != 0)
		s->sent = PyThreadState_SetAsyncExc(
			      j->ident, PyExc_KeyboardInterrupt) == 1;
	pthread_mutex_unlock(&eval_lock);
	return 0;
}

json_t *
eval_interrupt(long id, int timeout_ms, char **cause)
{
	struct eval_stop s = { id, 0 };
	struct eval_job *j;
	int running;

	/* First give up its output, so that the client is free at once
	 * even when the GIL cannot be had to stop it. */
	pthread_mutex_lock(&eval_lock);
	j = eval_job_find(id);
	running = j != NULL && !j->done;
	if (j != NULL && j->done)
		eval_job_free(j);
	else if (j != NULL)
		j->interrupted = 1;
	pthread_cond_broadcast(&eval_changed);
	pthread_mutex_unlock(&eval_lock);
	if (!running)
		return json_pack("{s:b}", "interrupted", 0);
	if (py_run(eval_interrupt_run, &s, timeout_ms, cause) != 0)
		return NULL;
	return json_pack("{s:b}", "interrupted", s.sent);
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
	pthread_attr_t attr;
	sigset_t all, old;
	pthread_t t;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	if (pthread_create(&t, &attr, eval_init_thread, NULL) == 0)
		pthread_setname_np(t, "probing-init");
	else
		log_info("cannot start the thread that provides the probing "
			 "module");
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}
