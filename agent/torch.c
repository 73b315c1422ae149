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
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <Python.h>

#include "agent.h"
#include "log.h"
#include "torch.h"

static void torch_start_setup(void);

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

/* Makes torch_st.want true: hooks now if torch is imported, else the finder.
 * Returns TORCH_RETRY while torch is half imported. */
static int
torch_enable(char **cause)
{
	PyObject *mods = PySys_GetObject("modules"), *torch, *spec, *init;
	PyObject *bootstrap, *locks;
	int busy = 0;

	if (torch_types_ready() != 0) {
		PyErr_Clear();
		cause_set(cause, "cannot create the torch hook types");
		return -1;
	}
	torch = mods && PyDict_Check(mods) ? PyDict_GetItemString(mods, "torch")
					   : NULL;
	if (torch != NULL) {
		spec = PyObject_GetAttrString(torch, "__spec__");
		init =
		    spec ? PyObject_GetAttrString(spec, "_initializing") : NULL;
		busy = init != NULL && PyObject_IsTrue(init) == 1;
		Py_XDECREF(spec);
		Py_XDECREF(init);
		PyErr_Clear();
		if (busy)
			return TORCH_RETRY;
		torch_finder_remove();
		return torch_install(cause) == 0 ? TORCH_DONE : -1;
	}
	/* Between find_spec and sys.modules, an import holds its lock. */
	bootstrap =
	    mods ? PyDict_GetItemString(mods, "_frozen_importlib") : NULL;
	locks = bootstrap ? PyObject_GetAttrString(bootstrap, "_module_locks")
			  : NULL;
	busy = locks && PyDict_Check(locks) &&
	    PyDict_GetItemString(locks, "torch") != NULL;
	Py_XDECREF(locks);
	PyErr_Clear();
	if (busy)
		return TORCH_RETRY;
	return torch_finder_add(torch_start_setup, cause) == 0 ? TORCH_DONE
							       : -1;
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

/* Waits for the interpreter and sets up tracing once. */
static void *
torch_setup_thread(void *unused)
{
	struct torch_job j;
	char *cause = NULL;
	unsigned delay_ms = 10;
	int logged = 0;

	(void)unused;
	for (;;) {
		j.want = 1;
		j.rc = TORCH_NOT_RUN;
		if (torch_st.want == 0 || torch_st.installed)
			break;
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
	torch_start_setup();
}

/* Starts the thread that sets tracing up under the GIL (all signals
 * blocked in it). Also called by the finder inside torch's import. */
static void
torch_start_setup(void)
{
	thread_start(torch_setup_thread, NULL, "probing-torch");
}
