/* libFuzzer harness: endpoint strings and config values. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config-keys.h"
#include "endpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct endpoint *list = NULL;
	char *text = malloc(size + 1), *cause = NULL;
	double v;
	int n, i;

	memcpy(text, data, size);
	text[size] = '\0';
	if (endpoint_parse_list(text, &list, &n, &cause) == 0)
		free(list);
	free(cause);
	for (i = 0; i < CONFIG_COUNT; i++) {
		cause = NULL;
		config_key_parse(&config_keys[i], text, &v, &cause);
		free(cause);
	}
	free(text);
	return 0;
}
