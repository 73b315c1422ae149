/* The connection limiter and the gate in front of the HTTP server: how
 * many connections the agent holds (in all, and per peer, well below the
 * fd limit it reads), how long they may stay, and whether the head of a
 * TCP request carries the token, read (peeked) before evhttp reads its
 * body.
 *
 * Everything here runs on the server's loop thread. evhttp accepts; its
 * bufferevent hook (conn_bevcb) notes each new connection and stops the
 * listeners while every slot is taken, so the accept loop never takes
 * more fds; conn_adopt (a higher-priority event, so before anything reads
 * the connection) gives it a slot or closes it; a sweep timer closes what
 * outstays its deadline and notices what evhttp closed. */
#include <errno.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "agent.h"
#include "clock.h"
#include "log.h"

void
conn_table_init(struct conn_table *t, long nofile)
{
	long total = nofile / 32;

	memset(t, 0, sizeof *t);
	if (total < 8)
		total = 8;
	if (total > 48)
		total = 48;
	t->cap[CONN_UNIX] = t->cap[CONN_TCP] = (int)total;
	t->cap[CONN_UNIX_OTHER] = (int)(total / 2);
	t->max_peer = (int)(total / 4 > 2 ? total / 4 : 2);
}

int
conn_capacity(const struct conn_table *t)
{
	int k, n = 0;

	for (k = 0; k < CONN_KINDS; k++)
		n += t->cap[k];
	return n;
}

int
conn_count(const struct conn_table *t, int kind, const char *peer)
{
	int i, n = 0;

	for (i = 0; i < CONN_MAX; i++)
		if (t->slots[i].used &&
		    (kind < 0 || t->slots[i].kind == kind) &&
		    (peer == NULL || strcmp(t->slots[i].peer, peer) == 0))
			n++;
	return n;
}

int
conn_admit(struct conn_table *t, int kind, const char *peer, const char **why)
{
	int i, free_slot = -1;

	if (kind < 0 || kind >= CONN_KINDS ||
	    conn_count(t, kind, NULL) >= t->cap[kind]) {
		*why = "too many connections";
		return -1;
	}
	if (kind != CONN_UNIX && conn_count(t, kind, peer) >= t->max_peer) {
		*why = "too many connections from this peer";
		return -1;
	}
	for (i = 0; i < CONN_MAX && free_slot < 0; i++)
		if (!t->slots[i].used)
			free_slot = i;
	if (free_slot < 0) {
		*why = "too many connections";
		return -1;
	}
	memset(&t->slots[free_slot], 0, sizeof t->slots[free_slot]);
	t->slots[free_slot].used = 1;
	t->slots[free_slot].kind = kind;
	snprintf(t->slots[free_slot].peer, sizeof t->slots[free_slot].peer,
	    "%s", peer);
	return free_slot;
}

void
conn_release(struct conn_table *t, int i)
{
	if (i >= 0 && i < CONN_MAX)
		memset(&t->slots[i], 0, sizeof t->slots[i]);
}

int
conn_token_ok(const char *value, size_t len, const char *token)
{
	size_t i, tlen = token != NULL ? strlen(token) : 0;
	unsigned char d = 0;

	if (value == NULL || tlen == 0 || len < 7 ||
	    strncasecmp(value, "bearer", 6) != 0 ||
	    (value[6] != ' ' && value[6] != '\t'))
		return 0;
	for (i = 6; i < len && (value[i] == ' ' || value[i] == '\t'); i++)
		;
	value += i;
	len -= i;
	while (len > 0 &&
	    (value[len - 1] == ' ' || value[len - 1] == '\t' ||
		value[len - 1] == '\r'))
		len--;
	if (len != tlen)
		return 0;
	/* Time that does not depend on where the bytes differ. */
	for (i = 0; i < tlen; i++)
		d |= (unsigned char)(value[i] ^ token[i]);
	return d == 0;
}

