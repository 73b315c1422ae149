/* The agent's start: the load-time constructor (block signals, open the
 * log, check the interpreter, read the settings, open the store, start the
 * server and the Python-side setups), what a fork child does, and what a
 * clean exit does. It calls down into every part; none calls it. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "log.h"
#include "rundir.h"

/* Fork child: the parent's threads are gone, and none of the agent's fds
 * (sockets, the event loop's epoll, pipe and eventfd, the log) stays
 * open in it. */
static void
init_atfork_child(void)
{
	agent_running = 0;
	server_after_fork();
	py_after_fork();
	bt_native_after_fork();
	bt_eval_after_fork();
	log_after_fork();
}

/* Opens the per-user directory and the log in it (or $PROBING_LOG);
 * returns the directory's fd or -1. */
static int
init_open_files(void)
{
	char dir[256], path[300], *cause = NULL, *dcause = NULL;
	const char *logp = getenv("PROBING_LOG");
	int fd;

	rundir_path("", geteuid(), getenv("XDG_RUNTIME_DIR"), dir, sizeof dir);
	fd = rundir_open(dir, geteuid(), 1, &dcause);
	if (fd >= 0)
		rundir_clean(fd);
	if (logp != NULL && *logp != '\0')
		log_open(logp, 0, &cause);
	else if (fd >= 0) {
		snprintf(path, sizeof path, "%s/%d.log", dir, (int)agent_pid);
		log_open(path, 1, &cause);
	}
	if (dcause != NULL)
		log_info("no log or init file: %s", dcause);
	free(dcause);
	free(cause);
	return fd;
}

/* At a clean exit of the process (not of a forked child) the log goes. */
__attribute__((destructor)) static void
init_fini(void)
{
	if (agent_pid != 0 && getpid() == agent_pid)
		log_remove();
}

__attribute__((constructor)) static void
init_agent(void)
{
	sigset_t all, old;
	char *cause = NULL;
	int dir;

	if (agent_running)
		return;
	agent_pid = getpid();
	dir = init_open_files();
	if (agent_check_python(&cause) != 0)
		goto fail;
	config_load_env(getenv("PROBING") != NULL);
	config_load_file(dir);
	if (dir >= 0)
		close(dir);
	/* Agent threads inherit a mask that blocks every signal, so the
	 * application's handlers only ever run on its own threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	if (store_open(&cause) != 0 || server_start(&cause) != 0) {
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		goto fail;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_atfork(NULL, NULL, init_atfork_child);
	agent_running = 1;
	log_info("agent started (python %s)", agent_python_version());
	torch_init();
	eval_init();
	bt_eval_init();
	return;
fail:
	if (dir >= 0)
		close(dir);
	log_info("agent not started: %s", cause_str(cause));
	free(cause);
}
