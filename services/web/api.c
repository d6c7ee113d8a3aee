/* pf-web's JSON API under /api/: login and sessions, printers, jobs (list,
 * detail, submit with gcode upload, hold/release/cancel/priority/count),
 * printer actions (bed clear, release quarantine) and farm health. Each
 * handler validates its input first (400 with a message), then calls the
 * scheduler, pf-files or pf-discovery with the session's own token, so the
 * scheduler enforces roles; upstream statuses map to HTTP in one place
 * (pf_web_http_code). Runs on the connection's MHD thread and may block. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "digest.h"
#include "files_client.h"
#include "gcode_meta.h"
#include "log.h"
#include "pbjson.h"
#include "printfarm/v1/discovery.pb-c.h"
#include "printfarm/v1/files.pb-c.h"
#include "printfarm/v1/scheduler.pb-c.h"
#include "web.h"

#define SCHED(m)          "/printfarm.v1.Scheduler/" m
#define ID_MAX            128
#define PROFILE_MAX       64
#define FILES_MAX         16
#define LIST_PAGES_MAX    10
#define UPLOAD_TIMEOUT_MS 300000

/* ---------------------------------------------------------------- helpers */

void pf_web_error(struct pf_web_response *resp, int code, const char *fmt, ...)
{
    char msg[PF_ERROR_MSG_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    resp->code = code;
    pf_buf_reset(&resp->body);
    if (pf_buf_append(&resp->body, "{\"error\":", 9) != PF_OK ||
        pf_web_json_string(&resp->body, msg) != PF_OK || pf_buf_append(&resp->body, "}", 1))
        pf_buf_reset(&resp->body);
}

int pf_web_http_code(enum pf_status st)
{
    switch (st) {
    case PF_OK:
        return 200;
    case PF_E_INVALID:
    case PF_E_OUT_OF_RANGE:
        return 400;
    case PF_E_UNAUTHENTICATED:
        return 401;
    case PF_E_PERMISSION:
        return 403;
    case PF_E_NOT_FOUND:
        return 404;
    case PF_E_EXISTS:
    case PF_E_PRECONDITION:
    case PF_E_ABORTED:
        return 409;
    case PF_E_RESOURCE:
        return 413;
    case PF_E_UNAVAILABLE:
    case PF_E_DEADLINE:
    case PF_E_CANCELLED:
        return 503;
    default:
        return 502;
    }
}

const struct pf_web_field *pf_web_field(const struct pf_web_request *req, const char *name)
{
    for (size_t i = 0; i < req->n_fields; i++)
        if (strcmp(req->fields[i].name, name) == 0)
            return &req->fields[i];
    return NULL;
}

/* The text of a field, "" when absent. */
static const char *text(const struct pf_web_request *req, const char *name)
{
    const struct pf_web_field *f = pf_web_field(req, name);
    return f != NULL && f->value.data != NULL ? f->value.data : "";
}

/* Parses an optional integer field; false (resp filled) when malformed. */
static bool int_field(const struct pf_web_request *req, struct pf_web_response *resp,
                      const char *name, int64_t min, int64_t max, int64_t *out, bool *present)
{
    const char *t = text(req, name);
    *present = t[0] != '\0';
    if (!*present)
        return true;
    char *end;
    errno = 0;
    long long v = strtoll(t, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max || isspace((unsigned char)t[0])) {
        char q[48];
        snprintf(q, sizeof q, "%.40s", t);
        pf_web_error(resp, 400, "'%s' must be an integer from %" PRId64 " to %" PRId64 ", not '%s'",
                     name, min, max, q);
        return false;
    }
    *out = v;
    return true;
}

static bool valid_id(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && strchr("._-:", s[i]) == NULL)
            return false;
    return true;
}

static bool need_login(const struct pf_web_request *req, struct pf_web_response *resp)
{
    if (req->session != NULL)
        return true;
    pf_web_error(resp, 401, "not logged in: log in with a scheduler token");
    return false;
}

static bool need_operator(const struct pf_web_request *req, struct pf_web_response *resp)
{
    if (!need_login(req, resp))
        return false;
    if (req->session->role == PF_WEB_ROLE_OPERATOR)
        return true;
    pf_web_error(resp, 403, "viewers cannot change the farm: log in with an operator token");
    return false;
}

void pf_web_sched_next(struct pf_web *w, struct pf_rpc_channel *ch)
{
    char cur[PF_RPC_TARGET_MAX];
    struct pf_error err;
    pf_rpc_channel_target(ch, cur, sizeof cur);
    int next = 0;
    for (int i = 0; i < w->n_sched; i++)
        if (strcmp(cur, w->sched_targets[i]) == 0)
            next = (i + 1) % w->n_sched;
    if (strcmp(cur, w->sched_targets[next]) != 0 &&
        pf_rpc_channel_retarget(ch, w->sched_targets[next], &err) != PF_OK)
        pf_log_warn("retarget_failed", "target=%s error=\"%s\"", w->sched_targets[next], err.msg);
}

