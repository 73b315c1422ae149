/* The asynchronous client of `probing top`: one kept-alive bufferevent per
 * target over its unix socket or TCP, requests sent one after another,
 * each with its own timeout, so that a slow or dead target holds up
 * nothing but itself. */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "log.h"
#include "proto.h"
#include "xmalloc.h"
#include "top.h"
#include "tui.h"

/* A queued request; the head of the queue is the one on the wire. */
struct aclient_req {
	char *data;
	size_t len;
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
	int reused;  /* the connection already carried a reply */
	int sent;    /* the head request was written */
	int calling; /* inside a callback: do not start the next one */
	struct aclient_req *head, *tail;
	struct event *timer, *kick;
};

static void aclient_start(struct aclient *);

static void
aclient_close(struct aclient *ac)
{
	if (ac->bev != NULL)
		bufferevent_free(ac->bev);
	ac->bev = NULL;
	ac->reused = 0;
	ac->sent = 0;
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

/* Parses a whole response at the front of buf: 1 with *used set, 0 when
 * more bytes are needed, -1 when it is malformed. */
static int
aclient_parse(const char *buf, size_t len, int eof, size_t *used,
    struct proto_response *resp, int *close_after, char **cause)
{
	const char *end = NULL, *p, *eol;
	size_t i, hlen, clen = 0;
	int have_len = 0;

	for (i = 0; i + 3 < len; i++) {
		if (memcmp(buf + i, "\r\n\r\n", 4) == 0) {
			end = buf + i + 4;
			break;
		}
	}
	if (end == NULL)
		return eof ? proto_parse_response(buf, len, eof, resp, cause)
			   : 0;
	hlen = (size_t)(end - buf);
	*close_after = 0;
	for (p = buf; p < end; p = eol + 1) {
		eol = memchr(p, '\n', (size_t)(end - p));
		if (eol == NULL)
			break;
		if (strncasecmp(p, "Content-Length:", 15) == 0) {
			clen = strtoul(p + 15, NULL, 10);
			have_len = 1;
		} else if (strncasecmp(p, "Connection:", 11) == 0 &&
		    strncasecmp(p + 11 + strspn(p + 11, " "), "close", 5) == 0)
			*close_after = 1;
		else if (strncasecmp(p, "Transfer-Encoding:", 18) == 0)
			*close_after = 1; /* chunked: read it whole at EOF */
	}
	if (!have_len) {
		*close_after = 1;
		if (!eof)
			return 0;
		*used = len;
		return proto_parse_response(buf, len, eof, resp, cause);
	}
	if (clen > PROTO_MAX_BODY * 16) {
		cause_set(cause, "reply too large (%zu bytes)", clen);
		return -1;
	}
	if (len < hlen + clen)
		return 0;
	*used = hlen + clen;
	return proto_parse_response(buf, hlen + clen, 1, resp, cause);
}

/* Tries to take a whole reply off the input buffer. */
static void
aclient_try_reply(struct aclient *ac, int eof)
{
	struct evbuffer *in = bufferevent_get_input(ac->bev);
	struct aclient_reply r = { 0 };
	struct proto_response resp = { 0 };
	json_error_t jerr;
	size_t len = evbuffer_get_length(in), used = 0;
	char *buf, *cause = NULL, msg[512];
	int rc, close_after = 0;

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
	buf = (char *)evbuffer_pullup(in, -1);
	rc = aclient_parse(buf, len, eof, &used, &resp, &close_after, &cause);
	if (rc == 0) {
		if (eof)
			aclient_fail(ac, 0,
			    "%s closed the connection mid-reply", ac->ep.name);
		return;
	}
	if (rc < 0) {
		snprintf(msg, sizeof msg, "malformed answer from %s: %s",
		    ac->ep.name, cause_str(cause));
		free(cause);
		aclient_fail(ac, 0, "%s", msg);
		return;
	}
	evbuffer_drain(in, used);
	r.status = resp.status;
	r.body = json_loadb(resp.body, resp.body_len, 0, &jerr);
	if (r.body == NULL) {
		snprintf(msg, sizeof msg,
		    "malformed answer from %s (http %d): %s", ac->ep.name,
		    resp.status, jerr.text);
		r.cause = msg;
	} else if (resp.status != 200) {
		json_t *e = json_object_get(r.body, "error");

		snprintf(msg, sizeof msg, "%s",
		    json_is_string(e) ? json_string_value(e)
				      : "the agent refused the request");
		r.cause = msg;
	}
	proto_response_clear(&resp);
	if (close_after || eof)
		aclient_close(ac);
	else
		ac->reused = 1;
	aclient_finish(ac, &r);
	json_decref(r.body);
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
	if (what & BEV_EVENT_CONNECTED)
		return;
	if (what & BEV_EVENT_EOF) {
		aclient_try_reply(ac, 1);
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		if (ac->head == NULL || !ac->sent) {
			aclient_close(ac);
			return;
		}
		aclient_fail(ac, !ac->reused, "cannot reach %s: %s",
		    ac->ep.name, strerror(err ? err : ECONNRESET));
	}
}

static void
aclient_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct aclient *ac = arg;

	(void)fd;
	(void)what;
	if (ac->head != NULL)
		aclient_fail(ac, 0, "%s did not answer within %d ms",
		    ac->ep.name, ac->head->timeout_ms);
}

