/* Tests of lib/redis.c and the Redis half of lib/lease.c against a real
 * Redis started by run_with_servers.sh (PF_TEST_REDIS_URL): URL parsing and
 * redaction, connecting and the "is unavailable" message, binary-safe
 * arguments, error replies and reply type checks, database selection,
 * reconnecting after CLIENT KILL, a command timeout and a server restart; then
 * the lease: only one holder, renew and release only by the holder
 * (compare-and-extend, compare-and-delete), expiry letting another in,
 * recovery from an emptied script cache, and mutual exclusion between
 * threads using it as a lock. Short TTLs, generous waits, and no upper
 * bounds on time. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "lease.h"
#include "log.h"
#include "redis.h"
#include "timeutil.h"

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

static const char *redis_url(void)
{
    return getenv("PF_TEST_REDIS_URL");
}

/* "127.0.0.1:PORT" of PF_TEST_REDIS_URL. */
static const char *server_target(void)
{
    return redis_url() + strlen("redis://");
}

static struct pf_redis *connect_url(const char *url)
{
    struct pf_redis *r = NULL;
    struct pf_error err;
    assert_ok(pf_redis_create(url, NULL, &r, &err), err);
    assert_non_null(r);
    return r;
}

static struct pf_redis *connect_ok(void)
{
    return connect_url(redis_url());
}

static void command_ok(struct pf_redis *r, int argc, const char *const *argv)
{
    struct pf_error err;
    assert_ok(pf_redis_command(r, argc, argv, NULL, NULL, &err), err);
}

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

/* ---- pure helpers ---- */

static void test_url_parse_good(void **state)
{
    (void)state;
    struct pf_redis_url u;
    struct pf_error err;
    assert_ok(pf_redis_url_parse("redis://127.0.0.1:6380", &u, &err), err);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "");
    assert_ok(pf_redis_url_parse("redis://localhost", &u, &err), err);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_ok(pf_redis_url_parse("redis://cache.local:1/15", &u, &err), err);
    assert_int_equal(u.port, 1);
    assert_int_equal(u.db, 15);
    assert_ok(pf_redis_url_parse("redis://h:65535/", &u, &err), err);
    assert_int_equal(u.port, 65535);
    assert_int_equal(u.db, 0);
    assert_ok(pf_redis_url_parse("redis://:p%40ss%3a@h:2/3", &u, &err), err);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "p@ss:");
    assert_int_equal(u.db, 3);
    assert_ok(pf_redis_url_parse("redis://alice:pw@h", &u, &err), err);
    assert_string_equal(u.user, "alice");
    assert_string_equal(u.password, "pw");
    assert_ok(pf_redis_url_parse("redis://:a@b@h", &u, &err), err); /* last '@' ends user info */
    assert_string_equal(u.password, "a@b");
    assert_string_equal(u.host, "h");
    assert_ok(pf_redis_url_parse("redis://[::1]:6390/2", &u, &err), err);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6390);
    assert_int_equal(u.db, 2);
    assert_ok(pf_redis_url_parse("redis://[::1]", &u, &err), err);
    assert_int_equal(u.port, 6379);
}

static void test_url_parse_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "127.0.0.1:6379",
        "http://h:1",
        "rediss://h:1",
        "redis://",
        "redis://:6379",
        "redis://h:0",
        "redis://h:65536",
        "redis://h:99999999999",
        "redis://h:abc",
        "redis://h:-1",
        "redis://h:",
        "redis://h:1/x",
        "redis://h:1/1/2",
        "redis://h:1/-1",
        "redis://h:1/99999999999",
        "redis://s3cretpw@h",
        "redis://u:@h",
        "redis://:%zz@h",
        "redis://:%4@h",
        "redis://:a%00b@h",
        "redis://[::1",
        "redis://[::1]x",
        "redis://[]:1",
        "redis://a:b:c",
        "redis://h h:1",
        "redis://h\x01:1",
        "redis://h?x=1",
    };
    struct pf_redis_url u;
    memset(&u, 0x5a, sizeof u);
    struct pf_redis_url before = u;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct pf_error err;
        if (pf_redis_url_parse(bad[i], &u, &err) != PF_E_INVALID)
            fail_msg("'%s' was accepted", bad[i]);
        assert_memory_equal(&u, &before, sizeof u);
    }
    struct pf_error err;
    assert_int_equal(pf_redis_url_parse(NULL, &u, &err), PF_E_INVALID);
    assert_int_equal(pf_redis_url_parse("rediss://h", &u, &err), PF_E_INVALID);
    assert_contains(err.msg, "TLS (rediss://) is not supported");
    /* the password never shows in a message */
    static const char *const secret[] = {
        "redis://:Sup3r-s3cret@h:abc", "redis://u:Sup3r-s3cret@h:1/x", "redis://Sup3r-s3cret@h",
        "redis://:Sup3r-s3cret@",      "rediss://:Sup3r-s3cret@h",     "redis://:Sup3r-s3cret%@h",
        "http://:Sup3r-s3cret@h:1",
    };
    for (size_t i = 0; i < sizeof secret / sizeof secret[0]; i++) {
        assert_int_equal(pf_redis_url_parse(secret[i], &u, &err), PF_E_INVALID);
        if (strstr(err.msg, "s3cret") != NULL)
            fail_msg("message leaks the password: %s", err.msg);
    }
    /* a too-long password or host */
    char long_url[1024];
    char many[600];
    memset(many, 'p', sizeof many - 1);
    many[sizeof many - 1] = '\0';
    snprintf(long_url, sizeof long_url, "redis://:%s@h", many);
    assert_int_equal(pf_redis_url_parse(long_url, &u, &err), PF_E_INVALID);
    snprintf(long_url, sizeof long_url, "redis://%s:1", many);
    assert_int_equal(pf_redis_url_parse(long_url, &u, &err), PF_E_INVALID);
}

