/* repl: an interactive Python prompt whose statements run in the target.
 *
 * Line editing and history come from libedit (its readline interface,
 * driven through the callback API so that Ctrl-C at the prompt is seen
 * between keys). Whether an input is complete is decided in the target
 * with codeop, the Python REPL's own rule; a complete statement runs on a
 * thread of its own in the target, and the client polls for its output.
 * Ctrl-C while it runs returns to the prompt at once and asks the agent to
 * raise KeyboardInterrupt in that thread; see agent/eval.c for when it
 * lands. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#include <editline/readline.h>

#include "log.h"
#include "proto.h"
#include "xmalloc.h"
#include "tui.h"

#define REPL_POLL_MS     200 /* one /eval/wait; bounds Ctrl-C latency */
#define REPL_HISTORY_MAX 1000

/* Python's own completer delimiters: '.' is not one, so `model.ba` is a
 * single word. */
static char repl_word_breaks[] = " \t\n`~!@#$%^&*()-=+[{]}\\|;:'\",<>/?";

struct repl {
	const struct endpoint *ep;
	const char *token;
	int timeout_ms;
	int tty;
	int failed; /* a statement raised, or a request failed */
	int leave;  /* exit(), SystemExit, or the agent went away */
};

static volatile sig_atomic_t repl_sigint;
/* For the completion callback, which libedit calls without context. */
static struct repl *repl_current;
static char **repl_matches;
static char *repl_line;
static int repl_line_ready;

static void
repl_on_sigint(int sig)
{
	(void)sig;
	repl_sigint = 1;
}

/* One request; prints the failure and returns NULL when it fails. A
 * target that never answered ends the repl. */
static json_t *
repl_request(struct repl *r, const char *path, json_t *body, int wait_ms)
{
	json_t *reply;
	char *cause = NULL;
	int status;

	if (client_request(r->ep, r->token, "POST", path, body, r->timeout_ms,
		wait_ms, &reply, &status, &cause) != 0) {
		fprintf(stderr, "probing: %s\n", cause_str(cause));
		free(cause);
		r->failed = 1;
		if (status == 0)
			r->leave = 1;
		reply = NULL;
	}
	json_decref(body);
	return reply;
}

static void
repl_print(FILE *f, json_t *reply, const char *key)
{
	const char *s = json_string_value(json_object_get(reply, key));

	if (s != NULL && *s != '\0') {
		fputs(s, f);
		fflush(f);
	}
}

/* Asks the agent to stop statement id, which nobody waits for now. */
static void
repl_interrupt(struct repl *r, json_int_t id)
{
	json_t *reply;

	fputs("\nKeyboardInterrupt\n", stderr);
	reply = repl_request(r, PROTO_EVAL_INTERRUPT,
	    json_pack("{s:I}", "id", id), r->timeout_ms + 5000);
	if (reply == NULL)
		fputs("probing: the statement may still be running in the "
		      "target (its output is dropped)\n",
		    stderr);
	json_decref(reply);
}

/* Prints statement id's output as it comes, until it ends or Ctrl-C. */
static void
repl_wait(struct repl *r, json_int_t id)
{
	json_t *reply;

	for (;;) {
		if (repl_sigint) {
			repl_sigint = 0;
			repl_interrupt(r, id);
			return;
		}
		reply = repl_request(r, PROTO_EVAL_WAIT,
		    json_pack("{s:I, s:i}", "id", id, "wait_ms", REPL_POLL_MS),
		    REPL_POLL_MS + 10000);
		if (reply == NULL)
			return;
		repl_print(stdout, reply, "output");
		if (json_is_true(json_object_get(reply, "done"))) {
			if (json_is_true(json_object_get(reply, "truncated")))
				fputs("probing: output over 16 MiB was "
				      "dropped\n",
				    stderr);
			if (json_is_string(json_object_get(reply, "error")))
				r->failed = 1;
			repl_print(stderr, reply, "error");
			if (json_is_true(json_object_get(reply, "exit")))
				r->leave = 1;
			json_decref(reply);
			return;
		}
		json_decref(reply);
	}
}

