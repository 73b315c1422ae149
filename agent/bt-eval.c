/* Where the interpreter's eval loop lives, so that the native frames it
 * ran can be replaced by the Python frames (backtrace.c's merge). Python
 * 3.11 and 3.12 export it as _PyEval_EvalFrameDefault; Debian's 3.13+
 * build it into a private copy that no dynamic symbol covers, so its
 * frames symbolize as "??".
 *
 * Found once, under the GIL: a C function of ours records its own stack
 * when called through a one-line Python function (A) and when called
 * straight from C (B). The eval loop is in A and not in B, and it is by
 * far the largest function there (tens of KB against a few hundred bytes
 * for the call helpers); its extent comes from the unwind tables
 * (.eh_frame), which stripped binaries keep. The lambda runs once per
 * process; a profiler the job set would see that one call.
 *
 * bt_eval_init starts a thread that does it as soon as the GIL can be
 * had (for up to a minute: a job hung with the GIL held gets it from a
 * later capture's GIL job instead). bt_eval_calibrate: under the GIL, any
 * thread. bt_eval_range: any thread (the range is written once before
 * bt_eval_state is published). */
#define UNW_LOCAL_ONLY
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libunwind.h>
#include <Python.h>

#include "agent.h"
#include "log.h"

#define BT_EVAL_DEPTH 64
#define BT_EVAL_MIN   (16 * 1024) /* smallest believable eval loop */

static uintptr_t bt_eval_lo, bt_eval_hi;
static _Atomic int bt_eval_state; /* 0: not tried, 1: found, -1: not */

static void *bt_eval_ips[BT_EVAL_DEPTH];
static int bt_eval_nips;

/* The fds libunwind opened during the calibration (its memory-checking
 * pipe, kept for good): closed in a fork child, which must hold none of
 * the agent's fds. */
#define BT_EVAL_FDS 8
static int bt_eval_fds[BT_EVAL_FDS], bt_eval_nfds;

/* Marks in seen[] (of n) the fds open now. */
static void
bt_eval_fd_scan(unsigned char *seen, int n)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int fd;

	memset(seen, 0, (size_t)n);
	while (d != NULL && (e = readdir(d)) != NULL) {
		fd = atoi(e->d_name);
		if (fd >= 0 && fd < n && e->d_name[0] != '.')
			seen[fd] = 1;
	}
	if (d != NULL) {
		if (dirfd(d) >= 0 && dirfd(d) < n)
			seen[dirfd(d)] = 0; /* the listing's own */
		closedir(d);
	}
}

/* Whether fd looks like libunwind's pipe (pipe2 with O_NONBLOCK and
 * O_CLOEXEC), so that an fd a job's own thread opened meanwhile is never
 * taken for ours. */
static int
bt_eval_is_unwind_pipe(int fd)
{
	char path[64], link[64];
	ssize_t n;
	int fl = fcntl(fd, F_GETFL), fdf = fcntl(fd, F_GETFD);

	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof link - 1);
	if (n <= 0 || fl < 0 || fdf < 0)
		return 0;
	link[n] = '\0';
	return strncmp(link, "pipe:", 5) == 0 && (fl & O_NONBLOCK) &&
	    (fdf & FD_CLOEXEC);
}

void
bt_eval_after_fork(void)
{
	int i;

	for (i = 0; i < bt_eval_nfds; i++)
		close(bt_eval_fds[i]);
	bt_eval_nfds = 0;
}

/* Records the caller's native stack into bt_eval_ips. */
static PyObject *
bt_eval_probe(PyObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	bt_eval_nips = unw_backtrace(bt_eval_ips, BT_EVAL_DEPTH);
	Py_RETURN_NONE;
}

static PyMethodDef bt_eval_def = { "_probing_eval_probe", bt_eval_probe,
	METH_NOARGS, NULL };

/* The extent [lo, hi) of the function holding return address ip. */
static int
bt_eval_proc(void *ip, uintptr_t *lo, uintptr_t *hi)
{
	unw_proc_info_t pi;

	if (unw_get_proc_info_by_ip(unw_local_addr_space,
		(unw_word_t)(uintptr_t)ip - 1, &pi, NULL) != 0)
		return -1;
	*lo = (uintptr_t)pi.start_ip;
	*hi = (uintptr_t)pi.end_ip;
	return 0;
}

