/* Child processes for integration tests: start a real Printfarm binary with its
 * stdout and stderr in a log file, wait for a log line (the bound port, a
 * readiness event), signal it and reap it with timeouts, so a test never
 * hangs on a child and always knows how it ended. Also the small things such
 * a test needs around its children: a temporary directory tree and a tiny
 * HTTP/1.0 GET client for the admin port. posix_spawn is used instead of fork
 * because the test process runs gRPC threads. Every wait is bounded by a
 * timeout; pick generous ones (sanitizer builds on a loaded 2-core machine
 * are slow) and never assert on how long something took. Not thread-safe:
 * one struct pf_proc is driven by one thread. */
#ifndef PF_TEST_PROC_H
#define PF_TEST_PROC_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "status.h"

#define PF_PROC_NAME_MAX 64

/* One child. Embedded by value; pf_proc_init before use. */
struct pf_proc {
    char name[PF_PROC_NAME_MAX]; /* for messages: argv[0]'s base name */
    char log_path[PATH_MAX];
    pid_t pid;       /* > 0 while the child has not been reaped */
    int wait_status; /* waitpid status once reaped */
    bool reaped;
};

void pf_proc_init(struct pf_proc *p);

/* Starts argv[0] (a path) with argv (NULL-terminated; copied by the kernel),
 * in the test's environment, with stdin from /dev/null and stdout and stderr
 * appended to log_path (created or truncated). PF_E_IO when it cannot start. */
enum pf_status pf_proc_spawn(struct pf_proc *p, const char *const argv[], const char *log_path,
                             struct pf_error *err) PF_MUST_CHECK;

/* Waits until a line of the child's log matches the POSIX extended regex re,
 * copying into out (may be NULL) the last parenthesised group (at most the
 * 9th), or the whole line when re has none. PF_E_DEADLINE after timeout_ms; PF_E_END when the
 * child exits first. err quotes the end of the log either way. */
enum pf_status pf_proc_wait_log(struct pf_proc *p, const char *re, int64_t timeout_ms, char *out,
                                size_t out_size, struct pf_error *err) PF_MUST_CHECK;

/* Waits for the log line `event=EVENT ... port=N` and returns N. */
enum pf_status pf_proc_wait_port(struct pf_proc *p, const char *event, int64_t timeout_ms,
                                 int *port, struct pf_error *err) PF_MUST_CHECK;

/* Counts the log lines matching re now (no waiting); -1 when re is invalid. */
int pf_proc_log_count(const struct pf_proc *p, const char *re);

/* The last max bytes of the log as a new string the caller frees (never NULL
 * unless out of memory). */
char *pf_proc_log_tail(const struct pf_proc *p, size_t max);

/* Sends sig to a running child. PF_E_PRECONDITION when already reaped. */
enum pf_status pf_proc_signal(struct pf_proc *p, int sig, struct pf_error *err) PF_MUST_CHECK;

/* Waits up to timeout_ms for the child to exit and reaps it; *wait_status
 * (may be NULL) is the waitpid status. PF_E_DEADLINE while it still runs. */
enum pf_status pf_proc_wait(struct pf_proc *p, int64_t timeout_ms, int *wait_status,
                            struct pf_error *err) PF_MUST_CHECK;

/* SIGTERM, then waits up to timeout_ms; if the child is still running it gets
 * SIGKILL, is reaped and PF_E_DEADLINE is returned. */
enum pf_status pf_proc_stop(struct pf_proc *p, int64_t timeout_ms, int *wait_status,
                            struct pf_error *err) PF_MUST_CHECK;

/* SIGKILL and reap; a no-op for a child already reaped (for teardown). */
void pf_proc_kill(struct pf_proc *p);

/* "exit status 0", "killed by signal 9", ... into buf; returns buf. */
const char *pf_proc_describe(int wait_status, char *buf, size_t size);

/* Runs argv to completion (spawn + wait up to timeout_ms); PF_OK only when
 * it exits with status 0, else err quotes its log. */
enum pf_status pf_proc_run(const char *const argv[], const char *log_path, int64_t timeout_ms,
                           struct pf_error *err) PF_MUST_CHECK;

/* Makes a new directory PREFIX.XXXXXX under $TMPDIR (or /tmp) into out. */
enum pf_status pf_proc_mkdtemp(const char *prefix, char *out, size_t out_size,
                               struct pf_error *err) PF_MUST_CHECK;

/* Removes dir and everything below it; errors are ignored (test teardown). */
void pf_proc_rmtree(const char *dir);

/* Regular files in dir and below it; -1 when dir cannot be read. */
long pf_proc_count_files(const char *dir);

/* Sums the sizes of the regular files in dir and below it; -1 on error. */
long long pf_proc_tree_bytes(const char *dir);

/* Sleeps ms milliseconds. */
void pf_proc_sleep_ms(int64_t ms);

/* A plain HTTP/1.0 GET of path from 127.0.0.1:port. On PF_OK *status is the
 * HTTP status code and *body a NUL-terminated heap copy of the body (*len
 * bytes) that the caller frees. The response is capped at 4 MiB
 * (PF_E_RESOURCE beyond). PF_E_UNAVAILABLE when the connection fails,
 * PF_E_DEADLINE after timeout_ms, PF_E_INVALID for a malformed response. */
enum pf_status pf_proc_http_get(int port, const char *path, int64_t timeout_ms, int *status,
                                char **body, size_t *len, struct pf_error *err) PF_MUST_CHECK;

#endif
