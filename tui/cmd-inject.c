/* inject: load the agent into a running Python process: through the
 * interpreter's own remote_exec (PEP 768) on 3.14+, else, or when that
 * cannot happen (the main thread wedged in C), with ptrace. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "config-keys.h"
#include "injector.h"
#include "log.h"
#include "proto.h"
#include "rundir.h"
#include "xmalloc.h"
#include "tui.h"

#define CMD_INJECT_MAX_D   32
#define CMD_INJECT_WAIT_MS 5000
/* How long the target may take to reach a safe point and run the PEP 768
 * script before inject falls back to ptrace. */
#define CMD_INJECT_PEP768_MS 1000

/* Where to look for the agent, relative to this program's directory. */
static const char *const cmd_inject_dirs[] = {
	"agent",          /* the build tree: ./probing, ./agent/ */
	"../lib/probing", /* installed: PREFIX/bin, PREFIX/lib/probing */
	NULL,
};

/* Finds the agent built for python major.minor; 0 or -1 with *cause. */
int
cmd_inject_agent_path(int major, int minor, char *out, size_t len, char **cause)
{
	char self[PATH_MAX], *slash;
	const char *env = getenv("PROBING_AGENT_DIR");
	ssize_t n;
	int i;

	if (env != NULL && *env != '\0') {
		snprintf(out, len, "%s/libprobing-%d.%d.so", env, major, minor);
		if (access(out, R_OK) == 0)
			return 0;
	}
	n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n < 0) {
		cause_set(
		    cause, "cannot find this program: %s", strerror(errno));
		return -1;
	}
	self[n] = '\0';
	slash = strrchr(self, '/');
	*slash = '\0';
	for (i = 0; cmd_inject_dirs[i] != NULL; i++) {
		snprintf(out, len, "%s/%s/libprobing-%d.%d.so", self,
		    cmd_inject_dirs[i], major, minor);
		if (access(out, R_OK) == 0) {
			char *real = realpath(out, NULL);

			if (real != NULL) {
				snprintf(out, len, "%s", real);
				free(real);
			}
			return 0;
		}
	}
	cause_set(cause,
	    "no agent built for python %d.%d (looked in %s/agent and "
	    "%s/../lib/probing); build one with: make "
	    "PYTHONS=python%d.%d",
	    major, minor, self, self, major, minor);
	return -1;
}

/* Writes the -D settings where the agent reads them at its first moment:
 * PID.init in the target user's own directory, made for that user. */
