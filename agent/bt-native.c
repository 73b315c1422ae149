/* Native stacks without signals: the agent's side of the unwinding helper
 * (agent/helper/, protocol in bt-helper.h).
 *
 * The helper's static executable is built into this library
 * (bt_helper_elf) and exec'd from a memfd, so every install layout has it.
 * It must stay invisible to the job, which may reap its children with
 * waitpid(-1) and count SIGCHLD: a child whose exit signal is 0 is
 * invisible to wait calls without __WCLONE/__WALL, but execve resets the
 * exit signal to SIGCHLD. So a short-lived middle process (clone, exit
 * signal 0, never exec'd) starts the helper and exits at once; the helper
 * is reparented to init (or the nearest subreaper; a job that is one
 * itself gets no helper) and is nobody's child in the job, and the agent
 * reaps the middle one with __WCLONE. Both are
 * vfork-style children sharing our memory until the exec, running only
 * system calls. The helper starts its own session, so terminal signals for
 * the job do not reach it, and exits when its socket closes or the job
 * exits.
 *
 * Threads: bt_native_capture runs on a request or py worker thread, one
 * capture at a time (btn.lock); the fork child handler resets the state
 * without the lock. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "bt-helper.h"
#include "log.h"

#define BTN_STACK     (64 * 1024)
#define BTN_ANSWER_MS 2000 /* longest wait for any helper message */
#define BTN_RESPAWNS  2    /* helper restarts within one capture */

/* The embedded helper executable (Makefile: bt-helper-bin.o). */
extern const unsigned char bt_helper_elf[], bt_helper_elf_end[];

/* The last reply and the request being sent; guarded by btn.lock. */
static unsigned char btn_in[BTH_REP_MAX] __attribute__((aligned(8)));
static struct bth_capture btn_req;

static struct {
	pthread_mutex_t lock;
	int fd;    /* our end of the socket; -1: no helper */
	int pidfd; /* the helper's, or -1 */
	pid_t pid;
} btn = { PTHREAD_MUTEX_INITIALIZER, -1, -1, 0 };

/* What the two spawned processes share with us until the exec. */
struct btn_spawn {
	int memfd, sock;
	char *argv[3];
	char *envp[1];
	char *stack;      /* the helper's, before exec */
	pid_t helper;     /* written by the middle process */
	int err;          /* errno of the step that failed, or 0 */
	const char *what; /* that step */
};

/* The helper before its exec: only system calls, on a shared memory. */
static int
btn_exec(void *arg)
{
	struct btn_spawn *s = arg;

	setsid();
	if (s->sock == BTH_FD)
		fcntl(BTH_FD, F_SETFD, 0);
	else if (dup2(s->sock, BTH_FD) != BTH_FD)
		goto fail;
	/* Nothing of the job's may stay open in the helper. */
	syscall(SYS_close_range, BTH_FD + 1, ~0U, 4 /* CLOSE_RANGE_CLOEXEC */);
	syscall(SYS_execveat, s->memfd, "", s->argv, s->envp,
	    0x1000 /* AT_EMPTY_PATH */);
fail:
	s->what = "exec";
	s->err = errno;
	_exit(127);
}

/* The middle process: starts the helper and exits, leaving it orphaned. */
static int
btn_middle(void *arg)
{
	struct btn_spawn *s = arg;
	pid_t pid = clone(btn_exec, s->stack + BTN_STACK,
	    CLONE_VM | CLONE_VFORK | SIGCHLD, s);

	if (pid < 0) {
		s->what = "clone";
		s->err = errno;
	} else if (s->err == 0) {
		s->helper = pid;
	}
	_exit(0);
}

/* A memfd holding the helper executable; -1 with *cause. */
static int
btn_memfd(char **cause)
{
	const unsigned char *p = bt_helper_elf;
	size_t left = (size_t)(bt_helper_elf_end - bt_helper_elf);
	ssize_t n;
	int fd, hi;

	fd = memfd_create("probing-unwind", MFD_CLOEXEC | 0x10 /* MFD_EXEC */);
	if (fd < 0 && errno == EINVAL)
		fd = memfd_create("probing-unwind", MFD_CLOEXEC);
	if (fd < 0) {
		cause_set(cause, "memfd_create: %s", strerror(errno));
		return -1;
	}
	while (left > 0) {
		n = write(fd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			cause_set(cause, "cannot write the helper: %s",
			    strerror(errno));
			close(fd);
			return -1;
		}
		p += n;
		left -= (size_t)n;
	}
	/* Above BTH_FD, so that the dup2 onto it cannot close it. */
	hi = fcntl(fd, F_DUPFD_CLOEXEC, 10);
	close(fd);
	if (hi < 0)
		cause_set(cause, "fcntl: %s", strerror(errno));
	return hi;
}

/* Under Yama mode 1 only our descendants' ancestors may trace us; allow the
 * helper explicitly (one value per process: say so in the log). */
