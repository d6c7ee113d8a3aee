/* hiredis plumbing: URL parsing and redaction, connecting with timeouts (then
 * AUTH and SELECT), commands as argument vectors, reply checks, and error
 * classification. A broken hiredis context cannot be reused, so the client
 * drops it on the first I/O error and makes a new one on the next use; before
 * each command it also polls the idle socket, so a connection Redis closed
 * in the meantime (restart, CLIENT KILL, idle timeout) is replaced before a
 * command is written to it. hiredis writes with write(2), which raises SIGPIPE
 * on a closed socket: unless the process ignores SIGPIPE, the signal is
 * blocked around each command and a pending one discarded, as libpq does. */
#include "redis.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "log.h"

#define TARGET_MAX  280
#define REASON_MAX  200
#define CMDNAME_MAX 32
#define SMALL_ARGC  16

struct pf_redis {
    redisContext *ctx; /* NULL when not connected */
    struct pf_redis_url url;
    char target[TARGET_MAX]; /* "HOST:PORT" for messages */
    int connect_timeout_ms;
    int command_timeout_ms;
    bool lost; /* the connection broke: log the reconnect */
};

/* ---- pure helpers ---- */

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The length of "SCHEME://" at the start of url (any scheme, so that even a
 * wrong one is redacted), 0 when there is none. */
static size_t scheme_length(const char *url)
{
    size_t n = 0;
    while (isalnum((unsigned char)url[n]) || url[n] == '+' || url[n] == '-' || url[n] == '.')
        n++;
    if (n == 0 || strncmp(url + n, "://", 3) != 0)
        return 0;
    return n + 3;
}

void pf_redis_redact_url(const char *url, char *out, size_t out_size)
{
    if (out == NULL || out_size == 0)
        return;
    out[0] = '\0';
    if (url == NULL)
        return;
    size_t scheme = scheme_length(url);
    const char *authority = url + scheme;
    size_t authority_len = strcspn(authority, "/");
    const char *at = NULL;
    for (size_t i = 0; i < authority_len; i++) {
        if (authority[i] == '@')
            at = authority + i; /* the last one: a password may hold '@' */
    }
    if (at == NULL) {
        snprintf(out, out_size, "%s", url);
        return;
    }
    /* Keep a user name ("user:secret@" -> "user@"); drop user info without a
     * ':' entirely, as it may be a bare password. */
    const char *colon = memchr(authority, ':', (size_t)(at - authority));
    int user_len = colon != NULL ? (int)(colon - authority) : 0;
    snprintf(out, out_size, "%.*s%.*s%s%s", (int)scheme, url, user_len, authority,
             user_len > 0 ? "@" : "", at + 1);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* %-decodes s[0..len) into out; false when it does not fit or is malformed. */
static bool percent_decode(const char *s, size_t len, char *out, size_t out_size)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= len)
                return false;
            int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
            if (hi < 0 || lo < 0)
                return false;
            c = (char)(hi * 16 + lo);
            if (c == '\0')
                return false;
            i += 2;
        }
        if (n + 1 >= out_size)
            return false;
        out[n++] = c;
    }
    out[n] = '\0';
    return true;
}

static bool parse_int(const char *s, size_t len, long min, long max, int *out)
{
    if (len == 0 || len > 10)
        return false;
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max)
        return false;
    *out = (int)v;
    return true;
}

enum pf_status pf_redis_url_parse(const char *url, struct pf_redis_url *out, struct pf_error *err)
{
    if (url == NULL || url[0] == '\0')
        return pf_error_set(err, PF_E_INVALID, "no redis URL given");
    char shown[256];
    pf_redis_redact_url(url, shown, sizeof shown);
    if (has_prefix(url, "rediss://"))
        return pf_error_set(err, PF_E_INVALID,
                            "invalid redis URL '%s': TLS (rediss://) is not supported", shown);
    if (!has_prefix(url, "redis://"))
        return pf_error_set(err, PF_E_INVALID,
                            "invalid redis URL '%s': expected redis://HOST:PORT[/DB]", shown);
    struct pf_redis_url u;
    memset(&u, 0, sizeof u);
    u.port = 6379;

