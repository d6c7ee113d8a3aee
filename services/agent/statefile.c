/* The agent's state file (see statefile.h): a strict text format, a pure
 * formatter and parser, and the atomic write (tmp + fsync + rename + fsync of
 * the directory) that makes a half-written file impossible. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "statefile.h"

#define MAGIC      "pf-agent-state 1"
#define FIELDS_MAX 10

static const char *const state_names[] = {
    [PF_ATTEMPT_NONE] = "none",         [PF_ATTEMPT_STARTING] = "starting",
    [PF_ATTEMPT_PRINTING] = "printing", [PF_ATTEMPT_SUCCEEDED] = "succeeded",
    [PF_ATTEMPT_FAILED] = "failed",     [PF_ATTEMPT_CANCELLED] = "cancelled",
};
#define STATE_COUNT (sizeof(state_names) / sizeof(state_names[0]))

const char *pf_statefile_state_name(enum pf_statefile_attempt_state s)
{
    return (unsigned)s < STATE_COUNT ? state_names[s] : "invalid";
}

void pf_statefile_init(struct pf_statefile *st)
{
    memset(st, 0, offsetof(struct pf_statefile, events));
    st->event_count = 0;
    st->bed_clear = true;
}

static bool is_final(enum pf_statefile_attempt_state s)
{
    return s == PF_ATTEMPT_SUCCEEDED || s == PF_ATTEMPT_FAILED || s == PF_ATTEMPT_CANCELLED;
}

/* ---- formatting ---- */

/* Percent-encodes s; "" becomes "-" and "-" becomes "%2D". */
static enum pf_status put_string(struct pf_buf *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    enum pf_status rc = PF_OK;

    if (s[0] == '\0')
        return pf_buf_append(out, " -", 2);
    rc = pf_buf_append(out, " ", 1);
    if (strcmp(s, "-") == 0)
        return rc != PF_OK ? rc : pf_buf_append(out, "%2D", 3);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0' && rc == PF_OK; p++) {
        if (*p <= ' ' || *p == '%' || *p == 0x7f) {
            char esc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            rc = pf_buf_append(out, esc, 3);
        } else {
            rc = pf_buf_append(out, p, 1);
        }
    }
    return rc;
}

static bool valid_id(const char *id)
{
    size_t n = strnlen(id, PF_STATEFILE_ID_MAX);
    return n > 0 && n < PF_STATEFILE_ID_MAX;
}

enum pf_status pf_statefile_format(const struct pf_statefile *st, struct pf_buf *out,
                                   struct pf_error *err)
{
    const struct pf_statefile_attempt *a = &st->current;
    enum pf_status rc;