/* The end of the head (after its blank line), or NULL. */
static const char *
conn_head_end(const char *buf, size_t len)
{
	size_t i;

	for (i = 0; i + 1 < len; i++) {
		if (buf[i] == '\n' && buf[i + 1] == '\n')
			return buf + i + 2;
		if (i + 3 < len && memcmp(buf + i, "\r\n\r\n", 4) == 0)
			return buf + i + 4;
	}
	return NULL;
}

enum conn_gate
conn_gate_check(const char *buf, size_t len, int full, const char *token)
{
	const char *end = conn_head_end(buf, len), *p, *eol, *v;
	int has_auth = 0, ok = 0, health;

	if (end == NULL)
		return full ? CONN_GATE_BAD : CONN_GATE_MORE;
	health = (size_t)(end - buf) > 12 &&
	    (strncmp(buf, "GET /health ", 12) == 0 ||
		strncmp(buf, "GET /health?", 12) == 0);
	eol = memchr(buf, '\n', (size_t)(end - buf));
	for (p = eol != NULL ? eol + 1 : end; p < end; p = eol + 1) {
		eol = memchr(p, '\n', (size_t)(end - p));
		if (eol == NULL)
			break;
		if ((size_t)(eol - p) < 14 ||
		    strncasecmp(p, "authorization:", 14) != 0)
			continue;
		/* Two Authorization headers: refused, whatever they say. */
		if (has_auth++) {
			ok = 0;
			continue;
		}
		for (v = p + 14; v < eol && (*v == ' ' || *v == '\t'); v++)
			;
		ok = conn_token_ok(v, (size_t)(eol - v), token);
	}
	if (ok && has_auth == 1)
		return CONN_GATE_PASS;
	if (health)
		return CONN_GATE_HEALTH;
	return has_auth ? CONN_GATE_WRONG : CONN_GATE_MISSING;
}

/* A new connection must bring a whole request head that passes the gate
 * within this; a trusted one may then idle for CONN_IDLE_S. */
#define CONN_FIRST_MS 5000
#define CONN_IDLE_S   30
/* A refused connection is closed this long after its answer. */
#define CONN_LINGER_MS 1000
#define CONN_SWEEP_MS  250
#define CONN_GATE_PEEK 16384

/* Connections: the loop thread alone touches these. A new connection is
 * pending from evhttp's accept (conn_bevcb) until conn_adopt gives it
 * a slot or closes it. */
static struct conn_table conn_tab;
static struct bufferevent *conn_pending[CONN_MAX];
static int conn_npending;
static struct event *conn_adopt_ev, *conn_sweep_ev;
static struct event_base *conn_base;
static struct evhttp *conn_http;
static const char *conn_token;
static struct evhttp_bound_socket *conn_bound[2]; /* unix, tcp */
static int conn_paused; /* listeners disabled: the table is full */
static long conn_refused, conn_refused_logged_ms;

static long
conn_now_ms(void)
{
	return (long)clock_ms();
}

/* Logs a refused connection, at most one line a second. */
static void
conn_note_refusal(const char *why, const char *peer)
{
	long now = conn_now_ms();

	conn_refused++;
	if (now - conn_refused_logged_ms < 1000)
		return;
	log_info("refused %ld connection(s): %s (last: %s)", conn_refused, why,
	    peer);
	conn_refused = 0;
	conn_refused_logged_ms = now;
}

/* Loop thread: stops or resumes accepting on both listeners. */
static void
conn_pause(int pause)
{
	struct evhttp_bound_socket **b = conn_bound;
	struct evconnlistener *l;
	int i;

	conn_paused = pause;
	for (i = 0; i < 2; i++) {
		l = b[i] != NULL ? evhttp_bound_socket_get_listener(b[i])
				 : NULL;
		if (l != NULL && pause)
			evconnlistener_disable(l);
		else if (l != NULL)
			evconnlistener_enable(l);
	}
}

/* Whether live and pending connections fill every slot. */
static int
conn_full(void)
{
	return conn_npending + conn_count(&conn_tab, -1, NULL) >=
	    conn_capacity(&conn_tab);
}

