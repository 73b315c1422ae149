/* Unit tests for shared/config-keys.c. */
#include <stdlib.h>
#include <string.h>

#include "config-keys.h"
#include "unit.h"

static int
rejects(const char *key, const char *text, const char *want)
{
	char *cause = NULL;
	double v;
	int ok;

	if (config_key_parse(config_key_find(key), text, &v, &cause) == 0)
		return 0;
	ok = cause != NULL && strstr(cause, want) != NULL;
	if (!ok)
		printf("# %s=%s -> %s\n", key, text, cause ? cause : "(null)");
	free(cause);
	return ok;
}

int
main(void)
{
	const struct config_key *k;
	char buf[64];
	double v;
	size_t i;

	for (i = 0; i < CONFIG_COUNT; i++) {
		k = &config_keys[i];
		CHECK(k->name != NULL && k->help != NULL, "key complete");
		CHECK(config_key_parse(k, k->def, &v, NULL) == 0,
		    "default parses");
		config_key_format(k, v, buf, sizeof buf);
		CHECK(strcmp(buf, k->def) == 0, "default formats back");
		CHECK(config_key_find(k->name) == k, "find");
	}
	CHECK(config_key_find("probing.nope") == NULL, "unknown key");
	k = config_key_find("probing.sample_rate");
	CHECK(config_key_parse(k, "0.25", &v, NULL) == 0 && v == 0.25, "real");
	CHECK(rejects("probing.sample_rate", "1.5", "between 0 and 1"),
	    "rate range");
	CHECK(rejects("probing.sample_rate", "abc", "expected a number"),
	    "rate text");
	CHECK(rejects("probing.sample_rate", "nan", "expected a number"),
	    "rate nan");
	CHECK(rejects("probing.buffer_size", "0", "between 1"), "buffer 0");
	CHECK(rejects("probing.buffer_size", "1.5", "an integer"),
	    "buffer fraction");
	CHECK(rejects("probing.server.port", "65536", "between 0 and 65535"),
	    "port range");
	CHECK(rejects("probing.server.port", "", "an integer"), "port empty");
	CHECK(rejects("probing.torch.enabled", "maybe", "true or false"),
	    "bool text");
	k = config_key_find("probing.torch.enabled");
	CHECK(config_key_parse(k, "off", &v, NULL) == 0 && v == 0, "bool off");
	CHECK(config_key_parse(k, "ON", &v, NULL) == 0 && v == 1, "bool ON");
	config_key_format(
	    config_key_find("probing.sample_rate"), 1, buf, sizeof buf);
	CHECK(strcmp(buf, "1.0") == 0, "real keeps a decimal point");
	return unit_summary();
}
