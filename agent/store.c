/* The SQLite store: one connection with the schema `python` attached.
 *
 * Every query has a deadline (the request's timeout) and stops at it, or
 * when its client goes away, through SQLite's progress handler. Queries
 * take turns on store_lock, each waiting at most until its own deadline,
 * so one query never holds up another for longer than its own time. A
 * result is bounded by probing.max_result_bytes while it is built (and
 * SQLite's own strings and blobs by SQLITE_LIMIT_LENGTH), so the job's
 * memory stays within that plus a little. The authorizer keeps queries
 * to memory: no ATTACH (nor VACUUM INTO, which attaches), no DETACH, no
 * extension loading, no dropping the built-in tables. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sqlite3.h>

#include "agent.h"
#include "clock.h"
#include "log.h"
#include "proto.h"

/* The connection; every use holds store_lock. */
static sqlite3 *store_db;
static pthread_mutex_t store_lock = PTHREAD_MUTEX_INITIALIZER;
/* Set while the agent itself changes the schema; store_lock held. */
static int store_internal;
/* The built-in tables' names, noted once at open. */
#define STORE_MAX_BUILTIN 32
static char store_builtin[STORE_MAX_BUILTIN][64];
static int store_nbuiltin;
/* Why the authorizer refused the statement being prepared; store_lock. */
static const char *store_refused;

/* A query's deadline and why it stopped; on its thread's stack. */
struct store_run {
	double deadline; /* monotonic seconds */
	double next_poll;
	int timed_out, gone;
};
static double store_running_since; /* 0 when none runs */

static double
store_now(void)
{
	return clock_ms() / 1000.0;
}

/* What users may not do: anything that reaches files or code, and
 * dropping or detaching the built-in tables. */
static int
store_authorize(void *unused, int action, const char *a, const char *b,
    const char *db, const char *trigger)
{
	(void)unused;
	(void)b;
	(void)db;
	(void)trigger;
	if (store_internal)
		return SQLITE_OK;
	if (action == SQLITE_DROP_VTABLE)
		store_refused = "the built-in tables cannot be dropped";
	else if (action == SQLITE_ATTACH)
		store_refused = "queries cannot attach databases or write "
				"files (ATTACH, VACUUM INTO)";
	else if (action == SQLITE_DETACH)
		store_refused = "queries cannot detach databases";
	else if (action == SQLITE_FUNCTION && a == NULL && b != NULL &&
	    strcmp(b, "load_extension") == 0)
		store_refused = "queries cannot load extensions";
	else
		return SQLITE_OK;
	return SQLITE_DENY;
}

/* SQLite's progress handler: non-zero stops the statement. */
static int
store_progress(void *arg)
{
	struct store_run *run = arg;
	double now;

	if (run == NULL)
		return 0;
	now = store_now();
	if (now >= run->deadline)
		run->timed_out = 1;
	else if (now >= run->next_poll) {
		run->next_poll = now + 0.05;
		run->gone = request_gone();
	}
	return run->timed_out || run->gone;
}

size_t
store_result_limit(void)
{
	return (size_t)config_get(CONFIG_MAX_RESULT_BYTES);
}

void
store_too_big(char **cause)
{
	size_t n = store_result_limit();

	if (n % (1024 * 1024) == 0)
		cause_set(cause,
		    "result larger than %zu MB (set probing.max_result_bytes)",
		    n / (1024 * 1024));
	else
		cause_set(cause,
		    "result larger than %zu bytes (set "
		    "probing.max_result_bytes)",
		    n);
}

/* config applier: SQLite's own strings and blobs stay under the limit. */
static int
store_apply_limit(double v, char **cause)
{
	(void)cause;
	sqlite3_limit(store_db, SQLITE_LIMIT_LENGTH, (int)fmin(v, 1e9));
	return 0;
}

int
store_exec_internal(sqlite3 *db, const char *sql, char **cause)
{
	int rc;

	store_internal = 1;
	rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	store_internal = 0;
	if (rc != SQLITE_OK) {
		cause_set(cause, "%s", sqlite3_errmsg(db));
		return -1;
	}
	return 0;
}

