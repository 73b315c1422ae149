/* Error causes and the agent's log file. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "rundir.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *log_file;
static char log_file_path[256];
static int log_file_remove; /* the log goes when the process exits */

void
cause_set(char **cause, const char *fmt, ...)
{
	va_list ap;

	if (cause == NULL)
		return;
	va_start(ap, fmt);
	if (vasprintf(cause, fmt, ap) < 0)
		*cause = NULL;
	va_end(ap);
}

const char *
cause_str(const char *cause)
{
	return cause != NULL ? cause : "unknown error (out of memory?)";
}

int
log_open(const char *path, int remove_at_exit, char **cause)
{
	int fd = -1, rc = 0;

	pthread_mutex_lock(&log_lock);
	if (log_file != NULL)
		fclose(log_file);
	log_file = NULL;
	log_file_path[0] = '\0';
	log_file_remove = 0;
	if (path != NULL) {
		fd = rundir_open_file(AT_FDCWD, path, path, O_WRONLY | O_APPEND,
		    geteuid(), 0, cause);
		log_file = fd >= 0 ? fdopen(fd, "a") : NULL;
		if (log_file != NULL) {
			snprintf(
			    log_file_path, sizeof log_file_path, "%s", path);
			log_file_remove = remove_at_exit;
			setvbuf(log_file, NULL, _IOLBF, 0);
		} else {
			if (fd >= 0) {
				cause_set(cause, "cannot open %s: %s", path,
				    strerror(errno));
				close(fd);
			}
			rc = -1;
		}
	}
	pthread_mutex_unlock(&log_lock);
	return rc;
}

void
log_remove(void)
{
	pthread_mutex_lock(&log_lock);
	if (log_file_remove && log_file_path[0] != '\0')
		unlink(log_file_path);
	log_file_remove = 0;
	pthread_mutex_unlock(&log_lock);
}

const char *
log_path(void)
{
	return log_file_path;
}

void
log_info(const char *fmt, ...)
{
	va_list ap;
	struct timespec ts;
	struct tm tm;
	char when[32];

	pthread_mutex_lock(&log_lock);
	if (log_file != NULL) {
		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
		fprintf(log_file, "%s.%03ld [%d] ", when, ts.tv_nsec / 1000000,
		    (int)getpid());
		va_start(ap, fmt);
		vfprintf(log_file, fmt, ap);
		va_end(ap);
		fputc('\n', log_file);
	}
	pthread_mutex_unlock(&log_lock);
}

void
log_after_fork(void)
{
	/* The lock may have been held by a thread that is gone. The FILE is
	 * dropped, not closed: fclose could write a half line the parent's
	 * thread left in its buffer. */
	pthread_mutex_init(&log_lock, NULL);
	if (log_file != NULL)
		close(fileno(log_file));
	log_file = NULL;
}
