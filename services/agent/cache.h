/* pf-agent's content-addressed file cache: DIR/blobs/<sha256 hex>, filled by
 * downloading from pf-files by digest. A download resumes from the bytes its
 * DIR/blobs/<hex>.part already holds after a dropped connection, and the
 * whole file's SHA-256 is checked before it is renamed into place, so an
 * unverified file is never handed out. A blob already held is checked again
 * on every use (its size, then its full hash): a file corrupted on disk is
 * removed and downloaded again. The cache keeps at most max_bytes, evicting
 * the least recently used blobs that no print is using (a pinned blob is
 * never evicted). Use times survive restarts through the files' mtimes.
 *
 * Thread-safe: one cache serves every printer of the process; two fetches of
 * the same digest share one download. */
#ifndef PF_AGENT_CACHE_H
#define PF_AGENT_CACHE_H

#include <stdatomic.h>
#include <stdint.h>
#include "digest.h"
#include "metrics.h"
#include "rpc/client.h"

struct pf_cache_config {
    const char *dir;             /* created if missing */
    uint64_t max_bytes;          /* 0 = unlimited */
    int64_t download_timeout_ms; /* give up a download after this long in total; 0 = 10 min */
    int64_t retry_base_ms;       /* first retry after a dropped download; 0 = 200 ms */
    int64_t retry_max_ms;        /* 0 = 10 s */
    /* One download stream lasts at most this long (a stalled pf-files cannot
     * hold a download forever, and a cancel is seen within it); a try that
     * ran out while bytes flowed resumes at once. 0 = 10 s. */
    int64_t try_timeout_ms;
    struct pf_metrics *metrics; /* borrowed; NULL = none */
};

struct pf_cache;

/* Opens (and scans) the cache. The config is copied. */
enum pf_status pf_cache_open(const struct pf_cache_config *cfg, struct pf_cache **out,
                             struct pf_error *err) PF_MUST_CHECK;
void pf_cache_close(struct pf_cache *c);

/* Makes the blob digest available and verified, downloading it from files
 * if needed (expected_size > 0 is checked too), and pins it: it will not be
 * evicted until pf_cache_unpin. path_out receives its path. cancel (may be
 * NULL) is checked between tries. Errors: PF_E_NOT_FOUND when pf-files has
 * no such blob, PF_E_DATA_LOSS when every download hashed wrong,
 * PF_E_DEADLINE when download_timeout_ms passed (the last error in the
 * message), PF_E_CANCELLED, PF_E_IO for the local disk. */
enum pf_status pf_cache_fetch(struct pf_cache *c, struct pf_rpc_channel *files,
                              const struct pf_digest *digest, uint64_t expected_size,
                              const atomic_bool *cancel, char *path_out, size_t path_size,
                              struct pf_error *err) PF_MUST_CHECK;
/* Releases a pin taken by pf_cache_fetch (pins count). */
void pf_cache_unpin(struct pf_cache *c, const struct pf_digest *digest);
/* Pins a blob already held without verifying it (a print recovered after a
 * restart); false when it is not held. */
bool pf_cache_pin(struct pf_cache *c, const struct pf_digest *digest);

/* Copies up to max held digests into out (most recently used first) and
 * returns how many are held in total. */
size_t pf_cache_list(struct pf_cache *c, struct pf_digest *out, size_t max);
/* Bumped whenever the set of held blobs changes. */
uint64_t pf_cache_generation(struct pf_cache *c);
/* Bytes held; bytes downloaded since open. */
uint64_t pf_cache_bytes(struct pf_cache *c);
uint64_t pf_cache_downloaded(struct pf_cache *c);

/* Hashes the file at path: PF_OK when it is digest (and expected_size when
 * that is > 0), PF_E_DATA_LOSS naming both when not. */
enum pf_status pf_cache_verify_file(const char *path, const struct pf_digest *digest,
                                    uint64_t expected_size, struct pf_error *err) PF_MUST_CHECK;

#endif
