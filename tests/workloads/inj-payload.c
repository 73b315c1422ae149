/* inj-payload.c - test shared object whose constructor leaves a trace */

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void inj_payload_init(void) __attribute__((constructor));

/*
 * Append "loaded PID\n" to $INJ_PAYLOAD_OUT (default /tmp/inj-payload-PID).
 * $INJ_PAYLOAD_SLEEP_MS makes the constructor sleep first and
 * $INJ_PAYLOAD_EXIT makes it end the process with _exit(3), to test the
 * injector's watchdog and exit handling. It changes errno on the way, as
 * the agent's fopen of a missing init file does, for the injector to undo.
 */
static void
inj_payload_init(void)
{
	const char *out = getenv("INJ_PAYLOAD_OUT");
	const char *ms = getenv("INJ_PAYLOAD_SLEEP_MS");
	char fn[64], line[64];
	int fd, n;

	if (ms != NULL) {
		long v = strtol(ms, NULL, 10);
		struct timespec ts = { v / 1000, (v % 1000) * 1000000 };

		nanosleep(&ts, NULL);
	}
	if (getenv("INJ_PAYLOAD_EXIT") != NULL)
		_exit(3);
	if (access("/proc/self/inj-payload-missing", F_OK) == 0)
		return;
	if (out == NULL) {
		snprintf(fn, sizeof fn, "/tmp/inj-payload-%d", (int)getpid());
		out = fn;
	}
	fd = open(out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	n = snprintf(line, sizeof line, "loaded %d\n", (int)getpid());
	if (write(fd, line, (size_t)n) < 0)
		n = 0;
	close(fd);
}