enum pf_status pf_web_sched_unary(struct pf_web *w, struct pf_rpc_channel *ch, const char *method,
                                  const ProtobufCMessage *req,
                                  const ProtobufCMessageDescriptor *reply_desc,
                                  ProtobufCMessage **reply, struct pf_error *err)
{
    enum pf_status st = pf_rpc_unary(ch, method, req, reply_desc, reply, w->cfg->timeout_ms, err);
    for (int i = 1; i < w->n_sched && st == PF_E_UNAVAILABLE; i++) {
        pf_web_sched_next(w, ch);
        st = pf_rpc_unary(ch, method, req, reply_desc, reply, w->cfg->timeout_ms, err);
    }
    return st;
}

/* A unary call; on failure fills resp with the mapped code and the message. */
static bool call(struct pf_web *w, struct pf_web_response *resp, struct pf_rpc_channel *ch,
                 const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *d, ProtobufCMessage **out)
{
    struct pf_error err;
    pf_error_clear(&err);
    enum pf_status st = strncmp(method, "/printfarm.v1.Scheduler/", 24) == 0
                            ? pf_web_sched_unary(w, ch, method, req, d, out, &err)
                            : pf_rpc_unary(ch, method, req, d, out, w->cfg->timeout_ms, &err);
    if (st == PF_OK)
        return true;
    int code = pf_web_http_code(err.code);
    if (code >= 500)
        pf_metric_inc1(w->upstream_err, strstr(method, "Files") != NULL       ? "files"
                                        : strstr(method, "Discovery") != NULL ? "discovery"
                                                                              : "scheduler");
    pf_web_error(resp, code, "%s", err.msg);
    return false;
}

static void reply_message(struct pf_web_response *resp, const ProtobufCMessage *msg)
{
    resp->code = 200;
    pf_buf_reset(&resp->body);
    if (pf_web_json_message(&resp->body, msg) != PF_OK)
        pf_web_error(resp, 500, "response too large");
}

/* ---------------------------------------------------------------- login */