/* Runs the two probes; fills a[] (through Python) and b[] (from C). */
static int
bt_eval_stacks(void **a, int *na, void **b, int *nb)
{
	PyObject *cf, *g = NULL, *fn = NULL, *r = NULL;
	int rc = -1;

	cf = PyCFunction_New(&bt_eval_def, NULL);
	g = PyDict_New();
	if (cf == NULL || g == NULL ||
	    PyDict_SetItemString(g, "__builtins__", PyEval_GetBuiltins()) != 0)
		goto out;
	fn = PyRun_String("lambda f: f()", Py_eval_input, g, g);
	if (fn == NULL || (r = PyObject_CallOneArg(fn, cf)) == NULL)
		goto out;
	*na = bt_eval_nips;
	memcpy(a, bt_eval_ips, sizeof bt_eval_ips);
	Py_DECREF(r);
	if ((r = PyObject_CallNoArgs(cf)) == NULL)
		goto out;
	*nb = bt_eval_nips;
	memcpy(b, bt_eval_ips, sizeof bt_eval_ips);
	rc = 0;
out:
	if (PyErr_Occurred())
		PyErr_Clear();
	Py_XDECREF(r);
	Py_XDECREF(fn);
	Py_XDECREF(g);
	Py_XDECREF(cf);
	return rc;
}

void
bt_eval_calibrate(void)
{
	void *a[BT_EVAL_DEPTH], *b[BT_EVAL_DEPTH];
	uintptr_t lo, hi, blo, bhi, best_lo = 0, best_hi = 0;
	int na = 0, nb = 0, i, k, in_b;

	static unsigned char before[1024], after[1024];
	int rc, fd;

	if (atomic_load(&bt_eval_state) != 0)
		return;
	bt_eval_fd_scan(before, sizeof before);
	rc = bt_eval_stacks(a, &na, b, &nb);
	bt_eval_fd_scan(after, sizeof after);
	for (fd = 3; fd < (int)sizeof after; fd++) {
		if (after[fd] && !before[fd] && bt_eval_nfds < BT_EVAL_FDS &&
		    bt_eval_is_unwind_pipe(fd))
			bt_eval_fds[bt_eval_nfds++] = fd;
	}
	if (rc != 0) {
		atomic_store(&bt_eval_state, -1);
		return;
	}
	for (i = 1; i < na; i++) {
		if (bt_eval_proc(a[i], &lo, &hi) != 0 || hi - lo < BT_EVAL_MIN)
			continue;
		in_b = 0;
		for (k = 1; k < nb && !in_b; k++)
			in_b = bt_eval_proc(b[k], &blo, &bhi) == 0 && blo == lo;
		if (!in_b && hi - lo > best_hi - best_lo) {
			best_lo = lo;
			best_hi = hi;
		}
	}
	if (best_hi == 0) {
		log_info(
		    "backtrace: the eval loop was not found; native frames "
		    "name it only where it is exported");
		atomic_store(&bt_eval_state, -1);
		return;
	}
	bt_eval_lo = best_lo;
	bt_eval_hi = best_hi;
	atomic_store(&bt_eval_state, 1);
}

int
bt_eval_range(uintptr_t *lo, uintptr_t *hi)
{
	if (atomic_load(&bt_eval_state) != 1)
		return -1;
	*lo = bt_eval_lo;
	*hi = bt_eval_hi;
	return 0;
}

/* py_run job: the calibration under the GIL. */
static int
bt_eval_job(void *arg, char **cause)
{
	(void)arg;
	(void)cause;
	bt_eval_calibrate();
	return 0;
}

static void *
bt_eval_thread(void *arg)
{
	int i;

	(void)arg;
	for (i = 0; i < 60 && atomic_load(&bt_eval_state) == 0; i++) {
		if (py_available(NULL) == 0 &&
		    py_run(bt_eval_job, NULL, 1000, NULL) == 0)
			break;
		sleep(1);
	}
	return NULL;
}

void
bt_eval_init(void)
{
	thread_start(bt_eval_thread, NULL, "probing-bteval");
}
