/* pf-web's HTTP side (libmicrohttpd, one thread per connection so handlers may
 * block on gRPC): reads request bodies through MHD's post processor into form
 * fields with a hard size limit, keeps the login sessions (random id in an
 * HttpOnly SameSite=Strict cookie), serves the embedded page, and dispatches
 * /api/ to api.c and /api/events to events.c. */
#include "http.h"

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <microhttpd.h>

#include "config.h"
#include "log.h"
#include "rpc/tls.h"

#define COOKIE_NAME  "pfsession"
#define FIELD_MAX_SM (64 * 1024) /* non-file fields */
#define CONN_LIMIT   256

struct pf_web_http {
    struct pf_web *w;
    struct MHD_Daemon *daemon;
    struct sockaddr_storage addr;
    char *cert_pem, *key_pem;
    int port;
};

/* Per-request state kept between MHD's calls for one request. */
struct conn {
    struct pf_web_request req;
    struct MHD_PostProcessor *pp;
    uint64_t received;
    bool too_large, bad_body, unsupported;
    char bad_msg[160];
};

int64_t pf_web_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- sessions */

static void session_free(struct pf_web_session *s)
{
    pf_rpc_channel_destroy(s->sched);
    pf_rpc_channel_destroy(s->files);
    if (s->discovery != NULL)
        pf_rpc_channel_destroy(s->discovery);
    explicit_bzero(s->token, sizeof s->token);
    free(s);
}

struct pf_rpc_channel *pf_web_channel(struct pf_web *w, const char *target, const char *token,
                                      struct pf_error *err)
{
    struct pf_rpc_client_opts o = {0};
    o.tls = (struct pf_tls_files){w->cfg->grpc_cert, w->cfg->grpc_key, w->cfg->tls_ca};
    o.token = token;
    o.server_name = w->cfg->tls_server_name;
    return pf_rpc_channel_create(target, &o, err);
}

enum pf_status pf_web_channels(struct pf_web *w, const char *token, struct pf_web_session *s,
                               struct pf_error *err)
{
    s->sched = pf_web_channel(w, w->sched_targets[0], token, err);
    if (s->sched == NULL)
        return err->code;
    s->files = pf_web_channel(w, w->cfg->files, token, err);
    if (s->files == NULL)
        goto out_sched;
    if (w->cfg->discovery != NULL && w->cfg->discovery[0] != '\0') {
        s->discovery = pf_web_channel(w, w->cfg->discovery, token, err);
        if (s->discovery == NULL)
            goto out_files;
    }
    return PF_OK;
out_files:
    pf_rpc_channel_destroy(s->files);
    s->files = NULL;
out_sched:
    pf_rpc_channel_destroy(s->sched);
    s->sched = NULL;
    return err->code;
}

static void update_sessions_gauge(struct pf_web *w)
{
    int n = 0;
    for (int64_t i = 0; i < w->cfg->max_sessions; i++)
        n += w->sessions[i] != NULL;
    pf_metric_set(w->sessions_g, NULL, n);
}

enum pf_status pf_web_session_create(struct pf_web *w, const char *token, enum pf_web_role role,
                                     struct pf_web_session **out, struct pf_error *err)
{
    struct pf_web_session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory creating a session");
    unsigned char rnd[PF_WEB_SESSION_ID_LEN / 2];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        free(s);
        return pf_error_set(err, PF_E_INTERNAL, "getrandom failed: %s", strerror(errno));
    }
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(s->id + 2 * i, 3, "%02x", rnd[i]);
    snprintf(s->token, sizeof s->token, "%s", token);
    s->role = role;
    s->refs = 1; /* the table's */
    s->last_used_ms = pf_web_now_ms();
    if (pf_web_channels(w, token, s, err) != PF_OK) {
        free(s);
        return err->code;
    }
    pthread_mutex_lock(&w->lock);
    int64_t slot = -1, oldest = -1;
    int64_t now = pf_web_now_ms();
    for (int64_t i = 0; i < w->cfg->max_sessions; i++) {
        struct pf_web_session *o = w->sessions[i];
        if (o != NULL && now - o->last_used_ms > w->cfg->session_idle_ms) {
            o->dead = true; /* expired: reuse the slot */
            w->sessions[i] = NULL;
            if (--o->refs == 0)
                session_free(o);
            o = NULL;
        }
        if (o == NULL && slot < 0)
            slot = i;
        if (o != NULL && (oldest < 0 || o->last_used_ms < w->sessions[oldest]->last_used_ms))
            oldest = i;
    }
    if (slot < 0) { /* full: the least recently used session is logged out */
        struct pf_web_session *o = w->sessions[oldest];
        o->dead = true;
        w->sessions[oldest] = NULL;
        if (--o->refs == 0)
            session_free(o);
        slot = oldest;
    }
    w->sessions[slot] = s;
    s->refs++; /* the caller's */
    update_sessions_gauge(w);
    pthread_mutex_unlock(&w->lock);
    *out = s;
    return PF_OK;
}

