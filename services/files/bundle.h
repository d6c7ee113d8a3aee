/* The bundle manifest codec of pf-files, pure and free of I/O: a bundle (one
 * gcode blob per printer profile, plus a name and labels) is stored as a blob
 * whose bytes are the 8-byte magic "PFBNDL1\n" followed by the packed
 * printfarm.v1.Bundle message. The rules a bundle must follow live here, in
 * one place, so the Files service, the scheduler and the tests agree on them.
 * Every function is thread-safe (no shared state). */
#ifndef PF_BUNDLE_H
#define PF_BUNDLE_H

#include <stddef.h>

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

#endif
