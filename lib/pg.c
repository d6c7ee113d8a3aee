/* libpq plumbing: connections, parameterized statements, transactions with
 * retries, error classification, a small pool and schema migrations. The
 * connection keeps the URL (the only copy of the password) so it can reopen
 * itself: before each use it polls the idle socket, and a connection the
 * server closed (restart, pg_terminate_backend) is replaced by a fresh one
 * unless a transaction was open on it, which the caller must first roll back
 * so that later statements never run outside the transaction they belong to.
 * Every message names the server as HOST:PORT and never quotes the URL
 * unredacted. libpq's notices go to the process log instead of stderr. */
#include "pg.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "timeutil.h"

/* pg_advisory_lock key of pf_pg_migrate: "pfmigrat" read as a big-endian int64. */
#define MIGRATE_LOCK_KEY "8099281279346958708"

#define SQLSTATE_CONNECTION_LOST "08006"
#define SQLSTATE_TX_ROLLED_BACK  "25P02"
#define TARGET_MAX               160
#define REASON_MAX               200

struct pf_pg_conn {
    PGconn *pg;              /* NULL until the first connect or after a loss */
    char *url;               /* owned copy: the only place the password lives */
    char target[TARGET_MAX]; /* "HOST:PORT" for messages */
    char timeout_s[16];      /* libpq's connect_timeout, whole seconds */
    bool in_tx;              /* a transaction was open at the last known state */
    bool lost;               /* the connection was lost; log the reconnect */
    bool doomed;             /* the server said goodbye (FATAL) on this connection */
    char sqlstate[6];        /* of the last failed statement, "" after success */
    struct pf_pg_pool *pool; /* the pool that owns this connection, if any */
};

struct pf_pg_pool {
    pthread_mutex_t lock;
    pthread_cond_t conn_free;  /* signalled on checkin; CLOCK_MONOTONIC */
    struct pf_pg_conn **conns; /* all of them, for destroy */
    struct pf_pg_conn **idle;  /* a stack: the warmest connection first */
    int size;
    int idle_count;
};

/* ---- pure helpers ---- */

static void out_append(char *out, size_t out_size, size_t *len, const char *s, size_t n)
{
    if (*len + 1 >= out_size)
        return;
    size_t room = out_size - 1 - *len;
    if (n > room)
        n = room;
    memcpy(out + *len, s, n);
    *len += n;
    out[*len] = '\0';
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Redacts a postgresql:// URI: drops ":password" from the user info and any
 * password=... query parameter. */
static void redact_uri(const char *url, size_t scheme_len, char *out, size_t out_size)
{
    size_t len = 0;
    out_append(out, out_size, &len, url, scheme_len);
    const char *p = url + scheme_len;
    /* libpq's rule: the user info ends at the first '@' before any '/'. */
    const char *at = NULL;
    for (const char *q = p; *q != '\0' && *q != '/'; q++) {
        if (*q == '@') {
            at = q;
            break;
        }
    }
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        size_t user_len = colon != NULL ? (size_t)(colon - p) : (size_t)(at - p);
        out_append(out, out_size, &len, p, user_len);
        p = at; /* copies the '@' next */
    }
    const char *query = strchr(p, '?');
    if (query == NULL) {
        out_append(out, out_size, &len, p, strlen(p));
        return;
    }
    out_append(out, out_size, &len, p, (size_t)(query - p));
    const char *param = query + 1;
    bool first = true;
    while (*param != '\0') {
        size_t n = strcspn(param, "&");
        if (!(n >= 9 && strncmp(param, "password=", 9) == 0) &&
            !(n == 8 && strncmp(param, "password", 8) == 0)) {
            out_append(out, out_size, &len, first ? "?" : "&", 1);
            out_append(out, out_size, &len, param, n);
            first = false;
        }
        param += n;
        if (*param == '&')
            param++;
    }
}

/* Redacts a keyword/value conninfo string: drops every password=VALUE pair,
 * where VALUE may be single-quoted with backslash escapes. */
static void redact_conninfo(const char *s, char *out, size_t out_size)
{
    size_t len = 0;
    const char *p = s;
    while (*p != '\0') {
        const char *start = p;
        while (isspace((unsigned char)*p))
            p++;
        const char *key = p;
        while (*p != '\0' && *p != '=' && !isspace((unsigned char)*p))
            p++;
        size_t key_len = (size_t)(p - key);
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '=') {
            p++;
            while (isspace((unsigned char)*p))
                p++;
            if (*p == '\'') {
                p++;
                while (*p != '\0' && *p != '\'') {
                    if (*p == '\\' && p[1] != '\0')
                        p++;
                    p++;
                }
                if (*p == '\'')
                    p++;
            } else {
                while (*p != '\0' && !isspace((unsigned char)*p)) {
                    if (*p == '\\' && p[1] != '\0')
                        p++;
                    p++;
                }
            }
        }
        if (p == start)
            break; /* cannot happen: each round consumes at least one byte */
        if (!(key_len == 8 && strncmp(key, "password", 8) == 0))
            out_append(out, out_size, &len, start, (size_t)(p - start));
    }
}

