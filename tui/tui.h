/* The probing program: commands, the client and output formatting. */
#ifndef PROBING_TUI_H
#define PROBING_TUI_H

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <sys/types.h>

#include <jansson.h>

#include "endpoint.h"

#define EXIT_USAGE 2

/* What every command gets: global options and parsed targets. */
struct cmd_ctx {
	const char *target_text; /* -t as given, or NULL */
	struct endpoint *targets;
	int *target_ranks; /* parallel to targets: the rank, -1 unless found
			    * through a job */
	int ntargets;
	int timeout_ms; /* how long the agent may wait for the GIL */
	const char *token;
	const struct cmd_entry *entry;
};

/* What target a command takes; cmd.c resolves it before exec runs. */
enum cmd_target {
	CMD_TARGET_NONE,     /* -t is a usage error */
	CMD_TARGET_REQUIRED, /* one or more */
	CMD_TARGET_OPTIONAL, /* zero or more (top scans without one) */
};

/* A command, tmux's cmd_entry: what it is called, which options and
 * which target it takes (cmd.c takes -t out of argv and resolves the
 * targets into cmd_ctx before exec), its help, and exec. */
struct cmd_entry {
	const char *name;
	const char *alias;
	const char *args; /* usage after the name */
	const char *help; /* one line */
	const char
	    *detail; /* option lines for `help COMMAND` and the man page */
	/* more help made from another table (config keys), after detail;
	 * may be NULL */
	void (*more)(FILE *);
	/* its getopt options besides -t ("f:"); NULL: none, and exec parses
	 * its arguments itself without getopt */
	const char *opts;
	const struct option *longopts; /* its long options, or NULL */
	enum cmd_target target;
	int (*exec)(struct cmd_ctx *, int argc, char **argv);
};

