/* farmctl's output: aligned tables for people, a JSON writer for scripts
 * (with a generic protobuf-c message encoder, so --json field names are the
 * .proto names), and the small human formats (durations, times, sizes). */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "farmctl.h"
#include "printfarm/v1/common.pb-c.h"

void fc_err(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "farmctl: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
}

void fc_warn(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "farmctl: warning: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
}

int64_t fc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- tables */

struct fc_table {
    size_t ncols;
    char **cells; /* rows * ncols, header row first */
    size_t nrows, cap;
};

struct fc_table *fc_table_create(size_t ncols, const char *const *headers)
{
    struct fc_table *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->ncols = ncols;
    fc_table_add(t, headers);
    return t;
}

void fc_table_add(struct fc_table *t, const char *const *cells)
{
    if (t == NULL)
        return;
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **n = realloc(t->cells, cap * t->ncols * sizeof(char *));
        if (n == NULL)
            return;
        t->cells = n;
        t->cap = cap;
    }
    for (size_t c = 0; c < t->ncols; c++) {
        const char *v = cells[c] != NULL && cells[c][0] != '\0' ? cells[c] : "-";
        char *copy = strdup(v);
        /* a cell is one line: control characters become spaces */
        for (char *p = copy; p != NULL && *p; p++)
            if ((unsigned char)*p < 0x20)
                *p = ' ';
        t->cells[t->nrows * t->ncols + c] = copy;
    }
    t->nrows++;
}

/* Display width: code points (every character here is one column wide). */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            w++;
    return w;
}

void fc_table_print(const struct fc_table *t, FILE *out)
{
    if (t == NULL)
        return;
    size_t w[32] = {0};
    size_t nc = t->ncols < 32 ? t->ncols : 32;
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < nc; c++) {
            const char *v = t->cells[r * t->ncols + c];
            size_t cw = v ? width(v) : 0;
            if (cw > w[c])
                w[c] = cw;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < nc; c++) {
            const char *v = t->cells[r * t->ncols + c];
            if (v == NULL)
                v = "";
            if (c + 1 == nc) {
                fputs(v, out);
            } else {
                fputs(v, out);
                for (size_t k = width(v); k < w[c] + 2; k++)
                    fputc(' ', out);
            }
        }
        fputc('\n', out);
    }
}

void fc_table_destroy(struct fc_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

/* ---------------------------------------------------------------- JSON */

static void put(struct fc_json *j, const char *s, size_t n)
{
    if (!j->failed && pf_buf_append(&j->buf, s, n) != PF_OK)
        j->failed = true;
}

static void puts_(struct fc_json *j, const char *s)
{
    put(j, s, strlen(s));
}

static void newline(struct fc_json *j)
{
    if (!j->pretty)
        return;
    put(j, "\n", 1);
    for (int i = 0; i < j->depth; i++)
        put(j, "  ", 2);
}

/* Before any value: the comma and line break a value in a container needs. */
static void before_value(struct fc_json *j)
{
    if (j->after_key) {
        j->after_key = false;
        return;
    }
    if (j->depth > 0) {
        if (j->need_comma[j->depth])
            put(j, ",", 1);
        newline(j);
    }
    j->need_comma[j->depth] = true;
}

void fc_json_init(struct fc_json *j, bool pretty)
{
    memset(j, 0, sizeof(*j));
    pf_buf_init(&j->buf, 0);
    j->pretty = pretty;
}

static void open_(struct fc_json *j, const char *c)
{
    before_value(j);
    puts_(j, c);
    if (j->depth < 63)
        j->depth++;
    j->need_comma[j->depth] = false;
}

static void close_(struct fc_json *j, const char *c)
{
    bool had = j->need_comma[j->depth];
    if (j->depth > 0)
        j->depth--;
    if (had)
        newline(j);
    puts_(j, c);
}

void fc_json_begin_object(struct fc_json *j)
{
    open_(j, "{");
}

void fc_json_end_object(struct fc_json *j)
{
    close_(j, "}");
}

void fc_json_begin_array(struct fc_json *j)
{
    open_(j, "[");
}

void fc_json_end_array(struct fc_json *j)
{
    close_(j, "]");
}

static void quoted(struct fc_json *j, const char *s)
{
    put(j, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"':
            put(j, "\\\"", 2);
            break;
        case '\\':
            put(j, "\\\\", 2);
            break;
        case '\n':
            put(j, "\\n", 2);
            break;
        case '\r':
            put(j, "\\r", 2);
            break;
        case '\t':
            put(j, "\\t", 2);
            break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof(esc), "\\u%04x", *p);
                puts_(j, esc);
            } else {
                put(j, (const char *)p, 1);
            }
        }
    }
    put(j, "\"", 1);
}