/* Sends one input; runs it when complete. Returns 1 when the statement
 * needs more lines. final: compile what there is (end of input). */
static int
repl_submit(struct repl *r, const char *code, int final)
{
	json_t *reply, *id;
	int more;

	reply = repl_request(r, PROTO_EVAL_START,
	    json_pack("{s:s, s:b}", "code", code, "final", final),
	    r->timeout_ms + 10000);
	if (reply == NULL)
		return 0;
	repl_print(stderr, reply, "output"); /* compile-time warnings */
	more = json_is_true(json_object_get(reply, "more"));
	id = json_object_get(reply, "id");
	if (json_is_integer(id))
		repl_wait(r, json_integer_value(id));
	else if (!more) {
		if (json_is_string(json_object_get(reply, "error")))
			r->failed = 1;
		repl_print(stderr, reply, "error");
	}
	json_decref(reply);
	return more;
}

/* Is line `exit()` or `quit()`? They leave the repl; run in the target,
 * site's versions would close its stdin. */
static int
repl_is_exit(const char *line)
{
	char word[16];
	size_t n = 0;

	for (; *line != '\0' && n < sizeof word - 1; line++) {
		if (!isspace((unsigned char)*line))
			word[n++] = *line;
	}
	word[n] = '\0';
	return *line == '\0' &&
	    (strcmp(word, "exit()") == 0 || strcmp(word, "quit()") == 0);
}

static int
repl_is_blank(const char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	return *s == '\0';
}

/* Does a line at column 0 continue the statement before it? */
static int
repl_continues(const char *line)
{
	static const char *const words[] = { "else", "elif", "except",
		"finally" };
	size_t i, n;

	for (i = 0; i < sizeof words / sizeof *words; i++) {
		n = strlen(words[i]);
		if (strncmp(line, words[i], n) == 0 &&
		    !isalnum((unsigned char)line[n]) && line[n] != '_')
			return 1;
	}
	return 0;
}

/* Appends line to the pending input *buf (NULL when none). */
static void
repl_append(char **buf, const char *line)
{
	char *n;

	if (*buf == NULL) {
		*buf = xstrdup(line);
		return;
	}
	xasprintf(&n, "%s\n%s", *buf, line);
	free(*buf);
	*buf = n;
}

/* Submits buf plus the empty line that ends a block; 1 if still more. */
static int
repl_submit_block(struct repl *r, const char *buf)
{
	char *code;
	int more;

	xasprintf(&code, "%s\n", buf);
	more = repl_submit(r, code, 0);
	free(code);
	return more;
}

/* Completion candidates for text, asked from the target. */
static char *
repl_match_next(const char *text, int state)
{
	static int i;

	(void)text;
	if (state == 0)
		i = 0;
	if (repl_matches == NULL || repl_matches[i] == NULL)
		return NULL;
	return xstrdup(repl_matches[i++]);
}

static void
repl_matches_free(void)
{
	size_t i;

	for (i = 0; repl_matches != NULL && repl_matches[i] != NULL; i++)
		free(repl_matches[i]);
	free(repl_matches);
	repl_matches = NULL;
}