    const char *authority = url + strlen("redis://");
    size_t authority_len = strcspn(authority, "/");
    const char *path = authority + authority_len;
    const char *at = NULL;
    for (size_t i = 0; i < authority_len; i++) {
        if (authority[i] == '@')
            at = authority + i;
    }
    const char *hostport = authority;
    if (at != NULL) {
        const char *colon = memchr(authority, ':', (size_t)(at - authority));
        if (colon == NULL)
            return pf_error_set(err, PF_E_INVALID,
                                "invalid redis URL '%s': user info must be ':PASSWORD' or "
                                "'USER:PASSWORD'",
                                shown);
        if (!percent_decode(authority, (size_t)(colon - authority), u.user, sizeof u.user) ||
            !percent_decode(colon + 1, (size_t)(at - colon - 1), u.password, sizeof u.password))
            return pf_error_set(err, PF_E_INVALID,
                                "invalid redis URL '%s': bad or too long user or password", shown);
        if (u.password[0] == '\0')
            return pf_error_set(err, PF_E_INVALID, "invalid redis URL '%s': empty password", shown);
        hostport = at + 1;
    }
    size_t hostport_len = (size_t)(path - hostport);
    const char *host = hostport;
    size_t host_len;
    const char *port = NULL;
    size_t port_len = 0;
    if (hostport_len > 0 && hostport[0] == '[') {
        const char *close = memchr(hostport, ']', hostport_len);
        if (close == NULL)
            return pf_error_set(err, PF_E_INVALID, "invalid redis URL '%s': missing ']'", shown);
        host = hostport + 1;
        host_len = (size_t)(close - host);
        const char *rest = close + 1;
        if (rest < path) {
            if (*rest != ':')
                return pf_error_set(err, PF_E_INVALID,
                                    "invalid redis URL '%s': unexpected text after ']'", shown);
            port = rest + 1;
            port_len = (size_t)(path - port);
        }
    } else {
        const char *colon = memchr(hostport, ':', hostport_len);
        host_len = colon != NULL ? (size_t)(colon - hostport) : hostport_len;
        if (colon != NULL) {
            port = colon + 1;
            port_len = (size_t)(path - port);
        }
    }
    if (host_len == 0)
        return pf_error_set(err, PF_E_INVALID, "invalid redis URL '%s': no host", shown);
    if (host_len >= sizeof u.host)
        return pf_error_set(err, PF_E_INVALID, "invalid redis URL '%s': host too long", shown);
    for (size_t i = 0; i < host_len; i++) {
        unsigned char c = (unsigned char)host[i];
        if (c <= 0x20 || c >= 0x7f || c == '@' || c == '?' || c == '#' || c == '[' || c == ']' ||
            (c == ':' && hostport[0] != '['))
            return pf_error_set(err, PF_E_INVALID, "invalid redis URL '%s': bad host", shown);
    }
    memcpy(u.host, host, host_len);
    u.host[host_len] = '\0';
    if (port != NULL && !parse_int(port, port_len, 1, 65535, &u.port))
        return pf_error_set(err, PF_E_INVALID,
                            "invalid redis URL '%s': port must be a number in 1..65535", shown);
    if (path[0] == '/' && path[1] != '\0' &&
        !parse_int(path + 1, strlen(path + 1), 0, INT_MAX, &u.db))
        return pf_error_set(err, PF_E_INVALID,
                            "invalid redis URL '%s': the path must be a database number", shown);
    *out = u;
    return PF_OK;
}

