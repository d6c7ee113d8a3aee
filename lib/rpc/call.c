/* The per-call state machine of the server: one struct pf_rpc_call per RPC,
 * driven by completion-queue events (accept, reads, writes, status, close) on
 * the server thread and by handlers that queue messages or give a status from
 * any thread. The rules it keeps are written down in lib/rpc/README.md. */
#include <stdio.h>
#include <stdlib.h>
#include <grpc/support/alloc.h>
#include <string.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/time.h>
#include "log.h"
#include "rpc/internal.h"
#include "rpc/pb.h"
#include "timeutil.h"

static void call_destroy(struct pf_rpc_call *c);

/* Adds delta to the call's queued bytes and, unless the call was evicted, to
 * the server's total (c->mu held). */
static void account_locked(struct pf_rpc_call *c, long long delta)
{
    c->queued_bytes = (size_t)((long long)c->queued_bytes + delta);
    if (!c->uncounted)
        atomic_fetch_add(&c->server->queued_total, delta);
}

struct pf_rpc_call *pf_rpc_call_new(struct pf_rpc_server *s, struct method_entry *e)
{
    struct pf_rpc_call *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->server = s;
    c->entry = e;
    pthread_mutex_init(&c->mu, NULL);
    atomic_init(&c->refs, 1); /* the server's own reference, dropped when nothing is pending */
    grpc_metadata_array_init(&c->req_md);
    grpc_call_details_init(&c->details);
    c->t_new = (struct pf_rpc_tag){TAG_NEW, c};
    c->t_close = (struct pf_rpc_tag){TAG_CLOSE, c};
    c->t_read = (struct pf_rpc_tag){TAG_READ, c};
    c->t_write = (struct pf_rpc_tag){TAG_WRITE, c};
    c->t_status = (struct pf_rpc_tag){TAG_STATUS, c};
    c->t_md = (struct pf_rpc_tag){TAG_MD, c};
    c->principal = "";
    atomic_fetch_add(&s->live, 1);
    return c;
}

/* Posts a request for the next call of c's method; c then waits for it. */
void pf_rpc_call_post(struct pf_rpc_call *c)
{
    struct pf_rpc_server *s = c->server;
    grpc_call_error rc;

    c->pending = 1;
    if (c->entry->registered != NULL) {
        bool with_payload =
            c->entry->m.kind == PF_RPC_UNARY || c->entry->m.kind == PF_RPC_SERVER_STREAM;
        rc = grpc_server_request_registered_call(
            s->server, c->entry->registered, &c->call, &c->deadline, &c->req_md,
            with_payload ? &c->payload : NULL, s->cq, s->cq, &c->t_new);
    } else {
        rc = grpc_server_request_call(s->server, &c->call, &c->details, &c->req_md, s->cq, s->cq,
                                      &c->t_new);
    }
    if (rc != GRPC_CALL_OK) {
        pf_log_error("rpc_request_failed", "code=%d", (int)rc);
        call_destroy(c);
    }
}

static void call_destroy(struct pf_rpc_call *c)
{
    struct pf_rpc_server *s = c->server;

    if (c->accepted && c->entry->m.on_free != NULL)
        c->entry->m.on_free(c);
    if (!c->uncounted && c->queued_bytes > 0)
        atomic_fetch_sub(&s->queued_total, (long long)c->queued_bytes);
    grpc_metadata_array_destroy(&c->req_md);
    grpc_call_details_destroy(&c->details);
    if (c->payload != NULL)
        grpc_byte_buffer_destroy(c->payload);
    if (c->recv != NULL)
        grpc_byte_buffer_destroy(c->recv);
    while (c->q_head != NULL) {
        struct out_msg *m = c->q_head;
        c->q_head = m->next;
        grpc_byte_buffer_destroy(m->bb);
        free(m);
    }
    if (c->w_cur != NULL) {
        grpc_byte_buffer_destroy(c->w_cur->bb);
        free(c->w_cur);
    }
    for (size_t i = 0; i < c->trailer_count; i++) {
        grpc_slice_unref(c->trailers[i].key);
        grpc_slice_unref(c->trailers[i].value);
    }
    free(c->status_msg);
    if (c->call != NULL)
        grpc_call_unref(c->call);
    pthread_mutex_destroy(&c->mu);
    free(c);
    atomic_fetch_sub(&s->live, 1);
}