static void
btn_allow_ptrace(pid_t helper)
{
	char mode[8] = "";
	FILE *f = fopen("/proc/sys/kernel/yama/ptrace_scope", "re");

	if (f == NULL)
		return;
	if (fgets(mode, sizeof mode, f) == NULL)
		mode[0] = '\0';
	fclose(f);
	if (mode[0] != '1')
		return;
	if (prctl(PR_SET_PTRACER, (unsigned long)helper, 0, 0, 0) == 0)
		log_info(
		    "backtrace: yama ptrace_scope 1: allowed the unwinding "
		    "helper (pid %d) with PR_SET_PTRACER",
		    (int)helper);
	else
		log_info("backtrace: PR_SET_PTRACER %d: %s", (int)helper,
		    strerror(errno));
}

/* Starts the helper; 0, or -1 with *cause. */
static int
btn_start(char **cause)
{
	struct btn_spawn s;
	char pidarg[24], name[] = "probing-unwind";
	char *mstack = NULL;
	int sv[2] = { -1, -1 }, hi, st, sub = 0;
	pid_t mid;

	/* Orphans go to the nearest subreaper: that would be the job. */
	if (prctl(PR_GET_CHILD_SUBREAPER, &sub, 0, 0, 0) == 0 && sub) {
		cause_set(cause,
		    "the job is a child subreaper, so the helper would be its "
		    "child");
		return -1;
	}
	memset(&s, 0, sizeof s);
	s.memfd = btn_memfd(cause);
	if (s.memfd < 0)
		return -1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
		cause_set(cause, "socketpair: %s", strerror(errno));
		goto fail;
	}
	hi = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
	close(sv[1]);
	sv[1] = hi;
	s.sock = hi;
	snprintf(pidarg, sizeof pidarg, "%d", (int)agent_pid);
	s.argv[0] = name;
	s.argv[1] = pidarg;
	s.stack = malloc(BTN_STACK);
	mstack = malloc(BTN_STACK);
	if (hi < 0 || s.stack == NULL || mstack == NULL) {
		cause_set(cause, "cannot prepare the helper: %s",
		    strerror(hi < 0 ? errno : ENOMEM));
		goto fail;
	}
	/* exit signal 0: no SIGCHLD, invisible to the job's waitpid(-1) */
	mid = clone(btn_middle, mstack + BTN_STACK, CLONE_VM | CLONE_VFORK, &s);
	if (mid < 0) {
		cause_set(cause, "clone: %s", strerror(errno));
		goto fail;
	}
	while (waitpid(mid, &st, __WCLONE) < 0 && errno == EINTR)
		;
	if (s.err != 0 || s.helper <= 0) {
		cause_set(cause, "%s: %s", s.what ? s.what : "spawn",
		    strerror(s.err ? s.err : ECHILD));
		goto fail;
	}
	btn.pid = s.helper;
	btn.pidfd = (int)syscall(SYS_pidfd_open, s.helper, 0);
	if (btn.pidfd >= 0)
		fcntl(btn.pidfd, F_SETFD, FD_CLOEXEC);
	btn.fd = sv[0];
	close(sv[1]);
	close(s.memfd);
	free(s.stack);
	free(mstack);
	btn_allow_ptrace(s.helper);
	log_info("backtrace: unwinding helper started (pid %d)", (int)s.helper);
	return 0;
fail:
	if (sv[0] >= 0)
		close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	close(s.memfd);
	free(s.stack);
	free(mstack);
	return -1;
}

/* Lets go of the helper; kill when it may be stuck. It is not our child:
 * init reaps it. */
static void
btn_stop(int kill_it)
{
	if (kill_it && btn.pidfd >= 0)
		syscall(SYS_pidfd_send_signal, btn.pidfd, SIGKILL, NULL, 0);
	if (btn.fd >= 0)
		close(btn.fd);
	if (btn.pidfd >= 0)
		close(btn.pidfd);
	btn.fd = btn.pidfd = -1;
	btn.pid = 0;
}

/* Receives one reply (into btn_in) within BTN_ANSWER_MS; the header, or
 * NULL (the helper is then let go of). */
static const struct bth_rep *
btn_recv(void)
{
	const struct bth_rep *rep = (const struct bth_rep *)(void *)btn_in;
	struct pollfd pfd = { btn.fd, POLLIN, 0 };
	size_t need;
	ssize_t n;
	int r;

	for (;;) {
		r = poll(&pfd, 1, BTN_ANSWER_MS);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n = recv(btn.fd, btn_in, sizeof btn_in, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < (ssize_t)sizeof *rep || rep->nips > BTH_NATIVE_MAX ||
		    rep->npy > BTH_PY_MAX)
			break;
		need = sizeof *rep +
		    sizeof(uint64_t) * (size_t)(rep->nips > 0 ? rep->nips : 0) +
		    sizeof(struct bth_pyframe) *
			(size_t)(rep->npy > 0 ? rep->npy : 0);
		if ((size_t)n != need)
			break;
		btn_in[offsetof(struct bth_rep, note) + BTH_NOTE_MAX - 1] = 0;
		return rep;
	}
	btn_stop(1);
	return NULL;
}

