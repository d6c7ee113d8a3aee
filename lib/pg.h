/* PostgreSQL plumbing over libpq for the services that keep durable state:
 * connections opened from a libpq URL with a connect timeout and readable
 * errors (passwords never appear in messages), statements only through
 * parameters (PQexecParams: there is no call that splices values into SQL),
 * transactions with a retry loop for serialization failures and deadlocks,
 * errors classified into enum pf_status with the server's message, automatic
 * reconnection on the next use after a lost connection, a small fixed pool for
 * worker threads, and numbered schema migrations applied exactly once under an
 * advisory lock. A struct pf_pg_conn is used by one thread at a time; the pool
 * is thread-safe. Results are libpq's own PGresult, read with PQgetvalue and
 * friends or with the checked accessors below, and freed with PQclear. */
#ifndef PF_PG_H
#define PF_PG_H

#include <stdint.h>
#include <libpq-fe.h>
#include "status.h"

#define PF_PG_CONNECT_TIMEOUT_MS_DEFAULT 5000
#define PF_PG_MAX_PARAMS                 1000 /* per statement; far above any real use */

/* An open (or reopenable) connection. Opaque; one thread at a time. */
struct pf_pg_conn;

/* ---- pure helpers: no I/O, for messages and classification ---- */

/* Copies url into out (always NUL-terminated, cut if out is too small) with
 * every password removed: the ":secret" of a URI's user info, a "password="
 * query parameter, or a "password=..." pair of a keyword/value string. The
 * copy is what messages and logs may show. */
void pf_pg_redact_url(const char *url, char *out, size_t out_size);

/* The status for a five-character SQLSTATE: class 08 and server shutdown
 * (57P01..57P03) -> PF_E_UNAVAILABLE; 23505 unique and 23P01 exclusion
 * violations -> PF_E_EXISTS; 23514 check, 23502 not-null and class 22 data
 * errors -> PF_E_INVALID; 23503 foreign key -> PF_E_PRECONDITION; 40001
 * serialization failure and 40P01 deadlock -> PF_E_ABORTED; 57014 statement
 * timeout -> PF_E_DEADLINE; class 53 -> PF_E_RESOURCE; anything else, NULL or
 * malformed -> PF_E_INTERNAL. */
enum pf_status pf_pg_status_from_sqlstate(const char *sqlstate);

/* True for the SQLSTATEs after which running the whole transaction again may
 * succeed: 40001 (serialization failure) and 40P01 (deadlock detected). */
bool pf_pg_sqlstate_is_retryable(const char *sqlstate);

/* ---- connections ---- */

/* Opens a connection now. url is a libpq URI or keyword/value string;
 * connect_timeout_ms <= 0 means PF_PG_CONNECT_TIMEOUT_MS_DEFAULT, and libpq
 * counts whole seconds (rounded up, at least 2), unless the URL sets its own
 * connect_timeout. PF_E_INVALID for a malformed URL, PF_E_UNAVAILABLE when the
 * server cannot be reached: "could not connect to PostgreSQL at
 * 127.0.0.1:5433: connection refused — is it running?". On PF_OK *out is the
 * caller's, to free with pf_pg_conn_destroy; otherwise *out is NULL. The URL
 * is copied. */
enum pf_status pf_pg_conn_create(const char *url, int connect_timeout_ms, struct pf_pg_conn **out,
                                 struct pf_error *err) PF_MUST_CHECK;

/* Closes and frees conn (an open transaction is rolled back by the server).
 * NULL is ignored. */
void pf_pg_conn_destroy(struct pf_pg_conn *conn);

/* "HOST:PORT" of the server, for messages; owned by conn. */
const char *pf_pg_conn_target(const struct pf_pg_conn *conn);

/* The SQLSTATE of the last statement that failed on conn, "" after a success;
 * "08006" when the connection was lost. Owned by conn, valid until its next use. */
const char *pf_pg_last_sqlstate(const struct pf_pg_conn *conn);

/* Runs "SELECT 1": PF_OK when the server answers (reconnecting if needed). */
enum pf_status pf_pg_ping(struct pf_pg_conn *conn, struct pf_error *err) PF_MUST_CHECK;

/* Runs one SQL statement with nparams text parameters ($1..$n; a NULL entry is
 * SQL NULL); results come in text format. sql must be a constant of the
 * program: values go in params, never into sql. When the previous use lost
 * the connection (or the server closed it while idle) it is reopened first,
 * unless a transaction was open then: that is PF_E_UNAVAILABLE until
 * pf_pg_rollback. On PF_OK and out != NULL, *out is the caller's result (free
 * with PQclear); on failure *out is NULL and err says why, classified with
 * pf_pg_status_from_sqlstate ("duplicate key value violates unique
 * constraint \"t_pkey\" (sqlstate 23505)"). */
enum pf_status pf_pg_exec(struct pf_pg_conn *conn, const char *sql, int nparams,
                          const char *const *params, PGresult **out,
                          struct pf_error *err) PF_MUST_CHECK;

/* pf_pg_exec for a statement that yields one integer in its first column:
 * PF_E_NOT_FOUND when it returns no row, PF_E_INTERNAL when the value is NULL
 * or not an integer. */
enum pf_status pf_pg_exec_int64(struct pf_pg_conn *conn, const char *sql, int nparams,
                                const char *const *params, int64_t *out,
                                struct pf_error *err) PF_MUST_CHECK;

/* ---- reading results (pure; res stays the caller's) ---- */

/* The value at (row, col) as text owned by res, or NULL when it is SQL NULL or
 * (row, col) is outside the result. */
const char *pf_pg_text(const PGresult *res, int row, int col);

