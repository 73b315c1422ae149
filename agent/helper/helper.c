/* probing-unwind: the agent's helper process for native stacks without
 * signals. The agent starts it (bt-native.c: exec'd from memory, no longer
 * the job's child) with its end of a SOCK_SEQPACKET socket on fd 3 and the
 * job's pid as argv[1]; it serves the requests of bt-helper.h until the
 * socket closes or the job exits.
 *
 * Per thread, one at a time: PTRACE_SEIZE + PTRACE_INTERRUPT, read the
 * registers, unwind remotely (unwind.c) and copy the Python frame chain
 * (where the agent said CPython keeps it) in the same stop, restart a
 * system call that the stop ended with EINTR, PTRACE_DETACH (handing back
 * any signal that arrived). Nothing is left traced if this process dies:
 * the kernel detaches a dead tracer's tracees. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../bt-helper.h"
#include "helper.h"

static pid_t helper_pid; /* the job */
static int helper_sigfd = -1;

/* System calls the kernel ends with EINTR (not a restart code) when a
 * ptrace stop interrupts them; the helper restarts these itself. */
static const long helper_eintr_calls[] = {
	7,   /* poll */
	23,  /* select */
	35,  /* nanosleep */
	65,  /* semop */
	128, /* rt_sigtimedwait */
	202, /* futex */
	208, /* io_getevents */
	220, /* semtimedop */
	230, /* clock_nanosleep */
	232, /* epoll_wait */
	270, /* pselect6 */
	271, /* ppoll */
	281, /* epoll_pwait */
	441, /* epoll_pwait2 */
};

static double
helper_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static struct bth_layout helper_layout;
static uint64_t helper_ips[BTH_NATIVE_MAX];
static struct bth_pyframe helper_py[BTH_PY_MAX];
static unsigned char helper_out[BTH_REP_MAX];

/* Sends rep followed by its nips helper_ips and npy helper_py. */
static void
helper_send(const struct bth_rep *rep)
{
	size_t ni = rep->nips > 0 ? (size_t)rep->nips : 0;
	size_t np = rep->npy > 0 ? (size_t)rep->npy : 0, len = sizeof *rep;

	memcpy(helper_out, rep, sizeof *rep);
	memcpy(helper_out + len, helper_ips, ni * sizeof helper_ips[0]);
	len += ni * sizeof helper_ips[0];
	memcpy(helper_out + len, helper_py, np * sizeof helper_py[0]);
	len += np * sizeof helper_py[0];
	while (
	    send(BTH_FD, helper_out, len, MSG_NOSIGNAL) < 0 && errno == EINTR)
		;
}

/* Copies the Python frame chain of the held thread tid, whose thread
 * state is at ts, into helper_py; returns the count, or -1 when ts is not
 * tid's (anymore). */
static int
helper_python(long tid, uint64_t ts)
{
	const struct bth_layout *l = &helper_layout;
	struct bth_pyframe *f;
	uint64_t v, fa;
	int n = 0;

	if (ts == 0 || unwind_read(ts + (uint64_t)l->ts_tid, &v, 8) != 0 ||
	    (long)v != tid)
		return -1;
	if (l->ts_current >= 0) {
		if (unwind_read(ts + (uint64_t)l->ts_current, &fa, 8) != 0)
			return 0;
	} else if (unwind_read(ts + (uint64_t)l->ts_cframe, &v, 8) != 0 ||
	    v == 0 || unwind_read(v + (uint64_t)l->cframe_current, &fa, 8)) {
		return 0;
	}
	for (; fa != 0 && n < BTH_PY_MAX; fa = v) {
		f = &helper_py[n];
		memset(f, 0, sizeof *f);
		if (unwind_read(fa + (uint64_t)l->f_code, &f->code, 8) != 0 ||
		    unwind_read(fa + (uint64_t)l->f_instr, &f->instr, 8) ||
		    unwind_read(fa + (uint64_t)l->f_owner, &f->owner, 1) ||
		    (l->f_is_entry >= 0 &&
			unwind_read(fa + (uint64_t)l->f_is_entry, &f->is_entry,
			    1) != 0) ||
		    unwind_read(fa + (uint64_t)l->f_previous, &v, 8) != 0)
			break;
		f->code &= l->code_mask;
		n++;
	}
	return n;
}

/* The hex mask after key in a /proc status text, or 0. */
static unsigned long long
helper_mask(const char *status, const char *key)
{
	const char *p = strstr(status, key);

	return p != NULL ? strtoull(p + strlen(key), NULL, 16) : 0;
}

/* Reads /proc/<pid>/task/<tid>/status (tid 0: /proc/self/status). */
static int
helper_status(long tid, char *buf, size_t len)
{
	char path[96];
	FILE *f;
	size_t n;

	if (tid != 0)
		snprintf(path, sizeof path, "/proc/%d/task/%ld/status",
		    (int)helper_pid, tid);
	else
		snprintf(path, sizeof path, "/proc/self/status");
	f = fopen(path, "re");
	if (f == NULL)
		return -1;
	n = fread(buf, 1, len - 1, f);
	fclose(f);
	buf[n] = '\0';
	return 0;
}

