/* The content-addressed blob store of pf-files: blobs named by the SHA-256 of
 * their bytes, kept on disk as DATA_DIR/blobs/ab/cd/<64 hex> with uploads in
 * progress in DATA_DIR/tmp/. An upload is hashed while it is written to a temp
 * file, checked, fsynced and linked into place, so a blob is either wholly
 * present or absent; a blob whose bytes no longer match its name is never
 * served (PF_E_DATA_LOSS). No gRPC here: the Files service calls these
 * functions from its worker threads.
 *
 * Thread-safety: a struct pf_store is shared by every thread from
 * pf_store_open until pf_store_close; all functions that take it may run
 * concurrently (concurrent uploads of the same content are safe: one blob
 * results and every upload succeeds). A writer or a reader belongs to one
 * upload or download: use it from one thread at a time (handing it from one
 * worker thread to another between calls is fine). */
#ifndef PF_STORE_H
#define PF_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "status.h"

/* Defaults used for a limit left at 0. */
#define PF_STORE_DEFAULT_MAX_BLOB_BYTES  ((uint64_t)1 << 30) /* 1 GiB */
#define PF_STORE_DEFAULT_MAX_CHUNK_BYTES ((size_t)4 << 20)   /* 4 MiB */

/* Number of verified blobs remembered (see pf_store_reader_open). */
#define PF_STORE_VERIFY_CACHE_SLOTS 4096

struct pf_store_limits {
    uint64_t max_blob_bytes; /* largest blob an upload may declare; 0 = default */
    size_t max_chunk_bytes;  /* largest single pf_store_writer_write; 0 = default */
};

struct pf_store;        /* opaque: one data directory */
struct pf_store_writer; /* opaque: one upload in progress */
struct pf_store_reader; /* opaque: one download in progress */

/* Opens the store in dir, creating dir (and its parents), dir/blobs and dir/tmp
 * when missing, and removes every file left in dir/tmp by uploads that a crash
 * interrupted (logged as event=store_open tmp_removed=N). The store holds an
 * exclusive flock(2) on dir until pf_store_close, because cleaning tmp/ would
 * destroy another store's uploads in progress: a second open of the same
 * directory (from this or another process) fails with PF_E_PRECONDITION.
 * PF_E_IO when a directory cannot be created or opened. lim may be NULL
 * (defaults). dir and lim are copied. On success *out is a heap handle owned
 * by the caller, freed by pf_store_close. */
enum pf_status pf_store_open(const char *dir, const struct pf_store_limits *lim,
                             struct pf_store **out, struct pf_error *err) PF_MUST_CHECK;

/* Frees the store. Every writer and reader must have been finished first.
 * NULL is a no-op. */
void pf_store_close(struct pf_store *store);

/* Starts an upload of declared_size bytes into a new unique temp file.
 * expected (may be NULL) is the digest the client declared; it is copied.
 * PF_E_RESOURCE when declared_size is over the maximum blob size; PF_E_IO when
 * the temp file cannot be created. On success *out is owned by the caller and
 * must be finished by exactly one pf_store_writer_commit or
 * pf_store_writer_abort, which free it. */
enum pf_status pf_store_writer_begin(struct pf_store *store, uint64_t declared_size,
                                     const struct pf_digest *expected, struct pf_store_writer **out,
                                     struct pf_error *err) PF_MUST_CHECK;

/* Appends len bytes (data may be NULL when len is 0) and hashes them.
 * PF_E_INVALID when len is over the maximum chunk size or the bytes would pass
 * the declared size; PF_E_IO when the disk write fails. After any error the
 * upload is dead: the writer stays owned by the caller, later writes and the
 * commit fail, and only pf_store_writer_abort is useful. */
enum pf_status pf_store_writer_write(struct pf_store_writer *w, const void *data, size_t len,
                                     struct pf_error *err) PF_MUST_CHECK;

/* Finishes the upload and FREES w, whatever the result. Checks that exactly the
 * declared size arrived and that the content matches the expected digest (both
 * PF_E_INVALID), fsyncs the file and links it into place, fsyncing the
 * directories it touched. When the blob is already stored (an earlier or a
 * concurrent upload of the same bytes) the stored copy is kept, *existed is
 * true and the temp file is dropped; a stored copy found corrupt is replaced
 * by the new, verified bytes (*existed false). On success *out (may be NULL)
 * is the blob's digest. On any failure nothing of this upload is left on disk,
 * with one exception: when the blob was linked into place but fsyncing its
 * directory then failed (PF_E_IO), the blob, whose bytes are verified, stays. */
