/* Error causes and the agent's log file. */
#ifndef PROBING_LOG_H
#define PROBING_LOG_H

/* Sets *cause to a malloc'd message (NULL if even that fails). */
void cause_set(char **cause, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The message to show for a cause that may be NULL. */
const char *cause_str(const char *cause);

/* Opens the log at path (append; created 0600, never through a link or a
 * FIFO); with NULL logging goes nowhere. 0, or -1 with *cause. */
int log_open(const char *path, int remove_at_exit, char **cause);
/* Unlinks the log when it was opened with remove_at_exit. */
void log_remove(void);
/* Appends one time-stamped line; thread-safe, never writes to stdout. */
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *log_path(void);
/* Fork child: closes the log's fd; from then on logging goes nowhere. */
void log_after_fork(void);

#endif
