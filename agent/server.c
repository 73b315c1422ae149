/* The HTTP server: routes, peer checks, tokens, and request threads.
 *
 * The loop thread owns every libevent object. Routes marked SERVER_INLINE
 * run on it; SERVER_POOL ones on the request threads; SERVER_THREAD ones
 * (evals, which may run long) each on a thread of their own, so that they
 * never hold the request threads queries and config need. Off the loop,
 * a route hands its reply back through an event made active from its
 * thread. libevent stops reading a connection once its request is in, so
 * the connection (and its fd) stays until the reply is sent; a request's
 * thread polls that fd to learn that its client went away. */
#include <poll.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>

#include "agent.h"
#include "endpoint.h"
#include "log.h"
#include "proto.h"

#define SERVER_THREADS 4

/* A route's work; returns the reply or NULL with *cause and *status. */
typedef json_t *(*server_run_fn)(
    json_t *body, int timeout_ms, int *status, char **cause);

/* Where a route's work runs. */
enum server_where {
	SERVER_POOL,   /* a request thread */
	SERVER_INLINE, /* cheap: the loop thread */
	SERVER_THREAD, /* may run long: a thread of its own */
};

struct server_route {
	const char *path;
	enum evhttp_cmd_type method;
	int public; /* served on TCP without a token */
	enum server_where where;
	server_run_fn run;
};

/* Owned by the loop thread until queued; then by the request thread until
 * it activates done; then by the loop again, which frees it. */
struct server_job {
	struct evhttp_request *req;
	const struct server_route *route;
	json_t *body;
	int timeout_ms;
	int fd; /* the connection's socket, for request_gone */
	int status;
	json_t *reply;
	char *cause;
	struct event *done;
	TAILQ_ENTRY(server_job) entry;
};

static struct event_base *server_base;
static struct evhttp *server_http;
static int server_unix_fd = -1;
static int server_tcp_fd = -1;
static struct evhttp_bound_socket *server_tcp;
static struct evhttp_bound_socket *server_unix;
static char *server_token;
/* The fds libevent opened for the loop (epoll, its pipe, an eventfd);
 * a forked child closes them. */
#define SERVER_MAX_BASE_FDS 8
static int server_base_fds[SERVER_MAX_BASE_FDS];
static int server_nbase_fds;

static pthread_mutex_t server_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t server_work = PTHREAD_COND_INITIALIZER;
static TAILQ_HEAD(, server_job) server_queue = TAILQ_HEAD_INITIALIZER(
    server_queue);
static int server_threads;

/* Returns body[name] as a string, or NULL with *cause. */
static const char *
server_arg(json_t *body, const char *name, char **cause)
{
	json_t *v = json_is_object(body) ? json_object_get(body, name) : NULL;

	if (!json_is_string(v)) {
		cause_set(cause,
		    "request body must be a JSON object with a string '%s'",
		    name);
		return NULL;
	}
	return json_string_value(v);
}

static json_t *
server_health(json_t *body, int timeout_ms, int *status, char **cause)
{
	(void)body;
	(void)timeout_ms;
	(void)status;
	(void)cause;
	return json_pack("{s:i, s:s, s:s, s:i, s:i, s:b}", "pid",
	    (int)agent_pid, "python", agent_python_version(), "version",
	    PROBING_VERSION, "tcp_port", (int)config_get(CONFIG_SERVER_PORT),
	    "uid", (int)geteuid(), "auth", server_token != NULL);
}

static json_t *
server_identity(json_t *body, int timeout_ms, int *status, char **cause)
{
	struct identity *id = malloc(sizeof *id);
	json_t *r;

	(void)body;
	(void)status;
	if (id == NULL) {
		cause_set(cause, "out of memory");
		return NULL;
	}
	identity_read(id, timeout_ms < 200 ? timeout_ms : 200);
	r = identity_json(id);
	free(id);
	return r;
}

