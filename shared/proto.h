/* The wire protocol: route names, limits and the HTTP response parser
 * (the one tui/client.c uses). */
#ifndef PROBING_PROTO_H
#define PROBING_PROTO_H

#include <stddef.h>

/* Routes. Bodies are JSON; every error reply is {"error": "..."}. */
#define PROTO_HEALTH "/health" /* GET: pid, python, version, tcp_port */
#define PROTO_QUERY  "/query"  /* POST {"sql"}: columns, types, rows */
/* POST {"code"}: output, error, exit; "interrupted_after" (seconds) when
 * the timeout header's time ran out and it was stopped. */
#define PROTO_EVAL "/eval"
/* GET: the evals running now, as a query result. */
#define PROTO_EVALS    "/evals"
#define PROTO_CONFIG   "/config"   /* GET: keys; POST {"key","value"} */
#define PROTO_COMPLETE "/complete" /* POST {"text"}: matches */
#define PROTO_IDENTITY "/identity" /* GET: rank, world_size, job, ... */
/* GET: the identity plus "members" read from the job's store (or
 * "store_error" saying why not). */
#define PROTO_JOB "/job"
/* GET: Prometheus text format 0.0.4 (text/plain), not JSON. */
#define PROTO_METRICS "/metrics"
/* The repl: a statement runs on a thread of its own so that it can be
 * interrupted. start: POST {"code","final"} -> {"more": true} while the
 * statement is incomplete, {"done": true, "output","error"} for a syntax
 * error, else {"id"}. wait: POST {"id","wait_ms"} -> {"done","output"}
 * (output printed since the last wait), and when done "error" and "exit"
 * (it raised SystemExit). interrupt: POST {"id"} -> {"interrupted"}. */
#define PROTO_EVAL_START     "/eval/start"
#define PROTO_EVAL_WAIT      "/eval/wait"
#define PROTO_EVAL_INTERRUPT "/eval/interrupt"
#define PROTO_MAX_WAIT_MS    10000 /* the longest /eval/wait */

#define PROTO_MAX_BODY (1024 * 1024)
/* The largest answer a client reads: probing.max_result_bytes at its
 * highest (1 GB), JSON-escaped, fits. */
#define PROTO_MAX_ANSWER     ((size_t)4 << 30)
#define PROTO_TIMEOUT_HDR    "X-Probing-Timeout-Ms"
#define PROTO_DEFAULT_GIL_MS 5000

/* A parsed HTTP response; body is malloc'd and NUL-terminated. */
struct proto_response {
	int status;
	char *body;
	size_t body_len;
	size_t used; /* bytes of buf the response took */
	size_t need; /* with 0 returned: the whole response's length, when
	               * the headers said (0 when it ends at EOF) */
	int close;   /* the server closes the connection after it */
};

/* Parses the HTTP/1.x response at the front of buf (Content-Length,
 * chunked, or up to EOF), refusing a body over max bytes ("answer larger
 * than N MB"). Returns 1 when buf holds a whole response, 0 when more
 * bytes are needed, -1 with *cause set when it is malformed. */
int proto_parse_response(const char *buf, size_t len, int eof, size_t max,
    struct proto_response *out, char **cause);
void proto_response_clear(struct proto_response *);

#endif