/* Opens a connection; 0, or -1 with errno (or *cause: the name is held
 * by someone else, and nothing was sent). */
static int
aclient_connect(struct aclient *ac, char **cause)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
	char name[64], port[16];
	socklen_t sl;
	int fd, rc;

	if (ac->ep.kind == ENDPOINT_PID) {
		endpoint_socket_name(ac->ep.pid, name, sizeof name);
		memcpy(sun.sun_path + 1, name, strlen(name));
		sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
		    strlen(name));
		fd = socket(
		    AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			return -1;
		if (connect(fd, (struct sockaddr *)&sun, sl) != 0) {
			rc = errno;
			close(fd);
			errno = rc;
			return -1;
		}
		if (peer_check(fd, ac->ep.pid, cause) != 0) {
			close(fd);
			return -1;
		}
		ac->bev =
		    bufferevent_socket_new(ac->base, fd, BEV_OPT_CLOSE_ON_FREE);
		if (ac->bev == NULL) {
			close(fd);
			errno = ENOMEM;
			return -1;
		}
	} else {
		snprintf(port, sizeof port, "%d", ac->ep.port);
		rc = getaddrinfo(ac->ep.host, port, &hints, &res);
		if (rc != 0) {
			errno = EHOSTUNREACH;
			return -1;
		}
		ac->bev =
		    bufferevent_socket_new(ac->base, -1, BEV_OPT_CLOSE_ON_FREE);
		if (ac->bev == NULL ||
		    bufferevent_socket_connect(
			ac->bev, res->ai_addr, (int)res->ai_addrlen) != 0) {
			freeaddrinfo(res);
			aclient_close(ac);
			errno = ECONNREFUSED;
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
	int err;

	if (ac->head == NULL || ac->sent || ac->calling)
		return;
	if (ac->bev == NULL && aclient_connect(ac, &cause) != 0) {
		err = errno;
		if (cause != NULL)
			aclient_fail(ac, 1, "%s", cause);
		else
			aclient_fail(ac, 1, "cannot connect to %s: %s",
			    ac->ep.name, strerror(err));
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

void
aclient_request(struct aclient *ac, const char *method, const char *path,
    json_t *body, int gil_ms, int timeout_ms, aclient_cb cb, void *arg)
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
	req->timeout_ms = timeout_ms;
	req->cb = cb;
	req->arg = arg;
	if (ac->tail != NULL)
		ac->tail->next = req;
	else
		ac->head = req;
	ac->tail = req;
	event_active(ac->kick, 0, 0);
}
