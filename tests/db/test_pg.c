/* Tests of lib/pg.c against a real PostgreSQL started by run_with_servers.sh
 * (PF_TEST_PG_URL): connecting and the refused-connection message without a
 * password, values with quotes and unicode through parameters, the
 * classification of SQL errors, transactions and their retry loop on real and
 * raised serialization failures, reconnecting after the server closed the
 * connection (pg_terminate_backend, and a full server restart through
 * tests/harness/pg.sh), the pool's bounded wait, and migrations: applied once,
 * idempotent, exactly once when two connections race, refused when the
 * database is newer. Also the pure helpers (URL redaction, SQLSTATE mapping,
 * migration list checks). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"
#include "pg.h"
#include "timeutil.h"

/* Fails the test with the status and message when st is not PF_OK. */
#define assert_ok(st, err)                                                                         \
    do {                                                                                           \
        enum pf_status st_ = (st);                                                                 \
        if (st_ != PF_OK)                                                                          \
            fail_msg("%s:%d: %s: %s", __FILE__, __LINE__, pf_status_name(st_), (err).msg);         \
    } while (0)

#define assert_contains(haystack, needle)                                                          \
    do {                                                                                           \
        if (strstr((haystack), (needle)) == NULL)                                                  \
            fail_msg("'%s' does not contain '%s'", (haystack), (needle));                          \
    } while (0)

static const char *pg_url(void)
{
    return getenv("PF_TEST_PG_URL");
}

static struct pf_pg_conn *connect_ok(void)
{
    struct pf_pg_conn *conn = NULL;
    struct pf_error err;
    assert_ok(pf_pg_conn_create(pg_url(), 5000, &conn, &err), err);
    assert_non_null(conn);
    return conn;
}

static void exec_ok(struct pf_pg_conn *conn, const char *sql)
{
    struct pf_error err;
    assert_ok(pf_pg_exec(conn, sql, 0, NULL, NULL, &err), err);
}

static int64_t query_int(struct pf_pg_conn *conn, const char *sql)
{
    struct pf_error err;
    int64_t v = -1;
    assert_ok(pf_pg_exec_int64(conn, sql, 0, NULL, &v, &err), err);
    return v;
}

/* A loopback port with nothing listening (bound, read, closed). */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* "127.0.0.1:PORT" of PF_TEST_PG_URL. */
static void server_target(char *out, size_t out_size)
{
    const char *at = strchr(pg_url(), '@');
    assert_non_null(at);
    size_t n = strcspn(at + 1, "/");
    snprintf(out, out_size, "%.*s", (int)n, at + 1);
}

/* ---- pure helpers ---- */

static void test_redact_url(void **state)
{
    (void)state;
    char out[256];
    pf_pg_redact_url("postgresql://app:s3cret@db.example:5432/printfarm", out, sizeof out);
    assert_string_equal(out, "postgresql://app@db.example:5432/printfarm");
    pf_pg_redact_url("postgres://app:s3cret@db/printfarm?sslmode=require", out, sizeof out);
    assert_string_equal(out, "postgres://app@db/printfarm?sslmode=require");
    pf_pg_redact_url("postgresql://app@db/pf?password=s3cret&sslmode=require", out, sizeof out);
    assert_string_equal(out, "postgresql://app@db/pf?sslmode=require");
    pf_pg_redact_url("postgresql://db/pf?sslmode=require&password=s3cret", out, sizeof out);
    assert_string_equal(out, "postgresql://db/pf?sslmode=require");
    pf_pg_redact_url("postgresql://db/pf?password=s3cret", out, sizeof out);
    assert_string_equal(out, "postgresql://db/pf");
    pf_pg_redact_url("postgresql://:s3cret@db/pf", out, sizeof out);
    assert_string_equal(out, "postgresql://@db/pf");
    pf_pg_redact_url("postgresql://db:5432/pf", out, sizeof out);
    assert_string_equal(out, "postgresql://db:5432/pf");
    pf_pg_redact_url("host=db port=5432 password=s3cret dbname=pf", out, sizeof out);
    assert_string_equal(out, "host=db port=5432 dbname=pf");
    pf_pg_redact_url("password = 'it\\'s s3cret' host=db", out, sizeof out);
    assert_null(strstr(out, "s3cret"));
    assert_contains(out, "host=db");
    pf_pg_redact_url("host=db password=", out, sizeof out);
    assert_string_equal(out, "host=db");
    /* cut, terminated, still no password */
    char small[12];
    pf_pg_redact_url("postgresql://app:s3cret@db/pf", small, sizeof small);
    assert_string_equal(small, "postgresql:");
    pf_pg_redact_url(NULL, out, sizeof out);
    assert_string_equal(out, "");
    pf_pg_redact_url("x", out, 0); /* no room: nothing written, no crash */
}

static void test_sqlstate_mapping(void **state)
{
    (void)state;
    assert_int_equal(pf_pg_status_from_sqlstate("23505"), PF_E_EXISTS);
    assert_int_equal(pf_pg_status_from_sqlstate("23P01"), PF_E_EXISTS);
    assert_int_equal(pf_pg_status_from_sqlstate("23514"), PF_E_INVALID);
    assert_int_equal(pf_pg_status_from_sqlstate("23502"), PF_E_INVALID);
    assert_int_equal(pf_pg_status_from_sqlstate("22P02"), PF_E_INVALID);
    assert_int_equal(pf_pg_status_from_sqlstate("22003"), PF_E_INVALID);
    assert_int_equal(pf_pg_status_from_sqlstate("23503"), PF_E_PRECONDITION);
    assert_int_equal(pf_pg_status_from_sqlstate("40001"), PF_E_ABORTED);
    assert_int_equal(pf_pg_status_from_sqlstate("40P01"), PF_E_ABORTED);
    assert_int_equal(pf_pg_status_from_sqlstate("57014"), PF_E_DEADLINE);
    assert_int_equal(pf_pg_status_from_sqlstate("08006"), PF_E_UNAVAILABLE);
    assert_int_equal(pf_pg_status_from_sqlstate("08001"), PF_E_UNAVAILABLE);
    assert_int_equal(pf_pg_status_from_sqlstate("57P01"), PF_E_UNAVAILABLE);
    assert_int_equal(pf_pg_status_from_sqlstate("53300"), PF_E_RESOURCE);
    assert_int_equal(pf_pg_status_from_sqlstate("42601"), PF_E_INTERNAL);
    assert_int_equal(pf_pg_status_from_sqlstate("XX000"), PF_E_INTERNAL);
    /* malformed */
    assert_int_equal(pf_pg_status_from_sqlstate(NULL), PF_E_INTERNAL);
    assert_int_equal(pf_pg_status_from_sqlstate(""), PF_E_INTERNAL);
    assert_int_equal(pf_pg_status_from_sqlstate("2350"), PF_E_INTERNAL);
    assert_int_equal(pf_pg_status_from_sqlstate("235050"), PF_E_INTERNAL);
    assert_int_equal(pf_pg_status_from_sqlstate("08 06"), PF_E_INTERNAL);
    assert_int_equal(pf_pg_status_from_sqlstate("2350a"), PF_E_INTERNAL);
    assert_true(pf_pg_sqlstate_is_retryable("40001"));
    assert_true(pf_pg_sqlstate_is_retryable("40P01"));
    assert_false(pf_pg_sqlstate_is_retryable("40002"));
    assert_false(pf_pg_sqlstate_is_retryable("23505"));
    assert_false(pf_pg_sqlstate_is_retryable(""));
    assert_false(pf_pg_sqlstate_is_retryable(NULL));
}

