/* The live configuration values and how a change takes effect. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "log.h"
#include "rundir.h"

/* Values are read without a lock (a double is read whole on x86-64);
 * changes are serialized by config_lock. */
static double config_values[CONFIG_COUNT];
static config_apply_fn config_appliers[CONFIG_COUNT];
static pthread_mutex_t config_lock = PTHREAD_MUTEX_INITIALIZER;
static int config_ready;

static void
config_defaults(void)
{
	size_t i;

	if (config_ready)
		return;
	for (i = 0; i < CONFIG_COUNT; i++)
		config_key_parse(&config_keys[i], config_keys[i].def,
		    &config_values[i], NULL);
	config_ready = 1;
}

double
config_get(enum config_id id)
{
	config_defaults();
	return config_values[id];
}

void
config_on_change(enum config_id id, config_apply_fn fn)
{
	config_appliers[id] = fn;
}

int
config_set(const char *key, const char *value, char **cause)
{
	const struct config_key *k = config_key_find(key);
	double v;
	int rc = 0;

	config_defaults();
	if (k == NULL) {
		cause_set(cause,
		    "unknown config key '%s' (see: probing config)", key);
		return -1;
	}
	if (config_key_parse(k, value, &v, cause) != 0)
		return -1;
	pthread_mutex_lock(&config_lock);
	if (config_appliers[k - config_keys] != NULL)
		rc = config_appliers[k - config_keys](v, cause);
	if (rc == 0) {
		config_values[k - config_keys] = v;
		log_info("config %s = %s", key, value);
	}
	pthread_mutex_unlock(&config_lock);
	return rc;
}

void
config_load_env(int warn)
{
	const struct config_key *k;
	const char *text;
	char *cause = NULL;
	double v;
	size_t i;

	config_defaults();
	for (i = 0; i < CONFIG_COUNT; i++) {
		k = &config_keys[i];
		if (k->env == NULL || (text = getenv(k->env)) == NULL ||
		    *text == '\0')
			continue;
		if (config_key_parse(k, text, &v, &cause) == 0) {
			config_values[i] = v;
			continue;
		}
		if (warn)
			fprintf(stderr, "probing: ignoring %s='%s': %s\n",
			    k->env, text, cause_str(cause));
		log_info("ignoring %s: %s", k->env, cause_str(cause));
		free(cause);
		cause = NULL;
	}
}

void
config_load_file(int dir)
{
	char name[32], line[512], *eq, *cause = NULL;
	double v;
	const struct config_key *k;
	FILE *f;
	int fd;

	config_defaults();
	if (dir < 0)
		return;
	snprintf(name, sizeof name, "%d.init", (int)agent_pid);
	/* Only the process owner or root may configure it this way; the
	 * file is never followed through a link or waited on (FIFO). */
	fd = rundir_open_file(dir, name, name, O_RDONLY, geteuid(), 1, &cause);
	if (fd < 0) {
		if (errno != ENOENT)
			log_info("ignoring %s", cause_str(cause));
		free(cause);
		return;
	}
	f = fdopen(fd, "r");
	if (f == NULL) {
		close(fd);
		return;
	}
	while (fgets(line, sizeof line, f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		eq = strchr(line, '=');
		if (eq == NULL)
			continue;
		*eq = '\0';
		k = config_key_find(line);
		if (k != NULL && config_key_parse(k, eq + 1, &v, &cause) == 0)
			config_values[k - config_keys] = v;
		else
			log_info("ignoring -D %s: %s", line,
			    k ? cause_str(cause) : "unknown key");
		free(cause);
		cause = NULL;
	}
	fclose(f);
	unlinkat(dir, name, 0);
}

json_t *
config_to_json(void)
{
	json_t *keys = json_array(), *o;
	char buf[64];
	size_t i;

	config_defaults();
	for (i = 0; i < CONFIG_COUNT; i++) {
		config_key_format(
		    &config_keys[i], config_values[i], buf, sizeof buf);
		o = json_pack("{s:s, s:s, s:s, s:s}", "key",
		    config_keys[i].name, "value", buf, "default",
		    config_keys[i].def, "help", config_keys[i].help);
		json_array_append_new(keys, o);
	}
	return json_pack("{s:o}", "keys", keys);
}
