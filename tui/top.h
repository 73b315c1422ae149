/* The private header of `probing top`: targets, panes, the screen and the
 * asynchronous client. */
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

/* aclient.c: one persistent connection per target, requests queued and
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
/* Requests queued or in flight. */
int aclient_queued(const struct aclient *);

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
	struct endpoint ep;
	struct aclient *ac; /* NULL when unprobed */
	char *command;
	enum top_state state;
	pid_t pid;   /* the process's own pid, once known */
	int healthy; /* /health answered once */
	int busy;    /* a polling round is in flight */
	int seen;    /* found by the last scan */
	int64_t cursor;
	int64_t bound; /* highest id of the round in flight */

	struct top_step steps[TOP_STEPS]; /* ring, oldest first */
	int nsteps, first;
	double last_ms, median_ms, median_gap; /* derived from steps */
	double fwd_ms, bwd_ms, opt_ms, mb;

	struct top_module *mods;
	int nmods;
	double compute; /* seconds of root fwd+bwd+opt over all steps */

	char *frame; /* innermost Python frame of the main thread */
	double frame_at;
	char *error;
	double reply_at; /* CLOCK_REALTIME of the last trace reply */
};

/* A pane: a small vtable and its private state. */
struct pane;
struct pane_type {
	const char *name;
	int fkey;          /* F-key number that shows it */
	const char *hints; /* the pane's keys, for the key bar */
	int text_input;    /* letters go to an input line */
	void (*init)(struct pane *);
	void (*draw)(struct pane *, WINDOW *, int y, int h, int w);
	int (*key)(struct pane *, int key); /* 1 if it used the key */
	void (*resize)(struct pane *, int h, int w);
	void (*free)(struct pane *);
};
struct pane {
	const struct pane_type *type;
	struct top *top;
	void *data;
};

enum {
	TOP_PANE_PROCS,
	TOP_PANE_MODULES,
	TOP_PANE_STACKS,
	TOP_PANE_SQL,
	TOP_PANE_EVAL,
	TOP_NPANES
};

/* The whole view; one per program. */
struct top {
	struct event_base *base;
	struct cmd_ctx *ctx;
	struct top_target **targets;
	int ntargets;
	int scan; /* no -t: rescan local processes */
	int interval_ms;
	int batch, iterations, done_iterations;
	int bench_frames;
	struct top_target *sel;
	int sort_col, sort_rev;
	int all_modules;
	struct pane panes[TOP_NPANES];
	int current;
	int help;
	int color;
	int utf8;
	char status[256];
	int status_err;
	double status_until;
	int dirty;
	struct event *tick, *redraw;
};

/* cmd-top.c */
double top_now(void);  /* CLOCK_MONOTONIC seconds */
double top_wall(void); /* CLOCK_REALTIME seconds */
struct top_target *top_selected(struct top *);
void top_set_status(struct top *, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void top_changed(struct top *);
void top_inject(struct top *, struct top_target *);
/* Orders targets by the Processes pane's sort column. */
void top_sort(struct top *);
/* Formats a duration in seconds as ms text, "-" when unknown (< 0). */
void top_fmt_ms(char *buf, size_t len, double secs);

/* ui.c */
int ui_start(struct top *, char **cause);
void ui_stop(void);
/* Frees the panes, stops reading keys and restores the terminal. */
void ui_end(struct top *);
void ui_draw(struct top *);
void ui_key(struct top *, int key);
void ui_resize(struct top *);
/* Colour pairs (attributes only when colours are off). */
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
	UI_SPARK
};
int ui_attr(enum ui_color);
/* Sets the attributes (colour pair included) of n cells at (y, x). */
void ui_chgat(WINDOW *, int y, int x, int n, int attr);
/* Writes at most w columns of UTF-8 text s at (y, x). */
void ui_text(WINDOW *, int y, int x, int w, const char *s);
/* An input line with history: edits and returns 1 when Enter was hit. */
struct ui_line {
	char buf[1024];
	size_t len, pos;
	char *hist[64];
	int nhist, hpos;
};
int ui_line_key(struct ui_line *, int key);
void ui_line_draw(struct ui_line *, WINDOW *, int y, int w, const char *prompt);
void ui_line_free(struct ui_line *);

/* pane-*.c */
extern const struct pane_type pane_processes_type;
extern const struct pane_type pane_modules_type;
extern const struct pane_type pane_stacks_type;
extern const struct pane_type pane_sql_type;
extern const struct pane_type pane_eval_type;
/* Text lines shared by the screen and --batch. */
void pane_processes_header(char *, size_t, int w);
void pane_processes_line(struct top_target *, char *, size_t, int w);
void pane_processes_print(struct top *, FILE *);
/* Modules of t, or of every target when t is NULL; sorted by time.
 * Returns a malloc'd array of *n copies whose names are borrowed. */
struct top_module *pane_modules_collect(
    struct top *, struct top_target *t, int *n, double *compute);
void pane_modules_print(struct top *, FILE *);

#endif
