/* The private header of `probing top`, in layers, each calling only the
 * ones above it in this file: the asynchronous client; the model (targets,
 * polling rounds); the drawing helpers; the panes; the screen; the command
 * (cmd-top.c), which owns the view and hears from the model through the
 * changed and round_done hooks. */
#ifndef PROBING_TOP_H
#define PROBING_TOP_H

#include <stdint.h>
#include <stdio.h>

#include <curses.h>
#include <event2/event.h>
#include <jansson.h>

#include "tui.h"

struct top;
struct aclient;

/* client.c: one persistent connection per target, requests queued and
 * sent one at a time, each with its own timeout. Everything runs on the
 * thread that runs the event base. */
struct aclient_reply {
	int status;        /* HTTP status, 0 when the agent never answered */
	json_t *body;      /* the reply when status is 200; borrowed */
	const char *cause; /* why it failed, NULL on success */
	int refused;       /* the connection could not be made */
};
typedef void (*aclient_cb)(void *arg, const struct aclient_reply *);

/* Owns a copy of ep and token; free with aclient_free. */
struct aclient *aclient_new(
    struct event_base *, const struct endpoint *, const char *token);
/* Drops every queued request without calling back. */
void aclient_free(struct aclient *);
/* Queues a request (body may be NULL and is not stolen); cb runs exactly
 * once, from the event loop, never from inside this call. */
void aclient_request(struct aclient *, const char *method, const char *path,
    json_t *body, int gil_ms, int timeout_ms, aclient_cb, void *arg);
/* A target's state, in the order of severity for sorting. */
enum top_state {
	TOP_CONNECTING,
	TOP_RUNNING,
	TOP_IDLE,
	TOP_HUNG,
	TOP_UNREACHABLE,
	TOP_EXITED,
	TOP_UNPROBED,
};
extern const char *const top_state_names[];

#define TOP_STEPS 256 /* recent steps kept per target */

/* One traced step: sums of the root modules' durations, in seconds. */
struct top_step {
	int64_t step;
	double fwd, bwd, opt;
	double end; /* wall time the optimizer step ended, 0 if not yet */
	double mb;
};

/* Per-module totals since the view started. */
struct top_module {
	char *name;
	int64_t calls, nbwd;
	double fwd, bwd, mb; /* seconds; mb is the highest seen */
};

/* A process the view watches. Owned by struct top; never freed while a
 * request of its aclient is in flight (unprobed ones have no aclient). */
struct top_target {
	struct top *top; /* the view it belongs to */
	struct endpoint ep;
	struct aclient *ac; /* NULL when unprobed */
	char *command;
	enum top_state state;
	pid_t pid;    /* the process's own pid, once known */
	int healthy;  /* /identity answered once */
	int rank;     /* in its job, -1 unknown */
	double id_at; /* clock_ms() of the last /identity answer */
	int busy;     /* a polling round is in flight */
	int seen;     /* found by the last scan */
	int64_t cursor;
	int64_t bound; /* highest id of the round in flight */

	struct top_step steps[TOP_STEPS]; /* ring, oldest first */
	int nsteps, first;
	double last_ms, median_ms, median_gap; /* derived from steps */
	double fwd_ms, bwd_ms, opt_ms, mb;

	struct top_module *mods;
	int nmods;
	double compute; /* seconds of root fwd+bwd+opt over all steps */

	char *frame;     /* innermost Python frame of the main thread */
	double frame_at; /* clock_ms() when it was asked */
	char *error;
	double reply_at; /* clock_wall() of the last trace reply */
};

/* A pane: a small vtable and its private state. */
struct pane;
struct pane_type {
	const char *name;  /* its tab and its title in the help */
	const char *label; /* short, for the key bar */
	const char *hints; /* its own keys, for the key bar and the help */
	int text_input;    /* letters go to an input line */
	void (*init)(struct pane *);
	void (*draw)(struct pane *, WINDOW *, int y, int h, int w);
	int (*key)(struct pane *, int key);          /* 1 if it used the key */
	void (*resize)(struct pane *, int h, int w); /* may be NULL */
	void (*free)(struct pane *);
};
struct pane {
	const struct pane_type *type;
	struct top *top;
	void *data;
};