static char **
repl_complete(const char *text, int start, int end)
{
	struct repl *r = repl_current;
	json_t *reply, *m;
	char **out;
	size_t i, n;
	int k;

	(void)end;
	rl_attempted_completion_over = 1; /* never file names */
	rl_completion_append_character = '\0';
	if (*text == '\0') {
		/* Tab at the start of a line indents, as in Python's REPL. */
		for (k = 0;
		     k < start && isspace((unsigned char)rl_line_buffer[k]);
		     k++)
			;
		if (k < start)
			return NULL;
		out = xcalloc(2, sizeof *out);
		out[0] = xstrdup("    ");
		return out;
	}
	reply = repl_request(r, PROTO_COMPLETE,
	    json_pack("{s:s}", "text", text), r->timeout_ms + 5000);
	if (reply == NULL) {
		rl_forced_update_display();
		return NULL;
	}
	m = json_object_get(reply, "matches");
	n = json_array_size(m);
	repl_matches_free();
	repl_matches = xcalloc(n + 1, sizeof *repl_matches);
	for (i = 0, k = 0; i < n; i++) {
		if (json_is_string(json_array_get(m, i)))
			repl_matches[k++] =
			    xstrdup(json_string_value(json_array_get(m, i)));
	}
	json_decref(reply);
	out = k > 0 ? rl_completion_matches(text, repl_match_next) : NULL;
	repl_matches_free();
	return out;
}

static void
repl_on_line(char *line)
{
	repl_line = line;
	repl_line_ready = 1;
}

/* Reads one line at prompt (malloc'd); NULL at EOF. *intr: Ctrl-C. */
static char *
repl_readline(const char *prompt, int *intr)
{
	fd_set fds;
	int n;

	*intr = 0;
	repl_line = NULL;
	repl_line_ready = 0;
	repl_sigint = 0;
	rl_callback_handler_install(prompt, repl_on_line);
	while (!repl_line_ready) {
		FD_ZERO(&fds);
		FD_SET(STDIN_FILENO, &fds);
		n = select(STDIN_FILENO + 1, &fds, NULL, NULL, NULL);
		if (n < 0 && errno == EINTR) {
			if (repl_sigint) {
				repl_sigint = 0;
				*intr = 1;
				break;
			}
			continue;
		}
		if (n < 0)
			break;
		rl_callback_read_char();
	}
	rl_callback_handler_remove();
	return repl_line;
}

/* ~/.probing_history, created private; NULL without a home. */
static char *
repl_history_path(void)
{
	const char *home = getenv("HOME");
	struct passwd *pw;
	char *path;
	int fd;

	if (home == NULL || *home == '\0') {
		pw = getpwuid(getuid());
		home = pw != NULL ? pw->pw_dir : NULL;
	}
	if (home == NULL)
		return NULL;
	xasprintf(&path, "%s/.probing_history", home);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
	return path;
}

/* The interactive loop on a terminal. */
static void
repl_tty(struct repl *r)
{
	char *history = repl_history_path(), *line, *buf = NULL;
	int intr;

	rl_readline_name = "probing";
	rl_catch_signals = 0;
	rl_catch_sigwinch = 1;
	rl_basic_word_break_characters = repl_word_breaks;
	rl_completer_word_break_characters = repl_word_breaks;
	rl_attempted_completion_function = repl_complete;
	using_history();
	stifle_history(REPL_HISTORY_MAX);
	if (history != NULL)
		read_history(history);
	while (!r->leave) {
		line = repl_readline(buf != NULL ? "... " : ">>> ", &intr);
		if (intr) {
			/* Ctrl-C discards whatever was typed. */
			fputs("\nKeyboardInterrupt\n", stderr);
			free(buf);
			buf = NULL;
			continue;
		}
		if (line == NULL) {
			fputc('\n', stdout);
			break;
		}
		if (!repl_is_blank(line)) {
			add_history(line);
			if (history != NULL)
				write_history(history);
		}
		if (buf == NULL && repl_is_exit(line)) {
			free(line);
			break;
		}
		if (buf == NULL && repl_is_blank(line)) {
			free(line);
			continue;
		}
		repl_append(&buf, line);
		free(line);
		if (!repl_submit(r, buf, 0)) {
			free(buf);
			buf = NULL;
		}
	}
	free(buf);
	free(history);
}

/* Statements from a pipe or file, as the Python REPL reads them, but a
 * line at column 0 also ends a block (no blank line needed). */