    if (st->done_count > PF_STATEFILE_DONE_MAX || st->event_count > PF_STATEFILE_EVENTS_MAX)
        return pf_error_set(err, PF_E_INVALID,
                            "state has %zu done attempts and %zu events: too many", st->done_count,
                            st->event_count);
    rc = pf_buf_printf(out, MAGIC "\nlast_seq %llu\nbed_clear %d\n",
                       (unsigned long long)st->last_seq, st->bed_clear ? 1 : 0);
    if (a->state != PF_ATTEMPT_NONE) {
        if ((unsigned)a->state >= STATE_COUNT || !valid_id(a->id) ||
            strnlen(a->job_id, PF_STATEFILE_ID_MAX) >= PF_STATEFILE_ID_MAX ||
            strnlen(a->reason, PF_STATEFILE_REASON_MAX) >= PF_STATEFILE_REASON_MAX ||
            !(a->progress >= 0.0f && a->progress <= 1.0f) || a->started_unix_ms < 0 ||
            a->ended_unix_ms < 0)
            return pf_error_set(err, PF_E_INVALID, "the current attempt '%.64s' is not valid",
                                a->id);
        if (rc == PF_OK)
            rc = pf_buf_append(out, "attempt", 7);
        if (rc == PF_OK)
            rc = put_string(out, a->id);
        if (rc == PF_OK)
            rc = put_string(out, a->job_id);
        if (rc == PF_OK)
            rc =
                pf_buf_printf(out, " %s %.6f %lld %lld", state_names[a->state], (double)a->progress,
                              (long long)a->started_unix_ms, (long long)a->ended_unix_ms);
        if (rc == PF_OK)
            rc = put_string(out, a->file_hex);
        if (rc == PF_OK)
            rc = put_string(out, a->reason);
        if (rc == PF_OK)
            rc = pf_buf_append(out, "\n", 1);
    }
    for (size_t i = 0; i < st->done_count && rc == PF_OK; i++) {
        if (!valid_id(st->done[i].id) || !is_final(st->done[i].state))
            return pf_error_set(err, PF_E_INVALID, "done attempt %zu is not valid", i);
        rc = pf_buf_append(out, "done", 4);
        if (rc == PF_OK)
            rc = put_string(out, st->done[i].id);
        if (rc == PF_OK)
            rc = pf_buf_printf(out, " %s\n", state_names[st->done[i].state]);
    }
    for (size_t i = 0; i < st->event_count && rc == PF_OK; i++) {
        const struct pf_statefile_event *ev = &st->events[i];

        if (ev->seq == 0 || ev->len == 0 || ev->len > PF_STATEFILE_EVENT_MAX || ev->type < 0 ||
            (i > 0 && ev->seq <= st->events[i - 1].seq))
            return pf_error_set(err, PF_E_INVALID, "event %zu (seq %llu) is not valid", i,
                                (unsigned long long)ev->seq);
        rc = pf_buf_printf(out, "event %llu %d ", (unsigned long long)ev->seq, ev->type);
        for (size_t k = 0; k < ev->len && rc == PF_OK; k++)
            rc = pf_buf_printf(out, "%02x", ev->data[k]);
        if (rc == PF_OK)
            rc = pf_buf_append(out, "\n", 1);
    }
    if (rc == PF_OK)
        rc = pf_buf_append(out, "end\n", 4);
    if (rc != PF_OK)
        return pf_error_set(err, rc, "the state does not fit in %zu bytes", out->max);
    return PF_OK;
}

/* ---- parsing ---- */

struct line {
    size_t no;
    char *field[FIELDS_MAX];
    size_t count;
};