/* The panes in tab order: the one table the enum, the F-keys (F2 on), the
 * digits (1 on), the tabs, the key bar and the help are made from. */
#define TOP_PANES(X)                           \
	X(TOP_PANE_PROCS, pane_processes_type) \
	X(TOP_PANE_MODULES, pane_modules_type) \
	X(TOP_PANE_STACKS, pane_stacks_type)   \
	X(TOP_PANE_SQL, pane_sql_type)         \
	X(TOP_PANE_EVAL, pane_eval_type)
#define TOP_PANE_ENUM(id, type) id,
enum top_pane { TOP_PANES(TOP_PANE_ENUM) TOP_NPANES };
#define TOP_PANE_FKEY_FIRST 2 /* F1 is help */

/* The whole view; one per program, owned by cmd-top.c. */
struct top {
	/* The model (top.c, top-poll.c, top-target.c). */
	struct event_base *base;
	struct cmd_ctx *ctx;
	struct top_target **targets;
	int ntargets;
	int scan;         /* no -t: rescan local processes */
	double last_scan; /* clock_ms() */
	struct top_target *sel;
	char status[256]; /* a message for the user, until status_until */
	int status_err;
	double status_until; /* clock_ms() */

	/* What the model tells its owner; set by cmd-top.c, may be NULL. */
	void (*changed)(struct top *); /* numbers or status changed */
	void (*round_done)(struct top *, struct top_target *);

	/* The command (cmd-top.c). */
	int interval_ms;
	int batch, iterations, done_iterations;
	int bench_frames;
	int dirty;
	struct event *tick, *redraw;

	/* The screen (ui.c and the panes). */
	struct pane panes[TOP_NPANES];
	int current; /* an enum top_pane */
	int help;
	int color;
	int utf8;
	int all_modules; /* the Modules pane sums every target */
	int detail;      /* the selected target's charts cover the pane */
};

/* top-target.c: one target's numbers; calls nothing above it. */
struct top_target *top_target_new(
    struct top *, const struct endpoint *, int probed);
void top_target_free(struct top_target *);
void top_target_set_error(struct top_target *, const char *cause);
/* Recomputes the derived numbers and the state of t. */
void top_target_derive(struct top_target *t);
/* Adds one step group (fwd, bwd, opt seconds; end wall time; MB). */
void top_target_merge_step(struct top_target *, int64_t step, double fwd,
    double bwd, double opt, double end, double mb);
/* The module named name, added when new. */
struct top_module *top_target_module(struct top_target *, const char *name);
/* The newest step number, -1 when none. */
int64_t top_target_last_step(const struct top_target *);
/* Recent step times in seconds, oldest first, at most max; how many. */
int top_target_step_times(const struct top_target *, double *out, int max);
/* Allocated memory (MB, the most seen in each step) of the recent steps,
 * oldest first, at most max; how many. */