void pf_pg_redact_url(const char *url, char *out, size_t out_size)
{
    if (out == NULL || out_size == 0)
        return;
    out[0] = '\0';
    if (url == NULL)
        return;
    if (has_prefix(url, "postgresql://"))
        redact_uri(url, strlen("postgresql://"), out, out_size);
    else if (has_prefix(url, "postgres://"))
        redact_uri(url, strlen("postgres://"), out, out_size);
    else
        redact_conninfo(url, out, out_size);
}

static bool sqlstate_valid(const char *s)
{
    if (s == NULL || strlen(s) != 5)
        return false;
    for (int i = 0; i < 5; i++) {
        if (!isdigit((unsigned char)s[i]) && !isupper((unsigned char)s[i]))
            return false;
    }
    return true;
}

enum pf_status pf_pg_status_from_sqlstate(const char *sqlstate)
{
    if (!sqlstate_valid(sqlstate))
        return PF_E_INTERNAL;
    static const struct {
        const char *state;
        enum pf_status code;
    } exact[] = {
        {"23505", PF_E_EXISTS},      {"23P01", PF_E_EXISTS},       {"23514", PF_E_INVALID},
        {"23502", PF_E_INVALID},     {"23503", PF_E_PRECONDITION}, {"40001", PF_E_ABORTED},
        {"40P01", PF_E_ABORTED},     {"57014", PF_E_DEADLINE},     {"57P01", PF_E_UNAVAILABLE},
        {"57P02", PF_E_UNAVAILABLE}, {"57P03", PF_E_UNAVAILABLE},
    };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        if (strcmp(sqlstate, exact[i].state) == 0)
            return exact[i].code;
    }
    if (has_prefix(sqlstate, "08"))
        return PF_E_UNAVAILABLE;
    if (has_prefix(sqlstate, "22"))
        return PF_E_INVALID;
    if (has_prefix(sqlstate, "53"))
        return PF_E_RESOURCE;
    return PF_E_INTERNAL;
}

bool pf_pg_sqlstate_is_retryable(const char *sqlstate)
{
    return sqlstate != NULL && (strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0);
}

/* The reason in a libpq error text, for "...: REASON": its first line, after
 * libpq's "connection to server at ... failed: " and the server's "FATAL:  ",
 * with a capital first letter lowered ("Connection refused"). */
static void libpq_reason(const char *msg, char *out, size_t out_size)
{
    if (msg == NULL || *msg == '\0')
        msg = "unknown error";
    while (*msg == '\n' || *msg == ' ')
        msg++;
    size_t n = strcspn(msg, "\n");
    char line[512];
    if (n >= sizeof line)
        n = sizeof line - 1;
    memcpy(line, msg, n);
    line[n] = '\0';
    const char *reason = line;
    for (const char *f = strstr(line, "failed: "); f != NULL; f = strstr(f + 1, "failed: "))
        reason = f + strlen("failed: ");
    static const char *const severities[] = {"FATAL:  ", "ERROR:  ", "PANIC:  "};
    for (size_t i = 0; i < sizeof severities / sizeof severities[0]; i++) {
        if (has_prefix(reason, severities[i]))
            reason += strlen(severities[i]);
    }
    if (*reason == '\0')
        reason = "unknown error";
    size_t len = strlen(reason);
    if (len >= out_size)
        len = out_size - 1; /* a cut reason beats none */
    memmove(out, reason, len);
    out[len] = '\0';
    while (len > 0 && (out[len - 1] == ' ' || out[len - 1] == '.'))
        out[--len] = '\0';
    if (isupper((unsigned char)out[0]) && islower((unsigned char)out[1]))
        out[0] = (char)tolower((unsigned char)out[0]);
}

/* ---- connections ---- */

static void notice_receiver(void *arg, const PGresult *res)
{
    struct pf_pg_conn *conn = arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (severity == NULL)
        severity = "NOTICE";
    /* A FATAL outside a query is the server's goodbye (shutdown,
     * pg_terminate_backend): the connection is finished even before EOF. */
    if (strcmp(severity, "FATAL") == 0 || strcmp(severity, "PANIC") == 0)
        conn->doomed = true;
    bool loud = strcmp(severity, "NOTICE") != 0 && strcmp(severity, "INFO") != 0 &&
                strcmp(severity, "DEBUG") != 0 && strcmp(severity, "LOG") != 0;
    char quoted[300];
    pf_log(loud ? PF_LOG_WARN : PF_LOG_DEBUG, "pg_notice", "target=%s severity=%s message=%s",
           conn->target, severity, pf_log_quote(message, quoted, sizeof quoted));
}

