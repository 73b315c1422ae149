/* The unwinding helper (probing-unwind): private interfaces between its
 * two files. It is single-threaded; everything here belongs to it. */
#ifndef PROBING_HELPER_H
#define PROBING_HELPER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/user.h>

/* unwind.c: remote unwinding of one stopped thread of the target. */
/* Sets up for target pid; 0, or -1 with errno. */
int unwind_init(pid_t pid);
/* Rereads the target's mappings; drops cached memory when they changed. */
void unwind_refresh(void);
/* Unwinds the stopped thread whose registers are regs into ips (at most
 * max); returns the count (0 when even the first frame is unknown). Starts
 * a new stop: memory that may change is read afresh from here on. */
int unwind_thread(const struct user_regs_struct *regs, uint64_t *ips, int max);
/* Copies n bytes at addr of the target into dst (through the cache of the
 * current stop); 0, or -1. */
int unwind_read(uint64_t addr, void *dst, size_t n);

#endif
