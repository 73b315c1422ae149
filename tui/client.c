/* The blocking HTTP client the CLI commands use: one request, one reply. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "proto.h"
#include "xmalloc.h"
#include "tui.h"

#define CLIENT_CONNECT_MS 5000
/* How much longer than the request's own timeout the CLI waits for an
 * answer when the command sets no deadline of its own. */
#define CLIENT_GRACE_MS 10000

volatile sig_atomic_t client_interrupted;

static void
client_on_sigint(int sig)
{
	(void)sig;
	client_interrupted = 1;
}

void
client_catch_sigint(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = client_on_sigint;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL); /* no SA_RESTART: poll returns */
}

/* Connects to pid's abstract socket; -1 with errno on failure (0 and
 * *cause when someone else holds the name). */
static int
client_connect_unix(pid_t pid, char **cause)
{
	struct sockaddr_un sun;
	socklen_t sl = endpoint_socket_addr(pid, &sun);
	int fd;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sl) != 0) {
		int saved = errno;

		close(fd);
		errno = saved;
		return -1;
	}
	if (peer_check(fd, pid, cause) != 0) {
		close(fd);
		errno = 0;
		return -1;
	}
	return fd;
}

int
client_probe_pid(pid_t pid, char **cause)
{
	char *why = NULL;
	int fd = client_connect_unix(pid, &why);

	if (fd < 0) {
		if (why != NULL && cause != NULL)
			*cause = why;
		else
			free(why);
		return why != NULL ? -1 : 0;
	}
	close(fd);
	return 1;
}

/* Connects with a timeout; returns fd or -1 with *cause. */
static int
client_connect_tcp(const struct endpoint *ep, char **cause)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	struct pollfd pfd;
	char port[16];
	int fd = -1, err = 0, rc;
	socklen_t el = sizeof err;

	snprintf(port, sizeof port, "%d", ep->port);
	rc = getaddrinfo(ep->host, port, &hints, &res);
	if (rc != 0) {
		cause_set(
		    cause, "cannot resolve %s: %s", ep->host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family,
		    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			pfd.fd = fd;
			pfd.events = POLLOUT;
			if (poll(&pfd, 1, CLIENT_CONNECT_MS) == 1 &&
			    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) ==
				0 &&
			    err == 0)
				break;
			errno = err ? err : ETIMEDOUT;
		}
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		cause_set(cause, "cannot connect to %s: %s", ep->name,
		    strerror(err ? err : ECONNREFUSED));
	return fd;
}

/* Writes all of buf; -1 on error. */
static int
client_write_all(int fd, const char *buf, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pfd = { fd, POLLOUT, 0 };

				poll(&pfd, 1, 1000);
				continue;
			}
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The message for a target that did not answer in time: a stopped
 * process is named as such. */
static void
client_no_answer(const struct endpoint *ep, int wait_ms, char **cause)
{
	char path[64], buf[512], *p, state = '?';
	FILE *f;

	if (ep->kind == ENDPOINT_PID) {
		snprintf(path, sizeof path, "/proc/%d/stat", (int)ep->pid);
		f = fopen(path, "re");
		if (f != NULL) {
			if (fgets(buf, sizeof buf, f) != NULL &&
			    (p = strrchr(buf, ')')) != NULL && p[1] == ' ')
				state = p[2];
			fclose(f);
		}
		if (state == 'T' || state == 't') {
			cause_set(cause,
			    "pid %d is stopped (state %c): resume it with "
			    "kill -CONT %d",
			    (int)ep->pid, state, (int)ep->pid);
			return;
		}
	}
	cause_set(cause,
	    "%s did not answer within %.1f s: its agent is wedged or the "
	    "process is too busy to run it",
	    ep->name, wait_ms / 1000.0);
}

/* Reads until a whole response is in; returns 0 or -1 with *cause. */
static int
client_read_reply(int fd, const struct endpoint *ep, int wait_ms,
    struct proto_response *resp, char **cause)
{
	char *buf = NULL, *why = NULL;
	size_t len = 0, cap = 0;
	double start = clock_ms(), deadline = start + wait_ms;
	struct pollfd pfd = { fd, POLLIN, 0 };
	ssize_t n;
	int rc = 0, eof = 0, left;