static json_t *
server_job(json_t *body, int timeout_ms, int *status, char **cause)
{
	struct identity *id = malloc(sizeof *id);
	json_t *r, *members;
	char *why = NULL;

	(void)body;
	(void)status;
	if (id == NULL) {
		cause_set(cause, "out of memory");
		return NULL;
	}
	identity_read(id, timeout_ms < 200 ? timeout_ms : 200);
	r = identity_json(id);
	if (r != NULL && id->job[0] != '\0') {
		members = jobstore_members(id, timeout_ms, &why);
		if (members != NULL)
			json_object_set_new(r, "members", members);
		else
			json_object_set_new(
			    r, "store_error", json_string(cause_str(why)));
		free(why);
	}
	free(id);
	return r;
}

static json_t *
server_query(json_t *body, int timeout_ms, int *status, char **cause)
{
	const char *sql = server_arg(body, "sql", cause);

	return sql != NULL ? store_query(sql, timeout_ms, status, cause) : NULL;
}

static json_t *
server_eval(json_t *body, int timeout_ms, int *status, char **cause)
{
	const char *code = server_arg(body, "code", cause);

	return code != NULL ? eval_run(code, timeout_ms, status, cause) : NULL;
}

static json_t *
server_evals(json_t *body, int timeout_ms, int *status, char **cause)
{
	(void)body;
	(void)timeout_ms;
	(void)status;
	(void)cause;
	return eval_list();
}

static json_t *
server_complete(json_t *body, int timeout_ms, int *status, char **cause)
{
	const char *text = server_arg(body, "text", cause);
	json_t *r;

	if (text == NULL)
		return NULL;
	r = eval_complete(text, timeout_ms, cause);
	if (r == NULL)
		*status = 503;
	return r;
}

/* Returns body[name] as an integer in [lo, hi], or -1 with *cause. */
static long
server_int_arg(json_t *body, const char *name, long lo, long hi, char **cause)
{
	json_t *v = json_is_object(body) ? json_object_get(body, name) : NULL;

	if (!json_is_integer(v) || json_integer_value(v) < lo ||
	    json_integer_value(v) > hi) {
		cause_set(cause,
		    "request body must be a JSON object with an integer '%s' "
		    "from %ld to %ld",
		    name, lo, hi);
		return -1;
	}
	return (long)json_integer_value(v);
}

static json_t *
server_eval_start(json_t *body, int timeout_ms, int *status, char **cause)
{
	const char *code = server_arg(body, "code", cause);
	json_t *r;

	if (code == NULL)
		return NULL;
	r = eval_start(code, json_is_true(json_object_get(body, "final")),
	    timeout_ms, cause);
	if (r == NULL)
		*status = 503;
	return r;
}

static json_t *
server_eval_wait(json_t *body, int timeout_ms, int *status, char **cause)
{
	long id = server_int_arg(body, "id", 1, LONG_MAX, cause);
	long wait_ms = id > 0
	    ? server_int_arg(body, "wait_ms", 0, PROTO_MAX_WAIT_MS, cause)
	    : -1;
	json_t *r;

	(void)timeout_ms;
	if (wait_ms < 0)
		return NULL;
	r = eval_wait(id, (int)wait_ms, cause);
	if (r == NULL)
		*status = 404;
	return r;
}

static json_t *
server_eval_interrupt(json_t *body, int timeout_ms, int *status, char **cause)
{
	long id = server_int_arg(body, "id", 1, LONG_MAX, cause);
	json_t *r;

	if (id < 0)
		return NULL;
	r = eval_interrupt(id, timeout_ms, cause);
	if (r == NULL)
		*status = 503;
	return r;
}

static json_t *
server_config_get(json_t *body, int timeout_ms, int *status, char **cause)
{
	(void)body;
	(void)timeout_ms;
	(void)status;
	(void)cause;
	return config_to_json();
}

