/* /metrics: the agent's numbers in the Prometheus text exposition format
 * (0.0.4), for a Prometheus server scraping the TCP port and for
 * `probing metrics`.
 *
 * Counters must only grow, and the torch_trace ring only holds the newest
 * rows, so each scrape folds the rows pushed since the last one into
 * running totals kept here (per module and stage, per optimizer, a step
 * time histogram). Rows the ring overwrote before a scrape read them are
 * not in those totals; probing_ring_dropped_rows_total counts them. The
 * ring is read through ring_snapshot and ring_counts only, never the
 * torch hooks. The only Python involved is identity_read (rank, job), which
 * waits at most METRICS_GIL_MS for the GIL and otherwise reads the
 * environment the process started with.
 *
 * Threads: metrics_text runs on request threads; metrics_lock guards the
 * totals. Module and optimizer names are the ring's interned strings,
 * alive as long as the process, so they are compared by pointer. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "clock.h"
#include "log.h"

#define METRICS_SLOTS     1024u /* module/stage pairs kept, power of two */
#define METRICS_TOP       20    /* modules exported, by time spent */
#define METRICS_OPTIMIZER 8
#define METRICS_COLL      64 /* (op, state) pairs */
#define METRICS_GIL_MS    50 /* the most a scrape waits for the GIL */

/* Running totals of one (name, stage). */
struct metrics_sum {
	const char *name;
	const char *stage;
	double sum;
	uint64_t count;
};

static const double metrics_buckets[] = { 0.001, 0.0025, 0.005, 0.01, 0.025,
	0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 };
#define METRICS_NBUCKETS (sizeof metrics_buckets / sizeof metrics_buckets[0])

/* Everything below is guarded by lock. */
static struct {
	pthread_mutex_t lock;
	uint64_t after; /* id of the last row folded */
	struct metrics_sum mod[METRICS_SLOTS];
	int nmod;
	struct metrics_sum opt[METRICS_OPTIMIZER];
	int nopt;
	int64_t steps; /* optimizer steps completed (step clock) */
	int64_t cur_step, prev_step;
	double cur_end, prev_end; /* unix time the step's last row ended */
	int have_cur, have_prev;
	uint64_t bucket[METRICS_NBUCKETS]; /* not cumulative */
	double step_sum;
	uint64_t step_count;
	double allocated; /* MB, of the newest row */
	uint64_t rows;    /* rows folded */
	/* python.collectives: rows are folded once they are no longer
	 * "running" (the hook rewrites a row when its call returns). */
	uint64_t coll_after;
	struct metrics_sum coll[METRICS_COLL]; /* name = op, stage = state */
	int ncoll;
	uint64_t coll_rows;
	int coll_running; /* rows still running at the last scrape */
} M = { .lock = PTHREAD_MUTEX_INITIALIZER };

static double metrics_t0; /* clock_ms() when the agent was loaded */

/* Notes when the agent was loaded, for probing_agent_uptime_seconds. */
__attribute__((constructor)) static void
metrics_loaded(void)
{
	metrics_t0 = clock_ms();
}

/* A growing text buffer; on allocation failure it stops growing and
 * remembers that, so the request fails as a whole. */
struct metrics_buf {
	char *s;
	size_t len, cap;
	int oom;
};

