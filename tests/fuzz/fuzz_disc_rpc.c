/* Fuzz target: pf-discovery request handling. Byte 0 picks the RPC, the rest
 * is its serialized request; the target decodes it with protobuf-c and runs
 * the checks discovery_service.c runs before it talks to Redis
 * (services/discovery/validate.c): Register's instance and TTL, the lease id
 * of Heartbeat and Deregister, List's and Watch's kind and label filter,
 * Resolve's role.
 *
 * Oracles: what is accepted is what Redis is then asked to store or find:
 * an accepted instance's member name and lease id parse back to the same
 * kind and id, an accepted lease id fits the handler's buffer and names a
 * member that parses, an accepted label filter matches an instance that
 * carries exactly those labels, an accepted agent role names a valid id. */
#include <string.h>

#include "fuzz.h"
#include "rpc/pb.h"
#include "validate.h"

enum rpc { REGISTER, HEARTBEAT, DEREGISTER, LIST, WATCH, RESOLVE, RPC_COUNT };

static const ProtobufCMessageDescriptor *const descriptors[RPC_COUNT] = {
    [REGISTER] = &printfarm__v1__register_request__descriptor,
    [HEARTBEAT] = &printfarm__v1__heartbeat_request__descriptor,
    [DEREGISTER] = &printfarm__v1__deregister_request__descriptor,
    [LIST] = &printfarm__v1__list_instances_request__descriptor,
    [WATCH] = &printfarm__v1__watch_instances_request__descriptor,
    [RESOLVE] = &printfarm__v1__resolve_request__descriptor,
};

/* As discovery_service.c's check_kind. */
static enum pf_status check_kind(int kind, struct pf_error *err)
{
    if (kind != 0 && pf_disc_kind_name(kind) == NULL)
        return pf_error_set(err, PF_E_INVALID, "kind %d is not a known InstanceKind", kind);
    return PF_OK;
}

static void member_round_trip(int kind, const char *id)
{
    char member[PF_DISC_MEMBER_MAX], lease[PF_DISC_LEASE_MAX], back[PF_DISC_MEMBER_MAX];
    char id_back[PF_DISC_ID_MAX + 1];
    int kind_back = 0;
    struct pf_error err;

    pf_disc_member(kind, id, member, sizeof(member));
    FUZZ_CHECK(pf_disc_member_parse(member, strlen(member), &kind_back, id_back, sizeof(id_back)));
    FUZZ_CHECK(kind_back == kind && strcmp(id_back, id) == 0);
    pf_disc_lease_format(kind, id, "0123456789abcdef", lease, sizeof(lease));
    FUZZ_CHECK(pf_disc_lease_parse(lease, back, sizeof(back), &err) == PF_OK);
    FUZZ_CHECK(strcmp(back, member) == 0);
}

static enum pf_status register_request(const Printfarm__V1__RegisterRequest *r,
                                       struct pf_error *err)
{
    enum pf_disc_probe_mode mode;
    uint32_t ttl = 0;

    if (pf_disc_validate_instance(r->instance, &mode, err) != PF_OK ||
        pf_disc_ttl(r->ttl_seconds, &ttl, err) != PF_OK)
        return err->code;
    FUZZ_CHECK(ttl >= PF_DISC_TTL_MIN_S && ttl <= PF_DISC_TTL_MAX_S);
    FUZZ_CHECK(pf_disc_probe_mode_name(mode) != NULL);
    FUZZ_CHECK(pf_disc_kind_name((int)r->instance->kind) != NULL);
    FUZZ_CHECK(pf_disc_id_valid(r->instance->id));
    member_round_trip((int)r->instance->kind, r->instance->id);
    /* It carries its own labels, so a filter of them matches it. */
    if (pf_disc_validate_filter(r->instance->labels, r->instance->n_labels, err) == PF_OK)
        FUZZ_CHECK(pf_disc_labels_match(r->instance, r->instance->labels, r->instance->n_labels));
    return PF_OK;
}

static enum pf_status lease_request(const char *lease, struct pf_error *err)
{
    char member[PF_DISC_MEMBER_MAX], id[PF_DISC_ID_MAX + 1];
    int kind = 0;

    if (pf_disc_lease_parse(lease, member, sizeof(member), err) != PF_OK)
        return err->code;
    FUZZ_CHECK(strlen(lease) < PF_DISC_LEASE_MAX); /* Heartbeat copies it so */
    FUZZ_CHECK(pf_disc_member_parse(member, strlen(member), &kind, id, sizeof(id)));
    member_round_trip(kind, id);
    return PF_OK;
}

static enum pf_status list_request(const Printfarm__V1__ListInstancesRequest *r,
                                   struct pf_error *err)
{
    if (check_kind((int)r->kind, err) != PF_OK ||
        pf_disc_validate_filter(r->labels, r->n_labels, err) != PF_OK)
        return err->code;
    Printfarm__V1__Instance inst = PRINTFARM__V1__INSTANCE__INIT;
    inst.labels = r->labels;
    inst.n_labels = r->n_labels;
    FUZZ_CHECK(pf_disc_labels_match(&inst, r->labels, r->n_labels));
    return PF_OK;
}

static enum pf_status resolve_request(const Printfarm__V1__ResolveRequest *r, struct pf_error *err)
{
    struct pf_disc_role role;
    if (pf_disc_role_parse(r->role, &role, err) != PF_OK)
        return err->code;
    FUZZ_CHECK(pf_disc_kind_name(role.kind) != NULL);
    if (role.type == PF_DISC_ROLE_AGENT)
        FUZZ_CHECK(pf_disc_id_valid(role.id));
    return PF_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ProtobufCMessage *msg;
    struct pf_error err;
    enum pf_status rc;

    if (size == 0)
        return 0;
    enum rpc rpc = (enum rpc)(data[0] % RPC_COUNT);
    if (pf_pb_unpack(descriptors[rpc], data + 1, size - 1, &msg, &err) != PF_OK) {
        FUZZ_CHECK(err.code == PF_E_INVALID);
        return 0;
    }
    switch (rpc) {
    case REGISTER:
        rc = register_request((const void *)msg, &err);
        break;
    case HEARTBEAT:
        rc = lease_request(((const Printfarm__V1__HeartbeatRequest *)msg)->lease_id, &err);
        break;
    case DEREGISTER:
        rc = lease_request(((const Printfarm__V1__DeregisterRequest *)msg)->lease_id, &err);
        break;
    case LIST:
        rc = list_request((const void *)msg, &err);
        break;
    case WATCH:
        rc = check_kind((int)((const Printfarm__V1__WatchInstancesRequest *)msg)->kind, &err);
        break;
    default:
        rc = resolve_request((const void *)msg, &err);
        break;
    }
    if (rc != PF_OK)
        FUZZ_CHECK(err.code == PF_E_INVALID && err.msg[0] != '\0');
    protobuf_c_message_free_unpacked(msg, NULL);
    return 0;
}