/* Whether thread tid has a signal pending that it does not block. */
static int
helper_signal_pending(long tid)
{
	char st[4096];

	if (helper_status(tid, st, sizeof st) != 0)
		return 1;
	return ((helper_mask(st, "\nSigPnd:") | helper_mask(st, "\nShdPnd:")) &
		   ~helper_mask(st, "\nSigBlk:")) != 0;
}

/* strerror(err) starting lower case, as every message here does. */
static const char *
helper_strerror(int err, char *buf, size_t len)
{
	snprintf(buf, len, "%s", strerror(err));
	if (buf[0] >= 'A' && buf[0] <= 'Z')
		buf[0] = (char)(buf[0] - 'A' + 'a');
	return buf;
}

/* Says in note why PTRACE_SEIZE of tid failed with err. */
static void
helper_seize_note(long tid, int err, char *note, size_t len)
{
	char st[4096], e[64], yama[8] = "";
	long tracer = 0;
	const char *p;
	FILE *f;

	if (err == ESRCH) {
		snprintf(note, len, "the thread exited");
		return;
	}
	if (helper_status(tid, st, sizeof st) == 0 &&
	    (p = strstr(st, "\nTracerPid:")) != NULL)
		tracer = strtol(p + 11, NULL, 10);
	if (tracer > 0) {
		snprintf(note, len, "the thread is traced by pid %ld", tracer);
		return;
	}
	helper_strerror(err, e, sizeof e);
	f = fopen("/proc/sys/kernel/yama/ptrace_scope", "re");
	if (f != NULL) {
		if (fgets(yama, sizeof yama, f) == NULL)
			yama[0] = '\0';
		fclose(f);
	}
	if (helper_status(0, st, sizeof st) == 0 &&
	    (p = strstr(st, "\nSeccomp:")) != NULL && strtol(p + 9, NULL, 10))
		snprintf(
		    note, len, "ptrace is not allowed: %s (seccomp filter)", e);
	else if (yama[0] >= '2' && yama[0] <= '3')
		snprintf(note, len,
		    "ptrace is not allowed: %s (kernel.yama.ptrace_scope=%c)",
		    e, yama[0]);
	else
		snprintf(note, len, "ptrace is not allowed: %s", e);
}

/* Whether thread tid stays in uninterruptible sleep (state D) for
 * BTH_D_MS: it would not stop before it leaves the kernel. */
static int
helper_stuck_in_kernel(long tid)
{
	char path[96], buf[512], *p;
	struct timespec nap = { 0, 1000000 };
	int i, fd;
	ssize_t n;

	snprintf(
	    path, sizeof path, "/proc/%d/task/%ld/stat", (int)helper_pid, tid);
	for (i = 0; i <= BTH_D_MS; i++) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return 0;
		n = read(fd, buf, sizeof buf - 1);
		close(fd);
		if (n <= 0)
			return 0;
		buf[n] = '\0';
		p = strrchr(
		    buf, ')'); /* after the comm, which may hold anything */
		if (p == NULL || p[1] != ' ' || p[2] != 'D')
			return 0;
		nanosleep(&nap, NULL);
	}
	return 1;
}

/* Waits up to BTH_STOP_MS for tid's next stop: 1 with *status, 0 on
 * timeout, -1 when the thread is gone. */
static int
helper_wait_stop(long tid, int *status)
{
	double deadline = helper_now_us() + BTH_STOP_MS * 1000.0, left;
	struct signalfd_siginfo si;
	struct pollfd pfd = { helper_sigfd, POLLIN, 0 };
	pid_t r;

	for (;;) {
		r = waitpid((pid_t)tid, status, __WALL | WNOHANG);
		if (r == (pid_t)tid)
			return WIFSTOPPED(*status) ? 1 : -1;
		if (r < 0 && errno != EINTR)
			return -1;
		left = deadline - helper_now_us();
		if (left <= 0)
			return 0;
		if (poll(&pfd, 1, (int)(left / 1000) + 1) > 0)
			while (read(helper_sigfd, &si, sizeof si) > 0)
				;
	}
}

/* Makes the interrupted call run again on resume when the stop ended it
 * with EINTR and no signal of the program's is there to explain it. */
static void
helper_restart(long tid, struct user_regs_struct *regs)
{
	long nr = (long)regs->orig_rax;
	size_t i;

	if (nr < 0 || (long)regs->rax != -EINTR)
		return;
	for (i = 0;
	     i < sizeof helper_eintr_calls / sizeof helper_eintr_calls[0]; i++)
		if (helper_eintr_calls[i] == nr)
			break;
	if (i == sizeof helper_eintr_calls / sizeof helper_eintr_calls[0] ||
	    helper_signal_pending(tid))
		return;
	regs->rip -= 2; /* back onto the syscall instruction */
	regs->rax = regs->orig_rax;
	ptrace(PTRACE_SETREGS, (pid_t)tid, NULL, regs);
}

