/* Endpoint strings: a pid, host:port, or a comma-separated list of them. */
#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "endpoint.h"
#include "log.h"

#define ENDPOINT_MAX_PID 4194304

/* Parses all of text as a decimal number in [min, max]; -1 if it is not. */
static long
endpoint_number(const char *text, size_t len, long min, long max)
{
	long v = 0;
	size_t i;

	if (len == 0 || len > 10)
		return -1;
	for (i = 0; i < len; i++) {
		if (!isdigit((unsigned char)text[i]))
			return -1;
		v = v * 10 + (text[i] - '0');
	}
	return (v < min || v > max) ? -1 : v;
}

int
endpoint_parse(const char *text, struct endpoint *out, char **cause)
{
	const char *colon, *host = text;
	size_t hostlen, len = strlen(text);
	long v;

	memset(out, 0, sizeof *out);
	if (len == 0) {
		cause_set(cause, "empty target: expected a pid or host:port");
		return -1;
	}
	if (strchr(text, ':') == NULL) {
		v = endpoint_number(text, len, 1, ENDPOINT_MAX_PID);
		if (v < 0) {
			cause_set(cause,
			    "invalid target '%s': expected a pid or host:port",
			    text);
			return -1;
		}
		out->kind = ENDPOINT_PID;
		out->pid = (pid_t)v;
		snprintf(out->name, sizeof out->name, "%ld", v);
		return 0;
	}
	colon = strrchr(text, ':');
	hostlen = (size_t)(colon - text);
	if (text[0] == '[') {
		if (hostlen < 3 || text[hostlen - 1] != ']') {
			cause_set(
			    cause, "invalid target '%s': bad [address]", text);
			return -1;
		}
		host = text + 1;
		hostlen -= 2;
	} else if (memchr(text, ':', hostlen) != NULL) {
		cause_set(cause,
		    "invalid target '%s': write IPv6 addresses as [addr]:port",
		    text);
		return -1;
	}
	if (hostlen == 0 || hostlen >= sizeof out->host) {
		cause_set(cause, "invalid target '%s': missing host", text);
		return -1;
	}
	v = endpoint_number(colon + 1, strlen(colon + 1), 1, 65535);
	if (v < 0) {
		cause_set(cause,
		    "invalid target '%s': port must be a number from 1 to "
		    "65535",
		    text);
		return -1;
	}
	out->kind = ENDPOINT_TCP;
	memcpy(out->host, host, hostlen);
	out->host[hostlen] = '\0';
	out->port = (int)v;
	snprintf(out->name, sizeof out->name, "%.*s", (int)len, text);
	return 0;
}

int
endpoint_parse_list(
    const char *text, struct endpoint **out, int *n, char **cause)
{
	struct endpoint *list = NULL, *grown;
	const char *p = text, *comma;
	char one[512];
	size_t len;
	int count = 0;

	for (;;) {
		comma = strchr(p, ',');
		len = comma != NULL ? (size_t)(comma - p) : strlen(p);
		if (len >= sizeof one) {
			cause_set(
			    cause, "invalid target: '%.40s...' is too long", p);
			goto fail;
		}
		memcpy(one, p, len);
		one[len] = '\0';
		grown = realloc(list, (count + 1) * sizeof *list);
		if (grown == NULL) {
			cause_set(cause, "out of memory");
			goto fail;
		}
		list = grown;
		if (endpoint_parse(one, &list[count], cause) != 0)
			goto fail;
		count++;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	*out = list;
	*n = count;
	return 0;
fail:
	free(list);
	return -1;
}

socklen_t
endpoint_socket_addr(pid_t pid, struct sockaddr_un *sun)
{
	char name[64];
	size_t n;

	endpoint_socket_name(pid, name, sizeof name);
	n = strlen(name);
	memset(sun, 0, sizeof *sun);
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path + 1, name, n); /* sun_path[0] = 0: abstract */
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

void
endpoint_socket_name(pid_t pid, char *buf, size_t len)
{
	snprintf(buf, len, "probing-%d", (int)pid);
}
