/* Error causes and the agent's log file. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *log_file;
static char log_file_path[256];

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

void
log_open(const char *path)
{
	pthread_mutex_lock(&log_lock);
	if (log_file != NULL)
		fclose(log_file);
	log_file = NULL;
	log_file_path[0] = '\0';
	if (path != NULL) {
		log_file = fopen(path, "ae");
		if (log_file != NULL) {
			snprintf(
			    log_file_path, sizeof log_file_path, "%s", path);
			setvbuf(log_file, NULL, _IOLBF, 0);
		}
	}
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
