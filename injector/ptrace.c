/* ptrace.c - seize, stop, hijack and release one thread of a target */

#include <elf.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include "clock.h"
#include "log.h"
#include "injector.h"

#define PTRACE_XSTATE_MAX  (64 * 1024)
#define PTRACE_EFLAGS_TF   0x100
#define PTRACE_EFLAGS_DF   0x400
#define PTRACE_TICK_SIGNAL SIGURG /* ignored by default; ours is a no-op */
#define PTRACE_TICK_MS     2

/*
 * Syscalls the kernel ends with EINTR, not a restart, when a ptrace stop
 * interrupts them (see signal(7), "Interruption of system calls ... by
 * stop signals"). A tracer that stopped the thread restarts them itself.
 */
static const long ptrace_eintr_calls[] = {
	SYS_epoll_wait,
	SYS_epoll_pwait,
	SYS_epoll_pwait2,
	SYS_semop,
	SYS_semtimedop,
	SYS_rt_sigtimedwait,
	SYS_io_getevents,
	SYS_io_pgetevents,
	SYS_recvfrom,
	SYS_recvmsg,
	SYS_recvmmsg,
	SYS_sendto,
	SYS_sendmsg,
	SYS_accept,
	SYS_accept4,
};

/*
 * Undo the EINTR a ptrace stop gave a syscall that the kernel does not
 * restart by itself: r holds the registers of a thread stopped at the exit
 * of such a call with -EINTR; point it back at the syscall instruction with
 * the call number in rax, so it runs again when the thread resumes (with
 * its full timeout again, for the timed ones). Returns 1 when r was
 * changed (the caller writes it back with PTRACE_SETREGS), else 0. Needs
 * no state: any tracer that holds a stopped thread's registers may use it.
 */
int
ptrace_syscall_restart(struct user_regs_struct *r)
{
	long nr = (long)r->orig_rax;
	size_t i;

	if (nr < 0 || (long long)r->rax != -EINTR)
		return 0;
	for (i = 0;
	     i < sizeof ptrace_eintr_calls / sizeof ptrace_eintr_calls[0];
	     i++) {
		if (ptrace_eintr_calls[i] == nr) {
			r->rip -= 2; /* syscall and int $0x80 are 2 bytes */
			r->rax = r->orig_rax;
			return 1;
		}
	}
	return 0;
}

/* Wait status of a PTRACE_EVENT_STOP (interrupt or group-stop). */
static int
ptrace_is_event_stop(int status)
{
	return WIFSTOPPED(status) && (status >> 16) == PTRACE_EVENT_STOP;
}

/* Set the message for a thread that vanished. */
static void
ptrace_gone(struct ptrace_thread *t, char **cause)
{
	cause_set(cause, "pid %d exited during injection", (int)t->pid);
	t->seized = 0;
	t->stopped = 0;
}

/*
 * The tick that interrupts a blocking waitpid of the tracer thread to check
 * its deadline: a per-thread timer sending PTRACE_TICK_SIGNAL to that
 * thread alone, with a handler that does nothing (no SA_RESTART, so the
 * wait ends with EINTR). Only the thread that called ptrace_tick_start has
 * one; other callers of ptrace_wait poll.
 */
static _Thread_local timer_t ptrace_tick_timer;
static _Thread_local int ptrace_tick_ready;

/* The tick's handler: its only work is to interrupt the wait. */
static void
ptrace_tick_handler(int sig)
{
	(void)sig;
}

/*
 * Give the calling thread a tick and let PTRACE_TICK_SIGNAL through its
 * signal mask. Returns 0, or -1 when it cannot (then waits poll).
 */