static void login(struct pf_web *w, struct pf_web_request *req, struct pf_web_response *resp)
{
    const char *token = text(req, "token");
    if (token[0] == '\0')
        return pf_web_error(resp, 400, "type a scheduler token (operator or viewer)");
    if (strlen(token) > PF_WEB_TOKEN_MAX)
        return pf_web_error(resp, 400, "token is longer than %d characters", PF_WEB_TOKEN_MAX);
    for (const char *p = token; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            return pf_web_error(resp, 400, "a token has no spaces or control characters");

    /* Probe with the token's own channel: first a read (any role), then a
     * write that cannot change anything (UpdateJob with no id): a viewer gets
     * PERMISSION_DENIED before validation, an operator INVALID_ARGUMENT. */
    struct pf_web_session probe = {0};
    struct pf_error err;
    pf_error_clear(&err);
    if (pf_web_channels(w, token, &probe, &err) != PF_OK)
        return pf_web_error(resp, 500, "%s", err.msg);
    enum pf_web_role role = PF_WEB_ROLE_VIEWER;
    Printfarm__V1__ListPrintersRequest lp = PRINTFARM__V1__LIST_PRINTERS_REQUEST__INIT;
    lp.page_size = 1;
    ProtobufCMessage *reply = NULL;
    if (pf_web_sched_unary(w, probe.sched, SCHED("ListPrinters"), &lp.base,
                           &printfarm__v1__list_printers_response__descriptor, &reply,
                           &err) != PF_OK) {
        if (err.code == PF_E_UNAUTHENTICATED || err.code == PF_E_PERMISSION)
            pf_web_error(resp, 401, "the scheduler did not accept this token");
        else
            pf_web_error(resp, pf_web_http_code(err.code), "%s", err.msg);
        goto out_channels;
    }
    protobuf_c_message_free_unpacked(reply, NULL);
    reply = NULL;
    Printfarm__V1__UpdateJobRequest uj = PRINTFARM__V1__UPDATE_JOB_REQUEST__INIT;
    uj.id = "";
    enum pf_status st =
        pf_web_sched_unary(w, probe.sched, SCHED("UpdateJob"), &uj.base,
                           &printfarm__v1__update_job_response__descriptor, &reply, &err);
    if (reply != NULL)
        protobuf_c_message_free_unpacked(reply, NULL);
    if (st == PF_E_INVALID || st == PF_E_NOT_FOUND || st == PF_OK) {
        role = PF_WEB_ROLE_OPERATOR;
    } else if (st != PF_E_PERMISSION) {
        pf_web_error(resp, pf_web_http_code(st), "%s", err.msg);
        goto out_channels;
    }
    struct pf_web_session *s;
    if (pf_web_session_create(w, token, role, &s, &err) != PF_OK) {
        pf_web_error(resp, 500, "%s", err.msg);
        goto out_channels;
    }
    snprintf(resp->set_cookie, sizeof resp->set_cookie,
             "pfsession=%s; Path=/; HttpOnly; SameSite=Strict%s", s->id,
             w->https ? "; Secure" : "");
    const char *rn = role == PF_WEB_ROLE_OPERATOR ? "operator" : "viewer";
    pf_log_info("login", "role=%s session=%.8s", rn, s->id);
    pf_web_session_put(w, s);
    resp->code = 200;
    if (pf_buf_printf(&resp->body, "{\"role\":\"%s\"}", rn) != PF_OK)
        pf_web_error(resp, 500, "out of memory");
out_channels:
    pf_rpc_channel_destroy(probe.sched);
    pf_rpc_channel_destroy(probe.files);
    if (probe.discovery != NULL)
        pf_rpc_channel_destroy(probe.discovery);
    explicit_bzero(&err, sizeof err);
}

static void logout(struct pf_web *w, struct pf_web_request *req, struct pf_web_response *resp)
{
    if (req->session != NULL)
        pf_web_session_end(w, req->session);
    snprintf(resp->set_cookie, sizeof resp->set_cookie,
             "pfsession=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    resp->code = 200;
    if (pf_buf_printf(&resp->body, "{\"ok\":true}") != PF_OK)
        pf_web_error(resp, 500, "out of memory");
}

static void session_info(struct pf_web *w, struct pf_web_request *req, struct pf_web_response *resp)
{
    if (!need_login(req, resp))
        return;
    char target[PF_RPC_TARGET_MAX];
    pf_rpc_channel_target(req->session->sched, target, sizeof target);
    resp->code = 200;
    if (pf_buf_printf(&resp->body, "{\"role\":\"%s\",\"scheduler\":",
                      req->session->role == PF_WEB_ROLE_OPERATOR ? "operator" : "viewer") !=
            PF_OK ||
        pf_web_json_string(&resp->body, target) != PF_OK ||
        pf_buf_append(&resp->body, "}", 1) != PF_OK)
        pf_web_error(resp, 500, "out of memory");
}

/* ---------------------------------------------------------------- reads */

static void list_printers(struct pf_web *w, struct pf_web_request *req,
                          struct pf_web_response *resp)
{
    if (!need_login(req, resp))
        return;
    char page_token[512] = "";
    if (pf_buf_append(&resp->body, "{\"printers\":[", 13) != PF_OK)
        return pf_web_error(resp, 500, "out of memory");
    bool first = true;
    for (int page = 0; page < LIST_PAGES_MAX; page++) {
        Printfarm__V1__ListPrintersRequest r = PRINTFARM__V1__LIST_PRINTERS_REQUEST__INIT;
        r.page_size = 1000;
        r.page_token = page_token;
        Printfarm__V1__ListPrintersResponse *lr = NULL;
        if (!call(w, resp, req->session->sched, SCHED("ListPrinters"), &r.base,
                  &printfarm__v1__list_printers_response__descriptor, (ProtobufCMessage **)&lr))
            return;
        for (size_t i = 0; i < lr->n_printers; i++) {
            if ((!first && pf_buf_append(&resp->body, ",", 1) != PF_OK) ||
                pf_web_json_message(&resp->body, &lr->printers[i]->base) != PF_OK) {
                protobuf_c_message_free_unpacked(&lr->base, NULL);
                return pf_web_error(resp, 500, "response too large");
            }
            first = false;
        }
        snprintf(page_token, sizeof page_token, "%s",
                 lr->next_page_token != NULL ? lr->next_page_token : "");
        protobuf_c_message_free_unpacked(&lr->base, NULL);
        if (page_token[0] == '\0')
            break;
    }
    if (pf_buf_append(&resp->body, "]}", 2) != PF_OK)
        return pf_web_error(resp, 500, "response too large");
    resp->code = 200;
}

/* Appends "HEX": manifest JSON (or null) for a bundle, from the cache or
 * pf-files. */
static enum pf_status bundle_json(struct pf_web *w, struct pf_web_session *s, const char *hex,
                                  struct pf_buf *out)
{
    char *cached = NULL;
    pthread_mutex_lock(&w->lock);
    for (size_t i = 0; i < PF_WEB_BUNDLE_CACHE; i++)
        if (w->bundles[i].json != NULL && strcmp(w->bundles[i].hex, hex) == 0)
            cached = strdup(w->bundles[i].json);
    pthread_mutex_unlock(&w->lock);
    if (cached == NULL) {
        Printfarm__V1__GetBundleRequest r = PRINTFARM__V1__GET_BUNDLE_REQUEST__INIT;
        Printfarm__V1__Digest dg = PRINTFARM__V1__DIGEST__INIT;
        dg.sha256 = (char *)hex;
        r.digest = &dg;
        Printfarm__V1__GetBundleResponse *br = NULL;
        struct pf_error err;
        if (pf_rpc_unary(s->files, "/printfarm.v1.Files/GetBundle", &r.base,
                         &printfarm__v1__get_bundle_response__descriptor, (ProtobufCMessage **)&br,
                         w->cfg->timeout_ms, &err) != PF_OK)
            return pf_buf_printf(out, "null");
        struct pf_buf j;
        pf_buf_init(&j, 0);
        enum pf_status st = pf_web_json_message(&j, br->bundle ? &br->bundle->base : NULL);
        protobuf_c_message_free_unpacked(&br->base, NULL);
        if (st != PF_OK) {
            pf_buf_release(&j);
            return st;
        }
        cached = pf_buf_detach(&j, NULL);
        if (cached == NULL)
            return PF_E_RESOURCE;
        char *keep = strdup(cached);
        pthread_mutex_lock(&w->lock);
        struct pf_web_bundle_entry *e = &w->bundles[w->bundle_next++ % PF_WEB_BUNDLE_CACHE];
        free(e->json);
        snprintf(e->hex, sizeof e->hex, "%s", hex);
        e->json = keep;
        pthread_mutex_unlock(&w->lock);
    }
    enum pf_status st = pf_buf_append(out, cached, strlen(cached));
    free(cached);
    return st;
}

static void list_jobs(struct pf_web *w, struct pf_web_request *req, struct pf_web_response *resp)
{
    if (!need_login(req, resp))
        return;
    char page_token[512] = "";
    Printfarm__V1__ListJobsResponse *pages[LIST_PAGES_MAX] = {0};
    int n_pages = 0;
    for (; n_pages < LIST_PAGES_MAX; n_pages++) {
        Printfarm__V1__ListJobsRequest r = PRINTFARM__V1__LIST_JOBS_REQUEST__INIT;
        r.page_size = 500;
        r.page_token = page_token;
        if (!call(w, resp, req->session->sched, SCHED("ListJobs"), &r.base,
                  &printfarm__v1__list_jobs_response__descriptor,
                  (ProtobufCMessage **)&pages[n_pages]))
            goto out;
        snprintf(page_token, sizeof page_token, "%s",
                 pages[n_pages]->next_page_token ? pages[n_pages]->next_page_token : "");
        if (page_token[0] == '\0') {
            n_pages++;
            break;
        }
    }
    enum pf_status st = pf_buf_append(&resp->body, "{\"jobs\":[", 9);
    bool first = true;
    for (int p = 0; p < n_pages && st == PF_OK; p++)
        for (size_t i = 0; i < pages[p]->n_jobs && st == PF_OK; i++) {
            if (!first)
                st = pf_buf_append(&resp->body, ",", 1);
            first = false;
            if (st == PF_OK)
                st = pf_web_json_message(&resp->body, &pages[p]->jobs[i]->base);
        }
    if (st == PF_OK)
        st = pf_buf_append(&resp->body, "],\"bundles\":{", 13);
    /* Each distinct bundle once (searched for among those already written). */
    size_t bundles_at = resp->body.len;
    first = true;
    for (int p = 0; p < n_pages && st == PF_OK; p++)
        for (size_t i = 0; i < pages[p]->n_jobs && st == PF_OK; i++) {
            const Printfarm__V1__Job *j = pages[p]->jobs[i];
            if (j->bundle == NULL || j->bundle->sha256 == NULL ||
                !valid_id(j->bundle->sha256, 64) ||
                strstr(resp->body.data + bundles_at, j->bundle->sha256) != NULL)
                continue;
            if (!first)
                st = pf_buf_append(&resp->body, ",", 1);
            first = false;
            if (st == PF_OK)
                st = pf_web_json_string(&resp->body, j->bundle->sha256);
            if (st == PF_OK)
                st = pf_buf_append(&resp->body, ":", 1);
            if (st == PF_OK)
                st = bundle_json(w, req->session, j->bundle->sha256, &resp->body);
        }
    if (st == PF_OK)
        st = pf_buf_append(&resp->body, "}}", 2);
    if (st != PF_OK)
        pf_web_error(resp, 500, "response too large");
    else
        resp->code = 200;
out:
    for (int p = 0; p < LIST_PAGES_MAX; p++)
        if (pages[p] != NULL)
            protobuf_c_message_free_unpacked(&pages[p]->base, NULL);
}

static void get_job(struct pf_web *w, struct pf_web_request *req, struct pf_web_response *resp,
                    const char *id)
{
    if (!need_login(req, resp))
        return;
    Printfarm__V1__GetJobRequest r = PRINTFARM__V1__GET_JOB_REQUEST__INIT;
    r.id = (char *)id;
    ProtobufCMessage *out = NULL;
    if (!call(w, resp, req->session->sched, SCHED("GetJob"), &r.base,
              &printfarm__v1__get_job_response__descriptor, &out))
        return;
    reply_message(resp, out);
    protobuf_c_message_free_unpacked(out, NULL);
}

static void health(struct pf_web *w, struct pf_web_request *req, struct pf_web_response *resp)
{
    if (!need_login(req, resp))
        return;
    struct pf_web_session *s = req->session;
    Printfarm__V1__ListJobsRequest lj = PRINTFARM__V1__LIST_JOBS_REQUEST__INIT;
    lj.page_size = 1;
    ProtobufCMessage *out = NULL;
    struct pf_error err;
    pf_error_clear(&err);
    enum pf_status st =
        pf_web_sched_unary(w, s->sched, SCHED("ListJobs"), &lj.base,
                           &printfarm__v1__list_jobs_response__descriptor, &out, &err);
    if (out != NULL)
        protobuf_c_message_free_unpacked(out, NULL);
    char target[PF_RPC_TARGET_MAX];
    pf_rpc_channel_target(s->sched, target, sizeof target);
    struct pf_buf *b = &resp->body;
    enum pf_status rc = pf_buf_printf(b, "{\"scheduler\":{\"leader\":");
    if (rc == PF_OK)
        rc = pf_web_json_string(b, st == PF_OK ? target : "");
    if (rc == PF_OK)
        rc = pf_buf_printf(b, ",\"ok\":%s,\"error\":", st == PF_OK ? "true" : "false");
    if (rc == PF_OK)
        rc = pf_web_json_string(b, st == PF_OK ? "" : err.msg);
    if (rc == PF_OK)
        rc = pf_buf_printf(b, "},\"discovery\":");
    if (rc == PF_OK && s->discovery == NULL) {
        rc = pf_buf_printf(b, "null");
    } else if (rc == PF_OK) {
        Printfarm__V1__ListInstancesRequest li = PRINTFARM__V1__LIST_INSTANCES_REQUEST__INIT;
        out = NULL;
        pf_error_clear(&err);
        st = pf_rpc_unary(s->discovery, "/printfarm.v1.Discovery/List", &li.base,
                          &printfarm__v1__list_instances_response__descriptor, &out,
                          w->cfg->timeout_ms, &err);
        if (st == PF_OK) {
            rc = pf_web_json_message(b, out);
            protobuf_c_message_free_unpacked(out, NULL);
        } else {
            rc = pf_buf_printf(b, "{\"error\":");
            if (rc == PF_OK)
                rc = pf_web_json_string(b, err.msg);
            if (rc == PF_OK)
                rc = pf_buf_printf(b, "}");
        }
    }
    if (rc == PF_OK)
        rc = pf_buf_printf(b, "}");
    if (rc != PF_OK)
        return pf_web_error(resp, 500, "response too large");
    resp->code = 200;
}

/* ---------------------------------------------------------------- job actions */

static void update_job(struct pf_web *w, struct pf_web_request *req, struct pf_web_response *resp,
                       const char *id, const char *action)
{
    if (!need_operator(req, resp))
        return;
    Printfarm__V1__UpdateJobRequest r = PRINTFARM__V1__UPDATE_JOB_REQUEST__INIT;
    r.id = (char *)id;
    int64_t v;
    bool present;
    if (strcmp(action, "hold") == 0 || strcmp(action, "release") == 0) {
        r.set_hold_case = PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_HOLD_HOLD;
        r.hold = strcmp(action, "hold") == 0;
    } else if (strcmp(action, "priority") == 0) {
        if (!int_field(req, resp, "priority", INT32_MIN, INT32_MAX, &v, &present))
            return;
        if (!present)
            return pf_web_error(resp, 400, "give 'priority' (an integer)");
        r.set_priority_case = PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_PRIORITY_PRIORITY;
        r.priority = (int32_t)v;
    } else { /* count */
        if (!int_field(req, resp, "count", 1, 10000, &v, &present))
            return;
        if (!present)
            return pf_web_error(resp, 400, "give 'count' (1 to 10000)");
        r.set_count_case = PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_COUNT_COUNT;
        r.count = (uint32_t)v;
    }
    ProtobufCMessage *out = NULL;
    if (!call(w, resp, req->session->sched, SCHED("UpdateJob"), &r.base,
              &printfarm__v1__update_job_response__descriptor, &out))
        return;
    reply_message(resp, out);
    protobuf_c_message_free_unpacked(out, NULL);
}

static void cancel_job(struct pf_web *w, struct pf_web_request *req, struct pf_web_response *resp,
                       const char *id)
{
    if (!need_operator(req, resp))
        return;
    const char *running = text(req, "cancel_running");
    Printfarm__V1__CancelJobRequest r = PRINTFARM__V1__CANCEL_JOB_REQUEST__INIT;
    r.id = (char *)id;
    char reason[160];
    snprintf(reason, sizeof reason, "%s",
             text(req, "reason")[0] ? text(req, "reason") : "cancelled from pf-web");
    r.reason = reason;
    r.cancel_running = strcmp(running, "1") == 0 || strcmp(running, "true") == 0;
    ProtobufCMessage *out = NULL;
    if (!call(w, resp, req->session->sched, SCHED("CancelJob"), &r.base,
              &printfarm__v1__cancel_job_response__descriptor, &out))
        return;
    reply_message(resp, out);
    protobuf_c_message_free_unpacked(out, NULL);
}

/* ---------------------------------------------------------------- submit */

struct upload {
    const struct pf_web_field *f;
    char profile[PROFILE_MAX + 1];
    char hex[PF_DIGEST_HEX_LEN + 1];
    struct pf_gcode_meta meta;
    char slicer[PF_GCODE_META_NAME_MAX * 2 + 2];
    Printfarm__V1__BundleFile bf;
    Printfarm__V1__Digest dg;
    Printfarm__V1__GcodeMetadata md;
};

static bool valid_profile(const char *p)
{
    return valid_id(p, PROFILE_MAX);
}

static void submit(struct pf_web *w, struct pf_web_request *req, struct pf_web_response *resp)
{
    if (!need_operator(req, resp))
        return;
    int64_t count = 1, priority = 0;
    bool present;
    if (!int_field(req, resp, "count", 1, 10000, &count, &present) ||
        !int_field(req, resp, "priority", INT32_MIN, INT32_MAX, &priority, &present))
        return;
    const char *material = text(req, "material"), *colour = text(req, "colour");
    const char *queue = text(req, "queue"), *name = text(req, "name");
    if (strlen(material) > 64 || strlen(colour) > 64 || strlen(queue) > 128 || strlen(name) > 200)
        return pf_web_error(resp, 400, "material, colour (64), queue (128) or name (200) too long");
    const char *hold = text(req, "hold");

    static const char prefix[] = "gcode:";
    struct upload *ups = calloc(FILES_MAX, sizeof *ups);
    if (ups == NULL)
        return pf_web_error(resp, 500, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < req->n_fields; i++) {
        const struct pf_web_field *f = &req->fields[i];
        if (strncmp(f->name, prefix, sizeof prefix - 1) != 0)
            continue;
        const char *profile = f->name + sizeof prefix - 1;
        if (!valid_profile(profile)) {
            pf_web_error(resp, 400,
                         "profile name '%.64s' must be 1 to %d letters, digits, '.', '_' or '-'",
                         profile, PROFILE_MAX);
            goto out;
        }
        if (f->value.len == 0) {
            pf_web_error(resp, 400, "the gcode file for profile '%s' is empty", profile);
            goto out;
        }
        for (size_t k = 0; k < n; k++)
            if (strcmp(ups[k].profile, profile) == 0) {
                pf_web_error(resp, 400, "two gcode files for profile '%s': give one per profile",
                             profile);
                goto out;
            }
        if (n == FILES_MAX) {
            pf_web_error(resp, 400, "at most %d gcode files (one per profile)", FILES_MAX);
            goto out;
        }
        struct upload *u = &ups[n++];
        u->f = f;
        snprintf(u->profile, sizeof u->profile, "%s", profile);
    }
    if (n == 0) {
        pf_web_error(resp, 400, "attach at least one gcode file (form field 'gcode:PROFILE')");
        goto out;
    }

    /* Upload each file, then the manifest, then the job. */
    struct pf_error err;
    Printfarm__V1__BundleFile *bfp[FILES_MAX];
    for (size_t i = 0; i < n; i++) {
        struct upload *u = &ups[i];
        struct pf_digest d;
        pf_sha256(u->f->value.data, u->f->value.len, &d);
        pf_digest_to_hex(&d, u->hex);
        if (pf_gcode_meta_parse(u->f->value.data, u->f->value.len, &u->meta, &err) != PF_OK) {
            pf_web_error(resp, 400, "%s", err.msg);
            goto out;
        }
        if (u->meta.is_probably_binary) {
            pf_web_error(resp, 400, "'%.100s' does not look like text gcode", u->f->filename);
            goto out;
        }
        struct pf_files_upload_result res;
        if (pf_files_upload_buffer(req->session->files, u->f->value.data, u->f->value.len, &d,
                                   UPLOAD_TIMEOUT_MS, &res, &err) != PF_OK) {
            pf_web_error(resp, pf_web_http_code(err.code), "%s", err.msg);
            goto out;
        }
        pf_gcode_meta_slicer_label(&u->meta, u->slicer, sizeof u->slicer);
        printfarm__v1__bundle_file__init(&u->bf);
        printfarm__v1__digest__init(&u->dg);
        printfarm__v1__gcode_metadata__init(&u->md);
        u->dg.sha256 = u->hex;
        u->md.slicer = u->slicer;
        u->md.estimated_seconds = u->meta.estimated_seconds;
        u->md.filament_mm = u->meta.filament_mm;
        u->md.filament_g = u->meta.filament_g;
        u->md.material = u->meta.material;
        u->md.colour = u->meta.colour;
        u->md.printer_model = u->meta.printer_model;
        u->md.nozzle_mm = u->meta.nozzle_mm;
        u->bf.profile = u->profile;
        u->bf.digest = &u->dg;
        u->bf.size = u->f->value.len;
        u->bf.metadata = &u->md;
        bfp[i] = &u->bf;
    }
    char bname[201];
    if (name[0] != '\0') {
        snprintf(bname, sizeof bname, "%s", name);
    } else {
        snprintf(bname, sizeof bname, "%.200s",
                 ups[0].f->filename[0] ? ups[0].f->filename : "print");
        char *dot = strrchr(bname, '.');
        if (dot != NULL && dot != bname)
            *dot = '\0';
    }
    Printfarm__V1__Bundle b = PRINTFARM__V1__BUNDLE__INIT;
    b.name = bname;
    b.n_files = n;
    b.files = bfp;
    Printfarm__V1__PutBundleRequest pb = PRINTFARM__V1__PUT_BUNDLE_REQUEST__INIT;
    pb.bundle = &b;
    Printfarm__V1__PutBundleResponse *pr = NULL;
    if (!call(w, resp, req->session->files, "/printfarm.v1.Files/PutBundle", &pb.base,
              &printfarm__v1__put_bundle_response__descriptor, (ProtobufCMessage **)&pr))
        goto out;
    char bundle_hex[PF_DIGEST_HEX_LEN + 1];
    snprintf(bundle_hex, sizeof bundle_hex, "%s",
             pr->digest != NULL && pr->digest->sha256 != NULL ? pr->digest->sha256 : "");
    protobuf_c_message_free_unpacked(&pr->base, NULL);

    unsigned char rnd[12];
    char idem[32] = "web-";
    if (getrandom(rnd, sizeof rnd, 0) == (ssize_t)sizeof rnd)
        for (size_t i = 0; i < sizeof rnd; i++)
            snprintf(idem + 4 + 2 * i, 3, "%02x", rnd[i]);
    Printfarm__V1__SubmitJobRequest sr = PRINTFARM__V1__SUBMIT_JOB_REQUEST__INIT;
    Printfarm__V1__Digest dg = PRINTFARM__V1__DIGEST__INIT;
    Printfarm__V1__JobConstraints cons = PRINTFARM__V1__JOB_CONSTRAINTS__INIT;
    Printfarm__V1__MaterialRequirement mr = PRINTFARM__V1__MATERIAL_REQUIREMENT__INIT;
    Printfarm__V1__MaterialRequirement *mrp = &mr;
    dg.sha256 = bundle_hex;
    sr.bundle = &dg;
    sr.queue = (char *)queue;
    sr.name = (char *)name;
    sr.count = (uint32_t)count;
    sr.priority = (int32_t)priority;
    sr.idempotency_key = idem;
    sr.hold = strcmp(hold, "1") == 0 || strcmp(hold, "true") == 0 || strcmp(hold, "on") == 0;
    if (material[0] != '\0' || colour[0] != '\0') {
        mr.material = (char *)material;
        mr.colour = (char *)colour;
        cons.n_materials = 1;
        cons.materials = &mrp;
    }
    sr.constraints = &cons;
    ProtobufCMessage *out = NULL;
    if (!call(w, resp, req->session->sched, SCHED("SubmitJob"), &sr.base,
              &printfarm__v1__submit_job_response__descriptor, &out))
        goto out;
    reply_message(resp, out);
    protobuf_c_message_free_unpacked(out, NULL);
    pf_log_info("job_submitted", "bundle=%.12s files=%zu", bundle_hex, n);
out:
    free(ups);
}

/* ---------------------------------------------------------------- printers */

static void printer_action(struct pf_web *w, struct pf_web_request *req,
                           struct pf_web_response *resp, const char *id, const char *action)
{
    if (!need_operator(req, resp))
        return;
    ProtobufCMessage *out = NULL;
    if (strcmp(action, "clear") == 0) {
        Printfarm__V1__ConfirmBedClearRequest r = PRINTFARM__V1__CONFIRM_BED_CLEAR_REQUEST__INIT;
        r.printer_id = (char *)id;
        r.attempt_id = (char *)text(req, "attempt_id");
        if (r.attempt_id[0] != '\0' && !valid_id(r.attempt_id, ID_MAX))
            return pf_web_error(resp, 400, "malformed attempt_id");
        if (!call(w, resp, req->session->sched, SCHED("ConfirmBedClear"), &r.base,
                  &printfarm__v1__confirm_bed_clear_response__descriptor, &out))
            return;
    } else {
        Printfarm__V1__UpdatePrinterRequest r = PRINTFARM__V1__UPDATE_PRINTER_REQUEST__INIT;
        r.id = (char *)id;
        r.release_quarantine = true;
        if (!call(w, resp, req->session->sched, SCHED("UpdatePrinter"), &r.base,
                  &printfarm__v1__update_printer_response__descriptor, &out))
            return;
    }
    reply_message(resp, out);
    protobuf_c_message_free_unpacked(out, NULL);
}

/* ---------------------------------------------------------------- routing */

static bool is(const struct pf_web_request *req, const char *method)
{
    return strcmp(req->method, method) == 0;
}

void pf_web_api(struct pf_web *w, struct pf_web_request *req, struct pf_web_response *resp)
{
    const char *p = req->path + 4; /* after "/api" */
    char seg[4][ID_MAX + 2];
    int n = 0;
    while (*p == '/' && n < 4) {
        p++;
        size_t len = strcspn(p, "/");
        if (len > ID_MAX)
            return pf_web_error(resp, len > ID_MAX ? 400 : 404, "path segment too long");
        memcpy(seg[n], p, len);
        seg[n][len] = '\0';
        n++;
        p += len;
    }
    if (*p != '\0' || n == 0)
        return pf_web_error(resp, 404, "no such API endpoint '%.100s'", req->path);
    bool get = is(req, "GET"), post = is(req, "POST");
    const char *method_msg = NULL;

    if (n == 1 && strcmp(seg[0], "login") == 0) {
        if (post)
            return login(w, req, resp);
        method_msg = "POST";
    } else if (n == 1 && strcmp(seg[0], "logout") == 0) {
        if (post)
            return logout(w, req, resp);
        method_msg = "POST";
    } else if (n == 1 && strcmp(seg[0], "session") == 0) {
        if (get)
            return session_info(w, req, resp);
        method_msg = "GET";
    } else if (n == 1 && strcmp(seg[0], "health") == 0) {
        if (get)
            return health(w, req, resp);
        method_msg = "GET";
    } else if (n == 1 && strcmp(seg[0], "printers") == 0) {
        if (get)
            return list_printers(w, req, resp);
        method_msg = "GET";
    } else if (n == 1 && strcmp(seg[0], "jobs") == 0) {
        if (get)
            return list_jobs(w, req, resp);
        if (post)
            return submit(w, req, resp);
        method_msg = "GET or POST";
    } else if (n >= 2 && (strcmp(seg[0], "jobs") == 0 || strcmp(seg[0], "printers") == 0)) {
        bool jobs = seg[0][0] == 'j';
        if (!valid_id(seg[1], ID_MAX))
            return pf_web_error(resp, 400, "malformed %s id '%.64s'", jobs ? "job" : "printer",
                                seg[1]);
        if (jobs && n == 2) {
            if (get)
                return get_job(w, req, resp, seg[1]);
            method_msg = "GET";
        } else if (n == 3) {
            const char *a = seg[2];
            bool known = jobs ? (strcmp(a, "hold") == 0 || strcmp(a, "release") == 0 ||
                                 strcmp(a, "priority") == 0 || strcmp(a, "count") == 0 ||
                                 strcmp(a, "cancel") == 0)
                              : (strcmp(a, "clear") == 0 || strcmp(a, "release") == 0);
            if (!known)
                return pf_web_error(resp, 404, "no such action '%s' on %s", a,
                                    jobs ? "a job" : "a printer");
            if (!post) {
                method_msg = "POST";
            } else if (!jobs) {
                return printer_action(w, req, resp, seg[1], a);
            } else if (strcmp(a, "cancel") == 0) {
                return cancel_job(w, req, resp, seg[1]);
            } else {
                return update_job(w, req, resp, seg[1], a);
            }
        }
    }
    if (method_msg != NULL)
        return pf_web_error(resp, 405, "use %s on %s", method_msg, req->path);
    pf_web_error(resp, 404, "no such API endpoint '%.100s'", req->path);
}
