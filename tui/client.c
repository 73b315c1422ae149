/* The one HTTP client of the CLI and of `probing top`: one kept-alive
 * bufferevent per target over its unix socket (peer-checked before any
 * byte is sent) or TCP, requests queued and sent one after another, each
 * with its own timeout, so that a slow or dead target holds up nothing but
 * itself. client_request is the same client run to completion on a
 * private event base. Requests are built, answers framed (shared/proto.c)
 * and error bodies unpacked here, once.
 *
 * Why not libevent's evhttp client: in libevent 2.1 an evhttp_connection
 * always dials by host name (evhttp_connection_connect_ closes the fd of
 * the bufferevent it is given and calls bufferevent_socket_connect_hostname),
 * so it can neither reach an abstract unix socket nor use a socket we
 * connected and peer-checked ourselves; libevent 2.2 adds that
 * (libevent PRs #322 and #1722). */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "clock.h"
#include "log.h"
#include "proto.h"
#include "xmalloc.h"
#include "top.h"
#include "tui.h"

/* How much longer than the request's own timeout the CLI waits for an
 * answer when the command sets no deadline of its own. */
#define CLIENT_GRACE_MS 10000
/* The most a reply's header block may take before it counts as garbage. */
#define CLIENT_MAX_HEADER 65536
/* The largest answer top and fan-out read; the CLI reads up to
 * PROTO_MAX_ANSWER. */
#define CLIENT_ASYNC_MAX ((size_t)PROTO_MAX_BODY * 16)
/* How often a blocking request looks at client_interrupted. */
#define CLIENT_SIGINT_MS 50

volatile sig_atomic_t client_interrupted;

/* A queued request; the head of the queue is the one on the wire. Owned by
 * its aclient. */
struct aclient_req {
	char *data;
	size_t len;
	size_t max;  /* the largest answer it takes */
	int text_ok; /* a non-JSON 200 answer is returned as a string */
	int timeout_ms;
	int retried;
	aclient_cb cb;
	void *arg;
	struct aclient_req *next;
};

/* Owns its queue and connection; touched only from the event loop. */
struct aclient {
	struct event_base *base;
	struct endpoint ep;
	char *token;
	struct bufferevent *bev;
	int connected; /* the connection was made */
	int reused;    /* the connection already carried a reply */
	int sent;      /* the head request was written */
	int calling;   /* inside a callback: do not start the next one */
	int conn_err;  /* errno of the last failed connect, 0 after a refusal
	               * with a cause (someone else holds the name) */
	size_t need;   /* bytes the reply on the wire takes, once known */
	struct aclient_req *head, *tail;
	struct event *timer, *kick;
};

static void aclient_start(struct aclient *);

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
	sigaction(SIGINT, &sa, NULL); /* no SA_RESTART: the loop wakes */
}

/* Connects a socket to pid's abstract name; -1 with errno on failure (0
 * and *cause when someone else holds the name). */
static int
client_connect_unix(pid_t pid, int flags, char **cause)
{
	struct sockaddr_un sun;
	socklen_t sl = endpoint_socket_addr(pid, &sun);
	int fd, saved;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sl) != 0) {
		saved = errno;
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
	int fd = client_connect_unix(pid, 0, &why);

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

/* The message for a target that did not answer in time: a stopped
 * process is named as such. */
static void
client_no_answer(const struct endpoint *ep, int wait_ms, char *msg, size_t sz)
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
			snprintf(msg, sz,
			    "pid %d is stopped (state %c): resume it with "
			    "kill -CONT %d",
			    (int)ep->pid, state, (int)ep->pid);
			return;
		}
	}
	snprintf(msg, sz,
	    "%s did not answer within %.1f s: its agent is wedged or the "
	    "process is too busy to run it",
	    ep->name, wait_ms / 1000.0);
}

static void
aclient_close(struct aclient *ac)
{
	if (ac->bev != NULL)
		bufferevent_free(ac->bev);
	ac->bev = NULL;
	ac->connected = 0;
	ac->reused = 0;
	ac->sent = 0;
	ac->need = 0;
}

/* Takes the head off the queue and calls its callback. */
static void
aclient_finish(struct aclient *ac, const struct aclient_reply *r)
{
	struct aclient_req *req = ac->head;

	evtimer_del(ac->timer);
	ac->head = req->next;
	if (ac->head == NULL)
		ac->tail = NULL;
	ac->sent = 0;
	ac->need = 0;
	ac->calling = 1;
	req->cb(req->arg, r);
	ac->calling = 0;
	free(req->data);
	free(req);
	if (ac->head != NULL)
		event_active(ac->kick, 0, 0);
}