static json_t *
server_config_set(json_t *body, int timeout_ms, int *status, char **cause)
{
	const char *key = server_arg(body, "key", cause);
	json_t *v =
	    json_is_object(body) ? json_object_get(body, "value") : NULL;
	char num[64];
	const char *text;

	(void)timeout_ms;
	(void)status;
	if (key == NULL)
		return NULL;
	if (json_is_string(v))
		text = json_string_value(v);
	else if (json_is_boolean(v))
		text = json_is_true(v) ? "true" : "false";
	else if (json_is_integer(v)) {
		snprintf(
		    num, sizeof num, "%lld", (long long)json_integer_value(v));
		text = num;
	} else if (json_is_real(v)) {
		snprintf(num, sizeof num, "%.17g", json_real_value(v));
		text = num;
	} else {
		cause_set(cause, "request body needs a 'value' for '%s'", key);
		return NULL;
	}
	if (config_set(key, text, cause) != 0)
		return NULL;
	return config_to_json();
}

static const struct server_route server_routes[] = {
	{ PROTO_HEALTH, EVHTTP_REQ_GET, 1, SERVER_INLINE, server_health },
	{ PROTO_IDENTITY, EVHTTP_REQ_GET, 0, SERVER_POOL, server_identity },
	{ PROTO_JOB, EVHTTP_REQ_GET, 0, SERVER_POOL, server_job },
	{ PROTO_QUERY, EVHTTP_REQ_POST, 0, SERVER_POOL, server_query },
	{ PROTO_EVAL, EVHTTP_REQ_POST, 0, SERVER_THREAD, server_eval },
	{ PROTO_EVALS, EVHTTP_REQ_GET, 0, SERVER_INLINE, server_evals },
	{ PROTO_COMPLETE, EVHTTP_REQ_POST, 0, SERVER_POOL, server_complete },
	{ PROTO_EVAL_START, EVHTTP_REQ_POST, 0, SERVER_THREAD,
	    server_eval_start },
	{ PROTO_EVAL_WAIT, EVHTTP_REQ_POST, 0, SERVER_THREAD,
	    server_eval_wait },
	{ PROTO_EVAL_INTERRUPT, EVHTTP_REQ_POST, 0, SERVER_POOL,
	    server_eval_interrupt },
	{ PROTO_CONFIG, EVHTTP_REQ_GET, 0, SERVER_INLINE, server_config_get },
	{ PROTO_CONFIG, EVHTTP_REQ_POST, 0, SERVER_POOL, server_config_set },
	{ PROTO_METRICS, EVHTTP_REQ_GET, 0, SERVER_POOL, metrics_run },
};

/* Sends obj (stolen) with status; a JSON string goes as plain text. */
static void
server_send(struct evhttp_request *req, int status, json_t *obj)
{
	struct evbuffer *buf = evbuffer_new();
	int plain = json_is_string(obj);
	char *text = plain ? strdup(json_string_value(obj))
	    : obj != NULL  ? json_dumps(obj, JSON_COMPACT)
			   : NULL;

	json_decref(obj);
	if (buf == NULL) {
		free(text);
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	if (text != NULL) {
		evbuffer_add(buf, text, strlen(text));
		if (!plain)
			evbuffer_add(buf, "\n", 1);
		free(text);
	}
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type",
	    plain ? "text/plain; version=0.0.4; charset=utf-8"
		  : "application/json");
	evhttp_send_reply(req, status, status == 200 ? "OK" : "Error", buf);
	evbuffer_free(buf);
}

static void
server_error(struct evhttp_request *req, int status, const char *msg)
{
	server_send(req, status, json_pack("{s:s}", "error", msg));
}

/* Runs a route's work and stores the reply or error in job. */
static void
server_job_run(struct server_job *job)
{
	request_begin(job->fd, job->timeout_ms);
	job->status = 200;
	job->reply = job->route->run(
	    job->body, job->timeout_ms, &job->status, &job->cause);
	if (job->reply == NULL && job->status == 200)
		job->status = 400;
	request_end();
}

static void
server_job_free(struct server_job *job)
{
	json_decref(job->body);
	json_decref(job->reply);
	free(job->cause);
	if (job->done != NULL)
		event_free(job->done);
	free(job);
}