enum pf_status pf_redis_status_from_error(const char *error_text)
{
    if (error_text == NULL)
        return PF_E_INTERNAL;
    static const struct {
        const char *code;
        enum pf_status status;
    } codes[] = {
        {"NOSCRIPT", PF_E_NOT_FOUND},      {"LOADING", PF_E_UNAVAILABLE},
        {"BUSY", PF_E_UNAVAILABLE},        {"MASTERDOWN", PF_E_UNAVAILABLE},
        {"READONLY", PF_E_UNAVAILABLE},    {"TRYAGAIN", PF_E_UNAVAILABLE},
        {"CLUSTERDOWN", PF_E_UNAVAILABLE}, {"WRONGTYPE", PF_E_PRECONDITION},
        {"NOAUTH", PF_E_UNAUTHENTICATED},  {"WRONGPASS", PF_E_UNAUTHENTICATED},
        {"NOPERM", PF_E_PERMISSION},       {"OOM", PF_E_RESOURCE},
    };
    size_t word = strcspn(error_text, " ");
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        if (strlen(codes[i].code) == word && strncmp(error_text, codes[i].code, word) == 0)
            return codes[i].status;
    }
    return PF_E_INTERNAL;
}

static const char *reply_type_name(int type)
{
    switch (type) {
    case REDIS_REPLY_STRING:
        return "a string";
    case REDIS_REPLY_ARRAY:
        return "an array";
    case REDIS_REPLY_INTEGER:
        return "an integer";
    case REDIS_REPLY_NIL:
        return "nil";
    case REDIS_REPLY_STATUS:
        return "a status";
    case REDIS_REPLY_ERROR:
        return "an error";
    default:
        return "an unknown reply";
    }
}

enum pf_status pf_redis_reply_expect(const redisReply *reply, int type, const char *command,
                                     struct pf_error *err)
{
    if (command == NULL)
        command = "?";
    if (reply == NULL)
        return pf_error_set(err, PF_E_INTERNAL, "redis command '%s' returned no reply", command);
    if (reply->type == type)
        return PF_OK;
    if (reply->type == REDIS_REPLY_ERROR)
        return pf_error_set(err, pf_redis_status_from_error(reply->str),
                            "redis command '%s' failed: %.150s", command,
                            reply->str != NULL ? reply->str : "");
    return pf_error_set(err, PF_E_INTERNAL, "redis command '%s' returned %s, expected %s", command,
                        reply_type_name(reply->type), reply_type_name(type));
}

/* The command's name for messages: argv[0], printable characters only. */
static void command_name(const char *arg, size_t len, char *out, size_t out_size)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < out_size; i++) {
        unsigned char c = (unsigned char)arg[i];
        out[n++] = c > 0x20 && c < 0x7f && c != '\'' ? (char)c : '?';
    }
    out[n] = '\0';
}

/* ---- SIGPIPE ---- */

struct sigpipe_guard {
    bool active;
    bool was_pending;
    sigset_t saved;
};

static void sigpipe_block(struct sigpipe_guard *g)
{
    g->active = false;
    struct sigaction current;
    if (sigaction(SIGPIPE, NULL, &current) == 0 && current.sa_handler == SIG_IGN)
        return; /* the process ignores it: nothing to do */
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGPIPE);
    if (pthread_sigmask(SIG_BLOCK, &block, &g->saved) != 0)
        return;
    sigset_t pending;
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE) == 1;
    g->active = true;
}

static void sigpipe_restore(struct sigpipe_guard *g)
{
    if (!g->active)
        return;
    if (!g->was_pending) {
        sigset_t pending;
        sigpending(&pending);
        if (sigismember(&pending, SIGPIPE) == 1) {
            sigset_t pipe_only;
            sigemptyset(&pipe_only);
            sigaddset(&pipe_only, SIGPIPE);
            struct timespec zero = {0, 0};
            while (sigtimedwait(&pipe_only, NULL, &zero) < 0 && errno == EINTR) {
            }
        }
    }
    pthread_sigmask(SIG_SETMASK, &g->saved, NULL);
}

/* ---- connections ---- */

