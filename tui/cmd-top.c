/* top: the command. Parses its options, owns the view (struct top), runs
 * the event loop and decides what a change means: a redraw on the screen,
 * or with --batch a text print once every target has ended its round. The
 * model (top.c) and the screen (ui.c) never call each other; both are
 * driven from here. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "clock.h"
#include "top.h"

#define TOP_REDRAW_DELAY_US 30000 /* one redraw for many replies */

/* The stats of --bench-frames, printed once the terminal is restored. */
struct cmd_top_bench {
	int ticks;
	double mean_ms, max_ms;
};

static void
cmd_top_redraw_cb(evutil_socket_t fd, short what, void *arg)
{
	struct top *top = arg;

	(void)fd;
	(void)what;
	top->dirty = 0;
	ui_draw(top);
}

/* top->changed on the screen: redraw a little later, once for many. */
static void
cmd_top_changed(struct top *top)
{
	struct timeval tv = { 0, TOP_REDRAW_DELAY_US };

	if (top->dirty || top->redraw == NULL)
		return;
	top->dirty = 1;
	evtimer_add(top->redraw, &tv);
}

static struct timeval
cmd_top_interval(const struct top *top)
{
	struct timeval tv = { top->interval_ms / 1000,
		(top->interval_ms % 1000) * 1000 };

	return tv;
}

/* top->round_done with --batch: prints once every target has finished
 * its round, then waits for the next iteration or stops. */
static void
cmd_top_batch_done(struct top *top, struct top_target *t)
{
	struct timeval tv;

	(void)t;
	if (top_busy(top))
		return;
	pane_processes_print(top, stdout);
	pane_modules_print(top, stdout);
	fflush(stdout);
	if (++top->done_iterations >= top->iterations) {
		event_base_loopbreak(top->base);
		return;
	}
	tv = cmd_top_interval(top);
	evtimer_add(top->tick, &tv);
}

static void
cmd_top_batch_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct top *top = arg;
	int i;

	(void)fd;
	(void)what;
	if (top->scan)
		top_scan(top);
	for (i = 0; i < top->ntargets; i++)
		top_poll(top, top->targets[i]);
	if (!top_busy(top))
		cmd_top_batch_done(top, NULL);
}

/* --bench-frames N (hidden): times N full redraws, alternating the
 * Processes and Modules panes so that most of the screen changes each
 * time. */
static void
cmd_top_bench(struct top *top, struct cmd_top_bench *b)
{
	double t0, dt, sum = 0;
	int i;

	for (i = 0; i < top->bench_frames; i++) {
		top->current = i % 2 ? TOP_PANE_MODULES : TOP_PANE_PROCS;
		t0 = clock_ms();
		ui_draw(top);
		dt = clock_ms() - t0;
		sum += dt;
		if (dt > b->max_ms)
			b->max_ms = dt;
	}
	b->mean_ms = sum / top->bench_frames;
	event_base_loopbreak(top->base);
}

/* What the tick event carries. */
struct cmd_top_tick {
	struct top *top;
	struct cmd_top_bench *bench;
};

static void
cmd_top_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct cmd_top_tick *tick = arg;

	(void)fd;
	(void)what;
	if (tick->top->bench_frames > 0 && ++tick->bench->ticks > 3) {
		cmd_top_bench(tick->top, tick->bench);
		return;
	}
	top_tick(tick->top);
}

static void
cmd_top_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct top *top = arg;

	(void)what;
	if (sig == SIGWINCH)
		ui_resize(top);
	else
		event_base_loopbreak(top->base);
}

/* Parses a positive number of seconds into ms; -1 if it is not one. */
static int
cmd_top_parse_secs(const char *text)
{
	char *end;
	double v = strtod(text, &end);

	if (*text == '\0' || *end != '\0' || !(v >= 0.05) || v > 3600)
		return -1;
	return (int)(v * 1000);
}

static const struct option cmd_top_longopts[] = {
	{ "batch", no_argument, NULL, 'b' },
	{ "iterations", required_argument, NULL, 'n' },
	{ "interval", required_argument, NULL, 'd' },
	{ "bench-frames", required_argument, NULL, 'B' },
	{ NULL, 0, NULL, 0 },
};

