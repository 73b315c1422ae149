/* embed-host.c - a C program embedding libpython that runs a script file */

#include <stdio.h>

#include <Python.h>

/* Run the Python file argv[1] with sys.argv = argv[1:]; exit 1 on error. */
int
main(int argc, char **argv)
{
	PyConfig config;
	PyStatus status;
	FILE *f;
	int rc;

	if (argc < 2) {
		fprintf(stderr, "usage: embed-host script.py [args]\n");
		return 2;
	}
	PyConfig_InitPythonConfig(&config);
	config.parse_argv = 0;
	status = PyConfig_SetBytesArgv(&config, argc - 1, argv + 1);
	if (PyStatus_Exception(status))
		goto fail;
	status = Py_InitializeFromConfig(&config);
	if (PyStatus_Exception(status))
		goto fail;
	PyConfig_Clear(&config);
	f = fopen(argv[1], "r");
	if (f == NULL) {
		perror(argv[1]);
		Py_Finalize();
		return 1;
	}
	rc = PyRun_SimpleFileExFlags(f, argv[1], 1, NULL);
	if (Py_FinalizeEx() < 0)
		rc = -1;
	return rc == 0 ? 0 : 1;
fail:
	PyConfig_Clear(&config);
	Py_ExitStatusException(status);
}
