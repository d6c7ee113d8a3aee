/* Fuzz target: pf-files request handling. Byte 0 picks the RPC, the rest is
 * its serialized request as a client would send it; the target decodes it
 * with protobuf-c as files_service.c does and runs the same checks the
 * handler runs before it touches the disk (bundle.h's request checks and
 * the bundle codec).
 *
 * Oracles: an accepted digest reads back as the same lower-case hex; the
 * Upload fast path (pf_files_upload_chunk) agrees with protobuf-c on every
 * message it takes; an accepted PutBundle manifest decodes back, and every
 * file digest it names passes the digest check the handler runs next. */
#include <string.h>

#include "bundle.h"
#include "fuzz.h"
#include "rpc/pb.h"

enum rpc { UPLOAD, DOWNLOAD, STAT, FIND_MISSING, PUT_BUNDLE, GET_BUNDLE, RPC_COUNT };

static void digest_field(const Printfarm__V1__Digest *d, const char *field)
{
    struct pf_digest out;
    struct pf_error err;
    char hex[PF_DIGEST_HEX_LEN + 1];

    if (pf_files_check_digest(d, field, &out, &err) != PF_OK) {
        FUZZ_CHECK(err.code == PF_E_INVALID && strstr(err.msg, field) == err.msg);
        return;
    }
    pf_digest_to_hex(&out, hex);
    FUZZ_CHECK(strcmp(hex, d->sha256) == 0);
}

static void upload(const uint8_t *data, size_t len)
{
    Printfarm__V1__UploadRequest *req = NULL;
    const uint8_t *chunk = NULL;
    size_t chunk_len = 0;
    struct pf_error err;
    bool fast = pf_files_upload_chunk(data, len, &chunk, &chunk_len);

    if (fast)
        FUZZ_CHECK(chunk >= data && chunk + chunk_len == data + len);
    if (pf_pb_unpack(&printfarm__v1__upload_request__descriptor, data, len,
                     (ProtobufCMessage **)&req, &err) != PF_OK) {
        FUZZ_CHECK(!fast);
        return;
    }
    if (fast) {
        FUZZ_CHECK(req->part_case == PRINTFARM__V1__UPLOAD_REQUEST__PART_CHUNK);
        FUZZ_CHECK(req->chunk.len == chunk_len);
        FUZZ_CHECK(chunk_len == 0 || memcmp(req->chunk.data, chunk, chunk_len) == 0);
    }
    if (req->part_case == PRINTFARM__V1__UPLOAD_REQUEST__PART_HEADER &&
        req->header->expected != NULL)
        digest_field(req->header->expected, "header.expected");
    printfarm__v1__upload_request__free_unpacked(req, NULL);
}

static void find_missing(const uint8_t *data, size_t len)
{
    Printfarm__V1__FindMissingRequest *req;
    struct pf_error err;

    if (pf_pb_unpack(&printfarm__v1__find_missing_request__descriptor, data, len,
                     (ProtobufCMessage **)&req, &err) != PF_OK)
        return;
    if (pf_files_check_find_missing(req, &err) == PF_OK) {
        FUZZ_CHECK(req->n_digests <= PF_FILES_FIND_MISSING_MAX);
        for (size_t i = 0; i < req->n_digests; i++)
            digest_field(req->digests[i], "digests[]");
    } else {
        FUZZ_CHECK(err.code == PF_E_INVALID);
    }
    printfarm__v1__find_missing_request__free_unpacked(req, NULL);
}

static void put_bundle(const uint8_t *data, size_t len)
{
    Printfarm__V1__PutBundleRequest *req;
    Printfarm__V1__Bundle *back = NULL;
    char *manifest = NULL;
    size_t manifest_len = 0;
    struct pf_error err;

    if (pf_pb_unpack(&printfarm__v1__put_bundle_request__descriptor, data, len,
                     (ProtobufCMessage **)&req, &err) != PF_OK)
        return;
    if (req->bundle != NULL &&
        pf_bundle_encode(req->bundle, &manifest, &manifest_len, &err) == PF_OK) {
        for (size_t i = 0; i < req->bundle->n_files; i++) {
            struct pf_digest d;
            FUZZ_CHECK(pf_files_check_digest(req->bundle->files[i]->digest, "files[].digest", &d,
                                             &err) == PF_OK);
        }
        enum pf_status drc = pf_bundle_decode(manifest, manifest_len, &back, &err);
        if (drc != PF_OK)
            fprintf(stderr, "encoded manifest does not decode: %s\n", err.msg);
        FUZZ_CHECK(drc == PF_OK);
        FUZZ_CHECK(back->n_files == req->bundle->n_files);
        printfarm__v1__bundle__free_unpacked(back, NULL);
        free(manifest);
    } else {
        FUZZ_CHECK(manifest == NULL);
    }
    printfarm__v1__put_bundle_request__free_unpacked(req, NULL);
}

/* Download, Stat and GetBundle: a digest (and Download's offset and chunk
 * size, which the handler clamps and the store checks). */
static void digest_request(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len)
{
    ProtobufCMessage *msg;
    struct pf_error err;

    if (pf_pb_unpack(desc, data, len, &msg, &err) != PF_OK) {
        FUZZ_CHECK(err.code == PF_E_INVALID);
        return;
    }
    if (desc == &printfarm__v1__download_request__descriptor)
        digest_field(((Printfarm__V1__DownloadRequest *)msg)->digest, "digest");
    else if (desc == &printfarm__v1__stat_request__descriptor)
        digest_field(((Printfarm__V1__StatRequest *)msg)->digest, "digest");
    else
        digest_field(((Printfarm__V1__GetBundleRequest *)msg)->digest, "digest");
    protobuf_c_message_free_unpacked(msg, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *req = data + 1;
    size_t len = size - 1;
    switch ((enum rpc)(data[0] % RPC_COUNT)) {
    case UPLOAD:
        upload(req, len);
        break;
    case DOWNLOAD:
        digest_request(&printfarm__v1__download_request__descriptor, req, len);
        break;
    case STAT:
        digest_request(&printfarm__v1__stat_request__descriptor, req, len);
        break;
    case FIND_MISSING:
        find_missing(req, len);
        break;
    case PUT_BUNDLE:
        put_bundle(req, len);
        break;
    default:
        digest_request(&printfarm__v1__get_bundle_request__descriptor, req, len);
        break;
    }
    return 0;
}
