/* Unit tests for shared/endpoint.c. */
#include <stdlib.h>
#include <string.h>

#include "endpoint.h"
#include "unit.h"

/* Parses text and returns whether it failed with a cause containing want. */
static int
fails_with(const char *text, const char *want)
{
	struct endpoint ep;
	char *cause = NULL;
	int ok;

	if (endpoint_parse(text, &ep, &cause) == 0)
		return 0;
	ok = cause != NULL && strstr(cause, want) != NULL;
	if (!ok)
		printf("# '%s' -> %s\n", text, cause ? cause : "(null)");
	free(cause);
	return ok;
}

int
main(void)
{
	struct endpoint ep, *list = NULL;
	char name[64];
	int n = 0;

	CHECK(endpoint_parse("4242", &ep, NULL) == 0 &&
		ep.kind == ENDPOINT_PID && ep.pid == 4242 &&
		strcmp(ep.name, "4242") == 0,
	    "pid");
	CHECK(endpoint_parse("gpu7:9000", &ep, NULL) == 0 &&
		ep.kind == ENDPOINT_TCP && strcmp(ep.host, "gpu7") == 0 &&
		ep.port == 9000,
	    "host:port");
	CHECK(endpoint_parse("[::1]:80", &ep, NULL) == 0 &&
		strcmp(ep.host, "::1") == 0 && ep.port == 80,
	    "ipv6");
	CHECK(fails_with("", "empty target"), "empty");
	CHECK(fails_with("0", "expected a pid"), "pid zero");
	CHECK(fails_with("-5", "expected a pid"), "negative pid");
	CHECK(fails_with("12a", "expected a pid"), "trailing junk");
	CHECK(fails_with("99999999999", "expected a pid"), "huge pid");
	CHECK(fails_with("host:", "port must be"), "missing port");
	CHECK(fails_with("host:70000", "port must be"), "port range");
	CHECK(fails_with("host:0", "port must be"), "port zero");
	CHECK(fails_with(":80", "missing host"), "missing host");
	CHECK(fails_with("::1:80", "IPv6"), "bare ipv6");
	CHECK(fails_with("[::1:80", "bad [address]"), "unclosed bracket");
	CHECK(endpoint_parse_list("1,2,h:3", &list, &n, NULL) == 0 && n == 3 &&
		list[0].pid == 1 && list[2].port == 3,
	    "list");
	free(list);
	list = NULL;
	CHECK(
	    endpoint_parse_list("1,,2", &list, &n, NULL) == -1 && list == NULL,
	    "list with empty item");
	CHECK(endpoint_parse_list("1,x", &list, &n, NULL) == -1,
	    "list with bad item");
	endpoint_socket_name(77, name, sizeof name);
	CHECK(strcmp(name, "probing-77") == 0, "socket name");
	return unit_summary();
}