static void test_migrations_check(void **state)
{
    (void)state;
    struct pf_error err;
    const struct pf_pg_migration good[] = {{1, "a", "SELECT 1"}, {5, "b", "SELECT 1"}};
    assert_ok(pf_pg_migrations_check(good, 2, &err), err);
    assert_ok(pf_pg_migrations_check(NULL, 0, &err), err);
    assert_int_equal(pf_pg_migrations_check(NULL, 1, &err), PF_E_INVALID);
    const struct pf_pg_migration zero[] = {{0, "a", "SELECT 1"}};
    assert_int_equal(pf_pg_migrations_check(zero, 1, &err), PF_E_INVALID);
    const struct pf_pg_migration negative[] = {{-3, "a", "SELECT 1"}};
    assert_int_equal(pf_pg_migrations_check(negative, 1, &err), PF_E_INVALID);
    const struct pf_pg_migration repeated[] = {{1, "a", "SELECT 1"}, {1, "b", "SELECT 1"}};
    assert_int_equal(pf_pg_migrations_check(repeated, 2, &err), PF_E_INVALID);
    assert_contains(err.msg, "must increase");
    const struct pf_pg_migration backwards[] = {{2, "a", "SELECT 1"}, {1, "b", "SELECT 1"}};
    assert_int_equal(pf_pg_migrations_check(backwards, 2, &err), PF_E_INVALID);
    const struct pf_pg_migration unnamed[] = {{1, "", "SELECT 1"}};
    assert_int_equal(pf_pg_migrations_check(unnamed, 1, &err), PF_E_INVALID);
    const struct pf_pg_migration null_name[] = {{1, NULL, "SELECT 1"}};
    assert_int_equal(pf_pg_migrations_check(null_name, 1, &err), PF_E_INVALID);
    const struct pf_pg_migration no_sql[] = {{1, "a", NULL}};
    assert_int_equal(pf_pg_migrations_check(no_sql, 1, &err), PF_E_INVALID);
    assert_contains(err.msg, "no SQL");
}

/* ---- connecting ---- */

static void test_connect_ok(void **state)
{
    (void)state;
    struct pf_pg_conn *conn = connect_ok();
    struct pf_error err;
    assert_ok(pf_pg_ping(conn, &err), err);
    char target[64];
    server_target(target, sizeof target);
    assert_string_equal(pf_pg_conn_target(conn), target);
    assert_int_equal(query_int(conn, "SELECT 41 + 1"), 42);
    assert_string_equal(pf_pg_last_sqlstate(conn), "");
    pf_pg_conn_destroy(conn);
    pf_pg_conn_destroy(NULL);
}

static void test_connect_refused_hides_password(void **state)
{
    (void)state;
    int port = dead_port();
    char url[256], expect[200];
    snprintf(expect, sizeof expect,
             "could not connect to PostgreSQL at 127.0.0.1:%d: connection refused — is it running?",
             port);
    const char *const forms[] = {
        "postgresql://pfuser:Sup3r-s3cret@127.0.0.1:%d/printfarm",
        "postgresql://pfuser@127.0.0.1:%d/printfarm?password=Sup3r-s3cret",
        "host=127.0.0.1 port=%d dbname=printfarm password=Sup3r-s3cret",
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        snprintf(url, sizeof url, forms[i], port);
        struct pf_pg_conn *conn = (struct pf_pg_conn *)1;
        struct pf_error err;
        int64_t started = pf_time_mono_ms();
        assert_int_equal(pf_pg_conn_create(url, 2000, &conn, &err), PF_E_UNAVAILABLE);
        assert_null(conn);
        assert_string_equal(err.msg, expect);
        assert_null(strstr(err.msg, "s3cret"));
        assert_true(pf_time_mono_ms() >= started);
    }
}

static void test_invalid_url(void **state)
{
    (void)state;
    struct pf_pg_conn *conn;
    struct pf_error err;
    assert_int_equal(pf_pg_conn_create("nonsense", 1000, &conn, &err), PF_E_INVALID);
    assert_contains(err.msg, "invalid database URL 'nonsense'");
    assert_int_equal(pf_pg_conn_create("host=x password=Sup3r-s3cret bogus", 1000, &conn, &err),
                     PF_E_INVALID);
    assert_null(strstr(err.msg, "s3cret"));
    assert_int_equal(
        pf_pg_conn_create("postgresql://u:Sup3r-s3cret@h/db?nosuchoption=1", 1000, &conn, &err),
        PF_E_INVALID);
    assert_null(strstr(err.msg, "s3cret"));
    assert_int_equal(pf_pg_conn_create("", 1000, &conn, &err), PF_E_INVALID);
    assert_int_equal(pf_pg_conn_create(NULL, 1000, &conn, &err), PF_E_INVALID);
    assert_int_equal(pf_pg_conn_create(pg_url(), 1000, NULL, &err), PF_E_INVALID);
}

static void test_bad_exec_arguments(void **state)
{
    (void)state;
    struct pf_pg_conn *conn = connect_ok();
    struct pf_error err;
    PGresult *res = (PGresult *)1;
    assert_int_equal(pf_pg_exec(conn, "", 0, NULL, &res, &err), PF_E_INVALID);
    assert_null(res);
    assert_int_equal(pf_pg_exec(conn, NULL, 0, NULL, NULL, &err), PF_E_INVALID);
    assert_int_equal(pf_pg_exec(conn, "SELECT $1", 1, NULL, NULL, &err), PF_E_INVALID);
    assert_int_equal(pf_pg_exec(conn, "SELECT 1", -1, NULL, NULL, &err), PF_E_INVALID);
    assert_int_equal(pf_pg_exec(NULL, "SELECT 1", 0, NULL, NULL, &err), PF_E_INVALID);
    /* the extended protocol refuses two statements in one: no smuggling */
    assert_int_not_equal(pf_pg_exec(conn, "SELECT 1; SELECT 2", 0, NULL, NULL, &err), PF_OK);
    /* a parameter count that does not match the statement */
    const char *const one[] = {"1"};
    assert_int_not_equal(pf_pg_exec(conn, "SELECT $1::int + $2::int", 1, one, NULL, &err), PF_OK);
    assert_ok(pf_pg_ping(conn, &err), err);
    pf_pg_conn_destroy(conn);
}