void pf_rpc_call_ref(struct pf_rpc_call *c)
{
    atomic_fetch_add(&c->refs, 1);
}

void pf_rpc_call_unref(struct pf_rpc_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1)
        call_destroy(c);
}

/* ---- batches; every *_locked function runs with c->mu held ---- */

static bool start_batch_locked(struct pf_rpc_call *c, grpc_op *ops, size_t n,
                               struct pf_rpc_tag *tag)
{
    grpc_call_error rc = grpc_call_start_batch(c->call, ops, n, tag, NULL);
    if (rc != GRPC_CALL_OK) {
        pf_log_error("rpc_batch_failed", "method=%s code=%d", pf_rpc_call_method(c), (int)rc);
        return false;
    }
    c->pending++;
    return true;
}

static size_t add_initial_md_locked(struct pf_rpc_call *c, grpc_op *ops)
{
    if (c->md_sent)
        return 0;
    memset(ops, 0, sizeof(*ops));
    ops->op = GRPC_OP_SEND_INITIAL_METADATA;
    c->md_sent = true;
    return 1;
}

static void start_md_locked(struct pf_rpc_call *c)
{
    grpc_op ops[1];
    if (c->closed || c->md_sent)
        return;
    size_t n = add_initial_md_locked(c, ops);
    if (!start_batch_locked(c, ops, n, &c->t_md))
        c->md_sent = false;
}

static void start_read_locked(struct pf_rpc_call *c)
{
    grpc_op op;
    if (c->closed || c->read_busy || c->status_wanted)
        return;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv;
    if (start_batch_locked(c, &op, 1, &c->t_read))
        c->read_busy = true;
}

static void start_write_locked(struct pf_rpc_call *c)
{
    grpc_op ops[2];
    size_t n;
    struct out_msg *m = c->q_head;

    if (c->closed || c->write_busy || m == NULL)
        return;
    c->q_head = m->next;
    if (c->q_head == NULL)
        c->q_tail = NULL;
    n = add_initial_md_locked(c, ops);
    memset(&ops[n], 0, sizeof(ops[n]));
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = m->bb;
    n++;
    c->w_cur = m;
    c->write_busy = true;
    c->write_started_ms = pf_time_mono_ms();
    if (!start_batch_locked(c, ops, n, &c->t_write)) {
        c->write_busy = false;
        c->w_cur = NULL;
        c->write_started_ms = 0;
        account_locked(c, -(long long)m->len);
        grpc_byte_buffer_destroy(m->bb);
        free(m);
    }
}

static void record_status(struct pf_rpc_call *c, grpc_status_code code)
{
    struct pf_rpc_server *s = c->server;
    const char *path = c->entry->registered != NULL ? c->entry->path : "unknown";
    const char *labels[2] = {path, pf_rpc_code_name(code)};
    pf_metric_add(s->m_calls, labels, 1);
    pf_metric_observe(s->m_duration, labels, pf_time_mono_seconds() - c->started_at);
}

/* Sends the status; when exactly one message is still queued it goes in the
 * same batch (the common unary reply). */