static void
conn_sweep_arm(void)
{
	struct timeval tv = { 0, CONN_SWEEP_MS * 1000 };

	if (!evtimer_pending(conn_sweep_ev, NULL) &&
	    (conn_paused || conn_count(&conn_tab, -1, NULL) > 0))
		evtimer_add(conn_sweep_ev, &tv);
}

static void
conn_slot_free(int i)
{
	if (conn_tab.slots[i].gate != NULL)
		event_free(conn_tab.slots[i].gate);
	conn_release(&conn_tab, i);
}

/* The slot of evcon, or -1. */
static int
conn_slot_of(const struct evhttp_connection *evcon)
{
	int i;

	for (i = 0; i < CONN_MAX; i++)
		if (conn_tab.slots[i].used && conn_tab.slots[i].evcon == evcon)
			return i;
	return -1;
}

/* evhttp is closing a connection: its slot is free again. */
static void
conn_closed(struct evhttp_connection *evcon, void *unused)
{
	int i = conn_slot_of(evcon);

	(void)unused;
	if (i >= 0)
		conn_slot_free(i);
}

/* A request on evcon passed the peer check: it may idle from now on. */
void
conn_trust(struct evhttp_connection *evcon, int trusted)
{
	int i = conn_slot_of(evcon);

	if (i >= 0 && trusted)
		conn_tab.slots[i].trusted = 1;
}

/* Writes a whole JSON error reply to fd without blocking; -1 when it
 * could not. */