static enum pf_status bad(struct pf_error *err, size_t no, const char *what)
{
    return pf_error_set(err, PF_E_DATA_LOSS, "line %zu: %s", no, what);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes a percent-encoded field into out (cap bytes with the NUL). */
static bool get_string(const char *field, char *out, size_t cap)
{
    size_t n = 0;

    if (strcmp(field, "-") == 0) {
        out[0] = '\0';
        return true;
    }
    for (const char *p = field; *p != '\0'; p++) {
        int c = (unsigned char)*p;

        if (c == '%') {
            int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
            if (hi < 0 || lo < 0)
                return false;
            c = hi * 16 + lo;
            p += 2;
            if (c == 0)
                return false;
        }
        if (n + 1 >= cap)
            return false;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return true;
}

static bool get_u64(const char *field, uint64_t *out)
{
    char *end;

    if (field[0] < '0' || field[0] > '9' || (field[0] == '0' && field[1] != '\0'))
        return false;
    errno = 0;
    unsigned long long v = strtoull(field, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

static bool get_i64(const char *field, int64_t *out)
{
    uint64_t v;

    if (!get_u64(field, &v) || v > INT64_MAX)
        return false;
    *out = (int64_t)v;
    return true;
}

static bool get_state(const char *field, enum pf_statefile_attempt_state *out)
{
    for (size_t i = 1; i < STATE_COUNT; i++)
        if (strcmp(field, state_names[i]) == 0) {
            *out = (enum pf_statefile_attempt_state)i;
            return true;
        }
    return false;
}

static bool get_hex_digest(const char *field, char *out)
{
    if (strcmp(field, "-") == 0) {
        out[0] = '\0';
        return true;
    }
    if (strlen(field) != 64)
        return false;
    for (size_t i = 0; i < 64; i++)
        if (hexval(field[i]) < 0 || (field[i] >= 'A' && field[i] <= 'F'))
            return false;
    memcpy(out, field, 65);
    return true;
}

static enum pf_status parse_attempt(const struct line *l, struct pf_statefile_attempt *a,
                                    struct pf_error *err)
{
    char *end;
    double progress;

    if (l->count != 9)
        return bad(err, l->no, "an attempt record has 8 fields");
    if (!get_string(l->field[1], a->id, sizeof(a->id)) || a->id[0] == '\0')
        return bad(err, l->no, "bad attempt id");
    if (!get_string(l->field[2], a->job_id, sizeof(a->job_id)))
        return bad(err, l->no, "bad job id");
    if (!get_state(l->field[3], &a->state))
        return bad(err, l->no, "unknown attempt state");
    errno = 0;
    progress = strtod(l->field[4], &end);
    if (errno != 0 || *end != '\0' || end == l->field[4] || !isfinite(progress) || progress < 0 ||
        progress > 1 || l->field[4][0] < '0' || l->field[4][0] > '9')
        return bad(err, l->no, "progress is not a number in 0..1");
    a->progress = (float)progress;
    if (!get_i64(l->field[5], &a->started_unix_ms) || !get_i64(l->field[6], &a->ended_unix_ms))
        return bad(err, l->no, "bad start or end time");
    if (!get_hex_digest(l->field[7], a->file_hex))
        return bad(err, l->no, "bad file digest");
    if (!get_string(l->field[8], a->reason, sizeof(a->reason)))
        return bad(err, l->no, "bad reason");
    return PF_OK;
}

static enum pf_status parse_event(const struct line *l, struct pf_statefile *st,
                                  struct pf_error *err)
{
    struct pf_statefile_event *ev;
    const char *hex;
    size_t hexlen;
    uint64_t type;

    if (l->count != 4)
        return bad(err, l->no, "an event record has 3 fields");
    if (st->event_count >= PF_STATEFILE_EVENTS_MAX)
        return bad(err, l->no, "too many event records");
    ev = &st->events[st->event_count];
    if (!get_u64(l->field[1], &ev->seq) || ev->seq == 0 ||
        (st->event_count > 0 && ev->seq <= st->events[st->event_count - 1].seq))
        return bad(err, l->no, "event seq is not increasing");
    if (!get_u64(l->field[2], &type) || type > 1000)
        return bad(err, l->no, "bad event type");
    ev->type = (int)type;
    hex = l->field[3];
    hexlen = strlen(hex);
    if (hexlen == 0 || hexlen % 2 != 0 || hexlen / 2 > PF_STATEFILE_EVENT_MAX)
        return bad(err, l->no, "bad event payload length");
    for (size_t i = 0; i < hexlen / 2; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return bad(err, l->no, "event payload is not hex");
        ev->data[i] = (uint8_t)(hi * 16 + lo);
    }
    ev->len = hexlen / 2;
    st->event_count++;
    return PF_OK;
}

static enum pf_status parse_line(struct line *l, struct pf_statefile *st, bool *seen_attempt,
                                 bool *seen_seq, bool *seen_bed, struct pf_error *err)
{
    const char *key = l->field[0];

    if (strcmp(key, "last_seq") == 0) {
        if (*seen_seq || l->count != 2 || !get_u64(l->field[1], &st->last_seq))
            return bad(err, l->no, "bad or repeated last_seq");
        *seen_seq = true;
    } else if (strcmp(key, "bed_clear") == 0) {
        if (*seen_bed || l->count != 2 ||
            (strcmp(l->field[1], "0") != 0 && strcmp(l->field[1], "1") != 0))
            return bad(err, l->no, "bad or repeated bed_clear");
        st->bed_clear = l->field[1][0] == '1';
        *seen_bed = true;
    } else if (strcmp(key, "attempt") == 0) {
        if (*seen_attempt)
            return bad(err, l->no, "a second attempt record");
        *seen_attempt = true;
        return parse_attempt(l, &st->current, err);
    } else if (strcmp(key, "done") == 0) {
        struct pf_statefile_done *d;

        if (l->count != 3 || st->done_count >= PF_STATEFILE_DONE_MAX)
            return bad(err, l->no, "bad done record or too many");
        d = &st->done[st->done_count];
        if (!get_string(l->field[1], d->id, sizeof(d->id)) || d->id[0] == '\0' ||
            !get_state(l->field[2], &d->state) || !is_final(d->state))
            return bad(err, l->no, "bad done record");
        st->done_count++;
    } else if (strcmp(key, "event") == 0) {
        return parse_event(l, st, err);
    } else {
        return bad(err, l->no, "unknown record");
    }
    return PF_OK;
}

enum pf_status pf_statefile_parse(const char *text, size_t len, struct pf_statefile *st,
                                  struct pf_error *err)
{
    bool seen_attempt = false, seen_seq = false, seen_bed = false, ended = false;
    char buf[2 * PF_STATEFILE_EVENT_MAX + 128];
    size_t pos = 0, no = 0;
    enum pf_status rc;

    pf_statefile_init(st);
    if (text == NULL)
        return pf_error_set(err, PF_E_DATA_LOSS, "line 1: no text");
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n;
        struct line l = {.no = ++no};
        char *save = NULL, *tok;

        if (nl == NULL)
            return bad(err, no, "the file does not end with a newline (cut short?)");
        n = (size_t)(nl - (text + pos));
        if (n >= sizeof(buf))
            return bad(err, no, "line too long");
        if (memchr(text + pos, '\0', n) != NULL)
            return bad(err, no, "NUL byte");
        memcpy(buf, text + pos, n);
        buf[n] = '\0';
        pos += n + 1;
        if (ended)
            return bad(err, no, "text after the end record");
        if (no == 1) {
            if (strcmp(buf, MAGIC) != 0)
                return bad(err, no, "not a pf-agent state file (expected '" MAGIC "')");
            continue;
        }
        for (tok = strtok_r(buf, " ", &save); tok != NULL; tok = strtok_r(NULL, " ", &save)) {
            if (l.count >= FIELDS_MAX)
                return bad(err, no, "too many fields");
            l.field[l.count++] = tok;
        }
        if (l.count == 0)
            return bad(err, no, "empty line");
        if (strcmp(l.field[0], "end") == 0 && l.count == 1) {
            ended = true;
            continue;
        }
        rc = parse_line(&l, st, &seen_attempt, &seen_seq, &seen_bed, err);
        if (rc != PF_OK)
            return rc;
    }
    if (no == 0)
        return bad(err, 1, "the file is empty");
    if (!ended)
        return bad(err, no, "no end record (the file was cut short)");
    if (!seen_seq || !seen_bed)
        return bad(err, no, "last_seq or bed_clear missing");
    if (st->event_count > 0 && st->events[st->event_count - 1].seq > st->last_seq)
        return bad(err, no, "an event seq is above last_seq");
    return PF_OK;
}

/* ---- files ---- */

enum pf_status pf_statefile_slurp(const char *path, size_t max, char **out, size_t *len,
                                  struct pf_error *err)
{
    struct pf_buf b;
    char chunk[8192];
    enum pf_status rc = PF_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return pf_error_set(err, errno == ENOENT ? PF_E_NOT_FOUND : PF_E_IO,
                            "could not open '%s': %s", path, strerror(errno));
    pf_buf_init(&b, max + 1);
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = pf_error_set(err, PF_E_IO, "could not read '%s': %s", path, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        if (b.len + (size_t)n > max || pf_buf_append(&b, chunk, (size_t)n) != PF_OK) {
            rc = pf_error_set(err, PF_E_RESOURCE, "'%s' is larger than %zu bytes", path, max);
            break;
        }
    }
    close(fd);
    if (rc == PF_OK) {
        *out = pf_buf_detach(&b, len);
        if (*out == NULL)
            rc = pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    pf_buf_release(&b);
    return rc;
}

enum pf_status pf_statefile_read(const char *path, struct pf_statefile *st, struct pf_error *err)
{
    char *text = NULL;
    size_t len = 0;
    enum pf_status rc;

    pf_statefile_init(st);
    rc = pf_statefile_slurp(path, PF_STATEFILE_FILE_MAX, &text, &len, err);
    if (rc != PF_OK)
        return rc;
    rc = pf_statefile_parse(text, len, st, err);
    free(text);
    if (rc != PF_OK) {
        char inner[PF_ERROR_MSG_MAX];

        snprintf(inner, sizeof(inner), "%s", err != NULL ? err->msg : "");
        pf_statefile_init(st);
        return pf_error_set(err, PF_E_DATA_LOSS, "state file '%s' is corrupt: %s", path, inner);
    }
    return PF_OK;
}

static enum pf_status write_all(int fd, const char *path, const void *data, size_t len,
                                struct pf_error *err)
{
    const char *p = data;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return pf_error_set(err, PF_E_IO, "could not write '%s': %s", path, strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return PF_OK;
}

enum pf_status pf_statefile_write_atomic(const char *path, const void *text, size_t len,
                                         struct pf_error *err)
{
    char tmp[PATH_MAX], dir[PATH_MAX];
    enum pf_status rc;
    int fd, dfd;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return pf_error_set(err, PF_E_INVALID, "path '%.200s' is too long", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return pf_error_set(err, PF_E_IO, "could not create '%s': %s", tmp, strerror(errno));
    rc = write_all(fd, tmp, text, len, err);
    if (rc == PF_OK && fsync(fd) != 0)
        rc = pf_error_set(err, PF_E_IO, "could not fsync '%s': %s", tmp, strerror(errno));
    if (close(fd) != 0 && rc == PF_OK)
        rc = pf_error_set(err, PF_E_IO, "could not close '%s': %s", tmp, strerror(errno));
    if (rc != PF_OK)
        goto out_unlink_tmp;
    if (rename(tmp, path) != 0) {
        rc = pf_error_set(err, PF_E_IO, "could not rename '%s' to '%s': %s", tmp, path,
                          strerror(errno));
        goto out_unlink_tmp;
    }
    snprintf(dir, sizeof(dir), "%s", path);
    dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0)
        rc = pf_error_set(err, PF_E_IO, "could not fsync the directory of '%s': %s", path,
                          strerror(errno));
    if (dfd >= 0)
        close(dfd);
    return rc;
out_unlink_tmp:
    unlink(tmp);
    return rc;
}

enum pf_status pf_statefile_write(const char *path, const struct pf_statefile *st,
                                  struct pf_error *err)
{
    struct pf_buf b;
    enum pf_status rc;

    pf_buf_init(&b, PF_STATEFILE_FILE_MAX);
    rc = pf_statefile_format(st, &b, err);
    if (rc == PF_OK)
        rc = pf_statefile_write_atomic(path, b.data, b.len, err);
    pf_buf_release(&b);
    return rc;
}

void pf_statefile_remember_done(struct pf_statefile *st)
{
    const struct pf_statefile_attempt *a = &st->current;

    if (!is_final(a->state) || a->id[0] == '\0')
        return;
    for (size_t i = 0; i < st->done_count; i++)
        if (strcmp(st->done[i].id, a->id) == 0) {
            st->done[i].state = a->state;
            return;
        }
    if (st->done_count == PF_STATEFILE_DONE_MAX) {
        memmove(&st->done[0], &st->done[1], (PF_STATEFILE_DONE_MAX - 1) * sizeof(st->done[0]));
        st->done_count--;
    }
    snprintf(st->done[st->done_count].id, sizeof(st->done[0].id), "%s", a->id);
    st->done[st->done_count].state = a->state;
    st->done_count++;
}

enum pf_statefile_attempt_state pf_statefile_lookup(const struct pf_statefile *st, const char *id)
{
    if (id == NULL || id[0] == '\0')
        return PF_ATTEMPT_NONE;
    if (st->current.state != PF_ATTEMPT_NONE && strcmp(st->current.id, id) == 0)
        return st->current.state;
    for (size_t i = st->done_count; i-- > 0;)
        if (strcmp(st->done[i].id, id) == 0)
            return st->done[i].state;
    return PF_ATTEMPT_NONE;
}