void fc_json_key(struct fc_json *j, const char *key)
{
    before_value(j);
    quoted(j, key);
    put(j, j->pretty ? ": " : ":", j->pretty ? 2 : 1);
    j->after_key = true;
}

void fc_json_string(struct fc_json *j, const char *s)
{
    before_value(j);
    if (s == NULL)
        puts_(j, "null");
    else
        quoted(j, s);
}

void fc_json_int(struct fc_json *j, int64_t v)
{
    char b[32];
    before_value(j);
    snprintf(b, sizeof(b), "%" PRId64, v);
    puts_(j, b);
}

void fc_json_uint(struct fc_json *j, uint64_t v)
{
    char b[32];
    before_value(j);
    snprintf(b, sizeof(b), "%" PRIu64, v);
    puts_(j, b);
}

/* The shortest text that reads back as the same double. */
static void shortest(double v, char *b, size_t size)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(b, size, "%.*g", prec, v);
        if (strtod(b, NULL) == v)
            return;
    }
}

void fc_json_double(struct fc_json *j, double v)
{
    char b[40];
    before_value(j);
    if (!isfinite(v)) {
        puts_(j, "null");
        return;
    }
    shortest(v, b, sizeof(b));
    puts_(j, b);
}

static void json_float(struct fc_json *j, float v)
{
    char b[40];
    before_value(j);
    if (!isfinite(v)) {
        puts_(j, "null");
        return;
    }
    /* a float's shortest form, not the double's noise: 0.3f -> 0.3 */
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(b, sizeof(b), "%.*g", prec, (double)v);
        if (strtof(b, NULL) == v)
            break;
    }
    puts_(j, b);
}

void fc_json_bool(struct fc_json *j, bool v)
{
    before_value(j);
    puts_(j, v ? "true" : "false");
}

void fc_json_null(struct fc_json *j)
{
    before_value(j);
    puts_(j, "null");
}

/* "JobState" -> "JOB_STATE_" */
static void enum_prefix(const ProtobufCEnumDescriptor *d, char *out, size_t size)
{
    size_t n = 0;
    const char *name = d->short_name;
    for (size_t i = 0; name[i] && n + 3 < size; i++) {
        if (i > 0 && isupper((unsigned char)name[i]))
            out[n++] = '_';
        out[n++] = (char)toupper((unsigned char)name[i]);
    }
    out[n++] = '_';
    out[n] = '\0';
}

const char *fc_enum_name(const ProtobufCEnumDescriptor *d, int value, char *buf, size_t size)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(d, value);
    if (v == NULL) {
        snprintf(buf, size, "%d", value);
        return buf;
    }
    char prefix[64];
    enum_prefix(d, prefix, sizeof(prefix));
    const char *s = v->name;
    if (strncmp(s, prefix, strlen(prefix)) == 0)
        s += strlen(prefix);
    size_t i;
    for (i = 0; s[i] && i + 1 < size; i++)
        buf[i] = (char)tolower((unsigned char)s[i]);
    buf[i] = '\0';
    return buf;
}

bool fc_enum_parse(const ProtobufCEnumDescriptor *d, const char *text, int *value)
{
    char b[64];
    for (unsigned i = 0; i < d->n_values; i++) {
        if (d->values[i].value == 0)
            continue; /* *_UNSPECIFIED is never a choice */
        fc_enum_name(d, d->values[i].value, b, sizeof(b));
        if (strcasecmp(b, text) == 0 || strcasecmp(d->values[i].name, text) == 0) {
            *value = d->values[i].value;
            return true;
        }
        /* "awaiting-clear" for "awaiting_clear" */
        char alt[64];
        snprintf(alt, sizeof(alt), "%s", text);
        for (char *p = alt; *p; p++)
            if (*p == '-')
                *p = '_';
        if (strcasecmp(b, alt) == 0) {
            *value = d->values[i].value;
            return true;
        }
    }
    return false;
}

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(int);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 0;
}

