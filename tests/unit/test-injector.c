/* test-injector.c - drive the injector against real processes */

#include "inj-test.h"

/* A python target that sleeps in time.sleep and reports when ready. */
static const char py_idle[] = "import os, time\n"
			      "os.write(3, b'ready\\n')\n"
			      "while True:\n"
			      "    time.sleep(60)\n";

/* Start an idle python sleeper and wait until it sleeps. */
static pid_t
start_idle_python(const char *const env[], int *report)
{
	char line[64];
	pid_t pid;

	pid = spawn_python(py_idle, env, report);
	if (read_line(*report, line, sizeof line, 10000) < 0 ||
	    wait_syscall(pid, SYS_clock_nanosleep, 5000) < 0)
		fprintf(stderr, "# python target %d did not start\n", (int)pid);
	return pid;
}

static void
test_python_sleep(void)
{
	static const char script[] =
	    "import os, time\n"
	    "os.write(3, b'ready\\n')\n"
	    "t = time.monotonic()\n"
	    "time.sleep(2)\n"
	    "os.write(3, ('%.3f\\n' % (time.monotonic() - t)).encode())\n"
	    "time.sleep(60)\n";
	char out[256], envout[300], line[64], *cause = NULL, full[32];
	const char *env[] = { envout, NULL };
	struct injector_stats st;
	int report, rc, major = 0, minor = 0;
	double elapsed;
	pid_t pid;

	snprintf(out, sizeof out, "%s/out-sleep", tmpdir);
	snprintf(envout, sizeof envout, "INJ_PAYLOAD_OUT=%s", out);
	pid = spawn_python(script, env, &report);
	ok(read_line(report, line, sizeof line, 10000) >= 0 &&
		wait_syscall(pid, SYS_clock_nanosleep, 5000) == 0,
	    "python target sleeps in clock_nanosleep");
	nap_ms(200);
	rc = injector_load(pid, payload, &st, &cause);
	ok(rc == 0, "inject into sleeping python (%s)", rc ? cause : "loaded");
	free(cause);
	cause = NULL;
	snprintf(line, sizeof line, "loaded %d", (int)pid);
	ok(wait_file(out, line, 2000) == 0,
	    "payload constructor ran in target");
	ok(st.attempts >= 1 && st.stopped_ms > 0 &&
		st.total_ms >= st.stopped_ms,
	    "stats filled (attempts %d, stopped %.3f ms, total %.3f ms)",
	    st.attempts, st.stopped_ms, st.total_ms);
	rc = read_line(report, line, sizeof line, 5000);
	elapsed = rc >= 0 ? atof(line) : -1;
	ok(elapsed >= 1.9 && elapsed <= 2.6,
	    "time.sleep(2) still lasts 2 s after injection (%.3f s)", elapsed);
	ok(alive(pid), "python target survives");
	rc = injector_python_version(
	    pid, &major, &minor, full, sizeof full, &cause);
	ok(rc == 0 && major == 3 && minor == 11 &&
		strncmp(full, "3.11.", 5) == 0,
	    "python version of /usr/bin/python3 is %d.%d (%s)", major, minor,
	    rc == 0 ? full : cause);
	free(cause);
	reap(pid);
	close(report);
}

static void
test_dlopen_error(void)
{
	struct injector_stats st;
	char *cause = NULL;
	int report, rc;
	pid_t pid;

	pid = start_idle_python(NULL, &report);
	rc = injector_load(pid, "/nonexistent/dir/missing.so", &st, &cause);
	ok(rc == -1 && cause != NULL &&
		strstr(cause, "cannot open shared object file") != NULL,
	    "dlopen error carries dlerror text (%s)", cause ? cause : "none");
	ok(alive(pid), "target survives a failed dlopen");
	free(cause);
	reap(pid);
	close(report);
}

