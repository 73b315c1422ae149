/* The agent: private interfaces between its parts.
 *
 * Threads: the constructor only starts the server thread ("probing-srv",
 * libevent loop). Requests that do real work run on request threads
 * ("probing-req"); Python runs only on py workers ("probing-py") that take
 * the GIL. No agent thread is a Python thread except while a py worker runs
 * a job. */
#ifndef PROBING_AGENT_H
#define PROBING_AGENT_H

#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include <sqlite3.h>

#include "config-keys.h"
#include "ring.h"

/* Python.h's object type, for files built without Python's headers. */
typedef struct _object PyObject;

/* agent.c */
extern pid_t agent_pid;
extern int agent_running; /* the server started (set by init.c) */
const char *agent_python_version(void);
/* Checks the interpreter is the version this agent was built for, and
 * notes the version; 0, or -1 with *cause. */
int agent_check_python(char **cause);

/* py-core.c: the module probing._core. */
/* GIL held: a new reference to a fresh probing._core module object. */
PyObject *py_core_new(void);

/* config.c: the live values; read from any thread, written on the loop. */
double config_get(enum config_id);
/* Validates and applies one key; returns 0, or -1 with *cause set. */
int config_set(const char *key, const char *value, char **cause);
/* Reads the env vars named in the key table, warning once on stderr for a
 * malformed one (when warn is set). */
void config_load_env(int warn);
/* Reads key=value lines written by `probing inject -D` for this pid into
 * PID.init in the per-user directory dir (an fd; -1: none), then removes
 * the file. */
void config_load_file(int dir);
json_t *config_to_json(void);
/* Makes a new value take effect; returns 0, or -1 with *cause set and then
 * the old value stays. Called on a request thread, never on the loop. */
typedef int (*config_apply_fn)(double value, char **cause);
void config_on_change(enum config_id, config_apply_fn);

/* conn.c: the connection limiter and the gate; loop thread only. */
#define CONN_MAX 128
/* Unix peers of the job's uid or root; TCP; unix peers of other uids
 * (answered 403 and closed, but held for that while). */
enum conn_kind { CONN_UNIX, CONN_TCP, CONN_UNIX_OTHER, CONN_KINDS };
/* What the head of a TCP request says about its token. */
enum conn_gate {
	CONN_GATE_MORE,    /* the head is not all in yet */
	CONN_GATE_PASS,    /* the right token */
	CONN_GATE_HEALTH,  /* no right token, but a GET /health */
	CONN_GATE_MISSING, /* no Authorization header */
	CONN_GATE_WRONG,   /* a wrong one (or two of them) */
	CONN_GATE_BAD,     /* no end of head within the buffer */
};
struct conn_slot {
	int used;
	int kind;         /* enum conn_kind */
	char peer[64];    /* "uid N" or the IP address: the per-peer key */
	int trusted;      /* may stay idle (evhttp's timeout) */
	int closing;      /* refused and answered: freed at the deadline */
	long deadline_ms; /* CLOCK_MONOTONIC: the first request's, or the
			     refusal's linger */
	int fd;           /* the socket, with dev/ino to notice it is gone */
	dev_t dev;
	ino_t ino;
	void *bev, *evcon; /* owned by evhttp */
	void *gate;        /* server.c's read event while gated */
};
/* Plain data; the loop thread owns it. */
struct conn_table {
	struct conn_slot slots[CONN_MAX];
	int cap[CONN_KINDS]; /* connections of each kind */
	int max_peer;        /* of one peer (but for CONN_UNIX) */
};
/* Sizes the limits from the fd limit nofile. */
void conn_table_init(struct conn_table *, long nofile);
/* Takes a slot for a new connection of kind from peer: its index, or -1
 * with *why when a limit is reached. The job's own user and root share
 * their kind's cap but have no per-peer one. */
int conn_admit(
    struct conn_table *, int kind, const char *peer, const char **why);
void conn_release(struct conn_table *, int i);
/* Connections of kind (-1: any) from peer (NULL: anyone). */
int conn_count(const struct conn_table *, int kind, const char *peer);
/* Whether an Authorization value (len bytes) is "Bearer <token>", the
 * scheme in any case, compared in constant time; 0 when token is NULL. */
int conn_token_ok(const char *value, size_t len, const char *token);
/* Reads the head of a request (len bytes peeked; full: no more fit). */
enum conn_gate conn_gate_check(
    const char *buf, size_t len, int full, const char *token);
struct event_base;
struct evhttp;
struct evhttp_bound_socket;
struct evhttp_connection;
/* Loop not yet running: hooks the limiter into http; token (or NULL)
 * must outlive it. 0, or -1 with *cause. */
int conn_init(
    struct event_base *, struct evhttp *, const char *token, char **cause);