static void test_redact(void **state)
{
    (void)state;
    char out[128];
    pf_redis_redact_url("redis://:s3cret@h:1/2", out, sizeof out);
    assert_string_equal(out, "redis://h:1/2");
    pf_redis_redact_url("redis://bob:s3cret@h:1", out, sizeof out);
    assert_string_equal(out, "redis://bob@h:1");
    pf_redis_redact_url("redis://s3cret@h", out, sizeof out);
    assert_string_equal(out, "redis://h");
    pf_redis_redact_url("redis://:a@s3cret@h/0", out, sizeof out);
    assert_string_equal(out, "redis://h/0");
    pf_redis_redact_url("redis://h:1", out, sizeof out);
    assert_string_equal(out, "redis://h:1");
    pf_redis_redact_url("redis://h:1/a@b", out, sizeof out); /* '@' after the path: not user info */
    assert_string_equal(out, "redis://h:1/a@b");
    char small[9];
    pf_redis_redact_url("redis://:s3cret@host:1", small, sizeof small);
    assert_string_equal(small, "redis://");
    pf_redis_redact_url(NULL, out, sizeof out);
    assert_string_equal(out, "");
    pf_redis_redact_url("x", out, 0);
}

static void test_error_classification_pure(void **state)
{
    (void)state;
    assert_int_equal(pf_redis_status_from_error("NOSCRIPT No matching script."), PF_E_NOT_FOUND);
    assert_int_equal(pf_redis_status_from_error("LOADING Redis is loading"), PF_E_UNAVAILABLE);
    assert_int_equal(pf_redis_status_from_error("BUSY Redis is busy"), PF_E_UNAVAILABLE);
    assert_int_equal(pf_redis_status_from_error("READONLY You can't write"), PF_E_UNAVAILABLE);
    assert_int_equal(pf_redis_status_from_error("MASTERDOWN Link down"), PF_E_UNAVAILABLE);
    assert_int_equal(pf_redis_status_from_error("TRYAGAIN"), PF_E_UNAVAILABLE);
    assert_int_equal(pf_redis_status_from_error("CLUSTERDOWN x"), PF_E_UNAVAILABLE);
    assert_int_equal(pf_redis_status_from_error("WRONGTYPE Operation"), PF_E_PRECONDITION);
    assert_int_equal(pf_redis_status_from_error("NOAUTH Authentication required."),
                     PF_E_UNAUTHENTICATED);
    assert_int_equal(pf_redis_status_from_error("WRONGPASS invalid"), PF_E_UNAUTHENTICATED);
    assert_int_equal(pf_redis_status_from_error("NOPERM no"), PF_E_PERMISSION);
    assert_int_equal(pf_redis_status_from_error("OOM command not allowed"), PF_E_RESOURCE);
    assert_int_equal(pf_redis_status_from_error("ERR unknown command"), PF_E_INTERNAL);
    assert_int_equal(pf_redis_status_from_error("NOSCRIPTX x"), PF_E_INTERNAL);
    assert_int_equal(pf_redis_status_from_error("NOSCRIP"), PF_E_INTERNAL);
    assert_int_equal(pf_redis_status_from_error(""), PF_E_INTERNAL);
    assert_int_equal(pf_redis_status_from_error(NULL), PF_E_INTERNAL);

    struct pf_error err;
    redisReply integer = {.type = REDIS_REPLY_INTEGER, .integer = 5};
    assert_ok(pf_redis_reply_expect(&integer, REDIS_REPLY_INTEGER, "INCR", &err), err);
    assert_int_equal(pf_redis_reply_expect(&integer, REDIS_REPLY_STRING, "GET", &err),
                     PF_E_INTERNAL);
    assert_string_equal(err.msg, "redis command 'GET' returned an integer, expected a string");
    char text[] = "WRONGTYPE Operation against a key holding the wrong kind of value";
    redisReply error = {.type = REDIS_REPLY_ERROR, .str = text, .len = strlen(text)};
    assert_int_equal(pf_redis_reply_expect(&error, REDIS_REPLY_INTEGER, "LPUSH", &err),
                     PF_E_PRECONDITION);
    assert_contains(err.msg, "redis command 'LPUSH' failed: WRONGTYPE");
    redisReply nil = {.type = REDIS_REPLY_NIL};
    assert_int_equal(pf_redis_reply_expect(&nil, REDIS_REPLY_ARRAY, NULL, &err), PF_E_INTERNAL);
    assert_string_equal(err.msg, "redis command '?' returned nil, expected an array");
    redisReply odd = {.type = 99};
    assert_int_equal(pf_redis_reply_expect(&odd, REDIS_REPLY_STATUS, "X", &err), PF_E_INTERNAL);
    assert_int_equal(pf_redis_reply_expect(NULL, REDIS_REPLY_STATUS, "X", &err), PF_E_INTERNAL);
}

