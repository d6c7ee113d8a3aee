/* A client of printfarm.v1.Files for the binaries that move blobs (farmctl
 * uploads, pf-agent downloads, benchmarks): streaming upload from a file or a
 * buffer, and resumable download into a file descriptor with the SHA-256
 * checked before the caller may trust the bytes. Blocking; one call at a time
 * per function invocation; the channel may be shared between threads. */
#ifndef PF_FILES_CLIENT_H
#define PF_FILES_CLIENT_H

#include <stdint.h>
#include "digest.h"
#include "rpc/client.h"

#define PF_FILES_CHUNK (1024 * 1024)

struct pf_files_upload_result {
    struct pf_digest digest;
    uint64_t size;
    bool existed;
};

/* Uploads len bytes from data (borrowed for the call; data may be NULL when
 * len is 0). expected may be NULL. timeout_ms <= 0: none. The bytes are
 * hashed as they are sent: PF_E_DATA_LOSS when the server reports another
 * digest or size. out (may be NULL) is filled only on PF_OK. Server errors
 * keep their status (PF_E_INVALID for a digest mismatch, PF_E_RESOURCE over
 * the size limit, PF_E_UNAUTHENTICATED/PF_E_PERMISSION, ...). */
enum pf_status pf_files_upload_buffer(struct pf_rpc_channel *ch, const void *data, size_t len,
                                      const struct pf_digest *expected, int64_t timeout_ms,
                                      struct pf_files_upload_result *out,
                                      struct pf_error *err) PF_MUST_CHECK;

/* Uploads the whole file at path, declaring its size; when expected is NULL no
 * digest is declared (the server computes it). PF_E_IO (and the call
 * cancelled, so nothing is stored) when the file cannot be read or changes
 * size while it is sent; errors are prefixed with the path. */
enum pf_status pf_files_upload_path(struct pf_rpc_channel *ch, const char *path,
                                    const struct pf_digest *expected, int64_t timeout_ms,
                                    struct pf_files_upload_result *out,
                                    struct pf_error *err) PF_MUST_CHECK;

/* Downloads the blob from offset, appending to fd (which must be positioned at
 * offset); *received counts the bytes written. If the stream breaks, what was
 * written stays, so a caller resumes with offset + *received. *total (total
 * may be NULL) is the blob's size from the first message. The bytes are not
 * hashed here (a range cannot be verified): PF_E_DATA_LOSS only when the
 * server says the blob is corrupt or ends the stream short. */
enum pf_status pf_files_download_fd(struct pf_rpc_channel *ch, const struct pf_digest *digest,
                                    uint64_t offset, int fd, int64_t timeout_ms, uint64_t *received,
                                    uint64_t *total, struct pf_error *err) PF_MUST_CHECK;

/* Downloads into path (resuming from the bytes path.part already holds), then
 * verifies the SHA-256 of the whole file, fsyncs it and renames path.part to
 * path. PF_E_DATA_LOSS (and path.part removed) when the bytes do not match or
 * the server reports its copy corrupt. A path.part longer than the blob is
 * discarded and the download starts over; after any other failure path.part
 * keeps what arrived, for the next attempt. */
enum pf_status pf_files_download_path(struct pf_rpc_channel *ch, const struct pf_digest *digest,
                                      const char *path, int64_t timeout_ms,
                                      struct pf_error *err) PF_MUST_CHECK;

/* Stat: PF_OK with *size, PF_E_NOT_FOUND when absent. */
enum pf_status pf_files_stat(struct pf_rpc_channel *ch, const struct pf_digest *digest,
                             int64_t timeout_ms, uint64_t *size,
                             struct pf_error *err) PF_MUST_CHECK;

#endif