/* Fills conn->target from the parsed URL (libpq's defaults when absent). */
static void set_target(struct pf_pg_conn *conn, const PQconninfoOption *opts)
{
    const char *host = NULL, *hostaddr = NULL, *port = NULL;
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
    }
    if (host == NULL)
        host = hostaddr != NULL ? hostaddr : "localhost";
    snprintf(conn->target, sizeof conn->target, "%s:%s", host, port != NULL ? port : "5432");
}

/* Allocates an unconnected conn for url; PF_E_INVALID for a malformed URL. */
static enum pf_status conn_alloc(const char *url, int connect_timeout_ms, struct pf_pg_conn **out,
                                 struct pf_error *err)
{
    *out = NULL;
    if (url == NULL || url[0] == '\0')
        return pf_error_set(err, PF_E_INVALID, "no database URL given");
    char redacted[256];
    pf_pg_redact_url(url, redacted, sizeof redacted);
    char *parse_error = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &parse_error);
    if (opts == NULL) {
        char reason[REASON_MAX];
        libpq_reason(parse_error != NULL ? parse_error : "out of memory", reason, sizeof reason);
        PQfreemem(parse_error);
        /* libpq quotes the text it could not parse, which may be part of a
         * password: when the URL holds one, say less. */
        if (strcmp(redacted, url) != 0)
            return pf_error_set(err, PF_E_INVALID, "invalid database URL '%s'", redacted);
        return pf_error_set(err, PF_E_INVALID, "invalid database URL '%s': %s", redacted, reason);
    }
    struct pf_pg_conn *conn = calloc(1, sizeof *conn);
    if (conn == NULL)
        goto out_free_opts;
    conn->url = strdup(url);
    if (conn->url == NULL)
        goto out_free_conn;
    set_target(conn, opts);
    PQconninfoFree(opts);
    if (connect_timeout_ms <= 0)
        connect_timeout_ms = PF_PG_CONNECT_TIMEOUT_MS_DEFAULT;
    int seconds = (connect_timeout_ms + 999) / 1000;
    snprintf(conn->timeout_s, sizeof conn->timeout_s, "%d", seconds < 2 ? 2 : seconds);
    *out = conn;
    return PF_OK;

out_free_conn:
    free(conn);
out_free_opts:
    PQconninfoFree(opts);
    return pf_error_set(err, PF_E_RESOURCE, "out of memory");
}

static void drop_pg(struct pf_pg_conn *conn)
{
    PQfinish(conn->pg);
    conn->pg = NULL;
    conn->doomed = false;
}

/* Notices a connection the server closed while it sat idle: the server's
 * goodbye (or EOF) is waiting on the socket, and reading it turns libpq's
 * status to CONNECTION_BAD. Costs one poll(2) when nothing is waiting. */
static void probe_idle_socket(struct pf_pg_conn *conn)
{
    /* The goodbye and the EOF may take one read each; a few rounds at most. */
    for (int round = 0; round < 4 && !conn->doomed; round++) {
        struct pollfd pfd = {.fd = PQsocket(conn->pg), .events = POLLIN};
        if (pfd.fd < 0 || poll(&pfd, 1, 0) <= 0)
            return;
        if (PQconsumeInput(conn->pg) == 0 || PQstatus(conn->pg) != CONNECTION_OK)
            return; /* now CONNECTION_BAD: the caller reconnects */
        PGnotify *n;
        while ((n = PQnotifies(conn->pg)) != NULL)
            PQfreemem(n);
    }
}

/* True when conn has a connection the server has not closed. */
static bool connection_alive(struct pf_pg_conn *conn)
{
    if (conn->pg != NULL && PQstatus(conn->pg) == CONNECTION_OK)
        probe_idle_socket(conn);
    return conn->pg != NULL && PQstatus(conn->pg) == CONNECTION_OK && !conn->doomed;
}

/* Forgets a connection the server closed, logging it once. */
static void mark_lost(struct pf_pg_conn *conn)
{
    if (conn->pg == NULL)
        return;
    if (!conn->lost)
        pf_log_warn("pg_connection_lost", "target=%s", conn->target);
    conn->lost = true;
    memcpy(conn->sqlstate, SQLSTATE_CONNECTION_LOST, sizeof conn->sqlstate);
    drop_pg(conn);
}

