/* Torch tracing: what runs the show. Installs and removes the hooks of
 * torch-fwd.c, torch-bw.c and torch-optim.c, puts the import finder
 * (torch-finder.c) in place when torch is not imported yet, applies the
 * config keys and runs the setup thread. Every row is written by the
 * files below it; see torch.h for the whole picture and torch-bw.c for
 * how backward time is found.
 *
 * Threads: torch_init runs on the constructor's thread; the setup thread
 * and the config appliers hand all Python work to a py worker with
 * py_run, so everything below runs under the GIL but torch_apply_rate
 * (a request thread: one double written whole). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <Python.h>

#include "agent.h"
#include "clock.h"
#include "log.h"
#include "torch.h"

static void torch_start_setup(int after_import);
static void torch_on_import(void);

#define TORCH_MAIN_TRIES 2000 /* asks of the main thread after the import */

/* Creates our types and callables once. */
static int
torch_types_ready(void)
{
	static int ready;

	if (ready)
		return 0;
	if (torch_bw_init() != 0 || torch_fwd_init() != 0 ||
	    torch_optim_init() != 0 || torch_finder_init() != 0)
		return -1;
	ready = 1;
	return 0;
}

static void
torch_uninstall(void)
{
	torch_fwd_set(0);
	torch_optim_uninstall();
	torch_dist_uninstall();
	torch_bw_clear();
	if (torch_st.installed)
		log_info("torch: tracing off (%llu rows, %llu errors)",
		    (unsigned long long)torch_st.rows,
		    (unsigned long long)torch_st.errors);
	torch_st.installed = 0;
}

/* Puts every hook in place (torch is imported); 0 or -1 with *cause. */
static int
torch_install(char **cause)
{
	if (torch_st.installed)
		return 0;
	if (torch_types_ready() != 0)
		goto fail;
	if (torch_st.tensor_type == NULL) {
		torch_st.tensor_type =
		    (PyTypeObject *)torch_getattr_path("torch", "Tensor");
		if (torch_st.tensor_type == NULL)
			goto fail;
	}
	torch_bw_load();
	torch_cuda_load();
	torch_st.installed = 1;
	torch_clk.cur_valid = 0;
	if (torch_fwd_set(1) != 0) {
		cause_set(cause, "cannot register the module forward hooks");
		torch_st.installed = 0;
		return -1;
	}
	if (torch_optim_install() != 0)
		goto fail;
	torch_dist_install(); /* collectives are seen whatever it says */
	log_info("torch: tracing on (torch hooks installed, %s)",
	    torch_optim_global() ? "global optimizer hooks"
				 : "Optimizer.step wrapped");
	return 0;
fail:
	cause_set(cause, "cannot install the torch hooks");
	torch_swallow("installing the torch hooks");
	PyErr_Clear();
	torch_uninstall();
	return -1;
}

/* Start-up and config ---------------------------------------------------- */

enum torch_job_rc { TORCH_DONE, TORCH_RETRY, TORCH_NOT_RUN };

/* Whether an import is under way that the hooks must wait out: torch's
 * own (its module lock, from find_spec until the import has unwound, or
 * its spec still _initializing), or any holding the import lock (it may be
 * this thread's, inside importlib). */
static int
torch_importing(PyObject *mods, PyObject *torch)
{
	PyObject *bootstrap, *locks, *imp, *held, *spec, *init;
	int busy;

	bootstrap = PyDict_GetItemString(mods, "_frozen_importlib");
	locks = bootstrap ? PyObject_GetAttrString(bootstrap, "_module_locks")
			  : NULL;
	busy = locks && PyDict_Check(locks) &&
	    PyDict_GetItemString(locks, "torch") != NULL;
	Py_XDECREF(locks);
	imp = PyDict_GetItemString(mods, "_imp");
	held =
	    imp && !busy ? PyObject_CallMethod(imp, "lock_held", NULL) : NULL;
	busy = busy || (held != NULL && PyObject_IsTrue(held) == 1);
	Py_XDECREF(held);
	spec =
	    torch && !busy ? PyObject_GetAttrString(torch, "__spec__") : NULL;
	init = spec ? PyObject_GetAttrString(spec, "_initializing") : NULL;
	busy = busy || (init != NULL && PyObject_IsTrue(init) == 1);
	Py_XDECREF(spec);
	Py_XDECREF(init);
	PyErr_Clear();
	return busy;
}

