/* safety.c - decide whether a stopped thread may call dlopen right now */

#include <string.h>
#include <sys/syscall.h>

#include "clock.h"
#include "injector.h"

/*
 * Syscalls a thread may sit in for long without holding a libc lock: the
 * waits of sleeping, I/O-blocked and lock-waiting threads.
 */
static const long safety_waiting[] = {
	SYS_read,
	SYS_write,
	SYS_pread64,
	SYS_readv,
	SYS_writev,
	SYS_preadv,
	SYS_poll,
	SYS_ppoll,
	SYS_select,
	SYS_pselect6,
	SYS_epoll_wait,
	SYS_epoll_pwait,
	SYS_epoll_pwait2,
	SYS_pause,
	SYS_nanosleep,
	SYS_clock_nanosleep,
	SYS_restart_syscall,
	SYS_futex,
	SYS_wait4,
	SYS_waitid,
	SYS_accept,
	SYS_accept4,
	SYS_connect,
	SYS_recvfrom,
	SYS_recvmsg,
	SYS_recvmmsg,
	SYS_sendto,
	SYS_sendmsg,
	SYS_rt_sigsuspend,
	SYS_rt_sigtimedwait,
	SYS_io_getevents,
	SYS_semtimedop,
	SYS_msgrcv,
	SYS_mq_timedreceive,
	SYS_flock,
};

/* Whether nr is one of the waiting syscalls. */
static int
safety_is_waiting(long nr)
{
	size_t i;

	for (i = 0; i < sizeof(safety_waiting) / sizeof(safety_waiting[0]);
	     i++) {
		if (safety_waiting[i] == nr)
			return 1;
	}
	return 0;
}

/*
 * Whether addr lies in the image of libc or the dynamic loader, including
 * the anonymous mapping that carries on a .bss past the file. A futex there
 * is a libc lock (malloc arena, stdio list, loader lock).
 */
static int
safety_in_libc_data(const struct maps *maps, uint64_t addr)
{
	const struct maps_entry *m;
	size_t i;

	for (i = 0; i < maps->n; i++) {
		m = &maps->v[i];
		if (addr < m->start || addr >= m->end)
			continue;
		if (m->kind != MAPS_OTHER)
			return 1;
		if (m->path[0] == '\0' && i > 0 &&
		    maps->v[i - 1].kind != MAPS_OTHER &&
		    maps->v[i - 1].end == m->start)
			return 1;
		return 0;
	}
	return 0;
}

/* Whether the two bytes at addr are a syscall instruction. */
static int
safety_is_syscall_insn(int memfd, uint64_t addr)
{
	unsigned char insn[2];

	return addr != 0 && ptrace_mem_read(memfd, addr, insn, 2) == 0 &&
	    insn[0] == 0x0f && insn[1] == 0x05;
}

/*
 * Say where the thread stopped with registers r is: outside libc and the
 * loader; in, at the exit of, or at the instruction of a waiting syscall
 * (a futex only when it is not on a libc lock); waiting for a libc lock;
 * or running libc or loader code, which may hold a lock. *why gets a
 * static reason when the answer is not safe, *what names the object the
 * thread is in ("libc", "the dynamic loader").
 */
enum safety_verdict
safety_check(const struct user_regs_struct *r, int memfd,
    const struct maps *maps, const char **why, const char **what)
{
	const struct maps_entry *m;
	long nr = -1;

	/* Code mapped after the snapshot is neither libc nor the loader. */
	m = maps_find(maps, r->rip);
	*what = "libc";
	if (m == NULL || m->kind == MAPS_OTHER)
		return SAFETY_OUTSIDE;
	if (m->kind == MAPS_LDSO) {
		*what = "the dynamic loader";
		*why = "the thread is inside the dynamic loader";
		return SAFETY_INSIDE;
	}
	if ((long)r->orig_rax >= 0 && r->rip >= 2 &&
	    safety_is_syscall_insn(memfd, r->rip - 2))
		nr = (long)r->orig_rax; /* in the call or at its exit */
	else if (safety_is_syscall_insn(memfd, r->rip))
		nr = (long)r->rax; /* about to make the call */
	if (nr < 0) {
		*why = "the thread is inside libc";
		return SAFETY_INSIDE;
	}
	if (!safety_is_waiting(nr)) {
		*why =
		    "the thread is inside a libc syscall that may hold a lock";
		return SAFETY_INSIDE;
	}
	if ((nr == SYS_futex || nr == SYS_restart_syscall) &&
	    safety_in_libc_data(maps, r->rdi)) {
		*why = "the thread waits for a libc lock";
		return SAFETY_LOCK_WAIT;
	}
	return SAFETY_WAITING;
}

/*
 * Move the stopped thread t out of libc and the loader: single-step it
 * until its pc is outside both or at a waiting syscall, at most max_steps
 * instructions and max_ms. An instruction that blocks (a syscall) is
 * interrupted after the rest of max_ms and judged where it stopped. Fills
 * res (verdict, steps, why). Returns 0 with the thread stopped, whatever
 * the verdict, or -1 with *cause set.
 */
int
safety_step_out(struct ptrace_thread *t, const struct maps *maps, int max_steps,
    int max_ms, struct safety_result *res, char **cause)
{
	double deadline = clock_ms() + max_ms;
	const char *what;
	int rc, left;

	res->steps = 0;
	res->timed_out = 0;
	res->verdict =
	    safety_check(&t->regs, t->memfd, maps, &res->why, &res->what);
	while (res->verdict == SAFETY_INSIDE) {
		left = (int)(deadline - clock_ms());
		if (res->steps >= max_steps || left <= 0) {
			res->timed_out = 1;
			return 0;
		}
		rc = ptrace_step(t, left, cause);
		if (rc == -1)
			return -1;
		if (rc == PTRACE_STEP_SIGNAL) {
			res->why = "the thread faulted inside libc";
			return 0;
		}
		res->steps++;
		res->verdict =
		    safety_check(&t->regs, t->memfd, maps, &res->why, &what);
		if (rc == PTRACE_WAIT_TIMEOUT) {
			res->timed_out = 1;
			return 0;
		}
	}
	return 0;
}