/* Loop thread: sends a finished job's reply. */
static void
server_job_done(evutil_socket_t fd, short what, void *arg)
{
	struct server_job *job = arg;

	(void)fd;
	(void)what;
	if (job->reply != NULL) {
		server_send(job->req, job->status, job->reply);
		job->reply = NULL;
	} else
		server_error(job->req, job->status, cause_str(job->cause));
	server_job_free(job);
}

static void *
server_thread_main(void *unused)
{
	struct server_job *job;

	(void)unused;
	for (;;) {
		pthread_mutex_lock(&server_lock);
		while ((job = TAILQ_FIRST(&server_queue)) == NULL)
			pthread_cond_wait(&server_work, &server_lock);
		TAILQ_REMOVE(&server_queue, job, entry);
		pthread_mutex_unlock(&server_lock);
		server_job_run(job);
		event_active(job->done, EV_READ, 0);
	}
	return NULL;
}

/* A SERVER_THREAD route's thread: runs one job. */
static void *
server_own_thread(void *arg)
{
	struct server_job *job = arg;

	pthread_setname_np(pthread_self(), "probing-req");
	server_job_run(job);
	event_active(job->done, EV_READ, 0);
	return NULL;
}

/* Starts a thread for job; 0 or -1 with *cause. */
static int
server_start_own(struct server_job *job, char **cause)
{
	pthread_attr_t attr;
	pthread_t t;
	int err;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	err = pthread_create(&t, &attr, server_own_thread, job);
	pthread_attr_destroy(&attr);
	if (err != 0) {
		cause_set(
		    cause, "cannot start a request thread: %s", strerror(err));
		return -1;
	}
	return 0;
}

/* Queues a job, starting the request threads the first time. */
static int
server_queue_job(struct server_job *job, char **cause)
{
	pthread_attr_t attr;
	pthread_t t;
	int err;

	pthread_mutex_lock(&server_lock);
	if (server_threads == 0) {
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&attr, 1024 * 1024);
		while (server_threads < SERVER_THREADS) {
			err =
			    pthread_create(&t, &attr, server_thread_main, NULL);
			if (err != 0)
				break;
			pthread_setname_np(t, "probing-req");
			server_threads++;
		}
		pthread_attr_destroy(&attr);
		if (server_threads == 0) {
			pthread_mutex_unlock(&server_lock);
			cause_set(cause, "cannot start a request thread: %s",
			    strerror(err));
			return -1;
		}
	}
	TAILQ_INSERT_TAIL(&server_queue, job, entry);
	pthread_cond_signal(&server_work);
	pthread_mutex_unlock(&server_lock);
	return 0;
}

/* Checks who is asking: unix peers by uid, TCP peers by token. Returns 0
 * (*tcp_open set for a TCP request without the right token, which only a
 * public route may serve) or the HTTP status to refuse with, msg filled. */
static int
server_check_peer(struct evhttp_request *req, const struct server_route *r,
    int *tcp_open, char *msg, size_t len)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	evutil_socket_t fd =
	    bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
	struct sockaddr_storage ss = { 0 };
	socklen_t sl = sizeof ss;
	struct ucred cred;
	socklen_t cl = sizeof cred;
	const char *auth;

	*tcp_open = 0;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
		snprintf(msg, len, "cannot identify the connection: %s",
		    strerror(errno));
		return 500;
	}
	if (ss.ss_family == AF_UNIX) {
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0) {
			snprintf(msg, len, "cannot read peer credentials: %s",
			    strerror(errno));
			return 403;
		}
		if (cred.uid != 0 && cred.uid != geteuid()) {
			snprintf(msg, len,
			    "uid %u may not probe pid %d (owned by uid %u; "
			    "only that user or root may)",
			    (unsigned)cred.uid, (int)agent_pid,
			    (unsigned)geteuid());
			return 403;
		}
		return 0;
	}
	auth = evhttp_find_header(
	    evhttp_request_get_input_headers(req), "Authorization");
	if (auth != NULL && conn_token_ok(auth, strlen(auth), server_token))
		return 0;
	*tcp_open = 1;
	if (r != NULL && r->public)
		return 0;
	snprintf(msg, len, "%s",
	    auth == NULL ? "missing token: send Authorization: Bearer "
			   "<PROBING_AUTH_TOKEN>"
			 : "wrong token");
	return 401;
}

