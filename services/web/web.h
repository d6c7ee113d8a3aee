/* pf-web's shared pieces: the gateway context (upstream addresses, client
 * options, metrics), login sessions, and the request/response types the HTTP
 * layer (http.c) hands to the API handlers (api.c, events.c). */
#ifndef PF_WEB_H
#define PF_WEB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>
#include "buf.h"
#include "metrics.h"
#include "rpc/client.h"

#define PF_WEB_SESSION_ID_LEN 64 /* hex characters */
#define PF_WEB_TOKEN_MAX      512
#define PF_WEB_FIELDS_MAX     80
#define PF_WEB_SCHED_MAX      8 /* scheduler replicas named in --scheduler */

enum pf_web_role { PF_WEB_ROLE_VIEWER = 1, PF_WEB_ROLE_OPERATOR = 2 };

/* One logged-in browser: the scheduler token it typed and channels that send
 * it. Reference-counted: pf_web_session_put drops a reference. */
struct pf_web_session {
    char id[PF_WEB_SESSION_ID_LEN + 1];
    char token[PF_WEB_TOKEN_MAX + 1];
    enum pf_web_role role;
    struct pf_rpc_channel *sched;
    struct pf_rpc_channel *files;
    struct pf_rpc_channel *discovery; /* NULL without --discovery */
    int refs;                         /* guarded by the table's mutex */
    bool dead;
    int64_t last_used_ms;
};

struct pf_web_config {
    char *listen;
    char *admin_listen;
    char *log_level;
    char *tls_cert, *tls_key; /* HTTPS on --listen */
    char *tls_ca;             /* CA of the gRPC servers: turns client TLS on */
    char *grpc_cert, *grpc_key;
    char *tls_server_name;
    char *scheduler, *files, *discovery;
    uint64_t max_upload;
    int64_t timeout_ms;
    int64_t session_idle_ms;
    int64_t max_sessions;
    int64_t max_streams;
};

#define PF_WEB_BUNDLE_CACHE 256

/* A bundle manifest as JSON; content-addressed, so cached forever. */
struct pf_web_bundle_entry {
    char hex[65];
    char *json; /* owned; NULL = empty slot */
};

struct pf_web {
    const struct pf_web_config *cfg;
    struct pf_metrics *metrics;
    struct pf_metric *requests;     /* counter {route,code} */
    struct pf_metric *sessions_g;   /* gauge */
    struct pf_metric *streams_g;    /* gauge: open event streams */
    struct pf_metric *upstream_err; /* counter {service} */
    pthread_mutex_t lock;
    struct pf_web_session **sessions;                        /* cfg->max_sessions slots */
    char sched_targets[PF_WEB_SCHED_MAX][PF_RPC_TARGET_MAX]; /* from --scheduler */
    int n_sched;
    struct pf_web_bundle_entry bundles[PF_WEB_BUNDLE_CACHE]; /* guarded by lock */
    size_t bundle_next;
    atomic_int streams;
    atomic_bool stopping;
    bool https;
};

/* One form field from a request body (urlencoded or multipart). */
struct pf_web_field {
    char name[128];
    char filename[256];
    struct pf_buf value;
};

struct pf_web_request {
    const char *method;
    const char *path;
    struct pf_web_session *session; /* NULL when not logged in */
    struct pf_web_field fields[PF_WEB_FIELDS_MAX];
    size_t n_fields;
    const char *last_event_id; /* header, may be NULL */
    const char *query_after;   /* ?after=, may be NULL */
};

struct pf_web_response {
    int code;
    struct pf_buf body; /* JSON */
    char set_cookie[256];
};

/* ---- sessions (http.c) ---- */
enum pf_status pf_web_session_create(struct pf_web *w, const char *token, enum pf_web_role role,
                                     struct pf_web_session **out,
                                     struct pf_error *err) PF_MUST_CHECK;
/* A new reference to the live session with this id, or NULL. */
struct pf_web_session *pf_web_session_get(struct pf_web *w, const char *id);
void pf_web_session_put(struct pf_web *w, struct pf_web_session *s);
void pf_web_session_end(struct pf_web *w, struct pf_web_session *s);
/* A channel to target that sends token, with the --tls-* client settings. */
struct pf_rpc_channel *pf_web_channel(struct pf_web *w, const char *target, const char *token,
                                      struct pf_error *err);
/* Channels for a token (used at login before a session exists). */
enum pf_status pf_web_channels(struct pf_web *w, const char *token, struct pf_web_session *s,
                               struct pf_error *err) PF_MUST_CHECK;

/* ---- API (api.c) ---- */
/* A unary call to the scheduler on ch (a session's channel): the leader
 * redirect is followed by lib/rpc; when the call still ends UNAVAILABLE
 * (replica down, no leader hint), the other --scheduler addresses are tried
 * in turn and ch stays pointed at the one that answered. */
enum pf_status pf_web_sched_unary(struct pf_web *w, struct pf_rpc_channel *ch, const char *method,
                                  const ProtobufCMessage *req,
                                  const ProtobufCMessageDescriptor *reply_desc,
                                  ProtobufCMessage **reply, struct pf_error *err) PF_MUST_CHECK;
/* Points ch at the --scheduler address after its current one. */
void pf_web_sched_next(struct pf_web *w, struct pf_rpc_channel *ch);
/* Fills resp for an /api/ request (not the event stream). */
void pf_web_api(struct pf_web *w, struct pf_web_request *req, struct pf_web_response *resp);
/* The form field called name, or NULL. */
const struct pf_web_field *pf_web_field(const struct pf_web_request *req, const char *name);
/* {"error": msg} with code. */
void pf_web_error(struct pf_web_response *resp, int code, const char *fmt, ...) PF_PRINTF(3, 4);
/* HTTP status for an upstream failure. */
int pf_web_http_code(enum pf_status st);

/* ---- event stream (events.c) ---- */
struct pf_web_events;
/* Opens the scheduler's WatchEvents for the session, after `after` (0 with
 * only_new when the browser has no cursor). Takes a session reference. */
struct pf_web_events *pf_web_events_open(struct pf_web *w, struct pf_web_session *s, uint64_t after,
                                         bool have_after);
/* MHD content reader: fills buf with SSE text; blocks up to about a second. */
ssize_t pf_web_events_read(void *cls, uint64_t pos, char *buf, size_t max);
void pf_web_events_free(void *cls);

/* ---- static assets (generated from static/) ---- */
struct pf_web_asset {
    const char *path; /* "/app.js" */
    const char *type;
    const unsigned char *data;
    size_t len;
};
extern const struct pf_web_asset pf_web_assets[];
extern const size_t pf_web_asset_count;

int64_t pf_web_now_ms(void);

#endif
