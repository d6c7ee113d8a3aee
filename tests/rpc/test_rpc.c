/* Tests of lib/rpc on its own: an in-process server with one method of each
 * kind (unary, client-streaming, server-streaming, bidirectional) over real
 * loopback gRPC, called through the client helpers. Covers many calls in
 * flight, deadlines, the maximum message size, unknown methods, the leader
 * redirect, health Watch and graceful shutdown. Messages are
 * printfarm.v1.Label (key, value) so no test-only proto is needed. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "grpc/health/v1/health.pb-c.h"
#include "printfarm/v1/common.pb-c.h"
#include "rpc/client.h"
#include "rpc/pb.h"
#include "rpc/server.h"
#include "timeutil.h"
#include "workq.h"

#define SAY   "/test.Echo/Say"
#define SUM   "/test.Echo/Sum"
#define COUNT "/test.Echo/Count"
#define CHAT  "/test.Echo/Chat"
#define WATCH "/test.Echo/Watch"

struct fixture {
    struct pf_rpc_server *srv;
    struct pf_workq *wq;
    pthread_t thread;
    char target[64];
    const char *leader; /* when set, Say answers UNAVAILABLE + printfarm-leader */
};

static Printfarm__V1__Label *unpack_label(const uint8_t *data, size_t len)
{
    ProtobufCMessage *m = NULL;
    struct pf_error err;
    if (pf_pb_unpack(&printfarm__v1__label__descriptor, data, len, &m, &err) != PF_OK)
        return NULL;
    return (Printfarm__V1__Label *)m;
}

static void send_label(struct pf_rpc_call *call, const char *key, const char *value)
{
    Printfarm__V1__Label l = PRINTFARM__V1__LABEL__INIT;
    l.key = (char *)key;
    l.value = (char *)value;
    (void)pf_rpc_call_send_msg(call, &l.base);
}