static void
server_handle(struct evhttp_request *req, void *unused)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL, *t;
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	const struct server_route *r = NULL;
	struct evbuffer *in;
	struct server_job *job;
	json_error_t jerr;
	char msg[512], *cause = NULL;
	int path_known = 0, status, tcp_open;
	size_t i, n;

	(void)unused;
	for (i = 0; path && i < sizeof server_routes / sizeof *server_routes;
	     i++) {
		if (strcmp(server_routes[i].path, path) != 0)
			continue;
		path_known = 1;
		if (server_routes[i].method == method)
			r = &server_routes[i];
	}
	status = server_check_peer(req, r, &tcp_open, msg, sizeof msg);
	if (status != 0 || tcp_open) {
		/* Nothing more on this connection for someone without
		 * the token. */
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Connection", "close");
	}
	if (status != 0) {
		log_info("refused %s: %s", path ? path : "?", msg);
		server_error(req, status, msg);
		return;
	}
	conn_trust(evhttp_request_get_connection(req), !tcp_open);
	if (tcp_open && r != NULL && r->run == server_health) {
		/* Without the token TCP says only that it is alive. */
		server_send(req, 200, json_pack("{s:b}", "alive", 1));
		return;
	}
	if (r == NULL) {
		snprintf(msg, sizeof msg, "%s %s",
		    path_known ? "method not allowed on" : "no such route:",
		    path ? path : "?");
		server_error(req, path_known ? 405 : 404, msg);
		return;
	}
	job = calloc(1, sizeof *job);
	if (job == NULL) {
		server_error(req, 500, "out of memory");
		return;
	}
	job->req = req;
	job->route = r;
	job->fd = (int)bufferevent_getfd(evhttp_connection_get_bufferevent(
	    evhttp_request_get_connection(req)));
	job->timeout_ms = PROTO_DEFAULT_GIL_MS;
	t = evhttp_find_header(
	    evhttp_request_get_input_headers(req), PROTO_TIMEOUT_HDR);
	if (t != NULL && atoi(t) > 0)
		job->timeout_ms = atoi(t);
	if (method == EVHTTP_REQ_POST) {
		in = evhttp_request_get_input_buffer(req);
		n = evbuffer_get_length(in);
		job->body = json_loadb(
		    (const char *)evbuffer_pullup(in, -1), n, 0, &jerr);
		if (job->body == NULL) {
			snprintf(msg, sizeof msg,
			    "malformed JSON in request body: %s (line %d, "
			    "column %d)",
			    jerr.text, jerr.line, jerr.column);
			server_error(req, 400, msg);
			server_job_free(job);
			return;
		}
	}
	if (r->where == SERVER_INLINE) {
		server_job_run(job);
		server_job_done(-1, 0, job);
		return;
	}
	job->done = event_new(server_base, -1, 0, server_job_done, job);
	if (job->done == NULL ||
	    (r->where == SERVER_THREAD ? server_start_own(job, &cause)
				       : server_queue_job(job, &cause)) != 0) {
		server_error(req, 500, cause ? cause : "out of memory");
		free(cause);
		server_job_free(job);
	}
}