/* ---- the client ---- */

static void test_connect_ok(void **state)
{
    (void)state;
    struct pf_redis *r = connect_ok();
    struct pf_error err;
    assert_ok(pf_redis_ping(r, &err), err);
    assert_string_equal(pf_redis_target(r), server_target());
    pf_redis_destroy(r);
    pf_redis_destroy(NULL);
}

static void test_connect_refused(void **state)
{
    (void)state;
    int port = dead_port();
    char url[128], expect[128];
    snprintf(url, sizeof url, "redis://:Sup3r-s3cret@127.0.0.1:%d/1", port);
    snprintf(expect, sizeof expect, "redis at 127.0.0.1:%d is unavailable: connection refused",
             port);
    struct pf_redis *r = (struct pf_redis *)1;
    struct pf_error err;
    struct pf_redis_options opts = {.connect_timeout_ms = 1000, .command_timeout_ms = 1000};
    assert_int_equal(pf_redis_create(url, &opts, &r, &err), PF_E_UNAVAILABLE);
    assert_null(r);
    assert_string_equal(err.msg, expect);
    assert_int_equal(pf_redis_create("redis://h:nope", NULL, &r, &err), PF_E_INVALID);
    assert_int_equal(pf_redis_create(redis_url(), NULL, NULL, &err), PF_E_INVALID);
}

static void test_auth_refused(void **state)
{
    (void)state;
    /* the test server has no password: AUTH is refused */
    char url[160];
    snprintf(url, sizeof url, "redis://:Sup3r-s3cret@%s", server_target());
    struct pf_redis *r;
    struct pf_error err;
    assert_int_equal(pf_redis_create(url, NULL, &r, &err), PF_E_UNAUTHENTICATED);
    assert_contains(err.msg, "refused the credentials");
    assert_null(strstr(err.msg, "s3cret"));
}

static void test_select_database(void **state)
{
    (void)state;
    char url[160];
    snprintf(url, sizeof url, "%s/3", redis_url());
    struct pf_redis *db3 = connect_url(url);
    struct pf_redis *db0 = connect_ok();
    const char *const set[] = {"SET", "pf:test:db", "three"};
    command_ok(db3, 3, set);
    const char *const get[] = {"GET", "pf:test:db"};
    char *value;
    struct pf_error err;
    assert_ok(pf_redis_command_string(db3, 2, get, NULL, &value, NULL, &err), err);
    assert_string_equal(value, "three");
    free(value);
    assert_int_equal(pf_redis_command_string(db0, 2, get, NULL, &value, NULL, &err),
                     PF_E_NOT_FOUND);
    assert_null(value);
    assert_string_equal(err.msg, "redis command 'GET' returned nil");
    pf_redis_destroy(db3);
    pf_redis_destroy(db0);

    struct pf_redis *r;
    snprintf(url, sizeof url, "%s/9999", redis_url());
    assert_int_equal(pf_redis_create(url, NULL, &r, &err), PF_E_INVALID);
    assert_contains(err.msg, "has no database 9999");
}

