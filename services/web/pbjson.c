/* Protobuf messages to JSON through their protobuf-c descriptors, so every
 * API response of pf-web has one shape and no hand-written field lists. */
#include "pbjson.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define APPEND(out, s)                                                                             \
    do {                                                                                           \
        if (pf_buf_append((out), (s), strlen(s)) != PF_OK)                                         \
            return PF_E_RESOURCE;                                                                  \
    } while (0)

/* Length of a valid UTF-8 sequence at p (at most n bytes), 0 when invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len;
    if (p[0] < 0x80)
        return 1;
    if ((p[0] & 0xe0) == 0xc0 && p[0] >= 0xc2)
        len = 2;
    else if ((p[0] & 0xf0) == 0xe0)
        len = 3;
    else if ((p[0] & 0xf8) == 0xf0 && p[0] <= 0xf4)
        len = 4;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

enum pf_status pf_web_json_string(struct pf_buf *out, const char *text)
{
    const unsigned char *p = (const unsigned char *)(text != NULL ? text : "");
    size_t n = strlen((const char *)p);
    APPEND(out, "\"");
    while (n > 0) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            esc[2] = '\0';
            APPEND(out, esc);
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            APPEND(out, esc);
        } else if (*p == '<') {
            APPEND(out, "\\u003c"); /* safe to embed anywhere */
        } else {
            size_t l = utf8_len(p, n);
            if (l == 0) {
                APPEND(out, "\\ufffd");
                l = 1;
            } else if (pf_buf_append(out, p, l) != PF_OK) {
                return PF_E_RESOURCE;
            }
            p += l;
            n -= l;
            continue;
        }
        p++;
        n--;
    }
    APPEND(out, "\"");
    return PF_OK;
}

void pf_web_json_enum_name(const ProtobufCEnumDescriptor *d, int value, char *out, size_t out_size)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(d, value);
    if (v == NULL) {
        snprintf(out, out_size, "%d", value);
        return;
    }
    /* The prefix shared by every value name up to an underscore. */
    size_t prefix = strlen(v->name);
    for (unsigned i = 0; i < d->n_values; i++) {
        const char *a = d->values[i].name;
        size_t k = 0;
        while (k < prefix && a[k] != '\0' && a[k] == v->name[k])
            k++;
        prefix = k;
    }
    while (prefix > 0 && v->name[prefix - 1] != '_')
        prefix--;
    if (d->n_values < 2)
        prefix = 0;
    size_t j = 0;
    for (const char *s = v->name + prefix; *s != '\0' && j + 1 < out_size; s++)
        out[j++] = (char)tolower((unsigned char)*s);
    out[j] = '\0';
}

static enum pf_status scalar(struct pf_buf *out, const ProtobufCFieldDescriptor *f, const void *p)
{
    char num[64];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        snprintf(num, sizeof num, "%" PRId32, *(const int32_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        snprintf(num, sizeof num, "%" PRIu32, *(const uint32_t *)p);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(num, sizeof num, "%" PRId64, *(const int64_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(num, sizeof num, "%" PRIu64, *(const uint64_t *)p);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: {
        double d = f->type == PROTOBUF_C_TYPE_FLOAT ? *(const float *)p : *(const double *)p;
        if (isfinite(d))
            snprintf(num, sizeof num, "%.6g", d);
        else
            snprintf(num, sizeof num, "null");
        break;
    }
    case PROTOBUF_C_TYPE_BOOL:
        snprintf(num, sizeof num, "%s", *(const protobuf_c_boolean *)p ? "true" : "false");
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        char name[96];
        pf_web_json_enum_name(f->descriptor, *(const int *)p, name, sizeof name);
        return pf_web_json_string(out, name);
    }
    case PROTOBUF_C_TYPE_STRING:
        return pf_web_json_string(out, *(char *const *)p);
    case PROTOBUF_C_TYPE_MESSAGE:
        return pf_web_json_message(out, *(ProtobufCMessage *const *)p);
    case PROTOBUF_C_TYPE_BYTES:
        snprintf(num, sizeof num, "null");
        break;
    }
    APPEND(out, num);
    return PF_OK;
}

static size_t scalar_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(int);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default:
        return 4;
    }
}

enum pf_status pf_web_json_message(struct pf_buf *out, const ProtobufCMessage *msg)
{
    if (msg == NULL) {
        APPEND(out, "null");
        return PF_OK;
    }
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    const char *base = (const char *)msg;
    bool first = true;
    APPEND(out, "{");
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type == PROTOBUF_C_TYPE_BYTES)
            continue;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
                continue;
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset != 0 &&
                   f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING &&
                   !*(const protobuf_c_boolean *)(base + f->quantifier_offset)) {
            continue;
        }
        if (!first)
            APPEND(out, ",");
        first = false;
        if (pf_web_json_string(out, f->name) != PF_OK)
            return PF_E_RESOURCE;
        APPEND(out, ":");
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *arr = *(char *const *)(base + f->offset);
            size_t sz = scalar_size(f->type);
            APPEND(out, "[");
            for (size_t k = 0; k < n; k++) {
                if (k > 0)
                    APPEND(out, ",");
                if (scalar(out, f, arr + k * sz) != PF_OK)
                    return PF_E_RESOURCE;
            }
            APPEND(out, "]");
        } else if (scalar(out, f, base + f->offset) != PF_OK) {
            return PF_E_RESOURCE;
        }
    }
    APPEND(out, "}");
    return PF_OK;
}
