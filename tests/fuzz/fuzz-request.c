/* libFuzzer harness: raw bytes sent to the agent's real HTTP server
 * (agent/server.c on libevent) over its unix socket. The store and
 * Python are replaced by stand-ins; routing, peer checks, JSON bodies and
 * config parsing are the real code. */
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent.h"
#include "endpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

pid_t agent_pid;

const char *
agent_python_version(void)
{
	return "3.11.0";
}

json_t *
store_query(const char *sql, int timeout_ms, int *status, char **cause)
{
	(void)timeout_ms;
	(void)status;
	if (strstr(sql, "fail") != NULL) {
		*cause = strdup("no such table: fail");
		return NULL;
	}
	return json_pack("{s:[s], s:[s], s:[[s]]}", "columns", "sql", "types",
	    "TEXT", "rows", sql);
}

json_t *
eval_run(const char *code, int timeout_ms, int *status, char **cause)
{
	(void)timeout_ms;
	(void)status;
	(void)cause;
	return json_pack("{s:s, s:n}", "output", code, "error");
}

void
identity_read(struct identity *id, int gil_ms)
{
	(void)gil_ms;
	memset(id, 0, sizeof *id);
}

json_t *
identity_json(const struct identity *id)
{
	(void)id;
	return json_pack("{s:i}", "rank", 0);
}

json_t *
jobstore_members(const struct identity *id, int timeout_ms, char **cause)
{
	(void)id;
	(void)timeout_ms;
	(void)cause;
	return json_array();
}

json_t *
metrics_run(json_t *body, int timeout_ms, int *status, char **cause)
{
	(void)body;
	(void)timeout_ms;
	(void)status;
	(void)cause;
	return json_string("probing_up 1\n");
}

json_t *
eval_list(void)
{
	return json_pack("{s:[], s:[], s:[]}", "columns", "types", "rows");
}

json_t *
eval_complete(const char *text, int timeout_ms, char **cause)
{
	(void)timeout_ms;
	(void)cause;
	return json_pack("{s:[s]}", "matches", text);
}

json_t *
eval_start(const char *code, int final, int timeout_ms, char **cause)
{
	(void) final;
	(void)timeout_ms;
	(void)cause;
	return strcmp(code, "more") == 0 ? json_pack("{s:b}", "more", 1)
					 : json_pack("{s:i}", "id", 1);
}

json_t *
eval_wait(long id, int wait_ms, char **cause)
{
	(void)wait_ms;
	if (id != 1) {
		*cause = strdup("no running statement");
		return NULL;
	}
	return json_pack("{s:b, s:s, s:n, s:b}", "done", 1, "output", "",
	    "error", "exit", 0);
}

json_t *
eval_interrupt(long id, int timeout_ms, char **cause)
{
	(void)timeout_ms;
	(void)cause;
	return json_pack("{s:b}", "interrupted", id == 1);
}

/* Sends data on a fresh connection and reads until the server closes. */
static void
fuzz_send(const uint8_t *data, size_t size)
{
	struct sockaddr_un sun;
	struct pollfd pfd;
	char buf[65536];
	socklen_t sl;
	int fd;

	sl = endpoint_socket_addr(agent_pid, &sun);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sl) != 0)
		abort();
	if (size > 0 && send(fd, data, size, MSG_NOSIGNAL) < 0) {
		close(fd);
		return;
	}
	shutdown(fd, SHUT_WR);
	pfd.fd = fd;
	pfd.events = POLLIN;
	while (poll(&pfd, 1, 5000) == 1 && read(fd, buf, sizeof buf) > 0)
		;
	close(fd);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int started;
	char *cause = NULL;

	if (!started) {
		/* As in a real agent, whose threads block every signal: a
		 * client that hangs up must not kill the process. */
		signal(SIGPIPE, SIG_IGN);
		agent_pid = getpid();
		if (server_start(&cause) != 0) {
			fprintf(stderr, "server_start: %s\n", cause);
			abort();
		}
		started = 1;
	}
	fuzz_send(data, size);
	return 0;
}
