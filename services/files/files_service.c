/* printfarm.v1.Files: Upload, Download, Stat, FindMissing, PutBundle and
 * GetBundle. Every handler hands its disk work to the worker queue; Upload
 * reads one message at a time (the next read is asked for once the previous
 * chunk is on disk) and Download keeps at most two chunks queued per call and
 * holds a read buffer only while it has a chunk to send, so memory stays
 * bounded however fast or slow the peer is, and a stalled Download costs its
 * queued chunks plus a few hundred bytes of bookkeeping. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bundle.h"
#include "files_service.h"
#include "log.h"
#include "printfarm/v1/files.pb-c.h"
#include "rpc/auth.h"
#include "rpc/pb.h"
#include "timeutil.h"

#define DOWNLOAD_QUEUE_CHUNKS 2

struct pf_files_service {
    struct pf_store *store;
    struct pf_workq *wq;
    struct pf_metric *m_bytes_in, *m_bytes_out, *m_blobs_stored, *m_errors;
    struct pf_metric *m_upload_seconds, *m_download_seconds;
};

struct pf_files_service *pf_files_service_create(struct pf_store *store, struct pf_workq *wq,
                                                 struct pf_metrics *m)
{
    struct pf_files_service *svc = calloc(1, sizeof(*svc));
    if (svc == NULL)
        return NULL;
    svc->store = store;
    svc->wq = wq;
    svc->m_bytes_in =
        pf_metrics_counter(m, "printfarm_files_bytes_in_total", "bytes received in uploads", NULL);
    svc->m_bytes_out =
        pf_metrics_counter(m, "printfarm_files_bytes_out_total", "bytes sent in downloads", NULL);
    svc->m_blobs_stored = pf_metrics_counter(m, "printfarm_files_blobs_stored_total",
                                             "new blobs stored (uploads of new content)", NULL);
    svc->m_errors =
        pf_metrics_counter(m, "printfarm_files_errors_total",
                           "Files calls that failed, by method and status code", "method,code");
    svc->m_upload_seconds = pf_metrics_histogram(m, "printfarm_files_upload_duration_seconds",
                                                 "duration of successful uploads", NULL, NULL, 0);
    svc->m_download_seconds = pf_metrics_histogram(m, "printfarm_files_download_duration_seconds",
                                                   "duration of complete downloads", NULL, NULL, 0);
    return svc;
}

void pf_files_service_destroy(struct pf_files_service *svc)
{
    free(svc);
}

static void fail(struct pf_rpc_call *call, const char *method, const struct pf_error *err)
{
    struct pf_files_service *svc = pf_rpc_call_ctx(call);
    const char *labels[2] = {method, pf_rpc_code_name(pf_rpc_code_from_status(err->code))};
    if (pf_rpc_call_done(call))
        return; /* the client went away: not an error of its request */
    pf_metric_add(svc->m_errors, labels, 1);
    pf_rpc_call_finish_err(call, err);
}

static void set_digest(Printfarm__V1__Digest *msg, char *hex, const struct pf_digest *d)
{
    printfarm__v1__digest__init(msg);
    pf_digest_to_hex(d, hex);
    msg->sha256 = hex;
}

/* ---- Upload ----
 * Messages are queued per upload and written by one worker job at a time, in
 * order. Up to UPLOAD_QUEUE_MAX messages wait while one is being written, so
 * receiving the next chunk overlaps with hashing and writing this one; past
 * that, reading pauses until the worker catches up. */

#define UPLOAD_QUEUE_MAX 2

struct upload_item {
    struct upload_item *next;
    bool commit; /* the client half-closed: commit after everything before */
    size_t len;
    uint8_t data[];
};

struct upload {
    pthread_mutex_t mu;
    struct upload_item *head, *tail;
    int queued;
    bool draining;    /* a worker job owns the queue */
    bool read_paused; /* on_message asked the server to stop reading */
    /* Used only by the draining worker: */
    struct pf_store_writer *writer;
    bool header_seen;
    bool failed;
    uint64_t bytes;
    double started;
};

