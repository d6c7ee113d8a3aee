/* Child-process, temporary-tree and HTTP helpers for the integration tests
 * (see proc.h). Logs are re-read from the start on every poll: they are small,
 * and this way a line is found whether or not it was complete at the last
 * look. The HTTP client speaks just enough HTTP/1.0 for /metrics and
 * /healthz: one request, the server closes the connection after the body. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include "proc.h"

#define POLL_MS       20
#define LOG_READ_MAX  (16 * 1024 * 1024)
#define HTTP_BODY_MAX (4 * 1024 * 1024)
#define MAX_GROUPS    9

extern char **environ;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void pf_proc_sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void pf_proc_init(struct pf_proc *p)
{
    memset(p, 0, sizeof(*p));
    p->reaped = true;
}

const char *pf_proc_describe(int wait_status, char *buf, size_t size)
{
    if (WIFEXITED(wait_status))
        snprintf(buf, size, "exit status %d", WEXITSTATUS(wait_status));
    else if (WIFSIGNALED(wait_status))
        snprintf(buf, size, "killed by signal %d (%s)", WTERMSIG(wait_status),
                 strsignal(WTERMSIG(wait_status)));
    else
        snprintf(buf, size, "wait status 0x%x", wait_status);
    return buf;
}

enum pf_status pf_proc_spawn(struct pf_proc *p, const char *const argv[], const char *log_path,
                             struct pf_error *err)
{
    posix_spawn_file_actions_t fa;
    const char *base = strrchr(argv[0], '/');
    pid_t pid;
    int rc;

    pf_proc_init(p);
    snprintf(p->name, sizeof(p->name), "%s", base != NULL ? base + 1 : argv[0]);
    snprintf(p->log_path, sizeof(p->log_path), "%s", log_path);
    if (posix_spawn_file_actions_init(&fa) != 0)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (rc == 0)
        rc = posix_spawn_file_actions_addopen(&fa, 1, log_path,
                                              O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (rc == 0)
        rc = posix_spawn_file_actions_adddup2(&fa, 1, 2);
    if (rc == 0)
        rc = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return pf_error_set(err, PF_E_IO, "could not start '%s': %s", argv[0], strerror(rc));
    p->pid = pid;
    p->reaped = false;
    return PF_OK;
}

/* Reaps the child if it has exited; true when it is gone. */
static bool reap(struct pf_proc *p, bool block)
{
    int status;
    pid_t r;

    if (p->reaped)
        return true;
    do {
        r = waitpid(p->pid, &status, block ? 0 : WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == 0)
        return false;
    if (r < 0)
        status = 255 << 8; /* reaped elsewhere: reads as "exit status 255" */
    p->wait_status = status;
    p->reaped = true;
    p->pid = 0;
    return true;
}

/* Reads the log (its first LOG_READ_MAX bytes) into a new NUL-terminated
 * buffer; NULL on failure. */
static char *read_log(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    size_t cap, n = 0;
    char *buf;

    *len = 0;
    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return NULL;
    }
    cap = st.st_size < LOG_READ_MAX ? (size_t)st.st_size : LOG_READ_MAX;
    buf = malloc(cap + 1);
    while (buf != NULL && n < cap) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (buf == NULL)
        return NULL;
    buf[n] = '\0';
    *len = n;
    return buf;
}

char *pf_proc_log_tail(const struct pf_proc *p, size_t max)
{
    size_t len;
    char *log = read_log(p->log_path, &len);
    char *tail;

    if (log == NULL)
        return strdup("(no log)");
    tail = strdup(len > max ? log + len - max : log);
    free(log);
    return tail;
}

/* Scans complete lines of the log for re; fills out as pf_proc_wait_log says.
 * Returns the number of matching lines (stops at the first when out is set). */
