/* The blob store behind pf-files (see store.h for the contract). An upload goes
 * to a mkstemp file in tmp/, is hashed as it is written, fsynced, then
 * hard-linked to blobs/ab/cd/<hex>: link(2) fails with EEXIST instead of
 * replacing, so concurrent uploads of the same bytes end with one blob and the
 * loser simply drops its temp file; the directories touched are fsynced so a
 * blob that was reported stored survives a crash. Reads verify the content
 * against its name before serving it, with a small direct-mapped cache of
 * (digest, file identity) pairs already verified so that unchanged blobs are
 * not re-hashed on every download. */
#define _GNU_SOURCE /* mkostemp, GNU strerror_r */

#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define TMP_TEMPLATE "upload-XXXXXX"
/* "ab/cd/" + 64 hex + NUL */
#define BLOB_REL_LEN (6 + PF_DIGEST_HEX_LEN + 1)
/* Block size for hashing and reading whole files. */
#define IO_BLOCK (128 * 1024)
/* Attempts at linking a blob when a fan-out directory vanishes underneath
 * (a garbage collector removing empty directories). */
#define LINK_ATTEMPTS 3

/* One verified blob: the file identity it was verified at. Any write to the
 * file moves its mtime and ctime; replacing it changes the inode. */
struct verified_blob {
    bool used;
    struct pf_digest digest;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    struct timespec ctime;
};

struct pf_store {
    char *dir;
    char *tmp_dir; /* dir + "/tmp", for mkostemp */
    int dir_fd;    /* holds the flock that keeps a second store out */
    int blobs_fd;
    int tmp_fd;
    struct pf_store_limits lim;
    pthread_mutex_t cache_lock; /* guards cache */
    struct verified_blob cache[PF_STORE_VERIFY_CACHE_SLOTS];
};

struct pf_store_writer {
    struct pf_store *store;
    int fd;
    char *tmp_path;       /* full path of the temp file, owned */
    const char *tmp_name; /* its last component, relative to store->tmp_fd */
    bool tmp_exists;      /* the temp file is still ours to unlink */
    uint64_t declared;
    uint64_t received;
    bool has_expected;
    struct pf_digest expected;
    struct pf_sha256 *sha;
    bool failed;
};

struct pf_store_reader {
    struct pf_store *store;
    int fd;
    struct pf_digest digest;
    uint64_t size;
    uint64_t pos;
    struct pf_sha256 *sha; /* hashes [0, size) as it is served; NULL when not needed */
    bool failed;
};

static const char *errno_text(int errnum, char *buf, size_t cap)
{
    return strerror_r(errnum, buf, cap);
}

static void log_io_warning(const char *event, const char *dir, const char *name, int errnum)
{
    char qdir[512], qname[128], why[128], qwhy[160];

    pf_log_warn(event, "dir=%s name=%s error=%s", pf_log_quote(dir, qdir, sizeof qdir),
                pf_log_quote(name, qname, sizeof qname),
                pf_log_quote(errno_text(errnum, why, sizeof why), qwhy, sizeof qwhy));
}

static void blob_rel_path(const struct pf_digest *d, char *out)
{
    char hex[PF_DIGEST_HEX_LEN + 1];

    pf_digest_to_hex(d, hex);
    snprintf(out, BLOB_REL_LEN, "%.2s/%.2s/%s", hex, hex + 2, hex);
}

static size_t cache_slot(const struct pf_digest *d)
{
    /* The digest is uniformly distributed: any of its bits make a good index. */
    return (((size_t)d->bytes[0] << 8) | d->bytes[1]) % PF_STORE_VERIFY_CACHE_SLOTS;
}

