/* The blocking client of printfarm.v1.Files used by farmctl, pf-agent and the
 * tests: Upload as a client stream (a header, then chunks of PF_FILES_CHUNK),
 * Download as a server stream appended to a file descriptor, and Stat. The
 * client hashes what it sends and what it keeps, so a blob corrupted in
 * transit or on either disk is reported as PF_E_DATA_LOSS instead of being
 * trusted. Every error names the blob or the file and keeps the server's
 * status and message (see lib/rpc/client.c for that prefix). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "files_client.h"
#include "printfarm/v1/files.pb-c.h"

#define UPLOAD_METHOD   "/printfarm.v1.Files/Upload"
#define DOWNLOAD_METHOD "/printfarm.v1.Files/Download"
#define STAT_METHOD     "/printfarm.v1.Files/Stat"

/* Rewrites err's message as "prefix: message", keeping its code. */
static enum pf_status wrap(struct pf_error *err, enum pf_status code, const char *prefix)
{
    char inner[PF_ERROR_MSG_MAX];

    if (err == NULL)
        return code;
    snprintf(inner, sizeof(inner), "%s", err->msg);
    return pf_error_set(err, code, "%s: %s", prefix, inner);
}

static void digest_msg(Printfarm__V1__Digest *msg, char *hex, const struct pf_digest *d)
{
    printfarm__v1__digest__init(msg);
    pf_digest_to_hex(d, hex);
    msg->sha256 = hex;
}