/* Fails the head request with a message and drops the connection. */
static void aclient_fail(struct aclient *ac, int refused, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void
aclient_fail(struct aclient *ac, int refused, const char *fmt, ...)
{
	struct aclient_reply r = { .refused = refused };
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	aclient_close(ac);
	r.cause = msg;
	if (ac->head != NULL)
		aclient_finish(ac, &r);
}

/* Hands a whole response to the head request: the JSON body, a text body
 * where the request takes one, or the agent's {"error"} as the cause. */
static void
aclient_answer(struct aclient *ac, const struct proto_response *resp)
{
	struct aclient_reply r = { .status = resp->status };
	json_error_t jerr;
	json_t *e;
	char msg[512];

	r.body = json_loadb(resp->body, resp->body_len, 0, &jerr);
	if (r.body == NULL && resp->status == 200 && ac->head->text_ok)
		r.body = json_stringn(resp->body, resp->body_len);
	if (r.body == NULL) {
		snprintf(msg, sizeof msg,
		    "malformed answer from %s (http %d): %s", ac->ep.name,
		    resp->status, jerr.text);
		r.cause = msg;
	} else if (resp->status != 200) {
		e = json_object_get(r.body, "error");
		snprintf(msg, sizeof msg, "%s",
		    json_is_string(e) ? json_string_value(e)
				      : "the agent refused the request");
		r.cause = msg;
	}
	aclient_finish(ac, &r);
	json_decref(r.body);
}

/* Fails the head request with the parser's complaint about its answer. */
static void
aclient_malformed(struct aclient *ac, const char *why)
{
	if (strncmp(why, "answer ", 7) == 0)
		aclient_fail(ac, 0, "answer from %s%s", ac->ep.name, why + 6);
	else
		aclient_fail(
		    ac, 0, "malformed answer from %s: %s", ac->ep.name, why);
}

/* Tries to take a whole reply off the input buffer. The headers are
 * parsed once; the body is made contiguous only when all of it is in. */
static void
aclient_try_reply(struct aclient *ac, int eof)
{
	struct evbuffer *in = bufferevent_get_input(ac->bev);
	struct proto_response resp;
	struct evbuffer_ptr hdr;
	size_t len = evbuffer_get_length(in), view;
	char *cause = NULL;
	int rc;

	if (ac->head == NULL || !ac->sent) {
		if (eof)
			aclient_close(ac);
		return;
	}
	if (len == 0 && eof) {
		/* A kept-alive connection the agent closed while idle:
		 * send the request again once on a fresh one. */
		if (ac->reused && !ac->head->retried) {
			ac->head->retried = 1;
			aclient_close(ac);
			aclient_start(ac);
			return;
		}
		aclient_fail(ac, 0,
		    "%s closed the connection without answering", ac->ep.name);
		return;
	}
	if (!eof && ac->need > 0 && len < ac->need)
		return;
	if (!eof && len > ac->head->max + CLIENT_MAX_HEADER) {
		aclient_fail(ac, 0, "answer from %s larger than %zu MB",
		    ac->ep.name, ac->head->max >> 20);
		return;
	}
	if (ac->need > 0 && len >= ac->need)
		view = ac->need;
	else if (eof)
		view = len;
	else {
		hdr = evbuffer_search(in, "\r\n\r\n", 4, NULL);
		if (hdr.pos < 0) {
			if (len > CLIENT_MAX_HEADER)
				aclient_malformed(
				    ac, "http headers past 64 KB");
			return;
		}
		view = (size_t)hdr.pos + 4;
	}
	rc = proto_parse_response(
	    (const char *)evbuffer_pullup(in, (ev_ssize_t)view), view,
	    eof && view == len, ac->head->max, &resp, &cause);
	if (rc == 0 && resp.need > 0 && len >= resp.need) {
		ac->need = resp.need;
		aclient_try_reply(ac, eof);
		return;
	}
	if (rc == 0) {
		ac->need = resp.need;
		if (eof)
			aclient_fail(ac, 0,
			    "%s closed the connection mid-reply", ac->ep.name);
		return;
	}
	if (rc < 0) {
		aclient_malformed(ac, cause_str(cause));
		free(cause);
		return;
	}
	evbuffer_drain(in, resp.used);
	if (resp.close || eof)
		aclient_close(ac);
	else
		ac->reused = 1;
	aclient_answer(ac, &resp);
	proto_response_clear(&resp);
}

static void
aclient_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	aclient_try_reply(arg, 0);
}