static enum pf_status ensure_connected(struct pf_pg_conn *conn, struct pf_error *err)
{
    if (connection_alive(conn))
        return PF_OK;
    mark_lost(conn);
    if (conn->in_tx) {
        memcpy(conn->sqlstate, SQLSTATE_CONNECTION_LOST, sizeof conn->sqlstate);
        return pf_error_set(err, PF_E_UNAVAILABLE,
                            "lost the connection to PostgreSQL at %s inside a transaction: "
                            "roll it back before using the connection again",
                            conn->target);
    }
    /* connect_timeout first so that a connect_timeout in the URL wins. */
    const char *const keys[] = {"connect_timeout", "dbname", NULL};
    const char *const values[] = {conn->timeout_s, conn->url, NULL};
    conn->pg = PQconnectdbParams(keys, values, 1);
    if (conn->pg == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory connecting to PostgreSQL");
    if (PQstatus(conn->pg) != CONNECTION_OK) {
        char reason[REASON_MAX];
        libpq_reason(PQerrorMessage(conn->pg), reason, sizeof reason);
        drop_pg(conn);
        memcpy(conn->sqlstate, SQLSTATE_CONNECTION_LOST, sizeof conn->sqlstate);
        bool refused = strcmp(reason, "connection refused") == 0;
        return pf_error_set(err, PF_E_UNAVAILABLE, "could not connect to PostgreSQL at %s: %s%s",
                            conn->target, reason, refused ? " — is it running?" : "");
    }
    PQsetNoticeReceiver(conn->pg, notice_receiver, conn);
    if (conn->lost) {
        pf_log_info("pg_reconnected", "target=%s", conn->target);
        conn->lost = false;
    }
    return PF_OK;
}

enum pf_status pf_pg_conn_create(const char *url, int connect_timeout_ms, struct pf_pg_conn **out,
                                 struct pf_error *err)
{
    if (out == NULL)
        return pf_error_set(err, PF_E_INVALID, "no place for the connection");
    *out = NULL;
    struct pf_pg_conn *conn;
    enum pf_status st = conn_alloc(url, connect_timeout_ms, &conn, err);
    if (st != PF_OK)
        return st;
    st = ensure_connected(conn, err);
    if (st != PF_OK) {
        pf_pg_conn_destroy(conn);
        return st;
    }
    *out = conn;
    return PF_OK;
}

void pf_pg_conn_destroy(struct pf_pg_conn *conn)
{
    if (conn == NULL)
        return;
    PQfinish(conn->pg);
    if (conn->url != NULL) {
        /* The password should not outlive its use in freed memory. */
        memset(conn->url, 0, strlen(conn->url));
        free(conn->url);
    }
    free(conn);
}

const char *pf_pg_conn_target(const struct pf_pg_conn *conn)
{
    return conn != NULL ? conn->target : "";
}

const char *pf_pg_last_sqlstate(const struct pf_pg_conn *conn)
{
    return conn != NULL ? conn->sqlstate : "";
}

/* Turns a result into a status; takes res (handing it to *out or freeing it).
 * `during` completes "lost the connection to PostgreSQL at X" when the
 * connection broke. */
static enum pf_status finish_result(struct pf_pg_conn *conn, PGresult *res, PGresult **out,
                                    const char *during, struct pf_error *err)
{
    ExecStatusType rs = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (rs == PGRES_COMMAND_OK || rs == PGRES_TUPLES_OK) {
        conn->sqlstate[0] = '\0';
        PGTransactionStatusType ts = PQtransactionStatus(conn->pg);
        conn->in_tx = ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
        if (out != NULL)
            *out = res;
        else
            PQclear(res);
        return PF_OK;
    }
    enum pf_status st;
    if (PQstatus(conn->pg) != CONNECTION_OK) {
        /* in_tx keeps its last known value: a lost transaction must be
         * rolled back by the caller before the connection is reused. */
        char reason[REASON_MAX];
        libpq_reason(PQerrorMessage(conn->pg), reason, sizeof reason);
        memcpy(conn->sqlstate, SQLSTATE_CONNECTION_LOST, sizeof conn->sqlstate);
        st = pf_error_set(err, PF_E_UNAVAILABLE, "lost the connection to PostgreSQL at %s%s: %s",
                          conn->target, during, reason);
    } else if (rs == PGRES_EMPTY_QUERY) {
        conn->sqlstate[0] = '\0';
        st = pf_error_set(err, PF_E_INVALID, "empty SQL statement");
    } else if (rs != PGRES_FATAL_ERROR && rs != PGRES_NONFATAL_ERROR) {
        conn->sqlstate[0] = '\0';
        st = pf_error_set(err, PF_E_INTERNAL, "unexpected PostgreSQL result %s", PQresStatus(rs));
    } else {
        const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        const char *primary = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        char reason[REASON_MAX];
        if (primary != NULL)
            snprintf(reason, sizeof reason, "%s", primary);
        else
            libpq_reason(PQerrorMessage(conn->pg), reason, sizeof reason);
        snprintf(conn->sqlstate, sizeof conn->sqlstate, "%s",
                 sqlstate_valid(state) ? state : "XX000");
        st = pf_error_set(err, pf_pg_status_from_sqlstate(conn->sqlstate), "%s (sqlstate %s)",
                          reason, conn->sqlstate);
        PGTransactionStatusType ts = PQtransactionStatus(conn->pg);
        conn->in_tx = ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
    }
    PQclear(res);
    return st;
}

enum pf_status pf_pg_ping(struct pf_pg_conn *conn, struct pf_error *err)
{
    return pf_pg_exec(conn, "SELECT 1", 0, NULL, NULL, err);
}

enum pf_status pf_pg_exec(struct pf_pg_conn *conn, const char *sql, int nparams,
                          const char *const *params, PGresult **out, struct pf_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (conn == NULL)
        return pf_error_set(err, PF_E_INVALID, "no database connection");
    if (sql == NULL || sql[0] == '\0')
        return pf_error_set(err, PF_E_INVALID, "empty SQL statement");
    if (nparams < 0 || nparams > PF_PG_MAX_PARAMS || (nparams > 0 && params == NULL))
        return pf_error_set(err, PF_E_INVALID, "bad parameter list (%d parameters)", nparams);
    enum pf_status st = ensure_connected(conn, err);
    if (st != PF_OK)
        return st;
    PGresult *res = PQexecParams(conn->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    return finish_result(conn, res, out, "", err);
}

enum pf_status pf_pg_exec_int64(struct pf_pg_conn *conn, const char *sql, int nparams,
                                const char *const *params, int64_t *out, struct pf_error *err)
{
    PGresult *res;
    enum pf_status st = pf_pg_exec(conn, sql, nparams, params, &res, err);
    if (st != PF_OK)
        return st;
    if (PQntuples(res) == 0)
        st = pf_error_set(err, PF_E_NOT_FOUND, "the statement returned no row");
    else
        st = pf_pg_int64(res, 0, 0, out, err);
    PQclear(res);
    return st;
}

/* Runs a trusted multi-statement script (migrations) with the simple query
 * protocol; never called with text built from values. */
static enum pf_status exec_script(struct pf_pg_conn *conn, const char *sql, struct pf_error *err)
{
    enum pf_status st = ensure_connected(conn, err);
    if (st != PF_OK)
        return st;
    return finish_result(conn, PQexec(conn->pg, sql), NULL, "", err);
}

/* ---- results ---- */

static bool in_result(const PGresult *res, int row, int col)
{
    return res != NULL && row >= 0 && col >= 0 && row < PQntuples(res) && col < PQnfields(res);
}

const char *pf_pg_text(const PGresult *res, int row, int col)
{
    if (!in_result(res, row, col) || PQgetisnull(res, row, col))
        return NULL;
    return PQgetvalue(res, row, col);
}

enum pf_status pf_pg_int64(const PGresult *res, int row, int col, int64_t *out,
                           struct pf_error *err)
{
    if (!in_result(res, row, col))
        return pf_error_set(err, PF_E_INTERNAL, "no value at row %d, column %d of the result", row,
                            col);
    const char *name = PQfname(res, col);
    if (PQgetisnull(res, row, col))
        return pf_error_set(err, PF_E_INTERNAL, "column '%s' is NULL, expected an integer", name);
    const char *text = PQgetvalue(res, row, col);
    errno = 0;
    char *end;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0')
        return pf_error_set(err, PF_E_INTERNAL, "column '%s' is not an integer: '%.40s'", name,
                            text);
    *out = v;
    return PF_OK;
}

int64_t pf_pg_affected(const PGresult *res)
{
    if (res == NULL)
        return 0;
    const char *n = PQcmdTuples((PGresult *)res); /* libpq's prototype lacks const */
    return n[0] != '\0' ? strtoll(n, NULL, 10) : 0;
}

/* ---- transactions ---- */

enum pf_status pf_pg_begin(struct pf_pg_conn *conn, enum pf_pg_isolation isolation,
                           struct pf_error *err)
{
    static const char *const begin_sql[] = {
        [PF_PG_READ_COMMITTED] = "BEGIN ISOLATION LEVEL READ COMMITTED",
        [PF_PG_REPEATABLE_READ] = "BEGIN ISOLATION LEVEL REPEATABLE READ",
        [PF_PG_SERIALIZABLE] = "BEGIN ISOLATION LEVEL SERIALIZABLE",
    };
    if (conn == NULL)
        return pf_error_set(err, PF_E_INVALID, "no database connection");
    if ((int)isolation < 0 || (size_t)isolation >= sizeof begin_sql / sizeof begin_sql[0])
        return pf_error_set(err, PF_E_INVALID, "unknown isolation level %d", (int)isolation);
    if (conn->in_tx)
        return pf_error_set(err, PF_E_PRECONDITION, "a transaction is already open");
    return pf_pg_exec(conn, begin_sql[isolation], 0, NULL, NULL, err);
}

enum pf_status pf_pg_commit(struct pf_pg_conn *conn, struct pf_error *err)
{
    if (conn == NULL)
        return pf_error_set(err, PF_E_INVALID, "no database connection");
    if (!conn->in_tx)
        return pf_error_set(err, PF_E_PRECONDITION, "no transaction is open");
    if (!connection_alive(conn)) {
        /* COMMIT was never sent: the server rolled back with the connection. */
        mark_lost(conn);
        conn->in_tx = false;
        return pf_error_set(err, PF_E_UNAVAILABLE,
                            "lost the connection to PostgreSQL at %s before COMMIT: "
                            "the transaction was rolled back",
                            conn->target);
    }
    PGresult *res = NULL;
    enum pf_status st;
    st = finish_result(conn, PQexec(conn->pg, "COMMIT"), &res,
                       " during COMMIT (the transaction may or may not have been committed)", err);
    conn->in_tx = false;
    if (st != PF_OK)
        return st;
    /* COMMIT of a transaction that already failed answers ROLLBACK, not an error. */
    if (strcmp(PQcmdStatus(res), "ROLLBACK") == 0) {
        memcpy(conn->sqlstate, SQLSTATE_TX_ROLLED_BACK, sizeof conn->sqlstate);
        st = pf_error_set(err, PF_E_ABORTED,
                          "the transaction had failed and was rolled back instead of committed");
    }
    PQclear(res);
    return st;
}

void pf_pg_rollback(struct pf_pg_conn *conn)
{
    if (conn == NULL)
        return;
    if (connection_alive(conn) && PQtransactionStatus(conn->pg) != PQTRANS_IDLE) {
        PGresult *res = PQexec(conn->pg, "ROLLBACK");
        PQclear(res);
    }
    conn->in_tx = false;
}

/* A randomized pause before retrying attempt `attempt` (1-based): between half
 * and all of 10 ms * 2^(attempt-1), at most 500 ms, so that two transactions
 * that collided do not collide again in lockstep. */
static int64_t retry_pause_ms(int attempt, unsigned *seed)
{
    int64_t ceiling = 10;
    for (int i = 1; i < attempt && ceiling < 500; i++)
        ceiling *= 2;
    if (ceiling > 500)
        ceiling = 500;
    return ceiling / 2 + (int64_t)(rand_r(seed) % (unsigned)(ceiling / 2 + 1));
}

enum pf_status pf_pg_transact(struct pf_pg_conn *conn, enum pf_pg_isolation isolation,
                              int max_attempts, pf_pg_tx_fn fn, void *arg, struct pf_error *err)
{
    if (conn == NULL || fn == NULL)
        return pf_error_set(err, PF_E_INVALID, "no connection or transaction body");
    if (max_attempts <= 0)
        max_attempts = 5;
    unsigned seed = (unsigned)pf_time_mono_ms() ^ (unsigned)(uintptr_t)conn;
    enum pf_status st = PF_E_INTERNAL;
    for (int attempt = 1; attempt <= max_attempts; attempt++) {
        st = pf_pg_begin(conn, isolation, err);
        if (st != PF_OK)
            return st;
        st = fn(conn, arg, err);
        if (st == PF_OK) {
            st = pf_pg_commit(conn, err);
            if (st == PF_OK)
                return PF_OK;
        }
        bool retry = st == PF_E_ABORTED && pf_pg_sqlstate_is_retryable(conn->sqlstate);
        char state[sizeof conn->sqlstate];
        memcpy(state, conn->sqlstate, sizeof state);
        pf_pg_rollback(conn);
        if (!retry)
            return st;
        if (attempt == max_attempts)
            break;
        int64_t pause = retry_pause_ms(attempt, &seed);
        pf_log_debug("pg_transaction_retry", "target=%s sqlstate=%s attempt=%d pause_ms=%lld",
                     conn->target, state, attempt, (long long)pause);
        pf_time_sleep_ms(pause);
    }
    if (err != NULL)
        pf_error_set(err, st, "%s (gave up after %d attempts)", err->msg, max_attempts);
    return st;
}

/* ---- pool ---- */

enum pf_status pf_pg_pool_create(const char *url, int size, int connect_timeout_ms,
                                 struct pf_pg_pool **out, struct pf_error *err)
{
    if (out == NULL)
        return pf_error_set(err, PF_E_INVALID, "no place for the pool");
    *out = NULL;
    if (size < 1 || size > 1000)
        return pf_error_set(err, PF_E_INVALID, "database pool size %d is not in 1..1000", size);
    struct pf_pg_pool *pool = calloc(1, sizeof *pool);
    if (pool == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    enum pf_status st = PF_E_RESOURCE;
    pool->conns = calloc((size_t)size, sizeof *pool->conns);
    pool->idle = calloc((size_t)size, sizeof *pool->idle);
    if (pool->conns == NULL || pool->idle == NULL) {
        pf_error_set(err, st, "out of memory");
        goto out_free_arrays;
    }
    for (int i = 0; i < size; i++) {
        st = conn_alloc(url, connect_timeout_ms, &pool->conns[i], err);
        if (st != PF_OK)
            goto out_free_conns;
        pool->conns[i]->pool = pool;
        pool->idle[i] = pool->conns[i];
    }
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0) {
        st = pf_error_set(err, PF_E_RESOURCE, "could not create a condition variable");
        goto out_free_conns;
    }
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&pool->conn_free, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0) {
        st = pf_error_set(err, PF_E_RESOURCE, "could not create a condition variable");
        goto out_free_conns;
    }
    if (pthread_mutex_init(&pool->lock, NULL) != 0) {
        st = pf_error_set(err, PF_E_RESOURCE, "could not create a mutex");
        goto out_destroy_cond;
    }
    pool->size = size;
    pool->idle_count = size;
    *out = pool;
    return PF_OK;

out_destroy_cond:
    pthread_cond_destroy(&pool->conn_free);
out_free_conns:
    for (int i = 0; i < size; i++)
        pf_pg_conn_destroy(pool->conns[i]);
out_free_arrays:
    free(pool->idle);
    free(pool->conns);
    free(pool);
    return st;
}

void pf_pg_pool_destroy(struct pf_pg_pool *pool)
{
    if (pool == NULL)
        return;
    if (pool->idle_count != pool->size)
        pf_log_error("pg_pool_destroy_busy", "checked_out=%d", pool->size - pool->idle_count);
    for (int i = 0; i < pool->size; i++)
        pf_pg_conn_destroy(pool->conns[i]);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->conn_free);
    free(pool->idle);
    free(pool->conns);
    free(pool);
}