/* ---- statements ---- */

static void test_params_quotes_and_unicode(void **state)
{
    (void)state;
    struct pf_pg_conn *conn = connect_ok();
    struct pf_error err;
    exec_ok(conn, "CREATE TEMP TABLE notes (id serial PRIMARY KEY, name text, body text)");
    const char *const values[] = {
        "O'Reilly's \"quoted\" \\ backslash",
        "x'); DROP TABLE notes; --",
        "Prusa MK4 — ünïcödé 🖨️ 日本語 \t tab",
        "$1 $$ dollar $$ quoting",
        "",
    };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        const char *const params[] = {values[i], values[i]};
        PGresult *res;
        assert_ok(pf_pg_exec(conn, "INSERT INTO notes (name, body) VALUES ($1, $2) RETURNING id", 2,
                             params, &res, &err),
                  err);
        int64_t id;
        assert_ok(pf_pg_int64(res, 0, 0, &id, &err), err);
        assert_int_equal(pf_pg_affected(res), 1);
        PQclear(res);

        const char *const by_name[] = {values[i]};
        assert_ok(
            pf_pg_exec(conn, "SELECT id, body FROM notes WHERE name = $1", 1, by_name, &res, &err),
            err);
        assert_int_equal(PQntuples(res), 1);
        int64_t got_id;
        assert_ok(pf_pg_int64(res, 0, 0, &got_id, &err), err);
        assert_int_equal(got_id, id);
        assert_string_equal(pf_pg_text(res, 0, 1), values[i]);
        PQclear(res);
    }
    /* the table survived the "injection" */
    assert_int_equal(query_int(conn, "SELECT count(*) FROM notes"), 5);

    /* NULL parameters are SQL NULL */
    const char *const nulls[] = {"nobody", NULL};
    assert_ok(
        pf_pg_exec(conn, "INSERT INTO notes (name, body) VALUES ($1, $2)", 2, nulls, NULL, &err),
        err);
    PGresult *res;
    const char *const nobody[] = {"nobody"};
    assert_ok(pf_pg_exec(conn, "SELECT body FROM notes WHERE name = $1", 1, nobody, &res, &err),
              err);
    assert_int_equal(PQntuples(res), 1);
    assert_null(pf_pg_text(res, 0, 0));
    int64_t v;
    assert_int_equal(pf_pg_int64(res, 0, 0, &v, &err), PF_E_INTERNAL);
    assert_contains(err.msg, "'body' is NULL");
    PQclear(res);
    pf_pg_conn_destroy(conn);
}

static void test_result_accessors(void **state)
{
    (void)state;
    struct pf_pg_conn *conn = connect_ok();
    struct pf_error err;
    PGresult *res;
    assert_ok(pf_pg_exec(conn,
                         "SELECT 9223372036854775807::bigint AS big, -5 AS neg, 'abc' AS word,"
                         " '99999999999999999999'::text AS huge, '12x' AS junk",
                         0, NULL, &res, &err),
              err);
    int64_t v;
    assert_ok(pf_pg_int64(res, 0, 0, &v, &err), err);
    assert_true(v == INT64_MAX);
    assert_ok(pf_pg_int64(res, 0, 1, &v, &err), err);
    assert_int_equal(v, -5);
    assert_int_equal(pf_pg_int64(res, 0, 2, &v, &err), PF_E_INTERNAL);
    assert_contains(err.msg, "'word' is not an integer");
    assert_int_equal(pf_pg_int64(res, 0, 3, &v, &err), PF_E_INTERNAL);
    assert_int_equal(pf_pg_int64(res, 0, 4, &v, &err), PF_E_INTERNAL);
    assert_int_equal(pf_pg_int64(res, 1, 0, &v, &err), PF_E_INTERNAL);
    assert_int_equal(pf_pg_int64(res, 0, 5, &v, &err), PF_E_INTERNAL);
    assert_int_equal(pf_pg_int64(res, -1, 0, &v, &err), PF_E_INTERNAL);
    assert_int_equal(pf_pg_int64(NULL, 0, 0, &v, &err), PF_E_INTERNAL);
    assert_null(pf_pg_text(res, 0, 99));
    assert_null(pf_pg_text(res, 7, 0));
    assert_null(pf_pg_text(NULL, 0, 0));
    assert_string_equal(pf_pg_text(res, 0, 2), "abc");
    assert_int_equal(pf_pg_affected(res), 1); /* SELECT 1 */
    assert_int_equal(pf_pg_affected(NULL), 0);
    PQclear(res);
    assert_int_equal(pf_pg_exec_int64(conn, "SELECT 1 WHERE false", 0, NULL, &v, &err),
                     PF_E_NOT_FOUND);
    pf_pg_conn_destroy(conn);
}

