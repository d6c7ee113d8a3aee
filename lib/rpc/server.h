/* The gRPC C-core server loop shared by every Printfarm service: registered
 * methods of all four kinds (unary, client-streaming, server-streaming,
 * bidirectional), many calls in flight with one state machine per call,
 * deadlines, a maximum message size, bearer-token roles, TLS/mTLS,
 * grpc.health.v1.Health, and graceful shutdown on SIGTERM/SIGINT.
 * The call lifetime rules are in lib/rpc/README.md: read them before writing
 * a handler. */
#ifndef PF_RPC_SERVER_H
#define PF_RPC_SERVER_H

#include <stdint.h>
#include <protobuf-c/protobuf-c.h>
#include "metrics.h"
#include "workq.h"
#include "rpc/auth.h"
#include "rpc/tls.h"

enum pf_rpc_kind {
    PF_RPC_UNARY,
    PF_RPC_CLIENT_STREAM,
    PF_RPC_SERVER_STREAM,
    PF_RPC_BIDI,
};

/* One call of one method. Opaque; freed by the server after the last
 * reference is dropped (see README.md). */
struct pf_rpc_call;

/* A method served by the server. Every callback runs on the completion-queue
 * thread, one at a time per server, and must not block. */
struct pf_rpc_method {
    const char *path; /* "/printfarm.v1.Files/Upload" (copied) */
    enum pf_rpc_kind kind;
    unsigned roles;  /* pf_role bits allowed when tokens are on; 0 = no token needed */
    bool long_lived; /* watch-like: ended with UNAVAILABLE at once on shutdown */
    void *ctx;       /* the service, returned by pf_rpc_call_ctx */

    /* The call was accepted (token and deadline checked). For UNARY and
     * SERVER_STREAM, (req, len) is the request message, valid only during the
     * callback; for streaming-in kinds it is (NULL, 0) and messages follow. */
    void (*on_start)(struct pf_rpc_call *call, const uint8_t *req, size_t len);
    /* CLIENT_STREAM and BIDI: one received message, valid only during the
     * callback. Return true to receive the next one at once, false to receive
     * it later with pf_rpc_call_read_next (flow control). */
    bool (*on_message)(struct pf_rpc_call *call, const uint8_t *msg, size_t len);
    /* CLIENT_STREAM and BIDI: the client half-closed (sent its last message). */
    void (*on_half_close)(struct pf_rpc_call *call);
    /* Optional: every queued message has been written. */
    void (*on_writable)(struct pf_rpc_call *call);
    /* Optional: the RPC is over on the wire (status sent, or the client
     * cancelled, disconnected or hit its deadline: cancelled = true). Drop
     * references the service holds in its own structures here. */
    void (*on_close)(struct pf_rpc_call *call, bool cancelled);
    /* Optional: the last reference is gone; free the user state here. The
     * call is freed after it returns. */
    void (*on_free)(struct pf_rpc_call *call);
};

struct pf_rpc_server_opts {
    const char *listen;         /* "HOST:PORT"; port 0 picks a free port */
    struct pf_tls_files tls;    /* all NULL = plaintext */
    const struct pf_auth *auth; /* NULL = tokens off; borrowed, outlives the server */
    size_t max_message_bytes;   /* receive and send limit; 0 = 4 MiB + 64 KiB */
    size_t max_queued_bytes;    /* per call write queue bound; 0 = 16 MiB */
    /* Bound on the bytes queued by all calls together; 0 = 64 MiB. Past it,
     * calls whose write has been stuck for PF_RPC_STALL_MS are cancelled with
     * RESOURCE_EXHAUSTED, and a send that still does not fit ends its own
     * call the same way (a call with nothing queued may always queue one
     * message of up to PF_RPC_SMALL_MESSAGE). See README.md, "Clients that
     * do not read". */
    size_t max_total_queued_bytes;
    int64_t shutdown_grace_ms;  /* in-flight calls get this long on shutdown; 0 = 5000 */
    struct pf_metrics *metrics; /* borrowed; NULL = no rpc metrics */
    const char *name;           /* the service name for health, "printfarm.v1.Files" */
};

struct pf_rpc_server;

/* A write outstanding this long means the client is not reading. */
#define PF_RPC_STALL_MS 2000
/* A call with nothing queued may queue one message this small even when the
 * server is over max_total_queued_bytes. */
#define PF_RPC_SMALL_MESSAGE (64 * 1024)

/* Creates a server (not listening yet). Returns NULL with err set when the
 * TLS files cannot be read. */
struct pf_rpc_server *pf_rpc_server_create(const struct pf_rpc_server_opts *opts,
                                           struct pf_error *err);
/* Adds methods (copied). Only before pf_rpc_server_start. */
enum pf_status pf_rpc_server_add(struct pf_rpc_server *s, const struct pf_rpc_method *methods,
                                 size_t count, struct pf_error *err) PF_MUST_CHECK;