enum pf_status pf_pg_pool_checkout(struct pf_pg_pool *pool, int wait_ms, struct pf_pg_conn **out,
                                   struct pf_error *err)
{
    if (out == NULL)
        return pf_error_set(err, PF_E_INVALID, "no place for the connection");
    *out = NULL;
    if (pool == NULL)
        return pf_error_set(err, PF_E_INVALID, "no database pool");
    if (wait_ms < 0)
        wait_ms = 0;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += wait_ms / 1000;
    deadline.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    enum pf_status st = PF_OK;
    pthread_mutex_lock(&pool->lock);
    while (pool->idle_count == 0) {
        if (pthread_cond_timedwait(&pool->conn_free, &pool->lock, &deadline) == ETIMEDOUT &&
            pool->idle_count == 0) {
            st = pf_error_set(err, PF_E_UNAVAILABLE, "no database connection free within %d ms",
                              wait_ms);
            goto out_unlock;
        }
    }
    *out = pool->idle[--pool->idle_count];
out_unlock:
    pthread_mutex_unlock(&pool->lock);
    return st;
}

void pf_pg_pool_checkin(struct pf_pg_pool *pool, struct pf_pg_conn *conn)
{
    if (pool == NULL || conn == NULL)
        return;
    if (conn->pool != pool) {
        pf_log_error("pg_pool_foreign_checkin", "target=%s", conn->target);
        return;
    }
    if (conn->in_tx) {
        pf_log_warn("pg_pool_checkin_in_transaction", "target=%s", conn->target);
        pf_pg_rollback(conn);
    }
    pthread_mutex_lock(&pool->lock);
    if (pool->idle_count < pool->size)
        pool->idle[pool->idle_count++] = conn;
    pthread_cond_signal(&pool->conn_free);
    pthread_mutex_unlock(&pool->lock);
}

