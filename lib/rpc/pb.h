/* protobuf-c helpers at the RPC boundary, and the one place where Printfarm
 * statuses and gRPC status codes are mapped to each other. */
#ifndef PF_RPC_PB_H
#define PF_RPC_PB_H

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>
#include "status.h"

/* Unpacks bytes as a message of type desc; PF_E_INVALID "request is not a
 * valid printfarm.v1.X" when they do not decode. Free *out with
 * protobuf_c_message_free_unpacked(*out, NULL). */
enum pf_status pf_pb_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                            ProtobufCMessage **out, struct pf_error *err) PF_MUST_CHECK;
/* Packs into a new malloc'd buffer. */
enum pf_status pf_pb_pack(const ProtobufCMessage *msg, uint8_t **out, size_t *len,
                          struct pf_error *err) PF_MUST_CHECK;

grpc_status_code pf_rpc_code_from_status(enum pf_status s);
enum pf_status pf_rpc_status_from_code(grpc_status_code code);
/* "OK", "INVALID_ARGUMENT", ... */
const char *pf_rpc_code_name(grpc_status_code code);

#endif