/* Compare doubles for sorting. */
static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void
test_timing(void)
{
	double total[20], stopped[20];
	struct injector_stats st;
	char *cause = NULL;
	int report, i, n = 0;
	pid_t pid;

	pid = start_idle_python(NULL, &report);
	for (i = 0; i < 20; i++) {
		if (wait_syscall(pid, SYS_clock_nanosleep, 2000) < 0 ||
		    injector_load(pid, payload, &st, &cause) < 0)
			break;
		total[n] = st.total_ms;
		stopped[n] = st.stopped_ms;
		n++;
	}
	ok(n == 20, "20 injections into an idle python (%s)",
	    n == 20 ? "all loaded" : cause);
	free(cause);
	if (n > 0) {
		qsort(total, (size_t)n, sizeof total[0], cmp_double);
		qsort(stopped, (size_t)n, sizeof stopped[0], cmp_double);
		printf("# idle python, %d runs: median total %.3f ms, median "
		       "stopped %.3f ms, max stopped %.3f ms\n",
		    n, total[n / 2], stopped[n / 2], stopped[n - 1]);
	}
	ok(alive(pid), "python target survives 20 injections");
	reap(pid);
	close(report);
}

/* Child: report the result of one blocking read of fd 4, then linger. */
static void
child_read(int rfd, int wfd)
{
	char buf[64], msg[128];
	ssize_t n;
	int len;

	errno = 0;
	n = read(rfd, buf, sizeof buf - 1);
	buf[n > 0 ? n : 0] = '\0';
	len = snprintf(msg, sizeof msg, "n=%zd errno=%d %s\n", n, errno, buf);
	if (write(wfd, msg, (size_t)len) < 0)
		_exit(1);
	pause();
	_exit(0);
}

static void
test_blocked_read(void)
{
	int inp[2], rep[2], rc;
	char line[128], *cause = NULL;
	pid_t pid;

	if (pipe(inp) < 0 || pipe(rep) < 0)
		exit(2);
	pid = fork();
	if (pid == 0) {
		close(inp[1]);
		close(rep[0]);
		child_read(inp[0], rep[1]);
	}
	track(pid);
	close(inp[0]);
	close(rep[1]);
	ok(wait_syscall(pid, SYS_read, 5000) == 0, "c target blocks in read");
	rc = injector_load(pid, payload, NULL, &cause);
	ok(rc == 0, "inject into a thread blocked in read (%s)",
	    rc ? cause : "loaded");
	free(cause);
	ok(read_line(rep[0], line, sizeof line, 300) < 0 &&
		wait_syscall(pid, SYS_read, 2000) == 0,
	    "read keeps waiting after injection");
	if (write(inp[1], "hello", 5) != 5)
		exit(2);
	rc = read_line(rep[0], line, sizeof line, 3000);
	ok(rc > 0 && strcmp(line, "n=5 errno=0 hello") == 0,
	    "read gets the data afterwards (%s)", rc > 0 ? line : "nothing");
	reap(pid);
	close(inp[1]);
	close(rep[0]);
}

/*
 * Child: the nanosleep syscall for 2 s (glibc's wrapper would use
 * clock_nanosleep), whose restarts go through restart_syscall; report.
 */
static void
child_nanosleep(int wfd)
{
	struct timespec ts = { 2, 0 };
	double t0 = now_ms();
	char msg[64];
	int r, len;

	r = (int)syscall(SYS_nanosleep, &ts, NULL);
	len =
	    snprintf(msg, sizeof msg, "%d %.3f\n", r, (now_ms() - t0) / 1000.0);
	if (write(wfd, msg, (size_t)len) < 0)
		_exit(1);
	pause();
	_exit(0);
}