static void test_binary_safe_arguments(void **state)
{
    (void)state;
    struct pf_redis *r = connect_ok();
    struct pf_error err;
    static const char key[] = "pf:test:bin key\0with nul";
    static const char value[] = "a\0b'\"%s%n\r\n*3\r\n$3\r\n日本 🖨️";
    const char *const set[] = {"SET", key, value};
    const size_t set_len[] = {3, sizeof key - 1, sizeof value - 1};
    assert_ok(pf_redis_command_ok(r, 3, set, set_len, &err), err);
    const char *const get[] = {"GET", key};
    const size_t get_len[] = {3, sizeof key - 1};
    redisReply *reply;
    assert_ok(pf_redis_command(r, 2, get, get_len, &reply, &err), err);
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    assert_int_equal(reply->len, sizeof value - 1);
    assert_memory_equal(reply->str, value, sizeof value - 1);
    freeReplyObject(reply);
    char *copy;
    size_t len;
    assert_ok(pf_redis_command_string(r, 2, get, get_len, &copy, &len, &err), err);
    assert_int_equal(len, sizeof value - 1);
    assert_memory_equal(copy, value, len);
    assert_int_equal(copy[len], '\0');
    free(copy);
    /* the key truncated at its NUL is a different key */
    const char *const get_cut[] = {"GET", key};
    assert_int_equal(pf_redis_command_string(r, 2, get_cut, NULL, &copy, NULL, &err),
                     PF_E_NOT_FOUND);
    /* many arguments (past the small on-stack array) */
    const char *argv[40] = {"RPUSH", "pf:test:list"};
    for (int i = 2; i < 40; i++)
        argv[i] = "x";
    long long n;
    assert_ok(pf_redis_command_integer(r, 40, argv, NULL, &n, &err), err);
    assert_int_equal(n, 38);
    pf_redis_destroy(r);
}

static void test_error_replies(void **state)
{
    (void)state;
    struct pf_redis *r = connect_ok();
    struct pf_error err;
    const char *const set[] = {"SET", "pf:test:word", "notanumber"};
    command_ok(r, 3, set);
    const char *const incr[] = {"INCR", "pf:test:word"};
    long long n;
    assert_int_equal(pf_redis_command_integer(r, 2, incr, NULL, &n, &err), PF_E_INTERNAL);
    assert_contains(err.msg, "redis command 'INCR' failed: ERR value is not an integer");
    const char *const lpush[] = {"LPUSH", "pf:test:word", "x"};
    assert_int_equal(pf_redis_command(r, 3, lpush, NULL, NULL, &err), PF_E_PRECONDITION);
    assert_contains(err.msg, "WRONGTYPE");
    const char *const unknown[] = {"NOSUCHCOMMAND", "x"};
    redisReply *reply = (redisReply *)1;
    assert_int_equal(pf_redis_command(r, 2, unknown, NULL, &reply, &err), PF_E_INTERNAL);
    assert_null(reply);
    assert_contains(err.msg, "unknown command");
    const char *const get[] = {"GET", "pf:test:word"};
    assert_int_equal(pf_redis_command_integer(r, 2, get, NULL, &n, &err), PF_E_INTERNAL);
    assert_string_equal(err.msg, "redis command 'GET' returned a string, expected an integer");
    const char *const ping[] = {"PING"};
    assert_int_equal(pf_redis_command_ok(r, 1, ping, NULL, &err), PF_E_INTERNAL);
    assert_contains(err.msg, "answered 'PONG', expected OK");
    /* bad calls */
    assert_int_equal(pf_redis_command(r, 0, ping, NULL, NULL, &err), PF_E_INVALID);
    assert_int_equal(pf_redis_command(r, 1, NULL, NULL, NULL, &err), PF_E_INVALID);
    const char *const hole[] = {"SET", NULL, "x"};
    assert_int_equal(pf_redis_command(r, 3, hole, NULL, NULL, &err), PF_E_INVALID);
    assert_int_equal(pf_redis_command(NULL, 1, ping, NULL, NULL, &err), PF_E_INVALID);
    /* still fine after all of it */
    assert_ok(pf_redis_ping(r, &err), err);
    pf_redis_destroy(r);
}

static long long client_id(struct pf_redis *r)
{
    const char *const argv[] = {"CLIENT", "ID"};
    long long id = -1;
    struct pf_error err;
    assert_ok(pf_redis_command_integer(r, 2, argv, NULL, &id, &err), err);
    return id;
}

static void test_reconnect_after_client_kill(void **state)
{
    (void)state;
    struct pf_redis *r = connect_ok();
    struct pf_redis *killer = connect_ok();
    struct pf_error err;
    long long id = client_id(r);
    char text[32];
    snprintf(text, sizeof text, "%lld", id);
    const char *const kill[] = {"CLIENT", "KILL", "ID", text};
    long long killed;
    assert_ok(pf_redis_command_integer(killer, 4, kill, NULL, &killed, &err), err);
    assert_int_equal(killed, 1);
    pf_time_sleep_ms(200); /* let the close reach our socket */
    /* closed while idle: noticed before use, so the command just works */
    assert_ok(pf_redis_ping(r, &err), err);
    assert_true(client_id(r) != id);

    /* killing itself: the reply comes, then the close; the next use reconnects */
    id = client_id(r);
    snprintf(text, sizeof text, "%lld", id);
    const char *const kill_self[] = {"CLIENT", "KILL", "ID", text, "SKIPME", "no"};
    assert_ok(pf_redis_command_integer(r, 6, kill_self, NULL, &killed, &err), err);
    assert_int_equal(killed, 1);
    pf_time_sleep_ms(200);
    assert_ok(pf_redis_ping(r, &err), err);
    assert_true(client_id(r) != id);
    pf_redis_destroy(killer);
    pf_redis_destroy(r);
}