static void test_error_classification(void **state)
{
    (void)state;
    struct pf_pg_conn *conn = connect_ok();
    struct pf_error err;
    exec_ok(conn, "CREATE TEMP TABLE parents (id int PRIMARY KEY)");
    exec_ok(conn, "CREATE TEMP TABLE spools (name text PRIMARY KEY,"
                  " grams int NOT NULL CHECK (grams >= 0), parent int REFERENCES parents (id))");
    const char *const pla[] = {"PLA black", "1000"};
    const char *const insert = "INSERT INTO spools (name, grams) VALUES ($1, $2)";
    assert_ok(pf_pg_exec(conn, insert, 2, pla, NULL, &err), err);

    assert_int_equal(pf_pg_exec(conn, insert, 2, pla, NULL, &err), PF_E_EXISTS);
    assert_contains(err.msg, "duplicate key value violates unique constraint");
    assert_contains(err.msg, "(sqlstate 23505)");
    assert_string_equal(pf_pg_last_sqlstate(conn), "23505");

    const char *const negative[] = {"PETG", "-1"};
    assert_int_equal(pf_pg_exec(conn, insert, 2, negative, NULL, &err), PF_E_INVALID);
    assert_contains(err.msg, "check constraint");
    assert_string_equal(pf_pg_last_sqlstate(conn), "23514");

    const char *const not_a_number[] = {"ABS", "lots"};
    assert_int_equal(pf_pg_exec(conn, insert, 2, not_a_number, NULL, &err), PF_E_INVALID);
    assert_string_equal(pf_pg_last_sqlstate(conn), "22P02");

    const char *const null_grams[] = {"TPU", NULL};
    assert_int_equal(pf_pg_exec(conn, insert, 2, null_grams, NULL, &err), PF_E_INVALID);
    assert_string_equal(pf_pg_last_sqlstate(conn), "23502");

    const char *const orphan[] = {"ASA", "5", "42"};
    assert_int_equal(pf_pg_exec(conn,
                                "INSERT INTO spools (name, grams, parent) VALUES ($1, $2, $3)", 3,
                                orphan, NULL, &err),
                     PF_E_PRECONDITION);
    assert_contains(err.msg, "foreign key");
    assert_string_equal(pf_pg_last_sqlstate(conn), "23503");

    assert_int_equal(pf_pg_exec(conn, "SELEKT 1", 0, NULL, NULL, &err), PF_E_INTERNAL);
    assert_contains(err.msg, "syntax error");
    assert_string_equal(pf_pg_last_sqlstate(conn), "42601");

    /* a statement timeout */
    exec_ok(conn, "SET statement_timeout = 50");
    assert_int_equal(pf_pg_exec(conn, "SELECT pg_sleep(5)", 0, NULL, NULL, &err), PF_E_DEADLINE);
    exec_ok(conn, "SET statement_timeout = 0");

    /* after all that the connection works and the sqlstate is clear */
    assert_ok(pf_pg_ping(conn, &err), err);
    assert_string_equal(pf_pg_last_sqlstate(conn), "");
    assert_int_equal(query_int(conn, "SELECT count(*) FROM spools"), 1);
    pf_pg_conn_destroy(conn);
}

/* ---- transactions ---- */

static void test_begin_commit_rollback(void **state)
{
    (void)state;
    struct pf_pg_conn *conn = connect_ok();
    struct pf_error err;
    exec_ok(conn, "CREATE TEMP TABLE jobs (id int PRIMARY KEY)");
    assert_int_equal(pf_pg_commit(conn, &err), PF_E_PRECONDITION);

    assert_ok(pf_pg_begin(conn, PF_PG_READ_COMMITTED, &err), err);
    assert_int_equal(pf_pg_begin(conn, PF_PG_SERIALIZABLE, &err), PF_E_PRECONDITION);
    exec_ok(conn, "INSERT INTO jobs VALUES (1)");
    pf_pg_rollback(conn);
    assert_int_equal(query_int(conn, "SELECT count(*) FROM jobs"), 0);

    assert_ok(pf_pg_begin(conn, PF_PG_SERIALIZABLE, &err), err);
    exec_ok(conn, "INSERT INTO jobs VALUES (2)");
    assert_ok(pf_pg_commit(conn, &err), err);
    assert_int_equal(query_int(conn, "SELECT count(*) FROM jobs"), 1);

    /* a failed statement dooms the transaction: COMMIT reports the rollback */
    assert_ok(pf_pg_begin(conn, PF_PG_REPEATABLE_READ, &err), err);
    exec_ok(conn, "INSERT INTO jobs VALUES (3)");
    assert_int_equal(pf_pg_exec(conn, "INSERT INTO jobs VALUES (2)", 0, NULL, NULL, &err),
                     PF_E_EXISTS);
    assert_int_equal(pf_pg_commit(conn, &err), PF_E_ABORTED);
    assert_contains(err.msg, "rolled back");
    assert_int_equal(query_int(conn, "SELECT count(*) FROM jobs"), 1);

    assert_int_equal(pf_pg_begin(conn, (enum pf_pg_isolation)42, &err), PF_E_INVALID);
    pf_pg_rollback(conn); /* none open: harmless */
    pf_pg_rollback(NULL);
    pf_pg_conn_destroy(conn);
}

struct tx_probe {
    int attempts;
    int fail_first;        /* raise this many serialization failures first */
    const char *raise_sql; /* the statement that fails */
};

static enum pf_status tx_insert_then_maybe_fail(struct pf_pg_conn *conn, void *arg,
                                                struct pf_error *err)
{
    struct tx_probe *p = arg;
    p->attempts++;
    enum pf_status st = pf_pg_exec(conn, "INSERT INTO retried (n) VALUES (1)", 0, NULL, NULL, err);
    if (st != PF_OK)
        return st;
    if (p->attempts <= p->fail_first)
        return pf_pg_exec(conn, p->raise_sql, 0, NULL, NULL, err);
    return PF_OK;
}

static void test_transact_retries_serialization_failures(void **state)
{
    (void)state;
    struct pf_pg_conn *conn = connect_ok();
    struct pf_error err;
    exec_ok(conn, "CREATE TEMP TABLE retried (n int)");
    struct tx_probe p = {
        .fail_first = 2,
        .raise_sql = "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001',"
                     " MESSAGE = 'simulated serialization failure'; END $$",
    };
    assert_ok(pf_pg_transact(conn, PF_PG_SERIALIZABLE, 5, tx_insert_then_maybe_fail, &p, &err),
              err);
    assert_int_equal(p.attempts, 3);
    assert_int_equal(query_int(conn, "SELECT count(*) FROM retried"), 1); /* failed ones undone */

    /* deadlocks too; and giving up says so */
    struct tx_probe always = {
        .fail_first = 1000,
        .raise_sql = "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40P01',"
                     " MESSAGE = 'simulated deadlock'; END $$",
    };
    assert_int_equal(
        pf_pg_transact(conn, PF_PG_READ_COMMITTED, 3, tx_insert_then_maybe_fail, &always, &err),
        PF_E_ABORTED);
    assert_int_equal(always.attempts, 3);
    assert_contains(err.msg, "simulated deadlock");
    assert_contains(err.msg, "gave up after 3 attempts");
    assert_int_equal(query_int(conn, "SELECT count(*) FROM retried"), 1);
    pf_pg_conn_destroy(conn);
}

static void test_transact_does_not_retry_other_errors(void **state)
{
    (void)state;
    struct pf_pg_conn *conn = connect_ok();
    struct pf_error err;
    exec_ok(conn, "CREATE TEMP TABLE retried (n int UNIQUE)");
    exec_ok(conn, "INSERT INTO retried VALUES (1)");
    struct tx_probe p = {.fail_first = 0};
    assert_int_equal(
        pf_pg_transact(conn, PF_PG_SERIALIZABLE, 5, tx_insert_then_maybe_fail, &p, &err),
        PF_E_EXISTS);
    assert_int_equal(p.attempts, 1);
    /* an ABORTED of the body's own making (a fencing check) is not retried either */
    struct tx_probe fenced = {
        .fail_first = 1000,
        .raise_sql = "SELECT 1",
    };
    exec_ok(conn, "DELETE FROM retried");
    assert_int_equal(
        pf_pg_transact(conn, PF_PG_SERIALIZABLE, 5, tx_insert_then_maybe_fail, &fenced, &err),
        PF_OK);
    assert_int_equal(fenced.attempts, 1);
    pf_pg_conn_destroy(conn);
}