static int scan_log(const char *path, const regex_t *re, char *out, size_t out_size, bool first)
{
    size_t len;
    char *log = read_log(path, &len);
    int count = 0;

    if (log == NULL)
        return 0;
    for (char *line = log, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        regmatch_t m[MAX_GROUPS + 1];
        *nl = '\0';
        if (regexec(re, line, MAX_GROUPS + 1, m, 0) != 0)
            continue;
        count++;
        if (out != NULL && out_size > 0) {
            size_t want = re->re_nsub < MAX_GROUPS ? re->re_nsub : MAX_GROUPS;
            regmatch_t *g = want >= 1 && m[want].rm_so >= 0 ? &m[want] : NULL;
            const char *from = g != NULL ? line + g->rm_so : line;
            size_t n = g != NULL ? (size_t)(g->rm_eo - g->rm_so) : strlen(line);
            if (n >= out_size)
                n = out_size - 1;
            memcpy(out, from, n);
            out[n] = '\0';
        }
        if (first)
            break;
    }
    free(log);
    return count;
}

int pf_proc_log_count(const struct pf_proc *p, const char *re)
{
    regex_t rx;
    int n;

    if (regcomp(&rx, re, REG_EXTENDED) != 0)
        return -1;
    n = scan_log(p->log_path, &rx, NULL, 0, false);
    regfree(&rx);
    return n;
}

enum pf_status pf_proc_wait_log(struct pf_proc *p, const char *re, int64_t timeout_ms, char *out,
                                size_t out_size, struct pf_error *err)
{
    int64_t deadline = now_ms() + timeout_ms;
    enum pf_status rc;
    char how[96];
    regex_t rx;
    char *tail;

    if (regcomp(&rx, re, REG_EXTENDED) != 0)
        return pf_error_set(err, PF_E_INVALID, "bad regular expression '%s'", re);
    for (;;) {
        /* Look once more after an exit: the line may be the child's last. */
        bool gone = reap(p, false);
        if (scan_log(p->log_path, &rx, out, out_size, true) > 0) {
            rc = PF_OK;
            break;
        }
        if (gone) {
            pf_proc_describe(p->wait_status, how, sizeof(how));
            rc = PF_E_END;
            break;
        }
        if (now_ms() >= deadline) {
            rc = PF_E_DEADLINE;
            break;
        }
        pf_proc_sleep_ms(POLL_MS);
    }
    regfree(&rx);
    if (rc == PF_OK)
        return PF_OK;
    tail = pf_proc_log_tail(p, 160);
    if (rc == PF_E_END)
        pf_error_set(err, rc, "%s ended (%s) before logging /%s/; log ends: %s", p->name, how, re,
                     tail != NULL ? tail : "");
    else
        pf_error_set(err, rc, "%s logged no line matching /%s/ within %lld ms; log ends: %s",
                     p->name, re, (long long)timeout_ms, tail != NULL ? tail : "");
    free(tail);
    return rc;
}

enum pf_status pf_proc_wait_port(struct pf_proc *p, const char *event, int64_t timeout_ms,
                                 int *port, struct pf_error *err)
{
    char re[160], text[16];
    enum pf_status rc;
    char *end;
    long v;

    snprintf(re, sizeof(re), "(^| )event=%s( .*)? port=([0-9]+)", event);
    rc = pf_proc_wait_log(p, re, timeout_ms, text, sizeof(text), err);
    if (rc != PF_OK)
        return rc;
    v = strtol(text, &end, 10);
    if (*end != '\0' || v <= 0 || v > 65535)
        return pf_error_set(err, PF_E_INVALID, "%s logged event=%s with port '%s'", p->name, event,
                            text);
    *port = (int)v;
    return PF_OK;
}

enum pf_status pf_proc_signal(struct pf_proc *p, int sig, struct pf_error *err)
{
    if (p->reaped)
        return pf_error_set(err, PF_E_PRECONDITION, "%s is not running", p->name);
    if (kill(p->pid, sig) != 0)
        return pf_error_set(err, PF_E_IO, "could not signal %s (pid %d): %s", p->name, (int)p->pid,
                            strerror(errno));
    return PF_OK;
}

enum pf_status pf_proc_wait(struct pf_proc *p, int64_t timeout_ms, int *wait_status,
                            struct pf_error *err)
{
    int64_t deadline = now_ms() + timeout_ms;

