/* /api/events: Server-Sent Events fed by the scheduler's WatchEvents, one
 * gRPC stream per browser stream, sent with that browser's token. Each SSE
 * message carries `id: SEQ`, so a browser that reconnects sends
 * Last-Event-ID and resumes; when the gRPC stream breaks (leader change,
 * scheduler restart) it is reopened after the last seq sent, following the
 * `printfarm-leader` trailer. Runs on the connection's own MHD thread. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <microhttpd.h>

#include "log.h"
#include "pbjson.h"
#include "printfarm/v1/scheduler.pb-c.h"
#include "web.h"

#define WATCH_METHOD      "/printfarm.v1.Scheduler/WatchEvents"
#define RECV_WAIT_MS      1000
#define KEEPALIVE_TICKS   15 /* seconds of silence before a comment line */
#define REOPEN_BACKOFF_MS 1000

struct pf_web_events {
    struct pf_web *w;
    struct pf_web_session *s;
    struct pf_rpc_channel *ch; /* own channel: its target moves with this stream only */
    struct pf_rpc_stream *stream;
    uint64_t after;
    bool have_after;
    int idle_ticks;
    bool hello_sent;
    bool ending;           /* send what is pending, then end */
    struct pf_buf pending; /* SSE text not yet handed to MHD */
    size_t pending_off;
};

struct pf_web_events *pf_web_events_open(struct pf_web *w, struct pf_web_session *s, uint64_t after,
                                         bool have_after)
{
    struct pf_web_events *ev = calloc(1, sizeof *ev);
    if (ev == NULL)
        return NULL;
    char target[PF_RPC_TARGET_MAX];
    struct pf_error err;
    pf_rpc_channel_target(s->sched, target, sizeof target);
    ev->ch = pf_web_channel(w, target, s->token, &err);
    if (ev->ch == NULL) {
        pf_log_warn("events_channel_failed", "error=\"%s\"", err.msg);
        free(ev);
        return NULL;
    }
    ev->w = w;
    ev->s = s;
    pthread_mutex_lock(&w->lock);
    s->refs++;
    pthread_mutex_unlock(&w->lock);
    ev->after = after;
    ev->have_after = have_after;
    pf_buf_init(&ev->pending, 0);
    int n = atomic_fetch_add(&w->streams, 1) + 1;
    pf_metric_set(w->streams_g, NULL, n);
    return ev;
}

void pf_web_events_free(void *cls)
{
    struct pf_web_events *ev = cls;
    if (ev->stream != NULL)
        pf_rpc_stream_destroy(ev->stream);
    pf_rpc_channel_destroy(ev->ch);
    int n = atomic_fetch_sub(&ev->w->streams, 1) - 1;
    pf_metric_set(ev->w->streams_g, NULL, n);
    pf_web_session_put(ev->w, ev->s);
    pf_buf_release(&ev->pending);
    free(ev);
}

static void status_line(struct pf_web_events *ev, const char *state, const char *msg)
{
    /* An unnamed-id "status" event tells the page whether live updates flow. */
    if (pf_buf_printf(&ev->pending, "event: status\ndata: {\"state\":\"%s\",\"message\":", state) !=
            PF_OK ||
        pf_web_json_string(&ev->pending, msg) != PF_OK ||
        pf_buf_append(&ev->pending, "}\n\n", 3) != PF_OK)
        pf_buf_reset(&ev->pending);
}

static enum pf_status open_stream(struct pf_web_events *ev, struct pf_error *err)
{
    Printfarm__V1__WatchEventsRequest req = PRINTFARM__V1__WATCH_EVENTS_REQUEST__INIT;
    req.after = ev->after;
    req.only_new = !ev->have_after;
    if (pf_rpc_stream_open(ev->ch, WATCH_METHOD, 0, &ev->stream, err) != PF_OK)
        return err->code;
    if (pf_rpc_stream_send(ev->stream, &req.base, err) != PF_OK ||
        pf_rpc_stream_close_send(ev->stream, err) != PF_OK) {
        if (pf_rpc_stream_finish(ev->stream, err) == PF_OK)
            pf_error_set(err, PF_E_UNAVAILABLE, "the event stream ended at once");
        pf_rpc_stream_destroy(ev->stream);
        ev->stream = NULL;
        return err->code != PF_OK ? err->code : PF_E_UNAVAILABLE;
    }
    return PF_OK;
}

/* The stream ended or failed: note why, follow a leader hint, and drop it so
 * the next read reopens it after the last seq. */