/* Serves the listening socket fd (kind: CONN_UNIX or CONN_TCP), or NULL. */
struct evhttp_bound_socket *conn_bind(int fd, int kind);
/* Stops serving the listener of kind. */
void conn_unbind(int kind);
/* A request on evcon passed the peer check (trusted): it may idle. */
void conn_trust(struct evhttp_connection *, int trusted);
/* The sum of the caps: no more connections are ever held. */
int conn_capacity(const struct conn_table *);
/* Describes the limits for the log. */
void conn_describe(char *buf, size_t len);
void conn_after_fork(void);

/* thread.c: starts fn(arg) on a detached thread with every signal
 * blocked, named name; 0, or -1 (logged). */
int thread_start(void *(*fn)(void *), void *arg, const char *name);

/* request.c: the request the calling thread serves. */
/* Server: the thread now serves the request on fd, with timeout_ms. */
void request_begin(int fd, int timeout_ms);
void request_end(void);
/* Store: the query running now may take timeout_ms. */
void request_set_timeout(int timeout_ms);
/* How long GIL-needing work for the request may wait or run. */
int request_timeout_ms(void);
/* True once the client of the request went away. */
int request_gone(void);

/* server.c */
int server_start(char **cause);
void server_after_fork(void);
/* On a request's thread: true once its client has closed the connection
 * (it will read no answer). */

/* py.c: running C functions under the GIL on a py worker. */
typedef int (*py_fn)(void *arg, char **cause);
/* Runs fn(arg) under the GIL on a py worker. If the GIL cannot be had
 * within timeout_ms the job is dropped (never run later) and -1 returned
 * with a cause naming the GIL holder. Once started, it waits until done. */
int py_run(py_fn fn, void *arg, int timeout_ms, char **cause);
/* py_run, but timeout_ms also bounds the run: past it KeyboardInterrupt
 * is raised in fn's Python code (taking the GIL on the calling thread)
 * and, when fn then fails, *cause says it was interrupted. For code of
 * the job's that may not return (@probing.table functions). */
int py_run_bounded(py_fn fn, void *arg, int timeout_ms, char **cause);
int py_available(char **cause);
void py_after_fork(void);
/* GIL: takes back a KeyboardInterrupt raised in this thread that did not
 * land (see py.c for why not PyThreadState_SetAsyncExc(id, NULL)). */
void py_drop_async_exc(void);
/* py-layout.c: 0 when the interpreter's frames, thread states and code
 * objects are laid out as this agent was built for (checked against its
 * _PyRuntime.debug_offsets on 3.13+); else -1 and why, in *cause. */
int py_layout_check(char **cause);
/* Whether the interpreter is a free-threaded build (3.13+ say so). */
int py_layout_free_threaded(void);
/* bt-eval.c: finds the eval loop's extent once, under the GIL; then
 * bt_eval_range gives it ([lo, hi)), or -1 when it is not known. */
void bt_eval_init(void);
void bt_eval_calibrate(void);
/* Fork child: closes the fds the calibration left open (libunwind's). */
void bt_eval_after_fork(void);
int bt_eval_range(uintptr_t *lo, uintptr_t *hi);
/* py-gil.c: describes the thread holding the GIL into buf. */
void py_gil_holder(char *buf, size_t len);
long py_gil_holder_tid(void);

/* store.c: the SQLite store, serialized by its own lock. */
int store_open(char **cause);
/* Runs sql and returns {"columns","types","rows"}, or NULL with *cause
 * and *status (504 when it ran out of time, 413 when too big). It stops
 * after timeout_ms or when the client goes away. */
json_t *store_query(const char *sql, int timeout_ms, int *status, char **cause);
/* Is name (any case) one of the built-in python.* tables? Any thread. */
int store_is_builtin(const char *name);
/* probing.max_result_bytes, and the message for a result past it. */
size_t store_result_limit(void);
void store_too_big(char **cause);
/* Store lock held: runs sql for the agent itself, which may drop virtual
 * tables that users may not. 0, or -1 with *cause. */
int store_exec_internal(sqlite3 *, const char *sql, char **cause);

/* tbl-ring.c: ring buffers as read-only virtual tables. */
enum tbl_col_kind { TBL_I64, TBL_I32, TBL_F64, TBL_STR };
struct tbl_col {
	const char *name;
	const char *sqltype;
	enum tbl_col_kind kind;
	size_t offset; /* in the record; TBL_STR holds a const char * that
			  lives as long as the process (interned) */
};
struct tbl_ring_desc {
	const char *name; /* python.<name> */
	const struct tbl_col *cols;
	int ncols;
	struct ring *ring;
};
int tbl_ring_register(sqlite3 *, const struct tbl_ring_desc *, char **cause);
/* xOpen for every table: a zeroed cursor of size bytes (its first member
 * is the sqlite3_vtab_cursor). */