static void
test_restart_syscall(void)
{
	char line[64], *cause = NULL;
	int rep[2], rc1, rc2, r = -1;
	double elapsed = -1;
	pid_t pid;

	if (pipe(rep) < 0)
		exit(2);
	pid = fork();
	if (pid == 0) {
		close(rep[0]);
		child_nanosleep(rep[1]);
	}
	track(pid);
	close(rep[1]);
	ok(wait_syscall(pid, SYS_nanosleep, 5000) == 0,
	    "c target sleeps in nanosleep");
	rc1 = injector_load(pid, payload, NULL, &cause);
	free(cause);
	cause = NULL;
	/* After the first one, the sleep goes on in restart_syscall. */
	ok(wait_syscall(pid, SYS_restart_syscall, 2000) == 0,
	    "relative nanosleep continues in restart_syscall");
	rc2 = injector_load(pid, payload, NULL, &cause);
	ok(rc1 == 0 && rc2 == 0, "inject twice into a nanosleep (%s)",
	    cause ? cause : "loaded");
	free(cause);
	if (read_line(rep[0], line, sizeof line, 5000) > 0)
		sscanf(line, "%d %lf", &r, &elapsed);
	ok(r == 0 && elapsed >= 1.9 && elapsed <= 2.6,
	    "nanosleep(2 s) returns 0 after %.3f s", elapsed);
	reap(pid);
	close(rep[0]);
}

/* Child: check floating point sums in registers forever. */
static void
child_fp(volatile unsigned long *progress, volatile int *bad)
{
	for (;;) {
		double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0,
		       a7 = 0;
		long double l0 = 0;
		int i;

		for (i = 0; i < 200000; i++) {
			a0 += 1.0;
			a1 += 0.5;
			a2 += 0.25;
			a3 += 2.0;
			a4 += 3.0;
			a5 += 0.125;
			a6 += 4.0;
			a7 += 1.5;
			l0 += 0.5L;
		}
		if (a0 != 200000.0 || a1 != 100000.0 || a2 != 50000.0 ||
		    a3 != 400000.0 || a4 != 600000.0 || a5 != 25000.0 ||
		    a6 != 800000.0 || a7 != 300000.0 || l0 != 100000.0L)
			(*bad)++;
		(*progress)++;
	}
}

static void
test_fp(void)
{
	struct shared {
		unsigned long progress;
		int bad;
	} * sh;
	char *cause = NULL;
	unsigned long before;
	int i, n = 0;
	pid_t pid;

	sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		exit(2);
	pid = fork();
	if (pid == 0)
		child_fp(&sh->progress, &sh->bad);
	track(pid);
	for (i = 0; i < 50; i++) {
		if (injector_load(pid, payload, NULL, &cause) < 0)
			break;
		n++;
		nap_ms(2);
	}
	ok(n == 50, "50 injections into a floating point loop (%s)",
	    n == 50 ? "all loaded" : cause);
	free(cause);
	before = sh->progress;
	for (i = 0; i < 200 && sh->progress < before + 3; i++)
		nap_ms(5);
	ok(sh->bad == 0 && sh->progress >= before + 3 && alive(pid),
	    "floating point results stay right (%d bad of %lu)", sh->bad,
	    sh->progress);
	reap(pid);
	munmap(sh, sizeof *sh);
}

#define MALLOC_THREADS 4

/* Child thread: malloc and free all the time, counting rounds. */
static void *
malloc_loop(void *arg)
{
	volatile unsigned long *progress = arg;
	unsigned seed = (unsigned)(uintptr_t)arg;
	void *slots[64] = { NULL };

	for (;;) {
		int k = (int)(rand_r(&seed) % 64);
		size_t size = 16 + rand_r(&seed) % 65536;

		free(slots[k]);
		slots[k] = malloc(size);
		if (slots[k] != NULL)
			memset(slots[k], k, size < 256 ? size : 256);
		(*progress)++;
	}
	return NULL;
}

