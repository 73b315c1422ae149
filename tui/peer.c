/* Who holds a pid's socket: the CLI trusts an agent only when the process
 * listening on @probing-PID is that pid (or a thread of it) running as its
 * user or root, since anyone may bind an abstract name first. The client
 * (client.c) calls peer_check before sending a byte. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "rundir.h"
#include "tui.h"

int
peer_check(int fd, pid_t pid, char **cause)
{
	struct ucred cred;
	socklen_t cl = sizeof cred;
	char path[64];
	struct stat sb;
	uid_t uid;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0) {
		cause_set(cause, "cannot check who holds @probing-%d: %s",
		    (int)pid, strerror(errno));
		return -1;
	}
	snprintf(
	    path, sizeof path, "/proc/%d/task/%d", (int)pid, (int)cred.pid);
	if (rundir_pid_uid(pid, &uid) == 0 &&
	    (cred.uid == uid || cred.uid == 0) && cred.pid > 0 &&
	    (cred.pid == pid || stat(path, &sb) == 0))
		return 0;
	cause_set(cause,
	    "@probing-%d is held by pid %d (uid %u), not by the target: "
	    "refusing",
	    (int)pid, (int)cred.pid, (unsigned)cred.uid);
	return -1;
}
