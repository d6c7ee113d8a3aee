/* SHA-256 through OpenSSL EVP, and the textual form of a digest used across the
 * API: 64 lower-case hex characters. */
#ifndef PF_DIGEST_H
#define PF_DIGEST_H

#include <stdint.h>
#include "status.h"

#define PF_DIGEST_LEN     32
#define PF_DIGEST_HEX_LEN 64

struct pf_digest {
    uint8_t bytes[PF_DIGEST_LEN];
};

/* A streaming hash. Heap handle: create/destroy. Not thread-safe. */
struct pf_sha256;
struct pf_sha256 *pf_sha256_create(void);
void pf_sha256_update(struct pf_sha256 *h, const void *data, size_t len);
/* Writes the digest; the handle may be reused after pf_sha256_reset. */
void pf_sha256_final(struct pf_sha256 *h, struct pf_digest *out);
void pf_sha256_reset(struct pf_sha256 *h);
void pf_sha256_destroy(struct pf_sha256 *h);

/* One-shot hash of a buffer. */
void pf_sha256(const void *data, size_t len, struct pf_digest *out);

/* hex must have room for PF_DIGEST_HEX_LEN + 1 bytes. */
void pf_digest_to_hex(const struct pf_digest *d, char *hex);

/* Accepts exactly 64 hex characters (either case); anything else is PF_E_INVALID
 * with a message quoting (a prefix of) the text. */
enum pf_status pf_digest_from_hex(const char *hex, size_t len, struct pf_digest *out,
                                  struct pf_error *err) PF_MUST_CHECK;

bool pf_digest_equal(const struct pf_digest *a, const struct pf_digest *b);

#endif
