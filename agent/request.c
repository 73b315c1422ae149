/* The request the calling thread serves: its connection (to tell when the
 * client went away) and how long its work may take. The server sets the
 * first, the store the second for the query it runs; evals, queries and
 * tables below them read both here instead of calling back up. */
#include <poll.h>

#include "agent.h"
#include "proto.h"

static _Thread_local int request_fd = -1;
static _Thread_local int request_ms = PROTO_DEFAULT_GIL_MS;

void
request_begin(int fd, int timeout_ms)
{
	request_fd = fd;
	request_ms = timeout_ms;
}

void
request_end(void)
{
	request_fd = -1;
	request_ms = PROTO_DEFAULT_GIL_MS;
}

void
request_set_timeout(int timeout_ms)
{
	request_ms = timeout_ms;
}

int
request_timeout_ms(void)
{
	return request_ms;
}

int
request_gone(void)
{
	struct pollfd pfd = { request_fd, POLLRDHUP, 0 };

	if (request_fd < 0 || poll(&pfd, 1, 0) != 1)
		return 0;
	return (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}