static enum pf_status tx_epoch_mismatch(struct pf_pg_conn *conn, void *arg, struct pf_error *err)
{
    int *attempts = arg;
    (*attempts)++;
    enum pf_status st = pf_pg_exec(conn, "SELECT 1", 0, NULL, NULL, err);
    if (st != PF_OK)
        return st;
    return pf_error_set(err, PF_E_ABORTED, "epoch 3 is not ours (4)");
}

static void test_transact_own_aborted_not_retried(void **state)
{
    (void)state;
    struct pf_pg_conn *conn = connect_ok();
    struct pf_error err;
    int attempts = 0;
    assert_int_equal(
        pf_pg_transact(conn, PF_PG_SERIALIZABLE, 5, tx_epoch_mismatch, &attempts, &err),
        PF_E_ABORTED);
    assert_int_equal(attempts, 1);
    assert_string_equal(err.msg, "epoch 3 is not ours (4)");
    assert_ok(pf_pg_begin(conn, PF_PG_READ_COMMITTED, &err), err); /* rolled back: none open */
    pf_pg_rollback(conn);
    pf_pg_conn_destroy(conn);
}

/* A real write conflict: the body reads a row, another connection updates it
 * and commits, the body's own update then fails with 40001; the retry sees
 * the other update and succeeds. */
struct conflict {
    struct pf_pg_conn *other;
    int attempts;
};

static enum pf_status tx_conflicting_update(struct pf_pg_conn *conn, void *arg,
                                            struct pf_error *err)
{
    struct conflict *c = arg;
    c->attempts++;
    int64_t qty;
    enum pf_status st =
        pf_pg_exec_int64(conn, "SELECT qty FROM pf_test_stock WHERE id = 1", 0, NULL, &qty, err);
    if (st != PF_OK)
        return st;
    if (c->attempts == 1) {
        st = pf_pg_exec(c->other, "UPDATE pf_test_stock SET qty = qty + 1 WHERE id = 1", 0, NULL,
                        NULL, err);
        if (st != PF_OK)
            return st;
    }
    char next[32];
    snprintf(next, sizeof next, "%lld", (long long)(qty + 10));
    const char *const params[] = {next};
    return pf_pg_exec(conn, "UPDATE pf_test_stock SET qty = $1 WHERE id = 1", 1, params, NULL, err);
}

static void test_transact_real_serialization_conflict(void **state)
{
    (void)state;
    struct pf_pg_conn *conn = connect_ok();
    struct conflict c = {.other = connect_ok()};
    struct pf_error err;
    exec_ok(conn, "DROP TABLE IF EXISTS pf_test_stock");
    exec_ok(conn, "CREATE TABLE pf_test_stock (id int PRIMARY KEY, qty int NOT NULL)");
    exec_ok(conn, "INSERT INTO pf_test_stock VALUES (1, 0)");
    assert_ok(pf_pg_transact(conn, PF_PG_REPEATABLE_READ, 5, tx_conflicting_update, &c, &err), err);
    assert_int_equal(c.attempts, 2);
    /* neither update lost: 0 + 1 (other) + 10 (ours, on top of it) */
    assert_int_equal(query_int(conn, "SELECT qty FROM pf_test_stock WHERE id = 1"), 11);
    exec_ok(conn, "DROP TABLE pf_test_stock");
    pf_pg_conn_destroy(c.other);
    pf_pg_conn_destroy(conn);
}

/* ---- lost connections ---- */

static int64_t backend_pid(struct pf_pg_conn *conn)
{
    return query_int(conn, "SELECT pg_backend_pid()");
}

/* Terminates pid from another connection and waits until it is gone. */
static void terminate_backend(int64_t pid)
{
    struct pf_pg_conn *killer = connect_ok();
    struct pf_error err;
    char text[32];
    snprintf(text, sizeof text, "%lld", (long long)pid);
    const char *const params[] = {text};
    assert_ok(pf_pg_exec(killer, "SELECT pg_terminate_backend($1::int)", 1, params, NULL, &err),
              err);
    for (int i = 0; i < 500; i++) {
        int64_t alive;
        assert_ok(pf_pg_exec_int64(killer, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                                   1, params, &alive, &err),
                  err);
        if (alive == 0)
            break;
        pf_time_sleep_ms(20);
    }
    pf_pg_conn_destroy(killer);
}

static void test_reconnect_after_own_termination(void **state)
{
    (void)state;
    struct pf_pg_conn *conn = connect_ok();
    struct pf_error err;
    int64_t pid = backend_pid(conn);
    assert_int_equal(
        pf_pg_exec(conn, "SELECT pg_terminate_backend(pg_backend_pid())", 0, NULL, NULL, &err),
        PF_E_UNAVAILABLE);
    assert_contains(err.msg, "lost the connection to PostgreSQL at ");
    assert_contains(err.msg, "terminating connection due to administrator command");
    assert_string_equal(pf_pg_last_sqlstate(conn), "08006");
    /* the next use reconnects by itself */
    assert_ok(pf_pg_ping(conn, &err), err);
    assert_true(backend_pid(conn) != pid);
    pf_pg_conn_destroy(conn);
}

static void test_reconnect_after_idle_termination(void **state)
{
    (void)state;
    struct pf_pg_conn *conn = connect_ok();
    struct pf_error err;
    int64_t pid = backend_pid(conn);
    terminate_backend(pid);
    /* closed while idle: noticed before use, so the statement just works */
    assert_int_equal(query_int(conn, "SELECT 7"), 7);
    assert_true(backend_pid(conn) != pid);
    assert_ok(pf_pg_ping(conn, &err), err);
    pf_pg_conn_destroy(conn);
}