static void __attribute__((format(printf, 2, 3)))
metrics_printf(struct metrics_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;
	char *s;

	for (;;) {
		if (b->oom)
			return;
		va_start(ap, fmt);
		n = vsnprintf(b->s ? b->s + b->len : NULL,
		    b->s ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = 1;
			return;
		}
		if (b->s != NULL && (size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		s = realloc(b->s, b->cap + (size_t)n + 4096);
		if (s == NULL) {
			b->oom = 1;
			return;
		}
		b->s = s;
		b->cap += (size_t)n + 4096;
	}
}

/* Appends v as a label value, escaped as the format asks. */
static void
metrics_label_value(struct metrics_buf *b, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			metrics_printf(b, "\\%c", *v);
		else if (*v == '\n')
			metrics_printf(b, "\\n");
		else
			metrics_printf(b, "%c", *v);
	}
}

static void
metrics_family(
    struct metrics_buf *b, const char *name, const char *type, const char *help)
{
	metrics_printf(
	    b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One sample: name{base,extra} value. extra is "" or `k="v"` pairs. */
static void
metrics_sample(struct metrics_buf *b, const char *name, const char *base,
    const char *extra, double v)
{
	metrics_printf(
	    b, "%s{%s%s%s} %.17g\n", name, base, *extra ? "," : "", extra, v);
}

/* One sample with k="v" (escaped) and, when k2 is set, k2="v2". */
static void
metrics_sample_kv(struct metrics_buf *b, const char *name, const char *base,
    const char *k, const char *v, const char *k2, const char *v2, double value)
{
	metrics_printf(b, "%s{%s,%s=\"", name, base, k);
	metrics_label_value(b, v);
	if (k2 != NULL)
		metrics_printf(b, "\",%s=\"%s", k2, v2);
	metrics_printf(b, "\"} %.17g\n", value);
}

/* Finds or adds (name, stage) in the open-addressed module table. */
static struct metrics_sum *
metrics_mod(const char *name, const char *stage)
{
	size_t h = ((size_t)(uintptr_t)name >> 4u) * 31u +
	    ((size_t)(uintptr_t)stage >> 3u);
	size_t i, k;

	for (i = 0; i < METRICS_SLOTS; i++) {
		k = (h + i) & (METRICS_SLOTS - 1);
		if (M.mod[k].name == name && M.mod[k].stage == stage)
			return &M.mod[k];
		if (M.mod[k].name == NULL) {
			if ((unsigned)M.nmod >= METRICS_SLOTS * 3 / 4)
				return NULL;
			M.nmod++;
			M.mod[k].name = name;
			M.mod[k].stage = stage;
			return &M.mod[k];
		}
	}
	return NULL;
}

static void
metrics_observe_step(double seconds)
{
	size_t i;

	for (i = 0; i < METRICS_NBUCKETS; i++)
		if (seconds <= metrics_buckets[i]) {
			M.bucket[i]++;
			break;
		}
	M.step_sum += seconds;
	M.step_count++;
}

/* A step ends where the next one's first row appears: one observation of
 * the time since the previous traced step ended, per step in between. */
static void
metrics_step_clock(const struct torch_trace_rec *r)
{
	if (M.have_cur && r->step == M.cur_step) {
		M.cur_end = fmax(M.cur_end, r->time);
		return;
	}
	if (M.have_cur && r->step < M.cur_step)
		return;
	if (M.have_cur) {
		if (M.have_prev && M.cur_end > M.prev_end &&
		    M.cur_step > M.prev_step)
			metrics_observe_step((M.cur_end - M.prev_end) /
			    (double)(M.cur_step - M.prev_step));
		M.prev_step = M.cur_step;
		M.prev_end = M.cur_end;
		M.have_prev = 1;
	}
	M.cur_step = r->step;
	M.cur_end = r->time;
	M.have_cur = 1;
}

static void
metrics_fold_row(const struct torch_trace_rec *r)
{
	struct metrics_sum *s = NULL;
	int i;

	if (r->stage == NULL || r->module == NULL)
		return;
	M.rows++;
	M.allocated = r->allocated;
	metrics_step_clock(r);
	if (strcmp(r->stage, "step") == 0) {
		if (r->step + 1 > M.steps)
			M.steps = r->step + 1;
		for (i = 0; i < M.nopt; i++)
			if (M.opt[i].name == r->module)
				s = &M.opt[i];
		if (s == NULL && M.nopt < METRICS_OPTIMIZER) {
			s = &M.opt[M.nopt++];
			s->name = r->module;
			s->stage = r->stage;
		}
	} else {
		if (r->step > M.steps)
			M.steps = r->step;
		s = metrics_mod(r->module, r->stage);
	}
	if (s != NULL) {
		s->sum += r->duration;
		s->count++;
	}
}

/* Folds the rows pushed since the last scrape. Lock held. */
static void
metrics_fold(void)
{
	uint64_t pushed, dropped;
	size_t cap, n, i;
	char *rows;

	ring_counts(&tbl_torch_trace_ring, &pushed, &dropped, &cap);
	if (pushed < M.after) /* the ring was cleared */
		M.after = 0;
	rows = ring_snapshot(&tbl_torch_trace_ring, M.after, &n);
	for (i = 0; i < n; i++)
		metrics_fold_row((const struct torch_trace_rec *)(rows +
		    i * tbl_torch_trace_ring.recsize));
	if (n > 0)
		memcpy(&M.after, rows + (n - 1) * tbl_torch_trace_ring.recsize,
		    sizeof M.after);
	free(rows);
}

/* Folds the collectives that finished since the last scrape, stopping
 * at the first one still running (it is folded once it ends). Lock held. */
static void
metrics_fold_collectives(void)
{
	uint64_t pushed, dropped;
	size_t cap, n, i;
	const struct collectives_rec *r;
	struct metrics_sum *s;
	char *rows;
	int k, stop = 0;

	ring_counts(&tbl_collectives_ring, &pushed, &dropped, &cap);
	if (pushed < M.coll_after)
		M.coll_after = 0;
	rows = ring_snapshot(&tbl_collectives_ring, M.coll_after, &n);
	M.coll_running = 0;
	for (i = 0; i < n; i++) {
		r = (const struct collectives_rec *)(rows +
		    i * tbl_collectives_ring.recsize);
		if (r->state == NULL || r->op == NULL ||
		    strcmp(r->state, "running") == 0) {
			M.coll_running++;
			stop = 1;
			continue;
		}
		if (stop)
			continue;
		M.coll_after = (uint64_t)r->id;
		M.coll_rows++;
		s = NULL;
		for (k = 0; k < M.ncoll; k++)
			if (M.coll[k].name == r->op &&
			    M.coll[k].stage == r->state)
				s = &M.coll[k];
		if (s == NULL && M.ncoll < METRICS_COLL) {
			s = &M.coll[M.ncoll++];
			s->name = r->op;
			s->stage = r->state;
		}
		if (s != NULL) {
			s->sum += r->duration;
			s->count++;
		}
	}
	free(rows);
}

static int
metrics_by_time(const void *a, const void *b)
{
	double x = (*(struct metrics_sum *const *)a)->sum;
	double y = (*(struct metrics_sum *const *)b)->sum;

	return x < y ? 1 : x > y ? -1 : 0;
}

/* Writes the labels every series carries: rank, job and host, from the
 * job identity (torch.distributed when initialized, else the environment
 * as it is now; see identity.c), which waits at most gil_ms for the GIL. */
static void
metrics_base_labels(struct metrics_buf *b, struct identity *id, int gil_ms)
{
	identity_read(id, gil_ms);
	metrics_printf(b, "host=\"");
	metrics_label_value(b, id->host);
	metrics_printf(b, "\"");
	if (id->rank >= 0)
		metrics_printf(b, ",rank=\"%d\"", id->rank);
	if (id->job[0] != '\0') {
		metrics_printf(b, ",job=\"");
		metrics_label_value(b, id->job);
		metrics_printf(b, "\"");
	}
}

/* The process's CPU seconds and resident bytes from /proc/self/stat. */
static int
metrics_proc(double *cpu, double *rss)
{
	char buf[1024], *p;
	unsigned long ut = 0, st = 0;
	long pages = 0;
	int field;
	FILE *f = fopen("/proc/self/stat", "re");
	size_t n;

	if (f == NULL)
		return -1;
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	/* After the comm (field 2): utime is field 14, stime 15, rss 24. */
	for (field = 2; p != NULL && field < 24; field++) {
		p = strchr(p + 1, ' ');
		if (p != NULL && field + 1 == 14)
			ut = strtoul(p + 1, NULL, 10);
		else if (p != NULL && field + 1 == 15)
			st = strtoul(p + 1, NULL, 10);
		else if (p != NULL && field + 1 == 24)
			pages = strtol(p + 1, NULL, 10);
	}
	if (p == NULL)
		return -1;
	*cpu = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
	*rss = (double)pages * (double)sysconf(_SC_PAGESIZE);
	return 0;
}

/* The rings behind the tables, for the ring families. */
static const struct {
	const char *table;
	struct ring *ring;
} metrics_rings[] = {
	{ "torch_trace", &tbl_torch_trace_ring },
	{ "collectives", &tbl_collectives_ring },
};

/* One ring family: what 0 rows pushed, 1 dropped, 2 capacity. */
static void
metrics_ring(struct metrics_buf *b, const char *base, const char *name,
    const char *type, const char *help, int what)
{
	uint64_t pushed, dropped;
	size_t cap, i;
	char extra[64];

	metrics_family(b, name, type, help);
	for (i = 0; i < sizeof metrics_rings / sizeof metrics_rings[0]; i++) {
		ring_counts(metrics_rings[i].ring, &pushed, &dropped, &cap);
		snprintf(extra, sizeof extra, "table=\"%s\"",
		    metrics_rings[i].table);
		metrics_sample(b, name, base, extra,
		    what == 0       ? (double)pushed
			: what == 1 ? (double)dropped
				    : (double)cap);
	}
}

static void
metrics_agent(
    struct metrics_buf *b, const char *base, const struct identity *id)
{
	double cpu, rss;
	char extra[256];

	metrics_family(b, "probing_agent_info", "gauge",
	    "The agent's version and the Python it runs in; always 1.");
	snprintf(extra, sizeof extra,
	    "version=\"%s\",python=\"%s\",pid=\"%d\",world_size=\"%d\","
	    "identity=\"%s\"",
	    PROBING_VERSION, agent_python_version(), (int)agent_pid,
	    id->world_size > 0 ? id->world_size : 1, id->source);
	metrics_sample(b, "probing_agent_info", base, extra, 1);
	metrics_family(b, "probing_agent_uptime_seconds", "gauge",
	    "Seconds since the agent was loaded into this process.");
	metrics_sample(b, "probing_agent_uptime_seconds", base, "",
	    (clock_ms() - metrics_t0) / 1e3);
	if (metrics_proc(&cpu, &rss) == 0) {
		metrics_family(b, "process_cpu_seconds_total", "counter",
		    "User and system CPU time of the whole process.");
		metrics_sample(b, "process_cpu_seconds_total", base, "", cpu);
		metrics_family(b, "process_resident_memory_bytes", "gauge",
		    "Resident memory of the whole process.");
		metrics_sample(
		    b, "process_resident_memory_bytes", base, "", rss);
	}
	metrics_ring(b, base, "probing_ring_rows_total", "counter",
	    "Rows written into the ring behind a table.", 0);
	metrics_ring(b, base, "probing_ring_dropped_rows_total", "counter",
	    "Rows the ring overwrote (or dropped when resized).", 1);
	metrics_ring(b, base, "probing_ring_capacity_rows", "gauge",
	    "Rows the ring holds (probing.buffer_size).", 2);
	metrics_family(b, "probing_torch_tracing_enabled", "gauge",
	    "1 when torch tracing is on (probing.torch.enabled).");
	metrics_sample(b, "probing_torch_tracing_enabled", base, "",
	    config_get(CONFIG_TORCH_ENABLED) != 0 ? 1 : 0);
}

/* Lock held: the torch families, once any row was folded. */
static void
metrics_torch(struct metrics_buf *b, const char *base)
{
	struct metrics_sum *top[METRICS_SLOTS];
	const char *mods[METRICS_TOP];
	char extra[64];
	uint64_t acc = 0;
	int i, j, n = 0, nmods = 0;
	size_t k;

	metrics_family(b, "probing_torch_steps_total", "counter",
	    "Training steps completed (optimizer steps, or calls of the "
	    "outermost module without an optimizer).");
	metrics_sample(
	    b, "probing_torch_steps_total", base, "", (double)M.steps);
	metrics_family(b, "probing_torch_step_duration_seconds", "histogram",
	    "Wall time of one training step, end to end, of the steps traced.");
	for (k = 0; k < METRICS_NBUCKETS; k++) {
		acc += M.bucket[k];
		snprintf(extra, sizeof extra, "le=\"%g\"", metrics_buckets[k]);
		metrics_sample(b, "probing_torch_step_duration_seconds_bucket",
		    base, extra, (double)acc);
	}
	metrics_sample(b, "probing_torch_step_duration_seconds_bucket", base,
	    "le=\"+Inf\"", (double)M.step_count);
	metrics_sample(
	    b, "probing_torch_step_duration_seconds_sum", base, "", M.step_sum);
	metrics_sample(b, "probing_torch_step_duration_seconds_count", base, "",
	    (double)M.step_count);
	metrics_family(b, "probing_torch_optimizer_step_seconds", "summary",
	    "Time spent in optimizer.step, per optimizer class.");
	for (i = 0; i < M.nopt; i++) {
		metrics_sample_kv(b, "probing_torch_optimizer_step_seconds_sum",
		    base, "optimizer", M.opt[i].name, NULL, NULL, M.opt[i].sum);
		metrics_sample_kv(b,
		    "probing_torch_optimizer_step_seconds_count", base,
		    "optimizer", M.opt[i].name, NULL, NULL,
		    (double)M.opt[i].count);
	}
	metrics_family(b, "probing_torch_memory_allocated_bytes", "gauge",
	    "torch.cuda.memory_allocated() at the newest traced call.");
	metrics_sample(b, "probing_torch_memory_allocated_bytes", base, "",
	    M.allocated * 1048576.0);
	for (k = 0; k < METRICS_SLOTS; k++)
		if (M.mod[k].name != NULL)
			top[n++] = &M.mod[k];
	qsort((void *)top, (size_t)n, sizeof *top, metrics_by_time);
	/* The METRICS_TOP modules with the most time, both their stages. */
	for (i = 0; i < n && nmods < METRICS_TOP; i++) {
		for (j = 0; j < nmods && mods[j] != top[i]->name; j++)
			;
		if (j == nmods)
			mods[nmods++] = top[i]->name;
	}
	metrics_family(b, "probing_torch_module_seconds", "summary",
	    "Time spent in a module's forward or backward, for the modules "
	    "with the most time.");
	for (i = 0; i < n; i++) {
		for (j = 0; j < nmods && mods[j] != top[i]->name; j++)
			;
		if (j == nmods)
			continue;
		metrics_sample_kv(b, "probing_torch_module_seconds_sum", base,
		    "module", top[i]->name, "stage", top[i]->stage,
		    top[i]->sum);
		metrics_sample_kv(b, "probing_torch_module_seconds_count", base,
		    "module", top[i]->name, "stage", top[i]->stage,
		    (double)top[i]->count);
	}
}

/* Lock held: the collectives families, once any collective was seen. */
static void
metrics_collectives(struct metrics_buf *b, const char *base)
{
	int i;

	metrics_family(b, "probing_torch_collectives_total", "counter",
	    "torch.distributed calls that returned, by op and state (done, "
	    "failed, or issued for async ones).");
	for (i = 0; i < M.ncoll; i++)
		metrics_sample_kv(b, "probing_torch_collectives_total", base,
		    "op", M.coll[i].name, "state", M.coll[i].stage,
		    (double)M.coll[i].count);
	metrics_family(b, "probing_torch_collective_seconds", "summary",
	    "Time in torch.distributed calls that completed (done), by op.");
	for (i = 0; i < M.ncoll; i++) {
		if (strcmp(M.coll[i].stage, "done") != 0)
			continue;
		metrics_sample_kv(b, "probing_torch_collective_seconds_sum",
		    base, "op", M.coll[i].name, NULL, NULL, M.coll[i].sum);
		metrics_sample_kv(b, "probing_torch_collective_seconds_count",
		    base, "op", M.coll[i].name, NULL, NULL,
		    (double)M.coll[i].count);
	}
	metrics_family(b, "probing_torch_collectives_running", "gauge",
	    "torch.distributed calls in progress now (a hang shows here).");
	metrics_sample(
	    b, "probing_torch_collectives_running", base, "", M.coll_running);
}

json_t *
metrics_run(json_t *body, int timeout_ms, int *status, char **cause)
{
	struct metrics_buf b = { 0 }, base = { 0 };
	struct identity id;
	json_t *r;

	(void)body;
	(void)timeout_ms;
	*status = 500;
	metrics_base_labels(&base, &id, METRICS_GIL_MS);
	if (base.oom) {
		free(base.s);
		cause_set(cause, "out of memory");
		return NULL;
	}
	metrics_agent(&b, base.s, &id);
	pthread_mutex_lock(&M.lock);
	metrics_fold();
	metrics_fold_collectives();
	if (M.rows > 0)
		metrics_torch(&b, base.s);
	if (M.coll_rows > 0 || M.coll_running > 0)
		metrics_collectives(&b, base.s);
	pthread_mutex_unlock(&M.lock);
	r = b.oom ? NULL : json_stringn(b.s ? b.s : "", b.len);
	free(b.s);
	free(base.s);
	if (r == NULL)
		cause_set(cause, "out of memory");
	else
		*status = 200;
	return r;
}