static void start_status_locked(struct pf_rpc_call *c)
{
    grpc_op ops[3];
    size_t n;

    if (c->closed || c->status_started || c->write_busy)
        return;
    if (c->q_head != NULL && c->q_head->next != NULL) {
        start_write_locked(c);
        return;
    }
    n = add_initial_md_locked(c, ops);
    if (c->q_head != NULL) {
        struct out_msg *m = c->q_head;
        c->q_head = c->q_tail = NULL;
        c->w_cur = m;
        c->write_started_ms = pf_time_mono_ms();
        memset(&ops[n], 0, sizeof(ops[n]));
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = m->bb;
        n++;
    }
    memset(&ops[n], 0, sizeof(ops[n]));
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = c->status_code;
    c->status_slice = grpc_slice_from_copied_string(c->status_msg != NULL ? c->status_msg : "");
    ops[n].data.send_status_from_server.status_details = &c->status_slice;
    ops[n].data.send_status_from_server.trailing_metadata_count = c->trailer_count;
    ops[n].data.send_status_from_server.trailing_metadata = c->trailers;
    n++;
    c->status_started = true;
    if (!start_batch_locked(c, ops, n, &c->t_status))
        c->status_started = false;
    grpc_slice_unref(c->status_slice);
    record_status(c, c->status_code);
}

/* ---- events on the completion-queue thread ---- */

static void complete(struct pf_rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    int left = --c->pending;
    pthread_mutex_unlock(&c->mu);
    if (left == 0)
        pf_rpc_call_unref(c);
}

static void live_add(struct pf_rpc_call *c)
{
    struct pf_rpc_server *s = c->server;
    pthread_mutex_lock(&s->mu);
    c->live_next = s->live_list.live_next;
    c->live_prev = &s->live_list;
    s->live_list.live_next->live_prev = c;
    s->live_list.live_next = c;
    pthread_mutex_unlock(&s->mu);
}

static void live_remove(struct pf_rpc_call *c)
{
    struct pf_rpc_server *s = c->server;
    pthread_mutex_lock(&s->mu);
    if (c->live_prev != NULL) {
        c->live_prev->live_next = c->live_next;
        c->live_next->live_prev = c->live_prev;
        c->live_prev = c->live_next = NULL;
    }
    pthread_mutex_unlock(&s->mu);
}

/* Returns false (and finishes the call) when the caller may not call it. */
static bool authorize(struct pf_rpc_call *c)
{
    struct pf_rpc_server *s = c->server;
    char header[512];
    enum pf_role role;
    const char *name;

    if (s->opts.auth == NULL || c->entry->m.roles == 0)
        return true;
    if (!pf_rpc_call_metadata(c, "authorization", header, sizeof(header))) {
        pf_rpc_call_finish(c, PF_E_UNAUTHENTICATED,
                           "missing bearer token: send 'authorization: Bearer TOKEN'");
        return false;
    }
    if (!pf_auth_check(s->opts.auth, header, strlen(header), &role, &name)) {
        pf_rpc_call_finish(c, PF_E_UNAUTHENTICATED, "invalid bearer token");
        return false;
    }
    c->role = role;
    c->principal = name;
    if ((c->entry->m.roles & role) == 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "role '%s' (token '%s') may not call %s", pf_role_name(role),
                 name, c->entry->path);
        pf_rpc_call_finish(c, PF_E_PERMISSION, msg);
        return false;
    }
    return true;
}