static void
test_malloc_threads(void)
{
	volatile unsigned long *progress;
	unsigned long before[MALLOC_THREADS + 1];
	char path[300], out[256], *cause = NULL;
	struct injector_stats st;
	int i, n = 0, attempts = 0, moving;
	double worst = 0;
	pid_t pid;

	progress = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (progress == MAP_FAILED)
		exit(2);
	snprintf(out, sizeof out, "%s/out-malloc", tmpdir);
	pid = fork();
	if (pid == 0) {
		pthread_t th;

		setenv("INJ_PAYLOAD_OUT", out, 1);
		for (i = 1; i <= MALLOC_THREADS; i++)
			pthread_create(
			    &th, NULL, malloc_loop, (void *)&progress[i]);
		malloc_loop((void *)&progress[0]);
	}
	track(pid);
	for (i = 0; i <= MALLOC_THREADS; i++) {
		while (progress[i] == 0)
			nap_ms(1);
	}
	for (i = 0; i < 30; i++) {
		char name[32];

		snprintf(name, sizeof name, "malloc-%d.so", i);
		payload_copy(name, path, sizeof path);
		if (injector_load(pid, path, &st, &cause) < 0)
			break;
		attempts += st.attempts;
		if (st.total_ms > worst)
			worst = st.total_ms;
		n++;
	}
	ok(n == 30, "30 injections into a malloc-heavy threaded target (%s)",
	    n == 30 ? "all loaded" : cause);
	free(cause);
	if (n > 0)
		printf("# malloc target: %.1f attempts per injection, worst "
		       "%.3f ms\n",
		    (double)attempts / n, worst);
	ok(wait_file(out, "loaded", 2000) == 0,
	    "payload constructors ran in the malloc target");
	for (i = 0; i <= MALLOC_THREADS; i++)
		before[i] = progress[i];
	moving = 0;
	for (int tries = 0; tries < 200 && moving <= MALLOC_THREADS; tries++) {
		nap_ms(5);
		moving = 0;
		for (i = 0; i <= MALLOC_THREADS; i++)
			moving += progress[i] > before[i];
	}
	ok(moving == MALLOC_THREADS + 1 && alive(pid),
	    "every malloc thread still makes progress (%d of %d)", moving,
	    MALLOC_THREADS + 1);
	reap(pid);
	munmap((void *)progress, 4096);
}

/* Child thread: hold stdout's lock (a libc lock) and wait forever. */
static void *
lock_holder(void *arg)
{
	int *fd = arg;

	flockfile(stdout);
	if (write(*fd, "l", 1) != 1)
		_exit(1);
	for (;;)
		pause();
	return NULL;
}

static void
test_libc_lock_wait(void)
{
	char out[256], want[64], c, *cause = NULL;
	struct injector_stats st;
	int sync[2], rc;
	pid_t pid;

	snprintf(out, sizeof out, "%s/out-lock", tmpdir);
	if (pipe(sync) < 0)
		exit(2);
	pid = fork();
	if (pid == 0) {
		pthread_t th;

		setenv("INJ_PAYLOAD_OUT", out, 1);
		pthread_create(&th, NULL, lock_holder, &sync[1]);
		if (read(sync[0], &c, 1) != 1)
			_exit(1);
		flockfile(stdout); /* blocks on a futex in libc's data */
		_exit(0);
	}
	track(pid);
	close(sync[0]);
	close(sync[1]);
	ok(wait_syscall(pid, SYS_futex, 5000) == 0,
	    "main thread waits for a libc lock");
	rc = injector_load(pid, payload, &st, &cause);
	ok(rc == 0 && st.tid != pid,
	    "main thread on a libc lock is skipped for another thread (%s, "
	    "%d attempts, %s)",
	    rc ? cause : "loaded", st.attempts, st.how);
	free(cause);
	snprintf(want, sizeof want, "loaded %d", (int)pid);
	ok(wait_file(out, want, 2000) == 0 && alive(pid),
	    "payload ran on the other thread");
	reap(pid);
}

