/* The model of `probing top` as a whole: the set of targets (given with -t,
 * or found by scanning local processes), the selection, the tick that
 * starts polling rounds, and injecting into an unprobed process by running
 * this program. It never draws: the owner (cmd-top.c) hears of changes
 * through top->changed and top->round_done. */
#include <sys/types.h>
#include <sys/wait.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "clock.h"
#include "xmalloc.h"
#include "top.h"

#define TOP_SCAN_EVERY 2000 /* ms between rescans without -t */

struct top_target *
top_selected(struct top *top)
{
	int i;

	for (i = 0; i < top->ntargets; i++)
		if (top->targets[i] == top->sel)
			return top->sel;
	top->sel = top->ntargets > 0 ? top->targets[0] : NULL;
	return top->sel;
}

int
top_busy(const struct top *top)
{
	int i;

	for (i = 0; i < top->ntargets; i++)
		if (top->targets[i]->busy)
			return 1;
	return 0;
}

void
top_tick(struct top *top)
{
	int i;

	if (top->scan && clock_ms() - top->last_scan >= TOP_SCAN_EVERY)
		top_scan(top);
	for (i = 0; i < top->ntargets; i++) {
		top_poll(top, top->targets[i]);
		top_target_derive(top->targets[i]);
	}
	if (top->status[0] != '\0' && clock_ms() > top->status_until)
		top->status[0] = '\0';
	top_changed(top);
}

void
top_free(struct top *top)
{
	int i;

	for (i = 0; i < top->ntargets; i++)
		top_target_free(top->targets[i]);
	free(top->targets);
	top->targets = NULL;
	top->ntargets = 0;
	top->sel = NULL;
}

/* Scanning local processes ------------------------------------------- */

static struct top_target *
top_find_pid(struct top *top, pid_t pid)
{
	int i;

	for (i = 0; i < top->ntargets; i++)
		if (top->targets[i]->ep.kind == ENDPOINT_PID &&
		    top->targets[i]->ep.pid == pid)
			return top->targets[i];
	return NULL;
}

/* True when pid runs a Python interpreter we may look at. */
static int
top_is_python(pid_t pid)
{
	char path[64], comm[64];
	FILE *f;
	int ok;

	if (pid == getpid())
		return 0;
	snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
	f = fopen(path, "re");
	if (f == NULL)
		return 0;
	ok = fgets(comm, sizeof comm, f) != NULL &&
	    strncmp(comm, "python", 6) == 0;
	fclose(f);
	snprintf(path, sizeof path, "/proc/%d/mem", (int)pid);
	return ok && access(path, R_OK) == 0;
}

void
top_scan(struct top *top)
{
	struct endpoint ep = { .kind = ENDPOINT_PID };
	struct top_target *t;
	struct dirent *de;
	pid_t *pids, pid;
	DIR *d;
	int n, i, j;

	top->last_scan = clock_ms();
	for (i = 0; i < top->ntargets; i++)
		top->targets[i]->seen = 0;
	pids = procs_probed(&n);
	for (i = 0; i < n; i++) {
		t = top_find_pid(top, pids[i]);
		if (t != NULL && t->ac == NULL) {
			t->ac = aclient_new(top->base, &t->ep, top->ctx->token);
			t->state = TOP_CONNECTING;
		}
		if (t == NULL) {
			ep.pid = pids[i];
			snprintf(ep.name, sizeof ep.name, "%d", (int)pids[i]);
			t = top_target_new(top, &ep, 1);
		}
		t->seen = 1;
	}
	free(pids);
	d = opendir("/proc");
	while (d != NULL && (de = readdir(d)) != NULL) {
		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		pid = (pid_t)atoi(de->d_name);
		t = top_find_pid(top, pid);
		if (t != NULL) {
			t->seen = 1;
			continue;
		}
		if (!top_is_python(pid))
			continue;
		ep.pid = pid;
		snprintf(ep.name, sizeof ep.name, "%d", (int)pid);
		top_target_new(top, &ep, 0)->seen = 1;
	}
	if (d != NULL)
		closedir(d);
	/* Unprobed processes that went away leave the list. */
	for (i = j = 0; i < top->ntargets; i++) {
		t = top->targets[i];
		if (t->ac == NULL && (!t->seen || top_pid_gone(t->ep.pid))) {
			if (top->sel == t)
				top->sel = NULL;
			top_target_free(t);
			continue;
		}
		top->targets[j++] = t;
	}
	top->ntargets = j;
	top_changed(top);
}

/* Injection into an unprobed process, by running this program --------- */

/* One `probing inject` child; owned by its read event until it ends. */
struct top_inject {
	struct top *top;
	pid_t child, target;
	int fd;
	char out[512];
	size_t len;
	struct event *ev;
};

static void
top_inject_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct top_inject *ij = arg;
	ssize_t n;
	int st = 0;
	char *nl;

	(void)what;
	n = read(fd, ij->out + ij->len, sizeof ij->out - 1 - ij->len);
	if (n > 0) {
		ij->len += (size_t)n;
		if (ij->len < sizeof ij->out - 1)
			return;
	} else if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	ij->out[ij->len] = '\0';
	while (ij->len > 0 && ij->out[ij->len - 1] == '\n')
		ij->out[--ij->len] = '\0';
	nl = strrchr(ij->out, '\n');
	waitpid(ij->child, &st, 0);
	top_set_status(ij->top, !(WIFEXITED(st) && WEXITSTATUS(st) == 0), "%s",
	    nl ? nl + 1 : (ij->len ? ij->out : "inject finished"));
	event_free(ij->ev);
	close(ij->fd);
	top_scan(ij->top);
	free(ij);
}

void
top_inject(struct top *top, struct top_target *t)
{
	struct top_inject *ij;
	char pidtext[32];
	int fds[2];
	pid_t child;

	if (t == NULL || t->ac != NULL || t->ep.kind != ENDPOINT_PID) {
		top_set_status(top, 1, "select an unprobed process to inject");
		return;
	}
	if (pipe2(fds, O_CLOEXEC) != 0) {
		top_set_status(top, 1, "cannot inject: %s", strerror(errno));
		return;
	}
	snprintf(pidtext, sizeof pidtext, "%d", (int)t->ep.pid);
	child = fork();
	if (child < 0) {
		top_set_status(top, 1, "cannot inject: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return;
	}
	if (child == 0) {
		int null = open("/dev/null", O_RDONLY);

		dup2(null, 0);
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		execl("/proc/self/exe", "probing", "-t", pidtext, "inject",
		    (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	ij = xcalloc(1, sizeof *ij);
	ij->top = top;
	ij->child = child;
	ij->target = t->ep.pid;
	ij->fd = fds[0];
	ij->ev = event_new(
	    top->base, fds[0], EV_READ | EV_PERSIST, top_inject_read_cb, ij);
	event_add(ij->ev, NULL);
	top_set_status(top, 0, "injecting into %d ...", (int)t->ep.pid);
}