static bool same_time(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static bool cache_lookup(struct pf_store *store, const struct pf_digest *d, const struct stat *st)
{
    struct verified_blob *v = &store->cache[cache_slot(d)];
    bool hit;

    pthread_mutex_lock(&store->cache_lock);
    hit = v->used && pf_digest_equal(&v->digest, d) && v->dev == st->st_dev &&
          v->ino == st->st_ino && v->size == st->st_size && same_time(&v->mtime, &st->st_mtim) &&
          same_time(&v->ctime, &st->st_ctim);
    pthread_mutex_unlock(&store->cache_lock);
    return hit;
}

static void cache_remember(struct pf_store *store, const struct pf_digest *d, const struct stat *st)
{
    struct verified_blob *v = &store->cache[cache_slot(d)];

    pthread_mutex_lock(&store->cache_lock);
    v->used = true;
    v->digest = *d;
    v->dev = st->st_dev;
    v->ino = st->st_ino;
    v->size = st->st_size;
    v->mtime = st->st_mtim;
    v->ctime = st->st_ctim;
    pthread_mutex_unlock(&store->cache_lock);
}

static void cache_forget(struct pf_store *store, const struct pf_digest *d)
{
    struct verified_blob *v = &store->cache[cache_slot(d)];

    pthread_mutex_lock(&store->cache_lock);
    if (v->used && pf_digest_equal(&v->digest, d))
        v->used = false;
    pthread_mutex_unlock(&store->cache_lock);
}

static enum pf_status corrupt(struct pf_store *store, const struct pf_digest *expected,
                              const struct pf_digest *actual, struct pf_error *err)
{
    char want[PF_DIGEST_HEX_LEN + 1], got[PF_DIGEST_HEX_LEN + 1];

    cache_forget(store, expected);
    pf_digest_to_hex(expected, want);
    pf_digest_to_hex(actual, got);
    pf_log_warn("blob_corrupt", "digest=%s content_digest=%s", want, got);
    return pf_error_set(err, PF_E_DATA_LOSS, "blob '%s' is corrupt: its content hashes to '%s'",
                        want, got);
}

static enum pf_status truncated(struct pf_store *store, const struct pf_digest *d, uint64_t got,
                                uint64_t size, struct pf_error *err)
{
    char hex[PF_DIGEST_HEX_LEN + 1];

    cache_forget(store, d);
    pf_digest_to_hex(d, hex);
    pf_log_warn("blob_corrupt", "digest=%s bytes=%" PRIu64 " size=%" PRIu64, hex, got, size);
    return pf_error_set(err, PF_E_DATA_LOSS,
                        "blob '%s' is corrupt: it ends after %" PRIu64 " of its %" PRIu64 " bytes",
                        hex, got, size);
}

/* Reads up to len bytes at off, retrying short reads; *got < len only at EOF. */
static int pread_full(int fd, void *buf, size_t len, uint64_t off, size_t *got)
{
    size_t done = 0;

    while (done < len) {
        ssize_t k = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
        if (k < 0) {
            if (errno == EINTR)
                continue;
            *got = done;
            return errno;
        }
        if (k == 0)
            break;
        done += (size_t)k;
    }
    *got = done;
    return 0;
}

static int write_full(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0) {
        ssize_t k = write(fd, p, len);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

/* Hashes the whole of fd (whatever its length now) into *out. */
static enum pf_status hash_file(int fd, const struct pf_digest *d, struct pf_digest *out,
                                struct pf_error *err)
{
    char hex[PF_DIGEST_HEX_LEN + 1], why[128];
    enum pf_status st = PF_OK;
    struct pf_sha256 *sha;
    uint64_t off = 0;
    char *block;
    size_t got;
    int e;

    block = malloc(IO_BLOCK);
    if (!block)
        return pf_error_set(err, PF_E_INTERNAL, "out of memory hashing a blob");
    sha = pf_sha256_create();
    if (!sha) {
        st = pf_error_set(err, PF_E_INTERNAL, "out of memory hashing a blob");
        goto out_free_block;
    }
    for (;;) {
        e = pread_full(fd, block, IO_BLOCK, off, &got);
        if (e != 0) {
            pf_digest_to_hex(d, hex);
            st = pf_error_set(err, PF_E_IO, "could not read blob '%s': %s", hex,
                              errno_text(e, why, sizeof why));
            goto out_destroy_sha;
        }
        pf_sha256_update(sha, block, got);
        off += got;
        if (got < IO_BLOCK)
            break;
    }
    pf_sha256_final(sha, out);
out_destroy_sha:
    pf_sha256_destroy(sha);
out_free_block:
    free(block);
    return st;
}

/* Opens the blob read-only and fstats it. */
static enum pf_status open_blob(struct pf_store *store, const struct pf_digest *d, int *fd_out,
                                struct stat *st, struct pf_error *err)
{
    char rel[BLOB_REL_LEN], why[128];
    int fd;

    *fd_out = -1;
    blob_rel_path(d, rel);
    fd = openat(store->blobs_fd, rel, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR)
            return pf_error_set(err, PF_E_NOT_FOUND, "blob '%s' not found", rel + 6);
        return pf_error_set(err, PF_E_IO, "could not open blob '%s': %s", rel + 6,
                            errno_text(e, why, sizeof why));
    }
    if (fstat(fd, st) != 0) {
        int e = errno;
        close(fd);
        return pf_error_set(err, PF_E_IO, "could not stat blob '%s': %s", rel + 6,
                            errno_text(e, why, sizeof why));
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        return pf_error_set(err, PF_E_IO, "blob '%s' is not a regular file", rel + 6);
    }
    *fd_out = fd;
    return PF_OK;
}

/* Checks the content of the open blob fd (stat st) against d. With use_cache,
 * an entry for the same file identity skips the hashing (*from_cache true). */
static enum pf_status verify_fd(struct pf_store *store, const struct pf_digest *d, int fd,
                                const struct stat *st, bool use_cache, bool *from_cache,
                                struct pf_error *err)
{
    struct pf_digest actual;
    enum pf_status rc;

    *from_cache = false;
    if (use_cache && cache_lookup(store, d, st)) {
        *from_cache = true;
        return PF_OK;
    }
    rc = hash_file(fd, d, &actual, err);
    if (rc != PF_OK)
        return rc;
    if (!pf_digest_equal(&actual, d))
        return corrupt(store, d, &actual, err);
    /* st was taken before hashing: a write during the hash moves mtime/ctime
     * past it, so the entry cannot vouch for bytes it did not see. */
    cache_remember(store, d, st);
    return PF_OK;
}

static enum pf_status verify_blob(struct pf_store *store, const struct pf_digest *d, bool use_cache,
                                  struct pf_error *err)
{
    enum pf_status rc;
    bool from_cache;
    struct stat st;
    int fd;

    rc = open_blob(store, d, &fd, &st, err);
    if (rc != PF_OK)
        return rc;
    rc = verify_fd(store, d, fd, &st, use_cache, &from_cache, err);
    close(fd);
    return rc;
}

static enum pf_status make_dirs(const char *dir, struct pf_error *err)
{
    char why[128];
    size_t len = strlen(dir);
    char *path;
    enum pf_status rc = PF_OK;

    path = strdup(dir);
    if (!path)
        return pf_error_set(err, PF_E_INTERNAL, "out of memory");
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        path[i] = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) {
            rc = pf_error_set(err, PF_E_IO, "could not create data directory '%s': %s", path,
                              errno_text(errno, why, sizeof why));
            break;
        }
        if (i < len)
            path[i] = '/';
    }
    free(path);
    return rc;
}