/* Notes the names of the tables in schema python (all built-in now). */
static void
store_note_builtins(void)
{
	sqlite3_stmt *st;

	if (sqlite3_prepare_v2(store_db,
		"SELECT name FROM python.sqlite_master", -1, &st,
		NULL) != SQLITE_OK)
		return;
	while (sqlite3_step(st) == SQLITE_ROW &&
	    store_nbuiltin < STORE_MAX_BUILTIN)
		snprintf(store_builtin[store_nbuiltin++],
		    sizeof store_builtin[0], "%s",
		    (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
}

int
store_is_builtin(const char *name)
{
	int i;

	for (i = 0; i < store_nbuiltin; i++) {
		if (strcasecmp(store_builtin[i], name) == 0)
			return 1;
	}
	return 0;
}

int
store_open(char **cause)
{
	int rc;

	rc = sqlite3_open_v2(":memory:", &store_db,
	    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
	    NULL);
	if (rc != SQLITE_OK) {
		cause_set(cause, "cannot open the sqlite store: %s",
		    sqlite3_errstr(rc));
		return -1;
	}
	rc = sqlite3_exec(
	    store_db, "ATTACH ':memory:' AS python", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		cause_set(cause, "cannot attach the python schema: %s",
		    sqlite3_errmsg(store_db));
		return -1;
	}
	if (tbl_register_all(store_db, cause) != 0)
		return -1;
	store_note_builtins();
	sqlite3_db_config(
	    store_db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, NULL);
	sqlite3_set_authorizer(store_db, store_authorize, NULL);
	store_apply_limit(config_get(CONFIG_MAX_RESULT_BYTES), NULL);
	config_on_change(CONFIG_MAX_RESULT_BYTES, store_apply_limit);
	return 0;
}

/* Returns a JSON string for n bytes of text, replacing invalid UTF-8. */
static json_t *
store_text(const char *s, size_t n)
{
	json_t *j = json_stringn(s, n);
	char *copy;
	size_t i;

	if (j != NULL)
		return j;
	copy = malloc(n + 1);
	if (copy == NULL)
		return json_null();
	for (i = 0; i < n; i++)
		copy[i] = (s[i] & 0x80) ? '?' : s[i];
	j = json_stringn(copy, n);
	free(copy);
	return j != NULL ? j : json_null();
}

static const char *const store_type_names[] = {
	[SQLITE_INTEGER] = "INTEGER",
	[SQLITE_FLOAT] = "REAL",
	[SQLITE_TEXT] = "TEXT",
	[SQLITE_BLOB] = "BLOB",
	[SQLITE_NULL] = "NULL",
};

/* About how many bytes of the answer value i of the row takes. */
static size_t
store_value_size(sqlite3_stmt *st, int i)
{
	switch (sqlite3_column_type(st, i)) {
	case SQLITE_TEXT:
		return (size_t)sqlite3_column_bytes(st, i) + 3;
	case SQLITE_BLOB:
		return (size_t)sqlite3_column_bytes(st, i) * 2 + 4;
	default:
		return 24;
	}
}

static json_t *
store_value(sqlite3_stmt *st, int i)
{
	const unsigned char *blob;
	char *hex;
	int n, k;
	double d;
	json_t *j;

	switch (sqlite3_column_type(st, i)) {
	case SQLITE_INTEGER:
		return json_integer(sqlite3_column_int64(st, i));
	case SQLITE_FLOAT:
		d = sqlite3_column_double(st, i);
		return (d == d && d - d == 0) ? json_real(d) : json_null();
	case SQLITE_TEXT:
		return store_text((const char *)sqlite3_column_text(st, i),
		    (size_t)sqlite3_column_bytes(st, i));
	case SQLITE_BLOB:
		blob = sqlite3_column_blob(st, i);
		n = sqlite3_column_bytes(st, i);
		hex = malloc((size_t)n * 2 + 4);
		if (hex == NULL)
			return json_null();
		hex[0] = 'x';
		hex[1] = '\'';
		for (k = 0; k < n; k++)
			sprintf(hex + 2 + k * 2, "%02x", blob[k]);
		strcpy(hex + 2 + n * 2, "'");
		j = json_string(hex);
		free(hex);
		return j;
	default:
		return json_null();
	}
}

/* Steps st to the end, filling rows; returns the sqlite result code, or
 * SQLITE_TOOBIG once the rows pass the limit. */
static int
store_rows(sqlite3_stmt *st, json_t *rows, json_t *types)
{
	int ncol = sqlite3_column_count(st), i, rc, t;
	size_t size = 0, limit = store_result_limit();
	json_t *row;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		size += 4;
		for (i = 0; i < ncol; i++)
			size += store_value_size(st, i);
		if (size > limit)
			return SQLITE_TOOBIG;
		row = json_array();
		for (i = 0; i < ncol; i++) {
			t = sqlite3_column_type(st, i);
			if (t != SQLITE_NULL &&
			    strcmp(json_string_value(json_array_get(types, i)),
				"NULL") == 0)
				json_array_set_new(
				    types, i, json_string(store_type_names[t]));
			json_array_append_new(row, store_value(st, i));
		}
		json_array_append_new(rows, row);
	}
	return rc;
}

/* Takes store_lock before run's deadline; 0, or -1 with *cause naming
 * what holds the store. */
static int
store_lock_until(struct store_run *run, char **cause)
{
	struct timespec ts;
	double since;
	int err;

	ts = clock_abstime(clock_left_ms(run->deadline * 1000.0));
	err = pthread_mutex_timedlock(&store_lock, &ts);
	if (err == 0)
		return 0;
	since = store_running_since;
	cause_set(cause,
	    "the store is busy: another query has run for %.1f s and "
	    "holds it; this one waited its whole timeout",
	    since > 0 ? store_now() - since : 0.0);
	return -1;
}

/* The message for a statement SQLite stopped or refused. */
static void
store_error(int rc, struct store_run *run, int timeout_ms, char **cause)
{
	if (run->timed_out)
		cause_set(cause,
		    "query interrupted after %.1f s (its timeout; set it "
		    "with --timeout)",
		    timeout_ms / 1000.0);
	else if (run->gone)
		cause_set(cause, "query cancelled: the client went away");
	else if (rc == SQLITE_TOOBIG)
		store_too_big(cause);
	else if (store_refused != NULL)
		cause_set(cause, "%s", store_refused);
	else
		cause_set(cause, "%s", sqlite3_errmsg(store_db));
}

json_t *
store_query(const char *sql, int timeout_ms, int *status, char **cause)
{
	struct store_run run = { 0 };
	sqlite3_stmt *st = NULL;
	const char *tail = sql, *decl;
	json_t *cols = NULL, *types = NULL, *rows = NULL, *out = NULL;
	int rc = SQLITE_OK, i, ncol;

	run.deadline = store_now() + timeout_ms / 1000.0;
	if (store_lock_until(&run, cause) != 0) {
		*status = 504;
		return NULL;
	}
	store_running_since = store_now();
	request_set_timeout(timeout_ms);
	sqlite3_progress_handler(store_db, 1000, store_progress, &run);
	if (tbl_python_refresh(store_db, sql, timeout_ms, cause) != 0)
		goto fail;
	/* Run every statement; the result is that of the last one. */
	while (tail != NULL && *tail != '\0') {
		sqlite3_finalize(st);
		st = NULL;
		store_refused = NULL;
		rc = sqlite3_prepare_v2(store_db, tail, -1, &st, &tail);
		if (rc != SQLITE_OK) {
			store_error(rc, &run, timeout_ms, cause);
			goto fail;
		}
		if (st == NULL)
			break; /* only whitespace or comments left */
		json_decref(cols);
		json_decref(types);
		json_decref(rows);
		cols = json_array();
		types = json_array();
		rows = json_array();
		ncol = sqlite3_column_count(st);
		for (i = 0; i < ncol; i++) {
			json_array_append_new(cols,
			    store_text(sqlite3_column_name(st, i),
				strlen(sqlite3_column_name(st, i))));
			decl = sqlite3_column_decltype(st, i);
			json_array_append_new(
			    types, json_string(decl != NULL ? decl : "NULL"));
		}
		rc = store_rows(st, rows, types);
		if (rc != SQLITE_DONE) {
			store_error(rc, &run, timeout_ms, cause);
			goto fail;
		}
	}
	if (cols == NULL) {
		cause_set(cause, "empty query");
		goto fail;
	}
	out = json_pack(
	    "{s:o, s:o, s:o}", "columns", cols, "types", types, "rows", rows);
	cols = types = rows = NULL;
fail:
	if (out == NULL && (run.timed_out || run.gone))
		*status = 504;
	else if (out == NULL && rc == SQLITE_TOOBIG)
		*status = 413;
	sqlite3_finalize(st);
	sqlite3_progress_handler(store_db, 0, NULL, NULL);
	json_decref(cols);
	json_decref(types);
	json_decref(rows);
	store_running_since = 0;
	pthread_mutex_unlock(&store_lock);
	return out;
}
