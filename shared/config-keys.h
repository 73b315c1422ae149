/* The table of configuration keys: names, types, defaults, env vars, help. */
#ifndef PROBING_CONFIG_KEYS_H
#define PROBING_CONFIG_KEYS_H

#include <stddef.h>

enum config_type { CONFIG_BOOL, CONFIG_INT, CONFIG_REAL };

enum config_id {
	CONFIG_SAMPLE_RATE,
	CONFIG_BUFFER_SIZE,
	CONFIG_SERVER_PORT,
	CONFIG_TORCH_ENABLED,
	CONFIG_BACKTRACE_NATIVE,
	CONFIG_MAX_RESULT_BYTES,
	CONFIG_COUNT
};

struct config_key {
	const char *name;
	enum config_type type;
	const char *def;  /* default, in the form config_key_format prints */
	const char *env;  /* variable read at start, or NULL */
	double min, max;  /* inclusive range for INT and REAL */
	const char *help; /* one line */
};

extern const struct config_key config_keys[CONFIG_COUNT];

/* The key named name, or NULL. */
const struct config_key *config_key_find(const char *name);
/* Parses text as a value of key; returns 0, or -1 with *cause set. */
int config_key_parse(
    const struct config_key *, const char *text, double *out, char **cause);
/* Formats v as key's type into buf. */
void config_key_format(
    const struct config_key *, double v, char *buf, size_t len);

#endif