static enum pf_status open_subdir(int dir_fd, const char *dir, const char *name, mode_t mode,
                                  int *out, struct pf_error *err)
{
    char why[128];

    if (mkdirat(dir_fd, name, mode) != 0 && errno != EEXIST)
        return pf_error_set(err, PF_E_IO, "could not create directory '%s/%s': %s", dir, name,
                            errno_text(errno, why, sizeof why));
    *out = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*out < 0)
        return pf_error_set(err, PF_E_IO, "could not open directory '%s/%s': %s", dir, name,
                            errno_text(errno, why, sizeof why));
    return PF_OK;
}

/* Removes every file in tmp/: uploads a crash interrupted. */
static enum pf_status clean_tmp(struct pf_store *store, size_t *removed, struct pf_error *err)
{
    char why[128];
    struct dirent *de;
    DIR *dir;
    int fd;

    *removed = 0;
    fd = openat(store->tmp_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return pf_error_set(err, PF_E_IO, "could not open directory '%s': %s", store->tmp_dir,
                            errno_text(errno, why, sizeof why));
    dir = fdopendir(fd);
    if (!dir) {
        int e = errno;
        close(fd);
        return pf_error_set(err, PF_E_IO, "could not list directory '%s': %s", store->tmp_dir,
                            errno_text(e, why, sizeof why));
    }
    while ((de = readdir(dir)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (unlinkat(store->tmp_fd, de->d_name, 0) == 0)
            (*removed)++;
        else
            log_io_warning("store_tmp_not_removed", store->tmp_dir, de->d_name, errno);
    }
    closedir(dir);
    return PF_OK;
}

enum pf_status pf_store_open(const char *dir, const struct pf_store_limits *lim,
                             struct pf_store **out, struct pf_error *err)
{
    char why[128], quoted[512];
    struct pf_store *store;
    enum pf_status rc;
    size_t removed;

    *out = NULL;
    if (!dir || !*dir)
        return pf_error_set(err, PF_E_INVALID, "the data directory is not set");
    rc = make_dirs(dir, err);
    if (rc != PF_OK)
        return rc;
    store = calloc(1, sizeof *store);
    if (!store)
        return pf_error_set(err, PF_E_INTERNAL, "out of memory opening store '%s'", dir);
    store->dir_fd = -1;
    store->blobs_fd = -1;
    store->tmp_fd = -1;
    store->dir = strdup(dir);
    if (!store->dir || asprintf(&store->tmp_dir, "%s/tmp", dir) < 0) {
        store->tmp_dir = NULL;
        rc = pf_error_set(err, PF_E_INTERNAL, "out of memory opening store '%s'", dir);
        goto out_free_store;
    }
    store->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (store->dir_fd < 0) {
        rc = pf_error_set(err, PF_E_IO, "could not open data directory '%s': %s", dir,
                          errno_text(errno, why, sizeof why));
        goto out_free_store;
    }
    /* Cleaning tmp/ would destroy another store's uploads in progress. */
    if (flock(store->dir_fd, LOCK_EX | LOCK_NB) != 0) {
        rc = pf_error_set(err, PF_E_PRECONDITION,
                          "data directory '%s' is in use by another store: %s", dir,
                          errno_text(errno, why, sizeof why));
        goto out_close_fds;
    }
    rc = open_subdir(store->dir_fd, dir, "blobs", 0755, &store->blobs_fd, err);
    if (rc != PF_OK)
        goto out_close_fds;
    rc = open_subdir(store->dir_fd, dir, "tmp", 0700, &store->tmp_fd, err);
    if (rc != PF_OK)
        goto out_close_fds;
    rc = clean_tmp(store, &removed, err);
    if (rc != PF_OK)
        goto out_close_fds;

    store->lim.max_blob_bytes = PF_STORE_DEFAULT_MAX_BLOB_BYTES;
    store->lim.max_chunk_bytes = PF_STORE_DEFAULT_MAX_CHUNK_BYTES;
    if (lim && lim->max_blob_bytes)
        store->lim.max_blob_bytes = lim->max_blob_bytes;
    if (lim && lim->max_chunk_bytes)
        store->lim.max_chunk_bytes = lim->max_chunk_bytes;
    pthread_mutex_init(&store->cache_lock, NULL);
    pf_log_info("store_open",
                "dir=%s tmp_removed=%zu max_blob_bytes=%" PRIu64 " max_chunk_bytes=%zu",
                pf_log_quote(dir, quoted, sizeof quoted), removed, store->lim.max_blob_bytes,
                store->lim.max_chunk_bytes);
    *out = store;
    return PF_OK;

out_close_fds:
    if (store->tmp_fd >= 0)
        close(store->tmp_fd);
    if (store->blobs_fd >= 0)
        close(store->blobs_fd);
    close(store->dir_fd); /* drops the lock */
out_free_store:
    free(store->tmp_dir);
    free(store->dir);
    free(store);
    return rc;
}

void pf_store_close(struct pf_store *store)
{
    if (!store)
        return;
    pthread_mutex_destroy(&store->cache_lock);
    close(store->tmp_fd);
    close(store->blobs_fd);
    close(store->dir_fd);
    free(store->tmp_dir);
    free(store->dir);
    free(store);
}

/* ---- uploads ---- */

enum pf_status pf_store_writer_begin(struct pf_store *store, uint64_t declared_size,
                                     const struct pf_digest *expected, struct pf_store_writer **out,
                                     struct pf_error *err)
{
    struct pf_store_writer *w;
    enum pf_status rc;
    char why[128];

    *out = NULL;
    if (declared_size > store->lim.max_blob_bytes)
        return pf_error_set(err, PF_E_RESOURCE,
                            "blob of %" PRIu64 " bytes exceeds the maximum of %" PRIu64 " bytes",
                            declared_size, store->lim.max_blob_bytes);
    w = calloc(1, sizeof *w);
    if (!w)
        return pf_error_set(err, PF_E_INTERNAL, "out of memory starting an upload");
    w->store = store;
    w->declared = declared_size;
    if (expected) {
        w->has_expected = true;
        w->expected = *expected;
    }
    w->sha = pf_sha256_create();
    if (!w->sha) {
        rc = pf_error_set(err, PF_E_INTERNAL, "out of memory starting an upload");
        goto out_free_writer;
    }
    if (asprintf(&w->tmp_path, "%s/" TMP_TEMPLATE, store->tmp_dir) < 0) {
        w->tmp_path = NULL;
        rc = pf_error_set(err, PF_E_INTERNAL, "out of memory starting an upload");
        goto out_destroy_sha;
    }
    w->fd = mkostemp(w->tmp_path, O_CLOEXEC);
    if (w->fd < 0) {
        rc = pf_error_set(err, PF_E_IO, "could not create a temp file in '%s': %s", store->tmp_dir,
                          errno_text(errno, why, sizeof why));
        goto out_free_path;
    }
    w->tmp_name = strrchr(w->tmp_path, '/') + 1;
    w->tmp_exists = true;
    *out = w;
    return PF_OK;

out_free_path:
    free(w->tmp_path);
out_destroy_sha:
    pf_sha256_destroy(w->sha);
out_free_writer:
    free(w);
    return rc;
}

/* pf_store_writer_write without the chunk limit, which is about network
 * messages and so does not apply to pf_store_put. */
static enum pf_status append(struct pf_store_writer *w, const void *data, size_t len,
                             struct pf_error *err)
{
    char why[128];
    int e;

    if (w->failed)
        return pf_error_set(err, PF_E_INTERNAL, "write to upload '%s' after it failed",
                            w->tmp_name);
    if (len > w->declared - w->received) {
        w->failed = true;
        return pf_error_set(err, PF_E_INVALID,
                            "chunk of %zu bytes at offset %" PRIu64
                            " passes the declared size of %" PRIu64 " bytes",
                            len, w->received, w->declared);
    }
    if (len == 0)
        return PF_OK;
    e = write_full(w->fd, data, len);
    if (e != 0) {
        w->failed = true;
        return pf_error_set(err, PF_E_IO, "could not write upload to '%s': %s", w->tmp_path,
                            errno_text(e, why, sizeof why));
    }
    pf_sha256_update(w->sha, data, len);
    /* Start writeback of what has arrived, so the fsync at commit only waits
     * for the tail instead of the whole blob. Advisory: errors surface at fsync. */
    (void)sync_file_range(w->fd, (off64_t)w->received, (off64_t)len, SYNC_FILE_RANGE_WRITE);
    w->received += len;
    return PF_OK;
}

enum pf_status pf_store_writer_write(struct pf_store_writer *w, const void *data, size_t len,
                                     struct pf_error *err)
{
    if (!w->failed && len > w->store->lim.max_chunk_bytes) {
        w->failed = true;
        return pf_error_set(err, PF_E_INVALID,
                            "chunk of %zu bytes exceeds the maximum of %zu bytes", len,
                            w->store->lim.max_chunk_bytes);
    }
    return append(w, data, len, err);
}

static enum pf_status sync_dir(struct pf_store *store, const char *rel, struct pf_error *err)
{
    char why[128];
    int fd, e = 0;

    fd = openat(store->blobs_fd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        e = errno;
    else if (fsync(fd) != 0)
        e = errno;
    if (fd >= 0)
        close(fd);
    if (e != 0)
        return pf_error_set(err, PF_E_IO, "could not fsync directory '%s/blobs/%s': %s", store->dir,
                            rel, errno_text(e, why, sizeof why));
    return PF_OK;
}

/* Creates blobs/ab and blobs/ab/cd as needed, saying which were created. */
static int make_fanout(struct pf_store *store, const char *rel, bool *made_top, bool *made_leaf)
{
    char top[3] = {rel[0], rel[1], '\0'};
    char leaf[6] = {rel[0], rel[1], '/', rel[3], rel[4], '\0'};

    if (mkdirat(store->blobs_fd, top, 0755) == 0)
        *made_top = true;
    else if (errno != EEXIST)
        return errno;
    if (mkdirat(store->blobs_fd, leaf, 0755) == 0)
        *made_leaf = true;
    else if (errno != EEXIST)
        return errno;
    return 0;
}

/* Makes the new directory entries durable: the blob's own directory first,
 * then the parents of any fan-out directory created for it. */
static enum pf_status sync_fanout(struct pf_store *store, const char *rel, bool made_top,
                                  bool made_leaf, struct pf_error *err)
{
    char top[3] = {rel[0], rel[1], '\0'};
    char leaf[6] = {rel[0], rel[1], '/', rel[3], rel[4], '\0'};
    enum pf_status rc;

    rc = sync_dir(store, leaf, err);
    if (rc == PF_OK && made_leaf)
        rc = sync_dir(store, top, err);
    if (rc == PF_OK && made_top)
        rc = sync_dir(store, ".", err);
    return rc;
}

/* Moves the verified temp file of w into place as blob d. */
static enum pf_status place_blob(struct pf_store_writer *w, const struct pf_digest *d,
                                 bool *existed, struct pf_error *err)
{
    struct pf_store *store = w->store;
    char rel[BLOB_REL_LEN], why[128];
    bool made_top = false, made_leaf = false;
    enum pf_status rc;
    int e = 0;

    blob_rel_path(d, rel);
    for (int attempt = 0; attempt < LINK_ATTEMPTS; attempt++) {
        e = make_fanout(store, rel, &made_top, &made_leaf);
        if (e == ENOENT)
            continue; /* blobs/ab vanished between the two mkdirs */
        if (e != 0)
            return pf_error_set(err, PF_E_IO, "could not create the directory of blob '%s': %s",
                                rel + 6, errno_text(e, why, sizeof why));
        if (linkat(store->tmp_fd, w->tmp_name, store->blobs_fd, rel, 0) == 0) {
            *existed = false;
            return sync_fanout(store, rel, made_top, made_leaf, err);
        }
        e = errno;
        if (e == ENOENT)
            continue; /* blobs/ab/cd vanished after mkdir */
        if (e != EEXIST)
            break;
        /* Stored already (by an earlier or a concurrent upload): keep that copy
         * unless it is damaged, in which case these verified bytes replace it. */
        rc = verify_blob(store, d, true, err);
        if (rc == PF_OK) {
            *existed = true;
            return PF_OK;
        }
        if (rc == PF_E_NOT_FOUND) {
            e = ENOENT;
            continue; /* removed meanwhile: link again */
        }
        if (rc != PF_E_DATA_LOSS)
            return rc;
        if (renameat(store->tmp_fd, w->tmp_name, store->blobs_fd, rel) != 0) {
            e = errno;
            break;
        }
        w->tmp_exists = false;
        pf_log_warn("blob_repaired", "digest=%s", rel + 6);
        *existed = false;
        return sync_fanout(store, rel, made_top, made_leaf, err);
    }
    return pf_error_set(err, PF_E_IO, "could not store blob '%s': %s", rel + 6,
                        errno_text(e, why, sizeof why));
}

enum pf_status pf_store_writer_commit(struct pf_store_writer *w, struct pf_digest *out,
                                      bool *existed, struct pf_error *err)
{
    char got[PF_DIGEST_HEX_LEN + 1], want[PF_DIGEST_HEX_LEN + 1], why[128];
    struct pf_digest digest;
    bool was_stored = false;
    enum pf_status rc;
    int e;

    if (w->failed) {
        rc = pf_error_set(err, PF_E_INTERNAL, "commit of upload '%s' after it failed", w->tmp_name);
        goto out_free_writer;
    }
    if (w->received != w->declared) {
        rc = pf_error_set(err, PF_E_INVALID,
                          "received %" PRIu64 " bytes but the header declared %" PRIu64,
                          w->received, w->declared);
        goto out_free_writer;
    }
    pf_sha256_final(w->sha, &digest);
    if (w->has_expected && !pf_digest_equal(&digest, &w->expected)) {
        pf_digest_to_hex(&digest, got);
        pf_digest_to_hex(&w->expected, want);
        rc = pf_error_set(err, PF_E_INVALID,
                          "content digest '%s' does not match the declared digest '%s'", got, want);
        goto out_free_writer;
    }
    if (fsync(w->fd) != 0) {
        rc = pf_error_set(err, PF_E_IO, "could not fsync upload '%s': %s", w->tmp_path,
                          errno_text(errno, why, sizeof why));
        goto out_free_writer;
    }
    e = close(w->fd);
    w->fd = -1;
    if (e != 0) {
        rc = pf_error_set(err, PF_E_IO, "could not close upload '%s': %s", w->tmp_path,
                          errno_text(errno, why, sizeof why));
        goto out_free_writer;
    }
    rc = place_blob(w, &digest, &was_stored, err);
    if (rc == PF_OK && !was_stored) {
        /* These bytes were just hashed: the first download need not re-hash them. */
        char rel[BLOB_REL_LEN];
        struct stat st;
        blob_rel_path(&digest, rel);
        if (fstatat(w->store->blobs_fd, rel, &st, 0) == 0)
            cache_remember(w->store, &digest, &st);
    }
    if (rc == PF_OK) {
        if (out)
            *out = digest;
        if (existed)
            *existed = was_stored;
    }
out_free_writer:
    /* Success or failure, the temp name goes: the blob (if any) is its own link. */
    pf_store_writer_abort(w);
    return rc;
}

void pf_store_writer_abort(struct pf_store_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    if (w->tmp_exists && unlinkat(w->store->tmp_fd, w->tmp_name, 0) != 0 && errno != ENOENT)
        log_io_warning("upload_tmp_not_removed", w->store->tmp_dir, w->tmp_name, errno);
    pf_sha256_destroy(w->sha);
    free(w->tmp_path);
    free(w);
}

enum pf_status pf_store_put(struct pf_store *store, const void *data, size_t len,
                            const struct pf_digest *expected, struct pf_digest *out, bool *existed,
                            struct pf_error *err)
{
    struct pf_store_writer *w;
    enum pf_status rc;

    rc = pf_store_writer_begin(store, len, expected, &w, err);
    if (rc != PF_OK)
        return rc;
    rc = append(w, data, len, err);
    if (rc != PF_OK) {
        pf_store_writer_abort(w);
        return rc;
    }
    return pf_store_writer_commit(w, out, existed, err);
}

/* ---- reads ---- */

enum pf_status pf_store_stat(struct pf_store *store, const struct pf_digest *digest, uint64_t *size,
                             struct pf_error *err)
{
    char rel[BLOB_REL_LEN], why[128];
    struct stat st;

    blob_rel_path(digest, rel);
    if (fstatat(store->blobs_fd, rel, &st, 0) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return pf_error_set(err, PF_E_NOT_FOUND, "blob '%s' not found", rel + 6);
        return pf_error_set(err, PF_E_IO, "could not stat blob '%s': %s", rel + 6,
                            errno_text(errno, why, sizeof why));
    }
    if (!S_ISREG(st.st_mode))
        return pf_error_set(err, PF_E_IO, "blob '%s' is not a regular file", rel + 6);
    if (size)
        *size = (uint64_t)st.st_size;
    return PF_OK;
}

enum pf_status pf_store_verify(struct pf_store *store, const struct pf_digest *digest,
                               struct pf_error *err)
{
    return verify_blob(store, digest, false, err);
}

/* pf_store_reader_open, with the choice to hash the served bytes whatever the
 * cache says (pf_store_read_all hands out only bytes it hashed itself). */
static enum pf_status reader_open(struct pf_store *store, const struct pf_digest *digest,
                                  uint64_t offset, bool always_hash, struct pf_store_reader **out,
                                  uint64_t *total_size, struct pf_error *err)
{
    char hex[PF_DIGEST_HEX_LEN + 1];
    struct pf_store_reader *r;
    enum pf_status rc;
    bool from_cache;
    struct stat st;
    int fd;

    *out = NULL;
    rc = open_blob(store, digest, &fd, &st, err);
    if (rc != PF_OK)
        return rc;
    if (offset > (uint64_t)st.st_size) {
        pf_digest_to_hex(digest, hex);
        rc = pf_error_set(err, PF_E_OUT_OF_RANGE,
                          "offset %" PRIu64 " is past the end of blob '%s' (%" PRIu64 " bytes)",
                          offset, hex, (uint64_t)st.st_size);
        goto out_close_fd;
    }
    rc = verify_fd(store, digest, fd, &st, true, &from_cache, err);
    if (rc != PF_OK)
        goto out_close_fd;
    r = calloc(1, sizeof *r);
    if (!r) {
        rc = pf_error_set(err, PF_E_INTERNAL, "out of memory opening a blob");
        goto out_close_fd;
    }
    r->store = store;
    r->fd = fd;
    r->digest = *digest;
    r->size = (uint64_t)st.st_size;
    r->pos = offset;
    if (offset == 0 && (from_cache || always_hash)) {
        r->sha = pf_sha256_create();
        if (!r->sha) {
            rc = pf_error_set(err, PF_E_INTERNAL, "out of memory opening a blob");
            goto out_free_reader;
        }
    }
    if (total_size)
        *total_size = r->size;
    *out = r;
    return PF_OK;

out_free_reader:
    free(r);
out_close_fd:
    close(fd);
    return rc;
}

enum pf_status pf_store_reader_open(struct pf_store *store, const struct pf_digest *digest,
                                    uint64_t offset, struct pf_store_reader **out,
                                    uint64_t *total_size, struct pf_error *err)
{
    return reader_open(store, digest, offset, false, out, total_size, err);
}

enum pf_status pf_store_reader_read(struct pf_store_reader *r, void *buf, size_t cap, size_t *n,
                                    struct pf_error *err)
{
    char hex[PF_DIGEST_HEX_LEN + 1], why[128];
    struct pf_digest actual;
    size_t want, got;
    int e;

    *n = 0;
    if (r->failed) {
        pf_digest_to_hex(&r->digest, hex);
        return pf_error_set(err, PF_E_INTERNAL, "read of blob '%s' after a failed read", hex);
    }
    if (r->pos >= r->size) {
        if (r->sha && r->size == 0) {
            /* An empty file never reached the check below; "empty" is a content too. */
            pf_sha256_final(r->sha, &actual);
            if (!pf_digest_equal(&actual, &r->digest)) {
                r->failed = true;
                return corrupt(r->store, &r->digest, &actual, err);
            }
            pf_sha256_destroy(r->sha);
            r->sha = NULL;
        }
        pf_digest_to_hex(&r->digest, hex);
        return pf_error_set(err, PF_E_END, "end of blob '%s'", hex);
    }
    if (cap == 0)
        return pf_error_set(err, PF_E_INVALID, "read into a buffer of 0 bytes");
    want = r->size - r->pos < cap ? (size_t)(r->size - r->pos) : cap;
    e = pread_full(r->fd, buf, want, r->pos, &got);
    if (e != 0) {
        r->failed = true;
        pf_digest_to_hex(&r->digest, hex);
        return pf_error_set(err, PF_E_IO, "could not read blob '%s': %s", hex,
                            errno_text(e, why, sizeof why));
    }
    if (got < want) {
        r->failed = true;
        return truncated(r->store, &r->digest, r->pos + got, r->size, err);
    }
    if (r->sha) {
        pf_sha256_update(r->sha, buf, want);
        if (r->pos + want == r->size) {
            pf_sha256_final(r->sha, &actual);
            if (!pf_digest_equal(&actual, &r->digest)) {
                r->failed = true;
                return corrupt(r->store, &r->digest, &actual, err);
            }
            pf_sha256_destroy(r->sha);
            r->sha = NULL;
        }
    }
    r->pos += want;
    *n = want;
    return PF_OK;
}

void pf_store_reader_close(struct pf_store_reader *r)
{
    if (!r)
        return;
    close(r->fd);
    pf_sha256_destroy(r->sha);
    free(r);
}

enum pf_status pf_store_read_all(struct pf_store *store, const struct pf_digest *digest, size_t max,
                                 char **out, size_t *len, struct pf_error *err)
{
    char hex[PF_DIGEST_HEX_LEN + 1];
    struct pf_store_reader *r;
    enum pf_status rc;
    uint64_t size;
    size_t off = 0, n;
    char *data;

    *out = NULL;
    *len = 0;
    rc = reader_open(store, digest, 0, true, &r, &size, err);
    if (rc != PF_OK)
        return rc;
    if (size > max) {
        pf_digest_to_hex(digest, hex);
        rc = pf_error_set(err, PF_E_RESOURCE,
                          "blob '%s' of %" PRIu64 " bytes exceeds the maximum of %zu bytes", hex,
                          size, max);
        goto out_close_reader;
    }
    data = malloc((size_t)size + 1);
    if (!data) {
        rc = pf_error_set(err, PF_E_INTERNAL, "out of memory reading a blob");
        goto out_close_reader;
    }
    for (;;) {
        rc = pf_store_reader_read(r, data + off, (size_t)size - off, &n, err);
        if (rc != PF_OK)
            break;
        off += n;
    }
    if (rc != PF_E_END) {
        free(data);
        goto out_close_reader;
    }
    data[off] = '\0';
    *out = data;
    *len = off;
    rc = PF_OK;
out_close_reader:
    pf_store_reader_close(r);
    return rc;
}
