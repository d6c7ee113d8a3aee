/* Internal to lib/rpc: the server and call structures shared by server.c,
 * call.c and health.c. Nothing outside lib/rpc includes this. */
#ifndef PF_RPC_INTERNAL_H
#define PF_RPC_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <grpc/grpc.h>
#include "rpc/server.h"

enum tag_kind { TAG_NEW, TAG_CLOSE, TAG_READ, TAG_WRITE, TAG_STATUS, TAG_MD, TAG_SHUTDOWN };

/* Completion-queue tags are embedded in their owner; the event's tag points
 * straight at one, so dispatch is a switch on kind. */
struct pf_rpc_tag {
    enum tag_kind kind;
    struct pf_rpc_call *call; /* NULL for TAG_SHUTDOWN */
};

struct method_entry {
    struct pf_rpc_method m;
    char *path;
    void *registered; /* from grpc_server_register_method; NULL = the generic handler */
};

struct out_msg {
    struct out_msg *next;
    grpc_byte_buffer *bb;
    size_t len;
};

struct pf_rpc_call {
    struct pf_rpc_server *server;
    struct method_entry *entry; /* NULL for an unknown method */
    pthread_mutex_t mu;
    atomic_int refs;

    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array req_md;
    grpc_call_details details; /* generic requests only */
    grpc_byte_buffer *payload; /* unary / server-stream request */
    grpc_byte_buffer *recv;    /* streaming-in reads */
    int cancelled_flag;        /* RECV_CLOSE_ON_SERVER result */

    struct pf_rpc_tag t_new, t_close, t_read, t_write, t_status, t_md;

    /* guarded by mu */
    int pending; /* batches started and not completed */
    bool accepted, closed, md_sent, write_busy, read_busy, status_wanted, status_started;
    struct out_msg *q_head, *q_tail;
    struct out_msg *w_cur; /* the message in the write or status batch */
    size_t queued_bytes;
    bool uncounted;           /* its queued bytes left the server's total (evicted) */
    int64_t write_started_ms; /* monotonic ms of the write in flight; 0 = none */
    grpc_status_code status_code;
    char *status_msg;
    grpc_metadata trailers[4];
    size_t trailer_count;
    grpc_slice status_slice;

    enum pf_role role;
    const char *principal;
    void *user;
    double started_at;
    bool on_close_called;
    struct pf_rpc_call *live_prev, *live_next; /* server's list of accepted calls */
};

struct timer_entry {
    int64_t interval_ms;
    int64_t due_ms;
    void (*fn)(void *);
    void *arg;
};

struct health_entry {
    char *service;
    bool serving;
};

struct health_watch {
    struct health_watch *next;
    struct pf_rpc_call *call;
    char *service;
    int last_sent; /* grpc.health.v1 ServingStatus last sent, -1 none */
};

struct pf_rpc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    struct pf_rpc_server_opts opts;
    char *listen;
    char *name;
    struct method_entry *methods;
    size_t method_count;
    struct method_entry generic;
    int port;
    bool started;
    atomic_bool stop_requested;
    bool shutting_down;
    bool shutdown_done;
    struct pf_rpc_tag t_shutdown;
    atomic_long live;             /* call structs alive, posted requests included */
    atomic_llong queued_total;    /* bytes queued by every call (bar evicted ones) */
    pthread_mutex_t mu;           /* guards the live list and health state */
    struct pf_rpc_call live_list; /* sentinel of accepted calls */
    struct timer_entry *timers;
    size_t timer_count;
    struct health_entry *health;
    size_t health_count;
    struct health_watch *watches;

    struct pf_metric *m_calls, *m_duration, *m_inflight, *m_evicted;
};

/* call.c */
struct pf_rpc_call *pf_rpc_call_new(struct pf_rpc_server *s, struct method_entry *e);
void pf_rpc_call_post(struct pf_rpc_call *c);
void pf_rpc_call_event(struct pf_rpc_tag *t, bool ok);
/* When the server's queued bytes are over max_total_queued_bytes, cancels the
 * calls whose write has been stuck for PF_RPC_STALL_MS (RESOURCE_EXHAUSTED).
 * Takes the server mutex: never with a call mutex held. */
void pf_rpc_server_evict_stalled(struct pf_rpc_server *s);
/* health.c */
void pf_rpc_health_register(struct pf_rpc_server *s);
void pf_rpc_health_shutdown(struct pf_rpc_server *s);

#endif
