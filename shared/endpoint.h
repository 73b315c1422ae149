/* Endpoint strings: a pid, host:port, or a comma-separated list of them. */
#ifndef PROBING_ENDPOINT_H
#define PROBING_ENDPOINT_H

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

enum endpoint_kind { ENDPOINT_PID, ENDPOINT_TCP };

struct endpoint {
	enum endpoint_kind kind;
	pid_t pid;      /* ENDPOINT_PID */
	char host[256]; /* ENDPOINT_TCP */
	int port;
	char name[300]; /* as the user should see it */
};

/* Parses one endpoint; returns 0 or -1 with *cause set. */
int endpoint_parse(const char *text, struct endpoint *out, char **cause);
/* Parses a comma-separated list into a malloc'd array (*out, *n). */
int endpoint_parse_list(
    const char *text, struct endpoint **out, int *n, char **cause);
/* Writes the abstract unix socket name of pid (without the leading NUL). */
void endpoint_socket_name(pid_t pid, char *buf, size_t len);
/* Fills sun with pid's abstract socket address; returns its length. */
socklen_t endpoint_socket_addr(pid_t pid, struct sockaddr_un *sun);

#endif