static void test_lost_inside_transaction_needs_rollback(void **state)
{
    (void)state;
    struct pf_pg_conn *conn = connect_ok();
    struct pf_error err;
    exec_ok(conn, "DROP TABLE IF EXISTS pf_test_lost");
    exec_ok(conn, "CREATE TABLE pf_test_lost (n int)");
    assert_ok(pf_pg_begin(conn, PF_PG_READ_COMMITTED, &err), err);
    exec_ok(conn, "INSERT INTO pf_test_lost VALUES (1)");
    terminate_backend(backend_pid(conn));
    /* never silently continue outside the transaction */
    assert_int_equal(pf_pg_exec(conn, "INSERT INTO pf_test_lost VALUES (2)", 0, NULL, NULL, &err),
                     PF_E_UNAVAILABLE);
    assert_contains(err.msg, "inside a transaction");
    assert_int_equal(pf_pg_exec(conn, "INSERT INTO pf_test_lost VALUES (3)", 0, NULL, NULL, &err),
                     PF_E_UNAVAILABLE);
    assert_int_equal(pf_pg_commit(conn, &err), PF_E_UNAVAILABLE);
    assert_contains(err.msg, "rolled back");
    pf_pg_rollback(conn);
    assert_int_equal(query_int(conn, "SELECT count(*) FROM pf_test_lost"), 0);
    exec_ok(conn, "DROP TABLE pf_test_lost");
    pf_pg_conn_destroy(conn);
}

/* Runs pg.sh ACTION on the test server; start reuses the server's port. */
static int harness_pg(const char *action)
{
    const char *harness = getenv("PF_TEST_HARNESS_DIR");
    const char *dir = getenv("PF_TEST_PG_DIR");
    char target[64], cmd[1024];
    server_target(target, sizeof target);
    const char *port = strrchr(target, ':') + 1;
    snprintf(cmd, sizeof cmd, "bash '%s/pg.sh' %s '%s' %s >/dev/null", harness, action, dir,
             strcmp(action, "start") == 0 ? port : "");
    return system(cmd);
}

static void test_reconnect_after_server_restart(void **state)
{
    (void)state;
    if (getenv("PF_TEST_HARNESS_DIR") == NULL || getenv("PF_TEST_PG_DIR") == NULL)
        skip();
    struct pf_pg_conn *conn = connect_ok();
    struct pf_error err;
    assert_ok(pf_pg_ping(conn, &err), err);
    int stopped = harness_pg("stop");
    enum pf_status down = pf_pg_ping(conn, &err);
    char down_msg[PF_ERROR_MSG_MAX];
    memcpy(down_msg, err.msg, sizeof down_msg);
    int started = harness_pg("start"); /* before any assert: the server must come back */
    assert_int_equal(stopped, 0);
    assert_int_equal(started, 0);
    assert_int_equal(down, PF_E_UNAVAILABLE);
    char expect[200], target[64];
    server_target(target, sizeof target);
    snprintf(expect, sizeof expect,
             "could not connect to PostgreSQL at %s: connection refused — is it running?", target);
    assert_string_equal(down_msg, expect);
    assert_ok(pf_pg_ping(conn, &err), err);
    assert_int_equal(query_int(conn, "SELECT 5"), 5);
    pf_pg_conn_destroy(conn);
}

/* ---- pool ---- */

static void test_pool_exhaustion(void **state)
{
    (void)state;
    struct pf_pg_pool *pool;
    struct pf_error err;
    assert_ok(pf_pg_pool_create(pg_url(), 2, 5000, &pool, &err), err);
    struct pf_pg_conn *a, *b, *c = (struct pf_pg_conn *)1;
    assert_ok(pf_pg_pool_checkout(pool, 1000, &a, &err), err);
    assert_ok(pf_pg_pool_checkout(pool, 1000, &b, &err), err);
    assert_true(a != b);
    int64_t started = pf_time_mono_ms();
    assert_int_equal(pf_pg_pool_checkout(pool, 200, &c, &err), PF_E_UNAVAILABLE);
    assert_true(pf_time_mono_ms() - started >= 190); /* it did wait */
    assert_null(c);
    assert_string_equal(err.msg, "no database connection free within 200 ms");
    assert_int_equal(pf_pg_pool_checkout(pool, 0, &c, &err), PF_E_UNAVAILABLE);
    assert_string_equal(err.msg, "no database connection free within 0 ms");
    assert_ok(pf_pg_ping(a, &err), err);
    pf_pg_pool_checkin(pool, b);
    assert_ok(pf_pg_pool_checkout(pool, 0, &c, &err), err);
    assert_true(c == b);
    pf_pg_pool_checkin(pool, a);
    pf_pg_pool_checkin(pool, c);
    pf_pg_pool_checkin(pool, NULL);
    pf_pg_pool_destroy(pool);
    pf_pg_pool_destroy(NULL);
}

struct delayed_checkin {
    struct pf_pg_pool *pool;
    struct pf_pg_conn *conn;
};

static void *checkin_later(void *arg)
{
    struct delayed_checkin *d = arg;
    pf_time_sleep_ms(100);
    pf_pg_pool_checkin(d->pool, d->conn);
    return NULL;
}

static void test_pool_waiter_is_woken(void **state)
{
    (void)state;
    struct pf_pg_pool *pool;
    struct pf_error err;
    assert_ok(pf_pg_pool_create(pg_url(), 1, 5000, &pool, &err), err);
    struct delayed_checkin d = {.pool = pool};
    assert_ok(pf_pg_pool_checkout(pool, 0, &d.conn, &err), err);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, checkin_later, &d), 0);
    struct pf_pg_conn *got;
    assert_ok(pf_pg_pool_checkout(pool, 30000, &got, &err), err);
    assert_true(got == d.conn);
    pthread_join(t, NULL);
    pf_pg_pool_checkin(pool, got);
    pf_pg_pool_destroy(pool);
}

static void test_pool_checkin_rolls_back(void **state)
{
    (void)state;
    struct pf_pg_pool *pool;
    struct pf_error err;
    assert_ok(pf_pg_pool_create(pg_url(), 1, 5000, &pool, &err), err);
    struct pf_pg_conn *conn;
    assert_ok(pf_pg_pool_checkout(pool, 0, &conn, &err), err);
    exec_ok(conn, "DROP TABLE IF EXISTS pf_test_pool");
    exec_ok(conn, "CREATE TABLE pf_test_pool (n int)");
    assert_ok(pf_pg_begin(conn, PF_PG_READ_COMMITTED, &err), err);
    exec_ok(conn, "INSERT INTO pf_test_pool VALUES (1)");
    pf_pg_pool_checkin(pool, conn); /* forgotten transaction */
    assert_ok(pf_pg_pool_checkout(pool, 0, &conn, &err), err);
    assert_ok(pf_pg_begin(conn, PF_PG_READ_COMMITTED, &err), err); /* none was open */
    pf_pg_rollback(conn);
    assert_int_equal(query_int(conn, "SELECT count(*) FROM pf_test_pool"), 0);
    exec_ok(conn, "DROP TABLE pf_test_pool");
    pf_pg_pool_checkin(pool, conn);

    /* a connection from elsewhere is refused */
    struct pf_pg_conn *stranger = connect_ok();
    pf_pg_pool_checkin(pool, stranger);
    assert_ok(pf_pg_pool_checkout(pool, 0, &conn, &err), err);
    assert_true(conn != stranger);
    struct pf_pg_conn *none;
    assert_int_equal(pf_pg_pool_checkout(pool, 0, &none, &err), PF_E_UNAVAILABLE);
    pf_pg_pool_checkin(pool, conn);
    pf_pg_pool_destroy(pool);
    pf_pg_conn_destroy(stranger);
}