/* cmd.c */
extern const struct cmd_entry *const cmd_table[];
const struct cmd_entry *cmd_find(const char *name);
int cmd_usage(const struct cmd_entry *, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int cmd_fail(const char *cause);
void cmd_print_help(FILE *, const struct cmd_entry *);
void cmd_print_overview(FILE *);
void cmd_print_man(FILE *);
/* Takes -t/--target out of argv (the command's own options are known from
 * its entry) and resolves the targets its entry asks for; 0, or the exit
 * code of a usage error. Runs once, before exec. */
int cmd_prepare(struct cmd_ctx *, int *argc, char **argv);
/* getopt_long over the options the command's entry declares: the next
 * option, -1 at the end, or '?' after reporting a usage error. */
int cmd_getopt(struct cmd_ctx *, int argc, char **argv);
/* Parses the options of a command whose only option is -f FORMAT (its
 * entry's opts "f:"); 0, or -1 after a usage error. */
int cmd_getopt_format(struct cmd_ctx *, int argc, char **argv, int *fmt);
/* Parses -f FORMAT; returns the format index or -1 after a usage error. */
int cmd_parse_format(
    const struct cmd_entry *, const char *arg, const char *const *allowed);

/* cmd-*.c */
extern const struct cmd_entry cmd_query_entry;
extern const struct cmd_entry cmd_eval_entry;
extern const struct cmd_entry cmd_evals_entry;
extern const struct cmd_entry cmd_repl_entry;
extern const struct cmd_entry cmd_config_entry;
extern const struct cmd_entry cmd_list_entry;
extern const struct cmd_entry cmd_top_entry;
extern const struct cmd_entry cmd_tables_entry;
extern const struct cmd_entry cmd_inject_entry;
extern const struct cmd_entry cmd_help_entry;
extern const struct cmd_entry cmd_backtrace_entry;
extern const struct cmd_entry cmd_hang_entry;
extern const struct cmd_entry cmd_metrics_entry;
extern const struct cmd_entry cmd_trace_entry;
extern const struct cmd_entry cmd_completion_entry;

/* One target's answer for cmd_each_target; nonzero counts it as failed. */
typedef int (*cmd_each_fn)(
    struct cmd_ctx *, const struct endpoint *, json_t *reply, void *arg);
/* cmd_each_target's flags. */
#define CMD_EACH_FANOUT 1 /* several targets asked at once (fanout.c) */
/* Sends the same request to every target (in turn, or at once with
 * CMD_EACH_FANOUT) and hands each reply to fn (may be NULL) in the order
 * of the targets; a target that fails is reported on stderr (named when
 * there are several). Stops after a Ctrl-C that client_catch_sigint
 * caught. Returns how many failed. */
int cmd_each_target(struct cmd_ctx *, int flags, const char *method,
    const char *path, json_t *body, cmd_each_fn fn, void *arg);
/* A cmd_each_fn gathering every target's table into the json_t * at arg:
 * the table itself for one target, else all rows with a first "target"
 * column. */
int cmd_merge_rows(
    struct cmd_ctx *, const struct endpoint *, json_t *table, void *arg);

/* client.c: one blocking request. Returns 0 with *reply set (a JSON
 * object) when the agent answered 200; otherwise -1 with *cause (the
 * agent's own message when it sent one) and *status (0 when it never
 * answered). */
int client_request(const struct endpoint *, const char *token,
    const char *method, const char *path, json_t *body, int gil_timeout_ms,
    int wait_ms, json_t **reply, int *status, char **cause);
/* 1 if pid's own agent listens on its unix socket, 0 if none does, -1
 * with *cause if another process holds the name. */
int client_probe_pid(pid_t pid, char **cause);
/* Set by the SIGINT handler client_catch_sigint installs: a request in
 * flight then ends with "interrupted after N s" (closing the connection,
 * which stops the work in the agent). */
extern volatile sig_atomic_t client_interrupted;
void client_catch_sigint(void);

/* peer.c: 0 when the listener behind the unix socket fd is pid (or a
 * thread of it) as pid's uid or root; else -1 with *cause. */
int peer_check(int fd, pid_t pid, char **cause);
/* Why pid's agent could not be reached (err from connect) into *cause. */
void client_no_agent(pid_t pid, int err, char **cause);

/* procs.c: local processes with an agent. */
/* Reads /proc/PID/cmdline as one line (spaces for NULs, control
 * characters escaped); malloc'd. */
char *procs_cmdline(pid_t);
/* Pids whose own agent listens on @probing-PID, in /proc/net/unix
 * order; malloc'd, count in *n. */
pid_t *procs_probed(int *n);

/* cmd-inject.c */
int cmd_inject_agent_path(
    int major, int minor, char *out, size_t len, char **cause);

/* remote-exec.c: asks pid (python major.minor, 3.14+) to load the agent
 * at path (as the target sees it) through sys.remote_exec; 0 once asked,
 * which is no promise that it will: the caller waits for the agent. */
int remote_exec_load(
    pid_t pid, int major, int minor, const char *agent, char **cause);

/* targets.c: the -t text as endpoints (pid, host:port, lists, @FILE,
 * job:TARGET). 0, or -1 with *cause and *usage set when the text itself
 * is wrong (rather than a target that could not be asked). */
int targets_parse(struct cmd_ctx *, const char *text, struct endpoint **out,
    int **ranks, int *n, int *usage, char **cause);
/* Target i for a message: "rank R (NAME)" when its rank is known, else
 * NAME; in buf. */
const char *targets_label(
    const struct cmd_ctx *, int i, char *buf, size_t size);

/* fanout.c: one request to many targets at once. */
struct fanout_result {
	json_t *reply; /* the answer when it succeeded */
	int status;    /* HTTP status, 0 when none came */
	char *cause;   /* why it failed, else NULL */
};
/* Sends the request to every endpoint at once (bounded connections), each
 * with its own deadline; fills out[i] for eps[i] and returns the number
 * that failed. */
int fanout_request(const struct endpoint *eps, int n, const char *token,
    const char *method, const char *path, json_t *body, int gil_ms,
    int timeout_ms, struct fanout_result *out);
/* Frees the results and the array. */
void fanout_free(struct fanout_result *, int n);

/* cmd-query.c */
json_t *cmd_query_run(struct cmd_ctx *, const char *sql, int *failed);

/* stack.c: python.backtrace rows grouped into threads. */
/* What a thread is doing, as a value (from the agent's thread_state). */
enum stack_state {
	STACK_UNKNOWN,
	STACK_GIL_HOLDER,
	STACK_GIL_WAITING,
	STACK_RUNNING,
	STACK_IDLE,
};
/* The query the groups are made from; a WHERE or ORDER BY may follow. */
extern const char stack_sql[];
/* The same with each row's _rank and _pid from python.process. */
extern const char stack_merge_sql[];
/* The value of a thread_state text; STACK_UNKNOWN for NULL or new text. */
enum stack_state stack_state(const char *text);
/* Rows of python.backtrace (any column order; a "target" column when from
 * several targets) as [{target?, thread_id, thread_name, state, note,
 * frames: [{type, func, file, depth, lineno (Python) or offset}]}],
 * threads in the order of the rows. */
json_t *stack_threads(json_t *result);

/* stack-merge.c: many targets' threads as one prefix tree. */
/* A tree {ranks, children: [{func, file, lineno, frame_type, ranks,
 * children}]} of threads (stack_threads' shape, each with a "target");
 * labels maps each target name to its rank (or pid). The interpreter's
 * own native frames are collapsed unless native_all. */
json_t *stack_merge(json_t *threads, json_t *labels, int native_all);
/* Writes a sorted rank list as compact ranges: 0-1,3. */
void stack_merge_ranges(json_t *ranks, char *buf, size_t len);
/* Prints the tree, a branch only some ranks take in colour (or marked). */
void stack_merge_print(FILE *, json_t *tree, int color);
/* Hands the tree to emit line by line, outermost first: depth, whether
 * only some of the parent's ranks take the branch, and the text. */
typedef void (*stack_merge_emit_fn)(
    void *arg, int depth, int part, const char *text);
void stack_merge_lines(json_t *tree, stack_merge_emit_fn, void *arg);

/* fmt.c: query results printed as table, json or csv. */
/* Whether to colour output on f: a terminal and NO_COLOR unset. */
int fmt_color(FILE *);
enum fmt_kind { FMT_TABLE, FMT_JSON, FMT_CSV };
extern const char *const fmt_names[];
/* result: {"columns": [...], "rows": [[...]]}. */
void fmt_print(FILE *, enum fmt_kind, json_t *result);
/* Adds result's rows to *merged (made on first use) with a first column
 * naming target: how a result from several targets looks everywhere. */
void fmt_merge_target(json_t **merged, json_t *result, const char *target);
/* A JSON value as text (strings bare, null empty); malloc'd. */
char *fmt_value(json_t *);
/* The index of the column named name in result, or -1: results are read
 * by column name, never by position. */
int fmt_col(json_t *result, const char *name);
/* The cell of row in column col (from fmt_col); NULL when col is -1. */
json_t *fmt_cell(json_t *row, int col);
/* A duration in seconds as millisecond text; "-" when unknown (< 0). */
void fmt_ms(char *buf, size_t len, double secs);

#endif