struct pf_web_session *pf_web_session_get(struct pf_web *w, const char *id)
{
    if (id == NULL || strlen(id) != PF_WEB_SESSION_ID_LEN)
        return NULL;
    struct pf_web_session *found = NULL;
    int64_t now = pf_web_now_ms();
    pthread_mutex_lock(&w->lock);
    for (int64_t i = 0; i < w->cfg->max_sessions; i++) {
        struct pf_web_session *s = w->sessions[i];
        if (s == NULL || strcmp(s->id, id) != 0)
            continue;
        if (now - s->last_used_ms > w->cfg->session_idle_ms) {
            s->dead = true;
            w->sessions[i] = NULL;
            if (--s->refs == 0)
                session_free(s);
            update_sessions_gauge(w);
        } else {
            s->last_used_ms = now;
            s->refs++;
            found = s;
        }
        break;
    }
    pthread_mutex_unlock(&w->lock);
    return found;
}

void pf_web_session_put(struct pf_web *w, struct pf_web_session *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&w->lock);
    if (last)
        session_free(s);
}

void pf_web_session_end(struct pf_web *w, struct pf_web_session *s)
{
    pthread_mutex_lock(&w->lock);
    for (int64_t i = 0; i < w->cfg->max_sessions; i++) {
        if (w->sessions[i] == s) {
            w->sessions[i] = NULL;
            s->dead = true;
            s->refs--; /* the table's; the caller still holds one */
        }
    }
    update_sessions_gauge(w);
    pthread_mutex_unlock(&w->lock);
}

/* ---------------------------------------------------------------- bodies */

static enum MHD_Result post_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *filename, const char *content_type,
                                 const char *transfer_encoding, const char *data, uint64_t off,
                                 size_t size)
{
    struct conn *c = cls;
    struct pf_web_request *r = &c->req;
    struct pf_web_field *f = NULL;
    if (c->too_large || c->bad_body)
        return MHD_YES;
    /* A continuation of the last field, or a new one. */
    if (r->n_fields > 0 && off > 0 && strcmp(r->fields[r->n_fields - 1].name, key) == 0)
        f = &r->fields[r->n_fields - 1];
    if (f == NULL) {
        if (r->n_fields == PF_WEB_FIELDS_MAX) {
            c->bad_body = true;
            snprintf(c->bad_msg, sizeof c->bad_msg, "too many form fields (at most %d)",
                     PF_WEB_FIELDS_MAX);
            return MHD_YES;
        }
        f = &r->fields[r->n_fields++];
        snprintf(f->name, sizeof f->name, "%s", key);
        snprintf(f->filename, sizeof f->filename, "%s", filename != NULL ? filename : "");
        pf_buf_init(&f->value, filename != NULL ? 0 : FIELD_MAX_SM);
    }
    if (size > 0 && pf_buf_append(&f->value, data, size) != PF_OK) {
        c->bad_body = true;
        snprintf(c->bad_msg, sizeof c->bad_msg, "form field '%.60s' is longer than %d bytes", key,
                 FIELD_MAX_SM);
    }
    return MHD_YES;
}

static void conn_free(struct conn *c)
{
    if (c->pp != NULL)
        MHD_destroy_post_processor(c->pp);
    for (size_t i = 0; i < c->req.n_fields; i++)
        pf_buf_release(&c->req.fields[i].value);
    free(c);
}

static void completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    struct pf_web_http *h = cls;
    struct conn *c = *con_cls;
    if (c == NULL)
        return;
    pf_web_session_put(h->w, c->req.session);
    conn_free(c);
    *con_cls = NULL;
}

/* ---------------------------------------------------------------- responses */

static enum MHD_Result send_buf(struct pf_web_http *h, struct MHD_Connection *mc, const char *route,
                                int code, const char *type, const void *data, size_t len, bool copy,
                                const char *cookie)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, (void *)data, copy ? MHD_RESPMEM_MUST_COPY : MHD_RESPMEM_PERSISTENT);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    if (cookie != NULL && cookie[0] != '\0')
        MHD_add_response_header(r, "Set-Cookie", cookie);
    enum MHD_Result ret = MHD_queue_response(mc, (unsigned)code, r);
    MHD_destroy_response(r);
    char codes[8];
    snprintf(codes, sizeof codes, "%d", code);
    const char *labels[2] = {route, codes};
    pf_metric_add(h->w->requests, labels, 1);
    return ret;
}

