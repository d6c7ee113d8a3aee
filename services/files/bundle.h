/* The bundle manifest codec of pf-files, pure and free of I/O (with the
 * request checks of the Files API, at the end): a bundle (one
 * gcode blob per printer profile, plus a name and labels) is stored as a blob
 * whose bytes are the 8-byte magic "PFBNDL1\n" followed by the packed
 * printfarm.v1.Bundle message. The rules a bundle must follow live here, in
 * one place, so the Files service, the scheduler and the tests agree on them.
 * Every function is thread-safe (no shared state). */
#ifndef PF_BUNDLE_H
#define PF_BUNDLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "printfarm/v1/files.pb-c.h"
#include "status.h"

#define PF_BUNDLE_MAGIC     "PFBNDL1\n"
#define PF_BUNDLE_MAGIC_LEN 8

/* Limits enforced by pf_bundle_validate. Text fields must be valid UTF-8
 * without control characters; lengths are in bytes. */
#define PF_BUNDLE_NAME_MAX          200
#define PF_BUNDLE_FILES_MAX         64
#define PF_BUNDLE_PROFILE_MAX       64 /* [A-Za-z0-9._-] only */
#define PF_BUNDLE_LABELS_MAX        32
#define PF_BUNDLE_LABEL_KEY_MAX     64
#define PF_BUNDLE_LABEL_VALUE_MAX   256
#define PF_BUNDLE_METADATA_TEXT_MAX 256 /* each string of a file's GcodeMetadata */

/* An upper bound on the encoded size of any valid bundle (magic included):
 * pass it as the maximum to pf_store_read_all when loading a manifest. */
#define PF_BUNDLE_ENCODED_MAX (256 * 1024)

/* Checks every rule: name non-empty; 1..PF_BUNDLE_FILES_MAX files, each with a
 * profile unique within the bundle and a digest of 64 lower-case hex
 * characters (the canonical form, so equal bundles encode to equal bytes);
 * metadata strings bounded and numbers finite and not negative; at most
 * PF_BUNDLE_LABELS_MAX labels with non-empty, unique keys. PF_E_INVALID with a
 * message naming the field and its index ("files[2].profile 'mk4' appears
 * twice") for the first rule broken. b is borrowed. */
enum pf_status pf_bundle_validate(const Printfarm__V1__Bundle *b,
                                  struct pf_error *err) PF_MUST_CHECK;

/* Validates b (as pf_bundle_validate) and encodes it as manifest bytes. b is
 * borrowed. On success *out is a heap buffer of *len bytes owned by the caller
 * (free it); on failure *out is NULL. */
enum pf_status pf_bundle_encode(const Printfarm__V1__Bundle *b, char **out, size_t *len,
                                struct pf_error *err) PF_MUST_CHECK;

/* Decodes manifest bytes and validates the result. data is borrowed (and may
 * be freed once this returns). PF_E_INVALID when the magic is missing, the
 * message does not parse, or the bundle breaks a rule. On success *out is
 * owned by the caller: free it with
 * printfarm__v1__bundle__free_unpacked(*out, NULL); on failure *out is NULL. */
enum pf_status pf_bundle_decode(const char *data, size_t len, Printfarm__V1__Bundle **out,
                                struct pf_error *err) PF_MUST_CHECK;

/* ---- request checks of the Files API ----
 * The validation files_service.c runs on each request before it touches the
 * disk, kept here, pure, so unit tests and the fuzzer (tests/fuzz) run
 * exactly what the handlers run. */

/* Digests one FindMissing call may ask about. */
#define PF_FILES_FIND_MISSING_MAX 10000

/* Reads a Digest field of a request: present, 64 hex characters, lower case
 * only (so one blob has one name). PF_E_INVALID "FIELD is required (64 hex
 * characters)" when missing, else naming field and the problem. On PF_OK
 * *out holds the digest. d is borrowed. */
enum pf_status pf_files_check_digest(const Printfarm__V1__Digest *d, const char *field,
                                     struct pf_digest *out, struct pf_error *err) PF_MUST_CHECK;

/* FindMissing: at most PF_FILES_FIND_MISSING_MAX digests, each valid as
 * pf_files_check_digest ("digests[3]: ..."), so bad input is reported whole
 * before any blob is looked up. req is borrowed. */
enum pf_status pf_files_check_find_missing(const Printfarm__V1__FindMissingRequest *req,
                                           struct pf_error *err) PF_MUST_CHECK;

/* Upload's fast path: true when the serialized UploadRequest data[0..len) is
 * exactly one `chunk` field (and nothing else), with *chunk and *chunk_len
 * pointing at its bytes inside data (borrowed); false for anything else,
 * which the caller decodes with protobuf-c. */
bool pf_files_upload_chunk(const uint8_t *data, size_t len, const uint8_t **chunk,
                           size_t *chunk_len);

#endif
