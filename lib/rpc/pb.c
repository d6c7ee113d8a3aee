/* protobuf-c at the RPC boundary, and the single mapping between Printfarm
 * statuses and gRPC status codes. */
#include <stdlib.h>
#include "rpc/pb.h"

enum pf_status pf_pb_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                            ProtobufCMessage **out, struct pf_error *err)
{
    *out = protobuf_c_message_unpack(desc, NULL, len, data);
    if (*out == NULL)
        return pf_error_set(err, PF_E_INVALID, "message is not a valid %s (%zu bytes)", desc->name,
                            len);
    return PF_OK;
}

enum pf_status pf_pb_pack(const ProtobufCMessage *msg, uint8_t **out, size_t *len,
                          struct pf_error *err)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n > 0 ? n : 1);
    if (buf == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory packing a %zu-byte message", n);
    protobuf_c_message_pack(msg, buf);
    *out = buf;
    *len = n;
    return PF_OK;
}

grpc_status_code pf_rpc_code_from_status(enum pf_status s)
{
    switch (s) {
    case PF_OK:
        return GRPC_STATUS_OK;
    case PF_E_INVALID:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case PF_E_NOT_FOUND:
        return GRPC_STATUS_NOT_FOUND;
    case PF_E_EXISTS:
        return GRPC_STATUS_ALREADY_EXISTS;
    case PF_E_PERMISSION:
        return GRPC_STATUS_PERMISSION_DENIED;
    case PF_E_UNAUTHENTICATED:
        return GRPC_STATUS_UNAUTHENTICATED;
    case PF_E_PRECONDITION:
        return GRPC_STATUS_FAILED_PRECONDITION;
    case PF_E_ABORTED:
        return GRPC_STATUS_ABORTED;
    case PF_E_OUT_OF_RANGE:
        return GRPC_STATUS_OUT_OF_RANGE;
    case PF_E_RESOURCE:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case PF_E_UNAVAILABLE:
        return GRPC_STATUS_UNAVAILABLE;
    case PF_E_DATA_LOSS:
        return GRPC_STATUS_DATA_LOSS;
    case PF_E_DEADLINE:
        return GRPC_STATUS_DEADLINE_EXCEEDED;
    case PF_E_CANCELLED:
        return GRPC_STATUS_CANCELLED;
    case PF_E_UNIMPLEMENTED:
        return GRPC_STATUS_UNIMPLEMENTED;
    case PF_E_END:
        return GRPC_STATUS_OK;
    case PF_E_IO:
    case PF_E_INTERNAL:
    case PF_STATUS_COUNT:
        break;
    }
    return GRPC_STATUS_INTERNAL;
}

enum pf_status pf_rpc_status_from_code(grpc_status_code code)
{
    switch (code) {
    case GRPC_STATUS_OK:
        return PF_OK;
    case GRPC_STATUS_CANCELLED:
        return PF_E_CANCELLED;
    case GRPC_STATUS_INVALID_ARGUMENT:
        return PF_E_INVALID;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        return PF_E_DEADLINE;
    case GRPC_STATUS_NOT_FOUND:
        return PF_E_NOT_FOUND;
    case GRPC_STATUS_ALREADY_EXISTS:
        return PF_E_EXISTS;
    case GRPC_STATUS_PERMISSION_DENIED:
        return PF_E_PERMISSION;
    case GRPC_STATUS_UNAUTHENTICATED:
        return PF_E_UNAUTHENTICATED;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        return PF_E_RESOURCE;
    case GRPC_STATUS_FAILED_PRECONDITION:
        return PF_E_PRECONDITION;
    case GRPC_STATUS_ABORTED:
        return PF_E_ABORTED;
    case GRPC_STATUS_OUT_OF_RANGE:
        return PF_E_OUT_OF_RANGE;
    case GRPC_STATUS_UNIMPLEMENTED:
        return PF_E_UNIMPLEMENTED;
    case GRPC_STATUS_UNAVAILABLE:
        return PF_E_UNAVAILABLE;
    case GRPC_STATUS_DATA_LOSS:
        return PF_E_DATA_LOSS;
    default:
        return PF_E_INTERNAL;
    }
}

const char *pf_rpc_code_name(grpc_status_code code)
{
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if ((unsigned)code < sizeof(names) / sizeof(names[0]))
        return names[code];
    return "UNKNOWN";
}
