/* The growable byte buffer behind every message, file and response assembled in
 * memory. Capacity doubles so appends are amortised O(1); a hard maximum turns
 * oversized input into PF_E_RESOURCE instead of unbounded memory, and a failed
 * append leaves the buffer exactly as it was so callers can report and go on. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_MIN_CAP 64

void pf_buf_init(struct pf_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void pf_buf_release(struct pf_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void pf_buf_reset(struct pf_buf *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

/* Makes room for `extra` more bytes plus the terminating NUL, keeping the
 * buffer unchanged on failure. */
static enum pf_status reserve(struct pf_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - 1 - b->len)
        return PF_E_RESOURCE;
    size_t want = b->len + extra;
    if (b->max != 0 && want > b->max)
        return PF_E_RESOURCE;
    if (b->data != NULL && want + 1 <= b->cap)
        return PF_OK;
    size_t cap = b->cap > BUF_MIN_CAP ? b->cap : BUF_MIN_CAP;
    while (cap < want + 1) {
        if (cap > SIZE_MAX / 2) {
            cap = want + 1;
            break;
        }
        cap *= 2;
    }
    /* Never hold more than the maximum allows. */
    if (b->max != 0 && b->max < SIZE_MAX && cap > b->max + 1)
        cap = b->max + 1;
    char *data = realloc(b->data, cap);
    if (data == NULL)
        return PF_E_RESOURCE;
    if (b->data == NULL)
        data[0] = '\0';
    b->data = data;
    b->cap = cap;
    return PF_OK;
}

enum pf_status pf_buf_append(struct pf_buf *b, const void *data, size_t len)
{
    enum pf_status st = reserve(b, len);
    if (st != PF_OK)
        return st;
    if (len > 0)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return PF_OK;
}

enum pf_status pf_buf_printf(struct pf_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return PF_E_INVALID;
    enum pf_status st = reserve(b, (size_t)n);
    if (st != PF_OK)
        return st;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return PF_OK;
}

char *pf_buf_detach(struct pf_buf *b, size_t *len_out)
{
    char *data = b->data;
    size_t len = b->len;
    if (data == NULL) {
        /* The caller always receives a string it can free. */
        data = calloc(1, 1);
        len = 0;
    }
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    if (len_out != NULL)
        *len_out = len;
    return data;
}
