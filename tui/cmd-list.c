/* list: every local process with a live agent, found by socket name. */
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "proto.h"
#include "rundir.h"
#include "xmalloc.h"
#include "tui.h"

/* Removes the logs and init files of dead pids from this user's dir. */
static void
cmd_list_clean(void)
{
	char dir[512];
	int fd;

	rundir_path("", geteuid(), getenv("XDG_RUNTIME_DIR"), dir, sizeof dir);
	fd = rundir_open(dir, geteuid(), 0, NULL);
	if (fd >= 0) {
		rundir_clean(fd);
		close(fd);
	}
}

/* A value of the identity, or null when the agent did not say. */
static json_t *
cmd_list_id(json_t *id, const char *key)
{
	json_t *v = json_object_get(id, key);

	return v != NULL ? v : json_null();
}

static int
cmd_list_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	json_t *all, *h, *row;
	struct fanout_result *res;
	struct endpoint *eps;
	struct passwd *pw;
	struct stat sb;
	char path[64], unixname[80], *cmd;
	int fmt = FMT_TABLE, n, i;
	pid_t *pids;

	if (cmd_getopt_format(ctx, argc, argv, &fmt) != 0)
		return EXIT_USAGE;
	if (optind != argc)
		return cmd_usage(ctx->entry, "too many arguments");
	all = json_pack("{s:[s,s,s,s,s,s,s,s,s], s:[]}", "columns", "pid",
	    "user", "python", "rank", "world_size", "job", "unix", "tcp",
	    "command", "rows");
	cmd_list_clean();
	pids = procs_probed(&n);
	eps = xcalloc((size_t)n + 1, sizeof *eps);
	res = xcalloc((size_t)n + 1, sizeof *res);
	for (i = 0; i < n; i++) {
		eps[i].kind = ENDPOINT_PID;
		eps[i].pid = pids[i];
		snprintf(eps[i].name, sizeof eps[i].name, "%d", (int)pids[i]);
	}
	/* The identity waits at most 200 ms for the GIL, then reads the
	 * start-up environment; the rest of the deadline is for a loaded
	 * machine. */
	fanout_request(eps, n, NULL, "GET", PROTO_IDENTITY, NULL,
	    ctx->timeout_ms, ctx->timeout_ms + 2000, res);
	for (i = 0; i < n; i++) {
		snprintf(path, sizeof path, "/proc/%d", (int)pids[i]);
		if (stat(path, &sb) != 0)
			continue;
		pw = getpwuid(sb.st_uid);
		h = res[i].reply;
		endpoint_socket_name(
		    pids[i], unixname + 1, sizeof unixname - 1);
		unixname[0] = '@';
		cmd = procs_cmdline(pids[i]);
		row = json_pack("[i, s, s, O, O, O, s, O, s]", (int)pids[i],
		    pw ? pw->pw_name : "?",
		    h ? json_string_value(json_object_get(h, "python")) : "?",
		    cmd_list_id(h, "rank"), cmd_list_id(h, "world_size"),
		    cmd_list_id(h, "job"), unixname,
		    h && json_integer_value(json_object_get(h, "tcp_port"))
			? json_object_get(h, "tcp_port")
			: json_null(),
		    cmd);
		json_array_append_new(json_object_get(all, "rows"), row);
		free(cmd);
	}
	fanout_free(res, n);
	free(eps);
	free(pids);
	fmt_print(stdout, (enum fmt_kind)fmt, all);
	json_decref(all);
	return 0;
}

const struct cmd_entry cmd_list_entry = {
	.name = "list",
	.alias = "ls",
	.args = "[-f table|json|csv]",
	.help = "list local processes with a live probing agent",
	.detail = "found through their abstract unix sockets (@probing-PID), "
		  "so the list cannot go stale\n",
	.opts = "f:",
	.exec = cmd_list_exec,
};