int top_target_step_mbs(const struct top_target *, double *out, int max);
/* True when pid is gone or a zombie. */
int top_pid_gone(pid_t pid);
/* Tells the owner the numbers changed (top->changed). */
void top_changed(struct top *);
void top_set_status(struct top *, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* top-poll.c: a polling round on one target (health, steps, modules,
 * main-thread frame); ends with top->round_done. */
void top_poll(struct top *, struct top_target *);

/* top.c: the targets as a whole. */
/* The selected target (the first when the old one left), or NULL. */
struct top_target *top_selected(struct top *);
/* One tick: rescans when due, starts rounds, expires the status. */
void top_tick(struct top *);
/* Rescans local processes (no -t): probed ones and Python ones. */
void top_scan(struct top *);
/* True while a round of any target is in flight. */
int top_busy(const struct top *);
/* Injects the agent into unprobed t by running `probing -t PID inject`. */
void top_inject(struct top *, struct top_target *t);
/* Frees every target. */
void top_free(struct top *);

/* ui.c: the screen; calls the panes through TOP_PANES. */
int ui_start(struct top *, char **cause);
void ui_stop(void);
/* Frees the panes, stops reading keys and restores the terminal. */
void ui_end(struct top *);
void ui_draw(struct top *);
void ui_key(struct top *, int key);
void ui_resize(struct top *);

/* ui-draw.c: colours and text on the screen; below the panes and ui.c. */
enum ui_color {
	UI_NORMAL,
	UI_HEADER,
	UI_SELECTED,
	UI_RUNNING,
	UI_IDLE,
	UI_HUNG,
	UI_DEAD,
	UI_GREY,
	UI_ERROR,
	UI_KEY,
	UI_KEYTEXT,
	UI_TITLE,
	UI_SPARK,
	UI_NCOLORS
};
/* Sets up the colour pairs (attributes only with NO_COLOR); returns
 * whether colours are on. */
int ui_colors_init(void);
/* Colour pair and attributes of c. */
int ui_attr(enum ui_color);
/* Sets the attributes (colour pair included) of n cells at (y, x). */
void ui_chgat(WINDOW *, int y, int x, int n, int attr);
/* Writes at most w columns of UTF-8 text s at (y, x). */
void ui_text(WINDOW *, int y, int x, int w, const char *s);
/* Bytes of s that fill at most w columns; *cols gets the columns used. */
size_t ui_fit(const char *s, int w, int *cols);

/* ui-chart.c: charts from block characters (ASCII when !utf8), scaled
 * from zero to the largest value. */
/* The largest of n values, 0 for none. */
double ui_chart_max(const double *v, int n);
/* The newest n values grouped per per, each group's largest in out
 * (oldest first, at most max groups); how many. */
int ui_spark_buckets(const double *v, int n, int per, double *out, int max);
/* A sparkline of n values as UTF-8 (or ASCII) text, n columns wide. */
void ui_spark_text(char *buf, size_t len, const double *v, int n, int utf8);
/* A sparkline of the newest w of n values at (y, x). */
void ui_spark(WINDOW *, int y, int x, int w, const double *v, int n, int utf8);
/* A bar w cells long filled to frac (0..1) at (y, x). */
void ui_bar(WINDOW *, int y, int x, int w, double frac, int utf8);
/* Columns of the newest w of n values, h rows high, top left at (y, x). */
void ui_chart(
    WINDOW *, int y, int x, int h, int w, const double *v, int n, int utf8);

/* ui-detail.c: the selected target's step time and memory over time, over
 * the current pane (Enter in Processes); Esc, Enter or q closes it. */
extern const char ui_detail_hints[];
void ui_detail_draw(struct top *, WINDOW *, int y, int h, int w);
/* Handles a key while the view is open; 1 if it used the key. */
int ui_detail_key(struct top *, int key);

/* ui-list.c: the scrolling and selection every pane shares (htop's
 * Panel_onKey): Up/Down (and k/j) by one, PgUp/PgDn by a page, Home/End to
 * either end. A list with a selection moves it and keeps it in view; one
 * without scrolls its view, and End follows new items. */
struct ui_list {
	int select; /* items are selected, not just scrolled */
	int sel;    /* the selected item */
	int first;  /* the first item shown */
	int n;      /* items, as of the last ui_list_fit */
	int page;   /* rows shown, as of the last ui_list_fit */
	int follow; /* (no selection) keep the newest items in view */
};
/* The keys, for the help. */
extern const char ui_list_help[];
/* Moves sel or first for a navigation key; 1 if the key was one. */
int ui_list_key(struct ui_list *, int key);
/* Records n items in page rows and brings sel and first in range. */
void ui_list_fit(struct ui_list *, int n, int page);

/* ui-line.c: an input line with history, for the SQL and Eval panes. */
struct ui_line {
	char buf[1024];
	size_t len, pos;
	char *hist[64];
	int nhist, hpos;
};
/* Edits the line; returns 1 when Enter was hit on a non-empty line. */
int ui_line_key(struct ui_line *, int key);
void ui_line_draw(struct ui_line *, WINDOW *, int y, int w, const char *prompt);
void ui_line_clear(struct ui_line *);
void ui_line_free(struct ui_line *);

/* pane-*.c */
#define TOP_PANE_EXTERN(id, type) extern const struct pane_type type;
TOP_PANES(TOP_PANE_EXTERN)
/* The Processes pane as text, for --batch: a summary line, the header
 * and one line per target, sorted by the first column. */
void pane_processes_print(struct top *, FILE *);
/* The Modules pane as text, one table per probed target. */
void pane_modules_print(struct top *, FILE *);

#endif