static void
repl_script(struct repl *r)
{
	char *line = NULL, *buf = NULL;
	size_t cap = 0;
	ssize_t n;

	while (!r->leave && (n = getline(&line, &cap, stdin)) >= 0) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (repl_sigint)
			break;
		if (buf == NULL &&
		    (repl_is_blank(line) || repl_is_exit(line))) {
			if (repl_is_exit(line))
				break;
			continue;
		}
		if (buf != NULL && line[0] != '\0' &&
		    !isspace((unsigned char)line[0]) && !repl_continues(line) &&
		    !repl_submit_block(r, buf)) {
			free(buf);
			buf = NULL;
			if (r->leave)
				break;
			if (repl_is_exit(line))
				break;
		}
		repl_append(&buf, line);
		if (!repl_submit(r, buf, 0)) {
			free(buf);
			buf = NULL;
		}
	}
	if (buf != NULL && !r->leave && repl_submit_block(r, buf))
		repl_submit(r, buf, 1);
	free(buf);
	free(line);
}

static int
cmd_repl_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	struct repl r = { 0 };
	struct sigaction sa = { 0 }, old;
	json_t *health;
	char *cause = NULL;
	int rc, status;

	if (cmd_getopt(ctx, argc, argv) != -1)
		return EXIT_USAGE;
	if (optind != argc)
		return cmd_usage(ctx->entry, "too many arguments");
	if (ctx->ntargets != 1)
		return cmd_usage(ctx->entry, "the repl talks to one target");
	r.ep = &ctx->targets[0];
	r.token = ctx->token;
	r.timeout_ms = ctx->timeout_ms;
	r.tty = isatty(STDIN_FILENO);
	if (client_request(r.ep, r.token, "GET", PROTO_HEALTH, NULL,
		r.timeout_ms, 10000, &health, &status, &cause) != 0) {
		rc = cmd_fail(cause);
		free(cause);
		return rc;
	}
	if (r.tty)
		fprintf(stderr,
		    "Python %s in pid %lld (probing repl: statements run in "
		    "its __main__)\nCtrl-D or exit() leaves; the target keeps "
		    "running.\n",
		    json_string_value(json_object_get(health, "python")),
		    (long long)json_integer_value(
			json_object_get(health, "pid")));
	json_decref(health);

	sa.sa_handler = repl_on_sigint; /* no SA_RESTART: select must wake */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old);
	repl_current = &r;
	if (r.tty)
		repl_tty(&r);
	else
		repl_script(&r);
	repl_current = NULL;
	sigaction(SIGINT, &old, NULL);
	fflush(stdout);
	if (!r.tty && repl_sigint)
		return 130;
	return r.tty ? (r.leave && r.failed ? 1 : 0) : r.failed;
}

const struct cmd_entry cmd_repl_entry = {
	.name = "repl",
	.alias = "py",
	.args = "",
	.help = "an interactive Python prompt running in the target's __main__",
	.detail =
	    "Tab completes names and attributes of the target's live objects;\n"
	    "def, for, with, class and open brackets continue with ... until\n"
	    "the statement is complete (the Python REPL's rules, decided in\n"
	    "the target); a bare expression prints its repr; history is kept\n"
	    "in ~/.probing_history.\n"
	    "Ctrl-C discards the input line. While a statement runs, Ctrl-C\n"
	    "returns to the prompt at once and raises KeyboardInterrupt in "
	    "the\n"
	    "statement's own thread (never the job's): it stops at its next\n"
	    "Python bytecode, so one blocked in a C call such as time.sleep\n"
	    "stops when that call returns; its output is dropped.\n"
	    "Ctrl-D or exit() leaves; the target keeps running.\n"
	    "With stdin not a terminal, statements are read from it (a line\n"
	    "at column 0 also ends a block), output goes to stdout, "
	    "tracebacks\n"
	    "to stderr, and the exit status is 1 if any statement raised.\n",
	.opts = "",
	.target = CMD_TARGET_REQUIRED,
	.exec = cmd_repl_exec,
};
