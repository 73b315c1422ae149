/* test-safety.c - the injector never harms its target: errno kept, busy
 * threads stepped out of libc, waits not cut short, stopped jobs refused */

#include <sys/epoll.h>

#include "inj-test.h"

#define LOOP_INJECTIONS 100

/* A thread that keeps clearing errno, spinning and checking it. */
static void
errno_spin_loop(volatile unsigned long *counters)
{
	for (;;) {
		errno = 0;
		for (volatile long i = 0; i < 100000; i++)
			;
		if (errno != 0)
			counters[1]++; /* errno changed under the program */
		counters[0]++;
	}
}

static void
test_errno_kept(void)
{
	volatile unsigned long *counters;
	char path[300], name[32], *cause = NULL;
	struct injector_stats st;
	unsigned long rounds;
	int i, n = 0, kept = 0;
	pid_t pid;

	counters = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (counters == MAP_FAILED)
		exit(2);
	pid = fork();
	if (pid == 0)
		errno_spin_loop(counters);
	track(pid);
	while (counters[0] == 0)
		nap_ms(1);
	for (i = 0; i < 10; i++) {
		/* A fresh name each time, so the constructor (which sets
		 * errno, as the agent's does) runs every time. */
		snprintf(name, sizeof name, "errno-%d.so", i);
		payload_copy(name, path, sizeof path);
		if (injector_load(pid, path, &st, &cause) < 0)
			break;
		kept += st.errno_kept;
		n++;
	}
	ok(n == 10 && kept == 10,
	    "10 injections into an errno-checking loop "
	    "(%s, errno kept %d times)",
	    n == 10 ? "all loaded" : cause, kept);
	free(cause);
	rounds = counters[0];
	while (counters[0] < rounds + 3)
		nap_ms(1);
	ok(counters[1] == 0 && alive(pid),
	    "errno of the hijacked thread is what it was (%lu rounds saw it "
	    "changed)",
	    counters[1]);
	reap(pid);
	munmap((void *)counters, 4096);
}

/*
 * A python loop doing small syscalls through libc, so stops land inside
 * libc: every injection must succeed and the loop must not see an error.
 */
static void
test_busy_syscall_loop(const char *what, const char *call)
{
	char script[1024], dir[128], line[256], *cause = NULL;
	struct injector_stats st;
	int report, i, n = 0, stepped = 0, maxsteps = 0;
	pid_t pid;

	snprintf(dir, sizeof dir, "%s/empty-%s", tmpdir, what);
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		exit(2);
	snprintf(script, sizeof script,
	    "import os\n"
	    "d = '%s'\n"
	    "os.write(3, b'ready\\n')\n"
	    "try:\n"
	    "    while True:\n"
	    "        %s(d)\n"
	    "except BaseException as e:\n"
	    "    os.write(3, ('died %%r\\n' %% e).encode())\n",
	    dir, call);
	pid = spawn_python(script, NULL, &report);
	if (read_line(report, line, sizeof line, 10000) < 0)
		fprintf(stderr, "# %s loop did not start\n", what);
	for (i = 0; i < LOOP_INJECTIONS; i++) {
		if (injector_load(pid, payload, &st, &cause) < 0)
			break;
		stepped += st.steps > 0;
		if (st.steps > maxsteps)
			maxsteps = st.steps;
		n++;
	}
	ok(n == LOOP_INJECTIONS,
	    "%d injections into a %s loop (%s; %d stepped out of libc, at "
	    "most %d instructions)",
	    LOOP_INJECTIONS, what, n == LOOP_INJECTIONS ? "all loaded" : cause,
	    stepped, maxsteps);
	free(cause);
	ok(alive(pid) && read_line(report, line, sizeof line, 300) < 0,
	    "the %s loop runs on without an error", what);
	reap(pid);
	close(report);
}

/* epoll_wait ends with EINTR after a ptrace stop unless restarted. */
static void
test_epoll_wait_restarted(void)
{
	char line[64];
	double t0;
	int report[2], r;
	pid_t pid;

	if (pipe(report) < 0)
		exit(2);
	pid = fork();
	if (pid == 0) {
		struct epoll_event ev;
		int ep = epoll_create1(0), e;

		close(report[0]);
		r = epoll_wait(ep, &ev, 1, 1500);
		e = errno;
		snprintf(line, sizeof line, "%d %d\n", r, e);
		if (write(report[1], line, strlen(line)) < 0)
			_exit(1);
		pause();
		_exit(0);
	}
	track(pid);
	close(report[1]);
	t0 = now_ms();
	ok((wait_syscall(pid, SYS_epoll_wait, 5000) == 0 ||
	       wait_syscall(pid, SYS_epoll_pwait, 100) == 0),
	    "target waits in epoll_wait");
	r = injector_load(pid, payload, NULL, NULL);
	ok(r == 0, "inject into a thread in epoll_wait");
	r = read_line(report[0], line, sizeof line, 5000);
	ok(r > 0 && strcmp(line, "0 0") == 0 && now_ms() - t0 >= 1400,
	    "epoll_wait times out as it would have (returned '%s' after %.0f "
	    "ms)",
	    r > 0 ? line : "nothing", now_ms() - t0);
	reap(pid);
	close(report[0]);
}

/* Read the state letter of pid from /proc/PID/stat. */
static char
proc_state(pid_t pid)
{
	char fn[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(fn, sizeof fn, "/proc/%d/stat", (int)pid);
	fd = open(fn, O_RDONLY);
	if (fd < 0)
		return '?';
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return '?';
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p != NULL && p[1] == ' ' ? p[2] : '?';
}

static void
test_stopped_process(void)
{
	char *cause = NULL, want[128];
	double t0;
	int rc;
	pid_t pid = fork();

	if (pid == 0) {
		for (;;)
			pause();
	}
	track(pid);
	kill(pid, SIGSTOP);
	for (int i = 0; i < 500 && proc_state(pid) != 'T'; i++)
		nap_ms(2);
	t0 = now_ms();
	rc = injector_load(pid, payload, NULL, &cause);
	snprintf(want, sizeof want,
	    "pid %d is stopped (state T): resume it with kill -CONT %d first",
	    (int)pid, (int)pid);
	ok(rc == -1 && cause != NULL && strcmp(cause, want) == 0 &&
		now_ms() - t0 < 1000,
	    "a stopped process is refused at once (%s)",
	    cause ? cause : "none");
	free(cause);
	ok(proc_state(pid) == 'T', "the stopped process stays stopped");
	kill(pid, SIGCONT);
	reap(pid);
}

int
main(void)
{
	static char out[128];

	snprintf(tmpdir, sizeof tmpdir, "/tmp/test-safety.XXXXXX");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(out, sizeof out, "INJ_PAYLOAD_OUT=%s/out-default", tmpdir);
	putenv(out);
	if (build("inj-payload", "INJ_PAYLOAD", ".so", payload, sizeof payload,
		"-shared -fPIC -O2", "") < 0) {
		fprintf(stderr, "cannot build the test payload\n");
		cleanup();
		return 2;
	}

	test_errno_kept();
	test_busy_syscall_loop("listdir", "os.listdir");
	test_busy_syscall_loop("stat", "os.stat");
	test_epoll_wait_restarted();
	test_stopped_process();

	cleanup();
	printf("%d passed, %d failed\n", passed, failed);
	return failed == 0 ? 0 : 1;
}
