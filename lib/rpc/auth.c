/* Bearer tokens with roles from a token file. Tokens are held only as SHA-256
 * digests; a presented token is hashed and compared against every entry with
 * CRYPTO_memcmp, so the time taken does not depend on which entry matches. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include "digest.h"
#include "rpc/auth.h"

#define TOKEN_FILE_MAX (4 * 1024 * 1024)
#define MAX_ENTRIES    100000

struct auth_entry {
    struct pf_digest hash;
    enum pf_role role;
    char name[PF_AUTH_NAME_MAX + 1];
};

struct pf_auth {
    struct auth_entry *entries;
    size_t count;
};

enum pf_status pf_role_parse(const char *text, enum pf_role *out)
{
    static const struct {
        const char *name;
        enum pf_role role;
    } roles[] = {{"viewer", PF_ROLE_VIEWER},
                 {"agent", PF_ROLE_AGENT},
                 {"operator", PF_ROLE_OPERATOR},
                 {"admin", PF_ROLE_ADMIN}};
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
        if (strcmp(text, roles[i].name) == 0) {
            *out = roles[i].role;
            return PF_OK;
        }
    }
    return PF_E_INVALID;
}

const char *pf_role_name(enum pf_role role)
{
    switch (role) {
    case PF_ROLE_VIEWER:
        return "viewer";
    case PF_ROLE_AGENT:
        return "agent";
    case PF_ROLE_OPERATOR:
        return "operator";
    case PF_ROLE_ADMIN:
        return "admin";
    case PF_ROLE_NONE:
        break;
    }
    return "none";
}

/* Splits the next whitespace-separated field of a line. */
static char *next_field(char **cursor)
{
    char *p = *cursor;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0')
        return NULL;
    char *start = p;
    while (*p != '\0' && *p != ' ' && *p != '\t')
        p++;
    if (*p != '\0')
        *p++ = '\0';
    *cursor = p;
    return start;
}

static enum pf_status parse_line(char *line, const char *origin, int lineno, struct auth_entry *e,
                                 struct pf_error *err)
{
    char *cursor = line;
    char *role = next_field(&cursor);
    char *name = next_field(&cursor);
    char *token = next_field(&cursor);
    char *extra = next_field(&cursor);

    if (role == NULL || name == NULL || token == NULL || extra != NULL)
        return pf_error_set(err, PF_E_INVALID,
                            "%s:%d: expected 'ROLE NAME TOKEN' (or sha256:HEX for the token)",
                            origin, lineno);
    if (pf_role_parse(role, &e->role) != PF_OK)
        return pf_error_set(err, PF_E_INVALID,
                            "%s:%d: unknown role '%.32s' (admin, operator, agent or viewer)",
                            origin, lineno, role);
    if (strlen(name) > PF_AUTH_NAME_MAX)
        return pf_error_set(err, PF_E_INVALID, "%s:%d: name longer than %d bytes", origin, lineno,
                            PF_AUTH_NAME_MAX);
    for (const char *p = name; *p != '\0'; p++) {
        if (!isprint((unsigned char)*p))
            return pf_error_set(err, PF_E_INVALID, "%s:%d: name has a control character", origin,
                                lineno);
    }
    strcpy(e->name, name);
    if (strncmp(token, "sha256:", 7) == 0) {
        struct pf_error derr;
        if (pf_digest_from_hex(token + 7, strlen(token + 7), &e->hash, &derr) != PF_OK)
            return pf_error_set(err, PF_E_INVALID, "%s:%d: %s", origin, lineno, derr.msg);
    } else {
        if (strlen(token) < PF_AUTH_MIN_TOKEN_LEN)
            return pf_error_set(err, PF_E_INVALID,
                                "%s:%d: token for '%s' is shorter than %d characters", origin,
                                lineno, name, PF_AUTH_MIN_TOKEN_LEN);
        pf_sha256(token, strlen(token), &e->hash);
    }
    return PF_OK;
}