static void test_pool_is_lazy_and_validates(void **state)
{
    (void)state;
    struct pf_pg_pool *pool = (struct pf_pg_pool *)1;
    struct pf_error err;
    assert_int_equal(pf_pg_pool_create(pg_url(), 0, 5000, &pool, &err), PF_E_INVALID);
    assert_null(pool);
    assert_int_equal(pf_pg_pool_create(pg_url(), 1001, 5000, &pool, &err), PF_E_INVALID);
    assert_int_equal(pf_pg_pool_create("nonsense", 2, 5000, &pool, &err), PF_E_INVALID);
    /* made while the database is down; the error comes on use */
    char url[128];
    snprintf(url, sizeof url, "postgresql://u:Sup3r-s3cret@127.0.0.1:%d/x", dead_port());
    assert_ok(pf_pg_pool_create(url, 2, 2000, &pool, &err), err);
    struct pf_pg_conn *conn;
    assert_ok(pf_pg_pool_checkout(pool, 0, &conn, &err), err);
    assert_int_equal(pf_pg_ping(conn, &err), PF_E_UNAVAILABLE);
    assert_contains(err.msg, "connection refused — is it running?");
    assert_null(strstr(err.msg, "s3cret"));
    pf_pg_pool_checkin(pool, conn);
    pf_pg_pool_destroy(pool);
}

struct pool_worker {
    struct pf_pg_pool *pool;
    int done;
};

static void *pool_worker_main(void *arg)
{
    struct pool_worker *w = arg;
    for (int i = 0; i < 40; i++) {
        struct pf_pg_conn *conn;
        struct pf_error err;
        if (pf_pg_pool_checkout(w->pool, 30000, &conn, &err) != PF_OK)
            continue;
        if (pf_pg_exec(conn, "INSERT INTO pf_test_pool_load VALUES (1)", 0, NULL, NULL, &err) ==
            PF_OK)
            w->done++;
        pf_pg_pool_checkin(w->pool, conn);
    }
    return NULL;
}