int tbl_cursor_open(size_t size, sqlite3_vtab_cursor **out);
/* Registers module as modname and creates python.<table> with it; 0, or
 * -1 with *cause. */
int tbl_create(sqlite3 *db, const char *table, const char *modname,
    const sqlite3_module *module, void *aux, char **cause);

/* tbl-torch-trace.c */
struct torch_trace_rec {
	int64_t id;
	int64_t step;
	int64_t seq;
	const char *module; /* interned */
	const char *stage;  /* static */
	double allocated;   /* MB */
	double duration;    /* s */
	double time;        /* unix time at the end of the call */
	int64_t thread_id;
	int64_t rank; /* RANK of the process, 0 without one */
};
extern struct ring tbl_torch_trace_ring;
int tbl_torch_trace_register(sqlite3 *, char **cause);

/* tbl-collectives.c: python.collectives, written by torch-dist.c. */
struct collectives_rec {
	int64_t id;
	int64_t seq;        /* the group's sequence number, -1 unknown */
	const char *op;     /* static */
	const char *group;  /* interned, NULL unknown */
	int64_t group_size; /* -1 unknown */
	int64_t numel, bytes;
	const char *dtype; /* interned */
	const char *state; /* static: running, done, failed, issued */
	double start;      /* unix time */
	double duration;   /* s; 0 while running */
	const char *site;  /* interned file:line of the caller */
	int64_t thread_id;
	int64_t rank; /* in the default group, -1 unknown */
};
extern struct ring tbl_collectives_ring;
int tbl_collectives_register(sqlite3 *, char **cause);

/* backtrace.c: every thread's Python and native stack. */
enum backtrace_frame_type { BACKTRACE_PYTHON, BACKTRACE_NATIVE };
struct backtrace_frame {
	enum backtrace_frame_type type;
	char *func;       /* "??" when unknown */
	char *file;       /* the source file, or the library of a native one */
	int lineno;       /* 0 when unknown or native */
	uintptr_t offset; /* native: address minus the library's load base */
};
struct backtrace_thread {
	long tid;
	char *name;     /* the threading name when known, else the comm */
	char *state;    /* "holding the GIL", "waiting for the GIL", ... */
	char *note;     /* NULL, or why native frames are missing */
	double stop_us; /* how long it was held stopped; < 0: it was not */
	struct backtrace_frame *frames; /* innermost first */
	int nframes;
};
/* Owns everything it points to; free with backtrace_free. */
struct backtrace {
	struct backtrace_thread *threads; /* the main thread first */
	int nthreads;
	int without_gil; /* Python frames were read without the GIL */
};
/* Captures every thread but the agent's (only_tid when non-zero), trying
 * the GIL for gil_ms first. Runs on a request thread; NULL with *cause. */
struct backtrace *backtrace_capture(long only_tid, int gil_ms, char **cause);
void backtrace_free(struct backtrace *);

/* bt-python.c: Python frames read through process_vm_readv on our own
 * pid (a bad pointer is an error, never a crash); no GIL needed. */
struct bth_layout;
struct bth_pyframe;
#define BT_PYRAW_ENTRY     1 /* the first frame its C eval call ran */
#define BT_PYRAW_GENERATOR 2
struct bt_pyraw { /* one frame as copied while its thread was held */
	uintptr_t code;
	int lasti; /* index of the instruction running */
	int flags; /* BT_PYRAW_* */
};
struct bt_pyframe { /* decoded; the strings belong to the reader */
	const char *func, *file;
	int lineno;
	int entry;
};
struct bt_py;
struct bt_py *bt_py_new(void);
void bt_py_free(struct bt_py *);
/* Indexes every interpreter's thread states by native thread id. */
void bt_py_index(struct bt_py *);
/* The indexed thread state of thread tid, or 0. */
uintptr_t bt_py_tstate(struct bt_py *, long tid);
/* Copies thread tid's frames into raw (at most max, innermost first)
 * without allocating or locking; returns the count, or -1 when tid runs
 * no Python. */
int bt_py_snap(struct bt_py *, long tid, struct bt_pyraw *raw, int max);
/* Where this CPython keeps a thread's frames, for the helper. */
void bt_py_layout(struct bth_layout *);
/* Turns n frames the helper copied into raw ones; returns the count. */
int bt_py_from_helper(
    const struct bth_pyframe *, int n, struct bt_pyraw *raw, int max);
/* Decodes n raw frames into out; returns how many are kept. */
int bt_py_decode(
    struct bt_py *, const struct bt_pyraw *raw, int n, struct bt_pyframe *out);

/* bt-native.c: each thread held in turn by the unwinding helper, which
 * unwinds its native stack and copies its Python frames in that stop. */