static void on_new(struct pf_rpc_call *c, bool ok)
{
    struct pf_rpc_server *s = c->server;
    const struct pf_rpc_method *m = &c->entry->m;
    grpc_op op;

    if (!ok) { /* the server is shutting down: the request was withdrawn */
        call_destroy(c);
        return;
    }
    if (!s->shutting_down) {
        struct pf_rpc_call *next = pf_rpc_call_new(s, c->entry);
        if (next != NULL)
            pf_rpc_call_post(next);
    }
    c->accepted = true;
    c->started_at = pf_time_mono_seconds();
    live_add(c);
    pf_metric_add(s->m_inflight, NULL, 1);

    pthread_mutex_lock(&c->mu);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled_flag;
    bool close_armed = start_batch_locked(c, &op, 1, &c->t_close);
    pthread_mutex_unlock(&c->mu);
    if (!close_armed) {
        /* Without the close event nothing would ever free this call. */
        pthread_mutex_lock(&c->mu);
        c->closed = true;
        pthread_mutex_unlock(&c->mu);
        live_remove(c);
        pf_metric_add(s->m_inflight, NULL, -1);
        complete(c);
        return;
    }

    if (c->entry->registered == NULL) {
        char msg[300];
        char *method = grpc_slice_to_c_string(c->details.method);
        snprintf(msg, sizeof(msg), "unknown method '%.200s'", method);
        gpr_free(method);
        pf_rpc_call_finish(c, PF_E_UNIMPLEMENTED, msg);
        goto out;
    }
    if (!authorize(c))
        goto out;
    if (pf_rpc_call_deadline_left_ms(c) <= 0) {
        pf_rpc_call_finish(c, PF_E_DEADLINE, "deadline passed before the call started");
        goto out;
    }

    switch (m->kind) {
    case PF_RPC_UNARY:
    case PF_RPC_SERVER_STREAM: {
        grpc_byte_buffer_reader reader;
        grpc_slice slice;
        if (c->payload == NULL) {
            pf_rpc_call_finish(c, PF_E_INVALID, "missing request message");
            goto out;
        }
        if (m->kind == PF_RPC_SERVER_STREAM) {
            pthread_mutex_lock(&c->mu);
            start_md_locked(c);
            pthread_mutex_unlock(&c->mu);
        }
        grpc_byte_buffer_reader_init(&reader, c->payload);
        slice = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        m->on_start(c, GRPC_SLICE_START_PTR(slice), GRPC_SLICE_LENGTH(slice));
        grpc_slice_unref(slice);
        grpc_byte_buffer_destroy(c->payload);
        c->payload = NULL;
        break;
    }
    case PF_RPC_CLIENT_STREAM:
    case PF_RPC_BIDI:
        if (m->kind == PF_RPC_BIDI) {
            pthread_mutex_lock(&c->mu);
            start_md_locked(c);
            pthread_mutex_unlock(&c->mu);
        }
        m->on_start(c, NULL, 0);
        pthread_mutex_lock(&c->mu);
        start_read_locked(c);
        pthread_mutex_unlock(&c->mu);
        break;
    }
out:
    complete(c);
}

static void on_read(struct pf_rpc_call *c, bool ok)
{
    const struct pf_rpc_method *m = &c->entry->m;
    grpc_byte_buffer *bb;
    bool stop;

    pthread_mutex_lock(&c->mu);
    c->read_busy = false;
    bb = c->recv;
    c->recv = NULL;
    stop = c->closed || c->status_wanted;
    pthread_mutex_unlock(&c->mu);

    if (!ok || stop) {
        if (bb != NULL)
            grpc_byte_buffer_destroy(bb);
    } else if (bb == NULL) {
        if (m->on_half_close != NULL)
            m->on_half_close(c);
    } else {
        grpc_byte_buffer_reader reader;
        grpc_slice slice;
        bool more = true;
        grpc_byte_buffer_reader_init(&reader, bb);
        slice = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        grpc_byte_buffer_destroy(bb);
        if (m->on_message != NULL)
            more = m->on_message(c, GRPC_SLICE_START_PTR(slice), GRPC_SLICE_LENGTH(slice));
        grpc_slice_unref(slice);
        if (more) {
            pthread_mutex_lock(&c->mu);
            start_read_locked(c);
            pthread_mutex_unlock(&c->mu);
        }
    }
    complete(c);
}

static void on_write(struct pf_rpc_call *c, bool ok)
{
    const struct pf_rpc_method *m = &c->entry->m;
    bool notify = false;

    pthread_mutex_lock(&c->mu);
    c->write_busy = false;
    if (c->w_cur != NULL) {
        account_locked(c, -(long long)c->w_cur->len);
        grpc_byte_buffer_destroy(c->w_cur->bb);
        free(c->w_cur);
        c->w_cur = NULL;
    }
    c->write_started_ms = 0;
    if (ok && !c->closed) {
        if (c->q_head != NULL && !(c->status_wanted && c->q_head->next == NULL))
            start_write_locked(c);
        else if (c->status_wanted)
            start_status_locked(c);
        else
            notify = m->on_writable != NULL;
    }
    pthread_mutex_unlock(&c->mu);
    if (notify)
        m->on_writable(c);
    complete(c);
}

