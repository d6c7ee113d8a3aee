/* pf-discovery's pure rules, with no I/O so unit tests call them directly:
 * what a valid registration is (kind, id, address, labels, version, TTL),
 * the names used in Redis (kind names, members, lease ids), how a Resolve
 * role is read, label filters and the order of health. */
#ifndef PF_DISC_VALIDATE_H
#define PF_DISC_VALIDATE_H

#include <stdint.h>
#include "printfarm/v1/discovery.pb-c.h"
#include "status.h"

#define PF_DISC_ID_MAX          64
#define PF_DISC_LABELS_MAX      32
#define PF_DISC_LABEL_KEY_MAX   64
#define PF_DISC_LABEL_VALUE_MAX 256
#define PF_DISC_VERSION_MAX     64
#define PF_DISC_HOST_MAX        253
#define PF_DISC_ADDRESS_MAX     262 /* "[" host "]:" port, NUL included */
#define PF_DISC_TTL_DEFAULT_S   15
#define PF_DISC_TTL_MIN_S       1
#define PF_DISC_TTL_MAX_S       3600
#define PF_DISC_NONCE_LEN       16
#define PF_DISC_MEMBER_MAX      (16 + PF_DISC_ID_MAX + 1)
#define PF_DISC_LEASE_MAX       (PF_DISC_MEMBER_MAX + PF_DISC_NONCE_LEN + 1)
#define PF_DISC_KIND_MAX        5 /* INSTANCE_KIND_WEB */

/* How the prober checks an instance, from its `probe` label. */
enum pf_disc_probe_mode {
    PF_DISC_PROBE_GRPC = 0, /* grpc.health.v1.Health/Check on the address (default) */
    PF_DISC_PROBE_HTTP,     /* GET /healthz over HTTP on the address (agents' admin port) */
    PF_DISC_PROBE_OFF,      /* not probed: health stays UNKNOWN */
};

/* "scheduler", "files", "agent", "discovery", "web"; NULL for any other value. */
const char *pf_disc_kind_name(int kind);
/* The kind named by the first len bytes of name; 0 when none. */
int pf_disc_kind_from_name(const char *name, size_t len);

/* 1..PF_DISC_ID_MAX bytes of [A-Za-z0-9._-]. */
bool pf_disc_id_valid(const char *id);

/* Checks a registration. PF_E_INVALID with a message naming the field:
 * "instance.kind is required", "instance.id 'a b' has ' ' at byte 1: use
 * [A-Za-z0-9._-]", "instance.address 'x' ...", "instance.labels[3].value is
 * 300 bytes: at most 256", ... On PF_OK *mode (may be NULL) is the probe
 * mode from the `probe` label. */
enum pf_status pf_disc_validate_instance(const Printfarm__V1__Instance *inst,
                                         enum pf_disc_probe_mode *mode,
                                         struct pf_error *err) PF_MUST_CHECK;

/* Checks a dialable HOST:PORT (port 1..65535, host not 0.0.0.0 or ::). field
 * names it in messages. */
enum pf_status pf_disc_validate_address(const char *address, const char *field,
                                        struct pf_error *err) PF_MUST_CHECK;

/* The TTL to grant: 0 means PF_DISC_TTL_DEFAULT_S; otherwise it must be in
 * PF_DISC_TTL_MIN_S..PF_DISC_TTL_MAX_S (PF_E_INVALID naming ttl_seconds). */
enum pf_status pf_disc_ttl(uint32_t asked, uint32_t *granted, struct pf_error *err) PF_MUST_CHECK;

const char *pf_disc_probe_mode_name(enum pf_disc_probe_mode mode);
/* "grpc", "http", "off" (NULL or "" is grpc); false for anything else. */
bool pf_disc_probe_mode_parse(const char *text, enum pf_disc_probe_mode *out);

/* The member name of an instance in Redis: "KINDNAME:ID". out_size >=
 * PF_DISC_MEMBER_MAX. kind and id must be valid. */
void pf_disc_member(int kind, const char *id, char *out, size_t out_size);
/* Splits a member into kind and id (id_size >= PF_DISC_ID_MAX + 1); false when
 * it is not one. */
bool pf_disc_member_parse(const char *member, size_t len, int *kind, char *id, size_t id_size);

/* A lease id: "KINDNAME/ID/NONCE" (nonce: PF_DISC_NONCE_LEN lower-case hex).
 * It names the entry, so a Heartbeat needs no lookup, and the nonce tells one
 * registration of an id from the next. out_size >= PF_DISC_LEASE_MAX. */
void pf_disc_lease_format(int kind, const char *id, const char *nonce, char *out, size_t out_size);
/* Reads a lease id. PF_E_INVALID "lease_id is required" when empty, or
 * "lease_id '...' is not a lease this service grants" when malformed. member
 * (member_size >= PF_DISC_MEMBER_MAX) gets the entry's member name. */
enum pf_status pf_disc_lease_parse(const char *lease, char *member, size_t member_size,
                                   struct pf_error *err) PF_MUST_CHECK;

/* True when inst carries every label of want (an empty wanted value only
 * needs the key). */
bool pf_disc_labels_match(const Printfarm__V1__Instance *inst, Printfarm__V1__Label *const *want,
                          size_t n_want);
/* Checks a List filter's labels: at most PF_DISC_LABELS_MAX, keys non-empty. */
enum pf_status pf_disc_validate_filter(Printfarm__V1__Label *const *want, size_t n_want,
                                       struct pf_error *err) PF_MUST_CHECK;

/* Order for Resolve: SERVING first, then UNKNOWN, NOT_SERVING, UNREACHABLE. */
int pf_disc_health_rank(int health);

/* What Resolve was asked for. */
enum pf_disc_role_type {
    PF_DISC_ROLE_LEADER, /* "scheduler-leader" */
    PF_DISC_ROLE_KIND,   /* "scheduler", "files", "discovery", "web": every instance of kind */
    PF_DISC_ROLE_AGENT,  /* "agent/PRINTER_ID" */
};

struct pf_disc_role {
    enum pf_disc_role_type type;
    int kind;
    char id[PF_DISC_ID_MAX + 1];
};

/* Reads a role. PF_E_INVALID "role 'x' is not known: use scheduler-leader,
 * scheduler, files, discovery, web or agent/PRINTER_ID". */
enum pf_status pf_disc_role_parse(const char *role, struct pf_disc_role *out,
                                  struct pf_error *err) PF_MUST_CHECK;

/* The scheduler's leader lease holds "ADVERTISE|instance": copies ADVERTISE
 * into out. False when value holds no address. */
bool pf_disc_leader_address(const char *value, char *out, size_t out_size);

/* Orders two stream ids "MS-SEQ" (a missing or malformed id sorts first):
 * <0, 0, >0 as for strcmp. */
int pf_disc_stream_id_cmp(const char *a, const char *b);

#endif
