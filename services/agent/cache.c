/* The content-addressed file cache of pf-agent (see cache.h). The index is an
 * in-memory array of the blobs held, rebuilt from a directory scan at open;
 * the directory is the truth. Downloads run without the cache lock (they are
 * long); an in-flight list makes a second fetcher of the same digest wait for
 * the first instead of writing the same .part file. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "backoff.h"
#include "cache.h"
#include "files_client.h"
#include "log.h"
#include "timeutil.h"

#define PART_MAX_AGE_S (7 * 24 * 3600)

struct entry {
    struct pf_digest digest;
    uint64_t size;
    int64_t used_ms; /* wall clock of the last use */
    unsigned pins;
};

struct pf_cache {
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* an in-flight download ended */
    char dir[PATH_MAX - 320]; /* room for "/blobs/" and a file name */
    char blobs[PATH_MAX - 300];
    struct pf_cache_config cfg;
    struct entry *entries;
    size_t count, cap;
    uint64_t bytes;
    uint64_t downloaded;
    uint64_t generation;
    struct pf_digest *inflight;
    size_t inflight_count, inflight_cap;
    uint64_t rng;
    struct pf_metric *m_download_bytes, *m_downloads, *m_corrupt, *m_evictions, *m_bytes, *m_blobs,
        *m_hits;
};

static void blob_path(const struct pf_cache *c, const struct pf_digest *d, char *out, size_t size)
{
    char hex[PF_DIGEST_HEX_LEN + 1];

    pf_digest_to_hex(d, hex);
    snprintf(out, size, "%s/%s", c->blobs, hex);
}

static struct entry *find(struct pf_cache *c, const struct pf_digest *d)
{
    for (size_t i = 0; i < c->count; i++)
        if (pf_digest_equal(&c->entries[i].digest, d))
            return &c->entries[i];
    return NULL;
}

static void update_gauges(struct pf_cache *c)
{
    pf_metric_set(c->m_bytes, NULL, (double)c->bytes);
    pf_metric_set(c->m_blobs, NULL, (double)c->count);
}

static bool add_entry(struct pf_cache *c, const struct pf_digest *d, uint64_t size, int64_t used_ms)
{
    if (c->count == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        struct entry *grown = realloc(c->entries, cap * sizeof(*grown));
        if (grown == NULL)
            return false;
        c->entries = grown;
        c->cap = cap;
    }
    c->entries[c->count++] = (struct entry){.digest = *d, .size = size, .used_ms = used_ms};
    c->bytes += size;
    c->generation++;
    update_gauges(c);
    return true;
}

static void remove_entry(struct pf_cache *c, struct entry *e)
{
    size_t i = (size_t)(e - c->entries);

    c->bytes -= e->size;
    c->entries[i] = c->entries[--c->count];
    c->generation++;
    update_gauges(c);
}

static enum pf_status mkdir_p(const char *path, struct pf_error *err)
{
    char tmp[PATH_MAX];

    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return pf_error_set(err, PF_E_IO, "could not create '%s': %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return pf_error_set(err, PF_E_IO, "could not create '%s': %s", tmp, strerror(errno));
    return PF_OK;
}

/* Fills the index from the directory; removes leftovers too old to resume. */
static enum pf_status scan(struct pf_cache *c, struct pf_error *err)
{
    DIR *dir = opendir(c->blobs);
    struct dirent *de;
    time_t now = time(NULL);

    if (dir == NULL)
        return pf_error_set(err, PF_E_IO, "could not list '%s': %s", c->blobs, strerror(errno));
    while ((de = readdir(dir)) != NULL) {
        char path[PATH_MAX];
        struct pf_digest d;
        struct stat st;
        size_t len = strlen(de->d_name);

        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", c->blobs, de->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (len == PF_DIGEST_HEX_LEN && pf_digest_from_hex(de->d_name, len, &d, NULL) == PF_OK) {
            if (!add_entry(c, &d, (uint64_t)st.st_size, (int64_t)st.st_mtime * 1000)) {
                closedir(dir);
                return pf_error_set(err, PF_E_RESOURCE, "out of memory");
            }
        } else if (now - st.st_mtime > PART_MAX_AGE_S) {
            unlink(path); /* a .part or .tmp nobody resumed for a week */
        }
    }
    closedir(dir);
    return PF_OK;
}

