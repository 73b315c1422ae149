/* Running C functions under the GIL on py workers, with a timeout. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <Python.h>

#include "agent.h"
#include "clock.h"
#include "log.h"

#define PY_WORKERS 2

enum py_job_state { PY_QUEUED, PY_RUNNING, PY_DONE };

/* A job lives on its caller's stack; the queue links it while queued.
 * ident, finishing and stopped change under py_lock with the GIL held. */
struct py_job {
	py_fn fn;
	void *arg;
	int rc;
	char *cause;
	enum py_job_state state;
	unsigned long ident; /* the worker's Python thread id while running */
	int finishing;       /* fn returned: no async exception now */
	int stopped;         /* KeyboardInterrupt raised in fn (deadline) */
	TAILQ_ENTRY(py_job) entry;
};

static pthread_mutex_t py_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t py_work = PTHREAD_COND_INITIALIZER;
static pthread_cond_t py_done = PTHREAD_COND_INITIALIZER;
static TAILQ_HEAD(, py_job) py_queue = TAILQ_HEAD_INITIALIZER(py_queue);
static int py_started;
static int py_busy; /* workers running a job; py_lock */

/* PyThreadState_SetAsyncExc(id, NULL) cannot take an exception back: before
 * 3.13 it raises the interpreter's async-exception flag whatever it is given,
 * and only a thread raising the exception it holds lowers the flag. Called
 * after every job, it left the flag up for good: every thread's eval loop
 * took its slow path at each call and loop, and under a tracer or profiler
 * (sys.settrace, cProfile) 3.11 ran the same instruction's check for ever,
 * the program hung. Instead, one that did not land lands here, in code
 * that does nothing (the check at its start raises it, which lowers the
 * flag), and is cleared. */
void
py_drop_async_exc(void)
{
	static PyObject *nop, *ns;
	PyThreadState *ts = PyThreadState_Get();
	PyObject *r;

	if (ts->async_exc == NULL)
		return;
	if (nop == NULL) {
		nop = Py_CompileString("pass", "<probing>", Py_file_input);
		ns = PyDict_New();
		if (ns != NULL &&
		    PyDict_SetItemString(
			ns, "__builtins__", PyEval_GetBuiltins()) != 0)
			Py_CLEAR(ns);
	}
	r = nop != NULL && ns != NULL ? PyEval_EvalCode(nop, ns, ns) : NULL;
	Py_XDECREF(r);
	PyErr_Clear();
}

/* Waits for work, takes the GIL, runs one job, gives the GIL back. The
 * thread state is created once and kept. */
static void *
py_worker(void *unused)
{
	PyThreadState *ts;
	PyGILState_STATE gs;
	struct py_job *job;

	(void)unused;
	gs = PyGILState_Ensure();
	(void)gs;
	ts = PyEval_SaveThread();
	for (;;) {
		pthread_mutex_lock(&py_lock);
		while (TAILQ_EMPTY(&py_queue))
			pthread_cond_wait(&py_work, &py_lock);
		pthread_mutex_unlock(&py_lock);

		PyEval_RestoreThread(ts);
		pthread_mutex_lock(&py_lock);
		job = TAILQ_FIRST(&py_queue);
		if (job != NULL) {
			TAILQ_REMOVE(&py_queue, job, entry);
			job->state = PY_RUNNING;
			job->ident = PyThread_get_thread_ident();
			py_busy++;
		}
		pthread_mutex_unlock(&py_lock);
		if (job != NULL) {
			job->rc = job->fn(job->arg, &job->cause);
			pthread_mutex_lock(&py_lock);
			job->finishing = 1;
			pthread_mutex_unlock(&py_lock);
			/* One raised at the deadline that did not land yet must
			 * not land in the next job. */
			py_drop_async_exc();
			if (PyErr_Occurred())
				PyErr_Clear();
		}
		ts = PyEval_SaveThread();
		if (job != NULL) {
			pthread_mutex_lock(&py_lock);
			py_busy--;
			job->state = PY_DONE;
			pthread_cond_broadcast(&py_done);
			pthread_mutex_unlock(&py_lock);
		}
	}
	return NULL;
}

/* Whether the interpreter is shutting down (public from 3.13 on). */
static int
py_is_finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
	return Py_IsFinalizing();
#else
	return _Py_IsFinalizing();
#endif
}