static void stream_ended(struct pf_web_events *ev, struct pf_error *err)
{
    struct pf_error fin;
    pf_error_clear(&fin);
    enum pf_status st = pf_rpc_stream_finish(ev->stream, &fin);
    const char *leader = pf_rpc_stream_leader(ev->stream);
    struct pf_error e2;
    if (leader != NULL && leader[0] != '\0') {
        if (pf_rpc_channel_retarget(ev->ch, leader, &e2) == PF_OK)
            pf_log_info("events_follow_leader", "leader=%s", leader);
    } else if (st == PF_E_UNAVAILABLE) {
        pf_web_sched_next(ev->w, ev->ch); /* that replica is gone: try the next */
    }
    pf_rpc_stream_destroy(ev->stream);
    ev->stream = NULL;
    *err = st != PF_OK ? fin : *err;
    if (err->code == PF_OK)
        pf_error_set(err, PF_E_UNAVAILABLE, "the scheduler ended the event stream");
}

static void append_event(struct pf_web_events *ev, const Printfarm__V1__Event *e)
{
    if (pf_buf_printf(&ev->pending, "id: %" PRIu64 "\nevent: farm\ndata: ", e->seq) != PF_OK ||
        pf_web_json_message(&ev->pending, &e->base) != PF_OK ||
        pf_buf_append(&ev->pending, "\n\n", 2) != PF_OK) {
        pf_buf_reset(&ev->pending);
        return;
    }
    ev->after = e->seq;
    ev->have_after = true;
}

/* Produces more SSE text into ev->pending; false when the stream must end. */
static bool produce(struct pf_web_events *ev)
{
    struct pf_error err;
    pf_error_clear(&err);
    if (!ev->hello_sent) {
        ev->hello_sent = true;
        if (pf_buf_printf(&ev->pending, "retry: 2000\n") != PF_OK)
            return false;
    }
    if (ev->stream == NULL) {
        if (open_stream(ev, &err) != PF_OK) {
            status_line(ev, "down", err.msg);
            if (err.code == PF_E_UNAVAILABLE)
                pf_web_sched_next(ev->w, ev->ch);
            if (err.code == PF_E_UNAUTHENTICATED || err.code == PF_E_PERMISSION)
                return false;
            usleep(REOPEN_BACKOFF_MS * 1000);
            return true;
        }
        status_line(ev, "live", "");
        return true;
    }
    Printfarm__V1__Event *e = NULL;
    enum pf_status st = pf_rpc_stream_recv(ev->stream, &printfarm__v1__event__descriptor,
                                           (ProtobufCMessage **)&e, RECV_WAIT_MS, &err);
    if (st == PF_OK) {
        ev->idle_ticks = 0;
        append_event(ev, e);
        protobuf_c_message_free_unpacked(&e->base, NULL);
        return true;
    }
    if (st == PF_E_DEADLINE) {
        if (++ev->idle_ticks >= KEEPALIVE_TICKS) {
            ev->idle_ticks = 0;
            if (pf_buf_printf(&ev->pending, ": keepalive\n\n") != PF_OK)
                return false;
        }
        return true;
    }
    stream_ended(ev, &err);
    if (err.code == PF_E_OUT_OF_RANGE) {
        /* Events after the cursor were pruned: the page re-reads everything. */
        ev->have_after = false;
        status_line(ev, "reset", err.msg);
        return true;
    }
    pf_log_info("events_reconnect", "after=%" PRIu64 " code=%s", ev->after,
                pf_status_name(err.code));
    status_line(ev, "down", err.msg);
    if (err.code == PF_E_UNAUTHENTICATED || err.code == PF_E_PERMISSION)
        return false;
    usleep(REOPEN_BACKOFF_MS * 1000 / 4);
    return true;
}

ssize_t pf_web_events_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct pf_web_events *ev = cls;
    while (ev->pending_off >= ev->pending.len) {
        pf_buf_reset(&ev->pending);
        ev->pending_off = 0;
        if (ev->ending || atomic_load(&ev->w->stopping) || ev->s->dead)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (!produce(ev))
            ev->ending = true;
        if (ev->pending.len > 0)
            break;
    }
    size_t n = ev->pending.len - ev->pending_off;
    if (n > max)
        n = max;
    memcpy(buf, ev->pending.data + ev->pending_off, n);
    ev->pending_off += n;
    return (ssize_t)n;
}
