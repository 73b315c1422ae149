/* Local processes: those whose own agent listens (found by socket name,
 * so the list cannot go stale) and their command lines. Used by list,
 * top's discovery and job: targets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xmalloc.h"
#include "tui.h"

#define PROCS_ACCEPTCON 0x10000 /* a listening socket in /proc/net/unix */

/* Reads /proc/PID/cmdline with spaces for NULs and control characters
 * escaped (\n, \t, \xNN), so that it is one line; malloc'd. */
char *
procs_cmdline(pid_t pid)
{
	char path[64], buf[4096], *out, *o;
	size_t n, i;
	unsigned char c;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
	f = fopen(path, "re");
	if (f == NULL)
		return xstrdup("");
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	while (n > 0 && buf[n - 1] == '\0')
		n--;
	o = out = xmalloc(n * 4 + 1);
	for (i = 0; i < n; i++) {
		c = (unsigned char)buf[i];
		if (c == '\0')
			*o++ = ' ';
		else if (c == '\n' || c == '\t' || c == '\r') {
			*o++ = '\\';
			*o++ = c == '\n' ? 'n' : c == '\t' ? 't' : 'r';
		} else if (c < 0x20 || c == 0x7f)
			o += sprintf(o, "\\x%02x", c);
		else
			*o++ = (char)c;
	}
	*o = '\0';
	return out;
}

/* Pids whose own agent listens on @probing-PID (names held by another
 * process are left out), in /proc/net/unix order; malloc'd. */
pid_t *
procs_probed(int *n)
{
	char line[1024], path[512];
	unsigned long flags;
	pid_t *pids = NULL, pid;
	int count = 0, i, dup;
	FILE *f = fopen("/proc/net/unix", "re");

	if (f == NULL) {
		*n = 0;
		return NULL;
	}
	while (fgets(line, sizeof line, f) != NULL) {
		if (sscanf(line, "%*s %*s %*s %lx %*s %*s %*s %511s", &flags,
			path) != 2 ||
		    !(flags & PROCS_ACCEPTCON) ||
		    sscanf(path, "@probing-%d", &pid) != 1)
			continue;
		for (dup = 0, i = 0; i < count; i++)
			dup |= pids[i] == pid;
		if (dup || client_probe_pid(pid, NULL) != 1)
			continue;
		pids = xrealloc(pids, (size_t)(count + 1) * sizeof *pids);
		pids[count++] = pid;
	}
	fclose(f);
	*n = count;
	return pids;
}