int
py_available(char **cause)
{
	if (!Py_IsInitialized()) {
		cause_set(cause, "python is not initialized in pid %d",
		    (int)agent_pid);
		return -1;
	}
	if (py_is_finalizing()) {
		cause_set(
		    cause, "python is shutting down in pid %d", (int)agent_pid);
		return -1;
	}
	return 0;
}

/* Starts the workers once; called with py_lock held. */
static int
py_start_workers(char **cause)
{
	pthread_attr_t attr;
	pthread_t t;
	int i, err;

	if (py_started)
		return 0;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 1024 * 1024);
	for (i = 0; i < PY_WORKERS; i++) {
		err = pthread_create(&t, &attr, py_worker, NULL);
		if (err != 0) {
			pthread_attr_destroy(&attr);
			if (i > 0)
				break;
			cause_set(cause, "cannot start python worker: %s",
			    strerror(err));
			return -1;
		}
		pthread_setname_np(t, "probing-py");
	}
	pthread_attr_destroy(&attr);
	py_started = 1;
	return 0;
}

/* Running past the deadline (bounded): raises KeyboardInterrupt in the
 * worker running job, taking the GIL on this thread. py_lock held on
 * entry and return, dropped meanwhile. */
static void
py_stop_job(struct py_job *job)
{
	PyGILState_STATE gs;

	pthread_mutex_unlock(&py_lock);
	gs = PyGILState_Ensure();
	pthread_mutex_lock(&py_lock);
	if (job->state == PY_RUNNING && !job->finishing && !job->stopped)
		job->stopped = PyThreadState_SetAsyncExc(
				   job->ident, PyExc_KeyboardInterrupt) == 1;
	pthread_mutex_unlock(&py_lock);
	PyGILState_Release(gs);
	pthread_mutex_lock(&py_lock);
}

/* py_run; bounded: the deadline also ends the run (see agent.h). */
static int
py_run_job(py_fn fn, void *arg, int timeout_ms, int bounded, char **cause)
{
	struct py_job job = { .fn = fn, .arg = arg, .state = PY_QUEUED };
	struct timespec deadline;
	char holder[256];
	int err = 0, busy;

	if (py_available(cause) != 0)
		return -1;
	deadline = clock_abstime(timeout_ms);

	pthread_mutex_lock(&py_lock);
	if (py_start_workers(cause) != 0) {
		pthread_mutex_unlock(&py_lock);
		return -1;
	}
	TAILQ_INSERT_TAIL(&py_queue, &job, entry);
	pthread_cond_broadcast(&py_work);
	while (job.state == PY_QUEUED && err != ETIMEDOUT)
		err = pthread_cond_timedwait(&py_done, &py_lock, &deadline);
	if (job.state == PY_QUEUED) {
		TAILQ_REMOVE(&py_queue, &job, entry);
		busy = py_busy;
		pthread_mutex_unlock(&py_lock);
		if (busy >= PY_WORKERS) {
			cause_set(cause,
			    "both of the agent's python workers stayed busy "
			    "with other requests for %d ms; the request was "
			    "dropped",
			    timeout_ms);
			return -1;
		}
		py_gil_holder(holder, sizeof holder);
		cause_set(cause,
		    "could not take the GIL within %d ms: it is held by %s; "
		    "the request was dropped",
		    timeout_ms, holder);
		return -1;
	}
	while (job.state != PY_DONE) {
		if (!bounded || job.stopped)
			pthread_cond_wait(&py_done, &py_lock);
		else if (pthread_cond_timedwait(
			     &py_done, &py_lock, &deadline) == ETIMEDOUT)
			py_stop_job(&job);
	}
	pthread_mutex_unlock(&py_lock);
	if (job.rc != 0 && job.stopped) {
		free(job.cause);
		job.cause = NULL;
		cause_set(cause,
		    "it did not return within %d ms (the timeout) and was "
		    "interrupted",
		    timeout_ms);
	} else if (job.rc != 0 && cause != NULL)
		*cause = job.cause;
	else
		free(job.cause);
	return job.rc;
}

int
py_run(py_fn fn, void *arg, int timeout_ms, char **cause)
{
	return py_run_job(fn, arg, timeout_ms, 0, cause);
}

int
py_run_bounded(py_fn fn, void *arg, int timeout_ms, char **cause)
{
	return py_run_job(fn, arg, timeout_ms, 1, cause);
}

void
py_after_fork(void)
{
	pthread_mutex_init(&py_lock, NULL);
	pthread_cond_init(&py_work, NULL);
	pthread_cond_init(&py_done, NULL);
	TAILQ_INIT(&py_queue);
	py_started = 0;
}