static void test_command_timeout(void **state)
{
    (void)state;
    struct pf_redis_options opts = {.connect_timeout_ms = 2000, .command_timeout_ms = 200};
    struct pf_redis *r;
    struct pf_error err;
    assert_ok(pf_redis_create(redis_url(), &opts, &r, &err), err);
    const char *const blpop[] = {"BLPOP", "pf:test:never", "3"};
    assert_int_equal(pf_redis_command(r, 3, blpop, NULL, NULL, &err), PF_E_UNAVAILABLE);
    char expect[128];
    snprintf(expect, sizeof expect, "redis at %s is unavailable: no reply within 200 ms",
             server_target());
    assert_string_equal(err.msg, expect);
    assert_ok(pf_redis_ping(r, &err), err); /* a fresh connection */
    pf_redis_destroy(r);
}

/* ---- the lease ---- */

#define TTL_LONG 5000

static void lease_init_ok(struct pf_lease *l, struct pf_redis *r, const char *key, const char *id,
                          int64_t ttl)
{
    struct pf_error err;
    assert_ok(pf_lease_init(l, r, key, id, ttl, ttl / 10, &err), err);
}

static void del_key(struct pf_redis *r, const char *key)
{
    const char *const del[] = {"DEL", key};
    command_ok(r, 2, del);
}