static void test_pool_many_threads(void **state)
{
    (void)state;
    struct pf_pg_conn *admin = connect_ok();
    exec_ok(admin, "DROP TABLE IF EXISTS pf_test_pool_load");
    exec_ok(admin, "CREATE TABLE pf_test_pool_load (n int)");
    struct pf_pg_pool *pool;
    struct pf_error err;
    assert_ok(pf_pg_pool_create(pg_url(), 2, 5000, &pool, &err), err);
    struct pool_worker workers[4];
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        workers[i] = (struct pool_worker){.pool = pool};
        assert_int_equal(pthread_create(&threads[i], NULL, pool_worker_main, &workers[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        total += workers[i].done;
    }
    assert_int_equal(total, 160);
    assert_int_equal(query_int(admin, "SELECT count(*) FROM pf_test_pool_load"), 160);
    exec_ok(admin, "DROP TABLE pf_test_pool_load");
    pf_pg_pool_destroy(pool);
    pf_pg_conn_destroy(admin);
}

/* ---- migrations ---- */

static const struct pf_pg_migration migrations[] = {
    {1, "create widgets",
     "CREATE TABLE mig_widgets (id serial PRIMARY KEY, name text NOT NULL);"
     "CREATE TABLE mig_log (version int NOT NULL, note text)"},
    {2, "seed widgets",
     "INSERT INTO mig_widgets (name) VALUES ('first');"
     "INSERT INTO mig_log VALUES (2, 'seeded')"},
    {3, "add colour",
     "ALTER TABLE mig_widgets ADD COLUMN colour text;"
     "SELECT pg_sleep(0.2);" /* widens the window for the concurrent test */
     "INSERT INTO mig_log VALUES (3, 'colour')"},
};
#define MIGRATION_COUNT (sizeof migrations / sizeof migrations[0])

static int reset_schema(void **state)
{
    (void)state;
    struct pf_pg_conn *conn = connect_ok();
    exec_ok(conn, "DROP TABLE IF EXISTS schema_migrations, mig_widgets, mig_log, mig_broken");
    pf_pg_conn_destroy(conn);
    return 0;
}

static void test_migrate_applies_once(void **state)
{
    (void)state;
    struct pf_pg_conn *conn = connect_ok();
    struct pf_error err;
    assert_ok(pf_pg_migrate(conn, migrations, 2, &err), err);
    assert_int_equal(query_int(conn, "SELECT count(*) FROM schema_migrations"), 2);
    assert_int_equal(query_int(conn, "SELECT max(version) FROM schema_migrations"), 2);
    assert_int_equal(query_int(conn, "SELECT count(*) FROM mig_widgets"), 1);
    /* again: nothing to do */
    assert_ok(pf_pg_migrate(conn, migrations, 2, &err), err);
    assert_int_equal(query_int(conn, "SELECT count(*) FROM mig_widgets"), 1);
    /* a newer binary: only the new one runs */
    assert_ok(pf_pg_migrate(conn, migrations, MIGRATION_COUNT, &err), err);
    assert_ok(pf_pg_migrate(conn, migrations, MIGRATION_COUNT, &err), err);
    assert_int_equal(query_int(conn, "SELECT count(*) FROM schema_migrations"), 3);
    assert_int_equal(query_int(conn, "SELECT count(*) FROM mig_log"), 2);
    assert_int_equal(query_int(conn, "SELECT count(*) FROM mig_widgets"), 1);
    PGresult *res;
    assert_ok(pf_pg_exec(conn,
                         "SELECT name, applied_at IS NOT NULL FROM schema_migrations"
                         " WHERE version = 3",
                         0, NULL, &res, &err),
              err);
    assert_string_equal(pf_pg_text(res, 0, 0), "add colour");
    assert_string_equal(pf_pg_text(res, 0, 1), "t");
    PQclear(res);
    pf_pg_conn_destroy(conn);
}

static void test_migrate_refuses_newer_database(void **state)
{
    (void)state;
    struct pf_pg_conn *conn = connect_ok();
    struct pf_error err;
    assert_ok(pf_pg_migrate(conn, migrations, MIGRATION_COUNT, &err), err);
    assert_int_equal(pf_pg_migrate(conn, migrations, 2, &err), PF_E_PRECONDITION);
    assert_string_equal(
        err.msg, "database schema version 3 is newer than this binary (2): upgrade the binary");
    assert_int_equal(pf_pg_migrate(conn, NULL, 0, &err), PF_E_PRECONDITION);
    assert_string_equal(
        err.msg, "database schema version 3 is newer than this binary (0): upgrade the binary");
    /* nothing was touched, and the lock was released */
    assert_int_equal(query_int(conn, "SELECT count(*) FROM schema_migrations"), 3);
    assert_int_equal(query_int(conn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
                     0);
    pf_pg_conn_destroy(conn);
}

static void test_migrate_failure_rolls_back(void **state)
{
    (void)state;
    struct pf_pg_conn *conn = connect_ok();
    struct pf_error err;
    const struct pf_pg_migration broken[] = {
        migrations[0],
        {2, "broken", "CREATE TABLE mig_broken (n int); SELEKT oops"},
        {3, "never", "CREATE TABLE mig_never (n int)"},
    };
    assert_int_equal(pf_pg_migrate(conn, broken, 3, &err), PF_E_INTERNAL);
    assert_contains(err.msg, "migration 2 'broken' failed: ");
    assert_contains(err.msg, "syntax error");
    assert_int_equal(query_int(conn, "SELECT count(*) FROM schema_migrations"), 1);
    assert_int_equal(query_int(conn, "SELECT count(*) FROM pg_tables"
                                     " WHERE tablename IN ('mig_broken', 'mig_never')"),
                     0);
    assert_int_equal(query_int(conn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
                     0);
    /* fixed binary: carries on from there */
    assert_ok(pf_pg_migrate(conn, migrations, MIGRATION_COUNT, &err), err);
    assert_int_equal(query_int(conn, "SELECT count(*) FROM schema_migrations"), 3);
    /* inside an open transaction it refuses */
    assert_ok(pf_pg_begin(conn, PF_PG_READ_COMMITTED, &err), err);
    assert_int_equal(pf_pg_migrate(conn, migrations, MIGRATION_COUNT, &err), PF_E_PRECONDITION);
    pf_pg_rollback(conn);
    const struct pf_pg_migration bad_list[] = {{2, "b", "SELECT 1"}, {1, "a", "SELECT 1"}};
    assert_int_equal(pf_pg_migrate(conn, bad_list, 2, &err), PF_E_INVALID);
    pf_pg_conn_destroy(conn);
}

struct racer {
    pthread_barrier_t *start;
    enum pf_status st;
    struct pf_error err;
};

static void *race_migrate(void *arg)
{
    struct racer *r = arg;
    struct pf_pg_conn *conn = NULL;
    r->st = pf_pg_conn_create(pg_url(), 5000, &conn, &r->err);
    pthread_barrier_wait(r->start);
    if (r->st == PF_OK)
        r->st = pf_pg_migrate(conn, migrations, MIGRATION_COUNT, &r->err);
    pf_pg_conn_destroy(conn);
    return NULL;
}

static void test_migrate_concurrently_exactly_once(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        reset_schema(NULL);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 3);
        struct racer racers[3];
        pthread_t threads[3];
        for (int i = 0; i < 3; i++) {
            racers[i] = (struct racer){.start = &start};
            assert_int_equal(pthread_create(&threads[i], NULL, race_migrate, &racers[i]), 0);
        }
        for (int i = 0; i < 3; i++)
            pthread_join(threads[i], NULL);
        pthread_barrier_destroy(&start);
        for (int i = 0; i < 3; i++)
            assert_ok(racers[i].st, racers[i].err);
        struct pf_pg_conn *conn = connect_ok();
        assert_int_equal(query_int(conn, "SELECT count(*) FROM schema_migrations"), 3);
        assert_int_equal(query_int(conn, "SELECT count(DISTINCT version) FROM schema_migrations"),
                         3);
        /* each migration's own effects happened once */
        assert_int_equal(query_int(conn, "SELECT count(*) FROM mig_widgets"), 1);
        assert_int_equal(query_int(conn, "SELECT count(*) FROM mig_log WHERE version = 2"), 1);
        assert_int_equal(query_int(conn, "SELECT count(*) FROM mig_log WHERE version = 3"), 1);
        pf_pg_conn_destroy(conn);
    }
}

int main(void)
{
    if (pg_url() == NULL || pg_url()[0] == '\0') {
        fprintf(stderr, "test_pg: PF_TEST_PG_URL is not set; run it through "
                        "tests/db/run_with_servers.sh\n");
        return 1;
    }
    pf_log_init(PF_LOG_INFO, "test_pg");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redact_url),
        cmocka_unit_test(test_sqlstate_mapping),
        cmocka_unit_test(test_migrations_check),
        cmocka_unit_test(test_connect_ok),
        cmocka_unit_test(test_connect_refused_hides_password),
        cmocka_unit_test(test_invalid_url),
        cmocka_unit_test(test_bad_exec_arguments),
        cmocka_unit_test(test_params_quotes_and_unicode),
        cmocka_unit_test(test_result_accessors),
        cmocka_unit_test(test_error_classification),
        cmocka_unit_test(test_begin_commit_rollback),
        cmocka_unit_test(test_transact_retries_serialization_failures),
        cmocka_unit_test(test_transact_does_not_retry_other_errors),
        cmocka_unit_test(test_transact_own_aborted_not_retried),
        cmocka_unit_test(test_transact_real_serialization_conflict),
        cmocka_unit_test(test_reconnect_after_own_termination),
        cmocka_unit_test(test_reconnect_after_idle_termination),
        cmocka_unit_test(test_lost_inside_transaction_needs_rollback),
        cmocka_unit_test(test_pool_exhaustion),
        cmocka_unit_test(test_pool_waiter_is_woken),
        cmocka_unit_test(test_pool_checkin_rolls_back),
        cmocka_unit_test(test_pool_is_lazy_and_validates),
        cmocka_unit_test(test_pool_many_threads),
        cmocka_unit_test_setup(test_migrate_applies_once, reset_schema),
        cmocka_unit_test_setup(test_migrate_refuses_newer_database, reset_schema),
        cmocka_unit_test_setup(test_migrate_failure_rolls_back, reset_schema),
        cmocka_unit_test_setup(test_migrate_concurrently_exactly_once, reset_schema),
        cmocka_unit_test(test_reconnect_after_server_restart), /* last: restarts the server */
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
