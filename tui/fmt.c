/* Query results printed as an aligned table, JSON or CSV. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xmalloc.h"
#include "tui.h"

const char *const fmt_names[] = { "table", "json", "csv", NULL };

/* Shortest text that reads back as the same double. */
static char *
fmt_real(double d)
{
	char buf[64];
	int prec;

	for (prec = 15; prec <= 17; prec++) {
		snprintf(buf, sizeof buf, "%.*g", prec, d);
		if (strtod(buf, NULL) == d)
			break;
	}
	if (strpbrk(buf, ".eni") == NULL)
		strcat(buf, ".0");
	return xstrdup(buf);
}

char *
fmt_value(json_t *v)
{
	char *s;

	switch (json_typeof(v)) {
	case JSON_STRING:
		return xstrdup(json_string_value(v));
	case JSON_INTEGER:
		xasprintf(&s, "%lld", (long long)json_integer_value(v));
		return s;
	case JSON_REAL:
		return fmt_real(json_real_value(v));
	case JSON_TRUE:
		return xstrdup("true");
	case JSON_FALSE:
		return xstrdup("false");
	case JSON_NULL:
		return xstrdup("");
	default:
		s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		return s != NULL ? s : xstrdup("");
	}
}

/* Columns on screen taken by UTF-8 text (one per code point). */
static size_t
fmt_width(const char *s)
{
	size_t w = 0;

	for (; *s != '\0'; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

static void
fmt_table(FILE *f, json_t *cols, json_t *rows)
{
	size_t ncol = json_array_size(cols), nrow = json_array_size(rows);
	size_t *w = xcalloc(ncol, sizeof *w), i, j, k, cw;
	int *num = xcalloc(ncol, sizeof *num);
	char ***cells = xcalloc(nrow + 1, sizeof *cells);
	json_t *v;

	for (i = 0; i <= nrow; i++) {
		cells[i] = xcalloc(ncol, sizeof **cells);
		for (j = 0; j < ncol; j++) {
			v = i == 0
			    ? json_array_get(cols, j)
			    : json_array_get(json_array_get(rows, i - 1), j);
			cells[i][j] = fmt_value(v);
			if (i > 0 && json_is_number(v))
				num[j] = 1;
			cw = fmt_width(cells[i][j]);
			if (cw > w[j])
				w[j] = cw;
		}
	}
	for (i = 0; i <= nrow; i++) {
		for (j = 0; j < ncol; j++) {
			cw = fmt_width(cells[i][j]);
			if (j > 0)
				fputs("  ", f);
			if (num[j] && i > 0)
				for (k = cw; k < w[j]; k++)
					fputc(' ', f);
			fputs(cells[i][j], f);
			if ((!num[j] || i == 0) && j + 1 < ncol)
				for (k = cw; k < w[j]; k++)
					fputc(' ', f);
			free(cells[i][j]);
		}
		fputc('\n', f);
		if (i == 0 && ncol > 0) {
			for (j = 0; j < ncol; j++) {
				if (j > 0)
					fputs("  ", f);
				for (k = 0; k < w[j]; k++)
					fputc('-', f);
			}
			fputc('\n', f);
		}
		free(cells[i]);
	}
	free(cells);
	free(w);
	free(num);
}

static void
fmt_csv_cell(FILE *f, const char *s)
{
	if (strpbrk(s, ",\"\r\n") == NULL) {
		fputs(s, f);
		return;
	}
	fputc('"', f);
	for (; *s != '\0'; s++) {
		if (*s == '"')
			fputc('"', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

static void
fmt_csv_row(FILE *f, json_t *row)
{
	size_t j;
	char *s;

	for (j = 0; j < json_array_size(row); j++) {
		if (j > 0)
			fputc(',', f);
		s = fmt_value(json_array_get(row, j));
		fmt_csv_cell(f, s);
		free(s);
	}
	fputc('\n', f);
}

/* One JSON value, reals in their shortest exact form. */
static void
fmt_json_value(FILE *f, json_t *v)
{
	char *s;

	if (json_is_real(v) && isfinite(json_real_value(v)))
		s = fmt_real(json_real_value(v));
	else
		s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	fputs(s != NULL ? s : "null", f);
	free(s);
}

static void
fmt_json(FILE *f, json_t *cols, json_t *rows)
{
	size_t i, j;
	json_t *row;

	fputc('[', f);
	json_array_foreach(rows, i, row)
	{
		fputs(i > 0 ? ",\n  {" : "\n  {", f);
		for (j = 0; j < json_array_size(cols); j++) {
			if (j > 0)
				fputs(", ", f);
			fmt_json_value(f, json_array_get(cols, j));
			fputs(": ", f);
			fmt_json_value(f, json_array_get(row, j));
		}
		fputc('}', f);
	}
	fputs(json_array_size(rows) > 0 ? "\n]\n" : "]\n", f);
}

void
fmt_merge_target(json_t **merged, json_t *result, const char *target)
{
	json_t *row;
	size_t k;

	if (*merged == NULL) {
		*merged =
		    json_pack("{s:[s], s:[]}", "columns", "target", "rows");
		json_array_extend(json_object_get(*merged, "columns"),
		    json_object_get(result, "columns"));
	}
	json_array_foreach(json_object_get(result, "rows"), k, row)
	{
		json_t *copy = json_copy(row);

		json_array_insert_new(copy, 0, json_string(target));
		json_array_append_new(json_object_get(*merged, "rows"), copy);
	}
}

void
fmt_print(FILE *f, enum fmt_kind kind, json_t *result)
{
	json_t *cols = json_object_get(result, "columns");
	json_t *rows = json_object_get(result, "rows");

	switch (kind) {
	case FMT_TABLE:
		fmt_table(f, cols, rows);
		break;
	case FMT_JSON:
		fmt_json(f, cols, rows);
		break;
	case FMT_CSV:
		fmt_csv_row(f, cols);
		for (size_t i = 0; i < json_array_size(rows); i++)
			fmt_csv_row(f, json_array_get(rows, i));
		break;
	}
}

int
fmt_col(json_t *result, const char *name)
{
	json_t *c;
	size_t i;

	json_array_foreach(json_object_get(result, "columns"), i, c)
	{
		if (json_is_string(c) &&
		    strcmp(json_string_value(c), name) == 0)
			return (int)i;
	}
	return -1;
}

json_t *
fmt_cell(json_t *row, int col)
{
	return col >= 0 ? json_array_get(row, (size_t)col) : NULL;
}

void
fmt_ms(char *buf, size_t len, double secs)
{
	double ms = secs * 1000;

	if (secs < 0 || !isfinite(secs))
		snprintf(buf, len, "-");
	else if (ms < 10)
		snprintf(buf, len, "%.2f", ms);
	else if (ms < 1000)
		snprintf(buf, len, "%.1f", ms);
	else
		snprintf(buf, len, "%.0f", ms);
}

int
fmt_color(FILE *f)
{
	const char *no = getenv("NO_COLOR");

	return isatty(fileno(f)) && (no == NULL || *no == '\0');
}
