/* The table of configuration keys: names, types, defaults, env vars, help. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config-keys.h"
#include "log.h"

const struct config_key config_keys[CONFIG_COUNT] = {
	[CONFIG_SAMPLE_RATE] = { "probing.sample_rate", CONFIG_REAL, "1.0",
	    "PROBING_SAMPLE_RATE", 0.0, 1.0,
	    "share of training steps traced: exactly that share, 0.7 is 7 "
	    "of every 10, the same steps on every rank" },
	[CONFIG_BUFFER_SIZE] = { "probing.buffer_size", CONFIG_INT, "10000",
	    NULL, 1, 100000000, "rows kept in each ring-buffer table" },
	[CONFIG_SERVER_PORT] = { "probing.server.port", CONFIG_INT, "0",
	    "PROBING_PORT", 0, 65535,
	    "TCP port to serve on as well as the unix socket (0 = off)" },
	[CONFIG_TORCH_ENABLED] = { "probing.torch.enabled", CONFIG_BOOL, "true",
	    "PROBING_TORCH_PROFILING", 0, 1,
	    "trace torch module calls and optimizer steps" },
	[CONFIG_BACKTRACE_NATIVE] = { "probing.backtrace.native", CONFIG_BOOL,
	    "true", NULL, 0, 1, "include native (C) frames in backtraces" },
	[CONFIG_MAX_RESULT_BYTES] = { "probing.max_result_bytes", CONFIG_INT,
	    "67108864", NULL, 4096, 1073741824,
	    "the largest query result or eval output, in bytes; a larger one "
	    "fails while it is built" },
};

static const char *const config_true[] = { "true", "1", "on", "yes" };
static const char *const config_false[] = { "false", "0", "off", "no" };

const struct config_key *
config_key_find(const char *name)
{
	size_t i;

	for (i = 0; i < CONFIG_COUNT; i++) {
		if (strcmp(config_keys[i].name, name) == 0)
			return &config_keys[i];
	}
	return NULL;
}

static int
config_key_parse_bool(
    const struct config_key *k, const char *text, double *out, char **cause)
{
	size_t i;

	for (i = 0; i < sizeof config_true / sizeof config_true[0]; i++) {
		if (strcasecmp(text, config_true[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(text, config_false[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	cause_set(cause, "invalid value '%s' for %s: expected true or false",
	    text, k->name);
	return -1;
}

int
config_key_parse(
    const struct config_key *k, const char *text, double *out, char **cause)
{
	char *end;
	double v;

	if (k->type == CONFIG_BOOL)
		return config_key_parse_bool(k, text, out, cause);
	errno = 0;
	if (k->type == CONFIG_INT)
		v = (double)strtoll(text, &end, 10);
	else
		v = strtod(text, &end);
	if (*text == '\0' || *end != '\0' || errno != 0 || !isfinite(v)) {
		cause_set(cause, "invalid value '%s' for %s: expected %s", text,
		    k->name, k->type == CONFIG_INT ? "an integer" : "a number");
		return -1;
	}
	if (v < k->min || v > k->max) {
		if (k->type == CONFIG_INT)
			cause_set(cause,
			    "invalid value '%s' for %s: must be between %.0f "
			    "and %.0f",
			    text, k->name, k->min, k->max);
		else
			cause_set(cause,
			    "invalid value '%s' for %s: must be between %g and "
			    "%g",
			    text, k->name, k->min, k->max);
		return -1;
	}
	*out = v;
	return 0;
}

void
config_key_format(const struct config_key *k, double v, char *buf, size_t len)
{
	switch (k->type) {
	case CONFIG_BOOL:
		snprintf(buf, len, "%s", v != 0 ? "true" : "false");
		break;
	case CONFIG_INT:
		snprintf(buf, len, "%lld", (long long)v);
		break;
	case CONFIG_REAL:
		snprintf(buf, len, "%.10g", v);
		if (strpbrk(buf, ".e") == NULL && strlen(buf) + 2 < len)
			strcat(buf, ".0");
		break;
	}
}