static void slow_say(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    Printfarm__V1__Label *req = unpack_label(data, len);
    pf_time_sleep_ms(atoi(req->value));
    send_label(call, "slept", req->value);
    pf_rpc_call_finish(call, PF_OK, "");
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void say_start(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct fixture *f = pf_rpc_call_ctx(call);
    Printfarm__V1__Label *req = unpack_label(data, len);
    if (req == NULL) {
        pf_rpc_call_finish(call, PF_E_INVALID, "not a label");
        return;
    }
    if (f->leader != NULL) {
        pf_rpc_call_set_trailer(call, PF_RPC_LEADER_KEY, f->leader);
        pf_rpc_call_finish(call, PF_E_UNAVAILABLE, "not the leader");
    } else if (strcmp(req->key, "fail") == 0) {
        pf_rpc_call_finish(call, PF_E_INVALID, "asked to fail with a long enough message");
    } else if (strcmp(req->key, "slow") == 0) {
        pf_rpc_call_defer(call, f->wq, slow_say, data, len);
    } else {
        char up[256];
        snprintf(up, sizeof(up), "%s", req->value);
        for (char *p = up; *p; p++)
            if (*p >= 'a' && *p <= 'z')
                *p -= 32;
        send_label(call, req->key, up);
        pf_rpc_call_finish(call, PF_OK, "");
    }
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void sum_start(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    pf_rpc_call_set_user(call, calloc(1, sizeof(long)));
}

static bool sum_message(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    (*(long *)pf_rpc_call_user(call))++;
    return true;
}

static void sum_half_close(struct pf_rpc_call *call)
{
    char n[32];
    snprintf(n, sizeof(n), "%ld", *(long *)pf_rpc_call_user(call));
    send_label(call, "count", n);
    pf_rpc_call_finish(call, PF_OK, "");
}

static void free_user(struct pf_rpc_call *call)
{
    free(pf_rpc_call_user(call));
}

static void count_start(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    Printfarm__V1__Label *req = unpack_label(data, len);
    int n = atoi(req->value);
    for (int i = 0; i < n; i++) {
        char v[32];
        snprintf(v, sizeof(v), "%d", i);
        send_label(call, "n", v);
    }
    pf_rpc_call_finish(call, PF_OK, "");
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static bool chat_message(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    (void)pf_rpc_call_send(call, data, len);
    return true;
}

static void chat_start(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
}

static void chat_half_close(struct pf_rpc_call *call)
{
    pf_rpc_call_finish(call, PF_OK, "");
}

static void watch_start(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    send_label(call, "watching", "yes");
}

static void *serve(void *arg)
{
    pf_rpc_server_run(arg);
    return NULL;
}

static struct fixture *start_server(size_t max_message, const char *leader)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct pf_error err;
    struct pf_rpc_server_opts opts = {.listen = "127.0.0.1:0",
                                      .max_message_bytes = max_message,
                                      .shutdown_grace_ms = 3000,
                                      .name = "test.Echo"};
    f->leader = leader;
    f->wq = pf_workq_create(4, 0);
    f->srv = pf_rpc_server_create(&opts, &err);
    assert_non_null(f->srv);
    const struct pf_rpc_method methods[] = {
        {.path = SAY, .kind = PF_RPC_UNARY, .ctx = f, .on_start = say_start},
        {.path = SUM,
         .kind = PF_RPC_CLIENT_STREAM,
         .ctx = f,
         .on_start = sum_start,
         .on_message = sum_message,
         .on_half_close = sum_half_close,
         .on_free = free_user},
        {.path = COUNT, .kind = PF_RPC_SERVER_STREAM, .ctx = f, .on_start = count_start},
        {.path = CHAT,
         .kind = PF_RPC_BIDI,
         .ctx = f,
         .on_start = chat_start,
         .on_message = chat_message,
         .on_half_close = chat_half_close},
        {.path = WATCH,
         .kind = PF_RPC_SERVER_STREAM,
         .long_lived = true,
         .ctx = f,
         .on_start = watch_start},
    };
    assert_int_equal(pf_rpc_server_add(f->srv, methods, 5, &err), PF_OK);
    assert_int_equal(pf_rpc_server_start(f->srv, &err), PF_OK);
    snprintf(f->target, sizeof(f->target), "127.0.0.1:%d", pf_rpc_server_port(f->srv));
    pthread_create(&f->thread, NULL, serve, f->srv);
    return f;
}

static void stop_server(struct fixture *f)
{
    pf_rpc_server_request_stop(f->srv);
    pthread_join(f->thread, NULL);
    pf_rpc_server_destroy(f->srv);
    pf_workq_destroy(f->wq);
    free(f);
}

static enum pf_status say(struct pf_rpc_channel *ch, const char *key, const char *value,
                          int64_t timeout_ms, char *out, size_t out_size, struct pf_error *err)
{
    Printfarm__V1__Label req = PRINTFARM__V1__LABEL__INIT;
    ProtobufCMessage *reply = NULL;
    req.key = (char *)key;
    req.value = (char *)value;
    enum pf_status rc = pf_rpc_unary(ch, SAY, &req.base, &printfarm__v1__label__descriptor, &reply,
                                     timeout_ms, err);
    if (rc == PF_OK) {
        snprintf(out, out_size, "%s", ((Printfarm__V1__Label *)reply)->value);
        protobuf_c_message_free_unpacked(reply, NULL);
    }
    return rc;
}

static struct pf_rpc_channel *channel(const char *target)
{
    struct pf_error err;
    struct pf_rpc_client_opts opts = {.wait_for_ready = true};
    struct pf_rpc_channel *ch = pf_rpc_channel_create(target, &opts, &err);
    assert_non_null(ch);
    return ch;
}

static void test_unary(void **state)
{
    struct fixture *f = start_server(0, NULL);
    struct pf_rpc_channel *ch = channel(f->target);
    struct pf_error err;
    char out[256];

    assert_int_equal(say(ch, "k", "hello printfarm", 5000, out, sizeof(out), &err), PF_OK);
    assert_string_equal(out, "HELLO PRINTFARM");
    assert_int_equal(say(ch, "fail", "x", 5000, out, sizeof(out), &err), PF_E_INVALID);
    assert_non_null(strstr(err.msg, "asked to fail with a long enough message"));
    assert_non_null(strstr(err.msg, SAY));
    pf_rpc_channel_destroy(ch);
    stop_server(f);
}

static void test_deadline(void **state)
{
    struct fixture *f = start_server(0, NULL);
    struct pf_rpc_channel *ch = channel(f->target);
    struct pf_error err;
    char out[64];

    assert_int_equal(say(ch, "slow", "800", 100, out, sizeof(out), &err), PF_E_DEADLINE);
    assert_int_equal(say(ch, "slow", "10", 5000, out, sizeof(out), &err), PF_OK);
    assert_string_equal(out, "10");
    pf_rpc_channel_destroy(ch);
    stop_server(f);
}

static void test_max_message(void **state)
{
    struct fixture *f = start_server(16 * 1024, NULL);
    struct pf_rpc_channel *ch = channel(f->target);
    struct pf_error err;
    char out[64];
    char *big = malloc(40 * 1024);
    memset(big, 'a', 40 * 1024 - 1);
    big[40 * 1024 - 1] = '\0';

    assert_int_equal(say(ch, "k", big, 5000, out, sizeof(out), &err), PF_E_RESOURCE);
    /* The server still serves after refusing it. */
    assert_int_equal(say(ch, "k", "small", 5000, out, sizeof(out), &err), PF_OK);
    free(big);
    pf_rpc_channel_destroy(ch);
    stop_server(f);
}

static void test_unknown_method_and_garbage(void **state)
{
    struct fixture *f = start_server(0, NULL);
    struct pf_rpc_channel *ch = channel(f->target);
    struct pf_error err;
    ProtobufCMessage *reply;
    Printfarm__V1__Label req = PRINTFARM__V1__LABEL__INIT;

    assert_int_equal(pf_rpc_unary(ch, "/test.Echo/Nope", &req.base,
                                  &printfarm__v1__label__descriptor, &reply, 5000, &err),
                     PF_E_UNIMPLEMENTED);
    assert_non_null(strstr(err.msg, "unknown method '/test.Echo/Nope'"));

    struct pf_rpc_stream *s;
    static const uint8_t garbage[] = {0xff, 0xff, 0xff};
    assert_int_equal(pf_rpc_stream_open(ch, SAY, 5000, &s, &err), PF_OK);
    assert_int_equal(pf_rpc_stream_send_raw(s, garbage, sizeof(garbage), &err), PF_OK);
    assert_int_equal(pf_rpc_stream_close_send(s, &err), PF_OK);
    ProtobufCMessage *m;
    assert_int_equal(pf_rpc_stream_recv(s, &printfarm__v1__label__descriptor, &m, -1, &err),
                     PF_E_END);
    assert_int_equal(pf_rpc_stream_finish(s, &err), PF_E_INVALID);
    pf_rpc_stream_destroy(s);
    pf_rpc_channel_destroy(ch);
    stop_server(f);
}

static void test_client_stream(void **state)
{
    struct fixture *f = start_server(0, NULL);
    struct pf_rpc_channel *ch = channel(f->target);
    struct pf_rpc_stream *s;
    struct pf_error err;
    Printfarm__V1__Label l = PRINTFARM__V1__LABEL__INIT;
    ProtobufCMessage *m;

    l.key = "x";
    l.value = "y";
    assert_int_equal(pf_rpc_stream_open(ch, SUM, 10000, &s, &err), PF_OK);
    for (int i = 0; i < 500; i++)
        assert_int_equal(pf_rpc_stream_send(s, &l.base, &err), PF_OK);
    assert_int_equal(pf_rpc_stream_close_send(s, &err), PF_OK);
    assert_int_equal(pf_rpc_stream_recv(s, &printfarm__v1__label__descriptor, &m, -1, &err), PF_OK);
    assert_string_equal(((Printfarm__V1__Label *)m)->value, "500");
    protobuf_c_message_free_unpacked(m, NULL);
    assert_int_equal(pf_rpc_stream_finish(s, &err), PF_OK);
    pf_rpc_stream_destroy(s);
    pf_rpc_channel_destroy(ch);
    stop_server(f);
}

static void test_server_stream(void **state)
{
    struct fixture *f = start_server(0, NULL);
    struct pf_rpc_channel *ch = channel(f->target);
    struct pf_rpc_stream *s;
    struct pf_error err;
    Printfarm__V1__Label l = PRINTFARM__V1__LABEL__INIT;
    ProtobufCMessage *m;
    int n = 0;

    l.key = "n";
    l.value = "1000";
    assert_int_equal(pf_rpc_stream_open(ch, COUNT, 10000, &s, &err), PF_OK);
    assert_int_equal(pf_rpc_stream_send(s, &l.base, &err), PF_OK);
    assert_int_equal(pf_rpc_stream_close_send(s, &err), PF_OK);
    while (pf_rpc_stream_recv(s, &printfarm__v1__label__descriptor, &m, -1, &err) == PF_OK) {
        assert_int_equal(atoi(((Printfarm__V1__Label *)m)->value), n);
        n++;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    assert_int_equal(n, 1000);
    assert_int_equal(pf_rpc_stream_finish(s, &err), PF_OK);
    pf_rpc_stream_destroy(s);
    pf_rpc_channel_destroy(ch);
    stop_server(f);
}

static void test_bidi(void **state)
{
    struct fixture *f = start_server(0, NULL);
    struct pf_rpc_channel *ch = channel(f->target);
    struct pf_rpc_stream *s;
    struct pf_error err;
    ProtobufCMessage *m;

    assert_int_equal(pf_rpc_stream_open(ch, CHAT, 10000, &s, &err), PF_OK);
    for (int i = 0; i < 50; i++) {
        char v[32];
        Printfarm__V1__Label l = PRINTFARM__V1__LABEL__INIT;
        snprintf(v, sizeof(v), "ping-%d", i);
        l.key = "chat";
        l.value = v;
        assert_int_equal(pf_rpc_stream_send(s, &l.base, &err), PF_OK);
        assert_int_equal(pf_rpc_stream_recv(s, &printfarm__v1__label__descriptor, &m, 5000, &err),
                         PF_OK);
        assert_string_equal(((Printfarm__V1__Label *)m)->value, v);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    /* Nothing more is coming until we send: a short wait times out and the
     * read stays armed. */
    assert_int_equal(pf_rpc_stream_recv(s, &printfarm__v1__label__descriptor, &m, 50, &err),
                     PF_E_DEADLINE);
    assert_int_equal(pf_rpc_stream_close_send(s, &err), PF_OK);
    assert_int_equal(pf_rpc_stream_recv(s, &printfarm__v1__label__descriptor, &m, -1, &err),
                     PF_E_END);
    assert_int_equal(pf_rpc_stream_finish(s, &err), PF_OK);
    pf_rpc_stream_destroy(s);
    pf_rpc_channel_destroy(ch);
    stop_server(f);
}

struct many_arg {
    struct pf_rpc_channel *ch;
    int ok;
};

static void *many_calls(void *arg)
{
    struct many_arg *a = arg;
    struct pf_error err;
    char out[64];
    for (int i = 0; i < 200; i++) {
        char v[32];
        snprintf(v, sizeof(v), "v%d", i);
        if (say(a->ch, "k", v, 10000, out, sizeof(out), &err) == PF_OK && out[0] == 'V')
            a->ok++;
    }
    return NULL;
}

static void test_many_in_flight(void **state)
{
    struct fixture *f = start_server(0, NULL);
    struct pf_rpc_channel *ch = channel(f->target);
    pthread_t t[8];
    struct many_arg a[8];
    for (int i = 0; i < 8; i++) {
        a[i] = (struct many_arg){ch, 0};
        pthread_create(&t[i], NULL, many_calls, &a[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].ok, 200);
    }
    pf_rpc_channel_destroy(ch);
    stop_server(f);
}

static void test_leader_redirect(void **state)
{
    struct fixture *leader = start_server(0, NULL);
    struct fixture *follower = start_server(0, leader->target);
    struct pf_rpc_channel *ch = channel(follower->target);
    struct pf_error err;
    char out[64], target[PF_RPC_TARGET_MAX];

    assert_int_equal(say(ch, "k", "to the leader", 5000, out, sizeof(out), &err), PF_OK);
    assert_string_equal(out, "TO THE LEADER");
    pf_rpc_channel_target(ch, target, sizeof(target));
    assert_string_equal(target, leader->target);
    pf_rpc_channel_destroy(ch);

    /* Without redirects the follower's answer comes back as is. */
    struct pf_rpc_client_opts opts = {.max_redirects = -1};
    ch = pf_rpc_channel_create(follower->target, &opts, &err);
    assert_int_equal(say(ch, "k", "x", 5000, out, sizeof(out), &err), PF_E_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "not the leader"));
    pf_rpc_channel_destroy(ch);
    stop_server(follower);
    stop_server(leader);
}

static void test_health_watch(void **state)
{
    struct fixture *f = start_server(0, NULL);
    struct pf_rpc_channel *ch = channel(f->target);
    struct pf_rpc_stream *s;
    struct pf_error err;
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *m;

    req.service = "test.Echo";
    assert_int_equal(pf_rpc_stream_open(ch, "/grpc.health.v1.Health/Watch", 10000, &s, &err),
                     PF_OK);
    assert_int_equal(pf_rpc_stream_send(s, &req.base, &err), PF_OK);
    assert_int_equal(pf_rpc_stream_close_send(s, &err), PF_OK);
    assert_int_equal(
        pf_rpc_stream_recv(s, &grpc__health__v1__health_check_response__descriptor, &m, -1, &err),
        PF_OK);
    assert_int_equal(((Grpc__Health__V1__HealthCheckResponse *)m)->status,
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    protobuf_c_message_free_unpacked(m, NULL);
    pf_rpc_server_set_health(f->srv, "test.Echo", false);
    assert_int_equal(
        pf_rpc_stream_recv(s, &grpc__health__v1__health_check_response__descriptor, &m, -1, &err),
        PF_OK);
    assert_int_equal(((Grpc__Health__V1__HealthCheckResponse *)m)->status,
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
    protobuf_c_message_free_unpacked(m, NULL);
    pf_rpc_stream_destroy(s);

    /* Check of an unknown service is NOT_FOUND. */
    req.service = "no.Such";
    assert_int_equal(pf_rpc_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                                  &grpc__health__v1__health_check_response__descriptor, &m, 5000,
                                  &err),
                     PF_E_NOT_FOUND);
    pf_rpc_channel_destroy(ch);
    stop_server(f);
}

struct slow_arg {
    struct pf_rpc_channel *ch;
    enum pf_status rc;
};

static void *slow_call(void *arg)
{
    struct slow_arg *a = arg;
    struct pf_error err;
    char out[64];
    a->rc = say(a->ch, "slow", "600", 10000, out, sizeof(out), &err);
    return NULL;
}

static void test_graceful_shutdown(void **state)
{
    struct fixture *f = start_server(0, NULL);
    struct pf_rpc_channel *ch = channel(f->target);
    struct pf_rpc_stream *w;
    struct pf_error err;
    ProtobufCMessage *m;
    Printfarm__V1__Label l = PRINTFARM__V1__LABEL__INIT;
    pthread_t t;
    struct slow_arg a = {ch, PF_E_INTERNAL};

    l.key = "w";
    l.value = "";
    assert_int_equal(pf_rpc_stream_open(ch, WATCH, 0, &w, &err), PF_OK);
    assert_int_equal(pf_rpc_stream_send(w, &l.base, &err), PF_OK);
    assert_int_equal(pf_rpc_stream_close_send(w, &err), PF_OK);
    assert_int_equal(pf_rpc_stream_recv(w, &printfarm__v1__label__descriptor, &m, -1, &err), PF_OK);
    protobuf_c_message_free_unpacked(m, NULL);
    pthread_create(&t, NULL, slow_call, &a);
    pf_time_sleep_ms(200); /* the slow call is in flight */

    pf_rpc_server_request_stop(f->srv);
    /* The watch stream is ended at once with UNAVAILABLE... */
    assert_int_equal(pf_rpc_stream_recv(w, &printfarm__v1__label__descriptor, &m, -1, &err),
                     PF_E_END);
    assert_int_equal(pf_rpc_stream_finish(w, &err), PF_E_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "server shutting down"));
    pf_rpc_stream_destroy(w);
    /* ...while the unary call in flight finishes normally. */
    pthread_join(t, NULL);
    assert_int_equal(a.rc, PF_OK);
    pthread_join(f->thread, NULL);
    pf_rpc_server_destroy(f->srv);
    pf_workq_destroy(f->wq);
    free(f);
    pf_rpc_channel_destroy(ch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_max_message),
        cmocka_unit_test(test_unknown_method_and_garbage),
        cmocka_unit_test(test_client_stream),
        cmocka_unit_test(test_server_stream),
        cmocka_unit_test(test_bidi),
        cmocka_unit_test(test_many_in_flight),
        cmocka_unit_test(test_leader_redirect),
        cmocka_unit_test(test_health_watch),
        cmocka_unit_test(test_graceful_shutdown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