int
ptrace_tick_start(void)
{
	struct sigaction sa;
	struct sigevent ev;
	sigset_t one;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = ptrace_tick_handler;
	sigemptyset(&sa.sa_mask);
	memset(&ev, 0, sizeof ev);
	ev.sigev_notify = SIGEV_THREAD_ID;
	ev.sigev_signo = PTRACE_TICK_SIGNAL;
	ev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
	if (sigaction(PTRACE_TICK_SIGNAL, &sa, NULL) < 0 ||
	    timer_create(CLOCK_MONOTONIC, &ev, &ptrace_tick_timer) < 0)
		return -1;
	sigemptyset(&one);
	sigaddset(&one, PTRACE_TICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &one, NULL);
	ptrace_tick_ready = 1;
	return 0;
}

/* Remove the calling thread's tick. */
void
ptrace_tick_stop(void)
{
	sigset_t one;

	if (!ptrace_tick_ready)
		return;
	sigemptyset(&one);
	sigaddset(&one, PTRACE_TICK_SIGNAL);
	pthread_sigmask(SIG_BLOCK, &one, NULL);
	timer_delete(ptrace_tick_timer);
	ptrace_tick_ready = 0;
}

/*
 * Start (on) or stop the tick: every PTRACE_TICK_MS while on, so a tick
 * that fires just before the wait begins is followed by another. Returns
 * 0, or -1 when the thread has no tick.
 */
static int
ptrace_tick_arm(int on)
{
	struct itimerspec its;

	if (!ptrace_tick_ready)
		return -1;
	memset(&its, 0, sizeof its);
	if (on) {
		its.it_value.tv_nsec = PTRACE_TICK_MS * 1000000L;
		its.it_interval = its.it_value;
	}
	return timer_settime(ptrace_tick_timer, 0, &its, NULL) == 0 ? 0 : -1;
}