    while (!reap(p, false)) {
        if (now_ms() >= deadline)
            return pf_error_set(err, PF_E_DEADLINE, "%s (pid %d) still runs after %lld ms", p->name,
                                (int)p->pid, (long long)timeout_ms);
        pf_proc_sleep_ms(POLL_MS);
    }
    if (wait_status != NULL)
        *wait_status = p->wait_status;
    return PF_OK;
}

enum pf_status pf_proc_stop(struct pf_proc *p, int64_t timeout_ms, int *wait_status,
                            struct pf_error *err)
{
    enum pf_status rc;

    if (p->reaped) {
        if (wait_status != NULL)
            *wait_status = p->wait_status;
        return PF_OK;
    }
    rc = pf_proc_signal(p, SIGTERM, err);
    if (rc != PF_OK)
        return rc;
    rc = pf_proc_wait(p, timeout_ms, wait_status, err);
    if (rc == PF_E_DEADLINE) {
        kill(p->pid, SIGKILL);
        reap(p, true);
        if (wait_status != NULL)
            *wait_status = p->wait_status;
        return pf_error_set(err, PF_E_DEADLINE, "%s did not exit within %lld ms of SIGTERM",
                            p->name, (long long)timeout_ms);
    }
    return rc;
}

void pf_proc_kill(struct pf_proc *p)
{
    if (p->reaped)
        return;
    kill(p->pid, SIGKILL);
    reap(p, true);
}

enum pf_status pf_proc_run(const char *const argv[], const char *log_path, int64_t timeout_ms,
                           struct pf_error *err)
{
    struct pf_proc p;
    enum pf_status rc;
    char how[96];
    char *tail;
    int status;

    rc = pf_proc_spawn(&p, argv, log_path, err);
    if (rc != PF_OK)
        return rc;
    rc = pf_proc_wait(&p, timeout_ms, &status, err);
    if (rc != PF_OK) {
        pf_proc_kill(&p);
        return rc;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return PF_OK;
    tail = pf_proc_log_tail(&p, 160);
    rc = pf_error_set(err, PF_E_IO, "%s failed (%s): %s", p.name,
                      pf_proc_describe(status, how, sizeof(how)), tail != NULL ? tail : "");
    free(tail);
    return rc;
}

/* ---- temporary trees ---- */

enum pf_status pf_proc_mkdtemp(const char *prefix, char *out, size_t out_size, struct pf_error *err)
{
    const char *tmp = getenv("TMPDIR");

    if (tmp == NULL || tmp[0] == '\0')
        tmp = "/tmp";
    if (snprintf(out, out_size, "%s/%s.XXXXXX", tmp, prefix) >= (int)out_size)
        return pf_error_set(err, PF_E_INVALID, "temporary directory name too long");
    if (mkdtemp(out) == NULL)
        return pf_error_set(err, PF_E_IO, "could not create a directory under '%s': %s", tmp,
                            strerror(errno));
    return PF_OK;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    remove(path);
    return 0;
}

void pf_proc_rmtree(const char *dir)
{
    if (dir != NULL && dir[0] != '\0')
        nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Adds up the regular files below dir; -1 when a directory cannot be read. */
static int walk(const char *dir, long *files, long long *bytes)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int rc = 0;

    if (d == NULL)
        return -1;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        char path[PATH_MAX];
        struct stat st;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= (int)sizeof(path))
            continue;
        if (lstat(path, &st) != 0)
            continue; /* removed while we looked: not there */
        if (S_ISDIR(st.st_mode)) {
            rc = walk(path, files, bytes);
        } else if (S_ISREG(st.st_mode)) {
            (*files)++;
            *bytes += st.st_size;
        }
    }
    closedir(d);
    return rc;
}

long pf_proc_count_files(const char *dir)
{
    long files = 0;
    long long bytes = 0;
    return walk(dir, &files, &bytes) == 0 ? files : -1;
}

long long pf_proc_tree_bytes(const char *dir)
{
    long files = 0;
    long long bytes = 0;
    return walk(dir, &files, &bytes) == 0 ? bytes : -1;
}