static void test_lease_init_validates(void **state)
{
    (void)state;
    struct pf_redis *r = connect_ok();
    struct pf_lease l;
    struct pf_error err;
    char long_id[PF_LEASE_ID_MAX + 1];
    memset(long_id, 'i', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    assert_int_equal(pf_lease_init(&l, r, "", "me", 1000, 0, &err), PF_E_INVALID);
    assert_int_equal(pf_lease_init(&l, r, NULL, "me", 1000, 0, &err), PF_E_INVALID);
    assert_int_equal(pf_lease_init(&l, r, "k", "", 1000, 0, &err), PF_E_INVALID);
    assert_int_equal(pf_lease_init(&l, r, "k", long_id, 1000, 0, &err), PF_E_INVALID);
    assert_int_equal(pf_lease_init(&l, r, long_id, "me", 1000, 0, &err), PF_E_INVALID);
    assert_int_equal(pf_lease_init(&l, NULL, "k", "me", 1000, 0, &err), PF_E_INVALID);
    assert_int_equal(pf_lease_init(&l, r, "k", "me", 0, 0, &err), PF_E_INVALID);
    assert_int_equal(pf_lease_init(&l, r, "k", "me", 1000, 600, &err), PF_E_INVALID);
    long_id[PF_LEASE_ID_MAX - 1] = '\0'; /* exactly the maximum is fine */
    assert_ok(pf_lease_init(&l, r, "k", long_id, 1000, 0, &err), err);
    pf_redis_destroy(r);
}

static void test_lease_one_holder(void **state)
{
    (void)state;
    const char *key = "pf:test:lease:one";
    struct pf_redis *ra = connect_ok(), *rb = connect_ok();
    del_key(ra, key);
    struct pf_lease a, b;
    lease_init_ok(&a, ra, key, "10.0.0.1:7400|aaaa", TTL_LONG);
    lease_init_ok(&b, rb, key, "10.0.0.2:7400|bbbb", TTL_LONG);
    struct pf_error err;
    bool won;
    char holder[PF_LEASE_ID_MAX];
    assert_int_equal(pf_lease_read_holder(ra, key, holder, sizeof holder, &err), PF_E_NOT_FOUND);

    assert_ok(pf_lease_acquire(&a, &won, &err), err);
    assert_true(won);
    assert_true(pf_lease_state_is_holder(&a.state, pf_time_mono_ms()));
    assert_string_equal(a.state.holder, "10.0.0.1:7400|aaaa");

    assert_ok(pf_lease_acquire(&b, &won, &err), err);
    assert_false(won);
    assert_false(pf_lease_state_is_holder(&b.state, pf_time_mono_ms()));
    assert_string_equal(b.state.holder, "10.0.0.1:7400|aaaa"); /* where the leader is */
    assert_ok(pf_lease_read_holder(rb, key, holder, sizeof holder, &err), err);
    assert_string_equal(holder, "10.0.0.1:7400|aaaa");

    /* acquiring again while holding it is fine and keeps it ours */
    int64_t renewed = a.state.renewed_at;
    assert_ok(pf_lease_acquire(&a, &won, &err), err);
    assert_true(won);
    assert_true(a.state.renewed_at >= renewed);
    const char *const pttl[] = {"PTTL", key};
    long long left;
    assert_ok(pf_redis_command_integer(ra, 2, pttl, NULL, &left, &err), err);
    assert_true(left > 0);
    pf_redis_destroy(ra);
    pf_redis_destroy(rb);
}

static void test_lease_renew_only_by_holder(void **state)
{
    (void)state;
    const char *key = "pf:test:lease:renew";
    struct pf_redis *ra = connect_ok(), *rb = connect_ok();
    del_key(ra, key);
    struct pf_lease a, b;
    lease_init_ok(&a, ra, key, "a", TTL_LONG);
    lease_init_ok(&b, rb, key, "b", TTL_LONG);
    struct pf_error err;
    bool ok;
    assert_ok(pf_lease_acquire(&a, &ok, &err), err);
    assert_true(ok);

    assert_ok(pf_lease_renew(&b, &ok, &err), err);
    assert_false(ok);
    assert_false(b.state.held);
    assert_string_equal(b.state.holder, "a");
    char holder[PF_LEASE_ID_MAX];
    assert_ok(pf_lease_read_holder(ra, key, holder, sizeof holder, &err), err);
    assert_string_equal(holder, "a");

    int64_t before = a.state.renewed_at;
    pf_time_sleep_ms(5);
    assert_ok(pf_lease_renew(&a, &ok, &err), err);
    assert_true(ok);
    assert_true(a.state.renewed_at > before);
    assert_true(pf_lease_state_is_holder(&a.state, pf_time_mono_ms()));

    /* refresh picks renew for the holder and acquire for the other */
    assert_ok(pf_lease_refresh(&a, &err), err);
    assert_true(a.state.held);
    assert_ok(pf_lease_refresh(&b, &err), err);
    assert_false(b.state.held);
    pf_redis_destroy(ra);
    pf_redis_destroy(rb);
}

static void test_lease_expiry_lets_another_in(void **state)
{
    (void)state;
    const char *key = "pf:test:lease:expiry";
    struct pf_redis *ra = connect_ok(), *rb = connect_ok();
    del_key(ra, key);
    struct pf_lease a, b;
    lease_init_ok(&a, ra, key, "a", 300);
    lease_init_ok(&b, rb, key, "b", 300);
    struct pf_error err;
    bool ok;
    assert_ok(pf_lease_acquire(&a, &ok, &err), err);
    assert_true(ok);
    int64_t acquired = pf_time_mono_ms();
    assert_ok(pf_lease_acquire(&b, &ok, &err), err);
    assert_false(ok);

    pf_time_sleep_ms(1000); /* well past the TTL; a stops believing in it by itself */
    assert_false(pf_lease_state_is_holder(&a.state, pf_time_mono_ms()));
    assert_true(pf_lease_state_valid_until(&a.state) <= acquired + 300);

    assert_ok(pf_lease_acquire(&b, &ok, &err), err);
    assert_true(ok);
    assert_true(pf_lease_state_is_holder(&b.state, pf_time_mono_ms()));
    /* the old holder's renew now fails and tells it who leads */
    assert_ok(pf_lease_renew(&a, &ok, &err), err);
    assert_false(ok);
    assert_false(a.state.held);
    assert_string_equal(a.state.holder, "b");
    pf_redis_destroy(ra);
    pf_redis_destroy(rb);
}

static void test_lease_release_compare_and_delete(void **state)
{
    (void)state;
    const char *key = "pf:test:lease:release";
    struct pf_redis *ra = connect_ok(), *rb = connect_ok();
    del_key(ra, key);
    struct pf_lease a, b;
    lease_init_ok(&a, ra, key, "a", TTL_LONG);
    lease_init_ok(&b, rb, key, "b", TTL_LONG);
    struct pf_error err;
    bool ok, released;
    assert_ok(pf_lease_acquire(&a, &ok, &err), err);
    assert_true(ok);

    assert_ok(pf_lease_release(&b, &released, &err), err);
    assert_false(released);
    char holder[PF_LEASE_ID_MAX];
    assert_ok(pf_lease_read_holder(rb, key, holder, sizeof holder, &err), err);
    assert_string_equal(holder, "a");

    assert_ok(pf_lease_release(&a, &released, &err), err);
    assert_true(released);
    assert_false(a.state.held);
    assert_false(pf_lease_state_is_holder(&a.state, pf_time_mono_ms()));
    assert_int_equal(pf_lease_read_holder(ra, key, holder, sizeof holder, &err), PF_E_NOT_FOUND);
    assert_ok(pf_lease_release(&a, NULL, &err), err); /* again: nothing to delete */

    /* free now: the other takes it at once */
    assert_ok(pf_lease_acquire(&b, &ok, &err), err);
    assert_true(ok);
    pf_redis_destroy(ra);
    pf_redis_destroy(rb);
}

static void test_lease_survives_script_flush(void **state)
{
    (void)state;
    const char *key = "pf:test:lease:flush";
    struct pf_redis *r = connect_ok();
    del_key(r, key);
    struct pf_lease a;
    lease_init_ok(&a, r, key, "a", TTL_LONG);
    struct pf_error err;
    bool ok;
    assert_ok(pf_lease_acquire(&a, &ok, &err), err);
    assert_ok(pf_lease_renew(&a, &ok, &err), err); /* loads the script */
    assert_true(ok);
    assert_int_equal(strlen(a.extend_sha), 40);
    const char *const flush[] = {"SCRIPT", "FLUSH"};
    command_ok(r, 2, flush);
    assert_ok(pf_lease_renew(&a, &ok, &err), err); /* NOSCRIPT, loaded again */
    assert_true(ok);
    command_ok(r, 2, flush);
    bool released;
    assert_ok(pf_lease_release(&a, &released, &err), err);
    assert_true(released);
    pf_redis_destroy(r);
}

static void test_read_holder_limits(void **state)
{
    (void)state;
    const char *key = "pf:test:lease:long";
    struct pf_redis *r = connect_ok();
    char value[400];
    memset(value, 'v', sizeof value - 1);
    value[sizeof value - 1] = '\0';
    const char *const set[] = {"SET", key, value};
    command_ok(r, 3, set);
    char holder[PF_LEASE_ID_MAX];
    struct pf_error err;
    assert_int_equal(pf_lease_read_holder(r, key, holder, sizeof holder, &err), PF_E_OUT_OF_RANGE);
    assert_string_equal(holder, "");
    char tiny[4];
    const char *const set_short[] = {"SET", key, "abcd"};
    command_ok(r, 3, set_short);
    assert_int_equal(pf_lease_read_holder(r, key, tiny, sizeof tiny, &err), PF_E_OUT_OF_RANGE);
    const char *const set_nul[] = {"SET", key, "a\0b"};
    const size_t set_nul_len[] = {3, strlen(key), 3};
    assert_ok(pf_redis_command(r, 3, set_nul, set_nul_len, NULL, &err), err);
    assert_int_equal(pf_lease_read_holder(r, key, holder, sizeof holder, &err), PF_E_INTERNAL);
    assert_int_equal(pf_lease_read_holder(r, "", holder, sizeof holder, &err), PF_E_INVALID);
    assert_int_equal(pf_lease_read_holder(r, key, NULL, 10, &err), PF_E_INVALID);
    /* a key of another type is not a lease */
    del_key(r, key);
    const char *const lpush[] = {"LPUSH", key, "x"};
    command_ok(r, 3, lpush);
    assert_int_equal(pf_lease_read_holder(r, key, holder, sizeof holder, &err), PF_E_PRECONDITION);
    del_key(r, key);
    pf_redis_destroy(r);
}

/* Several threads use one key as a lock (pf-discovery's single prober):
 * never two inside at once. */
struct contender {
    atomic_int *inside;
    atomic_bool *overlap;
    int wins;
    int index;
    enum pf_status st;
    struct pf_error err;
};

static void *contend(void *arg)
{
    struct contender *c = arg;
    struct pf_redis *r = NULL;
    c->st = pf_redis_create(redis_url(), NULL, &r, &c->err);
    if (c->st != PF_OK)
        return NULL;
    char id[32];
    snprintf(id, sizeof id, "prober-%d", c->index);
    struct pf_lease lock;
    c->st = pf_lease_init(&lock, r, "pf:test:prober", id, TTL_LONG, 0, &c->err);
    for (int i = 0; i < 60 && c->st == PF_OK; i++) {
        bool won;
        c->st = pf_lease_acquire(&lock, &won, &c->err);
        if (c->st != PF_OK || !won)
            continue;
        c->wins++;
        if (atomic_fetch_add(c->inside, 1) != 0)
            atomic_store(c->overlap, true);
        pf_time_sleep_ms(2);
        atomic_fetch_sub(c->inside, 1);
        bool released;
        c->st = pf_lease_release(&lock, &released, &c->err);
        if (c->st == PF_OK && !released)
            atomic_store(c->overlap, true);
    }
    pf_redis_destroy(r);
    return NULL;
}

static void test_lock_mutual_exclusion(void **state)
{
    (void)state;
    struct pf_redis *r = connect_ok();
    del_key(r, "pf:test:prober");
    atomic_int inside = 0;
    atomic_bool overlap = false;
    struct contender cs[4];
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        cs[i] = (struct contender){.inside = &inside, .overlap = &overlap, .index = i};
        assert_int_equal(pthread_create(&threads[i], NULL, contend, &cs[i]), 0);
    }
    int wins = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        assert_ok(cs[i].st, cs[i].err);
        wins += cs[i].wins;
    }
    assert_false(atomic_load(&overlap));
    assert_true(wins > 0);
    char holder[PF_LEASE_ID_MAX];
    struct pf_error err;
    assert_int_equal(pf_lease_read_holder(r, "pf:test:prober", holder, sizeof holder, &err),
                     PF_E_NOT_FOUND);
    pf_redis_destroy(r);
}