static struct timeval ms_to_timeval(int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

/* Why ctx failed, in words: "connection refused", "no reply within 2000 ms". */
static void describe_failure(const struct pf_redis *r, const redisContext *ctx, int saved_errno,
                             bool connecting, char *out, size_t out_size)
{
    if (ctx->err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK)) {
        snprintf(out, out_size, "no reply within %d ms", r->command_timeout_ms);
        return;
    }
    if (ctx->err == REDIS_ERR_IO && connecting && saved_errno == ETIMEDOUT) {
        snprintf(out, out_size, "no connection within %d ms", r->connect_timeout_ms);
        return;
    }
    if (ctx->err == REDIS_ERR_EOF) {
        snprintf(out, out_size, "the server closed the connection");
        return;
    }
    snprintf(out, out_size, "%s", ctx->errstr[0] != '\0' ? ctx->errstr : "unknown error");
    if (isupper((unsigned char)out[0]) && islower((unsigned char)out[1]))
        out[0] = (char)tolower((unsigned char)out[0]);
}

static void drop_context(struct pf_redis *r)
{
    if (r->ctx == NULL)
        return;
    redisFree(r->ctx);
    r->ctx = NULL;
}

/* One round trip on a connected context; no reconnect. On a broken
 * connection the context is dropped. */
static enum pf_status roundtrip(struct pf_redis *r, int argc, const char *const *argv,
                                const size_t *argvlen, redisReply **out, struct pf_error *err)
{
    char name[CMDNAME_MAX];
    command_name(argv[0], argvlen[0], name, sizeof name);
    struct sigpipe_guard guard;
    sigpipe_block(&guard);
    errno = 0;
    redisReply *reply = redisCommandArgv(r->ctx, argc, (const char **)argv, argvlen);
    int saved_errno = errno;
    sigpipe_restore(&guard);
    if (reply == NULL) {
        char reason[REASON_MAX];
        describe_failure(r, r->ctx, saved_errno, false, reason, sizeof reason);
        if (!r->lost)
            pf_log_warn("redis_connection_lost", "target=%s command=%s", r->target, name);
        r->lost = true;
        drop_context(r);
        return pf_error_set(err, PF_E_UNAVAILABLE, "redis at %s is unavailable: %s", r->target,
                            reason);
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        enum pf_status st = pf_error_set(err, pf_redis_status_from_error(reply->str),
                                         "redis command '%s' failed: %.150s", name,
                                         reply->str != NULL ? reply->str : "");
        freeReplyObject(reply);
        return st;
    }
    if (out != NULL)
        *out = reply;
    else
        freeReplyObject(reply);
    return PF_OK;
}

/* Opens r->ctx, authenticates and selects the database. */
static enum pf_status connect_now(struct pf_redis *r, struct pf_error *err)
{
    errno = 0;
    redisContext *ctx =
        redisConnectWithTimeout(r->url.host, r->url.port, ms_to_timeval(r->connect_timeout_ms));
    int saved_errno = errno;
    if (ctx == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory connecting to redis");
    if (ctx->err != 0) {
        char reason[REASON_MAX];
        describe_failure(r, ctx, saved_errno, true, reason, sizeof reason);
        redisFree(ctx);
        return pf_error_set(err, PF_E_UNAVAILABLE, "redis at %s is unavailable: %s", r->target,
                            reason);
    }
    if (redisSetTimeout(ctx, ms_to_timeval(r->command_timeout_ms)) != REDIS_OK) {
        redisFree(ctx);
        return pf_error_set(err, PF_E_UNAVAILABLE,
                            "redis at %s is unavailable: could not set the command timeout",
                            r->target);
    }
    r->ctx = ctx;
    enum pf_status st;
    struct pf_error cause;
    if (r->url.password[0] != '\0') {
        const char *argv[3] = {"AUTH"};
        int argc = 1;
        if (r->url.user[0] != '\0')
            argv[argc++] = r->url.user;
        argv[argc++] = r->url.password;
        size_t lens[3];
        for (int i = 0; i < argc; i++)
            lens[i] = strlen(argv[i]);
        st = roundtrip(r, argc, argv, lens, NULL, &cause);
        if (st != PF_OK) {
            if (st != PF_E_UNAVAILABLE)
                st = pf_error_set(err, PF_E_UNAUTHENTICATED,
                                  "redis at %s refused the credentials: %s", r->target, cause.msg);
            else
                pf_error_set(err, st, "%s", cause.msg);
            goto out_drop;
        }
    }
    if (r->url.db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->url.db);
        const char *const argv[] = {"SELECT", db};
        const size_t lens[] = {6, strlen(db)};
        st = roundtrip(r, 2, argv, lens, NULL, &cause);
        if (st != PF_OK) {
            if (st != PF_E_UNAVAILABLE)
                st = pf_error_set(err, PF_E_INVALID, "redis at %s has no database %d: %s",
                                  r->target, r->url.db, cause.msg);
            else
                pf_error_set(err, st, "%s", cause.msg);
            goto out_drop;
        }
    }
    return PF_OK;

out_drop:
    drop_context(r);
    return st;
}