static int
conn_send_raw(int fd, int status, const char *msg)
{
	char body[512], out[1024];
	int n;

	snprintf(body, sizeof body, "{\"error\":\"%s\"}\n", msg);
	n = snprintf(out, sizeof out,
	    "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
	    status, status == 401 ? "Unauthorized" : "Error", strlen(body),
	    body);
	return send(fd, out, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ? -1
									 : 0;
}

/* Answers a refused connection directly (evhttp reads nothing of it) and
 * closes it after a short linger, so the answer is read before a reset. */
static void
conn_refuse_raw(int i, int status, const char *msg)
{
	struct conn_slot *c = &conn_tab.slots[i];

	bufferevent_disable((struct bufferevent *)c->bev, EV_READ | EV_WRITE);
	if (conn_send_raw(c->fd, status, msg) != 0)
		c->deadline_ms = 0;
	else
		c->deadline_ms = conn_now_ms() + CONN_LINGER_MS;
	shutdown(c->fd, SHUT_WR);
	c->closing = 1;
	conn_note_refusal(msg, c->peer);
	conn_sweep_arm();
}

/* A gated TCP connection has bytes: lets evhttp read the request once its
 * head carries the token (or asks only for /health); else refuses it. */
static void
conn_gate_cb(evutil_socket_t fd, short what, void *arg)
{
	int i = (int)(intptr_t)arg;
	struct conn_slot *c = &conn_tab.slots[i];
	char buf[CONN_GATE_PEEK];
	enum conn_gate g;
	ssize_t n;

	(void)what;
	n = recv(fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		/* Gone before a whole head: the sweep frees it now. */
		event_del(c->gate);
		c->closing = 1;
		c->deadline_ms = 0;
		conn_sweep_arm();
		return;
	}
	g = conn_gate_check(
	    buf, (size_t)n, n == (ssize_t)sizeof buf, conn_token);
	if (g == CONN_GATE_MORE)
		return;
	event_free(c->gate);
	c->gate = NULL;
	if (g == CONN_GATE_PASS || g == CONN_GATE_HEALTH) {
		c->trusted = g == CONN_GATE_PASS;
		bufferevent_enable((struct bufferevent *)c->bev, EV_READ);
	} else if (g == CONN_GATE_BAD)
		conn_refuse_raw(i, 431, "request head too large");
	else
		conn_refuse_raw(i, 401,
		    g == CONN_GATE_MISSING
			? "missing token: send Authorization: Bearer "
			  "<PROBING_AUTH_TOKEN>"
			: "wrong token");
}

/* Gives a new connection a slot, or closes it when a limit is reached.
 * Unix peers are checked at once; TCP ones are gated until their head. */
static void
conn_adopt_one(struct bufferevent *bev)
{
	evutil_socket_t fd = bufferevent_getfd(bev);
	bufferevent_data_cb rd, wr;
	bufferevent_event_cb ev;
	void *evcon = NULL;
	struct sockaddr_storage ss = { 0 };
	socklen_t sl = sizeof ss;
	struct ucred cred = { 0, (uid_t)-1, (gid_t)-1 };
	socklen_t cl = sizeof cred;
	struct conn_slot *c;
	struct stat sb;
	char peer[64];
	const char *why;
	int kind, i;

	/* evhttp's own callbacks carry its connection object. */
	bufferevent_getcb(bev, &rd, &wr, &ev, &evcon);
	if (fd < 0 || evcon == NULL)
		return;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 ||
	    fstat(fd, &sb) != 0) {
		evhttp_connection_free(evcon);
		return;
	}
	if (ss.ss_family == AF_UNIX) {
		getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl);
		snprintf(peer, sizeof peer, "uid %u", (unsigned)cred.uid);
		kind = cred.uid == 0 || cred.uid == geteuid() ? CONN_UNIX
							      : CONN_UNIX_OTHER;
	} else {
		kind = CONN_TCP;
		sl = sizeof ss;
		if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0 ||
		    getnameinfo((struct sockaddr *)&ss, sl, peer, sizeof peer,
			NULL, 0, NI_NUMERICHOST) != 0)
			snprintf(peer, sizeof peer, "?");
	}
	i = conn_admit(&conn_tab, kind, peer, &why);
	if (i < 0) {
		conn_note_refusal(why, peer);
		conn_send_raw(fd, 503, why);
		evhttp_connection_free(evcon);
		return;
	}
	c = &conn_tab.slots[i];
	c->fd = fd;
	c->dev = sb.st_dev;
	c->ino = sb.st_ino;
	c->bev = bev;
	c->evcon = evcon;
	c->deadline_ms = conn_now_ms() + CONN_FIRST_MS;
	c->trusted = kind == CONN_UNIX;
	evhttp_connection_set_closecb(evcon, conn_closed, NULL);
	if (kind == CONN_UNIX_OTHER) {
		char msg[160];

		snprintf(msg, sizeof msg,
		    "uid %u may not probe pid %d (owned by uid %u; only that "
		    "user or root may)",
		    (unsigned)cred.uid, (int)agent_pid, (unsigned)geteuid());
		conn_refuse_raw(i, 403, msg);
		return;
	}
	if (kind == CONN_UNIX)
		return;
	/* evhttp reads nothing until the head has shown the token. */
	bufferevent_disable(bev, EV_READ);
	c->gate = event_new(conn_base, fd, EV_READ | EV_PERSIST | EV_ET,
	    conn_gate_cb, (void *)(intptr_t)i);
	if (c->gate == NULL || event_add(c->gate, NULL) != 0) {
		conn_slot_free(i);
		evhttp_connection_free(evcon);
	}
}

/* Loop thread, before any of the new connections is read: adopts them. */
static void
conn_adopt(evutil_socket_t fd, short what, void *unused)
{
	(void)fd;
	(void)what;
	(void)unused;
	while (conn_npending > 0)
		conn_adopt_one(conn_pending[--conn_npending]);
	conn_sweep_arm();
}

/* evhttp's hook for each accepted connection (loop thread, inside the
 * accept loop): notes it for conn_adopt and stops accepting while the
 * slots are all taken, so that the agent never holds more fds. */
static struct bufferevent *
conn_bevcb(struct event_base *base, void *unused)
{
	struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);

	(void)unused;
	if (bev == NULL || conn_npending == CONN_MAX)
		return bev;
	conn_pending[conn_npending++] = bev;
	if (conn_full())
		conn_pause(1);
	event_active(conn_adopt_ev, EV_READ, 0);
	return bev;
}