/* ---- migrations ---- */

enum pf_status pf_pg_migrations_check(const struct pf_pg_migration *list, size_t n,
                                      struct pf_error *err)
{
    if (n > 0 && list == NULL)
        return pf_error_set(err, PF_E_INVALID, "no migration list");
    for (size_t i = 0; i < n; i++) {
        const struct pf_pg_migration *m = &list[i];
        if (m->version <= 0)
            return pf_error_set(err, PF_E_INVALID, "migration #%zu has version %d, not > 0", i + 1,
                                m->version);
        if (i > 0 && m->version <= list[i - 1].version)
            return pf_error_set(err, PF_E_INVALID,
                                "migration %d comes after %d: versions must increase", m->version,
                                list[i - 1].version);
        if (m->name == NULL || m->name[0] == '\0')
            return pf_error_set(err, PF_E_INVALID, "migration %d has no name", m->version);
        if (m->sql == NULL || m->sql[0] == '\0')
            return pf_error_set(err, PF_E_INVALID, "migration %d '%s' has no SQL", m->version,
                                m->name);
    }
    return PF_OK;
}

/* Applies one migration and records it, in one transaction. */
static enum pf_status apply_migration(struct pf_pg_conn *conn, const struct pf_pg_migration *m,
                                      struct pf_error *err)
{
    int64_t started = pf_time_mono_ms();
    enum pf_status st = pf_pg_begin(conn, PF_PG_READ_COMMITTED, err);
    if (st != PF_OK)
        return st;
    st = exec_script(conn, m->sql, err);
    if (st == PF_OK) {
        char version[16];
        snprintf(version, sizeof version, "%d", m->version);
        const char *const params[] = {version, m->name};
        st = pf_pg_exec(conn, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2,
                        params, NULL, err);
    }
    if (st == PF_OK)
        st = pf_pg_commit(conn, err);
    else
        pf_pg_rollback(conn);
    if (st != PF_OK) {
        if (err != NULL)
            pf_error_set(err, st, "migration %d '%s' failed: %s", m->version, m->name, err->msg);
        return st;
    }
    char quoted[200];
    pf_log_info("pg_migration_applied", "target=%s version=%d name=%s ms=%lld", conn->target,
                m->version, pf_log_quote(m->name, quoted, sizeof quoted),
                (long long)(pf_time_mono_ms() - started));
    return PF_OK;
}

