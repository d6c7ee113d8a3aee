/* Client side of lib/rpc: channels (keepalive, TLS, bearer token, leader
 * redirects), unary calls with deadlines, and blocking streams. A stream has
 * its own pluck completion queue so one thread may send while another
 * receives; every batch's tag is plucked exactly once, which is what lets the
 * queue be shut down and freed safely. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include "log.h"
#include "rpc/client.h"
#include "rpc/pb.h"

#define DEFAULT_MAX_MESSAGE (4 * 1024 * 1024 + 64 * 1024)

struct pf_rpc_channel {
    pthread_mutex_t mu;
    char target[PF_RPC_TARGET_MAX];
    grpc_channel *ch;
    grpc_channel **retired; /* earlier channels, kept until destroy for calls in flight */
    size_t retired_count;
    struct pf_tls_files tls;
    bool force_tls;
    char *auth_header;
    char *server_name;
    int64_t keepalive_ms;
    size_t max_message;
    bool wait_for_ready;
    int max_redirects;
};

static char *dup_or_null(const char *s)
{
    return s != NULL && s[0] != '\0' ? strdup(s) : NULL;
}

static grpc_channel *make_channel(struct pf_rpc_channel *c, const char *target,
                                  struct pf_error *err)
{
    grpc_channel_credentials *creds = pf_tls_channel_credentials(&c->tls, c->force_tls, err);
    grpc_arg args[8];
    size_t n = 0;
    grpc_channel *ch;

    if (creds == NULL)
        return NULL;
    args[n++] = (grpc_arg){
        GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = (int)c->max_message}};
    args[n++] = (grpc_arg){
        GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, {.integer = (int)c->max_message}};
    if (c->keepalive_ms > 0) {
        args[n++] = (grpc_arg){
            GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIME_MS, {.integer = (int)c->keepalive_ms}};
        args[n++] =
            (grpc_arg){GRPC_ARG_INTEGER,
                       GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                       {.integer = (int)(c->keepalive_ms < 20000 ? c->keepalive_ms : 20000)}};
        args[n++] =
            (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, {.integer = 1}};
        args[n++] =
            (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, {.integer = 0}};
    }
    if (c->server_name != NULL)
        args[n++] = (grpc_arg){
            GRPC_ARG_STRING, GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, {.string = c->server_name}};
    grpc_channel_args chargs = {n, args};
    ch = grpc_channel_create(target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    if (ch == NULL)
        pf_error_set(err, PF_E_INVALID, "could not create a channel to '%s'", target);
    return ch;
}

struct pf_rpc_channel *pf_rpc_channel_create(const char *target,
                                             const struct pf_rpc_client_opts *opts,
                                             struct pf_error *err)
{
    static const struct pf_rpc_client_opts defaults;
    struct pf_rpc_channel *c;