/* Sleep for us microseconds. */
static void
ptrace_nap(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/*
 * Wait up to timeout_ms for the next stop of t. Returns 0 with *status set,
 * -1 with *cause set when the thread exited, or PTRACE_WAIT_TIMEOUT.
 */
static int
ptrace_wait(struct ptrace_thread *t, int timeout_ms, int *status, char **cause)
{
	double deadline = clock_ms() + timeout_ms;
	long nap = 20;
	int flags = WNOHANG, ticking = 0;
	pid_t r;

	for (;;) {
		r = waitpid(t->tid, status, __WALL | flags);
		if (r == t->tid) {
			if (WIFEXITED(*status) || WIFSIGNALED(*status)) {
				r = -1;
				ptrace_gone(t, cause);
			} else if (!WIFSTOPPED(*status)) {
				continue;
			}
			break;
		}
		if (r < 0 && errno != EINTR) {
			ptrace_gone(t, cause);
			break;
		}
		if (clock_ms() > deadline) {
			r = PTRACE_WAIT_TIMEOUT;
			break;
		}
		/* Block in waitpid, woken by the tick to check the deadline:
		 * a stop wakes us at once, where a nap would oversleep it by
		 * a whole time slice on a loaded machine. */
		if (!ticking && ptrace_tick_arm(1) == 0) {
			ticking = 1;
			flags = 0;
			continue;
		}
		if (!ticking) {
			ptrace_nap(nap);
			if (nap < 1000)
				nap *= 2;
		}
	}
	if (ticking)
		ptrace_tick_arm(0);
	return r < 0 ? r : 0;
}

/*
 * Set the message for a failed ptrace request, telling exits apart.
 * Returns -1 with errno kept.
 */
static int
ptrace_fail(struct ptrace_thread *t, const char *what, char **cause)
{
	int saved = errno;

	if (saved == ESRCH && kill(t->pid, 0) < 0)
		ptrace_gone(t, cause);
	else if (saved == ESRCH)
		cause_set(cause, "pid %d: thread %d vanished during injection",
		    (int)t->pid, (int)t->tid);
	else
		cause_set(cause, "pid %d: %s failed: %s", (int)t->pid, what,
		    strerror(saved));
	errno = saved;
	return -1;
}

/*
 * Whether si is the trap of a single step we asked for (from the debug
 * exception, or queued at the exit of a syscall stepped over): never the
 * application's to see.
 */
static int
ptrace_is_step_trap(const struct ptrace_thread *t, const siginfo_t *si)
{
	return t->stepped && si->si_signo == SIGTRAP &&
	    (si->si_code == TRAP_BRKPT || si->si_code == TRAP_TRACE);
}

/*
 * Whether thread t has a SIGTRAP queued: a step over a syscall queues one
 * at the syscall's exit, also when a stop interrupted the call.
 */
static int
ptrace_trap_pending(const struct ptrace_thread *t)
{
	char fn[64], line[256];
	unsigned long long mask = 0;
	FILE *f;

	snprintf(
	    fn, sizeof fn, "/proc/%d/task/%d/status", (int)t->pid, (int)t->tid);
	f = fopen(fn, "re");
	if (f == NULL)
		return 0;
	while (fgets(line, sizeof line, f) != NULL) {
		if (strncmp(line, "SigPnd:", 7) == 0)
			mask = strtoull(line + 7, NULL, 16);
	}
	fclose(f);
	return (mask & (1ULL << (SIGTRAP - 1))) != 0;
}

/* Remember a signal that arrived while the thread runs our call. */
static void
ptrace_defer(struct ptrace_thread *t, const siginfo_t *si)
{
	int i;

	for (i = 0; i < t->ndeferred; i++) {
		/* Standard signals coalesce anyway. */
		if (t->deferred[i].si_signo == si->si_signo &&
		    si->si_signo < SIGRTMIN)
			return;
	}
	if (t->ndeferred == t->deferred_cap) {
		int cap = t->deferred_cap ? t->deferred_cap * 2 : 16;
		siginfo_t *grown =
		    realloc(t->deferred, (size_t)cap * sizeof *grown);

		if (grown == NULL)
			return; /* out of memory: this one is lost */
		t->deferred = grown;
		t->deferred_cap = cap;
	}
	t->deferred[t->ndeferred++] = *si;
}

/*
 * Read the registers of the stopped thread into t->regs, restarting a call
 * our stop ended with EINTR. Returns 0 or -1.
 */
static int
ptrace_read_regs(struct ptrace_thread *t, char **cause)
{
	if (ptrace(PTRACE_GETREGS, t->tid, NULL, &t->regs) < 0)
		return ptrace_fail(t, "PTRACE_GETREGS", cause);
	if (ptrace_syscall_restart(&t->regs) &&
	    ptrace(PTRACE_SETREGS, t->tid, NULL, &t->regs) < 0)
		return ptrace_fail(t, "PTRACE_SETREGS", cause);
	return 0;
}

/*
 * Seize thread tid of pid without stopping it. Returns 0, or -1 with the
 * errno of PTRACE_SEIZE kept and *cause set.
 */
int
ptrace_seize(
    struct ptrace_thread *t, pid_t pid, pid_t tid, int memfd, char **cause)
{
	int saved;

	t->pid = pid;
	t->tid = tid;
	t->memfd = memfd;
	t->seized = 0;
	t->stopped = 0;
	t->in_signal_stop = 0;
	t->deferred = NULL;
	t->ndeferred = t->deferred_cap = 0;
	if (ptrace(PTRACE_SEIZE, tid, NULL, NULL) < 0) {
		saved = errno;
		if (saved == EPERM)
			cause_set(cause,
			    "cannot attach to pid %d: operation not permitted "
			    "(try as root, grant CAP_SYS_PTRACE, or set "
			    "kernel.yama.ptrace_scope=0)",
			    (int)pid);
		else if (saved == ESRCH)
			cause_set(cause, "no such process: %d", (int)pid);
		else
			cause_set(cause, "cannot attach to pid %d: %s",
			    (int)pid, strerror(saved));
		errno = saved;
		return -1;
	}
	t->seized = 1;
	return 0;
}

/*
 * Interrupt the running thread and wait until it is stopped, passing
 * signals that arrive meanwhile straight through. Reads the registers into
 * t->regs. Returns 0 or -1.
 */
int
ptrace_stop(struct ptrace_thread *t, int timeout_ms, char **cause)
{
	siginfo_t si;
	int status, r;

	if (ptrace(PTRACE_INTERRUPT, t->tid, NULL, NULL) < 0)
		return ptrace_fail(t, "PTRACE_INTERRUPT", cause);
	for (;;) {
		r = ptrace_wait(t, timeout_ms, &status, cause);
		if (r == PTRACE_WAIT_TIMEOUT) {
			cause_set(cause,
			    "pid %d: thread %d did not stop within %d ms (in "
			    "uninterruptible sleep?)",
			    (int)t->pid, (int)t->tid, timeout_ms);
			errno = ETIMEDOUT;
			return -1;
		}
		if (r < 0)
			return -1;
		if (ptrace_is_event_stop(status))
			break;
		/* A signal-delivery-stop: let the signal through now. */
		if (ptrace(PTRACE_GETSIGINFO, t->tid, NULL, &si) < 0)
			return ptrace_fail(t, "PTRACE_GETSIGINFO", cause);
		if (ptrace(PTRACE_CONT, t->tid, NULL,
			ptrace_is_step_trap(t, &si)
			    ? NULL
			    : (void *)(long)WSTOPSIG(status)) < 0)
			return ptrace_fail(t, "PTRACE_CONT", cause);
	}
	t->stopped = 1;
	t->in_signal_stop = 0;
	t->stop_since_ms = clock_ms();
	return ptrace_read_regs(t, cause);
}

/* Let the stopped thread run again. Returns 0 or -1. */
int
ptrace_resume(struct ptrace_thread *t, char **cause)
{
	if (ptrace(PTRACE_CONT, t->tid, NULL, NULL) < 0)
		return ptrace_fail(t, "PTRACE_CONT", cause);
	t->stopped = 0;
	t->stopped_ms += clock_ms() - t->stop_since_ms;
	return 0;
}

/* Save the extended FP state of the stopped thread. Returns 0 or -1. */
int
ptrace_save(struct ptrace_thread *t, char **cause)
{
	struct iovec iov;

	free(t->xstate);
	t->xstate = malloc(PTRACE_XSTATE_MAX);
	if (t->xstate == NULL) {
		cause_set(cause, "pid %d: out of memory", (int)t->pid);
		return -1;
	}
	iov.iov_base = t->xstate;
	iov.iov_len = PTRACE_XSTATE_MAX;
	if (ptrace(PTRACE_GETREGSET, t->tid, (void *)NT_X86_XSTATE, &iov) < 0)
		return ptrace_fail(t, "PTRACE_GETREGSET", cause);
	t->xstate_len = iov.iov_len;
	return 0;
}

/*
 * Put back the registers and extended FP state saved at the stop, exactly.
 * Returns 0 or -1.
 */
int
ptrace_restore(struct ptrace_thread *t, char **cause)
{
	struct iovec iov;

	if (ptrace(PTRACE_SETREGS, t->tid, NULL, &t->regs) < 0)
		return ptrace_fail(t, "PTRACE_SETREGS", cause);
	if (t->xstate == NULL)
		return 0;
	iov.iov_base = t->xstate;
	iov.iov_len = t->xstate_len;
	if (ptrace(PTRACE_SETREGSET, t->tid, (void *)NT_X86_XSTATE, &iov) < 0)
		return ptrace_fail(t, "PTRACE_SETREGSET", cause);
	return 0;
}

/* Whether a signal-delivery-stop is a fault raised by the code itself. */
static int
ptrace_is_fault(const siginfo_t *si)
{
	switch (si->si_signo) {
	case SIGSEGV:
	case SIGBUS:
	case SIGILL:
	case SIGFPE:
	case SIGTRAP:
		return si->si_code > 0;
	default:
		return 0;
	}
}

/*
 * After a watchdog timeout, take the thread back wherever it is, so the
 * caller can restore it. Returns 0 or -1.
 */
static int
ptrace_reclaim(struct ptrace_thread *t, char **cause)
{
	siginfo_t si;
	int status, r;

	if (ptrace(PTRACE_INTERRUPT, t->tid, NULL, NULL) < 0)
		return ptrace_fail(t, "PTRACE_INTERRUPT", cause);
	for (;;) {
		r = ptrace_wait(t, 1000, &status, cause);
		if (r == PTRACE_WAIT_TIMEOUT) {
			cause_set(cause, "pid %d: thread %d did not stop",
			    (int)t->pid, (int)t->tid);
			return -1;
		}
		if (r < 0)
			return -1;
		if (ptrace_is_event_stop(status)) {
			t->in_signal_stop = 0;
			return 0;
		}
		if (ptrace(PTRACE_GETSIGINFO, t->tid, NULL, &si) < 0)
			return ptrace_fail(t, "PTRACE_GETSIGINFO", cause);
		if (!ptrace_is_fault(&si))
			ptrace_defer(t, &si);
		t->in_signal_stop = 1;
		return 0;
	}
}

/*
 * After a step was interrupted inside a syscall, take the trap the step
 * queued at the syscall's exit: continue the thread from its interrupt
 * stop into the signal-delivery-stop of that trap (it runs no code of its
 * own in between) and stay there, so the trap is never delivered. Returns
 * 0 or -1.
 */
static int
ptrace_drain_trap(struct ptrace_thread *t, char **cause)
{
	siginfo_t si;
	int status, r;

	while (ptrace_trap_pending(t)) {
		if (ptrace(PTRACE_CONT, t->tid, NULL, NULL) < 0)
			return ptrace_fail(t, "PTRACE_CONT", cause);
		r = ptrace_wait(t, 1000, &status, cause);
		if (r == PTRACE_WAIT_TIMEOUT)
			return ptrace_reclaim(t, cause);
		if (r < 0)
			return -1;
		t->in_signal_stop = !ptrace_is_event_stop(status);
		if (!t->in_signal_stop)
			continue;
		if (ptrace(PTRACE_GETSIGINFO, t->tid, NULL, &si) < 0)
			return ptrace_fail(t, "PTRACE_GETSIGINFO", cause);
		if (ptrace_is_step_trap(t, &si))
			return 0;
		if (!ptrace_is_fault(&si))
			ptrace_defer(t, &si);
	}
	return 0;
}

/*
 * Let the stopped thread run one instruction and stop again, with t->regs
 * read afresh. Signals that arrive meanwhile are deferred for detach, a
 * group-stop is stepped through. Returns 0; PTRACE_WAIT_TIMEOUT when the
 * instruction did not finish within timeout_ms (it entered a blocking
 * syscall) and the thread was interrupted there instead; PTRACE_STEP_SIGNAL
 * when the instruction faulted (the thread is left before it: resuming it
 * faults again, delivering the signal); -1 with *cause set.
 */
int
ptrace_step(struct ptrace_thread *t, int timeout_ms, char **cause)
{
	double deadline = clock_ms() + timeout_ms;
	siginfo_t si;
	int status, w, left;

	if (ptrace(PTRACE_SINGLESTEP, t->tid, NULL, NULL) < 0)
		return ptrace_fail(t, "PTRACE_SINGLESTEP", cause);
	t->stopped = 0;
	t->stepped = 1;
	for (;;) {
		left = (int)(deadline - clock_ms());
		w = ptrace_wait(t, left > 0 ? left : 0, &status, cause);
		if (w == PTRACE_WAIT_TIMEOUT) {
			if (ptrace_reclaim(t, cause) < 0 ||
			    ptrace_drain_trap(t, cause) < 0)
				return -1;
			t->stopped = 1;
			if (ptrace_read_regs(t, cause) < 0)
				return -1;
			return PTRACE_WAIT_TIMEOUT;
		}
		if (w < 0)
			return -1;
		if (ptrace_is_event_stop(status)) {
			if (ptrace(PTRACE_SINGLESTEP, t->tid, NULL, NULL) < 0)
				return ptrace_fail(
				    t, "PTRACE_SINGLESTEP", cause);
			continue;
		}
		if (ptrace(PTRACE_GETSIGINFO, t->tid, NULL, &si) < 0)
			return ptrace_fail(t, "PTRACE_GETSIGINFO", cause);
		if (si.si_signo == SIGTRAP && si.si_code > 0) {
			t->stopped = 1;
			t->in_signal_stop = 1;
			if (ptrace(PTRACE_GETREGS, t->tid, NULL, &t->regs) < 0)
				return ptrace_fail(t, "PTRACE_GETREGS", cause);
			return 0;
		}
		if (ptrace_is_fault(&si)) {
			t->stopped = 1;
			t->in_signal_stop = 1;
			return PTRACE_STEP_SIGNAL;
		}
		ptrace_defer(t, &si);
		if (ptrace(PTRACE_SINGLESTEP, t->tid, NULL, NULL) < 0)
			return ptrace_fail(t, "PTRACE_SINGLESTEP", cause);
	}
}

/*
 * Make the stopped thread call func(args...) on a stack below sp with
 * retaddr (an int3 byte) as return address, and wait up to timeout_ms for
 * the call to trap back. The syscall the thread was in is kept from
 * restarting into the call (orig_rax = -1); t->regs is left untouched for
 * ptrace_restore. Signals arriving meanwhile are deferred for detach.
 * Returns 0 with *ret = rax, or -1 with *cause set; after a fault or a
 * timeout the thread is left stopped for the caller to restore.
 */
int
ptrace_call(struct ptrace_thread *t, uint64_t func, const uint64_t *args,
    int nargs, uint64_t retaddr, uint64_t sp, int timeout_ms, uint64_t *ret,
    char **cause)
{
	struct user_regs_struct r = t->regs;
	double deadline;
	siginfo_t si;
	int status, w;

	sp &= ~(uint64_t)15;
	sp -= 8;
	if (ptrace_mem_write(t->memfd, sp, &retaddr, sizeof retaddr) < 0) {
		cause_set(cause, "pid %d: cannot write to its stack: %s",
		    (int)t->pid, strerror(errno));
		return -1;
	}
	r.rip = func;
	r.rsp = sp;
	r.rax = 0;
	r.orig_rax = (unsigned long long)-1;
	r.eflags &= ~(unsigned long long)(PTRACE_EFLAGS_DF | PTRACE_EFLAGS_TF);
	r.rdi = nargs > 0 ? args[0] : 0;
	r.rsi = nargs > 1 ? args[1] : 0;
	r.rdx = nargs > 2 ? args[2] : 0;
	r.rcx = nargs > 3 ? args[3] : 0;
	if (ptrace(PTRACE_SETREGS, t->tid, NULL, &r) < 0)
		return ptrace_fail(t, "PTRACE_SETREGS", cause);
	if (ptrace(PTRACE_CONT, t->tid, NULL, NULL) < 0)
		return ptrace_fail(t, "PTRACE_CONT", cause);
	t->stopped = 0;
	deadline = clock_ms() + timeout_ms;
	for (;;) {
		int left = (int)(deadline - clock_ms());

		w = ptrace_wait(t, left > 0 ? left : 0, &status, cause);
		if (w == PTRACE_WAIT_TIMEOUT) {
			if (ptrace_reclaim(t, cause) < 0)
				return -1;
			t->stopped = 1;
			cause_set(cause,
			    "pid %d: the call into the target did not return "
			    "within %d ms; abandoned it and restored the "
			    "thread "
			    "(the target may be left holding loader locks)",
			    (int)t->pid, timeout_ms);
			return -1;
		}
		if (w < 0)
			return -1;
		if (ptrace_is_event_stop(status)) {
			/* Group-stop: finish the call first. */
			if (ptrace(PTRACE_CONT, t->tid, NULL, NULL) < 0)
				return ptrace_fail(t, "PTRACE_CONT", cause);
			continue;
		}
		if (ptrace(PTRACE_GETSIGINFO, t->tid, NULL, &si) < 0)
			return ptrace_fail(t, "PTRACE_GETSIGINFO", cause);
		if (si.si_signo == SIGTRAP) {
			if (ptrace(PTRACE_GETREGS, t->tid, NULL, &r) < 0)
				return ptrace_fail(t, "PTRACE_GETREGS", cause);
			if (r.rip == retaddr + 1) {
				t->stopped = 1;
				t->in_signal_stop = 1;
				*ret = r.rax;
				return 0;
			}
		}
		if (ptrace_is_fault(&si)) {
			t->stopped = 1;
			t->in_signal_stop = 1;
			cause_set(cause,
			    "pid %d: the call into the target faulted with %s "
			    "at 0x%llx; restored the thread",
			    (int)t->pid, strsignal(si.si_signo),
			    (unsigned long long)r.rip);
			return -1;
		}
		if (!ptrace_is_step_trap(t, &si))
			ptrace_defer(t, &si);
		if (ptrace(PTRACE_CONT, t->tid, NULL, NULL) < 0)
			return ptrace_fail(t, "PTRACE_CONT", cause);
	}
}

/*
 * Let the thread go. The first deferred signal is delivered by the detach
 * itself, with its siginfo, when the thread sits in a signal-delivery-stop;
 * the others are sent again with tgkill. A thread that is not seized is a
 * no-op.
 */
void
ptrace_detach(struct ptrace_thread *t)
{
	long sig = 0;
	int i = 0;

	if (!t->seized)
		goto out;
	/* A step trap left queued would kill the thread once we are gone. */
	if (t->stepped && t->stopped && ptrace_drain_trap(t, NULL) < 0)
		goto out;
	if (t->stopped)
		t->stopped_ms += clock_ms() - t->stop_since_ms;
	if (t->ndeferred > 0 && t->in_signal_stop &&
	    ptrace(PTRACE_SETSIGINFO, t->tid, NULL, &t->deferred[0]) == 0) {
		sig = t->deferred[0].si_signo;
		i = 1;
	}
	for (; i < t->ndeferred; i++)
		syscall(SYS_tgkill, t->pid, t->tid, t->deferred[i].si_signo);
	ptrace(PTRACE_DETACH, t->tid, NULL, (void *)sig);
out:
	free(t->deferred);
	t->deferred = NULL;
	t->deferred_cap = 0;
	t->ndeferred = 0;
	t->seized = 0;
	t->stopped = 0;
	free(t->xstate);
	t->xstate = NULL;
	t->xstate_len = 0;
}

/* Read len bytes of target memory at addr. Returns 0 or -1. */
int
ptrace_mem_read(int memfd, uint64_t addr, void *buf, size_t len)
{
	ssize_t n;

	n = pread(memfd, buf, len, (off_t)addr);
	if (n < 0)
		return -1;
	if ((size_t)n != len) {
		errno = EIO;
		return -1;
	}
	return 0;
}

/* Write len bytes to target memory at addr. Returns 0 or -1. */
int
ptrace_mem_write(int memfd, uint64_t addr, const void *buf, size_t len)
{
	ssize_t n;

	n = pwrite(memfd, buf, len, (off_t)addr);
	if (n < 0)
		return -1;
	if ((size_t)n != len) {
		errno = EIO;
		return -1;
	}
	return 0;
}
