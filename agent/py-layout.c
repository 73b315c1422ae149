/* Whether the interpreter's structures are laid out as this agent's
 * headers say: checked once against the offsets the interpreter publishes
 * about itself (_PyRuntime.debug_offsets, 3.13+), before any frame, thread
 * state or code object is read without the C API. A patch release that
 * moved a field, or a free-threaded build, is refused with the field named
 * rather than read as garbage. Python 3.11 and 3.12 publish nothing: the
 * agent's major.minor check (agent.c) is all there is.
 *
 * Any thread; the result is computed once and then only read. */
#define Py_BUILD_CORE 1
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <Python.h>
#include <internal/pycore_runtime.h>
#include <internal/pycore_interp.h>
#include <internal/pycore_frame.h>
#if PY_VERSION_HEX >= 0x030E0000
#include <internal/pycore_interpframe_structs.h>
#endif

#include "agent.h"
#include "log.h"

static pthread_once_t py_layout_once = PTHREAD_ONCE_INIT;
static char py_layout_cause[256]; /* empty: the layout is the one built for */

#if PY_VERSION_HEX >= 0x030D0000
/* One field this agent reads: where _Py_DebugOffsets keeps its offset in
 * the running interpreter, and the offset our headers give. */
struct py_layout_field {
	const char *name;
	size_t debug;
	uint64_t built;
};

#define PY_LAYOUT(n, d, v)                                      \
	{                                                       \
		n, offsetof(_Py_DebugOffsets, d), (uint64_t)(v) \
	}

static const struct py_layout_field py_layout_fields[] = {
	PY_LAYOUT("_PyRuntimeState.interpreters.head",
	    runtime_state.interpreters_head,
	    offsetof(_PyRuntimeState, interpreters.head)),
	PY_LAYOUT("PyInterpreterState.next", interpreter_state.next,
	    offsetof(PyInterpreterState, next)),
	PY_LAYOUT("PyInterpreterState.threads.head",
	    interpreter_state.threads_head,
	    offsetof(PyInterpreterState, threads.head)),
	PY_LAYOUT("PyInterpreterState.ceval.gil", interpreter_state.ceval_gil,
	    offsetof(PyInterpreterState, ceval.gil)),
	PY_LAYOUT("PyThreadState.next", thread_state.next,
	    offsetof(PyThreadState, next)),
	PY_LAYOUT("PyThreadState.current_frame", thread_state.current_frame,
	    offsetof(PyThreadState, current_frame)),
	PY_LAYOUT("PyThreadState.native_thread_id",
	    thread_state.native_thread_id,
	    offsetof(PyThreadState, native_thread_id)),
	PY_LAYOUT("sizeof(_PyInterpreterFrame)", interpreter_frame.size,
	    sizeof(_PyInterpreterFrame)),
	PY_LAYOUT("_PyInterpreterFrame.previous", interpreter_frame.previous,
	    offsetof(_PyInterpreterFrame, previous)),
	PY_LAYOUT("_PyInterpreterFrame.f_executable",
	    interpreter_frame.executable,
	    offsetof(_PyInterpreterFrame, f_executable)),
	PY_LAYOUT("_PyInterpreterFrame.instr_ptr", interpreter_frame.instr_ptr,
	    offsetof(_PyInterpreterFrame, instr_ptr)),
	PY_LAYOUT("_PyInterpreterFrame.owner", interpreter_frame.owner,
	    offsetof(_PyInterpreterFrame, owner)),
	PY_LAYOUT(
	    "sizeof(PyCodeObject)", code_object.size, sizeof(PyCodeObject)),
	PY_LAYOUT("PyCodeObject.co_filename", code_object.filename,
	    offsetof(PyCodeObject, co_filename)),
	PY_LAYOUT("PyCodeObject.co_name", code_object.name,
	    offsetof(PyCodeObject, co_name)),
	PY_LAYOUT("PyCodeObject.co_qualname", code_object.qualname,
	    offsetof(PyCodeObject, co_qualname)),
	PY_LAYOUT("PyCodeObject.co_linetable", code_object.linetable,
	    offsetof(PyCodeObject, co_linetable)),
	PY_LAYOUT("PyCodeObject.co_firstlineno", code_object.firstlineno,
	    offsetof(PyCodeObject, co_firstlineno)),
	PY_LAYOUT("PyCodeObject.co_code_adaptive", code_object.co_code_adaptive,
	    offsetof(PyCodeObject, co_code_adaptive)),
};

/* Compares the published offsets with ours; fills py_layout_cause. */
static void
py_layout_compare(void)
{
	const char *d = (const char *)&_PyRuntime.debug_offsets;
	const char *v = Py_GetVersion();
	uint64_t got, ver, ft;
	size_t i, n = strcspn(v, " ");

	if (memcmp(d, _Py_Debug_Cookie,
		sizeof _PyRuntime.debug_offsets.cookie) != 0) {
		snprintf(py_layout_cause, sizeof py_layout_cause,
		    "python %.*s publishes no debug offsets where this agent "
		    "expects them",
		    (int)n, v);
		return;
	}
	memcpy(&ver, d + offsetof(_Py_DebugOffsets, version), sizeof ver);
	memcpy(&ft, d + offsetof(_Py_DebugOffsets, free_threaded), sizeof ft);
	if (ft != 0) {
		snprintf(py_layout_cause, sizeof py_layout_cause,
		    "python %.*s is a free-threaded build, which this agent "
		    "does not support",
		    (int)n, v);
		return;
	}
	if ((ver >> 16) != (PY_VERSION_HEX >> 16)) {
		snprintf(py_layout_cause, sizeof py_layout_cause,
		    "python %.*s is not the %d.%d this agent was built for",
		    (int)n, v, PY_MAJOR_VERSION, PY_MINOR_VERSION);
		return;
	}
	for (i = 0; i < sizeof py_layout_fields / sizeof py_layout_fields[0];
	     i++) {
		memcpy(&got, d + py_layout_fields[i].debug, sizeof got);
		if (got == py_layout_fields[i].built)
			continue;
		snprintf(py_layout_cause, sizeof py_layout_cause,
		    "python %.*s lays out %s at %llu, this agent was built "
		    "with %s for %llu (rebuild the agent against this "
		    "python's headers)",
		    (int)n, v, py_layout_fields[i].name,
		    (unsigned long long)got, PY_VERSION,
		    (unsigned long long)py_layout_fields[i].built);
		return;
	}
}
#else
static void
py_layout_compare(void)
{
}
#endif

int
py_layout_free_threaded(void)
{
#if PY_VERSION_HEX >= 0x030D0000
	const char *d = (const char *)&_PyRuntime.debug_offsets;
	uint64_t ft;

	if (memcmp(d, _Py_Debug_Cookie, sizeof _PyRuntime.debug_offsets.cookie))
		return 0;
	memcpy(&ft, d + offsetof(_Py_DebugOffsets, free_threaded), sizeof ft);
	return ft != 0;
#else
	return 0;
#endif
}

int
py_layout_check(char **cause)
{
	pthread_once(&py_layout_once, py_layout_compare);
	if (py_layout_cause[0] == '\0')
		return 0;
	cause_set(cause, "%s", py_layout_cause);
	return -1;
}