enum pf_status pf_store_writer_commit(struct pf_store_writer *w, struct pf_digest *out,
                                      bool *existed, struct pf_error *err) PF_MUST_CHECK;

/* Abandons the upload (the client went away or an error ended it): removes the
 * temp file and FREES w. NULL is a no-op. */
void pf_store_writer_abort(struct pf_store_writer *w);

/* Stores len bytes held in memory (a bundle manifest) as one blob: begin,
 * write and commit in one call, without the chunk limit, which is about
 * network messages. expected (may be NULL), *out (may be NULL), *existed (may
 * be NULL) and every error are as for pf_store_writer_begin and
 * pf_store_writer_commit. data is borrowed. */
enum pf_status pf_store_put(struct pf_store *store, const void *data, size_t len,
                            const struct pf_digest *expected, struct pf_digest *out, bool *existed,
                            struct pf_error *err) PF_MUST_CHECK;

/* Reports whether the blob exists, and its size (*size may be NULL). Does not
 * read the content. PF_E_NOT_FOUND when absent. */
enum pf_status pf_store_stat(struct pf_store *store, const struct pf_digest *digest, uint64_t *size,
                             struct pf_error *err) PF_MUST_CHECK;

/* Hashes the whole blob now, ignoring the verification cache, and records the
 * result in it: PF_OK when the bytes match the digest, PF_E_DATA_LOSS when they
 * do not, PF_E_NOT_FOUND when the blob is absent. Meant for scrubbing and for
 * callers that must not trust the cache; it reads the whole file. */
enum pf_status pf_store_verify(struct pf_store *store, const struct pf_digest *digest,
                               struct pf_error *err) PF_MUST_CHECK;

/* Opens the blob for reading from offset; *total_size (may be NULL) is its
 * size. offset == size is valid (nothing left to read).
 *
 * Integrity: the blob is verified before any byte is served. Hashing every
 * blob on every download would make a farm of agents re-read the disk many
 * times over, so the store remembers, for up to PF_STORE_VERIFY_CACHE_SLOTS
 * blobs, that a digest was verified while its file had a given (device,
 * inode, size, mtime, ctime); an unchanged file is not hashed again, and any
 * write, replacement or touch of the file invalidates the entry. What the cache
 * cannot see is a change below the file system (bit rot): to cover it, a reader
 * opened at offset 0 on a cache hit still hashes the bytes as it serves them
 * and fails the read that would reach the end (see pf_store_reader_read).
 * pf_store_verify re-hashes unconditionally.
 *
 * PF_E_NOT_FOUND when absent; PF_E_OUT_OF_RANGE when offset > size;
 * PF_E_DATA_LOSS when the stored bytes do not match the digest; PF_E_IO on a
 * disk error. On success *out is owned by the caller, freed by
 * pf_store_reader_close. */
enum pf_status pf_store_reader_open(struct pf_store *store, const struct pf_digest *digest,
                                    uint64_t offset, struct pf_store_reader **out,
                                    uint64_t *total_size, struct pf_error *err) PF_MUST_CHECK;

/* Copies the next bytes, at most cap (cap > 0), into buf and sets *n. Returns
 * PF_OK with *n > 0 while bytes remain, then PF_E_END with *n == 0. When the
 * reader hashes as it serves (see pf_store_reader_open), the read that would
 * deliver the final bytes returns PF_E_DATA_LOSS instead if the whole content
 * does not match the digest. PF_E_DATA_LOSS also when the file turns out
 * shorter than its size. On an error, buf holds nothing usable and *n is 0. */
enum pf_status pf_store_reader_read(struct pf_store_reader *r, void *buf, size_t cap, size_t *n,
                                    struct pf_error *err) PF_MUST_CHECK;

/* Closes the file and frees r. NULL is a no-op. */
void pf_store_reader_close(struct pf_store_reader *r);

/* Reads a whole small blob (a bundle manifest) into memory, verified as by
 * pf_store_reader_open + full hashing. PF_E_RESOURCE when the blob is larger
 * than max bytes; other errors as pf_store_reader_open. On success *out is a
 * heap buffer of *len bytes plus a terminating NUL, owned by the caller (free
 * it); on failure *out is NULL. */
enum pf_status pf_store_read_all(struct pf_store *store, const struct pf_digest *digest, size_t max,
                                 char **out, size_t *len, struct pf_error *err) PF_MUST_CHECK;

#endif