/* True when the idle connection still looks usable: nothing to read. Bytes
 * or EOF waiting on an idle request/reply connection both mean it is done. */
static bool idle_socket_ok(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int n = poll(&pfd, 1, 0);
    if (n == 0)
        return true;
    if (n < 0)
        return errno == EINTR;
    return false;
}

static enum pf_status ensure_connected(struct pf_redis *r, struct pf_error *err)
{
    if (r->ctx != NULL && !idle_socket_ok(r->ctx->fd)) {
        if (!r->lost)
            pf_log_warn("redis_connection_lost", "target=%s", r->target);
        r->lost = true;
        drop_context(r);
    }
    if (r->ctx != NULL)
        return PF_OK;
    enum pf_status st = connect_now(r, err);
    if (st == PF_OK && r->lost) {
        pf_log_info("redis_reconnected", "target=%s", r->target);
        r->lost = false;
    }
    return st;
}

enum pf_status pf_redis_create(const char *url, const struct pf_redis_options *opts,
                               struct pf_redis **out, struct pf_error *err)
{
    if (out == NULL)
        return pf_error_set(err, PF_E_INVALID, "no place for the redis client");
    *out = NULL;
    struct pf_redis *r = calloc(1, sizeof *r);
    if (r == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    enum pf_status st = pf_redis_url_parse(url, &r->url, err);
    if (st != PF_OK)
        goto out_free;
    bool v6 = strchr(r->url.host, ':') != NULL;
    snprintf(r->target, sizeof r->target, "%s%s%s:%d", v6 ? "[" : "", r->url.host, v6 ? "]" : "",
             r->url.port);
    r->connect_timeout_ms = opts != NULL && opts->connect_timeout_ms > 0
                                ? opts->connect_timeout_ms
                                : PF_REDIS_CONNECT_TIMEOUT_MS_DEFAULT;
    r->command_timeout_ms = opts != NULL && opts->command_timeout_ms > 0
                                ? opts->command_timeout_ms
                                : PF_REDIS_COMMAND_TIMEOUT_MS_DEFAULT;
    st = connect_now(r, err);
    if (st != PF_OK)
        goto out_free;
    *out = r;
    return PF_OK;

out_free:
    pf_redis_destroy(r);
    return st;
}

void pf_redis_destroy(struct pf_redis *r)
{
    if (r == NULL)
        return;
    drop_context(r);
    /* The password should not outlive its use in freed memory. */
    memset(&r->url, 0, sizeof r->url);
    free(r);
}

const char *pf_redis_target(const struct pf_redis *r)
{
    return r != NULL ? r->target : "";
}

enum pf_status pf_redis_command(struct pf_redis *r, int argc, const char *const *argv,
                                const size_t *argvlen, redisReply **out, struct pf_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (r == NULL)
        return pf_error_set(err, PF_E_INVALID, "no redis client");
    if (argc < 1 || argc > PF_REDIS_MAX_ARGS || argv == NULL)
        return pf_error_set(err, PF_E_INVALID, "bad redis command (%d arguments)", argc);
    for (int i = 0; i < argc; i++) {
        if (argv[i] == NULL)
            return pf_error_set(err, PF_E_INVALID, "redis command argument %d is missing", i);
    }
    size_t small[SMALL_ARGC];
    size_t *lens = NULL;
    if (argvlen == NULL) {
        lens = argc <= SMALL_ARGC ? small : malloc((size_t)argc * sizeof *lens);
        if (lens == NULL)
            return pf_error_set(err, PF_E_RESOURCE, "out of memory");
        for (int i = 0; i < argc; i++)
            lens[i] = strlen(argv[i]);
        argvlen = lens;
    }
    enum pf_status st = ensure_connected(r, err);
    if (st == PF_OK)
        st = roundtrip(r, argc, argv, argvlen, out, err);
    if (lens != small)
        free(lens);
    return st;
}

/* The command name of argv for messages. */
static void name_of(const char *const *argv, const size_t *argvlen, char *out, size_t out_size)
{
    command_name(argv[0], argvlen != NULL ? argvlen[0] : strlen(argv[0]), out, out_size);
}

enum pf_status pf_redis_command_integer(struct pf_redis *r, int argc, const char *const *argv,
                                        const size_t *argvlen, long long *out, struct pf_error *err)
{
    redisReply *reply;
    enum pf_status st = pf_redis_command(r, argc, argv, argvlen, &reply, err);
    if (st != PF_OK)
        return st;
    char name[CMDNAME_MAX];
    name_of(argv, argvlen, name, sizeof name);
    st = pf_redis_reply_expect(reply, REDIS_REPLY_INTEGER, name, err);
    if (st == PF_OK)
        *out = reply->integer;
    freeReplyObject(reply);
    return st;
}

enum pf_status pf_redis_command_string(struct pf_redis *r, int argc, const char *const *argv,
                                       const size_t *argvlen, char **out, size_t *len_out,
                                       struct pf_error *err)
{
    *out = NULL;
    if (len_out != NULL)
        *len_out = 0;
    redisReply *reply;
    enum pf_status st = pf_redis_command(r, argc, argv, argvlen, &reply, err);
    if (st != PF_OK)
        return st;
    char name[CMDNAME_MAX];
    name_of(argv, argvlen, name, sizeof name);
    if (reply->type == REDIS_REPLY_NIL) {
        st = pf_error_set(err, PF_E_NOT_FOUND, "redis command '%s' returned nil", name);
        goto out_free_reply;
    }
    if (reply->type != REDIS_REPLY_STATUS) {
        st = pf_redis_reply_expect(reply, REDIS_REPLY_STRING, name, err);
        if (st != PF_OK)
            goto out_free_reply;
    }
    *out = malloc(reply->len + 1);
    if (*out == NULL) {
        st = pf_error_set(err, PF_E_RESOURCE, "out of memory");
        goto out_free_reply;
    }
    memcpy(*out, reply->str, reply->len);
    (*out)[reply->len] = '\0';
    if (len_out != NULL)
        *len_out = reply->len;
out_free_reply:
    freeReplyObject(reply);
    return st;
}

enum pf_status pf_redis_command_ok(struct pf_redis *r, int argc, const char *const *argv,
                                   const size_t *argvlen, struct pf_error *err)
{
    redisReply *reply;
    enum pf_status st = pf_redis_command(r, argc, argv, argvlen, &reply, err);
    if (st != PF_OK)
        return st;
    char name[CMDNAME_MAX];
    name_of(argv, argvlen, name, sizeof name);
    st = pf_redis_reply_expect(reply, REDIS_REPLY_STATUS, name, err);
    if (st == PF_OK && strcmp(reply->str, "OK") != 0)
        st = pf_error_set(err, PF_E_INTERNAL, "redis command '%s' answered '%.40s', expected OK",
                          name, reply->str);
    freeReplyObject(reply);
    return st;
}

enum pf_status pf_redis_ping(struct pf_redis *r, struct pf_error *err)
{
    const char *const argv[] = {"PING"};
    char *pong;
    enum pf_status st = pf_redis_command_string(r, 1, argv, NULL, &pong, NULL, err);
    if (st != PF_OK)
        return st;
    if (strcmp(pong, "PONG") != 0)
        st = pf_error_set(err, PF_E_INTERNAL, "redis at %s answered PING with '%.40s'", r->target,
                          pong);
    free(pong);
    return st;
}