static enum pf_status upload_write(struct pf_files_service *svc, struct upload *u,
                                   const uint8_t *data, size_t len, struct pf_error *err)
{
    Printfarm__V1__UploadRequest *req;
    const uint8_t *chunk;
    size_t chunk_len;
    enum pf_status rc = PF_OK;

    if (pf_files_upload_chunk(data, len, &chunk, &chunk_len)) {
        if (!u->header_seen)
            return pf_error_set(err, PF_E_INVALID,
                                "the first upload message must carry a "
                                "header (size, expected digest)");
        rc = pf_store_writer_write(u->writer, chunk, chunk_len, err);
        if (rc == PF_OK) {
            u->bytes += chunk_len;
            pf_metric_add(svc->m_bytes_in, NULL, (double)chunk_len);
        }
        return rc;
    }
    rc = pf_pb_unpack(&printfarm__v1__upload_request__descriptor, data, len,
                      (ProtobufCMessage **)&req, err);
    if (rc != PF_OK)
        return rc;
    if (req->part_case == PRINTFARM__V1__UPLOAD_REQUEST__PART_HEADER) {
        struct pf_digest expected;
        const Printfarm__V1__UploadHeader *h = req->header;
        if (u->header_seen) {
            rc = pf_error_set(err, PF_E_INVALID,
                              "upload header sent twice: only the first "
                              "message may carry a header");
        } else if (h->expected != NULL &&
                   (rc = pf_files_check_digest(h->expected, "header.expected", &expected, err)) !=
                       PF_OK) {
            /* rc and err set */
        } else {
            u->header_seen = true;
            rc = pf_store_writer_begin(svc->store, h->size, h->expected != NULL ? &expected : NULL,
                                       &u->writer, err);
        }
    } else if (req->part_case == PRINTFARM__V1__UPLOAD_REQUEST__PART_CHUNK) {
        /* An empty chunk (the in-place reader wants at least one byte). */
        if (!u->header_seen)
            rc = pf_error_set(err, PF_E_INVALID,
                              "the first upload message must carry a "
                              "header (size, expected digest)");
        else
            rc = pf_store_writer_write(u->writer, req->chunk.data, req->chunk.len, err);
    } else {
        rc = pf_error_set(err, PF_E_INVALID, "upload message has neither header nor chunk");
    }
    printfarm__v1__upload_request__free_unpacked(req, NULL);
    return rc;
}

static void upload_commit(struct pf_rpc_call *call, struct upload *u)
{
    struct pf_files_service *svc = pf_rpc_call_ctx(call);
    Printfarm__V1__UploadResponse resp = PRINTFARM__V1__UPLOAD_RESPONSE__INIT;
    Printfarm__V1__Digest dmsg;
    char hex[PF_DIGEST_HEX_LEN + 1];
    struct pf_digest digest;
    struct pf_error err;
    bool existed = false;

    if (u->writer == NULL) {
        pf_error_set(&err, PF_E_INVALID, "upload ended without a header: send a header first");
        fail(call, "Upload", &err);
        return;
    }
    enum pf_status rc = pf_store_writer_commit(u->writer, &digest, &existed, &err);
    u->writer = NULL; /* commit frees it whatever the result */
    if (rc != PF_OK) {
        fail(call, "Upload", &err);
        return;
    }
    if (!existed)
        pf_metric_add(svc->m_blobs_stored, NULL, 1);
    pf_metric_observe(svc->m_upload_seconds, NULL, pf_time_mono_seconds() - u->started);
    set_digest(&dmsg, hex, &digest);
    resp.digest = &dmsg;
    resp.size = u->bytes;
    resp.existed = existed;
    pf_log_info("blob_stored", "digest=%s bytes=%llu existed=%s", hex, (unsigned long long)u->bytes,
                existed ? "true" : "false");
    pf_rpc_call_reply(call, &resp.base);
}

/* The worker job: writes queued messages in order until the queue is empty. */
static void upload_drain(struct pf_rpc_call *call, const uint8_t *unused, size_t unused_len)
{
    struct pf_files_service *svc = pf_rpc_call_ctx(call);
    struct upload *u = pf_rpc_call_user(call);
    struct pf_error err;

    for (;;) {
        pthread_mutex_lock(&u->mu);
        struct upload_item *item = u->head;
        if (item == NULL) {
            u->draining = false;
            pthread_mutex_unlock(&u->mu);
            return;
        }
        u->head = item->next;
        if (u->head == NULL)
            u->tail = NULL;
        u->queued--;
        bool resume = u->read_paused && !u->failed;
        u->read_paused = false;
        pthread_mutex_unlock(&u->mu);
        if (resume)
            pf_rpc_call_read_next(call); /* receive the next while this one is written */

        if (!u->failed && !pf_rpc_call_done(call)) {
            if (item->commit) {
                upload_commit(call, u);
            } else if (upload_write(svc, u, item->data, item->len, &err) != PF_OK) {
                u->failed = true;
                fail(call, "Upload", &err);
            }
        }
        free(item);
    }
}