enum pf_status pf_auth_parse(const char *text, size_t len, const char *origin, struct pf_auth **out,
                             struct pf_error *err)
{
    struct pf_auth *a = calloc(1, sizeof(*a));
    char *copy = malloc(len + 1);
    size_t cap = 0;
    int lineno = 0;
    enum pf_status rc = PF_OK;

    if (a == NULL || copy == NULL) {
        rc = pf_error_set(err, PF_E_RESOURCE, "out of memory");
        goto out_free;
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    if (memchr(text, '\0', len) != NULL) {
        rc = pf_error_set(err, PF_E_INVALID, "%s: contains a NUL byte", origin);
        goto out_free;
    }
    for (char *line = copy; line != NULL;) {
        char *nl = strchr(line, '\n');
        if (nl != NULL)
            *nl = '\0';
        lineno++;
        size_t l = strlen(line);
        if (l > 0 && line[l - 1] == '\r')
            line[l - 1] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != '\0' && *p != '#') {
            if (a->count == cap) {
                size_t ncap = cap ? cap * 2 : 8;
                struct auth_entry *grown;
                if (ncap > MAX_ENTRIES ||
                    (grown = realloc(a->entries, ncap * sizeof(*grown))) == NULL) {
                    rc = pf_error_set(err, PF_E_RESOURCE, "%s: too many tokens", origin);
                    goto out_free;
                }
                a->entries = grown;
                cap = ncap;
            }
            rc = parse_line(p, origin, lineno, &a->entries[a->count], err);
            if (rc != PF_OK)
                goto out_free;
            for (size_t i = 0; i < a->count; i++) {
                if (pf_digest_equal(&a->entries[i].hash, &a->entries[a->count].hash)) {
                    rc = pf_error_set(err, PF_E_INVALID, "%s:%d: the same token appears twice",
                                      origin, lineno);
                    goto out_free;
                }
            }
            a->count++;
        }
        line = nl != NULL ? nl + 1 : NULL;
    }
    free(copy);
    *out = a;
    return PF_OK;
out_free:
    free(copy);
    pf_auth_destroy(a);
    return rc;
}

enum pf_status pf_auth_load(const char *path, struct pf_auth **out, struct pf_error *err)
{
    FILE *fp = fopen(path, "rb");
    char *buf;
    size_t n;
    enum pf_status rc;

    if (fp == NULL)
        return pf_error_set(err, PF_E_INVALID, "could not open token file '%s': %s", path,
                            strerror(errno));
    buf = malloc(TOKEN_FILE_MAX + 1);
    if (buf == NULL) {
        fclose(fp);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    n = fread(buf, 1, TOKEN_FILE_MAX + 1, fp);
    fclose(fp);
    if (n > TOKEN_FILE_MAX) {
        free(buf);
        return pf_error_set(err, PF_E_INVALID, "token file '%s' is larger than 4 MiB", path);
    }
    rc = pf_auth_parse(buf, n, path, out, err);
    free(buf);
    return rc;
}

void pf_auth_destroy(struct pf_auth *a)
{
    if (a == NULL)
        return;
    free(a->entries);
    free(a);
}

size_t pf_auth_count(const struct pf_auth *a)
{
    return a->count;
}

bool pf_auth_check(const struct pf_auth *a, const char *header, size_t len, enum pf_role *role,
                   const char **name)
{
    struct pf_digest h;
    const struct auth_entry *match = NULL;

    if (len < 7 || strncasecmp(header, "Bearer ", 7) != 0)
        return false;
    pf_sha256(header + 7, len - 7, &h);
    for (size_t i = 0; i < a->count; i++) {
        /* No early exit: every entry is compared. */
        if (CRYPTO_memcmp(h.bytes, a->entries[i].hash.bytes, PF_DIGEST_LEN) == 0)
            match = &a->entries[i];
    }
    if (match == NULL)
        return false;
    *role = match->role;
    *name = match->name;
    return true;
}
