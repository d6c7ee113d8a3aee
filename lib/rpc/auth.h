/* Bearer tokens with roles, loaded from a token file. Each non-comment line is
 *   ROLE NAME TOKEN          e.g.  operator alice 3f9c...
 *   ROLE NAME sha256:HEX     the SHA-256 of the token, so the file holds no secret
 * ROLE is admin, operator, agent or viewer; NAME identifies the holder (for an
 * agent token, the printer id it may drive). Tokens are kept only as SHA-256
 * digests in memory and compared in constant time. */
#ifndef PF_RPC_AUTH_H
#define PF_RPC_AUTH_H

#include "status.h"

enum pf_role {
    PF_ROLE_NONE = 0,
    PF_ROLE_VIEWER = 1u << 0,
    PF_ROLE_AGENT = 1u << 1,
    PF_ROLE_OPERATOR = 1u << 2,
    PF_ROLE_ADMIN = 1u << 3,
};
#define PF_ROLES_ANY   (PF_ROLE_VIEWER | PF_ROLE_AGENT | PF_ROLE_OPERATOR | PF_ROLE_ADMIN)
#define PF_ROLES_WRITE (PF_ROLE_OPERATOR | PF_ROLE_ADMIN)

#define PF_AUTH_MIN_TOKEN_LEN 16
#define PF_AUTH_NAME_MAX      128

struct pf_auth;

/* Loads a token file. PF_E_INVALID names the file and line of a bad entry
 * (unknown role, token shorter than PF_AUTH_MIN_TOKEN_LEN, malformed hex,
 * duplicate token). */
enum pf_status pf_auth_load(const char *path, struct pf_auth **out,
                            struct pf_error *err) PF_MUST_CHECK;
/* Same from text already in memory (tests, fuzzing); `origin` names it in errors. */
enum pf_status pf_auth_parse(const char *text, size_t len, const char *origin, struct pf_auth **out,
                             struct pf_error *err) PF_MUST_CHECK;
void pf_auth_destroy(struct pf_auth *a);
size_t pf_auth_count(const struct pf_auth *a);

/* Checks an `authorization` header value ("Bearer TOKEN"). On success sets
 * role and name (owned by a, valid while it lives). The work does not depend
 * on which entry matches. */
bool pf_auth_check(const struct pf_auth *a, const char *header, size_t len, enum pf_role *role,
                   const char **name);

enum pf_status pf_role_parse(const char *text, enum pf_role *out) PF_MUST_CHECK;
const char *pf_role_name(enum pf_role role);

#endif