/* Parses the options into top; 0, or the exit code of a usage error. */
static int
cmd_top_options(struct top *top, struct cmd_ctx *ctx, int argc, char **argv)
{
	char *end;
	int c;

	top->interval_ms = 1000;
	top->iterations = 1;
	while ((c = cmd_getopt(ctx, argc, argv)) != -1) {
		switch (c) {
		case 'b':
			top->batch = 1;
			break;
		case 'n':
			top->iterations = (int)strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' ||
			    top->iterations < 1)
				return cmd_usage(ctx->entry,
				    "invalid --iterations '%s': expected a "
				    "positive number",
				    optarg);
			break;
		case 'd':
			top->interval_ms = cmd_top_parse_secs(optarg);
			if (top->interval_ms < 0)
				return cmd_usage(ctx->entry,
				    "invalid --interval '%s': expected seconds "
				    "(0.05 to 3600)",
				    optarg);
			break;
		case 'B':
			top->bench_frames = atoi(optarg);
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cmd_usage(ctx->entry, "too many arguments");
	return 0;
}

/* The live screen until q, a signal or a lost terminal. */
static int
cmd_top_screen(struct top *top)
{
	static const int signos[] = { SIGINT, SIGTERM, SIGHUP, SIGWINCH };
	struct event *sigs[sizeof signos / sizeof signos[0]] = { NULL };
	struct cmd_top_bench bench = { 0, 0, 0 };
	struct cmd_top_tick tick = { top, &bench };
	struct timeval tv = cmd_top_interval(top);
	char *cause = NULL;
	size_t i;
	int rc = 0;

	top->changed = cmd_top_changed;
	top->tick =
	    event_new(top->base, -1, EV_PERSIST, cmd_top_tick_cb, &tick);
	top->redraw = evtimer_new(top->base, cmd_top_redraw_cb, top);
	for (i = 0; i < sizeof signos / sizeof signos[0]; i++) {
		sigs[i] =
		    evsignal_new(top->base, signos[i], cmd_top_signal_cb, top);
		event_add(sigs[i], NULL);
	}
	if (ui_start(top, &cause) != 0) {
		rc = cmd_fail(cause);
		free(cause);
		goto out;
	}
	event_add(top->tick, &tv);
	event_active(top->tick, 0, 0);
	event_base_dispatch(top->base);
	ui_end(top);
	if (top->bench_frames > 0)
		fprintf(stderr, "frames %d mean_ms %.3f max_ms %.3f\n",
		    top->bench_frames, bench.mean_ms, bench.max_ms);
out:
	top->changed = NULL;
	for (i = 0; i < sizeof signos / sizeof signos[0]; i++)
		if (sigs[i] != NULL)
			event_free(sigs[i]);
	return rc;
}

static int
cmd_top_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	struct top top = { 0 };
	int i, rc;

	top.ctx = ctx;
	if ((rc = cmd_top_options(&top, ctx, argc, argv)) != 0)
		return rc;
	top.scan = ctx->ntargets == 0;
	signal(SIGPIPE, SIG_IGN);
	top.base = event_base_new();
	if (top.base == NULL)
		return cmd_fail("cannot start the event loop");
	for (i = 0; i < ctx->ntargets; i++)
		top_target_new(&top, &ctx->targets[i], 1);
	if (top.batch) {
		top.round_done = cmd_top_batch_done;
		top.tick = evtimer_new(top.base, cmd_top_batch_tick_cb, &top);
		event_active(top.tick, 0, 0);
		event_base_dispatch(top.base);
	} else
		rc = cmd_top_screen(&top);
	top_free(&top);
	if (top.redraw != NULL)
		event_free(top.redraw);
	if (top.tick != NULL)
		event_free(top.tick);
	event_base_free(top.base);
	return rc;
}

const struct cmd_entry cmd_top_entry = {
	.name = "top",
	.args = "[--batch] [--iterations N] [--interval SECONDS]",
	.help = "watch one or many processes live: steps, modules, stacks, "
		"SQL, eval",
	.detail =
	    "  -t TARGETS          pids and host:port, comma-separated; "
	    "without it every\n"
	    "                      local probed process, and unprobed "
	    "Python ones to inject\n"
	    "  -b, --batch         print the Processes and Modules panes "
	    "as text and exit\n"
	    "  -n, --iterations N  with --batch: print N times (default "
	    "1)\n"
	    "  -d, --interval SECS seconds between refreshes (default 1)\n"
	    "keys: F1 or ? lists them all, F2 on or 1 on the panes, q or F10 "
	    "quits; states:\n"
	    "running, idle, hung (no step for 5x the median step time, at "
	    "least 1 s),\n"
	    "exited, unreachable\n",
	.opts = "bn:d:",
	.longopts = cmd_top_longopts,
	.target = CMD_TARGET_OPTIONAL,
	.exec = cmd_top_exec,
};