enum pf_status pf_cache_open(const struct pf_cache_config *cfg, struct pf_cache **out,
                             struct pf_error *err)
{
    struct pf_cache *c;
    enum pf_status rc;

    if (cfg->dir == NULL || cfg->dir[0] == '\0' || strlen(cfg->dir) >= PATH_MAX - 320)
        return pf_error_set(err, PF_E_INVALID, "cache directory '%.100s' is empty or too long",
                            cfg->dir != NULL ? cfg->dir : "");
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->cfg = *cfg;
    if (c->cfg.download_timeout_ms <= 0)
        c->cfg.download_timeout_ms = 10 * 60 * 1000;
    if (c->cfg.retry_base_ms <= 0)
        c->cfg.retry_base_ms = 200;
    if (c->cfg.retry_max_ms <= 0)
        c->cfg.retry_max_ms = 10000;
    if (c->cfg.try_timeout_ms <= 0)
        c->cfg.try_timeout_ms = 10000;
    snprintf(c->dir, sizeof(c->dir), "%s", cfg->dir);
    c->cfg.dir = c->dir;
    snprintf(c->blobs, sizeof(c->blobs), "%s/blobs", c->dir);
    c->rng = (uint64_t)pf_time_mono_ms() ^ ((uint64_t)getpid() << 32);
    if (cfg->metrics != NULL) {
        struct pf_metrics *m = cfg->metrics;
        c->m_download_bytes = pf_metrics_counter(m, "printfarm_agent_download_bytes_total",
                                                 "Bytes of gcode downloaded from pf-files", NULL);
        c->m_downloads = pf_metrics_counter(m, "printfarm_agent_downloads_total",
                                            "Download tries by result", "result");
        c->m_corrupt = pf_metrics_counter(m, "printfarm_agent_cache_corrupt_total",
                                          "Cached files that failed verification on use", NULL);
        c->m_evictions = pf_metrics_counter(m, "printfarm_agent_cache_evictions_total",
                                            "Blobs evicted by the cache size limit", NULL);
        c->m_hits = pf_metrics_counter(m, "printfarm_agent_cache_hits_total",
                                       "Fetches served from the cache", NULL);
        c->m_bytes = pf_metrics_gauge(m, "printfarm_agent_cache_bytes", "Bytes in the cache", NULL);
        c->m_blobs = pf_metrics_gauge(m, "printfarm_agent_cache_blobs", "Blobs in the cache", NULL);
    }
    rc = mkdir_p(c->blobs, err);
    if (rc == PF_OK)
        rc = scan(c, err);
    if (rc != PF_OK) {
        pf_cache_close(c);
        return rc;
    }
    pf_log_info("cache_opened", "dir=%s blobs=%zu bytes=%llu max_bytes=%llu", c->dir, c->count,
                (unsigned long long)c->bytes, (unsigned long long)c->cfg.max_bytes);
    *out = c;
    return PF_OK;
}