static bool version_applied(const PGresult *applied, int version)
{
    int lo = 0, hi = PQntuples(applied);
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        long v = strtol(PQgetvalue(applied, mid, 0), NULL, 10);
        if (v == version)
            return true;
        if (v < version)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

enum pf_status pf_pg_migrate(struct pf_pg_conn *conn, const struct pf_pg_migration *list, size_t n,
                             struct pf_error *err)
{
    if (conn == NULL)
        return pf_error_set(err, PF_E_INVALID, "no database connection");
    enum pf_status st = pf_pg_migrations_check(list, n, err);
    if (st != PF_OK)
        return st;
    if (conn->in_tx)
        return pf_error_set(err, PF_E_PRECONDITION, "cannot migrate inside an open transaction");
    /* Session-level: held across the per-migration transactions, released
     * below or by the server when the connection dies. */
    st = pf_pg_exec(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", 0, NULL, NULL, err);
    if (st != PF_OK)
        return st;

    PGresult *applied = NULL;
    st = pf_pg_exec(conn,
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY,"
                    " name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())",
                    0, NULL, NULL, err);
    if (st != PF_OK)
        goto out_unlock;
    st = pf_pg_exec(conn, "SELECT version FROM schema_migrations ORDER BY version", 0, NULL,
                    &applied, err);
    if (st != PF_OK)
        goto out_unlock;

    int known = n > 0 ? list[n - 1].version : 0;
    int rows = PQntuples(applied);
    if (rows > 0) {
        int64_t newest;
        st = pf_pg_int64(applied, rows - 1, 0, &newest, err);
        if (st != PF_OK)
            goto out_clear_applied;
        if (newest > known) {
            st = pf_error_set(err, PF_E_PRECONDITION,
                              "database schema version %lld is newer than this binary (%d): "
                              "upgrade the binary",
                              (long long)newest, known);
            goto out_clear_applied;
        }
    }
    int count = 0;
    for (size_t i = 0; i < n; i++) {
        if (version_applied(applied, list[i].version))
            continue;
        st = apply_migration(conn, &list[i], err);
        if (st != PF_OK)
            goto out_clear_applied;
        count++;
    }
    pf_log_debug("pg_migrations_current", "target=%s version=%d applied_now=%d", conn->target,
                 known, count);

out_clear_applied:
    PQclear(applied);
out_unlock:
    /* On the same session only: a lost connection took the lock with it, and
     * a fresh one does not hold it. */
    if (connection_alive(conn))
        PQclear(PQexec(conn->pg, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
    return st;
}