static void upload_enqueue(struct pf_rpc_call *call, const uint8_t *msg, size_t len, bool commit,
                           bool *more)
{
    struct pf_files_service *svc = pf_rpc_call_ctx(call);
    struct upload *u = pf_rpc_call_user(call);
    struct upload_item *item = malloc(sizeof(*item) + len);
    bool start;

    *more = false;
    if (item == NULL) {
        pf_rpc_call_finish(call, PF_E_RESOURCE, "out of memory for an upload chunk");
        return;
    }
    item->next = NULL;
    item->commit = commit;
    item->len = len;
    if (len > 0)
        memcpy(item->data, msg, len);
    pthread_mutex_lock(&u->mu);
    if (u->tail != NULL)
        u->tail->next = item;
    else
        u->head = item;
    u->tail = item;
    u->queued++;
    *more = u->queued < UPLOAD_QUEUE_MAX;
    if (!*more)
        u->read_paused = true;
    start = !u->draining;
    u->draining = true;
    pthread_mutex_unlock(&u->mu);
    if (start)
        pf_rpc_call_defer(call, svc->wq, upload_drain, NULL, 0);
}

static void upload_start(struct pf_rpc_call *call, const uint8_t *req, size_t len)
{
    struct upload *u = calloc(1, sizeof(*u));
    if (u == NULL) {
        pf_rpc_call_finish(call, PF_E_RESOURCE, "out of memory");
        return;
    }
    pthread_mutex_init(&u->mu, NULL);
    u->started = pf_time_mono_seconds();
    pf_rpc_call_set_user(call, u);
}

static bool upload_message(struct pf_rpc_call *call, const uint8_t *msg, size_t len)
{
    bool more;
    upload_enqueue(call, msg, len, false, &more);
    return more;
}

static void upload_half_close(struct pf_rpc_call *call)
{
    bool more;
    upload_enqueue(call, NULL, 0, true, &more);
}

static void upload_free(struct pf_rpc_call *call)
{
    struct upload *u = pf_rpc_call_user(call);
    if (u == NULL)
        return;
    while (u->head != NULL) {
        struct upload_item *item = u->head;
        u->head = item->next;
        free(item);
    }
    if (u->writer != NULL) {
        /* The client went away or the upload failed: remove the temp file. */
        pf_store_writer_abort(u->writer);
        pf_log_info("upload_abandoned", "bytes=%llu", (unsigned long long)u->bytes);
    }
    pthread_mutex_destroy(&u->mu);
    free(u);
}

/* ---- Download ---- */

struct download {
    pthread_mutex_t mu;
    struct pf_store_reader *reader;
    uint64_t size;
    uint64_t offset;
    size_t chunk;
    bool busy;     /* a worker job is reading */
    bool finished; /* status given */
    bool first;
    double started;
};

/* Reads and queues chunks until the call's queue is full or the blob ends.
 * Each chunk is read into a buffer allocated for it and freed once the chunk
 * is packed into the call's send queue: a call waiting for its client to read
 * holds no read buffer (300 stalled Downloads would otherwise pin 300 MiB). */
static void download_pump(struct pf_rpc_call *call, const uint8_t *unused, size_t unused_len)
{
    struct pf_files_service *svc = pf_rpc_call_ctx(call);
    struct download *d = pf_rpc_call_user(call);
    struct pf_error err;

    for (;;) {
        size_t n = 0;
        enum pf_status rc;

        if (pf_rpc_call_done(call)) {
            pthread_mutex_lock(&d->mu);
            d->busy = false;
            d->finished = true;
            pthread_mutex_unlock(&d->mu);
            return;
        }
        pthread_mutex_lock(&d->mu);
        if (!d->first && pf_rpc_call_queued_bytes(call) >= DOWNLOAD_QUEUE_CHUNKS * d->chunk) {
            d->busy = false; /* on_writable starts the next pump */
            pthread_mutex_unlock(&d->mu);
            return;
        }
        pthread_mutex_unlock(&d->mu);

        uint8_t *buf = malloc(d->chunk);
        if (buf == NULL) {
            rc = pf_error_set(&err, PF_E_RESOURCE, "out of memory for a %zu-byte chunk", d->chunk);
        } else {
            rc = pf_store_reader_read(d->reader, buf, d->chunk, &n, &err);
        }
        if (rc == PF_OK || (rc == PF_E_END && d->first)) {
            Printfarm__V1__DownloadResponse resp = PRINTFARM__V1__DOWNLOAD_RESPONSE__INIT;
            resp.size = d->size;
            resp.offset = d->offset;
            resp.chunk.data = buf;
            resp.chunk.len = n;
            d->first = false;
            d->offset += n;
            enum pf_status sent = pf_rpc_call_send_msg(call, &resp.base); /* copies */
            free(buf);
            if (sent != PF_OK)
                continue; /* the call ended: the loop notices */
            pf_metric_add(svc->m_bytes_out, NULL, (double)n);
            if (rc == PF_OK)
                continue;
        } else {
            free(buf);
        }
        pthread_mutex_lock(&d->mu);
        d->busy = false;
        d->finished = true;
        pthread_mutex_unlock(&d->mu);
        if (rc == PF_E_END) {
            pf_metric_observe(svc->m_download_seconds, NULL, pf_time_mono_seconds() - d->started);
            pf_rpc_call_finish(call, PF_OK, "");
        } else {
            fail(call, "Download", &err);
        }
        return;
    }
}