static enum MHD_Result send_json(struct pf_web_http *h, struct MHD_Connection *mc,
                                 const char *route, struct pf_web_response *resp)
{
    const char *body = resp->body.data != NULL ? resp->body.data : "{}";
    size_t len = resp->body.data != NULL ? resp->body.len : 2;
    enum MHD_Result ret = send_buf(h, mc, route, resp->code, "application/json; charset=utf-8",
                                   body, len, true, resp->set_cookie);
    pf_buf_release(&resp->body);
    return ret;
}

static enum MHD_Result send_error(struct pf_web_http *h, struct MHD_Connection *mc,
                                  const char *route, int code, const char *msg)
{
    struct pf_web_response resp = {0};
    pf_buf_init(&resp.body, 0);
    pf_web_error(&resp, code, "%s", msg);
    return send_json(h, mc, route, &resp);
}

/* ---------------------------------------------------------------- routing */

static const struct pf_web_asset *asset(const char *url)
{
    if (strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0)
        url = "/index.html";
    for (size_t i = 0; i < pf_web_asset_count; i++)
        if (strcmp(pf_web_assets[i].path, url) == 0)
            return &pf_web_assets[i];
    return NULL;
}

/* Browsers send Origin on every cross-site POST: one naming another site
 * is refused (SameSite=Strict already keeps the cookie away; this is the
 * second lock). Non-browser clients send no Origin and pass. */
static bool same_origin(struct MHD_Connection *mc)
{
    const char *origin = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Origin");
    const char *host = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Host");
    if (origin == NULL)
        return true;
    if (host == NULL)
        return false;
    const char *sep = strstr(origin, "://");
    return sep != NULL && strcmp(sep + 3, host) == 0;
}

