/* Who holds the GIL, read from the interpreter's own state without it. */
#define Py_BUILD_CORE 1
#include <stdio.h>
#include <string.h>

#include <Python.h>
#include <internal/pycore_runtime.h>
#include <internal/pycore_interp.h>

#include "agent.h"

/* The thread state that last took the GIL and whether it is held now. */
static PyThreadState *
py_gil_last(int *locked)
{
#if PY_VERSION_HEX >= 0x030C0000
	PyInterpreterState *interp = _PyRuntime.interpreters.main;
	struct _gil_runtime_state *gil = interp ? interp->ceval.gil : NULL;

	if (gil == NULL) {
		*locked = 0;
		return NULL;
	}
#else
	struct _gil_runtime_state *gil = &_PyRuntime.ceval.gil;
#endif
#if PY_VERSION_HEX >= 0x030D0000
	/* 3.13 made the fields plain types read with typed atomics. */
	*locked = _Py_atomic_load_int_relaxed(&gil->locked);
	return (PyThreadState *)_Py_atomic_load_ptr_relaxed(&gil->last_holder);
#else
	*locked = _Py_atomic_load_relaxed(&gil->locked);
	return (PyThreadState *)_Py_atomic_load_relaxed(&gil->last_holder);
#endif
}

long
py_gil_holder_tid(void)
{
	int locked;
	PyThreadState *ts = py_gil_last(&locked);

	if (!locked || ts == NULL)
		return 0;
	return (long)ts->native_thread_id;
}

void
py_gil_holder(char *buf, size_t len)
{
	char path[64], comm[64] = "";
	long tid = py_gil_holder_tid();
	FILE *f;

	if (tid == 0) {
		snprintf(buf, len, "no thread (it was just released)");
		return;
	}
	snprintf(path, sizeof path, "/proc/self/task/%ld/comm", tid);
	f = fopen(path, "re");
	if (f != NULL) {
		if (fgets(comm, sizeof comm, f) != NULL)
			comm[strcspn(comm, "\n")] = '\0';
		fclose(f);
	}
	snprintf(buf, len, "%s thread %ld (%s)",
	    tid == (long)agent_pid ? "the main" : "", tid,
	    comm[0] ? comm : "?");
	if (buf[0] == ' ')
		memmove(buf, buf + 1, strlen(buf));
}