static int
cmd_inject_write_init(pid_t pid, char **defs, int ndefs, char **cause)
{
	char dir[512], path[600], name[32];
	uid_t uid;
	int dfd, fd, i;
	FILE *f;

	if (rundir_of_pid(pid, dir, sizeof dir, &uid, cause) != 0)
		return -1;
	dfd = rundir_open(dir, uid, ndefs > 0, cause);
	if (dfd < 0) {
		if (ndefs == 0) {
			free(*cause);
			*cause = NULL;
			return 0;
		}
		return -1;
	}
	snprintf(name, sizeof name, "%d.init", (int)pid);
	snprintf(path, sizeof path, "%s/%s", dir, name);
	unlinkat(dfd, name, 0);
	if (ndefs == 0) {
		close(dfd);
		return 0;
	}
	fd = openat(dfd, name,
	    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	close(dfd);
	if (fd >= 0 && geteuid() != uid && fchown(fd, uid, (gid_t)-1) != 0) {
		cause_set(cause, "cannot give %s to uid %u: %s", path,
		    (unsigned)uid, strerror(errno));
		close(fd);
		return -1;
	}
	if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
		cause_set(cause, "cannot write %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	for (i = 0; i < ndefs; i++)
		fprintf(f, "%s\n", defs[i]);
	fclose(f);
	return 0;
}

/* Applies -D settings to an agent that is already there. */
static int
cmd_inject_apply(
    struct cmd_ctx *ctx, const struct endpoint *ep, char **defs, int ndefs)
{
	json_t *body, *r;
	char *eq, *cause = NULL;
	int i, status, failed = 0;

	for (i = 0; i < ndefs; i++) {
		eq = strchr(defs[i], '=');
		*eq = '\0';
		body = json_pack("{s:s, s:s}", "key", defs[i], "value", eq + 1);
		*eq = '=';
		if (client_request(ep, ctx->token, "POST", PROTO_CONFIG, body,
			ctx->timeout_ms, 0, &r, &status, &cause) != 0) {
			failed = cmd_fail(cause);
			free(cause);
			cause = NULL;
		}
		json_decref(r);
		json_decref(body);
	}
	return failed;
}

/* If the target does not see our agent file at the same path (another
 * root or mount namespace), copy it into the target user's directory so
 * that dlopen there finds it; path is updated to the target's view. */
static int
cmd_inject_place_agent(pid_t pid, char *path, size_t len, char **cause)
{
	char root[64], dst[PATH_MAX], dir[512], buf[65536];
	const char *name = strrchr(path, '/') + 1;
	struct stat a, b;
	int in = -1, out = -1, dfd;
	ssize_t n;
	uid_t uid;

	snprintf(root, sizeof root, "/proc/%d/root", (int)pid);
	snprintf(dst, sizeof dst, "%s%s", root, path);
	if (stat(dst, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
	    a.st_ino == b.st_ino)
		return 0;
	/* The copy goes in the target user's own directory, never through a
	 * name someone else could have planted in its /tmp. */
	if (rundir_of_pid(pid, dir, sizeof dir, &uid, cause) != 0 ||
	    (dfd = rundir_open(dir, uid, 1, cause)) < 0)
		return -1;
	snprintf(dst, sizeof dst, "%s/%s", dir, name);
	unlinkat(dfd, name, 0);
	in = open(path, O_RDONLY | O_CLOEXEC);
	out = openat(dfd, name,
	    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0755);
	close(dfd);
	if (in < 0 || out < 0 ||
	    (geteuid() != uid && fchown(out, uid, (gid_t)-1) != 0)) {
		cause_set(cause, "cannot copy the agent into pid %d's root: %s",
		    (int)pid, strerror(errno));
		goto fail;
	}
	while ((n = read(in, buf, sizeof buf)) > 0) {
		if (write(out, buf, (size_t)n) != n) {
			cause_set(cause, "cannot copy the agent to %s: %s", dst,
			    strerror(errno));
			goto fail;
		}
	}
	close(in);
	close(out);
	snprintf(path, len, "%s", dst + strlen(root));
	return 0;
fail:
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	return -1;
}

/* The agent log's last line, to explain an agent that did not answer. */
static void
cmd_inject_log_tail(pid_t pid, char *buf, size_t len)
{
	char dir[512], path[600], line[512], *cause = NULL;
	uid_t uid;
	FILE *f;
	int fd;

	buf[0] = '\0';
	if (rundir_of_pid(pid, dir, sizeof dir, &uid, &cause) != 0) {
		free(cause);
		return;
	}
	snprintf(path, sizeof path, "%s/%d.log", dir, (int)pid);
	fd = rundir_open_file(AT_FDCWD, path, path, O_RDONLY, uid, 0, &cause);
	free(cause);
	f = fd >= 0 ? fdopen(fd, "r") : NULL;
	if (f == NULL) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while (fgets(line, sizeof line, f) != NULL)
		snprintf(buf, len, "%s", line);
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
}

/* Waits until the new agent answers; returns its reply or NULL. */
static json_t *
cmd_inject_wait(struct cmd_ctx *ctx, const struct endpoint *ep)
{
	double until = clock_ms() + CMD_INJECT_WAIT_MS;
	json_t *h = NULL;
	char *cause = NULL;
	int status;

	while (clock_ms() < until) {
		if (client_probe_pid(ep->pid, NULL) == 1 &&
		    client_request(ep, ctx->token, "GET", PROTO_HEALTH, NULL,
			ctx->timeout_ms, 2000, &h, &status, &cause) == 0)
			return h;
		free(cause);
		cause = NULL;
		usleep(500);
	}
	return NULL;
}

/*
 * Refuses a process that already maps an agent that does not answer: a
 * forked child inherits its parent's agent but none of its threads, and
 * loading the agent again would do nothing. Returns 0 or -1 with *cause.
 */
static int
cmd_inject_inherited(pid_t pid, char **cause)
{
	char path[PATH_MAX], status[64], line[128], other[PATH_MAX];
	long ppid = 0;
	uid_t uid;
	FILE *f;

	if (injector_maps_file(pid, "libprobing-", path, sizeof path) != 1)
		return 0;
	snprintf(status, sizeof status, "/proc/%d/status", (int)pid);
	f = fopen(status, "re");
	while (f != NULL && fgets(line, sizeof line, f) != NULL) {
		if (strncmp(line, "PPid:", 5) == 0)
			ppid = strtol(line + 5, NULL, 10);
	}
	if (f != NULL)
		fclose(f);
	if (ppid > 1 &&
	    injector_maps_file(
		(pid_t)ppid, "libprobing-", other, sizeof other) == 1 &&
	    strcmp(path, other) == 0) {
		cause_set(cause,
		    "pid %d is a fork of pid %ld and inherited its agent, "
		    "which "
		    "does not run in a forked child: probe pid %ld, or start "
		    "the child's program with PROBING=1",
		    (int)pid, ppid, ppid);
		return -1;
	}
	if (rundir_of_pid(pid, other, sizeof other, &uid, NULL) != 0)
		snprintf(other, sizeof other, "its directory");
	cause_set(cause,
	    "pid %d already has the agent loaded (%s) but it does not "
	    "answer; see %s/%d.log",
	    (int)pid, path, other, (int)pid);
	return -1;
}

/*
 * Tries the interpreter's own way in (PEP 768, 3.14+): returns the agent's
 * health reply when it answered within CMD_INJECT_PEP768_MS, else NULL and
 * why not in *why (the caller then uses ptrace). PROBING_INJECT=ptrace
 * skips it.
 */
static json_t *
cmd_inject_pep768(struct cmd_ctx *ctx, const struct endpoint *ep, int major,
    int minor, const char *agent, char **why)
{
	const char *how = getenv("PROBING_INJECT");
	double until;
	json_t *h = NULL;
	char *cause = NULL;
	int status;

	if (how != NULL && strcmp(how, "ptrace") == 0) {
		cause_set(why, "PROBING_INJECT=ptrace");
		return NULL;
	}
	if (remote_exec_load(ep->pid, major, minor, agent, why) != 0)
		return NULL;
	until = clock_ms() + CMD_INJECT_PEP768_MS;
	while (clock_ms() < until) {
		if (client_probe_pid(ep->pid, NULL) == 1 &&
		    client_request(ep, ctx->token, "GET", PROTO_HEALTH, NULL,
			ctx->timeout_ms, 2000, &h, &status, &cause) == 0)
			return h;
		free(cause);
		cause = NULL;
		usleep(1000);
	}
	cause_set(why,
	    "pid %d did not run the script within %d ms (its main thread "
	    "is not running Python code: busy in C or blocked)",
	    (int)ep->pid, CMD_INJECT_PEP768_MS);
	return NULL;
}

static int
cmd_inject_one(struct cmd_ctx *ctx, const struct endpoint *ep, char **defs,
    int ndefs, int verbose)
{
	struct injector_stats st = { 0 };
	char agent[PATH_MAX], full[32], tail[512], *cause = NULL, *why = NULL;
	double t0 = clock_ms();
	int major, minor;
	json_t *h;

	/* A stopped job answers nothing and runs nothing: say so at once. */
	if (injector_check_stopped(ep->pid, &cause) != 0) {
		cmd_fail(cause);
		free(cause);
		return 1;
	}
	switch (client_probe_pid(ep->pid, &cause)) {
	case 1:
		printf("probing: pid %d already probed\n", (int)ep->pid);
		return cmd_inject_apply(ctx, ep, defs, ndefs);
	case -1:
		/* Someone else holds the name: nothing goes to them. */
		cmd_fail(cause);
		free(cause);
		return 1;
	}
	if (cmd_inject_inherited(ep->pid, &cause) != 0 ||
	    injector_python_version(
		ep->pid, &major, &minor, full, sizeof full, &cause) != 0 ||
	    cmd_inject_agent_path(major, minor, agent, sizeof agent, &cause) !=
		0 ||
	    cmd_inject_place_agent(ep->pid, agent, sizeof agent, &cause) != 0 ||
	    cmd_inject_write_init(ep->pid, defs, ndefs, &cause) != 0) {
		cmd_fail(cause);
		free(cause);
		return 1;
	}
	h = cmd_inject_pep768(ctx, ep, major, minor, agent, &why);
	if (h != NULL) {
		printf("probing: injected into %d (python %s) in %.0f ms\n",
		    (int)ep->pid,
		    json_string_value(json_object_get(h, "python")),
		    clock_ms() - t0);
		if (verbose)
			fprintf(stderr,
			    "probing: loaded through PEP 768 "
			    "(sys.remote_exec): pid %d was never stopped\n",
			    (int)ep->pid);
		json_decref(h);
		return 0;
	}
	if (verbose)
		fprintf(stderr,
		    "probing: PEP 768: %s; falling back to ptrace\n",
		    cause_str(why));
	free(why);
	if (injector_load(ep->pid, agent, &st, &cause) != 0) {
		cmd_fail(cause);
		free(cause);
		return 1;
	}
	h = cmd_inject_wait(ctx, ep);
	if (h == NULL) {
		cmd_inject_log_tail(ep->pid, tail, sizeof tail);
		fprintf(stderr,
		    "probing: the agent was loaded into pid %d but does not "
		    "answer%s%s\n",
		    (int)ep->pid, tail[0] ? ": " : "", tail);
		return 1;
	}
	printf("probing: injected into %d (python %s) in %.0f ms\n",
	    (int)ep->pid, json_string_value(json_object_get(h, "python")),
	    clock_ms() - t0);
	if (verbose)
		fprintf(stderr,
		    "probing: pid %d was stopped %.2f ms in all; %d "
		    "attempt(s) to find a safe point; the call took %.2f ms\n"
		    "probing: %s; errno %s\n",
		    (int)ep->pid, st.stopped_ms, st.attempts, st.total_ms,
		    st.how, st.errno_kept ? "kept" : "not saved");
	json_decref(h);
	return 0;
}

static int
cmd_inject_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	char *defs[CMD_INJECT_MAX_D], *cause = NULL, *eq;
	const struct config_key *k;
	int c, i, rc, ndefs = 0, failed = 0, verbose = 0;
	double v;

	while ((c = cmd_getopt(ctx, argc, argv)) != -1) {
		if (c == 'v') {
			verbose = 1;
			continue;
		}
		if (c != 'D')
			return EXIT_USAGE;
		eq = strchr(optarg, '=');
		if (eq == NULL)
			return cmd_usage(
			    ctx->entry, "-D needs key=value, not '%s'", optarg);
		if (ndefs == CMD_INJECT_MAX_D)
			return cmd_usage(ctx->entry, "too many -D settings");
		*eq = '\0';
		k = config_key_find(optarg);
		if (k == NULL)
			return cmd_usage(ctx->entry,
			    "unknown config key '%s' (see: probing help "
			    "config)",
			    optarg);
		if (config_key_parse(k, eq + 1, &v, &cause) != 0) {
			rc = cmd_usage(ctx->entry, "%s", cause_str(cause));
			free(cause);
			return rc;
		}
		*eq = '=';
		defs[ndefs++] = optarg;
	}
	if (optind != argc)
		return cmd_usage(ctx->entry, "too many arguments");
	for (i = 0; i < ctx->ntargets; i++) {
		if (ctx->targets[i].kind != ENDPOINT_PID) {
			fprintf(stderr,
			    "probing: cannot inject into %s: inject "
			    "needs a local pid\n",
			    ctx->targets[i].name);
			failed = 1;
			continue;
		}
		failed |=
		    cmd_inject_one(ctx, &ctx->targets[i], defs, ndefs, verbose);
	}
	return failed;
}

const struct cmd_entry cmd_inject_entry = {
	.name = "inject",
	.args = "[-v] [-D KEY=VALUE ...]",
	.help = "load the agent into a running Python process (PEP 768 or "
		"ptrace)",
	.detail = "  -D KEY=VALUE   a config setting in force from the agent's "
		  "first moment (repeatable)\n"
		  "  -v             say which way in was taken and how long "
		  "the target was stopped\n"
		  "On python 3.14+ the target first runs a small script at "
		  "its next safe point\n(sys.remote_exec, PEP 768); when its "
		  "main thread cannot get there within\n1 s, or "
		  "PROBING_INJECT=ptrace, the agent is loaded with ptrace.\n"
		  "injecting again is a no-op that applies the -D settings "
		  "live\n",
	.opts = "vD:",
	.target = CMD_TARGET_REQUIRED,
	.exec = cmd_inject_exec,
};