static void on_status(struct pf_rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    if (c->w_cur != NULL) {
        account_locked(c, -(long long)c->w_cur->len);
        grpc_byte_buffer_destroy(c->w_cur->bb);
        free(c->w_cur);
        c->w_cur = NULL;
    }
    c->write_started_ms = 0;
    pthread_mutex_unlock(&c->mu);
    complete(c);
}

static void on_close_event(struct pf_rpc_call *c)
{
    const struct pf_rpc_method *m = &c->entry->m;
    bool cancelled = c->cancelled_flag != 0;
    bool had_status;

    pthread_mutex_lock(&c->mu);
    c->closed = true;
    had_status = c->status_started;
    while (c->q_head != NULL) {
        struct out_msg *q = c->q_head;
        c->q_head = q->next;
        account_locked(c, -(long long)q->len);
        grpc_byte_buffer_destroy(q->bb);
        free(q);
    }
    c->q_tail = NULL;
    pthread_mutex_unlock(&c->mu);

    live_remove(c);
    pf_metric_add(c->server->m_inflight, NULL, -1);
    if (!had_status)
        record_status(c, c->uncounted ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_CANCELLED);
    if (c->entry->registered != NULL && m->on_close != NULL && !c->on_close_called) {
        c->on_close_called = true;
        m->on_close(c, cancelled || !had_status);
    }
    complete(c);
}

void pf_rpc_call_event(struct pf_rpc_tag *t, bool ok)
{
    struct pf_rpc_call *c = t->call;
    switch (t->kind) {
    case TAG_NEW:
        on_new(c, ok);
        break;
    case TAG_CLOSE:
        on_close_event(c);
        break;
    case TAG_READ:
        on_read(c, ok);
        break;
    case TAG_WRITE:
        on_write(c, ok);
        break;
    case TAG_STATUS:
        on_status(c);
        break;
    case TAG_MD:
        complete(c);
        break;
    case TAG_SHUTDOWN:
        break;
    }
}

/* ---- the handler-facing API ---- */

void *pf_rpc_call_ctx(const struct pf_rpc_call *c)
{
    return c->entry->m.ctx;
}

const char *pf_rpc_call_method(const struct pf_rpc_call *c)
{
    return c->entry->registered != NULL ? c->entry->path : "unknown";
}

void pf_rpc_call_set_user(struct pf_rpc_call *c, void *user)
{
    c->user = user;
}

void *pf_rpc_call_user(const struct pf_rpc_call *c)
{
    return c->user;
}

enum pf_role pf_rpc_call_role(const struct pf_rpc_call *c)
{
    return c->role;
}

const char *pf_rpc_call_principal(const struct pf_rpc_call *c)
{
    return c->principal;
}

bool pf_rpc_call_metadata(const struct pf_rpc_call *c, const char *key, char *out, size_t out_size)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < c->req_md.count; i++) {
        const grpc_metadata *md = &c->req_md.metadata[i];
        if (GRPC_SLICE_LENGTH(md->key) != klen ||
            memcmp(GRPC_SLICE_START_PTR(md->key), key, klen) != 0)
            continue;
        size_t vlen = GRPC_SLICE_LENGTH(md->value);
        if (out_size == 0)
            return true;
        if (vlen >= out_size)
            vlen = out_size - 1;
        memcpy(out, GRPC_SLICE_START_PTR(md->value), vlen);
        out[vlen] = '\0';
        return true;
    }
    return false;
}

int64_t pf_rpc_call_deadline_left_ms(const struct pf_rpc_call *c)
{
    if (gpr_time_cmp(c->deadline, gpr_inf_future(c->deadline.clock_type)) == 0)
        return INT64_MAX;
    gpr_timespec now = gpr_now(c->deadline.clock_type);
    gpr_timespec left = gpr_time_sub(c->deadline, now);
    return (int64_t)left.tv_sec * 1000 + left.tv_nsec / 1000000;
}