/* Runs redis.sh ACTION on the test server; start reuses its port. */
static int harness_redis(const char *action)
{
    char cmd[1024];
    const char *port = strrchr(server_target(), ':') + 1;
    snprintf(cmd, sizeof cmd, "bash '%s/redis.sh' %s '%s' %s >/dev/null",
             getenv("PF_TEST_HARNESS_DIR"), action, getenv("PF_TEST_REDIS_DIR"),
             strcmp(action, "start") == 0 ? port : "");
    return system(cmd);
}

/* Redis goes away under a held lease and comes back empty (no persistence). */
static void test_redis_restart(void **state)
{
    (void)state;
    if (getenv("PF_TEST_HARNESS_DIR") == NULL || getenv("PF_TEST_REDIS_DIR") == NULL)
        skip();
    const char *key = "pf:test:lease:restart";
    struct pf_redis *r = connect_ok();
    del_key(r, key);
    struct pf_lease a;
    lease_init_ok(&a, r, key, "a", 60000);
    struct pf_error err;
    bool ok;
    assert_ok(pf_lease_acquire(&a, &ok, &err), err);
    assert_ok(pf_lease_renew(&a, &ok, &err), err);
    assert_true(ok);

    int stopped = harness_redis("stop");
    enum pf_status ping_down = pf_redis_ping(r, &err);
    char ping_msg[PF_ERROR_MSG_MAX];
    memcpy(ping_msg, err.msg, sizeof ping_msg);
    enum pf_status renew_down = pf_lease_renew(&a, &ok, &err);
    bool held_while_down = a.state.held;
    bool holder_while_down = pf_lease_state_is_holder(&a.state, pf_time_mono_ms());
    int started = harness_redis("start"); /* before any assert: the server must come back */
    assert_int_equal(stopped, 0);
    assert_int_equal(started, 0);

    assert_int_equal(ping_down, PF_E_UNAVAILABLE);
    char expect[128];
    snprintf(expect, sizeof expect, "redis at %s is unavailable: connection refused",
             server_target());
    assert_string_equal(ping_msg, expect);
    /* Redis down: the renew fails, the state keeps deciding by time */
    assert_int_equal(renew_down, PF_E_UNAVAILABLE);
    assert_true(held_while_down);
    assert_true(holder_while_down);

    /* back, empty: our key and the script cache are gone */
    assert_ok(pf_redis_ping(r, &err), err);
    assert_ok(pf_lease_renew(&a, &ok, &err), err);
    assert_false(ok);
    assert_false(a.state.held);
    assert_ok(pf_lease_acquire(&a, &ok, &err), err);
    assert_true(ok);
    bool released;
    assert_ok(pf_lease_release(&a, &released, &err), err);
    assert_true(released);
    pf_redis_destroy(r);
}

