/* injector.h - load a shared object into a running process with ptrace */
#ifndef INJECTOR_H
#define INJECTOR_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <sys/types.h>
#include <sys/user.h>

/*
 * What one injection did, for `inject -v` and the benchmarks. how says which
 * thread made the call and how it was brought to a safe point ("thread 812:
 * stepped out of libc in 14 instructions").
 */
struct injector_stats {
	int attempts;   /* stops until a thread was at a safe point */
	int steps;      /* instructions single-stepped to get there */
	int errno_kept; /* the thread's errno was saved and put back */
	pid_t tid;      /* the thread that called dlopen */
	char how[128];
	double stopped_ms; /* total time the target was stopped */
	double total_ms;
};

#define INJECTOR_EPERM                                                    \
	"cannot attach to pid %d: operation not permitted (try as root, " \
	"grant CAP_SYS_PTRACE, or set kernel.yama.ptrace_scope=0)"

/*
 * Causes: a function that fails sets *cause once with cause_set (shared/
 * log.h) to a malloc'd message the caller owns; a caller that recovers, or
 * that replaces the message by a better one, frees it first. cause may be
 * NULL everywhere.
 */

/* inject.c */

/*
 * Load the shared object at so_path into process pid by making one of its
 * threads call dlopen(so_path, RTLD_NOW|RTLD_GLOBAL) (the dlopen of libc
 * 2.34+, else libdl's, else __libc_dlopen_mode). so_path is resolved by the
 * target, in its mount namespace and working directory. Returns 0, or -1
 * with *cause set to a malloc'd message naming the pid and the reason,
 * including the target's dlerror() text when dlopen returned NULL. st may be
 * NULL. Blocks the calling thread for at most a few seconds; must not be
 * called for the same pid from two threads at once. The thread that makes
 * the call gets its errno back as it was.
 */
int injector_load(
    pid_t pid, const char *so_path, struct injector_stats *st, char **cause);

/*
 * Check that pid can be injected now: it exists, has not exited, is not
 * stopped (state T) and nobody traces it. Returns 0 or -1 with *cause set.
 */
int injector_check(pid_t pid, char **cause);

/* Fail (-1 with *cause set) only when pid is stopped (state T). */
int injector_check_stopped(pid_t pid, char **cause);

/*
 * Whether pid already maps a file whose base name starts with prefix
 * ("libprobing-"): 1 with the mapped path copied into path, 0 when not,
 * -1 when its maps cannot be read.
 */
int injector_maps_file(pid_t pid, const char *prefix, char *path, size_t len);

/*
 * Find the Python major.minor that pid runs (from a mapped libpython3.X, the
 * executable's name, or its Py_Version symbol) and, when Py_Version (3.11+)
 * can be read from the target, the full version ("3.11.2") in full; full is
 * set to "" when only major.minor is known. full may be NULL. Returns 0, or
 * -1 with *cause set ("pid N is not a python process"; a free-threaded
 * build, which the agent cannot serve, is refused here too).
 */
int injector_python_version(pid_t pid, int *major, int *minor, char *full,
    size_t fulllen, char **cause);

/* maps.c */

/* What a mapped file is to the injector. */
enum maps_kind {
	MAPS_OTHER,
	MAPS_LIBC,
	MAPS_LDSO,
	MAPS_LIBDL,
};

/* One line of /proc/PID/maps. */
struct maps_entry {
	uint64_t start;
	uint64_t end;
	uint64_t offset;
	uint64_t inode;
	char perms[5];
	char *path;  /* owned; "" for anonymous mappings */
	int deleted; /* path had " (deleted)", now cut off */
	enum maps_kind kind;
};

/* All mappings of a process, in address order; owns its array. */
struct maps {
	struct maps_entry *v;
	size_t n;
};

int maps_read(pid_t pid, struct maps *maps, char **cause);
void maps_free(struct maps *maps);
const struct maps_entry *maps_find(const struct maps *maps, uint64_t addr);
const struct maps_entry *maps_first(
    const struct maps *maps, enum maps_kind kind);

/* elf.c */

/* A whole ELF file mapped read-only; owns the mapping. */
struct elf_file {
	const unsigned char *data;
	size_t size;
};

int elf_open(struct elf_file *ef, const char *path, char **cause);
void elf_close(struct elf_file *ef);
int elf_symbol(const struct elf_file *ef, const char *name, uint64_t *value);
int elf_first_load(
    const struct elf_file *ef, uint64_t *vaddr, uint64_t *offset);

/* ptrace.c */

/*
 * One seized thread of a target. Owned by the injector call that seized it;
 * memfd is borrowed. regs holds the registers read at the last stop (the
 * state restored at the end), xstate the extended FP state when saved.
 */
struct ptrace_thread {
	pid_t pid;
	pid_t tid;
	int memfd;
	int seized;
	int stopped;
	int in_signal_stop; /* the stop is a signal-delivery-stop */
	int stepped;        /* we single-stepped it: its step traps are ours */
	struct user_regs_struct regs;
	unsigned char *xstate;
	size_t xstate_len;
	siginfo_t *deferred; /* signals held back during our call; owned */
	int ndeferred;
	int deferred_cap;
	double stop_since_ms;
	double stopped_ms;
};

#define PTRACE_WAIT_TIMEOUT -2
#define PTRACE_STEP_SIGNAL  -3

int ptrace_tick_start(void);
void ptrace_tick_stop(void);
int ptrace_syscall_restart(struct user_regs_struct *r);

int ptrace_seize(
    struct ptrace_thread *t, pid_t pid, pid_t tid, int memfd, char **cause);
int ptrace_stop(struct ptrace_thread *t, int timeout_ms, char **cause);
int ptrace_resume(struct ptrace_thread *t, char **cause);
int ptrace_save(struct ptrace_thread *t, char **cause);
int ptrace_restore(struct ptrace_thread *t, char **cause);
int ptrace_step(struct ptrace_thread *t, int timeout_ms, char **cause);
int ptrace_call(struct ptrace_thread *t, uint64_t func, const uint64_t *args,
    int nargs, uint64_t retaddr, uint64_t sp, int timeout_ms, uint64_t *ret,
    char **cause);
void ptrace_detach(struct ptrace_thread *t);
int ptrace_mem_read(int memfd, uint64_t addr, void *buf, size_t len);
int ptrace_mem_write(int memfd, uint64_t addr, const void *buf, size_t len);

/* safety.c */

/* Where a stopped thread is, as far as calling dlopen goes. */
enum safety_verdict {
	SAFETY_OUTSIDE,   /* outside libc and the loader: safe */
	SAFETY_WAITING,   /* in, or about to enter, a waiting syscall: safe */
	SAFETY_INSIDE,    /* running libc or loader code: step it out */
	SAFETY_LOCK_WAIT, /* waiting for a libc lock: let it run */
};

/* How a thread was brought to a safe point. */
struct safety_result {
	enum safety_verdict verdict;
	int steps; /* instructions single-stepped */
	int timed_out;
	const char *why;  /* static; why it is not safe */
	const char *what; /* static; "libc" or "the dynamic loader" */
};

enum safety_verdict safety_check(const struct user_regs_struct *r, int memfd,
    const struct maps *maps, const char **why, const char **what);
int safety_step_out(struct ptrace_thread *t, const struct maps *maps,
    int max_steps, int max_ms, struct safety_result *res, char **cause);

#endif
