/* The per-user directory for the agent's files (log, init settings):
 * $XDG_RUNTIME_DIR/probing when that is a safe directory of the user,
 * else /tmp/probing-UID, mode 0700, checked before every use. */
#ifndef PROBING_RUNDIR_H
#define PROBING_RUNDIR_H

#include <stddef.h>
#include <sys/types.h>

/* Writes uid's directory into buf: root is prefixed to every path ("" for
 * this process's view, "/proc/PID/root" for a target's), xdg is that
 * process's $XDG_RUNTIME_DIR or NULL. It is used only when it is a real
 * directory owned by uid and writable by no one else. */
void rundir_path(
    const char *root, uid_t uid, const char *xdg, char *buf, size_t len);
/* Creates path (when create; owned by uid, mode 0700) and checks it: a
 * real directory, not a symbolic link, owned by uid, writable by neither
 * group nor others. Returns an O_DIRECTORY fd, or -1 with *cause. */
int rundir_open(const char *path, uid_t uid, int create, char **cause);
/* Opens name in dir without following a link or blocking on a FIFO, and
 * checks the file is regular, has one link and belongs to uid (or root
 * when root_ok). flags: O_RDONLY, or O_WRONLY|O_APPEND (created 0600,
 * O_EXCL when new). Returns the fd (O_CLOEXEC, blocking again) or -1 with
 * *cause. */
int rundir_open_file(int dir, const char *path_for_errors, const char *name,
    int flags, uid_t uid, int root_ok, char **cause);
/* The effective uid of pid; 0 or -1. */
int rundir_pid_uid(pid_t pid, uid_t *uid);
/* The directory of pid's user as the CLI sees it (through /proc/PID/root),
 * and that user's uid; 0 or -1 with *cause. */
int rundir_of_pid(pid_t pid, char *buf, size_t len, uid_t *uid, char **cause);
/* Removes PID.log and PID.init files of processes that no longer exist. */
void rundir_clean(int dir);

#endif