/* Ends a call whose client does not read: cancels it with RESOURCE_EXHAUSTED
 * and takes its queued bytes out of the server's total at once (the memory
 * itself is freed when the core completes the cancelled batches). c->mu held. */
static void evict_locked(struct pf_rpc_call *c, const char *why)
{
    struct pf_rpc_server *s = c->server;
    char msg[300];

    snprintf(msg, sizeof(msg),
             "%s: the server holds %zu bytes for this call (%zu at most for all clients); "
             "read the responses faster or retry later",
             why, c->queued_bytes, s->opts.max_total_queued_bytes);
    atomic_fetch_sub(&s->queued_total, (long long)c->queued_bytes);
    c->uncounted = true;
    c->status_wanted = true; /* nothing more is sent, no finish counts */
    grpc_call_cancel_with_status(c->call, GRPC_STATUS_RESOURCE_EXHAUSTED, msg, NULL);
    pf_metric_add(s->m_evicted, NULL, 1);
    pf_log_warn("rpc_call_evicted", "method=%s queued_bytes=%zu reason=\"%s\"",
                pf_rpc_call_method(c), c->queued_bytes, why);
}

/* Over the server's bound: evicts every call (but keep) whose write has been
 * stuck for PF_RPC_STALL_MS. Takes the server mutex, so it must not run with
 * a call mutex held; when the server mutex is busy (a health update sending
 * under it, possibly on this thread) it does nothing. */
static void evict_stalled(struct pf_rpc_server *s, struct pf_rpc_call *keep)
{
    int64_t now = pf_time_mono_ms();

    if (pthread_mutex_trylock(&s->mu) != 0)
        return;
    for (struct pf_rpc_call *c = s->live_list.live_next; c != &s->live_list; c = c->live_next) {
        if (c == keep)
            continue;
        pthread_mutex_lock(&c->mu);
        if (!c->closed && !c->uncounted && c->w_cur != NULL && c->write_started_ms != 0 &&
            now - c->write_started_ms >= PF_RPC_STALL_MS)
            evict_locked(c, "client stopped reading");
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&s->mu);
}

void pf_rpc_server_evict_stalled(struct pf_rpc_server *s)
{
    if ((size_t)atomic_load(&s->queued_total) > s->opts.max_total_queued_bytes)
        evict_stalled(s, NULL);
}

/* Queues slice (ownership passes to the call, whatever the result). */
static enum pf_status enqueue_slice(struct pf_rpc_call *c, grpc_slice slice)
{
    struct pf_rpc_server *s = c->server;
    size_t len = GRPC_SLICE_LENGTH(slice);
    size_t limit = s->opts.max_total_queued_bytes;
    struct out_msg *m;
    enum pf_status rc = PF_OK;

    if ((size_t)atomic_load(&s->queued_total) + len > limit)
        evict_stalled(s, c);
    pthread_mutex_lock(&c->mu);
    if (c->closed || c->status_wanted) {
        rc = PF_E_CANCELLED;
        goto out_unlock;
    }
    if (c->queued_bytes > 0 && c->queued_bytes + len > s->opts.max_queued_bytes) {
        rc = PF_E_RESOURCE;
        goto out_unlock;
    }
    /* A call with nothing queued may always queue one small message (a unary
     * reply, an event for a watcher that keeps up); anything else that does
     * not fit ends its call rather than let the total grow (stalled calls
     * were evicted first). */
    if ((c->queued_bytes > 0 || len > PF_RPC_SMALL_MESSAGE) &&
        (size_t)atomic_load(&s->queued_total) + len > limit) {
        evict_locked(c, "server write buffers are full");
        rc = PF_E_RESOURCE;
        goto out_unlock;
    }
    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        rc = PF_E_RESOURCE;
        goto out_unlock;
    }
    m->bb = grpc_raw_byte_buffer_create(&slice, 1);
    m->len = len;
    if (c->q_tail != NULL)
        c->q_tail->next = m;
    else
        c->q_head = m;
    c->q_tail = m;
    account_locked(c, (long long)len);
    start_write_locked(c);