static void
aclient_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct aclient *ac = arg;
	int err = EVUTIL_SOCKET_ERROR();

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		ac->connected = 1;
		return;
	}
	if (what & BEV_EVENT_EOF) {
		aclient_try_reply(ac, 1);
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		if (ac->head == NULL || !ac->sent) {
			aclient_close(ac);
			return;
		}
		if (!ac->connected)
			aclient_fail(ac, 1, "cannot connect to %s: %s",
			    ac->ep.name, strerror(err ? err : ECONNREFUSED));
		else
			aclient_fail(ac, !ac->reused, "cannot reach %s: %s",
			    ac->ep.name, strerror(err ? err : ECONNRESET));
	}
}

static void
aclient_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct aclient *ac = arg;
	char msg[512];

	(void)fd;
	(void)what;
	if (ac->head == NULL)
		return;
	client_no_answer(&ac->ep, ac->head->timeout_ms, msg, sizeof msg);
	aclient_fail(ac, 0, "%s", msg);
}

/* Opens a connection; 0, or -1 with *cause (nothing was sent) and
 * ac->conn_err set. */
static int
aclient_connect(struct aclient *ac, char **cause)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
	char port[16];
	int fd, rc;

	if (ac->ep.kind == ENDPOINT_PID) {
		fd = client_connect_unix(ac->ep.pid, SOCK_NONBLOCK, cause);
		ac->conn_err = errno;
		if (fd < 0) {
			if (*cause == NULL)
				cause_set(cause, "cannot connect to %s: %s",
				    ac->ep.name, strerror(ac->conn_err));
			return -1;
		}
		ac->bev =
		    bufferevent_socket_new(ac->base, fd, BEV_OPT_CLOSE_ON_FREE);
		if (ac->bev == NULL) {
			close(fd);
			ac->conn_err = ENOMEM;
			cause_set(cause, "cannot connect to %s: %s",
			    ac->ep.name, strerror(ENOMEM));
			return -1;
		}
		ac->connected = 1;
	} else {
		snprintf(port, sizeof port, "%d", ac->ep.port);
		rc = getaddrinfo(ac->ep.host, port, &hints, &res);
		if (rc != 0) {
			ac->conn_err = EHOSTUNREACH;
			cause_set(cause, "cannot resolve %s: %s", ac->ep.host,
			    gai_strerror(rc));
			return -1;
		}
		ac->bev =
		    bufferevent_socket_new(ac->base, -1, BEV_OPT_CLOSE_ON_FREE);
		if (ac->bev == NULL ||
		    bufferevent_socket_connect(
			ac->bev, res->ai_addr, (int)res->ai_addrlen) != 0) {
			ac->conn_err = errno ? errno : ECONNREFUSED;
			freeaddrinfo(res);
			aclient_close(ac);
			cause_set(cause, "cannot connect to %s: %s",
			    ac->ep.name, strerror(ac->conn_err));
			return -1;
		}
		freeaddrinfo(res);
	}
	bufferevent_setcb(ac->bev, aclient_read_cb, NULL, aclient_event_cb, ac);
	bufferevent_enable(ac->bev, EV_READ | EV_WRITE);
	return 0;
}

/* Sends the head request if nothing is on the wire. */
static void
aclient_start(struct aclient *ac)
{
	struct timeval tv;
	char *cause = NULL;

	if (ac->head == NULL || ac->sent || ac->calling)
		return;
	if (ac->bev == NULL && aclient_connect(ac, &cause) != 0) {
		aclient_fail(ac, 1, "%s", cause);
		free(cause);
		return;
	}
	bufferevent_write(ac->bev, ac->head->data, ac->head->len);
	ac->sent = 1;
	tv.tv_sec = ac->head->timeout_ms / 1000;
	tv.tv_usec = (ac->head->timeout_ms % 1000) * 1000;
	evtimer_add(ac->timer, &tv);
}

static void
aclient_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	aclient_start(arg);
}

struct aclient *
aclient_new(
    struct event_base *base, const struct endpoint *ep, const char *token)
{
	struct aclient *ac = xcalloc(1, sizeof *ac);

	ac->base = base;
	ac->ep = *ep;
	ac->token = token != NULL ? xstrdup(token) : NULL;
	ac->timer = evtimer_new(base, aclient_timeout_cb, ac);
	ac->kick = event_new(base, -1, 0, aclient_kick_cb, ac);
	return ac;
}

void
aclient_free(struct aclient *ac)
{
	struct aclient_req *req, *next;

	if (ac == NULL)
		return;
	for (req = ac->head; req != NULL; req = next) {
		next = req->next;
		free(req->data);
		free(req);
	}
	aclient_close(ac);
	event_free(ac->timer);
	event_free(ac->kick);
	free(ac->token);
	free(ac);
}