	for (;;) {
		if (len > PROTO_MAX_ANSWER) {
			cause_set(cause, "answer from %s larger than %zu MB",
			    ep->name, (size_t)PROTO_MAX_ANSWER >> 20);
			rc = -1;
			break;
		}
		if (cap - len < 65536) {
			cap = cap ? cap * 2 : 65536;
			buf = xrealloc(buf, cap);
		}
		left = clock_left_ms(deadline);
		if (client_interrupted) {
			cause_set(cause, "interrupted after %.1f s",
			    (clock_ms() - start) / 1000.0);
			rc = -1;
			break;
		}
		if (left <= 0) {
			client_no_answer(ep, wait_ms, cause);
			rc = -1;
			break;
		}
		if (poll(&pfd, 1, left) < 0 && errno != EINTR) {
			cause_set(cause, "poll: %s", strerror(errno));
			rc = -1;
			break;
		}
		n = recv(fd, buf + len, cap - len - 1, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n < 0) {
			cause_set(cause, "reading from %s: %s", ep->name,
			    strerror(errno));
			rc = -1;
			break;
		}
		if (n == 0)
			eof = 1;
		len += (size_t)n;
		rc = proto_parse_response(buf, len, eof, resp, &why);
		if (rc < 0 && why != NULL && strncmp(why, "answer ", 7) == 0)
			cause_set(
			    cause, "%s from %s%s", "answer", ep->name, why + 6);
		else if (rc < 0)
			cause_set(cause, "malformed answer from %s: %s",
			    ep->name, cause_str(why));
		free(why);
		why = NULL;
		if (rc != 0)
			break;
	}
	free(buf);
	if (rc < 0 && eof && len == 0) {
		free(*cause);
		cause_set(cause, "%s closed the connection without answering",
		    ep->name);
	}
	return rc < 0 ? -1 : 0;
}

/* The message for a pid whose socket did not accept us. */
void
client_no_agent(pid_t pid, int err, char **cause)
{
	char path[64];
	struct stat sb;

	snprintf(path, sizeof path, "/proc/%d", (int)pid);
	if (stat(path, &sb) != 0)
		cause_set(cause, "no such process: %d", (int)pid);
	else if (err == ECONNREFUSED || err == ENOENT)
		cause_set(cause,
		    "no probing agent in pid %d (start it with PROBING=1 or "
		    "run: probing -t %d inject)",
		    (int)pid, (int)pid);
	else
		cause_set(cause, "cannot connect to pid %d: %s", (int)pid,
		    strerror(err));
}

int
client_request(const struct endpoint *ep, const char *token, const char *method,
    const char *path, json_t *body, int gil_timeout_ms, int wait_ms,
    json_t **reply, int *status, char **cause)
{
	struct proto_response resp;
	json_error_t jerr;
	json_t *err;
	char *text = NULL, *req = NULL, auth[600] = "";
	int fd, n, rc = -1;

	*reply = NULL;
	*status = 0;
	if (ep->kind == ENDPOINT_PID) {
		fd = client_connect_unix(ep->pid, cause);
		if (fd < 0) {
			if (cause == NULL || *cause == NULL)
				client_no_agent(ep->pid, errno, cause);
			return -1;
		}
	} else {
		fd = client_connect_tcp(ep, cause);
		if (fd < 0)
			return -1;
		if (token != NULL)
			snprintf(auth, sizeof auth,
			    "Authorization: Bearer %.500s\r\n", token);
	}
	if (body != NULL)
		text = json_dumps(body, JSON_COMPACT);
	n = xasprintf(&req,
	    "%s %s HTTP/1.1\r\nHost: probing\r\nConnection: close\r\n"
	    "%s%s: %d\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\n\r\n%s",
	    method, path, auth, PROTO_TIMEOUT_HDR, gil_timeout_ms,
	    text ? strlen(text) : 0, text ? text : "");
	free(text);
	if (client_write_all(fd, req, (size_t)n) != 0) {
		cause_set(
		    cause, "sending to %s: %s", ep->name, strerror(errno));
		goto out;
	}
	if (wait_ms <= 0)
		wait_ms = gil_timeout_ms + CLIENT_GRACE_MS;
	if (client_read_reply(fd, ep, wait_ms, &resp, cause) != 0)
		goto out;
	*status = resp.status;
	*reply = json_loadb(resp.body, resp.body_len, 0, &jerr);
	if (*reply == NULL && resp.status == 200 &&
	    strcmp(path, PROTO_METRICS) == 0)
		*reply = json_stringn(resp.body, resp.body_len);
	if (*reply == NULL) {
		cause_set(cause, "malformed answer from %s (http %d): %s",
		    ep->name, resp.status, jerr.text);
	} else if (resp.status != 200) {
		err = json_object_get(*reply, "error");
		cause_set(cause, "%s",
		    json_is_string(err) ? json_string_value(err)
					: "the agent refused the request");
		json_decref(*reply);
		*reply = NULL;
	} else
		rc = 0;
	proto_response_clear(&resp);
out:
	free(req);
	close(fd);
	return rc;
}