static void download_open_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_files_service *svc = pf_rpc_call_ctx(call);
    struct download *d = pf_rpc_call_user(call);
    Printfarm__V1__DownloadRequest *req;
    struct pf_digest digest;
    struct pf_error err;

    if (pf_pb_unpack(&printfarm__v1__download_request__descriptor, data, len,
                     (ProtobufCMessage **)&req, &err) != PF_OK) {
        fail(call, "Download", &err);
        return;
    }
    d->chunk = req->chunk_size == 0 || req->chunk_size > PF_FILES_DOWNLOAD_CHUNK_MAX
                   ? PF_FILES_DOWNLOAD_CHUNK_MAX
                   : req->chunk_size;
    d->offset = req->offset;
    enum pf_status rc = pf_files_check_digest(req->digest, "digest", &digest, &err);
    printfarm__v1__download_request__free_unpacked(req, NULL);
    if (rc != PF_OK ||
        pf_store_reader_open(svc->store, &digest, d->offset, &d->reader, &d->size, &err) != PF_OK) {
        fail(call, "Download", &err);
        return;
    }
    d->first = true;
    download_pump(call, NULL, 0);
}

static void download_start(struct pf_rpc_call *call, const uint8_t *req, size_t len)
{
    struct pf_files_service *svc = pf_rpc_call_ctx(call);
    struct download *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        pf_rpc_call_finish(call, PF_E_RESOURCE, "out of memory");
        return;
    }
    pthread_mutex_init(&d->mu, NULL);
    d->busy = true;
    d->started = pf_time_mono_seconds();
    pf_rpc_call_set_user(call, d);
    pf_rpc_call_defer(call, svc->wq, download_open_work, req, len);
}

static void download_writable(struct pf_rpc_call *call)
{
    struct pf_files_service *svc = pf_rpc_call_ctx(call);
    struct download *d = pf_rpc_call_user(call);
    bool start = false;

    pthread_mutex_lock(&d->mu);
    if (!d->busy && !d->finished) {
        d->busy = true;
        start = true;
    }
    pthread_mutex_unlock(&d->mu);
    if (start)
        pf_rpc_call_defer(call, svc->wq, download_pump, NULL, 0);
}

static void download_free(struct pf_rpc_call *call)
{
    struct download *d = pf_rpc_call_user(call);
    if (d == NULL)
        return;
    pf_store_reader_close(d->reader);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

/* ---- Stat, FindMissing ---- */

static void stat_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_files_service *svc = pf_rpc_call_ctx(call);
    Printfarm__V1__StatRequest *req;
    Printfarm__V1__StatResponse resp = PRINTFARM__V1__STAT_RESPONSE__INIT;
    Printfarm__V1__Digest dmsg;
    char hex[PF_DIGEST_HEX_LEN + 1];
    struct pf_digest digest;
    struct pf_error err;
    uint64_t size;

    if (pf_pb_unpack(&printfarm__v1__stat_request__descriptor, data, len, (ProtobufCMessage **)&req,
                     &err) != PF_OK) {
        fail(call, "Stat", &err);
        return;
    }
    enum pf_status rc = pf_files_check_digest(req->digest, "digest", &digest, &err);
    printfarm__v1__stat_request__free_unpacked(req, NULL);
    if (rc != PF_OK || pf_store_stat(svc->store, &digest, &size, &err) != PF_OK) {
        fail(call, "Stat", &err);
        return;
    }
    set_digest(&dmsg, hex, &digest);
    resp.digest = &dmsg;
    resp.size = size;
    pf_rpc_call_reply(call, &resp.base);
}