static int write_full(int fd, const uint8_t *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---- Upload ---- */

/* Where the bytes of an upload come from: a buffer (data) or a file (fd). */
struct upload_source {
    const uint8_t *data;
    int fd;
    const char *path;
    uint8_t *buf; /* PF_FILES_CHUNK bytes when reading a file */
    uint64_t size;
    uint64_t pos;
};

/* Points *chunk at the next n bytes (n <= PF_FILES_CHUNK, n == what is left). */
static enum pf_status source_next(struct upload_source *src, size_t n, const uint8_t **chunk,
                                  struct pf_error *err)
{
    size_t got = 0;

    if (src->data != NULL) {
        *chunk = src->data + src->pos;
        src->pos += n;
        return PF_OK;
    }
    while (got < n) {
        ssize_t r = read(src->fd, src->buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return pf_error_set(err, PF_E_IO, "could not read '%s': %s", src->path,
                                strerror(errno));
        if (r == 0)
            return pf_error_set(err, PF_E_IO,
                                "'%s' shrank from %llu to %llu bytes while it was uploaded: "
                                "upload it again once nothing writes to it",
                                src->path, (unsigned long long)src->size,
                                (unsigned long long)(src->pos + got));
        got += (size_t)r;
    }
    *chunk = src->buf;
    src->pos += n;
    return PF_OK;
}

/* True when a file source has bytes beyond its declared size. */
static bool source_grew(struct upload_source *src)
{
    uint8_t extra;
    ssize_t r;

    if (src->data != NULL)
        return false;
    do {
        r = read(src->fd, &extra, 1);
    } while (r < 0 && errno == EINTR);
    return r > 0;
}

/* Reads the single UploadResponse, then the status; checks the reply against
 * what was sent. */
static enum pf_status upload_reply(struct pf_rpc_stream *s, uint64_t size,
                                   const struct pf_digest *sent, struct pf_files_upload_result *out,
                                   struct pf_error *err)
{
    Printfarm__V1__UploadResponse *resp = NULL;
    struct pf_digest stored;
    char sent_hex[PF_DIGEST_HEX_LEN + 1];
    enum pf_status rc;

    rc = pf_rpc_stream_recv(s, &printfarm__v1__upload_response__descriptor,
                            (ProtobufCMessage **)&resp, -1, err);
    if (rc == PF_E_END) {
        rc = pf_rpc_stream_finish(s, err);
        if (rc == PF_OK)
            rc = pf_error_set(err, PF_E_INTERNAL,
                              "the server ended the upload with OK but sent no reply");
        return rc;
    }
    if (rc != PF_OK)
        return rc;
    rc = pf_rpc_stream_finish(s, err);
    if (rc != PF_OK)
        goto out_free_resp;
    if (resp->digest == NULL || resp->digest->sha256 == NULL ||
        pf_digest_from_hex(resp->digest->sha256, strlen(resp->digest->sha256), &stored, err) !=
            PF_OK) {
        rc = pf_error_set(err, PF_E_INTERNAL, "the server's upload reply has no valid digest");
        goto out_free_resp;
    }
    pf_digest_to_hex(sent, sent_hex);
    if (!pf_digest_equal(&stored, sent)) {
        rc = pf_error_set(err, PF_E_DATA_LOSS,
                          "the server stored %.16s… but the bytes sent hash to %.16s…: "
                          "they changed in transit; upload again",
                          resp->digest->sha256, sent_hex);
        goto out_free_resp;
    }
    if (resp->size != size) {
        rc = pf_error_set(err, PF_E_DATA_LOSS, "the server stored %llu bytes of the %llu sent",
                          (unsigned long long)resp->size, (unsigned long long)size);
        goto out_free_resp;
    }
    if (out != NULL) {
        out->digest = stored;
        out->size = resp->size;
        out->existed = resp->existed;
    }
out_free_resp:
    printfarm__v1__upload_response__free_unpacked(resp, NULL);
    return rc;
}

/* Streams src to the server and checks the reply against what was sent. */
static enum pf_status upload(struct pf_rpc_channel *ch, struct upload_source *src,
                             const struct pf_digest *expected, int64_t timeout_ms,
                             struct pf_files_upload_result *out, struct pf_error *err)
{
    Printfarm__V1__UploadRequest req = PRINTFARM__V1__UPLOAD_REQUEST__INIT;
    Printfarm__V1__UploadHeader header = PRINTFARM__V1__UPLOAD_HEADER__INIT;
    Printfarm__V1__Digest expected_msg;
    char expected_hex[PF_DIGEST_HEX_LEN + 1];
    struct pf_rpc_stream *s;
    struct pf_sha256 *hash;
    struct pf_digest sent;
    enum pf_status rc;

    hash = pf_sha256_create();
    if (hash == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    rc = pf_rpc_stream_open(ch, UPLOAD_METHOD, timeout_ms, &s, err);
    if (rc != PF_OK)
        goto out_destroy_hash;

    header.size = src->size;
    if (expected != NULL) {
        digest_msg(&expected_msg, expected_hex, expected);
        header.expected = &expected_msg;
    }
    req.part_case = PRINTFARM__V1__UPLOAD_REQUEST__PART_HEADER;
    req.header = &header;
    rc = pf_rpc_stream_send(s, &req.base, err);
    req.part_case = PRINTFARM__V1__UPLOAD_REQUEST__PART_CHUNK;
    while (rc == PF_OK && src->pos < src->size) {
        uint64_t left = src->size - src->pos;
        size_t n = left < PF_FILES_CHUNK ? (size_t)left : PF_FILES_CHUNK;
        const uint8_t *chunk = NULL;

        rc = source_next(src, n, &chunk, err);
        if (rc != PF_OK)
            goto out_cancel; /* a local failure: the server must not commit */
        pf_sha256_update(hash, chunk, n);
        req.chunk.data = (uint8_t *)chunk;
        req.chunk.len = n;
        rc = pf_rpc_stream_send(s, &req.base, err);
    }
    if (rc == PF_OK && source_grew(src)) {
        rc = pf_error_set(err, PF_E_IO,
                          "'%s' grew past %llu bytes while it was uploaded: "
                          "upload it again once nothing writes to it",
                          src->path, (unsigned long long)src->size);
        goto out_cancel;
    }
    if (rc == PF_OK)
        rc = pf_rpc_stream_close_send(s, err);
    if (rc == PF_E_END) {
        /* The server ended the call early: its status says why. */
        rc = pf_rpc_stream_finish(s, err);
        if (rc == PF_OK)
            rc = pf_error_set(err, PF_E_INTERNAL,
                              "the server ended the upload with OK before all bytes were sent");
        goto out_destroy_stream;
    }
    if (rc != PF_OK)
        goto out_cancel;
    pf_sha256_final(hash, &sent);
    rc = upload_reply(s, src->size, &sent, out, err);
    goto out_destroy_stream;

out_cancel:
    pf_rpc_stream_cancel(s);
out_destroy_stream:
    pf_rpc_stream_destroy(s);
out_destroy_hash:
    pf_sha256_destroy(hash);
    return rc;
}

enum pf_status pf_files_upload_buffer(struct pf_rpc_channel *ch, const void *data, size_t len,
                                      const struct pf_digest *expected, int64_t timeout_ms,
                                      struct pf_files_upload_result *out, struct pf_error *err)
{
    static const uint8_t empty[1];
    struct upload_source src = {.data = data != NULL ? data : empty, .fd = -1, .size = len};

    if (data == NULL && len > 0)
        return pf_error_set(err, PF_E_INVALID, "upload of %zu bytes from a NULL buffer", len);
    /* No prefix: the server's errors already name Upload and the target, and
     * its digest-mismatch message needs the room. */
    return upload(ch, &src, expected, timeout_ms, out, err);
}

enum pf_status pf_files_upload_path(struct pf_rpc_channel *ch, const char *path,
                                    const struct pf_digest *expected, int64_t timeout_ms,
                                    struct pf_files_upload_result *out, struct pf_error *err)
{
    struct upload_source src = {.fd = -1, .path = path};
    char prefix[PATH_MAX + 32];
    struct stat st;
    enum pf_status rc;

    src.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (src.fd < 0)
        return pf_error_set(err, errno == ENOENT ? PF_E_NOT_FOUND : PF_E_IO,
                            "could not open '%s' for upload: %s", path, strerror(errno));
    if (fstat(src.fd, &st) != 0) {
        rc = pf_error_set(err, PF_E_IO, "could not stat '%s': %s", path, strerror(errno));
        goto out_close_fd;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = pf_error_set(err, PF_E_INVALID, "'%s' is not a regular file: only files upload", path);
        goto out_close_fd;
    }
    src.size = (uint64_t)st.st_size;
    src.buf = malloc(PF_FILES_CHUNK);
    if (src.buf == NULL) {
        rc = pf_error_set(err, PF_E_RESOURCE, "out of memory");
        goto out_close_fd;
    }
    rc = upload(ch, &src, expected, timeout_ms, out, err);
    if (rc != PF_OK) {
        snprintf(prefix, sizeof(prefix), "upload of '%s'", path);
        wrap(err, rc, prefix);
    }
    free(src.buf);
out_close_fd:
    close(src.fd);
    return rc;
}

/* ---- Download ---- */

/* Receives chunks until the end of the stream; returns the call's status. */
static enum pf_status download_stream(struct pf_rpc_stream *s, uint64_t offset, int fd,
                                      uint64_t *received, uint64_t *total, struct pf_error *err)
{
    bool first = true;
    enum pf_status rc;

    for (;;) {
        Printfarm__V1__DownloadResponse *m;
        uint64_t at = offset + *received;

        rc = pf_rpc_stream_recv(s, &printfarm__v1__download_response__descriptor,
                                (ProtobufCMessage **)&m, -1, err);
        if (rc == PF_E_END)
            break;
        if (rc != PF_OK)
            goto out_cancel;
        if (first) {
            *total = m->size;
            first = false;
        }
        if (m->size != *total || m->offset != at || at > *total || m->chunk.len > *total - at) {
            rc = pf_error_set(err, PF_E_INTERNAL,
                              "the server sent a chunk at offset %llu (%zu bytes, blob size %llu) "
                              "where %llu was due (blob size %llu)",
                              (unsigned long long)m->offset, m->chunk.len,
                              (unsigned long long)m->size, (unsigned long long)at,
                              (unsigned long long)*total);
            printfarm__v1__download_response__free_unpacked(m, NULL);
            goto out_cancel;
        }
        if (write_full(fd, m->chunk.data, m->chunk.len) != 0) {
            rc = pf_error_set(err, PF_E_IO, "could not write at byte %llu of the file: %s",
                              (unsigned long long)at, strerror(errno));
            printfarm__v1__download_response__free_unpacked(m, NULL);
            goto out_cancel;
        }
        *received += m->chunk.len;
        printfarm__v1__download_response__free_unpacked(m, NULL);
    }
    rc = pf_rpc_stream_finish(s, err);
    if (rc != PF_OK)
        return rc;
    if (first)
        return pf_error_set(err, PF_E_INTERNAL, "the server ended the download without a message");
    if (offset + *received != *total)
        return pf_error_set(err, PF_E_DATA_LOSS,
                            "the server ended the download with OK at byte %llu of %llu",
                            (unsigned long long)(offset + *received), (unsigned long long)*total);
    return PF_OK;
out_cancel:
    pf_rpc_stream_cancel(s);
    return rc;
}

enum pf_status pf_files_download_fd(struct pf_rpc_channel *ch, const struct pf_digest *digest,
                                    uint64_t offset, int fd, int64_t timeout_ms, uint64_t *received,
                                    uint64_t *total, struct pf_error *err)
{
    Printfarm__V1__DownloadRequest req = PRINTFARM__V1__DOWNLOAD_REQUEST__INIT;
    Printfarm__V1__Digest dmsg;
    char hex[PF_DIGEST_HEX_LEN + 1];
    char prefix[128];
    struct pf_rpc_stream *s;
    uint64_t total_local = 0;
    enum pf_status rc;

    *received = 0;
    if (total == NULL)
        total = &total_local;
    *total = 0;
    digest_msg(&dmsg, hex, digest);
    req.digest = &dmsg;
    req.offset = offset;
    rc = pf_rpc_stream_open(ch, DOWNLOAD_METHOD, timeout_ms, &s, err);
    if (rc != PF_OK)
        goto out_wrap;
    rc = pf_rpc_stream_send(s, &req.base, err);
    if (rc == PF_OK)
        rc = pf_rpc_stream_close_send(s, err);
    if (rc == PF_OK)
        rc = download_stream(s, offset, fd, received, total, err);
    else if (rc == PF_E_END)
        rc = pf_rpc_stream_finish(s, err); /* the call failed before the request went out */
    pf_rpc_stream_destroy(s);
    if (rc == PF_OK)
        return PF_OK;
out_wrap:
    snprintf(prefix, sizeof(prefix), "download of blob %.16s… from byte %llu", hex,
             (unsigned long long)offset);
    return wrap(err, rc, prefix);
}

/* Hashes the whole file open at fd. */
static enum pf_status hash_fd(int fd, const char *path, struct pf_digest *out, struct pf_error *err)
{
    struct pf_sha256 *hash = pf_sha256_create();
    uint8_t *buf = malloc(PF_FILES_CHUNK);
    enum pf_status rc = PF_OK;
    uint64_t off = 0;

    if (hash == NULL || buf == NULL) {
        rc = pf_error_set(err, PF_E_RESOURCE, "out of memory");
        goto out_free;
    }
    for (;;) {
        ssize_t n = pread(fd, buf, PF_FILES_CHUNK, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = pf_error_set(err, PF_E_IO, "could not read back '%s': %s", path, strerror(errno));
            goto out_free;
        }
        if (n == 0)
            break;
        pf_sha256_update(hash, buf, (size_t)n);
        off += (uint64_t)n;
    }
    pf_sha256_final(hash, out);
out_free:
    free(buf);
    pf_sha256_destroy(hash);
    return rc;
}

/* fsyncs the directory holding path, so a rename into it survives a crash. */
static enum pf_status sync_parent(const char *path, struct pf_error *err)
{
    char copy[PATH_MAX];
    int dfd;

    snprintf(copy, sizeof(copy), "%s", path);
    dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        enum pf_status rc = pf_error_set(err, PF_E_IO, "could not fsync the directory of '%s': %s",
                                         path, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        return rc;
    }
    close(dfd);
    return PF_OK;
}

enum pf_status pf_files_download_path(struct pf_rpc_channel *ch, const struct pf_digest *digest,
                                      const char *path, int64_t timeout_ms, struct pf_error *err)
{
    char part[PATH_MAX];
    char hex[PF_DIGEST_HEX_LEN + 1], got_hex[PF_DIGEST_HEX_LEN + 1];
    struct pf_digest got;
    uint64_t received, total;
    off_t have;
    enum pf_status rc;
    int fd;

    if (snprintf(part, sizeof(part), "%s.part", path) >= (int)sizeof(part))
        return pf_error_set(err, PF_E_INVALID, "path '%.200s' is too long", path);
    pf_digest_to_hex(digest, hex);
    fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return pf_error_set(err, PF_E_IO, "could not open '%s': %s", part, strerror(errno));
    have = lseek(fd, 0, SEEK_END);
    if (have < 0) {
        rc = pf_error_set(err, PF_E_IO, "could not seek in '%s': %s", part, strerror(errno));
        goto out_close_fd;
    }
    rc = pf_files_download_fd(ch, digest, (uint64_t)have, fd, timeout_ms, &received, &total, err);
    if (rc == PF_E_OUT_OF_RANGE && have > 0) {
        /* The leftover is longer than the blob, so it is not a prefix of it:
         * start again from nothing. */
        if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) {
            rc = pf_error_set(err, PF_E_IO, "could not truncate '%s': %s", part, strerror(errno));
            goto out_close_fd;
        }
        rc = pf_files_download_fd(ch, digest, 0, fd, timeout_ms, &received, &total, err);
    }
    if (rc == PF_E_DATA_LOSS)
        goto out_unlink_part; /* the server's copy is bad: what came is not worth resuming */
    if (rc != PF_OK)
        goto out_close_fd; /* what arrived stays in path.part for the next attempt */
    rc = hash_fd(fd, part, &got, err);
    if (rc != PF_OK)
        goto out_close_fd;
    if (!pf_digest_equal(&got, digest)) {
        pf_digest_to_hex(&got, got_hex);
        rc = pf_error_set(err, PF_E_DATA_LOSS,
                          "download of blob %.16s… into '%s' hashes to %.16s…: "
                          "removed the partial file; download again",
                          hex, path, got_hex);
        goto out_unlink_part;
    }
    if (fsync(fd) != 0) {
        rc = pf_error_set(err, PF_E_IO, "could not fsync '%s': %s", part, strerror(errno));
        goto out_close_fd;
    }
    close(fd);
    if (rename(part, path) != 0)
        return pf_error_set(err, PF_E_IO, "could not rename '%s' to '%s': %s", part, path,
                            strerror(errno));
    return sync_parent(path, err);

out_unlink_part:
    unlink(part);
out_close_fd:
    close(fd);
    return rc;
}

/* ---- Stat ---- */

enum pf_status pf_files_stat(struct pf_rpc_channel *ch, const struct pf_digest *digest,
                             int64_t timeout_ms, uint64_t *size, struct pf_error *err)
{
    Printfarm__V1__StatRequest req = PRINTFARM__V1__STAT_REQUEST__INIT;
    Printfarm__V1__StatResponse *resp;
    Printfarm__V1__Digest dmsg;
    char hex[PF_DIGEST_HEX_LEN + 1];
    enum pf_status rc;

    digest_msg(&dmsg, hex, digest);
    req.digest = &dmsg;
    /* The server's errors name Stat, the target and the blob: no prefix. */
    rc = pf_rpc_unary(ch, STAT_METHOD, &req.base, &printfarm__v1__stat_response__descriptor,
                      (ProtobufCMessage **)&resp, timeout_ms, err);
    if (rc != PF_OK)
        return rc;
    if (size != NULL)
        *size = resp->size;
    printfarm__v1__stat_response__free_unpacked(resp, NULL);
    return PF_OK;
}