/* Every CONN_SWEEP_MS while there are connections: closes those past
 * their deadline, forgets those evhttp closed, resumes accepting. */
static void
conn_sweep(evutil_socket_t fd, short what, void *unused)
{
	struct conn_slot *c;
	struct stat sb;
	void *evcon;
	long now = conn_now_ms();
	char buf[16384];
	int i, n;

	(void)fd;
	(void)what;
	(void)unused;
	for (i = 0; i < CONN_MAX; i++) {
		c = &conn_tab.slots[i];
		if (!c->used)
			continue;
		if (fstat(c->fd, &sb) != 0 || sb.st_dev != c->dev ||
		    sb.st_ino != c->ino) {
			conn_slot_free(i);
			continue;
		}
		if ((c->trusted && !c->closing) || now < c->deadline_ms)
			continue;
		/* Unread bytes would turn the close into a reset, which may
		 * drop an answer the peer has not read yet: discard them. */
		for (n = 0;
		     n < 16 && recv(c->fd, buf, sizeof buf, MSG_DONTWAIT) > 0;
		     n++)
			;
		evcon = c->evcon;
		conn_slot_free(i);
		evhttp_connection_free(evcon);
	}
	if (conn_paused && !conn_full())
		conn_pause(0);
	conn_sweep_arm();
}

/* accept() failed (the process is out of fds?): log it, pause a moment. */
static void
conn_accept_error(struct evconnlistener *l, void *unused)
{
	(void)l;
	(void)unused;
	conn_note_refusal(strerror(errno), "accept");
	conn_pause(1);
	conn_sweep_arm();
}

struct evhttp_bound_socket *
conn_bind(int fd, int kind)
{
	struct evhttp_bound_socket *b =
	    evhttp_accept_socket_with_handle(conn_http, fd);

	if (b == NULL)
		return NULL;
	evconnlistener_set_error_cb(
	    evhttp_bound_socket_get_listener(b), conn_accept_error);
	if (conn_paused)
		evconnlistener_disable(evhttp_bound_socket_get_listener(b));
	conn_bound[kind] = b;
	return b;
}

void
conn_unbind(int kind)
{
	if (conn_bound[kind] != NULL)
		evhttp_del_accept_socket(conn_http, conn_bound[kind]);
	conn_bound[kind] = NULL;
}

int
conn_init(struct event_base *base, struct evhttp *http, const char *token,
    char **cause)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		rl.rlim_cur = 1024;
	conn_table_init(&conn_tab, (long)rl.rlim_cur);
	conn_base = base;
	conn_http = http;
	conn_token = token;
	/* Two priorities: new connections are adopted (priority 0) before
	 * anything reads from them (priority 1, the default). */
	if (event_base_priority_init(base, 2) != 0 ||
	    (conn_adopt_ev = event_new(base, -1, 0, conn_adopt, NULL)) ==
		NULL ||
	    event_priority_set(conn_adopt_ev, 0) != 0 ||
	    (conn_sweep_ev = evtimer_new(base, conn_sweep, NULL)) == NULL) {
		cause_set(cause, "cannot set up the connection limiter");
		return -1;
	}
	evhttp_set_bevcb(http, conn_bevcb, NULL);
	evhttp_set_timeout(http, CONN_IDLE_S);
	return 0;
}

void
conn_describe(char *buf, size_t len)
{
	snprintf(buf, len,
	    "at most %d connections of this user or root, %d tcp, %d of "
	    "other users, %d from one tcp peer or other user",
	    conn_tab.cap[CONN_UNIX], conn_tab.cap[CONN_TCP],
	    conn_tab.cap[CONN_UNIX_OTHER], conn_tab.max_peer);
}

void
conn_after_fork(void)
{
	conn_bound[0] = conn_bound[1] = NULL;
}
