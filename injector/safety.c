/* safety.c - decide whether a stopped thread may call dlopen right now */

#include <string.h>
#include <sys/syscall.h>

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
safety_in_libc_data(const struct inject_maps *maps, uint64_t addr)
{
	const struct inject_map *m;
	size_t i;

	for (i = 0; i < maps->n; i++) {
		m = &maps->v[i];
		if (addr < m->start || addr >= m->end)
			continue;
		if (m->kind != INJECT_MAP_OTHER)
			return 1;
		if (m->path[0] == '\0' && i > 0 &&
		    maps->v[i - 1].kind != INJECT_MAP_OTHER &&
		    maps->v[i - 1].end == m->start)
			return 1;
		return 0;
	}
	return 0;
}

/*
 * Decide whether the stopped thread t may call dlopen: not inside the
 * dynamic loader, and not inside libc unless it sits in a waiting syscall
 * (a futex only when it is not on a libc lock). Returns 1 when safe, 0 with
 * *why set to a static reason when not.
 */
int
safety_check(const struct ptrace_thread *t, const struct inject_maps *maps,
    const char **why)
{
	const struct inject_map *m;
	unsigned char insn[2];
	long nr = (long)t->regs.orig_rax;

	/* Code mapped after the snapshot is neither libc nor the loader. */
	m = inject_maps_find(maps, t->regs.rip);
	if (m == NULL || m->kind == INJECT_MAP_OTHER)
		return 1;
	if (m->kind == INJECT_MAP_LDSO) {
		*why = "the thread is inside the dynamic loader";
		return 0;
	}
	if (nr < 0 || t->regs.rip < 2 ||
	    ptrace_mem_read(t->memfd, t->regs.rip - 2, insn, 2) < 0 ||
	    insn[0] != 0x0f || insn[1] != 0x05) {
		*why = "the thread is inside libc";
		return 0;
	}
	if (!safety_is_waiting(nr)) {
		*why =
		    "the thread is inside a libc syscall that may hold a lock";
		return 0;
	}
	if ((nr == SYS_futex || nr == SYS_restart_syscall) &&
	    safety_in_libc_data(maps, t->regs.rdi)) {
		*why = "the thread waits for a libc lock";
		return 0;
	}
	return 1;
}