/* Binds and listens on a socket; returns the fd or -1 with *cause. */
static int
server_listen(int family, const struct sockaddr *sa, socklen_t sl,
    const char *what, char **cause)
{
	int fd, one = 1;

	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		cause_set(cause, "cannot create a socket for %s: %s", what,
		    strerror(errno));
		return -1;
	}
	if (family != AF_UNIX)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, sa, sl) != 0 || listen(fd, 128) != 0) {
		cause_set(
		    cause, "cannot listen on %s: %s", what, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Loop thread: starts, moves or stops the TCP listener. TCP is never
 * served without a token: with none the port stays closed. */
static int
server_set_port_now(int port, char **cause)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	char what[64];
	int fd = -1;

	if (port != 0 && server_token == NULL) {
		cause_set(cause,
		    "not serving tcp port %d: pid %d has no PROBING_AUTH_TOKEN "
		    "(TCP is only served with a token; start the job with one, "
		    "or use the unix socket: probing -t %d)",
		    port, (int)agent_pid, (int)agent_pid);
		return -1;
	}
	if (port != 0) {
		sin.sin_port = htons((uint16_t)port);
		sin.sin_addr.s_addr = htonl(INADDR_ANY);
		snprintf(what, sizeof what, "0.0.0.0:%d", port);
		fd = server_listen(
		    AF_INET, (struct sockaddr *)&sin, sizeof sin, what, cause);
		if (fd < 0)
			return -1;
	}
	if (server_tcp != NULL) {
		conn_unbind(CONN_TCP);
		server_tcp = NULL;
		server_tcp_fd = -1;
	}
	if (fd >= 0) {
		server_tcp = conn_bind(fd, CONN_TCP);
		if (server_tcp == NULL) {
			close(fd);
			cause_set(cause, "cannot serve on %s", what);
			return -1;
		}
		server_tcp_fd = fd;
		log_info("serving tcp on %s (token required)", what);
	} else
		log_info("tcp listener stopped");
	return 0;
}

struct server_call {
	int port;
	int rc;
	char *cause;
	int done;
};

static pthread_cond_t server_call_done = PTHREAD_COND_INITIALIZER;

static void
server_call_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server_call *c = arg;

	(void)fd;
	(void)what;
	c->rc = server_set_port_now(c->port, &c->cause);
	pthread_mutex_lock(&server_lock);
	c->done = 1;
	pthread_cond_broadcast(&server_call_done);
	pthread_mutex_unlock(&server_lock);
}

/* config applier (request thread): moves the listener on the loop. */
static int
server_apply_port(double v, char **cause)
{
	struct server_call c = { (int)v, 0, NULL, 0 };
	struct timeval now = { 0, 0 };

	if (event_base_once(
		server_base, -1, EV_TIMEOUT, server_call_cb, &c, &now) != 0) {
		cause_set(cause, "cannot reach the server loop");
		return -1;
	}
	pthread_mutex_lock(&server_lock);
	while (!c.done)
		pthread_cond_wait(&server_call_done, &server_lock);
	pthread_mutex_unlock(&server_lock);
	if (c.rc != 0 && cause != NULL)
		*cause = c.cause;
	else
		free(c.cause);
	return c.rc;
}

static void *
server_loop(void *unused)
{
	(void)unused;
	event_base_dispatch(server_base);
	return NULL;
}

/* Fills open (a bitmap of n bytes) with the fds open now. */
static void
server_open_fds(unsigned char *open, size_t n)
{
	struct dirent *d;
	DIR *dir = opendir("/proc/self/fd");
	long fd;

	memset(open, 0, n);
	if (dir == NULL)
		return;
	while ((d = readdir(dir)) != NULL) {
		fd = strtol(d->d_name, NULL, 10);
		if (fd >= 0 && (size_t)fd < n * 8 && fd != dirfd(dir) &&
		    d->d_name[0] != '.')
			open[fd / 8] |= (unsigned char)(1u << (fd % 8));
	}
	closedir(dir);
}

/* Notes the fds opened since before (a bitmap from server_open_fds) that
 * are what libevent makes: an epoll, a pipe, an eventfd. */