static void find_missing_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_files_service *svc = pf_rpc_call_ctx(call);
    Printfarm__V1__FindMissingRequest *req;
    Printfarm__V1__FindMissingResponse resp = PRINTFARM__V1__FIND_MISSING_RESPONSE__INIT;
    struct pf_error err;

    if (pf_pb_unpack(&printfarm__v1__find_missing_request__descriptor, data, len,
                     (ProtobufCMessage **)&req, &err) != PF_OK) {
        fail(call, "FindMissing", &err);
        return;
    }
    /* Check every digest before touching the disk, so bad input is reported whole. */
    if (pf_files_check_find_missing(req, &err) != PF_OK)
        goto out_fail;
    resp.missing = calloc(req->n_digests + 1, sizeof(*resp.missing));
    if (resp.missing == NULL) {
        pf_error_set(&err, PF_E_RESOURCE, "out of memory");
        goto out_fail;
    }
    for (size_t i = 0; i < req->n_digests; i++) {
        struct pf_digest d;
        struct pf_error serr;
        if (pf_digest_from_hex(req->digests[i]->sha256, strlen(req->digests[i]->sha256), &d,
                               &serr) != PF_OK)
            continue;
        enum pf_status rc = pf_store_stat(svc->store, &d, NULL, &serr);
        if (rc == PF_E_NOT_FOUND) {
            resp.missing[resp.n_missing++] = req->digests[i];
        } else if (rc != PF_OK) {
            free(resp.missing);
            err = serr;
            goto out_fail;
        }
    }
    pf_rpc_call_reply(call, &resp.base);
    free(resp.missing);
    printfarm__v1__find_missing_request__free_unpacked(req, NULL);
    return;
out_fail:
    printfarm__v1__find_missing_request__free_unpacked(req, NULL);
    fail(call, "FindMissing", &err);
}

/* ---- bundles ---- */

static void put_bundle_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_files_service *svc = pf_rpc_call_ctx(call);
    Printfarm__V1__PutBundleRequest *req;
    Printfarm__V1__PutBundleResponse resp = PRINTFARM__V1__PUT_BUNDLE_RESPONSE__INIT;
    Printfarm__V1__Digest dmsg;
    char hex[PF_DIGEST_HEX_LEN + 1];
    struct pf_digest digest;
    struct pf_error err;
    char *manifest = NULL;
    size_t manifest_len = 0;
    bool existed;

    if (pf_pb_unpack(&printfarm__v1__put_bundle_request__descriptor, data, len,
                     (ProtobufCMessage **)&req, &err) != PF_OK) {
        fail(call, "PutBundle", &err);
        return;
    }
    if (req->bundle == NULL) {
        pf_error_set(&err, PF_E_INVALID, "bundle is required");
        goto out_free_req;
    }
    if (pf_bundle_encode(req->bundle, &manifest, &manifest_len, &err) != PF_OK)
        goto out_free_req;
    for (size_t i = 0; i < req->bundle->n_files; i++) {
        const Printfarm__V1__BundleFile *f = req->bundle->files[i];
        struct pf_digest d;
        uint64_t size;
        if (pf_files_check_digest(f->digest, "files[].digest", &d, &err) != PF_OK)
            goto out_free_manifest;
        enum pf_status rc = pf_store_stat(svc->store, &d, &size, &err);
        if (rc == PF_E_NOT_FOUND) {
            pf_error_set(&err, PF_E_PRECONDITION,
                         "files[%zu] (profile '%s') names blob %s, which is not stored: "
                         "upload it first",
                         i, f->profile, f->digest->sha256);
            goto out_free_manifest;
        }
        if (rc != PF_OK)
            goto out_free_manifest;
        if (f->size != 0 && f->size != size) {
            pf_error_set(&err, PF_E_INVALID,
                         "files[%zu] (profile '%s') declares %llu bytes but blob %s has %llu", i,
                         f->profile, (unsigned long long)f->size, f->digest->sha256,
                         (unsigned long long)size);
            goto out_free_manifest;
        }
    }
    if (pf_store_put(svc->store, manifest, manifest_len, NULL, &digest, &existed, &err) != PF_OK)
        goto out_free_manifest;
    set_digest(&dmsg, hex, &digest);
    resp.digest = &dmsg;
    pf_log_info("bundle_stored", "digest=%s files=%zu", hex, req->bundle->n_files);
    pf_rpc_call_reply(call, &resp.base);
    free(manifest);
    printfarm__v1__put_bundle_request__free_unpacked(req, NULL);
    return;