#define BT_NATIVE_MAX 128
struct bt_native { /* one thread's; py is malloc'd (bt_native_free) */
	uintptr_t ips[BT_NATIVE_MAX]; /* innermost first */
	int nips;                     /* -1: none, note says why */
	char note[160];
	double stop_us; /* how long the thread was held; < 0: it was not */
	struct bth_pyframe *py; /* copied while held; NULL: not copied */
	int npy;
};
/* Fills out[i] for thread tids[i] (Python thread state tstates[i] or 0).
 * One capture at a time; runs on a request thread. */
void bt_native_capture(const long *tids, const uintptr_t *tstates, int n,
    const struct bth_layout *, struct bt_native *out);
void bt_native_free(struct bt_native *out, int n);
/* Fork child: forgets the parent's helper. */
void bt_native_after_fork(void);

/* tbl-backtrace.c */
int tbl_backtrace_register(sqlite3 *, char **cause);

/* torch.c (torch-*.c and torch.h below it): torch_trace hooks. Called
 * once by the constructor; sets up tracing from a thread of its own
 * (under the GIL via py_run). */
void torch_init(void);

/* identity.c: this process's place in its job, read when asked. */
enum identity_env {
	ID_RANK,
	ID_LOCAL_RANK,
	ID_WORLD_SIZE,
	ID_LOCAL_WORLD_SIZE,
	ID_GROUP_RANK,
	ID_MASTER_ADDR,
	ID_MASTER_PORT,
	ID_RUN_ID,
	ID_SLURM_JOB_ID,
	ID_SLURM_PROCID,
	ID_SLURM_LOCALID,
	ID_SLURM_NTASKS,
	ID_OMPI_RANK,
	ID_OMPI_LOCAL_RANK,
	ID_OMPI_SIZE,
	IDENTITY_ENV_COUNT
};
struct identity {
	pid_t pid;
	char host[256];
	int rank, local_rank, world_size, local_world_size, group_rank;
	int master_port;
	int dist_rank, dist_world_size; /* -1 unless initialized */
	char job[320];
	char backend[32];
	char torch[64];
	char store_host[256];
	int store_port;
	double start_time;  /* unix time */
	const char *source; /* "torch.distributed", "environ" or "proc" */
	char env[IDENTITY_ENV_COUNT][256];
};
/* Reads the identity, waiting up to gil_ms for the GIL (else from
 * /proc/self/environ). Never fails; unknown numbers are -1. */
void identity_read(struct identity *, int gil_ms);
/* A new JSON object of the identity's public fields, or NULL. */
json_t *identity_json(const struct identity *);

/* job-store.c: this rank's endpoint in the job's rendezvous store. */
/* Publishes soon, from a thread of its own (never on the caller's). */
void jobstore_publish_async(void);
/* Request thread: the members published in the store of the job id
 * names, as [{rank, host, addr, port, pid}]; NULL with *cause. */
json_t *jobstore_members(const struct identity *, int timeout_ms, char **cause);

/* tbl-process.c */
int tbl_process_register(sqlite3 *, char **cause);

/* tables.c: every built-in table. */
int tbl_register_all(sqlite3 *, char **cause);

/* metrics.c: GET /metrics; the text (Prometheus format 0.0.4) as a JSON
 * string, which the server sends as it is. No GIL. */
json_t *metrics_run(json_t *body, int timeout_ms, int *status, char **cause);

/* eval.c: eval, completion and the repl's statements (see proto.h). */
/* On a request's own thread: runs code on a new thread and waits for its
 * end, stopping it after timeout_ms or when the client goes away. NULL
 * with *cause and *status when it could not run or did not stop. */
json_t *eval_run(const char *code, int timeout_ms, int *status, char **cause);
/* The evals running now, as a query result (no GIL). */
json_t *eval_list(void);
json_t *eval_complete(const char *text, int timeout_ms, char **cause);
json_t *eval_start(const char *code, int final, int timeout_ms, char **cause);
/* Runs on a request thread without the GIL; waits up to wait_ms. */
json_t *eval_wait(long id, int wait_ms, char **cause);
json_t *eval_interrupt(long id, int timeout_ms, char **cause);
/* Called once by the constructor: a thread of its own provides the
 * `probing` module (under the GIL via py_run) once Python runs. */
void eval_init(void);

/* tbl-python.c: python.<name> tables registered with @probing.table. */
/* GIL held: registers or replaces name; -1 with *cause (bad arguments). */
int tbl_python_add(
    const char *name, PyObject *fn, PyObject *columns, char **cause);
/* GIL held: removes user table name (its SQLite table goes at the next
 * query); -1 with *cause for a built-in or unknown name. */
int tbl_python_remove(const char *name, char **cause);
/* Store lock held, at the start of each query: calls the functions of
 * the tables sql names and makes their tables match. */
int tbl_python_refresh(
    sqlite3 *, const char *sql, int timeout_ms, char **cause);

#endif