    if (opts == NULL)
        opts = &defaults;
    if (target == NULL || target[0] == '\0' || strlen(target) >= PF_RPC_TARGET_MAX) {
        pf_error_set(err, PF_E_INVALID, "target address '%.64s' is empty or too long",
                     target != NULL ? target : "");
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        pf_error_set(err, PF_E_RESOURCE, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    snprintf(c->target, sizeof(c->target), "%s", target);
    c->tls.cert = dup_or_null(opts->tls.cert);
    c->tls.key = dup_or_null(opts->tls.key);
    c->tls.ca = dup_or_null(opts->tls.ca);
    c->force_tls = opts->force_tls;
    if (opts->token != NULL && opts->token[0] != '\0') {
        size_t len = strlen(opts->token) + 8;
        c->auth_header = malloc(len);
        if (c->auth_header != NULL)
            snprintf(c->auth_header, len, "Bearer %s", opts->token);
    }
    c->server_name = dup_or_null(opts->server_name);
    c->keepalive_ms = opts->keepalive_ms == 0 ? 10000 : opts->keepalive_ms;
    c->max_message = opts->max_message_bytes ? opts->max_message_bytes : DEFAULT_MAX_MESSAGE;
    c->wait_for_ready = opts->wait_for_ready;
    c->max_redirects = opts->max_redirects == 0 ? 3 : opts->max_redirects;
    grpc_init();
    c->ch = make_channel(c, target, err);
    if (c->ch == NULL) {
        pf_rpc_channel_destroy(c);
        return NULL;
    }
    return c;
}

void pf_rpc_channel_destroy(struct pf_rpc_channel *c)
{
    if (c == NULL)
        return;
    if (c->ch != NULL)
        grpc_channel_destroy(c->ch);
    for (size_t i = 0; i < c->retired_count; i++)
        grpc_channel_destroy(c->retired[i]);
    free(c->retired);
    free((char *)c->tls.cert);
    free((char *)c->tls.key);
    free((char *)c->tls.ca);
    free(c->auth_header);
    free(c->server_name);
    pthread_mutex_destroy(&c->mu);
    free(c);
    grpc_shutdown();
}

void pf_rpc_channel_target(struct pf_rpc_channel *c, char *out, size_t out_size)
{
    pthread_mutex_lock(&c->mu);
    snprintf(out, out_size, "%s", c->target);
    pthread_mutex_unlock(&c->mu);
}

enum pf_status pf_rpc_channel_retarget(struct pf_rpc_channel *c, const char *target,
                                       struct pf_error *err)
{
    grpc_channel *ch;
    grpc_channel **grown;

    if (target == NULL || target[0] == '\0' || strlen(target) >= PF_RPC_TARGET_MAX)
        return pf_error_set(err, PF_E_INVALID, "target address '%.64s' is empty or too long",
                            target != NULL ? target : "");
    pthread_mutex_lock(&c->mu);
    if (strcmp(c->target, target) == 0) {
        pthread_mutex_unlock(&c->mu);
        return PF_OK;
    }
    ch = make_channel(c, target, err);
    if (ch == NULL) {
        pthread_mutex_unlock(&c->mu);
        return err->code;
    }
    grown = realloc(c->retired, (c->retired_count + 1) * sizeof(*grown));
    if (grown == NULL) {
        pthread_mutex_unlock(&c->mu);
        grpc_channel_destroy(ch);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    c->retired = grown;
    c->retired[c->retired_count++] = c->ch;
    c->ch = ch;
    snprintf(c->target, sizeof(c->target), "%s", target);
    pthread_mutex_unlock(&c->mu);
    return PF_OK;
}

static grpc_channel *current(struct pf_rpc_channel *c, char *target, size_t size)
{
    pthread_mutex_lock(&c->mu);
    grpc_channel *ch = c->ch;
    snprintf(target, size, "%s", c->target);
    pthread_mutex_unlock(&c->mu);
    return ch;
}

static gpr_timespec deadline_after(int64_t timeout_ms)
{
    if (timeout_ms <= 0)
        return gpr_inf_future(GPR_CLOCK_REALTIME);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

static grpc_call *create_call(grpc_channel *ch, grpc_completion_queue *cq, const char *method,
                              gpr_timespec deadline)
{
    grpc_slice m = grpc_slice_from_copied_string(method);
    grpc_call *call =
        grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL, deadline, NULL);
    grpc_slice_unref(m);
    return call;
}

static void find_leader(const grpc_metadata_array *md, char *out, size_t out_size)
{
    size_t klen = strlen(PF_RPC_LEADER_KEY);
    out[0] = '\0';
    for (size_t i = 0; i < md->count; i++) {
        const grpc_metadata *m = &md->metadata[i];
        if (GRPC_SLICE_LENGTH(m->key) == klen &&
            memcmp(GRPC_SLICE_START_PTR(m->key), PF_RPC_LEADER_KEY, klen) == 0) {
            size_t vlen = GRPC_SLICE_LENGTH(m->value);
            if (vlen >= out_size)
                vlen = out_size - 1;
            memcpy(out, GRPC_SLICE_START_PTR(m->value), vlen);
            out[vlen] = '\0';
            return;
        }
    }
}

static enum pf_status status_error(grpc_status_code code, grpc_slice details, const char *method,
                                   const char *target, struct pf_error *err)
{
    char *text = grpc_slice_to_c_string(details);
    enum pf_status rc = pf_rpc_status_from_code(code);
    if (code == GRPC_STATUS_UNAVAILABLE && text[0] != '\0' && strstr(text, "onnect") != NULL)
        pf_error_set(err, rc, "cannot reach %s at %s: %s", method, target, text);
    else
        pf_error_set(err, rc, "%s at %s: %s%s%s", method, target, pf_rpc_code_name(code),
                     text[0] != '\0' ? ": " : "", text);
    gpr_free(text);
    return rc;
}

static void bb_to_bytes(grpc_byte_buffer *bb, grpc_slice *out)
{
    grpc_byte_buffer_reader reader;
    grpc_byte_buffer_reader_init(&reader, bb);
    *out = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
}

static void drain_destroy_cq(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
}

static void auth_md(struct pf_rpc_channel *c, grpc_metadata *md, size_t *count)
{
    *count = 0;
    if (c->auth_header == NULL)
        return;
    memset(md, 0, sizeof(*md));
    md->key = grpc_slice_from_static_string("authorization");
    md->value = grpc_slice_from_static_string(c->auth_header);
    *count = 1;
}

static enum pf_status unary_once(struct pf_rpc_channel *c, const char *method,
                                 const uint8_t *req_bytes, size_t req_len,
                                 const ProtobufCMessageDescriptor *reply_desc,
                                 ProtobufCMessage **reply, int64_t timeout_ms, char *leader,
                                 size_t leader_size, struct pf_error *err)
{
    char target[PF_RPC_TARGET_MAX];
    grpc_channel *ch = current(c, target, sizeof(target));
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_call *call = create_call(ch, cq, method, deadline_after(timeout_ms));
    /* A fresh buffer per attempt: a sent buffer's slices belong to the core. */
    grpc_slice req_slice = grpc_slice_from_copied_buffer((const char *)req_bytes, req_len);
    grpc_byte_buffer *req = grpc_raw_byte_buffer_create(&req_slice, 1);
    grpc_metadata md;
    grpc_metadata_array md_in, trailers;
    grpc_byte_buffer *resp = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    const char *error_string = NULL;
    grpc_op ops[6];
    size_t mdn;
    enum pf_status rc;

    leader[0] = '\0';
    grpc_metadata_array_init(&md_in);
    grpc_metadata_array_init(&trailers);
    auth_md(c, &md, &mdn);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = mdn;
    ops[0].data.send_initial_metadata.metadata = mdn ? &md : NULL;
    ops[0].flags = c->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_in;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &resp;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailers;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    ops[5].data.recv_status_on_client.error_string = &error_string;
    if (grpc_call_start_batch(call, ops, 6, (void *)1, NULL) != GRPC_CALL_OK) {
        rc = pf_error_set(err, PF_E_INTERNAL, "%s: could not start the call", method);
    } else {
        grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (status != GRPC_STATUS_OK) {
            rc = status_error(status, details, method, target, err);
            find_leader(&trailers, leader, leader_size);
        } else if (resp == NULL) {
            rc = pf_error_set(err, PF_E_INTERNAL, "%s at %s: OK without a reply message", method,
                              target);
        } else {
            grpc_slice bytes;
            bb_to_bytes(resp, &bytes);
            rc = pf_pb_unpack(reply_desc, GRPC_SLICE_START_PTR(bytes), GRPC_SLICE_LENGTH(bytes),
                              reply, err);
            grpc_slice_unref(bytes);
        }
    }
    if (resp != NULL)
        grpc_byte_buffer_destroy(resp);
    grpc_byte_buffer_destroy(req);
    grpc_slice_unref(req_slice);
    grpc_slice_unref(details);
    gpr_free((void *)error_string);
    grpc_metadata_array_destroy(&md_in);
    grpc_metadata_array_destroy(&trailers);
    grpc_call_unref(call);
    drain_destroy_cq(cq);
    return rc;
}

enum pf_status pf_rpc_unary(struct pf_rpc_channel *c, const char *method,
                            const ProtobufCMessage *req,
                            const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **reply,
                            int64_t timeout_ms, struct pf_error *err)
{
    uint8_t *bytes;
    size_t len;
    char leader[PF_RPC_TARGET_MAX];
    enum pf_status rc;

    *reply = NULL;
    rc = pf_pb_pack(req, &bytes, &len, err);
    if (rc != PF_OK)
        return rc;
    for (int attempt = 0;; attempt++) {
        rc = unary_once(c, method, bytes, len, reply_desc, reply, timeout_ms, leader,
                        sizeof(leader), err);
        if (rc != PF_E_UNAVAILABLE || leader[0] == '\0' || c->max_redirects < 0 ||
            attempt >= c->max_redirects)
            break;
        pf_log_info("rpc_follow_leader", "method=%s leader=%s", method, leader);
        struct pf_error rerr;
        if (pf_rpc_channel_retarget(c, leader, &rerr) != PF_OK)
            break;
    }
    free(bytes);
    return rc;
}

/* ---- streams ---- */

enum stream_tag { ST_START, ST_MD, ST_STATUS, ST_SEND, ST_RECV, ST_CLOSE, ST_COUNT };

struct pf_rpc_stream {
    struct pf_rpc_channel *ch;
    char target[PF_RPC_TARGET_MAX];
    char method[256];
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_metadata auth;
    grpc_metadata_array md_in, trailers;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
    grpc_byte_buffer *recv_bb;
    char tags[ST_COUNT];        /* their addresses are the tags */
    bool outstanding[ST_COUNT]; /* started and not plucked; each owned by one thread */
    bool status_done;
    bool ended;
    char leader[PF_RPC_TARGET_MAX];
};

static bool start(struct pf_rpc_stream *s, grpc_op *ops, size_t n, enum stream_tag t)
{
    if (grpc_call_start_batch(s->call, ops, n, &s->tags[t], NULL) != GRPC_CALL_OK)
        return false;
    s->outstanding[t] = true;
    return true;
}

/* Waits for tag t until deadline; true when it completed (success in *ok). */
static bool pluck(struct pf_rpc_stream *s, enum stream_tag t, gpr_timespec deadline, bool *ok)
{
    grpc_event ev = grpc_completion_queue_pluck(s->cq, &s->tags[t], deadline, NULL);
    if (ev.type != GRPC_OP_COMPLETE)
        return false;
    s->outstanding[t] = false;
    if (ok != NULL)
        *ok = ev.success != 0;
    return true;
}

enum pf_status pf_rpc_stream_open(struct pf_rpc_channel *ch, const char *method, int64_t timeout_ms,
                                  struct pf_rpc_stream **out, struct pf_error *err)
{
    struct pf_rpc_stream *s = calloc(1, sizeof(*s));
    grpc_op op;
    size_t mdn;

    if (s == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    s->ch = ch;
    snprintf(s->method, sizeof(s->method), "%s", method);
    grpc_channel *gch = current(ch, s->target, sizeof(s->target));
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    s->call = create_call(gch, s->cq, method, deadline_after(timeout_ms));
    s->details = grpc_empty_slice();
    grpc_metadata_array_init(&s->md_in);
    grpc_metadata_array_init(&s->trailers);
    auth_md(ch, &s->auth, &mdn);

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    op.data.send_initial_metadata.count = mdn;
    op.data.send_initial_metadata.metadata = mdn ? &s->auth : NULL;
    op.flags = ch->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
    bool ok = start(s, &op, 1, ST_START);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_INITIAL_METADATA;
    op.data.recv_initial_metadata.recv_initial_metadata = &s->md_in;
    ok = ok && start(s, &op, 1, ST_MD);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &s->trailers;
    op.data.recv_status_on_client.status = &s->status;
    op.data.recv_status_on_client.status_details = &s->details;
    op.data.recv_status_on_client.error_string = &s->error_string;
    ok = ok && start(s, &op, 1, ST_STATUS);
    if (!ok) {
        pf_rpc_stream_destroy(s);
        return pf_error_set(err, PF_E_INTERNAL, "%s: could not start the stream", method);
    }
    *out = s;
    return PF_OK;
}

/* Sends slice (ownership passes here) and waits until it is handed over. */
static enum pf_status send_slice(struct pf_rpc_stream *s, grpc_slice slice, struct pf_error *err)
{
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_op op;
    bool ok = false;

    grpc_slice_unref(slice);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    if (start(s, &op, 1, ST_SEND))
        pluck(s, ST_SEND, gpr_inf_future(GPR_CLOCK_REALTIME), &ok);
    grpc_byte_buffer_destroy(bb);
    if (!ok)
        return pf_error_set(err, PF_E_END, "%s at %s: the stream is closed", s->method, s->target);
    return PF_OK;
}

enum pf_status pf_rpc_stream_send_raw(struct pf_rpc_stream *s, const void *data, size_t len,
                                      struct pf_error *err)
{
    return send_slice(s, grpc_slice_from_copied_buffer(data, len), err);
}

enum pf_status pf_rpc_stream_send(struct pf_rpc_stream *s, const ProtobufCMessage *msg,
                                  struct pf_error *err)
{
    grpc_slice slice = grpc_slice_malloc(protobuf_c_message_get_packed_size(msg));
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    return send_slice(s, slice, err);
}

enum pf_status pf_rpc_stream_close_send(struct pf_rpc_stream *s, struct pf_error *err)
{
    grpc_op op;
    bool ok = false;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    if (start(s, &op, 1, ST_CLOSE))
        pluck(s, ST_CLOSE, gpr_inf_future(GPR_CLOCK_REALTIME), &ok);
    if (!ok)
        return pf_error_set(err, PF_E_END, "%s at %s: the stream is closed", s->method, s->target);
    return PF_OK;
}

enum pf_status pf_rpc_stream_recv(struct pf_rpc_stream *s, const ProtobufCMessageDescriptor *desc,
                                  ProtobufCMessage **out, int64_t wait_ms, struct pf_error *err)
{
    bool ok = false;
    enum pf_status rc;

    *out = NULL;
    if (s->ended)
        return pf_error_set(err, PF_E_END, "%s: end of stream", s->method);
    if (!s->outstanding[ST_RECV]) {
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &s->recv_bb;
        if (!start(s, &op, 1, ST_RECV)) {
            s->ended = true;
            return pf_error_set(err, PF_E_END, "%s: end of stream", s->method);
        }
    }
    gpr_timespec deadline =
        wait_ms < 0 ? gpr_inf_future(GPR_CLOCK_REALTIME) : deadline_after(wait_ms);
    if (wait_ms == 0)
        deadline =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(0, GPR_TIMESPAN));
    if (!pluck(s, ST_RECV, deadline, &ok))
        return pf_error_set(err, PF_E_DEADLINE, "%s: no message within %lld ms", s->method,
                            (long long)wait_ms);
    if (!ok || s->recv_bb == NULL) {
        s->ended = true;
        return pf_error_set(err, PF_E_END, "%s: end of stream", s->method);
    }
    grpc_slice bytes;
    bb_to_bytes(s->recv_bb, &bytes);
    grpc_byte_buffer_destroy(s->recv_bb);
    s->recv_bb = NULL;
    rc = pf_pb_unpack(desc, GRPC_SLICE_START_PTR(bytes), GRPC_SLICE_LENGTH(bytes), out, err);
    grpc_slice_unref(bytes);
    return rc;
}

enum pf_status pf_rpc_stream_finish(struct pf_rpc_stream *s, struct pf_error *err)
{
    if (!s->status_done) {
        if (s->outstanding[ST_STATUS])
            pluck(s, ST_STATUS, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        s->status_done = true;
        find_leader(&s->trailers, s->leader, sizeof(s->leader));
    }
    if (s->status == GRPC_STATUS_OK)
        return PF_OK;
    return status_error(s->status, s->details, s->method, s->target, err);
}

const char *pf_rpc_stream_leader(const struct pf_rpc_stream *s)
{
    return s->leader;
}

void pf_rpc_stream_cancel(struct pf_rpc_stream *s)
{
    grpc_call_cancel(s->call, NULL);
}

void pf_rpc_stream_destroy(struct pf_rpc_stream *s)
{
    if (s == NULL)
        return;
    if (s->call != NULL) {
        grpc_call_cancel(s->call, NULL);
        for (int t = 0; t < ST_COUNT; t++) {
            if (s->outstanding[t])
                pluck(s, t, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        }
    }
    if (s->recv_bb != NULL)
        grpc_byte_buffer_destroy(s->recv_bb);
    grpc_slice_unref(s->details);
    gpr_free((void *)s->error_string);
    grpc_metadata_array_destroy(&s->md_in);
    grpc_metadata_array_destroy(&s->trailers);
    if (s->call != NULL)
        grpc_call_unref(s->call);
    grpc_completion_queue_shutdown(s->cq);
    grpc_completion_queue_pluck(s->cq, &s->tags[0], gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_completion_queue_destroy(s->cq);
    free(s);
}