static void
server_note_base_fds(const unsigned char *before, size_t n)
{
	static const char *const kinds[] = { "anon_inode:[eventpoll]",
		"pipe:", "anon_inode:[eventfd]" };
	unsigned char *now = malloc(n);
	char path[64], link[128];
	ssize_t len;
	size_t fd, k;

	if (now == NULL)
		return;
	server_open_fds(now, n);
	for (fd = 0; fd < n * 8 && server_nbase_fds < SERVER_MAX_BASE_FDS;
	     fd++) {
		if (!(now[fd / 8] & (1u << (fd % 8))) ||
		    (before[fd / 8] & (1u << (fd % 8))))
			continue;
		snprintf(path, sizeof path, "/proc/self/fd/%zu", fd);
		len = readlink(path, link, sizeof link - 1);
		if (len <= 0)
			continue;
		link[len] = '\0';
		for (k = 0; k < sizeof kinds / sizeof *kinds; k++) {
			if (strncmp(link, kinds[k], strlen(kinds[k])) == 0) {
				server_base_fds[server_nbase_fds++] = (int)fd;
				break;
			}
		}
	}
	free(now);
}

int
server_start(char **cause)
{
	unsigned char *fds_before = malloc(8192);
	struct sockaddr_un sun;
	char name[64], limits[256];
	const char *token = getenv("PROBING_AUTH_TOKEN");
	pthread_t t;
	socklen_t sl;
	int err;

	if (token != NULL && *token != '\0')
		server_token = strdup(token);
	evthread_use_pthreads();
	if (fds_before != NULL)
		server_open_fds(fds_before, 8192);
	server_base = event_base_new();
	server_http = server_base ? evhttp_new(server_base) : NULL;
	if (fds_before != NULL) {
		server_note_base_fds(fds_before, 8192);
		free(fds_before);
	}
	if (server_http == NULL) {
		cause_set(cause, "cannot create the event loop");
		return -1;
	}
	if (conn_init(server_base, server_http, server_token, cause) != 0)
		return -1;
	evhttp_set_max_body_size(server_http, PROTO_MAX_BODY);
	evhttp_set_max_headers_size(server_http, 64 * 1024);
	evhttp_set_allowed_methods(server_http,
	    EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
		EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	evhttp_set_gencb(server_http, server_handle, NULL);

	endpoint_socket_name(agent_pid, name, sizeof name);
	sl = endpoint_socket_addr(agent_pid, &sun);
	server_unix_fd = server_listen(
	    AF_UNIX, (struct sockaddr *)&sun, sl, "@probing socket", cause);
	if (server_unix_fd < 0)
		return -1;
	server_unix = conn_bind(server_unix_fd, CONN_UNIX);
	if (server_unix == NULL) {
		cause_set(cause, "cannot serve on @%s", name);
		return -1;
	}
	if (config_get(CONFIG_SERVER_PORT) != 0 &&
	    server_set_port_now((int)config_get(CONFIG_SERVER_PORT), cause) !=
		0) {
		/* A busy port (or no token) must not stop the agent: say
		 * so and go on. */
		log_info("%s", cause_str(*cause));
		if (getenv("PROBING") != NULL)
			fprintf(stderr, "probing: %s\n", cause_str(*cause));
		free(*cause);
		*cause = NULL;
		config_set("probing.server.port", "0", NULL);
	}
	config_on_change(CONFIG_SERVER_PORT, server_apply_port);
	err = pthread_create(&t, NULL, server_loop, NULL);
	if (err != 0) {
		cause_set(
		    cause, "cannot start the server thread: %s", strerror(err));
		return -1;
	}
	pthread_detach(t);
	pthread_setname_np(t, "probing-srv");
	conn_describe(limits, sizeof limits);
	log_info("serving on @%s (%s)", name, limits);
	return 0;
}

void
server_after_fork(void)
{
	int i;

	/* The child must not accept the parent's connections, nor keep
	 * the loop's fds. */
	if (server_unix_fd >= 0)
		close(server_unix_fd);
	if (server_tcp_fd >= 0)
		close(server_tcp_fd);
	server_unix_fd = server_tcp_fd = -1;
	server_unix = server_tcp = NULL;
	conn_after_fork();
	for (i = 0; i < server_nbase_fds; i++)
		close(server_base_fds[i]);
	server_nbase_fds = 0;
	pthread_mutex_init(&server_lock, NULL);
	pthread_cond_init(&server_work, NULL);
	TAILQ_INIT(&server_queue);
	server_threads = 0;
}