out_free_manifest:
    free(manifest);
out_free_req:
    printfarm__v1__put_bundle_request__free_unpacked(req, NULL);
    fail(call, "PutBundle", &err);
}

static void get_bundle_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_files_service *svc = pf_rpc_call_ctx(call);
    Printfarm__V1__GetBundleRequest *req;
    Printfarm__V1__GetBundleResponse resp = PRINTFARM__V1__GET_BUNDLE_RESPONSE__INIT;
    Printfarm__V1__Bundle *bundle = NULL;
    Printfarm__V1__Digest dmsg;
    char hex[PF_DIGEST_HEX_LEN + 1];
    struct pf_digest digest;
    struct pf_error err;
    char *bytes = NULL;
    size_t n;

    if (pf_pb_unpack(&printfarm__v1__get_bundle_request__descriptor, data, len,
                     (ProtobufCMessage **)&req, &err) != PF_OK) {
        fail(call, "GetBundle", &err);
        return;
    }
    enum pf_status rc = pf_files_check_digest(req->digest, "digest", &digest, &err);
    printfarm__v1__get_bundle_request__free_unpacked(req, NULL);
    if (rc != PF_OK)
        goto out_fail;
    set_digest(&dmsg, hex, &digest);
    rc = pf_store_read_all(svc->store, &digest, PF_BUNDLE_ENCODED_MAX, &bytes, &n, &err);
    if (rc == PF_E_RESOURCE) {
        pf_error_set(&err, PF_E_INVALID, "blob %.64s is not a bundle manifest (too large)", hex);
        goto out_fail;
    }
    if (rc != PF_OK)
        goto out_fail;
    if (pf_bundle_decode(bytes, n, &bundle, &err) != PF_OK)
        goto out_fail;
    resp.digest = &dmsg;
    resp.bundle = bundle;
    pf_rpc_call_reply(call, &resp.base);
    printfarm__v1__bundle__free_unpacked(bundle, NULL);
    free(bytes);
    return;
out_fail:
    free(bytes);
    fail(call, "GetBundle", &err);
}

#define DEFER_UNARY(name, work)                                                                    \
    static void name(struct pf_rpc_call *call, const uint8_t *req, size_t len)                     \
    {                                                                                              \
        struct pf_files_service *svc = pf_rpc_call_ctx(call);                                      \
        pf_rpc_call_defer(call, svc->wq, work, req, len);                                          \
    }
DEFER_UNARY(stat_start, stat_work)
DEFER_UNARY(find_missing_start, find_missing_work)
DEFER_UNARY(put_bundle_start, put_bundle_work)
DEFER_UNARY(get_bundle_start, get_bundle_work)

enum pf_status pf_files_service_register(struct pf_files_service *svc, struct pf_rpc_server *srv,
                                         struct pf_error *err)
{
    const struct pf_rpc_method methods[] = {
        {.path = "/printfarm.v1.Files/Upload",
         .kind = PF_RPC_CLIENT_STREAM,
         .roles = PF_ROLES_WRITE,
         .ctx = svc,
         .on_start = upload_start,
         .on_message = upload_message,
         .on_half_close = upload_half_close,
         .on_free = upload_free},
        {.path = "/printfarm.v1.Files/Download",
         .kind = PF_RPC_SERVER_STREAM,
         .roles = PF_ROLES_ANY,
         .ctx = svc,
         .on_start = download_start,
         .on_writable = download_writable,
         .on_free = download_free},
        {.path = "/printfarm.v1.Files/Stat",
         .kind = PF_RPC_UNARY,
         .roles = PF_ROLES_ANY,
         .ctx = svc,
         .on_start = stat_start},
        {.path = "/printfarm.v1.Files/FindMissing",
         .kind = PF_RPC_UNARY,
         .roles = PF_ROLES_ANY,
         .ctx = svc,
         .on_start = find_missing_start},
        {.path = "/printfarm.v1.Files/PutBundle",
         .kind = PF_RPC_UNARY,
         .roles = PF_ROLES_WRITE,
         .ctx = svc,
         .on_start = put_bundle_start},
        {.path = "/printfarm.v1.Files/GetBundle",
         .kind = PF_RPC_UNARY,
         .roles = PF_ROLES_ANY,
         .ctx = svc,
         .on_start = get_bundle_start},
    };
    return pf_rpc_server_add(srv, methods, sizeof(methods) / sizeof(methods[0]), err);
}