/* Binds and starts. PF_E_UNAVAILABLE when the address cannot be bound. */
enum pf_status pf_rpc_server_start(struct pf_rpc_server *s, struct pf_error *err) PF_MUST_CHECK;
int pf_rpc_server_port(const struct pf_rpc_server *s);
/* Runs the completion-queue loop on the calling thread until a stop is
 * requested (pf_rpc_server_request_stop or SIGTERM/SIGINT through
 * pf_signals_install), then shuts down gracefully: stops accepting, sets health
 * NOT_SERVING, ends long-lived calls with UNAVAILABLE, lets the others finish
 * for the grace period, cancels what is left, and returns when every call is
 * freed. */
void pf_rpc_server_run(struct pf_rpc_server *s);
/* Thread-safe. */
void pf_rpc_server_request_stop(struct pf_rpc_server *s);
/* Frees the server after pf_rpc_server_run returned (or if never started). */
void pf_rpc_server_destroy(struct pf_rpc_server *s);

/* Runs fn(arg) on the completion-queue thread every interval_ms (first run
 * after one interval). Only before pf_rpc_server_run. fn must not block. */
void pf_rpc_server_every(struct pf_rpc_server *s, int64_t interval_ms, void (*fn)(void *arg),
                         void *arg);

/* Sets the health of a service name ("" is the whole server). Thread-safe;
 * Health/Watch streams see the change. */
void pf_rpc_server_set_health(struct pf_rpc_server *s, const char *service, bool serving);

/* Installs SIGTERM/SIGINT handlers that make every running server stop, and
 * ignores SIGPIPE. Call once in main. */
void pf_signals_install(void);
bool pf_signals_stop_requested(void);

/* ---- the call API: thread-safe unless noted ---- */

void *pf_rpc_call_ctx(const struct pf_rpc_call *call);
const char *pf_rpc_call_method(const struct pf_rpc_call *call);
/* User state: set in on_start, freed in on_free. */
void pf_rpc_call_set_user(struct pf_rpc_call *call, void *user);
void *pf_rpc_call_user(const struct pf_rpc_call *call);
/* The caller's role and token name (PF_ROLE_NONE and "" when tokens are off). */
enum pf_role pf_rpc_call_role(const struct pf_rpc_call *call);
const char *pf_rpc_call_principal(const struct pf_rpc_call *call);
/* Copies request metadata `key` into out (NUL-terminated, truncated); false if absent. */
bool pf_rpc_call_metadata(const struct pf_rpc_call *call, const char *key, char *out,
                          size_t out_size);
/* Milliseconds until the client's deadline (INT64_MAX when none). */
int64_t pf_rpc_call_deadline_left_ms(const struct pf_rpc_call *call);

/* Keep a call alive beyond the current callback (e.g. across a worker job).
 * Every ref needs one unref; the last unref may free the call. */
void pf_rpc_call_ref(struct pf_rpc_call *call);
void pf_rpc_call_unref(struct pf_rpc_call *call);

/* Queues one message. PF_E_CANCELLED when the call is over or a status was
 * already given; PF_E_RESOURCE when the call's write queue is full (a client
 * that does not read), or when the server-wide bound is reached (the call has
 * then been ended with RESOURCE_EXHAUSTED already); the bytes are copied. */
enum pf_status pf_rpc_call_send(struct pf_rpc_call *call, const void *data, size_t len);
enum pf_status pf_rpc_call_send_msg(struct pf_rpc_call *call, const ProtobufCMessage *msg);
/* Bytes queued and not yet written. */
size_t pf_rpc_call_queued_bytes(struct pf_rpc_call *call);
/* Sets trailing metadata sent with the status (both copied). Before finish. */
void pf_rpc_call_set_trailer(struct pf_rpc_call *call, const char *key, const char *value);
/* Ends the call with a status after every queued message; only the first
 * finish counts. The message is what the client reads. */
void pf_rpc_call_finish(struct pf_rpc_call *call, enum pf_status code, const char *msg);
void pf_rpc_call_finish_err(struct pf_rpc_call *call, const struct pf_error *err);
/* Unary shorthand: one reply message and OK. */
void pf_rpc_call_reply(struct pf_rpc_call *call, const ProtobufCMessage *msg);
/* Asks for the next message after on_message returned false. */
void pf_rpc_call_read_next(struct pf_rpc_call *call);
/* True once the RPC is over on the wire, or a status was given. */
bool pf_rpc_call_done(struct pf_rpc_call *call);

/* Blocking work for a call: runs fn(call, data, len) on a worker of wq with a
 * copy of (data, len), holding a reference on the call until fn returns. When
 * the queue is full the call is finished with RESOURCE_EXHAUSTED instead.
 * Typical use: on_start of a unary method defers the whole request to a
 * worker, which replies with pf_rpc_call_reply / pf_rpc_call_finish. */
typedef void (*pf_rpc_work_fn)(struct pf_rpc_call *call, const uint8_t *data, size_t len);
void pf_rpc_call_defer(struct pf_rpc_call *call, struct pf_workq *wq, pf_rpc_work_fn fn,
                       const uint8_t *data, size_t len);

#endif
