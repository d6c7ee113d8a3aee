/* SHA-256 through OpenSSL's EVP interface, and the 64-character lower-case hex
 * form every API, path and log line uses for a blob's identity. Parsing the hex
 * form is strict (exact length, hex only) because a digest names stored bytes:
 * anything loose here would let two spellings address one blob. */
#include "digest.h"

#include <stdio.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

struct pf_sha256 {
    EVP_MD_CTX *ctx;
};

struct pf_sha256 *pf_sha256_create(void)
{
    struct pf_sha256 *h = OPENSSL_zalloc(sizeof *h);
    if (h == NULL)
        return NULL;
    h->ctx = EVP_MD_CTX_new();
    if (h->ctx == NULL)
        goto out_free_handle;
    if (EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1)
        goto out_free_ctx;
    return h;

out_free_ctx:
    EVP_MD_CTX_free(h->ctx);
out_free_handle:
    OPENSSL_free(h);
    return NULL;
}

void pf_sha256_update(struct pf_sha256 *h, const void *data, size_t len)
{
    if (len > 0)
        EVP_DigestUpdate(h->ctx, data, len);
}

void pf_sha256_final(struct pf_sha256 *h, struct pf_digest *out)
{
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(h->ctx, out->bytes, &len) != 1 || len != PF_DIGEST_LEN)
        memset(out->bytes, 0, sizeof out->bytes);
}

void pf_sha256_reset(struct pf_sha256 *h)
{
    EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL);
}

void pf_sha256_destroy(struct pf_sha256 *h)
{
    if (h == NULL)
        return;
    EVP_MD_CTX_free(h->ctx);
    OPENSSL_free(h);
}

void pf_sha256(const void *data, size_t len, struct pf_digest *out)
{
    unsigned int out_len = 0;
    static const char empty[1];
    if (EVP_Digest(len > 0 ? data : empty, len, out->bytes, &out_len, EVP_sha256(), NULL) != 1 ||
        out_len != PF_DIGEST_LEN)
        memset(out->bytes, 0, sizeof out->bytes);
}

void pf_digest_to_hex(const struct pf_digest *d, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < PF_DIGEST_LEN; i++) {
        hex[2 * i] = digits[d->bytes[i] >> 4];
        hex[2 * i + 1] = digits[d->bytes[i] & 0x0f];
    }
    hex[PF_DIGEST_HEX_LEN] = '\0';
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A printable prefix of untrusted text for an error message: at most 16
 * characters, anything unprintable shown as '?', "..." when cut. */
static void quote_prefix(const char *text, size_t len, char *out, size_t out_size)
{
    size_t shown = len < 16 ? len : 16;
    size_t n = 0;
    for (size_t i = 0; i < shown && n + 1 < out_size; i++) {
        unsigned char c = (unsigned char)text[i];
        out[n++] = (c >= 0x20 && c < 0x7f && c != '\'') ? (char)c : '?';
    }
    if (shown < len && n + 4 < out_size) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

enum pf_status pf_digest_from_hex(const char *hex, size_t len, struct pf_digest *out,
                                  struct pf_error *err)
{
    if (hex == NULL)
        return pf_error_set(err, PF_E_INVALID, "missing digest: expected %d hex characters",
                            PF_DIGEST_HEX_LEN);
    char shown[24];
    quote_prefix(hex, len, shown, sizeof shown);
    if (len != PF_DIGEST_HEX_LEN)
        return pf_error_set(err, PF_E_INVALID,
                            "invalid digest '%s': expected %d hex characters, got %zu", shown,
                            PF_DIGEST_HEX_LEN, len);
    struct pf_digest d;
    for (size_t i = 0; i < PF_DIGEST_LEN; i++) {
        int hi = hex_value((unsigned char)hex[2 * i]);
        int lo = hex_value((unsigned char)hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            size_t at = hi < 0 ? 2 * i : 2 * i + 1;
            return pf_error_set(err, PF_E_INVALID,
                                "invalid digest '%s': character %zu is not a hex digit", shown,
                                at + 1);
        }
        d.bytes[i] = (uint8_t)(hi << 4 | lo);
    }
    *out = d;
    return PF_OK;
}

bool pf_digest_equal(const struct pf_digest *a, const struct pf_digest *b)
{
    return memcmp(a->bytes, b->bytes, PF_DIGEST_LEN) == 0;
}
