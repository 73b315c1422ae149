/* injector.h - load a shared object into a running process with ptrace */
#ifndef INJECTOR_H
#define INJECTOR_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <sys/types.h>
#include <sys/user.h>

struct injector_stats {
	int attempts;      /* tries until the thread was at a safe point */
	double stopped_ms; /* total time the target was stopped */
	double total_ms;
};

/* inject.c */

/*
 * Load the shared object at so_path into process pid by making one of its
 * threads call dlopen(so_path, RTLD_NOW|RTLD_GLOBAL) (the dlopen of libc
 * 2.34+, else libdl's, else __libc_dlopen_mode). so_path is resolved by the
 * target, in its mount namespace and working directory. Returns 0, or -1
 * with *cause set to a malloc'd message naming the pid and the reason,
 * including the target's dlerror() text when dlopen returned NULL. st may be
 * NULL. Blocks the calling thread for at most a few seconds; must not be
 * called for the same pid from two threads at once.
 */
int injector_load(
    pid_t pid, const char *so_path, struct injector_stats *st, char **cause);

/*
 * Find the Python major.minor that pid runs (from a mapped libpython3.X, the
 * executable's name, or its Py_Version symbol) and, when Py_Version (3.11+)
 * can be read from the target, the full version ("3.11.2") in full; full is
 * set to "" when only major.minor is known. full may be NULL. Returns 0, or
 * -1 with *cause set ("pid N is not a python process").
 */
int injector_python_version(pid_t pid, int *major, int *minor, char *full,
    size_t fulllen, char **cause);

/* One line of /proc/PID/maps. */
enum inject_map_kind {
	INJECT_MAP_OTHER,
	INJECT_MAP_LIBC,
	INJECT_MAP_LDSO,
	INJECT_MAP_LIBDL,
};

struct inject_map {
	uint64_t start;
	uint64_t end;
	uint64_t offset;
	uint64_t inode;
	char perms[5];
	char *path;  /* owned; "" for anonymous mappings */
	int deleted; /* path had " (deleted)", now cut off */
	enum inject_map_kind kind;
};

/* All mappings of a process, in address order; owns its array. */
struct inject_maps {
	struct inject_map *v;
	size_t n;
};

void inject_cause(char **cause, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int inject_maps_read(pid_t pid, struct inject_maps *maps, char **cause);
void inject_maps_free(struct inject_maps *maps);
const struct inject_map *inject_maps_find(
    const struct inject_maps *maps, uint64_t addr);
double inject_now_ms(void);

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

int ptrace_seize(
    struct ptrace_thread *t, pid_t pid, pid_t tid, int memfd, char **cause);
int ptrace_stop(struct ptrace_thread *t, int timeout_ms, char **cause);
int ptrace_resume(struct ptrace_thread *t, char **cause);
int ptrace_save(struct ptrace_thread *t, char **cause);
int ptrace_restore(struct ptrace_thread *t, char **cause);
int ptrace_call(struct ptrace_thread *t, uint64_t func, const uint64_t *args,
    int nargs, uint64_t retaddr, uint64_t sp, int timeout_ms, uint64_t *ret,
    char **cause);
void ptrace_detach(struct ptrace_thread *t);
int ptrace_mem_read(int memfd, uint64_t addr, void *buf, size_t len);
int ptrace_mem_write(int memfd, uint64_t addr, const void *buf, size_t len);

/* safety.c */
int safety_check(const struct ptrace_thread *t, const struct inject_maps *maps,
    const char **why);

#endif