void pf_cache_close(struct pf_cache *c)
{
    if (c == NULL)
        return;
    free(c->entries);
    free(c->inflight);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

enum pf_status pf_cache_verify_file(const char *path, const struct pf_digest *digest,
                                    uint64_t expected_size, struct pf_error *err)
{
    char want[PF_DIGEST_HEX_LEN + 1], got_hex[PF_DIGEST_HEX_LEN + 1];
    struct pf_sha256 *h;
    struct pf_digest got;
    struct stat st;
    char *buf;
    enum pf_status rc = PF_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    pf_digest_to_hex(digest, want);
    if (fd < 0)
        return pf_error_set(err, errno == ENOENT ? PF_E_NOT_FOUND : PF_E_IO,
                            "could not open '%s': %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        rc = pf_error_set(err, PF_E_IO, "could not stat '%s': %s", path, strerror(errno));
        goto out_close_fd;
    }
    if (expected_size > 0 && (uint64_t)st.st_size != expected_size) {
        rc = pf_error_set(err, PF_E_DATA_LOSS, "cached blob %.16s… has %llu bytes, not %llu", want,
                          (unsigned long long)st.st_size, (unsigned long long)expected_size);
        goto out_close_fd;
    }
    h = pf_sha256_create();
    buf = malloc(PF_FILES_CHUNK);
    if (h == NULL || buf == NULL) {
        rc = pf_error_set(err, PF_E_RESOURCE, "out of memory");
        goto out_free;
    }
    for (;;) {
        ssize_t n = read(fd, buf, PF_FILES_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = pf_error_set(err, PF_E_IO, "could not read '%s': %s", path, strerror(errno));
            goto out_free;
        }
        if (n == 0)
            break;
        pf_sha256_update(h, buf, (size_t)n);
    }
    pf_sha256_final(h, &got);
    if (!pf_digest_equal(&got, digest)) {
        pf_digest_to_hex(&got, got_hex);
        rc =
            pf_error_set(err, PF_E_DATA_LOSS, "cached blob %.16s… hashes to %.16s…", want, got_hex);
    }
out_free:
    free(buf);
    pf_sha256_destroy(h);
out_close_fd:
    close(fd);
    return rc;
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Evicts least recently used, unpinned blobs (never keep) until the limit
 * holds. Called with the lock held. */
static void evict(struct pf_cache *c, const struct pf_digest *keep)
{
    while (c->cfg.max_bytes > 0 && c->bytes > c->cfg.max_bytes) {
        struct entry *victim = NULL;
        char path[PATH_MAX], hex[PF_DIGEST_HEX_LEN + 1];

        for (size_t i = 0; i < c->count; i++) {
            struct entry *e = &c->entries[i];
            if (e->pins > 0 || pf_digest_equal(&e->digest, keep))
                continue;
            if (victim == NULL || e->used_ms < victim->used_ms)
                victim = e;
        }
        if (victim == NULL) {
            pf_log_warn("cache_over_limit",
                        "bytes=%llu max_bytes=%llu reason=\"every blob is in use\"",
                        (unsigned long long)c->bytes, (unsigned long long)c->cfg.max_bytes);
            return;
        }
        blob_path(c, &victim->digest, path, sizeof(path));
        pf_digest_to_hex(&victim->digest, hex);
        if (unlink(path) != 0 && errno != ENOENT) {
            pf_log_error("cache_evict_failed", "path=%s error=\"%s\"", path, strerror(errno));
            return;
        }
        pf_log_info("cache_evicted", "digest=%s bytes=%llu", hex, (unsigned long long)victim->size);
        pf_metric_add(c->m_evictions, NULL, 1);
        remove_entry(c, victim);
    }
}

static void touch(struct pf_cache *c, struct entry *e, const char *path)
{
    e->used_ms = pf_time_wall_ms();
    utimensat(AT_FDCWD, path, NULL, 0); /* the use time survives a restart */
}

static bool inflight_has(struct pf_cache *c, const struct pf_digest *d)
{
    for (size_t i = 0; i < c->inflight_count; i++)
        if (pf_digest_equal(&c->inflight[i], d))
            return true;
    return false;
}

static bool inflight_add(struct pf_cache *c, const struct pf_digest *d)
{
    if (c->inflight_count == c->inflight_cap) {
        size_t cap = c->inflight_cap ? c->inflight_cap * 2 : 8;
        struct pf_digest *grown = realloc(c->inflight, cap * sizeof(*grown));
        if (grown == NULL)
            return false;
        c->inflight = grown;
        c->inflight_cap = cap;
    }
    c->inflight[c->inflight_count++] = *d;
    return true;
}

static void inflight_remove(struct pf_cache *c, const struct pf_digest *d)
{
    for (size_t i = 0; i < c->inflight_count; i++)
        if (pf_digest_equal(&c->inflight[i], d)) {
            c->inflight[i] = c->inflight[--c->inflight_count];
            break;
        }
    pthread_cond_broadcast(&c->cv);
}

static bool cancelled(const atomic_bool *cancel)
{
    return cancel != NULL && atomic_load(cancel);
}

/* Sleeps ms in slices, returning early on cancel. */
static void nap(int64_t ms, const atomic_bool *cancel)
{
    int64_t end = pf_time_mono_ms() + ms;

    while (!cancelled(cancel)) {
        int64_t left = end - pf_time_mono_ms();
        if (left <= 0)
            return;
        pf_time_sleep_ms(left < 100 ? left : 100);
    }
}

/* Downloads digest into path with retries; no lock held. */
static enum pf_status download(struct pf_cache *c, struct pf_rpc_channel *files,
                               const struct pf_digest *d, const char *path,
                               const atomic_bool *cancel, struct pf_error *err)
{
    char part[PATH_MAX + 8], hex[PF_DIGEST_HEX_LEN + 1];
    int64_t deadline = pf_time_mono_ms() + c->cfg.download_timeout_ms;
    struct pf_backoff backoff;
    unsigned mismatches = 0, tries = 0;
    enum pf_status rc;

    pf_digest_to_hex(d, hex);
    snprintf(part, sizeof(part), "%s.part", path);
    pf_backoff_init(&backoff, c->cfg.retry_base_ms, c->cfg.retry_max_ms);
    for (;;) {
        uint64_t before = file_size(part), after;
        int64_t left = deadline - pf_time_mono_ms();
        int64_t try_ms = left < c->cfg.try_timeout_ms ? left : c->cfg.try_timeout_ms;
        uint64_t rnd;

        if (cancelled(cancel))
            return pf_error_set(err, PF_E_CANCELLED, "download of blob %.16s… cancelled", hex);
        tries++;
        pf_log_info("download_started", "digest=%s resume_from=%llu try=%u", hex,
                    (unsigned long long)before, tries);
        rc = pf_files_download_path(files, d, path, try_ms > 1000 ? try_ms : 1000, err);
        after = rc == PF_OK ? file_size(path) : file_size(part);
        pthread_mutex_lock(&c->mu);
        if (after > before) {
            c->downloaded += after - before;
            pf_metric_add(c->m_download_bytes, NULL, (double)(after - before));
        }
        pf_metric_inc1(c->m_downloads, rc == PF_OK ? "ok" : pf_status_name(rc));
        rnd = pf_backoff_random(&c->rng);
        pthread_mutex_unlock(&c->mu);
        if (rc == PF_E_DEADLINE && after > before && !cancelled(cancel) &&
            pf_time_mono_ms() < deadline) {
            /* A try ran out of time while bytes were flowing: go on at once. */
            pf_backoff_reset(&backoff);
            continue;
        }
        if (rc == PF_OK) {
            pf_log_info("download_done", "digest=%s bytes=%llu tries=%u", hex,
                        (unsigned long long)after, tries);
            return PF_OK;
        }
        pf_log_warn("download_failed", "digest=%s bytes_kept=%llu try=%u code=%s error=\"%s\"", hex,
                    (unsigned long long)after, tries, pf_status_name(rc), err->msg);
        if (rc == PF_E_NOT_FOUND || rc == PF_E_INVALID || rc == PF_E_PERMISSION ||
            rc == PF_E_UNAUTHENTICATED || rc == PF_E_IO)
            return rc;
        if (rc == PF_E_DATA_LOSS && ++mismatches >= 3)
            return rc;
        if (cancelled(cancel))
            return pf_error_set(err, PF_E_CANCELLED, "download of blob %.16s… cancelled", hex);
        if (pf_time_mono_ms() >= deadline) {
            char inner[PF_ERROR_MSG_MAX];
            snprintf(inner, sizeof(inner), "%s", err->msg);
            return pf_error_set(err, PF_E_DEADLINE, "gave up after %u tries: %s", tries, inner);
        }
        nap(pf_backoff_next(&backoff, rnd), cancel);
    }
}

enum pf_status pf_cache_fetch(struct pf_cache *c, struct pf_rpc_channel *files,
                              const struct pf_digest *digest, uint64_t expected_size,
                              const atomic_bool *cancel, char *path_out, size_t path_size,
                              struct pf_error *err)
{
    char path[PATH_MAX], hex[PF_DIGEST_HEX_LEN + 1];
    struct entry *e;
    enum pf_status rc;

    pf_digest_to_hex(digest, hex);
    blob_path(c, digest, path, sizeof(path));
    if (strlen(path) >= path_size)
        return pf_error_set(err, PF_E_INVALID, "no room for the path of blob %.16s…", hex);
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (inflight_has(c, digest))
            pthread_cond_wait(&c->cv, &c->mu);
        e = find(c, digest);
        if (e == NULL)
            break;
        /* Held: pin it while it is verified, so nothing evicts it meanwhile. */
        e->pins++;
        if (!inflight_add(c, digest)) {
            e->pins--;
            pthread_mutex_unlock(&c->mu);
            return pf_error_set(err, PF_E_RESOURCE, "out of memory");
        }
        pthread_mutex_unlock(&c->mu);
        rc = pf_cache_verify_file(path, digest, expected_size, err);
        pthread_mutex_lock(&c->mu);
        inflight_remove(c, digest);
        e = find(c, digest);
        if (rc == PF_OK && e != NULL) {
            touch(c, e, path);
            pf_metric_add(c->m_hits, NULL, 1);
            pthread_mutex_unlock(&c->mu);
            snprintf(path_out, path_size, "%s", path);
            return PF_OK;
        }
        if (e != NULL) {
            e->pins--;
            if (rc == PF_E_DATA_LOSS || rc == PF_E_NOT_FOUND) {
                pf_log_warn("cache_corrupt", "digest=%s error=\"%s\" action=redownload", hex,
                            err->msg);
                pf_metric_add(c->m_corrupt, NULL, 1);
                unlink(path);
                remove_entry(c, e);
                continue; /* download it again */
            }
        }
        pthread_mutex_unlock(&c->mu);
        return rc;
    }
    if (!inflight_add(c, digest)) {
        pthread_mutex_unlock(&c->mu);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    pthread_mutex_unlock(&c->mu);

    rc = download(c, files, digest, path, cancel, err);
    if (rc == PF_OK && expected_size > 0 && file_size(path) != expected_size) {
        /* The bytes hash right, so the scheduler's size is what is wrong. */
        pf_log_warn("download_size_mismatch", "digest=%s bytes=%llu expected=%llu", hex,
                    (unsigned long long)file_size(path), (unsigned long long)expected_size);
    }

    pthread_mutex_lock(&c->mu);
    inflight_remove(c, digest);
    if (rc == PF_OK) {
        e = find(c, digest);
        if (e == NULL && !add_entry(c, digest, file_size(path), pf_time_wall_ms()))
            rc = pf_error_set(err, PF_E_RESOURCE, "out of memory");
        e = find(c, digest);
        if (e != NULL) {
            e->pins++;
            evict(c, digest);
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (rc == PF_OK)
        snprintf(path_out, path_size, "%s", path);
    return rc;
}

void pf_cache_unpin(struct pf_cache *c, const struct pf_digest *digest)
{
    struct entry *e;

    pthread_mutex_lock(&c->mu);
    e = find(c, digest);
    if (e != NULL && e->pins > 0) {
        e->pins--;
        if (e->pins == 0)
            evict(c, digest);
    }
    pthread_mutex_unlock(&c->mu);
}

bool pf_cache_pin(struct pf_cache *c, const struct pf_digest *digest)
{
    struct entry *e;

    pthread_mutex_lock(&c->mu);
    e = find(c, digest);
    if (e != NULL)
        e->pins++;
    pthread_mutex_unlock(&c->mu);
    return e != NULL;
}

static int by_recent_use(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    return (x->used_ms < y->used_ms) - (x->used_ms > y->used_ms);
}

size_t pf_cache_list(struct pf_cache *c, struct pf_digest *out, size_t max)
{
    size_t n;

    pthread_mutex_lock(&c->mu);
    if (c->count > 1)
        qsort(c->entries, c->count, sizeof(c->entries[0]), by_recent_use);
    n = c->count;
    for (size_t i = 0; i < n && i < max; i++)
        out[i] = c->entries[i].digest;
    pthread_mutex_unlock(&c->mu);
    return n;
}

uint64_t pf_cache_generation(struct pf_cache *c)
{
    pthread_mutex_lock(&c->mu);
    uint64_t g = c->generation;
    pthread_mutex_unlock(&c->mu);
    return g;
}

uint64_t pf_cache_bytes(struct pf_cache *c)
{
    pthread_mutex_lock(&c->mu);
    uint64_t b = c->bytes;
    pthread_mutex_unlock(&c->mu);
    return b;
}

uint64_t pf_cache_downloaded(struct pf_cache *c)
{
    pthread_mutex_lock(&c->mu);
    uint64_t b = c->downloaded;
    pthread_mutex_unlock(&c->mu);
    return b;
}
