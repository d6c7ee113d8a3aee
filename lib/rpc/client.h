/* Client helpers: channels with keepalive, TLS and a bearer token; unary calls
 * with deadlines that follow the scheduler's `printfarm-leader` redirect; and
 * blocking streams usable by one sending and one receiving thread at once. */
#ifndef PF_RPC_CLIENT_H
#define PF_RPC_CLIENT_H

#include <stdint.h>
#include <protobuf-c/protobuf-c.h>
#include "rpc/tls.h"

#define PF_RPC_LEADER_KEY "printfarm-leader"
#define PF_RPC_TARGET_MAX 256

struct pf_rpc_client_opts {
    struct pf_tls_files tls;  /* see tls.h */
    bool force_tls;           /* TLS with the system roots even without a ca */
    const char *token;        /* bearer token sent on every call; NULL = none */
    const char *server_name;  /* TLS name override (tests); NULL = from target */
    int64_t keepalive_ms;     /* 0 = 10000; <0 = off */
    size_t max_message_bytes; /* 0 = 4 MiB + 64 KiB */
    bool wait_for_ready;      /* calls wait for the connection instead of failing */
    int max_redirects;        /* leader redirects followed per call; 0 = 3, <0 = none */
};

struct pf_rpc_channel;

/* target is "HOST:PORT". The options' strings are copied. */
struct pf_rpc_channel *pf_rpc_channel_create(const char *target,
                                             const struct pf_rpc_client_opts *opts,
                                             struct pf_error *err);
void pf_rpc_channel_destroy(struct pf_rpc_channel *ch);
/* The current target (it changes when a redirect is followed); copied into out. */
void pf_rpc_channel_target(struct pf_rpc_channel *ch, char *out, size_t out_size);
/* Points the channel at another target (thread-safe; calls in flight finish
 * on the old connection). */
enum pf_status pf_rpc_channel_retarget(struct pf_rpc_channel *ch, const char *target,
                                       struct pf_error *err) PF_MUST_CHECK;

/* Unary call. On PF_OK *reply holds a message unpacked with reply_desc (free
 * it with protobuf_c_message_free_unpacked). Otherwise err carries the status
 * and the server's message prefixed with the method and target. timeout_ms
 * <= 0 means no deadline. */
enum pf_status pf_rpc_unary(struct pf_rpc_channel *ch, const char *method,
                            const ProtobufCMessage *req,
                            const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **reply,
                            int64_t timeout_ms, struct pf_error *err) PF_MUST_CHECK;

/* A streaming call of any kind. */
struct pf_rpc_stream;

/* Starts a call; for a server-streaming method, send the request with
 * pf_rpc_stream_send then pf_rpc_stream_close_send. timeout_ms <= 0: no deadline. */
enum pf_status pf_rpc_stream_open(struct pf_rpc_channel *ch, const char *method, int64_t timeout_ms,
                                  struct pf_rpc_stream **out, struct pf_error *err) PF_MUST_CHECK;
/* Blocks until the message is handed to the transport. PF_E_END when the
 * call is already over (then pf_rpc_stream_finish says why). */
enum pf_status pf_rpc_stream_send(struct pf_rpc_stream *s, const ProtobufCMessage *msg,
                                  struct pf_error *err) PF_MUST_CHECK;
enum pf_status pf_rpc_stream_send_raw(struct pf_rpc_stream *s, const void *data, size_t len,
                                      struct pf_error *err) PF_MUST_CHECK;
enum pf_status pf_rpc_stream_close_send(struct pf_rpc_stream *s,
                                        struct pf_error *err) PF_MUST_CHECK;
/* Waits up to wait_ms (<0: until the call ends) for the next message.
 * PF_OK with *out set; PF_E_DEADLINE when wait_ms passed (the read stays
 * armed: call again); PF_E_END when the server ended the stream; PF_E_INVALID
 * when the message does not decode. */
enum pf_status pf_rpc_stream_recv(struct pf_rpc_stream *s, const ProtobufCMessageDescriptor *desc,
                                  ProtobufCMessage **out, int64_t wait_ms,
                                  struct pf_error *err) PF_MUST_CHECK;
/* Waits for the final status and returns it (PF_OK or the error with the
 * server's message). Call after PF_E_END, or after close_send for a
 * client-streaming call, whose single reply is then read with
 * pf_rpc_stream_recv first. */
enum pf_status pf_rpc_stream_finish(struct pf_rpc_stream *s, struct pf_error *err) PF_MUST_CHECK;
/* The `printfarm-leader` trailer of a finished stream, or "" */
const char *pf_rpc_stream_leader(const struct pf_rpc_stream *s);
/* Cancels the call (thread-safe); pending operations complete at once. */
void pf_rpc_stream_cancel(struct pf_rpc_stream *s);
/* Cancels if needed, waits for outstanding operations and frees. */
void pf_rpc_stream_destroy(struct pf_rpc_stream *s);

#endif