int main(void)
{
    if (redis_url() == NULL || strncmp(redis_url(), "redis://", 8) != 0) {
        fprintf(stderr, "test_redis: PF_TEST_REDIS_URL is not set; run it through "
                        "tests/db/run_with_servers.sh\n");
        return 1;
    }
    pf_log_init(PF_LOG_INFO, "test_redis");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parse_good),
        cmocka_unit_test(test_url_parse_bad),
        cmocka_unit_test(test_redact),
        cmocka_unit_test(test_error_classification_pure),
        cmocka_unit_test(test_connect_ok),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_auth_refused),
        cmocka_unit_test(test_select_database),
        cmocka_unit_test(test_binary_safe_arguments),
        cmocka_unit_test(test_error_replies),
        cmocka_unit_test(test_reconnect_after_client_kill),
        cmocka_unit_test(test_command_timeout),
        cmocka_unit_test(test_lease_init_validates),
        cmocka_unit_test(test_lease_one_holder),
        cmocka_unit_test(test_lease_renew_only_by_holder),
        cmocka_unit_test(test_lease_expiry_lets_another_in),
        cmocka_unit_test(test_lease_release_compare_and_delete),
        cmocka_unit_test(test_lease_survives_script_flush),
        cmocka_unit_test(test_read_holder_limits),
        cmocka_unit_test(test_lock_mutual_exclusion),
        cmocka_unit_test(test_redis_restart), /* last: restarts the server */
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