/* Holds thread tid (thread state at ts), copies what the agent wants and
 * resumes it; sends one BTH_RESULT. See the file's comment. */
static void
helper_stop(long tid, uint64_t ts)
{
	struct bth_rep rep;
	struct user_regs_struct regs;
	double t0;
	int status, w, deliver = 0;
	char e[64];

	memset(&rep, 0, sizeof rep);
	rep.kind = BTH_RESULT;
	rep.tid = (int32_t)tid;
	rep.nips = -1;
	rep.npy = -1;
	rep.stop_us = -1;
	if (helper_stuck_in_kernel(tid)) {
		snprintf(rep.note, sizeof rep.note,
		    "the thread is in uninterruptible sleep in the kernel "
		    "(state D): not stopped");
		helper_send(&rep);
		return;
	}
	t0 = helper_now_us();
	if (ptrace(PTRACE_SEIZE, (pid_t)tid, NULL, NULL) != 0) {
		helper_seize_note(tid, errno, rep.note, sizeof rep.note);
		helper_send(&rep);
		return;
	}
	if (ptrace(PTRACE_INTERRUPT, (pid_t)tid, NULL, NULL) != 0) {
		snprintf(rep.note, sizeof rep.note, "the thread exited");
		helper_send(&rep);
		return;
	}
	w = helper_wait_stop(tid, &status);
	if (w < 0) {
		snprintf(rep.note, sizeof rep.note, "the thread exited");
		helper_send(&rep);
		return;
	}
	if (w == 0) {
		/* Still traced and not stopped: only our exit lets go of it
		 * (and cancels the pending stop). */
		snprintf(rep.note, sizeof rep.note,
		    "the thread did not stop within %d ms", BTH_STOP_MS);
		rep.flags = BTH_F_EXITING;
		helper_send(&rep);
		_exit(0);
	}
	if ((status >> 16) == 0)
		deliver = WSTOPSIG(status); /* a signal of the program's */
	if (ptrace(PTRACE_GETREGS, (pid_t)tid, NULL, &regs) == 0) {
		rep.nips = unwind_thread(&regs, helper_ips, BTH_NATIVE_MAX);
		if (rep.nips == 0)
			snprintf(rep.note, sizeof rep.note,
			    "no unwind information at pc 0x%llx",
			    (unsigned long long)regs.rip);
		rep.npy = helper_python(tid, ts);
		if (deliver == 0)
			helper_restart(tid, &regs);
	} else {
		snprintf(rep.note, sizeof rep.note,
		    "cannot read the registers: %s",
		    helper_strerror(errno, e, sizeof e));
	}
	ptrace(PTRACE_DETACH, (pid_t)tid, NULL, (void *)(long)deliver);
	rep.stop_us = helper_now_us() - t0;
	helper_send(&rep);
}

/* The request being served; large, so not on the stack. */
static union {
	int32_t op;
	struct bth_begin begin;
	struct bth_capture capture;
} helper_req;

int
main(int argc, char **argv)
{
	struct bth_rep rep;
	struct pollfd pfd[2];
	sigset_t set;
	ssize_t n;
	int pidfd, i;

	if (argc != 2 || (helper_pid = (pid_t)atoi(argv[1])) <= 0) {
		fprintf(stderr,
		    "probing-unwind: started by the probing agent only\n");
		return 2;
	}
	prctl(PR_SET_NAME, "probing-unwind");
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_SETMASK, &set, NULL);
	helper_sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	pidfd = (int)syscall(SYS_pidfd_open, helper_pid, 0);
	if (unwind_init(helper_pid) != 0)
		return 1;
	pfd[0] = (struct pollfd){ BTH_FD, POLLIN, 0 };
	pfd[1] = (struct pollfd){ pidfd, POLLIN, 0 };
	for (;;) {
		if (poll(pfd, pidfd >= 0 ? 2 : 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		if (pidfd >= 0 && pfd[1].revents != 0)
			return 0; /* the job exited */
		n = recv(BTH_FD, &helper_req, sizeof helper_req, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < (ssize_t)sizeof(int32_t))
			return 0; /* the agent closed its end */
		if (helper_req.op == BTH_BEGIN &&
		    n == (ssize_t)sizeof helper_req.begin) {
			helper_layout = helper_req.begin.layout;
			unwind_refresh();
			memset(&rep, 0, sizeof rep);
			rep.kind = BTH_READY;
			helper_send(&rep);
		} else if (helper_req.op == BTH_CAPTURE &&
		    n >= (ssize_t)offsetof(struct bth_capture, t)) {
			for (i = 0;
			     i < helper_req.capture.n && i < BTH_TARGETS_MAX &&
			     (ssize_t)offsetof(struct bth_capture, t[i + 1]) <=
				 n;
			     i++)
				helper_stop(helper_req.capture.t[i].tid,
				    helper_req.capture.t[i].tstate);
		}
	}
}