static void
test_embed_host(void)
{
	static const char script[] = "import os, time\n"
				     "os.write(3, b'ready\\n')\n"
				     "time.sleep(60)\n";
	char spath[300], line[64], full[32], *cause = NULL;
	char *argv[] = { embed_host, spath, NULL };
	int report, rc, major = 0, minor = 0;
	FILE *f;
	pid_t pid;

	if (embed_host[0] == '\0') {
		ok(1, "embed host # SKIP could not build it");
		return;
	}
	snprintf(spath, sizeof spath, "%s/embed.py", tmpdir);
	f = fopen(spath, "w");
	if (f == NULL || fputs(script, f) < 0 || fclose(f) != 0)
		exit(2);
	pid = spawn(argv, NULL, &report, NULL);
	ok(read_line(report, line, sizeof line, 10000) >= 0 &&
		wait_syscall(pid, SYS_clock_nanosleep, 5000) == 0,
	    "embed host runs its script");
	rc = injector_python_version(
	    pid, &major, &minor, full, sizeof full, &cause);
	ok(rc == 0 && major == 3 && minor == 11 &&
		strncmp(full, "3.11.", 5) == 0,
	    "python version of the embed host is %d.%d (%s)", major, minor,
	    rc == 0 ? full : cause);
	free(cause);
	cause = NULL;
	rc = injector_load(pid, payload, NULL, &cause);
	ok(rc == 0 && alive(pid), "inject into the embed host (%s)",
	    rc ? cause : "loaded");
	free(cause);
	reap(pid);
	close(report);
}

static void
test_not_python(void)
{
	char *argv[] = { (char *)"/bin/sleep", (char *)"30", NULL };
	char want[64], full[32], *cause = NULL;
	int report, rc, major, minor;
	pid_t pid;

	pid = spawn(argv, NULL, &report, NULL);
	wait_syscall(pid, SYS_clock_nanosleep, 5000);
	rc = injector_python_version(
	    pid, &major, &minor, full, sizeof full, &cause);
	snprintf(want, sizeof want, "pid %d is not a python process", (int)pid);
	ok(rc == -1 && cause != NULL && strcmp(cause, want) == 0,
	    "/bin/sleep is not python (%s)", cause ? cause : "none");
	free(cause);
	reap(pid);
	close(report);
}

/* What a free-threaded python 3.14.10 shows the injector, faked in this
 * program (it links no libpython): Py_Version, and _PyRuntime starting
 * with its _Py_DebugOffsets (cookie, version, free_threaded). */
const uint64_t fake_py_version __asm__("Py_Version") = 0x030E0AF0;
struct {
	char cookie[8];
	uint64_t version;
	uint64_t free_threaded;
} fake_runtime __asm__("_PyRuntime") = {
	{ 'x', 'd', 'e', 'b', 'u', 'g', 'p', 'y' }, 0x030E0AF0, 0
};

/* A fork of this program whose runtime says free_threaded = ft. */
static pid_t
fake_python(uint64_t ft, int *report)
{
	int rp[2];
	pid_t pid;

	if (pipe2(rp, O_CLOEXEC) < 0)
		exit(2);
	pid = fork();
	if (pid == 0) {
		fake_runtime.free_threaded = ft;
		if (write(rp[1], "ready\n", 6) != 6)
			_exit(1);
		for (;;)
			pause();
	}
	track(pid);
	close(rp[1]);
	*report = rp[0];
	return pid;
}

static void
test_free_threaded(void)
{
	char want[160], line[64], full[32], *cause = NULL;
	int report, rc, major = 0, minor = 0;
	pid_t pid;

	pid = fake_python(0, &report);
	read_line(report, line, sizeof line, 10000);
	rc = injector_python_version(
	    pid, &major, &minor, full, sizeof full, &cause);
	ok(rc == 0 && major == 3 && minor == 14 && strcmp(full, "3.14.10") == 0,
	    "a python with the GIL is 3.14 (%s)", rc == 0 ? full : cause);
	free(cause);
	cause = NULL;
	reap(pid);
	close(report);
	pid = fake_python(1, &report);
	read_line(report, line, sizeof line, 10000);
	rc = injector_python_version(
	    pid, &major, &minor, full, sizeof full, &cause);
	snprintf(want, sizeof want,
	    "pid %d runs python 3.14.10t, a free-threaded build, which "
	    "probing does not support",
	    (int)pid);
	ok(rc == -1 && cause != NULL && strcmp(cause, want) == 0,
	    "a free-threaded python is refused (%s)", cause ? cause : "none");
	free(cause);
	ok(alive(pid), "and left running");
	reap(pid);
	close(report);
}

