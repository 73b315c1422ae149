/* The agent's facts about its process: its pid, whether the agent runs,
 * the python version (checked once). The constructor that starts
 * everything is in init.c, the module `probing._core` in py-core.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <Python.h>

#include "agent.h"
#include "log.h"

pid_t agent_pid;
int agent_running;
static char agent_pyver[32];

const char *
agent_python_version(void)
{
	return agent_pyver;
}

/* Checks the interpreter is the version this agent was built for. */
int
agent_check_python(char **cause)
{
	char *lc = NULL;
	const char *v = Py_GetVersion();
	size_t n = strcspn(v, " ");

	snprintf(agent_pyver, sizeof agent_pyver, "%.*s", (int)n, v);
	if ((int)(Py_Version >> 24) != PY_MAJOR_VERSION ||
	    (int)((Py_Version >> 16) & 0xff) != PY_MINOR_VERSION) {
		cause_set(cause,
		    "this agent is built for python %d.%d but pid %d runs %s",
		    PY_MAJOR_VERSION, PY_MINOR_VERSION, (int)agent_pid,
		    agent_pyver);
		return -1;
	}
	if (py_layout_free_threaded()) {
		cause_set(cause,
		    "pid %d runs python %st, a free-threaded build, which "
		    "probing does not support",
		    (int)agent_pid, agent_pyver);
		return -1;
	}
	if (py_layout_check(&lc) != 0) {
		log_info("python frames will not be read: %s", lc);
		free(lc);
	}
	return 0;
}
