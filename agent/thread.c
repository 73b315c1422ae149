/* The agent's background threads: detached, with every signal blocked (so
 * the application's handlers only ever run on its own threads), a small
 * stack and a name that says whose they are. */
#include <pthread.h>
#include <signal.h>

#include "agent.h"
#include "log.h"

int
thread_start(void *(*fn)(void *), void *arg, const char *name)
{
	pthread_attr_t attr;
	sigset_t all, old;
	pthread_t t;
	int err;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	err = pthread_create(&t, &attr, fn, arg);
	if (err == 0)
		pthread_setname_np(t, name);
	else
		log_info("cannot start thread %s", name);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return err == 0 ? 0 : -1;
}