out_unlock:
    pthread_mutex_unlock(&c->mu);
    grpc_slice_unref(slice);
    return rc;
}

enum pf_status pf_rpc_call_send(struct pf_rpc_call *c, const void *data, size_t len)
{
    return enqueue_slice(c, grpc_slice_from_copied_buffer(data, len));
}

enum pf_status pf_rpc_call_send_msg(struct pf_rpc_call *c, const ProtobufCMessage *msg)
{
    /* Packed straight into the slice gRPC sends: no intermediate copy. */
    grpc_slice slice = grpc_slice_malloc(protobuf_c_message_get_packed_size(msg));
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    return enqueue_slice(c, slice);
}

size_t pf_rpc_call_queued_bytes(struct pf_rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->queued_bytes;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void pf_rpc_call_set_trailer(struct pf_rpc_call *c, const char *key, const char *value)
{
    pthread_mutex_lock(&c->mu);
    if (!c->status_wanted && c->trailer_count < sizeof(c->trailers) / sizeof(c->trailers[0])) {
        grpc_metadata *md = &c->trailers[c->trailer_count++];
        memset(md, 0, sizeof(*md));
        md->key = grpc_slice_from_copied_string(key);
        md->value = grpc_slice_from_copied_string(value);
    }
    pthread_mutex_unlock(&c->mu);
}

void pf_rpc_call_finish(struct pf_rpc_call *c, enum pf_status code, const char *msg)
{
    pthread_mutex_lock(&c->mu);
    if (c->status_wanted || c->closed) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->status_wanted = true;
    c->status_code = pf_rpc_code_from_status(code);
    c->status_msg = strdup(msg != NULL ? msg : "");
    if (!c->write_busy)
        start_status_locked(c);
    pthread_mutex_unlock(&c->mu);
}

void pf_rpc_call_finish_err(struct pf_rpc_call *c, const struct pf_error *err)
{
    pf_rpc_call_finish(c, err->code, err->msg);
}

void pf_rpc_call_reply(struct pf_rpc_call *c, const ProtobufCMessage *msg)
{
    if (pf_rpc_call_send_msg(c, msg) == PF_OK)
        pf_rpc_call_finish(c, PF_OK, "");
    else
        pf_rpc_call_finish(c, PF_E_RESOURCE, "reply could not be queued");
}

void pf_rpc_call_read_next(struct pf_rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    start_read_locked(c);
    pthread_mutex_unlock(&c->mu);
}

bool pf_rpc_call_done(struct pf_rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    bool done = c->closed || c->status_wanted;
    pthread_mutex_unlock(&c->mu);
    return done;
}

struct deferred {
    struct pf_rpc_call *call;
    pf_rpc_work_fn fn;
    size_t len;
    uint8_t data[];
};

static void run_deferred(void *arg)
{
    struct deferred *d = arg;
    d->fn(d->call, d->data, d->len);
    pf_rpc_call_unref(d->call);
    free(d);
}

void pf_rpc_call_defer(struct pf_rpc_call *call, struct pf_workq *wq, pf_rpc_work_fn fn,
                       const uint8_t *data, size_t len)
{
    struct deferred *d = malloc(sizeof(*d) + len);
    if (d == NULL) {
        pf_rpc_call_finish(call, PF_E_RESOURCE, "out of memory");
        return;
    }
    d->call = call;
    d->fn = fn;
    d->len = len;
    if (len > 0)
        memcpy(d->data, data, len);
    pf_rpc_call_ref(call);
    if (pf_workq_submit(wq, run_deferred, d) != PF_OK) {
        pf_rpc_call_unref(call);
        free(d);
        pf_rpc_call_finish(call, PF_E_RESOURCE, "server busy: too much work queued, retry later");
    }
}