static int
btn_send(const void *msg, size_t len)
{
	if (send(btn.fd, msg, len, MSG_NOSIGNAL) == (ssize_t)len)
		return 0;
	btn_stop(1);
	return -1;
}

/* Makes sure a helper runs and has fresh mappings; 0, or -1 with *cause. */
static int
btn_ready(const struct bth_layout *layout, char **cause)
{
	struct bth_begin begin = { .op = BTH_BEGIN, .layout = *layout };
	const struct bth_rep *rep;

	if (btn.fd < 0 && btn_start(cause) != 0)
		return -1;
	if (btn_send(&begin, sizeof begin) != 0 || (rep = btn_recv()) == NULL ||
	    rep->kind != BTH_READY) {
		btn_stop(1);
		cause_set(cause, "the unwinding helper did not answer");
		return -1;
	}
	return 0;
}

/* Copies the reply in btn_in into *out. */
static void
btn_take(const struct bth_rep *rep, struct bt_native *out)
{
	const unsigned char *p = btn_in + sizeof *rep;
	uint64_t ip;
	int k;

	snprintf(out->note, sizeof out->note, "%s", rep->note);
	out->stop_us = rep->stop_us;
	out->nips = rep->nips;
	for (k = 0; k < rep->nips; k++) {
		memcpy(&ip, p, sizeof ip);
		out->ips[k] = (uintptr_t)ip;
		p += sizeof ip;
	}
	if (rep->npy < 0)
		return;
	out->py = malloc(sizeof *out->py * (size_t)(rep->npy + 1));
	if (out->py == NULL) {
		snprintf(out->note, sizeof out->note, "out of memory");
		return;
	}
	memcpy(out->py, p, sizeof *out->py * (size_t)rep->npy);
	out->npy = rep->npy;
}

/* Asks for threads [i, n) and takes the answers in order; returns where
 * to go on with another helper when this one is gone (n when done): the
 * thread it failed on is not tried again. */
static int
btn_capture_from(const long *tids, const uintptr_t *tstates, int i, int n,
    struct bt_native *out)
{
	const struct bth_rep *rep;
	int k, end = n - i > BTH_TARGETS_MAX ? i + BTH_TARGETS_MAX : n;

	btn_req.op = BTH_CAPTURE;
	btn_req.n = end - i;
	for (k = i; k < end; k++) {
		btn_req.t[k - i].tid = tids[k];
		btn_req.t[k - i].tstate = tstates[k];
	}
	if (btn_send(&btn_req, offsetof(struct bth_capture, t[end - i])) != 0)
		return i;
	for (k = i; k < end; k++) {
		rep = btn_recv();
		if (rep == NULL || rep->kind != BTH_RESULT ||
		    rep->tid != (int32_t)tids[k]) {
			btn_stop(1);
			snprintf(out[k].note, sizeof out[k].note,
			    "the unwinding helper stopped answering");
			return k + 1;
		}
		btn_take(rep, &out[k]);
		if (rep->flags & BTH_F_EXITING) {
			btn_stop(0);
			return k + 1;
		}
	}
	return end;
}

void
bt_native_capture(const long *tids, const uintptr_t *tstates, int n,
    const struct bth_layout *layout, struct bt_native *out)
{
	char *cause = NULL;
	int i = 0, starts = 0, k;

	pthread_mutex_lock(&btn.lock);
	for (k = 0; k < n; k++) {
		memset(&out[k], 0, sizeof out[k]);
		out[k].nips = -1;
		out[k].npy = -1;
		out[k].stop_us = -1;
	}
	while (i < n) {
		if (starts++ > BTN_RESPAWNS) {
			cause_set(&cause, "it stopped answering %d times",
			    BTN_RESPAWNS + 1);
			break;
		}
		if (btn_ready(layout, &cause) != 0)
			break;
		i = btn_capture_from(tids, tstates, i, n, out);
	}
	for (; i < n; i++)
		if (out[i].note[0] == '\0')
			snprintf(out[i].note, sizeof out[i].note,
			    "cannot start the unwinding helper: %s",
			    cause_str(cause));
	pthread_mutex_unlock(&btn.lock);
	if (cause != NULL)
		log_info("backtrace: %s", cause);
	free(cause);
}

void
bt_native_free(struct bt_native *out, int n)
{
	int i;

	for (i = 0; out != NULL && i < n; i++)
		free(out[i].py);
}

void
bt_native_after_fork(void)
{
	if (btn.fd >= 0)
		close(btn.fd);
	if (btn.pidfd >= 0)
		close(btn.pidfd);
	btn.fd = btn.pidfd = -1;
	btn.pid = 0;
	pthread_mutex_init(&btn.lock, NULL);
}
