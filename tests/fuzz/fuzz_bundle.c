/* Fuzz target: the bundle manifest decoder of pf-files
 * (services/files/bundle.c), which reads manifests back from disk: any
 * bytes, as stored and with the magic prepended (so the fuzzer spends its
 * time inside the protobuf message). Oracles: a manifest that decodes
 * validates, encodes again, and its encoding is a fixed point (decode then
 * encode gives the same bytes), so equal bundles have equal digests. */
#include <string.h>

#include "bundle.h"
#include "fuzz.h"

static void decode_one(const char *data, size_t len)
{
    Printfarm__V1__Bundle *b = NULL, *again = NULL;
    char *enc = NULL, *enc2 = NULL;
    size_t enc_len = 0, enc2_len = 0;
    struct pf_error err;

    if (pf_bundle_decode(data, len, &b, &err) != PF_OK) {
        FUZZ_CHECK(b == NULL && err.code == PF_E_INVALID && err.msg[0] != '\0');
        return;
    }
    FUZZ_CHECK(b != NULL);
    FUZZ_CHECK(pf_bundle_validate(b, &err) == PF_OK);
    FUZZ_CHECK(pf_bundle_encode(b, &enc, &enc_len, &err) == PF_OK);
    FUZZ_CHECK(enc_len <= PF_BUNDLE_ENCODED_MAX);
    FUZZ_CHECK(pf_bundle_decode(enc, enc_len, &again, &err) == PF_OK);
    FUZZ_CHECK(pf_bundle_encode(again, &enc2, &enc2_len, &err) == PF_OK);
    FUZZ_CHECK(enc_len == enc2_len && memcmp(enc, enc2, enc_len) == 0);
    free(enc);
    free(enc2);
    printfarm__v1__bundle__free_unpacked(again, NULL);
    printfarm__v1__bundle__free_unpacked(b, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *with_magic = malloc(PF_BUNDLE_MAGIC_LEN + size);
    FUZZ_CHECK(with_magic != NULL);
    memcpy(with_magic, PF_BUNDLE_MAGIC, PF_BUNDLE_MAGIC_LEN);
    if (size > 0)
        memcpy(with_magic + PF_BUNDLE_MAGIC_LEN, data, size);
    decode_one((const char *)data, size);
    decode_one(with_magic, PF_BUNDLE_MAGIC_LEN + size);
    free(with_magic);
    return 0;
}