/* ---- HTTP/1.0 GET ---- */

/* Waits until fd is ready for events or the deadline passes. */
static enum pf_status wait_fd(int fd, short events, int64_t deadline, struct pf_error *err)
{
    for (;;) {
        struct pollfd pfd = {fd, events, 0};
        int64_t left = deadline - now_ms();
        int r;

        if (left <= 0)
            return pf_error_set(err, PF_E_DEADLINE, "the admin server did not answer in time");
        r = poll(&pfd, 1, (int)left);
        if (r > 0)
            return PF_OK;
        if (r < 0 && errno != EINTR)
            return pf_error_set(err, PF_E_IO, "poll: %s", strerror(errno));
    }
}

static enum pf_status parse_response(char *resp, size_t len, int *status, char **body,
                                     size_t *body_len, struct pf_error *err)
{
    char *end = memmem(resp, len, "\r\n\r\n", 4);
    size_t skip = 4;
    int code;

    if (end == NULL) {
        end = memmem(resp, len, "\n\n", 2);
        skip = 2;
    }
    if (end == NULL || sscanf(resp, "HTTP/1.%*d %d", &code) != 1)
        return pf_error_set(err, PF_E_INVALID, "malformed HTTP response: '%.60s'", resp);
    *status = code;
    *body_len = len - (size_t)(end + skip - resp);
    *body = malloc(*body_len + 1);
    if (*body == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    memcpy(*body, end + skip, *body_len);
    (*body)[*body_len] = '\0';
    return PF_OK;
}

enum pf_status pf_proc_http_get(int port, const char *path, int64_t timeout_ms, int *status,
                                char **body, size_t *len, struct pf_error *err)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int64_t deadline = now_ms() + timeout_ms;
    char req[512];
    char *resp = NULL;
    size_t have = 0, sent = 0, req_len;
    enum pf_status rc;
    int fd;

    *body = NULL;
    *len = 0;
    req_len = (size_t)snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n\r\n",
                               path, port);
    if (req_len >= sizeof(req))
        return pf_error_set(err, PF_E_INVALID, "path too long");
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return pf_error_set(err, PF_E_IO, "socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS) {
        rc = pf_error_set(err, PF_E_UNAVAILABLE, "cannot connect to 127.0.0.1:%d: %s", port,
                          strerror(errno));
        goto out_close_fd;
    }
    while (sent < req_len) {
        rc = wait_fd(fd, POLLOUT, deadline, err);
        if (rc != PF_OK)
            goto out_close_fd;
        ssize_t n = send(fd, req + sent, req_len - sent, MSG_NOSIGNAL);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0) {
            rc = pf_error_set(err, PF_E_UNAVAILABLE, "GET %s from 127.0.0.1:%d: %s", path, port,
                              strerror(errno));
            goto out_close_fd;
        }
        sent += (size_t)n;
    }
    resp = malloc(HTTP_BODY_MAX + 1);
    if (resp == NULL) {
        rc = pf_error_set(err, PF_E_RESOURCE, "out of memory");
        goto out_close_fd;
    }
    for (;;) {
        rc = wait_fd(fd, POLLIN, deadline, err);
        if (rc != PF_OK)
            goto out_free_resp;
        ssize_t n = recv(fd, resp + have, HTTP_BODY_MAX - have, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0) {
            rc = pf_error_set(err, PF_E_UNAVAILABLE, "GET %s from 127.0.0.1:%d: %s", path, port,
                              strerror(errno));
            goto out_free_resp;
        }
        if (n == 0)
            break;
        have += (size_t)n;
        if (have == HTTP_BODY_MAX) {
            rc = pf_error_set(err, PF_E_RESOURCE, "GET %s: response over %d bytes", path,
                              HTTP_BODY_MAX);
            goto out_free_resp;
        }
    }
    resp[have] = '\0';
    rc = parse_response(resp, have, status, body, len, err);
out_free_resp:
    free(resp);
out_close_fd:
    close(fd);
    return rc;
}
