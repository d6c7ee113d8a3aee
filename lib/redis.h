/* Redis plumbing over hiredis for the lease, the locks and pf-discovery's
 * entries: a client made from a redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]
 * URL with a connect timeout and a command timeout, commands sent only as
 * argument vectors (redisCommandArgv: binary safe, no format strings built
 * from values), reply type checks with clear errors, and reconnection on the
 * next use after the connection broke. When Redis cannot be reached the
 * status is PF_E_UNAVAILABLE with "redis at 127.0.0.1:6380 is unavailable:
 * connection refused"; passwords never appear in messages. A struct pf_redis
 * is used by one thread at a time. Replies are hiredis' own redisReply,
 * freed with freeReplyObject. */
#ifndef PF_REDIS_H
#define PF_REDIS_H

#include <hiredis/hiredis.h>
#include "status.h"

#define PF_REDIS_CONNECT_TIMEOUT_MS_DEFAULT 2000
#define PF_REDIS_COMMAND_TIMEOUT_MS_DEFAULT 2000
#define PF_REDIS_MAX_ARGS                   1024

/* A parsed URL. Embedded by value; holds no pointers. */
struct pf_redis_url {
    char host[256]; /* without brackets for IPv6 */
    int port;       /* default 6379 */
    int db;         /* default 0 */
    char user[128]; /* "" = none (AUTH with the password alone) */
    char password[256];
};

/* Parses redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] ("[::1]" for IPv6; user
 * and password may be %-encoded). PF_E_INVALID with a message that quotes the
 * URL without its password, also for rediss:// (TLS is not supported). Pure. */
enum pf_status pf_redis_url_parse(const char *url, struct pf_redis_url *out,
                                  struct pf_error *err) PF_MUST_CHECK;

/* Copies url into out (always NUL-terminated, cut if too small) without the
 * password of its user info, for messages and logs. Pure. */
void pf_redis_redact_url(const char *url, char *out, size_t out_size);

/* The status for an error reply, by its leading code: NOSCRIPT ->
 * PF_E_NOT_FOUND; LOADING, BUSY, MASTERDOWN, READONLY, TRYAGAIN, CLUSTERDOWN
 * -> PF_E_UNAVAILABLE; WRONGTYPE -> PF_E_PRECONDITION; NOAUTH, WRONGPASS ->
 * PF_E_UNAUTHENTICATED; NOPERM -> PF_E_PERMISSION; OOM -> PF_E_RESOURCE;
 * anything else (ERR ...) -> PF_E_INTERNAL. Pure. */
enum pf_status pf_redis_status_from_error(const char *error_text);

/* Checks that reply has the given REDIS_REPLY_* type; otherwise PF_E_INTERNAL
 * "redis command 'GET' returned an integer, expected a string" (an error
 * reply is classified with pf_redis_status_from_error instead). command names
 * the command in the message. Pure; reply stays the caller's. */
enum pf_status pf_redis_reply_expect(const redisReply *reply, int type, const char *command,
                                     struct pf_error *err) PF_MUST_CHECK;

/* Timeouts; 0 (or less) takes the default. */
struct pf_redis_options {
    int connect_timeout_ms;
    int command_timeout_ms; /* a reply later than this breaks the connection */
};

/* A client. Opaque; one thread at a time. */
struct pf_redis;

/* Parses url and connects now (AUTH and SELECT included). opts may be NULL.
 * PF_E_INVALID for a bad URL, PF_E_UNAVAILABLE when Redis cannot be reached,
 * PF_E_UNAUTHENTICATED when it refuses the credentials. On PF_OK *out is the
 * caller's, to free with pf_redis_destroy; otherwise *out is NULL. */
enum pf_status pf_redis_create(const char *url, const struct pf_redis_options *opts,
                               struct pf_redis **out, struct pf_error *err) PF_MUST_CHECK;

/* Closes and frees r. NULL is ignored. */
void pf_redis_destroy(struct pf_redis *r);

/* "HOST:PORT" of the server, for messages; owned by r. */
const char *pf_redis_target(const struct pf_redis *r);

/* Sends one command given as argc arguments (argvlen NULL: each is a C
 * string; otherwise argvlen[i] bytes, which may include NULs) and reads its
 * reply. Reconnects first when the connection was lost or the server closed
 * it while idle. An error reply becomes its status (pf_redis_status_from_error)
 * with "redis command 'SET' failed: ERR ..."; a broken connection or a reply
 * later than the command timeout is PF_E_UNAVAILABLE (the command may or may
 * not have run). On PF_OK and out != NULL, *out is the caller's reply (free
 * with freeReplyObject); otherwise *out is NULL. SIGPIPE from writing to a
 * closed socket is kept from the process. */
enum pf_status pf_redis_command(struct pf_redis *r, int argc, const char *const *argv,
                                const size_t *argvlen, redisReply **out,
                                struct pf_error *err) PF_MUST_CHECK;

/* pf_redis_command expecting an integer reply, stored in *out. */
enum pf_status pf_redis_command_integer(struct pf_redis *r, int argc, const char *const *argv,
                                        const size_t *argvlen, long long *out,
                                        struct pf_error *err) PF_MUST_CHECK;

/* pf_redis_command expecting a bulk or status string: *out is a malloc'd,
 * NUL-terminated copy for the caller to free, *len_out (may be NULL) its
 * length. A nil reply is PF_E_NOT_FOUND "redis command 'GET' returned nil". */
enum pf_status pf_redis_command_string(struct pf_redis *r, int argc, const char *const *argv,
                                       const size_t *argvlen, char **out, size_t *len_out,
                                       struct pf_error *err) PF_MUST_CHECK;

/* pf_redis_command expecting the status reply OK. */
enum pf_status pf_redis_command_ok(struct pf_redis *r, int argc, const char *const *argv,
                                   const size_t *argvlen, struct pf_error *err) PF_MUST_CHECK;

/* PING: PF_OK when Redis answers PONG (reconnecting if needed). */
enum pf_status pf_redis_ping(struct pf_redis *r, struct pf_error *err) PF_MUST_CHECK;

#endif
