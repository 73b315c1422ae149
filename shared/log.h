/* Error causes and the agent's log file. */
#ifndef PROBING_LOG_H
#define PROBING_LOG_H

/* Sets *cause to a malloc'd message (NULL if even that fails). */
void cause_set(char **cause, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The message to show for a cause that may be NULL. */
const char *cause_str(const char *cause);

/* Opens the log at path (append); with NULL logging goes nowhere. */
void log_open(const char *path);
/* Appends one time-stamped line; thread-safe, never writes to stdout. */
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *log_path(void);

#endif