static enum MHD_Result serve_events(struct pf_web_http *h, struct MHD_Connection *mc,
                                    struct conn *c)
{
    struct pf_web_request *r = &c->req;
    const char *cursor = r->last_event_id != NULL ? r->last_event_id : r->query_after;
    uint64_t after = 0;
    bool have_after = false;
    if (cursor != NULL && cursor[0] != '\0') {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(cursor, &end, 10);
        if (errno != 0 || *end != '\0' || cursor[0] == '-')
            return send_error(h, mc, "events", 400,
                              "event cursor must be a non-negative integer (Last-Event-ID or "
                              "?after=)");
        after = v;
        have_after = true;
    }
    if (atomic_load(&h->w->streams) >= h->w->cfg->max_streams)
        return send_error(h, mc, "events", 503, "too many open event streams; try again later");
    struct pf_web_events *ev = pf_web_events_open(h->w, r->session, after, have_after);
    if (ev == NULL)
        return send_error(h, mc, "events", 500, "could not open the event stream");
    struct MHD_Response *resp = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, 16 * 1024, pf_web_events_read, ev, pf_web_events_free);
    if (resp == NULL) {
        pf_web_events_free(ev);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    enum MHD_Result ret = MHD_queue_response(mc, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    const char *labels[2] = {"events", "200"};
    pf_metric_add(h->w->requests, labels, 1);
    return ret;
}

static enum MHD_Result dispatch(struct pf_web_http *h, struct MHD_Connection *mc, struct conn *c)
{
    struct pf_web_request *r = &c->req;
    const char *url = r->path;
    if (strncmp(url, "/api/", 5) != 0 && strcmp(url, "/api") != 0) {
        const struct pf_web_asset *a = asset(url);
        if (a == NULL)
            return send_error(h, mc, "static", 404, "no such page");
        if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0)
            return send_error(h, mc, "static", 405, "pages are read with GET");
        return send_buf(h, mc, "static", 200, a->type, a->data, a->len, false, NULL);
    }
    if (c->too_large) {
        char msg[128];
        snprintf(msg, sizeof msg, "request body is larger than the limit of %llu bytes",
                 (unsigned long long)h->w->cfg->max_upload);
        return send_error(h, mc, "api", 413, msg);
    }
    if (c->unsupported)
        return send_error(h, mc, "api", 415,
                          "send form data (application/x-www-form-urlencoded or "
                          "multipart/form-data)");
    if (c->bad_body)
        return send_error(h, mc, "api", 400, c->bad_msg);
    if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0 && !same_origin(mc))
        return send_error(h, mc, "api", 403,
                          "cross-site request refused: the Origin does not match the Host");
    if (strcmp(url, "/api/events") == 0) {
        if (strcmp(r->method, "GET") != 0)
            return send_error(h, mc, "events", 405, "the event stream is read with GET");
        if (r->session == NULL)
            return send_error(h, mc, "events", 401, "not logged in");
        return serve_events(h, mc, c);
    }
    struct pf_web_response resp = {.code = 200};
    pf_buf_init(&resp.body, 0);
    pf_web_api(h->w, r, &resp);
    return send_json(h, mc, "api", &resp);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *mc, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    struct pf_web_http *h = cls;
    struct conn *c = *con_cls;
    if (c == NULL) {
        c = calloc(1, sizeof *c);
        if (c == NULL)
            return MHD_NO;
        *con_cls = c;
        c->req.method = method;
        c->req.path = url;
        c->req.session =
            pf_web_session_get(h->w, MHD_lookup_connection_value(mc, MHD_COOKIE_KIND, COOKIE_NAME));
        c->req.last_event_id = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Last-Event-ID");
        c->req.query_after = MHD_lookup_connection_value(mc, MHD_GET_ARGUMENT_KIND, "after");
        const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Content-Length");
        if (cl != NULL && strtoull(cl, NULL, 10) > h->w->cfg->max_upload)
            c->too_large = true;
        if (strcmp(method, "POST") == 0 && !c->too_large) {
            c->pp = MHD_create_post_processor(mc, 64 * 1024, post_iter, c);
            const char *ct = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Content-Type");
            if (c->pp == NULL && ct != NULL && ct[0] != '\0' && (cl == NULL || strcmp(cl, "0")))
                c->unsupported = true;
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        c->received += *upload_data_size;
        if (c->received > h->w->cfg->max_upload)
            c->too_large = true;
        if (c->pp != NULL && !c->too_large && !c->bad_body &&
            MHD_post_process(c->pp, upload_data, *upload_data_size) != MHD_YES) {
            c->bad_body = true;
            snprintf(c->bad_msg, sizeof c->bad_msg, "the request body is not valid form data");
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    return dispatch(h, mc, c);
}

/* ---------------------------------------------------------------- lifecycle */

static void mhd_logger(void *cls, const char *fm, va_list ap)
{
    char msg[256], q[300];
    vsnprintf(msg, sizeof msg, fm, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    pf_log_warn("http_error", "msg=%s", pf_log_quote(msg, q, sizeof q));
}

struct pf_web_http *pf_web_http_start(struct pf_web *w, struct pf_error *err)
{
    char host[256], port_text[16];
    int port;
    if (pf_config_parse_hostport(w->cfg->listen, host, sizeof host, &port, err) != PF_OK)
        return NULL;
    struct pf_web_http *h = calloc(1, sizeof *h);
    if (h == NULL) {
        pf_error_set(err, PF_E_RESOURCE, "out of memory");
        return NULL;
    }
    h->w = w;
    snprintf(port_text, sizeof port_text, "%d", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, port_text, &hints, &res);
    if (rc != 0) {
        pf_error_set(err, PF_E_INVALID, "could not listen on '%s': cannot resolve '%s': %s",
                     w->cfg->listen, host, gai_strerror(rc));
        goto out_free;
    }
    const struct addrinfo *pick = res;
    for (const struct addrinfo *it = res; it != NULL; it = it->ai_next)
        if (it->ai_family == AF_INET) {
            pick = it;
            break;
        }
    memcpy(&h->addr, pick->ai_addr, pick->ai_addrlen);
    freeaddrinfo(res);

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_ERROR_LOG | MHD_USE_POLL;
    if (h->addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (w->https) {
        if (pf_tls_read_pem(w->cfg->tls_cert, &h->cert_pem, err) != PF_OK)
            goto out_free;
        if (pf_tls_read_pem(w->cfg->tls_key, &h->key_pem, err) != PF_OK)
            goto out_free;
        flags |= MHD_USE_TLS;
    }
    errno = 0;
    if (w->https)
        h->daemon = MHD_start_daemon(
            flags, (uint16_t)port, NULL, NULL, handle, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, h,
            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&h->addr, MHD_OPTION_NOTIFY_COMPLETED,
            completed, h, MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONN_LIMIT,
            MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_HTTPS_MEM_CERT, h->cert_pem,
            MHD_OPTION_HTTPS_MEM_KEY, h->key_pem, MHD_OPTION_END);
    else
        h->daemon = MHD_start_daemon(
            flags, (uint16_t)port, NULL, NULL, handle, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, h,
            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&h->addr, MHD_OPTION_NOTIFY_COMPLETED,
            completed, h, MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONN_LIMIT,
            MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_END);
    if (h->daemon == NULL) {
        pf_error_set(err, PF_E_UNAVAILABLE, "could not listen on '%s': %s", w->cfg->listen,
                     errno != 0 ? strerror(errno) : "libmicrohttpd refused the settings");
        goto out_free;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info != NULL && info->port != 0 ? info->port : port;
    pf_log_info("listening", "listen=%s port=%d https=%s", w->cfg->listen, h->port,
                w->https ? "true" : "false");
    return h;

out_free:
    free(h->cert_pem);
    free(h->key_pem);
    free(h);
    return NULL;
}

void pf_web_http_stop(struct pf_web_http *h)
{
    if (h == NULL)
        return;
    MHD_stop_daemon(h->daemon);
    free(h->cert_pem);
    free(h->key_pem);
    free(h);
}