/* Queues a request that takes answers up to max bytes. */
static struct aclient_req *
aclient_queue(struct aclient *ac, const char *method, const char *path,
    json_t *body, int gil_ms, int timeout_ms, size_t max)
{
	struct aclient_req *req = xcalloc(1, sizeof *req);
	char *text = NULL, auth[600] = "";
	int n;

	if (body != NULL)
		text = json_dumps(body, JSON_COMPACT);
	if (ac->ep.kind == ENDPOINT_TCP && ac->token != NULL)
		snprintf(auth, sizeof auth, "Authorization: Bearer %.500s\r\n",
		    ac->token);
	n = xasprintf(&req->data,
	    "%s %s HTTP/1.1\r\nHost: probing\r\n%s%s: %d\r\n"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
	    method, path, auth, PROTO_TIMEOUT_HDR, gil_ms,
	    text ? strlen(text) : 0, text ? text : "");
	free(text);
	req->len = (size_t)n;
	req->max = max;
	req->text_ok = strcmp(path, PROTO_METRICS) == 0;
	req->timeout_ms = timeout_ms;
	if (ac->tail != NULL)
		ac->tail->next = req;
	else
		ac->head = req;
	ac->tail = req;
	event_active(ac->kick, 0, 0);
	return req;
}

void
aclient_request(struct aclient *ac, const char *method, const char *path,
    json_t *body, int gil_ms, int timeout_ms, aclient_cb cb, void *arg)
{
	struct aclient_req *req = aclient_queue(
	    ac, method, path, body, gil_ms, timeout_ms, CLIENT_ASYNC_MAX);

	req->cb = cb;
	req->arg = arg;
}

/* What one blocking request came back with. */
struct client_wait {
	struct aclient *ac;
	double start;
	int done;
	int status;
	json_t *reply;
	char *cause;
};

static void
client_done_cb(void *arg, const struct aclient_reply *r)
{
	struct client_wait *w = arg;

	w->done = 1;
	w->status = r->status;
	if (r->refused && w->ac->ep.kind == ENDPOINT_PID && w->ac->conn_err)
		client_no_agent(w->ac->ep.pid, w->ac->conn_err, &w->cause);
	else if (r->cause != NULL)
		w->cause = xstrdup(r->cause);
	else
		w->reply = json_incref(r->body);
	event_base_loopbreak(w->ac->base);
}

static void
client_sigint_cb(evutil_socket_t fd, short what, void *arg)
{
	struct client_wait *w = arg;

	(void)fd;
	(void)what;
	if (!client_interrupted || w->done)
		return;
	w->done = 1;
	cause_set(&w->cause, "interrupted after %.1f s",
	    (clock_ms() - w->start) / 1000.0);
	event_base_loopbreak(w->ac->base);
}

int
client_request(const struct endpoint *ep, const char *token, const char *method,
    const char *path, json_t *body, int gil_timeout_ms, int wait_ms,
    json_t **reply, int *status, char **cause)
{
	const struct timeval tick = { 0, CLIENT_SIGINT_MS * 1000 };
	struct client_wait w = { .start = clock_ms() };
	struct sigaction ign = { .sa_handler = SIG_IGN }, old;
	struct event_base *base;
	struct event *sigint;
	struct aclient_req *req;

	*reply = NULL;
	*status = 0;
	if (wait_ms <= 0)
		wait_ms = gil_timeout_ms + CLIENT_GRACE_MS;
	base = event_base_new();
	if (base == NULL) {
		cause_set(cause, "cannot create an event base");
		return -1;
	}
	w.ac = aclient_new(base, ep, token);
	req = aclient_queue(w.ac, method, path, body, gil_timeout_ms, wait_ms,
	    PROTO_MAX_ANSWER);
	req->cb = client_done_cb;
	req->arg = &w;
	sigint = event_new(base, -1, EV_PERSIST, client_sigint_cb, &w);
	event_add(sigint, &tick);
	/* An agent that closes while we write must not kill us with SIGPIPE
	 * (bufferevents write(2), not send(MSG_NOSIGNAL)). */
	sigaction(SIGPIPE, &ign, &old);
	while (!w.done && event_base_dispatch(base) == 0)
		;
	sigaction(SIGPIPE, &old, NULL);
	event_free(sigint);
	aclient_free(w.ac);
	event_base_free(base);
	*status = w.status;
	if (w.reply == NULL) {
		if (w.cause == NULL)
			cause_set(&w.cause, "%s: no answer", ep->name);
		if (cause != NULL)
			*cause = w.cause;
		else
			free(w.cause);
		return -1;
	}
	*reply = w.reply;
	free(w.cause);
	return 0;
}