static void value(struct fc_json *j, const ProtobufCFieldDescriptor *f, const void *p)
{
    char b[64];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        fc_json_int(j, *(const int32_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        fc_json_uint(j, *(const uint32_t *)p);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        fc_json_int(j, *(const int64_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        fc_json_uint(j, *(const uint64_t *)p);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        json_float(j, *(const float *)p);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        fc_json_double(j, *(const double *)p);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        fc_json_bool(j, *(const protobuf_c_boolean *)p != 0);
        break;
    case PROTOBUF_C_TYPE_ENUM:
        fc_json_string(j, fc_enum_name(f->descriptor, *(const int *)p, b, sizeof(b)));
        break;
    case PROTOBUF_C_TYPE_STRING:
        fc_json_string(j, *(char *const *)p != NULL ? *(char *const *)p : "");
        break;
    case PROTOBUF_C_TYPE_BYTES: {
        /* not used by the API's messages today: hex keeps it printable */
        const ProtobufCBinaryData *bd = p;
        char *hex = malloc(bd->len * 2 + 1);
        if (hex == NULL) {
            j->failed = true;
            return;
        }
        for (size_t i = 0; i < bd->len; i++)
            snprintf(hex + 2 * i, 3, "%02x", bd->data[i]);
        hex[bd->len * 2] = '\0';
        fc_json_string(j, hex);
        free(hex);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        fc_json_message(j, *(ProtobufCMessage *const *)p);
        break;
    }
}

void fc_json_message(struct fc_json *j, const ProtobufCMessage *m)
{
    if (m == NULL) {
        fc_json_null(j);
        return;
    }
    if (m->descriptor == &printfarm__v1__digest__descriptor) {
        const Printfarm__V1__Digest *d = (const Printfarm__V1__Digest *)m;
        fc_json_string(j, d->sha256 != NULL ? d->sha256 : "");
        return;
    }
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    fc_json_begin_object(j);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        fc_json_key(j, f->name);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *arr = *(char *const *)(base + f->offset);
            fc_json_begin_array(j);
            for (size_t k = 0; k < n; k++)
                value(j, f, arr + k * elem_size(f->type));
            fc_json_end_array(j);
        } else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t which = *(const uint32_t *)(base + f->quantifier_offset);
            if (which == f->id)
                value(j, f, base + f->offset);
            else
                fc_json_null(j);
        } else {
            value(j, f, base + f->offset);
        }
    }
    fc_json_end_object(j);
}

int fc_json_print(struct fc_json *j, FILE *out)
{
    int rc = FC_EXIT_OK;
    if (j->failed) {
        fc_err("out of memory while writing JSON");
        rc = FC_EXIT_FAILED;
    } else {
        if (j->buf.len > 0)
            fwrite(j->buf.data, 1, j->buf.len, out);
        fputc('\n', out);
        if (fflush(out) != 0)
            rc = FC_EXIT_FAILED;
    }
    pf_buf_release(&j->buf);
    return rc;
}

/* ---------------------------------------------------------------- formats */

const char *fc_fmt_duration(uint64_t s, char *buf, size_t size)
{
    if (s >= 86400)
        snprintf(buf, size, "%" PRIu64 "d %" PRIu64 "h", s / 86400, s % 86400 / 3600);
    else if (s >= 3600)
        snprintf(buf, size, "%" PRIu64 "h %" PRIu64 "m", s / 3600, s % 3600 / 60);
    else if (s >= 60)
        snprintf(buf, size, "%" PRIu64 "m %" PRIu64 "s", s / 60, s % 60);
    else
        snprintf(buf, size, "%" PRIu64 "s", s);
    return buf;
}

const char *fc_fmt_time(int64_t unix_ms, char *buf, size_t size)
{
    if (unix_ms <= 0) {
        snprintf(buf, size, "-");
        return buf;
    }
    time_t t = (time_t)(unix_ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

const char *fc_fmt_age(int64_t unix_ms, char *buf, size_t size)
{
    if (unix_ms <= 0) {
        snprintf(buf, size, "-");
        return buf;
    }
    int64_t d = (fc_now_ms() - unix_ms) / 1000;
    if (d < 0)
        d = 0;
    char t[32];
    fc_fmt_duration((uint64_t)d, t, sizeof(t));
    snprintf(buf, size, "%s ago", t);
    return buf;
}

const char *fc_fmt_size(uint64_t bytes, char *buf, size_t size)
{
    if (bytes < 1000)
        snprintf(buf, size, "%" PRIu64 " B", bytes);
    else if (bytes < 1000 * 1000)
        snprintf(buf, size, "%.1f KB", (double)bytes / 1000);
    else if (bytes < 1000ull * 1000 * 1000)
        snprintf(buf, size, "%.1f MB", (double)bytes / 1e6);
    else
        snprintf(buf, size, "%.2f GB", (double)bytes / 1e9);
    return buf;
}