/* The value at (row, col) as an integer. PF_E_INTERNAL naming the column when
 * it is NULL, not a decimal integer, out of range, or (row, col) is outside
 * the result: a mismatch between query and schema is a bug. */
enum pf_status pf_pg_int64(const PGresult *res, int row, int col, int64_t *out,
                           struct pf_error *err) PF_MUST_CHECK;

/* Rows touched by an INSERT/UPDATE/DELETE (PQcmdTuples), 0 when none or unknown. */
int64_t pf_pg_affected(const PGresult *res);

/* ---- transactions ---- */

enum pf_pg_isolation {
    PF_PG_READ_COMMITTED,
    PF_PG_REPEATABLE_READ,
    PF_PG_SERIALIZABLE,
};

/* BEGIN at the given isolation level. PF_E_PRECONDITION when conn already has
 * an open transaction. */
enum pf_status pf_pg_begin(struct pf_pg_conn *conn, enum pf_pg_isolation isolation,
                           struct pf_error *err) PF_MUST_CHECK;

/* COMMIT. After it returns no transaction is open, whatever the result. A
 * transaction that had already failed is rolled back by the server and gives
 * PF_E_ABORTED; a connection lost during COMMIT gives PF_E_UNAVAILABLE with a
 * message saying the outcome is unknown. */
enum pf_status pf_pg_commit(struct pf_pg_conn *conn, struct pf_error *err) PF_MUST_CHECK;

/* ROLLBACK, best effort: afterwards no transaction is open (if the connection
 * is gone, the server has rolled it back already). Safe to call when none is
 * open. Clears the "lost inside a transaction" state so the next use reconnects. */
void pf_pg_rollback(struct pf_pg_conn *conn);

/* The body of a transaction: runs statements on conn and returns PF_OK to
 * commit or a failure (with err set) to roll back. It must not begin, commit
 * or roll back itself. */
typedef enum pf_status (*pf_pg_tx_fn)(struct pf_pg_conn *conn, void *arg, struct pf_error *err);

/* Runs fn inside BEGIN .. COMMIT, up to max_attempts times (<= 0 means 5):
 * when fn or COMMIT fails with SQLSTATE 40001 or 40P01 the transaction is
 * rolled back and run again after a short randomized pause, so fn must be
 * safe to repeat (keep side effects other than SQL out of it). Any other
 * failure is rolled back and returned at once, as is a lost connection
 * (whose COMMIT outcome is unknown). After the last attempt the error says
 * "(gave up after N attempts)". */
enum pf_status pf_pg_transact(struct pf_pg_conn *conn, enum pf_pg_isolation isolation,
                              int max_attempts, pf_pg_tx_fn fn, void *arg,
                              struct pf_error *err) PF_MUST_CHECK;

/* ---- pool ---- */

/* N connections shared by worker threads. Opaque; thread-safe. */
struct pf_pg_pool;

/* Makes a pool of size (1..1000) connections to url. Connections open lazily,
 * on their first use, so a pool can be made while the database is still down
 * (pf_pg_ping tells readiness); only a malformed URL fails here (PF_E_INVALID).
 * On PF_OK *out is the caller's, to free with pf_pg_pool_destroy. */
enum pf_status pf_pg_pool_create(const char *url, int size, int connect_timeout_ms,
                                 struct pf_pg_pool **out, struct pf_error *err) PF_MUST_CHECK;

/* Closes every connection and frees the pool. Every connection must have been
 * checked in: pointers still held become invalid. NULL is ignored. */
void pf_pg_pool_destroy(struct pf_pg_pool *pool);

/* Takes a free connection, waiting up to wait_ms (0 = do not wait) for one:
 * PF_E_UNAVAILABLE "no database connection free within 200 ms" otherwise. On
 * PF_OK the calling thread has *out to itself until pf_pg_pool_checkin; the
 * pool still owns it. */
enum pf_status pf_pg_pool_checkout(struct pf_pg_pool *pool, int wait_ms, struct pf_pg_conn **out,
                                   struct pf_error *err) PF_MUST_CHECK;

/* Gives conn back (rolling back a transaction left open) and wakes one waiter.
 * conn must come from this pool's pf_pg_pool_checkout; NULL is ignored. */
void pf_pg_pool_checkin(struct pf_pg_pool *pool, struct pf_pg_conn *conn);

/* ---- migrations ---- */

/* One schema change. sql may hold several statements; it runs inside a
 * transaction, so it must not contain BEGIN/COMMIT or statements that refuse
 * to run in one (CREATE INDEX CONCURRENTLY, VACUUM). The strings are borrowed. */
struct pf_pg_migration {
    int version; /* > 0, strictly increasing along the list */
    const char *name;
    const char *sql;
};

/* Checks a migration list without touching a database: versions positive and
 * strictly increasing, names and SQL present. PF_E_INVALID naming the entry. */
enum pf_status pf_pg_migrations_check(const struct pf_pg_migration *list, size_t n,
                                      struct pf_error *err) PF_MUST_CHECK;

/* Brings the database to list[n-1].version: under a session advisory lock
 * (so replicas starting together wait for each other), creates
 * schema_migrations(version, name, applied_at) if missing, then applies every
 * migration of list not recorded there, in order, each in its own transaction
 * together with its schema_migrations row, and logs it (pg_migration_applied).
 * Refuses with PF_E_PRECONDITION "database schema version 7 is newer than this
 * binary (5): upgrade the binary" when the database is ahead. A failing
 * migration is rolled back and reported by version and name; those before it
 * stay applied. conn must have no open transaction. */
enum pf_status pf_pg_migrate(struct pf_pg_conn *conn, const struct pf_pg_migration *list, size_t n,
                             struct pf_error *err) PF_MUST_CHECK;

#endif