/* Makes torch_st.want true: hooks now if torch is imported, else the finder.
 * Returns TORCH_RETRY while torch is half imported. */
static int
torch_enable(char **cause)
{
	PyObject *mods = PySys_GetObject("modules"), *torch;

	if (torch_types_ready() != 0) {
		PyErr_Clear();
		cause_set(cause, "cannot create the torch hook types");
		return -1;
	}
	if (mods == NULL || !PyDict_Check(mods)) {
		cause_set(cause, "sys.modules is not a dict");
		return -1;
	}
	torch = PyDict_GetItemString(mods, "torch");
	if (torch_importing(mods, torch))
		return TORCH_RETRY;
	if (torch != NULL) {
		torch_finder_remove();
		return torch_install(cause) == 0 ? TORCH_DONE : -1;
	}
	return torch_finder_add(torch_on_import, cause) == 0 ? TORCH_DONE : -1;
}

struct torch_job {
	int want;
	int rc;
};

static int
torch_job_run(void *arg, char **cause)
{
	struct torch_job *j = arg;

	if (torch_st.child)
		return 0;
	torch_st.want = j->want;
	if (!j->want) {
		torch_finder_remove();
		torch_uninstall();
		j->rc = TORCH_DONE;
		return 0;
	}
	j->rc = torch_enable(cause);
	return j->rc < 0 ? -1 : 0;
}

static int
torch_apply_enabled(double v, char **cause)
{
	struct torch_job j = { v != 0, 0 };
	int i;

	for (i = 0; i < 50; i++) {
		if (py_run(torch_job_run, &j, 2000, cause) != 0)
			return -1;
		if (j.rc != TORCH_RETRY)
			return 0;
		usleep(100 * 1000);
	}
	cause_set(cause, "torch is still being imported; try again");
	return -1;
}

static int
torch_apply_rate(double v, char **cause)
{
	(void)cause;
	torch_st.rate = v; /* takes effect at the next step */
	return 0;
}

/* Asking the main thread (a pending call): once torch's import is over, the
 * hooks go in there, at its first check for pending calls, before the
 * program's next lines can build a model and take a first optimizer step,
 * which a py worker waiting for the GIL could miss. The importing thread
 * queues the first call; while the import unwinds the call queues itself
 * again (bounded), except on 3.11 under a tracer or profiler, which runs
 * the same instruction's check again and would never get past it: there
 * the setup thread asks again every 0.2 ms. */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int queued;  /* a call is queued and has not run */
	int rc;      /* what the last one found */
	int requeue; /* times a call may queue itself again */
} torch_main = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0,
	TORCH_MAIN_TRIES * 16 };

/* Whether queueing a call from inside one could stall this thread. */
static int
torch_main_stalls(PyThreadState *ts)
{
#if PY_VERSION_HEX < 0x030C0000
	return ts->c_tracefunc != NULL || ts->c_profilefunc != NULL;
#else
	(void)ts;
	return 0;
#endif
}

/* Main thread, GIL held. It leaves the thread as it found it: errno, the
 * exception being handled, and its tracer and profiler, which see none of
 * this. */
static int
torch_main_call(void *unused)
{
	PyThreadState *ts = PyThreadState_Get();
	PyObject *type, *value, *tb;
	int saved = errno, rc = TORCH_DONE;
	char *cause = NULL;

	(void)unused;
	if (torch_st.child)
		return 0; /* queued before a fork; its mutex may be held */
	if (torch_st.want && !torch_st.installed) {
		PyErr_Fetch(&type, &value, &tb);
		PyThreadState_EnterTracing(ts);
		rc = torch_enable(&cause);
		PyThreadState_LeaveTracing(ts);
		PyErr_Restore(type, value, tb);
		if (rc < 0)
			log_info(
			    "torch: tracing not set up: %s", cause_str(cause));
		free(cause);
	}
	pthread_mutex_lock(&torch_main.mu);
	if (rc == TORCH_RETRY && torch_main.requeue > 0 &&
	    !torch_main_stalls(ts) &&
	    Py_AddPendingCall(torch_main_call, NULL) == 0) {
		torch_main.requeue--;
	} else {
		torch_main.rc = rc;
		torch_main.queued = 0;
		pthread_cond_signal(&torch_main.cv);
	}
	pthread_mutex_unlock(&torch_main.mu);
	errno = saved;
	return 0;
}