static void
test_no_such_process(void)
{
	char want[64], *cause = NULL, full[32];
	int rc, major, minor;
	pid_t pid;

	pid = fork();
	if (pid == 0)
		_exit(0);
	waitpid(pid, NULL, 0);
	snprintf(want, sizeof want, "no such process: %d", (int)pid);
	rc = injector_load(pid, payload, NULL, &cause);
	ok(rc == -1 && cause != NULL && strcmp(cause, want) == 0,
	    "inject into a missing pid (%s)", cause ? cause : "none");
	free(cause);
	cause = NULL;
	rc = injector_python_version(
	    pid, &major, &minor, full, sizeof full, &cause);
	ok(rc == -1 && cause != NULL && strcmp(cause, want) == 0,
	    "python version of a missing pid (%s)", cause ? cause : "none");
	free(cause);
}

static void
test_already_traced(void)
{
	char want[128], *cause = NULL, c = 0;
	int report, sync[2], rc;
	pid_t pid, helper;

	pid = start_idle_python(NULL, &report);
	if (pipe(sync) < 0)
		exit(2);
	helper = fork();
	if (helper == 0) {
		close(sync[0]);
		c = ptrace(PTRACE_SEIZE, pid, NULL, NULL) == 0 ? 'y' : 'n';
		if (write(sync[1], &c, 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	track(helper);
	close(sync[1]);
	if (read(sync[0], &c, 1) != 1)
		c = 0;
	close(sync[0]);
	snprintf(want, sizeof want,
	    "pid %d is already traced by pid %d (a debugger?)", (int)pid,
	    (int)helper);
	rc = injector_load(pid, payload, NULL, &cause);
	ok(c == 'y' && rc == -1 && cause != NULL && strcmp(cause, want) == 0,
	    "inject into a traced process (%s)", cause ? cause : "none");
	free(cause);
	reap(helper);
	ok(alive(pid), "traced target left alone");
	reap(pid);
	close(report);
}

static void
test_not_permitted(void)
{
	char want[256], got[256] = "", *cause = NULL;
	int report, res[2];
	ssize_t n = 0;
	pid_t pid, helper;

	if (geteuid() != 0) {
		ok(1,
		    "attach not permitted # SKIP needs root to drop to nobody");
		return;
	}
	pid = start_idle_python(NULL, &report);
	if (pipe(res) < 0)
		exit(2);
	helper = fork();
	if (helper == 0) {
		close(res[0]);
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(1);
		if (injector_load(pid, payload, NULL, &cause) == 0)
			_exit(1);
		if (write(res[1], cause, strlen(cause)) < 0)
			_exit(1);
		_exit(0);
	}
	close(res[1]);
	n = read(res[0], got, sizeof got - 1);
	got[n > 0 ? n : 0] = '\0';
	close(res[0]);
	waitpid(helper, NULL, 0);
	snprintf(want, sizeof want,
	    "cannot attach to pid %d: operation not permitted (try as root, "
	    "grant CAP_SYS_PTRACE, or set kernel.yama.ptrace_scope=0)",
	    (int)pid);
	ok(strcmp(got, want) == 0, "attach not permitted (%s)", got);
	ok(alive(pid), "target of a refused attach left alone");
	reap(pid);
	close(report);
}

static void
test_exit_during(void)
{
	const char *env[] = { "INJ_PAYLOAD_EXIT=1", NULL };
	char path[300], want[64], *cause = NULL;
	int report, rc;
	pid_t pid;

	payload_copy("exit.so", path, sizeof path);
	pid = start_idle_python(env, &report);
	snprintf(want, sizeof want, "pid %d exited during injection", (int)pid);
	rc = injector_load(pid, path, NULL, &cause);
	ok(rc == -1 && cause != NULL && strcmp(cause, want) == 0,
	    "target that exits during injection (%s)", cause ? cause : "none");
	free(cause);
	reap(pid);
	close(report);
}

static void
test_signal_during(void)
{
	static const char script[] = "import os, signal, time\n"
				     "signal.signal(signal.SIGUSR1, "
				     "lambda s, f: os.write(3, b'usr1\\n'))\n"
				     "os.write(3, b'ready\\n')\n"
				     "while True:\n"
				     "    time.sleep(60)\n";
	const char *env[] = { "INJ_PAYLOAD_SLEEP_MS=400", NULL };
	char path[300], line[64], *cause = NULL;
	int report, rc;
	pid_t pid, helper;

	payload_copy("slow.so", path, sizeof path);
	pid = spawn_python(script, env, &report);
	read_line(report, line, sizeof line, 10000);
	wait_syscall(pid, SYS_clock_nanosleep, 5000);
	helper = fork();
	if (helper == 0) {
		nap_ms(150);
		kill(pid, SIGUSR1);
		_exit(0);
	}
	rc = injector_load(pid, path, NULL, &cause);
	waitpid(helper, NULL, 0);
	ok(rc == 0, "inject while a signal arrives (%s)",
	    rc ? cause : "loaded");
	free(cause);
	rc = read_line(report, line, sizeof line, 3000);
	ok(rc > 0 && strcmp(line, "usr1") == 0 && alive(pid),
	    "signal sent during injection is delivered afterwards");
	reap(pid);
	close(report);
}

static void
test_watchdog(void)
{
	const char *env[] = { "INJ_PAYLOAD_SLEEP_MS=8000", NULL };
	char path[300], *cause = NULL;
	int report, rc;
	double t0;
	pid_t pid;

	payload_copy("stuck.so", path, sizeof path);
	pid = start_idle_python(env, &report);
	t0 = now_ms();
	rc = injector_load(pid, path, NULL, &cause);
	ok(rc == -1 && cause != NULL && strstr(cause, "did not return") &&
		now_ms() - t0 < 7000,
	    "watchdog ends a call that hangs (%s)", cause ? cause : "none");
	free(cause);
	ok(alive(pid) && wait_syscall(pid, SYS_clock_nanosleep, 2000) == 0,
	    "target goes back to its sleep after the watchdog");
	reap(pid);
	close(report);
}

int
main(void)
{
	static char out[128];

	snprintf(tmpdir, sizeof tmpdir, "/tmp/test-injector.XXXXXX");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* Every target's payload writes into the temporary directory. */
	snprintf(out, sizeof out, "INJ_PAYLOAD_OUT=%s/out-default", tmpdir);
	putenv(out);
	if (build("inj-payload", "INJ_PAYLOAD", ".so", payload, sizeof payload,
		"-shared -fPIC -O2", "") < 0) {
		fprintf(stderr, "cannot build the test payload\n");
		cleanup();
		return 2;
	}
	if (build("embed-host", "INJ_EMBED_HOST", "", embed_host,
		sizeof embed_host, "-O2 -I/usr/include/python3.11",
		"-lpython3.11 2>/dev/null") < 0)
		embed_host[0] = '\0';

	test_python_sleep();
	test_dlopen_error();
	test_blocked_read();
	test_restart_syscall();
	test_fp();
	test_malloc_threads();
	test_libc_lock_wait();
	test_embed_host();
	test_not_python();
	test_free_threaded();
	test_no_such_process();
	test_already_traced();
	test_not_permitted();
	test_exit_during();
	test_signal_during();
	test_watchdog();
	test_timing();

	cleanup();
	printf("%d passed, %d failed\n", passed, failed);
	return failed == 0 ? 0 : 1;
}