/* Queues a call unless one is; 0, or -1 when the queue is full. */
static int
torch_main_queue(void)
{
	int rc = 0;

	pthread_mutex_lock(&torch_main.mu);
	if (!torch_main.queued) {
		torch_main.queued = 1;
		if (Py_AddPendingCall(torch_main_call, NULL) != 0) {
			torch_main.queued = 0;
			rc = -1;
		}
	}
	pthread_mutex_unlock(&torch_main.mu);
	return rc;
}

/* Setup thread: what the main thread found, or TORCH_NOT_RUN when it did
 * not get to it within ms (waiting in C; the call stays queued and finds
 * the work done when it runs). */
static int
torch_ask_main(int ms)
{
	struct timespec until = clock_abstime(ms);
	int rc = TORCH_NOT_RUN;

	if (torch_main_queue() != 0)
		return TORCH_NOT_RUN;
	pthread_mutex_lock(&torch_main.mu);
	while (torch_main.queued &&
	    pthread_cond_timedwait(&torch_main.cv, &torch_main.mu, &until) == 0)
		;
	if (!torch_main.queued)
		rc = torch_main.rc;
	pthread_mutex_unlock(&torch_main.mu);
	return rc;
}

/* Waits for the interpreter and sets up tracing once; after torch's import
 * (arg non-NULL) the main thread does it, a py worker when it cannot. */
static void *
torch_setup_thread(void *after_import)
{
	struct torch_job j;
	char *cause = NULL;
	unsigned delay_ms = 10;
	int logged = 0, asks = after_import ? TORCH_MAIN_TRIES : 0;

	for (;;) {
		j.want = 1;
		j.rc = TORCH_NOT_RUN;
		if (torch_st.want == 0 || torch_st.installed)
			break;
		if (asks > 0) {
			asks--;
			j.rc = torch_ask_main(50);
			if (j.rc == TORCH_DONE || j.rc < 0)
				break;
			if (j.rc == TORCH_RETRY) {
				usleep(200); /* the import unwinds */
				continue;
			}
			asks = 0;
		}
		if (py_run(torch_job_run, &j, 1000, &cause) == 0 &&
		    j.rc == TORCH_DONE)
			break;
		if (j.rc < 0) {
			log_info(
			    "torch: tracing not set up: %s", cause_str(cause));
			free(cause);
			break;
		}
		if (cause != NULL && !logged++)
			log_info("torch: setup waits: %s", cause);
		free(cause);
		cause = NULL;
		/* While torch imports, look often: its first module calls
		 * may follow right after. */
		if (j.rc == TORCH_RETRY)
			delay_ms = 2;
		usleep(delay_ms * 1000);
		if (delay_ms < 1000)
			delay_ms *= 2;
	}
	return NULL;
}

static void
torch_atfork_child(void)
{
	torch_st.child = 1;
}

void
torch_init(void)
{
	const char *rank = getenv("RANK");

	torch_st.rank = rank ? atoi(rank) : 0;
	torch_st.rate = config_get(CONFIG_SAMPLE_RATE);
	torch_st.want = config_get(CONFIG_TORCH_ENABLED) != 0;
	config_on_change(CONFIG_TORCH_ENABLED, torch_apply_enabled);
	config_on_change(CONFIG_SAMPLE_RATE, torch_apply_rate);
	pthread_atfork(NULL, NULL, torch_atfork_child);
	if (!torch_st.want) {
		log_info("torch: tracing off at start");
		return;
	}
	torch_start_setup(0);
}

/* Starts the thread that sets tracing up under the GIL (all signals
 * blocked in it). */
static void
torch_start_setup(int after_import)
{
	thread_start(torch_setup_thread, after_import ? &torch_main : NULL,
	    "probing-torch");
}

/* The finder's call, inside torch's import in the importing thread. */
static void
torch_on_import(void)
{
	torch_main_queue();
	torch_start_setup(1);
}
